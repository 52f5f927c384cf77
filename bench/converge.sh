#!/usr/bin/env bash
# Converge benchmark: the same small workload applied by picaops, Ansible and pyinfra to N loopback
# sshd processes (see lib.sh), first on empty hosts, then again as a no-op. Prints wall times, ratios
# vs picaops, logins and SSH sessions per host. Not a test; CI never runs it; slowness never fails
# it. Needs root (it starts sshd and creates a login user). Kills its sshds on exit.
#
# Usage: bench/converge.sh [N...]            (default: 10 50)
# Env:   BENCH_VENV  venv with ansible-core and pyinfra 3.x (default bench/.venv; create it with
#                    python3 -m venv bench/.venv && bench/.venv/bin/pip install ansible-core pyinfra)
#        TOOLS       which tools to run (default "picaops ansible pyinfra")
#        REPEAT      (first, no-op) pairs per tool and N; the table shows medians (default 1)
#        PICAOPS     picaops binary to use instead of building target/release/picaops
#        TOOL_TIMEOUT  seconds before a run counts as hung (default 1200); reported, not fatal
#        BENCH_USER, PORT  as in lib.sh (login user, sshd port)
#
# Workload (bench/converge/{picaops,ansible,pyinfra}/, one template and one file shared through
# symlinks to converge/common/), per host, under /tmp/picaops-bench/<tool>/<host>/ since all the
# "hosts" share this machine's filesystem: the directory itself; bench-1.conf..bench-20.conf from
# one template (host name, site, index, loop over every host's name); copied.txt; one line ensured
# in lines.txt. Hosts h01..hN; the first half is in site toulouse, the second in compiegne.
#
# Ansible: ansible-playbook, strategy linear, forks = N, gather_facts: false, pipelining on,
# ControlMaster auto + ControlPersist 60s within a run; the masters are closed after each run so
# that, like picaops and pyinfra, every run pays for its connections.
# pyinfra: `pyinfra -y --parallel N inventory.py deploy.py` (paramiko; host keys checked against the
# lab's known_hosts, strict).
# picaops: `picaops -i INV apply converge.yml -o json --forks N`; while `apply` does not exist the
# table says "failed (exit X)" and everything else still runs.
#
# Checks, per tool: the first run leaves N directories and 22 N files, with the same contents as
# every other tool's (diff -r); the no-op run touches nothing (size, mode, mtime, inode of every
# file unchanged) and the tool says so (Ansible: changed=0 in the recap; pyinfra: every operation
# on every host says "No changes", none "Success"; picaops: exit code, stdout (JSON) saved).
# Sessions per host = "Starting session:" lines in the sshd log (VERBOSE: one per exec, shell or
# subsystem channel, including those multiplexed on one connection); logins = "Accepted publickey".

set -euo pipefail

sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(10 50)
repeat=${REPEAT:-1}
timeout_s=${TOOL_TIMEOUT:-1200}
read -r -a tools <<< "${TOOLS:-picaops ansible pyinfra}"
. "$(dirname "$0")/lib.sh"
bench_init converge
venv=${BENCH_VENV:-$here/.venv}
conv="$here/converge"
root=/tmp/picaops-bench

for t in "${tools[@]}"; do
  case $t in
    picaops) bench_build_picaops ;;
    ansible) [ -x "$venv/bin/ansible-playbook" ] || { echo "no $venv/bin/ansible-playbook (BENCH_VENV)" >&2; exit 2; } ;;
    pyinfra) [ -x "$venv/bin/pyinfra" ] || { echo "no $venv/bin/pyinfra (BENCH_VENV)" >&2; exit 2; } ;;
    *) echo "unknown tool $t" >&2; exit 2 ;;
  esac
done
bench_user_and_key

write_inventories() { # N -> $work/n$N/{picaops/,ansible/,pyinfra/}
  local n=$1 i d="$work/n$1" site
  write_picaops_inventory "$n" "$d/picaops" toulouse compiegne
  mkdir -p "$d/ansible" "$d/pyinfra"
  {
    echo "[all]"
    for i in $(seq 1 "$n"); do
      site=toulouse; [ "$i" -gt $((n / 2)) ] && site=compiegne
      echo "$(host_name "$i") ansible_host=127.0.1.$i site=$site"
    done
  } > "$d/ansible/hosts.ini"
  cat > "$d/ansible/ansible.cfg" <<EOF
[defaults]
inventory = $d/ansible/hosts.ini
forks = $n
strategy = linear
remote_user = $user
remote_port = $port
private_key_file = $work/id_ed25519
host_key_checking = True
interpreter_python = /usr/bin/python3
retry_files_enabled = False
gathering = explicit
local_tmp = $work/ansible-tmp
home = $work/ansible-home

[ssh_connection]
pipelining = True
ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=$work/known_hosts -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o BatchMode=yes
control_path_dir = $d/ansible/cp
EOF
  {
    echo "# pyinfra 3.x inventory for bench/converge.sh, N=$n"
    echo "hosts = ["
    for i in $(seq 1 "$n"); do
      site=toulouse; [ "$i" -gt $((n / 2)) ] && site=compiegne
      echo "    (\"$(host_name "$i")\", {\"ssh_hostname\": \"127.0.1.$i\", \"ssh_port\": $port, \"ssh_user\": \"$user\","
      echo "        \"ssh_key\": \"$work/id_ed25519\", \"ssh_known_hosts_file\": \"$work/known_hosts\","
      echo "        \"ssh_strict_host_key_checking\": \"yes\", \"ssh_allow_agent\": False,"
      echo "        \"ssh_look_for_keys\": False, \"site\": \"$site\"}),"
    done
    echo "]"
  } > "$d/pyinfra/inventory.py"
}

run_tool() { # TOOL N OUTPREFIX -> exit code of the tool
  local t=$1 n=$2 out=$3 d="$work/n$2" rc=0
  case $t in
    picaops)
      timeout "$timeout_s" "$picaops" -i "$d/picaops" apply "$conv/picaops/converge.yml" -o json --forks "$n" \
        > "$out.out" 2> "$out.err" || rc=$? ;;
    ansible)
      ANSIBLE_CONFIG="$d/ansible/ansible.cfg" ANSIBLE_NOCOLOR=1 \
        timeout "$timeout_s" "$venv/bin/ansible-playbook" "$conv/ansible/converge.yml" \
        > "$out.out" 2> "$out.err" || rc=$?
      local s   # close the ControlPersist masters: the next run starts cold, like the other tools'
      for s in "$d/ansible/cp"/*; do [ -S "$s" ] && ssh -o ControlPath="$s" -O exit bench >/dev/null 2>&1; done
      true ;;
    pyinfra)
      (cd "$conv/pyinfra" && NO_COLOR=1 timeout "$timeout_s" "$venv/bin/pyinfra" -y --parallel "$n" \
        "$d/pyinfra/inventory.py" deploy.py) > "$out.out" 2> "$out.err" || rc=$? ;;
  esac
  return "$rc"
}

snapshot() { # TOOL -> one line per path: name size mode mtime inode
  (cd "$root/$1" 2>/dev/null && find . -printf '%p %s %m %T@ %i\n' | sort) || true
}

noop_said() { # TOOL OUTPREFIX -> what the tool itself says about the no-op run
  local t=$1 out=$2
  case $t in
    ansible) # recap lines: "h01 : ok=4 changed=0 unreachable=0 failed=0 ..."
      grep -oE 'changed=[0-9]+' "$out.out" | awk -F= '{s+=$2; n++} END {printf "recap changed=%d (%d hosts)", s, n}' ;;
    pyinfra) # progress lines on stderr: "[h01] Success" (changed) or "[h01] No changes", per op and host
      echo "changed=$(grep -c '\] Success$' "$out.err") unchanged=$(grep -c '\] No changes$' "$out.err")" ;;
    picaops) echo "exit $3, stdout $(wc -c < "$out.out") bytes" ;;
  esac
}

declare -A result
check_failures=0

for n in "${sizes[@]}"; do
  echo "== N=$n: starting $n sshd on 127.0.1.1-$n:$port" >&2
  start_sshds "$n" VERBOSE
  write_inventories "$n"
  for t in "${tools[@]}"; do
    firsts=() noops=() status=ok
    for r in $(seq 1 "$repeat"); do
      rm -rf "${root:?}/$t"; mkdir -p "$root/$t"; chown "$user" "$root/$t"; chmod 755 "$root"
      pre="$work/n$n/$t-first-$r"
      l0=$(count "$n" "Accepted publickey"); s0=$(count "$n" "Starting session:")
      echo "   $t N=$n run $r: first converge" >&2
      t0=$(now); rc=0; run_tool "$t" "$n" "$pre" || rc=$?; t1=$(now)
      l1=$(count "$n" "Accepted publickey"); s1=$(count "$n" "Starting session:")
      firsts+=("$(echo "$t1 - $t0" | bc -l)")
      first_rc=$rc
      files=$(find "$root/$t" -mindepth 2 -type f | wc -l); dirs=$(find "$root/$t" -mindepth 1 -maxdepth 1 -type d | wc -l)
      snap1=$(snapshot "$t")
      pre2="$work/n$n/$t-noop-$r"
      echo "   $t N=$n run $r: no-op" >&2
      t0=$(now); rc=0; run_tool "$t" "$n" "$pre2" || rc=$?; t1=$(now)
      l2=$(count "$n" "Accepted publickey"); s2=$(count "$n" "Starting session:")
      noops+=("$(echo "$t1 - $t0" | bc -l)")
      noop_rc=$rc
      snap2=$(snapshot "$t")
    done
    # the last repetition's counts and checks are reported
    converged="files $files/$((22 * n)), dirs $dirs/$n"
    [ "$files" = $((22 * n)) ] && [ "$dirs" = "$n" ] || { status="did not converge"; }
    if [ "$snap1" = "$snap2" ]; then untouched="untouched"; else untouched="TOUCHED"; status="no-op changed files"; fi
    said=$(noop_said "$t" "$pre2" "$noop_rc")
    if [ "$first_rc" != 0 ] || [ "$noop_rc" != 0 ]; then
      if [ "$first_rc" = "$noop_rc" ]; then status="failed (exit $first_rc)"
      else status="failed (exit $first_rc first, $noop_rc no-op)"; fi
    fi
    if [ "$status" != ok ] && [ "$t" != picaops ]; then
      check_failures=1
      echo "!! $t N=$n: $status; outputs: $pre.{out,err} $pre2.{out,err}" >&2
      tail -n 5 "$pre.out" "$pre.err" "$pre2.out" "$pre2.err" >&2 || true
    fi
    result[$n,$t]="$(median "${firsts[@]}")|$(median "${noops[@]}")|$status|$(per_host_delta "$l0" "$l1")|$(per_host_delta "$s0" "$s1")|$(per_host_delta "$l1" "$l2")|$(per_host_delta "$s1" "$s2")|$converged; no-op: $untouched, $said"
  done
  # same contents whatever the tool (compared with the first tool that converged)
  ref=""
  for t in "${tools[@]}"; do
    IFS='|' read -r _ _ status _ <<< "${result[$n,$t]}"
    if [ -z "$ref" ] && [ "$status" = ok ]; then ref=$t; continue; fi
    [ -n "$ref" ] && [ -d "$root/$t" ] || continue
    if diff -r "$root/$ref" "$root/$t" > "$work/n$n/diff-$ref-$t.txt" 2>&1; then
      result[$n,$t]+="; same files as $ref"
    else
      result[$n,$t]+="; files DIFFER from $ref ($work/n$n/diff-$ref-$t.txt)"
      [ "$t" = picaops ] || check_failures=1
    fi
  done
  bench_cleanup
done

ratio() { if [ -n "$2" ]; then printf '%.1fx' "$(echo "$1 / $2" | bc -l)"; else echo "n/a"; fi; }

echo
echo "converge benchmark as $user on this machine ($(nproc) cores); wall = median of $repeat run(s)"
echo "logins and sessions are per host (min-max over hosts), counted in the sshd VERBOSE logs"
printf '%-4s %-8s %9s %8s %9s %8s  %-13s %-13s  %s\n' N tool first_s vs_pica noop_s vs_pica \
  "first:log/ses" "noop:log/ses" checks
for n in "${sizes[@]}"; do
  base_first="" base_noop=""
  if [ -n "${result[$n,picaops]:-}" ]; then
    IFS='|' read -r f o status _ <<< "${result[$n,picaops]}"
    [ "$status" = ok ] && { base_first=$f; base_noop=$o; }
  fi
  for t in "${tools[@]}"; do
    IFS='|' read -r f o status l1 s1 l2 s2 checks <<< "${result[$n,$t]}"
    if [ "$t" = picaops ] && [ "$status" != ok ]; then
      printf '%-4s %-8s %-38s  %-13s %-13s  %s\n' "$n" "$t" "$status" "$l1/$s1" "$l2/$s2" "$checks"
    else
      printf '%-4s %-8s %9.2f %8s %9.2f %8s  %-13s %-13s  %s\n' "$n" "$t" "$f" "$(ratio "$f" "$base_first")" \
        "$o" "$(ratio "$o" "$base_noop")" "$l1/$s1" "$l2/$s2" "$status; $checks"
    fi
  done
done
echo
echo "logs, inventories and outputs: $work"
exit "$check_failures"
