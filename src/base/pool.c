/* Worker pool; see pool.h. One mutex and condition variable guard the queue. */
#include "base/pool.h"

#include <pthread.h>
#include <stdlib.h>

#include "base/rcu.h"

typedef struct job {
    struct job *next;
    void (*fn)(void *);
    void *arg;
} job_t;

struct bs_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job_t *head, *tail;
    int stop;
    int n;
    pthread_t tids[64];
};

static void *worker(void *arg)
{
    bs_pool_t *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        job_t *j = p->head;
        if (!j)
            break;
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        pthread_mutex_unlock(&p->mu);
        /* A job may read QSBR-protected snapshots: the worker is a reader while it
         * runs one and offline (never holding up reclamation) while it waits. */
        bs_rcu_register();
        j->fn(j->arg);
        bs_rcu_unregister();
        /* Retired objects are otherwise freed only when something else is retired: after a
         * burst of registry writes the last snapshots would wait for the next one. */
        bs_rcu_reclaim();
        free(j);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

bs_pool_t *bs_pool_new(int n, bs_err_t *err)
{
    if (n < 1)
        n = 1;
    if (n > 64)
        n = 64;
    bs_pool_t *p = calloc(1, sizeof *p);
    if (!p) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    for (; p->n < n; p->n++)
        if (pthread_create(&p->tids[p->n], NULL, worker, p) != 0) {
            bs_pool_free(p);
            bs_err_set(err, BS_EUNAVAIL, "cannot start worker threads");
            return NULL;
        }
    return p;
}

void bs_pool_free(bs_pool_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n; i++)
        pthread_join(p->tids[i], NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int bs_pool_submit(bs_pool_t *p, void (*fn)(void *arg), void *arg)
{
    job_t *j = malloc(sizeof *j);
    if (!j)
        return BS_ENOMEM;
    j->fn = fn;
    j->arg = arg;
    j->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->stop) {
        pthread_mutex_unlock(&p->mu);
        free(j);
        return BS_EUNAVAIL;
    }
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}
