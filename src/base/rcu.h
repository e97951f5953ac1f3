/*
 * Quiescent-state-based reclamation (QSBR) for snapshots read without locks.
 *
 * Readers (I/O and worker threads) register once, then announce a quiescent
 * state between units of work (an event-loop iteration, a job) — a point
 * where they hold no snapshot pointer. A writer publishes a new snapshot with
 * an atomic pointer store and retires the old one; it is freed once every
 * thread that was online at retirement has passed a quiescent state or gone
 * offline. Readers pay one relaxed store per loop iteration.
 */
#ifndef BS_BASE_RCU_H
#define BS_BASE_RCU_H

/* Registers the calling thread as a reader. Returns 0 or BS_EUNAVAIL (too many threads). */
int bs_rcu_register(void);
void bs_rcu_unregister(void);
/* The calling thread holds no snapshot pointer right now. */
void bs_rcu_quiescent(void);
/* Defers free_fn(p) until no reader can still see p. Thread-safe. */
void bs_rcu_retire(void *p, void (*free_fn)(void *));
/* Frees what can be freed now; called periodically (and by retire). */
void bs_rcu_reclaim(void);
/* Frees everything retired; only when no reader runs (shutdown). */
void bs_rcu_drain(void);

#endif
