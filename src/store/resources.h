/*
 * Declarative resources (DESIGN.md "Declarative resources"): every object a
 * user configures — topic, trigger, webhook destination, later endpoint,
 * feature view, schedule, alert, collection — is a JSON spec stored by
 * (tenant, kind, name) in the `resources` table, with a generation that grows
 * on every change. One mechanism: PUT/GET/DELETE /v1/<kind>s/{name} and
 * `basalt apply|get|delete` sit on it; each subsystem validates its kind's
 * specs and keeps a snapshot of them, rebuilt when scope "resources" changes
 * (store/changes.h: every write here bumps it in its transaction).
 *
 * Kinds are CamelCase ("Topic"); names match [a-z0-9][a-z0-9_-]{0,62}.
 * Thread safety: any thread; every call waits on the store.
 */
#ifndef BS_STORE_RESOURCES_H
#define BS_STORE_RESOURCES_H

#include <stdint.h>

#include "base/err.h"
#include "store/meta.h"

#define BS_RESOURCES_SCOPE "resources"

typedef struct {
    const char *tenant;
    const char *kind;
    const char *name;
    const char *spec; /* JSON text, as stored (normalised by the kind's validator) */
    int64_t generation; /* 1 when created, +1 per change */
    int64_t created_at, updated_at; /* ms since the epoch */
    const char *created_by, *updated_by;
} bs_resource_t; /* borrowed: valid during the callback only */

typedef int (*bs_resource_cb)(const bs_resource_t *r, void *ud);

typedef enum { BS_RESOURCE_UNCHANGED = 0, BS_RESOURCE_CREATED, BS_RESOURCE_UPDATED } bs_resource_outcome_t;

/* Creates or replaces (tenant, kind, name) with spec (JSON text), in one transaction with
 * an audit row ("<kind>.created|updated") and a bump of BS_RESOURCES_SCOPE; a spec equal to
 * the stored one writes nothing (UNCHANGED). expect_generation > 0: refuse with
 * BS_ECONFLICT unless the stored generation is that (optimistic concurrency; 0: no check).
 * 0 with *outcome and *generation (both optional); BS_EINVAL (name); the store's error. */
int bs_resources_put(bs_meta_t *m, const char *tenant, const char *kind, const char *name,
                     const char *spec, const char *actor, int64_t expect_generation,
                     bs_resource_outcome_t *outcome, int64_t *generation, bs_err_t *err);
/* Calls cb once with the resource. 0, BS_ENOTFOUND. */
int bs_resources_get(bs_meta_t *m, const char *tenant, const char *kind, const char *name,
                     bs_resource_cb cb, void *ud, bs_err_t *err);
/* Calls cb per resource of kind in name order, from after cursor (a name; NULL: the start),
 * at most limit (0: all); tenant NULL: every tenant (snapshot rebuilds). Returns the count
 * or an error. */
int bs_resources_list(bs_meta_t *m, const char *tenant, const char *kind, const char *cursor,
                      int limit, bs_resource_cb cb, void *ud, bs_err_t *err);
/* Deletes, with an audit row and a bump. 0, BS_ENOTFOUND. */
int bs_resources_delete(bs_meta_t *m, const char *tenant, const char *kind, const char *name,
                        const char *actor, bs_err_t *err);
/* One stored generation of a resource's spec (a revision): every put that changes the spec
 * writes one in its transaction, the first included; a delete removes them with the
 * resource. Borrowed: valid during the callback only. */
typedef struct {
    const char *tenant;
    const char *kind;
    const char *name;
    int64_t generation;
    const char *spec;
    int64_t created_at; /* ms since the epoch */
    const char *created_by;
} bs_resource_revision_t;

typedef int (*bs_resource_revision_cb)(const bs_resource_revision_t *r, void *ud);

/* Calls cb per revision of (tenant, kind, name), newest first, those below
 * cursor_generation (0: from the newest), at most limit (0: all). Returns the count, or
 * BS_ENOTFOUND when the resource does not exist, or the store's error. */
int bs_resources_revisions(bs_meta_t *m, const char *tenant, const char *kind, const char *name,
                           int64_t cursor_generation, int limit, bs_resource_revision_cb cb,
                           void *ud, bs_err_t *err);
/* Calls cb once with that revision. 0, or BS_ENOTFOUND (no such resource or revision). */
int bs_resources_revision_get(bs_meta_t *m, const char *tenant, const char *kind,
                              const char *name, int64_t generation, bs_resource_revision_cb cb,
                              void *ud, bs_err_t *err);

/* 1 if s is a valid resource name. */
int bs_resources_valid_name(const char *s);

#endif
