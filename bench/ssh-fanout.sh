#!/usr/bin/env bash
# Fan-out benchmark: `picaops run -- true` over N loopback sshd processes, side by side with the
# usual alternatives (xargs -P N ssh, and ansible when bench/.venv has it). Not a test; CI never
# runs it. Needs root (it starts sshd and creates a login user).
#
# Usage: bench/ssh-fanout.sh [N...]          (default: 10 50)
# Env:   BENCH_USER   login user on the sshds (default picaops-bench, shell /bin/sh, created if
#                     absent). BENCH_USER=root works too, but on a machine whose root ~/.bashrc
#                     does heavy work (pyenv init...) every session pays for it, whatever the tool.
#        REPEAT       runs per tool and N (default 3; the table shows the median).
#        PORT         sshd port on each address (default 2222).
#
# Each sshd: its own address 127.0.1.<i>, host key, config, and a VERBOSE log in which we count
# logins ("Accepted publickey") and TCP connections ("Connection from") per host.

set -euo pipefail

sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(10 50)
repeat=${REPEAT:-3}
. "$(dirname "$0")/lib.sh"
bench_init fanout
bench_build_picaops
bench_user_and_key

write_inventory() { # N
  local n=$1 i
  write_picaops_inventory "$n" "$work/inventory" bench
  {
    echo "[bench]"
    for i in $(seq 1 "$n"); do printf '%s ansible_host=127.0.1.%d\n' "$(host_name "$i")" "$i"; done
  } > "$work/ansible-hosts.ini"
}

declare -A result
ssh_common=(-o BatchMode=yes -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$work/known_hosts"
            -o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes -i "$work/id_ed25519" -p "$port"
            -o ControlMaster=no -o ControlPath=none)

bench_tool() { # N name command... ; prints "wall logins/host conns/host", fails loudly on error
  local n=$1 name=$2; shift 2
  local times=() r t0 t1 l0 c0 l1 c1 runs=$repeat
  [ "$name" = ansible ] && runs=1
  l0=$(count "$n" "Accepted publickey"); c0=$(count "$n" "Connection from")
  for r in $(seq 1 "$runs"); do
    t0=$(now)
    if ! "$@" > "$work/$name-$n-$r.out" 2> "$work/$name-$n-$r.err"; then
      echo "!! $name failed at N=$n (see $work/$name-$n-$r.err):" >&2; tail -5 "$work/$name-$n-$r.err" >&2
      return 1
    fi
    t1=$(now)
    times+=("$(echo "$t1 - $t0" | bc -l)")
  done
  l1=$(count "$n" "Accepted publickey"); c1=$(count "$n" "Connection from")
  local logins conns
  logins=$(per_host_delta "$l0" "$l1" "$runs")
  conns=$(per_host_delta "$c0" "$c1" "$runs")
  result[$n,$name]="$(median "${times[@]}") $logins $conns ${times[*]}"
}

ansible_bin="$here/.venv/bin/ansible"
tools=(picaops picaops-pq-kex xargs-ssh xargs-ssh-curve25519)
[ -x "$ansible_bin" ] && tools+=(ansible)

for n in "${sizes[@]}"; do
  echo "== N=$n: starting $n sshd on 127.0.1.1-$n:$port" >&2
  start_sshds "$n"
  write_inventory "$n"
  addrs=$(seq -f "127.0.1.%g" 1 "$n")

  bench_tool "$n" picaops "$picaops" -q -i "$work/inventory" run --forks "$n" -- true
  bench_tool "$n" picaops-pq-kex "$picaops" -q -i "$work/inventory" run --forks "$n" --post-quantum-kex -- true
  bench_tool "$n" xargs-ssh bash -c "printf '%s\n' $(echo $addrs) | xargs -P $n -I{} ssh ${ssh_common[*]} -l $user {} true"
  bench_tool "$n" xargs-ssh-curve25519 bash -c "printf '%s\n' $(echo $addrs) | xargs -P $n -I{} ssh ${ssh_common[*]} -o KexAlgorithms=curve25519-sha256 -l $user {} true"
  if [ -x "$ansible_bin" ]; then
    py=/usr/bin/python3
    ANSIBLE_HOME="$work/ansible-home" ANSIBLE_LOCAL_TEMP="$work/ansible-tmp" \
    ANSIBLE_SSH_CONTROL_PATH_DIR="$work/ansible-cp-$n" ANSIBLE_PYTHON_INTERPRETER=$py \
    ANSIBLE_HOST_KEY_CHECKING=True ANSIBLE_STDOUT_CALLBACK=minimal \
      bench_tool "$n" ansible "$ansible_bin" all -i "$work/ansible-hosts.ini" -f "$n" \
        -u "$user" --private-key "$work/id_ed25519" \
        -e "ansible_port=$port" \
        "--ssh-common-args=-o UserKnownHostsFile=$work/known_hosts -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes" \
        -m command -a true
  fi
  bench_cleanup
done

echo
echo "fan-out of \`true\` as $user on this machine ($(nproc) cores); wall = median of $repeat runs (ansible: 1 run)"
printf '%-5s %-22s %9s %9s %14s %11s  %s\n' N tool wall_s vs_picaops logins/host conns/host runs
for n in "${sizes[@]}"; do
  base=$(echo "${result[$n,picaops]}" | cut -d' ' -f1)
  for tool in "${tools[@]}"; do
    read -r wall logins conns rest <<< "${result[$n,$tool]}"
    printf '%-5s %-22s %9.3f %8.1fx %14s %11s  %s\n' "$n" "$tool" "$wall" \
      "$(echo "$wall / $base" | bc -l)" "$logins" "$conns" "$rest"
  done
done
echo
echo "logs and outputs: $work"
