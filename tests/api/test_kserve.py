"""The Open Inference Protocol (KServe v2 REST): health, metadata, readiness and infer.

Oracles: XGBoost's Booster.predict and scikit-learn's predict on every row of the bundled
datasets, sent as one [N, n_features] tensor (flat and nested data, nulls for NaN) or as one
[N] tensor per feature; and a hand-written linear model with a category input.
"""
import json

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn import datasets
from sklearn.ensemble import GradientBoostingRegressor

from modelkit import (CITY_DOC, approve, assert_close, assert_error, create_model, exporter,
                      positional_rows, publish, upload_ok, with_nans, xgb_bytes)


def city_oracle(x, city):
    return 2.0 * x + {"berlin": 1.0, "paris": 10.0, "rome": 100.0}[city] + 0.5


def _load(name):
    return getattr(datasets, "load_" + name)(return_X_y=True, as_frame=True)


def infer(srv, name, inputs, version=None, **kw):
    path = "/v2/models/%s%s/infer" % (name, "/versions/%d" % version if version else "")
    return srv.post(path, json={"inputs": inputs, **kw})


def outputs(j):
    return {o["name"]: o for o in j["outputs"]}


@pytest.fixture(scope="module")
def iris_xgb(shared_server):
    X, y = _load("iris")
    booster = xgb.XGBClassifier(n_estimators=30, max_depth=3, objective="multi:softprob",
                                random_state=0).fit(X, y).get_booster()
    publish(shared_server, "kiris", xgb_bytes(booster), "xgboost_json")
    return booster, X


@pytest.fixture(scope="module")
def city(shared_server):
    srv = shared_server
    create_model(srv, "kcity")
    upload_ok(srv, "kcity", json.dumps(CITY_DOC).encode(), "basalt_json")
    approve(srv, "kcity", 1)
    # version 2: the same model with intercept 1000.5, pending
    doc = json.loads(json.dumps(CITY_DOC))
    doc["estimator"]["intercept"] = [1000.5]
    upload_ok(srv, "kcity", json.dumps(doc).encode(), "basalt_json")
    return "kcity"


def test_health_and_server_metadata(shared_server):
    srv = shared_server
    r = srv.get("/v2/health/live", key=None)
    assert r.status_code == 200 and r.json()["live"] is True
    r = srv.get("/v2/health/ready", key=None)
    assert r.status_code == 200 and r.json()["ready"] is True
    r = srv.get("/v2", key=None)
    assert r.status_code == 200 and r.json()["name"] == "basalt"
    assert r.json()["version"] == srv.version


def test_model_metadata_and_readiness(shared_server, iris_xgb, city):
    srv = shared_server
    _, X = iris_xgb
    r = srv.get("/v2/models/kiris")
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["name"] == "kiris" and "1" in j["versions"]
    assert [i["name"] for i in j["inputs"]] == list(X.columns)
    assert all(i["datatype"] == "FP64" for i in j["inputs"])
    outs = {o["name"]: o for o in j["outputs"]}
    assert outs["probabilities"]["shape"] == [-1, 3] and outs["label"]["datatype"] == "BYTES"
    j = srv.get("/v2/models/kcity").json()
    assert [(i["name"], i["datatype"]) for i in j["inputs"]] == [("x", "FP64"), ("city", "BYTES")]
    assert {o["name"] for o in j["outputs"]} == {"predictions"}
    assert srv.get("/v2/models/kcity/versions/2").status_code == 200
    r = srv.get("/v2/models/kiris/ready")
    assert r.status_code == 200 and r.json()["ready"] is True
    assert srv.get("/v2/models/kcity/versions/2/ready").json()["ready"] is True
    assert_error(srv.get("/v2/models/nope"), 404)
    assert_error(srv.get("/v2/models/nope/ready"), 404)
    assert_error(srv.get("/v2/models/kcity/versions/7"), 404)
    assert_error(srv.get("/v2/models/kcity/versions/zero"), 400, field="version")


def test_infer_one_matrix_tensor_matches_xgboost(shared_server, iris_xgb):
    srv = shared_server
    booster, X = iris_xgb
    rows = pd.concat([X, with_nans(X, 0.1, seed=7)], ignore_index=True)
    want = booster.predict(xgb.DMatrix(rows.astype(float)))
    data = positional_rows(rows, X.columns)
    n = len(rows)
    for layout in ("flat", "nested"):
        payload = [v for r in data for v in r] if layout == "flat" else data
        r = infer(srv, "kiris", [{"name": "input-0", "shape": [n, 4], "datatype": "FP64",
                                  "data": payload}], id="req-%s" % layout)
        assert r.status_code == 200, r.text[:500]
        j = r.json()
        assert j["model_name"] == "kiris" and j["model_version"] == "1"
        assert j["id"] == "req-%s" % layout
        o = outputs(j)
        assert o["probabilities"]["shape"] == [n, 3] and o["probabilities"]["datatype"] == "FP64"
        got = np.asarray(o["probabilities"]["data"]).reshape(n, 3)
        assert_close(got, want, "kserve [N,4] %s" % layout)
        assert o["label"]["shape"] == [n]
        assert o["label"]["data"] == [str(i) for i in np.argmax(want, axis=1)]
        assert len(set(o["prediction_id"]["data"])) == n


def test_infer_tensor_per_feature_matches_sklearn(shared_server):
    srv = shared_server
    X, y = _load("diabetes")
    model = GradientBoostingRegressor(n_estimators=40, random_state=0).fit(X, y)
    publish(srv, "kgbr", exporter().to_json(model).encode(), "basalt_json")
    n = len(X)
    # Tensors in reverse column order, one [N] and one [N, 1].
    inputs = []
    for k, c in enumerate(reversed(list(X.columns))):
        shape = [n] if k % 2 else [n, 1]
        data = [float(v) for v in X[c]]
        inputs.append({"name": c, "shape": shape, "datatype": "FP64",
                       "data": data if k % 2 else [[v] for v in data]})
    r = infer(srv, "kgbr", inputs)
    assert r.status_code == 200, r.text[:500]
    o = outputs(r.json())
    assert set(o) == {"predictions", "prediction_id"}
    assert o["predictions"]["shape"] == [n]
    assert_close(o["predictions"]["data"], model.predict(X), "kserve per-feature tensors")


def test_infer_category_bytes_and_versions(shared_server, city):
    srv = shared_server
    xs, cities = [1.5, -2.0, 0.0, 7.25], ["paris", "rome", "berlin", "paris"]
    inputs = [{"name": "city", "shape": [4], "datatype": "BYTES", "data": cities},
              {"name": "x", "shape": [4], "datatype": "FP32", "data": xs}]
    j = infer(srv, city, inputs).json()
    assert j["model_version"] == "1"
    assert_close(outputs(j)["predictions"]["data"], [city_oracle(x, c) for x, c in zip(xs, cities)])
    r = infer(srv, city, inputs, version=2)
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == "2"
    assert_close(outputs(r.json())["predictions"]["data"],
                 [city_oracle(x, c) + 1000 for x, c in zip(xs, cities)])
    # One [N, 2] tensor cannot mix numbers and strings: a BYTES tensor holds strings, and
    # BYTES cannot feed the numeric input x (KServe v2 datatypes). Mixed models take one
    # tensor per input, as above.
    r = infer(srv, city, [{"name": "in", "shape": [2, 2], "datatype": "BYTES",
                           "data": [[3.0, "rome"], [4.0, "berlin"]]}])
    assert_error(r, 400, mentions="must be a string")
    r = infer(srv, city, [{"name": "in", "shape": [2, 2], "datatype": "BYTES",
                           "data": [["3.0", "rome"], ["4.0", "berlin"]]}])
    assert_error(r, 400, mentions="cannot feed feature 'x'")


@pytest.mark.parametrize("inputs,field", [
    ([{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]},
      {"name": "town", "shape": [1], "datatype": "BYTES", "data": ["rome"]}], "town"),
    ([{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}], "city"),
    ([{"name": "x", "shape": [2], "datatype": "FP64", "data": [1]},
      {"name": "city", "shape": [2], "datatype": "BYTES", "data": ["rome", "rome"]}], "inputs[0]"),
    ([{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]},
      {"name": "city", "shape": [2], "datatype": "BYTES", "data": ["rome", "rome"]}], "city"),
    ([{"name": "x", "shape": [1], "datatype": "FP64", "data": ["1"]},
      {"name": "city", "shape": [1], "datatype": "BYTES", "data": ["rome"]}], "x"),
    ([{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]},
      {"name": "city", "shape": [1], "datatype": "BYTES", "data": ["london"]}], "city"),
    ([{"name": "x", "shape": [1], "datatype": "FP64", "data": [None]},
      {"name": "city", "shape": [1], "datatype": "BYTES", "data": ["rome"]}], "x"),
    ([{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]},
      {"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}], "x"),
    ([{"name": "x", "shape": [1], "datatype": "FLOAT99", "data": [1]}], "inputs[0]"),
    ([{"name": "x", "shape": [0], "datatype": "FP64", "data": []}], "inputs[0]"),
    ([{"name": "x", "shape": [1, 1, 1], "datatype": "FP64", "data": [[[1]]]}], "inputs[0]"),
    ([{"name": "x", "shape": [1], "datatype": "FP64"}], "inputs[0]"),
    ([{"shape": [1], "datatype": "FP64", "data": [1]}], "inputs[0]"),
    (["x"], "inputs[0]"),
    ([], "inputs"),
    ({"name": "x"}, "inputs"),
])
def test_infer_invalid_is_400_naming_the_field(shared_server, city, inputs, field):
    r = shared_server.post("/v2/models/%s/infer" % city, json={"inputs": inputs})
    assert_error(r, 400, field=field)


def test_infer_non_finite_and_404s(shared_server, city):
    srv = shared_server
    body = ('{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1e999]},'
            ' {"name": "city", "shape": [1], "datatype": "BYTES", "data": ["rome"]}]}')
    r = srv.post("/v2/models/%s/infer" % city, data=body, headers={"Content-Type": "application/json"})
    assert_error(r, 400, field="x")
    ok = [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]},
          {"name": "city", "shape": [1], "datatype": "BYTES", "data": ["rome"]}]
    assert_error(infer(srv, "nope", ok), 404)
    assert_error(infer(srv, city, ok, version=9), 404)
    assert_error(srv.post("/v2/models/%s/infer" % city, json={"tensors": ok}), 400)
    # A huge declared shape is refused before anything is allocated for it.
    for shape in ([10 ** 7, 10 ** 7], [10 ** 7], [10 ** 8]):
        r = infer(srv, city, [{"name": "x", "shape": shape, "datatype": "FP64", "data": [1]}])
        assert r.status_code in (400, 413), (shape, r.status_code, r.text)
        assert_error(r, r.status_code, field="inputs[0]")


def test_infer_roles(shared_server, city):
    srv = shared_server
    ok = [{"name": "x", "shape": [1], "datatype": "FP64", "data": [2]},
          {"name": "city", "shape": [1], "datatype": "BYTES", "data": ["berlin"]}]
    predictor = srv.create_key("predictor")["key"]
    viewer = srv.create_key("viewer")["key"]
    r = srv.post("/v2/models/%s/infer" % city, key=predictor, json={"inputs": ok})
    assert r.status_code == 200
    assert_close(outputs(r.json())["predictions"]["data"], [city_oracle(2, "berlin")])
    assert_error(srv.post("/v2/models/%s/infer" % city, key=viewer, json={"inputs": ok}), 403)
    assert_error(srv.post("/v2/models/%s/infer" % city, key=None, json={"inputs": ok}), 401)
    assert srv.get("/v2/models/%s" % city, key=viewer).status_code == 200
