/*
 * libFuzzer target for the JSON reader and writer.
 *
 * For any input: bs_json_depth must agree with the depth check of bs_json_parse; a parsed
 * document rendered with the bs_jw_* writer must parse again, and rendering that second
 * tree must give the same bytes (render ∘ parse is idempotent on writer output). The raw
 * input is also pushed through bs_jw_escape, whose output must always be a valid JSON
 * string (invalid UTF-8 becomes U+FFFD). Every string of a parsed document, keys too, is
 * valid UTF-8 without NUL: its length as a C string is all of it (cJSON would have cut a
 * \u0000 short), which the re-parse of the rendered text confirms.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"

#define MAX_DEPTH 64

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "check failed: %s (%s:%d)\n", #c, __FILE__, __LINE__);                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void render(bs_buf_t *b, const cJSON *j)
{
    if (cJSON_IsObject(j)) {
        bs_jw_obj_begin(b);
        for (const cJSON *c = j->child; c; c = c->next) {
            CHECK(!c->string || bs_utf8_valid(c->string, strlen(c->string)));
            bs_jw_key(b, c->string ? c->string : "");
            render(b, c);
        }
        bs_jw_obj_end(b);
    } else if (cJSON_IsArray(j)) {
        bs_jw_arr_begin(b);
        for (const cJSON *c = j->child; c; c = c->next)
            render(b, c);
        bs_jw_arr_end(b);
    } else if (cJSON_IsString(j)) {
        CHECK(bs_utf8_valid(j->valuestring, strlen(j->valuestring)));
        bs_jw_str(b, j->valuestring);
    } else if (cJSON_IsNumber(j)) {
        bs_jw_double(b, j->valuedouble);
    } else if (cJSON_IsBool(j)) {
        bs_jw_bool(b, cJSON_IsTrue(j));
    } else {
        bs_jw_null(b);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy, not NUL-terminated, so ASan sees any read past the end. */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);

    int depth = bs_json_depth(buf, size);
    CHECK(depth >= 0);
    bs_err_t err;
    bs_err_clear(&err);
    cJSON *j = bs_json_parse(buf, size, MAX_DEPTH, &err);
    if (depth > MAX_DEPTH)
        CHECK(!j && err.code == BS_EDEPTH);
    if (!j)
        CHECK(err.code == BS_EPARSE || err.code == BS_EDEPTH || err.code == BS_EINVAL);
    if (j) {
        bs_buf_t one, two;
        bs_buf_init(&one);
        bs_buf_init(&two);
        render(&one, j);
        CHECK(!one.oom);
        CHECK(bs_json_depth(one.data, one.len) <= depth);
        bs_err_t err2;
        cJSON *k = bs_json_parse(one.data, one.len, MAX_DEPTH, &err2);
        if (!k)
            fprintf(stderr, "re-parse failed: %s\n%.*s\n", err2.msg, (int)one.len, one.data);
        CHECK(k != NULL);
        render(&two, k);
        if (one.len != two.len || memcmp(one.data, two.data, one.len) != 0)
            fprintf(stderr, "not idempotent:\n%.*s\n%.*s\n", (int)one.len, one.data,
                    (int)two.len, two.data);
        CHECK(one.len == two.len && memcmp(one.data, two.data, one.len) == 0);
        cJSON_Delete(k);
        bs_buf_free(&one);
        bs_buf_free(&two);
        cJSON_Delete(j);
    }

    /* The escaper on arbitrary bytes always yields a valid JSON string. */
    bs_buf_t s;
    bs_buf_init(&s);
    bs_jw_strn(&s, buf, size);
    CHECK(!s.oom);
    cJSON *str = cJSON_ParseWithLength(s.data, s.len);
    CHECK(str && cJSON_IsString(str));
    cJSON_Delete(str);
    bs_buf_free(&s);
    free(buf);
    return 0;
}
