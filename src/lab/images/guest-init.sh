#!/bin/busybox sh
# picaops lab: /init of the lab VMs' initramfs (built by guest-build.sh). Reads a NoCloud seed
# (an ISO 9660 disk labelled cidata: meta-data, user-data, network-config as picaops writes
# them), sets the hostname, the address and route, root's authorized keys and the SSH host key
# from it, then hands over to busybox init: dropbear on port 22, acpid (the ACPI power button
# powers off cleanly, which is how `virsh shutdown` asks), a root shell on the serial console.
# The first disk (/dev/vda, ext2 from the base image) is mounted on /data when it has one.
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /run
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=755 tmpfs /run
for m in failover net_failover virtio_net virtio_blk virtio_balloon button evdev cdrom isofs; do
  insmod "/lib/modules/$m.ko" 2>/dev/null
done
log() { echo "picaops-guest: $*" > /dev/console; }

# Block devices show up a moment after their driver loads.
seed=
i=0
while [ $i -lt 50 ] && [ -z "$seed" ]; do
  for d in /dev/vd?; do
    [ -b "$d" ] || continue
    if mount -t iso9660 -o ro "$d" /seed 2>/dev/null; then
      if [ -f /seed/meta-data ]; then seed=$d; break; fi
      umount /seed
    fi
  done
  [ -n "$seed" ] || { sleep 0.1; i=$((i + 1)); }
done
[ -n "$seed" ] || log "no NoCloud seed (cidata) found: no address, no keys"

value() { sed -n "s/^ *$1: *//p" "$2" 2>/dev/null | head -n1 | tr -d '"'; }
name=$(value local-hostname /seed/meta-data)
hostname "${name:-picaops-guest}"
echo "${name:-picaops-guest}" > /etc/hostname

ip link set lo up
nic=$(ls /sys/class/net | grep -v '^lo$' | head -n1)
addr=$(sed -n 's/^ *addresses: *\[\([^],]*\).*/\1/p' /seed/network-config 2>/dev/null | head -n1)
via=$(sed -n 's/.*via: *\([0-9.]*\).*/\1/p' /seed/network-config 2>/dev/null | head -n1)
if [ -n "$nic" ] && [ -n "$addr" ]; then
  ip link set "$nic" up
  ip addr add "$addr" dev "$nic"
  [ -n "$via" ] && ip route add default via "$via"
fi

# root's keys: the `ssh_authorized_keys:` list of user-data.
awk '/^ssh_authorized_keys:/{on=1; next} on && /^ *- /{sub(/^ *- */, ""); gsub(/"/, ""); print; next} {on=0}' \
  /seed/user-data > /root/.ssh/authorized_keys 2>/dev/null
chmod 600 /root/.ssh/authorized_keys
# The host key picaops generated on the hypervisor (and pinned before the first login).
awk '/BEGIN OPENSSH PRIVATE KEY/{on=1} on{sub(/^ */, ""); print} /END OPENSSH PRIVATE KEY/{on=0}' \
  /seed/user-data > /run/host_key 2>/dev/null
if [ -s /run/host_key ]; then
  chmod 600 /run/host_key
  dropbearconvert openssh dropbear /run/host_key /etc/dropbear/dropbear_ed25519_host_key >/dev/null 2>&1
  rm -f /run/host_key
fi
[ -s /etc/dropbear/dropbear_ed25519_host_key ] ||
  dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key >/dev/null 2>&1
umount /seed 2>/dev/null

mount -t ext4 /dev/vda /data 2>/dev/null || rmdir /data 2>/dev/null

cat > /etc/passwd <<PASSWD
root:x:0:0:root:/root:/bin/sh
PASSWD
echo 'root:*:1::::::' > /etc/shadow
echo 'root:x:0:' > /etc/group
echo /bin/sh > /etc/shells
cat > /etc/inittab <<INITTAB
::respawn:/usr/sbin/dropbear -F -E -s -r /etc/dropbear/dropbear_ed25519_host_key -p 22
::respawn:/sbin/acpid -f
ttyS0::respawn:-/bin/sh
::shutdown:/bin/umount -a -r
INITTAB
log "$(hostname) ready: $addr"
exec /sbin/init
