/*
 * The audit log's writer: one row per change (who, what, the resource before and
 * after), written inside the changing transaction so it commits with it. The
 * registry, the declarative resources and later subsystems write here; the
 * registry serves the reads (GET /v1/audit).
 */
#ifndef BS_STORE_AUDIT_H
#define BS_STORE_AUDIT_H

#include "base/err.h"
#include "store/meta.h"

/* Appends a row: tenant and actor (key id) of the caller, action ("model.created"),
 * resource ("models/fraud"), before/after JSON texts or NULL. Call inside the write
 * transaction. 0 or the store's error. */
int bs_audit_write(bs_meta_t *m, const char *tenant, const char *actor, const char *action,
                   const char *resource, const char *before, const char *after, bs_err_t *err);

#endif
