/*
 * Benchmark: basalt's tree-ensemble predict (src/ml) against libxgboost's C
 * predictor on the same XGBoost JSON model and the same rows, in one process.
 *
 * Peer paths measured (the faster one is what the ratios use):
 *   inplace  XGBoosterPredictFromDense (no DMatrix)
 *   dmatrix  XGDMatrixCreateFromMat + XGBoosterPredict (the classic path)
 * at nthread=1 and at XGBoost's default thread count (nthread=0: OpenMP uses
 * every online CPU). basalt likewise runs on one thread (predict_threads=1) and
 * on its default (a batch of 512+ rows is split over every online CPU); each is
 * compared with the peer's run at the same thread count.
 *
 * Figures: single-row latency is the median of many timed one-row calls;
 * batch throughput is 1000 rows divided by the median time of a 1000-row
 * call. Before timing, both predictors run on every row (clean rows and rows
 * with ~10% NaN) and their outputs must be identical (P(class 1), float).
 *
 * Usage: bench_trees MODEL.json ROWS.bin   (ROWS.bin: float64 row-major, 30 columns)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xgboost/c_api.h>

#include "base/parallel.h"
#include "ml/ml.h"

#define BATCH 1000

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void die(const char *what)
{
    fprintf(stderr, "bench_trees: %s\n", what);
    exit(1);
}

#define XGB_CHECK(call)                                                                            \
    do {                                                                                           \
        if ((call) != 0) {                                                                         \
            fprintf(stderr, "bench_trees: %s: %s\n", #call, XGBGetLastError());                    \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die("cannot open input");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
        die("cannot read input");
    fclose(f);
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

typedef struct {
    BoosterHandle h;
    int nf;
    int inplace; /* 1: XGBoosterPredictFromDense, 0: DMatrix + XGBoosterPredict */
    float *fbuf; /* float copy for the DMatrix path */
} xgb_t;

/* Predicts n rows with libxgboost; returns its output buffer (P(class 1) per row). */
static const float *xgb_predict(xgb_t *x, const double *rows, int n)
{
    const float *res = NULL;
    if (x->inplace) {
        char values[256];
        snprintf(values, sizeof values,
                 "{\"data\": [%llu, true], \"shape\": [%d, %d], \"typestr\": \"<f8\", "
                 "\"version\": 3}",
                 (unsigned long long)(uintptr_t)rows, n, x->nf);
        static const char config[] = "{\"type\": 0, \"training\": false, \"iteration_begin\": 0, "
                                     "\"iteration_end\": 0, \"strict_shape\": false, "
                                     "\"missing\": NaN, \"cache_id\": 0}";
        const bst_ulong *shape;
        bst_ulong dim;
        XGB_CHECK(XGBoosterPredictFromDense(x->h, values, config, NULL, &shape, &dim, &res));
        return res;
    }
    for (int i = 0; i < n * x->nf; i++)
        x->fbuf[i] = (float)rows[i];
    DMatrixHandle dm;
    bst_ulong len;
    XGB_CHECK(XGDMatrixCreateFromMat(x->fbuf, (bst_ulong)n, (bst_ulong)x->nf, NAN, &dm));
    XGB_CHECK(XGBoosterPredict(x->h, dm, 0, 0, 0, &len, &res));
    XGB_CHECK(XGDMatrixFree(dm));
    return res;
}

typedef struct {
    double single_ns; /* median ns for one row */
    double batch_rps; /* rows per second, batches of BATCH rows */
} figures_t;

static figures_t time_basalt(const bs_ml_model_t *m, const double *rows, int n_rows, int nf)
{
    enum { SINGLE_REPS = 200000, BATCH_REPS = 300 };
    double out[2 * BATCH];
    double *t = malloc(SINGLE_REPS * sizeof *t);
    bs_err_t err;
    figures_t f;
    for (int r = 0; r < SINGLE_REPS; r++) {
        const double *row = rows + (size_t)(r % n_rows) * nf;
        double t0 = now_ns();
        if (bs_ml_predict(m, row, 1, out, &err))
            die(err.msg);
        t[r] = now_ns() - t0;
    }
    f.single_ns = median(t, SINGLE_REPS);
    for (int r = 0; r < BATCH_REPS; r++) {
        const double *b = rows + (size_t)((r * BATCH) % (n_rows - BATCH + 1)) * nf;
        double t0 = now_ns();
        if (bs_ml_predict(m, b, BATCH, out, &err))
            die(err.msg);
        t[r] = now_ns() - t0;
    }
    f.batch_rps = BATCH / (median(t, BATCH_REPS) * 1e-9);
    free(t);
    return f;
}

static figures_t time_xgb(xgb_t *x, const double *rows, int n_rows)
{
    enum { SINGLE_REPS = 20000, BATCH_REPS = 100 };
    double *t = malloc(SINGLE_REPS * sizeof *t);
    figures_t f;
    for (int r = 0; r < SINGLE_REPS; r++) {
        const double *row = rows + (size_t)(r % n_rows) * x->nf;
        double t0 = now_ns();
        xgb_predict(x, row, 1);
        t[r] = now_ns() - t0;
    }
    f.single_ns = median(t, SINGLE_REPS);
    for (int r = 0; r < BATCH_REPS; r++) {
        const double *b = rows + (size_t)((r * BATCH) % (n_rows - BATCH + 1)) * x->nf;
        double t0 = now_ns();
        xgb_predict(x, b, BATCH);
        t[r] = now_ns() - t0;
    }
    f.batch_rps = BATCH / (median(t, BATCH_REPS) * 1e-9);
    free(t);
    return f;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        die("usage: bench_trees MODEL.json ROWS.bin");
    size_t mlen, rlen;
    char *model_bytes = read_all(argv[1], &mlen);
    double *rows = (double *)read_all(argv[2], &rlen);
    bs_err_t err;
    bs_ml_model_t *m = bs_ml_load(BS_ML_FORMAT_XGBOOST_JSON, model_bytes, mlen, &err);
    if (!m)
        die(err.msg);
    const int nf = bs_ml_model_schema(m)->n_features;
    const int n_all = (int)(rlen / sizeof(double) / (size_t)nf);
    const int n_clean = n_all / 2; /* first half clean, second half with NaN */
    if (n_clean < BATCH)
        die("need at least 1000 clean rows");

    xgb_t x = {.nf = nf, .fbuf = malloc((size_t)n_all * nf * sizeof(float))};
    XGB_CHECK(XGBoosterCreate(NULL, 0, &x.h));
    XGB_CHECK(XGBoosterLoadModel(x.h, argv[1]));
    XGB_CHECK(XGBoosterSetParam(x.h, "nthread", "1"));

    /* identical outputs on every row, for both peer paths */
    double *ours = malloc((size_t)n_all * 2 * sizeof *ours);
    if (bs_ml_predict(m, rows, (size_t)n_all, ours, &err))
        die(err.msg);
    for (int path = 0; path < 2; path++) {
        x.inplace = path;
        const float *ref = xgb_predict(&x, rows, n_all);
        int mismatches = 0;
        double maxdiff = 0;
        for (int i = 0; i < n_all; i++) {
            double d = fabs(ours[2 * i + 1] - (double)ref[i]);
            mismatches += d != 0;
            maxdiff = d > maxdiff ? d : maxdiff;
        }
        printf("check %-8s: %d rows (%d with ~10%% NaN): %d differ, max |diff| %.3g\n",
               path ? "inplace" : "dmatrix", n_all, n_all - n_clean, mismatches, maxdiff);
        if (mismatches)
            die("outputs differ from libxgboost");
    }

    printf("model: %s, 100 trees, depth 6, %d features\n", argv[1], nf);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    figures_t basalt[2];
    for (int pass = 0; pass < 2; pass++) {
        bs_parallel_set_max(pass == 0 ? 1 : 0);
        basalt[pass] = time_basalt(m, rows, n_clean, nf);
        char label[64];
        snprintf(label, sizeof label, "basalt threads=%d", bs_parallel_width());
        printf("%-34s single row %9.0f ns   batch-%d %12.0f rows/s\n", label,
               basalt[pass].single_ns, BATCH, basalt[pass].batch_rps);
    }
    const char *omp = getenv("OMP_NUM_THREADS");
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1)
            XGB_CHECK(XGBoosterSetParam(x.h, "nthread", "0"));
        char label[64];
        figures_t best = {1e300, 0};
        for (int path = 1; path >= 0; path--) {
            x.inplace = path;
            figures_t f = time_xgb(&x, rows, n_clean);
            if (pass == 0)
                snprintf(label, sizeof label, "libxgboost %s nthread=1",
                         path ? "inplace" : "dmatrix");
            else
                snprintf(label, sizeof label, "libxgboost %s nthread=%s", path ? "inplace" : "dmatrix",
                         omp ? omp : "default");
            printf("%-34s single row %9.0f ns   batch-%d %12.0f rows/s\n", label, f.single_ns,
                   BATCH, f.batch_rps);
            if (f.single_ns < best.single_ns)
                best.single_ns = f.single_ns;
            if (f.batch_rps > best.batch_rps)
                best.batch_rps = f.batch_rps;
        }
        const figures_t b = basalt[pass];
        if (pass == 0)
            printf("ratio, both on 1 thread (libxgboost nthread=1, best path):  single row %.1fx "
                   "faster, batch %.2fx faster\n",
                   best.single_ns / b.single_ns, b.batch_rps / best.batch_rps);
        else
            printf("ratio, both on default threads (libxgboost nthread=0 -> OpenMP, %ld online "
                   "CPUs%s%s): single row %.1fx faster, batch %.2fx faster\n",
                   ncpu, omp ? ", OMP_NUM_THREADS=" : "", omp ? omp : "",
                   best.single_ns / b.single_ns, b.batch_rps / best.batch_rps);
    }
    XGBoosterFree(x.h);
    bs_ml_model_free(m);
    free(ours);
    free(x.fbuf);
    free(rows);
    free(model_bytes);
    return 0;
}
