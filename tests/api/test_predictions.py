"""The prediction log (issue 10, docs/endpoints-predictions.md): GET
/v1/endpoints/{name}/predictions, `basalt predictions export`, and what the endpoint predict
path logs.

The read route is tested on records in the contract's format published into the tenant's
`predictions` topic (an ordinary topic) and compared with a Python filter over the same
records; then end to end through POST /v1/endpoints/{name}/predict: every row logged once
with its inputs and output equal to the response, sampling (0 logs nothing; 0.5 about half,
a binomial test), kill -9 after the documented bound (drain period + the topic's 1 s sync)
loses nothing, the KServe payload logger's CloudEvents at a real HTTP receiver, a receiver
that is down (predictions all succeed; failures counted), and drops in /metrics when the
buffer is tiny. No timing assertions: every wait is for a condition with a deadline.
"""
import http.server
import json
import os
import socket
import subprocess
import threading
import time
import uuid

import pytest
from scipy import stats

from conftest import BASALT_BIN, BACKEND, clean_env
from modelkit import (UUID_RE, assert_error, create_model, linear_bytes, publish, upload_ok,
                      approve)

WAIT = 30.0
BOUND_S = 0.02 + 1.0  # drain period + the predictions topic's sync interval


def wait_until(cond, timeout=WAIT, what="condition"):
    deadline = time.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000)


def put_endpoint(srv, name, spec):
    r = srv.put("/v1/endpoints/" + name, json=spec)
    assert r.status_code in (200, 201), r.text
    return r.json()


def linear_endpoint(srv, name, **spec):
    """A model `name` (y = 2a - b + 1, version 1 approved) behind endpoint `name`."""
    publish(srv, name, linear_bytes([2.0, -1.0], 1.0, ("a", "b")))
    body = {"model": name, "routes": [{"version": 1, "weight": 100}]}
    body.update(spec)
    return put_endpoint(srv, name, body)


def page(srv, name, **params):
    r = srv.get("/v1/endpoints/%s/predictions" % name, params=params)
    assert r.status_code == 200, r.text
    j = r.json()
    assert set(j) == {"items", "next_cursor"}, j.keys()
    assert j["next_cursor"] is None or isinstance(j["next_cursor"], str)
    return j


def read_all(srv, name, limit=1000, **params):
    out, cursor, pages = [], None, 0
    while True:
        q = dict(params, limit=limit)
        if cursor:
            q["cursor"] = cursor
        j = page(srv, name, **q)
        out += j["items"]
        pages += 1
        cursor = j["next_cursor"]
        if not cursor:
            return out
        assert pages < 10000


def predict(srv, name, body, **kw):
    return srv.post("/v1/endpoints/%s/predict" % name, json=body, **kw)


def metric_value(m, name, **labels):
    """Sum of the samples of `name` whose labels include `labels` (m: srv.metrics())."""
    return sum(v for _, v in m.find(name, **labels))


@pytest.fixture(scope="module")
def srv(shared_server):
    return shared_server


# ---- the read route on published records ---------------------------------------------------

def contract_record(endpoint, i, t, version=1, variant="v1", shadow=False, error=False):
    pid = str(uuid.uuid4())
    rec = {"prediction_id": pid, "request_id": "req-%d" % i, "time": rfc3339(t),
           "endpoint": endpoint, "model": endpoint, "version": version, "variant": variant,
           "shadow": shadow, "latency_ms": 0.01 * (i % 7),
           "inputs": {"a": float(i), "note": "x } ] \" y"}}
    if error:
        rec["error"] = {"code": "invalid_input", "message": "bad"}
        del rec["inputs"]
    else:
        rec["output"] = 2.0 * i + 1
    return rec


def publish_records(srv, recs):
    r = srv.post("/v1/topics/predictions/events", json=recs)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == len(recs), r.text


def test_read_route_filters_and_pages(srv):
    linear_endpoint(srv, "pub-a")
    linear_endpoint(srv, "pub-b")
    # Three batches a few hundred ms apart, each stamped with the time it is published (as
    # the predict path logs within milliseconds), interleaving two endpoints, two versions,
    # routed and shadow runs and an error record.
    batches, bounds = [], []
    for b in range(3):
        bounds.append(time.time())
        t = time.time()
        recs = []
        for i in range(120):
            k = b * 1000 + i
            ep = "pub-a" if i % 3 else "pub-b"
            shadow = i % 5 == 0
            version = 2 if shadow else 1 + (i % 2)
            variant = "shadow" if shadow else "v%d" % version
            recs.append(contract_record(ep, k, t, version, variant, shadow, error=(i == 7)))
        publish_records(srv, recs)
        batches.append(recs)
        time.sleep(0.3)
    everything = [r for b in batches for r in b]

    def want(ep, pred=lambda r: True):
        return [r for r in everything if r["endpoint"] == ep and pred(r)]

    got = read_all(srv, "pub-a")
    assert got == want("pub-a")  # as stored, in log order
    assert read_all(srv, "pub-b") == want("pub-b")
    # Small pages through the cursor give the same records.
    assert read_all(srv, "pub-a", limit=7) == got
    first = page(srv, "pub-a", limit=5)
    assert len(first["items"]) == 5 and first["next_cursor"]
    # Filters.
    assert read_all(srv, "pub-a", version=2) == want("pub-a", lambda r: r["version"] == 2)
    assert read_all(srv, "pub-a", variant="v1") == want("pub-a", lambda r: r["variant"] == "v1")
    assert read_all(srv, "pub-a", shadow="true") == want("pub-a", lambda r: r["shadow"])
    assert read_all(srv, "pub-a", shadow="false") == want("pub-a", lambda r: not r["shadow"])
    assert read_all(srv, "pub-a", version=2, shadow="false") == want(
        "pub-a", lambda r: r["version"] == 2 and not r["shadow"])
    # Time: since/until at the batch boundaries (prediction time, [since, until)).
    since, until = rfc3339(bounds[1]), rfc3339(bounds[2])
    mid = read_all(srv, "pub-b", since=since, until=until)
    assert mid == [r for r in batches[1] if r["endpoint"] == "pub-b"]
    assert read_all(srv, "pub-b", since=since) == [
        r for r in batches[1] + batches[2] if r["endpoint"] == "pub-b"]
    assert read_all(srv, "pub-b", until=since) == [r for r in batches[0]
                                                   if r["endpoint"] == "pub-b"]
    # A duration means that long before now.
    assert read_all(srv, "pub-b", since="1h") == want("pub-b")
    assert read_all(srv, "pub-b", until="1h") == []
    # An endpoint with nothing logged: an empty last page.
    linear_endpoint(srv, "pub-c")
    assert page(srv, "pub-c") == {"items": [], "next_cursor": None}


def test_read_route_errors(srv):
    linear_endpoint(srv, "err-a")
    assert_error(srv.get("/v1/endpoints/nope/predictions"), 404, field="name")
    assert_error(srv.get("/v1/endpoints/NOPE!/predictions"), 400, field="name")
    for q, field in [("since=yesterday", "since"), ("until=-1h", "until"),
                     ("version=0", "version"), ("version=x", "version"),
                     ("shadow=maybe", "shadow"), ("limit=0", "limit"),
                     ("limit=10001", "limit"), ("cursor=abc", "cursor"),
                     ("cursor=-1", "cursor"), ("since=1h&until=2h", "until")]:
        assert_error(srv.get("/v1/endpoints/err-a/predictions?" + q), 400, field=field)
    assert page(srv, "err-a", limit=10000)["items"] == []
    # Another tenant's key sees its own endpoints only.
    r = srv.post("/v1/tenants", json={"name": "other"})
    assert r.status_code in (200, 201), r.text
    k = srv.create_key("viewer", tenant="other")["key"]
    assert_error(srv.get("/v1/endpoints/err-a/predictions", key=k), 404)


# ---- end to end through endpoint predict -----------------------------------------------------

def logged_ids(srv, name):
    return {r["prediction_id"] for r in read_all(srv, name)}


def test_every_prediction_is_logged_as_answered(srv):
    linear_endpoint(srv, "e2e")
    sent = []  # (request id, row, prediction id, prediction, t0, t1)
    for i in range(60):
        rows = [{"a": float(i), "b": float(j) / 4} for j in range(1 + i % 4)]
        body = {"inputs": rows[0] if len(rows) == 1 else rows}
        t0 = time.time()
        r = predict(srv, "e2e", body)
        t1 = time.time()
        assert r.status_code == 200, r.text
        j = r.json()
        assert j["endpoint"] == "e2e" and j["variant"] == "v1"
        for row, pid, pred in zip(rows, j["prediction_ids"], j["predictions"]):
            sent.append((r.headers["X-Request-Id"], row, pid, pred, t0, t1))
    wait_until(lambda: len(logged_ids(srv, "e2e")) >= len(sent), what="records")
    recs = read_all(srv, "e2e")
    assert len(recs) == len(sent)  # once each
    by_id = {r["prediction_id"]: r for r in recs}
    assert len(by_id) == len(recs)
    for rid, row, pid, pred, t0, t1 in sent:
        rec = by_id[pid]
        assert UUID_RE.match(pid)
        assert rec["request_id"] == rid
        assert rec["endpoint"] == "e2e" and rec["model"] == "e2e"
        assert rec["version"] == 1 and rec["variant"] == "v1" and rec["shadow"] is False
        assert rec["inputs"] == row
        assert rec["output"] == pred
        assert "error" not in rec
        assert isinstance(rec["latency_ms"], (int, float)) and rec["latency_ms"] >= 0
        ms = rec["time"]
        t = time.mktime(time.strptime(ms[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        t += int(ms[20:23]) / 1000.0
        assert t0 - 1.0 <= t <= t1 + 1.0  # the same clock, whole-ms resolution
    # Log order within the endpoint is submit order: the prediction ids (UUIDv7) of one
    # request are consecutive.
    order = [r["prediction_id"] for r in recs]
    assert order == [s[2] for s in sent]


def test_bad_input_is_one_error_record(srv):
    linear_endpoint(srv, "e2e-bad")
    r = predict(srv, "e2e-bad", {"inputs": {"a": "not a number", "b": 1}})
    assert r.status_code == 400, r.text
    rid = r.headers["X-Request-Id"]
    rec = wait_until(lambda: [x for x in read_all(srv, "e2e-bad") if x["request_id"] == rid],
                     what="the error record")
    assert len(rec) == 1
    assert UUID_RE.match(rec[0]["prediction_id"])
    assert rec[0]["error"]["code"] == "invalid_input"
    assert "inputs" not in rec[0] and "output" not in rec[0]


def test_sampling_rates(srv):
    linear_endpoint(srv, "samp0", logging={"sample_rate": 0})
    linear_endpoint(srv, "samp5", logging={"sample_rate": 0.5})
    linear_endpoint(srv, "samp1")
    n = 400
    for i in range(n):
        for name in ("samp0", "samp5"):
            r = predict(srv, name, {"inputs": {"a": float(i), "b": 0.0}})
            assert r.status_code == 200, r.text
    # A record submitted after all of them: once it is readable, so is everything before.
    r = predict(srv, "samp1", {"inputs": {"a": 1.0, "b": 0.0}})
    marker = r.json()["prediction_ids"][0]
    wait_until(lambda: marker in logged_ids(srv, "samp1"), what="the marker record")
    assert read_all(srv, "samp0") == []
    k = len(read_all(srv, "samp5"))
    p = stats.binomtest(k, n, 0.5).pvalue
    assert p > 0.001, (k, n, p)
    assert 0 < k < n


def test_kill9_after_the_bound_loses_nothing(start_server):
    s = start_server()
    linear_endpoint(s, "crash")
    ids = []
    for i in range(200):
        r = predict(s, "crash", {"inputs": [{"a": float(i), "b": 1.0}, {"a": 0.5, "b": float(i)}]})
        assert r.status_code == 200, r.text
        ids += r.json()["prediction_ids"]
    time.sleep(BOUND_S + 1.5)  # the documented bound, plus a margin
    s.kill9()
    s.start()
    got = [r["prediction_id"] for r in read_all(s, "crash")]
    assert got == ids


# ---- the KServe payload logger -------------------------------------------------------------

class Receiver:
    """A tiny HTTP server on a free port recording every POST (headers, body)."""

    def __init__(self, status=200):
        self.events = []
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with outer.lock:
                    outer.events.append(({k.lower(): v for k, v in self.headers.items()},
                                         body, self.path))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/log"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def got(self):
        with self.lock:
            return list(self.events)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_kserve_logger_delivers_cloudevents(srv):
    rcv = Receiver()
    try:
        linear_endpoint(srv, "klog", logger={"url": rcv.url(), "mode": "all"})
        sent = []
        for i in range(5):
            raw = json.dumps({"inputs": {"a": float(i), "b": 2.0}}).encode()
            r = srv.post("/v1/endpoints/klog/predict", data=raw,
                         headers={"Content-Type": "application/json"})
            assert r.status_code == 200, r.text
            sent.append((r.headers["X-Request-Id"], raw, r.content))
        wait_until(lambda: len(rcv.got()) >= 2 * len(sent), what="CloudEvents")
        time.sleep(0.3)
        events = rcv.got()
        assert len(events) == 2 * len(sent)
        by = {}
        for h, body, path in events:
            assert path == "/log"
            assert h["ce-specversion"] == "1.0"
            assert h["ce-inferenceservicename"] == "klog"
            assert h["ce-namespace"] == "default"
            assert h["ce-endpoint"] == "v1"
            assert h["ce-component"] == "predictor"
            assert h["ce-source"]
            assert h["content-type"] == "application/json"
            assert time.strptime(h["ce-time"][:19], "%Y-%m-%dT%H:%M:%S")
            by[(h["ce-id"], h["ce-type"])] = body
        for rid, raw, resp in sent:
            assert by[(rid, "org.kubeflow.serving.inference.request")] == raw
            assert by[(rid, "org.kubeflow.serving.inference.response")] == resp
        m = srv.metrics()
        assert metric_value(m, "basalt_payload_logger_sent_total", endpoint="klog") == 10
        # mode request: request events only.
        put_endpoint(srv, "klog", {"model": "klog", "routes": [{"version": 1, "weight": 100}],
                                   "logger": {"url": rcv.url("/req"), "mode": "request"}})
        r = predict(srv, "klog", {"inputs": {"a": 1.0, "b": 2.0}})
        assert r.status_code == 200
        wait_until(lambda: any(p == "/req" for _, _, p in rcv.got()), what="the request event")
        time.sleep(0.5)
        req_events = [(h, b) for h, b, p in rcv.got() if p == "/req"]
        assert len(req_events) == 1
        assert req_events[0][0]["ce-type"] == "org.kubeflow.serving.inference.request"
        assert req_events[0][0]["ce-id"] == r.headers["X-Request-Id"]
    finally:
        rcv.close()


def test_logger_down_is_retried_and_counted(srv):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there
    linear_endpoint(srv, "kdown", logger={"url": "http://127.0.0.1:%d/x" % port,
                                          "mode": "request"})
    n = 40
    failed_before = metric_value(srv.metrics(), "basalt_http_client_requests_total",
                                 outcome="failed")
    for i in range(n):
        r = predict(srv, "kdown", {"inputs": {"a": float(i), "b": 0.0}})
        assert r.status_code == 200, r.text
    # Three attempts a second apart, then counted as failed; never sent.
    wait_until(lambda: metric_value(srv.metrics(), "basalt_payload_logger_failed_total",
                                    endpoint="kdown") >= n, what="failures")
    m = srv.metrics()
    assert metric_value(m, "basalt_payload_logger_failed_total", endpoint="kdown") == n
    assert metric_value(m, "basalt_payload_logger_sent_total", endpoint="kdown") == 0
    # ... each after three attempts by the outbound client.
    assert metric_value(m, "basalt_http_client_requests_total",
                        outcome="failed") - failed_before == 3 * n
    # The prediction log itself is unaffected.
    wait_until(lambda: len(read_all(srv, "kdown")) == n, what="records")


# ---- drops -------------------------------------------------------------------------------------

def test_drops_appear_in_metrics_with_a_tiny_buffer(start_server):
    s = start_server("--prediction-log-buffer-bytes", "64KiB")
    linear_endpoint(s, "tiny")
    rows, answered = 2000, 0
    for i in range(5):
        body = {"inputs": [{"a": float(j), "b": float(i)} for j in range(rows)]}
        r = predict(s, "tiny", body)
        assert r.status_code == 200, r.text[:300]
        answered += len(r.json()["predictions"])

    def settled():
        m = s.metrics()
        logged = metric_value(m, "basalt_prediction_log_records_total", endpoint="tiny")
        dropped = metric_value(m, "basalt_prediction_log_dropped_total", endpoint="tiny")
        return (logged, dropped) if logged + dropped >= answered else None

    logged, dropped = wait_until(settled, what="every record logged or dropped")
    m = s.metrics()
    assert logged + dropped == answered
    assert metric_value(m, "basalt_prediction_log_dropped_total", endpoint="tiny",
                        reason="buffer_full") == dropped > 0
    assert metric_value(m, "basalt_prediction_log_buffer_limit_bytes") == 65536
    assert len(read_all(s, "tiny")) == logged


# ---- the JSONL export ------------------------------------------------------------------------

def cli(srv, *args, timeout=60):
    env = clean_env({"BASALT_URL": srv.url, "BASALT_API_KEY": srv.admin_key})
    return subprocess.run([BASALT_BIN, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_export_jsonl(srv, tmp_path):
    publish(srv, "exp", linear_bytes([1.0, 1.0], 0.0, ("a", "b")))
    upload_ok(srv, "exp", linear_bytes([1.0, 2.0], 0.0, ("a", "b")))
    approve(srv, "exp", 2)
    put_endpoint(srv, "exp", {"model": "exp", "routes": [{"version": 1, "weight": 50},
                                                         {"version": 2, "weight": 50}]})
    ids = []
    for i in range(1500):  # more than one page of the CLI's (1000)
        r = predict(srv, "exp", {"inputs": {"a": float(i), "b": 1.0}})
        assert r.status_code == 200
        ids += r.json()["prediction_ids"]
    wait_until(lambda: len(read_all(srv, "exp")) == len(ids), what="records")
    want = read_all(srv, "exp")
    out = tmp_path / "p.jsonl"
    cp = cli(srv, "predictions", "export", "exp", "-o", str(out))
    assert cp.returncode == 0, cp.stderr
    assert "1500" in cp.stderr
    lines = out.read_text().splitlines()
    assert [json.loads(x) for x in lines] == want
    # stdout without -o; --version filters.
    cp = cli(srv, "predictions", "export", "exp", "--version", "2")
    assert cp.returncode == 0, cp.stderr
    v2 = [json.loads(x) for x in cp.stdout.splitlines()]
    assert v2 == [r for r in want if r["version"] == 2]
    assert 0 < len(v2) < len(want)
    cp = cli(srv, "predictions", "export", "exp", "--since", "1h", "--until", rfc3339(time.time() + 5))
    assert cp.returncode == 0, cp.stderr
    assert [json.loads(x) for x in cp.stdout.splitlines()] == want
    # Unknown endpoint: exit 3, no file left behind.
    bad = tmp_path / "none.jsonl"
    cp = cli(srv, "predictions", "export", "nope", "-o", str(bad))
    assert cp.returncode == 3, (cp.returncode, cp.stderr)
    assert not bad.exists() and not [p for p in os.listdir(tmp_path) if "part" in p]
    assert cli(srv, "predictions", "export").returncode == 2
