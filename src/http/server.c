/*
 * The HTTP server on h2o 2.2.5 (libh2o-evloop).
 *
 * Threads: N I/O threads, each with its own h2o event loop, h2o context and
 * SO_REUSEPORT listener; the kernel spreads connections over them. Before the listeners
 * are made, a bind without SO_REUSEPORT checks that no other socket holds the address
 * (probe_address_free), so a second process cannot join the group. A request
 * is handled start to finish on the thread that read it, so per-thread
 * state (metrics, arena) needs no locks.
 *
 * Request path: h2o buffers the whole body (bounded by max_body_bytes, 413
 * beyond) and calls on_req, which builds a bs_req_t in the request's h2o
 * pool, refuses ambiguous HTTP/1 framing (400, see "message framing"), checks the
 * header budget (431), matches the route (404/405),
 * authenticates and rate-limits, then calls the handler — or, for a
 * BS_ROUTE_BLOCKING route, hands a copy of the request to the store workers
 * (offload.c) and sends their response when it comes back. The bs_req_t's
 * arena is released by an h2o pool dispose hook once the response is done.
 *
 * Shutdown: bs_server_stop sets a flag; each loop notices it within its
 * poll interval, closes its listener, asks h2o to close idle connections
 * (h2o_context_request_shutdown) and keeps running until its connections
 * are gone or the shutdown timeout passes.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <h2o.h>

#include "base/crypto.h"
#include "base/id.h"
#include "base/json.h"
#include "base/log.h"
#include "base/rcu.h"
#include "base/time.h"
#include "http/http.h"
#include "http/http_int.h"

const int bs__http_statuses[BS__HTTP_N_STATUS] = {200, 201, 202, 204, 304, 400, 401, 403, 404, 405,
                                                  409, 413, 415, 422, 429, 431, 500, 503, 0};
const double bs__http_buckets[BS__HTTP_N_BUCKETS] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                                                     0.0025,  0.005,  0.01,    0.025,  0.05,
                                                     0.1,     0.25,   0.5,     1,      2.5,
                                                     5,       10};

int bs__http_status_slot(int status)
{
    for (int i = 0; i < BS__HTTP_N_STATUS - 1; i++)
        if (bs__http_statuses[i] == status)
            return i;
    return BS__HTTP_N_STATUS - 1;
}

typedef struct bs__http_thread io_thread_t;

struct bs__http_thread {
    bs_server_t *srv;
    int index;
    pthread_t tid;
    int listen_fd;
    h2o_evloop_t *loop;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    int64_t conns; /* only this thread touches it */
    int started;   /* the loop took ownership of listen_fd */
    bs__http_metrics_t m;
    uint32_t rng;
    h2o_multithread_receiver_t deferred_rx;
    h2o_multithread_receiver_t msg_rx; /* bs__http_post: work for this thread (stream.c) */
    void *streams;                     /* stream.c's state for this thread, or NULL */
};

struct bs_deferred {
    h2o_multithread_message_t super; /* first: h2o links messages through it */
    io_thread_t *thread;
    bs_req_t *req;
    atomic_int refs; /* the request's (dropped when it is disposed) + the responder's */
    atomic_int req_gone; /* set on the I/O thread when the request was disposed */
    int status;
    int is_error;
    int resume; /* run the handler again instead of responding */
    bs_err_t err;
    char *body;
    size_t len;
    const char *content_type; /* "application/json", or ct_copy, or NULL (none) */
    char *ct_copy;
    bs_buf_t headers; /* extra response headers: "name\0value\0" pairs */
};

struct bs_server {
    bs_server_opts_t o;
    const bs_config_t *cfg;
    bs_router_t *router;
    h2o_globalconf_t global;
    h2o_hostconf_t *host;
    int n_threads;
    io_thread_t *threads;
    int port;
    atomic_int stop;
    atomic_llong in_flight;
    pthread_rwlock_t deferred_lock; /* posting (read) vs a loop going away (write) */
    bs__store_t *store; /* workers of BS_ROUTE_BLOCKING routes, or NULL when there are none */
    bs__stream_stats_t stream_stats;
};

static _Thread_local io_thread_t *self_thread;

/* ---- request helpers ------------------------------------------------------------------- */

const char *bs_req_param(const bs_req_t *req, const char *name)
{
    for (int i = 0; i < req->n_params; i++)
        if (strcmp(req->params[i].name, name) == 0)
            return req->params[i].value;
    return NULL;
}

const char *bs_req_param_raw(const bs_req_t *req, const char *name, size_t *len)
{
    for (int i = 0; i < req->n_params; i++)
        if (strcmp(req->params[i].name, name) == 0) {
            *len = req->params[i].raw_len;
            return req->params[i].raw;
        }
    return NULL;
}

/* Percent-decodes into the arena; '+' becomes space when form is set. NULL on bad escapes. */
static char *decode(bs_arena_t *a, const char *s, size_t n, int form)
{
    char *out = bs_arena_alloc(a, n + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int h, l;
            if (i + 2 >= n)
                return NULL;
            h = bs_hex_digit(s[i + 1]);
            l = bs_hex_digit(s[i + 2]);
            if (h < 0 || l < 0)
                return NULL;
            char c = (char)(h * 16 + l);
            if (c == '\0')
                return NULL;
            *o++ = c;
            i += 2;
        } else if (form && s[i] == '+') {
            *o++ = ' ';
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

/* 1 if every query parameter's name and value decode to UTF-8 without NUL (bs_req_query
 * would otherwise take a value it cannot decode for an absent one); else names the first
 * bad parameter in bad. */
static int query_ok(bs_req_t *req, char *bad, size_t bad_len)
{
    const char *p = req->query, *end = req->query ? req->query + req->query_len : NULL;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        if (!amp)
            amp = end;
        const char *eq = memchr(p, '=', (size_t)(amp - p));
        const char *kend = eq ? eq : amp;
        const char *k = decode(&req->arena, p, (size_t)(kend - p), 1);
        const char *v = eq ? decode(&req->arena, eq + 1, (size_t)(amp - eq - 1), 1) : "";
        if (!k || !v || !bs_utf8_valid(k, strlen(k)) || !bs_utf8_valid(v, strlen(v))) {
            /* The name as sent, in printable ASCII: it goes into the error's field. */
            size_t o = 0;
            for (const char *q = p; q < kend && o + 1 < bad_len; q++)
                bad[o++] = *q >= 0x20 && *q < 0x7f ? *q : '?';
            bad[o] = '\0';
            return 0;
        }
        p = amp + 1;
    }
    return 1;
}

const char *bs_req_query(bs_req_t *req, const char *name)
{
    if (!req->query)
        return NULL;
    size_t nl = strlen(name);
    const char *p = req->query, *end = req->query + req->query_len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        if (!amp)
            amp = end;
        const char *eq = memchr(p, '=', (size_t)(amp - p));
        const char *kend = eq ? eq : amp;
        if ((size_t)(kend - p) == nl && memcmp(p, name, nl) == 0) {
            if (!eq)
                return "";
            return decode(&req->arena, eq + 1, (size_t)(amp - eq - 1), 1);
        }
        p = amp + 1;
    }
    return NULL;
}

const char *bs_req_header(bs_req_t *req, const char *name)
{
    if (req->worker) {
        size_t len;
        const char *v = bs__store_header(req, name, &len);
        return v ? bs_arena_strndup(&req->arena, v, len) : NULL;
    }
    h2o_req_t *hr = req->h2o;
    ssize_t i = h2o_find_header_by_str(&hr->headers, name, strlen(name), -1);
    if (i < 0)
        return NULL;
    h2o_iovec_t v = hr->headers.entries[i].value;
    return bs_arena_strndup(&req->arena, v.base, v.len);
}

int bs_req_headers(bs_req_t *req, const char *prefix,
                   int (*cb)(const char *name, const char *value, void *ud), void *ud)
{
    size_t pl = strlen(prefix);
    int n = 0;
    for (size_t i = 0;; i++) {
        const char *nm, *v;
        size_t nl, vl;
        if (req->worker) {
            if (!bs__store_header_at(req, i, &nm, &nl, &v, &vl))
                break;
        } else {
            h2o_req_t *hr = req->h2o;
            if (i >= hr->headers.size)
                break;
            nm = hr->headers.entries[i].name->base;
            nl = hr->headers.entries[i].name->len;
            v = hr->headers.entries[i].value.base;
            vl = hr->headers.entries[i].value.len;
        }
        if (nl < pl || strncasecmp(nm, prefix, pl) != 0)
            continue;
        char *name = bs_arena_strndup(&req->arena, nm, nl);
        char *value = bs_arena_strndup(&req->arena, v, vl);
        if (!name || !value)
            break;
        for (char *c = name; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        n++;
        if (cb(name, value, ud))
            break;
    }
    return n;
}

int bs_req_is_json(const bs_req_t *req)
{
    const char *t;
    size_t n = 0, len;
    if (req->worker) {
        if (!(t = bs__store_header(req, "content-type", &len)))
            return 1;
    } else {
        const h2o_req_t *hr = req->h2o;
        ssize_t i = h2o_find_header(&hr->headers, H2O_TOKEN_CONTENT_TYPE, -1);
        if (i < 0)
            return 1;
        t = hr->headers.entries[i].value.base;
        len = hr->headers.entries[i].value.len;
    }
    /* The media type ends at its parameters (RFC 9110 §8.3.1): "application/jsonx" is not
     * application/json. */
    while (n < len && t[n] != ';' && t[n] != ' ' && t[n] != '\t')
        n++;
    if ((n == 16 && strncasecmp(t, "application/json", n) == 0) ||
        (n == 33 && strncasecmp(t, "application/x-www-form-urlencoded", n) == 0))
        return 1; /* the second is what `curl -d` sends */
    /* a structured syntax suffix (RFC 6839 §3.1): application/problem+json, …/vnd.x+json */
    return n > 17 && strncasecmp(t, "application/", 12) == 0 &&
           strncasecmp(t + n - 5, "+json", 5) == 0;
}

cJSON *bs_req_json(bs_req_t *req, bs_err_t *err)
{
    if (!bs_req_is_json(req)) {
        const char *ct = bs_req_header(req, "content-type");
        bs_err_set(err, BS_EMEDIA, "content type '%.64s' is not accepted, send application/json",
                   ct);
        return NULL;
    }
    return bs_json_parse_arena(&req->arena, req->body, req->body_len, req->cfg->max_json_depth,
                               err);
}

void bs_resp_header(bs_req_t *req, const char *name, const char *value)
{
    if (req->worker)
        return bs__store_resp_header(req, name, value);
    h2o_req_t *hr = req->h2o;
    size_t nl = strlen(name), vl = strlen(value);
    char *n = h2o_mem_alloc_pool(&hr->pool, nl + 1);
    memcpy(n, name, nl + 1);
    h2o_iovec_t v = h2o_strdup(&hr->pool, value, vl);
    h2o_add_header_by_str(&hr->pool, &hr->res.headers, n, nl, 0, NULL, v.base, v.len);
}

static void record(bs_req_t *req, int status)
{
    io_thread_t *t = self_thread;
    req->status = status;
    if (!t)
        return;
    bs_server_t *s = t->srv;
    int row = req->route_index >= 0 ? req->route_index : bs_router_count(s->router);
    uint64_t *c = &t->m.counts[row * BS__HTTP_N_STATUS + bs__http_status_slot(status)];
    __atomic_store_n(c, *c + 1, __ATOMIC_RELAXED);
    uint64_t dur = bs_time_mono_ns() - req->start_ns;
    double secs = (double)dur / 1e9;
    int b = 0;
    while (b < BS__HTTP_N_BUCKETS && secs > bs__http_buckets[b])
        b++;
    uint64_t *h = &t->m.hist[row * (BS__HTTP_N_BUCKETS + 1) + b];
    __atomic_store_n(h, *h + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&t->m.sum_ns[row], t->m.sum_ns[row] + dur, __ATOMIC_RELAXED);
    if (req->err_index >= 0)
        __atomic_store_n(&t->m.errors[req->err_index], t->m.errors[req->err_index] + 1,
                         __ATOMIC_RELAXED);

    double sample = s->cfg->access_log_sample;
    int log_it = status >= 500;
    if (!log_it && sample > 0) {
        if (sample >= 1) {
            log_it = 1;
        } else {
            t->rng = t->rng * 1664525u + 1013904223u;
            log_it = (double)(t->rng >> 8) / 16777216.0 < sample;
        }
    }
    if (log_it && bs__log_level <= BS_LOG_INFO) {
        char extra[512];
        bs_buf_t e = BS_BUF_ON(extra);
        bs_jw_key(&e, "method");
        bs_jw_strn(&e, req->method, req->method_len);
        bs_jw_key(&e, "path");
        bs_jw_strn(&e, req->path, req->path_len > 200 ? 200 : req->path_len);
        bs_jw_key(&e, "route");
        bs_jw_str(&e, req->route ? req->route->pattern : "unmatched");
        bs_jw_key(&e, "status");
        bs_jw_int(&e, status);
        bs_jw_key(&e, "duration_us");
        bs_jw_int(&e, (int64_t)(dur / 1000));
        bs_log_write(BS_LOG_INFO, "access", req->request_id, e.data, "request");
        bs_buf_free(&e);
    }
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

void bs_resp_body(bs_req_t *req, int status, const char *content_type, const char *body, size_t len)
{
    h2o_req_t *hr = req->h2o;
    if (req->responded) {
        BS_LOG(BS_LOG_ERROR, "http", "handler responded twice on %s", req->route ? req->route->pattern : "?");
        return;
    }
    req->responded = 1;
    if (req->worker) /* the I/O thread sends it (and records it) */
        return bs__store_resp_body(req, status, content_type, body, len);
    hr->res.status = status;
    hr->res.reason = reason_phrase(status);
    if (self_thread && atomic_load_explicit(&self_thread->srv->stop, memory_order_relaxed))
        hr->http1_is_persistent = 0; /* draining: tell the client to reconnect elsewhere */
    if (content_type)
        h2o_add_header(&hr->pool, &hr->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type,
                       strlen(content_type));
    h2o_add_header_by_str(&hr->pool, &hr->res.headers, "x-request-id", 12, 0, NULL,
                          req->request_id, strlen(req->request_id));
    record(req, status);
    hr->res.content_length = len;
    h2o_send_inline(hr, body, len);
}

void bs_resp_json(bs_req_t *req, int status, const bs_buf_t *body)
{
    if (body->oom) {
        bs_resp_errorf(req, BS_ENOMEM, NULL, "out of memory building the response");
        return;
    }
    bs_resp_body(req, status, "application/json", body->data ? body->data : "", body->len);
}

void bs_resp_empty(bs_req_t *req, int status) { bs_resp_body(req, status, NULL, "", 0); }

/* The error shape of a path: the first rule of opts.error_shapes whose prefix is the path
 * or a parent of it. */
static bs_error_shape_t error_shape(const bs_server_t *s, const char *path, size_t len)
{
    for (const bs_error_shape_rule_t *r = s ? s->o.error_shapes : NULL; r && r->prefix; r++) {
        size_t pl = strlen(r->prefix);
        if (len >= pl && memcmp(path, r->prefix, pl) == 0 && (len == pl || path[pl] == '/'))
            return r->shape;
    }
    return BS_ERROR_SHAPE_BASALT;
}

/* The error envelope of DESIGN.md, or a borrowed protocol's shape (the request id is in
 * the X-Request-Id header either way). */
static void render_error(bs_buf_t *b, bs_error_shape_t shape, int code, const char *msg,
                         const char *field, const char *request_id)
{
    if (shape == BS_ERROR_SHAPE_OIP) {
        /* KServe v2 REST: "$inference_error_response = { "error": <error message string> }" */
        bs_jw_obj_begin(b);
        bs_jw_key(b, "error");
        bs_jw_str(b, msg[0] ? msg : bs_err_desc(code));
        bs_jw_obj_end(b);
        return;
    }
    bs_jw_obj_begin(b);
    bs_jw_key(b, "error");
    bs_jw_obj_begin(b);
    bs_jw_key(b, "code");
    bs_jw_str(b, bs_err_name(code));
    bs_jw_key(b, "message");
    bs_jw_str(b, msg[0] ? msg : bs_err_desc(code));
    if (field[0]) {
        bs_jw_key(b, "field");
        bs_jw_str(b, field);
    }
    bs_jw_obj_end(b);
    bs_jw_key(b, "request_id");
    bs_jw_str(b, request_id);
    bs_jw_obj_end(b);
}

void bs_resp_error(bs_req_t *req, const bs_err_t *err)
{
    if (req->worker) {
        /* Rendered on the I/O thread, in the shape of the request's path. */
        if (req->responded) {
            BS_LOG(BS_LOG_ERROR, "http", "handler responded twice on %s", req->route->pattern);
            return;
        }
        req->responded = 1;
        return bs__store_resp_error(req, err);
    }
    int code = err->code ? err->code : BS_EINTERNAL;
    int status = bs_err_status(code);
    req->err_index = bs_err_index(code);
    char storage[1024];
    bs_buf_t b = BS_BUF_ON(storage);
    render_error(&b, error_shape(self_thread ? self_thread->srv : NULL, req->path, req->path_len),
                 code, err->msg, err->field, req->request_id);
    h2o_req_t *hr = req->h2o;
    if (status == 413 || status == 431 || code == BS_EBADREQ)
        hr->http1_is_persistent = 0; /* the connection's state is suspect: close it */
    if (status >= 500)
        BS_LOG(BS_LOG_ERROR, "http", "%s: %s", bs_err_name(code), err->msg);
    bs_resp_json(req, status, &b);
    bs_buf_free(&b);
}

void bs_resp_errorf(bs_req_t *req, int code, const char *field, const char *fmt, ...)
{
    bs_err_t err;
    err.code = code;
    snprintf(err.field, sizeof err.field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.msg, sizeof err.msg, fmt, ap);
    va_end(ap);
    bs_resp_error(req, &err);
}

/* ---- dispatch -------------------------------------------------------------------------- */

static int sane_request_id(const char *s, size_t n)
{
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':'))
            return 0;
    }
    return 1;
}

/* The client's X-Request-Id when sane (value may be NULL), else a UUIDv7 from the loop's
 * cached clock. */
static void choose_request_id(char out[72], const h2o_iovec_t *value, h2o_evloop_t *loop)
{
    if (value && sane_request_id(value->base, value->len)) {
        memcpy(out, value->base, value->len);
        out[value->len] = '\0';
    } else {
        bs_uuid7_at(out, (int64_t)h2o_now(loop));
    }
}

/* ---- message framing (RFC 9112 §6) ----------------------------------------------------
 * h2o 2.2.5 frames an HTTP/1 body by the first Content-Length, or by Transfer-Encoding
 * when both are present, and drops both headers from the request it hands on, so a
 * handler cannot see a conflict. A front proxy that framed the same bytes by another of
 * the headers would see a different second request in this one's body (request
 * smuggling). The request head is still at the start of the socket's input buffer when
 * on_req runs (h2o consumes it only after the response), so it is read again here.
 *
 * Refused with 400 and Connection: close (RFC 9112 §6.3 items 3 and 5):
 *   - Transfer-Encoding together with Content-Length;
 *   - more than one Transfer-Encoding field;
 *   - Content-Length fields with different values.
 * Repeated Content-Length fields with one value are accepted: RFC 9110 §8.6 allows a
 * recipient to treat them as that one value, and the framing is then unambiguous. */

/* Parses a Content-Length value (digits, optional surrounding blanks); -1 if not one. */
static int64_t parse_content_length(const char *v, size_t n)
{
    while (n && (*v == ' ' || *v == '\t'))
        v++, n--;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (n == 0 || n > 18)
        return -1;
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

/* Checks the framing headers of the head at the start of buf (already accepted by h2o's
 * parser). Returns NULL when the framing is unambiguous, else the reason. *head_len gets
 * the bytes of the head (request line and fields) seen. */
static const char *framing_conflict(const char *buf, size_t len, size_t *head_len)
{
    const char *p = buf, *end = buf + len;
    while (p < end && (*p == '\r' || *p == '\n')) /* picohttpparser skips these too */
        p++;
    const char *eol = memchr(p, '\n', (size_t)(end - p)); /* the request line */
    if (!eol)
        return NULL;
    p = eol + 1;
    int n_te = 0, n_cl = 0;
    int64_t cl = -1;
    while (p < end) {
        eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            break;
        size_t ll = (size_t)(eol - p);
        if (ll && p[ll - 1] == '\r')
            ll--;
        *head_len = (size_t)(eol + 1 - buf);
        if (ll == 0)
            break; /* the blank line ending the head */
        const char *colon = memchr(p, ':', ll);
        if (colon) {
            size_t nl = (size_t)(colon - p);
            const char *v = colon + 1;
            size_t vl = ll - nl - 1;
            if (nl == 17 && strncasecmp(p, "transfer-encoding", 17) == 0) {
                n_te++;
            } else if (nl == 14 && strncasecmp(p, "content-length", 14) == 0) {
                int64_t x = parse_content_length(v, vl);
                if (n_cl++ && x != cl)
                    return "the request has Content-Length fields with different values";
                cl = x;
            }
        }
        p = eol + 1;
    }
    if (n_te && n_cl)
        return "the request has both Transfer-Encoding and Content-Length";
    if (n_te > 1)
        return "the request has more than one Transfer-Encoding field";
    return NULL;
}

/* The framing check for HTTP/1 requests; HTTP/2 frames bodies itself. NULL when fine or
 * when the head cannot be seen. *head_len: the raw head's size (0 if unseen), which counts
 * the fields h2o takes out of the header list (Content-Length, Transfer-Encoding, Expect,
 * Upgrade, Host). */
static const char *http1_framing_conflict(h2o_req_t *hr, size_t *head_len)
{
    *head_len = 0;
    if (hr->version >= 0x200 || !hr->conn->callbacks->get_socket)
        return NULL;
    h2o_socket_t *sock = hr->conn->callbacks->get_socket(hr->conn);
    if (!sock || !sock->input || sock->input->size == 0)
        return NULL;
    return framing_conflict(sock->input->bytes, sock->input->size, head_len);
}

static void dispose_req(void *p)
{
    bs_req_t *req = *(bs_req_t **)p;
    io_thread_t *t = self_thread;
    bs_arena_deinit(&req->arena);
    if (t)
        atomic_fetch_sub_explicit(&t->srv->in_flight, 1, memory_order_relaxed);
}

static int on_req(h2o_handler_t *h, h2o_req_t *hr)
{
    (void)h;
    io_thread_t *t = self_thread;
    bs_server_t *s = t->srv;
    const bs_config_t *cfg = s->cfg;
    bs_req_t **slot = h2o_mem_alloc_shared(&hr->pool, sizeof(bs_req_t *) + sizeof(bs_req_t),
                                           dispose_req);
    bs_req_t *req = (bs_req_t *)(slot + 1);
    *slot = req;
    memset(req, 0, sizeof *req);
    atomic_fetch_add_explicit(&s->in_flight, 1, memory_order_relaxed);
    bs_arena_init(&req->arena, 4096);
    req->start_ns = bs_time_mono_ns();
    req->h2o = hr;
    req->app = s->o.app;
    req->cfg = cfg;
    req->route_index = -1;
    req->err_index = -1;
    req->method = hr->method.base;
    req->method_len = hr->method.len;
    req->path = hr->path.base;
    req->path_len = hr->query_at != SIZE_MAX ? hr->query_at : hr->path.len;
    if (hr->query_at != SIZE_MAX) {
        req->query = hr->path.base + hr->query_at + 1;
        req->query_len = hr->path.len - hr->query_at - 1;
    }
    if (hr->entity.base) {
        req->body = hr->entity.base;
        req->body_len = hr->entity.len;
    }

    /* h2o moves Host (HTTP/1) or :authority (HTTP/2) out of the header list into
     * hr->input.authority; it counts against the budget like any other field. */
    size_t header_bytes = hr->path.len + hr->method.len + 12 + hr->input.authority.len + 8;
    ssize_t rid = -1;
    for (size_t i = 0; i < hr->headers.size; i++) {
        const h2o_header_t *e = &hr->headers.entries[i];
        header_bytes += e->name->len + e->value.len + 4;
        if (e->name->len == 12 && strncasecmp(e->name->base, "x-request-id", 12) == 0)
            rid = (ssize_t)i;
    }
    choose_request_id(req->request_id, rid >= 0 ? &hr->headers.entries[rid].value : NULL, t->loop);
    size_t head_len;
    const char *conflict = http1_framing_conflict(hr, &head_len);
    if (conflict) {
        /* BS_EBADREQ closes the connection: bytes after this body are not read as a request. */
        bs_resp_errorf(req, BS_EBADREQ, NULL, "%s (RFC 9112 section 6.3)", conflict);
        return 0;
    }
    if (head_len > header_bytes)
        header_bytes = head_len;
    if ((int64_t)header_bytes > cfg->max_header_bytes) {
        bs_resp_errorf(req, BS_EHDRTOOBIG, NULL, "request headers are %zu bytes, the limit is %lld",
                       header_bytes, (long long)cfg->max_header_bytes);
        return 0;
    }

    bs_route_param_t params[BS_HTTP_MAX_PARAMS];
    int n_params = 0;
    char allow[128];
    int idx = bs_router_match(s->router, req->method, req->method_len, req->path, req->path_len,
                              params, &n_params, allow, sizeof allow);
    if (idx == BS_ENOTFOUND) {
        bs_resp_errorf(req, BS_ENOTFOUND, NULL, "no route for %.*s %.*s", (int)req->method_len,
                       req->method, (int)(req->path_len > 200 ? 200 : req->path_len), req->path);
        return 0;
    }
    if (idx == BS_EMETHOD) {
        bs_resp_header(req, "allow", allow);
        bs_resp_errorf(req, BS_EMETHOD, NULL, "%.*s is not allowed here; allowed: %s",
                       (int)req->method_len, req->method, allow);
        return 0;
    }
    req->route_index = idx;
    req->route = bs_router_route(s->router, idx);
    req->n_params = n_params > BS_HTTP_MAX_PARAMS ? BS_HTTP_MAX_PARAMS : n_params;
    for (int i = 0; i < req->n_params; i++) {
        req->params[i].name = params[i].name;
        req->params[i].raw = params[i].value;
        req->params[i].raw_len = params[i].len;
        req->params[i].value = decode(&req->arena, params[i].value, params[i].len, 0);
        if (!req->params[i].value ||
            !bs_utf8_valid(req->params[i].value, strlen(req->params[i].value))) {
            bs_resp_errorf(req, BS_EINVAL, params[i].name,
                           "path parameter '%s' is badly encoded (a bad %%-escape, %%00 or "
                           "bytes that are not UTF-8)", params[i].name);
            return 0;
        }
    }
    char bad_query[64];
    if (!query_ok(req, bad_query, sizeof bad_query)) {
        bs_resp_errorf(req, BS_EINVAL, bad_query,
                       "query parameter '%s' is badly encoded (a bad %%-escape, %%00 or bytes "
                       "that are not UTF-8)", bad_query);
        return 0;
    }

    if (req->route->min_role > BS_ROLE_PUBLIC) {
        bs_err_t err;
        if (cfg->no_auth) {
            snprintf(req->who.key_id, sizeof req->who.key_id, "no-auth");
            snprintf(req->who.tenant, sizeof req->who.tenant, "default");
            req->who.role = BS_ROLE_ADMIN;
        } else {
            ssize_t ai = h2o_find_header(&hr->headers, H2O_TOKEN_AUTHORIZATION, -1);
            if (ai < 0) {
                bs_resp_header(req, "www-authenticate", "Bearer");
                bs_resp_errorf(req, BS_EUNAUTH, NULL, "missing Authorization: Bearer <api key>");
                return 0;
            }
            h2o_iovec_t v = hr->headers.entries[ai].value;
            if (v.len < 8 || strncasecmp(v.base, "bearer ", 7) != 0) {
                bs_resp_header(req, "www-authenticate", "Bearer");
                bs_resp_errorf(req, BS_EUNAUTH, NULL, "Authorization must be 'Bearer <api key>'");
                return 0;
            }
            bs_err_clear(&err);
            if (s->o.authenticate(s->o.app, v.base + 7, v.len - 7, &req->who, &err) != 0) {
                bs_resp_header(req, "www-authenticate", "Bearer error=\"invalid_token\"");
                bs_resp_error(req, &err);
                return 0;
            }
            if (req->who.role < req->route->min_role) {
                bs_resp_errorf(req, BS_EFORBID, NULL, "role '%s' cannot do this; it needs '%s' or higher",
                               bs_role_name(req->who.role), bs_role_name(req->route->min_role));
                return 0;
            }
            if (s->o.authorize && s->o.authorize(s->o.app, &req->who, req->route, &err) != 0) {
                bs_resp_error(req, &err);
                return 0;
            }
            double retry = 0;
            if (s->o.rate_limit && s->o.rate_limit(s->o.app, &req->who, &retry) != 0) {
                /* A positive whole number of seconds (RFC 9110 §10.2.3), saturated: a tiny
                 * rate must not overflow the conversion. */
                char ra[32];
                snprintf(ra, sizeof ra, "%d",
                         !(retry >= 1) ? 1 : retry > BS_HTTP_MAX_RETRY_AFTER ? BS_HTTP_MAX_RETRY_AFTER
                                                                          : (int)ceil(retry));
                bs_resp_header(req, "retry-after", ra);
                bs_resp_errorf(req, BS_ERATE, NULL, "rate limit exceeded for this API key; retry in %s s",
                               ra);
                return 0;
            }
        }
    }

    if (req->route->blocking) {
        bs__store_submit(s->store, req);
        return 0;
    }
    req->route->fn(req);
    if (!req->responded && !req->deferred)
        bs_resp_errorf(req, BS_EINTERNAL, NULL, "handler for %s did not respond", req->route->pattern);
    return 0;
}

/* ---- h2o's own error replies -----------------------------------------------------------
 * h2o answers a few request errors itself, before any handler runs: a body over
 * max_request_entity_size (413) and broken chunked encoding or Content-Length (400), as
 * text/plain. It binds such requests to the host's fallback path, whose output filter
 * below turns them into the error envelope with a request id, like every other response. */

typedef struct {
    h2o_ostream_t super;
    h2o_iovec_t body; /* sent with the first chunk; h2o's text is dropped */
} envelope_ostream_t;

static void envelope_send(h2o_ostream_t *self, h2o_req_t *hr, h2o_iovec_t *bufs, size_t bufcnt,
                          h2o_send_state_t state)
{
    (void)bufs;
    (void)bufcnt;
    envelope_ostream_t *o = (envelope_ostream_t *)self;
    h2o_iovec_t b = o->body;
    o->body.len = 0;
    h2o_ostream_send_next(&o->super, hr, &b, b.len ? 1 : 0, state);
}

static void on_setup_h2o_error(h2o_filter_t *self, h2o_req_t *hr, h2o_ostream_t **slot)
{
    int code = hr->res.status == 413 ? BS_ETOOBIG : hr->res.status == 400 ? BS_EBADREQ : 0;
    io_thread_t *t = self_thread;
    if (code && t) {
        char rid[72];
        ssize_t i = h2o_find_header_by_str(&hr->headers, H2O_STRLIT("x-request-id"), -1);
        choose_request_id(rid, i >= 0 ? &hr->headers.entries[i].value : NULL, t->loop);
        char msg[160];
        if (code == BS_ETOOBIG)
            snprintf(msg, sizeof msg, "request body is larger than the limit of %lld bytes",
                     (long long)t->srv->cfg->max_body_bytes);
        else
            snprintf(msg, sizeof msg, "the request body is malformed: %s", hr->res.reason);
        char storage[512];
        bs_buf_t b = BS_BUF_ON(storage);
        size_t path_len = hr->query_at != SIZE_MAX ? hr->query_at : hr->path.len;
        render_error(&b, error_shape(t->srv, hr->path.base, path_len), code, msg, "", rid);
        h2o_iovec_t body = h2o_strdup(&hr->pool, b.data, b.len);
        h2o_iovec_t rid_copy = h2o_strdup(&hr->pool, rid, SIZE_MAX);
        memset(&hr->res.headers, 0, sizeof hr->res.headers);
        h2o_add_header(&hr->pool, &hr->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                       H2O_STRLIT("application/json"));
        h2o_add_header_by_str(&hr->pool, &hr->res.headers, H2O_STRLIT("x-request-id"), 0, NULL,
                              rid_copy.base, rid_copy.len);
        hr->res.content_length = body.len;
        envelope_ostream_t *o = (envelope_ostream_t *)h2o_add_ostream(hr, sizeof *o, slot);
        o->super.do_send = envelope_send;
        o->body = body;
        slot = &o->super.next;
        BS_LOG(BS_LOG_INFO, "http", "%d %s (answered before routing)", hr->res.status, msg);
        bs_buf_free(&b);
    }
    (void)self;
    h2o_setup_next_ostream(hr, slot);
}

/* ---- deferred responses ---------------------------------------------------------------- */

static void deferred_unref(bs_deferred_t *d)
{
    if (atomic_fetch_sub(&d->refs, 1) == 1) {
        free(d->body);
        free(d->ct_copy);
        bs_buf_free(&d->headers);
        free(d);
    }
}

static void deferred_req_gone(void *p)
{
    bs_deferred_t *d = p;
    atomic_store(&d->req_gone, 1);
    deferred_unref(d);
}

int bs__deferred_gone(bs_deferred_t *d) { return atomic_load(&d->req_gone); }
void bs__deferred_drop(bs_deferred_t *d) { deferred_unref(d); }

bs_deferred_t *bs_req_defer(bs_req_t *req)
{
    if (req->worker) /* a store worker's copy: its handler works synchronously */
        return NULL;
    bs_deferred_t *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->thread = self_thread;
    d->req = req;
    atomic_init(&d->refs, 2);
    if (!d->thread || bs_arena_on_cleanup(&req->arena, deferred_req_gone, d) != 0) {
        free(d);
        return NULL;
    }
    req->deferred = 1;
    return d;
}

static void deferred_post(bs_deferred_t *d)
{
    bs_server_t *s = d->thread->srv;
    pthread_rwlock_rdlock(&s->deferred_lock);
    if (d->thread->loop) {
        h2o_multithread_send_message(&d->thread->deferred_rx, &d->super);
        pthread_rwlock_unlock(&s->deferred_lock);
        return;
    }
    pthread_rwlock_unlock(&s->deferred_lock);
    /* The loop is gone (shutdown timed out): drop the responder's reference. */
    deferred_unref(d);
}

void bs_deferred_header(bs_deferred_t *d, const char *name, const char *value)
{
    bs_buf_append(&d->headers, name, strlen(name) + 1);
    bs_buf_append(&d->headers, value, strlen(value) + 1);
}

void bs_deferred_respond_body(bs_deferred_t *d, int status, const char *content_type,
                              const char *body, size_t len)
{
    d->status = status;
    if (content_type && strcmp(content_type, "application/json") == 0)
        d->content_type = "application/json";
    else if (content_type)
        d->content_type = d->ct_copy = strdup(content_type);
    if ((content_type && !d->content_type) || !(d->body = malloc(len + 1))) {
        d->is_error = 1;
        bs_err_set(&d->err, BS_ENOMEM, "out of memory building the response");
    } else {
        memcpy(d->body, body ? body : "", len);
        d->len = len;
    }
    deferred_post(d);
}

void bs_deferred_respond_json(bs_deferred_t *d, int status, const bs_buf_t *body)
{
    if (body->oom) {
        bs_err_t err;
        bs_err_set(&err, BS_ENOMEM, "out of memory building the response");
        return bs_deferred_respond_error(d, &err);
    }
    /* A JSON 204 (a write with nothing to say, DELETE) is sent without a body or type. */
    bs_deferred_respond_body(d, status, status == 204 ? NULL : "application/json", body->data,
                             body->len);
}

void bs_deferred_respond_error(bs_deferred_t *d, const bs_err_t *err)
{
    d->is_error = 1;
    d->err = *err;
    deferred_post(d);
}

void bs_deferred_resume(bs_deferred_t *d)
{
    d->resume = 1;
    deferred_post(d);
}

/* On the request's I/O thread: send what the worker produced, or run the handler again. */
static void on_deferred(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    (void)rx;
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *msg = H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&msg->link);
        bs_deferred_t *d = (bs_deferred_t *)msg;
        if (!atomic_load(&d->req_gone)) {
            /* Headers first: bs_resp_error and bs_resp_body send at once. */
            for (size_t off = 0; !d->resume && !d->headers.oom && off < d->headers.len;) {
                const char *name = d->headers.data + off;
                const char *value = name + strlen(name) + 1;
                bs_resp_header(d->req, name, value);
                off = (size_t)(value + strlen(value) + 1 - d->headers.data);
            }
            if (d->resume) {
                bs_req_t *req = d->req;
                req->deferred = 0;
                req->resumed++;
                req->route->fn(req);
                if (!req->responded && !req->deferred)
                    bs_resp_errorf(req, BS_EINTERNAL, NULL, "handler for %s did not respond",
                                   req->route->pattern);
            } else if (d->is_error) {
                bs_resp_error(d->req, &d->err);
            } else {
                bs_resp_body(d->req, d->status, d->content_type, d->body ? d->body : "", d->len);
            }
        }
        deferred_unref(d);
    }
}

/* ---- work posted to an I/O thread (stream.c) --------------------------------------------- */

static void on_msg(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    (void)rx;
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *msg =
            H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&msg->link);
        bs__http_msg_t *m = (bs__http_msg_t *)msg;
        m->fn(m);
    }
}

int bs__http_post(bs__http_thread_t *t, bs__http_msg_t *m)
{
    bs_server_t *s = t->srv;
    pthread_rwlock_rdlock(&s->deferred_lock);
    if (t->loop) {
        h2o_multithread_send_message(&t->msg_rx, &m->super);
        pthread_rwlock_unlock(&s->deferred_lock);
        return 0;
    }
    pthread_rwlock_unlock(&s->deferred_lock);
    return -1;
}

bs__http_thread_t *bs__http_self(void) { return self_thread; }
h2o_loop_t *bs__http_thread_loop(bs__http_thread_t *t) { return t->loop; }
bs_server_t *bs__http_thread_server(bs__http_thread_t *t) { return t->srv; }
void **bs__http_thread_streams(bs__http_thread_t *t) { return &t->streams; }
bs__stream_stats_t *bs__http_stream_stats(bs_server_t *s) { return &s->stream_stats; }

int bs__http_stopping(bs__http_thread_t *t)
{
    return atomic_load_explicit(&t->srv->stop, memory_order_relaxed);
}

void bs__http_start_head(bs_req_t *req, int status, const char *content_type)
{
    h2o_req_t *hr = req->h2o;
    req->responded = 1;
    hr->res.status = status;
    hr->res.reason = reason_phrase(status);
    if (self_thread && atomic_load_explicit(&self_thread->srv->stop, memory_order_relaxed))
        hr->http1_is_persistent = 0;
    if (content_type)
        h2o_add_header(&hr->pool, &hr->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                       h2o_strdup(&hr->pool, content_type, SIZE_MAX).base, strlen(content_type));
    h2o_add_header_by_str(&hr->pool, &hr->res.headers, "x-request-id", 12, 0, NULL,
                          req->request_id, strlen(req->request_id));
    record(req, status);
}

/* ---- listeners and loops --------------------------------------------------------------- */

static void on_sock_close(void *data)
{
    io_thread_t *t = data;
    t->conns--;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    io_thread_t *t = listener->data;
    if (err)
        return;
    for (int i = 0; i < 64; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (!sock)
            break;
        /* Each thread gets an equal share of the connection budget. */
        int64_t share = t->srv->cfg->max_connections / t->srv->n_threads;
        if (share < 1)
            share = 1;
        if (t->conns >= share) {
            h2o_socket_close(sock);
            continue;
        }
        t->conns++;
        t->m.conns_total++;
        sock->on_close.cb = on_sock_close;
        sock->on_close.data = t;
        h2o_accept(&t->accept_ctx, sock);
    }
}

static int parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *len, bs_err_t *err)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (!colon)
        return bs_err_setf(err, BS_EINVAL, "listen", "listen address '%s' must be HOST:PORT", listen);
    size_t hl = (size_t)(colon - listen);
    if (hl >= sizeof host)
        return bs_err_setf(err, BS_EINVAL, "listen", "listen host is too long");
    memcpy(host, listen, hl);
    host[hl] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 0 || port > 65535)
        return bs_err_setf(err, BS_EINVAL, "listen", "listen port in '%s' must be 0-65535", listen);
    memset(ss, 0, sizeof *ss);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1)
            return bs_err_setf(err, BS_EINVAL, "listen", "bad IPv6 address in '%s'", listen);
        *len = sizeof *a6;
        return 0;
    }
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (hl == 0 || strcmp(host, "*") == 0)
        a->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
        return bs_err_setf(err, BS_EINVAL, "listen", "bad IPv4 address in '%s'", listen);
    *len = sizeof *a;
    return 0;
}

static int open_listener(struct sockaddr_storage *ss, socklen_t len, bs_err_t *err)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return bs_err_set(err, BS_EIO, "socket: %s", strerror(errno));
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    if (bind(fd, (struct sockaddr *)ss, len) != 0 || listen(fd, H2O_SOMAXCONN) != 0) {
        int e = errno;
        close(fd);
        return bs_err_set(err, BS_EIO, "cannot listen: %s", strerror(e));
    }
    return fd;
}

/* Fails with a clear error when another socket holds the address. The per-thread
 * listeners set SO_REUSEPORT, and Linux lets any process of the same user join such a
 * group: a second server (another data directory, perhaps --no-auth) would start and
 * take a share of the connections and the keys they carry. A bind without SO_REUSEPORT
 * fails with EADDRINUSE while any socket is bound to the address, so this probe runs
 * before the group is formed. SO_REUSEADDR keeps a restart possible while connections of
 * the previous run linger in TIME_WAIT; on Linux it does not allow sharing a listening
 * address. (A process that binds between the probe and our listeners is not caught.) */
static int probe_address_free(const struct sockaddr_storage *ss, socklen_t len,
                              const char *listen_addr, bs_err_t *err)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return bs_err_set(err, BS_EIO, "socket: %s", strerror(errno));
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    int rc = bind(fd, (const struct sockaddr *)ss, len), e = errno;
    close(fd);
    if (rc == 0)
        return 0;
    if (e == EADDRINUSE)
        return bs_err_setf(err, BS_EIO, "listen",
                           "address %s is already in use by another process (another basalt "
                           "serve?); stop it or choose another --listen",
                           listen_addr);
    return bs_err_set(err, BS_EIO, "cannot bind %s: %s", listen_addr, strerror(e));
}

static void *thread_main(void *arg)
{
    io_thread_t *t = arg;
    bs_server_t *s = t->srv;
    self_thread = t;
    h2o_evloop_t *loop = h2o_evloop_create();
    h2o_context_init(&t->ctx, loop, &s->global);
    t->accept_ctx.ctx = &t->ctx;
    t->accept_ctx.hosts = s->global.hosts;
    h2o_multithread_register_receiver(t->ctx.queue, &t->deferred_rx, on_deferred);
    h2o_multithread_register_receiver(t->ctx.queue, &t->msg_rx, on_msg);
    pthread_rwlock_wrlock(&s->deferred_lock);
    t->loop = loop; /* deferred completions may be posted from now on */
    pthread_rwlock_unlock(&s->deferred_lock);
    t->rng = (uint32_t)(bs_time_mono_ns() ^ (uint64_t)t->index * 2654435761u);
    t->listener = h2o_evloop_socket_create(t->loop, t->listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    t->listener->data = t;
    h2o_socket_read_start(t->listener, on_accept);
    bs_rcu_register();
    while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
        h2o_evloop_run(t->loop, 100);
        bs_rcu_quiescent(); /* between iterations no handler holds a snapshot */
    }
    bs__stream_shutdown(t); /* producers hear of it now, while the rest still runs */
    h2o_socket_read_stop(t->listener);
    h2o_socket_close(t->listener);
    t->listener = NULL;
    h2o_context_request_shutdown(&t->ctx);
    /* h2o 2.2.5 does not close idle HTTP/1 keep-alive connections on shutdown. The
     * request timer is re-armed on every read, so with a short timeout idle
     * connections go within it while an upload that keeps sending (a packet at
     * least every second) continues. */
    if (t->ctx.http1.req_timeout.timeout > 1000)
        t->ctx.http1.req_timeout.timeout = 1000;
    uint64_t deadline = bs_time_mono_ns() + (uint64_t)s->cfg->shutdown_timeout_ms * 1000000u;
    while ((t->conns > 0 || atomic_load(&s->in_flight) > 0) && bs_time_mono_ns() < deadline) {
        h2o_evloop_run(t->loop, 10);
        bs_rcu_quiescent();
    }
    bs_rcu_unregister();
    /* The loop and context are not disposed: h2o 2.2.5 asserts that no timer is
     * armed, which connections still open after the timeout violate. The process
     * exits right after; tests/api/lsan.supp covers what h2o keeps. */
    pthread_rwlock_wrlock(&s->deferred_lock);
    t->loop = NULL;
    pthread_rwlock_unlock(&s->deferred_lock);
    h2o_multithread_unregister_receiver(t->ctx.queue, &t->deferred_rx);
    h2o_multithread_unregister_receiver(t->ctx.queue, &t->msg_rx);
    return NULL;
}

bs_server_t *bs_server_new(const bs_server_opts_t *opts, bs_err_t *err)
{
    bs_server_t *s = calloc(1, sizeof *s);
    if (!s) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    s->o = *opts;
    s->cfg = opts->cfg;
    pthread_rwlock_init(&s->deferred_lock, NULL);
    s->router = bs_router_new(opts->routes, opts->n_routes, err);
    if (!s->router) {
        free(s);
        return NULL;
    }
    int n = s->cfg->threads > 0 ? s->cfg->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    s->n_threads = n;
    s->threads = calloc((size_t)n, sizeof *s->threads);
    h2o_config_init(&s->global);
    s->global.max_request_entity_size = (size_t)s->cfg->max_body_bytes;
    s->global.http1.req_timeout = (uint64_t)s->cfg->idle_timeout_ms;
    s->global.http2.idle_timeout = (uint64_t)s->cfg->idle_timeout_ms;
    /* Cleartext HTTP/2 (prior knowledge and Upgrade: h2c; one switch in h2o 2.2.5) is off
     * unless h2c is set: h2o answers an HTTP/2 body over max_request_entity_size with
     * RST_STREAM(REFUSED_STREAM) before any handler or filter runs (lib/http2/connection.c,
     * handle_data_frame), which clients retry instead of showing a 413. Without it such a
     * body gets the 413 envelope over HTTP/1.1 like any other. */
    s->global.http1.upgrade_to_http2 = s->cfg->h2c ? 1 : 0;
    /* No Server header: h2o formats it with sprintf on every response, and naming the
     * software helps nobody but scanners. */
    s->global.server_name = h2o_iovec_init(H2O_STRLIT(""));
    s->host = h2o_config_register_host(&s->global, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(s->host, "/", 0);
    h2o_filter_t *envelope = h2o_create_filter(&s->host->fallback_path, sizeof *envelope);
    envelope->on_setup_ostream = on_setup_h2o_error;

    struct sockaddr_storage ss;
    socklen_t sl = 0;
    if (parse_listen(s->cfg->listen, &ss, &sl, err) != 0)
        goto fail;
    if ((ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                  : ((struct sockaddr_in *)&ss)->sin_port) != 0 &&
        probe_address_free(&ss, sl, s->cfg->listen, err) != 0)
        goto fail;
    size_t routes_rows = (size_t)opts->n_routes + 1;
    for (int i = 0; i < n; i++) {
        io_thread_t *t = &s->threads[i];
        t->srv = s;
        t->index = i;
        t->listen_fd = -1;
        t->m.counts = calloc(routes_rows * BS__HTTP_N_STATUS, sizeof(uint64_t));
        t->m.hist = calloc(routes_rows * (BS__HTTP_N_BUCKETS + 1), sizeof(uint64_t));
        t->m.sum_ns = calloc(routes_rows, sizeof(uint64_t));
        int fd = open_listener(&ss, sl, err);
        if (fd < 0)
            goto fail;
        t->listen_fd = fd;
        if (i == 0) {
            struct sockaddr_storage bound;
            socklen_t bl = sizeof bound;
            getsockname(fd, (struct sockaddr *)&bound, &bl);
            s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                       : ((struct sockaddr_in *)&bound)->sin_port);
            if (ss.ss_family == AF_INET6)
                ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)s->port);
            else
                ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)s->port);
        }
    }
    for (int i = 0; i < opts->n_routes; i++)
        if (opts->routes[i].blocking) {
            if (!(s->store = bs__store_new(s->cfg->store_threads, s->cfg->store_queue, err)))
                goto fail;
            break;
        }
    /* One handler for every thread; on_req finds its thread through self_thread. */
    h2o_handler_t *h = h2o_create_handler(path, sizeof *h);
    h->on_req = on_req;
    return s;
fail:
    bs_server_free(s);
    return NULL;
}

int bs_server_run(bs_server_t *s)
{
    /* Each thread builds its own loop and context (thread_main): h2o keeps per-thread
     * buffer recyclers, so state made on one thread must not be used on another. */
    for (int i = 0; i < s->n_threads; i++)
        s->threads[i].started = 1;
    for (int i = 0; i < s->n_threads; i++)
        pthread_create(&s->threads[i].tid, NULL, thread_main, &s->threads[i]);
    for (int i = 0; i < s->n_threads; i++)
        pthread_join(s->threads[i].tid, NULL);
    return 0;
}

void bs_server_stop(bs_server_t *s) { atomic_store(&s->stop, 1); }

void bs_server_free(bs_server_t *s)
{
    if (!s)
        return;
    /* First: queued jobs complete tokens that point into s->threads. */
    bs__store_free(s->store);
    for (int i = 0; s->threads && i < s->n_threads; i++) {
        io_thread_t *t = &s->threads[i];
        if (t->listen_fd >= 0 && !t->started)
            close(t->listen_fd);
        free(t->m.counts);
        free(t->m.hist);
        free(t->m.sum_ns);
    }
    free(s->threads);
    bs_router_free(s->router);
    free(s);
}

int bs_server_port(const bs_server_t *s) { return s->port; }
const bs_router_t *bs_server_router(const bs_server_t *s) { return s->router; }
int64_t bs_server_in_flight(const bs_server_t *s) { return atomic_load(&s->in_flight); }

int bs__server_threads(bs_server_t *s) { return s->n_threads; }
bs__store_t *bs__server_store(bs_server_t *s) { return s->store; }
bs__http_metrics_t *bs__server_thread_metrics(bs_server_t *s, int i) { return &s->threads[i].m; }
int64_t bs__server_conns(bs_server_t *s)
{
    int64_t n = 0;
    for (int i = 0; i < s->n_threads; i++)
        n += __atomic_load_n(&s->threads[i].conns, __ATOMIC_RELAXED);
    return n;
}
