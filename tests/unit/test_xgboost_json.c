/*
 * Unit tests of the XGBoost JSON loader (src/ml/xgboost_json.c) and of
 * bs_ml_detect_format: a hand-written one-stump model whose predictions are
 * worked out by hand, objectives and base_score, schema mapping, and
 * rejection of malformed or hostile files (every truncation of a valid file
 * included).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ml/ml.h"

/* One stump on f1 < 0.5 (NaN left): leaves -1 and 2; base_score 0.5. */
static const char STUMP[] =
    "{\"learner\":{\"attributes\":{},\"feature_names\":[],\"feature_types\":[],"
    "\"gradient_booster\":{\"model\":{\"gbtree_model_param\":{\"num_parallel_tree\":\"1\","
    "\"num_trees\":\"1\",\"size_leaf_vector\":\"0\"},\"tree_info\":[0],\"trees\":[{\"id\":0,"
    "\"left_children\":[1,-1,-1],\"right_children\":[2,-1,-1],\"split_indices\":[1,0,0],"
    "\"split_conditions\":[0.5,-1.0,2.0],\"default_left\":[1,0,0],\"split_type\":[0,0,0],"
    "\"tree_param\":{\"num_deleted\":\"0\",\"num_feature\":\"2\",\"num_nodes\":\"3\","
    "\"size_leaf_vector\":\"0\"}}]},\"name\":\"gbtree\"},\"learner_model_param\":{"
    "\"base_score\":\"5E-1\",\"num_class\":\"0\",\"num_feature\":\"2\",\"num_target\":\"1\"},"
    "\"objective\":{\"name\":\"reg:squarederror\"}},\"version\":[1,7,4]}";

/* STUMP with the first occurrence of `from` replaced by `to` (caller frees). */
static char *patched(const char *from, const char *to)
{
    const char *at = strstr(STUMP, from);
    if (!at)
        fail_msg("'%s' not in the template", from);
    size_t n = strlen(STUMP) - strlen(from) + strlen(to) + 1;
    char *s = malloc(n);
    snprintf(s, n, "%.*s%s%s", (int)(at - STUMP), STUMP, to, at + strlen(from));
    return s;
}

static bs_ml_model_t *load(const char *json, bs_err_t *err)
{
    return bs_ml_load(BS_ML_FORMAT_XGBOOST_JSON, json, strlen(json), err);
}

static void test_stump_regression(void **state)
{
    (void)state;
    bs_err_t err = {0};
    bs_ml_model_t *m = load(STUMP, &err);
    assert_non_null(m);
    const bs_ml_schema_t *s = bs_ml_model_schema(m);
    assert_int_equal(s->n_features, 2);
    assert_string_equal(s->features[0].name, "f0");
    assert_string_equal(s->features[1].name, "f1");
    assert_int_equal(s->features[1].type, BS_ML_FLOAT);
    assert_int_equal(s->features[0].required, 1);
    assert_int_equal(s->features[0].has_default, 0);
    assert_int_equal(s->task, BS_ML_REGRESSION);
    assert_int_equal(s->n_outputs, 1);
    assert_null(s->labels);
    assert_int_equal(bs_ml_model_handles_missing(m), 1);

    const double rows[] = {9, 0.25, 9, 0.5, 9, 0.75, 9, NAN, NAN, 0.0, 0, 0.49999999};
    /* f1 < 0.5 -> 0.5 - 1; else 0.5 + 2; NaN default left; 0.49999999 -> float 0.5: right */
    const double want[] = {-0.5, 2.5, 2.5, -0.5, -0.5, 2.5};
    double out[6];
    assert_int_equal(bs_ml_predict(m, rows, 6, out, &err), 0);
    for (int i = 0; i < 6; i++)
        assert_true(out[i] == want[i]);
    bs_ml_model_free(m);
}

static void test_objectives(void **state)
{
    (void)state;
    bs_err_t err = {0};
    double rows[] = {0, 0, 0, 1}, out[4];

    /* binary:logistic: base 0.5 -> margin 0; p = sigmoid(-1), sigmoid(2) in float */
    char *j = patched("reg:squarederror", "binary:logistic");
    bs_ml_model_t *m = load(j, &err);
    assert_non_null(m);
    const bs_ml_schema_t *s = bs_ml_model_schema(m);
    assert_int_equal(s->task, BS_ML_CLASSIFICATION);
    assert_int_equal(s->n_outputs, 2);
    assert_string_equal(s->labels[0], "0");
    assert_string_equal(s->labels[1], "1");
    assert_int_equal(bs_ml_predict(m, rows, 2, out, &err), 0);
    float p0 = 1.0f / (1.0f + expf(1.0f)), p1 = 1.0f / (1.0f + expf(-2.0f));
    assert_true(out[1] == p0 && out[3] == p1);
    assert_true(out[0] == 1.0 - (double)p0 && out[2] == 1.0 - (double)p1);
    bs_ml_model_free(m);
    free(j);

    /* count:poisson with base_score 2: margin log 2; exp(log 2 - 1), exp(log 2 + 2) */
    char *j2 = patched("reg:squarederror", "count:poisson");
    j = malloc(strlen(j2) + 1);
    strcpy(j, j2);
    char *at = strstr(j, "5E-1");
    memcpy(at, "2E+0", 4);
    m = load(j, &err);
    assert_non_null(m);
    assert_int_equal(bs_ml_predict(m, rows, 2, out, &err), 0);
    assert_true(fabs(out[0] - 2.0 * exp(-1.0)) < 1e-6);
    assert_true(fabs(out[1] - 2.0 * exp(2.0)) < 1e-5);
    bs_ml_model_free(m);
    free(j);
    free(j2);

    /* binary:logitraw keeps base_score as the margin: sigmoid(0.5 - 1) */
    j = patched("reg:squarederror", "binary:logitraw");
    m = load(j, &err);
    assert_non_null(m);
    assert_int_equal(bs_ml_predict(m, rows, 1, out, &err), 0);
    assert_true(fabs(out[1] - 1.0 / (1.0 + exp(0.5))) < 1e-7);
    bs_ml_model_free(m);
    free(j);

    /* reg:logistic: one column, sigmoid */
    j = patched("reg:squarederror", "reg:logistic");
    m = load(j, &err);
    assert_non_null(m);
    assert_int_equal(bs_ml_model_schema(m)->n_outputs, 1);
    assert_int_equal(bs_ml_predict(m, rows, 1, out, &err), 0);
    assert_true(fabs(out[0] - 1.0 / (1.0 + exp(1.0))) < 1e-7);
    bs_ml_model_free(m);
    free(j);
}

static void test_feature_schema(void **state)
{
    (void)state;
    bs_err_t err = {0};
    char *j = patched("\"feature_names\":[],\"feature_types\":[]",
                      "\"feature_names\":[\"age\",\"smoker\"],\"feature_types\":[\"int\",\"i\"]");
    bs_ml_model_t *m = load(j, &err);
    assert_non_null(m);
    const bs_ml_schema_t *s = bs_ml_model_schema(m);
    assert_string_equal(s->features[0].name, "age");
    assert_int_equal(s->features[0].type, BS_ML_INT);
    assert_string_equal(s->features[1].name, "smoker");
    assert_int_equal(s->features[1].type, BS_ML_BOOL);
    bs_ml_model_free(m);
    free(j);
}

static void expect_reject(const char *json, size_t len, const char *needle)
{
    bs_err_t err = {0};
    bs_ml_model_t *m = bs_ml_load(BS_ML_FORMAT_XGBOOST_JSON, json, len, &err);
    if (m)
        fail_msg("accepted: %.200s", json);
    assert_int_equal(err.code, BS_EINVAL);
    if (needle && !strstr(err.msg, needle))
        fail_msg("message '%s' lacks '%s'", err.msg, needle);
}

static void test_rejections(void **state)
{
    (void)state;
    static const struct {
        const char *from, *to, *needle;
    } cases[] = {
        {"\"left_children\":[1,-1,-1]", "\"left_children\":[0,-1,-1]", "must come after"},
        {"\"right_children\":[2,-1,-1]", "\"right_children\":[1,-1,-1]", "more than one parent"},
        {"\"right_children\":[2,-1,-1]", "\"right_children\":[3,-1,-1]", "right_children[0]"},
        {"\"right_children\":[2,-1,-1]", "\"right_children\":[2,2,-1]", "no left child"},
        {"\"split_indices\":[1,0,0]", "\"split_indices\":[2,0,0]", "feature 2"},
        {"\"split_indices\":[1,0,0]", "\"split_indices\":[1,0]", "entries"},
        {"\"split_indices\":[1,0,0]", "\"split_indices\":[1.5,0,0]", "split_indices[0]"},
        {"\"split_conditions\":[0.5,-1.0,2.0]", "\"split_conditions\":\"x\"", "split_conditions"},
        {"\"split_conditions\":[0.5,-1.0,2.0]", "\"split_conditions\":[0.5,null,2.0]",
         "split_conditions[1]"},
        {"\"split_conditions\":[0.5,", "\"split_conditions\":[1e999,", "not finite"},
        {"\"split_type\":[0,0,0]", "\"split_type\":[1,0,0]", "categorical splits are not supported"},
        {"\"default_left\":[1,0,0]", "\"default_left\":[2,0,0]", "default_left[0]"},
        {"\"num_nodes\":\"3\"", "\"num_nodes\":\"100000000\"", "num_nodes"},
        {"\"num_nodes\":\"3\"", "\"num_nodes\":\"-3\"", "num_nodes"},
        {"\"num_nodes\":\"3\"", "\"num_nodes\":\"3x\"", "num_nodes"},
        {"\"num_trees\":\"1\"", "\"num_trees\":\"1000000000\"", "num_trees"},
        {"\"num_trees\":\"1\"", "\"num_trees\":\"2\"", "model.trees"},
        {"\"tree_info\":[0]", "\"tree_info\":[1]", "tree_info[0]"},
        {"\"num_feature\":\"2\",\"num_target\"", "\"num_feature\":\"1000000000\",\"num_target\"",
         "num_feature"},
        {"\"num_class\":\"0\"", "\"num_class\":\"3\"", "num_class"},
        {"reg:squarederror", "multi:softprob", "num_class"},
        {"reg:squarederror", "rank:pairwise", "rank:pairwise"},
        {"\"name\":\"gbtree\"", "\"name\":\"gblinear\"", "gblinear"},
        {"\"base_score\":\"5E-1\"", "\"base_score\":\"abc\"", "base_score"},
        {"\"feature_types\":[]", "\"feature_types\":[\"c\",\"q\"]", "categorical"},
        {"\"feature_types\":[]", "\"feature_types\":[\"q\",\"zz\"]", "unknown type"},
        {"\"feature_names\":[]", "\"feature_names\":[\"a\"]", "feature names"},
        {"\"feature_names\":[]", "\"feature_names\":[\"a\",\"a\"]", "more than once"},
        {"\"feature_names\":[]", "\"feature_names\":[\"a\",7]", "feature_names[1]"},
        {"\"size_leaf_vector\":\"0\"}}]", "\"size_leaf_vector\":\"5\"}}]", "vector leaves"},
        {"\"tree_param\":{", "\"tree_param\":7,\"x\":{", "tree_param"},
        {"\"learner\":{", "\"learner\":[{", NULL},
        {"\"trees\":[{", "\"trees\":[7,{", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *j = patched(cases[i].from, cases[i].to);
        expect_reject(j, strlen(j), cases[i].needle);
        free(j);
    }
    /* base_score outside (0, 1) for a logistic objective */
    char *j = patched("reg:squarederror", "binary:logistic");
    char *k = malloc(strlen(j) + 2);
    const char *at = strstr(j, "5E-1");
    sprintf(k, "%.*s1.5%s", (int)(at - j), j, at + 4);
    expect_reject(k, strlen(k), "base_score");
    free(k);
    free(j);

    expect_reject("", 0, NULL);
    expect_reject("[]", 2, "object");
    expect_reject("{}", 2, "learner");
    expect_reject("{\"learner\":{}}", 14, "learner_model_param");
    expect_reject("not json", 8, "not valid JSON");
    char trailing[sizeof STUMP + 8];
    snprintf(trailing, sizeof trailing, "%s {}", STUMP);
    expect_reject(trailing, strlen(trailing), "after the JSON value");

    /* every proper prefix of a valid model is rejected, none crashes */
    for (size_t n = 0; n < strlen(STUMP); n++) {
        char *p = malloc(n + 1);
        memcpy(p, STUMP, n); /* not NUL-terminated within n: the loader must respect len */
        bs_err_t err = {0};
        bs_ml_model_t *m = bs_ml_load(BS_ML_FORMAT_XGBOOST_JSON, p, n, &err);
        assert_null(m);
        assert_int_equal(err.code, BS_EINVAL);
        free(p);
    }
    bs_err_t err = {0};
    assert_null(bs_ml_load("onnx", STUMP, strlen(STUMP), &err));
    assert_int_equal(err.code, BS_EINVAL);
}

static void test_multiclass(void **state)
{
    (void)state;
    /* two classes of multi:softprob, one stump each (the same stump), margins equal:
     * softmax gives 0.5 / 0.5 */
#define TREE_FMT                                                                                   \
    "{\"id\":%d,\"left_children\":[1,-1,-1],\"right_children\":[2,-1,-1],"                    \
    "\"split_indices\":[1,0,0],\"split_conditions\":[0.5,-1.0,2.0],"                          \
    "\"default_left\":[1,0,0],\"split_type\":[0,0,0],\"tree_param\":{\"num_nodes\":\"3\"}}"
    char t0[512], t1[512], json[4096];
    snprintf(t0, sizeof t0, TREE_FMT, 0);
    snprintf(t1, sizeof t1, TREE_FMT, 1);
    snprintf(json, sizeof json,
             "{\"learner\":{\"gradient_booster\":{\"model\":{\"gbtree_model_param\":{"
             "\"num_trees\":\"2\"},\"tree_info\":[0,1],\"trees\":[%s,%s]},\"name\":\"gbtree\"},"
             "\"learner_model_param\":{\"base_score\":\"5E-1\",\"num_class\":\"2\","
             "\"num_feature\":\"2\"},\"objective\":{\"name\":\"multi:softmax\","
             "\"softmax_multiclass_param\":{\"num_class\":\"2\"}}}}",
             t0, t1);
    bs_err_t err = {0};
    bs_ml_model_t *m = load(json, &err);
    if (!m)
        fail_msg("%s", err.msg);
    const bs_ml_schema_t *s = bs_ml_model_schema(m);
    assert_int_equal(s->n_outputs, 2);
    assert_string_equal(s->labels[1], "1");
    double row[2] = {0, 0}, out[2];
    assert_int_equal(bs_ml_predict(m, row, 1, out, &err), 0);
    assert_true(out[0] == 0.5 && out[1] == 0.5);
    bs_ml_model_free(m);

    /* the objective's num_class disagrees with the model's */
    char *bad = strstr(json, "\"softmax_multiclass_param\":{\"num_class\":\"2\"");
    bad[strlen("\"softmax_multiclass_param\":{\"num_class\":\"")] = '3';
    expect_reject(json, strlen(json), "num_class");
}

static void test_detect_format(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *want;
    } cases[] = {
        {"{\"learner\": {}}", BS_ML_FORMAT_XGBOOST_JSON},
        {"  {\"version\": [1, 7, 4], \"learner\": {}}", BS_ML_FORMAT_XGBOOST_JSON},
        {"{\"a\": {\"learner\": 1}, \"basalt_model\": {}}", BS_ML_FORMAT_BASALT_JSON},
        {"{\"x\": \"}\\\"learner\", \"basalt_model\": 1}", BS_ML_FORMAT_BASALT_JSON},
        {"{\"a\": [1, {\"learner\": 2}], \"b\": 3}", NULL},
        {"{\"learnerx\": 1}", NULL},
        {"[\"learner\"]", NULL},
        {"\"learner\"", NULL},
        {"{\"a\": 1 \"learner\": 2}", NULL},
        {"{\"a\": [1, 2", NULL},
        {"", NULL},
        {"{", NULL},
        {"{\"lear", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *got = bs_ml_detect_format(cases[i].text, strlen(cases[i].text));
        if (cases[i].want == NULL ? got != NULL : (got == NULL || strcmp(got, cases[i].want)))
            fail_msg("case %zu (%s): got %s", i, cases[i].text, got ? got : "NULL");
    }
    assert_string_equal(bs_ml_detect_format(STUMP, strlen(STUMP)), BS_ML_FORMAT_XGBOOST_JSON);
    assert_null(bs_ml_detect_format(STUMP, 5));
    assert_null(bs_ml_detect_format(NULL, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stump_regression), cmocka_unit_test(test_objectives),
        cmocka_unit_test(test_feature_schema),   cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_multiclass),       cmocka_unit_test(test_detect_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
