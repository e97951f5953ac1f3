/*
 * Webhooks: deliveries of events to HTTP receivers, signed per Standard
 * Webhooks (webhook-id, webhook-timestamp, webhook-signature:
 * v1,<base64 HMAC-SHA256 of "id.timestamp.body"> with the destination's
 * whsec_ secret), with CloudEvents 1.0 payloads (structured mode).
 *
 * A destination is a declarative resource (kind Webhook, PUT /v1/webhooks/{name}):
 *   {"url": "https://…", "secret": "whsec_<base64 of 24-64 bytes>" (made when absent),
 *    "timeout": "15s", "headers": {"X-Team": "risk"},
 *    "retry_schedule": ["0s", "5s", "5m", "30m", "2h", "5h", "10h", "10h"],
 *    "content_type": "application/cloudevents+json" | "application/json"}
 * Each delivery is a job of kind webhook.deliver (jobs.h): attempt i + 1 waits
 * retry_schedule[i] (Svix's schedule by default: immediately, 5 s, 5 min, 30 min, 2 h,
 * 5 h, 10 h, 10 h; so the schedule's length is the number of attempts) ± 10% jitter, or
 * what a Retry-After asks (capped at BS_WEBHOOK_MAX_RETRY_AFTER_MS). 2xx completes;
 * 410 Gone ends the delivery at once (Standard Webhooks: the receiver wants no more);
 * every other status, a timeout or a transport error is retried. Every attempt is
 * recorded (webhook_attempts) and a delivery can be replayed. Calls go through the
 * outbound client (client.h): the handler submits the POST and returns; the attempt ends
 * from the completion (recorded on the module's own two threads), so a slow or
 * unreachable receiver holds no job worker and delays no other destination.
 *
 * Shutdown order (app.c): bs_webhooks_stop, bs_httpc_free (fails what is in flight: those
 * attempts end retryable), bs_jobs_free, bs_webhooks_free.
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

#define BS_WEBHOOK_KIND "Webhook"          /* the resource kind */
#define BS_WEBHOOK_JOB "webhook.deliver"   /* the job kind */
#define BS_WEBHOOK_MAX_RETRY_AFTER_MS (3600 * 1000LL) /* a Retry-After longer waits this */

/* Registers the webhook.deliver kind on jobs (before bs_jobs_start). All borrowed; they
 * must outlive w (see the shutdown order above). */
bs_webhooks_t *bs_webhooks_new(bs_meta_t *m, bs_jobs_t *jobs, bs_httpc_t *http, bs_err_t *err);
/* Finished deliveries (delivered, failed, cancelled) last updated more than ms ago are
 * deleted with their attempts (a pass at most every 10 minutes, after an attempt; 0: kept).
 * Default 7 days; app.c passes job_retention_ms, the jobs' own. */
void bs_webhooks_set_retention(bs_webhooks_t *w, int64_t ms);
/* No more requests are submitted to the client: an attempt that starts now ends at once,
 * retryable ("not sent: shutting down"). Call before bs_httpc_free. Idempotent. */
void bs_webhooks_stop(bs_webhooks_t *w);
/* Ends what is still being recorded, frees. After bs_jobs_free. NULL is a no-op. */
void bs_webhooks_free(bs_webhooks_t *w);

/* Validates a destination spec (kind Webhook) and normalises it into out (a new object the
 * caller owns): defaults filled, a secret made when absent. 0 or BS_EINVAL with err->field. */
int bs_webhooks_validate(const cJSON *spec, cJSON **out, bs_err_t *err);

/* Queues a delivery of a CloudEvent (JSON text: the payload as sent) to destination: a row
 * in webhook_deliveries and a webhook.deliver job (in one transaction). event_id is the
 * webhook-id (the same on every attempt and replay) when it is 1-128 printable ASCII
 * characters without '.', ',' or space (Standard Webhooks: the id is signed as
 * "id.timestamp.body"); another id is sent as "msg_" + 32 hex digits of its SHA-256, the
 * same every time. While a delivery of the same (destination, event_id) is still pending,
 * it is returned instead of a new one (an event delivered twice upstream is sent once).
 * 0 with delivery_id (the job's id), or BS_ENOTFOUND (no such destination), BS_EINVAL
 * (event id, payload), the store's error. */
int bs_webhooks_deliver(bs_webhooks_t *w, const char *tenant, const char *destination,
                        const char *event_id, const char *payload, const char *created_by,
                        char delivery_id[37], bs_err_t *err);

/* GET /v1/webhooks/deliveries?destination=: {"items": [{id, destination, event_id,
 * webhook_id, state, attempts, max_attempts, last_status, last_error, created_at,
 * updated_at, next_attempt_at, replay_of}], "next_cursor"}, newest first; destination NULL:
 * every destination. state: pending, delivering, delivered, failed or cancelled. */
int bs_webhooks_list(bs_webhooks_t *w, const char *tenant, const char *destination, int limit,
                     const char *cursor, bs_buf_t *out, bs_err_t *err);
/* One delivery (the list item's fields, created_by and the payload) with every attempt in
 * "attempt_log": [{attempt, at, outcome, status, duration_ms, error, response, retry_in_ms}]
 * (outcome: delivered, failed (an HTTP status that is not 2xx), timeout or error; response:
 * the body's first 1 KiB). 0 or BS_ENOTFOUND. */
int bs_webhooks_get(bs_webhooks_t *w, const char *tenant, const char *id, bs_buf_t *out,
                    bs_err_t *err);
/* A new delivery of the same payload and webhook-id (a new job, replay_of the original,
 * on the destination's current spec); its id in new_id. 0, BS_ENOTFOUND (delivery or
 * destination). */
int bs_webhooks_replay(bs_webhooks_t *w, const char *tenant, const char *id, const char *created_by,
                       char new_id[37], bs_err_t *err);

/* The Standard Webhooks signature header value "v1,<base64>" of (id, timestamp, body) under
 * secret ("whsec_<base64 key>"). 0, or BS_EINVAL (secret). */
int bs_webhooks_sign(const char *secret, const char *id, int64_t timestamp_s, const char *body,
                     size_t body_len, char *out, size_t out_len, bs_err_t *err);

/* The destination's secret (from its stored spec) into out. 0, BS_ENOTFOUND. */
int bs_webhooks_secret(bs_webhooks_t *w, const char *tenant, const char *destination, char *out,
                       size_t out_len, bs_err_t *err);

/* Deliveries to one destination still in the log, by state (GET /v1/webhooks/{name}'s
 * status; pending includes delivering, cancelled ones are in none). 0 or the store's
 * error. */
typedef struct {
    int64_t pending, delivered, failed;
} bs_webhook_counts_t;
int bs_webhooks_counts(bs_webhooks_t *w, const char *tenant, const char *destination,
                       bs_webhook_counts_t *out, bs_err_t *err);

/* basalt_webhook_attempts_total{tenant,destination,outcome} in Prometheus text format. */
void bs_webhooks_metrics(bs_webhooks_t *w, bs_buf_t *b);

#endif
