/* The prediction log (serving/predlog.h) against a real segments log in a temporary
 * directory: the top-level field scan; records landing in submit order with the contract's
 * ids (prediction_id, "<prediction_id>:shadow:<variant>"), across batches and tenants;
 * drops counted per (tenant, endpoint, reason) when the buffer is tiny or the topic is
 * missing, and never more than were refused; flush waiting for the log's acknowledgement;
 * free draining what is buffered; a crash bound (a child flushes, then dies by SIGKILL
 * without closing anything: every flushed record is in the reopened log); the payload
 * logger posting KServe's CloudEvents (binary mode) to a receiver in this process, retrying
 * a receiver that is down three times and counting the failures, and dropping past its
 * queue. No timing assertions: waits are for a condition with a generous deadline. */
#include "test_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/time.h"
#include "http/client.h"
#include "serving/predlog.h"
#include "store/log.h"

#define T "acme"

typedef struct {
    char dir[64];
    bs_log_t *log;
} fx_t;

static bs_log_t *open_log(const char *dir)
{
    bs_log_opts_t o = {.dir = dir};
    bs_err_t err;
    bs_log_t *l = bs_log_open(&o, &err);
    if (!l)
        fprintf(stderr, "open: %s\n", err.msg);
    return l;
}

/* The topic as the Endpoint kind creates it: sync 1s, retention 7d. */
static void ensure_topic(bs_log_t *l, const char *tenant)
{
    bs_log_topic_config_t c = {.retention_ms = 7LL * 86400 * 1000, .sync_interval_ms = 1000};
    bs_err_t err;
    assert_int_equal(bs_log_topic_ensure(l, tenant, BS_PREDLOG_TOPIC, &c, &err), 0);
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/bs-test-predlog-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    f->log = open_log(f->dir);
    *state = f;
    return f->log ? 0 : -1;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    bs_log_close(f->log);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static bs_predlog_t *new_predlog(bs_log_t *l, bs_httpc_t *http, size_t buffer_bytes)
{
    bs_predlog_opts_t o = {
        .log = l, .http = http, .buffer_bytes = buffer_bytes, .source = "test-replica"};
    bs_err_t err;
    bs_predlog_t *p = bs_predlog_new(&o, &err);
    if (!p)
        fprintf(stderr, "predlog: %s\n", err.msg);
    assert_non_null(p);
    return p;
}

/* A record in the contract's format; shadow variant when shadow is non-NULL. */
static int render(char *out, size_t n, const char *pid, const char *endpoint, int version,
                  const char *shadow, int i)
{
    return snprintf(out, n,
                    "{\"prediction_id\":\"%s\",\"request_id\":\"r-%d\",\"time\":"
                    "\"2026-01-02T03:04:05.678Z\",\"endpoint\":\"%s\",\"model\":\"m\",\"version\":"
                    "%d,\"variant\":\"%s\",\"shadow\":%s,\"latency_ms\":0.041,\"inputs\":{\"a\":"
                    "%d,\"note\":\"a } ] \\\" brace\",\"nested\":{\"x\":[1,{\"y\":2}]}},"
                    "\"output\":{\"label\":\"yes\",\"probabilities\":[0.25,0.75]}}",
                    pid, i, endpoint, version, shadow ? shadow : "v1", shadow ? "true" : "false",
                    i);
}

static void pid_of(char out[40], int tag, int i)
{
    snprintf(out, 40, "0190%04x-0000-7000-8000-%012x", tag, i);
}

typedef struct {
    int n, cap;
    char **ids, **data;
    int64_t *offsets;
} got_t;

static int collect_cb(const bs_log_record_t *r, void *ud)
{
    got_t *g = ud;
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 1024;
        g->ids = realloc(g->ids, (size_t)g->cap * sizeof *g->ids);
        g->data = realloc(g->data, (size_t)g->cap * sizeof *g->data);
        g->offsets = realloc(g->offsets, (size_t)g->cap * sizeof *g->offsets);
    }
    g->ids[g->n] = strdup(r->id);
    g->data[g->n] = strndup(r->data, r->len);
    g->offsets[g->n] = r->offset;
    g->n++;
    return 0;
}

static void read_all(bs_log_t *l, const char *tenant, got_t *g)
{
    memset(g, 0, sizeof *g);
    int64_t from = 0, next = 0;
    bs_err_t err;
    for (;;) {
        int n = bs_log_read(l, tenant, BS_PREDLOG_TOPIC, from, 5000, 0, collect_cb, g, &next, &err);
        assert_true(n >= 0);
        if (n == 0)
            break;
        from = next;
    }
}

static void got_free(got_t *g)
{
    for (int i = 0; i < g->n; i++) {
        free(g->ids[i]);
        free(g->data[i]);
    }
    free(g->ids);
    free(g->data);
    free(g->offsets);
}

/* The value of the metric line that starts with prefix (name and labels), or -1. */
static long long metric(bs_predlog_t *p, const char *prefix)
{
    bs_buf_t b;
    bs_buf_init(&b);
    bs_predlog_metrics(p, &b);
    long long v = -1;
    size_t pl = strlen(prefix);
    for (char *line = b.data; line && *line;) {
        char *nl = strchr(line, '\n');
        if (!strncmp(line, prefix, pl) && line[pl] == ' ')
            v = atoll(line + pl + 1);
        line = nl ? nl + 1 : NULL;
    }
    bs_buf_free(&b);
    return v;
}

static long long dropped(bs_predlog_t *p, const char *tenant, const char *ep, const char *reason)
{
    char k[256];
    snprintf(k, sizeof k,
             "basalt_prediction_log_dropped_total{tenant=\"%s\",endpoint=\"%s\",reason=\"%s\"}",
             tenant, ep, reason);
    return metric(p, k);
}

static long long records(bs_predlog_t *p, const char *tenant, const char *ep)
{
    char k[256];
    snprintf(k, sizeof k, "basalt_prediction_log_records_total{tenant=\"%s\",endpoint=\"%s\"}",
             tenant, ep);
    return metric(p, k);
}

/* ---- the field scan ------------------------------------------------------------------------ */

static void test_fields(void **state)
{
    (void)state;
    char rec[1024];
    int n = render(rec, sizeof rec, "0190-abc", "fraud", 3, "v5", 7);
    bs_predlog_fields_t f;
    assert_int_equal(bs_predlog_fields(rec, (size_t)n, &f), 0);
    assert_int_equal(f.prediction_id_len, 8);
    assert_memory_equal(f.prediction_id, "0190-abc", 8);
    assert_int_equal(f.endpoint_len, 5);
    assert_memory_equal(f.endpoint, "fraud", 5);
    assert_int_equal(f.variant_len, 2);
    assert_memory_equal(f.variant, "v5", 2);
    assert_int_equal(f.version, 3);
    assert_int_equal(f.shadow, 1);
    assert_int_equal(f.error, 0);
    int64_t want;
    assert_int_equal(bs_time_parse_rfc3339("2026-01-02T03:04:05.678Z", &want), 0);
    assert_int_equal(f.time_ms, want);
    /* Members after a nested value with brackets and quotes inside strings are found. */
    const char *r2 = " { \"inputs\" : {\"k\":\"}\\\"{\"} , \"error\":{\"code\":\"x\"},"
                     "\"shadow\" : false , \"version\":12 }";
    assert_int_equal(bs_predlog_fields(r2, strlen(r2), &f), 0);
    assert_int_equal(f.version, 12);
    assert_int_equal(f.shadow, 0);
    assert_int_equal(f.error, 1);
    assert_null(f.prediction_id);
    assert_int_equal(bs_predlog_fields("{}", 2, &f), 0);
    static const char *const bad[] = {
        "", "[]", "{", "{\"a\"}", "{\"a\":1,", "{\"a\":\"x}", "{\"a\":1 \"b\":2}", "12"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(bs_predlog_fields(bad[i], strlen(bad[i]), &f), BS_EINVAL);
}

/* ---- records land in order with their ids ---------------------------------------------------- */

static void test_order_and_ids(void **state)
{
    fx_t *f = *state;
    ensure_topic(f->log, T);
    bs_predlog_t *p = new_predlog(f->log, NULL, 0);
    /* More than two appends' worth (BS_LOG_MAX_BATCH each), every 7th a shadow run; every
     * other one through bs_predlog_submit_ex. */
    int total = 2 * BS_LOG_MAX_BATCH + 777;
    char rec[1024], pid[40];
    for (int i = 0; i < total; i++) {
        pid_of(pid, 1, i);
        int n = render(rec, sizeof rec, pid, i % 3 ? "fraud" : "churn", 3, i % 7 ? NULL : "v5", i);
        const char *ep = i % 3 ? "fraud" : "churn";
        if (i % 2) /* half of them hand the drain the id and lengths: the same log records */
            assert_int_equal(bs_predlog_submit_ex(p, T, strlen(T), ep, strlen(ep), pid,
                                                  strlen(pid), i % 7 ? NULL : "v5", 2, rec,
                                                  (size_t)n),
                             0);
        else
            assert_int_equal(bs_predlog_submit(p, T, ep, rec, (size_t)n), 0);
    }
    assert_int_equal(bs_predlog_flush(p, 30000), 0);
    got_t g;
    read_all(f->log, T, &g);
    assert_int_equal(g.n, total);
    for (int i = 0; i < total; i++) {
        pid_of(pid, 1, i);
        char want_id[128];
        if (i % 7)
            snprintf(want_id, sizeof want_id, "%s", pid);
        else
            snprintf(want_id, sizeof want_id, "%s:shadow:v5", pid);
        assert_string_equal(g.ids[i], want_id);
        render(rec, sizeof rec, pid, i % 3 ? "fraud" : "churn", 3, i % 7 ? NULL : "v5", i);
        assert_string_equal(g.data[i], rec);
        assert_int_equal(g.offsets[i], i);
    }
    assert_int_equal(records(p, T, "fraud"), total - (total + 2) / 3);
    assert_int_equal(records(p, T, "churn"), (total + 2) / 3);
    assert_int_equal(dropped(p, T, "fraud", "buffer_full"), 0);
    got_free(&g);
    bs_predlog_free(p);
}

/* Several tenants interleaved: each topic gets its own records, in submit order; a tenant
 * without the topic has its records counted as no_topic drops. */
static void test_tenants(void **state)
{
    fx_t *f = *state;
    static const char *const tenants[] = {"t1", "t2", "t3"};
    for (int t = 0; t < 3; t++)
        ensure_topic(f->log, tenants[t]);
    bs_predlog_t *p = new_predlog(f->log, NULL, 0);
    char rec[1024], pid[40];
    int per = 500;
    for (int i = 0; i < 3 * per; i++) {
        pid_of(pid, i % 3, i);
        int n = render(rec, sizeof rec, pid, "ep", 1, NULL, i);
        assert_int_equal(bs_predlog_submit(p, tenants[i % 3], "ep", rec, (size_t)n), 0);
        if (i % 100 == 0) {
            n = render(rec, sizeof rec, pid, "ep", 1, NULL, i);
            assert_int_equal(bs_predlog_submit(p, "nobody", "lost", rec, (size_t)n), 0);
        }
    }
    assert_int_equal(bs_predlog_flush(p, 30000), 0);
    for (int t = 0; t < 3; t++) {
        got_t g;
        read_all(f->log, tenants[t], &g);
        assert_int_equal(g.n, per);
        for (int j = 0; j < per; j++) {
            pid_of(pid, t, 3 * j + t);
            assert_string_equal(g.ids[j], pid);
        }
        assert_int_equal(records(p, tenants[t], "ep"), per);
        got_free(&g);
    }
    assert_int_equal(dropped(p, "nobody", "lost", "no_topic"), 3 * per / 100);
    assert_int_equal(records(p, "nobody", "lost"), 0);
    bs_predlog_free(p);
}

/* A buffer of 8 KiB cannot hold a burst of 2000 records: the refused ones are exactly the
 * dropped ones, and every accepted one is in the log. */
static void test_drops_tiny_buffer(void **state)
{
    fx_t *f = *state;
    ensure_topic(f->log, T);
    bs_predlog_t *p = new_predlog(f->log, NULL, 8192);
    char rec[1024], pid[40];
    int accepted = 0, refused = 0, total = 2000;
    for (int i = 0; i < total; i++) {
        pid_of(pid, 2, i);
        int n = render(rec, sizeof rec, pid, "fraud", 1, NULL, i);
        int rc = bs_predlog_submit(p, T, "fraud", rec, (size_t)n);
        assert_true(rc == 0 || rc == BS_EOVERLOAD);
        if (rc == 0)
            accepted++;
        else
            refused++;
    }
    assert_true(refused > 0);
    assert_int_equal(bs_predlog_flush(p, 30000), 0);
    assert_int_equal(dropped(p, T, "fraud", "buffer_full"), refused);
    assert_int_equal(records(p, T, "fraud"), accepted);
    got_t g;
    read_all(f->log, T, &g);
    assert_int_equal(g.n, accepted);
    got_free(&g);
    /* Below the bound: nothing held once drained. */
    assert_int_equal(metric(p, "basalt_prediction_log_buffer_bytes"), 0);
    assert_int_equal(metric(p, "basalt_prediction_log_buffer_limit_bytes"), 8192);
    bs_predlog_free(p);
}

/* flush returns only once the log has every record submitted before it: the topic's
 * next_offset is read right after, without any wait. */
static void test_flush_waits(void **state)
{
    fx_t *f = *state;
    ensure_topic(f->log, T);
    bs_predlog_t *p = new_predlog(f->log, NULL, 0);
    char rec[1024], pid[40];
    bs_err_t err;
    int total = 0;
    for (int round = 0; round < 20; round++) {
        int k = 1 + round * 37;
        for (int i = 0; i < k; i++, total++) {
            pid_of(pid, 3, total);
            int n = render(rec, sizeof rec, pid, "fraud", 1, NULL, total);
            assert_int_equal(bs_predlog_submit(p, T, "fraud", rec, (size_t)n), 0);
        }
        assert_int_equal(bs_predlog_flush(p, 30000), 0);
        bs_log_topic_stats_t st;
        assert_int_equal(bs_log_topic_stats(f->log, T, BS_PREDLOG_TOPIC, &st, &err), 0);
        assert_int_equal(st.next_offset, total);
    }
    /* Nothing pending: returns at once, also with no time to wait. */
    assert_int_equal(bs_predlog_flush(p, 0), 0);
    assert_int_equal(bs_predlog_flush(NULL, 0), 0);
    bs_predlog_free(p);
}

/* free appends what is still buffered before it returns. */
static void test_free_drains(void **state)
{
    fx_t *f = *state;
    ensure_topic(f->log, T);
    bs_predlog_t *p = new_predlog(f->log, NULL, 0);
    char rec[1024], pid[40];
    int total = 3000;
    for (int i = 0; i < total; i++) {
        pid_of(pid, 4, i);
        int n = render(rec, sizeof rec, pid, "fraud", 1, NULL, i);
        assert_int_equal(bs_predlog_submit(p, T, "fraud", rec, (size_t)n), 0);
    }
    bs_predlog_free(p);
    got_t g;
    read_all(f->log, T, &g);
    assert_int_equal(g.n, total);
    got_free(&g);
}

/* The crash bound: a child submits, flushes, reports how many records the flush covered and
 * is killed with SIGKILL while it keeps submitting (nothing closed). The reopened log has
 * every flushed record, in order, with its id. */
static void test_crash_keeps_flushed(void **state)
{
    fx_t *f = *state;
    ensure_topic(f->log, T);
    bs_log_close(f->log);
    f->log = NULL;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        bs_log_t *l = open_log(f->dir);
        if (!l)
            _exit(1);
        bs_predlog_opts_t o = {.log = l};
        bs_err_t err;
        bs_predlog_t *p = bs_predlog_new(&o, &err);
        char rec[1024], id[40];
        int i = 0;
        for (; i < 5000; i++) {
            pid_of(id, 5, i);
            int n = render(rec, sizeof rec, id, "fraud", 1, NULL, i);
            bs_predlog_submit(p, T, "fraud", rec, (size_t)n);
        }
        if (bs_predlog_flush(p, 30000) != 0)
            _exit(2);
        if (write(fds[1], &i, sizeof i) != (ssize_t)sizeof i)
            _exit(3);
        for (;; i++) { /* until killed */
            pid_of(id, 5, i);
            int n = render(rec, sizeof rec, id, "fraud", 1, NULL, i);
            if (bs_predlog_submit(p, T, "fraud", rec, (size_t)n) != 0)
                usleep(1000);
        }
    }
    close(fds[1]);
    int flushed = 0;
    assert_int_equal(read(fds[0], &flushed, sizeof flushed), (ssize_t)sizeof flushed);
    close(fds[0]);
    usleep(50000);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFSIGNALED(status));
    f->log = open_log(f->dir);
    assert_non_null(f->log);
    got_t g;
    read_all(f->log, T, &g);
    assert_true(g.n >= flushed);
    char id[40];
    for (int i = 0; i < g.n; i++) {
        pid_of(id, 5, i);
        assert_string_equal(g.ids[i], id);
    }
    got_free(&g);
}

/* ---- the payload logger ---------------------------------------------------------------------- */

#define MAX_GOT 64

typedef struct {
    int listen_fd, port, stop;
    pthread_t thread;
    pthread_mutex_t mu;
    int n;
    char *head[MAX_GOT], *body[MAX_GOT];
} recv_t;

static recv_t rcv;

static void *recv_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct pollfd pf = {rcv.listen_fd, POLLIN, 0};
        int r = poll(&pf, 1, 50);
        pthread_mutex_lock(&rcv.mu);
        int stop = rcv.stop;
        pthread_mutex_unlock(&rcv.mu);
        if (stop)
            return NULL;
        if (r <= 0)
            continue;
        int fd = accept(rcv.listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        char buf[65536];
        size_t have = 0;
        char *end = NULL;
        while (!(end = memmem(buf, have, "\r\n\r\n", 4)) && have < sizeof buf - 1) {
            ssize_t k = recv(fd, buf + have, sizeof buf - 1 - have, 0);
            if (k <= 0)
                break;
            have += (size_t)k;
        }
        if (!end) {
            close(fd);
            continue;
        }
        size_t hl = (size_t)(end - buf) + 4, clen = 0;
        buf[have] = 0;
        const char *cl = strcasestr(buf, "\r\ncontent-length:");
        if (cl && cl < end)
            clen = strtoul(cl + 17, NULL, 10);
        while (have < hl + clen && have < sizeof buf - 1) {
            ssize_t k = recv(fd, buf + have, sizeof buf - 1 - have, 0);
            if (k <= 0)
                break;
            have += (size_t)k;
        }
        pthread_mutex_lock(&rcv.mu);
        if (rcv.n < MAX_GOT) {
            rcv.head[rcv.n] = strndup(buf, hl);
            rcv.body[rcv.n] = strndup(buf + hl, clen);
            rcv.n++;
        }
        pthread_mutex_unlock(&rcv.mu);
        const char *ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        send(fd, ok, strlen(ok), MSG_NOSIGNAL);
        close(fd);
    }
}

static void recv_start(void)
{
    memset(&rcv, 0, sizeof rcv);
    pthread_mutex_init(&rcv.mu, NULL);
    rcv.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(rcv.listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(rcv.listen_fd, 128), 0);
    assert_int_equal(getsockname(rcv.listen_fd, (struct sockaddr *)&a, &al), 0);
    rcv.port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&rcv.thread, NULL, recv_main, NULL), 0);
}

static void recv_stop(void)
{
    pthread_mutex_lock(&rcv.mu);
    rcv.stop = 1;
    pthread_mutex_unlock(&rcv.mu);
    pthread_join(rcv.thread, NULL);
    close(rcv.listen_fd);
    for (int i = 0; i < rcv.n; i++) {
        free(rcv.head[i]);
        free(rcv.body[i]);
    }
}

static int recv_count(void)
{
    pthread_mutex_lock(&rcv.mu);
    int n = rcv.n;
    pthread_mutex_unlock(&rcv.mu);
    return n;
}

/* The value of header name (lower case, with the colon) in a request head, into out. */
static int header(const char *head, const char *name, char *out, size_t n)
{
    char key[64];
    snprintf(key, sizeof key, "\r\n%s", name);
    const char *h = strcasestr(head, key);
    if (!h)
        return 0;
    h += strlen(key);
    while (*h == ' ')
        h++;
    size_t l = strcspn(h, "\r");
    snprintf(out, n, "%.*s", (int)l, h);
    return 1;
}

static long long pay_metric(bs_predlog_t *p, const char *what, const char *tenant, const char *ep)
{
    char k[256];
    snprintf(k, sizeof k, "basalt_payload_logger_%s_total{tenant=\"%s\",endpoint=\"%s\"}", what,
             tenant, ep);
    long long v = metric(p, k);
    return v < 0 ? 0 : v;
}

static void wait_for(int (*cond)(void *), void *ud)
{
    for (int i = 0; i < 3000 && !cond(ud); i++)
        usleep(10000);
    assert_true(cond(ud));
}

static int two_received(void *ud)
{
    (void)ud;
    return recv_count() >= 2;
}

static void test_payload_cloudevents(void **state)
{
    fx_t *f = *state;
    recv_start();
    bs_err_t err;
    bs_httpc_t *http = bs_httpc_new(NULL, &err);
    assert_non_null(http);
    bs_predlog_t *p = new_predlog(f->log, http, 0);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/log", rcv.port);
    const char *req = "{\"inputs\":{\"a\":1}}", *resp = "{\"predictions\":[0.5],\"version\":3}";
    assert_int_equal(bs_predlog_payload(p, url, "all", T, "fraud", "v3", "req-1", req, strlen(req),
                                        resp, strlen(resp)),
                     0);
    wait_for(two_received, NULL);
    int seen_req = 0, seen_resp = 0;
    for (int i = 0; i < 2; i++) {
        char v[256];
        const char *h = rcv.head[i];
        assert_true(!strncmp(h, "POST /log ", 10));
        assert_true(header(h, "ce-specversion:", v, sizeof v));
        assert_string_equal(v, "1.0");
        assert_true(header(h, "ce-id:", v, sizeof v));
        assert_string_equal(v, "req-1");
        assert_true(header(h, "ce-source:", v, sizeof v));
        assert_string_equal(v, "test-replica");
        assert_true(header(h, "ce-inferenceservicename:", v, sizeof v));
        assert_string_equal(v, "fraud");
        assert_true(header(h, "ce-namespace:", v, sizeof v));
        assert_string_equal(v, T);
        assert_true(header(h, "ce-endpoint:", v, sizeof v));
        assert_string_equal(v, "v3");
        assert_true(header(h, "ce-component:", v, sizeof v));
        assert_string_equal(v, "predictor");
        assert_true(header(h, "content-type:", v, sizeof v));
        assert_string_equal(v, "application/json");
        assert_true(header(h, "ce-time:", v, sizeof v));
        int64_t ms;
        assert_int_equal(bs_time_parse_rfc3339(v, &ms), 0);
        assert_true(header(h, "ce-type:", v, sizeof v));
        if (!strcmp(v, "org.kubeflow.serving.inference.request")) {
            assert_string_equal(rcv.body[i], req);
            seen_req++;
        } else {
            assert_string_equal(v, "org.kubeflow.serving.inference.response");
            assert_string_equal(rcv.body[i], resp);
            seen_resp++;
        }
    }
    assert_int_equal(seen_req, 1);
    assert_int_equal(seen_resp, 1);
    for (int i = 0; i < 300 && pay_metric(p, "sent", T, "fraud") < 2; i++)
        usleep(10000);
    assert_int_equal(pay_metric(p, "sent", T, "fraud"), 2);
    /* mode request: only the request; response: only the response (none for a failure). */
    assert_int_equal(bs_predlog_payload(p, url, "request", T, "fraud", "v3", "req-2", req,
                                        strlen(req), resp, strlen(resp)),
                     0);
    assert_int_equal(bs_predlog_payload(p, url, "response", T, "fraud", "v3", "req-3", req,
                                        strlen(req), NULL, 0),
                     0);
    assert_int_equal(bs_predlog_payload(p, url, "response", T, "fraud", "v3", "req-4", req,
                                        strlen(req), resp, strlen(resp)),
                     0);
    for (int i = 0; i < 300 && pay_metric(p, "sent", T, "fraud") < 4; i++)
        usleep(10000);
    assert_int_equal(pay_metric(p, "sent", T, "fraud"), 4);
    assert_int_equal(recv_count(), 4);
    char v[128];
    for (int i = 2; i < 4; i++) {
        assert_true(header(rcv.head[i], "ce-id:", v, sizeof v));
        if (!strcmp(v, "req-2")) {
            assert_true(header(rcv.head[i], "ce-type:", v, sizeof v));
            assert_string_equal(v, "org.kubeflow.serving.inference.request");
        } else {
            assert_string_equal(v, "req-4");
            assert_true(header(rcv.head[i], "ce-type:", v, sizeof v));
            assert_string_equal(v, "org.kubeflow.serving.inference.response");
        }
    }
    assert_int_equal(bs_predlog_payload(p, url, "sometimes", T, "fraud", "v3", "x", req,
                                        strlen(req), resp, strlen(resp)),
                     BS_EINVAL);
    bs_predlog_free(p);
    bs_httpc_free(http);
    recv_stop();
}

typedef struct {
    bs_predlog_t *p;
    long long want;
} failed_wait_t;

static int failed_reached(void *ud)
{
    failed_wait_t *w = ud;
    return pay_metric(w->p, "failed", T, "fraud") >= w->want;
}

/* A receiver that is down: each event is tried three times (the client's attempts counted
 * by bs_httpc_stats), then counted as failed. Past the queue's bound, events are dropped. */
static void test_payload_down(void **state)
{
    fx_t *f = *state;
    /* A port with nobody listening: bind, take its number, close. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/down", ntohs(a.sin_port));
    bs_err_t err;
    bs_httpc_t *http = bs_httpc_new(NULL, &err);
    assert_non_null(http);
    bs_predlog_t *p = new_predlog(f->log, http, 0);
    const char *req = "{\"inputs\":{\"a\":1}}";
    for (int i = 0; i < 5; i++)
        assert_int_equal(
            bs_predlog_payload(p, url, "request", T, "fraud", "v1", "r", req, strlen(req), NULL, 0),
            0);
    failed_wait_t w = {p, 5};
    wait_for(failed_reached, &w);
    assert_int_equal(pay_metric(p, "failed", T, "fraud"), 5);
    assert_int_equal(pay_metric(p, "sent", T, "fraud"), 0);
    bs_httpc_stats_t st;
    bs_httpc_stats(http, &st);
    assert_int_equal(st.submitted, 15);
    /* The queue is bounded: a burst far past it drops (counted), never blocks. */
    int refused = 0;
    for (int i = 0; i < 6000; i++)
        if (bs_predlog_payload(p, url, "request", T, "fraud", "v1", "r", req, strlen(req), NULL,
                               0) == BS_EOVERLOAD)
            refused++;
    assert_true(refused > 0);
    assert_int_equal(pay_metric(p, "dropped", T, "fraud"), refused);
    bs_predlog_free(p); /* what is still queued is dropped, in flight ends in the client */
    bs_httpc_free(http);
}

/* No outbound client: every event is a drop. */
static void test_payload_no_client(void **state)
{
    fx_t *f = *state;
    bs_predlog_t *p = new_predlog(f->log, NULL, 0);
    assert_int_equal(
        bs_predlog_payload(p, "http://127.0.0.1:1/", "all", T, "e", "v", "r", "{}", 2, "{}", 2),
        BS_EOVERLOAD);
    assert_int_equal(pay_metric(p, "dropped", T, "e"), 1);
    bs_predlog_free(p);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields),
        cmocka_unit_test_setup_teardown(test_order_and_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tenants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drops_tiny_buffer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_waits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_drains, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_keeps_flushed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_payload_cloudevents, setup, teardown),
        cmocka_unit_test_setup_teardown(test_payload_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_payload_no_client, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
