/*
 * The expression compiler: a hand-written lexer and a precedence-climbing (Pratt) parser
 * that emits stack-machine code while it parses (expr_int.h), so no syntax tree is built.
 *
 * Each parse function returns the static type of what it parsed: the set of dynamic types
 * the value may have (BS__EXPR_M_*), plus the field it is when it is a bare field reference
 * (to name it in errors). An operator whose operand can never have an accepted type is a
 * compile-time error at the operator; an operand that may or may not be accepted (a dynamic
 * field) is checked again at evaluation, which checks every operand anyway.
 *
 * Precedence, lowest first: ||, &&, comparisons (== != < <= > >= in; they do not chain),
 * + -, * / %, unary - and !. Binary operators associate to the left.
 *
 * Bounds: BS_EXPR_MAX_SOURCE bytes of source, BS_EXPR_MAX_DEPTH levels of recursion (every
 * recursive call goes through parse_expr or parse_unary, which count), BS_EXPR_MAX_CODE
 * instructions, BS_EXPR_MAX_STACK evaluation slots, BS_EXPR_MAX_ARGS arguments,
 * BS_EXPR_MAX_LIST list elements, BS_EXPR_MAX_FIELDS fields. Each is an error.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/expr.h"
#include "base/expr_int.h"

enum {
    M_NULL = BS__EXPR_M_NULL,
    M_BOOL = BS__EXPR_M_BOOL,
    M_NUM = BS__EXPR_M_NUM,
    M_STR = BS__EXPR_M_STR,
    M_ANY = BS__EXPR_M_ANY,
};

typedef enum {
    T_EOF,
    T_NUM,
    T_STR,
    T_PATH,
    T_TRUE,
    T_FALSE,
    T_NULL,
    T_IN,
    T_LP,
    T_RP,
    T_LB,
    T_RB,
    T_COMMA,
    T_PLUS,
    T_MINUS,
    T_STAR,
    T_SLASH,
    T_PCT,
    T_EQ,
    T_NE,
    T_LT,
    T_LE,
    T_GT,
    T_GE,
    T_AND,
    T_OR,
    T_NOT,
} tok_kind_t;

typedef struct {
    const char *s;
    size_t len;
    int quoted;
} seg_t;

typedef struct {
    tok_kind_t kind;
    int pos, end;
    double num;
    const char *str; /* T_STR: decoded, in the parser's scratch buffer */
    size_t str_len;
    seg_t segs[BS_EXPR_MAX_SEGS]; /* T_PATH */
    int n_segs;
    int call; /* T_PATH: a plain identifier directly followed by '(' */
} tok_t;

/* A static type: the set of possible types, and the field it is (-1: not a bare field). */
typedef struct {
    int mask;
    int field;
} ty_t;

typedef struct {
    const char *src;
    size_t len, i;
    tok_t tok;
    bs_expr_t *e;
    int cap_code, cap_consts, cap_lists, cap_fields;
    int depth, height;
    const bs_expr_opts_t *opts;
    bs_err_t *err;
    int err_pos;
    int failed;
    char *scratch; /* len + 1 bytes: the decoded text of the current string token */
} parser_t;

/* ---- errors ---------------------------------------------------------------------------- */

void bs__expr_where(const char *src, size_t len, int pos, char *out, size_t n)
{
    int line = 1, col = 1;
    size_t end = pos < 0 ? 0 : (size_t)pos > len ? len : (size_t)pos;
    for (size_t i = 0; i < end; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c == '\n') {
            line++;
            col = 1;
        } else if ((c & 0xC0) != 0x80) {
            col++;
        }
    }
    snprintf(out, n, "at %d:%d: ", line, col);
}

__attribute__((format(printf, 3, 4))) static int fail(parser_t *p, int pos, const char *fmt, ...)
{
    if (p->failed)
        return -1;
    char where[32], msg[224];
    bs__expr_where(p->src, p->len, pos, where, sizeof where);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    bs_err_setf(p->err, BS_EINVAL, "expr", "%s%s", where, msg);
    p->err_pos = pos;
    p->failed = 1;
    return -1;
}

static const char *mask_name(int m)
{
    switch (m & ~M_NULL) {
    case 0:
        return "null";
    case M_BOOL:
        return "a boolean";
    case M_NUM:
        return "a number";
    case M_STR:
        return "a string";
    default:
        return "a value of several types";
    }
}

static const char *accepted_name(int m)
{
    switch (m) {
    case M_BOOL:
        return "a boolean";
    case M_NUM:
        return "a number";
    case M_STR:
        return "a string";
    case M_NUM | M_STR:
        return "a number or a string";
    default:
        return "a value";
    }
}

/* "field 'x' is a string" or "got a string". */
static void describe(parser_t *p, ty_t t, char *out, size_t n)
{
    if (t.field >= 0)
        snprintf(out, n, "field '%.64s' is %s", p->e->fields[t.field].name, mask_name(t.mask));
    else
        snprintf(out, n, "got %s", mask_name(t.mask));
}

/* An operand that can never be of an accepted type (null alone is always accepted). */
static int check_operand(parser_t *p, ty_t t, int accepted, int pos, const char *what)
{
    if ((t.mask & ~M_NULL) && !(t.mask & accepted)) {
        char d[128];
        describe(p, t, d, sizeof d);
        return fail(p, pos, "%s needs %s, %s", what, accepted_name(accepted), d);
    }
    return 0;
}

/* ---- lexer ----------------------------------------------------------------------------- */

static int is_ident_start(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_ident_char(int c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9');
}

static int peekc(const parser_t *p, size_t at)
{
    return at < p->len ? (unsigned char)p->src[at] : -1;
}

static int lex_number(parser_t *p)
{
    size_t s = p->i, i = p->i;
    while (i < p->len && p->src[i] >= '0' && p->src[i] <= '9')
        i++;
    if (peekc(p, i) == '.') {
        i++;
        if (!(peekc(p, i) >= '0' && peekc(p, i) <= '9'))
            return fail(p, (int)i, "a number needs digits after '.'");
        while (i < p->len && p->src[i] >= '0' && p->src[i] <= '9')
            i++;
    }
    if (peekc(p, i) == 'e' || peekc(p, i) == 'E') {
        i++;
        if (peekc(p, i) == '+' || peekc(p, i) == '-')
            i++;
        if (!(peekc(p, i) >= '0' && peekc(p, i) <= '9'))
            return fail(p, (int)i, "a number needs digits in its exponent");
        while (i < p->len && p->src[i] >= '0' && p->src[i] <= '9')
            i++;
    }
    if (is_ident_char(peekc(p, i)) || peekc(p, i) == '.')
        return fail(p, (int)i, "unexpected '%c' after a number", p->src[i]);
    memcpy(p->scratch, p->src + s, i - s);
    p->scratch[i - s] = '\0';
    errno = 0;
    double v = strtod(p->scratch, NULL);
    if (!isfinite(v))
        return fail(p, (int)s, "number %.32s is out of range", p->scratch);
    p->tok.kind = T_NUM;
    p->tok.num = v;
    p->i = i;
    return 0;
}

static int hex4(parser_t *p, size_t at, unsigned *out)
{
    unsigned v = 0;
    for (size_t k = 0; k < 4; k++) {
        int c = peekc(p, at + k);
        int d = (c >= '0' && c <= '9')   ? c - '0'
                : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                         : -1;
        if (d < 0)
            return fail(p, (int)at - 2, "\\u needs 4 hexadecimal digits");
        v = v * 16 + (unsigned)d;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static int lex_string(parser_t *p)
{
    char q = p->src[p->i];
    size_t i = p->i + 1, o = 0;
    for (;;) {
        if (i >= p->len)
            return fail(p, p->tok.pos, "unterminated string");
        unsigned char c = (unsigned char)p->src[i];
        if (c == (unsigned char)q) {
            i++;
            break;
        }
        if (c < 0x20 || c == 0x7F)
            return fail(p, (int)i, "a control character in a string must be escaped");
        if (c == '\\') {
            int x = peekc(p, i + 1);
            size_t at = i;
            i += 2;
            switch (x) {
            case '"':
            case '\'':
            case '\\':
            case '/':
                p->scratch[o++] = (char)x;
                break;
            case 'b':
                p->scratch[o++] = '\b';
                break;
            case 'f':
                p->scratch[o++] = '\f';
                break;
            case 'n':
                p->scratch[o++] = '\n';
                break;
            case 'r':
                p->scratch[o++] = '\r';
                break;
            case 't':
                p->scratch[o++] = '\t';
                break;
            case 'u': {
                unsigned cp;
                if (hex4(p, i, &cp))
                    return -1;
                i += 4;
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return fail(p, (int)at, "a lone low surrogate \\u%04X", cp);
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned lo;
                    if (peekc(p, i) != '\\' || peekc(p, i + 1) != 'u')
                        return fail(p, (int)at, "a high surrogate \\u%04X needs a low one", cp);
                    if (hex4(p, i + 2, &lo))
                        return -1;
                    if (lo < 0xDC00 || lo > 0xDFFF)
                        return fail(p, (int)at, "a high surrogate \\u%04X needs a low one", cp);
                    i += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (cp == 0)
                    return fail(p, (int)at, "a string cannot contain \\u0000");
                o += put_utf8(p->scratch + o, cp);
                break;
            }
            default:
                return fail(p, (int)at, "unknown escape in a string");
            }
            continue;
        }
        size_t l = bs_utf8_len((const unsigned char *)p->src + i, p->len - i);
        if (!l)
            return fail(p, (int)i, "a string must be valid UTF-8");
        memcpy(p->scratch + o, p->src + i, l);
        o += l;
        i += l;
    }
    p->scratch[o] = '\0';
    p->tok.kind = T_STR;
    p->tok.str = p->scratch;
    p->tok.str_len = o;
    p->i = i;
    return 0;
}

/* One segment of a path at p->i: an identifier, digits (not first) or `quoted`. */
static int lex_segment(parser_t *p, int first)
{
    if (p->tok.n_segs == BS_EXPR_MAX_SEGS)
        return fail(p, (int)p->i, "a field path has more than %d segments", BS_EXPR_MAX_SEGS);
    seg_t *sg = &p->tok.segs[p->tok.n_segs++];
    size_t i = p->i;
    if (peekc(p, i) == '`') {
        size_t s = ++i;
        while (i < p->len && p->src[i] != '`') {
            unsigned char c = (unsigned char)p->src[i];
            if (c < 0x20 || c == 0x7F)
                return fail(p, (int)i, "a control character in a quoted field name");
            size_t l = bs_utf8_len((const unsigned char *)p->src + i, p->len - i);
            if (!l)
                return fail(p, (int)i, "a field name must be valid UTF-8");
            i += l;
        }
        if (i >= p->len)
            return fail(p, (int)s - 1, "unterminated quoted field name");
        if (i == s)
            return fail(p, (int)s - 1, "an empty quoted field name");
        *sg = (seg_t){p->src + s, i - s, 1};
        p->i = i + 1;
        return 0;
    }
    int c = peekc(p, i);
    if (!(first ? is_ident_start(c) : is_ident_char(c)))
        return fail(p, (int)i, "expected a field name after '.'");
    size_t s = i;
    while (i < p->len && is_ident_char((unsigned char)p->src[i]))
        i++;
    *sg = (seg_t){p->src + s, i - s, 0};
    p->i = i;
    return 0;
}

static int seg_is(const seg_t *sg, const char *word)
{
    return !sg->quoted && sg->len == strlen(word) && memcmp(sg->s, word, sg->len) == 0;
}

static int lex_path(parser_t *p)
{
    p->tok.n_segs = 0;
    if (lex_segment(p, 1))
        return -1;
    while (peekc(p, p->i) == '.') {
        p->i++;
        if (lex_segment(p, 0))
            return -1;
    }
    p->tok.kind = T_PATH;
    p->tok.call = 0;
    if (p->tok.n_segs == 1) {
        const seg_t *sg = &p->tok.segs[0];
        if (seg_is(sg, "true"))
            p->tok.kind = T_TRUE;
        else if (seg_is(sg, "false"))
            p->tok.kind = T_FALSE;
        else if (seg_is(sg, "null"))
            p->tok.kind = T_NULL;
        else if (seg_is(sg, "in"))
            p->tok.kind = T_IN;
        else if (!sg->quoted) {
            size_t j = p->i;
            while (j < p->len && (p->src[j] == ' ' || p->src[j] == '\t' || p->src[j] == '\n' ||
                                  p->src[j] == '\r'))
                j++;
            p->tok.call = peekc(p, j) == '(';
        }
    }
    return 0;
}

/* Reads the next token into p->tok. */
static int next(parser_t *p)
{
    while (p->i < p->len && (p->src[p->i] == ' ' || p->src[p->i] == '\t' || p->src[p->i] == '\n' ||
                             p->src[p->i] == '\r'))
        p->i++;
    p->tok.pos = (int)p->i;
    if (p->i >= p->len) {
        p->tok.kind = T_EOF;
        p->tok.end = p->tok.pos;
        return 0;
    }
    int c = (unsigned char)p->src[p->i], c2 = peekc(p, p->i + 1);
    int rc = 0;
    tok_kind_t k = T_EOF;
    size_t w = 1;
    switch (c) {
    case '(':
        k = T_LP;
        break;
    case ')':
        k = T_RP;
        break;
    case '[':
        k = T_LB;
        break;
    case ']':
        k = T_RB;
        break;
    case ',':
        k = T_COMMA;
        break;
    case '+':
        k = T_PLUS;
        break;
    case '-':
        k = T_MINUS;
        break;
    case '*':
        k = T_STAR;
        break;
    case '/':
        k = T_SLASH;
        break;
    case '%':
        k = T_PCT;
        break;
    case '=':
        if (c2 != '=')
            return fail(p, p->tok.pos, "'=' is not an operator: compare with '=='");
        k = T_EQ;
        w = 2;
        break;
    case '!':
        k = c2 == '=' ? T_NE : T_NOT;
        w = c2 == '=' ? 2 : 1;
        break;
    case '<':
        k = c2 == '=' ? T_LE : T_LT;
        w = c2 == '=' ? 2 : 1;
        break;
    case '>':
        k = c2 == '=' ? T_GE : T_GT;
        w = c2 == '=' ? 2 : 1;
        break;
    case '&':
        if (c2 != '&')
            return fail(p, p->tok.pos, "'&' is not an operator: use '&&'");
        k = T_AND;
        w = 2;
        break;
    case '|':
        if (c2 != '|')
            return fail(p, p->tok.pos, "'|' is not an operator: use '||'");
        k = T_OR;
        w = 2;
        break;
    case '"':
    case '\'':
        rc = lex_string(p);
        p->tok.end = (int)p->i;
        return rc;
    default:
        if (c >= '0' && c <= '9')
            rc = lex_number(p);
        else if (is_ident_start(c) || c == '`')
            rc = lex_path(p);
        else if (c == '.')
            return fail(p, p->tok.pos, "a number needs a digit before '.'");
        else if (c >= 0x21 && c < 0x7F)
            return fail(p, p->tok.pos, "unexpected character '%c'", c);
        else
            return fail(p, p->tok.pos, "unexpected byte 0x%02X", (unsigned)c);
        p->tok.end = (int)p->i;
        return rc;
    }
    p->tok.kind = k;
    p->i += w;
    p->tok.end = (int)p->i;
    return 0;
}

static const char *tok_text(const parser_t *p, char *buf, size_t n)
{
    if (p->tok.kind == T_EOF)
        return "the end of the expression";
    int l = p->tok.end - p->tok.pos;
    snprintf(buf, n, "'%.*s'", l > 32 ? 32 : l, p->src + p->tok.pos);
    return buf;
}

static int expect(parser_t *p, tok_kind_t k, const char *what)
{
    if (p->tok.kind != k) {
        char b[48];
        return fail(p, p->tok.pos, "expected %s, got %s", what, tok_text(p, b, sizeof b));
    }
    return next(p);
}

/* ---- program building ------------------------------------------------------------------ */

static int grow(void **arr, int *cap, int need, size_t elem)
{
    if (need <= *cap)
        return 0;
    int nc = *cap ? *cap * 2 : 16;
    while (nc < need)
        nc *= 2;
    void *n = realloc(*arr, (size_t)nc * elem);
    if (!n)
        return -1;
    *arr = n;
    *cap = nc;
    return 0;
}

/* Appends an instruction whose stack effect is delta; returns its index or -1. */
static int emit(parser_t *p, bs__expr_op_t op, int fn, int arg, int pos, int delta)
{
    bs_expr_t *e = p->e;
    if (e->n_code >= BS_EXPR_MAX_CODE)
        return fail(p, pos, "the expression has more than %d operations", BS_EXPR_MAX_CODE);
    if (grow((void **)&e->code, &p->cap_code, e->n_code + 1, sizeof *e->code)) {
        bs_err_setf(p->err, BS_ENOMEM, "expr", "out of memory compiling an expression");
        p->failed = 1;
        return -1;
    }
    e->code[e->n_code] =
        (bs__expr_ins_t){.op = (uint8_t)op, .fn = (uint8_t)fn, .arg = arg, .pos = pos};
    p->height += delta;
    if (p->height > e->max_stack) {
        e->max_stack = p->height;
        if (p->height > BS_EXPR_MAX_STACK)
            return fail(p, pos, "the expression needs more than %d evaluation slots",
                        BS_EXPR_MAX_STACK);
    }
    return e->n_code++;
}

static int oom(parser_t *p)
{
    if (!p->failed)
        bs_err_setf(p->err, BS_ENOMEM, "expr", "out of memory compiling an expression");
    p->failed = 1;
    return -1;
}

/* Adds a constant; strings are copied. Returns its index or -1. */
static int add_const(parser_t *p, bs_expr_value_t v)
{
    bs_expr_t *e = p->e;
    if (grow((void **)&e->consts, &p->cap_consts, e->n_consts + 1, sizeof *e->consts))
        return oom(p);
    if (v.type == BS_EXPR_STR) {
        char *s = malloc(v.len + 1);
        if (!s)
            return oom(p);
        memcpy(s, v.s, v.len);
        s[v.len] = '\0';
        v.s = s;
    }
    e->consts[e->n_consts] = v;
    return e->n_consts++;
}

static int push_const(parser_t *p, bs_expr_value_t v, int pos)
{
    int k = add_const(p, v);
    if (k < 0)
        return -1;
    return emit(p, BS__EXPR_OP_CONST, 0, k, pos, 1) < 0 ? -1 : 0;
}

static int seg_plain(const seg_t *sg, int first)
{
    if (sg->len == 0 ||
        !(first ? is_ident_start((unsigned char)sg->s[0]) : is_ident_char((unsigned char)sg->s[0])))
        return 0;
    for (size_t k = 0; k < sg->len; k++)
        if (!is_ident_char((unsigned char)sg->s[k]))
            return 0;
    if (first &&
        (seg_is(&(seg_t){sg->s, sg->len, 0}, "true") ||
         seg_is(&(seg_t){sg->s, sg->len, 0}, "false") ||
         seg_is(&(seg_t){sg->s, sg->len, 0}, "null") || seg_is(&(seg_t){sg->s, sg->len, 0}, "in")))
        return 0;
    return 1;
}

/* The field of the current T_PATH token: found or added. Returns its index or -1. */
static int field_ref(parser_t *p, int *mask)
{
    bs_buf_t name;
    bs_buf_init(&name);
    for (int k = 0; k < p->tok.n_segs; k++) {
        const seg_t *sg = &p->tok.segs[k];
        if (k)
            bs_buf_putc(&name, '.');
        int plain = seg_plain(sg, k == 0);
        if (!plain)
            bs_buf_putc(&name, '`');
        bs_buf_append(&name, sg->s, sg->len);
        if (!plain)
            bs_buf_putc(&name, '`');
    }
    if (name.oom) {
        bs_buf_free(&name);
        return oom(p);
    }
    bs_expr_t *e = p->e;
    int type_mask = M_ANY, declared = 0;
    if (p->opts && p->opts->vars) {
        for (int v = 0; v < p->opts->n_vars; v++) {
            if (p->opts->vars[v].name && strcmp(p->opts->vars[v].name, name.data) == 0) {
                bs_expr_type_t t = p->opts->vars[v].type;
                type_mask = t == BS_EXPR_BOOL   ? M_BOOL | M_NULL
                            : t == BS_EXPR_NUM  ? M_NUM | M_NULL
                            : t == BS_EXPR_STR  ? M_STR | M_NULL
                            : t == BS_EXPR_NULL ? M_NULL
                                                : M_ANY;
                declared = 1;
                break;
            }
        }
    }
    if (!declared && p->opts && !p->opts->allow_undeclared) {
        fail(p, p->tok.pos, "unknown field '%.64s'", name.data);
        bs_buf_free(&name);
        return -1;
    }
    *mask = type_mask;
    for (int f = 0; f < e->n_fields; f++) {
        if (strcmp(e->fields[f].name, name.data) == 0) {
            bs_buf_free(&name);
            return f;
        }
    }
    if (e->n_fields >= BS_EXPR_MAX_FIELDS) {
        bs_buf_free(&name);
        return fail(p, p->tok.pos, "the expression reads more than %d fields", BS_EXPR_MAX_FIELDS);
    }
    if (grow((void **)&e->fields, &p->cap_fields, e->n_fields + 1, sizeof *e->fields)) {
        bs_buf_free(&name);
        return oom(p);
    }
    bs__expr_field_t *fd = &e->fields[e->n_fields];
    memset(fd, 0, sizeof *fd);
    size_t text = 0;
    for (int k = 0; k < p->tok.n_segs; k++)
        text += p->tok.segs[k].len + 1;
    fd->seg_text = malloc(text);
    if (!fd->seg_text) {
        bs_buf_free(&name);
        return oom(p);
    }
    fd->name = bs_buf_take(&name);
    if (!fd->name) {
        free(fd->seg_text);
        return oom(p);
    }
    fd->n_segs = p->tok.n_segs;
    fd->pos = p->tok.pos;
    char *o = fd->seg_text;
    for (int k = 0; k < p->tok.n_segs; k++) {
        const seg_t *sg = &p->tok.segs[k];
        memcpy(o, sg->s, sg->len);
        o[sg->len] = '\0';
        long idx = -1;
        if (sg->len > 0 && sg->len <= 9) {
            idx = 0;
            for (size_t j = 0; j < sg->len; j++) {
                if (sg->s[j] < '0' || sg->s[j] > '9') {
                    idx = -1;
                    break;
                }
                idx = idx * 10 + (sg->s[j] - '0');
            }
        }
        fd->segs[k] = (bs__expr_seg_t){o, sg->len, idx};
        o += sg->len + 1;
    }
    return e->n_fields++;
}

/* ---- parser ---------------------------------------------------------------------------- */

static int parse_expr(parser_t *p, int min_prec, ty_t *out);
static int parse_unary(parser_t *p, ty_t *out);

/* A literal list `[a, b, ...]` at the current '[' into a new list. numeric: numbers only, in
 * ascending order (bucketize's edges). Returns the list index or -1. */
static int parse_list(parser_t *p, int numeric, const char *what)
{
    bs_expr_t *e = p->e;
    if (p->tok.kind != T_LB) {
        char b[48];
        return fail(p, p->tok.pos, "%s needs a literal list [a, b, ...], got %s", what,
                    tok_text(p, b, sizeof b));
    }
    int lb = p->tok.pos;
    if (next(p))
        return -1;
    int first = e->n_consts, n = 0;
    if (p->tok.kind != T_RB) {
        for (;;) {
            if (n == BS_EXPR_MAX_LIST)
                return fail(p, p->tok.pos, "a list has more than %d elements", BS_EXPR_MAX_LIST);
            int pos = p->tok.pos, neg = 0;
            bs_expr_value_t v = {0};
            if (p->tok.kind == T_MINUS) {
                neg = 1;
                if (next(p))
                    return -1;
            }
            switch (p->tok.kind) {
            case T_NUM:
                v.type = BS_EXPR_NUM;
                v.num = neg ? -p->tok.num : p->tok.num;
                break;
            case T_STR:
                v.type = BS_EXPR_STR;
                v.s = p->tok.str;
                v.len = p->tok.str_len;
                break;
            case T_TRUE:
            case T_FALSE:
                v.type = BS_EXPR_BOOL;
                v.b = p->tok.kind == T_TRUE;
                break;
            case T_NULL:
                v.type = BS_EXPR_NULL;
                break;
            default: {
                char b[48];
                return fail(p, p->tok.pos,
                            "a list holds literals (numbers, strings, true, "
                            "false, null), got %s",
                            tok_text(p, b, sizeof b));
            }
            }
            if (neg && v.type != BS_EXPR_NUM)
                return fail(p, pos, "'-' needs a number");
            if (numeric && v.type != BS_EXPR_NUM)
                return fail(p, pos, "%s edges must be numbers", what);
            if (numeric && n > 0 && v.num < e->consts[e->n_consts - 1].num)
                return fail(p, pos, "%s edges must be in ascending order", what);
            if (add_const(p, v) < 0)
                return -1;
            n++;
            if (next(p))
                return -1;
            if (p->tok.kind == T_COMMA) {
                if (next(p))
                    return -1;
                continue;
            }
            break;
        }
    }
    if (p->tok.kind != T_RB) {
        char b[48];
        return fail(p, p->tok.pos, "expected ',' or ']' in the list opened at %d, got %s", lb + 1,
                    tok_text(p, b, sizeof b));
    }
    if (numeric && n == 0)
        return fail(p, lb, "%s needs at least one edge", what);
    if (e->n_lists >= 65535)
        return fail(p, lb, "too many lists");
    if (grow((void **)&e->lists, &p->cap_lists, e->n_lists + 1, sizeof *e->lists))
        return oom(p);
    e->lists[e->n_lists] = (bs__expr_list_t){first, n};
    if (next(p))
        return -1;
    return e->n_lists++;
}

typedef struct {
    const char *name;
    bs__expr_fn_t fn;
    int min_args, max_args;
    int accepts[3]; /* per argument; variadic functions use accepts[0] for all */
} fn_def_t;

static const fn_def_t fns[] = {
    {"log", BS__EXPR_FN_LOG, 1, 1, {M_NUM}},
    {"exp", BS__EXPR_FN_EXP, 1, 1, {M_NUM}},
    {"sqrt", BS__EXPR_FN_SQRT, 1, 1, {M_NUM}},
    {"abs", BS__EXPR_FN_ABS, 1, 1, {M_NUM}},
    {"min", BS__EXPR_FN_MIN, 1, BS_EXPR_MAX_ARGS, {M_NUM}},
    {"max", BS__EXPR_FN_MAX, 1, BS_EXPR_MAX_ARGS, {M_NUM}},
    {"clamp", BS__EXPR_FN_CLAMP, 3, 3, {M_NUM, M_NUM, M_NUM}},
    {"coalesce", BS__EXPR_FN_COALESCE, 1, BS_EXPR_MAX_ARGS, {M_ANY}},
    {"if", BS__EXPR_FN_IF, 3, 3, {M_BOOL, M_ANY, M_ANY}},
    {"bucketize", BS__EXPR_FN_BUCKETIZE, 2, 2, {M_NUM}},
    {"lower", BS__EXPR_FN_LOWER, 1, 1, {M_STR}},
    {"len", BS__EXPR_FN_LEN, 1, 1, {M_STR}},
    {"hash_bucket", BS__EXPR_FN_HASH_BUCKET, 2, 2, {M_STR | M_NUM, M_NUM}},
    {"hour_of_day", BS__EXPR_FN_HOUR_OF_DAY, 1, 1, {M_NUM | M_STR}},
    {"day_of_week", BS__EXPR_FN_DAY_OF_WEEK, 1, 1, {M_NUM | M_STR}},
};

static int args_error(parser_t *p, const fn_def_t *f, int pos, int got)
{
    if (f->min_args == f->max_args)
        return fail(p, pos, "%s() takes %d argument%s, got %d", f->name, f->min_args,
                    f->min_args == 1 ? "" : "s", got);
    if (got < f->min_args)
        return fail(p, pos, "%s() takes at least %d argument%s, got %d", f->name, f->min_args,
                    f->min_args == 1 ? "" : "s", got);
    return fail(p, pos, "%s() takes at most %d arguments", f->name, f->max_args);
}

/* A call at the current T_PATH token (a plain identifier followed by '('). */
static int parse_call(parser_t *p, ty_t *out)
{
    const fn_def_t *f = NULL;
    const seg_t *sg = &p->tok.segs[0];
    for (size_t k = 0; k < sizeof fns / sizeof fns[0]; k++)
        if (seg_is(sg, fns[k].name))
            f = &fns[k];
    int pos = p->tok.pos;
    if (!f)
        return fail(p, pos, "unknown function '%.*s'", (int)(sg->len > 64 ? 64 : sg->len), sg->s);
    char what[32];
    snprintf(what, sizeof what, "%s()", f->name);
    if (next(p) || expect(p, T_LP, "'('"))
        return -1;
    int argc = 0, res = 0, nonnull = 0, base = p->height;
    int jumps[BS_EXPR_MAX_ARGS];
    int n_jumps = 0, jfalse = -1, jmp = -1, list = -1;
    if (p->tok.kind != T_RP) {
        for (;;) {
            if (argc == f->max_args)
                return args_error(p, f, pos, argc + 1);
            ty_t a;
            int apos = p->tok.pos;
            if (f->fn == BS__EXPR_FN_BUCKETIZE && argc == 1) {
                list = parse_list(p, 1, "bucketize()");
                if (list < 0)
                    return -1;
                argc++;
            } else {
                if (parse_expr(p, 0, &a))
                    return -1;
                int acc = f->accepts[f->max_args > 3 ? 0 : argc];
                if (check_operand(p, a, acc, apos, what))
                    return -1;
                if (f->fn == BS__EXPR_FN_HASH_BUCKET && argc == 1 && p->e->n_code > 0 &&
                    p->e->code[p->e->n_code - 1].op == BS__EXPR_OP_CONST &&
                    p->e->code[p->e->n_code - 1].pos == apos) {
                    const bs_expr_value_t *c = &p->e->consts[p->e->code[p->e->n_code - 1].arg];
                    if (c->type == BS_EXPR_NUM &&
                        (c->num < 1 || c->num > 9007199254740992.0 || c->num != floor(c->num)))
                        return fail(p, apos,
                                    "hash_bucket() needs a whole number of buckets "
                                    "from 1 to 2^53, got %g",
                                    c->num);
                }
                argc++;
                if (f->fn == BS__EXPR_FN_IF) {
                    if (argc == 1) {
                        jfalse = emit(p, BS__EXPR_OP_JFALSE, 0, 0, apos, -1);
                        if (jfalse < 0)
                            return -1;
                    } else if (argc == 2) {
                        res |= a.mask;
                        jmp = emit(p, BS__EXPR_OP_JMP, 0, 0, apos, -1);
                        if (jmp < 0)
                            return -1;
                        p->e->code[jfalse].arg = p->e->n_code;
                    } else {
                        res |= a.mask;
                        p->e->code[jmp].arg = p->e->n_code;
                    }
                } else if (f->fn == BS__EXPR_FN_COALESCE) {
                    res |= a.mask;
                    if (!(a.mask & M_NULL))
                        nonnull = 1;
                }
            }
            if (p->tok.kind != T_COMMA)
                break;
            if (f->fn == BS__EXPR_FN_COALESCE) {
                int j = emit(p, BS__EXPR_OP_JNNULL, 0, 0, pos, -1);
                if (j < 0)
                    return -1;
                jumps[n_jumps++] = j;
            }
            if (next(p))
                return -1;
        }
    }
    if (p->tok.kind != T_RP) {
        char b[48];
        return fail(p, p->tok.pos, "expected ',' or ')' in the call of %s, got %s", what,
                    tok_text(p, b, sizeof b));
    }
    if (argc < f->min_args)
        return args_error(p, f, pos, argc);
    if (next(p))
        return -1;
    switch (f->fn) {
    case BS__EXPR_FN_IF:
        out->mask = res ? res : M_NULL;
        break;
    case BS__EXPR_FN_COALESCE:
        for (int k = 0; k < n_jumps; k++)
            p->e->code[jumps[k]].arg = p->e->n_code;
        out->mask = nonnull ? (res & ~M_NULL) : res;
        if (!out->mask)
            out->mask = M_NULL;
        break;
    case BS__EXPR_FN_BUCKETIZE: {
        out->mask = M_NUM | M_NULL;
        int ins = emit(p, BS__EXPR_OP_CALL, f->fn, 1, pos, 0);
        if (ins < 0)
            return -1;
        p->e->code[ins].list = (uint16_t)list;
        break;
    }
    case BS__EXPR_FN_LOWER:
        out->mask = M_STR | M_NULL;
        if (emit(p, BS__EXPR_OP_CALL, f->fn, argc, pos, 1 - argc) < 0)
            return -1;
        break;
    default:
        out->mask = M_NUM | M_NULL;
        if (emit(p, BS__EXPR_OP_CALL, f->fn, argc, pos, 1 - argc) < 0)
            return -1;
        break;
    }
    out->field = -1;
    if (p->height != base + 1)
        return fail(p, pos, "internal: stack height %d after %s", p->height - base, what);
    return 0;
}

static int parse_primary(parser_t *p, ty_t *out)
{
    int pos = p->tok.pos;
    out->field = -1;
    switch (p->tok.kind) {
    case T_NUM:
        out->mask = M_NUM;
        if (push_const(p, (bs_expr_value_t){.type = BS_EXPR_NUM, .num = p->tok.num}, pos))
            return -1;
        return next(p);
    case T_STR:
        out->mask = M_STR;
        if (push_const(
                p, (bs_expr_value_t){.type = BS_EXPR_STR, .s = p->tok.str, .len = p->tok.str_len},
                pos))
            return -1;
        return next(p);
    case T_TRUE:
    case T_FALSE:
        out->mask = M_BOOL;
        if (push_const(p, (bs_expr_value_t){.type = BS_EXPR_BOOL, .b = p->tok.kind == T_TRUE}, pos))
            return -1;
        return next(p);
    case T_NULL:
        out->mask = M_NULL;
        if (push_const(p, (bs_expr_value_t){.type = BS_EXPR_NULL}, pos))
            return -1;
        return next(p);
    case T_LP: {
        if (p->depth >= BS_EXPR_MAX_DEPTH)
            return fail(p, pos, "the expression nests deeper than %d levels", BS_EXPR_MAX_DEPTH);
        if (next(p) || parse_expr(p, 0, out))
            return -1;
        if (p->tok.kind != T_RP) {
            char b[48];
            return fail(p, p->tok.pos, "expected ')' to close the '(' at %d, got %s", pos + 1,
                        tok_text(p, b, sizeof b));
        }
        out->field = -1;
        return next(p);
    }
    case T_PATH: {
        if (p->tok.call)
            return parse_call(p, out);
        int f = field_ref(p, &out->mask);
        if (f < 0)
            return -1;
        out->field = f;
        if (emit(p, BS__EXPR_OP_FIELD, 0, f, pos, 1) < 0)
            return -1;
        return next(p);
    }
    case T_LB:
        return fail(p, pos, "a list may only follow 'in' or be the edges of bucketize()");
    case T_EOF:
        return fail(p, pos, "unexpected end of the expression");
    default: {
        char b[48];
        return fail(p, pos, "expected a value, got %s", tok_text(p, b, sizeof b));
    }
    }
}

/* Counts a level of nesting only for a unary operator: parentheses, call arguments and
 * right operands count in parse_expr. */
static int parse_unary(parser_t *p, ty_t *out)
{
    int pos = p->tok.pos;
    if (p->tok.kind != T_MINUS && p->tok.kind != T_NOT)
        return parse_primary(p, out);
    if (++p->depth > BS_EXPR_MAX_DEPTH)
        return fail(p, p->tok.pos, "the expression nests deeper than %d levels", BS_EXPR_MAX_DEPTH);
    if (p->tok.kind == T_MINUS) {
        int start = p->e->n_code;
        ty_t a;
        if (next(p) || parse_unary(p, &a) || check_operand(p, a, M_NUM, pos, "'-'"))
            return -1;
        bs__expr_ins_t *last = &p->e->code[p->e->n_code - 1];
        if (p->e->n_code == start + 1 && last->op == BS__EXPR_OP_CONST &&
            p->e->consts[last->arg].type == BS_EXPR_NUM) {
            p->e->consts[last->arg].num = -p->e->consts[last->arg].num; /* a literal -1 */
            last->pos = pos;
            out->mask = M_NUM;
        } else {
            if (emit(p, BS__EXPR_OP_NEG, 0, 0, pos, 0) < 0)
                return -1;
            out->mask = a.mask == M_NULL ? M_NULL : M_NUM | M_NULL;
        }
        out->field = -1;
    } else {
        ty_t a;
        if (next(p) || parse_unary(p, &a) || check_operand(p, a, M_BOOL, pos, "'!'"))
            return -1;
        if (emit(p, BS__EXPR_OP_NOT, 0, 0, pos, 0) < 0)
            return -1;
        out->mask = M_BOOL;
        out->field = -1;
    }
    p->depth--;
    return 0;
}

typedef struct {
    int prec;
    bs__expr_op_t op;
    const char *name;
} binop_t;

static binop_t binop(tok_kind_t k)
{
    switch (k) {
    case T_OR:
        return (binop_t){1, BS__EXPR_OP_OR, "'||'"};
    case T_AND:
        return (binop_t){2, BS__EXPR_OP_AND, "'&&'"};
    case T_EQ:
        return (binop_t){3, BS__EXPR_OP_EQ, "'=='"};
    case T_NE:
        return (binop_t){3, BS__EXPR_OP_NE, "'!='"};
    case T_LT:
        return (binop_t){3, BS__EXPR_OP_LT, "'<'"};
    case T_LE:
        return (binop_t){3, BS__EXPR_OP_LE, "'<='"};
    case T_GT:
        return (binop_t){3, BS__EXPR_OP_GT, "'>'"};
    case T_GE:
        return (binop_t){3, BS__EXPR_OP_GE, "'>='"};
    case T_IN:
        return (binop_t){3, BS__EXPR_OP_IN, "'in'"};
    case T_PLUS:
        return (binop_t){4, BS__EXPR_OP_ADD, "'+'"};
    case T_MINUS:
        return (binop_t){4, BS__EXPR_OP_SUB, "'-'"};
    case T_STAR:
        return (binop_t){5, BS__EXPR_OP_MUL, "'*'"};
    case T_SLASH:
        return (binop_t){5, BS__EXPR_OP_DIV, "'/'"};
    case T_PCT:
        return (binop_t){5, BS__EXPR_OP_MOD, "'%'"};
    default:
        return (binop_t){0, BS__EXPR_OP_CONST, NULL};
    }
}

/* Two operands of + or an ordering comparison: each may be a number or a string, and they
 * must be able to be the same one. */
static int check_same(parser_t *p, ty_t l, ty_t r, int pos, const char *name)
{
    if (check_operand(p, l, M_NUM | M_STR, pos, name) ||
        check_operand(p, r, M_NUM | M_STR, pos, name))
        return -1;
    if ((l.mask & ~M_NULL) && (r.mask & ~M_NULL) && !(l.mask & r.mask & (M_NUM | M_STR))) {
        char a[128], b[128];
        describe(p, l, a, sizeof a);
        describe(p, r, b, sizeof b);
        return fail(p, pos, "%s needs two numbers or two strings: %s, %s", name, a, b);
    }
    return 0;
}

static int parse_expr(parser_t *p, int min_prec, ty_t *out)
{
    if (++p->depth > BS_EXPR_MAX_DEPTH)
        return fail(p, p->tok.pos, "the expression nests deeper than %d levels", BS_EXPR_MAX_DEPTH);
    ty_t l;
    if (parse_unary(p, &l))
        return -1;
    int compared = 0;
    for (;;) {
        binop_t b = binop(p->tok.kind);
        if (!b.name || b.prec < min_prec)
            break;
        int pos = p->tok.pos;
        if (b.prec == 3) {
            if (compared)
                return fail(p, pos, "comparisons do not chain: add parentheses");
            compared = 1;
        }
        if (next(p))
            return -1;
        ty_t r;
        if (b.op == BS__EXPR_OP_AND || b.op == BS__EXPR_OP_OR) {
            if (check_operand(p, l, M_BOOL, pos, b.name))
                return -1;
            int j = emit(p, b.op, 0, 0, pos, -1);
            if (j < 0 || parse_expr(p, b.prec + 1, &r) ||
                check_operand(p, r, M_BOOL, pos, b.name) ||
                emit(p, BS__EXPR_OP_TOBOOL, b.op == BS__EXPR_OP_OR, 0, pos, 0) < 0)
                return -1;
            p->e->code[j].arg = p->e->n_code;
            l = (ty_t){M_BOOL, -1};
            continue;
        }
        if (b.op == BS__EXPR_OP_IN) {
            int list = parse_list(p, 0, "'in'");
            if (list < 0)
                return -1;
            int ins = emit(p, BS__EXPR_OP_IN, 0, 0, pos, 0);
            if (ins < 0)
                return -1;
            p->e->code[ins].list = (uint16_t)list;
            l = (ty_t){M_BOOL, -1};
            continue;
        }
        if (parse_expr(p, b.prec + 1, &r))
            return -1;
        int res;
        switch (b.op) {
        case BS__EXPR_OP_ADD:
            if (check_same(p, l, r, pos, b.name))
                return -1;
            res = (l.mask & r.mask & (M_NUM | M_STR)) | M_NULL;
            break;
        case BS__EXPR_OP_SUB:
        case BS__EXPR_OP_MUL:
        case BS__EXPR_OP_DIV:
        case BS__EXPR_OP_MOD:
            if (check_operand(p, l, M_NUM, pos, b.name) || check_operand(p, r, M_NUM, pos, b.name))
                return -1;
            res = (l.mask == M_NULL || r.mask == M_NULL) ? M_NULL : M_NUM | M_NULL;
            break;
        case BS__EXPR_OP_EQ:
        case BS__EXPR_OP_NE:
            if ((l.mask & ~M_NULL) && (r.mask & ~M_NULL) && !(l.mask & r.mask & ~M_NULL)) {
                char a[128], c[128];
                describe(p, l, a, sizeof a);
                describe(p, r, c, sizeof c);
                return fail(p, pos, "%s compares values that are never equal: %s, %s", b.name, a,
                            c);
            }
            res = M_BOOL;
            break;
        default: /* < <= > >= */
            if (check_same(p, l, r, pos, b.name))
                return -1;
            res = (l.mask == M_NULL || r.mask == M_NULL) ? M_NULL : M_BOOL | M_NULL;
            break;
        }
        if (emit(p, b.op, 0, 0, pos, -1) < 0)
            return -1;
        l = (ty_t){res, -1};
    }
    *out = l;
    p->depth--;
    return 0;
}

/* ---- public ---------------------------------------------------------------------------- */

static const char *type_name(bs_expr_type_t t)
{
    switch (t) {
    case BS_EXPR_NULL:
        return "null";
    case BS_EXPR_BOOL:
        return "a boolean";
    case BS_EXPR_NUM:
        return "a number";
    case BS_EXPR_STR:
        return "a string";
    default:
        return "any value";
    }
}

static bs_expr_type_t mask_type(int m)
{
    switch (m & ~M_NULL) {
    case 0:
        return BS_EXPR_NULL;
    case M_BOOL:
        return BS_EXPR_BOOL;
    case M_NUM:
        return BS_EXPR_NUM;
    case M_STR:
        return BS_EXPR_STR;
    default:
        return BS_EXPR_ANY;
    }
}

bs_expr_t *bs_expr_compile(const char *src, size_t len, const bs_expr_opts_t *opts, int *pos,
                           bs_err_t *err)
{
    if (pos)
        *pos = 0;
    if (!src)
        len = 0;
    if (len > BS_EXPR_MAX_SOURCE) {
        bs_err_setf(err, BS_EINVAL, "expr", "at 1:1: the expression is %zu bytes, at most %d", len,
                    BS_EXPR_MAX_SOURCE);
        return NULL;
    }
    bs_expr_t *e = calloc(1, sizeof *e);
    parser_t p = {.src = src ? src : "", .len = len, .e = e, .opts = opts, .err = err};
    if (!e || !(p.scratch = malloc(len + 1)) || !(e->src = malloc(len + 1))) {
        free(p.scratch);
        bs_expr_free(e);
        bs_err_setf(err, BS_ENOMEM, "expr", "out of memory compiling an expression");
        return NULL;
    }
    memcpy(e->src, p.src, len);
    e->src[len] = '\0';
    e->src_len = len;
    p.src = e->src;
    ty_t t = {M_NULL, -1};
    if (next(&p))
        goto fail;
    if (p.tok.kind == T_EOF) {
        fail(&p, p.tok.pos, "the expression is empty");
        goto fail;
    }
    int start = p.tok.pos;
    if (parse_expr(&p, 0, &t))
        goto fail;
    if (p.tok.kind != T_EOF) {
        char b[48];
        fail(&p, p.tok.pos, "unexpected %s after the expression", tok_text(&p, b, sizeof b));
        goto fail;
    }
    bs_expr_type_t want = opts ? opts->want : BS_EXPR_ANY;
    if (want != BS_EXPR_ANY) {
        int wm = want == BS_EXPR_BOOL  ? M_BOOL
                 : want == BS_EXPR_NUM ? M_NUM
                 : want == BS_EXPR_STR ? M_STR
                                       : M_NULL;
        if (!(t.mask & wm)) {
            fail(&p, start, "the expression must yield %s, this one yields %s", type_name(want),
                 mask_name(t.mask));
            goto fail;
        }
    }
    e->result_mask = t.mask;
    {
        size_t a = 0, b = len;
        while (a < b && strchr(" \t\r\n", e->src[a]))
            a++;
        while (b > a && strchr(" \t\r\n", e->src[b - 1]))
            b--;
        e->normalised = malloc(b - a + 1);
        if (!e->normalised) {
            oom(&p);
            goto fail;
        }
        memcpy(e->normalised, e->src + a, b - a);
        e->normalised[b - a] = '\0';
    }
    free(p.scratch);
    return e;
fail:
    if (pos)
        *pos = p.err_pos;
    free(p.scratch);
    bs_expr_free(e);
    return NULL;
}

void bs_expr_free(bs_expr_t *e)
{
    if (!e)
        return;
    for (int k = 0; k < e->n_consts; k++)
        if (e->consts[k].type == BS_EXPR_STR)
            free((char *)e->consts[k].s);
    for (int f = 0; f < e->n_fields; f++) {
        free(e->fields[f].name);
        free(e->fields[f].seg_text);
    }
    free(e->consts);
    free(e->fields);
    free(e->lists);
    free(e->code);
    free(e->src);
    free(e->normalised);
    free(e);
}

bs_expr_type_t bs_expr_result_type(const bs_expr_t *e)
{
    return mask_type(e->result_mask);
}

int bs_expr_n_fields(const bs_expr_t *e)
{
    return e->n_fields;
}

const char *bs_expr_field(const bs_expr_t *e, int i)
{
    return i >= 0 && i < e->n_fields ? e->fields[i].name : NULL;
}

const char *bs_expr_source(const bs_expr_t *e)
{
    return e->normalised;
}
