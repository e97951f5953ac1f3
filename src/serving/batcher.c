/*
 * Dynamic batching (Triton's dynamic batcher): requests for a model version
 * whose runtime gains from batches (MLP) queue here; one batcher thread per
 * such version waits until max_batch_size rows are queued or the oldest
 * request has waited max_queue_delay_us, runs the model once over the
 * concatenated rows and completes each request with its slice.
 *
 * Locking: the queue is guarded by the batcher's mutex; the model runs with
 * no lock held. Each job holds its own handle reference, so an evicted
 * version finishes its queued work.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/time.h"
#include "serving/serving_int.h"

#define MAX_QUEUED_ROWS 100000

typedef struct job {
    struct job *next;
    bs_model_handle_t *h;
    double *rows;
    size_t n;
    bs_serving_done_fn done;
    void *ud;
} job_t;

struct bs__batcher {
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job_t *head, *tail;
    size_t queued_rows;
    uint64_t oldest_ns;
    int stop;
    int max_batch;
    uint32_t delay_us;
};

static void finish_jobs(job_t *jobs, size_t nf, size_t k)
{
    /* Run the model once over every job's rows; on a shared failure, fail each. */
    size_t total = 0;
    for (job_t *j = jobs; j; j = j->next)
        total += j->n;
    double *rows = malloc((total * nf + 1) * sizeof(double));
    double *out = malloc((total * k + 1) * sizeof(double));
    bs_err_t err;
    bs_err_clear(&err);
    int rc = rows && out ? 0 : bs_err_set(&err, BS_ENOMEM, "out of memory for a batch of %zu rows", total);
    if (!rc) {
        size_t off = 0;
        for (job_t *j = jobs; j; j = j->next) {
            memcpy(rows + off * nf, j->rows, j->n * nf * sizeof(double));
            off += j->n;
        }
        rc = bs_serving_predict(jobs->h, rows, total, out, &err);
    }
    size_t off = 0;
    while (jobs) {
        job_t *next = jobs->next;
        if (rc) {
            /* One bad row fails the whole batch: retry each job alone so only its owner sees it. */
            bs_err_t e1;
            bs_err_clear(&e1);
            double *o1 = malloc((jobs->n * k + 1) * sizeof(double));
            int r1 = o1 ? bs_serving_predict(jobs->h, jobs->rows, jobs->n, o1, &e1)
                        : bs_err_set(&e1, BS_ENOMEM, "out of memory");
            jobs->done(jobs->ud, jobs->h, r1 ? NULL : o1, jobs->n, r1 ? &e1 : NULL);
            free(o1);
        } else {
            jobs->done(jobs->ud, jobs->h, out + off * k, jobs->n, NULL);
        }
        off += jobs->n;
        bs_serving_release(jobs->h);
        free(jobs->rows);
        free(jobs);
        jobs = next;
    }
    free(rows);
    free(out);
}

static void *batcher_main(void *arg)
{
    bs__batcher_t *b = arg;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->head && !b->stop)
            pthread_cond_wait(&b->cv, &b->mu);
        if (!b->head && b->stop)
            break;
        /* Wait for a full batch or the oldest request's deadline. */
        uint64_t deadline = b->oldest_ns + (uint64_t)b->delay_us * 1000u;
        while (!b->stop && b->queued_rows < (size_t)b->max_batch && bs_time_mono_ns() < deadline) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t left = deadline - bs_time_mono_ns();
            if (left > deadline)
                break;
            ts.tv_sec += (time_t)(left / 1000000000u);
            ts.tv_nsec += (long)(left % 1000000000u);
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&b->cv, &b->mu, &ts);
        }
        /* Take whole jobs up to max_batch rows (always at least one). */
        job_t *take = b->head, *last = b->head;
        size_t rows = last->n;
        while (last->next && rows + last->next->n <= (size_t)b->max_batch && last->next->h == take->h) {
            last = last->next;
            rows += last->n;
        }
        b->head = last->next;
        if (!b->head)
            b->tail = NULL;
        last->next = NULL;
        b->queued_rows -= rows;
        b->oldest_ns = bs_time_mono_ns();
        pthread_mutex_unlock(&b->mu);
        bs__slot_t *slot = take->h->slot;
        if (slot) {
            atomic_fetch_add_explicit(&slot->batches, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&slot->batched_rows, rows, memory_order_relaxed);
        }
        finish_jobs(take, (size_t)take->h->sig.n_features, (size_t)take->h->sig.n_outputs);
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

bs__batcher_t *bs__batcher_new(int max_batch, uint32_t delay_us)
{
    bs__batcher_t *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->max_batch = max_batch;
    b->delay_us = delay_us;
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&b->tid, NULL, batcher_main, b) != 0) {
        pthread_cond_destroy(&b->cv);
        pthread_mutex_destroy(&b->mu);
        free(b);
        return NULL;
    }
    return b;
}

void bs__batcher_configure(bs__batcher_t *b, int max_batch, uint32_t delay_us)
{
    pthread_mutex_lock(&b->mu);
    b->max_batch = max_batch;
    b->delay_us = delay_us;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* Drains the queue (completing every job) and stops the thread. */
void bs__batcher_free(bs__batcher_t *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    b->stop = 1;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->tid, NULL);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

int bs__batcher_submit(bs__batcher_t *b, bs_model_handle_t *h, const double *rows, size_t n,
                       bs_serving_done_fn done, void *ud, bs_err_t *err)
{
    size_t nf = (size_t)h->sig.n_features;
    job_t *j = calloc(1, sizeof *j);
    double *copy = malloc((n * nf + 1) * sizeof(double));
    if (!j || !copy) {
        free(j);
        free(copy);
        return bs_err_set(err, BS_ENOMEM, "out of memory queueing %zu rows", n);
    }
    memcpy(copy, rows, n * nf * sizeof(double));
    j->rows = copy;
    j->n = n;
    j->done = done;
    j->ud = ud;
    j->h = h;
    pthread_mutex_lock(&b->mu);
    if (b->queued_rows + n > MAX_QUEUED_ROWS) {
        pthread_mutex_unlock(&b->mu);
        free(copy);
        free(j);
        return bs_err_set(err, BS_EUNAVAIL, "the batch queue for this model is full (%d rows); retry",
                          MAX_QUEUED_ROWS);
    }
    atomic_fetch_add(&h->refs, 1);
    if (!b->head)
        b->oldest_ns = bs_time_mono_ns();
    if (b->tail)
        b->tail->next = j;
    else
        b->head = j;
    b->tail = j;
    b->queued_rows += n;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return 0;
}
