# picaops service apply: bring one Compose project to the files staged in .picaops/next/ (or, with
# switch=no, just start it), wait until it is healthy, and on failure put the previous files back
# and bring the previous version up again. Data directories are created, never deleted.
# Arguments: NAME DIR SWITCH TIMEOUT URL(or -) COMPOSE(plugin|standalone) DATA_DIR...
# SWITCH: yes (new files staged), no (start what is there), restart (`compose restart`).
# Output lines: `compose VERSION`, `step TEXT`, `out TEXT` (Compose's output), `log TEXT` (the
# containers' last log lines on failure), `why TEXT`, and last `result ok|rolled-back|
# rollback-failed|removed|unsupported|locked`.
set -u
name=$1 dir=$2 switch=$3 timeout=$4 url=$5 kind=$6
shift 6
mkdir -p /run/picaops
exec 9>"/run/picaops/service-$name.lock"
if ! flock -w 300 9; then echo "why another picaops run holds /run/picaops/service-$name.lock"; echo "result locked"; exit 75; fi
if [ "$kind" = plugin ]; then
  compose() { docker compose "$@"; }
else
  compose() { docker-compose "$@"; }
fi
v=$(compose version --short 2>/dev/null | tr -d 'v\r')
case "$v" in
  [2-9].*|[1-9][0-9]*.*) echo "compose $v" ;;
  *) echo "why Compose ${v:-not found} on this machine: picaops needs Compose v2 (the docker compose plugin or docker-compose 2.x)"; echo "result unsupported"; exit 3 ;;
esac
cd "$dir" || { echo "why cannot enter $dir"; echo "result unsupported"; exit 4; }
umask 077
for p in "$@"; do mkdir -p -- "$p" || { echo "why cannot create data directory $p"; echo "result unsupported"; exit 4; }; done
tmp=$(mktemp) || exit 5
trap 'rm -f "$tmp"' EXIT
why=
up() {
  if [ "$switch" = restart ]; then
    compose -p "$name" -f compose.yaml restart >"$tmp" 2>&1
  else
    compose -p "$name" -f compose.yaml up -d --remove-orphans >"$tmp" 2>&1
  fi
  rc=$?
  tail -n 20 "$tmp" | sed 's/^/out /'
  [ $rc = 0 ] || why="Compose ($([ "$switch" = restart ] && echo restart || echo up)) failed with exit code $rc"
  return $rc
}
probe_url() {
  if command -v curl >/dev/null 2>&1; then curl -fsS -o /dev/null -m 5 "$url" >/dev/null 2>&1
  else wget -q -O /dev/null -T 5 "$url" >/dev/null 2>&1; fi
}
# 0 healthy, 1 not yet, 2 failed for good.
healthy() {
  ids=$(docker ps -aq --filter "label=com.docker.compose.project=$name")
  [ -n "$ids" ] || { why="no container"; return 1; }
  for id in $ids; do
    s=$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.Name}}' "$id" 2>/dev/null) || return 1
    set -- $s
    c=${4#/}
    case "$1 $3" in
      "running healthy"|"running none") ;;
      "running starting") why="container $c is still starting"; return 1 ;;
      "running unhealthy") why="container $c is unhealthy (its healthcheck fails)"; return 2 ;;
      "exited "*) [ "$2" = 0 ] || { why="container $c exited with code $2"; return 2; } ;;
      *) why="container $c is $1"; return 1 ;;
    esac
  done
  if [ "$url" != - ] && ! probe_url; then why="$url does not answer with a 2xx status"; return 1; fi
  return 0
}
wait_healthy() {
  end=$(( $(date +%s) + timeout ))
  while :; do
    healthy; r=$?
    [ $r = 0 ] && return 0
    [ $r = 2 ] && return 1
    if [ "$(date +%s)" -ge $end ]; then why="not healthy after ${timeout}s: $why"; return 1; fi
    sleep 1
  done
}
put_files() { # FROM: copy a full set of project files over the current ones
  for f in compose.yaml service.env secrets.env; do
    if [ -f "$1/$f" ]; then cp -p "$1/$f" ".$f.picaops-new" && mv -f ".$f.picaops-new" "$f"; else rm -f "$f"; fi
  done
  rm -rf secrets; mkdir -p secrets
  if [ -d "$1/secrets" ]; then cp -p "$1"/secrets/* secrets/ 2>/dev/null || true; fi
}
had_previous=no
if [ "$switch" = yes ]; then
  if [ -f compose.yaml ]; then
    rm -rf .picaops/previous && mkdir -p .picaops/previous/secrets
    for f in compose.yaml service.env secrets.env; do [ -f "$f" ] && cp -p "$f" .picaops/previous/; done
    [ -d secrets ] && { cp -p secrets/* .picaops/previous/secrets/ 2>/dev/null || true; }
    had_previous=yes
  fi
  put_files .picaops/next
  rm -rf .picaops/next
  echo "step files in place"
fi
if up && wait_healthy; then echo "result ok"; exit 0; fi
echo "why $why"
compose -p "$name" -f compose.yaml logs --no-color --tail 20 >"$tmp" 2>&1
tail -n 40 "$tmp" | sed 's/^/log /'
if [ "$had_previous" = yes ]; then
  echo "step putting the previous files back"
  put_files .picaops/previous
  why=
  if up && wait_healthy; then echo "result rolled-back"; exit 1; fi
  echo "why previous version: $why"
  echo "result rollback-failed"; exit 1
fi
if [ "$switch" = yes ]; then
  # A first deployment that never became healthy is taken down (volumes and data stay).
  compose -p "$name" -f compose.yaml down --remove-orphans >"$tmp" 2>&1
  rm -f compose.yaml service.env secrets.env; rm -rf secrets
  echo "result removed"; exit 1
fi
echo "result failed"; exit 1
