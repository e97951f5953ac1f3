/*
 * Private to the job runtime (jobs.c: lifecycle, enqueue, queries, cancel/retry, retention;
 * jobs_worker.c: claiming, running, heartbeats, progress, batched completions).
 *
 * Threads of one runtime:
 *   claimer  promotes due scheduled/retryable jobs, rescues running jobs whose lease
 *            expired (their holder died), and claims available jobs of every kind with
 *            free capacity (bs_lease_claim, a batch per statement) onto the ready queue;
 *   workers  (opts.workers) pop the ready queue and call the kind's handler;
 *   writer   the only thread that writes attempts' rows after the claim and the only one
 *            that frees runs: it writes the attempts that ended (every one that ended since
 *            its last pass in one transaction: group commit), flushes progress (at most once
 *            a second an attempt), renews the leases of every attempt in flight (every
 *            lease_ms/3, one statement for all) and polls for cancellations made on other
 *            replicas; it also releases claims at shutdown;
 *   retention a lease singleton ("job-retention") deleting finalized jobs past retention.
 *
 * Locking: one mutex, hub->mu, guards the runtime's lists, counters and every run's
 * mutable fields. It lives in the hub, a small refcounted object the runs point to, so an
 * async attempt that ends after bs_jobs_free (detached) finds the hub, sees the runtime
 * gone and only frees itself. No SQL runs under the mutex.
 */
#ifndef BS_EVENTS_JOBS_INT_H
#define BS_EVENTS_JOBS_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "events/jobs.h"
#include "store/lease.h"

#define BS__JOBS_KINDS_MAX 64
#define BS__JOBS_DEFAULT_ATTEMPTS 25
#define BS__JOBS_ARGS_MAX (1 << 20)   /* bytes of a job's args JSON */
#define BS__JOBS_RESULT_MAX (1 << 20) /* bytes of a result JSON */
#define BS__JOBS_ERROR_MAX 1000       /* bytes of one error message kept */
#define BS__JOBS_ERRORS_KEPT 25       /* newest entries of errors kept */
#define BS__JOBS_UNIQUE_MAX 256       /* bytes of a unique_key */
#define BS__JOBS_SAMPLES 40           /* progress samples: >= 250 ms apart, ~10 s */

/* The database's clock, ms since the epoch, per dialect (store/lease.h's expressions). */
#define BS__JOBS_NOW_S BS__LEASE_NOW_SQLITE
#define BS__JOBS_NOW_P BS__LEASE_NOW_PG

typedef struct {
    bs_job_kind_t k; /* as registered (strings borrowed) */
    char name[64];
    int max_attempts; /* defaults filled in */
    int concurrency;
    /* hub->mu */
    int inflight;   /* claimed attempts not ended yet */
    int maybe_more; /* a claim of this kind may find more (a full batch, an enqueue) */
    uint64_t claimed, completed, failed, discarded, cancelled;
} bs__job_kind_t;

typedef struct {
    pthread_mutex_t mu;
    bs_jobs_t *j; /* NULL once the runtime is freed */
    int refs;     /* the runtime + every run */
} bs__jobs_hub_t;

typedef struct {
    uint64_t t; /* monotonic ns */
    int64_t done;
} bs__job_sample_t;

enum { BS__RUN_LIVE = 0, BS__RUN_ENDED, BS__RUN_DETACHED };

struct bs_job_run {
    bs__jobs_hub_t *hub;
    bs__job_kind_t *kind;
    char id[37];
    char *tenant, *args, *errors; /* owned */
    int attempt, max_attempts;
    int64_t token;
    _Atomic int cancelled; /* bs_job_cancelled */
    /* hub->mu */
    int state;       /* BS__RUN_* */
    int started;     /* handed to the handler */
    int lost;        /* the lease was lost (noticed by a heartbeat or the local deadline) */
    int interrupted; /* cancelled by the runtime's shutdown */
    uint64_t valid_until_ns;
    int64_t done, total;
    int dirty; /* progress not written yet */
    bs__job_sample_t samples[BS__JOBS_SAMPLES];
    int nsamples;
    /* the end (state ENDED) */
    int completed; /* 1: bs_job_complete, 0: bs_job_fail */
    int retryable;
    int64_t retry_after_ms;
    char *result, *location, *error; /* owned */
    struct bs_job_run *prev, *next;  /* the registry: every claimed run not written yet */
    struct bs_job_run *qnext;        /* the ready queue or the done list */
};

struct bs_jobs {
    bs_meta_t *meta;
    bs__jobs_hub_t *hub;
    char owner[128];
    int nworkers;
    int64_t lease_ms, poll_ms, retention_ms;
    bs__job_kind_t kinds[BS__JOBS_KINDS_MAX];
    int nkinds;
    int started;
    pthread_t claimer, writer, *workers;
    int have_claimer, have_writer, nstarted_workers;
    bs_lease_runner_t *retention;
    /* hub->mu */
    pthread_cond_t claim_cv, work_cv, write_cv, idle_cv;
    int stopping, detach, kicked;
    bs_job_run_t *registry;
    int nregistry;
    bs_job_run_t *ready_head, *ready_tail;
    int nready;
    bs_job_run_t *done_head, *done_tail;
    int ndone;
    uint64_t lost_leases, rescued, stale_ends, retention_deleted;
};

/* jobs_worker.c */
int bs__jobs_start_threads(bs_jobs_t *j, bs_err_t *err);
/* The stop sequence of bs_jobs_free up to the threads' end (jobs.c frees the rest). */
void bs__jobs_stop_threads(bs_jobs_t *j);
/* The local attempt of job id (this process), if running here: its cancel flag turns 1. */
void bs__jobs_cancel_local(bs_jobs_t *j, const char *id);

/* The default backoff before the attempt after failed_attempt: failed_attempt^4 s ± 10%
 * uniform jitter, in ms (at least 1). u in [0, 1) picks the jitter (tests pass it). */
int64_t bs__jobs_backoff_default_ms(int failed_attempt, double u);
/* The kind's backoff (its own function, or the default with random jitter). */
int64_t bs__jobs_backoff_ms(const bs__job_kind_t *k, int failed_attempt);
/* Progress samples: adds (t, done) keeping them >= 250 ms apart (a closer one replaces the
 * newest) and at most BS__JOBS_SAMPLES (the oldest goes). */
void bs__jobs_sample_add(bs__job_sample_t *s, int *n, uint64_t t, int64_t done);
/* done per second over the samples' span; 0 when it is empty or zero. */
double bs__jobs_rate(const bs__job_sample_t *s, int n);
/* errors (a JSON array's text) with one entry appended, the oldest dropped past
 * BS__JOBS_ERRORS_KEPT; malloc'd, NULL when out of memory. expired_at: the expired lease's
 * end (0: none). */
char *bs__jobs_errors_append(const char *errors, int attempt, const char *error, const char *owner,
                             int64_t token, int64_t expired_at);
/* The registered kind named name, or NULL (no lock: kinds do not change after start). */
bs__job_kind_t *bs__jobs_kind_find(bs_jobs_t *j, const char *name);
/* Drops a reference to the hub, freeing it with the last. */
void bs__jobs_hub_unref(bs__jobs_hub_t *h);
/* One retention pass: deletes finalized jobs older than retention_ms in batches while
 * held() (NULL: always). Returns the number deleted or a negative error. */
int bs__jobs_retention_pass(bs_jobs_t *j, int (*held)(void *), void *ud, bs_err_t *err);

#endif
