/* Generates the OpenAPI 3.1 document from the route table, so the document
 * cannot drift from the router: path parameters come from the patterns,
 * security from each route's minimum role, schemas from the route entries.
 * What the route table does not carry — query parameters, bodies that are not
 * JSON, request examples — is in `extras` below, keyed by method and pattern
 * (tests/api/test_conformance.py checks that each handler's query parameters are
 * declared). The document is built once at start-up; `redocly lint` with the
 * recommended rules passes on it, and /docs is rendered from it (docs.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"

/* ---- what the route table does not say ---------------------------------------------------- */

#define Q(name, schema, desc)                                                                      \
    "{\"name\":\"" name "\",\"in\":\"query\",\"required\":false,\"description\":\"" desc           \
    "\",\"schema\":" schema "}"
#define Q_LIMIT                                                                                    \
    Q("limit", "{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000,\"default\":100}", "page size")
#define Q_CURSOR Q("cursor", "{\"type\":\"string\"}", "next_cursor of the previous page")
#define Q_DRY_RUN                                                                                  \
    Q("dry_run", "{\"type\":\"boolean\"}",                                                      \
      "validate and report the outcome (created, updated, unchanged) without writing")

typedef enum { BODY_JSON, BODY_UPLOAD } body_kind_t;
typedef enum { RESP_JSON, RESP_TEXT, RESP_HTML, RESP_EVENTS } resp_kind_t;

typedef struct {
    const char *method, *pattern;
    const char *query;   /* comma-separated parameter objects (Q(...)), or NULL */
    const char *example; /* a request body that works (JSON), or NULL */
    body_kind_t body;
    resp_kind_t resp;
} extra_t;

static const extra_t extras[] = {
    {"GET", "/metrics", NULL, NULL, BODY_JSON, RESP_TEXT},
    {"GET", "/docs", NULL, NULL, BODY_JSON, RESP_HTML},
    {"POST", "/v1/keys", NULL,
     "{\"name\":\"ci-predictor\",\"role\":\"predictor\",\"ttl_seconds\":86400}", BODY_JSON,
     RESP_JSON},
    {"GET", "/v1/keys",
     Q("tenant", "{\"type\":\"string\"}",
       "only this tenant's keys (admins of tenant default)") "," Q_LIMIT "," Q_CURSOR,
     NULL, BODY_JSON, RESP_JSON},
    {"POST", "/v1/tenants", NULL, "{\"name\":\"acme\"}", BODY_JSON, RESP_JSON},
    {"GET", "/v1/tenants", Q_LIMIT "," Q_CURSOR, NULL, BODY_JSON, RESP_JSON},
    {"POST", "/v1/models", NULL,
     "{\"name\":\"churn\",\"description\":\"churn classifier\",\"tags\":[\"tabular\"]}", BODY_JSON,
     RESP_JSON},
    {"GET", "/v1/models",
     Q("prefix", "{\"type\":\"string\"}", "names starting with this") "," Q(
         "tag", "{\"type\":\"string\"}", "models with this tag") "," Q_LIMIT "," Q_CURSOR,
     NULL, BODY_JSON, RESP_JSON},
    {"PATCH", "/v1/models/{name}", NULL,
     "{\"description\":\"retrained weekly\",\"batching\":{\"enabled\":true,\"max_batch_size\":64,"
     "\"max_queue_delay_us\":500}}",
     BODY_JSON, RESP_JSON},
    {"POST", "/v1/models/{name}/versions",
     Q("format", "{\"type\":\"string\",\"enum\":[\"xgboost_json\",\"basalt_json\"]}",
       "the artifact's format (detected when absent)") "," Q("metadata", "{\"type\":\"string\"}",
                                                             "version metadata as JSON text (raw "
                                                             "uploads; a multipart upload sends a "
                                                             "metadata part)"),
     NULL, BODY_UPLOAD, RESP_JSON},
    {"GET", "/v1/models/{name}/versions",
     Q("status",
       "{\"type\":\"string\",\"enum\":[\"pending\",\"approved\",\"rejected\",\"archived\"]}",
       "only versions in this state") "," Q_LIMIT
                                      "," Q("cursor",
                                            "{\"type\":\"string\",\"pattern\":\"^[0-9]+$\"}",
                                            "next_cursor of the previous page (a version number)"),
     NULL, BODY_JSON, RESP_JSON},
    {"POST", "/v1/models/{name}/versions/{version}/approve", NULL,
     "{\"comment\":\"offline metrics ok\"}", BODY_JSON, RESP_JSON},
    {"POST", "/v1/models/{name}/versions/{version}/reject", NULL,
     "{\"comment\":\"worse than champion\"}", BODY_JSON, RESP_JSON},
    {"POST", "/v1/models/{name}/versions/{version}/archive", NULL, "{\"comment\":\"retired\"}",
     BODY_JSON, RESP_JSON},
    {"PUT", "/v1/models/{name}/aliases/{alias}", NULL, "{\"version\":1}", BODY_JSON, RESP_JSON},
    {"POST", "/v1/models/{name}/predict", NULL, "{\"inputs\":{\"amount\":12.5,\"country\":\"FR\"}}",
     BODY_JSON, RESP_JSON},
    {"POST", "/v1/endpoints/{name}/predict", NULL,
     "{\"inputs\":{\"amount\":12.5,\"country\":\"FR\"}}", BODY_JSON, RESP_JSON},
    {"POST", "/v1/models/{name}/versions/{version}/predict", NULL,
     "{\"inputs\":[{\"amount\":12.5,\"country\":\"FR\"},{\"amount\":3,\"country\":null}]}",
     BODY_JSON, RESP_JSON},
    {"POST", "/v1/runs", NULL, "{\"experiment\":\"churn\",\"params\":{\"max_depth\":6}}", BODY_JSON,
     RESP_JSON},
    {"GET", "/v1/runs",
     Q("experiment", "{\"type\":\"string\"}", "runs of this experiment") "," Q_LIMIT "," Q_CURSOR,
     NULL, BODY_JSON, RESP_JSON},
    {"PATCH", "/v1/runs/{id}", NULL, "{\"status\":\"finished\"}", BODY_JSON, RESP_JSON},
    {"POST", "/v1/runs/{id}/metrics", NULL,
     "[{\"key\":\"auc\",\"value\":0.91,\"step\":1},{\"key\":\"auc\",\"value\":0.93,\"step\":2}]",
     BODY_JSON, RESP_JSON},
    {"GET", "/v1/audit", Q_LIMIT "," Q_CURSOR, NULL, BODY_JSON, RESP_JSON},
    {"GET", "/v1/jobs",
     Q("state",
       "{\"type\":\"string\",\"enum\":[\"available\",\"scheduled\",\"running\",\"retryable\","
       "\"completed\",\"discarded\",\"cancelled\"]}",
       "only jobs in this state") "," Q("kind", "{\"type\":\"string\"}",
                                       "only jobs of this kind") "," Q_LIMIT "," Q_CURSOR,
     NULL, BODY_JSON, RESP_JSON},
    {"POST", "/v1/jobs", NULL, "{\"kind\":\"sleep\",\"args\":{\"seconds\":0}}", BODY_JSON,
     RESP_JSON},
    {"GET", "/v1/triggers", Q_LIMIT "," Q_CURSOR, NULL, BODY_JSON, RESP_JSON},
    {"PUT", "/v1/triggers/{name}", Q_DRY_RUN,
     "{\"topic\":\"churn\",\"filter\":\"amount > 1000 && country == \\\"FR\\\"\","
     "\"action\":{\"job\":{\"kind\":\"sleep\",\"args\":{\"seconds\":"
     "\"min(amount / 100000, 1)\"}}}}",
     BODY_JSON, RESP_JSON},
    {"GET", "/v1/topics", Q_LIMIT "," Q_CURSOR, NULL, BODY_JSON, RESP_JSON},
    {"PUT", "/v1/topics/{name}", Q_DRY_RUN,
     "{\"retention\":{\"max_age\":\"7d\",\"max_bytes\":\"10GiB\"},\"sync\":\"always\","
     "\"dedup_window\":\"2m\",\"dead_letter\":\"orders-dlq\"}",
     BODY_JSON, RESP_JSON},
    {"POST", "/v1/topics/{name}/events", NULL,
     "[{\"order_id\":17,\"amount\":1250.0,\"country\":\"FR\"},{\"order_id\":18,\"amount\":"
     "12.5,\"country\":\"DE\"}]",
     BODY_JSON, RESP_JSON},
    {"GET", "/v1/topics/{name}/events",
     Q("from_offset", "{\"type\":\"integer\",\"minimum\":0}",
       "first offset to read (default: the first retained)") "," Q(
         "from_time", "{\"type\":\"string\",\"format\":\"date-time\"}",
         "read from the first event at or after this time") "," Q_LIMIT,
     NULL, BODY_JSON, RESP_JSON},
    {"GET", "/v1/topics/{name}/stream",
     Q("from_offset", "{\"type\":\"integer\",\"minimum\":0}",
       "first offset to send (default: the end of the topic, only new events)") "," Q(
         "from_time", "{\"type\":\"string\",\"format\":\"date-time\"}",
         "start at the first event at or after this time") "," Q(
         "heartbeat", "{\"type\":\"string\",\"default\":\"15s\"}",
         "a comment line after this long without events (1s to 1h)") ","
     "{\"name\":\"Last-Event-ID\",\"in\":\"header\",\"required\":false,\"description\""
     ":\"the id of the last event received: resume after it (wins over the query)\","
     "\"schema\":{\"type\":\"string\"}}",
     NULL, BODY_JSON, RESP_EVENTS},
    {"PUT", "/v1/topics/{name}/consumers/{group}", NULL,
     "{\"ack_wait\":\"30s\",\"max_deliver\":5,\"dead_letter\":\"orders-dlq\"}", BODY_JSON,
     RESP_JSON},
    {"POST", "/v1/topics/{name}/consumers/{group}/fetch",
     Q("max", "{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000,\"default\":1}",
       "at most this many events") "," Q("wait", "{\"type\":\"string\",\"default\":\"0\"}",
                                         "wait up to this long for one (5s, 250ms; at most 30s)"),
     NULL, BODY_JSON, RESP_JSON},
    {"POST", "/v1/topics/{name}/consumers/{group}/ack", NULL, "{\"delivery_ids\":[\"…\"]}",
     BODY_JSON, RESP_JSON},
    {"POST", "/v1/topics/{name}/consumers/{group}/nack", NULL,
     "{\"delivery_ids\":[\"…\"],\"delay\":\"5s\"}", BODY_JSON, RESP_JSON},
    {"POST", "/v1/topics/{name}/replay", NULL, "{\"from_offset\":0,\"limit\":100}", BODY_JSON,
     RESP_JSON},
    {"PUT", "/v1/webhooks/{name}", Q_DRY_RUN,
     "{\"url\":\"https://hooks.example.com/basalt\",\"timeout\":\"10s\",\"headers\":{\"X-Team\":"
     "\"risk\"},\"retry_schedule\":[\"0s\",\"5s\",\"5m\",\"30m\"]}",
     BODY_JSON, RESP_JSON},
    {"POST", "/v1/webhooks/{name}/test", NULL,
     "{\"type\":\"com.example.order.paid\",\"data\":{\"order\":\"A-17\",\"amount\":42}}",
     BODY_JSON, RESP_JSON},
    {"GET", "/v1/webhooks/deliveries",
     Q("destination", "{\"type\":\"string\"}", "only deliveries to this webhook") "," Q_LIMIT
                                                                                    "," Q_CURSOR,
     NULL, BODY_JSON, RESP_JSON},
    {"GET", "/v1/endpoints/{name}/predictions",
     Q("since", "{\"type\":\"string\"}",
       "predictions made at or after this time: RFC 3339, or a duration before now (1h)") ","
     Q("until", "{\"type\":\"string\"}",
       "predictions made before this time: RFC 3339, or a duration before now") ","
     Q("version", "{\"type\":\"integer\",\"minimum\":1}", "only this model version") ","
     Q("variant", "{\"type\":\"string\"}", "only this variant (route or shadow name)") ","
     Q("shadow", "{\"type\":\"boolean\"}",
       "true: shadow runs only; false: routed predictions only (default: both)") ","
     Q("limit", "{\"type\":\"integer\",\"minimum\":1,\"maximum\":10000,\"default\":100}",
       "page size") "," Q_CURSOR,
     NULL, BODY_JSON, RESP_JSON},
    /* feedback and the endpoint reports (api/monitor.c) */
    {"POST", "/v1/feedback", NULL,
     "{\"items\":[{\"prediction_id\":\"01900c1e-9a3b-7c41-8d2e-5f6a7b8c9d0e\",\"label\":1},"
     "{\"prediction_id\":\"01900c1e-9a3b-7c41-8d2e-5f6a7b8c9d0f\",\"value\":12.5,"
     "\"time\":\"2024-05-01T12:00:00Z\"}]}",
     BODY_JSON, RESP_JSON},
    {"GET", "/v1/endpoints/{name}/performance",
     Q("window", "{\"type\":\"string\",\"default\":\"1h\"}",
       "predictions made within this duration before now") ","
     Q("by", "{\"type\":\"string\",\"enum\":[\"version\",\"variant\"],\"default\":\"version\"}",
       "one item per model version or per variant"),
     NULL, BODY_JSON, RESP_JSON},
    {"GET", "/v1/endpoints/{name}/experiment",
     Q("window", "{\"type\":\"string\"}",
       "predictions made within this duration before now (default: monitor_window_ms)") ","
     Q("metric", "{\"type\":\"string\",\"enum\":[\"accuracy\",\"mae\",\"value\"]}",
       "accuracy (a rate), mae or value (means); default: accuracy for classification, mae for "
       "regression") ","
     Q("mde", "{\"type\":\"number\",\"exclusiveMinimum\":0}",
       "minimum detectable effect, absolute (default: 0.05 for rates, a tenth of the control's "
       "standard deviation for means)") ","
     Q("alpha", "{\"type\":\"number\",\"exclusiveMinimum\":0,\"exclusiveMaximum\":1,"
                "\"default\":0.05}",
       "significance level of the tests and intervals") ","
     Q("power", "{\"type\":\"number\",\"exclusiveMinimum\":0,\"exclusiveMaximum\":1,"
                "\"default\":0.8}",
       "power for the samples needed"),
     NULL, BODY_JSON, RESP_JSON},
    {"GET", "/v1/endpoints/{name}/shadow",
     Q("window", "{\"type\":\"string\",\"default\":\"1h\"}",
       "predictions made within this duration before now"),
     NULL, BODY_JSON, RESP_JSON},
    {"PUT", "/v1/endpoints/{name}", Q_DRY_RUN,
     "{\"model\":\"churn\",\"routes\":[{\"alias\":\"champion\",\"weight\":95},{\"version\":1,"
     "\"weight\":5,\"name\":\"canary\"}],\"sticky\":{\"key\":\"user_id\"},\"logging\":{"
     "\"sample_rate\":1}}",
     BODY_JSON, RESP_JSON},
    {"GET", "/v1/endpoints/{name}/revisions",
     Q_LIMIT "," Q("cursor", "{\"type\":\"string\",\"pattern\":\"^[0-9]+$\"}",
                   "next_cursor of the previous page (a revision number)"),
     NULL, BODY_JSON, RESP_JSON},
    {"POST", "/v1/endpoints/{name}/rollback", Q_DRY_RUN, "{\"revision\":1}", BODY_JSON, RESP_JSON},
    {"POST", "/v1/endpoints/{name}/rollouts", NULL,
     "{\"candidate\":{\"version\":4},\"steps\":[5,25,50,100],\"step_interval\":\"5m\","
     "\"min_requests_per_step\":500,\"guards\":{\"max_error_rate\":0.01,\"max_p99_latency_ms\":20,"
     "\"max_prediction_psi\":0.2,\"max_metric_drop\":{\"metric\":\"accuracy\",\"delta\":0.02}}}",
     BODY_JSON, RESP_JSON},
    {"GET", "/v1/endpoints/{name}/rollouts",
     Q("limit", "{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000,\"default\":20}",
       "page size") "," Q_CURSOR,
     NULL, BODY_JSON, RESP_JSON},
    {"POST", "/v2/models/{name}/infer", NULL,
     "{\"inputs\":[{\"name\":\"amount\",\"shape\":[1],\"datatype\":\"FP64\",\"data\":[12.5]},"
     "{\"name\":\"country\",\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[\"FR\"]}]}",
     BODY_JSON, RESP_JSON},
    {"POST", "/v2/models/{name}/versions/{version}/infer", NULL,
     "{\"inputs\":[{\"name\":\"amount\",\"shape\":[2],\"datatype\":\"FP64\",\"data\":[12.5,3]},"
     "{\"name\":\"country\",\"shape\":[2],\"datatype\":\"BYTES\",\"data\":[\"FR\",\"DE\"]}]}",
     BODY_JSON, RESP_JSON},
};

static const extra_t *extra_of(const bs_route_t *r)
{
    static const extra_t none = {NULL, NULL, NULL, NULL, BODY_JSON, RESP_JSON};
    /* Every kind's generic resource routes (RESOURCE_ROUTES) read the same query. */
    static const extra_t resource_put = {NULL, NULL, Q_DRY_RUN, NULL, BODY_JSON, RESP_JSON};
    static const extra_t resource_list = {NULL, NULL, Q_LIMIT "," Q_CURSOR, NULL, BODY_JSON,
                                          RESP_JSON};
    for (size_t i = 0; i < sizeof extras / sizeof extras[0]; i++)
        if (!strcmp(extras[i].method, r->method) && !strcmp(extras[i].pattern, r->pattern))
            return &extras[i];
    if (r->fn == bs__api_resource_put)
        return &resource_put;
    if (r->fn == bs__api_resource_list)
        return &resource_list;
    return &none;
}

/* ---- writing ------------------------------------------------------------------------------ */

static void raw(bs_buf_t *b, const char *json)
{
    bs_jw_raw(b, json, strlen(json));
}

/* The pattern without the "*" of a rest parameter: "{name*}" becomes "{name}". */
static void path_key(const char *pattern, char *out, size_t cap)
{
    size_t k = 0;
    for (const char *p = pattern; *p && k + 1 < cap; p++)
        if (!(*p == '*' && p[1] == '}'))
            out[k++] = *p;
    out[k] = '\0';
}

/* An operationId code generators can use as a function name: the method, then each path
 * segment capitalised, parameters as "By<Name>": GET /v1/models/{name} is getV1ModelsByName. */
static void operation_id(const bs_route_t *r, char *out, size_t cap)
{
    size_t k = 0;
    for (const char *m = r->method; *m && k + 1 < cap; m++)
        out[k++] = (char)(*m >= 'A' && *m <= 'Z' ? *m + 32 : *m);
    int up = 1;
    for (const char *p = r->pattern; *p && k + 3 < cap; p++) {
        if (*p == '{') {
            out[k++] = 'B';
            out[k++] = 'y';
            up = 1;
        } else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                   (*p >= '0' && *p <= '9')) {
            out[k++] = (char)(up && *p >= 'a' && *p <= 'z' ? *p - 32 : *p);
            up = 0;
        } else {
            up = 1; /* '/', '.', '_', '-', '}', '*' start a new word */
        }
    }
    out[k] = '\0';
}

static void write_params(bs_buf_t *b, const bs_route_t *r, const extra_t *x)
{
    bs_jw_key(b, "parameters");
    bs_jw_arr_begin(b);
    for (const char *p = strchr(r->pattern, '{'); p; p = strchr(p + 1, '{')) {
        const char *e = strchr(p, '}');
        if (!e)
            break;
        size_t n = (size_t)(e - p - 1);
        if (n && p[n] == '*')
            n--;
        bs_jw_obj_begin(b);
        bs_jw_key(b, "name");
        bs_jw_strn(b, p + 1, n);
        bs_jw_key(b, "in");
        bs_jw_str(b, "path");
        bs_jw_key(b, "required");
        bs_jw_bool(b, 1);
        bs_jw_key(b, "schema");
        if (n == 7 && !strncmp(p + 1, "version", 7))
            raw(b, "{\"type\":\"integer\",\"minimum\":1}");
        else
            raw(b, "{\"type\":\"string\"}");
        bs_jw_obj_end(b);
    }
    if (x->query)
        raw(b, x->query); /* several array elements, written as one raw run */
    bs_jw_arr_end(b);
}

static void json_content(bs_buf_t *b, const char *schema, const char *example)
{
    bs_jw_key(b, "content");
    bs_jw_obj_begin(b);
    bs_jw_key(b, "application/json");
    bs_jw_obj_begin(b);
    bs_jw_key(b, "schema");
    raw(b, schema);
    if (example) {
        bs_jw_key(b, "example");
        raw(b, example);
    }
    bs_jw_obj_end(b);
    bs_jw_obj_end(b);
}

static void write_request(bs_buf_t *b, const bs_route_t *r, const extra_t *x)
{
    if (x->body == BODY_UPLOAD) {
        bs_jw_key(b, "requestBody");
        bs_jw_obj_begin(b);
        bs_jw_key(b, "required");
        bs_jw_bool(b, 1);
        bs_jw_key(b, "description");
        bs_jw_str(b, "The artifact: a raw body (any type but multipart; ?format= names its format "
                     "and ?metadata= carries the metadata), or multipart/form-data with a part "
                     "'artifact' and an optional part 'metadata' (JSON).");
        bs_jw_key(b, "content");
        bs_jw_obj_begin(b);
        bs_jw_key(b, "multipart/form-data");
        bs_jw_obj_begin(b);
        bs_jw_key(b, "schema");
        bs_jw_obj_begin(b);
        bs_jw_key(b, "type");
        bs_jw_str(b, "object");
        bs_jw_key(b, "required");
        raw(b, "[\"artifact\"]");
        bs_jw_key(b, "properties");
        bs_jw_obj_begin(b);
        bs_jw_key(b, "artifact");
        raw(b, "{\"type\":\"string\",\"format\":\"binary\",\"description\":\"the model file\"}");
        bs_jw_key(b, "metadata");
        raw(b, r->request_schema ? r->request_schema : "{\"type\":\"object\"}");
        bs_jw_obj_end(b);
        bs_jw_obj_end(b);
        bs_jw_key(b, "encoding");
        raw(b, "{\"metadata\":{\"contentType\":\"application/json\"}}");
        bs_jw_obj_end(b);
        bs_jw_key(b, "application/octet-stream");
        raw(b, "{\"schema\":{\"type\":\"string\",\"format\":\"binary\"}}");
        bs_jw_key(b, "application/json");
        raw(b, "{\"schema\":{\"type\":\"object\",\"description\":\"the model file itself "
               "(XGBoost JSON, basalt JSON)\"}}");
        bs_jw_obj_end(b);
        bs_jw_obj_end(b);
        return;
    }
    if (!r->request_schema)
        return;
    bs_jw_key(b, "requestBody");
    bs_jw_obj_begin(b);
    bs_jw_key(b, "required");
    bs_jw_bool(b, 1);
    json_content(b, r->request_schema, x->example);
    bs_jw_obj_end(b);
}

static void write_responses(bs_buf_t *b, const bs_route_t *r, const extra_t *x)
{
    bs_jw_key(b, "responses");
    bs_jw_obj_begin(b);
    char st[8];
    int status = r->success_status ? r->success_status : 200;
    snprintf(st, sizeof st, "%d", status);
    bs_jw_key(b, st);
    bs_jw_obj_begin(b);
    bs_jw_key(b, "description");
    bs_jw_str(b, status == 201 ? "created" : status == 204 ? "done, no body" : "success");
    switch (x->resp) {
    case RESP_TEXT:
        bs_jw_key(b, "content");
        raw(b, "{\"text/plain\":{\"schema\":{\"type\":\"string\"}}}");
        break;
    case RESP_HTML:
        bs_jw_key(b, "content");
        raw(b, "{\"text/html\":{\"schema\":{\"type\":\"string\"}}}");
        break;
    case RESP_EVENTS:
        bs_jw_key(b, "content");
        raw(b, "{\"text/event-stream\":{\"schema\":{\"type\":\"string\",\"description\":"
               "\"Server-Sent Events: per event 'id: <offset>', 'event: <type>', 'data: "
               "{offset, id, time, event}'; ': ping' comments as heartbeats\"}}}");
        break;
    case RESP_JSON:
        if (r->response_schema)
            json_content(b, r->response_schema, NULL);
        break;
    }
    bs_jw_obj_end(b);
    if (r->fn == bs__api_resource_put && status == 200 && r->response_schema) {
        /* A resource PUT answers 201 when it created the resource, 200 otherwise. */
        bs_jw_key(b, "201");
        bs_jw_obj_begin(b);
        bs_jw_key(b, "description");
        bs_jw_str(b, "created");
        json_content(b, r->response_schema, NULL);
        bs_jw_obj_end(b);
    }
    /* Routes of the Open Inference Protocol answer errors in its shape (server.c). */
    const char *err = strncmp(r->pattern, "/v2", 3) == 0 && (r->pattern[3] == '/' || !r->pattern[3])
                          ? "{\"$ref\":\"#/components/responses/OipError\"}"
                          : "{\"$ref\":\"#/components/responses/Error\"}";
    bs_jw_key(b, "4XX");
    raw(b, err);
    bs_jw_key(b, "default");
    raw(b, err);
    bs_jw_obj_end(b);
}

/* A curl command line for the route (x-codeSamples, which Redoc shows and /docs prints):
 * $BASALT_URL and $BASALT_API_KEY as the CLI reads them, sample path parameters. */
static void write_sample(bs_buf_t *b, const bs_route_t *r, const extra_t *x)
{
    bs_buf_t c;
    bs_buf_init(&c);
    bs_buf_puts(&c, "curl");
    if (strcmp(r->method, "GET") != 0)
        bs_buf_printf(&c, " -X %s", r->method);
    bs_buf_puts(&c, " \"$BASALT_URL");
    for (const char *p = r->pattern; *p; p++) {
        if (*p != '{') {
            bs_buf_putc(&c, *p);
            continue;
        }
        const char *e = strchr(p, '}');
        if (!e)
            break;
        size_t n = (size_t)(e - p - 1);
        if (n && p[n] == '*')
            n--;
        const char *v = !strncmp(p + 1, "name", n) && n == 4      ? "churn"
                        : !strncmp(p + 1, "version", n) && n == 7 ? "1"
                        : !strncmp(p + 1, "alias", n) && n == 5   ? "champion"
                                                                  : NULL;
        if (v)
            bs_buf_puts(&c, v);
        else
            bs_buf_printf(&c, "$%.*s", (int)n, p + 1);
        p = e;
    }
    if (x->body == BODY_UPLOAD)
        bs_buf_puts(&c, "?format=xgboost_json\"");
    else
        bs_buf_putc(&c, '"');
    if (r->min_role > BS_ROLE_PUBLIC)
        bs_buf_puts(&c, " -H \"Authorization: Bearer $BASALT_API_KEY\"");
    if (x->body == BODY_UPLOAD)
        bs_buf_puts(&c, " --data-binary @model.json");
    else if (x->example)
        bs_buf_printf(&c, " -H 'Content-Type: application/json' -d '%s'", x->example);
    else if (r->request_schema)
        bs_buf_puts(&c, " -H 'Content-Type: application/json' -d '{}'");
    bs_jw_key(b, "x-codeSamples");
    bs_jw_arr_begin(b);
    bs_jw_obj_begin(b);
    bs_jw_key(b, "lang");
    bs_jw_str(b, "curl");
    bs_jw_key(b, "source");
    bs_jw_strn(b, c.data ? c.data : "", c.len);
    bs_jw_obj_end(b);
    if (x->body == BODY_UPLOAD) {
        bs_jw_obj_begin(b);
        bs_jw_key(b, "lang");
        bs_jw_str(b, "curl");
        bs_jw_key(b, "label");
        bs_jw_str(b, "multipart");
        bs_jw_key(b, "source");
        bs_jw_str(b,
                  "curl -X POST \"$BASALT_URL/v1/models/churn/versions\" -H \"Authorization: "
                  "Bearer $BASALT_API_KEY\" -F artifact=@model.json -F 'metadata={\"description\":"
                  "\"weekly retrain\",\"metrics\":{\"auc\":0.91}};type=application/json'");
        bs_jw_obj_end(b);
    }
    bs_jw_arr_end(b);
    if (c.oom)
        b->oom = 1;
    bs_buf_free(&c);
}

static void write_operation(bs_buf_t *b, const bs_route_t *r)
{
    const extra_t *x = extra_of(r);
    char m[16], opid[300];
    size_t k = 0;
    for (; r->method[k] && k + 1 < sizeof m; k++)
        m[k] =
            (char)(r->method[k] >= 'A' && r->method[k] <= 'Z' ? r->method[k] + 32 : r->method[k]);
    m[k] = '\0';
    bs_jw_key(b, m);
    bs_jw_obj_begin(b);
    bs_jw_key(b, "summary");
    bs_jw_str(b, r->summary ? r->summary : "");
    bs_jw_key(b, "operationId");
    operation_id(r, opid, sizeof opid);
    bs_jw_str(b, opid);
    bs_jw_key(b, "tags");
    bs_jw_arr_begin(b);
    bs_jw_str(b, r->tag ? r->tag : "default");
    bs_jw_arr_end(b);
    bs_jw_key(b, "x-basalt-min-role");
    bs_jw_str(b, bs_role_name(r->min_role));
    bs_jw_key(b, "security");
    raw(b, r->min_role > BS_ROLE_PUBLIC ? "[{\"bearer\":[]}]" : "[]");
    write_params(b, r, x);
    write_request(b, r, x);
    write_responses(b, r, x);
    write_sample(b, r, x);
    bs_jw_obj_end(b);
}

void bs_api_openapi(const bs_route_t *routes, int n, bs_buf_t *b)
{
    bs_jw_obj_begin(b);
    bs_jw_key(b, "openapi");
    bs_jw_str(b, "3.1.0");
    bs_jw_key(b, "info");
    bs_jw_obj_begin(b);
    bs_jw_key(b, "title");
    bs_jw_str(b, "basalt");
    bs_jw_key(b, "version");
    bs_jw_str(b, BS_VERSION);
    bs_jw_key(b, "description");
    bs_jw_str(b,
              "AI backend in one binary: model registry and serving, and more. Errors are "
              "{\"error\": {\"code\", \"message\", \"field\"}, \"request_id\"} (on /v2, the Open "
              "Inference Protocol's {\"error\": \"message\"}). Each operation's "
              "x-basalt-min-role is the least role of the API key it accepts "
              "(admin > developer > predictor > viewer; public needs no key).");
    bs_jw_obj_end(b);
    /* Relative to where this document was fetched: the server that serves it. */
    bs_jw_key(b, "servers");
    raw(b, "[{\"url\":\"/\",\"description\":\"the server this document came from\"}]");
    bs_jw_key(b, "security");
    raw(b, "[{\"bearer\":[]}]");
    bs_jw_key(b, "tags");
    raw(b, "[{\"name\":\"system\",\"description\":\"health, metrics, this document, server info\"},"
           "{\"name\":\"auth\",\"description\":\"API keys and tenants\"},"
           "{\"name\":\"models\",\"description\":\"models, versions, reviews, aliases\"},"
           "{\"name\":\"serving\",\"description\":\"online prediction\"},"
           "{\"name\":\"runs\",\"description\":\"experiment runs and their metrics\"},"
           "{\"name\":\"audit\",\"description\":\"the audit log of registry changes\"},"
           "{\"name\":\"kserve\",\"description\":\"the Open Inference Protocol (KServe v2)\"}]");
    bs_jw_key(b, "components");
    raw(b, "{\"securitySchemes\":{\"bearer\":{\"type\":\"http\",\"scheme\":\"bearer\","
           "\"description\":\"an API key: Authorization: Bearer bsk_...\"}},"
           "\"responses\":{\"Error\":{\"description\":\"error\",\"content\":{\"application/json\":"
           "{\"schema\":{\"$ref\":\"#/components/schemas/Error\"}}}},"
           "\"OipError\":{\"description\":\"error (Open Inference Protocol shape; the request id "
           "is in X-Request-Id)\",\"content\":{\"application/json\":{\"schema\":{\"$ref\":"
           "\"#/components/schemas/OipError\"}}}}},"
           "\"schemas\":{\"Error\":{\"type\":\"object\",\"required\":[\"error\",\"request_id\"],"
           "\"properties\":{\"error\":{\"type\":\"object\",\"required\":[\"code\",\"message\"],"
           "\"properties\":{\"code\":{\"type\":\"string\"},\"message\":{\"type\":\"string\"},"
           "\"field\":{\"type\":\"string\"}}},\"request_id\":{\"type\":\"string\"}}},"
           "\"OipError\":{\"type\":\"object\",\"required\":[\"error\"],\"properties\":"
           "{\"error\":{\"type\":\"string\"}}}}}");
    bs_jw_key(b, "paths");
    bs_jw_obj_begin(b);
    char *done = calloc((size_t)n, 1);
    for (int i = 0; i < n; i++) {
        if (done && done[i])
            continue;
        char key[256];
        path_key(routes[i].pattern, key, sizeof key);
        bs_jw_key(b, key);
        bs_jw_obj_begin(b);
        for (int j = i; j < n; j++) {
            if (strcmp(routes[j].pattern, routes[i].pattern) != 0)
                continue;
            if (done)
                done[j] = 1;
            write_operation(b, &routes[j]);
        }
        bs_jw_obj_end(b);
    }
    free(done);
    bs_jw_obj_end(b);
    bs_jw_obj_end(b);
}

int bs_api_authenticate(void *app, const char *token, size_t len, bs_principal_t *who,
                        bs_err_t *err)
{
    return bs_auth_verify(((bs_app_t *)app)->auth, token, len, who, err);
}

int bs_api_rate_limit(void *app, const bs_principal_t *who, double *retry_after_s)
{
    return bs_auth_charge(((bs_app_t *)app)->auth, who, retry_after_s);
}

int bs_api_authorize(void *app, const bs_principal_t *who, const bs_route_t *route, bs_err_t *err)
{
    (void)app;
    if (!who->scopes)
        return 0;
    if ((who->scopes & BS_SCOPE_METRICS) && route->fn == bs__api_metrics)
        return 0;
    return bs_err_set(err, BS_EFORBID, "this API key is limited to its scopes (metrics: GET /metrics)");
}
