#!/usr/bin/env bash
# How long a site recovery takes on the lab, per phase: for each site, puts known data into its
# services (hello's files on bob: MIB MiB in 16 files; notes' PostgreSQL on alice: ROWS rows),
# and Compiègne's directory (ldap), backs them up to the other site, stops the site's machines
# (`picaops lab stop`: bob; alice, caribou and ldap), runs
# `picaops site recover SITE --apply` and prints each step's time, each service's RPO and RTO,
# and whether the data came back exactly (sha256 of the files, count and sum of the rows). Then
# puts the lab back as it was (the site started again, the recovered copies removed).
#
# Not a test; CI never runs it. Needs the lab up (`picaops lab up`, or the README's first
# command). Usage: bench/recover.sh [toulouse] [compiegne]   (default: both)
#   MIB=64 ROWS=100000 PICAOPS=target/release/picaops bench/recover.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
picaops=${PICAOPS:-$repo/target/debug/picaops}
[ -x "$picaops" ] || (cd "$repo" && cargo build --quiet)
lab=${PICAOPS_LAB_DIR:-$HOME/.local/state/picaops/lab}
mib=${MIB:-64}
rows=${ROWS:-100000}
[ -d "$lab/inventory" ] || { echo "the lab is not up: run \`picaops lab up\`" >&2; exit 2; }
inv="$lab/inventory-bench-recover"
backup_pb="$repo/playbooks/base/backup.yml"
vm_pb="$lab/playbooks/lab-vms.yml"
on() { docker exec "picaops-lab-$1" sh -c "$2"; }
p() { "$picaops" -i "$inv" "$@"; }

fresh_inventory() {
  rm -rf "$inv"; mkdir -p "$inv"
  cp "$lab"/inventory/*.yml "$inv"/; cp "$lab/inventory-vms/vms.yml" "$inv"/
  [ ! -e "$lab/inventory-vms/known_hosts" ] || cp "$lab/inventory-vms/known_hosts" "$inv"/
}

# Puts the lab back: the lost host started, the recovered copies removed at `to`.
restore_lab() { # LOST TO VM DATA SERVICES...
  local lost=$1 to=$2 vm=$3 data=$4; shift 4
  local h; for h in $lost; do "$picaops" lab start "$h" >/dev/null; done
  local s clean="virsh -q destroy $vm >/dev/null 2>&1; virsh -q undefine $vm --nvram >/dev/null 2>&1 || virsh -q undefine $vm >/dev/null 2>&1; rm -f /var/lib/libvirt/images/$vm-*;"
  for s in "$@"; do
    clean="$clean d=/var/lib/picaops/services/$s; if [ -d \$d ]; then (cd \$d && docker compose -p $s down) >/dev/null 2>&1; rm -rf \$d; fi;"
  done
  on "$to" "$clean rm -rf $data; true"
  on "${lost%% *}" "virsh -q start $vm >/dev/null 2>&1; for s in $*; do (cd /var/lib/picaops/services/\$s 2>/dev/null && docker compose -p \$s start) >/dev/null 2>&1; done; true"
  rm -rf "$inv"
}

report() { # JSON_FILE
  python3 - "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"  {'step':<18} {'seconds':>8}")
for s in d["steps"]:
    print(f"  {s['step']:<18} {s['seconds']:>8.1f}  {'ok' if s['ok'] else 'FAILED: ' + s['detail']}")
for s in ([d["directory"]] if d.get("directory") else []) + d["services"]:
    rpo = "-" if s["rpo_seconds"] is None else f"{s['rpo_seconds']} s"
    rto = "-" if s["rto_seconds"] is None else f"{s['rto_seconds']:.1f} s"
    print(f"  {'' if s['service'] == 'directory' else 'service '}{s['service']:<8} on {s['machine']:<6} RPO {rpo:<8} RTO {rto:<8} {'back' if s['ok'] else 'NOT BACK: ' + (s['error'] or '')}")
print(f"  total {d['seconds']:.1f} s")
PY
}

recover() { # SITE "LOST HOSTS" TO VM WHAT_CHECKS [MORE PLAYBOOKS]
  local site=$1 lost=$2 to=$3 vm=$4 check=$5 out h; shift 5
  local more=() pb; for pb in "$@"; do more+=(--playbook "$pb"); done
  out=$(mktemp)
  for h in $lost; do "$picaops" lab stop "$h" >/dev/null; done
  local start=$(date +%s.%N)
  p -o json site recover "$site" --apply --playbook "$backup_pb" --playbook "$vm_pb" "${more[@]}" >"$out" || true
  echo "site recover $site (lost: $lost, back at $to): $(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')") s of wall time"
  report "$out"
  echo "  data: $(on "$to" "$check")"
  rm -f "$out"
}

toulouse() {
  fresh_inventory
  p service apply -l bob >/dev/null
  on bob "mkdir -p /DATA/hello && for i in \$(seq 1 16); do head -c $((mib * 1024 * 64)) /dev/urandom > /DATA/hello/f\$i; done"
  local before; before=$(on bob "cd /DATA/hello && sha256sum f* | sha256sum | cut -c1-16")
  p apply -l bob,alice --tags backup "$backup_pb" >/dev/null
  p backup init --job hello >/dev/null
  p backup run --job hello >/dev/null
  recover toulouse bob alice vm-tls "cd /DATA/hello && s=\$(sha256sum f* | sha256sum | cut -c1-16); [ \$s = $before ] && echo \"files identical ($mib MiB, digest \$s)\" || echo \"FILES DIFFER (\$s, expected $before)\""
  restore_lab bob alice vm-tls /DATA/hello hello
}

compiegne() {
  fresh_inventory
  # Toulouse's VM is converged too (every surviving machine's access helper): made afresh on
  # bob from this inventory, so that its host key is pinned here.
  on bob "virsh -q destroy vm-tls >/dev/null 2>&1; virsh -q undefine vm-tls --nvram >/dev/null 2>&1 || virsh -q undefine vm-tls >/dev/null 2>&1; rm -f /var/lib/libvirt/images/vm-tls-*; true"
  p apply -l bob,vm-tls "$vm_pb" >/dev/null
  p service apply -l alice >/dev/null
  on alice "docker exec notes-db-1 psql -q -U postgres -d notes -c 'drop table if exists bench; create table bench(x bigint); insert into bench select generate_series(1,$rows);'"
  local before; before=$(on alice "docker exec notes-db-1 psql -U postgres -d notes -tAc 'select count(*), sum(x) from bench'")
  p apply -l bob,alice,ldap --tags backup "$backup_pb" >/dev/null
  local job; for job in notes ldap-directory; do
    p backup init --job $job >/dev/null
    p backup run --job $job >/dev/null
  done
  # The access play for the hosts only: the lab's VMs are busybox guests (lab-vms.yml's).
  sed 's/^  hosts: all$/  hosts: hypervisors/' "$repo/playbooks/base/access.yml" >"$lab/playbooks/bench-access.yml"
  recover compiegne "alice caribou ldap" bob vm-cpn "r=\$(docker exec notes-db-1 psql -U postgres -d notes -tAc 'select count(*), sum(x) from bench'); [ \"\$r\" = '$before' ] && echo \"rows identical (count|sum $before)\" || echo \"ROWS DIFFER (\$r, expected $before)\"" "$lab/playbooks/bench-access.yml"
  # The directory recovered on bob removed, bob's access helper pointed at ldap again.
  on bob "systemctl stop slapd; rm -rf /var/lib/ldap /var/lib/ldap.picaops-* /etc/ldap/slapd.d /etc/ldap/slapd.d.picaops-* /etc/ldap/tls; true"
  restore_lab "alice caribou ldap" bob vm-cpn /DATA/notes notes pad
  "$picaops" -i "$lab/inventory" apply -l bob --lock-wait 300 "$repo/playbooks/base/access.yml" "$backup_pb" >/dev/null
}

sites=("$@"); [ ${#sites[@]} -gt 0 ] || sites=(toulouse compiegne)
for s in "${sites[@]}"; do
  case $s in toulouse|compiegne) "$s" ;; *) echo "unknown site $s (toulouse, compiegne)" >&2; exit 2 ;; esac
done
