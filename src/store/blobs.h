/*
 * The artifact blob store: immutable byte strings addressed by their SHA-256
 * (64 lower-case hex digits), with two backends behind one interface.
 *
 * - files: <dir>/ab/<sha256>, one file per blob, written through a temporary
 *   file and a rename (a reader never sees a partial blob; a crash leaves the
 *   whole file or nothing but a <sha256>.tmp.<random> that the collector
 *   removes). The file's modification time is its grace clock.
 * - metadata: the blob lives in the metadata store (table blobs, one row per
 *   blob, and blob_chunks, 1 MiB chunks), so replicas that share a PostgreSQL
 *   server share artifacts without a shared disk. Each replica keeps a local
 *   cache in <dir> with the same layout as the files backend; every load
 *   verifies the SHA-256, a cache file that fails it is discarded and fetched
 *   again, and a stored blob that fails it is an error naming the blob.
 *   A put writes its chunks in transactions of their own (one per chunk, so a
 *   big upload never holds the store's write lock for long) with the row's
 *   complete = 0, then marks it complete in one short transaction; only a
 *   complete blob is ever read. Chunks of a put that never finished are
 *   collected after the grace period like any unreferenced blob.
 *
 * Races with the collector: a put (re)starts a blob's grace clock; the caller
 * then calls bs_blobs_ensure inside the transaction that records the reference
 * (the version row), and the collector decides inside a transaction too, so
 * the two serialise on the store's write lock: the reference is there when the
 * collector looks, or ensure sees the blob gone and writes it again.
 *
 * Memory: a put reads the caller's bytes in place (bound, not copied); a get
 * allocates the blob once and fills it one chunk (or one file read) at a time.
 *
 * Thread safety: every function may be called from any thread (never an I/O
 * thread: they do disk and store round trips).
 */
#ifndef BS_STORE_BLOBS_H
#define BS_STORE_BLOBS_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "store/meta.h"

typedef struct bs_blobs bs_blobs_t;

typedef enum { BS_BLOBS_FILES = 0, BS_BLOBS_METADATA = 1 } bs_blobs_kind_t;

/* Chunk size of the metadata backend. */
#define BS_BLOBS_CHUNK (1024 * 1024)

/* Counters since bs_blobs_new (the metadata backend's cache; zeros for files). */
typedef struct {
    uint64_t cache_hits;     /* loads answered from a verified cache file */
    uint64_t cache_misses;   /* loads that fetched from the store (no usable cache file) */
    uint64_t cache_discards; /* cache files that failed their size or checksum, removed */
    uint64_t fetched_bytes;  /* bytes read from the store */
} bs_blobs_stats_t;

/* Parses "files" | "metadata" into *kind. 0 or BS_EINVAL. */
int bs_blobs_parse_kind(const char *name, bs_blobs_kind_t *kind, bs_err_t *err);

/* Opens a blob store of the given kind. dir (copied) is the files backend's
 * store or the metadata backend's cache, created if missing; meta is borrowed
 * and must outlive the store (the files backend uses it only for the
 * collector's transaction). NULL with err set (BS_EIO, BS_ENOMEM). */
bs_blobs_t *bs_blobs_new(bs_blobs_kind_t kind, bs_meta_t *meta, const char *dir, bs_err_t *err);
void bs_blobs_free(bs_blobs_t *b);

bs_blobs_kind_t bs_blobs_kind(const bs_blobs_t *b);
/* "files" | "metadata" */
const char *bs_blobs_kind_name(const bs_blobs_t *b);

/* Stores bytes (borrowed) as blob sha (their SHA-256, computed by the caller)
 * and restarts its grace clock. Idempotent: the same bytes again store nothing
 * new. Must not be called inside a metadata transaction (the metadata backend
 * runs its own). 0, BS_EIO, BS_EUNAVAIL (store unreachable), BS_ENOMEM. */
int bs_blobs_put(bs_blobs_t *b, const char *sha, const void *bytes, size_t len, bs_err_t *err);

/* Inside the caller's metadata transaction: makes sure blob sha is present
 * (it may have been collected since bs_blobs_put), writing bytes again if not.
 * 0 or an error as bs_blobs_put. */
int bs_blobs_ensure(bs_blobs_t *b, const char *sha, const void *bytes, size_t len, bs_err_t *err);

/* Loads blob sha, which must be size bytes, into *bytes (malloc'd, the caller
 * frees; never NULL on success, even for size 0), checking its SHA-256.
 * BS_EIO names the blob when it is missing, truncated or fails its checksum;
 * BS_ENOMEM. The metadata backend answers from a verified cache file when it
 * can and otherwise fetches, verifies and caches. */
int bs_blobs_get(bs_blobs_t *b, const char *sha, size_t size, void **bytes, bs_err_t *err);

/* Restarts blob sha's grace clock (its last reference is going away). Best
 * effort; may run inside the caller's transaction. */
void bs_blobs_touch(bs_blobs_t *b, const char *sha);

/* One collection pass over the shared store: removes blobs that no row of
 * refs_sql references (a query whose first column lists referenced sha256
 * values, run inside the collector's transaction) and whose grace clock is
 * older than grace_s seconds, with any temporary files or unfinished puts of
 * that age. Run it on one replica at a time (it is what a cluster lease
 * wraps). Returns the number of blobs removed or a negative BS_E* code. */
int bs_blobs_collect(bs_blobs_t *b, int64_t grace_s, const char *refs_sql, bs_err_t *err);

/* The local part of a pass, for every replica: removes this replica's cache
 * files (metadata backend) that refs_sql does not reference and that are
 * older than grace_s, and leftover temporary cache files. 0 for the files
 * backend (its files are the store). Returns the number removed or a
 * negative BS_E* code. */
int bs_blobs_evict_cache(bs_blobs_t *b, int64_t grace_s, const char *refs_sql, bs_err_t *err);

void bs_blobs_stats(const bs_blobs_t *b, bs_blobs_stats_t *out);

#endif
