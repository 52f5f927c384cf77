# picaops lab: the directory host (ldap): slapd with base dc=picasoft,dc=net.
# Lab only: the admin password is public (picaops-lab). Real LDAP configuration is picaops' job.
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
 && apt-get install -y --no-install-recommends slapd ldap-utils \
 && picaops-lab-apt local
RUN systemctl enable slapd.service
