/*
 * Statistics for monitoring (stats.h): distribution functions, the two A/B tests, sample
 * sizes, classification and regression metrics, quantiles, PSI, and Beta sampling.
 *
 * Special functions are written here from their mathematical definitions:
 * - I_x(a, b), the regularised incomplete beta, by its continued fraction (Abramowitz &
 *   Stegun 26.5.8; Numerical Recipes 3rd ed. §6.4) evaluated with the modified Lentz
 *   method, used where it converges fast (x < (a+1)/(a+b+2)) and through the symmetry
 *   I_x(a,b) = 1 - I_{1-x}(b,a) elsewhere. Its prefactor x^a (1-x)^b / (a B(a,b)) is formed
 *   in logarithms; ln B(a,b) uses Stirling's series with the large parts cancelled
 *   analytically when an argument is large, so the t CDF stays accurate for df ~ 1e6.
 *   The caller gives x and 1-x separately (both exact), so tails keep relative accuracy.
 * - Φ from erfc (libm); Φ⁻¹ by Acklam's rational approximation (relative error ~1e-9)
 *   polished by Halley steps on Φ.
 * - The t CDF as 1/2 I_{ν/(ν+t²)}(ν/2, 1/2) for the tail; its inverse by a safeguarded
 *   Newton iteration on ln(tail) against ln t, bracketed between the normal quantile (a
 *   lower bound) and the power-law tail bound (an upper bound).
 * - Gamma variates by Marsaglia & Tsang (2000), "A simple method for generating gamma
 *   variables", with Gamma(a) = Gamma(a+1) U^{1/a} for a < 1; Beta = X / (X + Y), formed
 *   from logarithms so that small shapes never give 0/0.
 * - xoshiro256** (Blackman & Vigna, 2018) seeded through splitmix64.
 *
 * Everything is reentrant: no static mutable state; lgamma_r, never lgamma (signgam).
 */
#include "monitor/stats.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LN_SQRT_2PI 0.91893853320467274178 /* ln √(2π) */
#define SQRT_2PI 2.50662827463100050242

/* ---- log-gamma and log-beta ------------------------------------------------------- */

static double lgam(double x)
{
    int sign;
    return lgamma_r(x, &sign);
}

/* δ(x) = ln Γ(x) - [(x - 1/2) ln x - x + ln √(2π)], Stirling's series (x >= 10: the
 * terms used reach below 1e-17). */
static double stirling_corr(double x)
{
    /* B_{2k} / (2k (2k-1) x^{2k-1}) for k = 1..8 */
    static const double c[] = {1.0 / 12,   -1.0 / 360,      1.0 / 1260, -1.0 / 1680,
                               1.0 / 1188, -691.0 / 360360, 1.0 / 156,  -3617.0 / 122400};
    double r = 1.0 / x, r2 = r * r, s = 0;
    for (int k = 7; k >= 0; k--)
        s = s * r2 + c[k];
    return s * r;
}

/* ln B(a, b) for a, b > 0. With p = min, q = max, s = p + q:
 *   both >= 10: ln B = ln √(2π) - ½ ln q + (p - ½) ln(p/s) + q ln(q/s) + δ(p) + δ(q) - δ(s)
 *   only q >= 10: ln B = ln Γ(p) + p - p ln s + (q - ½) ln(q/s) + δ(q) - δ(s)
 * (Stirling's formula for the large Γs, with q ln(q/s) written as q log1p(-p/s)). */
static double lbeta(double a, double b)
{
    double p = a < b ? a : b, q = a < b ? b : a, s = p + q;
    if (p >= 10) {
        double corr = stirling_corr(p) + stirling_corr(q) - stirling_corr(s);
        return LN_SQRT_2PI - 0.5 * log(q) + (p - 0.5) * log(p / s) + q * log1p(-p / s) + corr;
    }
    if (q >= 10) {
        double corr = stirling_corr(q) - stirling_corr(s);
        return lgam(p) + p - p * log(s) + (q - 0.5) * log1p(-p / s) + corr;
    }
    return lgam(p) + lgam(q) - lgam(s);
}

/* ---- regularised incomplete beta --------------------------------------------------- */

/* The continued fraction of I_x(a,b) / [x^a (1-x)^b / (a B(a,b))]:
 *   1 / (1 + d1 / (1 + d2 / (1 + ...))),
 *   d_{2m+1} = -(a+m)(a+b+m) x / ((a+2m)(a+2m+1)),  d_{2m} = m(b-m) x / ((a+2m-1)(a+2m)),
 * by the modified Lentz method (tiny guards against zero denominators). */
static double beta_cf(double a, double b, double x)
{
    const double tiny = 1e-300;
    /* g = 1 + d1/(1 + d2/(1 + ...)): Lentz with g_0 = 1, C_0 = 1, D_0 = 0. */
    double g = 1.0, C = 1.0, D = 0.0;
    for (long j = 1; j <= 2000000; j++) {
        long m = j / 2;
        double d;
        if (j & 1)
            d = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        else
            d = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        D = 1.0 + d * D;
        if (fabs(D) < tiny)
            D = tiny;
        C = 1.0 + d / C;
        if (fabs(C) < tiny)
            C = tiny;
        D = 1.0 / D;
        double delta = C * D;
        g *= delta;
        /* Test after the odd steps only: an even step's delta can be 1 to rounding while
         * the odd ones still move g (x near 1 with a >> b). */
        if ((j & 1) && j > 1 && fabs(delta - 1.0) <= DBL_EPSILON)
            break;
    }
    return 1.0 / g;
}

/* ln Γ(s, z), the upper incomplete gamma, for 0 < s <= 5 and z > 0: Legendre's continued
 * fraction Γ(s,z) = e^{-z} z^s / (z+1-s - 1(1-s)/(z+3-s - 2(2-s)/(z+5-s - ...))) (A&S 6.5.31)
 * by Lentz for z > s + 1, else Γ(s) - γ(s,z) with the series
 * γ(s,z) = z^s e^{-z} Σ z^n / (s (s+1) ... (s+n)) (A&S 6.5.29). */
static double log_upper_gamma(double s, double z)
{
    const double tiny = 1e-300;
    if (z > s + 1.0) {
        double f = z + 1.0 - s, C = f, D = 0.0;
        for (int n = 1; n < 100000; n++) {
            double an = -n * (n - s), bn = z + 2.0 * n + 1.0 - s;
            D = bn + an * D;
            if (fabs(D) < tiny)
                D = tiny;
            C = bn + an / C;
            if (fabs(C) < tiny)
                C = tiny;
            D = 1.0 / D;
            double delta = C * D;
            f *= delta;
            if (fabs(delta - 1.0) <= DBL_EPSILON)
                break;
        }
        return -z + s * log(z) - log(f);
    }
    double term = 1.0 / s, sum = term;
    for (int n = 1; n < 100000; n++) {
        term *= z / (s + n);
        sum += term;
        if (term <= sum * DBL_EPSILON)
            break;
    }
    double lower = exp(s * log(z) - z + log(sum));
    return log(exp(lgam(s)) - lower);
}

/* I_x(a, b) for large a, moderate b and x near 1 (u = -ln x <= 1), where the continued
 * fraction loses digits to cancellation (its first denominator 1 + d1 is ~ b/a). With
 * x = e^{-u}:  B(a,b) I_x(a,b) = ∫_u^∞ e^{-av} (1 - e^{-v})^{b-1} dv, and writing
 * (1 - e^{-v})^{b-1} = v^{b-1} h(v)^{b-1}, h(v) = (1 - e^{-v})/v = Σ (-v)^n/(n+1)!,
 * h^{b-1} = Σ c_k v^k, term by term:
 *   I_x(a,b) = Σ_k c_k Γ(b+k, a u) / (a^{b+k} B(a,b)),
 * an asymptotic expansion in 1/a (the expansion of h^{b-1} has radius 2π; Temme, "Special
 * Functions", §11.3.3; DiDonato & Morris, ACM TOMS 708, BGRAT). c_k by J. C. P. Miller's
 * recurrence for a power of a series, c_n = (1/n) Σ_{k=1..n} (b k - n) h_k c_{n-k}; the
 * Γ(b+k, z) by Γ(s+1, z) = s Γ(s, z) + z^s e^{-z}, carried as q_k = Γ(b+k,z)/(a^k Γ(b,z)). */
static double beta_inc_large_a(double a, double b, double lnx)
{
    enum { K = 80 };
    double u = -lnx, z = a * u;
    double lg = log_upper_gamma(b, z);
    double w = exp(b * log(z) - z - lg); /* z^b e^{-z} / Γ(b,z) */
    double h[K], c[K];
    double fact = 1.0;
    for (int n = 0; n < K; n++) {
        fact *= (double)(n + 1); /* (n+1)! */
        h[n] = ((n & 1) ? -1.0 : 1.0) / fact;
    }
    c[0] = 1.0;
    double q = 1.0, zk = 1.0, sum = 1.0; /* q_0 = 1; zk = (z/a)^k */
    int small = 0;
    for (int n = 1; n < K; n++) {
        double acc = 0;
        for (int k = 1; k <= n; k++)
            acc += (b * k - n) * h[k] * c[n - k];
        c[n] = acc / n;
        /* q_n = ((b + n - 1) q_{n-1} + w (z/a)^{n-1}) / a */
        q = ((b + n - 1.0) * q + w * zk) / a;
        zk *= z / a;
        double term = c[n] * q;
        sum += term;
        if (fabs(term) <= DBL_EPSILON * fabs(sum)) {
            if (++small >= 3)
                break;
        } else {
            small = 0;
        }
    }
    return exp(lg - b * log(a) - lbeta(a, b)) * sum;
}

/* I_x(a,b) and its complement 1 - I_x(a,b), from x and y = 1 - x given separately (and
 * their logarithms, which the caller may know more precisely than log(x) of a rounded x).
 * Both results keep relative accuracy: the one computed directly by the fraction is
 * accurate, and the other is 1 minus it only where it is >= ~1/2 anyway. */
static void beta_inc_pair(double a, double b, double x, double y, double lnx, double lny, double *I,
                          double *Ic)
{
    if (x <= 0) {
        *I = 0, *Ic = 1;
        return;
    }
    if (y <= 0) {
        *I = 1, *Ic = 0;
        return;
    }
    int swap = x > (a + 1.0) / (a + b + 2.0);
    if (swap) {
        double t = a;
        a = b, b = t;
        t = x, x = y, y = t;
        t = lnx, lnx = lny, lny = t;
    }
    double v;
    if (a >= 100 && b <= 20 && lnx >= -1) {
        v = beta_inc_large_a(a, b, lnx);
    } else {
        double lpre = a * lnx + b * lny - log(a) - lbeta(a, b);
        v = exp(lpre) * beta_cf(a, b, x);
    }
    if (v > 1)
        v = 1;
    if (swap)
        *Ic = v, *I = 1.0 - v;
    else
        *I = v, *Ic = 1.0 - v;
}

static double ln_of(double x, double one_minus_x)
{
    return x < 0.5 ? log(x) : log1p(-one_minus_x);
}

double bs_stats_beta_inc(double a, double b, double x)
{
    if (!(a > 0) || !(b > 0) || !(x >= 0) || !(x <= 1) || isinf(a) || isinf(b))
        return NAN;
    double y = 1.0 - x, I, Ic;
    beta_inc_pair(a, b, x, y, ln_of(x, y), ln_of(y, x), &I, &Ic);
    return I;
}

/* ---- normal ------------------------------------------------------------------------- */

double bs_stats_norm_cdf(double x)
{
    if (isnan(x))
        return NAN;
    return 0.5 * erfc(-x / M_SQRT2);
}

/* Acklam's rational approximation of Φ⁻¹(p) for p <= 1/2 (relative error < 1.2e-9). */
static double acklam_lower(double p)
{
    static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                               -2.759285104469687e+02, 1.383577518672690e+02,
                               -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                               -1.556989798598866e+02, 6.680131188771972e+01,
                               -1.328068155288572e+01};
    static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                               -2.400758277161838e+00, -2.549732539343734e+00,
                               4.374664141464968e+00,  2.938163982698783e+00};
    static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                               3.754408661907416e+00};
    if (p < 0.02425) {
        double q = sqrt(-2.0 * log(p));
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
               ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
    }
    double q = p - 0.5, r = q * q;
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
           (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0);
}

/* Φ⁻¹(p) for 0 < p <= 1/2: Acklam, then Halley steps x -= u / (1 + x u / 2) with
 * u = (Φ(x) - p) / φ(x) (cubic convergence: one step reaches rounding; a second is a
 * cheap guard). Below 1e-300, φ(x) is subnormal and the approximation stands. */
static double norm_ppf_lower(double p)
{
    double x = acklam_lower(p);
    if (p < 1e-300)
        return x;
    for (int i = 0; i < 2; i++) {
        double e = 0.5 * erfc(-x / M_SQRT2) - p;
        double u = e * SQRT_2PI * exp(0.5 * x * x);
        x = x - u / (1.0 + 0.5 * x * u);
    }
    return x;
}

double bs_stats_norm_ppf(double p)
{
    if (!(p >= 0) || !(p <= 1))
        return NAN;
    if (p == 0)
        return -INFINITY;
    if (p == 1)
        return INFINITY;
    if (p == 0.5)
        return 0.0;
    if (p < 0.5)
        return norm_ppf_lower(p);
    return -norm_ppf_lower(1.0 - p); /* 1 - p is exact for p >= 1/2 (Sterbenz) */
}

/* ---- Student's t -------------------------------------------------------------------- */

/* P(T > t) for t >= 0: ½ I_x(ν/2, ½), x = ν/(ν+t²) = 1/(1+s²), s = t/√ν, with x, 1 - x
 * and their logarithms formed without overflow for huge s. */
static double t_upper_tail(double t, double df)
{
    double s = t / sqrt(df), x, y, lnx, lny;
    if (s < 1) {
        double s2 = s * s;
        x = 1.0 / (1.0 + s2);
        y = s2 / (1.0 + s2);
        lnx = -log1p(s2);
        lny = s > 0 ? 2.0 * log(s) - log1p(s2) : -INFINITY;
    } else {
        double r = 1.0 / s, r2 = r * r;
        x = r2 / (1.0 + r2);
        y = 1.0 / (1.0 + r2);
        lnx = 2.0 * log(r) - log1p(r2);
        lny = -log1p(r2);
    }
    if (s == 0)
        return 0.5;
    double I, Ic;
    if (x == 0) {
        /* s so large that r² underflowed: the fraction is 1 and the prefactor alone
         * remains (x^a (1-x)^b / (a B) with 1 - x = 1). */
        double a = 0.5 * df;
        return 0.5 * exp(a * lnx - log(a) - lbeta(a, 0.5));
    }
    beta_inc_pair(0.5 * df, 0.5, x, y, lnx, lny, &I, &Ic);
    return 0.5 * I;
}

double bs_stats_t_cdf(double t, double df)
{
    if (isnan(t) || !(df > 0))
        return NAN;
    if (isinf(df))
        return bs_stats_norm_cdf(t);
    if (isinf(t))
        return t > 0 ? 1.0 : 0.0;
    double tail = t_upper_tail(fabs(t), df);
    return t < 0 ? tail : 1.0 - tail;
}

/* ln f(t) of the t density: -½ ln ν - ln B(ν/2, ½) - (ν+1)/2 ln(1 + t²/ν). */
static double t_log_pdf(double t, double df)
{
    double s = fabs(t) / sqrt(df);
    double l1p = s < 1 ? log1p(s * s) : 2.0 * log(s) + log1p(1.0 / (s * s));
    return -0.5 * log(df) - lbeta(0.5 * df, 0.5) - 0.5 * (df + 1.0) * l1p;
}

/* t > 0 with P(T > t) = q, 0 < q < 1/2. Newton on g(u) = ln tail(e^u) - ln q, whose slope
 * is -t f(t) / tail(t); kept inside a bracket [lo, hi] that every evaluation narrows, with
 * geometric bisection when a step leaves it. Bounds: the normal quantile z (t has the
 * heavier tail) and the power-law bound √ν (ν B(ν/2,½) q)^{-1/ν} (the density is below
 * its asymptote (t²/ν)^{-(ν+1)/2} / (√ν B)). */
static double t_upper_quantile(double q, double df)
{
    double lnq = log(q);
    double z = -bs_stats_norm_ppf(q);
    double lo = z > 0 ? z : 0;
    double hi = sqrt(df) * exp(-(log(df) + lbeta(0.5 * df, 0.5) + lnq) / df);
    if (!(hi > lo) || !isfinite(hi))
        hi = INFINITY;
    /* Start from the Cornish–Fisher expansion's first term. */
    double t = z + (z * z * z + z) / (4.0 * df);
    if (!(t > lo && t < hi))
        t = isfinite(hi) ? (lo > 0 ? sqrt(lo * hi) : 0.5 * hi) : lo * 2 + 1;
    for (int i = 0; i < 400; i++) {
        double tail = t_upper_tail(t, df);
        double g = log(tail) - lnq;
        if (g == 0)
            return t;
        if (g > 0)
            lo = t; /* tail too big: t too small */
        else
            hi = t;
        double slope = -t * exp(t_log_pdf(t, df)) / tail;
        double tn = t * exp(-g / slope);
        if (!(tn > lo && tn < hi) || !isfinite(tn))
            tn = isfinite(hi) ? (lo > 0 ? sqrt(lo * hi) : 0.5 * hi) : 2.0 * t;
        if (fabs(tn - t) <= 4 * DBL_EPSILON * t)
            return tn;
        if (isfinite(hi) && hi - lo <= 4 * DBL_EPSILON * hi)
            return tn;
        t = tn;
    }
    return t;
}

double bs_stats_t_ppf(double p, double df)
{
    if (!(p >= 0) || !(p <= 1) || !(df > 0))
        return NAN;
    if (p == 0)
        return -INFINITY;
    if (p == 1)
        return INFINITY;
    if (p == 0.5)
        return 0.0;
    if (isinf(df))
        return bs_stats_norm_ppf(p);
    double q = p < 0.5 ? p : 1.0 - p; /* the smaller tail, exact */
    double t;
    if (df == 1) {
        t = 1.0 / tan(M_PI * q); /* Cauchy: F(t) = ½ + atan(t)/π */
    } else if (df == 2) {
        /* F(t) = ½ + t / (2√(2+t²)): t = u √(2/α), u = 1 - 2q, α = 4q(1-q) */
        t = (1.0 - 2.0 * q) * sqrt(2.0 / (4.0 * q * (1.0 - q)));
    } else {
        t = t_upper_quantile(q, df);
    }
    return p < 0.5 ? -t : t;
}

/* ---- tests -------------------------------------------------------------------------- */

static void test_nan(bs_stats_test_t *out)
{
    out->diff = out->ci_low = out->ci_high = out->statistic = out->df = out->p_value = NAN;
}

void bs_stats_two_proportion_ztest(int64_t x_a, int64_t n_a, int64_t x_b, int64_t n_b, double alpha,
                                   bs_stats_test_t *out)
{
    test_nan(out);
    if (n_a <= 0 || n_b <= 0 || x_a < 0 || x_b < 0 || x_a > n_a || x_b > n_b ||
        !(alpha > 0 && alpha < 1))
        return;
    double pa = (double)x_a / (double)n_a, pb = (double)x_b / (double)n_b;
    out->diff = pb - pa;
    double wald = pa * (1 - pa) / (double)n_a + pb * (1 - pb) / (double)n_b;
    double z = -bs_stats_norm_ppf(alpha / 2);
    out->ci_low = out->diff - z * sqrt(wald);
    out->ci_high = out->diff + z * sqrt(wald);
    double pooled = (double)(x_a + x_b) / (double)(n_a + n_b);
    double var = pooled * (1 - pooled) * (1.0 / (double)n_a + 1.0 / (double)n_b);
    if (!(var > 0))
        return;
    out->statistic = out->diff / sqrt(var);
    out->p_value = 2.0 * bs_stats_norm_cdf(-fabs(out->statistic));
}

void bs_stats_welch_ttest(double mean_a, double var_a, int64_t n_a, double mean_b, double var_b,
                          int64_t n_b, double alpha, bs_stats_test_t *out)
{
    test_nan(out);
    if (n_a < 2 || n_b < 2 || !(var_a >= 0) || !(var_b >= 0) || !isfinite(mean_a) ||
        !isfinite(mean_b) || !(alpha > 0 && alpha < 1))
        return;
    out->diff = mean_b - mean_a;
    double va = var_a / (double)n_a, vb = var_b / (double)n_b, se2 = va + vb;
    if (!(se2 > 0) || !isfinite(se2))
        return;
    double df = se2 * se2 / (va * va / (double)(n_a - 1) + vb * vb / (double)(n_b - 1));
    double se = sqrt(se2);
    out->df = df;
    out->statistic = out->diff / se;
    out->p_value = 2.0 * bs_stats_t_cdf(-fabs(out->statistic), df);
    double tq = bs_stats_t_ppf(1.0 - alpha / 2, df);
    out->ci_low = out->diff - tq * se;
    out->ci_high = out->diff + tq * se;
}

int64_t bs_stats_samples_proportion(double p, double mde, double alpha, double power)
{
    if (!(p > 0 && p < 1) || !(mde != 0) || !isfinite(mde) || !(alpha > 0 && alpha < 1) ||
        !(power > 0 && power < 1))
        return -1;
    double p2 = p + mde;
    if (!(p2 > 0 && p2 < 1))
        return -1;
    double pbar = 0.5 * (p + p2);
    double za = -bs_stats_norm_ppf(alpha / 2), zb = bs_stats_norm_ppf(power);
    double s = za * sqrt(2 * pbar * (1 - pbar)) + zb * sqrt(p * (1 - p) + p2 * (1 - p2));
    double n = (s / mde) * (s / mde);
    if (!isfinite(n) || n > 9.0e18)
        return -1;
    return (int64_t)ceil(n);
}

int64_t bs_stats_samples_mean(double sd, double mde, double alpha, double power)
{
    if (!(sd > 0) || !isfinite(sd) || !(mde != 0) || !isfinite(mde) || !(alpha > 0 && alpha < 1) ||
        !(power > 0 && power < 1))
        return -1;
    double za = -bs_stats_norm_ppf(alpha / 2), zb = bs_stats_norm_ppf(power);
    double k = (za + zb) * sd / mde;
    double n = 2.0 * k * k;
    if (!isfinite(n) || n > 9.0e18)
        return -1;
    return (int64_t)ceil(n);
}

/* ---- metrics ------------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* numpy's _lerp: a + (b-a) t, or b - (b-a)(1-t) for t >= 1/2. */
static double lerp(double a, double b, double t)
{
    double d = b - a;
    return t >= 0.5 ? b - d * (1.0 - t) : a + d * t;
}

/* On sorted x: numpy's "linear" method, virtual index (n-1) q. */
static double quantile_sorted(const double *x, size_t n, double q)
{
    double h = (double)(n - 1) * q;
    double fl = floor(h);
    size_t lo = (size_t)fl;
    if (lo >= n - 1)
        return x[n - 1];
    return lerp(x[lo], x[lo + 1], h - fl);
}

double bs_stats_quantile(double *x, size_t n, double q)
{
    if (n == 0 || !(q >= 0 && q <= 1))
        return NAN;
    for (size_t i = 0; i < n; i++)
        if (isnan(x[i]))
            return NAN;
    qsort(x, n, sizeof *x, cmp_double);
    return quantile_sorted(x, n, q);
}

typedef struct {
    double score;
    int pos;
} scored_t;

static int cmp_scored(const void *a, const void *b)
{
    double x = ((const scored_t *)a)->score, y = ((const scored_t *)b)->score;
    return (x > y) - (x < y);
}

/* Mann–Whitney form of the trapezoidal ROC area: over groups of equal scores in
 * ascending order, each positive scores 1 per negative below it and ½ per tied negative.
 * Exactly sklearn's area under (fpr, tpr) with ties as one diagonal step. */
double bs_stats_roc_auc(const double *score, const int *y, size_t n)
{
    if (n == 0)
        return NAN;
    scored_t *v = malloc(n * sizeof *v);
    if (!v)
        return NAN;
    for (size_t i = 0; i < n; i++) {
        if (isnan(score[i])) {
            free(v);
            return NAN;
        }
        v[i].score = score[i];
        v[i].pos = y[i] != 0;
    }
    qsort(v, n, sizeof *v, cmp_scored);
    double neg_below = 0, area = 0, npos = 0, nneg = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        double p = 0, q = 0;
        while (j < n && v[j].score == v[i].score) {
            if (v[j].pos)
                p++;
            else
                q++;
            j++;
        }
        area += p * (neg_below + 0.5 * q);
        neg_below += q;
        npos += p;
        nneg += q;
        i = j;
    }
    free(v);
    if (npos == 0 || nneg == 0)
        return NAN;
    return area / (npos * nneg);
}

double bs_stats_log_loss(const double *p, const int *y, size_t n, int k, double eps)
{
    if (n == 0 || k < 2 || !(eps >= 0 && eps < 0.5))
        return NAN;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        if (y[i] < 0 || y[i] >= k)
            return NAN;
        const double *row = p + i * (size_t)k;
        double total = 0, py = 0;
        for (int c = 0; c < k; c++) {
            double v = row[c];
            if (v < eps)
                v = eps;
            else if (v > 1 - eps)
                v = 1 - eps;
            else if (isnan(v))
                return NAN;
            total += v;
            if (c == y[i])
                py = v;
        }
        sum += -log(py / total);
    }
    return sum / (double)n;
}

static void classification_nan(bs_stats_classification_t *out)
{
    out->accuracy = out->precision = out->recall = out->f1 = NAN;
}

/* sklearn's per-class scores: precision tp/predicted, recall tp/true (0 on 0/0:
 * zero_division=0), F1 2PR/(P+R) (0 when P + R = 0). */
static void class_scores(double tp, double predicted, double truth, double *P, double *R, double *F)
{
    *P = predicted > 0 ? tp / predicted : 0.0;
    *R = truth > 0 ? tp / truth : 0.0;
    double d = *P + *R;
    *F = d > 0 ? 2.0 * *P * *R / d : 0.0;
}

void bs_stats_classification(const int *y, const int *pred, size_t n, int k, int pos,
                             bs_stats_classification_t *out)
{
    classification_nan(out);
    if (n == 0 || k < 1 || pos >= k)
        return;
    size_t correct = 0;
    for (size_t i = 0; i < n; i++) {
        if (y[i] < 0 || y[i] >= k || pred[i] < 0 || pred[i] >= k)
            return;
        correct += y[i] == pred[i];
    }
    double accuracy = (double)correct / (double)n;
    if (pos >= 0) {
        double tp = 0, predicted = 0, truth = 0;
        for (size_t i = 0; i < n; i++) {
            tp += y[i] == pos && pred[i] == pos;
            predicted += pred[i] == pos;
            truth += y[i] == pos;
        }
        out->accuracy = accuracy;
        class_scores(tp, predicted, truth, &out->precision, &out->recall, &out->f1);
        return;
    }
    /* Macro: per-class counts (on the stack for up to 256 classes). */
    size_t stack[3 * 256];
    size_t *cnt = stack;
    if (k > 256) {
        cnt = calloc(3 * (size_t)k, sizeof *cnt);
        if (!cnt)
            return;
    } else {
        memset(stack, 0, sizeof stack);
    }
    size_t *tp = cnt, *predicted = cnt + k, *truth = cnt + 2 * (size_t)k;
    for (size_t i = 0; i < n; i++) {
        tp[y[i]] += y[i] == pred[i];
        predicted[pred[i]]++;
        truth[y[i]]++;
    }
    double sp = 0, sr = 0, sf = 0;
    int labels = 0;
    for (int c = 0; c < k; c++) {
        if (!predicted[c] && !truth[c])
            continue; /* sklearn averages over the labels present in y or pred */
        double P, R, F;
        class_scores((double)tp[c], (double)predicted[c], (double)truth[c], &P, &R, &F);
        sp += P, sr += R, sf += F;
        labels++;
    }
    if (cnt != stack)
        free(cnt);
    out->accuracy = accuracy;
    out->precision = sp / labels;
    out->recall = sr / labels;
    out->f1 = sf / labels;
}

void bs_stats_regression(const double *y, const double *pred, size_t n, bs_stats_regression_t *out)
{
    out->mae = out->rmse = out->r2 = NAN;
    if (n == 0)
        return;
    double sy = 0, sae = 0, sse = 0;
    for (size_t i = 0; i < n; i++) {
        double e = y[i] - pred[i];
        sy += y[i];
        sae += fabs(e);
        sse += e * e;
    }
    double mean = sy / (double)n, sst = 0;
    for (size_t i = 0; i < n; i++)
        sst += (y[i] - mean) * (y[i] - mean);
    out->mae = sae / (double)n;
    out->rmse = sqrt(sse / (double)n);
    if (sst > 0)
        out->r2 = 1.0 - sse / sst;
}

void bs_stats_mean_var(const double *x, size_t n, double *mean, double *var)
{
    double m = 0, m2 = 0;
    for (size_t i = 0; i < n; i++) {
        double d = x[i] - m;
        m += d / (double)(i + 1);
        m2 += d * (x[i] - m);
    }
    *mean = n ? m : NAN;
    *var = n >= 2 ? m2 / (double)(n - 1) : NAN;
}

/* Index of the bin of v among sorted inner edges e[0..m): the number of edges <= v
 * (a value equal to an edge goes to the bin above). */
static int psi_bin(const double *e, int m, double v)
{
    int lo = 0, hi = m;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (e[mid] <= v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

double bs_stats_psi(const double *ref, size_t n_ref, const double *cur, size_t n_cur, int bins,
                    double eps)
{
    if (n_ref == 0 || n_cur == 0 || bins < 1 || bins > 1000 || !(eps > 0))
        return NAN;
    double *sorted = malloc(n_ref * sizeof *sorted);
    if (!sorted)
        return NAN;
    memcpy(sorted, ref, n_ref * sizeof *sorted);
    for (size_t i = 0; i < n_ref; i++)
        if (isnan(sorted[i])) {
            free(sorted);
            return NAN;
        }
    qsort(sorted, n_ref, sizeof *sorted, cmp_double);
    double edges[1000];
    size_t rc[1001] = {0}, cc[1001] = {0};
    int m = bins - 1;
    for (int i = 0; i < m; i++)
        edges[i] = quantile_sorted(sorted, n_ref, (double)(i + 1) / bins);
    for (size_t i = 0; i < n_ref; i++)
        rc[psi_bin(edges, m, sorted[i])]++;
    free(sorted);
    for (size_t i = 0; i < n_cur; i++) {
        if (isnan(cur[i]))
            return NAN;
        cc[psi_bin(edges, m, cur[i])]++;
    }
    double psi = 0;
    for (int b = 0; b < bins; b++) {
        double r = (double)rc[b] / (double)n_ref, c = (double)cc[b] / (double)n_cur;
        if (r < eps)
            r = eps;
        if (c < eps)
            c = eps;
        psi += (c - r) * log(c / r);
    }
    return psi;
}

/* ---- sampling ----------------------------------------------------------------------- */

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void bs_stats_rng_seed(bs_stats_rng_t *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

uint64_t bs_stats_rng_next(bs_stats_rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double bs_stats_uniform(bs_stats_rng_t *r)
{
    return (double)(bs_stats_rng_next(r) >> 11) * 0x1p-53;
}

/* (0, 1): never 0, for logarithms. */
static double uniform_open(bs_stats_rng_t *r)
{
    return ((double)(bs_stats_rng_next(r) >> 11) + 0.5) * 0x1p-53;
}

/* A standard normal by the polar method (the second variate is dropped: no state). */
static double normal(bs_stats_rng_t *r)
{
    for (;;) {
        double u = 2.0 * bs_stats_uniform(r) - 1.0, v = 2.0 * bs_stats_uniform(r) - 1.0;
        double s = u * u + v * v;
        if (s > 0 && s < 1)
            return u * sqrt(-2.0 * log(s) / s);
    }
}

/* ln of a Gamma(a, 1) draw. Marsaglia–Tsang for a >= 1; for a < 1 the boost
 * Gamma(a) = Gamma(a+1) · U^{1/a}, whose logarithm ln G + ln U / a never underflows. */
static double log_gamma_sample(bs_stats_rng_t *r, double a)
{
    double boost = 0;
    if (a < 1) {
        boost = log(uniform_open(r)) / a;
        a += 1;
    }
    double d = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = normal(r), v = 1.0 + c * x;
        if (v <= 0)
            continue;
        v = v * v * v;
        double u = uniform_open(r), x2 = x * x;
        if (u < 1.0 - 0.0331 * x2 * x2 || log(u) < 0.5 * x2 + d * (1.0 - v + log(v)))
            return log(d) + log(v) + boost;
    }
}

double bs_stats_beta_sample(bs_stats_rng_t *r, double a, double b)
{
    if (!(a > 0) || !(b > 0) || isinf(a) || isinf(b))
        return NAN;
    double lx = log_gamma_sample(r, a), ly = log_gamma_sample(r, b);
    /* X / (X + Y) = 1 / (1 + e^{ly - lx}) */
    return 1.0 / (1.0 + exp(ly - lx));
}
