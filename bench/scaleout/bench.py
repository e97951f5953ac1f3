"""bench/scaleout: basalt as replicas on PostgreSQL + Redis vs the embedded server.

1. predict: one-row POST /v1/models/m/predict through wrk against the embedded server
   (SQLite, files) and against one replica on PostgreSQL + Redis with its key's rate
   limit on (a limit far above what wrk reaches, so every request takes the shared-
   bucket path and none is refused); rounds alternate, medians and their ratio printed.
2. registry writes: create a version of a small model, approve it, move an alias;
   p50/p99 latency of each step on PostgreSQL vs SQLite.
3. change propagation: two replicas on one database; flip an alias through A and time
   until B serves the new version (B polled as fast as one client can); p50/p99 over
   FLIPS flips.

Run as `sh bench/scaleout/run.sh` (starts its own PostgreSQL and Redis via tests/).
"""
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from pg_server import PgServer  # noqa: E402
from redis_server import RedisServer  # noqa: E402

BASALT = os.path.abspath(os.environ.get("BASALT_BIN", os.path.join(ROOT, "build", "basalt")))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = int(os.environ.get("DURATION", "8"))
CONNS = int(os.environ.get("CONNS", "64"))
WRITES = int(os.environ.get("WRITES", "100"))
FLIPS = int(os.environ.get("FLIPS", "200"))
OUT = os.environ.get("BENCH_OUT", os.path.join(ROOT, "build", "bench", "scaleout"))
LISTEN_RE = re.compile(r"listening on http://([^:\s]+):(\d+)")
KEY_RE = re.compile(r"^\s+(bsk_\S+)\s*$", re.M)
N_FEATURES = 30


def model_bytes(intercept):
    names = ["f%d" % i for i in range(N_FEATURES)]
    return json.dumps({"basalt_model": 1,
                       "inputs": [{"name": n, "type": "float"} for n in names],
                       "estimator": {"type": "linear", "link": "identity",
                                     "coef": [[0.01 * (i + 1) for i in range(N_FEATURES)]],
                                     "intercept": [intercept]},
                       "output": {"task": "regression", "n_outputs": 1}}).encode()


ROW = {"inputs": {"f%d" % i: 0.5 for i in range(N_FEATURES)}}


class Basalt:
    def __init__(self, tmp, name, args, key=None):
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.out = open(os.path.join(self.dir, "stdout"), "w+")
        self.err = open(os.path.join(OUT, name + ".err"), "w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("BASALT_")}
        self.proc = subprocess.Popen(
            [BASALT, "serve", "--listen", "127.0.0.1:0", "--data", os.path.join(self.dir, "data"),
             "--threads", "2", "--access-log-sample", "0", "--log-level", "warn"] + args,
            stdout=self.out, stderr=self.err, env=env)
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            self.out.seek(0)
            text = self.out.read()
            m = LISTEN_RE.search(text)
            if m and (key or KEY_RE.search(text) or "\n" in text[m.end():]):
                break
            if self.proc.poll() is not None:
                raise SystemExit("bench/scaleout: basalt exited: " + open(self.err.name).read())
            time.sleep(0.05)
        else:
            raise SystemExit("bench/scaleout: basalt did not start")
        time.sleep(0.2)
        self.out.seek(0)
        text = self.out.read()
        m = LISTEN_RE.search(text)
        self.port = int(m.group(2))
        self.url = "http://127.0.0.1:%d" % self.port
        k = KEY_RE.search(text)
        self.key = key or (k.group(1) if k else None)
        self.s = requests.Session()
        for _ in range(200):
            try:
                if self.s.get(self.url + "/healthz").status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.05)

    def h(self, key=None):
        return {"Authorization": "Bearer " + (key or self.key)}

    def call(self, method, path, expect, **kw):
        r = self.s.request(method, self.url + path, headers=dict(self.h(), **kw.pop("headers", {})), **kw)
        if r.status_code != expect:
            raise SystemExit("bench/scaleout: %s %s -> %d %s" % (method, path, r.status_code, r.text[:300]))
        return r

    def cpu_ticks(self):
        s = open("/proc/%d/stat" % self.proc.pid).read().rsplit(")", 1)[1].split()
        return int(s[11]) + int(s[12])

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def publish(b, name="m", n=1):
    b.call("POST", "/v1/models", 201, json={"name": name})
    for v in range(1, n + 1):
        b.call("POST", "/v1/models/%s/versions" % name, 201, data=model_bytes(0.1 * v),
               headers={"Content-Type": "application/octet-stream"})
        b.call("POST", "/v1/models/%s/versions/%d/approve" % (name, v), 200, json={})


def wrk(b, key, lua):
    t0 = b.cpu_ticks()
    out = subprocess.run(["wrk", "-t2", "-c%d" % CONNS, "-d%ds" % DURATION, "--latency", "-s", lua,
                          "-H", "Authorization: Bearer " + key, b.url + "/v1/models/m/predict"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    t1 = b.cpu_ticks()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    n = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = int(non2xx.group(1)) if non2xx else 0
    cpu_us = (t1 - t0) * 1e6 / os.sysconf("SC_CLK_TCK") / max(n, 1)
    return rps, cpu_us, errs


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def bench_predict(emb, rep, tmp):
    lua = os.path.join(tmp, "predict.lua")
    with open(lua, "w") as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                'wrk.body = [==[%s]==]\n' % json.dumps(ROW))
    limited = {}
    for name, b in (("embedded", emb), ("replica", rep)):
        publish(b)
        k = b.call("POST", "/v1/keys", 201, json={"name": "bench", "role": "predictor",
                                                  "rate_limit": {"rps": 1e6, "burst": 1e6}}).json()
        limited[name] = k["key"]
    time.sleep(2)  # the replica's own snapshot is fresh already; let watchers settle
    res = {"embedded": [], "replica": []}
    for rnd in range(ROUNDS):
        for name, b in (("embedded", emb), ("replica", rep)):
            rps, cpu, errs = wrk(b, limited[name], lua)
            if errs:
                raise SystemExit("bench/scaleout: %d failed predictions on %s" % (errs, name))
            res[name].append((rps, cpu))
            print("  round %d %-8s %8.0f req/s  %6.1f us CPU/req" % (rnd + 1, name, rps, cpu), flush=True)
    me = statistics.median(r for r, _ in res["embedded"])
    mr = statistics.median(r for r, _ in res["replica"])
    ce = statistics.median(c for _, c in res["embedded"])
    cr = statistics.median(c for _, c in res["replica"])
    print("predict (medians): embedded %.0f req/s %.1f us/req; PostgreSQL+Redis replica %.0f req/s %.1f us/req"
          % (me, ce, mr, cr))
    ratio = mr / me
    print("  replica/embedded throughput %.2fx (bar >= 0.90x: %s), CPU/request %.2fx"
          % (ratio, "PASS" if ratio >= 0.9 else "FAIL", cr / ce))


def bench_writes(emb, rep):
    print("registry writes (sequential, %d each; ms):" % WRITES)
    rows = {}
    for name, b in (("sqlite", emb), ("postgresql", rep)):
        b.call("POST", "/v1/models", 201, json={"name": "w"})
        lat = {"create version": [], "approve": [], "alias": []}
        for i in range(1, WRITES + 1):
            t = time.perf_counter()
            b.call("POST", "/v1/models/w/versions", 201, data=model_bytes(0.001 * i),
                   headers={"Content-Type": "application/octet-stream"})
            t1 = time.perf_counter()
            b.call("POST", "/v1/models/w/versions/%d/approve" % i, 200, json={})
            t2 = time.perf_counter()
            b.call("PUT", "/v1/models/w/aliases/champion", 200, json={"version": i})
            t3 = time.perf_counter()
            lat["create version"].append((t1 - t) * 1e3)
            lat["approve"].append((t2 - t1) * 1e3)
            lat["alias"].append((t3 - t2) * 1e3)
        rows[name] = lat
    for step in ("create version", "approve", "alias"):
        s, p = rows["sqlite"][step], rows["postgresql"][step]
        print("  %-15s sqlite p50 %6.2f p99 %6.2f | postgresql p50 %6.2f p99 %6.2f | p50 ratio %.2fx"
              % (step, pct(s, 50), pct(s, 99), pct(p, 50), pct(p, 99), pct(p, 50) / pct(s, 50)))


def bench_propagation(a, b):
    publish(a, "flip", 2)
    a.call("PUT", "/v1/models/flip/aliases/live", 200, json={"version": 1})
    sess = requests.Session()

    def served():
        r = sess.post(b.url + "/v1/models/flip@live/predict", headers=b.h(a.key), json=ROW)
        return r.json().get("version") if r.status_code == 200 else None

    deadline = time.monotonic() + 30
    while served() != 1:
        if time.monotonic() > deadline:
            raise SystemExit("bench/scaleout: replica B never served flip@live")
        time.sleep(0.01)
    delays = []
    for i in range(FLIPS):
        want = 2 if i % 2 == 0 else 1
        t0 = time.perf_counter()
        a.call("PUT", "/v1/models/flip/aliases/live", 200, json={"version": want})
        t1 = time.perf_counter()
        while served() != want:
            if time.perf_counter() - t1 > 30:
                raise SystemExit("bench/scaleout: flip %d not served by B within 30 s" % i)
        delays.append((time.perf_counter() - t1) * 1e3)
        del t0
    print("change propagation (%d alias flips through A, served by B; ms after A answered): "
          "p50 %.1f p99 %.1f max %.1f" % (FLIPS, pct(delays, 50), pct(delays, 99), max(delays)))


def main():
    os.makedirs(OUT, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="basalt-bench-scaleout-")
    pg = RedisServer_ = None
    servers = []
    try:
        pg = PgServer().start()
        RedisServer_ = RedisServer()
        RedisServer_.start()
        db = pg.create_database()
        print("bench/scaleout: %s, %d cores shared by clients, basalt, PostgreSQL and Redis"
              % (BASALT, os.cpu_count()), flush=True)
        emb = Basalt(tmp, "embedded", [])
        servers.append(emb)
        rep = Basalt(tmp, "replica-a", ["--metadata-url", db, "--redis-url", RedisServer_.url,
                                         "--replica-id", "a"])
        servers.append(rep)
        print("predict, wrk -t2 -c%d -d%ds, %d rounds alternating:" % (CONNS, DURATION, ROUNDS), flush=True)
        bench_predict(emb, rep, tmp)
        bench_writes(emb, rep)
        rep_b = Basalt(tmp, "replica-b", ["--metadata-url", db, "--redis-url", RedisServer_.url,
                                           "--replica-id", "b"], key=rep.key)
        servers.append(rep_b)
        bench_propagation(rep, rep_b)
    finally:
        for s in servers:
            s.stop()
        if RedisServer_:
            RedisServer_.close()
        if pg:
            pg.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
