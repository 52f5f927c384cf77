# picaops lab: what every lab machine has (systemd as PID 1, sshd, sudo, python3 for Ansible).
# Built FROM the base image; every package is installed here because lab containers have no
# route to the package archive at run time.
ARG BASE
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive container=docker
# picaops-lab-apt (lab-apt.sh) switches apt between the archive (builds) and the offline
# repository /srv/picaops-lab-apt (run time). That repository holds the packages Picasoft's base
# playbooks (playbooks/base/) install, plus `hello` and `figlet` for tests, each with the
# dependencies this image lacks, so the `package` module works in the lab without a network.
COPY lab-apt.sh /usr/local/sbin/picaops-lab-apt
RUN chmod 755 /usr/local/sbin/picaops-lab-apt \
 && picaops-lab-apt archive \
 && apt-get install -y --no-install-recommends \
      systemd systemd-sysv dbus openssh-server openssh-client sudo python3 apt-utils \
      iproute2 iptables iputils-ping tcpdump procps less curl ca-certificates rsync coreutils util-linux \
 && picaops-lab-apt repo htop tmux vim ncdu unattended-upgrades chrony hello figlet \
 && picaops-lab-apt local
# Host keys come from the workstation at start (see init.sh): none baked into the image, so two
# lab hosts never share a key. Each container gets its own machine-id at boot.
RUN rm -f /etc/ssh/ssh_host_* \
 && : > /etc/machine-id && rm -f /var/lib/dbus/machine-id \
 && mkdir -p /root/.ssh && chmod 700 /root/.ssh \
 && useradd --create-home --shell /bin/bash deploy && usermod -p '*' deploy \
 && mkdir -p /home/deploy/.ssh && chmod 700 /home/deploy/.ssh && chown deploy:deploy /home/deploy/.ssh \
 && echo 'deploy ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/deploy && chmod 440 /etc/sudoers.d/deploy
# Units that make no sense in a container (no kernel modules, no consoles, no udev hardware).
RUN systemctl mask systemd-modules-load.service getty.target console-getty.service \
      systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
      systemd-firstboot.service systemd-resolved.service 2>/dev/null || true
COPY sshd.conf /etc/ssh/sshd_config.d/10-picaops-lab.conf
COPY init.sh /usr/local/sbin/picaops-lab-init
RUN chmod 755 /usr/local/sbin/picaops-lab-init && systemctl enable ssh.service
STOPSIGNAL SIGRTMIN+3
CMD ["/usr/local/sbin/picaops-lab-init"]
