/* Renders the HTTP server's per-thread counters as Prometheus text (exposition
 * format 0.0.4): requests by route/method/status, latency histograms per route and
 * method, errors by code, connections and in-flight requests, and the store workers'
 * queue. Each family is one block (HELP, TYPE, then its samples), and each router row (a
 * route and a method) is one series, so every series appears once. Route patterns, methods
 * and error codes come from tables in the source: no label value here needs escaping. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"
#include "http/http_int.h"

/* The server struct is private to server.c; these accessors live there. */
int bs__server_threads(bs_server_t *s);
bs__http_metrics_t *bs__server_thread_metrics(bs_server_t *s, int i);
int64_t bs__server_conns(bs_server_t *s);
bs__store_t *bs__server_store(bs_server_t *s);

static uint64_t ld(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

void bs_server_metrics(bs_server_t *s, bs_buf_t *b)
{
    const bs_router_t *r = bs_server_router(s);
    int nr = bs_router_count(r), nt = bs__server_threads(s);
    bs_buf_puts(b, "# HELP basalt_http_requests_total HTTP requests by route, method and status.\n"
                   "# TYPE basalt_http_requests_total counter\n");
    for (int row = 0; row <= nr; row++) {
        const char *route = row < nr ? bs_router_route(r, row)->pattern : "unmatched";
        const char *method = row < nr ? bs_router_route(r, row)->method : "any";
        for (int st = 0; st < BS__HTTP_N_STATUS; st++) {
            uint64_t sum = 0;
            for (int t = 0; t < nt; t++)
                sum += ld(&bs__server_thread_metrics(s, t)->counts[row * BS__HTTP_N_STATUS + st]);
            if (!sum)
                continue;
            if (bs__http_statuses[st])
                bs_buf_printf(b, "basalt_http_requests_total{route=\"%s\",method=\"%s\",status=\"%d\"} %llu\n",
                              route, method, bs__http_statuses[st], (unsigned long long)sum);
            else
                bs_buf_printf(b, "basalt_http_requests_total{route=\"%s\",method=\"%s\",status=\"other\"} %llu\n",
                              route, method, (unsigned long long)sum);
        }
    }
    bs_buf_puts(b, "# HELP basalt_http_request_duration_seconds Time from request parsed to response queued.\n"
                   "# TYPE basalt_http_request_duration_seconds histogram\n");
    for (int row = 0; row <= nr; row++) {
        const char *route = row < nr ? bs_router_route(r, row)->pattern : "unmatched";
        const char *method = row < nr ? bs_router_route(r, row)->method : "any";
        uint64_t buckets[BS__HTTP_N_BUCKETS + 1] = {0}, sum_ns = 0, total = 0;
        for (int t = 0; t < nt; t++) {
            bs__http_metrics_t *m = bs__server_thread_metrics(s, t);
            for (int k = 0; k <= BS__HTTP_N_BUCKETS; k++)
                buckets[k] += ld(&m->hist[row * (BS__HTTP_N_BUCKETS + 1) + k]);
            sum_ns += ld(&m->sum_ns[row]);
        }
        for (int k = 0; k <= BS__HTTP_N_BUCKETS; k++)
            total += buckets[k];
        if (!total)
            continue;
        uint64_t cum = 0;
        for (int k = 0; k < BS__HTTP_N_BUCKETS; k++) {
            cum += buckets[k];
            bs_buf_printf(b,
                          "basalt_http_request_duration_seconds_bucket{route=\"%s\",method=\"%s\","
                          "le=\"%g\"} %llu\n",
                          route, method, bs__http_buckets[k], (unsigned long long)cum);
        }
        bs_buf_printf(b,
                      "basalt_http_request_duration_seconds_bucket{route=\"%s\",method=\"%s\","
                      "le=\"+Inf\"} %llu\n",
                      route, method, (unsigned long long)total);
        bs_buf_printf(b,
                      "basalt_http_request_duration_seconds_sum{route=\"%s\",method=\"%s\"} %.9f\n",
                      route, method, (double)sum_ns / 1e9);
        bs_buf_printf(b,
                      "basalt_http_request_duration_seconds_count{route=\"%s\",method=\"%s\"} %llu\n",
                      route, method, (unsigned long long)total);
    }
    bs_buf_puts(b, "# HELP basalt_http_errors_total Error responses by error code.\n"
                   "# TYPE basalt_http_errors_total counter\n");
#define XX(name, str, status, desc)                                                                \
    do {                                                                                           \
        int idx = bs_err_index(BS_##name);                                                         \
        uint64_t sum = 0;                                                                          \
        for (int t = 0; t < nt; t++)                                                               \
            sum += ld(&bs__server_thread_metrics(s, t)->errors[idx]);                             \
        bs_buf_printf(b, "basalt_http_errors_total{code=\"%s\"} %llu\n", str,                      \
                      (unsigned long long)sum);                                                    \
    } while (0);
    BS_ERR_MAP(XX)
#undef XX
    uint64_t conns_total = 0;
    for (int t = 0; t < nt; t++)
        conns_total += ld(&bs__server_thread_metrics(s, t)->conns_total);
    bs_buf_printf(b,
                  "# HELP basalt_http_in_flight_requests Requests being served.\n"
                  "# TYPE basalt_http_in_flight_requests gauge\n"
                  "basalt_http_in_flight_requests %lld\n"
                  /* Not "basalt_http_connections": that is the counter's family name below
                   * once its _total is dropped (OpenMetrics, prometheus_client). */
                  "# HELP basalt_http_open_connections Open client connections.\n"
                  "# TYPE basalt_http_open_connections gauge\n"
                  "basalt_http_open_connections %lld\n"
                  "# HELP basalt_http_connections_total Accepted client connections.\n"
                  "# TYPE basalt_http_connections_total counter\n"
                  "basalt_http_connections_total %llu\n",
                  (long long)bs_server_in_flight(s), (long long)bs__server_conns(s),
                  (unsigned long long)conns_total);
    bs__store_metrics(bs__server_store(s), b);
    bs__stream_metrics(s, b);
}
