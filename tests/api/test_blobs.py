"""Artifacts in the metadata store (`--artifact-store metadata`): uploads are stored as
1 MiB chunks in the store and cached under <data>/artifacts; predictions survive the loss of
the cache (fetched from the store and verified), a damaged cache file is fetched again, a
damaged stored blob is a 503 naming its checksum, a kill -9 in the middle of a big upload
leaves no version and no readable partial blob, and unreferenced blobs leave the store and
the cache after the grace period. The oracles are the uploaded bytes themselves (sha256,
chunk contents read from the SQLite file) and the predictions of hand-written models."""
import hashlib
import os
import shutil
import sqlite3
import threading
import time

import pytest
import requests

from conftest import ServerStartError
from modelkit import (approve, artifact_files, assert_error, create_model, damage_stored_blob,

                      linear_doc, predict, publish, stored_blob, upload, upload_ok, versions)

# Inspects and damages the SQLite file and the artifact store inside it; on PostgreSQL the
# metadata store is exercised by the whole suite and by test_replicas.py.
pytestmark = pytest.mark.embedded

CHUNK = 1024 * 1024
MD = ("--artifact-store", "metadata")


def padded_linear(coef, intercept, size):
    """A linear model's JSON, padded with whitespace inside its object to `size` bytes:
    as many chunks as wanted while parsing stays quick."""
    import json
    body = json.dumps(linear_doc(coef, intercept)).encode()
    assert len(body) < size
    return b"{" + b" " * (size - len(body)) + body[1:]


def sha(b):
    return hashlib.sha256(b).hexdigest()


def cache_path(srv, digest):
    return os.path.join(srv.data_dir, "artifacts", digest[:2], digest)


def wait_for(pred, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def assert_stored(srv, art):
    """The store holds art as a complete blob of ceil(len/1 MiB) chunks, byte for byte."""
    rec, chunks = stored_blob(srv, sha(art))
    assert rec == {"size": len(art), "chunks": (len(art) + CHUNK - 1) // CHUNK, "complete": 1}
    assert len(chunks) == rec["chunks"] and all(len(c) <= CHUNK for c in chunks)
    assert b"".join(chunks) == art


def cache_metrics(srv):
    m = srv.metrics()
    return {k: m.get("basalt_artifact_" + k) for k in
            ("cache_hits_total", "cache_misses_total", "cache_discards_total",
             "fetched_bytes_total")}


def test_setting_and_info(start_server, run_basalt, tmp_path):
    srv = start_server(*MD)
    assert srv.get("/v1/info").json()["backends"]["artifacts"] == "metadata"
    files = start_server("--artifact-store", "files")
    assert files.get("/v1/info").json()["backends"]["artifacts"] == "filesystem"
    cp = run_basalt("serve", "--data", str(tmp_path / "d"), "--listen", "127.0.0.1:0",
                    "--artifact-store", "s3")
    assert cp.returncode == 2 and "artifact_store" in cp.stderr and "s3" in cp.stderr


def test_upload_approve_predict_then_lost_cache_is_fetched(start_server):
    srv = start_server(*MD)
    art = padded_linear([1.0, 2.0], 3.0, 2 * CHUNK + 17)  # three chunks, the last short
    publish(srv, "m", art, "basalt_json")
    r = predict(srv, "m", {"inputs": {"a": 1, "b": 1}})
    assert r.status_code == 200 and r.json()["predictions"] == [6.0], r.text
    assert_stored(srv, art)
    with open(cache_path(srv, sha(art)), "rb") as f:  # the uploading replica caches it
        assert f.read() == art
    # Another replica's view: no local file at all.
    srv.stop()
    shutil.rmtree(os.path.join(srv.data_dir, "artifacts"))
    srv.restart()
    r = predict(srv, "m", {"inputs": {"a": 2, "b": 0}})
    assert r.status_code == 200 and r.json()["predictions"] == [5.0], r.text
    with open(cache_path(srv, sha(art)), "rb") as f:  # fetched, verified, cached again
        assert f.read() == art
    assert cache_metrics(srv) == {"cache_hits_total": 0, "cache_misses_total": 1,
                                  "cache_discards_total": 0, "fetched_bytes_total": len(art)}
    r = srv.get("/v1/models/m/versions/1/artifact")
    assert r.status_code == 200 and r.content == art
    assert cache_metrics(srv)["cache_hits_total"] == 1


def test_damaged_cache_file_is_fetched_again(start_server):
    srv = start_server(*MD)
    art = padded_linear([4.0, 5.0], 6.0, CHUNK + 1)
    publish(srv, "m", art, "basalt_json")
    path = cache_path(srv, sha(art))
    with open(path, "r+b") as f:
        f.seek(CHUNK)
        f.write(b"#")
    r = srv.get("/v1/models/m/versions/1/artifact")  # a load through the blob store
    assert r.status_code == 200 and r.content == art
    with open(path, "rb") as f:
        assert f.read() == art
    assert cache_metrics(srv) == {"cache_hits_total": 0, "cache_misses_total": 1,
                                  "cache_discards_total": 1, "fetched_bytes_total": len(art)}
    # Truncated, then served by a fresh process (the load of the model reads it).
    srv.stop()
    with open(path, "r+b") as f:
        f.truncate(100)
    srv.restart()
    r = predict(srv, "m", {"inputs": {"a": 1, "b": 1}})
    assert r.status_code == 200 and r.json()["predictions"] == [15.0], r.text
    assert os.path.getsize(path) == len(art)
    assert cache_metrics(srv)["cache_discards_total"] == 1
    deadline = time.monotonic() + 30  # the log is written by a background thread
    while "fetching it again" not in srv.stderr() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "fetching it again" in srv.stderr()


def test_damaged_stored_blob_is_503_naming_it(start_server):
    srv = start_server(*MD)
    art = padded_linear([1.0, 1.0], 0.0, 2 * CHUNK)
    publish(srv, "m", art, "basalt_json")
    srv.stop()
    damage_stored_blob(srv, sha(art), seq=1, offset=10)
    os.unlink(cache_path(srv, sha(art)))
    srv.restart()
    r = predict(srv, "m", {"inputs": {"a": 1, "b": 1}})
    assert_error(r, 503, mentions="checksum")
    assert sha(art) in r.json()["error"]["message"]
    assert not os.path.exists(cache_path(srv, sha(art)))  # nothing wrong is cached
    assert srv.get("/healthz").status_code == 200


def test_same_bytes_twice_are_one_blob(start_server):
    srv = start_server(*MD)
    art = padded_linear([1.0, 1.0], 1.0, CHUNK + 5)
    create_model(srv, "a")
    create_model(srv, "b")
    upload_ok(srv, "a", art, "basalt_json")
    upload_ok(srv, "b", art, "basalt_json")
    upload_ok(srv, "a", art, "basalt_json")
    con = sqlite3.connect(os.path.join(srv.data_dir, "basalt.db"), timeout=30)
    try:
        assert con.execute("SELECT COUNT(*) FROM blobs").fetchone() == (1,)
        assert con.execute("SELECT COUNT(*) FROM blob_chunks").fetchone() == (2,)
    finally:
        con.close()
    assert artifact_files(srv) == [cache_path(srv, sha(art))]


def test_unreferenced_blobs_leave_store_and_cache_after_grace(start_server):
    srv = start_server(*MD, "--artifact-gc-grace-seconds", "1")
    shared = padded_linear([1.0, 2.0], 3.0, CHUNK + 3)
    only_a = padded_linear([4.0, 5.0], 6.0, CHUNK + 4)
    create_model(srv, "a")
    create_model(srv, "b")
    upload_ok(srv, "a", shared, "basalt_json")
    upload_ok(srv, "a", only_a, "basalt_json")
    upload_ok(srv, "b", shared, "basalt_json")
    assert srv.delete("/v1/models/a").status_code == 204
    wait_for(lambda: stored_blob(srv, sha(only_a)) == (None, []), "only_a stayed in the store")
    wait_for(lambda: artifact_files(srv) == [cache_path(srv, sha(shared))], artifact_files(srv))
    assert_stored(srv, shared)
    r = predict(srv, "b", {"inputs": {"a": 1, "b": 1}}, version=1)
    assert r.status_code == 200 and r.json()["predictions"] == [6.0], r.text
    # Uploaded again after its collection: stored again.
    create_model(srv, "c")
    upload_ok(srv, "c", only_a, "basalt_json")
    assert_stored(srv, only_a)
    r = predict(srv, "c", {"inputs": {"a": 1, "b": 1}}, version=1)
    assert r.status_code == 200 and r.json()["predictions"] == [15.0], r.text


def _partial(con, digest):
    """(complete flag, chunk count) of blob digest, or None when it has no row."""
    row = con.execute("SELECT complete FROM blobs WHERE sha256 = ?", (digest,)).fetchone()
    if row is None:
        return None
    (n,) = con.execute("SELECT COUNT(*) FROM blob_chunks WHERE sha256 = ?", (digest,)).fetchone()
    return row[0], n


def _kill_mid_upload(srv, art):
    """Uploads art and kill -9s the server once some of its chunks, but not all, are
    committed. Each look takes the store's write lock for a moment, so the server writes
    at most one chunk between two looks. Returns the chunk count seen, or None if the
    upload finished before a look caught it."""
    digest = sha(art)
    result = {}

    def send():
        try:
            result["r"] = upload(srv, "big", art, "basalt_json")
        except requests.RequestException as e:
            result["e"] = e

    t = threading.Thread(target=send)
    con = sqlite3.connect(os.path.join(srv.data_dir, "basalt.db"), timeout=30,
                          isolation_level=None)
    seen = None
    try:
        t.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            con.execute("BEGIN IMMEDIATE")
            state = _partial(con, digest)
            if state and state[0] == 0 and state[1] > 0:
                srv.kill9()  # while this process holds the lock: no further chunk lands
                con.execute("ROLLBACK")
                seen = state[1]
                break
            con.execute("COMMIT")
            if state and state[0] == 1 or not t.is_alive():
                break
            time.sleep(0.001)
    finally:
        con.close()
        t.join(60)
    return seen


def test_kill9_during_big_upload_leaves_no_version_and_no_readable_blob(start_server):
    n_chunks = 12
    for attempt in range(4):
        srv = start_server(*MD, "--max-body-bytes", "64MiB", "--artifact-gc-grace-seconds", "2")
        create_model(srv, "big")
        art = padded_linear([1.0, 1.0], float(attempt), n_chunks * CHUNK - 1000)
        seen = _kill_mid_upload(srv, art)
        if seen is None:
            continue
        assert 0 < seen < n_chunks
        rec, chunks = stored_blob(srv, sha(art))
        assert rec["complete"] == 0 and len(chunks) == seen
        assert not os.path.exists(cache_path(srv, sha(art)))
        srv.restart()
        assert versions(srv, "big") == []
        # The unfinished blob is collected after the grace period ...
        wait_for(lambda: stored_blob(srv, sha(art)) == (None, []), "the partial blob stayed")
        # ... and the same upload afterwards makes a whole version that serves.
        v = upload_ok(srv, "big", art, "basalt_json")
        assert v["version"] == 1 and v["sha256"] == sha(art)
        approve(srv, "big", 1)
        assert_stored(srv, art)
        srv.stop()
        os.unlink(cache_path(srv, sha(art)))
        srv.restart()
        r = predict(srv, "big", {"inputs": {"a": 1, "b": 1}})
        assert r.status_code == 200 and r.json()["predictions"] == [2.0 + attempt], r.text
        return
    pytest.fail("no attempt caught the upload between two chunks")


def test_files_store_layout_is_unchanged(start_server):
    """The default store: one file per artifact at artifacts/ab/<sha256>, nothing in the
    metadata store's blob tables."""
    srv = start_server("--artifact-store", "files")
    art = padded_linear([1.0, 1.0], 0.0, CHUNK + 9)
    publish(srv, "m", art, "basalt_json")
    assert artifact_files(srv) == [cache_path(srv, sha(art))]
    assert stored_blob(srv, sha(art)) == (None, [])
    r = predict(srv, "m", {"inputs": {"a": 1, "b": 1}})
    assert r.status_code == 200 and r.json()["predictions"] == [2.0], r.text
    assert cache_metrics(srv) == {"cache_hits_total": 0, "cache_misses_total": 0,
                                  "cache_discards_total": 0, "fetched_bytes_total": 0}
