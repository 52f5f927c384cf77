#!/bin/sh
# picaops lab: PID 1 of every lab host. Prepares what systemd and the inner daemons need, then
# becomes systemd. Everything here runs again at each container start (stop_host/start_host).
set -eu

# Docker mounts /sys and the cgroup v1 hierarchies read-only (and a remount is refused as
# "busy"); dockerd, libvirtd and systemd inside need them writable. Mount fresh ones over them:
# with --cgroupns private each fresh mount shows only this container's part of the tree.
mount -o remount,rw /sys 2>/dev/null || true
v1=$(awk '$0 ~ / - cgroup / {print $5, $NF}' /proc/self/mountinfo)
if [ -n "$v1" ]; then
  mount -t tmpfs -o mode=755,nosuid,nodev,noexec tmpfs /sys/fs/cgroup
  echo "$v1" | while read -r dir opts; do
    mkdir -p "$dir"
    mount -t cgroup -o "nosuid,nodev,noexec,${opts#rw,}" cgroup "$dir"
  done
else
  # A cgroup v2 machine (an ordinary CI runner): /sys/fs/cgroup is already this container's own.
  mount -o remount,rw /sys/fs/cgroup 2>/dev/null || true
fi

# systemd 257 (trixie) tracks processes in the cgroup2 hierarchy, mounted next to the v1
# controllers ("hybrid"). On a cgroup v1 machine nothing isolates that hierarchy between
# containers unless the engine happens to: give this container its own subtree, then start
# systemd in a cgroup namespace rooted there. systemd >= 256 refuses a pure cgroup v1 ("legacy")
# boot; hybrid boots here anyway, and SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1 (read from PID 1's
# arguments, which systemd takes as the kernel command line in a container) keeps it booting
# should it ever fall back to legacy.
mkdir -p /run/picaops-cgroup2
if mount -t cgroup2 cgroup2 /run/picaops-cgroup2 2>/dev/null; then
  own=/run/picaops-cgroup2/picaops-lab-$(hostname)
  if [ -d "$own" ]; then
    find "$own" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
  fi
  mkdir -p "$own"
  echo $$ > "$own/cgroup.procs"
  umount /run/picaops-cgroup2
fi
rmdir /run/picaops-cgroup2

# libvirt networks need a tun device.
[ -e /dev/net/tun ] || { mkdir -p /dev/net; mknod /dev/net/tun c 10 200; }

# Keys from the workstation (bind-mounted read-only at /etc/picaops-lab): pinned host key,
# admin key for root and for the unprivileged `deploy` user.
keys=/etc/picaops-lab
if [ -d "$keys" ]; then
  install -m 600 "$keys/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
  install -m 644 "$keys/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub
  install -m 600 "$keys/authorized_keys" /root/.ssh/authorized_keys
  if id deploy >/dev/null 2>&1; then
    install -m 600 -o deploy -g deploy "$keys/authorized_keys" /home/deploy/.ssh/authorized_keys
  fi
fi

# Cross-site traffic goes through the WAN router: PICAOPS_LAB_ROUTE="SUBNET via ROUTER".
if [ -n "${PICAOPS_LAB_ROUTE:-}" ]; then
  # shellcheck disable=SC2086 # word splitting wanted: "SUBNET via ROUTER"
  ip route replace $PICAOPS_LAB_ROUTE
fi

exec unshare --cgroup /lib/systemd/systemd SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1 "$@"
