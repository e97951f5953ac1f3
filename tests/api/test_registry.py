"""The model registry over HTTP: versions, approvals, aliases, lifecycle rules, malformed
artifacts, roles and tenants, the audit trail, runs and lineage, concurrent uploads and
durability across restarts.

Models here are small hand-written basalt linear regressions y = c . x + b (tests/api/
modelkit.py linear_doc), so the oracle for "which version served this" is the formula of
the artifact that was uploaded as that version.
"""
import concurrent.futures
import copy
import json

import numpy as np
import pytest
import xgboost as xgb
from sklearn import datasets

from modelkit import (approve, artifact_files, assert_close, assert_error, create_model,
                      linear_bytes, linear_doc, predict, predict_ok, publish, review, set_alias,
                      upload, upload_ok, versions, xgb_bytes)

ROWS = [{"a": 1.0, "b": 2.0}, {"a": -3.5, "b": 0.25}, {"a": 0.0, "b": 0.0}]


def coefs(v):
    """Coefficients of the artifact used as version v in these tests: distinct per version."""
    return (float(v), 10.0 * v), 100.0 * v


def art(v):
    c, b = coefs(v)
    return linear_bytes(c, b)


def oracle(v, rows=ROWS):
    c, b = coefs(v)
    return [c[0] * r["a"] + c[1] * r["b"] + b for r in rows]


def served(srv, ref, key=None, version=None):
    """(version in the response, predictions) for ROWS; checks them against that version."""
    kw = {} if key is None else {"key": key}
    j = predict_ok(srv, ref, {"inputs": ROWS}, len(ROWS), version=version, **kw)
    assert_close(j["predictions"], oracle(j["version"]), "served version %d" % j["version"])
    return j["version"]


# ---- versions, approvals, aliases ------------------------------------------------------------

def test_version_numbering_and_listing(shared_server):
    srv = shared_server
    m = create_model(srv, "numbered", description="d", tags=["t1"])
    assert m["latest_version"] is None and m["aliases"] == {} and m["tags"] == ["t1"]
    got = [upload_ok(srv, "numbered", art(i), "basalt_json")["version"] for i in (1, 2, 3)]
    assert got == [1, 2, 3]
    assert srv.get("/v1/models/numbered").json()["latest_version"] == 3
    assert versions(srv, "numbered") == [3, 2, 1]  # newest first
    # Pagination: limit + next_cursor walks every version once.
    seen, cursor = [], None
    for _ in range(5):
        r = srv.get("/v1/models/numbered/versions", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        j = r.json()
        assert len(j["items"]) <= 2
        seen += [v["version"] for v in j["items"]]
        cursor = j["next_cursor"]
        if not cursor:
            break
    assert seen == [3, 2, 1]
    v = srv.get("/v1/models/numbered/versions/2").json()
    assert v["version"] == 2 and v["status"] == "pending" and v["format"] == "basalt_json"
    import hashlib
    assert v["sha256"] == hashlib.sha256(art(2)).hexdigest() and v["size"] == len(art(2))
    assert_error(srv.get("/v1/models/numbered/versions/9"), 404, field="version")
    assert_error(srv.get("/v1/models/numbered/versions/abc"), 400, field="version")
    approve(srv, "numbered", 2)
    r = srv.get("/v1/models/numbered/versions?status=approved")
    assert [v["version"] for v in r.json()["items"]] == [2]


def test_approval_transitions(shared_server):
    srv = shared_server
    create_model(srv, "flow")
    for i in (1, 2, 3):
        upload_ok(srv, "flow", art(i), "basalt_json")
    # pending cannot be aliased or archived
    assert_error(set_alias(srv, "flow", "champion", 1), 409)
    assert_error(review(srv, "flow", 1, "archive"), 409, field="status")
    r = review(srv, "flow", 1, "approve", comment="looks good")
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["status"] == "approved" and v["review_comment"] == "looks good"
    assert v["reviewed_by"] and v["reviewed_at"]
    assert_error(review(srv, "flow", 1, "approve"), 409, field="status")
    assert_error(review(srv, "flow", 1, "reject"), 409, field="status")
    r = review(srv, "flow", 2, "reject", comment="worse AUC")
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    assert_error(review(srv, "flow", 2, "approve"), 409)
    assert_error(review(srv, "flow", 2, "archive"), 409)
    assert_error(set_alias(srv, "flow", "champion", 2), 409)
    assert_error(review(srv, "flow", 9, "approve"), 404, field="version")
    assert_error(review(srv, "nope", 1, "approve"), 404)
    assert_error(srv.post("/v1/models/flow/versions/3/approve", json={"comment": 5}), 400)
    assert_error(srv.post("/v1/models/flow/versions/3/approve", json={"why": "x"}), 400)
    # archive: approved -> archived, not while an alias points at it
    assert set_alias(srv, "flow", "champion", 1).status_code == 200
    assert_error(review(srv, "flow", 1, "archive"), 409, field="version")
    assert srv.delete("/v1/models/flow/aliases/champion").status_code == 204
    r = review(srv, "flow", 1, "archive")
    assert r.status_code == 200 and r.json()["status"] == "archived"
    assert_error(review(srv, "flow", 1, "archive"), 409)
    assert_error(set_alias(srv, "flow", "champion", 1), 409)
    # Nothing approved is left: the bare name is 404.
    assert_error(predict(srv, "flow", {"inputs": ROWS}), 404)
    # By explicit version, pending (for tests before review) and archived (for comparisons)
    # still serve; a rejected version never does, on either API.
    assert served(srv, "flow", version=3) == 3
    assert served(srv, "flow", version=1) == 1
    assert_error(predict(srv, "flow", {"inputs": ROWS}, version=2), 409, field="version",
                 mentions="rejected")
    assert_error(srv.get("/v2/models/flow/versions/2/ready"), 409)
    assert_error(srv.post("/v2/models/flow/versions/2/infer", json={"inputs": [
        {"name": "a", "datatype": "FP64", "shape": [1], "data": [1.0]},
        {"name": "b", "datatype": "FP64", "shape": [1], "data": [1.0]}]}), 409)
    assert [v["status"] for v in srv.get("/v1/models/flow/versions").json()["items"]] == \
        ["pending", "rejected", "archived"]


def test_aliases_route_predictions(shared_server):
    srv = shared_server
    create_model(srv, "routed")
    for i in (1, 2, 3):
        upload_ok(srv, "routed", art(i), "basalt_json")
    approve(srv, "routed", 1)
    assert served(srv, "routed") == 1                     # latest approved
    approve(srv, "routed", 2)
    assert served(srv, "routed") == 2
    r = set_alias(srv, "routed", "champion", 1)
    assert r.status_code == 200, r.text
    assert r.json() == {"model": "routed", "alias": "champion", "version": 1, "previous_version": None}
    assert served(srv, "routed") == 1                     # champion wins over latest
    assert served(srv, "routed@champion") == 1
    assert set_alias(srv, "routed", "challenger", 2).status_code == 200
    assert served(srv, "routed@challenger") == 2
    m = srv.get("/v1/models/routed").json()
    assert m["aliases"] == {"champion": 1, "challenger": 2}
    assert srv.get("/v1/models/routed/versions/2").json()["aliases"] == ["challenger"]
    # Moving the champion switches what the bare name and name@champion serve.
    r = set_alias(srv, "routed", "champion", 2)
    assert r.json()["previous_version"] == 1
    assert served(srv, "routed") == 2 and served(srv, "routed@champion") == 2
    assert sorted(srv.get("/v1/models/routed/versions/2").json()["aliases"]) == \
        ["challenger", "champion"]
    approve(srv, "routed", 3)
    assert served(srv, "routed") == 2                     # still the champion
    assert srv.delete("/v1/models/routed/aliases/champion").status_code == 204
    assert served(srv, "routed") == 3                     # back to the latest approved
    assert_error(predict(srv, "routed@champion", {"inputs": ROWS}), 404, field="alias")
    assert_error(srv.delete("/v1/models/routed/aliases/champion"), 404, field="alias")
    # bad aliases and versions
    assert_error(set_alias(srv, "routed", "123", 1), 400, field="alias")
    assert_error(set_alias(srv, "routed", "Bad Alias", 1), 400)
    assert_error(set_alias(srv, "routed", "x", 99), 404, field="version")
    assert_error(srv.put("/v1/models/routed/aliases/x", json={"version": "1"}), 400)
    assert_error(srv.put("/v1/models/routed/aliases/x", json={}), 400)
    assert_error(set_alias(srv, "nope", "champion", 1), 404)


def test_distinct_approver(shared_server):
    srv = shared_server
    dev1 = srv.create_key("developer", name="dev1")
    dev2 = srv.create_key("developer", name="dev2")
    create_model(srv, "four-eyes", key=dev1["key"], require_distinct_approver=True)
    upload_ok(srv, "four-eyes", art(1), "basalt_json", key=dev1["key"])
    upload_ok(srv, "four-eyes", art(2), "basalt_json", key=dev1["key"])
    assert_error(review(srv, "four-eyes", 1, "approve", key=dev1["key"]), 403)
    assert_error(review(srv, "four-eyes", 2, "reject", key=dev1["key"]), 403)
    assert srv.get("/v1/models/four-eyes/versions/1").json()["status"] == "pending"
    v = approve(srv, "four-eyes", 1, key=dev2["key"])
    assert v["reviewed_by"] == dev2["id"] and v["created_by"] == dev1["id"]
    assert v["require_distinct_approver"] is True
    # An admin lifts the rule: versions uploaded from then on may be self-approved, but
    # version 2, uploaded under the rule, keeps it.
    r = srv.patch("/v1/models/four-eyes", json={"require_distinct_approver": False})
    assert r.status_code == 200 and r.json()["require_distinct_approver"] is False
    assert srv.get("/v1/models/four-eyes/versions/2").json()["require_distinct_approver"] is True
    assert_error(review(srv, "four-eyes", 2, "approve", key=dev1["key"]), 403)
    v3 = upload_ok(srv, "four-eyes", art(3), "basalt_json", key=dev1["key"])
    assert v3["require_distinct_approver"] is False
    approve(srv, "four-eyes", 3, key=dev1["key"])


def test_uploader_cannot_switch_off_the_four_eyes_rule(shared_server):
    """The attack: after a 403 on self-approval the uploader PATCHes the rule off,
    approves, and turns it back on."""
    srv = shared_server
    dev = srv.create_key("developer", name="sneaky")
    create_model(srv, "sneaky-model", key=dev["key"], require_distinct_approver=True)
    upload_ok(srv, "sneaky-model", art(1), "basalt_json", key=dev["key"])
    assert_error(review(srv, "sneaky-model", 1, "approve", key=dev["key"]), 403)
    assert_error(srv.patch("/v1/models/sneaky-model", key=dev["key"],
                           json={"require_distinct_approver": False}),
                 403, field="require_distinct_approver", code="forbidden")
    assert srv.get("/v1/models/sneaky-model").json()["require_distinct_approver"] is True
    assert_error(review(srv, "sneaky-model", 1, "approve", key=dev["key"]), 403)
    # Even if an admin lifts the rule meanwhile, the pending version keeps its own.
    assert srv.patch("/v1/models/sneaky-model",
                     json={"require_distinct_approver": False}).status_code == 200
    assert_error(review(srv, "sneaky-model", 1, "approve", key=dev["key"]), 403)
    assert srv.patch("/v1/models/sneaky-model",
                     json={"require_distinct_approver": True}).status_code == 200
    assert srv.get("/v1/models/sneaky-model/versions/1").json()["status"] == "pending"
    # A developer's PATCH that leaves the rule as it is, or changes other fields, still works.
    r = srv.patch("/v1/models/sneaky-model", key=dev["key"],
                  json={"require_distinct_approver": True, "description": "d"})
    assert r.status_code == 200, r.text
    # Both changes by the admin are audited with the old and the new value.
    items = srv.get("/v1/audit", params={"limit": 1000}).json()["items"]
    rule = [e for e in reversed(items)
            if e["action"] == "model.approval_rule" and e["resource"] == "models/sneaky-model"]
    admin_id = srv.get("/v1/info").json()["caller"]["key_id"]
    assert [(e["before"], e["after"]) for e in rule] == [
        ({"require_distinct_approver": True}, {"require_distinct_approver": False}),
        ({"require_distinct_approver": False}, {"require_distinct_approver": True})]
    assert all(e["actor"] == admin_id for e in rule)


def test_patch_delete_list(shared_server):
    srv = shared_server
    names = ["pg-a%d" % i for i in range(5)] + ["pg-b0", "pg_x"]
    for i, n in enumerate(names):
        create_model(srv, n, tags=["gold"] if i % 2 == 0 else ["silver", "x"])
    assert_error(srv.post("/v1/models", json={"name": "pg-a0"}), 409, field="name")
    for bad in ({"name": "has space"}, {"name": ""}, {"name": "a" * 129}, {"name": 5},
                {}, {"name": "ok", "colour": "red"}, {"name": "ok", "tags": "gold"}):
        assert_error(srv.post("/v1/models", json=bad), 400)

    def walk(**q):
        out, cursor = [], None
        for _ in range(20):
            params = dict(q)
            if cursor:
                params["cursor"] = cursor
            r = srv.get("/v1/models", params=params)
            assert r.status_code == 200, r.text
            j = r.json()
            assert len(j["items"]) <= q.get("limit", 100)
            out += [m["name"] for m in j["items"]]
            cursor = j["next_cursor"]
            if not cursor:
                return out
        raise AssertionError("pagination does not end")

    assert walk(prefix="pg-a", limit=2) == ["pg-a0", "pg-a1", "pg-a2", "pg-a3", "pg-a4"]
    assert walk(prefix="pg-", limit=3) == sorted(n for n in names if n.startswith("pg-"))
    assert walk(prefix="pg_") == ["pg_x"]                   # '_' is not a wildcard
    assert walk(prefix="PG-A") == walk(prefix="pg-a")       # ASCII case is ignored (both backends)
    assert walk(prefix="pg", tag="gold", limit=1) == [n for i, n in enumerate(names) if i % 2 == 0]
    assert walk(prefix="pg", tag="silver") == [n for i, n in enumerate(names) if i % 2 == 1]
    assert walk(prefix="pg", tag="gol") == []                # whole tags only
    assert_error(srv.get("/v1/models?limit=0"), 400)
    # PATCH
    r = srv.patch("/v1/models/pg-a0", json={"description": "new", "tags": ["bronze"]})
    assert r.status_code == 200, r.text
    m = r.json()
    assert m["description"] == "new" and m["tags"] == ["bronze"]
    r = srv.patch("/v1/models/pg-a0", json={"description": "newer"})
    assert r.json()["tags"] == ["bronze"] and r.json()["description"] == "newer"
    assert srv.get("/v1/models/pg-a0").json()["description"] == "newer"
    assert_error(srv.patch("/v1/models/pg-a0", json={"name": "renamed"}), 400)
    assert_error(srv.patch("/v1/models/pg-a0", json={"tags": [1]}), 400, field="tags")
    assert_error(srv.patch("/v1/models/nope", json={"description": "x"}), 404)
    # DELETE removes versions and aliases; the name can be reused from version 1.
    upload_ok(srv, "pg-a1", art(1), "basalt_json")
    approve(srv, "pg-a1", 1)
    assert set_alias(srv, "pg-a1", "champion", 1).status_code == 200
    assert served(srv, "pg-a1") == 1
    assert srv.delete("/v1/models/pg-a1").status_code == 204
    assert_error(srv.get("/v1/models/pg-a1"), 404)
    assert_error(srv.get("/v1/models/pg-a1/versions/1"), 404)
    assert_error(predict(srv, "pg-a1", {"inputs": ROWS}), 404)
    assert_error(predict(srv, "pg-a1", {"inputs": ROWS}, version=1), 404)
    assert_error(srv.delete("/v1/models/pg-a1"), 404)
    assert "pg-a1" not in walk(prefix="pg-a")
    create_model(srv, "pg-a1")
    assert upload_ok(srv, "pg-a1", art(2), "basalt_json")["version"] == 1
    approve(srv, "pg-a1", 1)
    j = predict_ok(srv, "pg-a1", {"inputs": ROWS}, 3)
    assert j["version"] == 1
    assert_close(j["predictions"], oracle(2), "recreated model serves its new artifact")


# ---- malformed artifacts ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def xgb_doc():
    X, y = datasets.load_iris(return_X_y=True, as_frame=True)
    b = xgb.XGBClassifier(n_estimators=3, max_depth=3, random_state=0).fit(X, y).get_booster()
    return json.loads(xgb_bytes(b))


def _trees(doc):
    return doc["learner"]["gradient_booster"]["model"]["trees"]


def _split_node(tree):
    """Index of a split node other than the root."""
    left = tree["left_children"]
    for i in range(1, len(left)):
        if left[i] != -1:
            return i
    raise AssertionError("tree too shallow")


def _deep(doc):
    """The first tree with a split below the root."""
    for t in _trees(doc):
        if any(c != -1 for c in t["left_children"][1:]):
            return t
    raise AssertionError("no deep tree")


def _mutations(xgb_doc):
    good = json.dumps(xgb_doc).encode()
    out = {"truncated": (good[: len(good) // 2], "xgboost_json"),
           "truncated-last-byte": (good[:-1], "xgboost_json"),
           "not-json": (b"\x00\x01binary garbage", "xgboost_json"),
           "json-array": (b"[1,2,3]", "xgboost_json"),
           "wrong-format-name": (good, "onnx"),
           "format-mismatch": (good, "basalt_json"),
           "basalt-truncated": (linear_bytes((1, 2), 3)[:-5], "basalt_json")}

    def mut(name, fn):
        d = copy.deepcopy(xgb_doc)
        fn(d)
        out[name] = (json.dumps(d).encode(), "xgboost_json")

    def self_loop(d):
        _trees(d)[0]["left_children"][0] = 0

    def cycle(d):
        t = _deep(d)
        t["left_children"][_split_node(t)] = 0

    def backward(d):
        t = _deep(d)
        i = _split_node(t)
        t["right_children"][i] = i - 1 if i > 1 else 0

    def out_of_range(d):
        t = _trees(d)[0]
        t["left_children"][0] = 10 ** 6

    def huge_nodes(d):
        _trees(d)[0]["tree_param"]["num_nodes"] = str(10 ** 9)

    def huge_trees(d):
        d["learner"]["gradient_booster"]["model"]["gbtree_model_param"]["num_trees"] = str(10 ** 9)

    def huge_features(d):
        d["learner"]["learner_model_param"]["num_feature"] = str(10 ** 12)

    def bad_split_index(d):
        _trees(d)[0]["split_indices"][0] = 10 ** 6

    def short_arrays(d):
        t = _trees(d)[0]
        t["right_children"] = t["right_children"][:2]

    def nan_threshold(d):
        _trees(d)[0]["split_conditions"][0] = "NaN"

    def unknown_objective(d):
        d["learner"]["objective"]["name"] = "rank:pairwise-no-such"

    for name, fn in [("self-loop", self_loop), ("cycle", cycle), ("backward-child", backward),
                     ("child-out-of-range", out_of_range), ("num_nodes-1e9", huge_nodes),
                     ("num_trees-1e9", huge_trees), ("num_feature-1e12", huge_features),
                     ("split-index-out-of-range", bad_split_index),
                     ("short-child-array", short_arrays), ("string-threshold", nan_threshold),
                     ("unknown-objective", unknown_objective)]:
        mut(name, fn)
    # A basalt tree whose child points back at its parent.
    out["basalt-tree-cycle"] = (json.dumps({
        "basalt_model": 1, "inputs": [{"name": "a", "type": "float"}],
        "estimator": {"type": "trees", "base": [0.0], "scale": 1.0, "leaf_width": 1,
                      "transform": "identity",
                      "trees": [{"feature": [0, 0, -1], "threshold": [0.5, 0.5, 0],
                                 "left": [1, 0, -1], "right": [2, 2, -1],
                                 "value": [None, None, [1.0]]}]},
        "output": {"task": "regression"}}).encode(), "basalt_json")
    out["basalt-coef-width-mismatch"] = (json.dumps(dict(
        linear_doc((1, 2), 3), estimator={"type": "linear", "link": "identity",
                                          "coef": [[1.0] * 3], "intercept": [0.0]})).encode(),
        "basalt_json")
    return out


def test_malformed_artifacts_are_400_and_store_nothing(shared_server, xgb_doc):
    srv = shared_server
    create_model(srv, "hostile")
    good = json.dumps(xgb_doc).encode()
    assert upload_ok(srv, "hostile", good, "xgboost_json")["version"] == 1
    files_before = artifact_files(srv)
    failures = []
    for name, (body, fmt) in _mutations(xgb_doc).items():
        r = upload(srv, "hostile", body, fmt)
        if r.status_code != 400:
            failures.append("%s: %d %s" % (name, r.status_code, r.text[:200]))
            continue
        assert_error(r, 400)
    # Multipart variants.
    r = srv.post("/v1/models/hostile/versions",
                 files={"metadata": ("m.json", json.dumps({"description": "x"}), "application/json")})
    assert_error(r, 400, field="artifact")
    r = srv.post("/v1/models/hostile/versions?format=xgboost_json",
                 files={"artifact": ("m.json", good), "weird": ("w", b"1")})
    assert_error(r, 400, field="weird")
    r = srv.post("/v1/models/hostile/versions?format=xgboost_json",
                 files={"artifact": ("m.json", good), "metadata": ("m.json", b"{not json")})
    assert_error(r, 400, field="metadata")
    r = srv.post("/v1/models/hostile/versions?format=xgboost_json",
                 files={"artifact": ("m.json", good), "metadata": ("m.json", b'{"colour": 1}')})
    assert_error(r, 400)
    r = srv.post("/v1/models/hostile/versions?format=xgboost_json",
                 files={"artifact": ("m.json", good), "metadata": ("m.json", b"[1]")})
    assert_error(r, 400, field="metadata")
    r = srv.post("/v1/models/hostile/versions?format=xgboost_json",
                 files={"artifact": ("m.json", b"")})
    assert_error(r, 400, field="artifact")
    # Raw bodies: empty, unknown metadata field, non-finite metric.
    assert_error(upload(srv, "hostile", b"", "xgboost_json"), 400, field="artifact")
    assert_error(upload(srv, "hostile", good, "xgboost_json", metadata={"metrics": {"auc": "hi"}}),
                 400, field="metrics")
    r = srv.post("/v1/models/hostile/versions?format=xgboost_json&metadata=%7Bbad", data=good)
    assert_error(r, 400, field="metadata")
    assert_error(upload(srv, "no-such-model", good, "xgboost_json"), 404)
    assert not failures, "\n".join(failures)
    assert versions(srv, "hostile") == [1]
    assert artifact_files(srv) == files_before
    # The server is unharmed and the good version still serves.
    r = predict(srv, "hostile", {"instances": [[5.0, 3.0, 1.5, 0.2]]}, version=1)
    assert r.status_code == 200, r.text
    assert upload_ok(srv, "hostile", good, "xgboost_json")["version"] == 2


def test_format_detection_and_metadata(shared_server):
    srv = shared_server
    create_model(srv, "meta")
    run = srv.post("/v1/runs", json={"experiment": "exp-meta", "name": "r1"}).json()
    meta = {"description": "first", "metrics": {"rmse": 1.25, "r2": 0.5}, "params": {"depth": 3},
            "tags": ["baseline"], "run_id": run["id"], "dataset": "s3://d/train.parquet",
            "source_commit": "abc123"}
    # raw, format detected from the content, metadata in the query
    v = upload_ok(srv, "meta", art(1), metadata=meta)
    assert v["format"] == "basalt_json" and v["kind"] == "linear"
    assert v["metrics"] == {"rmse": 1.25, "r2": 0.5} and v["params"] == {"depth": 3}
    assert v["tags"] == ["baseline"] and v["description"] == "first"
    assert v["lineage"] == {"run_id": run["id"], "dataset": "s3://d/train.parquet",
                            "source_commit": "abc123"}
    # multipart with metadata part
    v2 = upload_ok(srv, "meta", art(2), multipart=True, metadata=meta)
    assert v2["version"] == 2 and v2["lineage"]["run_id"] == run["id"]
    # unknown run id: 400, nothing stored
    before = artifact_files(srv)
    r = upload(srv, "meta", art(3), "basalt_json", metadata={"run_id": "no-such-run"})
    assert_error(r, 400, field="run_id")
    assert versions(srv, "meta") == [2, 1]
    assert artifact_files(srv) == before


# ---- roles and tenants -------------------------------------------------------------------------

def test_roles(shared_server):
    srv = shared_server
    viewer = srv.create_key("viewer")["key"]
    predictor = srv.create_key("predictor")["key"]
    developer = srv.create_key("developer")["key"]
    create_model(srv, "roles", key=developer)
    assert_error(srv.post("/v1/models", key=viewer, json={"name": "roles-v"}), 403)
    assert_error(srv.post("/v1/models", key=predictor, json={"name": "roles-p"}), 403)
    assert_error(upload(srv, "roles", art(1), "basalt_json", key=viewer), 403)
    assert_error(upload(srv, "roles", art(1), "basalt_json", key=predictor), 403)
    upload_ok(srv, "roles", art(1), "basalt_json", key=developer)
    assert_error(review(srv, "roles", 1, "approve", key=predictor), 403)
    assert_error(review(srv, "roles", 1, "approve", key=viewer), 403)
    approve(srv, "roles", 1, key=developer)
    assert_error(set_alias(srv, "roles", "champion", 1, key=predictor), 403)
    assert_error(srv.delete("/v1/models/roles", key=predictor), 403)
    assert_error(srv.patch("/v1/models/roles", key=viewer, json={"description": "x"}), 403)
    assert served(srv, "roles", key=predictor) == 1
    assert_error(predict(srv, "roles", {"inputs": ROWS}, key=viewer), 403)
    assert srv.get("/v1/models/roles", key=viewer).status_code == 200
    assert srv.get("/v1/models/roles/versions", key=viewer).status_code == 200
    assert_error(predict(srv, "roles", {"inputs": ROWS}, key=None), 401)
    assert_error(predict(srv, "roles", {"inputs": ROWS}, key="bsk_not_a_real_key"), 401)


def test_artifact_download_is_byte_identical(shared_server):
    """What was uploaded comes back byte for byte (sha256 as recorded), for any role that
    can read the registry; unknown model or version is a 404 naming it."""
    import hashlib
    srv = shared_server
    create_model(srv, "dl")
    raw = json.dumps(linear_doc([1.5, -2.0], 0.25), indent=3).encode() + b"\n"  # odd spacing kept
    v = upload_ok(srv, "dl", raw, "basalt_json")
    viewer = srv.create_key("viewer", name="dl-viewer")["key"]
    r = srv.get("/v1/models/dl/versions/%d/artifact" % v["version"], key=viewer)
    assert r.status_code == 200, r.text
    assert r.content == raw
    assert hashlib.sha256(r.content).hexdigest() == v["sha256"]
    assert r.headers["content-type"] == "application/json"
    assert_error(srv.get("/v1/models/dl/versions/9/artifact"), 404, field="version")
    assert_error(srv.get("/v1/models/nope/versions/1/artifact"), 404)
    assert_error(srv.get("/v1/models/dl/versions/x/artifact"), 400, field="version")


def test_tenant_isolation(shared_server):
    srv = shared_server
    for t in ("tenant-a", "tenant-b"):
        assert srv.post("/v1/tenants", json={"name": t}).status_code == 201
    a = srv.create_key("developer", name="dev-a", tenant="tenant-a")["key"]
    b = srv.create_key("developer", name="dev-b", tenant="tenant-b")["key"]
    create_model(srv, "secret", key=a)
    upload_ok(srv, "secret", art(1), "basalt_json", key=a)
    approve(srv, "secret", 1, key=a)
    assert set_alias(srv, "secret", "champion", 1, key=a).status_code == 200
    assert served(srv, "secret", key=a) == 1
    # Tenant B sees nothing of it.
    assert_error(srv.get("/v1/models/secret", key=b), 404)
    assert_error(srv.get("/v1/models/secret/versions", key=b), 404)
    assert_error(srv.get("/v1/models/secret/versions/1", key=b), 404)
    assert_error(srv.get("/v1/models/secret/versions/1/artifact", key=b), 404)
    assert_error(predict(srv, "secret", {"inputs": ROWS}, key=b), 404)
    assert_error(predict(srv, "secret@champion", {"inputs": ROWS}, key=b), 404)
    assert_error(predict(srv, "secret", {"inputs": ROWS}, key=b, version=1), 404)
    assert_error(srv.post("/v2/models/secret/infer", key=b, json={"inputs": [
        {"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
        {"name": "b", "shape": [1], "datatype": "FP64", "data": [1]}]}), 404)
    assert_error(srv.get("/v2/models/secret", key=b), 404)
    assert_error(upload(srv, "secret", art(2), "basalt_json", key=b), 404)
    assert_error(review(srv, "secret", 1, "archive", key=b), 404)
    assert_error(set_alias(srv, "secret", "champion", 1, key=b), 404)
    assert_error(srv.patch("/v1/models/secret", key=b, json={"description": "x"}), 404)
    assert_error(srv.delete("/v1/models/secret", key=b), 404)
    assert "secret" not in [m["name"] for m in srv.get("/v1/models", key=b).json()["items"]]
    assert all("secret" not in e["resource"] for e in srv.get("/v1/audit", key=b).json()["items"])
    # B may own a model of the same name; each tenant is served its own.
    create_model(srv, "secret", key=b)
    upload_ok(srv, "secret", art(5), "basalt_json", key=b)
    approve(srv, "secret", 1, key=b)
    jb = predict_ok(srv, "secret", {"inputs": ROWS}, 3, key=b)
    assert_close(jb["predictions"], oracle(5))
    ja = predict_ok(srv, "secret", {"inputs": ROWS}, 3, key=a)
    assert_close(ja["predictions"], oracle(1))
    # The default tenant's admin does not see tenant A's model either.
    assert_error(srv.get("/v1/models/secret"), 404)


# ---- audit and runs ---------------------------------------------------------------------------

def test_audit_trail(shared_server):
    srv = shared_server
    dev = srv.create_key("developer", name="auditor")
    k = dev["key"]
    create_model(srv, "audited", key=k)
    upload_ok(srv, "audited", art(1), "basalt_json", key=k)
    approve(srv, "audited", 1, key=k)
    assert set_alias(srv, "audited", "champion", 1, key=k).status_code == 200
    assert srv.patch("/v1/models/audited", key=k, json={"description": "v2"}).status_code == 200
    assert srv.delete("/v1/models/audited/aliases/champion", key=k).status_code == 204
    items = []
    cursor = None
    for _ in range(50):
        r = srv.get("/v1/audit", params={"limit": 50, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
    mine = [e for e in items if e["resource"].startswith("models/audited")]
    assert [(e["action"], e["resource"]) for e in reversed(mine)] == [
        ("model.create", "models/audited"),
        ("version.create", "models/audited/versions/1"),
        ("version.approve", "models/audited/versions/1"),
        ("alias.set", "models/audited/aliases/champion"),
        ("model.update", "models/audited"),
        ("alias.delete", "models/audited/aliases/champion"),
    ]
    assert all(e["actor"] == dev["id"] for e in mine)
    by = {e["action"]: e for e in mine}
    assert by["model.create"]["before"] is None and by["model.create"]["after"]["name"] == "audited"
    assert by["version.approve"]["before"]["status"] == "pending"
    assert by["version.approve"]["after"]["status"] == "approved"
    assert by["alias.set"]["after"]["version"] == 1
    assert by["model.update"]["before"]["description"] == ""
    assert by["model.update"]["after"]["description"] == "v2"
    assert by["alias.delete"]["before"] == {"version": 1} and by["alias.delete"]["after"] is None
    # Failed changes leave no trace.
    n = len(items)
    assert_error(review(srv, "audited", 1, "approve", key=k), 409)
    assert_error(upload(srv, "audited", b"{", "basalt_json", key=k), 400)
    assert len(srv.get("/v1/audit", params={"limit": 1000}).json()["items"]) == n


def test_run_update_merges_params_and_tags(shared_server):
    """PATCH merges params and tags into what the run has (a null deletes a key), the same
    on both backends (SQLite json_patch, PostgreSQL jsonb ||)."""
    srv = shared_server
    r = srv.post("/v1/runs", json={"experiment": "merge", "name": "m1",
                                   "params": {"a": 1, "b": "x", "keep": 2.5}, "tags": {"t": "1"}})
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    r = srv.patch("/v1/runs/%s" % rid, json={"params": {"b": "y", "c": True, "a": None}})
    assert r.status_code == 200, r.text
    assert r.json()["params"] == {"b": "y", "c": True, "keep": 2.5}
    assert r.json()["tags"] == {"t": "1"}
    r = srv.patch("/v1/runs/%s" % rid, json={"name": "m2", "tags": {"u": "2"}})
    assert r.status_code == 200, r.text
    got = srv.get("/v1/runs/%s" % rid).json()
    assert got["name"] == "m2" and got["tags"] == {"t": "1", "u": "2"}
    assert got["params"] == {"b": "y", "c": True, "keep": 2.5}


def test_runs_metrics_and_lineage(shared_server):
    srv = shared_server
    r = srv.post("/v1/runs", json={"experiment": "churn", "name": "xgb-1",
                                   "params": {"max_depth": 4, "eta": 0.1}})
    assert r.status_code == 201, r.text
    run = r.json()
    rid = run["id"]
    assert run["experiment"] == "churn" and run["params"] == {"max_depth": 4, "eta": 0.1}
    other = srv.post("/v1/runs", json={"experiment": "other", "name": "o"}).json()
    r = srv.post("/v1/runs/%s/metrics" % rid, json={"key": "auc", "value": 0.5, "step": 0})
    assert r.status_code == 200, r.text
    pts = [{"key": "auc", "value": 0.5 + 0.1 * s, "step": s} for s in range(1, 4)]
    pts.append({"key": "loss", "value": 1.5, "step": 0, "ts": "2024-01-02T03:04:05Z"})
    r = srv.post("/v1/runs/%s/metrics" % rid, json={"metrics": pts})
    assert r.status_code == 200, r.text
    assert_error(srv.post("/v1/runs/%s/metrics" % rid, json={"key": "auc", "value": "x"}), 400)
    assert_error(srv.post("/v1/runs/%s/metrics" % rid, json={"value": 1}), 400)
    assert_error(srv.post("/v1/runs/nope/metrics", json={"key": "a", "value": 1}), 404)
    r = srv.patch("/v1/runs/%s" % rid, json={"status": "finished"})
    assert r.status_code == 200 and r.json()["status"] == "finished"
    assert_error(srv.patch("/v1/runs/%s" % rid, json={"status": "exploded"}), 400, field="status")
    got = srv.get("/v1/runs/%s" % rid).json()
    assert got["status"] == "finished"
    m = got["metrics"]
    auc = m["auc"] if isinstance(m["auc"], list) else m["auc"]["history"]
    assert [(p["step"], round(p["value"], 9)) for p in auc] == \
        [(s, round(0.5 + 0.1 * s, 9)) for s in range(4)]
    assert len(m["loss"]) == 1 and m["loss"][0]["value"] == 1.5
    ids = [x["id"] for x in srv.get("/v1/runs?experiment=churn").json()["items"]]
    assert ids == [rid]
    assert other["id"] not in ids
    # lineage: a version names its run
    create_model(srv, "lineage")
    v = upload_ok(srv, "lineage", art(1), "basalt_json", metadata={"run_id": rid})
    assert srv.get("/v1/models/lineage/versions/1").json()["lineage"]["run_id"] == rid
    assert v["lineage"]["run_id"] == rid
    assert_error(upload(srv, "lineage", art(2), "basalt_json", metadata={"run_id": "missing"}),
                 400, field="run_id")
    # a run of another tenant cannot be linked
    assert srv.post("/v1/tenants", json={"name": "runs-b"}).status_code == 201
    tb = srv.create_key("developer", tenant="runs-b")["key"]
    create_model(srv, "lineage", key=tb)
    assert_error(upload(srv, "lineage", art(2), "basalt_json", metadata={"run_id": rid}, key=tb),
                 400, field="run_id")
    assert_error(srv.get("/v1/runs/%s" % rid, key=tb), 404)
    assert versions(srv, "lineage") == [1]


# ---- concurrency and durability -----------------------------------------------------------------

def test_concurrent_uploads_get_distinct_consecutive_versions(shared_server):
    srv = shared_server
    create_model(srv, "racy")
    import requests

    def one(i):
        with requests.Session() as s:
            r = s.post(srv.url + "/v1/models/racy/versions?format=basalt_json", data=art(i + 1),
                       headers={"Authorization": "Bearer " + srv.admin_key}, timeout=60)
        assert r.status_code == 201, r.text
        return i + 1, r.json()["version"]

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, range(8)))
    got = sorted(v for _, v in results)
    assert got == list(range(1, 9)), results
    assert sorted(versions(srv, "racy")) == list(range(1, 9))
    # Each version holds the artifact its uploader sent.
    for art_id, v in results:
        j = predict_ok(srv, "racy", {"inputs": ROWS}, 3, version=v)
        assert_close(j["predictions"], oracle(art_id), "version %d" % v)


def _state(srv, name):
    m = srv.get("/v1/models/" + name).json()
    vs = srv.get("/v1/models/%s/versions" % name).json()["items"]
    return m, vs


def _strip(j):
    j = dict(j)
    j.pop("prediction_ids")
    return j


def test_restart_keeps_registry_and_predictions(server):
    srv = server
    create_model(srv, "durable", description="keeps", tags=["x"])
    for i in (1, 2, 3):
        upload_ok(srv, "durable", art(i), "basalt_json", metadata={"metrics": {"m": i}})
    approve(srv, "durable", 1)
    approve(srv, "durable", 2)
    review(srv, "durable", 3, "reject")
    assert set_alias(srv, "durable", "champion", 1).status_code == 200
    assert set_alias(srv, "durable", "challenger", 2).status_code == 200
    refs = ["durable", "durable@champion", "durable@challenger"]
    before = _state(srv, "durable")
    preds = [_strip(predict_ok(srv, ref, {"inputs": ROWS}, 3)) for ref in refs]
    assert_error(predict(srv, "durable", {"inputs": ROWS}, version=3), 409)
    audit = srv.get("/v1/audit").json()["items"]
    srv.restart()
    assert _state(srv, "durable") == before
    assert [_strip(predict_ok(srv, ref, {"inputs": ROWS}, 3)) for ref in refs] == preds
    assert_error(predict(srv, "durable", {"inputs": ROWS}, version=3), 409, mentions="rejected")
    assert [p["version"] for p in preds] == [1, 1, 2]
    assert srv.get("/v1/audit").json()["items"] == audit
    # The registry still takes writes after the restart.
    assert upload_ok(srv, "durable", art(4), "basalt_json")["version"] == 4


def test_kill9_right_after_upload_keeps_it(server):
    srv = server
    create_model(srv, "crashy")
    upload_ok(srv, "crashy", art(1), "basalt_json")
    approve(srv, "crashy", 1)
    v2 = upload_ok(srv, "crashy", art(2), "basalt_json")
    srv.kill9()
    srv.start()
    got = srv.get("/v1/models/crashy/versions/2")
    assert got.status_code == 200, got.text
    assert got.json()["sha256"] == v2["sha256"] and got.json()["status"] == "pending"
    approve(srv, "crashy", 2)
    assert served(srv, "crashy") == 2
    assert served(srv, "crashy", version=1) == 1
    assert upload_ok(srv, "crashy", art(3), "basalt_json")["version"] == 3


def test_predict_consistent_while_champion_moves(shared_server):
    """Predictions racing alias moves: every response is computed by the version it names."""
    import threading

    import requests
    srv = shared_server
    create_model(srv, "moving")
    for i in (1, 2, 3):
        upload_ok(srv, "moving", art(i), "basalt_json")
        approve(srv, "moving", i)
    assert set_alias(srv, "moving", "champion", 1).status_code == 200
    stop = threading.Event()
    running = [threading.Event(), threading.Event()]
    seen, problems = set(), []

    def hammer(started):
        with requests.Session() as s:
            while not stop.is_set():
                r = s.post(srv.url + "/v1/models/moving/predict", json={"inputs": ROWS},
                           headers={"Authorization": "Bearer " + srv.admin_key}, timeout=60)
                if r.status_code != 200:
                    problems.append(r.text)
                    return
                j = r.json()
                seen.add(j["version"])
                started.set()
                if np.max(np.abs(np.array(j["predictions"]) - oracle(j["version"]))) > 1e-9:
                    problems.append("version %d served %s" % (j["version"], j["predictions"]))

    threads = [threading.Thread(target=hammer, args=(e,)) for e in running]
    for t in threads:
        t.start()
    try:
        for e in running:  # both are predicting before the alias starts moving
            assert e.wait(60) or problems, "no prediction came back"
        for k in range(30):
            assert set_alias(srv, "moving", "champion", 1 + (k + 1) % 3).status_code == 200
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not problems, problems[:3]
    assert seen <= {1, 2, 3} and seen
    assert served(srv, "moving") == 1 + 30 % 3
