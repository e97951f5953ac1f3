/*
 * Topics as users see them (issue 9 "Topics"): the Topic spec, the in-process
 * snapshot of every topic, and the parsing of what a publisher sends into log
 * records. No HTTP types: src/api/topics.c hands in the body, its content type
 * and the few headers that matter, and renders what comes back.
 *
 * The spec (kind Topic, PUT /v1/topics/{name}) and its normalised form:
 *   {"retention": {"max_age": "7d", "max_bytes": "10GiB"},  both optional
 *    "sync": "always" | "<duration>",                         default "always"
 *    "dedup_window": "2m",                                    default "2m"; "0": none
 *    "max_event_bytes": N,                                    default the setting
 *    "dead_letter": "orders-dlq"}                             optional: consumers' default
 * Durations as bs_time_parse_duration reads them; sizes "10GiB"-style strings or
 * integers. Normalising keeps what the user wrote and fills the defaults in, so the
 * stored spec is what `basalt apply` compares against.
 *
 * The snapshot: (tenant, name) → config, an immutable sorted array published by
 * atomic pointer swap (base/rcu.h). The I/O thread checks a publish against it and
 * never the store. bs_topics_rebuild lists every Topic resource and makes sure each
 * one exists in the log with its config (bs_log_topic_ensure, idempotent, on every
 * replica) before it publishes the new array.
 *
 * Events: a body is one JSON event, a JSON array of events, JSON lines, a
 * CloudEvent in structured mode (application/cloudevents+json), a batch of them
 * (application/cloudevents-batch+json), or one in binary mode (ce-* headers, the
 * body its data; stored in structured form). Every event is a JSON object; an
 * object with "specversion" is a CloudEvent and is validated as one (CloudEvents
 * 1.0 §3.1: specversion "1.0", id, source, type). A record's data is the event's
 * JSON text exactly as sent; its id the CloudEvents id or a UUIDv7 made by the log;
 * its dedup key the Idempotency-Key header (in a batch "<key>:<index>"), else the
 * CloudEvents id, else the Nats-Msg-Id header (in a batch "<id>:<index>").
 *
 * Thread safety: bs_topics_find on registered RCU readers (I/O threads, pool
 * workers); everything else on any thread. Rebuilds are serialised.
 */
#ifndef BS_EVENTS_TOPICS_H
#define BS_EVENTS_TOPICS_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/err.h"
#include "store/log.h"
#include "store/meta.h"

#define BS_TOPIC_KIND "Topic"
#define BS_TOPIC_DEFAULT_DEDUP_MS (2 * 60 * 1000)
/* The largest max_event_bytes a spec may ask for (the setting's own bound). */
#define BS_TOPIC_MAX_EVENT_BYTES (16 * 1024 * 1024)
/* Idempotency-Key / Nats-Msg-Id: room is left for ":<index>" within the log's 256 bytes. */
#define BS_TOPIC_MAX_KEY_BYTES 240

/* One topic as the snapshot holds it. */
typedef struct {
    char tenant[64];
    char name[64];
    bs_log_topic_config_t log; /* what bs_log_topic_ensure is given */
    int64_t max_event_bytes;   /* == log.max_record_bytes */
    char dead_letter[64];      /* the consumers' default dead letter topic, "" when none */
} bs_topic_t;

/* ---- the spec ---------------------------------------------------------------------------- */

/* Validates spec (borrowed) of topic name and returns in *out a new normalised spec (the
 * caller frees it) and, when cfg is not NULL, the topic it describes (tenant left empty).
 * default_max_event_bytes is the setting. 0, or BS_EINVAL with err->field naming the spec
 * field ("retention.max_age"). */
int bs_topic_spec_normalise(const char *name, const cJSON *spec, int64_t default_max_event_bytes,
                            cJSON **out, bs_topic_t *cfg, bs_err_t *err);
/* The topic of a stored (normalised) spec text. 0 or BS_EINVAL. */
int bs_topic_spec_parse(const char *tenant, const char *name, const char *spec,
                        int64_t default_max_event_bytes, bs_topic_t *out, bs_err_t *err);
/* A size as specs write it: a non-negative integer (bytes) or a string "512", "64KiB",
 * "10GiB", "1.5MB" (K, M, G, T: powers of 1024). 0 or BS_EINVAL. */
int bs_topic_parse_size(const cJSON *v, int64_t *out);

/* ---- the snapshot ------------------------------------------------------------------------ */

typedef struct bs_topics bs_topics_t;

/* An empty snapshot over log and m (both borrowed). NULL with err (BS_ENOMEM). */
bs_topics_t *bs_topics_new(bs_log_t *log, bs_meta_t *m, int64_t default_max_event_bytes,
                           bs_err_t *err);
/* Frees t; no reader may use it any more. NULL is a no-op. */
void bs_topics_free(bs_topics_t *t);

/* Lists every Topic resource (all tenants), ensures in the log each topic that is new or
 * changed since the last rebuild (or whose last ensure failed), and publishes the new
 * snapshot. Topics gone from the store leave the snapshot; dropping them from the log is
 * the deleting replica's job (bs_log_topic_drop where the delete is answered). A topic whose ensure fails is
 * still published (its publishes answer 503 until a later rebuild ensures it) and the
 * rebuild returns that error, so the change watcher tries again. Waits on the store and
 * the log. */
int bs_topics_rebuild(bs_topics_t *t, bs_err_t *err);
/* The topic, borrowed from the current snapshot until the calling thread's next quiescent
 * state, or NULL. Lock-free; only on RCU-registered threads (I/O threads, pool jobs). */
const bs_topic_t *bs_topics_find(bs_topics_t *t, const char *tenant, const char *name);
/* The same for any thread: copies the topic into *out. 1 if found, else 0. */
int bs_topics_get(bs_topics_t *t, const char *tenant, const char *name, bs_topic_t *out);
/* Topics in the snapshot. */
int bs_topics_count(bs_topics_t *t);

/* Counts what publishes did (for /metrics): events accepted, answered as duplicates, and
 * rejected (per event or with their whole request). Any thread. */
void bs_topics_count_publish(bs_topics_t *t, uint64_t accepted, uint64_t duplicates,
                             uint64_t rejected);
/* basalt_topics, basalt_topic_events_published_total{result=accepted|duplicate|rejected}. */
void bs_topics_metrics(bs_topics_t *t, bs_buf_t *b);

/* ---- events ------------------------------------------------------------------------------ */

/* A CloudEvents binary-mode attribute from a ce-* header: name without the prefix, lower
 * case; value as sent (percent-encoded per the HTTP binding §3.1.3.2). */
typedef struct {
    const char *name;
    const char *value;
} bs_topic_attr_t;

typedef struct {
    const char *content_type;    /* the Content-Type header, or NULL */
    const char *idempotency_key; /* the Idempotency-Key header, or NULL */
    const char *nats_msg_id;     /* the Nats-Msg-Id header, or NULL */
    const bs_topic_attr_t *ce;   /* ce-* headers (binary mode when "specversion" is one) */
    int n_ce;
    int64_t max_event_bytes; /* the topic's */
    int max_depth;           /* JSON nesting limit (the setting) */
} bs_topic_parse_opts_t;

typedef struct {
    bs_log_record_in_t rec; /* when code == 0: id, dedup_key and data in the arena */
    int code;               /* 0, or this event's own error (BS_EINVAL, BS_ETOOBIG) */
    const char *field;      /* of the error, or NULL (arena) */
    const char *message;    /* of the error (arena) */
} bs_topic_event_t;

typedef struct {
    bs_topic_event_t *events; /* n, in input order (arena) */
    int n;
    int accepted; /* events with code 0 */
    int single;   /* the body was one event (not an array or lines) */
    const char *mode; /* "json", "array", "lines", "cloudevent", "cloudevents-batch", "binary" */
} bs_topic_batch_t;

/* Parses a publish body (borrowed; len bytes) into events, allocating from a. Returns 0
 * with *out (a bad event of a batch carries its own error, the others stand), or the
 * request's error: BS_EMEDIA (a content type that is no event form), BS_EPARSE / BS_EDEPTH
 * (the body, or a single event, is not JSON), BS_EINVAL (no events; a single event that is
 * not valid, e.g. a malformed CloudEvent, with err->field), BS_ETOOBIG (a single event over
 * max_event_bytes, or more than BS_LOG_MAX_BATCH events). */
int bs_topic_events_parse(bs_arena_t *a, const char *body, size_t len,
                          const bs_topic_parse_opts_t *o, bs_topic_batch_t *out, bs_err_t *err);

/* Checks a CloudEvent in its JSON form (CloudEvents 1.0 §3.1, JSON format §3): 0 or
 * BS_EINVAL with err->field the attribute. */
int bs_topic_cloudevent_check(const cJSON *ev, bs_err_t *err);

/* The raw text of the top-level member key of the JSON object text s (valid JSON; len
 * bytes), borrowed from s: 1 with *v and *vlen, or 0 when absent. (Replay takes a dead
 * letter's "event" as it was published.) */
int bs_topic_json_member(const char *s, size_t len, const char *key, const char **v,
                         size_t *vlen);

#endif
