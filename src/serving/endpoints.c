/*
 * Endpoints (endpoints.h): the Endpoint spec (parse, check against the registry,
 * normalise, render), the routing snapshot of every tenant's endpoints, the per-request
 * draws (route, shadow, log sampling), the bandit's arms and the per-variant metrics.
 *
 * Design:
 * - The snapshot is a sorted array of immutable bs_endpoint_t (by tenant, name) published
 *   by an atomic pointer swap; the old one is retired through QSBR (base/rcu.h), so
 *   lookups take no lock. Rebuilds (bs_endpoints_rebuild) are serialised by rebuild_mu.
 * - Long-lived state per (tenant, endpoint) — struct bs__endpoint_state — survives
 *   rebuilds: the sticky hash's key (derived from the endpoint's name once), the bandit's
 *   arms (by variant name) and the metrics series (by variant name and version). Each
 *   snapshot's endpoints point at it. A state whose endpoint left the store is unlinked
 *   at the rebuild and freed after a grace period, like the snapshot that pointed at it.
 * - Series and arms are open-addressing tables of fixed size whose entries are claimed
 *   under the state's mutex and published by a release store of their key, so the hot
 *   path finds them with acquire loads and no lock. Series counters are sharded by
 *   thread (serving_int.h bs__stat_shard), so two I/O threads never write one cache line.
 * - The rewards timer: a thread that wakes every second and, while a rewards source is
 *   set (the monitor's), asks it for the counts of each Thompson endpoint's routes and
 *   stores them in the arms. It is a QSBR reader only during a pass.
 *
 * Locks: rebuild_mu (rebuilds, the tenant hook) → states_mu (the state list: rebuilds,
 * /metrics) → a state's mu (claiming entries). pass_mu is held for a whole rewards pass;
 * setting the source takes it too, so no call to a source runs once it was replaced.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/json.h"
#include "base/log.h"
#include "base/rcu.h"
#include "base/time.h"
#include "http/client.h"
#include "monitor/stats.h"
#include "serving/endpoints.h"
#include "serving/endpoints_int.h"
#include "serving/serving_int.h"
#include "store/resources.h"

#define SERIES_CAP 256 /* (variant, version) pairs per endpoint ever seen: a power of 2 */
#define ARMS_CAP 64    /* variant names per endpoint ever seen: a power of 2 */
#define POINTS 10000   /* the sticky and weighted draws: a point in [0, POINTS) */

/* The latency buckets: the same bounds as the per-version histogram (predict.c). */
static const double buckets[BS__SERVING_BUCKETS] = {0.00001, 0.000025, 0.00005, 0.0001, 0.00025,
                                                    0.0005,  0.001,    0.0025,  0.005,  0.01,
                                                    0.025,   0.05,     0.1,     0.25,   0.5,
                                                    1,       5};

/* ---- hashing: SipHash-2-4 (Aumasson & Bernstein, "SipHash: a fast short-input PRF") ---- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

static uint64_t load64_le(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

uint64_t bs__endpoints_siphash(uint64_t k0, uint64_t k1, const void *data, size_t len)
{
    const unsigned char *in = data;
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    size_t full = len & ~(size_t)7;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = load64_le(in + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t i = 0; i < (len & 7); i++)
        b |= (uint64_t)in[full + i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* The sticky hash's key for an endpoint: two SipHashes of its name under fixed keys
 * (so the assignment depends on the name and the key's value only, on every replica). */
static void sticky_key(const char *name, uint64_t *k0, uint64_t *k1)
{
    size_t n = strlen(name);
    *k0 = bs__endpoints_siphash(0x62617361746c2d30ULL, 0x656e64706f696e74ULL, name, n);
    *k1 = bs__endpoints_siphash(0x656e64706f696e74ULL, 0x62617361746c2d31ULL, name, n);
}

/* A 64-bit value onto [0, n): the high half of the 128-bit product (Lemire's reduction). */
static int reduce(uint64_t h, uint32_t n) { return (int)(((unsigned __int128)h * n) >> 64); }

/* ---- thread-local randomness: one generator per thread (monitor/stats.h's xoshiro256**),
 * seeded at its first use from the clock, its address and a counter ---------------------- */

static bs_stats_rng_t *tls_rng(void)
{
    static _Thread_local bs_stats_rng_t rng;
    static _Thread_local int seeded;
    if (!seeded) {
        static _Atomic uint64_t counter;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        bs_stats_rng_seed(&rng, ((uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec) ^
                                    (uint64_t)(uintptr_t)&rng ^
                                    (atomic_fetch_add(&counter, 1) << 48));
        seeded = 1;
    }
    return &rng;
}

/* ---- long-lived state ------------------------------------------------------------------ */

typedef struct {
    _Alignas(64) _Atomic uint64_t requests;
    _Atomic uint64_t errors, sum_ns, shadow_requests, shadow_errors;
    _Atomic uint64_t hist[BS__SERVING_BUCKETS + 1];
    _Atomic uint64_t errors_by_code[BS_ERR_COUNT];
} shard_t;

typedef struct {
    char variant[64];
    int version;
    shard_t shards[BS__STAT_SHARDS];
} series_t;

typedef struct {
    _Atomic uint64_t key; /* 0: free; else the entry's hash | 1, stored last (release) */
    series_t *s;
} series_slot_t;

typedef struct {
    _Atomic uint64_t key;
    char name[64];
    _Atomic int64_t successes, failures;
} arm_t;

struct bs__endpoint_state {
    struct bs__endpoint_state *next; /* e->states (states_mu) */
    char tenant[64], name[64];
    uint64_t k0, k1;    /* the sticky hash's key */
    uint64_t seen_gen;  /* the last rebuild that found it (rebuild_mu) */
    pthread_mutex_t mu; /* claiming series and arms */
    _Atomic uint64_t series_full; /* records dropped: SERIES_CAP series in use */
    series_slot_t series[SERIES_CAP];
    arm_t arms[ARMS_CAP];
};

typedef struct bs__endpoint_state state_t;

typedef struct {
    int n;
    bs_endpoint_t **v; /* sorted by (tenant, name) */
} snap_t;

struct bs_endpoints {
    bs_meta_t *meta;
    bs_serving_t *serving;
    _Atomic(snap_t *) snap;
    pthread_mutex_t rebuild_mu;
    uint64_t gen; /* rebuilds so far (rebuild_mu) */
    pthread_mutex_t states_mu;
    state_t *states;
    bs_endpoints_tenant_fn on_rebuild; /* rebuild_mu */
    void *on_rebuild_ud;
    /* the rewards source and its timer */
    pthread_mutex_t pass_mu;
    bs_endpoint_rewards_fn rewards_fn;
    void *rewards_ud;
    pthread_mutex_t timer_mu;
    pthread_cond_t timer_cv;
    int stop, timer_started;
    pthread_t timer;
};

static uint64_t name_hash(const char *s, size_t n, int version)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    h ^= (uint64_t)(uint32_t)version * 0x9e3779b97f4a7c15ULL;
    h ^= h >> 29;
    return h | 1;
}

static state_t *state_new(const char *tenant, const char *name)
{
    state_t *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    snprintf(st->tenant, sizeof st->tenant, "%s", tenant);
    snprintf(st->name, sizeof st->name, "%s", name);
    sticky_key(name, &st->k0, &st->k1);
    pthread_mutex_init(&st->mu, NULL);
    return st;
}

static void state_free(void *p)
{
    state_t *st = p;
    if (!st)
        return;
    for (int i = 0; i < SERIES_CAP; i++)
        free(st->series[i].s);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

/* The series of (variant, version): found without a lock, claimed under the state's
 * mutex when missing; NULL when the table is full (or out of memory). */
static series_t *series_find(state_t *st, const char *variant, int version)
{
    size_t n = strlen(variant);
    uint64_t h = name_hash(variant, n, version);
    for (uint32_t i = (uint32_t)h & (SERIES_CAP - 1), k = 0; k < SERIES_CAP;
         k++, i = (i + 1) & (SERIES_CAP - 1)) {
        series_slot_t *sl = &st->series[i];
        uint64_t key = atomic_load_explicit(&sl->key, memory_order_acquire);
        if (!key)
            break;
        if (key == h && sl->s->version == version && strcmp(sl->s->variant, variant) == 0)
            return sl->s;
    }
    pthread_mutex_lock(&st->mu);
    series_t *found = NULL;
    for (uint32_t i = (uint32_t)h & (SERIES_CAP - 1), k = 0; k < SERIES_CAP;
         k++, i = (i + 1) & (SERIES_CAP - 1)) {
        series_slot_t *sl = &st->series[i];
        uint64_t key = atomic_load_explicit(&sl->key, memory_order_relaxed);
        if (key == h && sl->s->version == version && strcmp(sl->s->variant, variant) == 0) {
            found = sl->s;
            break;
        }
        if (key)
            continue;
        series_t *s = aligned_alloc(64, sizeof *s);
        if (s) {
            memset(s, 0, sizeof *s);
            snprintf(s->variant, sizeof s->variant, "%s", variant);
            s->version = version;
            sl->s = s;
            atomic_store_explicit(&sl->key, h, memory_order_release);
        }
        found = s;
        break;
    }
    pthread_mutex_unlock(&st->mu);
    return found;
}

/* The arm of a variant name; claimed when missing if create, else NULL. */
static arm_t *arm_find(state_t *st, const char *name, int create)
{
    size_t n = strlen(name);
    uint64_t h = name_hash(name, n, 0);
    for (uint32_t i = (uint32_t)h & (ARMS_CAP - 1), k = 0; k < ARMS_CAP;
         k++, i = (i + 1) & (ARMS_CAP - 1)) {
        arm_t *a = &st->arms[i];
        uint64_t key = atomic_load_explicit(&a->key, memory_order_acquire);
        if (!key)
            break;
        if (key == h && strcmp(a->name, name) == 0)
            return a;
    }
    if (!create)
        return NULL;
    pthread_mutex_lock(&st->mu);
    arm_t *found = NULL;
    for (uint32_t i = (uint32_t)h & (ARMS_CAP - 1), k = 0; k < ARMS_CAP;
         k++, i = (i + 1) & (ARMS_CAP - 1)) {
        arm_t *a = &st->arms[i];
        uint64_t key = atomic_load_explicit(&a->key, memory_order_relaxed);
        if (key == h && strcmp(a->name, name) == 0) {
            found = a;
            break;
        }
        if (key)
            continue;
        snprintf(a->name, sizeof a->name, "%s", name);
        atomic_store_explicit(&a->key, h, memory_order_release);
        found = a;
        break;
    }
    pthread_mutex_unlock(&st->mu);
    return found;
}

/* ---- the spec -------------------------------------------------------------------------- */

static int is_integer(const cJSON *v, double lo, double hi, int *out)
{
    if (!cJSON_IsNumber(v))
        return 0;
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < lo || d > hi)
        return 0;
    *out = (int)d;
    return 1;
}

/* A variant name: [A-Za-z0-9._-]{1,63} (a metrics label and a header value as it is). */
static int valid_variant(const char *s)
{
    size_t n = 0;
    for (const char *p = s; *p; p++, n++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return 0;
    return n >= 1 && n <= 63;
}

/* The registry's alias rule: 1-64 of a-z, 0-9, '-', '_', not only digits. */
static int valid_alias(const char *s)
{
    size_t n = 0;
    int digits = 1;
    for (const char *p = s; *p; p++, n++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return 0;
        if (!(*p >= '0' && *p <= '9'))
            digits = 0;
    }
    return n >= 1 && n <= 64 && !digits;
}

/* An HTTP field name (RFC 9110 §5.1: a token). */
static int valid_header(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++, n++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("!#$%&'*+-.^_`|~", *p)))
            return 0;
    return n >= 1 && n <= 128;
}

/* Refuses a member of obj outside allowed, naming it under prefix ("routes[1].foo"). */
static int reject_unknown(const cJSON *obj, const char *prefix, const char *const *allowed,
                          bs_err_t *err)
{
    for (const cJSON *c = obj->child; c; c = c->next) {
        int ok = 0;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = c->string && strcmp(c->string, *a) == 0;
        if (!ok) {
            char f[96];
            snprintf(f, sizeof f, "%s%s%.48s", prefix, *prefix ? "." : "", c->string ? c->string : "");
            return bs_err_setf(err, BS_EINVAL, f, "unknown field '%s'", f);
        }
    }
    return 0;
}

/* One route or shadow entry of list `what` ("routes" / "shadow") at index i. */
static int parse_target(const cJSON *o, const char *what, int i, int shadow, int single,
                        bs_endpoint_route_t *r, bs_err_t *err)
{
    char f[64], ff[96];
    snprintf(f, sizeof f, "%s[%d]", what, i);
    if (!cJSON_IsObject(o))
        return bs_err_setf(err, BS_EINVAL, f, "%s must be an object", f);
    static const char *const route_keys[] = {"name", "version", "alias", "weight", NULL};
    static const char *const shadow_keys[] = {"name", "version", "alias", "fraction", NULL};
    int rc = reject_unknown(o, f, shadow ? shadow_keys : route_keys, err);
    if (rc)
        return rc;
    memset(r, 0, sizeof *r);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "version");
    const cJSON *al = cJSON_GetObjectItemCaseSensitive(o, "alias");
    if (v && cJSON_IsNull(v))
        v = NULL;
    if (al && cJSON_IsNull(al))
        al = NULL;
    if (!v == !al)
        return bs_err_setf(err, BS_EINVAL, f, "%s must name a version or an alias (exactly one)",
                           f);
    if (v) {
        snprintf(ff, sizeof ff, "%s.version", f);
        if (!is_integer(v, 1, 1e9, &r->version))
            return bs_err_setf(err, BS_EINVAL, ff, "%s must be an integer from 1 to 1000000000",
                               ff);
    } else {
        snprintf(ff, sizeof ff, "%s.alias", f);
        if (!cJSON_IsString(al) || !valid_alias(al->valuestring))
            return bs_err_setf(err, BS_EINVAL, ff,
                               "%s must be 1-64 characters of a-z, 0-9, '-' or '_' and not only "
                               "digits",
                               ff);
        snprintf(r->alias, sizeof r->alias, "%s", al->valuestring);
    }
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, "name");
    if (n && !cJSON_IsNull(n)) {
        snprintf(ff, sizeof ff, "%s.name", f);
        if (!cJSON_IsString(n) || !valid_variant(n->valuestring))
            return bs_err_setf(err, BS_EINVAL, ff,
                               "%s must be 1-63 characters of A-Z, a-z, 0-9, '.', '_' or '-'", ff);
        snprintf(r->name, sizeof r->name, "%s", n->valuestring);
    } else if (r->version) {
        snprintf(r->name, sizeof r->name, "v%d", r->version);
    } else {
        size_t al_len = strlen(r->alias);
        if (al_len >= sizeof r->name) /* a 64-character alias: a variant name is 1-63 */
            return bs_err_setf(err, BS_EINVAL, f,
                               "%s needs a \"name\": its alias is longer than a variant name "
                               "may be (63 characters)",
                               f);
        memcpy(r->name, r->alias, al_len + 1);
    }
    if (shadow) {
        const cJSON *fr = cJSON_GetObjectItemCaseSensitive(o, "fraction");
        snprintf(ff, sizeof ff, "%s.fraction", f);
        if (!fr)
            return bs_err_setf(err, BS_EINVAL, ff, "%s is required (the share of requests, "
                                                   "in (0, 1], also run on the shadow)", ff);
        if (!cJSON_IsNumber(fr) || !isfinite(fr->valuedouble) || fr->valuedouble <= 0 ||
            fr->valuedouble > 1)
            return bs_err_setf(err, BS_EINVAL, ff, "%s must be a number in (0, 1]", ff);
        r->fraction = fr->valuedouble;
    } else {
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(o, "weight");
        snprintf(ff, sizeof ff, "%s.weight", f);
        if (!w && single)
            r->weight = 100;
        else if (!w)
            return bs_err_setf(err, BS_EINVAL, ff,
                               "%s is required when there are several routes (an integer 0-100; "
                               "the weights sum to 100)",
                               ff);
        else if (!is_integer(w, 0, 100, &r->weight))
            return bs_err_setf(err, BS_EINVAL, ff, "%s must be an integer from 0 to 100", ff);
    }
    return 0;
}

static int parse_list(const cJSON *spec, const char *what, int shadow, int max,
                      bs_endpoint_route_t *out, int *n, bs_err_t *err)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(spec, what);
    *n = 0;
    if (!a || (shadow && cJSON_IsNull(a))) {
        if (shadow)
            return 0;
        return bs_err_setf(err, BS_EINVAL, what,
                           "routes is required: [{\"version\": N | \"alias\": A, \"weight\": W}, …]");
    }
    if (!cJSON_IsArray(a))
        return bs_err_setf(err, BS_EINVAL, what, "%s must be an array", what);
    int count = cJSON_GetArraySize(a);
    if ((!shadow && count < 1) || count > max)
        return bs_err_setf(err, BS_EINVAL, what, "%s must have %d to %d entries, got %d", what,
                           shadow ? 0 : 1, max, count);
    int i = 0;
    for (const cJSON *o = a->child; o; o = o->next, i++) {
        int rc = parse_target(o, what, i, shadow, count == 1, &out[i], err);
        if (rc)
            return rc;
    }
    *n = count;
    return 0;
}

int bs_endpoint_spec_parse(const char *tenant, const char *name, const cJSON *spec,
                           bs_endpoint_t *ep, bs_err_t *err)
{
    memset(ep, 0, sizeof *ep);
    if (!cJSON_IsObject(spec))
        return bs_err_setf(err, BS_EINVAL, "spec", "an endpoint's spec must be a JSON object");
    static const char *const keys[] = {"model",  "routes",  "shadow", "sticky",
                                       "policy", "logging", "logger", NULL};
    int rc = reject_unknown(spec, "", keys, err);
    if (rc)
        return rc;
    snprintf(ep->tenant, sizeof ep->tenant, "%s", tenant ? tenant : "");
    snprintf(ep->name, sizeof ep->name, "%s", name ? name : "");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(spec, "model");
    if (!m)
        return bs_err_setf(err, BS_EINVAL, "model", "model is required (the model's name)");
    if (!cJSON_IsString(m) || !m->valuestring[0] || strlen(m->valuestring) > 128)
        return bs_err_setf(err, BS_EINVAL, "model", "model must be a model's name (1-128 characters)");
    snprintf(ep->model, sizeof ep->model, "%s", m->valuestring);

    if ((rc = parse_list(spec, "routes", 0, BS_ENDPOINT_MAX_ROUTES, ep->routes, &ep->n_routes,
                         err)) != 0 ||
        (rc = parse_list(spec, "shadow", 1, BS_ENDPOINT_MAX_SHADOWS, ep->shadows, &ep->n_shadows,
                         err)) != 0)
        return rc;
    int sum = 0;
    for (int i = 0; i < ep->n_routes; i++)
        sum += ep->routes[i].weight;
    if (sum != 100)
        return bs_err_setf(err, BS_EINVAL, "routes",
                           "route weights must sum to 100, got %d", sum);
    /* Variant names are unique across routes and shadows: metrics, the log and the reports
     * tell variants apart by them. */
    for (int i = 0; i < ep->n_routes + ep->n_shadows; i++) {
        const bs_endpoint_route_t *a =
            i < ep->n_routes ? &ep->routes[i] : &ep->shadows[i - ep->n_routes];
        for (int k = 0; k < i; k++) {
            const bs_endpoint_route_t *b =
                k < ep->n_routes ? &ep->routes[k] : &ep->shadows[k - ep->n_routes];
            if (strcmp(a->name, b->name) == 0) {
                char f[64];
                snprintf(f, sizeof f, "%s[%d].name", i < ep->n_routes ? "routes" : "shadow",
                         i < ep->n_routes ? i : i - ep->n_routes);
                return bs_err_setf(err, BS_EINVAL, f,
                                   "variant name '%s' is used twice (routes and shadows need "
                                   "distinct names: set \"name\")",
                                   a->name);
            }
        }
    }

    const cJSON *st = cJSON_GetObjectItemCaseSensitive(spec, "sticky");
    if (st && !cJSON_IsNull(st)) {
        if (!cJSON_IsObject(st))
            return bs_err_setf(err, BS_EINVAL, "sticky",
                               "sticky must be {\"key\": FIELD} or {\"header\": NAME}");
        static const char *const sk[] = {"key", "header", NULL};
        if ((rc = reject_unknown(st, "sticky", sk, err)) != 0)
            return rc;
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(st, "key");
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(st, "header");
        if (!k == !h)
            return bs_err_setf(err, BS_EINVAL, "sticky",
                               "sticky must name an input field (key) or a header, exactly one");
        if (k) {
            if (!cJSON_IsString(k) || !k->valuestring[0] || strlen(k->valuestring) > 128)
                return bs_err_setf(err, BS_EINVAL, "sticky.key",
                                   "sticky.key must be an input field's name (1-128 characters)");
            snprintf(ep->sticky_field, sizeof ep->sticky_field, "%s", k->valuestring);
        } else {
            if (!cJSON_IsString(h) || !valid_header(h->valuestring))
                return bs_err_setf(err, BS_EINVAL, "sticky.header",
                                   "sticky.header must be an HTTP header name (a token of 1-128 "
                                   "characters)");
            size_t i = 0;
            for (; h->valuestring[i] && i < sizeof ep->sticky_header - 1; i++) {
                char c = h->valuestring[i];
                ep->sticky_header[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
            }
            ep->sticky_header[i] = '\0';
        }
    }

    ep->policy = BS_ENDPOINT_WEIGHTED;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(spec, "policy");
    if (p && !cJSON_IsNull(p)) {
        if (!cJSON_IsObject(p))
            return bs_err_setf(err, BS_EINVAL, "policy",
                               "policy must be {\"type\": \"weighted\"} or {\"type\": "
                               "\"thompson\", \"reward\": {\"label\": L}}");
        static const char *const pk[] = {"type", "reward", NULL};
        if ((rc = reject_unknown(p, "policy", pk, err)) != 0)
            return rc;
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "type");
        const cJSON *rw = cJSON_GetObjectItemCaseSensitive(p, "reward");
        if (!t || !cJSON_IsString(t) ||
            (strcmp(t->valuestring, "weighted") != 0 && strcmp(t->valuestring, "thompson") != 0))
            return bs_err_setf(err, BS_EINVAL, "policy.type",
                               "policy.type must be 'weighted' or 'thompson'");
        if (strcmp(t->valuestring, "thompson") == 0) {
            ep->policy = BS_ENDPOINT_THOMPSON;
            if (!cJSON_IsObject(rw))
                return bs_err_setf(err, BS_EINVAL, "policy.reward",
                                   "a thompson policy needs reward: {\"label\": L} (the feedback "
                                   "label that counts as a success)");
            static const char *const rk[] = {"label", NULL};
            if ((rc = reject_unknown(rw, "policy.reward", rk, err)) != 0)
                return rc;
            const cJSON *l = cJSON_GetObjectItemCaseSensitive(rw, "label");
            if (!l || !(cJSON_IsString(l) || cJSON_IsNumber(l) || cJSON_IsBool(l)) ||
                (cJSON_IsNumber(l) && !isfinite(l->valuedouble)))
                return bs_err_setf(err, BS_EINVAL, "policy.reward.label",
                                   "policy.reward.label must be a string, number or boolean");
            char *txt = cJSON_PrintUnformatted(l);
            if (!txt)
                return bs_err_set(err, BS_ENOMEM, "out of memory");
            size_t tl = strlen(txt);
            if (tl >= sizeof ep->reward_label) {
                free(txt);
                return bs_err_setf(err, BS_EINVAL, "policy.reward.label",
                                   "policy.reward.label is too long (%zu bytes as JSON, at most %zu)",
                                   tl, sizeof ep->reward_label - 1);
            }
            memcpy(ep->reward_label, txt, tl + 1);
            free(txt);
        } else if (rw && !cJSON_IsNull(rw)) {
            return bs_err_setf(err, BS_EINVAL, "policy.reward",
                               "only a thompson policy has a reward");
        }
    }

    ep->sample_rate = 1;
    const cJSON *lg = cJSON_GetObjectItemCaseSensitive(spec, "logging");
    if (lg && !cJSON_IsNull(lg)) {
        if (!cJSON_IsObject(lg))
            return bs_err_setf(err, BS_EINVAL, "logging",
                               "logging must be {\"sample_rate\": R} with R in [0, 1]");
        static const char *const lk[] = {"sample_rate", NULL};
        if ((rc = reject_unknown(lg, "logging", lk, err)) != 0)
            return rc;
        const cJSON *sr = cJSON_GetObjectItemCaseSensitive(lg, "sample_rate");
        if (sr) {
            if (!cJSON_IsNumber(sr) || !isfinite(sr->valuedouble) || sr->valuedouble < 0 ||
                sr->valuedouble > 1)
                return bs_err_setf(err, BS_EINVAL, "logging.sample_rate",
                                   "logging.sample_rate must be a number in [0, 1]");
            ep->sample_rate = sr->valuedouble;
        }
    }

    const cJSON *lo = cJSON_GetObjectItemCaseSensitive(spec, "logger");
    if (lo && !cJSON_IsNull(lo)) {
        if (!cJSON_IsObject(lo))
            return bs_err_setf(err, BS_EINVAL, "logger",
                               "logger must be {\"url\": URL, \"mode\": \"all|request|response\"}");
        static const char *const ok[] = {"url", "mode", NULL};
        if ((rc = reject_unknown(lo, "logger", ok, err)) != 0)
            return rc;
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(lo, "url");
        if (!u || !cJSON_IsString(u))
            return bs_err_setf(err, BS_EINVAL, "logger.url",
                               "logger.url is required (an http:// or https:// URL)");
        if (strlen(u->valuestring) >= sizeof ep->logger_url)
            return bs_err_setf(err, BS_EINVAL, "logger.url", "logger.url is longer than %zu bytes",
                               sizeof ep->logger_url - 1);
        bs_err_t uerr;
        if (bs_http_url_check(u->valuestring, &uerr) != 0)
            return bs_err_setf(err, BS_EINVAL, "logger.url", "logger.url: %s", uerr.msg);
        snprintf(ep->logger_url, sizeof ep->logger_url, "%s", u->valuestring);
        snprintf(ep->logger_mode, sizeof ep->logger_mode, "all");
        const cJSON *md = cJSON_GetObjectItemCaseSensitive(lo, "mode");
        if (md && !cJSON_IsNull(md)) {
            if (!cJSON_IsString(md) || (strcmp(md->valuestring, "all") != 0 &&
                                        strcmp(md->valuestring, "request") != 0 &&
                                        strcmp(md->valuestring, "response") != 0))
                return bs_err_setf(err, BS_EINVAL, "logger.mode",
                                   "logger.mode must be 'all', 'request' or 'response'");
            snprintf(ep->logger_mode, sizeof ep->logger_mode, "%s", md->valuestring);
        }
    }
    return 0;
}

static cJSON *target_json(const bs_endpoint_route_t *r, int shadow)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "name", r->name);
    if (r->version > 0)
        cJSON_AddNumberToObject(o, "version", r->version);
    else
        cJSON_AddStringToObject(o, "alias", r->alias);
    if (shadow)
        cJSON_AddNumberToObject(o, "fraction", r->fraction);
    else
        cJSON_AddNumberToObject(o, "weight", r->weight);
    return o;
}

cJSON *bs_endpoint_spec_render(const bs_endpoint_t *ep)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    int oom = !cJSON_AddStringToObject(o, "model", ep->model);
    cJSON *routes = cJSON_AddArrayToObject(o, "routes");
    cJSON *shadow = cJSON_AddArrayToObject(o, "shadow");
    oom |= !routes || !shadow;
    for (int i = 0; !oom && i < ep->n_routes; i++) {
        cJSON *t = target_json(&ep->routes[i], 0);
        oom |= !t || !cJSON_AddItemToArray(routes, t);
    }
    for (int i = 0; !oom && i < ep->n_shadows; i++) {
        cJSON *t = target_json(&ep->shadows[i], 1);
        oom |= !t || !cJSON_AddItemToArray(shadow, t);
    }
    if (!oom && (ep->sticky_field[0] || ep->sticky_header[0])) {
        cJSON *st = cJSON_AddObjectToObject(o, "sticky");
        oom |= !st || !(ep->sticky_field[0] ? cJSON_AddStringToObject(st, "key", ep->sticky_field)
                                            : cJSON_AddStringToObject(st, "header", ep->sticky_header));
    }
    cJSON *p = oom ? NULL : cJSON_AddObjectToObject(o, "policy");
    oom |= !p;
    if (!oom) {
        oom |= !cJSON_AddStringToObject(
            p, "type", ep->policy == BS_ENDPOINT_THOMPSON ? "thompson" : "weighted");
        if (!oom && ep->policy == BS_ENDPOINT_THOMPSON) {
            cJSON *rw = cJSON_AddObjectToObject(p, "reward");
            cJSON *l = cJSON_Parse(ep->reward_label);
            oom |= !rw || !l || !cJSON_AddItemToObject(rw, "label", l);
        }
    }
    cJSON *lg = oom ? NULL : cJSON_AddObjectToObject(o, "logging");
    oom |= !lg || !cJSON_AddNumberToObject(lg, "sample_rate", ep->sample_rate);
    if (!oom && ep->logger_url[0]) {
        cJSON *lo = cJSON_AddObjectToObject(o, "logger");
        oom |= !lo || !cJSON_AddStringToObject(lo, "url", ep->logger_url) ||
               !cJSON_AddStringToObject(lo, "mode", ep->logger_mode);
    }
    if (oom) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* Checks each route and shadow against the registry (the serving snapshot). */
static int check_registry(bs_endpoints_t *e, const bs_endpoint_t *ep, bs_err_t *err)
{
    int dummy;
    if (bs_serving_versions(e->serving, ep->tenant, ep->model, &dummy, 0) < 0)
        return bs_err_setf(err, BS_ENOTFOUND, "model", "no model '%s'", ep->model);
    for (int i = 0; i < ep->n_routes + ep->n_shadows; i++) {
        int shadow = i >= ep->n_routes;
        int k = shadow ? i - ep->n_routes : i;
        const bs_endpoint_route_t *r = shadow ? &ep->shadows[k] : &ep->routes[k];
        char f[64];
        snprintf(f, sizeof f, "%s[%d].%s", shadow ? "shadow" : "routes", k,
                 r->version > 0 ? "version" : "alias");
        int version = 0, approved = 0;
        bs_err_t rerr;
        int rc = bs_serving_resolve(e->serving, ep->tenant, ep->model, r->version,
                                    r->version > 0 ? NULL : r->alias, &version, &approved, &rerr);
        if (rc)
            return bs_err_setf(err, rc, strcmp(rerr.field, "model") == 0 ? "model" : f, "%s",
                               rerr.msg);
        if (shadow && approved < 0)
            return bs_err_setf(err, BS_EINVAL, f,
                               "version %d of model '%s' was rejected in review and cannot shadow",
                               version, ep->model);
        if (!shadow && approved <= 0) {
            if (r->version > 0)
                return bs_err_setf(err, BS_EINVAL, f,
                                   "version %d of model '%s' is not approved; only approved "
                                   "versions may be routed",
                                   version, ep->model);
            return bs_err_setf(err, BS_EINVAL, f,
                               "alias '%s' points at version %d of model '%s', which is not "
                               "approved; only approved versions may be routed",
                               r->alias, version, ep->model);
        }
    }
    return 0;
}

int bs_endpoint_spec_normalise(bs_endpoints_t *e, const char *tenant, const char *name,
                               const cJSON *spec, cJSON **out, bs_err_t *err)
{
    *out = NULL;
    bs_endpoint_t *ep = malloc(sizeof *ep);
    if (!ep)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    int rc = bs_endpoint_spec_parse(tenant, name, spec, ep, err);
    if (rc == 0 && e)
        rc = check_registry(e, ep, err);
    if (rc == 0 && !(*out = bs_endpoint_spec_render(ep)))
        rc = bs_err_set(err, BS_ENOMEM, "out of memory");
    free(ep);
    return rc;
}

/* ---- the snapshot ---------------------------------------------------------------------- */

static void snap_free(void *p)
{
    snap_t *s = p;
    if (!s)
        return;
    for (int i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    free(s);
}

static int cmp_ep(const void *a, const void *b)
{
    const bs_endpoint_t *x = *(bs_endpoint_t *const *)a, *y = *(bs_endpoint_t *const *)b;
    int c = strcmp(x->tenant, y->tenant);
    return c ? c : strcmp(x->name, y->name);
}

typedef struct {
    bs_endpoints_t *e;
    snap_t *s;
    int cap, oom;
} build_t;

static int build_cb(const bs_resource_t *r, void *ud)
{
    build_t *b = ud;
    cJSON *j = cJSON_Parse(r->spec);
    bs_endpoint_t *ep = malloc(sizeof *ep);
    bs_err_t err;
    if (!ep) {
        cJSON_Delete(j);
        b->oom = 1;
        return 1;
    }
    if (!j || bs_endpoint_spec_parse(r->tenant, r->name, j, ep, &err) != 0) {
        BS_LOG(BS_LOG_ERROR, "endpoints", "endpoint %s/%s: stored spec refused: %s", r->tenant,
               r->name, j ? err.msg : "not JSON");
        cJSON_Delete(j);
        free(ep);
        return 0;
    }
    cJSON_Delete(j);
    ep->generation = r->generation;
    if (b->s->n == b->cap) {
        int cap = b->cap ? b->cap * 2 : 16;
        bs_endpoint_t **v = realloc(b->s->v, (size_t)cap * sizeof *v);
        if (!v) {
            free(ep);
            b->oom = 1;
            return 1;
        }
        b->s->v = v;
        b->cap = cap;
    }
    b->s->v[b->s->n++] = ep;
    return 0;
}

static int snap_index(const snap_t *s, const char *tenant, const char *name)
{
    int lo = 0, hi = s->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(s->v[mid]->tenant, tenant);
        if (!c)
            c = strcmp(s->v[mid]->name, name);
        if (!c)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

/* Calls the tenant hook once per tenant of s (sorted: tenants are runs). rebuild_mu held. */
static void each_tenant(bs_endpoints_t *e, const snap_t *s)
{
    if (!e->on_rebuild)
        return;
    for (int i = 0; i < s->n; i++)
        if (i == 0 || strcmp(s->v[i - 1]->tenant, s->v[i]->tenant) != 0)
            e->on_rebuild(e->on_rebuild_ud, s->v[i]->tenant);
}

int bs_endpoints_rebuild(bs_endpoints_t *e, bs_err_t *err)
{
    pthread_mutex_lock(&e->rebuild_mu);
    build_t b = {.e = e};
    b.s = calloc(1, sizeof *b.s);
    if (!b.s) {
        pthread_mutex_unlock(&e->rebuild_mu);
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    int rc = bs_resources_list(e->meta, NULL, BS_ENDPOINT_KIND, NULL, 0, build_cb, &b, err);
    if (rc >= 0 && b.oom)
        rc = bs_err_set(err, BS_ENOMEM, "out of memory building the endpoints snapshot");
    if (rc < 0) {
        snap_free(b.s);
        pthread_mutex_unlock(&e->rebuild_mu);
        return rc;
    }
    /* Stored order is (tenant, name) by byte (resources.c); sort anyway, it is cheap. */
    if (b.s->n > 1)
        qsort(b.s->v, (size_t)b.s->n, sizeof *b.s->v, cmp_ep);
    uint64_t gen = ++e->gen;
    /* Attach each endpoint to its long-lived state, created on first sight. */
    pthread_mutex_lock(&e->states_mu);
    for (int i = 0; i < b.s->n; i++) {
        bs_endpoint_t *ep = b.s->v[i];
        state_t *st = e->states;
        while (st && (strcmp(st->tenant, ep->tenant) != 0 || strcmp(st->name, ep->name) != 0))
            st = st->next;
        if (!st && (st = state_new(ep->tenant, ep->name)) != NULL) {
            st->next = e->states;
            e->states = st;
        }
        if (st)
            st->seen_gen = gen;
        ep->state = st; /* NULL only out of memory: pick and record cope */
    }
    /* States of endpoints that are gone: unlinked now, freed once no reader can hold an
     * endpoint of an earlier snapshot that points at them. */
    state_t **pp = &e->states;
    while (*pp) {
        state_t *st = *pp;
        if (st->seen_gen != gen) {
            *pp = st->next;
            bs_rcu_retire(st, state_free);
        } else {
            pp = &st->next;
        }
    }
    pthread_mutex_unlock(&e->states_mu);
    snap_t *old = atomic_exchange(&e->snap, b.s);
    bs_rcu_retire(old, snap_free);
    each_tenant(e, b.s);
    pthread_mutex_unlock(&e->rebuild_mu);
    return 0;
}

const bs_endpoint_t *bs_endpoints_get(bs_endpoints_t *e, const char *tenant, const char *name)
{
    const snap_t *s = atomic_load_explicit(&e->snap, memory_order_acquire);
    int i = snap_index(s, tenant, name);
    return i >= 0 ? s->v[i] : NULL;
}

void bs_endpoints_each(bs_endpoints_t *e, const char *tenant,
                       void (*cb)(const bs_endpoint_t *ep, void *ud), void *ud)
{
    const snap_t *s = atomic_load_explicit(&e->snap, memory_order_acquire);
    for (int i = 0; i < s->n; i++)
        if (!tenant || strcmp(s->v[i]->tenant, tenant) == 0)
            cb(s->v[i], ud);
}

void bs_endpoints_on_rebuild(bs_endpoints_t *e, bs_endpoints_tenant_fn fn, void *ud)
{
    pthread_mutex_lock(&e->rebuild_mu);
    e->on_rebuild = fn;
    e->on_rebuild_ud = ud;
    /* The snapshot cannot change while rebuild_mu is held: no grace period needed. */
    each_tenant(e, atomic_load(&e->snap));
    pthread_mutex_unlock(&e->rebuild_mu);
}

/* ---- per-request draws ----------------------------------------------------------------- */

/* The route owning point (in [0, POINTS)): routes own consecutive ranges of weight × 100. */
static int route_at(const bs_endpoint_t *ep, int point)
{
    int cum = 0;
    for (int i = 0; i < ep->n_routes; i++) {
        cum += ep->routes[i].weight * (POINTS / 100);
        if (point < cum)
            return i;
    }
    return 0; /* weights that do not sum to 100 (not a validated spec): the first */
}

int bs_endpoint_sticky_point(const bs_endpoint_t *ep, const char *key, size_t key_len)
{
    uint64_t k0, k1;
    if (ep->state) {
        k0 = ep->state->k0;
        k1 = ep->state->k1;
    } else {
        sticky_key(ep->name, &k0, &k1);
    }
    return reduce(bs__endpoints_siphash(k0, k1, key, key_len), POINTS);
}

int bs_endpoint_pick(const bs_endpoint_t *ep, const char *key, size_t key_len)
{
    if (ep->n_routes <= 1)
        return 0;
    if (key)
        return route_at(ep, bs_endpoint_sticky_point(ep, key, key_len));
    if (ep->policy == BS_ENDPOINT_THOMPSON) {
        /* Thompson sampling (Thompson 1933; Chapelle & Li, "An Empirical Evaluation of
         * Thompson Sampling", NIPS 2011): one draw from each arm's posterior Beta(1 + s,
         * 1 + f), the largest wins. A route of weight 0 is no arm. */
        int best = -1;
        double best_x = -1;
        for (int i = 0; i < ep->n_routes; i++) {
            if (ep->routes[i].weight <= 0)
                continue;
            int64_t s = 0, f = 0;
            bs_endpoint_arm(ep, i, &s, &f);
            double x = bs_stats_beta_sample(tls_rng(), 1.0 + (double)s, 1.0 + (double)f);
            if (x > best_x) {
                best_x = x;
                best = i;
            }
        }
        return best >= 0 ? best : 0;
    }
    return route_at(ep, reduce(bs_stats_rng_next(tls_rng()), POINTS));
}

int bs_endpoint_shadow_draw(const bs_endpoint_t *ep, int i)
{
    if (i < 0 || i >= ep->n_shadows)
        return 0;
    double f = ep->shadows[i].fraction;
    return f >= 1 || (f > 0 && bs_stats_uniform(tls_rng()) < f);
}

int bs_endpoint_log_draw(const bs_endpoint_t *ep)
{
    double r = ep->sample_rate;
    return r >= 1 || (r > 0 && bs_stats_uniform(tls_rng()) < r);
}

/* ---- the bandit's arms ----------------------------------------------------------------- */

void bs_endpoint_arm(const bs_endpoint_t *ep, int route, int64_t *successes, int64_t *failures)
{
    *successes = *failures = 0;
    if (!ep->state || route < 0 || route >= ep->n_routes)
        return;
    arm_t *a = arm_find(ep->state, ep->routes[route].name, 0);
    if (a) {
        *successes = atomic_load_explicit(&a->successes, memory_order_relaxed);
        *failures = atomic_load_explicit(&a->failures, memory_order_relaxed);
    }
}

void bs_endpoint_set_arm(const bs_endpoint_t *ep, int route, int64_t successes, int64_t failures)
{
    if (!ep->state || route < 0 || route >= ep->n_routes)
        return;
    arm_t *a = arm_find(ep->state, ep->routes[route].name, 1);
    if (!a)
        return;
    atomic_store_explicit(&a->successes, successes < 0 ? 0 : successes, memory_order_relaxed);
    atomic_store_explicit(&a->failures, failures < 0 ? 0 : failures, memory_order_relaxed);
}

void bs_endpoints_set_rewards_source(bs_endpoints_t *e, bs_endpoint_rewards_fn fn, void *ud)
{
    pthread_mutex_lock(&e->pass_mu); /* waits for a pass that calls the previous source */
    e->rewards_fn = fn;
    e->rewards_ud = ud;
    pthread_mutex_unlock(&e->pass_mu);
}

void bs_endpoints_refresh_rewards(bs_endpoints_t *e)
{
    pthread_mutex_lock(&e->pass_mu);
    if (!e->rewards_fn) {
        pthread_mutex_unlock(&e->pass_mu);
        return;
    }
    const snap_t *s = atomic_load_explicit(&e->snap, memory_order_acquire);
    for (int i = 0; i < s->n; i++) {
        const bs_endpoint_t *ep = s->v[i];
        if (ep->policy != BS_ENDPOINT_THOMPSON)
            continue;
        for (int r = 0; r < ep->n_routes; r++) {
            int64_t succ = 0, fail = 0;
            if (e->rewards_fn(e->rewards_ud, ep, r, &succ, &fail) == 0)
                bs_endpoint_set_arm(ep, r, succ, fail);
        }
    }
    pthread_mutex_unlock(&e->pass_mu);
}

static void *timer_main(void *arg)
{
    bs_endpoints_t *e = arg;
    pthread_mutex_lock(&e->timer_mu);
    while (!e->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&e->timer_cv, &e->timer_mu, &ts);
        if (e->stop)
            break;
        pthread_mutex_unlock(&e->timer_mu);
        /* A QSBR reader for the pass only: offline while it sleeps, so it never holds up
         * reclamation. */
        bs_rcu_register();
        bs_endpoints_refresh_rewards(e);
        bs_rcu_unregister();
        pthread_mutex_lock(&e->timer_mu);
    }
    pthread_mutex_unlock(&e->timer_mu);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------- */

bs_endpoints_t *bs_endpoints_new(bs_meta_t *meta, bs_serving_t *serving, bs_err_t *err)
{
    bs_endpoints_t *e = calloc(1, sizeof *e);
    snap_t *s = calloc(1, sizeof *s);
    if (!e || !s) {
        free(e);
        free(s);
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    e->meta = meta;
    e->serving = serving;
    atomic_init(&e->snap, s);
    pthread_mutex_init(&e->rebuild_mu, NULL);
    pthread_mutex_init(&e->states_mu, NULL);
    pthread_mutex_init(&e->pass_mu, NULL);
    pthread_mutex_init(&e->timer_mu, NULL);
    pthread_cond_init(&e->timer_cv, NULL);
    if (pthread_create(&e->timer, NULL, timer_main, e) != 0) {
        bs_endpoints_free(e);
        bs_err_set(err, BS_EUNAVAIL, "cannot start the endpoints' rewards timer");
        return NULL;
    }
    e->timer_started = 1;
    return e;
}

void bs_endpoints_free(bs_endpoints_t *e)
{
    if (!e)
        return;
    if (e->timer_started) {
        pthread_mutex_lock(&e->timer_mu);
        e->stop = 1;
        pthread_cond_signal(&e->timer_cv);
        pthread_mutex_unlock(&e->timer_mu);
        pthread_join(e->timer, NULL);
    }
    /* Endpoints of retired snapshots point at states: those go first. */
    bs_rcu_drain();
    snap_free(atomic_load(&e->snap));
    for (state_t *st = e->states, *n; st; st = n) {
        n = st->next;
        state_free(st);
    }
    pthread_cond_destroy(&e->timer_cv);
    pthread_mutex_destroy(&e->timer_mu);
    pthread_mutex_destroy(&e->pass_mu);
    pthread_mutex_destroy(&e->states_mu);
    pthread_mutex_destroy(&e->rebuild_mu);
    free(e);
}

/* ---- metrics --------------------------------------------------------------------------- */

void bs_endpoint_record(const bs_endpoint_t *ep, int shadow, int i, int version,
                        uint64_t duration_ns, int code)
{
    if (!ep->state)
        return;
    const bs_endpoint_route_t *r = NULL;
    if (shadow && i >= 0 && i < ep->n_shadows)
        r = &ep->shadows[i];
    else if (!shadow && i >= 0 && i < ep->n_routes)
        r = &ep->routes[i];
    if (!r)
        return;
    series_t *se = series_find(ep->state, r->name, version);
    if (!se) {
        atomic_fetch_add_explicit(&ep->state->series_full, 1, memory_order_relaxed);
        return;
    }
    shard_t *sh = &se->shards[bs__stat_shard()];
    if (shadow) {
        atomic_fetch_add_explicit(&sh->shadow_requests, 1, memory_order_relaxed);
        if (code)
            atomic_fetch_add_explicit(&sh->shadow_errors, 1, memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(&sh->requests, 1, memory_order_relaxed);
    if (code) {
        int idx = bs_err_index(code);
        atomic_fetch_add_explicit(&sh->errors, 1, memory_order_relaxed);
        if (idx >= 0)
            atomic_fetch_add_explicit(&sh->errors_by_code[idx], 1, memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(&sh->sum_ns, duration_ns, memory_order_relaxed);
    double secs = (double)duration_ns / 1e9;
    int b = 0;
    while (b < BS__SERVING_BUCKETS && secs > buckets[b])
        b++;
    atomic_fetch_add_explicit(&sh->hist[b], 1, memory_order_relaxed);
}

#define SUM(se, field)                                                                             \
    ({                                                                                             \
        uint64_t sum_ = 0;                                                                         \
        for (int k_ = 0; k_ < BS__STAT_SHARDS; k_++)                                               \
            sum_ += atomic_load_explicit(&(se)->shards[k_].field, memory_order_relaxed);           \
        sum_;                                                                                      \
    })

enum { F_REQ, F_ERR, F_DUR, F_SREQ, F_SERR, F_ARM_S, F_ARM_F, F_FULL, N_F };

static const struct {
    const char *name, *type, *help;
} fams[N_F] = {
    [F_REQ] = {"basalt_endpoint_requests_total", "counter",
               "Endpoint predict requests per variant and the version that served them."},
    [F_ERR] = {"basalt_endpoint_errors_total", "counter",
               "Failed endpoint predict requests by error code."},
    [F_DUR] = {"basalt_endpoint_request_duration_seconds", "histogram",
               "Time to route, validate, predict and render a successful endpoint request."},
    [F_SREQ] = {"basalt_endpoint_shadow_requests_total", "counter",
                "Requests also run on a shadow variant (after the caller's response)."},
    [F_SERR] = {"basalt_endpoint_shadow_errors_total", "counter",
                "Shadow runs that failed (recorded, never returned to the caller)."},
    [F_ARM_S] = {"basalt_endpoint_bandit_successes", "gauge",
                 "Thompson sampling: rewarded feedback of the variant's arm."},
    [F_ARM_F] = {"basalt_endpoint_bandit_failures", "gauge",
                 "Thompson sampling: unrewarded feedback of the variant's arm."},
    [F_FULL] = {"basalt_endpoint_series_dropped_total", "counter",
                "Records not counted: the endpoint has 256 (variant, version) series already."},
};

void bs_endpoints_metrics(bs_endpoints_t *e, bs_buf_t *b)
{
    bs_buf_t f[N_F];
    for (int k = 0; k < N_F; k++)
        bs_buf_init(&f[k]);
    int n_endpoints = 0;
    pthread_mutex_lock(&e->states_mu);
    for (state_t *st = e->states; st; st = st->next) {
        n_endpoints++;
        /* Tenants, endpoint and variant names are validated to label-safe characters. */
        char ep_lbl[160];
        snprintf(ep_lbl, sizeof ep_lbl, "tenant=\"%s\",endpoint=\"%s\"", st->tenant, st->name);
        uint64_t full = atomic_load(&st->series_full);
        if (full)
            bs_buf_printf(&f[F_FULL], "basalt_endpoint_series_dropped_total{%s} %llu\n", ep_lbl,
                          (unsigned long long)full);
        for (int i = 0; i < ARMS_CAP; i++) {
            arm_t *a = &st->arms[i];
            if (!atomic_load_explicit(&a->key, memory_order_acquire))
                continue;
            bs_buf_printf(&f[F_ARM_S], "basalt_endpoint_bandit_successes{%s,variant=\"%s\"} %lld\n",
                          ep_lbl, a->name, (long long)atomic_load(&a->successes));
            bs_buf_printf(&f[F_ARM_F], "basalt_endpoint_bandit_failures{%s,variant=\"%s\"} %lld\n",
                          ep_lbl, a->name, (long long)atomic_load(&a->failures));
        }
        for (int i = 0; i < SERIES_CAP; i++) {
            series_slot_t *sl = &st->series[i];
            if (!atomic_load_explicit(&sl->key, memory_order_acquire))
                continue;
            const series_t *se = sl->s;
            char lbl[300];
            snprintf(lbl, sizeof lbl, "%s,variant=\"%s\",version=\"%d\"", ep_lbl, se->variant,
                     se->version);
            uint64_t req = SUM(se, requests), sreq = SUM(se, shadow_requests);
            if (sreq) {
                bs_buf_printf(&f[F_SREQ], "basalt_endpoint_shadow_requests_total{%s} %llu\n", lbl,
                              (unsigned long long)sreq);
                bs_buf_printf(&f[F_SERR], "basalt_endpoint_shadow_errors_total{%s} %llu\n", lbl,
                              (unsigned long long)SUM(se, shadow_errors));
            }
            if (!req)
                continue;
            bs_buf_printf(&f[F_REQ], "basalt_endpoint_requests_total{%s} %llu\n", lbl,
                          (unsigned long long)req);
            for (int c = 0; c < BS_ERR_COUNT; c++) {
                uint64_t n = SUM(se, errors_by_code[c]);
                if (n)
                    bs_buf_printf(&f[F_ERR], "basalt_endpoint_errors_total{%s,code=\"%s\"} %llu\n",
                                  lbl, bs_err_name(c + BS_ERR_FIRST_ + 1), (unsigned long long)n);
            }
            uint64_t cum = 0;
            for (int k = 0; k < BS__SERVING_BUCKETS; k++) {
                cum += SUM(se, hist[k]);
                bs_buf_printf(&f[F_DUR],
                              "basalt_endpoint_request_duration_seconds_bucket{%s,le=\"%g\"} %llu\n",
                              lbl, buckets[k], (unsigned long long)cum);
            }
            cum += SUM(se, hist[BS__SERVING_BUCKETS]);
            bs_buf_printf(&f[F_DUR],
                          "basalt_endpoint_request_duration_seconds_bucket{%s,le=\"+Inf\"} %llu\n"
                          "basalt_endpoint_request_duration_seconds_sum{%s} %.9f\n"
                          "basalt_endpoint_request_duration_seconds_count{%s} %llu\n",
                          lbl, (unsigned long long)cum, lbl, (double)SUM(se, sum_ns) / 1e9, lbl,
                          (unsigned long long)cum);
        }
    }
    pthread_mutex_unlock(&e->states_mu);
    bs_buf_printf(b,
                  "# HELP basalt_endpoints Endpoints this replica routes (every tenant).\n"
                  "# TYPE basalt_endpoints gauge\nbasalt_endpoints %d\n",
                  n_endpoints);
    for (int k = 0; k < N_F; k++) {
        /* A histogram family without a series is left out (the exposition parsers want a
         * histogram's block to hold one); empty counters and gauges are announced. */
        if (k == F_DUR && !f[k].len && !f[k].oom) {
            bs_buf_free(&f[k]);
            continue;
        }
        bs_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", fams[k].name, fams[k].help, fams[k].name,
                      fams[k].type);
        if (f[k].oom)
            b->oom = 1;
        if (f[k].len)
            bs_buf_append(b, f[k].data, f[k].len);
        bs_buf_free(&f[k]);
    }
}
