"""Input strictness: what a request may hold, checked once where it is read.

- JSON strings (keys too) hold no \\u0000, no unpaired surrogate, no raw control character
  and only UTF-8: cJSON keeps C strings, so "evil\\u0000suffix" used to create model "evil".
  The 400 names the value's path. Path and query parameters decode to UTF-8 without %00.
- Version path segments are canonical integers; all-dots model names are refused.
- API keys: expires_at in the future, rate limits bounded, Retry-After a positive integer.
- Predict and infer bodies must be JSON (415 otherwise); KServe v2 tensors' data must fit
  their datatype and the datatype the input.
- Every error under /v2 is the Open Inference Protocol's {"error": "<message>"}.

Oracles: Python's json module (what a string decodes to) and the KServe v2 datatype ranges
(numpy's iinfo/finfo).
"""
import http.client
import json

import numpy as np
import pytest
from requests.structures import CaseInsensitiveDict

from modelkit import (CITY_DOC, assert_error, assert_oip_error, linear_bytes, predict,
                      publish, upload)

# A model with every input type: float, int (by override), bool, category.
TYPED_DOC = {
    "basalt_model": 1,
    "inputs": [{"name": "f", "type": "float"}, {"name": "i", "type": "float"},
               {"name": "b", "type": "bool"},
               {"name": "c", "type": "category", "categories": ["u", "v"]}],
    "preprocess": [{"columns": ["f", "i", "b"]}, {"columns": ["c"], "steps": [{"op": "one_hot"}]}],
    "estimator": {"type": "linear", "link": "identity", "coef": [[1.0, 2.0, 4.0, 8.0, 16.0]],
                  "intercept": [0.0]},
    "output": {"task": "regression"},
}

JSON = {"Content-Type": "application/json"}


def post_raw(srv, path, data, **kw):
    return srv.post(path, data=data, headers=JSON, **kw)


class _Sent:
    def __init__(self, path):
        self.path_url = path


class RawResponse:
    """What assert_error reads of a requests response, for a request sent byte for byte:
    requests "requotes" URLs (it would send %31 as 1)."""

    def __init__(self, path, resp):
        self.request = _Sent(path)
        self.status_code = resp.status
        self.headers = CaseInsensitiveDict(resp.getheaders())
        self.text = resp.read().decode("utf-8", "replace")

    def json(self):
        return json.loads(self.text)


def send(srv, method, path, body=None):
    """method path exactly as given, with the admin key (and a JSON body when given)."""
    c = http.client.HTTPConnection(srv.host, srv.port, timeout=30)
    try:
        h = {"Authorization": "Bearer " + srv.admin_key}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        c.request(method, path, body=data, headers=h)
        return RawResponse(path, c.getresponse())
    finally:
        c.close()


@pytest.fixture(scope="module")
def lin(shared_server):
    publish(shared_server, "slin", linear_bytes((3.0, 5.0), 1.0), "basalt_json")
    return "slin"


@pytest.fixture(scope="module")
def city(shared_server):
    publish(shared_server, "scity", json.dumps(CITY_DOC).encode(), "basalt_json")
    return "scity"


@pytest.fixture(scope="module")
def typed(shared_server):
    meta = {"input_schema": [{}, {"type": "int"}, {}, {}]}
    publish(shared_server, "styped", json.dumps(TYPED_DOC).encode(), "basalt_json", metadata=meta)
    return "styped"


# ---- strings ------------------------------------------------------------------------------

def test_nul_in_a_model_name_is_400_and_creates_nothing(shared_server):
    srv = shared_server
    r = post_raw(srv, "/v1/models", b'{"name": "evil\\u0000suffix"}')
    assert_error(r, 400, field="name", code="invalid_input", mentions="\\u0000")
    assert_error(srv.get("/v1/models/evil"), 404)
    assert "evil" not in [m["name"] for m in srv.get("/v1/models").json()["items"]]


@pytest.mark.parametrize("body,field,code", [
    (b'{"name": "ok", "description": "a\\u0000b"}', "description", "invalid_input"),
    (b'{"name": "ok", "description": "\\ud800"}', "description", "invalid_input"),
    (b'{"name": "ok", "description": "\\udc00x"}', "description", "invalid_input"),
    (b'{"name": "ok", "tags": ["fine", "b\\u0000"]}', "tags[1]", "invalid_input"),
    (b'{"name": "ok\xff"}', "name", "malformed_json"),
    (b'{"name": "ok", "description": "\xc0\xaf"}', "description", "malformed_json"),
    (b'{"name": "ok", "description": "\xed\xa0\x80"}', "description", "malformed_json"),
    (b'{"name": "ok", "description": "tab\there"}', "description", "malformed_json"),
    (b'{"name": "ok", "descr\\u0000iption": "x"}', None, "invalid_input"),
])
def test_bad_strings_in_a_body_are_400_naming_the_field(shared_server, body, field, code):
    """Python's json module is the oracle for what is JSON: it refuses the raw bytes and raw
    control characters; it takes the escapes (\\u0000, lone surrogates), which basalt refuses
    (cJSON cuts the first and refuses lone surrogates itself)."""
    try:
        json.loads(body.decode("utf-8"))
        python_takes_it = True
    except (UnicodeDecodeError, ValueError):
        python_takes_it = False
    assert python_takes_it == (b"\\u" in body), body
    r = post_raw(shared_server, "/v1/models", body)
    e = assert_error(r, 400, code=code)
    if field is not None:
        assert e.get("field") == field, e
    assert shared_server.get("/v1/models/ok").status_code == 404


def test_bad_strings_in_keys_runs_and_metadata(shared_server, lin):
    srv = shared_server
    assert_error(post_raw(srv, "/v1/keys", b'{"name": "k\\u0000", "role": "viewer"}'), 400,
                 field="name")
    assert_error(post_raw(srv, "/v1/runs", b'{"experiment": "e", "params": {"lr": "1\\u0000"}}'),
                 400, field="params.lr")
    # metadata of an upload: multipart part and query parameter
    art = linear_bytes((1.0, 1.0), 0.0)
    files = {"artifact": ("m.json", art, "application/octet-stream"),
             "metadata": ("meta.json", b'{"description": "x\\u0000y"}', "application/json")}
    r = srv.post("/v1/models/%s/versions" % lin, files=files)
    assert_error(r, 400, field="metadata", mentions="description")
    r = upload(srv, lin, art, "basalt_json", metadata={"description": "x\u0000y"})
    assert_error(r, 400, field="metadata", mentions="description")
    # A part name holding a NUL byte was read as the name before it ("artifact").
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"artifact\x00evil\"\r\n\r\n" +
            art + b"\r\n--XyZ--\r\n")
    r = srv.post("/v1/models/%s/versions?format=basalt_json" % lin, data=body,
                 headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert_error(r, 400, code="invalid_input")
    assert len(srv.get("/v1/models/%s/versions" % lin).json()["items"]) == 1


def test_nul_in_predict_keys_and_values_is_400(shared_server, lin, city):
    """{"b\\u0000": 2} was read as feature b, and "paris\\u0000" as category paris."""
    srv = shared_server
    ok = predict(srv, lin, {"inputs": {"a": 1, "b": 2}})
    assert ok.status_code == 200 and ok.json()["predictions"] == [14.0]
    for body, field in ((b'{"inputs": {"a": 1, "b\\u0000": 2}}', "inputs"),
                        (b'{"inputs": {"a\\u0000x": 1, "b": 2}}', "inputs"),
                        (b'{"inputs": [{"a": 1, "b\\u0000": 2}]}', "inputs[0]")):
        r = post_raw(srv, "/v1/models/%s/predict" % lin, body)
        assert_error(r, 400, field=field, code="invalid_input", mentions="a key in")
    for body, field in ((b'{"inputs": {"x": 1, "city": "paris\\u0000"}}', "inputs.city"),
                        (b'{"inputs": {"x": 1, "city": "par\xffis"}}', "inputs.city"),
                        (b'{"instances": [[1, "rome\\u0000"]]}', "instances[0][1]")):
        r = post_raw(srv, "/v1/models/%s/predict" % city, body)
        assert_error(r, 400, field=field)
    # and on /v2: the message names the path
    body = (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]},'
            b' {"name": "city", "shape": [1], "datatype": "BYTES", "data": ["rome\\u0000"]}]}')
    r = post_raw(srv, "/v2/models/%s/infer" % city, body)
    assert_oip_error(r, 400, mentions="inputs[1].data[0]")


def test_path_and_query_parameters_decode_to_utf8_without_nul(shared_server, lin):
    srv = shared_server
    for path in ("/v1/models/a%00b", "/v1/models/%ff", "/v1/models/%c0%af", "/v1/models/a%zz"):
        assert_error(send(srv, "GET", path), 400, field="name", code="invalid_input")
    assert_error(send(srv, "GET", "/v2/models/%ff"), 400, mentions="'name'")
    # A query value that does not decode used to read as an absent parameter: the listing
    # ignored ?prefix= and the upload ignored its metadata.
    for q in ("prefix=%00", "prefix=%ff", "prefix=%e2%82", "prefix=a%2", "tag=x%00"):
        r = send(srv, "GET", "/v1/models?" + q)
        assert_error(r, 400, field=q.split("=")[0], code="invalid_input")
    r = srv.post("/v1/models/%s/versions?format=basalt_json&metadata=%%7B%%7D%%00" % lin,
                 data=linear_bytes((1.0, 1.0), 0.0), headers={"Content-Type": "application/octet-stream"})
    assert_error(r, 400, field="metadata")
    assert srv.get("/v1/models?prefix=sl").status_code == 200
    assert srv.get("/v1/models?prefix=%73l").json()["items"][0]["name"] == lin


# ---- versions and names -------------------------------------------------------------------

NOT_CANONICAL = ["+1", "%201", "1%20", "01", "001", "%31", "1.0", "1e0", "0", "-1", "0x1",
                 "%EF%BC%91", "1000000001", "99999999999999999999", "4294967297"]


@pytest.mark.parametrize("v", NOT_CANONICAL)
def test_version_segments_are_canonical_integers(shared_server, lin, v):
    srv = shared_server
    assert srv.get("/v1/models/%s/versions/1" % lin).status_code == 200
    base = "/v1/models/%s/versions/%s" % (lin, v)
    for r in (send(srv, "GET", base), send(srv, "GET", base + "/artifact"),
              send(srv, "POST", base + "/predict", {"inputs": {"a": 1, "b": 2}}),
              send(srv, "POST", base + "/archive", {})):
        assert_error(r, 400, field="version", code="invalid_input")
    base = "/v2/models/%s/versions/%s" % (lin, v)
    ok = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
                     {"name": "b", "shape": [1], "datatype": "FP64", "data": [2]}]}
    for r in (send(srv, "GET", base), send(srv, "GET", base + "/ready"),
              send(srv, "POST", base + "/infer", ok)):
        assert_oip_error(r, 400, mentions="version")
    if v != "%31":  # a query is form-decoded first, where %31 is 1
        r = send(srv, "GET", "/v1/models/%s/versions?cursor=%s" % (lin, v))
        assert_error(r, 400, field="cursor")
    # the version still exists and still serves under its one spelling
    r = srv.post("/v1/models/%s/versions/1/predict" % lin, json={"inputs": {"a": 1, "b": 2}})
    assert r.status_code == 200 and r.json()["version"] == 1


@pytest.mark.parametrize("name", [".", "..", "...", "....", "." * 128])
def test_all_dots_model_names_are_refused(shared_server, name):
    r = shared_server.post("/v1/models", json={"name": name})
    assert_error(r, 400, field="name", code="invalid_input")


def test_names_with_dots_and_more_are_fine(shared_server):
    for name in (".a", "a.", "a..b", "v1.2.3"):
        assert shared_server.post("/v1/models", json={"name": name}).status_code == 201, name


# ---- API keys -----------------------------------------------------------------------------

def test_key_expiring_in_the_past_is_400(shared_server):
    for when in ("2001-01-01T00:00:00Z", "1970-01-01T00:00:00Z"):
        r = shared_server.post("/v1/keys", json={"name": "old", "role": "viewer",
                                                 "expires_at": when})
        assert_error(r, 400, field="expires_at", code="invalid_input", mentions="future")
    k = shared_server.create_key("viewer", expires_at="2099-01-01T00:00:00Z")
    assert shared_server.get("/v1/info", key=k["key"]).status_code == 200


@pytest.mark.parametrize("limit,field", [
    ({"rps": 1e-300}, "rate_limit.rps"),
    ({"rps": 0.0009}, "rate_limit.rps"),
    ({"rps": 0}, "rate_limit.rps"),
    ({"rps": -5}, "rate_limit.rps"),
    ({"rps": 1e6 + 1}, "rate_limit.rps"),
    ({"rps": 1e300}, "rate_limit.rps"),
    ({"rps": "5"}, "rate_limit.rps"),
    ({"burst": 5}, "rate_limit.rps"),
    ({"rps": 5, "burst": 0.5}, "rate_limit.burst"),
    ({"rps": 5, "burst": 0}, "rate_limit.burst"),
    ({"rps": 5, "burst": -1}, "rate_limit.burst"),
    ({"rps": 5, "burst": 1e7}, "rate_limit.burst"),
    ({"rps": 5, "burst": True}, "rate_limit.burst"),
    ({"rps": 5, "brust": 10}, "rate_limit"),
])
def test_rate_limits_are_bounded(shared_server, limit, field):
    r = shared_server.post("/v1/keys", json={"name": "rl", "role": "viewer", "rate_limit": limit})
    assert_error(r, 400, field=field, code="invalid_input")


def test_rate_limit_non_finite_is_400(shared_server):
    r = post_raw(shared_server, "/v1/keys",
                 b'{"name": "rl", "role": "viewer", "rate_limit": {"rps": 1e999}}')
    assert_error(r, 400, field="rate_limit.rps")


def test_rate_limit_edges_are_accepted(shared_server):
    for limit in ({"rps": 0.001}, {"rps": 1e6, "burst": 1e6}, {"rps": 2, "burst": 1},
                  {"rps": 2, "burst": None}):
        r = shared_server.post("/v1/keys", json={"name": "rl", "role": "viewer",
                                                 "rate_limit": limit})
        assert r.status_code == 201, (limit, r.text)


def test_retry_after_saturates_for_tiny_default_rates(start_server):
    """The default rate is a setting (0 disables it); 1e-300 gave Retry-After: -2147483648."""
    s = start_server("--threads", "1", "--rate-limit-rps", "1e-300")
    seen = []
    for _ in range(5):
        r = s.get("/v1/info")
        if r.status_code == 429:
            seen.append(r)
    assert seen, "no 429"
    for r in seen:
        assert_error(r, 429, code="rate_limited")
        ra = r.headers["retry-after"]
        assert ra.isdigit() and 1 <= int(ra) <= 86400, ra
    # Same on /v2, in that protocol's shape.
    r = s.get("/v2/models/nope")
    assert_oip_error(r, 429)
    assert r.headers["retry-after"].isdigit()


# ---- media types --------------------------------------------------------------------------

@pytest.mark.parametrize("ctype", ["text/plain", "text/plain; charset=utf-8", "application/xml",
                                   "application/jsonx", "application/json-seq",
                                   "multipart/form-data; boundary=x"])
def test_predict_with_a_non_json_content_type_is_415(shared_server, lin, ctype):
    body = json.dumps({"inputs": {"a": 1, "b": 2}}).encode()
    h = {"Content-Type": ctype}
    r = shared_server.post("/v1/models/%s/predict" % lin, data=body, headers=h)
    assert_error(r, 415, code="unsupported_media_type")
    r = shared_server.post("/v1/models/%s/versions/1/predict" % lin, data=body, headers=h)
    assert_error(r, 415, code="unsupported_media_type")
    v2 = json.dumps({"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
                                {"name": "b", "shape": [1], "datatype": "FP64", "data": [2]}]})
    r = shared_server.post("/v2/models/%s/infer" % lin, data=v2.encode(), headers=h)
    assert_oip_error(r, 415)


@pytest.mark.parametrize("ctype", [None, "application/json", "application/json; charset=utf-8",
                                   "Application/JSON;charset=UTF-8",
                                   "application/x-www-form-urlencoded"])
def test_predict_json_content_types_are_accepted(shared_server, lin, ctype):
    """No Content-Type, JSON with parameters, and what `curl -d` sends (the README's
    examples) are read as JSON."""
    body = json.dumps({"inputs": {"a": 1, "b": 2}}).encode()
    h = {} if ctype is None else {"Content-Type": ctype}
    r = shared_server.post("/v1/models/%s/predict" % lin, data=body, headers=h)
    assert r.status_code == 200 and r.json()["predictions"] == [14.0], r.text


# ---- KServe v2 datatypes ------------------------------------------------------------------

def tensor(name, dt, data, shape=None):
    return {"name": name, "datatype": dt, "shape": shape or [len(data)], "data": data}


def typed_inputs(**over):
    t = {"f": tensor("f", "FP64", [1.5]), "i": tensor("i", "INT64", [2]),
         "b": tensor("b", "BOOL", [True]), "c": tensor("c", "BYTES", ["v"])}
    t.update(over)
    return list(t.values())


def infer(srv, name, inputs):
    return srv.post("/v2/models/%s/infer" % name, json={"inputs": inputs})


def test_typed_model_oracle(shared_server, typed):
    r = infer(shared_server, typed, typed_inputs())
    assert r.status_code == 200, r.text
    out = [o for o in r.json()["outputs"] if o["name"] == "predictions"][0]
    assert out["data"] == [1.5 + 2 * 2 + 4 * 1 + 16 * 1]
    # other integer widths and FP32 values within range are fine
    for dt, v in (("UINT8", 255), ("INT8", -128), ("INT16", 32767), ("UINT64", 2 ** 40),
                  ("FP32", 3.0e38), ("FP16", 65504.0), ("INT32", -(2 ** 31))):
        r = infer(shared_server, typed, typed_inputs(f=tensor("f", dt, [v])))
        assert r.status_code == 200, (dt, v, r.text)
    # bool inputs take 0/1 in integer tensors, categories integer codes in integer tensors
    r = infer(shared_server, typed, typed_inputs(b=tensor("b", "UINT8", [1])))
    assert r.status_code == 200, r.text


def datatype_cases():
    i8, u8, i16 = np.iinfo(np.int8), np.iinfo(np.uint8), np.iinfo(np.int16)
    i32, u32 = np.iinfo(np.int32), np.iinfo(np.uint32)
    f16, f32 = float(np.finfo(np.float16).max), float(np.finfo(np.float32).max)
    return [
        ("INT8", [int(i8.max) + 1]), ("INT8", [int(i8.min) - 1]), ("INT8", [1000]),
        ("UINT8", [int(u8.max) + 1]), ("UINT8", [-1]), ("UINT16", [-1]), ("UINT32", [-1]),
        ("UINT64", [-1]), ("UINT32", [int(u32.max) + 1]), ("INT16", [int(i16.max) + 1]),
        ("INT32", [int(i32.max) + 1]), ("INT64", [2.0 ** 63]), ("UINT64", [2.0 ** 64]),
        ("INT32", [1.5]), ("INT64", [0.1]), ("UINT8", [2.5]),
        ("INT64", ["3"]), ("INT8", [True]),
        ("FP16", [f16 * 1.01]), ("FP16", [-70000.0]), ("FP32", [f32 * 1.01]),
        ("FP32", [-1e39]), ("FP64", ["1.5"]), ("FP32", [False]),
    ]


@pytest.mark.parametrize("dt,data", datatype_cases())
def test_tensor_data_must_fit_its_datatype(shared_server, typed, dt, data):
    r = infer(shared_server, typed, typed_inputs(f=tensor("f", dt, data)))
    assert_oip_error(r, 400, mentions="'f'")


@pytest.mark.parametrize("over,mentions", [
    ({"b": tensor("b", "BOOL", [1])}, "true or false"),
    ({"b": tensor("b", "BOOL", ["true"])}, "true or false"),
    ({"c": tensor("c", "BYTES", [1])}, "a string"),
    ({"f": tensor("f", "BYTES", [1.5])}, "a string"),  # was taken as the number 1.5
    ({"f": tensor("f", "BYTES", ["1.5"])}, "cannot feed feature 'f'"),
    ({"i": tensor("i", "BYTES", ["2"])}, "cannot feed feature 'i'"),
    ({"b": tensor("b", "BYTES", ["true"])}, "cannot feed feature 'b'"),
    ({"f": tensor("f", "BOOL", [True])}, "cannot feed feature 'f'"),
    ({"c": tensor("c", "FP64", [1.0])}, "cannot feed feature 'c'"),
    ({"c": tensor("c", "BOOL", [True])}, "cannot feed feature 'c'"),
    ({"b": tensor("b", "FP32", [1.0])}, "cannot feed feature 'b'"),
    ({"i": tensor("i", "INT64", [2.5])}, "whole number"),
    ({"f": tensor("f", "FP64", [1, 2], shape=[1])}, "shape"),
    ({"f": tensor("f", "FP64", [1], shape=[2])}, "shape"),
    ({"f": tensor("f", "FP64", [[1], [2]], shape=[1, 1])}, "shape"),
])
def test_tensor_datatype_must_fit_the_input(shared_server, typed, over, mentions):
    r = infer(shared_server, typed, typed_inputs(**over))
    assert_oip_error(r, 400, mentions=mentions)


def test_one_matrix_tensor_is_checked_per_column(shared_server, typed, lin):
    # float-only model: an FP32 [N, 2] matrix is fine, BYTES or BOOL is not
    ok = {"name": "m", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}
    r = infer(shared_server, lin, [ok])
    assert r.status_code == 200, r.text
    for dt, data in (("BYTES", [["1", "2"], ["3", "4"]]), ("BOOL", [[True, False], [True, True]]),
                     ("INT8", [[1, 2], [3, 400]])):
        r = infer(shared_server, lin, [{"name": "m", "datatype": dt, "shape": [2, 2], "data": data}])
        assert_oip_error(r, 400, mentions="'m'")
    # shape product must equal the data length
    r = infer(shared_server, lin, [{"name": "m", "datatype": "FP64", "shape": [2, 2],
                                    "data": [1, 2, 3]}])
    assert_oip_error(r, 400, mentions="shape")


# ---- Open Inference Protocol errors ---------------------------------------------------------

def test_v2_errors_are_oip_shaped(shared_server, lin):
    srv = shared_server
    ok = [tensor("a", "FP64", [1]), tensor("b", "FP64", [2])]
    viewer = srv.create_key("viewer")["key"]
    limited = srv.create_key("predictor", rate_limit={"rps": 0.001, "burst": 1})["key"]
    cases = [
        (srv.get("/v2/models/nope"), 404, "nope"),
        (srv.get("/v2/models/nope/ready"), 404, None),
        (infer(srv, "nope", ok), 404, None),
        (srv.get("/v2/models/%s/versions/9" % lin), 404, None),
        (srv.get("/v2/nothing-here"), 404, None),
        (srv.get("/v2/models/%s/infer" % lin), 405, "GET"),
        (srv.delete("/v2/models/%s" % lin), 405, None),
        (srv.get("/v2/models/%s" % lin, key=None), 401, None),
        (srv.get("/v2/models/%s" % lin, key="bsk_nope"), 401, None),
        (srv.post("/v2/models/%s/infer" % lin, key=viewer, json={"inputs": ok}), 403, "predictor"),
        (srv.post("/v2/models/%s/infer" % lin, data=b"{", headers=JSON), 400, None),
        (srv.post("/v2/models/%s/infer" % lin, json={"inputs": []}), 400, None),
        (srv.post("/v2/models/%s/infer" % lin, data=b"{}", headers={"Content-Type": "text/csv"}),
         415, "content type"),
    ]
    r1 = srv.post("/v2/models/%s/infer" % lin, key=limited, json={"inputs": ok})
    assert r1.status_code == 200, r1.text
    cases.append((srv.post("/v2/models/%s/infer" % lin, key=limited, json={"inputs": ok}), 429,
                  None))
    for r, status, mentions in cases:
        assert_oip_error(r, status, mentions)
    assert cases[-1][0].headers["retry-after"].isdigit()
    assert "www-authenticate" in {k.lower() for k in cases[7][0].headers}
    assert cases[5][0].headers["allow"] == "POST"
    # the request id is the client's, in the header only
    r = srv.get("/v2/models/nope", headers={"X-Request-Id": "trace-42"})
    assert_oip_error(r, 404)
    assert r.headers["x-request-id"] == "trace-42" and "trace-42" not in r.text
    # /v1 keeps basalt's envelope; a path that only starts with "v2" is not under /v2
    assert_error(srv.get("/v1/models/nope"), 404, code="not_found")
    r = srv.get("/v2x/models")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert r.json()["request_id"] == r.headers["x-request-id"]


def test_h2o_rejections_on_v2_are_oip_shaped(start_server):
    """A body over max_body_bytes is refused by h2o before routing: on /v2 the rewritten
    reply is OIP-shaped too, elsewhere basalt's."""
    s = start_server("--max-body-bytes", "1KiB")
    body = b'{"inputs": [' + b" " * 4096 + b"]}"
    r = s.post("/v2/models/x/infer", data=body, headers=JSON)
    assert_oip_error(r, 413, mentions="1024")
    r = s.post("/v1/models/x/predict", data=body, headers=JSON)
    assert_error(r, 413, code="payload_too_large")
