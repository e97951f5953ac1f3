"""Triggers end to end (kind Trigger, PUT /v1/triggers/{name}): events published to a topic
are filtered, scored by a model, written to an output topic or a webhook, or start a job.

Oracles: every prediction a trigger writes is compared with a direct POST
/v1/models/{name}/predict of the same row (an XGBoost classifier and a linear model trained
or written here), the filter and `when` semantics with the same conditions evaluated in
Python over the events the test made, the webhook action with a receiver on a thread of this
test, the job action with GET /v1/jobs. Waits are bounded by WAIT (a failure bound, never a
timing assertion).
"""
import http.server
import json
import threading
import time

import numpy as np
import pytest
import xgboost as xgb

from modelkit import (UUID_RE, assert_error, create_model, linear_bytes, publish as publish_model,
                      upload_ok, approve, xgb_bytes)

WAIT = 60.0
FEATURES = ["amount", "items", "age_days"]


# ---- helpers --------------------------------------------------------------------------------

def eventually(fn, what, timeout=WAIT, interval=0.05):
    """Polls fn until it returns a truthy value (returned); fails after timeout."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


def put_topic(srv, name, spec=None):
    r = srv.put("/v1/topics/" + name, json=spec or {})
    assert r.status_code in (200, 201), r.text
    return r.json()


def put_trigger(srv, name, spec, status=(200, 201)):
    r = srv.put("/v1/triggers/" + name, json=spec)
    if isinstance(status, int):
        status = (status,)
    assert r.status_code in status, r.text
    return r


def offsets_of(j):
    """The offsets a publish answered with, in input order."""
    items = j.get("items") if isinstance(j, dict) else j
    if items is None and isinstance(j, dict) and "offsets" in j:
        return list(j["offsets"])
    if items is None:
        items = [j]
    out = []
    for it in items:
        assert "offset" in it and it.get("error") is None, it
        out.append(it["offset"])
    return out


def publish(srv, topic, events, **kw):
    r = srv.post("/v1/topics/%s/events" % topic, json=events, **kw)
    assert r.status_code in (200, 201, 202), r.text
    offs = offsets_of(r.json())
    assert len(offs) == (len(events) if isinstance(events, list) else 1), r.text
    return offs


def read(srv, topic, from_offset=0, limit=1000):
    r = srv.get("/v1/topics/%s/events?from_offset=%d&limit=%d" % (topic, from_offset, limit))
    assert r.status_code == 200, r.text
    return r.json()["items"]


def wait_records(srv, topic, n, from_offset=0):
    """The first n records of topic from from_offset (waits until there are n)."""
    got = eventually(lambda: (lambda it: it if len(it) >= n else None)(
        read(srv, topic, from_offset)), "%d records in %s" % (n, topic))
    return got


def status(srv, name):
    r = srv.get("/v1/triggers/" + name)
    assert r.status_code == 200, r.text
    return r.json()["status"]


def direct(srv, model, row, version=None):
    path = ("/v1/models/%s/versions/%d/predict" % (model, version) if version
            else "/v1/models/%s/predict" % model)
    r = srv.post(path, json={"inputs": row})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def srv(shared_server):
    return shared_server


@pytest.fixture(scope="module")
def fraud_model(srv):
    """An XGBoost binary classifier on FEATURES, version 1 of model "fraud" (approved)."""
    rng = np.random.default_rng(7)
    n = 2000
    X = np.column_stack([rng.uniform(0, 5000, n), rng.integers(1, 10, n), rng.integers(0, 3650, n)])
    y = ((X[:, 0] > 3000) & (X[:, 2] < 400)).astype(float)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1,
                         "seed": 1}, xgb.DMatrix(X, y, feature_names=FEATURES), num_boost_round=15)
    publish_model(srv, "fraud", xgb_bytes(booster), "xgboost_json")
    return "fraud"


@pytest.fixture(scope="module")
def lin_model(srv):
    """y = 2a - b + 1 on float inputs a, b (model "lin", version 1 approved)."""
    publish_model(srv, "lin", linear_bytes([2.0, -1.0], 1.0, ("a", "b")))
    return "lin"


def events_for(rng, n, **extra):
    out = []
    for i in range(n):
        e = {"id": "tx-%d" % i, "type": "order.created", "country": ["FR", "DE"][i % 2],
             "amount": round(float(rng.uniform(0, 5000)), 2), "items": int(rng.integers(1, 10)),
             "age_days": int(rng.integers(0, 3650))}
        e.update(extra)
        out.append(e)
    return out


# ---- predict ----------------------------------------------------------------------------------

def test_prediction_equals_a_direct_predict_call(srv, fraud_model):
    put_topic(srv, "orders1")
    put_topic(srv, "scores1")
    r = put_trigger(srv, "score1", {"topic": "orders1", "action": {
        "predict": {"model": fraud_model, "output_topic": "scores1"}}}, 201)
    j = r.json()
    assert j["kind"] == "Trigger" and j["name"] == "score1"
    spec = j["spec"]  # normalised: defaults written out
    assert spec["topic"] == "orders1" and spec["start"] == "new" and spec["paused"] is False
    assert spec["consumer"]["ack_wait"] == "30s" and spec["consumer"]["max_deliver"] == 5
    assert j["status"]["group"] == "trigger-score1"

    evs = events_for(np.random.default_rng(1), 40)
    # Rows with extra fields (id, type, country): the default mapping takes the model's
    # features from the event, as a predict body with only those fields would.
    offs = publish(srv, "orders1", evs)
    outs = wait_records(srv, "scores1", len(evs))
    by_src = {}
    for rec in outs:
        o = rec["event"]
        assert set(o) == {"event", "prediction", "model", "version", "prediction_id", "trigger",
                          "source"}, o
        assert o["trigger"] == "score1" and o["model"] == fraud_model and o["version"] == 1
        assert o["source"]["topic"] == "orders1"
        assert UUID_RE.match(o["prediction_id"]), o
        assert rec["id"] == o["prediction_id"]
        by_src[o["source"]["offset"]] = o
    assert sorted(by_src) == sorted(offs), "every event scored once, by its offset"
    for off, ev in zip(offs, evs):
        o = by_src[off]
        assert o["event"] == ev
        want = direct(srv, fraud_model, {k: ev[k] for k in FEATURES})
        assert o["prediction"] == want["predictions"][0], (o, want)
        assert o["prediction_id"] != want["prediction_ids"][0]
    ids = [o["prediction_id"] for o in by_src.values()]
    assert len(set(ids)) == len(ids)
    st = eventually(lambda: (lambda s: s if s["lag"] == 0 and s["processed"] >= len(evs) else None)(
        status(srv, "score1")), "score1 caught up")
    assert st["state"] == "running"
    assert st["processed"] == len(evs) and st["matched"] == len(evs)
    assert st["outputs"] == len(evs) and st["errors"] == 0 and st["last_error"] is None


def test_when_on_a_classifier_sees_score_label_and_probabilities(srv, fraud_model):
    put_topic(srv, "cls-in")
    for t in ("cls-score", "cls-label", "cls-prob"):
        put_topic(srv, t)
    for name, cond in (("cls-score", "score > 0.5"), ("cls-label", "label == \"1\""),
                       ("cls-prob", "prediction.score > 0.5 && event.items >= 1")):
        put_trigger(srv, name, {"topic": "cls-in", "action": {"predict": {
            "model": fraud_model, "output_topic": name, "when": cond}}})
    rng = np.random.default_rng(3)
    evs = events_for(rng, 30)
    for e in evs[:10]:  # some surely positive: large amounts on young accounts
        e["amount"], e["age_days"] = 4500.0, 10
    offs = publish(srv, "cls-in", evs)
    want = sorted(o for o, e in zip(offs, evs)
                  if direct(srv, fraud_model, {k: e[k] for k in FEATURES})["predictions"][0][
                      "probabilities"]["1"] > 0.5)
    assert 0 < len(want) < len(evs)
    for name in ("cls-score", "cls-label", "cls-prob"):
        eventually(lambda: status(srv, name)["processed"] >= len(evs) and
                   status(srv, name)["lag"] == 0, name + " done")
        got = sorted(r["event"]["source"]["offset"] for r in read(srv, name))
        assert got == want, name


def test_cloudevent_data_is_the_default_row(srv, lin_model):
    put_topic(srv, "ce-in")
    put_topic(srv, "ce-out")
    put_trigger(srv, "ce", {"topic": "ce-in", "action": {
        "predict": {"model": lin_model, "version": 1, "output_topic": "ce-out"}}})
    ce = {"specversion": "1.0", "id": "ce-1", "source": "/shop", "type": "order.created",
          "datacontenttype": "application/json", "data": {"a": 3.5, "b": -2.0, "note": "x"}}
    publish(srv, "ce-in", [ce], headers={"Content-Type": "application/cloudevents-batch+json"})
    out = wait_records(srv, "ce-out", 1)[0]["event"]
    assert out["prediction"] == direct(srv, lin_model, {"a": 3.5, "b": -2.0})["predictions"][0]
    assert out["prediction"] == pytest.approx(2 * 3.5 + 2.0 + 1.0)
    assert out["event"]["id"] == "ce-1"


def test_inputs_mapping_with_expressions(srv, lin_model):
    put_topic(srv, "map-in")
    put_topic(srv, "map-out")
    put_trigger(srv, "mapper", {"topic": "map-in", "action": {"predict": {
        "model": lin_model, "output_topic": "map-out",
        "inputs": {"a": "order.total / 100", "b": "if(user.country == \"FR\", 1, 0) + 0.5"}}}})
    evs = [{"order": {"total": 1250}, "user": {"country": "FR"}},
           {"order": {"total": 90}, "user": {"country": "US"}},
           {"order": {"total": -400}, "user": {"country": "FR"}}]
    offs = publish(srv, "map-in", evs)
    outs = {r["event"]["source"]["offset"]: r["event"] for r in wait_records(srv, "map-out", 3)}
    for off, ev in zip(offs, evs):
        row = {"a": ev["order"]["total"] / 100,
               "b": (1 if ev["user"]["country"] == "FR" else 0) + 0.5}
        assert outs[off]["prediction"] == direct(srv, lin_model, row)["predictions"][0]
        assert outs[off]["prediction"] == pytest.approx(2 * row["a"] - row["b"] + 1)


def test_inputs_are_checked_as_a_predict_call_checks_them(srv, lin_model):
    """`inputs` are a predict body's "inputs": a feature the model lacks is refused (the
    server's unknown_features is reject) with the message a direct call gets, while the event
    as the row contributes only the fields the model has features for."""
    for t in ("chk-in", "chk-a", "chk-b"):
        put_topic(srv, t)
    put_trigger(srv, "chk-inputs", {"topic": "chk-in", "consumer": {"max_deliver": 1},
                                    "action": {"predict": {"model": lin_model,
                                                           "output_topic": "chk-a",
                                                           "inputs": {"a": "a", "b": "b",
                                                                      "zz": "a + 1"}}}})
    put_trigger(srv, "chk-row", {"topic": "chk-in", "action": {"predict": {
        "model": lin_model, "output_topic": "chk-b"}}})
    ev = {"a": 2.0, "b": 1.0, "zz": 3.0}
    off = publish(srv, "chk-in", [ev])[0]
    r = srv.post("/v1/models/%s/predict" % lin_model, json={"inputs": ev})
    assert r.status_code == 400, r.text
    refused = r.json()["error"]["message"]
    st = eventually(lambda: (lambda s: s if s["errors"] >= 1 else None)(status(srv, "chk-inputs")),
                    "chk-inputs refused its row")
    assert st["last_error"] == "offset %d: %s" % (off, refused), (st, refused)
    out = wait_records(srv, "chk-b", 1)[0]["event"]
    assert out["prediction"] == direct(srv, lin_model, {"a": 2.0, "b": 1.0})["predictions"][0]
    assert read(srv, "chk-a") == []


def test_filter_and_when(srv, lin_model):
    put_topic(srv, "fw-in")
    put_topic(srv, "fw-out")
    put_trigger(srv, "fw", {"topic": "fw-in",
                            "filter": "a > 10 && country == \"FR\"",
                            "action": {"predict": {"model": lin_model, "output_topic": "fw-out",
                                                   "when": "score > 30"}}})
    evs = [
        {"a": 20, "b": 1, "country": "FR"},     # 40: match, score 40 > 30
        {"a": 12, "b": 1, "country": "FR"},     # match, score 24: `when` fails
        {"a": 50, "b": 1, "country": "DE"},     # filter fails (country)
        {"a": 5, "b": 1, "country": "FR"},      # filter fails (a)
        {"b": 1, "country": "FR"},              # a missing: null > 10 is false
        {"a": None, "b": 1, "country": "FR"},   # a null: false
        {"a": 30, "b": 2, "country": None},     # country null: false
        {"a": 100, "b": 50, "country": "FR"},   # 151: match
    ]
    offs = publish(srv, "fw-in", evs)
    # The expected outputs, from the conditions evaluated here over the same events.
    want = [o for o, e in zip(offs, evs)
            if isinstance(e.get("a"), (int, float)) and e["a"] > 10 and e.get("country") == "FR"
            and 2 * e["a"] - e["b"] + 1 > 30]
    assert len(want) == 2
    st = eventually(lambda: (lambda s: s if s["processed"] >= len(evs) and s["lag"] == 0 else None)(
        status(srv, "fw")), "fw processed every event")
    outs = read(srv, "fw-out")
    assert sorted(r["event"]["source"]["offset"] for r in outs) == want
    assert st["matched"] == 3  # the filter passed three; `when` kept two
    assert st["outputs"] == 2 and st["errors"] == 0


# ---- isolation, errors, lag ---------------------------------------------------------------------

def test_a_failing_model_does_not_stall_another_trigger(srv, lin_model):
    # "wide" v1 takes a, b and c; the events carry only a and b.
    create_model(srv, "wide")
    upload_ok(srv, "wide", linear_bytes([1.0, 1.0, 1.0], 0.0, ("a", "b", "c")))
    approve(srv, "wide", 1)
    put_topic(srv, "iso-in")
    put_topic(srv, "iso-good")
    put_topic(srv, "iso-bad")
    put_trigger(srv, "iso-bad", {"topic": "iso-in", "action": {"predict": {
        "model": "wide", "version": 1, "output_topic": "iso-bad"}}})
    put_trigger(srv, "iso-good", {"topic": "iso-in", "action": {"predict": {
        "model": lin_model, "output_topic": "iso-good"}}})
    evs = [{"a": float(i), "b": 1.0} for i in range(30)]
    offs = publish(srv, "iso-in", evs)
    good = wait_records(srv, "iso-good", len(evs))
    assert sorted(r["event"]["source"]["offset"] for r in good) == sorted(offs)
    bad = eventually(lambda: (lambda s: s if s["errors"] >= len(evs) else None)(
        status(srv, "iso-bad")), "iso-bad errors counted")
    assert bad["outputs"] == 0
    assert "'c'" in bad["last_error"] and "offset" in bad["last_error"], bad
    assert bad["last_error_at"]
    assert read(srv, "iso-bad") == []
    # Publish more: the good trigger keeps producing while the bad one keeps failing.
    more = publish(srv, "iso-in", [{"a": 100.0, "b": 2.0}])
    good = wait_records(srv, "iso-good", len(evs) + 1)
    assert more[0] in [r["event"]["source"]["offset"] for r in good]
    m = srv.metrics()
    assert m.get("basalt_trigger_errors_total", tenant="default", trigger="iso-bad") >= len(evs)
    assert m.get("basalt_trigger_errors_total", tenant="default", trigger="iso-good") == 0
    assert m.get("basalt_trigger_outputs_total", tenant="default", trigger="iso-good") >= len(evs)


def test_lag_is_reported_while_a_trigger_is_behind(srv, lin_model):
    put_topic(srv, "lag-in")
    put_topic(srv, "lag-out")
    spec = {"topic": "lag-in", "paused": True,
            "action": {"predict": {"model": lin_model, "output_topic": "lag-out"}}}
    put_trigger(srv, "lagger", spec)
    publish(srv, "lag-in", [{"a": float(i), "b": 0.0} for i in range(7)])
    st = eventually(lambda: (lambda s: s if s["lag"] == 7 else None)(status(srv, "lagger")),
                    "lag 7 while paused")
    assert st["state"] == "paused" and st["pending"] == 7 and st["processed"] == 0
    spec["paused"] = False
    put_trigger(srv, "lagger", spec, 200)
    wait_records(srv, "lag-out", 7)
    st = eventually(lambda: (lambda s: s if s["lag"] == 0 else None)(status(srv, "lagger")),
                    "lag 0 once resumed")
    assert st["state"] == "running" and st["processed"] == 7


def test_start_earliest_takes_the_retained_events(srv, lin_model):
    put_topic(srv, "early-in")
    put_topic(srv, "early-out")
    offs = publish(srv, "early-in", [{"a": 1.0, "b": 1.0}, {"a": 2.0, "b": 1.0}])
    put_trigger(srv, "early", {"topic": "early-in", "start": "earliest", "action": {"predict": {
        "model": lin_model, "output_topic": "early-out"}}})
    outs = wait_records(srv, "early-out", 2)
    assert sorted(r["event"]["source"]["offset"] for r in outs) == sorted(offs)


def test_events_past_max_deliver_go_to_the_dead_letter_topic(srv):
    create_model(srv, "wide3")
    upload_ok(srv, "wide3", linear_bytes([1.0, 1.0, 1.0], 0.0, ("a", "b", "c")))
    approve(srv, "wide3", 1)
    for t in ("dlq-in", "dlq-out", "dlq-dead"):
        put_topic(srv, t)
    put_trigger(srv, "dlq", {"topic": "dlq-in",
                             "consumer": {"max_deliver": 2, "dead_letter": "dlq-dead"},
                             "action": {"predict": {"model": "wide3", "output_topic": "dlq-out"}}})
    evs = [{"a": 1.0, "b": 2.0, "n": i} for i in range(3)]
    offs = publish(srv, "dlq-in", evs)
    dead = wait_records(srv, "dlq-dead", 3)
    assert sorted(d["event"]["offset"] for d in dead) == sorted(offs)
    for d in dead:
        x = d["event"]
        assert x["topic"] == "dlq-in" and x["group"] == "trigger-dlq" and x["deliveries"] == 2
        assert x["event"] == evs[offs.index(x["offset"])]
    st = eventually(lambda: (lambda s: s if s["dead_lettered"] == 3 and s["lag"] == 0 else None)(
        status(srv, "dlq")), "three dead letters")
    assert st["errors"] == 6  # two deliveries each
    assert read(srv, "dlq-out") == []


def test_the_topics_dead_letter_is_the_default(srv):
    create_model(srv, "wide4")
    upload_ok(srv, "wide4", linear_bytes([1.0, 1.0, 1.0], 0.0, ("a", "b", "c")))
    approve(srv, "wide4", 1)
    put_topic(srv, "tdl-dead")
    put_topic(srv, "tdl-out")
    put_topic(srv, "tdl-in", {"dead_letter": "tdl-dead"})
    put_trigger(srv, "tdl", {"topic": "tdl-in", "consumer": {"max_deliver": 1},
                             "action": {"predict": {"model": "wide4", "output_topic": "tdl-out"}}})
    off = publish(srv, "tdl-in", [{"a": 1.0, "b": 2.0}])[0]
    dead = wait_records(srv, "tdl-dead", 1)
    assert dead[0]["event"]["offset"] == off and dead[0]["event"]["group"] == "trigger-tdl"


# ---- webhook and job actions --------------------------------------------------------------------

class Receiver:
    """An HTTP server on a thread of this test; records every POST."""

    def __init__(self):
        self.lock = threading.Condition()
        self.requests = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "body": body, "headers": {
                        k.lower(): v for k, v in self.headers.items()}})
                    receiver.lock.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.httpd.server_address[1], path)

    def wait_for(self, path, n):
        deadline = time.time() + WAIT
        with self.lock:
            while True:
                got = [r for r in self.requests if r["path"] == path]
                if len(got) >= n:
                    return got
                left = deadline - time.time()
                assert left > 0, "receiver got %d requests on %s, want %d" % (len(got), path, n)
                self.lock.wait(left)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


def put_destination(srv, name, url):
    r = srv.put("/v1/webhooks/" + name, json={"url": url})
    assert r.status_code in (200, 201), r.text


def test_webhook_action_delivers_the_event(srv, receiver):
    put_destination(srv, "hook-a", receiver.url("/a"))
    put_topic(srv, "wh-in")
    put_trigger(srv, "wh", {"topic": "wh-in", "filter": "kind == \"signup\"",
                            "action": {"webhook": {"destination": "hook-a"}}})
    evs = [{"kind": "signup", "user": "u1"}, {"kind": "login", "user": "u1"},
           {"kind": "signup", "user": "u2"}]
    publish(srv, "wh-in", evs)
    got = receiver.wait_for("/a", 2)
    bodies = [json.loads(r["body"]) for r in got]
    assert sorted(b["data"]["user"] for b in bodies) == ["u1", "u2"]
    for b, r in zip(bodies, got):
        assert b["specversion"] == "1.0" and b["source"] == "/v1/topics/wh-in"
        assert b["data"]["kind"] == "signup"
        assert r["headers"]["webhook-id"] == b["id"]
        assert r["headers"]["webhook-signature"].startswith("v1,")


def test_predict_to_a_webhook_only_when_the_condition_holds(srv, receiver, lin_model):
    put_destination(srv, "hook-p", receiver.url("/p"))
    put_topic(srv, "whp-in")
    put_trigger(srv, "whp", {"topic": "whp-in", "action": {"predict": {
        "model": lin_model, "webhook": "hook-p", "when": "prediction >= 10"}}})
    offs = publish(srv, "whp-in", [{"a": 1.0, "b": 0.0}, {"a": 10.0, "b": 0.0}])
    got = receiver.wait_for("/p", 1)
    b = json.loads(got[0]["body"])
    assert b["type"] == "basalt.prediction" and b["source"] == "/v1/triggers/whp"
    assert b["data"]["source"]["offset"] == offs[1]
    assert b["data"]["prediction"] == direct(srv, lin_model, {"a": 10.0, "b": 0.0})["predictions"][0]
    assert b["id"] == b["data"]["prediction_id"] == got[0]["headers"]["webhook-id"]
    eventually(lambda: status(srv, "whp")["processed"] >= 2, "whp processed both")
    assert len(receiver.wait_for("/p", 1)) == 1


def test_a_redelivery_does_not_duplicate_the_output(srv, receiver, lin_model):
    """The webhook after the output append fails (its destination is deleted), so the event
    is nacked and delivered again: the second append is answered by the output topic's dedup
    window with the first record, and once the destination is back the webhook carries the
    first record's prediction id."""
    put_destination(srv, "hook-d", receiver.url("/d"))
    put_topic(srv, "dup-in")
    put_topic(srv, "dup-out")
    put_trigger(srv, "dup", {"topic": "dup-in", "consumer": {"max_deliver": -1},
                             "action": {"predict": {"model": lin_model, "output_topic": "dup-out",
                                                    "webhook": "hook-d"}}})
    r = srv.delete("/v1/webhooks/hook-d")
    assert r.status_code == 204, r.text
    off = publish(srv, "dup-in", [{"a": 4.0, "b": 1.0}])[0]
    st = eventually(lambda: (lambda s: s if s["errors"] >= 2 else None)(status(srv, "dup")),
                    "two failed deliveries")
    assert "hook-d" in st["last_error"], st
    outs = read(srv, "dup-out")
    assert len(outs) == 1 and outs[0]["event"]["source"]["offset"] == off, outs
    put_destination(srv, "hook-d", receiver.url("/d"))
    got = receiver.wait_for("/d", 1)
    b = json.loads(got[0]["body"])
    assert b["id"] == outs[0]["event"]["prediction_id"] == b["data"]["prediction_id"]
    eventually(lambda: status(srv, "dup")["lag"] == 0, "dup acknowledged")
    assert len(read(srv, "dup-out")) == 1
    assert status(srv, "dup")["outputs"] == 1


def test_job_action_enqueues_a_sleep_job(srv):
    put_topic(srv, "job-in")
    put_trigger(srv, "sleeper", {"topic": "job-in", "action": {"job": {
        "kind": "sleep", "args": {"seconds": "delay / 1000"}}}})
    offs = publish(srv, "job-in", [{"delay": 0}, {"delay": 0}])

    def jobs():
        r = srv.get("/v1/jobs?kind=sleep")
        assert r.status_code == 200, r.text
        mine = [j for j in r.json()["items"] if j.get("created_by") == "trigger:sleeper"]
        return mine if len(mine) >= 2 else None
    got = eventually(jobs, "two sleep jobs")
    assert all(j["args"] == {"seconds": 0} for j in got), got
    assert len(offs) == 2


def test_registry_trigger_on_version_approved(srv, receiver):
    put_destination(srv, "hook-r", receiver.url("/r"))
    put_trigger(srv, "on-approve", {"on": "registry",
                                    "filter": "type == \"version.approved\" && data.model == \"reg\"",
                                    "action": {"webhook": {"destination": "hook-r"}}})
    create_model(srv, "reg")
    upload_ok(srv, "reg", linear_bytes([1.0, 1.0], 0.0))
    upload_ok(srv, "reg", linear_bytes([1.0, 2.0], 0.0))
    approve(srv, "reg", 2)
    got = receiver.wait_for("/r", 1)
    b = json.loads(got[0]["body"])
    assert b["type"] == "version.approved" and b["subject"] == "models/reg/versions/2"
    assert b["data"]["model"] == "reg" and b["data"]["version"] == 2
    assert b["data"]["status"] == "approved"
    st = eventually(lambda: (lambda s: s if s["processed"] >= 3 and s["lag"] == 0 else None)(
        status(srv, "on-approve")), "registry events processed")
    assert st["matched"] == 1  # two version.created, one version.approved
    assert len(receiver.wait_for("/r", 1)) == 1
    # The registry's events are an ordinary topic, readable like any other.
    t = srv.get("/v1/topics/registry-events")
    assert t.status_code == 200 and t.json()["created_by"] == "system:registry-events", t.text
    types = [r["event"]["type"] for r in read(srv, "registry-events")]
    assert types[-3:] == ["version.created", "version.created", "version.approved"], types


# ---- bad input ------------------------------------------------------------------------------------

def test_bad_specs(srv, lin_model):
    put_topic(srv, "bad-in")
    put_topic(srv, "bad-out")
    ok = {"model": lin_model, "output_topic": "bad-out"}
    r = srv.put("/v1/triggers/t1", json={"topic": "nope", "action": {"predict": ok}})
    assert_error(r, 400, field="topic", mentions="nope")
    r = srv.put("/v1/triggers/t1", json={"topic": "bad-in", "filter": "amount > > 3",
                                         "action": {"predict": ok}})
    e = assert_error(r, 400, field="filter", code="invalid_input")
    assert "at 1:" in e["message"], e
    r = srv.put("/v1/triggers/t1", json={"topic": "bad-in", "filter": "lg(amount) > 3",
                                         "action": {"predict": ok}})
    e = assert_error(r, 400, field="filter")
    assert "at 1:1" in e["message"], e
    r = srv.put("/v1/triggers/t1", json={"topic": "bad-in", "action": {"predict": {
        "model": "no-such-model", "output_topic": "bad-out"}}})
    assert_error(r, 400, field="action.predict.model", mentions="no-such-model")
    r = srv.put("/v1/triggers/t1", json={"topic": "bad-in", "action": {"predict": {
        "model": lin_model, "version": 99, "output_topic": "bad-out"}}})
    assert_error(r, 400, field="action.predict.version")
    r = srv.put("/v1/triggers/t1", json={"topic": "bad-in", "action": {"predict": {
        "model": lin_model, "output_topic": "missing-out"}}})
    assert_error(r, 400, field="action.predict.output_topic")
    r = srv.put("/v1/triggers/t1", json={"topic": "bad-in", "action": {"predict": {
        "model": lin_model, "output_topic": "bad-out", "when": "score >"}}})
    assert_error(r, 400, field="action.predict.when")
    r = srv.put("/v1/triggers/t1", json={"topic": "bad-in", "action": {"predict": {
        "model": lin_model, "output_topic": "bad-out", "inputs": {"a": "(("}}}})
    assert_error(r, 400, field="action.predict.inputs.a")
    r = srv.put("/v1/triggers/t1", json={"topic": "bad-in", "action": {"predict": {
        "model": lin_model}}})
    assert_error(r, 400, field="action.predict.output_topic")
    r = srv.put("/v1/triggers/t1", json={"topic": "bad-in", "action": {"shout": {}}})
    assert_error(r, 400, field="action")
    r = srv.put("/v1/triggers/t1", json={"topic": "bad-in", "action": {}})
    assert_error(r, 400, field="action")
    r = srv.put("/v1/triggers/t1", json={"topic": "bad-in", "action": {"webhook": {
        "destination": "no-such-hook"}}})
    assert_error(r, 400, field="action.webhook.destination")
    r = srv.put("/v1/triggers/t1", json={"topic": "bad-in", "action": {"job": {
        "kind": "no.such.kind"}}})
    assert_error(r, 400, field="action.job.kind", mentions="no.such.kind")
    r = srv.put("/v1/triggers/t1", json={"topic": "bad-in", "action": {"job": {
        "kind": "webhook.deliver"}}})
    assert_error(r, 400, field="action.job.kind")
    r = srv.put("/v1/triggers/t1", json={"topic": "bad-in", "colour": "red",
                                         "action": {"predict": ok}})
    assert_error(r, 400, field="colour")
    r = srv.put("/v1/triggers/t1", json={"topic": "bad-in", "consumer": {"ack_wait": "soon"},
                                         "action": {"predict": ok}})
    assert_error(r, 400, field="consumer.ack_wait")
    r = srv.put("/v1/triggers/" + "x" * 60, json={"topic": "bad-in", "action": {"predict": ok}})
    assert_error(r, 400, field="name")
    r = srv.put("/v1/triggers/t1", json={"topic": "bad-out", "action": {"predict": {
        "model": lin_model, "output_topic": "bad-out"}}})
    assert_error(r, 400, field="action.predict.output_topic")
    # None of these was stored.
    assert_error(srv.get("/v1/triggers/t1"), 404)


def test_dry_run_list_and_delete(srv, lin_model):
    put_topic(srv, "dl-in")
    put_topic(srv, "dl-out")
    spec = {"topic": "dl-in", "action": {"predict": {"model": lin_model, "output_topic": "dl-out"}}}
    r = srv.put("/v1/triggers/dl?dry_run=true", json=spec)
    assert r.status_code == 200 and r.json()["outcome"] == "created", r.text
    assert_error(srv.get("/v1/triggers/dl"), 404)
    put_trigger(srv, "dl", spec, 201)
    names = [t["name"] for t in srv.get("/v1/triggers?limit=1000").json()["items"]]
    assert "dl" in names
    r = srv.delete("/v1/triggers/dl")
    assert r.status_code == 204, r.text
    assert_error(srv.get("/v1/triggers/dl"), 404)
    m = srv.metrics()
    assert m.get("basalt_trigger_processed_total", tenant="default", trigger="dl") is None


def test_metrics_and_openapi(srv, lin_model):
    put_topic(srv, "met-in")
    put_topic(srv, "met-out")
    put_trigger(srv, "met", {"topic": "met-in", "action": {"predict": {
        "model": lin_model, "output_topic": "met-out"}}})
    publish(srv, "met-in", [{"a": 1.0, "b": 1.0}])
    wait_records(srv, "met-out", 1)
    eventually(lambda: srv.metrics().get("basalt_trigger_latency_seconds_count", tenant="default",
                                         trigger="met") == 1, "the latency histogram counted it")
    m = srv.metrics()
    assert m.get("basalt_trigger_processed_total", tenant="default", trigger="met") == 1
    assert m.get("basalt_trigger_outputs_total", tenant="default", trigger="met") == 1
    assert m.get("basalt_trigger_lag", tenant="default", trigger="met") == 0
    assert m.get("basalt_trigger_latency_seconds_bucket", tenant="default", trigger="met",
                 le="+Inf") == 1
    doc = srv.get("/openapi.json").json()
    assert "/v1/triggers/{name}" in doc["paths"]
    kinds = [k["kind"] for k in srv.get("/v1/kinds").json()["items"]]
    assert "Trigger" in kinds


def test_triggers_survive_a_restart(start_server):
    srv = start_server("--threads", "2")
    publish_model(srv, "lin", linear_bytes([2.0, -1.0], 1.0, ("a", "b")))
    put_topic(srv, "rs-in")
    put_topic(srv, "rs-out")
    put_trigger(srv, "rs", {"topic": "rs-in", "action": {"predict": {
        "model": "lin", "output_topic": "rs-out"}}})
    publish(srv, "rs-in", [{"a": 1.0, "b": 0.0}])
    wait_records(srv, "rs-out", 1)
    srv.stop()
    srv.start()
    off = publish(srv, "rs-in", [{"a": 2.0, "b": 0.0}])[0]
    outs = wait_records(srv, "rs-out", 2)
    assert outs[1]["event"]["source"]["offset"] == off
    assert outs[1]["event"]["prediction"] == 5
    assert status(srv, "rs")["state"] == "running"


# ---- two replicas on JetStream ----------------------------------------------------------------

@pytest.mark.embedded  # starts its own PostgreSQL and nats-server (run once, in the embedded pass)
def test_two_replicas_share_a_trigger_on_jetstream():
    """Replicas a and b on one PostgreSQL and one JetStream both run trigger "share" on the
    same durable consumer: every event is scored once (the replicas' processed counts add
    up to the events), and after a SIGKILL of one the other scores what follows as well as
    what the dead one had taken without acknowledging (after ack_wait)."""
    import os
    import sys
    from conftest import ROOT, Server
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from nats_server import NatsServer
    from pg_server import PgServer
    pg = PgServer().start()
    nats = NatsServer().start()
    replicas = []
    try:
        db = pg.create_database()
        for rid in ("a", "b"):
            s = Server(args=["--metadata-url", db, "--nats-url", nats.url, "--replica-id", rid,
                             "--threads", "2"], metadata=False)
            s.start()
            replicas.append(s)
        key = next(s.admin_key for s in replicas if s.admin_key)
        for s in replicas:
            s.admin_key = key
        a, b = replicas
        publish_model(a, "lin", linear_bytes([2.0, -1.0], 1.0, ("a", "b")))
        put_topic(a, "sh-in")
        put_topic(a, "sh-out")
        put_trigger(a, "share", {"topic": "sh-in", "consumer": {"ack_wait": "2s"},
                                 "action": {"predict": {"model": "lin", "output_topic": "sh-out"}}})
        eventually(lambda: b.get("/v1/triggers/share").status_code == 200
                   and status(b, "share")["state"] == "running", "share running on b")
        offs = []
        for i in range(20):
            offs += publish(a if i % 2 else b, "sh-in", [{"a": float(i * 10 + k), "b": 1.0}
                                                         for k in range(10)])
        outs = wait_records(a, "sh-out", len(offs))
        srcs = [r["event"]["source"]["offset"] for r in outs]
        assert sorted(srcs) == sorted(offs), "each event scored once"
        for r in outs:
            ev = r["event"]
            assert ev["prediction"] == 2 * ev["event"]["a"] - ev["event"]["b"] + 1
        done = eventually(lambda: (lambda p: p if sum(p) == len(offs) else None)(
            [status(s, "share")["processed"] for s in replicas]), "processed adds up")
        assert sum(done) == len(offs)
        a.kill9()
        more = publish(b, "sh-in", [{"a": float(k), "b": 0.0} for k in range(30)])
        outs = wait_records(b, "sh-out", len(offs) + len(more))
        srcs = set(r["event"]["source"]["offset"] for r in outs)
        assert srcs == set(offs) | set(more)
    finally:
        for s in replicas:
            s.stop() if s.running() else None
            reports = s.sanitizer_reports()
            s.cleanup()
            assert not reports, reports[0]
        nats.close()
        pg.cleanup()


APPLY = """\
kind: Topic
name: ap-in
spec: {}
---
kind: Topic
name: ap-out
spec: {}
---
kind: Trigger
name: ap
spec:
  topic: ap-in
  filter: a > 1 && kind == "x"
  action:
    predict:
      model: lin
      output_topic: ap-out
      inputs:
        a: a
        b: "b * 2"
"""


def test_basalt_apply_a_trigger_with_its_topics(srv, lin_model, tmp_path):
    import subprocess
    from conftest import BASALT_BIN, REQUEST_TIMEOUT, clean_env

    def cli(*args):
        cp = subprocess.run([BASALT_BIN, *args], env=clean_env({
            "BASALT_URL": srv.url, "BASALT_API_KEY": srv.admin_key}), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, timeout=2 * REQUEST_TIMEOUT)
        assert cp.returncode == 0, (cp.stdout, cp.stderr)
        return cp.stdout
    f = tmp_path / "pipeline.yaml"
    f.write_text(APPLY)
    assert cli("apply", "-f", str(f)) == \
        "topic/ap-in created\ntopic/ap-out created\ntrigger/ap created\n"
    assert cli("apply", "-f", str(f)).endswith("trigger/ap unchanged\n")
    assert "ap" in cli("get", "triggers")
    offs = publish(srv, "ap-in", [{"a": 3.0, "b": 1.0, "kind": "x"}, {"a": 3.0, "b": 1.0}])
    out = wait_records(srv, "ap-out", 1)
    assert out[0]["event"]["source"]["offset"] == offs[0]
    assert out[0]["event"]["prediction"] == 2 * 3.0 - 2.0 + 1
