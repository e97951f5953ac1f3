"""Authentication, roles, tenant scoping of keys and tenants, rate limits."""
import time

import pytest

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
