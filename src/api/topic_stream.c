/*
 * GET /v1/topics/{name}/stream: a live tail of a topic as Server-Sent Events (WHATWG HTML
 * §9.2, "Server-sent events"). Each record is one event:
 *
 *   id: <offset>
 *   event: <the event's "type" (a CloudEvent's type), else "event">
 *   data: {"offset": N, "id": "...", "time": "<RFC 3339>", "event": <the event JSON>}
 *
 * (an event whose JSON text has line breaks takes several data: lines, which a client
 * joins with "\n" back into the same JSON). Comments (": ping") are heartbeats. The stream
 * starts at ?from_offset=, at ?from_time= (the first record at or after it), or at the
 * record after the Last-Event-ID a reconnecting client sends (it wins over the query);
 * without any of them at the topic's end: records appended from now on.
 *
 * How: the handler (inline, on the I/O thread) checks the topic in the topics snapshot,
 * fixes the start, opens a streaming response (http.h bs_req_stream) and schedules a pump
 * on the stream workers (app->stream_workers: a pool of their own, as a publish wakes every
 * stream of its topic at once, and those runs must not queue ahead of the uploads and
 * registry writes on app->workers). A pump run reads a batch of records (bs_log_read may wait
 * on the disk, so never on the I/O thread), formats each and writes it to the stream:
 *   - a write refused with BS_EOVERLOAD (the client reads slowly) ends the run; the
 *     stream's on_drain schedules the next one, which resumes at that record;
 *   - a full batch reschedules the pump behind other work (fairness between streams);
 *   - having caught up, it registers a bs_log_watch for the next offset and ends; the
 *     watch (on a log thread) schedules it when a record arrives.
 * At most one run of a pump is queued or running (scheduled, with wake_pending for a wake
 * during a run). The client going away (the stream's on_close, on the I/O thread) marks the
 * pump closed and schedules a run that tears it down: bs_stream_close (after which no stream
 * callback runs), bs_log_unwatch (after which the watch cannot fire), free. Memory per
 * stream: the stream's bounded queue, one formatted record, one batch's read state.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "base/pool.h"
#include "events/topics.h"
#include "store/log.h"

#define PUMP_BATCH 100
#define PUMP_BATCH_BYTES (256 * 1024)
#define STREAM_QUEUE_BYTES (256 * 1024)
#define DEFAULT_HEARTBEAT_MS 15000

typedef struct {
    bs_app_t *app;
    bs_log_t *log;
    bs_pool_t *pool;
    char tenant[64], topic[64];
    bs_stream_t *stream;
    pthread_mutex_t mu;
    int scheduled;    /* a run is queued or running */
    int wake_pending; /* woken during a run: run again */
    int closed;       /* the stream ended (client gone, server stopping): tear down */
    /* the run's own (one run at a time) */
    int64_t next;      /* the next offset to send */
    int64_t from_time; /* >= 0: resolve next from this time first */
    int64_t watch_id;
    int blocked, dead;
    bs_buf_t frame;
} pump_t;

static void pump_run(void *arg);

static void pump_free(pump_t *p)
{
    bs_buf_free(&p->frame);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* Stops the stream and the watch, then frees p. On a worker, p->scheduled held. */
static void pump_teardown(pump_t *p)
{
    bs_stream_close(p->stream); /* no stream callback runs after this */
    if (p->watch_id > 0)
        bs_log_unwatch(p->log, p->watch_id); /* nor the watch */
    pump_free(p);
}

/* Makes sure a run comes: queues one, or tells the running one to go on. Any thread. */
static void pump_schedule(pump_t *p)
{
    pthread_mutex_lock(&p->mu);
    if (p->scheduled) {
        p->wake_pending = 1;
        pthread_mutex_unlock(&p->mu);
        return;
    }
    p->scheduled = 1;
    pthread_mutex_unlock(&p->mu);
    if (bs_pool_submit(p->pool, pump_run, p) != 0) {
        /* The pool is stopping. Not expected: a stopping server ends its streams (on_close,
         * whose teardown run is queued) before bs_server_run returns and long before the
         * pool and the log go (app.c). The pump is left as it is: nothing runs it again. */
        pthread_mutex_lock(&p->mu);
        p->closed = 1;
        p->scheduled = 0;
        pthread_mutex_unlock(&p->mu);
    }
}

static void on_wake(void *ud) { pump_schedule(ud); }
static void on_drain(void *ud) { pump_schedule(ud); }

static void on_close(void *ud)
{
    pump_t *p = ud;
    pthread_mutex_lock(&p->mu);
    p->closed = 1;
    pthread_mutex_unlock(&p->mu);
    pump_schedule(p);
}

/* "data: " lines of text: every line break (CR, LF or CRLF) starts a new data: line. */
static void put_data(bs_buf_t *b, const char *s, size_t n)
{
    bs_buf_puts(b, "data: ");
    size_t from = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\r' && s[i] != '\n')
            continue;
        bs_buf_append(b, s + from, i - from);
        bs_buf_puts(b, "\ndata: ");
        if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n')
            i++;
        from = i + 1;
    }
    bs_buf_append(b, s + from, n - from);
    bs_buf_putc(b, '\n');
}

/* The SSE event of one record into b (reset first). */
static void format_record(bs_buf_t *b, const bs_log_record_t *r)
{
    bs_buf_reset(b);
    char type[201] = "event";
    cJSON *ev = cJSON_ParseWithLength(r->data, r->len);
    const cJSON *t = cJSON_IsObject(ev) ? cJSON_GetObjectItemCaseSensitive(ev, "type") : NULL;
    if (cJSON_IsString(t) && t->valuestring[0]) {
        size_t k = 0;
        for (const char *c = t->valuestring; *c && k < sizeof type - 1; c++)
            type[k++] = (unsigned char)*c < 0x20 ? ' ' : *c; /* one line */
        type[k] = '\0';
    }
    bs_buf_printf(b, "id: %lld\nevent: %s\n", (long long)r->offset, type);
    bs_buf_t item;
    bs_buf_init(&item);
    bs_jw_obj_begin(&item);
    bs_jw_key(&item, "offset");
    bs_jw_int(&item, r->offset);
    bs_jw_key(&item, "id");
    bs_jw_str(&item, r->id);
    bs_jw_key(&item, "time");
    bs_jw_time(&item, r->time_ms);
    bs_jw_key(&item, "event");
    if (ev)
        bs_jw_raw(&item, r->data, r->len); /* the JSON as published */
    else
        bs_jw_strn(&item, r->data, r->len); /* not JSON (written by other means): a string */
    bs_jw_obj_end(&item);
    put_data(b, item.data ? item.data : "", item.len);
    bs_buf_putc(b, '\n');
    bs_buf_free(&item);
    cJSON_Delete(ev);
}

static int on_record(const bs_log_record_t *r, void *ud)
{
    pump_t *p = ud;
    format_record(&p->frame, r);
    if (p->frame.oom) {
        p->dead = 1;
        return 1;
    }
    int rc = bs_stream_write(p->stream, p->frame.data, p->frame.len);
    if (rc == BS_EOVERLOAD) {
        p->blocked = 1; /* this record again after on_drain */
        return 1;
    }
    if (rc != 0) {
        p->dead = 1;
        return 1;
    }
    p->next = r->offset + 1;
    return 0;
}

/* Tells the client why the stream ends (an SSE event "error" with the error envelope). */
static void send_error(pump_t *p, const bs_err_t *err)
{
    bs_buf_t b, e;
    bs_buf_init(&b);
    bs_buf_init(&e);
    bs_jw_obj_begin(&e);
    bs__api_render_error_obj(&e, err->code, NULL, err->msg);
    bs_jw_obj_end(&e);
    bs_buf_puts(&b, "event: error\n");
    put_data(&b, e.data ? e.data : "", e.len);
    bs_buf_putc(&b, '\n');
    if (!b.oom)
        bs_stream_write(p->stream, b.data, b.len);
    bs_buf_free(&b);
    bs_buf_free(&e);
}

static void pump_run(void *arg)
{
    pump_t *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        int closed = p->closed;
        p->wake_pending = 0;
        pthread_mutex_unlock(&p->mu);
        if (closed) {
            pump_teardown(p);
            return;
        }
        bs_err_t err;
        bs_err_clear(&err);
        if (p->from_time >= 0) {
            if (bs_log_offset_at(p->log, p->tenant, p->topic, p->from_time, &p->next, &err)) {
                send_error(p, &err);
                p->dead = 1;
            }
            p->from_time = -1;
        }
        int n = 0;
        p->blocked = 0;
        if (!p->dead) {
            n = bs_log_read(p->log, p->tenant, p->topic, p->next, PUMP_BATCH, PUMP_BATCH_BYTES,
                            on_record, p, NULL, &err);
            if (n < 0) {
                send_error(p, &err); /* the topic was dropped, or the disk failed */
                p->dead = 1;
            }
        }
        if (p->dead) {
            pthread_mutex_lock(&p->mu);
            p->closed = 1;
            pthread_mutex_unlock(&p->mu);
            continue;
        }
        if (p->blocked) {
            /* Resumed by on_drain (which may already have come: wake_pending). */
            pthread_mutex_lock(&p->mu);
            int again = p->wake_pending || p->closed;
            if (!again)
                p->scheduled = 0;
            pthread_mutex_unlock(&p->mu);
            if (again)
                continue;
            return;
        }
        if (n >= PUMP_BATCH) {
            /* More to read: behind the other streams' runs. */
            if (bs_pool_submit(p->pool, pump_run, p) == 0)
                return;
            continue;
        }
        /* Caught up: wait for the next record (the watch may fire at once). */
        if (p->watch_id > 0)
            bs_log_unwatch(p->log, p->watch_id);
        p->watch_id = bs_log_watch(p->log, p->tenant, p->topic, p->next, on_wake, p, &err);
        if (p->watch_id < 0) {
            p->watch_id = 0;
            send_error(p, &err);
            p->dead = 1;
            continue;
        }
        pthread_mutex_lock(&p->mu);
        int again = p->wake_pending || p->closed;
        if (!again)
            p->scheduled = 0;
        pthread_mutex_unlock(&p->mu);
        if (!again)
            return;
    }
}

void bs__api_topic_stream(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    const char *name = bs_req_param(req, "name");
    if (!app->log || !app->topics || !app->stream_workers)
        return bs_resp_errorf(req, BS_EUNAVAIL, NULL, "topics are not available on this server");
    if (!bs_topics_find(app->topics, req->who.tenant, name))
        return bs_resp_errorf(req, BS_ENOTFOUND, "name", "no topic '%s'", name);

    int64_t from = -1, from_time = -1;
    const char *last = bs_req_header(req, "last-event-id");
    const char *q_off = bs_req_query(req, "from_offset");
    const char *q_time = bs_req_query(req, "from_time");
    const char *q_hb = bs_req_query(req, "heartbeat");
    if (q_off && q_time)
        return bs_resp_errorf(req, BS_EINVAL, "from_time", "give from_offset or from_time, not "
                              "both");
    if (last && *last) {
        int64_t id;
        if (bs__api_parse_offset(last, &id) || id == INT64_MAX)
            return bs_resp_errorf(req, BS_EINVAL, "Last-Event-ID",
                                  "Last-Event-ID must be an event id of this stream (an offset), "
                                  "got '%.64s'", last);
        from = id + 1; /* the client has that one */
    } else if (q_off) {
        if (bs__api_parse_offset(q_off, &from))
            return bs_resp_errorf(req, BS_EINVAL, "from_offset",
                                  "from_offset must be a non-negative integer, got '%.64s'",
                                  q_off);
    } else if (q_time) {
        if (bs_time_parse_rfc3339(q_time, &from_time) &&
            bs__api_parse_offset(q_time, &from_time))
            return bs_resp_errorf(req, BS_EINVAL, "from_time",
                                  "from_time must be an RFC 3339 time or ms since the epoch, got "
                                  "'%.64s'", q_time);
        from = 0;
    }
    int64_t heartbeat_ms = DEFAULT_HEARTBEAT_MS;
    if (q_hb && (bs_time_parse_duration(q_hb, &heartbeat_ms) || heartbeat_ms < 1000 ||
                 heartbeat_ms > 3600000))
        return bs_resp_errorf(req, BS_EINVAL, "heartbeat",
                              "heartbeat must be a duration from 1s to 1h, got '%.64s'", q_hb);
    if (from < 0) {
        /* The topic's end, fixed now: what is appended once the client sees the response
         * is in the stream. */
        bs_log_topic_stats_t st;
        bs_err_t err;
        if (bs_log_topic_stats(app->log, req->who.tenant, name, &st, &err))
            return bs_resp_errorf(req, BS_EUNAVAIL, NULL, "topic '%s' is not ready: %s", name,
                                  err.msg);
        from = st.next_offset;
    }

    pump_t *p = calloc(1, sizeof *p);
    if (!p)
        return bs_resp_errorf(req, BS_ENOMEM, NULL, "out of memory opening a stream");
    p->app = app;
    p->log = app->log;
    p->pool = app->stream_workers;
    snprintf(p->tenant, sizeof p->tenant, "%s", req->who.tenant);
    snprintf(p->topic, sizeof p->topic, "%s", name);
    p->next = from;
    p->from_time = from_time;
    pthread_mutex_init(&p->mu, NULL);
    bs_buf_init(&p->frame);

    bs_resp_header(req, "cache-control", "no-cache");
    bs_resp_header(req, "x-accel-buffering", "no"); /* nginx in front: do not buffer */
    bs_stream_opts_t o = {.max_queued = STREAM_QUEUE_BYTES,
                          .heartbeat_ms = heartbeat_ms,
                          .heartbeat = ": ping\n\n",
                          .on_drain = on_drain,
                          .on_close = on_close,
                          .ud = p};
    p->stream = bs_req_stream(req, 200, "text/event-stream; charset=utf-8", &o);
    if (!p->stream) {
        pump_free(p);
        return bs_resp_errorf(req, BS_ENOMEM, NULL, "out of memory opening a stream");
    }
    /* How long a client waits before reconnecting (then with Last-Event-ID). */
    static const char hello[] = "retry: 2000\n\n";
    bs_stream_write(p->stream, hello, sizeof hello - 1);
    pump_schedule(p);
}
