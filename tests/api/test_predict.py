"""Online prediction through the HTTP API, against the libraries' own predictions.

Oracles: XGBoost's Booster.predict and scikit-learn's predict_proba / predict, on every
row of scikit-learn's bundled datasets (plus the same rows with ~10% of the cells set to
NaN and sent as JSON null where the model handles missing values). Each model is uploaded
through the registry, approved and served by its bare name; all rows of a dataset go in one
request. max abs diff <= 1e-5 and identical argmax.

Then input validation (each a 4xx error envelope naming the field), schema overrides at
upload, the row cap and /metrics.
"""
import json
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn import datasets
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelkit import (CITY_DOC, EXPORTER, assert_close, assert_error, create_model, exporter, named_rows,
                      positional_rows, predict, predict_ok, proba_matrix, publish, upload,
                      upload_ok, approve, with_nans, xgb_bytes, linear_bytes)


def _load(name):
    return getattr(datasets, "load_" + name)(return_X_y=True, as_frame=True)


def _sig_names(version):
    return [f["name"] for f in version["signature"]["inputs"]]


# ---- XGBoost -------------------------------------------------------------------------------

def test_xgboost_binary_logistic_breast_cancer_named_rows_with_nulls(shared_server):
    srv = shared_server
    X, y = _load("breast_cancer")
    Xn = with_nans(X, 0.1, seed=1)
    # Trained on data with missing values, so the learned default directions matter.
    booster = xgb.XGBClassifier(n_estimators=40, max_depth=4, objective="binary:logistic",
                                random_state=0).fit(Xn.astype(float), y).get_booster()
    v = publish(srv, "xgb-bc", xgb_bytes(booster), "xgboost_json")
    assert v["kind"] == "trees" and _sig_names(v) == list(X.columns)
    assert v["signature"]["handles_missing"] is True
    rows = pd.concat([X, Xn], ignore_index=True)
    j = predict_ok(srv, "xgb-bc", {"inputs": named_rows(rows)}, len(rows))
    assert j["model"] == "xgb-bc" and j["version"] == 1
    p1 = booster.predict(xgb.DMatrix(rows.astype(float)))
    want = np.c_[1 - p1, p1]
    got = proba_matrix(j["predictions"], ["0", "1"])
    assert_close(got, want, "xgboost binary:logistic")
    assert Xn.isna().to_numpy().mean() > 0.05  # the NaN rows really hold NaN


def test_xgboost_regression_diabetes_instances_with_nulls(shared_server):
    srv = shared_server
    X, y = _load("diabetes")
    Xn = with_nans(X, 0.1, seed=2)
    booster = xgb.XGBRegressor(n_estimators=60, max_depth=5, objective="reg:squarederror",
                               random_state=0).fit(X, y).get_booster()
    v = publish(srv, "xgb-diabetes", xgb_bytes(booster), "xgboost_json")
    order = _sig_names(v)
    assert order == list(X.columns)
    rows = pd.concat([X, Xn], ignore_index=True)
    j = predict_ok(srv, "xgb-diabetes", {"instances": positional_rows(rows, order)}, len(rows))
    assert all(isinstance(p, float) for p in j["predictions"])
    want = booster.predict(xgb.DMatrix(rows.astype(float)))
    assert_close(j["predictions"], want, "xgboost reg:squarederror")


def test_xgboost_softprob_iris_single_and_batch(shared_server):
    srv = shared_server
    X, y = _load("iris")
    Xn = with_nans(X, 0.1, seed=3)
    booster = xgb.XGBClassifier(n_estimators=30, max_depth=3, objective="multi:softprob",
                                random_state=0).fit(X, y).get_booster()
    v = publish(srv, "xgb-iris", xgb_bytes(booster), "xgboost_json")
    assert v["signature"]["outputs"]["labels"] == ["0", "1", "2"]
    rows = pd.concat([X, Xn], ignore_index=True)
    want = booster.predict(xgb.DMatrix(rows.astype(float)))
    j = predict_ok(srv, "xgb-iris", {"inputs": named_rows(rows)}, len(rows))
    assert_close(proba_matrix(j["predictions"], ["0", "1", "2"]), want, "xgboost multi:softprob")
    # The one-row object body, on a row with a null and one without.
    nan_row = int(np.nonzero(Xn.isna().any(axis=1).to_numpy())[0][0])
    for i in (0, len(X) + nan_row):
        one = predict_ok(srv, "xgb-iris", {"inputs": named_rows(rows.iloc[[i]])[0]}, 1)
        assert_close(proba_matrix(one["predictions"], ["0", "1", "2"]), want[[i]], "row %d" % i)


# ---- scikit-learn via tools/export_sklearn.py --------------------------------------------------

def _publish_sklearn(srv, name, model):
    doc = exporter().to_json(model)
    return publish(srv, name, doc.encode(), "basalt_json")


def test_sklearn_logistic_multinomial_iris(shared_server):
    srv = shared_server
    X, y = _load("iris")
    model = LogisticRegression(multi_class="multinomial", max_iter=2000).fit(X, y)
    v = _publish_sklearn(srv, "sk-logreg-iris", model)
    labels = [str(c) for c in model.classes_]
    assert v["kind"] == "linear" and v["signature"]["outputs"]["labels"] == labels
    want = model.predict_proba(X)
    j = predict_ok(srv, "sk-logreg-iris", {"instances": positional_rows(X, _sig_names(v))}, len(X))
    assert_close(proba_matrix(j["predictions"], labels), want, "LogisticRegression")
    for i in (0, 70, 149):
        one = predict_ok(srv, "sk-logreg-iris", {"inputs": named_rows(X.iloc[[i]])[0]}, 1)
        assert_close(proba_matrix(one["predictions"], labels), want[[i]], "row %d" % i)


def test_sklearn_random_forest_wine(shared_server):
    srv = shared_server
    X, y = _load("wine")
    model = RandomForestClassifier(n_estimators=30, random_state=0).fit(X, y)
    v = _publish_sklearn(srv, "sk-rf-wine", model)
    labels = [str(c) for c in model.classes_]
    j = predict_ok(srv, "sk-rf-wine", {"inputs": named_rows(X)}, len(X))
    assert_close(proba_matrix(j["predictions"], labels), model.predict_proba(X), "RandomForest")
    assert v["kind"] == "trees"


def test_sklearn_gradient_boosting_regressor_diabetes(shared_server):
    srv = shared_server
    X, y = _load("diabetes")
    model = GradientBoostingRegressor(n_estimators=60, random_state=0).fit(X, y)
    v = _publish_sklearn(srv, "sk-gbr-diabetes", model)
    j = predict_ok(srv, "sk-gbr-diabetes",
                   {"instances": positional_rows(X, _sig_names(v))}, len(X))
    assert_close(j["predictions"], model.predict(X), "GradientBoostingRegressor")


def test_sklearn_mlp_breast_cancer_scaled(shared_server):
    srv = shared_server
    X, y = _load("breast_cancer")
    model = make_pipeline(StandardScaler(),
                          MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=300, random_state=0))
    with _quiet():
        model.fit(X, y)
    v = _publish_sklearn(srv, "sk-mlp-bc", model)
    assert v["kind"] == "mlp"
    labels = [str(c) for c in model.classes_]
    j = predict_ok(srv, "sk-mlp-bc", {"inputs": named_rows(X)}, len(X))
    assert_close(proba_matrix(j["predictions"], labels), model.predict_proba(X), "MLPClassifier")


class _quiet:
    """Silences ConvergenceWarning while fitting."""

    def __enter__(self):
        import warnings
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def _bc_with_category(seed=5):
    """breast_cancer plus a derived string column `size` (tertiles of mean area), with ~10% of
    the numeric cells and ~5% of `size` missing."""
    X, y = _load("breast_cancer")
    X = X.copy()
    X["size"] = pd.qcut(X["mean area"], 3, labels=["small", "medium", "large"]).astype(str)
    X = with_nans(X, 0.1, seed=seed, columns=[c for c in X.columns if c != "size"])
    rng = np.random.default_rng(seed + 1)
    X["size"] = X["size"].astype(object)
    X.loc[rng.random(len(X)) < 0.05, "size"] = np.nan
    return X, y


def test_sklearn_pipeline_column_transformer_cli_export(shared_server, tmp_path):
    """StandardScaler + SimpleImputer on numbers, SimpleImputer + OneHotEncoder on a string
    category, LogisticRegression; exported with the command line tool."""
    srv = shared_server
    X, y = _bc_with_category()
    num = [c for c in X.columns if c != "size"]
    pre = ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer(strategy="median")),
                          ("scale", StandardScaler())]), num),
        ("cat", Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                          ("onehot", OneHotEncoder(handle_unknown="ignore"))]), ["size"]),
    ])
    model = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=5000))]).fit(X, y)
    pkl, out = tmp_path / "m.pkl", tmp_path / "m.json"
    pkl.write_bytes(pickle.dumps(model))
    cp = subprocess.run([sys.executable, EXPORTER, str(pkl), "-o", str(out)],
                        capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr
    create_model(srv, "sk-pipeline")
    v = upload_ok(srv, "sk-pipeline", out.read_bytes(), multipart=True,
                  metadata={"description": "pipeline", "tags": ["tabular"]})
    approve(srv, "sk-pipeline", v["version"])
    size = [f for f in v["signature"]["inputs"] if f["name"] == "size"][0]
    assert size["type"] == "category" and sorted(size["categories"]) == ["large", "medium", "small"]
    assert v["signature"]["handles_missing"] is True
    # Also an unseen category (handle_unknown="ignore" encodes it as all zeros).
    extra = X.iloc[:3].copy()
    extra["size"] = "gigantic"
    rows = pd.concat([X, extra], ignore_index=True)
    labels = [str(c) for c in model.classes_]
    j = predict_ok(srv, "sk-pipeline", {"inputs": named_rows(rows)}, len(rows))
    assert_close(proba_matrix(j["predictions"], labels), model.predict_proba(rows),
                 "Pipeline(ColumnTransformer, LogisticRegression)")
    assert X.isna().to_numpy().sum() > 100


def test_partly_imputed_pipeline_takes_missing_values_where_imputed(shared_server):
    """Only some columns pass an imputer: a null there is imputed (checked against
    scikit-learn on every row), a null in any other column is a 400 naming it, and the
    version's input_schema says which is which."""
    srv = shared_server
    X, y = _load("breast_cancer")
    X = X.copy()
    imputed, plain = list(X.columns[:5]), list(X.columns[5:])
    model = Pipeline([
        ("pre", ColumnTransformer([
            ("imp", Pipeline([("impute", SimpleImputer(strategy="median")),
                              ("scale", StandardScaler())]), imputed),
            ("plain", StandardScaler(), plain)])),
        ("clf", LogisticRegression(max_iter=5000))]).fit(with_nans(X, 0.2, seed=3, columns=imputed), y)
    doc = exporter().to_json(model)
    v = publish(srv, "part-imputed", doc.encode() if isinstance(doc, str) else doc, "basalt_json")
    accepts = {f["name"]: f["accepts_missing"] for f in v["signature"]["inputs"]}
    assert accepts == {**{c: True for c in imputed}, **{c: False for c in plain}}
    assert v["signature"]["handles_missing"] is False

    rows = with_nans(X, 0.2, seed=4, columns=imputed)
    assert rows[imputed].isna().to_numpy().sum() > 100
    j = predict_ok(srv, "part-imputed", {"inputs": named_rows(rows)}, len(rows))
    assert_close(proba_matrix(j["predictions"], ["0", "1"]), model.predict_proba(rows),
                 "nulls in imputed columns")
    for col in (plain[0], plain[-1]):
        row = named_rows(X.iloc[:1])[0]
        row[col] = None
        assert_error(predict(srv, "part-imputed", {"inputs": row}), 400, field=col,
                     mentions="missing")
        del row[col]
        assert_error(predict(srv, "part-imputed", {"inputs": row}), 400, field=col)


# ---- validation -------------------------------------------------------------------------------


def city_oracle(x, city):
    return 2.0 * x + {"berlin": 1.0, "paris": 10.0, "rome": 100.0}[city] + 0.5


@pytest.fixture(scope="module")
def city_model(shared_server):
    v = publish(shared_server, "city", json.dumps(CITY_DOC).encode(), "basalt_json")
    assert v["signature"]["handles_missing"] is False
    return "city"


def test_city_model_oracle(shared_server, city_model):
    rows = [{"x": 1.5, "city": "paris"}, {"city": "rome", "x": -3}, {"x": 0, "city": "berlin"}]
    j = predict_ok(shared_server, city_model, {"inputs": rows}, 3)
    assert_close(j["predictions"], [city_oracle(r["x"], r["city"]) for r in rows])
    j = predict_ok(shared_server, city_model, {"instances": [[1.5, "paris"]]}, 1)
    assert_close(j["predictions"], [city_oracle(1.5, "paris")])


@pytest.mark.parametrize("body,field", [
    ({"inputs": {"city": "paris"}}, "x"),                                  # missing required
    ({"inputs": {"x": 1, "city": "paris", "zzz": 3}}, "zzz"),              # unknown feature
    ({"inputs": {"x": "1.5", "city": "paris"}}, "x"),                      # string for a float
    ({"inputs": {"x": True, "city": "paris"}}, "x"),                       # bool for a float
    ({"inputs": {"x": 1, "city": "london"}}, "city"),                      # category not allowed
    ({"inputs": {"x": 1, "city": ["paris"]}}, "city"),                     # array for a category
    ({"inputs": {"x": None, "city": "paris"}}, "x"),                       # null, no missing support
    ({"inputs": [{"x": 1, "city": "paris"}, {"x": 2}]}, "city"),           # 2nd row incomplete
    ({"instances": [[1.0]]}, "instances"),                                 # too few values
    ({"instances": [[1.0, "paris", 3]]}, "instances"),                     # too many values
    ({"instances": [[1.0, "rome"], [None, "rome"]]}, "x"),                 # null in 2nd row
    ({"inputs": []}, "inputs"),                                            # no rows
    ({"inputs": 5}, "inputs"),                                             # not rows
    ({"inputs": {"x": 1, "city": "paris"}, "instances": [[1, "paris"]]}, "inputs"),
    ({"rows": [{"x": 1}]}, "rows"),                                        # unknown body field
    ({}, "inputs"),
])
def test_invalid_inputs_are_400_naming_the_field(shared_server, city_model, body, field):
    r = predict(shared_server, city_model, body)
    e = assert_error(r, 400, field=field)
    assert e["code"] == "invalid_input"


def test_non_finite_numbers_are_400(shared_server, city_model):
    for text in ('{"inputs": {"x": 1e999, "city": "paris"}}',
                 '{"inputs": {"x": -1e999, "city": "paris"}}',
                 '{"instances": [[1e400, "rome"]]}'):
        r = shared_server.post("/v1/models/%s/predict" % city_model, data=text,
                               headers={"Content-Type": "application/json"})
        assert_error(r, 400, field="x")


def test_duplicate_feature_is_400(shared_server, city_model):
    r = shared_server.post("/v1/models/%s/predict" % city_model,
                           data='{"inputs": {"x": 1, "city": "rome", "x": 2}}',
                           headers={"Content-Type": "application/json"})
    assert_error(r, 400, field="x")


def test_int_and_bool_type_overrides(shared_server):
    srv = shared_server
    create_model(srv, "typed")
    meta = {"input_schema": [{"name": "n", "type": "int"}, {"name": "flag", "type": "bool"}]}
    upload_ok(srv, "typed", linear_bytes((3.0, 5.0), 1.0), "basalt_json", metadata=meta)
    approve(srv, "typed", 1)
    j = predict_ok(srv, "typed", {"inputs": [{"n": 2, "flag": True}, {"n": -4, "flag": 0}]}, 2)
    assert_close(j["predictions"], [3 * 2 + 5 + 1, 3 * -4 + 0 + 1])
    assert_error(predict(srv, "typed", {"inputs": {"n": 2.5, "flag": True}}), 400, field="n")
    assert_error(predict(srv, "typed", {"inputs": {"n": 2, "flag": 2}}), 400, field="flag")
    assert_error(predict(srv, "typed", {"inputs": {"n": 2, "flag": "yes"}}), 400, field="flag")


def test_overflowing_prediction_is_400_not_null(shared_server):
    """Finite inputs whose prediction overflows to inf (was: 200 with a null prediction)."""
    srv = shared_server
    publish(srv, "overflow", linear_bytes((3.0, 5.0), 1.0), "basalt_json")
    ok = predict_ok(srv, "overflow", {"inputs": [{"a": 1e300, "b": -1e300}]}, 1)
    assert_close(np.array(ok["predictions"]) / 1e300, [-2.0])
    r = predict(srv, "overflow", {"inputs": [{"a": 1, "b": 1}, {"a": 1e308, "b": 1e308}]})
    e = assert_error(r, 400, field="inputs")
    assert "row 1" in e["message"]
    r = srv.post("/v2/models/overflow/infer", json={"inputs": [
        {"name": "a", "shape": [1], "datatype": "FP64", "data": [1e308]},
        {"name": "b", "shape": [1], "datatype": "FP64", "data": [1e308]}]})
    assert_error(r, 400, field="inputs")
    # A softmax classifier fed huge values must not answer NaN probabilities either.
    X, y = _load("iris")
    model = LogisticRegression(max_iter=2000).fit(X, y)
    publish(srv, "overflow-cls", exporter().to_json(model).encode(), "basalt_json")
    big = {c: 1e308 for c in X.columns}
    r = predict(srv, "overflow-cls", {"inputs": big})
    if r.status_code == 200:
        p = r.json()["predictions"][0]["probabilities"]
        assert all(isinstance(v, float) and 0 <= v <= 1 for v in p.values()), p
        assert abs(sum(p.values()) - 1) < 1e-9
    else:
        assert_error(r, 400, field="inputs")


def test_malformed_bodies_are_4xx(shared_server, city_model):
    for data, ctype in ((b'{"inputs": {"x": 1,', "application/json"),
                        (b"[1, 2]", "application/json"),
                        (b"\xff\xfe", "application/json"),
                        (b"", "application/json")):
        r = shared_server.post("/v1/models/%s/predict" % city_model, data=data,
                               headers={"Content-Type": ctype})
        assert 400 <= r.status_code < 500, (data, r.status_code, r.text)
        assert_error(r, r.status_code)


@pytest.mark.parametrize("number", ["01", "1.", "-.5", "1.e2", "2e", "+1"])
def test_numbers_that_are_not_json_are_400(shared_server, city_model, number):
    """Python's json module (the oracle) refuses each of these; so must the server, on the
    one-row fast path and on the general path (rows list)."""
    with pytest.raises(ValueError):
        json.loads(number)
    for body in ('{"inputs": {"x": %s, "city": "rome"}}' % number,
                 '{"inputs": [{"x": %s, "city": "rome"}]}' % number):
        r = shared_server.post("/v1/models/%s/predict" % city_model, data=body.encode(),
                               headers={"Content-Type": "application/json"})
        assert_error(r, 400, code="malformed_json")


def test_unknown_model_alias_version_are_404(shared_server, city_model):
    srv = shared_server
    ok = {"inputs": {"x": 1, "city": "paris"}}
    assert_error(predict(srv, "no-such-model", ok), 404)
    assert_error(predict(srv, city_model + "@nope", ok), 404, field="alias")
    assert_error(predict(srv, city_model, ok, version=99), 404, field="version")
    assert_error(srv.post("/v1/models/%s/versions/0/predict" % city_model, json=ok), 400,
                 field="version")
    assert_error(srv.post("/v1/models/%s/versions/x1/predict" % city_model, json=ok), 400,
                 field="version")
    # A model without an approved version: bare name is 404, its pending version serves.
    create_model(srv, "only-pending")
    upload_ok(srv, "only-pending", json.dumps(CITY_DOC).encode(), "basalt_json")
    assert_error(predict(srv, "only-pending", ok), 404)
    j = predict_ok(srv, "only-pending", ok, 1, version=1)
    assert_close(j["predictions"], [city_oracle(1, "paris")])


def test_schema_override_renames_bounds_defaults(shared_server):
    srv = shared_server
    create_model(srv, "city-renamed")
    meta = {"input_schema": [{"name": "temp", "min": -10, "max": 40},
                             {"name": "town", "default": "rome"}]}
    v = upload_ok(srv, "city-renamed", json.dumps(CITY_DOC).encode(), "basalt_json", metadata=meta)
    approve(srv, "city-renamed", v["version"])
    sig = v["signature"]["inputs"]
    assert [f["name"] for f in sig] == ["temp", "town"]
    assert sig[0]["min"] == -10 and sig[0]["max"] == 40
    rows = [{"temp": -10, "town": "paris"}, {"temp": 40, "town": "berlin"}, {"temp": 3.25}]
    j = predict_ok(srv, "city-renamed", {"inputs": rows}, 3)
    assert_close(j["predictions"], [city_oracle(-10, "paris"), city_oracle(40, "berlin"),
                                    city_oracle(3.25, "rome")])
    assert_error(predict(srv, "city-renamed", {"inputs": {"x": 1, "city": "paris"}}), 400,
                 field="x")
    assert_error(predict(srv, "city-renamed", {"inputs": {"temp": 40.5, "town": "paris"}}), 400,
                 field="temp")
    assert_error(predict(srv, "city-renamed", {"inputs": {"temp": -11, "town": "paris"}}), 400,
                 field="temp")
    assert_error(predict(srv, "city-renamed", {"instances": [[1, "rome"], [41, "rome"]]}), 400,
                 field="temp")
    # Overrides that contradict the model are rejected at upload and store nothing.
    for bad in ({"input_schema": [{"name": "a"}]},
                {"input_schema": [{"name": "a"}, {"name": "a"}]},
                {"input_schema": [{"name": "a", "min": 5, "max": 1}, {}]},
                {"input_schema": [{"name": "a", "type": "category"}, {}]},
                {"input_schema": [{}, {"default": "london"}]},
                {"input_schema": [{"name": "a", "max": 1, "default": 5}, {}]},
                {"input_schema": [{"name": "a", "min": 0, "default": -0.5}, {}]},
                {"output_schema": {"labels": ["a", "b"]}},
                {"output_schema": {"task": "classification"}}):
        r = upload(srv, "city-renamed", json.dumps(CITY_DOC).encode(), "basalt_json",
                   metadata=bad)
        assert_error(r, 400)
    assert srv.get("/v1/models/city-renamed").json()["latest_version"] == 1


def test_labels_override(shared_server):
    srv = shared_server
    X, y = _load("iris")
    model = LogisticRegression(max_iter=2000).fit(X, y)
    doc = exporter().to_json(model)
    create_model(srv, "iris-labels")
    names = ["setosa", "versicolor", "virginica"]
    v = upload_ok(srv, "iris-labels", doc.encode(), "basalt_json", multipart=True,
                  metadata={"output_schema": {"labels": names, "task": "classification"}})
    assert v["signature"]["outputs"]["labels"] == names
    approve(srv, "iris-labels", 1)
    j = predict_ok(srv, "iris-labels", {"inputs": named_rows(X)}, len(X))
    got = proba_matrix(j["predictions"], names)
    assert_close(got, model.predict_proba(X), "labels override")
    assert [p["label"] for p in j["predictions"]] == [names[c] for c in model.predict(X)]
    # Labels key the probabilities, so they must stay distinct (was accepted: a response
    # with duplicate JSON keys).
    r = upload(srv, "iris-labels", doc.encode(), "basalt_json",
               metadata={"output_schema": {"labels": ["a", "b", "a"]}})
    assert_error(r, 400, field="output_schema.labels")
    assert srv.get("/v1/models/iris-labels").json()["latest_version"] == 1


def test_max_batch_rows(start_server):
    srv = start_server("--max-batch-rows", "5")
    publish(srv, "city", json.dumps(CITY_DOC).encode(), "basalt_json")
    rows = [{"x": float(i), "city": "rome"} for i in range(6)]
    j = predict_ok(srv, "city", {"inputs": rows[:5]}, 5)
    assert_close(j["predictions"], [city_oracle(r["x"], "rome") for r in rows[:5]])
    e = assert_error(predict(srv, "city", {"inputs": rows}), 413, field="inputs")
    assert "5" in e["message"]
    assert_error(predict(srv, "city", {"instances": [[1, "rome"]] * 6}), 413, field="instances")
    r = srv.post("/v2/models/city/infer", json={"inputs": [
        {"name": "x", "shape": [6], "datatype": "FP64", "data": [1] * 6},
        {"name": "city", "shape": [6], "datatype": "BYTES", "data": ["rome"] * 6}]})
    assert_error(r, 413)


def test_metrics_count_predictions_per_version(shared_server, city_model):
    srv = shared_server
    create_model(srv, "metered")
    upload_ok(srv, "metered", json.dumps(CITY_DOC).encode(), "basalt_json")
    approve(srv, "metered", 1)
    before = srv.metrics()
    assert not before.find("basalt_predictions_total", model="metered")
    predict_ok(srv, "metered", {"inputs": [{"x": 1, "city": "rome"}] * 4}, 4)
    predict_ok(srv, "metered", {"instances": [[2, "paris"]] * 3}, 3)
    assert_error(predict(srv, "metered", {"inputs": {"x": 1, "city": "london"}}), 400)
    m = srv.metrics()
    lbl = {"tenant": "default", "model": "metered", "version": "1"}
    assert m.get("basalt_predictions_total", **lbl) == 3
    assert m.get("basalt_prediction_rows_total", **lbl) == 7
    errs = m.find("basalt_prediction_errors_total", **lbl)
    assert [(l["code"], v) for l, v in errs] == [("invalid_input", 1)]
    assert m.get("basalt_prediction_duration_seconds_count", **lbl) == 2
    assert m.get("basalt_prediction_duration_seconds_bucket", le="+Inf", **lbl) == 2
    assert m.get("basalt_model_loaded", **lbl) == 1
    assert m.types.get("basalt_predictions_total") == "counter"
    assert m.types.get("basalt_prediction_duration_seconds") == "histogram"
