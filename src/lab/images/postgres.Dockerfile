# picaops lab: a PostgreSQL server image for the lab hosts' inner Docker engines (no registry is
# reachable: it is built here and copied in with `docker save | docker load`). It behaves like the
# official image where the backups' dump and drill commands rely on it: `pg_dump`, `psql`,
# `pg_isready` and `createdb` on PATH, a `postgres` superuser, data in /var/lib/postgresql/data,
# POSTGRES_HOST_AUTH_METHOD=trust honoured (local connections are always trusted here).
ARG BASE
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-17 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && rm -rf /var/lib/postgresql/17 /etc/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/picaops-lab-postgres
RUN chmod 755 /usr/local/bin/picaops-lab-postgres
ENV PATH=/usr/lib/postgresql/17/bin:$PATH PGDATA=/var/lib/postgresql/data
STOPSIGNAL SIGINT
CMD ["/usr/local/bin/picaops-lab-postgres"]
