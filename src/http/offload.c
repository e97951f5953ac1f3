/*
 * Store workers: handlers of BS_ROUTE_BLOCKING routes run here, off the I/O threads.
 *
 * Why: such a handler waits on the metadata store (SQLite's lock and busy timeout today, a
 * PostgreSQL round trip with the scale-out backend); on an I/O thread that wait would stall
 * every other connection of its loop, predictions included.
 *
 * How: on_req (server.c) authenticates, authorizes and rate-limits as for any route, then
 * calls bs__store_submit on the I/O thread, which
 *   1. admits the request against store_queue (503 overloaded with Retry-After beyond),
 *   2. builds a self-contained copy of it (job_t: its own bs_req_t and arena holding the
 *      method, path and query, the decoded path parameters, the headers but Authorization,
 *      the principal and request id; the body in one malloc'd block, the only copy made),
 *   3. defers the h2o request (bs_req_defer) and queues the job on the pool.
 * A worker runs the route's handler on the copy. The bs_resp_* calls it makes land in the
 * deferred response (bs_deferred_header / _respond_body / _respond_error) instead of h2o,
 * and the response is sent on the request's own I/O thread (server.c, on_deferred), where
 * the access log, per-route metrics, error shape (by the real path) and request id are
 * done exactly as for an inline handler.
 *
 * Ownership and lifetime: the job is the worker's alone once queued; it never touches the
 * h2o request, which h2o may dispose of at any time (client gone). The deferred token is
 * shared with the I/O thread by reference count (server.c): a completion for a request
 * that is gone is dropped there, and a job whose request is gone before it starts is not
 * run at all. The pool is stopped (bs__store_free) after the loops, before the threads'
 * state the tokens point to is freed.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <h2o.h>

#include "base/pool.h"
#include "base/time.h"
#include "http/http.h"
#include "http/http_int.h"

struct bs__store {
    bs_pool_t *pool;
    int threads;
    int queue_max;
    atomic_int queued;  /* admitted, not yet taken by a worker */
    atomic_int running; /* on a worker now */
    atomic_ullong rejections;
};

typedef struct {
    const char *name; /* lower case, as h2o hands them on */
    size_t name_len;
    const char *value;
    size_t value_len;
} header_t;

typedef struct {
    bs_req_t req; /* the copy the handler sees; req.worker points back here */
    bs__store_t *store;
    bs_deferred_t *d;
    header_t *headers; /* in req.arena */
    size_t n_headers;
    char *body; /* malloc'd copy of the request body, or NULL */
} job_t;

bs__store_t *bs__store_new(int threads, int queue_max, bs_err_t *err)
{
    bs__store_t *st = calloc(1, sizeof *st);
    if (!st) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    st->threads = threads < 1 ? 1 : threads > 64 ? 64 : threads;
    st->queue_max = queue_max < 1 ? 1 : queue_max;
    st->pool = bs_pool_new(st->threads, err);
    if (!st->pool) {
        free(st);
        return NULL;
    }
    return st;
}

void bs__store_free(bs__store_t *st)
{
    if (!st)
        return;
    bs_pool_free(st->pool); /* runs what is queued: each job completes its token */
    free(st);
}

void bs__store_metrics(bs__store_t *st, bs_buf_t *b)
{
    bs_buf_printf(b,
                  "# HELP basalt_http_store_workers Workers that run the routes which wait on a "
                  "store (store_threads).\n"
                  "# TYPE basalt_http_store_workers gauge\n"
                  "basalt_http_store_workers %d\n"
                  "# HELP basalt_http_store_queued_requests Requests waiting for a store worker.\n"
                  "# TYPE basalt_http_store_queued_requests gauge\n"
                  "basalt_http_store_queued_requests %d\n"
                  "# HELP basalt_http_store_running_requests Requests a store worker is handling.\n"
                  "# TYPE basalt_http_store_running_requests gauge\n"
                  "basalt_http_store_running_requests %d\n"
                  "# HELP basalt_http_store_rejections_total Requests answered 503 because "
                  "store_queue requests were waiting.\n"
                  "# TYPE basalt_http_store_rejections_total counter\n"
                  "basalt_http_store_rejections_total %llu\n",
                  st ? st->threads : 0, st ? atomic_load(&st->queued) : 0,
                  st ? atomic_load(&st->running) : 0,
                  st ? (unsigned long long)atomic_load(&st->rejections) : 0ull);
}

static void job_free(job_t *j)
{
    bs_arena_deinit(&j->req.arena);
    free(j->body);
    free(j);
}

/* On a worker. */
static void run_job(void *arg)
{
    job_t *j = arg;
    bs__store_t *st = j->store;
    atomic_fetch_sub(&st->queued, 1);
    if (bs__deferred_gone(j->d)) {
        /* The client went away while this waited: nobody would read the answer. */
        bs__deferred_drop(j->d);
        job_free(j);
        return;
    }
    atomic_fetch_add(&st->running, 1);
    bs_req_t *req = &j->req;
    req->route->fn(req);
    if (!req->responded)
        bs_resp_errorf(req, BS_EINTERNAL, NULL, "handler for %s did not respond",
                       req->route->pattern);
    atomic_fetch_sub(&st->running, 1);
    job_free(j);
}

/* Copies what the handler may read of hr into j; 0 or BS_ENOMEM. */
static int copy_request(job_t *j, const bs_req_t *src, h2o_req_t *hr)
{
    bs_req_t *req = &j->req;
    bs_arena_t *a = &req->arena;
    req->method = bs_arena_strndup(a, src->method, src->method_len);
    req->method_len = src->method_len;
    /* Path and query in one block, so raw path parameters keep their offsets. */
    size_t full = src->query ? (size_t)(src->query + src->query_len - src->path) : src->path_len;
    char *path = bs_arena_strndup(a, src->path, full);
    if (!req->method || !path)
        return BS_ENOMEM;
    req->path = path;
    req->path_len = src->path_len;
    if (src->query) {
        req->query = path + (src->query - src->path);
        req->query_len = src->query_len;
    }
    req->n_params = src->n_params;
    for (int i = 0; i < src->n_params; i++) {
        req->params[i].name = src->params[i].name; /* the router's: lives with the server */
        req->params[i].value = bs_arena_strdup(a, src->params[i].value);
        req->params[i].raw = path + (src->params[i].raw - src->path);
        req->params[i].raw_len = src->params[i].raw_len;
        if (!req->params[i].value)
            return BS_ENOMEM;
    }
    j->headers = bs_arena_calloc(a, hr->headers.size + 1, sizeof *j->headers);
    if (!j->headers)
        return BS_ENOMEM;
    for (size_t i = 0; i < hr->headers.size; i++) {
        const h2o_header_t *e = &hr->headers.entries[i];
        /* The key has done its work (who is set): it goes no further than the I/O thread. */
        if (e->name == &H2O_TOKEN_AUTHORIZATION->buf ||
            (e->name->len == 13 && strncasecmp(e->name->base, "authorization", 13) == 0))
            continue;
        header_t *h = &j->headers[j->n_headers];
        h->name = bs_arena_strndup(a, e->name->base, e->name->len);
        h->value = bs_arena_strndup(a, e->value.base, e->value.len);
        if (!h->name || !h->value)
            return BS_ENOMEM;
        h->name_len = e->name->len;
        h->value_len = e->value.len;
        j->n_headers++;
    }
    if (src->body_len) {
        /* The one copy of the body: the handler reads it in place (no second copy for an
         * upload), and h2o's buffer may go with the connection while the job waits. */
        if (!(j->body = malloc(src->body_len)))
            return BS_ENOMEM;
        memcpy(j->body, src->body, src->body_len);
    }
    req->body = src->body ? (j->body ? j->body : "") : NULL;
    req->body_len = src->body_len;
    req->who = src->who;
    memcpy(req->request_id, src->request_id, sizeof req->request_id);
    req->route = src->route;
    req->route_index = src->route_index;
    req->app = src->app;
    req->cfg = src->cfg;
    req->err_index = -1;
    req->start_ns = src->start_ns;
    req->worker = j;
    return 0;
}

void bs__store_submit(bs__store_t *st, bs_req_t *src)
{
    if (!st)
        return bs_resp_errorf(src, BS_EINTERNAL, NULL, "route %s needs store workers",
                              src->route->pattern);
    if (atomic_fetch_add(&st->queued, 1) >= st->queue_max) {
        atomic_fetch_sub(&st->queued, 1);
        atomic_fetch_add(&st->rejections, 1);
        bs_resp_header(src, "retry-after", "1");
        return bs_resp_errorf(src, BS_EOVERLOAD, NULL,
                              "%d requests are waiting for the metadata store (store_queue); "
                              "retry later",
                              st->queue_max);
    }
    job_t *j = calloc(1, sizeof *j);
    if (j) {
        j->store = st;
        /* 8 KiB blocks, not the I/O threads' 4 KiB: bs_arena keeps one spare 4 KiB block
         * per thread, which a worker would hold past its exit. */
        bs_arena_init(&j->req.arena, 8192);
    }
    if (!j || copy_request(j, src, src->h2o) != 0 || !(j->d = bs_req_defer(src))) {
        if (j)
            job_free(j);
        atomic_fetch_sub(&st->queued, 1);
        return bs_resp_errorf(src, BS_ENOMEM, NULL, "out of memory copying the request");
    }
    if (bs_pool_submit(st->pool, run_job, j) != 0) {
        atomic_fetch_sub(&st->queued, 1);
        bs_err_t err;
        bs_err_set(&err, BS_EUNAVAIL, "the server is shutting down");
        bs_deferred_respond_error(j->d, &err);
        job_free(j);
    }
}

/* ---- the request API on a worker (called by server.c when req->worker is set) ---------- */

const char *bs__store_header(const bs_req_t *req, const char *name, size_t *len)
{
    const job_t *j = req->worker;
    size_t nl = strlen(name);
    for (size_t i = 0; i < j->n_headers; i++)
        if (j->headers[i].name_len == nl && strncasecmp(j->headers[i].name, name, nl) == 0) {
            *len = j->headers[i].value_len;
            return j->headers[i].value;
        }
    return NULL;
}

int bs__store_header_at(const bs_req_t *req, size_t i, const char **name, size_t *name_len,
                        const char **value, size_t *value_len)
{
    const job_t *j = req->worker;
    if (i >= j->n_headers)
        return 0;
    *name = j->headers[i].name;
    *name_len = j->headers[i].name_len;
    *value = j->headers[i].value;
    *value_len = j->headers[i].value_len;
    return 1;
}

void bs__store_resp_header(bs_req_t *req, const char *name, const char *value)
{
    job_t *j = req->worker;
    bs_deferred_header(j->d, name, value);
}

void bs__store_resp_body(bs_req_t *req, int status, const char *content_type, const char *body,
                         size_t len)
{
    job_t *j = req->worker;
    req->status = status;
    bs_deferred_respond_body(j->d, status, content_type, body, len);
}

void bs__store_resp_error(bs_req_t *req, const bs_err_t *err)
{
    job_t *j = req->worker;
    req->status = bs_err_status(err->code ? err->code : BS_EINTERNAL);
    bs_deferred_respond_error(j->d, err);
}
