/* Error table: every code has a unique API string, a 4xx/5xx status, a description,
 * and bs_err_index maps the codes densely onto 0..BS_ERR_COUNT-1. */
#include "test_common.h"

#include "base/err.h"

static const int codes[] = {
#define XX(name, str, status, desc) BS_##name,
    BS_ERR_MAP(XX)
#undef XX
};
#define N_CODES ((int)(sizeof codes / sizeof codes[0]))

static void test_count_matches_table(void **state)
{
    (void)state;
    assert_int_equal(N_CODES, BS_ERR_COUNT);
}

static void test_codes_negative_and_distinct(void **state)
{
    (void)state;
    for (int i = 0; i < N_CODES; i++) {
        assert_true(codes[i] < 0);
        for (int j = i + 1; j < N_CODES; j++)
            assert_int_not_equal(codes[i], codes[j]);
    }
}

static void test_names_unique_and_snake_case(void **state)
{
    (void)state;
    for (int i = 0; i < N_CODES; i++) {
        const char *a = bs_err_name(codes[i]);
        assert_non_null(a);
        assert_true(strlen(a) > 0);
        for (const char *p = a; *p; p++)
            assert_true((*p >= 'a' && *p <= 'z') || *p == '_');
        for (int j = i + 1; j < N_CODES; j++)
            assert_string_not_equal(a, bs_err_name(codes[j]));
    }
}

static void test_status_is_4xx_or_5xx(void **state)
{
    (void)state;
    for (int i = 0; i < N_CODES; i++) {
        int st = bs_err_status(codes[i]);
        assert_true(st >= 400 && st <= 599);
        assert_true(strlen(bs_err_desc(codes[i])) > 0);
    }
    /* a few the API contract names explicitly (DESIGN.md) */
    assert_int_equal(bs_err_status(BS_EUNAUTH), 401);
    assert_int_equal(bs_err_status(BS_EFORBID), 403);
    assert_int_equal(bs_err_status(BS_ENOTFOUND), 404);
    assert_int_equal(bs_err_status(BS_ERATE), 429);
    assert_int_equal(bs_err_status(BS_ETOOBIG), 413);
}

static void test_index_dense(void **state)
{
    (void)state;
    int seen[BS_ERR_COUNT] = {0};
    for (int i = 0; i < N_CODES; i++) {
        int idx = bs_err_index(codes[i]);
        assert_true(idx >= 0 && idx < BS_ERR_COUNT);
        assert_int_equal(seen[idx], 0);
        seen[idx] = 1;
    }
    assert_int_equal(bs_err_index(0), -1);
    assert_int_equal(bs_err_index(BS_ERR_FIRST_), -1);
    assert_int_equal(bs_err_index(BS_ERR_LAST_), -1);
    assert_int_equal(bs_err_index(12345), -1);
}

static void test_unknown_code_is_internal(void **state)
{
    (void)state;
    assert_string_equal(bs_err_name(424242), "internal");
    assert_int_equal(bs_err_status(424242), 500);
}

static void test_set_and_clear(void **state)
{
    (void)state;
    bs_err_t e;
    assert_int_equal(bs_err_setf(&e, BS_EINVAL, "field_x", "bad %d", 7), BS_EINVAL);
    assert_int_equal(e.code, BS_EINVAL);
    assert_string_equal(e.field, "field_x");
    assert_string_equal(e.msg, "bad 7");
    assert_int_equal(bs_err_set(NULL, BS_EIO, "ignored"), BS_EIO); /* NULL err is allowed */
    char longmsg[600];
    memset(longmsg, 'm', sizeof longmsg - 1);
    longmsg[sizeof longmsg - 1] = '\0';
    bs_err_set(&e, BS_EIO, "%s", longmsg); /* truncated, never overflows */
    assert_int_equal(strlen(e.msg), sizeof e.msg - 1);
    assert_string_equal(e.field, "");
    bs_err_clear(&e);
    assert_int_equal(e.code, 0);
    assert_string_equal(e.msg, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_count_matches_table),
        cmocka_unit_test(test_codes_negative_and_distinct),
        cmocka_unit_test(test_names_unique_and_snake_case),
        cmocka_unit_test(test_status_is_4xx_or_5xx),
        cmocka_unit_test(test_index_dense),
        cmocka_unit_test(test_unknown_code_is_internal),
        cmocka_unit_test(test_set_and_clear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
