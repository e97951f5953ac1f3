/*
 * Private to the segments backend of the log (log_segments.c: open, topics,
 * watches, metrics, the background thread; log_segment.c: the on-disk format,
 * CRC32C, recovery, indexes and reads; log_writer.c: the append queue, the
 * group-committing writer thread, the dedup window and retention;
 * log_consumer.c: consumer groups, their journals and the fetch thread).
 * docs/log.md describes the format and the guarantees.
 *
 * Threads and locks (a lock is only ever taken after those to its left):
 *   ddl_mu (topic create/drop) > map_lock (the topic map) > gmu (a topic's
 *   groups) > group mu > topic mu > wmu (watches) > cmu (fetch queue) > qmu
 *   (append queue).
 * The writer thread owns every topic's `w` state and is the only one that
 * writes segment files; it publishes what it wrote (next_offset, segment
 * ends, index entries) under the topic's mu once the records are durable
 * (or written, with sync_interval_ms > 0), so readers never see a record that
 * an acknowledgement has not covered. Readers pread the segment files with no
 * lock held, pinning the segment with a reference.
 */
#ifndef BS_STORE_LOG_SEG_INT_H
#define BS_STORE_LOG_SEG_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/uio.h>

#include "store/log_int.h"

/* ---- on-disk format (docs/log.md) ------------------------------------------------------- */

/* A segment file <first offset, 20 digits>.seg: a 16-byte header (magic, u64 first offset),
 * then records. A record: u32 body length, u32 CRC32C of the body, and the body: u64 offset,
 * i64 time_ms, u8 id length, u8 flags (0), u16 dedup key length, the id, the key, the data.
 * Integers are little-endian. */
#define BS__SEG_MAGIC "bslseg1\n"
#define BS__SEG_HDR 16
#define BS__REC_HDR 8
#define BS__REC_FIXED 20
#define BS__REC_OVERHEAD (BS__REC_HDR + BS__REC_FIXED)
#define BS__ID_MAX 128
#define BS__KEY_MAX 256
#define BS__RECORD_MAX (64 << 20) /* the largest max_record_bytes a topic may set */
#define BS__BODY_MAX ((uint32_t)BS__REC_FIXED + 255 + 65535 + BS__RECORD_MAX)
/* One sparse index entry per this many bytes of a segment (and one at its first record). */
#define BS__IDX_EVERY (32 << 10)
#define BS__IDX_MAGIC "bslidx1\n"
#define BS__GRP_MAGIC "bslgrp1\n"

/* CRC32C (Castagnoli, the iSCSI polynomial; RFC 3720 §12.1): SSE4.2 when the CPU has it,
 * else slicing-by-8 tables. crc is 0 for a fresh checksum, or a previous result to extend. */
uint32_t bs__crc32c(uint32_t crc, const void *p, size_t n);

/* A parsed record, pointing into the bytes it was parsed from. */
typedef struct {
    int64_t offset;
    int64_t time_ms;
    const uint8_t *id, *key, *data;
    size_t id_len, key_len, len;
    size_t frame_len; /* header + body */
} bs__rec_view_t;

/* Bytes a record takes on disk. */
static inline size_t bs__rec_frame_len(size_t id_len, size_t key_len, size_t len)
{
    return BS__REC_OVERHEAD + id_len + key_len + len;
}
/* Writes a record's frame into f (bs__rec_frame_len bytes) with offset, time and CRC left
 * for bs__rec_seal. */
void bs__rec_encode(uint8_t *f, const char *id, size_t id_len, const char *key, size_t key_len,
                    const void *data, size_t len);
/* Sets offset and time of an encoded frame and computes its CRC. */
void bs__rec_seal(uint8_t *f, int64_t offset, int64_t time_ms);
/* Parses the frame at p (n bytes available): 1 with v filled, 0 when n is too short for the
 * whole frame (*need = its length when the header was readable, else BS__REC_HDR), -1 when
 * the bytes are not a valid record (length out of bounds, bad CRC, bad flags). */
int bs__rec_parse(const uint8_t *p, size_t n, bs__rec_view_t *v, size_t *need);

/* Scans a segment image (p, n): the header (its first offset must be base, or any when
 * base < 0), then records numbered from there on. Stops at the first short or invalid
 * record or one out of sequence; cb (may be NULL) sees each valid one with its position,
 * nonzero stops. Returns the length of the valid prefix (>= BS__SEG_HDR), or -1 when the
 * header is missing or wrong. *count (optional) gets the number of valid records. */
typedef int (*bs__rec_visit_cb)(const bs__rec_view_t *v, uint64_t pos, void *ud);
int64_t bs__seg_scan(const uint8_t *p, size_t n, int64_t base, bs__rec_visit_cb cb, void *ud,
                     int64_t *count);

/* ---- segments and indexes --------------------------------------------------------------- */

typedef struct {
    int64_t offset;
    int64_t time_ms;
    uint64_t pos;
} bs__idx_t;

typedef struct bs__seg {
    int64_t base;    /* first offset, the file's name */
    int fd;          /* -1 until a read needs it (sealed ones open lazily); set under t->mu */
    atomic_int refs; /* the topic's list holds one; readers pin one */
    int sealed;      /* a later segment exists; never written again */
    /* Published state, under the topic's mu: */
    int64_t end;   /* offset after the last record */
    uint64_t size; /* header + records */
    int64_t first_time, last_time;
    bs__idx_t *idx;
    int nidx, cidx;
    char path[]; /* <dir>/<base>.seg */
} bs__seg_t;

/* Parses an index file image of a segment of seg_size bytes: 0 with the entries (malloc'd,
 * *n of them) and the segment's end and times, or -1 when it is not a consistent index of
 * such a segment. */
int bs__idx_parse(const uint8_t *p, size_t n, int64_t base, uint64_t seg_size, bs__idx_t **idx,
                  int *nidx, int64_t *end, int64_t *first_time, int64_t *last_time);

/* ---- the dedup window ------------------------------------------------------------------- */

typedef struct bs__dd_entry bs__dd_entry_t;
typedef struct bs__dd_chunk bs__dd_chunk_t;

/* Keys in append order (so in time order) in chunks, and an open-addressing table over them
 * whose slots carry the hash (a miss reads one run of slots, no entry). Entries leave from
 * the oldest end as the window passes; the newest ones can be taken back (a write that
 * failed). The table grows by migrating a few slots of the old one per insert, so no append
 * waits for a whole rehash. At most BS__DEDUP_MAX_KEYS keys are kept per topic: past it the
 * oldest are forgotten early (counted). Owned by the writer thread (by the opening thread
 * before it runs). */
#define BS__DEDUP_MAX_KEYS ((size_t)4 << 20)

typedef struct {
    uint64_t hash;
    bs__dd_entry_t *e; /* NULL: empty; BS__DD_TOMB: removed (the old table only) */
} bs__dd_slot_t;

typedef struct {
    bs__dd_slot_t *s;
    size_t cap, live;
} bs__dd_table_t;

typedef struct {
    bs__dd_table_t cur, old; /* old.s: being migrated into cur, or NULL */
    size_t mig;              /* next slot of old to migrate */
    size_t count;
    bs__dd_chunk_t *head, *tail, *spare;
    int nspare;
    size_t head_pos;
    uint64_t evicted;
} bs__dedup_t;

typedef struct {
    bs__dd_chunk_t *chunk;
    size_t used, count;
} bs__dd_mark_t;

void bs__dedup_init(bs__dedup_t *d);
void bs__dedup_free(bs__dedup_t *d);
/* The entry of key, or NULL. *hash gets the key's hash (for insert). */
const bs__dd_entry_t *bs__dedup_find(const bs__dedup_t *d, const uint8_t *key, size_t key_len,
                                     uint64_t *hash);
/* The same with the hash computed already (bs__dedup_hash), and a prefetch of its slots
 * (a batch prefetches every key's slot before the first lookup). */
uint64_t bs__dedup_hash(const uint8_t *key, size_t key_len);
const bs__dd_entry_t *bs__dedup_find_hashed(const bs__dedup_t *d, uint64_t hash, const uint8_t *key,
                                            size_t key_len);
void bs__dedup_prefetch(const bs__dedup_t *d, uint64_t hash);
int bs__dedup_insert(bs__dedup_t *d, uint64_t hash, const uint8_t *key, size_t key_len,
                     const uint8_t *id, size_t id_len, int64_t offset, int64_t time_ms);
/* Forgets every key of a record older than cutoff_ms. */
void bs__dedup_expire(bs__dedup_t *d, int64_t cutoff_ms);
bs__dd_mark_t bs__dedup_mark(const bs__dedup_t *d);
void bs__dedup_rollback(bs__dedup_t *d, bs__dd_mark_t m);
int64_t bs__dedup_offset(const bs__dd_entry_t *e);
/* Copies the entry's id, NUL-terminated, into out[BS__ID_MAX + 1]. */
void bs__dedup_id(const bs__dd_entry_t *e, char *out);

/* ---- topics ----------------------------------------------------------------------------- */

struct bs__req;
struct bs__group;
struct bs__watch;
struct bs__seglog;

/* What only the writer thread touches (and the opening thread, before the writer starts). */
typedef struct {
    int64_t next;     /* the offset the next record gets */
    int64_t time;     /* of the last record */
    uint64_t pos;     /* bytes of the active segment written */
    uint64_t idx_pos; /* position of the active segment's last index entry */
    bs__seg_t *active;
    bs__dedup_t dedup;
    struct iovec *iov;
    int niov, ciov;
    uint64_t *hashes; /* scratch: the dedup hashes of one append's keys */
    int chash;
    bs__idx_t *pidx; /* index entries of written, not yet published records */
    int npidx, cpidx;
    struct bs__req *head, *tail; /* this round's appends */
    struct bs__topic *round_next;
    int in_round;
    int dirty; /* written, not fsynced (sync_interval_ms > 0) */
    uint64_t sync_due_ns;
    struct bs__topic *dirty_next;
    int failed; /* a failed write could not be undone: appends fail until reopen */
} bs__wstate_t;

typedef struct bs__topic {
    struct bs__seglog *log;
    char tenant[64], name[64];
    char *dir;       /* <root>/<tenant>/<topic> */
    atomic_int refs; /* the map holds one; appends, reads, groups pin one */
    atomic_int dropped;
    struct bs__topic *hnext; /* the map's chain, under map_lock */

    pthread_mutex_t mu; /* everything below up to the atomics */
    bs_log_topic_config_t cfg;
    bs__seg_t **segs; /* by base; the last one is active */
    int nsegs, csegs;
    int64_t next_offset; /* published: every record below is readable */
    int64_t last_time;
    int64_t bytes;
    struct bs__watch *watches; /* under wmu */

    atomic_int_fast64_t max_record; /* cfg.max_record_bytes, read by appenders without mu */
    atomic_uint_fast64_t appended, duplicates, syncs;
    atomic_int nwatch;              /* watches waiting on the topic */
    atomic_int nwait;               /* fetches parked on one of its groups */
    atomic_int roll_asked;          /* retention asked the writer to seal the active segment */
    atomic_uint_fast64_t published; /* times the writer published records (parked fetches) */

    pthread_mutex_t gmu; /* the list of groups */
    struct bs__group *groups;

    bs__wstate_t w;
} bs__topic_t;

/* ---- the log ---------------------------------------------------------------------------- */

#define BS__LOG_BUCKETS 256
#define BS__LOG_HIST_N 14
extern const double bs__log_hist_bounds[BS__LOG_HIST_N];

/* The append queue's bounds: past them bs_log_append_async answers BS_EOVERLOAD. */
#define BS__LOG_QUEUE_MAX 65536
#define BS__LOG_QUEUE_BYTES ((size_t)256 << 20)

typedef struct bs__seglog {
    bs_log_t base;
    char *dir;

    pthread_mutex_t ddl_mu;
    pthread_rwlock_t map_lock;
    bs__topic_t *buckets[BS__LOG_BUCKETS];

    /* The writer (log_writer.c). */
    pthread_t writer;
    int writer_started;
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    struct bs__req *qhead, *qtail;
    size_t qbytes;
    int qcount;
    int writer_idle;
    int stop;
    bs__topic_t *dirty; /* writer only: topics with unsynced writes */
    _Atomic uint64_t hist[BS__LOG_HIST_N + 1], hist_sum_ns;
    _Atomic uint64_t rounds;

    /* Watches (log_segments.c), under wmu. */
    pthread_mutex_t wmu;
    struct bs__watch *wbuckets[BS__LOG_BUCKETS];
    int64_t next_watch;

    /* The fetch thread (log_consumer.c). */
    pthread_t consumer;
    int consumer_started;
    pthread_mutex_t cmu;
    pthread_cond_t ccv;
    struct bs__fetch *cq_head, *cq_tail;
    int ckick, cstop;

    /* The background thread: retention, journal syncs and compaction. */
    pthread_t bg;
    int bg_started;
    pthread_mutex_t bmu;
    pthread_cond_t bcv;
    int bstop;
} bs__seglog_t;

/* log_segments.c */
bs__topic_t *bs__topic_get(bs__seglog_t *l, const char *tenant, const char *topic);
void bs__topic_unref(bs__topic_t *t);
/* Creates (first offset = that of the source) or finds a topic, for dead letters. May wait. */
bs__topic_t *bs__topic_ensure_like(bs__seglog_t *l, const char *tenant, const char *topic,
                                   const bs_log_topic_config_t *c, bs_err_t *err);
/* Called by the writer after publishing: wakes the topic's watches. */
void bs__watch_fire(bs__seglog_t *l, bs__topic_t *t, int all);
int bs__fsync_dir(const char *dir);
int bs__rm_rf(const char *path);

/* log_segment.c */
bs__seg_t *bs__seg_new(const char *dir, int64_t base);
void bs__seg_ref(bs__seg_t *s);
void bs__seg_unref(bs__seg_t *s);
/* Creates <dir>/<base>.seg holding just the header, fsynced with its directory. */
bs__seg_t *bs__seg_create(const char *dir, int64_t base, bs_err_t *err);
/* Appends an index entry (under the topic's mu once the segment is published). 0 or -1. */
int bs__seg_idx_push(bs__seg_t *s, int64_t offset, int64_t time_ms, uint64_t pos);
/* Appends s to t->segs (under t->mu once t is shared). 0 or -1. */
int bs__topic_push_seg(bs__topic_t *t, bs__seg_t *s);
/* Writes <base>.idx for a sealed segment (not fsynced: a lost one is rebuilt). */
void bs__seg_write_index(bs__topic_t *t, bs__seg_t *s);
/* Loads the segments of t->dir: indexes loaded or rebuilt, the last segment's torn tail
 * truncated; fills t->segs, next_offset, last_time, bytes and the writer state. */
int bs__topic_recover(bs__topic_t *t, bs_err_t *err);
int bs__topic_read(bs__topic_t *t, int64_t from, int max, size_t max_bytes, bs_log_record_cb cb,
                   void *ud, int64_t *next, bs_err_t *err);
int bs__topic_offset_at(bs__topic_t *t, int64_t time_ms, int64_t *offset, bs_err_t *err);
int bs__topic_config_save(const char *dir, const bs_log_topic_config_t *c, bs_err_t *err);
int bs__topic_config_load(const char *dir, bs_log_topic_config_t *c, bs_err_t *err);
/* The configuration with defaults filled in. */
bs_log_topic_config_t bs__topic_config_norm(const bs_log_topic_config_t *c);

/* log_writer.c */
int bs__writer_start(bs__seglog_t *l, bs_err_t *err);
/* Drains the queue (every queued append completes), syncs, stops the thread. */
void bs__writer_stop(bs__seglog_t *l);
/* Waits until every append queued for t before the call is done and the writer forgot t
 * (t->dropped set by the caller). */
void bs__writer_forget(bs__seglog_t *l, bs__topic_t *t);
/* Asks the writer to seal t's active segment if it holds records (retention by age). */
void bs__writer_ask_roll(bs__seglog_t *l, bs__topic_t *t);
/* Rebuilds t's dedup window from its records (open). */
int bs__writer_dedup_rebuild(bs__topic_t *t, bs_err_t *err);
/* Drops whole sealed segments past the topic's retention. */
void bs__retention_run(bs__seglog_t *l, bs__topic_t *t, int64_t now_ms);
int bs__seglog_append_async(bs_log_t *l, const char *tenant, const char *topic,
                            const bs_log_record_in_t *recs, int n, bs_log_append_cb cb, void *ud,
                            bs_err_t *err);

/* log_consumer.c */
int bs__consumer_start(bs__seglog_t *l, bs_err_t *err);
void bs__consumer_stop(bs__seglog_t *l);
/* Loads the groups of a recovered topic from its journals. */
int bs__groups_load(bs__topic_t *t, bs_err_t *err);
/* Marks every group of t deleted (topic drop) or frees them (close). */
void bs__groups_drop(bs__topic_t *t);
void bs__groups_free(bs__topic_t *t);
/* Background work: journal fsyncs (dirty for a second) and compaction. */
void bs__groups_maintain(bs__topic_t *t);
/* The writer published records of t: parked fetches may proceed. */
void bs__consumer_kick(bs__seglog_t *l);
/* One metric family (0..BS__GROUP_FAMILIES-1) of t's groups; t NULL: its HELP and TYPE. */
#define BS__GROUP_FAMILIES 6
void bs__groups_metrics(bs__topic_t *t, bs_buf_t *b, int part);
/* Parses a journal image into a throwaway group (the fuzz target); 0 or -1. */
int bs__journal_check(const uint8_t *p, size_t n);

int bs__seglog_consumer_ensure(bs_log_t *l, const char *tenant, const char *topic,
                               const char *group, const bs_log_consumer_config_t *c, bs_err_t *err);
int bs__seglog_consumer_delete(bs_log_t *l, const char *tenant, const char *topic,
                               const char *group, bs_err_t *err);
int bs__seglog_fetch_async(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                           int max, int wait_ms, bs_log_fetch_cb cb, void *ud, bs_err_t *err);
int bs__seglog_ack(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                   const char *delivery_id, bs_err_t *err);
int bs__seglog_nack(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                    const char *delivery_id, int64_t delay_ms, bs_err_t *err);
int bs__seglog_in_progress(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                           const char *delivery_id, bs_err_t *err);
int bs__seglog_consumer_stats(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                              bs_log_consumer_stats_t *out, bs_err_t *err);
int bs__seglog_consumers(bs_log_t *l, const char *tenant, const char *topic,
                         int (*cb)(const char *group, void *ud), void *ud, bs_err_t *err);

/* Little-endian integers. */
static inline void bs__put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16),
    p[3] = (uint8_t)(v >> 24);
}
static inline uint32_t bs__get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void bs__put64(uint8_t *p, uint64_t v)
{
    bs__put32(p, (uint32_t)v);
    bs__put32(p + 4, (uint32_t)(v >> 32));
}
static inline uint64_t bs__get64(const uint8_t *p)
{
    return (uint64_t)bs__get32(p) | (uint64_t)bs__get32(p + 4) << 32;
}

#endif
