#!/usr/bin/python3
"""picaops lab web app: answers on $PORT.

GET /        "VERSION GREETING" (APP_VERSION, GREETING from the environment)
GET /health  200 "ok", or 500 when APP_HEALTHY=no (the broken version)
GET /config  JSON: version, greeting, and the sha256 (never the value) of every environment
             variable whose name ends in _TOKEN or _PASSWORD and of every file in /run/secrets,
             so tests can prove a secret arrived without it being shown.
`picaops-lab-web --probe` exits 0 when /health answers 200 (the Compose healthcheck is the
cheaper `picaops-lab-probe`, app-web-probe.sh).

At start it prints the secrets it was given (every *_TOKEN / *_PASSWORD variable and every file
in /run/secrets), as a careless application would: so the lab's container logs hold secret values,
and the services tests can prove that picaops redacts them from every log it shows.
"""
import hashlib
import http.server
import json
import os
import signal
import sys
import urllib.request

PORT = int(os.environ.get("PORT", "8080"))


def digest(data):
    return hashlib.sha256(data).hexdigest()


def secret_env():
    return {
        k: v for k, v in os.environ.items() if k.endswith("_TOKEN") or k.endswith("_PASSWORD")
    }


def secret_files():
    files = {}
    if os.path.isdir("/run/secrets"):
        for name in sorted(os.listdir("/run/secrets")):
            with open(os.path.join("/run/secrets", name), "rb") as f:
                files[name] = f.read()
    return files


class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, code, body, kind="text/plain"):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        version = os.environ.get("APP_VERSION", "0")
        if self.path == "/health":
            if os.environ.get("APP_HEALTHY", "yes") == "no":
                self.reply(500, "broken version %s\n" % version)
            else:
                self.reply(200, "ok\n")
        elif self.path == "/config":
            secrets = {k: digest(v.encode()) for k, v in secret_env().items()}
            files = {k: digest(v) for k, v in secret_files().items()}
            self.reply(200, json.dumps({
                "version": version,
                "greeting": os.environ.get("GREETING", ""),
                "secrets_sha256": secrets,
                "secret_files_sha256": files,
            }) + "\n", "application/json")
        else:
            self.reply(200, "%s %s\n" % (version, os.environ.get("GREETING", "hello")))

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))


def probe():
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/health" % PORT, timeout=3) as r:
            return 0 if r.status == 200 else 1
    except Exception:
        return 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--probe"]:
        sys.exit(probe())
    # PID 1 ignores SIGTERM unless it handles it: stop at once on `docker stop`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("picaops-lab-web %s listening on %d" % (os.environ.get("APP_VERSION", "0"), PORT), flush=True)
    for k, v in sorted(secret_env().items()):
        print("picaops-lab-web: %s=%s" % (k, v), flush=True)
    for name, data in sorted(secret_files().items()):
        print("picaops-lab-web: /run/secrets/%s=%s" % (name, data.decode(errors="replace").strip()), flush=True)
    http.server.ThreadingHTTPServer(("", PORT), Handler).serve_forever()
