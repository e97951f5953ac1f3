/* Experiment runs (MLflow-like): params, tags, status and metric series. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/id.h"
#include "base/time.h"
#include "registry/registry_int.h"

#define MAX_METRICS_PER_CALL 10000

static int valid_status(const char *s)
{
    return !strcmp(s, "running") || !strcmp(s, "finished") || !strcmp(s, "failed") ||
           !strcmp(s, "killed");
}

static int scalar_object(const cJSON *o, const char *field, char **out, bs_err_t *err)
{
    if (!o || cJSON_IsNull(o)) {
        *out = NULL;
        return 0;
    }
    if (!cJSON_IsObject(o) || cJSON_GetArraySize(o) > 1000)
        return bs_err_setf(err, BS_EINVAL, field, "%s must be an object with at most 1000 entries", field);
    for (const cJSON *v = o->child; v; v = v->next)
        if (!(cJSON_IsNumber(v) || cJSON_IsString(v) || cJSON_IsBool(v) || cJSON_IsNull(v)))
            return bs_err_setf(err, BS_EINVAL, field, "%s.%.64s must be a string, number or bool",
                               field, v->string);
    *out = cJSON_PrintUnformatted(o);
    return 0;
}

typedef struct {
    bs_buf_t *out;
    bs_registry_t *r;
    int n, limit;
    char last[40];
} run_ctx_t;

typedef struct {
    bs_buf_t *b;
    char key[256];
    int open;
} metric_ctx_t;

static int metric_row(const bs_meta_row_t *row, void *ud)
{
    metric_ctx_t *c = ud;
    const char *key = bs_meta_row_text(row, 0);
    if (!c->open || strcmp(key, c->key) != 0) {
        if (c->open)
            bs_jw_arr_end(c->b);
        bs_jw_key(c->b, key);
        bs_jw_arr_begin(c->b);
        snprintf(c->key, sizeof c->key, "%s", key);
        c->open = 1;
    }
    bs_jw_obj_begin(c->b);
    bs_jw_key(c->b, "value");
    bs_jw_double(c->b, bs_meta_row_double(row, 1));
    bs_jw_key(c->b, "step");
    bs_jw_int(c->b, bs_meta_row_int(row, 2));
    bs_jw_key(c->b, "ts");
    bs_jw_time(c->b, bs_meta_row_int(row, 3));
    bs_jw_obj_end(c->b);
    return 0;
}

static int run_row(const bs_meta_row_t *row, void *ud)
{
    run_ctx_t *c = ud;
    if (c->n == c->limit) {
        c->n++;
        return 1;
    }
    bs_buf_t *b = c->out;
    bs_jw_obj_begin(b);
    bs_jw_key(b, "id");
    bs_jw_str(b, bs_meta_row_text(row, 0));
    bs_jw_key(b, "experiment");
    bs_jw_str(b, bs_meta_row_text(row, 1));
    bs_jw_key(b, "name");
    bs_jw_str(b, bs_meta_row_text(row, 2));
    bs_jw_key(b, "status");
    bs_jw_str(b, bs_meta_row_text(row, 3));
    bs_jw_key(b, "params");
    bs_jw_raw(b, bs_meta_row_text(row, 4), strlen(bs_meta_row_text(row, 4)));
    bs_jw_key(b, "tags");
    bs_jw_raw(b, bs_meta_row_text(row, 5), strlen(bs_meta_row_text(row, 5)));
    bs_jw_key(b, "created_by");
    bs_jw_str(b, bs_meta_row_text(row, 6));
    bs_jw_key(b, "created_at");
    bs_jw_time(b, bs_meta_row_int(row, 7));
    bs_jw_key(b, "updated_at");
    bs_jw_time(b, bs_meta_row_int(row, 8));
    /* Metric series: every logged point, grouped by key, in step order. */
    bs_jw_key(b, "metrics");
    bs_jw_obj_begin(b);
    metric_ctx_t mc = {.b = b};
    bs_val_t arg = BS_TXT(bs_meta_row_text(row, 0));
    bs_meta_query(c->r->meta,
                  "SELECT key, value, step, ts FROM run_metrics WHERE run_id = ? ORDER BY key, step, ts",
                  &arg, 1, metric_row, &mc, NULL);
    if (mc.open)
        bs_jw_arr_end(b);
    bs_jw_obj_end(b);
    bs_jw_obj_end(b);
    snprintf(c->last, sizeof c->last, "%s", bs_meta_row_text(row, 0));
    c->n++;
    return 0;
}

#define RUN_COLS "id, experiment, name, status, params, tags, created_by, created_at, updated_at"

int bs_registry_run_get(bs_registry_t *r, const char *tenant, const char *id, bs_buf_t *out,
                        bs_err_t *err)
{
    run_ctx_t c = {.out = out, .r = r, .limit = 1};
    bs_val_t args[] = {BS_TXT(id), BS_TXT(tenant)};
    int rc = bs_meta_query(r->meta, "SELECT " RUN_COLS " FROM runs WHERE id = ? AND tenant = ?", args,
                           2, run_row, &c, err);
    if (rc)
        return rc;
    if (!c.n)
        return bs_err_setf(err, BS_ENOTFOUND, "id", "no run '%.64s'", id);
    return 0;
}

int bs_registry_run_list(bs_registry_t *r, const char *tenant, const char *experiment,
                         const char *cursor, int limit, bs_buf_t *out, bs_err_t *err)
{
    run_ctx_t c = {.out = out, .r = r, .limit = limit};
    bs_jw_obj_begin(out);
    bs_jw_key(out, "items");
    bs_jw_arr_begin(out);
    bs_val_t args[] = {BS_TXT(tenant), BS_TXT(experiment), BS_TXT(experiment), BS_TXT(cursor),
                       BS_TXT(cursor), BS_INT(limit + 1)};
    int rc = bs_meta_query(r->meta,
                           "SELECT " RUN_COLS " FROM runs WHERE tenant = ? AND (? IS NULL OR experiment = ?)"
                           " AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?",
                           args, 6, run_row, &c, err);
    if (rc)
        return rc;
    bs_jw_page_end(out, c.n > limit ? c.last : NULL);
    return 0;
}

int bs_registry_run_create(bs_registry_t *r, const bs_principal_t *who, const cJSON *body,
                           bs_buf_t *out, bs_err_t *err)
{
    static const char *const allowed[] = {"experiment", "name", "params", "tags", "status", NULL};
    if (!cJSON_IsObject(body))
        return bs_err_set(err, BS_EINVAL, "body must be a JSON object");
    if (bs_json_reject_unknown(body, allowed, err))
        return err->code;
    const char *exp = NULL, *name = NULL, *status = "running";
    if (bs_json_get_str(body, "experiment", 1, &exp, err) < 0 ||
        bs_json_get_str(body, "name", 0, &name, err) < 0 ||
        bs_json_get_str(body, "status", 0, &status, err) < 0)
        return err->code;
    if (!exp[0] || strlen(exp) > 256)
        return bs_err_setf(err, BS_EINVAL, "experiment", "experiment must be 1-256 bytes");
    if (name && strlen(name) > 256)
        return bs_err_setf(err, BS_EINVAL, "name", "name must be at most 256 bytes");
    if (!valid_status(status))
        return bs_err_setf(err, BS_EINVAL, "status", "status must be running, finished, failed or killed");
    char *params = NULL, *tags = NULL;
    int rc = scalar_object(cJSON_GetObjectItemCaseSensitive(body, "params"), "params", &params, err);
    if (!rc)
        rc = scalar_object(cJSON_GetObjectItemCaseSensitive(body, "tags"), "tags", &tags, err);
    if (rc)
        goto done;
    char id[40];
    int64_t now = bs_time_wall_ms();
    if ((rc = bs_meta_tx_begin(r->meta, err)))
        goto done;
    bs_uuid7_ordered(id); /* under the store's lock: id order is commit order */
    bs_val_t args[] = {BS_TXT(id),     BS_TXT(who->tenant), BS_TXT(exp),
                       BS_TXT(name ? name : id), BS_TXT(status), BS_TXT(params ? params : "{}"),
                       BS_TXT(tags ? tags : "{}"), BS_TXT(who->key_id), BS_INT(now), BS_INT(now)};
    rc = bs_meta_exec(r->meta,
                      "INSERT INTO runs (id, tenant, experiment, name, status, params, tags, created_by,"
                      " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                      args, 10, NULL, err);
    if (!rc)
        rc = bs_registry_run_get(r, who->tenant, id, out, err);
    if (!rc) {
        char res[64];
        snprintf(res, sizeof res, "runs/%s", id);
        rc = bs__registry_audit(r, who, "run.create", res, NULL, out->data, err);
    }
    if (rc)
        bs_meta_tx_rollback(r->meta);
    else
        rc = bs_meta_tx_commit(r->meta, err);
done:
    cJSON_free(params);
    cJSON_free(tags);
    return rc;
}

int bs_registry_run_update(bs_registry_t *r, const bs_principal_t *who, const char *id,
                           const cJSON *body, bs_buf_t *out, bs_err_t *err)
{
    static const char *const allowed[] = {"status", "params", "tags", "name", NULL};
    if (!cJSON_IsObject(body))
        return bs_err_set(err, BS_EINVAL, "body must be a JSON object");
    if (bs_json_reject_unknown(body, allowed, err))
        return err->code;
    const char *status = NULL, *name = NULL;
    if (bs_json_get_str(body, "status", 0, &status, err) < 0 ||
        bs_json_get_str(body, "name", 0, &name, err) < 0)
        return err->code;
    if (status && !valid_status(status))
        return bs_err_setf(err, BS_EINVAL, "status", "status must be running, finished, failed or killed");
    char *params = NULL, *tags = NULL;
    int rc = scalar_object(cJSON_GetObjectItemCaseSensitive(body, "params"), "params", &params, err);
    if (!rc)
        rc = scalar_object(cJSON_GetObjectItemCaseSensitive(body, "tags"), "tags", &tags, err);
    if (rc)
        goto done;
    bs_buf_t before;
    bs_buf_init(&before);
    if ((rc = bs_meta_tx_begin(r->meta, err)))
        goto done;
    if ((rc = bs_registry_run_get(r, who->tenant, id, &before, err)))
        goto rollback;
    /* params and tags merge into what the run has (json_patch), like MLflow's log_params. */
    bs_val_t args[] = {BS_TXT(status), BS_TXT(status), BS_TXT(name),   BS_TXT(name),
                       BS_TXT(params), BS_TXT(params), BS_TXT(tags),   BS_TXT(tags),
                       BS_INT(bs_time_wall_ms()), BS_TXT(id), BS_TXT(who->tenant)};
    /* PostgreSQL: jsonb || is json_patch for objects of scalars (what scalar_object
     * admits), and stripping nulls is the patch's null-deletes-the-key. */
    if ((rc = bs_meta_exec(r->meta,
                           bs_meta_dialect(r->meta) == BS_META_POSTGRES
                               ? "UPDATE runs SET status = CASE WHEN ? IS NULL THEN status ELSE ? END,"
                                 " name = CASE WHEN ? IS NULL THEN name ELSE ? END,"
                                 " params = CASE WHEN ? IS NULL THEN params ELSE"
                                 "  jsonb_strip_nulls(params::jsonb || CAST(? AS jsonb))::text END,"
                                 " tags = CASE WHEN ? IS NULL THEN tags ELSE"
                                 "  jsonb_strip_nulls(tags::jsonb || CAST(? AS jsonb))::text END,"
                                 " updated_at = ? WHERE id = ? AND tenant = ?"
                               : "UPDATE runs SET status = CASE WHEN ? IS NULL THEN status ELSE ? END,"
                                 " name = CASE WHEN ? IS NULL THEN name ELSE ? END,"
                                 " params = CASE WHEN ? IS NULL THEN params ELSE json_patch(params, ?) END,"
                                 " tags = CASE WHEN ? IS NULL THEN tags ELSE json_patch(tags, ?) END,"
                                 " updated_at = ? WHERE id = ? AND tenant = ?",
                           args, 11, NULL, err)))
        goto rollback;
    if ((rc = bs_registry_run_get(r, who->tenant, id, out, err)))
        goto rollback;
    char res[64];
    snprintf(res, sizeof res, "runs/%s", id);
    if ((rc = bs__registry_audit(r, who, "run.update", res, before.data, out->data, err)))
        goto rollback;
    rc = bs_meta_tx_commit(r->meta, err);
    bs_buf_free(&before);
    goto done;
rollback:
    bs_meta_tx_rollback(r->meta);
    bs_buf_free(&before);
done:
    cJSON_free(params);
    cJSON_free(tags);
    return rc;
}

static int add_metric(bs_registry_t *r, const char *id, const cJSON *m, int i, int64_t now,
                      bs_err_t *err)
{
    char field[48];
    snprintf(field, sizeof field, "metrics[%d]", i);
    if (!cJSON_IsObject(m))
        return bs_err_setf(err, BS_EINVAL, field, "%s must be an object {key, value, step?, ts?}", field);
    const char *key = NULL, *ts = NULL;
    double value;
    int64_t step = 0, ts_ms = now;
    if (bs_json_get_str(m, "key", 1, &key, err) < 0 || bs_json_get_double(m, "value", 1, &value, err) < 0 ||
        bs_json_get_int(m, "step", 0, INT64_MIN / 2, INT64_MAX / 2, &step, err) < 0) {
        char why[256];
        snprintf(why, sizeof why, "%s", err->msg);
        return bs_err_setf(err, BS_EINVAL, field, "%s: %s", field, why);
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(m, "ts");
    if (t && cJSON_IsNumber(t)) {
        ts_ms = (int64_t)t->valuedouble;
    } else if (t && cJSON_IsString(t)) {
        ts = t->valuestring;
        if (bs_time_parse_rfc3339(ts, &ts_ms) != 0)
            return bs_err_setf(err, BS_EINVAL, field, "%s.ts must be RFC 3339 or milliseconds", field);
    }
    if (!key[0] || strlen(key) > 250)
        return bs_err_setf(err, BS_EINVAL, field, "%s.key must be 1-250 bytes", field);
    bs_val_t args[] = {BS_TXT(id), BS_TXT(key), BS_DBL(value), BS_INT(step), BS_INT(ts_ms)};
    return bs_meta_exec(r->meta, "INSERT INTO run_metrics (run_id, key, value, step, ts) VALUES (?,?,?,?,?)",
                        args, 5, NULL, err);
}

int bs_registry_run_log_metrics(bs_registry_t *r, const bs_principal_t *who, const char *id,
                                const cJSON *body, bs_buf_t *out, bs_err_t *err)
{
    const cJSON *list = body;
    if (cJSON_IsObject(body) && cJSON_GetObjectItemCaseSensitive(body, "metrics"))
        list = cJSON_GetObjectItemCaseSensitive(body, "metrics");
    int single = cJSON_IsObject(list);
    if (!single && !cJSON_IsArray(list))
        return bs_err_setf(err, BS_EINVAL, "metrics",
                           "body must be {key, value, step?, ts?}, {\"metrics\": [...]} or an array");
    int n = single ? 1 : cJSON_GetArraySize(list);
    if (n > MAX_METRICS_PER_CALL)
        return bs_err_setf(err, BS_ETOOBIG, "metrics", "%d metric points in one call, the limit is %d",
                           n, MAX_METRICS_PER_CALL);
    int rc = bs_meta_tx_begin(r->meta, err);
    if (rc)
        return rc;
    int64_t found = 0;
    {
        bs_buf_t tmp;
        bs_buf_init(&tmp);
        found = bs_registry_run_get(r, who->tenant, id, &tmp, err) == 0;
        bs_buf_free(&tmp);
    }
    if (!found) {
        bs_meta_tx_rollback(r->meta);
        return bs_err_setf(err, BS_ENOTFOUND, "id", "no run '%.64s'", id);
    }
    int64_t now = bs_time_wall_ms();
    if (single) {
        rc = add_metric(r, id, list, 0, now, err);
    } else {
        int i = 0;
        for (const cJSON *m = list->child; m && !rc; m = m->next, i++)
            rc = add_metric(r, id, m, i, now, err);
    }
    if (!rc) {
        bs_val_t args[] = {BS_INT(now), BS_TXT(id)};
        rc = bs_meta_exec(r->meta, "UPDATE runs SET updated_at = ? WHERE id = ?", args, 2, NULL, err);
    }
    if (rc) {
        bs_meta_tx_rollback(r->meta);
        return rc;
    }
    rc = bs_meta_tx_commit(r->meta, err);
    if (!rc) {
        bs_jw_obj_begin(out);
        bs_jw_key(out, "run_id");
        bs_jw_str(out, id);
        bs_jw_key(out, "logged");
        bs_jw_int(out, n);
        bs_jw_obj_end(out);
    }
    return rc;
}
