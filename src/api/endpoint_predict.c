/*
 * Predict through an endpoint (issue 10): POST /v1/endpoints/{name}/predict and the Open
 * Inference Protocol's /v2/models/{endpoint}/infer. An inline handler, like model predict
 * (models.c), on the hot path: no lock, no store.
 *
 * One request, in order:
 *   1. the endpoint from the routing snapshot (serving/endpoints.h; 404 when unknown) —
 *      read once: everything below uses that one policy;
 *   2. the sticky key: the spec's input field in the body's first row (a string's
 *      characters, a number in its shortest decimal form: 17, 0.25, true/false; a batch
 *      request routes once, by its first row), or the spec's request header;
 *   3. the route (bs_endpoint_pick) and its version, resolved in the serving snapshot
 *      ("model" at a version, or "model@alias"). A version that is not loaded is loaded on
 *      the serving module's loader threads and the handler runs again: the endpoint is read
 *      again then and the route picked again (the first run served nothing), while the
 *      other routes' versions start loading too so the second pick finds them ready;
 *   4. the rows, parsed for that version's schema (the fast one-row path, the general
 *      path), predicted inline or through the dynamic batcher, answered with the model
 *      predict body plus "endpoint" and "variant", headers X-Basalt-Model-Version and
 *      X-Basalt-Variant;
 *   5. after the answer is handed to the server: the endpoint's metrics
 *      (bs_endpoint_record), the prediction log's records (one per row, or one error
 *      record; serving/predlog.h), the payload logger, and the shadow runs drawn for this
 *      request, queued on the shadow runner (serving/shadow.h) with a copy of the body.
 * A shadow run predicts the same body on the shadow version on a shadow thread, records
 * its metrics (shadow=1) and logs its rows with "shadow": true under the rows' own
 * prediction ids; the caller never sees it.
 *
 * Completions that run on another thread (the batcher's, a shadow thread) work from a copy
 * of what the request routed to (call_t), and look the endpoint up again for its metrics
 * (its counters live with the endpoint's long-lived state, found by variant name).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "base/id.h"
#include "base/log.h"
#include "base/rcu.h"
#include "monitor/monitor.h"
#include "serving/endpoints.h"
#include "serving/predlog.h"
#include "serving/shadow.h"

#define STICKY_MAX 256 /* bytes of a sticky key the prediction log keeps */

typedef enum { BODY_BASALT, BODY_OIP } body_kind_t;

/* What one request routed to, copied out of the snapshot. */
typedef struct {
    bs_app_t *app;
    body_kind_t kind;
    char tenant[64];
    char endpoint[64];
    char model[129];
    char variant[64];
    int route;
    int version; /* the resolved version; the route's (0 for an alias) if unresolved */
    int log;     /* the request's records go to the prediction log */
    int sticky;  /* the endpoint is sticky (the log's sticky_key is written) */
    int has_key; /* … and the request carried a key */
    char sticky_key[STICKY_MAX + 1];
    char request_id[72];
    const char *oip_id;     /* OIP: the request's "id", echoed (NULL: none); borrowed from the
                             * request's body, so only while the handler runs (OIP is inline) */
    char sticky_field[129]; /* the spec's sticky field: never an unknown feature */
    char logger_url[512];
    char logger_mode[16];
    int n_shadows;
    bs_endpoint_route_t shadows[BS_ENDPOINT_MAX_SHADOWS];
    int64_t wall_ms; /* when the prediction was made */
    int max_json_depth;
    int max_rows;
} call_t;

/* What came of a request (or of a shadow run). */
typedef struct {
    const bs_model_handle_t *h; /* NULL when the version could not be resolved */
    const double *rows;         /* encoded rows (n * n_features), NULL when not parsed */
    const double *out;          /* n * n_outputs, NULL on failure */
    size_t n;
    const char (*ids)[37]; /* the rows' prediction ids (n of them) */
    const char *inputs;    /* one row: its inputs object as the request wrote it, when that text
                            * equals the row (bs_serving_parse_fast_ex), else NULL */
    size_t inputs_len;
    uint64_t duration_ns;
    const bs_err_t *err; /* NULL on success */
} outcome_t;

/* ---- the prediction log ------------------------------------------------------------------ */

/* The record's first member "origin" when the monitor already has the row (its local feed:
 * monitor/monitor.h); the monitor's tail skips records that begin so. */
static void render_origin(bs_buf_t *b, const char *origin)
{
    if (origin) {
        bs_jw_key(b, "origin");
        bs_jw_str(b, origin);
    }
}

/* One record of serving/predlog.h. row/out NULL: not written; err non-NULL: "error". */
static void render_record(bs_buf_t *b, const call_t *c, const char *origin, const char *time,
                          const char *prediction_id, int shadow, const char *variant, int version,
                          double latency_ms, const bs_model_handle_t *h, const double *row,
                          const char *inputs, size_t inputs_len, const double *out,
                          const bs_err_t *err)
{
    bs_jw_obj_begin(b);
    render_origin(b, origin);
    bs_jw_key(b, "prediction_id");
    bs_jw_strn(b, prediction_id, 36);
    bs_jw_key(b, "request_id");
    bs_jw_str(b, c->request_id);
    bs_jw_key(b, "time");
    bs_jw_str(b, time);
    bs_jw_key(b, "endpoint");
    bs_jw_str(b, c->endpoint);
    bs_jw_key(b, "model");
    bs_jw_str(b, c->model);
    bs_jw_key(b, "version");
    if (version > 0)
        bs_jw_int(b, version);
    else
        bs_jw_null(b);
    bs_jw_key(b, "variant");
    bs_jw_str(b, variant);
    bs_jw_key(b, "shadow");
    bs_jw_bool(b, shadow);
    if (c->sticky) {
        bs_jw_key(b, "sticky_key");
        if (c->has_key)
            bs_jw_str(b, c->sticky_key);
        else
            bs_jw_null(b);
    }
    bs_jw_key(b, "latency_ms");
    bs_jw_double(b, latency_ms);
    if (h && row) {
        bs_jw_key(b, "inputs");
        if (inputs)
            bs_jw_raw(b, inputs, inputs_len); /* the same row, without formatting its numbers */
        else
            bs_serving_render_row(h, row, b);
    }
    if (err) {
        bs__api_render_error_obj(b, err->code, err->field, err->msg);
    } else if (h && out) {
        bs_jw_key(b, "output");
        bs_serving_render_value(h, out, b);
    }
    bs_jw_obj_end(b);
}

/* Submits one rendered record; the drain is handed its log id (the prediction id, and the
 * variant of a shadow record) and the names' lengths so it does not scan the record. */
static void submit_record(bs_app_t *app, const call_t *c, size_t tl, size_t el, const char *id,
                          int shadow, const char *variant, bs_buf_t *b)
{
    if (!b->oom)
        bs_predlog_submit_ex(app->predlog, c->tenant, tl, c->endpoint, el, id, 36,
                             shadow ? variant : NULL, shadow ? strlen(variant) : 0, b->data,
                             b->len);
}

/* The row into the monitor's local feed: the record's "origin" when it took it, else NULL. */
static const char *observe(const call_t *c, const char *prediction_id, int shadow,
                           const char *variant, int version, double latency_ms,
                           const bs_model_handle_t *h, const double *out, const bs_err_t *err)
{
    bs_monitor_t *m = c->app->monitor;
    if (!m)
        return NULL;
    bs_monitor_obs_t ob = {.prediction_id = prediction_id,
                           .endpoint = c->endpoint,
                           .variant = variant,
                           .time_ms = c->wall_ms,
                           .version = version > 0 ? version : 0,
                           .shadow = shadow,
                           .error = err != NULL,
                           .latency_ms = latency_ms,
                           .kind = BS_MONITOR_OBS_NONE};
    if (!err && h && out) {
        const bs_ml_schema_t *s = bs_model_handle_schema(h);
        if (s->task == BS_ML_CLASSIFICATION) {
            ob.kind = BS_MONITOR_OBS_CLASSES;
            ob.k = s->n_outputs;
            ob.labels = (const char *const *)s->labels;
        } else {
            ob.kind = s->n_outputs == 1 ? BS_MONITOR_OBS_VALUE : BS_MONITOR_OBS_OTHER;
        }
        ob.out = out;
    }
    return bs_monitor_observe(m, c->tenant, &ob) == 0 ? bs_monitor_origin(m) : NULL;
}

/* The records of one outcome: one per row, or one error record with an id of its own when
 * the request failed before any row was predicted. */
static void log_outcome(const call_t *c, int shadow, const char *variant, int version,
                        const outcome_t *o)
{
    bs_app_t *app = c->app;
    if (!app->predlog || !c->log)
        return;
    char small[4096];
    bs_buf_t b = BS_BUF_ON(small);
    double ms = (double)o->duration_ns / 1e6;
    char time[40];
    bs_time_rfc3339(c->wall_ms, time, sizeof time);
    size_t tl = strlen(c->tenant), el = strlen(c->endpoint);
    if (!shadow && o->err) {
        char id[37];
        bs_uuid7(id);
        const char *origin = observe(c, id, 0, variant, version, ms, o->h, NULL, o->err);
        render_record(&b, c, origin, time, id, 0, variant, version, ms, o->h, NULL, NULL, 0, NULL,
                      o->err);
        submit_record(app, c, tl, el, id, 0, variant, &b);
    } else {
        size_t nf = o->h ? (size_t)bs_model_handle_schema(o->h)->n_features : 0;
        size_t k = o->h ? (size_t)bs_model_handle_schema(o->h)->n_outputs : 0;
        for (size_t r = 0; r < o->n; r++) {
            bs_buf_reset(&b);
            const double *out = o->out ? o->out + r * k : NULL;
            const char *origin = observe(c, o->ids[r], shadow, variant, version, ms, o->h, out,
                                         o->err);
            render_record(&b, c, origin, time, o->ids[r], shadow, variant, version, ms, o->h,
                          o->rows ? o->rows + r * nf : NULL, o->n == 1 ? o->inputs : NULL,
                          o->inputs_len, out, o->err);
            submit_record(app, c, tl, el, o->ids[r], shadow, variant, &b);
        }
    }
    bs_buf_free(&b);
}

/* ---- shadow runs ------------------------------------------------------------------------- */

typedef struct {
    call_t c;
    bs_endpoint_route_t sh; /* the shadow */
    char *body;             /* these two point into the same allocation, after the struct */
    size_t body_len;
    size_t n;
    char (*ids)[37];
    const char *inputs; /* in body: the one row's inputs text (bs_serving_parse_fast_ex) */
    size_t inputs_len;
} shadow_run_t;

static void shadow_free(void *ud)
{
    free(ud); /* one allocation: the run, its ids and its body */
}

/* The request's body as rows for the shadow version's schema. */
static int shadow_parse(void *ud, bs_serving_t *sv, const bs_model_handle_t *h, bs_arena_t *a,
                        double **rows, size_t *n, bs_err_t *err)
{
    shadow_run_t *s = ud;
    size_t nf = (size_t)bs_model_handle_schema(h)->n_features;
    int rc;
    double *r = NULL;
    size_t got = 0;
    if (s->c.kind == BODY_BASALT && s->n == 1 &&
        (r = bs_arena_alloc(a, (nf + 1) * sizeof(double))) &&
        bs_serving_parse_fast_ex(sv, h, s->body, s->body_len, r, &s->inputs, &s->inputs_len)) {
        got = 1;
        rc = 0;
    } else {
        cJSON *j = bs_json_parse_arena(a, s->body, s->body_len, s->c.max_json_depth, err);
        if (!j)
            return err->code;
        const char *skip = s->c.sticky_field[0] ? s->c.sticky_field : NULL;
        rc = s->c.kind == BODY_OIP
                 ? bs__api_oip_rows(a, h, j, (size_t)s->c.max_rows, skip, &r, &got, err)
                 : bs_serving_parse_inputs_ex(sv, h, j, skip, a, &r, &got, err);
    }
    if (!rc && got != s->n)
        rc = bs_err_set(err, BS_EINTERNAL, "the shadow version read %zu rows of a request of %zu",
                        got, s->n);
    if (rc)
        return rc;
    *rows = r;
    *n = got;
    return 0;
}

/* Counts a run of shadow `variant` on the endpoint as the snapshot has it now (the thread
 * is QSBR-registered). A shadow the policy no longer has is not counted. */
static void shadow_record(const call_t *c, const char *variant, int version, uint64_t ns, int code)
{
    if (!c->app->endpoints)
        return;
    const bs_endpoint_t *ep = bs_endpoints_get(c->app->endpoints, c->tenant, c->endpoint);
    for (int i = 0; ep && i < ep->n_shadows; i++)
        if (!strcmp(ep->shadows[i].name, variant)) {
            bs_endpoint_record(ep, 1, i, version, ns, code);
            return;
        }
}

static void shadow_done(void *ud, bs_model_handle_t *h, const double *rows, const double *out,
                        size_t n, uint64_t ns, const bs_err_t *err)
{
    shadow_run_t *s = ud;
    (void)n;
    int version = h ? bs_model_handle_version(h) : s->sh.version;
    shadow_record(&s->c, s->sh.name, version, ns, err ? err->code : 0);
    if (err)
        BS_LOG(BS_LOG_DEBUG, "endpoints", "shadow %s of endpoint %s (request %s) failed: %s",
               s->sh.name, s->c.endpoint, s->c.request_id, err->msg);
    outcome_t o = {.h = h,
                   .rows = rows,
                   .out = out,
                   .n = s->n,
                   .ids = (const char(*)[37])s->ids,
                   .inputs = s->inputs,
                   .inputs_len = s->inputs_len,
                   .duration_ns = ns,
                   .err = err};
    log_outcome(&s->c, 1, s->sh.name, version, &o);
}

static void run_shadows(const call_t *c, const char *body, size_t body_len, size_t n,
                        const char (*ids)[37])
{
    bs_app_t *app = c->app;
    for (int i = 0; i < c->n_shadows && app->shadow; i++) {
        /* One allocation: the run, then the ids (37-byte aligned is enough: chars), then
         * the body and its NUL. */
        size_t ids_bytes = n * sizeof(char[37]);
        shadow_run_t *s = malloc(sizeof *s + ids_bytes + body_len + 1);
        if (!s)
            return;
        memcpy(&s->c, c, sizeof *c);
        s->c.oip_id = NULL; /* borrowed from the request: not past it */
        s->sh = c->shadows[i];
        s->n = n;
        s->body_len = body_len;
        s->ids = (char(*)[37])(s + 1);
        s->body = (char *)(s + 1) + ids_bytes;
        s->inputs = NULL;
        s->inputs_len = 0;
        if (body_len)
            memcpy(s->body, body, body_len);
        s->body[body_len] = '\0';
        if (ids_bytes)
            memcpy(s->ids, ids, ids_bytes);
        char ref[200];
        if (s->sh.version <= 0)
            snprintf(ref, sizeof ref, "%s@%s", c->model, s->sh.alias);
        bs_shadow_job_t job = {.tenant = c->tenant,
                               .ref = s->sh.version > 0 ? c->model : ref,
                               .version = s->sh.version,
                               .parse = shadow_parse,
                               .done = shadow_done,
                               .free_ud = shadow_free,
                               .ud = s,
                               .bytes = body_len + n * sizeof *s->ids};
        bs_err_t err;
        if (bs_shadow_submit(app->shadow, &job, &err) != 0)
            shadow_free(s); /* dropped and counted by the runner */
    }
}

/* ---- after the answer -------------------------------------------------------------------- */

/* Metrics, the prediction log, the payload logger and the shadow runs of a request whose
 * answer (resp) has been handed to the server. ep: the request's endpoint while its QSBR
 * section lasts (the I/O thread), NULL elsewhere (looked up again under a registration of
 * this thread, and counted by route name). */
static void after_answer(const call_t *c, const bs_endpoint_t *ep, const outcome_t *o,
                         const char *body, size_t body_len, const char *resp, size_t resp_len)
{
    bs_app_t *app = c->app;
    int code = o->err ? o->err->code : 0;
    if (ep) {
        bs_endpoint_record(ep, 0, c->route, c->version, o->duration_ns, code);
    } else if (app->endpoints && bs_rcu_register() == 0) {
        const bs_endpoint_t *now = bs_endpoints_get(app->endpoints, c->tenant, c->endpoint);
        for (int i = 0; now && i < now->n_routes; i++)
            if (!strcmp(now->routes[i].name, c->variant)) {
                bs_endpoint_record(now, 0, i, c->version, o->duration_ns, code);
                break;
            }
        bs_rcu_unregister();
    }
    log_outcome(c, 0, c->variant, c->version, o);
    /* A failed request posts its request event only (KServe's agent logs 200s only). */
    if (c->logger_url[0] && app->predlog)
        bs_predlog_payload(app->predlog, c->logger_url, c->logger_mode, c->tenant, c->endpoint,
                           c->variant, c->request_id, body, body_len, o->err ? NULL : resp,
                           o->err ? 0 : resp_len);
    if (!o->err && c->n_shadows)
        run_shadows(c, body, body_len, o->n, o->ids);
}

/* ---- routing ----------------------------------------------------------------------------- */

/* The key bytes of a JSON value: a string's characters, a number's shortest decimal form
 * (integers without a fraction), true/false. NULL for anything else (no key). */
static const char *value_key(const cJSON *v, char num[40], size_t *len)
{
    if (cJSON_IsString(v) && v->valuestring) {
        *len = strlen(v->valuestring);
        return v->valuestring;
    }
    if (cJSON_IsNumber(v) && isfinite(v->valuedouble)) {
        double x = v->valuedouble;
        if (x == floor(x) && fabs(x) < 1e15) {
            snprintf(num, 40, "%lld", (long long)x);
        } else {
            /* The shortest form that reads back as the same double. */
            for (int p = 1; p <= 17; p++) {
                snprintf(num, 40, "%.*g", p, x);
                if (strtod(num, NULL) == x)
                    break;
            }
        }
        *len = strlen(num);
        return num;
    }
    if (cJSON_IsBool(v)) {
        *len = cJSON_IsTrue(v) ? 4 : 5;
        return cJSON_IsTrue(v) ? "true" : "false";
    }
    return NULL;
}

/* The sticky field's value in the body's first row: {"inputs": {…}}, {"inputs": [{…}, …]},
 * {"instances": [{…}, …]}; OIP: the first value of the tensor named after the field. */
static const char *sticky_from_body(const cJSON *j, body_kind_t kind, const char *field,
                                    char num[40], size_t *len)
{
    if (!cJSON_IsObject(j))
        return NULL;
    if (kind == BODY_OIP) {
        const cJSON *inputs = cJSON_GetObjectItemCaseSensitive(j, "inputs");
        const cJSON *t;
        cJSON_ArrayForEach(t, inputs)
        {
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(t, "name");
            if (!cJSON_IsString(nm) || strcmp(nm->valuestring, field) != 0)
                continue;
            const cJSON *d = cJSON_GetObjectItemCaseSensitive(t, "data");
            for (int depth = 0; cJSON_IsArray(d) && depth < 8; depth++)
                d = d->child;
            return d ? value_key(d, num, len) : NULL;
        }
        return NULL;
    }
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(j, "inputs");
    if (!src)
        src = cJSON_GetObjectItemCaseSensitive(j, "instances");
    const cJSON *row = cJSON_IsObject(src) ? src : cJSON_IsArray(src) ? src->child : NULL;
    if (!cJSON_IsObject(row))
        return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, field);
    return v ? value_key(v, num, len) : NULL;
}

static void route_ref(const bs_endpoint_t *ep, const bs_endpoint_route_t *r, char *ref, size_t cap)
{
    if (r->version > 0)
        snprintf(ref, cap, "%s", ep->model);
    else
        snprintf(ref, cap, "%s@%s", ep->model, r->alias);
}

/* The request waits for route `skip`'s version to load: start loading the other routes'
 * too, so the pick of the handler's next run finds its version ready whichever it is. */
static void preload_routes(bs_req_t *req, const bs_endpoint_t *ep, int skip)
{
    bs_app_t *app = APP(req);
    for (int i = 0; i < ep->n_routes; i++) {
        if (i == skip || ep->routes[i].weight == 0)
            continue;
        char ref[200];
        route_ref(ep, &ep->routes[i], ref, sizeof ref);
        bs_err_t err;
        bs_serving_slot_t *unloaded = NULL;
        if (!bs_serving_peek(app->serving, req->who.tenant, ref, ep->routes[i].version, &unloaded,
                             &err) &&
            unloaded)
            bs_serving_load_async(app->serving, unloaded, NULL, NULL, &err);
    }
}

/* Copies the string src into dst (cap bytes), truncating: snprintf's result without its
 * format parsing (this runs several times per request). */
static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void call_init(call_t *c, bs_req_t *req, const bs_endpoint_t *ep, body_kind_t kind,
                      int route, const char *key, size_t key_len)
{
    bs_app_t *app = APP(req);
    const bs_endpoint_route_t *r = &ep->routes[route];
    memset(c, 0, sizeof *c);
    c->app = app;
    c->kind = kind;
    copy_str(c->tenant, sizeof c->tenant, req->who.tenant);
    copy_str(c->endpoint, sizeof c->endpoint, ep->name);
    copy_str(c->model, sizeof c->model, ep->model);
    copy_str(c->variant, sizeof c->variant, r->name);
    c->route = route;
    c->version = r->version;
    c->log = app->predlog && bs_endpoint_log_draw(ep);
    c->sticky = ep->sticky_field[0] || ep->sticky_header[0];
    copy_str(c->sticky_field, sizeof c->sticky_field, ep->sticky_field);
    if (key) {
        size_t l = key_len < STICKY_MAX ? key_len : STICKY_MAX;
        memcpy(c->sticky_key, key, l);
        c->sticky_key[l] = '\0';
        c->has_key = 1;
    }
    copy_str(c->request_id, sizeof c->request_id, req->request_id);
    copy_str(c->logger_url, sizeof c->logger_url, ep->logger_url);
    copy_str(c->logger_mode, sizeof c->logger_mode, ep->logger_mode);
    c->n_shadows = 0;
    for (int i = 0; app->shadow && i < ep->n_shadows; i++)
        if (bs_endpoint_shadow_draw(ep, i))
            c->shadows[c->n_shadows++] = ep->shadows[i];
    c->wall_ms = bs_time_wall_ms();
    c->max_json_depth = req->cfg->max_json_depth;
    c->max_rows = req->cfg->max_batch_rows;
}

static void version_headers(const call_t *c, bs_req_t *req, bs_deferred_t *d)
{
    char v[16];
    snprintf(v, sizeof v, "%d", c->version);
    if (d) {
        if (c->version > 0)
            bs_deferred_header(d, "x-basalt-model-version", v);
        bs_deferred_header(d, "x-basalt-variant", c->variant);
    } else {
        if (c->version > 0)
            bs_resp_header(req, "x-basalt-model-version", v);
        bs_resp_header(req, "x-basalt-variant", c->variant);
    }
}

/* The successful answer's body. */
static void render_answer(const call_t *c, const bs_model_handle_t *h, const double *out, size_t n,
                          const char (*ids)[37], bs_buf_t *b)
{
    const char *members[] = {"endpoint", c->endpoint, "variant", c->variant, NULL};
    if (c->kind == BODY_OIP) {
        const char *params[] = {"endpoint", c->endpoint, "model", c->model,
                                "variant",  c->variant,  NULL};
        bs__api_oip_render(h, c->endpoint, c->oip_id, out, n, ids, params, b);
    } else {
        bs_serving_render_ex(h, out, n, ids, members, b);
    }
}

/* ---- the batched path -------------------------------------------------------------------- */

typedef struct {
    call_t c;
    bs_deferred_t *d;
    uint64_t start_ns;
    size_t n;
    char (*ids)[37];
    double *rows; /* a copy for the log (NULL when the request is not logged) */
    char *body;   /* a copy for shadows and the payload logger (NULL when neither) */
    size_t body_len;
} batched_t;

static void batched_free(batched_t *bt)
{
    free(bt->ids);
    free(bt->rows);
    free(bt->body);
    free(bt);
}

/* On the batcher thread: answer, then the rest (after_answer without a snapshot). */
static void batched_done(void *ud, bs_model_handle_t *h, const double *out, size_t n,
                         const bs_err_t *err)
{
    batched_t *bt = ud;
    char small[2048];
    bs_buf_t b = BS_BUF_ON(small);
    uint64_t ns = bs_time_mono_ns() - bt->start_ns;
    version_headers(&bt->c, NULL, bt->d);
    if (!out) {
        bs_serving_record(h, 0, 0, err->code);
        bs_deferred_respond_error(bt->d, err);
    } else {
        render_answer(&bt->c, h, out, n, (const char(*)[37])bt->ids, &b);
        bs_deferred_respond_json(bt->d, 200, &b);
        bs_serving_record(h, n, ns, 0);
    }
    outcome_t o = {.h = h,
                   .rows = bt->rows,
                   .out = out,
                   .n = bt->n,
                   .ids = (const char(*)[37])bt->ids,
                   .duration_ns = ns,
                   .err = out ? NULL : err};
    after_answer(&bt->c, NULL, &o, bt->body, bt->body_len, b.data, b.len);
    bs_buf_free(&b);
    batched_free(bt);
}

/* Queues the rows on h's batcher: 1 when the batcher answers, 0 to predict inline (could not
 * defer), -1 with err set. */
static int submit_batched(bs_req_t *req, const bs_endpoint_t *ep, const call_t *c,
                          bs_model_handle_t *h, const double *rows, size_t n, const char (*ids)[37],
                          bs_err_t *err)
{
    batched_t *bt = calloc(1, sizeof *bt);
    if (!bt)
        return 0;
    bt->c = *c;
    bt->c.oip_id = NULL;
    bt->start_ns = req->start_ns;
    bt->n = n;
    size_t nf = (size_t)bs_model_handle_schema(h)->n_features;
    bt->ids = malloc(n * sizeof *bt->ids + 1);
    int ok = bt->ids != NULL;
    if (ok)
        memcpy(bt->ids, ids, n * sizeof *bt->ids);
    if (ok && c->log) {
        ok = (bt->rows = malloc(n * nf * sizeof(double) + 1)) != NULL;
        if (ok)
            memcpy(bt->rows, rows, n * nf * sizeof(double));
    }
    if (ok && (c->n_shadows || c->logger_url[0])) {
        bt->body_len = req->body_len;
        ok = (bt->body = malloc(req->body_len + 1)) != NULL;
        if (ok && req->body_len)
            memcpy(bt->body, req->body, req->body_len);
    }
    bs_deferred_t *d = ok ? bs_req_defer(req) : NULL;
    if (!d) {
        batched_free(bt);
        return 0;
    }
    bt->d = d;
    if (bs_serving_submit(c->app->serving, h, rows, n, batched_done, bt, err) == 0)
        return 1;
    /* Refused (queue full): the request is answered here, on its deferred token. */
    char small[1024];
    bs_buf_t b = BS_BUF_ON(small);
    version_headers(c, NULL, d);
    bs_serving_record(h, 0, 0, err->code);
    bs_deferred_respond_error(d, err);
    outcome_t o = {
        .h = h, .n = n, .ids = ids, .duration_ns = bs_time_mono_ns() - req->start_ns, .err = err};
    after_answer(c, ep, &o, req->body, req->body_len, b.data, b.len);
    bs_buf_free(&b);
    batched_free(bt);
    return 1;
}

/* ---- the handler ------------------------------------------------------------------------- */

static void serve(bs_req_t *req, body_kind_t kind)
{
    bs_app_t *app = APP(req);
    if (!bs__api_predict_media_ok(req))
        return;
    const char *name = bs_req_param(req, "name");
    const bs_endpoint_t *ep =
        app->endpoints && name ? bs_endpoints_get(app->endpoints, req->who.tenant, name) : NULL;
    if (!ep)
        return bs_resp_errorf(req, BS_ENOTFOUND, "name", "no endpoint '%.64s'", name ? name : "");
    bs_err_t err;
    bs_err_clear(&err);

    /* The sticky key. A body that is not JSON has none; its error is the answer below. */
    cJSON *j = NULL;
    const char *key = NULL;
    size_t key_len = 0;
    char num[40];
    if (ep->sticky_field[0] || kind == BODY_OIP) {
        bs_err_t jerr;
        j = bs_req_json(req, &jerr);
        if (j && ep->sticky_field[0])
            key = sticky_from_body(j, kind, ep->sticky_field, num, &key_len);
    } else if (ep->sticky_header[0]) {
        key = bs_req_header(req, ep->sticky_header);
        key_len = key ? strlen(key) : 0;
    }
    int route = bs_endpoint_pick(ep, key, key_len);
    if (route < 0 || route >= ep->n_routes)
        route = 0;
    const bs_endpoint_route_t *r = &ep->routes[route];
    char ref[200];
    route_ref(ep, r, ref, sizeof ref);
    bs_model_handle_t *h = NULL;
    int got = bs__api_model_resolve(req, ref, r->version, &h, &err);
    if (got == 0)
        return preload_routes(req, ep, route);

    call_t c;
    call_init(&c, req, ep, kind, route, key, key_len);
    if (h)
        c.version = bs_model_handle_version(h);
    int rc = got < 0 ? err.code : 0;
    const char *skip = ep->sticky_field[0] ? ep->sticky_field : NULL;
    double *rows = NULL, *out = NULL;
    size_t n = 0, inputs_len = 0;
    const char *inputs = NULL;
    if (!rc && kind == BODY_OIP) {
        if (!j && !(j = bs_req_json(req, &err)))
            rc = err.code;
        else
            rc = bs__api_oip_rows(&req->arena, h, j, (size_t)req->cfg->max_batch_rows, skip, &rows,
                                  &n, &err);
        const char *id = NULL;
        bs_err_t ignore;
        if (j && bs_json_get_str(j, "id", 0, &id, &ignore) == 0)
            c.oip_id = id;
    } else if (!rc) {
        /* The fast one-row path first, keeping the inputs' text for the log; else the
         * general path (which would try the fast one again without a parsed body). */
        size_t nf = (size_t)bs_model_handle_schema(h)->n_features;
        double *row = !j ? bs_arena_alloc(&req->arena, (nf + 1) * sizeof(double)) : NULL;
        if (row && bs_serving_parse_fast_ex(app->serving, h, req->body, req->body_len, row,
                                            &inputs, &inputs_len)) {
            rows = row;
            n = 1;
        } else if (!j && !(j = bs_req_json(req, &err))) {
            rc = err.code;
        } else {
            rc = bs__api_predict_rows(req, h, skip, &j, &rows, &n, &err);
        }
    }
    char(*ids)[37] = NULL;
    if (!rc && !(ids = bs_arena_alloc(&req->arena, n * sizeof *ids + 1)))
        rc = bs_err_set(&err, BS_ENOMEM, "out of memory for %zu prediction ids", n);
    for (size_t i = 0; !rc && i < n; i++)
        bs_uuid7(ids[i]);
    if (!rc && kind == BODY_BASALT && bs_serving_batched(app->serving, h)) {
        int b = submit_batched(req, ep, &c, h, rows, n, (const char(*)[37])ids, &err);
        if (b)
            return;
    }
    if (!rc) {
        size_t k = (size_t)bs_model_handle_schema(h)->n_outputs;
        out = bs_arena_calloc(&req->arena, n * k + 1, sizeof(double));
        rc = out ? bs_serving_predict(h, rows, n, out, &err)
                 : bs_err_set(&err, BS_ENOMEM, "out of memory");
    }
    uint64_t ns = bs_time_mono_ns() - req->start_ns;
    char small[2048];
    bs_buf_t b = BS_BUF_ON(small);
    version_headers(&c, req, NULL);
    outcome_t o = {.h = h,
                   .rows = rows,
                   .n = n,
                   .ids = (const char(*)[37])ids,
                   .inputs = inputs,
                   .inputs_len = inputs_len,
                   .duration_ns = ns};
    if (rc) {
        if (h)
            bs_serving_record(h, 0, 0, rc);
        bs_resp_error(req, &err);
        o.err = &err;
        o.rows = NULL;
    } else {
        render_answer(&c, h, out, n, (const char(*)[37])ids, &b);
        bs_resp_json(req, 200, &b);
        bs_serving_record(h, n, ns, 0);
        o.out = out;
    }
    after_answer(&c, ep, &o, req->body, req->body_len, b.data, b.len);
    bs_buf_free(&b);
}

void bs__api_endpoint_predict(bs_req_t *req)
{
    serve(req, BODY_BASALT);
}

void bs__api_endpoint_infer(bs_req_t *req)
{
    serve(req, BODY_OIP);
}

int bs__api_endpoint_exists(bs_req_t *req, const char *name)
{
    bs_app_t *app = APP(req);
    return app->endpoints && bs_endpoints_get(app->endpoints, req->who.tenant, name) != NULL;
}

/* ---- the shadow runner's life ------------------------------------------------------------ */

int bs__api_shadow_open(bs_app_t *app, bs_err_t *err)
{
    app->shadow = bs_shadow_new(app->serving, err);
    return app->shadow ? 0 : err->code;
}

void bs__api_shadow_close(bs_app_t *app)
{
    bs_shadow_free(app->shadow);
    app->shadow = NULL;
}

void bs__api_shadow_metrics(bs_app_t *app, bs_buf_t *b)
{
    if (app->shadow)
        bs_shadow_metrics(app->shadow, b);
}
