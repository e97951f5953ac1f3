"""A throwaway nats-server with JetStream for tests: a free port on 127.0.0.1, a temporary
directory holding its config, log and JetStream store (file storage), stopped and started
again on the same port and the same store.

As a module:

    from nats_server import NatsServer
    with NatsServer() as n:           # started, JetStream ready
        url = n.url                   # nats://127.0.0.1:PORT
        n.stop()                      # SIGTERM, waits for the exit (the store is flushed)
        n.start()                     # the same port and store again
        n.kill()                      # SIGKILL: no shutdown, nothing flushed by the server

As a command:

    /usr/bin/python3 tests/nats_server.py -- CMD ARGS...

starts one, runs CMD with BASALT_TEST_NATS_URL (the URL) and BASALT_TEST_NATS_CTL in the
environment, then stops it and exits with CMD's status. BASALT_TEST_NATS_CTL is the path
of a Unix stream socket: the restart hook. A test connects, writes one command line,
`stop`, `start`, `kill` or `restart` (stop then start), and reads `ok` (done: stopped,
or started with JetStream answering) or `error: ...` back; one command per connection.
The harness owns the server process throughout, so nothing outlives the run.

The server runs with max_payload 8MB (the default 1MB is smaller than basalt's largest
event plus its headers) and JetStream on file storage. nats-server 2.9 has no setting for
JetStream's fsync (2.10 added `sync_interval`); see docs/scaleout.md.
"""
import json
import os
import shutil
import socket
import sys
import threading

from server_harness import ServerProcess, run_command

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def jetstream_ready(port, timeout=1.0):
    """True if a NATS server on 127.0.0.1:port answers a JetStream API request
    ($JS.API.INFO) with account information (JetStream enabled and recovered)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            f = s.makefile("rb")
            if not f.readline().startswith(b"INFO "):
                return False
            s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,'
                      b'"no_responders":true,"protocol":1}\r\n'
                      b"SUB _ready.inbox 1\r\nPUB $JS.API.INFO _ready.inbox 0\r\n\r\nPING\r\n")
            while True:
                line = f.readline()
                if not line:
                    return False
                if line.startswith(b"PING"):
                    s.sendall(b"PONG\r\n")
                elif line.startswith(b"-ERR"):
                    return False
                elif line.startswith(b"HMSG"):  # a status (503 no responders): not ready
                    return False
                elif line.startswith(b"MSG "):
                    size = int(line.split()[-1])
                    body = f.read(size + 2)[:size]
                    try:
                        reply = json.loads(body)
                    except ValueError:
                        return False
                    return "error" not in reply and "memory" in reply
    except OSError:
        return False


class NatsServer(ServerProcess):
    """One nats-server process; see the module docstring."""

    name = "nats-server"

    def __init__(self, port=None, max_payload="8MB"):
        super().__init__("basalt-nats-", port)
        self.url = "nats://127.0.0.1:%d" % self.port
        self.store_dir = os.path.join(self.dir, "jetstream")
        self.conf = os.path.join(self.dir, "nats.conf")
        self.logfile = os.path.join(self.dir, "nats.log")
        self.pidfile = os.path.join(self.dir, "nats.pid")
        self.ctl_path = os.path.join(self.dir, "ctl.sock")
        with open(self.conf, "w") as f:
            f.write("listen: 127.0.0.1:%d\n"
                    "server_name: basalt_test_%d\n"
                    "max_payload: %s\n"
                    "pid_file: \"%s\"\n"
                    "log_file: \"%s\"\n"
                    "jetstream {\n  store_dir: \"%s\"\n  max_memory_store: 64MB\n"
                    "  max_file_store: 1TB\n}\n"
                    % (self.port, self.port, max_payload, self.pidfile, self.logfile,
                       self.store_dir))
        self._lock = threading.Lock()
        self._ctl = None

    def argv(self):
        return [NATS_SERVER, "-c", self.conf]

    def ready(self):
        """JetStream answers (the server is up and has recovered its store)."""
        return jetstream_ready(self.port, 0.5)

    # ---- the restart hook ----------------------------------------------------------------

    def serve_control(self):
        """Listens on self.ctl_path for stop/start/kill/restart commands (a thread)."""
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(self.ctl_path)
        srv.listen(4)
        self._ctl = srv
        t = threading.Thread(target=self._control_loop, args=(srv,), daemon=True)
        t.start()
        return self.ctl_path

    def _control_loop(self, srv):
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                try:
                    cmd = conn.makefile("rb").readline().decode().strip()
                    with self._lock:
                        if cmd == "stop":
                            self.stop()
                        elif cmd == "kill":
                            self.kill()
                        elif cmd == "start":
                            self.start()
                        elif cmd == "restart":
                            self.stop()
                            self.start()
                        else:
                            raise ValueError("unknown command %r" % cmd)
                    conn.sendall(b"ok\n")
                except Exception as e:  # reported to the test, which fails
                    try:
                        conn.sendall(("error: %s\n" % e).replace("\n", " ").encode() + b"\n")
                    except OSError:
                        pass

    def close(self):
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        with self._lock:
            super().close()


def _env(n):
    return {"BASALT_TEST_NATS_URL": n.url, "BASALT_TEST_NATS_CTL": n.serve_control()}


def main(argv):
    return run_command(argv, "nats_server.py", NatsServer, _env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
