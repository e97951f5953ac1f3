"""scikit-learn models exported with tools/export_sklearn.py and run by basalt.

Every estimator kind the exporter supports is trained here on scikit-learn's
bundled datasets, alone and inside Pipeline / ColumnTransformer chains
(scaling, one-hot encoding of a derived string column, imputation of injected
NaNs), exported through the command line, and evaluated on every training row
(plus rows with unseen categories and missing values) with
`$BASALT_BIN model check model.json --rows rows.json`. The oracle is
scikit-learn itself: predict_proba for classifiers, predict for regressors;
max abs difference <= 1e-5 and identical argmax on every row.
"""
import json
import math
import os
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor,
                              GradientBoostingClassifier, GradientBoostingRegressor,
                              RandomForestClassifier, RandomForestRegressor)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import (ElasticNet, Lasso, LinearRegression, LogisticRegression,
                                  Ridge)
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXPORTER = os.path.join(ROOT, "tools", "export_sklearn.py")
BASALT = os.environ.get("BASALT_BIN", os.path.join(ROOT, "build", "basalt"))
TOL = 1e-5


def _load(name):
    X, y = getattr(datasets, "load_" + name)(return_X_y=True, as_frame=True)
    return X, y


def _export(model, tmp_path, extra=()):
    pkl = tmp_path / "model.pkl"
    out = tmp_path / "model.json"
    with open(pkl, "wb") as f:
        pickle.dump(model, f)
    r = subprocess.run([sys.executable, EXPORTER, str(pkl), "-o", str(out), *extra],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with open(out) as f:
        return out, json.load(f)


def _rows(doc, X):
    """Positional rows in schema order: numbers, strings for categories, null for NaN."""
    names = [i["name"] for i in doc["inputs"]]
    if isinstance(X, pd.DataFrame):
        cols = [X[n].tolist() for n in names]
    else:
        X = np.asarray(X)
        cols = [X[:, int(n[1:])].tolist() for n in names]
    rows = []
    for vals in zip(*cols):
        row = []
        for v in vals:
            if v is None or (isinstance(v, float) and math.isnan(v)):
                row.append(None)
            elif isinstance(v, str):
                row.append(v)
            else:
                row.append(float(v))
        rows.append(row)
    return rows


def _basalt(model_path, rows, tmp_path):
    rp = tmp_path / "rows.json"
    with open(rp, "w") as f:
        json.dump(rows, f)
    r = subprocess.run([BASALT, "model", "check", str(model_path), "--json", "--rows", str(rp)],
                       capture_output=True, text=True)
    assert r.returncode == 0, "basalt model check failed: %s %s" % (r.stdout, r.stderr)
    return np.asarray(json.loads(r.stdout)["predictions"], dtype=np.float64)


def check(model, X, tmp_path, X_eval=None):
    """Exports model, runs basalt on X_eval (default X), compares with scikit-learn."""
    X_eval = X if X_eval is None else X_eval
    path, doc = _export(model, tmp_path)
    got = _basalt(path, _rows(doc, X_eval), tmp_path)
    if hasattr(model, "predict_proba") and doc["output"]["task"] == "classification":
        want = model.predict_proba(X_eval)
        assert doc["output"]["labels"] == [str(c) for c in model.classes_]
    else:
        want = np.asarray(model.predict(X_eval), dtype=np.float64)
        if want.ndim == 1:
            want = want[:, None]
    assert got.shape == want.shape, (got.shape, want.shape)
    diff = np.max(np.abs(got - want))
    assert diff <= TOL, "max abs diff %g over %d rows" % (diff, len(want))
    if want.shape[1] > 1:
        assert np.array_equal(np.argmax(got, axis=1), np.argmax(want, axis=1))
    return doc


@pytest.fixture(scope="module", autouse=True)
def _binary_present():
    if not os.path.exists(BASALT):
        pytest.fail("basalt binary not found at %s (set BASALT_BIN)" % BASALT)


# ---- plain estimators ---------------------------------------------------------------------

@pytest.mark.parametrize("est", [LinearRegression(), Ridge(alpha=0.5), Lasso(alpha=0.05),
                                 ElasticNet(alpha=0.01, l1_ratio=0.3)],
                         ids=lambda e: type(e).__name__)
def test_linear_regressors_diabetes(est, tmp_path):
    X, y = _load("diabetes")
    est.fit(X, y)
    doc = check(est, X, tmp_path)
    assert doc["estimator"]["type"] == "linear"
    assert [i["name"] for i in doc["inputs"]] == list(X.columns)


def test_linear_regression_two_targets_array_input(tmp_path):
    X, y = _load("diabetes")
    Y = np.c_[y, 0.5 * y + X["bmi"] * 10]
    est = LinearRegression().fit(X.values, Y)
    doc = check(est, X.values, tmp_path)
    assert [i["name"] for i in doc["inputs"]] == ["x%d" % i for i in range(X.shape[1])]


@pytest.mark.parametrize("kw", [dict(), dict(multi_class="multinomial"),
                                dict(solver="liblinear")], ids=["auto", "multinomial", "liblinear"])
def test_logistic_binary_breast_cancer(kw, tmp_path):
    X, y = _load("breast_cancer")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, **kw)).fit(X, y)
    check(model, X, tmp_path)


@pytest.mark.parametrize("kw", [dict(), dict(multi_class="ovr"), dict(solver="liblinear")],
                         ids=["multinomial", "ovr", "liblinear"])
@pytest.mark.parametrize("data", ["iris", "wine"])
def test_logistic_multiclass(data, kw, tmp_path):
    X, y = _load(data)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, **kw)).fit(X, y)
    check(model, X, tmp_path)


@pytest.mark.parametrize("est", [DecisionTreeClassifier(random_state=0),
                                 DecisionTreeClassifier(max_depth=3, random_state=0),
                                 RandomForestClassifier(n_estimators=30, random_state=0),
                                 ExtraTreesClassifier(n_estimators=30, random_state=0),
                                 GradientBoostingClassifier(n_estimators=40, random_state=0)],
                         ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("data", ["iris", "wine", "breast_cancer"])
def test_tree_classifiers(data, est, tmp_path):
    X, y = _load(data)
    est.fit(X, y)
    doc = check(est, X, tmp_path)
    assert doc["estimator"]["type"] == "trees"


def test_gradient_boosting_exponential_and_zero_init(tmp_path):
    X, y = _load("breast_cancer")
    est = GradientBoostingClassifier(loss="exponential", n_estimators=30, random_state=0).fit(X, y)
    check(est, X, tmp_path)
    est = GradientBoostingClassifier(init="zero", n_estimators=30, random_state=0).fit(X, y)
    check(est, X, tmp_path)
    Xi, yi = _load("iris")
    est = GradientBoostingClassifier(init="zero", n_estimators=20, random_state=0).fit(Xi, yi)
    check(est, Xi, tmp_path)


@pytest.mark.parametrize("est", [DecisionTreeRegressor(random_state=0),
                                 RandomForestRegressor(n_estimators=30, random_state=0),
                                 ExtraTreesRegressor(n_estimators=30, random_state=0),
                                 GradientBoostingRegressor(n_estimators=50, random_state=0),
                                 GradientBoostingRegressor(loss="absolute_error", n_estimators=30,
                                                           random_state=0),
                                 GradientBoostingRegressor(init="zero", n_estimators=30,
                                                           random_state=0)],
                         ids=lambda e: "%s-%s" % (type(e).__name__, getattr(e, "loss", "")))
def test_tree_regressors_diabetes(est, tmp_path):
    X, y = _load("diabetes")
    est.fit(X, y)
    check(est, X, tmp_path)


def test_forest_regressor_two_outputs(tmp_path):
    X, y = _load("diabetes")
    Y = np.c_[y, X["bmi"] * 100]
    est = RandomForestRegressor(n_estimators=10, random_state=0).fit(X, Y)
    check(est, X, tmp_path)


@pytest.mark.parametrize("act", ["relu", "tanh", "logistic", "identity"])
def test_mlp_classifier_binary(act, tmp_path):
    X, y = _load("breast_cancer")
    model = make_pipeline(StandardScaler(),
                          MLPClassifier(hidden_layer_sizes=(16, 8), activation=act,
                                        max_iter=300, random_state=0)).fit(X, y)
    doc = check(model, X, tmp_path)
    assert doc["estimator"]["output_activation"] == "logistic"


@pytest.mark.filterwarnings("ignore")
def test_mlp_classifier_multiclass_digits(tmp_path):
    X, y = _load("digits")
    model = make_pipeline(MinMaxScaler(),
                          MLPClassifier(hidden_layer_sizes=(32,), max_iter=60,
                                        random_state=0)).fit(X, y)
    doc = check(model, X, tmp_path)
    assert doc["estimator"]["output_activation"] == "softmax"


@pytest.mark.filterwarnings("ignore")
def test_mlp_regressor_diabetes(tmp_path):
    X, y = _load("diabetes")
    model = make_pipeline(StandardScaler(),
                          MLPRegressor(hidden_layer_sizes=(20,), activation="tanh",
                                       max_iter=200, random_state=0)).fit(X, y)
    check(model, X, tmp_path)


# ---- ColumnTransformer chains: scaling, one-hot, imputation ------------------------------

def _wine_frame(seed=0):
    """wine as a DataFrame with a derived string column and injected NaNs."""
    X, y = _load("wine")
    X = X.copy()
    X["alcohol_band"] = pd.cut(X["alcohol"], bins=[0, 12.4, 13.4, 99],
                               labels=["low", "mid", "high"]).astype(str)
    rng = np.random.RandomState(seed)
    for col in ["malic_acid", "ash", "magnesium"]:
        X.loc[rng.rand(len(X)) < 0.1, col] = np.nan
    X.loc[rng.rand(len(X)) < 0.05, "alcohol_band"] = np.nan
    return X, y


def _wine_eval_rows(X):
    """Training rows plus rows with an unseen category and missing values everywhere imputed."""
    extra = X.iloc[:6].copy()
    extra["alcohol_band"] = ["unseen", "low", np.nan, "high", "other", "mid"]
    extra.loc[extra.index[:3], ["malic_acid", "ash", "magnesium"]] = np.nan
    extra.loc[extra.index[3:], ["alcohol", "hue", "total_phenols"]] = np.nan
    return pd.concat([X, extra], ignore_index=True)


def _wine_ct():
    # Every column the model uses passes an imputer, so the model handles missing values
    # (basalt's handles_missing is one flag for the whole model).
    num_imputed = ["malic_acid", "ash", "magnesium"]
    num_scaled = ["alcohol", "flavanoids", "color_intensity", "proline", "hue"]
    return ColumnTransformer([
        ("imp", Pipeline([("impute", SimpleImputer(strategy="median")),
                          ("scale", StandardScaler())]), num_imputed),
        ("std", Pipeline([("scale", StandardScaler()),
                          ("impute", SimpleImputer(strategy="mean"))]), num_scaled),
        ("cat", Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                          ("onehot", OneHotEncoder(handle_unknown="ignore"))]), ["alcohol_band"]),
        ("mm", Pipeline([("impute", SimpleImputer()), ("mm", MinMaxScaler())]),
         ["alcalinity_of_ash", "total_phenols"]),
        ("const", SimpleImputer(strategy="constant", fill_value=-1.0), ["ash"]),
        ("gone", "drop", ["nonflavanoid_phenols"]),
        ("keep", SimpleImputer(strategy="median"), ["od280/od315_of_diluted_wines"]),
    ], remainder="drop")


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("est", [LogisticRegression(max_iter=3000),
                                 LogisticRegression(multi_class="ovr", max_iter=3000),
                                 RandomForestClassifier(n_estimators=25, random_state=0),
                                 ExtraTreesClassifier(n_estimators=25, random_state=0),
                                 GradientBoostingClassifier(n_estimators=25, random_state=0),
                                 DecisionTreeClassifier(random_state=0),
                                 MLPClassifier(hidden_layer_sizes=(12,), max_iter=400,
                                               random_state=0)],
                         ids=lambda e: "%s-%s" % (type(e).__name__, getattr(e, "multi_class", "")))
def test_column_transformer_classifiers(est, tmp_path):
    X, y = _wine_frame()
    model = Pipeline([("prep", _wine_ct()), ("model", est)]).fit(X, y)
    doc = check(model, X, tmp_path, X_eval=_wine_eval_rows(X))
    names = [i["name"] for i in doc["inputs"]]
    assert "nonflavanoid_phenols" not in names
    band = [i for i in doc["inputs"] if i["name"] == "alcohol_band"][0]
    assert band["type"] == "category"
    assert sorted(band["categories"]) == ["high", "low", "mid"]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("est", [Ridge(alpha=1.0), GradientBoostingRegressor(random_state=0),
                                 RandomForestRegressor(n_estimators=20, random_state=0),
                                 MLPRegressor(hidden_layer_sizes=(10,), max_iter=300,
                                              random_state=0)],
                         ids=lambda e: type(e).__name__)
def test_column_transformer_regressors_diabetes(est, tmp_path):
    X, y = _load("diabetes")
    X = X.copy()
    X["age_band"] = pd.qcut(X["age"], 4, labels=["q1", "q2", "q3", "q4"]).astype(str)
    rng = np.random.RandomState(1)
    X.loc[rng.rand(len(X)) < 0.1, "bmi"] = np.nan
    X.loc[rng.rand(len(X)) < 0.05, "age_band"] = np.nan
    X.loc[rng.rand(len(X)) < 0.05, "s3"] = np.nan
    ct = ColumnTransformer([
        ("bmi", SimpleImputer(strategy="mean"), ["bmi"]),
        ("band", Pipeline([("impute", SimpleImputer(strategy="constant", fill_value="q2")),
                           ("onehot", OneHotEncoder())]), ["age_band"]),
    ], remainder=Pipeline([("scale", StandardScaler()), ("impute", SimpleImputer())]))
    model = Pipeline([("ct", ct), ("scale", StandardScaler()), ("est", est)]).fit(X, y)
    check(model, X, tmp_path)


def test_scaler_after_column_transformer_with_remainder_passthrough(tmp_path):
    X, y = _wine_frame()
    X = X.drop(columns=["malic_acid", "ash", "magnesium"])
    ct = ColumnTransformer([
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["alcohol_band"]),
    ], remainder="passthrough")
    X = X.fillna({"alcohol_band": "mid"})
    model = Pipeline([("ct", ct), ("imp", SimpleImputer()), ("mm", MinMaxScaler(clip=True)),
                      ("lr", LogisticRegression(max_iter=3000))]).fit(X, y)
    check(model, X, tmp_path)


def test_numeric_category_column(tmp_path):
    X, y = _load("iris")
    X = X.copy()
    X["bucket"] = (X["sepal length (cm)"] > 5.8).astype(int) + 1
    ct = ColumnTransformer([("b", OneHotEncoder(), ["bucket"])], remainder="passthrough")
    model = Pipeline([("ct", ct), ("lr", LogisticRegression(max_iter=2000))]).fit(X, y)
    path, doc = _export(model, tmp_path)
    band = [i for i in doc["inputs"] if i["name"] == "bucket"][0]
    assert band["type"] == "category" and band["categories"] == ["1", "2"]
    Xs = X.copy()
    Xs["bucket"] = Xs["bucket"].astype(str)
    got = _basalt(path, _rows(doc, Xs), tmp_path)
    assert np.max(np.abs(got - model.predict_proba(X))) <= TOL


# ---- schema and rejection -----------------------------------------------------------------

def test_schema_printed_without_rows(tmp_path):
    X, y = _load("iris")
    path, doc = _export(LogisticRegression(max_iter=1000).fit(X, y), tmp_path)
    r = subprocess.run([BASALT, "model", "check", str(path), "--json"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    schema = json.loads(r.stdout)
    text = json.dumps(schema)
    for name in X.columns:
        assert name in text


def test_exporter_rejects_svc(tmp_path):
    X, y = _load("iris")
    pkl = tmp_path / "svc.pkl"
    with open(pkl, "wb") as f:
        pickle.dump(SVC().fit(X, y), f)
    r = subprocess.run([sys.executable, EXPORTER, str(pkl), "-o", str(tmp_path / "o.json")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "SVC" in r.stderr
    assert not (tmp_path / "o.json").exists()


def test_exporter_rejects_unsupported_transformer(tmp_path):
    from sklearn.preprocessing import PolynomialFeatures
    X, y = _load("diabetes")
    pkl = tmp_path / "poly.pkl"
    with open(pkl, "wb") as f:
        pickle.dump(make_pipeline(PolynomialFeatures(), Ridge()).fit(X, y), f)
    r = subprocess.run([sys.executable, EXPORTER, str(pkl)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "PolynomialFeatures" in r.stderr


def test_exporter_module_api():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import export_sklearn
    finally:
        sys.path.pop(0)
    X, y = _load("iris")
    est = DecisionTreeClassifier(max_depth=2, random_state=0).fit(X.values, y)
    doc = export_sklearn.export(est, feature_names=["a", "b", "c", "d"])
    assert doc["basalt_model"] == 1
    assert [i["name"] for i in doc["inputs"]] == ["a", "b", "c", "d"]
    assert json.loads(export_sklearn.to_json(est))["inputs"][0]["name"] == "x0"
    with pytest.raises(export_sklearn.ExportError, match="SVC"):
        export_sklearn.export(SVC().fit(X, y))
