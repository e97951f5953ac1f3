/* Private to src/http: per-thread metrics and the status-slot table. */
#ifndef BS_HTTP_HTTP_INT_H
#define BS_HTTP_HTTP_INT_H

#include <stdint.h>

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

/* 1 once the token's request was disposed of (its client went away); any thread. */
int bs__deferred_gone(bs_deferred_t *d);
/* Gives up a token without completing it (its request is gone). */
void bs__deferred_drop(bs_deferred_t *d);

#endif
