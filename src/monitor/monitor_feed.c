/*
 * The monitor's local feed (bs_monitor_observe): the rows this process predicts reach its
 * tables directly, as compact binary entries, instead of through a re-read and re-parse of
 * the JSON records the predict handler wrote to `predictions`.
 *
 * observe serialises the row (a fixed header, the output values, the class labels) into a
 * byte queue under a mutex of its own (never m->mu): one lock and a memcpy, no allocation
 * once the queue's buffer has grown to the traffic. One feed thread swaps the queue for
 * an empty one at most every FEED_PERIOD_MS and applies what it took under m->mu (the hash
 * insert stays on the monitor's side); bs_monitor_feedback's second chance drains the
 * queue synchronously (bs__monitor_feed_drain), so feedback right after a prediction finds
 * it. A full queue (FEED_MAX_BYTES) refuses the row: the caller then writes the record
 * without "origin" and the tail ingests it from the log as before.
 *
 * The records of observed rows carry "origin": "<this process's run id>" as their first
 * member; the tail skips records that begin with that member (a memcmp), so nothing is
 * counted twice, while records of earlier runs (the replay after a restart) and of other
 * replicas (JetStream) are ingested from the log.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/id.h"
#include "base/log.h"
#include "base/time.h"
#include "monitor/monitor_int.h"

#define FEED_PERIOD_MS 5
#define FEED_MAX_BYTES (64u << 20)

typedef struct {
    char tenant[64], endpoint[64], variant[64], id[40];
    int64_t time_ms;
    double latency_ms;
    int32_t version;
    int32_t k;           /* output values that follow */
    uint32_t labels_len; /* bytes of nul-terminated labels after the values (0: none) */
    uint8_t shadow, error, kind;
    uint32_t size; /* of the whole item, a multiple of 8 */
} item_t;

static int grow(feed_buf_t *q, size_t need)
{
    if (q->len + need <= q->cap)
        return 0;
    size_t cap = q->cap ? q->cap * 2 : 65536;
    while (cap < q->len + need)
        cap *= 2;
    char *d = realloc(q->data, cap);
    if (!d)
        return -1;
    q->data = d;
    q->cap = cap;
    return 0;
}

static int copy_name(char *dst, size_t cap, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n >= cap)
        return -1;
    memcpy(dst, s ? s : "", n);
    dst[n] = 0;
    return 0;
}

int bs_monitor_observe(bs_monitor_t *m, const char *tenant, const bs_monitor_obs_t *o)
{
    if (!m || !tenant || !o || !o->prediction_id)
        return BS_EINVAL;
    int k = o->kind == BS_MONITOR_OBS_CLASSES ? o->k : o->kind == BS_MONITOR_OBS_VALUE ? 1 : 0;
    if (k < 0 || k > MAX_CLASSES || (k && !o->out))
        return BS_EINVAL;
    size_t ll = 0;
    if (o->kind == BS_MONITOR_OBS_CLASSES)
        for (int j = 0; j < k; j++)
            ll += strlen(o->labels ? o->labels[j] : "") + 1;
    size_t size = (sizeof(item_t) + (size_t)k * sizeof(double) + ll + 7) & ~(size_t)7;
    item_t h;
    memset(&h, 0, sizeof h);
    if (copy_name(h.tenant, sizeof h.tenant, tenant) ||
        copy_name(h.endpoint, sizeof h.endpoint, o->endpoint) ||
        copy_name(h.variant, sizeof h.variant, o->variant) ||
        copy_name(h.id, sizeof h.id, o->prediction_id))
        return BS_EINVAL;
    h.time_ms = o->time_ms;
    h.latency_ms = o->latency_ms;
    h.version = o->version;
    h.k = k;
    h.labels_len = (uint32_t)ll;
    h.shadow = (uint8_t)!!o->shadow;
    h.error = (uint8_t)!!o->error;
    h.kind = (uint8_t)o->kind;
    h.size = (uint32_t)size;
    pthread_mutex_lock(&m->feed_mu);
    feed_buf_t *q = &m->feed_q;
    if (m->feed_stopping || q->len + size > FEED_MAX_BYTES || grow(q, size) != 0) {
        m->feed_dropped++;
        pthread_mutex_unlock(&m->feed_mu);
        return BS_EOVERLOAD;
    }
    char *p = q->data + q->len;
    memcpy(p, &h, sizeof h);
    p += sizeof h;
    if (k) {
        memcpy(p, o->out, (size_t)k * sizeof(double));
        p += (size_t)k * sizeof(double);
    }
    for (int j = 0; j < k && o->kind == BS_MONITOR_OBS_CLASSES; j++) {
        const char *l = o->labels ? o->labels[j] : "";
        size_t n = strlen(l) + 1;
        memcpy(p, l, n);
        p += n;
    }
    q->len += size;
    m->feed_observed++;
    pthread_mutex_unlock(&m->feed_mu);
    return 0;
}

const char *bs_monitor_origin(const bs_monitor_t *m)
{
    return m ? m->run_id : NULL;
}

/* One item into its table (under m->mu). */
static void apply(bs_monitor_t *m, const item_t *h, int64_t floor)
{
    if (h->time_ms < floor)
        return;
    tenant_t *t = bs__monitor_tenant_add(m, h->tenant);
    if (!t)
        return;
    table_t *tb = h->endpoint[0] ? bs__monitor_table(t, h->endpoint, 1) : NULL;
    if (!tb || !h->id[0]) {
        t->bad_records++;
        return;
    }
    entry_t e;
    memset(&e, 0, sizeof e);
    e.time_ms = h->time_ms;
    e.out = NAN;
    e.label_num = NAN;
    e.label_sid = -1;
    e.pred = -1;
    e.version = h->version > 0 ? h->version : 0;
    int vi = bs__monitor_variant(tb, h->variant);
    if (vi < 0) {
        t->bad_records++;
        return;
    }
    e.variant = (uint16_t)vi;
    e.flags |= E_LOCAL;
    if (h->shadow)
        e.flags |= E_SHADOW;
    e.latency_ms = isfinite(h->latency_ms) ? h->latency_ms : NAN;
    const double *v = (const double *)(h + 1);
    if (h->error && h->kind == BS_MONITOR_OBS_NONE) {
        e.flags |= E_ERROR;
    } else if (h->kind == BS_MONITOR_OBS_VALUE) {
        if (isfinite(v[0])) { /* a non-finite value is rendered null: no value */
            e.out = v[0];
            e.flags |= E_VALUE;
        }
    } else if (h->kind == BS_MONITOR_OBS_CLASSES && h->k > 0) {
        /* As the tail reads {label, probabilities}: the label is the first best class. */
        int k = h->k;
        char *names[MAX_CLASSES];
        const char *s = (const char *)(v + k);
        for (int j = 0; j < k; j++) {
            names[j] = (char *)s;
            s += strlen(s) + 1;
        }
        int cs = bs__monitor_cset(tb, names, k);
        double *pk = k > 2 ? malloc((size_t)k * sizeof *pk) : NULL;
        if (cs < 0 || (k > 2 && !pk)) {
            free(pk);
            t->bad_records++;
        } else {
            double *dst = k > 2 ? pk : e.p2;
            int best = 0, ok = 1;
            for (int j = 0; j < k; j++) {
                if (v[j] > v[best])
                    best = j;
                if (!isfinite(v[j]))
                    ok = 0;
                dst[j] = ok ? v[j] : 0;
            }
            int pred = best; /* the rendered label's first match, as the tail resolves it */
            for (int j = 0; j < best; j++)
                if (strcmp(names[j], names[best]) == 0) {
                    pred = j;
                    break;
                }
            e.cset = (uint16_t)cs;
            e.pred = (int16_t)pred;
            e.flags |= E_CLASS;
            if (ok) {
                e.flags |= E_PROBS;
                e.pk = pk;
            } else {
                free(pk);
            }
        }
    }
    if (bs__monitor_id_set(&e, h->id) != 0) {
        bs__monitor_entry_free(&e);
        return;
    }
    bs__monitor_insert(m, t, tb, &e);
}

int bs__monitor_feed_drain(bs_monitor_t *m)
{
    pthread_mutex_lock(&m->feed_drain_mu);
    pthread_mutex_lock(&m->feed_mu);
    feed_buf_t taken = m->feed_q;
    m->feed_q = m->feed_spare; /* the spare's buffer, emptied, takes the next rows */
    m->feed_q.len = 0;
    pthread_mutex_unlock(&m->feed_mu);
    int n = 0;
    if (taken.len) {
        int64_t now = bs_time_wall_ms();
        pthread_mutex_lock(&m->mu);
        for (size_t off = 0; off + sizeof(item_t) <= taken.len;) {
            const item_t *h = (const item_t *)(taken.data + off);
            apply(m, h, now - m->window_ms);
            off += h->size;
            n++;
        }
        bs__monitor_evict(m, now);
        pthread_cond_broadcast(&m->progress);
        pthread_mutex_unlock(&m->mu);
    }
    taken.len = 0;
    m->feed_spare = taken;
    pthread_mutex_unlock(&m->feed_drain_mu);
    return n;
}

static void *feed_main(void *arg)
{
    bs_monitor_t *m = arg;
    for (;;) {
        pthread_mutex_lock(&m->feed_mu);
        int stop = m->feed_stopping;
        pthread_mutex_unlock(&m->feed_mu);
        bs__monitor_feed_drain(m);
        if (stop)
            break;
        struct timespec ts = {0, FEED_PERIOD_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int bs__monitor_feed_start(bs_monitor_t *m)
{
    char id[37];
    bs_uuid7(id);
    snprintf(m->run_id, sizeof m->run_id, "%s", id);
    m->origin_len = (size_t)snprintf(m->origin_prefix, sizeof m->origin_prefix,
                                     "{\"origin\":\"%s\"", m->run_id);
    pthread_mutex_init(&m->feed_mu, NULL);
    pthread_mutex_init(&m->feed_drain_mu, NULL);
    if (pthread_create(&m->feed_thread, NULL, feed_main, m) != 0)
        return -1;
    m->feed_started = 1;
    return 0;
}

void bs__monitor_feed_stop(bs_monitor_t *m)
{
    pthread_mutex_lock(&m->feed_mu);
    m->feed_stopping = 1;
    pthread_mutex_unlock(&m->feed_mu);
    if (m->feed_started)
        pthread_join(m->feed_thread, NULL);
    m->feed_started = 0;
}

void bs__monitor_feed_free(bs_monitor_t *m)
{
    free(m->feed_q.data);
    free(m->feed_spare.data);
    pthread_mutex_destroy(&m->feed_mu);
    pthread_mutex_destroy(&m->feed_drain_mu);
}
