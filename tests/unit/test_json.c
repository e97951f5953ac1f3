/* JSON reader: depth counting (strings and escapes ignored), the depth limit, trailing
 * garbage, empty input, non-terminated input, what strings may hold (no \u0000, no unpaired
 * surrogates, no raw control characters, UTF-8 only; the error names the field), typed
 * getters and unknown-field rejection. */
#include "test_common.h"

#include "base/json.h"

static void test_depth(void **state)
{
    (void)state;
    const struct {
        const char *s;
        int depth;
    } cases[] = {
        {"1", 0},
        {"[]", 1},
        {"{\"a\":[{}]}", 3},
        {"[[[[]]]]", 4},
        {"[\"[[[[\"]", 1},
        {"[\"\\\"[[\"]", 1},        /* escaped quote inside a string */
        {"[\"\\\\\",[[]]]", 3},     /* escaped backslash ends before the quote */
        {"[][][]", 1},
        {"]]]][", 0}, /* unbalanced closers never count as nesting */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(bs_json_depth(cases[i].s, strlen(cases[i].s)), cases[i].depth);
}

static char *nested(int depth)
{
    char *s = malloc((size_t)depth * 2 + 1);
    for (int i = 0; i < depth; i++) {
        s[i] = '[';
        s[2 * depth - 1 - i] = ']';
    }
    s[2 * depth] = '\0';
    return s;
}

static void test_depth_limit(void **state)
{
    (void)state;
    bs_err_t err;
    char *at = nested(10), *over = nested(11);
    cJSON *j = bs_json_parse(at, strlen(at), 10, &err);
    assert_non_null(j);
    cJSON_Delete(j);
    bs_err_clear(&err);
    assert_null(bs_json_parse(over, strlen(over), 10, &err));
    assert_int_equal(err.code, BS_EDEPTH);
    assert_non_null(strstr(err.msg, "10"));
    free(at);
    free(over);
    char *huge = nested(200000); /* must not recurse into cJSON with this */
    assert_null(bs_json_parse(huge, strlen(huge), 64, &err));
    assert_int_equal(err.code, BS_EDEPTH);
    free(huge);
}

/* RFC 8259 numbers only: cJSON alone (strtod) takes leading zeros and a bare point. */
static void test_number_grammar(void **state)
{
    (void)state;
    const char *good[] = {"0", "-0", "1.5", "10", "1e5", "1E+5", "-1.5e-3", "0.0", "[0,-1,2.25]",
                          "{\"a\":-0.0,\"b\":9007199254740993}", "\"01\"", "[\"1.\",\"-.5\"]",
                          "[1 ,2]", "[1e0]"};
    const char *bad[] = {"01", "-01", "00", "1.", "-.5", "1.e3", "1e", "1e+", "--1", "[1.2.3]",
                         "[1e5e5]", "{\"a\":07}", "[1,2.]", "-", "[-]"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        bs_err_t err;
        cJSON *j = bs_json_parse(good[i], strlen(good[i]), 10, &err);
        if (!j)
            fail_msg("'%s' was rejected: %s", good[i], err.msg);
        cJSON_Delete(j);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bs_err_t err;
        bs_err_clear(&err);
        cJSON *j = bs_json_parse(bad[i], strlen(bad[i]), 10, &err);
        if (j)
            fail_msg("'%s' was accepted", bad[i]);
        assert_int_equal(err.code, BS_EPARSE);
    }
    bs_err_t err;
    assert_null(bs_json_parse("{\"x\": 012}", 11, 10, &err));
    assert_non_null(strstr(err.msg, "byte 6"));
}

static void test_trailing_and_empty(void **state)
{
    (void)state;
    bs_err_t err;
    const char *bad[] = {"{} x", "{}{}", "[1] ,", "1 2", "{\"a\":1}}", "", "   ", "nul", "[1,]",
                         "{\"a\"}", "\"abc"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bs_err_clear(&err);
        cJSON *j = bs_json_parse(bad[i], strlen(bad[i]), 64, &err);
        if (j)
            fail_msg("accepted '%s'", bad[i]);
        assert_int_equal(err.code, BS_EPARSE);
    }
    assert_null(bs_json_parse(NULL, 0, 64, &err));
    assert_int_equal(err.code, BS_EPARSE);
    const char *ok[] = {"{}\n", " [1] \r\n\t", "\"s\"", "-0.5e3", "null"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        cJSON *j = bs_json_parse(ok[i], strlen(ok[i]), 64, &err);
        assert_non_null(j);
        cJSON_Delete(j);
    }
}

static void test_not_nul_terminated(void **state)
{
    (void)state;
    /* the parser must stay within len: "[1]" followed by bytes that are not JSON */
    char *buf = malloc(3);
    memcpy(buf, "[1]", 3);
    bs_err_t err;
    cJSON *j = bs_json_parse(buf, 3, 64, &err);
    assert_non_null(j);
    cJSON_Delete(j);
    memcpy(buf, "[12", 3);
    assert_null(bs_json_parse(buf, 3, 64, &err));
    free(buf);
}

/* cJSON keeps C strings: "evil\u0000suffix" would silently become "evil". Each refused
 * string is a 400 naming the path of the value (a key names its object). */
static void test_strings_refused(void **state)
{
    (void)state;
    const struct {
        const char *s;
        size_t len; /* 0: strlen */
        int code;
        const char *field;
        const char *mentions;
    } cases[] = {
        {"{\"name\":\"evil\\u0000suffix\"}", 0, BS_EINVAL, "name", "\\u0000"},
        {"{\"inputs\":{\"f0\\u0000\":1}}", 0, BS_EINVAL, "inputs", "a key in 'inputs'"},
        {"{\"a\\u0000\":1}", 0, BS_EINVAL, "", "an object key"},
        {"[\"x\",\"\\u0000\"]", 0, BS_EINVAL, "[1]", "\\u0000"},
        {"\"\\u0000\"", 0, BS_EINVAL, "", "a string"},
        {"{\"inputs\":[{\"x\":1},{\"city\":\"\\ud800\"}]}", 0, BS_EINVAL, "inputs[1].city",
         "\\ud800"},
        {"{\"a\":\"\\udc00\\ud800\"}", 0, BS_EINVAL, "a", "\\udc00"},
        {"{\"a\":\"\\ud800x\"}", 0, BS_EINVAL, "a", "surrogate"},
        {"{\"a\":\"\\uD83D\\u0041\"}", 0, BS_EINVAL, "a", "\\ud83d"},
        {"{\"a\":\"\\ud83d\"}", 0, BS_EINVAL, "a", "surrogate"},
        {"{\"m\":{\"tags\":[\"ok\",\"b\xff\"]}}", 0, BS_EPARSE, "m.tags[1]", "UTF-8"},
        {"{\"a\":\"\xc0\xaf\"}", 0, BS_EPARSE, "a", "0xc0"},       /* overlong '/' */
        {"{\"a\":\"\xed\xa0\x80\"}", 0, BS_EPARSE, "a", "UTF-8"},  /* encoded surrogate */
        {"{\"a\":\"\xf4\x90\x80\x80\"}", 0, BS_EPARSE, "a", "UTF-8"}, /* above U+10FFFF */
        {"{\"a\":\"\xe2\x82\"}", 0, BS_EPARSE, "a", "UTF-8"},      /* truncated sequence */
        {"{\"\xff\":1}", 0, BS_EPARSE, "", "an object key"},
        {"{\"a\":\"x\x01y\"}", 0, BS_EPARSE, "a", "control character 0x01"},
        {"{\"a\":\"x\ty\"}", 0, BS_EPARSE, "a", "0x09"},
        {"{\"a\":\"x\0y\"}", 11, BS_EPARSE, "a", "0x00"},
        {"{\"a\":[1,2,{\"b\":[\"\\u0000\"]}]}", 0, BS_EINVAL, "a[2].b[0]", "\\u0000"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].s);
        bs_err_t err;
        bs_err_clear(&err);
        cJSON *j = bs_json_parse(cases[i].s, len, 64, &err);
        if (j)
            fail_msg("case %zu was accepted", i);
        if (err.code != cases[i].code || strcmp(err.field, cases[i].field) != 0 ||
            !strstr(err.msg, cases[i].mentions))
            fail_msg("case %zu: code %d field '%s' message '%s'", i, err.code, err.field, err.msg);
    }
}

static void test_strings_accepted(void **state)
{
    (void)state;
    const struct {
        const char *s;
        const char *value; /* of "a" */
    } cases[] = {
        {"{\"a\":\"gr\xc3\xb6\xc3\x9f" "e\"}", "gr\xc3\xb6\xc3\x9f" "e"},
        {"{\"a\":\"\\u00e9\"}", "\xc3\xa9"},
        {"{\"a\":\"\\ud83d\\ude00\"}", "\xf0\x9f\x98\x80"},       /* a surrogate pair */
        {"{\"a\":\"\xf0\x9f\x98\x80\"}", "\xf0\x9f\x98\x80"},
        {"{\"a\":\"\\u0001\\\\u0000\"}", "\x01\\u0000"},         /* escaped backslash */
        {"{\"a\":\"\\\"\\u0000\"}", NULL},                         /* still refused */
        {"{\"a\":\"\xef\xbf\xbf\xf4\x8f\xbf\xbf\"}", "\xef\xbf\xbf\xf4\x8f\xbf\xbf"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bs_err_t err;
        bs_err_clear(&err);
        cJSON *j = bs_json_parse(cases[i].s, strlen(cases[i].s), 64, &err);
        if (!cases[i].value) {
            if (j)
                fail_msg("case %zu was accepted", i);
            continue;
        }
        if (!j)
            fail_msg("case %zu was rejected: %s", i, err.msg);
        assert_string_equal(cJSON_GetObjectItem(j, "a")->valuestring, cases[i].value);
        cJSON_Delete(j);
    }
    /* The path names at most the first levels and never overflows the field. */
    char deep[400];
    size_t o = 0;
    for (int k = 0; k < 40; k++)
        o += (size_t)snprintf(deep + o, sizeof deep - o, "{\"k%d\":", k);
    o += (size_t)snprintf(deep + o, sizeof deep - o, "\"\\u0000\"");
    for (int k = 0; k < 40; k++)
        deep[o++] = '}';
    bs_err_t err;
    assert_null(bs_json_parse(deep, o, 64, &err));
    assert_int_equal(err.code, BS_EINVAL);
    assert_true(strncmp(err.field, "k0.k1.k2", 8) == 0);
    /* A string that is never closed is left to cJSON (malformed JSON). */
    assert_null(bs_json_parse("[\"abc\\u00", 9, 64, &err));
    assert_int_equal(err.code, BS_EPARSE);
}

static void test_arena_owned(void **state)
{
    (void)state;
    bs_arena_t a;
    bs_arena_init(&a, 256);
    bs_err_t err;
    cJSON *j = bs_json_parse_arena(&a, "{\"k\":[1,2,3]}", 13, 64, &err);
    assert_non_null(j);
    bs_arena_deinit(&a); /* frees the tree (LeakSanitizer checks) */
}

static void test_getters(void **state)
{
    (void)state;
    bs_err_t err;
    const char *t = "{\"s\":\"x\",\"i\":42,\"f\":1.5,\"b\":true,\"n\":null,\"big\":1e300}";
    cJSON *j = bs_json_parse(t, strlen(t), 8, &err);
    assert_non_null(j);
    const char *s = NULL;
    int64_t i = 0;
    double d = 0;
    int b = 0;
    assert_int_equal(bs_json_get_str(j, "s", 1, &s, &err), 0);
    assert_string_equal(s, "x");
    assert_int_equal(bs_json_get_str(j, "missing", 0, &s, &err), 1);
    assert_int_equal(bs_json_get_str(j, "n", 0, &s, &err), 1);
    assert_true(bs_json_get_str(j, "missing", 1, &s, &err) < 0);
    assert_string_equal(err.field, "missing");
    assert_true(bs_json_get_str(j, "i", 1, &s, &err) < 0);
    assert_string_equal(err.field, "i");
    assert_int_equal(bs_json_get_int(j, "i", 1, 0, 100, &i, &err), 0);
    assert_int_equal(i, 42);
    assert_true(bs_json_get_int(j, "i", 1, 0, 10, &i, &err) < 0);
    assert_true(bs_json_get_int(j, "f", 1, 0, 10, &i, &err) < 0);
    assert_true(bs_json_get_int(j, "big", 1, INT64_MIN, INT64_MAX, &i, &err) < 0);
    assert_int_equal(bs_json_get_double(j, "f", 1, &d, &err), 0);
    assert_true(d == 1.5);
    assert_true(bs_json_get_double(j, "s", 1, &d, &err) < 0);
    assert_int_equal(bs_json_get_bool(j, "b", 1, &b, &err), 0);
    assert_int_equal(b, 1);
    assert_true(bs_json_get_bool(j, "i", 1, &b, &err) < 0);
    static const char *const allowed[] = {"s", "i", "f", "b", "n", "big", NULL};
    assert_int_equal(bs_json_reject_unknown(j, allowed, &err), 0);
    static const char *const fewer[] = {"s", "i", NULL};
    assert_int_equal(bs_json_reject_unknown(j, fewer, &err), 1);
    assert_string_equal(err.field, "f");
    assert_non_null(strstr(err.msg, "'f'"));
    cJSON_Delete(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_depth),          cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_number_grammar),
        cmocka_unit_test(test_trailing_and_empty), cmocka_unit_test(test_not_nul_terminated),
        cmocka_unit_test(test_strings_refused), cmocka_unit_test(test_strings_accepted),
        cmocka_unit_test(test_arena_owned),    cmocka_unit_test(test_getters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
