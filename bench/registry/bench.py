"""Registry scaling and upload memory, driven over HTTP against a running basalt
(bench/registry/run.sh starts it). See bench/README.md, "bench/registry".

    bench.py scale URL PID           uploads/s and PATCH latency as versions grow
    bench.py uploads URL PID         peak RSS per MB uploaded, concurrent big uploads

Knobs (environment): SIZES ("100 1000 10000": total versions at which to measure),
MODELS (10: versions are spread over this many models), FILL_THREADS (4),
MEASURE_UPLOADS (50 sequential uploads timed at each size), PATCHES (100),
BIG_UPLOADS (20 concurrent), BIG_MB (12).
"""
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

H = {"Content-Type": "application/octet-stream"}


def linear(i):
    """A tiny basalt linear model whose bytes (and so artifact) differ for every i."""
    return json.dumps({
        "basalt_model": 1,
        "inputs": [{"name": "a", "type": "float"}, {"name": "b", "type": "float"}],
        "estimator": {"type": "linear", "link": "identity", "coef": [[1.0, 2.0]],
                      "intercept": [float(i)]},
        "output": {"task": "regression", "n_outputs": 1}}).encode()


def forest(mb, base):
    """A basalt tree ensemble of about mb megabytes (full depth-4 trees)."""
    nodes = 31
    tree = {"group": 0, "feature": [], "threshold": [], "left": [], "right": [], "value": []}
    for i in range(nodes):
        l, r = 2 * i + 1, 2 * i + 2
        inner = l < nodes
        tree["feature"].append((0 if i == 0 else 1) if inner else -1)
        tree["threshold"].append(0.5 if inner else 0)
        tree["left"].append(l if inner else -1)
        tree["right"].append(r if inner else -1)
        tree["value"].append(None if inner else [1.0 if i % 2 else -1.0])
    one = len(json.dumps(tree)) + 2
    n = max(1, int(mb * 1e6 / one))
    return json.dumps({
        "basalt_model": 1,
        "inputs": [{"name": "a", "type": "float"}, {"name": "b", "type": "float"}],
        "estimator": {"type": "trees", "base": [base], "scale": 1.0 / n, "leaf_width": 1,
                      "transform": "identity", "trees": [tree] * n},
        "output": {"task": "regression", "n_outputs": 1}}).encode()


def status_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def scale(url, pid):
    sizes = [int(x) for x in os.environ.get("SIZES", "100 1000 10000").split()]
    n_models = int(os.environ.get("MODELS", "10"))
    fill_threads = int(os.environ.get("FILL_THREADS", "4"))
    n_measure = int(os.environ.get("MEASURE_UPLOADS", "50"))
    n_patch = int(os.environ.get("PATCHES", "100"))
    s = requests.Session()
    for m in range(n_models):
        r = s.post(url + "/v1/models", json={"name": "m%d" % m})
        assert r.status_code == 201, r.text
    counter = {"next": 0}
    lock = threading.Lock()

    def one_upload(sess):
        with lock:
            i = counter["next"]
            counter["next"] += 1
        r = sess.post(url + "/v1/models/m%d/versions?format=basalt_json" % (i % n_models),
                      data=linear(i), headers=H, timeout=600)
        assert r.status_code == 201, r.text

    def fill(target):
        left = target - counter["next"]
        if left <= 0:
            return

        def worker(k):
            sess = requests.Session()
            for _ in range(k):
                one_upload(sess)
        per = [left // fill_threads + (1 if t < left % fill_threads else 0)
               for t in range(fill_threads)]
        with ThreadPoolExecutor(fill_threads) as ex:
            list(ex.map(worker, per))

    print("  %8s  %12s  %14s  %14s  %10s" % ("versions", "uploads/s", "PATCH p50 ms",
                                              "PATCH p99 ms", "RSS MB"))
    for size in sizes:
        fill(size - n_measure)
        t0 = time.monotonic()
        for _ in range(n_measure):
            one_upload(s)
        ups = n_measure / (time.monotonic() - t0)
        lat = []
        for k in range(n_patch):
            t1 = time.monotonic()
            r = s.patch(url + "/v1/models/m%d" % (k % n_models),
                        json={"description": "patch %d" % k}, timeout=600)
            lat.append((time.monotonic() - t1) * 1000)
            assert r.status_code == 200, r.text
        print("  %8d  %12.1f  %14.2f  %14.2f  %10.1f" % (
            counter["next"], ups, statistics.median(lat), pct(lat, 99),
            status_kb(pid, "VmRSS") / 1024.0), flush=True)


def uploads(url, pid):
    n = int(os.environ.get("BIG_UPLOADS", "20"))
    mb = float(os.environ.get("BIG_MB", "12"))
    s = requests.Session()
    r = s.post(url + "/v1/models", json={"name": "big"})
    assert r.status_code == 201, r.text
    arts = [forest(mb, float(i)) for i in range(n)]
    total_mb = sum(len(a) for a in arts) / 1e6
    time.sleep(0.5)
    base = status_kb(pid, "VmRSS")
    retries = {"n": 0}

    def up(a):
        sess = requests.Session()
        wait = 1.0
        while True:
            r = sess.post(url + "/v1/models/big/versions?format=basalt_json", data=a, headers=H,
                          timeout=600)
            if r.status_code == 503 and r.json()["error"]["code"] == "overloaded":
                # As a client should: at least Retry-After, backing off (each retry sends the
                # whole body again).
                retries["n"] += 1
                time.sleep(max(float(r.headers.get("Retry-After", "1")), wait))
                wait = min(wait * 2, 8.0)
                continue
            assert r.status_code == 201, r.text[:300]
            return

    t0 = time.monotonic()
    with ThreadPoolExecutor(n) as ex:
        list(ex.map(up, arts))
    took = time.monotonic() - t0
    peak = status_kb(pid, "VmHWM")
    time.sleep(2)
    after = status_kb(pid, "VmRSS")
    print("  %d concurrent uploads of %.1f MB (%.0f MB in all) in %.1f s, %d answered 503 "
          "overloaded and retried" % (n, total_mb / n, total_mb, took, retries["n"]))
    print("  RSS before %.0f MB, peak %.0f MB, 2 s after %.0f MB" % (
        base / 1024.0, peak / 1024.0, after / 1024.0))
    print("  peak RSS growth per MB uploaded: %.2f MB/MB; held after: %.2f MB/MB" % (
        (peak - base) / 1024.0 / total_mb, (after - base) / 1024.0 / total_mb))


if __name__ == "__main__":
    {"scale": scale, "uploads": uploads}[sys.argv[1]](sys.argv[2], int(sys.argv[3]))
