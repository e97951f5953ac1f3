/*
 * Change propagation between replicas.
 *
 * State that the hot path serves from an in-process snapshot (API keys, the
 * routing table) lives in the shared metadata store. A writer bumps the change
 * generation of the snapshot's scope ("auth", "registry") inside its transaction
 * (bs_changes_bump: a row of `generations`, plus a NOTIFY on channel
 * `basalt_changes` that PostgreSQL delivers at commit). Every replica runs one
 * watcher (bs_changes_t): a thread that waits for notifications (bs_meta_listen,
 * which returns at once when the watcher is stopped) and at least every poll_ms
 * reads the generations, so a lost notification — or SQLite, which has none —
 * costs at most one poll interval. For each scope whose generation moved past the
 * one this process has seen, it calls the scope's subscriber (a snapshot rebuild);
 * a rebuild that fails leaves the generation unseen, so the next poll retries it,
 * and the subscriber keeps serving its previous snapshot meanwhile.
 *
 * A replica's own writes rebuild synchronously before they answer (read your
 * writes) through bs_changes_refresh, which reads the scope's generation first and
 * marks it seen once the rebuild succeeded: the watcher does not rebuild again for
 * the replica's own bump (unless its poll falls between the commit and that read).
 *
 * The watcher also keeps what /readyz, /v1/info and /metrics report: whether its
 * last poll reached the store, and the snapshot's generation and age.
 *
 * Thread safety: bump runs on the writer's thread inside its transaction; the other
 * functions may be called from any thread once the watcher exists (subscribe only
 * before bs_changes_start).
 */
#ifndef BS_STORE_CHANGES_H
#define BS_STORE_CHANGES_H

#include <stdint.h>

#include "base/err.h"
#include "store/meta.h"

/* The notification channel every replica listens on; the payload is the scope. */
#define BS_CHANGES_CHANNEL "basalt_changes"

/* Increments scope's generation (creating it at 1) and notifies the channel. Call it
 * inside the writing transaction, so the bump commits or rolls back with the change.
 * 0, or the store's error. */
int bs_changes_bump(bs_meta_t *m, const char *scope, bs_err_t *err);

/* Rebuilds one scope's snapshot: 0, or a negative BS_E* with err set (the previous
 * snapshot stays in service). Called on the watcher thread or a writer's thread. */
typedef int (*bs_changes_fn)(void *ud, bs_err_t *err);

typedef struct bs_changes bs_changes_t;

/* Creates a watcher on m (borrowed) polling every poll_ms (>= 1). It reads the
 * current generations at once and takes them as seen: create it before building the
 * snapshots it keeps fresh, so a change committed in between is rebuilt at the first
 * poll. NULL with err set when the store cannot be read. */
bs_changes_t *bs_changes_new(bs_meta_t *m, int poll_ms, bs_err_t *err);
/* Registers fn(ud) for scope (copied; up to 8 scopes). Before bs_changes_start only. */
int bs_changes_subscribe(bs_changes_t *c, const char *scope, bs_changes_fn fn, void *ud,
                         bs_err_t *err);
/* Starts the watcher thread. 0 or BS_EUNAVAIL. */
int bs_changes_start(bs_changes_t *c, bs_err_t *err);
/* Stops the watcher (promptly: it does not wait out a poll interval) and frees c.
 * NULL is a no-op. */
void bs_changes_free(bs_changes_t *c);

/* A writer's synchronous rebuild after its commit: reads scope's generation, runs its
 * subscriber on the calling thread, and on success marks that generation seen.
 * Returns the subscriber's result. */
int bs_changes_refresh(bs_changes_t *c, const char *scope, bs_err_t *err);
/* One poll now, on the calling thread (what the watcher does every poll_ms). 0, or
 * the store's error (the watcher then reports the store unreachable). */
int bs_changes_poll(bs_changes_t *c, bs_err_t *err);

typedef struct {
    int64_t generation;   /* sum over subscribed scopes of the generation the snapshots reflect */
    int64_t age_ms;       /* since the snapshots were last known current; -1 never */
    int reachable;        /* 1 if the last poll reached the store */
    uint64_t polls;       /* polls that reached the store */
    uint64_t poll_errors; /* polls that did not */
    uint64_t rebuilds;    /* subscriber calls the watcher made (not the writers') */
    uint64_t rebuild_errors;
    uint64_t notifications; /* received from the store */
} bs_changes_stats_t;
void bs_changes_stats(bs_changes_t *c, bs_changes_stats_t *out);
/* The generation of scope this process has seen (its snapshot reflects), or -1. */
int64_t bs_changes_seen(bs_changes_t *c, const char *scope);

#endif
