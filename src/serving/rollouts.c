/*
 * Progressive rollouts (rollouts.h): the request's validation, the stored plan, the
 * endpoint specs of each step, the one transition function every state change goes
 * through, and the API calls (create, get, list, pause/resume/abort/promote). The
 * controller that advances and rolls back is in rollouts_ctl.c.
 *
 * Design.
 * - The table `rollouts` (migration 13) is the whole state: a replica keeps nothing about a
 *   rollout in memory, so a restart or another replica resumes from the row (state, step,
 *   step_started_at). At most one running or paused rollout per endpoint (a partial unique
 *   index).
 * - base_spec is the endpoint's spec text before the rollout, verbatim: a rollback or an
 *   abort puts exactly it again (a new revision of the endpoint). The spec of step i is
 *   derived from it: the candidate's route (the base's route of the candidate version if it
 *   had one, pinned to the version; else a new route "v<version>") at weight steps[i], the
 *   stable routes (every other route with a weight) scaled proportionally to 100 − steps[i]
 *   by the largest remainder, other fields (shadows, sticky, logging) as in the base.
 *   The last step (100) is the promotion: the routes become the candidate alone — when the
 *   base routed by the alias `champion`, that route at 100 with the alias moved to the
 *   candidate, so the endpoint keeps following the alias; else the candidate's route by
 *   version.
 * - Every transition runs in one metadata transaction: (the controller's) fencing check on
 *   the lease row, the row's update guarded by its state, step and updated_at (so an API
 *   action and a tick that race cannot both win), the alias move, the endpoint spec's put;
 *   then this replica refreshes its resources snapshot, and the others follow through the
 *   change watcher.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/id.h"
#include "base/json.h"
#include "base/log.h"
#include "base/time.h"
#include "registry/registry.h"
#include "serving/rollouts_int.h"
#include "store/changes.h"
#include "store/resources.h"

#define COLS                                                                                       \
    "id, tenant, endpoint, state, spec, base_spec, base_generation, step, step_started_at,"        \
    " last_check, reason, history, created_at, updated_at, created_by"
#define MAX_INTERVAL_MS (30LL * 86400 * 1000)
#define MAX_COUNT 1000000000LL

static const char *const metric_names[] = {"accuracy", "precision", "recall", "f1", "roc_auc",
                                           "log_loss", "mae",       "rmse",   "r2", NULL};

/* ---- rows ------------------------------------------------------------------------------ */

void bs__rollout_row_free(bs__rollout_row_t *row)
{
    if (!row)
        return;
    free(row->spec);
    free(row->base_spec);
    free(row->last_check);
    free(row->reason);
    free(row->history);
    memset(row, 0, sizeof *row);
}

static char *dup_or_null(const bs_meta_row_t *m, int col)
{
    return bs_meta_row_is_null(m, col) ? NULL : strdup(bs_meta_row_text(m, col));
}

static void row_from(const bs_meta_row_t *m, bs__rollout_row_t *row)
{
    memset(row, 0, sizeof *row);
    snprintf(row->id, sizeof row->id, "%s", bs_meta_row_text(m, 0));
    snprintf(row->tenant, sizeof row->tenant, "%s", bs_meta_row_text(m, 1));
    snprintf(row->endpoint, sizeof row->endpoint, "%s", bs_meta_row_text(m, 2));
    snprintf(row->state, sizeof row->state, "%s", bs_meta_row_text(m, 3));
    row->spec = strdup(bs_meta_row_text(m, 4));
    row->base_spec = strdup(bs_meta_row_text(m, 5));
    row->base_generation = bs_meta_row_int(m, 6);
    row->step = bs_meta_row_int(m, 7);
    row->step_started_at = bs_meta_row_int(m, 8);
    row->last_check = dup_or_null(m, 9);
    row->reason = dup_or_null(m, 10);
    row->history = strdup(bs_meta_row_text(m, 11));
    row->created_at = bs_meta_row_int(m, 12);
    row->updated_at = bs_meta_row_int(m, 13);
    snprintf(row->created_by, sizeof row->created_by, "%s", bs_meta_row_text(m, 14));
}

typedef struct {
    bs__rollout_row_t *rows;
    int n, cap;
} rows_t;

static int rows_cb(const bs_meta_row_t *m, void *ud)
{
    rows_t *x = ud;
    if (x->n == x->cap) {
        int cap = x->cap ? x->cap * 2 : 8;
        bs__rollout_row_t *p = realloc(x->rows, (size_t)cap * sizeof *p);
        if (!p)
            return 1;
        x->rows = p;
        x->cap = cap;
    }
    row_from(m, &x->rows[x->n]);
    if (!x->rows[x->n].spec || !x->rows[x->n].base_spec || !x->rows[x->n].history) {
        bs__rollout_row_free(&x->rows[x->n]);
        return 1;
    }
    x->n++;
    return 0;
}

static void rows_free(rows_t *x)
{
    for (int i = 0; i < x->n; i++)
        bs__rollout_row_free(&x->rows[i]);
    free(x->rows);
    x->rows = NULL;
    x->n = x->cap = 0;
}

int bs__rollout_load_running(bs_rollouts_t *r, bs__rollout_row_t **out, int max, bs_err_t *err)
{
    rows_t x = {0};
    bs_val_t a[] = {BS_INT(max)};
    int rc = bs_meta_query(
        r->meta, "SELECT " COLS " FROM rollouts WHERE state = 'running' ORDER BY id LIMIT ?", a, 1,
        rows_cb, &x, err);
    if (rc) {
        rows_free(&x);
        return rc;
    }
    *out = x.rows;
    return x.n;
}

static int load_one(bs_rollouts_t *r, const char *tenant, const char *endpoint, const char *id,
                    bs__rollout_row_t *row, bs_err_t *err)
{
    rows_t x = {0};
    bs_val_t a[] = {BS_TXT(tenant), BS_TXT(endpoint), BS_TXT(id)};
    int rc = bs_meta_query(
        r->meta, "SELECT " COLS " FROM rollouts WHERE tenant = ? AND endpoint = ? AND id = ?", a, 3,
        rows_cb, &x, err);
    if (rc) {
        rows_free(&x);
        return rc;
    }
    if (!x.n) {
        rows_free(&x);
        return bs_err_setf(err, BS_ENOTFOUND, "id", "endpoint '%.63s' has no rollout '%.40s'",
                           endpoint, id);
    }
    *row = x.rows[0];
    free(x.rows);
    return 0;
}

/* ---- the plan -------------------------------------------------------------------------- */

/* A finite number of o[key] into *out (absent: *out untouched, returns 1). */
static int get_number(const cJSON *o, const char *key, const char *field, double lo, double hi,
                      int lo_open, double *out, bs_err_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v))
        return 1;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble > hi ||
        (lo_open ? v->valuedouble <= lo : v->valuedouble < lo))
        return bs_err_setf(err, BS_EINVAL, field, "%s must be a number %s %g and at most %g", field,
                           lo_open ? "above" : "from", lo, hi);
    *out = v->valuedouble;
    return 0;
}

static int get_count(const cJSON *o, const char *key, const char *field, int64_t lo, int64_t hi,
                     int64_t *out, bs_err_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v))
        return 1;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) ||
        v->valuedouble != floor(v->valuedouble) || v->valuedouble < (double)lo ||
        v->valuedouble > (double)hi)
        return bs_err_setf(err, BS_EINVAL, field, "%s must be an integer from %lld to %lld", field,
                           (long long)lo, (long long)hi);
    *out = (int64_t)v->valuedouble;
    return 0;
}

static int reject_unknown(const cJSON *o, const char *const *allowed, const char *prefix,
                          const char *what, bs_err_t *err)
{
    bs_err_t e;
    if (!bs_json_reject_unknown(o, allowed, &e))
        return 0;
    char f[96];
    snprintf(f, sizeof f, "%s%.60s", prefix, e.field);
    return bs_err_setf(err, BS_EINVAL, f, "unknown field '%s'; %s", f, what);
}

/* The request body (stored = 0) or the stored spec (stored = 1: the candidate has its
 * version and route, and "stable" lists the stable routes). */
static int plan_parse(const cJSON *b, int stored, bs__rollout_plan_t *p, bs_err_t *err)
{
    memset(p, 0, sizeof *p);
    p->max_error_rate = p->max_p99_ms = p->max_psi = p->delta = NAN;
    if (!cJSON_IsObject(b))
        return bs_err_setf(err, BS_EINVAL, NULL, "a rollout must be a JSON object");
    static const char *const top[] = {
        "candidate", "steps", "step_interval", "min_requests_per_step", "guards", "stable", NULL};
    static const char *const top_req[] = {
        "candidate", "steps", "step_interval", "min_requests_per_step", "guards", NULL};
    if (reject_unknown(b, stored ? top : top_req, "",
                       "a rollout has candidate, steps, step_interval, min_requests_per_step and "
                       "guards",
                       err))
        return BS_EINVAL;
    int rc;
    /* candidate */
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(b, "candidate");
    if (!cJSON_IsObject(c))
        return bs_err_setf(err, BS_EINVAL, "candidate",
                           "candidate is required: {\"version\": N} or {\"alias\": \"name\"}");
    static const char *const cand_req[] = {"version", "alias", NULL};
    static const char *const cand_st[] = {"version", "alias", "route", NULL};
    if (reject_unknown(c, stored ? cand_st : cand_req, "candidate.",
                       "candidate has version or alias", err))
        return BS_EINVAL;
    int64_t v = 0;
    if ((rc = get_count(c, "version", "candidate.version", 1, MAX_COUNT, &v, err)) < 0)
        return rc;
    p->version = (int)v;
    const cJSON *al = cJSON_GetObjectItemCaseSensitive(c, "alias");
    if (al && !cJSON_IsNull(al)) {
        if (!cJSON_IsString(al) || !al->valuestring[0] || strlen(al->valuestring) > 64)
            return bs_err_setf(err, BS_EINVAL, "candidate.alias",
                               "candidate.alias must be an alias name of 1 to 64 characters");
        snprintf(p->alias, sizeof p->alias, "%s", al->valuestring);
    }
    if (!stored && !!p->version == !!p->alias[0])
        return bs_err_setf(err, BS_EINVAL, "candidate",
                           "candidate names exactly one of version and alias");
    if (stored) {
        const cJSON *rt = cJSON_GetObjectItemCaseSensitive(c, "route");
        if (!p->version || !cJSON_IsString(rt) || !rt->valuestring[0])
            return bs_err_setf(err, BS_EINVAL, "candidate", "stored rollout has no candidate");
        snprintf(p->route, sizeof p->route, "%s", rt->valuestring);
    }
    /* steps */
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(b, "steps");
    if (!cJSON_IsArray(st))
        return bs_err_setf(err, BS_EINVAL, "steps",
                           "steps is required: the candidate's weights in percent, increasing and "
                           "ending at 100, e.g. [5, 25, 50, 100]");
    int n = cJSON_GetArraySize(st);
    if (n < 2 || n > BS__ROLLOUT_MAX_STEPS)
        return bs_err_setf(err, BS_EINVAL, "steps",
                           "steps must have 2 to %d weights (at least one below the final 100), "
                           "got %d",
                           BS__ROLLOUT_MAX_STEPS, n);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, st)
    {
        char f[32];
        snprintf(f, sizeof f, "steps[%d]", i);
        if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) ||
            it->valuedouble < 1 || it->valuedouble > 100)
            return bs_err_setf(err, BS_EINVAL, f, "%s must be an integer percent from 1 to 100", f);
        p->steps[i] = (int)it->valuedouble;
        if (i && p->steps[i] <= p->steps[i - 1])
            return bs_err_setf(err, BS_EINVAL, f, "steps must increase: %s is %d after %d", f,
                               p->steps[i], p->steps[i - 1]);
        i++;
    }
    p->n_steps = n;
    if (p->steps[n - 1] != 100)
        return bs_err_setf(err, BS_EINVAL, "steps", "steps must end at 100 (the promotion), got %d",
                           p->steps[n - 1]);
    /* step_interval, min_requests_per_step */
    const cJSON *iv = cJSON_GetObjectItemCaseSensitive(b, "step_interval");
    const char *ivs = "5m";
    if (iv && !cJSON_IsNull(iv)) {
        if (!cJSON_IsString(iv) || strlen(iv->valuestring) >= sizeof p->interval)
            return bs_err_setf(err, BS_EINVAL, "step_interval",
                               "step_interval must be a duration like \"30s\" or \"5m\"");
        ivs = iv->valuestring;
    }
    if (bs_time_parse_duration(ivs, &p->interval_ms) != 0 || p->interval_ms > MAX_INTERVAL_MS)
        return bs_err_setf(err, BS_EINVAL, "step_interval",
                           "step_interval must be a duration from 0s to 30d like \"30s\" or "
                           "\"5m\", got '%.40s'",
                           ivs);
    snprintf(p->interval, sizeof p->interval, "%s", ivs);
    p->min_requests = 100;
    if ((rc = get_count(b, "min_requests_per_step", "min_requests_per_step", 0, MAX_COUNT,
                        &p->min_requests, err)) < 0)
        return rc;
    /* guards */
    p->guard_min_requests = p->min_requests < BS__ROLLOUT_GUARD_MIN_REQUESTS
                                ? (p->min_requests > 0 ? p->min_requests : 1)
                                : BS__ROLLOUT_GUARD_MIN_REQUESTS;
    p->min_labelled = BS__ROLLOUT_MIN_LABELLED;
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(b, "guards");
    if (g && !cJSON_IsNull(g)) {
        if (!cJSON_IsObject(g))
            return bs_err_setf(err, BS_EINVAL, "guards", "guards must be a JSON object");
        static const char *const gk[] = {"min_requests",       "max_error_rate",
                                         "max_p99_latency_ms", "max_prediction_psi",
                                         "max_metric_drop",    NULL};
        if (reject_unknown(g, gk, "guards.",
                           "guards are min_requests, max_error_rate, max_p99_latency_ms, "
                           "max_prediction_psi and max_metric_drop",
                           err))
            return BS_EINVAL;
        if ((rc = get_count(g, "min_requests", "guards.min_requests", 1, MAX_COUNT,
                            &p->guard_min_requests, err)) < 0 ||
            (rc = get_number(g, "max_error_rate", "guards.max_error_rate", 0, 1, 0,
                             &p->max_error_rate, err)) < 0 ||
            (rc = get_number(g, "max_p99_latency_ms", "guards.max_p99_latency_ms", 0, 1e7, 1,
                             &p->max_p99_ms, err)) < 0 ||
            (rc = get_number(g, "max_prediction_psi", "guards.max_prediction_psi", 0, 1e6, 1,
                             &p->max_psi, err)) < 0)
            return rc;
        const cJSON *md = cJSON_GetObjectItemCaseSensitive(g, "max_metric_drop");
        if (md && !cJSON_IsNull(md)) {
            if (!cJSON_IsObject(md))
                return bs_err_setf(err, BS_EINVAL, "guards.max_metric_drop",
                                   "guards.max_metric_drop must be {\"metric\": \"accuracy\", "
                                   "\"delta\": 0.02}");
            static const char *const mk[] = {"metric", "delta", "min_labelled", NULL};
            if (reject_unknown(md, mk, "guards.max_metric_drop.",
                               "max_metric_drop has metric, delta and min_labelled", err))
                return BS_EINVAL;
            const cJSON *mn = cJSON_GetObjectItemCaseSensitive(md, "metric");
            int known = 0;
            for (int k = 0; cJSON_IsString(mn) && metric_names[k]; k++)
                known |= !strcmp(mn->valuestring, metric_names[k]);
            if (!known)
                return bs_err_setf(err, BS_EINVAL, "guards.max_metric_drop.metric",
                                   "guards.max_metric_drop.metric must be one of accuracy, "
                                   "precision, recall, f1, roc_auc, log_loss, mae, rmse, r2");
            snprintf(p->metric, sizeof p->metric, "%s", mn->valuestring);
            if ((rc = get_number(md, "delta", "guards.max_metric_drop.delta", 0, 1e12, 0, &p->delta,
                                 err)) < 0)
                return rc;
            if (rc == 1)
                return bs_err_setf(err, BS_EINVAL, "guards.max_metric_drop.delta",
                                   "guards.max_metric_drop.delta is required: the largest drop "
                                   "allowed");
            if ((rc = get_count(md, "min_labelled", "guards.max_metric_drop.min_labelled", 1,
                                MAX_COUNT, &p->min_labelled, err)) < 0)
                return rc;
            p->has_metric = 1;
        }
    }
    if (stored) {
        const cJSON *sb = cJSON_GetObjectItemCaseSensitive(b, "stable");
        const cJSON *s;
        cJSON_ArrayForEach(s, sb)
        {
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(s, "name");
            if (cJSON_IsString(nm) && p->n_stable < BS_ENDPOINT_MAX_ROUTES)
                snprintf(p->stable[p->n_stable++], sizeof p->stable[0], "%s", nm->valuestring);
        }
    }
    return 0;
}

int bs__rollout_plan_parse(const char *spec, bs__rollout_plan_t *p, bs_err_t *err)
{
    cJSON *j = cJSON_Parse(spec);
    if (!j)
        return bs_err_set(err, BS_EINVAL, "stored rollout spec is not JSON");
    int rc = plan_parse(j, 1, p, err);
    cJSON_Delete(j);
    return rc;
}

/* A stable route as the stored spec lists it. */
typedef struct {
    char name[64];
    int version; /* resolved at the start (0: an alias that did not resolve) */
    char alias[65];
    int weight;
} stable_t;

/* The stored spec: the plan with every default filled in, the candidate resolved. */
static char *plan_render(const bs__rollout_plan_t *p, const stable_t *st, int n_st)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *c = cJSON_AddObjectToObject(o, "candidate");
    cJSON_AddNumberToObject(c, "version", p->version);
    if (p->alias[0])
        cJSON_AddStringToObject(c, "alias", p->alias);
    cJSON_AddStringToObject(c, "route", p->route);
    cJSON *steps = cJSON_AddArrayToObject(o, "steps");
    for (int i = 0; i < p->n_steps; i++)
        cJSON_AddItemToArray(steps, cJSON_CreateNumber(p->steps[i]));
    cJSON_AddStringToObject(o, "step_interval", p->interval);
    cJSON_AddNumberToObject(o, "min_requests_per_step", (double)p->min_requests);
    cJSON *g = cJSON_AddObjectToObject(o, "guards");
    cJSON_AddNumberToObject(g, "min_requests", (double)p->guard_min_requests);
    if (!isnan(p->max_error_rate))
        cJSON_AddNumberToObject(g, "max_error_rate", p->max_error_rate);
    if (!isnan(p->max_p99_ms))
        cJSON_AddNumberToObject(g, "max_p99_latency_ms", p->max_p99_ms);
    if (!isnan(p->max_psi))
        cJSON_AddNumberToObject(g, "max_prediction_psi", p->max_psi);
    if (p->has_metric) {
        cJSON *md = cJSON_AddObjectToObject(g, "max_metric_drop");
        cJSON_AddStringToObject(md, "metric", p->metric);
        cJSON_AddNumberToObject(md, "delta", p->delta);
        cJSON_AddNumberToObject(md, "min_labelled", (double)p->min_labelled);
    }
    cJSON *sa = cJSON_AddArrayToObject(o, "stable");
    for (int i = 0; i < n_st; i++) {
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "name", st[i].name);
        if (st[i].version)
            cJSON_AddNumberToObject(s, "version", st[i].version);
        else
            cJSON_AddNullToObject(s, "version");
        if (st[i].alias[0])
            cJSON_AddStringToObject(s, "alias", st[i].alias);
        cJSON_AddNumberToObject(s, "weight", st[i].weight);
        cJSON_AddItemToArray(sa, s);
    }
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}

/* ---- the registry, read directly (the controller and the API run off the hot path) ------ */

static int str_row(const bs_meta_row_t *m, void *ud)
{
    snprintf(ud, 16, "%s", bs_meta_row_text(m, 0));
    return 1;
}

static int id_row(const bs_meta_row_t *m, void *ud)
{
    snprintf(ud, 40, "%s", bs_meta_row_text(m, 0));
    return 1;
}

static int int_row(const bs_meta_row_t *m, void *ud)
{
    *(int64_t *)ud = bs_meta_row_int(m, 0);
    return 1;
}

/* The status of tenant's version of model (status[16]); "" when there is none. */
static int version_status(bs_rollouts_t *r, const char *tenant, const char *model, int version,
                          char status[16], bs_err_t *err)
{
    status[0] = 0;
    bs_val_t a[] = {BS_TXT(tenant), BS_TXT(model), BS_INT(version)};
    return bs_meta_query(r->meta,
                         "SELECT v.status FROM model_versions v JOIN models m ON m.id = v.model_id"
                         " WHERE m.tenant = ? AND m.name = ? AND v.version = ?",
                         a, 3, str_row, status, err);
}

/* The version alias points at (0 when none). */
static int alias_version(bs_rollouts_t *r, const char *tenant, const char *model, const char *alias,
                         int *version, bs_err_t *err)
{
    int64_t v = 0;
    bs_val_t a[] = {BS_TXT(tenant), BS_TXT(model), BS_TXT(alias)};
    int rc =
        bs_meta_query(r->meta,
                      "SELECT a.version FROM model_aliases a JOIN models m ON m.id = a.model_id"
                      " WHERE m.tenant = ? AND m.name = ? AND a.alias = ?",
                      a, 3, int_row, &v, err);
    *version = (int)v;
    return rc;
}

/* ---- the endpoint specs of the steps ------------------------------------------------------ */

static const char *str_item(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int int_item(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valueint : 0;
}

static int is_stable(const bs__rollout_plan_t *p, const char *name)
{
    for (int i = 0; name && i < p->n_stable; i++)
        if (!strcmp(p->stable[i], name))
            return 1;
    return 0;
}

static void set_int(cJSON *o, const char *key, int v)
{
    cJSON_DeleteItemFromObjectCaseSensitive(o, key);
    cJSON_AddNumberToObject(o, key, v);
}

/* Weights w[0..n) (sum W > 0) scaled to sum T by the largest remainder (ties: the earlier
 * route), so the stable routes keep their proportions as closely as integers allow. */
static void scale_weights(const int *w, int n, int T, int *out)
{
    int W = 0;
    for (int i = 0; i < n; i++)
        W += w[i];
    int given = 0;
    double rem[BS_ENDPOINT_MAX_ROUTES];
    for (int i = 0; i < n; i++) {
        double exact = W > 0 ? (double)w[i] * T / W : 0;
        out[i] = (int)floor(exact);
        rem[i] = exact - out[i];
        given += out[i];
    }
    while (given < T && W > 0) {
        int best = -1;
        for (int i = 0; i < n; i++)
            if (w[i] > 0 && (best < 0 || rem[i] > rem[best]))
                best = i;
        if (best < 0)
            break;
        out[best]++;
        rem[best] = -1;
        given++;
    }
}

char *bs__rollout_step_spec(bs_rollouts_t *r, const bs__rollout_row_t *row,
                            const bs__rollout_plan_t *p, int step, int *champion, bs_err_t *err)
{
    if (champion)
        *champion = 0;
    if (!r->endpoints) {
        bs_err_set(err, BS_EUNAVAIL, "endpoints are not available on this server");
        return NULL;
    }
    cJSON *base = cJSON_Parse(row->base_spec);
    const cJSON *routes = base ? cJSON_GetObjectItemCaseSensitive(base, "routes") : NULL;
    if (!cJSON_IsArray(routes)) {
        cJSON_Delete(base);
        bs_err_set(err, BS_EINVAL, "the endpoint's spec before the rollout has no routes");
        return NULL;
    }
    cJSON *out = cJSON_CreateArray();
    const cJSON *it;
    if (step >= p->n_steps - 1) { /* promoted */
        const cJSON *champ = NULL;
        cJSON_ArrayForEach(it, routes)
        {
            const char *al = str_item(it, "alias");
            if (al && !strcmp(al, "champion")) {
                champ = it;
                break;
            }
        }
        cJSON *c;
        if (champ && r->registry) {
            c = cJSON_Duplicate(champ, 1);
            if (champion)
                *champion = 1;
        } else {
            c = cJSON_CreateObject();
            cJSON_AddStringToObject(c, "name", p->route);
            cJSON_AddNumberToObject(c, "version", p->version);
        }
        set_int(c, "weight", 100);
        cJSON_AddItemToArray(out, c);
    } else {
        int weight = p->steps[step];
        int w[BS_ENDPOINT_MAX_ROUTES] = {0}, scaled[BS_ENDPOINT_MAX_ROUTES] = {0}, n = 0;
        cJSON_ArrayForEach(it, routes)
        {
            if (is_stable(p, str_item(it, "name")) && n < BS_ENDPOINT_MAX_ROUTES)
                w[n++] = int_item(it, "weight");
        }
        scale_weights(w, n, 100 - weight, scaled);
        int k = 0, placed = 0;
        cJSON_ArrayForEach(it, routes)
        {
            const char *name = str_item(it, "name");
            if (is_stable(p, name) && k < n) {
                cJSON *s = cJSON_Duplicate(it, 1);
                set_int(s, "weight", scaled[k++]);
                cJSON_AddItemToArray(out, s);
            } else if (name && !strcmp(name, p->route) && !placed) {
                cJSON *c = cJSON_Duplicate(it, 1);
                cJSON_DeleteItemFromObjectCaseSensitive(c, "alias");
                set_int(c, "version", p->version);
                set_int(c, "weight", weight);
                cJSON_AddItemToArray(out, c);
                placed = 1;
            }
        }
        if (!placed) {
            cJSON *c = cJSON_CreateObject();
            cJSON_AddStringToObject(c, "name", p->route);
            cJSON_AddNumberToObject(c, "version", p->version);
            cJSON_AddNumberToObject(c, "weight", weight);
            cJSON_AddItemToArray(out, c);
        }
    }
    cJSON_ReplaceItemInObjectCaseSensitive(base, "routes", out);
    /* a shadow of the candidate version would shadow what is routed (and its variant name
     * may be the candidate route's): left out while the candidate is routed */
    cJSON *shadows = cJSON_GetObjectItemCaseSensitive(base, "shadow");
    for (cJSON *sh = shadows ? shadows->child : NULL, *next; sh; sh = next) {
        next = sh->next;
        const char *name = str_item(sh, "name");
        if (int_item(sh, "version") == p->version || (name && !strcmp(name, p->route)))
            cJSON_Delete(cJSON_DetachItemViaPointer(shadows, sh));
    }
    cJSON *norm = NULL;
    char *text = NULL;
    if (bs_endpoint_spec_normalise(r->endpoints, row->tenant, row->endpoint, base, &norm, err) ==
        0) {
        text = cJSON_PrintUnformatted(norm);
        if (!text)
            bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    cJSON_Delete(norm);
    cJSON_Delete(base);
    return text;
}

/* ---- transitions ----------------------------------------------------------------------- */

cJSON *bs__rollout_event(const char *event, int64_t step, int weight, const char *by)
{
    char t[40];
    bs_time_rfc3339(bs_time_wall_ms(), t, sizeof t);
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "at", t);
    cJSON_AddStringToObject(e, "event", event);
    cJSON_AddNumberToObject(e, "step", (double)step);
    cJSON_AddNumberToObject(e, "weight", weight);
    cJSON_AddStringToObject(e, "by", by ? by : "");
    return e;
}

/* history with ev appended, at most BS__ROLLOUT_MAX_HISTORY events (the first — the start —
 * and the newest are kept). */
static char *history_append(const char *history, const cJSON *ev)
{
    cJSON *h = cJSON_Parse(history);
    if (!cJSON_IsArray(h)) {
        cJSON_Delete(h);
        h = cJSON_CreateArray();
    }
    cJSON_AddItemToArray(h, cJSON_Duplicate(ev, 1));
    while (cJSON_GetArraySize(h) > BS__ROLLOUT_MAX_HISTORY)
        cJSON_DeleteItemFromArray(h, 1);
    char *s = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    return s;
}

/* The fencing check: the controller's lease row is still this holding, and stays so until
 * this transaction ends (the UPDATE takes the row's lock, so a takeover waits for it). */
#define FENCE(now)                                                                                 \
    "UPDATE leases SET token = token WHERE name = ? AND owner = ? AND token = ? AND expires_at "   \
    "> " now
static const char *const fence_sql[] = {FENCE(BS__LEASE_NOW_SQLITE), FENCE(BS__LEASE_NOW_PG)};

int bs__rollout_apply(bs_rollouts_t *r, const bs__rollout_row_t *row, const bs__rollout_plan_t *p,
                      const bs__rollout_tr_t *t, bs_err_t *err)
{
    char *history = NULL;
    if (t->event && !(history = history_append(row->history, t->event)))
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    char model[160] = "";
    if (t->move_champion) {
        cJSON *base = cJSON_Parse(row->base_spec);
        const char *m = str_item(base, "model");
        snprintf(model, sizeof model, "%s", m ? m : "");
        cJSON_Delete(base);
    }
    int64_t now = bs_time_wall_ms();
    int64_t updated = now > row->updated_at ? now : row->updated_at + 1;
    int rc = bs_meta_tx_begin(r->meta, err);
    if (rc) {
        free(history);
        return rc;
    }
    int changes = 0;
    if (t->token > 0) {
        bs_val_t a[] = {BS_TXT(BS__ROLLOUT_LEASE), BS_TXT(r->owner), BS_INT(t->token)};
        rc = bs_meta_exec(r->meta, fence_sql[bs_meta_dialect(r->meta) == BS_META_POSTGRES], a, 3,
                          &changes, err);
        if (!rc && changes != 1)
            rc = bs_err_set(err, BS_ECONFLICT,
                            "this replica no longer holds the %s lease (token %lld)",
                            BS__ROLLOUT_LEASE, (long long)t->token);
        if (rc)
            goto fail;
    }
    if (t->check_only) {
        bs_val_t a[] = {BS_TXT(t->last_check), BS_TXT(row->id), BS_TXT(row->state),
                        BS_INT(row->step), BS_INT(row->updated_at)};
        rc = bs_meta_exec(r->meta,
                          "UPDATE rollouts SET last_check = ? WHERE id = ? AND state = ? AND"
                          " step = ? AND updated_at = ?",
                          a, 5, &changes, err);
    } else {
        bs_val_t a[] = {
            BS_TXT(t->state),      BS_INT(t->step),        BS_INT(t->step_started_at),
            BS_TXT(t->last_check), BS_TXT(t->reason),      BS_TXT(history ? history : row->history),
            BS_INT(updated),       BS_TXT(row->id),        BS_TXT(row->state),
            BS_INT(row->step),     BS_INT(row->updated_at)};
        rc = bs_meta_exec(r->meta,
                          "UPDATE rollouts SET state = ?, step = ?, step_started_at = ?,"
                          " last_check = COALESCE(CAST(? AS TEXT), last_check),"
                          " reason = COALESCE(CAST(? AS TEXT), reason), history = ?, updated_at = ?"
                          " WHERE id = ? AND state = ? AND step = ? AND updated_at = ?",
                          a, 11, &changes, err);
    }
    if (!rc && changes != 1)
        rc =
            bs_err_set(err, BS_ECONFLICT, "rollout '%s' changed meanwhile; read it again", row->id);
    if (rc)
        goto fail;
    if (t->move_champion && r->registry && model[0]) {
        bs_principal_t who = {.role = BS_ROLE_DEVELOPER};
        snprintf(who.tenant, sizeof who.tenant, "%s", row->tenant);
        snprintf(who.key_id, sizeof who.key_id, "%s", t->actor ? t->actor : BS__ROLLOUT_ACTOR);
        bs_buf_t tmp;
        bs_buf_init(&tmp);
        rc = bs_registry_alias_set(r->registry, &who, model, "champion", p->version, &tmp, err);
        bs_buf_free(&tmp);
        if (rc)
            goto fail;
    }
    bs_resource_outcome_t outcome = BS_RESOURCE_UNCHANGED;
    if (t->spec &&
        (rc = bs_resources_put(r->meta, row->tenant, BS_ENDPOINT_KIND, row->endpoint, t->spec,
                               t->actor ? t->actor : BS__ROLLOUT_ACTOR, 0, &outcome, NULL, err)))
        goto fail;
    if ((rc = bs_meta_tx_commit(r->meta, err)) != 0) {
        free(history);
        return rc;
    }
    free(history);
    atomic_fetch_add(&r->transitions, t->check_only ? 0 : 1);
    if (outcome != BS_RESOURCE_UNCHANGED && r->changes) {
        bs_err_t e;
        if (bs_changes_refresh(r->changes, BS_RESOURCES_SCOPE, &e) != 0)
            BS_LOG(BS_LOG_WARN, "rollouts", "endpoint refresh after rollout %s failed: %s", row->id,
                   e.msg);
    }
    if (!t->check_only)
        bs__rollouts_metrics_wake(r);
    return 0;
fail:
    bs_meta_tx_rollback(r->meta);
    free(history);
    return rc;
}

/* ---- rendering ------------------------------------------------------------------------- */

static void add_time(cJSON *o, const char *key, int64_t ms)
{
    if (!ms) {
        cJSON_AddNullToObject(o, key);
        return;
    }
    char t[40];
    bs_time_rfc3339(ms, t, sizeof t);
    cJSON_AddStringToObject(o, key, t);
}

static void add_raw(cJSON *o, const char *key, const char *json)
{
    cJSON *v = json ? cJSON_Parse(json) : NULL;
    cJSON_AddItemToObject(o, key, v ? v : cJSON_CreateNull());
}

static void add_copy(cJSON *o, const char *key, const cJSON *from, const char *from_key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(from, from_key);
    cJSON_AddItemToObject(o, key, v ? cJSON_Duplicate(v, 1) : cJSON_CreateNull());
}

/* The candidate's share of the traffic in this state. */
static int current_weight(const bs__rollout_row_t *row, const bs__rollout_plan_t *p)
{
    if (!strcmp(row->state, "promoted"))
        return 100;
    if (strcmp(row->state, "running") && strcmp(row->state, "paused"))
        return 0;
    return row->step >= 0 && row->step < p->n_steps ? p->steps[row->step] : 0;
}

static cJSON *row_json(const bs__rollout_row_t *row)
{
    cJSON *spec = cJSON_Parse(row->spec);
    bs__rollout_plan_t p;
    bs_err_t e;
    if (!spec || plan_parse(spec, 1, &p, &e) != 0)
        memset(&p, 0, sizeof p);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", row->id);
    cJSON_AddStringToObject(o, "endpoint", row->endpoint);
    cJSON_AddStringToObject(o, "state", row->state);
    add_copy(o, "candidate", spec, "candidate");
    add_copy(o, "stable", spec, "stable");
    cJSON_AddNumberToObject(o, "step", (double)row->step);
    add_copy(o, "steps", spec, "steps");
    cJSON_AddNumberToObject(o, "weight", current_weight(row, &p));
    add_copy(o, "step_interval", spec, "step_interval");
    add_copy(o, "min_requests_per_step", spec, "min_requests_per_step");
    add_time(o, "step_started_at", row->step_started_at);
    add_copy(o, "guards", spec, "guards");
    add_raw(o, "last_check", row->last_check);
    if (row->reason)
        cJSON_AddStringToObject(o, "reason", row->reason);
    else
        cJSON_AddNullToObject(o, "reason");
    /* the guard that rolled it back, from the rolled_back event */
    cJSON *hist = cJSON_Parse(row->history);
    const cJSON *ev, *failed = NULL;
    cJSON_ArrayForEach(ev, hist)
    {
        const char *k = str_item(ev, "event");
        if (k && !strcmp(k, "rolled_back"))
            failed = cJSON_GetObjectItemCaseSensitive(ev, "guard");
    }
    if (cJSON_IsString(failed))
        cJSON_AddStringToObject(o, "failed_guard", failed->valuestring);
    else
        cJSON_AddNullToObject(o, "failed_guard");
    cJSON_AddItemToObject(o, "history", hist ? hist : cJSON_CreateArray());
    cJSON_AddNumberToObject(o, "base_generation", (double)row->base_generation);
    add_time(o, "created_at", row->created_at);
    add_time(o, "updated_at", row->updated_at);
    cJSON_AddStringToObject(o, "created_by", row->created_by);
    cJSON_Delete(spec);
    return o;
}

static int render(const bs__rollout_row_t *row, bs_buf_t *out, bs_err_t *err)
{
    cJSON *o = row_json(row);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    bs_buf_puts(out, s);
    free(s);
    return 0;
}

/* ---- the API --------------------------------------------------------------------------- */

bs_rollouts_t *bs_rollouts_new(const bs_rollouts_opts_t *o, bs_err_t *err)
{
    if (!o || !o->meta) {
        bs_err_set(err, BS_EINVAL, "rollouts need the metadata store");
        return NULL;
    }
    bs_rollouts_t *r = calloc(1, sizeof *r);
    if (!r) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    r->meta = o->meta;
    r->monitor = o->monitor;
    r->endpoints = o->endpoints;
    r->changes = o->changes;
    r->registry = o->registry;
    snprintf(r->owner, sizeof r->owner, "%s", o->owner && *o->owner ? o->owner : "basalt");
    r->tick_ms = o->tick_ms > 0 ? o->tick_ms : 1000;
    r->lease_ms = o->lease_ms > 0 ? o->lease_ms : 15000;
    if (r->lease_ms < 30)
        r->lease_ms = 30;
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca; /* the metrics thread waits on the monotonic clock */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    bs_buf_init(&r->metrics);
    return r;
}

int bs_rollouts_start(bs_rollouts_t *r, bs_err_t *err)
{
    return bs__rollouts_ctl_start(r, err);
}

void bs_rollouts_free(bs_rollouts_t *r)
{
    if (!r)
        return;
    bs__rollouts_ctl_stop(r);
    bs_buf_free(&r->metrics);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

typedef struct {
    char *spec;
    int64_t generation;
} resource_copy_t;

static int resource_cb(const bs_resource_t *res, void *ud)
{
    resource_copy_t *c = ud;
    c->spec = strdup(res->spec);
    c->generation = res->generation;
    return 0;
}

static const char *actor_of(const bs_principal_t *who)
{
    return who && who->key_id[0] ? who->key_id : "anonymous";
}

int bs_rollouts_create(bs_rollouts_t *r, const bs_principal_t *who, const char *endpoint,
                       const cJSON *body, bs_buf_t *out, bs_err_t *err)
{
    const char *tenant = who->tenant;
    bs__rollout_plan_t p;
    int rc = plan_parse(body, 0, &p, err);
    if (rc)
        return rc;
    if (!r->monitor || !r->endpoints)
        return bs_err_set(err, BS_EUNAVAIL,
                          "rollouts need endpoints and the monitor (a server with topics)");
    resource_copy_t res = {0};
    if (!bs_resources_valid_name(endpoint) ||
        (rc = bs_resources_get(r->meta, tenant, BS_ENDPOINT_KIND, endpoint, resource_cb, &res,
                               err)) == BS_ENOTFOUND)
        return bs_err_setf(err, BS_ENOTFOUND, "endpoint", "endpoint '%.63s' not found",
                           endpoint ? endpoint : "");
    if (rc)
        return rc;
    if (!res.spec)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    cJSON *base = cJSON_Parse(res.spec);
    char *plan_text = NULL, *step_text = NULL;
    const char *model = str_item(base, "model");
    const cJSON *routes = base ? cJSON_GetObjectItemCaseSensitive(base, "routes") : NULL;
    if (!model || !cJSON_IsArray(routes)) {
        rc = bs_err_set(err, BS_EINVAL, "endpoint '%s' has no model or routes", endpoint);
        goto done;
    }
    const char *policy = str_item(cJSON_GetObjectItemCaseSensitive(base, "policy"), "type");
    if (policy && strcmp(policy, "weighted")) {
        rc = bs_err_setf(err, BS_EINVAL, "endpoint",
                         "endpoint '%s' routes by policy '%s'; a rollout sets weights, so it "
                         "needs the weighted policy",
                         endpoint, policy);
        goto done;
    }
    /* the candidate: an approved version of the endpoint's model */
    if (p.alias[0]) {
        if ((rc = alias_version(r, tenant, model, p.alias, &p.version, err)))
            goto done;
        if (!p.version) {
            rc = bs_err_setf(err, BS_ENOTFOUND, "candidate.alias",
                             "model '%.128s' has no alias '%s'", model, p.alias);
            goto done;
        }
    }
    char status[16];
    if ((rc = version_status(r, tenant, model, p.version, status, err)))
        goto done;
    if (!status[0]) {
        rc = bs_err_setf(err, BS_ENOTFOUND, "candidate.version", "model '%.128s' has no version %d",
                         model, p.version);
        goto done;
    }
    if (strcmp(status, "approved")) {
        rc = bs_err_setf(err, BS_EINVAL, "candidate.version",
                         "version %d of model '%.128s' is %s, not approved; only approved "
                         "versions may be routed",
                         p.version, model, status);
        goto done;
    }
    /* stable routes: every route that does not serve the candidate */
    stable_t st[BS_ENDPOINT_MAX_ROUTES];
    int n_st = 0, stable_weight = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, routes)
    {
        const char *name = str_item(it, "name"), *al = str_item(it, "alias");
        if (!name)
            continue;
        int v = int_item(it, "version");
        if (!v && al && (rc = alias_version(r, tenant, model, al, &v, err)))
            goto done;
        if (v == p.version) {
            if (!p.route[0])
                snprintf(p.route, sizeof p.route, "%s", name);
            continue;
        }
        if (n_st < BS_ENDPOINT_MAX_ROUTES) {
            stable_t *s = &st[n_st++];
            memset(s, 0, sizeof *s);
            snprintf(s->name, sizeof s->name, "%s", name);
            snprintf(s->alias, sizeof s->alias, "%s", al ? al : "");
            s->version = v;
            s->weight = int_item(it, "weight");
            stable_weight += s->weight;
            snprintf(p.stable[p.n_stable++], sizeof p.stable[0], "%s", name);
        }
    }
    if (stable_weight <= 0) {
        rc = bs_err_setf(err, BS_EINVAL, "candidate",
                         "version %d already takes all of endpoint '%s''s traffic; a rollout needs "
                         "stable routes to compare with",
                         p.version, endpoint);
        goto done;
    }
    if (!p.route[0]) { /* a new route: "v<N>", unless a stable route has that name */
        snprintf(p.route, sizeof p.route, "v%d", p.version);
        if (is_stable(&p, p.route))
            snprintf(p.route, sizeof p.route, "candidate");
        if (is_stable(&p, p.route))
            snprintf(p.route, sizeof p.route, "candidate-v%d", p.version);
    }
    if (!(plan_text = plan_render(&p, st, n_st))) {
        rc = bs_err_set(err, BS_ENOMEM, "out of memory");
        goto done;
    }
    bs__rollout_row_t row = {0};
    bs_uuid7(row.id);
    snprintf(row.tenant, sizeof row.tenant, "%s", tenant);
    snprintf(row.endpoint, sizeof row.endpoint, "%s", endpoint);
    row.base_spec = res.spec;
    if (!(step_text = bs__rollout_step_spec(r, &row, &p, 0, NULL, err))) {
        rc = err->code ? err->code : BS_EINVAL;
        goto done;
    }
    /* one transaction: no other rollout is active, the endpoint is still the one read
     * (expect_generation), the row and step 0's spec */
    int64_t now = bs_time_wall_ms();
    cJSON *ev = bs__rollout_event("started", 0, p.steps[0], actor_of(who));
    char *history = history_append("[]", ev);
    cJSON_Delete(ev);
    if (!history) {
        rc = bs_err_set(err, BS_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = bs_meta_tx_begin(r->meta, err))) {
        free(history);
        goto done;
    }
    char active[40] = "";
    bs_val_t qa[] = {BS_TXT(tenant), BS_TXT(endpoint)};
    rc = bs_meta_query(r->meta,
                       "SELECT id FROM rollouts WHERE tenant = ? AND endpoint = ? AND"
                       " state IN ('running', 'paused')",
                       qa, 2, id_row, active, err);
    if (!rc && active[0])
        rc = bs_err_set(err, BS_ECONFLICT,
                        "endpoint '%s' already has an active rollout (%.36s): pause, abort or "
                        "promote it first",
                        endpoint, active);
    if (!rc) {
        bs_val_t a[] = {BS_TXT(row.id),    BS_TXT(tenant),       BS_TXT(endpoint),
                        BS_TXT(plan_text), BS_TXT(res.spec),     BS_INT(res.generation),
                        BS_INT(now),       BS_TXT(history),      BS_INT(now),
                        BS_INT(now),       BS_TXT(actor_of(who))};
        rc = bs_meta_exec(r->meta,
                          "INSERT INTO rollouts (id, tenant, endpoint, state, spec, base_spec,"
                          " base_generation, step, step_started_at, history, created_at,"
                          " updated_at, created_by) VALUES (?, ?, ?, 'running', ?, ?, ?, 0, ?, ?,"
                          " ?, ?, ?)",
                          a, 11, NULL, err);
        if (rc == BS_ECONFLICT)
            bs_err_set(err, BS_ECONFLICT, "endpoint '%s' already has an active rollout", endpoint);
    }
    if (!rc)
        rc = bs_resources_put(r->meta, tenant, BS_ENDPOINT_KIND, endpoint, step_text, actor_of(who),
                              res.generation, NULL, NULL, err);
    if (rc == BS_ECONFLICT && !active[0] && err->field[0])
        bs_err_set(err, BS_ECONFLICT, "endpoint '%s' changed while the rollout started; retry",
                   endpoint);
    free(history);
    if (rc) {
        bs_meta_tx_rollback(r->meta);
        goto done;
    }
    if ((rc = bs_meta_tx_commit(r->meta, err)))
        goto done;
    if (r->changes) {
        bs_err_t e;
        if (bs_changes_refresh(r->changes, BS_RESOURCES_SCOPE, &e) != 0)
            BS_LOG(BS_LOG_WARN, "rollouts", "endpoint refresh after rollout %s started failed: %s",
                   row.id, e.msg);
    }
    bs__rollouts_metrics_wake(r);
    BS_LOG(BS_LOG_INFO, "rollouts", "rollout %s of endpoint %s/%s started: version %d at %d%%",
           row.id, tenant, endpoint, p.version, p.steps[0]);
    rc = bs_rollouts_get(r, tenant, endpoint, row.id, out, err);
done:
    free(plan_text);
    free(step_text);
    cJSON_Delete(base);
    free(res.spec);
    return rc;
}

int bs_rollouts_get(bs_rollouts_t *r, const char *tenant, const char *endpoint, const char *id,
                    bs_buf_t *out, bs_err_t *err)
{
    if (!id || strlen(id) > 36)
        return bs_err_setf(err, BS_ENOTFOUND, "id", "endpoint '%.63s' has no rollout '%.40s'",
                           endpoint, id ? id : "");
    bs__rollout_row_t row;
    int rc = load_one(r, tenant, endpoint, id, &row, err);
    if (rc)
        return rc;
    rc = render(&row, out, err);
    bs__rollout_row_free(&row);
    return rc;
}

int bs_rollouts_list(bs_rollouts_t *r, const char *tenant, const char *endpoint, const char *cursor,
                     int limit, bs_buf_t *out, bs_err_t *err)
{
    if (limit < 1)
        limit = 1;
    if (limit > 1000)
        limit = 1000;
    if (cursor && strlen(cursor) > 36)
        return bs_err_setf(err, BS_EINVAL, "cursor", "cursor must be a next_cursor value");
    rows_t x = {0};
    bs_val_t a[] = {BS_TXT(tenant), BS_TXT(endpoint), BS_TXT(cursor ? cursor : ""),
                    BS_TXT(cursor ? cursor : ""), BS_INT(limit + 1)};
    int rc = bs_meta_query(r->meta,
                           "SELECT " COLS " FROM rollouts WHERE tenant = ? AND endpoint = ? AND"
                           " (CAST(? AS TEXT) = '' OR id < ?) ORDER BY id DESC LIMIT ?",
                           a, 5, rows_cb, &x, err);
    if (rc) {
        rows_free(&x);
        return rc;
    }
    if (!x.n && !cursor) { /* no rollouts: 404 unless the endpoint exists */
        rc = bs_resources_get(r->meta, tenant, BS_ENDPOINT_KIND, endpoint, NULL, NULL, err);
        if (rc == BS_ENOTFOUND)
            return bs_err_setf(err, BS_ENOTFOUND, "endpoint", "endpoint '%.63s' not found",
                               endpoint);
        if (rc)
            return rc;
    }
    bs_buf_puts(out, "{\"items\":[");
    int shown = x.n > limit ? limit : x.n;
    for (int i = 0; i < shown; i++) {
        if (i)
            bs_buf_putc(out, ',');
        if ((rc = render(&x.rows[i], out, err))) {
            rows_free(&x);
            return rc;
        }
    }
    bs_buf_puts(out, "],\"next_cursor\":");
    if (x.n > limit) {
        bs_buf_putc(out, '"');
        bs_buf_puts(out, x.rows[shown - 1].id);
        bs_buf_putc(out, '"');
    } else {
        bs_buf_puts(out, "null");
    }
    bs_buf_putc(out, '}');
    rows_free(&x);
    return 0;
}

int bs_rollouts_action(bs_rollouts_t *r, const bs_principal_t *who, const char *endpoint,
                       const char *id, const char *action, bs_buf_t *out, bs_err_t *err)
{
    const char *tenant = who->tenant;
    if (!id || strlen(id) > 36)
        return bs_err_setf(err, BS_ENOTFOUND, "id", "endpoint '%.63s' has no rollout '%.40s'",
                           endpoint, id ? id : "");
    bs__rollout_row_t row;
    int rc = load_one(r, tenant, endpoint, id, &row, err);
    if (rc)
        return rc;
    bs__rollout_plan_t p;
    if ((rc = bs__rollout_plan_parse(row.spec, &p, err))) {
        bs__rollout_row_free(&row);
        return rc;
    }
    int running = !strcmp(row.state, "running"), paused = !strcmp(row.state, "paused");
    const char *actor = actor_of(who);
    bs__rollout_tr_t t = {.state = row.state,
                          .step = row.step,
                          .step_started_at = row.step_started_at,
                          .actor = actor};
    char *spec = NULL, reason[256];
    cJSON *ev = NULL;
    int weight = p.steps[row.step < p.n_steps ? row.step : 0];
    if (!strcmp(action, "pause")) {
        if (!running)
            rc = bs_err_set(err, BS_ECONFLICT,
                            "rollout %s is %s; only a running rollout can be "
                            "paused",
                            row.id, row.state);
        t.state = "paused";
    } else if (!strcmp(action, "resume")) {
        if (!paused)
            rc = bs_err_set(err, BS_ECONFLICT,
                            "rollout %s is %s; only a paused rollout can be "
                            "resumed",
                            row.id, row.state);
        t.state = "running";
        t.step_started_at = bs_time_wall_ms(); /* the step's window starts again */
        if (!rc && !(spec = bs__rollout_step_spec(r, &row, &p, (int)row.step, NULL, err)))
            rc = err->code ? err->code : BS_EINVAL;
    } else if (!strcmp(action, "abort")) {
        if (!running && !paused)
            rc = bs_err_set(err, BS_ECONFLICT,
                            "rollout %s is %s; only a running or paused "
                            "rollout can be aborted",
                            row.id, row.state);
        t.state = "aborted";
        snprintf(reason, sizeof reason,
                 "aborted by %s at step %lld (%d%%); the endpoint's spec "
                 "from before the rollout is restored",
                 actor, (long long)row.step, weight);
        t.reason = reason;
        if (!(spec = strdup(row.base_spec)))
            rc = bs_err_set(err, BS_ENOMEM, "out of memory");
        weight = 0;
    } else if (!strcmp(action, "promote")) {
        if (!running && !paused)
            rc = bs_err_set(err, BS_ECONFLICT,
                            "rollout %s is %s; only a running or paused "
                            "rollout can be promoted",
                            row.id, row.state);
        t.state = "promoted";
        snprintf(reason, sizeof reason, "promoted by %s at step %lld (%d%%)", actor,
                 (long long)row.step, weight);
        t.reason = reason;
        if (!rc &&
            !(spec = bs__rollout_step_spec(r, &row, &p, p.n_steps - 1, &t.move_champion, err)))
            rc = err->code ? err->code : BS_EINVAL;
        weight = 100;
    } else {
        rc = bs_err_setf(err, BS_EINVAL, "action",
                         "unknown action '%.32s': pause, resume, abort or promote", action);
    }
    if (!rc) {
        const char *event = !strcmp(action, "pause")    ? "paused"
                            : !strcmp(action, "resume") ? "resumed"
                            : !strcmp(action, "abort")  ? "aborted"
                                                        : "promoted";
        ev = bs__rollout_event(event, row.step, weight, actor);
        t.event = ev;
        t.spec = spec;
        rc = bs__rollout_apply(r, &row, &p, &t, err);
    }
    if (!rc) {
        BS_LOG(BS_LOG_INFO, "rollouts", "rollout %s of endpoint %s/%s: %s by %s", row.id, tenant,
               endpoint, action, actor);
        rc = bs_rollouts_get(r, tenant, endpoint, id, out, err);
    }
    cJSON_Delete(ev);
    free(spec);
    bs__rollout_row_free(&row);
    return rc;
}
