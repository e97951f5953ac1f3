/* UUIDv7 (RFC 9562 §5.7): canonical format, version 7, variant 10, the timestamp field,
 * strict ordering of ids made by one thread or, for bs_uuid7_ordered, by all threads. */
#include "test_common.h"

#include <pthread.h>

#include "base/id.h"
#include "base/time.h"

static int hexv(char c) { return (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1; }

static void test_format(void **state)
{
    (void)state;
    for (int n = 0; n < 1000; n++) {
        char u[37];
        memset(u, 'Z', sizeof u);
        bs_uuid7(u);
        assert_int_equal(strlen(u), 36);
        for (int i = 0; i < 36; i++) {
            if (i == 8 || i == 13 || i == 18 || i == 23)
                assert_int_equal(u[i], '-');
            else
                assert_true(hexv(u[i]) >= 0); /* lowercase hex only */
        }
        assert_int_equal(u[14], '7');                      /* version */
        assert_true(strchr("89ab", u[19]) != NULL);        /* variant 10xx */
    }
}

static void test_timestamp(void **state)
{
    (void)state;
    int64_t before = bs_time_wall_ms();
    char u[37];
    bs_uuid7(u);
    int64_t after = bs_time_wall_ms();
    int64_t ms = 0;
    for (int i = 0; i < 13; i++)
        if (u[i] != '-')
            ms = ms * 16 + hexv(u[i]);
    assert_true(ms >= before && ms <= after);
}

static void test_ordered_and_unique_within_thread(void **state)
{
    (void)state;
    enum { N = 20000 };
    char(*ids)[37] = malloc(sizeof(*ids) * N);
    assert_non_null(ids);
    for (int i = 0; i < N; i++)
        bs_uuid7(ids[i]);
    for (int i = 1; i < N; i++)
        assert_true(strcmp(ids[i - 1], ids[i]) < 0);
    free(ids);
}

/* Threads take ordered ids under one lock, as registry writes do under the store's lock:
 * the shared log they append to must come out strictly increasing. */
enum { THREADS = 4, PER_THREAD = 5000 };
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char (*log_ids)[37];
static int log_n;

static void *append_ids(void *arg)
{
    (void)arg;
    for (int i = 0; i < PER_THREAD; i++) {
        pthread_mutex_lock(&log_mu);
        bs_uuid7_ordered(log_ids[log_n++]);
        pthread_mutex_unlock(&log_mu);
        char mine[37];
        bs_uuid7(mine); /* the per-thread generator in between must not disturb the order */
    }
    return NULL;
}

static void test_ordered_across_threads(void **state)
{
    (void)state;
    log_ids = malloc(sizeof(*log_ids) * THREADS * PER_THREAD);
    assert_non_null(log_ids);
    log_n = 0;
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, append_ids, NULL), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(log_n, THREADS * PER_THREAD);
    for (int i = 1; i < log_n; i++)
        assert_true(strcmp(log_ids[i - 1], log_ids[i]) < 0);
    for (int i = 0; i < log_n; i++) {
        assert_int_equal(log_ids[i][14], '7');
        assert_true(strchr("89ab", log_ids[i][19]) != NULL);
    }
    free(log_ids);
}

/* Ids above another process's highest (its clock ahead of ours, or the same ms with a
 * higher counter), and still valid UUIDv7 in the same order as text. */
static void test_ordered_after_a_floor(void **state)
{
    (void)state;
    char now[37], a[37], b[37], c[37];
    bs_uuid7_ordered(now);
    /* a floor one hour ahead, with the 12-bit counter at its last value */
    int64_t ahead = bs_time_wall_ms() + 3600 * 1000;
    char floor[37];
    bs_uuid7_at(floor, ahead);
    memcpy(floor + 15, "fff", 3);
    bs_uuid7_ordered_after(a, floor);
    assert_true(strcmp(a, floor) > 0);
    assert_true(strcmp(a, now) > 0);
    assert_int_equal(a[14], '7');
    assert_true(strchr("89ab", a[19]) != NULL);
    /* the counter carried into the next ms */
    assert_true(strncmp(a, floor, 8) >= 0);
    bs_uuid7_ordered_after(b, a);
    assert_true(strcmp(b, a) > 0);
    /* a floor below the clock, NULL and junk change nothing but order */
    bs_uuid7_ordered_after(c, "00000000-0000-7000-8000-000000000000");
    assert_true(strcmp(c, b) > 0);
    bs_uuid7_ordered_after(c, "not an id");
    assert_true(strcmp(c, b) > 0);
    bs_uuid7_ordered_after(c, NULL);
    assert_true(strcmp(c, b) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_timestamp),
        cmocka_unit_test(test_ordered_and_unique_within_thread),
        cmocka_unit_test(test_ordered_across_threads),
        cmocka_unit_test(test_ordered_after_a_floor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
