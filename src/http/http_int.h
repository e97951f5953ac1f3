/* Private to src/http: per-thread metrics and the status-slot table. */
#ifndef BS_HTTP_HTTP_INT_H
#define BS_HTTP_HTTP_INT_H

#include <stdint.h>

#include "base/err.h"

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

#endif
