"""The Endpoint resource (PUT/GET/DELETE /v1/endpoints/{name}, kind Endpoint through basalt
apply/get/delete): the spec as normalised (every default filled in), every bad input answered
4xx with the error envelope naming the field, dry runs, revisions (every change is one) and
rollback to the previous or a named revision (validated again against today's registry), the
live status (what alias routes resolve to now), tenant isolation, the system topics a
tenant's first endpoint creates, roles, /metrics and /openapi.json.

The predict path on an endpoint is tests/api/test_endpoint_predict.py's; this file is about
the resource. Models are basalt linear models written here (modelkit.linear_bytes).
"""
import itertools
import json
import subprocess

import pytest

from conftest import BASALT_BIN, REQUEST_TIMEOUT, clean_env
from modelkit import (approve, assert_error, create_model, linear_bytes, review, set_alias,
                      upload_ok)

_seq = itertools.count(1)


def uniq(prefix):
    return "%s%d" % (prefix, next(_seq))


def model_with_versions(srv, n_approved=2, n_pending=0, key=None, name=None):
    """A model with versions 1..n_approved approved, then n_pending pending ones."""
    kw = {} if key is None else {"key": key}
    name = name or uniq("m")
    create_model(srv, name, **kw)
    for v in range(1, n_approved + n_pending + 1):
        upload_ok(srv, name, linear_bytes([v, 1], 0.5), **kw)
        if v <= n_approved:
            approve(srv, name, v, **kw)
    return name


def put(srv, name, spec, status=(200, 201), **kw):
    r = srv.put("/v1/endpoints/" + name, json=spec, **kw)
    if isinstance(status, int):
        status = (status,)
    assert r.status_code in status, r.text
    return r


def two_routes(model, w1=90, w2=10, **extra):
    spec = {"model": model, "routes": [{"version": 1, "weight": w1}, {"version": 2, "weight": w2}]}
    spec.update(extra)
    return spec


def revisions(srv, name, **params):
    r = srv.get("/v1/endpoints/%s/revisions" % name, params=params)
    assert r.status_code == 200, r.text
    return r.json()


# ---- the resource ---------------------------------------------------------------------------

def test_put_get_list_delete(shared_server):
    s = shared_server
    m = model_with_versions(s)
    ep = uniq("ep")
    r = put(s, ep, two_routes(m), status=201)
    j = r.json()
    assert j["kind"] == "Endpoint" and j["name"] == ep and j["outcome"] == "created"
    assert j["generation"] == 1
    assert j["spec"] == {"model": m,
                         "routes": [{"name": "v1", "version": 1, "weight": 90},
                                    {"name": "v2", "version": 2, "weight": 10}],
                         "shadow": [], "policy": {"type": "weighted"},
                         "logging": {"sample_rate": 1}}
    assert j["status"]["revision"] == 1
    assert [(x["name"], x["version"], x["approved"]) for x in j["status"]["routes"]] == \
        [("v1", 1, True), ("v2", 2, True)]
    g = s.get("/v1/endpoints/" + ep)
    assert g.status_code == 200 and g.json()["spec"] == j["spec"]
    # the same spec again (even written differently) changes nothing
    again = {"routes": [{"weight": 90, "version": 1}, {"version": 2, "weight": 10}], "model": m}
    r = put(s, ep, again, status=200)
    assert r.json()["outcome"] == "unchanged" and r.json()["generation"] == 1
    # {kind, name, spec} is accepted too
    r = put(s, ep, {"kind": "Endpoint", "name": ep, "spec": two_routes(m, 50, 50)}, status=200)
    assert r.json()["outcome"] == "updated" and r.json()["generation"] == 2
    listed = s.get("/v1/endpoints?limit=1000").json()
    assert ep in [i["name"] for i in listed["items"]]
    assert s.delete("/v1/endpoints/" + ep).status_code == 204
    assert_error(s.get("/v1/endpoints/" + ep), 404, code="not_found")
    assert_error(s.get("/v1/endpoints/%s/revisions" % ep), 404, code="not_found")
    assert_error(s.delete("/v1/endpoints/" + ep), 404, code="not_found")
    # created again: the history starts over
    put(s, ep, two_routes(m), status=201)
    assert [i["revision"] for i in revisions(s, ep)["items"]] == [1]


def test_every_option_normalised(shared_server):
    s = shared_server
    m = model_with_versions(s, n_approved=2, n_pending=1)
    assert set_alias(s, m, "challenger", 2).status_code == 200
    ep = uniq("ep")
    spec = {"model": m,
            "routes": [{"version": 1, "weight": 95}, {"alias": "challenger", "weight": 5, "name": "b"}],
            "shadow": [{"version": 3, "fraction": 0.2}],
            "sticky": {"header": "X-User-Id"},
            "policy": {"type": "thompson", "reward": {"label": "fraud"}},
            "logging": {"sample_rate": 0.5},
            "logger": {"url": "http://127.0.0.1:9/events"}}
    j = put(s, ep, spec, status=201).json()
    assert j["spec"] == {"model": m,
                         "routes": [{"name": "v1", "version": 1, "weight": 95},
                                    {"name": "b", "alias": "challenger", "weight": 5}],
                         "shadow": [{"name": "v3", "version": 3, "fraction": 0.2}],
                         "sticky": {"header": "x-user-id"},
                         "policy": {"type": "thompson", "reward": {"label": "fraud"}},
                         "logging": {"sample_rate": 0.5},
                         "logger": {"url": "http://127.0.0.1:9/events", "mode": "all"}}
    st = j["status"]
    # the alias route resolves to the alias's version now; a pending version may shadow
    assert st["routes"][1] == {"name": "b", "alias": "challenger", "version": 2,
                               "approved": True, "weight": 5}
    assert st["shadow"][0]["version"] == 3 and st["shadow"][0]["approved"] is False
    assert [a["name"] for a in st["arms"]] == ["v1", "b"]
    # a sticky input field, a numeric reward label, request-only logging
    spec2 = {"model": m, "routes": [{"alias": "challenger"}], "sticky": {"key": "user_id"},
             "policy": {"type": "thompson", "reward": {"label": 1}},
             "logger": {"url": "https://example.com/log", "mode": "request"}}
    j = put(s, ep, spec2, status=200).json()
    assert j["spec"]["routes"] == [{"name": "challenger", "alias": "challenger", "weight": 100}]
    assert j["spec"]["sticky"] == {"key": "user_id"}
    assert j["spec"]["policy"]["reward"] == {"label": 1}
    assert j["spec"]["logger"]["mode"] == "request"
    assert "shadow" in j["spec"] and j["spec"]["shadow"] == []


def test_moving_an_alias_moves_the_route_without_a_revision(shared_server):
    s = shared_server
    m = model_with_versions(s, n_approved=3)
    assert set_alias(s, m, "champion", 1).status_code == 200
    ep = uniq("ep")
    put(s, ep, {"model": m, "routes": [{"alias": "champion"}]}, status=201)
    assert s.get("/v1/endpoints/" + ep).json()["status"]["routes"][0]["version"] == 1
    assert set_alias(s, m, "champion", 3).status_code == 200
    j = s.get("/v1/endpoints/" + ep).json()
    assert j["status"]["routes"][0]["version"] == 3
    assert j["generation"] == 1  # nothing to rebuild: the alias resolves per request
    # the alias deleted: the status says so, the resource stays
    assert s.delete("/v1/models/%s/aliases/champion" % m).status_code == 204
    st = s.get("/v1/endpoints/" + ep).json()["status"]["routes"][0]
    assert st["version"] is None and "champion" in st["error"]


def test_dry_run_writes_nothing(shared_server):
    s = shared_server
    m = model_with_versions(s)
    ep = uniq("ep")
    r = s.put("/v1/endpoints/%s?dry_run=true" % ep, json=two_routes(m))
    assert r.status_code == 200, r.text
    assert r.headers["X-Dry-Run"] == "true"
    assert r.json()["outcome"] == "created" and r.json()["spec"]["routes"][0]["name"] == "v1"
    assert_error(s.get("/v1/endpoints/" + ep), 404)
    put(s, ep, two_routes(m), status=201)
    r = s.put("/v1/endpoints/%s?dry_run=1" % ep, json=two_routes(m, 0, 100))
    assert r.status_code == 200 and r.json()["outcome"] == "updated"
    assert r.json()["generation"] == 2
    assert s.get("/v1/endpoints/" + ep).json()["spec"]["routes"][0]["weight"] == 90
    assert [i["revision"] for i in revisions(s, ep)["items"]] == [1]
    # a dry run validates like the real thing
    bad = two_routes(m, 60, 30)
    assert_error(s.put("/v1/endpoints/%s?dry_run=true" % ep, json=bad), 400, field="routes",
                 code="invalid_input")


BAD = [
    # (spec, status, field, words in the message); "M" is the test's model
    ({"routes": [{"version": 1}]}, 400, "model", "required"),
    ({"model": "no-such-model", "routes": [{"version": 1}]}, 404, "model", "no-such-model"),
    ({"model": "M"}, 400, "routes", "required"),
    ({"model": "M", "routes": []}, 400, "routes", None),
    ({"model": "M", "routes": [{"version": 9}]}, 404, "routes[0].version", "no version 9"),
    ({"model": "M", "routes": [{"alias": "gold"}]}, 404, "routes[0].alias", "gold"),
    ({"model": "M", "routes": [{"version": 1, "weight": 60}, {"version": 2, "weight": 30}]},
     400, "routes", "sum to 100"),
    ({"model": "M", "routes": [{"version": 1, "weight": 70}, {"version": 2, "weight": 70}]},
     400, "routes", "got 140"),
    ({"model": "M", "routes": [{"version": 1, "weight": 50.5}, {"version": 2, "weight": 49.5}]},
     400, "routes[0].weight", None),
    ({"model": "M", "routes": [{"version": 1, "weight": 50}, {"version": 3, "weight": 50}]},
     400, "routes[1].version", "not approved"),
    ({"model": "M", "routes": [{"version": 1, "alias": "champion"}]}, 400, "routes[0]",
     "exactly one"),
    ({"model": "M", "routes": [{"version": 1}], "colour": "red"}, 400, "colour", "unknown"),
    ({"model": "M", "routes": [{"version": 1, "share": 100}]}, 400, "routes[0].share", "unknown"),
    ({"model": "M", "routes": [{"version": 1, "weight": 50}, {"version": 1, "weight": 50}]},
     400, "routes[1].name", "twice"),
    ({"model": "M", "routes": [{"version": 1}], "shadow": [{"version": 2, "fraction": 0}]},
     400, "shadow[0].fraction", None),
    ({"model": "M", "routes": [{"version": 1}], "shadow": [{"version": 2}]},
     400, "shadow[0].fraction", "required"),
    ({"model": "M", "routes": [{"version": 1}], "sticky": {}}, 400, "sticky", None),
    ({"model": "M", "routes": [{"version": 1}], "sticky": {"key": "u", "header": "x-u"}},
     400, "sticky", "exactly one"),
    ({"model": "M", "routes": [{"version": 1}], "sticky": {"header": "bad header"}},
     400, "sticky.header", None),
    ({"model": "M", "routes": [{"version": 1}], "sticky": {"cookie": "u"}},
     400, "sticky.cookie", "unknown"),
    ({"model": "M", "routes": [{"version": 1}], "policy": {"type": "epsilon"}},
     400, "policy.type", None),
    ({"model": "M", "routes": [{"version": 1}], "policy": {"type": "thompson"}},
     400, "policy.reward", None),
    ({"model": "M", "routes": [{"version": 1}],
      "policy": {"type": "thompson", "reward": {"label": {"a": 1}}}},
     400, "policy.reward.label", None),
    ({"model": "M", "routes": [{"version": 1}], "logging": {"sample_rate": -0.1}},
     400, "logging.sample_rate", None),
    ({"model": "M", "routes": [{"version": 1}], "logger": {"mode": "all"}},
     400, "logger.url", "required"),
    ({"model": "M", "routes": [{"version": 1}], "logger": {"url": "not a url"}},
     400, "logger.url", None),
    ({"model": "M", "routes": [{"version": 1}], "logger": {"url": "http://x/", "mode": "some"}},
     400, "logger.mode", None),
]


@pytest.fixture(scope="module")
def bad_model(shared_server):
    # versions 1, 2 approved, 3 pending; alias champion on 1
    m = model_with_versions(shared_server, n_approved=2, n_pending=1)
    assert set_alias(shared_server, m, "champion", 1).status_code == 200
    return m


@pytest.mark.parametrize("spec,status,field,words", BAD)
def test_bad_specs_are_4xx_naming_the_field(shared_server, bad_model, spec, status, field, words):
    s = shared_server
    spec = json.loads(json.dumps(spec).replace('"M"', json.dumps(bad_model)))
    ep = uniq("bad")
    e = assert_error(s.put("/v1/endpoints/" + ep, json=spec), status, field=field,
                     code="invalid_input" if status == 400 else "not_found", mentions=words)
    assert e["message"]
    assert_error(s.get("/v1/endpoints/" + ep), 404)  # nothing stored


def test_bad_bodies_and_names(shared_server, bad_model):
    s = shared_server
    assert_error(s.put("/v1/endpoints/Bad_Name", json={"model": bad_model,
                                                       "routes": [{"version": 1}]}),
                 400, field="name")
    r = s.put("/v1/endpoints/x1", data=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(r, 400)
    assert_error(s.put("/v1/endpoints/x1", json=[1, 2]), 400)
    assert_error(s.put("/v1/endpoints/x1", json={"kind": "Topic", "name": "x1",
                                                 "spec": {"model": bad_model}}),
                 400, field="kind")


def test_unapproved_then_approved_version(shared_server):
    s = shared_server
    m = model_with_versions(s, n_approved=1, n_pending=1)
    ep = uniq("ep")
    assert_error(s.put("/v1/endpoints/" + ep, json=two_routes(m)), 400,
                 field="routes[1].version", code="invalid_input", mentions="not approved")
    approve(s, m, 2)
    put(s, ep, two_routes(m), status=201)
    # a rejected version can neither route nor shadow
    upload_ok(s, m, linear_bytes([3, 3], 0))
    assert review(s, m, 3, "reject").status_code == 200
    assert_error(s.put("/v1/endpoints/" + ep, json={"model": m, "routes": [{"version": 3}]}), 400,
                 field="routes[0].version", mentions="not approved")
    assert_error(s.put("/v1/endpoints/" + ep,
                       json={"model": m, "routes": [{"version": 1}],
                             "shadow": [{"version": 3, "fraction": 0.5}]}),
                 400, field="shadow[0].version", mentions="rejected")


# ---- revisions and rollback -----------------------------------------------------------------

def test_revisions_and_rollback(shared_server):
    s = shared_server
    m = model_with_versions(s, n_approved=3)
    ep = uniq("ep")
    specs = [two_routes(m, 100, 0), two_routes(m, 90, 10), two_routes(m, 50, 50)]
    for sp in specs:
        put(s, ep, sp)
    put(s, ep, specs[-1])  # unchanged: no revision
    revs = revisions(s, ep)
    assert [i["revision"] for i in revs["items"]] == [3, 2, 1]
    assert revs["next_cursor"] is None
    assert [i["spec"]["routes"][0]["weight"] for i in revs["items"]] == [50, 90, 100]
    for i in revs["items"]:
        assert i["created_at"].endswith("Z") and i["created_by"]
    # pages
    p1 = revisions(s, ep, limit=2)
    assert [i["revision"] for i in p1["items"]] == [3, 2] and p1["next_cursor"] == "2"
    p2 = revisions(s, ep, limit=2, cursor=p1["next_cursor"])
    assert [i["revision"] for i in p2["items"]] == [1] and p2["next_cursor"] is None
    assert_error(s.get("/v1/endpoints/%s/revisions?cursor=abc" % ep), 400, field="cursor")
    assert_error(s.get("/v1/endpoints/%s/revisions?limit=0" % ep), 400, field="limit")
    # rollback with {}: the previous revision's spec, as a new revision
    r = s.post("/v1/endpoints/%s/rollback" % ep, json={})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["generation"] == 4 and j["outcome"] == "updated"
    assert j["spec"]["routes"][0]["weight"] == 90 and j["status"]["revision"] == 4
    assert s.get("/v1/endpoints/" + ep).json()["spec"] == revs["items"][1]["spec"]
    # to a named revision; an empty body is the same as {}
    j = s.post("/v1/endpoints/%s/rollback" % ep, json={"revision": 1}).json()
    assert j["generation"] == 5 and j["spec"]["routes"][0]["weight"] == 100
    j = s.post("/v1/endpoints/%s/rollback" % ep).json()
    assert j["generation"] == 6 and j["spec"]["routes"][0]["weight"] == 90  # revision 4's
    assert [i["revision"] for i in revisions(s, ep)["items"]] == [6, 5, 4, 3, 2, 1]
    # the revision being restored that is the current spec: unchanged
    r = s.post("/v1/endpoints/%s/rollback" % ep, json={"revision": 6})
    assert r.status_code == 200 and r.json()["outcome"] == "unchanged"
    # dry run: the outcome, nothing written
    r = s.post("/v1/endpoints/%s/rollback?dry_run=true" % ep, json={"revision": 3})
    assert r.status_code == 200 and r.json()["outcome"] == "updated"
    assert s.get("/v1/endpoints/" + ep).json()["generation"] == 6
    # bad requests
    assert_error(s.post("/v1/endpoints/%s/rollback" % ep, json={"revision": 99}), 404,
                 field="revision")
    assert_error(s.post("/v1/endpoints/%s/rollback" % ep, json={"revision": "2"}), 400,
                 field="revision")
    assert_error(s.post("/v1/endpoints/%s/rollback" % ep, json={"revision": 0}), 400,
                 field="revision")
    assert_error(s.post("/v1/endpoints/%s/rollback" % ep, json={"to": 2}), 400, field="to")
    assert_error(s.post("/v1/endpoints/%s/rollback" % ep, json=[2]), 400)
    assert_error(s.post("/v1/endpoints/nope-%s/rollback" % ep, json={}), 404)


def test_rollback_with_one_revision_is_409(shared_server):
    s = shared_server
    m = model_with_versions(s)
    ep = uniq("ep")
    put(s, ep, two_routes(m), status=201)
    assert_error(s.post("/v1/endpoints/%s/rollback" % ep, json={}), 409, code="conflict",
                 field="revision")


def test_rollback_to_a_version_archived_since_is_refused(shared_server):
    s = shared_server
    m = model_with_versions(s, n_approved=3)
    ep = uniq("ep")
    put(s, ep, two_routes(m, 90, 10), status=201)  # revision 1 routes version 2
    put(s, ep, {"model": m, "routes": [{"version": 1, "weight": 50}, {"version": 3, "weight": 50}]})
    assert review(s, m, 2, "archive").status_code == 200
    e = assert_error(s.post("/v1/endpoints/%s/rollback" % ep, json={}), 400,
                     field="routes[1].version", code="invalid_input")
    assert "revision 1 cannot be restored" in e["message"] and "not approved" in e["message"]
    j = s.get("/v1/endpoints/" + ep).json()
    assert j["generation"] == 2 and j["spec"]["routes"][1]["version"] == 3


# ---- tenants, topics, roles, metrics, the document ------------------------------------------

def new_tenant(srv, role="developer"):
    t = uniq("tn")
    assert srv.post("/v1/tenants", json={"name": t}).status_code == 201
    return t, srv.create_key(role, tenant=t)["key"]


def test_tenant_isolation(shared_server):
    s = shared_server
    m = model_with_versions(s)
    ep = uniq("ep")
    put(s, ep, two_routes(m), status=201)
    t, other = new_tenant(s)
    assert_error(s.get("/v1/endpoints/" + ep, key=other), 404)
    assert_error(s.get("/v1/endpoints/%s/revisions" % ep, key=other), 404)
    assert_error(s.post("/v1/endpoints/%s/rollback" % ep, key=other, json={}), 404)
    assert_error(s.delete("/v1/endpoints/" + ep, key=other), 404)
    assert s.get("/v1/endpoints", key=other).json()["items"] == []
    # the default tenant's model does not exist for the other tenant
    assert_error(s.put("/v1/endpoints/" + ep, key=other, json=two_routes(m)), 404, field="model")
    # its own model under the same name: its own endpoint under the same name
    model_with_versions(s, key=other, name=m)
    j = put(s, ep, two_routes(m, 0, 100), key=other, status=201).json()
    assert j["tenant"] == t and j["generation"] == 1
    assert s.get("/v1/endpoints/" + ep).json()["spec"]["routes"][0]["weight"] == 90
    assert [i["revision"] for i in revisions(s, ep)["items"]] == [1]


def test_first_endpoint_creates_the_system_topics(shared_server):
    s = shared_server
    t, key = new_tenant(s)
    for topic in ("predictions", "feedback"):
        assert_error(s.get("/v1/topics/" + topic, key=key), 404)
    m = model_with_versions(s, key=key)
    # a refused spec creates nothing
    assert_error(s.put("/v1/endpoints/e1", key=key, json=two_routes(m, 1, 1)), 400)
    assert_error(s.get("/v1/topics/predictions", key=key), 404)
    put(s, "e1", two_routes(m), key=key, status=201)
    p = s.get("/v1/topics/predictions", key=key).json()
    f = s.get("/v1/topics/feedback", key=key).json()
    assert p["spec"]["sync"] == "1s" and p["spec"]["retention"]["max_age"] == "7d"
    assert f["spec"]["sync"] == "always" and f["spec"]["retention"]["max_age"] == "30d"
    assert p["created_by"] == f["created_by"] == "system:endpoints"
    assert p["status"]["ready"] is True and f["status"]["ready"] is True
    # a second endpoint leaves them as they are (a user's change of them stays)
    r = s.put("/v1/topics/predictions", key=key,
              json={"sync": "1s", "retention": {"max_age": "3d"}})
    assert r.status_code == 200, r.text
    put(s, "e2", two_routes(m), key=key, status=201)
    assert s.get("/v1/topics/predictions", key=key).json()["spec"]["retention"]["max_age"] == "3d"


def test_roles(shared_server):
    s = shared_server
    m = model_with_versions(s)
    ep = uniq("ep")
    viewer = s.create_key("viewer")["key"]
    predictor = s.create_key("predictor")["key"]
    developer = s.create_key("developer")["key"]
    for k in (viewer, predictor):
        assert_error(s.put("/v1/endpoints/" + ep, key=k, json=two_routes(m)), 403)
    put(s, ep, two_routes(m), key=developer, status=201)
    put(s, ep, two_routes(m, 80, 20), key=developer, status=200)
    assert s.get("/v1/endpoints/" + ep, key=viewer).status_code == 200
    assert s.get("/v1/endpoints/%s/revisions" % ep, key=viewer).status_code == 200
    assert_error(s.post("/v1/endpoints/%s/rollback" % ep, key=viewer, json={}), 403)
    assert_error(s.delete("/v1/endpoints/" + ep, key=viewer), 403)
    assert s.post("/v1/endpoints/%s/rollback" % ep, key=developer, json={}).status_code == 200
    assert s.delete("/v1/endpoints/" + ep, key=developer).status_code == 204


def test_metrics_and_openapi(shared_server):
    s = shared_server
    m = model_with_versions(s)
    put(s, uniq("ep"), two_routes(m), status=201)
    metrics = s.metrics()
    assert metrics.get("basalt_endpoints") >= 1
    # (the latency histogram appears with the first request: test_endpoint_predict.py)
    for fam in ("basalt_endpoint_requests_total", "basalt_endpoint_errors_total",
                "basalt_endpoint_shadow_requests_total", "basalt_endpoint_shadow_errors_total"):
        assert fam in metrics.types, fam
    doc = s.get("/openapi.json").json()
    paths = doc["paths"]
    for p, method in (("/v1/endpoints/{name}", "put"), ("/v1/endpoints", "get"),
                      ("/v1/endpoints/{name}/revisions", "get"),
                      ("/v1/endpoints/{name}/rollback", "post")):
        assert method in paths[p], p
    kinds = s.get("/v1/kinds").json()["items"]
    assert {"kind": "Endpoint", "plural": "endpoints"}.items() <= \
        [k for k in kinds if k["kind"] == "Endpoint"][0].items()


# ---- basalt apply / get / delete ------------------------------------------------------------

def cli(srv, *args, stdin=None):
    env = {"BASALT_URL": srv.url, "BASALT_API_KEY": srv.admin_key}
    return subprocess.run([BASALT_BIN, *args], env=clean_env(env), input=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=2 * REQUEST_TIMEOUT)


def ok(cp):
    assert cp.returncode == 0, (cp.returncode, cp.stdout, cp.stderr)
    return cp.stdout


def test_cli_apply_get_delete(shared_server, tmp_path):
    s = shared_server
    m = model_with_versions(s)
    ep = uniq("cli")
    doc = """\
kind: Endpoint
name: %s
spec:
  model: %s
  routes:
    - {version: 1, weight: 95}
    - {version: 2, weight: 5}
  sticky: {key: user_id}
""" % (ep, m)
    f = tmp_path / "endpoint.yaml"
    f.write_text(doc)
    out = ok(cli(s, "apply", "-f", str(f), "--dry-run"))
    assert out.startswith("endpoint/%s created (dry run)" % ep), out
    assert_error(s.get("/v1/endpoints/" + ep), 404)
    assert ok(cli(s, "apply", "-f", str(f))) == "endpoint/%s created\n" % ep
    assert ok(cli(s, "apply", "-f", str(f))) == "endpoint/%s unchanged\n" % ep
    j = s.get("/v1/endpoints/" + ep).json()
    assert j["spec"]["sticky"] == {"key": "user_id"} and j["spec"]["routes"][1]["weight"] == 5
    f.write_text(doc.replace("weight: 95", "weight: 50").replace("weight: 5}", "weight: 50}"))
    assert ok(cli(s, "apply", "-f", str(f))) == "endpoint/%s updated\n" % ep
    table = ok(cli(s, "get", "endpoints")).splitlines()
    assert table[0].split()[0] == "NAME" and ep in [l.split()[0] for l in table[1:]]
    one = json.loads(ok(cli(s, "get", "endpoint", ep, "-o", "json")))
    assert one["generation"] == 2 and one["spec"]["routes"][0]["weight"] == 50
    # a bad document: the server's message and a nonzero status
    bad = cli(s, "apply", "-f", "-", stdin=doc.replace("version: 2", "version: 77"))
    assert bad.returncode != 0 and "no version 77" in bad.stderr + bad.stdout
    ok(cli(s, "delete", "endpoint", ep))
    assert_error(s.get("/v1/endpoints/" + ep), 404)
