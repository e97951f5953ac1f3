/*
 * `basalt model check`: loads a model file offline, as the server would, and
 * either describes it or predicts rows given in a JSON file. It is the
 * quickest way to see whether an artifact will load and whether its outputs
 * match the training library's (tests/api/test_ml_xgboost.py does exactly
 * that against XGBoost).
 *
 * Rows: a JSON array of arrays, values positional in schema order. Numbers as
 * they are; true/false as 1/0; null as NaN (missing; only for models that
 * handle missing values); a string only for a category feature, mapped to its
 * index, or to -1 if the category is unknown and the feature accepts unknown
 * categories. By default the description and the predictions print as tables
 * (%.6g); with --json as JSON, predictions at %.17g so they read back bit-exact.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "cli/cli.h"
#include "ml/ml.h"

#define MAX_FILE_BYTES ((size_t)1 << 30)
#define MAX_ROWS_DEPTH 16

static void usage(void)
{
    bs_cli_usage(stderr, "model", "check");
}

/* Reads a whole file into a NUL-terminated heap buffer. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "basalt: cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap)
            break;
        if (cap >= MAX_FILE_BYTES) {
            fprintf(stderr, "basalt: %s is larger than the %zu byte limit\n", path,
                    MAX_FILE_BYTES);
            free(buf);
            fclose(f);
            return NULL;
        }
        cap *= 2;
        char *nb = realloc(buf, cap + 1);
        if (!nb)
            free(buf);
        buf = nb;
    }
    if (!buf)
        fprintf(stderr, "basalt: out of memory reading %s\n", path);
    else if (ferror(f)) {
        fprintf(stderr, "basalt: cannot read %s: %s\n", path, strerror(errno));
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}

static const char *type_name(bs_ml_ftype_t t)
{
    switch (t) {
    case BS_ML_INT:
        return "int";
    case BS_ML_BOOL:
        return "bool";
    case BS_ML_CATEGORY:
        return "category";
    default:
        return "float";
    }
}

/* The description for people: one summary line and a table of the inputs. */
static void describe_text(const bs_ml_model_t *m, const char *file, const char *format)
{
    const bs_ml_schema_t *s = bs_ml_model_schema(m);
    printf("%s: %s %s, %s with %d output%s, %d feature%s, %zu bytes in memory%s\n", file, format,
           bs_ml_model_kind(m), s->task == BS_ML_CLASSIFICATION ? "classification" : "regression",
           s->n_outputs, s->n_outputs == 1 ? "" : "s", s->n_features, s->n_features == 1 ? "" : "s",
           bs_ml_model_memory(m), bs_ml_model_handles_missing(m) ? ", handles missing values" : "");
    if (s->labels) {
        printf("labels:");
        for (int i = 0; i < s->n_outputs; i++)
            printf(" %s", s->labels[i]);
        printf("\n");
    }
    bs_cli_table_t t;
    bs_cli_table_init(&t, 5);
    bs_cli_table_row(&t, "FEATURE", "TYPE", "REQUIRED", "RANGE", "CATEGORIES");
    for (int i = 0; i < s->n_features; i++) {
        const bs_ml_feature_t *f = &s->features[i];
        char range[80] = "", cats[256] = "";
        if (f->has_min || f->has_max) {
            char lo[32] = "", hi[32] = "";
            if (f->has_min)
                snprintf(lo, sizeof lo, "%.6g", f->min);
            if (f->has_max)
                snprintf(hi, sizeof hi, "%.6g", f->max);
            snprintf(range, sizeof range, "[%s, %s]", lo, hi);
        }
        size_t k = 0;
        for (int c = 0; f->type == BS_ML_CATEGORY && c < f->n_categories && k < sizeof cats; c++) {
            int w = snprintf(cats + k, sizeof cats - k, "%s%s", c ? "," : "", f->categories[c]);
            k += w > 0 ? (size_t)w : 0;
        }
        bs_cli_table_row(&t, f->name ? f->name : "", type_name(f->type), f->required ? "yes" : "no",
                         range, cats);
    }
    bs_cli_table_print(&t, stdout);
    bs_cli_table_free(&t);
}

static void describe(const bs_ml_model_t *m, const char *format)
{
    const bs_ml_schema_t *s = bs_ml_model_schema(m);
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "format");
    bs_jw_str(&b, format);
    bs_jw_key(&b, "kind");
    bs_jw_str(&b, bs_ml_model_kind(m));
    bs_jw_key(&b, "task");
    bs_jw_str(&b, s->task == BS_ML_CLASSIFICATION ? "classification" : "regression");
    bs_jw_key(&b, "n_outputs");
    bs_jw_int(&b, s->n_outputs);
    bs_jw_key(&b, "labels");
    if (s->labels) {
        bs_jw_arr_begin(&b);
        for (int i = 0; i < s->n_outputs; i++)
            bs_jw_str(&b, s->labels[i]);
        bs_jw_arr_end(&b);
    } else {
        bs_jw_null(&b);
    }
    bs_jw_key(&b, "handles_missing");
    bs_jw_bool(&b, bs_ml_model_handles_missing(m));
    bs_jw_key(&b, "prefers_batching");
    bs_jw_bool(&b, bs_ml_model_prefers_batching(m));
    bs_jw_key(&b, "memory_bytes");
    bs_jw_int(&b, (int64_t)bs_ml_model_memory(m));
    bs_jw_key(&b, "n_features");
    bs_jw_int(&b, s->n_features);
    bs_jw_key(&b, "features");
    bs_jw_arr_begin(&b);
    for (int i = 0; i < s->n_features; i++) {
        const bs_ml_feature_t *f = &s->features[i];
        bs_jw_obj_begin(&b);
        bs_jw_key(&b, "name");
        bs_jw_str(&b, f->name ? f->name : "");
        bs_jw_key(&b, "type");
        bs_jw_str(&b, type_name(f->type));
        bs_jw_key(&b, "required");
        bs_jw_bool(&b, f->required);
        if (f->has_min) {
            bs_jw_key(&b, "min");
            bs_jw_double(&b, f->min);
        }
        if (f->has_max) {
            bs_jw_key(&b, "max");
            bs_jw_double(&b, f->max);
        }
        if (f->has_default) {
            bs_jw_key(&b, "default");
            bs_jw_double(&b, f->default_value);
        }
        if (f->type == BS_ML_CATEGORY) {
            bs_jw_key(&b, "categories");
            bs_jw_arr_begin(&b);
            for (int c = 0; c < f->n_categories; c++)
                bs_jw_str(&b, f->categories[c]);
            bs_jw_arr_end(&b);
            bs_jw_key(&b, "accepts_unknown");
            bs_jw_bool(&b, f->accepts_unknown);
        }
        bs_jw_obj_end(&b);
    }
    bs_jw_arr_end(&b);
    bs_jw_obj_end(&b);
    if (b.oom)
        fprintf(stderr, "basalt: out of memory\n");
    else
        printf("%.*s\n", (int)b.len, b.data);
    bs_buf_free(&b);
}

/* One JSON value -> the double the runtime expects for feature f. */
static int cell_value(const bs_ml_feature_t *f, const cJSON *v, size_t row,
                      int col, double *out)
{
    if (cJSON_IsNull(v)) {
        if (!f->accepts_missing) {
            fprintf(stderr, "basalt: row %zu feature '%s': null, but the model cannot take a "
                            "missing value there\n",
                    row, f->name);
            return -1;
        }
        *out = NAN;
        return 0;
    }
    if (cJSON_IsBool(v) && f->type != BS_ML_CATEGORY) {
        *out = cJSON_IsTrue(v) ? 1.0 : 0.0;
        return 0;
    }
    if (cJSON_IsNumber(v) && f->type != BS_ML_CATEGORY) {
        if (!isfinite(v->valuedouble)) {
            fprintf(stderr, "basalt: row %zu feature '%s': value is not finite\n", row, f->name);
            return -1;
        }
        *out = v->valuedouble;
        return 0;
    }
    if (cJSON_IsString(v) && f->type == BS_ML_CATEGORY) {
        for (int c = 0; c < f->n_categories; c++) {
            if (strcmp(f->categories[c], v->valuestring) == 0) {
                *out = c;
                return 0;
            }
        }
        if (f->accepts_unknown) {
            *out = -1.0;
            return 0;
        }
        fprintf(stderr, "basalt: row %zu feature '%s': unknown category '%.64s'\n", row, f->name,
                v->valuestring);
        return -1;
    }
    fprintf(stderr, "basalt: row %zu column %d (feature '%s', %s): unexpected JSON value\n", row,
            col, f->name, type_name(f->type));
    return -1;
}

static int predict_rows(const bs_ml_model_t *m, const char *path, int json)
{
    size_t len = 0;
    char *text = read_file(path, &len);
    if (!text)
        return 1;
    bs_err_t err = {0};
    cJSON *root = bs_json_parse(text, len, MAX_ROWS_DEPTH, &err);
    free(text);
    if (!root) {
        fprintf(stderr, "basalt: %s: %s\n", path, err.msg);
        return 1;
    }
    int rc = 1;
    const bs_ml_schema_t *s = bs_ml_model_schema(m);
    double *rows = NULL, *out = NULL;
    if (!cJSON_IsArray(root)) {
        fprintf(stderr, "basalt: %s must hold a JSON array of rows\n", path);
        goto done;
    }
    size_t n_rows = (size_t)cJSON_GetArraySize(root);
    size_t nf = (size_t)s->n_features, no = (size_t)s->n_outputs;
    rows = calloc(n_rows * nf + 1, sizeof *rows);
    out = calloc(n_rows * no + 1, sizeof *out);
    if (!rows || !out) {
        fprintf(stderr, "basalt: out of memory for %zu rows\n", n_rows);
        goto done;
    }
    size_t r = 0;
    const cJSON *row;
    cJSON_ArrayForEach(row, root)
    {
        if (!cJSON_IsArray(row) || (size_t)cJSON_GetArraySize(row) != nf) {
            fprintf(stderr, "basalt: row %zu must be an array of %zu values\n", r, nf);
            goto done;
        }
        int col = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, row)
        {
            if (cell_value(&s->features[col], v, r, col, &rows[r * nf + (size_t)col]))
                goto done;
            col++;
        }
        r++;
    }
    if (bs_ml_predict(m, rows, n_rows, out, &err)) {
        fprintf(stderr, "basalt: predict failed: %s\n", err.msg);
        goto done;
    }
    if (json) {
        fputs("{\"predictions\": [", stdout);
        for (size_t i = 0; i < n_rows; i++) {
            fputs(i ? ",\n[" : "\n[", stdout);
            for (size_t k = 0; k < no; k++)
                printf(k ? ", %.17g" : "%.17g", out[i * no + k]);
            fputs("]", stdout);
        }
        fputs("\n]}\n", stdout);
    } else {
        /* ROW and one column per output: a class's probability (P(label)) or a value. */
        bs_cli_table_t t;
        int nc = no + 1 < 32 ? (int)no + 1 : 32;
        bs_cli_table_init(&t, nc);
        char (*cells)[64] = calloc((size_t)nc, sizeof *cells);
        const char *line[32];
        for (int c = 0; cells && c < nc; c++)
            line[c] = cells[c];
        for (size_t i = 0; cells && i <= n_rows; i++) {
            for (int c = 0; c < nc; c++) {
                if (i == 0 && c == 0)
                    snprintf(cells[c], sizeof cells[c], "ROW");
                else if (i == 0 && s->labels)
                    snprintf(cells[c], sizeof cells[c], "P(%.50s)", s->labels[c - 1]);
                else if (i == 0)
                    snprintf(cells[c], sizeof cells[c], no == 1 ? "PREDICTION" : "Y%d", c - 1);
                else if (c == 0)
                    snprintf(cells[c], sizeof cells[c], "%zu", i - 1);
                else
                    snprintf(cells[c], sizeof cells[c], "%.6g", out[(i - 1) * no + (size_t)c - 1]);
            }
            bs_cli_table_rowv(&t, line);
        }
        bs_cli_table_print(&t, stdout);
        bs_cli_table_free(&t);
        free(cells);
    }
    rc = 0;
done:
    cJSON_Delete(root);
    free(rows);
    free(out);
    return rc;
}

int bs_cli_model_check(int argc, char **argv)
{
    const char *file = NULL, *format = NULL, *rows = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--format") == 0 && i + 1 < argc) {
            format = argv[++i];
        } else if (strcmp(argv[i], "--rows") == 0 && i + 1 < argc) {
            rows = argv[++i];
        } else if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage();
            return 0;
        } else if (argv[i][0] == '-' || file) {
            fprintf(stderr, "basalt: model check: unexpected argument '%s'\n", argv[i]);
            usage();
            return 1;
        } else {
            file = argv[i];
        }
    }
    if (!file) {
        usage();
        return 1;
    }
    size_t len = 0;
    char *bytes = read_file(file, &len);
    if (!bytes)
        return 1;
    if (!format) {
        format = bs_ml_detect_format(bytes, len);
        if (!format) {
            fprintf(stderr,
                    "basalt: %s: cannot tell the model format (no top-level \"learner\" or "
                    "\"basalt_model\" key); pass --format\n",
                    file);
            free(bytes);
            return 1;
        }
    }
    bs_err_t err = {0};
    bs_ml_model_t *m = bs_ml_load(format, bytes, len, &err);
    free(bytes);
    if (!m) {
        fprintf(stderr, "basalt: %s: %s (%s)\n", file, err.msg, bs_err_name(err.code));
        return 1;
    }
    int rc = 0;
    if (rows)
        rc = predict_rows(m, rows, json);
    else if (json)
        describe(m, format);
    else
        describe_text(m, file, format);
    bs_ml_model_free(m);
    return rc;
}
