/*
 * Error codes and the error value every fallible function fills.
 *
 * One X-macro table (BS_ERR_MAP) lists every code with its stable API string,
 * its HTTP status and a description; the enum, the name lookup and the status
 * mapping are generated from it (libuv's UV_ERRNO_MAP does the same).
 * bs_err_t holds fixed buffers so reporting an error never allocates.
 */
#ifndef BS_BASE_ERR_H
#define BS_BASE_ERR_H

#include <stdarg.h>
#include <stddef.h>

/* XX(enum suffix, api string, http status, description) */
#define BS_ERR_MAP(XX)                                                                             \
    XX(EINVAL, "invalid_input", 400, "the request or a value in it is invalid")                   \
    XX(EPARSE, "malformed_json", 400, "the body is not valid JSON")                               \
    XX(EDEPTH, "json_too_deep", 400, "JSON nesting exceeds the configured depth")                 \
    XX(EBADREQ, "bad_request", 400, "the HTTP request is malformed")                              \
    XX(EUNAUTH, "unauthorized", 401, "missing, invalid or expired API key")                       \
    XX(EFORBID, "forbidden", 403, "the API key's role does not allow this")                       \
    XX(ENOTFOUND, "not_found", 404, "no such resource or route")                                  \
    XX(EMETHOD, "method_not_allowed", 405, "the route does not accept this method")               \
    XX(ECONFLICT, "conflict", 409, "the resource exists or is in a conflicting state")            \
    XX(ETOOBIG, "payload_too_large", 413, "the body or a size in it exceeds a limit")             \
    XX(EMEDIA, "unsupported_media_type", 415, "the content type is not accepted")                 \
    XX(ERATE, "rate_limited", 429, "too many requests for this API key")                          \
    XX(EHDRTOOBIG, "headers_too_large", 431, "request headers exceed the configured limit")       \
    XX(EINTERNAL, "internal", 500, "an internal error occurred")                                  \
    XX(EIO, "io_error", 500, "a storage operation failed")                                        \
    XX(ENOMEM, "out_of_memory", 503, "memory could not be allocated")                             \
    XX(EUNAVAIL, "unavailable", 503, "the server is not ready or is overloaded")                  \
    XX(EOVERLOAD, "overloaded", 503, "a memory budget is full right now; retry after Retry-After")

typedef enum {
    BS_OK = 0,
#define BS_ERR_ENUM(name, str, status, desc) BS_##name,
    BS_ERR_FIRST_ = -1000,
    BS_ERR_MAP(BS_ERR_ENUM)
#undef BS_ERR_ENUM
    BS_ERR_LAST_
} bs_errcode_t;

#define BS_ERR_COUNT (BS_ERR_LAST_ - BS_ERR_FIRST_ - 1)

typedef struct {
    int code;        /* 0 or a negative bs_errcode_t */
    char field[64];  /* the offending field, "" when none */
    char msg[256];   /* lower-case message naming the limit and the value */
} bs_err_t;

/* Sets err (if non-NULL) and returns code, so `return bs_err_set(...)` reads well. */
int bs_err_set(bs_err_t *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Like bs_err_set, also naming the offending field. */
int bs_err_setf(bs_err_t *err, int code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void bs_err_clear(bs_err_t *err);

/* Stable API string ("invalid_input") of a code; "internal" for unknown codes. */
const char *bs_err_name(int code);
/* HTTP status of a code; 500 for unknown codes. */
int bs_err_status(int code);
const char *bs_err_desc(int code);
/* Dense index 0..BS_ERR_COUNT-1 of a code (for per-code counters); -1 if unknown. */
int bs_err_index(int code);

#endif
