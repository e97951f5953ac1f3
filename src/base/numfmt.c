/* See numfmt.h. v = m * 2^e exactly (m < 2^53); with k = sig - 1 - floor(log10 v),
 * N = round(v * 10^k) = round(m * 5^k * 2^(e + k)) is computed exactly in 128 bits
 * when 0 <= k <= 22 (5^22 < 2^52, so m * 5^k < 2^105) and e + k <= 0: the shift
 * right rounds half to even on the exact remainder, which is what glibc's printf
 * does in the default rounding mode. */
#include "base/numfmt.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

static const uint64_t pow5[23] = {1ull,
                                  5ull,
                                  25ull,
                                  125ull,
                                  625ull,
                                  3125ull,
                                  15625ull,
                                  78125ull,
                                  390625ull,
                                  1953125ull,
                                  9765625ull,
                                  48828125ull,
                                  244140625ull,
                                  1220703125ull,
                                  6103515625ull,
                                  30517578125ull,
                                  152587890625ull,
                                  762939453125ull,
                                  3814697265625ull,
                                  19073486328125ull,
                                  95367431640625ull,
                                  476837158203125ull,
                                  2384185791015625ull};

static const uint64_t pow10u[18] = {1ull,
                                    10ull,
                                    100ull,
                                    1000ull,
                                    10000ull,
                                    100000ull,
                                    1000000ull,
                                    10000000ull,
                                    100000000ull,
                                    1000000000ull,
                                    10000000000ull,
                                    100000000000ull,
                                    1000000000000ull,
                                    10000000000000ull,
                                    100000000000000ull,
                                    1000000000000000ull,
                                    10000000000000000ull,
                                    100000000000000000ull};

/* floor(m * 10^k * 2^e) into *q and whether rounding (half to even) goes up into *up,
 * for 0 <= k <= 22; returns -1 when outside the exact range. */
static int scaled(uint64_t m, int e, int k, uint64_t *q, int *up)
{
    if (k < 0 || k > 22)
        return -1;
    unsigned __int128 x = (unsigned __int128)m * pow5[k];
    int s = e + k;
    *up = 0;
    if (s >= 0) {
        if (s > 20)
            return -1;
        x <<= s;
        if (x > UINT64_MAX)
            return -1;
        *q = (uint64_t)x;
        return 0;
    }
    int r = -s;
    if (r >= 127)
        return -1;
    unsigned __int128 t = x >> r, rem = x - (t << r), half = (unsigned __int128)1 << (r - 1);
    if (t > UINT64_MAX)
        return -1;
    *q = (uint64_t)t;
    *up = rem > half || (rem == half && (t & 1));
    return 0;
}

int bs_fmt_sig(double v, int sig, char *out)
{
    if (!isfinite(v) || sig < 1 || sig > 17)
        return 0;
    char *p = out;
    if (signbit(v)) {
        *p++ = '-';
        v = -v;
    }
    if (v == 0) {
        *p++ = '0';
        *p = '\0';
        return (int)(p - out);
    }
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    int be = (int)((bits >> 52) & 0x7FF);
    if (be == 0)
        return 0; /* subnormal */
    uint64_t m = (bits & ((1ull << 52) - 1)) | (1ull << 52);
    int e = be - 1075;
    int d = (int)floor(log10(v));
    uint64_t n = 0;
    int up = 0, ok = 0;
    /* Find the exact decimal exponent from the truncated value (log10 may be off by
     * one near powers of ten), then round. */
    for (int tries = 0; tries < 3 && !ok; tries++) {
        if (scaled(m, e, sig - 1 - d, &n, &up) != 0)
            return 0;
        if (n >= pow10u[sig])
            d++;
        else if (n < pow10u[sig - 1])
            d--;
        else
            ok = 1;
    }
    if (!ok)
        return 0;
    n += (uint64_t)up;
    if (n == pow10u[sig]) { /* 9.99…5 rounds up to 10.0…: one more integer digit */
        n = pow10u[sig - 1];
        d++;
    }
    char dig[20];
    for (int i = sig - 1; i >= 0; i--) {
        dig[i] = (char)('0' + n % 10);
        n /= 10;
    }
    int nd = sig;
    while (nd > 1 && dig[nd - 1] == '0')
        nd--; /* %g drops trailing zeros */
    if (d < -4 || d >= sig) {
        *p++ = dig[0];
        if (nd > 1) {
            *p++ = '.';
            memcpy(p, dig + 1, (size_t)(nd - 1));
            p += nd - 1;
        }
        *p++ = 'e';
        int x = d;
        *p++ = x < 0 ? '-' : '+';
        if (x < 0)
            x = -x;
        if (x >= 100)
            *p++ = (char)('0' + x / 100);
        *p++ = (char)('0' + x / 10 % 10);
        *p++ = (char)('0' + x % 10);
    } else if (d >= 0) {
        int ip = d + 1; /* integer digits */
        for (int i = 0; i < ip; i++)
            *p++ = i < nd ? dig[i] : '0';
        if (nd > ip) {
            *p++ = '.';
            memcpy(p, dig + ip, (size_t)(nd - ip));
            p += nd - ip;
        }
    } else {
        *p++ = '0';
        *p++ = '.';
        for (int i = 0; i < -d - 1; i++)
            *p++ = '0';
        memcpy(p, dig, (size_t)nd);
        p += nd;
    }
    *p = '\0';
    return (int)(p - out);
}
