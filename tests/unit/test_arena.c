/* Arena: alignment, growth across blocks, big one-off blocks, overflow checks, the
 * byte limit, string helpers and cleanup hooks (reverse order, run once). */
#include "test_common.h"

#include "base/arena.h"

static void test_alignment_and_distinct(void **state)
{
    (void)state;
    bs_arena_t a;
    bs_arena_init(&a, 256);
    char *prev = NULL;
    for (size_t n = 1; n < 300; n += 7) {
        char *p = bs_arena_alloc(&a, n);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        memset(p, 0xAB, n); /* ASan catches overlap/out-of-bounds */
        assert_ptr_not_equal(p, prev);
        prev = p;
    }
    bs_arena_deinit(&a);
}

static void test_big_block_keeps_small_space_usable(void **state)
{
    (void)state;
    bs_arena_t a;
    bs_arena_init(&a, 1024);
    char *s1 = bs_arena_alloc(&a, 16);
    char *big = bs_arena_alloc(&a, 100000);
    char *s2 = bs_arena_alloc(&a, 16);
    assert_non_null(s1);
    assert_non_null(big);
    assert_non_null(s2);
    memset(big, 1, 100000);
    /* the small allocation after the big one comes from the first block */
    assert_true(s2 > s1 && s2 < s1 + 1024);
    bs_arena_deinit(&a);
}

static void test_overflow_and_limit(void **state)
{
    (void)state;
    bs_arena_t a;
    bs_arena_init(&a, 1024);
    assert_null(bs_arena_alloc(&a, SIZE_MAX));
    assert_null(bs_arena_alloc(&a, SIZE_MAX - 8));
    assert_null(bs_arena_calloc(&a, SIZE_MAX / 2, 4));
    a.limit = 4096;
    assert_non_null(bs_arena_alloc(&a, 1000));
    assert_null(bs_arena_alloc(&a, 8192));
    int *z = bs_arena_calloc(&a, 10, sizeof(int));
    assert_non_null(z);
    for (int i = 0; i < 10; i++)
        assert_int_equal(z[i], 0);
    bs_arena_deinit(&a);
}

static void test_strings(void **state)
{
    (void)state;
    bs_arena_t a;
    bs_arena_init(&a, 0); /* default block size */
    char *s = bs_arena_strndup(&a, "hello world", 5);
    assert_string_equal(s, "hello");
    assert_string_equal(bs_arena_strdup(&a, ""), "");
    char *f = bs_arena_sprintf(&a, "%s-%d-%.1f", "x", 42, 1.5);
    assert_string_equal(f, "x-42-1.5");
    char big[5000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char *g = bs_arena_sprintf(&a, "%s!", big);
    assert_int_equal(strlen(g), sizeof big);
    bs_arena_deinit(&a);
}

static int order[8], n_order;
static void hook(void *data) { order[n_order++] = (int)(intptr_t)data; }

static void test_cleanup_hooks_reverse_once(void **state)
{
    (void)state;
    bs_arena_t a;
    bs_arena_init(&a, 128);
    n_order = 0;
    for (int i = 1; i <= 3; i++)
        assert_int_equal(bs_arena_on_cleanup(&a, hook, (void *)(intptr_t)i), 0);
    bs_arena_deinit(&a);
    assert_int_equal(n_order, 3);
    assert_int_equal(order[0], 3);
    assert_int_equal(order[1], 2);
    assert_int_equal(order[2], 1);
    bs_arena_deinit(&a); /* a second deinit runs nothing and frees nothing twice */
    assert_int_equal(n_order, 3);
    /* the arena is reusable after deinit */
    assert_non_null(bs_arena_alloc(&a, 10));
    bs_arena_deinit(&a);
}

static void test_hook_fails_over_limit(void **state)
{
    (void)state;
    bs_arena_t a;
    bs_arena_init(&a, 64);
    a.limit = 64;
    assert_non_null(bs_arena_alloc(&a, 64));
    assert_int_not_equal(bs_arena_on_cleanup(&a, hook, NULL), 0);
    bs_arena_deinit(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alignment_and_distinct),
        cmocka_unit_test(test_big_block_keeps_small_space_usable),
        cmocka_unit_test(test_overflow_and_limit),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_cleanup_hooks_reverse_once),
        cmocka_unit_test(test_hook_fails_over_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
