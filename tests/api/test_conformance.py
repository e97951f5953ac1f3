"""Conformance with the ecosystem's own tools: /metrics read by Python's prometheus_client
parser and `promtool check metrics` (Debian python3-prometheus-client, prometheus), and
/openapi.json checked by `redocly lint`, turned into TypeScript types by openapi-typescript
and used by a small client that `tsc` type-checks (npm tools from `make npm-deps`, in
build/npm). A missing tool fails the test: these are the oracles, not options."""
import collections
import json
import math
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import ROOT, source_routes
from modelkit import approve, create_model, linear_bytes, predict, upload_ok

PROMTOOL = os.environ.get("BASALT_PROMTOOL", "/usr/bin/promtool")
NPM_DIR = os.environ.get("BASALT_NPM_DIR", os.path.join(ROOT, "build", "npm"))
NODE_BIN = os.path.join(NPM_DIR, "node_modules", ".bin")


# ---- /metrics -------------------------------------------------------------------------------

def family_of(name, types):
    """The family a sample name belongs to (histogram and summary suffixes stripped)."""
    if name in types:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[:-len(suffix)]) in ("histogram", "summary"):
            return name[:-len(suffix)]
    return name


def raw_blocks(text):
    """Checks the raw text family by family: each family is one contiguous block that starts
    with its HELP and TYPE lines. Returns {family: type}."""
    types, seen, current = {}, set(), None
    for line in text.splitlines():
        assert line.strip(), "empty line in /metrics"
        if line.startswith("# HELP "):
            name = line.split(None, 3)[2]
            assert name not in seen, "family %s appears in two places" % name
            seen.add(name)
            current = name
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(None, 3)
            assert name == current and name not in types, "TYPE %s not right after its HELP" % name
            types[name] = typ
            continue
        assert not line.startswith("#"), line
        name = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", line).group(1)
        fam = family_of(name, types)
        assert fam == current, "sample %r outside its family's block (in %s)" % (line, current)
    return types


def check_with_prometheus_client(text):
    """Parses with prometheus_client and checks what the format requires of each family."""
    from prometheus_client.parser import text_string_to_metric_families
    families = list(text_string_to_metric_families(text))
    names = collections.Counter(f.name for f in families)
    assert not [n for n, c in names.items() if c > 1], \
        "families split or clashing: %s" % [n for n, c in names.items() if c > 1]
    for f in families:
        assert f.type in ("counter", "gauge", "histogram"), (f.name, f.type)
        assert f.documentation, f.name
        series = collections.Counter((s.name, tuple(sorted(s.labels.items()))) for s in f.samples)
        dup = [k for k, c in series.items() if c > 1]
        assert not dup, "duplicate series: %s" % dup
        for s in f.samples:
            assert not math.isnan(s.value), s
        if f.type == "counter":
            # the parser drops _total from the family name; every sample keeps it
            assert all(s.name == f.name + "_total" for s in f.samples), f.name
            assert all(s.value >= 0 for s in f.samples), f.name
        if f.type == "histogram":
            by_series = collections.defaultdict(dict)
            for s in f.samples:
                labels = {k: v for k, v in s.labels.items() if k != "le"}
                key = tuple(sorted(labels.items()))
                if s.name == f.name + "_bucket":
                    by_series[key].setdefault("buckets", []).append((float(s.labels["le"]),
                                                                     s.value))
                else:
                    assert s.name in (f.name + "_sum", f.name + "_count"), s.name
                    by_series[key][s.name[len(f.name) + 1:]] = s.value
            assert by_series, f.name
            for key, parts in by_series.items():
                assert set(parts) == {"buckets", "sum", "count"}, (f.name, key, parts)
                les = [le for le, _ in parts["buckets"]]
                assert les == sorted(les) and les[-1] == math.inf, (f.name, key, les)
                counts = [v for _, v in parts["buckets"]]
                assert counts == sorted(counts), "buckets not cumulative: %s %s" % (f.name, key)
                assert counts[-1] == parts["count"], (f.name, key)
                assert parts["sum"] >= 0
    return {f.name: f for f in families}


def check_with_promtool(text):
    assert os.access(PROMTOOL, os.X_OK), \
        "%s not found: install Debian package prometheus (scripts/deps.sh)" % PROMTOOL
    cp = subprocess.run([PROMTOOL, "check", "metrics"], input=text, text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    assert cp.returncode == 0 and not cp.stdout.strip(), "promtool check metrics:\n" + cp.stdout


def traffic(srv):
    """Requests over several routes, methods, models, tenants and errors."""
    m1 = linear_bytes([1.0, 2.0], 0.5)
    for name in ("alpha", "beta"):
        create_model(srv, name, description="d", tags=["t"])
        assert srv.get("/v1/models/" + name).status_code == 200
        assert srv.patch("/v1/models/" + name, json={"description": "e"}).status_code == 200
        for _ in range(2):
            approve(srv, name, upload_ok(srv, name, m1, fmt="basalt_json")["version"])
    # the same route with two methods (was one duplicate duration series)
    assert srv.get("/v1/models").status_code == 200
    assert srv.get("/v1/models/alpha/versions?limit=1").status_code == 200
    # a batched model: the batcher's families
    create_model(srv, "gamma", batching={"enabled": True, "max_batch_size": 4,
                                         "max_queue_delay_us": 100})
    approve(srv, "gamma", upload_ok(srv, "gamma", m1, fmt="basalt_json")["version"])
    for ref, version in (("alpha", None), ("alpha", 2), ("beta", 1), ("gamma", None)):
        r = predict(srv, ref, {"inputs": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]}, version=version)
        assert r.status_code == 200, r.text
    # prediction errors of two codes
    assert predict(srv, "alpha", {"inputs": {"a": "x", "b": 1}}).status_code == 400
    assert predict(srv, "alpha", {"inputs": {"a": 1, "b": 1}}, version=9).status_code == 404
    # KServe v2
    r = srv.post("/v2/models/beta/infer", json={"inputs": [
        {"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]},
        {"name": "b", "shape": [1], "datatype": "FP64", "data": [2.0]}]})
    assert r.status_code == 200, r.text
    # another tenant with a model of the same name
    assert srv.post("/v1/tenants", json={"name": "acme"}).status_code == 201
    dev = srv.create_key("developer", tenant="acme")["key"]
    create_model(srv, "alpha", key=dev)
    approve(srv, "alpha", upload_ok(srv, "alpha", m1, fmt="basalt_json", key=dev)["version"],
            key=dev)
    assert predict(srv, "alpha", {"inputs": {"a": 1, "b": 2}}, key=dev).status_code == 200
    # a model deleted after traffic and created again under the same name
    create_model(srv, "delta")
    approve(srv, "delta", upload_ok(srv, "delta", m1, fmt="basalt_json")["version"])
    assert predict(srv, "delta", {"inputs": {"a": 1, "b": 2}}).status_code == 200
    assert srv.delete("/v1/models/delta").status_code == 204
    create_model(srv, "delta")
    approve(srv, "delta", upload_ok(srv, "delta", m1, fmt="basalt_json")["version"])
    assert predict(srv, "delta", {"inputs": {"a": 1, "b": 2}}).status_code == 200
    # HTTP errors: 401, 404, 405, a malformed body
    assert srv.get("/v1/info", key=None).status_code == 401
    assert srv.get("/v1/nope").status_code == 404
    assert srv.put("/v1/models").status_code == 405
    assert srv.post("/v1/models", data="{", headers={"Content-Type": "application/json"}) \
        .status_code == 400


def test_metrics_parse_with_prometheus_tools(server):
    traffic(server)
    r = server.get("/metrics")  # the admin key: allowed whether /metrics is public or not
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    types = raw_blocks(text)
    fams = check_with_prometheus_client(text)
    check_with_promtool(text)
    # counters end in _total, and nothing else does
    for name, typ in types.items():
        assert (typ == "counter") == name.endswith("_total"), (name, typ)
    # the traffic shows up as the distinct series it is
    dur = fams["basalt_http_request_duration_seconds"]
    counts = {(s.labels["route"], s.labels["method"]) for s in dur.samples
              if s.name.endswith("_count")}
    assert {("/v1/models", "GET"), ("/v1/models", "POST"), ("/v1/models/{name}", "GET"),
            ("/v1/models/{name}", "PATCH"), ("/v1/models/{name}", "DELETE")} <= counts
    preds = {(s.labels["tenant"], s.labels["model"], s.labels["version"]): s.value
             for s in fams["basalt_predictions"].samples}
    assert preds[("default", "alpha", "2")] == 3  # two good requests and one bad row
    assert preds[("acme", "alpha", "1")] == 1
    assert preds[("default", "delta", "1")] == 1  # the new delta, not the deleted one's sum
    errors = {(s.labels["model"], s.labels["code"]) for s in
              fams["basalt_prediction_errors"].samples}
    assert ("alpha", "invalid_input") in errors
    assert fams["basalt_prediction_batches"].samples
    assert fams["basalt_prediction_duration_seconds"].samples


def test_metrics_label_values_need_no_escaping(server):
    """Tenant and model names end up in label values unescaped; that is safe only because
    names that would need escaping (quote, backslash, newline, braces) are refused."""
    for bad in ('a"b', "a\\b", "a\nb", "a}b", "a,b", "a b"):
        assert server.post("/v1/models", json={"name": bad}).status_code == 400, repr(bad)
        assert server.post("/v1/tenants", json={"name": bad}).status_code == 400, repr(bad)
    text = server.get("/metrics").text
    for line in text.splitlines():
        if "{" in line and not line.startswith("#"):
            for value in re.findall(r'="([^"]*)"', line):
                assert "\\" not in value and "\n" not in value, line


# ---- /openapi.json --------------------------------------------------------------------------

def node_tool(name):
    """Path of an npm tool installed by `make npm-deps`; fails (not skips) when absent."""
    path = os.path.join(NODE_BIN, name)
    if not os.access(path, os.X_OK) or not shutil.which("node"):
        pytest.fail("%s not found in %s (or no node on PATH): run `make npm-deps` "
                    "(scripts/deps.sh installs Node.js)" % (name, NODE_BIN))
    return path


def run_tool(args, cwd):
    env = dict(os.environ, REDOCLY_TELEMETRY="off", REDOCLY_SUPPRESS_UPDATE_NOTICE="true",
               NO_COLOR="1")
    return subprocess.run(args, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=300)


@pytest.fixture(scope="module")
def openapi(shared_server, tmp_path_factory):
    """(the document, its file path) as the server serves it."""
    r = shared_server.get("/openapi.json", key=None)
    assert r.status_code == 200
    d = tmp_path_factory.mktemp("openapi")
    path = d / "openapi.json"
    path.write_text(r.text)
    return r.json(), str(path)


def test_openapi_passes_redocly_lint(openapi):
    doc, path = openapi
    redocly = node_tool("redocly")
    cp = run_tool([redocly, "lint", "--extends", "recommended", "--format", "json", path],
                  os.path.dirname(path))
    out = cp.stdout
    report = json.loads(out[out.index("{"):out.rindex("}") + 1])
    problems = [(p["severity"], p["ruleId"], p["message"],
                 [l.get("pointer") for l in p.get("location", [])]) for p in report["problems"]]
    errors = [p for p in problems if p[0] == "error"]
    assert not errors, "redocly lint errors:\n" + "\n".join(map(str, errors))
    # The warnings left: the project declares no license to put in info.license; and the
    # delivery log's /v1/webhooks/deliveries/{id} next to /v1/webhooks/{name}/secret|test,
    # which the router resolves as OpenAPI 3.1's Paths Object says (concrete segments before
    # templated ones: src/http/router.c, tests/unit/test_router.c).
    def allowed(p):
        return p[1] == "info-license" or (p[1] == "no-ambiguous-paths" and
                                          "/v1/webhooks/deliveries/{id}" in p[2])
    assert all(allowed(p) for p in problems), problems
    assert cp.returncode == 0, out


def test_openapi_operations_are_usable_by_generators(openapi):
    doc, _ = openapi
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    assert all(re.match(r"^[a-z][A-Za-z0-9]*$", i) for i in ids), ids
    assert doc["servers"] and doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for method, pattern, handler, role in source_routes():
        op = doc["paths"][re.sub(r"\{(\w+)\*\}", r"{\1}", pattern)][method.lower()]
        assert op["security"] == ([] if role == "public" else [{"bearer": []}]), (method, pattern)
        assert op["x-basalt-min-role"] == role
        ok = [s for s in op["responses"] if s.startswith("2")]
        # A resource PUT answers 201 (created) or 200 (updated, unchanged); others one status.
        want = {"200", "201"} if handler == "bs__api_resource_put" else None
        assert len(ok) == 1 or set(ok) == want, (method, pattern)
        if ok[0] != "204":
            assert op["responses"][ok[0]].get("content"), (method, pattern, "no response schema")
        assert op["x-codeSamples"][0]["source"].startswith("curl"), (method, pattern)


def handler_queries():
    """{handler name: query parameters its body reads}, from the C source of src/api."""
    found = {}
    api = os.path.join(ROOT, "src", "api")
    for fn in sorted(os.listdir(api)):
        if not fn.endswith(".c"):
            continue
        with open(os.path.join(api, fn)) as f:
            src = f.read()
        for m in re.finditer(r"^void (bs__api_\w+)\(bs_req_t \*req\)\n\{\n(.*?)^\}$", src,
                             re.S | re.M):
            body = m.group(2)
            names = set(re.findall(r'(?:bs_req_query|query_bool)\(req, "(\w+)"', body))
            if "bs__api_limit(req" in body:
                names.add("limit")
            found[m.group(1)] = names
    return found


def test_openapi_declares_every_query_parameter(openapi):
    """Each route's query parameters in the document are exactly those its handler reads."""
    doc, _ = openapi
    queries = handler_queries()
    assert queries.get("bs__api_models_list") == {"prefix", "tag", "cursor", "limit"}
    for method, pattern, handler, _ in source_routes():
        op = doc["paths"][re.sub(r"\{(\w+)\*\}", r"{\1}", pattern)][method.lower()]
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
        assert declared == queries.get(handler, set()), (method, pattern)


def test_openapi_upload_bodies(openapi):
    doc, _ = openapi
    op = doc["paths"]["/v1/models/{name}/versions"]["post"]
    content = op["requestBody"]["content"]
    form = content["multipart/form-data"]["schema"]
    assert form["required"] == ["artifact"]
    assert form["properties"]["artifact"]["format"] == "binary"
    assert "input_schema" in form["properties"]["metadata"]["properties"]
    assert content["multipart/form-data"]["encoding"]["metadata"]["contentType"] == \
        "application/json"
    assert content["application/octet-stream"]["schema"]["format"] == "binary"
    fmt = [p for p in op["parameters"] if p["name"] == "format"][0]
    assert set(fmt["schema"]["enum"]) == {"xgboost_json", "basalt_json"}


TS_CLIENT = r'''
import type { components, operations, paths } from "./schema";

type Body<T> = T extends { content: { "application/json": infer B } } ? B : never;
type ModelCreate = Body<NonNullable<paths["/v1/models"]["post"]["requestBody"]>>;
type Model = Body<paths["/v1/models/{name}"]["get"]["responses"][200]>;
type ModelPage = Body<paths["/v1/models"]["get"]["responses"][200]>;
type Prediction = Body<paths["/v1/models/{name}/predict"]["post"]["responses"][200]>;
type PredictBody = Body<NonNullable<paths["/v1/models/{name}/predict"]["post"]["requestBody"]>>;
type VersionsQuery = NonNullable<paths["/v1/models/{name}/versions"]["get"]["parameters"]["query"]>;
type UploadQuery = NonNullable<operations["postV1ModelsByNameVersions"]["parameters"]["query"]>;
type UploadForm = NonNullable<paths["/v1/models/{name}/versions"]["post"]["requestBody"]>["content"]["multipart/form-data"];
type Version = Body<operations["postV1ModelsByNameVersions"]["responses"][201]>;
type ErrorBody = components["schemas"]["Error"];

export class Client {
    constructor(private url: string, private key: string) {}

    async call<T>(method: string, path: string, body?: unknown): Promise<T> {
        const r = await fetch(this.url + path, {
            method,
            headers: { Authorization: "Bearer " + this.key, "Content-Type": "application/json" },
            body: body === undefined ? undefined : JSON.stringify(body),
        });
        if (!r.ok) {
            const e = (await r.json()) as ErrorBody;
            throw new Error(e.error.code + ": " + e.error.message + " (" + e.request_id + ")");
        }
        return (await r.json()) as T;
    }

    createModel(m: ModelCreate): Promise<Model> { return this.call<Model>("POST", "/v1/models", m); }
    listModels(): Promise<ModelPage> { return this.call<ModelPage>("GET", "/v1/models"); }
    predict(name: string, b: PredictBody): Promise<Prediction> {
        return this.call<Prediction>("POST", "/v1/models/" + name + "/predict", b);
    }
}

export async function demo(c: Client): Promise<string[]> {
    const m = await c.createModel({ name: "churn", tags: ["tabular"],
                                    batching: { enabled: true, max_batch_size: 8 } });
    const name: string = m.name;
    const page = await c.listModels();
    const next: string | null = page.next_cursor;
    const first: string | undefined = page.items[0]?.name;
    const p = await c.predict(name, { inputs: [{ amount: 12.5 }] });
    const version: number = p.version;
    const q: VersionsQuery = { status: "approved", limit: 10 };
    const u: UploadQuery = { format: "xgboost_json" };
    const form: UploadForm = { artifact: "bytes" };
    const v: Version["status"] = "pending";
    // @ts-expect-error name is required
    const noName: ModelCreate = { description: "x" };
    // @ts-expect-error unknown fields are refused (additionalProperties: false)
    const extra: ModelCreate = { name: "x", colour: "red" };
    // @ts-expect-error status is one of four states
    const badStatus: VersionsQuery = { status: "live" };
    // @ts-expect-error formats are listed
    const badFormat: UploadQuery = { format: "onnx" };
    // @ts-expect-error the form needs its artifact part
    const noArtifact: UploadForm = { metadata: {} };
    void [next, first, version, q, u, form, v, noName, extra, badStatus, badFormat, noArtifact];
    return p.prediction_ids;
}
'''


def test_openapi_typescript_client_type_checks(openapi, tmp_path):
    doc, path = openapi
    gen = node_tool("openapi-typescript")
    tsc = node_tool("tsc")
    cp = run_tool([gen, path, "-o", str(tmp_path / "schema.d.ts")], str(tmp_path))
    assert cp.returncode == 0, cp.stdout
    (tmp_path / "client.ts").write_text(TS_CLIENT)
    cp = run_tool([tsc, "--noEmit", "--strict", "--target", "es2022", "--module", "esnext",
                   "--moduleResolution", "bundler", "--lib", "es2022,dom", "client.ts"],
                  str(tmp_path))
    assert cp.returncode == 0, "tsc:\n" + cp.stdout


# ---- /docs ----------------------------------------------------------------------------------

def test_docs_page_shows_every_route_offline(shared_server, openapi):
    """/docs is complete without running a script or fetching anything: every operation of
    the document with its method, path, minimum role, parameters, request body media
    types, request example and curl example, escaped; no script and no outside asset."""
    from html.parser import HTMLParser
    doc, _ = openapi
    r = shared_server.get("/docs", key=None)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    page = r.text

    class Collect(HTMLParser):
        def __init__(self):
            super().__init__()
            self.sections, self.current, self.refs, self.tags = {}, None, [], set()
            self.pres, self.in_pre = {}, False

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            self.tags.add(tag)
            for k in ("src", "href", "action"):
                if k in a:
                    self.refs.append(a[k])
            if tag == "section":
                self.current = a["id"]
                self.sections[self.current] = []
                self.pres[self.current] = []
            if tag == "pre" and self.current:
                self.in_pre = True
                self.pres[self.current].append("")

        def handle_endtag(self, tag):
            if tag == "section":
                self.current = None
            if tag == "pre":
                self.in_pre = False

        def handle_data(self, data):
            if self.current:
                self.sections[self.current].append(data)
                if self.in_pre:
                    self.pres[self.current][-1] += data

    def blocks(op_id):
        """The JSON values shown in the operation's <pre> blocks."""
        out = []
        for t in c.pres[op_id]:
            try:
                out.append(json.loads(t))
            except ValueError:
                pass
        return out

    c = Collect()
    c.feed(page)
    assert "script" not in c.tags and "link" not in c.tags and "img" not in c.tags
    assert all(ref.startswith("#") or ref.startswith("/") and not ref.startswith("//")
               for ref in c.refs), c.refs
    n_ops = 0
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            n_ops += 1
            text = "".join(c.sections[op["operationId"]])
            assert method.upper() in text and path in text, op["operationId"]
            assert "Minimum role: " + op["x-basalt-min-role"] in text, op["operationId"]
            for p in op.get("parameters", []):
                assert p["name"] in text, (op["operationId"], p["name"])
            for mt, media in op.get("requestBody", {}).get("content", {}).items():
                assert mt in text, (op["operationId"], mt)
                if "schema" in media:
                    assert media["schema"] in blocks(op["operationId"]), (op["operationId"], mt)
                if "example" in media:
                    assert media["example"] in blocks(op["operationId"]), op["operationId"]
            for sample in op["x-codeSamples"]:
                assert sample["source"] in text, op["operationId"]
    assert len(c.sections) == n_ops == len(source_routes())
    # what the page prints is escaped: the curl samples' quotes arrive as entities
    assert "&#39;Content-Type: application/json&#39;" in page
    assert "Content-Type: application/json'" not in page


# ---- the document against the server ------------------------------------------------------

CHURN_MODEL = {
    "basalt_model": 1,
    "inputs": [{"name": "amount", "type": "float"},
               {"name": "country", "type": "category", "categories": ["FR", "DE", "US"]}],
    "preprocess": [
        {"columns": ["amount"], "steps": [{"op": "impute", "fill": [0.0]}]},
        {"columns": ["country"], "steps": [{"op": "impute", "fill": ["FR"]},
                                           {"op": "one_hot", "handle_unknown": "ignore"}]}],
    "estimator": {"type": "linear", "link": "logistic", "coef": [[0.01, 0.2, -0.1, 0.3]],
                  "intercept": [-0.2]},
    "output": {"task": "classification", "labels": ["stay", "churn"]},
}


def test_openapi_examples_work_and_responses_match(server, tmp_path):
    """Every route called once, with the document's own request example where it has one;
    each request example and each response is validated (jsonschema, draft 2020-12)
    against the schema the document gives for it."""
    from jsonschema import Draft202012Validator
    doc = server.get("/openapi.json", key=None).json()
    called = set()
    Draft202012Validator.check_schema(doc["components"]["schemas"]["Error"])

    def op_of(method, pattern):
        return doc["paths"][pattern][method.lower()]

    def example(method, pattern):
        media = op_of(method, pattern)["requestBody"]["content"]["application/json"]
        Draft202012Validator(media["schema"]).validate(media["example"])
        return media["example"]

    def call(method, pattern, status, path=None, use_example=True, **kw):
        op = op_of(method, pattern)
        path = path or pattern.replace("{name}", "churn").replace("{version}", "1") \
            .replace("{alias}", "champion")
        if use_example and "requestBody" in op and "json" not in kw and "files" not in kw \
                and "data" not in kw:
            kw["json"] = example(method, pattern)
        r = server.request(method, path, **kw)
        assert r.status_code == status, (method, path, r.text[:500])
        called.add((method, pattern))
        resp = op["responses"][str(status)]
        content = resp.get("content", {})
        if status == 204:
            assert not content and r.content == b""
            return r
        ctype = r.headers["content-type"].split(";")[0]
        assert ctype in content, (method, pattern, ctype, list(content))
        if ctype == "application/json":
            Draft202012Validator(content[ctype]["schema"]).validate(r.json())
        return r

    for pattern in ("/healthz", "/readyz", "/openapi.json", "/docs", "/metrics", "/v1/info",
                    "/v2", "/v2/health/live", "/v2/health/ready"):
        call("GET", pattern, 200)
    key = call("POST", "/v1/keys", 201).json()
    call("GET", "/v1/keys", 200, path="/v1/keys?limit=5")
    call("DELETE", "/v1/keys/{id}", 204, path="/v1/keys/" + key["id"])
    call("POST", "/v1/tenants", 201)
    call("GET", "/v1/tenants", 200)
    call("POST", "/v1/models", 201)
    call("GET", "/v1/models", 200, path="/v1/models?prefix=ch&limit=10")
    call("GET", "/v1/models/{name}", 200)
    call("PATCH", "/v1/models/{name}", 200)
    artifact = json.dumps(CHURN_MODEL).encode()
    meta = {"description": "weekly retrain", "metrics": {"auc": 0.91}}
    v = "/v1/models/{name}/versions"
    call("POST", v, 201, files={"artifact": ("model.json", artifact, "application/octet-stream"),
                                "metadata": ("m.json", json.dumps(meta), "application/json")})
    for _ in range(2):
        call("POST", v, 201, path="/v1/models/churn/versions?format=basalt_json", data=artifact,
             headers={"Content-Type": "application/octet-stream"})
    call("GET", v, 200, path="/v1/models/churn/versions?status=pending&limit=2")
    call("GET", v + "/{version}", 200)
    r = call("GET", v + "/{version}/artifact", 200)
    assert r.content == artifact
    call("POST", v + "/{version}/approve", 200)
    call("POST", v + "/{version}/reject", 200, path="/v1/models/churn/versions/2/reject")
    call("POST", v + "/{version}/approve", 200, path="/v1/models/churn/versions/3/approve")
    call("POST", v + "/{version}/archive", 200, path="/v1/models/churn/versions/3/archive")
    call("PUT", "/v1/models/{name}/aliases/{alias}", 200)
    call("POST", "/v1/models/{name}/predict", 200)
    call("POST", v + "/{version}/predict", 200)
    # the prediction log's read route, on an endpoint with a logged prediction (issue 10)
    assert server.put("/v1/endpoints/churn", json={
        "model": "churn", "routes": [{"version": 1, "weight": 100}]}).status_code in (200, 201)
    assert server.post("/v1/endpoints/churn/predict",
                       json=example("POST", "/v1/models/{name}/predict")).status_code == 200
    deadline = time.monotonic() + 30
    while not server.get("/v1/endpoints/churn/predictions").json()["items"]:
        assert time.monotonic() < deadline, "the prediction was not logged"
        time.sleep(0.05)
    call("GET", "/v1/endpoints/{name}/predictions", 200,
         path="/v1/endpoints/churn/predictions?since=1h&version=1&shadow=false&limit=10")
    assert server.delete("/v1/endpoints/churn").status_code == 204
    for pattern in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}",
                    "/v2/models/{name}/ready", "/v2/models/{name}/versions/{version}/ready"):
        call("GET", pattern, 200)
    call("POST", "/v2/models/{name}/infer", 200)
    call("POST", "/v2/models/{name}/versions/{version}/infer", 200)
    # predict through an endpoint routing the model (the endpoint is set up here, not
    # checked: its own routes are called with the endpoint kind's)
    assert server.put("/v1/endpoints/churn", json={
        "model": "churn", "routes": [{"version": 1, "weight": 100}]}).status_code in (200, 201)
    r = call("POST", "/v1/endpoints/{name}/predict", 200)
    assert r.json()["endpoint"] == "churn" and r.headers["X-Basalt-Variant"] == "v1"
    # feedback (the example's ids are unknown: reported per item) and the reports
    assert call("POST", "/v1/feedback", 200).json()["rejected"] == 2
    server.post("/v1/feedback", json={"prediction_id": r.json()["prediction_ids"][0], "label": 1})
    call("GET", "/v1/endpoints/{name}/performance", 200,
         path="/v1/endpoints/churn/performance?window=1h&by=variant")
    call("GET", "/v1/endpoints/{name}/experiment", 200,
         path="/v1/endpoints/churn/experiment?window=1d&metric=accuracy&mde=0.02&alpha=0.05"
              "&power=0.8")
    call("GET", "/v1/endpoints/{name}/shadow", 200, path="/v1/endpoints/churn/shadow?window=1h")
    assert server.delete("/v1/endpoints/churn").status_code == 204
    run = call("POST", "/v1/runs", 201).json()
    call("GET", "/v1/runs", 200, path="/v1/runs?experiment=churn")
    call("PATCH", "/v1/runs/{id}", 200, path="/v1/runs/" + run["id"])
    call("POST", "/v1/runs/{id}/metrics", 200, path="/v1/runs/%s/metrics" % run["id"])
    call("GET", "/v1/runs/{id}", 200, path="/v1/runs/" + run["id"])
    call("GET", "/v1/audit", 200, path="/v1/audit?limit=50")
    # A webhook to a closed local port (its deliveries fail without leaving the machine).
    call("PUT", "/v1/webhooks/{name}", 201,
         json={"url": "http://127.0.0.1:9/hook", "retry_schedule": ["0s"]})
    call("PUT", "/v1/webhooks/{name}", 200, path="/v1/webhooks/churn?dry_run=true",
         json={"url": "http://127.0.0.1:9/other", "retry_schedule": ["0s"]})
    call("GET", "/v1/webhooks", 200, path="/v1/webhooks?limit=10")
    call("GET", "/v1/webhooks/{name}", 200)
    call("GET", "/v1/webhooks/{name}/secret", 200)
    hook = call("POST", "/v1/webhooks/{name}/test", 202).json()
    call("GET", "/v1/webhooks/deliveries", 200,
         path="/v1/webhooks/deliveries?destination=churn&limit=5")
    call("GET", "/v1/webhooks/deliveries/{id}", 200,
         path="/v1/webhooks/deliveries/" + hook["delivery_id"])
    call("POST", "/v1/webhooks/deliveries/{id}/replay", 202,
         path="/v1/webhooks/deliveries/%s/replay" % hook["delivery_id"])
    call("DELETE", "/v1/webhooks/{name}", 204)
    # endpoints (the example routes by alias champion, set above): two revisions, a rollback
    call("PUT", "/v1/endpoints/{name}", 201)
    call("PUT", "/v1/endpoints/{name}", 200, path="/v1/endpoints/churn?dry_run=true",
         json={"model": "churn", "routes": [{"version": 1}]})
    assert server.put("/v1/endpoints/churn", json={"model": "churn", "routes": [{"version": 1}]}
                      ).status_code == 200
    call("GET", "/v1/endpoints", 200, path="/v1/endpoints?limit=10")
    call("GET", "/v1/endpoints/{name}", 200)
    call("GET", "/v1/endpoints/{name}/revisions", 200,
         path="/v1/endpoints/churn/revisions?limit=1&cursor=3")
    call("POST", "/v1/endpoints/{name}/rollback", 200)
    # rollouts (issue 10): version 4 as the example's candidate; started, read, paused,
    # resumed and promoted (which moves champion to it), then a second one aborted
    r = server.post("/v1/models/churn/versions?format=basalt_json", data=artifact,
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201 and r.json()["version"] == 4, r.text
    assert server.post("/v1/models/churn/versions/4/approve").status_code == 200
    ro = "/v1/endpoints/churn/rollouts/"
    roll = call("POST", "/v1/endpoints/{name}/rollouts", 201).json()
    call("GET", "/v1/endpoints/{name}/rollouts", 200, path="/v1/endpoints/churn/rollouts?limit=5")
    call("GET", "/v1/endpoints/{name}/rollouts/{id}", 200, path=ro + roll["id"])
    for verb in ("pause", "resume", "promote"):
        call("POST", "/v1/endpoints/{name}/rollouts/{id}/" + verb, 200,
             path=ro + roll["id"] + "/" + verb)
    assert server.get("/v1/models/churn").json()["aliases"]["champion"] == 4
    r = server.post("/v1/endpoints/churn/rollouts",
                    json={"candidate": {"version": 1}, "steps": [10, 100], "step_interval": "1h"})
    assert r.status_code == 201, r.text
    call("POST", "/v1/endpoints/{name}/rollouts/{id}/abort", 200, path=ro + r.json()["id"] + "/abort")
    call("DELETE", "/v1/endpoints/{name}", 204)
    call("DELETE", "/v1/models/{name}/aliases/{alias}", 204)
    call("DELETE", "/v1/models/{name}", 204)
    call("GET", "/v1/kinds", 200)
    # topics: PUT answers 201 when it creates, the documented 200 when it replaces
    assert server.put("/v1/topics/churn", json={}).status_code == 201
    call("PUT", "/v1/topics/{name}", 200)
    # triggers (the example: a job for each matching event of topic churn)
    assert server.put("/v1/triggers/churn", json=example("PUT", "/v1/triggers/{name}")
                      ).status_code == 201
    call("PUT", "/v1/triggers/{name}", 200)
    call("GET", "/v1/triggers", 200, path="/v1/triggers?limit=10")
    call("GET", "/v1/triggers/{name}", 200)
    call("DELETE", "/v1/triggers/{name}", 204)
    call("GET", "/v1/topics", 200, path="/v1/topics?limit=10")
    call("GET", "/v1/topics/{name}", 200)
    call("POST", "/v1/topics/{name}/events", 200)
    call("GET", "/v1/topics/{name}/events", 200,
         path="/v1/topics/churn/events?from_offset=0&limit=10")
    call("GET", "/v1/topics/{name}/events", 200,
         path="/v1/topics/churn/events?from_time=2020-01-01T00:00:00Z")
    # a live tail: the head is checked (text/event-stream), the endless body is not read
    call("GET", "/v1/topics/{name}/stream", 200,
         path="/v1/topics/churn/stream?from_offset=0&heartbeat=1s", stream=True).close()
    g = "/v1/topics/{name}/consumers/{group}"
    gp = "/v1/topics/churn/consumers/workers"
    assert server.put(gp, json={}).status_code == 201
    call("PUT", g, 200, path=gp)
    call("GET", "/v1/topics/{name}/consumers", 200)
    call("GET", g, 200, path=gp)
    ids = [i["delivery_id"] for i in
           call("POST", g + "/fetch", 200, path=gp + "/fetch?max=2&wait=0").json()["items"]]
    assert len(ids) == 2
    call("POST", g + "/in_progress", 200, path=gp + "/in_progress", json={"delivery_ids": ids})
    call("POST", g + "/nack", 200, path=gp + "/nack",
         json={"delivery_ids": ids[1:], "delay": "5s"})
    call("POST", g + "/ack", 200, path=gp + "/ack", json={"delivery_ids": ids})
    call("POST", "/v1/topics/{name}/replay", 200, path="/v1/topics/orders-dlq/replay")
    call("DELETE", g, 204, path=gp)
    call("DELETE", "/v1/topics/{name}", 204)
    # jobs: a diagnostic sleep job, its kinds, cancel (finalized: 409) and retry
    job = call("POST", "/v1/jobs", 201).json()
    call("GET", "/v1/jobs", 200, path="/v1/jobs?kind=sleep&limit=10")
    call("GET", "/v1/jobs/{id}", 200, path="/v1/jobs/" + job["id"])
    call("GET", "/v1/job-kinds", 200)
    long_job = server.post("/v1/jobs", json={"kind": "sleep", "args": {"seconds": 60}}).json()
    call("POST", "/v1/jobs/{id}/cancel", 200, path="/v1/jobs/%s/cancel" % long_job["id"],
         use_example=False)
    deadline = time.monotonic() + 60
    while server.get("/v1/jobs/" + long_job["id"]).json()["state"] != "cancelled":
        assert time.monotonic() < deadline, "the sleep job was not cancelled"
        time.sleep(0.05)
    call("POST", "/v1/jobs/{id}/retry", 200, path="/v1/jobs/%s/retry" % long_job["id"],
         use_example=False)
    server.post("/v1/jobs/%s/cancel" % long_job["id"])
    # an error answer has the documented envelope too
    r = server.get("/v1/models/churn")
    assert r.status_code == 404
    Draft202012Validator(doc["components"]["schemas"]["Error"]).validate(r.json())
    # ... and on /v2 the Open Inference Protocol's shape, as each /v2 operation documents
    for method, path, pattern in (("GET", "/v2/models/churn", "/v2/models/{name}"),
                                  ("POST", "/v2/models/churn/infer", "/v2/models/{name}/infer")):
        r = server.request(method, path, json={"inputs": []} if method == "POST" else None)
        assert r.status_code == 404, r.text
        ref = op_of(method, pattern)["responses"]["4XX"]["$ref"].rsplit("/", 1)[1]
        schema = doc["components"]["responses"][ref]["content"]["application/json"]["schema"]
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        Draft202012Validator(schema).validate(r.json())
        assert isinstance(r.json()["error"], str) and "request_id" not in r.json()
    routes = {(m, re.sub(r"\{(\w+)\*\}", r"{\1}", p)) for m, p, _, _ in source_routes()}
    assert called == routes, routes - called
