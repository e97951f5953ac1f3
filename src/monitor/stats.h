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
double bs_stats_norm_cdf(double x);
double bs_stats_norm_ppf(double p); /* inverse of norm_cdf, p in (0,1); NaN outside */
/* Student's t CDF with df > 0 degrees of freedom (df need not be an integer). */
double bs_stats_t_cdf(double t, double df);
double bs_stats_t_ppf(double p, double df);
/* Regularised incomplete beta I_x(a, b). */
double bs_stats_beta_inc(double a, double b, double x);

/* ---- tests -------------------------------------------------------------------------- */
typedef struct {
    double diff;          /* b - a (of the proportions or the means) */
    double ci_low, ci_high; /* 1 - alpha confidence interval of diff */
    double statistic;     /* z or t */
    double df;            /* Welch: Welch–Satterthwaite degrees of freedom; z-test: NaN */
    double p_value;       /* two-sided */
} bs_stats_test_t;

/* Two-proportion z-test of x_b/n_b against x_a/n_a with the pooled variance (statsmodels
 * proportions_ztest); the interval uses the unpooled (Wald) variance. NaN fields when a
 * side is empty or the pooled variance is 0. */
void bs_stats_two_proportion_ztest(int64_t x_a, int64_t n_a, int64_t x_b, int64_t n_b,
                                   double alpha, bs_stats_test_t *out);
/* Welch's t-test of mean b against mean a (scipy.stats.ttest_ind(equal_var=False)), from
 * each side's mean, sample variance (ddof 1) and count. */
void bs_stats_welch_ttest(double mean_a, double var_a, int64_t n_a, double mean_b, double var_b,
                          int64_t n_b, double alpha, bs_stats_test_t *out);
/* Samples per group to detect an absolute difference mde between two proportions around
 * p (normal approximation, two-sided alpha, power); between two means with standard
 * deviation sd. Rounded up; -1 when not computable. */
int64_t bs_stats_samples_proportion(double p, double mde, double alpha, double power);
int64_t bs_stats_samples_mean(double sd, double mde, double alpha, double power);

/* ---- metrics ------------------------------------------------------------------------ */
/* Quantile q in [0,1] of x[0..n) (numpy's default linear interpolation). Sorts x in place.
 * NaN when n == 0. */
double bs_stats_quantile(double *x, size_t n, double q);
/* ROC AUC of scores for binary labels y (0/1), ties averaged (sklearn roc_auc_score).
 * NaN when only one class is present. Allocates (a sorted copy). */
double bs_stats_roc_auc(const double *score, const int *y, size_t n);
/* Mean log-loss: p[i*k + c] the probability of class c for row i, y[i] the true class;
 * rows renormalised and clipped to [eps, 1 - eps] (sklearn 1.2 log_loss, eps 1e-15). */
double bs_stats_log_loss(const double *p, const int *y, size_t n, int k, double eps);
typedef struct {
    double accuracy;
    double precision, recall, f1; /* of class pos (binary), or macro over the k classes */
} bs_stats_classification_t;
/* From true and predicted class indices in [0, k). pos >= 0: binary metrics of class
 * pos; pos < 0: macro averages (sklearn average="macro", zero_division=0). */
void bs_stats_classification(const int *y, const int *pred, size_t n, int k, int pos,
                             bs_stats_classification_t *out);
typedef struct {
    double mae, rmse, r2; /* r2 NaN when y is constant (sklearn gives 0/1 by case: noted) */
} bs_stats_regression_t;
void bs_stats_regression(const double *y, const double *pred, size_t n, bs_stats_regression_t *out);
/* Mean and sample variance (ddof 1; NaN for n < 2), Welford. */
void bs_stats_mean_var(const double *x, size_t n, double *mean, double *var);

/* Population stability index of cur against ref: edges at ref's deciles (bins - 1 inner
 * edges by bs_stats_quantile, values equal to an edge go to the bin above), shares below
 * eps raised to eps: sum (c - r) ln(c / r). Allocates (a sorted copy of ref). NaN when
 * either side is empty. */
double bs_stats_psi(const double *ref, size_t n_ref, const double *cur, size_t n_cur, int bins,
                    double eps);

/* ---- sampling ----------------------------------------------------------------------- */
typedef struct {
    uint64_t s[4]; /* xoshiro256** */
} bs_stats_rng_t;
void bs_stats_rng_seed(bs_stats_rng_t *r, uint64_t seed);
double bs_stats_uniform(bs_stats_rng_t *r); /* [0, 1) */
/* A draw from Beta(a, b), a, b > 0 (two Gamma draws, Marsaglia–Tsang). */
double bs_stats_beta_sample(bs_stats_rng_t *r, double a, double b);

#endif
