/*
 * The log's dispatch: every public function of log.h calls the open backend
 * (segments or JetStream, log_int.h). The blocking forms of append and fetch
 * are written once here on top of the backends' async ones.
 */
#include <pthread.h>
#include <string.h>

#include "store/log_int.h"

int bs__log_valid_name(const char *s)
{
    if (!s || !((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')))
        return 0;
    size_t n = 0;
    for (const char *p = s; *p; p++, n++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return 0;
    return n <= 63;
}

bs_log_t *bs_log_open(const bs_log_opts_t *o, bs_err_t *err)
{
    if (o->nats_url && o->nats_url[0])
        return bs__log_nats_open(o, err);
    return bs__log_segments_open(o, err);
}

void bs_log_close(bs_log_t *l)
{
    if (l)
        l->ops->close(l);
}

const char *bs_log_backend(const bs_log_t *l) { return l->ops->name; }

int bs_log_topic_ensure(bs_log_t *l, const char *tenant, const char *topic,
                        const bs_log_topic_config_t *c, bs_err_t *err)
{
    return l->ops->topic_ensure(l, tenant, topic, c, err);
}

int bs_log_topic_drop(bs_log_t *l, const char *tenant, const char *topic, bs_err_t *err)
{
    return l->ops->topic_drop(l, tenant, topic, err);
}

int bs_log_topic_stats(bs_log_t *l, const char *tenant, const char *topic, bs_log_topic_stats_t *out,
                       bs_err_t *err)
{
    return l->ops->topic_stats(l, tenant, topic, out, err);
}

int bs_log_append_async(bs_log_t *l, const char *tenant, const char *topic,
                        const bs_log_record_in_t *recs, int n, bs_log_append_cb cb, void *ud,
                        bs_err_t *err)
{
    if (n < 1 || n > BS_LOG_MAX_BATCH)
        return bs_err_set(err, BS_EINVAL, "a batch holds 1 to %d records, got %d", BS_LOG_MAX_BATCH,
                          n);
    return l->ops->append_async(l, tenant, topic, recs, n, cb, ud, err);
}

/* A caller waiting for one async completion. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int code;
    bs_err_t err;
    bs_log_append_result_t *results;
    int n;
    bs_log_delivery_cb deliver;
    void *deliver_ud;
} waiter_t;

static void waiter_init(waiter_t *w)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
}

static void waiter_wait(waiter_t *w)
{
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}

static void waiter_signal(waiter_t *w)
{
    pthread_mutex_lock(&w->mu);
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void append_done(void *ud, int code, const bs_log_append_result_t *results, int n,
                        const bs_err_t *err)
{
    waiter_t *w = ud;
    w->code = code;
    if (code == 0 && results)
        memcpy(w->results, results, (size_t)(n < w->n ? n : w->n) * sizeof *results);
    else if (err)
        w->err = *err;
    waiter_signal(w);
}

int bs_log_append(bs_log_t *l, const char *tenant, const char *topic, const bs_log_record_in_t *recs,
                  int n, bs_log_append_result_t *results, bs_err_t *err)
{
    waiter_t w;
    waiter_init(&w);
    w.results = results;
    w.n = n;
    int rc = bs_log_append_async(l, tenant, topic, recs, n, append_done, &w, err);
    if (rc != 0) {
        pthread_mutex_destroy(&w.mu);
        pthread_cond_destroy(&w.cv);
        return rc;
    }
    waiter_wait(&w);
    if (w.code != 0 && err)
        *err = w.err;
    return w.code;
}

int bs_log_read(bs_log_t *l, const char *tenant, const char *topic, int64_t from_offset, int max,
                size_t max_bytes, bs_log_record_cb cb, void *ud, int64_t *next, bs_err_t *err)
{
    if (from_offset < 0)
        return bs_err_setf(err, BS_EINVAL, "from_offset", "offset must be >= 0, got %lld",
                           (long long)from_offset);
    if (max < 1)
        max = 1;
    return l->ops->read(l, tenant, topic, from_offset, max, max_bytes, cb, ud, next, err);
}

int bs_log_offset_at(bs_log_t *l, const char *tenant, const char *topic, int64_t t, int64_t *offset,
                     bs_err_t *err)
{
    return l->ops->offset_at(l, tenant, topic, t, offset, err);
}

int64_t bs_log_watch(bs_log_t *l, const char *tenant, const char *topic, int64_t after,
                     bs_log_wake_cb cb, void *ud, bs_err_t *err)
{
    return l->ops->watch(l, tenant, topic, after, cb, ud, err);
}

void bs_log_unwatch(bs_log_t *l, int64_t watch_id)
{
    if (watch_id > 0)
        l->ops->unwatch(l, watch_id);
}

int bs_log_consumer_ensure(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                           const bs_log_consumer_config_t *c, bs_err_t *err)
{
    return l->ops->consumer_ensure(l, tenant, topic, group, c, err);
}

int bs_log_consumer_delete(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                           bs_err_t *err)
{
    return l->ops->consumer_delete(l, tenant, topic, group, err);
}

static void fetch_done(void *ud, int code, const bs_log_delivery_t *d, int n, const bs_err_t *err)
{
    waiter_t *w = ud;
    w->code = code;
    if (code == 0) {
        int i = 0;
        for (; i < n; i++)
            if (w->deliver && w->deliver(&d[i], w->deliver_ud))
                break;
        w->n = n;
    } else if (err) {
        w->err = *err;
    }
    waiter_signal(w);
}

int bs_log_fetch(bs_log_t *l, const char *tenant, const char *topic, const char *group, int max,
                 int wait_ms, bs_log_delivery_cb cb, void *ud, bs_err_t *err)
{
    waiter_t w;
    waiter_init(&w);
    w.deliver = cb;
    w.deliver_ud = ud;
    int rc = bs_log_fetch_async(l, tenant, topic, group, max, wait_ms, fetch_done, &w, err);
    if (rc != 0) {
        pthread_mutex_destroy(&w.mu);
        pthread_cond_destroy(&w.cv);
        return rc;
    }
    waiter_wait(&w);
    if (w.code != 0) {
        if (err)
            *err = w.err;
        return w.code;
    }
    return w.n;
}

int bs_log_fetch_async(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                       int max, int wait_ms, bs_log_fetch_cb cb, void *ud, bs_err_t *err)
{
    if (max < 1 || max > BS_LOG_MAX_BATCH)
        return bs_err_setf(err, BS_EINVAL, "max", "max must be 1 to %d, got %d", BS_LOG_MAX_BATCH,
                           max);
    if (wait_ms < 0)
        wait_ms = 0;
    return l->ops->fetch_async(l, tenant, topic, group, max, wait_ms, cb, ud, err);
}

int bs_log_ack(bs_log_t *l, const char *tenant, const char *topic, const char *group,
               const char *delivery_id, bs_err_t *err)
{
    return l->ops->ack(l, tenant, topic, group, delivery_id, err);
}

int bs_log_nack(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                const char *delivery_id, int64_t delay_ms, bs_err_t *err)
{
    return l->ops->nack(l, tenant, topic, group, delivery_id, delay_ms < 0 ? 0 : delay_ms, err);
}

int bs_log_in_progress(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                       const char *delivery_id, bs_err_t *err)
{
    return l->ops->in_progress(l, tenant, topic, group, delivery_id, err);
}

int bs_log_consumer_stats(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                          bs_log_consumer_stats_t *out, bs_err_t *err)
{
    return l->ops->consumer_stats(l, tenant, topic, group, out, err);
}

int bs_log_consumers(bs_log_t *l, const char *tenant, const char *topic,
                     int (*cb)(const char *group, void *ud), void *ud, bs_err_t *err)
{
    return l->ops->consumers(l, tenant, topic, cb, ud, err);
}

void bs_log_metrics(bs_log_t *l, bs_buf_t *b) { l->ops->metrics(l, b); }
