"""The README's "Running several replicas" section, run as written against a real
PostgreSQL and Redis started by the test, so it cannot drift.

The first sh block (marked as set-up: apt-get, the role and the database) is not run: the
test's own PostgreSQL (tests/pg_server.py) and Redis (tests/redis_server.py) stand in for
them, and the section's `DB=` / `REDIS=` lines and its ports 8080-8082 are rewritten to
point at them and at free ports. The other sh blocks run in order in one bash (`set -e`)
in a scratch directory that links `build/basalt`; a ```text block right after a sh block
is its output, matched as in test_readme.py (… = any characters; a line of only … = any
lines). A block without a text block must print nothing.
"""
import os
import re
import socket
import subprocess
import sys

import pytest

from conftest import BASALT_BIN, ROOT, START_TIMEOUT, clean_env
from test_readme import FENCE_RE, README, matches

sys.path.insert(0, os.path.join(ROOT, "tests"))
from pg_server import PgServer  # noqa: E402
from redis_server import RedisServer  # noqa: E402

SETUP = "<!-- readme-test: set-up, not run: the test starts its own PostgreSQL and Redis -->"


def section_blocks(text):
    start = text.index("\n## Running several replicas")
    end = text.find("\n## ", start + 1)
    section = text[start:end]
    blocks, pos = [], 0
    for m in FENCE_RE.finditer(section):
        between = section[pos:m.start()]
        blocks.append((m.group(1), m.group(2), between.rstrip().endswith(SETUP),
                       between.strip() == ""))
        pos = m.end()
    return blocks


def steps(blocks):
    run = []
    for i, (info, body, setup, adjacent) in enumerate(blocks):
        if info == "sh":
            run.append(None if setup else [body, None])
        elif info == "text":
            assert adjacent and run and run[-1] is not None, "text block %d follows no sh block" % i
            run[-1][1] = body
        else:
            raise AssertionError("unexpected ```%s block in the section" % info)
    assert run[0] is None, "the first sh block is the set-up the test stands in for"
    return [tuple(s) for s in run if s is not None]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def backing():
    pg = PgServer().start()
    r = RedisServer()
    r.start()
    yield pg, r
    r.close()
    pg.cleanup()


def test_running_several_replicas_section_runs_as_written(tmp_path, backing):
    pg, redis = backing
    with open(README) as f:
        run = steps(section_blocks(f.read()))
    assert len(run) >= 4
    ports = {p: str(free_port()) for p in ("8080", "8081", "8082")}
    db = pg.create_database()

    def rewrite(body):
        body = re.sub(r"^DB=\S+$", "DB=" + db, body, flags=re.M)
        body = re.sub(r"^REDIS=\S+$", "REDIS=" + redis.url, body, flags=re.M)
        for old, new in ports.items():
            body = body.replace("127.0.0.1:" + old, "127.0.0.1:" + new)
        return body

    work = str(tmp_path)
    os.makedirs(os.path.join(work, "build"))
    os.symlink(BASALT_BIN, os.path.join(work, "build", "basalt"))
    marks = ["@@readme-block-%d@@" % i for i in range(len(run))]
    # Until its last block stops them, the replicas and nginx are also stopped here.
    script = ("set -e\ntrap '{ nginx -p \"$PWD\" -c lb.conf -s stop; kill %1 %2; } 2>/dev/null "
              "|| true; wait' EXIT\n")
    script += "".join("echo %s\n%s" % (m, rewrite(body)) for m, (body, _) in zip(marks, run))
    script += "wait\n"
    cp = subprocess.run(["bash", "-c", script], cwd=work, env=clean_env(), text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        timeout=10 * START_TIMEOUT)
    out = cp.stdout
    logs = ""
    for name in ("replica-a.log", "replica-b.log"):
        p = os.path.join(work, name)
        if os.path.exists(p):
            logs += "\n== %s\n%s" % (name, open(p, errors="replace").read()[-3000:])
    assert cp.returncode == 0, "the section failed (exit %d):\n%s%s" % (cp.returncode, out, logs)
    for i, (m, (body, expected)) in enumerate(zip(marks, run)):
        chunk = out.split(m + "\n", 1)[1]
        if i + 1 < len(marks):
            chunk = chunk.split(marks[i + 1] + "\n", 1)[0]
        if expected is None:
            assert chunk == "", "a block that prints must show its output:\n%s\n%s" % (body, chunk)
        else:
            problem = matches(expected, chunk)
            assert problem is None, "README block:\n%s\n%s%s" % (body, problem, logs)
    # Both replicas served: each printed its listening line and neither left a sanitizer
    # report.
    for name in ("replica-a.log", "replica-b.log"):
        text = open(os.path.join(work, name), errors="replace").read()
        assert "listening on" in text, text[-2000:]
        assert "ERROR: AddressSanitizer" not in text and "runtime error:" not in text, text[-4000:]
