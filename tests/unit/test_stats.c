/* src/monitor/stats.c: closed forms and properties of the distributions (Φ, the t CDF for
 * df 1 and 2, I_x(a,1) and I_x(1,b), inverses), the tests and sample sizes on hand-checked
 * numbers (copied from statsmodels / scipy), the metrics on tiny hand-checkable inputs, PSI,
 * quantiles, and the Beta sampler's mean. The oracle comparison over random inputs is
 * tests/api/test_stats_oracle.py. */
#include "test_common.h"

#include <math.h>

#include "monitor/stats.h"

#define assert_close(got, want, rel)                                                               \
    do {                                                                                           \
        double g_ = (got), w_ = (want);                                                            \
        if (!(fabs(g_ - w_) <= (rel)*fabs(w_) + 1e-300))                                           \
            fail_msg("%s = %.17g, want %.17g (rel %.3g)", #got, g_, w_,                            \
                     w_ ? fabs(g_ - w_) / fabs(w_) : fabs(g_));                                    \
    } while (0)

static void test_norm(void **state)
{
    (void)state;
    assert_close(bs_stats_norm_cdf(0), 0.5, 1e-15);
    assert_close(bs_stats_norm_cdf(1.959963985), 0.975, 1e-9);
    assert_close(bs_stats_norm_cdf(-1.959963985), 0.025, 1e-8);
    assert_close(bs_stats_norm_ppf(0.975), 1.959963984540054, 1e-14);
    assert_close(bs_stats_norm_ppf(0.5), 0.0, 0);
    assert_true(isinf(bs_stats_norm_ppf(0)) && bs_stats_norm_ppf(0) < 0);
    assert_true(isinf(bs_stats_norm_ppf(1)) && bs_stats_norm_ppf(1) > 0);
    assert_true(isnan(bs_stats_norm_ppf(-0.1)) && isnan(bs_stats_norm_ppf(1.1)) &&
                isnan(bs_stats_norm_ppf(NAN)));
    /* ppf ∘ cdf = id, into the far tails */
    /* (on the lower side: above 0, Φ(x) rounds near 1 and ppf can only give that back) */
    for (int i = 0; i <= 100; i++) {
        double x = -37 + 0.37 * i + 0.01;
        if (fabs(bs_stats_norm_ppf(bs_stats_norm_cdf(x)) - x) > 1e-12 * fabs(x) + 1e-15)
            fail_msg("ppf(cdf(%.17g)) = %.17g", x, bs_stats_norm_ppf(bs_stats_norm_cdf(x)));
    }
    for (double lp = -300; lp < 0; lp += 7.3) {
        double p = pow(10, lp);
        assert_close(bs_stats_norm_cdf(bs_stats_norm_ppf(p)), p, 1e-12);
        if (p > 1e-12)
            assert_close(bs_stats_norm_ppf(1 - p), -bs_stats_norm_ppf(1 - (1 - p)), 1e-15);
    }
}

static void test_t_closed_forms(void **state)
{
    (void)state;
    for (double t = -30; t <= 30; t += 0.7) {
        assert_close(bs_stats_t_cdf(t, 1), 0.5 + atan(t) / M_PI, 1e-12);
        assert_close(bs_stats_t_cdf(t, 2), 0.5 + t / (2 * sqrt(2 + t * t)), 1e-12);
    }
    assert_close(bs_stats_t_cdf(0, 7.5), 0.5, 1e-15);
    /* symmetry, and the normal limit */
    assert_close(bs_stats_t_cdf(-1.3, 4.5) + bs_stats_t_cdf(1.3, 4.5), 1.0, 1e-15);
    assert_close(bs_stats_t_cdf(1.5, INFINITY), bs_stats_norm_cdf(1.5), 1e-15);
    /* df = 1e9: Φ(t) - φ(t)(t³ + t)/(4ν) + O(ν⁻²) (Cornish–Fisher / Edgeworth) */
    double phi3 = exp(-4.5) / sqrt(2 * M_PI);
    assert_close(bs_stats_t_cdf(-3, 1e9), bs_stats_norm_cdf(-3) + phi3 * 30 / 4e9, 1e-12);
    assert_close(bs_stats_t_ppf(0.975, 1), tan(M_PI * 0.475), 1e-12);
    /* ppf ∘ cdf = id over df and t */
    const double dfs[] = {0.5, 1, 2, 3, 4.5, 10, 29.7, 100, 1e4, 1e6};
    for (size_t i = 0; i < sizeof dfs / sizeof dfs[0]; i++)
        for (double t = -40; t < 0; t += 1.3) {
            double p = bs_stats_t_cdf(t, dfs[i]);
            if (p < 1e-300)
                continue; /* underflowed (df large, t far out) */
            assert_close(bs_stats_t_ppf(p, dfs[i]), t, 1e-9);
            if (p > 1e-12)
                assert_close(bs_stats_t_ppf(1 - p, dfs[i]), -bs_stats_t_ppf(1 - (1 - p), dfs[i]),
                             1e-15);
        }
    assert_true(isnan(bs_stats_t_cdf(1, 0)) && isnan(bs_stats_t_ppf(0.5, -1)));
}

static void test_beta_inc(void **state)
{
    (void)state;
    const double as[] = {0.1, 0.5, 1, 2.5, 10, 300};
    for (size_t i = 0; i < sizeof as / sizeof as[0]; i++)
        for (double x = 0.01; x < 1; x += 0.07) {
            double a = as[i];
            assert_close(bs_stats_beta_inc(a, 1, x), pow(x, a), 1e-12);
            assert_close(bs_stats_beta_inc(1, a, x), -expm1(a * log1p(-x)), 1e-12);
            /* symmetry I_x(a,b) = 1 - I_{1-x}(b,a) */
            assert_close(bs_stats_beta_inc(a, 3.5, x) + bs_stats_beta_inc(3.5, a, 1 - x), 1.0,
                         1e-13);
        }
    assert_close(bs_stats_beta_inc(0.5, 0.5, 0.5), 0.5, 1e-14);
    assert_close(bs_stats_beta_inc(2, 3, 0.4), 0.5248, 1e-14); /* 6x²-8x³+3x⁴ */
    assert_true(bs_stats_beta_inc(2, 3, 0) == 0 && bs_stats_beta_inc(2, 3, 1) == 1);
    assert_true(isnan(bs_stats_beta_inc(0, 1, 0.5)) && isnan(bs_stats_beta_inc(1, 1, 2)));
    /* large a, x near 1 (the asymptotic branch): 2 P(T < -3) for df = 1e6, from mpmath */
    assert_close(bs_stats_beta_inc(5e5, 0.5, 1 / (1 + 9e-6)), 0.0026998625416014747, 1e-12);
}

static void test_ztest(void **state)
{
    (void)state;
    bs_stats_test_t t;
    /* statsmodels proportions_ztest([60, 45], [500, 500]) and the Wald interval */
    bs_stats_two_proportion_ztest(45, 500, 60, 500, 0.05, &t);
    assert_close(t.diff, 0.03, 1e-14);
    assert_close(t.statistic, 1.547337646055907, 1e-12);
    assert_close(t.p_value, 0.12178184842585672, 1e-12);
    assert_close(t.ci_low, -0.00795453935644981, 1e-11);
    assert_close(t.ci_high, 0.06795453935644981, 1e-12);
    assert_true(isnan(t.df));
    bs_stats_two_proportion_ztest(0, 10, 0, 10, 0.05, &t); /* no variance */
    assert_true(isnan(t.statistic) && isnan(t.p_value));
    bs_stats_two_proportion_ztest(0, 0, 1, 10, 0.05, &t); /* empty side */
    assert_true(isnan(t.diff));
}

static void test_welch(void **state)
{
    (void)state;
    bs_stats_test_t t;
    /* scipy ttest_ind_from_stats(10.5, 2, 30, 10, 3, 40, equal_var=False) */
    bs_stats_welch_ttest(10.0, 9.0, 40, 10.5, 4.0, 30, 0.05, &t);
    assert_close(t.statistic, 0.8352690695845567, 1e-12);
    assert_close(t.p_value, 0.40652666039930085, 1e-10);
    double va = 9.0 / 40, vb = 4.0 / 30;
    double df = (va + vb) * (va + vb) / (va * va / 39 + vb * vb / 29);
    assert_close(t.df, df, 1e-14);
    double half = bs_stats_t_ppf(0.975, df) * sqrt(va + vb);
    assert_close(t.ci_low, 0.5 - half, 1e-13);
    assert_close(t.ci_high, 0.5 + half, 1e-13);
    /* swapping the sides flips diff and statistic, keeps p */
    bs_stats_test_t u;
    bs_stats_welch_ttest(10.5, 4.0, 30, 10.0, 9.0, 40, 0.05, &u);
    assert_close(u.statistic, -t.statistic, 1e-15);
    assert_close(u.p_value, t.p_value, 1e-15);
    bs_stats_welch_ttest(1, 1, 1, 2, 1, 10, 0.05, &t);
    assert_true(isnan(t.statistic));
}

static void test_sample_sizes(void **state)
{
    (void)state;
    /* the textbook 63 per group for d = 0.5 at α 0.05, power 0.8 */
    assert_int_equal(bs_stats_samples_mean(1, 0.5, 0.05, 0.8), 63);
    assert_int_equal(bs_stats_samples_mean(2, 1.0, 0.05, 0.8), 63);
    /* statsmodels samplesize_proportions_2indep_onetail: 3840.85, 2965.96 */
    assert_int_equal(bs_stats_samples_proportion(0.1, 0.02, 0.05, 0.8), 3841);
    assert_int_equal(bs_stats_samples_proportion(0.5, 0.05, 0.01, 0.9), 2966);
    assert_int_equal(bs_stats_samples_proportion(0.9, 0.2, 0.05, 0.8), -1);
    assert_int_equal(bs_stats_samples_mean(0, 1, 0.05, 0.8), -1);
    assert_int_equal(bs_stats_samples_mean(1, 0, 0.05, 0.8), -1);
}

static void test_quantile(void **state)
{
    (void)state;
    double x[] = {5, 3, 1, 4, 2};
    assert_close(bs_stats_quantile(x, 5, 0), 1, 0);
    assert_close(bs_stats_quantile(x, 5, 1), 5, 0);
    assert_close(bs_stats_quantile(x, 5, 0.5), 3, 0);
    assert_close(bs_stats_quantile(x, 5, 0.1), 1.4, 1e-15);
    assert_close(bs_stats_quantile(x, 5, 0.625), 3.5, 1e-15);
    assert_close(bs_stats_quantile(x, 5, 0.99), 4.96, 1e-15);
    assert_true(x[0] == 1 && x[4] == 5); /* sorted in place */
    double one = 7;
    assert_close(bs_stats_quantile(&one, 1, 0.3), 7, 0);
    assert_true(isnan(bs_stats_quantile(x, 0, 0.5)) && isnan(bs_stats_quantile(x, 5, 1.5)));
}

static void test_roc_auc(void **state)
{
    (void)state;
    const double s[] = {0.1, 0.2, 0.3, 0.4, 0.6, 0.8};
    const int y[] = {0, 0, 0, 1, 1, 1}, r[] = {1, 1, 1, 0, 0, 0};
    assert_close(bs_stats_roc_auc(s, y, 6), 1.0, 0);
    assert_close(bs_stats_roc_auc(s, r, 6), 0.0, 0);
    const double ties[] = {0.5, 0.5, 0.5, 0.5, 0.5, 0.5};
    assert_close(bs_stats_roc_auc(ties, y, 6), 0.5, 0);
    /* one swapped pair out of 9, and a tie worth half a pair */
    const double s2[] = {0.1, 0.2, 0.5, 0.4, 0.6, 0.8}, s3[] = {0.1, 0.2, 0.4, 0.4, 0.6, 0.8};
    assert_close(bs_stats_roc_auc(s2, y, 6), 8.0 / 9, 1e-15);
    assert_close(bs_stats_roc_auc(s3, y, 6), 8.5 / 9, 1e-15);
    const int one[] = {1, 1, 1, 1, 1, 1};
    assert_true(isnan(bs_stats_roc_auc(s, one, 6)));
}

static void test_log_loss(void **state)
{
    (void)state;
    const double perfect[] = {0, 1, 1, 0, 0, 1};
    const int y[] = {1, 0, 1};
    assert_close(bs_stats_log_loss(perfect, y, 3, 2, 1e-15), -log(1 - 1e-15), 1e-6);
    const double p[] = {0.2, 0.8, 0.6, 0.4, 0.5, 0.5};
    assert_close(bs_stats_log_loss(p, y, 3, 2, 1e-15), -(log(0.8) + log(0.6) + log(0.5)) / 3,
                 1e-14);
    /* rows are renormalised after clipping: {2, 6} is {0.25, 0.75} after clipping to 1-eps */
    const double unnorm[] = {0.1, 0.3, 0.2, 0.2, 0.4, 0.2, 0.4};
    const int y3[] = {1, 2};
    /* k = 3: rows {0.1, 0.3, 0.2} and {0.2, 0.4, 0.2} */
    assert_close(bs_stats_log_loss(unnorm, y3, 2, 3, 1e-15), -(log(0.3 / 0.6) + log(0.2 / 0.8)) / 2,
                 1e-14);
    const int bad[] = {2};
    assert_true(isnan(bs_stats_log_loss(p, bad, 1, 2, 1e-15)));
}

static void test_classification(void **state)
{
    (void)state;
    /* confusion (rows true, columns predicted): [[3, 1], [2, 4]]: tp 4, fp 1, fn 2, tn 3 */
    const int y[] = {0, 0, 0, 0, 1, 1, 1, 1, 1, 1};
    const int pred[] = {0, 0, 0, 1, 0, 0, 1, 1, 1, 1};
    bs_stats_classification_t c;
    bs_stats_classification(y, pred, 10, 2, 1, &c);
    assert_close(c.accuracy, 0.7, 1e-15);
    assert_close(c.precision, 0.8, 1e-15);
    assert_close(c.recall, 4.0 / 6, 1e-15);
    assert_close(c.f1, 2 * 0.8 * (4.0 / 6) / (0.8 + 4.0 / 6), 1e-15);
    bs_stats_classification(y, pred, 10, 2, 0, &c); /* class 0: tp 3, fp 2, fn 1 */
    assert_close(c.precision, 0.6, 1e-15);
    assert_close(c.recall, 0.75, 1e-15);
    bs_stats_classification(y, pred, 10, 2, -1, &c);
    assert_close(c.precision, (0.8 + 0.6) / 2, 1e-15);
    assert_close(c.recall, (4.0 / 6 + 0.75) / 2, 1e-15);
    /* macro over the labels present: class 2 of k = 3 is in neither y nor pred */
    bs_stats_classification_t c3;
    bs_stats_classification(y, pred, 10, 3, -1, &c3);
    assert_close(c3.precision, c.precision, 1e-15);
    /* zero_division = 0: nothing predicted as 1 */
    const int zeros[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    bs_stats_classification(y, zeros, 10, 2, 1, &c);
    assert_true(c.precision == 0 && c.recall == 0 && c.f1 == 0);
    assert_close(c.accuracy, 0.4, 1e-15);
    const int out_of_range[] = {0, 5};
    bs_stats_classification(y, out_of_range, 2, 2, -1, &c);
    assert_true(isnan(c.accuracy));
}

static void test_regression(void **state)
{
    (void)state;
    const double y[] = {1, 2, 3, 4}, pred[] = {1, 2, 3, 4}, off[] = {2, 2, 3, 2};
    bs_stats_regression_t r;
    bs_stats_regression(y, pred, 4, &r);
    assert_true(r.mae == 0 && r.rmse == 0 && r.r2 == 1);
    bs_stats_regression(y, off, 4, &r); /* errors -1, 0, 0, 2 */
    assert_close(r.mae, 0.75, 1e-15);
    assert_close(r.rmse, sqrt(5.0 / 4), 1e-15);
    assert_close(r.r2, 1 - 5.0 / 5.0, 1e-15); /* SStot = 5 */
    const double c[] = {3, 3, 3};
    bs_stats_regression(c, c, 3, &r);
    assert_true(isnan(r.r2)); /* constant y: documented NaN */
    double mean, var;
    bs_stats_mean_var(y, 4, &mean, &var);
    assert_close(mean, 2.5, 1e-15);
    assert_close(var, 5.0 / 3, 1e-15);
    bs_stats_mean_var(y, 1, &mean, &var);
    assert_true(mean == 1 && isnan(var));
}

static void test_psi(void **state)
{
    (void)state;
    double ref[1000], cur[1000];
    bs_stats_rng_t r;
    bs_stats_rng_seed(&r, 7);
    for (int i = 0; i < 1000; i++) {
        ref[i] = bs_stats_uniform(&r);
        cur[i] = bs_stats_uniform(&r) * 0.5; /* all in the lower half */
    }
    assert_close(bs_stats_psi(ref, 1000, ref, 1000, 10, 1e-4), 0.0, 0);
    double psi = bs_stats_psi(ref, 1000, cur, 1000, 10, 1e-4);
    assert_true(psi > 1.0);
    /* two bins with ref edges at the median: cur has share ~1 below, eps above */
    double ref2[] = {0, 1, 2, 3}, cur2[] = {0, 0.5, 1, 1.2};
    /* edge = quantile 0.5 = 1.5; ref 2/2, cur 4/0 -> shares (0.5,0.5) vs (1, eps) */
    double want = (1 - 0.5) * log(1 / 0.5) + (1e-4 - 0.5) * log(1e-4 / 0.5);
    assert_close(bs_stats_psi(ref2, 4, cur2, 4, 2, 1e-4), want, 1e-14);
    /* a value equal to an edge goes to the bin above */
    double cur3[] = {1.5, 1.5, 1.5, 1.5};
    want = (1e-4 - 0.5) * log(1e-4 / 0.5) + (1 - 0.5) * log(1 / 0.5);
    assert_close(bs_stats_psi(ref2, 4, cur3, 4, 2, 1e-4), want, 1e-14);
    assert_true(isnan(bs_stats_psi(ref, 0, cur, 10, 10, 1e-4)));
}

static void test_rng_and_beta(void **state)
{
    (void)state;
    bs_stats_rng_t r, r2;
    bs_stats_rng_seed(&r, 42);
    bs_stats_rng_seed(&r2, 42);
    double sum = 0;
    for (int i = 0; i < 100000; i++) {
        double u = bs_stats_uniform(&r);
        assert_true(u >= 0 && u < 1);
        assert_true(u == bs_stats_uniform(&r2));
        sum += u;
    }
    assert_close(sum / 100000, 0.5, 4 * sqrt(1.0 / 12 / 100000) / 0.5);
    const double ab[][2] = {{1, 1}, {2, 5}, {0.3, 0.7}, {0.05, 2}, {30, 70}, {500, 2}};
    for (size_t k = 0; k < sizeof ab / sizeof ab[0]; k++) {
        double a = ab[k][0], b = ab[k][1], m = 0;
        const int n = 100000;
        for (int i = 0; i < n; i++) {
            double x = bs_stats_beta_sample(&r, a, b);
            assert_true(x >= 0 && x <= 1);
            m += x;
        }
        m /= n;
        double mean = a / (a + b), sd = sqrt(a * b / ((a + b) * (a + b) * (a + b + 1)));
        if (fabs(m - mean) > 4 * sd / sqrt(n))
            fail_msg("Beta(%g, %g): mean %.6f, want %.6f ± %.2g", a, b, m, mean, 4 * sd / sqrt(n));
    }
    assert_true(isnan(bs_stats_beta_sample(&r, 0, 1)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_norm),         cmocka_unit_test(test_t_closed_forms),
        cmocka_unit_test(test_beta_inc),     cmocka_unit_test(test_ztest),
        cmocka_unit_test(test_welch),        cmocka_unit_test(test_sample_sizes),
        cmocka_unit_test(test_quantile),     cmocka_unit_test(test_roc_auc),
        cmocka_unit_test(test_log_loss),     cmocka_unit_test(test_classification),
        cmocka_unit_test(test_regression),   cmocka_unit_test(test_psi),
        cmocka_unit_test(test_rng_and_beta),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
