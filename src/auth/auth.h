/*
 * Tenants and API keys.
 *
 * A key is shown once as "bsk_<id>_<secret>": <id> is a UUIDv7 without dashes
 * (32 hex), <secret> 32 random bytes in hex. The store keeps only a random
 * salt and SHA-256(salt || secret); verification compares in constant time.
 * Verified keys are served from an in-memory snapshot (sorted by id, read
 * without locks, replaced through QSBR on every change), so authenticating a
 * request costs a binary search and one SHA-256.
 *
 * Rate limits: a token bucket per key (rate and burst from the key or the
 * configured default; rate 0 = unlimited), guarded by a small mutex.
 *
 * Tenancy: every key belongs to one tenant. Admins of the "default" tenant
 * manage all tenants; admins of other tenants manage only their own keys.
 */
#ifndef BS_AUTH_AUTH_H
#define BS_AUTH_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/principal.h"
#include "store/meta.h"

typedef struct bs_auth bs_auth_t;

typedef struct {
    char id[40];
    char name[128];
    char tenant[64];
    bs_role_t role;
    double rate_rps, rate_burst; /* 0 = default */
    int64_t expires_at;          /* ms since epoch; 0 = never */
    int64_t created_at;
    char created_by[40];
    unsigned scopes; /* BS_SCOPE_* bits; 0 = the role's full reach */
} bs_key_info_t;

typedef struct {
    char id[40];
    char name[64];
    int64_t created_at;
} bs_tenant_t;

#define BS_KEY_SECRET_MAX 128

/* Loads keys from meta (borrowed; must outlive the auth). NULL with err. */
bs_auth_t *bs_auth_new(bs_meta_t *meta, double default_rps, double default_burst, bs_err_t *err);
void bs_auth_free(bs_auth_t *a);
/* Rebuilds the key snapshot from the store: picks up keys another process wrote into
 * it (`basalt keys create --data`; the server calls this on SIGHUP). Thread-safe. */
int bs_auth_reload(bs_auth_t *a, bs_err_t *err);
/* Every key or tenant write bumps the "auth" change generation in its transaction
 * (store/changes.h), then rebuilds this process's snapshot before returning: by
 * calling fn(ud, err) when set (the server's change watcher, which reloads and notes
 * the generation as seen), else bs_auth_reload. Set before the auth is shared. */
void bs_auth_on_change(bs_auth_t *a, int (*fn)(void *ud, bs_err_t *err), void *ud);

/* On a store with no keys: creates tenant "default" and an admin key, writing its
 * secret into secret (BS_KEY_SECRET_MAX bytes) and setting *created. */
int bs_auth_bootstrap(bs_auth_t *a, char *secret, int *created, bs_err_t *err);

/* Verifies a token. 0 and who filled, or BS_EUNAUTH (unknown, bad or expired key). Thread-safe. */
int bs_auth_verify(bs_auth_t *a, const char *token, size_t len, bs_principal_t *who, bs_err_t *err);
/* Charges one request. 0, or BS_ERATE with the seconds until a token is available. */
int bs_auth_charge(bs_auth_t *a, const bs_principal_t *who, double *retry_after_s);

/* Creates a key; info's id/created_at are filled, secret receives the token.
 * Errors: BS_EINVAL (bad name/role/tenant/limits), BS_ENOTFOUND (no such tenant). */
int bs_auth_key_create(bs_auth_t *a, const char *created_by, bs_key_info_t *info, char *secret,
                       bs_err_t *err);
/* Lists keys of tenant (NULL: all) newest first, after cursor id (NULL: from the start),
 * at most limit. Returns the count or a negative error. out holds limit entries. */
int bs_auth_key_list(bs_auth_t *a, const char *tenant, const char *cursor, int limit,
                     bs_key_info_t *out, bs_err_t *err);
/* Deletes a key (of tenant, unless NULL). BS_ENOTFOUND if absent. */
int bs_auth_key_delete(bs_auth_t *a, const char *id, const char *tenant, bs_err_t *err);

/* Tenants: names are 1-63 chars of [a-z0-9_-]. BS_ECONFLICT if the name exists. */
int bs_auth_tenant_create(bs_auth_t *a, const char *name, bs_tenant_t *out, bs_err_t *err);
int bs_auth_tenant_list(bs_auth_t *a, const char *cursor, int limit, bs_tenant_t *out, bs_err_t *err);
int bs_auth_tenant_exists(bs_auth_t *a, const char *name);
/* Fills out with the tenant called name; BS_ENOTFOUND if there is none. */
int bs_auth_tenant_get(bs_auth_t *a, const char *name, bs_tenant_t *out, bs_err_t *err);

#endif
