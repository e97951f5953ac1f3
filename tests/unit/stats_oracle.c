/*
 * stats_oracle: a driver for tests/api/test_stats_oracle.py, which compares every function
 * of src/monitor/stats.h with scipy / scikit-learn / statsmodels / numpy. Reads one JSON
 * object per line on stdin, {"fn": "t_cdf", "args": [1.5, 3.2]}, and writes one JSON value
 * per line on stdout: a number, an object of numbers, or {"error": "..."} for a bad line.
 * Non-finite numbers are written as NaN / Infinity / -Infinity (Python's json reads them).
 *
 * Functions and arguments (arrays are JSON arrays):
 *   norm_cdf [x]  norm_ppf [p]  t_cdf [t, df]  t_ppf [p, df]  beta_inc [a, b, x]
 *   ztest [x_a, n_a, x_b, n_b, alpha]  welch [mean_a, var_a, n_a, mean_b, var_b, n_b, alpha]
 *   samples_proportion [p, mde, alpha, power]  samples_mean [sd, mde, alpha, power]
 *   quantile [xs, q]  roc_auc [scores, ys]  log_loss [rows, ys, eps]
 *   classification [ys, preds, k, pos]  regression [ys, preds]  mean_var [xs]
 *   psi [ref, cur, bins, eps]  beta_sample [seed, a, b, n] (the n draws)
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "monitor/stats.h"

static void put_num(double v)
{
    if (isnan(v))
        fputs("NaN", stdout);
    else if (isinf(v))
        fputs(v > 0 ? "Infinity" : "-Infinity", stdout);
    else
        printf("%.17g", v);
}

static void put_field(const char *name, double v, int first)
{
    printf("%s\"%s\": ", first ? "" : ", ", name);
    put_num(v);
}

static double arg(const cJSON *args, int i)
{
    const cJSON *a = cJSON_GetArrayItem(args, i);
    return cJSON_IsNumber(a) ? a->valuedouble : NAN;
}

/* The numbers of array args[i] (malloc'd; *n their count). */
static double *darray(const cJSON *args, int i, size_t *n)
{
    const cJSON *a = cJSON_GetArrayItem(args, i);
    *n = (size_t)cJSON_GetArraySize(a);
    double *v = malloc((*n + 1) * sizeof *v);
    size_t j = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a) v[j++] = cJSON_IsNumber(e) ? e->valuedouble : NAN;
    return v;
}

static int *iarray(const cJSON *args, int i, size_t *n)
{
    const cJSON *a = cJSON_GetArrayItem(args, i);
    *n = (size_t)cJSON_GetArraySize(a);
    int *v = malloc((*n + 1) * sizeof *v);
    size_t j = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a) v[j++] = (int)e->valuedouble;
    return v;
}

static void put_test(const bs_stats_test_t *t)
{
    putchar('{');
    put_field("diff", t->diff, 1);
    put_field("ci_low", t->ci_low, 0);
    put_field("ci_high", t->ci_high, 0);
    put_field("statistic", t->statistic, 0);
    put_field("df", t->df, 0);
    put_field("p_value", t->p_value, 0);
    putchar('}');
}

static int run(const char *fn, const cJSON *args)
{
    if (!strcmp(fn, "norm_cdf"))
        put_num(bs_stats_norm_cdf(arg(args, 0)));
    else if (!strcmp(fn, "norm_ppf"))
        put_num(bs_stats_norm_ppf(arg(args, 0)));
    else if (!strcmp(fn, "t_cdf"))
        put_num(bs_stats_t_cdf(arg(args, 0), arg(args, 1)));
    else if (!strcmp(fn, "t_ppf"))
        put_num(bs_stats_t_ppf(arg(args, 0), arg(args, 1)));
    else if (!strcmp(fn, "beta_inc"))
        put_num(bs_stats_beta_inc(arg(args, 0), arg(args, 1), arg(args, 2)));
    else if (!strcmp(fn, "ztest")) {
        bs_stats_test_t t;
        bs_stats_two_proportion_ztest((int64_t)arg(args, 0), (int64_t)arg(args, 1),
                                      (int64_t)arg(args, 2), (int64_t)arg(args, 3), arg(args, 4),
                                      &t);
        put_test(&t);
    } else if (!strcmp(fn, "welch")) {
        bs_stats_test_t t;
        bs_stats_welch_ttest(arg(args, 0), arg(args, 1), (int64_t)arg(args, 2), arg(args, 3),
                             arg(args, 4), (int64_t)arg(args, 5), arg(args, 6), &t);
        put_test(&t);
    } else if (!strcmp(fn, "samples_proportion"))
        printf("%lld", (long long)bs_stats_samples_proportion(arg(args, 0), arg(args, 1),
                                                              arg(args, 2), arg(args, 3)));
    else if (!strcmp(fn, "samples_mean"))
        printf("%lld", (long long)bs_stats_samples_mean(arg(args, 0), arg(args, 1), arg(args, 2),
                                                        arg(args, 3)));
    else if (!strcmp(fn, "quantile")) {
        size_t n;
        double *x = darray(args, 0, &n);
        put_num(bs_stats_quantile(x, n, arg(args, 1)));
        free(x);
    } else if (!strcmp(fn, "roc_auc")) {
        size_t n, m;
        double *s = darray(args, 0, &n);
        int *y = iarray(args, 1, &m);
        put_num(m == n ? bs_stats_roc_auc(s, y, n) : NAN);
        free(s);
        free(y);
    } else if (!strcmp(fn, "log_loss")) {
        const cJSON *rows = cJSON_GetArrayItem(args, 0);
        size_t n = (size_t)cJSON_GetArraySize(rows), m;
        int k = n ? cJSON_GetArraySize(cJSON_GetArrayItem(rows, 0)) : 0;
        double *p = malloc((n * (size_t)k + 1) * sizeof *p);
        size_t j = 0;
        const cJSON *row, *e;
        cJSON_ArrayForEach(row, rows) cJSON_ArrayForEach(e, row) if (j < n * (size_t)k) p[j++] =
            e->valuedouble;
        int *y = iarray(args, 1, &m);
        put_num(m == n && j == n * (size_t)k ? bs_stats_log_loss(p, y, n, k, arg(args, 2)) : NAN);
        free(p);
        free(y);
    } else if (!strcmp(fn, "classification")) {
        size_t n, m;
        int *y = iarray(args, 0, &n), *pred = iarray(args, 1, &m);
        bs_stats_classification_t c;
        bs_stats_classification(y, pred, n < m ? n : m, (int)arg(args, 2), (int)arg(args, 3), &c);
        putchar('{');
        put_field("accuracy", c.accuracy, 1);
        put_field("precision", c.precision, 0);
        put_field("recall", c.recall, 0);
        put_field("f1", c.f1, 0);
        putchar('}');
        free(y);
        free(pred);
    } else if (!strcmp(fn, "regression")) {
        size_t n, m;
        double *y = darray(args, 0, &n), *pred = darray(args, 1, &m);
        bs_stats_regression_t r;
        bs_stats_regression(y, pred, n < m ? n : m, &r);
        putchar('{');
        put_field("mae", r.mae, 1);
        put_field("rmse", r.rmse, 0);
        put_field("r2", r.r2, 0);
        putchar('}');
        free(y);
        free(pred);
    } else if (!strcmp(fn, "mean_var")) {
        size_t n;
        double *x = darray(args, 0, &n), mean, var;
        bs_stats_mean_var(x, n, &mean, &var);
        putchar('{');
        put_field("mean", mean, 1);
        put_field("var", var, 0);
        putchar('}');
        free(x);
    } else if (!strcmp(fn, "psi")) {
        size_t n, m;
        double *ref = darray(args, 0, &n), *cur = darray(args, 1, &m);
        put_num(bs_stats_psi(ref, n, cur, m, (int)arg(args, 2), arg(args, 3)));
        free(ref);
        free(cur);
    } else if (!strcmp(fn, "beta_sample")) {
        bs_stats_rng_t r;
        bs_stats_rng_seed(&r, (uint64_t)arg(args, 0));
        double a = arg(args, 1), b = arg(args, 2);
        long n = (long)arg(args, 3);
        putchar('[');
        for (long i = 0; i < n; i++) {
            if (i)
                putchar(',');
            put_num(bs_stats_beta_sample(&r, a, b));
        }
        putchar(']');
    } else
        return -1;
    return 0;
}

int main(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) > 0) {
        cJSON *req = cJSON_Parse(line);
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(req, "fn");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(req, "args");
        if (!cJSON_IsString(fn) || !cJSON_IsArray(args) || run(fn->valuestring, args) != 0)
            fputs("{\"error\": \"bad request\"}", stdout);
        putchar('\n');
        cJSON_Delete(req);
    }
    free(line);
    return 0;
}
