/*
 * /v1/webhooks: the Webhook kind's hooks (its PUT/GET/DELETE/list routes are the generic
 * resource handlers), the secret, a test event, and the delivery log with replay. Thin
 * handlers over events/webhooks (domain) — every route here touches the store and runs on
 * a store worker.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "base/id.h"
#include "events/webhooks.h"
#include "store/resources.h"

#define MAX_PAGE 1000

typedef struct {
    char *spec;
} stored_spec_t;

static int stored_spec_cb(const bs_resource_t *r, void *ud)
{
    ((stored_spec_t *)ud)->spec = strdup(r->spec);
    return 1;
}

/* The kind's validate hook. A spec without a secret keeps the stored one (GET hides it, so
 * applying what GET shows must not rotate it); a new destination gets a fresh one. */
int bs__api_webhook_validate(bs_app_t *app, const bs_principal_t *who, const char *name,
                             const cJSON *spec, cJSON **out, bs_err_t *err)
{
    if (strcmp(name, "deliveries") == 0)
        return bs_err_setf(err, BS_EINVAL, "name",
                           "'deliveries' is reserved (GET /v1/webhooks/deliveries is the "
                           "delivery log)");
    cJSON *copy = NULL;
    if (cJSON_IsObject(spec) && !cJSON_GetObjectItemCaseSensitive(spec, "secret")) {
        stored_spec_t s = {0};
        bs_err_t e;
        if (bs_resources_get(app->meta, who->tenant, BS_WEBHOOK_KIND, name, stored_spec_cb, &s,
                             &e) == 0 &&
            s.spec) {
            cJSON *old = cJSON_Parse(s.spec);
            const cJSON *secret = cJSON_GetObjectItemCaseSensitive(old, "secret");
            if (cJSON_IsString(secret) && (copy = cJSON_Duplicate(spec, 1)) != NULL)
                cJSON_AddStringToObject(copy, "secret", secret->valuestring);
            cJSON_Delete(old);
        }
        free(s.spec);
    }
    int rc = bs_webhooks_validate(copy ? copy : spec, out, err);
    cJSON_Delete(copy);
    return rc;
}

/* The kind's status hook: the destination's deliveries in the log, by state. */
void bs__api_webhook_status(bs_app_t *app, const char *tenant, const char *name, const char *spec,
                            cJSON *status)
{
    (void)spec;
    bs_webhook_counts_t c;
    bs_err_t err;
    if (!app->webhooks || bs_webhooks_counts(app->webhooks, tenant, name, &c, &err) != 0)
        return;
    cJSON *d = cJSON_AddObjectToObject(status, "deliveries");
    cJSON_AddNumberToObject(d, "pending", (double)c.pending);
    cJSON_AddNumberToObject(d, "delivered", (double)c.delivered);
    cJSON_AddNumberToObject(d, "failed", (double)c.failed);
}

void bs__api_webhook_redact(cJSON *spec)
{
    cJSON_DeleteItemFromObjectCaseSensitive(spec, "secret");
}

static bs_webhooks_t *running(bs_req_t *req)
{
    bs_webhooks_t *w = APP(req)->webhooks;
    if (!w)
        bs_resp_errorf(req, BS_EUNAVAIL, NULL, "webhook deliveries are not running on this server");
    return w;
}

/* GET /v1/webhooks/{name}/secret */
void bs__api_webhook_secret(bs_req_t *req)
{
    bs_webhooks_t *w = running(req);
    if (!w)
        return;
    char secret[160];
    bs_err_t err;
    if (bs_webhooks_secret(w, req->who.tenant, bs_req_param(req, "name"), secret, sizeof secret,
                           &err) != 0)
        return bs_resp_error(req, &err);
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "secret");
    bs_jw_str(&b, secret);
    bs_jw_obj_end(&b);
    bs_resp_header(req, "Cache-Control", "no-store");
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
    memset(secret, 0, sizeof secret);
}

static void respond_delivery(bs_req_t *req, const char *id, const char *key2, const char *val2)
{
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "delivery_id");
    bs_jw_str(&b, id);
    bs_jw_key(&b, key2);
    bs_jw_str(&b, val2);
    bs_jw_obj_end(&b);
    bs_resp_json(req, 202, &b);
    bs_buf_free(&b);
}

/* POST /v1/webhooks/{name}/test: a CloudEvent of type basalt.webhook.test (or the body's
 * "type"), with the body's "data" or a short message, delivered as any event is. */
void bs__api_webhook_test(bs_req_t *req)
{
    bs_webhooks_t *w = running(req);
    if (!w)
        return;
    const char *name = bs_req_param(req, "name");
    bs_err_t err;
    bs_err_clear(&err);
    const cJSON *body = NULL;
    if (req->body_len) {
        body = bs_req_json(req, &err);
        if (!body)
            return bs_resp_error(req, &err);
        if (!cJSON_IsObject(body))
            return bs_resp_errorf(req, BS_EINVAL, NULL, "body must be a JSON object: {type, data}");
        static const char *const allowed[] = {"type", "data", NULL};
        if (bs_json_reject_unknown(body, allowed, &err))
            return bs_resp_error(req, &err);
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(body, "type");
    if (type && (!cJSON_IsString(type) || !*type->valuestring || strlen(type->valuestring) > 256))
        return bs_resp_errorf(req, BS_EINVAL, "type", "type must be a string of 1 to 256 bytes");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(body, "data");
    char id[37], time_s[32], source[128];
    bs_uuid7(id);
    bs_time_rfc3339(bs_time_wall_ms(), time_s, sizeof time_s);
    snprintf(source, sizeof source, "/v1/webhooks/%s", name);
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "specversion", "1.0");
    cJSON_AddStringToObject(ev, "id", id);
    cJSON_AddStringToObject(ev, "source", source);
    cJSON_AddStringToObject(ev, "type", type ? type->valuestring : "basalt.webhook.test");
    cJSON_AddStringToObject(ev, "time", time_s);
    cJSON_AddStringToObject(ev, "datacontenttype", "application/json");
    if (data) {
        cJSON_AddItemToObject(ev, "data", cJSON_Duplicate(data, 1));
    } else {
        cJSON *d = cJSON_AddObjectToObject(ev, "data");
        cJSON_AddStringToObject(d, "message", "a test event from basalt");
        cJSON_AddStringToObject(d, "webhook", name);
    }
    char *payload = cJSON_PrintUnformatted(ev);
    cJSON_Delete(ev);
    if (!payload)
        return bs_resp_errorf(req, BS_ENOMEM, NULL, "out of memory");
    char delivery[37];
    int rc =
        bs_webhooks_deliver(w, req->who.tenant, name, id, payload, req->who.key_id, delivery, &err);
    free(payload);
    if (rc)
        return bs_resp_error(req, &err);
    respond_delivery(req, delivery, "event_id", id);
}

/* GET /v1/webhooks/deliveries?destination=&limit=&cursor= */
void bs__api_webhook_deliveries_list(bs_req_t *req)
{
    bs_webhooks_t *w = running(req);
    if (!w)
        return;
    int limit;
    if (bs__api_limit(req, 100, MAX_PAGE, &limit) < 0)
        return;
    const char *dest = bs_req_query(req, "destination");
    if (dest && !bs_resources_valid_name(dest))
        return bs_resp_errorf(req, BS_EINVAL, "destination",
                              "destination must be a webhook name, got '%.64s'", dest);
    const char *cursor = bs_req_query(req, "cursor");
    if (cursor && strlen(cursor) > 64)
        return bs_resp_errorf(req, BS_EINVAL, "cursor", "cursor is not one this server made");
    bs_buf_t b;
    bs_buf_init(&b);
    bs_err_t err;
    if (bs_webhooks_list(w, req->who.tenant, dest, limit, cursor, &b, &err) != 0) {
        bs_buf_free(&b);
        return bs_resp_error(req, &err);
    }
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
}

/* GET /v1/webhooks/deliveries/{id} */
void bs__api_webhook_delivery_get(bs_req_t *req)
{
    bs_webhooks_t *w = running(req);
    if (!w)
        return;
    bs_buf_t b;
    bs_buf_init(&b);
    bs_err_t err;
    if (bs_webhooks_get(w, req->who.tenant, bs_req_param(req, "id"), &b, &err) != 0) {
        bs_buf_free(&b);
        return bs_resp_error(req, &err);
    }
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
}

/* POST /v1/webhooks/deliveries/{id}/replay */
void bs__api_webhook_delivery_replay(bs_req_t *req)
{
    bs_webhooks_t *w = running(req);
    if (!w)
        return;
    const char *id = bs_req_param(req, "id");
    char new_id[37];
    bs_err_t err;
    if (bs_webhooks_replay(w, req->who.tenant, id, req->who.key_id, new_id, &err) != 0)
        return bs_resp_error(req, &err);
    respond_delivery(req, new_id, "replay_of", id);
}

void bs__api_webhooks_metrics(bs_app_t *app, bs_buf_t *b)
{
    bs_httpc_metrics(app->http, b);
    bs_webhooks_metrics(app->webhooks, b);
}
