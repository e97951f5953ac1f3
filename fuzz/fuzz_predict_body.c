/*
 * libFuzzer target for the one-row predict fast path (src/serving/fastpath.c).
 *
 * For any input, run against four small models (built once): when
 * bs_serving_parse_fast takes the body, the general path — bs_json_parse and
 * bs_serving_parse_inputs, which produce every error the API returns — must
 * accept it too with exactly one row and bit-identical values (any NaN equals
 * any NaN). Checked with unknown features rejected and ignored. The models
 * mirror tests/unit/test_fastpath.c: int/float/bool features with min, max and
 * defaults (some from a signature override), a category, and a tree that takes
 * missing values. The lenient run also has the smallest row limit (1).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "ml/ml.h"
#include "serving/serving_int.h"

#define CHECK(c, ...)                                                                              \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "check failed: %s (%s:%d): ", #c, __FILE__, __LINE__);                 \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char *const MODELS[][2] = {
    {"{\"basalt_model\":1,"
     " \"inputs\":[{\"name\":\"x\",\"type\":\"float\"},{\"name\":\"n\",\"type\":\"float\"},"
     "   {\"name\":\"b\",\"type\":\"bool\"},{\"name\":\"d\",\"type\":\"float\"},"
     "   {\"name\":\"flag\",\"type\":\"bool\",\"default\":true},"
     "   {\"name\":\"r\",\"type\":\"float\",\"required\":false}],"
     " \"estimator\":{\"type\":\"linear\",\"link\":\"identity\",\"coef\":[[1,2,3,4,5,6]],"
     "   \"intercept\":[0]},"
     " \"output\":{\"task\":\"regression\"}}",
     "[{}, {\"type\":\"int\",\"min\":0,\"max\":100}, {}, {\"default\":2.5,\"min\":-10,\"max\":10},"
     " {}, {}]"},
    {"{\"basalt_model\":1,"
     " \"inputs\":[{\"name\":\"amount\",\"type\":\"float\"},"
     "   {\"name\":\"city\",\"type\":\"category\",\"categories\":[\"berlin\",\"paris\",\"1\"]}],"
     " \"preprocess\":[{\"columns\":[\"amount\"],\"steps\":[]},"
     "   {\"columns\":[\"city\"],\"steps\":[{\"op\":\"one_hot\",\"handle_unknown\":\"ignore\"}]}],"
     " \"estimator\":{\"type\":\"linear\",\"link\":\"identity\",\"coef\":[[1,10,20,30]],"
     "   \"intercept\":[0]},"
     " \"output\":{\"task\":\"regression\"}}",
     NULL},
    {NULL, "[{\"min\":-1e300}, {\"default\":\"paris\"}]"}, /* model 1 again, with an override */
    {"{\"basalt_model\":1,"
     " \"inputs\":[{\"name\":\"f0\",\"type\":\"float\",\"required\":false},"
     "   {\"name\":\"f1\",\"type\":\"int\",\"required\":false,\"min\":-5},"
     "   {\"name\":\"gr\303\266\303\237e\",\"type\":\"bool\",\"required\":false}],"
     " \"estimator\":{\"type\":\"trees\",\"base\":[0.5],\"scale\":1,\"leaf_width\":1,"
     "   \"transform\":\"identity\","
     "   \"trees\":[{\"feature\":[0,-1,1,-1,-1],\"threshold\":[0.5,0,2,0,0],"
     "     \"left\":[1,-1,3,-1,-1],\"right\":[2,-1,4,-1,-1],"
     "     \"value\":[null,[1],null,[2],[3]],\"missing_left\":[1,0,0,0,0]}]},"
     " \"output\":{\"task\":\"regression\"}}",
     NULL},
};
#define N_MODELS (sizeof MODELS / sizeof MODELS[0])

static bs_model_handle_t *handles[N_MODELS];
static bs_serving_t strict = {.o = {.max_rows = 16, .reject_unknown = 1}};
static bs_serving_t lenient = {.o = {.max_rows = 1, .reject_unknown = 0}}; /* the smallest limit */

static void init(void)
{
    for (size_t i = 0; i < N_MODELS; i++) {
        const char *json = MODELS[i][0] ? MODELS[i][0] : MODELS[i - 1][0];
        bs_err_t err;
        bs_err_clear(&err);
        bs_ml_model_t *m = bs_ml_load(BS_ML_FORMAT_BASALT_JSON, json, strlen(json), &err);
        CHECK(m, "model %zu: %s", i, err.msg);
        cJSON *ov = MODELS[i][1] ? cJSON_Parse(MODELS[i][1]) : NULL;
        handles[i] = bs__serving_handle_new(m, ov, NULL, &err);
        cJSON_Delete(ov);
        CHECK(handles[i], "model %zu: %s", i, err.msg);
    }
}

static int same_value(double a, double b)
{
    if (isnan(a) && isnan(b))
        return 1;
    uint64_t x, y;
    memcpy(&x, &a, sizeof x);
    memcpy(&y, &b, sizeof y);
    return x == y;
}

static void check(bs_serving_t *s, const bs_model_handle_t *h, const char *body, size_t len)
{
    int nf = h->sig.n_features;
    double *row = malloc((size_t)nf * sizeof(double)); /* exact size: ASan sees overruns */
    CHECK(row, "out of memory");
    for (int i = 0; i < nf; i++)
        row[i] = -7.25e77;
    int fast = bs_serving_parse_fast(s, h, body, len, row);
    CHECK(fast == 0 || fast == 1, "fast path returned %d", fast);
    /* The general path runs on every body, so it is fuzzed too. */
    bs_err_t err;
    bs_err_clear(&err);
    cJSON *j = bs_json_parse(body, len, 64, &err);
    bs_arena_t a;
    bs_arena_init(&a, 4096);
    double *rows = NULL;
    size_t n = 0;
    int rc = j ? bs_serving_parse_inputs(s, h, j, &a, &rows, &n, &err) : err.code;
    if (fast) {
        CHECK(j, "fast path took a body that is not JSON to the general path: %s", err.msg);
        CHECK(rc == 0, "fast path took a body the general path rejects: %s", err.msg);
        CHECK(n == 1, "fast path took a body of %zu rows", n);
        for (int i = 0; i < nf; i++)
            CHECK(same_value(row[i], rows[i]), "feature '%s': fast %.17g, general %.17g",
                  h->sig.features[i].name, row[i], rows[i]);
    }
    bs_arena_deinit(&a);
    cJSON_Delete(j);
    free(row);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        init();
        ready = 1;
    }
    /* An exact-size copy, not NUL-terminated, so ASan sees any read past the end. */
    char *body = malloc(size ? size : 1);
    if (!body)
        return 0;
    memcpy(body, data, size);
    for (size_t i = 0; i < N_MODELS; i++) {
        check(&strict, handles[i], body, size);
        check(&lenient, handles[i], body, size);
    }
    free(body);
    return 0;
}
