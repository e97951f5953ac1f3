"""The client CLI against a real server: `basalt model push|ls|list|versions|approve|reject|
archive|alias` and `basalt predict REF JSON|@FILE|-`, with --url/--key or BASALT_URL /
BASALT_API_KEY.

Oracles: what the server's API says afterwards (GET /v1/models/{name}/versions/{v}, the
versions list, the files under artifacts/, predict over HTTP), XGBoost's Booster.predict on
breast_cancer rows and the formula of a hand-written linear model, hashlib for the sha256,
os.strerror for system errors, and the server's own error message (asked for directly over
HTTP) for what the CLI must relay on stderr.

Exit codes as src/cli/remote.c defines them: 0 success, 1 a failed call (HTTP error or no
connection), 2 a usage error or unreadable input, 3 an HTTP 404.
"""
import errno
import hashlib
import json
import os
import subprocess

import numpy as np
import pytest
import requests
import xgboost as xgb
from sklearn.datasets import load_breast_cancer

from conftest import BASALT_BIN, REQUEST_TIMEOUT, clean_env
from modelkit import (approve, artifact_files, assert_close, assert_error, create_model, linear_bytes,
                      predict_ok, proba_matrix, set_alias, upload, upload_ok, versions)

_UNSET = object()
WRONG_KEY = "bsk_00000000000000000000000000000000_" + "0" * 64
DOWN = "http://127.0.0.1:1"  # nothing listens on port 1


def cli(srv, *args, url=_UNSET, key=_UNSET, stdin=None):
    """Runs the binary with BASALT_URL / BASALT_API_KEY set to srv's URL and admin key
    (url/key replace them; None leaves the variable out). Returns CompletedProcess."""
    env = {}
    u = srv.url if url is _UNSET else url
    k = srv.admin_key if key is _UNSET else key
    if u is not None:
        env["BASALT_URL"] = u
    if k is not None:
        env["BASALT_API_KEY"] = k
    return subprocess.run([BASALT_BIN, *args], env=clean_env(env), input=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=2 * REQUEST_TIMEOUT)


def ok(cp):
    assert cp.returncode == 0, (cp.returncode, cp.stdout, cp.stderr)
    assert cp.stderr == "", cp.stderr
    return cp.stdout


def http_failure(method, path, status, message):
    """The stderr line of a call the server answered with an error."""
    return "basalt: %s %s failed with %d: %s\n" % (method, path, status, message)


def api_message(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    return r.json()["error"]["message"]


def connect_failure(port=1):
    return "basalt: cannot connect to 127.0.0.1:%d: %s\n" % (port, os.strerror(errno.ECONNREFUSED))


def version_doc(srv, name, v):
    r = srv.get("/v1/models/%s/versions/%d" % (name, v))
    assert r.status_code == 200, r.text
    return r.json()


def write(path, data):
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return str(path)


# ---- models and oracles -------------------------------------------------------------------

@pytest.fixture(scope="module")
def cancer():
    """breast_cancer as a float matrix, its feature names with '_' for ' ', and three
    XGBoost boosters (4, 8 and 12 rounds: different predictions)."""
    d = load_breast_cancer()
    X = np.asarray(d.data, dtype=np.float64)
    dm = xgb.DMatrix(X, label=d.target)
    params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "seed": 0,
              "nthread": 1}
    boosters = [xgb.train(params, dm, num_boost_round=n) for n in (4, 8, 12)]
    names = [n.replace(" ", "_") for n in d.feature_names]
    return X, names, list(d.target_names), boosters


def booster_p1(booster, X):
    """P(class 1) from XGBoost itself."""
    return booster.predict(xgb.DMatrix(X))


def lin(v):
    """The basalt linear model used as version v of the linear models here: y = c . x + b."""
    return (float(v), -2.5 * v), 10.0 * v


def lin_bytes(v, names=("a", "b")):
    c, b = lin(v)
    return linear_bytes(c, b, names)


def lin_oracle(v, rows):
    c, b = lin(v)
    return [c[0] * r[0] + c[1] * r[1] + b for r in rows]


LIN_ROWS = [(1.0, 2.0), (-3.5, 0.25), (0.0, 0.0), (1e3, -7.125)]


# ---- push ---------------------------------------------------------------------------------

def test_push_xgboost_with_metadata_run_and_schema(shared_server, cancer, tmp_path):
    srv = shared_server
    X, names, target_names, boosters = cancer
    booster = boosters[1]
    model_path = str(tmp_path / "cancer.json")
    booster.save_model(model_path)
    with open(model_path, "rb") as f:
        artifact = f.read()
    schema = write(tmp_path / "s.json", json.dumps({
        "input_schema": [{"name": n} for n in names],
        "output_schema": {"labels": target_names}}))
    r = srv.post("/v1/runs", json={"experiment": "cli", "name": "xgb-8"})
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    assert srv.get("/v1/models/cli-cancer").status_code == 404

    out = ok(cli(srv, "model", "push", model_path, "--name", "cli-cancer",
                 "--format", "xgboost_json", "--schema", schema,
                 "--metric", "auc=0.99", "--metric", "logloss=0.125",
                 "--param", "max_depth=3", "--param", "objective=binary:logistic",
                 "--tag", "demo", "--tag", "xgb", "--description", "breast cancer, 8 rounds",
                 "--run", run_id, "--dataset", "sklearn:breast_cancer",
                 "--source-commit", "abc123"))
    assert out == "pushed cli-cancer version 1 (pending), sha256 %s\n" % (
        hashlib.sha256(artifact).hexdigest())

    assert srv.get("/v1/models/cli-cancer").status_code == 200  # created by the push
    v = version_doc(srv, "cli-cancer", 1)
    assert v["status"] == "pending" and v["format"] == "xgboost_json"
    assert v["sha256"] == hashlib.sha256(artifact).hexdigest() and v["size"] == len(artifact)
    assert v["metrics"] == {"auc": 0.99, "logloss": 0.125}
    assert v["params"] == {"max_depth": 3, "objective": "binary:logistic"}
    assert v["tags"] == ["demo", "xgb"]
    assert v["description"] == "breast cancer, 8 rounds"
    assert v["lineage"] == {"run_id": run_id, "dataset": "sklearn:breast_cancer",
                            "source_commit": "abc123"}
    assert [f["name"] for f in v["signature"]["inputs"]] == names
    assert v["signature"]["outputs"]["labels"] == target_names

    # Predict by the new names (a pending version serves by explicit version).
    rows = [dict(zip(names, map(float, row))) for row in X]
    out = ok(cli(srv, "predict", "cli-cancer/versions/1",
                 "@" + write(tmp_path / "rows.json", json.dumps(rows))))
    j = json.loads(out)
    assert j["model"] == "cli-cancer" and j["version"] == 1
    p = booster_p1(booster, X)
    assert_close(proba_matrix(j["predictions"], target_names), np.column_stack([1 - p, p]),
                 "xgboost pushed with a schema")
    # The old names are gone.
    cp = cli(srv, "predict", "cli-cancer/versions/1",
             json.dumps({"f%d" % i: float(x) for i, x in enumerate(X[0])}))
    assert cp.returncode == 1 and cp.stdout == ""
    assert cp.stderr.startswith("basalt: POST /v1/models/cli-cancer/versions/1/predict "
                                "failed with 400: "), cp.stderr


def test_push_basalt_json_creates_model_then_version_2(shared_server, tmp_path):
    srv = shared_server
    assert srv.get("/v1/models/cli-lin").status_code == 404
    f1 = write(tmp_path / "v1.json", lin_bytes(1))
    out = ok(cli(srv, "model", "push", f1, "--name", "cli-lin"))  # format detected
    assert out == "pushed cli-lin version 1 (pending), sha256 %s\n" % (
        hashlib.sha256(lin_bytes(1)).hexdigest())
    assert srv.get("/v1/models/cli-lin").status_code == 200
    v1 = version_doc(srv, "cli-lin", 1)
    assert v1["format"] == "basalt_json" and v1["status"] == "pending"
    assert v1["metrics"] == {} and v1["params"] == {} and v1["tags"] == []
    assert v1["lineage"]["run_id"] is None

    # Second push: version 2; a schema file holding just the input list renames the inputs.
    f2 = write(tmp_path / "v2.json", lin_bytes(2))
    schema = write(tmp_path / "s.json", json.dumps([{"name": "height"},
                                                    {"name": "width", "min": -10}]))
    out = ok(cli(srv, "model", "push", f2, "--name", "cli-lin", "--format", "basalt_json",
                 "--schema", schema, "--metric", "rmse=2e-3", "--param", "lr=0.5",
                 "--param", "solver=lbfgs", "--param", "note=", "--tag", "t1",
                 "--description", "second"))
    assert out.startswith("pushed cli-lin version 2 (pending), sha256 "), out
    assert versions(srv, "cli-lin") == [2, 1]
    v2 = version_doc(srv, "cli-lin", 2)
    assert v2["format"] == "basalt_json"
    assert v2["metrics"] == {"rmse": 0.002}
    assert v2["params"] == {"lr": 0.5, "solver": "lbfgs", "note": ""}
    assert v2["tags"] == ["t1"] and v2["description"] == "second"
    sig = v2["signature"]["inputs"]
    assert [f["name"] for f in sig] == ["height", "width"] and sig[1]["min"] == -10

    rows = [{"height": a, "width": b} for a, b in LIN_ROWS]
    j = json.loads(ok(cli(srv, "predict", "cli-lin/versions/2", json.dumps(rows))))
    assert j["version"] == 2
    assert_close(j["predictions"], lin_oracle(2, LIN_ROWS), "linear v2 by renamed inputs")
    j = json.loads(ok(cli(srv, "predict", "cli-lin/versions/1",
                          json.dumps([{"a": a, "b": b} for a, b in LIN_ROWS]))))
    assert j["version"] == 1
    assert_close(j["predictions"], lin_oracle(1, LIN_ROWS), "linear v1")


def test_push_unknown_run_fails_and_stores_nothing(shared_server, tmp_path):
    srv = shared_server
    create_model(srv, "cli-run")
    upload_ok(srv, "cli-run", lin_bytes(1), "basalt_json")
    before = artifact_files(srv)
    # The server's message for the same upload, asked directly (it stores nothing either).
    want = api_message(upload(srv, "cli-run", lin_bytes(3), "basalt_json",
                              metadata={"run_id": "no-such-run"}), 400)
    assert "no-such-run" in want
    cp = cli(srv, "model", "push", write(tmp_path / "m.json", lin_bytes(3)), "--name", "cli-run",
             "--run", "no-such-run")
    assert cp.returncode == 1 and cp.stdout == ""
    assert cp.stderr == http_failure("POST", "/v1/models/cli-run/versions", 400, want)
    assert versions(srv, "cli-run") == [1]
    assert artifact_files(srv) == before


BROKEN = [
    # (file content, --format or None, what the loader's reason must mention)
    (lin_bytes(1)[:100], "basalt_json", "truncated"),
    (json.dumps({"basalt_model": 1, "inputs": [{"name": "a", "type": "float"}],
                 "estimator": {"type": "linear", "link": "identity", "coef": [[1.0, 2.0]],
                               "intercept": [0.0]},
                 "output": {"task": "regression", "n_outputs": 1}}).encode(),
     "basalt_json", "coef"),
    (json.dumps({"learner": {}, "version": [2, 0, 0]}).encode(), "xgboost_json",
     "learner_model_param"),
    (lin_bytes(1), "xgboost_json", "xgboost"),
    (b"\x00\x01 not a model at all", None, "format"),
]


@pytest.mark.parametrize("content,fmt,reason", BROKEN,
                         ids=["truncated", "coef-width", "xgb-no-params", "wrong-format",
                              "garbage"])
def test_push_broken_file_fails_with_the_loaders_reason(shared_server, tmp_path, content, fmt,
                                                        reason):
    srv = shared_server
    name = "cli-broken"
    if srv.get("/v1/models/" + name).status_code == 404:
        create_model(srv, name)
        upload_ok(srv, name, lin_bytes(1), "basalt_json")
    before_versions, before_files = versions(srv, name), artifact_files(srv)
    want = api_message(upload(srv, name, content, fmt), 400)
    assert reason in want, want
    path = write(tmp_path / "broken.json", content)
    cp = cli(srv, "model", "push", path, "--name", name, *(["--format", fmt] if fmt else []))
    assert cp.returncode == 1 and cp.stdout == ""
    # The CLI loads the file with the server's own loaders before sending anything.
    if fmt:
        assert cp.stderr == "basalt: %s: %s\n" % (path, want)
    else:
        assert cp.stderr == "basalt: %s: %s\n" % (path, want.replace("?format=", "--format "))
    assert versions(srv, name) == before_versions == [1]
    assert artifact_files(srv) == before_files
    # A push to a new name with a broken file does not leave an empty model behind.
    cp = cli(srv, "model", "push", path, "--name", "cli-never-created",
             *(["--format", fmt] if fmt else []))
    assert cp.returncode == 1
    assert_error(srv.get("/v1/models/cli-never-created"), 404)


def test_push_client_side_errors(shared_server, tmp_path):
    srv = shared_server
    create_model(srv, "cli-pusherr")
    good = write(tmp_path / "m.json", lin_bytes(1))
    missing = str(tmp_path / "missing.json")
    cp = cli(srv, "model", "push", missing, "--name", "cli-pusherr")
    assert cp.returncode == 1 and cp.stdout == ""
    assert cp.stderr == "basalt: cannot open %s: %s\n" % (missing, os.strerror(errno.ENOENT))
    cp = cli(srv, "model", "push", good, "--name", "cli-pusherr", "--metric", "acc=high")
    assert cp.returncode == 2 and cp.stdout == ""
    assert cp.stderr == "basalt: metric 'acc' must be a number\n"
    cp = cli(srv, "model", "push", good, "--name", "cli-pusherr", "--param", "novalue")
    assert cp.returncode == 2 and cp.stderr == "basalt: expected key=value, got 'novalue'\n"
    cp = cli(srv, "model", "push", good, "--name", "cli-pusherr", "--bogus", "x")
    assert cp.returncode == 2 and cp.stderr == "basalt: unknown option --bogus for model push\n"
    cp = cli(srv, "model", "push", good)  # no --name
    assert cp.returncode == 2 and cp.stdout == ""
    assert cp.stderr.startswith("usage: basalt model push FILE --name NAME"), cp.stderr
    bad_schema = write(tmp_path / "s.json", "{not json")
    cp = cli(srv, "model", "push", good, "--name", "cli-pusherr", "--schema", bad_schema)
    assert cp.returncode == 1 and cp.stderr == "basalt: %s is not valid JSON\n" % bad_schema
    assert versions(srv, "cli-pusherr") == []


# ---- ls, versions, review, aliases --------------------------------------------------------

def ls_table(out):
    """{name: (latest, {alias=version, …})} from `basalt model ls`."""
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "LATEST", "ALIASES"], lines[:1]
    table = {}
    for line in lines[1:]:
        t = line.split()
        table[t[0]] = (t[1], set(t[2:]))
    return table


def api_table(srv):
    r = srv.get("/v1/models?limit=1000")
    assert r.status_code == 200, r.text
    return {m["name"]: ("-" if m["latest_version"] is None else str(m["latest_version"]),
                        {"%s=%d" % kv for kv in m["aliases"].items()})
            for m in r.json()["items"]}


def test_ls_list_and_versions(shared_server, tmp_path):
    srv = shared_server
    create_model(srv, "cli-ls")
    for v in (1, 2):
        upload_ok(srv, "cli-ls", lin_bytes(v), "basalt_json")
    approve(srv, "cli-ls", 1)
    assert set_alias(srv, "cli-ls", "prod", 1).status_code == 200
    create_model(srv, "cli-ls-empty")
    out = ok(cli(srv, "model", "ls"))
    assert ok(cli(srv, "model", "list")) == out
    table = ls_table(out)
    assert table == api_table(srv)
    assert table["cli-ls"] == ("2", {"prod=1"}) and table["cli-ls-empty"] == ("-", set())

    j = json.loads(ok(cli(srv, "model", "versions", "cli-ls")))
    assert [(v["version"], v["status"]) for v in j["items"]] == [(2, "pending"), (1, "approved")]
    assert [v["version"] for v in j["items"]] == versions(srv, "cli-ls")

    want = api_message(srv.get("/v1/models/no-such-model/versions"), 404)
    cp = cli(srv, "model", "versions", "no-such-model")
    assert cp.returncode == 3 and cp.stdout == ""
    assert cp.stderr == http_failure("GET", "/v1/models/no-such-model/versions", 404, want)


def test_approve_reject_archive_alias(shared_server):
    srv = shared_server
    name = "cli-review"
    create_model(srv, name)
    for v in (1, 2, 3):
        upload_ok(srv, name, lin_bytes(v), "basalt_json")

    j = json.loads(ok(cli(srv, "model", "approve", name, "1", "--comment", "offline metrics ok")))
    assert j["version"] == 1 and j["status"] == "approved"
    v1 = version_doc(srv, name, 1)
    assert v1["status"] == "approved" and v1["review_comment"] == "offline metrics ok"
    assert v1["reviewed_at"] is not None

    ok(cli(srv, "model", "reject", name, "2"))
    v2 = version_doc(srv, name, 2)
    assert v2["status"] == "rejected" and v2["review_comment"] is None
    ok(cli(srv, "model", "approve", name, "3"))
    assert version_doc(srv, name, 3)["status"] == "approved"

    rows = [{"a": a, "b": b} for a, b in LIN_ROWS]
    for target in (1, 3):
        j = json.loads(ok(cli(srv, "model", "alias", name, "champion", str(target))))
        assert j["alias"] == "champion" and j["version"] == target
        j = predict_ok(srv, name + "@champion", {"inputs": rows}, len(rows))
        assert j["version"] == target
        assert_close(j["predictions"], lin_oracle(target, LIN_ROWS), "champion -> v%d" % target)

    ok(cli(srv, "model", "archive", name, "1"))
    assert version_doc(srv, name, 1)["status"] == "archived"

    # Refused transitions relay the server's 409.
    path = "/v1/models/%s/versions/3/archive" % name
    want = api_message(srv.post(path, json={}), 409)
    cp = cli(srv, "model", "archive", name, "3")  # still holds champion
    assert cp.returncode == 1 and cp.stdout == ""
    assert cp.stderr == http_failure("POST", path, 409, want)
    path = "/v1/models/%s/versions/2/approve" % name
    want = api_message(srv.post(path, json={}), 409)
    cp = cli(srv, "model", "approve", name, "2")  # rejected is final
    assert cp.returncode == 1 and cp.stderr == http_failure("POST", path, 409, want)
    # Unknown version: 404 -> exit 3.
    cp = cli(srv, "model", "approve", name, "99")
    assert cp.returncode == 3 and "failed with 404" in cp.stderr
    assert [version_doc(srv, name, v)["status"] for v in (1, 2, 3)] == [
        "archived", "rejected", "approved"]


def test_review_usage_errors_change_nothing(shared_server):
    srv = shared_server
    name = "cli-review-usage"
    create_model(srv, name)
    upload_ok(srv, name, lin_bytes(1), "basalt_json")
    # A misspelt option used to be ignored: the version was approved without the comment.
    for args in (["approve", name, "1", "--coment", "typo"],
                 ["approve", name, "1", "--comment"],           # no value
                 ["approve", name, "1", "extra", "words"],
                 ["approve", name, "0"], ["reject", name, "x1"], ["archive", name],
                 ["alias", name, "prod"], ["alias", name, "prod", "-1"],
                 ["versions"], ["frobnicate", name]):
        cp = cli(srv, "model", *args)
        assert cp.returncode == 2 and cp.stdout == "", (args, cp.returncode, cp.stdout)
        assert cp.stderr.startswith("usage:") and "basalt model approve" in cp.stderr, args
    v = version_doc(srv, name, 1)
    assert v["status"] == "pending" and v["review_comment"] is None


# ---- predict ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cx(shared_server, cancer):
    """Model cli-cx: v1 and v2 approved, v3 pending, alias stable -> v1; so the bare name
    (no champion alias) serves v2, name@stable v1 and name/versions/3 v3 (each a different
    booster)."""
    srv = shared_server
    X, names, target_names, boosters = cancer
    create_model(srv, "cli-cx")
    for i, b in enumerate(boosters, 1):
        path = os.path.join(srv.workdir, "cx%d.json" % i)
        b.save_model(path)
        with open(path, "rb") as f:
            upload_ok(srv, "cli-cx", f.read(), "xgboost_json")
    approve(srv, "cli-cx", 1)
    approve(srv, "cli-cx", 2)
    assert set_alias(srv, "cli-cx", "stable", 1).status_code == 200
    return "cli-cx"


REFS = [("cli-cx", 2), ("cli-cx@stable", 1), ("cli-cx/versions/3", 3)]


def named(X):
    return [{"f%d" % i: float(v) for i, v in enumerate(row)} for row in X]


FORMS = {
    # name: (rows used, how the argument is given, JSON text of the input)
    "inline-object": (slice(0, 1), "inline", lambda X: json.dumps(named(X)[0])),
    "inline-list": (slice(0, 25), "inline", lambda X: json.dumps(named(X))),
    "inline-instances": (slice(25, 50), "inline",
                         lambda X: json.dumps({"instances": X.tolist()})),
    "inline-inputs-body": (slice(50, 60), "inline", lambda X: json.dumps({"inputs": named(X)})),
    "file": (slice(None), "file", lambda X: json.dumps(named(X))),
    "stdin": (slice(None), "stdin", lambda X: json.dumps({"instances": X.tolist()})),
}


@pytest.mark.parametrize("form", list(FORMS))
def test_predict_input_forms_and_refs(shared_server, cancer, cx, tmp_path, form):
    srv = shared_server
    X, _, _, boosters = cancer
    rows_slice, how, text = FORMS[form]
    Xs = X[rows_slice]
    body = text(Xs)
    if how == "inline":
        arg, stdin = body, None
    elif how == "file":
        arg, stdin = "@" + write(tmp_path / "in.json", body), None
    else:
        arg, stdin = "-", body
    for ref, version in REFS:
        j = json.loads(ok(cli(srv, "predict", ref, arg, stdin=stdin)))
        assert j["model"] == cx and j["version"] == version, (ref, j["version"])
        assert len(j["predictions"]) == len(Xs) == len(j["prediction_ids"])
        p = booster_p1(boosters[version - 1], Xs)
        assert_close(proba_matrix(j["predictions"], ["0", "1"]), np.column_stack([1 - p, p]),
                     "%s %s" % (form, ref))


def test_predict_errors(shared_server, cx, tmp_path):
    srv = shared_server
    row = json.dumps({"f0": 1.0})  # 29 features short
    want = api_message(srv.post("/v1/models/cli-cx/predict", json={"inputs": {"f0": 1.0}}), 400)
    cp = cli(srv, "predict", "cli-cx", row)
    assert cp.returncode == 1 and cp.stdout == ""
    assert cp.stderr == http_failure("POST", "/v1/models/cli-cx/predict", 400, want)

    for ref in ("no-such-model", "cli-cx@nope", "cli-cx/versions/99"):
        path = "/v1/models/%s/predict" % ref
        want = api_message(srv.post(path, json={"inputs": {"f0": 1.0}}), 404)
        cp = cli(srv, "predict", ref, row)
        assert cp.returncode == 3 and cp.stdout == ""
        assert cp.stderr == http_failure("POST", path, 404, want)

    cp = cli(srv, "predict", "cli-cx", "{not json")
    assert cp.returncode == 2 and cp.stdout == ""
    assert cp.stderr == "basalt: the input is not valid JSON\n"
    cp = cli(srv, "predict", "cli-cx", "-", stdin="")
    assert cp.returncode == 2 and cp.stderr == "basalt: the input is not valid JSON\n"
    missing = str(tmp_path / "nope.json")
    cp = cli(srv, "predict", "cli-cx", "@" + missing)
    assert cp.returncode == 2 and cp.stdout == ""
    assert cp.stderr == "basalt: cannot open %s: %s\n" % (missing, os.strerror(errno.ENOENT))
    for args in ([], ["cli-cx"], ["cli-cx", row, "extra"]):
        cp = cli(srv, "predict", *args)
        assert cp.returncode == 2 and cp.stdout == ""
        assert cp.stderr.startswith("usage: basalt predict REF JSON|@FILE|-\n"), args


# ---- auth, connection, help ---------------------------------------------------------------

def test_wrong_key_is_reported_with_the_servers_message(shared_server, cx, tmp_path):
    srv = shared_server
    want = api_message(srv.post("/v1/models/cli-cx/predict", key=WRONG_KEY,
                                json={"inputs": {"f0": 1.0}}), 401)
    row = json.dumps(named(np.zeros((1, 30)))[0])
    cp = cli(srv, "predict", "cli-cx", row, key=WRONG_KEY)
    assert cp.returncode == 1 and cp.stdout == ""
    assert cp.stderr == http_failure("POST", "/v1/models/cli-cx/predict", 401, want)
    cp = cli(srv, "model", "ls", key=WRONG_KEY)
    assert cp.returncode == 1 and cp.stdout == ""
    assert cp.stderr == http_failure("GET", "/v1/models?limit=1000", 401, want)
    cp = cli(srv, "model", "push", write(tmp_path / "m.json", lin_bytes(1)), "--name",
             "cli-wrongkey", key=WRONG_KEY)
    assert cp.returncode == 1 and cp.stdout == ""
    assert cp.stderr == http_failure("POST", "/v1/models/cli-wrongkey/versions", 401, want)
    assert srv.get("/v1/models/cli-wrongkey").status_code == 404
    # No key at all: the server's 401 for a missing Authorization header.
    want = api_message(srv.get("/v1/models/cli-cx/versions", key=None), 401)
    cp = cli(srv, "model", "versions", "cli-cx", key=None)
    assert cp.returncode == 1 and cp.stdout == ""
    assert cp.stderr == http_failure("GET", "/v1/models/cli-cx/versions", 401, want)


def test_server_down_cannot_connect(shared_server, tmp_path):
    srv = shared_server
    with pytest.raises(requests.ConnectionError):  # the oracle: nothing listens there
        requests.get(DOWN + "/healthz", timeout=5)
    model = write(tmp_path / "m.json", lin_bytes(1))
    for args in (["predict", "--url", DOWN, "m", '{"a": 1}'],
                 ["model", "ls", "--url", DOWN],
                 ["model", "versions", "m", "--url", DOWN],
                 ["model", "approve", "m", "1", "--url", DOWN],
                 ["model", "alias", "m", "prod", "1", "--url", DOWN],
                 ["model", "push", model, "--name", "cli-down", "--url", DOWN]):
        cp = cli(srv, *args)
        assert cp.returncode == 1 and cp.stdout == "", (args, cp.returncode, cp.stdout)
        assert cp.stderr == connect_failure(), (args, cp.stderr)
    assert srv.get("/v1/models/cli-down").status_code == 404


def test_flags_override_env(shared_server, cx, tmp_path):
    srv = shared_server
    row = json.dumps(named(np.zeros((1, 30)))[0])
    # env points nowhere / at a wrong key; the flags win, wherever they stand.
    for args in (["predict", "--url", srv.url, "--key", srv.admin_key, "cli-cx", row],
                 ["predict", "cli-cx", row, "--key", srv.admin_key, "--url", srv.url],
                 ["predict", "cli-cx", "--url", srv.url, row, "--key", srv.admin_key]):
        j = json.loads(ok(cli(srv, *args, url=DOWN, key=WRONG_KEY)))
        assert j["version"] == 2
    out = ok(cli(srv, "model", "--url", srv.url, "--key", srv.admin_key, "ls",
                 url=DOWN, key=WRONG_KEY))
    assert "cli-cx" in ls_table(out)
    out = ok(cli(srv, "model", "push", write(tmp_path / "m.json", lin_bytes(1)), "--key",
                 srv.admin_key, "--name", "cli-flags", "--url", srv.url, url=DOWN, key=WRONG_KEY))
    assert out.startswith("pushed cli-flags version 1 (pending)")
    assert versions(srv, "cli-flags") == [1]
    # env right, one flag wrong: the flag still wins.
    cp = cli(srv, "predict", "cli-cx", row, "--key", WRONG_KEY)
    assert cp.returncode == 1 and "failed with 401" in cp.stderr
    cp = cli(srv, "model", "ls", "--url", DOWN)
    assert cp.returncode == 1 and cp.stderr == connect_failure()


def test_url_with_trailing_slash(shared_server, cx, tmp_path):
    """BASALT_URL=http://host:port/ (as copied from a browser) names the same server (was:
    every call went to //v1/… and failed with 404 'no route')."""
    srv = shared_server
    out = ok(cli(srv, "model", "ls", url=srv.url + "/"))
    assert "cli-cx" in ls_table(out)
    row = json.dumps(named(np.zeros((1, 30)))[0])
    j = json.loads(ok(cli(srv, "predict", "--url", srv.url + "//", "cli-cx@stable", row)))
    assert j["version"] == 1
    out = ok(cli(srv, "model", "push", write(tmp_path / "m.json", lin_bytes(1)), "--name",
                 "cli-slash", url=srv.url + "/"))
    assert out.startswith("pushed cli-slash version 1 (pending)")
    assert versions(srv, "cli-slash") == [1]


def test_help_and_usage(shared_server):
    srv = shared_server
    cp = cli(srv, "model")
    assert cp.returncode == 2 and cp.stdout == ""
    assert cp.stderr.startswith("usage:\n") and "basalt model push FILE --name N" in cp.stderr
    for flag in ("--help", "-h", "help"):
        cp = cli(srv, "model", flag)
        assert cp.returncode == 0 and cp.stderr == "", flag
        assert cp.stdout.startswith("usage:\n"), flag
        for cmd in ("model check FILE", "model push FILE", "model ls", "model versions NAME",
                    "model approve|reject NAME V [--comment C]", "model archive NAME V",
                    "model alias NAME ALIAS V", "--url URL --key KEY"):
            assert cmd in cp.stdout, (flag, cmd)
    for flag in ("--help", "-h"):
        cp = cli(srv, "predict", flag)
        assert cp.returncode == 0 and cp.stderr == "", flag
        assert cp.stdout.startswith("usage: basalt predict REF JSON|@FILE|-\n")
        assert "name@alias" in cp.stdout and "name/versions/N" in cp.stdout


def test_pull_writes_the_uploaded_bytes(shared_server, tmp_path):
    import hashlib
    srv = shared_server
    create_model(srv, "cli-pull")
    raw = b'{"basalt_model": 1,\n  ' + lin_bytes(2)[len(b'{"basalt_model": 1, '):]  # odd spacing kept
    v = upload_ok(srv, "cli-pull", raw, "basalt_json")
    out = tmp_path / "pulled.json"
    cp = cli(srv, "model", "pull", "cli-pull", str(v["version"]), "-o", str(out))
    assert cp.returncode == 0 and cp.stdout == "", cp.stderr
    assert out.read_bytes() == raw
    assert hashlib.sha256(out.read_bytes()).hexdigest() == v["sha256"]
    cp = subprocess.run([BASALT_BIN, "model", "pull", "cli-pull", "1"],
                        env=clean_env({"BASALT_URL": srv.url, "BASALT_API_KEY": srv.admin_key}),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert cp.returncode == 0 and cp.stdout == raw  # bytes, to standard output
    want = api_message(srv.get("/v1/models/cli-pull/versions/7/artifact"), 404)
    cp = cli(srv, "model", "pull", "cli-pull", "7", "-o", str(tmp_path / "none.json"))
    assert cp.returncode == 3
    assert cp.stderr == http_failure("GET", "/v1/models/cli-pull/versions/7/artifact", 404, want)
    assert not (tmp_path / "none.json").exists()


def test_client_flags_before_the_command(shared_server):
    """`basalt --url U --key K model ls` works like the flags given after `model ls`."""
    srv = shared_server
    out = ok(cli(srv, "--url", srv.url, "--key", srv.admin_key, "model", "ls", url=None, key=None))
    assert ls_table(out) == api_table(srv)
    cp = cli(srv, "--url", DOWN, "model", "ls")
    assert cp.returncode == 1 and "cannot connect to 127.0.0.1:1" in cp.stderr
    cp = cli(srv, "--key", WRONG_KEY, "model", "ls")
    assert cp.returncode == 1 and "401" in cp.stderr
