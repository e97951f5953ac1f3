"""A throwaway PostgreSQL 15 server for the tests: initdb + pg_ctl in a temporary directory
on a free port, trust authentication on localhost, settings for speed (fsync off), a role
`basalt`, and fresh databases on demand.

PostgreSQL refuses to run as root; when the tests run as root the server runs as the
unprivileged user `basalt-test` (scripts/deps.sh creates it) through `runuser`, with the
directory chowned to it. Otherwise it runs as the current user.

As a module:
    pg = PgServer(); pg.start(); url = pg.create_database(); ... pg.stop(); pg.start();
    pg.kill(); pg.cleanup()
As a command (the unit tests under `make unit`):
    /usr/bin/python3 tests/pg_server.py -- CMD ARGS...
starts a server, exports BASALT_TEST_PG_URL (a fresh database), BASALT_TEST_PG_URL2
(another) and BASALT_TEST_PG_STOP / BASALT_TEST_PG_START (shell commands that stop and
start that server) and runs CMD, exiting with its status.
"""
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from server_harness import free_port as _free_port, run_command

PG_BIN = os.environ.get("BASALT_PG_BIN", "/usr/lib/postgresql/15/bin")
RUN_USER = "basalt-test"


def _children(pid):
    """Pids whose parent is pid (from /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                out.append(int(d))
    return out


class PgServer:
    def __init__(self, port=None):
        self.root = tempfile.mkdtemp(prefix="basalt-pg-")
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "server.log")
        self.port = port or _free_port()
        self.n_db = 0
        self.as_root = os.geteuid() == 0
        if self.as_root:
            pw = pwd.getpwnam(RUN_USER)
            os.chmod(self.root, 0o755)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._initdb()

    def _cmd(self, argv):
        if self.as_root:
            return ["runuser", "-u", RUN_USER, "--"] + argv
        return argv

    def _run(self, argv, check=True, **kw):
        return subprocess.run(self._cmd(argv), check=check, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, **kw)

    def _initdb(self):
        r = self._run([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-A", "trust",
                       "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
                      check=False)
        if r.returncode:
            raise RuntimeError("initdb failed:\n" + r.stdout)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(
                "\n# basalt tests: speed over durability\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 300\nshared_buffers = 32MB\n"
                "log_min_messages = warning\nlogging_collector = off\n")
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\n"
                    "host all all 127.0.0.1/32 trust\n"
                    "host all all ::1/128 trust\n")

    @property
    def admin_url(self):
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, db):
        return f"postgresql://basalt@127.0.0.1:{self.port}/{db}"

    def start(self):
        r = self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.log,
                       "-w", "-t", "60", "-o", f"-p {self.port}", "start"], check=False)
        if r.returncode:
            log = open(self.log).read() if os.path.exists(self.log) else ""
            raise RuntimeError("pg_ctl start failed:\n" + r.stdout + log)
        if not getattr(self, "_role", False):
            self.psql("CREATE ROLE basalt LOGIN SUPERUSER")
            self._role = True
        return self

    def psql(self, sql, db="postgres"):
        r = self._run([os.path.join(PG_BIN, "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                       "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        return r.stdout

    def create_database(self, name=None):
        """A fresh, empty database owned by `basalt`; returns its URL."""
        self.n_db += 1
        name = name or f"t{os.getpid()}_{self.n_db}"
        self.psql(f'CREATE DATABASE "{name}" OWNER basalt')
        return self.url(name)

    def stop(self):
        """Fast shutdown: sessions are terminated, as a server going down does."""
        self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", "fast", "-w",
                   "stop"], check=False)

    def kill(self):
        """SIGKILL of the postmaster (its backends exit as they notice)."""
        pidfile = os.path.join(self.data, "postmaster.pid")
        try:
            pid = int(open(pidfile).read().split()[0])
        except (OSError, ValueError, IndexError):
            return
        children = _children(pid)  # this server's backends, by pid
        for p in [pid] + children:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # the backends hold the shared memory: wait for all of them before a restart
        for p in [pid] + children:
            for _ in range(200):
                try:
                    os.kill(p, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        try:
            os.unlink(pidfile)
        except OSError:
            pass

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()


def attach(root, port):
    """A PgServer object for a server another process made (same directory and port)."""
    pg = PgServer.__new__(PgServer)
    pg.root, pg.data, pg.log = root, os.path.join(root, "data"), os.path.join(root, "server.log")
    pg.port, pg.n_db, pg.as_root, pg._role = int(port), 0, os.geteuid() == 0, True
    return pg


def _env(pg):
    # a fresh database, a second empty one (migration races) and shell commands that stop
    # and start the server (outage tests)
    me = [sys.executable, os.path.abspath(__file__)]
    return {"BASALT_TEST_PG_URL": pg.create_database(),
            "BASALT_TEST_PG_URL2": pg.create_database(),
            "BASALT_TEST_PG_STOP": " ".join(me + ["--stop", pg.root, str(pg.port)]),
            "BASALT_TEST_PG_START": " ".join(me + ["--start", pg.root, str(pg.port)])}


def main(argv):
    if argv[:1] in (["--stop"], ["--start"]) and len(argv) == 3:
        pg = attach(argv[1], argv[2])
        pg.stop() if argv[0] == "--stop" else pg.start()
        return 0
    if "--" not in argv:
        print("usage: pg_server.py -- CMD ARGS...", file=sys.stderr)
        return 2
    return run_command(argv, "pg_server.py", PgServer, _env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
