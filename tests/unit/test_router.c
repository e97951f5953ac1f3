/* Router: literal and parameter segments, a rest parameter, 404 vs 405 with the Allow
 * list, HEAD served by GET, bad patterns, and the real route table compiling. */
#include "test_common.h"

#include "api/api.h"
#include "http/http.h"

static void h(bs_req_t *req) { (void)req; }

static const bs_route_t routes[] = {
    {"GET", "/", h, BS_ROLE_PUBLIC, NULL, NULL, NULL, NULL, 0, BS_ROUTE_INLINE},
    {"GET", "/v1/models", h, BS_ROLE_VIEWER, NULL, NULL, NULL, NULL, 0, BS_ROUTE_INLINE},
    {"POST", "/v1/models", h, BS_ROLE_VIEWER, NULL, NULL, NULL, NULL, 0, BS_ROUTE_INLINE},
    {"GET", "/v1/models/{name}", h, BS_ROLE_VIEWER, NULL, NULL, NULL, NULL, 0, BS_ROUTE_INLINE},
    {"DELETE", "/v1/models/{name}", h, BS_ROLE_VIEWER, NULL, NULL, NULL, NULL, 0, BS_ROUTE_INLINE},
    {"PUT", "/v1/models/{name}/versions/{version}", h, BS_ROLE_VIEWER, NULL, NULL, NULL, NULL, 0, BS_ROUTE_INLINE},
    {"GET", "/files/{path*}", h, BS_ROLE_VIEWER, NULL, NULL, NULL, NULL, 0, BS_ROUTE_INLINE},
};
#define N ((int)(sizeof routes / sizeof routes[0]))

static bs_router_t *r;

static int setup(void **state)
{
    (void)state;
    bs_err_t err;
    r = bs_router_new(routes, N, &err);
    return r ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    bs_router_free(r);
    return 0;
}

static int match(const char *method, const char *path, bs_route_param_t *p, int *np, char *allow)
{
    char local[128];
    return bs_router_match(r, method, strlen(method), path, strlen(path), p, np,
                           allow ? allow : local, 128);
}

static void assert_param(const bs_route_param_t *p, const char *name, const char *value)
{
    assert_string_equal(p->name, name);
    assert_int_equal(p->len, strlen(value));
    assert_memory_equal(p->value, value, p->len);
}

static void test_literals(void **state)
{
    (void)state;
    int np = -1;
    bs_route_param_t p[BS_HTTP_MAX_PARAMS];
    assert_int_equal(match("GET", "/", p, &np, NULL), 0);
    assert_int_equal(match("GET", "/v1/models", p, &np, NULL), 1);
    assert_int_equal(np, 0);
    assert_int_equal(match("POST", "/v1/models", p, &np, NULL), 2);
    assert_int_equal(match("GET", "/v1/model", p, &np, NULL), BS_ENOTFOUND);
    assert_int_equal(match("GET", "/v1/modelsx", p, &np, NULL), BS_ENOTFOUND);
    assert_int_equal(match("GET", "/v1", p, &np, NULL), BS_ENOTFOUND);
    assert_int_equal(match("GET", "", p, &np, NULL), BS_ENOTFOUND);
    assert_int_equal(match("GET", "//", p, &np, NULL), BS_ENOTFOUND);
    assert_int_equal(match("GET", "/v1/models/", p, &np, NULL), BS_ENOTFOUND); /* empty param */
    assert_int_equal(match("get", "/v1/models", p, &np, NULL), BS_EMETHOD);   /* case matters */
}

static void test_params(void **state)
{
    (void)state;
    int np = -1;
    bs_route_param_t p[BS_HTTP_MAX_PARAMS];
    assert_int_equal(match("GET", "/v1/models/iris", p, &np, NULL), 3);
    assert_int_equal(np, 1);
    assert_param(&p[0], "name", "iris");
    assert_int_equal(match("PUT", "/v1/models/a%2Fb/versions/7", p, &np, NULL), 5);
    assert_int_equal(np, 2);
    assert_param(&p[0], "name", "a%2Fb"); /* not decoded by the router */
    assert_param(&p[1], "version", "7");
    assert_int_equal(match("PUT", "/v1/models/a/versions/7/extra", p, &np, NULL), BS_ENOTFOUND);
    assert_int_equal(match("GET", "/v1/models/a/b", p, &np, NULL), BS_ENOTFOUND);
}

static void test_rest_param(void **state)
{
    (void)state;
    int np = -1;
    bs_route_param_t p[BS_HTTP_MAX_PARAMS];
    assert_int_equal(match("GET", "/files/a/b/c.txt", p, &np, NULL), 6);
    assert_int_equal(np, 1);
    assert_param(&p[0], "path", "a/b/c.txt");
    assert_int_equal(match("GET", "/files/x", p, &np, NULL), 6);
    assert_param(&p[0], "path", "x");
    assert_int_equal(match("GET", "/files/", p, &np, NULL), BS_ENOTFOUND);
    assert_int_equal(match("GET", "/files", p, &np, NULL), BS_ENOTFOUND);
}

static void test_405_allow(void **state)
{
    (void)state;
    char allow[128];
    assert_int_equal(match("PATCH", "/v1/models", NULL, NULL, allow), BS_EMETHOD);
    assert_string_equal(allow, "GET, POST");
    assert_int_equal(match("POST", "/v1/models/iris", NULL, NULL, allow), BS_EMETHOD);
    assert_string_equal(allow, "GET, DELETE");
    assert_int_equal(match("GET", "/v1/models/x/versions/1", NULL, NULL, allow), BS_EMETHOD);
    assert_string_equal(allow, "PUT");
    /* small allow buffers are never overrun */
    char tiny[4];
    memset(tiny, 'Z', sizeof tiny);
    assert_int_equal(bs_router_match(r, "PATCH", 5, "/v1/models", 10, NULL, NULL, tiny, sizeof tiny),
                     BS_EMETHOD);
    assert_true(memchr(tiny, '\0', sizeof tiny) != NULL);
}

static void test_head_is_get(void **state)
{
    (void)state;
    int np = -1;
    bs_route_param_t p[BS_HTTP_MAX_PARAMS];
    assert_int_equal(match("HEAD", "/v1/models", p, &np, NULL), 1);
    assert_int_equal(match("HEAD", "/v1/models/iris", p, &np, NULL), 3);
    assert_param(&p[0], "name", "iris");
    char allow[128];
    assert_int_equal(match("HEAD", "/v1/models/x/versions/1", NULL, NULL, allow), BS_EMETHOD);
}

static void test_many_params_bounded(void **state)
{
    (void)state;
    static const bs_route_t deep[] = {
        {"GET", "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}/{j}", h, BS_ROLE_PUBLIC, NULL, NULL, NULL, NULL, 0, BS_ROUTE_INLINE},
    };
    bs_err_t err;
    bs_router_t *d = bs_router_new(deep, 1, &err);
    assert_non_null(d);
    bs_route_param_t p[BS_HTTP_MAX_PARAMS];
    int np = 0;
    char allow[64];
    const char *path = "/1/2/3/4/5/6/7/8/9/10";
    assert_int_equal(bs_router_match(d, "GET", 3, path, strlen(path), p, &np, allow, sizeof allow), 0);
    /* more parameters than slots: the count says so, p is not overrun (ASan) */
    assert_true(np >= BS_HTTP_MAX_PARAMS);
    bs_router_free(d);
}

static void test_bad_patterns(void **state)
{
    (void)state;
    const char *bad[] = {"no-slash", "/a//b", "/a/", "/1/2/3/4/5/6/7/8/9/10/11/12/13"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bs_route_t one = {"GET", bad[i], h, BS_ROLE_PUBLIC, NULL, NULL, NULL, NULL, 0, BS_ROUTE_INLINE};
        bs_err_t err;
        bs_err_clear(&err);
        bs_router_t *x = bs_router_new(&one, 1, &err);
        assert_null(x);
        assert_int_equal(err.code, BS_EINVAL);
    }
    bs_router_free(NULL);
}

/* A literal segment wins over a parameter in the same place, whatever the table order:
 * /v1/webhooks/deliveries is not the webhook named "deliveries". */
static void test_literal_beats_param(void **state)
{
    (void)state;
    static const bs_route_t t[] = {
        {"GET", "/v1/webhooks/{name}", h, BS_ROLE_VIEWER, NULL, NULL, NULL, NULL, 0, 0},
        {"GET", "/v1/webhooks/{name}/secret", h, BS_ROLE_VIEWER, NULL, NULL, NULL, NULL, 0, 0},
        {"POST", "/v1/webhooks/{name}/test", h, BS_ROLE_VIEWER, NULL, NULL, NULL, NULL, 0, 0},
        {"GET", "/v1/webhooks/deliveries", h, BS_ROLE_VIEWER, NULL, NULL, NULL, NULL, 0, 0},
        {"GET", "/v1/webhooks/deliveries/{id}", h, BS_ROLE_VIEWER, NULL, NULL, NULL, NULL, 0, 0},
        {"POST", "/v1/webhooks/deliveries/{id}/replay", h, BS_ROLE_VIEWER, NULL, NULL, NULL, NULL,
         0, 0},
        {"GET", "/files/{path*}", h, BS_ROLE_VIEWER, NULL, NULL, NULL, NULL, 0, 0},
        {"GET", "/files/{dir}/index", h, BS_ROLE_VIEWER, NULL, NULL, NULL, NULL, 0, 0},
        {"PUT", "/v1/webhooks/{name}", h, BS_ROLE_VIEWER, NULL, NULL, NULL, NULL, 0, 0},
    };
    bs_err_t err;
    bs_router_t *x = bs_router_new(t, (int)(sizeof t / sizeof t[0]), &err);
    assert_non_null(x);
    bs_route_param_t p[BS_HTTP_MAX_PARAMS];
    int np = -1;
    char allow[64];
#define M(method, path) \
    bs_router_match(x, method, strlen(method), path, strlen(path), p, &np, allow, sizeof allow)
    assert_int_equal(M("GET", "/v1/webhooks/deliveries"), 3);
    assert_int_equal(np, 0);
    assert_int_equal(M("GET", "/v1/webhooks/orders"), 0);
    assert_param(&p[0], "name", "orders");
    assert_int_equal(M("GET", "/v1/webhooks/deliveries/abc"), 4);
    assert_param(&p[0], "id", "abc");
    assert_int_equal(M("GET", "/v1/webhooks/orders/secret"), 1);
    assert_int_equal(M("POST", "/v1/webhooks/deliveries/abc/replay"), 5);
    assert_int_equal(M("POST", "/v1/webhooks/orders/test"), 2);
    /* A webhook may still be named like the literal's neighbours. */
    assert_int_equal(M("GET", "/v1/webhooks/deliverie"), 0);
    /* Same for a rest parameter: the longer literal pattern first. */
    assert_int_equal(M("GET", "/files/a/index"), 7);
    assert_int_equal(M("GET", "/files/a/b"), 6);
    /* The literal owns its path for every method: a PUT there is a 405 listing the
     * literal's methods, not a PUT of the webhook named "deliveries". */
    assert_int_equal(M("DELETE", "/v1/webhooks/deliveries"), BS_EMETHOD);
    assert_string_equal(allow, "GET");
    assert_int_equal(M("PUT", "/v1/webhooks/deliveries"), BS_EMETHOD);
    assert_string_equal(allow, "GET");
    assert_int_equal(M("PUT", "/v1/webhooks/orders"), 8);
    assert_param(&p[0], "name", "orders");
    assert_int_equal(M("DELETE", "/v1/webhooks/orders"), BS_EMETHOD);
    assert_string_equal(allow, "GET, PUT");
    assert_int_equal(M("HEAD", "/v1/webhooks/deliveries"), 3);
    assert_int_equal(M("GET", "/v1/nothing"), BS_ENOTFOUND);
#undef M
    bs_router_free(x);
}

static void test_real_route_table(void **state)
{
    (void)state;
    int n = 0;
    const bs_route_t *rt = bs_api_routes(&n);
    assert_true(n > 0);
    bs_err_t err;
    bs_router_t *x = bs_router_new(rt, n, &err);
    assert_non_null(x);
    assert_int_equal(bs_router_count(x), n);
    /* every route is reachable by its own pattern (parameters filled with "p") */
    for (int i = 0; i < n; i++) {
        char path[512];
        size_t k = 0;
        for (const char *s = rt[i].pattern; *s && k + 2 < sizeof path; s++) {
            if (*s == '{') {
                path[k++] = 'p';
                while (*s && *s != '}')
                    s++;
            } else {
                path[k++] = *s;
            }
        }
        path[k] = '\0';
        char allow[256];
        int got = bs_router_match(x, rt[i].method, strlen(rt[i].method), path, k, NULL, NULL,
                                  allow, sizeof allow);
        assert_true(got >= 0);
        assert_string_equal(rt[got].method, rt[i].method);
        /* method + pattern pairs are unique */
        for (int j = i + 1; j < n; j++)
            assert_false(!strcmp(rt[i].method, rt[j].method) && !strcmp(rt[i].pattern, rt[j].pattern));
    }
    bs_router_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literals),       cmocka_unit_test(test_params),
        cmocka_unit_test(test_rest_param),     cmocka_unit_test(test_405_allow),
        cmocka_unit_test(test_head_is_get),    cmocka_unit_test(test_many_params_bounded),
        cmocka_unit_test(test_bad_patterns),   cmocka_unit_test(test_real_route_table),
        cmocka_unit_test(test_literal_beats_param),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
