/*
 * Private to src/store/log_nats*.c: the JetStream backend's state, shared by
 * log_nats.c (connection, topics, appends, reads, watches, the maintenance
 * thread, close, metrics) and log_nats_group.c (consumer groups: fetch,
 * ack/nack/in_progress, dead letters, stats). log_nats.c's header comment
 * has the mapping of log.h onto JetStream and the threads.
 *
 * Locking: one mutex, nlog_t.mu, guards every mutable field below (the topic
 * and group tables, the pending-reply map, the queues, counters, watches).
 * It is never held across a network call or a user callback. Topics and
 * groups, once created, live until bs_log_close (a dropped one is marked
 * absent), so a pointer to one stays valid for the log's lifetime.
 */
#ifndef BS_STORE_LOG_NATS_INT_H
#define BS_STORE_LOG_NATS_INT_H

#include <nats/nats.h>
#include <pthread.h>
#include <stdint.h>

#include "store/log_int.h"

#define NL_NAME_MAX 64          /* tenant, topic and group names: 63 bytes + NUL */
#define NL_STREAM_MAX 160       /* "basalt_<n>_<tenant>_<topic>" */
#define NL_SUBJECT_MAX 160      /* "basalt.log.<tenant>.<topic>" */
#define NL_REQ_TIMEOUT_MS 5000  /* JetStream API calls, acks, direct gets */
#define NL_PUB_TIMEOUT_MS 10000 /* an append not acknowledged by then fails (outcome unknown) */
#define NL_REFRESH_MS 2000      /* topic and group gauges (metrics) refreshed this often */

/* What an outstanding reply on the inbox belongs to. */
enum { NL_PEND_PUB = 1, NL_PEND_READ };

/* One outstanding request whose reply comes to <inbox>.<token>. Embedded in its owner
 * (an append's record, a read). Private to log_nats.c, which also owns the map. */
typedef struct nl_pend {
    uint64_t token;
    struct nl_pend *hnext;       /* hash chain */
    struct nl_pend *prev, *next; /* NL_PEND_PUB: the publish FIFO, oldest first */
    int kind;
    int index;            /* the record or read slot */
    void *obj;            /* the append, read or fetch */
    uint64_t deadline_ns; /* NL_PEND_PUB: monotonic */
} nl_pend_t;

typedef struct nl_topic nl_topic_t;

typedef struct nl_group {
    struct nl_group *next;
    char name[NL_NAME_MAX];
    int present; /* 0 after a delete (or never confirmed) */
    /* the backend-enforced part of the config, from the consumer's description */
    int max_deliver; /* 0: no limit */
    char dead_letter[NL_NAME_MAX];
    int64_t config_ms; /* wall ms when max_deliver/dead_letter were read; 0: never */
    /* counters since open */
    uint64_t delivered, redelivered, acked, dead_lettered;
    /* gauges from the last consumer info */
    int64_t ack_floor, next_offset, pending, ack_pending;
    int max_ack_pending;
} nl_group_t;

enum { NL_UNKNOWN = 0, NL_PRESENT, NL_ABSENT };

struct nl_topic {
    nl_topic_t *hnext;
    char tenant[NL_NAME_MAX], name[NL_NAME_MAX];
    char stream[NL_STREAM_MAX];
    char subject[NL_SUBJECT_MAX]; /* where records are published */
    char tail[NL_SUBJECT_MAX];    /* where JetStream republishes their headers (watches) */
    int state;                    /* NL_UNKNOWN, NL_PRESENT, NL_ABSENT */
    int64_t checked_ms;           /* wall ms of the last stream info (state, cfg, gauges) */
    bs_log_topic_config_t cfg;    /* valid when NL_PRESENT */
    int64_t next_offset;          /* highest known; -1 unknown */
    int64_t created;              /* the stream's creation time (ns): which incarnation */
    /* gauges from the last stream info */
    int64_t first_offset, first_time_ms, last_time_ms, bytes, records;
    /* counters since open */
    uint64_t appended, duplicates;
    /* watches */
    int nwatch;
    int want_poll;              /* the maintenance thread should read the stream info now */
    natsSubscription *tail_sub; /* while watched (and a while after) */
    int64_t tail_idle_ms;       /* when the last watch went away */
    nl_group_t *groups;
};

/* A unit of work for the worker threads. */
typedef struct nl_job {
    struct nl_job *next;
    void (*fn)(void *arg);
    void *arg;
} nl_job_t;

typedef struct nl_watch nl_watch_t;
typedef struct nl_append nl_append_t;
typedef struct nl_fetch nl_fetch_t;

#define NL_HBUCKETS 4096
#define NL_TBUCKETS 256
#define NL_WORKERS 2
#define NL_HIST_BUCKETS 14

typedef struct {
    bs_log_t base;
    natsConnection *nc;
    jsCtx *js;
    natsSubscription *inbox_sub;
    char inbox[64]; /* replies come to <inbox>.<token> */
    size_t inbox_len;
    char replica[128];

    pthread_mutex_t mu;
    pthread_cond_t cv;      /* the publisher: its queue, its in-flight bound */
    pthread_cond_t work_cv; /* the workers: their jobs */
    int pub_throttled;      /* the publisher waits for in-flight records to drop */
    int closing;            /* 1: close started; new calls fail */
    int stop_threads;
    uint64_t next_token;
    int64_t next_watch_id;
    nl_pend_t *pend[NL_HBUCKETS];
    nl_pend_t *pub_head, *pub_tail; /* publish FIFO */
    int64_t pub_inflight;           /* records published, not yet answered */
    nl_topic_t *topics[NL_TBUCKETS];
    int ntopics;
    /* the append queue, drained by the publisher thread */
    nl_append_t *q_head, *q_tail;
    int64_t q_records;
    /* jobs for the workers */
    nl_job_t *j_head, *j_tail;
    int jobs_running;
    /* watches: waiting, and being fired (unwatch waits for those) */
    nl_watch_t *watches, *firing;
    pthread_cond_t fired_cv;
    /* fetches waiting for JetStream (their pends are in the map too) */
    nl_fetch_t *fetches;
    int live_subs;   /* subscriptions whose completion has not run */
    int conn_closed; /* the connection's closed callback ran */
    pthread_cond_t subs_cv;
    /* the append latency histogram (queued to acknowledged) */
    uint64_t hist[NL_HIST_BUCKETS + 1];
    double hist_sum;
    uint64_t hist_count;

    pthread_t publisher, maint, workers[NL_WORKERS];
    int threads_started;
    pthread_cond_t maint_cv;
} nlog_t;

/* ---- shared by log_nats.c and log_nats_group.c --------------------------------------------- */

/* The topic's entry, created (NL_UNKNOWN) when absent. Under l->mu. */
nl_topic_t *bs__nl_topic(nlog_t *l, const char *tenant, const char *topic);
/* The group's entry in t, created when absent. Under l->mu. */
nl_group_t *bs__nl_group(nl_topic_t *t, const char *group);
/* Queues fn(arg) for a worker thread. 0, or BS_EUNAVAIL when closing. Under l->mu. */
int bs__nl_job(nlog_t *l, void (*fn)(void *), void *arg);
/* Maps a libnats status (and JetStream error code) to err; returns the BS_E* code. */
int bs__nl_err(bs_err_t *err, natsStatus s, jsErrCode jerr, const char *what);
/* Validates the three names and fills t (under l->mu) or err. */
int bs__nl_names(const char *tenant, const char *topic, const char *group, bs_err_t *err);
/* Reads the stream's info into t (state, config, gauges). 0, BS_ENOTFOUND (t marked
 * absent), or the error. Waits on the network; call without l->mu. */
int bs__nl_stream_refresh(nlog_t *l, nl_topic_t *t, bs_err_t *err);
/* Appends one record synchronously (dead letters): 0 with *seq, or the error. Waits. */
int bs__nl_publish_sync(nlog_t *l, nl_topic_t *t, const char *id, const char *dedup_key,
                        const void *data, size_t len, uint64_t *seq, bs_err_t *err);
/* A stored message's record id (header Basalt-Id, else its dedup key) and dedup key
 * (Nats-Msg-Id), decoded, into id and key ("" when absent). */
void bs__nl_msg_ids(natsMsg *m, char *id, size_t idn, char *key, size_t keyn);
/* The status of a reply without data ("404", "408"...; desc its Description or ""), or
 * NULL for a message. */
const char *bs__nl_status(natsMsg *m, const char **desc);

/* Consumer-group side (log_nats_group.c). */
/* A message nobody waits for: a late delivery of a fetch that already ended is handed
 * back at once (-NAK); anything else is dropped. Takes m. */
void bs__nl_orphan(nlog_t *l, natsMsg *m);
/* The maintenance tick for fetches: client-side deadlines, retries. */
void bs__nl_fetch_tick(nlog_t *l);
/* Close: completes every waiting fetch. */
void bs__nl_fetch_close_all(nlog_t *l);
/* The maintenance tick's gauge refresh of t's groups. Call without l->mu. */
void bs__nl_groups_refresh(nlog_t *l, nl_topic_t *t);
int bs__nl_consumer_ensure(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                           const bs_log_consumer_config_t *c, bs_err_t *err);
int bs__nl_consumer_delete(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                           bs_err_t *err);
int bs__nl_fetch_async(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                       int max, int wait_ms, bs_log_fetch_cb cb, void *ud, bs_err_t *err);
int bs__nl_ack(bs_log_t *l, const char *tenant, const char *topic, const char *group,
               const char *delivery_id, bs_err_t *err);
int bs__nl_nack(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                const char *delivery_id, int64_t delay_ms, bs_err_t *err);
int bs__nl_in_progress(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                       const char *delivery_id, bs_err_t *err);
int bs__nl_consumer_stats(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                          bs_log_consumer_stats_t *out, bs_err_t *err);
int bs__nl_consumers(bs_log_t *l, const char *tenant, const char *topic,
                     int (*cb)(const char *group, void *ud), void *ud, bs_err_t *err);

#endif
