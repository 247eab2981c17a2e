"""notes: a small notes app. Python standard library only.

It trusts the gateway: X-Commons-User is the user's pseudonym for this site,
X-Commons-Tier their tier. /search calls the `search` service through the
platform's internal listener with the request's X-Commons-Provenance, so the
call is attributed to this user.
"""
import json
import os
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

NOTES = {}
VERSION = os.environ.get("APP_VERSION", "1.0.0")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urlparse(self.path)
        user = self.headers.get("X-Commons-User", "anonymous")
        if url.path == "/healthz":
            return self.reply(200, {"ok": True})
        if url.path == "/search":
            q = parse_qs(url.query).get("q", [""])[0]
            request = urllib.request.Request(
                os.environ["COMMONS_INTERNAL_URL"] + "/?q=" + urllib.parse.quote(q),
                headers={
                    "Host": "search." + os.environ["COMMONS_DOMAIN"],
                    "X-Commons-Provenance": self.headers.get("X-Commons-Provenance", ""),
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    found = json.load(answer)
            except urllib.error.HTTPError as e:
                return self.reply(502, {"error": f"search answered {e.code}"})
            return self.reply(200, {"search": found})
        if url.path == "/export":
            return self.reply(200, {"notes": NOTES.get(user, [])})
        return self.reply(200, {"version": VERSION, "user": user,
                                "tier": self.headers.get("X-Commons-Tier"),
                                "notes": len(NOTES.get(user, []))})

    def do_POST(self):
        user = self.headers.get("X-Commons-User", "anonymous")
        length = int(self.headers.get("Content-Length", "0"))
        NOTES.setdefault(user, []).append(self.rfile.read(length).decode(errors="replace"))
        self.reply(201, {"saved": len(NOTES[user])})

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
