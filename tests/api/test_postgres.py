"""basalt on PostgreSQL (metadata_url), with its own server from tests/pg_server.py (this
module stops and starts it, so it does not share the session's): `basalt migrate`,
several replicas starting at once on an empty database, concurrent writes through
different replicas, passwords kept out of every output, and an outage: writes answer 503
`unavailable` while PostgreSQL is down, predictions of loaded models keep answering, and
writes work again once it is back, without restarting basalt.

These run on either BASALT_TEST_BACKEND: they are about PostgreSQL itself."""
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import BASALT_BIN, ROOT, START_TIMEOUT, Server, _finish, clean_env
from modelkit import (approve, assert_error, create_model, linear_bytes, predict_ok,
                      set_alias, upload, upload_ok)

sys.path.insert(0, os.path.join(ROOT, "tests"))
import pg_server  # noqa: E402

N_MIGRATIONS = None


@pytest.fixture(scope="module")
def pg():
    srv = pg_server.PgServer().start()
    yield srv
    srv.cleanup()


def migrate(*args):
    return subprocess.run([BASALT_BIN, "migrate", *args], env=clean_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=START_TIMEOUT)


def sqlite_version(tmp_path):
    """The binary's schema version, from a fresh SQLite store: the oracle for PostgreSQL."""
    cp = migrate("--data", str(tmp_path / "oracle"), "--json")
    assert cp.returncode == 0, cp.stderr
    j = json.loads(cp.stdout)
    assert j["backend"] == "sqlite"
    return j["schema_version"]


def applied(pg, url):
    db = url.rsplit("/", 1)[1]
    return [int(x) for x in pg.psql("SELECT version FROM schema_migrations ORDER BY version",
                                    db=db).split()]


def test_migrate_command(pg, tmp_path):
    want = sqlite_version(tmp_path)
    url = pg.create_database()
    cp = migrate("--metadata-url", url, "--json")
    assert cp.returncode == 0, cp.stderr
    j = json.loads(cp.stdout)
    assert j == {"backend": "postgresql", "metadata": url, "schema_version": want}
    assert applied(pg, url) == list(range(1, want + 1))
    # again: nothing to do, same answer; the plain form names version and backend
    cp = migrate("--metadata-url", url)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "schema version %d (postgresql, %s)" % (want, url)
    assert applied(pg, url) == list(range(1, want + 1))
    # the URL from the environment
    cp = subprocess.run([BASALT_BIN, "migrate", "--json"],
                        env=clean_env({"BASALT_METADATA_URL": url}), stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True, timeout=START_TIMEOUT)
    assert cp.returncode == 0 and json.loads(cp.stdout)["backend"] == "postgresql", cp.stderr
    # usage errors
    assert migrate("--metadata-url", "mysql://x/y").returncode == 2
    assert migrate("--metadata-url", url, "--data", str(tmp_path)).returncode == 2
    assert migrate("--bogus").returncode == 2
    # a database a newer binary migrated is refused
    pg.psql("INSERT INTO schema_migrations VALUES (%d, 0)" % (want + 1), db=url.rsplit("/", 1)[1])
    cp = migrate("--metadata-url", url)
    assert cp.returncode == 1
    assert "schema version %d, newer than this binary's %d" % (want + 1, want) in cp.stderr


def test_unreachable_server_fails_fast(tmp_path):
    """A URL nobody listens on: migrate and serve fail with a message, not a hang."""
    port = pg_server._free_port()
    url = "postgresql://basalt:hunter2@127.0.0.1:%d/x" % port
    cp = migrate("--metadata-url", url)
    assert cp.returncode == 1
    assert "unavailable" in cp.stderr and "hunter2" not in cp.stderr + cp.stdout
    assert "basalt:***@127.0.0.1" in cp.stderr
    cp = subprocess.run([BASALT_BIN, "serve", "--listen", "127.0.0.1:0", "--data",
                         str(tmp_path / "d"), "--metadata-url", url], env=clean_env(),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        timeout=START_TIMEOUT)
    assert cp.returncode != 0
    assert "hunter2" not in cp.stderr + cp.stdout
    assert "unavailable" in cp.stderr


def test_password_never_printed(pg, tmp_path):
    """trust authentication ignores the password, so the server starts with one in the
    URL; it appears in no output and not in /v1/info."""
    url = pg.create_database().replace("basalt@", "basalt:s3cr3t-pw@")
    srv = Server(args=["--threads", "2", "--metadata-url", url])
    try:
        srv.start()
        info = srv.get("/v1/info").json()
        assert info["backends"]["metadata"] == "postgresql"
        assert info["metadata_pool"]["size"] == 8
        assert info["replica_id"]
        create_model(srv, "pw")
        assert_error(srv.post("/v1/models", json={"name": "pw"}), 409, code="conflict")
        cp = migrate("--metadata-url", url, "--json")
        assert cp.returncode == 0
        srv.stop()
        out = srv.stdout() + srv.stderr() + json.dumps(info) + cp.stdout + cp.stderr
        assert "s3cr3t-pw" not in out
        assert "basalt:***@" in srv.stderr()  # the start-up line names the store
        # PostgreSQL without nats_url: the topics stay in this replica's own log, and it says so
        assert "do not share them; set nats_url" in srv.stderr()
        assert info["backends"]["events"] == "segments"
    finally:
        _finish(srv)


def start_all(servers):
    """Starts the servers at the same moment (one thread each)."""
    with concurrent.futures.ThreadPoolExecutor(len(servers)) as ex:
        list(ex.map(lambda s: s.start(), servers))


def test_replicas_starting_together_migrate_and_bootstrap_once(pg, tmp_path):
    want = sqlite_version(tmp_path)
    url = pg.create_database()
    replicas = [Server(args=["--threads", "2", "--metadata-url", url,
                             "--replica-id", "r%d" % i]) for i in range(3)]
    try:
        start_all(replicas)
        keys = [r.admin_key for r in replicas if r.admin_key]
        assert len(keys) == 1, [r.stdout() for r in replicas]
        assert sum("bootstrap admin API key" in r.stdout() for r in replicas) == 1
        assert applied(pg, url) == list(range(1, want + 1))
        assert pg.psql("SELECT COUNT(*) FROM api_keys", db=url.rsplit("/", 1)[1]).strip() == "1"
        assert pg.psql("SELECT COUNT(*) FROM tenants", db=url.rsplit("/", 1)[1]).strip() == "1"
        # the one key works on every replica (each loaded it at start)
        for r in replicas:
            r.admin_key = keys[0]
            got = r.get("/v1/info").json()
            assert got["caller"]["role"] == "admin"
            assert got["replica_id"] == r.args[-1]
    finally:
        for r in replicas:
            _finish(r)


def test_concurrent_uploads_through_replicas(pg):
    """Versions of one model uploaded through three replicas at once get distinct numbers
    1..N, and the audit trail lists them in commit order (newest first) on every replica."""
    url = pg.create_database()
    replicas = [Server(args=["--threads", "2", "--metadata-url", url]) for _ in range(3)]
    try:
        replicas[0].start()
        for r in replicas[1:]:
            r.start()
            r.admin_key = replicas[0].admin_key
        create_model(replicas[0], "shared")
        n_each = 6

        def push(i):
            r = replicas[i % 3]
            return upload_ok(r, "shared", linear_bytes((float(i), 1.0), 0.0), "basalt_json")["version"]

        with concurrent.futures.ThreadPoolExecutor(6) as ex:
            got = list(ex.map(push, range(3 * n_each)))
        assert sorted(got) == list(range(1, 3 * n_each + 1))
        for r in replicas:
            items = r.get("/v1/audit", params={"limit": 1000}).json()["items"]
            created = [json.loads(e["after"])["version"] if isinstance(e["after"], str)
                       else e["after"]["version"]
                       for e in items if e["action"] == "version.create"]
            # newest first = commit order reversed = version numbers descending
            assert created == sorted(created, reverse=True) == list(range(3 * n_each, 0, -1))
            ids = [e["id"] for e in items]
            assert ids == sorted(ids, reverse=True)
    finally:
        for r in replicas:
            _finish(r)


def test_outage_writes_503_predictions_continue_and_recovery(pg):
    url = pg.create_database()
    srv = Server(args=["--threads", "2", "--metadata-url", url])
    try:
        srv.start()
        create_model(srv, "lin")
        v = upload_ok(srv, "lin", linear_bytes((2.0, 3.0), 1.0), "basalt_json")
        approve(srv, "lin", v["version"])
        assert set_alias(srv, "lin", "prod", v["version"]).status_code == 200
        rows = {"inputs": [{"a": 1.0, "b": 1.0}]}
        assert predict_ok(srv, "lin", rows, 1)["predictions"] == [6.0]
        pg.stop()
        try:
            # writes: 503 unavailable, answered (the client's timeout bounds a hang)
            assert_error(srv.post("/v1/models", json={"name": "during"}), 503, code="unavailable")
            assert_error(upload(srv, "lin", linear_bytes((1.0, 1.0), 0.0), "basalt_json"), 503,
                         code="unavailable")
            assert_error(srv.post("/v1/keys", json={"role": "viewer", "name": "k"}), 503,
                         code="unavailable")
            # predictions from the snapshot keep answering, by name and by alias
            for _ in range(20):
                assert predict_ok(srv, "lin", rows, 1)["predictions"] == [6.0]
                assert predict_ok(srv, "lin@prod", rows, 1)["predictions"] == [6.0]
            text = srv.metrics().find("basalt_metadata_errors_total")
            assert dict((l["kind"], val) for l, val in text)["unavailable"] >= 3
            assert srv.get("/v1/info").json()["metadata_pool"]["down"] is True
            r = srv.get("/readyz")
            assert r.status_code == 503
            assert r.json()["checks"]["metadata_store"] == "unavailable"
        finally:
            pg.start()
        # ready again by itself (the backend probes), before any write
        deadline = time.monotonic() + START_TIMEOUT
        while srv.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        r = srv.get("/readyz")
        assert r.status_code == 200 and r.json()["checks"]["metadata_store"] == "ok", r.text
        # back: writes succeed without restarting basalt
        create_model(srv, "after")
        assert srv.get("/v1/info").json()["metadata_pool"]["down"] is False
        v2 = upload_ok(srv, "lin", linear_bytes((1.0, 1.0), 0.0), "basalt_json")
        assert v2["version"] == 2
        assert srv.running()
    finally:
        _finish(srv)


def test_keys_create_offline_into_postgres(pg):
    """The lost-admin-key path for a PostgreSQL store: `keys create --metadata-url` writes
    the key; the running server serves it without being told (change propagation)."""
    url = pg.create_database()
    srv = Server(args=["--threads", "2", "--metadata-url", url])
    try:
        srv.start()
        cp = subprocess.run([BASALT_BIN, "keys", "create", "--role", "admin", "--name", "rescue",
                             "--metadata-url", url, "--json"], env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            timeout=START_TIMEOUT)
        assert cp.returncode == 0, cp.stderr
        k = json.loads(cp.stdout)
        assert k["role"] == "admin" and k["tenant"] == "default" and k["server_pid"] is None
        # The server picks it up by itself (the change watcher: NOTIFY, or the 1 s poll).
        deadline = time.monotonic() + START_TIMEOUT
        while srv.get("/v1/info", key=k["key"]).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.get("/v1/info", key=k["key"]).json()["caller"]["key_id"] == k["id"]
        # text form, and the usage errors
        cp = subprocess.run([BASALT_BIN, "keys", "create", "--role", "viewer",
                             "--metadata-url", url], env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, timeout=START_TIMEOUT)
        assert cp.returncode == 0 and "written into the PostgreSQL metadata store" in cp.stdout
        for bad in (["--metadata-url", "mysql://x"], ["--metadata-url", url, "--data", "/tmp"]):
            cp = subprocess.run([BASALT_BIN, "keys", "create", "--role", "viewer", *bad],
                                env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, timeout=START_TIMEOUT)
            assert cp.returncode == 2, (bad, cp.stderr)
    finally:
        _finish(srv)
