# picaops lab: the directory host (ldap): slapd with base dc=picasoft,dc=net, the nis,
# openssh-lpk and ldapns schemas, ou=People and a read-only account, over ldap:// and ldaps://.
# Lab only: the admin password is public (picaops-lab). People are picaops' job (`access grant`).
ARG BASE
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
RUN printf '%s\n' \
      'slapd slapd/no_configuration boolean false' \
      'slapd slapd/domain string picasoft.net' \
      'slapd shared/organization string Picasoft' \
      'slapd slapd/password1 password picaops-lab' \
      'slapd slapd/password2 password picaops-lab' \
      'slapd slapd/purge_database boolean true' \
    | debconf-set-selections \
 && picaops-lab-apt archive \
 && apt-get install -y --no-install-recommends slapd ldap-utils openssl \
 && picaops-lab-apt local
COPY ldap-schema.ldif ldap-config.ldif ldap-base.ldif /tmp/
COPY ldap-tls.sh /usr/local/sbin/picaops-lab-ldap-tls
# A placeholder certificate lets slapd accept the TLS settings now; the lab's own replaces it
# at every start. slapd runs briefly here to load the schemas, settings and base entries.
RUN chmod 755 /usr/local/sbin/picaops-lab-ldap-tls \
 && mkdir -p /etc/ldap/tls \
 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj /CN=placeholder -keyout /etc/ldap/tls/ldap.key -out /etc/ldap/tls/ldap.crt 2>/dev/null \
 && chgrp openldap /etc/ldap/tls/ldap.key && chmod 640 /etc/ldap/tls/ldap.key \
 && mkdir -p /run/slapd && chown openldap:openldap /run/slapd \
 && slapd -h ldapi:/// -u openldap -g openldap -F /etc/ldap/slapd.d \
 && for i in 1 2 3 4 5 6 7 8 9 10; do ldapsearch -Q -Y EXTERNAL -H ldapi:/// -b cn=config -s base >/dev/null 2>&1 && break; sleep 0.5; done \
 && ldapadd -Q -Y EXTERNAL -H ldapi:/// -f /tmp/ldap-schema.ldif \
 && ldapmodify -Q -Y EXTERNAL -H ldapi:/// -f /tmp/ldap-config.ldif \
 && ldapadd -x -H ldapi:/// -D cn=admin,dc=picasoft,dc=net -w picaops-lab -f /tmp/ldap-base.ldif \
 && kill "$(cat /run/slapd/slapd.pid)" && sleep 1 \
 && rm /tmp/ldap-*.ldif \
 && sed -i 's|^SLAPD_SERVICES=.*|SLAPD_SERVICES="ldap:/// ldaps:/// ldapi:///"|' /etc/default/slapd \
 && mkdir -p /etc/systemd/system/slapd.service.d \
 && printf '[Service]\nExecStartPre=/usr/local/sbin/picaops-lab-ldap-tls\n' \
      > /etc/systemd/system/slapd.service.d/picaops-lab.conf
RUN systemctl enable slapd.service
# restic, for the directory's own backup job (`kind: ldap` dump, the TLS files and slapd's
# settings) to the other site.
RUN picaops-lab-apt archive \
 && apt-get install -y --no-install-recommends restic \
 && picaops-lab-apt local
# The mail server the reminders before access ends go through (`access.remind`): exim, whose
# one configuration file says everything (STARTTLS, AUTH only over TLS, one Maildir the tests
# read). Its certificate and password are installed at each start (mail-setup.sh); until then a
# placeholder certificate lets it start.
COPY mail-exim4.conf /etc/exim4/exim4.conf
COPY mail-setup.sh /usr/local/sbin/picaops-lab-mail-setup
RUN picaops-lab-apt archive \
 && apt-get install -y --no-install-recommends exim4-daemon-light \
 && picaops-lab-apt local \
 && chmod 755 /usr/local/sbin/picaops-lab-mail-setup \
 && install -d -m 750 -o root -g Debian-exim /etc/exim4/picaops-lab \
 && install -m 640 -o root -g Debian-exim /etc/ldap/tls/ldap.crt /etc/exim4/picaops-lab/mail.crt \
 && install -m 640 -o root -g Debian-exim /etc/ldap/tls/ldap.key /etc/exim4/picaops-lab/mail.key \
 && install -d -m 750 -o Debian-exim -g Debian-exim /var/mail/picaops-lab \
 && mkdir -p /etc/systemd/system/exim4.service.d \
 && printf '[Service]\n# + runs it outside the sandbox: ProtectSystem=full makes /etc read-only.\nExecStartPre=+/usr/local/sbin/picaops-lab-mail-setup\n' \
      > /etc/systemd/system/exim4.service.d/picaops-lab.conf \
 && systemctl enable exim4.service
