/*
 * Leases, the singleton runner and work-item claims (see lease.h).
 *
 * Every statement judges time by the database's clock (one expression per dialect,
 * chosen with bs_meta_dialect), so two replicas whose clocks disagree still agree
 * on who holds a lease. Statements are string literals, one pair per dialect: the
 * store caches prepared statements by the SQL text's address.
 *
 * The runner has two threads so that a long task never delays a renewal: `tid`
 * acquires and renews (and is the only writer of `held`), `task_tid` calls the task
 * while `held` is set. `mu` guards the runner's state; neither thread holds it across
 * SQL or the task.
 */
#include "store/lease.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/time.h"

#define NOW_S BS__LEASE_NOW_SQLITE
#define NOW_P BS__LEASE_NOW_PG

/* Acquire: insert, or take over an expired row or one that is already the caller's; the
 * token grows on every takeover. RETURNING yields no row when the lease is held by
 * another (the DO UPDATE's WHERE was false). */
#define ACQUIRE(now)                                                                               \
    "INSERT INTO leases (name, owner, expires_at, token, acquired_at, renewed_at)"                 \
    " VALUES (?, ?, " now " + ?, 1, " now ", " now ")"                                             \
    " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at,"  \
    " token = leases.token + 1, acquired_at = excluded.acquired_at,"                               \
    " renewed_at = excluded.renewed_at"                                                            \
    " WHERE leases.expires_at <= excluded.acquired_at OR leases.owner = excluded.owner"            \
    " RETURNING token, expires_at"
#define RENEW(now)                                                                                 \
    "UPDATE leases SET expires_at = " now " + ?, renewed_at = " now                                \
    " WHERE name = ? AND owner = ? AND token = ? AND expires_at > " now " RETURNING expires_at"
#define RELEASE "UPDATE leases SET expires_at = 0 WHERE name = ? AND owner = ? AND token = ?"

static const char *const acquire_sql[] = {ACQUIRE(NOW_S), ACQUIRE(NOW_P)};
static const char *const renew_sql[] = {RENEW(NOW_S), RENEW(NOW_P)};

static int pg(bs_meta_t *m)
{
    return bs_meta_dialect(m) == BS_META_POSTGRES;
}

typedef struct {
    bs_lease_t *out;
    int rows;
} lease_row_t;

static int acquire_row(const bs_meta_row_t *row, void *ud)
{
    lease_row_t *x = ud;
    x->out->token = bs_meta_row_int(row, 0);
    x->out->expires_at = bs_meta_row_int(row, 1);
    x->rows++;
    return 0;
}

static int renew_row(const bs_meta_row_t *row, void *ud)
{
    lease_row_t *x = ud;
    x->out->expires_at = bs_meta_row_int(row, 0);
    x->rows++;
    return 0;
}

int bs_lease_acquire(bs_meta_t *m, const char *name, const char *owner, int64_t ttl_ms,
                     bs_lease_t *out, bs_err_t *err)
{
    if (ttl_ms <= 0)
        return bs_err_set(err, BS_EINVAL, "lease ttl must be positive, got %lld",
                          (long long)ttl_ms);
    lease_row_t x = {out, 0};
    bs_val_t args[] = {BS_TXT(name), BS_TXT(owner), BS_INT(ttl_ms)};
    int rc = bs_meta_query(m, acquire_sql[pg(m)], args, 3, acquire_row, &x, err);
    if (rc)
        return rc;
    return x.rows ? 0
                  : bs_err_set(err, BS_ECONFLICT, "lease '%.64s' is held by another owner", name);
}

int bs_lease_renew(bs_meta_t *m, const char *name, const char *owner, int64_t token, int64_t ttl_ms,
                   bs_lease_t *out, bs_err_t *err)
{
    lease_row_t x = {out, 0};
    bs_val_t args[] = {BS_INT(ttl_ms), BS_TXT(name), BS_TXT(owner), BS_INT(token)};
    int rc = bs_meta_query(m, renew_sql[pg(m)], args, 4, renew_row, &x, err);
    if (rc)
        return rc;
    if (!x.rows)
        return bs_err_set(err, BS_ECONFLICT, "lease '%.64s' (token %lld) is no longer held", name,
                          (long long)token);
    out->token = token;
    return 0;
}

int bs_lease_release(bs_meta_t *m, const char *name, const char *owner, int64_t token,
                     bs_err_t *err)
{
    bs_val_t args[] = {BS_TXT(name), BS_TXT(owner), BS_INT(token)};
    return bs_meta_exec(m, RELEASE, args, 3, NULL, err);
}

/* ---- claims ------------------------------------------------------------------------------ */

typedef struct {
    bs_meta_row_cb cb;
    void *ud;
    int n;
} claim_ctx_t;

static int claim_row(const bs_meta_row_t *row, void *ud)
{
    claim_ctx_t *c = ud;
    c->n++;
    if (c->cb)
        c->cb(row, c->ud); /* never stops early: every returned row is claimed */
    return 0;
}

#define CLAIM_MAX_ARGS 16

int bs_lease_claim(bs_meta_t *m, const bs_lease_claim_sql_t *sql, const char *owner, int64_t ttl_ms,
                   const bs_val_t *args, int nargs, int limit, bs_meta_row_cb cb, void *ud,
                   bs_err_t *err)
{
    if (limit < 1 || limit > 10000)
        return bs_err_set(err, BS_EINVAL, "claim limit must be 1..10000, got %d", limit);
    if (ttl_ms <= 0)
        return bs_err_set(err, BS_EINVAL, "claim ttl must be positive, got %lld",
                          (long long)ttl_ms);
    if (nargs < 0 || nargs > CLAIM_MAX_ARGS - 3)
        return bs_err_set(err, BS_EINVAL, "a claim takes at most %d condition arguments, got %d",
                          CLAIM_MAX_ARGS - 3, nargs);
    bs_val_t all[CLAIM_MAX_ARGS];
    all[0] = BS_TXT(owner);
    all[1] = BS_INT(ttl_ms);
    for (int i = 0; i < nargs; i++)
        all[2 + i] = args[i];
    all[2 + nargs] = BS_INT(limit);
    claim_ctx_t c = {cb, ud, 0};
    if (pg(m)) /* one statement: SKIP LOCKED lets concurrent claimers pass each other */
        return bs_meta_query(m, sql->pg, all, nargs + 3, claim_row, &c, err) ?: c.n;
    int rc = bs_meta_tx_begin(m, err); /* SQLite: the write lock makes the claim exclusive */
    if (rc)
        return rc;
    if ((rc = bs_meta_query(m, sql->sqlite, all, nargs + 3, claim_row, &c, err))) {
        bs_meta_tx_rollback(m);
        return rc;
    }
    if ((rc = bs_meta_tx_commit(m, err)))
        return rc;
    return c.n;
}

/* ---- the singleton runner ---------------------------------------------------------------- */

struct bs_lease_runner {
    bs_meta_t *meta;
    char name[64], owner[128];
    int64_t ttl_ms, period_ms;
    bs_lease_task_fn task;
    void *ud;
    pthread_t tid, task_tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* the lease thread's wait */
    pthread_cond_t task_cv; /* the task thread's wait */
    int stop;
    _Atomic int held;
    uint64_t valid_until_ns; /* local deadline of the holding (mono) */
    uint64_t next_task_ns;
    int64_t token;
    bs_lease_runner_stats_t st;
    struct bs_lease_runner *next; /* the process's runners, for /metrics */
};

/* Process-wide: the running runners, so /metrics can list every lease this process
 * competes for without each owner module exporting its own. */
static struct {
    pthread_mutex_t mu;
    bs_lease_runner_t *head;
} runners = {PTHREAD_MUTEX_INITIALIZER, NULL};

static void deadline(struct timespec *ts, uint64_t mono_ns)
{
    ts->tv_sec = (time_t)(mono_ns / 1000000000u);
    ts->tv_nsec = (long)(mono_ns % 1000000000u);
}

/* Must hold mu. The holding ends (renewal failed, or its deadline passed). */
static void lose(bs_lease_runner_t *r, const char *why)
{
    if (!atomic_load(&r->held))
        return;
    atomic_store(&r->held, 0);
    r->st.losses++;
    BS_LOG(BS_LOG_WARN, "lease", "lease '%s' lost (token %lld): %s; its task stops", r->name,
           (long long)r->token, why);
}

static void *lease_main(void *arg)
{
    bs_lease_runner_t *r = arg;
    uint64_t step = (uint64_t)r->ttl_ms * 1000000u / 3; /* attempt / renewal interval */
    uint64_t next_ns = bs_time_mono_ns();               /* first attempt at once */
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        uint64_t now = bs_time_mono_ns();
        if (atomic_load(&r->held) && now >= r->valid_until_ns)
            lose(r, "its time ran out before a renewal succeeded");
        if (now < next_ns) {
            struct timespec ts;
            uint64_t until = next_ns;
            if (atomic_load(&r->held) && r->valid_until_ns < until)
                until = r->valid_until_ns;
            deadline(&ts, until);
            pthread_cond_timedwait(&r->cv, &r->mu, &ts);
            continue;
        }
        int holding = atomic_load(&r->held);
        int64_t token = r->token;
        pthread_mutex_unlock(&r->mu);
        /* The local deadline starts before the statement is sent: it ends no later than
         * the database's expiry, whatever the round trip took. */
        uint64_t t0 = bs_time_mono_ns();
        bs_lease_t l = {0};
        bs_err_t err;
        bs_err_clear(&err);
        int rc = holding ? bs_lease_renew(r->meta, r->name, r->owner, token, r->ttl_ms, &l, &err)
                         : bs_lease_acquire(r->meta, r->name, r->owner, r->ttl_ms, &l, &err);
        pthread_mutex_lock(&r->mu);
        if (holding) {
            if (rc == 0) {
                r->st.renewals++;
                r->valid_until_ns = t0 + (uint64_t)r->ttl_ms * 1000000u;
            } else {
                lose(r, err.msg);
            }
        } else {
            r->st.attempts++;
            if (rc == 0 && !r->stop) {
                r->st.acquisitions++;
                r->token = r->st.token = l.token;
                r->valid_until_ns = t0 + (uint64_t)r->ttl_ms * 1000000u;
                r->next_task_ns = bs_time_mono_ns() + (uint64_t)r->period_ms * 1000000u;
                atomic_store(&r->held, 1);
                BS_LOG(BS_LOG_INFO, "lease", "lease '%s' acquired by %s (token %lld)", r->name,
                       r->owner, (long long)l.token);
                pthread_cond_signal(&r->task_cv);
            } else if (rc == 0) { /* stopping meanwhile: give it back at once */
                r->token = l.token;
                atomic_store(&r->held, 1);
            } else if (rc != BS_ECONFLICT) {
                BS_LOG(BS_LOG_DEBUG, "lease", "cannot acquire lease '%s': %s", r->name, err.msg);
            }
        }
        next_ns = t0 + step;
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

static void *task_main(void *arg)
{
    bs_lease_runner_t *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        uint64_t now = bs_time_mono_ns();
        if (!atomic_load(&r->held) || now < r->next_task_ns) {
            if (atomic_load(&r->held)) {
                struct timespec ts;
                deadline(&ts, r->next_task_ns);
                pthread_cond_timedwait(&r->task_cv, &r->mu, &ts);
            } else {
                pthread_cond_wait(&r->task_cv, &r->mu);
            }
            continue;
        }
        int64_t token = r->token;
        r->st.task_runs++;
        pthread_mutex_unlock(&r->mu);
        r->task(r->ud, r, token);
        pthread_mutex_lock(&r->mu);
        r->next_task_ns = bs_time_mono_ns() + (uint64_t)r->period_ms * 1000000u;
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

bs_lease_runner_t *bs_lease_runner_start(bs_meta_t *m, const bs_lease_runner_opts_t *o,
                                         bs_err_t *err)
{
    if (!o->name || !o->name[0] || strlen(o->name) >= 64 || !o->owner || !o->owner[0] ||
        strlen(o->owner) >= 128 || o->ttl_ms < 30 || o->period_ms < 1 || !o->task) {
        bs_err_set(err, BS_EINVAL,
                   "lease runner needs a name (< 64 bytes), an owner (< 128), "
                   "ttl_ms >= 30, period_ms >= 1 and a task");
        return NULL;
    }
    bs_lease_runner_t *r = calloc(1, sizeof *r);
    if (!r) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    r->meta = m;
    snprintf(r->name, sizeof r->name, "%s", o->name);
    snprintf(r->owner, sizeof r->owner, "%s", o->owner);
    r->ttl_ms = o->ttl_ms;
    r->period_ms = o->period_ms;
    r->task = o->task;
    r->ud = o->ud;
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_cond_init(&r->task_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&r->task_tid, NULL, task_main, r) != 0) {
        bs_err_set(err, BS_EUNAVAIL, "cannot start the task thread of lease '%s'", r->name);
        goto fail;
    }
    if (pthread_create(&r->tid, NULL, lease_main, r) != 0) {
        pthread_mutex_lock(&r->mu);
        r->stop = 1;
        pthread_cond_broadcast(&r->task_cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->task_tid, NULL);
        bs_err_set(err, BS_EUNAVAIL, "cannot start the thread of lease '%s'", r->name);
        goto fail;
    }
    pthread_mutex_lock(&runners.mu);
    r->next = runners.head;
    runners.head = r;
    pthread_mutex_unlock(&runners.mu);
    return r;
fail:
    pthread_cond_destroy(&r->cv);
    pthread_cond_destroy(&r->task_cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
    return NULL;
}

void bs_lease_runner_stop(bs_lease_runner_t *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&runners.mu);
    for (bs_lease_runner_t **p = &runners.head; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            break;
        }
    pthread_mutex_unlock(&runners.mu);
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_cond_broadcast(&r->task_cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->task_tid, NULL); /* a task call in progress ends first */
    pthread_join(r->tid, NULL);
    if (atomic_load(&r->held)) {
        bs_err_t err;
        if (bs_lease_release(r->meta, r->name, r->owner, r->token, &err) != 0)
            BS_LOG(BS_LOG_WARN, "lease", "cannot release lease '%s' (it expires by itself): %s",
                   r->name, err.msg);
    }
    pthread_cond_destroy(&r->cv);
    pthread_cond_destroy(&r->task_cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

int bs_lease_runner_held(bs_lease_runner_t *r)
{
    pthread_mutex_lock(&r->mu);
    int held = atomic_load(&r->held) && !r->stop && bs_time_mono_ns() < r->valid_until_ns;
    pthread_mutex_unlock(&r->mu);
    return held;
}

void bs_lease_runner_stats(bs_lease_runner_t *r, bs_lease_runner_stats_t *out)
{
    pthread_mutex_lock(&r->mu);
    *out = r->st;
    out->held = atomic_load(&r->held) && !r->stop;
    pthread_mutex_unlock(&r->mu);
}

void bs_lease_metrics(bs_buf_t *b)
{
    bs_buf_puts(b, "# HELP basalt_lease_held 1 while this replica holds the lease.\n"
                   "# TYPE basalt_lease_held gauge\n");
    pthread_mutex_lock(&runners.mu);
    for (bs_lease_runner_t *r = runners.head; r; r = r->next)
        bs_buf_printf(b, "basalt_lease_held{name=\"%s\"} %d\n", r->name, bs_lease_runner_held(r));
    pthread_mutex_unlock(&runners.mu);
}
