/* Models, versions, approvals and aliases; see registry.h. Runs and the audit
 * log live in runs.c and audit.c. */
#include "registry/registry.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "store/changes.h"
#include "base/id.h"
#include "base/time.h"
#include "ml/ml.h"
#include "ml/signature.h"
#include "registry/registry_int.h"

int bs_registry_valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128)
        return 0;
    int dots = 0;
    for (const char *p = s; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return 0;
        dots += *p == '.';
    }
    /* "." and ".." are dot-segments that clients remove from a URL (RFC 3986 §5.2.4): such a
     * model could never be addressed. Any all-dots name is refused alike. */
    return dots < (int)n;
}

static int valid_alias(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return 0;
    int digits = 1;
    for (const char *p = s; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return 0;
        if (*p < '0' || *p > '9')
            digits = 0;
    }
    return !digits;
}

bs_registry_t *bs_registry_new(bs_meta_t *meta, const char *artifacts_dir,
                               bs_blobs_kind_t artifact_store, bs_err_t *err)
{
    bs_registry_t *r = calloc(1, sizeof *r);
    if (!r) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    r->meta = meta;
    r->blobs = bs_blobs_new(artifact_store, meta, artifacts_dir, err);
    if (!r->blobs) {
        free(r);
        return NULL;
    }
    return r;
}

bs_blobs_t *bs_registry_blobs(bs_registry_t *r) { return r->blobs; }

void bs_registry_free(bs_registry_t *r)
{
    if (!r)
        return;
    bs__registry_gc_stop(r);
    bs_blobs_free(r->blobs);
    free(r);
}

void bs_registry_on_change(bs_registry_t *r, void (*fn)(void *ud), void *ud)
{
    r->on_change = fn;
    r->on_change_ud = ud;
}

int bs__registry_commit(bs_registry_t *r, bs_err_t *err)
{
    int rc = bs_changes_bump(r->meta, "registry", err);
    if (rc) {
        bs_meta_tx_rollback(r->meta);
        return rc;
    }
    return bs_meta_tx_commit(r->meta, err);
}

void bs__registry_changed(bs_registry_t *r)
{
    if (r->on_change)
        r->on_change(r->on_change_ud);
}

void bs_registry_on_event(bs_registry_t *r, bs_registry_event_fn fn, void *ud)
{
    r->on_event = fn;
    r->on_event_ud = ud;
}

void bs__registry_event(bs_registry_t *r, const char *tenant, const char *type,
                        const char *subject, const char *data_json)
{
    if (r->on_event && data_json)
        r->on_event(r->on_event_ud, tenant, type, subject, data_json);
}

/* ---- helpers --------------------------------------------------------------------------- */

static int first_text(const bs_meta_row_t *row, void *ud)
{
    bs_buf_t *b = ud;
    bs_buf_puts(b, bs_meta_row_text(row, 0));
    return 1;
}

static int first_int(const bs_meta_row_t *row, void *ud)
{
    *(int64_t *)ud = bs_meta_row_int(row, 0);
    return 1;
}

/* Looks up a model's id by tenant and name into id[40]. BS_ENOTFOUND if absent. */
int bs__registry_model_id(bs_registry_t *r, const char *tenant, const char *name, char *id,
                          bs_err_t *err)
{
    char store[64];
    bs_buf_t b = BS_BUF_ON(store);
    b.len = 0;
    store[0] = '\0';
    bs_val_t args[] = {BS_TXT(tenant), BS_TXT(name)};
    int rc = bs_meta_query(r->meta, "SELECT id FROM models WHERE tenant = ? AND name = ?", args, 2,
                           first_text, &b, err);
    if (rc)
        return rc;
    if (!b.len)
        return bs_err_setf(err, BS_ENOTFOUND, "name", "no model '%.128s'", name);
    snprintf(id, 40, "%s", b.data);
    return 0;
}

/* Validates that a JSON value is an array of strings; writes it (or "[]") to out. */
static int tags_json(const cJSON *tags, const char *field, char **out, bs_err_t *err)
{
    if (!tags || cJSON_IsNull(tags)) {
        *out = strdup("[]");
        return 0;
    }
    if (!cJSON_IsArray(tags) || cJSON_GetArraySize(tags) > 100)
        return bs_err_setf(err, BS_EINVAL, field, "%s must be an array of at most 100 strings", field);
    for (const cJSON *t = tags->child; t; t = t->next)
        if (!cJSON_IsString(t) || strlen(t->valuestring) > 128)
            return bs_err_setf(err, BS_EINVAL, field, "%s must hold strings of at most 128 bytes",
                               field);
    *out = cJSON_PrintUnformatted(tags);
    return *out ? 0 : bs_err_set(err, BS_ENOMEM, "out of memory");
}

/* Validates an object whose values are scalars (numbers only when numeric). */
static int object_json(const cJSON *o, const char *field, int numeric, char **out, bs_err_t *err)
{
    if (!o || cJSON_IsNull(o)) {
        *out = strdup("{}");
        return 0;
    }
    if (!cJSON_IsObject(o) || cJSON_GetArraySize(o) > 1000)
        return bs_err_setf(err, BS_EINVAL, field, "%s must be an object with at most 1000 entries",
                           field);
    for (const cJSON *v = o->child; v; v = v->next) {
        if (numeric && (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)))
            return bs_err_setf(err, BS_EINVAL, field, "%s.%.64s must be a finite number", field,
                               v->string);
        if (!numeric && !(cJSON_IsNumber(v) || cJSON_IsString(v) || cJSON_IsBool(v) || cJSON_IsNull(v)))
            return bs_err_setf(err, BS_EINVAL, field, "%s.%.64s must be a string, number or bool",
                               field, v->string);
    }
    *out = cJSON_PrintUnformatted(o);
    return *out ? 0 : bs_err_set(err, BS_ENOMEM, "out of memory");
}

/* Validates {"enabled"?: bool, "max_batch_size"?: 1..100000, "max_queue_delay_us"?: 0..1000000}
 * (or null: the server's defaults) and writes it as JSON text (NULL for null). */
static int batching_json(const cJSON *o, char **out, bs_err_t *err)
{
    *out = NULL;
    if (!o || cJSON_IsNull(o))
        return 0;
    static const char *const allowed[] = {"enabled", "max_batch_size", "max_queue_delay_us", NULL};
    if (!cJSON_IsObject(o))
        return bs_err_setf(err, BS_EINVAL, "batching",
                           "batching must be an object {enabled, max_batch_size, max_queue_delay_us} or null");
    if (bs_json_reject_unknown(o, allowed, err)) {
        char why[256];
        snprintf(why, sizeof why, "%s", err->msg);
        return bs_err_setf(err, BS_EINVAL, "batching", "batching: %s", why);
    }
    int enabled;
    int64_t v;
    if (bs_json_get_bool(o, "enabled", 0, &enabled, err) < 0 ||
        bs_json_get_int(o, "max_batch_size", 0, 1, 100000, &v, err) < 0 ||
        bs_json_get_int(o, "max_queue_delay_us", 0, 0, 1000000, &v, err) < 0) {
        char why[256];
        snprintf(why, sizeof why, "%s", err->msg);
        return bs_err_setf(err, BS_EINVAL, "batching", "batching: %s", why);
    }
    *out = cJSON_PrintUnformatted(o);
    return *out ? 0 : bs_err_set(err, BS_ENOMEM, "out of memory");
}

/* ---- models ---------------------------------------------------------------------------- */

typedef struct {
    bs_buf_t *out;
    bs_registry_t *r;
    int n, limit;
    char last[160];
} render_ctx_t;

static int render_alias_row(const bs_meta_row_t *row, void *ud)
{
    bs_buf_t *b = ud;
    bs_jw_key(b, bs_meta_row_text(row, 0));
    bs_jw_int(b, bs_meta_row_int(row, 1));
    return 0;
}

/* Columns: id, name, description, tags, require_distinct_approver, created_at, updated_at,
 * created_by, latest version, batching */
#define MODEL_COLS                                                                                 \
    "m.id, m.name, m.description, m.tags, m.require_distinct_approver, m.created_at,"            \
    " m.updated_at, m.created_by,"                                                                 \
    " (SELECT COALESCE(MAX(version),0) FROM model_versions v WHERE v.model_id = m.id), m.batching"

static void render_model(bs_registry_t *r, const bs_meta_row_t *row, bs_buf_t *b)
{
    bs_jw_obj_begin(b);
    bs_jw_key(b, "id");
    bs_jw_str(b, bs_meta_row_text(row, 0));
    bs_jw_key(b, "name");
    bs_jw_str(b, bs_meta_row_text(row, 1));
    bs_jw_key(b, "description");
    bs_jw_str(b, bs_meta_row_text(row, 2));
    bs_jw_key(b, "tags");
    const char *tags = bs_meta_row_text(row, 3);
    bs_jw_raw(b, tags, strlen(tags));
    bs_jw_key(b, "require_distinct_approver");
    bs_jw_bool(b, (int)bs_meta_row_int(row, 4));
    bs_jw_key(b, "created_at");
    bs_jw_time(b, bs_meta_row_int(row, 5));
    bs_jw_key(b, "updated_at");
    bs_jw_time(b, bs_meta_row_int(row, 6));
    bs_jw_key(b, "created_by");
    bs_jw_str(b, bs_meta_row_text(row, 7));
    bs_jw_key(b, "latest_version");
    int64_t latest = bs_meta_row_int(row, 8);
    if (latest)
        bs_jw_int(b, latest);
    else
        bs_jw_null(b);
    bs_jw_key(b, "batching");
    if (bs_meta_row_is_null(row, 9))
        bs_jw_null(b);
    else
        bs_jw_raw(b, bs_meta_row_text(row, 9), strlen(bs_meta_row_text(row, 9)));
    bs_jw_key(b, "aliases");
    bs_jw_obj_begin(b);
    bs_val_t arg = BS_TXT(bs_meta_row_text(row, 0));
    bs_meta_query(r->meta, "SELECT alias, version FROM model_aliases WHERE model_id = ? ORDER BY alias",
                  &arg, 1, render_alias_row, b, NULL);
    bs_jw_obj_end(b);
    bs_jw_obj_end(b);
}

static int model_row(const bs_meta_row_t *row, void *ud)
{
    render_ctx_t *c = ud;
    if (c->n == c->limit) {
        c->n++;
        return 1;
    }
    render_model(c->r, row, c->out);
    snprintf(c->last, sizeof c->last, "%s", bs_meta_row_text(row, 1));
    c->n++;
    return 0;
}

int bs_registry_model_get(bs_registry_t *r, const char *tenant, const char *name, bs_buf_t *out,
                          bs_err_t *err)
{
    render_ctx_t c = {.out = out, .r = r, .limit = 1};
    bs_val_t args[] = {BS_TXT(tenant), BS_TXT(name)};
    int rc = bs_meta_query(r->meta, "SELECT " MODEL_COLS " FROM models m WHERE tenant = ? AND name = ?",
                           args, 2, model_row, &c, err);
    if (rc)
        return rc;
    if (!c.n)
        return bs_err_setf(err, BS_ENOTFOUND, "name", "no model '%.128s'", name);
    return 0;
}

int bs_registry_model_list(bs_registry_t *r, const char *tenant, const char *prefix,
                           const char *tag, const char *cursor, int limit, bs_buf_t *out,
                           bs_err_t *err)
{
    char like[300] = "";
    if (prefix) {
        /* Escape LIKE wildcards in the prefix. */
        size_t k = 0;
        for (const char *p = prefix; *p && k + 3 < sizeof like; p++) {
            if (*p == '%' || *p == '_' || *p == '\\')
                like[k++] = '\\';
            like[k++] = *p;
        }
        like[k++] = '%';
        like[k] = '\0';
    }
    char tagq[300] = "";
    if (tag) {
        cJSON *s = cJSON_CreateString(tag);
        char *q = s ? cJSON_PrintUnformatted(s) : NULL;
        snprintf(tagq, sizeof tagq, "%s", q ? q : "");
        free(q);
        cJSON_Delete(s);
    }
    render_ctx_t c = {.out = out, .r = r, .limit = limit};
    bs_jw_obj_begin(out);
    bs_jw_key(out, "items");
    bs_jw_arr_begin(out);
    bs_val_t args[] = {BS_TXT(tenant),        BS_TXT(prefix ? like : NULL), BS_TXT(prefix ? like : NULL),
                       BS_TXT(tag ? tagq : NULL), BS_TXT(tag ? tagq : NULL), BS_TXT(cursor ? cursor : ""),
                       BS_INT(limit + 1)};
    /* SQLite's LIKE ignores ASCII case, PostgreSQL's does not (ILIKE does); instr is
     * strpos there. */
    int pg = bs_meta_dialect(r->meta) == BS_META_POSTGRES;
    int rc = bs_meta_query(r->meta,
                           pg ? "SELECT " MODEL_COLS " FROM models m WHERE tenant = ?"
                                " AND (? IS NULL OR name ILIKE ? ESCAPE '\\')"
                                " AND (? IS NULL OR strpos(tags, ?) > 0)"
                                " AND name > ? ORDER BY name LIMIT ?"
                              : "SELECT " MODEL_COLS " FROM models m WHERE tenant = ?"
                                " AND (? IS NULL OR name LIKE ? ESCAPE '\\')"
                                " AND (? IS NULL OR instr(tags, ?) > 0)"
                                " AND name > ? ORDER BY name LIMIT ?",
                           args, 7, model_row, &c, err);
    if (rc)
        return rc;
    bs_jw_page_end(out, c.n > limit ? c.last : NULL);
    return 0;
}

int bs_registry_model_create(bs_registry_t *r, const bs_principal_t *who, const cJSON *body,
                             bs_buf_t *out, bs_err_t *err)
{
    static const char *const allowed[] = {"name", "description", "tags", "require_distinct_approver",
                                          "batching", NULL};
    if (!cJSON_IsObject(body))
        return bs_err_set(err, BS_EINVAL, "body must be a JSON object");
    if (bs_json_reject_unknown(body, allowed, err))
        return err->code;
    const char *name = NULL, *desc = "";
    int distinct = 0;
    if (bs_json_get_str(body, "name", 1, &name, err) < 0 ||
        bs_json_get_str(body, "description", 0, &desc, err) < 0 ||
        bs_json_get_bool(body, "require_distinct_approver", 0, &distinct, err) < 0)
        return err->code;
    if (!bs_registry_valid_name(name))
        return bs_err_setf(err, BS_EINVAL, "name",
                           "model name must be 1-128 characters of A-Z, a-z, 0-9, '.', '-' or '_', "
                           "not only dots");
    if (strlen(desc) > 10000)
        return bs_err_setf(err, BS_EINVAL, "description", "description is longer than 10000 bytes");
    char *tags = NULL, *batching = NULL;
    int rc = tags_json(cJSON_GetObjectItemCaseSensitive(body, "tags"), "tags", &tags, err);
    if (rc)
        return rc;
    if ((rc = batching_json(cJSON_GetObjectItemCaseSensitive(body, "batching"), &batching, err))) {
        free(tags);
        return rc;
    }
    char id[40];
    int64_t now = bs_time_wall_ms();
    if ((rc = bs_meta_tx_begin(r->meta, err)) != 0) {
        free(tags);
        free(batching);
        return rc;
    }
    bs_uuid7_ordered(id); /* under the store's lock: id order is commit order */
    bs_val_t args[] = {BS_TXT(id), BS_TXT(who->tenant), BS_TXT(name), BS_TXT(desc), BS_TXT(tags),
                       BS_INT(distinct), BS_INT(now), BS_INT(now), BS_TXT(who->key_id), BS_TXT(batching)};
    rc = bs_meta_exec(r->meta,
                      "INSERT INTO models (id, tenant, name, description, tags, require_distinct_approver,"
                      " created_at, updated_at, created_by, batching) VALUES (?,?,?,?,?,?,?,?,?,?)",
                      args, 10, NULL, err);
    free(tags);
    free(batching);
    if (rc == BS_ECONFLICT)
        bs_err_setf(err, BS_ECONFLICT, "name", "model '%s' already exists", name);
    if (!rc) {
        rc = bs_registry_model_get(r, who->tenant, name, out, err);
        char res[200];
        snprintf(res, sizeof res, "models/%s", name);
        if (!rc)
            rc = bs__registry_audit(r, who, "model.create", res, NULL, out->data, err);
    }
    if (rc) {
        bs_meta_tx_rollback(r->meta);
        return rc;
    }
    rc = bs__registry_commit(r, err);
    if (!rc)
        bs__registry_changed(r);
    return rc;
}

int bs_registry_model_update(bs_registry_t *r, const bs_principal_t *who, const char *name,
                             const cJSON *body, bs_buf_t *out, bs_err_t *err)
{
    static const char *const allowed[] = {"description", "tags", "require_distinct_approver",
                                          "batching", NULL};
    if (!cJSON_IsObject(body))
        return bs_err_set(err, BS_EINVAL, "body must be a JSON object");
    if (bs_json_reject_unknown(body, allowed, err))
        return err->code;
    const char *desc = NULL;
    int distinct = -1;
    if (bs_json_get_str(body, "description", 0, &desc, err) < 0 ||
        bs_json_get_bool(body, "require_distinct_approver", 0, &distinct, err) < 0)
        return err->code;
    if (desc && strlen(desc) > 10000)
        return bs_err_setf(err, BS_EINVAL, "description", "description is longer than 10000 bytes");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(body, "tags");
    const cJSON *bt = cJSON_GetObjectItemCaseSensitive(body, "batching");
    char *tags = NULL, *batching = NULL;
    int rc = 0;
    if (t && (rc = tags_json(t, "tags", &tags, err)))
        return rc;
    if (bt && (rc = batching_json(bt, &batching, err))) {
        free(tags);
        return rc;
    }
    bs_buf_t before;
    bs_buf_init(&before);
    if ((rc = bs_meta_tx_begin(r->meta, err)) != 0)
        goto done;
    if ((rc = bs_registry_model_get(r, who->tenant, name, &before, err)))
        goto rollback;
    int64_t old_distinct = 0;
    bs_val_t ka[] = {BS_TXT(who->tenant), BS_TXT(name)};
    bs_meta_query(r->meta, "SELECT require_distinct_approver FROM models WHERE tenant = ? AND name = ?",
                  ka, 2, first_int, &old_distinct, NULL);
    int rule_changes = distinct >= 0 && distinct != (int)old_distinct;
    if (rule_changes && who->role < BS_ROLE_ADMIN) {
        /* The uploader must not be able to lift the rule, approve and restore it. */
        rc = bs_err_setf(err, BS_EFORBID, "require_distinct_approver",
                         "changing require_distinct_approver needs the admin role, not '%s'",
                         bs_role_name(who->role));
        goto rollback;
    }
    bs_val_t args[] = {BS_TXT(desc), BS_TXT(desc), BS_TXT(tags), BS_TXT(tags),
                       BS_INT(distinct),  BS_INT(distinct),  BS_INT(bt ? 1 : 0), BS_TXT(batching),
                       BS_INT(bs_time_wall_ms()), BS_TXT(who->tenant), BS_TXT(name)};
    rc = bs_meta_exec(r->meta,
                      "UPDATE models SET description = CASE WHEN ? IS NULL THEN description ELSE ? END,"
                      " tags = CASE WHEN ? IS NULL THEN tags ELSE ? END,"
                      " require_distinct_approver = CASE WHEN ? < 0 THEN require_distinct_approver ELSE ? END,"
                      " batching = CASE WHEN ? = 1 THEN ? ELSE batching END,"
                      " updated_at = ? WHERE tenant = ? AND name = ?",
                      args, 11, NULL, err);
    if (rc || (rc = bs_registry_model_get(r, who->tenant, name, out, err)))
        goto rollback;
    char res[200];
    snprintf(res, sizeof res, "models/%s", name);
    if ((rc = bs__registry_audit(r, who, "model.update", res, before.data, out->data, err)))
        goto rollback;
    if (rule_changes) {
        char ob[48], nb[48];
        snprintf(ob, sizeof ob, "{\"require_distinct_approver\":%s}", old_distinct ? "true" : "false");
        snprintf(nb, sizeof nb, "{\"require_distinct_approver\":%s}", distinct ? "true" : "false");
        if ((rc = bs__registry_audit(r, who, "model.approval_rule", res, ob, nb, err)))
            goto rollback;
    }
    rc = bs__registry_commit(r, err);
    if (!rc)
        bs__registry_changed(r);
    goto done;
rollback:
    bs_meta_tx_rollback(r->meta);
done:
    free(tags);
    free(batching);
    bs_buf_free(&before);
    return rc;
}

static int sha_list_row(const bs_meta_row_t *row, void *ud)
{
    bs_buf_t *b = ud;
    bs_buf_append(b, bs_meta_row_text(row, 0), 64);
    return 0;
}

int bs_registry_model_delete(bs_registry_t *r, const bs_principal_t *who, const char *name,
                             bs_err_t *err)
{
    bs_buf_t before, shas;
    bs_buf_init(&before);
    bs_buf_init(&shas);
    int rc = bs_meta_tx_begin(r->meta, err);
    if (rc)
        return rc;
    if ((rc = bs_registry_model_get(r, who->tenant, name, &before, err)))
        goto rollback;
    /* Its artifacts: their grace period before collection starts at the delete. */
    bs_val_t qa[] = {BS_TXT(who->tenant), BS_TXT(name)};
    bs_meta_query(r->meta,
                  "SELECT DISTINCT v.sha256 FROM model_versions v JOIN models m ON m.id = v.model_id"
                  " WHERE m.tenant = ? AND m.name = ? AND length(v.sha256) = 64",
                  qa, 2, sha_list_row, &shas, NULL);
    bs_val_t args[] = {BS_TXT(who->tenant), BS_TXT(name)};
    if ((rc = bs_meta_exec(r->meta, "DELETE FROM models WHERE tenant = ? AND name = ?", args, 2,
                           NULL, err)))
        goto rollback;
    char res[200];
    snprintf(res, sizeof res, "models/%s", name);
    if ((rc = bs__registry_audit(r, who, "model.delete", res, before.data, NULL, err)))
        goto rollback;
    /* Inside the transaction: the collector, which decides inside one too, cannot take
     * them between the delete and the touch. */
    for (size_t i = 0; i + 64 <= shas.len; i += 64) {
        char sha[65];
        snprintf(sha, sizeof sha, "%.64s", shas.data + i);
        bs_blobs_touch(r->blobs, sha);
    }
    rc = bs__registry_commit(r, err);
    bs_buf_free(&before);
    if (!rc)
        bs__registry_changed(r);
    bs_buf_free(&shas);
    return rc;
rollback:
    bs_meta_tx_rollback(r->meta);
    bs_buf_free(&before);
    bs_buf_free(&shas);
    return rc;
}

/* ---- versions -------------------------------------------------------------------------- */

#define VERSION_COLS                                                                               \
    "m.name, v.version, v.status, v.format, v.kind, v.sha256, v.size, v.signature, v.metrics,"   \
    " v.params, v.tags, v.description, v.run_id, v.dataset, v.source_commit, v.created_by,"       \
    " v.created_at, v.reviewed_by, v.reviewed_at, v.review_comment, v.model_id,"                 \
    " COALESCE(v.require_distinct_approver, m.require_distinct_approver)"

typedef struct {
    bs_buf_t *out;
    bs_registry_t *r;
    int n, limit, last;
} vrender_t;

static int alias_name_row(const bs_meta_row_t *row, void *ud)
{
    bs_jw_str(ud, bs_meta_row_text(row, 0));
    return 0;
}

static void render_version(bs_registry_t *r, const bs_meta_row_t *row, bs_buf_t *b)
{
    bs_jw_obj_begin(b);
    bs_jw_key(b, "model");
    bs_jw_str(b, bs_meta_row_text(row, 0));
    bs_jw_key(b, "version");
    bs_jw_int(b, bs_meta_row_int(row, 1));
    bs_jw_key(b, "status");
    bs_jw_str(b, bs_meta_row_text(row, 2));
    bs_jw_key(b, "format");
    bs_jw_str(b, bs_meta_row_text(row, 3));
    bs_jw_key(b, "kind");
    bs_jw_str(b, bs_meta_row_text(row, 4));
    bs_jw_key(b, "sha256");
    bs_jw_str(b, bs_meta_row_text(row, 5));
    bs_jw_key(b, "size");
    bs_jw_int(b, bs_meta_row_int(row, 6));
    static const char *const raw[] = {"signature", "metrics", "params", "tags"};
    for (int i = 0; i < 4; i++) {
        const char *t = bs_meta_row_text(row, 7 + i);
        bs_jw_key(b, raw[i]);
        bs_jw_raw(b, t, strlen(t));
    }
    bs_jw_key(b, "description");
    bs_jw_str(b, bs_meta_row_text(row, 11));
    bs_jw_key(b, "lineage");
    bs_jw_obj_begin(b);
    static const char *const lin[] = {"run_id", "dataset", "source_commit"};
    for (int i = 0; i < 3; i++) {
        bs_jw_key(b, lin[i]);
        if (bs_meta_row_is_null(row, 12 + i))
            bs_jw_null(b);
        else
            bs_jw_str(b, bs_meta_row_text(row, 12 + i));
    }
    bs_jw_obj_end(b);
    bs_jw_key(b, "created_by");
    bs_jw_str(b, bs_meta_row_text(row, 15));
    bs_jw_key(b, "created_at");
    bs_jw_time(b, bs_meta_row_int(row, 16));
    bs_jw_key(b, "reviewed_by");
    if (bs_meta_row_is_null(row, 17))
        bs_jw_null(b);
    else
        bs_jw_str(b, bs_meta_row_text(row, 17));
    bs_jw_key(b, "reviewed_at");
    bs_jw_time(b, bs_meta_row_int(row, 18));
    bs_jw_key(b, "review_comment");
    if (bs_meta_row_is_null(row, 19))
        bs_jw_null(b);
    else
        bs_jw_str(b, bs_meta_row_text(row, 19));
    bs_jw_key(b, "require_distinct_approver"); /* the rule this version was uploaded under */
    bs_jw_bool(b, (int)bs_meta_row_int(row, 21));
    bs_jw_key(b, "aliases");
    bs_jw_arr_begin(b);
    bs_val_t args[] = {BS_TXT(bs_meta_row_text(row, 20)), BS_INT(bs_meta_row_int(row, 1))};
    bs_meta_query(r->meta, "SELECT alias FROM model_aliases WHERE model_id = ? AND version = ? ORDER BY alias",
                  args, 2, alias_name_row, b, NULL);
    bs_jw_arr_end(b);
    bs_jw_obj_end(b);
}

static int version_row(const bs_meta_row_t *row, void *ud)
{
    vrender_t *c = ud;
    if (c->n == c->limit) {
        c->n++;
        return 1;
    }
    render_version(c->r, row, c->out);
    c->last = (int)bs_meta_row_int(row, 1);
    c->n++;
    return 0;
}

int bs_registry_version_get(bs_registry_t *r, const char *tenant, const char *name, int version,
                            bs_buf_t *out, bs_err_t *err)
{
    char id[40];
    int rc = bs__registry_model_id(r, tenant, name, id, err);
    if (rc)
        return rc;
    vrender_t c = {.out = out, .r = r, .limit = 1};
    bs_val_t args[] = {BS_TXT(id), BS_INT(version)};
    rc = bs_meta_query(r->meta,
                       "SELECT " VERSION_COLS " FROM model_versions v JOIN models m ON m.id = v.model_id"
                       " WHERE v.model_id = ? AND v.version = ?",
                       args, 2, version_row, &c, err);
    if (rc)
        return rc;
    if (!c.n)
        return bs_err_setf(err, BS_ENOTFOUND, "version", "model '%.128s' has no version %d", name,
                           version);
    return 0;
}

int bs_registry_version_list(bs_registry_t *r, const char *tenant, const char *name,
                             const char *status, int cursor, int limit, bs_buf_t *out, bs_err_t *err)
{
    char id[40];
    int rc = bs__registry_model_id(r, tenant, name, id, err);
    if (rc)
        return rc;
    vrender_t c = {.out = out, .r = r, .limit = limit};
    bs_jw_obj_begin(out);
    bs_jw_key(out, "items");
    bs_jw_arr_begin(out);
    bs_val_t args[] = {BS_TXT(id), BS_TXT(status), BS_TXT(status), BS_INT(cursor > 0 ? cursor : INT32_MAX),
                       BS_INT(limit + 1)};
    rc = bs_meta_query(r->meta,
                       "SELECT " VERSION_COLS " FROM model_versions v JOIN models m ON m.id = v.model_id"
                       " WHERE v.model_id = ? AND (? IS NULL OR v.status = ?) AND v.version < ?"
                       " ORDER BY v.version DESC LIMIT ?",
                       args, 5, version_row, &c, err);
    if (rc)
        return rc;
    char cur[16];
    snprintf(cur, sizeof cur, "%d", c.last);
    bs_jw_page_end(out, c.n > limit ? cur : NULL);
    return 0;
}

/* Rules a signature must keep after the upload's overrides: a default inside its
 * feature's min/max, and distinct class labels (they key the probabilities). */
static int check_signature(const bs_ml_schema_t *s, bs_err_t *err)
{
    for (int i = 0; i < s->n_features; i++) {
        const bs_ml_feature_t *f = &s->features[i];
        if (f->has_default && f->type != BS_ML_CATEGORY &&
            ((f->has_min && f->default_value < f->min) || (f->has_max && f->default_value > f->max)))
            return bs_err_setf(err, BS_EINVAL, "input_schema",
                               "feature '%.64s': default %.17g is outside its min/max", f->name,
                               f->default_value);
    }
    for (int a = 0; s->labels && a < s->n_outputs; a++)
        for (int b = a + 1; b < s->n_outputs; b++)
            if (strcmp(s->labels[a], s->labels[b]) == 0)
                return bs_err_setf(err, BS_EINVAL, "output_schema.labels",
                                   "class label '%.64s' appears twice", s->labels[a]);
    return 0;
}

int bs_registry_version_create(bs_registry_t *r, const bs_principal_t *who, const char *name,
                               const char *format, const void *artifact, size_t len,
                               const cJSON *meta, bs_buf_t *out, bs_err_t *err)
{
    static const char *const allowed[] = {"input_schema", "output_schema", "metrics", "params", "tags",
                                          "description", "run_id", "dataset", "source_commit",
                                          "format", NULL};
    if (meta && !cJSON_IsNull(meta)) {
        if (!cJSON_IsObject(meta))
            return bs_err_setf(err, BS_EINVAL, "metadata", "metadata must be a JSON object");
        if (bs_json_reject_unknown(meta, allowed, err))
            return err->code;
    } else {
        meta = NULL;
    }
    const char *desc = "", *run_id = NULL, *dataset = NULL, *commit = NULL, *mformat = NULL;
    if (meta && (bs_json_get_str(meta, "description", 0, &desc, err) < 0 ||
                 bs_json_get_str(meta, "run_id", 0, &run_id, err) < 0 ||
                 bs_json_get_str(meta, "dataset", 0, &dataset, err) < 0 ||
                 bs_json_get_str(meta, "source_commit", 0, &commit, err) < 0 ||
                 bs_json_get_str(meta, "format", 0, &mformat, err) < 0))
        return err->code;
    if (!format)
        format = mformat;
    if (!artifact || len == 0)
        return bs_err_setf(err, BS_EINVAL, "artifact", "the model artifact is empty");
    if (!format)
        format = bs_ml_detect_format(artifact, len);
    if (!format)
        return bs_err_setf(err, BS_EINVAL, "format",
                           "cannot tell the artifact's format; pass ?format=xgboost_json or basalt_json");
    char id[40];
    int rc = bs__registry_model_id(r, who->tenant, name, id, err);
    if (rc)
        return rc;
    if (run_id) {
        int64_t found = 0;
        bs_val_t a[] = {BS_TXT(run_id), BS_TXT(who->tenant)};
        bs_meta_query(r->meta, "SELECT 1 FROM runs WHERE id = ? AND tenant = ?", a, 2, first_int,
                      &found, NULL);
        if (!found)
            return bs_err_setf(err, BS_EINVAL, "run_id", "run '%.64s' does not exist", run_id);
    }

    /* Validate by loading, and derive the signature with the uploaded overrides. */
    bs_err_t lerr;
    bs_err_clear(&lerr);
    bs_ml_model_t *m = bs_ml_load(format, artifact, len, &lerr);
    if (!m)
        return bs_err_setf(err, lerr.code == BS_ENOMEM ? BS_ENOMEM : BS_EINVAL, "artifact",
                           "the artifact does not load as %.32s: %s", format, lerr.msg);
    const cJSON *in_s = meta ? cJSON_GetObjectItemCaseSensitive(meta, "input_schema") : NULL;
    const cJSON *out_s = meta ? cJSON_GetObjectItemCaseSensitive(meta, "output_schema") : NULL;
    bs_ml_schema_t sig;
    rc = bs_ml_signature_build(m, in_s, out_s, &sig, err);
    if (!rc && (rc = check_signature(&sig, err)) != 0)
        bs_ml_schema_deinit(&sig);
    char *signature = NULL, *override = NULL, *metrics = NULL, *params = NULL, *tags = NULL;
    const char *kind = bs_ml_model_kind(m);
    if (!rc) {
        bs_buf_t sb;
        bs_buf_init(&sb);
        bs_ml_signature_render(&sig, bs_ml_model_handles_missing(m), &sb);
        signature = bs_buf_take(&sb);
        bs_ml_schema_deinit(&sig);
        if (in_s || out_s) {
            cJSON *o = cJSON_CreateObject();
            if (in_s)
                cJSON_AddItemToObject(o, "input_schema", cJSON_Duplicate(in_s, 1));
            if (out_s)
                cJSON_AddItemToObject(o, "output_schema", cJSON_Duplicate(out_s, 1));
            override = cJSON_PrintUnformatted(o);
            cJSON_Delete(o);
        }
    }
    if (!rc)
        rc = object_json(meta ? cJSON_GetObjectItemCaseSensitive(meta, "metrics") : NULL, "metrics", 1,
                         &metrics, err);
    if (!rc)
        rc = object_json(meta ? cJSON_GetObjectItemCaseSensitive(meta, "params") : NULL, "params", 0,
                         &params, err);
    if (!rc)
        rc = tags_json(meta ? cJSON_GetObjectItemCaseSensitive(meta, "tags") : NULL, "tags", &tags, err);
    char kind_copy[16];
    snprintf(kind_copy, sizeof kind_copy, "%s", kind);
    bs_ml_model_free(m);
    char sha[65];
    bs_sha256_hex(artifact, len, sha);
    /* The bytes go to the blob store first, outside the version's transaction (a big
     * artifact's chunks do not hold the store's write lock); the transaction then checks
     * they are still there (the collector decides inside a transaction too). */
    if (!rc)
        rc = bs_blobs_put(r->blobs, sha, artifact, len, err);
    if (rc)
        goto done;
    if ((rc = bs_meta_tx_begin(r->meta, err)))
        goto done;
    if ((rc = bs_blobs_ensure(r->blobs, sha, artifact, len, err))) {
        bs_meta_tx_rollback(r->meta);
        goto done;
    }
    int64_t next = 0;
    bs_val_t qa = BS_TXT(id);
    bs_meta_query(r->meta, "SELECT COALESCE(MAX(version),0) + 1 FROM model_versions WHERE model_id = ?",
                  &qa, 1, first_int, &next, NULL);
    int64_t now = bs_time_wall_ms();
    bs_val_t args[] = {BS_TXT(id),       BS_INT(next),        BS_TXT("pending"),   BS_TXT(format),
                       BS_TXT(sha),      BS_INT((int64_t)len), BS_TXT(kind_copy),  BS_TXT(override),
                       BS_TXT(signature), BS_TXT(metrics),    BS_TXT(params),      BS_TXT(tags),
                       BS_TXT(desc),     BS_TXT(run_id),      BS_TXT(dataset),     BS_TXT(commit),
                       BS_TXT(who->key_id), BS_INT(now)};
    rc = bs_meta_exec(r->meta,
                      "INSERT INTO model_versions (model_id, version, status, format, sha256, size, kind,"
                      " schema_override, signature, metrics, params, tags, description, run_id, dataset,"
                      " source_commit, created_by, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                      args, 18, NULL, err);
    if (!rc) {
        /* The version keeps the four-eyes rule it was uploaded under: switching the
         * model's rule off later does not open its pending versions to self-approval. */
        bs_val_t ra[] = {BS_TXT(id), BS_TXT(id), BS_INT(next)};
        rc = bs_meta_exec(r->meta,
                          "UPDATE model_versions SET require_distinct_approver ="
                          " (SELECT require_distinct_approver FROM models WHERE id = ?)"
                          " WHERE model_id = ? AND version = ?",
                          ra, 3, NULL, err);
    }
    if (!rc)
        rc = bs_registry_version_get(r, who->tenant, name, (int)next, out, err);
    if (!rc) {
        char res[200];
        snprintf(res, sizeof res, "models/%s/versions/%lld", name, (long long)next);
        rc = bs__registry_audit(r, who, "version.create", res, NULL, out->data, err);
    }
    if (rc) {
        bs_meta_tx_rollback(r->meta);
        goto done;
    }
    rc = bs__registry_commit(r, err);
    if (!rc) {
        bs__registry_changed(r);
        char subject[200];
        snprintf(subject, sizeof subject, "models/%s/versions/%lld", name, (long long)next);
        bs__registry_event(r, who->tenant, "version.created", subject, out->data);
    }
done:
    free(signature);
    free(override);
    free(metrics);
    free(params);
    free(tags);
    return rc;
}

typedef struct {
    char status[16];
    char created_by[40];
    int distinct;
    int found;
} vstate_t;

static int vstate_row(const bs_meta_row_t *row, void *ud)
{
    vstate_t *s = ud;
    snprintf(s->status, sizeof s->status, "%s", bs_meta_row_text(row, 0));
    snprintf(s->created_by, sizeof s->created_by, "%s", bs_meta_row_text(row, 1));
    s->distinct = (int)bs_meta_row_int(row, 2);
    s->found = 1;
    return 1;
}

static int version_state(bs_registry_t *r, const char *id, int version, vstate_t *s, bs_err_t *err)
{
    memset(s, 0, sizeof *s);
    bs_val_t args[] = {BS_TXT(id), BS_INT(version)};
    return bs_meta_query(r->meta,
                         "SELECT v.status, v.created_by,"
                         " COALESCE(v.require_distinct_approver, m.require_distinct_approver)"
                         " FROM model_versions v"
                         " JOIN models m ON m.id = v.model_id WHERE v.model_id = ? AND v.version = ?",
                         args, 2, vstate_row, s, err);
}

int bs_registry_version_transition(bs_registry_t *r, const bs_principal_t *who, const char *name,
                                   int version, const char *decision, const char *comment,
                                   bs_buf_t *out, bs_err_t *err)
{
    const char *to;
    if (!strcmp(decision, "approve"))
        to = "approved";
    else if (!strcmp(decision, "reject"))
        to = "rejected";
    else if (!strcmp(decision, "archive"))
        to = "archived";
    else
        return bs_err_set(err, BS_EINVAL, "unknown transition '%.32s'", decision);
    if (comment && strlen(comment) > 10000)
        return bs_err_setf(err, BS_EINVAL, "comment", "comment is longer than 10000 bytes");
    char id[40];
    int rc = bs__registry_model_id(r, who->tenant, name, id, err);
    if (rc)
        return rc;
    bs_buf_t before;
    bs_buf_init(&before);
    if ((rc = bs_meta_tx_begin(r->meta, err)))
        return rc;
    vstate_t s;
    if ((rc = version_state(r, id, version, &s, err)))
        goto rollback;
    if (!s.found) {
        rc = bs_err_setf(err, BS_ENOTFOUND, "version", "model '%.128s' has no version %d", name, version);
        goto rollback;
    }
    if (to[0] != 'a' || to[1] != 'r') { /* approve / reject */
        if (strcmp(s.status, "pending") != 0) {
            rc = bs_err_setf(err, BS_ECONFLICT, "status", "version %d is %s; only pending versions can be %s",
                             version, s.status, to);
            goto rollback;
        }
        if (s.distinct && strcmp(s.created_by, who->key_id) == 0) {
            rc = bs_err_set(err, BS_EFORBID,
                            "model '%.128s' requires the reviewer to differ from the uploader", name);
            goto rollback;
        }
    } else {
        if (strcmp(s.status, "approved") != 0) {
            rc = bs_err_setf(err, BS_ECONFLICT, "status",
                             "version %d is %s; only approved versions can be archived", version, s.status);
            goto rollback;
        }
        int64_t aliased = 0;
        bs_val_t a[] = {BS_TXT(id), BS_INT(version)};
        bs_meta_query(r->meta, "SELECT COUNT(*) FROM model_aliases WHERE model_id = ? AND version = ?",
                      a, 2, first_int, &aliased, NULL);
        if (aliased) {
            rc = bs_err_setf(err, BS_ECONFLICT, "version",
                             "version %d still holds %lld alias(es); move or delete them first", version,
                             (long long)aliased);
            goto rollback;
        }
    }
    if ((rc = bs_registry_version_get(r, who->tenant, name, version, &before, err)))
        goto rollback;
    bs_val_t args[] = {BS_TXT(to), BS_TXT(who->key_id), BS_INT(bs_time_wall_ms()), BS_TXT(comment),
                       BS_TXT(id), BS_INT(version)};
    if ((rc = bs_meta_exec(r->meta,
                           "UPDATE model_versions SET status = ?, reviewed_by = ?, reviewed_at = ?,"
                           " review_comment = ? WHERE model_id = ? AND version = ?",
                           args, 6, NULL, err)))
        goto rollback;
    if ((rc = bs_registry_version_get(r, who->tenant, name, version, out, err)))
        goto rollback;
    char res[200], action[32];
    snprintf(res, sizeof res, "models/%s/versions/%d", name, version);
    snprintf(action, sizeof action, "version.%s", decision);
    if ((rc = bs__registry_audit(r, who, action, res, before.data, out->data, err)))
        goto rollback;
    rc = bs__registry_commit(r, err);
    bs_buf_free(&before);
    if (!rc) {
        bs__registry_changed(r);
        char type[32];
        snprintf(type, sizeof type, "version.%s", to);
        bs__registry_event(r, who->tenant, type, res, out->data);
    }
    return rc;
rollback:
    bs_meta_tx_rollback(r->meta);
    bs_buf_free(&before);
    return rc;
}

static int alias_version_row(const bs_meta_row_t *row, void *ud)
{
    *(int64_t *)ud = bs_meta_row_int(row, 0);
    return 1;
}

int bs_registry_alias_set(bs_registry_t *r, const bs_principal_t *who, const char *name,
                          const char *alias, int version, bs_buf_t *out, bs_err_t *err)
{
    if (!valid_alias(alias))
        return bs_err_setf(err, BS_EINVAL, "alias",
                           "alias must be 1-64 characters of a-z, 0-9, '-' or '_' and not only digits");
    char id[40];
    int rc = bs__registry_model_id(r, who->tenant, name, id, err);
    if (rc)
        return rc;
    if ((rc = bs_meta_tx_begin(r->meta, err)))
        return rc;
    vstate_t s;
    if ((rc = version_state(r, id, version, &s, err)))
        goto rollback;
    if (!s.found) {
        rc = bs_err_setf(err, BS_ENOTFOUND, "version", "model '%.128s' has no version %d", name, version);
        goto rollback;
    }
    if (strcmp(s.status, "approved") != 0) {
        rc = bs_err_setf(err, BS_ECONFLICT, "version",
                         "version %d is %s; only approved versions can hold an alias", version, s.status);
        goto rollback;
    }
    int64_t prev = 0;
    bs_val_t qa[] = {BS_TXT(id), BS_TXT(alias)};
    bs_meta_query(r->meta, "SELECT version FROM model_aliases WHERE model_id = ? AND alias = ?", qa, 2,
                  alias_version_row, &prev, NULL);
    bs_val_t args[] = {BS_TXT(id), BS_TXT(alias), BS_INT(version), BS_INT(bs_time_wall_ms()),
                       BS_TXT(who->key_id)};
    if ((rc = bs_meta_exec(r->meta,
                           "INSERT INTO model_aliases (model_id, alias, version, updated_at, updated_by)"
                           " VALUES (?,?,?,?,?) ON CONFLICT (model_id, alias) DO UPDATE SET"
                           " version = excluded.version, updated_at = excluded.updated_at,"
                           " updated_by = excluded.updated_by",
                           args, 5, NULL, err)))
        goto rollback;
    bs_jw_obj_begin(out);
    bs_jw_key(out, "model");
    bs_jw_str(out, name);
    bs_jw_key(out, "alias");
    bs_jw_str(out, alias);
    bs_jw_key(out, "version");
    bs_jw_int(out, version);
    bs_jw_key(out, "previous_version");
    if (prev)
        bs_jw_int(out, prev);
    else
        bs_jw_null(out);
    bs_jw_obj_end(out);
    char res[260], before[64];
    snprintf(res, sizeof res, "models/%s/aliases/%s", name, alias);
    snprintf(before, sizeof before, "{\"version\":%lld}", (long long)prev);
    if ((rc = bs__registry_audit(r, who, "alias.set", res, prev ? before : NULL, out->data, err)))
        goto rollback;
    rc = bs__registry_commit(r, err);
    if (!rc) {
        bs__registry_changed(r);
        bs__registry_event(r, who->tenant, "alias.moved", res, out->data);
    }
    return rc;
rollback:
    bs_meta_tx_rollback(r->meta);
    return rc;
}

int bs_registry_alias_delete(bs_registry_t *r, const bs_principal_t *who, const char *name,
                             const char *alias, bs_err_t *err)
{
    char id[40];
    int rc = bs__registry_model_id(r, who->tenant, name, id, err);
    if (rc)
        return rc;
    if ((rc = bs_meta_tx_begin(r->meta, err)))
        return rc;
    int64_t prev = 0;
    bs_val_t qa[] = {BS_TXT(id), BS_TXT(alias)};
    bs_meta_query(r->meta, "SELECT version FROM model_aliases WHERE model_id = ? AND alias = ?", qa, 2,
                  alias_version_row, &prev, NULL);
    if (!prev) {
        rc = bs_err_setf(err, BS_ENOTFOUND, "alias", "model '%.128s' has no alias '%.64s'", name, alias);
        goto rollback;
    }
    if ((rc = bs_meta_exec(r->meta, "DELETE FROM model_aliases WHERE model_id = ? AND alias = ?", qa, 2,
                           NULL, err)))
        goto rollback;
    char res[260], before[64];
    snprintf(res, sizeof res, "models/%s/aliases/%s", name, alias);
    snprintf(before, sizeof before, "{\"version\":%lld}", (long long)prev);
    if ((rc = bs__registry_audit(r, who, "alias.delete", res, before, NULL, err)))
        goto rollback;
    rc = bs__registry_commit(r, err);
    if (!rc) {
        bs__registry_changed(r);
        char data[400];
        bs_buf_t b = BS_BUF_ON(data);
        bs_jw_obj_begin(&b);
        bs_jw_key(&b, "model");
        bs_jw_str(&b, name);
        bs_jw_key(&b, "alias");
        bs_jw_str(&b, alias);
        bs_jw_key(&b, "previous_version");
        bs_jw_int(&b, prev);
        bs_jw_obj_end(&b);
        if (!b.oom)
            bs__registry_event(r, who->tenant, "alias.deleted", res, b.data);
        bs_buf_free(&b);
    }
    return rc;
rollback:
    bs_meta_tx_rollback(r->meta);
    return rc;
}

/* ---- artifacts for serving ------------------------------------------------------------- */

static int artifact_row(const bs_meta_row_t *row, void *ud)
{
    bs_registry_artifact_t *a = ud;
    snprintf(a->status, sizeof a->status, "%s", bs_meta_row_text(row, 0));
    snprintf(a->format, sizeof a->format, "%s", bs_meta_row_text(row, 1));
    snprintf(a->sha256, sizeof a->sha256, "%s", bs_meta_row_text(row, 2));
    if (!bs_meta_row_is_null(row, 3))
        a->schema_override = strdup(bs_meta_row_text(row, 3));
    a->len = (size_t)bs_meta_row_int(row, 4);
    return 1;
}

int bs_registry_artifact_load(bs_registry_t *r, const char *model_id, int version,
                              bs_registry_artifact_t *out, bs_err_t *err)
{
    memset(out, 0, sizeof *out);
    snprintf(out->model_id, sizeof out->model_id, "%s", model_id);
    out->version = version;
    bs_val_t args[] = {BS_TXT(model_id), BS_INT(version)};
    int rc = bs_meta_query(r->meta,
                           "SELECT status, format, sha256, schema_override, size FROM model_versions"
                           " WHERE model_id = ? AND version = ?",
                           args, 2, artifact_row, out, err);
    if (rc)
        return rc;
    if (!out->sha256[0])
        return bs_err_set(err, BS_ENOTFOUND, "no version %d", version);
    /* Verified against the version's sha256 by the store (a cache file that fails it is
     * fetched again; a stored blob that fails it is BS_EIO). */
    if ((rc = bs_blobs_get(r->blobs, out->sha256, out->len, &out->bytes, err))) {
        bs_registry_artifact_deinit(out);
        return rc;
    }
    return 0;
}

int bs_registry_artifact_get(bs_registry_t *r, const char *tenant, const char *name, int version,
                             bs_registry_artifact_t *out, bs_err_t *err)
{
    memset(out, 0, sizeof *out);
    char id[40];
    int rc = bs__registry_model_id(r, tenant, name, id, err);
    if (rc)
        return rc;
    rc = bs_registry_artifact_load(r, id, version, out, err);
    if (rc == BS_ENOTFOUND)
        return bs_err_setf(err, BS_ENOTFOUND, "version", "model '%.128s' has no version %d", name,
                           version);
    return rc;
}

void bs_registry_artifact_deinit(bs_registry_artifact_t *a)
{
    free(a->schema_override);
    free(a->bytes);
    a->schema_override = NULL;
    a->bytes = NULL;
}
