/* Private to src/registry. */
#ifndef BS_REGISTRY_REGISTRY_INT_H
#define BS_REGISTRY_REGISTRY_INT_H

#include "base/json.h"
#include "registry/registry.h"
#include "store/blobs.h"

#include <pthread.h>

struct bs_registry {
    bs_meta_t *meta;
    bs_blobs_t *blobs; /* artifacts, owned */
    void (*on_change)(void *ud);
    void *on_change_ud;
    bs_registry_event_fn on_event;
    void *on_event_ud;
    /* the artifact collector (gc.c): a singleton under the lease "artifact-gc" */
    struct bs_lease_runner *gc_lease;
    char replica_id[128]; /* the lease owner */
    int gc_running;
    int64_t gc_grace_s;
};

/* One collection pass: removes unreferenced artifacts older than grace_s from the blob
 * store (bs__registry_gc_store: the part one replica of a cluster runs) and evicts this
 * replica's unreferenced cache files (bs__registry_gc_cache: every replica). Each returns
 * the number removed, or a negative BS_E* code; bs__registry_gc runs both. */
int bs__registry_gc(bs_registry_t *r, int64_t grace_s, bs_err_t *err);
int bs__registry_gc_store(bs_registry_t *r, int64_t grace_s, bs_err_t *err);
int bs__registry_gc_cache(bs_registry_t *r, int64_t grace_s, bs_err_t *err);
void bs__registry_gc_stop(bs_registry_t *r);

/* Commits a write that changes what serving routes (models, versions, aliases): bumps
 * the "registry" change generation in the transaction first, so every replica rebuilds
 * its routing snapshot (store/changes.h). On failure the transaction is rolled back. */
int bs__registry_commit(bs_registry_t *r, bs_err_t *err);
void bs__registry_changed(bs_registry_t *r);
/* Tells the event hook (if any) about a committed change. */
void bs__registry_event(bs_registry_t *r, const char *tenant, const char *type,
                        const char *subject, const char *data_json);
int bs__registry_model_id(bs_registry_t *r, const char *tenant, const char *name, char *id,
                          bs_err_t *err);
/* Adds an audit record (inside the caller's transaction). before/after: JSON text or NULL. */
int bs__registry_audit(bs_registry_t *r, const bs_principal_t *who, const char *action,
                       const char *resource, const char *before, const char *after, bs_err_t *err);

#endif
