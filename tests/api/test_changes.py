"""Change propagation, snapshot reporting and leases through a running server.

Another replica is played by a second writer on the same SQLite file: `basalt keys create
--data` (with the lock file out of its way, so it cannot send SIGHUP), or Python's sqlite3
writing rows and bumping the scope's generation in one transaction, as a replica's writer
does. The server must pick those changes up through its generation poll alone."""
import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import time

from conftest import BASALT_BIN, REQUEST_TIMEOUT, START_TIMEOUT, clean_env, parse_metrics
from modelkit import (approve, create_model, linear_bytes, predict, set_alias, upload_ok)

# A second writer on the same SQLite file stands in for another replica; on PostgreSQL
# test_replicas.py runs real replicas.
import pytest  # noqa: E402
pytestmark = pytest.mark.embedded

POLL = ["--change-poll-ms", "100"]


def wait_for(pred, what, timeout=START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def db(srv):
    return sqlite3.connect(os.path.join(srv.data_dir, "basalt.db"), isolation_level=None,
                           timeout=REQUEST_TIMEOUT)


def write_as_other_replica(srv, scope, *statements):
    """Runs statements (sql, args) and bumps scope's generation in one transaction."""
    c = db(srv)
    try:
        c.execute("BEGIN IMMEDIATE")
        for sql, args in statements:
            c.execute(sql, args)
        c.execute("UPDATE generations SET generation = generation + 1 WHERE scope = ?", (scope,))
        c.execute("COMMIT")
    finally:
        c.close()


def info(srv):
    r = srv.get("/v1/info")
    assert r.status_code == 200, r.text
    return r.json()


def lease_held(m, name):
    return m.samples.get(("basalt_lease_held", frozenset({("name", name)})))


def metrics(srv):
    r = srv.get("/metrics")
    assert r.status_code == 200, r.text
    return parse_metrics(r.text)


def offline_key_unsignalled(srv, *extra):
    """`basalt keys create --data` while the server runs, with the server's lock file moved
    aside: the CLI finds no holder, so it sends no SIGHUP, like a write from another host."""
    lock = os.path.join(srv.data_dir, "basalt.lock")
    os.rename(lock, lock + ".held")
    try:
        cp = subprocess.run([BASALT_BIN, "keys", "create", "--data", srv.data_dir, "--json",
                             *extra], env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, timeout=2 * REQUEST_TIMEOUT)
    finally:
        os.replace(lock + ".held", lock)
    assert cp.returncode == 0, cp.stderr
    j = json.loads(cp.stdout)
    assert j["server_pid"] is None  # nobody was told
    return j


def test_offline_key_works_without_sighup_and_a_deleted_one_stops(start_server):
    srv = start_server(*POLL)
    before = info(srv)["snapshot"]["scopes"]["auth"]
    j = offline_key_unsignalled(srv, "--role", "admin", "--name", "elsewhere")
    wait_for(lambda: srv.get("/v1/keys", key=j["key"]).status_code == 200,
             "the offline key never authenticated")
    assert "reloaded the API keys" not in srv.stderr()  # not the SIGHUP path
    assert info(srv)["snapshot"]["scopes"]["auth"] == before + 1
    # deleted by another replica: it stops working here too
    write_as_other_replica(srv, "auth", ("DELETE FROM api_keys WHERE id = ?", (j["id"],)))
    wait_for(lambda: srv.get("/v1/models", key=j["key"]).status_code == 401,
             "the deleted key kept working")
    assert srv.get("/v1/models").status_code == 200  # the others still do
    m = metrics(srv)
    assert m.get("basalt_snapshot_rebuilds_total", result="ok") >= 2
    assert srv.stop() == 0


def test_alias_moved_by_another_replica_is_served(start_server):
    srv = start_server(*POLL)
    create_model(srv, "m")
    for coef in (1.0, 2.0):
        upload_ok(srv, "m", linear_bytes([coef, 0.0], 0.0), "basalt_json")
    approve(srv, "m", 1)
    approve(srv, "m", 2)
    set_alias(srv, "m", "champion", 1)

    def served():
        r = predict(srv, "m", {"inputs": {"a": 1, "b": 1}})
        assert r.status_code == 200, r.text
        return r.json()["predictions"][0]

    assert served() == 1.0
    # Another replica moves the alias while this one cannot read the aliases (the table is
    # away): the rebuild fails and the last snapshot keeps serving ...
    write_as_other_replica(srv, "registry", (
        "UPDATE model_aliases SET version = 2 WHERE alias = 'champion'"
        " AND model_id = (SELECT id FROM models WHERE name = 'm')", ()),
        ("ALTER TABLE model_aliases RENAME TO model_aliases_away", ()))
    wait_for(lambda: metrics(srv).get("basalt_snapshot_rebuilds_total", result="error") >= 1,
             "the failing rebuild never ran")
    assert served() == 1.0
    # ... and the rebuild is retried at the next polls, with no new write to prompt it
    c = db(srv)
    try:
        c.execute("ALTER TABLE model_aliases_away RENAME TO model_aliases")
    finally:
        c.close()
    wait_for(lambda: served() == 2.0, "the moved alias was not served")
    assert srv.get("/v1/models/m").json()["aliases"]["champion"] == 2


def test_info_and_metrics_show_the_snapshot(start_server):
    srv = start_server("--replica-id", "replica-a")  # default poll: a 1 s interval
    i = info(srv)
    assert i["replica_id"] == "replica-a"
    assert i["backends"]["metadata"] == "sqlite"
    snap = i["snapshot"]
    assert isinstance(snap["age_ms"], int) and snap["age_ms"] >= 0
    assert snap["generation"] == snap["scopes"]["auth"] + snap["scopes"]["registry"]
    r = srv.post("/v1/models", json={"name": "g"})
    assert r.status_code == 201, r.text
    polls = metrics(srv).get("basalt_change_polls_total", result="ok")
    after = info(srv)["snapshot"]  # the write's own rebuild: no poll needed
    assert after["scopes"]["registry"] == snap["scopes"]["registry"] + 1
    assert after["generation"] == snap["generation"] + 1
    c = db(srv)
    try:
        stored = dict(c.execute("SELECT scope, generation FROM generations").fetchall())
    finally:
        c.close()
    assert after["scopes"] == {"auth": stored["auth"], "registry": stored["registry"]}
    m = metrics(srv)
    assert m.get("basalt_snapshot_generation") == after["generation"]
    assert m.get("basalt_snapshot_age_seconds") >= 0
    assert m.get("basalt_metadata_reachable") == 1
    assert lease_held(m, "artifact-gc") == 1
    # a poll that read the write's generation did not rebuild again for it
    wait_for(lambda: metrics(srv).get("basalt_change_polls_total", result="ok") > polls,
             "no change poll ran")
    m = metrics(srv)
    assert m.get("basalt_snapshot_rebuilds_total", result="ok") == 0
    assert m.get("basalt_snapshot_generation") == after["generation"]


def test_replica_id_defaults_to_hostname_pid(server):
    assert info(server)["replica_id"] == "%s-%d" % (socket.gethostname()[:63], server.proc.pid)


def test_readyz_follows_the_store(start_server):
    srv = start_server(*POLL)
    r = srv.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["metadata"] == "ok"
    create_model(srv, "p")
    upload_ok(srv, "p", linear_bytes([1.0, 1.0], 0.0), "basalt_json")
    approve(srv, "p", 1)
    c = db(srv)
    try:
        # what the watcher polls disappears: the store looks unreachable to it
        c.execute("ALTER TABLE generations RENAME TO generations_away")
        wait_for(lambda: srv.get("/readyz").status_code == 503, "/readyz stayed 200")
        body = srv.get("/readyz").json()
        assert body["status"] == "not_ready"
        assert body["checks"]["metadata"] == "unavailable"
        assert body["checks"]["metadata_store"] == "ok" and body["checks"]["accepting"] is True
        assert metrics(srv).get("basalt_metadata_reachable") == 0
        # predictions keep coming from the snapshot
        r = predict(srv, "p", {"inputs": {"a": 1, "b": 2}}, version=1)
        assert r.status_code == 200 and r.json()["predictions"] == [3.0], r.text
        c.execute("ALTER TABLE generations_away RENAME TO generations")
    finally:
        c.close()
    wait_for(lambda: srv.get("/readyz").status_code == 200, "/readyz did not recover")
    assert srv.get("/readyz").json()["checks"]["metadata"] == "ok"
    assert metrics(srv).get("basalt_change_polls_total", result="error") >= 1


def test_artifact_gc_runs_only_under_its_lease(start_server):
    srv = start_server("--artifact-gc-grace-seconds", "1", "--replica-id", "gc-a")
    wait_for(lambda: lease_held(metrics(srv), "artifact-gc") == 1,
             "the server never took the artifact-gc lease")
    # another replica takes the lease over (as if this one had stalled past its expiry)
    c = db(srv)
    try:
        c.execute("UPDATE leases SET owner = 'gc-b', token = token + 1,"
                  " expires_at = 9000000000000 WHERE name = 'artifact-gc'")
        stolen = c.execute("SELECT token FROM leases WHERE name = 'artifact-gc'").fetchone()[0]
    finally:
        c.close()
    wait_for(lambda: lease_held(metrics(srv), "artifact-gc") == 0,
             "the server kept the lease it lost")
    adir = os.path.join(srv.data_dir, "artifacts")
    orphan = b"never committed, collected by the lease holder only"
    sha = hashlib.sha256(orphan).hexdigest()
    os.makedirs(os.path.join(adir, sha[:2]), exist_ok=True)
    path = os.path.join(adir, sha[:2], sha)
    with open(path, "wb") as f:
        f.write(orphan)
    old = time.time() - 3600
    os.utime(path, (old, old))
    time.sleep(2.5)  # over two collection periods: the file stays while gc-b holds the lease
    assert os.path.exists(path)
    c = db(srv)
    try:
        c.execute("UPDATE leases SET expires_at = 0 WHERE name = 'artifact-gc'")  # gc-b ends
    finally:
        c.close()
    wait_for(lambda: not os.path.exists(path), "the orphan was never collected")
    assert lease_held(metrics(srv), "artifact-gc") == 1
    c = db(srv)
    try:
        owner, token = c.execute(
            "SELECT owner, token FROM leases WHERE name = 'artifact-gc'").fetchone()
    finally:
        c.close()
    assert owner == "gc-a" and token > stolen
    assert srv.stop() == 0
    c = db(srv)
    try:  # released at shutdown: another replica need not wait for it to expire
        assert c.execute("SELECT expires_at FROM leases WHERE name = 'artifact-gc'"
                         ).fetchone()[0] == 0
    finally:
        c.close()
