/* The Endpoint kind's hooks (kinds.c) for the generic resource handlers — validation and
 * normalisation through serving/endpoints, the tenant's system topics made before the first
 * endpoint is stored, the live status (what alias routes resolve to now, the revision this
 * replica routes by), the snapshot's rebuild — and the two routes of its own: the revision
 * history (GET /v1/endpoints/{name}/revisions) and a rollback to an earlier revision (POST
 * /v1/endpoints/{name}/rollback), which puts that revision's spec again through the PUT path
 * (validated against today's registry) as a new revision. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "serving/endpoints.h"
#include "store/resources.h"

#define SYSTEM_ACTOR "system:endpoints"
/* The system topics of a tenant with endpoints (the prediction log is durable within a
 * second, feedback on acknowledgement). */
#define PREDICTIONS_TOPIC "predictions"
#define PREDICTIONS_SPEC "{\"sync\":\"1s\",\"retention\":{\"max_age\":\"7d\"}}"
#define FEEDBACK_TOPIC "feedback"
#define FEEDBACK_SPEC "{\"sync\":\"always\",\"retention\":{\"max_age\":\"30d\"}}"

int bs__api_endpoint_validate(bs_app_t *app, const bs_principal_t *who, const char *name,
                              const cJSON *spec, cJSON **out, bs_err_t *err)
{
    return bs_endpoint_spec_normalise(app->endpoints, who->tenant, name, spec, out, err);
}

int bs__api_endpoint_prepare(bs_app_t *app, const char *tenant, const char *name, const char *spec,
                             bs_err_t *err)
{
    (void)name;
    (void)spec;
    if (!app->log)
        return 0;
    int rc = bs__api_topic_ensure_spec(app, tenant, PREDICTIONS_TOPIC, PREDICTIONS_SPEC,
                                       SYSTEM_ACTOR, err);
    if (rc == 0)
        rc = bs__api_topic_ensure_spec(app, tenant, FEEDBACK_TOPIC, FEEDBACK_SPEC, SYSTEM_ACTOR,
                                       err);
    return rc;
}

static void target_status(bs_app_t *app, const bs_endpoint_t *ep, const bs_endpoint_route_t *r,
                          int shadow, cJSON *arr)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return;
    cJSON_AddStringToObject(o, "name", r->name);
    if (r->alias[0])
        cJSON_AddStringToObject(o, "alias", r->alias);
    int version = 0, approved = 0;
    bs_err_t err;
    if (bs_serving_resolve(app->serving, ep->tenant, ep->model, r->version,
                           r->version > 0 ? NULL : r->alias, &version, &approved, &err) == 0) {
        cJSON_AddNumberToObject(o, "version", version);
        cJSON_AddBoolToObject(o, "approved", approved > 0);
    } else {
        /* e.g. the alias was deleted since: the route answers 404 until it is fixed */
        cJSON_AddNullToObject(o, "version");
        cJSON_AddStringToObject(o, "error", err.msg);
    }
    if (shadow)
        cJSON_AddNumberToObject(o, "fraction", r->fraction);
    else
        cJSON_AddNumberToObject(o, "weight", r->weight);
    cJSON_AddItemToArray(arr, o);
}

void bs__api_endpoint_status(bs_app_t *app, const char *tenant, const char *name, const char *spec,
                             cJSON *status)
{
    (void)spec;
    const bs_endpoint_t *ep = app->endpoints ? bs_endpoints_get(app->endpoints, tenant, name) : NULL;
    if (!ep) {
        /* stored but not routed here yet (another replica's write before this one rebuilt) */
        cJSON_AddNullToObject(status, "revision");
        return;
    }
    cJSON_AddNumberToObject(status, "revision", (double)ep->generation);
    cJSON *routes = cJSON_AddArrayToObject(status, "routes");
    cJSON *shadow = cJSON_AddArrayToObject(status, "shadow");
    for (int i = 0; routes && i < ep->n_routes; i++)
        target_status(app, ep, &ep->routes[i], 0, routes);
    for (int i = 0; shadow && i < ep->n_shadows; i++)
        target_status(app, ep, &ep->shadows[i], 1, shadow);
    if (ep->policy == BS_ENDPOINT_THOMPSON && routes) {
        cJSON *arms = cJSON_AddArrayToObject(status, "arms");
        for (int i = 0; arms && i < ep->n_routes; i++) {
            int64_t s, f;
            bs_endpoint_arm(ep, i, &s, &f);
            cJSON *a = cJSON_CreateObject();
            if (!a)
                break;
            cJSON_AddStringToObject(a, "name", ep->routes[i].name);
            cJSON_AddNumberToObject(a, "successes", (double)s);
            cJSON_AddNumberToObject(a, "failures", (double)f);
            cJSON_AddItemToArray(arms, a);
        }
    }
}

int bs__api_endpoint_rebuild(bs_app_t *app, bs_err_t *err)
{
    return app->endpoints ? bs_endpoints_rebuild(app->endpoints, err) : 0;
}

void bs__api_endpoints_metrics(bs_app_t *app, bs_buf_t *b)
{
    if (app->endpoints)
        bs_endpoints_metrics(app->endpoints, b);
}

/* ---- revisions --------------------------------------------------------------------------- */

#define MAX_PAGE 1000

typedef struct {
    bs_buf_t *b;
    int n, limit;
    int64_t last;
} rev_page_t;

static int rev_cb(const bs_resource_revision_t *r, void *ud)
{
    rev_page_t *p = ud;
    if (p->n >= p->limit) {
        p->n++;
        return 1;
    }
    bs_buf_t *b = p->b;
    bs_jw_obj_begin(b);
    bs_jw_key(b, "revision");
    bs_jw_int(b, r->generation);
    bs_jw_key(b, "spec");
    bs_jw_raw(b, r->spec, strlen(r->spec)); /* stored normalised (cJSON's print) */
    bs_jw_key(b, "created_at");
    bs_jw_time(b, r->created_at);
    bs_jw_key(b, "created_by");
    bs_jw_str(b, r->created_by);
    bs_jw_obj_end(b);
    p->last = r->generation;
    p->n++;
    return 0;
}

/* A revision number as a path, query or body gives it: 1..2^53. 0 and *out, or -1. */
static int parse_revision(const char *s, int64_t *out)
{
    int64_t v;
    if (!s || bs__api_parse_offset(s, &v) != 0 || v < 1)
        return -1;
    *out = v;
    return 0;
}

void bs__api_endpoint_revisions(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    const char *name = bs_req_param(req, "name");
    int limit;
    if (bs__api_limit(req, 100, MAX_PAGE, &limit) < 0)
        return;
    int64_t cursor = 0;
    const char *c = bs_req_query(req, "cursor");
    if (c && *c && parse_revision(c, &cursor) < 0)
        return bs_resp_errorf(req, BS_EINVAL, "cursor",
                              "cursor must be a revision number (a next_cursor of this list)");
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "items");
    bs_jw_arr_begin(&b);
    rev_page_t p = {&b, 0, limit, 0};
    bs_err_t err;
    int rc = bs_resources_revisions(app->meta, req->who.tenant, BS_ENDPOINT_KIND, name, cursor,
                                    limit + 1, rev_cb, &p, &err);
    if (rc < 0) {
        bs_buf_free(&b);
        return bs_resp_error(req, &err);
    }
    char next[24];
    snprintf(next, sizeof next, "%lld", (long long)p.last);
    bs_jw_page_end(&b, p.n > limit ? next : NULL);
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
}

/* ---- rollback ---------------------------------------------------------------------------- */

typedef struct {
    int found;
    int64_t generation;
    char *spec;
} pick_t;

static int cur_cb(const bs_resource_t *r, void *ud)
{
    pick_t *p = ud;
    p->found = 1;
    p->generation = r->generation;
    return 1;
}

static int pick_cb(const bs_resource_revision_t *r, void *ud)
{
    pick_t *p = ud;
    p->found = 1;
    p->generation = r->generation;
    p->spec = strdup(r->spec);
    return 1;
}

static const bs__api_kind_t *endpoint_kind(void)
{
    for (const bs__api_kind_t *k = bs__api_kinds; k->kind; k++)
        if (strcmp(k->kind, BS_ENDPOINT_KIND) == 0)
            return k;
    return NULL;
}

void bs__api_endpoint_rollback(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    const bs__api_kind_t *k = endpoint_kind();
    if (!k)
        return bs_resp_errorf(req, BS_EINTERNAL, NULL, "the Endpoint kind is not registered");
    const char *name = bs_req_param(req, "name");
    int dry_run;
    if (bs__api_query_bool(req, "dry_run", &dry_run) < 0)
        return;
    bs_err_t err;
    bs_err_clear(&err);
    int64_t want = 0;
    if (req->body_len > 0) {
        cJSON *j = bs_req_json(req, &err);
        if (!j)
            return bs_resp_error(req, &err);
        if (!cJSON_IsObject(j))
            return bs_resp_errorf(req, BS_EINVAL, NULL,
                                  "body must be {} (the previous revision) or {\"revision\": N}");
        static const char *const allowed[] = {"revision", NULL};
        if (bs_json_reject_unknown(j, allowed, &err))
            return bs_resp_error(req, &err);
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "revision");
        if (r && !cJSON_IsNull(r)) {
            int64_t v;
            if (bs_json_get_int(j, "revision", 1, 1, (int64_t)1 << 53, &v, &err) != 0)
                return bs_resp_errorf(req, BS_EINVAL, "revision",
                                      "revision must be a positive integer (a revision number)");
            want = v;
        }
    }
    pick_t cur = {0};
    int rc = bs_resources_get(app->meta, req->who.tenant, BS_ENDPOINT_KIND, name, cur_cb, &cur,
                              &err);
    if (rc)
        return bs_resp_error(req, &err);
    pick_t target = {0};
    if (want > 0) {
        rc = bs_resources_revision_get(app->meta, req->who.tenant, BS_ENDPOINT_KIND, name, want,
                                       pick_cb, &target, &err);
    } else {
        /* The previous revision: the newest one below the current. */
        rc = bs_resources_revisions(app->meta, req->who.tenant, BS_ENDPOINT_KIND, name,
                                    cur.generation, 1, pick_cb, &target, &err);
        if (rc == 0)
            rc = bs_err_setf(&err, BS_ECONFLICT, "revision",
                             "endpoint '%s' has no revision before %lld to roll back to", name,
                             (long long)cur.generation);
        else if (rc > 0)
            rc = 0;
    }
    if (rc == 0 && target.found && !target.spec)
        rc = bs_err_set(&err, BS_ENOMEM, "out of memory");
    if (rc) {
        free(target.spec);
        return bs_resp_error(req, &err);
    }
    cJSON *spec = cJSON_Parse(target.spec);
    free(target.spec);
    if (!spec)
        return bs_resp_errorf(req, BS_EINTERNAL, NULL, "revision %lld is not JSON",
                              (long long)target.generation);
    /* Validated against today's registry: a version archived (or an alias deleted) since
     * that revision is refused, naming the revision, instead of restoring a policy that
     * cannot serve. */
    cJSON *norm = NULL;
    rc = k->validate(app, &req->who, name, spec, &norm, &err);
    cJSON_Delete(norm);
    if (rc) {
        char msg[sizeof err.msg], field[sizeof err.field];
        snprintf(msg, sizeof msg, "%s", err.msg);
        snprintf(field, sizeof field, "%s", err.field);
        cJSON_Delete(spec);
        bs_err_setf(&err, rc, field, "revision %lld cannot be restored: %s",
                    (long long)target.generation, msg);
        return bs_resp_error(req, &err);
    }
    /* Against the generation read above: a change that lands in between is a 409, not
     * silently overwritten. */
    bs__api_resource_write(req, k, name, spec, dry_run, cur.generation);
    cJSON_Delete(spec);
}
