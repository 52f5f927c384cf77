# picaops lab: a physical host (bob, alice, caribou): Docker + Compose v2, libvirt/QEMU, restic.
ARG BASE
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
RUN picaops-lab-apt archive \
 && apt-get install -y --no-install-recommends \
      docker.io docker-cli docker-compose libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils \
      restic restic-rest-server \
 && picaops-lab-apt local
# The inner Docker keeps its data on a volume (overlay on overlay fails) and leaves the
# container's iptables alone: the lab's networking is the router container's job.
COPY daemon.json /etc/docker/daemon.json
RUN systemctl enable docker.service libvirtd.service ssh.service
