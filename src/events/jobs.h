/*
 * The job runtime (DESIGN.md "Jobs"): anything that runs longer than a request.
 * One table (`jobs` in the metadata store), River's state machine
 *
 *   available ──claim──► running ──► completed
 *   scheduled ─(time)─┘     │  └──► retryable ─(backoff)─► available …
 *                           ├──► discarded (attempts exhausted / non-retryable)
 *                           └──► cancelled (also from available/scheduled/retryable)
 *
 * claimed with leases (bs_lease_claim: FOR UPDATE SKIP LOCKED on PostgreSQL)
 * and heartbeats (30 s lease, renewed every 10 s): a job whose worker or
 * replica died is claimed again when its lease expires, with a higher fencing
 * token, and the dead holder's late writes change nothing — never two at once.
 * Retries back off attempt^4 s ± 10% (default 25 attempts; per-kind overrides).
 * Unique keys, progress (done/total → rate, ETA), cancellation, a result and
 * its location, retention of finalized jobs.
 *
 * Kinds are registered in code (webhook.deliver, sleep, …); their handlers run
 * on the runtime's workers, or complete later from any thread (async kinds:
 * a webhook call in flight holds no worker).
 *
 * Thread safety: every function may be called from any thread after
 * bs_jobs_start; register kinds before it. Functions that touch the store wait
 * on it: never call them on an I/O thread.
 */
#ifndef BS_EVENTS_JOBS_H
#define BS_EVENTS_JOBS_H

#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "store/meta.h"

typedef enum {
    BS_JOB_AVAILABLE = 0,
    BS_JOB_SCHEDULED,
    BS_JOB_RUNNING,
    BS_JOB_RETRYABLE,
    BS_JOB_COMPLETED,
    BS_JOB_DISCARDED,
    BS_JOB_CANCELLED,
} bs_job_state_t;

/* "available", … ; NULL for an unknown state. */
const char *bs_job_state_name(bs_job_state_t s);
/* 0 and *out, or BS_EINVAL. */
int bs_job_state_parse(const char *s, bs_job_state_t *out);

typedef struct bs_jobs bs_jobs_t;
typedef struct bs_job_run bs_job_run_t; /* one claimed attempt, handed to the kind's handler */

/* Runs one attempt. It ends the attempt with exactly one of bs_job_complete / bs_job_fail,
 * before returning or later from any thread (the runtime heartbeats it meanwhile). */
typedef void (*bs_job_fn)(void *ud, bs_job_run_t *run);

typedef struct {
    const char *kind;  /* [a-z0-9_.-]{1,63}, e.g. "webhook.deliver" (borrowed: static) */
    bs_job_fn run;
    void *ud;
    int max_attempts;  /* default for jobs of this kind; 0: 25 */
    /* Delay before attempt (2, 3, …) given the attempt that failed (1, 2, …); NULL:
     * attempt^4 s ± 10% jitter. */
    int64_t (*backoff_ms)(void *ud, int failed_attempt);
    int concurrency;   /* attempts of this kind in flight in this process; 0: the workers */
    int api_enqueue;   /* 1: POST /v1/jobs may start it with client-given args */
    const char *description; /* one line for GET /v1/job-kinds and the docs (borrowed: static) */
} bs_job_kind_t;

typedef struct {
    int workers;           /* threads running handlers; 0: 4 */
    int64_t lease_ms;      /* 0: 30000 (heartbeat every lease/3) */
    int64_t poll_ms;       /* claim poll when idle; 0: 200 (enqueues in this process wake at once) */
    int64_t retention_ms;  /* finalized jobs older than this are deleted; 0: 7 days */
    const char *owner;     /* this replica's id in leases (copied) */
} bs_jobs_opts_t;

/* NULL with err. m is borrowed and must outlive the runtime. */
bs_jobs_t *bs_jobs_new(bs_meta_t *m, const bs_jobs_opts_t *o, bs_err_t *err);
/* Before bs_jobs_start. 0, BS_EINVAL or BS_ECONFLICT (kind registered twice). */
int bs_jobs_register(bs_jobs_t *j, const bs_job_kind_t *k, bs_err_t *err);
int bs_jobs_start(bs_jobs_t *j, bs_err_t *err);
/* Stops claiming, turns bs_job_cancelled to 1 for every attempt in flight, waits for
 * handlers running on workers to return and async attempts to end (bounded: after
 * lease_ms/3 their claims are released for another replica), frees j. An attempt ended by
 * a failure after this began is retried at once, not after a backoff. An async attempt
 * still open at the bound is detached: ending it later only frees it (no store write, j
 * untouched). NULL is a no-op. */
void bs_jobs_free(bs_jobs_t *j);

/* The registered kind named kind: 0 with *out (its strings borrowed; max_attempts and
 * concurrency with their defaults filled in), or BS_ENOTFOUND. */
int bs_jobs_kind(bs_jobs_t *j, const char *kind, bs_job_kind_t *out);
/* {"items": [{kind, description, max_attempts, concurrency, api_enqueue, backoff}]} of
 * every registered kind, in registration order. */
void bs_jobs_kinds_json(bs_jobs_t *j, bs_buf_t *out);

typedef struct {
    const char *kind;       /* a registered kind */
    const char *tenant;
    const char *args;       /* JSON object text (copied); NULL: {} */
    const char *unique_key; /* NULL, or: while a job of (tenant, kind, unique_key) is not
                               finalized, enqueue returns it instead of a new one */
    int64_t run_at_ms;      /* 0: now; later: state scheduled */
    int max_attempts;       /* 0: the kind's */
    int priority;           /* higher runs first; 0 default */
    const char *created_by; /* key id or "system" */
} bs_job_new_t;

/* Inserts a job (and wakes this process's workers). 0 with id (UUIDv7) and *existed (1:
 * unique_key matched a live job whose id is returned); BS_EINVAL (kind, args); the store's
 * error. */
int bs_jobs_enqueue(bs_jobs_t *j, const bs_job_new_t *nj, char id[37], int *existed,
                    bs_err_t *err);
/* Inserts n jobs (1..BS_JOBS_BATCH_MAX) in one transaction: all or none. ids[i] and
 * existed[i] as bs_jobs_enqueue's. BS_EINVAL names the first bad one in err->field
 * ("jobs[3].kind", "jobs[0].args"); nothing is written then. */
#define BS_JOBS_BATCH_MAX 1000
int bs_jobs_enqueue_many(bs_jobs_t *j, const bs_job_new_t *nj, int n, char (*ids)[37],
                         int *existed, bs_err_t *err);

/* GET /v1/jobs/{id}'s object into out (JSON): id, kind, tenant, state, args, unique_key,
 * priority, attempt, max_attempts, errors [{attempt, at, error, attempted_by, lease_token}],
 * progress {done, total, rate_per_s, eta_s}, result, result_location, cancel_requested,
 * created_at, scheduled_at, attempted_at, finalized_at, created_by, attempted_by (the
 * owner of the current or last attempt's lease) and lease_token (its fencing token: each
 * claim increments it). 0 or BS_ENOTFOUND (absent or another tenant's). tenant NULL: any. */
int bs_jobs_get(bs_jobs_t *j, const char *tenant, const char *id, bs_buf_t *out, bs_err_t *err);
/* {"items": [...], "next_cursor": …} newest first; state/kind NULL: any; tenant NULL: any;
 * limit 1..1000; cursor: the next_cursor of the page before (NULL: the first page).
 * BS_EINVAL for an unknown state. */
int bs_jobs_list(bs_jobs_t *j, const char *tenant, const char *state, const char *kind, int limit,
                 const char *cursor, bs_buf_t *out, bs_err_t *err);
/* Cancels: an available/scheduled/retryable job at once; a running one is asked to stop
 * (bs_job_cancelled turns 1: at once in this process, within about a second on another
 * replica) and its attempt ends cancelled when it fails (completing anyway, it ends
 * completed: the work was done). 0; BS_ENOTFOUND; BS_ECONFLICT (finalized). */
int bs_jobs_cancel(bs_jobs_t *j, const char *tenant, const char *id, bs_err_t *err);
/* Makes a discarded, cancelled or retryable job available again now (attempts continue:
 * a job past its max_attempts gets one more). 0; BS_ENOTFOUND; BS_ECONFLICT (another state,
 * or its unique_key is taken by a live job meanwhile). */
int bs_jobs_retry(bs_jobs_t *j, const char *tenant, const char *id, bs_err_t *err);
/* Wakes this process's workers: a job may be claimable now. */
void bs_jobs_kick(bs_jobs_t *j);

/* ---- inside a handler (borrowed run; valid until complete/fail) -------------------------- */
const char *bs_job_id(const bs_job_run_t *r);
const char *bs_job_kind(const bs_job_run_t *r);
const char *bs_job_tenant(const bs_job_run_t *r);
const char *bs_job_args(const bs_job_run_t *r); /* JSON object text */
int bs_job_attempt(const bs_job_run_t *r);      /* 1 on the first */
/* Records progress (written at most about once a second; the last value at the end). */
void bs_job_progress(bs_job_run_t *r, int64_t done, int64_t total);
/* 1 when the job was cancelled or its lease was lost: stop and end the attempt. */
int bs_job_cancelled(const bs_job_run_t *r);
/* Ends the attempt: completed, with an optional result (JSON text) and location (a URL or
 * path the result lives at). */
void bs_job_complete(bs_job_run_t *r, const char *result_json, const char *result_location);
/* Ends the attempt failed: retryable (1) → retried after retry_after_ms (0: the kind's
 * backoff) while attempts remain, else discarded; retryable 0 → discarded now. */
void bs_job_fail(bs_job_run_t *r, int retryable, int64_t retry_after_ms, const char *error);

typedef struct {
    uint64_t claimed, completed, failed, discarded, cancelled, lost_leases;
    int running;
    uint64_t rescued;    /* running jobs of a dead holder this process made retryable */
    uint64_t stale_ends; /* attempt ends ignored: the claim had been lost */
    uint64_t retention_deleted;
} bs_jobs_stats_t;
void bs_jobs_stats(bs_jobs_t *j, bs_jobs_stats_t *out);
/* basalt_jobs_* in Prometheus text format (per kind counters, running gauge). */
void bs_jobs_metrics(bs_jobs_t *j, bs_buf_t *b);

#endif
