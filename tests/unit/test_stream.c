/* Streaming responses (src/http/stream.c) on a real server with one I/O thread: a producer
 * thread writes numbered chunks through bs_stream_write, waiting for on_drain when a write
 * is refused, and a raw-socket client reads the chunked body. Checked: every byte arrives
 * once and in order; a client that does not read (small receive buffer) makes writes be
 * refused while the bytes accepted stay within the queue bound plus the kernel's socket
 * buffers, and does not stall another request on the same I/O thread; reading then resumes
 * the producer through on_drain to the end; a client that hangs up, idle or in the middle
 * of a blocked write, gets the stream ended (on_close, basalt_http_streams_open back to 0,
 * writes refused with BS_EUNAVAIL); heartbeats go out on an idle stream; stopping the server
 * ends open streams cleanly (the last chunk). No timing assertion: the test waits for
 * conditions (with a generous limit so that a failure does not hang). */
#include "test_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/time.h"
#include "http/http.h"

const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libh2o-evloop.so\n";
}

#define QUEUE_BOUND (64 * 1024)

enum { P_RUNNING, P_WAITING, P_DONE };

typedef struct {
    bs_stream_t *s;
    int n, size, wait_close;
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int drained, closed, state, last_rc;
    size_t accepted;
    int refused;
    int close_calls;
} producer_t;

static producer_t *cur; /* the stream the test looks at */
static pthread_mutex_t cur_mu = PTHREAD_MUTEX_INITIALIZER;

static void on_drain(void *ud)
{
    producer_t *p = ud;
    pthread_mutex_lock(&p->mu);
    p->drained = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void on_close(void *ud)
{
    producer_t *p = ud;
    pthread_mutex_lock(&p->mu);
    p->closed = 1;
    p->close_calls++;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void set_state(producer_t *p, int st)
{
    pthread_mutex_lock(&p->mu);
    p->state = st;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* Chunk k: "[%08d]" then filler up to size - 1 bytes and a newline. */
static void make_chunk(char *buf, int k, int size)
{
    char head[32];
    snprintf(head, sizeof head, "[%08d]", k % 100000000);
    memcpy(buf, head, 10);
    for (int i = 10; i < size - 1; i++)
        buf[i] = (char)('a' + (k + i) % 26);
    buf[size - 1] = '\n';
}

static void *produce(void *arg)
{
    producer_t *p = arg;
    char *buf = malloc((size_t)p->size);
    for (int k = 0; k < p->n; k++) {
        make_chunk(buf, k, p->size);
        for (;;) {
            int rc = bs_stream_write(p->s, buf, (size_t)p->size);
            p->last_rc = rc;
            if (rc == 0) {
                pthread_mutex_lock(&p->mu);
                p->accepted += (size_t)p->size;
                pthread_mutex_unlock(&p->mu);
                break;
            }
            if (rc != BS_EOVERLOAD)
                goto done;
            pthread_mutex_lock(&p->mu);
            p->refused++;
            p->state = P_WAITING;
            pthread_cond_broadcast(&p->cv);
            while (!p->drained && !p->closed)
                pthread_cond_wait(&p->cv, &p->mu);
            p->drained = 0;
            p->state = P_RUNNING;
            pthread_mutex_unlock(&p->mu);
        }
    }
    if (p->wait_close) {
        pthread_mutex_lock(&p->mu);
        p->state = P_WAITING;
        while (!p->closed)
            pthread_cond_wait(&p->cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
        p->last_rc = bs_stream_write(p->s, "x", 1); /* after on_close: refused */
    }
done:
    free(buf);
    bs_stream_close(p->s);
    set_state(p, P_DONE);
    return NULL;
}

static int qint(bs_req_t *req, const char *name, int dflt)
{
    const char *v = bs_req_query(req, name);
    return v ? atoi(v) : dflt;
}

static void h_stream(bs_req_t *req)
{
    producer_t *p = calloc(1, sizeof *p);
    p->n = qint(req, "n", 0);
    p->size = qint(req, "size", 100);
    p->wait_close = qint(req, "wait", 0);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    bs_stream_opts_t o = {.max_queued = QUEUE_BOUND,
                          .heartbeat_ms = qint(req, "hb", 0),
                          .heartbeat = ": hb\n",
                          .on_drain = on_drain,
                          .on_close = on_close,
                          .ud = p};
    bs_resp_header(req, "x-stream", "yes");
    p->s = bs_req_stream(req, 200, "text/plain", &o);
    assert_non_null(p->s);
    pthread_mutex_lock(&cur_mu);
    cur = p;
    pthread_mutex_unlock(&cur_mu);
    pthread_create(&p->tid, NULL, produce, p);
}

static void h_inline(bs_req_t *req)
{
    bs_resp_body(req, 200, "text/plain", "inline", 6);
}

static const bs_route_t routes[] = {
    {"GET", "/stream", h_stream, BS_ROLE_PUBLIC, NULL, NULL, NULL, NULL, 0, BS_ROUTE_INLINE},
    {"GET", "/inline", h_inline, BS_ROLE_PUBLIC, NULL, NULL, NULL, NULL, 0, BS_ROUTE_INLINE},
};

static bs_config_t cfg;
static bs_server_t *srv;
static pthread_t srv_tid;
static int srv_stopped;

static void *run(void *arg)
{
    bs_server_run(arg);
    return NULL;
}

static int setup(void **state)
{
    (void)state;
    bs_log_set_level(BS_LOG_OFF);
    bs_config_defaults(&cfg);
    snprintf(cfg.listen, sizeof cfg.listen, "127.0.0.1:0");
    cfg.threads = 1;
    cfg.access_log_sample = 0;
    cfg.shutdown_timeout_ms = 5000;
    bs_server_opts_t o = {.cfg = &cfg, .routes = routes, .n_routes = 2};
    bs_err_t err;
    srv = bs_server_new(&o, &err);
    assert_non_null(srv);
    srv_stopped = 0;
    cur = NULL;
    assert_int_equal(pthread_create(&srv_tid, NULL, run, srv), 0);
    return 0;
}

static void producer_join(producer_t *p)
{
    pthread_join(p->tid, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

static int teardown(void **state)
{
    (void)state;
    if (!srv_stopped)
        bs_server_stop(srv);
    pthread_join(srv_tid, NULL);
    if (cur)
        producer_join(cur);
    bs_server_free(srv);
    return 0;
}

/* Waits up to 30 s for cond(); fails the test past that (a hang, not a timing check). */
#define WAIT_FOR(cond)                                                                             \
    do {                                                                                           \
        uint64_t until_ = bs_time_mono_ns() + 30000000000ull;                                      \
        while (!(cond)) {                                                                          \
            if (bs_time_mono_ns() > until_)                                                        \
                fail_msg("waited 30 s for %s", #cond);                                             \
            usleep(2000);                                                                          \
        }                                                                                          \
    } while (0)

static producer_t *current(void)
{
    pthread_mutex_lock(&cur_mu);
    producer_t *p = cur;
    pthread_mutex_unlock(&cur_mu);
    return p;
}

static int pstate(producer_t *p)
{
    pthread_mutex_lock(&p->mu);
    int s = p->state;
    pthread_mutex_unlock(&p->mu);
    return s;
}

static int connect_to(int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)bs_server_port(srv))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void send_get(int fd, const char *target)
{
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", target);
    assert_int_equal(write(fd, req, (size_t)n), n);
}

/* A reader of one chunked response. */
typedef struct {
    int fd;
    char *raw;
    size_t len, cap, pos;
    int eof;
} reader_t;

static int fill(reader_t *r)
{
    if (r->len + 65536 > r->cap) {
        r->cap = r->cap ? r->cap * 2 : 1 << 20;
        r->raw = realloc(r->raw, r->cap);
    }
    ssize_t n = read(r->fd, r->raw + r->len, 65536);
    if (n <= 0) {
        r->eof = 1;
        return -1;
    }
    r->len += (size_t)n;
    return 0;
}

/* Reads until needle is in what arrived after pos; returns its offset or -1 at EOF. */
static long read_until(reader_t *r, const char *needle)
{
    for (;;) {
        if (r->len) {
            char *f = memmem(r->raw + r->pos, r->len - r->pos, needle, strlen(needle));
            if (f)
                return f - r->raw;
        }
        if (fill(r))
            return -1;
    }
}

/* Reads the head; returns a copy (the caller frees). */
static char *read_head(reader_t *r)
{
    long e = read_until(r, "\r\n\r\n");
    assert_true(e >= 0);
    char *h = strndup(r->raw, (size_t)e + 4);
    r->pos = (size_t)e + 4;
    return h;
}

/* Decodes the whole chunked body (until the last chunk); returns it (malloc'd), *n its size;
 * *complete 1 if the last chunk came (else the connection ended first). */
static char *read_body(reader_t *r, size_t *n, int *complete)
{
    size_t cap = 1 << 20, len = 0;
    char *body = malloc(cap);
    *complete = 0;
    for (;;) {
        long e = read_until(r, "\r\n");
        if (e < 0)
            break;
        size_t sz = strtoul(r->raw + r->pos, NULL, 16);
        size_t start = (size_t)e + 2;
        while (r->len < start + sz + 2)
            if (fill(r))
                goto out;
        if (sz == 0) {
            *complete = 1;
            break;
        }
        if (len + sz > cap) {
            while (len + sz > cap)
                cap *= 2;
            body = realloc(body, cap);
        }
        memcpy(body + len, r->raw + start, sz);
        len += sz;
        r->pos = start + sz + 2;
    }
out:
    *n = len;
    return body;
}

static int64_t metric(const char *name)
{
    bs_buf_t b;
    bs_buf_init(&b);
    bs_server_metrics(srv, &b);
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    char *at = strstr(b.data, key);
    int64_t v = at ? strtoll(at + strlen(key), NULL, 10) : -1;
    bs_buf_free(&b);
    return v;
}

static void check_chunks(const char *body, size_t len, int n, int size)
{
    assert_int_equal(len, (size_t)n * (size_t)size);
    char *want = malloc((size_t)size);
    for (int k = 0; k < n; k++) {
        make_chunk(want, k, size);
        if (memcmp(body + (size_t)k * (size_t)size, want, (size_t)size) != 0)
            fail_msg("chunk %d differs", k);
    }
    free(want);
}

static void test_whole_stream_in_order(void **state)
{
    (void)state;
    int fd = connect_to(0);
    send_get(fd, "/stream?n=2000&size=1000");
    reader_t r = {.fd = fd};
    char *head = read_head(&r);
    assert_non_null(strstr(head, "HTTP/1.1 200 "));
    assert_non_null(strcasestr(head, "\r\ntransfer-encoding: chunked\r\n"));
    assert_non_null(strcasestr(head, "\r\ncontent-type: text/plain\r\n"));
    assert_non_null(strcasestr(head, "\r\nx-stream: yes\r\n"));
    assert_non_null(strcasestr(head, "\r\nx-request-id: "));
    free(head);
    size_t len;
    int complete;
    char *body = read_body(&r, &len, &complete);
    assert_true(complete);
    check_chunks(body, len, 2000, 1000);
    free(body);
    producer_t *p = current();
    WAIT_FOR(pstate(p) == P_DONE);
    assert_int_equal(p->last_rc, 0);
    assert_int_equal(p->close_calls, 0); /* it ended by bs_stream_close: no on_close */
    /* The connection stays usable (keep-alive) after the stream. */
    write(fd, "GET /inline HTTP/1.1\r\nHost: t\r\n\r\n", 33);
    assert_true(read_until(&r, "inline") >= 0);
    close(fd);
    free(r.raw);
    WAIT_FOR(metric("basalt_http_streams_open") == 0);
    assert_int_equal(metric("basalt_http_streams_total"), 1);
    assert_true(metric("basalt_http_stream_bytes_total") >= 2000 * 1000);
}

static void test_slow_reader_is_bounded_and_does_not_stall_others(void **state)
{
    (void)state;
    int fd = connect_to(4096);
    const int n = 20000, size = 1000; /* 20 MB if nothing held it back */
    send_get(fd, "/stream?n=20000&size=1000");
    WAIT_FOR(current() != NULL);
    producer_t *p = current();
    /* The client reads nothing: the queue fills and writes are refused. */
    WAIT_FOR(pstate(p) == P_WAITING);
    pthread_mutex_lock(&p->mu);
    size_t accepted = p->accepted;
    int refused = p->refused;
    pthread_mutex_unlock(&p->mu);
    assert_true(refused >= 1);
    /* Accepted = in the queue (<= bound) + handed to the kernel (the server's send buffer
     * and the client's receive buffer, a few MiB at most on loopback). */
    assert_true(accepted < (size_t)n * (size_t)size / 2);
    assert_true(accepted <= QUEUE_BOUND + 8u * 1024 * 1024);
    assert_true(metric("basalt_http_stream_refused_writes_total") >= 1);
    /* Another client on the same (only) I/O thread is served meanwhile. */
    int fd2 = connect_to(0);
    write(fd2, "GET /inline HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 52);
    reader_t r2 = {.fd = fd2};
    assert_true(read_until(&r2, "inline") >= 0);
    close(fd2);
    free(r2.raw);
    /* Reading resumes the producer (on_drain) and everything arrives, in order. */
    reader_t r = {.fd = fd};
    free(read_head(&r));
    size_t len;
    int complete;
    char *body = read_body(&r, &len, &complete);
    assert_true(complete);
    check_chunks(body, len, n, size);
    free(body);
    free(r.raw);
    close(fd);
    WAIT_FOR(pstate(p) == P_DONE);
    assert_true(p->refused >= refused);
}

static void test_idle_client_hangs_up(void **state)
{
    (void)state;
    int fd = connect_to(0);
    send_get(fd, "/stream?n=1&size=50&wait=1");
    reader_t r = {.fd = fd};
    free(read_head(&r));
    assert_true(read_until(&r, "[00000000]") >= 0);
    producer_t *p = current();
    WAIT_FOR(pstate(p) == P_WAITING);
    assert_int_equal(metric("basalt_http_streams_open"), 1);
    close(fd); /* the stream is idle: only the tick's peek can notice */
    WAIT_FOR(pstate(p) == P_DONE);
    assert_int_equal(p->close_calls, 1);
    assert_int_equal(p->last_rc, BS_EUNAVAIL);
    WAIT_FOR(metric("basalt_http_streams_open") == 0);
    assert_int_equal(metric("basalt_http_streams_lost_total"), 1);
    free(r.raw);
}

static void test_client_hangs_up_during_a_blocked_write(void **state)
{
    (void)state;
    int fd = connect_to(4096);
    send_get(fd, "/stream?n=100000&size=1000");
    WAIT_FOR(current() != NULL);
    producer_t *p = current();
    WAIT_FOR(pstate(p) == P_WAITING);
    close(fd); /* with unread data: the peer resets, the pending write fails */
    WAIT_FOR(pstate(p) == P_DONE);
    assert_int_equal(p->close_calls, 1);
    WAIT_FOR(metric("basalt_http_streams_open") == 0);
    assert_int_equal(metric("basalt_http_streams_lost_total"), 1);
}

static void test_heartbeats_on_an_idle_stream(void **state)
{
    (void)state;
    int fd = connect_to(0);
    send_get(fd, "/stream?n=0&wait=1&hb=1000");
    reader_t r = {.fd = fd};
    free(read_head(&r));
    long a = read_until(&r, ": hb\n");
    assert_true(a >= 0);
    r.pos = (size_t)a + 5;
    assert_true(read_until(&r, ": hb\n") > a); /* and again */
    close(fd);
    producer_t *p = current();
    WAIT_FOR(pstate(p) == P_DONE);
    free(r.raw);
}

static void test_server_stop_ends_open_streams(void **state)
{
    (void)state;
    int fd = connect_to(0);
    send_get(fd, "/stream?n=3&size=20&wait=1");
    reader_t r = {.fd = fd};
    free(read_head(&r));
    producer_t *p = NULL;
    WAIT_FOR((p = current()) != NULL && pstate(p) == P_WAITING);
    bs_server_stop(srv);
    srv_stopped = 1;
    size_t len;
    int complete;
    char *body = read_body(&r, &len, &complete);
    assert_true(complete); /* a clean end (the last chunk), not a cut connection */
    check_chunks(body, len, 3, 20);
    free(body);
    WAIT_FOR(pstate(p) == P_DONE);
    assert_int_equal(p->close_calls, 1);
    close(fd);
    free(r.raw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_whole_stream_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_reader_is_bounded_and_does_not_stall_others,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_client_hangs_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_hangs_up_during_a_blocked_write, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_heartbeats_on_an_idle_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_stop_ends_open_streams, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
