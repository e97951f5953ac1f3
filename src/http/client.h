/*
 * A small blocking HTTP/1.1 client for the CLI (`basalt model push`,
 * `basalt predict` …): one request per connection, plain http:// URLs,
 * Content-Length or chunked responses. Not for the server's hot path.
 */
#ifndef BS_HTTP_CLIENT_H
#define BS_HTTP_CLIENT_H

#include <stddef.h>

#include "base/buf.h"
#include "base/err.h"

typedef struct {
    int status;
    bs_buf_t body;
} bs_http_response_t;

/*
 * Sends method url with optional headers (NULL-terminated "Name: value" list),
 * body (borrowed, may be NULL) and waits for the response (timeout_ms for each
 * socket operation). Returns 0 and fills resp (free resp->body with bs_buf_free),
 * or BS_EIO / BS_EINVAL with err set.
 */
int bs_http_request(const char *method, const char *url, const char *const *headers,
                    const void *body, size_t body_len, int timeout_ms, bs_http_response_t *resp,
                    bs_err_t *err);

#endif
