/*
 * The expression evaluator: runs a compiled program (expr_int.h) on a fixed array of
 * BS_EXPR_MAX_STACK values on the C stack. The program is only read, so one program may be
 * evaluated by any number of threads at once; nothing is allocated except the strings that
 * lower() and string + make, which come from the caller's arena.
 *
 * Every operator checks the dynamic types of its operands (the compiler has refused the
 * combinations it can prove wrong; a dynamic field can still hold anything). Next to each
 * stack slot the field it was loaded from is kept (or -1), so a type error names it.
 *
 * Fields are looked up when their FIELD instruction runs: by index in the caller's array
 * (bs_expr_eval) or by walking the precomputed path segments through the cJSON tree
 * (bs_expr_eval_json), so a short-circuited operand costs nothing.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/expr.h"
#include "base/expr_int.h"

typedef struct {
    const bs_expr_t *e;
    const bs_expr_value_t *fields; /* bs_expr_eval, or NULL */
    const cJSON *obj;              /* bs_expr_eval_json, or NULL */
    int json;
    bs_arena_t *arena;
    bs_err_t *err;
} run_t;

static const char *op_name(const bs__expr_ins_t *ins)
{
    static const char *const names[] = {
        [BS__EXPR_OP_NEG] = "'-'", [BS__EXPR_OP_NOT] = "'!'",     [BS__EXPR_OP_ADD] = "'+'",
        [BS__EXPR_OP_SUB] = "'-'", [BS__EXPR_OP_MUL] = "'*'",     [BS__EXPR_OP_DIV] = "'/'",
        [BS__EXPR_OP_MOD] = "'%'", [BS__EXPR_OP_EQ] = "'=='",     [BS__EXPR_OP_NE] = "'!='",
        [BS__EXPR_OP_LT] = "'<'",  [BS__EXPR_OP_LE] = "'<='",     [BS__EXPR_OP_GT] = "'>'",
        [BS__EXPR_OP_GE] = "'>='", [BS__EXPR_OP_IN] = "'in'",     [BS__EXPR_OP_AND] = "'&&'",
        [BS__EXPR_OP_OR] = "'||'", [BS__EXPR_OP_JFALSE] = "if()",
    };
    static const char *const fn_names[] = {
        [BS__EXPR_FN_LOG] = "log()",
        [BS__EXPR_FN_EXP] = "exp()",
        [BS__EXPR_FN_SQRT] = "sqrt()",
        [BS__EXPR_FN_ABS] = "abs()",
        [BS__EXPR_FN_MIN] = "min()",
        [BS__EXPR_FN_MAX] = "max()",
        [BS__EXPR_FN_CLAMP] = "clamp()",
        [BS__EXPR_FN_COALESCE] = "coalesce()",
        [BS__EXPR_FN_IF] = "if()",
        [BS__EXPR_FN_BUCKETIZE] = "bucketize()",
        [BS__EXPR_FN_LOWER] = "lower()",
        [BS__EXPR_FN_LEN] = "len()",
        [BS__EXPR_FN_HASH_BUCKET] = "hash_bucket()",
        [BS__EXPR_FN_HOUR_OF_DAY] = "hour_of_day()",
        [BS__EXPR_FN_DAY_OF_WEEK] = "day_of_week()",
    };
    if (ins->op == BS__EXPR_OP_TOBOOL) /* the right side of && (fn 0) or || (fn 1) */
        return ins->fn ? "'||'" : "'&&'";
    if (ins->op == BS__EXPR_OP_CALL)
        return ins->fn < sizeof fn_names / sizeof fn_names[0] ? fn_names[ins->fn] : "a function";
    const char *n = ins->op < sizeof names / sizeof names[0] ? names[ins->op] : NULL;
    return n ? n : "an operator";
}

static const char *value_type_name(const bs_expr_value_t *v)
{
    switch (v->type) {
    case BS_EXPR_NULL:
        return "null";
    case BS_EXPR_BOOL:
        return "a boolean";
    case BS_EXPR_NUM:
        return "a number";
    case BS_EXPR_STR:
        return "a string";
    default:
        return "not a value";
    }
}

static int fail_at(const run_t *r, int pos, const char *msg)
{
    char where[32];
    bs__expr_where(r->e->src, r->e->src_len, pos, where, sizeof where);
    return bs_err_setf(r->err, BS_EINVAL, "expr", "%s%s", where, msg);
}

/* "'-' needs a number, field 'x' is a string" (or "got a string"). */
static int type_error(const run_t *r, const bs__expr_ins_t *ins, const char *need,
                      const bs_expr_value_t *v, int origin)
{
    char msg[224];
    if (origin >= 0)
        snprintf(msg, sizeof msg, "%s needs %s, field '%.64s' is %s", op_name(ins), need,
                 r->e->fields[origin].name, value_type_name(v));
    else
        snprintf(msg, sizeof msg, "%s needs %s, got %s", op_name(ins), need, value_type_name(v));
    return fail_at(r, ins->pos, msg);
}

/* ---- field lookup ---------------------------------------------------------------------- */

/* The JSON value at the field's path; NULL when a segment is missing. */
static const cJSON *json_walk(const cJSON *obj, const bs__expr_field_t *f)
{
    const cJSON *cur = obj;
    for (int k = 0; k < f->n_segs && cur; k++) {
        const bs__expr_seg_t *sg = &f->segs[k];
        const cJSON *c = NULL;
        if (cJSON_IsObject(cur)) {
            for (c = cur->child; c; c = c->next)
                if (c->string && c->string[0] == sg->seg[0] && strcmp(c->string, sg->seg) == 0)
                    break;
        } else if (cJSON_IsArray(cur) && sg->index >= 0) {
            long i = 0;
            for (c = cur->child; c && i < sg->index; c = c->next)
                i++;
        }
        cur = c;
    }
    return cur;
}

/* Loads field f into *v. Returns 0, or an error for a value that is not one (an object, an
 * array, a value of an unknown type). */
static int load_field(const run_t *r, const bs__expr_ins_t *ins, bs_expr_value_t *v)
{
    const bs__expr_field_t *f = &r->e->fields[ins->arg];
    *v = (bs_expr_value_t){.type = BS_EXPR_NULL};
    const char *what = NULL;
    if (r->json) {
        const cJSON *j = r->obj ? json_walk(r->obj, f) : NULL;
        if (!j || cJSON_IsNull(j)) {
            return 0;
        } else if (cJSON_IsBool(j)) {
            v->type = BS_EXPR_BOOL;
            v->b = cJSON_IsTrue(j);
        } else if (cJSON_IsNumber(j)) {
            v->type = BS_EXPR_NUM;
            v->num = j->valuedouble;
        } else if (cJSON_IsString(j) && j->valuestring) {
            v->type = BS_EXPR_STR;
            v->s = j->valuestring;
            v->len = strlen(j->valuestring);
        } else {
            what = cJSON_IsObject(j) ? "an object" : cJSON_IsArray(j) ? "an array" : "not a value";
        }
    } else if (r->fields) {
        *v = r->fields[ins->arg];
        switch (v->type) {
        case BS_EXPR_NULL:
        case BS_EXPR_BOOL:
        case BS_EXPR_NUM:
            break;
        case BS_EXPR_STR:
            if (!v->s) {
                v->s = "";
                v->len = 0;
            }
            break;
        default:
            what = "not a value";
        }
        v->b = v->b != 0;
    }
    if (what) {
        char msg[160];
        snprintf(msg, sizeof msg, "field '%.64s' is %s, not a number, string, boolean or null",
                 f->name, what);
        return fail_at(r, ins->pos, msg);
    }
    if (v->type == BS_EXPR_NUM && !isfinite(v->num))
        *v = (bs_expr_value_t){.type = BS_EXPR_NULL};
    return 0;
}

/* ---- helpers --------------------------------------------------------------------------- */

static int values_equal(const bs_expr_value_t *a, const bs_expr_value_t *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case BS_EXPR_NULL:
        return 1;
    case BS_EXPR_BOOL:
        return (a->b != 0) == (b->b != 0);
    case BS_EXPR_NUM:
        return a->num == b->num;
    case BS_EXPR_STR:
        return a->len == b->len && memcmp(a->s, b->s, a->len) == 0;
    default:
        return 0;
    }
}

/* Byte-wise order of two strings: the order of their code points for valid UTF-8. */
static int str_cmp(const bs_expr_value_t *a, const bs_expr_value_t *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int c = n ? memcmp(a->s, b->s, n) : 0;
    if (c)
        return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

static bs_expr_value_t num_or_null(double x)
{
    if (!isfinite(x))
        return (bs_expr_value_t){.type = BS_EXPR_NULL};
    return (bs_expr_value_t){.type = BS_EXPR_NUM, .num = x};
}

static const bs_expr_value_t null_value = {.type = BS_EXPR_NULL};

uint64_t bs__expr_fnv1a64(const char *s, size_t n)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static int digits(const char *s, size_t len, size_t at, int n, int *out)
{
    if (at + (size_t)n > len)
        return -1;
    int v = 0;
    for (int k = 0; k < n; k++) {
        char c = s[at + (size_t)k];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *out = v;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant, "chrono-Compatible
 * Low-Level Date Algorithms", days_from_civil). */
static long days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    long yoe = y - era * 400;
    long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int bs__expr_parse_time(const char *s, size_t len, double *ms)
{
    int y, mo, d, h, mi, sec;
    if (digits(s, len, 0, 4, &y) || len < 19 || s[4] != '-' || digits(s, len, 5, 2, &mo) ||
        s[7] != '-' || digits(s, len, 8, 2, &d) ||
        !(s[10] == 'T' || s[10] == 't' || s[10] == ' ') || digits(s, len, 11, 2, &h) ||
        s[13] != ':' || digits(s, len, 14, 2, &mi) || s[16] != ':' || digits(s, len, 17, 2, &sec))
        return -1;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && leap) || h > 23 || mi > 59 ||
        sec > 60)
        return -1;
    size_t i = 19;
    int frac_ms = 0;
    if (i < len && s[i] == '.') {
        i++;
        size_t start = i;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            if (i - start < 3)
                frac_ms = frac_ms * 10 + (s[i] - '0');
            i++;
        }
        if (i == start)
            return -1;
        for (size_t k = i - start; k < 3; k++)
            frac_ms *= 10;
    }
    int offset_min = 0;
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i < len && (s[i] == '+' || s[i] == '-')) {
        int oh, om;
        if (digits(s, len, i + 1, 2, &oh) || i + 3 >= len || s[i + 3] != ':' ||
            digits(s, len, i + 4, 2, &om) || oh > 23 || om > 59)
            return -1;
        offset_min = (oh * 60 + om) * (s[i] == '+' ? 1 : -1);
        i += 6;
    } else {
        return -1;
    }
    if (i != len)
        return -1;
    double days = (double)days_from_civil(y, mo, d);
    *ms = days * 86400000.0 + ((h * 60.0 + mi - offset_min) * 60.0 + sec) * 1000.0 + frac_ms;
    return 0;
}

/* ms since the epoch of a time argument (a number of ms or an RFC 3339 string), or -1 when
 * it is not one (null result). */
static int time_ms(const bs_expr_value_t *v, double *ms)
{
    if (v->type == BS_EXPR_NUM) {
        *ms = floor(v->num);
    } else if (bs__expr_parse_time(v->s, v->len, ms)) {
        return -1;
    }
    return fabs(*ms) <= 8.64e15 ? 0 : -1; /* ±100,000,000 days, as ECMAScript's Date */
}

/* ---- the machine ----------------------------------------------------------------------- */

#define NEED(cond, slot, need)                                                                     \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return type_error(r, ins, need, &st[slot], org[slot]);                                 \
    } while (0)

static int call(const run_t *r, const bs__expr_ins_t *ins, bs_expr_value_t *st, int *org, int *sp)
{
    int n = ins->arg, base = *sp - n;
    bs_expr_value_t *a = &st[base];
    bs_expr_value_t res = null_value;
    const bs__expr_list_t *list;
    switch (ins->fn) {
    case BS__EXPR_FN_LOG:
    case BS__EXPR_FN_EXP:
    case BS__EXPR_FN_SQRT:
    case BS__EXPR_FN_ABS:
        if (a->type == BS_EXPR_NULL)
            break;
        NEED(a->type == BS_EXPR_NUM, base, "a number");
        if (ins->fn == BS__EXPR_FN_LOG)
            res = a->num > 0 ? num_or_null(log(a->num)) : null_value;
        else if (ins->fn == BS__EXPR_FN_EXP)
            res = num_or_null(exp(a->num));
        else if (ins->fn == BS__EXPR_FN_SQRT)
            res = a->num >= 0 ? num_or_null(sqrt(a->num)) : null_value;
        else
            res = num_or_null(fabs(a->num));
        break;
    case BS__EXPR_FN_MIN:
    case BS__EXPR_FN_MAX:
    case BS__EXPR_FN_CLAMP: {
        int any_null = 0;
        for (int k = 0; k < n; k++) {
            if (a[k].type == BS_EXPR_NULL)
                any_null = 1;
            else
                NEED(a[k].type == BS_EXPR_NUM, base + k, "numbers");
        }
        if (any_null)
            break;
        double m = a[0].num;
        if (ins->fn == BS__EXPR_FN_CLAMP) {
            m = m < a[1].num ? a[1].num : m;
            m = m > a[2].num ? a[2].num : m;
        } else {
            for (int k = 1; k < n; k++)
                if (ins->fn == BS__EXPR_FN_MIN ? a[k].num < m : a[k].num > m)
                    m = a[k].num;
        }
        res = num_or_null(m);
        break;
    }
    case BS__EXPR_FN_BUCKETIZE: {
        if (a->type == BS_EXPR_NULL)
            break;
        NEED(a->type == BS_EXPR_NUM, base, "a number");
        list = &r->e->lists[ins->list];
        const bs_expr_value_t *edges = &r->e->consts[list->first];
        int lo = 0, hi = list->n; /* the number of edges <= x (numpy.digitize, right=False) */
        while (lo < hi) {
            int mid = lo + (hi - lo) / 2;
            if (edges[mid].num <= a->num)
                lo = mid + 1;
            else
                hi = mid;
        }
        res = num_or_null(lo);
        break;
    }
    case BS__EXPR_FN_LOWER: {
        if (a->type == BS_EXPR_NULL)
            break;
        NEED(a->type == BS_EXPR_STR, base, "a string");
        res = *a;
        size_t k = 0;
        while (k < a->len && !(a->s[k] >= 'A' && a->s[k] <= 'Z'))
            k++;
        if (k == a->len)
            break; /* nothing to change: the input itself */
        char *o = r->arena ? bs_arena_alloc(r->arena, a->len + 1) : NULL;
        if (!o)
            return bs_err_setf(r->err, BS_ENOMEM, "expr",
                               "no arena memory for the %zu-byte result of lower()", a->len);
        for (size_t j = 0; j < a->len; j++) {
            char c = a->s[j];
            o[j] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        }
        o[a->len] = '\0';
        res.s = o;
        break;
    }
    case BS__EXPR_FN_LEN: {
        if (a->type == BS_EXPR_NULL)
            break;
        NEED(a->type == BS_EXPR_STR, base, "a string");
        size_t cps = 0;
        for (size_t j = 0; j < a->len; j++)
            cps += ((unsigned char)a->s[j] & 0xC0) != 0x80;
        res = num_or_null((double)cps);
        break;
    }
    case BS__EXPR_FN_HASH_BUCKET: {
        if (a[0].type == BS_EXPR_NULL || a[1].type == BS_EXPR_NULL)
            break;
        NEED(a[0].type == BS_EXPR_STR || a[0].type == BS_EXPR_NUM, base, "a string or a number");
        NEED(a[1].type == BS_EXPR_NUM, base + 1, "a number of buckets");
        double nb = a[1].num;
        if (nb < 1 || nb > 9007199254740992.0 || nb != floor(nb))
            break;
        uint64_t h;
        if (a[0].type == BS_EXPR_STR) {
            h = bs__expr_fnv1a64(a[0].s, a[0].len);
        } else {
            double x = a[0].num;
            if (x != floor(x) || fabs(x) > 9007199254740992.0)
                break;
            char txt[32];
            int l = snprintf(txt, sizeof txt, "%lld", (long long)x);
            h = bs__expr_fnv1a64(txt, (size_t)l);
        }
        res = num_or_null((double)(h % (uint64_t)nb));
        break;
    }
    case BS__EXPR_FN_HOUR_OF_DAY:
    case BS__EXPR_FN_DAY_OF_WEEK: {
        if (a->type == BS_EXPR_NULL)
            break;
        NEED(a->type == BS_EXPR_NUM || a->type == BS_EXPR_STR, base,
             "a time (ms since the epoch or an RFC 3339 string)");
        double ms;
        if (time_ms(a, &ms))
            break;
        double day = floor(ms / 86400000.0);
        double in_day = ms - day * 86400000.0;
        if (ins->fn == BS__EXPR_FN_HOUR_OF_DAY) {
            res = num_or_null(floor(in_day / 3600000.0));
        } else {
            long long dw = ((long long)day + 3) % 7; /* 1970-01-01 was a Thursday (3) */
            res = num_or_null((double)(dw < 0 ? dw + 7 : dw));
        }
        break;
    }
    default:
        return fail_at(r, ins->pos, "internal: unknown function");
    }
    st[base] = res;
    org[base] = -1;
    *sp = base + 1;
    return 0;
}

static int run(const run_t *r, bs_expr_value_t *out)
{
    const bs_expr_t *e = r->e;
    bs_expr_value_t st[BS_EXPR_MAX_STACK];
    int org[BS_EXPR_MAX_STACK];
    int sp = 0;
    for (int pc = 0; pc < e->n_code; pc++) {
        const bs__expr_ins_t *ins = &e->code[pc];
        bs_expr_value_t *a = sp >= 2 ? &st[sp - 2] : NULL, *b = sp >= 1 ? &st[sp - 1] : NULL;
        switch ((bs__expr_op_t)ins->op) {
        case BS__EXPR_OP_CONST:
            st[sp] = e->consts[ins->arg];
            org[sp++] = -1;
            break;
        case BS__EXPR_OP_FIELD:
            if (load_field(r, ins, &st[sp]))
                return BS_EINVAL;
            org[sp++] = ins->arg;
            break;
        case BS__EXPR_OP_NEG:
            if (b->type != BS_EXPR_NULL) {
                NEED(b->type == BS_EXPR_NUM, sp - 1, "a number");
                *b = num_or_null(-b->num);
            }
            org[sp - 1] = -1;
            break;
        case BS__EXPR_OP_NOT:
            if (b->type == BS_EXPR_NULL)
                *b = (bs_expr_value_t){.type = BS_EXPR_BOOL, .b = 1};
            else {
                NEED(b->type == BS_EXPR_BOOL, sp - 1, "a boolean");
                *b = (bs_expr_value_t){.type = BS_EXPR_BOOL, .b = !b->b};
            }
            org[sp - 1] = -1;
            break;
        case BS__EXPR_OP_ADD:
            if ((a->type == BS_EXPR_NULL || b->type == BS_EXPR_NULL) &&
                (a->type == BS_EXPR_STR || b->type == BS_EXPR_STR)) {
                *a = null_value; /* null + a string */
                org[sp - 2] = -1;
                sp--;
                break;
            }
            if (a->type == BS_EXPR_STR && b->type == BS_EXPR_STR) {
                if (b->len == 0) {
                    /* a itself */
                } else if (a->len == 0) {
                    *a = *b;
                } else {
                    size_t n = a->len + b->len;
                    char *o = r->arena && n >= a->len ? bs_arena_alloc(r->arena, n + 1) : NULL;
                    if (!o)
                        return bs_err_setf(r->err, BS_ENOMEM, "expr",
                                           "no arena memory for a %zu-byte string", n);
                    memcpy(o, a->s, a->len);
                    memcpy(o + a->len, b->s, b->len);
                    o[n] = '\0';
                    a->s = o;
                    a->len = n;
                }
                org[sp - 2] = -1;
                sp--;
                break;
            }
            __attribute__((fallthrough)); /* numbers */
        case BS__EXPR_OP_SUB:
        case BS__EXPR_OP_MUL:
        case BS__EXPR_OP_DIV:
        case BS__EXPR_OP_MOD: {
            const char *need =
                ins->op == BS__EXPR_OP_ADD ? "two numbers or two strings" : "a number";
            if (a->type != BS_EXPR_NULL)
                NEED(a->type == BS_EXPR_NUM, sp - 2, need);
            if (b->type != BS_EXPR_NULL)
                NEED(b->type == BS_EXPR_NUM, sp - 1, need);
            if (a->type == BS_EXPR_NULL || b->type == BS_EXPR_NULL) {
                *a = null_value;
            } else {
                double x = a->num, y = b->num, v;
                switch (ins->op) {
                case BS__EXPR_OP_ADD:
                    v = x + y;
                    break;
                case BS__EXPR_OP_SUB:
                    v = x - y;
                    break;
                case BS__EXPR_OP_MUL:
                    v = x * y;
                    break;
                case BS__EXPR_OP_DIV:
                    v = y == 0 ? NAN : x / y;
                    break;
                default: /* as Python's float %: the result has the sign of the divisor */
                    if (y == 0) {
                        v = NAN;
                    } else {
                        v = fmod(x, y);
                        if (v != 0) {
                            if ((y < 0) != (v < 0))
                                v += y;
                        } else {
                            v = copysign(0.0, y);
                        }
                    }
                    break;
                }
                *a = num_or_null(v);
            }
            org[sp - 2] = -1;
            sp--;
            break;
        }
        case BS__EXPR_OP_EQ:
        case BS__EXPR_OP_NE: {
            int eq = values_equal(a, b);
            *a = (bs_expr_value_t){.type = BS_EXPR_BOOL, .b = ins->op == BS__EXPR_OP_EQ ? eq : !eq};
            org[sp - 2] = -1;
            sp--;
            break;
        }
        case BS__EXPR_OP_LT:
        case BS__EXPR_OP_LE:
        case BS__EXPR_OP_GT:
        case BS__EXPR_OP_GE: {
            if (a->type != BS_EXPR_NULL)
                NEED(a->type == BS_EXPR_NUM || a->type == BS_EXPR_STR, sp - 2,
                     "a number or a string");
            if (b->type != BS_EXPR_NULL)
                NEED(b->type == BS_EXPR_NUM || b->type == BS_EXPR_STR, sp - 1,
                     "a number or a string");
            if (a->type == BS_EXPR_NULL || b->type == BS_EXPR_NULL) {
                *a = null_value;
            } else {
                NEED(a->type == b->type, sp - 1,
                     a->type == BS_EXPR_NUM ? "a number (like its left side)"
                                            : "a string (like its left side)");
                int c;
                if (a->type == BS_EXPR_NUM)
                    c = a->num < b->num ? -1 : a->num > b->num;
                else
                    c = str_cmp(a, b);
                int v = ins->op == BS__EXPR_OP_LT   ? c < 0
                        : ins->op == BS__EXPR_OP_LE ? c <= 0
                        : ins->op == BS__EXPR_OP_GT ? c > 0
                                                    : c >= 0;
                *a = (bs_expr_value_t){.type = BS_EXPR_BOOL, .b = v};
            }
            org[sp - 2] = -1;
            sp--;
            break;
        }
        case BS__EXPR_OP_IN: {
            const bs__expr_list_t *l = &e->lists[ins->list];
            int found = 0;
            for (int k = 0; k < l->n && !found; k++)
                found = values_equal(b, &e->consts[l->first + k]);
            *b = (bs_expr_value_t){.type = BS_EXPR_BOOL, .b = found};
            org[sp - 1] = -1;
            break;
        }
        case BS__EXPR_OP_AND:
        case BS__EXPR_OP_OR: {
            if (b->type != BS_EXPR_NULL)
                NEED(b->type == BS_EXPR_BOOL, sp - 1, "a boolean");
            int t = b->type == BS_EXPR_BOOL && b->b;
            sp--;
            if (ins->op == BS__EXPR_OP_AND ? !t : t) {
                st[sp] = (bs_expr_value_t){.type = BS_EXPR_BOOL, .b = t};
                org[sp++] = -1;
                pc = ins->arg - 1;
            }
            break;
        }
        case BS__EXPR_OP_TOBOOL: {
            if (b->type != BS_EXPR_NULL)
                NEED(b->type == BS_EXPR_BOOL, sp - 1, "a boolean");
            *b = (bs_expr_value_t){.type = BS_EXPR_BOOL, .b = b->type == BS_EXPR_BOOL && b->b};
            org[sp - 1] = -1;
            break;
        }
        case BS__EXPR_OP_JFALSE: {
            if (b->type != BS_EXPR_NULL)
                NEED(b->type == BS_EXPR_BOOL, sp - 1, "a boolean condition");
            int t = b->type == BS_EXPR_BOOL && b->b;
            sp--;
            if (!t)
                pc = ins->arg - 1;
            break;
        }
        case BS__EXPR_OP_JMP:
            pc = ins->arg - 1;
            break;
        case BS__EXPR_OP_JNNULL:
            if (b->type != BS_EXPR_NULL)
                pc = ins->arg - 1;
            else
                sp--;
            break;
        case BS__EXPR_OP_CALL: {
            int rc = call(r, ins, st, org, &sp);
            if (rc)
                return rc;
            break;
        }
        default:
            return fail_at(r, ins->pos, "internal: unknown instruction");
        }
    }
    if (sp != 1)
        return fail_at(r, 0, "internal: the program left a bad stack");
    *out = st[0];
    return 0;
}

int bs_expr_eval(const bs_expr_t *e, const bs_expr_value_t *fields, bs_arena_t *arena,
                 bs_expr_value_t *out, bs_err_t *err)
{
    if (!e || !out)
        return bs_err_setf(err, BS_EINVAL, "expr", "no expression to evaluate");
    run_t r = {.e = e, .fields = fields, .arena = arena, .err = err};
    return run(&r, out);
}

int bs_expr_eval_json(const bs_expr_t *e, const cJSON *obj, bs_arena_t *arena, bs_expr_value_t *out,
                      bs_err_t *err)
{
    if (!e || !out)
        return bs_err_setf(err, BS_EINVAL, "expr", "no expression to evaluate");
    run_t r = {.e = e, .obj = obj, .json = 1, .arena = arena, .err = err};
    return run(&r, out);
}

int bs_expr_truthy(const bs_expr_value_t *v)
{
    return v && v->type == BS_EXPR_BOOL && v->b;
}
