/* /v1/models…: registry resources (models, versions, approvals, aliases) and
 * online prediction. Handlers parse, call src/registry or src/serving, render. */
#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "registry/registry.h"
#include "serving/serving.h"
#include "base/pool.h"

#define MAX_PAGE 1000

void bs__api_model_metrics(bs_app_t *app, bs_buf_t *out)
{
    if (app->serving)
        bs_serving_metrics(app->serving, out);
    bs_buf_printf(out,
                  "# HELP basalt_upload_bytes Artifact bytes of uploads queued or being parsed.\n"
                  "# TYPE basalt_upload_bytes gauge\n"
                  "basalt_upload_bytes %lld\n"
                  "# HELP basalt_upload_rejections_total Uploads answered 503 because upload_memory_bytes was full.\n"
                  "# TYPE basalt_upload_rejections_total counter\n"
                  "basalt_upload_rejections_total %llu\n",
                  (long long)atomic_load(&app->upload_bytes),
                  (unsigned long long)atomic_load(&app->upload_rejections));
    if (!app->registry)
        return;
    bs_blobs_stats_t bs;
    bs_blobs_stats(bs_registry_blobs(app->registry), &bs);
    bs_buf_printf(out,
                  "# HELP basalt_artifact_cache_hits_total Artifact loads answered from a verified local cache file (artifact_store metadata).\n"
                  "# TYPE basalt_artifact_cache_hits_total counter\n"
                  "basalt_artifact_cache_hits_total %llu\n"
                  "# HELP basalt_artifact_cache_misses_total Artifact loads fetched from the metadata store.\n"
                  "# TYPE basalt_artifact_cache_misses_total counter\n"
                  "basalt_artifact_cache_misses_total %llu\n"
                  "# HELP basalt_artifact_cache_discards_total Local cache files that failed their size or checksum check and were fetched again.\n"
                  "# TYPE basalt_artifact_cache_discards_total counter\n"
                  "basalt_artifact_cache_discards_total %llu\n"
                  "# HELP basalt_artifact_fetched_bytes_total Artifact bytes read from the metadata store.\n"
                  "# TYPE basalt_artifact_fetched_bytes_total counter\n"
                  "basalt_artifact_fetched_bytes_total %llu\n",
                  (unsigned long long)bs.cache_hits, (unsigned long long)bs.cache_misses,
                  (unsigned long long)bs.cache_discards, (unsigned long long)bs.fetched_bytes);
}

/* Sends b as JSON with status, or the error. */
static void finish(bs_req_t *req, int rc, const bs_err_t *err, bs_buf_t *b, int status)
{
    if (rc)
        bs_resp_error(req, err);
    else
        bs_resp_json(req, status, b);
    bs_buf_free(b);
}

static cJSON *body_object(bs_req_t *req, bs_err_t *err)
{
    cJSON *j = bs_req_json(req, err);
    if (j && !cJSON_IsObject(j)) {
        bs_err_set(err, BS_EINVAL, "body must be a JSON object");
        return NULL;
    }
    return j;
}

int bs__api_parse_version(const char *s, size_t len)
{
    if (!s || len == 0 || len > 10 || s[0] == '0')
        return 0;
    long n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        n = n * 10 + (s[i] - '0');
    }
    return n <= 1000000000 ? (int)n : 0;
}

int bs__api_version_param(bs_req_t *req)
{
    size_t len = 0;
    const char *raw = bs_req_param_raw(req, "version", &len);
    if (!raw)
        return 0;
    int v = bs__api_parse_version(raw, len);
    if (!v)
        bs_resp_errorf(req, BS_EINVAL, "version",
                       "version must be a whole number 1-1000000000 written without sign, "
                       "leading zeros or escapes, got '%.32s'", bs_req_param(req, "version"));
    return v ? v : -1;
}

int bs__api_predict_media_ok(bs_req_t *req)
{
    if (bs_req_is_json(req))
        return 1;
    const char *ct = bs_req_header(req, "content-type");
    bs_resp_errorf(req, BS_EMEDIA, NULL,
                   "content type '%.64s' is not accepted for predictions, send application/json",
                   ct ? ct : "");
    return 0;
}

/* The {version} path parameter for routes that have one: > 0, or 0 after responding 400. */
static int version_param(bs_req_t *req)
{
    int v = bs__api_version_param(req);
    return v > 0 ? v : 0;
}

/* ---- work that leaves the I/O thread -----------------------------------------------------
 * Registry writes (a store commit, then a rebuild of the routing snapshot that is
 * O(versions)) are BS_ROUTE_BLOCKING routes: their handlers run on the server's store
 * workers and answer after the rebuild, so the client's next request sees its change.
 * Uploads (parse and load the artifact, write it) and artifact reads keep jobs of their own
 * on the app's worker pool: an upload is charged to upload_memory_bytes before its body is
 * copied, which the generic path could not do. A job owns copies of everything it needs and
 * answers through a deferred response. */

typedef enum { JOB_UPLOAD, JOB_ARTIFACT } job_kind_t;

typedef struct {
    job_kind_t kind;
    bs_app_t *app;
    bs_deferred_t *d;
    bs_principal_t who;
    char name[160];
    char format[40];
    int has_format;
    int version;
    void *artifact; /* heap */
    size_t len;
    size_t reserved; /* bytes charged to app->upload_bytes */
    cJSON *meta; /* heap (cJSON_Duplicate) or NULL */
} job_t;

static void job_free(job_t *j)
{
    if (j->reserved)
        atomic_fetch_sub(&j->app->upload_bytes, (int64_t)j->reserved);
    free(j->artifact);
    cJSON_Delete(j->meta);
    free(j);
}

static void run_job(void *arg)
{
    job_t *j = arg;
    bs_err_t err;
    bs_err_clear(&err);
    bs_buf_t b;
    bs_buf_init(&b);
    int rc, status = 200;
    switch (j->kind) {
    case JOB_UPLOAD:
        rc = bs_registry_version_create(j->app->registry, &j->who, j->name,
                                        j->has_format ? j->format : NULL, j->artifact, j->len,
                                        j->meta, &b, &err);
        status = 201;
        break;
    case JOB_ARTIFACT:
    default: {
        /* Reading and checksumming up to max_body_bytes of file stays off the I/O thread. */
        bs_registry_artifact_t a;
        rc = bs_registry_artifact_get(j->app->registry, j->who.tenant, j->name, j->version, &a, &err);
        if (!rc)
            bs_buf_append(&b, a.bytes, a.len); /* both formats are JSON documents */
        bs_registry_artifact_deinit(&a);
        break;
    }
    }
    /* The upload's bytes leave the budget before the answer does: a client that reads
     * basalt_upload_bytes after its upload was answered must not still find them. */
    free(j->artifact);
    j->artifact = NULL;
    if (j->reserved)
        atomic_fetch_sub(&j->app->upload_bytes, (int64_t)j->reserved);
    j->reserved = 0;
    if (rc)
        bs_deferred_respond_error(j->d, &err);
    else
        bs_deferred_respond_json(j->d, status, &b);
    bs_buf_free(&b);
    size_t upload_len = j->kind == JOB_UPLOAD ? j->len : 0;
    job_free(j);
#ifdef __GLIBC__
    /* Parsing a big artifact leaves megabytes free in this worker's malloc arena; give
     * them back so RSS follows what is in use. */
    if (upload_len >= (1u << 20))
        malloc_trim(0);
#else
    (void)upload_len;
#endif
}

static job_t *job_new(bs_req_t *req, job_kind_t kind)
{
    job_t *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->kind = kind;
    j->app = APP(req);
    j->who = req->who;
    const char *name = bs_req_param(req, "name");
    snprintf(j->name, sizeof j->name, "%s", name ? name : "");
    return j;
}

/* Defers req and queues j; on failure responds itself. Takes ownership of j. */
static void offload(bs_req_t *req, job_t *j)
{
    bs_deferred_t *d = bs_req_defer(req);
    if (!d) {
        job_free(j);
        return bs_resp_errorf(req, BS_ENOMEM, NULL, "out of memory");
    }
    j->d = d;
    if (bs_pool_submit(APP(req)->workers, run_job, j) != 0) {
        bs_err_t err;
        bs_err_set(&err, BS_EUNAVAIL, "the server is shutting down");
        bs_deferred_respond_error(d, &err);
        job_free(j);
    }
}

/* Responds 204, or the error. */
static void finish_empty(bs_req_t *req, int rc, const bs_err_t *err)
{
    if (rc)
        bs_resp_error(req, err);
    else
        bs_resp_empty(req, 204);
}

void bs__api_models_create(bs_req_t *req)
{
    bs_err_t err;
    cJSON *body = body_object(req, &err);
    if (!body)
        return bs_resp_error(req, &err);
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_registry_model_create(APP(req)->registry, &req->who, body, &b, &err);
    finish(req, rc, &err, &b, 201);
}

void bs__api_models_list(bs_req_t *req)
{
    int limit;
    if (bs__api_limit(req, 100, MAX_PAGE, &limit) < 0)
        return;
    bs_err_t err;
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_registry_model_list(APP(req)->registry, req->who.tenant, bs_req_query(req, "prefix"),
                                    bs_req_query(req, "tag"), bs_req_query(req, "cursor"), limit, &b, &err);
    finish(req, rc, &err, &b, 200);
}

void bs__api_models_get(bs_req_t *req)
{
    bs_err_t err;
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_registry_model_get(APP(req)->registry, req->who.tenant, bs_req_param(req, "name"), &b,
                                   &err);
    finish(req, rc, &err, &b, 200);
}

void bs__api_models_update(bs_req_t *req)
{
    bs_err_t err;
    cJSON *body = body_object(req, &err);
    if (!body)
        return bs_resp_error(req, &err);
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_registry_model_update(APP(req)->registry, &req->who, bs_req_param(req, "name"),
                                      body, &b, &err);
    finish(req, rc, &err, &b, 200);
}

void bs__api_models_delete(bs_req_t *req)
{
    bs_err_t err;
    int rc = bs_registry_model_delete(APP(req)->registry, &req->who, bs_req_param(req, "name"),
                                      &err);
    finish_empty(req, rc, &err);
}

void bs__api_versions_create(bs_req_t *req)
{
    bs_err_t err;
    bs_err_clear(&err);
    const char *format = bs_req_query(req, "format");
    const char *artifact = req->body;
    size_t len = req->body_len;
    cJSON *meta = NULL;
    if (bs_req_is_multipart(req)) {
        bs_form_part_t parts[8];
        int n = bs_req_multipart(req, parts, 8, &err);
        if (n < 0)
            return bs_resp_error(req, &err);
        artifact = NULL;
        len = 0;
        for (int i = 0; i < n; i++) {
            if (!strcmp(parts[i].name, "artifact") || !strcmp(parts[i].name, "model") ||
                !strcmp(parts[i].name, "file")) {
                artifact = parts[i].data;
                len = parts[i].len;
            } else if (!strcmp(parts[i].name, "metadata")) {
                meta = bs_json_parse_arena(&req->arena, parts[i].data, parts[i].len,
                                           req->cfg->max_json_depth, &err);
                if (!meta) {
                    char why[256];
                    snprintf(why, sizeof why, "%s", err.msg);
                    return bs_resp_errorf(req, err.code, "metadata", "metadata part: %s", why);
                }
            } else {
                return bs_resp_errorf(req, BS_EINVAL, parts[i].name,
                                      "unknown form part '%.64s'; send 'artifact' and 'metadata'",
                                      parts[i].name);
            }
        }
        if (!artifact)
            return bs_resp_errorf(req, BS_EINVAL, "artifact", "the form has no 'artifact' part");
    } else {
        const char *m = bs_req_query(req, "metadata");
        if (m) {
            meta = bs_json_parse_arena(&req->arena, m, strlen(m), req->cfg->max_json_depth, &err);
            if (!meta)
                return bs_resp_errorf(req, err.code, "metadata", "metadata query parameter: %s", err.msg);
        }
    }
    /* The upload budget: artifacts queued or being parsed on the workers, each held twice
     * (the request body and the job's copy) plus its parse. One upload is always admitted
     * so that a budget below max_body_bytes cannot refuse an artifact for ever. */
    int64_t budget = req->cfg->upload_memory_bytes, need = (int64_t)len;
    int64_t before = atomic_fetch_add(&APP(req)->upload_bytes, need);
    if (before > 0 && before + need > budget) {
        atomic_fetch_sub(&APP(req)->upload_bytes, need);
        atomic_fetch_add(&APP(req)->upload_rejections, 1);
        bs_resp_header(req, "retry-after", "1");
        return bs_resp_errorf(req, BS_EOVERLOAD, NULL,
                              "uploads being processed hold %lld bytes; this %zu-byte artifact "
                              "would pass upload_memory_bytes (%lld); retry later",
                              (long long)before, len, (long long)budget);
    }
    job_t *j = job_new(req, JOB_UPLOAD);
    if (j)
        j->reserved = (size_t)need;
    if (j && format) {
        snprintf(j->format, sizeof j->format, "%s", format);
        j->has_format = 1;
    }
    if (j && len) {
        j->artifact = malloc(len);
        if (j->artifact) {
            memcpy(j->artifact, artifact, len);
            j->len = len;
        }
    }
    if (j && meta)
        j->meta = cJSON_Duplicate(meta, 1);
    if (!j || (len && !j->artifact) || (meta && !j->meta)) {
        if (j)
            job_free(j);
        else
            atomic_fetch_sub(&APP(req)->upload_bytes, need);
        return bs_resp_errorf(req, BS_ENOMEM, NULL, "out of memory for a %zu-byte artifact", len);
    }
    offload(req, j);
}

void bs__api_versions_list(bs_req_t *req)
{
    int limit;
    if (bs__api_limit(req, 100, MAX_PAGE, &limit) < 0)
        return;
    const char *cur = bs_req_query(req, "cursor");
    int cursor = 0;
    if (cur && !(cursor = bs__api_parse_version(cur, strlen(cur))))
        return bs_resp_errorf(req, BS_EINVAL, "cursor", "cursor must be a version number");
    const char *status = bs_req_query(req, "status");
    if (status && strcmp(status, "pending") && strcmp(status, "approved") && strcmp(status, "rejected") &&
        strcmp(status, "archived"))
        return bs_resp_errorf(req, BS_EINVAL, "status",
                              "status must be pending, approved, rejected or archived");
    bs_err_t err;
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_registry_version_list(APP(req)->registry, req->who.tenant, bs_req_param(req, "name"),
                                      status, cursor, limit, &b, &err);
    finish(req, rc, &err, &b, 200);
}

void bs__api_versions_get(bs_req_t *req)
{
    int v = version_param(req);
    if (!v)
        return;
    bs_err_t err;
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_registry_version_get(APP(req)->registry, req->who.tenant, bs_req_param(req, "name"), v,
                                     &b, &err);
    finish(req, rc, &err, &b, 200);
}

void bs__api_versions_artifact(bs_req_t *req)
{
    int v = version_param(req);
    if (!v)
        return;
    job_t *job = job_new(req, JOB_ARTIFACT);
    if (!job)
        return bs_resp_errorf(req, BS_ENOMEM, NULL, "out of memory");
    job->version = v;
    offload(req, job);
}

static void transition(bs_req_t *req, const char *decision)
{
    int v = version_param(req);
    if (!v)
        return;
    bs_err_t err;
    const char *comment = NULL;
    if (req->body_len) {
        cJSON *j = body_object(req, &err);
        if (!j)
            return bs_resp_error(req, &err);
        static const char *const allowed[] = {"comment", NULL};
        if (bs_json_reject_unknown(j, allowed, &err) || bs_json_get_str(j, "comment", 0, &comment, &err) < 0)
            return bs_resp_error(req, &err);
    }
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_registry_version_transition(APP(req)->registry, &req->who,
                                            bs_req_param(req, "name"), v, decision, comment, &b,
                                            &err);
    finish(req, rc, &err, &b, 200);
}

void bs__api_versions_approve(bs_req_t *req) { transition(req, "approve"); }
void bs__api_versions_reject(bs_req_t *req) { transition(req, "reject"); }
void bs__api_versions_archive(bs_req_t *req) { transition(req, "archive"); }

void bs__api_alias_set(bs_req_t *req)
{
    bs_err_t err;
    cJSON *j = body_object(req, &err);
    if (!j)
        return bs_resp_error(req, &err);
    static const char *const allowed[] = {"version", NULL};
    int64_t v;
    if (bs_json_reject_unknown(j, allowed, &err) ||
        bs_json_get_int(j, "version", 1, 1, 1000000000, &v, &err) < 0)
        return bs_resp_error(req, &err);
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_registry_alias_set(APP(req)->registry, &req->who, bs_req_param(req, "name"),
                                   bs_req_param(req, "alias"), (int)v, &b, &err);
    finish(req, rc, &err, &b, 200);
}

void bs__api_alias_delete(bs_req_t *req)
{
    bs_err_t err;
    int rc = bs_registry_alias_delete(APP(req)->registry, &req->who, bs_req_param(req, "name"),
                                      bs_req_param(req, "alias"), &err);
    finish_empty(req, rc, &err);
}

/* ---- predict --------------------------------------------------------------------------- */

/* Loading a version parses its artifact: milliseconds to seconds for big ensembles, which
 * must not stall the other connections of an I/O thread. The serving module's loader
 * threads load it and the request's handler then runs again on its I/O thread. */
static void loaded(void *ud, const bs_err_t *err)
{
    bs_deferred_t *d = ud;
    if (err)
        bs_deferred_respond_error(d, err);
    else
        bs_deferred_resume(d);
}

/* Loads a request may wait for before it is answered 503: a budget smaller than the
 * models in use can evict a version between its load and the request's next run. */
#define MAX_LOAD_WAITS 2

int bs__api_model_resolve(bs_req_t *req, const char *ref, int version, bs_model_handle_t **h,
                          bs_err_t *err)
{
    bs_app_t *app = APP(req);
    bs_serving_slot_t *unloaded = NULL;
    *h = bs_serving_peek(app->serving, req->who.tenant, ref, version, &unloaded, err);
    if (*h)
        return 1;
    if (!unloaded)
        return -1;
    /* Evicted again before this run (the loaded models thrash the budget): answer 503 and
     * let the client retry, rather than load on this thread or bounce for ever. */
    if (req->resumed >= MAX_LOAD_WAITS) {
        bs_serving_overloaded(unloaded, err);
        bs_resp_header(req, "retry-after", "1");
        return -1;
    }
    bs_deferred_t *d = bs_req_defer(req);
    if (!d) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return -1;
    }
    bs_err_t lerr;
    if (bs_serving_load_async(app->serving, unloaded, loaded, d, &lerr) != 0)
        bs_deferred_respond_error(d, &lerr);
    return 0;
}

bs_model_handle_t *bs__api_model(bs_req_t *req, int version)
{
    bs_err_t err;
    bs_err_clear(&err);
    bs_model_handle_t *h = NULL;
    if (bs__api_model_resolve(req, bs_req_param(req, "name"), version, &h, &err) < 0)
        bs_resp_error(req, &err);
    return h;
}

int bs__api_predict_rows(bs_req_t *req, const bs_model_handle_t *h, const char *skip, cJSON **json,
                         double **rows, size_t *n, bs_err_t *err)
{
    bs_app_t *app = APP(req);
    size_t nf = (size_t)bs_model_handle_schema(h)->n_features;
    if (!*json) {
        double *row = bs_arena_alloc(&req->arena, (nf + 1) * sizeof(double));
        if (row && bs_serving_parse_fast(app->serving, h, req->body, req->body_len, row)) {
            *rows = row;
            *n = 1;
            return 0;
        }
        if (!(*json = bs_req_json(req, err)))
            return err->code;
    }
    return bs_serving_parse_inputs_ex(app->serving, h, *json, skip, &req->arena, rows, n, err);
}

typedef struct {
    bs_deferred_t *d;
    uint64_t start_ns;
} batched_t;

/* Runs on the batcher thread: render and hand the response back to the I/O thread. */
static void batched_done(void *ud, bs_model_handle_t *h, const double *out, size_t n, const bs_err_t *err)
{
    batched_t *bt = ud;
    if (!out) {
        bs_serving_record(h, 0, 0, err->code);
        bs_deferred_respond_error(bt->d, err);
    } else {
        char small[2048];
        bs_buf_t b = BS_BUF_ON(small);
        bs_serving_render(h, out, n, &b);
        bs_deferred_respond_json(bt->d, 200, &b);
        bs_buf_free(&b);
        bs_serving_record(h, n, bs_time_mono_ns() - bt->start_ns, 0);
    }
    free(bt);
}

static void predict(bs_req_t *req, int version)
{
    bs_app_t *app = APP(req);
    bs_err_t err;
    bs_err_clear(&err);
    /* Borrowed: the inline path ends within this loop iteration; the batcher takes its own
     * reference when the request is queued. */
    if (!bs__api_predict_media_ok(req))
        return;
    bs_model_handle_t *h = bs__api_model(req, version);
    if (!h)
        return;
    double *rows = NULL, *out = NULL;
    size_t n = 0;
    cJSON *j = NULL;
    int rc = bs__api_predict_rows(req, h, NULL, &j, &rows, &n, &err);
    if (!rc && bs_serving_batched(app->serving, h)) {
        batched_t *bt = malloc(sizeof *bt);
        bs_deferred_t *d = bt ? bs_req_defer(req) : NULL;
        if (d) {
            bt->d = d;
            bt->start_ns = req->start_ns;
            if (bs_serving_submit(app->serving, h, rows, n, batched_done, bt, &err) == 0)
                return;
            free(bt);
            bs_deferred_respond_error(d, &err);
            return;
        }
        free(bt);
        /* Could not defer: predict inline. */
    }
    if (!rc) {
        size_t k = (size_t)bs_model_handle_schema(h)->n_outputs;
        out = bs_arena_calloc(&req->arena, n * k + 1, sizeof(double));
        rc = out ? bs_serving_predict(h, rows, n, out, &err) : bs_err_set(&err, BS_ENOMEM, "out of memory");
    }
    if (rc) {
        bs_serving_record(h, 0, 0, rc);
        return bs_resp_error(req, &err);
    }
    char small[2048];
    bs_buf_t b = BS_BUF_ON(small);
    bs_serving_render(h, out, n, &b);
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
    bs_serving_record(h, n, bs_time_mono_ns() - req->start_ns, 0);
}

void bs__api_predict(bs_req_t *req) { predict(req, 0); }

void bs__api_predict_version(bs_req_t *req)
{
    int v = version_param(req);
    if (v)
        predict(req, v);
}

/* ---- runs and audit -------------------------------------------------------------------- */

void bs__api_runs_create(bs_req_t *req)
{
    bs_err_t err;
    cJSON *body = body_object(req, &err);
    if (!body)
        return bs_resp_error(req, &err);
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_registry_run_create(APP(req)->registry, &req->who, body, &b, &err);
    finish(req, rc, &err, &b, 201);
}

void bs__api_runs_list(bs_req_t *req)
{
    int limit;
    if (bs__api_limit(req, 100, MAX_PAGE, &limit) < 0)
        return;
    bs_err_t err;
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_registry_run_list(APP(req)->registry, req->who.tenant, bs_req_query(req, "experiment"),
                                  bs_req_query(req, "cursor"), limit, &b, &err);
    finish(req, rc, &err, &b, 200);
}

void bs__api_runs_get(bs_req_t *req)
{
    bs_err_t err;
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_registry_run_get(APP(req)->registry, req->who.tenant, bs_req_param(req, "id"), &b, &err);
    finish(req, rc, &err, &b, 200);
}

void bs__api_runs_update(bs_req_t *req)
{
    bs_err_t err;
    cJSON *body = body_object(req, &err);
    if (!body)
        return bs_resp_error(req, &err);
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_registry_run_update(APP(req)->registry, &req->who, bs_req_param(req, "id"), body,
                                    &b, &err);
    finish(req, rc, &err, &b, 200);
}

void bs__api_runs_metrics(bs_req_t *req)
{
    /* A point, {"metrics": [...]}, or an array of points: any JSON value. */
    bs_err_t err;
    cJSON *body = bs_req_json(req, &err);
    if (!body)
        return bs_resp_error(req, &err);
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_registry_run_log_metrics(APP(req)->registry, &req->who, bs_req_param(req, "id"),
                                         body, &b, &err);
    finish(req, rc, &err, &b, 200);
}

void bs__api_audit_list(bs_req_t *req)
{
    int limit;
    if (bs__api_limit(req, 100, MAX_PAGE, &limit) < 0)
        return;
    bs_err_t err;
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_registry_audit_list(APP(req)->registry, req->who.tenant, bs_req_query(req, "cursor"),
                                    limit, &b, &err);
    finish(req, rc, &err, &b, 200);
}
