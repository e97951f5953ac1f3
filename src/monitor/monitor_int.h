/*
 * Internals of the monitor (monitor.h), shared by its files:
 *   monitor.c          the object, tenants, the tables (rings, interning, the id index,
 *                      eviction) and the metrics;
 *   monitor_tail.c     the tail thread per tenant: predictions and feedback records into
 *                      the tables;
 *   monitor_feed.c     the local feed: this process's rows straight into the tables;
 *   monitor_feedback.c POST /v1/feedback's validation and durable append;
 *   monitor_reports.c  summaries, PSI and the performance, experiment and shadow reports.
 *
 * Data model. A tenant (tenant_t) owns one table per endpoint (table_t) and one hash index
 * over the prediction ids of its routed entries. A table is a ring of compact entries in
 * the order the tail read them (≈ prediction time), addressed by a sequence number that
 * grows by one per entry: the ring's head has head_seq. Shadow entries carry the id of
 * the routed row they shadowed and are not in the index; reports find their primary by
 * looking the id up. Strings that repeat (variant names, class label lists, feedback
 * labels) are interned per table into arrays of pointers to immutable objects that live
 * until the monitor is freed, so a report may copy the pointers under the lock and read
 * the objects after it.
 *
 * Locking: one mutex (m->mu) guards every tenant's tables, index, counters and tail
 * positions; m->progress (with m->mu) is broadcast whenever a tail advances. A tail
 * thread reads the log without the mutex and takes it per batch. Nothing calls into the
 * log while holding m->mu. The watch callbacks take only the tenant's wake mutex.
 */
#ifndef BS_MONITOR_MONITOR_INT_H
#define BS_MONITOR_MONITOR_INT_H

#include <pthread.h>
#include <stdint.h>

#include "monitor/monitor.h"

/* entry_t.flags */
#define E_SHADOW 0x01   /* a shadow run of the row with the same id */
#define E_ERROR 0x02    /* the row failed: no output */
#define E_CLASS 0x04    /* classification output: cset, pred (and probabilities) */
#define E_PROBS 0x08    /* the probabilities are known */
#define E_LABELLED 0x10 /* feedback joined: label_sid / label_num */
#define E_VALUE 0x20    /* a regression output in out */
#define E_LOCAL 0x40    /* from this process's local feed (its record may not be written yet) */

#define MAX_CLASSES 1024     /* a class list longer than this is not kept */
#define MAX_CSETS 1024       /* distinct class lists per endpoint */
#define MAX_VARIANTS 65535   /* distinct variant names per endpoint */
#define MAX_LABELS 100000    /* distinct string labels per endpoint */
#define MAX_PENDING 10000    /* feedback waiting for its prediction, per tenant */
#define PENDING_TTL_MS 10000 /* how long it waits */

typedef struct {
    uint8_t uid[16]; /* the UUID's bytes when sid is NULL */
    char *sid;       /* an id that is no canonical UUID (malloc) */
    int64_t time_ms;
    double out;        /* E_VALUE: the regression output */
    double label_num;  /* joined label as a number (NaN: not numeric) */
    double latency_ms; /* NaN when not logged */
    double p2[2];      /* the probabilities when k <= 2 */
    double *pk;        /* k > 2 (malloc) */
    int32_t version;
    int32_t label_sid; /* joined label as an interned string (-1: none, numeric) */
    uint16_t variant;
    uint16_t cset;
    int16_t pred; /* predicted class, an index into the class list */
    uint8_t flags;
} entry_t;

/* An interned class list (the keys of "probabilities" in model order). Immutable. */
typedef struct {
    int k;
    char **labels;
} cset_t;

/* An interned feedback label that is no number: a string, or a boolean. Immutable. */
typedef struct {
    int is_bool;
    int bool_value;
    char *str; /* the string (is_bool: "true" / "false") */
} label_t;

typedef struct table {
    char endpoint[64];
    int ix; /* within the tenant */
    /* The ring, in chunks of RING_CHUNK entries that never move (growth allocates one chunk,
     * or reuses the spare one the head last emptied; no copy): chunks is itself a ring of
     * cap_chunks (a power of two, or 0) pointers, n_chunks of them in use from chunk0; the
     * head entry is at head_off in chunks[chunk0]. bs__monitor_at addresses entry i. */
    entry_t **chunks;
    size_t cap_chunks, chunk0, n_chunks, head_off, count;
    entry_t *spare;
    int64_t head_seq;
    char (*variants)[64];
    int n_variants, cap_variants;
    cset_t **csets;
    int n_csets, cap_csets;
    label_t **labels;
    int n_labels, cap_labels;
    uint64_t feedback_received; /* accepted through this replica */
} table_t;

#define RING_CHUNK 4096

typedef struct {
    uint32_t h;
    uint32_t table;
    int64_t seq; /* -1: empty */
} slot_t;

/* Feedback read before its prediction (another stream's order): retried after each
 * batch of predictions, dropped after PENDING_TTL_MS. */
typedef struct {
    char *id;
    char *label_json; /* the "label" or "value" member's JSON text */
    int is_value;
    int64_t seen_ms;
} pending_t;

typedef struct tenant {
    char name[64];
    struct bs_monitor *m;
    table_t **tables;
    int n_tables, cap_tables;
    slot_t *slots;
    size_t n_slots, used;
    pending_t *pending;
    int n_pending;
    /* the tail (positions under m->mu) */
    int64_t pred_next, fb_next;
    int started; /* the start positions were taken */
    pthread_t thread;
    int thread_started;
    pthread_mutex_t wmu;
    pthread_cond_t wcv;
    int woken;
    uint64_t rejected_unknown, rejected_invalid;
    uint64_t bad_records;
    struct tenant *next;
} tenant_t;

/* The local feed's queue (monitor_feed.c): serialised rows. */
typedef struct {
    char *data;
    size_t len, cap;
} feed_buf_t;

struct bs_monitor {
    struct bs_log *log;
    struct bs_predlog *predlog;
    int64_t window_ms, max_predictions;
    int jetstream;
    pthread_mutex_t mu;
    pthread_cond_t progress;
    tenant_t *tenants;
    int stopping;
    int64_t entries;
    uint64_t evicted;
    uint64_t feedback_joined;
    /* the local feed (monitor_feed.c; the queue under feed_mu, never with mu held) */
    char run_id[40];
    char origin_prefix[64]; /* {"origin":"<run_id>" : how this run's records begin */
    size_t origin_len;
    pthread_mutex_t feed_mu, feed_drain_mu;
    feed_buf_t feed_q, feed_spare;
    int feed_stopping, feed_started;
    pthread_t feed_thread;
    uint64_t feed_observed, feed_dropped;
};

/* The i-th entry from the ring's head (i < count). */
static inline entry_t *bs__monitor_at(const table_t *tb, size_t i)
{
    size_t x = tb->head_off + i;
    return &tb->chunks[(tb->chunk0 + x / RING_CHUNK) & (tb->cap_chunks - 1)][x % RING_CHUNK];
}

/* ---- monitor.c (callers hold m->mu unless said) ---- */
tenant_t *bs__monitor_tenant(bs_monitor_t *m, const char *tenant); /* NULL when unknown */
/* The tenant, created when missing (NULL: out of memory). */
tenant_t *bs__monitor_tenant_add(bs_monitor_t *m, const char *tenant);
table_t *bs__monitor_table(tenant_t *t, const char *endpoint, int create);
entry_t *bs__monitor_entry(table_t *tb, int64_t seq);
/* Parses id into e (uid, or sid malloc'd). 0 or -1 (out of memory). */
int bs__monitor_id_set(entry_t *e, const char *id);
/* The routed entry of id in the tenant's index, or NULL; *tb its table. */
entry_t *bs__monitor_lookup(tenant_t *t, const char *id, table_t **tb);
/* The same for an entry's own id (a shadow looking up its primary). */
entry_t *bs__monitor_lookup_entry(tenant_t *t, const entry_t *e, table_t **tb);
/* Appends e (its id and pointers now owned by the table) and indexes it unless shadow.
 * 0 or -1 (out of memory: e freed). */
int bs__monitor_insert(bs_monitor_t *m, tenant_t *t, table_t *tb, entry_t *e);
/* Evicts entries older than the window and over max_predictions. */
void bs__monitor_evict(bs_monitor_t *m, int64_t now_ms);
int bs__monitor_variant(table_t *tb, const char *name);  /* index, or -1 */
int bs__monitor_cset(table_t *tb, char **labels, int k); /* index, or -1; copies */
int bs__monitor_label(table_t *tb, const char *s, int is_bool, int bool_value); /* or -1 */
void bs__monitor_entry_free(entry_t *e);

/* ---- monitor_feed.c ---- */
int bs__monitor_feed_start(bs_monitor_t *m); /* the run id and the feed thread; 0 or -1 */
void bs__monitor_feed_stop(bs_monitor_t *m);  /* the last drain, the thread joined */
void bs__monitor_feed_free(bs_monitor_t *m);
/* Applies every row observed so far to the tables (not under mu): the rows applied. */
int bs__monitor_feed_drain(bs_monitor_t *m);

/* ---- monitor_tail.c ---- */
int bs__monitor_tail_start(bs_monitor_t *m, tenant_t *t, bs_err_t *err); /* under mu */
void bs__monitor_tail_stop(bs_monitor_t *m, tenant_t *t);                /* not under mu */
/* Joins one feedback item (label: the member's cJSON) to its entry. 1 joined, 0 unknown. */
int bs__monitor_join(bs_monitor_t *m, tenant_t *t, const char *id, const cJSON *label,
                     int is_value);

/* A JSON scalar for the label comparisons: number, string or boolean. */
typedef struct {
    int type; /* 0 none, 1 number, 2 string, 3 boolean */
    double num;
    const char *str;
    int b;
} bs__scalar_t;
/* The comparison rule of docs/endpoints-monitoring.md: numbers by value, strings by text, a
 * number and a string when the string's text is that number, booleans with booleans and
 * with the strings "true" / "false" (any case). */
int bs__monitor_scalar_match(const bs__scalar_t *a, const bs__scalar_t *b);
/* Parses JSON text (a scalar) into s; str points into *hold (caller frees). 0 or -1. */
int bs__monitor_scalar_parse(const char *json, bs__scalar_t *s, cJSON **hold);

#endif
