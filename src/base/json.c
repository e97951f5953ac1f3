/* Depth-checked cJSON parsing and typed getters; see json.h. */
#include "base/json.h"

#include <stdio.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"

static int digit(char c) { return c >= '0' && c <= '9'; }

/* Length of the RFC 8259 number at p (-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?), or 0
 * when the token there is not one: cJSON (strtod) would take "01", "1.", "-.5" and "1.e3". */
static size_t number_len(const char *p, size_t n)
{
    size_t i = 0;
    if (i < n && p[i] == '-')
        i++;
    if (i < n && p[i] == '0')
        i++;
    else if (i < n && p[i] >= '1' && p[i] <= '9')
        while (i < n && digit(p[i]))
            i++;
    else
        return 0;
    if (i < n && p[i] == '.') {
        if (++i >= n || !digit(p[i]))
            return 0;
        while (i < n && digit(p[i]))
            i++;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-'))
            i++;
        if (i >= n || !digit(p[i]))
            return 0;
        while (i < n && digit(p[i]))
            i++;
    }
    if (i < n && (digit(p[i]) || p[i] == '.' || p[i] == 'e' || p[i] == 'E' || p[i] == '+' ||
                  p[i] == '-'))
        return 0; /* "01", "1.2.3", "1e5e5" */
    return i;
}

/* The pre-scan also checks every string, keys included, for what cJSON would let
 * through or silently change: \u0000 (cJSON keeps C strings, so "evil\u0000suffix"
 * would become "evil"), unpaired UTF-16 surrogates (\ud800), unescaped control
 * characters (RFC 8259 §7) and bytes that are not UTF-8 (RFC 8259 §8.1). The first
 * offence is reported with the path of the value that holds it ("inputs[0].city"), so
 * the 400 names the field; the scan keeps a small stack of the containers it is in. */

#define PATH_FRAMES 32

typedef struct {
    int is_obj;
    int expect_key;  /* object: the next string is a key */
    const char *key; /* object: the current member's key, raw text between the quotes */
    size_t key_len;
    long index; /* array: the current element */
} frame_t;

typedef struct {
    long bad_number; /* offset of the first number token that is not valid JSON, or -1 */
    long bad_string; /* offset of the first string byte refused, or -1 */
    int string_code; /* BS_EPARSE (not JSON) or BS_EINVAL (JSON that basalt refuses) */
    int in_key;      /* the offence is in an object key: field is the object's path */
    int why;         /* an offence_t */
    unsigned bad_byte;
    char field[64];
} scan_t;

typedef enum { OFF_NUL = 1, OFF_SURROGATE, OFF_CONTROL, OFF_UTF8 } offence_t;

static int hexdigit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        return (c | 0x20) - 'a' + 10;
    return -1;
}

/* The code unit of the \uXXXX escape at s (s[0] == '\\'), or -1 when it is not one. */
static long u_escape(const unsigned char *s, size_t n)
{
    if (n < 6 || s[0] != '\\' || s[1] != 'u')
        return -1;
    long v = 0;
    for (int k = 2; k < 6; k++) {
        int h = hexdigit(s[k]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

/* Checks the string whose opening quote is s[0]. Returns its length with both quotes, or
 * n when it is not closed (cJSON then reports the malformed JSON). On the first refused
 * content sets *why, *code, *byte and returns its offset in *at (else *at stays -1). */
static size_t string_check(const unsigned char *s, size_t n, long *at, int *why, int *code,
                           unsigned *byte)
{
    size_t i = 1;
    while (i < n) {
        unsigned c = s[i];
        if (c == '"')
            return i + 1;
        if (c == '\\') {
            long u = u_escape(s + i, n - i);
            if (u < 0) {
                i += 2; /* another escape, or a bad one that cJSON rejects */
                continue;
            }
            int bad = 0;
            size_t step = 6;
            if (u == 0) {
                bad = OFF_NUL;
            } else if (u >= 0xDC00 && u <= 0xDFFF) {
                bad = OFF_SURROGATE;
            } else if (u >= 0xD800 && u <= 0xDBFF) {
                long lo = u_escape(s + i + 6, n - i - 6);
                if (lo >= 0xDC00 && lo <= 0xDFFF)
                    step = 12;
                else
                    bad = OFF_SURROGATE;
            }
            if (bad && *at < 0) {
                *at = (long)i;
                *why = bad;
                *code = BS_EINVAL;
                *byte = (unsigned)u;
            }
            i += step;
            continue;
        }
        if (c >= 0x20 && c < 0x80) {
            i++;
            continue;
        }
        size_t l = c < 0x20 ? 0 : bs_utf8_len(s + i, n - i);
        if (!l) {
            if (*at < 0) {
                *at = (long)i;
                *why = c < 0x20 ? OFF_CONTROL : OFF_UTF8;
                *code = BS_EPARSE;
                *byte = c;
            }
            l = 1;
        }
        i += l;
    }
    return n;
}

/* Appends the path of frames[0..n) ("a.b[2].c") to out. */
static void path_of(const frame_t *frames, int n, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (int k = 0; k < n && o + 1 < cap; k++) {
        const frame_t *f = &frames[k];
        int w;
        if (f->is_obj)
            w = snprintf(out + o, cap - o, "%s%.*s", o ? "." : "", (int)f->key_len,
                         f->key ? f->key : "");
        else
            w = snprintf(out + o, cap - o, "[%ld]", f->index);
        if (w < 0)
            break;
        o += (size_t)w < cap - o ? (size_t)w : cap - o - 1;
    }
}

/* One pass over the text: the nesting depth, the first number token that is not valid
 * JSON and the first string that holds something refused (see above). */
static int scan(const char *text, size_t len, scan_t *st)
{
    const unsigned char *s = (const unsigned char *)text;
    frame_t frames[PATH_FRAMES];
    int depth = 0, max = 0;
    st->bad_number = -1;
    st->bad_string = -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        frame_t *top = depth >= 1 && depth <= PATH_FRAMES ? &frames[depth - 1] : NULL;
        if (c == '"') {
            long at = -1;
            int why = 0, code = 0;
            unsigned byte = 0;
            size_t n = string_check(s + i, len - i, &at, &why, &code, &byte);
            int is_key = top && top->is_obj && top->expect_key;
            if (at >= 0 && st->bad_string < 0) {
                st->bad_string = (long)i + at;
                st->why = why;
                st->string_code = code;
                st->bad_byte = byte;
                st->in_key = is_key;
                /* A key names its object; a value names itself. Frames beyond the
                 * stack are left out of the path. */
                int levels = depth > PATH_FRAMES ? PATH_FRAMES : depth < 0 ? 0 : depth;
                path_of(frames, is_key ? levels - 1 : levels, st->field, sizeof st->field);
            }
            if (is_key) {
                top->key = text + i + 1;
                top->key_len = n >= 2 ? n - 2 : 0;
                top->expect_key = 0;
            }
            i += n - 1;
        } else if (c == '{' || c == '[') {
            if (++depth > max)
                max = depth;
            if (depth >= 1 && depth <= PATH_FRAMES) /* unbalanced closers can make it <= 0 */
                frames[depth - 1] = (frame_t){.is_obj = c == '{', .expect_key = c == '{'};
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ',') {
            if (top && top->is_obj)
                top->expect_key = 1;
            else if (top)
                top->index++;
        } else if (c == '-' || digit((char)c)) {
            size_t n = number_len(text + i, len - i);
            if (!n) {
                if (st->bad_number < 0)
                    st->bad_number = (long)i;
                continue;
            }
            i += n - 1;
        }
    }
    return max;
}

int bs_json_depth(const char *s, size_t len)
{
    scan_t st;
    return scan(s, len, &st);
}

cJSON *bs_json_parse(const char *s, size_t len, int max_depth, bs_err_t *err)
{
    if (!s || len == 0) {
        bs_err_set(err, BS_EPARSE, "request body is empty, expected JSON");
        return NULL;
    }
    scan_t st;
    int d = scan(s, len, &st);
    if (max_depth > 0 && d > max_depth) {
        bs_err_set(err, BS_EDEPTH, "JSON nesting depth %d exceeds the limit of %d", d, max_depth);
        return NULL;
    }
    if (st.bad_number >= 0 && (st.bad_string < 0 || st.bad_number < st.bad_string)) {
        bs_err_set(err, BS_EPARSE, "malformed JSON number at byte %ld (no leading zeros, "
                                   "digits on both sides of a decimal point)", st.bad_number);
        return NULL;
    }
    if (st.bad_string >= 0) {
        char what[96], who[96];
        switch (st.why) {
        case OFF_NUL:
            snprintf(what, sizeof what, "contains \\u0000 (NUL), which is not accepted in strings");
            break;
        case OFF_SURROGATE:
            snprintf(what, sizeof what, "contains the unpaired UTF-16 surrogate \\u%04x",
                     st.bad_byte);
            break;
        case OFF_CONTROL:
            snprintf(what, sizeof what,
                     "contains the unescaped control character 0x%02x (RFC 8259 section 7)",
                     st.bad_byte);
            break;
        default:
            snprintf(what, sizeof what, "is not valid UTF-8 (byte 0x%02x, RFC 8259 section 8.1)",
                     st.bad_byte);
            break;
        }
        if (st.in_key)
            snprintf(who, sizeof who, st.field[0] ? "a key in '%s'" : "an object key%s", st.field);
        else
            snprintf(who, sizeof who, st.field[0] ? "'%s'" : "a string%s", st.field);
        bs_err_setf(err, st.string_code, st.field, "%s %s (at byte %ld)", who, what, st.bad_string);
        return NULL;
    }
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(s, len, &end, 0);
    if (!j) {
        size_t off = end && end >= s ? (size_t)(end - s) : 0;
        bs_err_set(err, BS_EPARSE, "malformed JSON near byte %zu", off);
        return NULL;
    }
    /* Only whitespace may follow the value. */
    for (const char *p = end; p && p < s + len; p++) {
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t' && *p != '\0') {
            cJSON_Delete(j);
            bs_err_set(err, BS_EPARSE, "unexpected data after JSON value at byte %zu",
                       (size_t)(p - s));
            return NULL;
        }
    }
    return j;
}

static void delete_cb(void *p) { cJSON_Delete(p); }

cJSON *bs_json_parse_arena(bs_arena_t *a, const char *s, size_t len, int max_depth, bs_err_t *err)
{
    cJSON *j = bs_json_parse(s, len, max_depth, err);
    if (j && bs_arena_on_cleanup(a, delete_cb, j) < 0) {
        cJSON_Delete(j);
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    return j;
}

static int absent(const char *key, int required, bs_err_t *err)
{
    if (required)
        return bs_err_setf(err, BS_EINVAL, key, "'%s' is required", key);
    return 1;
}

int bs_json_get_str(const cJSON *obj, const char *key, int required, const char **out, bs_err_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v))
        return absent(key, required, err);
    if (!cJSON_IsString(v))
        return bs_err_setf(err, BS_EINVAL, key, "'%s' must be a string", key);
    *out = v->valuestring;
    return 0;
}

int bs_json_get_int(const cJSON *obj, const char *key, int required, int64_t min, int64_t max,
                    int64_t *out, bs_err_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v))
        return absent(key, required, err);
    double d = v->valuedouble;
    if (!cJSON_IsNumber(v) || !isfinite(d) || d != floor(d))
        return bs_err_setf(err, BS_EINVAL, key, "'%s' must be an integer", key);
    if (d < (double)min || d > (double)max)
        return bs_err_setf(err, BS_EINVAL, key, "'%s' is %.17g, must be between %lld and %lld",
                           key, d, (long long)min, (long long)max);
    *out = (int64_t)d;
    return 0;
}

int bs_json_get_double(const cJSON *obj, const char *key, int required, double *out, bs_err_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v))
        return absent(key, required, err);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return bs_err_setf(err, BS_EINVAL, key, "'%s' must be a finite number", key);
    *out = v->valuedouble;
    return 0;
}

int bs_json_get_bool(const cJSON *obj, const char *key, int required, int *out, bs_err_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v))
        return absent(key, required, err);
    if (!cJSON_IsBool(v))
        return bs_err_setf(err, BS_EINVAL, key, "'%s' must be true or false", key);
    *out = cJSON_IsTrue(v);
    return 0;
}

int bs_json_reject_unknown(const cJSON *obj, const char *const *allowed, bs_err_t *err)
{
    for (const cJSON *c = obj ? obj->child : NULL; c; c = c->next) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            if (c->string && strcmp(c->string, *a) == 0)
                ok = 1;
        if (!ok) {
            bs_err_setf(err, BS_EINVAL, c->string ? c->string : "", "unknown field '%.64s'",
                        c->string ? c->string : "");
            return 1;
        }
    }
    return 0;
}
