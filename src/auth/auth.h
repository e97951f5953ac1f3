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
 * configured default; rate 0 = unlimited), guarded by a small mutex. With Redis
 * (bs_auth_share_limits) the bucket of each key is global, shared by all replicas:
 * see bs_ratelimit_t below and docs/architecture.md "Rate limits across replicas".
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
#include "store/kv.h"
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

/* ---- rate limits shared by replicas (ratelimit.c) --------------------------------------
 *
 * Local slices of a global budget. The token bucket of each key lives in Redis
 * (RL_SCRIPT refills it from Redis TIME and grants up to N tokens atomically). Each
 * replica admits requests from the slice of tokens it holds, with no network on the
 * calling thread; a background thread refills slices before they run out (one pipelined
 * round trip for every key that needs one), sized to about slice_ms of the key's rate or
 * the demand seen since the last refill, at least 1 and at most the burst, and gives an
 * idle key's unused slice back. The bounds this keeps (over- and under-admission, the
 * first request of an idle key, Retry-After) are in docs/architecture.md.
 *
 * With Redis unreachable (a failed round trip, or one stalled past stall_ms) every
 * decision falls back to a per-replica token bucket, as without Redis; the transition is
 * logged once, and once more on recovery, which the background thread probes for by
 * itself (the kv client's backoff).
 *
 * Threads: bs_ratelimit_charge is for the I/O threads (a mutex held for a hash lookup
 * and a few additions; never the network). The Redis connection belongs to the
 * background thread. bs_ratelimit_stats: any thread. */
typedef struct bs_ratelimit bs_ratelimit_t;

typedef struct {
    int slice_ms;         /* slice size in time of the key's rate; 0: 50 */
    int idle_ms;          /* a key unused this long gives its slice back; 0: 1000 */
    int stall_ms;         /* a refill round outstanding this long -> local decisions; 0: 500 */
    const char *prefix;   /* Redis key prefix, copied; NULL: "basalt:rl:" */
    bs_kv_opts_t kv;      /* zeros: 250 ms timeouts, backoff 100 ms to 2 s */
} bs_ratelimit_opts_t;

typedef struct {
    int shared;                     /* 1 while decisions use the global buckets */
    uint64_t fallback_decisions;    /* decisions taken locally because Redis was unavailable */
    uint64_t fallback_transitions;  /* times the limits fell back to per-replica buckets */
    uint64_t refill_rounds;         /* pipelined round trips to Redis */
    uint64_t tokens_granted;        /* tokens Redis granted to this replica */
    bs_kv_stats_t kv;
} bs_ratelimit_stats_t;

/* Connects to redis_url (copied) and starts the refill thread. A Redis that is down at
 * start is not an error: the limits start in fallback (logged) and go global when it is
 * reachable. NULL with err: a bad URL (BS_EINVAL), no thread or memory. */
bs_ratelimit_t *bs_ratelimit_new(const char *redis_url, const bs_ratelimit_opts_t *opts,
                                 bs_err_t *err);
/* Stops the thread and gives the unused slices back to Redis (best effort). */
void bs_ratelimit_free(bs_ratelimit_t *rl);
/* Charges one request of key_id (rate > 0 requests/s, burst >= 1). 0, or BS_ERATE with
 * the seconds until a retry may succeed. Thread-safe, non-blocking. */
int bs_ratelimit_charge(bs_ratelimit_t *rl, const char *key_id, double rate, double burst,
                        double *retry_after_s);
void bs_ratelimit_stats(bs_ratelimit_t *rl, bs_ratelimit_stats_t *out);
/* The Lua script of the global bucket (KEYS[1] the bucket; ARGV rate, burst, want), for
 * benchmarks that run it once per decision. Static. */
const char *bs_ratelimit_script(void);

/* Makes a's limits global through Redis at redis_url (bs_ratelimit_new; a owns it). */
int bs_auth_share_limits(bs_auth_t *a, const char *redis_url, bs_err_t *err);
/* 1 and out filled when a's limits are shared through Redis, else 0. Any thread. */
int bs_auth_limits_stats(bs_auth_t *a, bs_ratelimit_stats_t *out);

#endif
