#!/bin/bash
# picaops lab web app's Compose healthcheck: exits 0 when GET /health on $PORT answers 200.
# bash and its /dev/tcp, not a Python interpreter: Docker runs this in every web container at
# every healthcheck interval, and an idle lab must stay quiet (a Python start costs about ten times
# the CPU of this whole script).
exec 3<>"/dev/tcp/127.0.0.1/${PORT:-8080}" || exit 1
printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
IFS= read -r -t 3 status <&3 || exit 1
# Read the rest before closing: a connection closed under the server's reply makes it log a
# ConnectionResetError traceback, which would crowd the last log lines picaops shows.
while IFS= read -r -t 3 _ <&3; do :; done
case $status in
  "HTTP/"*" 200 "*) exit 0 ;;
esac
exit 1
