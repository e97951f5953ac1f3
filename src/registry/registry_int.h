/* Private to src/registry. */
#ifndef BS_REGISTRY_REGISTRY_INT_H
#define BS_REGISTRY_REGISTRY_INT_H

#include "base/json.h"
#include "registry/registry.h"

struct bs_registry {
    bs_meta_t *meta;
    char dir[1024];
    void (*on_change)(void *ud);
    void *on_change_ud;
};

void bs__registry_changed(bs_registry_t *r);
int bs__registry_model_id(bs_registry_t *r, const char *tenant, const char *name, char *id,
                          bs_err_t *err);
/* Adds an audit record (inside the caller's transaction). before/after: JSON text or NULL. */
int bs__registry_audit(bs_registry_t *r, const bs_principal_t *who, const char *action,
                       const char *resource, const char *before, const char *after, bs_err_t *err);

#endif
