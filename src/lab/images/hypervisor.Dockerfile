# picaops lab: a physical host (bob, alice, caribou): Docker + Compose v2, libvirt/QEMU, restic,
# rclone (serves the repositories append-only), and what lab VMs need (see guest-build.sh and the
# last layers). rest-server stays for the test that moves a repository an earlier picaops served
# with it; socat and curl let the append-only test speak to rclone as an attacker would.
ARG BASE

# The lab VMs' guest: a Debian cloud kernel and a busybox + dropbear initramfs, and an empty
# base disk (guest-build.sh). Built apart: none of its packages end up on the host.
FROM ${BASE} AS guest
ENV DEBIAN_FRONTEND=noninteractive
COPY guest-build.sh guest-init.sh /tmp/guest/
RUN picaops-lab-apt archive \
 && apt-get install -y --no-install-recommends busybox-static dropbear-bin xz-utils cpio e2fsprogs \
 && cd /tmp/guest \
 && apt-get download "$(apt-cache depends linux-image-cloud-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9].*\)/\1/p' | head -n1)" \
 && sh guest-build.sh /tmp/guest/linux-image-*.deb /tmp/guest/guest-init.sh /out \
 && picaops-lab-apt local

FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
RUN picaops-lab-apt archive \
 && apt-get install -y --no-install-recommends \
      docker.io docker-cli docker-compose libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils \
      restic restic-rest-server rclone socat curl \
 && picaops-lab-apt local
# The inner Docker keeps its data on a volume (overlay on overlay fails) and leaves the
# container's iptables alone: the lab's networking is the router container's job.
COPY daemon.json /etc/docker/daemon.json
RUN systemctl enable docker.service libvirtd.service ssh.service
# VMs: genisoimage for NoCloud seeds; a host-only bridge vmbr0 (10.61.0.1/24: lab VMs are
# reached through their hypervisor as jump host); libvirt's `default` storage pool; and the
# guest as base image `picaops-lab-guest` with its kernel and initrd beside it (direct boot).
RUN picaops-lab-apt archive \
 && apt-get install -y --no-install-recommends genisoimage \
 && picaops-lab-apt local
COPY vmbr0.service /etc/systemd/system/picaops-lab-vmbr0.service
COPY pool-default.xml /etc/libvirt/storage/default.xml
COPY --from=guest /out/ /var/lib/libvirt/images/
RUN mkdir -p /etc/libvirt/storage/autostart \
 && ln -sf /etc/libvirt/storage/default.xml /etc/libvirt/storage/autostart/default.xml \
 && cd /var/lib/libvirt/images \
 && qemu-img convert -f raw -O qcow2 picaops-lab-guest.raw picaops-lab-guest.qcow2 \
 && rm picaops-lab-guest.raw \
 && systemctl enable picaops-lab-vmbr0.service
# OpenLDAP's slapd and tools, for a site recovery that brings the directory back here (its
# `kind: ldap` dump is loaded with slapadd, its own cn=config included): no directory of its
# own (no configuration at install), and slapd not started at boot until one is loaded.
RUN echo 'slapd slapd/no_configuration boolean true' | debconf-set-selections \
 && picaops-lab-apt archive \
 && apt-get install -y --no-install-recommends slapd ldap-utils \
 && picaops-lab-apt local \
 && { systemctl disable slapd.service 2>/dev/null || true; }
