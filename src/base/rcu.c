/* QSBR; see rcu.h. Slots are a fixed array; the retired list is guarded by a mutex. */
#include "base/rcu.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "base/err.h"

#define MAX_READERS 256

typedef struct retired {
    struct retired *next;
    void *p;
    void (*free_fn)(void *);
    uint64_t seen[MAX_READERS]; /* qs counter at retirement; 0 = slot offline then */
} retired_t;

static struct {
    _Atomic uint64_t qs[MAX_READERS]; /* 0: offline; odd/even irrelevant, changes mean progress */
    _Atomic int used[MAX_READERS];
    /* A slot's counter when it went offline: the next reader of the slot continues from
     * it, so registering counts as progress. (Restarting at 1 made a retirement seen
     * while one pool worker was online wait until a moment with no worker in that slot:
     * under steady registry writes retired snapshots piled up unreclaimed.) Owned by
     * whoever holds the slot. */
    uint64_t last[MAX_READERS];
    pthread_mutex_t lock;
    retired_t *retired;
} rcu = {.lock = PTHREAD_MUTEX_INITIALIZER};

static _Thread_local int my_slot = -1;

int bs_rcu_register(void)
{
    if (my_slot >= 0)
        return 0;
    for (int i = 0; i < MAX_READERS; i++) {
        int expected = 0;
        if (atomic_compare_exchange_strong(&rcu.used[i], &expected, 1)) {
            uint64_t v = rcu.last[i] + 1;
            atomic_store(&rcu.qs[i], v ? v : 1);
            my_slot = i;
            return 0;
        }
    }
    return BS_EUNAVAIL;
}

void bs_rcu_unregister(void)
{
    if (my_slot < 0)
        return;
    rcu.last[my_slot] = atomic_load(&rcu.qs[my_slot]);
    atomic_store(&rcu.qs[my_slot], 0);
    atomic_store(&rcu.used[my_slot], 0);
    my_slot = -1;
}

void bs_rcu_quiescent(void)
{
    if (my_slot >= 0) {
        uint64_t v = atomic_load_explicit(&rcu.qs[my_slot], memory_order_relaxed) + 1;
        if (v == 0)
            v = 1;
        atomic_store_explicit(&rcu.qs[my_slot], v, memory_order_release);
    }
}

static int safe(const retired_t *r)
{
    for (int i = 0; i < MAX_READERS; i++) {
        if (!r->seen[i])
            continue;
        uint64_t now = atomic_load_explicit(&rcu.qs[i], memory_order_acquire);
        if (now == r->seen[i])
            return 0;
    }
    return 1;
}

void bs_rcu_reclaim(void)
{
    retired_t *done = NULL;
    pthread_mutex_lock(&rcu.lock);
    retired_t **pp = &rcu.retired;
    while (*pp) {
        retired_t *r = *pp;
        if (safe(r)) {
            *pp = r->next;
            r->next = done;
            done = r;
        } else {
            pp = &r->next;
        }
    }
    pthread_mutex_unlock(&rcu.lock);
    while (done) {
        retired_t *n = done->next;
        done->free_fn(done->p);
        free(done);
        done = n;
    }
}

void bs_rcu_retire(void *p, void (*free_fn)(void *))
{
    if (!p)
        return;
    retired_t *r = calloc(1, sizeof *r);
    if (!r)
        abort(); /* cannot defer safely; this is a few KiB */
    r->p = p;
    r->free_fn = free_fn;
    atomic_thread_fence(memory_order_seq_cst);
    for (int i = 0; i < MAX_READERS; i++)
        if (i != my_slot)
            r->seen[i] = atomic_load_explicit(&rcu.qs[i], memory_order_acquire);
    pthread_mutex_lock(&rcu.lock);
    r->next = rcu.retired;
    rcu.retired = r;
    pthread_mutex_unlock(&rcu.lock);
    bs_rcu_reclaim();
}

void bs_rcu_drain(void)
{
    pthread_mutex_lock(&rcu.lock);
    retired_t *r = rcu.retired;
    rcu.retired = NULL;
    pthread_mutex_unlock(&rcu.lock);
    while (r) {
        retired_t *n = r->next;
        r->free_fn(r->p);
        free(r);
        r = n;
    }
}
