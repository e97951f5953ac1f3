/* Private to src/http: per-thread metrics and the status-slot table. */
#ifndef BS_HTTP_HTTP_INT_H
#define BS_HTTP_HTTP_INT_H

#include <stdatomic.h>
#include <stdint.h>

#include <h2o.h>

#include "base/buf.h"
#include "base/err.h"
#include "http/http.h"

#define BS__HTTP_N_STATUS 19
#define BS__HTTP_N_BUCKETS 17

extern const int bs__http_statuses[BS__HTTP_N_STATUS]; /* last slot: "other" (0) */
extern const double bs__http_buckets[BS__HTTP_N_BUCKETS];

/* One I/O thread's counters; only that thread writes them (relaxed stores),
 * the /metrics scrape reads them (relaxed loads) and sums over threads. */
typedef struct {
    uint64_t *counts;  /* [n_routes + 1][N_STATUS]; last route row: unmatched */
    uint64_t *hist;    /* [n_routes + 1][N_BUCKETS + 1] (last: +Inf) */
    uint64_t *sum_ns;  /* [n_routes + 1] */
    uint64_t errors[BS_ERR_COUNT];
    uint64_t conns_total;
} bs__http_metrics_t;

int bs__http_status_slot(int status);

/* ---- store workers (offload.c) ---------------------------------------------------------- */

typedef struct bs__store bs__store_t;

/* Starts threads workers (1..64) with at most queue_max waiting requests. NULL with err. */
bs__store_t *bs__store_new(int threads, int queue_max, bs_err_t *err);
/* Runs what is queued, joins the workers, frees. NULL is a no-op. After the loops stop. */
void bs__store_free(bs__store_t *st);
/* On req's I/O thread, after auth: queues a copy of req for a worker and defers req, or
 * responds itself (503 overloaded when the queue is full, 500 when st is NULL). */
void bs__store_submit(bs__store_t *st, bs_req_t *req);
/* The store-worker families of /metrics (zeros when st is NULL). */
void bs__store_metrics(bs__store_t *st, bs_buf_t *b);
/* The request API on a worker's copy (req->worker set); server.c dispatches to these. */
const char *bs__store_header(const bs_req_t *req, const char *name, size_t *len);
/* The worker's copy of the headers, for bs_req_headers: header i (0-based), or 0 past
 * the last. */
int bs__store_header_at(const bs_req_t *req, size_t i, const char **name, size_t *name_len,
                        const char **value, size_t *value_len);
void bs__store_resp_header(bs_req_t *req, const char *name, const char *value);
void bs__store_resp_body(bs_req_t *req, int status, const char *content_type, const char *body,
                         size_t len);
void bs__store_resp_error(bs_req_t *req, const bs_err_t *err);

/* ---- I/O threads, for streaming responses (stream.c) ------------------------------------ */

typedef struct bs__http_thread bs__http_thread_t;

/* Work for an I/O thread: fn(m) runs on that thread's loop. */
typedef struct bs__http_msg {
    h2o_multithread_message_t super; /* first: h2o links messages through it */
    void (*fn)(struct bs__http_msg *m);
} bs__http_msg_t;

/* Server-wide stream counters (any thread). */
typedef struct {
    atomic_llong open;        /* streams whose response has not ended */
    atomic_ullong total;      /* streams started */
    atomic_ullong bytes;      /* body bytes handed to h2o */
    atomic_ullong refused;    /* writes refused with BS_EOVERLOAD */
    atomic_ullong gone;       /* streams ended because the client went away or stalled */
} bs__stream_stats_t;

/* The calling thread's I/O thread, or NULL on any other thread. */
bs__http_thread_t *bs__http_self(void);
h2o_loop_t *bs__http_thread_loop(bs__http_thread_t *t);
bs_server_t *bs__http_thread_server(bs__http_thread_t *t);
/* 1 once the server was asked to stop. */
int bs__http_stopping(bs__http_thread_t *t);
/* Posts m to t's loop (any thread). 0, or -1 when the loop is gone (m was not posted). A
 * message must not be posted again before its fn ran. */
int bs__http_post(bs__http_thread_t *t, bs__http_msg_t *m);
/* stream.c's per-thread slot (only t's own thread touches it). */
void **bs__http_thread_streams(bs__http_thread_t *t);
bs__stream_stats_t *bs__http_stream_stats(bs_server_t *s);
/* On req's I/O thread: the response head of a stream (status, content type, request id;
 * the request counted in the metrics and access log as answered), marked responded. */
void bs__http_start_head(bs_req_t *req, int status, const char *content_type);
/* On t's loop once the server stops: ends every open stream of the thread (a clean end
 * after the queue, on_close to the producer). */
void bs__stream_shutdown(bs__http_thread_t *t);
/* The stream families of /metrics. */
void bs__stream_metrics(bs_server_t *s, bs_buf_t *b);

/* 1 once the token's request was disposed of (its client went away); any thread. */
int bs__deferred_gone(bs_deferred_t *d);
/* Gives up a token without completing it (its request is gone). */
void bs__deferred_drop(bs_deferred_t *d);

#endif
