"""Helpers shared by test_registry.py, test_predict.py and test_kserve.py: registry calls,
model artifacts built by XGBoost / tools/export_sklearn.py or written by hand, and the
oracles they are compared with. Not a test module (no test_ prefix)."""
import importlib.util
import json
import os
import re
import sqlite3
import tempfile

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXPORTER = os.path.join(ROOT, "tools", "export_sklearn.py")
TOL = 1e-5
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

_DEFAULT = object()


def _kw(key):
    """Passes key on only when the caller gave one (the Server's own default is the admin)."""
    return {} if key is _DEFAULT else {"key": key}


def exporter():
    """tools/export_sklearn.py imported as a module (export(), to_json())."""
    spec = importlib.util.spec_from_file_location("export_sklearn", EXPORTER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def xgb_bytes(booster):
    """XGBoost JSON as Booster.save_model writes it."""
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "model.json")
        booster.save_model(p)
        with open(p, "rb") as f:
            return f.read()


def linear_doc(coef, intercept, names=("a", "b")):
    """A basalt linear regression y = coef . x + intercept on float inputs `names`."""
    return {"basalt_model": 1,
            "inputs": [{"name": n, "type": "float"} for n in names],
            "estimator": {"type": "linear", "link": "identity", "coef": [list(coef)],
                          "intercept": [intercept]},
            "output": {"task": "regression", "n_outputs": 1}}


def linear_bytes(coef, intercept, names=("a", "b")):
    return json.dumps(linear_doc(coef, intercept, names)).encode()


# ---- error envelope -----------------------------------------------------------------------

def is_oip_path(r):
    """Whether r answers a path of the Open Inference Protocol (/v2, /v2/...)."""
    path = r.request.path_url.split("?")[0]
    return path == "/v2" or path.startswith("/v2/")


def assert_oip_error(r, status, mentions=None):
    """r is an Open Inference Protocol error: exactly {"error": "<message>"} with `status`,
    the request id only in the X-Request-Id header. Returns the message."""
    assert r.status_code == status, "want %d, got %d: %s" % (status, r.status_code, r.text[:500])
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    assert r.headers.get("X-Request-Id"), r.headers
    if mentions is not None:
        assert mentions in body["error"], body
    return body["error"]


def assert_error(r, status, field=_DEFAULT, code=None, mentions=None):
    """r is the error envelope with `status`; field (when given) must equal error.field,
    mentions (a string) must appear in error.message. On /v2 paths the envelope is the Open
    Inference Protocol's {"error": "<message>"}, which has no code or field: there the field,
    when given, must be named in the message, and code is not checked."""
    if is_oip_path(r):
        msg = assert_oip_error(r, status, mentions)
        if field is not _DEFAULT and field:
            assert field in msg, (field, msg)
        return {"message": msg}
    assert r.status_code == status, "want %d, got %d: %s" % (status, r.status_code, r.text[:500])
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    body = r.json()
    assert set(body) >= {"error", "request_id"}, body
    e = body["error"]
    assert isinstance(e.get("code"), str) and e["code"], body
    assert isinstance(e.get("message"), str) and e["message"], body
    assert r.headers.get("X-Request-Id") == body["request_id"]
    if code is not None:
        assert e["code"] == code, body
    if field is not _DEFAULT:
        assert e.get("field") == field, body
    if mentions is not None:
        assert mentions in e["message"], body
    return e


# ---- registry calls -----------------------------------------------------------------------

def create_model(srv, name, key=_DEFAULT, **fields):
    body = {"name": name}
    body.update(fields)
    r = srv.post("/v1/models", **_kw(key), json=body)
    assert r.status_code == 201, r.text
    return r.json()


def upload(srv, name, artifact, fmt=None, metadata=None, multipart=False, key=_DEFAULT):
    """POST /v1/models/{name}/versions; returns the response."""
    if multipart:
        files = {"artifact": ("model.json", artifact, "application/octet-stream")}
        if metadata is not None:
            files["metadata"] = ("metadata.json", json.dumps(metadata), "application/json")
        q = "?format=" + fmt if fmt else ""
        return srv.post("/v1/models/%s/versions%s" % (name, q), **_kw(key), files=files)
    params = {}
    if fmt:
        params["format"] = fmt
    if metadata is not None:
        params["metadata"] = json.dumps(metadata)
    return srv.post("/v1/models/%s/versions" % name, **_kw(key), params=params, data=artifact,
                    headers={"Content-Type": "application/octet-stream"})


def upload_ok(srv, name, artifact, fmt=None, metadata=None, multipart=False, key=_DEFAULT):
    r = upload(srv, name, artifact, fmt, metadata, multipart, key)
    assert r.status_code == 201, r.text
    v = r.json()
    assert v["status"] == "pending" and v["model"] == name
    return v


def review(srv, name, version, decision="approve", key=_DEFAULT, comment=None):
    body = {} if comment is None else {"comment": comment}
    return srv.post("/v1/models/%s/versions/%d/%s" % (name, version, decision), **_kw(key), json=body)


def approve(srv, name, version, key=_DEFAULT):
    r = review(srv, name, version, "approve", key)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved"
    return r.json()


def set_alias(srv, name, alias, version, key=_DEFAULT):
    return srv.put("/v1/models/%s/aliases/%s" % (name, alias), **_kw(key), json={"version": version})


def publish(srv, name, artifact, fmt=None, metadata=None, **create):
    """Creates the model, uploads artifact as version 1 and approves it; returns the version."""
    create_model(srv, name, **create)
    v = upload_ok(srv, name, artifact, fmt, metadata)
    approve(srv, name, v["version"])
    return v


def versions(srv, name, key=_DEFAULT):
    """All version numbers of a model (following pagination)."""
    out, cursor = [], None
    while True:
        q = "?limit=1000" + ("&cursor=" + cursor if cursor else "")
        r = srv.get("/v1/models/%s/versions%s" % (name, q), **_kw(key))
        assert r.status_code == 200, r.text
        j = r.json()
        out += [v["version"] for v in j["items"]]
        cursor = j["next_cursor"]
        if not cursor:
            return out


def artifact_files(srv):
    """Paths of every file under the data directory's artifacts/ folder."""
    found = []
    for d, _, files in os.walk(os.path.join(srv.data_dir, "artifacts")):
        found += [os.path.join(d, f) for f in files]
    return sorted(found)


def stored_blob(srv, sha):
    """The metadata store's record of blob sha (artifact_store = metadata), read from the
    server's SQLite file: ({size, chunks, complete} or None, [chunk bytes by seq])."""
    con = sqlite3.connect(os.path.join(srv.data_dir, "basalt.db"), timeout=30)
    try:
        row = con.execute("SELECT size, chunks, complete FROM blobs WHERE sha256 = ?",
                          (sha,)).fetchone()
        chunks = [bytes(d) for (d,) in con.execute(
            "SELECT data FROM blob_chunks WHERE sha256 = ? ORDER BY seq", (sha,))]
    finally:
        con.close()
    rec = dict(zip(("size", "chunks", "complete"), row)) if row else None
    return rec, chunks


def damage_stored_blob(srv, sha, seq=0, offset=5):
    """Flips one byte of chunk seq of blob sha in the server's metadata store."""
    con = sqlite3.connect(os.path.join(srv.data_dir, "basalt.db"), timeout=30)
    try:
        (data,) = con.execute("SELECT data FROM blob_chunks WHERE sha256 = ? AND seq = ?",
                              (sha, seq)).fetchone()
        data = bytearray(data)
        data[offset] ^= 0x01
        con.execute("UPDATE blob_chunks SET data = ? WHERE sha256 = ? AND seq = ?",
                    (bytes(data), sha, seq))
        con.commit()
    finally:
        con.close()


def predict(srv, ref, body, key=_DEFAULT, version=None):
    path = ("/v1/models/%s/versions/%d/predict" % (ref, version) if version
            else "/v1/models/%s/predict" % ref)
    return srv.post(path, **_kw(key), json=body)


def predict_ok(srv, ref, body, n, key=_DEFAULT, version=None):
    r = predict(srv, ref, body, key, version)
    assert r.status_code == 200, r.text[:1000]
    j = r.json()
    assert len(j["predictions"]) == n, (len(j["predictions"]), n)
    ids = j["prediction_ids"]
    assert len(ids) == n and len(set(ids)) == n
    assert all(UUID_RE.match(i) for i in ids), ids[:3]
    return j


# ---- rows and comparison ------------------------------------------------------------------

def _py(v):
    if v is None:
        return None
    if isinstance(v, str):
        return v
    f = float(v)
    return None if np.isnan(f) else f


def named_rows(df):
    """[{column: value or None}] from a DataFrame; NaN becomes JSON null."""
    cols = list(df.columns)
    return [{c: _py(v) for c, v in zip(cols, row)} for row in df.itertuples(index=False)]


def positional_rows(df, order):
    return [[_py(v) for v in row] for row in df[list(order)].itertuples(index=False)]


def proba_matrix(preds, labels):
    """Probabilities of classification predictions as an (N, K) array in `labels` order;
    checks every prediction names exactly these labels and its label is its argmax."""
    out = np.empty((len(preds), len(labels)))
    for i, p in enumerate(preds):
        assert set(p["probabilities"]) == set(labels), p
        out[i] = [p["probabilities"][l] for l in labels]
        assert p["label"] == labels[int(np.argmax(out[i]))], p
    return out


def assert_close(got, want, what=""):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    diff = float(np.max(np.abs(got - want))) if got.size else 0.0
    assert diff <= TOL, "%s: max abs diff %g over %d rows" % (what, diff, len(want))
    if want.ndim == 2 and want.shape[1] > 1:
        bad = np.nonzero(np.argmax(got, axis=1) != np.argmax(want, axis=1))[0]
        assert not len(bad), "%s: argmax differs on rows %s" % (what, bad[:10])


def with_nans(df, frac=0.1, seed=0, columns=None):
    """A copy of df with about frac of the cells of `columns` (default: all) set to NaN."""
    rng = np.random.default_rng(seed)
    out = df.copy()
    cols = list(columns if columns is not None else df.columns)
    mask = rng.random((len(df), len(cols))) < frac
    for j, c in enumerate(cols):
        out[c] = out[c].astype(object if out[c].dtype == object else np.float64)
        out.loc[mask[:, j], c] = np.nan
    return out


# A basalt model with a float and a one-hot category input: y = 2x + 0.5 + (1|10|100 by city).
CITY_DOC = {
    "basalt_model": 1,
    "inputs": [{"name": "x", "type": "float"},
               {"name": "city", "type": "category", "categories": ["berlin", "paris", "rome"]}],
    "preprocess": [{"columns": ["x"]}, {"columns": ["city"], "steps": [{"op": "one_hot"}]}],
    "estimator": {"type": "linear", "link": "identity", "coef": [[2.0, 1.0, 10.0, 100.0]],
                  "intercept": [0.5]},
    "output": {"task": "regression"},
}
