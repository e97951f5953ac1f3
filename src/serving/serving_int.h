/* Private to src/serving: slots, handles and the routing snapshot. */
#ifndef BS_SERVING_SERVING_INT_H
#define BS_SERVING_SERVING_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "base/pool.h"
#include "serving/serving.h"

#define BS__SERVING_BUCKETS 17

typedef struct bs__slot bs__slot_t;
typedef struct bs__batcher bs__batcher_t;

bs__batcher_t *bs__batcher_new(int max_batch, uint32_t delay_us);
void bs__batcher_free(bs__batcher_t *b);
/* Changes a running batcher's limits (the model's settings changed). */
void bs__batcher_configure(bs__batcher_t *b, int max_batch, uint32_t delay_us);
int bs__batcher_submit(bs__batcher_t *b, bs_model_handle_t *h, const double *rows, size_t n,
                       bs_serving_done_fn done, void *ud, bs_err_t *err);

/*
 * A handle (one reference, the caller's) on model, which it takes over even on
 * failure, with the signature built from the model's schema and the optional
 * overrides (borrowed; NULL = none; see bs_ml_signature_build). slot is left
 * NULL: load_handle sets it, and test handles go without one (they must not
 * reach the functions that use it: name/version, render, record, submit).
 * Returns NULL with err set: BS_EINVAL from the signature, BS_ENOMEM.
 */
bs_model_handle_t *bs__serving_handle_new(bs_ml_model_t *model, const cJSON *input_override,
                                          const cJSON *output_override, bs_err_t *err);

struct bs_model_handle {
    atomic_int refs; /* the slot's reference + one per request */
    bs__slot_t *slot;
    bs_ml_model_t *model;
    bs_ml_schema_t sig;
    size_t memory;
    /* open-addressing index of feature names: 2^k entries holding index+1 (0 = empty) */
    int *name_index;
    uint32_t name_mask;
    uint32_t *name_len; /* strlen of each feature name */
    /* Per feature, BS__FAST_* bits decided once at load time, so the fast path's loop
     * (fastpath.c) is a name compare, a number parse and a store for the usual feature. */
    unsigned char *fast;
};

/* The name is valid UTF-8 without '"', '\\' or control bytes: a JSON string whose bytes
 * are exactly `"name"` is that name, so the fast path compares bytes without a scan. */
#define BS__FAST_NAME_LITERAL 1u
/* A float without min/max: any finite number is accepted as it is. */
#define BS__FAST_PLAIN_NUMBER 2u

#define BS__STAT_SHARDS 8

/* One thread's share of a version's counters (summed when /metrics is scraped). */
typedef struct {
    _Alignas(64) _Atomic uint64_t requests;
    _Atomic uint64_t rows, errors, sum_ns;
    _Atomic uint64_t hist[BS__SERVING_BUCKETS + 1];
    _Atomic uint64_t errors_by_code[BS_ERR_COUNT];
} bs__slot_stats_t;

/* This thread's shard index. */
int bs__stat_shard(void);

/* Someone waiting for a slot's load (bs_serving_load_async). */
typedef struct bs__waiter {
    struct bs__waiter *next;
    bs_serving_loaded_fn done;
    void *ud;
} bs__waiter_t;

/*
 * One per (model, version) in the current snapshot. Found by a hash index on
 * (model id, version) and linked in a list for eviction and /metrics, both
 * under s->lock. When its version leaves the registry (model deleted) the slot
 * is unlinked, unloaded and its index reference dropped after a QSBR grace
 * period; a queued load holds a reference of its own, so the slot is freed
 * when the last of them goes.
 */
struct bs__slot {
    /* Touched by every rebuild for every version: kept together in the first two cache
     * lines (a rebuild at 10k versions is mostly these memory reads). */
    bs__slot_t *hnext; /* hash chain (s->lock) */
    uint32_t id_hash;  /* hash of model_id, compared before it */
    int version;
    uint64_t seen_gen; /* the last rebuild that found it (s->lock) */
    int aliased;       /* an alias points at it in the current snapshot (refresh_lock) */
    /* the model's batching settings, set at refresh: enabled -1 = by runtime (MLP) */
    _Atomic int batch_enabled, batch_max_size, batch_delay_us;
    bs__batcher_t *batcher; /* created on the first batched request (under load_lock) */
    char model_id[40];
    bs__slot_t *next, *prev; /* s->slots (s->lock) */
    atomic_int refs;         /* the index's + one per queued load */
    _Atomic int dead;        /* unlinked: loads of it are refused */
    char tenant[64];
    char name[129];
    _Atomic(bs_model_handle_t *) handle;
    pthread_mutex_t load_lock;
    pthread_mutex_t wait_lock; /* waiters, load_queued */
    bs__waiter_t *waiters;
    int load_queued;
    _Atomic uint64_t last_used_ns;
    _Atomic uint64_t loads, load_failures;   /* for /metrics */
    _Atomic uint64_t evictions, load_rejections;
    _Atomic uint64_t batches, batched_rows;
    /* metrics, sharded by thread so the two I/O threads never write one cache line */
    bs__slot_stats_t stats[BS__STAT_SHARDS];
};

typedef struct {
    int version;
    int approved;
    int rejected; /* a reviewer rejected it: it never serves */
    bs__slot_t *slot;
} bs__snap_version_t;

typedef struct {
    char alias[65];
    int version;
} bs__snap_alias_t;

typedef struct {
    char tenant[64];
    char name[129];
    char model_id[40];
    int batch_enabled, batch_max_size, batch_delay_us; /* the model's batching settings */
    int n_versions, n_aliases, cap_versions;
    bs__snap_version_t *versions; /* ascending */
    bs__snap_alias_t *aliases;
} bs__snap_model_t;

typedef struct {
    int n;
    bs__snap_model_t *models; /* sorted by (tenant, name) */
} bs__snapshot_t;

struct bs_serving {
    bs_meta_t *meta;
    bs_registry_t *reg;
    bs_serving_opts_t o;
    _Atomic(bs__snapshot_t *) snap;
    pthread_mutex_t lock; /* slots list and index, eviction */
    bs__slot_t *slots;
    bs__slot_t **index; /* hash of (model id, version): 2^k chains */
    size_t index_mask, n_slots;
    _Atomic size_t loaded_bytes;
    /* Rebuilds: one at a time (refresh_lock); a change that a rebuild begun after it
     * already covers needs no rebuild of its own (see bs_serving_refresh). */
    pthread_mutex_t refresh_lock;
    _Atomic uint64_t gen_requested;
    uint64_t gen_built; /* refresh_lock */
    bs_pool_t *loader;  /* model loads: never on an I/O thread, never behind registry writes */
    bs__slot_t **aliased; /* slots an alias points at in the current snapshot (refresh_lock) */
    size_t n_aliased;
};

#endif
