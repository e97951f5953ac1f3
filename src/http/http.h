/*
 * The HTTP layer: routes with path parameters and a minimum role, a request
 * context with an arena, JSON / error / text responses, and the server (h2o
 * event loops, one per I/O thread, SO_REUSEPORT listeners). Handlers see
 * only the types in this header; h2o stays inside src/http.
 *
 * A handler runs on an I/O thread and must respond exactly once before it
 * returns (bs_resp_*). It must not block: no fsync, no big scans, no network
 * round trip. A route that may block on a store is marked BS_ROUTE_BLOCKING:
 * its handler runs on one of the server's store workers instead (see "store
 * workers" below), written synchronously with the same request API.
 */
#ifndef BS_HTTP_HTTP_H
#define BS_HTTP_HTTP_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/buf.h"
#include "base/config.h"
#include "base/err.h"
#include "base/principal.h"

#define BS_HTTP_MAX_PARAMS 8

typedef struct bs_req bs_req_t;
typedef void (*bs_handler_fn)(bs_req_t *req);

/* bs_route_t.blocking */
#define BS_ROUTE_INLINE 0   /* runs on the I/O thread: reads in-process snapshots only */
#define BS_ROUTE_BLOCKING 1 /* may block on a store: runs on a store worker */

typedef struct {
    const char *method;  /* "GET", "POST", … */
    const char *pattern; /* "/v1/keys/{id}"; a last segment "{name*}" takes the rest */
    bs_handler_fn fn;
    bs_role_t min_role;
    /* OpenAPI: summary, tag, and optional JSON Schema texts for body and 2xx response. */
    const char *summary;
    const char *tag;
    const char *request_schema;
    const char *response_schema;
    int success_status; /* 200 if 0 */
    /*
     * BS_ROUTE_BLOCKING: the handler may wait on a store (SQL, a network round trip).
     * The server authenticates, authorizes and rate-limits on the I/O thread as for
     * any route, then queues a self-contained copy of the request (method, path, query,
     * body, path parameters, headers but Authorization, principal, request id) for its
     * store workers (setting store_threads) and returns to its loop. The handler runs
     * there with the ordinary request API (bs_req_param/query/header/json/multipart,
     * bs_resp_*); the response, with its headers, is sent on the request's I/O thread
     * through the deferred-response machinery (access log, metrics, error shape and
     * request id as for an inline route). A full queue (store_queue) answers 503
     * overloaded with Retry-After, and a request whose client went away before a
     * worker took it is dropped unrun. On a worker, bs_req_defer returns NULL: a
     * blocking handler does its work synchronously.
     * BS_ROUTE_INLINE: the handler runs on the I/O thread.
     */
    int blocking;
} bs_route_t;

struct bs_req {
    bs_arena_t arena;
    const char *method;
    size_t method_len;
    const char *path; /* without the query */
    size_t path_len;
    const char *query; /* after '?', or NULL */
    size_t query_len;
    const char *body; /* NULL when there is none */
    size_t body_len;
    int n_params;
    struct {
        const char *name;
        const char *value; /* percent-decoded, NUL-terminated, in the arena */
        const char *raw;   /* as sent, not decoded nor terminated: raw_len bytes of path */
        size_t raw_len;
    } params[BS_HTTP_MAX_PARAMS];
    bs_principal_t who;
    char request_id[72];
    const bs_route_t *route;
    int route_index;
    void *app; /* the application context given to the server */
    const bs_config_t *cfg;
    /* private to src/http */
    void *h2o;
    int status;
    int responded;
    int deferred; /* bs_req_defer was called: the response comes later */
    int resumed;  /* times bs_deferred_resume re-ran the handler */
    int err_index; /* error code index for metrics, -1 if none */
    uint64_t start_ns;
    void *worker; /* the store worker's job when this is its copy of a request, else NULL */
};

/* Path parameter by name (borrowed, lives with the request), or NULL. Every path
 * parameter and query parameter of a routed request decodes to UTF-8 without NUL: the
 * server answers 400 before the handler otherwise. */
const char *bs_req_param(const bs_req_t *req, const char *name);
/* The parameter as it appears in the path (not percent-decoded), or NULL; *len its bytes. */
const char *bs_req_param_raw(const bs_req_t *req, const char *name, size_t *len);
/* Query parameter by name, percent-decoded in the arena, or NULL. */
const char *bs_req_query(bs_req_t *req, const char *name);
/* Request header by lower-case name (copied into the arena), or NULL. */
const char *bs_req_header(bs_req_t *req, const char *name);
/* Calls cb(name, value, ud) for every request header whose name starts with prefix
 * (case-insensitive; "" for all), in the order sent; both strings lower-case-named,
 * NUL-terminated copies in the arena. cb returns nonzero to stop. Returns the number of
 * headers passed to cb. (CloudEvents binary mode reads its ce-* headers with it.) */
int bs_req_headers(bs_req_t *req, const char *prefix,
                   int (*cb)(const char *name, const char *value, void *ud), void *ud);
/* 1 if the body may be read as JSON: no Content-Type, or a media type (case-insensitive,
 * parameters such as "; charset=utf-8" may follow) of application/json, application/<x>+json
 * or application/x-www-form-urlencoded (what `curl -d` sends). No copy: cheap enough for
 * the predict path. bs_req_json refuses every other type with BS_EMEDIA. */
int bs_req_is_json(const bs_req_t *req);
/* Parses the body as JSON with the configured depth limit (freed with the request).
 * Errors: BS_EMEDIA for a non-JSON content type, BS_EPARSE, BS_EDEPTH. */
cJSON *bs_req_json(bs_req_t *req, bs_err_t *err);

/* A part of a multipart/form-data body (RFC 7578); pointers into the request body. */
typedef struct {
    const char *name;         /* form field name (arena) */
    const char *filename;     /* or NULL (arena) */
    const char *content_type; /* or NULL (arena) */
    const char *data;
    size_t len;
} bs_form_part_t;

/* 1 if the request is multipart/form-data. */
int bs_req_is_multipart(bs_req_t *req);
/* Splits a multipart/form-data body into at most max parts. Returns the count or
 * BS_EINVAL for a malformed body. */
int bs_req_multipart(bs_req_t *req, bs_form_part_t *parts, int max, bs_err_t *err);

/* Adds a response header (both strings copied). Call before responding. */
void bs_resp_header(bs_req_t *req, const char *name, const char *value);
/* Sends body (copied) as application/json with the status. */
void bs_resp_json(bs_req_t *req, int status, const bs_buf_t *body);
/* Sends the error envelope of DESIGN.md with the code's status. */
void bs_resp_error(bs_req_t *req, const bs_err_t *err);
/* Shorthand: builds the error and sends it. */
void bs_resp_errorf(bs_req_t *req, int code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Sends a body (copied) with a content type. */
void bs_resp_body(bs_req_t *req, int status, const char *content_type, const char *body, size_t len);
/* 204 No Content. */
void bs_resp_empty(bs_req_t *req, int status);

/* ---- deferred responses -------------------------------------------------------------- */

/*
 * A handler that hands its work to another thread calls bs_req_defer and
 * returns without responding; the worker later completes the request with
 * bs_deferred_respond_json / _error from any thread. The response is sent on
 * the request's own I/O thread. If the client went away meanwhile, the
 * completion is dropped safely. The worker must not touch the request or its
 * arena after deferring: copy what it needs first.
 */
typedef struct bs_deferred bs_deferred_t;

/* Returns a token, or NULL (out of memory, or called on a store worker: the handler
 * should respond itself). */
bs_deferred_t *bs_req_defer(bs_req_t *req);
/* Adds a header (both strings copied) to the response a later completion sends. Call from
 * the completing thread before the completion. Silently dropped when out of memory. */
void bs_deferred_header(bs_deferred_t *d, const char *name, const char *value);
/* Completes with status and a JSON body (copied). Exactly one completion per token. */
void bs_deferred_respond_json(bs_deferred_t *d, int status, const bs_buf_t *body);
/* Completes with status and a body (copied) of content_type (copied; NULL: none). */
void bs_deferred_respond_body(bs_deferred_t *d, int status, const char *content_type,
                              const char *body, size_t len);
void bs_deferred_respond_error(bs_deferred_t *d, const bs_err_t *err);
/* Completes by running the request's route handler again on its I/O thread, once what
 * it waited for is ready (a model loaded off the I/O thread). req->resumed counts the runs. */
void bs_deferred_resume(bs_deferred_t *d);

/* ---- streaming responses ---------------------------------------------------------------
 *
 * A handler that answers with a stream (Server-Sent Events, a live tail) calls
 * bs_req_stream instead of bs_resp_*: the status line and headers go out at once, and the
 * body follows in pieces written with bs_stream_write from any thread. Written bytes are
 * copied into the stream's queue and sent on the request's I/O thread as fast as the client
 * reads them (an h2o generator: the next piece goes to h2o only once the previous one was
 * written to the socket). The queue is bounded: a write that would take the bytes queued
 * and unsent past max_queued is refused with BS_EOVERLOAD, and on_drain is called once the
 * queue has drained to half of it. So a producer never buffers without bound for a slow
 * client, and a slow client costs at most about twice max_queued of memory.
 *
 * Lifetime: the producer holds the stream from bs_req_stream until it calls
 * bs_stream_close. The response ends after bs_stream_close once the queue is sent; or
 * early, when the client goes away (noticed at once by a failed write, and within a second
 * while idle), when a write makes no progress for stall_timeout_ms, or when the server
 * shuts down (it ends every stream). Ending early calls on_close, once, unless
 * bs_stream_close came first; writes are refused from then on and the producer should call
 * bs_stream_close. After bs_stream_close returns, no callback of the stream runs and the
 * stream must not be used again.
 *
 * Metrics: basalt_http_streams_open (gauge), basalt_http_streams_total,
 * basalt_http_stream_bytes_total, basalt_http_stream_refused_writes_total,
 * basalt_http_streams_lost_total (ended because the client went away or stalled).
 */
typedef struct bs_stream bs_stream_t;

typedef struct {
    size_t max_queued;        /* bytes queued and unsent before writes are refused; 0: 256 KiB */
    int64_t heartbeat_ms;     /* > 0: after this long with nothing sent, send heartbeat */
    const char *heartbeat;    /* the bytes of a heartbeat (copied), e.g. ": ping\n\n" for SSE */
    int64_t stall_timeout_ms; /* a write without progress this long ends the stream; 0: 60 s */
    void (*on_drain)(void *ud); /* on the I/O thread: writable again after a refused write */
    void (*on_close)(void *ud); /* on the I/O thread: the stream ended early (see above) */
    void *ud;
} bs_stream_opts_t;

/* Starts a streaming response with status and content_type (copied); headers added with
 * bs_resp_header before are sent too; the head is sent at once. Only from an inline
 * handler, on its I/O thread. Returns the stream, or NULL (out of memory; on a store
 * worker): the handler then responds as usual. o may be NULL (defaults, no callbacks). */
bs_stream_t *bs_req_stream(bs_req_t *req, int status, const char *content_type,
                           const bs_stream_opts_t *o);
/* Queues len bytes (copied). 0; BS_EOVERLOAD: over max_queued (nothing queued; retry after
 * on_drain); BS_EUNAVAIL: the stream ended (client gone, server stopping) or is closing.
 * A write larger than max_queued is accepted when the queue is empty. Any thread. */
int bs_stream_write(bs_stream_t *s, const void *bytes, size_t len);
/* 1 if a write of len bytes would be accepted now. Any thread. */
int bs_stream_writable(bs_stream_t *s, size_t len);
/* Ends the response once the queue is sent and releases the producer's hold. Exactly once
 * per stream; any thread (waits for a callback of the stream running on another thread). */
void bs_stream_close(bs_stream_t *s);

/* ---- router ---------------------------------------------------------------------------- */

typedef struct bs_router bs_router_t;

/* Builds a router over routes (borrowed; must outlive it). NULL with err on a bad pattern. */
bs_router_t *bs_router_new(const bs_route_t *routes, int n_routes, bs_err_t *err);
void bs_router_free(bs_router_t *r);
/*
 * Matches method + path. Returns the route index (>= 0) and fills params
 * (values point into path and are NOT decoded or terminated: lengths given),
 * or BS_ENOTFOUND (no route has this path) or BS_EMETHOD (the path exists
 * with other methods; allow receives e.g. "GET, DELETE").
 */
typedef struct {
    const char *name;
    const char *value;
    size_t len;
} bs_route_param_t;
int bs_router_match(const bs_router_t *r, const char *method, size_t method_len, const char *path,
                    size_t path_len, bs_route_param_t *params, int *n_params, char *allow,
                    size_t allow_len);
int bs_router_count(const bs_router_t *r);
const bs_route_t *bs_router_route(const bs_router_t *r, int i);

/* ---- server ---------------------------------------------------------------------------- */

typedef struct bs_server bs_server_t;

/* Authenticates a bearer token. Returns 0 and fills who, or BS_EUNAUTH with err set. */
typedef int (*bs_auth_fn)(void *app, const char *token, size_t len, bs_principal_t *who,
                          bs_err_t *err);
/* Charges one request to who's rate limit. Returns 0, or BS_ERATE with *retry_after_s set
 * (the server sends it as Retry-After: a whole number of seconds, 1 to
 * BS_HTTP_MAX_RETRY_AFTER). */
#define BS_HTTP_MAX_RETRY_AFTER 86400
typedef int (*bs_rate_fn)(void *app, const bs_principal_t *who, double *retry_after_s);
/* Decides whether an authenticated caller whose role suffices may use route (a key
 * narrowed by scopes). Returns 0, or BS_EFORBID with err set. */
typedef int (*bs_authorize_fn)(void *app, const bs_principal_t *who, const bs_route_t *route,
                               bs_err_t *err);

/* The body of an error response. Routes of a borrowed protocol answer in its shape;
 * the request id is always in the X-Request-Id header as well. */
typedef enum {
    BS_ERROR_SHAPE_BASALT = 0, /* {"error": {"code", "message", "field"?}, "request_id"} */
    BS_ERROR_SHAPE_OIP,        /* Open Inference Protocol: {"error": "message"} */
} bs_error_shape_t;

typedef struct {
    const char *prefix; /* "/v2": that path and every path under it ("/v2/…") */
    bs_error_shape_t shape;
} bs_error_shape_rule_t;

typedef struct {
    const bs_config_t *cfg;
    const bs_route_t *routes;
    int n_routes;
    void *app;
    bs_auth_fn authenticate;
    bs_rate_fn rate_limit;
    bs_authorize_fn authorize; /* optional */
    /* Error shapes by path prefix, ended by {NULL}; the first match wins, else basalt's.
     * They apply to every error of a matching path: a handler's, the router's 404/405,
     * auth 401/403, 429, and h2o's own 400/413. NULL: basalt's shape everywhere. */
    const bs_error_shape_rule_t *error_shapes;
} bs_server_opts_t;

/* Binds the listeners (one per thread) and prepares the loops. NULL with err. */
bs_server_t *bs_server_new(const bs_server_opts_t *opts, bs_err_t *err);
/* Runs until bs_server_stop; then drains in-flight requests (bounded by the
 * configured shutdown timeout) and returns 0. */
int bs_server_run(bs_server_t *s);
/* Async-signal-safe: asks the server to shut down gracefully. */
void bs_server_stop(bs_server_t *s);
void bs_server_free(bs_server_t *s);
/* The bound port (useful with port 0). */
int bs_server_port(const bs_server_t *s);
const bs_router_t *bs_server_router(const bs_server_t *s);
/* Writes the HTTP metrics (Prometheus text) into b. */
void bs_server_metrics(bs_server_t *s, bs_buf_t *b);
/* Requests being served right now. */
int64_t bs_server_in_flight(const bs_server_t *s);

/* ---- store workers ----------------------------------------------------------------------
 * A server whose route table has a BS_ROUTE_BLOCKING route starts cfg->store_threads
 * workers (bs_server_new) and stops them in bs_server_free, after its loops, running what
 * is still queued. At most cfg->store_queue requests wait for a worker; more get 503
 * overloaded with Retry-After: 1 (counted in basalt_http_store_rejections_total). */

#endif
