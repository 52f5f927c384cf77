# picaops lab: a tiny HTTP service for the lab hosts' inner Docker engines, standing for
# Picasoft's web services in the services tests. Built here (no registry), then derived into
# exact version tags (`picaops-lab/web:1.0`, `1.1`, `2.0`…, see src/lab/apps.rs); version 2.0
# answers 500 on /health, so its Compose healthcheck (`picaops-lab-probe`, a few lines of bash)
# fails and picaops must roll it back.
ARG BASE
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY app-web.py /usr/local/bin/picaops-lab-web
COPY app-web-probe.sh /usr/local/bin/picaops-lab-probe
RUN chmod 755 /usr/local/bin/picaops-lab-web /usr/local/bin/picaops-lab-probe
ENV APP_VERSION=0 APP_HEALTHY=yes PORT=8080
CMD ["/usr/local/bin/picaops-lab-web"]
