"""search: finds words in a fixed corpus. Python standard library only."""
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

CORPUS = [
    "commons are shared resources managed by a community",
    "open source software is a digital commons",
    "a subscription shared by usage pays every project",
    "markdown is a lightweight markup language",
    "http is the protocol of the web",
]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/healthz":
            return self.reply(200, {"ok": True})
        words = parse_qs(url.query).get("q", [""])[0].lower().split()
        # Some real work, so that the provider's CPU meter sees it.
        score = sum(i * i for i in range(20000))
        hits = [line for line in CORPUS if all(w in line for w in words)]
        self.reply(200, {"q": words, "hits": hits, "work": score % 7,
                         "user": self.headers.get("X-Commons-User", "")})

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
