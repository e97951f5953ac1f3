/* The audit log: who changed what and when, with the resource before and after. */
#include <stdio.h>
#include <string.h>

#include "base/id.h"
#include "base/time.h"
#include "registry/registry_int.h"

static int last_id(const bs_meta_row_t *row, void *ud)
{
    snprintf(ud, 40, "%s", bs_meta_row_text(row, 0));
    return 1;
}

int bs__registry_audit(bs_registry_t *r, const bs_principal_t *who, const char *action,
                       const char *resource, const char *before, const char *after, bs_err_t *err)
{
    char id[40];
    if (bs_meta_dialect(r->meta) == BS_META_POSTGRES) {
        /* Several replicas write the log. Every caller is inside a transaction, which holds
         * the write lock all replicas share, so an id above the highest stored one makes
         * id order commit order whatever the replicas' clocks say. (SQLite: one process,
         * and bs_uuid7_ordered under the store's lock already is.) */
        char last[40] = "";
        bs_meta_query(r->meta, "SELECT MAX(id) FROM audit", NULL, 0, last_id, last, NULL);
        bs_uuid7_ordered_after(id, last);
    } else {
        bs_uuid7_ordered(id);
    }
    bs_val_t args[] = {BS_TXT(id),       BS_TXT(who->tenant), BS_TXT(who->key_id), BS_TXT(action),
                       BS_TXT(resource), BS_TXT(before),      BS_TXT(after),       BS_INT(bs_time_wall_ms())};
    return bs_meta_exec(r->meta,
                        "INSERT INTO audit (id, tenant, actor, action, resource, before, after, ts)"
                        " VALUES (?,?,?,?,?,?,?,?)",
                        args, 8, NULL, err);
}

typedef struct {
    bs_buf_t *out;
    int n, limit;
    char last[40];
} audit_ctx_t;

static void raw_or_null(bs_buf_t *b, const bs_meta_row_t *row, int col)
{
    if (bs_meta_row_is_null(row, col)) {
        bs_jw_null(b);
        return;
    }
    const char *t = bs_meta_row_text(row, col);
    bs_jw_raw(b, t, strlen(t));
}

static int audit_row(const bs_meta_row_t *row, void *ud)
{
    audit_ctx_t *c = ud;
    if (c->n == c->limit) {
        c->n++;
        return 1;
    }
    bs_buf_t *b = c->out;
    bs_jw_obj_begin(b);
    bs_jw_key(b, "id");
    bs_jw_str(b, bs_meta_row_text(row, 0));
    bs_jw_key(b, "actor");
    bs_jw_str(b, bs_meta_row_text(row, 1));
    bs_jw_key(b, "action");
    bs_jw_str(b, bs_meta_row_text(row, 2));
    bs_jw_key(b, "resource");
    bs_jw_str(b, bs_meta_row_text(row, 3));
    bs_jw_key(b, "before");
    raw_or_null(b, row, 4);
    bs_jw_key(b, "after");
    raw_or_null(b, row, 5);
    bs_jw_key(b, "ts");
    bs_jw_time(b, bs_meta_row_int(row, 6));
    bs_jw_obj_end(b);
    snprintf(c->last, sizeof c->last, "%s", bs_meta_row_text(row, 0));
    c->n++;
    return 0;
}

int bs_registry_audit_list(bs_registry_t *r, const char *tenant, const char *cursor, int limit,
                           bs_buf_t *out, bs_err_t *err)
{
    audit_ctx_t c = {.out = out, .limit = limit};
    bs_jw_obj_begin(out);
    bs_jw_key(out, "items");
    bs_jw_arr_begin(out);
    bs_val_t args[] = {BS_TXT(tenant), BS_TXT(cursor), BS_TXT(cursor), BS_INT(limit + 1)};
    int rc = bs_meta_query(r->meta,
                           "SELECT id, actor, action, resource, before, after, ts FROM audit"
                           " WHERE tenant = ? AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?",
                           args, 4, audit_row, &c, err);
    if (rc)
        return rc;
    bs_jw_page_end(out, c.n > limit ? c.last : NULL);
    return 0;
}
