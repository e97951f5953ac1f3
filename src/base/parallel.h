/*
 * Data parallelism for one large computation (a batch of rows through a tree
 * ensemble): bs_parallel_for splits it into n independent parts and runs them on
 * the calling thread plus a few helper threads (one per other online CPU, at
 * most 7, started on first use). The call returns when every part is done.
 *
 * One computation at a time uses the helpers; a caller that finds them busy
 * (another thread's batch) runs all its parts itself, so callers never wait on
 * each other and the cores are not oversubscribed. Thread-safe.
 */
#ifndef BS_BASE_PARALLEL_H
#define BS_BASE_PARALLEL_H

/* Runs fn(ctx, i) for every i in [0, n), each exactly once, possibly concurrently. */
void bs_parallel_for(int n, void (*fn)(void *ctx, int i), void *ctx);

/* Threads that can run parts of one computation: 1 + the helpers (1 on a single CPU),
 * at most the limit below. */
int bs_parallel_width(void);
/* Caps the threads of one computation (0 = one per online CPU, up to 8; 1 = the caller
 * alone); takes effect from the next computation (the setting predict_threads). */
void bs_parallel_set_max(int threads);

#endif
