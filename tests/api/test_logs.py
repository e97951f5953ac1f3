"""Structured logs on stderr: every line one JSON object with ts (RFC 3339 UTC), level,
module and msg; an access line per request (sampled by access_log_sample, 5xx always)
carrying the response's X-Request-Id, route, status and duration; the log level filters;
--no-auth warns at every start. The server is stopped (SIGTERM) before its stderr is read,
so every line it wrote is there."""
import json
import re
from datetime import datetime

import pytest

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
LEVELS = {"debug", "info", "warn", "error"}


def log_lines(srv):
    """Every stderr line of the server's last run, parsed; fails on a line that is not a
    JSON object with the required fields."""
    out = []
    for line in srv.stderr().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        assert isinstance(rec, dict), line
        assert TS_RE.match(rec["ts"]), line
        datetime.strptime(rec["ts"][:19], "%Y-%m-%dT%H:%M:%S")
        assert rec["level"] in LEVELS, line
        assert isinstance(rec["module"], str) and rec["module"], line
        assert isinstance(rec["msg"], str), line
        out.append(rec)
    return out


def access(lines):
    return [r for r in lines if r["module"] == "access"]


def test_every_line_is_json_and_each_request_has_an_access_line(start_server):
    srv = start_server("--access-log-sample", "1")
    ids = []
    for path, key in (("/healthz", None), ("/v1/info", True), ("/v1/nope", True),
                      ("/v1/models/x/versions/1", True), ("/v1/keys", None)):
        r = srv.get(path, **({} if key else {"key": None}))
        ids.append((r.headers["x-request-id"], path, r.status_code))
    r = srv.post("/v1/keys", data=b'{"name": ', headers={"Content-Type": "application/json",
                                                         "X-Request-Id": "client-chosen-1"})
    assert r.status_code == 400
    ids.append(("client-chosen-1", "/v1/keys", 400))
    assert srv.stop() == 0
    lines = log_lines(srv)
    by_id = {r.get("request_id"): r for r in access(lines)}
    for rid, path, status in ids:
        rec = by_id[rid]
        assert rec["path"] == path and rec["status"] == status
        assert rec["method"] in ("GET", "POST")
        assert isinstance(rec["duration_us"], int) and rec["duration_us"] >= 0
    assert by_id[ids[0][0]]["route"] == "/healthz"
    assert by_id[ids[3][0]]["route"] == "/v1/models/{name}/versions/{version}"
    assert by_id[ids[2][0]]["route"] == "unmatched"
    # the lifecycle is logged too, by other modules
    msgs = [r["msg"] for r in lines if r["module"] != "access"]
    assert any(m.startswith("listening on 127.0.0.1:%d" % srv.port) for m in msgs), msgs
    assert any("shutting down" in m for m in msgs), msgs


def test_sampling(start_server):
    srv = start_server("--access-log-sample", "0")
    for _ in range(50):
        assert srv.get("/healthz", key=None).status_code == 200
    assert srv.stop() == 0
    assert access(log_lines(srv)) == []

    srv = start_server("--access-log-sample", "0.5")
    n = 400
    for _ in range(n):
        assert srv.get("/healthz", key=None).status_code == 200
    assert srv.stop() == 0
    got = len(access(log_lines(srv)))
    # Binomial(400, 0.5): mean 200, sd 10; outside 120..280 has probability < 1e-14.
    assert 120 <= got <= 280, got


def test_log_level_filters(start_server):
    srv = start_server("--log-level", "warn")
    assert srv.get("/healthz", key=None).status_code == 200
    assert srv.stop() == 0
    lines = log_lines(srv)
    assert all(r["level"] in ("warn", "error") for r in lines), lines[:5]


def test_no_auth_warns_at_every_start(start_server):
    srv = start_server("--no-auth")
    for run in range(2):
        assert srv.get("/v1/info", key=None).status_code == 200
        assert srv.stop() == 0
        warns = [r for r in log_lines(srv) if r["level"] == "warn"]
        assert any("no-auth" in r["msg"] or "auth" in r["msg"].lower() for r in warns), warns
        if run == 0:
            srv.start()


@pytest.mark.parametrize("sample", ["0", "1"])
def test_client_errors_are_never_logged_as_errors(start_server, sample):
    """A client's mistake is an access line (or nothing), never an error-level line."""
    srv = start_server("--access-log-sample", sample)
    srv.post("/v1/keys", data=b"{", headers={"Content-Type": "application/json"})
    srv.get("/v1/models/none/versions/zz")
    srv.raw(b"GARBAGE\r\n\r\n")
    assert srv.stop() == 0
    assert [r for r in log_lines(srv) if r["level"] == "error"] == []


def test_a_stalled_stderr_never_blocks_requests(tmp_path):
    """stderr is a pipe nobody reads: once the pipe and the log buffer are full, lines are
    dropped and counted, and requests keep being answered. (Writing each line directly
    would block the I/O threads after about 64 KiB of log.)"""
    import os
    import signal
    import socket
    import subprocess
    from conftest import BASALT_BIN, LISTEN_RE, clean_env
    r, w = os.pipe()
    proc = subprocess.Popen([BASALT_BIN, "serve", "--listen", "127.0.0.1:0", "--data",
                             str(tmp_path / "data"), "--no-auth", "--threads", "2",
                             "--access-log-sample", "1"],
                            stdout=subprocess.PIPE, stderr=w, stdin=subprocess.DEVNULL,
                            env=clean_env())
    os.close(w)
    try:
        m = LISTEN_RE.match(proc.stdout.readline().decode().strip())
        assert m, "no listening line"
        port = int(m.group(3))
        total, batch = 0, 500
        req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            for _ in range(16):  # 8000 access lines, about 1.8 MB: past pipe and buffer
                s.sendall(req * batch)
                got = b""
                while got.count(b"HTTP/1.1 200") < batch:
                    chunk = s.recv(1 << 16)
                    assert chunk, "connection closed"
                    got += chunk
                total += batch
            assert total == 8000
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            text = b""
            while True:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                text += chunk
        dropped = re.search(rb"^basalt_log_dropped_lines_total (\d+)$", text, re.M)
        assert dropped and int(dropped.group(1)) > 0, text[-500:]
    finally:
        os.close(r)  # the writer's next write fails (EPIPE), so shutdown is not held up
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
