"""Raw-socket malformed and oversized requests (after h2o's t/40bad-request.t). Each case is
followed by a check that the server still serves /healthz."""
import json
import re
import socket
import time

import pytest

from conftest import parse_http_response, raw_exchange

MAX_BODY = 2048
MAX_HEADER = 2048
IDLE_MS = 400


@pytest.fixture(scope="module")
def limited(request):
    from conftest import Server, _finish
    srv = Server(args=["--threads", "2", "--max-body-bytes", "2KiB",
                       "--max-header-bytes", str(MAX_HEADER),
                       "--idle-timeout-ms", str(IDLE_MS)]).start()
    yield srv
    _finish(srv)


def healthy(srv):
    r = srv.get("/healthz", key=None)
    assert r.status_code == 200
    return True


def request_bytes(srv, method="POST", path="/v1/keys", headers=(), body=b"", key=True):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1"]
    if key:
        lines.append("Authorization: Bearer " + srv.admin_key)
    lines += list(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def status_or_closed(data):
    """Status of the response, or None if the server closed without answering."""
    resp = parse_http_response(data)
    if resp is None:
        assert data == b"", data[:200]
        return None
    return resp[0]


@pytest.mark.parametrize("line", [b"GARBAGE\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                                  b"\x00\x01\x02\x03\r\n\r\n", b"GET /healthz HTTP/1.1\r\nNoColon\r\n\r\n",
                                  b"G\xffT / HTTP/1.1\r\n\r\n"])
def test_bad_request_line(limited, line):
    data, how = limited.raw(line)
    assert how != "timeout"
    st = status_or_closed(data)
    assert st is None or 400 <= st < 500, data[:200]
    assert healthy(limited)


def test_headers_over_limit_431(limited):
    big = "X-Big: " + "a" * (MAX_HEADER * 2)
    data, how = limited.raw(request_bytes(limited, "GET", "/healthz", [big], key=False))
    st = status_or_closed(data)
    assert st in (431, None), data[:300]
    if st == 431:
        status, headers, body = parse_http_response(data)
        assert json.loads(body)["error"]["code"] == "headers_too_large"
        assert headers.get("x-request-id")
        assert how == "eof"  # the connection is closed after a 431
    assert healthy(limited)


def test_many_small_headers_over_limit(limited):
    hdrs = ["X-H%d: %s" % (i, "v" * 40) for i in range(MAX_HEADER // 40 + 10)]
    data, _ = limited.raw(request_bytes(limited, "GET", "/healthz", hdrs, key=False))
    assert status_or_closed(data) in (431, None)
    assert healthy(limited)


def test_headers_under_limit_ok(limited):
    ok = "X-Small: " + "a" * (MAX_HEADER // 4)
    data, _ = limited.raw(request_bytes(limited, "GET", "/healthz", [ok, "Connection: close"],
                                        key=False))
    assert status_or_closed(data) == 200


@pytest.mark.parametrize("chunks", [b"ZZZ\r\nabc\r\n0\r\n\r\n", b"5\r\nab\r\n0\r\n\r\n",
                                    b"-1\r\nx\r\n0\r\n\r\n", b"fffffffffffffffff\r\nx\r\n"])
def test_bad_chunked_encoding(limited, chunks):
    req = request_bytes(limited, headers=["Transfer-Encoding: chunked",
                                          "Content-Type: application/json"], body=chunks)
    data, how = limited.raw(req, timeout=5)
    st = status_or_closed(data)
    assert st is None or 400 <= st < 500, data[:200]
    assert healthy(limited)


def test_truncated_body_then_close(limited):
    req = request_bytes(limited, headers=["Content-Length: 100", "Content-Type: application/json"],
                        body=b'{"name":')
    data, how = limited.raw(req, shut_wr=True, timeout=5)
    st = status_or_closed(data)
    assert st is None or 400 <= st < 500
    assert healthy(limited)


def test_truncated_body_abrupt_close(limited):
    s = socket.create_connection((limited.host, limited.port))
    s.sendall(request_bytes(limited, headers=["Content-Length: 1000"], body=b"x" * 10))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()  # RST
    assert healthy(limited)


def test_body_over_limit_413(limited):
    body = b"x" * (MAX_BODY + 1)
    req = request_bytes(limited, headers=["Content-Length: %d" % len(body),
                                          "Content-Type: application/json"], body=body)
    data, how = limited.raw(req)
    assert status_or_closed(data) == 413
    assert healthy(limited)


def test_chunked_body_over_limit_413(limited):
    body = b"x" * (MAX_BODY + 100)
    chunked = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    req = request_bytes(limited, headers=["Transfer-Encoding: chunked"], body=chunked)
    data, how = limited.raw(req)
    assert status_or_closed(data) == 413
    assert healthy(limited)


def test_body_over_limit_413_without_sending_it(limited):
    # The limit applies to the declared length; the server need not wait for the bytes.
    req = request_bytes(limited, headers=["Content-Length: %d" % (MAX_BODY * 1000)])
    data, how = limited.raw(req, timeout=5)
    assert status_or_closed(data) == 413
    assert healthy(limited)


def test_body_at_limit_is_parsed(limited):
    pad = MAX_BODY - len('{"name":"k","role":"viewer","x":""}')
    body = ('{"name":"k","role":"viewer","x":"%s"}' % ("a" * pad)).encode()
    assert len(body) == MAX_BODY
    r = limited.post("/v1/keys", data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "x"  # parsed, then rejected


def h2o_level_error(limited, headers, body):
    """Sends a request that h2o itself rejects before routing; returns (status, headers,
    error) after checking the envelope, the closed connection and the server's health."""
    data, how = limited.raw(request_bytes(limited, headers=headers, body=body))
    status, hdrs, payload = parse_http_response(data)
    assert hdrs.get("content-type") == "application/json", hdrs
    assert int(hdrs["content-length"]) == len(payload)
    env = json.loads(payload)
    assert env["request_id"] == hdrs["x-request-id"]
    assert hdrs.get("connection", "").lower() == "close" and how in ("eof", "reset"), (hdrs, how)
    assert healthy(limited)
    return status, hdrs, env["error"]


def test_413_has_envelope_and_request_id(limited):
    body = b"x" * (MAX_BODY + 1)
    status, hdrs, err = h2o_level_error(limited, ["Content-Length: %d" % len(body)], body)
    assert status == 413 and err["code"] == "payload_too_large"
    assert str(MAX_BODY) in err["message"]
    assert re.match(r"^[0-9a-f-]{36}$", hdrs["x-request-id"])


def test_413_for_a_chunked_body_keeps_the_clients_request_id(limited):
    chunk = b"x" * (MAX_BODY + 10)
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk)
    status, hdrs, err = h2o_level_error(
        limited, ["Transfer-Encoding: chunked", "X-Request-Id: trace-413.a"], body)
    assert status == 413 and err["code"] == "payload_too_large"
    assert hdrs["x-request-id"] == "trace-413.a"


@pytest.mark.parametrize("headers,body", [
    (["Transfer-Encoding: chunked"], b"ZZZ\r\n\r\n"),
    (["Content-Length: 12abc"], b"{}"),
    (["Transfer-Encoding: gzip"], b"{}"),
], ids=["bad-chunked", "bad-content-length", "unknown-transfer-encoding"])
def test_malformed_body_framing_has_envelope(limited, headers, body):
    status, _, err = h2o_level_error(limited, headers, body)
    assert status == 400 and err["code"] == "bad_request"


def test_slow_client_never_finishing_headers_is_disconnected(limited):
    s = socket.create_connection((limited.host, limited.port))
    s.settimeout(30)  # far beyond --idle-timeout-ms: only a bound, not a measurement
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    try:
        data = s.recv(4096)
        # closed (b"") or an error response followed by close
        while data and s.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        pytest.fail("connection with unfinished headers was not closed")
    finally:
        s.close()
    assert healthy(limited)


def test_slowloris_trickle_is_disconnected(limited):
    """Sending one header byte at a time must not keep the connection alive forever."""
    s = socket.create_connection((limited.host, limited.port))
    s.settimeout(0.05)
    closed = False
    deadline = time.monotonic() + 30
    payload = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"s" * 100000
    i = 0
    try:
        while time.monotonic() < deadline and i < len(payload):
            s.send(payload[i:i + 1])
            i += 1
            try:
                if s.recv(4096) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
            time.sleep(IDLE_MS / 4000)
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    finally:
        s.close()
    assert closed, "slowloris connection still open after %d bytes" % i
    assert healthy(limited)


def test_idle_keepalive_connection_closed(limited):
    s = socket.create_connection((limited.host, limited.port))
    s.settimeout(30)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    status, headers, _ = parse_http_response(buf)
    assert status == 200
    try:
        rest = b""
        while True:
            c = s.recv(4096)
            if not c:
                break
            rest += c
    except ConnectionResetError:
        pass
    except socket.timeout:
        pytest.fail("idle keep-alive connection never closed")
    finally:
        s.close()


def test_pipelined_requests(limited):
    one = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    data, how = limited.raw(one * 3 + last)
    assert data.count(b"HTTP/1.1 200") == 4


def served_keepalive(host, port):
    """A connection on which one keep-alive request was answered, or None if refused."""
    c = socket.create_connection((host, port))
    c.settimeout(10)
    try:
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = c.recv(4096)
            if not chunk:
                break
            buf += chunk
    except (ConnectionResetError, BrokenPipeError):
        buf = b""
    if buf.startswith(b"HTTP/1.1 200"):
        return c
    c.close()
    return None


def test_max_connections(start_server):
    s = start_server("--threads", "1", "--max-connections", "2")
    s.session.close()
    held = []
    try:
        # Earlier connections (the readiness probe) may still be closing: keep opening until
        # two are confirmed served and held open.
        for _ in range(20):
            c = served_keepalive(s.host, s.port)
            if c:
                held.append(c)
            if len(held) == 2:
                break
        assert len(held) == 2
        assert served_keepalive(s.host, s.port) is None, "served beyond --max-connections"
    finally:
        for c in held:
            c.close()
    # once the others are gone, new connections are served again
    deadline = time.monotonic() + 10
    c = None
    while time.monotonic() < deadline and c is None:
        c = served_keepalive(s.host, s.port)
    assert c is not None
    c.close()


# ---- request smuggling (RFC 9112 §6.1, §6.3) ---------------------------------------------
# A second request hidden in the first one's body. A front proxy that frames the body by
# the other header forwards it as part of the first request; basalt must neither answer it
# nor keep reading the connection.

SMUGGLED = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def responses(data):
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", data)


def smuggle(limited, headers, body):
    data, how = limited.raw(request_bytes(limited, "POST", "/v1/keys", headers, body), timeout=5)
    # exactly one answer: the 400; the hidden GET /healthz got none
    assert responses(data) == [b"400"], data[:600]
    status, hdrs, payload = parse_http_response(data)
    assert hdrs.get("connection", "").lower() == "close", hdrs
    assert how in ("eof", "reset")
    err = json.loads(payload)
    assert err["error"]["code"] == "bad_request" and err["request_id"] == hdrs["x-request-id"]
    assert healthy(limited)
    return err["error"]["message"]


def test_two_different_content_lengths_are_refused(limited):
    body = b"{}" + SMUGGLED
    msg = smuggle(limited, ["Content-Type: application/json", "Content-Length: 2",
                            "Content-Length: %d" % len(body)], body)
    assert "Content-Length" in msg


def test_two_different_content_lengths_longer_first(limited):
    # the first length covers the hidden request too; the second one would end the body early
    body = b"{}" + SMUGGLED
    smuggle(limited, ["Content-Length: %d" % len(body), "Content-Length: 2"], body)


def test_content_length_with_chunked_is_refused(limited):
    body = b"0\r\n\r\n" + SMUGGLED
    msg = smuggle(limited, ["Content-Length: %d" % len(body), "Transfer-Encoding: chunked"], body)
    assert "Transfer-Encoding" in msg


def test_chunked_with_content_length_after_it_is_refused(limited):
    body = b"0\r\n\r\n" + SMUGGLED
    smuggle(limited, ["transfer-encoding: chunked", "content-length: %d" % len(body)], body)


def test_two_transfer_encodings_are_refused(limited):
    body = b"0\r\n\r\n" + SMUGGLED
    smuggle(limited, ["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"], body)


def test_identical_content_lengths_are_one_value(limited):
    # RFC 9110 §8.6 lets a recipient treat repeated identical values as one: the framing is
    # unambiguous, the request is served and the connection stays usable.
    body = b'{"name":"dup-cl","role":"viewer"}'
    req = request_bytes(limited, "POST", "/v1/keys",
                        ["Content-Type: application/json", "Content-Length: %d" % len(body),
                         "Content-Length: %d" % len(body)], body)
    data, how = limited.raw(req + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert responses(data) == [b"201", b"200"], data[:600]


def test_host_header_counts_against_the_header_budget(limited):
    # h2o moves Host out of the header list; it must still be counted.
    req = ("GET /healthz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
           % ("h" * (MAX_HEADER + 100))).encode()
    data, how = limited.raw(req)
    status, hdrs, body = parse_http_response(data)
    assert status == 431, data[:300]
    assert json.loads(body)["error"]["code"] == "headers_too_large"
    assert healthy(limited)


@pytest.mark.parametrize("field", ["Upgrade", "Expect"])
def test_fields_h2o_takes_out_count_against_the_header_budget(limited, field):
    # like Host, h2o keeps these out of the header list it hands on
    req = ("GET /healthz HTTP/1.1\r\nHost: x\r\n%s: %s\r\nConnection: close\r\n\r\n"
           % (field, "u" * (MAX_HEADER + 100))).encode()
    data, how = limited.raw(req)
    status = status_or_closed(data)
    assert status == 431, data[:300]
    assert healthy(limited)


# ---- HTTP/2 and the body limit ----------------------------------------------------------
# h2o 2.2.5 answers an HTTP/2 body over the limit with RST_STREAM(REFUSED_STREAM) before any
# handler runs; clients retry it (curl: "tried 5 times") and never see a 413. Cleartext
# HTTP/2 is therefore off unless h2c is set, and such bodies get the readable 413.

def curl(*args, timeout=60):
    import subprocess
    cp = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code} %{http_version}",
                         *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    out = cp.stdout.decode(errors="replace")
    body, _, tail = out.rpartition("\n")
    code, _, version = tail.partition(" ")
    return cp.returncode, int(code), version, body, cp.stderr.decode(errors="replace")


def test_http2_body_over_limit_is_a_readable_413_not_refused_stream(limited, tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b'{"name":"' + b"x" * (MAX_BODY * 2) + b'"}')
    url = limited.url + "/v1/keys"
    auth = ["-H", "Authorization: Bearer " + limited.admin_key,
            "-H", "Content-Type: application/json", "--data-binary", "@%s" % big]
    # a client that asks to upgrade stays on HTTP/1.1 and reads the 413 envelope
    rc, code, version, body, err = curl("--http2", *auth, url)
    assert (rc, code, version) == (0, 413, "1.1"), (rc, code, version, err)
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    # prior knowledge is refused at once (no HTTP/2 here), never a reset stream it retries
    rc, code, version, body, err = curl("--http2-prior-knowledge", *auth, url)
    assert rc != 0 and code == 0, (rc, code, body)
    assert "REFUSED_STREAM" not in err and "tried" not in err, err
    assert healthy(limited)


def test_h2c_setting_turns_cleartext_http2_on(start_server):
    s = start_server("--h2c")
    rc, code, version, body, err = curl("--http2-prior-knowledge", s.url + "/healthz")
    assert (rc, code, version) == (0, 200, "2"), (rc, code, version, err)
    rc, code, version, body, err = curl("--http2-prior-knowledge",
                                        "-H", "Authorization: Bearer " + s.admin_key,
                                        s.url + "/v1/info")
    assert (rc, code, version) == (0, 200, "2") and json.loads(body)["auth"] is True
