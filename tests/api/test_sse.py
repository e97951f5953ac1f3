"""GET /v1/topics/{name}/stream: Server-Sent Events over the topic log.

The oracle for every event's data is the read API (GET /v1/topics/{name}/events): an SSE
event carries exactly the item the read API returns for that offset, its id is the offset
and its event name the event's "type" (else "event"). Checked: a live tail sees what is
published after it connected, in order; from_offset / from_time replay history and go on
live; Last-Event-ID resumes after the last event received (no gap, no duplicate) and wins
over the query; an event whose JSON has line breaks arrives as several data: lines that join
back to it; heartbeats; bad parameters, unknown topics and other tenants' topics are 4xx
before any stream starts; a deleted topic ends its streams with an error event; a reader that
does not read (a small socket buffer) holds the server's writes back (refused writes counted,
the server's memory does not grow by the backlog) while other clients are served, then gets
every event; a client that disconnects, idle or held back, frees its stream
(basalt_http_streams_open); a server stopping ends its streams.
"""
import json
import os
import socket
import time

import pytest
import requests

from conftest import REQUEST_TIMEOUT

WAIT = 30.0  # upper bound of any wait for a condition (not a timing assertion)


def wait_for(cond, what, timeout=WAIT):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("waited %.0f s for %s" % (timeout, what))


def make_topic(s, name, key=None):
    kw = {} if key is None else {"key": key}
    r = s.put("/v1/topics/%s" % name, json={}, **kw)
    assert r.status_code in (200, 201), r.text


def publish(s, name, events):
    r = s.post("/v1/topics/%s/events" % name, json=events)
    assert r.status_code == 200, r.text
    return r.json()


def read_items(s, name, from_offset=0, limit=1000):
    r = s.get("/v1/topics/%s/events" % name,
              params={"from_offset": from_offset, "limit": limit})
    assert r.status_code == 200, r.text
    return r.json()["items"]


class SSEClient:
    """A raw-socket reader of one SSE response (chunked transfer decoded)."""

    def __init__(self, s, path, headers=None, key="admin", rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(REQUEST_TIMEOUT)
        self.sock.connect((s.host, s.port))
        h = {"Host": "t", "Accept": "text/event-stream"}
        if key == "admin":
            key = s.admin_key
        if key:
            h["Authorization"] = "Bearer " + key
        h.update(headers or {})
        req = "GET %s HTTP/1.1\r\n" % path + "".join("%s: %s\r\n" % kv for kv in h.items())
        self.sock.sendall((req + "\r\n").encode())
        self.buf = b""
        self.body = b""  # decoded, not yet parsed into events
        self.ended = False
        self.status, self.headers = self._head()
        self.comments = []

    def _recv(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def _head(self):
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding") != "chunked":
            n = int(headers.get("content-length", "0"))
            while len(self.buf) < n:
                self._recv()
            self.body, self.buf = self.buf[:n], self.buf[n:]
            self.ended = True
        return status, headers

    def _chunk(self):
        """Decodes one chunk into self.body; False at the last chunk."""
        while b"\r\n" not in self.buf:
            self._recv()
        line, rest = self.buf.split(b"\r\n", 1)
        n = int(line, 16)
        while len(rest) < n + 2:
            self._recv()
            line, rest = self.buf.split(b"\r\n", 1)
        self.body += rest[:n]
        self.buf = rest[n + 2:]
        if n == 0:
            self.ended = True
            return False
        return True

    def json_body(self):
        return json.loads(self.body)

    def event(self):
        """The next event as {"id", "event", "data"}; comments are kept in self.comments.
        None when the stream ended."""
        while True:
            while b"\n\n" not in self.body:
                if self.ended or not self._chunk():
                    if b"\n\n" not in self.body:
                        return None
            block, self.body = self.body.split(b"\n\n", 1)
            ev, data = {}, []
            for line in block.decode("utf-8").split("\n"):
                if line.startswith(":"):
                    self.comments.append(line)
                    continue
                field, _, value = line.partition(":")
                if value.startswith(" "):
                    value = value[1:]
                if field == "data":
                    data.append(value)
                else:
                    ev[field] = value
            if data:
                ev["data"] = "\n".join(data)
                return ev
            if "retry" in ev:
                self.retry = ev["retry"]

    def events(self, n):
        out = []
        for _ in range(n):
            e = self.event()
            assert e is not None, "the stream ended after %d events" % len(out)
            out.append(e)
        return out

    def close(self):
        self.sock.close()


def check_against_read_api(s, topic, events):
    """Each SSE event is the read API's item of its offset."""
    items = {it["offset"]: it for it in read_items(s, topic)}
    for e in events:
        item = json.loads(e["data"])
        assert int(e["id"]) == item["offset"]
        assert item == items[item["offset"]], (item, items[item["offset"]])
        ev = item["event"]
        want = ev["type"] if isinstance(ev, dict) and isinstance(ev.get("type"), str) and \
            ev["type"] else "event"
        assert e["event"] == want


def metric(s, name):
    return s.metrics().get(name)


# ---- reading ---------------------------------------------------------------------------

def test_live_tail_with_requests(shared_server):
    s = shared_server
    make_topic(s, "live")
    publish(s, "live", [{"before": True}])  # before the stream: not in a tail
    r = requests.get(s.url + "/v1/topics/live/stream", stream=True, timeout=REQUEST_TIMEOUT,
                     headers={"Authorization": "Bearer " + s.admin_key})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["x-request-id"]
    ce = {"specversion": "1.0", "id": "ord-1", "source": "/shop", "type": "com.example.order",
          "data": {"amount": 1200}}
    sent = [ce, {"type": "plain.typed", "n": 1}, {"n": 2, "text": "héllo"}]
    publish(s, "live", sent)
    lines = r.iter_lines(chunk_size=1, decode_unicode=True)
    got = []
    cur = {}
    for line in lines:
        if line == "":
            if "data" in cur:
                got.append(cur)
                if len(got) == 3:
                    break
            cur = {}
        elif not line.startswith(":"):
            f, _, v = line.partition(": ")
            cur[f] = v
    r.close()
    assert [int(e["id"]) for e in got] == [1, 2, 3]
    assert [e["event"] for e in got] == ["com.example.order", "plain.typed", "event"]
    assert [json.loads(e["data"])["event"] for e in got] == sent
    check_against_read_api(s, "live", got)


def test_from_offset_replays_then_goes_live(shared_server):
    s = shared_server
    make_topic(s, "replay")
    publish(s, "replay", [{"i": i} for i in range(5)])
    c = SSEClient(s, "/v1/topics/replay/stream?from_offset=2")
    assert c.status == 200
    evs = c.events(3)
    assert [int(e["id"]) for e in evs] == [2, 3, 4]
    publish(s, "replay", [{"i": 5}])
    evs += c.events(1)
    assert int(evs[-1]["id"]) == 5
    assert c.retry == "2000"
    check_against_read_api(s, "replay", evs)
    c.close()
    # Past the end: waits for that offset.
    c = SSEClient(s, "/v1/topics/replay/stream?from_offset=7")
    publish(s, "replay", [{"i": 6}, {"i": 7}])
    e = c.event()
    assert int(e["id"]) == 7
    c.close()


def test_from_time(shared_server):
    s = shared_server
    make_topic(s, "bytime")
    publish(s, "bytime", [{"i": 0}, {"i": 1}])
    items = read_items(s, "bytime")
    c = SSEClient(s, "/v1/topics/bytime/stream?from_time=" + items[1]["time"])
    e = c.event()
    # The first event at or after that time (the time has ms resolution: 0 may share it).
    assert int(e["id"]) <= 1
    ids = [int(e["id"])]
    while ids[-1] < 1:
        ids.append(int(c.event()["id"]))
    assert ids[-1] == 1
    c.close()
    c = SSEClient(s, "/v1/topics/bytime/stream?from_time=2999-01-01T00:00:00Z")
    publish(s, "bytime", [{"i": 2}])
    assert int(c.event()["id"]) == 2  # nothing is that late: the next one
    c.close()


def test_resume_with_last_event_id(shared_server):
    s = shared_server
    make_topic(s, "resume")
    publish(s, "resume", [{"i": i} for i in range(4)])
    c = SSEClient(s, "/v1/topics/resume/stream?from_offset=0")
    first = c.events(2)
    c.close()
    last_id = first[-1]["id"]
    publish(s, "resume", [{"i": i} for i in range(4, 6)])
    # A reconnecting client sends Last-Event-ID; it wins over from_offset.
    c = SSEClient(s, "/v1/topics/resume/stream?from_offset=0",
                  headers={"Last-Event-ID": last_id})
    rest = c.events(4)
    c.close()
    ids = [int(e["id"]) for e in first + rest]
    assert ids == list(range(6))  # no gap, no duplicate
    check_against_read_api(s, "resume", first + rest)


def test_event_with_line_breaks(shared_server):
    s = shared_server
    make_topic(s, "lines")
    ev = {"note": "a", "nested": {"k": [1, 2, 3]}, "type": "multi.line"}
    text = json.dumps(ev, indent=2).replace("\n", "\r\n", 1)  # CRLF and LF
    assert "\n" in text
    r = s.post("/v1/topics/lines/events", data=text.encode(),
               headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    c = SSEClient(s, "/v1/topics/lines/stream?from_offset=0")
    e = c.event()
    c.close()
    assert e["event"] == "multi.line"
    assert json.loads(e["data"])["event"] == ev
    check_against_read_api(s, "lines", [e])


def test_heartbeat(shared_server):
    s = shared_server
    make_topic(s, "quiet")
    c = SSEClient(s, "/v1/topics/quiet/stream?heartbeat=1s")
    while not c.comments:  # no event comes: a heartbeat does
        while b"\n\n" not in c.body:
            c._chunk()
        block, c.body = c.body.split(b"\n\n", 1)
        c.comments += [l for l in block.decode().split("\n") if l.startswith(":")]
    assert c.comments[0] == ": ping"
    c.close()


def test_bad_requests(shared_server):
    s = shared_server
    make_topic(s, "badreq")

    def err(path, status, field=None, headers=None, key="admin"):
        c = SSEClient(s, path, headers=headers, key=key)
        assert c.status == status, c.body
        body = c.json_body()
        assert not c.headers.get("content-type", "").startswith("text/event-stream")
        if field:
            assert body["error"]["field"] == field, body
        c.close()
        return body

    assert err("/v1/topics/nope/stream", 404)["error"]["code"] == "not_found"
    err("/v1/topics/badreq/stream?from_offset=-1", 400, "from_offset")
    err("/v1/topics/badreq/stream?from_offset=abc", 400, "from_offset")
    err("/v1/topics/badreq/stream?from_offset=1&from_time=2024-01-01T00:00:00Z", 400,
        "from_time")
    err("/v1/topics/badreq/stream?from_time=yesterday", 400, "from_time")
    err("/v1/topics/badreq/stream?heartbeat=100ms", 400, "heartbeat")
    err("/v1/topics/badreq/stream?heartbeat=forever", 400, "heartbeat")
    err("/v1/topics/badreq/stream", 400, "Last-Event-ID", headers={"Last-Event-ID": "x7"})
    assert err("/v1/topics/badreq/stream", 401, key=None)["error"]["code"] == "unauthorized"
    # A viewer may read; another tenant does not see the topic.
    viewer = s.create_key("viewer", name="sse-viewer")["key"]
    c = SSEClient(s, "/v1/topics/badreq/stream", key=viewer)
    assert c.status == 200
    c.close()
    r = s.post("/v1/tenants", json={"name": "other-sse"})
    assert r.status_code == 201, r.text
    other = s.create_key("viewer", name="other-viewer", tenant="other-sse")["key"]
    err("/v1/topics/badreq/stream", 404, key=other)


def test_deleted_topic_ends_the_stream(shared_server):
    s = shared_server
    make_topic(s, "doomed")
    c = SSEClient(s, "/v1/topics/doomed/stream")
    publish(s, "doomed", [{"i": 0}])
    assert int(c.event()["id"]) == 0
    r = s.delete("/v1/topics/doomed")
    assert r.status_code == 204, r.text
    e = c.event()
    assert e is not None and e["event"] == "error", e
    assert json.loads(e["data"])["error"]["code"] == "not_found"
    assert c.event() is None  # and the response ends
    c.close()


# ---- backpressure and lifetime -----------------------------------------------------------

def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def sanitized(s):
    with open("/proc/%d/maps" % s.proc.pid) as f:
        return "asan" in f.read()


def test_slow_reader_is_held_back_and_others_are_served(server):
    s = server
    make_topic(s, "big")
    n, payload = 10000, "x" * 2000  # ~20 MB of events
    for start in range(0, n, 1000):
        publish(s, "big", [{"i": i, "p": payload} for i in range(start, start + 1000)])
    rss_before = rss_kib(s.proc.pid)
    slow = SSEClient(s, "/v1/topics/big/stream?from_offset=0", rcvbuf=4096)
    assert slow.status == 200
    # It reads nothing: the server's writes are refused (backpressure), not buffered.
    wait_for(lambda: (metric(s, "basalt_http_stream_refused_writes_total") or 0) >= 1,
             "a refused stream write")
    # Meanwhile another client reads the whole topic and the API answers.
    fast = SSEClient(s, "/v1/topics/big/stream?from_offset=0")
    evs = fast.events(n)
    assert [int(e["id"]) for e in evs] == list(range(n))
    fast.close()
    assert s.get("/v1/info").status_code == 200
    # The held-back stream has not taken the backlog into memory (unbounded buffering would
    # hold all ~20 MB of formatted events). Under AddressSanitizer RSS follows its
    # quarantine, not basalt's frees: there the refused writes above are the check.
    grew_mib = (rss_kib(s.proc.pid) - rss_before) / 1024.0
    if not sanitized(s):
        assert grew_mib < 10, "the server grew by %.1f MiB" % grew_mib
    # Once it reads, the slow client gets every event, in order.
    got = slow.events(n)
    assert [int(e["id"]) for e in got] == list(range(n))
    assert json.loads(got[-1]["data"])["event"] == {"i": n - 1, "p": payload}
    slow.close()
    wait_for(lambda: metric(s, "basalt_http_streams_open") == 0, "the streams to end")


def test_disconnect_frees_the_stream(server):
    s = server
    make_topic(s, "bye")
    assert metric(s, "basalt_http_streams_open") == 0
    idle = [SSEClient(s, "/v1/topics/bye/stream") for _ in range(3)]
    wait_for(lambda: metric(s, "basalt_http_streams_open") == 3, "three open streams")
    for c in idle:
        c.close()  # idle streams: the server notices the hang-up by itself
    wait_for(lambda: metric(s, "basalt_http_streams_open") == 0, "the idle streams to be freed")
    # One held back by a full socket, then gone.
    publish(s, "bye", [{"i": i, "p": "y" * 4000} for i in range(2000)])
    held = SSEClient(s, "/v1/topics/bye/stream?from_offset=0", rcvbuf=4096)
    refused = metric(s, "basalt_http_stream_refused_writes_total") or 0
    wait_for(lambda: metric(s, "basalt_http_stream_refused_writes_total") > refused,
             "the held stream's writes to be refused")
    held.close()
    wait_for(lambda: metric(s, "basalt_http_streams_open") == 0, "the held stream to be freed")
    m = s.metrics()
    assert m.get("basalt_http_streams_total") == 4
    assert m.get("basalt_http_streams_lost_total") == 4
    # The server still streams.
    c = SSEClient(s, "/v1/topics/bye/stream?from_offset=1999")
    assert int(c.event()["id"]) == 1999
    c.close()


def test_stop_ends_streams(server):
    s = server
    make_topic(s, "stop")
    c = SSEClient(s, "/v1/topics/stop/stream")
    publish(s, "stop", [{"i": 0}])
    assert int(c.event()["id"]) == 0
    s.stop()  # SIGTERM: the open stream must not hold the shutdown
    assert c.event() is None  # the response ended
    assert c.ended  # with the last chunk: a clean end, not a cut connection
    c.close()
