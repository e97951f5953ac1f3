/*
 * Shadow runs (issue 10 "shadow"): a request an endpoint has answered is run again on a
 * shadow version, off the request path, and what came of it goes to the caller's done
 * callback (which records and logs it) — never to the client.
 *
 * A bounded queue in front of a few threads of the module's own: submit copies the job
 * description and returns at once; a job that does not fit (BS_SHADOW_MAX_JOBS queued, or
 * BS_SHADOW_MAX_BYTES of their payloads) is refused and counted as dropped. So a shadow
 * version that is slow or failing costs at most the threads and the queue's memory: the
 * request that asked for the run has already been answered, and later requests only see
 * their shadow runs dropped. The threads run at nice BS_SHADOW_NICE, so on busy cores the
 * shadows take a small share of the CPU instead of competing with the I/O threads.
 *
 * A run, on a shadow thread: resolves the version (bs_serving_peek; a version that is not
 * loaded is loaded there, on the shadow thread), calls parse to turn the request's body into
 * rows for that version's schema, predicts, and calls done with the rows, the outputs and
 * the run's time — or with the error of whichever step failed (h NULL when the version
 * could not be resolved). The thread is QSBR-registered for the run: done may read the
 * snapshots (endpoints, serving) and h is valid until done returns.
 *
 * Thread safety: submit and metrics from any thread; new/free from one thread.
 */
#ifndef BS_SERVING_SHADOW_H
#define BS_SERVING_SHADOW_H

#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/buf.h"
#include "base/err.h"
#include "serving/serving.h"

#define BS_SHADOW_THREADS 2
#define BS_SHADOW_NICE 10 /* the threads' nice value: callers' threads come first */
#define BS_SHADOW_MAX_JOBS 4096
#define BS_SHADOW_MAX_BYTES (64u << 20)

typedef struct bs_shadow bs_shadow_t;

/* Turns the job's payload into *n rows for h (arena-allocated in a; the arena lives for the
 * run). 0, or an error (err set). */
typedef int (*bs_shadow_parse_fn)(void *ud, bs_serving_t *s, const bs_model_handle_t *h,
                                  bs_arena_t *a, double **rows, size_t *n, bs_err_t *err);
/* The end of a run: err NULL and out holding n * n_outputs values, or err set (h NULL if
 * the version could not be resolved or loaded; rows NULL if parse failed). Everything is
 * borrowed for the call. duration_ns: parse and predict. */
typedef void (*bs_shadow_done_fn)(void *ud, bs_model_handle_t *h, const double *rows,
                                  const double *out, size_t n, uint64_t duration_ns,
                                  const bs_err_t *err);

typedef struct {
    const char *tenant; /* copied */
    const char *ref;    /* "model" or "model@alias" (copied) */
    int version;        /* > 0: that version of model ref */
    bs_shadow_parse_fn parse;
    bs_shadow_done_fn done;
    void (*free_ud)(void *ud); /* after done, or when a queued job is dropped at free */
    void *ud;
    size_t bytes; /* the payload's size, charged to the queue's byte budget */
} bs_shadow_job_t;

/* serving is borrowed and must outlive the runner. NULL with err on failure. */
bs_shadow_t *bs_shadow_new(bs_serving_t *serving, bs_err_t *err);
/* Lets the running jobs finish, drops the queued ones (free_ud, counted), joins the
 * threads, frees. NULL is a no-op. */
void bs_shadow_free(bs_shadow_t *s);

/* Queues job (the struct is copied; ud is the runner's from here on): 0. BS_EOVERLOAD when
 * the queue is full or the runner is stopping: counted as dropped, and ud stays the
 * caller's (free it). Never blocks. */
int bs_shadow_submit(bs_shadow_t *s, const bs_shadow_job_t *job, bs_err_t *err);

/* Prometheus text: basalt_shadow_queue_jobs, basalt_shadow_queue_bytes (gauges),
 * basalt_shadow_runs_total, basalt_shadow_dropped_total (counters). */
void bs_shadow_metrics(bs_shadow_t *s, bs_buf_t *b);

#endif
