/*
 * The change watcher (see changes.h). One thread per watcher: it waits in
 * bs_meta_listen on the notification channel and an eventfd that stop writes to,
 * and polls the `generations` table when a notification arrived or poll_ms passed
 * since the last poll. A notification only shortens the wait: what moved is always
 * read from the table, so a payload lost, duplicated or reordered changes nothing.
 *
 * Locking: `mu` guards the scope table's `seen` values and the statistics; it is
 * never held across SQL or a subscriber call. Subscribers may run concurrently on
 * the watcher and on a writer (they serialise their own rebuilds: bs_serving_refresh,
 * bs_auth_reload). `seen` only grows, and a generation is marked seen only after a
 * rebuild that started after it was read succeeded, so a snapshot never claims a
 * generation it does not cover.
 */
#include "store/changes.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "base/log.h"
#include "base/time.h"

#define MAX_SCOPES 8

typedef struct {
    char name[32];
    int64_t seen;
    int64_t polled; /* the generation the last poll read */
    bs_changes_fn fn;
    void *ud;
} scope_t;

struct bs_changes {
    bs_meta_t *meta;
    int poll_ms;
    int wake_fd;
    pthread_t tid;
    int running;
    _Atomic int stop;
    _Atomic int notified;
    pthread_mutex_t mu;
    scope_t scopes[MAX_SCOPES];
    int n_scopes;
    int reachable;
    int failing_logged;
    uint64_t current_ns; /* mono time of the last poll after which every snapshot was current */
    bs_changes_stats_t st;
};

int bs_changes_bump(bs_meta_t *m, const char *scope, bs_err_t *err)
{
    bs_val_t args[] = {BS_TXT(scope), BS_INT(bs_time_wall_ms())};
    int rc =
        bs_meta_exec(m,
                     "INSERT INTO generations (scope, generation, updated_at) VALUES (?, 1, ?)"
                     " ON CONFLICT (scope) DO UPDATE SET generation = generations.generation + 1,"
                     " updated_at = excluded.updated_at",
                     args, 2, NULL, err);
    if (rc)
        return rc;
    return bs_meta_notify(m, BS_CHANGES_CHANNEL, scope, err);
}

static scope_t *find_scope(bs_changes_t *c, const char *name)
{
    for (int i = 0; i < c->n_scopes; i++)
        if (strcmp(c->scopes[i].name, name) == 0)
            return &c->scopes[i];
    return NULL;
}

/* Must hold mu. Adds scope name (seen -1 until read) or returns the existing one. */
static scope_t *add_scope(bs_changes_t *c, const char *name)
{
    scope_t *s = find_scope(c, name);
    if (s || c->n_scopes == MAX_SCOPES || strlen(name) >= sizeof s->name)
        return s;
    s = &c->scopes[c->n_scopes++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->seen = s->polled = -1;
    return s;
}

typedef struct {
    bs_changes_t *c;
    int initial; /* bs_changes_new: what is read is taken as seen */
} read_ctx_t;

static int gen_row(const bs_meta_row_t *row, void *ud)
{
    read_ctx_t *x = ud;
    pthread_mutex_lock(&x->c->mu);
    scope_t *s = x->initial ? add_scope(x->c, bs_meta_row_text(row, 0))
                            : find_scope(x->c, bs_meta_row_text(row, 0));
    if (s) {
        s->polled = bs_meta_row_int(row, 1);
        if (x->initial)
            s->seen = s->polled;
    }
    pthread_mutex_unlock(&x->c->mu);
    return 0;
}

static int read_generations(bs_changes_t *c, int initial, bs_err_t *err)
{
    read_ctx_t x = {c, initial};
    return bs_meta_query(c->meta, "SELECT scope, generation FROM generations", NULL, 0, gen_row, &x,
                         err);
}

bs_changes_t *bs_changes_new(bs_meta_t *m, int poll_ms, bs_err_t *err)
{
    bs_changes_t *c = calloc(1, sizeof *c);
    if (!c) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    c->meta = m;
    c->poll_ms = poll_ms > 0 ? poll_ms : 1;
    pthread_mutex_init(&c->mu, NULL);
    c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->wake_fd < 0) {
        bs_err_set(err, BS_EUNAVAIL, "cannot create the change watcher's eventfd: %s",
                   strerror(errno));
        bs_changes_free(c);
        return NULL;
    }
    if (read_generations(c, 1, err) != 0) {
        bs_changes_free(c);
        return NULL;
    }
    c->reachable = 1;
    c->current_ns = bs_time_mono_ns();
    return c;
}

int bs_changes_subscribe(bs_changes_t *c, const char *scope, bs_changes_fn fn, void *ud,
                         bs_err_t *err)
{
    pthread_mutex_lock(&c->mu);
    scope_t *s = add_scope(c, scope);
    if (s) {
        s->fn = fn;
        s->ud = ud;
    }
    pthread_mutex_unlock(&c->mu);
    if (!s)
        return bs_err_set(err, BS_EINVAL,
                          "cannot watch scope '%.32s': at most %d scopes of "
                          "up to 31 bytes",
                          scope, MAX_SCOPES);
    return 0;
}

/* Must hold mu. Every subscribed scope has seen what the last poll read. */
static int all_current(const bs_changes_t *c)
{
    for (int i = 0; i < c->n_scopes; i++)
        if (c->scopes[i].fn && c->scopes[i].seen < c->scopes[i].polled)
            return 0;
    return 1;
}

int bs_changes_poll(bs_changes_t *c, bs_err_t *err)
{
    bs_err_t local;
    if (!err)
        err = &local;
    int rc = read_generations(c, 0, err);
    pthread_mutex_lock(&c->mu);
    if (rc) {
        c->st.poll_errors++;
        int log = c->reachable;
        c->reachable = 0;
        pthread_mutex_unlock(&c->mu);
        if (log)
            BS_LOG(BS_LOG_WARN, "changes",
                   "metadata store unreachable, serving the last snapshot: %s", err->msg);
        return rc;
    }
    c->st.polls++;
    int recovered = !c->reachable;
    c->reachable = 1;
    pthread_mutex_unlock(&c->mu);
    if (recovered)
        BS_LOG(BS_LOG_INFO, "changes", "metadata store reachable again");
    int failed = 0;
    for (int i = 0; i < c->n_scopes; i++) { /* the table is fixed once started */
        scope_t *s = &c->scopes[i];
        pthread_mutex_lock(&c->mu);
        int64_t want = s->polled;
        int moved = s->fn && want > s->seen;
        pthread_mutex_unlock(&c->mu);
        if (!moved)
            continue;
        bs_err_t e;
        bs_err_clear(&e);
        int r = s->fn(s->ud, &e);
        pthread_mutex_lock(&c->mu);
        c->st.rebuilds++;
        if (r == 0) {
            if (want > s->seen)
                s->seen = want;
        } else {
            c->st.rebuild_errors++;
            failed = 1;
        }
        int log_fail = r != 0 && !c->failing_logged;
        if (r != 0)
            c->failing_logged = 1;
        pthread_mutex_unlock(&c->mu);
        if (log_fail)
            BS_LOG(BS_LOG_WARN, "changes",
                   "rebuilding the %s snapshot failed, keeping the last "
                   "one and retrying at the next poll: %s",
                   s->name, e.msg);
    }
    pthread_mutex_lock(&c->mu);
    if (!failed)
        c->failing_logged = 0;
    if (all_current(c))
        c->current_ns = bs_time_mono_ns();
    pthread_mutex_unlock(&c->mu);
    return 0;
}

static int int_row(const bs_meta_row_t *row, void *ud)
{
    *(int64_t *)ud = bs_meta_row_int(row, 0);
    return 1;
}

int bs_changes_refresh(bs_changes_t *c, const char *scope, bs_err_t *err)
{
    scope_t *s = find_scope(c, scope);
    if (!s || !s->fn)
        return bs_err_set(err, BS_EINTERNAL, "no subscriber for scope '%.32s'", scope);
    /* What the rebuild below is sure to cover: it starts after this read. When the read
     * fails, rebuild anyway and leave the generation to the watcher. */
    int64_t gen = -1;
    bs_val_t arg = BS_TXT(scope);
    bs_err_t qerr;
    if (bs_meta_query(c->meta, "SELECT generation FROM generations WHERE scope = ?", &arg, 1,
                      int_row, &gen, &qerr) != 0)
        gen = -1;
    int rc = s->fn(s->ud, err);
    if (rc == 0 && gen >= 0) {
        pthread_mutex_lock(&c->mu);
        if (gen > s->seen)
            s->seen = gen;
        pthread_mutex_unlock(&c->mu);
    }
    return rc;
}

static void on_notify(const char *channel, const char *payload, void *ud)
{
    (void)channel, (void)payload;
    bs_changes_t *c = ud;
    atomic_store(&c->notified, 1);
    pthread_mutex_lock(&c->mu);
    c->st.notifications++;
    pthread_mutex_unlock(&c->mu);
}

static void *watch_main(void *arg)
{
    bs_changes_t *c = arg;
    uint64_t next_poll = bs_time_mono_ns() + (uint64_t)c->poll_ms * 1000000u;
    while (!atomic_load(&c->stop)) {
        uint64_t now = bs_time_mono_ns();
        int wait_ms = now >= next_poll ? 0 : (int)((next_poll - now + 999999) / 1000000);
        bs_err_t err;
        bs_err_clear(&err);
        bs_meta_listen(c->meta, BS_CHANGES_CHANNEL, c->wake_fd, wait_ms, on_notify, c, &err);
        if (atomic_load(&c->stop))
            break;
        now = bs_time_mono_ns();
        if (atomic_exchange(&c->notified, 0) || now >= next_poll) {
            bs_changes_poll(c, &err);
            next_poll = bs_time_mono_ns() + (uint64_t)c->poll_ms * 1000000u;
        }
    }
    return NULL;
}

int bs_changes_start(bs_changes_t *c, bs_err_t *err)
{
    if (c->running)
        return 0;
    if (pthread_create(&c->tid, NULL, watch_main, c) != 0)
        return bs_err_set(err, BS_EUNAVAIL, "cannot start the change watcher thread");
    c->running = 1;
    return 0;
}

void bs_changes_free(bs_changes_t *c)
{
    if (!c)
        return;
    if (c->running) {
        atomic_store(&c->stop, 1);
        uint64_t one = 1;
        /* wakes bs_meta_listen at once; the counter stays readable, so it cannot be missed */
        if (write(c->wake_fd, &one, sizeof one) < 0)
            BS_LOG(BS_LOG_WARN, "changes", "cannot wake the change watcher: %s", strerror(errno));
        pthread_join(c->tid, NULL);
    }
    if (c->wake_fd >= 0)
        close(c->wake_fd);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void bs_changes_stats(bs_changes_t *c, bs_changes_stats_t *out)
{
    pthread_mutex_lock(&c->mu);
    *out = c->st;
    out->reachable = c->reachable;
    out->generation = 0;
    for (int i = 0; i < c->n_scopes; i++)
        if (c->scopes[i].fn && c->scopes[i].seen > 0)
            out->generation += c->scopes[i].seen;
    out->age_ms = c->current_ns ? (int64_t)((bs_time_mono_ns() - c->current_ns) / 1000000u) : -1;
    pthread_mutex_unlock(&c->mu);
}

int64_t bs_changes_seen(bs_changes_t *c, const char *scope)
{
    pthread_mutex_lock(&c->mu);
    scope_t *s = find_scope(c, scope);
    int64_t v = s ? s->seen : -1;
    pthread_mutex_unlock(&c->mu);
    return v;
}
