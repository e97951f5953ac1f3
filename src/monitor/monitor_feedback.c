/*
 * POST /v1/feedback (monitor.h): validate each item, find its prediction id in the
 * tenant's tables, give unknown ids a second chance, append the accepted items to the
 * tenant's topic `feedback` in one durable append, and wait for this replica's own tail
 * to have joined them (so a report read right after, through the same replica, counts
 * them).
 *
 * The second chance: an id the table does not know may be a prediction still in this
 * replica's prediction-log buffer, or in the log and not yet read by the tail. The
 * buffer is flushed (bs_predlog_flush, at most FLUSH_WAIT_MS), then the call waits, at most
 * UNKNOWN_WAIT_MS in all, for the tail to reach the topic's next_offset as of now. On JetStream
 * that offset is this replica's view of the stream (kept current by a subscription and a 1 s poll),
 * so the wait there also lasts at least JETSTREAM_MIN_WAIT_MS before an id is refused.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/time.h"
#include "monitor/monitor_int.h"
#include "serving/predlog.h"
#include "store/log.h"

#define UNKNOWN_WAIT_MS 2000
#define JETSTREAM_MIN_WAIT_MS 1200
#define JOIN_WAIT_MS 2000
#define FLUSH_WAIT_MS 1000
#define MAX_ID 128
#define MAX_LABEL_BYTES 1024

typedef struct {
    const cJSON *item;
    const char *id;     /* NULL when the item has none (a string) */
    const cJSON *label; /* "label" or "value" */
    int is_value;
    int64_t time_ms; /* the item's, or 0 */
    int code;        /* 0, or the item's error */
    char field[32];
    char msg[200];
    int known;
    int local; /* known from the local feed: its record may still be in the predlog buffer */
    table_t *table;
    int64_t offset; /* in the feedback topic, once appended */
} item_t;

static void item_error(item_t *it, int code, const char *field, const char *msg)
{
    it->code = code;
    snprintf(it->field, sizeof it->field, "%s", field ? field : "");
    snprintf(it->msg, sizeof it->msg, "%s", msg);
}

static void validate(item_t *it)
{
    const cJSON *o = it->item;
    char msg[200];
    if (!cJSON_IsObject(o))
        return item_error(it, BS_EINVAL, NULL, "a feedback item must be a JSON object");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "prediction_id");
    if (cJSON_IsString(id))
        it->id = id->valuestring;
    for (const cJSON *c = o->child; c; c = c->next) {
        const char *k = c->string ? c->string : "";
        if (strcmp(k, "prediction_id") && strcmp(k, "label") && strcmp(k, "value") &&
            strcmp(k, "time")) {
            snprintf(msg, sizeof msg,
                     "unknown member '%.64s' (a feedback item has prediction_id, label or value, "
                     "time)",
                     k);
            return item_error(it, BS_EINVAL, k, msg);
        }
    }
    if (!it->id)
        return item_error(it, BS_EINVAL, "prediction_id",
                          id ? "prediction_id must be a string"
                             : "prediction_id is required (the id a prediction returned)");
    size_t idlen = strlen(it->id);
    if (idlen == 0 || idlen > MAX_ID) {
        snprintf(msg, sizeof msg, "prediction_id must have 1 to %d characters, got %zu", MAX_ID,
                 idlen);
        return item_error(it, BS_EINVAL, "prediction_id", msg);
    }
    const cJSON *label = cJSON_GetObjectItemCaseSensitive(o, "label");
    const cJSON *value = cJSON_GetObjectItemCaseSensitive(o, "value");
    if (label && value)
        return item_error(it, BS_EINVAL, "value", "give label or value, not both");
    if (!label && !value)
        return item_error(it, BS_EINVAL, "label",
                          "label (the true class or outcome) or value (a number) is required");
    if (value) {
        if (!cJSON_IsNumber(value) || !isfinite(value->valuedouble))
            return item_error(it, BS_EINVAL, "value", "value must be a finite number");
        it->label = value;
        it->is_value = 1;
    } else {
        if (cJSON_IsString(label)) {
            size_t n = strlen(label->valuestring);
            if (n > MAX_LABEL_BYTES) {
                snprintf(msg, sizeof msg, "label has %zu bytes, at most %d are kept", n,
                         MAX_LABEL_BYTES);
                return item_error(it, BS_EINVAL, "label", msg);
            }
        } else if (!(cJSON_IsNumber(label) && isfinite(label->valuedouble)) &&
                   !cJSON_IsBool(label)) {
            return item_error(it, BS_EINVAL, "label",
                              "label must be a string, a finite number or a boolean");
        }
        it->label = label;
    }
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(o, "time");
    if (tm) {
        if (!cJSON_IsString(tm) || bs_time_parse_rfc3339(tm->valuestring, &it->time_ms) != 0)
            return item_error(it, BS_EINVAL, "time",
                              "time must be an RFC 3339 timestamp (2024-05-01T12:00:00Z)");
    }
}

/* Looks the still unknown valid items up (under m->mu). Returns how many stay unknown. */
static int resolve(bs_monitor_t *m, const char *tenant, item_t *items, int n)
{
    tenant_t *t = bs__monitor_tenant(m, tenant);
    int unknown = 0;
    for (int i = 0; i < n; i++) {
        item_t *it = &items[i];
        if (it->code || it->known)
            continue;
        table_t *tb = NULL;
        const entry_t *e = t ? bs__monitor_lookup(t, it->id, &tb) : NULL;
        if (e) {
            it->known = 1;
            it->local = (e->flags & E_LOCAL) != 0;
            it->table = tb;
        } else {
            unknown++;
        }
    }
    return unknown;
}

static void deadline_in(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* The second chance for unknown ids (not under m->mu). */
static void second_chance(bs_monitor_t *m, const char *tenant, item_t *items, int n)
{
    /* Records still in this replica's buffer reach the log first (bounded: part of the
     * same budget). */
    uint64_t start = bs_time_mono_ns();
    /* This process's own rows: in the tables once the local feed is drained. */
    bs__monitor_feed_drain(m);
    pthread_mutex_lock(&m->mu);
    int unknown0 = resolve(m, tenant, items, n);
    pthread_mutex_unlock(&m->mu);
    if (!unknown0)
        return;
    if (m->predlog)
        bs_predlog_flush(m->predlog, FLUSH_WAIT_MS);
    for (;;) {
        bs_log_topic_stats_t s;
        bs_err_t err;
        int64_t target = -1;
        if (bs_log_topic_stats(m->log, tenant, BS_PREDLOG_TOPIC, &s, &err) == 0)
            target = s.next_offset;
        int64_t elapsed = (int64_t)((bs_time_mono_ns() - start) / 1000000u);
        pthread_mutex_lock(&m->mu);
        int unknown = resolve(m, tenant, items, n);
        tenant_t *t = bs__monitor_tenant(m, tenant);
        int caught_up = target < 0 || (t && t->started && t->pred_next >= target);
        if (!unknown || elapsed >= UNKNOWN_WAIT_MS || m->stopping ||
            (caught_up && (!m->jetstream || elapsed >= JETSTREAM_MIN_WAIT_MS))) {
            pthread_mutex_unlock(&m->mu);
            return;
        }
        struct timespec ts;
        deadline_in(&ts, 50);
        pthread_cond_timedwait(&m->progress, &m->mu, &ts);
        pthread_mutex_unlock(&m->mu);
    }
}

static void render(bs_buf_t *b, const item_t *items, int n, int accepted)
{
    bs_jw_obj_begin(b);
    bs_jw_key(b, "items");
    bs_jw_arr_begin(b);
    for (int i = 0; i < n; i++) {
        const item_t *it = &items[i];
        bs_jw_obj_begin(b);
        bs_jw_key(b, "index");
        bs_jw_int(b, i);
        bs_jw_key(b, "prediction_id");
        if (it->id)
            bs_jw_str(b, it->id);
        else
            bs_jw_null(b);
        if (it->code) {
            bs_jw_key(b, "error");
            bs_jw_obj_begin(b);
            bs_jw_key(b, "code");
            bs_jw_str(b, bs_err_name(it->code));
            bs_jw_key(b, "message");
            bs_jw_str(b, it->msg);
            if (it->field[0]) {
                bs_jw_key(b, "field");
                bs_jw_str(b, it->field);
            }
            bs_jw_obj_end(b);
        } else {
            bs_jw_key(b, "accepted");
            bs_jw_bool(b, 1);
            bs_jw_key(b, "endpoint");
            bs_jw_str(b, it->table ? it->table->endpoint : "");
        }
        bs_jw_obj_end(b);
    }
    bs_jw_arr_end(b);
    bs_jw_key(b, "accepted");
    bs_jw_int(b, accepted);
    bs_jw_key(b, "rejected");
    bs_jw_int(b, n - accepted);
    bs_jw_obj_end(b);
}

/* The feedback record of an accepted item (monitor.h has the format). */
static int record_json(const item_t *it, int64_t received, bs_buf_t *b)
{
    bs_jw_obj_begin(b);
    bs_jw_key(b, "prediction_id");
    bs_jw_str(b, it->id);
    bs_jw_key(b, it->is_value ? "value" : "label");
    if (cJSON_IsString(it->label))
        bs_jw_str(b, it->label->valuestring);
    else if (cJSON_IsBool(it->label))
        bs_jw_bool(b, cJSON_IsTrue(it->label));
    else
        bs_jw_double(b, it->label->valuedouble);
    bs_jw_key(b, "time");
    bs_jw_time(b, it->time_ms ? it->time_ms : received);
    bs_jw_key(b, "received");
    bs_jw_time(b, received);
    bs_jw_key(b, "endpoint");
    bs_jw_str(b, it->table ? it->table->endpoint : "");
    bs_jw_obj_end(b);
    return b->oom ? -1 : 0;
}

/* Waits until this replica's feedback tail is past offset (the join is in its table). */
static void wait_joined(bs_monitor_t *m, const char *tenant, int64_t offset)
{
    uint64_t start = bs_time_mono_ns();
    pthread_mutex_lock(&m->mu);
    for (;;) {
        tenant_t *t = bs__monitor_tenant(m, tenant);
        if (!t || m->stopping || t->fb_next > offset ||
            (bs_time_mono_ns() - start) / 1000000u >= JOIN_WAIT_MS)
            break;
        struct timespec ts;
        deadline_in(&ts, 50);
        pthread_cond_timedwait(&m->progress, &m->mu, &ts);
    }
    pthread_mutex_unlock(&m->mu);
}

int bs_monitor_feedback(bs_monitor_t *m, const char *tenant, const cJSON *body, bs_buf_t *out,
                        bs_err_t *err)
{
    if (!cJSON_IsObject(body))
        return bs_err_set(err, BS_EINVAL,
                          "the body must be a feedback item {prediction_id, label | value, time} "
                          "or {\"items\": [...]}");
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(body, "items");
    int n = 1;
    if (arr) {
        if (!cJSON_IsArray(arr))
            return bs_err_setf(err, BS_EINVAL, "items", "items must be an array of feedback items");
        for (const cJSON *c = body->child; c; c = c->next)
            if (strcmp(c->string ? c->string : "", "items") != 0)
                return bs_err_setf(err, BS_EINVAL, c->string ? c->string : "",
                                   "a batch body has only \"items\", got '%.64s'",
                                   c->string ? c->string : "");
        n = cJSON_GetArraySize(arr);
        if (n == 0)
            return bs_err_setf(err, BS_EINVAL, "items", "items must hold at least one item");
        if (n > BS_MONITOR_MAX_FEEDBACK_BATCH)
            return bs_err_setf(err, BS_ETOOBIG, "items",
                               "a batch holds at most %d feedback items, got %d",
                               BS_MONITOR_MAX_FEEDBACK_BATCH, n);
    }
    item_t *items = calloc((size_t)n, sizeof *items);
    if (!items)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    if (arr) {
        int i = 0;
        for (const cJSON *c = arr->child; c; c = c->next)
            items[i++].item = c;
    } else {
        items[0].item = body;
    }
    for (int i = 0; i < n; i++)
        validate(&items[i]);

    /* A tenant whose topics exist is tracked from here on, if nothing tracked it yet. */
    bs_err_t terr;
    bs_monitor_track(m, tenant, &terr);
    pthread_mutex_lock(&m->mu);
    int unknown = resolve(m, tenant, items, n);
    pthread_mutex_unlock(&m->mu);
    if (unknown)
        second_chance(m, tenant, items, n);
    /* Feedback is acknowledged only for predictions whose records are in the log (so that it
     * joins again after a restart): the rows the local feed gave the table may still be in
     * this replica's prediction-log buffer. */
    int local = 0;
    for (int i = 0; i < n && !local; i++)
        local = items[i].known && items[i].local;
    if (local && m->predlog)
        bs_predlog_flush(m->predlog, FLUSH_WAIT_MS);

    int64_t received = bs_time_wall_ms();
    int n_rec = 0, invalid = 0, unknown_ids = 0;
    for (int i = 0; i < n; i++) {
        if (items[i].code) {
            invalid++;
        } else if (!items[i].known) {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "no logged prediction '%.64s' in the last %lld s (unknown, not logged, or "
                     "older than the monitor's window)",
                     items[i].id, (long long)(m->window_ms / 1000));
            item_error(&items[i], BS_ENOTFOUND, "prediction_id", msg);
            unknown_ids++;
        } else {
            n_rec++;
        }
    }
    int rc = 0;
    if (n_rec) {
        bs_log_record_in_t *recs = calloc((size_t)n_rec, sizeof *recs);
        bs_log_append_result_t *res = calloc((size_t)n_rec, sizeof *res);
        bs_buf_t data;
        bs_buf_init(&data);
        size_t *offs = calloc((size_t)n_rec, sizeof *offs);
        if (!recs || !res || !offs) {
            rc = bs_err_set(err, BS_ENOMEM, "out of memory");
        } else {
            int r = 0;
            for (int i = 0; i < n && !rc; i++) {
                if (items[i].code)
                    continue;
                offs[r++] = data.len;
                if (record_json(&items[i], received, &data) != 0)
                    rc = bs_err_set(err, BS_ENOMEM, "out of memory");
                data.need_comma = 0;
            }
        }
        if (!rc) {
            for (int r = 0; r < n_rec; r++) {
                size_t end = r + 1 < n_rec ? offs[r + 1] : data.len;
                recs[r].data = data.data + offs[r];
                recs[r].len = end - offs[r];
            }
            rc = bs_log_append(m->log, tenant, BS_MONITOR_FEEDBACK_TOPIC, recs, n_rec, res, err);
        }
        if (!rc) {
            int64_t last = -1;
            int r = 0;
            pthread_mutex_lock(&m->mu);
            for (int i = 0; i < n; i++) {
                if (items[i].code)
                    continue;
                const bs_log_append_result_t *x = &res[r++];
                if (x->code) {
                    item_error(&items[i], x->code, NULL, bs_err_desc(x->code));
                    n_rec--;
                    continue;
                }
                items[i].offset = x->offset;
                if (x->offset > last)
                    last = x->offset;
                items[i].table->feedback_received++;
            }
            pthread_mutex_unlock(&m->mu);
            if (last >= 0)
                wait_joined(m, tenant, last);
        }
        free(recs);
        free(res);
        free(offs);
        bs_buf_free(&data);
    }
    pthread_mutex_lock(&m->mu);
    tenant_t *t = bs__monitor_tenant_add(m, tenant);
    if (t) {
        t->rejected_invalid += (uint64_t)invalid;
        t->rejected_unknown += (uint64_t)unknown_ids;
    }
    pthread_mutex_unlock(&m->mu);
    if (!rc)
        render(out, items, n, n_rec);
    free(items);
    return rc;
}
