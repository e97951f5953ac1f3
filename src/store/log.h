/*
 * The shared durable log (DESIGN.md "The shared durable log"): topics of
 * append-only records, read by offset or by time, and consumer groups with
 * at-least-once delivery. One interface, two backends:
 *   - segments (embedded, the default): files under <dir>/<tenant>/<topic>/,
 *     records framed with length + CRC32C, an offset and a time index per
 *     segment, a torn tail truncated on open, one writer thread that
 *     group-commits (many concurrent appends share one fdatasync);
 *   - JetStream (nats_url set; log_nats.c): a stream per topic, durable pull
 *     consumers, Nats-Msg-Id dedup. Its differences are noted below, marked
 *     "JetStream:" (docs/scaleout.md, "Events on JetStream", has the mapping).
 *
 * A topic is named by (tenant, topic); both match [a-z0-9][a-z0-9_-]{0,62}.
 * Offsets start at 0 and are dense: every acknowledged append has the next
 * one. A record's time is the log's clock at append (ms since the epoch, never
 * decreasing within a topic). Record data is opaque bytes to the log; basalt's
 * callers store one JSON text per record (dead letters rely on it).
 *
 * Durability: with sync_interval_ms = 0 (the default) an append is
 * acknowledged (its callback runs) only after its records are fsynced; with
 * sync_interval_ms > 0 it is acknowledged once written and fsynced within that
 * interval (JetStream's sync_interval semantics).
 * JetStream: an append is acknowledged when the NATS server has written it,
 * and the server fsyncs on its own schedule (2.9: every 2 min, fixed; 2.10+:
 * its sync_interval setting, `always` included); sync_interval_ms is recorded,
 * not enforced. A record's time is the NATS server's clock.
 *
 * Thread safety: every function may be called from any thread. Functions that
 * may wait (on disk for the segments, on the network for JetStream) say so;
 * never call those on an I/O thread. The *_async ones return at once.
 */
#ifndef BS_STORE_LOG_H
#define BS_STORE_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"

typedef struct bs_log bs_log_t;

typedef struct {
    const char *dir;        /* segments: the root directory (created); e.g. <data>/log */
    const char *nats_url;   /* non-empty: the JetStream backend (nats://host:port) */
    const char *replica_id; /* names this process (NATS connection name); may be NULL */
} bs_log_opts_t;

/* Opens the log (recovering every topic found under dir: torn tails truncated, indexes
 * rebuilt as needed, consumer positions restored) and starts its threads. NULL with err:
 * BS_EIO (dir), BS_EUNAVAIL (NATS unreachable). */
bs_log_t *bs_log_open(const bs_log_opts_t *o, bs_err_t *err);
/* Completes or fails every pending append and fetch, stops the threads, frees l.
 * NULL is a no-op. */
void bs_log_close(bs_log_t *l);
/* "segments" or "jetstream". */
const char *bs_log_backend(const bs_log_t *l);

/* ---- topics ----------------------------------------------------------------------------- */

typedef struct {
    int64_t retention_ms;     /* drop records older than this; 0: keep forever */
    int64_t retention_bytes;  /* keep at most about this many bytes; 0: no bound */
    int64_t sync_interval_ms; /* 0: fsync before acknowledging (always); > 0: see above */
    int64_t dedup_window_ms;  /* dedup keys remembered this long; 0: no dedup */
    int64_t max_record_bytes; /* largest record data; 0: 1 MiB */
    int64_t segment_bytes;    /* segments: roll a segment past this; 0: 64 MiB */
} bs_log_topic_config_t;

/* Creates the topic, or updates the config of an existing one (idempotent). 0, BS_EINVAL
 * (bad name or config), or the backend's error. May wait. */
int bs_log_topic_ensure(bs_log_t *l, const char *tenant, const char *topic,
                        const bs_log_topic_config_t *c, bs_err_t *err);
/* Deletes the topic, its records and its consumer groups. 0 also when absent. May wait. */
int bs_log_topic_drop(bs_log_t *l, const char *tenant, const char *topic, bs_err_t *err);

typedef struct {
    int64_t first_offset;  /* first retained record (== next_offset when empty) */
    int64_t next_offset;   /* the offset the next append gets */
    int64_t first_time_ms; /* of the first retained record; 0 when empty */
    int64_t last_time_ms;  /* of the last record; 0 when empty */
    int64_t bytes;         /* stored, framing included */
    int segments;
    uint64_t appended;     /* records appended by this process since open */
    uint64_t duplicates;   /* appends answered from the dedup window */
    uint64_t syncs;        /* fsyncs (segments), each covering one or more appends */
} bs_log_topic_stats_t;

/* 0, or BS_ENOTFOUND. */
int bs_log_topic_stats(bs_log_t *l, const char *tenant, const char *topic, bs_log_topic_stats_t *out,
                       bs_err_t *err);

/* ---- appending -------------------------------------------------------------------------- */

typedef struct {
    const char *id;        /* the event's id (up to 128 bytes), copied; NULL: a UUIDv7 is made */
    const char *dedup_key; /* idempotency key (up to 256 bytes) or NULL: no dedup */
    const void *data;      /* copied */
    size_t len;
} bs_log_record_in_t;

typedef struct {
    int64_t offset;         /* of the record; for a duplicate, of the original */
    int duplicate;          /* 1: dedup_key was appended within the window; nothing new stored */
    int code;               /* 0, or this record's own error (BS_ETOOBIG: data past max_record_bytes;
                               BS_EINVAL: id or dedup_key too long): the others stand */
    char id[129];           /* the record's id (the original's for a duplicate) */
} bs_log_append_result_t;

/* Called exactly once per accepted append, on a log thread, when every record of it is
 * acknowledged (durable per the topic's sync) — code 0 and n results in input order — or
 * the append failed as a whole (code < 0, err set; results NULL): then the outcome of its
 * records is unknown. Must not block. */
typedef void (*bs_log_append_cb)(void *ud, int code, const bs_log_append_result_t *results, int n,
                                 const bs_err_t *err);

/* Queues n (1..BS_LOG_MAX_BATCH) records for topic; copies them before returning. Returns 0
 * (cb will be called), or an error with cb never called: BS_ENOTFOUND (no topic),
 * BS_EINVAL (n), BS_EOVERLOAD (the writer's queue is full: retry later). Never waits.
 * JetStream: whether the topic exists is known only to the server, so a missing topic
 * fails through cb (code BS_ENOTFOUND), never at the call. */
#define BS_LOG_MAX_BATCH 10000
int bs_log_append_async(bs_log_t *l, const char *tenant, const char *topic,
                        const bs_log_record_in_t *recs, int n, bs_log_append_cb cb, void *ud,
                        bs_err_t *err);
/* The same, waiting for the acknowledgement; results (n of them) filled. May wait. */
int bs_log_append(bs_log_t *l, const char *tenant, const char *topic, const bs_log_record_in_t *recs,
                  int n, bs_log_append_result_t *results, bs_err_t *err);

/* ---- reading ---------------------------------------------------------------------------- */

typedef struct {
    int64_t offset;
    int64_t time_ms;
    const char *id;        /* NUL-terminated */
    const char *dedup_key; /* "" when none */
    const void *data;
    size_t len;
} bs_log_record_t; /* borrowed: valid during the callback only */

/* Return nonzero to stop early. */
typedef int (*bs_log_record_cb)(const bs_log_record_t *r, void *ud);

/* Calls cb for records from from_offset on, in offset order: at most max (>= 1) records and
 * about max_bytes of data (at least one record; 0: no bound). from_offset below the first retained one
 * starts there; at or past next_offset reads nothing. *next (optional) gets the offset to
 * read from next. Returns the number of records passed to cb, or BS_ENOTFOUND / BS_EINVAL
 * (from_offset < 0) / BS_EIO. May wait (disk). */
int bs_log_read(bs_log_t *l, const char *tenant, const char *topic, int64_t from_offset, int max,
                size_t max_bytes, bs_log_record_cb cb, void *ud, int64_t *next, bs_err_t *err);
/* The offset of the first record with time_ms >= t (next_offset when none). May wait. */
int bs_log_offset_at(bs_log_t *l, const char *tenant, const char *topic, int64_t t, int64_t *offset,
                     bs_err_t *err);

/* Waiting for records (SSE tails, long-polls): calls cb(ud) once, on a log thread, as soon
 * as the topic's next_offset is greater than after, when the topic is dropped, or when the
 * log closes. Returns a watch id > 0 (cb may already have run when the condition held at
 * the call), or a negative error (BS_ENOTFOUND). cb must not block nor call back into the
 * log's watch functions. JetStream: a missing topic is not refused at the call; the watch
 * fires as for a drop once the log has looked it up. */
typedef void (*bs_log_wake_cb)(void *ud);
int64_t bs_log_watch(bs_log_t *l, const char *tenant, const char *topic, int64_t after,
                     bs_log_wake_cb cb, void *ud, bs_err_t *err);
/* Cancels a watch: once it returns, cb is not running and will not be called. Unknown or
 * fired ids are fine. */
void bs_log_unwatch(bs_log_t *l, int64_t watch_id);

/* ---- consumer groups (JetStream pull-consumer semantics) --------------------------------- */

typedef struct {
    int64_t ack_wait_ms;     /* unacked deliveries are redelivered after this; 0: 30 s */
    int max_deliver;         /* deliveries per record before it is dead-lettered; 0 or -1: no limit */
    int max_ack_pending;     /* unacked deliveries outstanding at once; 0: 1000; -1: no limit */
    const char *dead_letter; /* topic (same tenant) that receives records past max_deliver;
                                NULL/"": they are dropped (counted). A dead letter's data is
                                {"topic":…,"offset":…,"deliveries":…,"group":…,"event":<data>} */
    int deliver_new;         /* 1: a new group starts at next_offset; 0: at the first record */
} bs_log_consumer_config_t;

/* Creates the group (a durable consumer) or updates its config. 0, BS_ENOTFOUND (topic),
 * BS_EINVAL. Group names as topic names. May wait. */
int bs_log_consumer_ensure(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                           const bs_log_consumer_config_t *c, bs_err_t *err);
/* 0 also when absent. May wait. */
int bs_log_consumer_delete(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                           bs_err_t *err);

/* One delivery of a record to a group. */
typedef struct {
    bs_log_record_t rec;
    int delivery;            /* 1 on the first delivery of this record to the group */
    const char *delivery_id; /* opaque, up to BS_LOG_DELIVERY_ID_MAX bytes: what ack/nack take;
                                valid on any replica */
} bs_log_delivery_t;         /* borrowed: valid during the callback only */
#define BS_LOG_DELIVERY_ID_MAX 255

typedef int (*bs_log_delivery_cb)(const bs_log_delivery_t *d, void *ud);
/* Called exactly once per accepted async fetch, on any thread (possibly the caller's, before
 * bs_log_fetch_async returns): n deliveries (0 when the wait ran out), or code < 0. The
 * array and its records are borrowed for the call. Must not block (it may ack, nack, append
 * asynchronously; never bs_log_fetch). */
typedef void (*bs_log_fetch_cb)(void *ud, int code, const bs_log_delivery_t *d, int n,
                                const bs_err_t *err);

/* Delivers up to max (1..BS_LOG_MAX_BATCH) records to group: first those whose ack_wait or
 * nack delay ran out (redeliveries; past max_deliver they go to the dead letter topic
 * instead), then records not yet delivered, keeping at most max_ack_pending unacked.
 * Waits up to wait_ms (0: not at all) for at least one. Each delivery starts its ack_wait.
 * Returns the number delivered (cb called per delivery), or BS_ENOTFOUND (topic or group).
 * Waits: never on an I/O thread. */
int bs_log_fetch(bs_log_t *l, const char *tenant, const char *topic, const char *group, int max,
                 int wait_ms, bs_log_delivery_cb cb, void *ud, bs_err_t *err);
/* The same without blocking the caller: 0 (cb will be called once) or an error (cb never).
 * JetStream: a group this process has not seen is looked up off the caller's thread, and a
 * missing topic or group fails through cb (BS_ENOTFOUND). */
int bs_log_fetch_async(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                       int max, int wait_ms, bs_log_fetch_cb cb, void *ud, bs_err_t *err);

/* Acknowledges a delivery: the record is done for the group. 0 also when it was already
 * acked; BS_ENOTFOUND (topic, group); BS_EINVAL (not a delivery id of this group). */
int bs_log_ack(bs_log_t *l, const char *tenant, const char *topic, const char *group,
               const char *delivery_id, bs_err_t *err);
/* Negative acknowledgement: redeliver after delay_ms (0: at the next fetch). */
int bs_log_nack(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                const char *delivery_id, int64_t delay_ms, bs_err_t *err);
/* Work in progress: restarts the delivery's ack_wait. */
int bs_log_in_progress(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                       const char *delivery_id, bs_err_t *err);

typedef struct {
    int64_t ack_floor;       /* every record below is acked (or dead-lettered) */
    int64_t next_offset;     /* the next record never delivered to the group */
    int64_t pending;         /* records not delivered yet (topic next_offset - next_offset) */
    int64_t ack_pending;     /* delivered, not acked */
    int max_ack_pending;
    int stalled;             /* 1 while ack_pending >= max_ack_pending */
    uint64_t delivered;      /* deliveries since open */
    uint64_t redelivered;    /* of them, redeliveries */
    uint64_t acked;
    uint64_t dead_lettered;
} bs_log_consumer_stats_t;

int bs_log_consumer_stats(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                          bs_log_consumer_stats_t *out, bs_err_t *err);
/* Calls cb(group, ud) per group of the topic; nonzero stops. 0 or BS_ENOTFOUND. */
int bs_log_consumers(bs_log_t *l, const char *tenant, const char *topic,
                     int (*cb)(const char *group, void *ud), void *ud, bs_err_t *err);

/* Appends the log's metrics in Prometheus text format: per topic basalt_log_records,
 * basalt_log_bytes, basalt_log_appends_total, basalt_log_duplicates_total,
 * basalt_log_syncs_total; per group basalt_consumer_pending, basalt_consumer_ack_pending,
 * basalt_consumer_stalled, basalt_consumer_redelivered_total,
 * basalt_consumer_dead_lettered_total; and the writer's basalt_log_append_seconds histogram
 * (queued to acknowledged). Labels tenant, topic[, group]. */
void bs_log_metrics(bs_log_t *l, bs_buf_t *b);

#endif
