/*
 * Unit tests of the basalt model JSON format (src/ml/basalt_json.c,
 * preprocess.c, linear.c, mlp.c): tiny hand-written models whose answers are
 * computed by hand in the comments, and malformed or hostile files that must
 * be rejected with BS_EINVAL and a message naming the problem.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ml/ml.h"

static bs_ml_model_t *load(const char *json, bs_err_t *err)
{
    bs_err_clear(err);
    return bs_ml_load(BS_ML_FORMAT_BASALT_JSON, json, strlen(json), err);
}

static bs_ml_model_t *load_ok(const char *json)
{
    bs_err_t err;
    bs_ml_model_t *m = load(json, &err);
    if (!m)
        fail_msg("load failed: %s", err.msg);
    return m;
}

/* Loading must fail with BS_EINVAL and a message containing `needle`. */
static void expect_reject(const char *json, const char *needle)
{
    bs_err_t err;
    bs_ml_model_t *m = load(json, &err);
    if (m) {
        bs_ml_model_free(m);
        fail_msg("model loaded but should be rejected (%s)", needle);
    }
    assert_int_equal(err.code, BS_EINVAL);
    if (!strstr(err.msg, needle))
        fail_msg("message '%s' lacks '%s'", err.msg, needle);
}

static void predict1(const bs_ml_model_t *m, const double *row, double *out)
{
    bs_err_t err;
    int rc = bs_ml_predict(m, row, 1, out, &err);
    if (rc)
        fail_msg("predict failed: %s", err.msg);
}

#define NEAR(a, b) assert_true(fabs((a) - (b)) < 1e-12)

/* a, b scaled ((x - mean) / scale) after imputation; c one-hot (ignore unknown). */
static const char *LINEAR_PIPE =
    "{\"basalt_model\":1,"
    " \"inputs\":[{\"name\":\"a\",\"type\":\"float\"},"
    "   {\"name\":\"c\",\"type\":\"category\",\"categories\":[\"x\",\"y\",\"z\"]},"
    "   {\"name\":\"b\",\"type\":\"float\",\"default\":2,\"min\":-100,\"max\":100}],"
    " \"preprocess\":["
    "   {\"columns\":[\"a\",\"b\"],\"steps\":[{\"op\":\"impute\",\"fill\":[0,10]},"
    "     {\"op\":\"standard_scale\",\"mean\":[1,2],\"scale\":[2,4]}]},"
    "   {\"columns\":[\"c\"],\"steps\":[{\"op\":\"one_hot\",\"handle_unknown\":\"ignore\"}]}],"
    " \"estimator\":{\"type\":\"linear\",\"link\":\"identity\","
    "   \"coef\":[[1,2,10,20,30]],\"intercept\":[0.5]},"
    " \"output\":{\"task\":\"regression\"}}";

static void test_linear_pipeline(void **state)
{
    (void)state;
    bs_ml_model_t *m = load_ok(LINEAR_PIPE);
    const bs_ml_schema_t *s = bs_ml_model_schema(m);
    assert_int_equal(s->n_features, 3);
    assert_int_equal(s->features[1].type, BS_ML_CATEGORY);
    assert_int_equal(s->features[1].n_categories, 3);
    assert_int_equal(s->features[1].accepts_unknown, 1);
    assert_int_equal(s->features[2].has_default, 1);
    assert_int_equal(s->features[2].required, 0);
    assert_int_equal(s->features[0].required, 1);
    assert_int_equal(s->task, BS_ML_REGRESSION);
    assert_int_equal(s->n_outputs, 1);
    assert_string_equal(bs_ml_model_kind(m), "linear");
    assert_int_equal(bs_ml_model_prefers_batching(m), 0);
    /* a and b are imputed; c is not: a missing category cannot be encoded */
    assert_int_equal(s->features[0].accepts_missing, 1);
    assert_int_equal(s->features[1].accepts_missing, 0);
    assert_int_equal(s->features[2].accepts_missing, 1);
    assert_int_equal(bs_ml_model_handles_missing(m), 0);
    assert_true(bs_ml_model_memory(m) > 0);

    double rows[] = {3, 1, 6, /* (3-1)/2=1, (6-2)/4=1, y -> 1 + 2 + 20 + 0.5 = 23.5 */
                     NAN, -1, NAN, /* a->0: -0.5; b->10: 2; unknown: 0 -> -0.5+4+0.5 = 4 */
                     1, 0, 2}; /* 0 + 0 + 10 + 0.5 */
    double out[3];
    bs_err_t err;
    assert_int_equal(bs_ml_predict(m, rows, 3, out, &err), 0);
    NEAR(out[0], 23.5);
    NEAR(out[1], 4.0);
    NEAR(out[2], 10.5);

    double bad_index[] = {1, 3, 2};
    assert_int_equal(bs_ml_predict(m, bad_index, 1, out, &err), BS_EINVAL);
    assert_non_null(strstr(err.msg, "category index 3"));
    double missing_cat[] = {1, NAN, 2};
    assert_int_equal(bs_ml_predict(m, missing_cat, 1, out, &err), BS_EINVAL);
    assert_non_null(strstr(err.msg, "'c' is missing"));
    bs_ml_model_free(m);
}

/* Which inputs take missing values: d is scaled but never imputed, so its NaN would reach
 * the linear estimator; e is dropped; with a tree estimator every numeric input does. */
static void test_accepts_missing_per_input(void **state)
{
    (void)state;
    static const char *pre =
        "{\"basalt_model\":1,\"inputs\":[{\"name\":\"a\",\"type\":\"float\"},"
        "{\"name\":\"d\",\"type\":\"float\"},{\"name\":\"e\",\"type\":\"float\"}],"
        "\"preprocess\":[{\"columns\":[\"a\"],\"steps\":[{\"op\":\"impute\",\"fill\":[1]}]},"
        "{\"columns\":[\"d\"],\"steps\":[{\"op\":\"standard_scale\",\"mean\":[0],\"scale\":[1]}]},"
        "{\"columns\":[\"e\"],\"steps\":[{\"op\":\"drop\"}]}],"
        "\"estimator\":";
    static const char *post = ",\"output\":{\"task\":\"regression\"}}";
    char json[2048];
    snprintf(json, sizeof json, "%s%s%s", pre,
             "{\"type\":\"linear\",\"coef\":[[1,1]],\"intercept\":[0]}", post);
    bs_ml_model_t *m = load_ok(json);
    const bs_ml_schema_t *s = bs_ml_model_schema(m);
    assert_int_equal(s->features[0].accepts_missing, 1);
    assert_int_equal(s->features[1].accepts_missing, 0);
    assert_int_equal(s->features[2].accepts_missing, 1);
    assert_int_equal(bs_ml_model_handles_missing(m), 0);
    double out[1], row[3] = {NAN, 2, NAN};
    predict1(m, row, out);
    NEAR(out[0], 3.0); /* a -> 1, d = 2, e dropped */
    bs_ml_model_free(m);

    snprintf(json, sizeof json, "%s%s%s", pre,
             "{\"type\":\"trees\",\"base\":[0],\"scale\":1,\"leaf_width\":1,"
             "\"transform\":\"identity\",\"trees\":[{\"feature\":[1,-1,-1],"
             "\"threshold\":[0.5,0,0],\"left\":[1,-1,-1],\"right\":[2,-1,-1],"
             "\"value\":[null,[-1],[1]],\"missing_left\":[1,0,0]}]}", post);
    m = load_ok(json);
    s = bs_ml_model_schema(m);
    for (int i = 0; i < 3; i++)
        assert_int_equal(s->features[i].accepts_missing, 1);
    assert_int_equal(bs_ml_model_handles_missing(m), 1);
    row[1] = NAN;
    predict1(m, row, out);
    NEAR(out[0], -1.0); /* d missing goes left */
    bs_ml_model_free(m);
}

static void test_unknown_category_rejected_by_error_encoder(void **state)
{
    (void)state;
    bs_ml_model_t *m = load_ok(
        "{\"basalt_model\":1,\"inputs\":[{\"name\":\"c\",\"type\":\"category\","
        "\"categories\":[\"p\",\"q\"]}],\"preprocess\":[{\"columns\":[\"c\"],"
        "\"steps\":[{\"op\":\"impute\",\"strategy\":\"most_frequent\",\"fill\":[\"q\"]},"
        "{\"op\":\"one_hot\"}]}],"
        "\"estimator\":{\"type\":\"linear\",\"coef\":[[1,2]],\"intercept\":[0]},"
        "\"output\":{\"task\":\"regression\",\"n_outputs\":1}}");
    assert_int_equal(bs_ml_model_schema(m)->features[0].accepts_unknown, 0);
    assert_int_equal(bs_ml_model_handles_missing(m), 1); /* the only input is imputed */
    double out[1], row[1] = {NAN};
    predict1(m, row, out);
    NEAR(out[0], 2.0); /* NaN -> "q" -> [0, 1] */
    bs_err_t err;
    row[0] = -1;
    assert_int_equal(bs_ml_predict(m, row, 1, out, &err), BS_EINVAL);
    assert_non_null(strstr(err.msg, "unknown category"));
    bs_ml_model_free(m);
}

static void test_logistic_links(void **state)
{
    (void)state;
    double out[3], x;
    /* binary: z = 2x - 1 */
    bs_ml_model_t *m = load_ok(
        "{\"basalt_model\":1,\"inputs\":[{\"name\":\"x\",\"type\":\"float\"}],"
        "\"estimator\":{\"type\":\"linear\",\"link\":\"logistic\",\"coef\":[[2]],"
        "\"intercept\":[-1]},\"output\":{\"task\":\"classification\",\"labels\":[\"no\",\"yes\"]}}");
    assert_int_equal(bs_ml_model_schema(m)->n_outputs, 2);
    assert_string_equal(bs_ml_model_schema(m)->labels[1], "yes");
    x = 0.5;
    predict1(m, &x, out);
    NEAR(out[0], 0.5);
    NEAR(out[1], 0.5);
    x = 1;
    predict1(m, &x, out);
    NEAR(out[1], 1.0 / (1.0 + exp(-1.0)));
    NEAR(out[0] + out[1], 1.0);
    double nan = NAN;
    bs_err_t err;
    assert_int_equal(bs_ml_predict(m, &nan, 1, out, &err), BS_EINVAL);
    assert_non_null(strstr(err.msg, "'x' is missing"));
    bs_ml_model_free(m);

    /* softmax: z = [x, 0, -x] at x = ln 2 -> [2, 1, 0.5] / 3.5 */
    m = load_ok("{\"basalt_model\":1,\"inputs\":[{\"name\":\"x\",\"type\":\"float\"}],"
                "\"estimator\":{\"type\":\"linear\",\"link\":\"softmax\","
                "\"coef\":[[1],[0],[-1]],\"intercept\":[0,0,0]},"
                "\"output\":{\"task\":\"classification\",\"labels\":[\"a\",\"b\",\"c\"]}}");
    x = log(2.0);
    predict1(m, &x, out);
    NEAR(out[0], 2 / 3.5);
    NEAR(out[1], 1 / 3.5);
    NEAR(out[2], 0.5 / 3.5);
    bs_ml_model_free(m);

    /* ovr: sigmoid(0) = 0.5, sigmoid(ln 3) = 0.75 -> normalised 0.4, 0.6 */
    m = load_ok("{\"basalt_model\":1,\"inputs\":[{\"name\":\"x\",\"type\":\"float\"}],"
                "\"estimator\":{\"type\":\"linear\",\"link\":\"ovr\","
                "\"coef\":[[0],[0]],\"intercept\":[0,1.0986122886681098]},"
                "\"output\":{\"task\":\"classification\",\"labels\":[\"a\",\"b\"]}}");
    x = 123;
    predict1(m, &x, out);
    NEAR(out[0], 0.4);
    NEAR(out[1], 0.6);
    bs_ml_model_free(m);
}

/* One stump on x: x <= 1.5 -> leaf 1, else leaf 2. */
#define STUMP(values, extra)                                                                       \
    "{\"feature\":[0,-1,-1],\"threshold\":[1.5,0,0],\"left\":[1,-1,-1],\"right\":[2,-1,-1],"     \
    "\"value\":[null," values "]" extra "}"

static void test_trees(void **state)
{
    (void)state;
    double out[2], x;
    bs_ml_model_t *m = load_ok(
        "{\"basalt_model\":1,\"inputs\":[{\"name\":\"x\",\"type\":\"float\"}],"
        "\"estimator\":{\"type\":\"trees\",\"base\":[0],\"trees\":[" STUMP("[10],[20]", "") "]},"
        "\"output\":{\"task\":\"regression\"}}");
    assert_string_equal(bs_ml_model_kind(m), "trees");
    assert_int_equal(bs_ml_model_handles_missing(m), 1);
    x = 1.5; /* scikit-learn's rule: <= goes left */
    predict1(m, &x, out);
    NEAR(out[0], 10);
    x = 1.5000001;
    predict1(m, &x, out);
    NEAR(out[0], 20);
    x = NAN; /* no missing_left: right */
    predict1(m, &x, out);
    NEAR(out[0], 20);
    bs_ml_model_free(m);

    /* gradient boosting, binary: sigmoid(base + scale * leaf); leaves 0 and 2 ln 3, scale 0.5 */
    m = load_ok("{\"basalt_model\":1,\"inputs\":[{\"name\":\"x\",\"type\":\"float\"}],"
                "\"estimator\":{\"type\":\"trees\",\"base\":[0],\"scale\":0.5,"
                "\"transform\":\"sigmoid\",\"trees\":[" STUMP(
                    "[0],[2.1972245773362196]", ",\"missing_left\":[1,0,0]") "]},"
                "\"output\":{\"task\":\"classification\",\"labels\":[\"n\",\"p\"]}}");
    x = 3;
    predict1(m, &x, out);
    NEAR(out[1], 0.75);
    NEAR(out[0], 0.25);
    x = NAN; /* missing_left: left leaf, p = 0.5 */
    predict1(m, &x, out);
    NEAR(out[1], 0.5);
    bs_ml_model_free(m);

    /* forest classifier: vector leaves averaged over two trees */
    m = load_ok("{\"basalt_model\":1,\"inputs\":[{\"name\":\"x\",\"type\":\"float\"}],"
                "\"estimator\":{\"type\":\"trees\",\"base\":[0,0],\"leaf_width\":2,\"scale\":0.5,"
                "\"trees\":[" STUMP("[1,0],[0,1]", "") "," STUMP("[0.5,0.5],[0.25,0.75]", "") "]},"
                "\"output\":{\"task\":\"classification\",\"labels\":[\"a\",\"b\"]}}");
    x = 2;
    predict1(m, &x, out);
    NEAR(out[0], 0.125);
    NEAR(out[1], 0.875);
    bs_ml_model_free(m);
}

static void test_mlp(void **state)
{
    (void)state;
    /* |x| + 0.5 = relu(x) + relu(-x) + 0.5 */
    bs_ml_model_t *m = load_ok(
        "{\"basalt_model\":1,\"inputs\":[{\"name\":\"x\",\"type\":\"float\"}],"
        "\"estimator\":{\"type\":\"mlp\",\"activation\":\"relu\",\"output_activation\":\"identity\","
        "\"layers\":[{\"weights\":[[1,-1]],\"bias\":[0,0]},{\"weights\":[[1],[1]],\"bias\":[0.5]}]},"
        "\"output\":{\"task\":\"regression\"}}");
    assert_string_equal(bs_ml_model_kind(m), "mlp");
    assert_int_equal(bs_ml_model_prefers_batching(m), 1);
    double rows[] = {-2, 3, 0}, out[3];
    bs_err_t err;
    assert_int_equal(bs_ml_predict(m, rows, 3, out, &err), 0);
    NEAR(out[0], 2.5);
    NEAR(out[1], 3.5);
    NEAR(out[2], 0.5);
    bs_ml_model_free(m);

    /* tanh hidden unit, one logistic output unit (binary): p = sigmoid(2 tanh(x)) */
    m = load_ok("{\"basalt_model\":1,\"inputs\":[{\"name\":\"x\",\"type\":\"float\"}],"
                "\"estimator\":{\"type\":\"mlp\",\"activation\":\"tanh\","
                "\"output_activation\":\"logistic\","
                "\"layers\":[{\"weights\":[[1]],\"bias\":[0]},{\"weights\":[[2]],\"bias\":[0]}]},"
                "\"output\":{\"task\":\"classification\",\"labels\":[\"0\",\"1\"]}}");
    double x = 0.3, p = 1 / (1 + exp(-2 * tanh(0.3)));
    predict1(m, &x, out);
    NEAR(out[1], p);
    NEAR(out[0], 1 - p);
    bs_ml_model_free(m);
}

static void test_min_max_clip_and_drop(void **state)
{
    (void)state;
    /* y = clip(x * 0.5 + 0.1, 0, 1); column "unused" is dropped */
    bs_ml_model_t *m = load_ok(
        "{\"basalt_model\":1,\"inputs\":[{\"name\":\"unused\",\"type\":\"int\"},"
        "{\"name\":\"x\",\"type\":\"float\"},{\"name\":\"flag\",\"type\":\"bool\",\"default\":true}],"
        "\"preprocess\":[{\"columns\":[\"unused\"],\"steps\":[{\"op\":\"drop\"}]},"
        "{\"columns\":[\"x\"],\"steps\":[{\"op\":\"min_max_scale\",\"scale\":[0.5],\"min\":[0.1],"
        "\"clip\":[0,1]}]},{\"columns\":[\"flag\"],\"steps\":[{\"op\":\"passthrough\"}]}],"
        "\"estimator\":{\"type\":\"linear\",\"coef\":[[1,10]],\"intercept\":[0]},"
        "\"output\":{\"task\":\"regression\"}}");
    assert_int_equal(bs_ml_model_schema(m)->features[2].default_value, 1);
    double row[3] = {99, 4, 0}, out[1];
    predict1(m, row, out);
    NEAR(out[0], 1.0);
    row[1] = 0.5;
    row[2] = 1;
    predict1(m, row, out);
    NEAR(out[0], 10.35);
    bs_ml_model_free(m);
}

/* Wide one-hot (3000 columns) exercises the heap scratch path; batch == row by row. */
static void test_wide_model_batch(void **state)
{
    (void)state;
    const int K = 3000;
    size_t cap = (size_t)K * 40 + 4096, n = 0;
    char *j = malloc(cap);
    n += (size_t)snprintf(j + n, cap - n, "{\"basalt_model\":1,\"inputs\":[{\"name\":\"c\","
                                          "\"type\":\"category\",\"categories\":[");
    for (int i = 0; i < K; i++)
        n += (size_t)snprintf(j + n, cap - n, "%s\"k%d\"", i ? "," : "", i);
    n += (size_t)snprintf(j + n, cap - n,
                          "]},{\"name\":\"x\",\"type\":\"float\"}],\"preprocess\":["
                          "{\"columns\":[\"c\"],\"steps\":[{\"op\":\"one_hot\"}]},"
                          "{\"columns\":[\"x\"]}],\"estimator\":{\"type\":\"linear\",\"coef\":[[");
    for (int i = 0; i <= K; i++)
        n += (size_t)snprintf(j + n, cap - n, "%s%d", i ? "," : "", i);
    snprintf(j + n, cap - n, "]],\"intercept\":[0]},\"output\":{\"task\":\"regression\"}}");
    bs_ml_model_t *m = load_ok(j);
    free(j);
    enum { R = 50 };
    double rows[2 * R], out[R], one[1];
    for (int r = 0; r < R; r++) {
        rows[2 * r] = (r * 61) % K;
        rows[2 * r + 1] = r;
    }
    bs_err_t err;
    assert_int_equal(bs_ml_predict(m, rows, R, out, &err), 0);
    for (int r = 0; r < R; r++) {
        predict1(m, rows + 2 * r, one);
        NEAR(out[r], one[0]);
        NEAR(out[r], (double)((r * 61) % K) + (double)K * r);
    }
    bs_ml_model_free(m);
}

static void test_rejects_malformed(void **state)
{
    (void)state;
    bs_err_t err;
    assert_null(bs_ml_load(BS_ML_FORMAT_BASALT_JSON, "", 0, &err));
    assert_int_equal(err.code, BS_EINVAL);
    expect_reject("{\"basalt_model\":1,\"inputs\":[", "malformed or truncated");
    expect_reject("[1,2]", "must be a json object");
    expect_reject("{\"inputs\":[]}", "basalt_model is missing");
    expect_reject("{\"basalt_model\":2}", "version 2 is not supported");
    expect_reject("{\"basalt_model\":\"1\"}", "version number 1");
    expect_reject("{\"basalt_model\":1}", "inputs must be an array");
    expect_reject("{\"basalt_model\":1,\"inputs\":[]}", "inputs has 0 elements, expected 1..100000");
    expect_reject("{\"basalt_model\":1,\"inputs\":[{\"name\":\"a\",\"type\":\"text\"}]}",
                  "inputs[0].type is 'text'");
    expect_reject("{\"basalt_model\":1,\"inputs\":[{\"name\":\"a\",\"type\":\"float\"},"
                  "{\"name\":\"a\",\"type\":\"int\"}]}",
                  "feature name 'a' twice");
    expect_reject("{\"basalt_model\":1,\"inputs\":[{\"name\":\"c\",\"type\":\"category\","
                  "\"categories\":[\"u\",\"u\"]}]}",
                  "category 'u' twice");
    expect_reject("{\"basalt_model\":1,\"inputs\":[{\"name\":\"c\",\"type\":\"category\"}]}",
                  "inputs[0].categories must be an array");
    expect_reject("{\"basalt_model\":1,\"inputs\":[{\"name\":\"a\",\"type\":\"float\","
                  "\"min\":3,\"max\":1}]}",
                  "min 3 above max 1");
}

#define ONE_IN "{\"basalt_model\":1,\"inputs\":[{\"name\":\"x\",\"type\":\"float\"}],"
#define REG ",\"output\":{\"task\":\"regression\"}}"
#define TREE_EST(tree) "\"estimator\":{\"type\":\"trees\",\"base\":[0],\"trees\":[" tree "]}" REG

static void test_rejects_inconsistent(void **state)
{
    (void)state;
    /* shapes */
    expect_reject(ONE_IN "\"estimator\":{\"type\":\"linear\",\"coef\":[[1,2]],\"intercept\":[0]}" REG,
                  "estimator.coef[0] has 2 values, expected 1");
    expect_reject(ONE_IN "\"estimator\":{\"type\":\"linear\",\"coef\":[[1]],\"intercept\":[0,1]}" REG,
                  "estimator.intercept has 2 values, expected 1");
    expect_reject(ONE_IN "\"estimator\":{\"type\":\"svm\"}" REG, "estimator.type is 'svm'");
    expect_reject(ONE_IN "\"estimator\":{\"type\":\"linear\",\"coef\":[[1]],\"intercept\":[0]},"
                         "\"output\":{\"task\":\"classification\",\"labels\":[\"a\",\"b\"]}}",
                  "identity output");
    expect_reject(ONE_IN "\"estimator\":{\"type\":\"linear\",\"link\":\"softmax\","
                         "\"coef\":[[1],[2],[3]],\"intercept\":[0,0,0]},"
                         "\"output\":{\"task\":\"classification\",\"labels\":[\"a\",\"b\"]}}",
                  "output.labels has 2 labels but the estimator produces 3");
    expect_reject(ONE_IN "\"estimator\":{\"type\":\"linear\",\"coef\":[[1]],\"intercept\":[0]},"
                         "\"output\":{\"task\":\"regression\",\"n_outputs\":1000000000}}",
                  "output.n_outputs is 1e+09, expected 1..10000");
    /* non-finite numbers (1e999 parses as infinity) */
    expect_reject(ONE_IN "\"estimator\":{\"type\":\"linear\",\"coef\":[[1e999]],\"intercept\":[0]}" REG,
                  "estimator.coef[0][0] must be finite");
    expect_reject(ONE_IN "\"estimator\":{\"type\":\"linear\",\"coef\":[[NaN]],\"intercept\":[0]}" REG,
                  "malformed");
    /* preprocessing */
    expect_reject(ONE_IN "\"preprocess\":[{\"columns\":[\"y\"]}],"
                         "\"estimator\":{\"type\":\"linear\",\"coef\":[[1]],\"intercept\":[0]}" REG,
                  "names 'y', which is not an input");
    expect_reject(ONE_IN "\"preprocess\":[{\"columns\":[\"x\"],\"steps\":[{\"op\":\"log\"}]}],"
                         "\"estimator\":{\"type\":\"linear\",\"coef\":[[1]],\"intercept\":[0]}" REG,
                  "preprocess[0].steps[0].op is 'log'");
    expect_reject(ONE_IN "\"preprocess\":[{\"columns\":[\"x\"],\"steps\":[{\"op\":\"standard_scale\","
                         "\"mean\":[0],\"scale\":[0]}]}],"
                         "\"estimator\":{\"type\":\"linear\",\"coef\":[[1]],\"intercept\":[0]}" REG,
                  "must be non-zero");
    expect_reject(ONE_IN "\"preprocess\":[{\"columns\":[\"x\"],\"steps\":[{\"op\":\"one_hot\"}]}],"
                         "\"estimator\":{\"type\":\"linear\",\"coef\":[[1]],\"intercept\":[0]}" REG,
                  "not a category feature");
    expect_reject("{\"basalt_model\":1,\"inputs\":[{\"name\":\"c\",\"type\":\"category\","
                  "\"categories\":[\"u\"]}],"
                  "\"estimator\":{\"type\":\"linear\",\"coef\":[[1]],\"intercept\":[0]}" REG,
                  "needs a one_hot step");
    expect_reject("{\"basalt_model\":1,\"inputs\":[{\"name\":\"c\",\"type\":\"category\","
                  "\"categories\":[\"u\"]}],\"preprocess\":[{\"columns\":[\"c\"],\"steps\":["
                  "{\"op\":\"impute\",\"fill\":[\"v\"]},{\"op\":\"one_hot\"}]}],"
                  "\"estimator\":{\"type\":\"linear\",\"coef\":[[1]],\"intercept\":[0]}" REG,
                  "'v' is not one of the 1 categories of 'c'");
    /* trees: cycles, self loops, out of range, shapes */
    expect_reject(ONE_IN TREE_EST("{\"feature\":[0,0,-1],\"threshold\":[1,1,0],\"left\":[1,0,-1],"
                                  "\"right\":[2,2,-1],\"value\":[null,null,[1]]}"),
                  "children must come after their parent");
    expect_reject(ONE_IN TREE_EST("{\"feature\":[0,-1],\"threshold\":[1,0],\"left\":[0,-1],"
                                  "\"right\":[1,-1],\"value\":[null,[1]]}"),
                  "children must come after their parent");
    expect_reject(ONE_IN TREE_EST("{\"feature\":[0,-1],\"threshold\":[1,0],\"left\":[1,-1],"
                                  "\"right\":[7,-1],\"value\":[null,[1]]}"),
                  "right[0] is 7, expected -1..1");
    expect_reject(ONE_IN TREE_EST("{\"feature\":[3,-1,-1],\"threshold\":[1,0,0],\"left\":[1,-1,-1],"
                                  "\"right\":[2,-1,-1],\"value\":[null,[1],[2]]}"),
                  "feature[0] is 3, expected 0..0");
    expect_reject(ONE_IN TREE_EST("{\"feature\":[0,-1,-1],\"threshold\":[1,0,0],\"left\":[1,-1,-1],"
                                  "\"right\":[2,-1],\"value\":[null,[1],[2]]}"),
                  "right has 2 elements, expected 3..3");
    expect_reject(ONE_IN TREE_EST("{\"feature\":[0,-1,-1],\"threshold\":[1,0,0],\"left\":[1,-1,-1],"
                                  "\"right\":[2,-1,-1],\"value\":[null,[1,2],[2]]}"),
                  "value[1] has 2 values, expected 1");
    expect_reject(ONE_IN TREE_EST("{\"feature\":[0,0,-1,-1,-1],\"threshold\":[1,1,0,0,0],"
                                  "\"left\":[1,2,-1,-1,-1],\"right\":[2,3,-1,-1,-1],"
                                  "\"value\":[null,null,[1],[2],[3]]}"),
                  "more than one parent");
    expect_reject(ONE_IN "\"estimator\":{\"type\":\"trees\",\"base\":[0,0],\"trees\":["
                         STUMP("[1],[2]", "") "]}" REG,
                  "trees[0].group is missing");
    expect_reject(ONE_IN "\"estimator\":{\"type\":\"trees\",\"base\":[0],\"leaf_width\":1e9,"
                         "\"trees\":[" STUMP("[1],[2]", "") "]}" REG,
                  "estimator.leaf_width is 1e+09, expected 1..1");
    /* mlp */
    expect_reject(ONE_IN "\"estimator\":{\"type\":\"mlp\",\"activation\":\"relu\","
                         "\"output_activation\":\"identity\",\"layers\":[{\"weights\":[[1,2]],"
                         "\"bias\":[0]}]}" REG,
                  "weights[0] has 2 values, expected 1");
    expect_reject(ONE_IN "\"estimator\":{\"type\":\"mlp\",\"activation\":\"softmax\","
                         "\"output_activation\":\"identity\",\"layers\":[{\"weights\":[[1]],"
                         "\"bias\":[0]}]}" REG,
                  "estimator.activation is 'softmax'");
    expect_reject(ONE_IN "\"estimator\":{\"type\":\"mlp\",\"activation\":\"relu\","
                         "\"output_activation\":\"logistic\",\"layers\":[{\"weights\":[[1,1]],"
                         "\"bias\":[0,0]}]},\"output\":{\"task\":\"classification\","
                         "\"labels\":[\"a\",\"b\"]}}",
                  "needs a last layer of 1 unit");
}

static void test_rejects_deep_nesting(void **state)
{
    (void)state;
    size_t n = 200000;
    char *j = malloc(n + 64);
    memcpy(j, "{\"basalt_model\":1,\"x\":", 22);
    memset(j + 22, '[', n);
    j[22 + n] = '\0';
    expect_reject(j, "malformed");
    free(j);
}

/* Every proper prefix of a valid model is rejected, none crashes. */
static void test_rejects_every_truncation(void **state)
{
    (void)state;
    size_t len = strlen(LINEAR_PIPE);
    for (size_t n = 0; n < len - 1; n++) {
        bs_err_t err;
        char *copy = malloc(n + 1); /* exact size: the loader must not read past len */
        memcpy(copy, LINEAR_PIPE, n);
        bs_ml_model_t *m = bs_ml_load(BS_ML_FORMAT_BASALT_JSON, copy, n, &err);
        free(copy);
        if (m)
            fail_msg("prefix of %zu bytes loaded", n);
        assert_int_equal(err.code, BS_EINVAL);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_pipeline),
        cmocka_unit_test(test_accepts_missing_per_input),
        cmocka_unit_test(test_unknown_category_rejected_by_error_encoder),
        cmocka_unit_test(test_logistic_links),
        cmocka_unit_test(test_trees),
        cmocka_unit_test(test_mlp),
        cmocka_unit_test(test_min_max_clip_and_drop),
        cmocka_unit_test(test_wide_model_batch),
        cmocka_unit_test(test_rejects_malformed),
        cmocka_unit_test(test_rejects_inconsistent),
        cmocka_unit_test(test_rejects_deep_nesting),
        cmocka_unit_test(test_rejects_every_truncation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
