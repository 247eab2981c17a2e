"""Keeps each POSTed body as a line of $COMMONS_STATE_DIR/kept.txt; GET / shows them,
GET /env its settings TITLE and SECRET_KEY, GET /auth the Authorization and
X-Remote-User it was given."""
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEPT = os.path.join(os.environ["COMMONS_STATE_DIR"], "kept.txt")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/auth":
            body = ("%s|%s" % (self.headers.get("Authorization", ""), self.headers.get("X-Remote-User", ""))).encode()
        elif self.path == "/env":
            body = ("%s %s" % (os.environ.get("TITLE"), os.environ.get("SECRET_KEY"))).encode()
        elif self.path == "/healthz":
            body = b"ok"
        else:
            body = open(KEPT, "rb").read() if os.path.exists(KEPT) else b""
        self.reply(body)

    def do_POST(self):
        line = self.rfile.read(int(self.headers.get("content-length", "0")))
        with open(KEPT, "ab") as f:
            f.write(line + b"\n")
        self.reply(b"kept")

    def reply(self, body):
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
