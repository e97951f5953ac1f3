/* bs_fmt_sig: the same text as glibc's snprintf("%.*g") wherever it takes the fast
 * path (edge cases, random bit patterns, probabilities, short decimals), and 0 (the
 * caller's snprintf fallback) only outside its documented range. */
#include "test_common.h"

#include <math.h>

#include "base/numfmt.h"

static void check(double v, int sig)
{
    char a[40], b[40];
    int n = bs_fmt_sig(v, sig, a);
    snprintf(b, sizeof b, "%.*g", sig, v);
    if (n) {
        if (strcmp(a, b) != 0)
            fail_msg("%.17g at %d digits: got %s, snprintf says %s", v, sig, a, b);
        assert_int_equal(n, (int)strlen(a));
    }
}

static void test_edges(void **state)
{
    (void)state;
    const double v[] = {0.0, -0.0, 1, -1, 0.5, 0.1, 0.2, 0.3, 1e-4, 1e-5, 9.9999999999999991e-5,
                        123456789.125, 1e15, 1e16, 9.9999999999999995e15, 17.99, 1001,
                        0.99440681934356689, 0.0055931806564331055, 2.5, 0.125, 1e-6, 1e-7,
                        5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 4503599627370497.5};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        for (int sig = 1; sig <= 17; sig++)
            check(v[i], sig);
    char out[40];
    assert_int_equal(bs_fmt_sig(0.0, 17, out), 1);
    assert_string_equal(out, "0");
    assert_int_equal(bs_fmt_sig(NAN, 17, out), 0);
    assert_int_equal(bs_fmt_sig(1e300, 17, out), 0); /* outside the exact range: fallback */
}

static void test_random(void **state)
{
    (void)state;
    uint64_t x = 88172645463325252ull;
    long fast = 0;
    for (int t = 0; t < 400000; t++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double v;
        switch (t % 4) {
        case 0: memcpy(&v, &x, sizeof v); break;                            /* any bit pattern */
        case 1: v = (double)(x >> 11) / 9007199254740992.0; break;          /* [0, 1) */
        case 2: v = 1 / (1 + exp((double)(int64_t)x / 4.6e17)); break;      /* probabilities */
        default: v = (double)(x % 10000000) / 1000; break;                  /* short decimals */
        }
        if (!isfinite(v))
            continue;
        char a[40];
        fast += bs_fmt_sig(v, 17, a) != 0;
        check(v, 17);
        check(v, 15);
    }
    assert_true(fast > 200000); /* the fast path is what is being tested */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_edges),
        cmocka_unit_test(test_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
