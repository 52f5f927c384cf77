#!/bin/sh
# picaops lab: apt sources of a lab image, installed as /usr/local/sbin/picaops-lab-apt.
# Lab containers have no route to the Debian archive, so at run time apt only sees a local
# repository of .deb files downloaded at build time (for the packages the base playbooks
# install). Image builds switch to the archive, install, then back:
#   picaops-lab-apt archive         the Debian archive is the only source (build time)
#   picaops-lab-apt repo PKG...     download PKG and its missing dependencies into the local
#                                   repository and index it (build time, archive active)
#   picaops-lab-apt local           the local repository is the only source (what containers run)
set -eu
repo=/srv/picaops-lab-apt
# base.sh writes the archive's sources here; `local` parks them outside sources.list.d.
active=/etc/apt/sources.list.d/debian.sources
parked=/etc/apt/picaops-lab-archive.sources
lab=/etc/apt/sources.list.d/picaops-lab.sources

case "${1:-}" in
  archive)
    [ -f "$active" ] || cp "$parked" "$active"
    rm -f "$lab"
    apt-get update
    ;;
  repo)
    shift
    mkdir -p "$repo"
    apt-get clean
    # Only what is not installed yet is downloaded: everything already in the image stays out.
    apt-get install -y --no-install-recommends --download-only "$@"
    mv /var/cache/apt/archives/*.deb "$repo"/
    apt-get clean
    cd "$repo"
    # apt-ftparchive (apt-utils) writes the index; a Release file keeps `apt-get update` quiet.
    apt-ftparchive packages . > Packages
    apt-ftparchive release . > Release
    echo "picaops-lab-apt: $(ls ./*.deb | wc -l) packages, $(du -sh . | cut -f1) in $repo"
    ;;
  local)
    [ -d "$repo" ] || { echo "picaops-lab-apt: no $repo" >&2; exit 1; }
    [ -f "$active" ] && mv "$active" "$parked"
    cat > "$lab" <<SOURCES
# picaops lab: offline repository built into the image (no route to the archive at run time).
Types: deb
URIs: file:$repo
Suites: ./
Trusted: yes
SOURCES
    apt-get clean
    rm -rf /var/lib/apt/lists/*
    # Indexes of the local repository stay in the image: `apt-get install` works at once.
    apt-get update
    ;;
  *)
    echo "usage: picaops-lab-apt archive | repo PKG... | local" >&2
    exit 2
    ;;
esac
