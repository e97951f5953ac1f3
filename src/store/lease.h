/*
 * Leases: exactly one replica runs a background singleton (artifact collector,
 * later the rollout controller, scheduler, alert evaluator), and work items are
 * claimed by one worker at a time — with takeover when the holder dies.
 *
 * A lease is a row of `leases` (name, owner, expires_at, token). Acquiring
 * succeeds when the row is absent, expired, or already the caller's; every
 * successful acquire increments `token`, the fencing token: work done under a
 * lease can carry it, and a write that checks `token = ?` is refused once another
 * holder took over. Rows are never deleted (release only expires them), so the
 * token only grows.
 *
 * One clock: expiry is computed and compared by the database in the statement
 * itself (PostgreSQL's clock_timestamp(); on SQLite the host's clock, which every
 * process sharing the file reads). A holder also keeps a local deadline on its
 * monotonic clock, started before it sent the statement, so it stops believing it
 * holds the lease no later than the database expires it — assuming only that the
 * clocks run at the same rate, not that they agree.
 *
 * Thread safety: all functions may be called from any thread.
 */
#ifndef BS_STORE_LEASE_H
#define BS_STORE_LEASE_H

#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "store/meta.h"

typedef struct {
    int64_t token;      /* fencing token of this holding */
    int64_t expires_at; /* database clock, ms since the epoch */
} bs_lease_t;

/* Takes lease name for owner for ttl_ms (> 0). 0 with out filled; BS_ECONFLICT when
 * another owner holds it unexpired; the store's error otherwise. */
int bs_lease_acquire(bs_meta_t *m, const char *name, const char *owner, int64_t ttl_ms,
                     bs_lease_t *out, bs_err_t *err);
/* Extends the holding (owner, token) by ttl_ms from now. 0 with out->expires_at
 * updated; BS_ECONFLICT when it is no longer held (expired or taken over). */
int bs_lease_renew(bs_meta_t *m, const char *name, const char *owner, int64_t token, int64_t ttl_ms,
                   bs_lease_t *out, bs_err_t *err);
/* Gives the holding up at once (the row stays, expired, keeping its token). 0 also
 * when it was no longer held. */
int bs_lease_release(bs_meta_t *m, const char *name, const char *owner, int64_t token,
                     bs_err_t *err);

/* ---- the singleton runner ---------------------------------------------------------------
 * A thread that tries to acquire the lease every ttl/3 and, while it holds it, renews
 * it every ttl/3 (two renewals may fail before it would expire), and a task thread
 * that calls task every period_ms while the lease is held. A renewal that fails, or
 * the local deadline passing, ends the holding at once: the task is not called again
 * until the lease is acquired again (with a new token), and a task in progress sees
 * bs_lease_runner_held() turn 0 and should return. Stopping ends the task (it waits
 * for a call in progress), then releases the lease so another replica takes over at
 * once. */
typedef struct bs_lease_runner bs_lease_runner_t;
/* Called on the runner's task thread while the lease is held; token is the holding's
 * fencing token. */
typedef void (*bs_lease_task_fn)(void *ud, bs_lease_runner_t *run, int64_t token);

typedef struct {
    const char *name;  /* copied, up to 63 bytes */
    const char *owner; /* copied, up to 127 bytes: the replica id */
    int64_t ttl_ms;    /* >= 30 */
    int64_t period_ms; /* between task calls, >= 1; the first comes one period after
                          the lease is acquired */
    bs_lease_task_fn task;
    void *ud;
} bs_lease_runner_opts_t;

/* Starts a runner on m (borrowed; must outlive it). NULL with err set. */
bs_lease_runner_t *bs_lease_runner_start(bs_meta_t *m, const bs_lease_runner_opts_t *o,
                                         bs_err_t *err);
/* Stops the task, releases the lease if held, frees r. NULL is a no-op. */
void bs_lease_runner_stop(bs_lease_runner_t *r);
/* 1 while r holds its lease (and is not stopping). */
int bs_lease_runner_held(bs_lease_runner_t *r);

typedef struct {
    uint64_t attempts;     /* acquire attempts that did not find it held by r */
    uint64_t acquisitions; /* of them, successful */
    uint64_t renewals, losses, task_runs;
    int64_t token; /* of the current or last holding, 0 if none */
    int held;
} bs_lease_runner_stats_t;
void bs_lease_runner_stats(bs_lease_runner_t *r, bs_lease_runner_stats_t *out);

/* Appends basalt_lease_held{name=…} (1 held / 0 not) for every running runner of this
 * process, in Prometheus text format. */
void bs_lease_metrics(bs_buf_t *b);

/* ---- claiming work items with a lease ----------------------------------------------------
 * Table convention (the jobs issue follows it): a work table has a text or integer key
 * column and (types as a migration writes them; the PostgreSQL backend maps INTEGER to
 * BIGINT there — spell BIGINT out in SQL that is not a migration)
 *     lease_owner      TEXT              -- who holds the item ('' or NULL: nobody)
 *     lease_expires_at INTEGER NOT NULL DEFAULT 0   -- database clock, ms since the epoch
 *     lease_token      INTEGER NOT NULL DEFAULT 0   -- incremented by every claim
 * plus an index on (its availability columns, lease_expires_at). An item is claimable
 * when the caller's condition holds and lease_expires_at <= now: a claim whose holder
 * died expires and is claimed again, with a higher token. The holder extends its claim
 * with a heartbeat (UPDATE … SET lease_expires_at = <now> + ttl WHERE key = ? AND
 * lease_owner = ? AND lease_token = ?) and finishes with an update guarded the same way,
 * so a holder that lost its claim changes nothing.
 *
 * BS_LEASE_CLAIM_SQL builds both dialects' statement from string literals (the store
 * caches statements by the SQL text's address, so it must be static): cond is an SQL
 * predicate with its own ? placeholders (trusted text, never user input), returning the
 * RETURNING column list. */
#define BS__LEASE_NOW_SQLITE "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
#define BS__LEASE_NOW_PG "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
#define BS__LEASE_CLAIM_TEXT(table, key, set, cond, order, returning, now, lock)                   \
    "UPDATE " table " SET " set "lease_owner = ?, lease_expires_at = " now " + ?,"                 \
    " lease_token = lease_token + 1 WHERE " key " IN (SELECT " key " FROM " table " WHERE (" cond  \
    ") AND lease_expires_at <= " now " ORDER BY " order " LIMIT ?" lock ") RETURNING " returning
#define BS__LEASE_CLAIM(table, key, cond, returning, now, lock)                                    \
    BS__LEASE_CLAIM_TEXT(table, key, "", cond, key, returning, now, lock)
#define BS_LEASE_CLAIM_SQL(table, key, cond, returning)                                            \
    {                                                                                              \
        BS__LEASE_CLAIM(table, key, cond, returning, BS__LEASE_NOW_SQLITE, ""),                    \
            BS__LEASE_CLAIM(table, key, cond, returning, BS__LEASE_NOW_PG,                         \
                            " FOR UPDATE SKIP LOCKED")                                             \
    }

/* The same with what the claim changes besides the lease and the order it claims in:
 * SET(now) and COND(now) are function-like macros given the dialect's now expression (so
 * they can compare with or write the database's clock); SET's text is assignments, each
 * followed by ", ", without placeholders; ORDER is an ORDER BY list (an index should
 * serve it with COND's equalities). The jobs table claims this way: state, attempt and
 * attempted_at change with the claim, in priority order. */
#define BS__LEASE_CLAIM_EX(table, key, set, cond, order, returning, now, lock)                     \
    BS__LEASE_CLAIM_TEXT(table, key, set(now), cond(now), order, returning, now, lock)
#define BS_LEASE_CLAIM_SQL_EX(table, key, set, cond, order, returning)                             \
    {                                                                                              \
        BS__LEASE_CLAIM_EX(table, key, set, cond, order, returning, BS__LEASE_NOW_SQLITE, ""),     \
            BS__LEASE_CLAIM_EX(table, key, set, cond, order, returning, BS__LEASE_NOW_PG,          \
                               " FOR UPDATE SKIP LOCKED")                                          \
    }

typedef struct {
    const char *sqlite;
    const char *pg;
} bs_lease_claim_sql_t;

/* Claims up to limit items (1..10000) of the work table for owner for ttl_ms: binds
 * owner, ttl_ms, cond's args (nargs of them), limit; calls cb per claimed row (the
 * RETURNING columns). PostgreSQL: one statement with FOR UPDATE SKIP LOCKED, so
 * concurrent claimers skip each other's rows instead of waiting; SQLite: the statement
 * in a write transaction. Returns the number claimed, or a negative error. */
int bs_lease_claim(bs_meta_t *m, const bs_lease_claim_sql_t *sql, const char *owner, int64_t ttl_ms,
                   const bs_val_t *args, int nargs, int limit, bs_meta_row_cb cb, void *ud,
                   bs_err_t *err);

#endif
