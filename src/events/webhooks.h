/*
 * Webhooks: deliveries of events to HTTP receivers, signed per Standard
 * Webhooks (webhook-id, webhook-timestamp, webhook-signature:
 * v1,<base64 HMAC-SHA256 of "id.timestamp.body"> with the destination's
 * whsec_ secret), with CloudEvents 1.0 payloads (structured mode).
 *
 * A destination is a declarative resource (kind Webhook, PUT /v1/webhooks/{name}):
 *   {"url": "https://…", "secret": "whsec_…" (made when absent), "timeout_ms": 15000,
 *    "headers": {"X-Team": "risk"}, "retry_schedule_ms": [0, 5000, 300000, …]}
 * Each delivery is a job of kind webhook.deliver (jobs.h): attempts follow Svix's
 * schedule (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h) with jitter,
 * honouring Retry-After; every attempt is recorded (webhook_attempts) and a
 * delivery can be replayed. Calls go through the outbound client (client.h):
 * an unreachable receiver holds no worker.
 *
 * Thread safety: any thread after bs_webhooks_new; functions touching the store wait.
 */
#ifndef BS_EVENTS_WEBHOOKS_H
#define BS_EVENTS_WEBHOOKS_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "events/jobs.h"
#include "http/client.h"
#include "store/meta.h"

typedef struct bs_webhooks bs_webhooks_t;

/* Registers the webhook.deliver kind on jobs (before bs_jobs_start). All borrowed. */
bs_webhooks_t *bs_webhooks_new(bs_meta_t *m, bs_jobs_t *jobs, bs_httpc_t *http, bs_err_t *err);
void bs_webhooks_free(bs_webhooks_t *w);

/* Validates a destination spec (kind Webhook) and normalises it into out (a new object the
 * caller owns): defaults filled, a secret made when absent. 0 or BS_EINVAL with err->field. */
int bs_webhooks_validate(const cJSON *spec, cJSON **out, bs_err_t *err);

/* Queues a delivery of a CloudEvent (JSON text: the payload as sent) to destination: a row
 * in webhook_deliveries and a webhook.deliver job (in one transaction). event_id is the
 * webhook-id (the same on every attempt and replay). 0 with delivery_id (the job's id), or
 * BS_ENOTFOUND (no such destination), the store's error. */
int bs_webhooks_deliver(bs_webhooks_t *w, const char *tenant, const char *destination,
                        const char *event_id, const char *payload, const char *created_by,
                        char delivery_id[37], bs_err_t *err);

/* GET /v1/webhooks/deliveries?destination=: {"items": [{id, destination, event_id, state,
 * attempts, last_status, created_at, next_attempt_at}], "next_cursor"}. */
int bs_webhooks_list(bs_webhooks_t *w, const char *tenant, const char *destination, int limit,
                     const char *cursor, bs_buf_t *out, bs_err_t *err);
/* One delivery with every attempt [{attempt, at, status, duration_ms, error, response}]. */
int bs_webhooks_get(bs_webhooks_t *w, const char *tenant, const char *id, bs_buf_t *out,
                    bs_err_t *err);
/* A new delivery of the same payload and event id (a new job); its id in new_id. */
int bs_webhooks_replay(bs_webhooks_t *w, const char *tenant, const char *id, const char *created_by,
                       char new_id[37], bs_err_t *err);

/* The Standard Webhooks signature header value "v1,<base64>" of (id, timestamp, body) under
 * secret ("whsec_<base64 key>"). 0, or BS_EINVAL (secret). */
int bs_webhooks_sign(const char *secret, const char *id, int64_t timestamp_s, const char *body,
                     size_t body_len, char *out, size_t out_len, bs_err_t *err);

#endif
