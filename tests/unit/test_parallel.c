/* bs_parallel_for: every part runs exactly once, on the caller and the helpers, for
 * back-to-back computations and for several callers at once (only one uses the
 * helpers, the others run inline); a limit of 1 keeps every part on the caller. */
#include "test_common.h"

#include <pthread.h>
#include <stdatomic.h>

#include "base/parallel.h"

typedef struct {
    atomic_int *hits;
    pthread_t caller;
    atomic_int on_caller;
} job_t;

static void hit(void *ctx, int i)
{
    job_t *j = ctx;
    atomic_fetch_add(&j->hits[i], 1);
    if (pthread_equal(pthread_self(), j->caller))
        atomic_fetch_add(&j->on_caller, 1);
}

/* Runs n parts; returns how many ran on the calling thread. */
static int run(int n)
{
    job_t j = {.hits = calloc((size_t)n + 1, sizeof(atomic_int)), .caller = pthread_self()};
    atomic_init(&j.on_caller, 0);
    bs_parallel_for(n, hit, &j);
    for (int i = 0; i < n; i++)
        assert_int_equal(atomic_load(&j.hits[i]), 1);
    free(j.hits);
    return atomic_load(&j.on_caller);
}

static void test_every_part_once(void **state)
{
    (void)state;
    assert_true(bs_parallel_width() >= 1);
    const int sizes[] = {0, 1, 2, 3, 7, 16, 64, 1000};
    for (int rep = 0; rep < 300; rep++)
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
            run(sizes[k]);
}

static void *caller_main(void *arg)
{
    (void)arg;
    for (int rep = 0; rep < 300; rep++)
        run(1 + rep % 97);
    return NULL;
}

static void test_concurrent_callers(void **state)
{
    (void)state;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, caller_main, NULL), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
}

static void test_limit_of_one_stays_on_the_caller(void **state)
{
    (void)state;
    bs_parallel_set_max(1);
    assert_int_equal(bs_parallel_width(), 1);
    for (int rep = 0; rep < 50; rep++)
        assert_int_equal(run(500), 500);
    bs_parallel_set_max(0);
    assert_true(bs_parallel_width() >= 1);
    run(500);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_part_once),
        cmocka_unit_test(test_concurrent_callers),
        cmocka_unit_test(test_limit_of_one_stays_on_the_caller),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
