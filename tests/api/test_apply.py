"""basalt apply / get / delete with the real binary against a real server: YAML files with
several documents, JSON files, directories, --dry-run (the outcome and a line diff, nothing
written), get's table, -o json and -o yaml (which apply takes back unchanged), delete, and
the failures: the server's message and a nonzero exit status."""
import json
import subprocess

import pytest

from conftest import BASALT_BIN, REQUEST_TIMEOUT, clean_env


def cli(srv, *args, key=None, stdin=None):
    env = {"BASALT_URL": srv.url, "BASALT_API_KEY": key or srv.admin_key}
    return subprocess.run([BASALT_BIN, *args], env=clean_env(env), input=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=2 * REQUEST_TIMEOUT)


def ok(cp):
    assert cp.returncode == 0, (cp.returncode, cp.stdout, cp.stderr)
    assert cp.stderr == "", cp.stderr
    return cp.stdout


TOPICS = """\
# two topics and a comment
kind: Topic
name: orders
spec:
  retention:
    max_age: 7d
    max_bytes: 64MiB
  dedup_window: 2m
  dead_letter: orders-dlq
---
kind: Topic
name: payments
spec:
  sync: "1s"          # quoted or not, a string
  max_event_bytes: 4096
"""


def spec_of(srv, name):
    r = srv.get("/v1/topics/" + name)
    assert r.status_code == 200, r.text
    return r.json()


def test_apply_creates_then_is_unchanged_then_updates(server, tmp_path):
    f = tmp_path / "topics.yaml"
    f.write_text(TOPICS)
    assert ok(cli(server, "apply", "-f", str(f))) == \
        "topic/orders created\ntopic/payments created\n"
    orders = spec_of(server, "orders")
    assert orders["spec"] == {"retention": {"max_age": "7d", "max_bytes": "64MiB"},
                              "sync": "always", "dedup_window": "2m",
                              "max_event_bytes": 1048576, "dead_letter": "orders-dlq"}
    assert spec_of(server, "payments")["spec"]["sync"] == "1s"
    assert spec_of(server, "payments")["spec"]["max_event_bytes"] == 4096
    assert spec_of(server, "orders-dlq")["created_by"] == "system:dead-letter"
    # idempotent
    assert ok(cli(server, "apply", "-f", str(f))) == \
        "topic/orders unchanged\ntopic/payments unchanged\n"
    assert spec_of(server, "orders")["generation"] == 1
    # a change
    f.write_text(TOPICS.replace("max_age: 7d", "max_age: 14d"))
    assert ok(cli(server, "apply", "-f", str(f))) == \
        "topic/orders updated\ntopic/payments unchanged\n"
    o = spec_of(server, "orders")
    assert o["generation"] == 2 and o["spec"]["retention"]["max_age"] == "14d"


def test_dry_run_shows_the_outcome_and_a_diff_and_writes_nothing(server, tmp_path):
    f = tmp_path / "topics.yaml"
    f.write_text(TOPICS)
    out = ok(cli(server, "apply", "-f", str(f), "--dry-run"))
    lines = out.splitlines()
    assert lines[0] == "topic/orders created (dry run)"
    assert "  + dedup_window: 2m" in lines
    assert server.get("/v1/topics/orders").status_code == 404  # nothing written
    ok(cli(server, "apply", "-f", str(f)))
    f.write_text(TOPICS.replace("max_age: 7d", "max_age: 14d").replace("  dedup_window: 2m\n", ""))
    out = ok(cli(server, "apply", "-f", str(f), "--dry-run")).splitlines()
    assert out[0] == "topic/orders updated (dry run)"
    assert "  -   max_age: 7d" in out and "  +   max_age: 14d" in out
    assert "    dedup_window: 2m" in out  # the default: unchanged
    assert "topic/payments unchanged (dry run)" in out
    assert spec_of(server, "orders")["spec"]["retention"]["max_age"] == "7d"
    assert spec_of(server, "orders")["generation"] == 1


def test_get_table_json_and_yaml_round_trip(server, tmp_path):
    f = tmp_path / "topics.yaml"
    f.write_text(TOPICS)
    ok(cli(server, "apply", "-f", str(f)))
    table = ok(cli(server, "get", "topics")).splitlines()
    assert table[0].split() == ["NAME", "GENERATION", "UPDATED", "UPDATED", "BY"]
    assert [l.split()[0] for l in table[1:]] == ["orders", "orders-dlq", "payments"]
    one = ok(cli(server, "get", "Topic", "orders")).splitlines()
    assert len(one) == 2 and one[1].split()[:2] == ["orders", "1"]
    listed = json.loads(ok(cli(server, "get", "topic", "-o", "json")))
    assert [i["name"] for i in listed["items"]] == ["orders", "orders-dlq", "payments"]
    assert listed["items"] == server.get("/v1/topics").json()["items"]
    assert json.loads(ok(cli(server, "get", "topic", "orders", "-o", "json"))) == \
        spec_of(server, "orders")
    # -o yaml is what apply takes back, unchanged
    y = ok(cli(server, "get", "topics", "-o", "yaml"))
    assert y.startswith("---\nkind: Topic\nname: orders\nspec:\n")
    back = tmp_path / "back.yaml"
    back.write_text(y)
    assert ok(cli(server, "apply", "-f", str(back))) == \
        "topic/orders unchanged\ntopic/orders-dlq unchanged\ntopic/payments unchanged\n"
    assert ok(cli(server, "get", "topics", "-o", "yaml")) == y


def test_json_files_directories_and_stdin(server, tmp_path):
    d = tmp_path / "specs"
    d.mkdir()
    (d / "b.json").write_text(json.dumps([{"kind": "Topic", "name": "b1", "spec": {}},
                                          {"kind": "topic", "name": "b2"}]))
    (d / "a.yml").write_text("kind: topics\nname: a1\nspec: {sync: always}\n")
    (d / "notes.txt").write_text("not a spec")
    assert ok(cli(server, "apply", "-f", str(d))) == \
        "topic/a1 created\ntopic/b1 created\ntopic/b2 created\n"
    out = ok(cli(server, "apply", "-f", "-", stdin="kind: Topic\nname: c1\nspec: {}\n"))
    assert out == "topic/c1 created\n"
    # Kubernetes' metadata.name works too
    out = ok(cli(server, "apply", "-f", "-",
                 stdin="kind: Topic\nmetadata: {name: k1}\nspec: {}\n"))
    assert out == "topic/k1 created\n"
    # YAML anchors
    out = ok(cli(server, "apply", "-f", "-", stdin=(
        "kind: Topic\nname: y1\nspec: &common {dedup_window: 5m}\n---\n"
        "kind: Topic\nname: y2\nspec: *common\n")))
    assert out == "topic/y1 created\ntopic/y2 created\n"
    assert spec_of(server, "y2")["spec"]["dedup_window"] == "5m"


def test_delete(server, tmp_path):
    assert server.put("/v1/topics/gone", json={}).status_code == 201
    assert ok(cli(server, "delete", "topic", "gone")) == "topic/gone deleted\n"
    assert server.get("/v1/topics/gone").status_code == 404
    cp = cli(server, "delete", "topic", "gone")
    assert cp.returncode == 3 and "404" in cp.stderr and "not found" in cp.stderr
    cp = cli(server, "delete", "topic")
    assert cp.returncode == 2


def test_failures_report_the_server_message(server, tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(TOPICS + "---\nkind: Topic\nname: broken\nspec:\n  sync: sometimes\n")
    cp = cli(server, "apply", "-f", str(f))
    # the good documents go, the bad one is reported with the server's message
    assert cp.returncode == 1
    assert cp.stdout == "topic/orders created\ntopic/payments created\n"
    want = server.put("/v1/topics/broken", json={"sync": "sometimes"}).json()["error"]
    assert cp.stderr == "basalt: topic/broken (%s, document 3): %s (field sync)\n" % (
        f, want["message"])
    # unknown kind, missing name, unknown field
    cp = cli(server, "apply", "-f", "-", stdin="kind: Gadget\nname: x\nspec: {}\n")
    assert cp.returncode == 1 and "unknown kind 'Gadget'" in cp.stderr and "Topic" in cp.stderr
    cp = cli(server, "apply", "-f", "-", stdin="kind: Topic\nspec: {}\n")
    assert cp.returncode == 1 and "needs kind and name" in cp.stderr
    cp = cli(server, "apply", "-f", "-", stdin="kind: Topic\nname: x\nspecs: {}\n")
    assert cp.returncode == 1 and "unknown field 'specs'" in cp.stderr
    # a file that does not parse: nothing is sent
    f.write_text("kind: Topic\nname: never\nspec: {a: [1, 2}\n")
    cp = cli(server, "apply", "-f", str(f))
    assert cp.returncode == 1 and "%s:" % f in cp.stderr
    assert server.get("/v1/topics/never").status_code == 404
    cp = cli(server, "apply", "-f", str(tmp_path / "missing.yaml"))
    assert cp.returncode == 1 and "cannot open" in cp.stderr
    cp = cli(server, "get", "gadgets")
    assert cp.returncode == 1 and "unknown kind" in cp.stderr
    cp = cli(server, "get", "topic", "-o", "xml")
    assert cp.returncode == 2
    # a viewer may get but not apply: the server's 403 message
    viewer = server.create_key("viewer")["key"]
    cp = cli(server, "apply", "-f", "-", key=viewer, stdin="kind: Topic\nname: v\nspec: {}\n")
    assert cp.returncode == 1 and "topic/v" in cp.stderr
    assert ok(cli(server, "get", "topics", key=viewer)).startswith("NAME")


@pytest.mark.parametrize("yaml_text,want", [
    ("max_event_bytes: 0x1000", {"max_event_bytes": 4096}),
    ("max_event_bytes: \"4096\"", {"max_event_bytes": "4096"}),
    ("dedup_window: 0", None),       # an integer, not a duration string: refused
    ("dedup_window: '0'", {"dedup_window": "0"}),
    ("dead_letter: null", {}),
])
def test_yaml_scalars_resolve_like_yaml(server, yaml_text, want):
    doc = "kind: Topic\nname: s\nspec:\n  %s\n" % yaml_text
    cp = cli(server, "apply", "-f", "-", "--dry-run", stdin=doc)
    if want is None:
        assert cp.returncode == 1
        return
    assert cp.returncode == 0, cp.stderr
    r = server.put("/v1/topics/s?dry_run=true", json=want)
    shown = cli(server, "apply", "-f", "-", "--dry-run", "--json", stdin=doc)
    assert json.loads(shown.stdout)["spec"] == r.json()["spec"]
