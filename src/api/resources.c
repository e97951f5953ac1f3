/*
 * The generic handlers of declarative resources: PUT/GET/DELETE /v1/<plural>/{name},
 * GET /v1/<plural> and GET /v1/kinds. They parse the body, let the kind validate and
 * normalise the spec (kinds.c), store it through store/resources (one transaction
 * with an audit row and a bump of scope "resources") once what it needs exists (the kind's
 * prepare hook: the topic in the log),
 * and rebuild this replica's snapshots before answering (read your writes).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "base/json.h"
#include "store/changes.h"
#include "store/resources.h"

#define MAX_PAGE 1000

const bs__api_kind_t *bs__api_kind_of(const bs_req_t *req)
{
    const char *p = req->route->pattern; /* "/v1/<plural>..." */
    if (strncmp(p, "/v1/", 4) != 0)
        return NULL;
    p += 4;
    size_t n = strcspn(p, "/");
    for (const bs__api_kind_t *k = bs__api_kinds; k->kind; k++)
        if (strlen(k->plural) == n && strncmp(k->plural, p, n) == 0)
            return k;
    return NULL;
}

int bs__api_resources_rebuild(bs_app_t *app, bs_err_t *err)
{
    int rc = 0;
    for (const bs__api_kind_t *k = bs__api_kinds; k->kind; k++)
        if (k->rebuild) {
            bs_err_t e;
            int r = k->rebuild(app, &e);
            if (r && !rc) {
                rc = r;
                if (err)
                    *err = e;
            }
        }
    return rc;
}

static const char *outcome_name(bs_resource_outcome_t o)
{
    return o == BS_RESOURCE_CREATED ? "created" : o == BS_RESOURCE_UPDATED ? "updated" : "unchanged";
}

/* The resource's JSON object: kind, name, tenant, spec (redacted), generation, times,
 * status (live, from the kind). */
static void render(bs_app_t *app, const bs__api_kind_t *k, const bs_resource_t *r,
                   const char *outcome, bs_buf_t *b)
{
    bs_jw_obj_begin(b);
    bs_jw_key(b, "kind");
    bs_jw_str(b, k->kind);
    bs_jw_key(b, "name");
    bs_jw_str(b, r->name);
    bs_jw_key(b, "tenant");
    bs_jw_str(b, r->tenant);
    bs_jw_key(b, "spec");
    /* Stored normalised (cJSON's own print): parsed again only to be redacted. */
    cJSON *spec = k->redact ? cJSON_Parse(r->spec) : NULL;
    if (spec)
        k->redact(spec);
    char *txt = spec ? cJSON_PrintUnformatted(spec) : NULL;
    if (txt)
        bs_jw_raw(b, txt, strlen(txt));
    else
        bs_jw_raw(b, r->spec, strlen(r->spec));
    free(txt);
    cJSON_Delete(spec);
    bs_jw_key(b, "generation");
    bs_jw_int(b, r->generation);
    bs_jw_key(b, "created_at");
    bs_jw_time(b, r->created_at);
    bs_jw_key(b, "updated_at");
    bs_jw_time(b, r->updated_at);
    bs_jw_key(b, "created_by");
    bs_jw_str(b, r->created_by);
    bs_jw_key(b, "updated_by");
    bs_jw_str(b, r->updated_by);
    if (outcome) {
        bs_jw_key(b, "outcome");
        bs_jw_str(b, outcome);
    }
    if (k->status) {
        cJSON *st = cJSON_CreateObject();
        if (st) {
            k->status(app, r->tenant, r->name, r->spec, st);
            char *s = cJSON_PrintUnformatted(st);
            if (s) {
                bs_jw_key(b, "status");
                bs_jw_raw(b, s, strlen(s));
                free(s);
            }
            cJSON_Delete(st);
        }
    }
    bs_jw_obj_end(b);
}

typedef struct {
    bs_app_t *app;
    const bs__api_kind_t *kind;
    bs_buf_t *b;
    const char *outcome;
    int n, limit;
    char last[64];
} render_ctx_t;

static int render_cb(const bs_resource_t *r, void *ud)
{
    render_ctx_t *c = ud;
    if (c->limit && c->n >= c->limit) {
        c->n++;
        return 1;
    }
    render(c->app, c->kind, r, c->outcome, c->b);
    snprintf(c->last, sizeof c->last, "%s", r->name);
    c->n++;
    return 0;
}

/* The spec of a PUT body: the object itself, or the "spec" of {kind, name, spec}. */
static const cJSON *body_spec(bs_req_t *req, const bs__api_kind_t *k, const char *name, cJSON *j,
                              bs_err_t *err)
{
    if (!cJSON_IsObject(j)) {
        bs_err_set(err, BS_EINVAL, "body must be a JSON object (the %s's spec)", k->kind);
        return NULL;
    }
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(j, "spec");
    if (!spec)
        return j;
    if (!cJSON_IsObject(spec)) {
        bs_err_setf(err, BS_EINVAL, "spec", "spec must be an object");
        return NULL;
    }
    static const char *const allowed[] = {"kind", "name", "spec", "apiVersion", "metadata", NULL};
    if (bs_json_reject_unknown(j, allowed, err))
        return NULL;
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(j, "kind");
    if (kind && (!cJSON_IsString(kind) || strcmp(kind->valuestring, k->kind) != 0)) {
        bs_err_setf(err, BS_EINVAL, "kind", "kind must be '%s' on this path", k->kind);
        return NULL;
    }
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(j, "name");
    if (n && (!cJSON_IsString(n) || strcmp(n->valuestring, name) != 0)) {
        bs_err_setf(err, BS_EINVAL, "name", "name must be '%s', the name in the path", name);
        return NULL;
    }
    (void)req;
    return spec;
}

int bs__api_query_bool(bs_req_t *req, const char *name, int *out)
{
    const char *v = bs_req_query(req, name);
    *out = 0;
    if (!v)
        return 0;
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0 || strcmp(v, "") == 0)
        *out = 1;
    else if (strcmp(v, "false") != 0 && strcmp(v, "0") != 0) {
        bs_resp_errorf(req, BS_EINVAL, name, "%s must be true or false", name);
        return -1;
    }
    return 0;
}

typedef struct {
    int found;
    char *spec;
    int64_t generation, created_at, updated_at;
    char created_by[64];
} stored_t;

static int stored_cb(const bs_resource_t *r, void *ud)
{
    stored_t *s = ud;
    s->found = 1;
    s->spec = strdup(r->spec);
    s->generation = r->generation;
    s->created_at = r->created_at;
    s->updated_at = r->updated_at;
    snprintf(s->created_by, sizeof s->created_by, "%s", r->created_by);
    return 1;
}

/* ?dry_run=true: the object as the write of spec would leave it (its outcome, generation
 * and times included); nothing is written. Without the kind's status: that is the live
 * state of what is stored. */
static void respond_dry_run(bs_req_t *req, const bs__api_kind_t *k, const char *name,
                            const char *spec)
{
    bs_app_t *app = APP(req);
    bs_err_t err;
    stored_t cur = {0};
    int rc = bs_resources_get(app->meta, req->who.tenant, k->kind, name, stored_cb, &cur, &err);
    if (rc == 0 && !cur.spec)
        rc = bs_err_set(&err, BS_ENOMEM, "out of memory");
    if (rc && rc != BS_ENOTFOUND) {
        free(cur.spec);
        return bs_resp_error(req, &err);
    }
    int same = cur.found && strcmp(cur.spec, spec) == 0;
    int64_t now = bs_time_wall_ms();
    bs_resource_t r = {.tenant = req->who.tenant,
                       .kind = k->kind,
                       .name = name,
                       .spec = spec,
                       .generation = !cur.found ? 1 : same ? cur.generation : cur.generation + 1,
                       .created_at = cur.found ? cur.created_at : now,
                       .updated_at = same ? cur.updated_at : now,
                       .created_by = cur.found ? cur.created_by : req->who.key_id,
                       .updated_by = req->who.key_id};
    bs__api_kind_t plain = *k;
    plain.status = NULL;
    bs_buf_t b;
    bs_buf_init(&b);
    render(app, &plain, &r, !cur.found ? "created" : same ? "unchanged" : "updated", &b);
    bs_resp_header(req, "X-Dry-Run", "true");
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
    free(cur.spec);
}

void bs__api_resource_write(bs_req_t *req, const bs__api_kind_t *k, const char *name,
                            const cJSON *spec, int dry_run, int64_t expect_generation)
{
    bs_app_t *app = APP(req);
    bs_err_t err;
    bs_err_clear(&err);
    cJSON *norm = NULL;
    if (k->validate(app, &req->who, name, spec, &norm, &err) != 0)
        return bs_resp_error(req, &err);
    char *txt = cJSON_PrintUnformatted(norm);
    cJSON_Delete(norm);
    if (!txt)
        return bs_resp_errorf(req, BS_ENOMEM, NULL, "out of memory");
    if (dry_run) {
        respond_dry_run(req, k, name, txt);
        free(txt);
        return;
    }
    /* What the resource needs exists before it is stored: a refusal (JetStream out of
     * storage for the topic) stores nothing, rather than a resource its replica lacks. */
    bs_resource_outcome_t outcome;
    int64_t gen;
    int rc = k->prepare ? k->prepare(app, req->who.tenant, name, txt, &err) : 0;
    if (rc == 0)
        rc = bs_resources_put(app->meta, req->who.tenant, k->kind, name, txt, req->who.key_id,
                              expect_generation, &outcome, &gen, &err);
    free(txt);
    if (rc)
        return bs_resp_error(req, &err);
    if (outcome != BS_RESOURCE_UNCHANGED && bs_changes_refresh(app->changes, BS_RESOURCES_SCOPE, &err))
        return bs_resp_error(req, &err);
    bs_buf_t b;
    bs_buf_init(&b);
    render_ctx_t c = {app, k, &b, outcome_name(outcome), 0, 0, ""};
    rc = bs_resources_get(app->meta, req->who.tenant, k->kind, name, render_cb, &c, &err);
    if (rc) {
        bs_buf_free(&b);
        return bs_resp_error(req, &err);
    }
    bs_resp_json(req, outcome == BS_RESOURCE_CREATED ? 201 : 200, &b);
    bs_buf_free(&b);
}

void bs__api_resource_put(bs_req_t *req)
{
    const bs__api_kind_t *k = bs__api_kind_of(req);
    if (!k)
        return bs_resp_errorf(req, BS_EINTERNAL, NULL, "route without a kind");
    const char *name = bs_req_param(req, "name");
    if (!bs_resources_valid_name(name))
        return bs_resp_errorf(req, BS_EINVAL, "name",
                              "%s name must match [a-z0-9][a-z0-9_-]{0,62}, got '%.64s'", k->kind,
                              name);
    int dry_run;
    if (bs__api_query_bool(req, "dry_run", &dry_run) < 0)
        return;
    bs_err_t err;
    bs_err_clear(&err);
    cJSON *j = bs_req_json(req, &err);
    if (!j)
        return bs_resp_error(req, &err);
    const cJSON *spec = body_spec(req, k, name, j, &err);
    if (!spec)
        return bs_resp_error(req, &err);
    bs__api_resource_write(req, k, name, spec, dry_run, 0);
}

void bs__api_resource_get(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    const bs__api_kind_t *k = bs__api_kind_of(req);
    if (!k)
        return bs_resp_errorf(req, BS_EINTERNAL, NULL, "route without a kind");
    bs_err_t err;
    bs_buf_t b;
    bs_buf_init(&b);
    render_ctx_t c = {app, k, &b, NULL, 0, 0, ""};
    int rc = bs_resources_get(app->meta, req->who.tenant, k->kind, bs_req_param(req, "name"),
                              render_cb, &c, &err);
    if (rc) {
        bs_buf_free(&b);
        return bs_resp_error(req, &err);
    }
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
}

void bs__api_resource_list(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    const bs__api_kind_t *k = bs__api_kind_of(req);
    if (!k)
        return bs_resp_errorf(req, BS_EINTERNAL, NULL, "route without a kind");
    int limit;
    if (bs__api_limit(req, 100, MAX_PAGE, &limit) < 0)
        return;
    bs_err_t err;
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "items");
    bs_jw_arr_begin(&b);
    render_ctx_t c = {app, k, &b, NULL, 0, limit, ""};
    int rc = bs_resources_list(app->meta, req->who.tenant, k->kind, bs_req_query(req, "cursor"),
                               limit + 1, render_cb, &c, &err);
    if (rc < 0) {
        bs_buf_free(&b);
        return bs_resp_error(req, &err);
    }
    bs_jw_page_end(&b, c.n > limit ? c.last : NULL);
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
}

void bs__api_resource_delete(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    const bs__api_kind_t *k = bs__api_kind_of(req);
    if (!k)
        return bs_resp_errorf(req, BS_EINTERNAL, NULL, "route without a kind");
    const char *name = bs_req_param(req, "name");
    bs_err_t err;
    int rc = bs_resources_delete(app->meta, req->who.tenant, k->kind, name, req->who.key_id, &err);
    if (rc == 0 && k->deleted)
        rc = k->deleted(app, req->who.tenant, name, &err);
    if (rc == 0)
        rc = bs_changes_refresh(app->changes, BS_RESOURCES_SCOPE, &err);
    if (rc)
        return bs_resp_error(req, &err);
    bs_resp_empty(req, 204);
}

void bs__api_kinds_list(bs_req_t *req)
{
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "items");
    bs_jw_arr_begin(&b);
    for (const bs__api_kind_t *k = bs__api_kinds; k->kind; k++) {
        bs_jw_obj_begin(&b);
        bs_jw_key(&b, "kind");
        bs_jw_str(&b, k->kind);
        bs_jw_key(&b, "plural");
        bs_jw_str(&b, k->plural);
        bs_jw_key(&b, "path");
        bs_buf_t p;
        bs_buf_init(&p);
        bs_buf_printf(&p, "/v1/%s", k->plural);
        bs_jw_strn(&b, p.data, p.len);
        bs_buf_free(&p);
        bs_jw_key(&b, "summary");
        bs_jw_str(&b, k->summary ? k->summary : "");
        bs_jw_obj_end(&b);
    }
    bs_jw_arr_end(&b);
    bs_jw_obj_end(&b);
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
}
