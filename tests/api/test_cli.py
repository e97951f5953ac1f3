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
import re
import subprocess
import time

import numpy as np
import pytest
import requests
import xgboost as xgb
from sklearn.datasets import load_breast_cancer

from conftest import BASALT_BIN, REQUEST_TIMEOUT, START_TIMEOUT, clean_env
from modelkit import (approve, artifact_files, assert_close, assert_error, create_model, linear_bytes,
                      predict_ok, proba_matrix, set_alias, upload, upload_ok, versions, xgb_bytes,
                      UUID_RE)

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
    out = ok(cli(srv, "predict", "--json", "cli-cancer/versions/1",
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
    j = json.loads(ok(cli(srv, "--json", "predict", "cli-lin/versions/2", json.dumps(rows))))
    assert j["version"] == 2
    assert_close(j["predictions"], lin_oracle(2, LIN_ROWS), "linear v2 by renamed inputs")
    j = json.loads(ok(cli(srv, "--json", "predict", "cli-lin/versions/1",
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

    j = json.loads(ok(cli(srv, "--json", "model", "versions", "cli-ls")))
    assert [(v["version"], v["status"]) for v in j["items"]] == [(2, "pending"), (1, "approved")]
    assert [v["version"] for v in j["items"]] == versions(srv, "cli-ls")

    want = api_message(srv.get("/v1/models/no-such-model/versions"), 404)
    cp = cli(srv, "model", "versions", "no-such-model")
    assert cp.returncode == 3 and cp.stdout == ""
    assert cp.stderr == http_failure("GET", "/v1/models/no-such-model/versions?limit=1000", 404, want)


def test_approve_reject_archive_alias(shared_server):
    srv = shared_server
    name = "cli-review"
    create_model(srv, name)
    for v in (1, 2, 3):
        upload_ok(srv, name, lin_bytes(v), "basalt_json")

    j = json.loads(ok(cli(srv, "--json", "model", "approve", name, "1", "--comment", "offline metrics ok")))
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
        j = json.loads(ok(cli(srv, "--json", "model", "alias", name, "champion", str(target))))
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
    # Each usage error prints that command's usage (an unknown command: the group's).
    for args, usage in ((["approve", name, "1", "--coment", "typo"], "model approve NAME V"),
                        (["approve", name, "1", "--comment"], "model approve NAME V"),  # no value
                        (["approve", name, "1", "extra", "words"], "model approve NAME V"),
                        (["approve", name, "0"], "model approve NAME V"),
                        (["reject", name, "x1"], "model reject NAME V"),
                        (["archive", name], "model archive NAME V"),
                        (["alias", name, "prod"], "model alias NAME ALIAS V"),
                        (["alias", name, "prod", "-1"], "model alias NAME ALIAS V"),
                        (["versions"], "model versions NAME"),
                        (["ls", "extra"], "model ls"),
                        (["frobnicate", name], "model approve NAME V")):
        cp = cli(srv, "model", *args)
        assert cp.returncode == 2 and cp.stdout == "", (args, cp.returncode, cp.stdout)
        if args[0] == "frobnicate":
            assert cp.stderr.startswith("basalt: unknown command 'model frobnicate'"), cp.stderr
        else:
            assert cp.stderr.startswith("usage: basalt " + usage), (args, cp.stderr)
        assert "basalt " + usage in cp.stderr, args
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
        j = json.loads(ok(cli(srv, "--json", "predict", ref, arg, stdin=stdin)))
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
        assert cp.stderr.startswith("usage: basalt predict REF JSON|@FILE|- [--json]\n"), args


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
    assert cp.stderr == http_failure("GET", "/v1/models/cli-cx/versions?limit=1000", 401, want)


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
        j = json.loads(ok(cli(srv, "--json", *args, url=DOWN, key=WRONG_KEY)))
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
    j = json.loads(ok(cli(srv, "--json", "predict", "--url", srv.url + "//", "cli-cx@stable", row)))
    assert j["version"] == 1
    out = ok(cli(srv, "model", "push", write(tmp_path / "m.json", lin_bytes(1)), "--name",
                 "cli-slash", url=srv.url + "/"))
    assert out.startswith("pushed cli-slash version 1 (pending)")
    assert versions(srv, "cli-slash") == [1]


def test_help_and_usage(shared_server):
    srv = shared_server
    cp = cli(srv, "model")
    assert cp.returncode == 2 and cp.stdout == ""
    assert cp.stderr.startswith("usage:\n") and "basalt model push FILE --name NAME" in cp.stderr
    for flag in ("--help", "-h", "help"):
        cp = cli(srv, "model", flag)
        assert cp.returncode == 0 and cp.stderr == "", flag
        assert cp.stdout.startswith("usage:\n"), flag
        for cmd in ("model check FILE", "model push FILE", "model ls", "model versions NAME",
                    "model approve NAME V [--comment C]", "model reject NAME V [--comment C]",
                    "model archive NAME V", "model alias NAME ALIAS V", "model pull NAME V",
                    "--url URL --key KEY", "--json"):
            assert cmd in cp.stdout, (flag, cmd)
    for flag in ("--help", "-h"):
        cp = cli(srv, "predict", flag)
        assert cp.returncode == 0 and cp.stderr == "", flag
        assert cp.stdout.startswith("usage: basalt predict REF JSON|@FILE|- [--json]\n")
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


# ---- every command: --help, and --json against the default output -------------------------

def help_commands():
    """The command words of every line `basalt --help` lists ("model push", "serve", …):
    the lowercase words after `basalt` up to the first placeholder or option."""
    cp = subprocess.run([BASALT_BIN, "--help"], env=clean_env(), stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True, timeout=60)
    assert cp.returncode == 0 and cp.stderr == "", cp.stderr
    found = []
    for line in cp.stdout.splitlines():
        if not line.startswith("  basalt "):
            continue
        words = []
        for w in line.split()[1:]:
            if not re.fullmatch(r"[a-z][a-z-]*", w):
                break
            words.append(w)
        found.append(" ".join(words))
    return found


def not_json(text):
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


def table(out, first_header):
    """[{header: cell}] of a CLI table whose header starts with first_header (cells have no
    blanks, except the last column, which keeps the rest of the line)."""
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(first_header))
    headers = lines[start].split()
    rows = []
    for l in lines[start + 1:]:
        cells = l.split(None, len(headers) - 1)
        rows.append(dict(zip(headers, cells + [""] * (len(headers) - len(cells)))))
    return rows


def both(srv, *args, **kw):
    """(default stdout, --json stdout parsed) of the same command."""
    out = ok(cli(srv, *args, **kw))
    assert not_json(out), (args, out)
    return out, json.loads(ok(cli(srv, *args, "--json", **kw)))


def check_version(srv, tmp_path):
    out, j = both(srv, "version")
    assert out == "basalt %s (%s)\n" % (j["version"], j["git_sha"])
    assert j["version"] == srv.get("/v1/info").json()["version"]


def check_migrate(srv, tmp_path):
    """A fresh SQLite store migrated to the version the running server reports (its
    PostgreSQL form is in test_postgres.py)."""
    d = str(tmp_path / "migrated")
    out, j = both(srv, "migrate", "--data", d)
    db = os.path.join(d, "basalt.db")
    want = srv.get("/readyz").json()["checks"]["schema_version"]
    assert j == {"backend": "sqlite", "metadata": db, "schema_version": want}
    assert out == "schema version %d (sqlite, %s)\n" % (want, db)
    assert os.path.getsize(db) > 0


def check_model_check(srv, tmp_path):
    f = write(tmp_path / "lin.json", lin_bytes(3))
    out, j = both(srv, "model", "check", f)
    assert out.startswith("%s: basalt_json linear, regression with 1 output, 2 features" % f)
    assert [r["FEATURE"] for r in table(out, "FEATURE")] == [x["name"] for x in j["features"]]
    assert j["kind"] == "linear" and j["n_features"] == 2
    rows = write(tmp_path / "rows.json", json.dumps([list(r) for r in LIN_ROWS]))
    out, j = both(srv, "model", "check", f, "--rows", rows)
    want = lin_oracle(3, LIN_ROWS)
    assert_close([p[0] for p in j["predictions"]], want, "check --json")
    assert [r["PREDICTION"] for r in table(out, "ROW")] == ["%.6g" % w for w in want]


def check_model_push(srv, tmp_path):
    f = write(tmp_path / "m.json", lin_bytes(1))
    out = ok(cli(srv, "model", "push", f, "--name", "cli-j-push"))
    assert out == "pushed cli-j-push version 1 (pending), sha256 %s\n" % (
        hashlib.sha256(lin_bytes(1)).hexdigest())
    j = json.loads(ok(cli(srv, "model", "push", f, "--name", "cli-j-push", "--json")))
    assert j == version_doc(srv, "cli-j-push", 2)


def check_model_ls(srv, tmp_path, word="ls"):
    create_model(srv, "cli-j-" + word)
    out, j = both(srv, "model", word)
    assert ls_table(out) == api_table(srv)
    assert j["items"] == srv.get("/v1/models?limit=1000").json()["items"]
    assert j["next_cursor"] is None


def check_model_versions(srv, tmp_path):
    create_model(srv, "cli-j-versions")
    for v in (1, 2):
        upload_ok(srv, "cli-j-versions", lin_bytes(v), "basalt_json")
    approve(srv, "cli-j-versions", 2)
    assert set_alias(srv, "cli-j-versions", "prod", 2).status_code == 200
    out, j = both(srv, "model", "versions", "cli-j-versions")
    api = srv.get("/v1/models/cli-j-versions/versions").json()["items"]
    assert j["items"] == api
    got = [(r["VERSION"], r["STATUS"], r["FORMAT"], r["SIZE"], r["CREATED"], r["ALIASES"])
           for r in table(out, "VERSION")]
    assert got == [(str(v["version"]), v["status"], v["format"], str(v["size"]), v["created_at"],
                    ",".join(v["aliases"])) for v in api]


def check_review(srv, tmp_path, cmd):
    name = "cli-j-" + cmd
    create_model(srv, name)
    for v in (1, 2):
        upload_ok(srv, name, lin_bytes(v), "basalt_json")
    if cmd == "archive":
        approve(srv, name, 1)
        approve(srv, name, 2)
    status = {"approve": "approved", "reject": "rejected", "archive": "archived"}[cmd]
    out = ok(cli(srv, "model", cmd, name, "1", "--comment", "by the cli"))
    assert out == "%s version 1 is %s\n" % (name, status)
    v1 = version_doc(srv, name, 1)
    assert v1["status"] == status and v1["review_comment"] in ("by the cli", None)
    j = json.loads(ok(cli(srv, "model", cmd, name, "2", "--json")))
    assert j == version_doc(srv, name, 2) and j["status"] == status


def check_model_alias(srv, tmp_path):
    name = "cli-j-alias"
    create_model(srv, name)
    for v in (1, 2):
        upload_ok(srv, name, lin_bytes(v), "basalt_json")
        approve(srv, name, v)
    assert ok(cli(srv, "model", "alias", name, "prod", "1")) == "%s@prod -> version 1\n" % name
    out = ok(cli(srv, "model", "alias", name, "prod", "2"))
    assert out == "%s@prod -> version 2 (was version 1)\n" % name
    j = json.loads(ok(cli(srv, "model", "alias", name, "prod", "1", "--json")))
    assert j == {"model": name, "alias": "prod", "version": 1, "previous_version": 2}
    assert srv.get("/v1/models/" + name).json()["aliases"] == {"prod": 1}


def check_model_pull(srv, tmp_path):
    name = "cli-j-pull"
    create_model(srv, name)
    v = upload_ok(srv, name, lin_bytes(2), "basalt_json")
    dest = str(tmp_path / "pulled.json")
    cp = cli(srv, "model", "pull", name, "1", "-o", dest)
    assert cp.returncode == 0 and cp.stdout == ""
    assert cp.stderr == "pulled %s version 1 to %s (%d bytes)\n" % (name, dest, v["size"])
    j = json.loads(ok(cli(srv, "model", "pull", name, "1", "-o", dest, "--json")))
    assert j == {"model": name, "version": 1, "file": dest, "size": v["size"]}
    with open(dest, "rb") as f:
        assert f.read() == lin_bytes(2)
    cp = cli(srv, "model", "pull", name, "1", "--json")  # the bytes would go to stdout
    assert cp.returncode == 2 and cp.stdout == "" and "needs -o FILE" in cp.stderr


def check_predict(srv, tmp_path):
    name = "cli-j-predict"
    create_model(srv, name)
    upload_ok(srv, name, lin_bytes(4), "basalt_json")
    approve(srv, name, 1)
    rows = [{"a": a, "b": b} for a, b in LIN_ROWS]
    out, j = both(srv, "predict", name, json.dumps(rows))
    assert j["model"] == name and j["version"] == 1
    assert_close(j["predictions"], lin_oracle(4, LIN_ROWS), "predict --json")
    assert out.splitlines()[0] == "%s version 1" % name
    t = table(out, "ROW")
    assert [r["ROW"] for r in t] == [str(i) for i in range(len(rows))]
    assert len(t) == len(rows) and all(UUID_RE.match(r["PREDICTION_ID"]) for r in t)
    assert [r["PREDICTION"] for r in t] == ["%.6g" % p for p in j["predictions"]]


def check_predict_classification(srv, cancer):
    """Classification: one line per row with the label and P(label) columns."""
    X, _, _, boosters = cancer
    name = "cli-j-cls"
    create_model(srv, name)
    upload_ok(srv, name, xgb_bytes(boosters[0]), "xgboost_json")
    approve(srv, name, 1)
    body = json.dumps({"instances": X[:5].tolist()})
    out, j = both(srv, "predict", name, body)
    t = table(out, "ROW")
    assert list(t[0]) == ["ROW", "LABEL", "P(0)", "P(1)", "PREDICTION_ID"]
    assert [r["LABEL"] for r in t] == [p["label"] for p in j["predictions"]]
    p = booster_p1(boosters[0], X[:5])
    assert_close([float(r["P(1)"]) for r in t], p, "P(1) column")
    assert_close([float(r["P(0)"]) for r in t], 1 - p, "P(0) column")
    assert [r["P(1)"] for r in t] == ["%.6g" % q["probabilities"]["1"] for q in j["predictions"]]


def key_table(out):
    return {r["ID"]: r for r in table(out, "ID")}


def check_keys_create(srv, tmp_path):
    out = ok(cli(srv, "keys", "create", "--role", "viewer", "--name", "cli-j-viewer"))
    m = re.fullmatch(r"created viewer key 'cli-j-viewer' \(id (\S+)\) in tenant default\n"
                     r"API key \(shown once, store it now\):\n  (bsk_\S+)\n", out)
    assert m, out
    assert srv.get("/v1/models", key=m.group(2)).status_code == 200
    assert srv.post("/v1/models", key=m.group(2), json={"name": "x"}).status_code == 403
    j = json.loads(ok(cli(srv, "keys", "create", "--role", "predictor", "--ttl", "3600",
                          "--json")))
    assert j["role"] == "predictor" and j["name"] == "cli-predictor" and j["expires_at"]
    assert srv.get("/v1/models", key=j["key"]).status_code == 200
    listed = {k["id"]: k for k in srv.get("/v1/keys?limit=1000").json()["items"]}
    assert m.group(1) in listed and listed[j["id"]]["expires_at"] == j["expires_at"]


def check_keys_ls(srv, tmp_path, word="ls"):
    srv.create_key("viewer", name="cli-j-ls")
    out, j = both(srv, "keys", word)
    api = srv.get("/v1/keys?limit=1000").json()["items"]
    assert j["items"] == api
    t = key_table(out)
    assert list(t) == [k["id"] for k in api]
    for k in api:
        assert (t[k["id"]]["NAME"], t[k["id"]]["ROLE"], t[k["id"]]["TENANT"]) == (
            k["name"], k["role"], k["tenant"])


def check_keys_delete(srv, tmp_path):
    a, b = srv.create_key("viewer", name="cli-j-del1"), srv.create_key("viewer", name="cli-j-del2")
    assert ok(cli(srv, "keys", "delete", a["id"])) == "deleted key %s\n" % a["id"]
    assert json.loads(ok(cli(srv, "keys", "delete", b["id"], "--json"))) == {
        "id": b["id"], "deleted": True}
    ids = {k["id"] for k in srv.get("/v1/keys?limit=1000").json()["items"]}
    assert a["id"] not in ids and b["id"] not in ids
    assert srv.get("/v1/models", key=a["key"]).status_code == 401
    want = api_message(srv.delete("/v1/keys/" + a["id"]), 404)
    cp = cli(srv, "keys", "delete", a["id"])
    assert cp.returncode == 3 and cp.stderr == http_failure("DELETE", "/v1/keys/" + a["id"], 404,
                                                            want)


def check_apply(srv, tmp_path):
    f = tmp_path / "topic.yaml"
    f.write_text("kind: Topic\nname: cli-apply\nspec:\n  dedup_window: 1m\n")
    assert ok(cli(srv, "apply", "-f", str(f))) == "topic/cli-apply created\n"
    doc = json.loads(ok(cli(srv, "apply", "-f", str(f), "--json")))
    assert doc["outcome"] == "unchanged" and doc["spec"]["dedup_window"] == "1m"
    assert doc == dict(srv.get("/v1/topics/cli-apply").json(), outcome="unchanged")


def check_get(srv, tmp_path):
    assert srv.put("/v1/topics/cli-get", json={}).status_code in (200, 201)
    out = ok(cli(srv, "get", "topic", "cli-get")).splitlines()
    assert out[0].split() == ["NAME", "GENERATION", "UPDATED", "UPDATED", "BY"]
    assert out[1].split()[:2] == ["cli-get", "1"] and len(out) == 2
    assert json.loads(ok(cli(srv, "get", "topic", "cli-get", "--json"))) == \
        srv.get("/v1/topics/cli-get").json()


def check_delete(srv, tmp_path):
    for n in ("cli-del1", "cli-del2"):
        assert srv.put("/v1/topics/" + n, json={}).status_code == 201
    assert ok(cli(srv, "delete", "topic", "cli-del1")) == "topic/cli-del1 deleted\n"
    assert json.loads(ok(cli(srv, "delete", "topics", "cli-del2", "--json"))) == {
        "kind": "Topic", "name": "cli-del2", "deleted": True}
    for n in ("cli-del1", "cli-del2"):
        assert srv.get("/v1/topics/" + n).status_code == 404
    want = api_message(srv.delete("/v1/topics/cli-del1"), 404)
    cp = cli(srv, "delete", "topic", "cli-del1")
    assert cp.returncode == 3 and cp.stderr == http_failure("DELETE", "/v1/topics/cli-del1", 404,
                                                            want)
def check_predictions_export(srv, tmp_path):
    if srv.get("/v1/models/cli-exp").status_code == 404:
        create_model(srv, "cli-exp")
        upload_ok(srv, "cli-exp", linear_bytes([2.0, -1.0], 1.0, ("a", "b")))
        approve(srv, "cli-exp", 1)
    assert srv.put("/v1/endpoints/cli-exp", json={
        "model": "cli-exp", "routes": [{"version": 1, "weight": 100}]}).status_code in (200, 201)
    r = srv.post("/v1/endpoints/cli-exp/predict",
                 json={"inputs": [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 0.5}]})
    assert r.status_code == 200, r.text
    ids = r.json()["prediction_ids"]
    deadline = time.monotonic() + 30
    while True:
        items = srv.get("/v1/endpoints/cli-exp/predictions?limit=1000").json()["items"]
        if ids[-1] in [i["prediction_id"] for i in items]:
            break
        assert time.monotonic() < deadline, "the predictions were not logged"
        time.sleep(0.05)
    assert [json.loads(x) for x in ok(cli(srv, "predictions", "export", "cli-exp")).splitlines()] \
        == items
    out = tmp_path / "exp.jsonl"
    cp = cli(srv, "predictions", "export", "cli-exp", "-o", str(out), "--since", "1h")
    assert cp.returncode == 0 and cp.stdout == "", cp
    assert cp.stderr == "exported %d predictions of cli-exp to %s\n" % (len(items), out)
    assert [json.loads(x) for x in out.read_text().splitlines()] == items
    want = api_message(srv.get("/v1/endpoints/cli-nope/predictions?limit=1000"), 404)
    cp = cli(srv, "predictions", "export", "cli-nope")
    assert cp.returncode == 3 and cp.stderr == http_failure(
        "GET", "/v1/endpoints/cli-nope/predictions?limit=1000", 404, want)
    cp = cli(srv, "predictions", "export")
    assert cp.returncode == 2 and cp.stderr.startswith("usage: basalt predictions export")


def job_done(srv, jid):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        j = srv.get("/v1/jobs/" + jid).json()
        if j["state"] in ("completed", "discarded", "cancelled"):
            return j
        time.sleep(0.02)
    raise AssertionError("job %s not finalized" % jid)


def new_job(srv, **job):
    r = srv.post("/v1/jobs", json=dict({"kind": "sleep"}, **job))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def check_job_ls(srv, tmp_path, word="ls"):
    ids = [new_job(srv) for _ in range(2)]
    for i in ids:
        job_done(srv, i)
    out, j = both(srv, "job", word, "--kind", "sleep", "--state", "completed")
    api = srv.get("/v1/jobs?kind=sleep&state=completed&limit=100").json()
    assert j == api and set(ids) <= {x["id"] for x in api["items"]}
    rows = table(out, "ID")
    assert [r["ID"] for r in rows] == [x["id"] for x in api["items"]]
    assert all(r["STATE"] == "completed" and r["KIND"] == "sleep" for r in rows)


def check_job_get(srv, tmp_path):
    jid = new_job(srv)
    job_done(srv, jid)
    out, j = both(srv, "job", "get", jid)
    assert j == srv.get("/v1/jobs/" + jid).json()
    assert re.search(r"^id\s+%s$" % jid, out, re.M) and re.search(r"^state\s+completed$", out, re.M)


def check_job_watch(srv, tmp_path):
    jid = new_job(srv, args={"seconds": 0})
    out, j = both(srv, "job", "watch", jid)
    assert out.splitlines()[-1] == 'job %s completed: {"slept_s":0,"steps":1,"attempt":1}' % jid
    assert j["id"] == jid and j["state"] == "completed"


def check_job_cancel(srv, tmp_path):
    a, b = (new_job(srv, run_at="2099-01-01T00:00:00Z") for _ in range(2))
    assert ok(cli(srv, "job", "cancel", a)) == "job %s: cancelled\n" % a
    j = json.loads(ok(cli(srv, "job", "cancel", b, "--json")))
    assert j["id"] == b and j["state"] == "cancelled"


def check_job_retry(srv, tmp_path):
    a, b = (new_job(srv, run_at="2099-01-01T00:00:00Z") for _ in range(2))
    for x in (a, b):
        assert srv.post("/v1/jobs/%s/cancel" % x).status_code == 200
    assert re.fullmatch(r"job %s: (available|running|completed)\n" % a,
                        ok(cli(srv, "job", "retry", a)))
    j = json.loads(ok(cli(srv, "job", "retry", b, "--json")))
    assert j["id"] == b and j["state"] in ("available", "running", "completed")
    assert job_done(srv, a)["state"] == job_done(srv, b)["state"] == "completed"


def check_job_run(srv, tmp_path):
    out, j = both(srv, "job", "run", "sleep", "--args", '{"seconds": 0}')
    m = re.fullmatch(r"job (\S+) \(sleep\) enqueued\n", out)
    assert m and m.group(1) != j["id"]
    assert j["kind"] == "sleep" and j["args"] == {"seconds": 0}
    assert srv.get("/v1/jobs/" + m.group(1)).json()["kind"] == "sleep"


# ---- basalt rollout (src/cli/rollouts.c; the rollouts themselves: test_rollouts.py) --------

_rollout_seq = iter(range(1, 1000000))


def rollout_endpoint(srv):
    """A fresh model with approved versions 1 and 2 and an endpoint routing all to 1."""
    n = next(_rollout_seq)
    m, ep = "cli-rm%d" % n, "cli-rep%d" % n
    create_model(srv, m)
    for v in (1, 2):
        upload_ok(srv, m, linear_bytes([v, 1], 0.0))
        approve(srv, m, v)
    r = srv.put("/v1/endpoints/" + ep, json={"model": m, "routes": [{"version": 1, "weight": 100}]})
    assert r.status_code == 201, r.text
    return ep


def start_rollout(srv, ep):
    r = srv.post("/v1/endpoints/%s/rollouts" % ep,
                 json={"candidate": {"version": 2}, "steps": [10, 100], "step_interval": "1h"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def check_rollout_start(srv, tmp_path):
    ep = rollout_endpoint(srv)
    out = ok(cli(srv, "rollout", "start", ep, "--version", "2", "--steps", "10,100",
                 "--step-interval", "1h", "--max-error-rate", "0.05"))
    m = re.fullmatch(r"rollout (\S+) of endpoint %s started: version 2 at 10%%\n" % ep, out)
    assert m, out
    got = srv.get("/v1/endpoints/%s/rollouts/%s" % (ep, m.group(1))).json()
    assert got["guards"]["max_error_rate"] == 0.05 and got["step_interval"] == "1h"
    assert srv.post("/v1/endpoints/%s/rollouts/%s/abort" % (ep, m.group(1))).status_code == 200
    spec = tmp_path / "rollout.json"
    spec.write_text(json.dumps({"candidate": {"version": 2}, "steps": [30, 100],
                                "step_interval": "1h"}))
    j = json.loads(ok(cli(srv, "rollout", "start", ep, "-f", str(spec), "--json")))
    assert j["state"] == "running" and j["weight"] == 30 and j["candidate"]["version"] == 2
    assert srv.get("/v1/endpoints/%s/rollouts/%s" % (ep, j["id"])).json()["id"] == j["id"]


def check_rollout_status(srv, tmp_path):
    ep = rollout_endpoint(srv)
    rid = start_rollout(srv, ep)
    out, j = both(srv, "rollout", "status", ep)
    assert out.splitlines()[0] == "rollout %s of endpoint %s: running" % (rid, ep)
    assert "version 2 (route v2) at 10%, step 1 of 2" in out
    assert j["id"] == rid and j["state"] == "running"
    assert json.loads(ok(cli(srv, "rollout", "status", ep, rid, "--json")))["id"] == rid


def check_rollout_ls(srv, tmp_path):
    ep = rollout_endpoint(srv)
    first = start_rollout(srv, ep)
    assert srv.post("/v1/endpoints/%s/rollouts/%s/abort" % (ep, first)).status_code == 200
    second = start_rollout(srv, ep)
    out, j = both(srv, "rollout", "ls", ep)
    rows = table(out, "ID")
    assert [(r["ID"], r["STATE"]) for r in rows] == [(second, "running"), (first, "aborted")]
    assert [i["id"] for i in j["items"]] == [second, first] and j["next_cursor"] is None


def check_rollout_act(srv, tmp_path, verb):
    state = {"pause": "paused", "resume": "running", "abort": "aborted", "promote": "promoted"}
    weight = {"pause": 10, "resume": 10, "abort": 0, "promote": 100}
    for as_json in (False, True):
        ep = rollout_endpoint(srv)
        rid = start_rollout(srv, ep)
        if verb == "resume":
            assert srv.post("/v1/endpoints/%s/rollouts/%s/pause" % (ep, rid)).status_code == 200
        if as_json:
            j = json.loads(ok(cli(srv, "rollout", verb, ep, rid, "--json")))
            assert j["id"] == rid and j["state"] == state[verb]
        else:
            out = ok(cli(srv, "rollout", verb, ep))  # the latest rollout
            assert out == "rollout %s of endpoint %s: %s (candidate at %d%%)\n" % (
                rid, ep, state[verb], weight[verb])


# Every command `basalt --help` lists, with the check of its default and --json output
# (None: a command without --json; serve's behaviour is tested by test_foundation.py and
# test_config.py). A command added to src/cli/commands.c fails test_the_command_table_is_complete
# until it has a row here.
COMMANDS = {
    "serve": None,
    "version": check_version,
    "migrate": check_migrate,
    "model check": check_model_check,
    "model push": check_model_push,
    "model ls": check_model_ls,
    "model list": lambda srv, tmp_path: check_model_ls(srv, tmp_path, "list"),
    "model versions": check_model_versions,
    "model approve": lambda srv, tmp_path: check_review(srv, tmp_path, "approve"),
    "model reject": lambda srv, tmp_path: check_review(srv, tmp_path, "reject"),
    "model archive": lambda srv, tmp_path: check_review(srv, tmp_path, "archive"),
    "model alias": check_model_alias,
    "model pull": check_model_pull,
    "predict": check_predict,
    "keys create": check_keys_create,
    "keys ls": check_keys_ls,
    "keys list": lambda srv, tmp_path: check_keys_ls(srv, tmp_path, "list"),
    "keys delete": check_keys_delete,
    "apply": check_apply,
    "get": check_get,
    "delete": check_delete,
    "predictions export": check_predictions_export,
    "job ls": check_job_ls,
    "job list": lambda srv, tmp_path: check_job_ls(srv, tmp_path, "list"),
    "job get": check_job_get,
    "job watch": check_job_watch,
    "job cancel": check_job_cancel,
    "job retry": check_job_retry,
    "job run": check_job_run,
    "rollout start": check_rollout_start,
    "rollout status": check_rollout_status,
    "rollout ls": check_rollout_ls,
    "rollout pause": lambda srv, tmp_path: check_rollout_act(srv, tmp_path, "pause"),
    "rollout resume": lambda srv, tmp_path: check_rollout_act(srv, tmp_path, "resume"),
    "rollout abort": lambda srv, tmp_path: check_rollout_act(srv, tmp_path, "abort"),
    "rollout promote": lambda srv, tmp_path: check_rollout_act(srv, tmp_path, "promote"),
}


def test_the_command_table_is_complete():
    listed = help_commands()
    assert len(listed) == len(set(listed)), listed
    assert set(listed) == set(COMMANDS)


# Arguments placed before --help that used to be taken as values or names (model push: "--help
# needs a value"; model versions: a model named --help; model ls: ran the listing).
BEFORE_HELP = {"model push": ["m.json"], "model versions": ["some-model"],
               "model approve": ["m", "1"], "predict": ["m", "{}"], "keys create": ["--role"],
               "apply": ["-f"], "get": ["topic"], "delete": ["topic", "x"]}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_answers_help(shared_server, command):
    srv = shared_server
    words = command.split()
    calls = [words + ["--help"], words + ["-h"], words + BEFORE_HELP.get(command, []) + ["--help"]]
    for args in calls:
        cp = cli(srv, *args, url=DOWN)  # nothing is called: help needs no server
        assert cp.returncode == 0, (args, cp.returncode, cp.stderr)
        assert cp.stderr == "", (args, cp.stderr)
        assert cp.stdout.startswith("usage: basalt %s " % command), (args, cp.stdout)
    if COMMANDS[command] is not None:
        assert "--json" in cp.stdout.splitlines()[0] or "--json" in cp.stdout, command


@pytest.mark.parametrize("command", sorted(c for c in COMMANDS if COMMANDS[c]))
def test_every_command_prints_text_by_default_and_json_with_json(shared_server, tmp_path,
                                                                 command):
    COMMANDS[command](shared_server, tmp_path)


def test_predict_prints_a_classification_table(shared_server, cancer):
    check_predict_classification(shared_server, cancer)


def test_group_help_lists_its_commands(shared_server):
    for group in ("model", "keys"):
        cp = cli(shared_server, group, "--help")
        assert cp.returncode == 0 and cp.stderr == ""
        listed = {c for c in COMMANDS if c.startswith(group + " ")}
        for c in listed:
            assert "  basalt %s " % c in cp.stdout, (group, c)
        cp = cli(shared_server, group)
        assert cp.returncode == 2 and cp.stdout == "" and cp.stderr.startswith("usage:")


# ---- keys create --data: a lost admin key, recovered offline --------------------------------

def offline_key(data_dir, *extra, want_rc=0):
    cp = subprocess.run([BASALT_BIN, "keys", "create", "--data", data_dir, *extra],
                        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True, timeout=2 * REQUEST_TIMEOUT)
    assert cp.returncode == want_rc, (cp.returncode, cp.stdout, cp.stderr)
    return cp


@pytest.mark.embedded  # `keys create --data` writes <data>/basalt.db
def test_keys_create_offline_with_the_server_stopped(server, tmp_path):
    srv = server
    r = srv.post("/v1/tenants", json={"name": "acme"})
    assert r.status_code == 201, r.text
    srv.stop()
    cp = offline_key(srv.data_dir, "--role", "admin", "--name", "rescue")
    assert cp.stderr == ""
    m = re.fullmatch(r"created admin key 'rescue' \(id (\S+)\) in tenant default\n"
                     r"written into the stopped server's data directory; it works from the next "
                     r"start\nAPI key \(shown once, store it now\):\n  (bsk_\S+)\n", cp.stdout)
    assert m, cp.stdout
    key_id, key = m.groups()
    j = json.loads(offline_key(srv.data_dir, "--role", "viewer", "--tenant", "acme",
                               "--json").stdout)
    assert j["tenant"] == "acme" and j["role"] == "viewer" and j["server_pid"] is None
    srv.start()  # the lock was released: the server starts
    assert srv.admin_key is not None and srv.stdout().count("bsk_") == 0  # no new bootstrap key
    r = srv.get("/v1/keys?limit=1000", key=key)  # an admin key of tenant default
    assert r.status_code == 200, r.text
    keys = {k["id"]: k for k in r.json()["items"]}
    assert keys[key_id]["name"] == "rescue" and keys[key_id]["created_by"] == "offline"
    assert keys[j["id"]]["tenant"] == "acme"
    made = srv.create_key("developer", key=key)  # it can do what an admin does
    assert srv.get("/v1/models", key=made["key"]).status_code == 200
    assert srv.get("/v1/models", key=j["key"]).status_code == 200
    assert srv.post("/v1/keys", key=j["key"], json={"name": "n", "role": "viewer"}).status_code == 403


@pytest.mark.embedded  # `keys create --data` writes <data>/basalt.db
def test_keys_create_offline_with_the_server_running(server):
    """Through the lock holder: the key is written beside the running server, which is sent
    SIGHUP and serves it without a restart."""
    srv = server
    cp = offline_key(srv.data_dir, "--role", "admin", "--json")
    assert cp.stderr == ""
    j = json.loads(cp.stdout)
    assert j["server_pid"] == srv.proc.pid and j["name"] == "cli-admin"
    deadline = time.monotonic() + START_TIMEOUT  # the reload runs on the server's own thread
    status = None
    while time.monotonic() < deadline:
        status = srv.get("/v1/keys", key=j["key"]).status_code
        if status != 401:
            break
        time.sleep(0.05)
    assert status == 200
    assert srv.running()  # SIGHUP reloaded, it did not stop the server
    cp = offline_key(srv.data_dir, "--role", "viewer", "--name", "second")
    assert ("the running server (pid %d) was sent SIGHUP and loads the key at once\n"
            % srv.proc.pid) in cp.stdout
    key = re.search(r"^  (bsk_\S+)$", cp.stdout, re.M).group(1)
    while time.monotonic() < deadline and srv.get("/v1/models", key=key).status_code == 401:
        time.sleep(0.05)
    assert srv.get("/v1/models", key=key).status_code == 200
    # the log line follows the reload, through the background log writer
    while time.monotonic() < deadline and "reloaded the API keys" not in srv.stderr():
        time.sleep(0.05)
    assert "reloaded the API keys" in srv.stderr()
    assert srv.stop() == 0


@pytest.mark.embedded  # `keys create --data` writes <data>/basalt.db
def test_keys_create_offline_errors(server, tmp_path):
    srv = server
    before = srv.get("/v1/keys?limit=1000").json()["items"]
    missing = str(tmp_path / "no-such-dir")
    cp = offline_key(missing, "--role", "admin", want_rc=1)
    assert cp.stdout == "" and cp.stderr == "basalt: no data directory %s: %s\n" % (
        missing, os.strerror(errno.ENOENT))
    empty = tmp_path / "empty"
    empty.mkdir()
    cp = offline_key(str(empty), "--role", "admin", want_rc=1)
    assert "holds no basalt.db" in cp.stderr and not (empty / "basalt.db").exists()
    cp = offline_key(srv.data_dir, "--role", "root", want_rc=2)
    assert cp.stderr == "basalt: role must be admin, developer, predictor or viewer, got 'root'\n"
    cp = offline_key(srv.data_dir, want_rc=2)  # no --role
    assert cp.stderr.startswith("basalt: keys create needs --role")
    cp = offline_key(srv.data_dir, "--role", "admin", "--ttl", "0", want_rc=2)
    assert "--ttl must be a whole number of seconds" in cp.stderr
    cp = offline_key(srv.data_dir, "--role", "admin", "--tenant", "nope", want_rc=1)
    assert cp.stderr.endswith("tenant 'nope' does not exist\n"), cp.stderr
    assert srv.get("/v1/keys?limit=1000").json()["items"] == before


@pytest.mark.embedded  # `keys create --data` writes <data>/basalt.db
def test_keys_create_offline_never_signals_a_pid_that_does_not_hold_the_lock(server):
    """The lock is held, but the pid in the lock file names a process without it open (a
    stale or forged pid): that process is not signalled; the key is written and the CLI says
    how to make the holder load it."""
    import fcntl
    srv = server
    srv.stop()
    bystander = subprocess.Popen(["sleep", "600"])  # SIGHUP would end it
    lock_path = os.path.join(srv.data_dir, "basalt.lock")
    try:
        with open(lock_path, "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # this test process holds it
            lock.truncate(0)
            lock.write("%d\n" % bystander.pid)
            lock.flush()
            cp = offline_key(srv.data_dir, "--role", "admin", "--json")
            assert bystander.poll() is None  # still running: not signalled
            j = json.loads(cp.stdout)
            assert j["server_pid"] is None
            assert cp.stderr == (
                "basalt: warning: a server holds %s but could not be told to reload its keys "
                "(the pid in the lock file does not have it open, or is not visible to this "
                "user); it loads the key by itself within its change_poll_ms (1 s by default), "
                "or at once after SIGHUP (kill -HUP PID)\n" % os.path.realpath(lock_path))
    finally:
        bystander.kill()
        bystander.wait()
    srv.start()
    assert srv.get("/v1/keys", key=j["key"]).status_code == 200


def test_lists_follow_next_cursor_past_one_page(server):
    """model ls asks for pages of 1000: with 1003 models it must follow next_cursor."""
    srv = server
    for i in range(1003):
        create_model(srv, "page-%04d" % i)
    api, cursor = [], None
    while True:
        r = srv.get("/v1/models?limit=1000" + ("&cursor=" + cursor if cursor else ""))
        assert r.status_code == 200, r.text
        api += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
    assert len(api) == 1003
    j = json.loads(ok(cli(srv, "model", "ls", "--json")))
    assert j == {"items": api, "next_cursor": None}
    assert list(ls_table(ok(cli(srv, "model", "ls")))) == [m["name"] for m in api]
