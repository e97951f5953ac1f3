/*
 * A model version's signature: the model's own schema with the overrides a
 * user uploads next to the artifact (feature names, types, ranges, required /
 * default, class labels) applied and checked against what the model can take.
 * Used by the registry when a version is created and by serving when it loads.
 */
#ifndef BS_ML_SIGNATURE_H
#define BS_ML_SIGNATURE_H

#include <cjson/cJSON.h>

#include "base/buf.h"
#include "ml/ml.h"

/*
 * Builds out (owned by the caller; bs_ml_schema_deinit) from the model's schema
 * and the optional overrides (borrowed; NULL = none):
 *   input:  [{"name", "type": float|int|bool|category, "min", "max", "categories",
 *             "required", "default"}, …] or {"features": [...]}, one entry per model input in order;
 *   output: {"labels": [...]} (classification) and/or {"task": "regression"|"classification"}.
 * Errors: BS_EINVAL naming the offending field ("input_schema[2].type").
 */
int bs_ml_signature_build(const bs_ml_model_t *m, const cJSON *input, const cJSON *output,
                          bs_ml_schema_t *out, bs_err_t *err);

/* Renders a schema as {"inputs": [...], "outputs": {...}} JSON into b. */
void bs_ml_signature_render(const bs_ml_schema_t *s, int handles_missing, bs_buf_t *b);

/* Name of a feature type ("float", "int", "bool", "category"). */
const char *bs_ml_ftype_name(bs_ml_ftype_t t);

#endif
