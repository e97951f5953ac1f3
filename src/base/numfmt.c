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

/* The sig (1..17) significant digits of finite v > 0 as an integer in [10^(sig-1), 10^sig),
 * correctly rounded, and the decimal exponent of the first one; -1 for a subnormal v or
 * outside the exact range. floor(log10 v) is floor((be - 1023) * log10 2) or one more
 * (78913 / 2^18 is log10 2 within 1e-6, so the estimate is off by at most one): the
 * exact exponent is found from the truncated value, then it is rounded. */
static int sig_digits(double v, int sig, uint64_t *n_out, int *d_out)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    int be = (int)((bits >> 52) & 0x7FF);
    if (be == 0 || be == 0x7FF)
        return -1;
    uint64_t m = (bits & ((1ull << 52) - 1)) | (1ull << 52);
    int e = be - 1075;
    int d = ((be - 1023) * 78913) >> 18; /* an arithmetic shift: floor */
    uint64_t n = 0;
    int up = 0, ok = 0;
    for (int tries = 0; tries < 3 && !ok; tries++) {
        if (scaled(m, e, sig - 1 - d, &n, &up) != 0)
            return -1;
        if (n >= pow10u[sig])
            d++;
        else if (n < pow10u[sig - 1])
            d--;
        else
            ok = 1;
    }
    if (!ok)
        return -1;
    n += (uint64_t)up;
    if (n == pow10u[sig]) { /* 9.99…5 rounds up to 10.0…: one more integer digit */
        n = pow10u[sig - 1];
        d++;
    }
    *n_out = n;
    *d_out = d;
    return 0;
}

static const char digit_pairs[] = "00010203040506070809101112131415161718192021222324252627282930"
                                  "31323334353637383940414243444546474849505152535455565758596061"
                                  "62636465666768697071727374757677787980818283848586878889909192"
                                  "93949596979899";

/* Writes n (sig digits, decimal exponent d) in printf's %g style after p; returns the end. */
static char *write_g(char *p, uint64_t n, int d, int sig)
{
    char dig[20];
    int i = sig;
    while (i >= 2) { /* two digits per division */
        unsigned r = (unsigned)(n % 100);
        n /= 100;
        i -= 2;
        memcpy(dig + i, digit_pairs + 2 * r, 2);
    }
    if (i)
        dig[0] = (char)('0' + n);
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
        for (int j = 0; j < ip; j++)
            *p++ = j < nd ? dig[j] : '0';
        if (nd > ip) {
            *p++ = '.';
            memcpy(p, dig + ip, (size_t)(nd - ip));
            p += nd - ip;
        }
    } else {
        *p++ = '0';
        *p++ = '.';
        for (int j = 0; j < -d - 1; j++)
            *p++ = '0';
        memcpy(p, dig, (size_t)nd);
        p += nd;
    }
    *p = '\0';
    return p;
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
    uint64_t n;
    int d;
    if (sig_digits(v, sig, &n, &d) != 0)
        return 0;
    return (int)(write_g(p, n, d, sig) - out);
}

static const double pow10_exact[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                       1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                       1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

int bs_fmt_json_double(double v, char *out)
{
    if (!isfinite(v) || v == 0)
        return bs_fmt_sig(v, 17, out);
    char *p = out;
    double a = fabs(v);
    if (signbit(v))
        *p++ = '-';
    uint64_t n17, n15;
    int d17, d15;
    /* The common case first: when the 15 digits read back as v, the rule below picks them
     * (the 17-digit text is within half an ulp plus half a unit, at most 12 units of its
     * last digit, of those digits followed by 00, so it shows more than 15 digits ending
     * within 15 of 00, or it shows the same digits), and the 17 are not needed. */
    if (sig_digits(a, 15, &n15, &d15) == 0 && 14 - d15 >= 0 && 14 - d15 <= 22 &&
        (double)n15 / pow10_exact[14 - d15] == a)
        return (int)(write_g(p, n15, d15, 15) - out);
    if (sig_digits(a, 17, &n17, &d17) != 0)
        return 0;
    /* bs_jw_double's rule: when the %.17g text shows more than 15 digits (17 - trailing
     * zeros, or all integer digits when %g pads an integer of 16 or 17 digits with zeros)
     * and its last two are within 15 of 00, the %.15g text is used if it reads back as v.
     * Its digits N are an exact double below 2^53 and a power 10^k with 0 <= k <= 22
     * scales them (sig_digits fails otherwise), so N / 10^k is the correctly rounded
     * reading, as a parser computes it (Clinger). */
    unsigned last2 = (unsigned)(n17 % 100);
    int over15 = last2 != 0 || (d17 >= 15 && d17 < 17);
    if (over15 && (last2 <= 15 || last2 >= 85)) {
        if (sig_digits(a, 15, &n15, &d15) != 0 || 14 - d15 < 0 || 14 - d15 > 22)
            return 0; /* undecided here: the caller's snprintf path */
        if ((double)n15 / pow10_exact[14 - d15] == a)
            return (int)(write_g(p, n15, d15, 15) - out);
    }
    return (int)(write_g(p, n17, d17, 17) - out);
}
