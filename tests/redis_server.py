"""A throwaway redis-server for tests: a free port on 127.0.0.1, a temporary directory,
no persistence (no RDB, no AOF), stopped and started again on the same port.

As a module:

    from redis_server import RedisServer
    with RedisServer() as r:          # started
        url = r.url                   # redis://127.0.0.1:PORT
        r.stop()                      # SIGTERM, waits for the exit
        r.start()                     # the same port again (empty: nothing persisted)
        r.kill()                      # SIGKILL

As a command:

    /usr/bin/python3 tests/redis_server.py -- CMD ARGS...

starts one, runs CMD with BASALT_TEST_REDIS_URL (the URL) and BASALT_TEST_REDIS_CONF (its
config file: `redis-server CONF --daemonize yes` starts it again on the same port; it
also listens on the Unix socket redis.sock next to CONF) in the environment, then stops it (and any redis-server started from CONF, found by its pid file)
and exits with CMD's status.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = float(os.environ.get("BASALT_TEST_START_TIMEOUT", "30"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ping(port, timeout=1.0):
    """True if a Redis answers PING on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process; see the module docstring."""

    def __init__(self, port=None):
        self.dir = tempfile.mkdtemp(prefix="basalt-redis-")
        self.port = port or _free_port()
        self.url = "redis://127.0.0.1:%d" % self.port
        self.conf = os.path.join(self.dir, "redis.conf")
        self.pidfile = os.path.join(self.dir, "redis.pid")
        self.logfile = os.path.join(self.dir, "redis.log")
        self.socket = os.path.join(self.dir, "redis.sock")  # also listening: unix:<socket>
        with open(self.conf, "w") as f:
            f.write("port %d\nbind 127.0.0.1\ndir %s\nsave \"\"\nappendonly no\n"
                    "pidfile %s\nlogfile %s\ndaemonize no\nprotected-mode yes\n"
                    "unixsocket %s\nunixsocketperm 700\n"
                    % (self.port, self.dir, self.pidfile, self.logfile, self.socket))
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        """Starts redis-server on self.port and waits until it answers PING."""
        assert not self.running(), "already running"
        self.proc = subprocess.Popen([REDIS_SERVER, self.conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited with %d:\n%s"
                                   % (self.proc.returncode, self.log()))
            if ping(self.port, 0.2):
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError("redis-server did not answer PING on port %d:\n%s"
                           % (self.port, self.log()))

    def stop(self, timeout=START_TIMEOUT):
        """SIGTERM and wait for the exit (nothing is saved)."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._wait_port_free()

    def kill(self):
        """SIGKILL: the server dies without closing its connections cleanly."""
        if self.running():
            self.proc.kill()
            self.proc.wait()
        self._wait_port_free()

    def _wait_port_free(self):
        deadline = time.monotonic() + START_TIMEOUT
        while ping(self.port, 0.2) and time.monotonic() < deadline:
            time.sleep(0.02)

    def kill_external(self):
        """Stops a redis-server started from self.conf by someone else (its pid file)."""
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            return
        if pid and (self.proc is None or pid != self.proc.pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                return
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except OSError:
                    return
                time.sleep(0.02)
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def close(self):
        self.stop()
        self.kill_external()
        shutil.rmtree(self.dir, ignore_errors=True)


def main(argv):
    if "--" in argv:
        argv = argv[argv.index("--") + 1:]
    if not argv:
        sys.stderr.write("usage: redis_server.py -- CMD ARGS...\n")
        return 2
    with RedisServer() as r:
        env = dict(os.environ, BASALT_TEST_REDIS_URL=r.url, BASALT_TEST_REDIS_CONF=r.conf)
        try:
            rc = subprocess.call(argv, env=env)
            return 128 - rc if rc < 0 else rc  # killed by a signal: 128 + its number
        except OSError as e:
            sys.stderr.write("redis_server.py: cannot run %s: %s\n" % (argv[0], e))
            return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
