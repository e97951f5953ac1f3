"""The job runtime through the API and the CLI (docs/jobs.md): the diagnostic `sleep` kind
enqueued with POST /v1/jobs (one job or a batch), watched (progress, rate, ETA; `basalt job
watch` with its exit codes), cancelled while waiting and while running, retried, failing
retryably (fail_times) then completing, discarded after max_attempts or at once (fatal),
every failed attempt listed in errors; unique keys; bad input → 4xx; roles and tenants; a
job interrupted by a restart runs again; and two replicas on one PostgreSQL: the job of a
replica killed with SIGKILL runs again on the other once its lease expired, never on both
at once (checked through the attempts, their holders and lease tokens recorded in the job).

Waits are bounded by generous timeouts; nothing asserts on how fast anything was.
"""
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import BASALT_BIN, REQUEST_TIMEOUT, ROOT, Server, clean_env

BOUND = 60.0
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
FINAL = ("completed", "discarded", "cancelled")


def wait_for(what, fn, timeout=BOUND):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.02)
    raise AssertionError("%s: not within %.0f s (last: %r)" % (what, timeout, last))


def enqueue(srv, key=None, status=201, **job):
    r = srv.post("/v1/jobs", json=job, **({"key": key} if key else {}))
    assert r.status_code == status, r.text
    return r.json()


def get(srv, jid, key=None):
    r = srv.get("/v1/jobs/" + jid, **({"key": key} if key else {}))
    assert r.status_code == 200, r.text
    return r.json()


def wait_state(srv, jid, *states, timeout=BOUND):
    """Waits for the job to reach one of states; returns it. Fails early on another final
    state."""
    def check():
        j = get(srv, jid)
        assert j["state"] in states or j["state"] not in FINAL, j
        return j if j["state"] in states else None
    return wait_for("job %s in %s" % (jid, states), check, timeout)


def error_of(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    return r.json()["error"]


def cli(srv, *args, key=None):
    env = {"BASALT_URL": srv.url, "BASALT_API_KEY": key or srv.admin_key}
    return subprocess.run([BASALT_BIN, *args], env=clean_env(env), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=BOUND + REQUEST_TIMEOUT)


def ts(s):
    """RFC 3339 (as the API writes it) → ms since the epoch."""
    import datetime
    return int(datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp() * 1000 + 0.5)


# ---- the sleep kind: progress, completion, failures ----------------------------------------

def test_job_kinds_list_sleep(shared_server):
    r = shared_server.get("/v1/job-kinds")
    assert r.status_code == 200, r.text
    kinds = {k["kind"]: k for k in r.json()["items"]}
    s = kinds["sleep"]
    assert s["api_enqueue"] is True
    assert s["max_attempts"] == 25 and s["backoff"] == "attempt^4 s ± 10%"
    assert "sleep" in s["description"]


def test_sleep_reports_progress_and_completes(shared_server):
    srv = shared_server
    j = enqueue(srv, kind="sleep", args={"seconds": 3, "steps": 6})
    assert UUID_RE.match(j["id"]) and j["kind"] == "sleep" and j["args"] == {"seconds": 3,
                                                                             "steps": 6}
    assert j["state"] in ("available", "running") and j["attempt"] <= 1
    # mid-way: some steps done, a rate and an ETA consistent with it
    mid = wait_for("progress written", lambda: (lambda x: x if x["state"] == "running" and
                                                0 < x["progress"]["done"] < 6 else None)(
                                                    get(srv, j["id"])), timeout=BOUND)
    p = mid["progress"]
    assert p["total"] == 6 and p["rate_per_s"] > 0
    assert abs(p["eta_s"] - (6 - p["done"]) / p["rate_per_s"]) < 1e-6 * max(1, p["eta_s"])
    assert mid["attempted_by"] and mid["lease_token"] == 1
    done = wait_state(srv, j["id"], "completed")
    assert done["result"] == {"slept_s": 3, "steps": 6, "attempt": 1}
    assert done["progress"]["done"] == 6 and done["progress"]["eta_s"] is None
    assert done["attempt"] == 1 and done["errors"] == []
    assert ts(done["finalized_at"]) >= ts(done["attempted_at"]) >= ts(done["created_at"])


def test_fail_times_retryable_then_completed(shared_server):
    """Two failing attempts: the first retried after ~1 s (attempt^4), the second would wait
    ~16 s — retry makes it available at once, and the third completes."""
    srv = shared_server
    j = enqueue(srv, kind="sleep", args={"seconds": 0, "fail_times": 2})
    r = wait_for("second attempt failed",
                 lambda: (lambda x: x if x["state"] == "retryable" and x["attempt"] == 2
                          else None)(get(srv, j["id"])))
    assert [e["attempt"] for e in r["errors"]] == [1, 2]
    assert all("fail_times" in e["error"] for e in r["errors"])
    # the second backoff: attempt 2 failed, so 2^4 s ± 10% from its failure
    wait = ts(r["scheduled_at"]) - ts(r["errors"][1]["at"])
    assert 16000 * 0.9 - 1000 <= wait <= 16000 * 1.1 + 1000, wait
    r = srv.post("/v1/jobs/%s/retry" % j["id"])
    assert r.status_code == 200, r.text
    done = wait_state(srv, j["id"], "completed")
    assert done["attempt"] == 3 and len(done["errors"]) == 2
    assert done["result"]["attempt"] == 3
    assert done["lease_token"] == 3


def test_discarded_after_max_attempts_with_every_error(shared_server):
    srv = shared_server
    j = enqueue(srv, kind="sleep", args={"fail_times": 10}, max_attempts=2)
    assert j["max_attempts"] == 2
    d = wait_state(srv, j["id"], "discarded")
    assert d["attempt"] == 2 and d["finalized_at"]
    assert [e["attempt"] for e in d["errors"]] == [1, 2]
    assert [e["lease_token"] for e in d["errors"]] == [1, 2]
    assert all(e["attempted_by"] == d["attempted_by"] for e in d["errors"])
    # listed among the discarded
    items = srv.get("/v1/jobs?state=discarded&limit=1000").json()["items"]
    assert j["id"] in [x["id"] for x in items]
    assert all(x["state"] == "discarded" for x in items)


def test_fatal_error_discards_at_once(shared_server):
    srv = shared_server
    j = enqueue(srv, kind="sleep", args={"fatal": True})
    d = wait_state(srv, j["id"], "discarded")
    assert d["attempt"] == 1 and len(d["errors"]) == 1 and "fatal" in d["errors"][0]["error"]


def test_cancel_waiting_and_running_jobs(shared_server):
    srv = shared_server
    later = enqueue(srv, kind="sleep", run_at="2099-01-01T00:00:00Z")
    assert later["state"] == "scheduled"
    r = srv.post("/v1/jobs/%s/cancel" % later["id"])
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
    assert error_of(srv.post("/v1/jobs/%s/cancel" % later["id"]), 409)["code"] == "conflict"
    assert error_of(srv.post("/v1/jobs/0190aaaa-0000-7000-8000-000000000000/cancel"),
                    404)["code"] == "not_found"
    long = enqueue(srv, kind="sleep", args={"seconds": 600, "steps": 600})
    wait_state(srv, long["id"], "running")
    r = srv.post("/v1/jobs/%s/cancel" % long["id"])
    assert r.status_code == 200, r.text
    assert r.json()["cancel_requested"] is True
    c = wait_state(srv, long["id"], "cancelled")
    assert c["finalized_at"] and c["attempt"] == 1
    assert "cancelled" in c["errors"][-1]["error"]
    # cancelled → retried → runs again (attempts continue)
    r = srv.post("/v1/jobs/%s/retry" % later["id"])
    assert r.status_code == 200 and r.json()["cancel_requested"] is False, r.text
    done = wait_state(srv, later["id"], "completed")
    assert done["attempt"] == 1
    assert error_of(srv.post("/v1/jobs/%s/retry" % later["id"]), 409)["code"] == "conflict"


def test_unique_key_returns_the_live_job(shared_server):
    srv = shared_server
    a = enqueue(srv, kind="sleep", args={"seconds": 600}, unique_key="nightly-1")
    b = enqueue(srv, status=200, kind="sleep", args={"seconds": 1}, unique_key="nightly-1")
    assert b["id"] == a["id"] and b["unique_key"] == "nightly-1"
    assert b["args"] == {"seconds": 600}
    srv.post("/v1/jobs/%s/cancel" % a["id"])
    wait_state(srv, a["id"], "cancelled")
    # finalized: the key is free
    c = enqueue(srv, kind="sleep", args={"seconds": 600}, unique_key="nightly-1")
    assert c["id"] != a["id"]
    # a cancelled job whose key is taken again cannot come back while that one lives
    assert error_of(srv.post("/v1/jobs/%s/retry" % a["id"]), 409)["code"] == "conflict"
    srv.post("/v1/jobs/%s/cancel" % c["id"])
    wait_state(srv, c["id"], "cancelled")


def test_batch_of_1000_in_one_request(shared_server):
    srv = shared_server
    r = srv.post("/v1/jobs", json={"jobs": [{"kind": "sleep", "args": {"seconds": 0}}] * 1000})
    assert r.status_code == 201, r.text
    items = r.json()["items"]
    assert len(items) == 1000 and len({x["id"] for x in items}) == 1000
    assert all(x["existed"] is False and x["kind"] == "sleep" for x in items)
    wanted = {x["id"] for x in items}

    def all_done():
        seen, cursor = set(), None
        while True:
            q = "/v1/jobs?state=completed&kind=sleep&limit=1000" + (
                "&cursor=" + cursor if cursor else "")
            page = srv.get(q).json()
            seen |= {x["id"] for x in page["items"]}
            cursor = page["next_cursor"]
            if not cursor:
                return wanted <= seen
    wait_for("1000 jobs completed", all_done)
    m = srv.metrics()
    assert m.get("basalt_jobs_completed_total", kind="sleep") >= 1000


def test_list_pages_newest_first(shared_server):
    srv = shared_server
    ids = [enqueue(srv, kind="sleep", run_at="2099-01-01T00:00:00Z")["id"] for _ in range(5)]
    got, cursor = [], None
    while True:
        page = srv.get("/v1/jobs?state=scheduled&limit=2" + ("&cursor=" + cursor if cursor
                                                             else "")).json()
        assert len(page["items"]) <= 2
        got += [x["id"] for x in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert [i for i in got if i in ids] == ids[::-1]
    for i in ids:
        srv.post("/v1/jobs/%s/cancel" % i)


# ---- bad input, roles, tenants -------------------------------------------------------------

@pytest.mark.parametrize("body,field", [
    ({}, "kind"),
    ({"kind": 3}, "kind"),
    ({"kind": "no.such.kind"}, "kind"),
    ({"kind": "sleep", "args": [1]}, "args"),
    ({"kind": "sleep", "args": {"seconds": -1}}, "args.seconds"),
    ({"kind": "sleep", "args": {"seconds": "x"}}, "args.seconds"),
    ({"kind": "sleep", "args": {"steps": 0}}, "args.steps"),
    ({"kind": "sleep", "args": {"nap": 1}}, "args.nap"),
    ({"kind": "sleep", "bogus": 1}, "bogus"),
    ({"kind": "sleep", "run_at": "tomorrow"}, "run_at"),
    ({"kind": "sleep", "max_attempts": 0}, "max_attempts"),
    ({"kind": "sleep", "priority": 5000}, "priority"),
    ({"kind": "sleep", "unique_key": 7}, "unique_key"),
    ({"kind": "sleep", "unique_key": ""}, "unique_key"),
    ({"kind": "sleep", "unique_key": "k" * 257}, "unique_key"),
    ({"kind": "sleep", "run_at": "1969-12-31T23:59:59Z"}, "run_at"),
    ({"kind": "sleep", "run_at": "1970-01-01T00:30:00+01:00"}, "run_at"),  # 1969 in UTC
    ({"kind": "sleep", "max_attempts": 1000001}, "max_attempts"),
    ({"kind": "sleep", "priority": -1001}, "priority"),
    ({"jobs": []}, "jobs"),
    ({"jobs": {"kind": "sleep"}}, "jobs"),
    ({"jobs": [{"kind": "sleep"}] * 1001}, "jobs"),
    ({"jobs": [{"kind": "sleep"}, {"kind": "nope"}]}, "jobs[1].kind"),
    ({"jobs": [{"kind": "sleep"}, {"kind": "sleep", "args": {"seconds": 1e9}}]},
     "jobs[1].args.seconds"),
    ({"jobs": [{"kind": "sleep"}], "kind": "sleep"}, "jobs"),
    ({"jobs": [{"kind": "sleep"}, {"kind": "sleep", "unique_key": "k" * 257}]},
     "jobs[1].unique_key"),
    ({"jobs": [{"kind": "sleep"}, 7]}, "jobs"),
])
def test_bad_job_bodies_are_400_and_enqueue_nothing(shared_server, body, field):
    srv = shared_server

    def newest():
        items = srv.get("/v1/jobs?limit=1").json()["items"]
        return items[0]["id"] if items else None
    before = newest()
    e = error_of(srv.post("/v1/jobs", json=body), 400)
    assert e["code"] == "invalid_input" and e.get("field") == field, e
    assert newest() == before


def test_bad_requests(shared_server):
    srv = shared_server
    assert error_of(srv.post("/v1/jobs", data=b"{not json",
                             headers={"Content-Type": "application/json"}), 400)["code"] == \
        "malformed_json"
    assert error_of(srv.post("/v1/jobs", json=[1]), 400)["code"] == "invalid_input"
    e = error_of(srv.get("/v1/jobs?state=bogus"), 400)
    assert e["field"] == "state" and "bogus" in e["message"]
    assert error_of(srv.get("/v1/jobs?limit=0"), 400)["field"] == "limit"
    assert error_of(srv.get("/v1/jobs?limit=1001"), 400)["field"] == "limit"
    assert error_of(srv.get("/v1/jobs/nope"), 404)["code"] == "not_found"
    assert error_of(srv.post("/v1/jobs/nope/retry"), 404)["code"] == "not_found"


def test_roles_and_tenants(shared_server):
    srv = shared_server
    viewer = srv.create_key("viewer", name="jobs-viewer")["key"]
    predictor = srv.create_key("predictor", name="jobs-predictor")["key"]
    dev = srv.create_key("developer", name="jobs-dev")["key"]
    j = enqueue(srv, key=dev, kind="sleep", run_at="2099-01-01T00:00:00Z")
    assert j["tenant"] == "default" and j["created_by"]
    assert srv.get("/v1/jobs/" + j["id"], key=viewer).status_code == 200
    assert srv.get("/v1/job-kinds", key=viewer).status_code == 200
    for key in (viewer, predictor):
        assert srv.post("/v1/jobs", key=key, json={"kind": "sleep"}).status_code == 403
        assert srv.post("/v1/jobs/%s/cancel" % j["id"], key=key).status_code == 403
        assert srv.post("/v1/jobs/%s/retry" % j["id"], key=key).status_code == 403
    # another tenant sees nothing of it
    assert srv.post("/v1/tenants", json={"name": "jobs-other"}).status_code == 201
    other = srv.create_key("developer", name="other-dev", tenant="jobs-other")["key"]
    assert error_of(srv.get("/v1/jobs/" + j["id"], key=other), 404)["code"] == "not_found"
    assert error_of(srv.post("/v1/jobs/%s/cancel" % j["id"], key=other), 404)
    assert srv.get("/v1/jobs?limit=1000", key=other).json()["items"] == []
    mine = enqueue(srv, key=other, kind="sleep", run_at="2099-01-01T00:00:00Z")
    assert mine["tenant"] == "jobs-other"
    assert [x["id"] for x in srv.get("/v1/jobs", key=other).json()["items"]] == [mine["id"]]
    assert mine["id"] not in [x["id"] for x in
                              srv.get("/v1/jobs?limit=1000", key=dev).json()["items"]]
    # same unique key, two tenants: two jobs
    a = enqueue(srv, key=dev, kind="sleep", unique_key="shared", run_at="2099-01-01T00:00:00Z")
    b = enqueue(srv, key=other, kind="sleep", unique_key="shared", run_at="2099-01-01T00:00:00Z")
    assert a["id"] != b["id"]
    for x, k in ((j, dev), (mine, other), (a, dev), (b, other)):
        assert srv.post("/v1/jobs/%s/cancel" % x["id"], key=k).status_code == 200


# ---- the CLI --------------------------------------------------------------------------------

def test_cli_run_watch_and_exit_codes(shared_server):
    srv = shared_server
    cp = cli(srv, "job", "run", "sleep", "--args", '{"seconds": 2, "steps": 4}', "--watch",
             "--interval", "100")
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    lines = cp.stdout.splitlines()
    m = re.match(r"^job (\S+) \(sleep\) enqueued$", lines[0])
    assert m and UUID_RE.match(m.group(1)), lines
    jid = m.group(1)
    assert lines[-1] == 'job %s completed: {"slept_s":2,"steps":4,"attempt":1}' % jid
    # not a terminal: plain lines, one per change, progress only growing
    prog = [re.match(r"^(\w+) attempt (\d+): (\d+)(?:/(\d+))?", l) for l in lines[1:-1]]
    assert all(prog), lines
    dones = [int(p.group(3)) for p in prog]
    assert dones == sorted(dones) and len(set(lines[1:-1])) == len(lines[1:-1])
    assert prog[-1].group(1) == "completed" and prog[-1].group(3) == "4"
    assert any(p.group(1) == "running" and 0 < int(p.group(3)) < 4 for p in prog), lines
    assert "\r" not in cp.stdout and "\033" not in cp.stdout
    # a job that is discarded: watch exits 1 with its last error
    cp = cli(srv, "job", "run", "sleep", "--args", '{"fatal": true}', "--watch")
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    assert re.search(r"discarded after 1 attempt\(s\): sleep: failing for good", cp.stdout)
    # unknown job: 3 (the CLI's not-found code)
    cp = cli(srv, "job", "watch", "0190aaaa-0000-7000-8000-000000000000")
    assert cp.returncode == 3 and "404" in cp.stderr
    cp = cli(srv, "job", "run", "no.such", "--args", "{}")
    assert cp.returncode == 1 and "not registered" in cp.stderr
    cp = cli(srv, "job", "run", "sleep", "--args", "[1]")
    assert cp.returncode == 2


def test_cli_watch_on_a_terminal_draws_a_bar(shared_server):
    """Under a pseudo-terminal (script(1)) the line is redrawn with a bar, rate and ETA."""
    srv = shared_server
    j = enqueue(srv, kind="sleep", args={"seconds": 2, "steps": 4})
    env = clean_env({"BASALT_URL": srv.url, "BASALT_API_KEY": srv.admin_key})
    cmd = "%s job watch %s --interval 100" % (BASALT_BIN, j["id"])
    cp = subprocess.run(["script", "-qec", cmd, "/dev/null"], env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, timeout=BOUND, stdin=subprocess.DEVNULL)
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    out = cp.stdout.decode().replace("\r\n", "\n")  # bytes: universal newlines eat the \r
    frames = [f for f in out.split("\r\033[K") if f.strip()]
    assert len(frames) >= 2, out
    assert re.match(r"^\[#{30}\] 4/4 \(100%\)", frames[-1]), frames[-1]
    assert any(re.match(r"^\[#*\.+\] [123]/4 \(\d+%\) [\d.]+/s eta \d+s  running", f)
               for f in frames), frames
    assert frames[-1].rstrip().endswith("job %s completed: {\"slept_s\":2,\"steps\":4,"
                                        "\"attempt\":1}" % j["id"])


def test_cli_ls_get_cancel_retry(shared_server):
    srv = shared_server
    j = enqueue(srv, kind="sleep", run_at="2099-01-01T00:00:00Z")
    cp = cli(srv, "job", "ls", "--state", "scheduled")
    assert cp.returncode == 0, cp.stderr
    rows = [l.split() for l in cp.stdout.splitlines()]
    assert rows[0] == ["ID", "KIND", "STATE", "ATTEMPT", "PROGRESS", "CREATED"]
    assert [j["id"], "sleep", "scheduled", "0/25"] in [r[:4] for r in rows[1:]]
    assert all(r[2] == "scheduled" for r in rows[1:])
    page = json.loads(cli(srv, "job", "ls", "--state", "scheduled", "--json").stdout)
    assert j["id"] in [x["id"] for x in page["items"]]
    cp = cli(srv, "job", "get", j["id"])
    assert cp.returncode == 0
    assert re.search(r"^state\s+scheduled$", cp.stdout, re.M)
    assert re.search(r"^attempt\s+0 of 25$", cp.stdout, re.M)
    assert json.loads(cli(srv, "job", "get", j["id"], "--json").stdout)["id"] == j["id"]
    cp = cli(srv, "job", "cancel", j["id"])
    assert cp.returncode == 0 and cp.stdout == "job %s: cancelled\n" % j["id"], cp
    cp = cli(srv, "job", "cancel", j["id"])
    assert cp.returncode == 1 and "409" in cp.stderr
    cp = cli(srv, "job", "retry", j["id"], "--json")
    assert cp.returncode == 0 and json.loads(cp.stdout)["id"] == j["id"]
    wait_state(srv, j["id"], "completed")
    cp = cli(srv, "job", "get", "0190aaaa-0000-7000-8000-000000000000")
    assert cp.returncode == 3
    # a running job: asked to stop
    long = enqueue(srv, kind="sleep", args={"seconds": 600})
    wait_state(srv, long["id"], "running")
    cp = cli(srv, "job", "cancel", long["id"])
    assert cp.returncode == 0 and "asked to stop" in cp.stdout, cp
    wait_state(srv, long["id"], "cancelled")


class FakeJobsApi:
    """An HTTP server on a thread standing in for basalt: GET answers the next of answers
    (the last one repeats), as the CLI's bad-data tests need."""

    def __init__(self, answers):
        self.answers, self.n = list(answers), 0
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = api.answers[min(api.n, len(api.answers) - 1)]
                api.n += 1
                body = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# Progress and counts a server should never send: strings, negatives, huge and tiny numbers.
BAD_PROGRESS = [
    {"id": "j1", "state": "running", "attempt": "two",
     "progress": {"done": "x", "total": 10, "rate_per_s": -1, "eta_s": 1e300}},
    {"id": "j1", "state": "running", "attempt": -3,
     "progress": {"done": 1e300, "total": 1e-300, "rate_per_s": 1e308, "eta_s": -5}},
    {"id": "j1", "state": "running", "attempt": 1,
     "progress": {"done": 7, "total": 3, "rate_per_s": 2.5, "eta_s": 1e16}},
    {"state": "completed", "attempt": 1e300, "progress": [], "errors": [{"attempt": None}]},
]


def assert_sane(text):
    for bad in ("nan", "inf", "(null)", "e+"):
        assert bad not in text.lower(), (bad, text)


@pytest.mark.embedded  # no basalt server: once is enough
def test_cli_renders_bad_progress_data_as_unknown():
    api = FakeJobsApi(BAD_PROGRESS)
    env = clean_env({"BASALT_URL": api.url, "BASALT_API_KEY": "k"})
    run = lambda *a: subprocess.run([BASALT_BIN, *a], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, timeout=BOUND)
    try:
        for answer in BAD_PROGRESS:
            api.answers, api.n = [answer], 0
            cp = run("job", "get", "j1")
            assert cp.returncode == 0, cp
            assert_sane(cp.stdout)
        assert re.search(r"^attempt\s+- of -$", run("job", "get", "j1").stdout, re.M)
        api.answers, api.n = [BAD_PROGRESS[0]], 0
        assert re.search(r"^progress\s+0/10 \(0%\)$", run("job", "get", "j1").stdout, re.M)
        # a pipe: a line per change, the numbers it cannot trust as "-"
        api.answers, api.n = BAD_PROGRESS, 0
        cp = run("job", "watch", "j1", "--interval", "50")
        assert cp.returncode == 0, cp
        assert_sane(cp.stdout)
        assert cp.stdout.splitlines()[0] == "running attempt -: 0/10 (0%)", cp.stdout
        # a terminal: the bar
        api.answers, api.n = BAD_PROGRESS, 0
        cmd = "%s job watch j1 --interval 50" % BASALT_BIN
        tty = subprocess.run(["script", "-qec", cmd, "/dev/null"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=BOUND,
                             stdin=subprocess.DEVNULL)
        assert tty.returncode == 0, tty
        out = tty.stdout.decode()
        assert_sane(out)
        assert "[" + "#" * 30 + "] 7/3 (233%) 2.5/s  running (attempt 1)" in out, out
        # an answer without a state never ends: watch says so and fails
        api.answers, api.n = [{"id": "j1", "progress": {}}], 0
        cp = run("job", "watch", "j1", "--interval", "50")
        assert cp.returncode == 1 and "no job state" in cp.stderr, cp
        # a list that is not JSON, or whose items are not jobs
        api.answers, api.n = [b"<html>"], 0
        cp = run("job", "ls")
        assert cp.returncode == 1 and "not JSON" in cp.stderr, cp
        api.answers, api.n = [{"items": BAD_PROGRESS + [7, None], "next_cursor": None}], 0
        cp = run("job", "ls")
        assert cp.returncode == 0, cp
        assert_sane(cp.stdout)
    finally:
        api.close()


# ---- restart and replicas -------------------------------------------------------------------

@pytest.mark.embedded
def test_job_interrupted_by_a_restart_runs_again(server):
    """SIGTERM while a job runs: the attempt is told to stop and its job is made available
    again at once; after the restart the job runs (attempt 2) to completion."""
    srv = server
    j = enqueue(srv, kind="sleep", args={"seconds": 600, "steps": 600})
    wait_state(srv, j["id"], "running")
    assert srv.stop() == 0
    srv.start()
    r = wait_for("attempt 2 running after the restart",
                 lambda: (lambda x: x if x["state"] == "running" and x["attempt"] == 2
                          else None)(get(srv, j["id"])))
    assert r["lease_token"] == 2
    assert r["errors"][0]["attempt"] == 1 and "cancelled" in r["errors"][0]["error"]
    srv.post("/v1/jobs/%s/cancel" % j["id"])
    wait_state(srv, j["id"], "cancelled")


@pytest.mark.embedded  # starts its own PostgreSQL (run once, in the embedded pass)
def test_replica_killed_its_job_runs_on_the_other_after_the_lease():
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from pg_server import PgServer
    pg = PgServer().start()
    replicas = []
    try:
        db = pg.create_database()
        lease_ms = 2000
        for rid in ("a", "b"):
            s = Server(args=["--metadata-url", db, "--replica-id", rid,
                             "--job-lease-ms", str(lease_ms)], metadata=False)
            s.start()
            replicas.append(s)
        key = next(s.admin_key for s in replicas if s.admin_key)
        for s in replicas:
            s.admin_key = key
        a, b = replicas
        j = enqueue(a, kind="sleep", args={"seconds": 600, "steps": 6000})
        first = wait_state(a, j["id"], "running")
        holder = first["attempted_by"]
        assert holder in ("a", "b") and first["attempt"] == 1 and first["lease_token"] == 1
        victim, survivor = (a, b) if holder == "a" else (b, a)
        # While its holder lives the job stays with it: several lease lengths pass, the
        # other replica polling for work all along, and it is still attempt 1 there.
        until = time.monotonic() + 3 * lease_ms / 1000.0
        while time.monotonic() < until:
            x = get(survivor, j["id"])
            assert (x["state"], x["attempt"], x["attempted_by"], x["lease_token"]) == (
                "running", 1, holder, 1), x
            time.sleep(0.1)
        victim.kill9()
        second = wait_for("attempt 2 running on the survivor",
                          lambda: (lambda x: x if x["state"] == "running" and x["attempt"] == 2
                                   else None)(get(survivor, j["id"])))
        other = "b" if holder == "a" else "a"
        assert second["attempted_by"] == other and second["lease_token"] == 2
        assert len(second["errors"]) == 1
        e = second["errors"][0]
        assert e["attempt"] == 1 and e["attempted_by"] == holder and e["lease_token"] == 1
        assert "lease expired" in e["error"]
        # never two at once: the second attempt began after the first one's lease ended
        assert ts(second["attempted_at"]) >= ts(e["lease_expired_at"])
        m = survivor.metrics()
        assert m.get("basalt_jobs_rescued_total") == 1
        # and it runs there: its progress moves on the survivor
        p0 = second["progress"]["done"]
        wait_for("progress on the survivor",
                 lambda: get(survivor, j["id"])["progress"]["done"] > p0)
        r = survivor.post("/v1/jobs/%s/cancel" % j["id"])
        assert r.status_code == 200, r.text
        c = wait_state(survivor, j["id"], "cancelled")
        assert c["attempt"] == 2 and c["lease_token"] == 2 and c["attempted_by"] == other
    finally:
        for s in replicas:
            s.stop() if s.running() else None
            reports = s.sanitizer_reports()
            s.cleanup()
            assert not reports, reports[0]
        pg.cleanup()
