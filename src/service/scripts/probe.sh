# picaops service probe: what is deployed on this machine, in one round trip, read-only.
# Arguments: the projects directory, then the names of the projects to read.
# Output, one fact per line:
#   compose plugin|standalone|none     docker yes|no
#   deployed NAME                      a project directory holding compose.yaml
#   file NAME PATH SHA256 b64:CONTENT  a public file (CONTENT in base64); `-` instead for secrets
#   secret NAME KEY SHA256             sha256 of one `KEY='value'` line of secrets.env
#   ctr PROJECT<TAB>SERVICE<TAB>ID<TAB>STATE<TAB>IMAGE<TAB>STATUS   every Compose container
# Runs no Compose command (the plugin and binary are only looked for) and never prints a secret.
set -u
root=$1; shift
compose=none
for p in /usr/libexec/docker/cli-plugins /usr/lib/docker/cli-plugins \
         /usr/local/libexec/docker/cli-plugins /usr/local/lib/docker/cli-plugins "${HOME:-/root}/.docker/cli-plugins"; do
  if [ -x "$p/docker-compose" ]; then compose=plugin; break; fi
done
if [ $compose = none ] && command -v docker-compose >/dev/null 2>&1; then compose=standalone; fi
echo "compose $compose"
if command -v docker >/dev/null 2>&1; then echo "docker yes"; else echo "docker no"; fi
if [ -d "$root" ]; then
  for d in "$root"/*/; do
    [ -f "${d}compose.yaml" ] || continue
    d=${d%/}
    echo "deployed ${d##*/}"
  done
fi
sum() { sha256sum < "$1" | cut -c1-64; }
for name in "$@"; do
  d=$root/$name
  [ -d "$d" ] || continue
  for f in compose.yaml service.env; do
    [ -f "$d/$f" ] && echo "file $name $f $(sum "$d/$f") b64:$(base64 -w0 < "$d/$f")"
  done
  if [ -f "$d/secrets.env" ]; then
    echo "file $name secrets.env $(sum "$d/secrets.env") -"
    while IFS= read -r line || [ -n "$line" ]; do
      # printf is a shell builtin: the value never appears in a process's arguments.
      echo "secret $name ${line%%=*} $(printf '%s' "$line" | sha256sum | cut -c1-64)"
    done < "$d/secrets.env"
  fi
  if [ -d "$d/secrets" ]; then
    for f in "$d"/secrets/*; do
      [ -f "$f" ] && echo "file $name secrets/${f##*/} $(sum "$f") -"
    done
  fi
done
if command -v docker >/dev/null 2>&1; then
  if out=$(docker ps -a --no-trunc --filter label=com.docker.compose.project \
      --format '{{.Label "com.docker.compose.project"}}	{{.Label "com.docker.compose.service"}}	{{.ID}}	{{.State}}	{{.Image}}	{{.Status}}' 2>&1); then
    printf '%s\n' "$out" | while IFS= read -r l; do [ -n "$l" ] && printf 'ctr %s\n' "$l"; done
  else
    printf 'dockererr %s\n' "$(printf '%s' "$out" | head -n 1)"
  fi
fi
exit 0
