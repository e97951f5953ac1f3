/*
 * The REST API: the application context shared by handlers, the route table
 * and the OpenAPI document generated from it. Handlers (src/api/<resource>.c)
 * parse the request, call a domain module and render the result.
 */
#ifndef BS_API_API_H
#define BS_API_API_H

#include <stdint.h>

#include "auth/auth.h"
#include "base/buf.h"
#include "base/config.h"
#include "http/http.h"
#include "store/meta.h"

struct bs_registry;
struct bs_serving;
struct bs_changes;
struct bs_log;
struct bs_jobs;
struct bs_httpc;
struct bs_webhooks;
struct bs_topics;
struct bs_triggers;
struct bs_endpoints;
struct bs_predlog;
struct bs_monitor;
struct bs_rollouts;
struct bs_shadow;

typedef struct bs_app {
    bs_config_t cfg;
    char data_dir[1024];
    bs_meta_t *meta;
    bs_auth_t *auth;
    bs_server_t *server;
    struct bs_registry *registry;
    struct bs_serving *serving;
    struct bs_changes *changes; /* the change watcher: keeps the snapshots current */
    struct bs_log *log;           /* topics: the segment log or JetStream (store/log.h) */
    struct bs_jobs *jobs;         /* the job runtime (events/jobs.h) */
    struct bs__api_sleep *job_sleep; /* the diagnostic `sleep` kind's timer (api/jobs.c) */
    struct bs_httpc *http;        /* the outbound HTTP client (http/client.h) */
    struct bs_webhooks *webhooks; /* webhook destinations and deliveries (events/webhooks.h) */
    struct bs_topics *topics;     /* topic specs snapshot (events/topics.h) */
    struct bs_triggers *triggers; /* triggers and their consumers (events/triggers.h) */
    struct bs_endpoints *endpoints; /* endpoints' routing snapshot (serving/endpoints.h) */
    struct bs_predlog *predlog;     /* the prediction log's buffer and drain (serving/predlog.h) */
    struct bs_monitor *monitor;     /* feedback, performance, reports (monitor/monitor.h) */
    struct bs_rollouts *rollouts;   /* the rollout controller (serving/rollouts.h) */
    struct bs_shadow *shadow;       /* endpoints' shadow runs (serving/shadow.h) */
    char replica_id[128];       /* cfg.replica_id, or hostname-pid */
    struct bs_pool *workers; /* uploads and every registry write: off the I/O threads */
    struct bs_pool *stream_workers; /* topic streams' pumps (topic_stream.c), apart from those */
    _Atomic int64_t upload_bytes; /* artifacts of uploads queued or parsing (upload_memory_bytes) */
    _Atomic uint64_t upload_rejections; /* uploads answered 503 over that budget */
    int64_t started_ms;
    uint64_t started_mono_ns;
    volatile int shutting_down;
    char *openapi; /* the generated document, built once at start */
    size_t openapi_len;
    char *docs; /* /docs, rendered from the document at start */
    size_t docs_len;
    bs_route_t *routes; /* the route table as configured (metrics_public opens /metrics) */
    int n_routes;
} bs_app_t;

/* The route table (static, lives for the process). */
const bs_route_t *bs_api_routes(int *n);
/* The error shape by path prefix, for bs_server_opts_t.error_shapes (static). */
const bs_error_shape_rule_t *bs_api_error_shapes(void);

/* The routes of the metrics_listen listener: /metrics and /healthz, no key needed. */
const bs_route_t *bs_api_metrics_routes(int *n);

/* Writes the OpenAPI 3.1 document for routes into b. */
void bs_api_openapi(const bs_route_t *routes, int n, bs_buf_t *b);

/* Callbacks for the server. */
int bs_api_authenticate(void *app, const char *token, size_t len, bs_principal_t *who, bs_err_t *err);
int bs_api_rate_limit(void *app, const bs_principal_t *who, double *retry_after_s);
/* A key narrowed by scopes reaches only the routes of its scopes (metrics: /metrics). */
int bs_api_authorize(void *app, const bs_principal_t *who, const bs_route_t *route, bs_err_t *err);

#endif
