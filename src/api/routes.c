/* The route table: every route with its method, pattern, handler, minimum role
 * and OpenAPI description. /openapi.json is generated from this table. */
#include "api/api_int.h"

/* JSON Schemas (2020-12, as OpenAPI 3.1 uses) of request and response bodies. */
#define HEALTH_SCHEMA                                                                              \
    "{\"type\":\"object\",\"required\":[\"status\"],\"properties\":{\"status\":{\"type\":\""       \
    "string\",\"enum\":[\"ok\"]}}}"
#define READY_SCHEMA                                                                               \
    "{\"type\":\"object\",\"required\":[\"status\",\"checks\"],\"properties\":{\"status\":{"       \
    "\"type\":\"string\",\"enum\":[\"ready\",\"not_ready\"]},\"checks\":{\"type\":\"object\""      \
    ",\"properties\":{\"metadata_store\":{\"type\":\"string\",\"enum\":[\"ok\",\"unavailabl"       \
    "e\"]},\"schema_version\":{\"type\":\"integer\"},\"accepting\":{\"type\":\"boolean\"},\""      \
    "metadata\":{\"type\":\"string\",\"enum\":[\"ok\",\"unavailable\"],\"description\":\"wh"       \
    "ether this replica's last change poll reached the metadata store\"}}}}}"
#define INFO_SCHEMA                                                                                \
    "{\"type\":\"object\",\"required\":[\"name\",\"version\",\"build\",\"caller\"],\"proper"       \
    "ties\":{\"name\":{\"type\":\"string\"},\"version\":{\"type\":\"string\"},\"build\":{\""       \
    "type\":\"object\",\"properties\":{\"git_sha\":{\"type\":\"string\"},\"compiler\":{\"ty"       \
    "pe\":\"string\"},\"built_at\":{\"type\":\"string\"}}},\"started_at\":{\"type\":\"strin"       \
    "g\",\"format\":\"date-time\"},\"uptime_seconds\":{\"type\":\"number\"},\"data_dir\":{\""      \
    "type\":\"string\"},\"threads\":{\"type\":\"integer\"},\"auth\":{\"type\":\"boolean\"},"       \
    "\"replica_id\":{\"type\":\"string\"},\"snapshot\":{\"type\":\"object\",\"properties\":"       \
    "{\"generation\":{\"type\":\"integer\",\"description\":\"sum of the change generations "       \
    "the snapshots reflect\"},\"age_ms\":{\"type\":\"integer\",\"description\":\"since the "       \
    "snapshots were last known current\"},\"scopes\":{\"type\":\"object\",\"properties\":{\""      \
    "auth\":{\"type\":\"integer\"},\"registry\":{\"type\":\"integer\"}}}}},\"backends\":{\""       \
    "type\":\"object\",\"properties\":{\"metadata\":{\"type\":\"string\"},\"artifacts\":{\""       \
    "type\":\"string\"},\"events\":{\"type\":\"string\",\"enum\":[\"segments\",\"jets"       \
    "tream\"]}}},\"caller\":{\"type\":\"object\",\"properties\":{\"key_id\":{\"typ"       \
    "e\":\"string\"},\"tenant\":{\"type\":\"string\"},\"role\":{\"type\":\"string\"}}}}}"
#define KEY_SCHEMA                                                                                 \
    "{\"type\":\"object\",\"required\":[\"id\",\"name\",\"tenant\",\"role\"],\"properties\""       \
    ":{\"id\":{\"type\":\"string\"},\"name\":{\"type\":\"string\"},\"tenant\":{\"type\":\"s"       \
    "tring\"},\"role\":{\"type\":\"string\",\"enum\":[\"admin\",\"developer\",\"predictor\""       \
    ",\"viewer\"]},\"rate_limit\":{\"type\":[\"object\",\"null\"],\"properties\":{\"rps\":{"       \
    "\"type\":\"number\"},\"burst\":{\"type\":\"number\"}}},\"expires_at\":{\"type\":[\"str"       \
    "ing\",\"null\"],\"format\":\"date-time\"},\"created_at\":{\"type\":\"string\",\"format"       \
    "\":\"date-time\"},\"created_by\":{\"type\":\"string\"},\"scopes\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"enum\":[\"metrics\"]}},\"key\":{\"type\":\"string\",\""       \
    "description\":\"the secret, returned once\"}}}"
#define KEY_CREATE_SCHEMA                                                                          \
    "{\"type\":\"object\",\"required\":[\"name\",\"role\"],\"additionalProperties\":false,\""      \
    "properties\":{\"name\":{\"type\":\"string\"},\"role\":{\"type\":\"string\",\"enum\":[\""      \
    "admin\",\"developer\",\"predictor\",\"viewer\"]},\"tenant\":{\"type\":\"string\"},\"ra"       \
    "te_limit\":{\"type\":\"object\",\"properties\":{\"rps\":{\"type\":\"number\"},\"burst\""      \
    ":{\"type\":\"number\"}}},\"expires_at\":{\"type\":\"string\",\"format\":\"date-time\"}"       \
    ",\"ttl_seconds\":{\"type\":\"integer\"},\"scopes\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"enum\":[\"metrics\"]},\"description\":\"narrows the key to these routes (metrics: /metrics only)\"}}}"
#define TENANT_CREATE_SCHEMA                                                                       \
    "{\"type\":\"object\",\"required\":[\"name\"],\"additionalProperties\":false,\"properti"       \
    "es\":{\"name\":{\"type\":\"string\"}}}"
#define TENANT_SCHEMA                                                                              \
    "{\"type\":\"object\",\"required\":[\"name\"],\"properties\":{\"id\":{\"type\":\"string"       \
    "\"},\"name\":{\"type\":\"string\"},\"created_at\":{\"type\":\"string\",\"format\":\"da"       \
    "te-time\"}}}"

#define PAGE(item)                                                                                 \
    "{\"type\":\"object\",\"required\":[\"items\",\"next_cursor\"],\"properties\":{\"items\":{" \
    "\"type\":\"array\",\"items\":" item "},\"next_cursor\":{\"type\":[\"string\",\"null\"]}}}"

/* Jobs (api/jobs.c, events/jobs.h). */
#define JOB_STATES                                                                                 \
    "[\"available\",\"scheduled\",\"running\",\"retryable\",\"completed\",\"discarded\","         \
    "\"cancelled\"]"
#define NULLABLE_STR "{\"type\":[\"string\",\"null\"]}"
#define NULLABLE_TIME "{\"type\":[\"string\",\"null\"],\"format\":\"date-time\"}"
#define JOB_SCHEMA                                                                                 \
    "{\"type\":\"object\",\"required\":[\"id\",\"kind\",\"state\",\"args\",\"attempt\","          \
    "\"max_attempts\",\"errors\",\"progress\"],\"properties\":{\"id\":{\"type\":\"string\"},"     \
    "\"kind\":{\"type\":\"string\"},\"tenant\":{\"type\":\"string\"},\"state\":{\"type\":"        \
    "\"string\",\"enum\":" JOB_STATES "},\"args\":{\"type\":\"object\"},\"unique_key\":"          \
    NULLABLE_STR ",\"priority\":{\"type\":\"integer\"},\"attempt\":{\"type\":\"integer\","        \
    "\"description\":\"attempts started so far (1 on the first)\"},\"max_attempts\":{\"type\":"   \
    "\"integer\"},\"errors\":{\"type\":\"array\",\"description\":\"the failed attempts, oldest "  \
    "first (the newest 25)\",\"items\":{\"type\":\"object\",\"properties\":{\"attempt\":{\"type"  \
    "\":\"integer\"},\"at\":{\"type\":\"string\",\"format\":\"date-time\"},\"error\":{\"type\":"  \
    "\"string\"},\"attempted_by\":{\"type\":\"string\"},\"lease_token\":{\"type\":\"integer\"},"  \
    "\"lease_expired_at\":{\"type\":\"string\",\"format\":\"date-time\"}}}},\"progress\":{"       \
    "\"type\":\"object\",\"properties\":{\"done\":{\"type\":\"integer\"},\"total\":{\"type\":"    \
    "\"integer\"},\"rate_per_s\":{\"type\":[\"number\",\"null\"]},\"eta_s\":{\"type\":["          \
    "\"number\",\"null\"]}}},\"result\":{\"description\":\"the handler's JSON result, or null\"}" \
    ",\"result_location\":" NULLABLE_STR ",\"cancel_requested\":{\"type\":\"boolean\"},"          \
    "\"created_at\":{\"type\":\"string\",\"format\":\"date-time\"},\"scheduled_at\":"             \
    NULLABLE_TIME ",\"attempted_at\":" NULLABLE_TIME ",\"finalized_at\":" NULLABLE_TIME ","       \
    "\"created_by\":{\"type\":\"string\"},\"attempted_by\":{\"type\":[\"string\",\"null\"],"      \
    "\"description\":\"the replica holding (or that held) the current or last attempt\"},"        \
    "\"lease_token\":{\"type\":\"integer\",\"description\":\"fencing token of that attempt's "    \
    "claim: every claim increments it\"}}}"
#define JOB_NEW_FIELDS                                                                             \
    "\"kind\":{\"type\":\"string\",\"description\":\"a kind GET /v1/job-kinds lists with "        \
    "api_enqueue\"},\"args\":{\"type\":\"object\"},\"unique_key\":{\"type\":\"string\","          \
    "\"maxLength\":256,\"description\":\"while a job of this kind and key is not finalized, the " \
    "enqueue returns it (200) instead of a new one\"},\"run_at\":{\"type\":\"string\",\"format\"" \
    ":\"date-time\"},\"max_attempts\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000000},"  \
    "\"priority\":{\"type\":\"integer\",\"minimum\":-1000,\"maximum\":1000}"
#define JOB_NEW_SCHEMA                                                                             \
    "{\"type\":\"object\",\"additionalProperties\":false,\"description\":\"one job, or {\\\"jobs" \
    "\\\": [...]} (up to 1000, enqueued in one transaction: all or none)\",\"properties\":{"       \
    JOB_NEW_FIELDS ",\"jobs\":{\"type\":\"array\",\"minItems\":1,\"maxItems\":1000,\"items\":{"   \
    "\"type\":\"object\",\"required\":[\"kind\"],\"additionalProperties\":false,\"properties\":{" \
    JOB_NEW_FIELDS "}}}}}"
#define JOB_BATCH_SCHEMA                                                                           \
    "{\"type\":\"object\",\"required\":[\"items\"],\"properties\":{\"items\":{\"type\":\"array\"" \
    ",\"items\":{\"type\":\"object\",\"required\":[\"id\",\"existed\"],\"properties\":{\"id\":{"  \
    "\"type\":\"string\"},\"kind\":{\"type\":\"string\"},\"existed\":{\"type\":\"boolean\"}}}}}}"
#define JOB_KINDS_SCHEMA                                                                           \
    "{\"type\":\"object\",\"required\":[\"items\"],\"properties\":{\"items\":{\"type\":\"array\"" \
    ",\"items\":{\"type\":\"object\",\"required\":[\"kind\",\"api_enqueue\"],\"properties\":{"    \
    "\"kind\":{\"type\":\"string\"},\"description\":{\"type\":\"string\"},\"max_attempts\":{"     \
    "\"type\":\"integer\"},\"concurrency\":{\"type\":\"integer\",\"description\":\"attempts in "  \
    "flight per replica\"},\"api_enqueue\":{\"type\":\"boolean\"},\"backoff\":{\"type\":"         \
    "\"string\"}}}}}}"

#include "api/routes_models.inc"
#include "api/routes_topics.inc"
#include "api/routes_webhooks.inc"
#include "api/routes_endpoints.inc"
#include "api/routes_endpoint_predict.inc"
#include "api/routes_predictions.inc"
#include "api/routes_monitor.inc"
#include "api/routes_rollouts.inc"

/* The Trigger kind's spec (events/triggers.h, docs/triggers.md). */
#define TRIGGER_SPEC_SCHEMA \
    "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{\"topic\":{\"type\":" \
    "\"string\",\"pattern\":\"^[a-z0-9][a-z0-9_-]{0,62}$\",\"description\":\"the topic whose " \
    "events the trigger consumes\"},\"on\":{\"type\":\"string\",\"enum\":[\"registry\"],\"des" \
    "cription\":\"registry events (version.created, version.approved, version.rejected, versi" \
    "on.archived, alias.moved, alias.deleted) instead of a topic\"},\"filter\":{\"type\":\"st" \
    "ring\",\"description\":\"only events for which this holds (null is false)\"},\"action\":" \
    "{\"type\":\"object\",\"minProperties\":1,\"maxProperties\":1,\"properties\":{\"predict\"" \
    ":{\"type\":\"object\",\"required\":[\"model\"],\"additionalProperties\":false,\"properti" \
    "es\":{\"model\":{\"type\":\"string\"},\"version\":{\"type\":\"integer\",\"minimum\":1},\"" \
    "alias\":{\"type\":\"string\"},\"inputs\":{\"type\":\"object\",\"additionalProperties\":{" \
    "\"description\":\"an expression over the event (a string) or a constant\"},\"description" \
    "\":\"feature name to expression; default: the event (a CloudEvent's data)\"},\"output_to" \
    "pic\":{\"type\":\"string\",\"pattern\":\"^[a-z0-9][a-z0-9_-]{0,62}$\"},\"webhook\":{\"ty" \
    "pe\":\"string\",\"pattern\":\"^[a-z0-9][a-z0-9_-]{0,62}$\"},\"when\":{\"type\":\"string\"" \
    ",\"description\":\"only predictions for which this holds (score, label, probabilities, p" \
    "rediction, event)\"}}},\"webhook\":{\"type\":\"object\",\"required\":[\"destination\"],\"" \
    "additionalProperties\":false,\"properties\":{\"destination\":{\"type\":\"string\",\"patt" \
    "ern\":\"^[a-z0-9][a-z0-9_-]{0,62}$\"}}},\"job\":{\"type\":\"object\",\"required\":[\"kin" \
    "d\"],\"additionalProperties\":false,\"properties\":{\"kind\":{\"type\":\"string\"},\"arg" \
    "s\":{\"type\":\"object\",\"additionalProperties\":{\"description\":\"an expression over " \
    "the event (a string) or a constant\"}}}}}},\"consumer\":{\"type\":\"object\",\"additiona" \
    "lProperties\":false,\"properties\":{\"ack_wait\":{\"type\":\"string\",\"default\":\"30s\"" \
    "},\"max_deliver\":{\"type\":\"integer\",\"default\":5},\"max_ack_pending\":{\"type\":\"i" \
    "nteger\",\"default\":1000},\"dead_letter\":{\"type\":\"string\",\"pattern\":\"^[a-z0-9][" \
    "a-z0-9_-]{0,62}$\"}}},\"start\":{\"type\":\"string\",\"enum\":[\"new\",\"earliest\"],\"d" \
    "efault\":\"new\"},\"paused\":{\"type\":\"boolean\",\"default\":false},\"description\":{\"" \
    "type\":\"string\"}},\"required\":[\"action\"]}"

static const bs_route_t routes[] = {
    {"GET", "/healthz", bs__api_healthz, BS_ROLE_PUBLIC, "Liveness: the process serves requests",
     "system", NULL, HEALTH_SCHEMA, 0, BS_ROUTE_INLINE},
    {"GET", "/readyz", bs__api_readyz, BS_ROLE_PUBLIC,
     "Readiness: stores open, migrated and reachable (503 otherwise)", "system", NULL,
     READY_SCHEMA, 0, BS_ROUTE_INLINE},
    /* Viewer of the default tenant or a key with the metrics scope (checked in the handler
     * and bs_api_authorize); public with metrics_public (app.c rewrites the role). */
    {"GET", "/metrics", bs__api_metrics, BS_ROLE_VIEWER,
     "Prometheus metrics (text format 0.0.4); a key of the default tenant or with the metrics "
     "scope",
     "system", NULL, NULL, 0, BS_ROUTE_INLINE},
    {"GET", "/openapi.json", bs__api_openapi, BS_ROLE_PUBLIC, "This OpenAPI 3.1 document", "system",
     NULL, "{\"type\":\"object\"}", 0, BS_ROUTE_INLINE},
    {"GET", "/docs", bs__api_docs, BS_ROLE_PUBLIC, "Human-readable API reference", "system", NULL,
     NULL, 0, BS_ROUTE_INLINE},
    {"GET", "/v1/info", bs__api_info, BS_ROLE_VIEWER,
     "Version, build, uptime, data directory, replica, snapshot and backends", "system", NULL,
     INFO_SCHEMA, 0, BS_ROUTE_INLINE},
    {"POST", "/v1/keys", bs__api_keys_create, BS_ROLE_ADMIN,
     "Create an API key; the secret is returned once", "auth", KEY_CREATE_SCHEMA,
     KEY_SCHEMA, 201, BS_ROUTE_BLOCKING},
    {"GET", "/v1/keys", bs__api_keys_list, BS_ROLE_ADMIN, "List API keys (?tenant=, limit, cursor)",
     "auth", NULL, PAGE(KEY_SCHEMA), 0, BS_ROUTE_BLOCKING},
    {"DELETE", "/v1/keys/{id}", bs__api_keys_delete, BS_ROLE_ADMIN, "Revoke an API key", "auth",
     NULL, NULL, 204, BS_ROUTE_BLOCKING},
    {"POST", "/v1/tenants", bs__api_tenants_create, BS_ROLE_ADMIN,
     "Create a tenant (admins of the default tenant)", "auth",
     TENANT_CREATE_SCHEMA, TENANT_SCHEMA, 201, BS_ROUTE_BLOCKING},
    {"GET", "/v1/tenants", bs__api_tenants_list, BS_ROLE_ADMIN, "List tenants", "auth", NULL,
     PAGE(TENANT_SCHEMA), 0, BS_ROUTE_BLOCKING},
    MODEL_ROUTES
    TOPIC_ROUTES
    {"GET", "/v1/topics/{name}/stream", bs__api_topic_stream, BS_ROLE_VIEWER,
     "A live tail of the topic as Server-Sent Events (id: the offset, event: the event's "
     "type, data: the item as GET .../events gives it), resumable with Last-Event-ID",
     "topics", NULL, NULL, 0, BS_ROUTE_INLINE},
    {"GET", "/v1/jobs", bs__api_jobs_list, BS_ROLE_VIEWER,
     "List the tenant's jobs, newest first (?state=, kind=, limit, cursor)", "jobs", NULL,
     PAGE(JOB_SCHEMA), 0, BS_ROUTE_BLOCKING},
    {"POST", "/v1/jobs", bs__api_jobs_create, BS_ROLE_DEVELOPER,
     "Enqueue a job of an api_enqueue kind (201; 200 with the live job a unique_key matched), "
     "or a batch {\"jobs\": [...]} of up to 1000 in one transaction (201 with their ids)",
     "jobs", JOB_NEW_SCHEMA, "{\"oneOf\":[" JOB_SCHEMA "," JOB_BATCH_SCHEMA "]}", 201,
     BS_ROUTE_BLOCKING},
    {"GET", "/v1/jobs/{id}", bs__api_jobs_get, BS_ROLE_VIEWER,
     "Get a job: state, attempts, errors, progress (rate, ETA), result", "jobs", NULL,
     JOB_SCHEMA, 0, BS_ROUTE_BLOCKING},
    {"POST", "/v1/jobs/{id}/cancel", bs__api_jobs_cancel, BS_ROLE_DEVELOPER,
     "Cancel a job: a waiting one at once, a running one is asked to stop (409 when finalized)",
     "jobs", NULL, JOB_SCHEMA, 0, BS_ROUTE_BLOCKING},
    {"POST", "/v1/jobs/{id}/retry", bs__api_jobs_retry, BS_ROLE_DEVELOPER,
     "Make a discarded, cancelled or retryable job available again now (409 otherwise)", "jobs",
     NULL, JOB_SCHEMA, 0, BS_ROUTE_BLOCKING},
    {"GET", "/v1/job-kinds", bs__api_job_kinds, BS_ROLE_VIEWER,
     "The registered job kinds: description, defaults, whether POST /v1/jobs may start them",
     "jobs", NULL, JOB_KINDS_SCHEMA, 0, BS_ROUTE_BLOCKING},
    RESOURCE_ROUTES("triggers", "a trigger", TRIGGER_SPEC_SCHEMA, "triggers"),
    {"GET", "/v1/kinds", bs__api_kinds_list, BS_ROLE_VIEWER,
     "The kinds of declarative resources (what basalt apply accepts) and their paths",
     "resources", NULL,
     "{\"type\":\"object\",\"required\":[\"items\"],\"properties\":{\"items\":{\"type\":"
     "\"array\",\"items\":{\"type\":\"object\",\"required\":[\"kind\",\"plural\",\"path\"],"
     "\"properties\":{\"kind\":{\"type\":\"string\"},\"plural\":{\"type\":\"string\"},\"path"
     "\":{\"type\":\"string\"},\"summary\":{\"type\":\"string\"}}}}}}",
     0, BS_ROUTE_INLINE},
    ENDPOINT_ROUTES
    ENDPOINT_PREDICT_ROUTES
    PREDICTION_ROUTES
    MONITOR_ROUTES
    ROLLOUT_ROUTES
    WEBHOOK_ROUTES
};

const bs_route_t *bs_api_routes(int *n)
{
    *n = (int)(sizeof routes / sizeof routes[0]);
    return routes;
}

/* The Open Inference Protocol's routes answer errors in its shape (DESIGN.md: routes of a
 * borrowed protocol use that protocol's error shape). */
static const bs_error_shape_rule_t error_shapes[] = {
    {"/v2", BS_ERROR_SHAPE_OIP},
    {NULL, BS_ERROR_SHAPE_BASALT},
};

const bs_error_shape_rule_t *bs_api_error_shapes(void) { return error_shapes; }
