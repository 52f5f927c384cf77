# Shared shell functions for the benchmarks in bench/ (sourced, not run). Not a test; CI never runs
# any of this.
#
# A "lab" here is N sshd processes on loopback addresses 127.0.1.1..N, port $port, each with its own
# host key, config and log, all accepting one client key for one login user. Hosts are named
# h01, h02... (host_name i).
#
# Callers set nothing beforehand; bench_init sets:
#   here repo   bench/ and the repository root
#   user        login user (BENCH_USER, default picaops-bench; created if absent, shell /bin/sh)
#   port        sshd port on each address (PORT, default 2222)
#   work        bench/out/<name>-<timestamp>: keys, sshd configs and logs, inventories, outputs
#   pids        the sshd pids; bench_cleanup (trapped on EXIT INT TERM) kills them

bench_init() { # NAME
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  repo=$(dirname "$here")
  user=${BENCH_USER:-picaops-bench}
  port=${PORT:-2222}
  work="$here/out/$1-$(date +%Y%m%d-%H%M%S)"
  pids=()
  [ "$(id -u)" = 0 ] || { echo "run me as root (I start sshd processes and may create $user)" >&2; exit 2; }
  mkdir -p "$work"
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_cleanup() { # kill the sshds we started (and only those)
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}

bench_build_picaops() { # sets $picaops; PICAOPS=/path/to/binary skips the build
  if [ -n "${PICAOPS:-}" ]; then picaops=$PICAOPS; return; fi
  echo "building picaops (release)..." >&2
  (cd "$repo" && cargo build --release --quiet)
  picaops="$repo/target/release/picaops"
}

bench_user_and_key() { # login user (created if absent) and the client key $work/id_ed25519
  if ! id "$user" >/dev/null 2>&1; then
    useradd -m -s /bin/sh "$user"
  fi
  usermod -p '*' "$user" 2>/dev/null || true   # a locked ('!') account may not log in at all
  ssh-keygen -q -t ed25519 -N '' -C picaops-bench -f "$work/id_ed25519"
  mkdir -p /run/sshd
}

host_name() { printf 'h%02d' "$1"; }

start_sshds() { # N [LOGLEVEL, default VERBOSE]; writes $work/known_hosts for 127.0.1.1..N
  local n=$1 level=${2:-VERBOSE} i dir
  : > "$work/known_hosts"
  for i in $(seq 1 "$n"); do
    dir="$work/sshd/h$i"; mkdir -p "$dir"; chmod 755 "$work" "$work/sshd" "$dir"
    [ -f "$dir/host_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key"
    cp "$work/id_ed25519.pub" "$dir/authorized_keys"; chmod 644 "$dir/authorized_keys"
    cat > "$dir/sshd_config" <<EOF
ListenAddress 127.0.1.$i:$port
HostKey $dir/host_key
PidFile none
AuthorizedKeysFile $dir/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
MaxStartups 200
MaxSessions 100
Subsystem sftp internal-sftp
LogLevel $level
EOF
    : > "$dir/sshd.log"
    /usr/sbin/sshd -D -f "$dir/sshd_config" -E "$dir/sshd.log" &
    pids+=($!)
    echo "[127.0.1.$i]:$port $(cut -d' ' -f1,2 "$dir/host_key.pub")" >> "$work/known_hosts"
  done
  local first=$((${#pids[@]} - n))
  for i in $(seq 1 "$n"); do
    until grep -q "Server listening" "$work/sshd/h$i/sshd.log" 2>/dev/null; do
      if ! kill -0 "${pids[first + i - 1]}" 2>/dev/null; then   # e.g. the address is taken
        echo "sshd for 127.0.1.$i:$port died:" >&2; cat "$work/sshd/h$i/sshd.log" >&2; exit 1
      fi
      sleep 0.02
    done
  done
}

host_key_of() { cut -d' ' -f1,2 "$work/sshd/h$1/host_key.pub"; } # I

write_picaops_inventory() { # N DIR SITE [SITE2]: hosts h01..hN; with SITE2, the second half is there
  local n=$1 inv=$2 a=$3 b=${4:-} i site
  mkdir -p "$inv"
  if [ -n "$b" ]; then
    cat > "$inv/sites.yml" <<EOF
sites:
  $a: { description: loopback sshd processes (first half), backs_up_to: $b }
  $b: { description: loopback sshd processes (second half), backs_up_to: $a }
EOF
  else
    cat > "$inv/sites.yml" <<EOF
sites:
  $a: { description: loopback sshd processes, backs_up_to: other }
  other: { description: unused, backs_up_to: $a }
EOF
  fi
  {
    echo "hosts:"
    for i in $(seq 1 "$n"); do
      site=$a; [ -n "$b" ] && [ "$i" -gt $((n / 2)) ] && site=$b
      echo "  $(host_name "$i"):"
      echo "    site: $site"
      echo "    address: 127.0.1.$i"
      echo "    port: $port"
      echo "    user: $user"
      echo "    identity_file: $work/id_ed25519"
      echo "    host_key: $(host_key_of "$i")"
      # Every loopback "host" is this one machine: give each its own picaops run lock.
      echo "    vars: { picaops_lock_dir: /tmp/picaops-bench-locks/$(host_name "$i") }"
    done
  } > "$inv/hosts.yml"
}

count() { # N pattern -> space-separated per-host counts of matching sshd log lines
  local n=$1 pat=$2 i out=""
  for i in $(seq 1 "$n"); do out+="$(grep -c "$pat" "$work/sshd/h$i/sshd.log" || true) "; done
  echo "$out"
}

per_host_delta() { # "before counts" "after counts" [divisor] -> "k" or "min-max" per host
  python3 -c "import sys; b=list(map(int,sys.argv[1].split())); a=list(map(int,sys.argv[2].split())); d=[(y-x)/float(sys.argv[3]) for x,y in zip(b,a)]; print(f'{min(d):g}' if min(d)==max(d) else f'{min(d):g}-{max(d):g}')" "$1" "$2" "${3:-1}"
}

now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
