/*
 * The trigger runtime; see triggers.h. Specs are compiled by triggers_spec.c.
 *
 * Design. Each running trigger (trig_t) owns a consumer group "trigger-<name>" on its
 * topic and cycles through three steps, never two at once:
 *
 *   fetching ──(the log's fetch callback: records, or the wait ran out)──► queued
 *   queued ──(a worker takes it)──► running: filter, act, ack/nack, then fetch again
 *
 * A fetch is bs_log_fetch_async with a wait of FETCH_WAIT_MS: the log wakes it as soon as
 * a record is appended, which is what keeps the event → output latency at a few
 * milliseconds. The callback (on a log thread) copies the deliveries into the trigger
 * and puts it on the run queue; one of the workers (opts.workers threads, not the I/O
 * threads) takes it. A trigger's errors stay its own: a failed record is counted, its
 * delivery nacked with a backoff and, past max_deliver, dead-lettered by the log, while
 * the other triggers' batches keep going through the other workers.
 *
 * Lifetime. t->mu guards the trigger list, the run queue and every trig_t's scheduling
 * fields; a trig_t is reference-counted under t->mu: one reference for the list while
 * the trigger is configured, one while it is in flight (fetching, queued or running),
 * and short ones for readers (status). A removed or restarted trigger is unlinked and
 * marked retired; whatever is in flight ends at its next step (a fetched batch is nacked
 * so it comes back at once to whoever consumes the group next) and the last reference
 * frees it. bs_triggers_free waits until nothing is in flight.
 *
 * Predictions read the serving snapshot (QSBR): a worker registers as a reader for the
 * batch it runs and unregisters after, so an idle worker never holds up reclamation.
 * Stats are per trigger under its own small lock (metrics read them from an I/O thread).
 */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/id.h"
#include "base/json.h"
#include "base/log.h"
#include "base/rcu.h"
#include "base/time.h"
#include "events/jobs.h"
#include "events/topics.h"
#include "events/triggers_int.h"
#include "events/webhooks.h"
#include "registry/registry.h"
#include "serving/serving.h"
#include "store/resources.h"

#define FETCH_MAX 256
#define FETCH_WAIT_MS 500
#define RETRY_MS 1000      /* after a failed fetch or consumer ensure */
#define LOG_EVERY_MS 10000 /* a trigger's errors reach the server log at most this often */
#define RING 60            /* seconds of throughput history */
#define MAX_BACKOFF_MS 60000
#define REGISTRY_RETENTION_MS (7LL * 24 * 3600 * 1000)
#define REGISTRY_DEDUP_MS (2LL * 60 * 1000)

static const double lat_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                     0.25,  0.5,    1,     2.5,  5,     10};
#define N_LAT (int)(sizeof lat_buckets / sizeof lat_buckets[0])

typedef struct {
    int64_t offset, time_ms;
    int delivery;
    char *id;
    char *delivery_id;
    char *data;
    size_t len;
} item_t;

typedef struct trig {
    struct trig *next;  /* t->all */
    struct trig *qnext; /* t's run queue */
    int refs;           /* under t->mu, as every scheduling field below */
    int queued, in_flight, retired;
    int need_ensure; /* the consumer group must be ensured before the next fetch */
    int64_t ready_at_ms;
    char tenant[64], name[64], group[72];
    bs__trig_spec_t *spec;   /* NULL when the stored spec does not compile */
    char compile_error[256]; /* why not */
    item_t *items;           /* the fetched batch, handed from the callback to a worker */
    int n_items;
    int fetch_code;
    char fetch_error[256];

    pthread_mutex_t stat_mu; /* everything below */
    uint64_t processed, matched, outputs, errors;
    char last_error[320];
    int64_t last_error_ms, last_logged_ms;
    char state_error[256]; /* a failure that stops the trigger (its group cannot be made) */
    uint64_t ring[RING];
    int64_t ring_sec[RING];
    int64_t started_ms;
    int64_t lag, pending, ack_pending;
    int64_t lag_read_ms; /* when the workers last read the group's stats */
    uint64_t redelivered, dead_lettered;
    uint64_t lat_hist[N_LAT + 1];
    double lat_sum;
} trig_t;

struct bs_triggers {
    bs_triggers_opts_t o;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* workers: the run queue moved, or stopping */
    pthread_cond_t idle_cv; /* n_in_flight reached 0 */
    pthread_mutex_t rebuild_mu;
    trig_t *all;
    trig_t *qhead, *qtail;
    int n_in_flight;
    int stopping; /* bs_triggers_stop began: nothing starts any more */
    int stopped;  /* and ended: the workers are joined */
    pthread_t *threads;
    int n_threads;
};

/* snprintf for messages that may be cut short (they are bounded on purpose). */
static void fmt(char *out, size_t n, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmt(char *out, size_t n, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    vsnprintf(out, n, f, ap);
    va_end(ap);
}

/* ---- trig_t lifetime (t->mu held unless said) ------------------------------------------- */

static void items_free(item_t *it, int n)
{
    for (int i = 0; i < n; i++) {
        free(it[i].id);
        free(it[i].delivery_id);
        free(it[i].data);
    }
    free(it);
}

static void trig_free(trig_t *r)
{
    items_free(r->items, r->n_items);
    bs__trig_spec_unref(r->spec);
    pthread_mutex_destroy(&r->stat_mu);
    free(r);
}

/* Drops a reference; returns r when it was the last (the caller frees it, unlocked). */
static trig_t *trig_unref_locked(trig_t *r)
{
    return --r->refs == 0 ? r : NULL;
}

static void trig_unref(bs_triggers_t *t, trig_t *r)
{
    pthread_mutex_lock(&t->mu);
    trig_t *dead = trig_unref_locked(r);
    pthread_mutex_unlock(&t->mu);
    if (dead)
        trig_free(dead);
}

static void enqueue_locked(bs_triggers_t *t, trig_t *r, int64_t delay_ms)
{
    r->ready_at_ms = delay_ms > 0 ? bs_time_wall_ms() + delay_ms : 0;
    if (!r->queued) {
        r->queued = 1;
        r->qnext = NULL;
        if (t->qtail)
            t->qtail->qnext = r;
        else
            t->qhead = r;
        t->qtail = r;
    }
    pthread_cond_signal(&t->cv);
}

/* Puts r in flight (it will fetch) unless it is already. */
static void start_locked(bs_triggers_t *t, trig_t *r)
{
    if (r->in_flight || r->retired || t->stopping)
        return;
    r->in_flight = 1;
    r->refs++;
    t->n_in_flight++;
    enqueue_locked(t, r, 0);
}

/* The worker decided r stops (retired, paused, stopping). */
static void end_flight(bs_triggers_t *t, trig_t *r)
{
    pthread_mutex_lock(&t->mu);
    r->in_flight = 0;
    if (--t->n_in_flight == 0)
        pthread_cond_broadcast(&t->idle_cv);
    pthread_cond_broadcast(&t->cv);
    trig_t *dead = trig_unref_locked(r);
    pthread_mutex_unlock(&t->mu);
    if (dead)
        trig_free(dead);
}

static void retire_locked(bs_triggers_t *t, trig_t *r, trig_t **dead)
{
    for (trig_t **pp = &t->all; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    r->retired = 1;
    *dead = trig_unref_locked(r);
}

static trig_t *find_locked(bs_triggers_t *t, const char *tenant, const char *name)
{
    for (trig_t *r = t->all; r; r = r->next)
        if (strcmp(r->tenant, tenant) == 0 && strcmp(r->name, name) == 0)
            return r;
    return NULL;
}

/* ---- stats ------------------------------------------------------------------------------ */

static void note_error(trig_t *r, int64_t offset, const char *msg)
{
    int64_t now = bs_time_wall_ms();
    int log_it = 0;
    pthread_mutex_lock(&r->stat_mu);
    r->errors++;
    if (offset >= 0)
        snprintf(r->last_error, sizeof r->last_error, "offset %lld: %s", (long long)offset, msg);
    else
        snprintf(r->last_error, sizeof r->last_error, "%s", msg);
    r->last_error_ms = now;
    if (now - r->last_logged_ms >= LOG_EVERY_MS) {
        r->last_logged_ms = now;
        log_it = 1;
    }
    pthread_mutex_unlock(&r->stat_mu);
    if (log_it)
        BS_LOG(BS_LOG_WARN, "triggers",
               "trigger %s/%s: %s (further errors of this trigger within "
               "10 s are counted, not logged)",
               r->tenant, r->name, r->last_error);
}

static void note_processed(trig_t *r, uint64_t processed, uint64_t matched)
{
    int64_t sec = bs_time_wall_ms() / 1000;
    pthread_mutex_lock(&r->stat_mu);
    r->processed += processed;
    r->matched += matched;
    int i = (int)(sec % RING);
    if (r->ring_sec[i] != sec) {
        r->ring_sec[i] = sec;
        r->ring[i] = 0;
    }
    r->ring[i] += processed;
    pthread_mutex_unlock(&r->stat_mu);
}

/* Events/s over the last minute (or since the trigger started, when more recent). */
static double throughput_locked(const trig_t *r, int64_t now_ms)
{
    int64_t sec = now_ms / 1000;
    uint64_t sum = 0;
    for (int i = 0; i < RING; i++)
        if (r->ring_sec[i] > sec - RING && r->ring_sec[i] <= sec)
            sum += r->ring[i];
    double span = (double)(now_ms - r->started_ms) / 1000.0;
    if (span > RING)
        span = RING;
    if (span < 1)
        span = 1;
    return (double)sum / span;
}

static void note_latency(trig_t *r, double secs)
{
    int b = 0;
    while (b < N_LAT && secs > lat_buckets[b])
        b++;
    pthread_mutex_lock(&r->stat_mu);
    r->lat_hist[b]++;
    r->lat_sum += secs;
    pthread_mutex_unlock(&r->stat_mu);
}

static void refresh_lag(bs_triggers_t *t, trig_t *r, const char *topic)
{
    bs_log_consumer_stats_t cs;
    bs_err_t err;
    if (bs_log_consumer_stats(t->o.log, r->tenant, topic, r->group, &cs, &err) != 0)
        return;
    pthread_mutex_lock(&r->stat_mu);
    r->pending = cs.pending;
    r->ack_pending = cs.ack_pending;
    r->lag = cs.pending + cs.ack_pending;
    r->redelivered = cs.redelivered;
    r->dead_lettered = cs.dead_lettered;
    pthread_mutex_unlock(&r->stat_mu);
}

/* ---- the consumer group ----------------------------------------------------------------- */

/* Creates the tenant's registry topic unless it exists (a Topic resource of that name
 * keeps its own config). */
static int ensure_registry_topic(bs_triggers_t *t, const char *tenant, bs_err_t *err)
{
    bs_log_topic_stats_t st;
    bs_err_t e;
    if (bs_log_topic_stats(t->o.log, tenant, BS_TRIGGERS_REGISTRY_TOPIC, &st, &e) == 0)
        return 0;
    bs_log_topic_config_t c = {.retention_ms = REGISTRY_RETENTION_MS,
                               .dedup_window_ms = REGISTRY_DEDUP_MS};
    return bs_log_topic_ensure(t->o.log, tenant, BS_TRIGGERS_REGISTRY_TOPIC, &c, err);
}

static int ensure_group(bs_triggers_t *t, trig_t *r, const bs__trig_spec_t *s, bs_err_t *err)
{
    if (s->registry && ensure_registry_topic(t, r->tenant, err) != 0)
        return err->code;
    /* No dead letter topic of its own: the topic's default one (its spec's dead_letter). */
    bs_log_consumer_config_t c = s->consumer;
    bs_topic_t tp;
    if (!s->dead_letter[0] && t->o.topics && bs_topics_get(t->o.topics, r->tenant, s->topic, &tp) &&
        tp.dead_letter[0])
        c.dead_letter = tp.dead_letter;
    int rc = bs_log_consumer_ensure(t->o.log, r->tenant, s->topic, r->group, &c, err);
    pthread_mutex_lock(&r->stat_mu);
    if (rc)
        fmt(r->state_error, sizeof r->state_error, "consumer group %s on topic %s: %s", r->group,
            s->topic, err->msg);
    else
        r->state_error[0] = 0;
    pthread_mutex_unlock(&r->stat_mu);
    return rc;
}

/* ---- acting on one event ---------------------------------------------------------------- */

enum { OUT_NONE = 0, OUT_ACK, OUT_FAIL };

typedef struct {
    int outcome;
    int retryable;
    int done_action; /* the action ran (latency recorded at the ack) */
    char *out_text;  /* predict: the output record */
    char *pred_text; /* predict: the prediction's JSON */
    char prediction_id[37];
    char model[129];
    int version;
} item_state_t;

static void fail(trig_t *r, const item_t *it, item_state_t *st, const bs_err_t *err)
{
    st->outcome = OUT_FAIL;
    st->retryable = err->code != BS_EINVAL && err->code != BS_EPARSE && err->code != BS_EDEPTH;
    note_error(r, it->offset, err->msg);
}

/* The row a predict maps by default: the event object, or a CloudEvent's data. */
static const cJSON *event_payload(const cJSON *ev)
{
    const cJSON *sv = cJSON_GetObjectItemCaseSensitive(ev, "specversion");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(ev, "data");
    if (cJSON_IsString(sv) && cJSON_IsObject(data))
        return data;
    return ev;
}

/* The output record: {"event", "prediction", "model", "version", "prediction_id",
 * "trigger", "source": {"topic", "offset"}} as JSON text (malloc'd). */
static char *render_output(const trig_t *r, const bs__trig_spec_t *s, const item_t *it,
                           const item_state_t *st)
{
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "event");
    bs_jw_raw(&b, it->data, it->len);
    bs_jw_key(&b, "prediction");
    bs_jw_raw(&b, st->pred_text, strlen(st->pred_text));
    bs_jw_key(&b, "model");
    bs_jw_str(&b, st->model);
    bs_jw_key(&b, "version");
    bs_jw_int(&b, st->version);
    bs_jw_key(&b, "prediction_id");
    bs_jw_str(&b, st->prediction_id);
    bs_jw_key(&b, "trigger");
    bs_jw_str(&b, r->name);
    bs_jw_key(&b, "source");
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "topic");
    bs_jw_str(&b, s->topic);
    bs_jw_key(&b, "offset");
    bs_jw_int(&b, it->offset);
    bs_jw_obj_end(&b);
    bs_jw_obj_end(&b);
    if (b.oom) {
        bs_buf_free(&b);
        return NULL;
    }
    return bs_buf_take(&b);
}

/* The CloudEvent (structured JSON) a webhook receives: type, id, source; data raw JSON. */
static char *render_cloudevent(const char *id, const char *source, const char *type,
                               const char *subject, int64_t time_ms, const char *data,
                               size_t data_len)
{
    char ts[40];
    bs_time_rfc3339(time_ms, ts, sizeof ts);
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "specversion");
    bs_jw_str(&b, "1.0");
    bs_jw_key(&b, "id");
    bs_jw_str(&b, id);
    bs_jw_key(&b, "source");
    bs_jw_str(&b, source);
    bs_jw_key(&b, "type");
    bs_jw_str(&b, type);
    if (subject) {
        bs_jw_key(&b, "subject");
        bs_jw_str(&b, subject);
    }
    bs_jw_key(&b, "time");
    bs_jw_str(&b, ts);
    bs_jw_key(&b, "datacontenttype");
    bs_jw_str(&b, "application/json");
    bs_jw_key(&b, "data");
    bs_jw_raw(&b, data, data_len);
    bs_jw_obj_end(&b);
    if (b.oom) {
        bs_buf_free(&b);
        return NULL;
    }
    return bs_buf_take(&b);
}

/* The predicted value as the predict API renders it, and the score `when` sees: the
 * value of a single-output regression, the positive class's probability of a binary
 * classifier (its second label), the top probability of a multi-class one. */
static double score_of(const bs_ml_schema_t *sc, const double *out, int *has)
{
    *has = 1;
    if (sc->task == BS_ML_CLASSIFICATION) {
        if (sc->n_outputs == 2)
            return out[1];
        double best = out[0];
        for (int j = 1; j < sc->n_outputs; j++)
            if (out[j] > best)
                best = out[j];
        return best;
    }
    if (sc->n_outputs == 1)
        return out[0];
    *has = 0;
    return 0;
}

/* Evaluates the `when` of a prediction (pred_text as rendered, out its values) into *holds.
 * Its context: prediction, score, label, probabilities, event, model and version. 0 or the
 * evaluation's error (field "when"). */
static int when_holds(const bs_expr_t *when, const bs_ml_schema_t *sc, const double *out,
                      const char *pred_text, const cJSON *ev, const item_state_t *st, int *holds,
                      bs_err_t *err)
{
    int has;
    double score = score_of(sc, out, &has);
    cJSON *ctx = cJSON_CreateObject(), *pred = cJSON_Parse(pred_text);
    if (!ctx || !pred) {
        cJSON_Delete(ctx);
        cJSON_Delete(pred);
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    /* A classifier's prediction is an object: `prediction.score` reads the score there
     * too (a regression's prediction is its number). */
    if (cJSON_IsObject(pred) && has)
        cJSON_AddNumberToObject(pred, "score", score);
    cJSON_AddItemToObject(ctx, "prediction", pred); /* ctx owns it */
    if (has)
        cJSON_AddNumberToObject(ctx, "score", score);
    cJSON *label = cJSON_GetObjectItemCaseSensitive(pred, "label");
    cJSON *probs = cJSON_GetObjectItemCaseSensitive(pred, "probabilities");
    if (label)
        cJSON_AddItemReferenceToObject(ctx, "label", label);
    if (probs)
        cJSON_AddItemReferenceToObject(ctx, "probabilities", probs);
    cJSON_AddItemReferenceToObject(ctx, "event", (cJSON *)ev);
    cJSON_AddStringToObject(ctx, "model", st->model);
    cJSON_AddNumberToObject(ctx, "version", st->version);
    bs_expr_value_t v;
    bs_err_t e;
    bs_err_clear(&e);
    bs_arena_t a;
    bs_arena_init(&a, 1024);
    int rc = bs_expr_eval_json(when, ctx, &a, &v, &e);
    bs_arena_deinit(&a);
    cJSON_Delete(ctx);
    if (rc)
        return bs_err_setf(err, rc, "when", "when: %s", e.msg);
    *holds = bs_expr_truthy(&v);
    return 0;
}

typedef struct {
    bs_model_handle_t *h; /* borrowed for the batch (the worker is a QSBR reader) */
    int resolved;
    bs_err_t err; /* why h is NULL */
} model_ctx_t;

/* Predict for one event: 0 with st->pred_text set (or not: `when` said no), or an error. */
static int predict_one(bs_triggers_t *t, trig_t *r, const bs__trig_spec_t *s, model_ctx_t *mc,
                       const cJSON *ev, item_state_t *st, bs_err_t *err)
{
    if (!t->o.serving)
        return bs_err_set(err, BS_EUNAVAIL, "serving is not available in this process");
    if (!mc->resolved) {
        mc->resolved = 1;
        char ref[200];
        if (s->alias[0])
            snprintf(ref, sizeof ref, "%s@%s", s->model, s->alias);
        else
            snprintf(ref, sizeof ref, "%s", s->model);
        bs_err_clear(&mc->err);
        /* unloaded NULL: a version that is not loaded yet loads here, on this worker. */
        mc->h = bs_serving_peek(t->o.serving, r->tenant, ref, s->version, NULL, &mc->err);
    }
    if (!mc->h) {
        *err = mc->err;
        if (!err->code)
            bs_err_set(err, BS_ENOTFOUND, "model '%.128s' cannot be resolved", s->model);
        return err->code;
    }
    bs_model_handle_t *h = mc->h;
    uint64_t t0 = bs_time_mono_ns();
    const bs_ml_schema_t *sc = bs_model_handle_schema(h);
    /* The row, parsed as a predict call's {"inputs": {...}} is: the features the inputs
     * compute, or the event's own fields the model has features for (an event carries
     * more than a model takes: ids, types). */
    double *row = calloc((size_t)sc->n_features + 1, sizeof *row);
    double *out = calloc((size_t)sc->n_outputs + 1, sizeof *out);
    int rc = row && out ? 0 : bs_err_set(err, BS_ENOMEM, "out of memory");
    if (!rc && s->inputs) {
        cJSON *in = cJSON_CreateObject();
        if (!in)
            rc = bs_err_set(err, BS_ENOMEM, "out of memory");
        for (int i = 0; i < s->n_inputs && !rc; i++) {
            bs_err_t e;
            bs_err_clear(&e);
            cJSON *v = bs__trig_param_eval(&s->inputs[i], ev, &e);
            if (!v)
                rc = bs_err_setf(err, e.code ? e.code : BS_EINVAL, "inputs", "inputs.%.64s: %s",
                                 s->inputs[i].name, e.msg);
            else
                cJSON_AddItemToObject(in, s->inputs[i].name, v);
        }
        if (!rc)
            rc = bs_serving_parse_row(t->o.serving, h, in, 0, row, err);
        cJSON_Delete(in);
    } else if (!rc) {
        const cJSON *src = event_payload(ev);
        rc = cJSON_IsObject(src)
                 ? bs_serving_parse_row(t->o.serving, h, src, 1, row, err)
                 : bs_err_set(err, BS_EINVAL,
                              "the event is not a JSON object; give action.predict.inputs to map it");
    }
    if (!rc)
        rc = bs_serving_predict(h, row, 1, out, err);
    free(row);
    if (rc) {
        bs_serving_record(h, 0, 0, rc);
        free(out);
        return rc;
    }
    /* The predict API's own rendering of the value, so the output equals a direct predict
     * call to the last digit (the text is kept as rendered, never re-printed). */
    bs_buf_t b;
    bs_buf_init(&b);
    bs_serving_render_value(h, out, &b);
    bs_serving_record(h, 1, bs_time_mono_ns() - t0, 0);
    char *pred_text = bs_buf_take(&b);
    if (!pred_text) {
        free(out);
        return bs_err_set(err, BS_ENOMEM, "out of memory rendering the prediction");
    }
    bs_uuid7(st->prediction_id);
    snprintf(st->model, sizeof st->model, "%s", bs_model_handle_name(h));
    st->version = bs_model_handle_version(h);
    if (s->when) {
        int holds = 0;
        rc = when_holds(s->when, sc, out, pred_text, ev, st, &holds, err);
        if (rc || !holds) {
            free(pred_text);
            free(out);
            return rc; /* 0: the condition does not hold, no output */
        }
    }
    free(out);
    st->pred_text = pred_text;
    return 0;
}

/* The webhook action: the event as a CloudEvent (itself when it is one). */
static int webhook_event(bs_triggers_t *t, trig_t *r, const bs__trig_spec_t *s, const item_t *it,
                         const cJSON *ev, bs_err_t *err)
{
    if (!t->o.webhooks)
        return bs_err_set(err, BS_EUNAVAIL, "webhooks are not available in this process");
    const cJSON *sv = cJSON_GetObjectItemCaseSensitive(ev, "specversion");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(ev, "id");
    char *payload = NULL;
    const char *event_id = it->id;
    if (cJSON_IsString(sv) && cJSON_IsString(id)) {
        event_id = id->valuestring;
    } else {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(ev, "type");
        char source[96];
        snprintf(source, sizeof source, "/v1/topics/%s", s->topic);
        payload = render_cloudevent(it->id, source,
                                    cJSON_IsString(type) ? type->valuestring : "basalt.event", NULL,
                                    it->time_ms, it->data, it->len);
        if (!payload)
            return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    char created_by[80], delivery[37];
    snprintf(created_by, sizeof created_by, "trigger:%s", r->name);
    int rc = bs_webhooks_deliver(t->o.webhooks, r->tenant, s->webhook, event_id,
                                 payload ? payload : it->data, created_by, delivery, err);
    free(payload);
    return rc;
}

/* The job action: args evaluated over the event. */
static int job_event(bs_triggers_t *t, trig_t *r, const bs__trig_spec_t *s, const item_t *it,
                     const cJSON *ev, bs_err_t *err)
{
    if (!t->o.jobs)
        return bs_err_set(err, BS_EUNAVAIL, "jobs are not available in this process");
    cJSON *args = cJSON_CreateObject();
    if (!args)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    for (int i = 0; i < s->n_args; i++) {
        bs_err_t e;
        bs_err_clear(&e);
        cJSON *v = bs__trig_param_eval(&s->args[i], ev, &e);
        if (!v) {
            cJSON_Delete(args);
            return bs_err_setf(err, e.code ? e.code : BS_EINVAL, "args", "args.%.64s: %s",
                               s->args[i].name, e.msg);
        }
        cJSON_AddItemToObject(args, s->args[i].name, v);
    }
    char *txt = cJSON_PrintUnformatted(args);
    cJSON_Delete(args);
    if (!txt)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    char unique[160], created_by[80], id[37];
    snprintf(unique, sizeof unique, "trigger:%s:%s:%lld", r->name, s->topic, (long long)it->offset);
    snprintf(created_by, sizeof created_by, "trigger:%s", r->name);
    bs_job_new_t nj = {.kind = s->job_kind,
                       .tenant = r->tenant,
                       .args = txt,
                       .unique_key = unique,
                       .created_by = created_by};
    int existed = 0;
    int rc = bs_jobs_enqueue(t->o.jobs, &nj, id, &existed, err);
    free(txt);
    return rc;
}

/* A failed delivery comes back after 1 s, 2 s, 4 s … (at most a minute); one that cannot
 * succeed (the event itself is wrong for this trigger) at once when max_deliver bounds its
 * attempts, so it reaches the dead letter topic quickly. */
static int64_t backoff_ms(const bs__trig_spec_t *s, const item_t *it, int retryable)
{
    if (!retryable && s->consumer.max_deliver > 0)
        return 0;
    int d = it->delivery < 1 ? 1 : it->delivery > 16 ? 16 : it->delivery;
    int64_t ms = 1000LL << (d - 1);
    return ms > MAX_BACKOFF_MS ? MAX_BACKOFF_MS : ms;
}

static void run_batch(bs_triggers_t *t, trig_t *r, const bs__trig_spec_t *s, item_t *items, int n)
{
    item_state_t *st = calloc((size_t)n, sizeof *st);
    if (!st) {
        bs_err_t e;
        bs_err_set(&e, BS_ENOMEM, "out of memory for a batch of %d events", n);
        note_error(r, -1, e.msg);
        for (int i = 0; i < n; i++)
            bs_log_nack(t->o.log, r->tenant, s->topic, r->group, items[i].delivery_id, RETRY_MS,
                        NULL);
        return;
    }
    int predicting = s->action == BS__TRIG_PREDICT;
    model_ctx_t mc = {0};
    if (predicting)
        bs_rcu_register(); /* peek's handle is valid until this thread's next quiescent state */
    uint64_t matched = 0;
    int n_out = 0;
    for (int i = 0; i < n; i++) {
        bs_err_t err;
        bs_err_clear(&err);
        cJSON *ev = bs_json_parse(items[i].data, items[i].len,
                                  t->o.max_json_depth ? t->o.max_json_depth : 64, &err);
        if (!ev) {
            char msg[300];
            snprintf(msg, sizeof msg, "the event is not JSON: %s", err.msg);
            bs_err_set(&err, BS_EINVAL, "%s", msg);
            fail(r, &items[i], &st[i], &err);
            continue;
        }
        if (s->filter) {
            bs_arena_t a;
            bs_arena_init(&a, 1024);
            bs_expr_value_t v;
            bs_err_t e;
            bs_err_clear(&e);
            int rc = bs_expr_eval_json(s->filter, ev, &a, &v, &e);
            bs_arena_deinit(&a);
            if (rc) {
                bs_err_setf(&err, rc, "filter", "filter: %s", e.msg);
                fail(r, &items[i], &st[i], &err);
                cJSON_Delete(ev);
                continue;
            }
            if (!bs_expr_truthy(&v)) { /* null is false */
                st[i].outcome = OUT_ACK;
                cJSON_Delete(ev);
                continue;
            }
        }
        matched++;
        int rc = 0;
        switch (s->action) {
        case BS__TRIG_PREDICT:
            rc = predict_one(t, r, s, &mc, ev, &st[i], &err);
            if (!rc && st[i].pred_text) {
                st[i].out_text = render_output(r, s, &items[i], &st[i]);
                if (!st[i].out_text)
                    rc = bs_err_set(&err, BS_ENOMEM, "out of memory");
                else
                    n_out++;
            }
            break;
        case BS__TRIG_WEBHOOK:
            rc = webhook_event(t, r, s, &items[i], ev, &err);
            st[i].done_action = !rc;
            break;
        case BS__TRIG_JOB:
            rc = job_event(t, r, s, &items[i], ev, &err);
            st[i].done_action = !rc;
            break;
        }
        cJSON_Delete(ev);
        if (rc)
            fail(r, &items[i], &st[i], &err);
        else if (!st[i].out_text)
            st[i].outcome = OUT_ACK; /* done, or `when` did not hold */
    }
    if (predicting)
        bs_rcu_unregister();
    note_processed(r, (uint64_t)n, matched);

    /* The outputs of the batch in one append (one fsync for all of them). */
    if (n_out && s->output_topic[0]) {
        bs_log_record_in_t *recs = calloc((size_t)n_out, sizeof *recs);
        bs_log_append_result_t *res = calloc((size_t)n_out, sizeof *res);
        char(*keys)[96] = calloc((size_t)n_out, sizeof *keys);
        int *idx = calloc((size_t)n_out, sizeof *idx);
        bs_err_t err;
        bs_err_clear(&err);
        if (!recs || !res || !keys || !idx) {
            bs_err_set(&err, BS_ENOMEM, "out of memory");
            for (int i = 0; i < n; i++)
                if (st[i].out_text && !st[i].outcome)
                    fail(r, &items[i], &st[i], &err);
        } else {
            int k = 0;
            for (int i = 0; i < n; i++) {
                if (!st[i].out_text || st[i].outcome)
                    continue;
                snprintf(keys[k], sizeof keys[k], "%s:%lld", r->name, (long long)items[i].offset);
                recs[k] = (bs_log_record_in_t){.id = st[i].prediction_id,
                                               .dedup_key = keys[k],
                                               .data = st[i].out_text,
                                               .len = strlen(st[i].out_text)};
                idx[k++] = i;
            }
            int rc = bs_log_append(t->o.log, r->tenant, s->output_topic, recs, k, res, &err);
            if (rc) {
                char msg[300];
                fmt(msg, sizeof msg, "output topic %s: %s", s->output_topic, err.msg);
                bs_err_set(&err, rc == BS_ENOTFOUND ? BS_ENOTFOUND : rc, "%s", msg);
                for (int j = 0; j < k; j++)
                    fail(r, &items[idx[j]], &st[idx[j]], &err);
            } else {
                for (int j = 0; j < k; j++) {
                    item_state_t *x = &st[idx[j]];
                    if (res[j].code) {
                        bs_err_t e;
                        bs_err_set(&e, res[j].code, "output topic %s refused the record (%s)",
                                   s->output_topic, bs_err_name(res[j].code));
                        fail(r, &items[idx[j]], x, &e);
                        continue;
                    }
                    x->done_action = 1;
                    if (res[j].duplicate && strcmp(res[j].id, x->prediction_id) != 0) {
                        /* A redelivery: the first delivery's record stands; the webhook
                         * below names it (its data re-rendered with that id). */
                        snprintf(x->prediction_id, sizeof x->prediction_id, "%s", res[j].id);
                        if (s->webhook[0]) {
                            free(x->out_text);
                            x->out_text = render_output(r, s, &items[idx[j]], x);
                            if (!x->out_text) {
                                bs_err_t e;
                                bs_err_set(&e, BS_ENOMEM, "out of memory");
                                fail(r, &items[idx[j]], x, &e);
                            }
                        }
                    } else {
                        pthread_mutex_lock(&r->stat_mu);
                        r->outputs++;
                        pthread_mutex_unlock(&r->stat_mu);
                    }
                }
            }
        }
        free(recs);
        free(res);
        free(keys);
        free(idx);
    }
    /* Predictions also (or only) to a webhook, after the output record is durable. */
    for (int i = 0; i < n; i++) {
        item_state_t *x = &st[i];
        if (!x->out_text || x->outcome)
            continue;
        if (!s->webhook[0]) {
            x->outcome = OUT_ACK;
            continue;
        }
        bs_err_t err;
        bs_err_clear(&err);
        int rc;
        if (!s->output_topic[0]) {
            pthread_mutex_lock(&r->stat_mu);
            r->outputs++;
            pthread_mutex_unlock(&r->stat_mu);
        }
        if (!t->o.webhooks) {
            rc = bs_err_set(&err, BS_EUNAVAIL, "webhooks are not available in this process");
        } else {
            /* The output record is the CloudEvent's data. */
            char source[96], created_by[80], delivery[37];
            snprintf(source, sizeof source, "/v1/triggers/%s", r->name);
            snprintf(created_by, sizeof created_by, "trigger:%s", r->name);
            char *payload =
                render_cloudevent(x->prediction_id, source, "basalt.prediction", x->model,
                                  bs_time_wall_ms(), x->out_text, strlen(x->out_text));
            rc = payload
                     ? bs_webhooks_deliver(t->o.webhooks, r->tenant, s->webhook, x->prediction_id,
                                           payload, created_by, delivery, &err)
                     : bs_err_set(&err, BS_ENOMEM, "out of memory");
            free(payload);
        }
        if (rc) {
            char msg[300];
            fmt(msg, sizeof msg, "webhook %s: %s", s->webhook, err.msg);
            bs_err_set(&err, rc, "%s", msg);
            fail(r, &items[i], x, &err);
        } else {
            x->done_action = 1;
            x->outcome = OUT_ACK;
        }
    }
    /* Acknowledge what is done; the rest comes back after its backoff. */
    int64_t now = bs_time_wall_ms();
    for (int i = 0; i < n; i++) {
        bs_err_t err;
        if (st[i].outcome == OUT_ACK) {
            if (st[i].done_action)
                note_latency(r, (double)(now - items[i].time_ms) / 1000.0);
            if (bs_log_ack(t->o.log, r->tenant, s->topic, r->group, items[i].delivery_id, &err))
                note_error(r, items[i].offset, err.msg);
        } else {
            if (st[i].outcome != OUT_FAIL) { /* cannot happen: every path decides */
                st[i].retryable = 1;
                st[i].outcome = OUT_FAIL;
            }
            bs_log_nack(t->o.log, r->tenant, s->topic, r->group, items[i].delivery_id,
                        backoff_ms(s, &items[i], st[i].retryable), &err);
        }
        free(st[i].out_text);
        free(st[i].pred_text);
    }
    free(st);
}

/* ---- the fetch loop --------------------------------------------------------------------- */

typedef struct {
    bs_triggers_t *t;
    trig_t *r;
} fetch_ctx_t;

static void fetch_cb(void *ud, int code, const bs_log_delivery_t *d, int n, const bs_err_t *err)
{
    fetch_ctx_t *fc = ud;
    bs_triggers_t *t = fc->t;
    trig_t *r = fc->r;
    free(fc);
    item_t *items = NULL;
    int got = 0;
    if (code >= 0 && n > 0) {
        items = calloc((size_t)n, sizeof *items);
        for (int i = 0; items && i < n; i++) {
            item_t *it = &items[got];
            it->offset = d[i].rec.offset;
            it->time_ms = d[i].rec.time_ms;
            it->delivery = d[i].delivery;
            it->id = strdup(d[i].rec.id ? d[i].rec.id : "");
            it->delivery_id = strdup(d[i].delivery_id);
            it->data = malloc(d[i].rec.len + 1);
            if (!it->id || !it->delivery_id || !it->data) {
                free(it->id);
                free(it->delivery_id);
                free(it->data);
                memset(it, 0, sizeof *it);
                continue; /* not acked: redelivered after ack_wait */
            }
            memcpy(it->data, d[i].rec.data, d[i].rec.len);
            it->data[d[i].rec.len] = 0;
            it->len = d[i].rec.len;
            got++;
        }
    }
    pthread_mutex_lock(&t->mu);
    r->items = items;
    r->n_items = got;
    r->fetch_code = code < 0 ? code : 0;
    snprintf(r->fetch_error, sizeof r->fetch_error, "%s", code < 0 && err ? err->msg : "");
    enqueue_locked(t, r, 0);
    pthread_mutex_unlock(&t->mu);
}

/* One step of r on a worker: act on the batch in hand, then fetch again. */
static void step(bs_triggers_t *t, trig_t *r)
{
    pthread_mutex_lock(&t->mu);
    item_t *items = r->items;
    int n = r->n_items;
    r->items = NULL;
    r->n_items = 0;
    int fcode = r->fetch_code;
    char ferr[256];
    snprintf(ferr, sizeof ferr, "%s", r->fetch_error);
    r->fetch_code = 0;
    bs__trig_spec_t *s = bs__trig_spec_ref(r->spec);
    int stop = r->retired || t->stopping || !s || s->paused;
    int need_ensure = r->need_ensure;
    pthread_mutex_unlock(&t->mu);

    if (stop) {
        /* Back to the group at once, for whoever consumes it next. */
        for (int i = 0; i < n; i++)
            bs_log_nack(t->o.log, r->tenant, s ? s->topic : "", r->group, items[i].delivery_id, 0,
                        NULL);
        items_free(items, n);
        bs__trig_spec_unref(s);
        end_flight(t, r);
        return;
    }
    bs_err_t err;
    bs_err_clear(&err);
    if (fcode < 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "fetch: %s", ferr);
        note_error(r, -1, msg);
        if (fcode == BS_ENOTFOUND)
            need_ensure = 1;
    }
    if (need_ensure) {
        int rc = ensure_group(t, r, s, &err);
        pthread_mutex_lock(&t->mu);
        r->need_ensure = rc != 0;
        if (rc)
            enqueue_locked(t, r, RETRY_MS);
        pthread_mutex_unlock(&t->mu);
        if (rc) {
            items_free(items, n);
            bs__trig_spec_unref(s);
            return;
        }
    }
    if (n)
        run_batch(t, r, s, items, n);
    items_free(items, n);
    /* The group's stats for /metrics, at most 4 times a second (on JetStream a round trip). */
    int64_t now = bs_time_wall_ms();
    pthread_mutex_lock(&r->stat_mu);
    int read_lag = now - r->lag_read_ms >= 250;
    if (read_lag)
        r->lag_read_ms = now;
    pthread_mutex_unlock(&r->stat_mu);
    if (read_lag)
        refresh_lag(t, r, s->topic);
    fetch_ctx_t *fc = malloc(sizeof *fc);
    int rc;
    if (!fc) {
        rc = bs_err_set(&err, BS_ENOMEM, "out of memory");
    } else {
        fc->t = t;
        fc->r = r;
        /* After this returns 0 the callback owns r's next step (it may already have run on
         * this thread and handed r to another worker): r is not touched again here. */
        rc = bs_log_fetch_async(t->o.log, r->tenant, s->topic, r->group, FETCH_MAX, FETCH_WAIT_MS,
                                fetch_cb, fc, &err);
        if (rc)
            free(fc);
    }
    if (rc) {
        char msg[300];
        snprintf(msg, sizeof msg, "fetch: %s", err.msg);
        note_error(r, -1, msg);
        pthread_mutex_lock(&t->mu);
        if (rc == BS_ENOTFOUND)
            r->need_ensure = 1;
        enqueue_locked(t, r, RETRY_MS);
        pthread_mutex_unlock(&t->mu);
    }
    bs__trig_spec_unref(s);
}

static void *worker_main(void *arg)
{
    bs_triggers_t *t = arg;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        int64_t now = bs_time_wall_ms(), next = now + 1000;
        trig_t *r = NULL, *prev = NULL;
        for (trig_t *q = t->qhead, *p = NULL; q; p = q, q = q->qnext) {
            if (q->ready_at_ms <= now || t->stopping) {
                r = q;
                prev = p;
                break;
            }
            if (q->ready_at_ms < next)
                next = q->ready_at_ms;
        }
        if (r) {
            if (prev)
                prev->qnext = r->qnext;
            else
                t->qhead = r->qnext;
            if (t->qtail == r)
                t->qtail = prev;
            r->queued = 0;
            r->qnext = NULL;
            pthread_mutex_unlock(&t->mu);
            step(t, r);
            pthread_mutex_lock(&t->mu);
            continue;
        }
        if (t->stopping && t->n_in_flight == 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t wait = next - now;
        if (wait < 1)
            wait = 1;
        ts.tv_sec += wait / 1000;
        ts.tv_nsec += (long)(wait % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&t->cv, &t->mu, &ts);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* ---- public ----------------------------------------------------------------------------- */

bs_triggers_t *bs_triggers_new(const bs_triggers_opts_t *o, bs_err_t *err)
{
    if (!o->log) {
        bs_err_set(err, BS_EINVAL, "triggers need the log");
        return NULL;
    }
    bs_triggers_t *t = calloc(1, sizeof *t);
    if (!t) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    t->o = *o;
    int n = o->workers > 0 ? o->workers : 2;
    if (n > 64)
        n = 64;
    pthread_mutex_init(&t->mu, NULL);
    pthread_mutex_init(&t->rebuild_mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    pthread_cond_init(&t->idle_cv, NULL);
    t->threads = calloc((size_t)n, sizeof *t->threads);
    if (!t->threads) {
        free(t);
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (pthread_create(&t->threads[i], NULL, worker_main, t) != 0) {
            bs_err_set(err, BS_ENOMEM, "cannot start trigger worker %d of %d", i + 1, n);
            bs_triggers_free(t);
            return NULL;
        }
        t->n_threads++;
    }
    return t;
}

void bs_triggers_stop(bs_triggers_t *t)
{
    if (!t)
        return;
    /* After a rebuild in progress; the rebuilds that come later see stopping and do nothing. */
    pthread_mutex_lock(&t->rebuild_mu);
    pthread_mutex_lock(&t->mu);
    if (t->stopped) {
        pthread_mutex_unlock(&t->mu);
        pthread_mutex_unlock(&t->rebuild_mu);
        return;
    }
    t->stopping = 1;
    trig_t *dead_list = NULL;
    while (t->all) {
        trig_t *r = t->all, *dead = NULL;
        retire_locked(t, r, &dead);
        if (dead) {
            dead->next = dead_list;
            dead_list = dead;
        }
    }
    pthread_cond_broadcast(&t->cv);
    /* Outstanding fetches end within their wait; their batches are nacked by the workers. */
    while (t->n_in_flight > 0)
        pthread_cond_wait(&t->idle_cv, &t->mu);
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    for (int i = 0; i < t->n_threads; i++)
        pthread_join(t->threads[i], NULL);
    t->n_threads = 0;
    while (dead_list) {
        trig_t *n = dead_list->next;
        trig_free(dead_list);
        dead_list = n;
    }
    pthread_mutex_lock(&t->mu);
    t->stopped = 1;
    pthread_mutex_unlock(&t->mu);
    pthread_mutex_unlock(&t->rebuild_mu);
}

void bs_triggers_free(bs_triggers_t *t)
{
    if (!t)
        return;
    bs_triggers_stop(t);
    free(t->threads);
    pthread_mutex_destroy(&t->mu);
    pthread_mutex_destroy(&t->rebuild_mu);
    pthread_cond_destroy(&t->cv);
    pthread_cond_destroy(&t->idle_cv);
    free(t);
}

/* ---- validation with references ----------------------------------------------------------- */

static int found_cb(const bs_resource_t *r, void *ud)
{
    (void)r;
    *(int *)ud = 1;
    return 1;
}

static int topic_exists(bs_triggers_t *t, const char *tenant, const char *topic, const char *field,
                        bs_err_t *err)
{
    bs_log_topic_stats_t st;
    bs_err_t e;
    int rc = bs_log_topic_stats(t->o.log, tenant, topic, &st, &e);
    if (rc == BS_ENOTFOUND)
        return bs_err_setf(err, BS_EINVAL, field,
                           "%s: no topic '%.64s' (create it first: PUT "
                           "/v1/topics/%.64s)",
                           field, topic, topic);
    if (rc) {
        *err = e;
        return rc;
    }
    return 0;
}

static int check_model(bs_triggers_t *t, const char *tenant, const bs__trig_spec_t *s,
                       bs_err_t *err)
{
    if (!t->o.registry)
        return 0;
    bs_buf_t b;
    bs_buf_init(&b);
    bs_err_t e;
    int rc = bs_registry_model_get(t->o.registry, tenant, s->model, &b, &e);
    if (rc == BS_ENOTFOUND) {
        bs_buf_free(&b);
        return bs_err_setf(err, BS_EINVAL, "action.predict.model",
                           "action.predict.model: no "
                           "model '%.128s'",
                           s->model);
    }
    if (rc) {
        bs_buf_free(&b);
        *err = e;
        return rc;
    }
    if (s->alias[0]) {
        cJSON *m = cJSON_ParseWithLength(b.data, b.len);
        const cJSON *aliases = cJSON_GetObjectItemCaseSensitive(m, "aliases");
        int has = cJSON_GetObjectItemCaseSensitive(aliases, s->alias) != NULL;
        cJSON_Delete(m);
        if (!has) {
            bs_buf_free(&b);
            return bs_err_setf(err, BS_EINVAL, "action.predict.alias",
                               "action.predict.alias: model '%.128s' has no alias '%.64s'",
                               s->model, s->alias);
        }
    }
    bs_buf_free(&b);
    if (s->version > 0) {
        bs_buf_init(&b);
        rc = bs_registry_version_get(t->o.registry, tenant, s->model, s->version, &b, &e);
        bs_buf_free(&b);
        if (rc == BS_ENOTFOUND)
            return bs_err_setf(err, BS_EINVAL, "action.predict.version",
                               "action.predict.version: model '%.128s' has no version %d", s->model,
                               s->version);
        if (rc) {
            *err = e;
            return rc;
        }
    }
    return 0;
}

static int check_destination(bs_triggers_t *t, const char *tenant, const char *dest,
                             const char *field, bs_err_t *err)
{
    if (!t->o.meta)
        return 0;
    int found = 0;
    bs_err_t e;
    int rc = bs_resources_get(t->o.meta, tenant, "Webhook", dest, found_cb, &found, &e);
    if (rc == BS_ENOTFOUND || (!rc && !found))
        return bs_err_setf(err, BS_EINVAL, field,
                           "%s: no webhook destination '%.64s' (create it "
                           "first: PUT /v1/webhooks/%.64s)",
                           field, dest, dest);
    if (rc) {
        *err = e;
        return rc;
    }
    return 0;
}

int bs_triggers_validate(bs_triggers_t *t, const char *tenant, const char *name, const cJSON *spec,
                         cJSON **out, bs_err_t *err)
{
    *out = NULL;
    if (bs__trig_check_name(name, err))
        return err->code;
    cJSON *norm = NULL;
    bs__trig_spec_t *s = bs__trig_spec_compile(spec, &norm, err);
    if (!s)
        return err->code;
    int rc = 0;
    if (t) {
        /* A registry trigger's topic is made when the trigger is applied (the API makes it
         * a Topic; ensure_group makes it in the log otherwise). */
        if (!s->registry)
            rc = topic_exists(t, tenant, s->topic, "topic", err);
        if (!rc && s->dead_letter[0])
            rc = topic_exists(t, tenant, s->dead_letter, "consumer.dead_letter", err);
        if (!rc && s->action == BS__TRIG_PREDICT) {
            rc = check_model(t, tenant, s, err);
            if (!rc && s->output_topic[0]) {
                rc = topic_exists(t, tenant, s->output_topic, "action.predict.output_topic", err);
                if (!rc && strcmp(s->output_topic, s->topic) == 0)
                    rc = bs_err_setf(err, BS_EINVAL, "action.predict.output_topic",
                                     "action.predict.output_topic must differ from the topic the "
                                     "trigger consumes (it would score its own outputs)");
            }
            if (!rc && s->webhook[0])
                rc = check_destination(t, tenant, s->webhook, "action.predict.webhook", err);
        }
        if (!rc && s->action == BS__TRIG_WEBHOOK)
            rc = check_destination(t, tenant, s->webhook, "action.webhook.destination", err);
        if (!rc && s->action == BS__TRIG_JOB && t->o.jobs) {
            /* The kinds a developer may start through POST /v1/jobs, and only those: the
             * internal ones (webhook.deliver) take arguments no event should write. */
            bs_job_kind_t k;
            if (bs_jobs_kind(t->o.jobs, s->job_kind, &k) != 0)
                rc = bs_err_setf(err, BS_EINVAL, "action.job.kind",
                                 "action.job.kind: no job kind '%.64s' (GET /v1/job-kinds lists "
                                 "them)",
                                 s->job_kind);
            else if (!k.api_enqueue)
                rc = bs_err_setf(err, BS_EINVAL, "action.job.kind",
                                 "action.job.kind: jobs of kind '%.64s' are started by basalt "
                                 "itself, not by triggers (GET /v1/job-kinds: api_enqueue)",
                                 s->job_kind);
        }
    }
    bs__trig_spec_unref(s);
    if (rc) {
        cJSON_Delete(norm);
        return rc;
    }
    *out = norm;
    return 0;
}

/* ---- rebuild ------------------------------------------------------------------------------ */

typedef struct {
    char tenant[64], name[64];
    char *text;
} stored_t;

typedef struct {
    stored_t *v;
    int n, cap;
    int oom;
} stored_list_t;

static int list_cb(const bs_resource_t *res, void *ud)
{
    stored_list_t *l = ud;
    if (l->n == l->cap) {
        int c = l->cap ? l->cap * 2 : 16;
        stored_t *v = realloc(l->v, (size_t)c * sizeof *v);
        if (!v) {
            l->oom = 1;
            return 1;
        }
        l->v = v;
        l->cap = c;
    }
    stored_t *s = &l->v[l->n];
    snprintf(s->tenant, sizeof s->tenant, "%s", res->tenant);
    snprintf(s->name, sizeof s->name, "%s", res->name);
    s->text = strdup(res->spec);
    if (!s->text) {
        l->oom = 1;
        return 1;
    }
    l->n++;
    return 0;
}

static trig_t *trig_new(const char *tenant, const char *name)
{
    trig_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    pthread_mutex_init(&r->stat_mu, NULL);
    r->refs = 1; /* the list's */
    r->need_ensure = 1;
    snprintf(r->tenant, sizeof r->tenant, "%s", tenant);
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->group, sizeof r->group, "trigger-%s", name);
    r->started_ms = bs_time_wall_ms();
    return r;
}

static bs__trig_spec_t *compile_stored(const char *text, char *why, size_t why_len)
{
    bs_err_t err;
    bs_err_clear(&err);
    cJSON *j = cJSON_Parse(text);
    bs__trig_spec_t *s = j ? bs__trig_spec_compile(j, NULL, &err) : NULL;
    if (!j)
        bs_err_set(&err, BS_EINVAL, "the stored spec is not JSON");
    cJSON_Delete(j);
    if (!s)
        fmt(why, why_len, "the stored spec does not compile: %s%s%s", err.field,
            err.field[0] ? ": " : "", err.msg);
    return s;
}

int bs_triggers_rebuild(bs_triggers_t *t, bs_err_t *err)
{
    if (!t->o.meta)
        return 0;
    pthread_mutex_lock(&t->rebuild_mu);
    if (t->stopping) {
        pthread_mutex_unlock(&t->rebuild_mu);
        return 0;
    }
    stored_list_t l = {0};
    int rc = bs_resources_list(t->o.meta, NULL, "Trigger", NULL, 0, list_cb, &l, err);
    if (rc >= 0 && l.oom)
        rc = bs_err_set(err, BS_ENOMEM, "out of memory listing triggers");
    if (rc < 0) {
        for (int i = 0; i < l.n; i++)
            free(l.v[i].text);
        free(l.v);
        pthread_mutex_unlock(&t->rebuild_mu);
        return rc;
    }
    /* Compile outside the lock. */
    bs__trig_spec_t **specs = calloc((size_t)l.n + 1, sizeof *specs);
    char(*why)[256] = calloc((size_t)l.n + 1, sizeof *why);
    if (!specs || !why) {
        free(specs);
        free(why);
        for (int i = 0; i < l.n; i++)
            free(l.v[i].text);
        free(l.v);
        pthread_mutex_unlock(&t->rebuild_mu);
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    for (int i = 0; i < l.n; i++)
        specs[i] = compile_stored(l.v[i].text, why[i], sizeof why[i]);

    trig_t *fresh = NULL; /* new runtimes to start (one extra reference each) */
    trig_t *dead = NULL;  /* freed after unlocking */
    struct moved {
        char tenant[64], topic[64], group[72];
    } *moved = calloc((size_t)l.n + 1, sizeof *moved);
    int n_moved = 0;
    pthread_mutex_lock(&t->mu);
    /* Retire what is gone. */
    for (trig_t *r = t->all, *next; r; r = next) {
        next = r->next;
        int keep = 0;
        for (int i = 0; i < l.n && !keep; i++)
            keep = strcmp(l.v[i].tenant, r->tenant) == 0 && strcmp(l.v[i].name, r->name) == 0;
        if (!keep) {
            trig_t *d = NULL;
            retire_locked(t, r, &d);
            if (d) {
                d->next = dead;
                dead = d;
            }
        }
    }
    for (int i = 0; i < l.n; i++) {
        trig_t *r = find_locked(t, l.v[i].tenant, l.v[i].name);
        bs__trig_spec_t *s = specs[i];
        if (r && r->spec && s && strcmp(r->spec->text, s->text) == 0)
            continue; /* unchanged */
        if (r && r->spec && s && strcmp(r->spec->restart_key, s->restart_key) == 0) {
            /* Same topic and consumer: the next batch runs the new spec. */
            bs__trig_spec_t *old = r->spec;
            r->spec = s;
            specs[i] = NULL;
            bs__trig_spec_unref(old);
            if (!s->paused)
                start_locked(t, r);
            continue;
        }
        if (r) { /* restart: a new topic or consumer config (or it compiles again) */
            if (r->spec && s && strcmp(r->spec->topic, s->topic) != 0 && moved) {
                snprintf(moved[n_moved].tenant, sizeof moved[n_moved].tenant, "%s", r->tenant);
                snprintf(moved[n_moved].topic, sizeof moved[n_moved].topic, "%s", r->spec->topic);
                snprintf(moved[n_moved].group, sizeof moved[n_moved].group, "%s", r->group);
                n_moved++;
            }
            trig_t *d = NULL;
            retire_locked(t, r, &d);
            if (d) {
                d->next = dead;
                dead = d;
            }
        }
        trig_t *nr = trig_new(l.v[i].tenant, l.v[i].name);
        if (!nr) {
            rc = bs_err_set(err, BS_ENOMEM, "out of memory");
            continue;
        }
        nr->spec = s;
        specs[i] = NULL;
        if (!s)
            snprintf(nr->compile_error, sizeof nr->compile_error, "%s", why[i]);
        nr->next = t->all;
        t->all = nr;
        if (s) {
            nr->refs++; /* fresh's */
            nr->qnext = fresh;
            fresh = nr;
        }
    }
    pthread_mutex_unlock(&t->mu);
    while (dead) {
        trig_t *n = dead->next;
        trig_free(dead);
        dead = n;
    }
    for (int i = 0; i < n_moved; i++) {
        bs_err_t e;
        bs_log_consumer_delete(t->o.log, moved[i].tenant, moved[i].topic, moved[i].group, &e);
    }
    free(moved);
    /* Ensure the new ones' groups before answering, then start them. */
    while (fresh) {
        trig_t *r = fresh;
        fresh = r->qnext;
        r->qnext = NULL;
        bs_err_t e;
        bs_err_clear(&e);
        int ok = ensure_group(t, r, r->spec, &e) == 0;
        if (!ok) {
            char msg[300];
            snprintf(msg, sizeof msg, "%s", r->state_error);
            note_error(r, -1, msg);
        }
        pthread_mutex_lock(&t->mu);
        r->need_ensure = !ok;
        if (!r->spec->paused)
            start_locked(t, r);
        if (!ok && r->queued)
            r->ready_at_ms = bs_time_wall_ms() + RETRY_MS;
        trig_t *d = trig_unref_locked(r);
        pthread_mutex_unlock(&t->mu);
        if (d)
            trig_free(d);
    }
    for (int i = 0; i < l.n; i++) {
        bs__trig_spec_unref(specs[i]);
        free(l.v[i].text);
    }
    free(specs);
    free(why);
    free(l.v);
    pthread_mutex_unlock(&t->rebuild_mu);
    return rc < 0 ? rc : 0;
}

int bs_triggers_remove(bs_triggers_t *t, const char *tenant, const char *name, bs_err_t *err)
{
    char topic[64] = "";
    pthread_mutex_lock(&t->mu);
    trig_t *r = find_locked(t, tenant, name), *dead = NULL;
    if (r) {
        if (r->spec)
            snprintf(topic, sizeof topic, "%s", r->spec->topic);
        retire_locked(t, r, &dead);
    }
    pthread_mutex_unlock(&t->mu);
    if (dead)
        trig_free(dead);
    if (!topic[0])
        return 0;
    char group[72];
    snprintf(group, sizeof group, "trigger-%s", name);
    int rc = bs_log_consumer_delete(t->o.log, tenant, topic, group, err);
    return rc == BS_ENOTFOUND ? 0 : rc;
}

/* ---- status and metrics -------------------------------------------------------------------- */

void bs_triggers_status(bs_triggers_t *t, const char *tenant, const char *name, cJSON *status)
{
    pthread_mutex_lock(&t->mu);
    trig_t *r = find_locked(t, tenant, name);
    if (r)
        r->refs++;
    bs__trig_spec_t *s = r ? bs__trig_spec_ref(r->spec) : NULL;
    int need_ensure = r ? r->need_ensure : 0;
    pthread_mutex_unlock(&t->mu);
    if (!r) {
        cJSON_AddStringToObject(status, "state", "stopped");
        return;
    }
    if (s)
        refresh_lag(t, r, s->topic);
    char ts[40];
    pthread_mutex_lock(&r->stat_mu);
    const char *state = !s                  ? "error"
                        : r->state_error[0] ? "error"
                        : s->paused         ? "paused"
                        : need_ensure       ? "starting"
                                            : "running";
    cJSON_AddStringToObject(status, "state", state);
    if (!s)
        cJSON_AddStringToObject(status, "error", r->compile_error);
    else if (r->state_error[0])
        cJSON_AddStringToObject(status, "error", r->state_error);
    cJSON_AddStringToObject(status, "group", r->group);
    if (s)
        cJSON_AddStringToObject(status, "topic", s->topic);
    cJSON_AddNumberToObject(status, "processed", (double)r->processed);
    cJSON_AddNumberToObject(status, "matched", (double)r->matched);
    cJSON_AddNumberToObject(status, "outputs", (double)r->outputs);
    cJSON_AddNumberToObject(status, "errors", (double)r->errors);
    if (r->last_error_ms) {
        cJSON_AddStringToObject(status, "last_error", r->last_error);
        bs_time_rfc3339(r->last_error_ms, ts, sizeof ts);
        cJSON_AddStringToObject(status, "last_error_at", ts);
    } else {
        cJSON_AddNullToObject(status, "last_error");
        cJSON_AddNullToObject(status, "last_error_at");
    }
    cJSON_AddNumberToObject(status, "lag", (double)r->lag);
    cJSON_AddNumberToObject(status, "pending", (double)r->pending);
    cJSON_AddNumberToObject(status, "ack_pending", (double)r->ack_pending);
    cJSON_AddNumberToObject(status, "redelivered", (double)r->redelivered);
    cJSON_AddNumberToObject(status, "dead_lettered", (double)r->dead_lettered);
    cJSON_AddNumberToObject(status, "throughput_per_s",
                            round(throughput_locked(r, bs_time_wall_ms()) * 1000) / 1000);
    bs_time_rfc3339(r->started_ms, ts, sizeof ts);
    cJSON_AddStringToObject(status, "started_at", ts);
    pthread_mutex_unlock(&r->stat_mu);
    bs__trig_spec_unref(s);
    trig_unref(t, r);
}

void bs_triggers_metrics(bs_triggers_t *t, bs_buf_t *b)
{
    static const char *const fam[][3] = {
        {"basalt_trigger_processed_total", "counter", "Events a trigger took from its topic."},
        {"basalt_trigger_matched_total", "counter", "Events that passed the trigger's filter."},
        {"basalt_trigger_outputs_total", "counter",
         "Predictions a trigger wrote (to its output topic or webhook)."},
        {"basalt_trigger_errors_total", "counter",
         "Failed events (each is retried, then dead-lettered) and failed fetches."},
        {"basalt_trigger_lag", "gauge", "Events of the topic not yet done by the trigger."},
        {"basalt_trigger_throughput", "gauge", "Events per second over the last minute."},
        {"basalt_trigger_last_error_timestamp_seconds", "gauge",
         "When the trigger last failed (0: never)."},
    };
    bs_buf_t part[7];
    for (int i = 0; i < 7; i++)
        bs_buf_init(&part[i]);
    bs_buf_t lat;
    bs_buf_init(&lat);
    int64_t now = bs_time_wall_ms();
    pthread_mutex_lock(&t->mu);
    for (trig_t *r = t->all; r; r = r->next) {
        char lbl[160];
        snprintf(lbl, sizeof lbl, "tenant=\"%s\",trigger=\"%s\"", r->tenant, r->name);
        pthread_mutex_lock(&r->stat_mu);
        bs_buf_printf(&part[0], "basalt_trigger_processed_total{%s} %llu\n", lbl,
                      (unsigned long long)r->processed);
        bs_buf_printf(&part[1], "basalt_trigger_matched_total{%s} %llu\n", lbl,
                      (unsigned long long)r->matched);
        bs_buf_printf(&part[2], "basalt_trigger_outputs_total{%s} %llu\n", lbl,
                      (unsigned long long)r->outputs);
        bs_buf_printf(&part[3], "basalt_trigger_errors_total{%s} %llu\n", lbl,
                      (unsigned long long)r->errors);
        bs_buf_printf(&part[4], "basalt_trigger_lag{%s} %lld\n", lbl, (long long)r->lag);
        bs_buf_printf(&part[5], "basalt_trigger_throughput{%s} %.3f\n", lbl,
                      throughput_locked(r, now));
        bs_buf_printf(&part[6], "basalt_trigger_last_error_timestamp_seconds{%s} %.3f\n", lbl,
                      (double)r->last_error_ms / 1000.0);
        uint64_t cum = 0;
        for (int k = 0; k < N_LAT; k++) {
            cum += r->lat_hist[k];
            bs_buf_printf(&lat, "basalt_trigger_latency_seconds_bucket{%s,le=\"%g\"} %llu\n", lbl,
                          lat_buckets[k], (unsigned long long)cum);
        }
        cum += r->lat_hist[N_LAT];
        bs_buf_printf(&lat, "basalt_trigger_latency_seconds_bucket{%s,le=\"+Inf\"} %llu\n", lbl,
                      (unsigned long long)cum);
        bs_buf_printf(&lat, "basalt_trigger_latency_seconds_sum{%s} %.6f\n", lbl, r->lat_sum);
        bs_buf_printf(&lat, "basalt_trigger_latency_seconds_count{%s} %llu\n", lbl,
                      (unsigned long long)cum);
        pthread_mutex_unlock(&r->stat_mu);
    }
    int any = t->all != NULL;
    pthread_mutex_unlock(&t->mu);
    for (int i = 0; i < 7 && any; i++) {
        bs_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", fam[i][0], fam[i][2], fam[i][0],
                      fam[i][1]);
        if (part[i].len)
            bs_buf_append(b, part[i].data, part[i].len);
    }
    /* Families only with series (no trigger: none; a histogram without a series is not
     * one the format allows). */
    if (any) {
        bs_buf_printf(b, "# HELP basalt_trigger_latency_seconds From the source record's append "
                         "to the trigger's action done (output durable, webhook queued, job "
                         "enqueued).\n# TYPE basalt_trigger_latency_seconds histogram\n");
        if (lat.len)
            bs_buf_append(b, lat.data, lat.len);
    }
    for (int i = 0; i < 7; i++)
        bs_buf_free(&part[i]);
    bs_buf_free(&lat);
}

/* ---- registry events ---------------------------------------------------------------------- */

static void registry_appended(void *ud, int code, const bs_log_append_result_t *res, int n,
                              const bs_err_t *err)
{
    (void)res;
    (void)n;
    char *what = ud;
    if (code < 0)
        BS_LOG(BS_LOG_WARN, "triggers", "registry event %s not recorded: %s", what ? what : "",
               err ? err->msg : "");
    free(what);
}

void bs_triggers_registry_event(bs_triggers_t *t, const char *tenant, const char *type,
                                const char *subject, const char *data_json)
{
    if (!t || !data_json)
        return;
    char id[37], source[64];
    bs_uuid7(id);
    snprintf(source, sizeof source, "/v1/models");
    char *ce = render_cloudevent(id, source, type, subject, bs_time_wall_ms(), data_json,
                                 strlen(data_json));
    if (!ce)
        return;
    bs_log_record_in_t rec = {.id = id, .dedup_key = id, .data = ce, .len = strlen(ce)};
    char *what = malloc(strlen(type) + strlen(subject ? subject : "") + 4);
    if (what)
        sprintf(what, "%s %s", type, subject ? subject : "");
    bs_err_t err;
    int rc = bs_log_append_async(t->o.log, tenant, BS_TRIGGERS_REGISTRY_TOPIC, &rec, 1,
                                 registry_appended, what, &err);
    if (rc) {
        if (rc != BS_ENOTFOUND) /* no registry trigger in this tenant: nobody listens */
            BS_LOG(BS_LOG_WARN, "triggers", "registry event %s not recorded: %s", type, err.msg);
        free(what);
    }
    free(ce);
}
