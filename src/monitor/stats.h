/*
 * Statistics for monitoring: distribution functions, the A/B tests, sample sizes, the
 * metrics of classification and regression, quantiles, PSI, and Beta sampling for the
 * Thompson bandit. Pure functions on arrays the caller owns; no allocation unless said
 * (then malloc, NULL/BS_ENOMEM on failure). Definitions follow scipy 1.10 /
 * scikit-learn 1.2 / statsmodels 0.13 (Debian 12), which the tests use as oracles.
 *
 * Thread safety: all functions are reentrant (bs_stats_rng_t is the caller's).
 */
#ifndef BS_MONITOR_STATS_H
#define BS_MONITOR_STATS_H

#include <stddef.h>
#include <stdint.h>

/* ---- distributions ------------------------------------------------------------------ */
/* Accuracy (checked against scipy and, where scipy's cephes is the weaker, mpmath): about
 * 1e-13 relative for norm_cdf, norm_ppf, t_cdf (df up to 1e10, both tails down to 1e-300)
 * and beta_inc; t_ppf about the same (scipy's stdtrit is good to ~1e-11). NaN in, NaN out. */
double bs_stats_norm_cdf(double x);
/* Inverse of norm_cdf for p in (0,1); -inf / +inf at 0 / 1 (as scipy); NaN outside [0,1]. */
double bs_stats_norm_ppf(double p);
/* Student's t CDF with df > 0 degrees of freedom (df need not be an integer; df = +inf is
 * the normal). NaN for df <= 0. */
double bs_stats_t_cdf(double t, double df);
/* Inverse of t_cdf, p in (0,1); -inf / +inf at 0 / 1; NaN outside [0,1] or for df <= 0. */
double bs_stats_t_ppf(double p, double df);
/* Regularised incomplete beta I_x(a, b), a, b > 0 finite, x in [0,1]; NaN otherwise. */
double bs_stats_beta_inc(double a, double b, double x);

/* ---- tests -------------------------------------------------------------------------- */
typedef struct {
    double diff;            /* b - a (of the proportions or the means) */
    double ci_low, ci_high; /* 1 - alpha confidence interval of diff */
    double statistic;       /* z or t */
    double df;              /* Welch: Welch–Satterthwaite degrees of freedom; z-test: NaN */
    double p_value;         /* two-sided */
} bs_stats_test_t;

/* Two-proportion z-test of x_b/n_b against x_a/n_a with the pooled variance (statsmodels
 * proportions_ztest([x_b, x_a], [n_b, n_a])): z = (p_b - p_a) / sqrt(p̄(1-p̄)(1/n_a + 1/n_b)),
 * p̄ = (x_a + x_b)/(n_a + n_b), p two-sided normal. The interval uses the unpooled (Wald)
 * variance (statsmodels confint_proportions_2indep(method="wald")):
 * diff ± z_{1-α/2} sqrt(p_a(1-p_a)/n_a + p_b(1-p_b)/n_b). All fields NaN when a side is
 * empty, a count is out of range or alpha is not in (0,1); statistic and p_value NaN (the
 * interval kept) when the pooled variance is 0 (all or none succeeded on both sides). */
void bs_stats_two_proportion_ztest(int64_t x_a, int64_t n_a, int64_t x_b, int64_t n_b, double alpha,
                                   bs_stats_test_t *out);
/* Welch's t-test of mean b against mean a (scipy.stats.ttest_ind(equal_var=False)), from
 * each side's mean, sample variance (ddof 1) and count: t = diff / se,
 * se² = var_a/n_a + var_b/n_b, df = se⁴ / ((var_a/n_a)²/(n_a-1) + (var_b/n_b)²/(n_b-1)),
 * p = 2 T_df(-|t|); interval diff ± t_{df, 1-α/2} se. All NaN when a side has fewer than 2
 * rows or alpha is not in (0,1); NaN but diff when se = 0 (scipy then gives ±inf or NaN). */
void bs_stats_welch_ttest(double mean_a, double var_a, int64_t n_a, double mean_b, double var_b,
                          int64_t n_b, double alpha, bs_stats_test_t *out);
/* Samples per group (equal groups) to detect an absolute difference mde, normal
 * approximation at two-sided level alpha and the given power, the far tail ignored:
 * - proportions from p to p2 = p + mde (pooled variance under H0, unpooled under H1;
 *   statsmodels samplesize_proportions_2indep_onetail(mde, p, power, alpha=alpha)):
 *     n = ((z_{1-α/2} sqrt(2 p̄(1-p̄)) + z_{power} sqrt(p(1-p) + p2(1-p2))) / mde)²,
 *     p̄ = (p + p2)/2;
 * - means with standard deviation sd (statsmodels NormalIndPower / zt_ind_solve_power with
 *   effect size mde/sd, up to their far-tail term):  n = 2 ((z_{1-α/2} + z_{power}) sd / mde)².
 * Rounded up; -1 when not computable (mde 0, p or p2 outside (0,1), sd <= 0, alpha or
 * power outside (0,1)). */
int64_t bs_stats_samples_proportion(double p, double mde, double alpha, double power);
int64_t bs_stats_samples_mean(double sd, double mde, double alpha, double power);

/* ---- metrics ------------------------------------------------------------------------ */
/* Quantile q in [0,1] of x[0..n) (numpy's default linear interpolation). Sorts x in place.
 * NaN when n == 0. */
double bs_stats_quantile(double *x, size_t n, double q);
/* ROC AUC of scores for binary labels y (non-zero = positive), ties averaged (sklearn
 * roc_auc_score: the trapezoid under the ROC curve, i.e. the Mann–Whitney U / (n₊ n₋)).
 * NaN when only one class is present, a score is NaN, or the copy cannot be allocated.
 * Allocates (a sorted copy). */
double bs_stats_roc_auc(const double *score, const int *y, size_t n);
/* Mean log-loss: p[i*k + c] the probability of class c for row i, y[i] the true class:
 * each p clipped to [eps, 1 - eps], then the row renormalised to sum 1, loss -ln p[y]
 * (sklearn 1.2 log_loss(y, p, eps=eps, labels=range(k)), in that order). Callers pass
 * 1e-15 (sklearn's default before 1.2; 1.2's "auto" is DBL_EPSILON). NaN when n == 0,
 * k < 2, eps not in [0, 0.5), a y outside [0,k) or a NaN probability. */
double bs_stats_log_loss(const double *p, const int *y, size_t n, int k, double eps);
typedef struct {
    double accuracy;
    double precision, recall, f1; /* of class pos (binary), or macro over the k classes */
} bs_stats_classification_t;
/* From true and predicted class indices in [0, k). pos >= 0: the metrics of class pos
 * (sklearn average="binary", pos_label=pos for k == 2; labels=[pos] otherwise); pos < 0:
 * macro averages over the classes present in y or pred (sklearn average="macro" with its
 * default labels, i.e. a class in neither is left out). zero_division=0: precision 0 with
 * nothing predicted, recall 0 with nothing true, F1 = 2PR/(P+R) or 0. Accuracy is the
 * share of y == pred. All NaN when n == 0, pos >= k, or a class is outside [0, k).
 * Allocates 3k counters when k > 256 (NaN if that fails). */
void bs_stats_classification(const int *y, const int *pred, size_t n, int k, int pos,
                             bs_stats_classification_t *out);
typedef struct {
    double mae, rmse, r2; /* r2 NaN when y is constant (sklearn gives 0/1 by case: noted) */
} bs_stats_regression_t;
/* MAE = mean |y - pred|, RMSE = sqrt(mean (y - pred)²) (sklearn mean_squared_error then
 * sqrt), R² = 1 - Σ(y - pred)² / Σ(y - ȳ)² (sklearn r2_score, which for a constant y gives
 * 1.0 when every prediction is exact and 0.0 otherwise; here NaN: undefined). All NaN
 * when n == 0. */
void bs_stats_regression(const double *y, const double *pred, size_t n, bs_stats_regression_t *out);
/* Mean and sample variance (ddof 1; NaN for n < 2), Welford. */
void bs_stats_mean_var(const double *x, size_t n, double *mean, double *var);

/* Population stability index of cur against ref: bins - 1 inner edges at ref's quantiles
 * j/bins, j = 1..bins-1 (bs_stats_quantile's interpolation: deciles for bins = 10); a value
 * goes to the bin of the number of edges <= it (a value equal to an edge goes to the bin
 * above; equal edges leave empty bins); r and c the shares of ref and cur per bin, each
 * raised to eps when below it (not renormalised): PSI = Σ (c - r) ln(c / r). 0 for a
 * sample against itself. Allocates (a sorted copy of ref). NaN when either side is empty,
 * a value is NaN, bins is not in [1, 1000], eps <= 0 or the copy cannot be allocated. */
double bs_stats_psi(const double *ref, size_t n_ref, const double *cur, size_t n_cur, int bins,
                    double eps);

/* ---- sampling ----------------------------------------------------------------------- */
typedef struct {
    uint64_t s[4]; /* xoshiro256** */
} bs_stats_rng_t;
/* The state from splitmix64 of seed (any seed, 0 included). */
void bs_stats_rng_seed(bs_stats_rng_t *r, uint64_t seed);
uint64_t bs_stats_rng_next(bs_stats_rng_t *r); /* 64 random bits */
double bs_stats_uniform(bs_stats_rng_t *r); /* [0, 1), 53 random bits */
/* A draw from Beta(a, b), a, b > 0 finite (two Gamma draws, Marsaglia–Tsang, with
 * Gamma(a) = Gamma(a+1) U^{1/a} for a < 1, combined in logarithms so tiny shapes never give
 * 0/0); NaN for bad shapes. */
double bs_stats_beta_sample(bs_stats_rng_t *r, double a, double b);

#endif
