/* Buffer and JSON writer: growth from stack storage, escaping per RFC 8259 §7, UTF-8
 * validation (valid sequences kept, invalid bytes -> U+FFFD), doubles that read back
 * exactly, non-finite numbers as null, comma handling; output re-parsed with cJSON. */
#include "test_common.h"

#include <math.h>

#include "base/buf.h"
#include "base/json.h"

static char *esc(const char *s, size_t n)
{
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_strn(&b, s, n);
    return bs_buf_take(&b);
}

/* Parses a JSON string literal with cJSON and returns its decoded value (malloc'd). */
static char *roundtrip(const char *json)
{
    cJSON *j = cJSON_Parse(json);
    assert_non_null(j);
    assert_true(cJSON_IsString(j));
    char *v = strdup(j->valuestring);
    cJSON_Delete(j);
    return v;
}

static void test_buf_grows_from_stack(void **state)
{
    (void)state;
    char small[8];
    bs_buf_t b = BS_BUF_ON(small);
    bs_buf_puts(&b, "abc");
    assert_ptr_equal(b.data, small);
    bs_buf_puts(&b, "defghijklmnop");
    assert_ptr_not_equal(b.data, small);
    assert_string_equal(b.data, "abcdefghijklmnop");
    bs_buf_printf(&b, "%0300d", 1);
    assert_int_equal(b.len, 16 + 300);
    char *t = bs_buf_take(&b);
    assert_int_equal(strlen(t), 316);
    free(t);
    assert_null(b.data);
    bs_buf_t c = BS_BUF_ON(small);
    bs_buf_puts(&c, "hi");
    char *t2 = bs_buf_take(&c); /* copies out of borrowed storage */
    assert_ptr_not_equal(t2, small);
    assert_string_equal(t2, "hi");
    free(t2);
    bs_buf_free(&c);
}

static void test_escape_specials(void **state)
{
    (void)state;
    char *o = esc("a\"b\\c/d", 7);
    assert_string_equal(o, "\"a\\\"b\\\\c/d\"");
    free(o);
    o = esc("\n\r\t\b\f", 5);
    assert_string_equal(o, "\"\\n\\r\\t\\b\\f\"");
    free(o);
    char ctl[32];
    for (int i = 0; i < 32; i++)
        ctl[i] = (char)i;
    o = esc(ctl, 32); /* includes NUL: length-delimited input */
    for (const char *p = o; *p; p++)
        assert_true((unsigned char)*p >= 0x20);
    assert_non_null(strstr(o, "\\u0000"));
    assert_non_null(strstr(o, "\\u001f"));
    char *back = roundtrip(o);
    assert_int_equal(back[0], 0); /* cJSON stops at the decoded NUL */
    free(back);
    free(o);
    o = esc("\x7f", 1); /* DEL is allowed raw in JSON */
    char *d = roundtrip(o);
    assert_string_equal(d, "\x7f");
    free(d);
    free(o);
}

static void test_utf8_kept(void **state)
{
    (void)state;
    const char *s = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xEF\xBF\xBF"; /* é € 😀 U+FFFF */
    char *o = esc(s, strlen(s));
    char *back = roundtrip(o);
    assert_string_equal(back, s);
    free(back);
    free(o);
}

static void test_utf8_invalid_replaced(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t n;
        int replacements;
    } cases[] = {
        {"\xFF", 1, 1},
        {"a\x80z", 3, 1},                 /* lone continuation */
        {"\xC3", 1, 1},                   /* truncated 2-byte */
        {"\xE2\x82", 2, 2},               /* truncated 3-byte: each byte replaced */
        {"\xC0\xAF", 2, 2},               /* overlong '/' */
        {"\xE0\x80\xAF", 3, 3},           /* overlong */
        {"\xED\xA0\x80", 3, 3},           /* UTF-16 surrogate */
        {"\xF4\x90\x80\x80", 4, 4},       /* > U+10FFFF */
        {"\xF8\x88\x80\x80\x80", 5, 5},   /* 5-byte form */
        {"\xC3(", 2, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *o = esc(cases[i].in, cases[i].n);
        int reps = 0;
        for (const char *p = o; (p = strstr(p, "\xEF\xBF\xBD")); p += 3)
            reps++;
        assert_int_equal(reps, cases[i].replacements);
        char *back = roundtrip(o); /* always valid JSON */
        free(back);
        free(o);
    }
}

static void test_doubles_roundtrip(void **state)
{
    (void)state;
    const double vals[] = {0.0, -0.0, 1.0, -1.5, 0.1, 1.0 / 3.0, 2.0 / 3.0, 1e300, -1e-300,
                           5e-324, 1.7976931348623157e308, 123456789012345678.0, 3.141592653589793,
                           0.30000000000000004, 100.0, 1e21, 9007199254740993.0};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        bs_buf_t b;
        bs_buf_init(&b);
        bs_jw_double(&b, vals[i]);
        char *end;
        double back = strtod(b.data, &end);
        assert_int_equal(*end, '\0');
        assert_true(back == vals[i]);
        assert_int_equal(signbit(back), signbit(vals[i]));
        cJSON *j = cJSON_Parse(b.data);
        assert_non_null(j);
        cJSON_Delete(j);
        bs_buf_free(&b);
    }
}

static void test_nonfinite_null(void **state)
{
    (void)state;
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_arr_begin(&b);
    bs_jw_double(&b, NAN);
    bs_jw_double(&b, INFINITY);
    bs_jw_double(&b, -INFINITY);
    bs_jw_double(&b, 2.5);
    bs_jw_arr_end(&b);
    assert_string_equal(b.data, "[null,null,null,2.5]");
    bs_buf_free(&b);
}

static void test_structure_and_commas(void **state)
{
    (void)state;
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "a");
    bs_jw_int(&b, INT64_MIN);
    bs_jw_key(&b, "b");
    bs_jw_arr_begin(&b);
    bs_jw_bool(&b, 1);
    bs_jw_bool(&b, 0);
    bs_jw_null(&b);
    bs_jw_obj_begin(&b);
    bs_jw_obj_end(&b);
    bs_jw_arr_begin(&b);
    bs_jw_arr_end(&b);
    bs_jw_raw(&b, "{\"x\":1}", 7);
    bs_jw_str(&b, NULL);
    bs_jw_arr_end(&b);
    bs_jw_key(&b, "q\"k");
    bs_jw_str(&b, "v");
    bs_jw_obj_end(&b);
    assert_string_equal(b.data, "{\"a\":-9223372036854775808,\"b\":[true,false,null,{},[],"
                                "{\"x\":1},null],\"q\\\"k\":\"v\"}");
    cJSON *j = cJSON_Parse(b.data);
    assert_non_null(j);
    cJSON_Delete(j);
    bs_buf_reset(&b);
    assert_int_equal(b.len, 0);
    bs_jw_int(&b, 7);
    assert_string_equal(b.data, "7"); /* no stray comma after reset */
    bs_buf_free(&b);
}

static void test_long_string(void **state)
{
    (void)state;
    size_t n = 100000;
    char *s = malloc(n);
    for (size_t i = 0; i < n; i++)
        s[i] = (char)(i % 3 == 0 ? '"' : 'a' + (char)(i % 26));
    char *o = esc(s, n);
    cJSON *j = cJSON_Parse(o);
    assert_non_null(j);
    assert_int_equal(strlen(j->valuestring), n);
    assert_memory_equal(j->valuestring, s, n);
    cJSON_Delete(j);
    free(o);
    free(s);
}

/* Keys and strings take a one-step path when they need no escaping: every ASCII byte in a
 * key and in a value, written into storage that must grow on the way, reads back as it was. */
static void test_keys_and_strings_every_ascii_byte(void **state)
{
    (void)state;
    for (int c = 1; c < 0x80; c++) {
        char small[4];
        bs_buf_t b = BS_BUF_ON(small);
        char k[4] = {'k', (char)c, 'z', 0}, v[3] = {(char)c, 'v', 0};
        bs_jw_obj_begin(&b);
        bs_jw_key(&b, "plain");
        bs_jw_str(&b, "x");
        bs_jw_key(&b, k);
        bs_jw_arr_begin(&b);
        bs_jw_str(&b, v);
        bs_jw_strn(&b, v, 1);
        bs_jw_arr_end(&b);
        bs_jw_obj_end(&b);
        assert_false(b.oom);
        cJSON *j = cJSON_Parse(b.data);
        if (!j)
            fail_msg("byte 0x%02x: not JSON: %s", c, b.data);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "plain")->valuestring, "x");
        cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, k);
        if (!arr || cJSON_GetArraySize(arr) != 2)
            fail_msg("byte 0x%02x: key lost: %s", c, b.data);
        assert_string_equal(cJSON_GetArrayItem(arr, 0)->valuestring, v);
        assert_int_equal(strlen(cJSON_GetArrayItem(arr, 1)->valuestring), 1);
        assert_int_equal(cJSON_GetArrayItem(arr, 1)->valuestring[0], c);
        cJSON_Delete(j);
        bs_buf_free(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_grows_from_stack), cmocka_unit_test(test_escape_specials),
        cmocka_unit_test(test_utf8_kept),            cmocka_unit_test(test_utf8_invalid_replaced),
        cmocka_unit_test(test_doubles_roundtrip),    cmocka_unit_test(test_nonfinite_null),
        cmocka_unit_test(test_structure_and_commas), cmocka_unit_test(test_long_string),
        cmocka_unit_test(test_keys_and_strings_every_ascii_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
