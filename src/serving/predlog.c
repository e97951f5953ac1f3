/*
 * The prediction log (predlog.h): a bounded in-memory buffer that the predict path copies
 * records into, one drain thread that appends them to each tenant's topic `predictions`
 * of the shared log, and the KServe-compatible payload logger.
 *
 * Design.
 *   submit   (any thread, the hot path): one mutex, a memcpy into the current chunk of a
 *            list of 64 KiB chunks (a recycled one, or malloc), counters, unlock. The buffer
 *            holds at most buffer_bytes of entries (header + tenant + endpoint + record);
 *            past it the record is dropped and counted. No parsing, no allocation in the
 *            common case, no syscall (the drain thread is signalled only when a full batch
 *            of BS_LOG_MAX_BATCH records waits).
 *   drain    (one thread, every DRAIN_PERIOD_MS or when kicked): takes the whole chunk list
 *            at once, reads each record's prediction_id / shadow / variant with a top-level
 *            scan (bs_predlog_fields: no full JSON parse), groups the records by tenant in
 *            submit order and appends them with bs_log_append_async, up to BS_LOG_MAX_BATCH
 *            per append. The log copies what it is given, so the chunks are recycled and
 *            their bytes released from the buffer's budget right after.
 *   ack      (a log thread): the append callback counts records and drops per (tenant,
 *            endpoint) and completes its drain round.
 *
 * Flush. Every accepted record gets a sequence number under the buffer lock. A drain round
 * takes the records up to some sequence number and stays open until each of its appends is
 * acknowledged or failed; rounds are completed in order (a FIFO), so done_seq ("every record
 * up to here is acknowledged or dropped") only moves forward. bs_predlog_flush kicks the
 * drain and waits for done_seq to reach the sequence number current at its call.
 *
 * Lifetime. The predlog is reference-counted: one reference for its owner, one per append
 * in the log and one per payload request in the outbound client, so a callback arriving
 * after bs_predlog_free (a log slower than the 2 s drain bound) finds its counters intact;
 * the last reference frees the memory.
 *
 * Locking: mu guards the chunk list, its byte/record counts, the sequence number and the
 * stop/kick flags (cond wakes the drain thread). ack_mu guards the rounds, done_seq, the
 * metric series and the warning clock (ack_cond wakes flushers). pay_mu guards the payload
 * queue, the retry list and their counts. Never two at once, except ack_mu taken inside
 * neither.
 */
#include "serving/predlog.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/time.h"
#include "http/client.h"
#include "store/log.h"

#define DRAIN_PERIOD_MS 20
#define CHUNK_BYTES (64 * 1024)
#define CHUNK_CACHE 64      /* recycled chunks kept (4 MiB) */
#define FREE_DRAIN_MS 2000  /* bs_predlog_free waits this long for the log's acks */
#define MAX_SERIES 4096     /* (tenant, endpoint) pairs counted apart; more fold into one */
#define WARN_EVERY_MS 10000 /* a drop warning at most this often */
#define MAX_NAME 63
#define LOG_ID_MAX 128

/* The payload logger's bounds. */
#define PAY_MAX_ITEMS 4096               /* events queued, waiting to retry or in flight */
#define PAY_MAX_BYTES ((size_t)32 << 20) /* their bodies */
#define PAY_MAX_IN_FLIGHT 32             /* requests handed to the outbound client at once */
#define PAY_ATTEMPTS 3
#define PAY_RETRY_MS 1000
#define PAY_TIMEOUT_MS 5000
#define PAY_CONNECT_TIMEOUT_MS 2000
#define CE_REQUEST "org.kubeflow.serving.inference.request"
#define CE_RESPONSE "org.kubeflow.serving.inference.response"

enum { DROP_BUFFER_FULL, DROP_LOG_OVERLOAD, DROP_NO_TOPIC, DROP_LOG_ERROR, N_DROP };
static const char *const drop_reason[N_DROP] = {"buffer_full", "log_overload", "no_topic",
                                                "log_error"};

/* ---- the buffer -------------------------------------------------------------------------- */

/* One record in a chunk: this header, then tenant, endpoint, the log record's id (when the
 * submitter gave it: has_id) and the record's bytes; the whole padded to 8 bytes. */
typedef struct {
    uint32_t size; /* of the whole entry, padding included */
    uint32_t len;  /* of the record */
    uint8_t tenant_len, endpoint_len, id_len, has_id;
} entry_t;

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    char data[];
} chunk_t;

/* ---- counters ---------------------------------------------------------------------------- */

typedef struct series {
    struct series *next;
    char tenant[MAX_NAME + 1], endpoint[MAX_NAME + 1];
    uint64_t records, dropped[N_DROP];
    uint64_t pay_sent, pay_failed, pay_dropped;
} series_t;

#define SERIES_BUCKETS 512

/* A drain round: its records' sequence numbers end at seq_end; pending appends (plus one
 * while the drain thread still issues them). */
typedef struct round {
    struct round *next;
    uint64_t seq_end;
    int pending;
} round_t;

/* A run of consecutive records of one append with the same (tenant, endpoint). */
typedef struct {
    series_t *s;
    const char *endpoint; /* while the drain builds the batch */
    int endpoint_len;
    int first, count;
} run_t;

typedef struct {
    struct bs_predlog *p;
    round_t *round;
    int n, n_runs;
    run_t runs[];
} append_ctx_t;

/* ---- the payload logger ------------------------------------------------------------------ */

typedef struct pay_item {
    struct pay_item *next;
    int64_t due_ms;
    int attempts;
    int response; /* 1: ce-type …response */
    char tenant[MAX_NAME + 1], endpoint[MAX_NAME + 1], variant[MAX_NAME + 1];
    char request_id[129];
    char time[32];
    struct bs_predlog *p;
    char *url; /* into data */
    char *body;
    size_t body_len;
    char data[]; /* url NUL, body */
} pay_item_t;

struct bs_predlog {
    bs_log_t *log;
    bs_httpc_t *http;
    char source[256];
    size_t cap;
    atomic_int refs;

    pthread_mutex_t mu;
    pthread_cond_t cond;
    chunk_t *head, *tail, *cache;
    int n_cache;
    size_t bytes;   /* entries held (released once handed to the log) */
    uint32_t count; /* records waiting in the list */
    uint64_t seq;   /* records accepted so far */
    int stopping, kick;
    pthread_t thread;
    int started;

    pthread_mutex_t ack_mu;
    pthread_cond_t ack_cond;
    round_t *rounds, *rounds_tail;
    uint64_t done_seq;
    series_t *buckets[SERIES_BUCKETS];
    int n_series;
    series_t other; /* past MAX_SERIES */
    int64_t last_warn_ms;

    pthread_mutex_t pay_mu;
    pay_item_t *pay_head, *pay_tail; /* ready, FIFO */
    pay_item_t *pay_retry;           /* waiting for due_ms */
    int pay_items, pay_in_flight;
    size_t pay_bytes;
    int pay_stopping;

    /* drain thread scratch */
    bs_log_record_in_t *recs;
    char (*ids)[LOG_ID_MAX + 1];
    run_t *runs;
};

/* ---- helpers ------------------------------------------------------------------------------ */

static void abs_deadline(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static int64_t mono_ms(void)
{
    return (int64_t)(bs_time_mono_ns() / 1000000u);
}

static void cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

static uint32_t name_hash(const char *a, size_t al, const char *b, size_t bl)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < al; i++)
        h = (h ^ (uint8_t)a[i]) * 16777619u;
    h = (h ^ 0xff) * 16777619u;
    for (size_t i = 0; i < bl; i++)
        h = (h ^ (uint8_t)b[i]) * 16777619u;
    return h;
}

/* The series of (tenant, endpoint), created on first use. Under ack_mu. */
static series_t *series_get(bs_predlog_t *p, const char *t, size_t tl, const char *e, size_t el)
{
    if (tl > MAX_NAME)
        tl = MAX_NAME;
    if (el > MAX_NAME)
        el = MAX_NAME;
    uint32_t h = name_hash(t, tl, e, el) % SERIES_BUCKETS;
    for (series_t *s = p->buckets[h]; s; s = s->next)
        if (strlen(s->tenant) == tl && strlen(s->endpoint) == el && !memcmp(s->tenant, t, tl) &&
            !memcmp(s->endpoint, e, el))
            return s;
    series_t *s = p->n_series < MAX_SERIES ? calloc(1, sizeof *s) : NULL;
    if (!s)
        return &p->other;
    memcpy(s->tenant, t, tl);
    memcpy(s->endpoint, e, el);
    s->next = p->buckets[h];
    p->buckets[h] = s;
    p->n_series++;
    return s;
}

static void predlog_destroy(bs_predlog_t *p)
{
    chunk_t *lists[2] = {p->head, p->cache};
    for (int i = 0; i < 2; i++)
        for (chunk_t *c = lists[i], *n; c; c = n) {
            n = c->next;
            free(c);
        }
    for (int i = 0; i < SERIES_BUCKETS; i++)
        for (series_t *s = p->buckets[i], *n; s; s = n) {
            n = s->next;
            free(s);
        }
    for (round_t *r = p->rounds, *n; r; r = n) {
        n = r->next;
        free(r);
    }
    pay_item_t *pl[2] = {p->pay_head, p->pay_retry};
    for (int i = 0; i < 2; i++)
        for (pay_item_t *it = pl[i], *n; it; it = n) {
            n = it->next;
            free(it);
        }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->ack_mu);
    pthread_cond_destroy(&p->ack_cond);
    pthread_mutex_destroy(&p->pay_mu);
    free(p->recs);
    free(p->ids);
    free(p->runs);
    free(p);
}

static void predlog_ref(bs_predlog_t *p)
{
    atomic_fetch_add(&p->refs, 1);
}

static void predlog_unref(bs_predlog_t *p)
{
    if (atomic_fetch_sub(&p->refs, 1) == 1)
        predlog_destroy(p);
}

/* ---- the record's top-level fields --------------------------------------------------------- */

static const char *skip_ws(const char *s, const char *e)
{
    while (s < e && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
        s++;
    return s;
}

/* s at '"': past the closing quote, or NULL. */
static const char *skip_string(const char *s, const char *e)
{
    for (s++; s < e; s++) {
        if (*s == '\\') {
            s++;
            continue;
        }
        if (*s == '"')
            return s + 1;
    }
    return NULL;
}

/* Past one JSON value starting at s (containers by bracket counting, strings skipped), or
 * NULL when the text ends first. Validity inside containers is not checked: the record was
 * written as JSON by the predict path or accepted as JSON by the topic's publish. */
static const char *skip_value(const char *s, const char *e)
{
    if (s >= e)
        return NULL;
    if (*s == '"')
        return skip_string(s, e);
    if (*s == '{' || *s == '[') {
        int depth = 0;
        while (s < e) {
            char c = *s;
            if (c == '"') {
                if (!(s = skip_string(s, e)))
                    return NULL;
                continue;
            }
            if (c == '{' || c == '[')
                depth++;
            else if ((c == '}' || c == ']') && --depth == 0)
                return s + 1;
            s++;
        }
        return NULL;
    }
    while (s < e && *s != ',' && *s != '}' && *s != ']' && *s != ' ' && *s != '\t' && *s != '\n' &&
           *s != '\r')
        s++;
    return s;
}

static int key_is(const char *k, size_t kl, const char *want)
{
    size_t n = strlen(want);
    return kl == n && !memcmp(k, want, n);
}

/* bs_predlog_fields; the record's time is parsed only when want_time is set (the drain
 * needs the id alone). */
static int scan_fields(const char *json, size_t len, bs_predlog_fields_t *out, int want_time)
{
    memset(out, 0, sizeof *out);
    const char *s = json, *e = json + len;
    s = skip_ws(s, e);
    if (s >= e || *s != '{')
        return BS_EINVAL;
    s = skip_ws(s + 1, e);
    if (s < e && *s == '}')
        return 0;
    while (s < e) {
        if (*s != '"')
            return BS_EINVAL;
        const char *k = s + 1, *ke = skip_string(s, e);
        if (!ke)
            return BS_EINVAL;
        size_t kl = (size_t)(ke - 1 - k);
        s = skip_ws(ke, e);
        if (s >= e || *s != ':')
            return BS_EINVAL;
        const char *v = skip_ws(s + 1, e), *ve = skip_value(v, e);
        if (!ve || ve == v)
            return BS_EINVAL;
        int str = *v == '"';
        const char *sv = str ? v + 1 : v;
        size_t sl = str ? (size_t)(ve - 1 - sv) : (size_t)(ve - v);
        if (key_is(k, kl, "prediction_id") && str) {
            out->prediction_id = sv;
            out->prediction_id_len = sl;
        } else if (key_is(k, kl, "endpoint") && str) {
            out->endpoint = sv;
            out->endpoint_len = sl;
        } else if (key_is(k, kl, "variant") && str) {
            out->variant = sv;
            out->variant_len = sl;
        } else if (key_is(k, kl, "model") && str) {
            out->model = sv;
            out->model_len = sl;
        } else if (key_is(k, kl, "version") && !str) {
            int64_t n = 0;
            size_t i = 0;
            for (; i < sl && i < 12 && sv[i] >= '0' && sv[i] <= '9'; i++)
                n = n * 10 + (sv[i] - '0');
            out->version = i == sl ? n : 0;
        } else if (key_is(k, kl, "shadow")) {
            out->shadow = sl == 4 && !memcmp(sv, "true", 4);
        } else if (want_time && key_is(k, kl, "time") && str && sl < 40) {
            char t[48];
            memcpy(t, sv, sl);
            t[sl] = 0;
            int64_t ms;
            if (bs_time_parse_rfc3339(t, &ms) == 0)
                out->time_ms = ms;
        } else if (key_is(k, kl, "error")) {
            out->error = 1;
        }
        s = skip_ws(ve, e);
        if (s < e && *s == ',') {
            s = skip_ws(s + 1, e);
            continue;
        }
        if (s < e && *s == '}')
            return 0;
        return BS_EINVAL;
    }
    return BS_EINVAL;
}

int bs_predlog_fields(const char *json, size_t len, bs_predlog_fields_t *out)
{
    return scan_fields(json, len, out, 1);
}

/* The log record's id of a record (predlog.h): its prediction_id, or
 * "<prediction_id>:shadow:<variant>"; "" when it has none (the log then makes one). */
static void record_id(const char *json, size_t len, char out[LOG_ID_MAX + 1])
{
    bs_predlog_fields_t f;
    out[0] = 0;
    if (scan_fields(json, len, &f, 0) != 0 || !f.prediction_id || !f.prediction_id_len ||
        f.prediction_id_len > 64 || memchr(f.prediction_id, '\\', f.prediction_id_len))
        return;
    if (!f.shadow) {
        memcpy(out, f.prediction_id, f.prediction_id_len);
        out[f.prediction_id_len] = 0;
        return;
    }
    size_t vl = f.variant ? f.variant_len : 0;
    if (vl > MAX_NAME)
        vl = MAX_NAME;
    snprintf(out, LOG_ID_MAX + 1, "%.*s:shadow:%.*s", (int)f.prediction_id_len, f.prediction_id,
             (int)vl, f.variant ? f.variant : "");
}

/* ---- submit ------------------------------------------------------------------------------ */

static void count_drop(bs_predlog_t *p, const char *t, size_t tl, const char *e, size_t el,
                       int reason, uint64_t n)
{
    pthread_mutex_lock(&p->ack_mu);
    series_get(p, t, tl, e, el)->dropped[reason] += n;
    int64_t now = mono_ms();
    int warn = now - p->last_warn_ms >= WARN_EVERY_MS || p->last_warn_ms == 0;
    if (warn)
        p->last_warn_ms = now;
    pthread_mutex_unlock(&p->ack_mu);
    if (warn)
        BS_LOG(BS_LOG_WARN, "predlog",
               "prediction log records dropped (%s; tenant %.*s, endpoint %.*s): see "
               "basalt_prediction_log_dropped_total",
               drop_reason[reason], (int)tl, t, (int)el, e);
}

int bs_predlog_submit(bs_predlog_t *p, const char *tenant, const char *endpoint, const char *json,
                      size_t len)
{
    if (!p)
        return BS_EUNAVAIL;
    return bs_predlog_submit_ex(p, tenant, strlen(tenant), endpoint, strlen(endpoint), NULL, 0,
                                NULL, 0, json, len);
}

int bs_predlog_submit_ex(bs_predlog_t *p, const char *tenant, size_t tl, const char *endpoint,
                         size_t el, const char *prediction_id, size_t pid_len,
                         const char *shadow_variant, size_t sv_len, const char *json, size_t len)
{
    if (!p)
        return BS_EUNAVAIL;
    /* The log record's id, as record_id reads it from the record. */
    char idb[LOG_ID_MAX + 1];
    size_t il = 0;
    int has_id = 0;
    if (prediction_id) {
        has_id = 1;
        if (pid_len && pid_len <= 64 && !memchr(prediction_id, '\\', pid_len)) {
            if (!shadow_variant) {
                memcpy(idb, prediction_id, pid_len);
                il = pid_len;
            } else {
                if (sv_len > MAX_NAME)
                    sv_len = MAX_NAME;
                int w = snprintf(idb, sizeof idb, "%.*s:shadow:%.*s", (int)pid_len,
                                 prediction_id, (int)sv_len, shadow_variant);
                il = w < 0 ? 0 : (size_t)w < sizeof idb ? (size_t)w : sizeof idb - 1;
            }
        }
    }
    if (tl > MAX_NAME)
        tl = MAX_NAME;
    if (el > MAX_NAME)
        el = MAX_NAME;
    if (len > UINT32_MAX / 2) {
        count_drop(p, tenant, tl, endpoint, el, DROP_BUFFER_FULL, 1);
        return BS_EOVERLOAD;
    }
    size_t need = (sizeof(entry_t) + tl + el + il + len + 7) & ~(size_t)7;
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        pthread_mutex_unlock(&p->mu);
        return BS_EUNAVAIL;
    }
    if (p->bytes + need > p->cap) {
        pthread_mutex_unlock(&p->mu);
        count_drop(p, tenant, tl, endpoint, el, DROP_BUFFER_FULL, 1);
        return BS_EOVERLOAD;
    }
    chunk_t *c = p->tail;
    if (!c || c->cap - c->used < need) {
        if (need <= CHUNK_BYTES && p->cache) {
            c = p->cache;
            p->cache = c->next;
            p->n_cache--;
        } else {
            size_t cap = need > CHUNK_BYTES ? need : CHUNK_BYTES;
            c = malloc(sizeof *c + cap);
            if (!c) {
                pthread_mutex_unlock(&p->mu);
                count_drop(p, tenant, tl, endpoint, el, DROP_BUFFER_FULL, 1);
                return BS_EOVERLOAD;
            }
            c->cap = cap;
        }
        c->next = NULL;
        c->used = 0;
        if (p->tail)
            p->tail->next = c;
        else
            p->head = c;
        p->tail = c;
    }
    entry_t *en = (entry_t *)(c->data + c->used);
    en->size = (uint32_t)need;
    en->len = (uint32_t)len;
    en->tenant_len = (uint8_t)tl;
    en->endpoint_len = (uint8_t)el;
    en->id_len = (uint8_t)il;
    en->has_id = (uint8_t)has_id;
    char *d = (char *)(en + 1);
    memcpy(d, tenant, tl);
    memcpy(d + tl, endpoint, el);
    memcpy(d + tl + el, idb, il);
    memcpy(d + tl + el + il, json, len);
    c->used += need;
    p->bytes += need;
    p->seq++;
    int kick = ++p->count == BS_LOG_MAX_BATCH;
    pthread_mutex_unlock(&p->mu);
    if (kick)
        pthread_cond_signal(&p->cond);
    return 0;
}

/* ---- the drain --------------------------------------------------------------------------- */

/* Under ack_mu: completed rounds at the head of the FIFO advance done_seq. */
static void rounds_advance(bs_predlog_t *p)
{
    int moved = 0;
    while (p->rounds && p->rounds->pending == 0) {
        round_t *r = p->rounds;
        p->done_seq = r->seq_end;
        p->rounds = r->next;
        if (!p->rounds)
            p->rounds_tail = NULL;
        free(r);
        moved = 1;
    }
    if (moved)
        pthread_cond_broadcast(&p->ack_cond);
}

static int reason_of(int code)
{
    return code == BS_EOVERLOAD   ? DROP_LOG_OVERLOAD
           : code == BS_ENOTFOUND ? DROP_NO_TOPIC
                                  : DROP_LOG_ERROR;
}

static void on_appended(void *ud, int code, const bs_log_append_result_t *res, int n,
                        const bs_err_t *err)
{
    append_ctx_t *ctx = ud;
    bs_predlog_t *p = ctx->p;
    uint64_t dropped = 0;
    int reason = DROP_LOG_ERROR;
    pthread_mutex_lock(&p->ack_mu);
    for (int i = 0; i < ctx->n_runs; i++) {
        run_t *r = &ctx->runs[i];
        if (code != 0 || !res) {
            reason = reason_of(code);
            r->s->dropped[reason] += (uint64_t)r->count;
            dropped += (uint64_t)r->count;
            continue;
        }
        for (int j = r->first; j < r->first + r->count; j++) {
            if (j < n && res[j].code == 0) {
                r->s->records++;
            } else {
                r->s->dropped[DROP_LOG_ERROR]++;
                dropped++;
            }
        }
    }
    ctx->round->pending--;
    rounds_advance(p);
    int64_t now = mono_ms();
    int warn = dropped && (now - p->last_warn_ms >= WARN_EVERY_MS || p->last_warn_ms == 0);
    if (warn)
        p->last_warn_ms = now;
    pthread_mutex_unlock(&p->ack_mu);
    if (warn)
        BS_LOG(BS_LOG_WARN, "predlog", "%llu prediction log records dropped (%s): %s",
               (unsigned long long)dropped, drop_reason[reason],
               code && err ? err->msg : "the log refused some records");
    free(ctx);
    predlog_unref(p);
}

/* Appends recs[0..n) (one tenant) with their runs; counts them as dropped when the log
 * refuses the append at the call. */
static void append_batch(bs_predlog_t *p, round_t *round, const char *tenant, int n, int n_runs)
{
    append_ctx_t *ctx = malloc(sizeof *ctx + (size_t)n_runs * sizeof(run_t));
    int code = BS_ENOMEM;
    bs_err_t err;
    bs_err_set(&err, BS_ENOMEM, "out of memory");
    if (ctx) {
        ctx->p = p;
        ctx->round = round;
        ctx->n = n;
        ctx->n_runs = n_runs;
        memcpy(ctx->runs, p->runs, (size_t)n_runs * sizeof(run_t));
        pthread_mutex_lock(&p->ack_mu);
        round->pending++;
        pthread_mutex_unlock(&p->ack_mu);
        predlog_ref(p);
        code = bs_log_append_async(p->log, tenant, BS_PREDLOG_TOPIC, p->recs, n, on_appended, ctx,
                                   &err);
        if (code == 0)
            return;
        predlog_unref(p); /* never the last: the owner holds one */
        free(ctx);
    }
    int reason = reason_of(code);
    uint64_t dropped = 0;
    pthread_mutex_lock(&p->ack_mu);
    if (ctx)
        round->pending--;
    for (int i = 0; i < n_runs; i++) {
        p->runs[i].s->dropped[reason] += (uint64_t)p->runs[i].count;
        dropped += (uint64_t)p->runs[i].count;
    }
    int64_t now = mono_ms();
    int warn = now - p->last_warn_ms >= WARN_EVERY_MS || p->last_warn_ms == 0;
    if (warn)
        p->last_warn_ms = now;
    pthread_mutex_unlock(&p->ack_mu);
    if (warn)
        BS_LOG(BS_LOG_WARN, "predlog", "%llu prediction log records of tenant %s dropped (%s): %s",
               (unsigned long long)dropped, tenant, drop_reason[reason], err.msg);
}

typedef struct {
    const entry_t *e;
    int next; /* the next entry of the same tenant, -1 */
} ent_ref_t;

typedef struct {
    const char *tenant;
    int tenant_len;
    int first, last;
} group_t;

static const char *entry_tenant(const entry_t *e)
{
    return (const char *)(e + 1);
}
static const char *entry_endpoint(const entry_t *e)
{
    return (const char *)(e + 1) + e->tenant_len;
}
static const char *entry_id(const entry_t *e)
{
    return (const char *)(e + 1) + e->tenant_len + e->endpoint_len;
}
static const char *entry_record(const entry_t *e)
{
    return (const char *)(e + 1) + e->tenant_len + e->endpoint_len + e->id_len;
}

/* Under ack_mu: queues round at the FIFO's tail. */
static void round_push(bs_predlog_t *p, round_t *round)
{
    if (p->rounds_tail)
        p->rounds_tail->next = round;
    else
        p->rounds = round;
    p->rounds_tail = round;
}

/* Every record of list as dropped (out of memory in the drain). */
static void drop_list(bs_predlog_t *p, const chunk_t *list)
{
    for (const chunk_t *c = list; c; c = c->next)
        for (size_t off = 0; off < c->used;) {
            const entry_t *e = (const entry_t *)(c->data + off);
            count_drop(p, entry_tenant(e), e->tenant_len, entry_endpoint(e), e->endpoint_len,
                       DROP_LOG_ERROR, 1);
            off += e->size;
        }
}

/* Fills p->recs / p->ids / p->runs with up to BS_LOG_MAX_BATCH records of one tenant from
 * entry *i on (following the tenant's chain) and returns their count; *n_runs gets the
 * runs, their series resolved. */
static int build_batch(bs_predlog_t *p, const ent_ref_t *ents, int *i, const char *tenant,
                       size_t tl, int *n_runs)
{
    int m = 0, nr = 0;
    for (; *i >= 0 && m < BS_LOG_MAX_BATCH; *i = ents[*i].next, m++) {
        const entry_t *e = ents[*i].e;
        const char *ep = entry_endpoint(e), *rec = entry_record(e);
        if (e->has_id) {
            memcpy(p->ids[m], entry_id(e), e->id_len);
            p->ids[m][e->id_len] = 0;
        } else {
            record_id(rec, e->len, p->ids[m]);
        }
        p->recs[m] =
            (bs_log_record_in_t){.id = p->ids[m][0] ? p->ids[m] : NULL, .data = rec, .len = e->len};
        run_t *last = nr ? &p->runs[nr - 1] : NULL;
        if (last && last->endpoint_len == e->endpoint_len &&
            !memcmp(last->endpoint, ep, e->endpoint_len)) {
            last->count++;
            continue;
        }
        p->runs[nr++] = (run_t){NULL, ep, e->endpoint_len, m, 1};
    }
    pthread_mutex_lock(&p->ack_mu);
    for (int r = 0; r < nr; r++)
        p->runs[r].s =
            series_get(p, tenant, tl, p->runs[r].endpoint, (size_t)p->runs[r].endpoint_len);
    pthread_mutex_unlock(&p->ack_mu);
    *n_runs = nr;
    return m;
}

/* One round: everything in list (n records, up to seq_end) to the log. */
static void drain_list(bs_predlog_t *p, chunk_t *list, uint32_t n, uint64_t seq_end)
{
    round_t *round = calloc(1, sizeof *round);
    ent_ref_t *ents = round ? malloc((size_t)(n ? n : 1) * sizeof *ents) : NULL;
    group_t *groups = NULL;
    int n_groups = 0, cap_groups = 0;
    if (!round) {
        /* Out of memory: the records are lost (counted); done_seq still moves, in order. */
        drop_list(p, list);
        pthread_mutex_lock(&p->ack_mu);
        while (p->rounds)
            pthread_cond_wait(&p->ack_cond, &p->ack_mu);
        p->done_seq = seq_end;
        pthread_cond_broadcast(&p->ack_cond);
        pthread_mutex_unlock(&p->ack_mu);
        return;
    }
    round->seq_end = seq_end;
    round->pending = 1; /* ours, while the appends are issued */
    pthread_mutex_lock(&p->ack_mu);
    round_push(p, round);
    pthread_mutex_unlock(&p->ack_mu);
    if (!ents)
        drop_list(p, list);

    /* Group by tenant, keeping submit order within each. */
    int k = 0, last_g = -1;
    for (chunk_t *c = ents ? list : NULL; c; c = c->next)
        for (size_t off = 0; off < c->used && k < (int)n;) {
            const entry_t *e = (const entry_t *)(c->data + off);
            off += e->size;
            const char *t = entry_tenant(e);
            int g = -1;
            if (last_g >= 0 && groups[last_g].tenant_len == e->tenant_len &&
                !memcmp(groups[last_g].tenant, t, e->tenant_len))
                g = last_g;
            for (int i = 0; g < 0 && i < n_groups; i++)
                if (groups[i].tenant_len == e->tenant_len &&
                    !memcmp(groups[i].tenant, t, e->tenant_len))
                    g = i;
            if (g < 0) {
                if (n_groups == cap_groups) {
                    int nc = cap_groups ? cap_groups * 2 : 8;
                    group_t *ng = realloc(groups, (size_t)nc * sizeof *ng);
                    if (!ng) {
                        count_drop(p, t, e->tenant_len, entry_endpoint(e), e->endpoint_len,
                                   DROP_LOG_ERROR, 1);
                        continue;
                    }
                    groups = ng;
                    cap_groups = nc;
                }
                g = n_groups++;
                groups[g] = (group_t){t, e->tenant_len, -1, -1};
            }
            ents[k] = (ent_ref_t){e, -1};
            if (groups[g].last >= 0)
                ents[groups[g].last].next = k;
            else
                groups[g].first = k;
            groups[g].last = k;
            last_g = g;
            k++;
        }

    for (int g = 0; g < n_groups; g++) {
        char tenant[MAX_NAME + 1];
        size_t tl = (size_t)groups[g].tenant_len;
        memcpy(tenant, groups[g].tenant, tl);
        tenant[tl] = 0;
        for (int i = groups[g].first; i >= 0;) {
            int n_runs, m = build_batch(p, ents, &i, tenant, tl, &n_runs);
            append_batch(p, round, tenant, m, n_runs);
        }
    }
    free(groups);
    free(ents);
    pthread_mutex_lock(&p->ack_mu);
    round->pending--;
    rounds_advance(p);
    pthread_mutex_unlock(&p->ack_mu);
}

static void pay_pump(bs_predlog_t *p);

/* Takes everything buffered and drains it; returns 1 if there was something. */
static int drain_once(bs_predlog_t *p)
{
    pthread_mutex_lock(&p->mu);
    chunk_t *list = p->head;
    uint32_t n = p->count;
    uint64_t seq_end = p->seq;
    size_t held = p->bytes;
    p->head = p->tail = NULL;
    p->count = 0;
    p->kick = 0;
    pthread_mutex_unlock(&p->mu);
    if (!list)
        return 0;
    drain_list(p, list, n, seq_end);
    /* The log copied the records: release their bytes and recycle the chunks. */
    chunk_t *spare = NULL; /* freed after the lock: submit never waits on free() */
    pthread_mutex_lock(&p->mu);
    p->bytes -= held;
    for (chunk_t *c = list, *next; c; c = next) {
        next = c->next;
        if (c->cap == CHUNK_BYTES && p->n_cache < CHUNK_CACHE) {
            c->next = p->cache;
            p->cache = c;
            p->n_cache++;
        } else {
            c->next = spare;
            spare = c;
        }
    }
    pthread_mutex_unlock(&p->mu);
    for (chunk_t *c = spare, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    return 1;
}

static void *drain_main(void *arg)
{
    bs_predlog_t *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stopping) {
        if (!p->kick && p->count < BS_LOG_MAX_BATCH) {
            struct timespec ts;
            abs_deadline(&ts, DRAIN_PERIOD_MS);
            pthread_cond_timedwait(&p->cond, &p->mu, &ts);
        }
        if (p->stopping)
            break;
        pthread_mutex_unlock(&p->mu);
        drain_once(p);
        pay_pump(p);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    /* Stopping: submit refuses from here on; append what is left. */
    while (drain_once(p))
        ;
    return NULL;
}

/* ---- the payload logger ------------------------------------------------------------------ */

static void pay_count(bs_predlog_t *p, const pay_item_t *it, int what)
{
    pthread_mutex_lock(&p->ack_mu);
    series_t *s = series_get(p, it->tenant, strlen(it->tenant), it->endpoint, strlen(it->endpoint));
    if (what == 0)
        s->pay_sent++;
    else if (what == 1)
        s->pay_failed++;
    else
        s->pay_dropped++;
    pthread_mutex_unlock(&p->ack_mu);
}

/* Under pay_mu: one item leaves the logger (sent, failed or dropped). */
static void pay_forget(bs_predlog_t *p, pay_item_t *it)
{
    p->pay_items--;
    p->pay_bytes -= it->body_len;
}

static void on_payload_done(void *ud, const bs_httpc_resp_t *resp)
{
    pay_item_t *it = ud;
    bs_predlog_t *p = it->p;
    int ok = resp->code == 0 && resp->status >= 200 && resp->status < 300;
    pthread_mutex_lock(&p->pay_mu);
    p->pay_in_flight--;
    int retry = !ok && it->attempts < PAY_ATTEMPTS && !p->pay_stopping;
    if (retry) {
        it->due_ms = mono_ms() + PAY_RETRY_MS;
        it->next = p->pay_retry;
        p->pay_retry = it;
    } else {
        pay_forget(p, it);
    }
    pthread_mutex_unlock(&p->pay_mu);
    if (!retry) {
        if (!ok)
            BS_LOG(BS_LOG_DEBUG, "predlog", "payload logger: %s gave up after %d attempts (%s)",
                   it->url, it->attempts, resp->code ? resp->error : "HTTP status");
        pay_count(p, it, ok ? 0 : 1);
        free(it);
    }
    predlog_unref(p);
}

/* Header value characters: printable ASCII only (the client refuses control characters). */
static void header_safe(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            *s = '_';
}

/* Submits one item; 0, or the client's code (the item is not in flight). */
static int pay_submit(bs_predlog_t *p, pay_item_t *it)
{
    char h[12][320];
    const char *hv[13];
    int n = 0;
    snprintf(h[n++], sizeof h[0], "Content-Type: application/json");
    snprintf(h[n++], sizeof h[0], "ce-specversion: 1.0");
    snprintf(h[n++], sizeof h[0], "ce-id: %s", it->request_id);
    snprintf(h[n++], sizeof h[0], "ce-type: %s", it->response ? CE_RESPONSE : CE_REQUEST);
    snprintf(h[n++], sizeof h[0], "ce-source: %s", p->source);
    snprintf(h[n++], sizeof h[0], "ce-time: %s", it->time);
    snprintf(h[n++], sizeof h[0], "ce-inferenceservicename: %s", it->endpoint);
    snprintf(h[n++], sizeof h[0], "ce-namespace: %s", it->tenant);
    snprintf(h[n++], sizeof h[0], "ce-component: predictor");
    snprintf(h[n++], sizeof h[0], "ce-endpoint: %s", it->variant);
    snprintf(h[n++], sizeof h[0], "ce-metadata: {}");
    for (int i = 0; i < n; i++) {
        header_safe(h[i]);
        hv[i] = h[i];
    }
    hv[n] = NULL;
    bs_httpc_req_t r = {.method = "POST",
                        .url = it->url,
                        .headers = hv,
                        .body = it->body,
                        .body_len = it->body_len,
                        .timeout_ms = PAY_TIMEOUT_MS,
                        .connect_timeout_ms = PAY_CONNECT_TIMEOUT_MS,
                        .max_response_bytes = 1024};
    bs_err_t err;
    predlog_ref(p);
    int rc = bs_httpc_submit(p->http, &r, on_payload_done, it, &err);
    if (rc != 0)
        predlog_unref(p);
    return rc;
}

/* On the drain thread: due retries back to the ready queue, then ready items to the client
 * while fewer than PAY_MAX_IN_FLIGHT are out. */
static void pay_pump(bs_predlog_t *p)
{
    if (!p->http)
        return;
    int64_t now = mono_ms();
    pthread_mutex_lock(&p->pay_mu);
    for (pay_item_t **pp = &p->pay_retry; *pp;) {
        pay_item_t *it = *pp;
        if (it->due_ms > now) {
            pp = &it->next;
            continue;
        }
        *pp = it->next;
        it->next = p->pay_head; /* a retry goes first */
        p->pay_head = it;
        if (!p->pay_tail)
            p->pay_tail = it;
    }
    while (p->pay_head && p->pay_in_flight < PAY_MAX_IN_FLIGHT && !p->pay_stopping) {
        pay_item_t *it = p->pay_head;
        p->pay_head = it->next;
        if (!p->pay_head)
            p->pay_tail = NULL;
        it->next = NULL;
        it->attempts++;
        p->pay_in_flight++;
        pthread_mutex_unlock(&p->pay_mu);
        int rc = pay_submit(p, it);
        pthread_mutex_lock(&p->pay_mu);
        if (rc == 0)
            continue;
        p->pay_in_flight--;
        if (rc == BS_EOVERLOAD) { /* the client's queue is full: not an attempt, try later */
            it->attempts--;
            it->next = p->pay_head;
            p->pay_head = it;
            if (!p->pay_tail)
                p->pay_tail = it;
            break;
        }
        pay_forget(p, it);
        pthread_mutex_unlock(&p->pay_mu);
        BS_LOG(BS_LOG_DEBUG, "predlog", "payload logger: cannot post to %s", it->url);
        pay_count(p, it, 1);
        free(it);
        pthread_mutex_lock(&p->pay_mu);
    }
    pthread_mutex_unlock(&p->pay_mu);
}

static void copy_name(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

/* One event into the queue (copied), or BS_EOVERLOAD (counted as dropped). */
static int pay_enqueue(bs_predlog_t *p, const char *url, int response, const char *tenant,
                       const char *endpoint, const char *variant, const char *request_id,
                       const char *time, const char *body, size_t len)
{
    size_t ul = strlen(url);
    pay_item_t *it = malloc(sizeof *it + ul + 1 + len);
    if (it) {
        it->next = NULL;
        it->p = p;
        it->due_ms = 0;
        it->attempts = 0;
        it->response = response;
        copy_name(it->tenant, sizeof it->tenant, tenant);
        copy_name(it->endpoint, sizeof it->endpoint, endpoint);
        copy_name(it->variant, sizeof it->variant, variant);
        copy_name(it->request_id, sizeof it->request_id, request_id);
        copy_name(it->time, sizeof it->time, time);
        it->url = it->data;
        memcpy(it->url, url, ul + 1);
        it->body = it->data + ul + 1;
        memcpy(it->body, body, len);
        it->body_len = len;
        pthread_mutex_lock(&p->pay_mu);
        int full =
            p->pay_stopping || p->pay_items >= PAY_MAX_ITEMS || p->pay_bytes + len > PAY_MAX_BYTES;
        if (!full) {
            p->pay_items++;
            p->pay_bytes += len;
            if (p->pay_tail)
                p->pay_tail->next = it;
            else
                p->pay_head = it;
            p->pay_tail = it;
        }
        pthread_mutex_unlock(&p->pay_mu);
        if (!full)
            return 0;
    }
    pay_item_t tmp;
    copy_name(tmp.tenant, sizeof tmp.tenant, tenant);
    copy_name(tmp.endpoint, sizeof tmp.endpoint, endpoint);
    pay_count(p, &tmp, 2);
    free(it);
    return BS_EOVERLOAD;
}

int bs_predlog_payload(bs_predlog_t *p, const char *url, const char *mode, const char *tenant,
                       const char *endpoint, const char *variant, const char *request_id,
                       const char *request_json, size_t request_len, const char *response_json,
                       size_t response_len)
{
    if (!p || !url || !*url)
        return BS_EINVAL;
    int all = !mode || !*mode || !strcmp(mode, "all");
    int req = all || !strcmp(mode, "request"), resp = all || !strcmp(mode, "response");
    if (!req && !resp)
        return BS_EINVAL;
    if (!p->http) {
        pay_item_t tmp;
        copy_name(tmp.tenant, sizeof tmp.tenant, tenant);
        copy_name(tmp.endpoint, sizeof tmp.endpoint, endpoint);
        pay_count(p, &tmp, 2);
        return BS_EOVERLOAD;
    }
    char time[32];
    bs_time_rfc3339(bs_time_wall_ms(), time, sizeof time);
    int rc = 0;
    if (req && request_json)
        rc = pay_enqueue(p, url, 0, tenant, endpoint, variant, request_id, time, request_json,
                         request_len);
    /* KServe logs a response only when there is one (its agent: status 200). */
    if (resp && response_json) {
        int r2 = pay_enqueue(p, url, 1, tenant, endpoint, variant, request_id, time, response_json,
                             response_len);
        if (r2)
            rc = r2;
    }
    return rc;
}

/* ---- lifecycle --------------------------------------------------------------------------- */

bs_predlog_t *bs_predlog_new(const bs_predlog_opts_t *o, bs_err_t *err)
{
    if (!o || !o->log) {
        bs_err_set(err, BS_EINVAL, "the prediction log needs a log");
        return NULL;
    }
    bs_predlog_t *p = calloc(1, sizeof *p);
    if (p) {
        p->recs = malloc(BS_LOG_MAX_BATCH * sizeof *p->recs);
        p->ids = malloc(BS_LOG_MAX_BATCH * sizeof *p->ids);
        p->runs = malloc(BS_LOG_MAX_BATCH * sizeof *p->runs);
    }
    if (!p || !p->recs || !p->ids || !p->runs) {
        if (p) {
            free(p->recs);
            free(p->ids);
            free(p->runs);
        }
        free(p);
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    p->log = o->log;
    p->http = o->http;
    snprintf(p->source, sizeof p->source, "%s", o->source && *o->source ? o->source : "basalt");
    header_safe(p->source);
    p->cap = o->buffer_bytes ? o->buffer_bytes : (size_t)64 << 20;
    atomic_init(&p->refs, 1);
    pthread_mutex_init(&p->mu, NULL);
    cond_init_mono(&p->cond);
    pthread_mutex_init(&p->ack_mu, NULL);
    cond_init_mono(&p->ack_cond);
    pthread_mutex_init(&p->pay_mu, NULL);
    snprintf(p->other.tenant, sizeof p->other.tenant, "_other");
    snprintf(p->other.endpoint, sizeof p->other.endpoint, "_other");
    if (pthread_create(&p->thread, NULL, drain_main, p) != 0) {
        predlog_destroy(p);
        bs_err_set(err, BS_EINTERNAL, "cannot start the prediction log's drain thread");
        return NULL;
    }
    p->started = 1;
    return p;
}

int bs_predlog_flush(bs_predlog_t *p, int timeout_ms)
{
    if (!p)
        return 0;
    pthread_mutex_lock(&p->mu);
    uint64_t target = p->seq;
    p->kick = 1;
    pthread_mutex_unlock(&p->mu);
    pthread_cond_signal(&p->cond);
    struct timespec ts;
    abs_deadline(&ts, timeout_ms > 0 ? timeout_ms : 0);
    int rc = 0;
    pthread_mutex_lock(&p->ack_mu);
    while (p->done_seq < target)
        if (pthread_cond_timedwait(&p->ack_cond, &p->ack_mu, &ts) != 0 && p->done_seq < target) {
            rc = BS_EUNAVAIL;
            break;
        }
    pthread_mutex_unlock(&p->ack_mu);
    return rc;
}

void bs_predlog_free(bs_predlog_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_mutex_unlock(&p->mu);
    pthread_cond_signal(&p->cond);
    if (p->started)
        pthread_join(p->thread, NULL);
    /* Wait (bounded) for the log to acknowledge what the last drains appended. */
    struct timespec ts;
    abs_deadline(&ts, FREE_DRAIN_MS);
    pthread_mutex_lock(&p->ack_mu);
    while (p->rounds && pthread_cond_timedwait(&p->ack_cond, &p->ack_mu, &ts) == 0)
        ;
    int left = p->rounds != NULL;
    pthread_mutex_unlock(&p->ack_mu);
    if (left)
        BS_LOG(BS_LOG_WARN, "predlog",
               "the log has not acknowledged every prediction log record within %d ms; "
               "closing anyway",
               FREE_DRAIN_MS);
    /* The payload logger: what has not been posted yet is dropped (counted); requests in
     * flight end through the client (they hold a reference). */
    pthread_mutex_lock(&p->pay_mu);
    p->pay_stopping = 1;
    pay_item_t *lists[2] = {p->pay_head, p->pay_retry};
    p->pay_head = p->pay_tail = p->pay_retry = NULL;
    pthread_mutex_unlock(&p->pay_mu);
    for (int i = 0; i < 2; i++)
        for (pay_item_t *it = lists[i], *n; it; it = n) {
            n = it->next;
            pthread_mutex_lock(&p->pay_mu);
            pay_forget(p, it);
            pthread_mutex_unlock(&p->pay_mu);
            pay_count(p, it, 2);
            free(it);
        }
    predlog_unref(p);
}

/* ---- metrics ----------------------------------------------------------------------------- */

typedef void (*series_line_fn)(bs_buf_t *b, const series_t *s);

static void line_records(bs_buf_t *b, const series_t *s)
{
    bs_buf_printf(b, "basalt_prediction_log_records_total{tenant=\"%s\",endpoint=\"%s\"} %llu\n",
                  s->tenant, s->endpoint, (unsigned long long)s->records);
}

static void line_dropped(bs_buf_t *b, const series_t *s)
{
    for (int r = 0; r < N_DROP; r++)
        bs_buf_printf(b,
                      "basalt_prediction_log_dropped_total{tenant=\"%s\",endpoint=\"%s\",reason="
                      "\"%s\"} %llu\n",
                      s->tenant, s->endpoint, drop_reason[r], (unsigned long long)s->dropped[r]);
}

static void line_pay(bs_buf_t *b, const series_t *s, const char *what, uint64_t v)
{
    bs_buf_printf(b, "basalt_payload_logger_%s_total{tenant=\"%s\",endpoint=\"%s\"} %llu\n", what,
                  s->tenant, s->endpoint, (unsigned long long)v);
}
static void line_sent(bs_buf_t *b, const series_t *s)
{
    line_pay(b, s, "sent", s->pay_sent);
}
static void line_failed(bs_buf_t *b, const series_t *s)
{
    line_pay(b, s, "failed", s->pay_failed);
}
static void line_pdropped(bs_buf_t *b, const series_t *s)
{
    line_pay(b, s, "dropped", s->pay_dropped);
}

static int other_used(const series_t *s)
{
    if (s->records || s->pay_sent || s->pay_failed || s->pay_dropped)
        return 1;
    for (int r = 0; r < N_DROP; r++)
        if (s->dropped[r])
            return 1;
    return 0;
}

void bs_predlog_metrics(bs_predlog_t *p, bs_buf_t *b)
{
    if (!p)
        return;
    static const struct {
        const char *name, *help;
        series_line_fn fn;
        int payload;
    } families[] = {
        {"basalt_prediction_log_records_total", "Prediction log records acknowledged by the log.",
         line_records, 0},
        {"basalt_prediction_log_dropped_total",
         "Prediction log records dropped (buffer_full: the buffer was full; log_overload: the "
         "log's queue was full; no_topic: the tenant has no predictions topic; log_error: the log "
         "failed them).",
         line_dropped, 0},
        {"basalt_payload_logger_sent_total", "Payload logger CloudEvents delivered (2xx).",
         line_sent, 1},
        {"basalt_payload_logger_failed_total",
         "Payload logger CloudEvents given up after every attempt.", line_failed, 1},
        {"basalt_payload_logger_dropped_total",
         "Payload logger CloudEvents dropped because its queue was full.", line_pdropped, 1},
    };
    pthread_mutex_lock(&p->ack_mu);
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++) {
        bs_buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", families[f].name, families[f].help,
                      families[f].name);
        for (int i = 0; i < SERIES_BUCKETS; i++)
            for (const series_t *s = p->buckets[i]; s; s = s->next)
                if (!families[f].payload || s->pay_sent || s->pay_failed || s->pay_dropped)
                    families[f].fn(b, s);
        if (other_used(&p->other))
            families[f].fn(b, &p->other);
    }
    pthread_mutex_unlock(&p->ack_mu);
    pthread_mutex_lock(&p->mu);
    size_t bytes = p->bytes, cap = p->cap;
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_lock(&p->pay_mu);
    int queued = p->pay_items, in_flight = p->pay_in_flight;
    pthread_mutex_unlock(&p->pay_mu);
    bs_buf_printf(b,
                  "# HELP basalt_prediction_log_buffer_bytes Prediction log bytes held in memory, "
                  "waiting for the log.\n"
                  "# TYPE basalt_prediction_log_buffer_bytes gauge\n"
                  "basalt_prediction_log_buffer_bytes %zu\n"
                  "# HELP basalt_prediction_log_buffer_limit_bytes The buffer's bound "
                  "(prediction_log_buffer_bytes).\n"
                  "# TYPE basalt_prediction_log_buffer_limit_bytes gauge\n"
                  "basalt_prediction_log_buffer_limit_bytes %zu\n"
                  "# HELP basalt_payload_logger_queued Payload logger CloudEvents queued, waiting "
                  "to retry or in flight.\n"
                  "# TYPE basalt_payload_logger_queued gauge\n"
                  "basalt_payload_logger_queued %d\n"
                  "# HELP basalt_payload_logger_in_flight Payload logger requests in the outbound "
                  "client.\n"
                  "# TYPE basalt_payload_logger_in_flight gauge\n"
                  "basalt_payload_logger_in_flight %d\n",
                  bytes, cap, queued, in_flight);
}
