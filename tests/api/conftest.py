"""Fixtures for black-box API tests: start the real basalt binary and talk to it.

    def test_something(server):                  # fresh server per test
        r = server.get("/v1/info")               # admin key by default
        r = server.get("/v1/info", key=None)     # no Authorization header
        r = server.post("/v1/keys", key=other, json={...})

    def test_other(shared_server): ...           # one server per test module

    def test_limits(start_server):               # factory: extra flags / env
        s = start_server("--max-body-bytes", "1KiB", env={"BASALT_THREADS": "1"})

    def test_bad_flag(run_basalt):               # run the binary, capture output
        cp = run_basalt("serve", "--bogus")

BASALT_TEST_ARTIFACT_STORE=metadata runs every server with `--artifact-store metadata`
(unless a test names the store itself), so the registry suites can run on either store:
`BASALT_TEST_ARTIFACT_STORE=metadata pytest tests/api/test_registry.py`; ARTIFACT_STORE says
which one is in use.

The binary is $BASALT_BIN (default build/basalt). Each server gets a free port
(`--listen 127.0.0.1:0`, the bound port is read from the first stdout line),
a temporary data directory, and stdout/stderr captured in files next to it.
BASALT_* variables of the caller's environment are not passed on, so tests
control every setting. On teardown a server still running is stopped, and
the test fails if its stderr holds a sanitizer report.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BASALT_BIN = os.path.abspath(os.environ.get("BASALT_BIN", os.path.join(ROOT, "build", "basalt")))

# Sanitizer builds are several times slower; every wait below is a generous upper bound.
START_TIMEOUT = float(os.environ.get("BASALT_TEST_START_TIMEOUT", "30"))
REQUEST_TIMEOUT = float(os.environ.get("BASALT_TEST_REQUEST_TIMEOUT", "30"))
# The artifact store every server runs with: "files" (the default) or "metadata".
ARTIFACT_STORE = os.environ.get("BASALT_TEST_ARTIFACT_STORE", "files")
assert ARTIFACT_STORE in ("files", "metadata"), ARTIFACT_STORE

LISTEN_RE = re.compile(r"^basalt (\S+) listening on http://([^:\s]+):(\d+) \(data: (.*)\)$")
KEY_RE = re.compile(r"^\s+(bsk_\S+)\s*$")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ThreadSanitizer", "ERROR: MemorySanitizer")

_DEFAULT = object()

# BASALT_TEST_BACKEND=postgres: one PostgreSQL server (tests/pg_server.py) and one Redis
# (tests/redis_server.py) for the test session; every Server gets a fresh database of it
# through --metadata-url instead of <data>/basalt.db (so artifacts in the metadata store,
# its default there) and --redis-url (rate limits through Redis), as a replica of a
# scaled-out deployment runs. Tests about the SQLite file or the data directory itself are
# marked `embedded` and deselected on that backend. Such a server also gets a nats-server
# with JetStream of its own (tests/nats_server.py, started with the Server object and
# stopped at its cleanup, kept across restarts) through --nats-url, so topics run on the
# JetStream backend there; its own process keeps the streams of one test from the next.
BACKEND = os.environ.get("BASALT_TEST_BACKEND", "sqlite")
if BACKEND not in ("sqlite", "postgres"):
    raise RuntimeError("BASALT_TEST_BACKEND must be sqlite or postgres, not %r" % BACKEND)
_PG = None


def pg_server():
    """The session's PostgreSQL server (started on first use, stopped at exit)."""
    global _PG
    if _PG is None:
        import sys
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        import pg_server as pgmod
        _PG = pgmod.PgServer().start()
        import atexit
        atexit.register(_PG.cleanup)
    return _PG


_REDIS = None


def redis_server():
    """The session's Redis (started on first use, stopped at exit)."""
    global _REDIS
    if _REDIS is None:
        import sys
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        import redis_server as rmod
        _REDIS = rmod.RedisServer()
        _REDIS.start()
        import atexit
        atexit.register(_REDIS.close)
    return _REDIS


_NATS_MOD = None


def nats_server():
    """A new nats-server with JetStream (tests/nats_server.py), started; the caller closes
    it."""
    global _NATS_MOD
    if _NATS_MOD is None:
        import sys
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        import nats_server as nmod
        _NATS_MOD = nmod
        import atexit
        atexit.register(lambda: [n.close() for n in list(_NATS_STARTED)])
    n = _NATS_MOD.NatsServer().start()
    _NATS_STARTED.add(n)
    return n


_NATS_STARTED = set()  # closed at exit if a test never cleaned its server up


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "embedded: about the SQLite file or data directory itself; deselected "
        "when BASALT_TEST_BACKEND=postgres")


def pytest_collection_modifyitems(config, items):
    if BACKEND != "postgres":
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("embedded") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def clean_env(extra=None):
    """The caller's environment without BASALT_* settings, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASALT_")}
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("LSAN_OPTIONS", "suppressions=%s:print_suppressions=0"
                   % os.path.join(HERE, "lsan.supp"))
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    if extra:
        env.update(extra)
    return env


def run_basalt(*args, env=None, cwd=None, timeout=START_TIMEOUT):
    """Runs the binary to completion; returns CompletedProcess with text stdout/stderr."""
    return subprocess.run([BASALT_BIN, *args], env=clean_env(env), cwd=cwd, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def free_port():
    """A port that was free a moment ago (for tests that must name the port themselves)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerStartError(RuntimeError):
    pass


class Server:
    """One basalt process. Attributes after start(): url, host, port, admin_key, data_dir,
    proc, version, stdout_path, stderr_path."""

    def __init__(self, args=(), env=None, data_dir=None, workdir=None, listen=True,
                 data_flag=True, metadata=True):
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="basalt-test-")
        self.data_dir = data_dir or os.path.join(self.workdir, "data")
        self.args = list(args)
        self.env = dict(env or {})
        self.listen = listen
        self.data_flag = data_flag  # False: no --data flag (the setting comes from elsewhere)
        # On the postgres backend: this server's own database, kept across restarts like
        # its data directory (unless the test chose a metadata URL itself).
        self.metadata_url = None
        if (BACKEND == "postgres" and metadata
                and not any(str(a).startswith("--metadata-url") for a in self.args)
                and "BASALT_METADATA_URL" not in self.env):
            self.metadata_url = pg_server().create_database()
        self.redis_url = None
        if (self.metadata_url and not any(str(a).startswith("--redis-url") for a in self.args)
                and "BASALT_REDIS_URL" not in self.env):
            self.redis_url = redis_server().url
        self.nats = None
        if (self.metadata_url and not any(str(a).startswith("--nats-url") for a in self.args)
                and "BASALT_NATS_URL" not in self.env):
            self.nats = nats_server()
        self.proc = None
        self.admin_key = None
        self.url = self.host = self.port = self.version = None
        self.runs = 0
        self.session = None

    # ---- lifecycle ---------------------------------------------------------------------

    def command(self):
        cmd = [BASALT_BIN, "serve"]
        if self.listen:
            cmd += ["--listen", "127.0.0.1:0"]
        if self.data_flag:
            cmd += ["--data", self.data_dir]
        if ARTIFACT_STORE != "files" and not any(
                a == "--artifact-store" or a.startswith("--artifact-store=") for a in self.args):
            cmd += ["--artifact-store", ARTIFACT_STORE]
        if self.metadata_url:
            cmd += ["--metadata-url", self.metadata_url]
        if self.redis_url:
            cmd += ["--redis-url", self.redis_url]
        if self.nats:
            cmd += ["--nats-url", self.nats.url]
        return cmd + self.args

    def start(self, wait_healthy=True):
        """Starts the process and waits for the listening line and /healthz.
        Raises ServerStartError (with stderr) if it exits or never listens."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.runs += 1
        self.stdout_path = os.path.join(self.workdir, "stdout.%d" % self.runs)
        self.stderr_path = os.path.join(self.workdir, "stderr.%d" % self.runs)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, env=clean_env(self.env),
                                         cwd=self.workdir)
        deadline = time.monotonic() + START_TIMEOUT
        line = None
        while time.monotonic() < deadline:
            text = self.stdout()
            lines = text.splitlines()
            if lines and LISTEN_RE.match(lines[0]):
                line = lines[0]
                # The key lines are flushed together with the first line.
                for i, l in enumerate(lines[1:], 1):
                    m = KEY_RE.match(l)
                    if m and "bootstrap admin API key" in lines[i - 1]:
                        self.admin_key = m.group(1)
                break
            if self.proc.poll() is not None:
                raise ServerStartError("basalt exited with %d before listening:\n%s"
                                       % (self.proc.returncode, self.stderr()))
            time.sleep(0.02)
        if line is None:
            self.kill9()
            raise ServerStartError("basalt did not print its listening line:\n" + self.stderr())
        m = LISTEN_RE.match(line)
        self.version, self.host, self.port = m.group(1), m.group(2), int(m.group(3))
        self.printed_data_dir = m.group(4)
        self.url = "http://%s:%d" % (self.host, self.port)
        if self.session:
            self.session.close()
        self.session = requests.Session()
        if wait_healthy:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError("basalt exited with %d:\n%s"
                                       % (self.proc.returncode, self.stderr()))
            try:
                r = requests.get(self.url + "/healthz", timeout=2)
                if r.status_code == 200:
                    return
                last = r.status_code
            except requests.RequestException as e:
                last = e
            time.sleep(0.05)
        raise ServerStartError("/healthz never answered 200 (last: %r)" % (last,))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=START_TIMEOUT):
        """Sends sig (SIGTERM) and waits; returns the exit code."""
        if self.session:
            self.session.close()  # idle keep-alive connections would delay shutdown
        if self.running():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("basalt did not exit within %ss of signal %d"
                                     % (timeout, sig))
        return self.proc.returncode

    def kill9(self):
        if self.running():
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode if self.proc else None

    def restart(self, **kw):
        """Stops (SIGTERM) if running and starts again on the same data directory.
        The admin key of the first start stays in admin_key."""
        key = self.admin_key
        if self.running():
            self.stop()
        self.start(**kw)
        if self.admin_key is None:
            self.admin_key = key
        return self

    def cleanup(self):
        self.kill9()
        if self.session:
            self.session.close()
        if self.nats:
            self.nats.close()
            _NATS_STARTED.discard(self.nats)
            self.nats = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- output ------------------------------------------------------------------------

    def stdout(self):
        with open(self.stdout_path, "r", errors="replace") as f:
            return f.read()

    def stderr(self, run=None):
        path = self.stderr_path if run is None else os.path.join(self.workdir, "stderr.%d" % run)
        try:
            with open(path, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def sanitizer_reports(self):
        """Sanitizer reports (each with up to 60 following lines) in every run's stderr."""
        found = []
        for run in range(1, self.runs + 1):
            lines = self.stderr(run).splitlines()
            for i, line in enumerate(lines):
                if any(m in line for m in SANITIZER_MARKERS):
                    found.append("\n".join(lines[i:i + 60]))
        return found

    # ---- HTTP --------------------------------------------------------------------------

    def request(self, method, path, key=_DEFAULT, headers=None, **kw):
        """requests call with Authorization: Bearer <key> (admin key by default; key=None
        sends none)."""
        h = dict(headers or {})
        k = self.admin_key if key is _DEFAULT else key
        if k is not None and "Authorization" not in h:
            h["Authorization"] = "Bearer " + k
        kw.setdefault("timeout", REQUEST_TIMEOUT)
        return self.session.request(method, self.url + path, headers=h, **kw)

    def get(self, path, key=_DEFAULT, **kw):
        return self.request("GET", path, key=key, **kw)

    def post(self, path, key=_DEFAULT, **kw):
        return self.request("POST", path, key=key, **kw)

    def put(self, path, key=_DEFAULT, **kw):
        return self.request("PUT", path, key=key, **kw)

    def patch(self, path, key=_DEFAULT, **kw):
        return self.request("PATCH", path, key=key, **kw)

    def delete(self, path, key=_DEFAULT, **kw):
        return self.request("DELETE", path, key=key, **kw)

    def create_key(self, role, key=_DEFAULT, **fields):
        """POST /v1/keys; asserts 201 and returns the JSON (with the secret in 'key')."""
        body = {"name": fields.pop("name", "test-%s" % role), "role": role}
        body.update(fields)
        r = self.post("/v1/keys", key=key, json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def raw(self, data, timeout=5.0, shut_wr=False):
        """Sends raw bytes on a new connection and reads until the server closes it or
        timeout passes. Returns (bytes received, how it ended: 'eof'|'timeout'|'reset')."""
        return raw_exchange(self.host, self.port, data, timeout=timeout, shut_wr=shut_wr)

    def metrics(self, key=_DEFAULT):
        """Scrapes /metrics (with the admin key of the default tenant unless told)."""
        r = self.get("/metrics", key=key)
        assert r.status_code == 200, r.text
        return parse_metrics(r.text)


def raw_exchange(host, port, data, timeout=5.0, shut_wr=False):
    s = socket.create_connection((host, port), timeout=timeout)
    out = b""
    how = "eof"
    try:
        if data:
            s.sendall(data)
        if shut_wr:
            s.shutdown(socket.SHUT_WR)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except socket.timeout:
        how = "timeout"
    except (ConnectionResetError, BrokenPipeError):
        how = "reset"
    finally:
        s.close()
    return out, how


def parse_http_response(data):
    """(status, {lower-case header: value}, body) of the first response in data, or None."""
    if b"\r\n\r\n" not in data:
        return None
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"^HTTP/1\.[01] (\d{3})", lines[0])
    if not m:
        return None
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = body[:int(headers["content-length"])]
    return int(m.group(1)), headers, body


_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*')


class Metrics:
    """Parsed Prometheus text: samples[(name, frozenset(labels.items()))] = value,
    types[family] = type."""

    def __init__(self, samples, types, helps):
        self.samples, self.types, self.helps = samples, types, helps

    def get(self, name, default=None, **labels):
        return self.samples.get((name, frozenset(labels.items())), default)

    def find(self, name, **labels):
        """Samples of name whose labels include the given ones: [(labels dict, value)]."""
        want = set(labels.items())
        return [(dict(l), v) for (n, l), v in self.samples.items() if n == name and want <= l]

    def names(self):
        return {n for n, _ in self.samples}


def parse_metrics(text):
    """Strict parser of the text exposition format 0.0.4; raises AssertionError on a bad line."""
    samples, types, helps = {}, {}, {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(None, 3)
            assert typ in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, "duplicate TYPE for " + name
            types[name] = typ
            continue
        if line.startswith("# HELP "):
            parts = line.split(None, 3)
            helps[parts[2]] = parts[3] if len(parts) > 3 else ""
            continue
        if line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        assert m, "bad metrics line: %r" % line
        labels = {}
        if m.group(3):
            rest = m.group(3)
            pos = 0
            while pos < len(rest):
                lm = _LABEL_RE.match(rest, pos)
                assert lm, "bad labels in %r" % line
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        key = (m.group(1), frozenset(labels.items()))
        assert key not in samples, "duplicate sample: %r" % line
        samples[key] = float(m.group(4))
    return Metrics(samples, types, helps)


# ---- the route table, read from the C source --------------------------------------------

_ROUTE_RE = re.compile(r'\{\s*"(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)"\s*,\s*"(/[^"]*)"\s*,'
                       r'\s*(\w+)\s*,\s*(BS_ROLE_\w+)')


_RESOURCE_ROUTES_RE = re.compile(r'(?<!define )RESOURCE_ROUTES\(\s*"([a-z0-9_-]+)"')


def source_routes():
    """[(method, pattern, handler, min_role)] from src/api/routes.c and the route
    fragments it includes (src/api/routes_*.inc). Parsed textually so the tests do not
    depend on anything the server reports about itself."""
    api = os.path.join(ROOT, "src", "api")
    texts = []
    for name in sorted(os.listdir(api)):
        if name == "routes.c" or (name.startswith("routes") and name.endswith(".inc")):
            with open(os.path.join(api, name)) as f:
                src = f.read()
            src = src.replace("\\\n", " ")  # macro line continuations
            src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
            src = re.sub(r"//[^\n]*", "", src)
            texts.append(src)
    routes = []
    for t in texts:
        for m in _ROUTE_RE.finditer(t):
            routes.append((m.group(1), m.group(2), m.group(3), m.group(4)[len("BS_ROLE_"):].lower()))
        # RESOURCE_ROUTES("plural", …) in a table (not in its own #define): the four routes
        # of a declarative resource kind, as api_int.h expands them
        for m in _RESOURCE_ROUTES_RE.finditer(t):
            base = "/v1/" + m.group(1)
            routes += [("PUT", base + "/{name}", "bs__api_resource_put", "developer"),
                       ("GET", base, "bs__api_resource_list", "viewer"),
                       ("GET", base + "/{name}", "bs__api_resource_get", "viewer"),
                       ("DELETE", base + "/{name}", "bs__api_resource_delete", "developer")]
    return routes


ROLES = ["viewer", "predictor", "developer", "admin"]  # increasing privilege


# ---- fixtures ----------------------------------------------------------------------------

def _finish(srv):
    try:
        if srv.running():
            srv.stop()
        reports = srv.sanitizer_reports()
    finally:
        srv.cleanup()
    assert not reports, "sanitizer reports in basalt's stderr:\n" + "\n".join(reports)


@pytest.fixture
def start_server():
    """Factory: start_server(*flags, env={}, data_dir=None, workdir=None, wait_healthy=True)
    starts a server (stopped and checked on teardown)."""
    started = []

    def factory(*args, env=None, data_dir=None, workdir=None, wait_healthy=True, listen=True):
        srv = Server(args=args, env=env, data_dir=data_dir, workdir=workdir, listen=listen)
        started.append(srv)
        return srv.start(wait_healthy=wait_healthy)

    yield factory
    errors = []
    for srv in started:
        try:
            _finish(srv)
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


@pytest.fixture
def server():
    """A fresh server for one test (2 I/O threads)."""
    srv = Server(args=["--threads", "2"]).start()
    yield srv
    _finish(srv)


@pytest.fixture(scope="module")
def shared_server():
    """One server for a whole test module; tests must not depend on each other's state."""
    srv = Server(args=["--threads", "2"]).start()
    yield srv
    _finish(srv)


@pytest.fixture(name="run_basalt")
def run_basalt_fixture():
    return run_basalt
