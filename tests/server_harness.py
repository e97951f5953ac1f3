"""What the tests' throwaway servers share (nats_server.py, redis_server.py, pg_server.py):
a free port on 127.0.0.1, a server process in a temporary directory started and waited for
until it answers, stopped (SIGTERM, SIGKILL after START_TIMEOUT) or killed and waited for
until its port is free, the tail of its log, and the `-- CMD ARGS...` runner that starts one
around a command.

A server is a subclass of ServerProcess that sets `name` (for messages), `argv()` (its
command line), `ready()` (it answers), and may set `ready_what` (what "answers" means, for
the error message) and `answering()` (what _wait_port_free waits on; default: the port
accepts connections).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

START_TIMEOUT = float(os.environ.get("BASALT_TEST_START_TIMEOUT", "30"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port, timeout=0.2):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


class ServerProcess:
    """One server process on self.port with the directory self.dir; see the module
    docstring."""

    name = "server"
    ready_what = "answer"

    def __init__(self, prefix, port=None):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.port = port or free_port()
        self.logfile = None
        self.proc = None

    def argv(self):
        raise NotImplementedError

    def ready(self):
        raise NotImplementedError

    def answering(self):
        return port_open(self.port)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        """Starts the server on self.port and waits until ready()."""
        assert not self.running(), "already running"
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %d:\n%s"
                                   % (self.name, self.proc.returncode, self.log()))
            if self.ready():
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError("%s did not %s on port %d:\n%s"
                           % (self.name, self.ready_what, self.port, self.log()))

    def stop(self, timeout=START_TIMEOUT):
        """SIGTERM and wait for the exit (SIGKILL after timeout)."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._wait_port_free()

    def kill(self):
        """SIGKILL: the server dies without closing anything."""
        if self.running():
            self.proc.kill()
            self.proc.wait()
        self._wait_port_free()

    def _wait_port_free(self):
        deadline = time.monotonic() + START_TIMEOUT
        while self.answering() and time.monotonic() < deadline:
            time.sleep(0.02)

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()[-4000:]
        except (OSError, TypeError):
            return ""

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_command(argv, script, make, env):
    """The `script -- CMD ARGS...` runner: starts make() as a context manager, runs CMD with
    env(server) (a dict) added to the environment, stops the server and returns CMD's exit
    status (128 + N when a signal N killed it; 127 when it cannot run, 2 without CMD)."""
    if "--" in argv:
        argv = argv[argv.index("--") + 1:]
    if not argv:
        sys.stderr.write("usage: %s -- CMD ARGS...\n" % script)
        return 2
    with make() as srv:
        full = dict(os.environ, **env(srv))
        try:
            rc = subprocess.call(argv, env=full)
            return 128 - rc if rc < 0 else rc
        except OSError as e:
            sys.stderr.write("%s: cannot run %s: %s\n" % (script, argv[0], e))
            return 127
