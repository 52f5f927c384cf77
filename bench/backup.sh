#!/usr/bin/env bash
# Backup benchmark: picaops's overhead over plain restic on the same data. Both back up the same
# directory (default 1 GiB of random files) to their own local repository, first run then a run
# after changing 1% of the files; picaops through its host-side runner (`picaops backup host-run`,
# what the systemd timer starts: stale-lock check, sha256 manifest, restic with --json, status and
# metrics files), restic by hand with the same repository options. Prints wall times and the
# overhead. Not a test; CI never runs it. Needs root (job files must be root-owned) and restic.
#
# Usage: bench/backup.sh
# Env:   SIZE_MIB   data size in MiB (default 1024), spread over files of FILE_KIB (default 512)
#        REPEAT     repetitions of the whole comparison, medians shown (default 3)
#        PICAOPS    picaops binary instead of building target/release/picaops
#        RESTIC     restic binary (default: restic on PATH; 0.17 or later)

set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init backup
bench_build_picaops
restic=${RESTIC:-$(command -v restic)}
size_mib=${SIZE_MIB:-1024}
file_kib=${FILE_KIB:-512}
repeat=${REPEAT:-3}
files=$(( size_mib * 1024 / file_kib ))
changed=$(( files / 100 ))
echo "restic: $("$restic" version | head -1)"
echo "data: $files files of $file_kib KiB ($size_mib MiB); $changed files changed before the second run"

data="$work/data"
mkdir -p "$data"
for i in $(seq 1 "$files"); do head -c "$((file_kib * 1024))" /dev/urandom > "$data/f$i"; done
printf 'picaops-bench-password\n' > "$work/password"; chmod 600 "$work/password"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

run_restic() { # REPO CACHE -> seconds of one backup
  local t0; t0=$(now)
  "$restic" -r "$1" --password-file "$work/password" --cache-dir "$2" --json --quiet \
    backup --host bench --tag bench "$data" > /dev/null
  elapsed "$t0" "$(now)"
}

run_picaops() { # JOBFILE -> seconds of one host-run
  local t0; t0=$(now)
  "$picaops" --quiet --output json backup host-run --job-file "$1" > /dev/null
  elapsed "$t0" "$(now)"
}

declare -a r_first r_second p_first p_second
for rep in $(seq 1 "$repeat"); do
  r="$work/rep$rep"; mkdir -p "$r"
  "$restic" -r "$r/repo-restic" --password-file "$work/password" init --quiet > /dev/null
  cat > "$r/job.json" <<JOB
{
  "version": 1, "job": "bench", "host": "bench",
  "repository": { "kind": "local", "path": "$r/repo-picaops" },
  "password_file": "$work/password",
  "paths": ["$data"],
  "retention": { "keep_daily": 7 },
  "max_age_seconds": 93600,
  "state_dir": "$r/state", "lock_dir": "$r/locks", "metrics_dir": "$r/metrics",
  "cache_dir": "$r/cache-picaops", "restic": "$restic"
}
JOB
  chmod 600 "$r/job.json"
  "$picaops" --quiet backup host-init --job-file "$r/job.json" > /dev/null
  # Alternate which tool goes first, so neither always gets the warmer page cache.
  if [ $((rep % 2)) = 1 ]; then
    r_first+=("$(run_restic "$r/repo-restic" "$r/cache-restic")")
    p_first+=("$(run_picaops "$r/job.json")")
  else
    p_first+=("$(run_picaops "$r/job.json")")
    r_first+=("$(run_restic "$r/repo-restic" "$r/cache-restic")")
  fi
  for i in $(seq 1 "$changed"); do head -c "$((file_kib * 1024))" /dev/urandom > "$data/f$i"; done
  if [ $((rep % 2)) = 1 ]; then
    r_second+=("$(run_restic "$r/repo-restic" "$r/cache-restic")")
    p_second+=("$(run_picaops "$r/job.json")")
  else
    p_second+=("$(run_picaops "$r/job.json")")
    r_second+=("$(run_restic "$r/repo-restic" "$r/cache-restic")")
  fi
  added=$(python3 -c "import json;print(json.load(open('$r/state/status/bench.json'))['last_success']['bytes_added'])")
  echo "repetition $rep: restic ${r_first[-1]} s / ${r_second[-1]} s, picaops ${p_first[-1]} s / ${p_second[-1]} s (second run added $added bytes)"
  rm -rf "$r/repo-restic" "$r/repo-picaops" "$r/cache-restic" "$r/cache-picaops"
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
row() { # LABEL RESTIC PICAOPS
  awk -v l="$1" -v r="$2" -v p="$3" 'BEGIN { printf "| %s | %.2f s | %.2f s | %+.1f%% |\n", l, r, p, (p - r) * 100 / r }'
}
echo
echo "medians of $repeat ($size_mib MiB, $files files):"
echo "| run | restic by hand | picaops host-run | picaops overhead |"
echo "|---|---|---|---|"
row "first" "$(median "${r_first[@]}")" "$(median "${p_first[@]}")"
row "after changing 1%" "$(median "${r_second[@]}")" "$(median "${p_second[@]}")"
rm -rf "$data"
