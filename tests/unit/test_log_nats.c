/* src/store/log on its JetStream backend (log_nats*.c) against a real nats-server:
 * BASALT_TEST_NATS_URL names it and BASALT_TEST_NATS_CTL is the harness's restart hook
 * (tests/nats_server.py sets both: `python3 tests/nats_server.py -- build/tests/test_log_nats`).
 * Without them the test fails: it cannot be skipped.
 *
 * The restart hook is a Unix socket: write "stop", "start", "kill" (SIGKILL) or "restart",
 * read "ok". The server keeps its store directory, so a restart recovers the streams.
 *
 * Every test works on topics of its own (a random suffix), so they do not see each other. */
#include "test_common.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/time.h"
#include "store/log.h"

static const char *nats_url, *nats_ctl;
static char suffix[16];
static const char *TENANT = "acme";

static void sleep_ms(int ms)
{
    usleep((useconds_t)ms * 1000);
}

/* Sends one command to the harness and waits for its "ok". */
static void nats_control(const char *cmd)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", nats_ctl);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char line[256];
    int n = snprintf(line, sizeof line, "%s\n", cmd);
    assert_int_equal(write(fd, line, (size_t)n), n);
    size_t got = 0;
    while (got + 1 < sizeof line) {
        ssize_t r = read(fd, line + got, sizeof line - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        if (memchr(line, '\n', got))
            break;
    }
    line[got] = '\0';
    close(fd);
    if (strncmp(line, "ok", 2) != 0)
        fail_msg("nats harness: %s -> %s", cmd, line);
}

static bs_log_t *open_log(const char *replica)
{
    bs_err_t err;
    bs_err_clear(&err);
    bs_log_t *l = bs_log_open(&(bs_log_opts_t){.nats_url = nats_url, .replica_id = replica}, &err);
    if (!l)
        fail_msg("bs_log_open: %s", err.msg);
    assert_string_equal(bs_log_backend(l), "jetstream");
    return l;
}

/* A topic name unique to this run: prefix-<suffix>. */
static const char *tname(char *buf, const char *prefix)
{
    snprintf(buf, 64, "%s-%s", prefix, suffix);
    return buf;
}

static void ensure(bs_log_t *l, const char *topic, const bs_log_topic_config_t *c)
{
    bs_err_t err;
    bs_err_clear(&err);
    if (bs_log_topic_ensure(l, TENANT, topic, c ? c : &(bs_log_topic_config_t){0}, &err) != 0)
        fail_msg("topic ensure %s: %s", topic, err.msg);
}

static int64_t append1(bs_log_t *l, const char *topic, const char *id, const char *key,
                       const char *data, bs_log_append_result_t *res)
{
    bs_log_append_result_t r;
    bs_err_t err;
    bs_err_clear(&err);
    bs_log_record_in_t in = {.id = id, .dedup_key = key, .data = data, .len = strlen(data)};
    int rc = bs_log_append(l, TENANT, topic, &in, 1, &r, &err);
    if (rc != 0)
        fail_msg("append to %s: %d %s", topic, rc, err.msg);
    assert_int_equal(r.code, 0);
    if (res)
        *res = r;
    return r.offset;
}

/* ---- reading back ------------------------------------------------------------------------ */

typedef struct {
    int n;
    int64_t offset[64];
    int64_t time_ms[64];
    char id[64][129];
    char key[64][257];
    char data[64][256];
} recs_t;

static int collect(const bs_log_record_t *r, void *ud)
{
    recs_t *c = ud;
    if (c->n < 64) {
        c->offset[c->n] = r->offset;
        c->time_ms[c->n] = r->time_ms;
        snprintf(c->id[c->n], sizeof c->id[0], "%s", r->id);
        snprintf(c->key[c->n], sizeof c->key[0], "%s", r->dedup_key);
        snprintf(c->data[c->n], sizeof c->data[0], "%.*s", (int)r->len, (const char *)r->data);
    }
    c->n++;
    return 0;
}

static void test_append_read(void **state)
{
    (void)state;
    bs_log_t *l = open_log("a");
    char topic[64];
    tname(topic, "orders");
    ensure(l, topic, NULL);
    ensure(l, topic, &(bs_log_topic_config_t){.retention_ms = 3600000}); /* update: idempotent */
    bs_err_t err;
    bs_log_record_in_t in[3] = {
        {.id = "ev-1", .data = "{\"n\":1}", .len = 7},
        {.data = "{\"n\":2}", .len = 7},                     /* id made: a UUIDv7 */
        {.id = "ev 3\r\n%x", .data = "{\"n\":3}", .len = 7}, /* an id a header cannot hold */
    };
    bs_log_append_result_t res[3];
    assert_int_equal(bs_log_append(l, TENANT, topic, in, 3, res, &err), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(res[i].code, 0);
        assert_int_equal(res[i].offset, i);
        assert_int_equal(res[i].duplicate, 0);
    }
    assert_string_equal(res[0].id, "ev-1");
    assert_int_equal(strlen(res[1].id), 36);
    assert_string_equal(res[2].id, "ev 3\r\n%x");

    recs_t c = {0};
    int64_t next = -1;
    assert_int_equal(bs_log_read(l, TENANT, topic, 0, 100, 0, collect, &c, &next, &err), 3);
    assert_int_equal(next, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(c.offset[i], i);
        assert_string_equal(c.id[i], res[i].id);
        assert_string_equal(c.key[i], "");
        assert_true(c.time_ms[i] > 1600000000000LL);
        char want[16];
        snprintf(want, sizeof want, "{\"n\":%d}", i + 1);
        assert_string_equal(c.data[i], want);
    }
    assert_true(c.time_ms[0] <= c.time_ms[1] && c.time_ms[1] <= c.time_ms[2]);
    /* from 1, at most one; past the end: nothing, next stays */
    memset(&c, 0, sizeof c);
    assert_int_equal(bs_log_read(l, TENANT, topic, 1, 1, 0, collect, &c, &next, &err), 1);
    assert_int_equal(c.offset[0], 1);
    assert_int_equal(next, 2);
    memset(&c, 0, sizeof c);
    assert_int_equal(bs_log_read(l, TENANT, topic, 7, 10, 0, collect, &c, &next, &err), 0);
    assert_int_equal(next, 7);
    /* max_bytes: at least one record, then stop once reached */
    memset(&c, 0, sizeof c);
    assert_int_equal(bs_log_read(l, TENANT, topic, 0, 100, 1, collect, &c, &next, &err), 1);
    assert_int_equal(bs_log_read(l, TENANT, topic, -1, 10, 0, collect, &c, &next, &err), BS_EINVAL);

    /* offset_at: by the records' own times */
    int64_t off = -1;
    assert_int_equal(bs_log_offset_at(l, TENANT, topic, 0, &off, &err), 0);
    assert_int_equal(off, 0);
    assert_int_equal(bs_log_offset_at(l, TENANT, topic, c.time_ms[0] + 1000000, &off, &err), 0);
    assert_int_equal(off, 3);
    recs_t all = {0};
    bs_log_read(l, TENANT, topic, 0, 100, 0, collect, &all, NULL, &err);
    assert_int_equal(bs_log_offset_at(l, TENANT, topic, all.time_ms[2], &off, &err), 0);
    int64_t want = 0;
    while (all.time_ms[want] < all.time_ms[2])
        want++;
    assert_int_equal(off, want);

    bs_log_topic_stats_t st;
    assert_int_equal(bs_log_topic_stats(l, TENANT, topic, &st, &err), 0);
    assert_int_equal(st.first_offset, 0);
    assert_int_equal(st.next_offset, 3);
    assert_int_equal(st.appended, 3);
    assert_true(st.bytes > 21);
    assert_true(st.first_time_ms > 0 && st.last_time_ms >= st.first_time_ms);

    /* a record over max_record_bytes fails alone; the others stand */
    char small[64];
    tname(small, "small");
    ensure(l, small, &(bs_log_topic_config_t){.max_record_bytes = 16});
    char big[64];
    memset(big, 'x', sizeof big);
    bs_log_record_in_t mix[3] = {
        {.data = "{}", .len = 2}, {.data = big, .len = sizeof big}, {.data = "[]", .len = 2}};
    assert_int_equal(bs_log_append(l, TENANT, small, mix, 3, res, &err), 0);
    assert_int_equal(res[0].code, 0);
    assert_int_equal(res[1].code, BS_ETOOBIG);
    assert_int_equal(res[2].code, 0);
    assert_int_equal(res[0].offset, 0);
    assert_int_equal(res[2].offset, 1);

    /* no such topic; bad names */
    bs_log_record_in_t one = {.data = "{}", .len = 2};
    assert_int_equal(bs_log_append(l, TENANT, "never-made", &one, 1, res, &err), BS_ENOTFOUND);
    assert_int_equal(bs_log_read(l, TENANT, "never-made", 0, 1, 0, collect, &c, NULL, &err),
                     BS_ENOTFOUND);
    assert_int_equal(bs_log_topic_stats(l, TENANT, "never-made", &st, &err), BS_ENOTFOUND);
    assert_int_equal(bs_log_topic_ensure(l, TENANT, "Bad.Name", &(bs_log_topic_config_t){0}, &err),
                     BS_EINVAL);
    assert_int_equal(bs_log_append(l, "a.b", topic, &one, 1, res, &err), BS_EINVAL);
    bs_log_close(l);
}

static void test_dedup(void **state)
{
    (void)state;
    bs_log_t *l = open_log("a");
    char topic[64];
    tname(topic, "dedup");
    /* a window no slow machine runs past between two appends */
    ensure(l, topic, &(bs_log_topic_config_t){.dedup_window_ms = 60000});
    bs_log_append_result_t r;
    assert_int_equal(append1(l, topic, "first", "key-1", "{\"v\":1}", &r), 0);
    assert_int_equal(r.duplicate, 0);
    /* the same key within the window: the original's offset and id, nothing stored */
    assert_int_equal(append1(l, topic, "second", "key-1", "{\"v\":2}", &r), 0);
    assert_int_equal(r.duplicate, 1);
    assert_string_equal(r.id, "first");
    assert_int_equal(append1(l, topic, "third", "key-2", "{\"v\":3}", &r), 1);
    assert_int_equal(r.duplicate, 0);
    /* within one batch too */
    bs_log_record_in_t in[2] = {{.id = "b1", .dedup_key = "key-3", .data = "1", .len = 1},
                                {.id = "b2", .dedup_key = "key-3", .data = "2", .len = 1}};
    bs_log_append_result_t res[2];
    bs_err_t err;
    assert_int_equal(bs_log_append(l, TENANT, topic, in, 2, res, &err), 0);
    assert_int_equal(res[0].offset, 2);
    assert_int_equal(res[0].duplicate, 0);
    assert_int_equal(res[1].offset, 2);
    assert_int_equal(res[1].duplicate, 1);
    assert_string_equal(res[1].id, "b1");
    recs_t c = {0};
    assert_int_equal(bs_log_read(l, TENANT, topic, 0, 100, 0, collect, &c, NULL, &err), 3);
    assert_string_equal(c.key[0], "key-1");
    assert_string_equal(c.data[0], "{\"v\":1}");
    bs_log_topic_stats_t st;
    assert_int_equal(bs_log_topic_stats(l, TENANT, topic, &st, &err), 0);
    assert_int_equal(st.next_offset, 3);
    assert_int_equal(st.duplicates, 2);

    /* after the window the key is new again: the server forgets it on its own timer, so
     * append until it is taken (bounded); until then each is the original's duplicate */
    char brief[64];
    tname(brief, "dedup-brief");
    ensure(l, brief, &(bs_log_topic_config_t){.dedup_window_ms = 1000});
    assert_int_equal(append1(l, brief, "first", "key-1", "{\"v\":1}", &r), 0);
    int64_t off = -1;
    uint64_t until = bs_time_mono_ns() + 30000000000ull;
    while (bs_time_mono_ns() < until) {
        append1(l, brief, "fourth", "key-1", "{\"v\":4}", &r);
        if (!r.duplicate) {
            off = r.offset;
            break;
        }
        assert_int_equal(r.offset, 0);
        assert_string_equal(r.id, "first");
        sleep_ms(100);
    }
    assert_int_equal(off, 1);

    /* without a dedup window, keys do not deduplicate */
    char plain[64];
    tname(plain, "nodedup");
    ensure(l, plain, NULL);
    assert_int_equal(append1(l, plain, NULL, "same", "1", &r), 0);
    assert_int_equal(append1(l, plain, NULL, "same", "2", &r), 1);
    assert_int_equal(r.duplicate, 0);
    bs_log_close(l);
}

/* ---- concurrent appends ------------------------------------------------------------------ */

#define WRITERS 6
#define PER_WRITER 60
#define BATCH 5

typedef struct {
    bs_log_t *l;
    const char *topic;
    int writer;
    int64_t offsets[PER_WRITER * BATCH];
    int failed;
} writer_t;

static void *writer_main(void *arg)
{
    writer_t *w = arg;
    char data[BATCH][64];
    for (int i = 0; i < PER_WRITER; i++) {
        bs_log_record_in_t in[BATCH];
        for (int j = 0; j < BATCH; j++) {
            int n =
                snprintf(data[j], sizeof data[j], "{\"w\":%d,\"i\":%d}", w->writer, i * BATCH + j);
            in[j] = (bs_log_record_in_t){.data = data[j], .len = (size_t)n};
        }
        bs_log_append_result_t res[BATCH];
        bs_err_t err;
        if (bs_log_append(w->l, TENANT, w->topic, in, BATCH, res, &err) != 0) {
            w->failed++;
            continue;
        }
        for (int j = 0; j < BATCH; j++)
            w->offsets[i * BATCH + j] = res[j].code ? -1 : res[j].offset;
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    char (*data)[64];
    int64_t n;
} all_t;

static int collect_all(const bs_log_record_t *r, void *ud)
{
    all_t *a = ud;
    if (r->offset >= 0 && r->offset < a->n)
        snprintf(a->data[r->offset], 64, "%.*s", (int)r->len, (const char *)r->data);
    return 0;
}

static void test_concurrent_appends(void **state)
{
    (void)state;
    bs_log_t *l = open_log("a");
    char topic[64];
    tname(topic, "busy");
    ensure(l, topic, NULL);
    writer_t *w = calloc(WRITERS, sizeof *w);
    pthread_t th[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (writer_t){.l = l, .topic = topic, .writer = i};
        pthread_create(&th[i], NULL, writer_main, &w[i]);
    }
    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);
    const int64_t total = WRITERS * PER_WRITER * BATCH;
    int64_t *all = malloc(sizeof *all * (size_t)total);
    int64_t k = 0;
    for (int i = 0; i < WRITERS; i++) {
        assert_int_equal(w[i].failed, 0);
        for (int j = 0; j < PER_WRITER * BATCH; j++)
            all[k++] = w[i].offsets[j];
    }
    qsort(all, (size_t)total, sizeof *all, cmp_i64);
    for (int64_t i = 0; i < total; i++)
        assert_int_equal(all[i], i); /* dense, each once */
    /* every offset holds the record that was told it */
    all_t a = {.data = calloc((size_t)total, 64), .n = total};
    int64_t from = 0;
    bs_err_t err;
    while (from < total) {
        int got = bs_log_read(l, TENANT, topic, from, 1000, 0, collect_all, &a, &from, &err);
        assert_true(got > 0);
    }
    for (int i = 0; i < WRITERS; i++)
        for (int j = 0; j < PER_WRITER * BATCH; j++) {
            char want[64];
            snprintf(want, sizeof want, "{\"w\":%d,\"i\":%d}", i, j);
            assert_string_equal(a.data[w[i].offsets[j]], want);
        }
    free(a.data);
    free(all);
    free(w);
    bs_log_close(l);
}

/* ---- consumer groups --------------------------------------------------------------------- */

typedef struct {
    int n;
    int64_t offset[64];
    int delivery[64];
    char id[64][BS_LOG_DELIVERY_ID_MAX + 1];
    char data[64][512];
} dl_t;

static int collect_delivery(const bs_log_delivery_t *d, void *ud)
{
    dl_t *c = ud;
    if (c->n < 64) {
        c->offset[c->n] = d->rec.offset;
        c->delivery[c->n] = d->delivery;
        assert_true(strlen(d->delivery_id) <= BS_LOG_DELIVERY_ID_MAX);
        snprintf(c->id[c->n], sizeof c->id[0], "%s", d->delivery_id);
        snprintf(c->data[c->n], sizeof c->data[0], "%.*s", (int)d->rec.len,
                 (const char *)d->rec.data);
    }
    c->n++;
    return 0;
}

static int fetch(bs_log_t *l, const char *topic, const char *group, int max, int wait_ms, dl_t *c)
{
    bs_err_t err;
    bs_err_clear(&err);
    memset(c, 0, sizeof *c);
    int n = bs_log_fetch(l, TENANT, topic, group, max, wait_ms, collect_delivery, c, &err);
    if (n < 0)
        fail_msg("fetch %s/%s: %d %s", topic, group, n, err.msg);
    assert_int_equal(n, c->n);
    return n;
}

static void ack(bs_log_t *l, const char *topic, const char *group, const char *id)
{
    bs_err_t err;
    bs_err_clear(&err);
    if (bs_log_ack(l, TENANT, topic, group, id, &err) != 0)
        fail_msg("ack: %s", err.msg);
}

static void consumer(bs_log_t *l, const char *topic, const char *group,
                     const bs_log_consumer_config_t *c)
{
    bs_err_t err;
    bs_err_clear(&err);
    if (bs_log_consumer_ensure(l, TENANT, topic, group, c, &err) != 0)
        fail_msg("consumer ensure: %s", err.msg);
}

static int count_group(const char *group, void *ud)
{
    (void)group;
    (*(int *)ud)++;
    return 0;
}

/* An async fetch whose completion the test waits for. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls, code, n;
    int64_t offset;
    char id[BS_LOG_DELIVERY_ID_MAX + 1];
} fetch_wait_t;

static void fetch_wait_init(fetch_wait_t *f)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
}

static void on_fetch_wait(void *ud, int code, const bs_log_delivery_t *d, int n,
                          const bs_err_t *err)
{
    (void)err;
    fetch_wait_t *f = ud;
    pthread_mutex_lock(&f->mu);
    f->code = code;
    f->n = n;
    if (n > 0) {
        f->offset = d[0].rec.offset;
        snprintf(f->id, sizeof f->id, "%s", d[0].delivery_id);
    }
    f->calls++;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* Waits up to ms for the callback; returns how often it ran. */
static int fetch_wait_for(fetch_wait_t *f, int ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ms / 1000;
    pthread_mutex_lock(&f->mu);
    while (!f->calls)
        if (pthread_cond_timedwait(&f->cv, &f->mu, &dl) != 0)
            break;
    int c = f->calls;
    pthread_mutex_unlock(&f->mu);
    return c;
}

static void test_consumer_basics(void **state)
{
    (void)state;
    bs_log_t *l = open_log("a");
    char topic[64];
    tname(topic, "jobs");
    ensure(l, topic, NULL);
    for (int i = 0; i < 5; i++) {
        char d[32];
        snprintf(d, sizeof d, "{\"i\":%d}", i);
        append1(l, topic, NULL, NULL, d, NULL);
    }
    consumer(l, topic, "workers", &(bs_log_consumer_config_t){0});
    consumer(l, topic, "workers", &(bs_log_consumer_config_t){.ack_wait_ms = 60000}); /* update */
    consumer(l, topic, "late", &(bs_log_consumer_config_t){.deliver_new = 1});
    dl_t c;
    assert_int_equal(fetch(l, topic, "workers", 3, 0, &c), 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(c.offset[i], i);
        assert_int_equal(c.delivery[i], 1);
        ack(l, topic, "workers", c.id[i]);
    }
    ack(l, topic, "workers", c.id[0]); /* again: fine */
    assert_int_equal(fetch(l, topic, "workers", 10, 1000, &c), 2);
    assert_int_equal(c.offset[0], 3);
    assert_int_equal(c.offset[1], 4);
    assert_string_equal(c.data[1], "{\"i\":4}");
    bs_log_consumer_stats_t st;
    bs_err_t err;
    assert_int_equal(bs_log_consumer_stats(l, TENANT, topic, "workers", &st, &err), 0);
    assert_int_equal(st.ack_pending, 2);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.next_offset, 5);
    assert_int_equal(st.ack_floor, 3);
    assert_int_equal(st.max_ack_pending, 1000);
    assert_int_equal(st.delivered, 5);
    assert_int_equal(st.acked, 4);
    ack(l, topic, "workers", c.id[0]);
    ack(l, topic, "workers", c.id[1]);
    assert_int_equal(fetch(l, topic, "workers", 10, 0, &c), 0);
    assert_int_equal(bs_log_consumer_stats(l, TENANT, topic, "workers", &st, &err), 0);
    assert_int_equal(st.ack_pending, 0);
    assert_int_equal(st.ack_floor, 5);
    /* a group made with deliver_new sees only what comes after it */
    append1(l, topic, NULL, NULL, "{\"i\":5}", NULL);
    assert_int_equal(fetch(l, topic, "late", 10, 2000, &c), 1);
    assert_int_equal(c.offset[0], 5);
    bs_log_t *l2 = open_log("b");
    assert_int_equal(fetch(l, topic, "workers", 10, 0, &c), 1); /* offset 5 */
    ack(l, topic, "workers", c.id[0]);
    /* a waiting fetch (a minute) ends as soon as one record comes, appended by another
     * replica: it is not held for the batch of 10 nor for its wait */
    fetch_wait_t fw;
    fetch_wait_init(&fw);
    assert_int_equal(
        bs_log_fetch_async(l, TENANT, topic, "workers", 10, 60000, on_fetch_wait, &fw, &err), 0);
    sleep_ms(200); /* the pull is on the server before the record comes */
    pthread_mutex_lock(&fw.mu);
    assert_int_equal(fw.calls, 0); /* nothing to deliver: it waits */
    pthread_mutex_unlock(&fw.mu);
    append1(l2, topic, NULL, NULL, "{\"i\":6}", NULL);
    assert_int_equal(fetch_wait_for(&fw, 30000), 1);
    assert_int_equal(fw.code, 0);
    assert_int_equal(fw.n, 1);
    assert_int_equal(fw.offset, 6);
    ack(l, topic, "workers", fw.id);
    int groups = 0;
    assert_int_equal(bs_log_consumers(l, TENANT, topic, count_group, &groups, &err), 0);
    assert_int_equal(groups, 2);
    /* the groups' gauges and counters in /metrics */
    bs_buf_t mb;
    bs_buf_init(&mb);
    bs_log_consumer_stats(l, TENANT, topic, "workers", &st, &err); /* refreshes the gauges */
    bs_log_metrics(l, &mb);
    bs_buf_putc(&mb, '\0');
    char want[256];
    snprintf(want, sizeof want,
             "basalt_consumer_ack_pending{tenant=\"%s\",topic=\"%s\",group=\"workers\"} 0\n",
             TENANT, topic);
    assert_non_null(strstr(mb.data, want));
    snprintf(want, sizeof want, "basalt_log_appends_total{tenant=\"%s\",topic=\"%s\"} 6\n", TENANT,
             topic);
    assert_non_null(strstr(mb.data, want)); /* this process appended 6 (the 7th came from b) */
    assert_non_null(strstr(mb.data, "# TYPE basalt_log_append_seconds histogram\n"));
    bs_buf_free(&mb);
    assert_int_equal(bs_log_consumer_delete(l, TENANT, topic, "late", &err), 0);
    assert_int_equal(bs_log_consumer_delete(l, TENANT, topic, "late", &err), 0);
    groups = 0;
    bs_log_consumers(l, TENANT, topic, count_group, &groups, &err);
    assert_int_equal(groups, 1);
    assert_int_equal(bs_log_fetch(l, TENANT, topic, "late", 1, 0, collect_delivery, &c, &err),
                     BS_ENOTFOUND);
    assert_int_equal(
        bs_log_consumer_ensure(l, TENANT, "never-made", "g", &(bs_log_consumer_config_t){0}, &err),
        BS_ENOTFOUND);
    assert_int_equal(bs_log_consumer_ensure(l, TENANT, topic, "g",
                                            &(bs_log_consumer_config_t){.dead_letter = topic},
                                            &err),
                     BS_EINVAL);
    assert_int_equal(bs_log_fetch(l, TENANT, topic, "workers", 0, 0, collect_delivery, &c, &err),
                     BS_EINVAL);
    bs_log_close(l2);
    bs_log_close(l);
}

static void test_redelivery_and_progress(void **state)
{
    (void)state;
    bs_log_t *l = open_log("a");
    char topic[64];
    tname(topic, "redeliver");
    ensure(l, topic, NULL);
    append1(l, topic, "only", NULL, "{\"x\":1}", NULL);
    consumer(l, topic, "g", &(bs_log_consumer_config_t){.ack_wait_ms = 400});
    dl_t c;
    assert_int_equal(fetch(l, topic, "g", 5, 0, &c), 1);
    assert_int_equal(c.delivery[0], 1);
    /* not acked: back after ack_wait, with its delivery count */
    assert_int_equal(fetch(l, topic, "g", 5, 10000, &c), 1);
    assert_int_equal(c.offset[0], 0);
    assert_int_equal(c.delivery[0], 2);
    bs_log_consumer_stats_t st;
    bs_err_t err;
    assert_int_equal(bs_log_consumer_stats(l, TENANT, topic, "g", &st, &err), 0);
    assert_int_equal(st.redelivered, 1);
    ack(l, topic, "g", c.id[0]);

    /* in_progress restarts ack_wait: kept well inside it (every ack_wait/8), the record is
     * not redelivered over several ack_waits */
    append1(l, topic, NULL, NULL, "{\"x\":2}", NULL);
    char group2[] = "slow";
    consumer(l, topic, group2, &(bs_log_consumer_config_t){.ack_wait_ms = 2000});
    assert_int_equal(fetch(l, topic, group2, 5, 0, &c), 2);
    char id0[BS_LOG_DELIVERY_ID_MAX + 1], id1[BS_LOG_DELIVERY_ID_MAX + 1];
    snprintf(id0, sizeof id0, "%s", c.id[0]);
    snprintf(id1, sizeof id1, "%s", c.id[1]);
    ack(l, topic, group2, id0);
    for (int i = 0; i < 24; i++) {
        sleep_ms(250);
        assert_int_equal(bs_log_in_progress(l, TENANT, topic, group2, id1, &err), 0);
        dl_t none;
        assert_int_equal(fetch(l, topic, group2, 5, 0, &none), 0);
    }
    ack(l, topic, group2, id1);
    /* nack with a delay: not before it, then redelivered */
    append1(l, topic, NULL, NULL, "{\"x\":3}", NULL);
    assert_int_equal(fetch(l, topic, group2, 5, 0, &c), 1);
    assert_int_equal(c.offset[0], 2);
    assert_int_equal(bs_log_nack(l, TENANT, topic, group2, c.id[0], 1500, &err), 0);
    dl_t again;
    assert_int_equal(fetch(l, topic, group2, 5, 0, &again), 0);
    assert_int_equal(fetch(l, topic, group2, 5, 15000, &again), 1);
    assert_int_equal(again.offset[0], 2);
    assert_int_equal(again.delivery[0], 2);
    /* nack without a delay: at the next fetch */
    assert_int_equal(bs_log_nack(l, TENANT, topic, group2, again.id[0], 0, &err), 0);
    assert_int_equal(fetch(l, topic, group2, 5, 5000, &again), 1);
    assert_int_equal(again.delivery[0], 3);
    ack(l, topic, group2, again.id[0]);
    bs_log_close(l);
}

static void test_max_ack_pending(void **state)
{
    (void)state;
    bs_log_t *l = open_log("a");
    char topic[64];
    tname(topic, "stall");
    ensure(l, topic, NULL);
    for (int i = 0; i < 5; i++)
        append1(l, topic, NULL, NULL, "{}", NULL);
    consumer(l, topic, "g", &(bs_log_consumer_config_t){.max_ack_pending = 2});
    dl_t c;
    assert_int_equal(fetch(l, topic, "g", 5, 0, &c), 2);
    dl_t none;
    assert_int_equal(fetch(l, topic, "g", 5, 300, &none), 0);
    bs_log_consumer_stats_t st;
    bs_err_t err;
    assert_int_equal(bs_log_consumer_stats(l, TENANT, topic, "g", &st, &err), 0);
    assert_int_equal(st.stalled, 1);
    assert_int_equal(st.ack_pending, 2);
    assert_int_equal(st.max_ack_pending, 2);
    ack(l, topic, "g", c.id[0]);
    dl_t more;
    assert_int_equal(fetch(l, topic, "g", 5, 5000, &more), 1);
    assert_int_equal(more.offset[0], 2);
    bs_log_close(l);
}

/* Configs are held to the same bounds as on the segments backend (no duration that would
 * overflow JetStream's nanoseconds), and what log.h allows is taken: max_ack_pending -1 (no
 * limit), a nack delay of any length. */
static void test_config_bounds(void **state)
{
    (void)state;
    bs_log_t *l = open_log("a");
    char topic[64];
    tname(topic, "bounds");
    bs_err_t err;
    assert_int_equal(bs_log_topic_ensure(l, TENANT, topic,
                                         &(bs_log_topic_config_t){.retention_ms = INT64_MAX}, &err),
                     BS_EINVAL);
    assert_string_equal(err.field, "retention_ms");
    assert_int_equal(bs_log_topic_ensure(l, TENANT, topic,
                                         &(bs_log_topic_config_t){.dedup_window_ms = INT64_MAX},
                                         &err),
                     BS_EINVAL);
    assert_int_equal(bs_log_topic_ensure(l, TENANT, topic,
                                         &(bs_log_topic_config_t){.max_record_bytes = INT32_MAX},
                                         &err),
                     BS_EINVAL);
    ensure(l, topic, NULL);
    assert_int_equal(bs_log_consumer_ensure(l, TENANT, topic, "g",
                                            &(bs_log_consumer_config_t){.ack_wait_ms = INT64_MAX},
                                            &err),
                     BS_EINVAL);
    assert_string_equal(err.field, "ack_wait");
    assert_int_equal(bs_log_consumer_ensure(l, TENANT, topic, "g",
                                            &(bs_log_consumer_config_t){.max_ack_pending = -2},
                                            &err),
                     BS_EINVAL);
    for (int i = 0; i < 5; i++)
        append1(l, topic, NULL, NULL, "{}", NULL);
    consumer(l, topic, "g", &(bs_log_consumer_config_t){.max_ack_pending = -1});
    dl_t c;
    assert_int_equal(fetch(l, topic, "g", 5, 0, &c), 5);
    bs_log_consumer_stats_t st;
    assert_int_equal(bs_log_consumer_stats(l, TENANT, topic, "g", &st, &err), 0);
    assert_int_equal(st.max_ack_pending, -1);
    assert_int_equal(st.ack_pending, 5);
    assert_int_equal(st.stalled, 0);
    /* a delay past what nanoseconds hold: taken, and the record waits */
    assert_int_equal(bs_log_nack(l, TENANT, topic, "g", c.id[0], INT64_MAX, &err), 0);
    dl_t none;
    assert_int_equal(fetch(l, topic, "g", 5, 300, &none), 0);
    bs_log_close(l);
}

/* Fetches from the group until a record is past max_deliver and dealt with: dead-lettered
 * into dlq (r gets what it holds), or, with dlq NULL, dropped (the group counts it). No
 * fetch hands anything to the caller: what comes back is past max_deliver. Bounded. */
static void fetch_until_dead_lettered(bs_log_t *l, const char *topic, const char *group,
                                      const char *dlq, recs_t *r)
{
    bs_err_t err;
    uint64_t until = bs_time_mono_ns() + 30000000000ull;
    while (bs_time_mono_ns() < until) {
        dl_t none;
        assert_int_equal(fetch(l, topic, group, 5, 500, &none), 0);
        memset(r, 0, sizeof *r);
        if (dlq) {
            bs_log_read(l, TENANT, dlq, 0, 10, 0, collect, r, NULL, &err); /* may not exist */
            if (r->n > 0)
                return;
        } else {
            bs_log_consumer_stats_t st;
            assert_int_equal(bs_log_consumer_stats(l, TENANT, topic, group, &st, &err), 0);
            if (st.dead_lettered > 0)
                return;
        }
    }
    fail_msg("group %s: nothing past max_deliver was dealt with", group);
}

static void test_dead_letter(void **state)
{
    (void)state;
    bs_log_t *l = open_log("a");
    char topic[64], dlq[64];
    tname(topic, "payments");
    tname(dlq, "payments-dlq");
    ensure(l, topic, NULL);
    ensure(l, dlq, &(bs_log_topic_config_t){.dedup_window_ms = 60000});
    consumer(l, topic, "g",
             &(bs_log_consumer_config_t){.ack_wait_ms = 300, .max_deliver = 2, .dead_letter = dlq});
    append1(l, topic, "poison", NULL, "{\"amount\":13}", NULL);
    append1(l, topic, "fine", NULL, "{\"amount\":1}", NULL);
    dl_t c;
    assert_int_equal(fetch(l, topic, "g", 1, 0, &c), 1); /* poison, delivery 1 */
    assert_int_equal(c.offset[0], 0);
    assert_int_equal(fetch(l, topic, "g", 1, 0, &c), 1); /* fine */
    assert_int_equal(c.offset[0], 1);
    ack(l, topic, "g", c.id[0]);
    assert_int_equal(fetch(l, topic, "g", 5, 10000, &c), 1); /* poison, delivery 2 */
    assert_int_equal(c.offset[0], 0);
    assert_int_equal(c.delivery[0], 2);
    /* the third delivery goes to the dead letter topic instead, then it is acked (before
     * the fetch that met it ends) */
    bs_err_t err;
    recs_t r = {0};
    fetch_until_dead_lettered(l, topic, "g", dlq, &r);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.id[0], "poison");
    cJSON *j = cJSON_Parse(r.data[0]);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "topic")->valuestring, topic);
    assert_int_equal(cJSON_GetObjectItem(j, "offset")->valueint, 0);
    assert_int_equal(cJSON_GetObjectItem(j, "deliveries")->valueint, 2);
    assert_string_equal(cJSON_GetObjectItem(j, "group")->valuestring, "g");
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "event"), "amount")->valueint, 13);
    cJSON_Delete(j);
    bs_log_consumer_stats_t st;
    assert_int_equal(bs_log_consumer_stats(l, TENANT, topic, "g", &st, &err), 0);
    assert_int_equal(st.dead_lettered, 1);
    assert_int_equal(st.ack_pending, 0);
    assert_int_equal(st.ack_floor, 2);
    char key[128];
    snprintf(key, sizeof key, "dlq/%s/g/0", topic);
    assert_string_equal(r.key[0], key); /* a second dead-lettering would be a duplicate */
    /* a dead letter topic that does not exist is made (like the source topic) */
    char made[64];
    tname(made, "made-dlq");
    consumer(
        l, topic, "g2",
        &(bs_log_consumer_config_t){.ack_wait_ms = 300, .max_deliver = 1, .dead_letter = made});
    assert_int_equal(fetch(l, topic, "g2", 1, 0, &c), 1); /* poison, delivery 1 */
    assert_int_equal(fetch(l, topic, "g2", 1, 0, &c), 1); /* fine */
    ack(l, topic, "g2", c.id[0]);
    fetch_until_dead_lettered(l, topic, "g2", made, &r);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.id[0], "poison");
    /* without a dead letter topic, records past max_deliver are dropped (and counted) */
    consumer(l, topic, "drop", &(bs_log_consumer_config_t){.ack_wait_ms = 300, .max_deliver = 1});
    assert_int_equal(fetch(l, topic, "drop", 1, 0, &c), 1);
    assert_int_equal(c.offset[0], 0);
    assert_int_equal(fetch(l, topic, "drop", 1, 0, &c), 1);
    ack(l, topic, "drop", c.id[0]);
    fetch_until_dead_lettered(l, topic, "drop", NULL, &r);
    assert_int_equal(bs_log_consumer_stats(l, TENANT, topic, "drop", &st, &err), 0);
    assert_int_equal(st.dead_lettered, 1);
    assert_int_equal(st.ack_pending, 0);
    bs_log_close(l);
}

static void test_ack_from_another_replica(void **state)
{
    (void)state;
    bs_log_t *a = open_log("replica-a"), *b = open_log("replica-b");
    char topic[64];
    tname(topic, "shared");
    ensure(a, topic, NULL);
    append1(a, topic, NULL, NULL, "{\"k\":1}", NULL);
    append1(b, topic, NULL, NULL, "{\"k\":2}", NULL);
    consumer(a, topic, "g", &(bs_log_consumer_config_t){.ack_wait_ms = 500});
    consumer(b, topic, "other", &(bs_log_consumer_config_t){0});
    dl_t c;
    assert_int_equal(fetch(a, topic, "g", 1, 0, &c), 1);
    bs_err_t err;
    /* the id is checked against the group and topic it names */
    assert_int_equal(bs_log_ack(b, TENANT, topic, "other", c.id[0], &err), BS_EINVAL);
    assert_int_equal(bs_log_ack(b, TENANT, topic, "g", "garbage", &err), BS_EINVAL);
    char forged[BS_LOG_DELIVERY_ID_MAX + 1];
    snprintf(forged, sizeof forged, "%s", c.id[0]);
    forged[0] = forged[0] == '1' ? '2' : '1';
    assert_int_equal(bs_log_ack(b, TENANT, topic, "g", forged, &err), BS_EINVAL);
    ack(b, topic, "g", c.id[0]); /* acked through the other replica */
    dl_t d;
    assert_int_equal(fetch(b, topic, "g", 5, 0, &d), 1); /* the next record, on b */
    assert_int_equal(d.offset[0], 1);
    assert_int_equal(bs_log_nack(a, TENANT, topic, "g", d.id[0], 0, &err), 0); /* nacked on a */
    /* after ack_wait, only the nacked one comes back; the acked one never does */
    dl_t e;
    assert_int_equal(fetch(a, topic, "g", 5, 5000, &e), 1);
    assert_int_equal(e.offset[0], 1);
    ack(a, topic, "g", e.id[0]);
    /* past ack_wait (500 ms) nothing comes back: a fetch that would end at the first
     * redelivery */
    assert_int_equal(fetch(a, topic, "g", 5, 1500, &e), 0);
    /* a deleted group: acks report it */
    assert_int_equal(bs_log_consumer_delete(a, TENANT, topic, "g", &err), 0);
    assert_int_equal(bs_log_ack(b, TENANT, topic, "g", c.id[0], &err), BS_ENOTFOUND);
    bs_log_close(b);
    bs_log_close(a);
}

/* The FNV-1a checksum log_nats_group.c puts on a delivery id (a checksum, not a secret: a
 * client can compute it, so the id's shape must be checked on its own). */
static uint32_t id_fnv(const char *stream, const char *group, const char *tail)
{
    uint32_t h = 2166136261u;
    const char *parts[3] = {stream, group, tail};
    size_t lens[3] = {strlen(stream) + 1, strlen(group) + 1, strlen(tail)};
    for (int k = 0; k < 3; k++)
        for (size_t i = 0; i < lens[k]; i++)
            h = (h ^ (unsigned char)parts[k][i]) * 16777619u;
    return h;
}

/* Delivery ids come from clients: a forged or oversized one is BS_EINVAL, and nothing in
 * it reaches the NATS connection as protocol (an id holding "\r\nPUB ..." must not publish
 * a record, nor break the connection). */
static void test_forged_delivery_ids(void **state)
{
    (void)state;
    bs_log_t *l = open_log("a");
    char topic[64], stream[160], subject[160];
    tname(topic, "forged");
    snprintf(stream, sizeof stream, "basalt_%zu_%s_%s", strlen(TENANT), TENANT, topic);
    snprintf(subject, sizeof subject, "basalt.log.%s.%s", TENANT, topic);
    ensure(l, topic, NULL);
    assert_int_equal(append1(l, topic, NULL, NULL, "{\"n\":0}", NULL), 0);
    consumer(l, topic, "g", &(bs_log_consumer_config_t){0});
    dl_t c;
    assert_int_equal(fetch(l, topic, "g", 1, 0, &c), 1);
    bs_err_t err;
    /* a NATS command smuggled in: "PUB <subject> 2\r\n{}" between two harmless ones */
    char inject[200];
    snprintf(inject, sizeof inject, "x 0\r\n\r\nPUB %s 2\r\n{}\r\nPUB y", subject);
    /* 1. the short form "<5 numbers>.<checksum>": the checksum matches, the rest is not
     *    five numbers */
    char tail[256], forged[512];
    int k = snprintf(tail, sizeof tail, "%s", inject);
    for (int d = 0; d < 104; d++) /* a parser counting dots loosely could see "4 dots" here */
        tail[k++] = '.';
    tail[k] = '\0';
    snprintf(forged, sizeof forged, "%s.%08x", tail, id_fnv(stream, "g", tail));
    assert_true(strlen(forged) <= BS_LOG_DELIVERY_ID_MAX);
    assert_int_equal(bs_log_ack(l, TENANT, topic, "g", forged, &err), BS_EINVAL);
    assert_string_equal(err.field, "delivery_id");
    /* 2. the whole-subject form (servers with a domain) */
    snprintf(forged, sizeof forged, "$JS.ACK.d.h.%s.g.1.1.1.1.0.%s", stream, inject);
    assert_true(strlen(forged) <= BS_LOG_DELIVERY_ID_MAX);
    assert_int_equal(bs_log_ack(l, TENANT, topic, "g", forged, &err), BS_EINVAL);
    assert_int_equal(bs_log_nack(l, TENANT, topic, "g", forged, 0, &err), BS_EINVAL);
    assert_int_equal(bs_log_in_progress(l, TENANT, topic, "g", forged, &err), BS_EINVAL);
    /* 3. wildcards, empty tokens, short forms off by one, oversized, empty */
    static const char *bad[] = {"",
                                ".",
                                "1.2.3.4.5",
                                "1.2.3.4.5.",
                                "1..3.4.5.00000000",
                                "1.2.3.4.5.6.00000000",
                                "$JS.ACK.d.h.s.g.1.1.1.1.0.>",
                                "$JS.ACK.*.h.s.g.1.1.1.1.0.x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(bs_log_ack(l, TENANT, topic, "g", bad[i], &err), BS_EINVAL);
    char big[BS_LOG_DELIVERY_ID_MAX + 40];
    memset(big, '1', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(bs_log_ack(l, TENANT, topic, "g", big, &err), BS_EINVAL);
    assert_int_equal(bs_log_ack(l, TENANT, topic, "g", NULL, &err), BS_EINVAL);
    /* nothing was published by the forged ids: the next record takes offset 1 (the
     * connection is ordered, so an injected PUB would have come first), and the real id
     * still acks */
    assert_int_equal(append1(l, topic, NULL, NULL, "{\"n\":1}", NULL), 1);
    ack(l, topic, "g", c.id[0]);
    bs_log_close(l);
}

/* ---- watches, drop ----------------------------------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int fired;
} wake_t;

static void on_wake(void *ud)
{
    wake_t *w = ud;
    pthread_mutex_lock(&w->mu);
    w->fired++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Waits up to ms for the watch to fire; returns how often it fired. */
static int wait_wake(wake_t *w, int ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ms / 1000;
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    while (!w->fired)
        if (pthread_cond_timedwait(&w->cv, &w->mu, &dl) != 0)
            break;
    int f = w->fired;
    pthread_mutex_unlock(&w->mu);
    return f;
}

static void wake_init(wake_t *w)
{
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->fired = 0;
}

static void test_watch_and_drop(void **state)
{
    (void)state;
    bs_log_t *a = open_log("a"), *b = open_log("b");
    char topic[64];
    tname(topic, "tail");
    ensure(a, topic, NULL);
    append1(a, topic, NULL, NULL, "{}", NULL); /* next_offset 1 */
    bs_err_t err;
    bs_log_topic_stats_t st;
    assert_int_equal(bs_log_topic_stats(b, TENANT, topic, &st, &err), 0); /* b knows the topic */
    wake_t w1, w2, w3, w4;
    wake_init(&w1);
    wake_init(&w2);
    wake_init(&w3);
    wake_init(&w4);
    /* the condition holds already: fires (maybe before watch returns) */
    int64_t id1 = bs_log_watch(b, TENANT, topic, 0, on_wake, &w1, &err);
    assert_true(id1 > 0);
    assert_int_equal(wait_wake(&w1, 5000), 1);
    /* waits for the next record, appended by the other replica */
    int64_t id2 = bs_log_watch(b, TENANT, topic, 1, on_wake, &w2, &err);
    assert_true(id2 > 0);
    int64_t id3 = bs_log_watch(b, TENANT, topic, 5, on_wake, &w3, &err);
    assert_true(id3 > 0);
    sleep_ms(300);
    assert_int_equal(w2.fired, 0);
    append1(a, topic, NULL, NULL, "{}", NULL);
    assert_int_equal(wait_wake(&w2, 10000), 1);
    assert_int_equal(w3.fired, 0);
    bs_log_unwatch(b, id3); /* never fires now */
    bs_log_unwatch(b, id2); /* fired: fine */
    bs_log_unwatch(b, 9999999);
    /* a drop (by the other replica) wakes a watcher */
    int64_t id4 = bs_log_watch(b, TENANT, topic, 100, on_wake, &w4, &err);
    assert_true(id4 > 0);
    consumer(a, topic, "g", &(bs_log_consumer_config_t){0});
    assert_int_equal(bs_log_topic_drop(a, TENANT, topic, &err), 0);
    assert_int_equal(wait_wake(&w4, 10000), 1);
    assert_int_equal(w3.fired, 0);
    assert_int_equal(bs_log_topic_drop(a, TENANT, topic, &err), 0); /* absent: fine */
    assert_int_equal(bs_log_topic_stats(b, TENANT, topic, &st, &err), BS_ENOTFOUND);
    bs_log_record_in_t one = {.data = "{}", .len = 2};
    bs_log_append_result_t res;
    assert_int_equal(bs_log_append(b, TENANT, topic, &one, 1, &res, &err), BS_ENOTFOUND);
    int groups = 0;
    assert_int_equal(bs_log_consumers(a, TENANT, topic, count_group, &groups, &err), BS_ENOTFOUND);
    dl_t c;
    assert_int_equal(bs_log_fetch(a, TENANT, topic, "g", 1, 0, collect_delivery, &c, &err),
                     BS_ENOTFOUND);
    /* made again: offsets start over, for both replicas */
    ensure(a, topic, NULL);
    assert_int_equal(append1(b, topic, NULL, NULL, "{}", NULL), 0);
    bs_log_close(b);
    bs_log_close(a);
}

/* ---- close with work pending ------------------------------------------------------------- */

typedef struct {
    int calls, code, n;
} done_t;

static void on_fetch_done(void *ud, int code, const bs_log_delivery_t *d, int n,
                          const bs_err_t *err)
{
    (void)d;
    (void)err;
    done_t *x = ud;
    x->calls++;
    x->code = code;
    x->n = n;
}

static void on_append_done(void *ud, int code, const bs_log_append_result_t *r, int n,
                           const bs_err_t *err)
{
    (void)r;
    (void)err;
    done_t *x = ud;
    x->calls++;
    x->code = code;
    x->n = n;
}

static void test_close_completes_pending(void **state)
{
    (void)state;
    bs_log_t *l = open_log("a");
    char topic[64];
    tname(topic, "closing");
    ensure(l, topic, NULL);
    consumer(l, topic, "g", &(bs_log_consumer_config_t){0});
    done_t f = {0}, ap = {0};
    bs_err_t err;
    assert_int_equal(bs_log_fetch_async(l, TENANT, topic, "g", 10, 60000, on_fetch_done, &f, &err),
                     0);
    bs_log_record_in_t one = {.data = "{}", .len = 2};
    assert_int_equal(bs_log_append_async(l, TENANT, topic, &one, 1, on_append_done, &ap, &err), 0);
    sleep_ms(50);
    bs_log_close(l); /* well before the fetch's minute: it ends now */
    assert_int_equal(f.calls, 1);
    assert_int_equal(ap.calls, 1);
    assert_true(f.code == 0 && f.n <= 1);
    /* the append was answered (it was durable) or failed as a whole, never lost silently */
    assert_true((ap.code == 0 && ap.n == 1) || ap.code < 0);
}

/* ---- the server restarts ----------------------------------------------------------------- */

static int read_count(bs_log_t *l, const char *topic, recs_t *c)
{
    bs_err_t err;
    memset(c, 0, sizeof *c);
    int64_t from = 0;
    int total = 0;
    for (;;) {
        int n = bs_log_read(l, TENANT, topic, from, 1000, 0, collect, c, &from, &err);
        if (n <= 0)
            return n < 0 ? n : total;
        total += n;
    }
}

/* Appends until JetStream answers again (after a restart), bounded. */
static int64_t append_when_back(bs_log_t *l, const char *topic, const char *data)
{
    for (int i = 0; i < 300; i++) {
        bs_log_record_in_t in = {.data = data, .len = strlen(data), .dedup_key = data};
        bs_log_append_result_t r;
        bs_err_t err;
        if (bs_log_append(l, TENANT, topic, &in, 1, &r, &err) == 0 && r.code == 0)
            return r.offset;
        sleep_ms(100);
    }
    fail_msg("jetstream did not come back");
    return -1;
}

static void restart_round(const char *how)
{
    bs_log_t *l = open_log("a");
    char topic[64], prefix[32];
    snprintf(prefix, sizeof prefix, "restart-%s", how);
    tname(topic, prefix);
    ensure(l, topic, &(bs_log_topic_config_t){.dedup_window_ms = 120000});
    consumer(l, topic, "g", &(bs_log_consumer_config_t){.ack_wait_ms = 60000});
    char d[32];
    for (int i = 0; i < 40; i++) {
        snprintf(d, sizeof d, "{\"i\":%d}", i);
        append1(l, topic, NULL, d, d, NULL);
    }
    dl_t c;
    assert_int_equal(fetch(l, topic, "g", 10, 0, &c), 10);
    for (int i = 0; i < 5; i++)
        ack(l, topic, "g", c.id[i]);
    if (strcmp(how, "kill") == 0) {
        nats_control("kill"); /* SIGKILL: nothing flushed by the server on the way out */
        nats_control("start");
    } else {
        nats_control("restart"); /* SIGTERM, then start on the same store */
    }
    /* the connection comes back by itself; appends resume with the next offsets */
    int64_t off = append_when_back(l, topic, "{\"i\":40}");
    assert_int_equal(off, 40);
    /* every acknowledged record is there, once, in order */
    recs_t r;
    assert_int_equal(read_count(l, topic, &r), 41);
    for (int i = 0; i < 41; i++) {
        snprintf(d, sizeof d, "{\"i\":%d}", i);
        if (i < 64)
            assert_string_equal(r.data[i], d);
    }
    /* The group survived. After SIGTERM, what was acked stays acked and unacked deliveries
     * keep their ack_wait, so the next fetch starts after the 10 delivered. After SIGKILL,
     * nats-server 2.9 may lose the consumer's recent state (deliveries and acks are written
     * to its store asynchronously): records come again, acked ones too — at least once,
     * never lost: every record not acked is delivered. */
    int got = fetch(l, topic, "g", 64, 2000, &c);
    assert_true(got >= 31);
    int seen[41] = {0};
    for (int i = 0; i < c.n; i++) {
        assert_true(c.offset[i] >= 0 && c.offset[i] <= 40);
        seen[c.offset[i]]++;
    }
    for (int i = 10; i <= 40; i++)
        assert_int_equal(seen[i], 1);
    bs_log_consumer_stats_t st;
    bs_err_t err;
    assert_int_equal(bs_log_consumer_stats(l, TENANT, topic, "g", &st, &err), 0);
    if (strcmp(how, "restart") == 0) {
        assert_int_equal(c.n, 31);
        assert_int_equal(c.offset[0], 10);
        assert_int_equal(st.ack_floor, 5);
        assert_int_equal(st.ack_pending, 36);
    } else {
        fprintf(stderr, "after SIGKILL: %d of 41 records delivered again (%d acked before)\n", c.n,
                5);
    }
    bs_log_close(l);
}

static void test_server_restart(void **state)
{
    (void)state;
    restart_round("restart");
}

static void test_server_killed(void **state)
{
    (void)state;
    restart_round("kill");
}

static void test_unreachable(void **state)
{
    (void)state;
    bs_err_t err;
    bs_log_t *l = bs_log_open(&(bs_log_opts_t){.nats_url = "nats://127.0.0.1:1"}, &err);
    assert_null(l);
    assert_int_equal(err.code, BS_EUNAVAIL);
}

int main(void)
{
    nats_url = getenv("BASALT_TEST_NATS_URL");
    nats_ctl = getenv("BASALT_TEST_NATS_CTL");
    if (!nats_url || !*nats_url || !nats_ctl || !*nats_ctl) {
        fprintf(stderr, "test_log_nats needs a nats-server: run it as\n"
                        "  python3 tests/nats_server.py -- build/tests/test_log_nats\n");
        return 1;
    }
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    snprintf(suffix, sizeof suffix, "%06x", (unsigned)rand() & 0xffffff);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_read),
        cmocka_unit_test(test_dedup),
        cmocka_unit_test(test_concurrent_appends),
        cmocka_unit_test(test_consumer_basics),
        cmocka_unit_test(test_redelivery_and_progress),
        cmocka_unit_test(test_max_ack_pending),
        cmocka_unit_test(test_config_bounds),
        cmocka_unit_test(test_dead_letter),
        cmocka_unit_test(test_ack_from_another_replica),
        cmocka_unit_test(test_forged_delivery_ids),
        cmocka_unit_test(test_watch_and_drop),
        cmocka_unit_test(test_close_completes_pending),
        cmocka_unit_test(test_server_restart),
        cmocka_unit_test(test_server_killed),
        cmocka_unit_test(test_unreachable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
