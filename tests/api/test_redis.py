"""Rate limits shared through Redis (`--redis-url`), against a real redis-server.

Two replicas without shared PostgreSQL metadata: replica B starts on a copy of replica
A's data directory, so both know the same API key (same id, same secret), and both point
at one Redis. One key limited to 20 requests/s, requests alternating between A and B:

- global: the admitted total over a window T is the one bucket's arithmetic,
  burst + rate*T (+1 credit per replica) at most and not far below it;
- Redis stopped: every request is still answered (200 or 429), the limits are the
  per-replica buckets (together they admit more than one bucket could), /metrics shows
  the fallback and each replica logs the transition once;
- Redis started again: global by itself (shared gauge back to 1, bounds again).
"""
import os
import shutil
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from redis_server import RedisServer  # noqa: E402

# Starts its own Redis and servers with their own --redis-url; on PostgreSQL test_replicas.py
# shares one Redis between real replicas.
pytestmark = pytest.mark.embedded

RATE, BURST = 20.0, 20.0
WINDOW = 3.0


def hammer(replicas, key, seconds):
    """Requests alternating over replicas for `seconds`; returns (admitted, total, T) with T
    measured around all of them (an upper bound of the window the servers saw)."""
    admitted = total = 0
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < seconds:
        r = replicas[i % len(replicas)].get("/v1/info", key=key)
        i += 1
        total += 1
        assert r.status_code in (200, 429), (r.status_code, r.text)
        if r.status_code == 200:
            admitted += 1
        else:
            assert r.json()["error"]["code"] == "rate_limited"
            assert int(r.headers["retry-after"]) >= 1
        time.sleep(0.002)
    t = time.monotonic() - t0
    print("admitted %d of %d in %.2f s" % (admitted, total, t))
    return admitted, total, t


def global_bounds(t):
    # Upper: every admitted request spent a token the one global bucket granted (full at
    # first use, refilled at RATE), except one on credit per replica; +1 for rounding.
    # Lower: tokens go unused only while they sit in the bucket or a replica's slice at
    # the end (< BURST each) or overflow a full bucket (a stall of BURST/RATE = 1 s):
    # 0.6*RATE*T leaves room for those on a loaded machine, far above what either
    # replica alone or broken refills would give.
    return 0.6 * RATE * t, BURST + RATE * t + 2 + 1


def wait_metric(srv, name, value, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.metrics().get(name) == value:
            return
        time.sleep(0.05)
    pytest.fail("%s never became %s (now %s)" % (name, value, srv.metrics().get(name)))


def logged_once(srv, line, timeout=30):
    """The log is written by a background thread: waits for line to appear, then checks it
    appears exactly once."""
    deadline = time.monotonic() + timeout
    while srv.stderr().count(line) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    return srv.stderr().count(line) == 1


@pytest.fixture
def redis():
    r = RedisServer().start()
    yield r
    r.close()


def test_redis_url_is_checked_at_start(run_basalt, tmp_path):
    cp = run_basalt("serve", "--data", str(tmp_path / "d"), "--listen", "127.0.0.1:0",
                    "--redis-url", "http://nope")
    assert cp.returncode == 2
    assert "redis_url" in cp.stderr and "redis://" in cp.stderr


def test_shared_limit_fallback_and_recovery(start_server, redis, tmp_path):
    a = start_server("--threads", "2", "--redis-url", redis.url)
    key = a.create_key("viewer", rate_limit={"rps": RATE, "burst": BURST})
    # B: a second replica with the same keys (a copy of A's store, taken while A is
    # stopped so the SQLite file is consistent).
    a.stop()
    b_data = str(tmp_path / "b-data")
    shutil.copytree(a.data_dir, b_data)
    a.start()
    b = start_server("--threads", "2", "--redis-url", redis.url, data_dir=b_data)
    b.admin_key = a.admin_key
    for s in (a, b):
        m = s.metrics()
        assert m.get("basalt_redis_up") == 1
        assert m.get("basalt_ratelimit_shared") == 1

    # ---- global: one bucket for both replicas
    admitted, total, t = hammer([a, b], key["key"], WINDOW)
    lo, hi = global_bounds(t)
    assert total > 3 * hi  # far more requests than the limit lets through
    assert lo <= admitted <= hi, (admitted, total, t)
    granted = sum(s.metrics().get("basalt_ratelimit_tokens_granted_total") for s in (a, b))
    assert granted >= admitted - 2  # the admitted requests were paid by Redis grants

    # ---- Redis stopped: answered all the same, per replica, counted and logged once
    redis.stop()
    admitted, total, t = hammer([a, b], key["key"], WINDOW)
    for s in (a, b):
        m = s.metrics()
        assert m.get("basalt_ratelimit_shared") == 0
        assert m.get("basalt_redis_up") == 0
        assert m.get("basalt_ratelimit_fallback_total") > 0
        assert m.get("basalt_ratelimit_fallback_transitions_total") == 1
        assert m.get("basalt_redis_errors_total") > 0
        assert logged_once(s, "rate limits fall back to per-replica buckets")
    # Two local buckets (each starts full on the switch) admit more than the one global
    # bucket could have in the same time.
    assert admitted > global_bounds(t)[1], (admitted, total, t)

    # ---- Redis back: global again by itself
    redis.start()
    for s in (a, b):
        wait_metric(s, "basalt_ratelimit_shared", 1)
        assert s.metrics().get("basalt_redis_up") == 1
        assert logged_once(s, "redis reachable again: rate limits are global")
    admitted, total, t = hammer([a, b], key["key"], WINDOW)
    lo, hi = global_bounds(t)
    assert lo <= admitted <= hi, (admitted, total, t)
    for s in (a, b):
        assert s.metrics().get("basalt_ratelimit_fallback_transitions_total") == 1


def test_without_redis_url_no_redis_metrics(server):
    m = server.metrics()
    assert m.get("basalt_redis_up") is None
    assert m.get("basalt_ratelimit_fallback_total") is None


# ---- the harness itself ----------------------------------------------------------------------

def test_harness_cli_exports_url_and_exit_status(tmp_path):
    import subprocess
    from redis_server import ping
    script = ("import os, sys\n"
              "sys.path.insert(0, %r)\n"
              "from redis_server import ping\n"
              "url = os.environ['BASALT_TEST_REDIS_URL']\n"
              "port = int(url.rsplit(':', 1)[1])\n"
              "assert url.startswith('redis://127.0.0.1:')\n"
              "assert os.path.exists(os.environ['BASALT_TEST_REDIS_CONF'])\n"
              "assert ping(port)\n"
              "open(%r, 'w').write(str(port))\n"
              "sys.exit(7)\n" % (os.path.dirname(HERE), str(tmp_path / "port")))
    rc = subprocess.call([sys.executable, os.path.join(os.path.dirname(HERE), "redis_server.py"),
                          "--", sys.executable, "-c", script])
    assert rc == 7
    port = int((tmp_path / "port").read_text())
    assert not ping(port)  # stopped afterwards


def test_harness_stop_kill_start_same_port():
    from redis_server import ping
    r = RedisServer().start()
    try:
        port = r.port
        r.stop()
        assert not ping(port)
        r.start()
        assert ping(port) and r.port == port
        r.kill()
        assert not ping(port)
        r.start()
        assert ping(port)
    finally:
        r.close()
    assert not ping(port)
