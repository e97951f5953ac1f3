/*
 * The job runtime's threads (jobs_int.h): the claimer, the workers and the writer, and the
 * calls a handler makes on its attempt (bs_job_*).
 *
 * An attempt's life: the claimer's bs_lease_claim turns a batch of a kind's available jobs
 * running (attempt + 1, a new fencing token) and puts a run per row on the ready queue and
 * in the registry; a worker calls the kind's handler; the handler (or any thread, later)
 * ends it with bs_job_complete / bs_job_fail, which only queues the end; the writer writes
 * every queued end in one transaction, each UPDATE guarded by (id, lease_owner,
 * lease_token, state = 'running'), and frees the runs. A holder that lost its claim (its
 * lease expired and a rescuer or another replica took the job) therefore changes nothing:
 * its guarded write matches no row.
 *
 * Due work: scheduled and retryable jobs whose time came are made available by the
 * claimer's poll (every poll_ms, a read first so that an idle poll writes nothing); running
 * jobs whose lease expired — their holder died — are rescued: retryable after the kind's
 * backoff (the attempt counts), discarded when it was the last, cancelled if that was
 * asked. Enqueues and ends in this process wake the claimer at once; other replicas' work
 * is found at the next poll.
 *
 * Leases: a claim lasts lease_ms from the database's clock; the writer renews every attempt
 * in flight each lease_ms/3 (one statement for all), and keeps a local deadline started before
 * each renewal was sent, so this process stops believing in a claim no later than the
 * database expires it. A renewal that finds its row changed, or a deadline that passes,
 * marks the attempt lost: bs_job_cancelled turns 1.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "base/crypto.h"
#include "base/json.h"
#include "base/log.h"
#include "base/time.h"
#include "events/jobs_int.h"

#define NOW_S BS__JOBS_NOW_S
#define NOW_P BS__JOBS_NOW_P
#define MS 1000000ull

#define CLAIM_BATCH 500  /* rows per claim statement */
#define READY_MAX 1000   /* claimed attempts waiting for a worker */
#define PROGRESS_MS 1000 /* progress writes and cancel polls: at most once a second */
#define RETRY_WRITE_MS 1000
#define BACKOFF_CAP_MS (30LL * 86400 * 1000)

static int pg(const bs_jobs_t *j)
{
    return bs_meta_dialect(j->meta) == BS_META_POSTGRES;
}

static void deadline(struct timespec *ts, uint64_t mono_ns)
{
    ts->tv_sec = (time_t)(mono_ns / 1000000000u);
    ts->tv_nsec = (long)(mono_ns % 1000000000u);
}

static void wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t mono_ns)
{
    struct timespec ts;
    deadline(&ts, mono_ns);
    pthread_cond_timedwait(cv, mu, &ts);
}

/* ---- pure helpers ---------------------------------------------------------------------- */

int64_t bs__jobs_backoff_default_ms(int failed_attempt, double u)
{
    double a = failed_attempt < 1 ? 1 : failed_attempt > 1000 ? 1000 : failed_attempt;
    double ms = a * a * a * a * 1000.0 * (0.9 + 0.2 * u);
    if (ms > (double)BACKOFF_CAP_MS)
        ms = (double)BACKOFF_CAP_MS;
    int64_t v = (int64_t)llround(ms);
    return v < 1 ? 1 : v;
}

static double random_unit(void)
{
    uint64_t x = 0;
    if (bs_random_bytes(&x, sizeof x) != 0)
        x = (uint64_t)bs_time_mono_ns() * 0x9e3779b97f4a7c15ull;
    return (double)(x >> 11) * (1.0 / 9007199254740992.0);
}

int64_t bs__jobs_backoff_ms(const bs__job_kind_t *k, int failed_attempt)
{
    if (k && k->k.backoff_ms) {
        int64_t v = k->k.backoff_ms(k->k.ud, failed_attempt);
        return v < 0 ? 0 : v > BACKOFF_CAP_MS ? BACKOFF_CAP_MS : v;
    }
    return bs__jobs_backoff_default_ms(failed_attempt, random_unit());
}

void bs__jobs_sample_add(bs__job_sample_t *s, int *n, uint64_t t, int64_t done)
{
    if (*n >= 2 && t - s[*n - 2].t < 250 * MS) {
        s[*n - 1].t = t; /* too close to the one before: the newest moves */
        s[*n - 1].done = done;
        return;
    }
    if (*n == BS__JOBS_SAMPLES) {
        memmove(s, s + 1, (size_t)(BS__JOBS_SAMPLES - 1) * sizeof *s);
        (*n)--;
    }
    s[*n].t = t;
    s[*n].done = done;
    (*n)++;
}

double bs__jobs_rate(const bs__job_sample_t *s, int n)
{
    if (n < 2 || s[n - 1].t <= s[0].t)
        return 0;
    return (double)(s[n - 1].done - s[0].done) / ((double)(s[n - 1].t - s[0].t) / 1e9);
}

char *bs__jobs_errors_append(const char *errors, int attempt, const char *error, const char *owner,
                             int64_t token, int64_t expired_at)
{
    bs_buf_t b;
    bs_buf_init(&b);
    bs_buf_putc(&b, '[');
    cJSON *old = errors ? cJSON_Parse(errors) : NULL;
    if (cJSON_IsArray(old)) {
        while (cJSON_GetArraySize(old) >= BS__JOBS_ERRORS_KEPT)
            cJSON_DeleteItemFromArray(old, 0);
        const cJSON *e;
        cJSON_ArrayForEach(e, old)
        {
            char *t = cJSON_PrintUnformatted(e);
            if (t) {
                bs_buf_puts(&b, t);
                bs_buf_putc(&b, ',');
            }
            free(t);
        }
    }
    cJSON_Delete(old);
    b.need_comma = 0;
    const char *msg = error ? error : "";
    size_t n = strlen(msg);
    if (n > BS__JOBS_ERROR_MAX)
        n = BS__JOBS_ERROR_MAX; /* a cut inside a UTF-8 sequence becomes U+FFFD */
    char at[32];
    bs_time_rfc3339(bs_time_wall_ms(), at, sizeof at);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "attempt");
    bs_jw_int(&b, attempt);
    bs_jw_key(&b, "at");
    bs_jw_str(&b, at);
    bs_jw_key(&b, "error");
    bs_jw_strn(&b, msg, n);
    bs_jw_key(&b, "attempted_by");
    bs_jw_str(&b, owner ? owner : "");
    bs_jw_key(&b, "lease_token");
    bs_jw_int(&b, token);
    if (expired_at) {
        bs_jw_key(&b, "lease_expired_at");
        bs_jw_time(&b, expired_at);
    }
    bs_jw_obj_end(&b);
    bs_buf_putc(&b, ']');
    if (b.oom) {
        bs_buf_free(&b);
        return NULL;
    }
    return bs_buf_take(&b);
}

/* ---- runs ------------------------------------------------------------------------------ */

/* Frees r and what it owns; its reference to the hub is the caller's to drop. */
static void run_release(bs_job_run_t *r)
{
    free(r->tenant);
    free(r->args);
    free(r->errors);
    free(r->result);
    free(r->location);
    free(r->error);
    free(r);
}

static void run_free(bs_job_run_t *r)
{
    bs__jobs_hub_t *h = r->hub;
    run_release(r);
    bs__jobs_hub_unref(h);
}

/* Must hold mu. */
static void registry_add(bs_jobs_t *j, bs_job_run_t *r)
{
    r->prev = NULL;
    r->next = j->registry;
    if (j->registry)
        j->registry->prev = r;
    j->registry = r;
    j->nregistry++;
}

static void registry_remove(bs_jobs_t *j, bs_job_run_t *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        j->registry = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    j->nregistry--;
}

const char *bs_job_id(const bs_job_run_t *r)
{
    return r->id;
}
const char *bs_job_kind(const bs_job_run_t *r)
{
    return r->kind->name;
}
const char *bs_job_tenant(const bs_job_run_t *r)
{
    return r->tenant;
}
const char *bs_job_args(const bs_job_run_t *r)
{
    return r->args;
}
int bs_job_attempt(const bs_job_run_t *r)
{
    return r->attempt;
}
int bs_job_cancelled(const bs_job_run_t *r)
{
    return atomic_load(&r->cancelled);
}

void bs_job_progress(bs_job_run_t *r, int64_t done, int64_t total)
{
    if (done < 0)
        done = 0;
    if (total < 0)
        total = 0;
    uint64_t now = bs_time_mono_ns();
    pthread_mutex_lock(&r->hub->mu);
    if (r->state == BS__RUN_LIVE) {
        r->done = done;
        r->total = total;
        r->dirty = 1;
        bs__jobs_sample_add(r->samples, &r->nsamples, now, done);
    }
    pthread_mutex_unlock(&r->hub->mu);
}

/* A result as stored: its JSON text when it is valid JSON in valid UTF-8, else the text as
 * a JSON string (so a handler's mistake cannot break the row or the API's output). */
static char *result_copy(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s);
    if (n > BS__JOBS_RESULT_MAX) {
        char msg[96];
        snprintf(msg, sizeof msg, "\"result of %zu bytes dropped: the limit is %d\"", n,
                 BS__JOBS_RESULT_MAX);
        return strdup(msg);
    }
    cJSON *p = bs_utf8_valid(s, n) ? cJSON_ParseWithLength(s, n) : NULL;
    if (p) {
        cJSON_Delete(p);
        return strdup(s);
    }
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_strn(&b, s, n);
    return b.oom ? (bs_buf_free(&b), NULL) : bs_buf_take(&b);
}

static void end_attempt(bs_job_run_t *r, int completed, int retryable, int64_t retry_after_ms,
                        const char *result, const char *location, const char *error)
{
    char *res = completed ? result_copy(result) : NULL;
    char *loc = completed && location && bs_utf8_valid(location, strlen(location)) &&
                        strlen(location) <= 4096
                    ? strdup(location)
                    : NULL;
    char *e = completed ? NULL : strdup(error ? error : "");
    bs__jobs_hub_t *h = r->hub;
    pthread_mutex_lock(&h->mu);
    if (r->state != BS__RUN_LIVE) {
        int detached = r->state == BS__RUN_DETACHED;
        pthread_mutex_unlock(&h->mu);
        free(res);
        free(loc);
        free(e);
        if (detached) /* the runtime released it at shutdown: nothing to write */
            run_free(r);
        else
            BS_LOG(BS_LOG_ERROR, "jobs",
                   "job %s (%s) attempt %d ended twice; the second end "
                   "is ignored",
                   r->id, r->kind->name, r->attempt);
        return;
    }
    bs_jobs_t *j = h->j; /* a live run keeps the runtime from finishing its free */
    r->state = BS__RUN_ENDED;
    r->completed = completed;
    r->retryable = retryable;
    r->retry_after_ms = retry_after_ms < 0 ? 0 : retry_after_ms;
    r->result = res;
    r->location = loc;
    r->error = e;
    r->qnext = NULL;
    if (j->done_tail)
        j->done_tail->qnext = r;
    else
        j->done_head = r;
    j->done_tail = r;
    j->ndone++;
    r->kind->inflight--;
    pthread_cond_signal(&j->write_cv);
    if (r->kind->maybe_more) { /* capacity for a kind with work waiting */
        j->kicked = 1;
        pthread_cond_signal(&j->claim_cv);
    }
    pthread_mutex_unlock(&h->mu);
}

void bs_job_complete(bs_job_run_t *r, const char *result_json, const char *result_location)
{
    end_attempt(r, 1, 0, 0, result_json, result_location, NULL);
}

void bs_job_fail(bs_job_run_t *r, int retryable, int64_t retry_after_ms, const char *error)
{
    end_attempt(r, 0, retryable, retry_after_ms, NULL, NULL, error);
}

void bs__jobs_cancel_local(bs_jobs_t *j, const char *id)
{
    pthread_mutex_lock(&j->hub->mu);
    for (bs_job_run_t *r = j->registry; r; r = r->next)
        if (r->state == BS__RUN_LIVE && !strcmp(r->id, id))
            atomic_store(&r->cancelled, 1);
    pthread_mutex_unlock(&j->hub->mu);
}

/* ---- the claimer ----------------------------------------------------------------------- */

#define CLAIM_SET(now) "state = 'running', attempt = attempt + 1, attempted_at = " now ", "
#define CLAIM_COND(now) "kind = ? AND state = 'available'"
static const bs_lease_claim_sql_t claim_sql = BS_LEASE_CLAIM_SQL_EX(
    "jobs", "id", CLAIM_SET, CLAIM_COND, "priority DESC, scheduled_at, id",
    "id, tenant, args, attempt, max_attempts, lease_token, errors, progress_done, progress_total,"
    " cancel_requested");

#define PROMOTE_PROBE(now)                                                                         \
    "SELECT 1 FROM jobs WHERE state IN ('scheduled', 'retryable') AND scheduled_at <= " now        \
    " LIMIT 1"
#define PROMOTE(now)                                                                               \
    "UPDATE jobs SET state = 'available' WHERE state IN ('scheduled', 'retryable') AND"            \
    " scheduled_at <= " now
static const char *const promote_probe_sql[] = {PROMOTE_PROBE(NOW_S), PROMOTE_PROBE(NOW_P)};
static const char *const promote_sql[] = {PROMOTE(NOW_S), PROMOTE(NOW_P)};

#define RESCUE_FIND(now)                                                                           \
    "SELECT id, kind, attempt, max_attempts, lease_token, lease_owner, lease_expires_at, errors"   \
    " FROM jobs WHERE state = 'running' AND lease_expires_at <= " now " LIMIT 100"
/* Binds: retry (1/0), retry (again), delay ms, errors, id, token. */
#define RESCUE(now)                                                                                \
    "UPDATE jobs SET state = CASE WHEN cancel_requested = 1 THEN 'cancelled' WHEN ? = 1 THEN"      \
    " 'retryable' ELSE 'discarded' END, finalized_at = CASE WHEN cancel_requested = 1 OR ? = 0"    \
    " THEN " now " ELSE NULL END, scheduled_at = " now " + ?, errors = ?, lease_expires_at = 0"    \
    " WHERE id = ? AND lease_token = ? AND state = 'running' AND lease_expires_at <= " now
static const char *const rescue_find_sql[] = {RESCUE_FIND(NOW_S), RESCUE_FIND(NOW_P)};
static const char *const rescue_sql[] = {RESCUE(NOW_S), RESCUE(NOW_P)};

static int any_row(const bs_meta_row_t *row, void *ud)
{
    (void)row;
    *(int *)ud = 1;
    return 1;
}

static void promote(bs_jobs_t *j)
{
    int found = 0;
    bs_err_t err;
    if (bs_meta_query(j->meta, promote_probe_sql[pg(j)], NULL, 0, any_row, &found, &err) || !found)
        return;
    int changes = 0;
    if (bs_meta_exec(j->meta, promote_sql[pg(j)], NULL, 0, &changes, &err)) {
        BS_LOG(BS_LOG_WARN, "jobs", "cannot make due jobs available: %s", err.msg);
        return;
    }
    if (changes)
        bs_jobs_kick(j);
}

typedef struct {
    char id[37], kind[64], owner[128];
    int attempt, max_attempts;
    int64_t token, expired_at;
    char *errors;
} rescue_t;

typedef struct {
    rescue_t *v;
    int n;
} rescue_list_t;

static int rescue_row(const bs_meta_row_t *row, void *ud)
{
    rescue_list_t *l = ud;
    rescue_t *x = &l->v[l->n];
    snprintf(x->id, sizeof x->id, "%s", bs_meta_row_text(row, 0));
    snprintf(x->kind, sizeof x->kind, "%s", bs_meta_row_text(row, 1));
    x->attempt = (int)bs_meta_row_int(row, 2);
    x->max_attempts = (int)bs_meta_row_int(row, 3);
    x->token = bs_meta_row_int(row, 4);
    snprintf(x->owner, sizeof x->owner, "%s", bs_meta_row_text(row, 5));
    x->expired_at = bs_meta_row_int(row, 6);
    x->errors = strdup(bs_meta_row_text(row, 7));
    l->n++;
    return l->n == 100;
}

static void rescue(bs_jobs_t *j)
{
    rescue_t v[100];
    rescue_list_t l = {v, 0};
    bs_err_t err;
    if (bs_meta_query(j->meta, rescue_find_sql[pg(j)], NULL, 0, rescue_row, &l, &err)) {
        BS_LOG(BS_LOG_DEBUG, "jobs", "cannot look for expired job leases: %s", err.msg);
        return;
    }
    if (!l.n)
        return;
    int rescued = 0, rc = bs_meta_tx_begin(j->meta, &err);
    for (int i = 0; i < l.n && !rc; i++) {
        rescue_t *x = &v[i];
        bs__job_kind_t *k = bs__jobs_kind_find(j, x->kind);
        int retry = x->attempt < x->max_attempts;
        int64_t delay = retry ? bs__jobs_backoff_ms(k, x->attempt) : 0;
        char msg[300];
        snprintf(msg, sizeof msg,
                 "lease expired: the holder (%.128s) stopped renewing it (it died or lost the "
                 "metadata store)",
                 x->owner);
        char *errors =
            bs__jobs_errors_append(x->errors, x->attempt, msg, x->owner, x->token, x->expired_at);
        if (!errors) {
            rc = BS_ENOMEM;
            break;
        }
        int changes = 0;
        bs_val_t a[] = {BS_INT(retry),  BS_INT(retry), BS_INT(delay),
                        BS_TXT(errors), BS_TXT(x->id), BS_INT(x->token)};
        rc = bs_meta_exec(j->meta, rescue_sql[pg(j)], a, 6, &changes, &err);
        free(errors);
        if (!rc && changes) {
            rescued++;
            BS_LOG(BS_LOG_INFO, "jobs",
                   "job %s (%s) attempt %d: lease of %s (token %lld) expired; %s", x->id, x->kind,
                   x->attempt, x->owner, (long long)x->token,
                   retry ? "retried after its backoff" : "discarded (no attempts left)");
        }
    }
    if (!rc)
        rc = bs_meta_tx_commit(j->meta, &err);
    else
        bs_meta_tx_rollback(j->meta);
    for (int i = 0; i < l.n; i++)
        free(v[i].errors);
    if (rc) {
        BS_LOG(BS_LOG_WARN, "jobs", "cannot rescue jobs with expired leases: %s", err.msg);
        return;
    }
    pthread_mutex_lock(&j->hub->mu);
    j->rescued += (uint64_t)rescued;
    pthread_mutex_unlock(&j->hub->mu);
}

typedef struct {
    bs_jobs_t *j;
    bs__job_kind_t *k;
    uint64_t t0;
    bs_job_run_t *head, *tail;
    int n, failed;
} claim_ctx_t;

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

static int claimed_row(const bs_meta_row_t *row, void *ud)
{
    claim_ctx_t *c = ud;
    bs_job_run_t *r = calloc(1, sizeof *r);
    if (r) {
        r->tenant = dup_or_empty(bs_meta_row_text(row, 1));
        r->args = dup_or_empty(bs_meta_row_text(row, 2));
        r->errors = dup_or_empty(bs_meta_row_text(row, 6));
    }
    if (!r || !r->tenant || !r->args || !r->errors) {
        /* the row stays claimed; its lease expires and it is rescued */
        if (r)
            run_release(r);
        c->failed++;
        return 0;
    }
    r->hub = c->j->hub;
    r->kind = c->k;
    snprintf(r->id, sizeof r->id, "%s", bs_meta_row_text(row, 0));
    r->attempt = (int)bs_meta_row_int(row, 3);
    r->max_attempts = (int)bs_meta_row_int(row, 4);
    r->token = bs_meta_row_int(row, 5);
    r->done = bs_meta_row_int(row, 7);
    r->total = bs_meta_row_int(row, 8);
    atomic_store(&r->cancelled, bs_meta_row_int(row, 9) != 0);
    r->valid_until_ns = c->t0 + (uint64_t)c->j->lease_ms * MS;
    r->samples[0].t = c->t0;
    r->samples[0].done = r->done;
    r->nsamples = 1;
    if (c->tail)
        c->tail->qnext = r;
    else
        c->head = r;
    c->tail = r;
    c->n++;
    return 0;
}

/* One claim statement for kind k. Returns 1 when it filled its batch (there may be more). */
static int claim_kind(bs_jobs_t *j, bs__job_kind_t *k, int probe)
{
    bs__jobs_hub_t *h = j->hub;
    pthread_mutex_lock(&h->mu);
    int want = k->concurrency - k->inflight;
    int room = READY_MAX - j->nready;
    if (room < want)
        want = room;
    if (want > CLAIM_BATCH)
        want = CLAIM_BATCH;
    int maybe = k->maybe_more;
    k->maybe_more = 0; /* an enqueue during the claim sets it again */
    pthread_mutex_unlock(&h->mu);
    if (want <= 0) {
        if (maybe) {
            pthread_mutex_lock(&h->mu);
            k->maybe_more = 1; /* full now: ends will make room */
            pthread_mutex_unlock(&h->mu);
        }
        return 0;
    }
    bs_err_t err;
    if (!maybe) {
        if (!probe)
            return 0;
        int found = 0;
        bs_val_t a[] = {BS_TXT(k->name)};
        if (bs_meta_query(j->meta,
                          "SELECT 1 FROM jobs WHERE kind = ? AND state = 'available' LIMIT 1", a, 1,
                          any_row, &found, &err) ||
            !found)
            return 0;
    }
    claim_ctx_t c = {j, k, bs_time_mono_ns(), NULL, NULL, 0, 0};
    bs_val_t cond[] = {BS_TXT(k->name)};
    int n = bs_lease_claim(j->meta, &claim_sql, j->owner, j->lease_ms, cond, 1, want, claimed_row,
                           &c, &err);
    if (n < 0) {
        BS_LOG(BS_LOG_WARN, "jobs", "cannot claim jobs of kind %s: %s", k->name, err.msg);
        pthread_mutex_lock(&h->mu);
        k->maybe_more = 1;
        pthread_mutex_unlock(&h->mu);
        return 0;
    }
    if (c.failed)
        BS_LOG(BS_LOG_ERROR, "jobs", "out of memory: %d claimed jobs of kind %s left to expire",
               c.failed, k->name);
    pthread_mutex_lock(&h->mu);
    for (bs_job_run_t *r = c.head; r; r = r->qnext) {
        h->refs++;
        registry_add(j, r);
    }
    if (c.head) {
        if (j->ready_tail)
            j->ready_tail->qnext = c.head;
        else
            j->ready_head = c.head;
        j->ready_tail = c.tail;
        j->nready += c.n;
        k->inflight += c.n;
        k->claimed += (uint64_t)c.n;
        if (c.n > 1)
            pthread_cond_broadcast(&j->work_cv);
        else
            pthread_cond_signal(&j->work_cv);
    }
    int full = n >= want;
    if (full)
        k->maybe_more = 1;
    pthread_mutex_unlock(&h->mu);
    return full;
}

static void *claimer_main(void *arg)
{
    bs_jobs_t *j = arg;
    bs__jobs_hub_t *h = j->hub;
    uint64_t next_poll = 0, next_rescue = 0;
    uint64_t rescue_every = (uint64_t)(j->lease_ms / 3 < 1000 ? j->lease_ms / 3 : 1000) * MS;
    pthread_mutex_lock(&h->mu);
    while (!j->stopping) {
        uint64_t now = bs_time_mono_ns();
        if (!j->kicked && now < next_poll) {
            wait_until(&j->claim_cv, &h->mu, next_poll);
            continue;
        }
        int timer = now >= next_poll;
        j->kicked = 0;
        pthread_mutex_unlock(&h->mu);
        if (timer) {
            promote(j);
            if (now >= next_rescue) {
                rescue(j);
                next_rescue = now + rescue_every;
            }
        }
        int more = 0;
        for (int i = 0; i < j->nkinds; i++)
            more |= claim_kind(j, &j->kinds[i], timer);
        pthread_mutex_lock(&h->mu);
        if (timer)
            next_poll = now + (uint64_t)j->poll_ms * MS;
        if (more)
            j->kicked = 1;
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* ---- workers --------------------------------------------------------------------------- */

static void *worker_main(void *arg)
{
    bs_jobs_t *j = arg;
    bs__jobs_hub_t *h = j->hub;
    pthread_mutex_lock(&h->mu);
    while (!j->stopping) {
        bs_job_run_t *r = j->ready_head;
        if (!r) {
            pthread_cond_wait(&j->work_cv, &h->mu);
            continue;
        }
        j->ready_head = r->qnext;
        if (!j->ready_head)
            j->ready_tail = NULL;
        j->nready--;
        r->qnext = NULL;
        r->started = 1;
        bs__job_kind_t *k = r->kind;
        pthread_mutex_unlock(&h->mu);
        k->k.run(k->k.ud, r); /* r may be gone when it returns */
        pthread_mutex_lock(&h->mu);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* ---- the writer ------------------------------------------------------------------------ */

#define FINAL_OK(now)                                                                              \
    "UPDATE jobs SET state = 'completed', finalized_at = " now ", result = ?,"                     \
    " result_location = ?, progress_done = ?, progress_total = ?, progress_rate = ?,"              \
    " lease_expires_at = 0 WHERE id = ? AND lease_owner = ? AND lease_token = ? AND"               \
    " state = 'running' RETURNING state"
/* Binds: retry, retry, delay ms, errors, done, total, rate, id, owner, token. */
#define FINAL_FAIL(now)                                                                            \
    "UPDATE jobs SET state = CASE WHEN cancel_requested = 1 THEN 'cancelled' WHEN ? = 1 THEN"      \
    " 'retryable' ELSE 'discarded' END, finalized_at = CASE WHEN cancel_requested = 1 OR ? = 0"    \
    " THEN " now " ELSE NULL END, scheduled_at = " now " + ?, errors = ?, progress_done = ?,"      \
    " progress_total = ?, progress_rate = ?, lease_expires_at = 0"                                 \
    " WHERE id = ? AND lease_owner = ? AND lease_token = ? AND state = 'running' RETURNING state"
/* The attempts in flight as a table v(jid, tok, pdone, ptotal, prate) made from one bound
 * JSON array [[id, token, done, total, rate], …] (fields left out are NULL), so that one
 * statement renews, writes the progress of, or polls for the cancellation of all of them: a
 * statement per attempt would cost a round trip each, on PostgreSQL inside the cluster-wide
 * write lock. Each row is guarded as every write after the claim is (HELD). On SQLite
 * `+state` keeps the planner off jobs_due (a scan of every running job of every replica)
 * and on the primary key: one lookup per entry. */
#define INFLIGHT_S                                                                                 \
    "(SELECT json_extract(value, '$[0]') AS jid, json_extract(value, '$[1]') AS tok,"              \
    " json_extract(value, '$[2]') AS pdone, json_extract(value, '$[3]') AS ptotal,"                \
    " json_extract(value, '$[4]') AS prate FROM json_each(?)) AS v"
#define INFLIGHT_P                                                                                 \
    "(SELECT x->>0 AS jid, CAST(x->>1 AS BIGINT) AS tok, CAST(x->>2 AS BIGINT) AS pdone,"          \
    " CAST(x->>3 AS BIGINT) AS ptotal, CAST(x->>4 AS DOUBLE PRECISION) AS prate"                   \
    " FROM jsonb_array_elements(CAST(? AS jsonb)) AS x) AS v"
#define HELD(state) " id = v.jid AND lease_token = v.tok AND lease_owner = ? AND " state " = 'running'"
/* Binds: ttl, the array, owner. */
#define HEARTBEAT(now, inflight, state)                                                            \
    "UPDATE jobs SET lease_expires_at = " now " + ? FROM " inflight " WHERE" HELD(state)            \
    " RETURNING id, lease_token, cancel_requested"
/* Binds: the array, owner. */
#define PROGRESS(inflight, state)                                                                  \
    "UPDATE jobs SET progress_done = v.pdone, progress_total = v.ptotal, progress_rate = v.prate"  \
    " FROM " inflight " WHERE" HELD(state)
#define CANCEL_POLL(inflight, state)                                                               \
    "SELECT id, lease_token FROM jobs JOIN " inflight " ON" HELD(state) " WHERE cancel_requested = 1"
/* Binds: attempt decrement (1: never started), errors, id, owner, token. */
#define RELEASE(now)                                                                               \
    "UPDATE jobs SET state = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'available'"     \
    " END, finalized_at = CASE WHEN cancel_requested = 1 THEN " now " ELSE NULL END,"              \
    " attempt = attempt - ?, errors = ?, scheduled_at = " now ", lease_expires_at = 0"             \
    " WHERE id = ? AND lease_owner = ? AND lease_token = ? AND state = 'running'"
static const char *const final_ok_sql[] = {FINAL_OK(NOW_S), FINAL_OK(NOW_P)};
static const char *const final_fail_sql[] = {FINAL_FAIL(NOW_S), FINAL_FAIL(NOW_P)};
static const char *const heartbeat_sql[] = {HEARTBEAT(NOW_S, INFLIGHT_S, "+state"),
                                            HEARTBEAT(NOW_P, INFLIGHT_P, "state")};
static const char *const progress_sql[] = {PROGRESS(INFLIGHT_S, "+state"),
                                           PROGRESS(INFLIGHT_P, "state")};
static const char *const cancel_poll_sql[] = {CANCEL_POLL(INFLIGHT_S, "+state"),
                                              CANCEL_POLL(INFLIGHT_P, "state")};
static const char *const release_sql[] = {RELEASE(NOW_S), RELEASE(NOW_P)};

static bs_val_t rate_val(const bs_job_run_t *r)
{
    double rate = bs__jobs_rate(r->samples, r->nsamples);
    return r->nsamples >= 2 ? BS_DBL(rate) : BS_NUL;
}

typedef struct {
    char state[16];
} final_row_t;

static int final_row(const bs_meta_row_t *row, void *ud)
{
    snprintf(((final_row_t *)ud)->state, sizeof((final_row_t *)ud)->state, "%s",
             bs_meta_row_text(row, 0));
    return 1;
}

/* Writes the ends of batch (a qnext list of ENDED runs, owned by this thread now) in one
 * transaction; fills each run's outcome into states[i]. 0, or the store's error (nothing
 * written). */
static int write_ends(bs_jobs_t *j, bs_job_run_t *batch, final_row_t *states, bs_err_t *err)
{
    int rc = bs_meta_tx_begin(j->meta, err);
    if (rc)
        return rc;
    int i = 0;
    for (bs_job_run_t *r = batch; r && !rc; r = r->qnext, i++) {
        states[i].state[0] = 0;
        if (r->completed) {
            bs_val_t a[] = {BS_TXT(r->result), BS_TXT(r->location), BS_INT(r->done),
                            BS_INT(r->total),  rate_val(r),         BS_TXT(r->id),
                            BS_TXT(j->owner),  BS_INT(r->token)};
            rc = bs_meta_query(j->meta, final_ok_sql[pg(j)], a, 8, final_row, &states[i], err);
            continue;
        }
        /* shutdown's interruption: again at once, even past max_attempts (the attempt did
         * not fail on its own) */
        int retry = r->retryable && (r->interrupted || r->attempt < r->max_attempts);
        int64_t delay = !retry || r->interrupted ? 0
                        : r->retry_after_ms      ? r->retry_after_ms
                                                 : bs__jobs_backoff_ms(r->kind, r->attempt);
        if (delay > BACKOFF_CAP_MS)
            delay = BACKOFF_CAP_MS;
        char *errors =
            bs__jobs_errors_append(r->errors, r->attempt, r->error, j->owner, r->token, 0);
        if (!errors) {
            rc = bs_err_set(err, BS_ENOMEM, "out of memory recording a job's error");
            break;
        }
        bs_val_t a[] = {BS_INT(retry),    BS_INT(retry),    BS_INT(delay), BS_TXT(errors),
                        BS_INT(r->done),  BS_INT(r->total), rate_val(r),   BS_TXT(r->id),
                        BS_TXT(j->owner), BS_INT(r->token)};
        rc = bs_meta_query(j->meta, final_fail_sql[pg(j)], a, 10, final_row, &states[i], err);
        free(errors);
    }
    if (rc) {
        bs_meta_tx_rollback(j->meta);
        return rc;
    }
    return bs_meta_tx_commit(j->meta, err);
}

/* Must hold mu; takes the whole done list. */
static bs_job_run_t *take_done(bs_jobs_t *j, int *n)
{
    bs_job_run_t *b = j->done_head;
    *n = j->ndone;
    j->done_head = j->done_tail = NULL;
    j->ndone = 0;
    return b;
}

/* Must hold mu (released around the SQL). Writes the ends queued so far. Returns 0, or -1
 * when the store failed (the batch is queued again, first). drop: on failure free them
 * anyway (shutdown gives up: their leases expire and another replica rescues them). */
static int flush_ends(bs_jobs_t *j, int drop)
{
    bs__jobs_hub_t *h = j->hub;
    int n;
    bs_job_run_t *batch = take_done(j, &n);
    if (!batch)
        return 0;
    pthread_mutex_unlock(&h->mu);
    final_row_t *states = calloc((size_t)n, sizeof *states);
    bs_err_t err;
    int rc = states ? write_ends(j, batch, states, &err)
                    : bs_err_set(&err, BS_ENOMEM, "out of memory writing job ends");
    pthread_mutex_lock(&h->mu);
    if (rc && !drop) {
        BS_LOG(BS_LOG_WARN, "jobs", "cannot write %d job ends (retrying): %s", n, err.msg);
        bs_job_run_t *tail = batch;
        while (tail->qnext)
            tail = tail->qnext;
        tail->qnext = j->done_head;
        if (!j->done_head)
            j->done_tail = tail;
        j->done_head = batch;
        j->ndone += n;
        free(states);
        return -1;
    }
    if (rc)
        BS_LOG(BS_LOG_ERROR, "jobs", "dropping %d job ends at shutdown: %s", n, err.msg);
    int i = 0;
    for (bs_job_run_t *r = batch, *next; r; r = next, i++) {
        next = r->qnext;
        bs__job_kind_t *k = r->kind;
        const char *st = rc ? "" : states[i].state;
        if (!strcmp(st, "completed"))
            k->completed++;
        else if (!strcmp(st, "retryable"))
            k->failed++;
        else if (!strcmp(st, "discarded"))
            k->discarded++;
        else if (!strcmp(st, "cancelled"))
            k->cancelled++;
        else if (!rc) {
            j->stale_ends++;
            BS_LOG(BS_LOG_INFO, "jobs",
                   "job %s (%s) attempt %d ended after its claim was lost (token %lld): "
                   "ignored",
                   r->id, k->name, r->attempt, (long long)r->token);
        }
        registry_remove(j, r);
        h->refs--; /* run_free's unref, inlined: mu is held */
        run_release(r);
    }
    free(states);
    pthread_cond_broadcast(&j->idle_cv);
    return 0;
}

typedef struct {
    bs_job_run_t *r;
    char id[37];
    int64_t token;
    int progress; /* its progress is in the progress array */
    int renewed;  /* the renewal returned its row */
    int cancel;
} tick_t;

typedef struct {
    tick_t *v; /* sorted by (id, token) */
    int n;
} tick_list_t;

static int tick_cmp(const void *a, const void *b)
{
    const tick_t *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : (x->token > y->token) - (x->token < y->token);
}

/* The attempt of a returned row (id, lease_token, …), or NULL. */
static tick_t *tick_find(const tick_list_t *l, const bs_meta_row_t *row)
{
    tick_t key;
    snprintf(key.id, sizeof key.id, "%s", bs_meta_row_text(row, 0));
    key.token = bs_meta_row_int(row, 1);
    return bsearch(&key, l->v, (size_t)l->n, sizeof *l->v, tick_cmp);
}

static int heartbeat_row(const bs_meta_row_t *row, void *ud)
{
    tick_t *t = tick_find(ud, row);
    if (t) {
        t->renewed = 1;
        t->cancel |= bs_meta_row_int(row, 2) != 0;
    }
    return 0;
}

static int cancel_row(const bs_meta_row_t *row, void *ud)
{
    tick_t *t = tick_find(ud, row);
    if (t)
        t->cancel = 1;
    return 0;
}

/* [[id, token], …] of every attempt in v; with progress, [[id, token, done, total, rate], …]
 * of those whose progress is to be written. Must hold mu (reads the runs). */
static void inflight_json(bs_buf_t *b, const tick_t *v, int n, int progress)
{
    bs_jw_arr_begin(b);
    for (int i = 0; i < n; i++) {
        if (progress && !v[i].progress)
            continue;
        bs_jw_arr_begin(b);
        bs_jw_str(b, v[i].id);
        bs_jw_int(b, v[i].token);
        if (progress) {
            const bs_job_run_t *r = v[i].r;
            bs_jw_int(b, r->done);
            bs_jw_int(b, r->total);
            if (r->nsamples >= 2)
                bs_jw_double(b, bs__jobs_rate(r->samples, r->nsamples));
            else
                bs_jw_null(b);
        }
        bs_jw_arr_end(b);
    }
    bs_jw_arr_end(b);
}

/* Must hold mu (released around the SQL): progress writes, lease renewals (beat), the
 * cancel poll, lost claims. One statement for each, whatever the number of attempts. */
static void tick(bs_jobs_t *j, int beat)
{
    bs__jobs_hub_t *h = j->hub;
    uint64_t now = bs_time_mono_ns();
    int n = 0, nprog = 0;
    for (bs_job_run_t *r = j->registry; r; r = r->next)
        n++;
    if (!n)
        return;
    tick_t *v = calloc((size_t)n, sizeof *v);
    if (!v)
        return;
    int m = 0;
    for (bs_job_run_t *r = j->registry; r; r = r->next) {
        if (r->state == BS__RUN_LIVE && !r->lost && now >= r->valid_until_ns) {
            r->lost = 1;
            atomic_store(&r->cancelled, 1);
            j->lost_leases++;
            BS_LOG(BS_LOG_WARN, "jobs",
                   "job %s (%s) attempt %d: lease not renewed in time; "
                   "the attempt is told to stop",
                   r->id, r->kind->name, r->attempt);
        }
        if (r->lost)
            continue;
        tick_t *t = &v[m++];
        t->r = r;
        snprintf(t->id, sizeof t->id, "%s", r->id);
        t->token = r->token;
        t->progress = r->dirty && r->state == BS__RUN_LIVE;
        if (t->progress) {
            r->dirty = 0;
            nprog++;
        }
    }
    if (!m) {
        free(v);
        return;
    }
    qsort(v, (size_t)m, sizeof *v, tick_cmp);
    bs_buf_t all, prog;
    bs_buf_init(&all);
    bs_buf_init(&prog);
    inflight_json(&all, v, m, 0);
    if (nprog)
        inflight_json(&prog, v, m, 1);
    pthread_mutex_unlock(&h->mu);
    bs_err_t err;
    uint64_t t0 = bs_time_mono_ns();
    tick_list_t l = {v, m};
    int rc = all.oom || prog.oom ? bs_err_set(&err, BS_ENOMEM, "out of memory") : 0;
    if (!rc && nprog && beat) /* both or neither */
        rc = bs_meta_tx_begin(j->meta, &err);
    int in_tx = !rc && nprog && beat;
    if (!rc && nprog) {
        bs_val_t a[] = {BS_TXT(prog.data), BS_TXT(j->owner)};
        rc = bs_meta_exec(j->meta, progress_sql[pg(j)], a, 2, NULL, &err);
    }
    if (!rc && beat) { /* a renewal returns cancel_requested itself */
        bs_val_t a[] = {BS_INT(j->lease_ms), BS_TXT(all.data), BS_TXT(j->owner)};
        rc = bs_meta_query(j->meta, heartbeat_sql[pg(j)], a, 3, heartbeat_row, &l, &err);
    }
    if (in_tx && !rc)
        rc = bs_meta_tx_commit(j->meta, &err);
    else if (in_tx)
        bs_meta_tx_rollback(j->meta);
    if (!rc && !beat) {
        bs_val_t a[] = {BS_TXT(all.data), BS_TXT(j->owner)};
        rc = bs_meta_query(j->meta, cancel_poll_sql[pg(j)], a, 2, cancel_row, &l, &err);
    }
    bs_buf_free(&all);
    bs_buf_free(&prog);
    pthread_mutex_lock(&h->mu);
    if (rc)
        BS_LOG(BS_LOG_WARN, "jobs", "cannot %s running jobs: %s",
               beat ? "renew the leases of" : "write the progress of", err.msg);
    /* The runs are still there: only this thread removes them. */
    for (int i = 0; i < m; i++) {
        tick_t *t = &v[i];
        bs_job_run_t *r = t->r;
        if (rc) {
            if (t->progress)
                r->dirty = 1;
            continue;
        }
        if (t->cancel)
            atomic_store(&r->cancelled, 1);
        if (!beat)
            continue;
        if (t->renewed) {
            r->valid_until_ns = t0 + (uint64_t)j->lease_ms * MS;
        } else if (!r->lost) {
            r->lost = 1;
            atomic_store(&r->cancelled, 1);
            j->lost_leases++;
            BS_LOG(BS_LOG_WARN, "jobs",
                   "job %s (%s) attempt %d: claim lost (token %lld is no longer the job's); "
                   "the attempt is told to stop",
                   r->id, r->kind->name, r->attempt, (long long)r->token);
        }
    }
    free(v);
}

/* Must hold mu (released around the SQL). Releases the claims of never-started runs
 * (attempt given back) and, with detach, of the live ones still in flight. */
typedef struct {
    char id[37];
    int64_t token;
    int never_started;
    char *errors;
} release_t;

static void release_claims(bs_jobs_t *j, int detach)
{
    bs__jobs_hub_t *h = j->hub;
    int n = 0;
    for (bs_job_run_t *r = j->ready_head; r; r = r->qnext)
        n++;
    if (detach)
        for (bs_job_run_t *r = j->registry; r; r = r->next)
            n += r->state == BS__RUN_LIVE && r->started;
    if (!n)
        return;
    release_t *v = calloc((size_t)n, sizeof *v);
    int m = 0;
    bs_job_run_t *ready = j->ready_head;
    j->ready_head = j->ready_tail = NULL;
    j->nready = 0;
    for (bs_job_run_t *r = ready, *next; r; r = next) {
        next = r->qnext;
        if (v) {
            snprintf(v[m].id, sizeof v[m].id, "%s", r->id);
            v[m].token = r->token;
            v[m].never_started = 1;
            v[m].errors = strdup(r->errors);
            m++;
        }
        r->kind->inflight--;
        registry_remove(j, r);
        h->refs--; /* as in flush_ends */
        run_release(r);
    }
    if (detach)
        for (bs_job_run_t *r = j->registry, *next; r; r = next) {
            next = r->next;
            if (r->state != BS__RUN_LIVE || !r->started)
                continue;
            if (v) {
                snprintf(v[m].id, sizeof v[m].id, "%s", r->id);
                v[m].token = r->token;
                v[m].errors = bs__jobs_errors_append(
                    r->errors, r->attempt,
                    "interrupted: the replica shut down with the attempt in flight", j->owner,
                    r->token, 0);
                m++;
            }
            r->state = BS__RUN_DETACHED; /* its end frees it; the hub outlives j for that */
            r->kind->inflight--;
            registry_remove(j, r);
            BS_LOG(BS_LOG_WARN, "jobs",
                   "job %s (%s) attempt %d still running at shutdown: "
                   "released for another replica",
                   r->id, r->kind->name, r->attempt);
        }
    pthread_cond_broadcast(&j->idle_cv);
    pthread_mutex_unlock(&h->mu);
    bs_err_t err;
    int rc = 0;
    if (v && m) {
        rc = bs_meta_tx_begin(j->meta, &err);
        for (int i = 0; i < m && !rc; i++) {
            bs_val_t a[] = {BS_INT(v[i].never_started), BS_TXT(v[i].errors ? v[i].errors : "[]"),
                            BS_TXT(v[i].id), BS_TXT(j->owner), BS_INT(v[i].token)};
            rc = bs_meta_exec(j->meta, release_sql[pg(j)], a, 5, NULL, &err);
        }
        if (!rc)
            rc = bs_meta_tx_commit(j->meta, &err);
        else
            bs_meta_tx_rollback(j->meta);
        if (rc)
            BS_LOG(BS_LOG_WARN, "jobs",
                   "cannot release %d job claims at shutdown (their leases "
                   "expire): %s",
                   m, err.msg);
    }
    for (int i = 0; v && i < m; i++)
        free(v[i].errors);
    free(v);
    pthread_mutex_lock(&h->mu);
}

static void *writer_main(void *arg)
{
    bs_jobs_t *j = arg;
    bs__jobs_hub_t *h = j->hub;
    uint64_t beat_every = (uint64_t)j->lease_ms * MS / 3;
    uint64_t tick_every = beat_every < PROGRESS_MS * MS ? beat_every : PROGRESS_MS * MS;
    uint64_t now = bs_time_mono_ns();
    uint64_t next_tick = now + tick_every, next_beat = now + beat_every, retry_at = 0;
    pthread_mutex_lock(&h->mu);
    for (;;) {
        now = bs_time_mono_ns();
        if (j->stopping && j->ready_head) {
            release_claims(j, 0);
            continue;
        }
        if (j->detach) {
            flush_ends(j, 1);
            release_claims(j, 1);
            j->detach = 0;
            continue;
        }
        if (now >= next_tick) { /* first: a stream of ends must not starve the renewals */
            int beat = now >= next_beat;
            tick(j, beat);
            next_tick = bs_time_mono_ns() + tick_every;
            if (beat)
                next_beat = now + beat_every;
            continue;
        }
        if (j->done_head && now >= retry_at) {
            if (flush_ends(j, 0))
                retry_at = bs_time_mono_ns() + RETRY_WRITE_MS * MS;
            continue;
        }
        if (j->stopping && j->nregistry == 0 && j->have_claimer == 0)
            break;
        uint64_t until = next_tick;
        if (j->done_head && retry_at < until)
            until = retry_at;
        wait_until(&j->write_cv, &h->mu, until);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* ---- start and stop -------------------------------------------------------------------- */

int bs__jobs_start_threads(bs_jobs_t *j, bs_err_t *err)
{
    j->workers = calloc((size_t)j->nworkers, sizeof *j->workers);
    if (!j->workers)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    if (pthread_create(&j->writer, NULL, writer_main, j) != 0)
        return bs_err_set(err, BS_EUNAVAIL, "cannot start the job writer thread");
    j->have_writer = 1;
    for (int i = 0; i < j->nworkers; i++) {
        if (pthread_create(&j->workers[i], NULL, worker_main, j) != 0)
            return bs_err_set(err, BS_EUNAVAIL, "cannot start job worker %d", i);
        j->nstarted_workers++;
    }
    if (pthread_create(&j->claimer, NULL, claimer_main, j) != 0)
        return bs_err_set(err, BS_EUNAVAIL, "cannot start the job claimer thread");
    j->have_claimer = 1;
    return 0;
}

void bs__jobs_stop_threads(bs_jobs_t *j)
{
    bs__jobs_hub_t *h = j->hub;
    pthread_mutex_lock(&h->mu);
    j->stopping = 1;
    for (bs_job_run_t *r = j->registry; r; r = r->next)
        if (r->state == BS__RUN_LIVE && r->started) {
            r->interrupted = 1;
            atomic_store(&r->cancelled, 1);
        }
    pthread_cond_broadcast(&j->claim_cv);
    pthread_cond_broadcast(&j->work_cv);
    pthread_cond_broadcast(&j->write_cv);
    pthread_mutex_unlock(&h->mu);
    if (j->have_claimer)
        pthread_join(j->claimer, NULL);
    for (int i = 0; i < j->nstarted_workers; i++)
        pthread_join(j->workers[i], NULL);
    pthread_mutex_lock(&h->mu);
    j->have_claimer = 0;
    /* runs claimed while stopping were not started: the writer releases them */
    pthread_cond_broadcast(&j->write_cv);
    uint64_t until = bs_time_mono_ns() + (uint64_t)j->lease_ms * MS / 3;
    while (j->nregistry && bs_time_mono_ns() < until)
        wait_until(&j->idle_cv, &h->mu, until);
    if (j->nregistry) {
        j->detach = 1;
        pthread_cond_broadcast(&j->write_cv);
    }
    pthread_mutex_unlock(&h->mu);
    if (j->have_writer)
        pthread_join(j->writer, NULL);
}
