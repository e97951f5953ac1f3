/* bs_fmt_sig: the same text as glibc's snprintf("%.*g") wherever it takes the fast
 * path (edge cases, random bit patterns, probabilities, short decimals), and 0 (the
 * caller's snprintf fallback) only outside its documented range. bs_fmt_json_double:
 * the same text as bs_jw_double's rule computed with snprintf and strtod. */
#include "test_common.h"

#include <math.h>

#include "base/buf.h"
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

/* bs_jw_double's rule with the C library: %.17g, unless its last two significant digits
 * are within 15 of 00 and %.15g reads back as v. */
static void json_double_oracle(double v, char *out, size_t cap)
{
    char t17[40], t15[40];
    int n = snprintf(t17, sizeof t17, "%.17g", v);
    int digits = 0, last2 = 0;
    for (int i = 0; i < n && t17[i] != 'e'; i++) {
        if (t17[i] >= '0' && t17[i] <= '9' && (digits || t17[i] != '0')) {
            digits++;
            last2 = (last2 * 10 + (t17[i] - '0')) % 100;
        }
    }
    if (digits == 16)
        last2 = (last2 * 10) % 100;
    snprintf(t15, sizeof t15, "%.15g", v);
    if (digits > 15 && (last2 <= 15 || last2 >= 85) && strtod(t15, NULL) == v)
        snprintf(out, cap, "%s", t15);
    else
        snprintf(out, cap, "%s", t17);
}

static int check_json(double v)
{
    char a[40], want[40], storage[64];
    json_double_oracle(v, want, sizeof want);
    bs_buf_t b = BS_BUF_ON(storage); /* bs_jw_double, whichever path it takes */
    bs_jw_double(&b, v);
    if (strcmp(b.data, want) != 0)
        fail_msg("%.17g: bs_jw_double wrote %s, the rule says %s", v, b.data, want);
    int n = bs_fmt_json_double(v, a);
    if (!n)
        return 0;
    if (strcmp(a, want) != 0)
        fail_msg("%.17g: got %s, the rule says %s", v, a, want);
    assert_int_equal(n, (int)strlen(a));
    return 1;
}

static void test_json_double(void **state)
{
    (void)state;
    const double edges[] = {0.0,  -0.0, 1,   -1,   0.5,  0.1,  0.2,  0.3,   0.1 + 0.2, 1e-4,
                            1e-5, 1e15, 1e16, 17.99, 1001, 2.5, -0.125, 1.0 / 3, 2.0 / 3,
                            0.687436431646347, 0.31256356835365295, 123456789012345.6};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
        check_json(edges[i]);
    char out[40];
    assert_int_equal(bs_fmt_json_double(NAN, out), 0);
    assert_int_equal(bs_fmt_json_double(5e-324, out), 0); /* subnormal: the fallback */
    const double fallback[] = {5e-324, 1e-310, 1e300, -1.7976931348623157e308, 1e15, 1e16, 1e22};
    for (size_t i = 0; i < sizeof fallback / sizeof fallback[0]; i++)
        check_json(fallback[i]);
    uint64_t x = 0x2545F4914F6CDD1Dull;
    long fast = 0, short15 = 0;
    for (int t = 0; t < 400000; t++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double v;
        switch (t % 5) {
        case 0: memcpy(&v, &x, sizeof v); break;                       /* any bit pattern */
        case 1: v = (double)(x >> 11) / 9007199254740992.0; break;     /* [0, 1) */
        case 2: v = 1 / (1 + exp((double)(int64_t)x / 4.6e17)); break; /* probabilities */
        case 3: v = (double)(int64_t)(x % 20000001) / 1e6 - 10; break;  /* short decimals */
        default: v = (double)(x % 1000000000000000ull) / 1e12; break;  /* 15 digits */
        }
        if (!isfinite(v))
            continue;
        if (check_json(v)) {
            fast++;
            char a[40];
            int n = bs_fmt_json_double(v, a), digits = 0;
            for (int i = 0; i < n && a[i] != 'e'; i++)
                digits += a[i] >= '0' && a[i] <= '9';
            short15 += digits <= 16;
        }
    }
    assert_true(fast > 300000);  /* the fast path is what is being tested */
    assert_true(short15 > 50000); /* and the %.15g choice within it */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_edges),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_json_double),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
