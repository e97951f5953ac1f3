/* The audit log's writer (audit.h). */
#include <stdio.h>

#include "base/id.h"
#include "base/time.h"
#include "store/audit.h"

static int last_id(const bs_meta_row_t *row, void *ud)
{
    snprintf(ud, 40, "%s", bs_meta_row_text(row, 0));
    return 1;
}

int bs_audit_write(bs_meta_t *m, const char *tenant, const char *actor, const char *action,
                   const char *resource, const char *before, const char *after, bs_err_t *err)
{
    char id[40];
    if (bs_meta_dialect(m) == BS_META_POSTGRES) {
        /* Several replicas write the log. Every caller is inside a transaction, which holds
         * the write lock all replicas share, so an id above the highest stored one makes
         * id order commit order whatever the replicas' clocks say. (SQLite: one process,
         * and bs_uuid7_ordered under the store's lock already is.) */
        char last[40] = "";
        bs_meta_query(m, "SELECT MAX(id) FROM audit", NULL, 0, last_id, last, NULL);
        bs_uuid7_ordered_after(id, last);
    } else {
        bs_uuid7_ordered(id);
    }
    bs_val_t args[] = {BS_TXT(id),       BS_TXT(tenant), BS_TXT(actor),  BS_TXT(action),
                       BS_TXT(resource), BS_TXT(before), BS_TXT(after), BS_INT(bs_time_wall_ms())};
    return bs_meta_exec(m,
                        "INSERT INTO audit (id, tenant, actor, action, resource, before, after, ts)"
                        " VALUES (?,?,?,?,?,?,?,?)",
                        args, 8, NULL, err);
}
