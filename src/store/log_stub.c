/*
 * TEMPORARY (topics branch only, removed before the merge): an in-memory stand-in for the
 * segment backend of store/log, so the topics API can be exercised until the real one
 * lands on main. Compiled only with -DBS_LOG_STUB (BUILD=build-stub CC="cc -DBS_LOG_STUB").
 * Nothing is durable. One thread completes appends and parked fetches. With -DBS_NATS_STUB
 * only bs__log_nats_open (the real segments backend, no JetStream yet).
 */
#ifdef BS_LOG_STUB
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/id.h"
#include "base/time.h"
#include "store/log_int.h"

typedef struct {
    int64_t offset, time_ms;
    char id[129], key[260];
    char *data;
    size_t len;
} rec_t;

typedef struct pend {
    int64_t offset;
    int deliveries;
    int64_t deadline;
    int seq;
    struct pend *next;
} pend_t;

typedef struct group {
    char name[64];
    bs_log_consumer_config_t c;
    char dl[64];
    int64_t pos;
    pend_t *pend;
    int seq;
    uint64_t delivered, redelivered, acked, dead;
    struct group *next;
} group_t;

typedef struct topic {
    char tenant[64], name[64];
    bs_log_topic_config_t c;
    rec_t *r;
    int64_t n, cap;
    uint64_t appended, dups;
    group_t *groups;
    struct topic *next;
} topic_t;

typedef struct fetchw {
    char tenant[64], topic[64], group[64];
    int max;
    int64_t deadline;
    bs_log_fetch_cb cb;
    void *ud;
    struct fetchw *next;
} fetchw_t;

typedef struct {
    bs_log_t base;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    int stop;
    topic_t *topics;
    fetchw_t *waits;
} stub_t;

static topic_t *find_topic(stub_t *s, const char *tenant, const char *name)
{
    for (topic_t *t = s->topics; t; t = t->next)
        if (!strcmp(t->tenant, tenant) && !strcmp(t->name, name))
            return t;
    return NULL;
}

static group_t *find_group(topic_t *t, const char *g)
{
    for (group_t *x = t ? t->groups : NULL; x; x = x->next)
        if (!strcmp(x->name, g))
            return x;
    return NULL;
}

static int64_t append_one(topic_t *t, const char *id, const char *key, const void *data, size_t len,
                          int *dup, char *out_id)
{
    int64_t now = bs_time_wall_ms();
    *dup = 0;
    if (key && *key && t->c.dedup_window_ms > 0)
        for (int64_t i = t->n - 1; i >= 0 && now - t->r[i].time_ms < t->c.dedup_window_ms; i--)
            if (!strcmp(t->r[i].key, key)) {
                *dup = 1;
                strcpy(out_id, t->r[i].id);
                t->dups++;
                return t->r[i].offset;
            }
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->r = realloc(t->r, (size_t)t->cap * sizeof *t->r);
    }
    rec_t *r = &t->r[t->n];
    memset(r, 0, sizeof *r);
    r->offset = t->n;
    r->time_ms = t->n && t->r[t->n - 1].time_ms > now ? t->r[t->n - 1].time_ms : now;
    if (id)
        snprintf(r->id, sizeof r->id, "%s", id);
    else
        bs_uuid7(r->id);
    snprintf(r->key, sizeof r->key, "%s", key ? key : "");
    r->data = malloc(len + 1);
    memcpy(r->data, data, len);
    r->data[len] = 0;
    r->len = len;
    strcpy(out_id, r->id);
    t->appended++;
    return t->n++;
}

static void s_close(bs_log_t *l)
{
    stub_t *s = (stub_t *)l;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->th, NULL);
    while (s->waits) {
        fetchw_t *w = s->waits;
        s->waits = w->next;
        w->cb(w->ud, 0, NULL, 0, NULL);
        free(w);
    }
    while (s->topics) {
        topic_t *t = s->topics;
        s->topics = t->next;
        for (int64_t i = 0; i < t->n; i++)
            free(t->r[i].data);
        free(t->r);
        while (t->groups) {
            group_t *g = t->groups;
            t->groups = g->next;
            while (g->pend) {
                pend_t *p = g->pend;
                g->pend = p->next;
                free(p);
            }
            free(g);
        }
        free(t);
    }
    free(s);
}

static int s_topic_ensure(bs_log_t *l, const char *tenant, const char *topic,
                          const bs_log_topic_config_t *c, bs_err_t *err)
{
    stub_t *s = (stub_t *)l;
    if (!bs__log_valid_name(tenant) || !bs__log_valid_name(topic))
        return bs_err_set(err, BS_EINVAL, "bad name");
    pthread_mutex_lock(&s->mu);
    topic_t *t = find_topic(s, tenant, topic);
    if (!t) {
        t = calloc(1, sizeof *t);
        snprintf(t->tenant, sizeof t->tenant, "%s", tenant);
        snprintf(t->name, sizeof t->name, "%s", topic);
        t->next = s->topics;
        s->topics = t;
    }
    t->c = *c;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int s_topic_drop(bs_log_t *l, const char *tenant, const char *topic, bs_err_t *err)
{
    (void)err;
    stub_t *s = (stub_t *)l;
    pthread_mutex_lock(&s->mu);
    for (topic_t **pp = &s->topics; *pp; pp = &(*pp)->next)
        if (!strcmp((*pp)->tenant, tenant) && !strcmp((*pp)->name, topic)) {
            topic_t *t = *pp;
            *pp = t->next;
            for (int64_t i = 0; i < t->n; i++)
                free(t->r[i].data);
            free(t->r);
            free(t); /* groups leak: stub */
            break;
        }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int s_topic_stats(bs_log_t *l, const char *tenant, const char *topic,
                         bs_log_topic_stats_t *out, bs_err_t *err)
{
    stub_t *s = (stub_t *)l;
    pthread_mutex_lock(&s->mu);
    topic_t *t = find_topic(s, tenant, topic);
    if (!t) {
        pthread_mutex_unlock(&s->mu);
        return bs_err_set(err, BS_ENOTFOUND, "no topic '%s'", topic);
    }
    memset(out, 0, sizeof *out);
    out->first_offset = 0;
    out->next_offset = t->n;
    out->first_time_ms = t->n ? t->r[0].time_ms : 0;
    out->last_time_ms = t->n ? t->r[t->n - 1].time_ms : 0;
    for (int64_t i = 0; i < t->n; i++)
        out->bytes += (int64_t)t->r[i].len + 32;
    out->segments = 1;
    out->appended = t->appended;
    out->duplicates = t->dups;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int s_append_async(bs_log_t *l, const char *tenant, const char *topic,
                          const bs_log_record_in_t *recs, int n, bs_log_append_cb cb, void *ud,
                          bs_err_t *err)
{
    stub_t *s = (stub_t *)l;
    pthread_mutex_lock(&s->mu);
    topic_t *t = find_topic(s, tenant, topic);
    if (!t) {
        pthread_mutex_unlock(&s->mu);
        return bs_err_set(err, BS_ENOTFOUND, "no topic '%s'", topic);
    }
    bs_log_append_result_t *res = calloc((size_t)n, sizeof *res);
    for (int i = 0; i < n; i++) {
        int64_t max = t->c.max_record_bytes ? t->c.max_record_bytes : 1048576;
        if ((int64_t)recs[i].len > max) {
            res[i].code = BS_ETOOBIG;
            continue;
        }
        res[i].offset = append_one(t, recs[i].id, recs[i].dedup_key, recs[i].data, recs[i].len,
                                   &res[i].duplicate, res[i].id);
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    cb(ud, 0, res, n, NULL);
    free(res);
    return 0;
}

static int s_read(bs_log_t *l, const char *tenant, const char *topic, int64_t from, int max,
                  size_t max_bytes, bs_log_record_cb cb, void *ud, int64_t *next, bs_err_t *err)
{
    stub_t *s = (stub_t *)l;
    pthread_mutex_lock(&s->mu);
    topic_t *t = find_topic(s, tenant, topic);
    if (!t) {
        pthread_mutex_unlock(&s->mu);
        return bs_err_set(err, BS_ENOTFOUND, "no topic '%s'", topic);
    }
    int n = 0;
    size_t bytes = 0;
    int64_t i = from;
    for (; i < t->n && n < max && (n == 0 || bytes < max_bytes); i++) {
        rec_t *r = &t->r[i];
        bs_log_record_t x = {r->offset, r->time_ms, r->id, r->key, r->data, r->len};
        n++;
        bytes += r->len;
        if (cb(&x, ud)) {
            i++;
            break;
        }
    }
    if (next)
        *next = i > from ? i : (from > t->n ? from : from);
    pthread_mutex_unlock(&s->mu);
    return n;
}

static int s_offset_at(bs_log_t *l, const char *tenant, const char *topic, int64_t ts,
                       int64_t *offset, bs_err_t *err)
{
    stub_t *s = (stub_t *)l;
    pthread_mutex_lock(&s->mu);
    topic_t *t = find_topic(s, tenant, topic);
    if (!t) {
        pthread_mutex_unlock(&s->mu);
        return bs_err_set(err, BS_ENOTFOUND, "no topic '%s'", topic);
    }
    int64_t i = 0;
    while (i < t->n && t->r[i].time_ms < ts)
        i++;
    *offset = i;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int64_t s_watch(bs_log_t *l, const char *tenant, const char *topic, int64_t after,
                       bs_log_wake_cb cb, void *ud, bs_err_t *err)
{
    (void)l, (void)tenant, (void)topic, (void)after, (void)cb, (void)ud;
    return bs_err_set(err, BS_EINTERNAL, "stub: no watch");
}

static void s_unwatch(bs_log_t *l, int64_t id) { (void)l, (void)id; }

static int s_consumer_ensure(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                             const bs_log_consumer_config_t *c, bs_err_t *err)
{
    stub_t *s = (stub_t *)l;
    if (!bs__log_valid_name(group))
        return bs_err_set(err, BS_EINVAL, "bad group name");
    pthread_mutex_lock(&s->mu);
    topic_t *t = find_topic(s, tenant, topic);
    if (!t) {
        pthread_mutex_unlock(&s->mu);
        return bs_err_set(err, BS_ENOTFOUND, "no topic '%s'", topic);
    }
    group_t *g = find_group(t, group);
    if (!g) {
        g = calloc(1, sizeof *g);
        snprintf(g->name, sizeof g->name, "%s", group);
        g->next = t->groups;
        t->groups = g;
        g->pos = c->deliver_new ? t->n : 0;
    }
    g->c = *c;
    if (!g->c.ack_wait_ms)
        g->c.ack_wait_ms = 30000;
    if (!g->c.max_ack_pending)
        g->c.max_ack_pending = 1000;
    snprintf(g->dl, sizeof g->dl, "%s", c->dead_letter ? c->dead_letter : "");
    g->c.dead_letter = g->dl;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int s_consumer_delete(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                             bs_err_t *err)
{
    (void)err;
    stub_t *s = (stub_t *)l;
    pthread_mutex_lock(&s->mu);
    topic_t *t = find_topic(s, tenant, topic);
    for (group_t **pp = t ? &t->groups : NULL; pp && *pp; pp = &(*pp)->next)
        if (!strcmp((*pp)->name, group)) {
            group_t *g = *pp;
            *pp = g->next;
            free(g);
            break;
        }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int ack_pending(group_t *g)
{
    int n = 0;
    for (pend_t *p = g->pend; p; p = p->next)
        n++;
    return n;
}

/* Under mu: collects up to max deliveries into d (records borrowed from t). */
static int collect(stub_t *s, topic_t *t, group_t *g, int max, bs_log_delivery_t *d, char ids[][128])
{
    int64_t now = bs_time_wall_ms();
    int n = 0;
    for (pend_t **pp = &g->pend; *pp && n < max;) {
        pend_t *p = *pp;
        if (p->deadline > now) {
            pp = &p->next;
            continue;
        }
        if (g->c.max_deliver > 0 && p->deliveries >= g->c.max_deliver) {
            *pp = p->next;
            g->dead++;
            topic_t *dt = g->dl[0] ? find_topic(s, t->tenant, g->dl) : NULL;
            if (dt) {
                rec_t *r = &t->r[p->offset];
                size_t cap = r->len + 512;
                char *txt = malloc(cap);
                int w = snprintf(txt, cap,
                                 "{\"topic\":\"%s\",\"offset\":%lld,\"deliveries\":%d,\"group\":\"%s\","
                                 "\"event\":%.*s}",
                                 t->name, (long long)p->offset, p->deliveries, g->name, (int)r->len,
                                 r->data);
                int dup;
                char id[129];
                append_one(dt, r->id, NULL, txt, (size_t)w, &dup, id);
                free(txt);
            }
            free(p);
            continue;
        }
        p->deliveries++;
        p->seq = ++g->seq;
        p->deadline = now + g->c.ack_wait_ms;
        rec_t *r = &t->r[p->offset];
        snprintf(ids[n], 128, "%s.%lld.%d", g->name, (long long)p->offset, p->seq);
        d[n].rec = (bs_log_record_t){r->offset, r->time_ms, r->id, r->key, r->data, r->len};
        d[n].delivery = p->deliveries;
        d[n].delivery_id = ids[n];
        g->delivered++;
        g->redelivered++;
        n++;
        pp = &p->next;
    }
    while (n < max && g->pos < t->n && ack_pending(g) < g->c.max_ack_pending) {
        pend_t *p = calloc(1, sizeof *p);
        p->offset = g->pos++;
        p->deliveries = 1;
        p->seq = ++g->seq;
        p->deadline = now + g->c.ack_wait_ms;
        pend_t **pp = &g->pend;
        while (*pp)
            pp = &(*pp)->next;
        *pp = p;
        rec_t *r = &t->r[p->offset];
        snprintf(ids[n], 128, "%s.%lld.%d", g->name, (long long)p->offset, p->seq);
        d[n].rec = (bs_log_record_t){r->offset, r->time_ms, r->id, r->key, r->data, r->len};
        d[n].delivery = 1;
        d[n].delivery_id = ids[n];
        g->delivered++;
        n++;
    }
    return n;
}

/* Under mu; unlocks it around the callback. 1 if completed. */
static int try_fetch(stub_t *s, const char *tenant, const char *topic, const char *group, int max,
                     int final, bs_log_fetch_cb cb, void *ud)
{
    topic_t *t = find_topic(s, tenant, topic);
    group_t *g = find_group(t, group);
    if (!g) {
        bs_err_t e;
        bs_err_set(&e, BS_ENOTFOUND, "no group '%s'", group);
        pthread_mutex_unlock(&s->mu);
        cb(ud, BS_ENOTFOUND, NULL, 0, &e);
        pthread_mutex_lock(&s->mu);
        return 1;
    }
    bs_log_delivery_t *d = calloc((size_t)max, sizeof *d);
    char(*ids)[128] = calloc((size_t)max, 128);
    int n = collect(s, t, g, max, d, ids);
    if (n == 0 && !final) {
        free(d);
        free(ids);
        return 0;
    }
    /* copy records: the callback runs unlocked */
    for (int i = 0; i < n; i++) {
        char *x = malloc(d[i].rec.len + 1);
        memcpy(x, d[i].rec.data, d[i].rec.len);
        d[i].rec.data = x;
        d[i].rec.id = strdup(d[i].rec.id);
        d[i].rec.dedup_key = strdup(d[i].rec.dedup_key);
    }
    pthread_mutex_unlock(&s->mu);
    cb(ud, 0, d, n, NULL);
    for (int i = 0; i < n; i++) {
        free((void *)d[i].rec.data);
        free((void *)d[i].rec.id);
        free((void *)d[i].rec.dedup_key);
    }
    free(d);
    free(ids);
    pthread_mutex_lock(&s->mu);
    return 1;
}

static int s_fetch_async(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                         int max, int wait_ms, bs_log_fetch_cb cb, void *ud, bs_err_t *err)
{
    stub_t *s = (stub_t *)l;
    pthread_mutex_lock(&s->mu);
    topic_t *t = find_topic(s, tenant, topic);
    if (!t || !find_group(t, group)) {
        pthread_mutex_unlock(&s->mu);
        return bs_err_set(err, BS_ENOTFOUND, "no %s", t ? "group" : "topic");
    }
    if (try_fetch(s, tenant, topic, group, max, wait_ms == 0, cb, ud)) {
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    fetchw_t *w = calloc(1, sizeof *w);
    snprintf(w->tenant, 64, "%s", tenant);
    snprintf(w->topic, 64, "%s", topic);
    snprintf(w->group, 64, "%s", group);
    w->max = max;
    w->deadline = bs_time_wall_ms() + wait_ms;
    w->cb = cb;
    w->ud = ud;
    w->next = s->waits;
    s->waits = w;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void *loop(void *arg)
{
    stub_t *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        int64_t now = bs_time_wall_ms();
        for (fetchw_t **pp = &s->waits; *pp;) {
            fetchw_t *w = *pp;
            *pp = w->next; /* detached while tried */
            if (try_fetch(s, w->tenant, w->topic, w->group, w->max, now >= w->deadline, w->cb,
                          w->ud)) {
                free(w);
                pp = &s->waits;
                continue;
            }
            w->next = *pp;
            *pp = w;
            pp = &w->next;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static pend_t **find_pend(stub_t *s, const char *tenant, const char *topic, const char *group,
                          const char *id, int *rc, bs_err_t *err)
{
    topic_t *t = find_topic(s, tenant, topic);
    group_t *g = find_group(t, group);
    if (!g) {
        *rc = bs_err_set(err, BS_ENOTFOUND, "no group '%s'", group);
        return NULL;
    }
    char gname[64];
    long long off;
    int seq;
    const char *dot = strchr(id, '.');
    if (!dot || (size_t)(dot - id) >= sizeof gname || sscanf(dot + 1, "%lld.%d", &off, &seq) != 2) {
        *rc = bs_err_setf(err, BS_EINVAL, "delivery_id", "not a delivery id of this group");
        return NULL;
    }
    memcpy(gname, id, (size_t)(dot - id));
    gname[dot - id] = 0;
    if (strcmp(gname, group)) {
        *rc = bs_err_setf(err, BS_EINVAL, "delivery_id", "not a delivery id of this group");
        return NULL;
    }
    for (pend_t **pp = &g->pend; *pp; pp = &(*pp)->next)
        if ((*pp)->offset == off) {
            *rc = 0;
            return pp;
        }
    *rc = 0; /* already acked */
    return NULL;
}

static int s_ack(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                 const char *id, bs_err_t *err)
{
    stub_t *s = (stub_t *)l;
    int rc;
    pthread_mutex_lock(&s->mu);
    pend_t **pp = find_pend(s, tenant, topic, group, id, &rc, err);
    if (pp) {
        pend_t *p = *pp;
        *pp = p->next;
        free(p);
        find_group(find_topic(s, tenant, topic), group)->acked++;
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int s_nack(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                  const char *id, int64_t delay, bs_err_t *err)
{
    stub_t *s = (stub_t *)l;
    int rc;
    pthread_mutex_lock(&s->mu);
    pend_t **pp = find_pend(s, tenant, topic, group, id, &rc, err);
    if (pp)
        (*pp)->deadline = bs_time_wall_ms() + delay;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int s_in_progress(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                         const char *id, bs_err_t *err)
{
    stub_t *s = (stub_t *)l;
    int rc;
    pthread_mutex_lock(&s->mu);
    pend_t **pp = find_pend(s, tenant, topic, group, id, &rc, err);
    if (pp)
        (*pp)->deadline =
            bs_time_wall_ms() + find_group(find_topic(s, tenant, topic), group)->c.ack_wait_ms;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int s_consumer_stats(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                            bs_log_consumer_stats_t *out, bs_err_t *err)
{
    stub_t *s = (stub_t *)l;
    pthread_mutex_lock(&s->mu);
    topic_t *t = find_topic(s, tenant, topic);
    group_t *g = find_group(t, group);
    if (!g) {
        pthread_mutex_unlock(&s->mu);
        return bs_err_set(err, BS_ENOTFOUND, "no consumer group '%s' on topic '%s'", group, topic);
    }
    memset(out, 0, sizeof *out);
    out->next_offset = g->pos;
    out->pending = t->n - g->pos;
    out->ack_pending = ack_pending(g);
    out->max_ack_pending = g->c.max_ack_pending;
    out->stalled = out->ack_pending >= g->c.max_ack_pending;
    out->ack_floor = g->pend ? g->pend->offset : g->pos;
    out->delivered = g->delivered;
    out->redelivered = g->redelivered;
    out->acked = g->acked;
    out->dead_lettered = g->dead;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int s_consumers(bs_log_t *l, const char *tenant, const char *topic,
                       int (*cb)(const char *group, void *ud), void *ud, bs_err_t *err)
{
    stub_t *s = (stub_t *)l;
    pthread_mutex_lock(&s->mu);
    topic_t *t = find_topic(s, tenant, topic);
    if (!t) {
        pthread_mutex_unlock(&s->mu);
        return bs_err_set(err, BS_ENOTFOUND, "no topic '%s'", topic);
    }
    char names[64][64];
    int n = 0;
    for (group_t *g = t->groups; g && n < 64; g = g->next)
        snprintf(names[n++], 64, "%s", g->name);
    pthread_mutex_unlock(&s->mu);
    for (int i = n - 1; i >= 0; i--)
        if (cb(names[i], ud))
            break;
    return 0;
}

static void s_metrics(bs_log_t *l, bs_buf_t *b)
{
    stub_t *s = (stub_t *)l;
    pthread_mutex_lock(&s->mu);
    bs_buf_printf(b, "# TYPE basalt_log_records gauge\n");
    for (topic_t *t = s->topics; t; t = t->next)
        bs_buf_printf(b, "basalt_log_records{tenant=\"%s\",topic=\"%s\"} %lld\n", t->tenant,
                      t->name, (long long)t->n);
    bs_buf_printf(b, "# TYPE basalt_consumer_stalled gauge\n");
    for (topic_t *t = s->topics; t; t = t->next)
        for (group_t *g = t->groups; g; g = g->next)
            bs_buf_printf(b, "basalt_consumer_stalled{tenant=\"%s\",topic=\"%s\",group=\"%s\"} %d\n",
                          t->tenant, t->name, g->name,
                          ack_pending(g) >= g->c.max_ack_pending);
    bs_buf_printf(b, "# TYPE basalt_consumer_ack_pending gauge\n");
    for (topic_t *t = s->topics; t; t = t->next)
        for (group_t *g = t->groups; g; g = g->next)
            bs_buf_printf(b,
                          "basalt_consumer_ack_pending{tenant=\"%s\",topic=\"%s\",group=\"%s\"} %d\n",
                          t->tenant, t->name, g->name, ack_pending(g));
    pthread_mutex_unlock(&s->mu);
}

static const bs__log_ops_t stub_ops = {
    "segments",       s_close,       s_topic_ensure,    s_topic_drop,     s_topic_stats,
    s_append_async,   s_read,        s_offset_at,       s_watch,          s_unwatch,
    s_consumer_ensure, s_consumer_delete, s_fetch_async, s_ack,          s_nack,
    s_in_progress,    s_consumer_stats, s_consumers,    s_metrics,
};

bs_log_t *bs__log_segments_open(const bs_log_opts_t *o, bs_err_t *err)
{
    (void)o, (void)err;
    stub_t *s = calloc(1, sizeof *s);
    s->base.ops = &stub_ops;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_create(&s->th, NULL, loop, s);
    return &s->base;
}

#endif

#if defined(BS_LOG_STUB) || defined(BS_NATS_STUB)
#include "store/log_int.h"
bs_log_t *bs__log_nats_open(const bs_log_opts_t *o, bs_err_t *err)
{
    (void)o;
    bs_err_set(err, BS_EUNAVAIL, "stub: no JetStream");
    return NULL;
}
#endif
