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
import sys
import time

from server_harness import START_TIMEOUT, ServerProcess, run_command

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def ping(port, timeout=1.0):
    """True if a Redis answers PING on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(ServerProcess):
    """One redis-server process; see the module docstring."""

    name = "redis-server"
    ready_what = "answer PING"

    def __init__(self, port=None):
        super().__init__("basalt-redis-", port)
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

    def argv(self):
        return [REDIS_SERVER, self.conf]

    def ready(self):
        return ping(self.port, 0.2)

    def answering(self):
        return ping(self.port, 0.2)

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

    def close(self):
        self.stop()
        self.kill_external()
        shutil.rmtree(self.dir, ignore_errors=True)


def _env(r):
    return {"BASALT_TEST_REDIS_URL": r.url, "BASALT_TEST_REDIS_CONF": r.conf}


def main(argv):
    return run_command(argv, "redis_server.py", RedisServer, _env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
