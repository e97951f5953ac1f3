/* Clocks' parsers (base/time.h): durations as specs write them, RFC 3339 round trips. The
 * duration cases are checked against the arithmetic they name, not against our own output. */
#include "test_common.h"

#include "base/err.h"
#include "base/time.h"

static void test_durations(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int64_t ms;
    } ok[] = {
        {"0", 0},
        {"250ms", 250},
        {"30s", 30 * 1000},
        {"2m", 2 * 60 * 1000},
        {"1.5h", 90 * 60 * 1000},
        {"7d", 7LL * 24 * 3600 * 1000},
        {"1h30m", 90 * 60 * 1000},
        {"1m30s500ms", 90 * 1000 + 500},
        {"0.0015s", 2}, /* rounded to whole ms */
        {"0s", 0},
        {"36500d", 36500LL * 86400 * 1000},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t ms = -1;
        assert_int_equal(bs_time_parse_duration(ok[i].s, &ms), 0);
        assert_int_equal(ms, ok[i].ms);
    }
    static const char *const bad[] = {"", "5", "-1s", "+1s", "1x", "s", "1.5.5s", "1 s", "1s ",
                                      "nan", "infs", "1e3s", "36501d", "1ms2", "m", "0x10s"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ms = 42;
        assert_int_equal(bs_time_parse_duration(bad[i], &ms), BS_EINVAL);
        assert_int_equal(ms, 42); /* untouched on error */
    }
    int64_t ms;
    assert_int_equal(bs_time_parse_duration(NULL, &ms), BS_EINVAL);
}

static void test_rfc3339_round_trip(void **state)
{
    (void)state;
    const int64_t cases[] = {0, 1, 999, 1767225600000LL, 1796223056669LL, 4102444799999LL};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char s[32];
        bs_time_rfc3339(cases[i], s, sizeof s);
        int64_t back = -1;
        assert_int_equal(bs_time_parse_rfc3339(s, &back), 0);
        assert_int_equal(back, cases[i]);
    }
    int64_t t;
    assert_int_equal(bs_time_parse_rfc3339("2026-01-02T03:04:05+01:00", &t), 0);
    int64_t u;
    assert_int_equal(bs_time_parse_rfc3339("2026-01-02T02:04:05Z", &u), 0);
    assert_int_equal(t, u);
    assert_int_equal(bs_time_parse_rfc3339("2026-01-02 03:04:05", &t), BS_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_rfc3339_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
