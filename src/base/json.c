/* Depth-checked cJSON parsing and typed getters; see json.h. */
#include "base/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

/* One pass outside strings: the nesting depth, and the offset of the first number token
 * that is not valid JSON (or -1). */
static int scan(const char *s, size_t len, long *bad_number)
{
    int depth = 0, max = 0, in_str = 0;
    *bad_number = -1;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > max)
                max = depth;
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == '-' || digit(c)) {
            size_t n = number_len(s + i, len - i);
            if (!n) {
                if (*bad_number < 0)
                    *bad_number = (long)i;
                continue;
            }
            i += n - 1;
        }
    }
    return max;
}

int bs_json_depth(const char *s, size_t len)
{
    long bad;
    return scan(s, len, &bad);
}

cJSON *bs_json_parse(const char *s, size_t len, int max_depth, bs_err_t *err)
{
    if (!s || len == 0) {
        bs_err_set(err, BS_EPARSE, "request body is empty, expected JSON");
        return NULL;
    }
    long bad_number;
    int d = scan(s, len, &bad_number);
    if (max_depth > 0 && d > max_depth) {
        bs_err_set(err, BS_EDEPTH, "JSON nesting depth %d exceeds the limit of %d", d, max_depth);
        return NULL;
    }
    if (bad_number >= 0) {
        bs_err_set(err, BS_EPARSE, "malformed JSON number at byte %ld (no leading zeros, "
                                   "digits on both sides of a decimal point)", bad_number);
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
