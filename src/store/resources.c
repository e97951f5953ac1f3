/*
 * Declarative resources (resources.h): the `resources` table (migration 9). A write
 * runs in one transaction: read the stored row, compare, write, audit, bump scope
 * "resources" — so every replica's watcher rebuilds the snapshots built from it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/time.h"
#include "store/audit.h"
#include "store/changes.h"
#include "store/resources.h"

int bs_resources_valid_name(const char *s)
{
    if (!s || !((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')))
        return 0;
    size_t n = 0;
    for (const char *p = s; *p; p++, n++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return 0;
    return n <= 63;
}

static int valid_kind(const char *s)
{
    if (!s || !(*s >= 'A' && *s <= 'Z'))
        return 0;
    size_t n = 0;
    for (const char *p = s; *p; p++, n++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
            return 0;
    return n <= 63;
}

#define COLS "tenant, kind, name, spec, generation, created_at, updated_at, created_by, updated_by"

static void row_to(const bs_meta_row_t *row, bs_resource_t *r)
{
    r->tenant = bs_meta_row_text(row, 0);
    r->kind = bs_meta_row_text(row, 1);
    r->name = bs_meta_row_text(row, 2);
    r->spec = bs_meta_row_text(row, 3);
    r->generation = bs_meta_row_int(row, 4);
    r->created_at = bs_meta_row_int(row, 5);
    r->updated_at = bs_meta_row_int(row, 6);
    r->created_by = bs_meta_row_text(row, 7);
    r->updated_by = bs_meta_row_text(row, 8);
}

typedef struct {
    bs_resource_cb cb;
    void *ud;
    int n;
} each_t;

static int each_row(const bs_meta_row_t *row, void *ud)
{
    each_t *e = ud;
    bs_resource_t r;
    row_to(row, &r);
    e->n++;
    return e->cb ? e->cb(&r, e->ud) : 0;
}

typedef struct {
    int found;
    int64_t generation;
    char *spec; /* malloc'd */
} current_t;

static int current_row(const bs_meta_row_t *row, void *ud)
{
    current_t *c = ud;
    c->found = 1;
    c->spec = strdup(bs_meta_row_text(row, 0));
    c->generation = bs_meta_row_int(row, 1);
    return 1;
}

static void resource_path(char *out, size_t n, const char *kind, const char *name)
{
    snprintf(out, n, "%s/%s", kind, name);
}

static int check_names(const char *tenant, const char *kind, const char *name, bs_err_t *err)
{
    if (!valid_kind(kind))
        return bs_err_setf(err, BS_EINVAL, "kind", "kind must be CamelCase letters and digits");
    if (!bs_resources_valid_name(name))
        return bs_err_setf(err, BS_EINVAL, "name",
                           "name must match [a-z0-9][a-z0-9_-]{0,62}, got '%.64s'", name ? name : "");
    if (!tenant || !*tenant)
        return bs_err_setf(err, BS_EINVAL, "tenant", "tenant is required");
    return 0;
}

int bs_resources_put(bs_meta_t *m, const char *tenant, const char *kind, const char *name,
                     const char *spec, const char *actor, int64_t expect_generation,
                     bs_resource_outcome_t *outcome, int64_t *generation, bs_err_t *err)
{
    int rc = check_names(tenant, kind, name, err);
    if (rc)
        return rc;
    if (!actor)
        actor = "";
    if ((rc = bs_meta_tx_begin(m, err)) != 0)
        return rc;
    current_t cur = {0};
    bs_val_t key[] = {BS_TXT(tenant), BS_TXT(kind), BS_TXT(name)};
    rc = bs_meta_query(m,
                       "SELECT spec, generation FROM resources WHERE tenant = ? AND kind = ? AND "
                       "name = ?",
                       key, 3, current_row, &cur, err);
    if (rc)
        goto fail;
    if (expect_generation > 0 && (!cur.found || cur.generation != expect_generation)) {
        rc = bs_err_setf(err, BS_ECONFLICT, "generation",
                         "%s '%s' is at generation %lld, not %lld", kind, name,
                         (long long)(cur.found ? cur.generation : 0), (long long)expect_generation);
        goto fail;
    }
    bs_resource_outcome_t out = BS_RESOURCE_UNCHANGED;
    int64_t gen = cur.generation;
    if (cur.found && strcmp(cur.spec, spec) == 0) {
        /* nothing written: commit, not roll back, so that a put inside a caller's bigger
         * transaction (a rollout's step) does not doom it */
        if ((rc = bs_meta_tx_commit(m, err)) != 0)
            goto fail_committed;
        goto done;
    }
    int64_t now = bs_time_wall_ms();
    if (cur.found) {
        gen = cur.generation + 1;
        bs_val_t a[] = {BS_TXT(spec), BS_INT(gen), BS_INT(now), BS_TXT(actor),
                        BS_TXT(tenant), BS_TXT(kind), BS_TXT(name)};
        rc = bs_meta_exec(m,
                          "UPDATE resources SET spec = ?, generation = ?, updated_at = ?, "
                          "updated_by = ? WHERE tenant = ? AND kind = ? AND name = ?",
                          a, 7, NULL, err);
        out = BS_RESOURCE_UPDATED;
    } else {
        gen = 1;
        bs_val_t a[] = {BS_TXT(tenant), BS_TXT(kind), BS_TXT(name), BS_TXT(spec), BS_INT(gen),
                        BS_INT(now),    BS_INT(now),  BS_TXT(actor), BS_TXT(actor)};
        rc = bs_meta_exec(m, "INSERT INTO resources (" COLS ") VALUES (?,?,?,?,?,?,?,?,?)", a, 9,
                          NULL, err);
        out = BS_RESOURCE_CREATED;
    }
    if (rc)
        goto fail;
    /* The revision: what GET …/revisions lists and a rollback restores. */
    {
        bs_val_t a[] = {BS_TXT(tenant), BS_TXT(kind), BS_TXT(name), BS_INT(gen),
                        BS_TXT(spec),   BS_INT(now),  BS_TXT(actor)};
        rc = bs_meta_exec(m,
                          "INSERT INTO resource_revisions (tenant, kind, name, generation, spec, "
                          "created_at, created_by) VALUES (?,?,?,?,?,?,?)",
                          a, 7, NULL, err);
        if (rc)
            goto fail;
    }
    char action[96], path[160];
    snprintf(action, sizeof action, "%s.%s", kind, out == BS_RESOURCE_CREATED ? "created" : "updated");
    resource_path(path, sizeof path, kind, name);
    if ((rc = bs_audit_write(m, tenant, actor, action, path, cur.spec, spec, err)) != 0 ||
        (rc = bs_changes_bump(m, BS_RESOURCES_SCOPE, err)) != 0 ||
        (rc = bs_meta_tx_commit(m, err)) != 0)
        goto fail;
done:
    free(cur.spec);
    if (outcome)
        *outcome = out;
    if (generation)
        *generation = gen;
    return 0;
fail:
    free(cur.spec);
    bs_meta_tx_rollback(m);
    return rc;
fail_committed:
    free(cur.spec);
    return rc;
}

int bs_resources_get(bs_meta_t *m, const char *tenant, const char *kind, const char *name,
                     bs_resource_cb cb, void *ud, bs_err_t *err)
{
    each_t e = {cb, ud, 0};
    bs_val_t a[] = {BS_TXT(tenant), BS_TXT(kind), BS_TXT(name)};
    int rc = bs_meta_query(m,
                           "SELECT " COLS " FROM resources WHERE tenant = ? AND kind = ? AND name = ?",
                           a, 3, each_row, &e, err);
    if (rc)
        return rc;
    if (!e.n)
        return bs_err_set(err, BS_ENOTFOUND, "%s '%.64s' not found", kind, name);
    return 0;
}

int bs_resources_list(bs_meta_t *m, const char *tenant, const char *kind, const char *cursor,
                      int limit, bs_resource_cb cb, void *ud, bs_err_t *err)
{
    each_t e = {cb, ud, 0};
    bs_val_t a[] = {BS_TXT(kind), BS_TXT(tenant), BS_TXT(tenant), BS_TXT(cursor ? cursor : ""),
                    BS_INT(limit > 0 ? limit : 1000000000)};
    /* tenant NULL: every tenant, in (tenant, name) order (a snapshot rebuild). */
    int rc = bs_meta_query(m,
                           "SELECT " COLS " FROM resources WHERE kind = ? AND"
                           " (CAST(? AS TEXT) IS NULL OR tenant = ?) AND name > ?"
                           " ORDER BY tenant, name LIMIT ?",
                           a, 5, each_row, &e, err);
    return rc ? rc : e.n;
}

int bs_resources_delete(bs_meta_t *m, const char *tenant, const char *kind, const char *name,
                        const char *actor, bs_err_t *err)
{
    int rc = bs_meta_tx_begin(m, err);
    if (rc)
        return rc;
    current_t cur = {0};
    bs_val_t key[] = {BS_TXT(tenant), BS_TXT(kind), BS_TXT(name)};
    rc = bs_meta_query(m,
                       "SELECT spec, generation FROM resources WHERE tenant = ? AND kind = ? AND "
                       "name = ?",
                       key, 3, current_row, &cur, err);
    if (rc == 0 && !cur.found)
        rc = bs_err_set(err, BS_ENOTFOUND, "%s '%.64s' not found", kind, name);
    if (rc == 0)
        rc = bs_meta_exec(m, "DELETE FROM resources WHERE tenant = ? AND kind = ? AND name = ?", key,
                          3, NULL, err);
    if (rc == 0)
        rc = bs_meta_exec(m,
                          "DELETE FROM resource_revisions WHERE tenant = ? AND kind = ? AND name = ?",
                          key, 3, NULL, err);
    if (rc == 0) {
        char action[96], path[160];
        snprintf(action, sizeof action, "%s.deleted", kind);
        resource_path(path, sizeof path, kind, name);
        rc = bs_audit_write(m, tenant, actor ? actor : "", action, path, cur.spec, NULL, err);
    }
    if (rc == 0)
        rc = bs_changes_bump(m, BS_RESOURCES_SCOPE, err);
    if (rc == 0)
        rc = bs_meta_tx_commit(m, err);
    free(cur.spec);
    if (rc)
        bs_meta_tx_rollback(m);
    return rc;
}

/* ---- revisions ------------------------------------------------------------------------- */

typedef struct {
    bs_resource_revision_cb cb;
    void *ud;
    int n;
} rev_each_t;

static int rev_row(const bs_meta_row_t *row, void *ud)
{
    rev_each_t *e = ud;
    bs_resource_revision_t r = {.tenant = bs_meta_row_text(row, 0),
                                .kind = bs_meta_row_text(row, 1),
                                .name = bs_meta_row_text(row, 2),
                                .generation = bs_meta_row_int(row, 3),
                                .spec = bs_meta_row_text(row, 4),
                                .created_at = bs_meta_row_int(row, 5),
                                .created_by = bs_meta_row_text(row, 6)};
    e->n++;
    return e->cb ? e->cb(&r, e->ud) : 0;
}

#define REV_COLS "tenant, kind, name, generation, spec, created_at, created_by"

static int found_row(const bs_meta_row_t *row, void *ud)
{
    (void)row;
    *(int *)ud = 1;
    return 1;
}

/* 0 if the resource exists, BS_ENOTFOUND, or the store's error. */
static int exists(bs_meta_t *m, const char *tenant, const char *kind, const char *name,
                  bs_err_t *err)
{
    int found = 0;
    bs_val_t key[] = {BS_TXT(tenant), BS_TXT(kind), BS_TXT(name)};
    int rc = bs_meta_query(m, "SELECT 1 FROM resources WHERE tenant = ? AND kind = ? AND name = ?",
                           key, 3, found_row, &found, err);
    if (rc)
        return rc;
    return found ? 0 : bs_err_set(err, BS_ENOTFOUND, "%s '%.64s' not found", kind, name);
}

int bs_resources_revisions(bs_meta_t *m, const char *tenant, const char *kind, const char *name,
                           int64_t cursor_generation, int limit, bs_resource_revision_cb cb,
                           void *ud, bs_err_t *err)
{
    int rc = exists(m, tenant, kind, name, err);
    if (rc)
        return rc;
    rev_each_t e = {cb, ud, 0};
    bs_val_t a[] = {BS_TXT(tenant), BS_TXT(kind), BS_TXT(name),
                    BS_INT(cursor_generation > 0 ? cursor_generation : INT64_MAX),
                    BS_INT(limit > 0 ? limit : 1000000000)};
    rc = bs_meta_query(m,
                       "SELECT " REV_COLS " FROM resource_revisions WHERE tenant = ? AND kind = ?"
                       " AND name = ? AND generation < ? ORDER BY generation DESC LIMIT ?",
                       a, 5, rev_row, &e, err);
    return rc ? rc : e.n;
}

int bs_resources_revision_get(bs_meta_t *m, const char *tenant, const char *kind,
                              const char *name, int64_t generation, bs_resource_revision_cb cb,
                              void *ud, bs_err_t *err)
{
    int rc = exists(m, tenant, kind, name, err);
    if (rc)
        return rc;
    rev_each_t e = {cb, ud, 0};
    bs_val_t a[] = {BS_TXT(tenant), BS_TXT(kind), BS_TXT(name), BS_INT(generation)};
    rc = bs_meta_query(m,
                       "SELECT " REV_COLS " FROM resource_revisions WHERE tenant = ? AND kind = ?"
                       " AND name = ? AND generation = ?",
                       a, 4, rev_row, &e, err);
    if (rc)
        return rc;
    if (!e.n)
        return bs_err_setf(err, BS_ENOTFOUND, "revision", "%s '%.64s' has no revision %lld", kind,
                           name, (long long)generation);
    return 0;
}
