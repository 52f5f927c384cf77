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

# Wall time swings with the machine's neighbours (a shared VM's CPU pressure), so each run also
# reports its CPU time (user + system of the tool and its children), the steadier measure.
# One run -> "WALL CPU" in seconds, from bash's own `time`.
timed() {
  local TIMEFORMAT='%R %U %S' t
  t=$( { time "$@" > /dev/null; } 2>&1 ) || { echo "bench: failed: $*" >&2; exit 1; }
  awk '{ printf "%.3f %.3f", $1, $2 + $3 }' <<< "$t"
}

run_restic() { # REPO CACHE
  timed "$restic" -r "$1" --password-file "$work/password" --cache-dir "$2" --json --quiet \
    backup --host bench --tag bench "$data"
}

run_picaops() { # JOBFILE
  timed "$picaops" --quiet --output json backup host-run --job-file "$1"
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
  echo "repetition $rep (wall s, CPU s): restic ${r_first[-1]} / ${r_second[-1]}, picaops ${p_first[-1]} / ${p_second[-1]} (second run added $added bytes)"
  rm -rf "$r/repo-restic" "$r/repo-picaops" "$r/cache-restic" "$r/cache-picaops"
done

# field N "WALL CPU"... -> field 1 (wall) or 2 (CPU) of each, for lib.sh's median
field() { local f=$1; shift; printf '%s\n' "$@" | awk -v f="$f" '{print $f}'; }
# overhead FIELD RESTIC... PICAOPS... -> the median of the repetitions' own picaops/restic ratios, in %:
# both tools of one repetition ran back to back, so a slow moment of the machine mostly cancels.
overhead() { local f=$1; shift; local ratios=() k
  for k in $(seq 1 "$repeat"); do
    ratios+=("$(awk -v r="${*:$k:1}" -v p="${*:$((k + repeat)):1}" -v f="$f" \
      'BEGIN { split(r, a, " "); split(p, b, " "); printf "%.4f", (b[f] - a[f]) * 100 / a[f] }')")
  done
  median "${ratios[@]}"; }
cols() { # LABEL RESTIC... PICAOPS...
  local label=$1; shift
  printf '| %s | %.2f s | %.2f s | %+.1f%% | %.2f s | %.2f s | %+.1f%% |\n' "$label" \
    "$(median $(field 1 "${@:1:$repeat}"))" "$(median $(field 1 "${@:$((repeat + 1))}"))" "$(overhead 1 "$@")" \
    "$(median $(field 2 "${@:1:$repeat}"))" "$(median $(field 2 "${@:$((repeat + 1))}"))" "$(overhead 2 "$@")"; }
echo
echo "medians of $repeat ($size_mib MiB, $files files; overhead: median of each repetition's own ratio):"
echo "| run | restic wall | picaops wall | overhead | restic CPU | picaops CPU | overhead |"
echo "|---|---|---|---|---|---|---|"
cols "first" "${r_first[@]}" "${p_first[@]}"
cols "after changing 1%" "${r_second[@]}" "${p_second[@]}"
rm -rf "$data"
