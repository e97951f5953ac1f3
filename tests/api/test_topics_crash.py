"""Crash safety of published events (issue 9 "Tests: durability and order").

Concurrent publishers post batches over HTTP while the server is killed with SIGKILL at a
random moment, then it is started again on the same data directory, for at least 20 rounds.
After every restart the whole topic is read back through the API and checked against what
the publishers were told: every acknowledged event is present exactly once, at the offset
and with the id its response gave, in the order each publisher sent it; offsets are dense
from 0; every record is an event some publisher sent (nothing torn, nothing invented); an
event whose request got no answer is there at most once. The seed is printed so a failing
run can be repeated (BASALT_TEST_CRASH_SEED)."""
import json
import os
import random
import threading
import time

import pytest
import requests

from conftest import Server, REQUEST_TIMEOUT

# basalt's own segment log: on JetStream the durability of acknowledged events is the
# server's (docs/scaleout.md), and this loop would mostly test nats-server.
pytestmark = pytest.mark.embedded

ROUNDS = int(os.environ.get("BASALT_TEST_CRASH_ROUNDS", "20"))
PUBLISHERS = 4


def read_all(srv, topic):
    items, offset = [], 0
    while True:
        r = srv.get("/v1/topics/%s/events" % topic, params={"from_offset": offset, "limit": 1000})
        assert r.status_code == 200, r.text
        page = r.json()  # a torn record would make this unparseable or fail below
        items += page["items"]
        if not page["items"]:
            return items
        offset = page["next_offset"]


class Publisher(threading.Thread):
    def __init__(self, srv, topic, pid, rnd, seq0, sent, acked, lock):
        super().__init__(daemon=True)
        self.srv, self.topic, self.pid, self.rnd = srv, topic, pid, rnd
        self.seq = seq0
        self.sent, self.acked, self.lock = sent, acked, lock
        self.stop = False

    def run(self):
        sess = requests.Session()
        url = "%s/v1/topics/%s/events" % (self.srv.url, self.topic)
        headers = {"Authorization": "Bearer " + self.srv.admin_key,
                   "Content-Type": "application/json"}
        while not self.stop:
            n = self.rnd.randint(1, 20)
            batch = []
            for _ in range(n):
                ev = {"p": self.pid, "seq": self.seq,
                      "pad": "x" * self.rnd.randint(0, 300)}
                self.seq += 1
                batch.append(ev)
            with self.lock:
                for ev in batch:
                    self.sent[(ev["p"], ev["seq"])] = ev
            try:
                r = sess.post(url, data=json.dumps(batch), headers=headers,
                              timeout=REQUEST_TIMEOUT)
            except requests.RequestException:
                break  # killed: these events' fate is unknown
            if r.status_code != 200:
                break
            items = r.json()["items"]
            assert len(items) == n and r.json()["accepted"] == n, r.text
            with self.lock:
                for ev, it in zip(batch, items):
                    self.acked[(ev["p"], ev["seq"])] = (it["offset"], it["id"])
        sess.close()


def check(srv, topic, sent, acked):
    items = read_all(srv, topic)
    assert [i["offset"] for i in items] == list(range(len(items))), "offsets are not dense"
    seen = {}
    for it in items:
        ev = it["event"]
        key = (ev["p"], ev["seq"])
        assert key in sent, "a record no publisher sent: %r" % (ev,)
        assert ev == sent[key], "record %d differs from what was sent" % it["offset"]
        assert key not in seen, "event %r stored twice (offsets %d and %d)" % (
            key, seen[key][0], it["offset"])
        seen[key] = (it["offset"], it["id"])
    for key, where in acked.items():
        assert key in seen, "acknowledged event %r (offset %d) is lost" % (key, where[0])
        assert seen[key] == where, "acknowledged event %r moved: %r, then %r" % (
            key, where, seen[key])
    # each publisher's events, in the order it sent them
    by_pub = {}
    for (p, seq), (off, _) in sorted(seen.items(), key=lambda kv: kv[1][0]):
        by_pub.setdefault(p, []).append(seq)
    for p, seqs in by_pub.items():
        assert seqs == sorted(seqs), "publisher %d's events out of order" % p
    return len(items)


def test_kill9_while_publishing_loses_no_acknowledged_event():
    seed = int(os.environ.get("BASALT_TEST_CRASH_SEED", random.randrange(1 << 30)))
    print("crash test seed", seed)
    rnd = random.Random(seed)
    srv = Server(args=["--threads", "2"])
    try:
        srv.start()
        topic = "crash"
        r = srv.put("/v1/topics/" + topic, json={"sync": "always", "dedup_window": "0"})
        assert r.status_code == 201, r.text
        sent, acked, lock = {}, {}, threading.Lock()
        seqs = [0] * PUBLISHERS
        total_acked_rounds = 0
        for rd in range(ROUNDS):
            pubs = [Publisher(srv, topic, p, random.Random(rnd.random()), seqs[p], sent, acked,
                              lock) for p in range(PUBLISHERS)]
            before = len(acked)
            for p in pubs:
                p.start()
            time.sleep(rnd.uniform(0.05, 0.8))
            srv.kill9()
            for p in pubs:
                p.stop = True
                p.join(REQUEST_TIMEOUT + 5)
                assert not p.is_alive()
                seqs[p.pid] = p.seq
            total_acked_rounds += len(acked) > before
            srv.start()
            stored = check(srv, topic, sent, acked)
            assert stored >= len(acked)
        # the kills fell while events were being acknowledged, not only between runs
        assert total_acked_rounds >= ROUNDS // 2, "too few rounds acknowledged anything"
        assert len(acked) > 0
        srv.stop()
    finally:
        srv.cleanup()
