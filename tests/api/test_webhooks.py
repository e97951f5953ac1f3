"""Webhooks end to end: destinations (kind Webhook), Standard Webhooks signatures, CloudEvents
payloads, retries on a shortened schedule, Retry-After, timeouts, replay, the delivery log.

The receiver is a real HTTP server on a thread of this test (http.server on a free port).
Every request it gets is verified by the project's one Python implementation of the
Standard Webhooks scheme, tools/webhook_receiver.py's verify() (hmac + base64 over
"{webhook-id}.{webhook-timestamp}.{body}", constant-time compare, timestamp tolerance),
independent of the server's C one; docs/webhooks.md prints that function (checked here) and
test_verifier_can_fail shows it rejects what it must. Each path of the receiver
follows a script of responses (a status with headers, or "hang": never answer), so a test
says e.g. "500, then 200" and reads back the attempt log.
"""
import base64
import hashlib
import hmac
import http.server
import importlib.util
import inspect
import json
import os
import threading
import time
from datetime import datetime

import pytest

from modelkit import assert_error

WAIT = 60.0  # a generous bound on waits for deliveries; never an assertion on time
TOLERANCE_S = 300  # the receiver's webhook-timestamp tolerance (Standard Webhooks: a few minutes)


# ---- the receiver ---------------------------------------------------------------------------

class Receiver:
    """A threaded HTTP server; script(path, [actions]) sets what each request to path gets:
    an int status, a (status, {headers}, body) tuple, or "hang" (no answer until close).
    The last action repeats. Every request is recorded with its arrival time."""

    def __init__(self):
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.scripts = {}
        self.requests = []
        self.release = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "headers": dict(
                        (k.lower(), v) for k, v in self.headers.items()), "body": body,
                        "received": time.time()})
                    script = receiver.scripts.get(self.path, [200])
                    action = script.pop(0) if len(script) > 1 else script[0]
                    receiver.cond.notify_all()
                if action == "hang":
                    receiver.release.wait()
                    self.close_connection = True
                    return
                if isinstance(action, int):
                    action = (action, {}, b"status %d" % action)
                status, headers, out = action
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def script(self, path, actions):
        with self.lock:
            self.scripts[path] = list(actions)

    def got(self, path):
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def wait_for(self, path, n):
        deadline = time.time() + WAIT
        with self.lock:
            while len([r for r in self.requests if r["path"] == path]) < n:
                left = deadline - time.time()
                assert left > 0, "receiver got %d requests on %s, want %d" % (
                    len([r for r in self.requests if r["path"] == path]), path, n)
                self.cond.wait(left)
            return [r for r in self.requests if r["path"] == path]

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


# ---- the Standard Webhooks verifier -------------------------------------------------------

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def _receiver_tool():
    """tools/webhook_receiver.py imported as a module."""
    path = os.path.join(ROOT, "tools", "webhook_receiver.py")
    spec = importlib.util.spec_from_file_location("webhook_receiver", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# verify(secret, headers, body, now=None) -> True, or raises ValueError
verify = _receiver_tool().verify


def test_verifier_can_fail():
    """The oracle rejects a tampered body, another secret, an old timestamp, a missing
    header, a signature of another scheme; it takes a secret padded or not."""
    key = base64.b64encode(b"k" * 24).decode()
    secret = "whsec_" + key
    body = b'{"a":1}'
    ts = str(int(time.time()))
    sig = base64.b64encode(hmac.new(b"k" * 24, b"msg_1." + ts.encode() + b"." + body,
                                    hashlib.sha256).digest()).decode()
    h = {"webhook-id": "msg_1", "webhook-timestamp": ts, "webhook-signature": "v1," + sig}
    assert verify(secret, h, body)
    assert verify(secret, dict(h, **{"webhook-signature": "v1,bad v1," + sig}), body)
    with pytest.raises(ValueError):
        verify(secret, h, b'{"a":2}')
    with pytest.raises(ValueError):
        verify("whsec_" + base64.b64encode(b"x" * 24).decode(), h, body)
    with pytest.raises(ValueError):
        verify(secret, h, body, now=int(ts) + TOLERANCE_S + 60)
    with pytest.raises(ValueError):
        verify(secret, {k: v for k, v in h.items() if k != "webhook-timestamp"}, body)
    with pytest.raises(ValueError):
        verify(secret, dict(h, **{"webhook-signature": "v2," + sig}), body)
    with pytest.raises(ValueError):
        verify(key, h, body)  # no whsec_ prefix
    # 25- and 26-byte keys: their base64 ends "==" and "=", which the verifier accepts
    # left off (as the server does).
    for n in (25, 26):
        k = base64.b64encode(b"q" * n).decode()
        assert k.endswith("=" * (3 - n % 3))
        s = base64.b64encode(hmac.new(b"q" * n, b"msg_1." + ts.encode() + b"." + body,
                                      hashlib.sha256).digest()).decode()
        hn = dict(h, **{"webhook-signature": "v1," + s})
        assert verify("whsec_" + k, hn, body) and verify("whsec_" + k.rstrip("="), hn, body)


# ---- helpers --------------------------------------------------------------------------------

def put_webhook(srv, name, spec, status=(200, 201)):
    r = srv.put("/v1/webhooks/%s" % name, json=spec)
    assert r.status_code in status, r.text
    return r.json()


def secret_of(srv, name):
    r = srv.get("/v1/webhooks/%s/secret" % name)
    assert r.status_code == 200, r.text
    assert r.headers.get("Cache-Control") == "no-store"
    return r.json()["secret"]


def send_test(srv, name, data=None, type_=None):
    body = {}
    if data is not None:
        body["data"] = data
    if type_:
        body["type"] = type_
    r = srv.post("/v1/webhooks/%s/test" % name, json=body)
    assert r.status_code == 202, r.text
    return r.json()


def delivery(srv, did):
    r = srv.get("/v1/webhooks/deliveries/%s" % did)
    assert r.status_code == 200, r.text
    return r.json()


def wait_state(srv, did, states, attempts=None):
    deadline = time.time() + WAIT
    while True:
        d = delivery(srv, did)
        if d["state"] in states and (attempts is None or len(d["attempt_log"]) >= attempts):
            return d
        assert time.time() < deadline, "delivery stuck: %s" % json.dumps(d)[:2000]
        time.sleep(0.05)


def parse_time(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


# ---- tests ----------------------------------------------------------------------------------

def test_signed_cloudevent_delivered(shared_server, receiver):
    srv = shared_server
    spec = {"url": receiver.url("/signed"), "headers": {"X-Team": "risk"}}
    created = put_webhook(srv, "signed", spec, status=(201,))
    # Defaults filled; the secret is made, and hidden from GET.
    assert created["spec"]["timeout"] == "15s"
    assert created["spec"]["retry_schedule"] == ["0s", "5s", "5m", "30m", "2h", "5h", "10h", "10h"]
    assert created["spec"]["content_type"] == "application/cloudevents+json"
    assert "secret" not in created["spec"]
    got = srv.get("/v1/webhooks/signed").json()
    assert "secret" not in got["spec"]
    assert all("secret" not in i["spec"] for i in srv.get("/v1/webhooks").json()["items"])
    assert got["status"] == {"deliveries": {"pending": 0, "delivered": 0, "failed": 0}}
    secret = secret_of(srv, "signed")
    assert len(base64.b64decode(secret[6:])) == 24
    # Applying the same spec again (without the secret, as GET shows it) keeps the secret.
    again = put_webhook(srv, "signed", got["spec"])
    assert again["outcome"] == "unchanged"
    assert secret_of(srv, "signed") == secret

    q = send_test(srv, "signed", data={"amount": 42, "currency": "EUR"}, type_="com.example.paid")
    [req] = receiver.wait_for("/signed", 1)
    h = req["headers"]
    assert verify(secret, h, req["body"])
    assert h["webhook-id"] == q["event_id"]
    assert h["content-type"] == "application/cloudevents+json"
    assert h["user-agent"].startswith("basalt/")
    assert h["x-team"] == "risk"
    ev = json.loads(req["body"])
    assert ev["specversion"] == "1.0"
    assert ev["id"] == q["event_id"]
    assert ev["type"] == "com.example.paid"
    assert ev["source"] == "/v1/webhooks/signed"
    assert ev["data"] == {"amount": 42, "currency": "EUR"}
    assert abs(parse_time(ev["time"]).timestamp() - time.time()) < TOLERANCE_S

    d = wait_state(srv, q["delivery_id"], {"delivered"})
    assert d["destination"] == "signed"
    assert d["event_id"] == q["event_id"] and d["webhook_id"] == q["event_id"]
    assert d["attempts"] == 1 and d["last_status"] == 200
    assert d["payload"] == ev
    [a] = d["attempt_log"]
    assert a["attempt"] == 1 and a["status"] == 200 and a["outcome"] == "delivered"
    assert a["response"] == "status 200" and a["error"] is None and a["retry_in_ms"] is None
    assert a["duration_ms"] >= 0
    status = srv.get("/v1/webhooks/signed").json()["status"]
    assert status == {"deliveries": {"pending": 0, "delivered": 1, "failed": 0}}
    # The job behind it finished too.
    j = srv.get("/v1/jobs/%s" % q["delivery_id"])
    if j.status_code == 200:
        assert j.json()["kind"] == "webhook.deliver" and j.json()["state"] == "completed"


def test_plain_json_content_type_and_default_test_event(shared_server, receiver):
    srv = shared_server
    secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    put_webhook(srv, "plain", {"url": receiver.url("/plain"), "secret": secret,
                               "content_type": "application/json"})
    assert secret_of(srv, "plain") == secret
    q = send_test(srv, "plain")
    [req] = receiver.wait_for("/plain", 1)
    assert verify(secret, req["headers"], req["body"])
    assert req["headers"]["content-type"] == "application/json"
    ev = json.loads(req["body"])
    assert ev["type"] == "basalt.webhook.test" and ev["data"]["webhook"] == "plain"
    wait_state(srv, q["delivery_id"], {"delivered"})


def test_500_then_200_retried_on_the_schedule(shared_server, receiver):
    srv = shared_server
    receiver.script("/flaky", [500, (502, {}, b"bad gateway"), 200])
    put_webhook(srv, "flaky", {"url": receiver.url("/flaky"),
                               "retry_schedule": ["0s", "200ms", "300ms", "1s"]})
    secret = secret_of(srv, "flaky")
    q = send_test(srv, "flaky")
    d = wait_state(srv, q["delivery_id"], {"delivered"})
    reqs = receiver.got("/flaky")
    assert len(reqs) == 3
    for r in reqs:  # every attempt signed, with the same webhook-id
        assert verify(secret, r["headers"], r["body"])
        assert r["headers"]["webhook-id"] == q["event_id"]
    assert [r["body"] for r in reqs] == [reqs[0]["body"]] * 3
    ts = [int(r["headers"]["webhook-timestamp"]) for r in reqs]
    assert ts == sorted(ts)
    log = d["attempt_log"]
    assert [(a["attempt"], a["status"], a["outcome"]) for a in log] == [
        (1, 500, "failed"), (2, 502, "failed"), (3, 200, "delivered")]
    assert [a["response"] for a in log] == ["status 500", "bad gateway", "status 200"]
    assert log[0]["error"] == "HTTP 500" and log[1]["error"] == "HTTP 502"
    # The waits recorded are the schedule's, with ± 10% jitter.
    assert 180 <= log[0]["retry_in_ms"] <= 220, log[0]
    assert 270 <= log[1]["retry_in_ms"] <= 330, log[1]
    assert log[2]["retry_in_ms"] is None
    assert d["attempts"] == 3 and d["max_attempts"] == 4 and d["last_status"] == 200
    assert d["next_attempt_at"] is None
    ats = [parse_time(a["at"]) for a in log]
    assert ats == sorted(ats)


def test_schedule_exhausted_fails(shared_server, receiver):
    srv = shared_server
    receiver.script("/down", [503])
    put_webhook(srv, "down", {"url": receiver.url("/down"), "retry_schedule": ["0s", "100ms"]})
    q = send_test(srv, "down")
    d = wait_state(srv, q["delivery_id"], {"failed"}, attempts=2)
    assert [(a["status"], a["outcome"]) for a in d["attempt_log"]] == [(503, "failed")] * 2
    assert d["attempts"] == 2 and d["last_status"] == 503 and d["last_error"] == "HTTP 503"
    assert d["attempt_log"][1]["retry_in_ms"] is None
    time.sleep(0.5)  # nothing more comes: the schedule is spent
    assert len(receiver.got("/down")) == 2


def test_410_gone_is_not_retried(shared_server, receiver):
    srv = shared_server
    receiver.script("/gone", [410, 200])
    put_webhook(srv, "gone", {"url": receiver.url("/gone"), "retry_schedule": ["0s", "100ms", "100ms"]})
    q = send_test(srv, "gone")
    d = wait_state(srv, q["delivery_id"], {"failed"}, attempts=1)
    assert [(a["status"], a["outcome"]) for a in d["attempt_log"]] == [(410, "failed")]
    assert "410" in d["last_error"]
    time.sleep(0.5)
    assert len(receiver.got("/gone")) == 1
    # Other client errors are retried (Standard Webhooks: only 410 means "stop").
    receiver.script("/notfound", [404, 200])
    put_webhook(srv, "notfound", {"url": receiver.url("/notfound"),
                                  "retry_schedule": ["0s", "100ms"]})
    q = send_test(srv, "notfound")
    d = wait_state(srv, q["delivery_id"], {"delivered"})
    assert [a["status"] for a in d["attempt_log"]] == [404, 200]


def test_retry_after_honoured(shared_server, receiver):
    srv = shared_server
    receiver.script("/busy", [(503, {"Retry-After": "2"}, b"later"), 200])
    put_webhook(srv, "busy", {"url": receiver.url("/busy"), "retry_schedule": ["0s", "100ms"]})
    q = send_test(srv, "busy")
    d = wait_state(srv, q["delivery_id"], {"delivered"})
    first, second = d["attempt_log"]
    assert first["status"] == 503 and first["retry_in_ms"] == 2000  # not the schedule's 100ms
    assert second["status"] == 200
    r1, r2 = receiver.got("/busy")
    assert r2["received"] - r1["received"] >= 1.9  # it waited (a lower bound, by construction)
    # An HTTP-date works too.
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3))
    receiver.script("/busy-date", [(429, {"Retry-After": when}, b""), 200])
    put_webhook(srv, "busy-date", {"url": receiver.url("/busy-date"),
                                   "retry_schedule": ["0s", "100ms"]})
    q = send_test(srv, "busy-date")
    d = wait_state(srv, q["delivery_id"], {"delivered"})
    assert 500 <= d["attempt_log"][0]["retry_in_ms"] <= 3000, d["attempt_log"][0]


def test_unanswered_receiver_times_out_and_delays_no_other(shared_server, receiver):
    srv = shared_server
    receiver.script("/hang-long", ["hang"])
    receiver.script("/hang-short", ["hang"])
    # One receiver that never answers, with a long timeout: in flight for the whole test.
    put_webhook(srv, "hang-long", {"url": receiver.url("/hang-long"), "timeout": "5m",
                                   "retry_schedule": ["0s"]})
    slow = send_test(srv, "hang-long")
    receiver.wait_for("/hang-long", 1)
    # Deliveries to another destination go through meanwhile.
    put_webhook(srv, "quick", {"url": receiver.url("/quick")})
    quick = [send_test(srv, "quick") for _ in range(5)]
    for q in quick:
        wait_state(srv, q["delivery_id"], {"delivered"})
    d = delivery(srv, slow["delivery_id"])
    assert d["attempt_log"] == [] and d["state"] in ("pending", "delivering"), d
    # A short timeout ends the attempt as a timeout.
    put_webhook(srv, "hang-short", {"url": receiver.url("/hang-short"), "timeout": "500ms",
                                    "retry_schedule": ["0s"]})
    q = send_test(srv, "hang-short")
    d = wait_state(srv, q["delivery_id"], {"failed"}, attempts=1)
    [a] = d["attempt_log"]
    assert a["outcome"] == "timeout" and a["status"] is None
    assert "timed out" in a["error"]


def test_connection_refused_is_an_error_outcome(shared_server, receiver):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    srv = shared_server
    put_webhook(srv, "refused", {"url": "http://127.0.0.1:%d/x" % port, "retry_schedule": ["0s"]})
    q = send_test(srv, "refused")
    d = wait_state(srv, q["delivery_id"], {"failed"}, attempts=1)
    [a] = d["attempt_log"]
    assert a["outcome"] == "error" and a["status"] is None and a["error"]


def test_replay_resends_with_the_same_webhook_id(shared_server, receiver):
    srv = shared_server
    put_webhook(srv, "replayed", {"url": receiver.url("/replayed")})
    secret = secret_of(srv, "replayed")
    q = send_test(srv, "replayed", data={"n": 1})
    wait_state(srv, q["delivery_id"], {"delivered"})
    r = srv.post("/v1/webhooks/deliveries/%s/replay" % q["delivery_id"])
    assert r.status_code == 202, r.text
    replay = r.json()
    assert replay["replay_of"] == q["delivery_id"] and replay["delivery_id"] != q["delivery_id"]
    d = wait_state(srv, replay["delivery_id"], {"delivered"})
    assert d["replay_of"] == q["delivery_id"] and d["webhook_id"] == q["event_id"]
    first, again = receiver.wait_for("/replayed", 2)
    assert verify(secret, again["headers"], again["body"])
    assert again["headers"]["webhook-id"] == first["headers"]["webhook-id"] == q["event_id"]
    assert again["body"] == first["body"]
    # The log lists both, newest first, and pages.
    page = srv.get("/v1/webhooks/deliveries", params={"destination": "replayed"}).json()
    assert [i["id"] for i in page["items"]] == [replay["delivery_id"], q["delivery_id"]]
    assert page["next_cursor"] is None
    p1 = srv.get("/v1/webhooks/deliveries", params={"destination": "replayed", "limit": 1}).json()
    assert [i["id"] for i in p1["items"]] == [replay["delivery_id"]] and p1["next_cursor"]
    p2 = srv.get("/v1/webhooks/deliveries", params={"destination": "replayed", "limit": 1,
                                                     "cursor": p1["next_cursor"]}).json()
    assert [i["id"] for i in p2["items"]] == [q["delivery_id"]]
    everything = srv.get("/v1/webhooks/deliveries", params={"limit": 1000}).json()["items"]
    assert {replay["delivery_id"], q["delivery_id"]} <= {i["id"] for i in everything}


def test_rotated_secret_signs_next_attempts(shared_server, receiver):
    srv = shared_server
    receiver.script("/rotate", [500, 200])
    put_webhook(srv, "rotate", {"url": receiver.url("/rotate"), "retry_schedule": ["0s", "1s"]})
    old = secret_of(srv, "rotate")
    q = send_test(srv, "rotate")
    receiver.wait_for("/rotate", 1)
    new = "whsec_" + base64.b64encode(b"n" * 24).decode()
    put_webhook(srv, "rotate", {"url": receiver.url("/rotate"), "retry_schedule": ["0s", "1s"],
                                "secret": new})
    wait_state(srv, q["delivery_id"], {"delivered"})
    r1, r2 = receiver.got("/rotate")
    assert verify(old, r1["headers"], r1["body"])
    assert verify(new, r2["headers"], r2["body"])  # each attempt reads the current spec


def test_deleted_destination_ends_its_deliveries(shared_server, receiver):
    """A destination deleted while a delivery to it waits for its next attempt: that attempt
    sends nothing and ends the delivery (failed, no more attempts); a replay of it is a
    404 (the destination is gone), and so is a new test event."""
    srv = shared_server
    receiver.script("/deleted", [500])
    put_webhook(srv, "deleted", {"url": receiver.url("/deleted"),
                                 "retry_schedule": ["0s", "1s", "1s", "1s", "1s"]})
    q = send_test(srv, "deleted")
    wait_state(srv, q["delivery_id"], {"pending"}, attempts=1)
    r = srv.delete("/v1/webhooks/deleted")
    assert r.status_code in (200, 204), r.text
    d = wait_state(srv, q["delivery_id"], {"failed"})
    *sent, last = d["attempt_log"]
    assert sent and all(a["status"] == 500 and a["outcome"] == "failed" for a in sent), sent
    assert last["outcome"] == "error" and last["status"] is None, last
    assert "no webhook 'deleted'" in last["error"] and last["retry_in_ms"] is None, last
    assert d["last_error"] == last["error"] and d["next_attempt_at"] is None
    assert len(receiver.got("/deleted")) == len(sent)  # the last attempt sent nothing
    assert_error(srv.post("/v1/webhooks/deliveries/%s/replay" % q["delivery_id"]), 404)
    assert_error(srv.post("/v1/webhooks/deleted/test", json={}), 404)


def test_cancelled_delivery(shared_server, receiver):
    """A delivery whose job is cancelled before its first attempt (an hour away) reads
    cancelled in the log and counts as neither pending, delivered nor failed."""
    srv = shared_server
    put_webhook(srv, "cancelled", {"url": receiver.url("/cancelled"), "retry_schedule": ["1h"]})
    q = send_test(srv, "cancelled")
    d = delivery(srv, q["delivery_id"])
    assert d["state"] == "pending" and d["next_attempt_at"] is not None, d
    status = srv.get("/v1/webhooks/cancelled").json()["status"]
    assert status == {"deliveries": {"pending": 1, "delivered": 0, "failed": 0}}
    r = srv.post("/v1/jobs/%s/cancel" % q["delivery_id"])
    assert r.status_code == 200, r.text
    d = delivery(srv, q["delivery_id"])
    assert d["state"] == "cancelled" and d["attempt_log"] == [] and d["next_attempt_at"] is None
    [item] = srv.get("/v1/webhooks/deliveries", params={"destination": "cancelled"}).json()["items"]
    assert item["state"] == "cancelled"
    status = srv.get("/v1/webhooks/cancelled").json()["status"]
    assert status == {"deliveries": {"pending": 0, "delivered": 0, "failed": 0}}
    assert receiver.got("/cancelled") == []


@pytest.mark.parametrize("spec,field", [
    ({}, "url"),
    ({"url": 5}, "url"),
    ({"url": "ftp://example.com/x"}, "url"),
    ({"url": "http://"}, "url"),
    ({"url": "https://x.example/" + "a" * 3000}, "url"),
    ({"url": "https://x.example/", "secret": "abc"}, "secret"),
    ({"url": "https://x.example/", "secret": "whsec_" + base64.b64encode(b"k" * 10).decode()},
     "secret"),
    ({"url": "https://x.example/", "secret": "whsec_not*base64"}, "secret"),
    ({"url": "https://x.example/", "timeout": "fast"}, "timeout"),
    ({"url": "https://x.example/", "timeout": 15}, "timeout"),
    ({"url": "https://x.example/", "timeout": "10m"}, "timeout"),
    ({"url": "https://x.example/", "headers": []}, "headers"),
    ({"url": "https://x.example/", "headers": {"webhook-id": "x"}}, "headers.webhook-id"),
    ({"url": "https://x.example/", "headers": {"Content-Type": "text/plain"}}, "headers.Content-Type"),
    ({"url": "https://x.example/", "headers": {"X-A": 5}}, "headers.X-A"),
    ({"url": "https://x.example/", "headers": {"X-A": "a\r\nX-B: b"}}, "headers.X-A"),
    ({"url": "https://x.example/", "headers": {"bad name": "x"}}, "headers.bad name"),
    ({"url": "https://x.example/", "retry_schedule": []}, "retry_schedule"),
    ({"url": "https://x.example/", "retry_schedule": "5s"}, "retry_schedule"),
    ({"url": "https://x.example/", "retry_schedule": ["0s", "soon"]}, "retry_schedule[1]"),
    ({"url": "https://x.example/", "retry_schedule": ["0s", 5]}, "retry_schedule[1]"),
    ({"url": "https://x.example/", "retry_schedule": ["1s"] * 33}, "retry_schedule"),
    ({"url": "https://x.example/", "content_type": "text/plain"}, "content_type"),
    ({"url": "https://x.example/", "retries": 3}, "retries"),
])
def test_bad_specs(shared_server, spec, field):
    r = shared_server.put("/v1/webhooks/bad-spec", json=spec)
    assert_error(r, 400, field=field)
    assert_error(shared_server.get("/v1/webhooks/bad-spec"), 404)


def test_reserved_name_and_not_found(shared_server):
    srv = shared_server
    # /v1/webhooks/deliveries is the delivery log's path for every method: no webhook
    # can be named so.
    r = srv.put("/v1/webhooks/deliveries", json={"url": "https://x.example/"})
    assert_error(r, 405)
    assert r.headers["allow"] == "GET"
    assert_error(srv.post("/v1/webhooks/no-such-hook/test", json={}), 404)
    assert_error(srv.get("/v1/webhooks/no-such-hook/secret"), 404)
    assert_error(srv.get("/v1/webhooks/deliveries/0190aaaa-0000-7000-8000-000000000000"), 404)
    assert_error(srv.post("/v1/webhooks/deliveries/0190aaaa-0000-7000-8000-000000000000/replay"),
                 404)
    assert_error(srv.get("/v1/webhooks/deliveries", params={"destination": "Not A Name"}), 400,
                 field="destination")
    assert_error(srv.get("/v1/webhooks/deliveries", params={"limit": "0"}), 400, field="limit")
    # The delivery log is a literal route, not the webhook named "deliveries".
    r = srv.get("/v1/webhooks/deliveries")
    assert r.status_code == 200 and set(r.json()) == {"items", "next_cursor"}, r.text
    put_webhook(srv, "tested", {"url": "https://x.example/"})
    assert_error(srv.post("/v1/webhooks/tested/test", json={"type": ""}), 400, field="type")
    assert_error(srv.post("/v1/webhooks/tested/test", json={"kind": "x"}), 400, field="kind")
    assert_error(srv.post("/v1/webhooks/tested/test", json=[1]), 400)
    assert_error(srv.post("/v1/webhooks/tested/test", data=b"{not json",
                          headers={"Content-Type": "application/json"}), 400)
    assert_error(srv.post("/v1/webhooks/tested/test", json={"type": "t" * 257}), 400, field="type")
    assert_error(srv.get("/v1/webhooks/deliveries", params={"cursor": "c" * 65}), 400,
                 field="cursor")
    assert srv.get("/v1/webhooks/deliveries", params={"destination": "tested"}).json()[
        "items"] == []  # none of the refused test events was queued


def test_roles_and_tenants(shared_server, receiver):
    srv = shared_server
    put_webhook(srv, "roles", {"url": receiver.url("/roles")})
    q = send_test(srv, "roles")
    viewer = srv.create_key("viewer")["key"]
    developer = srv.create_key("developer")["key"]
    assert srv.get("/v1/webhooks/deliveries/%s" % q["delivery_id"], key=viewer).status_code == 200
    assert srv.get("/v1/webhooks/roles", key=viewer).status_code == 200
    assert_error(srv.get("/v1/webhooks/roles/secret", key=viewer), 403)
    assert_error(srv.post("/v1/webhooks/roles/test", key=viewer, json={}), 403)
    assert_error(srv.post("/v1/webhooks/deliveries/%s/replay" % q["delivery_id"], key=viewer), 403)
    assert srv.get("/v1/webhooks/roles/secret", key=developer).status_code == 200
    # Another tenant sees neither the destination nor its deliveries.
    r = srv.post("/v1/tenants", json={"name": "hooks-other"})
    assert r.status_code == 201, r.text
    other = srv.create_key("developer", tenant="hooks-other")["key"]
    assert_error(srv.get("/v1/webhooks/roles", key=other), 404)
    assert_error(srv.get("/v1/webhooks/deliveries/%s" % q["delivery_id"], key=other), 404)
    assert_error(srv.post("/v1/webhooks/deliveries/%s/replay" % q["delivery_id"], key=other), 404)
    assert_error(srv.post("/v1/webhooks/roles/test", key=other, json={}), 404)
    assert srv.get("/v1/webhooks/deliveries", key=other).json()["items"] == []


def test_metrics(shared_server, receiver):
    srv = shared_server
    receiver.script("/metered", [500, 200])
    put_webhook(srv, "metered", {"url": receiver.url("/metered"), "retry_schedule": ["0s", "100ms"]})
    q = send_test(srv, "metered")
    wait_state(srv, q["delivery_id"], {"delivered"})
    m = srv.metrics()
    labels = {"tenant": "default", "destination": "metered"}
    assert m.get("basalt_webhook_attempts_total", outcome="delivered", **labels) == 1
    assert m.get("basalt_webhook_attempts_total", outcome="failed", **labels) == 1
    assert m.get("basalt_webhook_attempts_total", outcome="timeout", **labels) == 0
    assert m.types["basalt_webhook_attempts_total"] == "counter"
    assert m.get("basalt_http_client_requests_total", outcome="completed") >= 2
    assert m.get("basalt_http_client_requests_total", outcome="submitted") >= 2
    assert m.get("basalt_http_client_in_flight") is not None


def test_docs_verification_snippet_verifies_a_delivery(shared_server, receiver):
    """The hand-written verifier of docs/webhooks.md is tools/webhook_receiver.py's verify,
    printed as it is there (one source), and runs as printed on a real delivery."""
    import re
    with open(os.path.join(ROOT, "docs", "webhooks.md")) as f:
        code = re.search(r"Or by hand.*?```python\n(.*?)```", f.read(), re.S).group(1)
    assert code.endswith("\n" + inspect.getsource(verify)), "docs/webhooks.md's verify differs " \
        "from tools/webhook_receiver.py's: paste the tool's function into the docs"
    ns = {}
    exec(code, ns)
    srv = shared_server
    put_webhook(srv, "docs", {"url": receiver.url("/docs")})
    secret = secret_of(srv, "docs")
    send_test(srv, "docs", data={"from": "the docs"})
    [req] = receiver.wait_for("/docs", 1)
    ns["verify"](secret, req["headers"], req["body"])
    with pytest.raises(ValueError):
        ns["verify"](secret, req["headers"], req["body"] + b" ")


def test_attempt_in_flight_at_shutdown_is_retried_after_restart(server, receiver):
    """A server stopped while a receiver holds an attempt: the attempt is recorded as cut
    short, and the delivery completes after the restart (deliveries are jobs in the store),
    with the same webhook-id."""
    receiver.script("/restart", ["hang", 200])
    put_webhook(server, "restart", {"url": receiver.url("/restart"), "timeout": "5m",
                                    "retry_schedule": ["0s", "1h"]})
    secret = secret_of(server, "restart")
    q = send_test(server, "restart")
    receiver.wait_for("/restart", 1)
    server.restart()
    d = wait_state(server, q["delivery_id"], {"delivered"})
    first, second = d["attempt_log"]
    assert first["outcome"] == "error" and "shutting down" in first["error"], first
    assert first["retry_in_ms"] is not None and first["retry_in_ms"] < 60000  # not the 1h
    assert second["outcome"] == "delivered" and second["status"] == 200
    r1, r2 = receiver.wait_for("/restart", 2)
    assert r1["headers"]["webhook-id"] == r2["headers"]["webhook-id"] == q["event_id"]
    assert verify(secret, r2["headers"], r2["body"])


def test_apply_get_round_trip_keeps_the_secret(shared_server, receiver, tmp_path):
    """basalt apply a Webhook, basalt get it (-o yaml: no secret), apply that back: unchanged,
    and the secret deliveries are signed with stays the one first made."""
    import subprocess
    from conftest import BASALT_BIN, REQUEST_TIMEOUT, clean_env
    srv = shared_server

    def cli(*args):
        env = {"BASALT_URL": srv.url, "BASALT_API_KEY": srv.admin_key}
        cp = subprocess.run([BASALT_BIN, *args], env=clean_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, timeout=2 * REQUEST_TIMEOUT)
        assert cp.returncode == 0, (cp.returncode, cp.stdout, cp.stderr)
        return cp.stdout

    f = tmp_path / "hook.yaml"
    f.write_text("kind: Webhook\nname: applied\nspec:\n  url: %s\n  retry_schedule: [0s, 1s]\n"
                 "  headers: {X-Env: test}\n" % receiver.url("/applied"))
    assert cli("apply", "-f", str(f)) == "webhook/applied created\n"
    secret = secret_of(srv, "applied")
    shown = cli("get", "webhook", "applied", "-o", "yaml")
    assert "whsec_" not in shown and "secret" not in shown
    g = tmp_path / "shown.yaml"
    g.write_text(shown)
    assert cli("apply", "-f", str(g)) == "webhook/applied unchanged\n"
    assert secret_of(srv, "applied") == secret
    send_test(srv, "applied")
    [req] = receiver.wait_for("/applied", 1)
    assert verify(secret, req["headers"], req["body"])
    assert req["headers"]["x-env"] == "test"
    assert "applied" in cli("get", "webhooks")
