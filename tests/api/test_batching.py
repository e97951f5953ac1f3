"""Dynamic batching: requests for an MLP (or any model whose `batching` setting turns
it on) are queued, run as one batch and answered individually. Checked against
scikit-learn on every row while many clients send at once, plus the per-model
settings, the batch counters in /metrics and that one bad request in a batch does
not fail the others."""
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelkit import (assert_close, assert_error, create_model, exporter, linear_bytes,
                      named_rows, predict, proba_matrix, upload_ok, approve)


@pytest.fixture(scope="module")
def mlp():
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X.columns = ["f%d" % i for i in range(X.shape[1])]
    m = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(16,), max_iter=400,
                                                      random_state=0)).fit(X, y)
    doc = exporter().to_json(m)
    return X, m, doc.encode() if isinstance(doc, str) else doc


def publish_with(srv, name, artifact, batching):
    create_model(srv, name, batching=batching)
    v = upload_ok(srv, name, artifact, "basalt_json")
    approve(srv, name, v["version"])


def concurrent_predict(srv, name, rows, workers=8):
    def one(row):
        r = predict(srv, name, {"inputs": row})
        assert r.status_code == 200, r.text
        return r.json()["predictions"][0]
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(one, rows))


def batch_counters(srv, name):
    m = srv.metrics()
    labels = {"tenant": "default", "model": name, "version": "1"}
    return (m.get("basalt_prediction_batches_total", 0, **labels),
            m.get("basalt_prediction_batched_rows_total", 0, **labels))


def test_mlp_batched_matches_sklearn_under_concurrency(server, mlp):
    X, m, artifact = mlp
    publish_with(server, "mlp", artifact, {"max_batch_size": 8, "max_queue_delay_us": 2000})
    rows = named_rows(X.iloc[:240])
    preds = concurrent_predict(server, "mlp", rows)
    assert_close(proba_matrix(preds, ["0", "1"]), m.predict_proba(X.iloc[:240]), "batched mlp")
    batches, batched_rows = batch_counters(server, "mlp")
    assert batched_rows == 240  # every request went through the batcher
    assert 1 <= batches <= 240
    # a multi-row request is one job of the batch and keeps its order
    r = predict(server, "mlp", {"inputs": named_rows(X.iloc[240:260])})
    assert r.status_code == 200, r.text
    assert_close(proba_matrix(r.json()["predictions"], ["0", "1"]),
                 m.predict_proba(X.iloc[240:260]), "multi-row job")


def test_batching_can_be_turned_off_and_on_per_model(server, mlp):
    X, m, artifact = mlp
    publish_with(server, "mlp", artifact, {"enabled": False})
    preds = concurrent_predict(server, "mlp", named_rows(X.iloc[:40]), workers=4)
    assert_close(proba_matrix(preds, ["0", "1"]), m.predict_proba(X.iloc[:40]), "inline mlp")
    assert batch_counters(server, "mlp") == (0, 0)
    r = server.patch("/v1/models/mlp", json={"batching": {"enabled": True, "max_batch_size": 4}})
    assert r.status_code == 200, r.text
    assert r.json()["batching"] == {"enabled": True, "max_batch_size": 4}
    preds = concurrent_predict(server, "mlp", named_rows(X.iloc[:40]), workers=4)
    assert_close(proba_matrix(preds, ["0", "1"]), m.predict_proba(X.iloc[:40]), "re-enabled")
    assert batch_counters(server, "mlp")[1] == 40


@pytest.mark.parametrize("batching,field_text", [
    ({"max_batch_size": 0}, "max_batch_size"),
    ({"max_queue_delay_us": -1}, "max_queue_delay_us"),
    ({"enabled": "yes"}, "enabled"),
    ({"size": 3}, "size"),
    ([1, 2], "batching"),
])
def test_bad_batching_settings_are_400(server, batching, field_text):
    r = server.post("/v1/models", json={"name": "m", "batching": batching})
    assert_error(r, 400, field="batching", mentions=field_text)
    assert server.get("/v1/models/m").status_code == 404


def test_bad_request_in_a_batch_fails_alone(server):
    """A linear model with batching on: rows that overflow to inf fail their own request
    (400) while the requests batched with them succeed with the right values."""
    publish_with(server, "lin", linear_bytes([3.0, 5.0], 1.0),
                 {"enabled": True, "max_batch_size": 64, "max_queue_delay_us": 5000})
    good = [{"a": float(i), "b": float(-i) / 2} for i in range(60)]
    bad = {"a": 1e308, "b": 1e308}
    bodies = good[:30] + [bad] + good[30:]

    def one(row):
        return predict(server, "lin", {"inputs": row})
    with ThreadPoolExecutor(16) as ex:
        resps = list(ex.map(one, bodies))
    for row, r in zip(bodies, resps):
        if row is bad:
            assert_error(r, 400)
        else:
            assert r.status_code == 200, r.text
            assert r.json()["predictions"][0] == pytest.approx(3 * row["a"] + 5 * row["b"] + 1,
                                                               abs=1e-9)
    assert batch_counters(server, "lin")[1] == len(bodies)


def test_deferred_responses_with_connection_churn(server, mlp):
    """Regression: with h2o loops created on the main thread, deferred (batched) responses
    on fresh connections hit a heap-use-after-free in h2o's socket buffers about one run
    in five under AddressSanitizer (the fixture fails the test on any sanitizer report).
    Every request here opens its own connection."""
    import requests
    X, m, artifact = mlp
    publish_with(server, "mlp", artifact, {"max_batch_size": 4, "max_queue_delay_us": 500})
    rows = named_rows(X.iloc[:300])

    def one(row):
        r = requests.post(server.url + "/v1/models/mlp/predict", json={"inputs": row},
                          headers={"Authorization": "Bearer " + server.admin_key,
                                   "Connection": "close"}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["predictions"][0]
    with ThreadPoolExecutor(16) as ex:
        preds = list(ex.map(one, rows))
    assert_close(proba_matrix(preds, ["0", "1"]), m.predict_proba(X.iloc[:300]), "churn")
