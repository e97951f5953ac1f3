/*
 * The prediction log (issue 10 "Prediction log and feedback"): every prediction an
 * endpoint serves (sampled per endpoint; default all), shadow runs included, as one
 * JSON record per row in the tenant's topic `predictions` of the shared durable log
 * (store/log.h; created with sync "1s" and retention 7d when the first endpoint of a
 * tenant is stored), and optionally posted to a KServe-compatible payload logger.
 *
 * The hot path never waits: bs_predlog_submit copies the rendered record into a
 * bounded in-memory buffer (setting prediction_log_buffer_bytes) and returns; one
 * drain thread appends what it holds in batches (bs_log_append_async, up to
 * BS_LOG_MAX_BATCH records per append), so a record is on disk within the drain
 * period (20 ms) plus the topic's sync interval (1 s) — the documented bound. When
 * the buffer is full (the log or the disk is slower than the predict rate) the
 * record is dropped and counted (basalt_prediction_log_dropped_total{tenant,
 * endpoint, reason="buffer_full"|"log_error"}); a prediction is never delayed.
 *
 * ---- The record (the contract with src/monitor, the export and the API) ----------------
 * One JSON object per predicted row, the log record's id = prediction_id (a shadow
 * record's log id is "<prediction_id>:shadow:<variant>"):
 *   {"prediction_id": "<UUIDv7>",        the id the response returned for the row
 *    "request_id": "…",                   X-Request-Id of the request
 *    "time": "<RFC 3339 ms>",             when the prediction was made
 *    "endpoint": "fraud", "model": "fraud", "version": 3,
 *    "variant": "v3",                     the route's name (see serving/endpoints.h)
 *    "shadow": false,                     true: a shadow run of prediction_id's row
 *    "sticky_key": "u17",                 present when the endpoint is sticky
 *    "latency_ms": 0.041,                 this row's request's model time (shadow: its own)
 *    "inputs": {"amount": 12.5, …},       the row as the model used it (after encoding:
 *                                         numbers; categories as their string)
 *    "output": <as in "predictions"[i]>,  a number, an array, or {"label","probabilities"}
 *    "error": {"code": "…", "message": "…"}  instead of output when the row failed}
 * A request that fails before any row is predicted (bad input) is one record with
 * "error", no "inputs"/"output", and a prediction_id of its own.
 *
 * Thread safety: every function may be called from any thread; submit never blocks.
 */
#ifndef BS_SERVING_PREDLOG_H
#define BS_SERVING_PREDLOG_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"

struct bs_log;
struct bs_httpc;

typedef struct bs_predlog bs_predlog_t;

#define BS_PREDLOG_TOPIC "predictions"

typedef struct {
    struct bs_log *log;     /* borrowed; must outlive the predlog */
    struct bs_httpc *http;  /* borrowed; the payload logger's client (NULL: none) */
    size_t buffer_bytes;    /* records held before drops; 0: 64 MiB */
    const char *source;     /* the payload logger's CloudEvents source (replica id); copied */
} bs_predlog_opts_t;

bs_predlog_t *bs_predlog_new(const bs_predlog_opts_t *o, bs_err_t *err);
/* Drains what it holds (bounded: at most 2 s), stops the thread, frees. NULL is a no-op. */
void bs_predlog_free(bs_predlog_t *p);

/*
 * Queues one record (json: the object above, len bytes; copied) for tenant's topic
 * `predictions`; endpoint names it for the drop counters. Never blocks: 0, or
 * BS_EOVERLOAD when the buffer is full (dropped and counted; the caller goes on).
 */
int bs_predlog_submit(bs_predlog_t *p, const char *tenant, const char *endpoint,
                      const char *json, size_t len);

/*
 * The KServe payload logger of an endpoint (spec "logger": {"url", "mode"}): CloudEvents
 * 1.0 in binary mode, as KServe's agent sends them — POST url, body the request (mode
 * all|request) or the response (all|response) JSON, headers ce-specversion: 1.0, ce-id
 * (the request id), ce-type org.kubeflow.serving.inference.request | .response, ce-source,
 * ce-time, ce-inferenceservicename (the endpoint), ce-endpoint (the variant),
 * ce-namespace (the tenant), ce-component "predictor", content-type application/json.
 * Posted through the outbound client off the request path, with bounded retries
 * (3 attempts, 1 s apart) and a bounded queue (drops counted:
 * basalt_payload_logger_dropped_total); never slows a prediction.
 * mode: "all", "request" or "response". Everything borrowed (copied). 0 or BS_EOVERLOAD.
 */
int bs_predlog_payload(bs_predlog_t *p, const char *url, const char *mode, const char *tenant,
                       const char *endpoint, const char *variant, const char *request_id,
                       const char *request_json, size_t request_len, const char *response_json,
                       size_t response_len);

/* Prometheus text: basalt_prediction_log_records_total{tenant,endpoint},
 * basalt_prediction_log_dropped_total{tenant,endpoint,reason},
 * basalt_prediction_log_buffer_bytes, basalt_payload_logger_{sent,failed,dropped}_total. */
void bs_predlog_metrics(bs_predlog_t *p, bs_buf_t *b);

#endif
