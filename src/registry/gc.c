/*
 * Artifact garbage collection. Artifacts are content-addressed blobs
 * (store/blobs.h) that any number of versions may share; a blob is removed
 * once no version references it and it has not been written, re-uploaded or
 * orphaned by a delete for `grace` seconds. Leftovers of interrupted uploads
 * (temporary files, unfinished chunked blobs) go after the same grace.
 *
 * Races with uploads: an upload puts (or touches) its blob before the
 * transaction that inserts its version, and checks inside that transaction that
 * the blob is still there (writing it again if not). The blob store's collector
 * decides inside a transaction too, so the two serialize on the store's lock:
 * either the version row exists when the collector looks, or the upload sees the
 * blob gone and writes it again.
 *
 * A pass has two parts: the shared store (bs__registry_gc_store; with several
 * replicas on one metadata store, one replica at a time should run it) and this
 * replica's cache of the metadata store (bs__registry_gc_cache; every replica).
 *
 * Thread: the task thread of a lease runner (store/lease.h) per registry, never an
 * I/O thread: passes run only while this replica holds the lease "artifact-gc", so
 * replicas sharing a store never collect at once. Stopping ends a pass in progress
 * and releases the lease, so shutdown is prompt.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "registry/registry_int.h"
#include "store/lease.h"

/* The collector's singleton lease: of replicas sharing a store, one collects. Its time
 * is three passes, 3 s .. 30 s: another replica takes over within that when the holder
 * dies, and tries to every third of it. */
#define GC_LEASE "artifact-gc"

/* What references an artifact: a version row (run inside the collector's transaction). */
static const char *const REFS_SQL = "SELECT DISTINCT sha256 FROM model_versions";

int bs__registry_gc_store(bs_registry_t *r, int64_t grace_s, bs_err_t *err)
{
    return bs_blobs_collect(r->blobs, grace_s, REFS_SQL, err);
}

int bs__registry_gc_cache(bs_registry_t *r, int64_t grace_s, bs_err_t *err)
{
    return bs_blobs_evict_cache(r->blobs, grace_s, REFS_SQL, err);
}

int bs__registry_gc(bs_registry_t *r, int64_t grace_s, bs_err_t *err)
{
    int stored = bs__registry_gc_store(r, grace_s, err);
    if (stored < 0)
        return stored;
    int cached = bs__registry_gc_cache(r, grace_s, err);
    return cached < 0 ? cached : stored + cached;
}

/* One pass, on the lease runner's task thread, while this replica holds "artifact-gc". */
static void gc_task(void *ud, bs_lease_runner_t *run, int64_t token)
{
    (void)token;
    bs_registry_t *r = ud;
    if (!bs_lease_runner_held(run))
        return;
    bs_err_t err;
    bs_err_clear(&err);
    if (bs__registry_gc(r, r->gc_grace_s, &err) < 0)
        BS_LOG(BS_LOG_WARN, "registry", "artifact collection failed: %s", err.msg);
}

void bs_registry_set_replica_id(bs_registry_t *r, const char *id)
{
    snprintf(r->replica_id, sizeof r->replica_id, "%s", id);
}

int bs_registry_gc_start(bs_registry_t *r, int64_t grace_s, bs_err_t *err)
{
    if (r->gc_running)
        return 0;
    r->gc_grace_s = grace_s;
    /* A pass every half grace period (1 s .. 5 min): a file goes between grace and 1.5x. */
    int64_t every = grace_s / 2;
    if (every < 1)
        every = 1;
    if (every > 300)
        every = 300;
    if (!r->replica_id[0]) {
        char host[64] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(r->replica_id, sizeof r->replica_id, "%s-%ld", host, (long)getpid());
    }
    int64_t ttl_s = every * 3 < 3 ? 3 : every * 3 > 30 ? 30 : every * 3;
    bs_lease_runner_opts_t o = {.name = GC_LEASE,
                                .owner = r->replica_id,
                                .ttl_ms = ttl_s * 1000,
                                .period_ms = every * 1000,
                                .task = gc_task,
                                .ud = r};
    r->gc_lease = bs_lease_runner_start(r->meta, &o, err);
    if (!r->gc_lease)
        return err->code;
    r->gc_running = 1;
    return 0;
}

void bs__registry_gc_stop(bs_registry_t *r)
{
    if (!r->gc_running)
        return;
    bs_lease_runner_stop(r->gc_lease); /* ends a pass in progress, releases the lease */
    r->gc_lease = NULL;
    r->gc_running = 0;
}
