/* See numparse.h. Clinger, "How to read floating point numbers accurately"
 * (PLDI 1990): when the decimal mantissa and the power of ten are both exact
 * doubles, their product or quotient is correctly rounded. */
#include "base/numparse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const double pow10_exact[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                       1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                       1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

size_t bs_parse_json_number(const char *s, size_t n, double *out)
{
    /* The significant digits go into mant (it wraps beyond 19 digits, and then only
     * the strtod fallback is used) and nd counts them (leading zeros excluded). */
    const char *p = s, *end = s + n;
    int neg = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end || (unsigned)(*p - '0') > 9)
        return 0;
    uint64_t mant = 0;
    int64_t nd = 0, exp10 = 0;
    const char *q = p;
    if (*p == '0') {
        p++;
    } else {
        while (p < end && (unsigned)(*p - '0') <= 9)
            mant = mant * 10 + (unsigned)(*p++ - '0');
        nd = p - q;
    }
    if (p < end && *p == '.') {
        const char *frac = ++p;
        if (mant == 0)
            while (p < end && *p == '0')
                p++; /* leading zeros of the fraction are not significant */
        q = p;
        while (p < end && (unsigned)(*p - '0') <= 9)
            mant = mant * 10 + (unsigned)(*p++ - '0');
        if (p == frac)
            return 0;
        nd += p - q;
        exp10 = -(p - frac);
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        int eneg = 0;
        if (p < end && (*p == '+' || *p == '-'))
            eneg = *p++ == '-';
        if (p >= end || (unsigned)(*p - '0') > 9)
            return 0;
        int64_t e = 0;
        while (p < end && (unsigned)(*p - '0') <= 9) {
            if (e < 100000)
                e = e * 10 + (*p - '0');
            p++;
        }
        exp10 += eneg ? -e : e;
    }
    size_t i = (size_t)(p - s);
    /* mant is exact (at most 19 digits) and an exact double (at most 2^53) */
    if (nd <= 19 && mant <= (1ull << 53) && exp10 >= -22 && exp10 <= 22) {
        double v = (double)mant;
        v = exp10 >= 0 ? v * pow10_exact[exp10] : v / pow10_exact[-exp10];
        *out = neg ? -v : v;
        return i;
    }
    char tmp[64];
    char *buf = i < sizeof tmp ? tmp : malloc(i + 1);
    if (!buf)
        return 0;
    memcpy(buf, s, i);
    buf[i] = '\0';
    *out = strtod(buf, NULL);
    if (buf != tmp)
        free(buf);
    return i;
}
