/*
 * The one-row predict fast path: `{"inputs": {"name": number, …}}` scanned in
 * one pass straight into the row, without building a JSON tree. It accepts
 * only the plain case — known feature names without escapes, in UTF-8, each once,
 * finite numbers (true/false for bool features) that pass the signature's
 * checks, nothing after the object — and declines anything else (returns 0),
 * so the general cJSON path handles every other shape and produces every
 * error message. Both paths therefore accept the same bodies with the same
 * results; tests/unit/test_fastpath.c compares them.
 */
#include <math.h>
#include <string.h>

#include "base/buf.h"
#include "base/numparse.h"
#include "serving/serving_int.h"

static inline __attribute__((always_inline)) const char *ws(const char *p, const char *end)
{
    /* JSON's whitespace is below '!': one comparison for the usual byte that is not */
    while (p < end && (unsigned char)*p <= ' ' &&
           (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/* Matches a JSON string without escapes, of valid UTF-8 (what bs_json_parse refuses, this
 * declines: a feature name read from an artifact need not be UTF-8); sets its bounds. */
static inline __attribute__((always_inline)) const char *plain_string(const char *p, const char *end,
                                                                  const char **s, size_t *n)
{
    if (p >= end || *p != '"')
        return NULL;
    const char *q = ++p;
    while (q < end && *q != '"') {
        unsigned char c = (unsigned char)*q;
        if (c == '\\' || c < 0x20)
            return NULL;
        if (c < 0x80) {
            q++;
            continue;
        }
        size_t l = bs_utf8_len((const unsigned char *)q, (size_t)(end - q));
        if (!l)
            return NULL;
        q += l;
    }
    if (q >= end)
        return NULL;
    *s = p;
    *n = (size_t)(q - p);
    return q + 1;
}

int bs_serving_parse_fast_ex(const bs_serving_t *s, const bs_model_handle_t *h, const char *body,
                             size_t len, double *row, const char **text, size_t *text_len)
{
    const char *p = body, *end = body + len, *k;
    size_t kn;
    int nf = h->sig.n_features;
    unsigned char seen_small[512];
    if (nf > (int)sizeof seen_small || !body)
        return 0;
    memset(seen_small, 0, (size_t)nf);
    p = ws(p, end);
    if (p >= end || *p++ != '{')
        return 0;
    p = ws(p, end);
    if (!(p = plain_string(p, end, &k, &kn)) || kn != 6 || memcmp(k, "inputs", 6) != 0)
        return 0;
    p = ws(p, end);
    if (p >= end || *p++ != ':')
        return 0;
    p = ws(p, end);
    if (p >= end || *p != '{')
        return 0;
    const char *obj = p++; /* the inputs object's text starts here */
    int plain = 1;         /* every value a plain number (no bool spelled true/false) */
    p = ws(p, end);
    int count = 0;
    int next = 0; /* clients usually send features in schema order: try that one first */
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            int i = -1;
            /* Clients usually send features in schema order: try the next one first, and
             * when its name needs no scan (BS__FAST_NAME_LITERAL), compare the bytes
             * `"name"` in place. */
            if (next < nf && (h->fast[next] & BS__FAST_NAME_LITERAL)) {
                size_t fl = h->name_len[next];
                const char *fn = h->sig.features[next].name;
                if ((size_t)(end - p) > fl + 1 && *p == '"' && p[fl + 1] == '"') {
                    size_t j = 0;
                    while (j < fl && fn[j] == p[1 + j])
                        j++;
                    if (j == fl) {
                        i = next;
                        p += fl + 2;
                    }
                }
            }
            if (i < 0) {
                if (!(p = plain_string(p, end, &k, &kn)))
                    return 0;
                i = bs_model_handle_feature(h, k, kn);
            }
            next = i + 1;
            if (i < 0 || seen_small[i])
                return 0; /* unknown or repeated: the general path decides */
            seen_small[i] = 1;
            count++;
            if (p < end && *p == ':')
                p++; /* the usual compact `"name":value` */
            else {
                p = ws(p, end);
                if (p >= end || *p++ != ':')
                    return 0;
            }
            p = ws(p, end);
            double v;
            plain &= (h->fast[i] & BS__FAST_PLAIN_NUMBER) != 0;
            if (h->fast[i] & BS__FAST_PLAIN_NUMBER) {
                size_t used = bs_parse_json_number(p, (size_t)(end - p), &v);
                if (!used || !isfinite(v))
                    return 0;
                p += used;
            } else {
                const bs_ml_feature_t *f = &h->sig.features[i];
                if (f->type == BS_ML_BOOL && end - p >= 4 && memcmp(p, "true", 4) == 0) {
                    v = 1;
                    p += 4;
                } else if (f->type == BS_ML_BOOL && end - p >= 5 && memcmp(p, "false", 5) == 0) {
                    v = 0;
                    p += 5;
                } else {
                    if (f->type == BS_ML_CATEGORY)
                        return 0;
                    size_t used = bs_parse_json_number(p, (size_t)(end - p), &v);
                    if (!used || !isfinite(v))
                        return 0;
                    p += used;
                    if (f->type != BS_ML_FLOAT &&
                        ((f->type == BS_ML_INT && v != floor(v)) ||
                         (f->type == BS_ML_BOOL && v != 0 && v != 1)))
                        return 0;
                    if ((f->has_min && v < f->min) || (f->has_max && v > f->max))
                        return 0;
                }
            }
            row[i] = v;
            p = ws(p, end);
            if (p < end && *p == ',') {
                p = ws(p + 1, end);
                continue;
            }
            if (p < end && *p == '}') {
                p++;
                break;
            }
            return 0;
        }
    }
    size_t obj_len = (size_t)(p - obj);
    p = ws(p, end);
    if (p >= end || *p++ != '}')
        return 0;
    p = ws(p, end);
    if (p != end)
        return 0;
    if (count < nf) {
        /* Omitted features: defaults, or NaN when the model takes missing values. */
        for (int i = 0; i < nf; i++) {
            if (seen_small[i])
                continue;
            const bs_ml_feature_t *f = &h->sig.features[i];
            if (f->has_default)
                row[i] = f->default_value;
            else if (!f->required && f->accepts_missing)
                row[i] = NAN;
            else
                return 0;
        }
    }
    if (text) {
        /* The text stands for the row when it gave every feature as a number and fits on
         * one line (a log record is one line of JSON). */
        int usable = plain && count == nf && !memchr(obj, '\n', obj_len) &&
                     !memchr(obj, '\r', obj_len);
        *text = usable ? obj : NULL;
        *text_len = usable ? obj_len : 0;
    }
    (void)s;
    return 1;
}

int bs_serving_parse_fast(const bs_serving_t *s, const bs_model_handle_t *h, const char *body,
                          size_t len, double *row)
{
    return bs_serving_parse_fast_ex(s, h, body, len, row, NULL, NULL);
}
