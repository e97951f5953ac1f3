/* The shared durable log's segments backend (store/log.h), each test on a log of its own in
 * a temporary directory: CRC32C (known vectors, hardware = tables), append/read/offset_at,
 * per-record errors, reopen, concurrent appenders (dense offsets, every acknowledgement
 * present), segment rolls and index rebuilds, torn tails truncated on open, crash safety
 * (a child appending from several threads, killed with SIGKILL at a random moment, 24
 * rounds, most of them also left with what a power cut can add after the last write — part
 * of a record, garbage, a record failing its CRC: every acknowledged record present exactly
 * once, in order, offsets dense, no torn record; SIGKILL cannot lose the page cache, so this
 * checks the acknowledgement order and recovery, not the fsync itself), the
 * dedup window (within and after, within one batch, across a reopen), watches,
 * consumer groups (redelivery after ack_wait, in_progress, nack delay, max_deliver to a
 * dead letter topic, max_ack_pending stalls, deliver_new, positions across close/reopen and
 * kill -9), retention by bytes and age, drops and metrics. No timing assertions: waits are
 * for a condition with a generous deadline. */
#include "test_common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/time.h"
#include "store/log.h"
/* The .c under test, for its CRC32C implementations. */
#include "../../src/store/log_segment.c"

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

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/bs-test-log-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    f->log = open_log(f->dir);
    *state = f;
    return f->log ? 0 : -1;
}

/* A child of the crash test still running (an assertion failed before it was killed). */
static pid_t live_child;

static int teardown(void **state)
{
    fx_t *f = *state;
    if (live_child > 0) {
        kill(live_child, SIGKILL);
        waitpid(live_child, NULL, 0);
        live_child = 0;
    }
    bs_log_close(f->log);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static void reopen(fx_t *f)
{
    bs_log_close(f->log);
    f->log = open_log(f->dir);
    assert_non_null(f->log);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void ensure(bs_log_t *l, const char *topic, const bs_log_topic_config_t *c)
{
    bs_err_t err;
    int rc = bs_log_topic_ensure(l, T, topic, c, &err);
    if (rc)
        fprintf(stderr, "ensure %s: %s\n", topic, err.msg);
    assert_int_equal(rc, 0);
}

/* Appends one record; returns its offset. */
static int64_t put(bs_log_t *l, const char *topic, const char *id, const char *key,
                   const char *data)
{
    bs_log_record_in_t in = {id, key, data, strlen(data)};
    bs_log_append_result_t r;
    bs_err_t err;
    int rc = bs_log_append(l, T, topic, &in, 1, &r, &err);
    if (rc)
        fprintf(stderr, "append: %s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(r.code, 0);
    return r.offset;
}

static bs_log_topic_stats_t stats(bs_log_t *l, const char *topic)
{
    bs_log_topic_stats_t s;
    bs_err_t err;
    assert_int_equal(bs_log_topic_stats(l, T, topic, &s, &err), 0);
    return s;
}

/* Records read back, copied. */
typedef struct {
    int n;
    int64_t offset[4096];
    int64_t time[4096];
    char id[4096][130];
    char key[4096][64];
    char data[4096][256];
} got_t;

static int collect(const bs_log_record_t *r, void *ud)
{
    got_t *g = ud;
    if (g->n < 4096) {
        g->offset[g->n] = r->offset;
        g->time[g->n] = r->time_ms;
        snprintf(g->id[g->n], sizeof g->id[0], "%s", r->id);
        snprintf(g->key[g->n], sizeof g->key[0], "%s", r->dedup_key);
        snprintf(g->data[g->n], sizeof g->data[0], "%.*s", (int)r->len, (const char *)r->data);
    }
    g->n++;
    return 0;
}

static got_t *read_all(bs_log_t *l, const char *topic, int64_t from)
{
    got_t *g = calloc(1, sizeof *g);
    bs_err_t err;
    int64_t next = from;
    for (;;) {
        int n = bs_log_read(l, T, topic, next, 1000, 0, collect, g, &next, &err);
        assert_true(n >= 0);
        if (n == 0)
            break;
    }
    return g;
}

/* ---- CRC32C ----------------------------------------------------------------------------- */

static void test_crc32c(void **state)
{
    (void)state;
    assert_int_equal(bs__crc32c(0, "123456789", 9), 0xE3069283u);
    uint8_t zeros[32] = {0}, ones[32];
    memset(ones, 0xff, sizeof ones);
    /* RFC 3720 appendix B.4. */
    assert_int_equal(bs__crc32c(0, zeros, 32), 0x8A9136AAu);
    assert_int_equal(bs__crc32c(0, ones, 32), 0x62A8AB43u);
    uint8_t buf[4099];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 131 + 7);
    pthread_once(&crc_once, crc_init);
    for (size_t off = 0; off < 9; off++)
        for (size_t n = 0; n < 300; n += 7) {
            uint32_t sw = ~crc_sw(~0u, buf + off, n);
#if defined(__x86_64__)
            if (__builtin_cpu_supports("sse4.2"))
                assert_int_equal(~crc_hw(~0u, buf + off, n), sw);
#endif
            assert_int_equal(bs__crc32c(0, buf + off, n), sw);
            /* Extending a checksum equals checksumming the concatenation. */
            assert_int_equal(
                bs__crc32c(bs__crc32c(0, buf + off, n / 2), buf + off + n / 2, n - n / 2), sw);
        }
}

/* ---- append, read, offset_at ------------------------------------------------------------ */

static void test_append_read(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    ensure(f->log, "orders", NULL);
    assert_string_equal(bs_log_backend(f->log), "segments");
    bs_log_topic_stats_t s = stats(f->log, "orders");
    assert_int_equal(s.first_offset, 0);
    assert_int_equal(s.next_offset, 0);
    assert_int_equal(s.last_time_ms, 0);

    char data[3][32];
    bs_log_record_in_t in[3];
    for (int i = 0; i < 3; i++) {
        snprintf(data[i], sizeof data[i], "{\"n\":%d}", i);
        in[i] = (bs_log_record_in_t){i == 1 ? NULL : (i ? "ev-2" : "ev-0"), i == 2 ? "k2" : NULL,
                                     data[i], strlen(data[i])};
    }
    int64_t before = bs_time_wall_ms();
    bs_log_append_result_t r[3];
    assert_int_equal(bs_log_append(f->log, T, "orders", in, 3, r, &err), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].offset, i);
        assert_int_equal(r[i].code, 0);
        assert_int_equal(r[i].duplicate, 0);
    }
    assert_string_equal(r[0].id, "ev-0");
    assert_int_equal(strlen(r[1].id), 36); /* a UUIDv7 */
    assert_int_equal(r[1].id[14], '7');
    assert_int_equal(put(f->log, "orders", "ev-3", NULL, "{\"n\":3}"), 3);

    got_t *g = read_all(f->log, "orders", 0);
    assert_int_equal(g->n, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(g->offset[i], i);
        assert_true(g->time[i] >= before);
        if (i)
            assert_true(g->time[i] >= g->time[i - 1]);
        char want[32];
        snprintf(want, sizeof want, "{\"n\":%d}", i);
        assert_string_equal(g->data[i], want);
    }
    assert_string_equal(g->id[1], r[1].id);
    assert_string_equal(g->key[2], "k2");
    assert_string_equal(g->key[0], "");
    free(g);

    /* From the middle, max, max_bytes, past the end. */
    got_t *h = calloc(1, sizeof *h);
    int64_t next = -1;
    assert_int_equal(bs_log_read(f->log, T, "orders", 1, 2, 0, collect, h, &next, &err), 2);
    assert_int_equal(h->offset[0], 1);
    assert_int_equal(next, 3);
    h->n = 0;
    assert_int_equal(bs_log_read(f->log, T, "orders", 0, 100, 1, collect, h, &next, &err), 1);
    assert_int_equal(next, 1);
    h->n = 0;
    assert_int_equal(bs_log_read(f->log, T, "orders", 4, 100, 0, collect, h, &next, &err), 0);
    assert_int_equal(next, 4);
    assert_int_equal(bs_log_read(f->log, T, "orders", -1, 1, 0, collect, h, &next, &err),
                     BS_EINVAL);
    assert_int_equal(bs_log_read(f->log, T, "nope", 0, 1, 0, collect, h, &next, &err),
                     BS_ENOTFOUND);
    free(h);

    /* offset_at. */
    int64_t off;
    assert_int_equal(bs_log_offset_at(f->log, T, "orders", 0, &off, &err), 0);
    assert_int_equal(off, 0);
    assert_int_equal(bs_log_offset_at(f->log, T, "orders", INT64_MAX, &off, &err), 0);
    assert_int_equal(off, 4);
    s = stats(f->log, "orders");
    assert_int_equal(s.next_offset, 4);
    assert_int_equal(s.appended, 4);
    assert_true(s.syncs >= 1 && s.syncs <= 2);
    assert_int_equal(s.segments, 1);
    assert_true(s.last_time_ms >= s.first_time_ms && s.first_time_ms >= before);
    assert_int_equal(bs_log_offset_at(f->log, T, "orders", s.last_time_ms, &off, &err), 0);
    assert_true(off <= 3);

    /* Errors. */
    assert_int_equal(bs_log_append(f->log, T, "nope", in, 1, r, &err), BS_ENOTFOUND);
    assert_int_equal(bs_log_append(f->log, T, "orders", in, 0, r, &err), BS_EINVAL);
    assert_int_equal(bs_log_topic_ensure(f->log, T, "Bad", NULL, &err), BS_EINVAL);
    assert_int_equal(bs_log_topic_ensure(f->log, "", "ok", NULL, &err), BS_EINVAL);
    bs_log_topic_config_t bad = {.segment_bytes = 10};
    assert_int_equal(bs_log_topic_ensure(f->log, T, "ok", &bad, &err), BS_EINVAL);
    assert_string_equal(err.field, "segment_bytes");
    assert_int_equal(bs_log_topic_stats(f->log, T, "ok", &s, &err), BS_ENOTFOUND);
}

static void test_record_errors(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_log_topic_config_t c = {.max_record_bytes = 16};
    ensure(f->log, "small", &c);
    char longid[200];
    memset(longid, 'x', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    bs_log_record_in_t in[4] = {
        {"a", NULL, "short", 5},
        {"b", NULL, "this one is far too long", 24},
        {longid, NULL, "x", 1},
        {"d", NULL, "fits", 4},
    };
    bs_log_append_result_t r[4];
    assert_int_equal(bs_log_append(f->log, T, "small", in, 4, r, &err), 0);
    assert_int_equal(r[0].code, 0);
    assert_int_equal(r[0].offset, 0);
    assert_int_equal(r[1].code, BS_ETOOBIG);
    assert_int_equal(r[2].code, BS_EINVAL);
    assert_int_equal(r[3].code, 0);
    assert_int_equal(r[3].offset, 1);
    got_t *g = read_all(f->log, "small", 0);
    assert_int_equal(g->n, 2);
    assert_string_equal(g->data[1], "fits");
    free(g);
    /* The limit persists across a reopen and can be raised. */
    reopen(f);
    assert_int_equal(bs_log_append(f->log, T, "small", in + 1, 1, r, &err), 0);
    assert_int_equal(r[0].code, BS_ETOOBIG);
    c.max_record_bytes = 0;
    ensure(f->log, "small", &c);
    assert_int_equal(bs_log_append(f->log, T, "small", in + 1, 1, r, &err), 0);
    assert_int_equal(r[0].code, 0);
    assert_int_equal(r[0].offset, 2);
}

static void test_reopen(void **state)
{
    fx_t *f = *state;
    ensure(f->log, "t1", NULL);
    ensure(f->log, "t2", NULL);
    for (int i = 0; i < 50; i++)
        assert_int_equal(put(f->log, i % 2 ? "t1" : "t2", NULL, NULL, "{}"), i / 2);
    int64_t last = stats(f->log, "t1").last_time_ms;
    reopen(f);
    bs_log_topic_stats_t s = stats(f->log, "t1");
    assert_int_equal(s.next_offset, 25);
    assert_int_equal(s.last_time_ms, last);
    assert_int_equal(s.appended, 0);
    assert_int_equal(put(f->log, "t1", "x", NULL, "{\"after\":1}"), 25);
    got_t *g = read_all(f->log, "t1", 0);
    assert_int_equal(g->n, 26);
    assert_true(g->time[25] >= g->time[24]);
    assert_string_equal(g->data[25], "{\"after\":1}");
    free(g);
}

/* ---- concurrent appenders --------------------------------------------------------------- */

#define CT 8
#define CB 50
#define CN 10

typedef struct {
    bs_log_t *log;
    int thread;
    int64_t offsets[CB * CN];
    char ids[CB * CN][24];
    int failed;
} cw_t;

static void *conc_main(void *arg)
{
    cw_t *w = arg;
    for (int b = 0; b < CB; b++) {
        bs_log_record_in_t in[CN];
        char data[CN][48];
        for (int i = 0; i < CN; i++) {
            int k = b * CN + i;
            snprintf(w->ids[k], sizeof w->ids[k], "t%d-%d", w->thread, k);
            snprintf(data[i], sizeof data[i], "{\"t\":%d,\"k\":%d}", w->thread, k);
            in[i] = (bs_log_record_in_t){w->ids[k], NULL, data[i], strlen(data[i])};
        }
        bs_log_append_result_t r[CN];
        bs_err_t err;
        if (bs_log_append(w->log, T, "conc", in, CN, r, &err) != 0) {
            w->failed = 1;
            return NULL;
        }
        for (int i = 0; i < CN; i++)
            w->offsets[b * CN + i] = r[i].code ? -1 : r[i].offset;
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    fx_t *f = *state;
    bs_log_topic_config_t c = {.segment_bytes = 8192};
    ensure(f->log, "conc", &c);
    static cw_t w[CT];
    pthread_t th[CT];
    for (int i = 0; i < CT; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].log = f->log;
        w[i].thread = i;
        assert_int_equal(pthread_create(&th[i], NULL, conc_main, &w[i]), 0);
    }
    for (int i = 0; i < CT; i++)
        pthread_join(th[i], NULL);
    const int total = CT * CB * CN;
    char(*owner)[24] = calloc(total, sizeof *owner);
    for (int i = 0; i < CT; i++) {
        assert_false(w[i].failed);
        int64_t prev = -1;
        for (int k = 0; k < CB * CN; k++) {
            int64_t o = w[i].offsets[k];
            assert_true(o >= 0 && o < total);
            assert_true(o > prev); /* one thread's appends keep their order */
            prev = o;
            assert_int_equal(owner[o][0], 0);
            snprintf(owner[o], sizeof owner[o], "%s", w[i].ids[k]);
        }
    }
    bs_log_topic_stats_t s = stats(f->log, "conc");
    assert_int_equal(s.next_offset, total);
    assert_true(s.segments > 1);
    for (int pass = 0; pass < 2; pass++) {
        got_t *g = read_all(f->log, "conc", 0);
        assert_int_equal(g->n, total);
        for (int o = 0; o < total; o++) {
            assert_int_equal(g->offset[o], o);
            assert_string_equal(g->id[o], owner[o]);
        }
        free(g);
        reopen(f);
    }
    free(owner);
}

/* ---- segments, indexes ------------------------------------------------------------------ */

static void seg_path(const fx_t *f, const char *topic, int64_t base, const char *ext, char *out,
                     size_t n)
{
    snprintf(out, n, "%s/%s/%s/%020lld.%s", f->dir, T, topic, (long long)base, ext);
}

static void test_segments(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_log_topic_config_t c = {.segment_bytes = 1024};
    ensure(f->log, "segs", &c);
    char data[200];
    memset(data, 'a', sizeof data - 1);
    data[sizeof data - 1] = '\0';
    for (int i = 0; i < 100; i++) {
        data[0] = (char)('a' + i % 26);
        assert_int_equal(put(f->log, "segs", NULL, NULL, data), i);
    }
    bs_log_topic_stats_t s = stats(f->log, "segs");
    assert_true(s.segments >= 10);
    /* Lose one index, damage another: both are rebuilt from their segments. */
    char p[256];
    seg_path(f, "segs", 0, "idx", p, sizeof p);
    bs_log_close(f->log);
    f->log = NULL;
    assert_int_equal(unlink(p), 0);
    int found = 0;
    for (int64_t b = 1; b < 100 && !found; b++) {
        seg_path(f, "segs", b, "idx", p, sizeof p);
        int fd = open(p, O_RDWR);
        if (fd < 0)
            continue;
        assert_int_equal(pwrite(fd, "\xff\xff", 2, 50), 2);
        close(fd);
        found = 1;
    }
    assert_true(found);
    f->log = open_log(f->dir);
    assert_non_null(f->log);
    bs_log_topic_stats_t s2 = stats(f->log, "segs");
    assert_int_equal(s2.segments, s.segments);
    assert_int_equal(s2.bytes, s.bytes);
    assert_int_equal(s2.next_offset, 100);
    got_t *g = read_all(f->log, "segs", 0);
    assert_int_equal(g->n, 100);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(g->offset[i], i);
        assert_int_equal(g->data[i][0], 'a' + i % 26);
    }
    free(g);
    /* Reads that start in every segment, and offset_at across them. */
    for (int i = 0; i < 100; i += 7) {
        got_t *h = calloc(1, sizeof *h);
        int64_t next;
        assert_int_equal(bs_log_read(f->log, T, "segs", i, 3, 0, collect, h, &next, &err),
                         i + 3 <= 100 ? 3 : 100 - i);
        assert_int_equal(h->offset[0], i);
        free(h);
    }
    got_t *all = read_all(f->log, "segs", 0);
    for (int i = 0; i < 100; i += 9) {
        int64_t off;
        assert_int_equal(bs_log_offset_at(f->log, T, "segs", all->time[i], &off, &err), 0);
        int want = i;
        while (want > 0 && all->time[want - 1] >= all->time[i])
            want--;
        assert_int_equal(off, want);
    }
    free(all);
}

/* ---- torn tails ------------------------------------------------------------------------- */

static void append_bytes(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    close(fd);
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

static void test_torn_tail(void **state)
{
    fx_t *f = *state;
    ensure(f->log, "torn", NULL);
    for (int i = 0; i < 10; i++)
        put(f->log, "torn", NULL, "k", "{\"v\":\"0123456789\"}");
    char p[256];
    seg_path(f, "torn", 0, "seg", p, sizeof p);
    bs_log_close(f->log);
    f->log = NULL;
    off_t good = file_size(p);

    /* Garbage. */
    append_bytes(p, "garbage garbage garbage", 23);
    f->log = open_log(f->dir);
    assert_int_equal(stats(f->log, "torn").next_offset, 10);
    assert_int_equal(file_size(p), good);
    bs_log_close(f->log);

    /* Half a record: the first half of a copy of the last one, renumbered to come next. */
    int fd = open(p, O_RDONLY);
    uint8_t buf[4096];
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    close(fd);
    assert_true(n == good);
    bs__rec_view_t v;
    size_t need, pos = BS__SEG_HDR, last = 0;
    while (pos < (size_t)n && bs__rec_parse(buf + pos, (size_t)n - pos, &v, &need) == 1) {
        last = pos;
        pos += v.frame_len;
    }
    assert_int_equal(pos, (size_t)good);
    uint8_t rec[512];
    size_t flen = pos - last;
    memcpy(rec, buf + last, flen);
    bs__rec_seal(rec, 10, 1);
    append_bytes(p, rec, flen / 2);
    f->log = open_log(f->dir);
    assert_int_equal(stats(f->log, "torn").next_offset, 10);
    assert_int_equal(file_size(p), good);
    bs_log_close(f->log);

    /* A whole record whose CRC does not match, then a valid one after it. */
    rec[flen - 1] ^= 0x55;
    append_bytes(p, rec, flen);
    rec[flen - 1] ^= 0x55;
    bs__rec_seal(rec, 11, 1);
    append_bytes(p, rec, flen);
    f->log = open_log(f->dir);
    assert_int_equal(stats(f->log, "torn").next_offset, 10);
    assert_int_equal(file_size(p), good);
    bs_log_close(f->log);

    /* A valid record out of sequence (offset gap). */
    bs__rec_seal(rec, 12, 1);
    append_bytes(p, rec, flen);
    f->log = open_log(f->dir);
    assert_int_equal(stats(f->log, "torn").next_offset, 10);
    assert_int_equal(file_size(p), good);

    /* A valid next record is kept, and appends continue densely after recovery. */
    bs_log_close(f->log);
    bs__rec_seal(rec, 10, 2);
    append_bytes(p, rec, flen);
    f->log = open_log(f->dir);
    assert_int_equal(stats(f->log, "torn").next_offset, 11);
    assert_int_equal(put(f->log, "torn", NULL, NULL, "{}"), 11);
    got_t *g = read_all(f->log, "torn", 0);
    assert_int_equal(g->n, 12);
    for (int i = 0; i < 12; i++)
        assert_int_equal(g->offset[i], i);
    free(g);

    /* The last segment's header lost (a roll cut short): emptied, the log still opens. */
    bs_log_topic_config_t c = {.segment_bytes = 512};
    ensure(f->log, "torn2", &c);
    for (int i = 0; i < 20; i++)
        put(f->log, "torn2", NULL, NULL, "{\"v\":\"01234567890123456789012345678901234567890\"}");
    bs_log_topic_stats_t s = stats(f->log, "torn2");
    bs_log_close(f->log);
    seg_path(f, "torn2", s.next_offset, "seg", p, sizeof p);
    fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_int_equal(write(fd, "bslse", 5), 5);
    close(fd);
    f->log = open_log(f->dir);
    assert_non_null(f->log);
    assert_int_equal(stats(f->log, "torn2").next_offset, s.next_offset);
    assert_int_equal(put(f->log, "torn2", NULL, NULL, "{}"), s.next_offset);
}

/* ---- crash safety ----------------------------------------------------------------------- */

#define KT 4

typedef struct {
    int64_t offset;
    char id[40];
} ack_t;

typedef struct {
    bs_log_t *log;
    int fd;
    int round, thread;
    pthread_mutex_t *mu;
} kw_t;

static void *kill_main(void *arg)
{
    kw_t *w = arg;
    static __thread char data[50][256];
    for (int seq = 0;; seq++) {
        int n = 1 + (seq * 7 + w->thread) % 50;
        bs_log_record_in_t in[50];
        char ids[50][40];
        for (int i = 0; i < n; i++) {
            snprintf(ids[i], sizeof ids[i], "r%d-t%d-%d-%d", w->round, w->thread, seq, i);
            int len = snprintf(data[i], sizeof data[i], "{\"id\":\"%s\",\"pad\":\"", ids[i]);
            memset(data[i] + len, 'p', (size_t)(150 - len));
            memcpy(data[i] + 150, "\"}", 3);
            in[i] = (bs_log_record_in_t){ids[i], NULL, data[i], 152};
        }
        bs_log_append_result_t r[50];
        bs_err_t err;
        if (bs_log_append(w->log, T, "crash", in, n, r, &err) != 0)
            continue;
        pthread_mutex_lock(w->mu);
        for (int i = 0; i < n; i++) {
            ack_t a = {r[i].offset, ""};
            memcpy(a.id, ids[i], sizeof a.id);
            if (write(w->fd, &a, sizeof a) != (ssize_t)sizeof a)
                _exit(3);
        }
        pthread_mutex_unlock(w->mu);
    }
    return NULL;
}

static void crash_child(const char *dir, int round, int fd)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    bs_log_t *l = open_log(dir);
    if (!l)
        _exit(2);
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static kw_t w[KT];
    pthread_t th[KT];
    if (write(fd, &(ack_t){-1, "ready"}, sizeof(ack_t)) != (ssize_t)sizeof(ack_t))
        _exit(3);
    for (int i = 0; i < KT; i++) {
        w[i] = (kw_t){l, fd, round, i, &mu};
        pthread_create(&th[i], NULL, kill_main, &w[i]);
    }
    for (;;)
        pause();
}

/* The last segment of topic: its path in out. */
static void last_segment(const fx_t *f, const char *topic, char *out, size_t n)
{
    char dir[200], best[32] = "";
    snprintf(dir, sizeof dir, "%s/%s/%s", f->dir, T, topic);
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strlen(e->d_name) == 24 && strcmp(e->d_name + 20, ".seg") == 0 &&
            strcmp(e->d_name, best) > 0)
            snprintf(best, sizeof best, "%s", e->d_name);
    closedir(d);
    assert_true(best[0]);
    snprintf(out, n, "%s/%s", dir, best);
}

/* Appends to the last segment: 1, the first part of a record numbered next; 2, random bytes;
 * 3, a whole next record with one byte flipped. */
static void tear_last_segment(const fx_t *f, const char *topic, int how)
{
    char p[300];
    last_segment(f, topic, p, sizeof p);
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    static uint8_t img[1 << 20];
    ssize_t n = pread(fd, img, sizeof img, 0);
    close(fd);
    if (n < BS__SEG_HDR)
        return; /* killed during a roll, before the new segment's header: recovery's case */
    int64_t count = 0, base = (int64_t)bs__get64(img + 8);
    assert_true(bs__seg_scan(img, (size_t)n, -1, NULL, NULL, &count) >= BS__SEG_HDR);
    uint8_t rec[600];
    char data[300];
    memset(data, 'q', sizeof data);
    size_t len = 40 + (size_t)(rand() % 200);
    bs__rec_encode(rec, "torn-id", 7, "", 0, data, len);
    bs__rec_seal(rec, base + count, bs_time_wall_ms());
    size_t flen = bs__rec_frame_len(7, 0, len);
    if (how == 1) {
        append_bytes(p, rec, 1 + (size_t)rand() % (flen - 1));
    } else if (how == 2) {
        for (size_t i = 0; i < flen; i++)
            rec[i] = (uint8_t)rand();
        append_bytes(p, rec, 1 + (size_t)rand() % flen);
    } else {
        rec[BS__REC_HDR + (size_t)rand() % (flen - BS__REC_HDR)] ^= 0x20;
        append_bytes(p, rec, flen);
    }
}

static void test_crash_safety(void **state)
{
    fx_t *f = *state;
    bs_log_topic_config_t c = {.segment_bytes = 64 << 10};
    ensure(f->log, "crash", &c);
    bs_log_close(f->log);
    f->log = NULL;
    unsigned seed = (unsigned)time(NULL);
    srand(seed);
    fprintf(stderr, "crash safety: seed %u\n", seed);
    size_t cap = 1 << 16, nacks = 0;
    ack_t *acks = malloc(cap * sizeof *acks);
    const int rounds = 24;
    for (int round = 0; round < rounds; round++) {
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            crash_child(f->dir, round, p[1]);
        }
        live_child = pid;
        close(p[1]);
        /* Wait until the child runs, then kill it 5..150 ms later, reading acks meanwhile. */
        ack_t a;
        assert_int_equal(read(p[0], &a, sizeof a), (ssize_t)sizeof a);
        assert_int_equal(a.offset, -1);
        int delay = 5 + rand() % 146;
        uint64_t kill_at = bs_time_mono_ns() + (uint64_t)delay * 1000000u;
        fcntl(p[0], F_SETFL, O_NONBLOCK);
        int killed = 0;
        size_t partial = 0;
        uint8_t *ab = (uint8_t *)&a;
        for (;;) {
            if (!killed && bs_time_mono_ns() >= kill_at) {
                kill(pid, SIGKILL);
                killed = 1;
            }
            ssize_t n = read(p[0], ab + partial, sizeof a - partial);
            if (n == 0)
                break;
            if (n < 0) {
                assert_true(errno == EAGAIN || errno == EINTR);
                sleep_ms(1);
                continue;
            }
            partial += (size_t)n;
            if (partial < sizeof a)
                continue;
            partial = 0;
            if (nacks == cap) {
                cap *= 2;
                acks = realloc(acks, cap * sizeof *acks);
            }
            acks[nacks++] = a;
        }
        close(p[0]);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        live_child = 0;
        assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

        /* Half the rounds also get what a power cut can leave after the last write: a
         * partial next record or garbage. */
        int torn = rand() % 4;
        if (torn)
            tear_last_segment(f, "crash", torn);
        /* Every acknowledged record present exactly once, in order, offsets dense. */
        bs_log_t *l = open_log(f->dir);
        assert_non_null(l);
        bs_log_topic_stats_t s;
        bs_err_t err;
        assert_int_equal(bs_log_topic_stats(l, T, "crash", &s, &err), 0);
        got_t *g = calloc(1, sizeof *g);
        char(*ids)[40] = calloc((size_t)s.next_offset + 1, sizeof *ids);
        int64_t next = 0, expect = 0;
        for (;;) {
            g->n = 0;
            int n = bs_log_read(l, T, "crash", next, 4096, 0, collect, g, &next, &err);
            assert_true(n >= 0);
            if (n == 0)
                break;
            for (int i = 0; i < n; i++) {
                assert_int_equal(g->offset[i], expect);
                /* The data is the record's own (no torn or mixed-up record). */
                char want[64];
                snprintf(want, sizeof want, "{\"id\":\"%s\",", g->id[i]);
                assert_memory_equal(g->data[i], want, strlen(want));
                snprintf(ids[expect], sizeof ids[expect], "%.39s", g->id[i]);
                expect++;
            }
        }
        assert_int_equal(expect, s.next_offset);
        assert_true((int64_t)nacks <= s.next_offset);
        for (size_t i = 0; i < nacks; i++) {
            assert_true(acks[i].offset < s.next_offset);
            assert_string_equal(ids[acks[i].offset], acks[i].id);
        }
        /* No id twice (ids are unique per append). */
        for (int64_t i = 1; i < s.next_offset; i++)
            assert_true(strcmp(ids[i], ids[i - 1]) != 0);
        free(ids);
        free(g);
        bs_log_close(l);
    }
    fprintf(stderr, "crash safety: %d rounds, %zu acknowledged records checked\n", rounds, nacks);
    assert_true(nacks > 0);
    free(acks);
    f->log = open_log(f->dir);
}

/* ---- dedup ------------------------------------------------------------------------------ */

static void test_dedup(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_log_topic_config_t shortw = {.dedup_window_ms = 300}, longw = {.dedup_window_ms = 600000};
    ensure(f->log, "dd", &shortw);
    ensure(f->log, "ddl", &longw);
    ensure(f->log, "nodd", NULL);
    assert_int_equal(put(f->log, "dd", "id-1", "k1", "{\"a\":1}"), 0);
    bs_log_record_in_t in[3] = {
        {"id-2", "k1", "{\"a\":2}", 7},
        {"id-3", "k2", "{\"a\":3}", 7},
        {"id-4", "k2", "{\"a\":4}", 7},
    };
    bs_log_append_result_t r[3];
    assert_int_equal(bs_log_append(f->log, T, "dd", in, 3, r, &err), 0);
    assert_int_equal(r[0].duplicate, 1);
    assert_int_equal(r[0].offset, 0);
    assert_string_equal(r[0].id, "id-1");
    assert_int_equal(r[1].duplicate, 0);
    assert_int_equal(r[1].offset, 1);
    assert_int_equal(r[2].duplicate, 1); /* a duplicate inside the batch */
    assert_int_equal(r[2].offset, 1);
    assert_string_equal(r[2].id, "id-3");
    bs_log_topic_stats_t s = stats(f->log, "dd");
    assert_int_equal(s.next_offset, 2);
    assert_int_equal(s.duplicates, 2);
    /* After the window the key is new again. */
    sleep_ms(450);
    assert_int_equal(put(f->log, "dd", "id-5", "k1", "{\"a\":5}"), 2);
    /* No dedup when the window is 0. */
    assert_int_equal(put(f->log, "nodd", NULL, "k1", "{}"), 0);
    assert_int_equal(put(f->log, "nodd", NULL, "k1", "{}"), 1);
    /* The window is rebuilt on open. */
    for (int i = 0; i < 300; i++) {
        char k[16];
        snprintf(k, sizeof k, "key-%d", i);
        assert_int_equal(put(f->log, "ddl", NULL, k, "{}"), i);
    }
    reopen(f);
    for (int i = 0; i < 300; i += 13) {
        char k[16];
        snprintf(k, sizeof k, "key-%d", i);
        bs_log_record_in_t one = {NULL, k, "{}", 2};
        assert_int_equal(bs_log_append(f->log, T, "ddl", &one, 1, r, &err), 0);
        assert_int_equal(r[0].duplicate, 1);
        assert_int_equal(r[0].offset, i);
    }
    assert_int_equal(put(f->log, "ddl", NULL, "key-new", "{}"), 300);
    assert_int_equal(stats(f->log, "ddl").next_offset, 301);
}

/* ---- watches ---------------------------------------------------------------------------- */

static atomic_int woke;

static void wake_cb(void *ud)
{
    (void)ud;
    atomic_fetch_add(&woke, 1);
}

static int wait_until(int (*cond)(void *), void *ud)
{
    for (int i = 0; i < 2000; i++) {
        if (cond(ud))
            return 1;
        sleep_ms(5);
    }
    return cond(ud);
}

static int woke_is(void *ud)
{
    return atomic_load(&woke) == *(int *)ud;
}

static void test_watch(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    ensure(f->log, "w", NULL);
    atomic_store(&woke, 0);
    put(f->log, "w", NULL, NULL, "{}");
    /* Already satisfied: fires at once. */
    assert_true(bs_log_watch(f->log, T, "w", 0 - 1, wake_cb, NULL, &err) > 0);
    assert_int_equal(atomic_load(&woke), 1);
    int64_t w1 = bs_log_watch(f->log, T, "w", 1, wake_cb, NULL, &err);
    int64_t w2 = bs_log_watch(f->log, T, "w", 1, wake_cb, NULL, &err);
    assert_true(w1 > 0 && w2 > 0 && w1 != w2);
    assert_int_equal(atomic_load(&woke), 1);
    bs_log_unwatch(f->log, w2);
    put(f->log, "w", NULL, NULL, "{}");
    int two = 2;
    assert_true(wait_until(woke_is, &two));
    bs_log_unwatch(f->log, w1); /* fired: fine */
    bs_log_unwatch(f->log, 12345);
    /* A drop wakes watchers. */
    assert_true(bs_log_watch(f->log, T, "w", 100, wake_cb, NULL, &err) > 0);
    assert_int_equal(bs_log_topic_drop(f->log, T, "w", &err), 0);
    assert_int_equal(atomic_load(&woke), 3);
    assert_int_equal(bs_log_watch(f->log, T, "w", 0, wake_cb, NULL, &err), BS_ENOTFOUND);
    assert_int_equal(bs_log_topic_drop(f->log, T, "w", &err), 0);
    /* Recreated empty. */
    ensure(f->log, "w", NULL);
    assert_int_equal(stats(f->log, "w").next_offset, 0);
}

/* ---- consumer groups -------------------------------------------------------------------- */

typedef struct {
    int n;
    int64_t offset[256];
    int delivery[256];
    char did[256][64];
    char data[256][512];
} dl_t;

static int collect_d(const bs_log_delivery_t *d, void *ud)
{
    dl_t *x = ud;
    if (x->n < 256) {
        x->offset[x->n] = d->rec.offset;
        x->delivery[x->n] = d->delivery;
        snprintf(x->did[x->n], sizeof x->did[0], "%s", d->delivery_id);
        snprintf(x->data[x->n], sizeof x->data[0], "%.*s", (int)d->rec.len,
                 (const char *)d->rec.data);
    }
    x->n++;
    return 0;
}

static dl_t fetch(bs_log_t *l, const char *topic, const char *group, int max, int wait_ms)
{
    dl_t x;
    memset(&x, 0, sizeof x);
    bs_err_t err;
    int n = bs_log_fetch(l, T, topic, group, max, wait_ms, collect_d, &x, &err);
    if (n < 0)
        fprintf(stderr, "fetch: %s\n", err.msg);
    assert_int_equal(n, x.n);
    return x;
}

static void ack(bs_log_t *l, const char *topic, const char *group, const char *did)
{
    bs_err_t err;
    assert_int_equal(bs_log_ack(l, T, topic, group, did, &err), 0);
}

static bs_log_consumer_stats_t cstats(bs_log_t *l, const char *topic, const char *group)
{
    bs_log_consumer_stats_t s;
    bs_err_t err;
    assert_int_equal(bs_log_consumer_stats(l, T, topic, group, &s, &err), 0);
    return s;
}

static void fill(bs_log_t *l, const char *topic, int n)
{
    for (int i = 0; i < n; i++) {
        char d[32];
        snprintf(d, sizeof d, "{\"n\":%d}", i);
        put(l, topic, NULL, NULL, d);
    }
}

static void test_consumer_redelivery(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    ensure(f->log, "q", NULL);
    fill(f->log, "q", 10);
    bs_log_consumer_config_t c = {.ack_wait_ms = 300};
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "q", "g", &c, &err), 0);
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "q", "g", &c, &err), 0);
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "nope", "g", &c, &err), BS_ENOTFOUND);
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "q", "Bad", &c, &err), BS_EINVAL);
    dl_t x;
    assert_int_equal(bs_log_fetch(f->log, T, "q", "nope", 1, 0, collect_d, &x, &err), BS_ENOTFOUND);

    dl_t a = fetch(f->log, "q", "g", 5, 0);
    assert_int_equal(a.n, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(a.offset[i], i);
        assert_int_equal(a.delivery[i], 1);
        char want[32];
        snprintf(want, sizeof want, "{\"n\":%d}", i);
        assert_string_equal(a.data[i], want);
    }
    for (int i = 0; i < 4; i++)
        ack(f->log, "q", "g", a.did[i]);
    ack(f->log, "q", "g", a.did[0]); /* again: fine */
    assert_int_equal(bs_log_ack(f->log, T, "q", "g", "garbage", &err), BS_EINVAL);
    assert_int_equal(bs_log_ack(f->log, T, "q", "g", "7.1", &err), BS_EINVAL); /* not delivered */
    assert_int_equal(bs_log_ack(f->log, T, "q", "g", "4.2", &err), BS_EINVAL); /* no 2nd delivery */
    bs_log_consumer_stats_t s = cstats(f->log, "q", "g");
    assert_int_equal(s.ack_floor, 4);
    assert_int_equal(s.next_offset, 5);
    assert_int_equal(s.ack_pending, 1);
    assert_int_equal(s.pending, 5);
    assert_int_equal(s.acked, 4);

    dl_t b = fetch(f->log, "q", "g", 10, 0);
    assert_int_equal(b.n, 5);
    assert_int_equal(b.offset[0], 5);
    for (int i = 0; i < 5; i++)
        ack(f->log, "q", "g", b.did[i]);
    /* Offset 4 comes back after ack_wait, as delivery 2 (the wait is for that to happen). */
    dl_t r = fetch(f->log, "q", "g", 10, 10000);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.offset[0], 4);
    assert_int_equal(r.delivery[0], 2);
    assert_string_equal(r.did[0], "4.2");
    ack(f->log, "q", "g", a.did[4]); /* an earlier delivery's id acks it too */
    s = cstats(f->log, "q", "g");
    assert_int_equal(s.ack_floor, 10);
    assert_int_equal(s.ack_pending, 0);
    assert_int_equal(s.redelivered, 1);
    assert_int_equal(s.delivered, 11);
    /* Nothing left: a fetch with a wait ends empty. */
    assert_int_equal(fetch(f->log, "q", "g", 10, 200).n, 0);

    /* Deletion. */
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "q", "g2", NULL, &err), 0);
    assert_int_equal(bs_log_consumer_delete(f->log, T, "q", "g2", &err), 0);
    assert_int_equal(bs_log_consumer_delete(f->log, T, "q", "g2", &err), 0);
    assert_int_equal(bs_log_consumer_stats(f->log, T, "q", "g2", &s, &err), BS_ENOTFOUND);
}

static int count_group(const char *group, void *ud)
{
    (void)group;
    (*(int *)ud)++;
    return 0;
}

static void test_consumer_list(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    ensure(f->log, "q", NULL);
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "q", "a", NULL, &err), 0);
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "q", "b", NULL, &err), 0);
    int n = 0;
    assert_int_equal(bs_log_consumers(f->log, T, "q", count_group, &n, &err), 0);
    assert_int_equal(n, 2);
    reopen(f);
    n = 0;
    assert_int_equal(bs_log_consumers(f->log, T, "q", count_group, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(bs_log_consumer_delete(f->log, T, "q", "a", &err), 0);
    reopen(f);
    n = 0;
    assert_int_equal(bs_log_consumers(f->log, T, "q", count_group, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(bs_log_consumers(f->log, T, "nope", count_group, &n, &err), BS_ENOTFOUND);
}

static void test_consumer_nack_progress(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    ensure(f->log, "q", NULL);
    fill(f->log, "q", 3);
    bs_log_consumer_config_t c = {.ack_wait_ms = 3000};
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "q", "g", &c, &err), 0);
    dl_t a = fetch(f->log, "q", "g", 3, 0);
    assert_int_equal(a.n, 3);
    /* nack without delay: redelivered at the next fetch. */
    assert_int_equal(bs_log_nack(f->log, T, "q", "g", a.did[0], 0, &err), 0);
    dl_t b = fetch(f->log, "q", "g", 3, 0);
    assert_int_equal(b.n, 1);
    assert_int_equal(b.offset[0], 0);
    assert_int_equal(b.delivery[0], 2);
    /* A stale delivery id's nack changes nothing. */
    assert_int_equal(bs_log_nack(f->log, T, "q", "g", a.did[0], 0, &err), 0);
    assert_int_equal(fetch(f->log, "q", "g", 3, 0).n, 0);
    /* nack with a delay: not before it, then yes (waiting for it). */
    assert_int_equal(bs_log_nack(f->log, T, "q", "g", b.did[0], 400, &err), 0);
    assert_int_equal(fetch(f->log, "q", "g", 3, 0).n, 0);
    dl_t d = fetch(f->log, "q", "g", 3, 10000);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.offset[0], 0);
    assert_int_equal(d.delivery[0], 3);
    ack(f->log, "q", "g", d.did[0]);
    /* in_progress restarts ack_wait (3 s): at 2 s it is extended to 5 s, so at 3.5 s offset 1
     * (never touched) is back and offset 2 is not. */
    sleep_ms(2000);
    assert_int_equal(bs_log_in_progress(f->log, T, "q", "g", a.did[2], &err), 0);
    assert_int_equal(bs_log_in_progress(f->log, T, "q", "g", "9.1", &err), BS_EINVAL);
    dl_t e = fetch(f->log, "q", "g", 3, 10000);
    assert_int_equal(e.n, 1);
    assert_int_equal(e.offset[0], 1);
    assert_int_equal(e.delivery[0], 2);
    assert_int_equal(fetch(f->log, "q", "g", 3, 0).n, 0);
    ack(f->log, "q", "g", e.did[0]);
    dl_t g = fetch(f->log, "q", "g", 3, 10000);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.offset[0], 2);
    assert_int_equal(g.delivery[0], 2);
}

typedef struct {
    bs_log_t *log;
    const char *topic;
    int64_t want;
} next_is_t;

static int topic_next_is(void *ud)
{
    next_is_t *w = ud;
    bs_log_topic_stats_t s;
    bs_err_t err;
    return bs_log_topic_stats(w->log, T, w->topic, &s, &err) == 0 && s.next_offset == w->want;
}

static void test_consumer_dead_letter(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_log_topic_config_t tc = {.retention_ms = 3600000};
    ensure(f->log, "src", &tc);
    put(f->log, "src", "ev-1", NULL, "{\"amount\":5}");
    put(f->log, "src", "ev-2", NULL, "not json");
    bs_log_consumer_config_t c = {.ack_wait_ms = 60000, .max_deliver = 2, .dead_letter = "src-dlq"};
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "src", "g", &c, &err), 0);
    bs_log_consumer_config_t bad = {.dead_letter = "src"};
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "src", "g", &bad, &err), BS_EINVAL);
    for (int d = 1; d <= 2; d++) {
        dl_t a = fetch(f->log, "src", "g", 10, 0);
        assert_int_equal(a.n, 2);
        assert_int_equal(a.delivery[0], d);
        assert_int_equal(bs_log_nack(f->log, T, "src", "g", a.did[0], 0, &err), 0);
        assert_int_equal(bs_log_nack(f->log, T, "src", "g", a.did[1], 0, &err), 0);
    }
    /* The third time they are due, both go to the dead letter topic instead. */
    assert_int_equal(fetch(f->log, "src", "g", 10, 0).n, 0);
    next_is_t w = {f->log, "src-dlq", 2};
    assert_true(wait_until(topic_next_is, &w));
    got_t *g = read_all(f->log, "src-dlq", 0);
    assert_int_equal(g->n, 2);
    assert_string_equal(g->data[0], "{\"topic\":\"src\",\"offset\":0,\"deliveries\":2,\"group\":"
                                    "\"g\",\"event\":{\"amount\":5}}");
    assert_string_equal(
        g->data[1],
        "{\"topic\":\"src\",\"offset\":1,\"deliveries\":2,\"group\":\"g\",\"event\":\"not json\"}");
    assert_string_equal(g->id[0], "ev-1");
    free(g);
    bs_log_consumer_stats_t s;
    for (int i = 0; i < 2000; i++) {
        s = cstats(f->log, "src", "g");
        if (s.dead_lettered == 2)
            break;
        sleep_ms(5);
    }
    assert_int_equal(s.dead_lettered, 2);
    assert_int_equal(s.ack_floor, 2);
    assert_int_equal(s.ack_pending, 0);
    /* The dead letter topic was created with the source's config. */
    bs_log_topic_stats_t ds = stats(f->log, "src-dlq");
    assert_int_equal(ds.next_offset, 2);

    /* Without a dead letter topic they are dropped (and counted). */
    ensure(f->log, "src2", NULL);
    put(f->log, "src2", NULL, NULL, "{}");
    bs_log_consumer_config_t c2 = {.max_deliver = 1};
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "src2", "g", &c2, &err), 0);
    dl_t a = fetch(f->log, "src2", "g", 10, 0);
    assert_int_equal(a.n, 1);
    assert_int_equal(bs_log_nack(f->log, T, "src2", "g", a.did[0], 0, &err), 0);
    assert_int_equal(fetch(f->log, "src2", "g", 10, 0).n, 0);
    s = cstats(f->log, "src2", "g");
    assert_int_equal(s.dead_lettered, 1);
    assert_int_equal(s.ack_floor, 1);

    /* A dead letter topic that refuses the record (too big for it): dropped, not retried. */
    bs_log_topic_config_t tiny = {.max_record_bytes = 16};
    ensure(f->log, "tiny-dlq", &tiny);
    ensure(f->log, "src3", NULL);
    put(f->log, "src3", NULL, NULL, "{\"x\":1}");
    bs_log_consumer_config_t c3 = {.max_deliver = 1, .dead_letter = "tiny-dlq"};
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "src3", "g", &c3, &err), 0);
    a = fetch(f->log, "src3", "g", 10, 0);
    assert_int_equal(a.n, 1);
    assert_int_equal(bs_log_nack(f->log, T, "src3", "g", a.did[0], 0, &err), 0);
    assert_int_equal(fetch(f->log, "src3", "g", 10, 0).n, 0);
    for (int i = 0; i < 2000; i++) {
        s = cstats(f->log, "src3", "g");
        if (s.ack_floor == 1)
            break;
        sleep_ms(5);
    }
    assert_int_equal(s.ack_floor, 1);
    assert_int_equal(s.dead_lettered, 1);
    assert_int_equal(stats(f->log, "tiny-dlq").next_offset, 0);
}

static void test_consumer_max_ack_pending(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    ensure(f->log, "q", NULL);
    fill(f->log, "q", 10);
    bs_log_consumer_config_t c = {.max_ack_pending = 3};
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "q", "g", &c, &err), 0);
    dl_t a = fetch(f->log, "q", "g", 10, 0);
    assert_int_equal(a.n, 3);
    assert_int_equal(fetch(f->log, "q", "g", 10, 0).n, 0);
    bs_log_consumer_stats_t s = cstats(f->log, "q", "g");
    assert_int_equal(s.stalled, 1);
    assert_int_equal(s.ack_pending, 3);
    assert_int_equal(s.max_ack_pending, 3);
    bs_buf_t b;
    bs_buf_init(&b);
    bs_log_metrics(f->log, &b);
    bs_buf_putc(&b, '\0');
    assert_non_null(
        strstr(b.data, "basalt_consumer_stalled{tenant=\"acme\",topic=\"q\",group=\"g\"} 1\n"));
    assert_non_null(
        strstr(b.data, "basalt_consumer_ack_pending{tenant=\"acme\",topic=\"q\",group=\"g\"} 3\n"));
    assert_non_null(
        strstr(b.data, "basalt_consumer_pending{tenant=\"acme\",topic=\"q\",group=\"g\"} 7\n"));
    assert_non_null(strstr(b.data, "basalt_log_records{tenant=\"acme\",topic=\"q\"} 10\n"));
    assert_non_null(strstr(b.data, "basalt_log_appends_total{tenant=\"acme\",topic=\"q\"} 10\n"));
    assert_non_null(strstr(b.data, "# TYPE basalt_log_append_seconds histogram\n"));
    assert_non_null(strstr(b.data, "basalt_log_append_seconds_count 10\n"));
    bs_buf_free(&b);
    /* An ack makes room for one more; a parked fetch is woken by it. */
    ack(f->log, "q", "g", a.did[1]);
    dl_t d = fetch(f->log, "q", "g", 10, 0);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.offset[0], 3);
    s = cstats(f->log, "q", "g");
    assert_int_equal(s.ack_floor, 0);
    assert_int_equal(s.stalled, 1);
    ack(f->log, "q", "g", a.did[0]);
    ack(f->log, "q", "g", a.did[2]);
    ack(f->log, "q", "g", d.did[0]);
    s = cstats(f->log, "q", "g");
    assert_int_equal(s.ack_floor, 4);
    assert_int_equal(s.stalled, 0);
}

/* A fetch stops reading once it holds 64 MiB of records: a redelivery that did not fit
 * stays due and comes with the next fetch, not one ack_wait later. */
static void test_consumer_fetch_budget(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_log_topic_config_t tc = {.max_record_bytes = 64 << 20, .segment_bytes = 1 << 30};
    ensure(f->log, "big", &tc);
    size_t big = (size_t)64 << 20;
    char *data = malloc(big);
    assert_non_null(data);
    memset(data, ' ', big);
    data[0] = '"';
    data[big - 1] = '"';
    bs_log_record_in_t in[2] = {{"big", NULL, data, big}, {"small", NULL, "{}", 2}};
    bs_log_append_result_t r[2];
    assert_int_equal(bs_log_append(f->log, T, "big", in, 2, r, &err), 0);
    free(data);
    bs_log_consumer_config_t c = {.ack_wait_ms = 600000};
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "big", "g", &c, &err), 0);
    /* The big record fills a fetch on its own. */
    dl_t a = fetch(f->log, "big", "g", 2, 0);
    assert_int_equal(a.n, 1);
    assert_int_equal(a.offset[0], 0);
    dl_t b = fetch(f->log, "big", "g", 2, 0);
    assert_int_equal(b.n, 1);
    assert_int_equal(b.offset[0], 1);
    assert_int_equal(bs_log_nack(f->log, T, "big", "g", a.did[0], 0, &err), 0);
    assert_int_equal(bs_log_nack(f->log, T, "big", "g", b.did[0], 0, &err), 0);
    /* Both are due; the first redelivery fetch holds only the big one... */
    dl_t x = fetch(f->log, "big", "g", 2, 0);
    assert_int_equal(x.n, 1);
    assert_int_equal(x.offset[0], 0);
    assert_int_equal(x.delivery[0], 2);
    /* ...and the small one, still due, comes with the next. */
    dl_t y = fetch(f->log, "big", "g", 2, 0);
    assert_int_equal(y.n, 1);
    assert_int_equal(y.offset[0], 1);
    assert_int_equal(y.delivery[0], 2);
}

typedef struct {
    atomic_int done;
    int code, n;
    int64_t offset;
} async_t;

static void async_cb(void *ud, int code, const bs_log_delivery_t *d, int n, const bs_err_t *err)
{
    (void)err;
    async_t *a = ud;
    a->code = code;
    a->n = n;
    a->offset = n ? d[0].rec.offset : -1;
    atomic_store(&a->done, 1);
}

static int async_done(void *ud)
{
    return atomic_load(&((async_t *)ud)->done);
}

static void test_consumer_async_wait(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    ensure(f->log, "q", NULL);
    fill(f->log, "q", 2);
    bs_log_consumer_config_t c = {.deliver_new = 1};
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "q", "g", &c, &err), 0);
    static async_t a;
    memset(&a, 0, sizeof a);
    assert_int_equal(bs_log_fetch_async(f->log, T, "q", "g", 10, 60000, async_cb, &a, &err), 0);
    sleep_ms(50);
    assert_false(atomic_load(&a.done));
    put(f->log, "q", NULL, NULL, "{\"new\":1}");
    assert_true(wait_until(async_done, &a));
    assert_int_equal(a.code, 0);
    assert_int_equal(a.n, 1);
    assert_int_equal(a.offset, 2); /* deliver_new: the two older ones are skipped */
    /* A parked fetch fails when the log closes; one on a deleted group fails too. */
    memset(&a, 0, sizeof a);
    assert_int_equal(bs_log_fetch_async(f->log, T, "q", "g", 10, 60000, async_cb, &a, &err), 0);
    sleep_ms(20);
    assert_int_equal(bs_log_consumer_delete(f->log, T, "q", "g", &err), 0);
    assert_true(wait_until(async_done, &a));
    assert_int_equal(a.code, BS_ENOTFOUND);
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "q", "g", &c, &err), 0);
    memset(&a, 0, sizeof a);
    assert_int_equal(bs_log_fetch_async(f->log, T, "q", "g", 10, 60000, async_cb, &a, &err), 0);
    sleep_ms(20);
    bs_log_close(f->log);
    f->log = NULL;
    assert_true(atomic_load(&a.done));
    assert_int_equal(a.code, BS_EUNAVAIL);
    f->log = open_log(f->dir);
}

/* A dead letter that could not be written is retried a second later, and a fetch parked on
 * the group wakes for that retry (not only at its own deadline). */
static void test_consumer_dead_letter_retry(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    ensure(f->log, "src", NULL);
    put(f->log, "src", "ev-1", NULL, "{}");
    bs_log_consumer_config_t c = {.ack_wait_ms = 600000, .max_deliver = 1, .dead_letter = "dlq"};
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "src", "g", &c, &err), 0);
    /* A file where the dead letter topic's directory would go: creating it fails. */
    char p[256];
    snprintf(p, sizeof p, "%s/%s/dlq", f->dir, T);
    int fd = open(p, O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    close(fd);
    dl_t a = fetch(f->log, "src", "g", 1, 0);
    assert_int_equal(a.n, 1);
    assert_int_equal(bs_log_nack(f->log, T, "src", "g", a.did[0], 0, &err), 0);
    static async_t w;
    memset(&w, 0, sizeof w);
    assert_int_equal(bs_log_fetch_async(f->log, T, "src", "g", 1, 60000, async_cb, &w, &err), 0);
    sleep_ms(50);
    assert_int_equal(bs_log_topic_stats(f->log, T, "dlq", &(bs_log_topic_stats_t){0}, &err),
                     BS_ENOTFOUND);
    assert_int_equal(unlink(p), 0);
    next_is_t n = {f->log, "dlq", 1};
    assert_true(wait_until(topic_next_is, &n));
    assert_false(atomic_load(&w.done)); /* it was the retry, not the fetch's deadline */
    bs_log_consumer_stats_t s;
    for (int i = 0; i < 2000; i++) {
        s = cstats(f->log, "src", "g");
        if (s.dead_lettered == 1)
            break;
        sleep_ms(5);
    }
    assert_int_equal(s.dead_lettered, 1);
    assert_int_equal(s.ack_floor, 1);
}

static void test_consumer_positions(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    ensure(f->log, "q", NULL);
    fill(f->log, "q", 10);
    bs_log_consumer_config_t c = {.ack_wait_ms = 200};
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "q", "g", &c, &err), 0);
    dl_t a = fetch(f->log, "q", "g", 6, 0);
    assert_int_equal(a.n, 6);
    ack(f->log, "q", "g", a.did[0]);
    ack(f->log, "q", "g", a.did[1]);
    ack(f->log, "q", "g", a.did[2]);
    ack(f->log, "q", "g", a.did[4]);
    reopen(f);
    bs_log_consumer_stats_t s = cstats(f->log, "q", "g");
    assert_int_equal(s.ack_floor, 3);
    assert_int_equal(s.next_offset, 6);
    assert_int_equal(s.ack_pending, 2);
    /* New records first (the pending ones wait for ack_wait from the reopen)... */
    dl_t b = fetch(f->log, "q", "g", 10, 0);
    assert_int_equal(b.n, 4);
    assert_int_equal(b.offset[0], 6);
    /* ...then 3 and 5 come back as their second delivery; 4 (acked) never does. */
    dl_t r = fetch(f->log, "q", "g", 10, 10000);
    int seen3 = 0, seen5 = 0;
    for (int i = 0; i < r.n; i++) {
        assert_true(r.offset[i] == 3 || r.offset[i] == 5 || r.offset[i] >= 6);
        if (r.offset[i] == 3) {
            seen3 = 1;
            assert_int_equal(r.delivery[i], 2);
        }
        if (r.offset[i] == 5)
            seen5 = 1;
    }
    assert_true(seen3 && seen5);
    /* A delivery id from before the reopen still acks. */
    ack(f->log, "q", "g", a.did[3]);

    /* Positions survive kill -9 too (journal writes are in the page cache). */
    bs_log_close(f->log);
    f->log = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        bs_log_t *l = open_log(f->dir);
        if (!l)
            _exit(2);
        bs_err_t e2;
        bs_log_ack(l, T, "q", "g", "5.1", &e2);
        for (int i = 6; i < 10; i++) {
            char did[32];
            snprintf(did, sizeof did, "%d.1", i);
            bs_log_ack(l, T, "q", "g", did, &e2);
        }
        bs_log_consumer_stats_t s2;
        if (bs_log_consumer_stats(l, T, "q", "g", &s2, &e2) != 0 || s2.ack_floor != 10)
            _exit(4);
        kill(getpid(), SIGKILL);
        _exit(5);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    f->log = open_log(f->dir);
    s = cstats(f->log, "q", "g");
    assert_int_equal(s.ack_floor, 10);
    assert_int_equal(s.ack_pending, 0);
}

typedef struct {
    int64_t want;
    uint64_t pos;
} pos_of_t;

static int pos_of_visit(const bs__rec_view_t *v, uint64_t pos, void *ud)
{
    pos_of_t *p = ud;
    if (v->offset != p->want)
        return 0;
    p->pos = pos;
    return 1;
}

/* The log lost records a group was given (a machine crash with sync_interval_ms > 0): on
 * open the group forgets those deliveries, every one of them, and hands out the offsets
 * again once new records take them. */
static void test_consumer_log_shorter(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    ensure(f->log, "q", NULL);
    fill(f->log, "q", 100);
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "q", "g", NULL, &err), 0);
    int n = 0;
    while (n < 100) {
        dl_t a = fetch(f->log, "q", "g", 100, 0);
        assert_true(a.n > 0);
        n += a.n;
    }
    assert_int_equal(cstats(f->log, "q", "g").ack_pending, 100);
    bs_log_close(f->log);
    f->log = NULL;
    /* Cut the segment after offset 19. */
    char p[256];
    seg_path(f, "q", 0, "seg", p, sizeof p);
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    static uint8_t img[1 << 16];
    ssize_t len = pread(fd, img, sizeof img, 0);
    assert_true(len > BS__SEG_HDR && len < (ssize_t)sizeof img);
    pos_of_t at = {20, 0};
    bs__seg_scan(img, (size_t)len, 0, pos_of_visit, &at, NULL);
    assert_true(at.pos > BS__SEG_HDR);
    assert_int_equal(ftruncate(fd, (off_t)at.pos), 0);
    close(fd);
    f->log = open_log(f->dir);
    assert_non_null(f->log);
    assert_int_equal(stats(f->log, "q").next_offset, 20);
    bs_log_consumer_stats_t s = cstats(f->log, "q", "g");
    assert_int_equal(s.next_offset, 20);
    assert_int_equal(s.ack_pending, 20);
    assert_int_equal(s.ack_floor, 0);
    /* Offsets 20.. are new records now: first deliveries, acked like any. */
    fill(f->log, "q", 5);
    dl_t b = fetch(f->log, "q", "g", 100, 0);
    assert_int_equal(b.n, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(b.offset[i], 20 + i);
        assert_int_equal(b.delivery[i], 1);
        ack(f->log, "q", "g", b.did[i]);
    }
    s = cstats(f->log, "q", "g");
    assert_int_equal(s.ack_pending, 20);
    assert_int_equal(s.next_offset, 25);
}

static void test_journal_compaction(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    ensure(f->log, "q", NULL);
    bs_log_consumer_config_t c = {.max_ack_pending = -1};
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "q", "g", &c, &err), 0);
    /* 70k acks, 17 bytes of journal each. */
    char data[8] = "{}";
    for (int round = 0; round < 7; round++) {
        bs_log_record_in_t in[1000];
        for (int i = 0; i < 1000; i++)
            in[i] = (bs_log_record_in_t){"i", NULL, data, 2};
        static bs_log_append_result_t r[1000];
        for (int k = 0; k < 10; k++)
            assert_int_equal(bs_log_append(f->log, T, "q", in, 1000, r, &err), 0);
        for (;;) {
            static dl_t x;
            memset(&x, 0, sizeof x);
            int n = bs_log_fetch(f->log, T, "q", "g", 200, 0, collect_d, &x, &err);
            assert_true(n >= 0);
            if (n == 0)
                break;
            for (int i = 0; i < n && i < 256; i++)
                ack(f->log, "q", "g", x.did[i]);
        }
    }
    /* Over 1.2 MB of journal entries were written; uncompacted, the file would hold them
     * all. Compaction (past 1 MiB, in the background) brings it under that. */
    char p[256];
    snprintf(p, sizeof p, "%s/%s/q/g.group", f->dir, T);
    off_t now = file_size(p);
    for (int i = 0; i < 1000 && now >= (1 << 20); i++) {
        sleep_ms(10);
        now = file_size(p);
    }
    assert_true(now > 0 && now < (1 << 20));
    reopen(f);
    bs_log_consumer_stats_t s = cstats(f->log, "q", "g");
    assert_int_equal(s.ack_floor, 70000);
    assert_int_equal(s.next_offset, 70000);
}

/* ---- retention -------------------------------------------------------------------------- */

typedef struct {
    bs_log_t *log;
    const char *topic;
    int64_t max_bytes;
} ret_t;

static int bytes_within(void *ud)
{
    ret_t *r = ud;
    bs_log_topic_stats_t s;
    bs_err_t err;
    return bs_log_topic_stats(r->log, T, r->topic, &s, &err) == 0 && s.bytes <= r->max_bytes &&
           s.first_offset > 0;
}

static int all_gone(void *ud)
{
    ret_t *r = ud;
    bs_log_topic_stats_t s;
    bs_err_t err;
    return bs_log_topic_stats(r->log, T, r->topic, &s, &err) == 0 &&
           s.first_offset == s.next_offset && s.next_offset > 0;
}

static void test_retention(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_log_topic_config_t c = {.segment_bytes = 1024, .retention_bytes = 4096};
    ensure(f->log, "rb", &c);
    char data[120];
    memset(data, 'r', sizeof data - 1);
    data[sizeof data - 1] = '\0';
    for (int i = 0; i < 200; i++)
        put(f->log, "rb", NULL, NULL, data);
    ret_t r = {f->log, "rb", 4096};
    assert_true(wait_until(bytes_within, &r));
    bs_log_topic_stats_t s = stats(f->log, "rb");
    assert_int_equal(s.next_offset, 200);
    /* Reading from 0 starts at the first retained record; the rest is intact. */
    got_t *g = read_all(f->log, "rb", 0);
    assert_int_equal(g->n, 200 - s.first_offset);
    assert_int_equal(g->offset[0], s.first_offset);
    free(g);
    /* A group behind retention skips to the first retained record. */
    assert_int_equal(bs_log_consumer_ensure(f->log, T, "rb", "g", NULL, &err), 0);
    dl_t x = fetch(f->log, "rb", "g", 1, 0);
    assert_int_equal(x.n, 1);
    assert_true(x.offset[0] >= s.first_offset);
    reopen(f);
    assert_true(stats(f->log, "rb").first_offset >= s.first_offset);

    /* By age: everything goes once old enough, the active segment included (it is sealed). */
    bs_log_topic_config_t a = {.retention_ms = 300};
    ensure(f->log, "ra", &a);
    for (int i = 0; i < 20; i++)
        put(f->log, "ra", NULL, NULL, "{}");
    ret_t ra = {f->log, "ra", 0};
    assert_true(wait_until(all_gone, &ra));
    s = stats(f->log, "ra");
    assert_int_equal(s.next_offset, 20);
    assert_int_equal(put(f->log, "ra", NULL, NULL, "{}"), 20);
    int64_t off;
    assert_int_equal(bs_log_offset_at(f->log, T, "ra", 0, &off, &err), 0);
    assert_int_equal(off, 20);
}

/* ---- sync interval ---------------------------------------------------------------------- */

static void test_sync_interval(void **state)
{
    fx_t *f = *state;
    bs_log_topic_config_t c = {.sync_interval_ms = 50};
    ensure(f->log, "lazy", &c);
    for (int i = 0; i < 20; i++)
        assert_int_equal(put(f->log, "lazy", NULL, NULL, "{}"), i);
    /* Acknowledged before the fsync; the timer fsyncs afterwards. */
    bs_log_topic_stats_t s;
    for (int i = 0; i < 2000; i++) {
        s = stats(f->log, "lazy");
        if (s.syncs >= 1)
            break;
        sleep_ms(5);
    }
    assert_true(s.syncs >= 1);
    assert_true(s.syncs < 20);
    reopen(f);
    assert_int_equal(stats(f->log, "lazy").next_offset, 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test_setup_teardown(test_append_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_segments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_safety, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consumer_redelivery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consumer_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consumer_nack_progress, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consumer_dead_letter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consumer_max_ack_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consumer_fetch_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consumer_async_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consumer_dead_letter_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consumer_positions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consumer_log_shorter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_interval, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
