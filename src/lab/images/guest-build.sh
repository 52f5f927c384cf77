#!/bin/sh
# picaops lab: builds the guest that lab VMs run (at image build time, in the hypervisor image's
# `guest` stage). A Debian cloud kernel booted directly (no boot loader, no disk root) with a
# tiny initramfs: busybox, dropbear and guest-init.sh as /init. SSH-ready a few seconds after
# `virsh start` under TCG, where a full Debian guest takes minutes.
#   sh guest-build.sh KERNEL_DEB GUEST_INIT OUT_DIR
# writes OUT_DIR/picaops-lab-guest.{vmlinuz,initrd} and OUT_DIR/picaops-lab-guest.raw (the
# base disk: an empty ext2 filesystem labelled picaops-base, 64 MiB).
set -eu
kdeb=$1 init=$2 out=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
dpkg-deb -x "$kdeb" "$work/k"
kver=$(ls "$work/k/usr/lib/modules")
cp "$work/k/boot/vmlinuz-$kver" "$out/picaops-lab-guest.vmlinuz"

r=$work/root
mkdir -p "$r/bin" "$r/sbin" "$r/usr/bin" "$r/usr/sbin" "$r/etc/dropbear" "$r/etc/acpi/PWRF" \
  "$r/proc" "$r/sys" "$r/dev" "$r/run" "$r/tmp" "$r/root/.ssh" "$r/lib/modules" "$r/seed" \
  "$r/data" "$r/var/log"
chmod 700 "$r/root" "$r/root/.ssh"
chmod 1777 "$r/tmp"
cp /bin/busybox "$r/bin/busybox"
# Modules the cloud kernel builds as modules, in load order (xz-compressed in the package;
# busybox's insmod wants them plain).
for m in failover net_failover virtio_net virtio_blk virtio_balloon button evdev cdrom isofs; do
  f=$(find "$work/k/usr/lib/modules" -name "$m.ko.xz" | head -n1)
  [ -n "$f" ] || { echo "guest-build: module $m not in $kdeb" >&2; exit 1; }
  xz -dc "$f" > "$r/lib/modules/$m.ko"
done
# dropbear and the libraries it links (same paths as on this system, files not symlinks).
for b in /usr/sbin/dropbear /usr/bin/dropbearconvert /usr/bin/dropbearkey; do
  cp "$b" "$r$b"
  ldd "$b" | awk '/=> \//{print $3} /^[ \t]*\//{print $1}' | while read -r lib; do
    mkdir -p "$r$(dirname "$lib")"
    cp -L "$lib" "$r$lib"
  done
done
install -m 755 "$init" "$r/init"
printf '#!/bin/sh\nexec /sbin/poweroff\n' > "$r/etc/acpi/PWRF/00000080"
chmod 755 "$r/etc/acpi/PWRF/00000080"
(cd "$r" && find . | cpio -o -H newc --quiet | gzip -9) > "$out/picaops-lab-guest.initrd"

rm -f "$out/picaops-lab-guest.raw"
truncate -s 64M "$out/picaops-lab-guest.raw"
mke2fs -F -q -t ext2 -L picaops-base "$out/picaops-lab-guest.raw"
ls -l "$out"
