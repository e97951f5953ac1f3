/* /v1/keys and /v1/tenants: API key and tenant management (admin only). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "base/json.h"

#define MAX_PAGE 1000
/* A key's own rate limit: requests per second (and burst, in requests) within these. */
#define BS_KEY_MIN_RPS 0.001
#define BS_KEY_MAX_RPS 1e6

static void render_key(bs_buf_t *b, const bs_key_info_t *k, const char *secret)
{
    bs_jw_obj_begin(b);
    bs_jw_key(b, "id");
    bs_jw_str(b, k->id);
    bs_jw_key(b, "name");
    bs_jw_str(b, k->name);
    bs_jw_key(b, "tenant");
    bs_jw_str(b, k->tenant);
    bs_jw_key(b, "role");
    bs_jw_str(b, bs_role_name(k->role));
    bs_jw_key(b, "rate_limit");
    if (k->rate_rps > 0) {
        bs_jw_obj_begin(b);
        bs_jw_key(b, "rps");
        bs_jw_double(b, k->rate_rps);
        bs_jw_key(b, "burst");
        bs_jw_double(b, k->rate_burst > 0 ? k->rate_burst : k->rate_rps);
        bs_jw_obj_end(b);
    } else {
        bs_jw_null(b);
    }
    bs_jw_key(b, "expires_at");
    bs_jw_time(b, k->expires_at);
    bs_jw_key(b, "created_at");
    bs_jw_time(b, k->created_at);
    bs_jw_key(b, "created_by");
    bs_jw_str(b, k->created_by);
    bs_jw_key(b, "scopes");
    bs_jw_arr_begin(b);
    for (unsigned bit = 1; bit & BS_SCOPES_ALL; bit <<= 1)
        if (k->scopes & bit)
            bs_jw_str(b, bs_scope_name(bit));
    bs_jw_arr_end(b);
    if (secret) {
        bs_jw_key(b, "key");
        bs_jw_str(b, secret);
    }
    bs_jw_obj_end(b);
}

void bs__api_keys_create(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    bs_err_t err;
    bs_err_clear(&err);
    cJSON *j = bs_req_json(req, &err);
    if (!j)
        return bs_resp_error(req, &err);
    if (!cJSON_IsObject(j))
        return bs_resp_errorf(req, BS_EINVAL, NULL, "body must be a JSON object");
    static const char *const allowed[] = {"name", "role", "tenant", "rate_limit", "expires_at",
                                          "ttl_seconds", "scopes", NULL};
    if (bs_json_reject_unknown(j, allowed, &err))
        return bs_resp_error(req, &err);
    bs_key_info_t info;
    memset(&info, 0, sizeof info);
    const char *name = NULL, *role = NULL, *tenant = NULL, *expires = NULL;
    if (bs_json_get_str(j, "name", 1, &name, &err) < 0 ||
        bs_json_get_str(j, "role", 1, &role, &err) < 0 ||
        bs_json_get_str(j, "tenant", 0, &tenant, &err) < 0 ||
        bs_json_get_str(j, "expires_at", 0, &expires, &err) < 0)
        return bs_resp_error(req, &err);
    int r = bs_role_parse(role);
    if (r < 0)
        return bs_resp_errorf(req, BS_EINVAL, "role",
                              "role must be admin, developer, predictor or viewer, got '%.32s'", role);
    info.role = (bs_role_t)r;
    if (strlen(name) >= sizeof info.name)
        return bs_resp_errorf(req, BS_EINVAL, "name", "key name must be 1-120 characters");
    snprintf(info.name, sizeof info.name, "%s", name);
    if (!tenant)
        tenant = req->who.tenant;
    if (strlen(tenant) >= sizeof info.tenant)
        return bs_resp_errorf(req, BS_EINVAL, "tenant", "tenant name is too long");
    if (!bs__api_tenant_allowed(req, tenant))
        return bs_resp_errorf(req, BS_EFORBID, "tenant",
                              "admins of tenant '%s' cannot create keys for tenant '%.63s'",
                              req->who.tenant, tenant);
    snprintf(info.tenant, sizeof info.tenant, "%s", tenant);
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(j, "scopes");
    if (sc && !cJSON_IsNull(sc)) {
        if (!cJSON_IsArray(sc))
            return bs_resp_errorf(req, BS_EINVAL, "scopes", "scopes must be an array of strings");
        const cJSON *it;
        cJSON_ArrayForEach(it, sc) {
            unsigned bit = cJSON_IsString(it) ? bs_scope_parse(it->valuestring) : 0;
            if (!bit)
                return bs_resp_errorf(req, BS_EINVAL, "scopes",
                                      "unknown scope; the only scope is \"metrics\"");
            info.scopes |= bit;
        }
        /* /metrics names every tenant's models: only the default tenant's admins, who see
         * all tenants anyway, may hand out a key that reads it. */
        if ((info.scopes & BS_SCOPE_METRICS) && !bs__api_tenant_allowed(req, "\x01"))
            return bs_resp_errorf(req, BS_EFORBID, "scopes",
                                  "only admins of the '%s' tenant can grant the metrics scope",
                                  BS_DEFAULT_TENANT);
    }
    const cJSON *rl = cJSON_GetObjectItemCaseSensitive(j, "rate_limit");
    if (rl && !cJSON_IsNull(rl)) {
        if (!cJSON_IsObject(rl))
            return bs_resp_errorf(req, BS_EINVAL, "rate_limit",
                                  "rate_limit must be an object {\"rps\": N, \"burst\": N}");
        static const char *const rl_allowed[] = {"rps", "burst", NULL};
        if (bs_json_reject_unknown(rl, rl_allowed, &err))
            return bs_resp_errorf(req, BS_EINVAL, "rate_limit",
                                  "rate_limit: %s; it takes rps and burst", err.msg);
        int has_burst = 0;
        if (bs_json_get_double(rl, "rps", 1, &info.rate_rps, &err) < 0 ||
            (has_burst = bs_json_get_double(rl, "burst", 0, &info.rate_burst, &err)) < 0) {
            char field[64];
            snprintf(field, sizeof field, "rate_limit.%.40s", err.field);
            return bs_resp_errorf(req, BS_EINVAL, field, "rate_limit: %s", err.msg);
        }
        has_burst = has_burst == 0;
        /* Bounded, so that the token bucket's arithmetic and Retry-After stay meaningful: a
         * rate of 1e-300 would ask a client to wait 10^300 seconds. */
        if (!(info.rate_rps >= BS_KEY_MIN_RPS && info.rate_rps <= BS_KEY_MAX_RPS))
            return bs_resp_errorf(req, BS_EINVAL, "rate_limit.rps",
                                  "rate_limit.rps is %.17g, must be between %g and %g per second",
                                  info.rate_rps, BS_KEY_MIN_RPS, BS_KEY_MAX_RPS);
        if (has_burst && !(info.rate_burst >= 1 && info.rate_burst <= BS_KEY_MAX_RPS))
            return bs_resp_errorf(req, BS_EINVAL, "rate_limit.burst",
                                  "rate_limit.burst is %.17g, must be between 1 and %g requests",
                                  info.rate_burst, BS_KEY_MAX_RPS);
    }
    int64_t ttl = 0;
    int rc = bs_json_get_int(j, "ttl_seconds", 0, 1, 10LL * 365 * 86400, &ttl, &err);
    if (rc < 0)
        return bs_resp_error(req, &err);
    if (ttl && expires)
        return bs_resp_errorf(req, BS_EINVAL, "ttl_seconds",
                              "give expires_at or ttl_seconds, not both");
    if (ttl)
        info.expires_at = bs_time_wall_ms() + ttl * 1000;
    if (expires && bs_time_parse_rfc3339(expires, &info.expires_at) != 0)
        return bs_resp_errorf(req, BS_EINVAL, "expires_at",
                              "expires_at must be an RFC 3339 timestamp like 2027-01-01T00:00:00Z");
    /* A key that could never authenticate is a mistake, not a key. */
    if (expires && info.expires_at <= bs_time_wall_ms())
        return bs_resp_errorf(req, BS_EINVAL, "expires_at",
                              "expires_at '%.40s' is not in the future", expires);
    char secret[BS_KEY_SECRET_MAX];
    if (bs_auth_key_create(app->auth, req->who.key_id, &info, secret, &err) != 0)
        return bs_resp_error(req, &err);
    bs_buf_t b;
    bs_buf_init(&b);
    render_key(&b, &info, secret);
    bs_resp_json(req, 201, &b);
    bs_buf_free(&b);
}

void bs__api_keys_list(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    int limit;
    if (bs__api_limit(req, 100, MAX_PAGE, &limit) < 0)
        return;
    const char *tenant = bs_req_query(req, "tenant");
    const char *cursor = bs_req_query(req, "cursor");
    int super = bs__api_tenant_allowed(req, "\x01");
    if (!super) {
        if (tenant && strcmp(tenant, req->who.tenant) != 0)
            return bs_resp_errorf(req, BS_EFORBID, "tenant", "cannot list keys of another tenant");
        tenant = req->who.tenant;
    }
    bs_key_info_t *keys = bs_arena_calloc(&req->arena, (size_t)limit + 1, sizeof *keys);
    if (!keys)
        return bs_resp_errorf(req, BS_ENOMEM, NULL, "out of memory");
    bs_err_t err;
    int n = bs_auth_key_list(app->auth, tenant, cursor, limit + 1, keys, &err);
    if (n < 0)
        return bs_resp_error(req, &err);
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "items");
    bs_jw_arr_begin(&b);
    for (int i = 0; i < n && i < limit; i++)
        render_key(&b, &keys[i], NULL);
    bs_jw_page_end(&b, n > limit ? keys[limit - 1].id : NULL);
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
}

void bs__api_keys_delete(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    const char *id = bs_req_param(req, "id");
    if (strcmp(id, req->who.key_id) == 0)
        return bs_resp_errorf(req, BS_ECONFLICT, "id", "a key cannot delete itself");
    int super = bs__api_tenant_allowed(req, "\x01");
    bs_err_t err;
    if (bs_auth_key_delete(app->auth, id, super ? NULL : req->who.tenant, &err) != 0)
        return bs_resp_error(req, &err);
    bs_resp_empty(req, 204);
}

static void render_tenant(bs_buf_t *b, const bs_tenant_t *t)
{
    bs_jw_obj_begin(b);
    bs_jw_key(b, "id");
    bs_jw_str(b, t->id);
    bs_jw_key(b, "name");
    bs_jw_str(b, t->name);
    bs_jw_key(b, "created_at");
    bs_jw_time(b, t->created_at);
    bs_jw_obj_end(b);
}

void bs__api_tenants_create(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    if (!bs__api_tenant_allowed(req, "\x01"))
        return bs_resp_errorf(req, BS_EFORBID, NULL,
                              "only admins of the '%s' tenant can create tenants", BS_DEFAULT_TENANT);
    bs_err_t err;
    cJSON *j = bs_req_json(req, &err);
    if (!j)
        return bs_resp_error(req, &err);
    if (!cJSON_IsObject(j))
        return bs_resp_errorf(req, BS_EINVAL, NULL, "body must be a JSON object");
    static const char *const allowed[] = {"name", NULL};
    const char *name = NULL;
    if (bs_json_reject_unknown(j, allowed, &err) || bs_json_get_str(j, "name", 1, &name, &err) < 0)
        return bs_resp_error(req, &err);
    bs_tenant_t t;
    if (bs_auth_tenant_create(app->auth, name, &t, &err) != 0)
        return bs_resp_error(req, &err);
    bs_buf_t b;
    bs_buf_init(&b);
    render_tenant(&b, &t);
    bs_resp_json(req, 201, &b);
    bs_buf_free(&b);
}

void bs__api_tenants_list(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    int limit;
    if (bs__api_limit(req, 100, MAX_PAGE, &limit) < 0)
        return;
    const char *cursor = bs_req_query(req, "cursor");
    bs_tenant_t *ts = bs_arena_calloc(&req->arena, (size_t)limit + 1, sizeof *ts);
    if (!ts)
        return bs_resp_errorf(req, BS_ENOMEM, NULL, "out of memory");
    bs_err_t err;
    int n;
    if (bs__api_tenant_allowed(req, "\x01")) {
        n = bs_auth_tenant_list(app->auth, cursor, limit + 1, ts, &err);
    } else {
        /* Other tenants' admins see their own tenant only. The page (and so next_cursor,
         * which is a tenant name) is built from that one row, never from a listing of all
         * tenants filtered afterwards. */
        n = 0;
        if (!cursor || strcmp(cursor, req->who.tenant) < 0)
            n = bs_auth_tenant_get(app->auth, req->who.tenant, &ts[0], &err) == 0 ? 1 : 0;
    }
    if (n < 0)
        return bs_resp_error(req, &err);
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "items");
    bs_jw_arr_begin(&b);
    for (int i = 0; i < n && i < limit; i++)
        render_tenant(&b, &ts[i]);
    bs_jw_page_end(&b, n > limit ? ts[limit - 1].name : NULL);
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
}
