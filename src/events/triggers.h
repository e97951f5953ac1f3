/*
 * Triggers: "when an event arrives on a topic (or the registry changes), if it
 * matches a filter, score it with a model / call a webhook / start a job".
 *
 * A trigger is a declarative resource (kind Trigger, PUT /v1/triggers/{name}):
 *
 *   {"topic": "transactions"                  -- or "on": "registry" (registry events)
 *    "filter": "amount > 1000 && country == \"FR\"",            (optional)
 *    "action": {"predict": {"model": "fraud", "version": 3 | "alias": "champion",
 *                           "inputs": {"feature": "<expression over the event>"},  (optional)
 *                           "output_topic": "scores", "webhook": "<destination>",
 *                           "when": "score > 0.9"}}                              (optional)
 *            | {"webhook": {"destination": "name"}}
 *            | {"job": {"kind": "sleep", "args": {"seconds": "<expression>"}}},
 *    "consumer": {"ack_wait": "30s", "max_deliver": 5, "dead_letter": "topic",
 *                 "max_ack_pending": 1000},                                   (optional)
 *    "start": "new" | "earliest", "paused": false, "description": "…"}
 *
 * docs/triggers.md is the user's reference. Expressions are base/expr.h's, compiled
 * once when the spec is validated and again when the runtime is rebuilt from the
 * stored specs.
 *
 * Runtime (triggers.c): each trigger consumes its topic through its own consumer
 * group "trigger-<name>" (store/log.h), so it has its own position, redeliveries and
 * dead letters: a trigger whose model or webhook fails is retried and dead-lettered
 * on its own while the others keep flowing. A small pool of trigger workers (never
 * the I/O threads) runs the triggers: a trigger waits for records with an async fetch
 * (woken at once by an append), a worker then filters, acts and acks its batch, and
 * issues the next fetch. Delivery is at-least-once: a failed record is nacked with a
 * backoff; an output record carries its source {topic, offset} and is appended with
 * the dedup key "<trigger>:<offset>", so a redelivery within the output topic's dedup
 * window does not duplicate it. On JetStream several replicas consume one group: each
 * event is processed by one replica at a time.
 *
 * Thread safety: every function may be called from any thread; functions that touch
 * the store or the log wait on them (never on an I/O thread) unless they say otherwise.
 */
#ifndef BS_EVENTS_TRIGGERS_H
#define BS_EVENTS_TRIGGERS_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "store/meta.h"

struct bs_log;
struct bs_serving;
struct bs_registry;
struct bs_jobs;
struct bs_webhooks;
struct bs_topics;

typedef struct bs_triggers bs_triggers_t;

/* The per-tenant topic registry events go to (created when a registry trigger is). */
#define BS_TRIGGERS_REGISTRY_TOPIC "registry-events"
/* Trigger names are resource names, shorter by the group prefix "trigger-". */
#define BS_TRIGGERS_MAX_NAME 55

typedef struct {
    bs_meta_t *meta;              /* specs (store/resources.h), webhook destinations */
    struct bs_log *log;           /* required */
    struct bs_serving *serving;   /* predict actions (NULL: they fail) */
    struct bs_registry *registry; /* validation of model references (NULL: not checked) */
    struct bs_jobs *jobs;         /* job actions (NULL: they fail) */
    struct bs_webhooks *webhooks; /* webhook deliveries (NULL: they fail) */
    struct bs_topics *topics;     /* topics' default dead letter topics (NULL: none) */
    int workers;                  /* trigger worker threads; 0: 2 */
    int max_json_depth;           /* of events; 0: 64 */
} bs_triggers_opts_t;

/* Starts the workers; runs no trigger until bs_triggers_rebuild. All of o's pointers are
 * borrowed and must outlive the runtime (stop it first). NULL with err. */
bs_triggers_t *bs_triggers_new(const bs_triggers_opts_t *o, bs_err_t *err);
/* Stops every trigger (batches in hand are finished or nacked; waits for outstanding
 * fetches, at most their wait of 500 ms) and joins the workers: after it nothing calls the
 * log, serving, jobs or webhooks any more, and later rebuilds do nothing (status, metrics
 * and free stay valid). Waits for a rebuild in progress. Idempotent; NULL is a no-op. */
void bs_triggers_stop(bs_triggers_t *t);
/* Stops (as bs_triggers_stop) and frees t. NULL is a no-op. */
void bs_triggers_free(bs_triggers_t *t);

/* Validates spec (borrowed) of trigger name for tenant and returns in *out a new
 * normalised spec the caller frees: expressions compiled (a bad one is BS_EINVAL with
 * err->field "filter", "action.predict.when", "action.predict.inputs.<feature>" or
 * "action.job.args.<param>" and the message "… at LINE:COL: …"), defaults filled, and
 * references checked: the topic, output topic and dead letter topic exist (a registry
 * trigger's topic is not checked: it is made when the trigger starts, or by the caller),
 * the model (and version, alias) exist, the webhook destination exists, the job kind is
 * registered with api_enqueue. 0 or BS_EINVAL naming the field. Writes nothing. t NULL:
 * the spec alone, no reference checks. */
int bs_triggers_validate(bs_triggers_t *t, const char *tenant, const char *name, const cJSON *spec,
                         cJSON **out, bs_err_t *err);

/* Makes the running set match the stored Trigger specs of every tenant: starts new ones
 * (their consumer group ensured before this returns, so an event published after a PUT's
 * answer reaches its trigger), swaps the spec of changed ones (a changed topic or consumer
 * config restarts it), stops removed ones. A stored spec that no longer compiles is kept
 * as a trigger in state "error". 0 or the store's error. */
int bs_triggers_rebuild(bs_triggers_t *t, bs_err_t *err);
/* The trigger was deleted: stops it here and deletes its consumer group. 0 or the log's
 * error. */
int bs_triggers_remove(bs_triggers_t *t, const char *tenant, const char *name, bs_err_t *err);

/* Adds the live state of the trigger to status (GET /v1/triggers/{name}): state
 * ("running", "paused", "starting", "error"), group, topic, processed, matched, outputs,
 * errors, last_error, last_error_at, lag (records not yet done: pending + ack_pending),
 * pending, ack_pending, redelivered, dead_lettered, throughput_per_s (processed events/s
 * over the last minute). Reads the consumer's stats (may wait). */
void bs_triggers_status(bs_triggers_t *t, const char *tenant, const char *name, cJSON *status);

/* A registry event (type "version.created", "version.approved", "version.rejected",
 * "version.archived", "alias.moved", "alias.deleted"): appended as a CloudEvent (data =
 * the object the registry answered with; subject = the resource path) to the tenant's
 * BS_TRIGGERS_REGISTRY_TOPIC when that topic exists (a registry trigger made it); else
 * dropped. Never waits (the append is async). Borrowed arguments. */
void bs_triggers_registry_event(bs_triggers_t *t, const char *tenant, const char *type,
                                const char *subject, const char *data_json);

/* Prometheus text: basalt_trigger_processed_total, _matched_total, _outputs_total,
 * _errors_total, _lag, _throughput (events/s over the last minute),
 * _last_error_timestamp_seconds, and the histogram basalt_trigger_latency_seconds (source
 * record appended → action done), labels tenant, trigger. Never waits (lag is the value
 * the workers last read). */
void bs_triggers_metrics(bs_triggers_t *t, bs_buf_t *b);

#endif
