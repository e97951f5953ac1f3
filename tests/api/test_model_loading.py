"""Model lifecycle in the serving layer: a version loads on first use on a worker (the I/O
thread keeps answering other requests meanwhile), once however many requests wait for it;
versions beyond the memory budget are evicted least recently used first and load again when
asked for; a version whose artifact is damaged on disk fails with 503, not a crash. Checked
through /metrics (basalt_model_loaded, _loads_total, _memory_bytes) and predictions whose
expected values follow from the hand-written models."""
import hashlib
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ARTIFACT_STORE
from modelkit import (artifact_files, assert_error, create_model, damage_stored_blob,
                      linear_bytes, predict, upload_ok)


def big_forest(n_trees, depth=4, base=0.0):
    """A regression forest of n_trees identical full trees: the root splits on a at 0.5,
    the other splits on b at 0.5, and leaves alternate -1 / +1. Every tree gives the same
    leaf, so the averaged prediction is that leaf: +1 when a > 0.5 and b > 0.5 (the
    right-most leaf, an even node id), else -1 for a <= 0.5 and b <= 0.5 (left-most, odd)."""
    nodes = 2 ** (depth + 1) - 1
    tree = {"group": 0, "feature": [], "threshold": [], "left": [], "right": [], "value": []}
    for i in range(nodes):
        l, r = 2 * i + 1, 2 * i + 2
        inner = l < nodes
        tree["feature"].append((0 if i == 0 else 1) if inner else -1)
        tree["threshold"].append(0.5 if inner else 0)
        tree["left"].append(l if inner else -1)
        tree["right"].append(r if inner else -1)
        tree["value"].append(None if inner else [1.0 if i % 2 else -1.0])
    return json.dumps({
        "basalt_model": 1,
        "inputs": [{"name": "a", "type": "float"}, {"name": "b", "type": "float"}],
        "estimator": {"type": "trees", "base": [base], "scale": 1.0 / n_trees, "leaf_width": 1,
                      "transform": "identity", "trees": [tree] * n_trees},
        "output": {"task": "regression", "n_outputs": 1}}).encode()


# Leaf ids of a depth-4 full tree are 15..30: the left-most (15, odd) holds +1 and the
# right-most (30, even) holds -1 under the alternation above.
LOW, HIGH = {"a": 0.1, "b": 0.1}, {"a": 0.9, "b": 0.9}
LOW_WANT, HIGH_WANT = 1.0, -1.0


@pytest.fixture(scope="module")
def forest():
    return big_forest(12000)  # about 9 MB, a few hundred ms to load


def version_metrics(srv, name, version=1):
    m = srv.metrics()
    labels = {"tenant": "default", "model": name, "version": str(version)}
    return {k: m.get("basalt_model_" + k, 0, **labels)
            for k in ("loaded", "loads_total", "load_failures_total", "memory_bytes")}


def push(srv, name, artifact):
    """Creates the model and uploads one version, without approving or aliasing it, so
    nothing loads it before the first predict."""
    create_model(srv, name)
    return upload_ok(srv, name, artifact, "basalt_json")["version"]


def one_prediction(r):
    """The single prediction of a 200 response, rounded: the forest sums 12000 float32
    leaf contributions, the linear models give small exact integers."""
    assert r.status_code == 200, r.text[:500]
    return round(r.json()["predictions"][0], 3)


def test_first_use_loads_on_a_worker_while_the_io_thread_serves(start_server, forest):
    """With one I/O thread, a /healthz sent while the first predict's model is loading is
    answered before the load finishes: the load does not run on the I/O thread."""
    srv = start_server("--threads", "1")
    v = push(srv, "big", forest)
    assert version_metrics(srv, "big")["loaded"] == 0
    result = {}

    def first_predict():
        result["r"] = predict(srv, "big", {"inputs": LOW}, version=v)

    t = threading.Thread(target=first_predict)
    t.start()
    deadline = time.monotonic() + 60
    while "loading big version 1" not in srv.stderr():
        assert time.monotonic() < deadline, srv.stderr()[-2000:]
        time.sleep(0.005)
    reply, _ = srv.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                       timeout=60)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    t.join(60)
    assert one_prediction(result["r"]) == LOW_WANT
    # In the server's own log (one I/O thread, so one order): /healthz was answered between
    # the start and the end of the load.
    # Log lines reach stderr through a background writer (within 50 ms): wait for them.
    deadline = time.monotonic() + 30
    while "loaded big version 1" not in srv.stderr():
        assert time.monotonic() < deadline, srv.stderr()[-2000:]
        time.sleep(0.01)
    lines = srv.stderr().splitlines()
    loading = lines.index(next(l for l in lines if "loading big version 1" in l))
    loaded = lines.index(next(l for l in lines if "loaded big version 1" in l))
    healthz = [i for i, l in enumerate(lines) if '"route":"/healthz"' in l and i > loading]
    assert healthz and healthz[0] < loaded, \
        "the I/O thread answered /healthz only after the model had loaded"
    m = version_metrics(srv, "big")
    assert m["loaded"] == 1 and m["loads_total"] == 1 and m["memory_bytes"] > 0


def test_many_first_requests_share_one_load(server, forest):
    v = push(server, "herd", forest)
    rows = [LOW, HIGH] * 10
    with ThreadPoolExecutor(20) as ex:
        got = list(ex.map(lambda row: one_prediction(predict(server, "herd", {"inputs": row},
                                                             version=v)), rows))
    assert got == [LOW_WANT, HIGH_WANT] * 10
    assert version_metrics(server, "herd")["loads_total"] == 1


def test_kserve_metadata_and_infer_load_on_first_use(server):
    v = push(server, "kv", linear_bytes([2.0, -1.0], 0.5))
    r = server.get("/v2/models/kv/versions/%d" % v)
    assert r.status_code == 200, r.text
    assert [i["name"] for i in r.json()["inputs"]] == ["a", "b"]
    assert version_metrics(server, "kv")["loaded"] == 1
    r = server.post("/v2/models/kv/versions/%d/infer" % v, json={"inputs": [
        {"name": "a", "datatype": "FP64", "shape": [2], "data": [1.0, 3.0]},
        {"name": "b", "datatype": "FP64", "shape": [2], "data": [4.0, 0.0]}]})
    assert r.status_code == 200, r.text
    (out,) = [o for o in r.json()["outputs"] if o["name"] == "predictions"]
    assert out["data"] == pytest.approx([2.0 * 1 - 4 + 0.5, 2.0 * 3 - 0 + 0.5], abs=1e-5)


def test_client_gone_while_its_model_loads(server, forest):
    """The request's connection closes while the worker loads: the resumed handler finds
    the request gone and drops it; the server stays healthy (and clean under ASan)."""
    v = push(server, "gone", forest)
    body = json.dumps({"inputs": LOW}).encode()
    for _ in range(3):
        s = socket.create_connection((server.host, server.port))
        s.sendall(("POST /v1/models/gone/versions/%d/predict HTTP/1.1\r\nHost: x\r\n"
                   "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                   "Content-Length: %d\r\n\r\n" % (v, server.admin_key, len(body))).encode() + body)
        s.close()
    deadline = time.monotonic() + 60
    while version_metrics(server, "gone")["loaded"] != 1:
        assert time.monotonic() < deadline, server.stderr()[-2000:]
        time.sleep(0.02)
    assert server.get("/healthz").status_code == 200
    assert one_prediction(predict(server, "gone", {"inputs": HIGH}, version=v)) == HIGH_WANT
    assert version_metrics(server, "gone")["loads_total"] == 1


def test_lru_eviction_under_the_memory_budget(start_server):
    """Three models of equal size and a budget that holds two: using a third evicts the
    least recently used; using an evicted one loads it again and evicts the next oldest."""
    probe = start_server()
    for i, name in enumerate(("m0", "m1", "m2")):
        push(probe, name, big_forest(1000, base=10.0 * i))
        one_prediction(predict(probe, name, {"inputs": LOW}, version=1))
    size = version_metrics(probe, "m0")["memory_bytes"]
    assert size > 0 and all(version_metrics(probe, n)["memory_bytes"] == size for n in ("m1", "m2"))
    budget = int(size * 2.5)
    srv = probe
    srv.args += ["--model-memory-bytes", str(budget)]
    srv.restart()
    assert srv.metrics().get("basalt_models_memory_budget_bytes") == budget

    def use(i):
        got = one_prediction(predict(srv, "m%d" % i, {"inputs": LOW}, version=1))
        assert got == 10.0 * i + LOW_WANT

    def loaded():
        return [n for n in ("m0", "m1", "m2") if version_metrics(srv, n)["loaded"] == 1]

    use(0)
    use(1)
    assert loaded() == ["m0", "m1"]
    use(2)  # m0 is the least recently used
    assert loaded() == ["m1", "m2"]
    assert srv.metrics().get("basalt_models_memory_bytes") == 2 * size
    use(1)
    use(0)  # now m2 is the oldest
    assert loaded() == ["m0", "m1"]
    assert version_metrics(srv, "m0")["loads_total"] == 2
    assert version_metrics(srv, "m2")["loads_total"] == 1


def test_budget_smaller_than_one_model_degrades_to_503_not_a_stall(start_server):
    """Each load evicts the other model. One request at a time, alternating, always
    succeeds (a version is loaded for the request that waited for it). Concurrent requests
    alternating between the two get the right value or 503 `overloaded` with Retry-After
    once their version was evicted again before they ran (never a load on the I/O thread,
    never a 500); each 503 is counted in basalt_model_load_rejections_total."""
    srv = start_server("--model-memory-bytes", "1048576")
    push(srv, "p", big_forest(1000, base=100.0))
    push(srv, "q", big_forest(1000, base=200.0))
    assert version_metrics(srv, "p")["loaded"] == 0
    for i in range(6):
        name, row, want = ("p", LOW, 100.0 + LOW_WANT) if i % 2 else ("q", HIGH, 200.0 + HIGH_WANT)
        assert one_prediction(predict(srv, name, {"inputs": row}, version=1)) == want
    jobs = [("p", LOW, 100.0 + LOW_WANT) if i % 2 else ("q", HIGH, 200.0 + HIGH_WANT)
            for i in range(60)]
    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(lambda j: predict(srv, j[0], {"inputs": j[1]}, version=1), jobs))
    rejected = {"p": 0, "q": 0}
    for (name, _, want), r in zip(jobs, got):
        if r.status_code == 503:
            assert_error(r, 503, code="overloaded")
            assert int(r.headers["Retry-After"]) >= 1
            rejected[name] += 1
        else:
            assert one_prediction(r) == want
    m = srv.metrics()
    for name in ("p", "q"):
        assert m.get("basalt_model_load_rejections_total", 0, tenant="default", model=name,
                     version="1") == rejected[name]
    assert m.get("basalt_model_evictions_total", 0, tenant="default", model="p", version="1") >= 1
    assert srv.metrics().get("basalt_models_memory_bytes") == max(
        version_metrics(srv, n)["memory_bytes"] for n in ("p", "q"))


@pytest.mark.embedded  # damages the artifact where the embedded store keeps it
def test_damaged_artifact_is_503_and_counted(server):
    art = linear_bytes([1.0, 1.0], 0.0)
    v = push(server, "broken", art)
    (path,) = [p for p in artifact_files(server)]
    with open(path, "r+b") as f:
        f.seek(5)
        f.write(b"#")
    if ARTIFACT_STORE == "metadata":
        # The file is only this server's cache (a damaged one is fetched again, see
        # test_blobs.py): damage the stored copy too.
        damage_stored_blob(server, hashlib.sha256(art).hexdigest())
    r = predict(server, "broken", {"inputs": {"a": 1, "b": 1}}, version=v)
    assert_error(r, 503, mentions="checksum")
    assert version_metrics(server, "broken")["load_failures_total"] == 1
    assert server.get("/healthz").status_code == 200
