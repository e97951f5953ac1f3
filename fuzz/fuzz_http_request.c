/*
 * libFuzzer target for the request path without sockets: the bytes are parsed as an
 * HTTP/1.1 request with the picohttpparser that h2o bundles (the parser the server uses;
 * libh2o-evloop exports phr_*, Debian ships no header, so the two prototypes are declared
 * here), a chunked body is decoded with phr_decode_chunked, the path is matched with
 * bs_router over the real route table (bs_api_routes), query parameters are decoded with
 * bs_req_query, and the body goes through bs_json_parse with the default depth limit.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include "api/api.h"
#include "base/json.h"
#include "http/http.h"

struct phr_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};
int phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len,
                      const char **path, size_t *path_len, int *minor_version,
                      struct phr_header *headers, size_t *num_headers, size_t last_len);
struct phr_chunked_decoder {
    size_t bytes_left_in_chunk;
    char consume_trailer;
    char _hex_count;
    char _state;
};
ssize_t phr_decode_chunked(struct phr_chunked_decoder *decoder, char *buf, size_t *bufsz);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "check failed: %s (%s:%d)\n", #c, __FILE__, __LINE__);                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bs_router_t *router;
static const bs_route_t *routes;
static int n_routes;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    bs_err_t err;
    routes = bs_api_routes(&n_routes);
    router = bs_router_new(routes, n_routes, &err);
    if (!router) {
        fprintf(stderr, "router: %s\n", err.msg);
        abort();
    }
    return 0;
}

static int header_is(const struct phr_header *h, const char *name)
{
    return h->name && h->name_len == strlen(name) && strncasecmp(h->name, name, h->name_len) == 0;
}

static void route_and_parse(const char *method, size_t method_len, const char *target,
                            size_t target_len, const char *body, size_t body_len)
{
    const char *q = memchr(target, '?', target_len);
    size_t path_len = q ? (size_t)(q - target) : target_len;
    bs_route_param_t params[BS_HTTP_MAX_PARAMS];
    int n_params = 0;
    char allow[128];
    int idx = bs_router_match(router, method, method_len, target, path_len, params, &n_params,
                              allow, sizeof allow);
    CHECK(idx == BS_ENOTFOUND || idx == BS_EMETHOD || (idx >= 0 && idx < n_routes));
    CHECK(memchr(allow, '\0', sizeof allow) != NULL);
    if (idx >= 0) {
        int n = n_params < BS_HTTP_MAX_PARAMS ? n_params : BS_HTTP_MAX_PARAMS;
        for (int i = 0; i < n; i++) {
            CHECK(params[i].value >= target && params[i].value + params[i].len <= target + path_len);
            CHECK(params[i].len > 0);
        }
    }

    /* Query decoding through the server's own helper, on a request that has only an arena. */
    bs_req_t req;
    memset(&req, 0, sizeof req);
    bs_arena_init(&req.arena, 1024);
    if (q) {
        req.query = q + 1;
        req.query_len = target_len - path_len - 1;
        static const char *const names[] = {"limit", "cursor", "tenant", "", "a"};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            const char *v = bs_req_query(&req, names[i]);
            if (v)
                CHECK(strlen(v) <= req.query_len);
        }
    }
    bs_err_t err;
    cJSON *j = bs_json_parse_arena(&req.arena, body, body_len, 64, &err);
    if (j && cJSON_IsObject(j)) {
        static const char *const allowed[] = {"name", "role", "tenant", NULL};
        bs_json_reject_unknown(j, allowed, &err);
        const char *s;
        bs_json_get_str(j, "name", 0, &s, &err);
        int64_t iv;
        bs_json_get_int(j, "ttl_seconds", 0, 1, 1000, &iv, &err);
    }
    bs_arena_deinit(&req.arena);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    const char *method, *path;
    size_t method_len, path_len, num_headers = 32;
    int minor;
    struct phr_header headers[32];
    int rc = phr_parse_request(buf, size, &method, &method_len, &path, &path_len, &minor, headers,
                               &num_headers, 0);
    if (rc > 0) {
        CHECK((size_t)rc <= size && num_headers <= 32);
        char *body = buf + rc;
        size_t body_len = size - (size_t)rc;
        int chunked = 0;
        for (size_t i = 0; i < num_headers; i++)
            if (header_is(&headers[i], "transfer-encoding") && headers[i].value_len >= 7 &&
                strncasecmp(headers[i].value + headers[i].value_len - 7, "chunked", 7) == 0)
                chunked = 1;
        if (chunked) {
            /* zeroed and padded in case the bundled decoder's struct is larger */
            union {
                struct phr_chunked_decoder d;
                char pad[64];
            } dec;
            memset(&dec, 0, sizeof dec);
            dec.d.consume_trailer = 1;
            size_t n = body_len;
            ssize_t r = phr_decode_chunked(&dec.d, body, &n);
            CHECK(n <= body_len);
            body_len = r >= -1 ? n : 0;
        }
        route_and_parse(method, method_len, path, path_len, body, body_len);
    } else {
        /* Not HTTP: still exercise the router and JSON reader on the raw bytes. */
        size_t split = size / 2;
        route_and_parse("GET", 3, buf, split, buf + split, size - split);
    }
    free(buf);
    return 0;
}
