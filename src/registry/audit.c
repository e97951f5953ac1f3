/* The audit log: who changed what and when, with the resource before and after. */
#include <stdio.h>
#include <string.h>

#include "base/id.h"
#include "base/time.h"
#include "registry/registry_int.h"
#include "store/audit.h"

int bs__registry_audit(bs_registry_t *r, const bs_principal_t *who, const char *action,
                       const char *resource, const char *before, const char *after, bs_err_t *err)
{
    return bs_audit_write(r->meta, who->tenant, who->key_id, action, resource, before, after, err);
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
