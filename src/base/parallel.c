/* Parts of one computation on the caller plus helper threads; see parallel.h.
 *
 * The current computation is (fn, ctx, n) with an atomic cursor of parts. Helpers
 * wait for a new generation, join it (active++), claim parts until the cursor
 * passes n, then leave. The caller claims parts too, and returns only when every
 * part is done and no helper is still inside its computation; the next caller
 * waits for the same before it resets the cursor. So a helper never runs a part
 * of a computation that has returned.
 *
 * A helper that finishes spins on the generation for SPIN_NS before it sleeps on the
 * condition variable (as OpenMP runtimes do, for much longer): back-to-back batches
 * then start on both cores at once instead of after a futex wake-up. */
#include "base/parallel.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#include "base/time.h"

#define MAX_HELPERS 7
#define SPIN_NS 100000

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#else
#define cpu_relax() ((void)0)
#endif

static pthread_once_t started = PTHREAD_ONCE_INIT;
static atomic_int max_threads; /* 0 = by CPU count */
static int n_helpers;
static pthread_mutex_t owner = PTHREAD_MUTEX_INITIALIZER; /* the computation using the helpers */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work = PTHREAD_COND_INITIALIZER, finished = PTHREAD_COND_INITIALIZER;
/* written under mu */
static _Atomic uint64_t generation; /* also read by spinning helpers */
static void (*job_fn)(void *, int);
static void *job_ctx;
static int job_n, job_width, parts_done, active, sleeping;
static atomic_int cursor;

static int claim_parts(void (*fn)(void *, int), void *ctx, int n)
{
    int mine = 0, i;
    while ((i = atomic_fetch_add_explicit(&cursor, 1, memory_order_relaxed)) < n) {
        fn(ctx, i);
        mine++;
    }
    return mine;
}

static void *helper_main(void *arg)
{
    int index = (int)(intptr_t)arg; /* joins while index + 1 < the current width */
    uint64_t seen = 0;
    pthread_mutex_lock(&mu);
    for (;;) {
        if (seen == atomic_load(&generation)) {
            pthread_mutex_unlock(&mu);
            uint64_t until = bs_time_mono_ns() + SPIN_NS;
            while (seen == atomic_load_explicit(&generation, memory_order_relaxed) &&
                   bs_time_mono_ns() < until)
                cpu_relax();
            pthread_mutex_lock(&mu);
        }
        while (seen == atomic_load(&generation)) {
            sleeping++;
            pthread_cond_wait(&work, &mu);
            sleeping--;
        }
        seen = atomic_load(&generation);
        if (index + 1 >= job_width)
            continue;
        void (*fn)(void *, int) = job_fn;
        void *ctx = job_ctx;
        int n = job_n;
        active++;
        pthread_mutex_unlock(&mu);
        int mine = claim_parts(fn, ctx, n);
        pthread_mutex_lock(&mu);
        parts_done += mine;
        active--;
        if (parts_done >= job_n && active == 0)
            pthread_cond_broadcast(&finished);
    }
    return NULL;
}

static void start_helpers(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int want = cpus > 1 ? (int)(cpus - 1) : 0;
    if (want > MAX_HELPERS)
        want = MAX_HELPERS;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int i = 0; i < want; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, helper_main, (void *)(intptr_t)i) != 0)
            break;
        n_helpers++;
    }
    pthread_attr_destroy(&attr);
}

void bs_parallel_set_max(int threads) { atomic_store(&max_threads, threads); }

int bs_parallel_width(void)
{
    pthread_once(&started, start_helpers);
    int max = atomic_load(&max_threads);
    return max > 0 && max < 1 + n_helpers ? max : 1 + n_helpers;
}

void bs_parallel_for(int n, void (*fn)(void *ctx, int i), void *ctx)
{
    if (n <= 0)
        return;
    int width = bs_parallel_width();
    if (n == 1 || width == 1 || pthread_mutex_trylock(&owner) != 0) {
        for (int i = 0; i < n; i++)
            fn(ctx, i);
        return;
    }
    pthread_mutex_lock(&mu);
    while (active > 0) /* a late helper still inside the previous computation */
        pthread_cond_wait(&finished, &mu);
    job_fn = fn;
    job_ctx = ctx;
    job_n = n;
    job_width = width;
    parts_done = 0;
    atomic_store_explicit(&cursor, 0, memory_order_relaxed);
    atomic_fetch_add(&generation, 1);
    if (sleeping)
        pthread_cond_broadcast(&work);
    pthread_mutex_unlock(&mu);

    int mine = claim_parts(fn, ctx, n);

    pthread_mutex_lock(&mu);
    parts_done += mine;
    while (parts_done < n || active > 0)
        pthread_cond_wait(&finished, &mu);
    pthread_mutex_unlock(&mu);
    pthread_mutex_unlock(&owner);
}
