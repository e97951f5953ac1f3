/* Store workers (src/http/offload.c) on a real server with one I/O thread and a route table
 * of its own: a BS_ROUTE_BLOCKING handler sees the ordinary request API on its copy (path
 * and query parameters, headers, JSON body) and its response keeps its status, content type,
 * extra headers and error shape; an inline route answers while a blocking handler is held on
 * a semaphore (no timing: the test decides when it ends); a full queue answers 503 overloaded
 * with Retry-After. */
#include "test_common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "http/http.h"

/* The server does not dispose of h2o's per-thread loops and contexts at exit (see thread_main
 * in src/http/server.c; tests/api/lsan.supp says the same for the API tests): LeakSanitizer
 * reads this hook in the sanitizer build, and nothing else calls it. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libh2o-evloop.so\n";
}

static sem_t entered, released;

static void h_echo(bs_req_t *req)
{
    size_t raw_len = 0;
    const char *raw = bs_req_param_raw(req, "name", &raw_len);
    const char *q = bs_req_query(req, "q"), *thing = bs_req_header(req, "x-thing");
    const char *auth = bs_req_header(req, "authorization");
    char body[512];
    int n = snprintf(body, sizeof body, "name=%s raw=%.*s q=%s thing=%s auth=%s defer=%s body=%zu",
                     bs_req_param(req, "name"), (int)raw_len, raw, q ? q : "-", thing ? thing : "-",
                     auth ? "yes" : "no", bs_req_defer(req) ? "yes" : "no", req->body_len);
    bs_resp_header(req, "x-from-worker", "yes");
    bs_resp_header(req, "location", "/echo/elsewhere");
    bs_resp_body(req, 200, "text/plain; charset=utf-8", body, (size_t)n);
}

static void h_json(bs_req_t *req)
{
    bs_err_t err;
    cJSON *j = bs_req_json(req, &err);
    if (!j)
        return bs_resp_error(req, &err);
    bs_buf_t b;
    bs_buf_init(&b);
    bs_buf_printf(&b, "{\"n\":%d}", cJSON_GetArraySize(j));
    bs_resp_json(req, 201, &b);
    bs_buf_free(&b);
}

static void h_delete(bs_req_t *req)
{
    bs_resp_empty(req, 204);
}

static void h_fail(bs_req_t *req)
{
    bs_resp_errorf(req, BS_ENOTFOUND, "name", "no model '%s'", bs_req_param(req, "name"));
}

static void h_retry(bs_req_t *req)
{
    bs_resp_header(req, "retry-after", "7");
    bs_resp_errorf(req, BS_EOVERLOAD, NULL, "busy");
}

static void h_silent(bs_req_t *req)
{
    (void)req;
}

static void h_hold(bs_req_t *req)
{
    sem_post(&entered);
    while (sem_wait(&released) != 0)
        ;
    bs_resp_body(req, 200, "text/plain", "held", 4);
}

static void h_inline(bs_req_t *req)
{
    bs_resp_body(req, 200, "text/plain", "inline", 6);
}

static const bs_route_t routes[] = {
    {"GET", "/echo/{name}", h_echo, BS_ROLE_PUBLIC, NULL, NULL, NULL, NULL, 0, BS_ROUTE_BLOCKING},
    {"POST", "/json", h_json, BS_ROLE_PUBLIC, NULL, NULL, NULL, NULL, 0, BS_ROUTE_BLOCKING},
    {"DELETE", "/thing", h_delete, BS_ROLE_PUBLIC, NULL, NULL, NULL, NULL, 0, BS_ROUTE_BLOCKING},
    {"GET", "/v2/models/{name}", h_fail, BS_ROLE_PUBLIC, NULL, NULL, NULL, NULL, 0,
     BS_ROUTE_BLOCKING},
    {"GET", "/retry", h_retry, BS_ROLE_PUBLIC, NULL, NULL, NULL, NULL, 0, BS_ROUTE_BLOCKING},
    {"GET", "/silent", h_silent, BS_ROLE_PUBLIC, NULL, NULL, NULL, NULL, 0, BS_ROUTE_BLOCKING},
    {"GET", "/hold", h_hold, BS_ROLE_PUBLIC, NULL, NULL, NULL, NULL, 0, BS_ROUTE_BLOCKING},
    {"GET", "/inline", h_inline, BS_ROLE_PUBLIC, NULL, NULL, NULL, NULL, 0, BS_ROUTE_INLINE},
};

static const bs_error_shape_rule_t shapes[] = {{"/v2", BS_ERROR_SHAPE_OIP}, {NULL, 0}};

static bs_config_t cfg;
static bs_server_t *srv;
static pthread_t srv_tid;

static void *run(void *arg)
{
    bs_server_run(arg);
    return NULL;
}

/* Sends one request (Connection: close) and reads the whole response into out. */
static char *http(const char *method, const char *target, const char *headers, const char *body)
{
    static _Thread_local char out[8192];
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)bs_server_port(srv))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[2048];
    int n = snprintf(
        req, sizeof req,
        "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%sContent-Length: %zu\r\n\r\n%s", method,
        target, headers ? headers : "", body ? strlen(body) : 0, body ? body : "");
    assert_int_equal(write(fd, req, (size_t)n), n);
    size_t len = 0;
    ssize_t r;
    while (len + 1 < sizeof out && (r = read(fd, out + len, sizeof out - 1 - len)) > 0)
        len += (size_t)r;
    out[len] = '\0';
    close(fd);
    return out;
}

static int has(const char *resp, const char *needle)
{
    return strcasestr(resp, needle) != NULL;
}

static int setup(void **state)
{
    (void)state;
    bs_log_set_level(BS_LOG_OFF);
    bs_config_defaults(&cfg);
    snprintf(cfg.listen, sizeof cfg.listen, "127.0.0.1:0");
    cfg.threads = 1;
    cfg.store_threads = 1;
    cfg.store_queue = 1;
    cfg.access_log_sample = 0;
    sem_init(&entered, 0, 0);
    sem_init(&released, 0, 0);
    bs_server_opts_t o = {.cfg = &cfg,
                          .routes = routes,
                          .n_routes = (int)(sizeof routes / sizeof routes[0]),
                          .error_shapes = shapes};
    bs_err_t err;
    srv = bs_server_new(&o, &err);
    assert_non_null(srv);
    assert_int_equal(pthread_create(&srv_tid, NULL, run, srv), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    bs_server_stop(srv);
    pthread_join(srv_tid, NULL);
    bs_server_free(srv);
    return 0;
}

static void test_request_api_on_a_worker(void **state)
{
    (void)state;
    char *r = http("GET", "/echo/a%20b?q=x%2By&z=1",
                   "X-Thing: hello\r\nAuthorization: Bearer s\r\n", "12345");
    assert_true(has(r, "HTTP/1.1 200 "));
    assert_true(has(r, "\r\ncontent-type: text/plain; charset=utf-8\r\n"));
    assert_true(has(r, "\r\nx-from-worker: yes\r\n"));
    assert_true(has(r, "\r\nlocation: /echo/elsewhere\r\n"));
    assert_true(has(r, "\r\nx-request-id: "));
    /* decoded and raw parameter, query, header; the key stays on the I/O thread; no defer */
    assert_true(has(r, "\r\n\r\nname=a b raw=a%20b q=x+y thing=hello auth=no defer=no body=5"));
}

static void test_json_status_and_errors(void **state)
{
    (void)state;
    char *r = http("POST", "/json", "Content-Type: application/json\r\n", "[1,2,3]");
    assert_true(has(r, "HTTP/1.1 201 "));
    assert_true(has(r, "\r\ncontent-type: application/json\r\n"));
    assert_true(has(r, "\r\n\r\n{\"n\":3}"));
    r = http("POST", "/json", "Content-Type: text/plain\r\n", "[1]");
    assert_true(has(r, "HTTP/1.1 415 "));
    assert_true(has(r, "\"code\":\"unsupported_media_type\""));
    r = http("POST", "/json", "X-Request-Id: rid-1\r\n", "[1,");
    assert_true(has(r, "HTTP/1.1 400 "));
    assert_true(has(r, "\"request_id\":\"rid-1\""));
    assert_true(has(r, "\r\nx-request-id: rid-1\r\n"));
    r = http("DELETE", "/thing", NULL, NULL);
    assert_true(has(r, "HTTP/1.1 204 "));
    assert_false(has(r, "content-type"));
    /* the Open Inference Protocol's shape on /v2, chosen by the real path */
    r = http("GET", "/v2/models/m1", NULL, NULL);
    assert_true(has(r, "HTTP/1.1 404 "));
    assert_true(has(r, "\r\n\r\n{\"error\":\"no model 'm1'\"}"));
    /* a header set before an error response travels with it */
    r = http("GET", "/retry", NULL, NULL);
    assert_true(has(r, "HTTP/1.1 503 "));
    assert_true(has(r, "\r\nretry-after: 7\r\n"));
    assert_true(has(r, "\"code\":\"overloaded\""));
    r = http("GET", "/silent", NULL, NULL);
    assert_true(has(r, "HTTP/1.1 500 "));
    assert_true(has(r, "did not respond"));
    r = http("GET", "/inline", NULL, NULL);
    assert_true(has(r, "\r\n\r\ninline"));
}

static void *get_hold(void *arg)
{
    (void)arg;
    return strdup(http("GET", "/hold", NULL, NULL));
}

static void *get_echo(void *arg)
{
    (void)arg;
    return strdup(http("GET", "/echo/queued", NULL, NULL));
}

static int queued(void)
{
    bs_buf_t b;
    bs_buf_init(&b);
    bs_server_metrics(srv, &b);
    int q = strstr(b.data, "\nbasalt_http_store_queued_requests 1\n") != NULL;
    bs_buf_free(&b);
    return q;
}

static void test_held_worker_does_not_block_the_loop_and_the_queue_is_bounded(void **state)
{
    (void)state;
    pthread_t a, b;
    assert_int_equal(pthread_create(&a, NULL, get_hold, NULL), 0);
    while (sem_wait(&entered) != 0)
        ;
    /* The only worker is held; the only I/O thread serves. */
    char *r = http("GET", "/inline", NULL, NULL);
    assert_true(has(r, "HTTP/1.1 200 "));
    /* One request fits in the queue (store_queue = 1) ... */
    assert_int_equal(pthread_create(&b, NULL, get_echo, NULL), 0);
    while (!queued())
        sched_yield();
    /* ... the next is refused at once. */
    r = http("GET", "/echo/refused", NULL, NULL);
    assert_true(has(r, "HTTP/1.1 503 "));
    assert_true(has(r, "\r\nretry-after: 1\r\n"));
    assert_true(has(r, "\"code\":\"overloaded\""));
    bs_buf_t m;
    bs_buf_init(&m);
    bs_server_metrics(srv, &m);
    assert_non_null(strstr(m.data, "\nbasalt_http_store_rejections_total 1\n"));
    assert_non_null(strstr(m.data, "\nbasalt_http_store_running_requests 1\n"));
    bs_buf_free(&m);
    sem_post(&released);
    char *ra, *rb;
    pthread_join(a, (void **)&ra);
    pthread_join(b, (void **)&rb);
    assert_true(has(ra, "\r\n\r\nheld"));
    assert_true(has(rb, "\r\n\r\nname=queued "));
    free(ra);
    free(rb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_api_on_a_worker),
        cmocka_unit_test(test_json_status_and_errors),
        cmocka_unit_test(test_held_worker_does_not_block_the_loop_and_the_queue_is_bounded),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
