"""Authentication, roles, tenant scoping of keys and tenants, rate limits."""
import time

import pytest
import requests

from conftest import ROLES, source_routes
from test_foundation import assert_error, pattern_to_path


def key_id_of(secret):
    """The key id encoded in a token bsk_<32 hex id>_<secret> (see src/auth/auth.h)."""
    h = secret.split("_")[1]
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


@pytest.fixture(scope="module")
def role_keys(shared_server):
    return {role: shared_server.create_key(role, name="matrix-" + role)["key"] for role in ROLES}


# ---- 401 / 403 matrix ------------------------------------------------------------------------

def test_no_key_401(shared_server):
    r = shared_server.get("/v1/info", key=None)
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].lower().startswith("bearer")


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "bsk_abc",
                                    "Token abc", "Bearer not-a-key"])
def test_malformed_authorization_401(shared_server, header):
    r = shared_server.get("/v1/info", headers={"Authorization": header})
    assert_error(r, 401, "unauthorized")


def test_bad_key_401(shared_server):
    good = shared_server.admin_key
    prefix, kid, secret = good.split("_")
    flipped = secret[:-1] + ("0" if secret[-1] != "0" else "1")
    for bad in ("%s_%s_%s" % (prefix, kid, flipped),              # right id, wrong secret
                "%s_%s_%s" % (prefix, "0" * 32, secret),           # unknown id
                good[:-1],                                         # truncated
                good + "0"):                                       # too long
        assert_error(shared_server.get("/v1/info", key=bad), 401, "unauthorized")
    # the real key still works (no lock-out side effects)
    assert shared_server.get("/v1/info").status_code == 200


def test_expired_key_401(shared_server):
    k = shared_server.create_key("viewer", ttl_seconds=1)
    assert k["expires_at"] is not None
    # Whether it still works right now depends on timing; after the TTL it must not.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = shared_server.get("/v1/info", key=k["key"])
        if r.status_code == 401:
            break
        assert r.status_code == 200
        time.sleep(0.3)
    assert_error(r, 401, "unauthorized")


def test_expired_key_is_401(shared_server):
    # A key cannot be created already expired (400, test_strictness.py): let one expire.
    k = shared_server.create_key("viewer", ttl_seconds=1)
    deadline = time.time() + 30
    while shared_server.get("/v1/info", key=k["key"]).status_code == 200:
        assert time.time() < deadline, "the key never expired"
        time.sleep(0.2)
    r = shared_server.get("/v1/info", key=k["key"])
    body = assert_error(r, 401, "unauthorized")
    assert "expired" in body["error"]["message"]


def test_expiry_given_twice_is_400(shared_server):
    r = shared_server.post("/v1/keys", json={"name": "twice", "role": "viewer", "ttl_seconds": 60,
                                             "expires_at": "2099-01-01T00:00:00Z"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "ttl_seconds", r.text


def role_rank(role):
    return -1 if role == "public" else ROLES.index(role)


def test_role_matrix_over_route_table(shared_server, role_keys):
    """For every route: no key -> 401; a role below the route's minimum -> 403; the minimum
    role and above -> neither 401 nor 403 (the handler may still reject the empty input)."""
    routes = source_routes()
    checked = 0
    for method, pattern, _, min_role in routes:
        if method == "DELETE" and pattern == "/v1/keys/{id}":
            path = "/v1/keys/00000000-0000-7000-8000-000000000000"  # never delete real keys
        else:
            path = pattern_to_path(pattern, "matrix-x")
        if min_role == "public":
            r = shared_server.request(method, path, key=None)
            assert r.status_code not in (401, 403), (method, pattern, r.text)
            continue
        assert_error(shared_server.request(method, path, key=None), 401, "unauthorized")
        for role in ROLES:
            r = shared_server.request(method, path, key=role_keys[role], json={})
            if role_rank(role) < role_rank(min_role):
                assert_error(r, 403, "forbidden")
            else:
                assert r.status_code not in (401, 403), (method, pattern, role, r.text)
            checked += 1
    assert checked >= 4 * 6


def test_right_roles_get_2xx(shared_server, role_keys):
    for role in ROLES:
        assert shared_server.get("/v1/info", key=role_keys[role]).status_code == 200
    admin = role_keys["admin"]
    assert shared_server.get("/v1/keys", key=admin).status_code == 200
    assert shared_server.get("/v1/tenants", key=admin).status_code == 200
    k = shared_server.create_key("viewer", key=admin)
    assert shared_server.delete("/v1/keys/" + k["id"], key=admin).status_code == 204
    for role in ("viewer", "predictor", "developer"):
        assert_error(shared_server.post("/v1/keys", key=role_keys[role],
                                        json={"name": "x", "role": "viewer"}), 403, "forbidden")


# ---- keys --------------------------------------------------------------------------------

def test_key_create_list_delete(server):
    k = server.create_key("developer", name="ci", rate_limit={"rps": 5, "burst": 10})
    assert k["key"].startswith("bsk_")
    assert key_id_of(k["key"]) == k["id"]
    assert k["role"] == "developer" and k["tenant"] == "default" and k["name"] == "ci"
    assert k["rate_limit"] == {"rps": 5, "burst": 10}
    assert k["created_by"] == key_id_of(server.admin_key)
    items = server.get("/v1/keys").json()["items"]
    listed = {i["id"]: i for i in items}
    assert k["id"] in listed and key_id_of(server.admin_key) in listed
    assert all("key" not in i for i in items), "secrets must never be listed"
    assert server.get("/v1/info", key=k["key"]).status_code == 200
    assert server.delete("/v1/keys/" + k["id"]).status_code == 204
    assert_error(server.get("/v1/info", key=k["key"]), 401, "unauthorized")
    assert_error(server.delete("/v1/keys/" + k["id"]), 404, "not_found")
    assert k["id"] not in {i["id"] for i in server.get("/v1/keys").json()["items"]}


def test_key_cannot_delete_itself(server):
    assert_error(server.delete("/v1/keys/" + key_id_of(server.admin_key)), 409, "conflict")


def test_key_list_pagination(server):
    made = {server.create_key("viewer", name="p%d" % i)["id"] for i in range(5)}
    seen, cursor, pages = [], None, 0
    while True:
        q = "/v1/keys?limit=2" + ("&cursor=" + cursor if cursor else "")
        page = server.get(q).json()
        assert len(page["items"]) <= 2
        seen += [i["id"] for i in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
        assert pages < 20
    assert len(seen) == len(set(seen)) == len(made) + 1
    assert made <= set(seen)
    for bad in ("0", "-1", "abc", "100000"):
        assert_error(server.get("/v1/keys?limit=" + bad), 400, "invalid_input", field="limit")


def test_key_for_missing_tenant_404(server):
    r = server.post("/v1/keys", json={"name": "k", "role": "viewer", "tenant": "nope"})
    assert_error(r, 404, "not_found", field="tenant")


# ---- tenants and scoping ---------------------------------------------------------------------

def test_tenants_create_list_conflict(server):
    r = server.post("/v1/tenants", json={"name": "acme"})
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["name"] == "acme" and t["id"] and t["created_at"]
    assert_error(server.post("/v1/tenants", json={"name": "acme"}), 409, "conflict")
    for bad in ("", "Upper", "has space", "x" * 64, "semi;colon"):
        assert_error(server.post("/v1/tenants", json={"name": bad}), 400, "invalid_input",
                     field="name")
    names = [i["name"] for i in server.get("/v1/tenants").json()["items"]]
    assert "acme" in names and "default" in names


def test_tenant_admin_is_scoped(server):
    assert server.post("/v1/tenants", json={"name": "acme"}).status_code == 201
    assert server.post("/v1/tenants", json={"name": "zeta"}).status_code == 201
    acme_admin = server.create_key("admin", name="acme-admin", tenant="acme")
    assert acme_admin["tenant"] == "acme"
    zeta_key = server.create_key("viewer", name="zeta-viewer", tenant="zeta")
    default_viewer = server.create_key("viewer", name="default-viewer")
    A = acme_admin["key"]

    # creates keys only in its own tenant (default: its own)
    own = server.create_key("viewer", key=A, name="acme-viewer")
    assert own["tenant"] == "acme"
    assert_error(server.post("/v1/keys", key=A, json={"name": "x", "role": "viewer",
                                                     "tenant": "default"}),
                 403, "forbidden", field="tenant")

    # lists only its tenant's keys
    items = server.get("/v1/keys", key=A).json()["items"]
    assert {i["tenant"] for i in items} == {"acme"}
    assert {i["id"] for i in items} == {acme_admin["id"], own["id"]}
    assert_error(server.get("/v1/keys?tenant=default", key=A), 403, "forbidden")

    # cannot delete other tenants' keys (they do not exist for it)
    for other in (zeta_key["id"], default_viewer["id"], key_id_of(server.admin_key)):
        assert_error(server.delete("/v1/keys/" + other, key=A), 404, "not_found")
    assert server.get("/v1/info", key=zeta_key["key"]).status_code == 200
    assert server.get("/v1/info", key=default_viewer["key"]).status_code == 200

    # can delete its own tenant's keys
    assert server.delete("/v1/keys/" + own["id"], key=A).status_code == 204
    assert_error(server.get("/v1/info", key=own["key"]), 401, "unauthorized")

    # cannot create tenants, sees only its own
    assert_error(server.post("/v1/tenants", key=A, json={"name": "evil"}), 403, "forbidden")
    assert [t["name"] for t in server.get("/v1/tenants", key=A).json()["items"]] == ["acme"]

    # the default tenant's admin sees and manages everything
    all_items = server.get("/v1/keys").json()["items"]
    assert {"acme", "zeta", "default"} <= {i["tenant"] for i in all_items}
    only_acme = server.get("/v1/keys?tenant=acme").json()["items"]
    assert {i["tenant"] for i in only_acme} == {"acme"}
    assert server.delete("/v1/keys/" + zeta_key["id"]).status_code == 204
    assert_error(server.get("/v1/info", key=zeta_key["key"]), 401, "unauthorized")
    assert server.post("/v1/tenants", json={"name": "third"}).status_code == 201


def test_tenant_paging_shows_a_tenant_admin_no_other_names(server):
    """next_cursor is a tenant name: built from all tenants it named the caller's
    neighbours (limit=1 from the start named whichever tenant sorts first)."""
    for name in ("aaa-secret", "mmm", "zzz-secret"):
        assert server.post("/v1/tenants", json={"name": name}).status_code == 201
    A = server.create_key("admin", name="mmm-admin", tenant="mmm")["key"]
    others = {"aaa-secret", "default", "zzz-secret"}
    seen_items, seen_cursors = [], []
    for limit in (1, 2, 100):
        cursor = None
        for _ in range(10):
            q = "/v1/tenants?limit=%d" % limit + ("&cursor=" + cursor if cursor else "")
            r = server.get(q, key=A)
            assert r.status_code == 200, r.text
            page = r.json()
            seen_items += [t["name"] for t in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
            seen_cursors.append(cursor)
    assert not others & (set(seen_items) | set(seen_cursors)), (seen_items, seen_cursors)
    assert set(seen_items) == {"mmm"}
    # a hand-made cursor before or after its name
    assert [t["name"] for t in server.get("/v1/tenants?cursor=a", key=A).json()["items"]] == ["mmm"]
    after = server.get("/v1/tenants?cursor=mmm", key=A).json()
    assert after == {"items": [], "next_cursor": None}
    # the default tenant's admin still pages through everything
    names, cursor = [], None
    while True:
        page = server.get("/v1/tenants?limit=2" + ("&cursor=" + cursor if cursor else "")).json()
        names += [t["name"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert names == sorted(others | {"mmm"})


def test_default_tenant_developer_cannot_manage(server):
    dev = server.create_key("developer")["key"]
    assert_error(server.post("/v1/tenants", key=dev, json={"name": "nope"}), 403, "forbidden")
    assert_error(server.get("/v1/keys", key=dev), 403, "forbidden")


# ---- rate limits -----------------------------------------------------------------------------

def hit_until_429(srv, key, path="/v1/info", tries=20):
    for i in range(tries):
        r = srv.get(path, key=key)
        if r.status_code == 429:
            return i, r
        assert r.status_code == 200, r.text
    pytest.fail("no 429 after %d requests" % tries)


def test_key_rate_limit_429_then_recovers(server):
    # 0.5 rps with burst 1: the second request within 2 s is over the limit.
    k = server.create_key("viewer", rate_limit={"rps": 0.5, "burst": 1})
    n_ok, r = hit_until_429(server, k["key"])
    assert n_ok >= 1
    assert_error(r, 429, "rate_limited")
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= 2
    # other keys are not affected, public routes neither
    assert server.get("/v1/info").status_code == 200
    assert server.get("/healthz", key=k["key"]).status_code == 200
    time.sleep(retry + 0.2)
    assert server.get("/v1/info", key=k["key"]).status_code == 200


# The exact burst of back-to-back requests is the per-process bucket's: a replica sharing
# limits through Redis admits a new key's first request on credit and the rest once its
# first slice arrives (bounds in docs/architecture.md; tested by test_kv.c, test_redis.py
# and test_replicas.py).
@pytest.mark.embedded
def test_default_rate_limit_from_config(start_server):
    s = start_server("--threads", "1", "--rate-limit-rps", "0.5", "--rate-limit-burst", "2")
    n_ok, r = hit_until_429(s, s.admin_key)
    assert n_ok >= 2  # the burst
    assert_error(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1
    # a key with its own limit is not bound by the default
    k = None
    time.sleep(int(r.headers["retry-after"]) + 0.2)
    r = s.post("/v1/keys", json={"name": "fast", "role": "viewer",
                                 "rate_limit": {"rps": 1000, "burst": 1000}})
    assert r.status_code == 201, r.text
    k = r.json()["key"]
    for _ in range(10):
        assert s.get("/v1/info", key=k).status_code == 200


# ---- who may read /metrics ---------------------------------------------------------------
# /metrics names every tenant's models and versions, so by default it needs a key of the
# default tenant (viewer or above) or one narrowed to the metrics scope.

def test_metrics_needs_a_key(server):
    r = server.get("/metrics", key=None)
    assert_error(r, 401, "unauthorized")
    assert r.headers.get("www-authenticate", "").startswith("Bearer")
    assert "basalt_http_requests_total" not in r.text


def test_metrics_refuses_other_tenants_and_admits_default_viewers(server):
    assert server.post("/v1/tenants", json={"name": "acme"}).status_code == 201
    for role in ("predictor", "admin"):
        other = server.create_key(role, name="acme-" + role, tenant="acme")["key"]
        r = server.get("/metrics", key=other)
        assert_error(r, 403, "forbidden")
        assert "basalt_" not in r.text
    viewer = server.create_key("viewer", name="default-viewer")["key"]
    r = server.get("/metrics", key=viewer)
    assert r.status_code == 200 and "basalt_http_requests_total" in r.text


def test_metrics_scope(server):
    assert server.post("/v1/tenants", json={"name": "acme"}).status_code == 201
    acme_admin = server.create_key("admin", name="acme-admin", tenant="acme")["key"]
    # only the default tenant's admins may grant it (it reveals every tenant)
    assert_error(server.post("/v1/keys", key=acme_admin,
                             json={"name": "p", "role": "viewer", "scopes": ["metrics"]}),
                 403, "forbidden", field="scopes")
    for bad in (["metricz"], "metrics", [1]):
        assert_error(server.post("/v1/keys", json={"name": "p", "role": "viewer", "scopes": bad}),
                     400, "invalid_input", field="scopes")
    prom = server.create_key("viewer", name="prometheus", tenant="acme", scopes=["metrics"])
    assert prom["scopes"] == ["metrics"]
    listed = [k for k in server.get("/v1/keys").json()["items"] if k["id"] == prom["id"]]
    assert listed[0]["scopes"] == ["metrics"]
    assert server.create_key("viewer", name="plain")["scopes"] == []
    r = server.get("/metrics", key=prom["key"])
    assert r.status_code == 200 and "basalt_http_requests_total" in r.text
    # the scope narrows the key: nothing but /metrics
    for path in ("/v1/info", "/v1/models"):
        assert_error(server.get(path, key=prom["key"]), 403, "forbidden")
    # the scope survives a restart (stored with the key)
    server.restart()
    assert server.get("/metrics", key=prom["key"]).status_code == 200
    assert_error(server.get("/v1/info", key=prom["key"]), 403, "forbidden")


def test_metrics_public(start_server):
    s = start_server("--metrics-public")
    r = s.get("/metrics", key=None)
    assert r.status_code == 200 and "basalt_http_requests_total" in r.text
    assert_error(s.get("/v1/info", key=None), 401, "unauthorized")  # nothing else opens
    doc = s.get("/openapi.json", key=None).json()
    assert doc["paths"]["/metrics"]["get"]["x-basalt-min-role"] == "public"


def test_metrics_listen(start_server):
    from conftest import free_port
    port = free_port()
    s = start_server("--metrics-listen", "127.0.0.1:%d" % port)
    base = "http://127.0.0.1:%d" % port
    r = requests.get(base + "/metrics", timeout=10)
    assert r.status_code == 200 and "basalt_http_requests_total" in r.text
    # the same numbers as the main listener's (one registry of counters)
    assert "basalt_build_info" in r.text
    assert requests.get(base + "/healthz", timeout=10).status_code == 200
    for path in ("/v1/info", "/v1/models", "/openapi.json"):
        assert requests.get(base + path, timeout=10).status_code == 404
    # the main listener keeps the rule
    assert_error(s.get("/metrics", key=None), 401, "unauthorized")
    assert s.get("/metrics").status_code == 200


def test_metrics_listen_in_use_refuses_to_start(start_server, run_basalt, tmp_path):
    s = start_server()
    cp = run_basalt("serve", "--listen", "127.0.0.1:0", "--data", str(tmp_path / "d"),
                    "--metrics-listen", "127.0.0.1:%d" % s.port)
    assert cp.returncode != 0
    assert "metrics_listen" in cp.stderr and "already in use" in cp.stderr, cp.stderr
