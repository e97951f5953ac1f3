/* The expression language: every operator and function, precedence and associativity
 * (checked against the same expressions compiled by C, and random arithmetic against a
 * reference evaluator over C doubles), short-circuit evaluation, null and NaN semantics,
 * compile-time type errors with exact positions, dynamic type errors at evaluation, JSON
 * field paths, the limits (deep nesting, long sources, big lists, wide calls) refused with
 * errors, hash_bucket against published FNV-1a vectors, the time functions against gmtime,
 * and one program evaluated from several threads at once. */
#include "test_common.h"

#include <math.h>
#include <pthread.h>
#include <time.h>

#include "base/buf.h"
#include "base/expr.h"
#include "base/expr_int.h"

/* ---- helpers --------------------------------------------------------------------------- */

static bs_expr_t *compile_opts(const char *src, const bs_expr_opts_t *o)
{
    bs_err_t err;
    int pos;
    bs_expr_t *e = bs_expr_compile(src, strlen(src), o, &pos, &err);
    if (!e)
        fail_msg("compile '%s': %s", src, err.msg);
    return e;
}

/* Compiles src (it must compile) and evaluates it on the JSON text json ("{}" when NULL):
 * the evaluation's return code, *v and *err as bs_expr_eval_json left them. Strings of *v
 * are copied into a (they may borrow from the program or the input, freed here). */
static int eval_on(bs_arena_t *a, const char *src, const char *json, bs_expr_value_t *v,
                   bs_err_t *err)
{
    bs_expr_t *e = compile_opts(src, NULL);
    cJSON *j = cJSON_Parse(json ? json : "{}");
    assert_non_null(j);
    bs_err_clear(err);
    int rc = bs_expr_eval_json(e, j, a, v, err);
    if (!rc && v->type == BS_EXPR_STR)
        v->s = bs_arena_strndup(a, v->s, v->len);
    cJSON_Delete(j);
    bs_expr_free(e);
    return rc;
}

/* Evaluates src on the JSON text json ("{}" when NULL); fails the test on an error. */
static bs_expr_value_t ev(bs_arena_t *a, const char *src, const char *json)
{
    bs_err_t err;
    bs_expr_value_t v;
    if (eval_on(a, src, json, &v, &err))
        fail_msg("eval '%s': %s", src, err.msg);
    return v;
}

/* Compiles src (it must compile) with opts o: its static result type is want. */
static void type_is(const char *src, const bs_expr_opts_t *o, bs_expr_type_t want)
{
    bs_expr_t *e = compile_opts(src, o);
    if (bs_expr_result_type(e) != want)
        fail_msg("'%s': want result type %d, got %d", src, want, bs_expr_result_type(e));
    bs_expr_free(e);
}

static void num_is(const char *src, const char *json, double want)
{
    bs_arena_t a;
    bs_arena_init(&a, 0);
    bs_expr_value_t v = ev(&a, src, json);
    if (v.type != BS_EXPR_NUM || !(v.num == want && signbit(v.num) == signbit(want)))
        fail_msg("'%s': want %.17g, got type %d value %.17g", src, want, v.type, v.num);
    bs_arena_deinit(&a);
}

static void null_is(const char *src, const char *json)
{
    bs_arena_t a;
    bs_arena_init(&a, 0);
    bs_expr_value_t v = ev(&a, src, json);
    if (v.type != BS_EXPR_NULL)
        fail_msg("'%s': want null, got type %d (%.17g)", src, v.type, v.num);
    bs_arena_deinit(&a);
}

static void bool_is(const char *src, const char *json, int want)
{
    bs_arena_t a;
    bs_arena_init(&a, 0);
    bs_expr_value_t v = ev(&a, src, json);
    if (v.type != BS_EXPR_BOOL || v.b != want)
        fail_msg("'%s': want %s, got type %d b %d", src, want ? "true" : "false", v.type, v.b);
    bs_arena_deinit(&a);
}

static void str_is(const char *src, const char *json, const char *want)
{
    bs_arena_t a;
    bs_arena_init(&a, 0);
    bs_expr_value_t v = ev(&a, src, json);
    if (v.type != BS_EXPR_STR || v.len != strlen(want) || memcmp(v.s, want, v.len) != 0)
        fail_msg("'%s': want \"%s\", got type %d", src, want, v.type);
    bs_arena_deinit(&a);
}

/* The compile error of src: its message must be want exactly, *pos at want_pos. */
static void compile_err_opts(const char *src, const bs_expr_opts_t *o, const char *want,
                             int want_pos)
{
    bs_err_t err;
    bs_err_clear(&err);
    int pos = -1;
    bs_expr_t *e = bs_expr_compile(src, strlen(src), o, &pos, &err);
    if (e)
        fail_msg("'%s' compiled; want error '%s'", src, want);
    assert_int_equal(err.code, BS_EINVAL);
    assert_string_equal(err.field, "expr");
    if (strcmp(err.msg, want) != 0)
        fail_msg("'%s': want error\n  '%s'\ngot\n  '%s'", src, want, err.msg);
    if (want_pos >= 0 && pos != want_pos)
        fail_msg("'%s': want pos %d, got %d", src, want_pos, pos);
}

static void compile_err(const char *src, const char *want, int want_pos)
{
    compile_err_opts(src, NULL, want, want_pos);
}

/* The evaluation error of src on json: message exactly want. */
static void eval_err(const char *src, const char *json, const char *want)
{
    bs_arena_t a;
    bs_arena_init(&a, 0);
    bs_err_t err;
    bs_expr_value_t v;
    int rc = eval_on(&a, src, json, &v, &err);
    if (rc == 0)
        fail_msg("'%s' evaluated; want error '%s'", src, want);
    assert_int_equal(rc, BS_EINVAL);
    assert_string_equal(err.field, "expr");
    if (strcmp(err.msg, want) != 0)
        fail_msg("'%s': want error\n  '%s'\ngot\n  '%s'", src, want, err.msg);
    bs_arena_deinit(&a);
}

/* ---- arithmetic ------------------------------------------------------------------------ */

/* The same text compiled by C (on doubles) and by the expression compiler. */
#define SAME_AS_C(x) num_is(#x, NULL, (double)(x))

static void test_arithmetic_precedence_as_c(void **state)
{
    (void)state;
    SAME_AS_C(1.0 + 2.0 * 3.0);
    SAME_AS_C((1.0 + 2.0) * 3.0);
    SAME_AS_C(10.0 - 4.0 - 3.0); /* left associative */
    SAME_AS_C(10.0 - (4.0 - 3.0));
    SAME_AS_C(100.0 / 10.0 / 5.0); /* left associative */
    SAME_AS_C(2.0 * 3.0 / 4.0 * 5.0);
    SAME_AS_C(-2.0 * -3.0);
    SAME_AS_C(- -4.0);
    SAME_AS_C(-(2.0 + 3.0) * 4.0);
    SAME_AS_C(1.0 - -1.0);
    SAME_AS_C(0.1 + 0.2); /* exact IEEE double, not 0.3 */
    SAME_AS_C(1e300 * 1e-300);
    SAME_AS_C(1.5e3 + 2.5E-3);
    SAME_AS_C(123456789.0 * 987654321.0);
    SAME_AS_C(7.0 / 3.0);
    SAME_AS_C(1.0 + 2.0 - 3.0 * 4.0 / 5.0);
    num_is("1+2*3", NULL, 7);
    num_is("  ( ( 1 ) )  ", NULL, 1);
    num_is("9007199254740993", NULL, 9007199254740992.0); /* rounded as strtod does */
    num_is("0.000001", NULL, 1e-6);
}

static void test_modulo_sign_of_divisor(void **state)
{
    (void)state;
    /* Python's float %: the result has the sign of the divisor (floored division). */
    num_is("7 % 3", NULL, 1);
    num_is("-7 % 3", NULL, 2);
    num_is("7 % -3", NULL, -2);
    num_is("-7 % -3", NULL, -1);
    num_is("5.5 % 2", NULL, 1.5);
    num_is("-5.5 % 2", NULL, 0.5);
    num_is("6 % 3", NULL, 0.0);
    num_is("-6 % 3", NULL, 0.0);
    num_is("6 % -3", NULL, -0.0);
    num_is("0 - 7 % 3", NULL, -1); /* % binds tighter than binary - */
    num_is("2 * 7 % 4", NULL, 2);  /* (2 * 7) % 4: left to right */
}

/* Random arithmetic trees, rendered with only the parentheses precedence needs (plus a few
 * redundant ones), against a reference evaluator over C doubles in the same order. */
typedef struct node {
    int op; /* 0 number, '+', '-', '*', '/', '%', 'n' (unary minus) */
    double v;
    struct node *l, *r;
} node_t;

static unsigned long long rng_state = 0x9E3779B97F4A7C15ULL;
static unsigned rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state >> 32);
}

static node_t *gen(int depth)
{
    node_t *n = calloc(1, sizeof *n);
    if (depth == 0 || rnd() % 4 == 0) {
        static const double pool[] = {0, 1, 2, 3, 0.5, 7, 10, 1e10, 1e-7, 0.1, 123.456, 1e300};
        n->v = rnd() % 3 ? (double)(rnd() % 100) : pool[rnd() % 12];
        return n;
    }
    if (rnd() % 8 == 0) {
        n->op = 'n';
        n->l = gen(depth - 1);
        return n;
    }
    static const char ops[] = "+-*/%";
    n->op = ops[rnd() % 5];
    n->l = gen(depth - 1);
    n->r = gen(depth - 1);
    return n;
}

static int prec(const node_t *n)
{
    switch (n->op) {
    case '+':
    case '-':
        return 1;
    case '*':
    case '/':
    case '%':
        return 2;
    case 'n':
        return 3;
    default:
        return 4;
    }
}

static void render(const node_t *n, char *out, size_t cap, size_t *len)
{
#define PUT(...) (*len += (size_t)snprintf(out + *len, cap - *len, __VA_ARGS__))
    if (n->op == 0) {
        PUT("%.17g", n->v);
        return;
    }
    if (n->op == 'n') {
        int paren = prec(n->l) < 3 || n->l->op == 0 || rnd() % 4 == 0;
        PUT("-");
        if (paren)
            PUT("(");
        render(n->l, out, cap, len);
        if (paren)
            PUT(")");
        return;
    }
    int lp = prec(n->l) < prec(n) || rnd() % 6 == 0;
    int rp = prec(n->r) <= prec(n) || rnd() % 6 == 0; /* left associative */
    if (lp)
        PUT("(");
    render(n->l, out, cap, len);
    if (lp)
        PUT(")");
    PUT(" %c ", n->op);
    if (rp)
        PUT("(");
    render(n->r, out, cap, len);
    if (rp)
        PUT(")");
#undef PUT
}

/* Reference: 1 and *out, or 0 for null. */
static int ref_eval(const node_t *n, double *out)
{
    double a, b, v;
    if (n->op == 0) {
        *out = n->v;
        return 1;
    }
    if (!ref_eval(n->l, &a))
        return 0;
    if (n->op == 'n') {
        *out = -a;
        return 1;
    }
    if (!ref_eval(n->r, &b))
        return 0;
    switch (n->op) {
    case '+':
        v = a + b;
        break;
    case '-':
        v = a - b;
        break;
    case '*':
        v = a * b;
        break;
    case '/':
        if (b == 0)
            return 0;
        v = a / b;
        break;
    default:
        if (b == 0)
            return 0;
        v = fmod(a, b);
        if (v != 0) {
            if ((b < 0) != (v < 0))
                v += b;
        } else {
            v = copysign(0.0, b);
        }
    }
    if (!isfinite(v))
        return 0;
    *out = v;
    return 1;
}

static void free_node(node_t *n)
{
    if (n) {
        free_node(n->l);
        free_node(n->r);
        free(n);
    }
}

static void test_random_arithmetic_against_c(void **state)
{
    (void)state;
    char buf[BS_EXPR_MAX_SOURCE + 64];
    int checked = 0, nulls = 0;
    for (int round = 0; round < 3000; round++) {
        node_t *t = gen(1 + round % 6);
        size_t len = 0;
        render(t, buf, sizeof buf, &len);
        if (len >= BS_EXPR_MAX_SOURCE) {
            free_node(t);
            continue;
        }
        double want;
        int has = ref_eval(t, &want);
        bs_arena_t a;
        bs_arena_init(&a, 0);
        bs_expr_value_t v = ev(&a, buf, NULL);
        if (has) {
            if (v.type != BS_EXPR_NUM || !(v.num == want && signbit(v.num) == signbit(want)))
                fail_msg("'%s': want %.17g, got type %d %.17g", buf, want, v.type, v.num);
        } else {
            nulls++;
            if (v.type != BS_EXPR_NULL)
                fail_msg("'%s': want null, got %.17g", buf, v.num);
        }
        checked++;
        bs_arena_deinit(&a);
        free_node(t);
    }
    assert_true(checked > 2900);
    assert_true(nulls > 50); /* division by zero and overflow happened */
}

static void test_division_by_zero_and_non_finite(void **state)
{
    (void)state;
    null_is("1 / 0", NULL);
    null_is("0 / 0", NULL);
    null_is("1 / -0", NULL);
    null_is("5 % 0", NULL);
    null_is("x / y", "{\"x\": 1, \"y\": 0}");
    null_is("1e308 * 10", NULL); /* overflow to infinity */
    null_is("-1e308 * 10", NULL);
    null_is("exp(1000)", NULL);
    null_is("log(0)", NULL);
    null_is("log(-1)", NULL);
    null_is("sqrt(-1)", NULL);
    num_is("sqrt(0)", NULL, 0);
    num_is("1e-320 * 1", NULL, 1e-320); /* subnormals are finite */
    compile_err("1e400", "at 1:1: number 1e400 is out of range", 0);
    /* A null result compares as null, which a filter treats as false. */
    null_is("1 / 0 > 1", NULL);
    bool_is("1 / 0 == null", NULL, 1);
    bool_is("coalesce(1 / 0, 7) == 7", NULL, 1);
    /* Non-finite inputs are null. */
    bs_expr_t *e = compile_opts("x + 1", NULL);
    bs_expr_value_t f[1] = {{.type = BS_EXPR_NUM, .num = NAN}}, v;
    bs_err_t err;
    assert_int_equal(bs_expr_eval(e, f, NULL, &v, &err), 0);
    assert_int_equal(v.type, BS_EXPR_NULL);
    f[0].num = INFINITY;
    assert_int_equal(bs_expr_eval(e, f, NULL, &v, &err), 0);
    assert_int_equal(v.type, BS_EXPR_NULL);
    bs_expr_free(e);
}

static void test_null_propagation(void **state)
{
    (void)state;
    null_is("null + 1", NULL);
    null_is("1 - missing", NULL);
    null_is("missing * 2", NULL);
    null_is("-missing", NULL);
    null_is("missing / 2", NULL);
    null_is("missing % 2", NULL);
    null_is("missing < 1", NULL);
    null_is("\"a\" >= missing", NULL);
    null_is("abs(missing)", NULL);
    null_is("min(1, missing, 3)", NULL);
    null_is("clamp(missing, 0, 1)", NULL);
    null_is("lower(missing)", NULL);
    null_is("len(missing)", NULL);
    null_is("bucketize(missing, [1])", NULL);
    null_is("hash_bucket(missing, 10)", NULL);
    null_is("hour_of_day(missing)", NULL);
    null_is("missing + \"s\"", NULL);
    null_is("x", "{\"x\": null}");
    bool_is("null == null", NULL, 1);
    bool_is("null != null", NULL, 0);
    bool_is("missing == null", NULL, 1);
    bool_is("x == null", "{\"x\": 0}", 0);
    bool_is("x != null", "{\"x\": \"\"}", 1);
    /* && || ! treat null as false. */
    bool_is("null && true", NULL, 0);
    bool_is("true && null", NULL, 0);
    bool_is("null || true", NULL, 1);
    bool_is("null || null", NULL, 0);
    bool_is("!null", NULL, 1);
    bool_is("!(missing > 1)", NULL, 1);
    bool_is("missing > 1 || true", NULL, 1);
}

/* ---- comparisons, logic, strings ------------------------------------------------------- */

static void test_comparisons(void **state)
{
    (void)state;
    bool_is("1 < 2", NULL, 1);
    bool_is("2 < 2", NULL, 0);
    bool_is("2 <= 2", NULL, 1);
    bool_is("3 > 2", NULL, 1);
    bool_is("2 >= 3", NULL, 0);
    bool_is("1 == 1.0", NULL, 1);
    bool_is("0 == -0", NULL, 1);
    bool_is("1 != 2", NULL, 1);
    bool_is("\"a\" < \"b\"", NULL, 1);
    bool_is("\"ab\" < \"b\"", NULL, 1);
    bool_is("\"a\" < \"ab\"", NULL, 1);
    bool_is("\"\" < \"a\"", NULL, 1);
    bool_is("\"b\" >= \"b\"", NULL, 1);
    bool_is("\"Z\" < \"a\"", NULL, 1); /* byte order */
    bool_is("\"z\" < \"é\"", NULL, 1); /* code point order */
    bool_is("'x' == \"x\"", NULL, 1);
    bool_is("\"FR\" == \"FR\"", NULL, 1);
    bool_is("true == true", NULL, 1);
    bool_is("true != false", NULL, 1);
    /* == across types (dynamic fields) is false, never an error. */
    bool_is("x == 1", "{\"x\": \"1\"}", 0);
    bool_is("x != 1", "{\"x\": \"1\"}", 1);
    bool_is("x == true", "{\"x\": 1}", 0);
    bool_is("x == y", "{\"x\": 1, \"y\": 1}", 1);
    bool_is("x == y", "{\"x\": \"a\", \"y\": \"a\"}", 1);
    bool_is("1 + 1 == 2", NULL, 1); /* arithmetic binds tighter */
    bool_is("(1 < 2) == true", NULL, 1);
    bool_is("(x < 2) == (y < 2)", "{\"x\": 1, \"y\": 1}", 1);
}

static void test_logic_and_short_circuit(void **state)
{
    (void)state;
    bool_is("true && true", NULL, 1);
    bool_is("true && false", NULL, 0);
    bool_is("false || true", NULL, 1);
    bool_is("false || false", NULL, 0);
    bool_is("!true", NULL, 0);
    bool_is("!!true", NULL, 1);
    /* && binds tighter than ||. */
    bool_is("true || false && false", NULL, 1);
    bool_is("(true || false) && false", NULL, 0);
    bool_is("false && false || true", NULL, 1);
    /* ! binds tighter than &&. */
    bool_is("!false && false", NULL, 0);
    bool_is("!(false && false)", NULL, 1);
    /* Short-circuit: the right side is not evaluated (it would be a type error). */
    const char *j = "{\"s\": \"str\", \"o\": {\"k\": 1}}";
    bool_is("false && s - 1 > 0", j, 0);
    bool_is("true || s - 1 > 0", j, 1);
    bool_is("missing && o", j, 0);
    bool_is("false && o", j, 0);
    eval_err("true && s - 1 > 0", j, "at 1:11: '-' needs a number, field 's' is a string");
    eval_err("false || s", j, "at 1:7: '||' needs a boolean, field 's' is a string");
    eval_err("s && true", j, "at 1:3: '&&' needs a boolean, field 's' is a string");
    eval_err("!s", j, "at 1:1: '!' needs a boolean, field 's' is a string");
    /* if() evaluates one branch only; coalesce() stops at the first non-null. */
    num_is("if(true, 1, s - 1)", j, 1);
    num_is("if(false, s - 1, 2)", j, 2);
    num_is("if(missing, 1, 2)", j, 2);
    num_is("coalesce(missing, 5, s - 1)", j, 5);
    eval_err("if(s, 1, 2)", j, "at 1:4: if() needs a boolean condition, field 's' is a string");
    eval_err("coalesce(missing, s - 1)", j, "at 1:21: '-' needs a number, field 's' is a string");
    /* The filter example of the issue. */
    bool_is("amount > 1000 && country == \"FR\"", "{\"amount\": 1500, \"country\": \"FR\"}", 1);
    bool_is("amount > 1000 && country == \"FR\"", "{\"amount\": 999, \"country\": \"FR\"}", 0);
    bool_is("amount > 1000 && country == \"FR\"", "{\"amount\": 1500}", 0);
    bool_is("amount > 1000 && country == \"FR\"", "{}", 0);
    bool_is("prediction.score > 0.9", "{\"prediction\": {\"score\": 0.95}}", 1);
}

static void test_in_lists(void **state)
{
    (void)state;
    bool_is("country in [\"FR\", \"DE\"]", "{\"country\": \"DE\"}", 1);
    bool_is("country in [\"FR\", \"DE\"]", "{\"country\": \"IT\"}", 0);
    bool_is("country in [\"FR\", \"DE\"]", "{}", 0);
    bool_is("x in [null]", "{}", 1);
    bool_is("x in [1, -2.5, 3]", "{\"x\": -2.5}", 1);
    bool_is("x in [1, 2]", "{\"x\": \"1\"}", 0);
    bool_is("x in [true]", "{\"x\": true}", 1);
    bool_is("x in []", "{\"x\": 1}", 0);
    bool_is("1 + 1 in [2]", NULL, 1);
    bool_is("!(x in [1])", "{\"x\": 2}", 1);
    bool_is("x in [1] || x in [2]", "{\"x\": 2}", 1);
    compile_err("x in y", "at 1:6: 'in' needs a literal list [a, b, ...], got 'y'", 5);
    compile_err("x in [y]",
                "at 1:7: a list holds literals (numbers, strings, true, false, "
                "null), got 'y'",
                6);
    compile_err("x in [1, 2",
                "at 1:11: expected ',' or ']' in the list opened at 6, got the "
                "end of the expression",
                10);
    compile_err("x in [-\"a\"]", "at 1:7: '-' needs a number", 6);
    compile_err("[1, 2]",
                "at 1:1: a list may only follow 'in' or be the edges of "
                "bucketize()",
                0);
}

static void test_strings(void **state)
{
    (void)state;
    str_is("\"ab\" + \"cd\"", NULL, "abcd");
    str_is("a + \"-\" + b", "{\"a\": \"x\", \"b\": \"y\"}", "x-y");
    str_is("\"\" + a", "{\"a\": \"x\"}", "x");
    str_is("'it\\'s'", NULL, "it's");
    str_is("\"q\\\"\\\\\\/\\b\\f\\n\\r\\t\"", NULL, "q\"\\/\b\f\n\r\t");
    str_is("\"\\u00e9\\u20AC\"", NULL, "é€");
    str_is("\"\\uD83D\\uDE00\"", NULL, "\xF0\x9F\x98\x80");
    str_is("\"é\"", NULL, "é");
    compile_err("\"abc", "at 1:1: unterminated string", 0);
    compile_err("\"a\\x\"", "at 1:3: unknown escape in a string", 2);
    compile_err("\"\\u12\"", "at 1:2: \\u needs 4 hexadecimal digits", 1);
    compile_err("\"\\uD800\"", "at 1:2: a high surrogate \\uD800 needs a low one", 1);
    compile_err("\"\\uD800\\u0041\"", "at 1:2: a high surrogate \\uD800 needs a low one", 1);
    compile_err("\"\\uD800\\u00\"", "at 1:8: \\u needs 4 hexadecimal digits", 7);
    compile_err("\"\\uDC00\"", "at 1:2: a lone low surrogate \\uDC00", 1);
    compile_err("\"\\u0000\"", "at 1:2: a string cannot contain \\u0000", 1);
    compile_err("\"a\nb\"", "at 1:3: a control character in a string must be escaped", 2);
    compile_err("\"\xff\"", "at 1:2: a string must be valid UTF-8", 1);
    compile_err("\"a\" + 1",
                "at 1:5: '+' needs two numbers or two strings: got a string, got a "
                "number",
                4);
}

/* ---- functions ------------------------------------------------------------------------- */

static void test_math_functions(void **state)
{
    (void)state;
    num_is("log(1)", NULL, 0);
    num_is("log(10)", NULL, log(10.0));
    num_is("exp(1)", NULL, exp(1.0));
    num_is("exp(-1000)", NULL, 0);
    num_is("sqrt(2)", NULL, sqrt(2.0));
    num_is("abs(-3.5)", NULL, 3.5);
    num_is("abs(3)", NULL, 3);
    num_is("min(3)", NULL, 3);
    num_is("min(3, 1, 2)", NULL, 1);
    num_is("max(3, 1, 2)", NULL, 3);
    num_is("max(-1, -5)", NULL, -1);
    num_is("clamp(5, 0, 10)", NULL, 5);
    num_is("clamp(-5, 0, 10)", NULL, 0);
    num_is("clamp(15, 0, 10)", NULL, 10);
    num_is("clamp(5, 10, 0)", NULL, 0); /* lo > hi: hi, as numpy.clip */
    num_is("log(exp(2))", NULL, log(exp(2.0)));
    num_is("LOG", "{\"LOG\": 4}", 4); /* a field, not a function */
    num_is("log", "{\"log\": 4}", 4);
    num_is("log (1)", NULL, 0);
    compile_err("lg(1)", "at 1:1: unknown function 'lg'", 0);
    compile_err("log(1, 2)", "at 1:1: log() takes 1 argument, got 2", 0);
    compile_err("log()", "at 1:1: log() takes 1 argument, got 0", 0);
    compile_err("min()", "at 1:1: min() takes at least 1 argument, got 0", 0);
    compile_err("clamp(1, 2)", "at 1:1: clamp() takes 3 arguments, got 2", 0);
    compile_err("sqrt(\"x\")", "at 1:6: sqrt() needs a number, got a string", 5);
    compile_err("max(1, true)", "at 1:8: max() needs a number, got a boolean", 7);
    compile_err("log(1 2)", "at 1:7: expected ',' or ')' in the call of log(), got '2'", 6);
    eval_err("abs(s)", "{\"s\": \"x\"}", "at 1:1: abs() needs a number, field 's' is a string");
    eval_err("min(1, s)", "{\"s\": \"x\"}", "at 1:1: min() needs numbers, field 's' is a string");
}

static void test_coalesce_and_if(void **state)
{
    (void)state;
    num_is("coalesce(1)", NULL, 1);
    null_is("coalesce(null)", NULL);
    null_is("coalesce(a, b)", NULL);
    str_is("coalesce(a, b, \"z\")", "{\"b\": \"y\"}", "y");
    bool_is("coalesce(flag, false)", "{\"flag\": true}", 1);
    num_is("coalesce(x, 0) + 1", "{\"x\": 4}", 5);
    str_is("if(amount > 10, \"big\", \"small\")", "{\"amount\": 11}", "big");
    str_is("if(amount > 10, \"big\", \"small\")", "{\"amount\": 1}", "small");
    str_is("if(amount > 10, \"big\", \"small\")", "{}", "small"); /* null condition: false */
    num_is("if(true, if(false, 1, 2), 3)", NULL, 2);
    compile_err("if(1, 2, 3)", "at 1:4: if() needs a boolean, got a number", 3);
    compile_err("if(true, 2)", "at 1:1: if() takes 3 arguments, got 2", 0);
    compile_err("coalesce(1, 2",
                "at 1:14: expected ',' or ')' in the call of coalesce(), got "
                "the end of the expression",
                13);
    /* Static result types. */
    type_is("coalesce(x, 1)", NULL, BS_EXPR_ANY);
    type_is("coalesce(1, 2)", NULL, BS_EXPR_NUM);
    type_is("if(x, \"a\", \"b\")", NULL, BS_EXPR_STR);
}

static void test_bucketize(void **state)
{
    (void)state;
    /* numpy.digitize(x, edges, right=False): the number of edges <= x. */
    const char *src = "bucketize(x, [0, 10, 10, 100])";
    static const struct {
        double x;
        double want;
    } cases[] = {{-1, 0}, {0, 1}, {5, 1}, {9.999, 1}, {10, 3}, {50, 3}, {100, 4}, {1e9, 4}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char json[64];
        snprintf(json, sizeof json, "{\"x\": %.17g}", cases[k].x);
        num_is(src, json, cases[k].want);
    }
    num_is("bucketize(3, [-1.5])", NULL, 1);
    num_is("bucketize(-3, [-1.5])", NULL, 0);
    /* Against a brute-force count on random edges. */
    for (int round = 0; round < 200; round++) {
        char buf[2048];
        double edges[40];
        int n = 1 + (int)(rnd() % 40);
        double cur = -50;
        size_t len = (size_t)snprintf(buf, sizeof buf, "bucketize(x, [");
        for (int k = 0; k < n; k++) {
            cur += (double)(rnd() % 5);
            edges[k] = cur;
            len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%g", k ? ", " : "", cur);
        }
        snprintf(buf + len, sizeof buf - len, "])");
        double x = (double)(rnd() % 200) - 60 + (rnd() % 2 ? 0.5 : 0);
        int want = 0;
        for (int k = 0; k < n; k++)
            want += edges[k] <= x;
        char json[64];
        snprintf(json, sizeof json, "{\"x\": %g}", x);
        num_is(buf, json, want);
    }
    compile_err("bucketize(1, [3, 2])", "at 1:18: bucketize() edges must be in ascending order",
                17);
    compile_err("bucketize(1, [])", "at 1:14: bucketize() needs at least one edge", 13);
    compile_err("bucketize(1, [\"a\"])", "at 1:15: bucketize() edges must be numbers", 14);
    compile_err("bucketize(1, x)",
                "at 1:14: bucketize() needs a literal list [a, b, ...], got "
                "'x'",
                13);
    compile_err("bucketize(1)", "at 1:1: bucketize() takes 2 arguments, got 1", 0);
}

static void test_lower_len(void **state)
{
    (void)state;
    str_is("lower(\"HeLLo\")", NULL, "hello");
    str_is("lower(\"already\")", NULL, "already");
    str_is("lower(\"ÀÉ-ABC\")", NULL, "ÀÉ-abc"); /* ASCII letters only */
    str_is("lower(c)", "{\"c\": \"FR\"}", "fr");
    bool_is("lower(c) == \"fr\"", "{\"c\": \"Fr\"}", 1);
    num_is("len(\"\")", NULL, 0);
    num_is("len(\"hello\")", NULL, 5);
    num_is("len(\"héllo\")", NULL, 5); /* code points, not bytes */
    num_is("len(\"\\uD83D\\uDE00!\")", NULL, 2);
    num_is("len(s)", "{\"s\": \"日本語\"}", 3);
    compile_err("len(1)", "at 1:5: len() needs a string, got a number", 4);
    eval_err("lower(n)", "{\"n\": 1}", "at 1:1: lower() needs a string, field 'n' is a number");
    /* lower() that must allocate needs an arena. */
    bs_expr_t *e = compile_opts("lower(s)", NULL);
    bs_expr_value_t f[1] = {{.type = BS_EXPR_STR, .s = "AB", .len = 2}}, v;
    bs_err_t err;
    assert_int_equal(bs_expr_eval(e, f, NULL, &v, &err), BS_ENOMEM);
    bs_arena_t a;
    bs_arena_init(&a, 0);
    assert_int_equal(bs_expr_eval(e, f, &a, &v, &err), 0);
    assert_int_equal(v.len, 2);
    assert_memory_equal(v.s, "ab", 2);
    bs_arena_deinit(&a);
    bs_expr_free(e);
}

static void test_hash_bucket(void **state)
{
    (void)state;
    /* Published FNV-1a 64 vectors (Fowler/Noll/Vo test suite). */
    assert_true(bs__expr_fnv1a64("", 0) == 0xcbf29ce484222325ULL);
    assert_true(bs__expr_fnv1a64("a", 1) == 0xaf63dc4c8601ec8cULL);
    assert_true(bs__expr_fnv1a64("foobar", 6) == 0x85944171f73967e8ULL);
    num_is("hash_bucket(\"foobar\", 1000)", NULL, (double)(0x85944171f73967e8ULL % 1000));
    num_is("hash_bucket(\"a\", 7)", NULL, (double)(0xaf63dc4c8601ec8cULL % 7));
    num_is("hash_bucket(\"\", 1)", NULL, 0);
    /* A whole number hashes as its decimal text. */
    num_is("hash_bucket(12345, 97)", NULL, (double)(bs__expr_fnv1a64("12345", 5) % 97));
    num_is("hash_bucket(-7, 97)", NULL, (double)(bs__expr_fnv1a64("-7", 2) % 97));
    num_is("hash_bucket(u, 1000)", "{\"u\": \"user-1\"}",
           (double)(bs__expr_fnv1a64("user-1", 6) % 1000));
    null_is("hash_bucket(1.5, 10)", NULL);
    null_is("hash_bucket(\"a\", n)", "{\"n\": 0}");
    null_is("hash_bucket(\"a\", n)", "{\"n\": 2.5}");
    compile_err("hash_bucket(\"a\", 0)",
                "at 1:18: hash_bucket() needs a whole number of buckets "
                "from 1 to 2^53, got 0",
                17);
    compile_err("hash_bucket(\"a\", -2)",
                "at 1:18: hash_bucket() needs a whole number of buckets"
                " from 1 to 2^53, got -2",
                17);
    compile_err("hash_bucket(true, 2)",
                "at 1:13: hash_bucket() needs a number or a string, got "
                "a boolean",
                12);
    compile_err("hash_bucket(\"a\", \"b\")", "at 1:18: hash_bucket() needs a number, got a string",
                17);
}

static void test_time_functions(void **state)
{
    (void)state;
    num_is("hour_of_day(0)", NULL, 0);
    num_is("day_of_week(0)", NULL, 3); /* 1970-01-01: a Thursday; Monday = 0 */
    num_is("hour_of_day(-1)", NULL, 23);
    num_is("day_of_week(-1)", NULL, 2);
    num_is("day_of_week(\"2024-01-01T00:00:00Z\")", NULL, 0);     /* a Monday */
    num_is("day_of_week(\"2024-01-07T23:59:59.999Z\")", NULL, 6); /* a Sunday */
    num_is("hour_of_day(\"2024-03-10T23:30:00+02:00\")", NULL, 21);
    num_is("hour_of_day(\"2024-03-10T23:30:00-02:00\")", NULL, 1);
    num_is("day_of_week(\"2024-03-10T23:30:00-02:00\")", NULL, 0); /* Monday in UTC */
    num_is("hour_of_day(\"2024-02-29 05:00:00z\")", NULL, 5);
    num_is("hour_of_day(t)", "{\"t\": 1700000000000}", 22); /* 2023-11-14T22:13:20Z */
    num_is("hour_of_day(\"1969-12-31T23:00:00Z\")", NULL, 23);
    null_is("hour_of_day(\"2023-02-29T00:00:00Z\")", NULL); /* not a leap year */
    null_is("hour_of_day(\"2024-01-01\")", NULL);
    null_is("hour_of_day(\"2024-01-01T24:00:00Z\")", NULL);
    null_is("hour_of_day(\"2024-01-01T00:00:00\")", NULL); /* no offset */
    null_is("hour_of_day(\"2024-01-01T00:00:00Zx\")", NULL);
    null_is("hour_of_day(\"yesterday\")", NULL);
    null_is("hour_of_day(1e300)", NULL);
    compile_err("hour_of_day(true)",
                "at 1:13: hour_of_day() needs a number or a string, got a "
                "boolean",
                12);
    /* Random instants against gmtime, as numbers and as RFC 3339 text with an offset. */
    for (int round = 0; round < 2000; round++) {
        long long ms = ((long long)rnd() << 11 ^ rnd()) % 4102444800000LL; /* 1970..2100 */
        if (round % 5 == 0)
            ms = -ms / 3;
        time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        int want_dow = (tm.tm_wday + 6) % 7;
        char src[128];
        snprintf(src, sizeof src, "hour_of_day(%lld)", ms);
        num_is(src, NULL, tm.tm_hour);
        snprintf(src, sizeof src, "day_of_week(%lld)", ms);
        num_is(src, NULL, want_dow);
        int off = (int)(rnd() % (24 * 60 * 2 - 1)) - (24 * 60 - 1); /* minutes, ±23:59 */
        time_t local = secs + off * 60;
        struct tm lt;
        gmtime_r(&local, &lt);
        if (lt.tm_year + 1900 < 0 || lt.tm_year + 1900 > 9999)
            continue;
        int aoff = off < 0 ? -off : off;
        snprintf(src, sizeof src,
                 "hour_of_day(\"%04d-%02d-%02dT%02d:%02d:%02d.%03d%c%02d:%02d\") * 10 + "
                 "day_of_week(\"%04d-%02d-%02dT%02d:%02d:%02d.%03d%c%02d:%02d\")",
                 lt.tm_year + 1900, lt.tm_mon + 1, lt.tm_mday, lt.tm_hour, lt.tm_min, lt.tm_sec,
                 (int)(((ms % 1000) + 1000) % 1000), off < 0 ? '-' : '+', aoff / 60, aoff % 60,
                 lt.tm_year + 1900, lt.tm_mon + 1, lt.tm_mday, lt.tm_hour, lt.tm_min, lt.tm_sec,
                 (int)(((ms % 1000) + 1000) % 1000), off < 0 ? '-' : '+', aoff / 60, aoff % 60);
        num_is(src, NULL, tm.tm_hour * 10 + want_dow);
    }
}

/* ---- fields ---------------------------------------------------------------------------- */

static void test_json_paths(void **state)
{
    (void)state;
    const char *j = "{\"user\": {\"country\": \"FR\", \"age\": 30, \"tags\": [\"a\", \"b\"]},"
                    " \"items\": [{\"price\": 5}, {\"price\": 7}], \"user-id\": \"u1\","
                    " \"a.b\": 3, \"in\": 4, \"n\": 1}";
    str_is("user.country", j, "FR");
    num_is("user.age + 1", j, 31);
    str_is("user.tags.1", j, "b");
    num_is("items.1.price", j, 7);
    null_is("items.2.price", j);
    null_is("user.missing.deeper", j);
    null_is("n.x", j); /* a number has no fields */
    null_is("user.country.x", j);
    str_is("`user-id`", j, "u1");
    num_is("`a.b`", j, 3);
    num_is("`in`", j, 4);
    num_is("`user`.age", j, 30);
    eval_err("user", j,
             "at 1:1: field 'user' is an object, not a number, string, boolean or "
             "null");
    eval_err("1 + items", j,
             "at 1:5: field 'items' is an array, not a number, string, boolean "
             "or null");
    /* A document that is not an object: every field is null. */
    null_is("x", "[1, 2]");
    null_is("x", "3");
    /* Field table: each distinct path once, in order of appearance, canonical names. */
    bs_expr_t *e = compile_opts("b + a.c + b + `x-y`.z + a.`c` + `in` + items.0", NULL);
    assert_int_equal(bs_expr_n_fields(e), 5);
    assert_string_equal(bs_expr_field(e, 0), "b");
    assert_string_equal(bs_expr_field(e, 1), "a.c");
    assert_string_equal(bs_expr_field(e, 2), "`x-y`.z");
    assert_string_equal(bs_expr_field(e, 3), "`in`");
    assert_string_equal(bs_expr_field(e, 4), "items.0");
    assert_null(bs_expr_field(e, 5));
    assert_null(bs_expr_field(e, -1));
    bs_expr_free(e);
    compile_err("a.", "at 1:3: expected a field name after '.'", 2);
    compile_err("a..b", "at 1:3: expected a field name after '.'", 2);
    compile_err("`abc", "at 1:1: unterminated quoted field name", 0);
    compile_err("``", "at 1:1: an empty quoted field name", 0);
    compile_err("`a\tb`", "at 1:3: a control character in a quoted field name", 2);
    compile_err("`a\xff`", "at 1:3: a field name must be valid UTF-8", 2);
    compile_err("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q",
                "at 1:33: a field path has more than 16 segments", 32);
}

static void test_eval_by_index_and_declared_types(void **state)
{
    (void)state;
    bs_expr_var_t vars[] = {{"amount", BS_EXPR_NUM},
                            {"country", BS_EXPR_STR},
                            {"vip", BS_EXPR_BOOL},
                            {"extra", BS_EXPR_ANY}};
    bs_expr_opts_t o = {.vars = vars, .n_vars = 4, .allow_undeclared = 0, .want = BS_EXPR_BOOL};
    bs_expr_t *e = compile_opts("country == \"FR\" && amount > 1000 || vip", &o);
    assert_int_equal(bs_expr_n_fields(e), 3);
    assert_string_equal(bs_expr_field(e, 0), "country");
    assert_string_equal(bs_expr_field(e, 1), "amount");
    assert_string_equal(bs_expr_field(e, 2), "vip");
    assert_int_equal(bs_expr_result_type(e), BS_EXPR_BOOL);
    bs_expr_value_t f[3] = {{.type = BS_EXPR_STR, .s = "FR", .len = 2},
                            {.type = BS_EXPR_NUM, .num = 2000},
                            {.type = BS_EXPR_BOOL, .b = 0}},
                    v;
    bs_err_t err;
    assert_int_equal(bs_expr_eval(e, f, NULL, &v, &err), 0);
    assert_true(bs_expr_truthy(&v));
    f[1].num = 10;
    assert_int_equal(bs_expr_eval(e, f, NULL, &v, &err), 0);
    assert_false(bs_expr_truthy(&v));
    f[2].b = 7; /* any non-zero b is true */
    assert_int_equal(bs_expr_eval(e, f, NULL, &v, &err), 0);
    assert_true(bs_expr_truthy(&v));
    /* A value of a type the caller should not pass is an error, not undefined behaviour. */
    f[0].type = BS_EXPR_ANY;
    assert_int_equal(bs_expr_eval(e, f, NULL, &v, &err), BS_EINVAL);
    assert_string_equal(err.msg, "at 1:1: field 'country' is not a value, not a number, string, "
                                 "boolean or null");
    /* No field values at all: every field is null. */
    assert_int_equal(bs_expr_eval(e, NULL, NULL, &v, &err), 0);
    assert_false(bs_expr_truthy(&v));
    bs_expr_free(e);

    /* Declared types are checked at compile time, with the field named. */
    compile_err_opts("amount - country == 1", &o,
                     "at 1:8: '-' needs a number, field 'country' is a string", 7);
    compile_err_opts("amount == \"5\"", &o,
                     "at 1:8: '==' compares values that are never equal: "
                     "field 'amount' is a number, got a string",
                     7);
    compile_err_opts("vip && amount", &o,
                     "at 1:5: '&&' needs a boolean, field 'amount' is a number", 4);
    compile_err_opts("amount < country", &o,
                     "at 1:8: '<' needs two numbers or two strings: "
                     "field 'amount' is a number, field 'country' is a string",
                     7);
    compile_err_opts("amout > 1", &o, "at 1:1: unknown field 'amout'", 0);
    compile_err_opts("amount + 1", &o,
                     "at 1:1: the expression must yield a boolean, this one "
                     "yields a number",
                     0);
    bs_expr_opts_t want_num = {.allow_undeclared = 1, .want = BS_EXPR_NUM};
    bs_expr_opts_t want_str = {.allow_undeclared = 1, .want = BS_EXPR_STR};
    compile_err_opts("lower(s)", &want_num,
                     "at 1:1: the expression must yield a number, this one yields a string", 0);
    compile_err_opts("1 < 2", &want_str,
                     "at 1:1: the expression must yield a string, this one yields a boolean", 0);
    type_is("x", &want_num, BS_EXPR_ANY); /* a dynamic field may be one */
    type_is("s + \"\"", &want_str, BS_EXPR_STR);
    compile_err_opts("  null", &o,
                     "at 1:3: the expression must yield a boolean, this one yields "
                     "null",
                     2);
    /* Dynamic (ANY) fields pass the checker and are checked at evaluation. */
    type_is("extra > 1", &o, BS_EXPR_BOOL);
    type_is("extra", &o, BS_EXPR_ANY);
    /* No opts: undeclared fields are dynamic, any result. */
    type_is("x + 1", NULL, BS_EXPR_NUM);
    type_is("x", NULL, BS_EXPR_ANY);
    type_is("null", NULL, BS_EXPR_NULL);
    type_is("a < b", NULL, BS_EXPR_BOOL);
}

/* Every check the evaluator makes on a dynamic value, each with its message: the operand
 * named when it is a field, its type when it is computed; and the API's own misuse. */
static void test_eval_error_paths(void **state)
{
    (void)state;
    const char *j = "{\"s\": \"x\", \"S\": \"AB\", \"n\": 1, \"b\": true, \"o\": {}}";
    /* Operators. */
    eval_err("-s", j, "at 1:1: '-' needs a number, field 's' is a string");
    eval_err("-b", j, "at 1:1: '-' needs a number, field 'b' is a boolean");
    eval_err("!n", j, "at 1:1: '!' needs a boolean, field 'n' is a number");
    eval_err("n + s", j, "at 1:3: '+' needs two numbers or two strings, field 's' is a string");
    eval_err("b + 1", j, "at 1:3: '+' needs two numbers or two strings, field 'b' is a boolean");
    eval_err("s * 2", j, "at 1:3: '*' needs a number, field 's' is a string");
    eval_err("2 / s", j, "at 1:3: '/' needs a number, field 's' is a string");
    eval_err("2 % b", j, "at 1:3: '%' needs a number, field 'b' is a boolean");
    eval_err("b < 1", j, "at 1:3: '<' needs a number or a string, field 'b' is a boolean");
    eval_err("1 >= b", j, "at 1:3: '>=' needs a number or a string, field 'b' is a boolean");
    eval_err("n <= s", j, "at 1:3: '<=' needs a number (like its left side), field 's' is a string");
    eval_err("s > n", j, "at 1:3: '>' needs a string (like its left side), field 'n' is a number");
    eval_err("true && n", j, "at 1:6: '&&' needs a boolean, field 'n' is a number");
    eval_err("n || true", j, "at 1:3: '||' needs a boolean, field 'n' is a number");
    eval_err("if(n, 1, 2)", j, "at 1:4: if() needs a boolean condition, field 'n' is a number");
    /* A computed operand (not a field) is described by its type. */
    eval_err("-coalesce(lower(S), 1)", j, "at 1:1: '-' needs a number, got a string");
    eval_err("if(coalesce(lower(s), true), 1, 2)", j,
             "at 1:4: if() needs a boolean condition, got a string");
    /* Functions. */
    eval_err("log(s)", j, "at 1:1: log() needs a number, field 's' is a string");
    eval_err("exp(b)", j, "at 1:1: exp() needs a number, field 'b' is a boolean");
    eval_err("sqrt(s)", j, "at 1:1: sqrt() needs a number, field 's' is a string");
    eval_err("max(n, b)", j, "at 1:1: max() needs numbers, field 'b' is a boolean");
    eval_err("clamp(1, s, 2)", j, "at 1:1: clamp() needs numbers, field 's' is a string");
    eval_err("bucketize(s, [1])", j, "at 1:1: bucketize() needs a number, field 's' is a string");
    eval_err("len(n)", j, "at 1:1: len() needs a string, field 'n' is a number");
    eval_err("lower(b)", j, "at 1:1: lower() needs a string, field 'b' is a boolean");
    eval_err("hash_bucket(b, 2)", j,
             "at 1:1: hash_bucket() needs a string or a number, field 'b' is a boolean");
    eval_err("hash_bucket(s, s)", j,
             "at 1:1: hash_bucket() needs a number of buckets, field 's' is a string");
    eval_err("hour_of_day(b)", j,
             "at 1:1: hour_of_day() needs a time (ms since the epoch or an RFC 3339 string), "
             "field 'b' is a boolean");
    eval_err("day_of_week(o)", j,
             "at 1:13: field 'o' is an object, not a number, string, boolean or null");
    /* The position is the operator's, on its own line. */
    eval_err("n +\n  -s", j, "at 2:3: '-' needs a number, field 's' is a string");
    /* The first error stops the evaluation: the operand on the left fails first. */
    eval_err("-s + -b", j, "at 1:1: '-' needs a number, field 's' is a string");

    /* Strings made by + and lower() need an arena. */
    bs_expr_t *e = compile_opts("a + b", NULL);
    bs_expr_value_t f[2] = {{.type = BS_EXPR_STR, .s = "x", .len = 1},
                            {.type = BS_EXPR_STR, .s = "y", .len = 1}},
                    v;
    bs_err_t err;
    assert_int_equal(bs_expr_eval(e, f, NULL, &v, &err), BS_ENOMEM);
    assert_string_equal(err.msg, "no arena memory for a 2-byte string");
    f[1].len = 0; /* "x" + "": the left side itself, nothing to allocate */
    assert_int_equal(bs_expr_eval(e, f, NULL, &v, &err), 0);
    assert_true(v.type == BS_EXPR_STR && v.len == 1 && v.s == f[0].s);
    bs_expr_free(e);
    /* A string field without text is the empty string. */
    e = compile_opts("len(s)", NULL);
    bs_expr_value_t g[1] = {{.type = BS_EXPR_STR, .s = NULL, .len = 5}};
    assert_int_equal(bs_expr_eval(e, g, NULL, &v, &err), 0);
    assert_true(v.type == BS_EXPR_NUM && v.num == 0);
    /* No program, or nowhere to put the value. */
    bs_err_clear(&err);
    assert_int_equal(bs_expr_eval(NULL, g, NULL, &v, &err), BS_EINVAL);
    assert_string_equal(err.msg, "no expression to evaluate");
    bs_err_clear(&err);
    assert_int_equal(bs_expr_eval_json(NULL, NULL, NULL, &v, &err), BS_EINVAL);
    assert_string_equal(err.msg, "no expression to evaluate");
    bs_err_clear(&err);
    assert_int_equal(bs_expr_eval(e, g, NULL, NULL, &err), BS_EINVAL);
    assert_int_equal(bs_expr_eval_json(e, NULL, NULL, NULL, &err), BS_EINVAL);
    /* No document: every field is null. */
    assert_int_equal(bs_expr_eval_json(e, NULL, NULL, &v, &err), 0);
    assert_int_equal(v.type, BS_EXPR_NULL);
    bs_expr_free(e);

    /* The time parser's refusals (each a null in hour_of_day / day_of_week). */
    double ms = -1;
    assert_int_equal(bs__expr_parse_time("1970-01-01T00:00:00.5Z", 22, &ms), 0);
    assert_true(ms == 500);
    assert_int_equal(bs__expr_parse_time("1970-01-01T00:00:00.05Z", 23, &ms), 0);
    assert_true(ms == 50);
    assert_int_equal(bs__expr_parse_time("1970-01-01T00:00:01.2349Z", 25, &ms), 0);
    assert_true(ms == 1234); /* floored to whole ms */
    assert_int_equal(bs__expr_parse_time("1970-01-01T00:00:00+01:30", 25, &ms), 0);
    assert_true(ms == -90 * 60000.0);
    static const char *const bad[] = {
        "1970-01-01T00:00:00.Z",     "1970-01-01T00:00:00+0100", "1970-01-01T00:00:00+01:3",
        "1970-01-01T00:00:00+24:00", "1970-01-01T00:00:00+01:60", "1970-01-01T00:00:00+01-00",
        "1970-13-01T00:00:00Z",      "1970-01-00T00:00:00Z",      "1970-01-01T00:60:00Z",
        "1970-01-01T00:00:61Z",      "1970-01-01X00:00:00Z",      "197-01-01T00:00:00Z",
        "",
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        if (bs__expr_parse_time(bad[k], strlen(bad[k]), &ms) != -1)
            fail_msg("'%s' parsed as a time", bad[k]);
        char src[96];
        snprintf(src, sizeof src, "hour_of_day(\"%s\")", bad[k]);
        null_is(src, NULL);
    }
}

/* ---- syntax errors, positions, source -------------------------------------------------- */

static void test_syntax_errors_and_positions(void **state)
{
    (void)state;
    compile_err("", "at 1:1: the expression is empty", 0);
    compile_err("   ", "at 1:4: the expression is empty", 3);
    compile_err("1 +", "at 1:4: unexpected end of the expression", 3);
    compile_err("(1 + 2",
                "at 1:7: expected ')' to close the '(' at 1, got the end of the "
                "expression",
                6);
    compile_err("1 + 2)", "at 1:6: unexpected ')' after the expression", 5);
    compile_err("1 2", "at 1:3: unexpected '2' after the expression", 2);
    compile_err("a = 1", "at 1:3: '=' is not an operator: compare with '=='", 2);
    compile_err("a & b", "at 1:3: '&' is not an operator: use '&&'", 2);
    compile_err("a | b", "at 1:3: '|' is not an operator: use '||'", 2);
    compile_err("a # b", "at 1:3: unexpected character '#'", 2);
    compile_err("a \x01", "at 1:3: unexpected byte 0x01", 2);
    compile_err("1.", "at 1:3: a number needs digits after '.'", 2);
    compile_err(".5", "at 1:1: a number needs a digit before '.'", 0);
    compile_err("1e", "at 1:3: a number needs digits in its exponent", 2);
    compile_err("12abc", "at 1:3: unexpected 'a' after a number", 2);
    compile_err("1 < 2 < 3", "at 1:7: comparisons do not chain: add parentheses", 6);
    compile_err("1 == 1 == true", "at 1:8: comparisons do not chain: add parentheses", 7);
    compile_err("* 2", "at 1:1: expected a value, got '*'", 0);
    compile_err("true + 1", "at 1:6: '+' needs a number or a string, got a boolean", 5);
    compile_err("-\"a\"", "at 1:1: '-' needs a number, got a string", 0);
    compile_err("!1", "at 1:1: '!' needs a boolean, got a number", 0);
    compile_err("1 && true", "at 1:3: '&&' needs a boolean, got a number", 2);
    compile_err("true || \"x\"", "at 1:6: '||' needs a boolean, got a string", 5);
    compile_err("1 == \"1\"",
                "at 1:3: '==' compares values that are never equal: got a number, "
                "got a string",
                2);
    compile_err("\"a\" < 1",
                "at 1:5: '<' needs two numbers or two strings: got a string, got a "
                "number",
                4);
    /* Lines and columns: columns count code points. */
    compile_err("a &&\n  1", "at 1:3: '&&' needs a boolean, got a number", 2);
    compile_err("true &&\n  x +", "at 2:6: unexpected end of the expression", 13);
    compile_err("\"é\" + é", "at 1:7: unexpected byte 0xC3", 7);
    compile_err("x\r\n\r\n  == ", "at 3:6: unexpected end of the expression", 10);
    /* *pos may be NULL; err may be NULL. */
    assert_null(bs_expr_compile("1 +", 3, NULL, NULL, NULL));
    /* Only len bytes are read. */
    bs_err_t err;
    bs_expr_t *e = bs_expr_compile("1 + 2 garbage", 5, NULL, NULL, &err);
    assert_non_null(e);
    assert_string_equal(bs_expr_source(e), "1 + 2");
    bs_expr_free(e);
    e = compile_opts("  \n amount >  1\t\n", NULL);
    assert_string_equal(bs_expr_source(e), "amount >  1");
    bs_expr_free(e);
    bs_expr_free(NULL);
}

/* ---- limits ---------------------------------------------------------------------------- */

static char *repeat(const char *a, int n, const char *mid, const char *b, int m)
{
    size_t la = strlen(a), lb = strlen(b), lm = strlen(mid);
    char *s = malloc(la * (size_t)n + lm + lb * (size_t)m + 1), *o = s;
    for (int k = 0; k < n; k++, o += la)
        memcpy(o, a, la);
    memcpy(o, mid, lm);
    o += lm;
    for (int k = 0; k < m; k++, o += lb)
        memcpy(o, b, lb);
    *o = '\0';
    return s;
}

/* open, then n ones separated by commas, then close: "x in [1,1,1]". */
static char *ones(const char *open, int n, const char *close)
{
    char *inner = repeat("1,", n - 1, "1", "", 0);
    char *s = malloc(strlen(open) + strlen(inner) + strlen(close) + 1);
    sprintf(s, "%s%s%s", open, inner, close);
    free(inner);
    return s;
}

static void compiles(const char *src)
{
    bs_expr_free(compile_opts(src, NULL));
}

static void test_limits(void **state)
{
    (void)state;
    bs_err_t err;
    int pos;
    /* Parentheses: 63 levels inside the top-level expression compile, deeper ones fail. */
    char *s = repeat("(", 63, "1", ")", 63);
    compiles(s);
    free(s);
    s = repeat("(", 64, "1", ")", 64);
    compile_err(s, "at 1:64: the expression nests deeper than 64 levels", 63);
    free(s);
    /* Far deeper than the limit (as deep as the source limit allows): an error, no crash. */
    s = repeat("(", 4000, "1", ")", 0);
    compile_err(s, "at 1:64: the expression nests deeper than 64 levels", 63);
    free(s);
    s = repeat("-", 4000, "1", "", 0);
    compile_err(s, "at 1:64: the expression nests deeper than 64 levels", 63);
    free(s);
    s = repeat("!", 4000, "true", "", 0);
    compile_err(s, "at 1:64: the expression nests deeper than 64 levels", 63);
    free(s);
    s = repeat("abs(", 800, "1", ")", 800);
    bs_expr_t *none = bs_expr_compile(s, strlen(s), NULL, &pos, &err);
    assert_null(none);
    assert_non_null(strstr(err.msg, "nests deeper than 64 levels"));
    free(s);
    /* Source length. */
    s = repeat(" ", BS_EXPR_MAX_SOURCE, "1", "", 0);
    assert_null(bs_expr_compile(s, strlen(s), NULL, &pos, &err));
    assert_string_equal(err.msg, "at 1:1: the expression is 4097 bytes, at most 4096");
    free(s);
    s = repeat(" ", BS_EXPR_MAX_SOURCE - 1, "1", "", 0);
    compiles(s);
    free(s);
    /* A long left-associative chain is no deeper than two slots. */
    s = repeat("1+", 2000, "1", "", 0);
    bs_expr_t *e = compile_opts(s, NULL);
    assert_int_equal(e->max_stack, 2);
    bs_expr_free(e);
    free(s);
    num_is("1+1+1+1+1+1+1+1+1+1", NULL, 10);
    /* List length. */
    s = ones("x in [", 1025, "]");
    compile_err(s, "at 1:2055: a list has more than 1024 elements", 2054);
    free(s);
    s = ones("x in [", 1024, "]");
    compiles(s);
    free(s);
    /* Arguments of one call. */
    s = ones("min(", 65, ")");
    compile_err(s, "at 1:1: min() takes at most 64 arguments", 0);
    free(s);
    /* Evaluation slots: calls of 60 arguments nested, each level keeps 59 values. */
    bs_buf_t b;
    bs_buf_init(&b);
    for (int k = 0; k < 5; k++) {
        bs_buf_puts(&b, "max(");
        for (int m = 0; m < 59; m++)
            bs_buf_puts(&b, "1,");
    }
    bs_buf_puts(&b, "1))))");
    bs_buf_putc(&b, ')');
    assert_null(bs_expr_compile(b.data, b.len, NULL, &pos, &err));
    assert_non_null(strstr(err.msg, "needs more than 256 evaluation slots"));
    bs_buf_free(&b);
    /* Fields. */
    bs_buf_init(&b);
    for (int k = 0; k <= BS_EXPR_MAX_FIELDS; k++)
        bs_buf_printf(&b, "%sf%d", k ? "+" : "", k);
    assert_null(bs_expr_compile(b.data, b.len, NULL, &pos, &err));
    assert_non_null(strstr(err.msg, "reads more than 128 fields"));
    bs_buf_free(&b);
}

/* ---- threads --------------------------------------------------------------------------- */

typedef struct {
    const bs_expr_t *e;
    int id;
    int bad;
} worker_t;

static void *worker(void *arg)
{
    worker_t *w = arg;
    bs_arena_t a;
    bs_arena_init(&a, 0);
    for (int k = 0; k < 20000; k++) {
        char json[128];
        int amount = (k * 7 + w->id * 13) % 3000;
        snprintf(json, sizeof json, "{\"amount\": %d, \"c\": \"%s\", \"s\": \"AbC%d\"}", amount,
                 k % 2 ? "FR" : "DE", k);
        cJSON *j = cJSON_Parse(json);
        bs_expr_value_t v;
        bs_err_t err;
        if (bs_expr_eval_json(w->e, j, &a, &v, &err) || v.type != BS_EXPR_STR) {
            w->bad++;
        } else {
            char want[64];
            snprintf(want, sizeof want, "%s:abc%d", amount > 1000 && (k % 2) ? "yes" : "no", k);
            if (v.len != strlen(want) || memcmp(v.s, want, v.len) != 0)
                w->bad++;
        }
        cJSON_Delete(j);
        if (k % 100 == 0) {
            bs_arena_deinit(&a);
            bs_arena_init(&a, 0);
        }
    }
    bs_arena_deinit(&a);
    return NULL;
}

static void test_threads_share_one_program(void **state)
{
    (void)state;
    bs_expr_t *e =
        compile_opts("if(amount > 1000 && c == \"FR\", \"yes\", \"no\") + \":\" + lower(s)", NULL);
    pthread_t t[4];
    worker_t w[4];
    for (int k = 0; k < 4; k++) {
        w[k] = (worker_t){e, k, 0};
        assert_int_equal(pthread_create(&t[k], NULL, worker, &w[k]), 0);
    }
    for (int k = 0; k < 4; k++) {
        pthread_join(t[k], NULL);
        assert_int_equal(w[k].bad, 0);
    }
    bs_expr_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arithmetic_precedence_as_c),
        cmocka_unit_test(test_modulo_sign_of_divisor),
        cmocka_unit_test(test_random_arithmetic_against_c),
        cmocka_unit_test(test_division_by_zero_and_non_finite),
        cmocka_unit_test(test_null_propagation),
        cmocka_unit_test(test_comparisons),
        cmocka_unit_test(test_logic_and_short_circuit),
        cmocka_unit_test(test_in_lists),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_math_functions),
        cmocka_unit_test(test_coalesce_and_if),
        cmocka_unit_test(test_bucketize),
        cmocka_unit_test(test_lower_len),
        cmocka_unit_test(test_hash_bucket),
        cmocka_unit_test(test_time_functions),
        cmocka_unit_test(test_json_paths),
        cmocka_unit_test(test_eval_by_index_and_declared_types),
        cmocka_unit_test(test_eval_error_paths),
        cmocka_unit_test(test_syntax_errors_and_positions),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_threads_share_one_program),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
