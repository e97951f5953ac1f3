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
 * endpoint, reason="buffer_full"|"log_overload"|"no_topic"|"log_error"}: the buffer was
 * full; the log's append queue was full; the tenant has no topic `predictions`; the log
 * failed the append or refused the record); a prediction is never delayed, and a failed
 * append is never retried.
 *
 * ---- The record (the contract with src/monitor, the export and the API) ----------------
 * One JSON object per predicted row, the log record's id = prediction_id (a shadow
 * record's log id is "<prediction_id>:shadow:<variant>"):
 *   {"origin": "<run id>",                optional, and then the FIRST member: the row is
 *                                         already in this process's monitor (its local feed,
 *                                         bs_monitor_observe); the value is the producer's
 *                                         run id (bs_monitor_origin, a UUIDv7 per process).
 *                                         The monitor's tail skips records that begin with
 *                                         its own run's {"origin":"<run id>" (a memcmp)
 *                                         and ingests every other record
 *    "prediction_id": "<UUIDv7>",         the id the response returned for the row
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
 * BS_EOVERLOAD when the buffer is full (dropped and counted; the caller goes on), or
 * BS_EUNAVAIL once bs_predlog_free has begun (or p is NULL). The log record's id is read
 * from the record by the drain thread (its prediction_id, shadow and variant), so the
 * caller passes the rendered record only. Cost: one mutex and the copy.
 */
int bs_predlog_submit(bs_predlog_t *p, const char *tenant, const char *endpoint,
                      const char *json, size_t len);
/*
 * bs_predlog_submit with the lengths known and the record's prediction_id (pid_len bytes)
 * and, for a shadow record, its variant given by the caller (shadow_variant NULL: not a
 * shadow), so the drain does not scan the record for them: they must be the record's own
 * ("prediction_id", "shadow", "variant"). prediction_id NULL: read from the record, as
 * bs_predlog_submit does. Names longer than 64 bytes are cut as bs_predlog_submit cuts them.
 */
int bs_predlog_submit_ex(bs_predlog_t *p, const char *tenant, size_t tenant_len,
                         const char *endpoint, size_t endpoint_len, const char *prediction_id,
                         size_t pid_len, const char *shadow_variant, size_t sv_len,
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
 * mode: "all", "request" or "response". Everything borrowed (copied). A NULL
 * response_json (the request failed) sends no response event, as KServe's agent logs only
 * 200 responses; ce-metadata is "{}" (KServe sends its metadata headers, none here).
 * 0, BS_EOVERLOAD (queue full, or no outbound client: counted as dropped) or BS_EINVAL
 * (no url, unknown mode).
 */
int bs_predlog_payload(bs_predlog_t *p, const char *url, const char *mode, const char *tenant,
                       const char *endpoint, const char *variant, const char *request_id,
                       const char *request_json, size_t request_len, const char *response_json,
                       size_t response_len);

/*
 * Waits until every record submitted before the call is acknowledged by the log (per the
 * topic's sync: written, for sync "1s") or dropped — what a reader of the topic (the
 * monitor, before it refuses an unknown prediction id) needs to see them. Kicks the drain
 * so it takes about one append's time, not the drain period. 0, or BS_EUNAVAIL when
 * timeout_ms (0: do not wait) ran out first. p NULL: 0. Any thread but an I/O thread.
 */
int bs_predlog_flush(bs_predlog_t *p, int timeout_ms);

/*
 * The top-level members of a record that its readers filter on, found by a scan of the
 * record's top level (nested values are skipped, not parsed: about 10x cheaper than a JSON
 * parse). Strings point into json (borrowed), without their quotes and undecoded (the
 * names, ids and variants basalt writes have no escapes); absent members are NULL / 0.
 * 0, or BS_EINVAL when json is not a JSON object.
 */
typedef struct {
    const char *prediction_id, *endpoint, *variant, *model;
    size_t prediction_id_len, endpoint_len, variant_len, model_len;
    int64_t version; /* 0 when absent */
    int shadow;      /* 1: "shadow": true */
    int error;       /* 1: the record has "error" */
    int64_t time_ms; /* "time" parsed; 0 when absent or not RFC 3339 */
} bs_predlog_fields_t;
int bs_predlog_fields(const char *json, size_t len, bs_predlog_fields_t *out);

/* Prometheus text: basalt_prediction_log_records_total{tenant,endpoint},
 * basalt_prediction_log_dropped_total{tenant,endpoint,reason},
 * basalt_prediction_log_buffer_bytes, basalt_prediction_log_buffer_limit_bytes,
 * basalt_payload_logger_{sent,failed,dropped}_total{tenant,endpoint},
 * basalt_payload_logger_queued, basalt_payload_logger_in_flight. */
void bs_predlog_metrics(bs_predlog_t *p, bs_buf_t *b);

#endif
