"""Topics through the real binary (issue 9 "Topics"): the Topic resource, every publish form
(one event, arrays, JSON lines, CloudEvents structured / batched / binary), per-event errors
by index, reading by offset and by time, dedup by each key within the window and not after,
consumer groups (redelivery after ack_wait, in_progress, nack delay, max_deliver to the dead
letter topic, replay, max_ack_pending's stall in /metrics) and the bad-input answers.

Events are compared with what the test sent (json.loads of the same text); waits are for
states (a redelivery, a dead letter), never assertions on how long something took."""
import json
import threading
import time
import uuid

import pytest
import requests

from conftest import BACKEND, REQUEST_TIMEOUT

JSON = {"Content-Type": "application/json"}


def name(prefix="t"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


def make_topic(srv, spec=None, topic=None):
    topic = topic or name()
    r = srv.put("/v1/topics/" + topic, json=spec or {})
    assert r.status_code == 201, r.text
    return topic


def publish(srv, topic, body=None, headers=None, **kw):
    h = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        h.setdefault("Content-Type", "application/json")
    return srv.post("/v1/topics/%s/events" % topic, data=body, headers=h, **kw)


def read_all(srv, topic, **params):
    items, offset = [], params.pop("from_offset", 0)
    while True:
        r = srv.get("/v1/topics/%s/events" % topic,
                    params=dict(params, from_offset=offset, limit=1000))
        assert r.status_code == 200, r.text
        page = r.json()
        items += page["items"]
        if not page["items"]:
            return items
        assert page["next_offset"] > offset
        offset = page["next_offset"]


def wait_for(pred, what, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def error_of(r, status, code, field=None):
    assert r.status_code == status, r.text
    e = r.json()["error"]
    assert e["code"] == code, r.text
    if field is not None:
        assert e.get("field") == field, r.text
    return e


# ---- the resource -------------------------------------------------------------------------


def test_topic_resource_defaults_update_and_delete(shared_server):
    s = shared_server
    t = name()
    r = s.put("/v1/topics/" + t, json={"retention": {"max_age": "7d", "max_bytes": "64MiB"}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["kind"] == "Topic" and body["name"] == t and body["generation"] == 1
    assert body["outcome"] == "created"
    assert body["spec"] == {"retention": {"max_age": "7d", "max_bytes": "64MiB"},
                            "sync": "always", "dedup_window": "2m",
                            "max_event_bytes": 1048576}
    assert body["status"]["ready"] is True and body["status"]["next_offset"] == 0
    # the same spec again (here as {kind, name, spec}): unchanged
    r = s.put("/v1/topics/" + t, json={"kind": "Topic", "name": t, "spec": body["spec"]})
    assert r.status_code == 200 and r.json()["outcome"] == "unchanged", r.text
    assert r.json()["generation"] == 1
    # a dry run of a change writes nothing
    r = s.put("/v1/topics/%s?dry_run=true" % t, json={"sync": "1s"})
    assert r.status_code == 200 and r.json()["outcome"] == "updated", r.text
    assert s.get("/v1/topics/" + t).json()["spec"]["sync"] == "always"
    r = s.put("/v1/topics/" + t, json={"sync": "1s", "dedup_window": "0"})
    assert r.status_code == 200 and r.json()["outcome"] == "updated", r.text
    assert r.json()["generation"] == 2
    names = [i["name"] for i in s.get("/v1/topics").json()["items"]]
    assert t in names
    assert publish(s, t, {"a": 1}).status_code == 200
    st = s.get("/v1/topics/" + t).json()["status"]
    assert st["next_offset"] == 1 and st["records"] == 1
    assert s.delete("/v1/topics/" + t).status_code == 204
    error_of(s.get("/v1/topics/" + t), 404, "not_found")
    error_of(publish(s, t, {"a": 1}), 404, "not_found")
    # created again: empty
    make_topic(s, topic=t)
    assert read_all(s, t) == []


@pytest.mark.parametrize("spec,field", [
    ({"retention": {"max_age": "soon"}}, "retention.max_age"),
    ({"retention": {"max_bytes": "10XB"}}, "retention.max_bytes"),
    ({"retention": {"maxage": "1d"}}, "retention.maxage"),
    ({"sync": "sometimes"}, "sync"),
    ({"dedup_window": "forever"}, "dedup_window"),
    ({"max_event_bytes": 0}, "max_event_bytes"),
    ({"dead_letter": "Not A Name"}, "dead_letter"),
    ({"partitions": 3}, "partitions"),
])
def test_bad_spec_is_400_with_the_field(shared_server, spec, field):
    t = name()
    error_of(shared_server.put("/v1/topics/" + t, json=spec), 400, "invalid_input", field)
    error_of(shared_server.get("/v1/topics/" + t), 404, "not_found")


def test_a_topic_the_log_refuses_is_not_stored(shared_server):
    """The topic is made in the log before its resource is stored: JetStream refusing it (a
    retention beyond the test server's 1 TB max_file_store) stores nothing; the segment log
    has no such bound and takes it."""
    t = name()
    r = shared_server.put("/v1/topics/" + t, json={"retention": {"max_bytes": "2TiB"}})
    if BACKEND == "postgres":
        assert r.status_code // 100 == 4, r.text
        error_of(shared_server.get("/v1/topics/" + t), 404, "not_found")
        assert t not in [i["name"] for i in shared_server.get("/v1/topics").json()["items"]]
    else:
        assert r.status_code == 201, r.text
        assert shared_server.get("/v1/topics/" + t).status_code == 200
        assert shared_server.delete("/v1/topics/" + t).status_code == 204


def test_own_dead_letter_and_bad_names(shared_server):
    s = shared_server
    error_of(s.put("/v1/topics/loop", json={"dead_letter": "loop"}), 400, "invalid_input",
             "dead_letter")
    error_of(s.put("/v1/topics/Bad_Name", json={}), 400, "invalid_input", "name")


def test_dead_letter_topic_is_created(shared_server):
    s = shared_server
    dl = name("dlq")
    t = make_topic(s, {"dead_letter": dl})
    r = s.get("/v1/topics/" + dl)
    assert r.status_code == 200, r.text
    assert r.json()["created_by"] == "system:dead-letter"
    assert s.get("/v1/topics/" + t).json()["spec"]["dead_letter"] == dl


# ---- publishing ---------------------------------------------------------------------------


def test_every_publish_form(shared_server):
    s = shared_server
    t = make_topic(s)
    sent = []  # (event as stored, id or None)
    # one event
    r = publish(s, t, {"order": 1, "amount": 12.5})
    assert r.status_code == 200, r.text
    one = r.json()
    assert one["accepted"] == 1 and one["rejected"] == 0
    assert one["items"][0]["offset"] == 0 and one["items"][0]["duplicate"] is False
    sent.append(({"order": 1, "amount": 12.5}, None))
    # a JSON array
    arr = [{"order": 2}, {"order": 3, "tags": ["a", "b"]}]
    r = publish(s, t, arr)
    assert [i["offset"] for i in r.json()["items"]] == [1, 2], r.text
    sent += [(e, None) for e in arr]
    # JSON lines, declared and detected
    lines = [{"order": 4}, {"order": 5}]
    body = "\n".join(json.dumps(e) for e in lines) + "\n"
    r = publish(s, t, body, headers={"Content-Type": "application/x-ndjson"})
    assert [i["offset"] for i in r.json()["items"]] == [3, 4], r.text
    r = publish(s, t, body, headers={"Content-Type": "application/json"})
    assert [i["offset"] for i in r.json()["items"]] == [5, 6], r.text
    sent += [(e, None) for e in lines] * 2
    # CloudEvents, structured
    ce = {"specversion": "1.0", "id": "ce-%s" % uuid.uuid4().hex, "source": "/shop",
          "type": "order.created", "data": {"order": 7}}
    r = publish(s, t, json.dumps(ce), headers={"Content-Type": "application/cloudevents+json"})
    assert r.json()["items"][0]["id"] == ce["id"], r.text
    sent.append((ce, ce["id"]))
    # CloudEvents, batched
    batch = [dict(ce, id="b-%s-%d" % (uuid.uuid4().hex, i), data={"order": 8 + i})
             for i in range(2)]
    r = publish(s, t, json.dumps(batch),
                headers={"Content-Type": "application/cloudevents-batch+json"})
    assert [i["id"] for i in r.json()["items"]] == [e["id"] for e in batch], r.text
    sent += [(e, e["id"]) for e in batch]
    # CloudEvents, binary: stored in structured form
    bid = "bin-%s" % uuid.uuid4().hex
    r = publish(s, t, json.dumps({"order": 10}), headers={
        "Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": bid,
        "ce-source": "/shop", "ce-type": "order.paid", "ce-subject": "caf%C3%A9",
        "ce-traceparent": "00-abc-01"})
    assert r.status_code == 200 and r.json()["items"][0]["id"] == bid, r.text
    sent.append(({"specversion": "1.0", "id": bid, "source": "/shop", "type": "order.paid",
                  "subject": "caf\u00e9", "traceparent": "00-abc-01",
                  "datacontenttype": "application/json", "data": {"order": 10}}, bid))
    r = publish(s, t, b"plain words", headers={
        "Content-Type": "text/plain", "ce-specversion": "1.0", "ce-id": bid + "-t",
        "ce-source": "/shop", "ce-type": "note"})
    assert r.status_code == 200, r.text
    sent.append(({"specversion": "1.0", "id": bid + "-t", "source": "/shop", "type": "note",
                  "datacontenttype": "text/plain", "data": "plain words"}, bid + "-t"))
    items = read_all(s, t)
    assert [i["offset"] for i in items] == list(range(len(sent)))
    assert [i["event"] for i in items] == [e for e, _ in sent]
    for item, (_, ce_id) in zip(items, sent):
        if ce_id:
            assert item["id"] == ce_id
        else:
            assert uuid.UUID(item["id"]).version == 7
        assert item["time"].endswith("Z")


def test_event_text_is_kept_as_sent(shared_server):
    s = shared_server
    t = make_topic(s)
    # a number cJSON would print differently, and key order
    text = '{"z": 1, "amount": 1.50, "big": 12345678901234567890}'
    assert publish(s, t, "[%s]" % text, headers=JSON).status_code == 200
    r = s.get("/v1/topics/%s/events" % t)
    raw = r.text
    assert '"event":{"z": 1, "amount": 1.50, "big": 12345678901234567890}' in raw


def test_control_bytes_never_reach_the_log(shared_server):
    """cJSON skips any byte up to 0x20 between tokens, but a record's text is sent back
    verbatim inside every read: such bytes are trimmed off an event's ends and refused
    between its tokens, so reads stay JSON (requests' .json() in read_all is strict)."""
    s = shared_server
    t = make_topic(s)
    e = error_of(publish(s, t, b'{"a":\x01 1}', headers=JSON), 400, "malformed_json")
    assert "0x01" in e["message"]
    error_of(publish(s, t, b'[{"d":4}\x0c,{"e":5}]', headers=JSON), 400, "malformed_json")
    assert publish(s, t, b'\x0b{"b":2}\x00\x00', headers=JSON).status_code == 200
    r = publish(s, t, b'{"c":3}\n{"c":\x1f4}\n', headers={"Content-Type": "application/x-ndjson"})
    items = r.json()["items"]
    assert "offset" in items[0] and "0x1f" in items[1]["error"]["message"], r.text
    r = publish(s, t, b'\x0b{"n":5}\x0b', headers={
        "Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": "c-1",
        "ce-source": "/s", "ce-type": "t"})
    assert r.status_code == 200, r.text
    events = [i["event"] for i in read_all(s, t)]
    assert events[:2] == [{"b": 2}, {"c": 3}]
    assert events[2]["data"] == {"n": 5} and len(events) == 3


def test_per_item_errors_by_index(shared_server):
    s = shared_server
    t = make_topic(s, {"max_event_bytes": 100})
    events = [{"ok": 0}, 5, {"ok": 2}, {"pad": "x" * 200}, {"ok": 4},
              {"specversion": "1.0", "id": "x", "type": "t"}, {"ok": 6}]
    r = publish(s, t, events)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 4 and body["rejected"] == 3
    items = body["items"]
    assert [i["index"] for i in items] == list(range(7))
    assert items[1]["error"]["code"] == "invalid_input"
    assert items[3]["error"]["code"] == "payload_too_large"
    assert items[5]["error"]["code"] == "invalid_input"
    assert items[5]["error"]["field"] == "source"
    good = [0, 2, 4, 6]
    assert [items[i]["offset"] for i in good] == [0, 1, 2, 3]
    assert [e["event"] for e in read_all(s, t)] == [events[i] for i in good]
    # JSON lines: a line that is not JSON is that event's error
    r = publish(s, t, '{"ok": 7}\n{"broken":\n{"ok": 8}\n',
                headers={"Content-Type": "application/x-ndjson"})
    items = r.json()["items"]
    assert "offset" in items[0] and "error" in items[1] and "offset" in items[2], r.text
    assert "line 2" in items[1]["error"]["message"]
    # a batch where every event is refused is still answered per event
    r = publish(s, t, [1, 2])
    assert r.status_code == 200 and r.json()["accepted"] == 0, r.text


def test_oversized_is_413(shared_server):
    s = shared_server
    t = make_topic(s, {"max_event_bytes": 64})
    e = error_of(publish(s, t, {"pad": "x" * 100}), 413, "payload_too_large")
    assert "64" in e["message"]
    # binary mode counts the structured form it stores
    r = publish(s, t, json.dumps({"pad": "y" * 30}), headers={
        "Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": "1",
        "ce-source": "/s", "ce-type": "t"})
    error_of(r, 413, "payload_too_large")
    assert read_all(s, t) == []


def test_malformed_cloudevents_are_400(shared_server):
    s = shared_server
    t = make_topic(s)
    ce = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}
    structured = {"Content-Type": "application/cloudevents+json"}
    for drop in ("specversion", "id", "source", "type"):
        bad = {k: v for k, v in ce.items() if k != drop}
        error_of(publish(s, t, json.dumps(bad), headers=structured), 400, "invalid_input", drop)
    error_of(publish(s, t, json.dumps(dict(ce, specversion="0.3")), headers=structured), 400,
             "invalid_input", "specversion")
    error_of(publish(s, t, json.dumps(dict(ce, time="yesterday")), headers=structured), 400,
             "invalid_input", "time")
    error_of(publish(s, t, json.dumps(dict(ce, Bad=1)), headers=structured), 400,
             "invalid_input", "Bad")
    error_of(publish(s, t, "[]", headers=structured), 400, "invalid_input")
    # binary mode without ce-type
    r = publish(s, t, "{}", headers={"Content-Type": "application/json", "ce-specversion": "1.0",
                                     "ce-id": "1", "ce-source": "/s"})
    error_of(r, 400, "invalid_input", "type")
    # a batch reports its bad event by index
    r = publish(s, t, json.dumps([ce, {"no": "ce"}]),
                headers={"Content-Type": "application/cloudevents-batch+json"})
    items = r.json()["items"]
    assert "offset" in items[0] and items[1]["error"]["field"] == "specversion", r.text
    error_of(publish(s, t, json.dumps(ce),
                     headers={"Content-Type": "application/cloudevents-batch+json"}),
             400, "invalid_input")
    assert len(read_all(s, t)) == 1


def test_bad_bodies_and_media_types(shared_server):
    s = shared_server
    t = make_topic(s)
    error_of(publish(s, t, "a,b\n1,2", headers={"Content-Type": "text/csv"}), 415,
             "unsupported_media_type")
    error_of(publish(s, t, "x", headers={"Content-Type": "application/cloudevents+avro"}), 415,
             "unsupported_media_type")
    error_of(publish(s, t, '[{"a": 1}, {"a": }]', headers=JSON), 400, "malformed_json")
    error_of(publish(s, t, "", headers=JSON), 400, "invalid_input")
    error_of(publish(s, t, "[]", headers=JSON), 400, "invalid_input")
    error_of(publish(s, t, "42", headers=JSON), 400, "invalid_input")
    error_of(publish(s, t, {"a": 1}, headers={"Idempotency-Key": "k" * 300}), 400,
             "invalid_input", "Idempotency-Key")
    assert read_all(s, t) == []


def test_unknown_topic_is_404(shared_server):
    s = shared_server
    t = name("missing")
    error_of(publish(s, t, {"a": 1}), 404, "not_found")
    error_of(s.get("/v1/topics/%s/events" % t), 404, "not_found")
    error_of(s.post("/v1/topics/%s/consumers/g/fetch" % t), 404, "not_found")
    error_of(s.get("/v1/topics/%s/consumers" % t), 404, "not_found")
    error_of(s.put("/v1/topics/%s/consumers/g" % t, json={}), 404, "not_found")
    error_of(s.post("/v1/topics/%s/replay" % t, json={}), 404, "not_found")


def test_topics_are_per_tenant(shared_server):
    s = shared_server
    t = make_topic(s)
    tenant = name("tn")
    assert s.post("/v1/tenants", json={"name": tenant}).status_code == 201
    other = s.create_key("developer", tenant=tenant)["key"]
    error_of(publish(s, t, {"a": 1}, key=other), 404, "not_found")
    error_of(s.get("/v1/topics/" + t, key=other), 404, "not_found")
    # the same name in the other tenant is another topic
    assert s.put("/v1/topics/" + t, key=other, json={}).status_code == 201
    assert publish(s, t, {"mine": 1}, key=other).status_code == 200
    assert read_all(s, t) == []


def test_roles(shared_server):
    s = shared_server
    t = make_topic(s)
    viewer = s.create_key("viewer")["key"]
    predictor = s.create_key("predictor")["key"]
    error_of(publish(s, t, {"a": 1}, key=viewer), 403, "forbidden")
    assert publish(s, t, {"a": 1}, key=predictor).status_code == 200
    error_of(s.put("/v1/topics/" + name(), key=predictor, json={}), 403, "forbidden")
    assert s.get("/v1/topics/%s/events" % t, key=viewer).status_code == 200


# ---- reading -------------------------------------------------------------------------------


def test_read_by_offset_time_and_pages(shared_server):
    s = shared_server
    t = make_topic(s)
    for k in range(4):  # four batches: at least the time of each is known from the log
        assert publish(s, t, [{"b": k, "i": i} for i in range(5)]).status_code == 200
        time.sleep(0.02)
    full = read_all(s, t)
    assert [i["offset"] for i in full] == list(range(20))
    # pages of 3 add up to the whole
    got, off = [], 0
    while True:
        r = s.get("/v1/topics/%s/events" % t, params={"from_offset": off, "limit": 3})
        page = r.json()
        assert len(page["items"]) <= 3
        if not page["items"]:
            assert page["next_offset"] == off
            break
        got += page["items"]
        off = page["next_offset"]
    assert got == full
    # from an offset, past the end
    r = s.get("/v1/topics/%s/events" % t, params={"from_offset": 17})
    assert [i["offset"] for i in r.json()["items"]] == [17, 18, 19]
    r = s.get("/v1/topics/%s/events" % t, params={"from_offset": 500})
    assert r.status_code == 200 and r.json()["items"] == []
    # by time: the first record at or after each record's own time
    for probe in (full[0], full[7], full[19]):
        want = min(i["offset"] for i in full if i["time"] >= probe["time"])
        r = s.get("/v1/topics/%s/events" % t, params={"from_time": probe["time"], "limit": 1})
        assert r.status_code == 200, r.text
        assert r.json()["items"][0]["offset"] == want
    r = s.get("/v1/topics/%s/events" % t, params={"from_time": "2999-01-01T00:00:00Z"})
    assert r.json()["items"] == []
    r = s.get("/v1/topics/%s/events" % t, params={"from_time": "2000-01-01T00:00:00Z",
                                                  "limit": 2})
    assert [i["offset"] for i in r.json()["items"]] == [0, 1]


@pytest.mark.parametrize("params,field", [
    ({"from_offset": "-1"}, "from_offset"),
    ({"from_offset": "abc"}, "from_offset"),
    ({"from_offset": "1.5"}, "from_offset"),
    ({"from_offset": ""}, "from_offset"),
    ({"from_offset": "99999999999999999999999"}, "from_offset"),
    ({"from_time": "yesterday"}, "from_time"),
    ({"from_time": "2024-13-01T00:00:00Z"}, "from_time"),
    ({"from_offset": "0", "from_time": "2024-01-01T00:00:00Z"}, "from_offset"),
    ({"limit": "0"}, "limit"),
    ({"limit": "100000"}, "limit"),
])
def test_bad_offsets_are_400(shared_server, params, field):
    s = shared_server
    t = make_topic(s)
    error_of(s.get("/v1/topics/%s/events" % t, params=params), 400, "invalid_input", field)


# ---- dedup ---------------------------------------------------------------------------------


def test_dedup_by_each_key_within_the_window_and_not_after(shared_server):
    s = shared_server
    window = 3.0
    t = make_topic(s, {"dedup_window": "3s"})

    def offsets(r):
        assert r.status_code == 200, r.text
        return [(i["offset"], i["duplicate"]) for i in r.json()["items"]]

    ce = json.dumps({"specversion": "1.0", "id": "ce-1", "source": "/s", "type": "t"})
    structured = {"Content-Type": "application/cloudevents+json"}
    started = time.monotonic()
    a = offsets(publish(s, t, {"n": 1}, headers={"Idempotency-Key": "k-1"}))
    b = offsets(publish(s, t, ce, headers=structured))
    c = offsets(publish(s, t, {"n": 3}, headers={"Nats-Msg-Id": "m-1"}))
    d = offsets(publish(s, t, [{"n": 4}, {"n": 5}], headers={"Idempotency-Key": "k-b"}))
    # again, within the window: the originals' offsets, nothing new stored
    a2 = offsets(publish(s, t, {"n": "other body"}, headers={"Idempotency-Key": "k-1"}))
    b2 = offsets(publish(s, t, ce, headers=structured))
    c2 = offsets(publish(s, t, {"n": 3}, headers={"Nats-Msg-Id": "m-1"}))
    d2 = offsets(publish(s, t, [{"n": 4}, {"n": 5}, {"n": 6}],
                         headers={"Idempotency-Key": "k-b"}))
    within = time.monotonic() - started
    if within >= window:
        pytest.skip("the machine took %.1fs for eight requests: no window left" % within)
    assert a == [(0, False)] and b == [(1, False)] and c == [(2, False)]
    assert d == [(3, False), (4, False)]
    assert a2 == [(0, True)] and b2 == [(1, True)] and c2 == [(2, True)]
    assert d2 == [(3, True), (4, True), (5, False)]  # index 2 is a new key, k-b:2
    # the Idempotency-Key wins over the CloudEvents id
    e = offsets(publish(s, t, ce, headers=dict(structured, **{"Idempotency-Key": "k-ce"})))
    assert e == [(6, False)]
    assert len(read_all(s, t)) == 7
    # after the window the same keys are new events
    time.sleep(max(0.0, window + 0.5 - (time.monotonic() - started)))
    a3 = offsets(publish(s, t, {"n": 1}, headers={"Idempotency-Key": "k-1"}))
    b3 = offsets(publish(s, t, ce, headers=structured))
    c3 = offsets(publish(s, t, {"n": 3}, headers={"Nats-Msg-Id": "m-1"}))
    assert a3 == [(7, False)] and b3 == [(8, False)] and c3 == [(9, False)]
    st = s.get("/v1/topics/" + t).json()["status"]
    assert st["duplicates"] >= 5


def test_no_dedup_without_a_window(shared_server):
    s = shared_server
    t = make_topic(s, {"dedup_window": "0"})
    for _ in range(2):
        r = publish(s, t, {"n": 1}, headers={"Idempotency-Key": "same"})
        assert r.json()["items"][0]["duplicate"] is False
    assert len(read_all(s, t)) == 2


# ---- consumer groups -----------------------------------------------------------------------


def group_path(t, g, op=""):
    return "/v1/topics/%s/consumers/%s%s" % (t, g, "/" + op if op else "")


def fetch(s, t, g, max=10, wait=None):
    params = {"max": max}
    if wait is not None:
        params["wait"] = wait
    r = s.post(group_path(t, g, "fetch"), params=params,
               timeout=REQUEST_TIMEOUT + 35)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def settle(s, t, g, op, ids, **extra):
    r = s.post(group_path(t, g, op), json=dict({"delivery_ids": ids}, **extra))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["failed"] == 0, r.text
    return body


def stats(s, t, g):
    r = s.get(group_path(t, g))
    assert r.status_code == 200, r.text
    return r.json()


def test_group_crud_and_bad_config(shared_server):
    s = shared_server
    t = make_topic(s)
    r = s.put(group_path(t, "workers"), json={})
    assert r.status_code == 201, r.text
    assert r.json()["config"] == {"ack_wait": "30s", "max_deliver": -1, "max_ack_pending": 1000,
                                  "dead_letter": None, "deliver": "all"}
    r = s.put(group_path(t, "workers"), json={"ack_wait": "10s", "max_ack_pending": 5})
    assert r.status_code == 200 and r.json()["max_ack_pending"] == 5, r.text
    assert [g["group"] for g in s.get("/v1/topics/%s/consumers" % t).json()["items"]] == \
        ["workers"]
    for body, field in [({"ack_wait": "soon"}, "ack_wait"), ({"max_deliver": 0}, "max_deliver"),
                        ({"max_ack_pending": 0}, "max_ack_pending"),
                        ({"deliver": "some"}, "deliver"), ({"dead_letter": t}, "dead_letter"),
                        ({"ackwait": "1s"}, "ackwait")]:
        error_of(s.put(group_path(t, "workers"), json=body), 400, "invalid_input", field)
    error_of(s.put(group_path(t, "Bad"), json={}), 400, "invalid_input", "group")
    assert s.delete(group_path(t, "workers")).status_code == 204
    error_of(s.get(group_path(t, "workers")), 404, "not_found")
    error_of(s.delete(group_path(t, "workers")), 404, "not_found")
    error_of(s.post(group_path(t, "workers", "ack"), json={"delivery_ids": ["0.1"]}), 404,
             "not_found")


def test_fetch_creates_the_group_with_defaults(shared_server):
    s = shared_server
    t = make_topic(s)
    publish(s, t, [{"n": i} for i in range(3)])
    items = fetch(s, t, "fresh", max=2)
    assert [i["offset"] for i in items] == [0, 1]
    assert all(i["delivery"] == 1 for i in items)
    assert [i["event"] for i in items] == [{"n": 0}, {"n": 1}]
    st = stats(s, t, "fresh")
    assert st["max_ack_pending"] == 1000 and st["ack_pending"] == 2 and st["pending"] == 1
    error_of(s.post(group_path(t, "fresh", "fetch"), params={"max": 0}), 400, "invalid_input",
             "max")
    error_of(s.post(group_path(t, "fresh", "fetch"), params={"wait": "soon"}), 400,
             "invalid_input", "wait")


def test_redelivery_after_ack_wait(shared_server):
    s = shared_server
    t = make_topic(s)
    assert s.put(group_path(t, "g"), json={"ack_wait": "1s"}).status_code == 201
    publish(s, t, [{"n": i} for i in range(3)])
    first = fetch(s, t, "g")
    assert [(i["offset"], i["delivery"]) for i in first] == [(0, 1), (1, 1), (2, 1)]
    settle(s, t, "g", "ack", [first[1]["delivery_id"]])
    again = []
    wait_for(lambda: again.extend(fetch(s, t, "g", wait="5s")) or len(again) >= 2,
             "the unacked deliveries come back")
    assert sorted((i["offset"], i["delivery"]) for i in again) == [(0, 2), (2, 2)]
    assert [i["event"] for i in sorted(again, key=lambda i: i["offset"])] == [{"n": 0}, {"n": 2}]
    settle(s, t, "g", "ack", [i["delivery_id"] for i in again])
    st = stats(s, t, "g")
    assert st["ack_pending"] == 0 and st["redelivered"] == 2 and st["acked"] == 3
    assert fetch(s, t, "g", wait="1500ms") == []  # all acked: nothing comes back
    # acking again is fine; an id that is none of the group's is that id's error
    r = s.post(group_path(t, "g", "ack"), json={"delivery_ids": [first[0]["delivery_id"],
                                                                 "not-a-delivery"]})
    body = r.json()
    assert body["ok"] == 1 and body["failed"] == 1, r.text
    assert body["items"][1]["error"]["code"] == "invalid_input"
    r = s.post(group_path(t, "g", "ack"), json={"delivery_id": first[0]["delivery_id"]})
    assert r.status_code == 200 and r.json()["ok"] == 1, r.text
    error_of(s.post(group_path(t, "g", "ack"), json={}), 400, "invalid_input")
    error_of(s.post(group_path(t, "g", "ack"), json={"delivery_ids": []}), 400, "invalid_input")


def test_in_progress_holds_the_delivery(shared_server):
    s = shared_server
    t = make_topic(s)
    assert s.put(group_path(t, "g"), json={"ack_wait": "2s"}).status_code == 201
    publish(s, t, {"n": 1})
    (d,) = fetch(s, t, "g")
    # keep it in progress for longer than ack_wait: it is not delivered again meanwhile
    held_until = time.monotonic() + 4
    while time.monotonic() < held_until:
        settle(s, t, "g", "in_progress", [d["delivery_id"]])
        assert fetch(s, t, "g", max=5) == []
        time.sleep(0.25)
    # then left alone it comes back
    back = wait_for(lambda: fetch(s, t, "g", wait="5s"), "redelivery after in_progress stops")
    assert back[0]["offset"] == 0 and back[0]["delivery"] == 2


def test_nack_with_and_without_delay(shared_server):
    s = shared_server
    t = make_topic(s)
    assert s.put(group_path(t, "g"), json={"ack_wait": "30s"}).status_code == 201
    publish(s, t, [{"n": 0}, {"n": 1}])
    a, b = fetch(s, t, "g")
    settle(s, t, "g", "nack", [a["delivery_id"]])  # at the next fetch
    again = fetch(s, t, "g")
    assert [(i["offset"], i["delivery"]) for i in again] == [(0, 2)]
    settle(s, t, "g", "nack", [b["delivery_id"]], delay="2s")
    assert fetch(s, t, "g") == []  # not before its delay
    later = wait_for(lambda: fetch(s, t, "g", wait="5s"), "the nacked delivery after its delay")
    assert [(i["offset"], i["delivery"]) for i in later] == [(1, 2)]
    error_of(s.post(group_path(t, "g", "nack"), json={"delivery_ids": ["x"], "delay": "soon"}),
             400, "invalid_input", "delay")


def test_max_deliver_dead_letter_and_replay(shared_server):
    s = shared_server
    dl = name("dlq")
    t = make_topic(s, {"dead_letter": dl})
    r = s.put(group_path(t, "g"), json={"ack_wait": "500ms", "max_deliver": 2})
    assert r.status_code == 201 and r.json()["config"]["dead_letter"] == dl, r.text
    events = [{"n": 0}, {"n": 1}, {"n": 2}]
    publish(s, t, events)
    deliveries = []
    # never acked: two deliveries each, then the dead letter topic
    wait_for(lambda: deliveries.extend(fetch(s, t, "g", wait="2s")) or
             stats(s, t, "g")["dead_lettered"] == 3, "three dead letters")
    assert sorted((i["offset"], i["delivery"]) for i in deliveries) == \
        [(0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)]
    dead = read_all(s, dl)
    assert len(dead) == 3
    by_offset = {d["event"]["offset"]: d["event"] for d in dead}
    assert sorted(by_offset) == [0, 1, 2]
    for off, d in by_offset.items():
        assert d["topic"] == t and d["group"] == "g" and d["deliveries"] == 2
        assert d["event"] == events[off]
    assert fetch(s, t, "g", wait="1s") == []
    m = s.metrics()
    assert m.get("basalt_consumer_dead_lettered_total", tenant="default", topic=t, group="g") == 3
    # replay a range, then the rest
    r = s.post("/v1/topics/%s/replay" % dl, json={"from_offset": 0, "to_offset": 1})
    assert r.status_code == 200, r.text
    assert r.json()["replayed"] == 1 and r.json()["topics"] == {t: 1}
    assert r.json()["next_offset"] == 1
    r = s.post("/v1/topics/%s/replay" % dl, json={"from_offset": 1, "limit": 10})
    assert r.json()["replayed"] == 2 and r.json()["next_offset"] == 3, r.text
    items = read_all(s, t)
    assert [i["event"] for i in items[3:]] == [d["event"]["event"] for d in dead]
    # the replayed events are delivered to the group again
    replayed = wait_for(lambda: fetch(s, t, "g", max=10), "replayed events delivered")
    assert {i["offset"] for i in replayed} <= {3, 4, 5} and replayed[0]["delivery"] == 1
    # a record that is not a dead letter is skipped, not replayed
    publish(s, dl, {"not": "a dead letter"})
    r = s.post("/v1/topics/%s/replay" % dl, json={"from_offset": 3})
    assert r.json()["replayed"] == 0 and r.json()["skipped"] == 1, r.text
    error_of(s.post("/v1/topics/%s/replay" % dl, json={"from_offset": -1}), 400,
             "invalid_input", "from_offset")
    error_of(s.post("/v1/topics/%s/replay" % dl, json={"from_offset": 5, "to_offset": 2}), 400,
             "invalid_input", "to_offset")


def test_max_ack_pending_stall_in_metrics(shared_server):
    s = shared_server
    t = make_topic(s)
    assert s.put(group_path(t, "slow"), json={"max_ack_pending": 2}).status_code == 201
    publish(s, t, [{"n": i} for i in range(5)])
    got = fetch(s, t, "slow", max=10)
    assert [i["offset"] for i in got] == [0, 1]
    assert fetch(s, t, "slow", max=10) == []  # stalled until some are acked
    st = stats(s, t, "slow")
    assert st["stalled"] is True and st["ack_pending"] == 2 and st["pending"] == 3
    (summary,) = s.get("/v1/topics/" + t).json()["status"]["consumers"]
    assert summary["group"] == "slow" and summary["stalled"] is True
    assert summary["ack_pending"] == 2 and summary["pending"] == 3
    m = s.metrics()
    assert m.get("basalt_consumer_stalled", tenant="default", topic=t, group="slow") == 1
    assert m.get("basalt_consumer_ack_pending", tenant="default", topic=t, group="slow") == 2
    settle(s, t, "slow", "ack", [i["delivery_id"] for i in got])
    assert stats(s, t, "slow")["stalled"] is False
    m = s.metrics()
    assert m.get("basalt_consumer_stalled", tenant="default", topic=t, group="slow") == 0
    assert [i["offset"] for i in fetch(s, t, "slow", max=10)] == [2, 3]


def test_deliver_new_starts_at_the_end(shared_server):
    s = shared_server
    t = make_topic(s)
    publish(s, t, [{"old": 1}])
    assert s.put(group_path(t, "late"), json={"deliver": "new"}).status_code == 201
    assert fetch(s, t, "late") == []
    publish(s, t, [{"new": 1}])
    assert [i["event"] for i in fetch(s, t, "late")] == [{"new": 1}]


def test_fetch_waits_for_a_publish(shared_server):
    s = shared_server
    t = make_topic(s)
    assert s.put(group_path(t, "w"), json={}).status_code == 201
    out = {}
    sess = requests.Session()  # its own: a Session is not shared between threads

    def long_poll():
        out["r"] = sess.post(s.url + group_path(t, "w", "fetch"), params={"wait": "20s"},
                             headers={"Authorization": "Bearer " + s.admin_key}, timeout=60)
    th = threading.Thread(target=long_poll)
    th.start()
    time.sleep(0.3)
    publish(s, t, {"hello": 1})
    th.join(60)
    sess.close()
    assert out["r"].status_code == 200, out["r"].text
    assert [i["event"] for i in out["r"].json()["items"]] == [{"hello": 1}]


# ---- the rest ------------------------------------------------------------------------------


def test_info_metrics_and_openapi(shared_server):
    s = shared_server
    assert s.get("/v1/info").json()["backends"]["events"] == \
        ("jetstream" if BACKEND == "postgres" else "segments")
    t = make_topic(s)
    publish(s, t, [{"a": 1}, {"a": 2}])
    publish(s, t, [1])
    # (JetStream's figures come from stream info the replica refreshes: wait for them)
    wait_for(lambda: s.metrics().get("basalt_log_records", tenant="default", topic=t) == 2,
             "basalt_log_records shows the two events", timeout=30)
    m = s.metrics()
    assert m.get("basalt_topic_events_published_total", result="accepted") >= 2
    assert m.get("basalt_topic_events_published_total", result="rejected") >= 1
    doc = s.get("/openapi.json").json()
    for path in ("/v1/topics/{name}", "/v1/topics/{name}/events",
                 "/v1/topics/{name}/consumers/{group}/fetch", "/v1/topics/{name}/replay"):
        assert path in doc["paths"], path
    kinds = s.get("/v1/kinds").json()["items"]
    assert {"kind": "Topic", "plural": "topics", "path": "/v1/topics"}.items() <= \
        [k for k in kinds if k["kind"] == "Topic"][0].items()


def test_topics_survive_a_restart(start_server):
    s = start_server()
    t = make_topic(s, {"dedup_window": "1h"})
    publish(s, t, [{"n": 0}, {"n": 1}], headers={"Idempotency-Key": "r"})
    assert s.put(group_path(t, "g"), json={"ack_wait": "1h"}).status_code == 201
    (d,) = fetch(s, t, "g", max=1)
    settle(s, t, "g", "ack", [d["delivery_id"]])
    s.restart()
    assert [i["event"] for i in read_all(s, t)] == [{"n": 0}, {"n": 1}]
    # the dedup window and the group's position are recovered
    r = publish(s, t, [{"n": 0}, {"n": 1}], headers={"Idempotency-Key": "r"})
    assert [i["duplicate"] for i in r.json()["items"]] == [True, True]
    assert [i["offset"] for i in fetch(s, t, "g", max=5)] == [1]


def test_a_long_poll_is_answered_when_the_server_stops(start_server):
    """A fetch waiting 30 s does not hold a graceful shutdown (10 s drain by default): it is
    answered, empty, and the server exits."""
    s = start_server()
    t = make_topic(s)
    assert s.put(group_path(t, "w"), json={}).status_code == 201
    out = {}
    sess = requests.Session()

    def long_poll():
        try:
            out["r"] = sess.post(s.url + group_path(t, "w", "fetch"), params={"wait": "30s"},
                                 headers={"Authorization": "Bearer " + s.admin_key}, timeout=60)
        except requests.RequestException as e:
            out["e"] = e
    th = threading.Thread(target=long_poll)
    th.start()
    # the scrape itself is one request in flight; the long poll the other
    wait_for(lambda: s.metrics().get("basalt_http_in_flight_requests") >= 2,
             "the long poll is in flight", timeout=10)
    assert s.stop() == 0
    th.join(60)
    sess.close()
    assert "r" in out, out.get("e")
    assert out["r"].status_code == 200 and out["r"].json() == {"items": []}
