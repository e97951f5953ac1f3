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

/* kserve.c */
void bs__api_v2_live(bs_req_t *req);
void bs__api_v2_ready(bs_req_t *req);
void bs__api_v2_server(bs_req_t *req);
void bs__api_v2_model(bs_req_t *req);
void bs__api_v2_model_ready(bs_req_t *req);
void bs__api_v2_infer(bs_req_t *req);

/* Reads ?limit= (default def, 1..max). Returns 0 or responds with 400 and returns -1. */
int bs__api_limit(bs_req_t *req, int def, int max, int *out);
/* 1 if the caller may act on tenant t (its own, or any for default-tenant admins). */
int bs__api_tenant_allowed(const bs_req_t *req, const char *t);

#endif
