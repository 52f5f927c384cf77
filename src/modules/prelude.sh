# picaops converge prelude: shell functions used by the probe (read) and apply (write) scripts.
# POSIX sh + coreutils only. Every record printed is one line: STEP<TAB>KEY<TAB>FIELDS...
# Free text (paths, file contents, command output) is always base64 (-w0) so it fits on a line.

P_TAB='	'

# pst STEP PATH MODE [SHA]: stat of PATH. MODE: - (stat only), h (sha256), c (sha256, and the
# content when it differs from SHA and is at most 256 KiB), a (sha256 and content, at most 4 MiB).
# Written to fork as little as possible: it runs for every file of every host.
pst() {
  if [ -L "$2" ]; then k=link
  elif [ -d "$2" ]; then k=directory
  elif [ -f "$2" ]; then k=file
  elif [ -e "$2" ]; then k=other
  else printf '%s\tabsent\n' "$1"; p_stale "$1" "$2"; return 0
  fi
  p_st=$(stat -c '%a	%u	%U	%g	%G	%s' -- "$2")
  printf '%s\tstat\t%s\t%s\n' "$1" "$k" "$p_st"
  case $k in
    link) printf '%s\tlink\t%s\n' "$1" "$(readlink -- "$2" | base64 -w0)" ;;
    file)
      case $3 in
        h|c|a)
          p_h=$(sha256sum < "$2")
          p_h=${p_h%% *}
          printf '%s\tsha\t%s\n' "$1" "$p_h"
          p_s=${p_st##*	}
          if { [ "$3" = a ] && [ "$p_s" -le 4194304 ]; } ||
             { [ "$3" = c ] && [ "$p_h" != "$4" ] && [ "$p_s" -le 262144 ]; }; then
            printf '%s\tcontent\t' "$1"; base64 -w0 < "$2"; echo
          fi ;;
      esac ;;
  esac
  p_stale "$1" "$2"
}

# Temporary files an interrupted apply may have left beside PATH (no fork: a glob).
p_stale() {
  for p_f in "${2%/*}/.${2##*/}.picaops-"??????; do
    [ -e "$p_f" ] && printf '%s\tstale\t%s\n' "$1" "$(printf %s "$p_f" | base64 -w0)"
  done
  return 0
}

# punit STEP NAME: enabled state and active state of a systemd unit.
punit() {
  printf '%s\tunit\t%s\t%s\n' "$1" "$(systemctl is-enabled -- "$2" 2>/dev/null | head -n1)" \
    "$(systemctl is-active -- "$2" 2>/dev/null | head -n1)"
}

# pusr STEP NAME: passwd entry, primary group name and groups of a user.
pusr() {
  if p_e=$(getent passwd -- "$2"); then
    printf '%s\tpasswd\t%s\t%s\t%s\n' "$1" "$(printf %s "$p_e" | base64 -w0)" \
      "$(id -gn -- "$2" 2>/dev/null)" "$(id -Gn -- "$2" 2>/dev/null)"
  else printf '%s\tpasswd\n' "$1"
  fi
}

# pgrp STEP NAME: group entry.
pgrp() {
  if p_e=$(getent group -- "$2"); then
    printf '%s\tgroup\t%s\n' "$1" "$(printf %s "$p_e" | base64 -w0)"
  else printf '%s\tgroup\n' "$1"
  fi
}

# ppkg NAME...: installed state and version of packages (dpkg).
ppkg() {
  dpkg-query -W -f '${Package}\t${Status}\t${Version}\n' -- "$@" 2>/dev/null | sed 's/^/pkg\t/'
  return 0
}

# pcand NAME...: the version apt would install.
pcand() {
  for p_n in "$@"; do
    printf 'cand\t%s\t%s\n' "$p_n" "$(apt-cache policy -- "$p_n" 2>/dev/null | sed -n 's/^ *Candidate: //p' | head -n1)"
  done
}

# pguard STEP CREATES REMOVES UNLESS: would a command run? (UNLESS runs here: keep it read-only.)
pguard() {
  if [ -n "$2" ] && [ -e "$2" ]; then printf '%s\tguard\tcreates\n' "$1"; return 0; fi
  if [ -n "$3" ] && [ ! -e "$3" ]; then printf '%s\tguard\tremoves\n' "$1"; return 0; fi
  if [ -n "$4" ] && (eval "$4") </dev/null >/dev/null 2>&1; then printf '%s\tguard\tunless\n' "$1"; return 0; fi
  printf '%s\tguard\trun\n' "$1"
}

# The run lock: a directory in /run (gone at reboot) holding who took it. A holder whose process
# (or boot) is gone is stale and taken over.
# p_lock_init [DIR]: where the lock lives. Root: /run/picaops; another user: its runtime directory.
p_lock_init() {
  if [ -n "$1" ]; then P_LOCKDIR=$1
  elif [ "$(id -u)" = 0 ]; then P_LOCKDIR=/run/picaops
  else P_LOCKDIR=${XDG_RUNTIME_DIR:-/tmp}/picaops-$(id -u)
  fi
  P_LOCK=$P_LOCKDIR/apply.lock
}
p_lock_info() { cat -- "$P_LOCK/info" 2>/dev/null | base64 -w0; }
p_lock_live() {
  [ -d "$P_LOCK" ] || return 1
  if [ ! -f "$P_LOCK/info" ]; then
    # Being written right now, or its writer died: stale after 10 s.
    [ "$(( $(date +%s) - $(stat -c %Y -- "$P_LOCK") ))" -lt 10 ]
    return
  fi
  p_pid=$(sed -n 's/^remote_pid=//p' "$P_LOCK/info")
  p_boot=$(sed -n 's/^boot=//p' "$P_LOCK/info")
  [ "$p_boot" = "$(cat /proc/sys/kernel/random/boot_id)" ] && [ -n "$p_pid" ] && kill -0 "$p_pid" 2>/dev/null
}
# p_lock_wait SECONDS: wait until nobody holds the lock (stale holders do not count).
p_lock_wait() {
  p_end=$(( $(date +%s) + $1 ))
  while p_lock_live; do
    if [ "$(date +%s)" -ge "$p_end" ]; then echo "@@locked $(p_lock_info)"; return 1; fi
    sleep 0.2
  done
  return 0
}
# p_lock_take INFO SECONDS: take the lock (waiting up to SECONDS for a live holder).
p_lock_take() {
  if ! { mkdir -p -- "$P_LOCKDIR" && chmod 700 -- "$P_LOCKDIR"; }; then
    echo "picaops: cannot create the lock directory $P_LOCKDIR" >&2; echo "@@lockdir"; return 1
  fi
  p_end=$(( $(date +%s) + $2 ))
  while ! mkdir -- "$P_LOCK" 2>/dev/null; do
    if ! p_lock_live; then
      echo "@@stale $(p_lock_info)"
      rm -rf -- "$P_LOCK"
      continue
    fi
    if [ "$(date +%s)" -ge "$p_end" ]; then echo "@@locked $(p_lock_info)"; return 1; fi
    sleep 0.2
  done
  printf '%s\nremote_pid=%s\nboot=%s\n' "$1" "$$" "$(cat /proc/sys/kernel/random/boot_id)" > "$P_LOCK/info.tmp" &&
    mv -f -- "$P_LOCK/info.tmp" "$P_LOCK/info"
  P_LOCKED=1
}

# put PATH MODE OWNER GROUP SHA256 < base64: atomic write (temp file beside PATH, checked, synced, renamed).
put() {
  p_t=$(mktemp -- "$(dirname -- "$1")/.$(basename -- "$1").picaops-XXXXXX") || return 1
  echo "$p_t" >> "$P_WORK/tmps"
  if ! base64 -d > "$p_t"; then rm -f -- "$p_t"; echo "picaops: could not decode the content for $1" >&2; return 1; fi
  if [ "$(sha256sum < "$p_t" | cut -c1-64)" != "$5" ]; then
    rm -f -- "$p_t"; echo "picaops: the content received for $1 is not what was sent (sha256); $1 was not touched" >&2; return 1
  fi
  { [ -z "$3" ] || chown -- "$3" "$p_t"; } && { [ -z "$4" ] || chgrp -- "$4" "$p_t"; } &&
    chmod -- "$2" "$p_t" && sync -- "$p_t" && mv -f -- "$p_t" "$1" || { rm -f -- "$p_t"; return 1; }
}

# attrs PATH MODE OWNER GROUP: set what is given (empty = leave).
attrs() {
  { [ -z "$3" ] || chown -h -- "$3" "$1"; } && { [ -z "$4" ] || chgrp -h -- "$4" "$1"; } &&
    { [ -z "$2" ] || chmod -- "$2" "$1"; }
}

# link PATH TARGET: atomic symlink replacement.
link() {
  p_t="$(dirname -- "$1")/.$(basename -- "$1").picaops-$$"
  ln -sfn -- "$2" "$p_t" && mv -Tf -- "$p_t" "$1"
}

# step N KIND: runs the rest of the line (a function call) with output captured; reports @@ok/@@fail.
# KIND r: report the output (registered command). KIND t: an attempt of a command with `until`:
# report the output and `@@tried N STATUS`, and succeed whatever the status (picaops checks until).
# Always continues to the next line; the caller stops.
p_out() { printf '@@%s %s ' "$2" "$1"; base64 -w0 < "$3"; echo; }
step() {
  p_n=$1; p_k=$2; shift 2
  ( "$@" ) > "$P_WORK/out" 2> "$P_WORK/err"
  p_rc=$?
  if [ "$p_k" != - ] || [ $p_rc -ne 0 ]; then
    p_out "$p_n" out "$P_WORK/out"; p_out "$p_n" err "$P_WORK/err"
  fi
  if [ "$p_k" = t ]; then echo "@@tried $p_n $p_rc"; return 0; fi
  if [ $p_rc -eq 0 ]; then echo "@@ok $p_n"; else echo "@@fail $p_n $p_rc"; fi
  return $p_rc
}

p_cleanup() {
  if [ -f "$P_WORK/tmps" ]; then
    while IFS= read -r p_f; do rm -f -- "$p_f"; done < "$P_WORK/tmps"
  fi
  rm -rf -- "$P_WORK"
  [ -z "${P_LOCKED:-}" ] || rm -rf -- "$P_LOCK"
}

# run_argv CHDIR PROG ARG...: a command without a shell. run_shell CHDIR SCRIPT: a shell command line.
run_argv() {
  if [ -n "$1" ]; then cd -- "$1" || return 1; fi
  shift
  "$@" </dev/null
}
run_shell() {
  if [ -n "$1" ]; then cd -- "$1" || return 1; fi
  eval "$2" </dev/null
}
