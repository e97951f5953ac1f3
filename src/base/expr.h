/*
 * basalt's expression language: one language for trigger filters and
 * conditions, feature transformations and alert rules. An expression is
 * parsed and type-checked once into a compact program (bs_expr_compile), then
 * evaluated many times, lock-free, from any thread (bs_expr_eval*).
 *
 * Syntax (docs/expressions.md is the reference): numbers, "strings" or
 * 'strings', true, false, null; field references (`amount`, `user.country`,
 * `prediction.score`; a dotted path walks JSON objects); + - * / %, unary -,
 * == != < <= > >=, && || !, `x in [a, b]`, parentheses; functions log, exp,
 * sqrt, abs, min, max, clamp, coalesce, if(c, a, b), bucketize(x, [edges]),
 * lower, len, hash_bucket(s, n), hour_of_day(t), day_of_week(t).
 *
 * Types: null, bool, number (double), string. A field's type is known at
 * compile time when declared (vars) and dynamic otherwise (checked at eval).
 * Errors name the position: "at 1:14: unknown function 'lg'".
 */
#ifndef BS_BASE_EXPR_H
#define BS_BASE_EXPR_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/err.h"

typedef enum {
    BS_EXPR_NULL = 0,
    BS_EXPR_BOOL,
    BS_EXPR_NUM,
    BS_EXPR_STR,
    BS_EXPR_ANY, /* compile-time only: a field whose type is known at evaluation */
} bs_expr_type_t;

/* A value; s is borrowed (from the input, the program or the evaluation's arena). */
typedef struct {
    bs_expr_type_t type;
    int b;
    double num;
    const char *s;
    size_t len;
} bs_expr_value_t;

/* A declared input field (dotted path) and its type (BS_EXPR_ANY: dynamic). */
typedef struct {
    const char *name;
    bs_expr_type_t type;
} bs_expr_var_t;

typedef struct bs_expr bs_expr_t;

#define BS_EXPR_MAX_SOURCE 4096 /* bytes of source text */

typedef struct {
    const bs_expr_var_t *vars; /* declared fields (copied), or NULL */
    int n_vars;
    int allow_undeclared; /* 1: any other field is a dynamic reference; 0: an error */
    bs_expr_type_t want;  /* BS_EXPR_BOOL for a filter: other result types are refused;
                             BS_EXPR_ANY: any */
} bs_expr_opts_t;

/* Parses and checks src (len bytes, up to BS_EXPR_MAX_SOURCE). Returns the program (free
 * with bs_expr_free), or NULL with err: BS_EINVAL, err->field "expr", the message starting
 * "at LINE:COL: " and *pos (optional) the byte offset of the problem. */
bs_expr_t *bs_expr_compile(const char *src, size_t len, const bs_expr_opts_t *opts, int *pos,
                           bs_err_t *err);
void bs_expr_free(bs_expr_t *e);
/* The type the program yields (BS_EXPR_ANY when it depends on dynamic fields). */
bs_expr_type_t bs_expr_result_type(const bs_expr_t *e);
/* The fields the program reads: count, and the i-th's dotted name (borrowed). */
int bs_expr_n_fields(const bs_expr_t *e);
const char *bs_expr_field(const bs_expr_t *e, int i);
/* The source text, normalised (borrowed). */
const char *bs_expr_source(const bs_expr_t *e);

/* Evaluates with field values given by index (in bs_expr_field order). Strings made while
 * evaluating (lower, …) come from arena. Returns 0 and fills out, or BS_EINVAL with err set
 * (a dynamic field of the wrong type: "at 1:3: '-' needs a number, field 'x' is a string").
 * Arithmetic on null yields null; x / 0 and x % 0 yield null; NaN never escapes: a result
 * that is not finite is null. A filter treats null as false. */
int bs_expr_eval(const bs_expr_t *e, const bs_expr_value_t *fields, bs_arena_t *arena,
                 bs_expr_value_t *out, bs_err_t *err);
/* The same with fields looked up by dotted path in a JSON object (missing: null). */
int bs_expr_eval_json(const bs_expr_t *e, const cJSON *obj, bs_arena_t *arena,
                      bs_expr_value_t *out, bs_err_t *err);
/* 1 if v is true (bool true); null, false and other types are false. */
int bs_expr_truthy(const bs_expr_value_t *v);

#endif
