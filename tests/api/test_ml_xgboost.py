"""XGBoost JSON models through `basalt model check`, against XGBoost itself.

Each test trains a Booster at test time on one of scikit-learn's bundled
datasets, saves it with save_model(".json"), runs
`basalt model check MODEL --rows ROWS.json` and compares every row with
Booster.predict: max abs diff <= 1e-5 and the same argmax, on the clean data
and with ~10% of the values replaced by NaN (missing: default directions).
Malformed and hostile files must be rejected with exit code 1 and a message.

The binary comes from $BASALT_BIN (default build/basalt).
"""
import copy
import json
import os
import subprocess

import numpy as np
import pytest
import xgboost as xgb
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine

BIN = os.environ.get("BASALT_BIN", "build/basalt")
TOL = 1e-5


@pytest.fixture(scope="module")
def basalt():
    assert os.path.exists(BIN), f"basalt binary not found at {BIN} (set BASALT_BIN)"
    return BIN


def run_check(basalt, tmp_path, model_path, rows=None, extra=()):
    cmd = [basalt, "model", "check", str(model_path), "--json", *extra]
    if rows is not None:
        rows_path = tmp_path / "rows.json"
        cells = [[None if np.isnan(v) else float(v) for v in row] for row in rows]
        rows_path.write_text(json.dumps(cells))
        cmd += ["--rows", str(rows_path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def predict(basalt, tmp_path, booster, X):
    path = tmp_path / "model.json"
    booster.save_model(str(path))
    p = run_check(basalt, tmp_path, path, X)
    assert p.returncode == 0, p.stderr
    out = np.array(json.loads(p.stdout)["predictions"], dtype=np.float64)
    assert out.shape[0] == X.shape[0]
    return out


def with_missing(X, seed=0):
    rng = np.random.default_rng(seed)
    Xm = X.astype(np.float64).copy()
    Xm[rng.random(X.shape) < 0.10] = np.nan
    return Xm


def train(params, X, y, rounds=40, missing_in_training=True):
    # train partly on data with NaN so the trees learn both default directions
    Xt = with_missing(X, seed=1) if missing_in_training else X
    return xgb.train({"max_depth": 5, "eta": 0.3, "seed": 7, **params},
                     xgb.DMatrix(Xt, label=y), num_boost_round=rounds)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


DATA_VARIANTS = ["clean", "missing"]


def variant(X, which):
    return X if which == "clean" else with_missing(X, seed=2)


@pytest.mark.parametrize("which", DATA_VARIANTS)
@pytest.mark.parametrize("objective", ["binary:logistic", "binary:logitraw"])
def test_binary(basalt, tmp_path, objective, which):
    X, y = load_breast_cancer(return_X_y=True)
    b = train({"objective": objective}, X, y)
    Xq = variant(X, which)
    ours = predict(basalt, tmp_path, b, Xq)
    assert ours.shape == (len(Xq), 2)
    ref = b.predict(xgb.DMatrix(Xq)).astype(np.float64)
    if objective == "binary:logitraw":  # raw margin; basalt reports probabilities
        ref = sigmoid(ref)
    assert np.max(np.abs(ours[:, 1] - ref)) <= TOL
    assert np.max(np.abs(ours[:, 0] - (1.0 - ref))) <= TOL
    assert np.array_equal(np.argmax(ours, axis=1), (ref > 0.5).astype(int))


def diabetes_target(objective, y):
    if objective == "reg:logistic":
        return (y - y.min()) / (y.max() - y.min())
    if objective == "reg:pseudohubererror":  # residuals near the huber slope, so trees split
        return (y - y.mean()) / y.std()
    return y  # 25..346: positive, as count:poisson / gamma / tweedie need


@pytest.mark.parametrize("which", DATA_VARIANTS)
@pytest.mark.parametrize("objective", ["reg:squarederror", "count:poisson", "reg:logistic",
                                       "reg:gamma", "reg:tweedie", "reg:pseudohubererror",
                                       "reg:squaredlogerror"])
def test_regression(basalt, tmp_path, objective, which):
    X, y = load_diabetes(return_X_y=True)
    params = {"objective": objective}
    if objective == "reg:squaredlogerror":  # its hessians are tiny: let the trees split
        params.update(min_child_weight=0, eta=1.0, base_score=100.0)
    b = train(params, X, diabetes_target(objective, y))
    Xq = variant(X, which)
    ours = predict(basalt, tmp_path, b, Xq)
    assert ours.shape == (len(Xq), 1)
    ref = b.predict(xgb.DMatrix(Xq)).astype(np.float64)
    assert np.max(np.abs(ours[:, 0] - ref)) <= TOL
    # the model is not trivial: predictions vary across rows
    assert np.ptp(ref) > 0


def test_regression_base_score_and_dart(basalt, tmp_path):
    X, y = load_diabetes(return_X_y=True)
    for params in ({"objective": "reg:squarederror", "base_score": 150.0},
                   {"objective": "count:poisson", "base_score": 3.0},
                   {"objective": "reg:squarederror", "booster": "dart", "rate_drop": 0.3}):
        b = train(params, X, y, rounds=25)
        for Xq in (X, with_missing(X, seed=3)):
            ours = predict(basalt, tmp_path, b, Xq)
            ref = b.predict(xgb.DMatrix(Xq)).astype(np.float64)
            assert np.max(np.abs(ours[:, 0] - ref)) <= TOL, params


@pytest.mark.parametrize("which", DATA_VARIANTS)
@pytest.mark.parametrize("objective,loader", [("multi:softprob", load_iris),
                                              ("multi:softmax", load_wine),
                                              ("multi:softprob", load_wine)])
def test_multiclass(basalt, tmp_path, objective, loader, which):
    X, y = loader(return_X_y=True)
    k = int(y.max()) + 1
    b = train({"objective": objective, "num_class": k}, X, y, rounds=20)
    Xq = variant(X, which)
    ours = predict(basalt, tmp_path, b, Xq)
    assert ours.shape == (len(Xq), k)
    d = xgb.DMatrix(Xq)
    if objective == "multi:softprob":
        ref = b.predict(d).astype(np.float64)
        cls = np.argmax(ref, axis=1)
    else:  # softmax predicts the class; the probabilities are softmax(margins)
        margin = b.predict(d, output_margin=True).astype(np.float64)
        e = np.exp(margin - margin.max(axis=1, keepdims=True))
        ref = e / e.sum(axis=1, keepdims=True)
        cls = b.predict(d).astype(int)
    assert np.max(np.abs(ours - ref)) <= TOL
    assert np.array_equal(np.argmax(ours, axis=1), cls)
    assert np.allclose(ours.sum(axis=1), 1.0, atol=1e-6)


def test_describe(basalt, tmp_path):
    X, y = load_breast_cancer(return_X_y=True)
    names = [f"x_{i}" for i in range(X.shape[1])]
    types = ["q"] * (X.shape[1] - 2) + ["int", "i"]
    d = xgb.DMatrix(X, label=y, feature_names=names, feature_types=types)
    b = xgb.train({"objective": "binary:logistic", "max_depth": 3}, d, num_boost_round=5)
    path = tmp_path / "named.json"
    b.save_model(str(path))
    p = run_check(basalt, tmp_path, path)
    assert p.returncode == 0, p.stderr
    desc = json.loads(p.stdout)
    assert desc["kind"] == "trees"
    assert desc["task"] == "classification"
    assert desc["n_outputs"] == 2 and desc["labels"] == ["0", "1"]
    assert desc["handles_missing"] is True
    assert [f["name"] for f in desc["features"]] == names
    assert [f["type"] for f in desc["features"]][-3:] == ["float", "int", "bool"]
    assert all(f["required"] for f in desc["features"])

    X2, y2 = load_diabetes(return_X_y=True)
    b2 = xgb.train({"objective": "reg:squarederror"}, xgb.DMatrix(X2, y2), num_boost_round=3)
    b2.save_model(str(path))
    desc2 = json.loads(run_check(basalt, tmp_path, path).stdout)
    assert desc2["task"] == "regression" and desc2["n_outputs"] == 1
    assert desc2["labels"] is None
    assert [f["name"] for f in desc2["features"]] == [f"f{i}" for i in range(10)]


# ---- rejections ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_model(tmp_path_factory):
    X, y = load_iris(return_X_y=True)
    b = xgb.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 3},
                  xgb.DMatrix(X, y), num_boost_round=3)
    path = tmp_path_factory.mktemp("good") / "good.json"
    b.save_model(str(path))
    return json.loads(path.read_text())


def tree0(m):
    return m["learner"]["gradient_booster"]["model"]["trees"][0]


def mutate_cycle(m):
    tree0(m)["left_children"][1] = 0  # child points back to the root


def mutate_self(m):
    t = tree0(m)
    t["left_children"][0] = 0


def mutate_child_range(m):
    t = tree0(m)
    t["right_children"][0] = 10 ** 6


def mutate_feature(m):
    t = tree0(m)
    t["split_indices"][0] = 4  # iris has 4 features: 0..3


def mutate_num_nodes(m):
    tree0(m)["tree_param"]["num_nodes"] = "1000000000"


def mutate_num_nodes_mismatch(m):
    t = tree0(m)
    t["tree_param"]["num_nodes"] = str(int(t["tree_param"]["num_nodes"]) + 1)


def mutate_num_trees(m):
    m["learner"]["gradient_booster"]["model"]["gbtree_model_param"]["num_trees"] = "999999999"


def mutate_num_feature(m):
    m["learner"]["learner_model_param"]["num_feature"] = "100000000"


def mutate_num_class(m):
    m["learner"]["learner_model_param"]["num_class"] = "2"  # trees still use class 2


def mutate_wrong_type(m):
    tree0(m)["split_conditions"] = "oops"


def mutate_categorical(m):
    tree0(m)["split_type"][0] = 1


def mutate_objective(m):
    m["learner"]["objective"]["name"] = "rank:pairwise"


def mutate_missing_learner(m):
    m["learner"].pop("gradient_booster")


REJECTIONS = {
    "cycle": (mutate_cycle, "child"),
    "self_loop": (mutate_self, "child"),
    "child_out_of_range": (mutate_child_range, "right_children"),
    "feature_out_of_range": (mutate_feature, "feature 4"),
    "huge_num_nodes": (mutate_num_nodes, "num_nodes"),
    "num_nodes_mismatch": (mutate_num_nodes_mismatch, "entries"),
    "huge_num_trees": (mutate_num_trees, "num_trees"),
    "huge_num_feature": (mutate_num_feature, "num_feature"),
    "num_class_mismatch": (mutate_num_class, "num_class"),
    "wrong_type": (mutate_wrong_type, "split_conditions"),
    "categorical": (mutate_categorical, "categorical splits are not supported"),
    "objective": (mutate_objective, "rank:pairwise"),
    "missing_booster": (mutate_missing_learner, "gradient_booster"),
}


@pytest.mark.parametrize("name", sorted(REJECTIONS))
def test_rejects_malformed(basalt, tmp_path, good_model, name):
    mutate, needle = REJECTIONS[name]
    m = copy.deepcopy(good_model)
    mutate(m)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(m))
    p = run_check(basalt, tmp_path, path, extra=["--format", "xgboost_json"])
    assert p.returncode == 1, p.stdout
    assert needle in p.stderr, p.stderr
    assert "invalid_input" in p.stderr


def test_rejects_truncated_and_garbage(basalt, tmp_path, good_model):
    text = json.dumps(good_model)
    for name, body in [("truncated", text[: len(text) // 2]),
                       ("not_json", "this is not a model"),
                       ("empty", ""),
                       ("array", "[1, 2, 3]"),
                       ("trailing", text + " {}")]:
        path = tmp_path / f"{name}.json"
        path.write_text(body)
        p = run_check(basalt, tmp_path, path, extra=["--format", "xgboost_json"])
        assert p.returncode == 1, name
        assert p.stderr.strip(), name
    # without --format, a file that is not a model cannot be sniffed
    p = run_check(basalt, tmp_path, tmp_path / "not_json.json")
    assert p.returncode == 1 and "format" in p.stderr
    p = run_check(basalt, tmp_path, tmp_path / "does_not_exist.json")
    assert p.returncode == 1 and p.stderr.strip()


def test_rejects_bad_rows(basalt, tmp_path, good_model):
    path = tmp_path / "good.json"
    path.write_text(json.dumps(good_model))
    rows = tmp_path / "bad_rows.json"
    for body in ["[[1, 2, 3]]", "[[1, 2, 3, \"x\"]]", "{\"a\": 1}", "[[1, 2, 3, 4]"]:
        rows.write_text(body)
        p = subprocess.run([basalt, "model", "check", str(path), "--rows", str(rows)],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 1, body
        assert p.stderr.strip(), body
