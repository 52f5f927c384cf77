#!/bin/bash
# picaops lab: base image. Debian 13 "trixie", minbase, imported into Docker.
# Run by `picaops lab build` on the workstation (needs root and debootstrap):
#   bash base.sh MIRROR SUITE TAG WORKDIR
# The mirror comes from the workstation's apt configuration (or PICAOPS_DEBIAN_MIRROR);
# it is written into the image's sources so later layers can `apt-get install`.
set -euo pipefail
mirror=$1 suite=$2 tag=$3 workdir=$4
rootfs=$workdir/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs"
echo "picaops-lab: debootstrap $suite (minbase) from $mirror"
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror"
rm -f "$rootfs/etc/apt/sources.list"
cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
# Keep images small and builds quiet: no docs, no recommends, no prompts.
cat > "$rootfs/etc/apt/apt.conf.d/90picaops-lab" <<APT
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Dpkg::Use-Pty "false";
APT
cat > "$rootfs/etc/dpkg/dpkg.cfg.d/90picaops-lab-nodoc" <<DPKG
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
DPKG
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
echo "picaops-lab: importing the root filesystem as $tag"
tar -C "$rootfs" --numeric-owner -c . | docker import --change 'CMD ["/bin/bash"]' - "$tag"
rm -rf "$rootfs"
