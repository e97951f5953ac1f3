"""bench/events: the three performance comparisons of issue 9, each running basalt and
its peer in the same run on this machine.

1. publish: events/s with CLIENTS (32) concurrent clients posting batches of BATCH (100)
   ~EVENT_BYTES (200) byte JSON events. basalt: POST /v1/topics/{name}/events (a JSON
   array) through bench/events/http_pub (C, one keep-alive connection per client) on a
   topic with the default sync (always: fsync before the answer) and on one with
   `sync: SYNC_INTERVAL`; NATS JetStream (nats-server -js, file storage) through
   bench/events/js_pub (C, libnats: js_PublishAsync BATCH messages, then wait for every
   ack). Rounds alternate the three; medians, ratios, batch latency p50/p99 and server
   CPU per event. Only acknowledged events count, and the counts are checked against the
   topic's next_offset / the stream's message count after every run.
2. trigger: event acknowledged -> prediction in the trigger's output topic, p50/p99 at
   each of TRIGGER_RATES (1000 10000) events/s (open loop), with an XGBoost model
   trained here and pushed to the registry. Latency = when bench/events/fetch_tail (a
   consumer group long-poll on the output topic; TAIL=sse: sse_tail on its Server-Sent
   Events stream) received the prediction minus when the
   publisher read the answer acknowledging its event (one host, CLOCK_REALTIME, us); also
   the output record's log time minus its source record's (basalt's clock, ms).
3. jobs: no-op jobs enqueued -> completed per second: basalt (POST /v1/jobs batches of
   JOBS_BATCH jobs of kind sleep, seconds 0; completions from /metrics) vs Celery 5 on a
   redis-server started here (a no-op task; group(...).apply_async batches; workers with
   --pool prefork / threads / solo, concurrency CELERY_CONCURRENCY); the best Celery
   figure is the one compared.

Run as `sh bench/events/run.sh` (it builds the C drivers). Knobs (environment): ROUNDS (3),
DURATION (5 s per measured run), SECTIONS ("publish trigger jobs"), CLIENTS, BATCH,
EVENT_BYTES, SYNC_INTERVAL ("2m"), TRIGGER_RATES, TRIGGER_CONNS (4), TRIGGER_OUTPUT_SYNC
(the output topic's sync: always), TAIL (fetch: a consumer group long-poll; sse:
GET /v1/topics/scores/stream), JOBS_BATCH (100), JOBS_CONNS (2 basalt enqueue clients),
BACKLOG (5000 jobs in flight at most), CELERY_POOLS ("prefork threads solo"),
CELERY_CONCURRENCY (2), STRACE (1: count each publisher's fsyncs in one extra run),
BASALT_BIN, BENCH_OUT (build/bench/events).
"""
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HERE = os.path.join(ROOT, "bench", "events")
sys.path.insert(0, os.path.join(ROOT, "tests"))
from redis_server import RedisServer  # noqa: E402

BASALT = os.path.abspath(os.environ.get("BASALT_BIN", os.path.join(ROOT, "build", "basalt")))
OUT = os.path.abspath(os.environ.get("BENCH_OUT", os.path.join(ROOT, "build", "bench", "events")))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = float(os.environ.get("DURATION", "5"))
SECTIONS = os.environ.get("SECTIONS", "publish trigger jobs").split()
CLIENTS = int(os.environ.get("CLIENTS", "32"))
BATCH = int(os.environ.get("BATCH", "100"))
EVENT_BYTES = int(os.environ.get("EVENT_BYTES", "200"))
SYNC_INTERVAL = os.environ.get("SYNC_INTERVAL", "2m")
TRIGGER_RATES = [int(x) for x in os.environ.get("TRIGGER_RATES", "1000 10000").split()]
TRIGGER_CONNS = int(os.environ.get("TRIGGER_CONNS", "4"))
JOBS_BATCH = int(os.environ.get("JOBS_BATCH", "100"))
JOBS_CONNS = int(os.environ.get("JOBS_CONNS", "2"))
BACKLOG = int(os.environ.get("BACKLOG", "5000"))
CELERY_POOLS = os.environ.get("CELERY_POOLS", "prefork threads solo").split()
CELERY_CONCURRENCY = int(os.environ.get("CELERY_CONCURRENCY", "2"))
STRACE = int(os.environ.get("STRACE", "1"))
TAIL = os.environ.get("TAIL", "fetch")
TRIGGER_OUTPUT_SYNC = os.environ.get("TRIGGER_OUTPUT_SYNC", "always")
HTTP_PUB = os.path.join(OUT, "http_pub")
JS_PUB = os.path.join(OUT, "js_pub")
FETCH_TAIL = os.path.join(OUT, "fetch_tail")
SSE_TAIL = os.path.join(OUT, "sse_tail")
PY = "/usr/bin/python3"
HZ = os.sysconf("SC_CLK_TCK")

LISTEN_RE = re.compile(r"listening on http://([^:\s]+):(\d+)")
KEY_RE = re.compile(r"bootstrap admin API key[^\n]*\n\s+(bsk_\S+)")


def die(msg):
    raise SystemExit("bench/events: " + msg)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pids):
    t = 0
    for pid in pids:
        try:
            s = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        t += int(s[11]) + int(s[12])
    return t


def children(pid):
    """pid and its descendants (Celery's prefork children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open("/proc/%d/task/%d/children" % (p, p)) as f:
                todo += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def find_key(obj, key):
    """The first value under `key` anywhere in a decoded JSON document (depth first)."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            r = find_key(v, key)
            if r is not None:
                return r
    elif isinstance(obj, list):
        for v in obj:
            r = find_key(v, key)
            if r is not None:
                return r
    return None


def parse_time(s):
    """RFC 3339 (UTC 'Z' or an offset, any number of fraction digits) -> Unix seconds."""
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)$", s)
    if not m:
        die("cannot parse time %r" % s)
    import calendar
    y, mo, d, h, mi, sec = (int(m.group(i)) for i in range(1, 7))
    t = calendar.timegm((y, mo, d, h, mi, sec, 0, 0, 0)) + float(m.group(7) or 0)
    tz = m.group(8)
    if tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        t -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return t


def parse_line(text):
    """key=value pairs of a driver's summary line."""
    line = [ln for ln in text.splitlines() if ln.startswith("acked=")]
    if not line:
        return None
    return {k: float(v) for k, v in (kv.split("=", 1) for kv in line[-1].split())}


class Basalt:
    def __init__(self, tmp, name, args=()):
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.out = open(os.path.join(self.dir, "stdout"), "w+")
        self.err_path = os.path.join(OUT, name + ".err")
        self.err = open(self.err_path, "w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("BASALT_")}
        self.proc = subprocess.Popen(
            [BASALT, "serve", "--listen", "127.0.0.1:0", "--data", os.path.join(self.dir, "data"),
             "--threads", "2", "--access-log-sample", "0", "--log-level", "warn"] + list(args),
            stdout=self.out, stderr=self.err, env=env, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.out.seek(0)
            text = self.out.read()
            m, k = LISTEN_RE.search(text), KEY_RE.search(text)
            if m and k:
                break
            if self.proc.poll() is not None:
                die("basalt exited: " + open(self.err_path).read()[-2000:])
            time.sleep(0.05)
        else:
            self.stop()
            die("basalt did not start")
        self.port = int(m.group(2))
        self.hostport = "127.0.0.1:%d" % self.port
        self.url = "http://" + self.hostport
        self.key = k.group(1)
        self.s = requests.Session()
        self.s.headers["Authorization"] = "Bearer " + self.key
        for _ in range(200):
            try:
                if self.s.get(self.url + "/healthz").status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.05)

    def call(self, method, path, expect=None, **kw):
        r = self.s.request(method, self.url + path, timeout=60, **kw)
        ok = (r.status_code == expect) if isinstance(expect, int) else \
            (r.status_code in expect) if expect else (200 <= r.status_code < 300)
        if not ok:
            die("%s %s -> %d %s" % (method, path, r.status_code, r.text[:500]))
        return r

    def cpu(self):
        return cpu_ticks([self.proc.pid])

    def alive(self):
        if self.proc.poll() is not None:
            die("basalt died: " + open(self.err_path).read()[-2000:])

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    # ---- topics ---------------------------------------------------------------------------
    def put_topic(self, name, spec):
        self.call("PUT", "/v1/topics/" + name, (200, 201), json=spec)

    def next_offset(self, name):
        doc = self.call("GET", "/v1/topics/" + name, 200).json()
        v = find_key(doc, "next_offset")
        if v is None:
            die("GET /v1/topics/%s has no next_offset: %s" % (name, json.dumps(doc)[:500]))
        return int(v)

    def read_events(self, name, start, end):
        """Records [start, end) of a topic as (offset, time, event)."""
        out = []
        off = start
        while off < end:
            doc = self.call("GET", "/v1/topics/%s/events" % name, 200,
                            params={"from_offset": off, "limit": min(1000, end - off)}).json()
            items = doc.get("items", doc if isinstance(doc, list) else [])
            if not items:
                die("topic %s: no events from offset %d (want up to %d)" % (name, off, end))
            for it in items:
                if it["offset"] >= end:
                    break
                out.append((it["offset"], parse_time(it["time"]), it["event"]))
            off = items[-1]["offset"] + 1
        return out

    def metric_sum(self, pattern):
        text = self.call("GET", "/metrics", 200).text
        rx = re.compile(pattern)
        total, seen = 0.0, False
        for line in text.splitlines():
            if line and line[0] != "#" and rx.match(line):
                total += float(line.rsplit(None, 1)[1])
                seen = True
        return total if seen else None


def histogram(b, name):
    """{le: cumulative count} of a Prometheus histogram in /metrics (label sets summed)."""
    out = {}
    rx = re.compile(r'^%s_bucket\{(?:[^}]*,)?le="([^"]+)"[^}]*\} (\S+)$' % re.escape(name))
    for line in b.call("GET", "/metrics", 200).text.splitlines():
        m = rx.match(line)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            out[le] = out.get(le, 0) + float(m.group(2))
    return out


def hist_quantile(before, after, q):
    """Upper bound (s) of the bucket holding quantile q of what was observed in between."""
    les = sorted(after)
    total = after.get(float("inf"), 0) - before.get(float("inf"), 0)
    if not les or total <= 0:
        return float("nan")
    for le in les:
        if after[le] - before.get(le, 0) >= q * total:
            return le
    return float("inf")


class Nats:
    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "nats")
        os.makedirs(self.dir)
        self.port = free_port()
        self.url = "nats://127.0.0.1:%d" % self.port
        self.log = open(os.path.join(OUT, "nats-server.log"), "w")
        # -js with a store dir: JetStream's defaults (file storage is the stream's choice).
        self.proc = subprocess.Popen(["nats-server", "-js", "-sd", os.path.join(self.dir, "store"),
                                      "-a", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                die("nats-server exited: " + open(self.log.name).read()[-2000:])
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                    if s.recv(4) == b"INFO":
                        return
            except OSError:
                time.sleep(0.05)
        die("nats-server did not start")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def count_syncs(pid, fn):
    """(fsync + fdatasync calls by process pid's threads while fn() runs, fn()'s acked)."""
    path = os.path.join(OUT, "strace-%d.txt" % pid)
    st = subprocess.Popen(["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", path,
                           "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    r = fn()
    time.sleep(0.2)
    st.send_signal(signal.SIGINT)
    st.wait(30)
    calls = 0
    for line in open(path):
        f = line.split()
        if len(f) >= 5 and f[-1] in ("fsync", "fdatasync"):
            calls += int(f[3])
    return calls, int(r["acked"])


def run_driver(cmd, timeout):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout)
    r = parse_line(p.stdout)
    if p.returncode != 0 or r is None:
        die("%s failed (%d): %s %s" % (os.path.basename(cmd[0]), p.returncode, p.stdout[-500:],
                                       p.stderr[-1500:]))
    if p.stderr.strip():
        sys.stderr.write(p.stderr)
    return r


# ---- 1. durable publish ---------------------------------------------------------------------

def section_publish(tmp):
    print("== durable publish: %d clients, batches of %d events of ~%d bytes, %g s per run"
          % (CLIENTS, BATCH, EVENT_BYTES, DURATION), flush=True)
    b = Basalt(tmp, "basalt-publish")
    nats = Nats(tmp)
    try:
        topics = {"basalt-always": ("bench-always", {}),
                  "basalt-interval": ("bench-interval", {"sync": SYNC_INTERVAL})}
        for t, spec in topics.values():
            b.put_topic(t, spec)
        for name, (t, _) in topics.items():
            doc = b.call("GET", "/v1/topics/" + t, 200).json()
            print("  %s: topic %s sync %s" % (name, t, find_key(doc, "sync")))

        def run(name, seconds):
            if name == "jetstream":
                t0 = cpu_ticks([nats.proc.pid])
                r = run_driver([JS_PUB, nats.url, "BENCH", "bench.events", str(CLIENTS), str(BATCH),
                                str(seconds), str(EVENT_BYTES)], seconds + 120)
                r["cpu_us"] = (cpu_ticks([nats.proc.pid]) - t0) * 1e6 / HZ / max(r["acked"], 1)
                return r
            topic = topics[name][0]
            before = b.next_offset(topic)
            t0 = b.cpu()
            r = run_driver([HTTP_PUB, b.hostport, "/v1/topics/%s/events" % topic, b.key,
                            str(CLIENTS), str(BATCH), str(seconds), "0", str(EVENT_BYTES)],
                           seconds + 120)
            r["cpu_us"] = (b.cpu() - t0) * 1e6 / HZ / max(r["acked"], 1)
            b.alive()
            delta = b.next_offset(topic) - before
            if delta != r["acked"] or r["errors"]:
                die("%s: next_offset grew by %d, %d events acknowledged, %d errors"
                    % (name, delta, r["acked"], r["errors"]))
            r["stream_delta"] = delta
            return r

        names = ["basalt-always", "jetstream", "basalt-interval"]
        for name in names:  # warm-up, not counted
            run(name, 1)
        if STRACE and shutil.which("strace"):
            # What "durability" means here, counted: fsync/fdatasync calls per server during
            # a 2 s run (under strace, so slower; not a measured run).
            for name in names:
                pid = nats.proc.pid if name == "jetstream" else b.proc.pid
                calls, acked = count_syncs(pid, lambda n=name: run(n, 2))
                print("  %-16s %6d fsync/fdatasync calls for %d acknowledged events in a 2 s run "
                      "under strace" % (name, calls, acked), flush=True)
        res = {n: [] for n in names}
        for rnd in range(ROUNDS):
            for name in names:
                r = run(name, DURATION)
                res[name].append(r)
                print("  round %d %-16s %8.0f events/s  batch p50 %7.2f ms  p99 %7.2f ms  "
                      "%5.2f us CPU/event  (%d acked, counted %d)"
                      % (rnd + 1, name, r["events_per_s"], r["p50_us"] / 1e3, r["p99_us"] / 1e3,
                         r["cpu_us"], r["acked"], r["stream_delta"]), flush=True)
        m = {n: {k: med([r[k] for r in res[n]]) for k in ("events_per_s", "p50_us", "p99_us", "cpu_us")}
             for n in names}
        print("medians:")
        for n in names:
            print("  %-16s %8.0f events/s  batch p50 %7.2f ms  p99 %7.2f ms  %5.2f us CPU/event"
                  % (n, m[n]["events_per_s"], m[n]["p50_us"] / 1e3, m[n]["p99_us"] / 1e3,
                     m[n]["cpu_us"]))
        js = m["jetstream"]["events_per_s"]
        ra = m["basalt-always"]["events_per_s"] / js
        ri = m["basalt-interval"]["events_per_s"] / js
        pairs = [a["events_per_s"] / j["events_per_s"]
                 for a, j in zip(res["basalt-always"], res["jetstream"])]
        print("ratios (medians):")
        print("  basalt sync always (fsync before ack) / JetStream default: %.2fx  "
              "(per-round %.2f-%.2f)  bar >= 1.00x: %s"
              % (ra, min(pairs), max(pairs), "PASS" if ra >= 1.0 else "FAIL"))
        print("  equal durability, basalt sync %s / JetStream default (fsync every 2 min; "
              "nats-server 2.9.10 has no sync_interval setting): %.2fx" % (SYNC_INTERVAL, ri))
        print("  basalt sync always: batch publish latency p50 %.2f ms, p99 %.2f ms"
              % (m["basalt-always"]["p50_us"] / 1e3, m["basalt-always"]["p99_us"] / 1e3))
        return m
    finally:
        b.stop()
        nats.stop()


# ---- 2. trigger latency ---------------------------------------------------------------------

FEATURES = ["amount", "items", "age_days", "score_hint"]


def train_model(path):
    """A small XGBoost classifier on the features http_pub's events carry."""
    import numpy as np
    import xgboost as xgb
    rng = np.random.default_rng(7)
    n = 5000
    X = np.column_stack([rng.uniform(0, 5000, n), rng.integers(1, 10, n),
                         rng.integers(0, 3650, n), rng.uniform(0, 1, n)])
    y = ((X[:, 0] > 3000) & (X[:, 2] < 400) | (X[:, 3] > 0.9)).astype(float)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 4, "eta": 0.3,
                         "nthread": 1, "seed": 1},
                        xgb.DMatrix(X, y, feature_names=FEATURES), num_boost_round=20)
    booster.save_model(path)
    return booster


def section_trigger(tmp):
    print("== trigger latency: event acknowledged -> prediction in the output topic (input topic "
          "sync always, output topic sync %s)" % TRIGGER_OUTPUT_SYNC, flush=True)
    b = Basalt(tmp, "basalt-trigger")
    try:
        mpath = os.path.join(tmp, "fraud.json")
        train_model(mpath)
        b.call("POST", "/v1/models", 201, json={"name": "fraud"})
        with open(mpath, "rb") as f:
            b.call("POST", "/v1/models/fraud/versions", 201, data=f.read(),
                   headers={"Content-Type": "application/octet-stream"})
        b.call("POST", "/v1/models/fraud/versions/1/approve", 200, json={})
        b.put_topic("orders", {})
        b.put_topic("scores", {"sync": TRIGGER_OUTPUT_SYNC})
        b.call("PUT", "/v1/triggers/score", (200, 201),
               json={"topic": "orders",
                     "action": {"predict": {"model": "fraud", "output_topic": "scores"}}})
        # One event end to end, its prediction checked against a direct predict call.
        ev = {"type": "order.created", "amount": 4000.5, "items": 3, "age_days": 10,
              "score_hint": 0.2}
        in0, out0 = b.next_offset("orders"), b.next_offset("scores")
        b.call("POST", "/v1/topics/orders/events", None, json=[ev])
        deadline = time.monotonic() + 30
        while b.next_offset("scores") == out0:
            if time.monotonic() > deadline:
                die("the trigger wrote no prediction in 30 s: %s"
                    % b.call("GET", "/v1/triggers/score").text[:500])
            time.sleep(0.05)
        rec = b.read_events("scores", out0, out0 + 1)[0][2]
        direct = b.call("POST", "/v1/models/fraud/predict", 200,
                        json={"inputs": {k: ev[k] for k in FEATURES}}).json()
        want = direct["predictions"][0]
        if not same_prediction(rec.get("prediction"), want):
            die("the trigger's prediction %s differs from a direct predict %s"
                % (json.dumps(rec.get("prediction")), json.dumps(want)))
        print("  check: the trigger's prediction for one event equals POST /v1/models/fraud/predict's: %s"
              % json.dumps(want)[:200])
        src_pattern = source_pattern(b, out0, in0)
        print("  latency: from the publisher reading the 2xx answer that acknowledged an event to "
              "a client tailing the output topic (%s) receiving its prediction,"
              % ("GET /v1/topics/scores/stream, Server-Sent Events" if TAIL == "sse" else
                 "consumer group fetch?wait=1s, answered as soon as a record is there") +
              " both CLOCK_REALTIME on this host, "
              "microseconds; also the output record's log time minus the source record's "
              "(basalt's log clock, milliseconds)", flush=True)
        res = {}
        for rate in TRIGGER_RATES:
            batch = max(1, rate // (TRIGGER_CONNS * 250))  # each connection ~250 requests/s
            res[rate] = []
            for rnd in range(ROUNDS):
                row = trigger_round(b, rate, batch, rnd, src_pattern)
                res[rate].append(row)
                print("  round %d %6d/s: %6.0f events/s (batches of %d on %d connections)  "
                      "tail p50 %6.2f p99 %6.2f max %7.2f ms | log times p50 %5.1f p99 %5.1f ms | "
                      "appends (both topics) queued->acked p99 <= %g ms"
                      % (rnd + 1, rate, row["rate"], batch, TRIGGER_CONNS, row["p50"], row["p99"],
                         row["max"], row["log_p50"], row["log_p99"], row["append_p99"]), flush=True)
        print("medians over rounds (ack -> prediction received by the tail):")
        for rate in TRIGGER_RATES:
            p50 = med([x["p50"] for x in res[rate]])
            p99 = med([x["p99"] for x in res[rate]])
            l50 = med([x["log_p50"] for x in res[rate]])
            l99 = med([x["log_p99"] for x in res[rate]])
            bar = ("  bar p99 <= 10 ms: %s" % ("PASS" if p99 <= 10 else "FAIL")) if rate == 1000 else ""
            print("  %6d events/s: p50 %6.2f ms  p99 %6.2f ms  (log append times, 1 ms resolution: "
                  "p50 %.1f ms  p99 %.1f ms)%s" % (rate, p50, p99, l50, l99, bar))
        return res
    finally:
        b.stop()


def trigger_round(b, rate, batch, rnd, src_pattern):
    acks = os.path.join(OUT, "trigger-acks-%d-%d.txt" % (rate, rnd))
    arrivals = os.path.join(OUT, "trigger-tail-%d-%d.txt" % (rate, rnd))
    ready = arrivals + ".ready"
    if os.path.exists(ready):
        os.unlink(ready)
    in_start, out_start = b.next_offset("orders"), b.next_offset("scores")
    if TAIL == "sse":
        cmd = [SSE_TAIL, b.hostport, "/v1/topics/scores/stream?from_offset=%d" % out_start]
    else:
        # A fresh group from the end of the output topic; nothing is acknowledged, so room
        # for every delivery of the round and no redelivery within it.
        group = "tail-%d-%d" % (rate, rnd)
        b.call("PUT", "/v1/topics/scores/consumers/" + group, (200, 201),
               json={"deliver": "new", "max_ack_pending": 1000000, "ack_wait": "10m"})
        cmd = [FETCH_TAIL, b.hostport, "/v1/topics/scores/consumers/%s/fetch?max=1000&wait=1s" % group]
    h0 = histogram(b, "basalt_log_append_seconds")
    tail = subprocess.Popen(cmd + [b.key, str(DURATION + 120), arrivals, src_pattern, ready],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while not os.path.exists(ready):
        if tail.poll() is not None or time.monotonic() > deadline:
            tail.kill()
            die("the tail did not start: %s" % (tail.communicate()[1][-500:],))
        time.sleep(0.01)
    try:
        r = run_driver([HTTP_PUB, b.hostport, "/v1/topics/orders/events", b.key,
                        str(TRIGGER_CONNS), str(batch), str(DURATION), str(rate), str(EVENT_BYTES),
                        acks], DURATION + 120)
    except BaseException:
        tail.kill()
        raise
    in_end = b.next_offset("orders")
    if in_end - in_start != r["acked"]:
        tail.kill()
        die("orders grew by %d, %d acknowledged" % (in_end - in_start, r["acked"]))
    deadline = time.monotonic() + 60
    while b.next_offset("scores") - out_start < r["acked"]:
        if time.monotonic() > deadline:
            tail.kill()
            die("predictions: %d of %d after 60 s" % (b.next_offset("scores") - out_start, r["acked"]))
        time.sleep(0.1)
    out_end = b.next_offset("scores")
    h1 = histogram(b, "basalt_log_append_seconds")
    time.sleep(0.5)  # the tail's last records
    tail.send_signal(signal.SIGTERM)
    tail.communicate(timeout=30)
    ins = {o: t for o, t, _ in b.read_events("orders", in_start, in_end)}
    ack_at = {}
    with open(acks) as f:
        for line in f:
            first, n, at_us, _ = line.split()
            for o in range(int(first), int(first) + int(n)):
                ack_at[o] = float(at_us) / 1e6
    log_lat, seen = [], set()
    for _, t, e in b.read_events("scores", out_start, out_end):
        src = int(e["source"]["offset"])
        if src in seen or src not in ins:
            continue  # a redelivery's duplicate
        seen.add(src)
        log_lat.append((t - ins[src]) * 1e3)
    if len(seen) != in_end - in_start:
        die("%d distinct predictions for %d events" % (len(seen), in_end - in_start))
    lat, tail_seen = [], set()
    with open(arrivals) as f:
        for line in f:
            src, at_us = line.split()
            src = int(src)
            if src in tail_seen or src not in ack_at:
                continue
            tail_seen.add(src)
            lat.append((float(at_us) / 1e6 - ack_at[src]) * 1e3)
    if len(tail_seen) != len(ack_at):
        die("the tail saw %d of %d predictions" % (len(tail_seen), len(ack_at)))
    return {"rate": r["events_per_s"], "p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat),
            "log_p50": pct(log_lat, 50), "log_p99": pct(log_lat, 99), "n": len(lat),
            "append_p99": hist_quantile(h0, h1, 0.99) * 1e3}


def same_prediction(a, b, tol=1e-6):
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_prediction(a[k], b[k], tol) for k in a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= tol
    return a == b


def source_pattern(b, out_offset, in_offset):
    """The text that comes right before the source offset in an output record as stored
    (the record's event is {"event", "prediction", ..., "source": {"topic", "offset"}}):
    what the tails look for."""
    r = b.call("GET", "/v1/topics/scores/events", 200, params={"from_offset": out_offset, "limit": 1})
    raw = r.text
    for pat in ('"source":{"topic":"orders","offset":', '"source": {"topic": "orders", "offset": '):
        i = raw.find(pat)
        if i >= 0 and raw[i + len(pat):].startswith(str(in_offset)):
            return pat
    die("no source offset %d in the output record %s" % (in_offset, raw[:500]))


# ---- 3. job throughput ----------------------------------------------------------------------

def basalt_jobs_round(b, seconds):
    """Enqueues no-op jobs for `seconds` from JOBS_CONNS client threads (at most BACKLOG
    unfinished), waits for all to complete; returns (jobs, seconds from the first enqueue
    to the last completion, enqueue rate)."""
    body = json.dumps({"jobs": [{"kind": "sleep", "args": {"seconds": 0}}] * JOBS_BATCH})
    pat = r'^basalt_jobs_completed\w*\{[^}]*kind="sleep"'

    def done():
        v = b.metric_sum(pat)
        if v is None:
            die("/metrics has no basalt_jobs_completed*{kind=\"sleep\"} counter")
        return v

    base = done()
    st = {"n": 0, "completed": 0, "enq_time": 0.0, "err": None}
    lock = threading.Lock()
    t0 = time.monotonic()

    def enqueuer():
        s = requests.Session()
        s.headers["Authorization"] = "Bearer " + b.key
        while time.monotonic() - t0 < seconds and not st["err"]:
            with lock:
                backlog = st["n"] - st["completed"]
            if backlog >= BACKLOG:
                time.sleep(0.002)
                continue
            e0 = time.monotonic()
            r = s.post(b.url + "/v1/jobs", data=body, headers={"Content-Type": "application/json"},
                       timeout=60)
            el = time.monotonic() - e0
            if r.status_code not in (200, 201, 202):
                st["err"] = "POST /v1/jobs -> %d %s" % (r.status_code, r.text[:300])
                return
            got = len(r.json().get("items", r.json().get("jobs", []))) or JOBS_BATCH
            if got != JOBS_BATCH:
                st["err"] = "POST /v1/jobs answered %d jobs for %d" % (got, JOBS_BATCH)
                return
            with lock:
                st["n"] += JOBS_BATCH
                st["enq_time"] += el

    ths = [threading.Thread(target=enqueuer) for _ in range(JOBS_CONNS)]
    for t in ths:
        t.start()
    while any(t.is_alive() for t in ths):
        c = done() - base
        with lock:
            st["completed"] = c
        time.sleep(0.02)
    for t in ths:
        t.join()
    if st["err"]:
        die(st["err"])
    n = st["n"]
    deadline = time.monotonic() + 120
    while done() - base < n:
        if time.monotonic() > deadline:
            die("basalt jobs: %d of %d completed after 120 s" % (done() - base, n))
        time.sleep(0.002)
    el = time.monotonic() - t0
    time.sleep(0.2)
    if done() - base != n:
        die("basalt jobs: %d completions for %d jobs" % (done() - base, n))
    return n, el, n * JOBS_CONNS / st["enq_time"] if st["enq_time"] else float("nan")


class CeleryWorker:
    def __init__(self, url, pool, tag):
        self.log = open(os.path.join(OUT, "celery-%s.log" % tag), "w")
        env = dict(os.environ, BENCH_REDIS_URL=url, PYTHONPATH=HERE)
        conc = 1 if pool == "solo" else CELERY_CONCURRENCY
        self.proc = subprocess.Popen(
            [PY, "-m", "celery", "-A", "celery_app", "worker", "--pool", pool, "-c", str(conc),
             "--loglevel", "warning", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-O", "fair" if pool == "prefork" else "default"],
            cwd=HERE, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        self.conc = conc

    def pids(self):
        return children(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                for p in self.pids():
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
                self.proc.wait()


def celery_round(capp, r, seconds, enqueue=True, preloaded=0):
    """End to end (enqueue while the worker runs, at most BACKLOG queued): (jobs, seconds,
    enqueue rate). preloaded: that many tasks are already queued; time from the first
    completion to the last."""
    from celery import group
    key = "bench:done"
    if preloaded:
        while int(r.get(key) or 0) < 1:
            time.sleep(0.0005)
        t0 = time.monotonic()
        first = int(r.get(key) or 0)
        deadline = t0 + 300
        while int(r.get(key) or 0) < preloaded:
            if time.monotonic() > deadline:
                die("celery: %s of %d done after 300 s" % (r.get(key), preloaded))
            time.sleep(0.001)
        el = time.monotonic() - t0
        return preloaded - first, el, float("nan")
    base = int(r.get(key) or 0)
    n, enq_time, t0 = 0, 0.0, time.monotonic()
    completed = 0
    while time.monotonic() - t0 < seconds:
        if n - completed >= BACKLOG:
            completed = int(r.get(key) or 0) - base
            if n - completed >= BACKLOG:
                time.sleep(0.002)
                continue
        e0 = time.monotonic()
        group(capp.noop.s() for _ in range(JOBS_BATCH)).apply_async()
        enq_time += time.monotonic() - e0
        n += JOBS_BATCH
        completed = int(r.get(key) or 0) - base
    deadline = time.monotonic() + 300
    while completed < n:
        if time.monotonic() > deadline:
            die("celery: %d of %d done after 300 s" % (completed, n))
        time.sleep(0.002)
        completed = int(r.get(key) or 0) - base
    el = time.monotonic() - t0
    time.sleep(0.2)
    if int(r.get(key) or 0) - base != n:
        die("celery: %d completions for %d tasks" % (int(r.get(key) or 0) - base, n))
    return n, el, n / enq_time


def section_jobs(tmp):
    print("== job throughput: no-op jobs enqueued -> completed, batches of %d, at most %d "
          "in flight, %g s of enqueueing per run" % (JOBS_BATCH, BACKLOG, DURATION), flush=True)
    rs = RedisServer()
    rs.start()
    url = rs.url + "/0"
    os.environ["BENCH_REDIS_URL"] = url
    sys.path.insert(0, HERE)
    import redis
    import celery_app as capp
    r = redis.Redis.from_url(url)
    b = Basalt(tmp, "basalt-jobs")
    print("  redis-server %s; Celery %s; basalt job_workers default"
          % (r.info()["redis_version"], __import__("celery").__version__), flush=True)
    res = {"basalt": []}
    for pool in CELERY_POOLS:
        res["celery-" + pool] = []
        res["celery-%s-drain" % pool] = []
    try:
        basalt_jobs_round(b, 1)  # warm-up
        for rnd in range(ROUNDS):
            t0 = b.cpu()
            n, el, enq = basalt_jobs_round(b, DURATION)
            cpu = (b.cpu() - t0) * 1e6 / HZ / n
            b.alive()
            res["basalt"].append(n / el)
            print("  round %d basalt            %8.0f jobs/s  (%d jobs in %.2f s; enqueue %.0f jobs/s; "
                  "%.1f us CPU/job)" % (rnd + 1, n / el, n, el, enq, cpu), flush=True)
            for pool in CELERY_POOLS:
                w = CeleryWorker(url, pool, "%s-%d" % (pool, rnd))
                try:
                    # Ready when it has run a first task.
                    capp.app.control.purge()
                    r.delete("bench:done")
                    capp.noop.apply_async()
                    deadline = time.monotonic() + 60
                    while int(r.get("bench:done") or 0) < 1:
                        if w.proc.poll() is not None or time.monotonic() > deadline:
                            die("celery worker (%s) did not start: %s"
                                % (pool, open(w.log.name).read()[-2000:]))
                        time.sleep(0.01)
                    t0 = cpu_ticks(w.pids())
                    n, el, enq = celery_round(capp, r, DURATION)
                    cpu = (cpu_ticks(w.pids()) - t0) * 1e6 / HZ / n
                    res["celery-" + pool].append(n / el)
                    print("  round %d celery %-10s %8.0f jobs/s  (%d jobs in %.2f s; enqueue %.0f "
                          "jobs/s; %.1f us worker CPU/job)"
                          % (rnd + 1, pool, n / el, n, el, enq, cpu), flush=True)
                finally:
                    w.stop()
                # The same number of tasks queued first, then a worker started: its drain
                # rate alone, without the driver's enqueueing in the way.
                from celery import group
                capp.app.control.purge()
                r.delete("bench:done")
                for i in range(0, n, JOBS_BATCH):
                    group(capp.noop.s() for _ in range(JOBS_BATCH)).apply_async()
                w = CeleryWorker(url, pool, "%s-%d-drain" % (pool, rnd))
                try:
                    dn, del_, _ = celery_round(capp, r, 0, preloaded=n)
                    res["celery-%s-drain" % pool].append(dn / del_)
                    print("  round %d celery %-10s %8.0f jobs/s  draining %d queued tasks"
                          % (rnd + 1, pool, dn / del_, n), flush=True)
                finally:
                    w.stop()
        m = {k: med(v) for k, v in res.items()}
        print("medians:")
        for k, v in m.items():
            print("  %-22s %8.0f jobs/s" % (k, v))
        celery_e2e = {k: v for k, v in m.items() if k.startswith("celery-") and not k.endswith("-drain")}
        best = max(celery_e2e, key=celery_e2e.get)
        best_any = max((k for k in m if k.startswith("celery-")), key=m.get)
        ratio = m["basalt"] / m[best]
        print("ratios (medians):")
        print("  basalt / best Celery end to end (%s): %.1fx  bar >= 10x: %s"
              % (best, ratio, "PASS" if ratio >= 10 else "FAIL"))
        print("  basalt / best Celery figure of any kind (%s): %.1fx"
              % (best_any, m["basalt"] / m[best_any]))
        return m
    finally:
        b.stop()
        rs.close()


def main():
    os.makedirs(OUT, exist_ok=True)
    for tool in (BASALT, HTTP_PUB, JS_PUB, FETCH_TAIL, SSE_TAIL):
        if not os.path.exists(tool):
            die("%s missing (run make, then sh bench/events/run.sh)" % tool)
    tmp = tempfile.mkdtemp(prefix="bench-events-")
    try:
        print("bench/events: ROUNDS=%d DURATION=%g on %d CPUs, load %s"
              % (ROUNDS, DURATION, os.cpu_count(), open("/proc/loadavg").read().split()[0]),
              flush=True)
        for s in SECTIONS:
            {"publish": section_publish, "trigger": section_trigger, "jobs": section_jobs}[s](tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
