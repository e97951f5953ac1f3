/* Private to src/api: handler declarations and small rendering helpers. */
#ifndef BS_API_API_INT_H
#define BS_API_API_INT_H

#include "api/api.h"
#include "base/json.h"
#include "base/time.h"
#include "serving/serving.h"

#define APP(req) ((bs_app_t *)(req)->app)

/* system.c */
void bs__api_healthz(bs_req_t *req);
void bs__api_readyz(bs_req_t *req);
void bs__api_metrics(bs_req_t *req);
void bs__api_openapi(bs_req_t *req);
void bs__api_docs(bs_req_t *req);
void bs__api_info(bs_req_t *req);

/* docs.c: renders the OpenAPI document (JSON text) as the /docs HTML page into b.
 * Returns 0, or BS_EINTERNAL (not JSON) / BS_ENOMEM. */
int bs__api_docs_render(const char *openapi, size_t len, bs_buf_t *b, bs_err_t *err);

/* models.c: per-model prediction metrics for /metrics. */
void bs__api_model_metrics(bs_app_t *app, bs_buf_t *out);

/* keys.c */
void bs__api_keys_create(bs_req_t *req);
void bs__api_keys_list(bs_req_t *req);
void bs__api_keys_delete(bs_req_t *req);
void bs__api_tenants_create(bs_req_t *req);
void bs__api_tenants_list(bs_req_t *req);

/* models.c */
void bs__api_models_create(bs_req_t *req);
void bs__api_models_list(bs_req_t *req);
void bs__api_models_get(bs_req_t *req);
void bs__api_models_update(bs_req_t *req);
void bs__api_models_delete(bs_req_t *req);
void bs__api_versions_create(bs_req_t *req);
void bs__api_versions_list(bs_req_t *req);
void bs__api_versions_get(bs_req_t *req);
void bs__api_versions_artifact(bs_req_t *req);
void bs__api_versions_approve(bs_req_t *req);
void bs__api_versions_reject(bs_req_t *req);
void bs__api_versions_archive(bs_req_t *req);
void bs__api_alias_set(bs_req_t *req);
void bs__api_alias_delete(bs_req_t *req);
void bs__api_predict(bs_req_t *req);
void bs__api_predict_version(bs_req_t *req);
void bs__api_runs_create(bs_req_t *req);
void bs__api_runs_list(bs_req_t *req);
void bs__api_runs_get(bs_req_t *req);
void bs__api_runs_update(bs_req_t *req);
void bs__api_runs_metrics(bs_req_t *req);
void bs__api_audit_list(bs_req_t *req);

/* The model version a request names (route param "name"), borrowed for this run of the
 * handler (bs_serving_peek). NULL when the handler must return at once: it responded with
 * an error, or the version is loading on a worker and the handler will run again. */
bs_model_handle_t *bs__api_model(bs_req_t *req, int version);
/* The same for any reference (bs_serving_peek's ref and version) without responding: 1 and
 * *h (borrowed for this run of the handler); 0 when the version is loading on the serving
 * module's loader threads and the handler will run again (req->resumed counts the runs;
 * the request is deferred: return at once); -1 with err set (a Retry-After header is
 * already added for BS_EOVERLOAD), for the caller to answer. */
int bs__api_model_resolve(bs_req_t *req, const char *ref, int version, bs_model_handle_t **h,
                          bs_err_t *err);
/* A predict body's rows for h (arena-allocated): when *json is NULL the one-row fast path is
 * tried on the raw body first, and the body is parsed (*json set) only if it declines; a
 * body already parsed (*json given) goes to bs_serving_parse_inputs directly. 0 or the
 * error (err set: BS_EINVAL naming the field, BS_ETOOBIG, BS_EPARSE, BS_EMEDIA). skip: a field
 * that is never an unknown feature (bs_serving_parse_inputs_ex), NULL for none. */
int bs__api_predict_rows(bs_req_t *req, const bs_model_handle_t *h, const char *skip, cJSON **json,
                         double **rows, size_t *n, bs_err_t *err);

/* A version number as written in a path or query: the canonical decimal 1..1000000000
 * only (no sign, space, leading zero, fraction or percent-encoding, so that one version has
 * one URL). Returns it, or 0 for anything else. */
int bs__api_parse_version(const char *s, size_t len);
/* The {version} path parameter, checked on its bytes as sent (bs__api_parse_version).
 * Returns it, 0 when the route has none, or -1 after responding 400 (field "version"). */
int bs__api_version_param(bs_req_t *req);
/* 1 if a predict or infer body may be read as JSON: no Content-Type, application/json
 * (parameters allowed) or application/x-www-form-urlencoded (what curl -d sends). Else
 * responds 415 and returns 0. */
int bs__api_predict_media_ok(bs_req_t *req);

/* jobs.c: /v1/jobs, /v1/job-kinds and the diagnostic `sleep` kind. register: registers the
 * API's own kinds (sleep) on app->jobs, before bs_jobs_start; unregister: after
 * bs_jobs_free, stops the sleep kind's timer. */
int bs__api_jobs_register(bs_app_t *app, bs_err_t *err);
void bs__api_jobs_unregister(bs_app_t *app);
void bs__api_jobs_list(bs_req_t *req);
void bs__api_jobs_get(bs_req_t *req);
void bs__api_jobs_create(bs_req_t *req);
void bs__api_jobs_cancel(bs_req_t *req);
void bs__api_jobs_retry(bs_req_t *req);
void bs__api_job_kinds(bs_req_t *req);

/* kserve.c */
void bs__api_v2_live(bs_req_t *req);
void bs__api_v2_ready(bs_req_t *req);
void bs__api_v2_server(bs_req_t *req);
void bs__api_v2_model(bs_req_t *req);
void bs__api_v2_model_ready(bs_req_t *req);
void bs__api_v2_infer(bs_req_t *req);
/* An Open Inference Protocol body {"inputs": [tensors]} (j, borrowed) as rows for h
 * (arena-allocated in a), at most max_rows: one tensor per feature ([N] or [N, 1]) or one
 * [N, n_features] tensor in signature order. 0 or BS_EINVAL naming the tensor, BS_ETOOBIG,
 * BS_ENOMEM. A tensor named skip (NULL: none) that is no feature is left out: an endpoint's
 * sticky field. (The endpoint path and its shadow runs read bodies with it too.) */
int bs__api_oip_rows(bs_arena_t *a, const bs_model_handle_t *h, const cJSON *j, size_t max_rows,
                     const char *skip, double **rows, size_t *n, bs_err_t *err);
/* The infer response for n rows of out: model_name, model_version (h's), id (NULL: none),
 * parameters (string members {key, value, …, NULL}; NULL or empty: none), the output
 * tensors and prediction_id (ids[r], or fresh UUIDv7s when ids is NULL). */
void bs__api_oip_render(const bs_model_handle_t *h, const char *model_name, const char *id,
                        const double *out, size_t n, const char (*ids)[37],
                        const char *const *parameters, bs_buf_t *b);

/* ---- declarative resources (resources.c, kinds.c) ----------------------------------------
 * One kind of resource: its PUT/GET/DELETE /v1/<plural>/{name} routes and `basalt apply`
 * documents run through the generic handlers of resources.c, which call these hooks. */
typedef struct {
    const char *kind;   /* "Topic" */
    const char *plural; /* "topics": the path segment */
    const char *summary; /* "a durable topic of events" (for /v1/kinds and the docs) */
    /* Checks spec (the body's spec object; borrowed) of resource name and returns in *out a
     * new normalised spec the caller frees (defaults filled in), or an error (BS_EINVAL with
     * err->field naming the spec field). Runs on a store worker. Required. */
    int (*validate)(bs_app_t *app, const bs_principal_t *who, const char *name, const cJSON *spec,
                    cJSON **out, bs_err_t *err);
    /* Before a put is stored (every put but a dry run, changed or not): what the resource
     * needs to exist first, created idempotently (the topic in the log, a trigger's registry
     * topic). A failure stores nothing and is the answer. Optional. */
    int (*prepare)(bs_app_t *app, const char *tenant, const char *name, const char *spec,
                   bs_err_t *err);
    /* After this replica committed a delete: side effects that must happen before the
     * response (the topic's log dropped). Optional. */
    int (*deleted)(bs_app_t *app, const char *tenant, const char *name, bs_err_t *err);
    /* Adds live state to a GET's object under "status" (e.g. offsets, lag). Optional. */
    void (*status)(bs_app_t *app, const char *tenant, const char *name, const char *spec,
                   cJSON *status);
    /* The spec as GET shows it, secrets hidden (e.g. a webhook's secret). Optional: the spec
     * as stored otherwise. Edits obj in place. */
    void (*redact)(cJSON *spec);
    /* Rebuilds this kind's in-process snapshot from the store (scope "resources" moved, on
     * the change watcher's thread or the writer's). Optional. */
    int (*rebuild)(bs_app_t *app, bs_err_t *err);
} bs__api_kind_t;

/* The kinds table (kinds.c), ended by a row with kind NULL. */
extern const bs__api_kind_t bs__api_kinds[];
/* The kind whose plural is the first path segment after /v1/ of req's route, or NULL. */
const bs__api_kind_t *bs__api_kind_of(const bs_req_t *req);
/* Rebuilds every kind's snapshot (the "resources" scope subscriber). */
int bs__api_resources_rebuild(bs_app_t *app, bs_err_t *err);

/* The write path of a PUT, also a rollback's: validates spec (borrowed) as kind k's resource
 * name, then — unless dry_run (the object the write would leave, nothing written) — runs
 * the kind's prepare hook, stores it (expect_generation > 0: 409 unless the stored
 * generation is that), rebuilds this replica's snapshots and answers with the resource's
 * object: 201 created, 200 updated or unchanged. */
void bs__api_resource_write(bs_req_t *req, const bs__api_kind_t *k, const char *name,
                            const cJSON *spec, int dry_run, int64_t expect_generation);
/* ?name=true|false|1|0 (empty: true) into *out (absent: 0). 0, or -1 after a 400. */
int bs__api_query_bool(bs_req_t *req, const char *name, int *out);
void bs__api_resource_put(bs_req_t *req);
void bs__api_resource_get(bs_req_t *req);
void bs__api_resource_list(bs_req_t *req);
void bs__api_resource_delete(bs_req_t *req);
void bs__api_kinds_list(bs_req_t *req);

/* triggers.c: the Trigger kind's hooks. */
int bs__api_trigger_validate(bs_app_t *app, const bs_principal_t *who, const char *name,
                             const cJSON *spec, cJSON **out, bs_err_t *err);
int bs__api_trigger_prepare(bs_app_t *app, const char *tenant, const char *name, const char *spec,
                            bs_err_t *err);
int bs__api_trigger_deleted(bs_app_t *app, const char *tenant, const char *name, bs_err_t *err);
void bs__api_trigger_status(bs_app_t *app, const char *tenant, const char *name, const char *spec,
                            cJSON *status);
int bs__api_trigger_rebuild(bs_app_t *app, bs_err_t *err);

/* Four routes of a kind: PUT/GET/DELETE /v1/<plural>/{name}, GET /v1/<plural>. SPEC is the
 * JSON Schema of the kind's spec (a string literal). */
#define RESOURCE_SCHEMA(SPEC)                                                                      \
    "{\"type\":\"object\",\"required\":[\"kind\",\"name\",\"spec\",\"generation\"],"      \
    "\"properties\":{\"kind\":{\"type\":\"string\"},\"name\":{\"type\":\"string\"},"         \
    "\"tenant\":{\"type\":\"string\"},\"spec\":" SPEC ",\"generation\":{\"type\":\"integer\""  \
    "},\"created_at\":{\"type\":\"string\",\"format\":\"date-time\"},\"updated_at\":{\"type"   \
    "\":\"string\",\"format\":\"date-time\"},\"created_by\":{\"type\":\"string\"},\"updated_"  \
    "by\":{\"type\":\"string\"},\"outcome\":{\"type\":\"string\",\"enum\":[\"created\",\"up"   \
    "dated\",\"unchanged\"]},\"status\":{\"type\":\"object\"}}}"
#define RESOURCE_ROUTES(PLURAL, WHAT, SPEC, TAG)                                                   \
    {"PUT", "/v1/" PLURAL "/{name}", bs__api_resource_put, BS_ROLE_DEVELOPER,                      \
     "Create or replace " WHAT " (the spec, or {kind, name, spec}; ?dry_run=true validates "      \
     "and reports the outcome without writing)",                                                   \
     TAG, SPEC, RESOURCE_SCHEMA(SPEC), 200, BS_ROUTE_BLOCKING},                                    \
        {"GET", "/v1/" PLURAL, bs__api_resource_list, BS_ROLE_VIEWER,                              \
         "List " WHAT "s (limit, cursor)", TAG, NULL,                                              \
         "{\"type\":\"object\",\"required\":[\"items\",\"next_cursor\"],\"properties\":{"    \
         "\"items\":{\"type\":\"array\",\"items\":" RESOURCE_SCHEMA(SPEC) "},\"next_cursor"   \
         "\":{\"type\":[\"string\",\"null\"]}}}",                                                \
         0, BS_ROUTE_BLOCKING},                                                                    \
        {"GET", "/v1/" PLURAL "/{name}", bs__api_resource_get, BS_ROLE_VIEWER,                     \
         "Get " WHAT " with its live status", TAG, NULL, RESOURCE_SCHEMA(SPEC), 0,                 \
         BS_ROUTE_BLOCKING},                                                                       \
        {"DELETE", "/v1/" PLURAL "/{name}", bs__api_resource_delete, BS_ROLE_DEVELOPER,            \
         "Delete " WHAT, TAG, NULL, NULL, 204, BS_ROUTE_BLOCKING}

/* webhooks.c: the Webhook kind's hooks and routes; metrics of the outbound client and the
 * deliveries (basalt_http_client_*, basalt_webhook_*). */
int bs__api_webhook_validate(bs_app_t *app, const bs_principal_t *who, const char *name,
                             const cJSON *spec, cJSON **out, bs_err_t *err);
void bs__api_webhook_redact(cJSON *spec);
void bs__api_webhook_status(bs_app_t *app, const char *tenant, const char *name, const char *spec,
                            cJSON *status);
void bs__api_webhook_secret(bs_req_t *req);
void bs__api_webhook_test(bs_req_t *req);
void bs__api_webhook_deliveries_list(bs_req_t *req);
void bs__api_webhook_delivery_get(bs_req_t *req);
void bs__api_webhook_delivery_replay(bs_req_t *req);
void bs__api_webhooks_metrics(bs_app_t *app, bs_buf_t *b);
/* topics.c: the Topic kind's hooks and the topic routes */
int bs__api_topic_validate(bs_app_t *app, const bs_principal_t *who, const char *name,
                           const cJSON *spec, cJSON **out, bs_err_t *err);
int bs__api_topic_prepare(bs_app_t *app, const char *tenant, const char *name, const char *spec,
                          bs_err_t *err);
int bs__api_topic_deleted(bs_app_t *app, const char *tenant, const char *name, bs_err_t *err);
void bs__api_topic_status(bs_app_t *app, const char *tenant, const char *name, const char *spec,
                          cJSON *status);
int bs__api_topic_rebuild(bs_app_t *app, bs_err_t *err);
/* Makes sure topic dl of tenant exists (a Topic resource with the default spec, and in the
 * log): dead letter topics are ordinary topics, created when a topic or group names one.
 * Waits on the store and the log. */
int bs__api_topic_ensure_dead_letter(bs_app_t *app, const char *tenant, const char *dl,
                                     bs_err_t *err);
/* The same for any topic the system makes (the registry's events): the resource's actor
 * is actor ("system:dead-letter", "system:registry-events"). */
int bs__api_topic_ensure(bs_app_t *app, const char *tenant, const char *name, const char *actor,
                         bs_err_t *err);
/* The same with a spec (JSON text; NULL: the defaults) for a topic that does not exist yet
 * (an existing topic keeps its own): the endpoints' `predictions` and `feedback`. */
int bs__api_topic_ensure_spec(bs_app_t *app, const char *tenant, const char *name,
                              const char *spec, const char *actor, bs_err_t *err);
void bs__api_topic_publish(bs_req_t *req);
void bs__api_topic_read(bs_req_t *req);
/* An offset as a query or header gives it: a canonical non-negative decimal (no sign or
 * spaces, at most 18 digits). 0 and *out, or -1. */
int bs__api_parse_offset(const char *s, int64_t *out);
/* Writes the member "error": {"code", "message", "field" (when field is neither NULL nor
 * "")} into the object being written to b (a per-item error, an SSE error event). */
void bs__api_render_error_obj(bs_buf_t *b, int code, const char *field, const char *msg);
/* topic_stream.c: GET /v1/topics/{name}/stream (Server-Sent Events) */
void bs__api_topic_stream(bs_req_t *req);
void bs__api_topic_replay(bs_req_t *req);
void bs__api_consumer_put(bs_req_t *req);
void bs__api_consumer_get(bs_req_t *req);
void bs__api_consumer_list(bs_req_t *req);
void bs__api_consumer_delete(bs_req_t *req);
void bs__api_consumer_fetch(bs_req_t *req);
void bs__api_consumer_ack(bs_req_t *req);
void bs__api_consumer_nack(bs_req_t *req);
void bs__api_consumer_in_progress(bs_req_t *req);

/* ---- endpoints.c: the Endpoint kind's hooks, revisions and rollback ---------------------- */
int bs__api_endpoint_validate(bs_app_t *app, const bs_principal_t *who, const char *name,
                              const cJSON *spec, cJSON **out, bs_err_t *err);
/* Ensures the tenant's system topics `predictions` and `feedback`. */
int bs__api_endpoint_prepare(bs_app_t *app, const char *tenant, const char *name, const char *spec,
                             bs_err_t *err);
void bs__api_endpoint_status(bs_app_t *app, const char *tenant, const char *name, const char *spec,
                             cJSON *status);
int bs__api_endpoint_rebuild(bs_app_t *app, bs_err_t *err);
void bs__api_endpoint_revisions(bs_req_t *req);
void bs__api_endpoint_rollback(bs_req_t *req);
/* basalt_endpoint_* families (serving/endpoints.h) for /metrics. */
void bs__api_endpoints_metrics(bs_app_t *app, bs_buf_t *b);

/* ---- endpoint_predict.c: POST /v1/endpoints/{name}/predict, OIP infer on an endpoint ---- */
/* POST /v1/endpoints/{name}/predict (inline): routes the request through the endpoint's
 * policy (serving/endpoints.h), predicts on the chosen version, runs the shadows off the
 * request path and logs the prediction (serving/predlog.h). */
void bs__api_endpoint_predict(bs_req_t *req);
/* POST /v2/models/{name}/infer where name is an endpoint (kserve.c decides): the same routing
 * with an Open Inference Protocol body and answer. */
void bs__api_endpoint_infer(bs_req_t *req);
/* 1 if the caller's tenant has an endpoint called name (the snapshot; I/O thread). */
int bs__api_endpoint_exists(bs_req_t *req, const char *name);
/* The shadow runner (serving/shadow.h) on app->shadow: opened after serving, closed first. */
int bs__api_shadow_open(bs_app_t *app, bs_err_t *err);
void bs__api_shadow_close(bs_app_t *app);
void bs__api_shadow_metrics(bs_app_t *app, bs_buf_t *b);

/* ---- predictions.c: the prediction log's read routes ------------------------------------- */
void bs__api_predictions_list(bs_req_t *req);

/* ---- monitor.c: feedback, performance, experiment and shadow reports --------------------- */
void bs__api_feedback(bs_req_t *req);
void bs__api_endpoint_performance(bs_req_t *req);
void bs__api_endpoint_experiment(bs_req_t *req);
void bs__api_endpoint_shadow(bs_req_t *req);
/* Opens app->monitor on the log (none without one) and wires it to the endpoints module:
 * its rebuild hook tracks each tenant with an endpoint, its rewards source reads the
 * monitor. After the prediction log is open. */
int bs__api_monitor_open(bs_app_t *app, bs_err_t *err);
/* Unwires and frees the monitor; before the prediction log and the log close. */
void bs__api_monitor_close(bs_app_t *app);
void bs__api_monitor_metrics(bs_app_t *app, bs_buf_t *b);

/* ---- rollouts.c: the rollout routes ------------------------------------------------------ */
void bs__api_rollouts_create(bs_req_t *req);
void bs__api_rollouts_list(bs_req_t *req);
void bs__api_rollouts_get(bs_req_t *req);
void bs__api_rollouts_pause(bs_req_t *req);
void bs__api_rollouts_resume(bs_req_t *req);
void bs__api_rollouts_abort(bs_req_t *req);
void bs__api_rollouts_promote(bs_req_t *req);

/* Reads ?limit= (default def, 1..max). Returns 0 or responds with 400 and returns -1. */
int bs__api_limit(bs_req_t *req, int def, int max, int *out);
/* 1 if the caller may act on tenant t (its own, or any for default-tenant admins). */
int bs__api_tenant_allowed(const bs_req_t *req, const char *t);

#endif
