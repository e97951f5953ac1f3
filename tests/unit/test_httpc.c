/* The outbound HTTP client (http/client.h) against a small HTTP/1.1 server that this test
 * runs on a thread (one thread per connection, keep-alive, behaviour by path):
 *   /ok       200 "ok"                 /echo    200 with the request body and X-Test header
 *   /never    never answers            /hold    answers once hold_target requests wait
 *   /retry    503, Retry-After: 7      /big     200 with 200000 bytes
 *   /stream   200, chunked, 5 "data: i" events
 * Covers: many requests in flight at once, timeouts (a peer that never answers times out;
 * others are unaffected), the queue bound, connection reuse, the response bound,
 * Retry-After capture and parsing, streaming and its abort, shutdown failing what is in
 * flight, header and URL injection refused (CR/LF), a timeout during a slow name
 * resolution that does not hold the client thread (getaddrinfo is interposed here), and
 * the blocking bs_http_request (also its connect-error message). */
#include "test_common.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/err.h"
#include "http/client.h"

/* ---- the test server ---------------------------------------------------------------------- */

typedef struct {
    int listen_fd, port;
    int stop_pipe[2];
    pthread_t accept_thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int live;        /* connection threads running */
    int accepted;    /* connections accepted */
    int holding;     /* requests waiting in /hold */
    int hold_target; /* /hold answers once this many wait */
    int never_waiting;
} server_t;

static server_t srv;

typedef struct {
    int fd;
} conn_arg_t;

static int stopped(void)
{
    struct pollfd p = {srv.stop_pipe[0], POLLIN, 0};
    return poll(&p, 1, 0) > 0;
}

/* Waits for fd to be readable or the server to stop. 1 readable, 0 stop. */
static int wait_readable(int fd)
{
    struct pollfd p[2] = {{fd, POLLIN, 0}, {srv.stop_pipe[0], POLLIN, 0}};
    for (;;) {
        int r = poll(p, 2, -1);
        if (r < 0 && errno == EINTR)
            continue;
        if (p[1].revents)
            return 0;
        if (p[0].revents)
            return 1;
    }
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void reply(int fd, int status, const char *extra_headers, const char *body, size_t len)
{
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nContent-Type: text/plain\r\n%s\r\n",
                     status, len, extra_headers ? extra_headers : "");
    send_all(fd, head, (size_t)n);
    send_all(fd, body, len);
}

static void *conn_main(void *arg)
{
    int fd = ((conn_arg_t *)arg)->fd;
    free(arg);
    char buf[65536];
    size_t have = 0;
    for (;;) {
        char *end = NULL;
        while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
            if (have == sizeof buf || !wait_readable(fd))
                goto out;
            ssize_t r = recv(fd, buf + have, sizeof buf - have, 0);
            if (r <= 0)
                goto out;
            have += (size_t)r;
        }
        size_t head_len = (size_t)(end - buf) + 4;
        char method[16] = "", path[256] = "";
        sscanf(buf, "%15s %255s", method, path);
        size_t clen = 0;
        const char *cl = strcasestr(buf, "\r\ncontent-length:");
        if (cl && cl < end)
            clen = strtoul(cl + 17, NULL, 10);
        char xtest[128] = "";
        const char *xt = strcasestr(buf, "\r\nx-test:");
        if (xt && xt < end)
            sscanf(xt + 9, " %127[^\r]", xtest);
        while (have < head_len + clen) {
            if (!wait_readable(fd))
                goto out;
            ssize_t r = recv(fd, buf + have, sizeof buf - have, 0);
            if (r <= 0)
                goto out;
            have += (size_t)r;
        }
        const char *body = buf + head_len;
        if (strcmp(path, "/ok") == 0) {
            reply(fd, 200, NULL, "ok", 2);
        } else if (strcmp(path, "/echo") == 0) {
            char h[200];
            snprintf(h, sizeof h, "X-Test: %s\r\nX-Method: %s\r\n", xtest, method);
            reply(fd, 200, h, body, clen);
        } else if (strcmp(path, "/retry") == 0) {
            reply(fd, 503, "Retry-After: 7\r\n", "busy", 4);
        } else if (strcmp(path, "/big") == 0) {
            static char big[200000];
            memset(big, 'x', sizeof big);
            reply(fd, 200, NULL, big, sizeof big);
        } else if (strcmp(path, "/stream") == 0) {
            const char *h = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n";
            send_all(fd, h, strlen(h));
            for (int i = 0; i < 5; i++) {
                char ev[64], chunk[96];
                int n = snprintf(ev, sizeof ev, "data: %d\n\n", i);
                int m = snprintf(chunk, sizeof chunk, "%x\r\n%s\r\n", n, ev);
                send_all(fd, chunk, (size_t)m);
                usleep(20000);
            }
            send_all(fd, "0\r\n\r\n", 5);
        } else if (strcmp(path, "/hold") == 0) {
            pthread_mutex_lock(&srv.mu);
            srv.holding++;
            pthread_cond_broadcast(&srv.cv);
            while (srv.holding < srv.hold_target && !stopped()) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 50 * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&srv.cv, &srv.mu, &ts);
            }
            pthread_mutex_unlock(&srv.mu);
            reply(fd, 200, NULL, "held", 4);
        } else if (strcmp(path, "/never") == 0) {
            pthread_mutex_lock(&srv.mu);
            srv.never_waiting++;
            pthread_cond_broadcast(&srv.cv);
            pthread_mutex_unlock(&srv.mu);
            /* Until the client goes away or the server stops. */
            while (wait_readable(fd)) {
                char tmp[256];
                if (recv(fd, tmp, sizeof tmp, 0) <= 0)
                    break;
            }
            pthread_mutex_lock(&srv.mu);
            srv.never_waiting--;
            pthread_mutex_unlock(&srv.mu);
            goto out;
        } else {
            reply(fd, 404, NULL, "no", 2);
        }
        memmove(buf, buf + head_len + clen, have - head_len - clen);
        have -= head_len + clen;
    }
out:
    close(fd);
    pthread_mutex_lock(&srv.mu);
    srv.live--;
    pthread_cond_broadcast(&srv.cv);
    pthread_mutex_unlock(&srv.mu);
    return NULL;
}

static void *accept_main(void *arg)
{
    (void)arg;
    while (wait_readable(srv.listen_fd)) {
        int fd = accept(srv.listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        conn_arg_t *a = malloc(sizeof *a);
        a->fd = fd;
        pthread_mutex_lock(&srv.mu);
        srv.live++;
        srv.accepted++;
        pthread_mutex_unlock(&srv.mu);
        pthread_t t;
        pthread_create(&t, NULL, conn_main, a);
        pthread_detach(t);
    }
    return NULL;
}

static int server_start(void **state)
{
    (void)state;
    memset(&srv, 0, sizeof srv);
    pthread_mutex_init(&srv.mu, NULL);
    pthread_cond_init(&srv.cv, NULL);
    if (pipe(srv.stop_pipe) != 0)
        return -1;
    srv.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(srv.listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(srv.listen_fd, 256) != 0 ||
        getsockname(srv.listen_fd, (struct sockaddr *)&a, &al) != 0)
        return -1;
    srv.port = ntohs(a.sin_port);
    return pthread_create(&srv.accept_thread, NULL, accept_main, NULL) == 0 ? 0 : -1;
}

static int server_stop(void **state)
{
    (void)state;
    if (write(srv.stop_pipe[1], "x", 1) != 1)
        return -1;
    pthread_join(srv.accept_thread, NULL);
    pthread_mutex_lock(&srv.mu);
    while (srv.live > 0)
        pthread_cond_wait(&srv.cv, &srv.mu);
    pthread_mutex_unlock(&srv.mu);
    close(srv.listen_fd);
    close(srv.stop_pipe[0]);
    close(srv.stop_pipe[1]);
    return 0;
}

static void url(char *out, size_t n, const char *path)
{
    snprintf(out, n, "http://127.0.0.1:%d%s", srv.port, path);
}

/* ---- a name that takes long to resolve -------------------------------------------------------- */

/* getaddrinfo as curl's resolver thread calls it (this definition interposes on libc's for
 * the whole process): SLOW_HOST blocks until the test releases it (or 30 s pass); other
 * names go to libc's. */
#define SLOW_HOST "slow-dns.example"
static pthread_mutex_t dns_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t dns_cv = PTHREAD_COND_INITIALIZER;
static int dns_waiting, dns_released, dns_returned;

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    if (node && strcmp(node, SLOW_HOST) == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 30;
        pthread_mutex_lock(&dns_mu);
        dns_waiting++;
        pthread_cond_broadcast(&dns_cv);
        while (!dns_released && pthread_cond_timedwait(&dns_cv, &dns_mu, &ts) != ETIMEDOUT)
            ;
        dns_returned++;
        pthread_cond_broadcast(&dns_cv);
        pthread_mutex_unlock(&dns_mu);
        return EAI_NONAME;
    }
    int (*libc)(const char *, const char *, const struct addrinfo *, struct addrinfo **) =
        (int (*)(const char *, const char *, const struct addrinfo *, struct addrinfo **))dlsym(
            RTLD_NEXT, "getaddrinfo");
    return libc(node, service, hints, res);
}

/* ---- completions ---------------------------------------------------------------------------- */

typedef struct {
    int done, code, timed_out, status, terminated;
    char body[256], error[256], retry_after[64], content_type[64];
    size_t body_len, body_total;
    char streamed[512];
    size_t streamed_len;
    int abort_after; /* on_data returns 1 once this many chunks came (0: never) */
    int chunks;
    int order; /* completion order among the waiter's results */
} result_t;

static pthread_mutex_t res_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t res_cv = PTHREAD_COND_INITIALIZER;
static int completions;

static void on_done(void *ud, const bs_httpc_resp_t *r)
{
    result_t *x = ud;
    pthread_mutex_lock(&res_mu);
    x->code = r->code;
    x->timed_out = r->timed_out;
    x->status = r->status;
    snprintf(x->body, sizeof x->body, "%.*s", (int)(r->body_len < 255 ? r->body_len : 255),
             r->body);
    x->terminated = r->body[r->body_len] == '\0';
    x->body_len = r->body_len;
    x->body_total = r->body_total;
    snprintf(x->error, sizeof x->error, "%s", r->error ? r->error : "");
    snprintf(x->retry_after, sizeof x->retry_after, "%s", r->retry_after ? r->retry_after : "");
    snprintf(x->content_type, sizeof x->content_type, "%s", r->content_type ? r->content_type : "");
    x->order = ++completions;
    x->done = 1;
    pthread_cond_broadcast(&res_cv);
    pthread_mutex_unlock(&res_mu);
}

static int on_chunk(void *ud, const char *p, size_t n)
{
    result_t *x = ud;
    if (x->streamed_len + n < sizeof x->streamed) {
        memcpy(x->streamed + x->streamed_len, p, n);
        x->streamed_len += n;
    }
    x->chunks++;
    return x->abort_after && x->chunks >= x->abort_after;
}

/* Waits (at most 30 s: a generous bound, never an assertion on time) for x->done. */
static void wait_done(result_t *x)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 30;
    pthread_mutex_lock(&res_mu);
    while (!x->done)
        if (pthread_cond_timedwait(&res_cv, &res_mu, &ts) == ETIMEDOUT)
            break;
    int done = x->done;
    pthread_mutex_unlock(&res_mu);
    assert_true(done);
}

static int is_done(result_t *x)
{
    pthread_mutex_lock(&res_mu);
    int d = x->done;
    pthread_mutex_unlock(&res_mu);
    return d;
}

static void submit(bs_httpc_t *c, const char *path, int64_t timeout_ms, result_t *x)
{
    char u[128];
    url(u, sizeof u, path);
    bs_httpc_req_t r = {.method = "GET", .url = u, .timeout_ms = timeout_ms};
    bs_err_t err;
    assert_int_equal(bs_httpc_submit(c, &r, on_done, x, &err), 0);
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_post_echo_and_headers(void **state)
{
    (void)state;
    bs_err_t err;
    bs_httpc_t *c = bs_httpc_new(NULL, &err);
    assert_non_null(c);
    char u[128];
    url(u, sizeof u, "/echo");
    const char *headers[] = {"X-Test: hello", "Content-Type: application/json", NULL};
    const char body[] = "{\"a\":1}";
    result_t x = {0};
    bs_httpc_req_t r = {
        .method = "POST", .url = u, .headers = headers, .body = body, .body_len = strlen(body)};
    assert_int_equal(bs_httpc_submit(c, &r, on_done, &x, &err), 0);
    wait_done(&x);
    assert_int_equal(x.code, 0);
    assert_int_equal(x.status, 200);
    assert_string_equal(x.body, body);
    assert_true(x.terminated);
    assert_string_equal(x.content_type, "text/plain");
    assert_string_equal(x.retry_after, "");
    /* The method reaches the server as given (PUT with a body, DELETE without). */
    result_t y = {0}, z = {0};
    bs_httpc_req_t put = {.method = "PUT", .url = u, .body = "b", .body_len = 1};
    assert_int_equal(bs_httpc_submit(c, &put, on_done, &y, &err), 0);
    bs_httpc_req_t del = {.method = "DELETE", .url = u};
    assert_int_equal(bs_httpc_submit(c, &del, on_done, &z, &err), 0);
    wait_done(&y);
    wait_done(&z);
    assert_string_equal(y.body, "b");
    assert_int_equal(z.status, 200);
    assert_int_equal(z.body_len, 0);
    /* Bad requests are refused at submit; done is never called. */
    bs_httpc_req_t bad = {.method = "POST", .url = "ftp://example.com/x"};
    assert_int_equal(bs_httpc_submit(c, &bad, on_done, &x, &err), BS_EINVAL);
    bad.url = u;
    bad.method = "po st";
    assert_int_equal(bs_httpc_submit(c, &bad, on_done, &x, &err), BS_EINVAL);
    /* No header injection: a header line with a CR or LF (curl would send it as given,
     * starting another header) or another control character is refused, as is a URL
     * with one (curl's URL parser). A tab is fine (RFC 9110 §5.5). */
    bad.method = "POST";
    result_t never = {0};
    static const char *const injected[][2] = {{"X-Test: a\r\nX-Evil: 1", NULL},
                                              {"X-Test: a\nX-Evil: 1", NULL},
                                              {"X-Test: a\rb", NULL},
                                              {"X-Test: a\001b", NULL},
                                              {"X-Test: a\177b", NULL}};
    for (size_t i = 0; i < sizeof injected / sizeof injected[0]; i++) {
        bad.headers = injected[i];
        assert_int_equal(bs_httpc_submit(c, &bad, on_done, &never, &err), BS_EINVAL);
        assert_non_null(strstr(err.msg, "control character"));
    }
    bad.headers = NULL;
    static const char *const bad_paths[] = {"/echo\r\nX-Evil: 1", "/echo\nX: 1", "/ec ho"};
    for (size_t i = 0; i < sizeof bad_paths / sizeof bad_paths[0]; i++) {
        char bu[160];
        url(bu, sizeof bu, bad_paths[i]);
        bad.url = bu;
        assert_int_equal(bs_httpc_submit(c, &bad, on_done, &never, &err), BS_EINVAL);
        assert_int_equal(bs_http_url_check(bu, &err), BS_EINVAL);
    }
    assert_false(never.done);
    result_t tab = {0};
    const char *tabbed[] = {"X-Test: a\tb", NULL};
    bs_httpc_req_t ok_tab = {.method = "POST", .url = u, .headers = tabbed};
    assert_int_equal(bs_httpc_submit(c, &ok_tab, on_done, &tab, &err), 0);
    wait_done(&tab);
    assert_int_equal(tab.status, 200);
    bs_httpc_stats_t s;
    bs_httpc_stats(c, &s);
    assert_int_equal(s.submitted, 4);
    assert_int_equal(s.completed, 4);
    assert_int_equal(s.failed, 0);
    bs_httpc_free(c);
}

/* 48 requests that the server answers only once all 48 wait at the same time: they
 * complete only if the client runs them concurrently. */
static void test_many_in_flight(void **state)
{
    (void)state;
    enum { N = 48 };
    bs_err_t err;
    bs_httpc_opts_t o = {.max_connections = 64, .max_host_connections = 64};
    bs_httpc_t *c = bs_httpc_new(&o, &err);
    assert_non_null(c);
    pthread_mutex_lock(&srv.mu);
    srv.holding = 0;
    srv.hold_target = N;
    pthread_mutex_unlock(&srv.mu);
    static result_t x[N];
    memset(x, 0, sizeof x);
    for (int i = 0; i < N; i++)
        submit(c, "/hold", 20000, &x[i]);
    for (int i = 0; i < N; i++) {
        wait_done(&x[i]);
        assert_int_equal(x[i].code, 0);
        assert_int_equal(x[i].status, 200);
        assert_string_equal(x[i].body, "held");
    }
    bs_httpc_free(c);
}

/* A peer that never answers costs its own timeout; other requests complete meanwhile. */
static void test_timeout_isolated(void **state)
{
    (void)state;
    bs_err_t err;
    bs_httpc_t *c = bs_httpc_new(NULL, &err);
    assert_non_null(c);
    result_t short_never = {0}, long_never = {0}, ok[5];
    memset(ok, 0, sizeof ok);
    submit(c, "/never", 300, &short_never);
    submit(c, "/never", 600000, &long_never);
    for (int i = 0; i < 5; i++)
        submit(c, "/ok", 20000, &ok[i]);
    for (int i = 0; i < 5; i++) {
        wait_done(&ok[i]);
        assert_int_equal(ok[i].status, 200);
    }
    assert_false(is_done(&long_never)); /* still waiting: the others did not wait for it */
    wait_done(&short_never);
    assert_int_equal(short_never.code, BS_EIO);
    assert_int_equal(short_never.timed_out, 1);
    assert_int_equal(short_never.status, 0);
    assert_non_null(strstr(short_never.error, "timed out after 300 ms"));
    bs_httpc_stats_t s;
    bs_httpc_stats(c, &s);
    assert_int_equal(s.timeouts, 1);
    assert_int_equal(s.in_flight, 1);
    /* Shutdown fails what is in flight, with the callback, before free returns. */
    bs_httpc_free(c);
    assert_true(long_never.done);
    assert_int_equal(long_never.code, BS_EUNAVAIL);
    assert_int_equal(long_never.timed_out, 0);
}

static void test_queue_bound(void **state)
{
    (void)state;
    bs_err_t err;
    bs_httpc_opts_t o = {.max_queue = 4};
    bs_httpc_t *c = bs_httpc_new(&o, &err);
    assert_non_null(c);
    pthread_mutex_lock(&srv.mu);
    srv.holding = 0;
    srv.hold_target = 1000000; /* held until the server stops or the target drops */
    pthread_mutex_unlock(&srv.mu);
    result_t x[4], extra = {0};
    memset(x, 0, sizeof x);
    for (int i = 0; i < 4; i++)
        submit(c, "/hold", 20000, &x[i]);
    char u[128];
    url(u, sizeof u, "/ok");
    bs_httpc_req_t r = {.method = "GET", .url = u};
    assert_int_equal(bs_httpc_submit(c, &r, on_done, &extra, &err), BS_EOVERLOAD);
    bs_httpc_stats_t s;
    bs_httpc_stats(c, &s);
    assert_int_equal(s.rejected, 1);
    assert_int_equal(s.submitted, 4);
    assert_int_equal(s.queued + s.in_flight, 4);
    /* Release the held requests; the queue has room again. */
    pthread_mutex_lock(&srv.mu);
    srv.hold_target = 0;
    pthread_cond_broadcast(&srv.cv);
    pthread_mutex_unlock(&srv.mu);
    for (int i = 0; i < 4; i++) {
        wait_done(&x[i]);
        assert_int_equal(x[i].status, 200);
    }
    assert_int_equal(bs_httpc_submit(c, &r, on_done, &extra, &err), 0);
    wait_done(&extra);
    assert_int_equal(extra.status, 200);
    assert_false(extra.order == 0);
    bs_httpc_free(c);
}

static void test_connection_reuse(void **state)
{
    (void)state;
    bs_err_t err;
    bs_httpc_t *c = bs_httpc_new(NULL, &err);
    assert_non_null(c);
    pthread_mutex_lock(&srv.mu);
    int before = srv.accepted;
    pthread_mutex_unlock(&srv.mu);
    for (int i = 0; i < 10; i++) {
        result_t x = {0};
        submit(c, "/ok", 20000, &x);
        wait_done(&x);
        assert_int_equal(x.status, 200);
    }
    pthread_mutex_lock(&srv.mu);
    int used = srv.accepted - before;
    pthread_mutex_unlock(&srv.mu);
    assert_int_equal(used, 1);
    bs_httpc_free(c);
}

static void test_response_bound_and_retry_after(void **state)
{
    (void)state;
    bs_err_t err;
    bs_httpc_t *c = bs_httpc_new(NULL, &err);
    assert_non_null(c);
    char u[128];
    url(u, sizeof u, "/big");
    result_t big = {0}, retry = {0};
    bs_httpc_req_t r = {.method = "GET", .url = u, .max_response_bytes = 100};
    assert_int_equal(bs_httpc_submit(c, &r, on_done, &big, &err), 0);
    submit(c, "/retry", 20000, &retry);
    wait_done(&big);
    wait_done(&retry);
    assert_int_equal(big.status, 200);
    assert_int_equal(big.body_len, 100);
    assert_int_equal(big.body_total, 200000);
    assert_int_equal(retry.code, 0);
    assert_int_equal(retry.status, 503);
    assert_string_equal(retry.retry_after, "7");
    assert_string_equal(retry.body, "busy");
    assert_int_equal(bs_http_retry_after_ms(retry.retry_after, 0), 7000);
    bs_httpc_free(c);
}

static void test_streaming(void **state)
{
    (void)state;
    bs_err_t err;
    bs_httpc_t *c = bs_httpc_new(NULL, &err);
    assert_non_null(c);
    char u[128];
    url(u, sizeof u, "/stream");
    result_t x = {0};
    bs_httpc_req_t r = {.method = "GET", .url = u, .on_data = on_chunk};
    assert_int_equal(bs_httpc_submit(c, &r, on_done, &x, &err), 0);
    wait_done(&x);
    assert_int_equal(x.code, 0);
    assert_int_equal(x.status, 200);
    assert_string_equal(x.content_type, "text/event-stream");
    assert_int_equal(x.body_len, 0); /* streamed, not kept */
    x.streamed[x.streamed_len] = '\0';
    assert_string_equal(x.streamed, "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n");
    assert_int_equal(x.body_total, x.streamed_len);
    assert_true(x.chunks >= 1);
    /* The reader stops the stream after its first chunk. */
    result_t y = {.abort_after = 1};
    assert_int_equal(bs_httpc_submit(c, &r, on_done, &y, &err), 0);
    wait_done(&y);
    assert_int_equal(y.code, BS_EIO);
    assert_int_equal(y.chunks, 1);
    assert_non_null(strstr(y.error, "aborted"));
    /* A non-2xx body goes to done, not to on_data. */
    url(u, sizeof u, "/retry");
    result_t z = {0};
    assert_int_equal(bs_httpc_submit(c, &r, on_done, &z, &err), 0);
    wait_done(&z);
    assert_int_equal(z.status, 503);
    assert_int_equal(z.chunks, 0);
    assert_string_equal(z.body, "busy");
    bs_httpc_free(c);
}

/* A request that times out while its name is still being resolved ends at its timeout:
 * the client thread does not wait for the resolver (curl's threaded resolver would join
 * it), so other requests keep moving. Ordering, not time: the callback must come while
 * the resolver is still held. */
static void test_slow_dns_times_out_without_blocking(void **state)
{
    (void)state;
    bs_err_t err;
    bs_httpc_t *c = bs_httpc_new(NULL, &err);
    assert_non_null(c);
    result_t slow = {0}, ok = {0};
    bs_httpc_req_t r = {.method = "GET", .url = "http://" SLOW_HOST "/x", .timeout_ms = 200};
    assert_int_equal(bs_httpc_submit(c, &r, on_done, &slow, &err), 0);
    wait_done(&slow);
    pthread_mutex_lock(&dns_mu);
    int waiting = dns_waiting, returned = dns_returned;
    pthread_mutex_unlock(&dns_mu);
    submit(c, "/ok", 20000, &ok); /* the client thread is free */
    wait_done(&ok);
    pthread_mutex_lock(&dns_mu); /* let the resolver thread go; it cleans up after itself */
    dns_released = 1;
    pthread_cond_broadcast(&dns_cv);
    while (dns_returned < dns_waiting)
        pthread_cond_wait(&dns_cv, &dns_mu);
    pthread_mutex_unlock(&dns_mu);
    bs_httpc_free(c);
    assert_int_equal(waiting, 1);
    assert_int_equal(returned, 0);
    assert_int_equal(slow.code, BS_EIO);
    assert_int_equal(slow.timed_out, 1);
    assert_int_equal(ok.status, 200);
}

static void test_connect_refused_async(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd); /* a port nobody listens on */
    char u[128];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/x", ntohs(a.sin_port));
    bs_err_t err;
    bs_httpc_t *c = bs_httpc_new(NULL, &err);
    result_t x = {0};
    bs_httpc_req_t r = {.method = "POST", .url = u, .body = "{}", .body_len = 2};
    assert_int_equal(bs_httpc_submit(c, &r, on_done, &x, &err), 0);
    wait_done(&x);
    assert_int_equal(x.code, BS_EUNAVAIL);
    assert_int_equal(x.status, 0);
    assert_int_equal(x.timed_out, 0);
    assert_true(x.error[0] != '\0');
    bs_httpc_stats_t s;
    bs_httpc_stats(c, &s);
    assert_int_equal(s.failed, 1);
    bs_httpc_free(c);

    /* The blocking call reports it as the CLI prints it. */
    bs_http_response_t resp;
    assert_int_equal(bs_http_request("GET", u, NULL, NULL, 0, 5000, &resp, &err), BS_EIO);
    char want[160];
    snprintf(want, sizeof want, "cannot connect to 127.0.0.1:%d: %s", ntohs(a.sin_port),
             strerror(ECONNREFUSED));
    assert_string_equal(err.msg, want);
}

static void test_blocking_request(void **state)
{
    (void)state;
    char u[128];
    url(u, sizeof u, "/echo");
    bs_http_response_t resp;
    bs_err_t err;
    const char *headers[] = {"X-Test: sync", NULL};
    assert_int_equal(bs_http_request("POST", u, headers, "payload", 7, 5000, &resp, &err), 0);
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.body.len, 7);
    assert_memory_equal(resp.body.data, "payload", 7);
    bs_buf_free(&resp.body);
    url(u, sizeof u, "/big");
    assert_int_equal(bs_http_request("GET", u, NULL, NULL, 0, 5000, &resp, &err), 0);
    assert_int_equal(resp.body.len, 200000); /* no bound on the blocking call */
    bs_buf_free(&resp.body);
    url(u, sizeof u, "/nothing-here");
    assert_int_equal(bs_http_request("DELETE", u, NULL, NULL, 0, 5000, &resp, &err), 0);
    assert_int_equal(resp.status, 404);
    bs_buf_free(&resp.body);
    assert_int_equal(bs_http_request("GET", "gopher://x/", NULL, NULL, 0, 5000, &resp, &err),
                     BS_EINVAL);
    /* A header that would inject another one never leaves (see test_post_echo_and_headers). */
    url(u, sizeof u, "/echo");
    const char *injected[] = {"X-Test: a\r\nX-Evil: 1", NULL};
    assert_int_equal(bs_http_request("POST", u, injected, "x", 1, 5000, &resp, &err), BS_EINVAL);
    assert_non_null(strstr(err.msg, "control character"));
    url(u, sizeof u, "/echo\r\nX-Evil: 1");
    assert_int_equal(bs_http_request("GET", u, NULL, NULL, 0, 5000, &resp, &err), BS_EINVAL);
    url(u, sizeof u, "/never");
    assert_int_equal(bs_http_request("GET", u, NULL, NULL, 0, 1000, &resp, &err), BS_EIO);
    assert_non_null(strstr(err.msg, "timed out waiting for 127.0.0.1:"));
}

/* https:// goes through TLS with peer verification: a server with a self-signed certificate
 * (openssl s_server, started here) is refused as a TLS failure (BS_EUNAVAIL), not spoken
 * to in clear. */
static void test_https_verifies_the_peer(void **state)
{
    (void)state;
    char dir[64] = "/tmp/bs-test-httpc-XXXXXX", cmd[512];
    assert_non_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 "
             "-keyout %s/key.pem -out %s/cert.pem >/dev/null 2>&1",
             dir, dir);
    assert_int_equal(system(cmd), 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);
    int port = ntohs(a.sin_port);
    pid_t pid = fork();
    if (pid == 0) {
        char p[16], key[96], cert[96];
        snprintf(p, sizeof p, "%d", port);
        snprintf(key, sizeof key, "%s/key.pem", dir);
        snprintf(cert, sizeof cert, "%s/cert.pem", dir);
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execlp("openssl", "openssl", "s_server", "-accept", p, "-key", key, "-cert", cert, "-www",
               (char *)NULL);
        _exit(127);
    }
    assert_true(pid > 0);
    int up = 0;
    for (int i = 0; i < 200 && !up; i++) { /* until it listens (at most ~10 s) */
        int c = socket(AF_INET, SOCK_STREAM, 0);
        a.sin_port = htons((uint16_t)port);
        up = connect(c, (struct sockaddr *)&a, sizeof a) == 0;
        close(c);
        if (!up)
            usleep(50000);
    }
    char u[128];
    snprintf(u, sizeof u, "https://127.0.0.1:%d/", port);
    bs_err_t err;
    bs_httpc_t *c = up ? bs_httpc_new(NULL, &err) : NULL;
    result_t x = {0};
    bs_httpc_req_t r = {.method = "GET", .url = u, .timeout_ms = 20000};
    int rc = c ? bs_httpc_submit(c, &r, on_done, &x, &err) : -1;
    if (rc == 0)
        wait_done(&x);
    bs_httpc_free(c);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    assert_true(up);
    assert_int_equal(rc, 0);
    assert_int_equal(x.code, BS_EUNAVAIL);
    assert_int_equal(x.status, 0);
    assert_non_null(strcasestr(x.error, "certificate"));
}

static void test_retry_after_parse(void **state)
{
    (void)state;
    /* 1994-11-06T08:49:37Z */
    const int64_t t = 784111777LL * 1000;
    assert_int_equal(bs_http_retry_after_ms("120", 0), 120000);
    assert_int_equal(bs_http_retry_after_ms(" 5 ", 0), 5000);
    assert_int_equal(bs_http_retry_after_ms("0", 0), 0);
    assert_int_equal(bs_http_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", t - 10000), 10000);
    assert_int_equal(bs_http_retry_after_ms("Sunday, 06-Nov-94 08:49:37 GMT", t - 2000), 2000);
    assert_int_equal(bs_http_retry_after_ms("Sun Nov  6 08:49:37 1994", t - 1500), 1500);
    assert_int_equal(bs_http_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", t + 5000), 0);
    assert_int_equal(bs_http_retry_after_ms("", 0), -1);
    assert_int_equal(bs_http_retry_after_ms(NULL, 0), -1);
    assert_int_equal(bs_http_retry_after_ms("-1", 0), -1);
    assert_int_equal(bs_http_retry_after_ms("1.5", 0), -1);
    assert_int_equal(bs_http_retry_after_ms("12abc", 0), -1);
    assert_int_equal(bs_http_retry_after_ms("soon", 0), -1);
    assert_int_equal(bs_http_retry_after_ms("99999999999999999999", 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry_after_parse),
        cmocka_unit_test(test_post_echo_and_headers),
        cmocka_unit_test(test_many_in_flight),
        cmocka_unit_test(test_timeout_isolated),
        cmocka_unit_test(test_queue_bound),
        cmocka_unit_test(test_connection_reuse),
        cmocka_unit_test(test_response_bound_and_retry_after),
        cmocka_unit_test(test_streaming),
        cmocka_unit_test(test_slow_dns_times_out_without_blocking),
        cmocka_unit_test(test_connect_refused_async),
        cmocka_unit_test(test_blocking_request),
        cmocka_unit_test(test_https_verifies_the_peer),
    };
    return cmocka_run_group_tests(tests, server_start, server_stop);
}
