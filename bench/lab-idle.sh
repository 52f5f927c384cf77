#!/usr/bin/env bash
# What the running lab costs while nobody uses it: the CPU time of every lab container over a
# window, as a percentage of ONE core. Not a test (the machine is shared, the number is noisy);
# run it by hand, e.g. after `.ci/demo` or after the test suite, when nothing else uses the lab.
#
#   bench/lab-idle.sh [SECONDS]     (default 20)
#
# It reads the kernel's own accounting: cgroup v1 `cpuacct.usage` (or cgroup v2 `cpu.stat`
# usage_usec) of each `picaops-lab-*` container, which counts everything inside it, including
# what the hosts' inner Docker engines run (healthcheck processes, runc, the service containers)
# and the hypervisors' QEMU guests, even processes that start and end within the window (a /proc
# sample at both ends would miss those). The workstation's own dockerd/containerd are not counted:
# an idle lab asks nothing of them.
#
# Output: one line per container ("NAME PCT% of one core"), then "total PCT% of one core over Ns",
# and with LAB_IDLE_DETAIL=1 the processes inside the containers that used CPU in the window.
set -euo pipefail
window=${1:-20}
case $window in '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac

mapfile -t names < <(docker ps --filter name=picaops-lab- --format '{{.Names}}' | sort)
[ "${#names[@]}" -gt 0 ] || { echo "no running picaops-lab-* container: is the lab up (picaops lab up)?" >&2; exit 1; }

# usage_ns NAME: nanoseconds of CPU the container's cgroup has used since it started.
usage_ns() {
  local id v1 v2
  id=$(docker inspect -f '{{.Id}}' "$1")
  for v1 in /sys/fs/cgroup/cpuacct/docker/"$id" /sys/fs/cgroup/cpu,cpuacct/docker/"$id" \
            /sys/fs/cgroup/cpuacct/system.slice/docker-"$id".scope; do
    [ -r "$v1/cpuacct.usage" ] && { cat "$v1/cpuacct.usage"; return; }
  done
  for v2 in /sys/fs/cgroup/system.slice/docker-"$id".scope /sys/fs/cgroup/docker/"$id"; do
    [ -r "$v2/cpu.stat" ] && { echo $(( $(sed -n 's/^usage_usec //p' "$v2/cpu.stat") * 1000 )); return; }
  done
  echo "cannot find the cgroup of $1 (id $id) under /sys/fs/cgroup" >&2
  exit 1
}

# ticks: utime+stime of every process of the machine, by "pid comm" (for the detail listing).
ticks() {
  local f
  for f in /proc/[0-9]*/stat; do
    # comm may hold spaces: fields after the last ')' are fixed.
    awk '{ c=$0; sub(/^[0-9]+ \(/, "", c); sub(/\) .*$/, "", c); split(substr($0, index($0, ") ") + 2), a, " ");
           print $1, c, a[12] + a[13] }' "$f" 2>/dev/null || true
  done
}

declare -A before
for n in "${names[@]}"; do before[$n]=$(usage_ns "$n"); done
[ "${LAB_IDLE_DETAIL:-}" = 1 ] && ticks > /tmp/lab-idle.$$.before
start=$(date +%s%N)
sleep "$window"
end=$(date +%s%N)
[ "${LAB_IDLE_DETAIL:-}" = 1 ] && ticks > /tmp/lab-idle.$$.after
elapsed=$(( end - start ))

total=0
for n in "${names[@]}"; do
  used=$(( $(usage_ns "$n") - before[$n] ))
  total=$(( total + used ))
  awk -v n="$n" -v u="$used" -v e="$elapsed" 'BEGIN { printf "%-22s %6.2f%% of one core\n", n, 100 * u / e }'
done
awk -v u="$total" -v e="$elapsed" 'BEGIN { printf "total                  %6.2f%% of one core over %.1fs\n", 100 * u / e, e / 1e9 }'

if [ "${LAB_IDLE_DETAIL:-}" = 1 ]; then
  hz=$(getconf CLK_TCK)
  echo "processes alive at both ends that used CPU (% of one core):"
  join <(sort /tmp/lab-idle.$$.before | awk '{print $1"|"$2, $NF}' | sort) \
       <(sort /tmp/lab-idle.$$.after | awk '{print $1"|"$2, $NF}' | sort) |
    awk -v hz="$hz" -v e="$elapsed" '$3 > $2 { printf "  %6.2f%% %s\n", 100 * ($3 - $2) / hz / (e / 1e9), $1 }' |
    sort -rn | head -15
  rm -f /tmp/lab-idle.$$.before /tmp/lab-idle.$$.after
fi
