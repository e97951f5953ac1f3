/*
 * The shadow runner; see shadow.h. One mutex guards the FIFO queue and its budget; the
 * threads take one job at a time and run it with no lock held, and go on while the queue
 * has jobs. Wake-ups are rationed (a futex wake per job costs the submitting I/O thread
 * more than the copy): a thread that finds the queue empty first naps SHADOW_NAP_NS, and
 * a submit wakes it only when SHADOW_WAKE_JOBS are waiting; one that finds it empty after
 * its nap sleeps until woken, which the next submit does (one signal at a time:
 * wake_pending). So under load a thread wakes at most every nap and runs a batch, and an
 * idle runner does not poll.
 * Counters are atomics read by /metrics.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/rcu.h"
#include "base/time.h"

#define SHADOW_NAP_NS 1000000 /* 1 ms */
#define SHADOW_WAKE_JOBS 32
#include "serving/shadow.h"

typedef struct job {
    struct job *next;
    bs_shadow_job_t j;
    char tenant[64];
    char ref[200];
} job_t;

struct bs_shadow {
    bs_serving_t *serving;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job_t *head, *tail;
    size_t n_jobs, n_bytes;
    int stop;
    int n_napping, n_sleeping; /* threads in a timed nap, in an untimed wait */
    int wake_pending;          /* signalled, not yet woken */
    int n_threads;
    pthread_t threads[BS_SHADOW_THREADS];
    _Atomic uint64_t runs, dropped;
};

static void run(bs_shadow_t *s, job_t *jb)
{
    bs_shadow_job_t *j = &jb->j;
    bs_err_t err;
    bs_err_clear(&err);
    /* Registered for the run only: an idle thread must not hold back reclamation. */
    if (bs_rcu_register() != 0) {
        bs_err_set(&err, BS_EUNAVAIL, "no snapshot reader slot is free for a shadow run");
        j->done(j->ud, NULL, NULL, NULL, 0, 0, &err);
        atomic_fetch_add_explicit(&s->runs, 1, memory_order_relaxed);
        return;
    }
    uint64_t t0 = bs_time_mono_ns();
    bs_model_handle_t *h = bs_serving_peek(s->serving, jb->tenant, jb->ref, j->version, NULL, &err);
    if (!h) {
        j->done(j->ud, NULL, NULL, NULL, 0, bs_time_mono_ns() - t0, &err);
    } else {
        bs_arena_t a;
        bs_arena_init(&a, 4096);
        t0 = bs_time_mono_ns();
        double *rows = NULL, *out = NULL;
        size_t n = 0;
        int rc = j->parse(j->ud, s->serving, h, &a, &rows, &n, &err);
        if (!rc) {
            size_t k = (size_t)bs_model_handle_schema(h)->n_outputs;
            out = bs_arena_calloc(&a, n * k + 1, sizeof(double));
            rc = out ? bs_serving_predict(h, rows, n, out, &err)
                     : bs_err_set(&err, BS_ENOMEM, "out of memory for %zu rows", n);
        }
        uint64_t ns = bs_time_mono_ns() - t0;
        j->done(j->ud, h, rc && !rows ? NULL : rows, rc ? NULL : out, n, ns, rc ? &err : NULL);
        bs_arena_deinit(&a);
    }
    bs_rcu_unregister();
    atomic_fetch_add_explicit(&s->runs, 1, memory_order_relaxed);
}

static void *worker(void *arg)
{
    bs_shadow_t *s = arg;
    /* Below the I/O threads: when the cores are busy, a shadow (mirrored work nobody waits
     * for) gets a small share of them (nice 10 weighs about a tenth of nice 0 in Linux's
     * scheduler) and its queue fills and drops, rather than slow the callers. */
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), BS_SHADOW_NICE) != 0)
        BS_LOG(BS_LOG_DEBUG, "shadow", "could not lower the shadow thread's priority");
    pthread_mutex_lock(&s->mu);
    int napped = 0;
    for (;;) {
        if (s->stop)
            break;
        if (!s->head) {
            if (!napped) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                ts.tv_nsec += SHADOW_NAP_NS;
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                s->n_napping++;
                pthread_cond_timedwait(&s->cv, &s->mu, &ts);
                s->n_napping--;
                napped = 1;
            } else {
                s->n_sleeping++;
                pthread_cond_wait(&s->cv, &s->mu);
                s->n_sleeping--;
                napped = 0;
            }
            s->wake_pending = 0;
            continue;
        }
        napped = 0;
        job_t *jb = s->head;
        s->head = jb->next;
        if (!s->head)
            s->tail = NULL;
        s->n_jobs--;
        s->n_bytes -= jb->j.bytes;
        pthread_mutex_unlock(&s->mu);
        run(s, jb);
        if (jb->j.free_ud)
            jb->j.free_ud(jb->j.ud);
        free(jb);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

bs_shadow_t *bs_shadow_new(bs_serving_t *serving, bs_err_t *err)
{
    bs_shadow_t *s = calloc(1, sizeof *s);
    if (!s) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    s->serving = serving;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the nap's deadline */
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    for (int i = 0; i < BS_SHADOW_THREADS; i++) {
        if (pthread_create(&s->threads[i], NULL, worker, s) != 0) {
            bs_err_set(err, BS_ENOMEM, "cannot start shadow thread %d", i);
            bs_shadow_free(s);
            return NULL;
        }
        s->n_threads++;
    }
    return s;
}

void bs_shadow_free(bs_shadow_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    job_t *left = s->head;
    s->head = s->tail = NULL;
    s->n_jobs = s->n_bytes = 0;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_threads; i++)
        pthread_join(s->threads[i], NULL);
    while (left) {
        job_t *next = left->next;
        if (left->j.free_ud)
            left->j.free_ud(left->j.ud);
        free(left);
        atomic_fetch_add(&s->dropped, 1);
        left = next;
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* snprintf(out, n, "%s", in) without the formatter. */
static void copy_name(char *out, size_t n, const char *in)
{
    size_t l = strnlen(in, n - 1);
    memcpy(out, in, l);
    out[l] = 0;
}

int bs_shadow_submit(bs_shadow_t *s, const bs_shadow_job_t *job, bs_err_t *err)
{
    job_t *jb = malloc(sizeof *jb);
    if (!jb) {
        atomic_fetch_add_explicit(&s->dropped, 1, memory_order_relaxed);
        return bs_err_set(err, BS_EOVERLOAD, "out of memory for a shadow run");
    }
    jb->next = NULL;
    jb->j = *job;
    copy_name(jb->tenant, sizeof jb->tenant, job->tenant);
    copy_name(jb->ref, sizeof jb->ref, job->ref);
    pthread_mutex_lock(&s->mu);
    if (s->stop || s->n_jobs >= BS_SHADOW_MAX_JOBS ||
        (s->n_jobs && s->n_bytes + job->bytes > BS_SHADOW_MAX_BYTES)) {
        size_t queued = s->n_jobs;
        int stopping = s->stop;
        pthread_mutex_unlock(&s->mu);
        free(jb);
        atomic_fetch_add_explicit(&s->dropped, 1, memory_order_relaxed);
        if (stopping)
            return bs_err_set(err, BS_EOVERLOAD, "the shadow runner is stopping");
        return bs_err_set(err, BS_EOVERLOAD,
                          "the shadow queue is full (%zu runs waiting); this run is dropped",
                          queued);
    }
    if (s->tail)
        s->tail->next = jb;
    else
        s->head = jb;
    s->tail = jb;
    s->n_jobs++;
    s->n_bytes += job->bytes;
    int wake = !s->wake_pending &&
               (s->n_sleeping > 0 || (s->n_napping > 0 && s->n_jobs >= SHADOW_WAKE_JOBS));
    if (wake)
        s->wake_pending = 1;
    pthread_mutex_unlock(&s->mu);
    if (wake)
        pthread_cond_signal(&s->cv);
    return 0;
}

void bs_shadow_metrics(bs_shadow_t *s, bs_buf_t *b)
{
    pthread_mutex_lock(&s->mu);
    size_t jobs = s->n_jobs, bytes = s->n_bytes;
    pthread_mutex_unlock(&s->mu);
    bs_buf_printf(
        b,
        "# HELP basalt_shadow_queue_jobs Shadow runs waiting for a shadow thread.\n"
        "# TYPE basalt_shadow_queue_jobs gauge\n"
        "basalt_shadow_queue_jobs %zu\n"
        "# HELP basalt_shadow_queue_bytes Request bytes held by the waiting shadow runs.\n"
        "# TYPE basalt_shadow_queue_bytes gauge\n"
        "basalt_shadow_queue_bytes %zu\n"
        "# HELP basalt_shadow_runs_total Shadow runs finished (successful or not).\n"
        "# TYPE basalt_shadow_runs_total counter\n"
        "basalt_shadow_runs_total %llu\n"
        "# HELP basalt_shadow_dropped_total Shadow runs dropped because the queue was "
        "full (the shadow versions are slower than the traffic they mirror).\n"
        "# TYPE basalt_shadow_dropped_total counter\n"
        "basalt_shadow_dropped_total %llu\n",
        jobs, bytes, (unsigned long long)atomic_load(&s->runs),
        (unsigned long long)atomic_load(&s->dropped));
}
