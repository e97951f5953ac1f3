/*
 * Rate limits shared by replicas: local slices of a global budget in Redis (see auth.h
 * and docs/architecture.md "Rate limits across replicas").
 *
 * Locking: one mutex guards the key table, the pending list and the mode. The I/O
 * threads hold it for a lookup and a few additions (bs_ratelimit_charge); the refill
 * thread holds it to collect a round's work and to apply its replies, never across the
 * round trip. The kv connection is the refill thread's alone.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/auth.h"
#include "base/log.h"
#include "base/time.h"

/*
 * The global bucket of one key: a hash {tokens, ts} (ts in microseconds of Redis TIME).
 * ARGV: rate (tokens/s), burst, want. want > 0 asks for up to want tokens; want < 0 gives
 * -want unused tokens back (capped at the burst); 0 only reads. Returns
 * {granted, microseconds until the bucket holds one token (0 if it does)}. The hash
 * expires once it would be full anyway, so idle keys cost Redis no memory.
 */
static const char RL_SCRIPT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local rate = tonumber(ARGV[1])\n"
    "local burst = tonumber(ARGV[2])\n"
    "local want = tonumber(ARGV[3])\n"
    "local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')\n"
    "local tokens = tonumber(b[1])\n"
    "local ts = tonumber(b[2])\n"
    "if tokens == nil or ts == nil then tokens = burst; ts = now end\n"
    "if now > ts then\n"
    "  tokens = math.min(burst, tokens + (now - ts) * rate / 1000000)\n"
    "  ts = now\n"
    "end\n"
    "local grant = 0\n"
    "if want > 0 then\n"
    "  grant = math.min(want, math.floor(tokens))\n"
    "  if grant < 0 then grant = 0 end\n"
    "  tokens = tokens - grant\n"
    "elseif want < 0 then\n"
    "  tokens = math.min(burst, tokens - want)\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts',"
    " string.format('%.17g', ts))\n"
    "redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)\n"
    "local wait = 0\n"
    "if tokens < 1 then wait = math.ceil((1 - tokens) * 1000000 / rate) end\n"
    "return {grant, wait}\n";

/* Tokens a replica may admit on credit before its first grant (the first request of a
 * key new or idle here), paid back from the next grant. */
#define CREDIT 1.0
#define N_HEADS 1024
#define MAX_ROUND 512 /* keys per pipelined round trip */

typedef struct entry {
    struct entry *next;
    char id[40];
    double rate, burst;   /* as last charged */
    double tokens;        /* local bucket (fallback) */
    uint64_t last_ns;     /* its last refill */
    double slice;         /* global tokens held here, not yet used */
    double debt;          /* admitted on credit, not yet paid by a grant */
    uint64_t empty_until; /* the global bucket is empty until then (Redis said so) */
    uint64_t last_use;
    uint32_t demand;  /* charges since the last refill was sent */
    int pending;      /* on the pending list */
    int inflight;     /* in the round being sent */
    double sent_want; /* what that round asked for */
} entry_t;

struct bs_ratelimit {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    int have_thread;
    int stop;
    bs_kv_t *kv;
    bs_kv_script_t script;
    char prefix[64];
    uint64_t slice_ns, idle_ns, stall_ns;
    entry_t *heads[N_HEADS];
    entry_t **pending; /* entries that asked for a refill */
    int n_pending, cap_pending;
    _Atomic int shared;           /* decisions use the global buckets */
    _Atomic uint64_t round_start; /* mono ns the outstanding round started, 0 if none */
    _Atomic uint64_t fallback_decisions, fallback_transitions, refill_rounds, tokens_granted;
    int ever_failed; /* a failure was logged (recovery is logged after one) */
};

static unsigned hash_id(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % N_HEADS;
}

static entry_t *lookup(bs_ratelimit_t *rl, const char *id, double burst, uint64_t now)
{
    unsigned h = hash_id(id);
    for (entry_t *e = rl->heads[h]; e; e = e->next)
        if (strcmp(e->id, id) == 0)
            return e;
    entry_t *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    snprintf(e->id, sizeof e->id, "%s", id);
    e->tokens = burst;
    e->last_ns = now;
    e->next = rl->heads[h];
    rl->heads[h] = e;
    return e;
}

/* The slice to aim for: slice_ns of the rate, or the demand seen since the last refill
 * if that is more (a burst), within [1, burst]. */
static double slice_target(const bs_ratelimit_t *rl, const entry_t *e)
{
    double t = e->rate * (double)rl->slice_ns / 1e9;
    if ((double)e->demand > t)
        t = (double)e->demand;
    if (t > e->burst)
        t = e->burst;
    return t < 1 ? 1 : floor(t);
}

/* Under the lock: asks the refill thread for a slice for e. */
static void want_refill(bs_ratelimit_t *rl, entry_t *e)
{
    if (e->pending)
        return;
    if (rl->n_pending == rl->cap_pending) {
        int cap = rl->cap_pending ? rl->cap_pending * 2 : 64;
        entry_t **p = realloc(rl->pending, (size_t)cap * sizeof *p);
        if (!p)
            return; /* the next charge asks again */
        rl->pending = p;
        rl->cap_pending = cap;
    }
    rl->pending[rl->n_pending++] = e;
    e->pending = 1;
    pthread_cond_signal(&rl->wake);
}

/* How far a key may run on credit while its refill is on the way: one request, or half a
 * slice for a fast key — at tens of thousands of requests a second a round trip of the
 * refill thread (slower still on a loaded machine) would otherwise refuse requests the
 * global bucket has plenty for. Repaid from the next grant; bounds over-admission. */
static double credit_limit(const bs_ratelimit_t *rl, const entry_t *e)
{
    double half = floor(e->rate * (double)rl->slice_ns / 1e9 / 2); /* not the demand */
    if (half > e->burst / 2)
        half = floor(e->burst / 2);
    return half > CREDIT ? half : CREDIT;
}

static int charge_local(entry_t *e, uint64_t now, double *retry_after_s)
{
    e->tokens += (double)(now - e->last_ns) / 1e9 * e->rate;
    if (e->tokens > e->burst)
        e->tokens = e->burst;
    e->last_ns = now;
    if (e->tokens >= 1) {
        e->tokens -= 1;
        return 0;
    }
    *retry_after_s = (1 - e->tokens) / e->rate;
    return BS_ERATE;
}

int bs_ratelimit_charge(bs_ratelimit_t *rl, const char *key_id, double rate, double burst,
                        double *retry_after_s)
{
    uint64_t now = bs_time_mono_ns();
    pthread_mutex_lock(&rl->lock);
    entry_t *e = lookup(rl, key_id, burst, now);
    if (!e) {
        pthread_mutex_unlock(&rl->lock);
        return 0; /* out of memory: admit, as the per-replica limiter does */
    }
    e->rate = rate;
    e->burst = burst;
    e->last_use = now;
    if (e->demand < UINT32_MAX)
        e->demand++;
    uint64_t started = atomic_load_explicit(&rl->round_start, memory_order_relaxed);
    int rc = 0;
    if (!atomic_load_explicit(&rl->shared, memory_order_relaxed) ||
        (started && now > started + rl->stall_ns)) {
        atomic_fetch_add_explicit(&rl->fallback_decisions, 1, memory_order_relaxed);
        rc = charge_local(e, now, retry_after_s);
    } else if (e->slice >= 1) {
        e->slice -= 1;
        double low = slice_target(rl, e) / 2;
        if (e->slice < (low < 1 ? 1 : low))
            want_refill(rl, e);
    } else if (now < e->empty_until) {
        *retry_after_s = (double)(e->empty_until - now) / 1e9;
        rc = BS_ERATE;
    } else if (e->debt < credit_limit(rl, e)) {
        e->debt += 1;
        want_refill(rl, e);
    } else {
        /* A refill is on its way (or the bucket's state is unknown): the client may try
         * again after about one token's time at the key's rate. */
        want_refill(rl, e);
        *retry_after_s = 1 / rate;
        rc = BS_ERATE;
    }
    pthread_mutex_unlock(&rl->lock);
    return rc;
}

/* ---- the refill thread --------------------------------------------------------------------- */

typedef struct {
    entry_t *e;
    double want;
    char key[128], rate[32], burst[32], want_s[32];
    const char *argv[4];
} work_t;

static void work_fill(bs_ratelimit_t *rl, work_t *w, entry_t *e, double want)
{
    w->e = e;
    w->want = want;
    snprintf(w->key, sizeof w->key, "%s%s", rl->prefix, e->id);
    snprintf(w->rate, sizeof w->rate, "%.17g", e->rate);
    snprintf(w->burst, sizeof w->burst, "%.17g", e->burst);
    snprintf(w->want_s, sizeof w->want_s, "%.0f", want);
    w->argv[0] = w->key;
    w->argv[1] = w->rate;
    w->argv[2] = w->burst;
    w->argv[3] = w->want_s;
}

/* Under the lock: the round's work. Pending entries ask for a slice (and their debt);
 * with scan_idle, entries unused for idle_ns give their slice back (taken off them now,
 * so the I/O threads cannot spend it meanwhile) or pay their debt. */
static int collect(bs_ratelimit_t *rl, work_t *w, int scan_idle, uint64_t now)
{
    int n = 0, keep = 0;
    for (int i = 0; i < rl->n_pending; i++) {
        entry_t *e = rl->pending[i];
        if (n == MAX_ROUND) {
            rl->pending[keep++] = e;
            continue;
        }
        e->pending = 0;
        double want = ceil(slice_target(rl, e) - e->slice + e->debt);
        if (want < 1 || e->inflight)
            continue;
        e->demand = 0;
        e->inflight = 1;
        e->sent_want = want;
        work_fill(rl, &w[n++], e, want);
    }
    rl->n_pending = keep;
    if (!scan_idle)
        return n;
    for (int h = 0; h < N_HEADS && n < MAX_ROUND; h++)
        for (entry_t *e = rl->heads[h]; e && n < MAX_ROUND; e = e->next) {
            if (e->inflight || e->pending || now < e->last_use + rl->idle_ns)
                continue;
            double want = 0;
            if (e->debt > 0) {
                want = ceil(e->debt - e->slice);
            } else if (e->slice >= 1) {
                want = -floor(e->slice);
                e->slice -= floor(e->slice);
            }
            if (want == 0)
                continue;
            e->inflight = 1;
            e->sent_want = want;
            work_fill(rl, &w[n++], e, want);
        }
    return n;
}

static void set_mode(bs_ratelimit_t *rl, int shared, const char *why)
{
    if (atomic_load(&rl->shared) == shared)
        return;
    atomic_store(&rl->shared, shared);
    if (!shared) {
        atomic_fetch_add(&rl->fallback_transitions, 1);
        rl->ever_failed = 1;
        BS_LOG(BS_LOG_WARN, "ratelimit",
               "redis unavailable (%s): rate limits fall back to per-replica buckets", why);
    } else if (rl->ever_failed) {
        BS_LOG(BS_LOG_INFO, "ratelimit", "redis reachable again: rate limits are global");
    }
}

/* Under the lock: applies a round's replies (replies NULL: the round failed). */
static void apply(bs_ratelimit_t *rl, work_t *w, int n, bs_kv_reply_t **replies, uint64_t now)
{
    for (int i = 0; i < n; i++) {
        entry_t *e = w[i].e;
        e->inflight = 0;
        const bs_kv_reply_t *r = replies ? replies[i] : NULL;
        if (!r || r->type != BS_KV_ARRAY || r->n < 2 || r->elem[0].type != BS_KV_INT ||
            r->elem[1].type != BS_KV_INT)
            continue; /* given-back tokens are lost: under-admission, never over */
        if (w[i].want <= 0)
            continue;
        double g = (double)r->elem[0].integer;
        atomic_fetch_add_explicit(&rl->tokens_granted, (uint64_t)g, memory_order_relaxed);
        double repay = g < e->debt ? g : e->debt;
        e->debt -= repay;
        e->slice += g - repay;
        if (g < w[i].want) {
            /* The global bucket ran dry. Ask again when it holds a token, but not sooner
             * than half a slice time (or the time to refill half the burst, if shorter,
             * so nothing overflows meanwhile): a key asked far beyond its rate then costs
             * a few round trips per second, not one per token. */
            uint64_t wait = (uint64_t)r->elem[1].integer * 1000u;
            double fill_ns = e->burst / 2 / e->rate * 1e9;
            uint64_t floor_ns =
                (double)(rl->slice_ns / 2) < fill_ns ? rl->slice_ns / 2 : (uint64_t)fill_ns;
            e->empty_until = now + (wait > floor_ns ? wait : floor_ns);
        } else {
            e->empty_until = 0;
        }
    }
}

static void *refill_main(void *arg)
{
    bs_ratelimit_t *rl = arg;
    work_t *w = malloc(MAX_ROUND * sizeof *w);
    bs_kv_cmd_t *cmds = malloc(MAX_ROUND * sizeof *cmds);
    bs_kv_reply_t **replies = malloc(MAX_ROUND * sizeof *replies);
    if (!w || !cmds || !replies) {
        BS_LOG(BS_LOG_ERROR, "ratelimit", "out of memory: rate limits stay per replica");
        free(w);
        free(cmds);
        free(replies);
        return NULL;
    }
    uint64_t next_scan = 0;
    pthread_mutex_lock(&rl->lock);
    while (!rl->stop) {
        uint64_t now = bs_time_mono_ns();
        int scan = now >= next_scan;
        int shared = atomic_load(&rl->shared);
        if (!rl->n_pending && !scan) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t wait_ns = next_scan - now;
            ts.tv_sec += (time_t)(wait_ns / 1000000000u);
            ts.tv_nsec += (long)(wait_ns % 1000000000u);
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&rl->wake, &rl->lock, &ts);
            continue;
        }
        if (scan)
            next_scan = now + rl->idle_ns / 4;
        int n = shared ? collect(rl, w, scan, now) : 0;
        if (!shared) {
            /* Fallback: decisions are local and nothing is pending; probe Redis at each scan
             * (the kv client's backoff spaces the attempts). */
            for (int i = 0; i < rl->n_pending; i++)
                rl->pending[i]->pending = 0;
            rl->n_pending = 0;
            if (!scan)
                continue;
        }
        if (n == 0 && shared)
            continue;
        atomic_store(&rl->round_start, now);
        pthread_mutex_unlock(&rl->lock);

        bs_err_t err;
        bs_err_clear(&err);
        int rc;
        if (n) {
            for (int i = 0; i < n; i++)
                cmds[i] = (bs_kv_cmd_t){4, w[i].argv, NULL, &rl->script, 1};
            rc = bs_kv_pipeline(rl->kv, cmds, n, replies, &err);
            atomic_fetch_add(&rl->refill_rounds, 1);
            /* A script error (a Redis without Lua, a key of another type) is as bad as no
             * Redis for the limits. */
            for (int i = 0; rc == 0 && i < n; i++)
                if (replies[i]->type == BS_KV_ERROR) {
                    bs_err_set(&err, BS_EUNAVAIL, "the rate limit script failed: %.200s",
                               replies[i]->str);
                    rc = BS_EUNAVAIL;
                    for (int j = 0; j < n; j++)
                        bs_kv_reply_free(replies[j]);
                }
        } else {
            const char *ping[] = {"PING"};
            bs_kv_reply_t *r = NULL;
            rc = bs_kv_command(rl->kv, 1, ping, NULL, &r, &err);
            if (rc == 0 && r->type == BS_KV_ERROR) {
                bs_err_set(&err, BS_EUNAVAIL, "PING answered %.100s", r->str);
                rc = BS_EUNAVAIL;
            }
            bs_kv_reply_free(r);
        }
        uint64_t done = bs_time_mono_ns();

        pthread_mutex_lock(&rl->lock);
        atomic_store(&rl->round_start, 0);
        apply(rl, w, n, rc == 0 ? replies : NULL, done);
        if (rc == 0)
            for (int i = 0; i < n; i++)
                bs_kv_reply_free(replies[i]);
        set_mode(rl, rc == 0, err.msg[0] ? err.msg : "no reply");
    }
    pthread_mutex_unlock(&rl->lock);
    free(w);
    free(cmds);
    free(replies);
    return NULL;
}

bs_ratelimit_t *bs_ratelimit_new(const char *redis_url, const bs_ratelimit_opts_t *opts,
                                 bs_err_t *err)
{
    bs_ratelimit_opts_t o = opts ? *opts : (bs_ratelimit_opts_t){0};
    if (o.kv.connect_timeout_ms <= 0)
        o.kv.connect_timeout_ms = 250;
    if (o.kv.command_timeout_ms <= 0)
        o.kv.command_timeout_ms = 250;
    if (o.kv.backoff_min_ms <= 0)
        o.kv.backoff_min_ms = 100;
    if (o.kv.backoff_max_ms <= 0)
        o.kv.backoff_max_ms = 2000;
    bs_kv_t *kv = bs_kv_new(redis_url, &o.kv, err);
    if (!kv)
        return NULL;
    bs_ratelimit_t *rl = calloc(1, sizeof *rl);
    if (!rl) {
        bs_kv_free(kv);
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    rl->kv = kv;
    bs_kv_script_init(&rl->script, RL_SCRIPT);
    snprintf(rl->prefix, sizeof rl->prefix, "%s", o.prefix ? o.prefix : "basalt:rl:");
    rl->slice_ns = (uint64_t)(o.slice_ms > 0 ? o.slice_ms : 50) * 1000000u;
    rl->idle_ns = (uint64_t)(o.idle_ms > 0 ? o.idle_ms : 1000) * 1000000u;
    rl->stall_ns = (uint64_t)(o.stall_ms > 0 ? o.stall_ms : 500) * 1000000u;
    pthread_mutex_init(&rl->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_cond_init(&rl->wake, &ca);
    pthread_condattr_destroy(&ca);
    /* The first contact happens here, at start (not on an I/O thread), so the limits are
     * global from the first request when Redis is up. */
    bs_err_t cerr;
    bs_err_clear(&cerr);
    if (bs_kv_connect(kv, &cerr) == 0) {
        atomic_store(&rl->shared, 1);
    } else {
        rl->ever_failed = 1;
        atomic_fetch_add(&rl->fallback_transitions, 1);
        BS_LOG(BS_LOG_WARN, "ratelimit",
               "redis unavailable (%s): rate limits fall back to per-replica buckets", cerr.msg);
    }
    if (pthread_create(&rl->thread, NULL, refill_main, rl) != 0) {
        bs_err_set(err, BS_EINTERNAL, "cannot start the rate limit refill thread");
        bs_ratelimit_free(rl);
        return NULL;
    }
    rl->have_thread = 1;
    return rl;
}

void bs_ratelimit_free(bs_ratelimit_t *rl)
{
    if (!rl)
        return;
    if (rl->have_thread) {
        pthread_mutex_lock(&rl->lock);
        rl->stop = 1;
        pthread_cond_signal(&rl->wake);
        pthread_mutex_unlock(&rl->lock);
        pthread_join(rl->thread, NULL);
    }
    /* Give unused slices back, so a replica that stops does not take its tokens along. */
    if (atomic_load(&rl->shared)) {
        work_t *w = malloc(MAX_ROUND * sizeof *w);
        bs_kv_cmd_t *cmds = malloc(MAX_ROUND * sizeof *cmds);
        bs_kv_reply_t **replies = malloc(MAX_ROUND * sizeof *replies);
        int n = 0;
        for (int h = 0; w && cmds && replies && h < N_HEADS; h++)
            for (entry_t *e = rl->heads[h]; e; e = e->next) {
                if (e->slice < 1)
                    continue;
                work_fill(rl, &w[n], e, -floor(e->slice));
                cmds[n] = (bs_kv_cmd_t){4, w[n].argv, NULL, &rl->script, 1};
                if (++n == MAX_ROUND) {
                    if (bs_kv_pipeline(rl->kv, cmds, n, replies, NULL) == 0)
                        for (int i = 0; i < n; i++)
                            bs_kv_reply_free(replies[i]);
                    n = 0;
                }
            }
        if (n && bs_kv_pipeline(rl->kv, cmds, n, replies, NULL) == 0)
            for (int i = 0; i < n; i++)
                bs_kv_reply_free(replies[i]);
        free(w);
        free(cmds);
        free(replies);
    }
    for (int h = 0; h < N_HEADS; h++) {
        entry_t *e = rl->heads[h];
        while (e) {
            entry_t *next = e->next;
            free(e);
            e = next;
        }
    }
    free(rl->pending);
    bs_kv_free(rl->kv);
    pthread_cond_destroy(&rl->wake);
    pthread_mutex_destroy(&rl->lock);
    free(rl);
}

const char *bs_ratelimit_script(void)
{
    return RL_SCRIPT;
}

void bs_ratelimit_stats(bs_ratelimit_t *rl, bs_ratelimit_stats_t *out)
{
    out->shared = atomic_load(&rl->shared);
    out->fallback_decisions = atomic_load(&rl->fallback_decisions);
    out->fallback_transitions = atomic_load(&rl->fallback_transitions);
    out->refill_rounds = atomic_load(&rl->refill_rounds);
    out->tokens_granted = atomic_load(&rl->tokens_granted);
    bs_kv_stats(rl->kv, &out->kv);
}
