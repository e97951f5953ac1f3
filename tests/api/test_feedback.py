"""Feedback and the endpoint reports (issue 10, docs/endpoints-monitoring.md): POST /v1/feedback,
GET /v1/endpoints/{name}/performance | experiment | shadow.

Predictions are real: scikit-learn and XGBoost models pushed through tests/api/modelkit.py,
served through POST /v1/endpoints/{name}/predict. The oracles (scikit-learn's metrics, scipy's
and statsmodels' tests, numpy's quantiles) run on the values the responses and the logged
records carried, copied by the test. Waits are bounded polls; nothing asserts on timing.
Runs on both backends (BASALT_TEST_BACKEND=postgres: PostgreSQL + JetStream per server); the
two-replica test starts its own PostgreSQL and nats-server (embedded pass only).
"""
import json
import math
import os
import sys
import time

import numpy as np
import pytest
from scipy import stats as sst
from sklearn.datasets import load_iris, make_classification, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import (accuracy_score, log_loss, mean_absolute_error, mean_squared_error,
                             precision_recall_fscore_support, r2_score, roc_auc_score)
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

from conftest import Server
from modelkit import approve, create_model, exporter, upload_ok

TOL = 1e-9


# ---- helpers -------------------------------------------------------------------------------

def doc_of(model, names):
    return json.dumps(exporter().export(model, feature_names=names)).encode()


def push_versions(srv, name, models, names):
    """Model name with one approved version per fitted estimator, in order."""
    create_model(srv, name)
    for i, m in enumerate(models, 1):
        v = upload_ok(srv, name, doc_of(m, names), "basalt_json")
        assert v["version"] == i
        approve(srv, name, i)


def put_endpoint(srv, name, spec):
    r = srv.put("/v1/endpoints/" + name, json=spec)
    assert r.status_code in (200, 201), r.text
    return r.json()


def predict_rows(srv, ep, X, names, batch=10):
    """Predicts every row of X through ep in requests of `batch` rows; returns one dict per
    row: id, output, variant, version."""
    out = []
    for i in range(0, len(X), batch):
        rows = [{n: float(v) for n, v in zip(names, row)} for row in X[i:i + batch]]
        r = srv.post("/v1/endpoints/%s/predict" % ep, json={"inputs": rows})
        assert r.status_code == 200, r.text[:500]
        j = r.json()
        for pid, p in zip(j["prediction_ids"], j["predictions"]):
            out.append({"id": pid, "output": p, "variant": j["variant"], "version": j["version"]})
    assert len(out) == len(X)
    return out


def feedback(srv, items, key=None):
    kw = {"key": key} if key else {}
    return srv.post("/v1/feedback", json={"items": items}, **kw)


def feedback_ok(srv, items):
    r = feedback(srv, items)
    assert r.status_code == 200, r.text[:500]
    j = r.json()
    assert j["rejected"] == 0 and j["accepted"] == len(items), r.text[:1000]
    return j


def report(srv, ep, what, **params):
    r = srv.get("/v1/endpoints/%s/%s" % (ep, what), params=params)
    assert r.status_code == 200, r.text[:500]
    return r.json()


def wait_for(fn, what, timeout=60):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError("%s: not within %d s (last: %r)" % (what, timeout, last))


def logged_now(srv, ep):
    """Every record of the tenant's predictions topic for endpoint ep, as the log has them."""
    out, off = [], 0
    while True:
        r = srv.get("/v1/topics/predictions/events", params={"from_offset": off, "limit": 1000})
        assert r.status_code == 200, r.text[:300]
        j = r.json()
        out += [it["event"] for it in j["items"] if it["event"].get("endpoint") == ep]
        if not j["items"]:
            return out
        off = j["next_offset"]


def logged(srv, ep, want):
    """The records of endpoint ep once the log holds `want` of them: a record reaches the
    log about 20 ms after its prediction, and the monitor's reports may count it sooner."""
    return wait_for(lambda: (lambda o: o if len(o) >= want else None)(logged_now(srv, ep)),
                    "%d records of %s in the log" % (want, ep))


def close(got, want, what):
    if want is None or (isinstance(want, float) and math.isnan(want)):
        assert got is None, (what, got)
        return
    assert got is not None and abs(got - want) <= TOL * max(1.0, abs(want)), (what, got, want)


def assert_error(r, status, code, field=None):
    assert r.status_code == status, (r.status_code, r.text[:300])
    e = r.json()["error"]
    assert e["code"] == code, e
    if field is not None:
        assert e.get("field") == field, e
    return e


def binary_data(seed, n=400, flip=0.15):
    X, y = make_classification(n_samples=n, n_features=4, n_informative=3, n_redundant=0,
                               random_state=seed)
    rng = np.random.default_rng(seed)
    truth = np.where(rng.random(n) < flip, 1 - y, y)  # the labels the "world" reports
    return X, y, truth


NAMES4 = ["f0", "f1", "f2", "f3"]


# ---- classification ------------------------------------------------------------------------

def test_binary_metrics_equal_sklearns(shared_server):
    srv = shared_server
    X, y, truth = binary_data(1)
    push_versions(srv, "fb-bin", [LogisticRegression().fit(X[:200], y[:200])], NAMES4)
    put_endpoint(srv, "fb-bin", {"model": "fb-bin", "routes": [{"version": 1}]})
    preds = predict_rows(srv, "fb-bin", X[200:], NAMES4)
    truth = truth[200:]
    # Feedback for most rows: labels as numbers and as strings (both match the class "1").
    items = []
    for i, p in enumerate(preds):
        if i % 7 == 3:
            continue
        lab = int(truth[i])
        items.append({"prediction_id": p["id"], "label": lab if i % 2 else str(lab)})
    j = feedback_ok(srv, items)
    assert {it["endpoint"] for it in j["items"]} == {"fb-bin"}
    fed = {it["prediction_id"]: str(it["label"]) for it in items}

    perf = report(srv, "fb-bin", "performance", window="1h", by="version")
    assert perf["endpoint"] == "fb-bin" and perf["window"] == "1h" and perf["by"] == "version"
    (row,) = perf["items"]
    assert row["version"] == 1 and row["shadow"] is False and row["task"] == "classification"
    assert row["requests"] == len(preds) and row["errors"] == 0 and row["error_rate"] == 0
    assert row["labelled"] == len(items)

    sub = [p for p in preds if p["id"] in fed]
    y_true = [fed[p["id"]] for p in sub]
    y_pred = [p["output"]["label"] for p in sub]
    proba = np.array([[p["output"]["probabilities"]["0"], p["output"]["probabilities"]["1"]]
                      for p in sub])
    close(row["accuracy"], accuracy_score(y_true, y_pred), "accuracy")
    pr, rc, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="binary",
                                                    pos_label="1")
    close(row["precision"], pr, "precision")
    close(row["recall"], rc, "recall")
    close(row["f1"], f1, "f1")
    close(row["log_loss"], log_loss(y_true, proba, labels=["0", "1"]), "log_loss")
    close(row["roc_auc"], roc_auc_score([int(t) for t in y_true], proba[:, 1]), "roc_auc")
    # mean_prediction: P(second class) over every row; latencies: numpy over the log
    all_p1 = [p["output"]["probabilities"]["1"] for p in preds]
    close(row["mean_prediction"], float(np.mean(all_p1)), "mean_prediction")
    recs = [r for r in logged(srv, "fb-bin", len(preds)) if not r["shadow"]]
    assert len(recs) == len(preds)
    lat = np.array([r["latency_ms"] for r in recs])
    close(row["latency_p50_ms"], float(np.quantile(lat, 0.5)), "p50")
    close(row["latency_p99_ms"], float(np.quantile(lat, 0.99)), "p99")
    # by=variant names the route's variant
    (vrow,) = report(srv, "fb-bin", "performance", by="variant")["items"]
    assert vrow["variant"] == "v1" and vrow["labelled"] == len(items)
    close(vrow["accuracy"], row["accuracy"], "by variant")


def test_multiclass_macro_metrics_and_last_feedback_wins(shared_server):
    srv = shared_server
    X, y = load_iris(return_X_y=True)
    names = ["sl", "sw", "pl", "pw"]
    rng = np.random.default_rng(5)
    idx = rng.permutation(len(X))
    X, y = X[idx], y[idx]
    push_versions(srv, "fb-iris", [LogisticRegression(max_iter=2000).fit(X[:40], y[:40])], names)
    put_endpoint(srv, "fb-iris", {"model": "fb-iris", "routes": [{"version": 1}]})
    preds = predict_rows(srv, "fb-iris", X[40:], names, batch=25)
    truth = y[40:].copy()
    noisy = rng.random(len(truth)) < 0.2
    truth[noisy] = rng.integers(0, 3, noisy.sum())
    # first a wrong label for every row, then the real one: the last feedback wins
    feedback_ok(srv, [{"prediction_id": p["id"], "label": "2"} for p in preds])
    feedback_ok(srv, [{"prediction_id": p["id"], "label": int(t)} for p, t in zip(preds, truth)])
    (row,) = report(srv, "fb-iris", "performance")["items"]
    y_true = [str(t) for t in truth]
    y_pred = [p["output"]["label"] for p in preds]
    labels = ["0", "1", "2"]
    proba = np.array([[p["output"]["probabilities"][c] for c in labels] for p in preds])
    assert row["labelled"] == len(preds)
    close(row["accuracy"], accuracy_score(y_true, y_pred), "accuracy")
    pr, rc, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="macro",
                                                    zero_division=0)
    close(row["precision"], pr, "macro precision")
    close(row["recall"], rc, "macro recall")
    close(row["f1"], f1, "macro f1")
    close(row["log_loss"], log_loss(y_true, proba, labels=labels), "log_loss")
    assert row["roc_auc"] is None and row["mean_prediction"] is None  # multiclass


def test_regression_metrics_equal_sklearns(shared_server):
    import xgboost as xgb
    from modelkit import xgb_bytes
    srv = shared_server
    X, y = make_regression(n_samples=300, n_features=3, noise=5.0, random_state=2)
    booster = xgb.train({"max_depth": 3, "eta": 0.3, "objective": "reg:squarederror"},
                        xgb.DMatrix(X[:150], label=y[:150], feature_names=["a", "b", "c"]), 20)
    create_model(srv, "fb-reg")
    upload_ok(srv, "fb-reg", xgb_bytes(booster), "xgboost_json")
    approve(srv, "fb-reg", 1)
    put_endpoint(srv, "fb-reg", {"model": "fb-reg", "routes": [{"version": 1}]})
    preds = predict_rows(srv, "fb-reg", X[150:], ["a", "b", "c"], batch=30)
    truth = y[150:]
    feedback_ok(srv, [{"prediction_id": p["id"], "value": float(t)} for p, t in zip(preds, truth)])
    (row,) = report(srv, "fb-reg", "performance")["items"]
    assert row["task"] == "regression" and row["labelled"] == len(preds)
    yp = np.array([p["output"] for p in preds])
    close(row["mae"], mean_absolute_error(truth, yp), "mae")
    close(row["rmse"], math.sqrt(mean_squared_error(truth, yp)), "rmse")
    close(row["r2"], r2_score(truth, yp), "r2")
    close(row["mean_prediction"], float(np.mean(yp)), "mean_prediction")
    assert "accuracy" not in row


# ---- the experiment --------------------------------------------------------------------------

def test_experiment_accuracy_equals_statsmodels(shared_server):
    srv = shared_server
    X, y, truth = binary_data(3, n=700, flip=0.1)
    good = LogisticRegression().fit(X[:200], y[:200])
    bad = LogisticRegression().fit(X[:200, :1], y[:200])  # one feature: worse
    bad_full = LogisticRegression().fit(X[:200], y[:200])
    bad_full.coef_ = np.hstack([bad.coef_, np.zeros((1, 3))])
    bad_full.intercept_ = bad.intercept_
    push_versions(srv, "fb-ab", [good, bad_full], NAMES4)
    put_endpoint(srv, "fb-ab", {"model": "fb-ab", "routes": [
        {"version": 1, "weight": 50, "name": "a"}, {"version": 2, "weight": 50, "name": "b"}]})
    preds = predict_rows(srv, "fb-ab", X[200:], NAMES4, batch=5)
    truth = truth[200:]
    feedback_ok(srv, [{"prediction_id": p["id"], "label": int(t)} for p, t in zip(preds, truth)])
    exp = report(srv, "fb-ab", "experiment", window="1h")
    assert exp["metric"] == "accuracy" and exp["test"] == "two_proportion_ztest"
    assert exp["control"] == "a" and [v["variant"] for v in exp["variants"]] == ["a", "b"]
    arms = {}
    for name in ("a", "b"):
        rows = [(p, t) for p, t in zip(preds, truth) if p["variant"] == name]
        x = sum(p["output"]["label"] == str(t) for p, t in rows)
        arms[name] = (x, len(rows), rows)
    (xa, na, ra), (xb, nb, rb) = arms["a"], arms["b"]
    assert na > 50 and nb > 50 and na + nb == len(preds)
    va, vb = exp["variants"]
    for v, (x, n, rows) in ((va, arms["a"]), (vb, arms["b"])):
        assert v["requests"] == n and v["labelled"] == n and v["metric"]["n"] == n
        assert v["metric"]["successes"] == x
        close(v["metric"]["value"], x / n, "rate")
        lo, hi = proportion_confint(x, n, alpha=0.05, method="normal")
        close(v["metric"]["ci_low"], lo, "ci low")
        close(v["metric"]["ci_high"], hi, "ci high")
        close(v["mean_prediction"],
              float(np.mean([p["output"]["probabilities"]["1"] for p, _ in rows])), "mean pred")
        lat = [r["latency_ms"] for r in logged(srv, "fb-ab", len(preds))
               if r["variant"] == v["variant"]]
        close(v["latency_p50_ms"], float(np.quantile(lat, 0.5)), "p50")
        close(v["latency_p99_ms"], float(np.quantile(lat, 0.99)), "p99")
    assert va["difference"] is None
    d = vb["difference"]
    z, p = proportions_ztest([xb, xa], [nb, na])
    close(d["statistic"], z, "z")
    close(d["p_value"], p, "p")
    pa, pb = xa / na, xb / nb
    se = math.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
    zc = sst.norm.ppf(0.975)
    close(d["diff"], pb - pa, "diff")
    close(d["ci_low"], pb - pa - zc * se, "diff ci low")
    close(d["ci_high"], pb - pa + zc * se, "diff ci high")
    assert d["significant"] == (p < 0.05)
    # samples per variant for an absolute effect of 0.03 around the control's rate
    exp = report(srv, "fb-ab", "experiment", mde="0.03")
    p2 = pa + 0.03
    pbar = (pa + p2) / 2
    s = (sst.norm.ppf(0.975) * math.sqrt(2 * pbar * (1 - pbar))
         + sst.norm.ppf(0.8) * math.sqrt(pa * (1 - pa) + p2 * (1 - p2)))
    need = math.ceil((s / 0.03) ** 2)
    assert exp["mde"] == 0.03 and exp["samples_needed_per_variant"] == need
    assert exp["variants"][0]["samples_remaining"] == max(0, need - na)
    assert "posterior" not in exp["variants"][0]  # weighted: no bandit


def welch(a, b):
    """scipy's Welch t-test of b against a, with df and the CI of mean(b) - mean(a)."""
    t, p = sst.ttest_ind(b, a, equal_var=False)
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    diff = np.mean(b) - np.mean(a)
    h = sst.t.ppf(0.975, df) * math.sqrt(va + vb)
    return t, p, df, diff, diff - h, diff + h


def test_experiment_mae_and_value_equal_scipys_welch(shared_server):
    srv = shared_server
    X, y = make_regression(n_samples=500, n_features=2, noise=10.0, random_state=4)
    push_versions(srv, "fb-abr", [LinearRegression().fit(X[:100], y[:100]),
                                  LinearRegression().fit(X[:100], y[:100] * 0.7)], ["a", "b"])
    put_endpoint(srv, "fb-abr", {"model": "fb-abr", "routes": [
        {"version": 1, "weight": 50}, {"version": 2, "weight": 50}]})
    preds = predict_rows(srv, "fb-abr", X[100:], ["a", "b"], batch=4)
    truth = y[100:]
    feedback_ok(srv, [{"prediction_id": p["id"], "value": float(t)} for p, t in zip(preds, truth)])
    exp = report(srv, "fb-abr", "experiment")
    assert exp["metric"] == "mae" and exp["test"] == "welch_ttest" and exp["control"] == "v1"
    err = {v: np.array([abs(p["output"] - t) for p, t in zip(preds, truth) if p["variant"] == v])
           for v in ("v1", "v2")}
    va, vb = exp["variants"]
    for v, e in ((va, err["v1"]), (vb, err["v2"])):
        close(v["metric"]["value"], float(np.mean(e)), "mae")
        close(v["metric"]["sd"], float(np.std(e, ddof=1)), "sd")
        lo, hi = sst.t.interval(0.95, len(e) - 1, loc=np.mean(e), scale=sst.sem(e))
        close(v["metric"]["ci_low"], lo, "ci low")
        close(v["metric"]["ci_high"], hi, "ci high")
    t, p, df, diff, lo, hi = welch(err["v1"], err["v2"])
    d = vb["difference"]
    close(d["statistic"], t, "t")
    close(d["p_value"], p, "p")
    close(d["df"], df, "df")
    close(d["diff"], diff, "diff")
    close(d["ci_low"], lo, "diff ci low")
    close(d["ci_high"], hi, "diff ci high")
    # default mde: a tenth of the control's sd
    sd = np.std(err["v1"], ddof=1)
    close(exp["mde"], 0.1 * sd, "default mde")
    need = math.ceil(2 * ((sst.norm.ppf(0.975) + sst.norm.ppf(0.8)) * sd / (0.1 * sd)) ** 2)
    assert exp["samples_needed_per_variant"] == need
    # metric=value: the feedback values themselves
    exp = report(srv, "fb-abr", "experiment", metric="value")
    vals = {v: np.array([t for p, t in zip(preds, truth) if p["variant"] == v])
            for v in ("v1", "v2")}
    t, p, df, diff, lo, hi = welch(vals["v1"], vals["v2"])
    d = exp["variants"][1]["difference"]
    close(exp["variants"][0]["metric"]["value"], float(np.mean(vals["v1"])), "value mean")
    close(d["statistic"], t, "t value")
    close(d["p_value"], p, "p value")


def test_thompson_posteriors_count_the_reward_label(shared_server):
    srv = shared_server
    X, y, truth = binary_data(6, n=300)
    m = LogisticRegression().fit(X, y)
    push_versions(srv, "fb-ts", [m, m], NAMES4)
    put_endpoint(srv, "fb-ts", {"model": "fb-ts", "routes": [{"version": 1, "weight": 50},
                                                             {"version": 2, "weight": 50}],
                                "policy": {"type": "thompson", "reward": {"label": "yes"}}})
    preds = predict_rows(srv, "fb-ts", X, NAMES4, batch=3)
    rng = np.random.default_rng(7)
    rew = {p["id"]: bool(rng.random() < (0.7 if p["variant"] == "v2" else 0.3)) for p in preds}
    feedback_ok(srv, [{"prediction_id": i, "label": "yes" if r else "no"} for i, r in rew.items()])
    exp = report(srv, "fb-ts", "experiment")
    for v in exp["variants"]:
        s = sum(rew[p["id"]] for p in preds if p["variant"] == v["variant"])
        f = sum(not rew[p["id"]] for p in preds if p["variant"] == v["variant"])
        post = v["posterior"]
        assert (post["successes"], post["failures"]) == (s, f), (v["variant"], post)
        assert post["alpha"] == 1 + s and post["beta"] == 1 + f
        close(post["mean"], (1 + s) / (2 + s + f), "posterior mean")


def test_bandit_shifts_traffic_to_the_better_arm(shared_server):
    """A simulated reward (v2 rewarded 90 % of the time, v1 10 %): once the arms hold the
    feedback (the endpoints' timer reads the monitor), Thompson sampling sends most traffic
    to v2. With Beta(1+s, 1+f) posteriors from >= 100 rewards (>= 5 on each arm), P(pick v1)
    is about 1 % or less, so the bound asserted (v2 > 80 % of 300 requests) practically never
    fails for a correct bandit, and fails for any split near 50/50."""
    srv = shared_server
    X, y, _ = binary_data(13, n=100)
    m = LogisticRegression().fit(X, y)
    push_versions(srv, "fb-band", [m, m], NAMES4)
    put_endpoint(srv, "fb-band", {"model": "fb-band", "routes": [{"version": 1, "weight": 50},
                                                                 {"version": 2, "weight": 50}],
                                  "policy": {"type": "thompson", "reward": {"label": 1}}})
    rng = np.random.default_rng(14)
    counts = {"v1": [0, 0], "v2": [0, 0]}
    # explore: rounds of feedback until each arm has some and there are 100 in all
    for _ in range(50):
        if min(sum(c) for c in counts.values()) >= 5 and sum(map(sum, counts.values())) >= 100:
            break
        preds = predict_rows(srv, "fb-band", X[:20], NAMES4, batch=1)
        items = []
        for p in preds:
            win = rng.random() < (0.9 if p["variant"] == "v2" else 0.1)
            counts[p["variant"]][0 if win else 1] += 1
            items.append({"prediction_id": p["id"], "label": 1 if win else 0})
        feedback_ok(srv, items)
    assert min(sum(c) for c in counts.values()) >= 5, counts

    def arms_current():
        text = srv.get("/metrics").text
        got = {}
        for v in ("v1", "v2"):
            for i, fam in enumerate(("basalt_endpoint_bandit_successes",
                                     "basalt_endpoint_bandit_failures")):
                line = '%s{tenant="default",endpoint="fb-band",variant="%s"} ' % (fam, v)
                vals = [l[len(line):] for l in text.splitlines() if l.startswith(line)]
                got.setdefault(v, [None, None])[i] = int(vals[0]) if vals else None
        return got == counts
    wait_for(arms_current, "the arms hold the monitor's reward counts")
    exp = report(srv, "fb-band", "experiment")
    for v in exp["variants"]:
        s, f = counts[v["variant"]]
        assert (v["posterior"]["alpha"], v["posterior"]["beta"]) == (1 + s, 1 + f)
    preds = predict_rows(srv, "fb-band", np.repeat(X[:1], 300, axis=0), NAMES4, batch=1)
    share = sum(p["variant"] == "v2" for p in preds) / len(preds)
    assert share > 0.8, (share, counts)


# ---- shadow ----------------------------------------------------------------------------------

def test_shadow_report_agreement_from_the_logged_records(shared_server):
    srv = shared_server
    X, y, _ = binary_data(8, n=400)
    push_versions(srv, "fb-sh", [LogisticRegression().fit(X[:100], y[:100]),
                                 LogisticRegression(C=0.01).fit(X[100:200, :], 1 - y[100:200])],
                  NAMES4)
    put_endpoint(srv, "fb-sh", {"model": "fb-sh", "routes": [{"version": 1}],
                                "shadow": [{"version": 2, "fraction": 1.0}]})
    preds = predict_rows(srv, "fb-sh", X[200:], NAMES4, batch=10)
    # the shadow runs happen after each response: wait until all are in the report
    def done():
        j = report(srv, "fb-sh", "shadow")
        return j if j["items"] and j["items"][0]["requests"] == len(preds) else None
    rep = wait_for(done, "every shadow run reported")
    (it,) = rep["items"]
    assert it["variant"] == "v2" and it["version"] == 2 and it["task"] == "classification"
    recs = logged(srv, "fb-sh", 2 * len(preds))
    prim = {r["prediction_id"]: r for r in recs if not r["shadow"]}
    shad = [r for r in recs if r["shadow"]]
    assert len(shad) == len(preds) and set(prim) == {p["id"] for p in preds}
    agree = np.mean([prim[s["prediction_id"]]["output"]["label"] == s["output"]["label"]
                     for s in shad])
    assert 0 < agree < 1  # the shadow disagrees sometimes: the test can fail
    assert it["paired"] == len(shad) and it["errors"] == 0
    close(it["agreement"], float(agree), "agreement")
    close(it["latency_ms"]["shadow"]["p50"],
          float(np.quantile([s["latency_ms"] for s in shad], 0.5)), "shadow p50")
    close(it["latency_ms"]["primary"]["p99"],
          float(np.quantile([prim[s["prediction_id"]]["latency_ms"] for s in shad], 0.99)),
          "primary p99")
    # the shadow version's own performance, from the routed rows' feedback
    feedback_ok(srv, [{"prediction_id": p["id"], "label": int(t)} for p, t in zip(preds, y[200:])])
    items = report(srv, "fb-sh", "performance")["items"]
    sh = [i for i in items if i["shadow"]]
    assert len(sh) == 1 and sh[0]["version"] == 2 and sh[0]["labelled"] == len(preds)
    truth = {p["id"]: str(t) for p, t in zip(preds, y[200:])}
    close(sh[0]["accuracy"],
          accuracy_score([truth[s["prediction_id"]] for s in shad],
                         [s["output"]["label"] for s in shad]), "shadow accuracy")


def test_shadow_report_regression_differences(shared_server):
    srv = shared_server
    X, y = make_regression(n_samples=200, n_features=2, noise=3.0, random_state=9)
    push_versions(srv, "fb-shr", [LinearRegression().fit(X, y), LinearRegression().fit(X, y * 1.1)],
                  ["a", "b"])
    put_endpoint(srv, "fb-shr", {"model": "fb-shr", "routes": [{"version": 1}],
                                 "shadow": [{"version": 2, "fraction": 1.0, "name": "next"}]})
    preds = predict_rows(srv, "fb-shr", X, ["a", "b"], batch=20)

    def done():
        j = report(srv, "fb-shr", "shadow", window="10m")
        return j if j["items"] and j["items"][0]["paired"] == len(preds) else None
    (it,) = wait_for(done, "every shadow run paired")["items"]
    recs = logged(srv, "fb-shr", 2 * len(preds))
    prim = {r["prediction_id"]: r["output"] for r in recs if not r["shadow"]}
    diffs = [abs(r["output"] - prim[r["prediction_id"]]) for r in recs if r["shadow"]]
    assert it["variant"] == "next" and it["task"] == "regression"
    close(it["mean_abs_diff"], float(np.mean(diffs)), "mean abs diff")
    close(it["max_abs_diff"], float(np.max(diffs)), "max abs diff")


# ---- feedback: per-item results, limits, errors -------------------------------------------------

@pytest.fixture(scope="module")
def small_ep(shared_server):
    srv = shared_server
    X, y, _ = binary_data(10, n=60)
    push_versions(srv, "fb-small", [LogisticRegression().fit(X, y)], NAMES4)
    put_endpoint(srv, "fb-small", {"model": "fb-small", "routes": [{"version": 1}]})
    return predict_rows(srv, "fb-small", X, NAMES4, batch=20)


def test_unknown_ids_and_bad_items_are_reported_per_item(shared_server, small_ep):
    srv = shared_server
    items = [{"prediction_id": small_ep[0]["id"], "label": 1},
             {"prediction_id": "01900000-0000-7000-8000-000000000000", "label": 1},
             {"label": 1},
             {"prediction_id": small_ep[1]["id"], "label": 1, "value": 2},
             {"prediction_id": small_ep[2]["id"], "label": None},
             {"prediction_id": small_ep[3]["id"], "label": 0, "time": "yesterday"},
             {"prediction_id": small_ep[4]["id"], "label": 0, "colour": "red"},
             "not an object",
             {"prediction_id": small_ep[5]["id"], "value": 0.5, "time": "2024-05-01T12:00:00Z"}]
    r = feedback(srv, items)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["accepted"] == 2 and j["rejected"] == 7
    res = j["items"]
    assert [x["index"] for x in res] == list(range(len(items)))
    assert res[0]["accepted"] is True and res[8]["accepted"] is True
    assert res[1]["error"]["code"] == "not_found" and res[1]["error"]["field"] == "prediction_id"
    assert res[1]["prediction_id"] == items[1]["prediction_id"]
    want = {2: "prediction_id", 3: "value", 4: "label", 5: "time", 6: "colour"}
    for i, field in want.items():
        assert res[i]["error"]["code"] == "invalid_input", res[i]
        assert res[i]["error"]["field"] == field, res[i]
    assert res[7]["error"]["code"] == "invalid_input" and res[7]["prediction_id"] is None
    # a single item is the same, with one result
    r = srv.post("/v1/feedback", json={"prediction_id": "no-such-id", "label": "x"})
    assert r.status_code == 200 and r.json()["rejected"] == 1
    assert r.json()["items"][0]["error"]["code"] == "not_found"
    r = srv.post("/v1/feedback", json={"prediction_id": small_ep[6]["id"], "label": "1"})
    assert r.status_code == 200 and r.json()["accepted"] == 1
    text = srv.get("/metrics").text
    assert 'basalt_feedback_rejected_total{tenant="default",reason="unknown_id"}' in text
    assert 'basalt_feedback_received_total{tenant="default",endpoint="fb-small"}' in text


def test_batches_over_ten_thousand_are_413_and_bad_bodies_400(shared_server, small_ep):
    srv = shared_server
    item = {"prediction_id": small_ep[0]["id"], "label": 1}
    assert_error(srv.post("/v1/feedback", json={"items": [item] * 10001}), 413,
                 "payload_too_large", "items")
    r = srv.post("/v1/feedback", json={"items": [item] * 10000})
    assert r.status_code == 200 and r.json()["accepted"] == 10000, r.text[:300]
    assert_error(srv.post("/v1/feedback", data=b"{\"items\": [", headers={
        "Content-Type": "application/json"}), 400, "malformed_json")
    assert_error(srv.post("/v1/feedback", json=[item]), 400, "invalid_input")
    assert_error(srv.post("/v1/feedback", json={"items": item}), 400, "invalid_input", "items")
    assert_error(srv.post("/v1/feedback", json={"items": []}), 400, "invalid_input", "items")
    assert_error(srv.post("/v1/feedback", json={"items": [item], "extra": 1}), 400,
                 "invalid_input", "extra")


def test_reports_404_400_and_roles(shared_server, small_ep):
    srv = shared_server
    for what in ("performance", "experiment", "shadow"):
        assert_error(srv.get("/v1/endpoints/nope/" + what), 404, "not_found", "name")
        assert_error(srv.get("/v1/endpoints/fb-small/%s?window=soon" % what), 400,
                     "invalid_input", "window")
    assert_error(srv.get("/v1/endpoints/fb-small/performance?by=model"), 400, "invalid_input", "by")
    assert_error(srv.get("/v1/endpoints/fb-small/experiment?metric=auc"), 400, "invalid_input",
                 "metric")
    assert_error(srv.get("/v1/endpoints/fb-small/experiment?mde=-1"), 400, "invalid_input", "mde")
    viewer = srv.create_key("viewer", name="fb-viewer")["key"]
    predictor = srv.create_key("predictor", name="fb-predictor")["key"]
    item = {"prediction_id": small_ep[0]["id"], "label": 1}
    assert feedback(srv, [item], key=viewer).status_code == 403
    assert feedback(srv, [item], key=predictor).status_code == 200
    assert srv.get("/v1/endpoints/fb-small/performance", key=viewer).status_code == 200
    # another tenant's endpoint does not exist for this caller, nor its predictions
    r = srv.post("/v1/tenants", json={"name": "fb-other"})
    assert r.status_code in (200, 201), r.text
    other = srv.create_key("developer", name="fb-other-dev", tenant="fb-other")["key"]
    assert srv.get("/v1/endpoints/fb-small/performance", key=other).status_code == 404
    j = feedback(srv, [item], key=other).json()
    assert j["rejected"] == 1 and j["items"][0]["error"]["code"] == "not_found"


def test_openapi_lists_the_routes(shared_server):
    doc = shared_server.get("/openapi.json").json()
    assert "post" in doc["paths"]["/v1/feedback"]
    for what in ("performance", "experiment", "shadow"):
        assert "get" in doc["paths"]["/v1/endpoints/{name}/" + what]


# ---- durability and replicas ------------------------------------------------------------------

def test_acknowledged_feedback_survives_kill9(start_server):
    srv = start_server()
    X, y, truth = binary_data(11, n=80)
    push_versions(srv, "fb-dur", [LogisticRegression().fit(X, y)], NAMES4)
    put_endpoint(srv, "fb-dur", {"model": "fb-dur", "routes": [{"version": 1}]})
    preds = predict_rows(srv, "fb-dur", X, NAMES4, batch=20)
    feedback_ok(srv, [{"prediction_id": p["id"], "label": int(t)} for p, t in zip(preds, truth)])
    srv.kill9()
    srv.restart()

    def counted():
        items = report(srv, "fb-dur", "performance")["items"]
        return items[0] if items and items[0]["labelled"] == len(preds) else None
    row = wait_for(counted, "the feedback joined again after the restart")
    close(row["accuracy"], accuracy_score([str(t) for t in truth],
                                          [p["output"]["label"] for p in preds]), "accuracy")


@pytest.mark.embedded  # starts its own PostgreSQL and nats-server (run once, in the embedded pass)
def test_feedback_through_a_second_replica_joins_a_prediction_of_the_first():
    from conftest import ROOT
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
        X, y, truth = binary_data(12, n=60)
        push_versions(a, "fb-rep", [LogisticRegression().fit(X, y)], NAMES4)
        put_endpoint(a, "fb-rep", {"model": "fb-rep", "routes": [{"version": 1}]})
        wait_for(lambda: b.get("/v1/endpoints/fb-rep").status_code == 200, "endpoint on b")
        preds = predict_rows(a, "fb-rep", X, NAMES4, batch=20)
        # b learns the ids from the shared stream: at once or after its second chance
        r = feedback(b, [{"prediction_id": p["id"], "label": int(t)} for p, t in zip(preds, truth)])
        assert r.status_code == 200, r.text[:300]
        assert r.json()["accepted"] == len(preds), r.text[:500]
        want = accuracy_score([str(t) for t in truth], [p["output"]["label"] for p in preds])
        for s in (a, b):
            def joined(s=s):
                items = report(s, "fb-rep", "performance")["items"]
                return items[0] if items and items[0]["labelled"] == len(preds) else None
            row = wait_for(joined, "the feedback joined on replica %s" % s.url)
            assert row["requests"] == len(preds)
            close(row["accuracy"], want, "accuracy on every replica")
    finally:
        for s in replicas:
            s.stop() if s.running() else None
            reports = s.sanitizer_reports()
            s.cleanup()
            assert not reports, reports[0]
        nats.close()
        pg.cleanup()
