/*
 * A small fixed pool of worker threads with a FIFO job queue, for work that must
 * not run on an I/O thread (model uploads, loads, registry writes). Jobs run in
 * submission order on whichever worker is free. Thread-safe.
 */
#ifndef BS_BASE_POOL_H
#define BS_BASE_POOL_H

#include "base/err.h"

typedef struct bs_pool bs_pool_t;

/* Starts n workers (1..64). NULL with err on failure. */
bs_pool_t *bs_pool_new(int n, bs_err_t *err);
/* Runs every queued job, then stops and joins the workers. NULL is a no-op. */
void bs_pool_free(bs_pool_t *p);
/* Queues fn(arg). 0, or BS_ENOMEM / BS_EUNAVAIL (the pool is stopping). */
int bs_pool_submit(bs_pool_t *p, void (*fn)(void *arg), void *arg);

#endif
