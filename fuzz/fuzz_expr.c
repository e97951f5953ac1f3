/*
 * libFuzzer target for the expression language: compile + bs_expr_eval_json.
 *
 * Input: one byte of options (bit 0: want a boolean; bit 1: declare `x` a number and `s` a
 * string, refusing other fields), then the expression's source up to the first NUL byte,
 * then a JSON document (parsed with bs_json_parse) to evaluate it on.
 *
 * For any input: compilation either succeeds or fails with BS_EINVAL (or BS_ENOMEM), a
 * message starting "at LINE:COL: " and a position within the source; a program's field
 * names, source and result type are sane; evaluation returns 0 or an error with a
 * positioned message, never a crash; a number result is finite; a string result is valid
 * UTF-8 (inputs are, and every operation keeps it so); the result is null or of the static
 * result type when that is not BS_EXPR_ANY (the type checker is sound); evaluating twice
 * gives the same value.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/expr.h"
#include "base/json.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "check failed: %s (%s:%d)\n", #c, __FILE__, __LINE__);                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int same(const bs_expr_value_t *a, const bs_expr_value_t *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case BS_EXPR_BOOL:
        return a->b == b->b;
    case BS_EXPR_NUM:
        return a->num == b->num;
    case BS_EXPR_STR:
        return a->len == b->len && memcmp(a->s, b->s, a->len) == 0;
    default:
        return 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int flags = data[0];
    data++;
    size--;
    const uint8_t *nul = memchr(data, 0, size);
    size_t src_len = nul ? (size_t)(nul - data) : size;
    /* Exact-size copies, not NUL-terminated, so ASan sees any read past the end. */
    char *src = malloc(src_len ? src_len : 1);
    if (!src)
        return 0;
    memcpy(src, data, src_len);
    const char *json = nul ? (const char *)nul + 1 : "{}";
    size_t json_len = nul ? size - src_len - 1 : 2;

    bs_expr_var_t vars[] = {{"x", BS_EXPR_NUM}, {"s", BS_EXPR_STR}};
    bs_expr_opts_t opts = {.vars = (flags & 2) ? vars : NULL,
                           .n_vars = (flags & 2) ? 2 : 0,
                           .allow_undeclared = !(flags & 2),
                           .want = (flags & 1) ? BS_EXPR_BOOL : BS_EXPR_ANY};
    bs_err_t err;
    bs_err_clear(&err);
    int pos = -1;
    bs_expr_t *e = bs_expr_compile(src, src_len, &opts, &pos, &err);
    if (!e) {
        CHECK(err.code == BS_EINVAL || err.code == BS_ENOMEM);
        CHECK(strcmp(err.field, "expr") == 0);
        if (err.code == BS_EINVAL) {
            CHECK(strncmp(err.msg, "at ", 3) == 0);
            CHECK(pos >= 0 && (size_t)pos <= src_len);
        }
        free(src);
        return 0;
    }
    CHECK(src_len <= BS_EXPR_MAX_SOURCE);
    CHECK(bs_expr_source(e) != NULL && strlen(bs_expr_source(e)) <= src_len);
    for (int i = 0; i < bs_expr_n_fields(e); i++)
        CHECK(bs_expr_field(e, i) && bs_expr_field(e, i)[0]);
    bs_expr_type_t rt = bs_expr_result_type(e);
    CHECK(rt >= BS_EXPR_NULL && rt <= BS_EXPR_ANY);
    if (flags & 1)
        CHECK(rt == BS_EXPR_BOOL || rt == BS_EXPR_ANY);

    bs_err_t jerr;
    cJSON *doc = bs_json_parse(json, json_len, 64, &jerr);
    bs_arena_t arena;
    bs_arena_init(&arena, 0);
    bs_expr_value_t v, w;
    bs_err_clear(&err);
    int rc = bs_expr_eval_json(e, doc, &arena, &v, &err);
    if (rc) {
        CHECK(rc == BS_EINVAL || rc == BS_ENOMEM);
        CHECK(err.code == rc);
        if (rc == BS_EINVAL)
            CHECK(strncmp(err.msg, "at ", 3) == 0);
    } else {
        CHECK(v.type >= BS_EXPR_NULL && v.type <= BS_EXPR_STR);
        if (v.type == BS_EXPR_NUM)
            CHECK(isfinite(v.num));
        if (v.type == BS_EXPR_STR)
            CHECK(v.s && bs_utf8_valid(v.s, v.len));
        if (rt != BS_EXPR_ANY)
            CHECK(v.type == BS_EXPR_NULL || v.type == rt);
        CHECK(bs_expr_eval_json(e, doc, &arena, &w, &err) == 0);
        CHECK(same(&v, &w));
        (void)bs_expr_truthy(&v);
    }
    bs_arena_deinit(&arena);
    cJSON_Delete(doc);
    bs_expr_free(e);
    free(src);
    return 0;
}
