"""Predict through an endpoint (issue 10): POST /v1/endpoints/{name}/predict and
/v2/models/{endpoint}/infer — routing by weight and by sticky key, policy updates under load
(one replica and three), shadow runs that never touch the caller's answer, the prediction
log's records, and bad input.

Versions are linear models whose prediction names them: version v of a model published by
`versions()` predicts v (coef 0, intercept v), so every answer says which version computed
it. Oracles: scipy.stats.chisquare for the weighted split; the policies' own timeline for the
updates (a response must match a policy that was active during the request); the model
predict route of the same version for the bodies. Nothing asserts on timing.
"""
import http.client
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import scipy.stats

from conftest import ROOT
from modelkit import (UUID_RE, approve, assert_error, assert_oip_error, create_model,
                      linear_bytes, set_alias, upload_ok)

BOUND = 15.0  # generous bound for anything asynchronous (log flush, propagation)
BODY = {"inputs": {"a": 1.0, "b": 2.0}}


# ---- helpers ------------------------------------------------------------------------------

def versions(srv, name, n, **create):
    """Model `name` with n approved versions; version v predicts v."""
    create_model(srv, name, **create)
    for v in range(1, n + 1):
        got = upload_ok(srv, name, linear_bytes([0.0, 0.0], float(v)))
        assert got["version"] == v
        approve(srv, name, v)


def put_endpoint(srv, name, spec, status=(200, 201)):
    r = srv.put("/v1/endpoints/" + name, json=spec)
    assert r.status_code in status, r.text
    return r.json()


def predict(srv, name, body=None, headers=None, **kw):
    return srv.post("/v1/endpoints/%s/predict" % name, json=BODY if body is None else body,
                    headers=headers, **kw)


def predict_ok(srv, name, body=None, headers=None):
    r = predict(srv, name, body, headers)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["endpoint"] == name
    assert r.headers["X-Basalt-Model-Version"] == str(j["version"])
    assert r.headers["X-Basalt-Variant"] == j["variant"]
    assert all(UUID_RE.match(i) for i in j["prediction_ids"]), j
    assert len(set(j["prediction_ids"])) == len(j["prediction_ids"]) == len(j["predictions"])
    return j


def log_records(srv, want, endpoint=None, timeout=BOUND):
    """The tenant's prediction log (topic `predictions`), polled until it holds at least
    `want` records (of endpoint, when given); returns them (the events) in log order."""
    deadline = time.monotonic() + timeout
    while True:
        out, offset = [], 0
        while True:
            r = srv.get("/v1/topics/predictions/events?from_offset=%d&limit=1000" % offset)
            assert r.status_code == 200, r.text
            j = r.json()
            out += [it["event"] for it in j["items"]]
            if not j["items"] or j["next_offset"] == offset:
                break
            offset = j["next_offset"]
        if endpoint:
            out = [e for e in out if e["endpoint"] == endpoint]
        if len(out) >= want or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


def strip_ids(text):
    return re.sub(r'"prediction_ids":\[[^\]]*\]', '"prediction_ids":[]', text)


def wait_for(what, fn, timeout=BOUND):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError("%s: not within %.0f s (last: %r)" % (what, timeout, last))


class FastClient:
    """Keep-alive http.client connection for many small requests (requests is too slow for
    20k of them)."""

    def __init__(self, srv, key=None):
        self.host, self.port = srv.host, srv.port
        self.auth = "Bearer " + (key or srv.admin_key)
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def post(self, path, body, headers=None):
        h = {"Authorization": self.auth, "Content-Type": "application/json"}
        h.update(headers or {})
        for attempt in range(2):
            try:
                self.conn.request("POST", path, body, h)
                r = self.conn.getresponse()
                data = r.read()
                return r.status, {k.lower(): v for k, v in r.getheaders()}, data
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                if attempt:
                    raise

    def close(self):
        self.conn.close()


def run_threads(n, fn):
    errors = []

    def wrap(i):
        try:
            fn(i)
        except BaseException as e:  # noqa: B902 - reported below
            errors.append(e)
    ts = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


# ---- the answer, the log --------------------------------------------------------------------

def test_answer_is_model_predict_plus_endpoint_and_variant_and_is_logged(server):
    versions(server, "m", 2)
    put_endpoint(server, "fraud", {"model": "m", "routes": [{"version": 2, "weight": 100}]})
    r = predict(server, "fraud")
    j = predict_ok(server, "fraud")
    assert (j["model"], j["version"], j["variant"], j["predictions"]) == ("m", 2, "v2", [2])
    want = server.post("/v1/models/m/versions/2/predict", json=BODY)
    assert want.status_code == 200
    # the model predict body plus "endpoint" and "variant", members in a fixed order
    assert list(r.json()) == ["model", "version", "endpoint", "variant", "predictions",
                              "prediction_ids"]
    got = r.json()
    for k in ("model", "version", "predictions"):
        assert got[k] == want.json()[k]
    # a batch: one prediction and one id per row, all on one version
    rows = [{"a": float(i), "b": 1.0} for i in range(5)]
    jb = predict_ok(server, "fraud", {"inputs": rows})
    assert jb["predictions"] == [2] * 5
    # TF-Serving's instances by position
    ji = predict_ok(server, "fraud", {"instances": [[1, 2], [3, 4]]})
    assert ji["predictions"] == [2, 2]
    # the log: one record per row, under the response's ids, in the contract's shape
    recs = log_records(server, 8, "fraud")
    by_id = {e["prediction_id"]: e for e in recs}
    assert set(jb["prediction_ids"]) <= set(by_id)
    for i, pid in enumerate(jb["prediction_ids"]):
        e = by_id[pid]
        assert (e["endpoint"], e["model"], e["version"], e["variant"], e["shadow"]) == \
            ("fraud", "m", 2, "v2", False)
        assert e["inputs"] == rows[i]
        assert e["output"] == 2
        assert e["latency_ms"] >= 0
        assert "sticky_key" not in e and "error" not in e
    # request_id is the X-Request-Id of the request
    assert by_id[got["prediction_ids"][0]]["request_id"] == r.headers["X-Request-Id"]
    assert by_id[ji["prediction_ids"][1]]["inputs"] == {"a": 3, "b": 4}
    m = server.metrics()
    assert m.get("basalt_endpoint_requests_total", tenant="default", endpoint="fraud",
                 variant="v2", version="2") == 4


def test_log_inputs_of_one_row_bodies_spelled_any_way(server):
    """A one-row body of plain numbers may be logged with its inputs object as the client
    wrote it: whatever the spelling, order, whitespace or line breaks, the record is one
    line of JSON whose inputs read back as the values the model used (also in the
    shadow's record)."""
    versions(server, "m", 2)
    put_endpoint(server, "spell", {"model": "m", "routes": [{"version": 1, "weight": 100}],
                                   "shadow": [{"version": 2, "fraction": 1.0}]})
    bodies = ['{"inputs":{"a":0.10,"b":-2E2}}',
              '{"inputs": {\t"b" : 2.50e0 , "a":-0.0 } }',
              '{"inputs":{"a":1,\n"b":\r\n3}}',
              '{"inputs":{"b":1e-5,"a":123456789.125}}']
    want = [{"a": 0.1, "b": -200.0}, {"a": 0.0, "b": 2.5}, {"a": 1.0, "b": 3.0},
            {"a": 123456789.125, "b": 1e-5}]
    ids = []
    for b in bodies:
        r = server.post("/v1/endpoints/spell/predict", data=b,
                        headers={"Content-Type": "application/json"})
        assert r.status_code == 200, (b, r.text)
        ids.append(r.json()["prediction_ids"][0])
    recs = log_records(server, 2 * len(bodies), "spell")
    assert len(recs) == 2 * len(bodies)
    for pid, w in zip(ids, want):
        mine = [e for e in recs if e["prediction_id"] == pid]
        assert sorted(e["shadow"] for e in mine) == [False, True]
        for e in mine:
            assert e["inputs"] == w, (e, w)
    # the read route serves the same records
    r = server.get("/v1/endpoints/spell/predictions?limit=100")
    assert r.status_code == 200, r.text
    assert sorted(json.dumps(e["inputs"], sort_keys=True) for e in r.json()["items"]) == \
        sorted(json.dumps(e["inputs"], sort_keys=True) for e in recs)


def test_log_inputs_as_encoded_categories_defaults_and_missing(server):
    doc = {"basalt_model": 1,
           "inputs": [{"name": "x", "type": "float", "default": 7.5},
                      {"name": "city", "type": "category",
                       "categories": ["berlin", "paris", "rome"]}],
           "preprocess": [{"columns": ["x"]},
                          {"columns": ["city"], "steps": [{"op": "one_hot"}]}],
           "estimator": {"type": "linear", "link": "identity",
                         "coef": [[2.0, 1.0, 10.0, 100.0]], "intercept": [0.5]},
           "output": {"task": "regression"}}
    create_model(server, "city")
    upload_ok(server, "city", json.dumps(doc).encode())
    approve(server, "city", 1)
    put_endpoint(server, "c", {"model": "city", "routes": [{"version": 1, "weight": 100}]})
    j = predict_ok(server, "c", {"inputs": [{"city": "rome"}, {"x": 1, "city": "paris"}]})
    assert j["predictions"] == [2 * 7.5 + 100.5, 2 + 10.5]
    recs = {e["prediction_id"]: e for e in log_records(server, 2, "c")}
    assert recs[j["prediction_ids"][0]]["inputs"] == {"x": 7.5, "city": "rome"}
    assert recs[j["prediction_ids"][1]]["inputs"] == {"x": 1, "city": "paris"}


def test_sample_rate_zero_logs_nothing_and_sample_rate_one_logs_all(server):
    versions(server, "m", 1)
    put_endpoint(server, "off", {"model": "m", "routes": [{"version": 1, "weight": 100}],
                                 "logging": {"sample_rate": 0}})
    put_endpoint(server, "on", {"model": "m", "routes": [{"version": 1, "weight": 100}]})
    for _ in range(30):
        predict_ok(server, "off")
    ids = [predict_ok(server, "on")["prediction_ids"][0] for _ in range(30)]
    recs = log_records(server, 30, "on")
    assert {e["prediction_id"] for e in recs} == set(ids)
    assert [e for e in log_records(server, 0, "off", timeout=0)] == []


def test_bad_input(server):
    versions(server, "m", 1)
    put_endpoint(server, "e", {"model": "m", "routes": [{"version": 1, "weight": 100}]})
    assert_error(predict(server, "nope"), 404, field="name", code="not_found", mentions="nope")
    r = server.post("/v1/endpoints/e/predict", data=b'{"inputs": {"a": 1',
                    headers={"Content-Type": "application/json"})
    assert_error(r, 400, code="malformed_json")
    assert_error(predict(server, "e", {"inputs": {"a": "x", "b": 1}}), 400, field="a",
                 code="invalid_input")
    assert_error(predict(server, "e", {"inputs": {"a": 1, "b": 2, "zzz": 3}}), 400, field="zzz")
    assert_error(predict(server, "e", {"rows": []}), 400, field="rows")
    assert_error(predict(server, "e", {"inputs": [{"a": 1, "b": 1}] * 10001}), 413)
    r = server.post("/v1/endpoints/e/predict", data=b"a=1", headers={"Content-Type": "text/plain"})
    assert_error(r, 415)
    # the predictor role may call it; a viewer may not
    viewer = server.create_key("viewer")["key"]
    predictor = server.create_key("predictor")["key"]
    assert_error(predict(server, "e", key=viewer), 403)
    assert predict(server, "e", key=predictor).status_code == 200
    # a failed request is one error record with an id of its own, no inputs or output
    recs = log_records(server, 6, "e")
    errs = [e for e in recs if "error" in e]
    assert len(errs) >= 4, recs
    codes = {e["error"]["code"] for e in errs}
    assert {"malformed_json", "invalid_input", "payload_too_large"} <= codes, codes
    for e in errs:
        assert UUID_RE.match(e["prediction_id"])
        assert "inputs" not in e and "output" not in e
        assert (e["version"], e["variant"], e["shadow"]) == (1, "v1", False)
    m = server.metrics()
    assert m.get("basalt_endpoint_errors_total", tenant="default", endpoint="e", variant="v1",
                 version="1", code="invalid_input") >= 3


def test_endpoint_of_another_tenant_is_not_found(server):
    versions(server, "m", 1)
    put_endpoint(server, "e", {"model": "m", "routes": [{"version": 1, "weight": 100}]})
    r = server.post("/v1/tenants", json={"name": "acme"})
    assert r.status_code == 201, r.text
    other = server.create_key("predictor", tenant="acme")["key"]
    assert_error(predict(server, "e", key=other), 404, code="not_found")


# ---- weighted routing ----------------------------------------------------------------------

def test_weighted_split_matches_the_weights_over_20k_requests(server):
    """Each request is one routing decision: 20k one-row requests on keep-alive
    connections; the variants' counts against 70/20/10 by a chi-square goodness of fit."""
    versions(server, "m", 3)
    weights = {"a": 70, "b": 20, "c": 10}
    put_endpoint(server, "w", {"model": "m", "logging": {"sample_rate": 0}, "routes": [
        {"name": "a", "version": 1, "weight": 70}, {"name": "b", "version": 2, "weight": 20},
        {"name": "c", "version": 3, "weight": 10}]})
    want_version = {"a": "1", "b": "2", "c": "3"}
    total, threads = 20000, 4
    counts = [dict.fromkeys(weights, 0) for _ in range(threads)]
    body = json.dumps(BODY).encode()

    def load(i):
        c = FastClient(server)
        try:
            for _ in range(total // threads):
                status, h, data = c.post("/v1/endpoints/w/predict", body)
                assert status == 200, data
                v = h["x-basalt-variant"]
                assert h["x-basalt-model-version"] == want_version[v], (h, data)
                counts[i][v] += 1
        finally:
            c.close()
    run_threads(threads, load)
    got = [sum(c[k] for c in counts) for k in weights]
    assert sum(got) == total
    exp = [total * w / 100 for w in weights.values()]
    chi = scipy.stats.chisquare(got, exp)
    assert chi.pvalue > 0.001, (got, exp, chi)
    m = server.metrics()
    for k, n in zip(weights, got):
        assert m.get("basalt_endpoint_requests_total", tenant="default", endpoint="w",
                     variant=k, version=want_version[k]) == n


# ---- sticky ---------------------------------------------------------------------------------

STICKY_ROUTES = [{"name": "a", "version": 1, "weight": 50}, {"name": "b", "version": 2, "weight": 30},
                 {"name": "c", "version": 3, "weight": 20}]
KEYS = ["u%d" % i for i in range(150)] + list(range(150))


def assignments(srv, name, keys, field="user_id"):
    out = {}
    for k in keys:
        j = predict_ok(srv, name, {"inputs": {"a": 1.0, "b": 2.0, field: k}})
        out[k] = (j["variant"], j["version"])
    return out


def test_sticky_by_field_is_stable_across_repeats_batches_restart_and_policy_changes(server):
    versions(server, "m", 4)
    put_endpoint(server, "ab", {"model": "m", "routes": STICKY_ROUTES,
                                "sticky": {"key": "user_id"}})
    first = assignments(server, "ab", KEYS)
    # every variant gets keys, in proportion to the weights (a fixed set of keys: the hash's
    # uniformity, not chance)
    n = [sum(1 for v in first.values() if v[0] == x) for x in "abc"]
    assert scipy.stats.chisquare(n, [len(KEYS) * w / 100 for w in (50, 30, 20)]).pvalue > 0.001, n
    # the version is the route's
    assert all(ver == {"a": 1, "b": 2, "c": 3}[var] for var, ver in first.values())
    assert assignments(server, "ab", KEYS[::7]) == {k: first[k] for k in KEYS[::7]}
    # a number is keyed by its decimal form: 17 and "17" are one key
    assert assignments(server, "ab", ["17"])["17"] == first[17]
    assert assignments(server, "ab", [17.0])[17.0] == first[17]
    # ... and a fraction by its shortest form (Python's repr is that too)
    nums = [i / 4 for i in range(1, 40)] + [0.1, 1e-7, 123.456]
    as_text = assignments(server, "ab", [str(int(x)) if x.is_integer() else repr(x) for x in nums])
    assert list(assignments(server, "ab", nums).values()) == list(as_text.values())
    # a batch routes once, by its first row's key
    for k in KEYS[:20]:
        rows = [{"a": 1.0, "b": 2.0, "user_id": k}] + [
            {"a": 1.0, "b": 2.0, "user_id": o} for o in KEYS[100:104]]
        j = predict_ok(server, "ab", {"inputs": rows})
        assert (j["variant"], j["version"]) == first[k]
        assert j["predictions"] == [first[k][1]] * 5
    # the log keeps the key
    j = predict_ok(server, "ab", {"inputs": {"a": 1.0, "b": 2.0, "user_id": "u3"}})
    rec = wait_for("the record of u3", lambda: [
        e for e in log_records(server, 0, "ab", timeout=0)
        if e["prediction_id"] == j["prediction_ids"][0]])
    assert rec[0]["sticky_key"] == "u3"
    assert "user_id" not in rec[0]["inputs"]  # not a feature of the model
    # a restart keeps every assignment
    server.restart()
    assert assignments(server, "ab", KEYS) == first
    # a change that keeps every weight (the last route moves to another version, a shadow
    # is added) keeps every key's variant
    routes = [dict(r) for r in STICKY_ROUTES]
    routes[2]["version"] = 4
    put_endpoint(server, "ab", {"model": "m", "routes": routes, "sticky": {"key": "user_id"},
                                "shadow": [{"version": 3, "fraction": 0.5}]})
    after = assignments(server, "ab", KEYS)
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in first.items()}
    assert all(v[1] == 4 for v in after.values() if v[0] == "c")
    # weights of later routes change: the first route keeps its keys
    routes = [dict(r) for r in STICKY_ROUTES]
    routes[1]["weight"], routes[2]["weight"] = 10, 40
    put_endpoint(server, "ab", {"model": "m", "routes": routes, "sticky": {"key": "user_id"}})
    after = assignments(server, "ab", KEYS)
    kept_a = [k for k, v in first.items() if v[0] == "a"]
    assert kept_a and all(after[k][0] == "a" for k in kept_a)


def test_sticky_by_header_uses_the_same_key_bytes(server):
    versions(server, "m", 3)
    put_endpoint(server, "hs", {"model": "m", "routes": STICKY_ROUTES,
                                "sticky": {"key": "user_id"}})
    keys = ["u%d" % i for i in range(80)]
    by_field = assignments(server, "hs", keys)
    put_endpoint(server, "hs", {"model": "m", "routes": STICKY_ROUTES,
                                "sticky": {"header": "X-User-Id"}})
    for _ in range(2):
        for k in keys:
            j = predict_ok(server, "hs", headers={"X-User-Id": k})
            assert (j["variant"], j["version"]) == by_field[k], k
    # without the header the request is routed by weight (every variant shows up)
    seen = {predict_ok(server, "hs")["variant"] for _ in range(100)}
    assert seen == {"a", "b", "c"}


# ---- atomic policy updates -----------------------------------------------------------------

class Timeline:
    """The policies in force: each change's start and end (monotonic) and the state after it
    (the endpoint's routes by name, the champion alias's version)."""

    def __init__(self, routes, alias):
        self.changes = [(-1e18, -1e18, routes, alias)]

    def change(self, fn, routes=None, alias=None):
        prev = self.changes[-1]
        t0 = time.monotonic()
        fn()
        t1 = time.monotonic()
        self.changes.append((t0, t1, routes if routes is not None else prev[2],
                             alias if alias is not None else prev[3]))

    def allowed(self, s, e):
        """States that may have been in force at some time in [s, e]."""
        out = []
        for j, (t0, _, routes, alias) in enumerate(self.changes):
            end_next = self.changes[j + 1][1] if j + 1 < len(self.changes) else 1e18
            if t0 <= e and s <= end_next:
                out.append((routes, alias))
        return out


def policy_routes(k, va, wa):
    return [{"name": "p%da" % k, "version": va, "weight": wa},
            {"name": "p%db" % k, "alias": "champion", "weight": 100 - wa}]


WEIGHTS = [100, 0, 70, 30, 50, 0, 100]


def updates(srv, tl, n, alias_versions, name="live", writers=None):
    """n changes: odd ones PUT the endpoint (new route names, weights switching 0/100 and
    in between), even ones move the champion alias."""
    writers = writers or [srv]

    def move(w, v):
        r = set_alias(w, "m", "champion", v)
        assert r.status_code == 200, r.text
    for i in range(1, n + 1):
        w = writers[i % len(writers)]
        if i % 2:
            routes = policy_routes(i, 1 + i % 4, WEIGHTS[i % len(WEIGHTS)])
            tl.change(lambda: put_endpoint(w, name, {"model": "m", "routes": routes}),
                      routes=routes)
        else:
            v = alias_versions[(i // 2 - 1) % len(alias_versions)]
            tl.change(lambda: move(w, v), alias=v)


def check_response(tl, s, e, status, data):
    """The response was served by one version of a policy in force during [s, e]: its
    variant is a route (of weight > 0) of such a policy (route names are unique to their
    policy), and its version is that route's, or for the alias route a version the alias had
    during the request (the alias resolves in the serving snapshot, read once)."""
    assert status == 200, data
    j = json.loads(data)
    variant, version = j["variant"], j["version"]
    assert j["predictions"] == [version], j  # the version that answered is the one named
    states = tl.allowed(s, e)
    routes = {r["name"]: r for rs, _ in states for r in rs}
    r = routes.get(variant)
    assert r is not None, ("variant %s of no policy in force" % variant, states)
    assert r["weight"] > 0, ("a route of weight 0 served", variant)
    if "version" in r:
        assert version == r["version"], (variant, version, r)
    else:
        assert version in {a for _, a in states}, (variant, version, states)
    return variant, version


def test_policy_updates_under_load_fail_nothing_and_mix_no_policies(server):
    versions(server, "m", 8)
    assert set_alias(server, "m", "champion", 5).status_code == 200
    tl = Timeline(policy_routes(0, 1, 50), 5)
    put_endpoint(server, "live", {"model": "m", "routes": policy_routes(0, 1, 50)})
    stop = threading.Event()
    results = [[] for _ in range(4)]
    body = json.dumps(BODY).encode()

    def load(i):
        c = FastClient(server)
        try:
            while not stop.is_set():
                s = time.monotonic()
                status, _, data = c.post("/v1/endpoints/live/predict", body)
                results[i].append((s, time.monotonic(), status, data))
        finally:
            c.close()
    ts = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    try:
        time.sleep(0.2)
        updates(server, tl, 50, [6, 7, 8, 5])
        time.sleep(0.2)
    finally:
        stop.set()
        for t in ts:
            t.join()
    served = set()
    n = 0
    for res in results:
        for s, e, status, data in res:
            served.add(check_response(tl, s, e, status, data))
            n += 1
    assert n > 200, n
    # the load saw many policies and both kinds of route
    assert len({v for v, _ in served}) > 10, served
    assert {v[-1] for v, _ in served} == {"a", "b"}


def test_policy_updates_under_load_on_three_replicas(tmp_path):
    """The same with three replicas on one PostgreSQL (test_replicas.py's cluster): changes
    are written through different replicas; every response matches a policy published
    before it ended, and each replica moves forward through the policies (a client's
    sequential requests to one replica never go back to an older policy)."""
    import sys
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from pg_server import PgServer
    from redis_server import RedisServer
    from test_replicas import Cluster
    pg = PgServer().start()
    rs = RedisServer()
    rs.start()
    cluster = None
    try:
        cluster = Cluster(pg, rs)
        a, b, c = cluster.replicas
        versions(a, "m", 30)
        assert set_alias(a, "m", "champion", 5).status_code == 200
        tl = Timeline(policy_routes(0, 1, 50), 5)
        put_endpoint(a, "live", {"model": "m", "routes": policy_routes(0, 1, 50)})
        for s in (b, c):
            wait_for("endpoint on %s" % s.url, lambda s=s: predict(s, "live").status_code == 200)
        stop = threading.Event()
        results = [[] for _ in range(6)]
        body = json.dumps(BODY).encode()

        def load(i):
            fc = FastClient(cluster.replicas[i % 3], cluster.admin_key)
            try:
                while not stop.is_set():
                    s = time.monotonic()
                    status, _, data = fc.post("/v1/endpoints/live/predict", body)
                    results[i].append((s, time.monotonic(), status, data))
            finally:
                fc.close()
        ts = [threading.Thread(target=load, args=(i,)) for i in range(6)]
        for t in ts:
            t.start()
        try:
            time.sleep(0.3)
            # alias values never repeat, so an alias response names its move
            updates(a, tl, 50, list(range(6, 31)), writers=[a, b, c])
            last_routes = tl.changes[-1][2]
            for s in cluster.replicas:
                wait_for("the last policy on %s" % s.url,
                         lambda s=s: predict(s, "live").json()["variant"] in
                         {r["name"] for r in last_routes if r["weight"]})
        finally:
            stop.set()
            for t in ts:
                t.join()
        starts = [t0 for t0, _, _, _ in tl.changes]
        alias_gen = {}  # alias version -> the change that moved the alias there
        for j, (_, _, _, alias) in enumerate(tl.changes):
            alias_gen.setdefault(alias, j)
        n = 0
        for res in results:
            prev_k, prev_alias = -1, -1
            for s, e, status, data in res:
                assert status == 200, data
                j = json.loads(data)
                variant, version = j["variant"], j["version"]
                assert j["predictions"] == [version]
                k = int(variant[1:-1])
                # published before the request ended: the change that made policy k began
                kj = next(jj for jj, ch in enumerate(tl.changes)
                          if any(r["name"] == variant for r in ch[2]))
                assert starts[kj] <= e, (variant, "served before it was written")
                r = next(r for r in tl.changes[kj][2] if r["name"] == variant)
                assert r["weight"] > 0, (variant, "a route of weight 0 served")
                if "version" in r:
                    assert version == r["version"], (variant, version)
                else:
                    gen = alias_gen[version]
                    assert starts[gen] <= e, (version, "alias served before it moved")
                    assert gen >= prev_alias, ("went back to an older alias", version)
                    prev_alias = gen
                assert k >= prev_k, ("went back to an older policy", variant)
                prev_k = k
                n += 1
        assert n > 300, n
    finally:
        if cluster:
            cluster.cleanup()
        rs.close()
        pg.cleanup()


# ---- shadow ---------------------------------------------------------------------------------

def slow_mlp(width=384, layers=8):
    """A 2-input MLP that predicts 5.0 after `layers` dense layers of width x width: a few
    hundred microseconds per row."""
    ls = [{"weights": [[0] * width for _ in range(2)], "bias": [0] * width}]
    for _ in range(layers - 2):
        ls.append({"weights": [[0] * width for _ in range(width)], "bias": [0] * width})
    ls.append({"weights": [[0] for _ in range(width)], "bias": [5.0]})
    doc = {"basalt_model": 1, "inputs": [{"name": "a", "type": "float"},
                                         {"name": "b", "type": "float"}],
           "estimator": {"type": "mlp", "activation": "relu", "output_activation": "identity",
                         "layers": ls},
           "output": {"task": "regression", "n_outputs": 1}}
    return json.dumps(doc, separators=(",", ":")).encode()


NEEDS_EXTRA = json.dumps({
    "basalt_model": 1, "inputs": [{"name": "a", "type": "float"}, {"name": "b", "type": "float"},
                                  {"name": "extra", "type": "float", "required": True}],
    "estimator": {"type": "linear", "link": "identity", "coef": [[0.0, 0.0, 1.0]],
                  "intercept": [0.0]},
    "output": {"task": "regression", "n_outputs": 1}}).encode()


def test_shadow_responses_are_byte_identical_and_shadow_rows_are_logged(server):
    versions(server, "m", 3)
    base = {"model": "m", "routes": [{"version": 1, "weight": 100}]}
    put_endpoint(server, "s", base)
    bodies = [BODY, {"inputs": [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}]},
              {"instances": [[1, 2]]}]

    def answers():
        out = []
        for b in bodies:
            r = predict(server, "s", b)
            assert r.status_code == 200
            out.append((strip_ids(r.text), r.headers["X-Basalt-Variant"],
                        r.headers["X-Basalt-Model-Version"], r.headers["Content-Type"]))
        return out
    plain = answers()
    put_endpoint(server, "s", dict(base, shadow=[{"version": 3, "fraction": 1.0},
                                                 {"version": 2, "fraction": 1.0}]))
    assert answers() == plain
    j = predict_ok(server, "s", bodies[1])
    assert answers() == plain
    # both shadows ran on the same rows, logged under the rows' own prediction ids
    want = {(pid, v) for pid in j["prediction_ids"] for v in ("v2", "v3")}
    recs = wait_for("the shadow records", lambda: [
        e for e in log_records(server, 0, "s", timeout=0)
        if e["shadow"] and (e["prediction_id"], e["variant"]) in want] or None)
    recs = wait_for("all shadow records", lambda: (lambda rs: rs if len(rs) == 4 else None)(
        [e for e in log_records(server, 0, "s", timeout=0)
         if e["shadow"] and (e["prediction_id"], e["variant"]) in want]))
    for e in recs:
        assert e["output"] == int(e["variant"][1:]) == e["version"]
        assert e["inputs"] in ({"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0})
    m = server.metrics()
    assert m.get("basalt_endpoint_shadow_requests_total", tenant="default", endpoint="s",
                 variant="v3", version="3") >= 7


def test_failing_and_slow_shadows_never_affect_the_caller(server):
    versions(server, "m", 1)
    upload_ok(server, "m", NEEDS_EXTRA)  # version 2: requires a feature the traffic lacks
    approve(server, "m", 2)
    upload_ok(server, "m", slow_mlp())  # version 3: slow
    approve(server, "m", 3)
    base = {"model": "m", "routes": [{"version": 1, "weight": 100}]}
    put_endpoint(server, "sh", base)
    rows = {"inputs": [{"a": float(i), "b": 1.0} for i in range(200)]}
    plain = strip_ids(predict(server, "sh", rows).text)
    put_endpoint(server, "sh", dict(base, shadow=[{"version": 2, "fraction": 1.0},
                                                  {"version": 3, "fraction": 1.0}]))
    n = 30
    ids = []
    for _ in range(n):
        r = predict(server, "sh", rows)
        assert r.status_code == 200
        assert strip_ids(r.text) == plain
        ids.append(r.json()["prediction_ids"][0])
    # the callers did not wait for the slow shadow: when the last answer came back, its
    # shadow runs were still going (each takes many times a caller's request)
    m = server.metrics()
    slow_done = m.get("basalt_endpoint_shadow_requests_total", 0, tenant="default",
                      endpoint="sh", variant="v3", version="3")
    assert slow_done < n, slow_done
    # the failing shadow's errors are recorded, never returned; logged under the same ids
    wait_for("failing shadow errors counted", lambda: server.metrics().get(
        "basalt_endpoint_shadow_errors_total", 0, tenant="default", endpoint="sh",
        variant="v2", version="2") == n)
    errs = wait_for("the failing shadow's records", lambda: (lambda rs: rs if len(rs) >= n * 200
                                                            else None)(
        [e for e in log_records(server, 0, "sh", timeout=0)
         if e["shadow"] and e["variant"] == "v2"]))
    assert {e["prediction_id"] for e in errs} >= set(ids)
    assert all(e["error"]["code"] == "invalid_input" and "extra" in e["error"]["message"]
               for e in errs)
    # the slow shadow catches up (nothing dropped at this load) and predicted its 5.0
    wait_for("slow shadow done", lambda: server.metrics().get(
        "basalt_endpoint_shadow_requests_total", 0, tenant="default", endpoint="sh",
        variant="v3", version="3") + server.metrics().get("basalt_shadow_dropped_total") >= n,
        timeout=120)
    assert server.metrics().get("basalt_endpoint_shadow_errors_total", 0, tenant="default",
                                endpoint="sh", variant="v3", version="3") == 0
    # the shadow threads run below the callers' (nice 10): on busy cores they yield
    nices = []
    for tid in os.listdir("/proc/%d/task" % server.proc.pid):
        with open("/proc/%d/task/%s/stat" % (server.proc.pid, tid)) as f:
            nices.append(int(f.read().rsplit(")", 1)[1].split()[16]))
    assert nices.count(10) == 2 and nices.count(0) >= 2, nices


def test_batched_model_through_an_endpoint(server):
    """A model whose batching is on: the answer comes from the batcher's thread, with the
    same body, headers, records and shadows."""
    versions(server, "bm", 2, batching={"enabled": True, "max_batch_size": 8,
                                        "max_queue_delay_us": 2000})
    put_endpoint(server, "be", {"model": "bm", "routes": [{"version": 1, "weight": 100}],
                                "shadow": [{"version": 2, "fraction": 1.0}]})
    out = []

    def one(i):
        r = predict(server, "be", {"inputs": [{"a": float(i), "b": 1.0}] * (1 + i % 3)})
        out.append(r)
    run_threads(16, one)
    for r in out:
        assert r.status_code == 200, r.text
        j = r.json()
        assert (j["version"], j["variant"], j["endpoint"]) == (1, "v1", "be")
        assert r.headers["X-Basalt-Variant"] == "v1"
        assert r.headers["X-Basalt-Model-Version"] == "1"
        assert j["predictions"] == [1] * len(j["prediction_ids"])
    rows = sum(len(r.json()["prediction_ids"]) for r in out)
    recs = wait_for("records", lambda: (lambda rs: rs if len(rs) >= 2 * rows else None)(
        log_records(server, 0, "be", timeout=0)))
    prim = [e for e in recs if not e["shadow"]]
    assert {e["prediction_id"] for e in prim} == {i for r in out for i in r.json()["prediction_ids"]}
    assert all(e["output"] == 1 and set(e["inputs"]) == {"a", "b"} for e in prim)
    assert {e["prediction_id"] for e in recs if e["shadow"]} == {e["prediction_id"] for e in prim}
    m = server.metrics()
    assert m.get("basalt_prediction_batched_rows_total", tenant="default", model="bm",
                 version="1") == rows
    assert m.get("basalt_endpoint_requests_total", tenant="default", endpoint="be",
                 variant="v1", version="1") == 16


# ---- Open Inference Protocol -----------------------------------------------------------------

def tensors(rows, extra=None):
    t = [{"name": "a", "shape": [len(rows)], "datatype": "FP64", "data": [r[0] for r in rows]},
         {"name": "b", "shape": [len(rows)], "datatype": "FP64", "data": [r[1] for r in rows]}]
    return {"inputs": t + (extra or [])}


def test_open_inference_protocol_through_an_endpoint(server):
    versions(server, "m", 3)
    put_endpoint(server, "oe", {"model": "m", "routes": [{"version": 2, "weight": 100}],
                                "shadow": [{"version": 3, "fraction": 1.0}]})
    r = server.post("/v2/models/oe/infer", json=dict(tensors([(1, 2), (3, 4)]), id="req-1"))
    assert r.status_code == 200, r.text
    j = r.json()
    assert (j["model_name"], j["model_version"], j["id"]) == ("oe", "2", "req-1")
    assert j["parameters"] == {"endpoint": "oe", "model": "m", "variant": "v2"}
    assert r.headers["X-Basalt-Model-Version"] == "2" and r.headers["X-Basalt-Variant"] == "v2"
    outs = {o["name"]: o for o in j["outputs"]}
    assert outs["predictions"]["data"] == [2, 2]
    pids = outs["prediction_id"]["data"]
    assert len(pids) == 2 and all(UUID_RE.match(p) for p in pids)
    # logged like the JSON route, and shadowed with the same tensors
    recs = wait_for("records", lambda: (lambda rs: rs if len(rs) >= 4 else None)(
        [e for e in log_records(server, 0, "oe", timeout=0) if e["prediction_id"] in pids]))
    assert {(e["prediction_id"], e["shadow"], e["output"]) for e in recs} == \
        {(p, s, o) for p in pids for s, o in ((False, 2), (True, 3))}
    # a model of that name wins over the endpoint (existing clients keep it)
    versions(server, "shared", 1)
    put_endpoint(server, "shared", {"model": "m", "routes": [{"version": 3, "weight": 100}]})
    r = server.post("/v2/models/shared/infer", json=tensors([(1, 2)]))
    assert r.status_code == 200 and r.json()["model_name"] == "shared", r.text
    assert r.json()["model_version"] == "1" and "X-Basalt-Variant" not in r.headers
    assert predict_ok(server, "shared")["version"] == 3  # the /v1 route is the endpoint
    # neither: the protocol's own 404; a bad body: its 400
    assert_oip_error(server.post("/v2/models/nothing/infer", json=tensors([(1, 2)])), 404)
    assert_oip_error(server.post("/v2/models/oe/infer", json={"inputs": []}), 400)
    assert_oip_error(server.post("/v2/models/oe/infer", json={"inputs": [
        {"name": "a", "shape": [1], "datatype": "FP64", "data": ["x"]}]}), 400)


def test_open_inference_protocol_sticky_tensor(server):
    versions(server, "m", 3)
    put_endpoint(server, "os", {"model": "m", "routes": STICKY_ROUTES,
                                "sticky": {"key": "user_id"}})
    keys = ["u%d" % i for i in range(40)]
    by_json = assignments(server, "os", keys)
    for k in keys:
        r = server.post("/v2/models/os/infer", json=tensors([(1, 2)], [
            {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": [k]}]))
        assert r.status_code == 200, r.text
        assert (r.json()["parameters"]["variant"], int(r.json()["model_version"])) == by_json[k]


# ---- payload logger ---------------------------------------------------------------------------

def test_payload_logger_gets_the_request_and_the_response(server):
    got = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length", 0))
            got.append(({k.lower(): v for k, v in self.headers.items()}, self.rfile.read(n)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass
    rx = HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=rx.serve_forever, daemon=True)
    t.start()
    try:
        versions(server, "m", 1)
        put_endpoint(server, "pl", {"model": "m", "routes": [{"version": 1, "weight": 100}],
                                    "logger": {"url": "http://127.0.0.1:%d/events"
                                               % rx.server_address[1], "mode": "all"}})
        r = predict(server, "pl")
        assert r.status_code == 200
        wait_for("two events", lambda: len(got) >= 2)
        kinds = {h["ce-type"]: body for h, body in got}
        assert json.loads(kinds["org.kubeflow.serving.inference.request"]) == BODY
        assert json.loads(kinds["org.kubeflow.serving.inference.response"]) == r.json()
        assert all(h["ce-id"] == r.headers["X-Request-Id"] and h["ce-endpoint"] == "v1"
                   and h["ce-inferenceservicename"] == "pl" for h, _ in got)
    finally:
        rx.shutdown()
        rx.server_close()
