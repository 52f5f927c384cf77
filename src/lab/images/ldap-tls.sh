#!/bin/sh
# picaops lab: run before slapd starts. Installs the certificate `picaops lab up` made for this
# host with the lab's CA (bind-mounted at /etc/picaops-lab); keeps the build-time placeholder
# when there is none, so slapd always starts.
set -eu
src=/etc/picaops-lab
dst=/etc/ldap/tls
if [ -r "$src/ldap.crt" ] && [ -r "$src/ldap.key" ]; then
  install -m 644 -o root -g openldap "$src/ldap.crt" "$dst/ldap.crt"
  install -m 640 -o root -g openldap "$src/ldap.key" "$dst/ldap.key"
fi
