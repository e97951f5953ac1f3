"""Routes that wait on the metadata store run on the store workers, never on an I/O thread.

The oracle is a store that blocks: an external SQLite connection holds the write lock on
<data>/basalt.db, so the server's first write waits in SQLite's busy timeout while holding the
store's lock, and every other store access (reads included) waits behind it. With one I/O
thread, /healthz and a predict of a loaded model must still answer while such requests are
pending — the gauges basalt_http_store_running_requests / _queued_requests show that they are
— and once the lock is released the pending requests complete with the right results.
Also: clients that go away while their request waits (HTTP/2 and HTTP/1; ASan checks the
server), a full queue (503 overloaded with Retry-After), and the error envelope, request id,
access log and metrics of offloaded routes.

Time appears only as "did not hang" bounds of polling loops, never in an assertion. The
external lock is released well within SQLite's 5 s busy timeout of the server."""
import pytest
import os
import re
import socket
import sqlite3
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from conftest import REQUEST_TIMEOUT, parse_metrics, source_routes
from modelkit import assert_error, linear_bytes, publish

HANG_GUARD = 20.0  # seconds; the conditions polled for hold within milliseconds


def gauges(srv):
    m = srv.metrics()
    return {k: m.get("basalt_http_" + k) for k in
            ("store_running_requests", "store_queued_requests", "store_rejections_total",
             "in_flight_requests", "store_workers")}


def wait_for(pred, what, timeout=HANG_GUARD):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


class StoreLock:
    """Holds SQLite's write lock on the server's database from another connection."""

    def __init__(self, srv):
        self.con = sqlite3.connect(os.path.join(srv.data_dir, "basalt.db"), timeout=10,
                                   isolation_level=None)
        self.con.execute("BEGIN IMMEDIATE")

    def release(self):
        if self.con:
            self.con.execute("ROLLBACK")
            self.con.close()
            self.con = None


def call(srv, method, path, key=None, **kw):
    """One request on its own connection (requests.Session is not thread-safe)."""
    h = kw.pop("headers", {})
    h["Authorization"] = "Bearer " + (key or srv.admin_key)
    return requests.request(method, srv.url + path, headers=h, timeout=REQUEST_TIMEOUT, **kw)


@pytest.mark.embedded  # holds the SQLite write lock
def test_store_wait_does_not_block_the_io_thread(start_server):
    srv = start_server("--threads", "1")
    publish(srv, "lin", linear_bytes([2.0, 3.0], 1.0))
    body = {"inputs": {"a": 1.0, "b": 2.0}}
    r = srv.post("/v1/models/lin/predict", json=body)  # loads it
    assert r.status_code == 200 and r.json()["predictions"] == [9.0], r.text
    assert gauges(srv)["store_workers"] == 8  # the default store_threads

    lock = StoreLock(srv)
    try:
        with ThreadPoolExecutor(5) as ex:
            # A write first: it waits in SQLite's busy timeout holding the store's lock...
            tenant = ex.submit(call, srv, "POST", "/v1/tenants", json={"name": "acme"})
            wait_for(lambda: gauges(srv)["store_running_requests"] == 1,
                     "POST /v1/tenants should be running on a store worker")
            # ...so these wait too: the reads behind the lock, the other write.
            keys = ex.submit(call, srv, "GET", "/v1/keys")
            models = ex.submit(call, srv, "GET", "/v1/models")
            newkey = ex.submit(call, srv, "POST", "/v1/keys",
                               json={"name": "later", "role": "viewer"})
            newmodel = ex.submit(call, srv, "POST", "/v1/models", json={"name": "m2"})
            wait_for(lambda: gauges(srv)["store_running_requests"] == 5,
                     "the five store requests should all be waiting on workers")
            # The single I/O thread still serves: liveness, a prediction, the v2 protocol.
            assert requests.get(srv.url + "/healthz", timeout=REQUEST_TIMEOUT).status_code == 200
            r = srv.post("/v1/models/lin/predict", json=body)
            assert r.status_code == 200 and r.json()["predictions"] == [9.0], r.text
            r = srv.post("/v2/models/lin/infer", json={"inputs": [
                {"name": "a", "datatype": "FP64", "shape": [1], "data": [1.0]},
                {"name": "b", "datatype": "FP64", "shape": [1], "data": [2.0]}]})
            assert r.status_code == 200, r.text
            g = gauges(srv)
            assert g["store_running_requests"] == 5, g  # still pending all along
            assert not any(f.done() for f in (tenant, keys, models, newkey, newmodel))
            lock.release()
            rt, rk, rm, rn, rmm = (f.result() for f in (tenant, keys, models, newkey, newmodel))
    finally:
        lock.release()
    assert rt.status_code == 201 and rt.json()["name"] == "acme", rt.text
    assert rk.status_code == 200, rk.text
    names = [k["name"] for k in rk.json()["items"]]  # the new key may be listed or not yet
    assert "bootstrap-admin" in names and set(names) <= {"bootstrap-admin", "later"}, names
    assert rm.status_code == 200, rm.text
    assert [m["name"] for m in rm.json()["items"]] in (["lin"], ["lin", "m2"]), rm.text
    assert rmm.status_code == 201 and rmm.json()["name"] == "m2", rmm.text
    assert rn.status_code == 201, rn.text
    # The key made on a worker authenticates (its snapshot was rebuilt before the answer).
    r = srv.get("/v1/models/lin", key=rn.json()["key"])
    assert r.status_code == 200 and r.json()["name"] == "lin", r.text
    r = srv.get("/v1/tenants")
    assert "acme" in [t["name"] for t in r.json()["items"]], r.text
    # (A worker answers before it counts itself idle: wait for the gauges, not assert.)
    wait_for(lambda: (lambda g: g["store_running_requests"] == 0
                      and g["store_queued_requests"] == 0)(gauges(srv)), "workers idle again")


# ---- HTTP/2 by hand: a client that sends one request and can vanish -------------------------

def _frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _literal(name, value):
    """HPACK literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2)."""
    name, value = name.encode(), value.encode()
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def h2_request(srv, method, path, body=None):
    """Opens a prior-knowledge HTTP/2 connection and sends one request on stream 1 (HEADERS,
    then DATA when there is a body; END_STREAM on the last)."""
    s = socket.create_connection((srv.host, srv.port), timeout=REQUEST_TIMEOUT)
    fields = [(":method", method), (":scheme", "http"), (":path", path),
              (":authority", "basalt"), ("authorization", "Bearer " + srv.admin_key)]
    if body is not None:
        fields.append(("content-type", "application/json"))
    block = b"".join(_literal(k, v) for k, v in fields)
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(0x4, 0, 0, b"")
    if body is None:
        out += _frame(0x1, 0x5, 1, block)  # END_STREAM | END_HEADERS
    else:
        out += _frame(0x1, 0x4, 1, block) + _frame(0x0, 0x1, 1, body)
    s.sendall(out)
    return s


def h2_get(srv, path):
    return h2_request(srv, "GET", path)


@pytest.mark.embedded  # holds the SQLite write lock
def test_clients_gone_while_their_requests_wait(start_server):
    """HTTP/2 clients vanish while their requests wait, a GET /v1/keys on a worker, another and
    a POST /v1/tenants in the queue: h2o disposes of the requests (in-flight drops) before the
    workers are done with them; the worker's late answer is dropped, the queued jobs are not
    run (the tenant is never created), nothing is used after it was freed (the sanitizer build
    checks), and the server keeps serving. An HTTP/1 client that closes its socket meanwhile is
    answered into the void."""
    srv = start_server("--threads", "1", "--h2c", "--store-threads", "2")
    lock = StoreLock(srv)
    try:
        with ThreadPoolExecutor(1) as ex:
            tenant = ex.submit(call, srv, "POST", "/v1/tenants", json={"name": "acme"})
            wait_for(lambda: gauges(srv)["store_running_requests"] == 1, "tenant write running")
            before = gauges(srv)["in_flight_requests"]
            h2a = h2_get(srv, "/v1/keys")
            wait_for(lambda: gauges(srv)["store_running_requests"] == 2, "first GET on a worker")
            h2b = h2_get(srv, "/v1/keys")
            wait_for(lambda: gauges(srv)["store_queued_requests"] == 1, "second GET queued")
            h1 = socket.create_connection((srv.host, srv.port), timeout=REQUEST_TIMEOUT)
            h1.sendall(("GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
                        % srv.admin_key).encode())
            wait_for(lambda: gauges(srv)["store_queued_requests"] == 2, "HTTP/1 GET queued")
            ghost = h2_request(srv, "POST", "/v1/tenants", b'{"name": "ghost"}')
            wait_for(lambda: gauges(srv)["store_queued_requests"] == 3, "HTTP/2 POST queued")
            assert gauges(srv)["in_flight_requests"] == before + 4
            h2a.close()
            h2b.close()
            ghost.close()
            wait_for(lambda: gauges(srv)["in_flight_requests"] == before + 1,
                     "h2o should dispose of the HTTP/2 requests when their connections close")
            h1.close()
            g = gauges(srv)
            assert g["store_running_requests"] == 2 and g["store_queued_requests"] == 3, g
            lock.release()
            r = tenant.result()
    finally:
        lock.release()
    assert r.status_code == 201, r.text
    wait_for(lambda: (lambda g: g["store_running_requests"] == 0
                      and g["store_queued_requests"] == 0)(gauges(srv)), "workers idle again")
    assert requests.get(srv.url + "/healthz", timeout=REQUEST_TIMEOUT).status_code == 200
    r = srv.get("/v1/keys")
    assert r.status_code == 200 and len(r.json()["items"]) == 1, r.text
    # The write whose client left before a worker took it was not run.
    r = srv.get("/v1/tenants")
    assert r.status_code == 200 and [t["name"] for t in r.json()["items"]] == ["acme", "default"], r.text


@pytest.mark.embedded  # holds the SQLite write lock
def test_full_store_queue_answers_503_overloaded(start_server):
    srv = start_server("--threads", "1", "--store-threads", "1", "--store-queue", "2")
    lock = StoreLock(srv)
    try:
        with ThreadPoolExecutor(3) as ex:
            tenant = ex.submit(call, srv, "POST", "/v1/tenants", json={"name": "acme"})
            wait_for(lambda: gauges(srv)["store_running_requests"] == 1, "tenant write running")
            waiting = [ex.submit(call, srv, "GET", p) for p in ("/v1/keys", "/v1/audit")]
            wait_for(lambda: gauges(srv)["store_queued_requests"] == 2, "two requests queued")
            for path in ("/v1/keys", "/v1/models/lin", "/v1/runs"):
                r = srv.get(path, headers={"X-Request-Id": "full-queue-1"})
                e = assert_error(r, 503, code="overloaded", mentions="store_queue")
                assert r.headers.get("Retry-After") == "1", r.headers
                assert r.json()["request_id"] == "full-queue-1"
            r = srv.post("/v1/keys", json={"name": "x", "role": "viewer"})
            assert_error(r, 503, code="overloaded")
            # Routes that do not wait on the store are not affected.
            assert requests.get(srv.url + "/healthz", timeout=REQUEST_TIMEOUT).status_code == 200
            assert srv.get("/v1/info").status_code == 200
            assert gauges(srv)["store_rejections_total"] == 4
            lock.release()
            results = [f.result() for f in [tenant] + waiting]
    finally:
        lock.release()
    assert [r.status_code for r in results] == [201, 200, 200], [r.text for r in results]
    m = srv.metrics()
    assert m.get("basalt_http_requests_total", route="/v1/keys", method="GET", status="503") == 1
    assert m.get("basalt_http_requests_total", route="/v1/keys", method="GET", status="200") == 1
    assert m.get("basalt_http_errors_total", code="overloaded") == 4
    assert e["message"]


def test_offloaded_errors_request_ids_logs_and_metrics(server):
    srv = server
    # Errors rendered for a worker's handler: envelope, field, request id (given or made).
    r = srv.get("/v1/models/nope", headers={"X-Request-Id": "offload-404"})
    assert_error(r, 404, field="name", code="not_found", mentions="nope")
    assert r.json()["request_id"] == "offload-404" and r.headers["X-Request-Id"] == "offload-404"
    r = srv.get("/v1/models/nope/versions/3")
    assert_error(r, 404, code="not_found")
    assert re.match(r"^[0-9a-f-]{36}$", r.headers["X-Request-Id"]), r.headers
    assert_error(srv.get("/v1/keys?limit=0"), 400, field="limit")
    assert_error(srv.get("/v1/models/x/versions?status=nope"), 400, field="status")
    assert_error(srv.get("/v1/models/x/versions/01"), 400, field="version")
    assert_error(srv.post("/v1/keys", data=b'{"name": "a", "role": "viewer"}',
                          headers={"Content-Type": "text/plain"}), 415, code="unsupported_media_type")
    assert_error(srv.post("/v1/keys", data=b'{"name": ', headers={"Content-Type": "application/json"}),
                 400)
    assert_error(srv.post("/v1/tenants", json=["acme"]), 400, code="invalid_input")
    # Query and path parameters decoded on the I/O thread reach the worker intact.
    srv.post("/v1/tenants", json={"name": "t-1"})
    k = srv.create_key("viewer", name="for t-1", tenant="t-1")
    r = srv.get("/v1/keys?tenant=t%2D1&limit=1")
    assert r.status_code == 200 and [x["id"] for x in r.json()["items"]] == [k["id"]], r.text
    # 204 from a worker: no body, no content type.
    r = srv.delete("/v1/keys/" + k["id"])
    assert r.status_code == 204 and r.content == b"" and "Content-Type" not in r.headers, r.headers
    assert_error(srv.delete("/v1/keys/" + k["id"]), 404)
    # A key deleted on a worker stops working at once.
    assert srv.get("/v1/info", key=k["key"]).status_code == 401
    # HEAD of an offloaded GET: the headers without the body.
    r = srv.request("HEAD", "/v1/keys")
    assert r.status_code == 200 and r.content == b"", r.headers
    # Access log and per-route metrics are those of the route.
    wait_for(lambda: '"request_id":"offload-404"' in srv.stderr(), "access log line")
    line = [l for l in srv.stderr().splitlines() if '"request_id":"offload-404"' in l][0]
    assert '"route":"/v1/models/{name}"' in line and '"status":404' in line, line
    m = srv.metrics()
    assert m.get("basalt_http_requests_total", route="/v1/models/{name}", method="GET",
                 status="404") == 1
    assert m.get("basalt_http_requests_total", route="/v1/keys/{id}", method="DELETE",
                 status="204") == 1
    assert m.get("basalt_http_request_duration_seconds_count", route="/v1/keys/{id}",
                 method="DELETE") == 2
    assert m.get("basalt_http_errors_total", code="unsupported_media_type") == 1


def test_route_table_marks_every_store_route_blocking():
    """The source's route table: handlers that run SQL are BS_ROUTE_BLOCKING (uploads and
    artifact reads offload themselves, models.c's jobs); predict, infer and the system routes
    stay inline."""
    text = ""
    api = os.path.join(os.path.dirname(__file__), "..", "..", "src", "api")
    for name in sorted(os.listdir(api)):
        if name == "routes.c" or (name.startswith("routes") and name.endswith(".inc")):
            with open(os.path.join(api, name)) as f:
                text += f.read().replace("\\\n", " ")
    starts = list(re.finditer(r'\{\s*"(?:GET|POST|PUT|PATCH|DELETE)"\s*,\s*"[^"]*"\s*,\s*(\w+)', text))
    marks = {}
    for i, m in enumerate(starts):
        entry = text[m.end():starts[i + 1].start() if i + 1 < len(starts) else len(text)]
        marks[m.group(1)] = re.search(r"BS_ROUTE_\w+", entry).group(0)
    # RESOURCE_ROUTES (api_int.h): the generic resource handlers, all on store workers
    if re.search(r'RESOURCE_ROUTES\(\s*"', text):
        for h in ("bs__api_resource_put", "bs__api_resource_list", "bs__api_resource_get",
                  "bs__api_resource_delete"):
            marks[h] = "BS_ROUTE_BLOCKING"
    handlers = {h for _, _, h, _ in source_routes()}
    assert set(marks) == handlers, handlers ^ set(marks)
    blocking = {h for h, m in marks.items() if m == "BS_ROUTE_BLOCKING"}
    assert blocking == {
        "bs__api_keys_create", "bs__api_keys_list", "bs__api_keys_delete",
        "bs__api_tenants_create", "bs__api_tenants_list", "bs__api_models_list",
        "bs__api_models_get", "bs__api_versions_list", "bs__api_versions_get",
        "bs__api_runs_list", "bs__api_runs_get", "bs__api_audit_list",
        # registry writes
        "bs__api_models_create", "bs__api_models_update", "bs__api_models_delete",
        "bs__api_versions_approve", "bs__api_versions_reject", "bs__api_versions_archive",
        "bs__api_alias_set", "bs__api_alias_delete", "bs__api_runs_create",
        "bs__api_runs_update", "bs__api_runs_metrics",
        # declarative resources (their validate/applied hooks write the store and the log)
        "bs__api_resource_put", "bs__api_resource_list", "bs__api_resource_get",
        "bs__api_resource_delete",
        # topics: everything that may wait on the log or the store
        "bs__api_topic_read", "bs__api_topic_replay", "bs__api_consumer_put",
        "bs__api_consumer_get", "bs__api_consumer_list", "bs__api_consumer_delete",
        "bs__api_consumer_ack", "bs__api_consumer_nack", "bs__api_consumer_in_progress",
        # jobs: the jobs table
        "bs__api_jobs_list", "bs__api_jobs_create", "bs__api_jobs_get", "bs__api_jobs_cancel",
        "bs__api_jobs_retry", "bs__api_job_kinds",
        # webhook secrets, tests and the delivery log
        "bs__api_webhook_secret", "bs__api_webhook_test", "bs__api_webhook_deliveries_list",
        "bs__api_webhook_delivery_get", "bs__api_webhook_delivery_replay",
        # endpoints: revisions and rollback (the store), the prediction log's reads (the
        # log), feedback (a durable append), the reports (scans of the monitor's table),
        # rollouts (the rollouts table)
        "bs__api_endpoint_revisions", "bs__api_endpoint_rollback", "bs__api_predictions_list",
        "bs__api_feedback", "bs__api_endpoint_performance", "bs__api_endpoint_experiment",
        "bs__api_endpoint_shadow", "bs__api_rollouts_create", "bs__api_rollouts_list",
        "bs__api_rollouts_get", "bs__api_rollouts_pause", "bs__api_rollouts_resume",
        "bs__api_rollouts_abort", "bs__api_rollouts_promote"}, blocking
    # Uploads and artifact reads keep models.c's own jobs (the upload budget is charged
    # before the body is copied): inline handlers that never touch the store themselves.
    assert marks["bs__api_versions_create"] == marks["bs__api_versions_artifact"] == "BS_ROUTE_INLINE"
    for h in ("bs__api_predict", "bs__api_predict_version", "bs__api_v2_infer", "bs__api_healthz",
              "bs__api_readyz", "bs__api_metrics", "bs__api_info", "bs__api_openapi",
              "bs__api_docs", "bs__api_kinds_list",
              # publish and fetch defer and answer from the log's callbacks
              "bs__api_topic_publish", "bs__api_consumer_fetch",
              # endpoint predict is model predict's hot path
              "bs__api_endpoint_predict"):
        assert marks[h] == "BS_ROUTE_INLINE", h
