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
 * Thread: one background thread per registry (bs__registry_gc_start), never an
 * I/O thread; it sleeps on a condition variable so shutdown is prompt.
 */
#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "base/log.h"
#include "registry/registry_int.h"

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

static void *gc_main(void *arg)
{
    bs_registry_t *r = arg;
    /* A pass every half grace period (1 s .. 5 min): a file goes between grace and 1.5x. */
    int64_t every = r->gc_grace_s / 2;
    if (every < 1)
        every = 1;
    if (every > 300)
        every = 300;
    pthread_mutex_lock(&r->gc_mu);
    while (!r->gc_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += (time_t)every;
        while (!r->gc_stop && pthread_cond_timedwait(&r->gc_cv, &r->gc_mu, &ts) != ETIMEDOUT)
            ;
        if (r->gc_stop)
            break;
        pthread_mutex_unlock(&r->gc_mu);
        bs_err_t err;
        bs_err_clear(&err);
        if (bs__registry_gc(r, r->gc_grace_s, &err) < 0)
            BS_LOG(BS_LOG_WARN, "registry", "artifact collection failed: %s", err.msg);
        pthread_mutex_lock(&r->gc_mu);
    }
    pthread_mutex_unlock(&r->gc_mu);
    return NULL;
}

int bs_registry_gc_start(bs_registry_t *r, int64_t grace_s, bs_err_t *err)
{
    if (r->gc_running)
        return 0;
    r->gc_grace_s = grace_s;
    r->gc_stop = 0;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->gc_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&r->gc_mu, NULL);
    if (pthread_create(&r->gc_tid, NULL, gc_main, r) != 0) {
        pthread_cond_destroy(&r->gc_cv);
        pthread_mutex_destroy(&r->gc_mu);
        return bs_err_set(err, BS_EUNAVAIL, "cannot start the artifact collector thread");
    }
    r->gc_running = 1;
    return 0;
}

void bs__registry_gc_stop(bs_registry_t *r)
{
    if (!r->gc_running)
        return;
    pthread_mutex_lock(&r->gc_mu);
    r->gc_stop = 1;
    pthread_cond_signal(&r->gc_cv);
    pthread_mutex_unlock(&r->gc_mu);
    pthread_join(r->gc_tid, NULL);
    pthread_cond_destroy(&r->gc_cv);
    pthread_mutex_destroy(&r->gc_mu);
    r->gc_running = 0;
}
