"""Progressive rollouts with automatic rollback (issue 10): POST /v1/endpoints/{name}/rollouts,
the controller that raises the candidate's weight step by step while every guard holds, and
rolls the endpoint back at once when one fails; pause / resume / abort / promote; state that
survives a restart and the controller replica's kill -9 (two replicas on one PostgreSQL and
one NATS JetStream).

Traffic is driven from the test by threads calling the endpoint's predict route with rows
the test draws; the candidates are built to fail one guard each: one whose schema requires a
feature the traffic does not send (error rate), one that is much slower (a wide MLP; the p99
limit is set between the two versions' latencies as the rollout itself measured them), one
trained on shifted labels (prediction PSI), one whose feedback accuracy is worse (feedback
sent from the labels the test knows). The assertions are on the controller's decisions (which
guard, the endpoint's spec and revisions, the champion alias), never on timing.
"""
import http.client
import itertools
import json
import subprocess
import threading
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from conftest import BASALT_BIN, Server, clean_env, nats_server, pg_server
from modelkit import (approve, assert_error, create_model, exporter, linear_bytes, set_alias,
                      upload_ok)

BOUND = 60.0  # generous bound for anything the controller does asynchronously
TICK = ["--rollout-tick-ms", "100"]
_seq = itertools.count(1)


def uniq(prefix):
    return "%s%d" % (prefix, next(_seq))


# ---- helpers ------------------------------------------------------------------------------

def rng_rows(n, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    return pd.DataFrame(X, columns=["a", "b"])


def sk_bytes(model):
    doc = exporter().to_json(model)
    return doc.encode() if isinstance(doc, str) else doc


def publish(srv, name, artifacts, fmt=None):
    """Model `name` with one approved version per artifact (1, 2, ...)."""
    create_model(srv, name)
    for i, a in enumerate(artifacts, 1):
        v = upload_ok(srv, name, a, fmt)
        assert v["version"] == i
        approve(srv, name, i)


def put_endpoint(srv, name, spec):
    r = srv.put("/v1/endpoints/" + name, json=spec)
    assert r.status_code in (200, 201), r.text
    return r.json()


def endpoint_spec(srv, name):
    r = srv.get("/v1/endpoints/" + name)
    assert r.status_code == 200, r.text
    return r.json()["spec"]


def start(srv, ep, body, status=201):
    r = srv.post("/v1/endpoints/%s/rollouts" % ep, json=body)
    assert r.status_code == status, r.text
    return r.json()


def get(srv, ep, rid):
    r = srv.get("/v1/endpoints/%s/rollouts/%s" % (ep, rid))
    assert r.status_code == 200, r.text
    return r.json()


def act(srv, ep, rid, verb, status=200):
    r = srv.post("/v1/endpoints/%s/rollouts/%s/%s" % (ep, rid, verb))
    assert r.status_code == status, r.text
    return r.json()


def wait_rollout(srv, ep, rid, pred, what, timeout=BOUND):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = get(srv, ep, rid)
        except (AssertionError, OSError):
            last = None
        if last and pred(last):
            return last
        time.sleep(0.05)
    raise AssertionError("%s: not within %.0f s (last: %s)"
                         % (what, timeout, json.dumps(last)[:3000] if last else None))


def wait_state(srv, ep, rid, states, timeout=BOUND):
    return wait_rollout(srv, ep, rid, lambda j: j["state"] in states,
                        "rollout %s in %s" % (rid, states), timeout)


def revisions(srv, ep):
    r = srv.get("/v1/endpoints/%s/revisions?limit=1000" % ep)
    assert r.status_code == 200, r.text
    return sorted(r.json()["items"], key=lambda i: i["revision"])


def route_weights(spec):
    return [(r["name"], r.get("version"), r.get("alias"), r["weight"]) for r in spec["routes"]]


class Traffic:
    """Threads that call the endpoint's predict route with rows of `rows` (a DataFrame, one
    row per request, cycled) until stopped. Records every answer: (status, version,
    prediction_id, row index)."""

    def __init__(self, srv, ep, rows, threads=2, extra=None):
        self.srv, self.ep, self.rows, self.extra = srv, ep, rows, extra or {}
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.answers = []
        self.errors = []  # transport failures
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(threads)]
        self.bodies = [json.dumps({"inputs": dict(r, **self.extra)})
                       for r in rows.to_dict("records")]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(30)

    def _run(self, k):
        conn = http.client.HTTPConnection(self.srv.host, self.srv.port, timeout=30)
        h = {"Authorization": "Bearer " + self.srv.admin_key,
             "Content-Type": "application/json"}
        i = k
        while not self.stop_ev.is_set():
            idx = i % len(self.bodies)
            i += len(self.threads)
            try:
                conn.request("POST", "/v1/endpoints/%s/predict" % self.ep, self.bodies[idx], h)
                r = conn.getresponse()
                data = r.read()
            except (http.client.HTTPException, OSError) as e:
                with self.lock:
                    self.errors.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection(self.srv.host, self.srv.port, timeout=30)
                time.sleep(0.05)
                continue
            version = r.getheader("X-Basalt-Model-Version")
            pid = None
            if r.status == 200:
                pid = json.loads(data)["prediction_ids"][0]
            with self.lock:
                self.answers.append((r.status, int(version) if version else None, pid, idx))
        conn.close()

    def snapshot(self):
        with self.lock:
            return list(self.answers)


def lease_held(srv):
    """basalt_lease_held{name="rollout-controller"} of srv (its label is called name)."""
    m = srv.metrics()
    return m.samples.get(("basalt_lease_held", frozenset({"name": "rollout-controller"}.items())))


def send_feedback(srv, items):
    for i in range(0, len(items), 1000):
        r = srv.post("/v1/feedback", json={"items": items[i:i + 1000]})
        assert r.status_code == 200, r.text
        j = r.json()
        assert j["rejected"] == 0, j


@pytest.fixture(scope="module")
def srv():
    s = Server(args=["--threads", "2"] + TICK).start()
    yield s
    s.stop()
    reports = s.sanitizer_reports()
    s.cleanup()
    assert not reports, reports[0]


def linear_models(n_versions=2, shift=0.0):
    """Linear regressions on (a, b): version 1 y = a + b, the next ones nearly the same."""
    out = [linear_bytes([1.0, 1.0], 0.0)]
    for v in range(2, n_versions + 1):
        out.append(linear_bytes([1.0 + 0.01 * v, 1.0 - 0.01 * v], 0.01 * v + shift))
    return out


# ---- bad input ----------------------------------------------------------------------------

def test_bad_input(srv):
    m, ep = uniq("m"), uniq("ep")
    publish(srv, m, linear_models(2))
    upload_ok(srv, m, linear_bytes([0.5, 0.5], 0.0))  # version 3: pending
    put_endpoint(srv, ep, {"model": m, "routes": [{"version": 1, "weight": 100}]})
    base = endpoint_spec(srv, ep)
    ok = {"candidate": {"version": 2}, "steps": [10, 50, 100], "step_interval": "1h"}

    def bad(body, status, field=None, path=ep, mentions=None):
        r = srv.post("/v1/endpoints/%s/rollouts" % path, json=body)
        kw = {} if field is None else {"field": field}
        assert_error(r, status, mentions=mentions, **kw)

    bad(ok, 404, field="endpoint", path=uniq("nope"))
    bad(dict(ok, candidate={"version": 9}), 404, field="candidate.version")
    bad(dict(ok, candidate={"alias": "nosuch"}), 404, field="candidate.alias")
    bad(dict(ok, candidate={"version": 3}), 400, field="candidate.version",
        mentions="not approved")
    bad(dict(ok, candidate={}), 400, field="candidate")
    bad(dict(ok, candidate={"version": 2, "alias": "x"}), 400, field="candidate")
    bad({"steps": [10, 100]}, 400, field="candidate")
    bad(dict(ok, steps=[10, 10, 100]), 400, field="steps[1]")
    bad(dict(ok, steps=[50, 20, 100]), 400, field="steps[1]")
    bad(dict(ok, steps=[10, 50]), 400, field="steps", mentions="100")
    bad(dict(ok, steps=[100]), 400, field="steps")
    bad(dict(ok, steps=[0, 100]), 400, field="steps[0]")
    bad(dict(ok, steps=[10.5, 100]), 400, field="steps[0]")
    bad(dict(ok, steps="10,100"), 400, field="steps")
    bad(dict(ok, step_interval="soon"), 400, field="step_interval")
    bad(dict(ok, min_requests_per_step=-1), 400, field="min_requests_per_step")
    bad(dict(ok, colour="blue"), 400, field="colour")
    bad(dict(ok, guards={"max_error_rate": 2}), 400, field="guards.max_error_rate")
    bad(dict(ok, guards={"max_p99_latency_ms": 0}), 400, field="guards.max_p99_latency_ms")
    bad(dict(ok, guards={"max_prediction_psi": "0.2"}), 400, field="guards.max_prediction_psi")
    bad(dict(ok, guards={"max_metric_drop": {"metric": "vibes", "delta": 0.1}}), 400,
        field="guards.max_metric_drop.metric")
    bad(dict(ok, guards={"max_metric_drop": {"metric": "accuracy"}}), 400,
        field="guards.max_metric_drop.delta")
    bad(dict(ok, guards={"max_latency": 3}), 400, field="guards.max_latency")
    r = srv.post("/v1/endpoints/%s/rollouts" % ep, data="{", headers={"Content-Type":
                                                                      "application/json"})
    assert_error(r, 400)
    # the candidate already takes all the traffic: nothing to compare with
    bad(dict(ok, candidate={"version": 1}), 400, field="candidate")
    # a bandit endpoint sets no weights
    ep2 = uniq("ep")
    put_endpoint(srv, ep2, {"model": m, "routes": [{"version": 1, "weight": 100}],
                            "policy": {"type": "thompson", "reward": {"label": 1}}})
    bad(ok, 400, field="endpoint", path=ep2, mentions="weighted")
    # nothing above was stored or changed the endpoint
    assert endpoint_spec(srv, ep) == base
    r = srv.get("/v1/endpoints/%s/rollouts" % ep)
    assert r.status_code == 200 and r.json() == {"items": [], "next_cursor": None}
    assert_error(srv.get("/v1/endpoints/%s/rollouts" % uniq("nope")), 404)
    # one at a time: a second while one runs (or is paused) is a conflict
    first = start(srv, ep, ok)
    bad(ok, 409, mentions=first["id"])
    act(srv, ep, first["id"], "pause")
    bad(ok, 409)
    act(srv, ep, first["id"], "abort")
    second = start(srv, ep, ok)
    assert second["id"] != first["id"]
    act(srv, ep, second["id"], "abort")
    # actions a finished rollout does not allow, unknown ids
    for verb in ("pause", "resume", "abort", "promote"):
        assert_error(srv.post("/v1/endpoints/%s/rollouts/%s/%s" % (ep, first["id"], verb)), 409)
    assert_error(srv.post("/v1/endpoints/%s/rollouts/%s/resume" % (ep, "0" * 8)), 404)
    assert_error(srv.get("/v1/endpoints/%s/rollouts/%s" % (ep, "x" * 200)), 404)
    assert_error(srv.get("/v1/endpoints/%s/rollouts/%s" % (ep2, first["id"])), 404)
    # list: newest first, paginated
    page = srv.get("/v1/endpoints/%s/rollouts?limit=1" % ep).json()
    assert [i["id"] for i in page["items"]] == [second["id"]] and page["next_cursor"]
    page2 = srv.get("/v1/endpoints/%s/rollouts?limit=1&cursor=%s"
                    % (ep, page["next_cursor"])).json()
    assert [i["id"] for i in page2["items"]] == [first["id"]] and page2["next_cursor"] is None


def test_roles_and_tenants(srv):
    m, ep = uniq("m"), uniq("ep")
    publish(srv, m, linear_models(2))
    put_endpoint(srv, ep, {"model": m, "routes": [{"version": 1, "weight": 100}]})
    body = {"candidate": {"version": 2}, "steps": [10, 100], "step_interval": "1h"}
    viewer = srv.create_key("viewer")["key"]
    predictor = srv.create_key("predictor")["key"]
    developer = srv.create_key("developer")["key"]
    for k in (viewer, predictor):
        assert_error(srv.post("/v1/endpoints/%s/rollouts" % ep, key=k, json=body), 403)
    r = srv.post("/v1/endpoints/%s/rollouts" % ep, key=developer, json=body)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert srv.get("/v1/endpoints/%s/rollouts/%s" % (ep, rid), key=viewer).status_code == 200
    assert_error(srv.post("/v1/endpoints/%s/rollouts/%s/pause" % (ep, rid), key=viewer), 403)
    # another tenant sees neither the endpoint nor the rollout
    t = uniq("t")
    assert srv.post("/v1/tenants", json={"name": t}).status_code == 201
    other = srv.create_key("admin", tenant=t)["key"]
    assert_error(srv.get("/v1/endpoints/%s/rollouts/%s" % (ep, rid), key=other), 404)
    assert_error(srv.post("/v1/endpoints/%s/rollouts" % ep, key=other, json=body), 404)
    assert_error(srv.post("/v1/endpoints/%s/rollouts/%s/abort" % (ep, rid), key=other), 404)
    assert act(srv, ep, rid, "abort")["state"] == "aborted"


def test_weights_scaled_and_abort_restores(srv):
    """The step's spec: the candidate at the step's weight, the stable routes scaled to the
    rest (largest remainder) in their order; abort puts the pre-rollout spec back as a new
    revision."""
    m, ep = uniq("m"), uniq("ep")
    publish(srv, m, linear_models(3))
    put_endpoint(srv, ep, {"model": m, "routes": [{"version": 1, "weight": 60},
                                                  {"version": 2, "weight": 40}],
                           "shadow": [{"version": 3, "fraction": 0.5}]})
    base = endpoint_spec(srv, ep)
    j = start(srv, ep, {"candidate": {"version": 3}, "steps": [25, 70, 100],
                        "step_interval": "1h"})
    assert j["state"] == "running" and j["step"] == 0 and j["weight"] == 25
    assert j["candidate"] == {"version": 3, "route": "v3"}
    assert [(s["name"], s["version"], s["weight"]) for s in j["stable"]] == \
        [("v1", 1, 60), ("v2", 2, 40)]
    assert j["base_generation"] == 1
    spec = endpoint_spec(srv, ep)
    assert route_weights(spec) == [("v1", 1, None, 45), ("v2", 2, None, 30), ("v3", 3, None, 25)]
    assert spec["shadow"] == []  # the candidate is not also its own shadow
    # promote-now writes the candidate alone; a second endpoint shows abort
    a = act(srv, ep, j["id"], "abort")
    assert a["state"] == "aborted" and a["weight"] == 0 and "aborted by" in a["reason"]
    assert endpoint_spec(srv, ep) == base
    revs = revisions(srv, ep)
    assert [r["revision"] for r in revs] == [1, 2, 3]
    assert revs[2]["spec"] == base and revs[0]["spec"] == base
    assert [e["event"] for e in a["history"]] == ["started", "aborted"]
    # the candidate already routed at 20 %: its route is reused (same name), pinned by version
    set_alias(srv, m, "challenger", 2)
    put_endpoint(srv, ep, {"model": m, "routes": [{"version": 1, "weight": 80},
                                                  {"alias": "challenger", "weight": 20,
                                                   "name": "b"}]})
    j = start(srv, ep, {"candidate": {"alias": "challenger"}, "steps": [50, 100],
                        "step_interval": "1h"})
    assert j["candidate"] == {"version": 2, "alias": "challenger", "route": "b"}
    assert route_weights(endpoint_spec(srv, ep)) == [("v1", 1, None, 50), ("b", 2, None, 50)]
    p = act(srv, ep, j["id"], "promote")
    assert p["state"] == "promoted" and p["weight"] == 100
    assert route_weights(endpoint_spec(srv, ep)) == [("b", 2, None, 100)]


# ---- the controller -----------------------------------------------------------------------

def test_healthy_candidate_promoted_through_every_step(srv):
    """Every step is reached in order (the endpoint's revisions have each step's weights),
    every request is answered during the changes, and the promotion moves `champion`."""
    m, ep = uniq("m"), uniq("ep")
    publish(srv, m, linear_models(2))
    assert set_alias(srv, m, "champion", 1).status_code == 200
    put_endpoint(srv, ep, {"model": m, "routes": [{"alias": "champion", "weight": 100}]})
    steps = [10, 30, 60, 100]
    with Traffic(srv, ep, rng_rows(500, 1)) as tr:
        j = start(srv, ep, {"candidate": {"version": 2}, "steps": steps, "step_interval": "1s",
                            "min_requests_per_step": 30,
                            "guards": {"max_error_rate": 0.01, "max_p99_latency_ms": 10000,
                                       "max_prediction_psi": 1.0, "min_requests": 100}})
        # (PSI over 10 bins with a 1e-4 floor is noisy on a few dozen predictions: an empty
        # bin alone adds about 0.7, hence the guards' 100)
        done = wait_state(srv, ep, j["id"], ("promoted", "rolled_back", "aborted"))
        tr.stop()
    assert done["state"] == "promoted", done
    assert done["reason"] == "every step passed its guards"
    events = [(e["event"], e["weight"]) for e in done["history"]]
    assert events == [("started", 10), ("advanced", 30), ("advanced", 60), ("promoted", 100)]
    lc = done["last_check"]
    for g in ("max_error_rate", "max_p99_latency_ms", "max_prediction_psi"):
        assert lc[g]["ok"] is True, lc
    assert lc["candidate"]["requests"] >= 30 and lc["candidate"]["version"] == 2
    # each step was a revision with the step's weights, then the champion route alone
    specs = [r["spec"] for r in revisions(srv, ep)]
    assert [route_weights(s) for s in specs] == [
        [("champion", None, "champion", 100)],
        [("champion", None, "champion", 90), ("v2", 2, None, 10)],
        [("champion", None, "champion", 70), ("v2", 2, None, 30)],
        [("champion", None, "champion", 40), ("v2", 2, None, 60)],
        [("champion", None, "champion", 100)]]
    r = srv.get("/v1/models/%s" % m)
    assert r.status_code == 200
    assert r.json()["aliases"]["champion"] == 2, r.json()
    # no request failed while the weights changed; both versions served
    answers = tr.snapshot()
    assert answers and not tr.errors
    assert all(a[0] == 200 for a in answers), [a for a in answers if a[0] != 200][:3]
    assert {a[1] for a in answers} == {1, 2}
    # the endpoint now serves the candidate through the alias
    r = srv.post("/v1/endpoints/%s/predict" % ep, json={"inputs": {"a": 1.0, "b": 1.0}})
    assert r.status_code == 200 and r.json()["version"] == 2
    # metrics
    mt = srv.metrics()
    labels = {"tenant": "default", "endpoint": ep, "rollout": j["id"]}
    assert mt.get("basalt_rollout_state", state="promoted", **labels) == 1
    assert mt.get("basalt_rollout_state", state="running", **labels) == 0
    assert mt.get("basalt_rollout_weight_percent", **labels) == 100
    assert mt.get("basalt_rollouts_total", outcome="promoted") >= 1
    assert lease_held(srv) == 1


def run_to_rollback(srv, ep, candidate, guards, rows, steps=(50, 100), extra=None,
                    min_requests=40, interval="10m", during=None):
    """Starts a rollout that cannot advance (a long step) with traffic on, waits for the
    controller to end it; returns (rollout, traffic)."""
    with Traffic(srv, ep, rows, extra=extra) as tr:
        j = start(srv, ep, {"candidate": {"version": candidate}, "steps": list(steps),
                            "step_interval": interval, "min_requests_per_step": min_requests,
                            "guards": guards})
        if during:
            during(j, tr)
        done = wait_state(srv, ep, j["id"], ("promoted", "rolled_back", "aborted"))
    return done, tr


def check_rolled_back(srv, ep, done, guard, base):
    assert done["state"] == "rolled_back", done
    assert done["failed_guard"] == guard, done
    assert guard in done["reason"], done["reason"]
    g = done["last_check"][guard]
    assert g["ok"] is False and g["value"] > g["limit"], g
    assert "%.6g" % g["limit"] in done["reason"]
    assert done["history"][-1]["event"] == "rolled_back"
    assert done["history"][-1]["guard"] == guard
    # the endpoint is back to its spec from before the rollout (a new revision)
    assert endpoint_spec(srv, ep) == base
    revs = revisions(srv, ep)
    assert revs[-1]["spec"] == base and len(revs) == 3


def test_erroring_candidate_rolled_back_by_error_rate(srv):
    m, ep = uniq("m"), uniq("ep")
    publish(srv, m, [linear_bytes([1.0, 1.0], 0.0),
                     linear_bytes([1.0, 1.0, 1.0], 0.0, names=("a", "b", "c"))])
    base = put_endpoint(srv, ep, {"model": m, "routes": [{"version": 1, "weight": 100}]})["spec"]
    done, tr = run_to_rollback(srv, ep, 2, {"max_error_rate": 0.05, "max_prediction_psi": 5},
                               rng_rows(300, 2))
    check_rolled_back(srv, ep, done, "max_error_rate", base)
    assert done["last_check"]["max_error_rate"]["value"] == 1.0
    assert done["last_check"]["max_error_rate"]["stable"] == 0
    # the candidate's requests failed (400, missing feature c); the stable's never
    answers = tr.snapshot()
    assert {a[0] for a in answers if a[1] == 1} == {200}
    assert {a[0] for a in answers if a[1] == 2} == {400}


def wide_mlp_bytes(width=1000):
    """A regression MLP on (a, b) with two hidden layers of `width` units: about width²
    multiply-adds per row, so far slower than a linear model. Weights are small constants
    (what it predicts does not matter here)."""
    w = 0.001
    layers = [{"weights": [[w] * width for _ in range(2)], "bias": [0.0] * width},
              {"weights": [[w] * width for _ in range(width)], "bias": [0.0] * width},
              {"weights": [[w] for _ in range(width)], "bias": [0.0]}]
    doc = {"basalt_model": 1,
           "inputs": [{"name": "a", "type": "float"}, {"name": "b", "type": "float"}],
           "estimator": {"type": "mlp", "activation": "relu", "output_activation": "identity",
                         "layers": layers},
           "output": {"task": "regression", "n_outputs": 1}}
    return json.dumps(doc, separators=(",", ":")).encode()


def test_slow_candidate_rolled_back_by_p99_latency(srv):
    m, ep = uniq("m"), uniq("ep")
    publish(srv, m, [linear_bytes([1.0, 1.0], 0.0), wide_mlp_bytes()], fmt="basalt_json")
    base = put_endpoint(srv, ep, {"model": m, "routes": [{"version": 1, "weight": 100}]})["spec"]
    rows = rng_rows(300, 3)
    # measure both versions' latencies with a rollout that has no latency guard
    with Traffic(srv, ep, rows):
        j = start(srv, ep, {"candidate": {"version": 2}, "steps": [50, 100],
                            "step_interval": "10m", "min_requests_per_step": 100})
        seen = wait_rollout(srv, ep, j["id"],
                            lambda x: x["last_check"] and
                            x["last_check"]["candidate"]["requests"] >= 200 and
                            x["last_check"]["stable"]["requests"] >= 200,
                            "both versions measured")
        act(srv, ep, j["id"], "abort")
    fast_p99 = seen["last_check"]["stable"]["latency_p99_ms"]
    slow_p50 = seen["last_check"]["candidate"]["latency_p50_ms"]
    limit = (fast_p99 * slow_p50) ** 0.5  # between the stable's tail and the candidate's median
    done, tr = run_to_rollback(srv, ep, 2, {"max_error_rate": 0.05, "max_p99_latency_ms": limit},
                               rows, min_requests=100)
    assert done["state"] == "rolled_back", (fast_p99, slow_p50, done)
    assert done["failed_guard"] == "max_p99_latency_ms", done
    assert "max_p99_latency_ms" in done["reason"]
    g = done["last_check"]["max_p99_latency_ms"]
    assert g["ok"] is False and g["limit"] == pytest.approx(limit) and g["value"] > limit
    assert endpoint_spec(srv, ep) == base
    assert {a[0] for a in tr.snapshot()} == {200}


def test_shifted_candidate_rolled_back_by_prediction_psi(srv):
    """The candidate was trained on labels shifted by two standard deviations: its
    predictions' distribution moves away from the stable's, and PSI says so."""
    m, ep = uniq("m"), uniq("ep")
    X = rng_rows(400, 4)
    y = X["a"] + X["b"] + np.random.default_rng(5).normal(scale=0.1, size=len(X))
    stable = LinearRegression().fit(X, y)
    shifted = LinearRegression().fit(X, y + 2 * y.std())
    publish(srv, m, [sk_bytes(stable), sk_bytes(shifted)], fmt="basalt_json")
    base = put_endpoint(srv, ep, {"model": m, "routes": [{"version": 1, "weight": 100}]})["spec"]
    done, tr = run_to_rollback(srv, ep, 2, {"max_error_rate": 0.05, "max_p99_latency_ms": 10000,
                                            "max_prediction_psi": 0.25}, rng_rows(300, 6))
    check_rolled_back(srv, ep, done, "max_prediction_psi", base)
    psi = done["last_check"]["max_prediction_psi"]
    assert psi["n_stable"] >= 10 and psi["n_candidate"] >= 10
    assert done["last_check"]["max_error_rate"]["ok"] is True


def test_worse_candidate_rolled_back_by_metric_drop(srv):
    """Classifiers of the sign of a + b: the stable learnt it, the candidate learnt the sign
    of a - b. Feedback with the true labels (which the test knows for every row it sent) makes
    the candidate's accuracy about 0.5 against about 1: max_metric_drop rolls it back."""
    m, ep = uniq("m"), uniq("ep")
    X = rng_rows(600, 7)
    y = (X["a"] + X["b"] > 0).astype(int)
    good = LogisticRegression().fit(X, y)
    bad = LogisticRegression().fit(X, (X["a"] - X["b"] > 0).astype(int))
    publish(srv, m, [sk_bytes(good), sk_bytes(bad)], fmt="basalt_json")
    base = put_endpoint(srv, ep, {"model": m, "routes": [{"version": 1, "weight": 100}]})["spec"]
    rows = rng_rows(400, 8)
    labels = (rows["a"] + rows["b"] > 0).astype(int).tolist()
    sent = set()

    def feed(j, tr):
        # feedback for every answered prediction until the controller decides
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            items = []
            for status, version, pid, idx in tr.snapshot():
                if status == 200 and pid not in sent:
                    sent.add(pid)
                    items.append({"prediction_id": pid, "label": str(labels[idx])})
            if items:
                send_feedback(srv, items)
            if get(srv, ep, j["id"])["state"] != "running":
                return
            time.sleep(0.2)

    done, tr = run_to_rollback(srv, ep, 2, {"max_error_rate": 0.05,
                                            "max_metric_drop": {"metric": "accuracy",
                                                                "delta": 0.1}},
                               rows, during=feed)
    check_rolled_back(srv, ep, done, "max_metric_drop", base)
    md = done["last_check"]["max_metric_drop"]
    assert md["metric"] == "accuracy"
    assert md["stable"] > md["candidate"] + 0.1
    assert done["last_check"]["candidate"]["labelled"] >= 30
    assert done["last_check"]["stable"]["labelled"] >= 30
    # the candidate's accuracy as the controller saw it is plausible for what it learnt
    answers = [(v, pid, idx) for s, v, pid, idx in tr.snapshot() if s == 200]
    assert {v for v, _, _ in answers} == {1, 2}


def test_metric_drop_waits_for_feedback(srv):
    """Without feedback the metric guard is pending (it neither fails nor blocks)."""
    m, ep = uniq("m"), uniq("ep")
    publish(srv, m, linear_models(2))
    put_endpoint(srv, ep, {"model": m, "routes": [{"version": 1, "weight": 100}]})
    with Traffic(srv, ep, rng_rows(200, 9)):
        j = start(srv, ep, {"candidate": {"version": 2}, "steps": [50, 100],
                            "step_interval": "1s", "min_requests_per_step": 30,
                            "guards": {"max_metric_drop": {"metric": "mae", "delta": 0.1,
                                                           "min_labelled": 5}}})
        done = wait_state(srv, ep, j["id"], ("promoted", "rolled_back", "aborted"))
    assert done["state"] == "promoted", done
    md = done["last_check"]["max_metric_drop"]
    assert md["ok"] is None and "labelled" in md["pending"], md


# ---- pause, resume, promote; state across a restart ----------------------------------------

def test_pause_resume_promote(srv):
    m, ep = uniq("m"), uniq("ep")
    publish(srv, m, linear_models(2))
    put_endpoint(srv, ep, {"model": m, "routes": [{"version": 1, "weight": 100}]})
    with Traffic(srv, ep, rng_rows(200, 10)):
        j = start(srv, ep, {"candidate": {"version": 2}, "steps": [10, 40, 70, 100],
                            "step_interval": "1s", "min_requests_per_step": 20})
        p = act(srv, ep, j["id"], "pause")
        assert p["state"] == "paused" and p["step"] == 0
        assert_error(srv.post("/v1/endpoints/%s/rollouts/%s/pause" % (ep, j["id"])), 409)
        # while paused the controller leaves it alone, however long the step lasts
        time.sleep(2.5)
        still = get(srv, ep, j["id"])
        assert still["state"] == "paused" and still["step"] == 0
        assert route_weights(endpoint_spec(srv, ep))[-1] == ("v2", 2, None, 10)
        r = act(srv, ep, j["id"], "resume")
        assert r["state"] == "running" and r["step_started_at"] > p["step_started_at"]
        wait_rollout(srv, ep, j["id"], lambda x: x["step"] >= 1, "a step after resuming")
        pr = act(srv, ep, j["id"], "promote")
    assert pr["state"] == "promoted" and pr["weight"] == 100 and "promoted by" in pr["reason"]
    assert route_weights(endpoint_spec(srv, ep)) == [("v2", 2, None, 100)]
    events = [e["event"] for e in pr["history"]]
    assert events[:3] == ["started", "paused", "resumed"] and events[-1] == "promoted"
    assert "advanced" in events


def test_edit_during_rollout_aborts_it_and_keeps_the_edit(srv):
    """Someone else's change of the endpoint while the rollout runs (a PUT, an endpoint
    rollback) wins: the rollout is aborted, naming the revision, and the change stays."""
    m, ep = uniq("m"), uniq("ep")
    publish(srv, m, linear_models(2))
    put_endpoint(srv, ep, {"model": m, "routes": [{"version": 1, "weight": 100}]})
    j = start(srv, ep, {"candidate": {"version": 2}, "steps": [20, 100], "step_interval": "1h"})
    assert route_weights(endpoint_spec(srv, ep)) == [("v1", 1, None, 80), ("v2", 2, None, 20)]
    r = srv.post("/v1/endpoints/%s/rollback" % ep, json={})
    assert r.status_code == 200, r.text
    done = wait_state(srv, ep, j["id"], ("aborted", "rolled_back", "promoted"))
    assert done["state"] == "aborted", done
    assert "changed outside the rollout" in done["reason"] and "revision 3" in done["reason"]
    assert route_weights(endpoint_spec(srv, ep)) == [("v1", 1, None, 100)]
    assert len(revisions(srv, ep)) == 3  # the rollout wrote nothing after the rollback
    # deleting the endpoint ends its rollout as well
    j = start(srv, ep, {"candidate": {"version": 2}, "steps": [20, 100], "step_interval": "1h"})
    assert srv.delete("/v1/endpoints/" + ep).status_code == 204
    done = wait_state(srv, ep, j["id"], ("aborted", "rolled_back", "promoted"))
    assert done["state"] == "aborted" and done["reason"] == "the endpoint was deleted", done


def test_state_survives_restart(start_server):
    s = start_server("--threads", "2", "--rollout-lease-ms", "1500", *TICK)
    m, ep = uniq("m"), uniq("ep")
    publish(s, m, linear_models(2))
    put_endpoint(s, ep, {"model": m, "routes": [{"version": 1, "weight": 100}]})
    with Traffic(s, ep, rng_rows(200, 11)) as tr:
        j = start(s, ep, {"candidate": {"version": 2}, "steps": [20, 50, 100],
                          "step_interval": "1s", "min_requests_per_step": 20})
        wait_rollout(s, ep, j["id"], lambda x: x["step"] >= 1, "the first step passed")
        tr.stop()
    s.kill9()
    s.start()
    after = get(s, ep, j["id"])
    assert after["state"] == "running" and after["step"] >= 1
    with Traffic(s, ep, rng_rows(200, 12)):
        done = wait_state(s, ep, j["id"], ("promoted", "rolled_back", "aborted"))
    assert done["state"] == "promoted", done


# ---- the controller replica dies; another resumes -------------------------------------------

def test_kill9_controller_replica_another_resumes():
    """Two replicas on one PostgreSQL and one NATS JetStream (so both see every prediction);
    a short controller lease. The replica holding the lease is killed with -9 in the middle
    of the rollout; the other takes the lease over and finishes it from the stored state."""
    try:
        pg = pg_server()
        nats = nats_server()
    except Exception as e:  # noqa: BLE001 - the servers are optional on a dev machine
        pytest.skip("PostgreSQL or nats-server unavailable: %s" % e)
    db = pg.create_database()
    common = ["--metadata-url", db, "--nats-url", nats.url, "--threads", "2",
              "--rollout-lease-ms", "1500"] + TICK
    a = Server(args=common + ["--replica-id", "ra"], metadata=False)
    b = Server(args=common + ["--replica-id", "rb"], metadata=False)
    try:
        a.start()
        deadline = time.monotonic() + BOUND
        while lease_held(a) != 1:
            assert time.monotonic() < deadline, "replica a never took the controller lease"
            time.sleep(0.05)
        b.start()
        b.admin_key = a.admin_key
        m, ep = uniq("m"), uniq("ep")
        publish(b, m, linear_models(2))
        put_endpoint(b, ep, {"model": m, "routes": [{"version": 1, "weight": 100}]})
        assert lease_held(b) == 0
        with Traffic(b, ep, rng_rows(300, 13)):
            j = start(b, ep, {"candidate": {"version": 2}, "steps": [10, 30, 60, 100],
                              "step_interval": "1s", "min_requests_per_step": 30,
                              "guards": {"max_error_rate": 0.05}})
            mid = wait_rollout(b, ep, j["id"], lambda x: x["step"] >= 1, "a step by replica a")
            assert mid["history"][1]["by"] == "ra"
            a.kill9()
            done = wait_state(b, ep, j["id"], ("promoted", "rolled_back", "aborted"))
        assert done["state"] == "promoted", done
        by = [(e["event"], e["by"]) for e in done["history"][1:]]
        assert by[-1] == ("promoted", "rb"), by
        assert by[0] == ("advanced", "ra"), by
        assert [e["weight"] for e in done["history"]] == [10, 30, 60, 100]
        assert lease_held(b) == 1
    finally:
        a.kill9()
        if b.proc is not None:
            b.stop()
        reports = b.sanitizer_reports() + a.sanitizer_reports()
        for s in (a, b):
            s.cleanup()
        nats.close()
    assert not reports, reports[0]


# ---- the CLI --------------------------------------------------------------------------------

def test_cli_start_status_watch(srv):
    m, ep = uniq("m"), uniq("ep")
    publish(srv, m, linear_models(2))
    put_endpoint(srv, ep, {"model": m, "routes": [{"version": 1, "weight": 100}]})
    env = clean_env({"BASALT_URL": srv.url, "BASALT_API_KEY": srv.admin_key})

    def cli(*args, timeout=BOUND):
        return subprocess.run([BASALT_BIN, "rollout", *args], env=env, timeout=timeout,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    cp = cli("status", ep)
    assert cp.returncode == 3 and "no rollouts" in cp.stderr
    cp = cli("start", ep, "--version", "2", "--steps", "10,50,100", "--step-interval", "1s",
             "--min-requests", "20", "--max-error-rate", "0.05")
    assert cp.returncode == 0, cp.stderr
    assert "started" in cp.stdout
    cp = cli("status", ep)
    assert cp.returncode == 0 and "running" in cp.stdout and "version 2" in cp.stdout, cp.stdout
    cp = cli("status", ep, "--json")
    assert json.loads(cp.stdout)["state"] == "running"
    with Traffic(srv, ep, rng_rows(200, 14)):
        cp = cli("status", ep, "--watch", "--interval", "200")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "promoted" in cp.stdout and "max_error_rate" in cp.stdout
    cp = cli("ls", ep)
    assert cp.returncode == 0 and "promoted" in cp.stdout
    # a rollout that is aborted from the CLI: watch exits 1
    cp = cli("start", ep, "--version", "1", "--steps", "50,100", "--step-interval", "1h")
    assert cp.returncode == 0, cp.stderr
    cp = cli("abort", ep)
    assert cp.returncode == 0 and "aborted" in cp.stdout
    cp = cli("status", ep, "--watch")
    assert cp.returncode == 1 and "aborted" in cp.stdout
    cp = cli("pause", ep)
    assert cp.returncode == 1 and "409" in cp.stderr


def test_openapi_lists_the_routes(srv):
    doc = srv.get("/openapi.json").json()
    paths = doc["paths"]
    assert "post" in paths["/v1/endpoints/{name}/rollouts"]
    assert "get" in paths["/v1/endpoints/{name}/rollouts"]
    assert "get" in paths["/v1/endpoints/{name}/rollouts/{id}"]
    for verb in ("pause", "resume", "abort", "promote"):
        assert "post" in paths["/v1/endpoints/{name}/rollouts/{id}/%s" % verb]
