/*
 * libFuzzer target for the model loaders: the input bytes go to bs_ml_load
 * as an XGBoost JSON model and as a basalt model JSON, and to the format
 * sniffer. A model that loads must predict an all-zeros row and an all-NaN
 * row without fault (the walk must terminate and stay in bounds whatever the
 * file said). Seeds: fuzz/corpus/fuzz_model_load/.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "ml/ml.h"

static void exercise(const char *format, const uint8_t *data, size_t size)
{
    bs_err_t err = {0};
    bs_ml_model_t *m = bs_ml_load(format, data, size, &err);
    if (!m)
        return;
    const bs_ml_schema_t *s = bs_ml_model_schema(m);
    size_t nf = (size_t)s->n_features, no = (size_t)s->n_outputs;
    double *rows = calloc(2 * nf + 1, sizeof *rows);
    double *out = calloc(2 * no + 1, sizeof *out);
    if (rows && out) {
        for (size_t i = 0; i < nf; i++)
            rows[nf + i] = NAN;
        /* the second row is NaN only where the model copes with missing values */
        size_t n = bs_ml_model_handles_missing(m) ? 2 : 1;
        (void)bs_ml_predict(m, rows, n, out, &err);
        (void)bs_ml_predict(m, rows, 1, out, &err);
    }
    free(rows);
    free(out);
    (void)bs_ml_model_memory(m);
    bs_ml_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)bs_ml_detect_format(data, size);
    exercise(BS_ML_FORMAT_XGBOOST_JSON, data, size);
    exercise(BS_ML_FORMAT_BASALT_JSON, data, size);
    return 0;
}
