#!/bin/sh
# picaops lab: run before exim starts. Installs the certificate `picaops lab up` made for this
# host (the one slapd uses, from the lab's CA) and the SMTP account's password (the lab's secret
# smtp-picaops), both bind-mounted at /etc/picaops-lab, readable by exim only.
set -eu
src=/etc/picaops-lab
dst=/etc/exim4/picaops-lab
install -d -m 750 -o root -g Debian-exim "$dst"
if [ -r "$src/ldap.crt" ] && [ -r "$src/ldap.key" ] && [ -r "$src/smtp-password" ]; then
  install -m 640 -o root -g Debian-exim "$src/ldap.crt" "$dst/mail.crt"
  install -m 640 -o root -g Debian-exim "$src/ldap.key" "$dst/mail.key"
  tr -d '\n' < "$src/smtp-password" > "$dst/password.new"
  chown root:Debian-exim "$dst/password.new" && chmod 640 "$dst/password.new"
  mv "$dst/password.new" "$dst/password"
fi
