/* The Open Inference Protocol (KServe v2 REST): health, server and model
 * metadata, readiness and infer, as Triton and KServe clients expect.
 * Tensors map to model inputs in one of two layouts:
 *   - one tensor per feature, named after it, shape [N] or [N, 1];
 *   - a single tensor of shape [N, n_features] in signature order.
 * Outputs: "predictions" (regression) or "probabilities" + "label"
 * (classification), plus "prediction_id". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "base/id.h"
#include "ml/signature.h"
#include "serving/serving.h"

void bs__api_v2_live(bs_req_t *req)
{
    static const char body[] = "{\"live\":true}";
    bs_resp_body(req, 200, "application/json", body, sizeof body - 1);
}

void bs__api_v2_ready(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    int ready = bs_meta_ready(app->meta) && !app->shutting_down;
    bs_resp_body(req, ready ? 200 : 503, "application/json", ready ? "{\"ready\":true}" : "{\"ready\":false}",
                 ready ? 14 : 15);
}

void bs__api_v2_server(bs_req_t *req)
{
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "name");
    bs_jw_str(&b, "basalt");
    bs_jw_key(&b, "version");
    bs_jw_str(&b, BS_VERSION);
    bs_jw_key(&b, "extensions");
    bs_jw_arr_begin(&b);
    bs_jw_arr_end(&b);
    bs_jw_obj_end(&b);
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
}

static const char *datatype(bs_ml_ftype_t t)
{
    switch (t) {
    case BS_ML_INT: return "INT64";
    case BS_ML_BOOL: return "BOOL";
    case BS_ML_CATEGORY: return "BYTES";
    default: return "FP64";
    }
}

/* The optional {version}: 0 when absent, -1 after responding 400. */
static int version_of(bs_req_t *req) { return bs__api_version_param(req); }

void bs__api_v2_model(bs_req_t *req)
{
    int version = version_of(req);
    if (version < 0)
        return;
    bs_model_handle_t *h = bs__api_model(req, version);
    if (!h)
        return;
    const bs_ml_schema_t *s = bs_model_handle_schema(h);
    int versions[256];
    int nv = bs_serving_versions(APP(req)->serving, req->who.tenant, bs_model_handle_name(h), versions, 256);
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "name");
    bs_jw_str(&b, bs_model_handle_name(h));
    bs_jw_key(&b, "versions");
    bs_jw_arr_begin(&b);
    for (int i = 0; i < nv; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", versions[i]);
        bs_jw_str(&b, v);
    }
    bs_jw_arr_end(&b);
    bs_jw_key(&b, "platform");
    bs_jw_str(&b, bs_ml_model_kind(bs_model_handle_model(h)));
    bs_jw_key(&b, "inputs");
    bs_jw_arr_begin(&b);
    for (int i = 0; i < s->n_features; i++) {
        bs_jw_obj_begin(&b);
        bs_jw_key(&b, "name");
        bs_jw_str(&b, s->features[i].name);
        bs_jw_key(&b, "datatype");
        bs_jw_str(&b, datatype(s->features[i].type));
        bs_jw_key(&b, "shape");
        bs_jw_raw(&b, "[-1]", 4);
        bs_jw_obj_end(&b);
    }
    bs_jw_arr_end(&b);
    bs_jw_key(&b, "outputs");
    bs_jw_arr_begin(&b);
    char shape[32];
    snprintf(shape, sizeof shape, "[-1,%d]", s->n_outputs);
    if (s->task == BS_ML_CLASSIFICATION) {
        {
            static const char lbl[] = "{\"name\":\"label\",\"datatype\":\"BYTES\",\"shape\":[-1]}";
            bs_jw_raw(&b, lbl, sizeof lbl - 1);
        }
        bs_jw_obj_begin(&b);
        bs_jw_key(&b, "name");
        bs_jw_str(&b, "probabilities");
        bs_jw_key(&b, "datatype");
        bs_jw_str(&b, "FP64");
        bs_jw_key(&b, "shape");
        bs_jw_raw(&b, shape, strlen(shape));
        bs_jw_obj_end(&b);
    } else {
        bs_jw_obj_begin(&b);
        bs_jw_key(&b, "name");
        bs_jw_str(&b, "predictions");
        bs_jw_key(&b, "datatype");
        bs_jw_str(&b, "FP64");
        bs_jw_key(&b, "shape");
        if (s->n_outputs == 1)
            bs_jw_raw(&b, "[-1]", 4);
        else
            bs_jw_raw(&b, shape, strlen(shape));
        bs_jw_obj_end(&b);
    }
    bs_jw_arr_end(&b);
    bs_jw_obj_end(&b);
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
}

void bs__api_v2_model_ready(bs_req_t *req)
{
    int version = version_of(req);
    if (version < 0)
        return;
    bs_model_handle_t *h = bs__api_model(req, version);
    if (!h)
        return;
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "name");
    bs_jw_str(&b, bs_model_handle_name(h));
    bs_jw_key(&b, "ready");
    bs_jw_bool(&b, 1);
    bs_jw_obj_end(&b);
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
}

/* Flattens nested arrays of a tensor's data into a pointer list (row-major). */
static int flatten(const cJSON *d, const cJSON **out, size_t cap, size_t *n, int depth)
{
    if (depth > 4)
        return -1;
    for (const cJSON *c = d->child; c; c = c->next) {
        if (cJSON_IsArray(c)) {
            if (flatten(c, out, cap, n, depth + 1) < 0)
                return -1;
        } else {
            if (*n == cap)
                return -1;
            out[(*n)++] = c;
        }
    }
    return 0;
}

/* The Open Inference Protocol's tensor datatypes (KServe v2 "Tensor Data Types") and the
 * values each may hold in JSON. 64-bit bounds are the largest doubles inside the range. */
typedef enum { DT_BOOL, DT_UINT, DT_INT, DT_FP, DT_BYTES } dt_kind_t;

static const struct {
    const char *name;
    dt_kind_t kind;
    double lo, hi;
} DATATYPES[] = {
    {"BOOL", DT_BOOL, 0, 1},
    {"UINT8", DT_UINT, 0, 255},
    {"UINT16", DT_UINT, 0, 65535},
    {"UINT32", DT_UINT, 0, 4294967295.0},
    {"UINT64", DT_UINT, 0, 18446744073709549568.0},
    {"INT8", DT_INT, -128, 127},
    {"INT16", DT_INT, -32768, 32767},
    {"INT32", DT_INT, -2147483648.0, 2147483647.0},
    {"INT64", DT_INT, -9223372036854775808.0, 9223372036854774784.0},
    {"FP16", DT_FP, -65504, 65504},
    {"FP32", DT_FP, -3.4028234663852886e38, 3.4028234663852886e38},
    {"FP64", DT_FP, -1.7976931348623157e308, 1.7976931348623157e308},
    {"BYTES", DT_BYTES, 0, 0},
};

typedef struct {
    const char *name;
    int dt; /* index in DATATYPES */
    int64_t dims[2];
    int ndim;
    const cJSON **vals;
    size_t n;
} tensor_t;

/* 0 if value v fits datatype dt (null stands for a missing value in any tensor, as in
 * basalt's own API); else sets err naming the tensor. */
static int check_value(const tensor_t *t, const char *field, size_t i, const cJSON *v, bs_err_t *err)
{
    int dt = t->dt;
    if (cJSON_IsNull(v))
        return 0;
    const char *want = NULL;
    switch (DATATYPES[dt].kind) {
    case DT_BOOL:
        if (!cJSON_IsBool(v))
            want = "true or false";
        break;
    case DT_BYTES:
        if (!cJSON_IsString(v))
            want = "a string";
        break;
    default: {
        double x = v->valuedouble;
        if (!cJSON_IsNumber(v) || !isfinite(x))
            want = "a finite number";
        else if (DATATYPES[dt].kind != DT_FP && x != floor(x))
            want = "a whole number";
        else if (x < DATATYPES[dt].lo || x > DATATYPES[dt].hi)
            return bs_err_setf(err, BS_EINVAL, t->name,
                               "input tensor '%.64s' (%s) is %s, and data[%zu] = %.17g is outside "
                               "its range %.17g..%.17g",
                               t->name, field, DATATYPES[dt].name, i, x, DATATYPES[dt].lo,
                               DATATYPES[dt].hi);
        break;
    }
    }
    if (want)
        return bs_err_setf(err, BS_EINVAL, t->name,
                           "input tensor '%.64s' (%s) is %s, so data[%zu] must be %s", t->name,
                           field, DATATYPES[dt].name, i, want);
    return 0;
}

/* 0 if a tensor of datatype dt may feed feature f: numbers for numeric features, BOOL (or
 * 0/1 integers) for bool ones, BYTES (or integer codes) for categories. */
static int check_feature(const tensor_t *t, const bs_ml_feature_t *f, bs_err_t *err)
{
    dt_kind_t k = DATATYPES[t->dt].kind;
    int ok;
    const char *send;
    switch (f->type) {
    case BS_ML_CATEGORY:
        ok = k == DT_BYTES || k == DT_INT || k == DT_UINT;
        send = "BYTES";
        break;
    case BS_ML_BOOL:
        ok = k == DT_BOOL || k == DT_INT || k == DT_UINT;
        send = "BOOL";
        break;
    default:
        ok = k == DT_FP || k == DT_INT || k == DT_UINT;
        send = "FP64, FP32 or an integer datatype";
        break;
    }
    if (!ok)
        return bs_err_setf(err, BS_EINVAL, t->name,
                           "input tensor '%.64s' is %s, which cannot feed feature '%.64s' (%s): "
                           "send %s", t->name, DATATYPES[t->dt].name, f->name, datatype(f->type),
                           send);
    return 0;
}

static int read_tensor(bs_arena_t *a, const cJSON *t, int i, size_t max_vals, tensor_t *out, bs_err_t *err)
{
    char field[32];
    snprintf(field, sizeof field, "inputs[%d]", i);
    if (!cJSON_IsObject(t))
        return bs_err_setf(err, BS_EINVAL, field, "%s must be a tensor object", field);
    const char *dt = NULL;
    if (bs_json_get_str(t, "name", 1, &out->name, err) < 0 || bs_json_get_str(t, "datatype", 1, &dt, err) < 0)
        return bs_err_setf(err, BS_EINVAL, field, "%s needs name and datatype", field);
    out->dt = -1;
    for (int k = 0; k < (int)(sizeof DATATYPES / sizeof DATATYPES[0]); k++)
        if (!strcmp(dt, DATATYPES[k].name))
            out->dt = k;
    if (out->dt < 0)
        return bs_err_setf(err, BS_EINVAL, field, "%s.datatype '%.16s' is not a KServe v2 datatype", field, dt);
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(t, "shape");
    int nd = cJSON_GetArraySize(shape);
    if (!cJSON_IsArray(shape) || nd < 1 || nd > 2)
        return bs_err_setf(err, BS_EINVAL, field, "%s.shape must be [N] or [N, M]", field);
    out->ndim = nd;
    size_t total = 1;
    for (int k = 0; k < nd; k++) {
        const cJSON *d = cJSON_GetArrayItem(shape, k);
        if (!cJSON_IsNumber(d) || d->valuedouble < 1 || d->valuedouble > 1e7 ||
            d->valuedouble != (double)(int64_t)d->valuedouble)
            return bs_err_setf(err, BS_EINVAL, field, "%s.shape must hold positive integers", field);
        out->dims[k] = (int64_t)d->valuedouble;
        total *= (size_t)out->dims[k];
    }
    if (total > max_vals)
        return bs_err_setf(err, BS_ETOOBIG, field, "%s has %zu values, the limit is %zu", field, total, max_vals);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(t, "data");
    if (!cJSON_IsArray(data))
        return bs_err_setf(err, BS_EINVAL, field, "%s.data must be an array", field);
    out->vals = bs_arena_calloc(a, total + 1, sizeof *out->vals);
    out->n = 0;
    if (!out->vals)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    if (flatten(data, out->vals, total, &out->n, 0) < 0 || out->n != total)
        return bs_err_setf(err, BS_EINVAL, field, "%s.data does not hold shape's %zu values", field, total);
    for (size_t k = 0; k < out->n; k++)
        if (check_value(out, field, k, out->vals[k], err))
            return err->code;
    return 0;
}

/* Opens an output tensor {name, datatype, shape: [n] or [n, k], data: [ … */
static void tensor_begin(bs_buf_t *b, const char *name, const char *datatype, size_t n, size_t k)
{
    bs_jw_obj_begin(b);
    bs_jw_key(b, "name");
    bs_jw_str(b, name);
    bs_jw_key(b, "datatype");
    bs_jw_str(b, datatype);
    bs_jw_key(b, "shape");
    bs_jw_arr_begin(b);
    bs_jw_int(b, (int64_t)n);
    if (k)
        bs_jw_int(b, (int64_t)k);
    bs_jw_arr_end(b);
    bs_jw_key(b, "data");
    bs_jw_arr_begin(b);
}

static void tensor_end(bs_buf_t *b)
{
    bs_jw_arr_end(b);
    bs_jw_obj_end(b);
}

int bs__api_oip_rows(bs_arena_t *a, const bs_model_handle_t *h, const cJSON *j, size_t max_rows,
                     const char *skip, double **rows_out, size_t *n_out, bs_err_t *err)
{
    const bs_ml_schema_t *s = bs_model_handle_schema(h);
    size_t nf = (size_t)s->n_features;
    int rc = 0;
    const cJSON *inputs = j ? cJSON_GetObjectItemCaseSensitive(j, "inputs") : NULL;
    if (!cJSON_IsObject(j) || !cJSON_IsArray(inputs) || !cJSON_GetArraySize(inputs))
        return bs_err_setf(err, BS_EINVAL, "inputs", "body must be {\"inputs\": [tensors]}");
    int nt = cJSON_GetArraySize(inputs);
    tensor_t *ts = bs_arena_calloc(a, (size_t)nt, sizeof *ts);
    if (!ts)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    int i = 0, kept = 0;
    for (const cJSON *t = inputs->child; t && !rc; t = t->next, i++) {
        rc = read_tensor(a, t, i, max_rows * (nf > 0 ? nf : 1), &ts[kept], err);
        /* An endpoint's sticky tensor that is no feature is not an input of the model. */
        if (!rc && !(skip && !strcmp(ts[kept].name, skip) &&
                     bs_model_handle_feature(h, skip, strlen(skip)) < 0))
            kept++;
    }
    if (rc)
        return rc;
    nt = kept;
    if (!nt)
        return bs_err_setf(err, BS_EINVAL, "inputs", "body must be {\"inputs\": [tensors]}");
    size_t n = 0;
    double *rows = NULL;
    int positional = nt == 1 && ts[0].ndim == 2 && (size_t)ts[0].dims[1] == nf &&
                     (nf > 1 || bs_model_handle_feature(h, ts[0].name, strlen(ts[0].name)) < 0);
    n = (size_t)ts[0].dims[0];
    if (n > max_rows)
        rc = bs_err_setf(err, BS_ETOOBIG, "inputs", "%zu rows in one request, the limit is %zu", n, max_rows);
    else if (!(rows = bs_arena_calloc(a, n * nf + 1, sizeof(double))))
        rc = bs_err_set(err, BS_ENOMEM, "out of memory");
    char where[96];
    for (size_t c = 0; !rc && positional && c < nf; c++)
        rc = check_feature(&ts[0], &s->features[c], err);
    if (!rc && positional) {
        for (size_t r = 0; r < n && !rc; r++)
            for (size_t c = 0; c < nf && !rc; c++) {
                snprintf(where, sizeof where, "inputs[0] row %zu", r);
                rc = bs_serving_encode_value(h, (int)c, ts[0].vals[r * nf + c], &rows[r * nf + c], where, err);
            }
    } else if (!rc) {
        unsigned char *seen = bs_arena_calloc(a, nf + 1, 1);
        if (!seen)
            rc = bs_err_set(err, BS_ENOMEM, "out of memory");
        for (int k = 0; k < nt && !rc; k++) {
            int f = bs_model_handle_feature(h, ts[k].name, strlen(ts[k].name));
            if (f < 0) {
                rc = bs_err_setf(err, BS_EINVAL, ts[k].name,
                                 "input tensor '%.64s' is not a feature of this model", ts[k].name);
            } else if (seen[f]) {
                rc = bs_err_setf(err, BS_EINVAL, ts[k].name, "input tensor '%.64s' is given twice", ts[k].name);
            } else if ((size_t)ts[k].dims[0] != n || (ts[k].ndim == 2 && ts[k].dims[1] != 1)) {
                rc = bs_err_setf(err, BS_EINVAL, ts[k].name,
                                 "input tensor '%.64s' must have shape [%zu] or [%zu, 1]", ts[k].name, n, n);
            } else if (!(rc = check_feature(&ts[k], &s->features[f], err))) {
                seen[f] = 1;
                for (size_t r = 0; r < n && !rc; r++) {
                    snprintf(where, sizeof where, "%.40s row %zu", ts[k].name, r);
                    rc = bs_serving_encode_value(h, f, ts[k].vals[r], &rows[r * nf + (size_t)f], where, err);
                }
            }
        }
        for (size_t f = 0; f < nf && !rc; f++)
            for (size_t r = 0; !seen[f] && r < n && !rc; r++)
                rc = bs_serving_encode_missing(h, (int)f, &rows[r * nf + f], "inputs", err);
    }
    if (rc)
        return rc;
    *rows_out = rows;
    *n_out = n;
    return 0;
}

void bs__api_oip_render(const bs_model_handle_t *h, const char *model_name, const char *id,
                        const double *out, size_t n, const char (*ids)[37],
                        const char *const *parameters, bs_buf_t *b)
{
    const bs_ml_schema_t *s = bs_model_handle_schema(h);
    size_t k = (size_t)s->n_outputs;
    bs_jw_obj_begin(b);
    bs_jw_key(b, "model_name");
    bs_jw_str(b, model_name);
    bs_jw_key(b, "model_version");
    char vs[16];
    snprintf(vs, sizeof vs, "%d", bs_model_handle_version(h));
    bs_jw_str(b, vs);
    if (id) {
        bs_jw_key(b, "id");
        bs_jw_str(b, id);
    }
    if (parameters && parameters[0]) {
        bs_jw_key(b, "parameters");
        bs_jw_obj_begin(b);
        for (int m = 0; parameters[m]; m += 2) {
            bs_jw_key(b, parameters[m]);
            bs_jw_str(b, parameters[m + 1] ? parameters[m + 1] : "");
        }
        bs_jw_obj_end(b);
    }
    bs_jw_key(b, "outputs");
    bs_jw_arr_begin(b);
    int cls = s->task == BS_ML_CLASSIFICATION;
    tensor_begin(b, cls ? "probabilities" : "predictions", "FP64", n, cls || k > 1 ? k : 0);
    for (size_t q = 0; q < n * k; q++)
        bs_jw_double(b, out[q]);
    tensor_end(b);
    if (cls) {
        tensor_begin(b, "label", "BYTES", n, 0);
        for (size_t r = 0; r < n; r++) {
            size_t best = 0;
            for (size_t c = 1; c < k; c++)
                if (out[r * k + c] > out[r * k + best])
                    best = c;
            bs_jw_str(b, s->labels ? s->labels[best] : "");
        }
        tensor_end(b);
    }
    tensor_begin(b, "prediction_id", "BYTES", n, 0);
    for (size_t r = 0; r < n; r++) {
        char pid[37];
        if (!ids)
            bs_uuid7(pid);
        bs_jw_str(b, ids ? ids[r] : pid);
    }
    tensor_end(b);
    bs_jw_arr_end(b);
    bs_jw_obj_end(b);
}

static void infer(bs_req_t *req, int version)
{
    if (!bs__api_predict_media_ok(req))
        return;
    bs_model_handle_t *h = bs__api_model(req, version);
    if (!h)
        return;
    bs_err_t err;
    bs_err_clear(&err);
    const bs_ml_schema_t *s = bs_model_handle_schema(h);
    cJSON *j = bs_req_json(req, &err);
    int rc = j ? 0 : err.code;
    size_t n = 0;
    double *rows = NULL;
    if (!rc)
        rc = bs__api_oip_rows(&req->arena, h, j, (size_t)req->cfg->max_batch_rows, NULL, &rows, &n, &err);
    size_t k = (size_t)s->n_outputs;
    double *out = NULL;
    if (!rc) {
        out = bs_arena_calloc(&req->arena, n * k + 1, sizeof(double));
        rc = out ? bs_serving_predict(h, rows, n, out, &err) : bs_err_set(&err, BS_ENOMEM, "out of memory");
    }
    if (rc) {
        bs_serving_record(h, 0, 0, rc);
        return bs_resp_error(req, &err);
    }
    const char *id = NULL;
    bs_json_get_str(j, "id", 0, &id, &err);
    bs_buf_t b;
    bs_buf_init(&b);
    bs__api_oip_render(h, bs_model_handle_name(h), id, out, n, NULL, NULL, &b);
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
    bs_serving_record(h, n, bs_time_mono_ns() - req->start_ns, 0);
}

void bs__api_v2_infer(bs_req_t *req)
{
    int v = version_of(req);
    if (v < 0)
        return;
    /* /v2/models/{endpoint}/infer: a name that is no model of the tenant but one of its
     * endpoints is routed through the endpoint. A model of that name wins (clients that
     * call it today keep getting it); "name@alias" and a version always mean a model. */
    const char *name = bs_req_param(req, "name");
    if (!v && name && !strchr(name, '@') &&
        !bs_serving_has_model(APP(req)->serving, req->who.tenant, name) &&
        bs__api_endpoint_exists(req, name))
        return bs__api_endpoint_infer(req);
    infer(req, v);
}
