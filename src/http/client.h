/*
 * The outbound HTTP client (DESIGN.md "Outbound calls"), on libcurl: one
 * mechanism for every call basalt makes — webhooks, later upstream LLM
 * providers, embedding services and ingestion sources — and the CLI's calls.
 *
 * bs_httpc_t: a client thread running a curl multi handle. Requests are
 * queued (bounded: a full queue refuses with BS_EOVERLOAD) and run
 * concurrently with per-request timeouts, connection reuse, TLS, and an
 * optional streaming read (SSE); completion is a callback on the client
 * thread. An unreachable peer costs a timeout, never a blocked caller.
 *
 * bs_http_request: a blocking request (libcurl easy) for the CLI and tests.
 */
#ifndef BS_HTTP_CLIENT_H
#define BS_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"

typedef struct {
    int status;
    bs_buf_t body;
} bs_http_response_t;

/*
 * Sends method url (http:// or https://) with optional headers (NULL-terminated
 * "Name: value" list), body (borrowed, may be NULL) and waits for the response.
 * timeout_ms (0: 60000) bounds each wait, not the whole exchange: connecting, and any
 * stretch without a byte moving (a long upload that keeps moving is fine). Redirects are
 * not followed; proxies come from the environment (http_proxy, https_proxy, no_proxy).
 * Returns 0 and fills resp (free resp->body with bs_buf_free), or BS_EIO ("cannot connect
 * to HOST:PORT: <strerror>", "cannot resolve HOST: …", "timed out waiting for HOST:PORT")
 * / BS_EINVAL (URL, method, a header with a CR, LF or other control character) with err
 * set. Thread-safe.
 */
int bs_http_request(const char *method, const char *url, const char *const *headers,
                    const void *body, size_t body_len, int timeout_ms, bs_http_response_t *resp,
                    bs_err_t *err);

/* 0 if url is an http:// or https:// URL with a host that curl parses; else BS_EINVAL
 * naming it. */
int bs_http_url_check(const char *url, bs_err_t *err);

/* ---- the asynchronous client ------------------------------------------------------------ */

typedef struct bs_httpc bs_httpc_t;

typedef struct {
    int max_queue;       /* requests queued or in flight; 0: 4096 */
    int max_connections; /* total open connections; 0: 64 */
    const char *user_agent; /* copied; NULL: "basalt/<version>" */
    /* open connections to one host (so one slow receiver cannot take every connection;
     * more requests to it wait for one of its own); 0: max_connections / 2 */
    int max_host_connections;
} bs_httpc_opts_t; /* o may be NULL: every default */

/* Starts the client thread. NULL with err. */
bs_httpc_t *bs_httpc_new(const bs_httpc_opts_t *o, bs_err_t *err);
/* Fails what is queued or in flight (callbacks run with BS_EUNAVAIL, on the client thread,
 * before this returns), stops, frees. NULL is a no-op. Never call it from a callback. */
void bs_httpc_free(bs_httpc_t *c);

typedef struct {
    const char *method;          /* "POST" … */
    const char *url;             /* http:// or https:// */
    const char *const *headers;  /* NULL-terminated "Name: value" list, or NULL; each one
                                    line (a CR, LF or other control character: BS_EINVAL) */
    const void *body;            /* may be NULL */
    size_t body_len;
    int64_t timeout_ms;          /* the whole exchange; 0: 15000 */
    int64_t connect_timeout_ms;  /* 0: min(timeout, 5000) */
    size_t max_response_bytes;   /* body kept for the callback; more is discarded (counted);
                                    0: 64 KiB */
    /* Optional streaming read: called on the client thread with each chunk of a 2xx
     * response's body as it arrives (then the body is not kept; another status's body is
     * kept for done as without it); return nonzero to abort the transfer (done then sees
     * BS_EIO "transfer aborted by the reader"). */
    int (*on_data)(void *ud, const char *p, size_t n);
} bs_httpc_req_t; /* every field is copied by bs_httpc_submit */

typedef struct {
    int code;                /* 0: an HTTP response came; else BS_EUNAVAIL (connect, DNS,
                                TLS), BS_EIO (timeout: error says so), BS_EOVERLOAD */
    const char *error;       /* transport error text when code != 0 */
    int timed_out;           /* 1 when the timeout ended it */
    int status;              /* HTTP status, 0 without a response */
    const char *body;        /* up to max_response_bytes; NUL-terminated */
    size_t body_len;
    size_t body_total;       /* bytes the peer sent */
    const char *retry_after; /* the Retry-After header's value, or NULL */
    const char *content_type; /* or NULL */
    double elapsed_ms;
} bs_httpc_resp_t; /* borrowed: valid during the callback only */

typedef void (*bs_httpc_done_cb)(void *ud, const bs_httpc_resp_t *resp);

/* Queues a request; copies it. 0 (done will be called exactly once, on the client thread:
 * keep it short, every transfer waits meanwhile; it may submit again), BS_EINVAL (URL
 * scheme, method, a header line with a control character), BS_EOVERLOAD (queue full) or BS_EUNAVAIL (shutting down): done never
 * called. Thread-safe. */
int bs_httpc_submit(bs_httpc_t *c, const bs_httpc_req_t *r, bs_httpc_done_cb done, void *ud,
                    bs_err_t *err);

/* Milliseconds a Retry-After value asks for (delta-seconds or an HTTP-date, RFC 9110
 * §10.2.3) from now_ms, or -1 when it is not one. */
int64_t bs_http_retry_after_ms(const char *value, int64_t now_ms);

typedef struct {
    uint64_t submitted, completed, failed, timeouts, rejected;
    int in_flight, queued;
} bs_httpc_stats_t;
/* Counters since start: submitted (accepted), completed (an HTTP response came), failed
 * (a transport error, timeouts included), timeouts, rejected (queue full); in_flight and
 * queued now. c NULL: zeros. */
void bs_httpc_stats(bs_httpc_t *c, bs_httpc_stats_t *out);
/* basalt_http_client_* in Prometheus text format from bs_httpc_stats. c NULL: nothing. */
void bs_httpc_metrics(bs_httpc_t *c, bs_buf_t *b);

#endif
