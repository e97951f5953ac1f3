/* Tenants, API keys and rate limits; see auth.h for the design. */
#include "auth/auth.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/id.h"
#include "base/rcu.h"
#include "base/time.h"
#include "store/changes.h"

typedef struct {
    char id[33]; /* hex without dashes, the token's lookup part */
    char uuid[40];
    char tenant[64];
    char salt[33];
    char hash[65];
    bs_role_t role;
    double rate_rps, rate_burst;
    int64_t expires_at;
    unsigned scopes;
} key_entry_t;

typedef struct {
    int n;
    key_entry_t *keys; /* sorted by id */
} key_snapshot_t;

typedef struct bucket {
    struct bucket *next;
    char id[40];
    double tokens;
    uint64_t last_ns;
} bucket_t;

#define N_BUCKET_HEADS 256

struct bs_auth {
    bs_meta_t *meta;
    double default_rps, default_burst;
    _Atomic(key_snapshot_t *) snap;
    pthread_mutex_t write_lock; /* serialises snapshot rebuilds */
    pthread_mutex_t bucket_lock;
    bucket_t *buckets[N_BUCKET_HEADS];
    int (*on_change)(void *ud, bs_err_t *err); /* NULL: reload() */
    void *on_change_ud;
    bs_ratelimit_t *shared; /* set once before serving: limits global through Redis */
};

static void snapshot_free(void *p)
{
    key_snapshot_t *s = p;
    if (s) {
        free(s->keys);
        free(s);
    }
}

static int cmp_key(const void *x, const void *y)
{
    return strcmp(((const key_entry_t *)x)->id, ((const key_entry_t *)y)->id);
}

typedef struct {
    key_entry_t *v;
    int n, cap;
} load_ctx_t;

static void strip_dashes(const char *uuid, char *out)
{
    int k = 0;
    for (const char *p = uuid; *p && k < 32; p++)
        if (*p != '-')
            out[k++] = *p;
    out[k] = '\0';
}

/* Scopes are stored as comma-separated names. A name this version does not know (written
 * by a newer one) sets SCOPE_UNKNOWN, so the key stays narrowed — to nothing this version
 * serves — instead of widening to its role's full reach. */
#define SCOPE_UNKNOWN 0x80000000u

static unsigned scopes_from_text(const char *s)
{
    unsigned bits = 0;
    while (s && *s) {
        const char *comma = strchr(s, ',');
        size_t n = comma ? (size_t)(comma - s) : strlen(s);
        char name[32];
        if (n && n < sizeof name) {
            memcpy(name, s, n);
            name[n] = '\0';
            unsigned bit = bs_scope_parse(name);
            bits |= bit ? bit : SCOPE_UNKNOWN;
        } else if (n) {
            bits |= SCOPE_UNKNOWN;
        }
        s = comma ? comma + 1 : NULL;
    }
    return bits;
}

static void scopes_to_text(unsigned bits, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (unsigned bit = 1; bit & BS_SCOPES_ALL; bit <<= 1)
        if (bits & bit)
            len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, "%s%s", len ? "," : "",
                                    bs_scope_name(bit));
}

static int load_row(const bs_meta_row_t *r, void *ud)
{
    load_ctx_t *c = ud;
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 16;
        key_entry_t *v = realloc(c->v, (size_t)cap * sizeof *v);
        if (!v)
            return 1;
        c->v = v;
        c->cap = cap;
    }
    key_entry_t *e = &c->v[c->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->uuid, sizeof e->uuid, "%s", bs_meta_row_text(r, 0));
    strip_dashes(e->uuid, e->id);
    snprintf(e->tenant, sizeof e->tenant, "%s", bs_meta_row_text(r, 1));
    e->role = (bs_role_t)bs_role_parse(bs_meta_row_text(r, 2));
    snprintf(e->salt, sizeof e->salt, "%s", bs_meta_row_text(r, 3));
    snprintf(e->hash, sizeof e->hash, "%s", bs_meta_row_text(r, 4));
    e->rate_rps = bs_meta_row_double(r, 5);
    e->rate_burst = bs_meta_row_double(r, 6);
    e->expires_at = bs_meta_row_int(r, 7);
    e->scopes = scopes_from_text(bs_meta_row_text(r, 8));
    return 0;
}

/* Rebuilds the snapshot from the store and publishes it. */
static int reload(bs_auth_t *a, bs_err_t *err)
{
    pthread_mutex_lock(&a->write_lock);
    load_ctx_t c = {0};
    int rc = bs_meta_query(a->meta,
                           "SELECT id, tenant, role, salt, hash, COALESCE(rate_rps,0),"
                           " COALESCE(rate_burst,0), COALESCE(expires_at,0), scopes FROM api_keys",
                           NULL, 0, load_row, &c, err);
    key_snapshot_t *s = calloc(1, sizeof *s);
    if (rc || !s) {
        free(c.v);
        free(s);
        pthread_mutex_unlock(&a->write_lock);
        return rc ? rc : bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    if (c.n > 1) /* qsort(NULL, 0, ...) is undefined: an empty store has c.v == NULL */
        qsort(c.v, (size_t)c.n, sizeof *c.v, cmp_key);
    s->n = c.n;
    s->keys = c.v;
    key_snapshot_t *old = atomic_exchange(&a->snap, s);
    pthread_mutex_unlock(&a->write_lock);
    bs_rcu_retire(old, snapshot_free);
    return 0;
}

bs_auth_t *bs_auth_new(bs_meta_t *meta, double default_rps, double default_burst, bs_err_t *err)
{
    bs_auth_t *a = calloc(1, sizeof *a);
    if (!a) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    a->meta = meta;
    a->default_rps = default_rps;
    a->default_burst = default_burst;
    pthread_mutex_init(&a->write_lock, NULL);
    pthread_mutex_init(&a->bucket_lock, NULL);
    if (reload(a, err) != 0) {
        bs_auth_free(a);
        return NULL;
    }
    return a;
}

void bs_auth_free(bs_auth_t *a)
{
    if (!a)
        return;
    bs_ratelimit_free(a->shared);
    snapshot_free(atomic_load(&a->snap));
    for (int i = 0; i < N_BUCKET_HEADS; i++) {
        bucket_t *b = a->buckets[i];
        while (b) {
            bucket_t *n = b->next;
            free(b);
            b = n;
        }
    }
    pthread_mutex_destroy(&a->write_lock);
    pthread_mutex_destroy(&a->bucket_lock);
    free(a);
}

int bs_auth_verify(bs_auth_t *a, const char *token, size_t len, bs_principal_t *who, bs_err_t *err)
{
    /* bsk_ + 32 hex id + _ + 64 hex secret */
    if (len != 4 + 32 + 1 + 64 || memcmp(token, "bsk_", 4) != 0 || token[36] != '_')
        return bs_err_set(err, BS_EUNAUTH, "invalid API key");
    char id[33];
    memcpy(id, token + 4, 32);
    id[32] = '\0';
    key_snapshot_t *s = atomic_load_explicit(&a->snap, memory_order_acquire);
    int lo = 0, hi = s->n - 1;
    const key_entry_t *e = NULL;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(s->keys[mid].id, id);
        if (c == 0) {
            e = &s->keys[mid];
            break;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    if (!e)
        return bs_err_set(err, BS_EUNAUTH, "invalid API key");
    char hash[65];
    bs_sha256_hex2(e->salt, strlen(e->salt), token + 37, 64, hash);
    if (!bs_ct_equal(hash, e->hash, 64))
        return bs_err_set(err, BS_EUNAUTH, "invalid API key");
    if (e->expires_at && bs_time_wall_ms() >= e->expires_at)
        return bs_err_set(err, BS_EUNAUTH, "API key has expired");
    snprintf(who->key_id, sizeof who->key_id, "%s", e->uuid);
    snprintf(who->tenant, sizeof who->tenant, "%s", e->tenant);
    who->role = e->role;
    who->rate_rps = e->rate_rps;
    who->rate_burst = e->rate_burst;
    who->scopes = e->scopes;
    return 0;
}

int bs_auth_charge(bs_auth_t *a, const bs_principal_t *who, double *retry_after_s)
{
    double rate = who->rate_rps > 0 ? who->rate_rps : a->default_rps;
    if (rate <= 0)
        return 0;
    double burst = who->rate_burst > 0 ? who->rate_burst : (a->default_burst > 0 ? a->default_burst : rate);
    if (burst < 1)
        burst = 1;
    if (a->shared)
        return bs_ratelimit_charge(a->shared, who->key_id, rate, burst, retry_after_s);
    unsigned h = 0;
    for (const char *p = who->key_id; *p; p++)
        h = h * 31 + (unsigned char)*p;
    h %= N_BUCKET_HEADS;
    uint64_t now = bs_time_mono_ns();
    int rc = 0;
    pthread_mutex_lock(&a->bucket_lock);
    bucket_t *b = a->buckets[h];
    while (b && strcmp(b->id, who->key_id) != 0)
        b = b->next;
    if (!b) {
        b = calloc(1, sizeof *b);
        if (!b) {
            pthread_mutex_unlock(&a->bucket_lock);
            return 0;
        }
        snprintf(b->id, sizeof b->id, "%s", who->key_id);
        b->tokens = burst;
        b->last_ns = now;
        b->next = a->buckets[h];
        a->buckets[h] = b;
    }
    b->tokens += (double)(now - b->last_ns) / 1e9 * rate;
    if (b->tokens > burst)
        b->tokens = burst;
    b->last_ns = now;
    if (b->tokens >= 1) {
        b->tokens -= 1;
    } else {
        *retry_after_s = (1 - b->tokens) / rate;
        rc = BS_ERATE;
    }
    pthread_mutex_unlock(&a->bucket_lock);
    return rc;
}

/* Runs one key or tenant write in a transaction that also bumps the "auth" change
 * generation, so every replica's watcher reloads its key snapshot. */
static int write_bumped(bs_auth_t *a, const char *sql, const bs_val_t *args, int nargs,
                        int *changes, bs_err_t *err)
{
    int rc = bs_meta_tx_begin(a->meta, err);
    if (rc)
        return rc;
    if ((rc = bs_meta_exec(a->meta, sql, args, nargs, changes, err)) ||
        ((!changes || *changes) && (rc = bs_changes_bump(a->meta, "auth", err)))) {
        bs_meta_tx_rollback(a->meta);
        return rc;
    }
    return bs_meta_tx_commit(a->meta, err);
}

/* After a committed write: this process's snapshot first (read your writes). */
static int changed(bs_auth_t *a, bs_err_t *err)
{
    return a->on_change ? a->on_change(a->on_change_ud, err) : reload(a, err);
}

void bs_auth_on_change(bs_auth_t *a, int (*fn)(void *ud, bs_err_t *err), void *ud)
{
    a->on_change = fn;
    a->on_change_ud = ud;
}

static int valid_name(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return 0;
    return 1;
}

static int mark_found(const bs_meta_row_t *r, void *ud)
{
    (void)r;
    *(int *)ud = 1;
    return 1;
}

/* 1 found, 0 not, or the store's error (BS_EUNAVAIL while PostgreSQL is down: not a
 * 404 for a tenant that may well exist). */
static int tenant_lookup(bs_auth_t *a, const char *name, bs_err_t *err)
{
    int found = 0;
    bs_val_t arg = BS_TXT(name);
    int rc = bs_meta_query(a->meta, "SELECT 1 FROM tenants WHERE name = ?", &arg, 1, mark_found,
                           &found, err);
    return rc ? rc : found;
}

int bs_auth_tenant_exists(bs_auth_t *a, const char *name) { return tenant_lookup(a, name, NULL) > 0; }

int bs_auth_tenant_create(bs_auth_t *a, const char *name, bs_tenant_t *out, bs_err_t *err)
{
    if (!valid_name(name, 63))
        return bs_err_setf(err, BS_EINVAL, "name",
                           "tenant name must be 1-63 characters of a-z, 0-9, '-' or '_'");
    memset(out, 0, sizeof *out);
    bs_uuid7_ordered(out->id);
    snprintf(out->name, sizeof out->name, "%s", name);
    out->created_at = bs_time_wall_ms();
    bs_val_t args[] = {BS_TXT(out->id), BS_TXT(name), BS_INT(out->created_at)};
    int rc = write_bumped(a, "INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)", args,
                          3, NULL, err);
    if (rc == BS_ECONFLICT)
        return bs_err_setf(err, BS_ECONFLICT, "name", "tenant '%s' already exists", name);
    return rc ? rc : changed(a, err);
}

typedef struct {
    bs_tenant_t *out;
    int n, limit;
} tenant_list_t;

static int tenant_row(const bs_meta_row_t *r, void *ud)
{
    tenant_list_t *l = ud;
    bs_tenant_t *t = &l->out[l->n++];
    snprintf(t->id, sizeof t->id, "%s", bs_meta_row_text(r, 0));
    snprintf(t->name, sizeof t->name, "%s", bs_meta_row_text(r, 1));
    t->created_at = bs_meta_row_int(r, 2);
    return l->n >= l->limit;
}

int bs_auth_tenant_list(bs_auth_t *a, const char *cursor, int limit, bs_tenant_t *out, bs_err_t *err)
{
    tenant_list_t l = {out, 0, limit};
    bs_val_t args[] = {BS_TXT(cursor ? cursor : ""), BS_INT(limit)};
    int rc = bs_meta_query(a->meta,
                           "SELECT id, name, created_at FROM tenants WHERE name > ? ORDER BY name LIMIT ?",
                           args, 2, tenant_row, &l, err);
    return rc ? rc : l.n;
}

int bs_auth_tenant_get(bs_auth_t *a, const char *name, bs_tenant_t *out, bs_err_t *err)
{
    tenant_list_t l = {out, 0, 1};
    bs_val_t arg = BS_TXT(name);
    int rc = bs_meta_query(a->meta, "SELECT id, name, created_at FROM tenants WHERE name = ?", &arg,
                           1, tenant_row, &l, err);
    if (rc)
        return rc;
    return l.n ? 0 : bs_err_set(err, BS_ENOTFOUND, "tenant '%s' does not exist", name);
}

int bs_auth_key_create(bs_auth_t *a, const char *created_by, bs_key_info_t *info, char *secret,
                       bs_err_t *err)
{
    if (!info->name[0] || strlen(info->name) > 120)
        return bs_err_setf(err, BS_EINVAL, "name", "key name must be 1-120 characters");
    if (info->role < BS_ROLE_VIEWER || info->role > BS_ROLE_ADMIN)
        return bs_err_setf(err, BS_EINVAL, "role", "role must be admin, developer, predictor or viewer");
    int known = tenant_lookup(a, info->tenant, err);
    if (known < 0)
        return known;
    if (!known)
        return bs_err_setf(err, BS_ENOTFOUND, "tenant", "tenant '%s' does not exist", info->tenant);
    if (info->scopes & ~BS_SCOPES_ALL)
        return bs_err_setf(err, BS_EINVAL, "scopes", "unknown scope");
    if (info->rate_rps < 0 || info->rate_burst < 0 || !isfinite(info->rate_rps) ||
        !isfinite(info->rate_burst))
        return bs_err_setf(err, BS_EINVAL, "rate_limit", "rate limits must be finite and >= 0");
    bs_uuid7_ordered(info->id);
    info->created_at = bs_time_wall_ms();
    snprintf(info->created_by, sizeof info->created_by, "%s", created_by ? created_by : "");
    char salt[33], sec[65], hash[65], hexid[33];
    if (bs_random_hex(salt, 16) || bs_random_hex(sec, 32))
        return bs_err_set(err, BS_EIO, "no randomness available");
    bs_sha256_hex2(salt, 32, sec, 64, hash);
    strip_dashes(info->id, hexid);
    char scopes[64];
    scopes_to_text(info->scopes, scopes, sizeof scopes);
    bs_val_t args[] = {BS_TXT(info->id),
                       BS_TXT(info->name),
                       BS_TXT(info->tenant),
                       BS_TXT(bs_role_name(info->role)),
                       BS_TXT(salt),
                       BS_TXT(hash),
                       info->rate_rps > 0 ? BS_DBL(info->rate_rps) : BS_NUL,
                       info->rate_burst > 0 ? BS_DBL(info->rate_burst) : BS_NUL,
                       info->expires_at ? BS_INT(info->expires_at) : BS_NUL,
                       BS_INT(info->created_at),
                       BS_TXT(info->created_by),
                       BS_TXT(scopes)};
    int rc = write_bumped(a,
                          "INSERT INTO api_keys (id, name, tenant, role, salt, hash, rate_rps,"
                          " rate_burst, expires_at, created_at, created_by, scopes)"
                          " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                          args, 12, NULL, err);
    if (rc)
        return rc;
    snprintf(secret, BS_KEY_SECRET_MAX, "bsk_%s_%s", hexid, sec);
    return changed(a, err);
}

typedef struct {
    bs_key_info_t *out;
    int n, limit;
} key_list_t;

static int key_row(const bs_meta_row_t *r, void *ud)
{
    key_list_t *l = ud;
    bs_key_info_t *k = &l->out[l->n++];
    memset(k, 0, sizeof *k);
    snprintf(k->id, sizeof k->id, "%s", bs_meta_row_text(r, 0));
    snprintf(k->name, sizeof k->name, "%s", bs_meta_row_text(r, 1));
    snprintf(k->tenant, sizeof k->tenant, "%s", bs_meta_row_text(r, 2));
    k->role = (bs_role_t)bs_role_parse(bs_meta_row_text(r, 3));
    k->rate_rps = bs_meta_row_double(r, 4);
    k->rate_burst = bs_meta_row_double(r, 5);
    k->expires_at = bs_meta_row_int(r, 6);
    k->created_at = bs_meta_row_int(r, 7);
    snprintf(k->created_by, sizeof k->created_by, "%s", bs_meta_row_text(r, 8));
    k->scopes = scopes_from_text(bs_meta_row_text(r, 9)) & BS_SCOPES_ALL;
    return l->n >= l->limit;
}

int bs_auth_key_list(bs_auth_t *a, const char *tenant, const char *cursor, int limit,
                     bs_key_info_t *out, bs_err_t *err)
{
    key_list_t l = {out, 0, limit};
    bs_val_t args[] = {BS_TXT(tenant), BS_TXT(tenant), BS_TXT(cursor), BS_TXT(cursor), BS_INT(limit)};
    int rc = bs_meta_query(a->meta,
                           "SELECT id, name, tenant, role, COALESCE(rate_rps,0), COALESCE(rate_burst,0),"
                           " COALESCE(expires_at,0), created_at, COALESCE(created_by,''), scopes FROM api_keys"
                           " WHERE (? IS NULL OR tenant = ?) AND (? IS NULL OR id < ?)"
                           " ORDER BY id DESC LIMIT ?",
                           args, 5, key_row, &l, err);
    return rc ? rc : l.n;
}

int bs_auth_key_delete(bs_auth_t *a, const char *id, const char *tenant, bs_err_t *err)
{
    int changes = 0;
    bs_val_t args[] = {BS_TXT(id), BS_TXT(tenant), BS_TXT(tenant)};
    int rc = write_bumped(a, "DELETE FROM api_keys WHERE id = ? AND (? IS NULL OR tenant = ?)",
                          args, 3, &changes, err);
    if (rc)
        return rc;
    if (!changes)
        return bs_err_setf(err, BS_ENOTFOUND, "id", "no API key '%.40s'", id);
    return changed(a, err);
}

static int count_row(const bs_meta_row_t *r, void *ud)
{
    *(int64_t *)ud = bs_meta_row_int(r, 0);
    return 1;
}

int bs_auth_bootstrap(bs_auth_t *a, char *secret, int *created, bs_err_t *err)
{
    *created = 0;
    /* One transaction, so under the store's write lock: replicas starting together on an
     * empty PostgreSQL database create the default tenant and the first admin key once;
     * the others wait, then find them (the key count is read from the store, not from
     * this process's snapshot). */
    int rc = bs_meta_tx_begin(a->meta, err);
    if (rc)
        return rc;
    int known = tenant_lookup(a, BS_DEFAULT_TENANT, err);
    if (known < 0) {
        rc = known;
        goto fail;
    }
    if (!known) {
        bs_tenant_t t;
        if ((rc = bs_auth_tenant_create(a, BS_DEFAULT_TENANT, &t, err)))
            goto fail;
    }
    int64_t keys = -1;
    if ((rc = bs_meta_query(a->meta, "SELECT COUNT(*) FROM api_keys", NULL, 0, count_row, &keys,
                            err)))
        goto fail;
    if (keys == 0) {
        bs_key_info_t info = {.role = BS_ROLE_ADMIN};
        snprintf(info.name, sizeof info.name, "bootstrap-admin");
        snprintf(info.tenant, sizeof info.tenant, BS_DEFAULT_TENANT);
        if ((rc = bs_auth_key_create(a, "bootstrap", &info, secret, err)))
            goto fail;
    }
    if ((rc = bs_meta_tx_commit(a->meta, err))) {
        reload(a, NULL); /* the snapshot saw the key the failed commit dropped */
        return rc;
    }
    *created = keys == 0;
    /* keys > 0: another replica may have made them after this one's snapshot was read */
    return keys == 0 ? 0 : reload(a, err);
fail:
    bs_meta_tx_rollback(a->meta);
    reload(a, NULL);
    return rc;
}

int bs_auth_reload(bs_auth_t *a, bs_err_t *err)
{
    return reload(a, err);
}

int bs_auth_share_limits(bs_auth_t *a, const char *redis_url, bs_err_t *err)
{
    if (a->shared)
        return bs_err_set(err, BS_EINVAL, "the rate limits are already shared");
    a->shared = bs_ratelimit_new(redis_url, NULL, err);
    return a->shared ? 0 : err->code;
}

int bs_auth_limits_stats(bs_auth_t *a, bs_ratelimit_stats_t *out)
{
    if (!a->shared)
        return 0;
    bs_ratelimit_stats(a->shared, out);
    return 1;
}
