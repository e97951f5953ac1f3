/*
 * The job runtime's front (jobs.h): its lifecycle, kinds, enqueue (one job or a batch in
 * one transaction), the queries behind GET /v1/jobs, cancel, retry, statistics and the
 * retention singleton. Claiming and running live in jobs_worker.c; jobs_int.h describes
 * the threads and the locking.
 *
 * Every time the runtime writes is the database's clock (one SQL expression per dialect,
 * as store/lease.c does), so replicas whose clocks disagree still agree on when a job is
 * due and when a lease ended. Statements are string literals chosen per dialect: the store
 * caches prepared statements by the SQL text's address.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/id.h"
#include "base/json.h"
#include "base/log.h"
#include "base/time.h"
#include "events/jobs_int.h"

#define NOW_S BS__JOBS_NOW_S
#define NOW_P BS__JOBS_NOW_P

static const char *const state_names[] = {"available", "scheduled", "running",  "retryable",
                                          "completed", "discarded", "cancelled"};

const char *bs_job_state_name(bs_job_state_t s)
{
    return (unsigned)s < sizeof state_names / sizeof *state_names ? state_names[s] : NULL;
}

int bs_job_state_parse(const char *s, bs_job_state_t *out)
{
    for (unsigned i = 0; s && i < sizeof state_names / sizeof *state_names; i++)
        if (!strcmp(s, state_names[i])) {
            *out = (bs_job_state_t)i;
            return 0;
        }
    return BS_EINVAL;
}

static int pg(const bs_jobs_t *j)
{
    return bs_meta_dialect(j->meta) == BS_META_POSTGRES;
}

/* ---- lifecycle ------------------------------------------------------------------------- */

void bs__jobs_hub_unref(bs__jobs_hub_t *h)
{
    pthread_mutex_lock(&h->mu);
    int last = --h->refs == 0;
    pthread_mutex_unlock(&h->mu);
    if (last) {
        pthread_mutex_destroy(&h->mu);
        free(h);
    }
}

bs_jobs_t *bs_jobs_new(bs_meta_t *m, const bs_jobs_opts_t *o, bs_err_t *err)
{
    bs_jobs_opts_t none = {0};
    if (!o)
        o = &none;
    if (!m) {
        bs_err_set(err, BS_EINVAL, "the job runtime needs a metadata store");
        return NULL;
    }
    if (o->workers < 0 || o->workers > 1024 || o->lease_ms < 0 ||
        (o->lease_ms && o->lease_ms < 30) || o->poll_ms < 0 || o->retention_ms < 0) {
        bs_err_set(err, BS_EINVAL,
                   "job runtime options: workers 0..1024, lease_ms 0 or >= 30, poll_ms and "
                   "retention_ms >= 0");
        return NULL;
    }
    const char *owner = o->owner && *o->owner ? o->owner : "basalt";
    if (strlen(owner) >= 128) {
        bs_err_set(err, BS_EINVAL, "job runtime owner must be under 128 bytes");
        return NULL;
    }
    bs_jobs_t *j = calloc(1, sizeof *j);
    bs__jobs_hub_t *h = calloc(1, sizeof *h);
    if (!j || !h) {
        free(j);
        free(h);
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&h->mu, NULL);
    h->j = j;
    h->refs = 1;
    j->hub = h;
    j->meta = m;
    snprintf(j->owner, sizeof j->owner, "%s", owner);
    j->nworkers = o->workers ? o->workers : 4;
    j->lease_ms = o->lease_ms ? o->lease_ms : 30000;
    j->poll_ms = o->poll_ms ? o->poll_ms : 200;
    j->retention_ms = o->retention_ms ? o->retention_ms : 7LL * 86400 * 1000;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->claim_cv, &ca);
    pthread_cond_init(&j->work_cv, &ca);
    pthread_cond_init(&j->write_cv, &ca);
    pthread_cond_init(&j->idle_cv, &ca);
    pthread_condattr_destroy(&ca);
    return j;
}

static int kind_name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

int bs_jobs_register(bs_jobs_t *j, const bs_job_kind_t *k, bs_err_t *err)
{
    if (j->started)
        return bs_err_set(err, BS_EINVAL, "job kinds are registered before bs_jobs_start");
    if (!k || !kind_name_ok(k->kind) || !k->run)
        return bs_err_set(err, BS_EINVAL,
                          "a job kind needs a name of 1-63 characters [a-z0-9_.-] and a handler");
    if (k->max_attempts < 0 || k->max_attempts > 1000000 || k->concurrency < 0 ||
        k->concurrency > 100000)
        return bs_err_set(err, BS_EINVAL,
                          "job kind '%s': max_attempts 0..1000000, concurrency 0..100000", k->kind);
    if (bs__jobs_kind_find(j, k->kind))
        return bs_err_set(err, BS_ECONFLICT, "job kind '%s' is registered twice", k->kind);
    if (j->nkinds == BS__JOBS_KINDS_MAX)
        return bs_err_set(err, BS_EINVAL, "at most %d job kinds", BS__JOBS_KINDS_MAX);
    bs__job_kind_t *x = &j->kinds[j->nkinds++];
    memset(x, 0, sizeof *x);
    x->k = *k;
    snprintf(x->name, sizeof x->name, "%s", k->kind);
    x->k.kind = x->name;
    x->max_attempts = k->max_attempts ? k->max_attempts : BS__JOBS_DEFAULT_ATTEMPTS;
    x->concurrency = k->concurrency ? k->concurrency : j->nworkers;
    x->maybe_more = 1;
    return 0;
}

bs__job_kind_t *bs__jobs_kind_find(bs_jobs_t *j, const char *name)
{
    for (int i = 0; name && i < j->nkinds; i++)
        if (!strcmp(j->kinds[i].name, name))
            return &j->kinds[i];
    return NULL;
}

int bs_jobs_kind(bs_jobs_t *j, const char *kind, bs_job_kind_t *out)
{
    bs__job_kind_t *k = bs__jobs_kind_find(j, kind);
    if (!k)
        return BS_ENOTFOUND;
    *out = k->k;
    out->max_attempts = k->max_attempts;
    out->concurrency = k->concurrency;
    return 0;
}

void bs_jobs_kinds_json(bs_jobs_t *j, bs_buf_t *b)
{
    bs_jw_obj_begin(b);
    bs_jw_key(b, "items");
    bs_jw_arr_begin(b);
    for (int i = 0; i < j->nkinds; i++) {
        const bs__job_kind_t *k = &j->kinds[i];
        bs_jw_obj_begin(b);
        bs_jw_key(b, "kind");
        bs_jw_str(b, k->name);
        bs_jw_key(b, "description");
        bs_jw_str(b, k->k.description ? k->k.description : "");
        bs_jw_key(b, "max_attempts");
        bs_jw_int(b, k->max_attempts);
        bs_jw_key(b, "concurrency");
        bs_jw_int(b, k->concurrency);
        bs_jw_key(b, "api_enqueue");
        bs_jw_bool(b, k->k.api_enqueue);
        bs_jw_key(b, "backoff");
        bs_jw_str(b, k->k.backoff_ms ? "custom" : "attempt^4 s ± 10%");
        bs_jw_obj_end(b);
    }
    bs_jw_arr_end(b);
    bs_jw_obj_end(b);
}

static int runner_held(void *run)
{
    return bs_lease_runner_held(run);
}

static void retention_task(void *ud, bs_lease_runner_t *run, int64_t token)
{
    (void)token;
    bs_jobs_t *j = ud;
    bs_err_t err;
    int n = bs__jobs_retention_pass(j, runner_held, run, &err);
    if (n < 0)
        BS_LOG(BS_LOG_WARN, "jobs", "retention pass failed: %s", err.msg);
    else if (n > 0)
        BS_LOG(BS_LOG_INFO, "jobs", "retention: deleted %d finalized jobs", n);
}

int bs_jobs_start(bs_jobs_t *j, bs_err_t *err)
{
    if (j->started)
        return bs_err_set(err, BS_EINVAL, "the job runtime is started already");
    j->started = 1;
    int rc = bs__jobs_start_threads(j, err);
    if (rc)
        return rc;
    /* A pass every tenth of the retention (between 100 ms and a minute): a job is deleted
     * at most ~10% after its time. */
    int64_t period = j->retention_ms / 10;
    period = period < 100 ? 100 : period > 60000 ? 60000 : period;
    bs_lease_runner_opts_t ro = {.name = "job-retention",
                                 .owner = j->owner,
                                 .ttl_ms = j->lease_ms,
                                 .period_ms = period,
                                 .task = retention_task,
                                 .ud = j};
    j->retention = bs_lease_runner_start(j->meta, &ro, err);
    return j->retention ? 0 : err->code;
}

void bs_jobs_free(bs_jobs_t *j)
{
    if (!j)
        return;
    bs_lease_runner_stop(j->retention);
    j->retention = NULL;
    if (j->started)
        bs__jobs_stop_threads(j);
    free(j->workers);
    pthread_cond_destroy(&j->claim_cv);
    pthread_cond_destroy(&j->work_cv);
    pthread_cond_destroy(&j->write_cv);
    pthread_cond_destroy(&j->idle_cv);
    bs__jobs_hub_t *h = j->hub;
    pthread_mutex_lock(&h->mu);
    h->j = NULL; /* detached runs that end later only free themselves */
    pthread_mutex_unlock(&h->mu);
    free(j);
    bs__jobs_hub_unref(h);
}

/* Wakes the claimer for n kinds (NULL: the first n registered): a claim may find jobs. */
static void wake(bs_jobs_t *j, bs__job_kind_t *const *kinds, int n)
{
    pthread_mutex_lock(&j->hub->mu);
    for (int i = 0; i < n; i++)
        (kinds ? kinds[i] : &j->kinds[i])->maybe_more = 1;
    j->kicked = 1;
    pthread_cond_signal(&j->claim_cv);
    pthread_mutex_unlock(&j->hub->mu);
}

void bs_jobs_kick(bs_jobs_t *j)
{
    wake(j, NULL, j->nkinds);
}

/* ---- enqueue --------------------------------------------------------------------------- */

#define INSERT(now)                                                                                \
    "INSERT INTO jobs (id, tenant, kind, state, args, unique_key, priority, max_attempts,"         \
    " scheduled_at, created_at, created_by) VALUES (?, ?, ?, CASE WHEN ? > " now                   \
    " THEN 'scheduled' ELSE 'available' END, ?, ?, ?, ?, CASE WHEN ? > " now " THEN ? ELSE " now   \
    " END, " now ", ?) ON CONFLICT DO NOTHING"
static const char *const insert_sql[] = {INSERT(NOW_S), INSERT(NOW_P)};

#define LIVE "state NOT IN ('completed', 'discarded', 'cancelled')"

static int id_row(const bs_meta_row_t *row, void *ud)
{
    snprintf(ud, 37, "%s", bs_meta_row_text(row, 0));
    return 1;
}

/* Checks one job; field names are prefixed with pre ("" or "jobs[3]."). */
static int check_new(bs_jobs_t *j, const bs_job_new_t *nj, const char *pre, bs__job_kind_t **kind,
                     bs_err_t *err)
{
    char f[64];
    *kind = bs__jobs_kind_find(j, nj->kind);
    if (!*kind) {
        snprintf(f, sizeof f, "%skind", pre);
        return bs_err_setf(err, BS_EINVAL, f, "job kind '%.63s' is not registered",
                           nj->kind ? nj->kind : "");
    }
    if (!nj->tenant || !*nj->tenant || strlen(nj->tenant) > 63) {
        snprintf(f, sizeof f, "%stenant", pre);
        return bs_err_setf(err, BS_EINVAL, f, "a job needs a tenant of 1-63 bytes");
    }
    if (nj->args) {
        size_t n = strlen(nj->args);
        snprintf(f, sizeof f, "%sargs", pre);
        if (n > BS__JOBS_ARGS_MAX)
            return bs_err_setf(err, BS_EINVAL, f, "job args are %zu bytes, at most %d", n,
                               BS__JOBS_ARGS_MAX);
        if (!bs_utf8_valid(nj->args, n))
            return bs_err_setf(err, BS_EINVAL, f, "job args must be valid UTF-8");
        cJSON *a = cJSON_ParseWithLength(nj->args, n);
        int ok = cJSON_IsObject(a);
        cJSON_Delete(a);
        if (!ok)
            return bs_err_setf(err, BS_EINVAL, f, "job args must be a JSON object");
    }
    if (nj->unique_key && (!*nj->unique_key || strlen(nj->unique_key) > BS__JOBS_UNIQUE_MAX ||
                           !bs_utf8_valid(nj->unique_key, strlen(nj->unique_key)))) {
        snprintf(f, sizeof f, "%sunique_key", pre);
        return bs_err_setf(err, BS_EINVAL, f, "unique_key must be 1-%d bytes of UTF-8",
                           BS__JOBS_UNIQUE_MAX);
    }
    if (nj->max_attempts < 0 || nj->max_attempts > 1000000) {
        snprintf(f, sizeof f, "%smax_attempts", pre);
        return bs_err_setf(err, BS_EINVAL, f, "max_attempts must be 1-1000000, got %d",
                           nj->max_attempts);
    }
    if (nj->run_at_ms < 0) {
        snprintf(f, sizeof f, "%srun_at", pre);
        return bs_err_setf(err, BS_EINVAL, f, "run_at must not be before 1970");
    }
    return 0;
}

/* Inserts one checked job (inside or outside a transaction). */
static int insert_one(bs_jobs_t *j, const bs_job_new_t *nj, const bs__job_kind_t *k, char id[37],
                      int *existed, bs_err_t *err)
{
    for (int round = 0; round < 3; round++) {
        bs_uuid7(id);
        int64_t run_at = nj->run_at_ms;
        bs_val_t a[] = {BS_TXT(id),
                        BS_TXT(nj->tenant),
                        BS_TXT(k->name),
                        BS_INT(run_at),
                        BS_TXT(nj->args ? nj->args : "{}"),
                        BS_TXT(nj->unique_key),
                        BS_INT(nj->priority),
                        BS_INT(nj->max_attempts ? nj->max_attempts : k->max_attempts),
                        BS_INT(run_at),
                        BS_INT(run_at),
                        BS_TXT(nj->created_by ? nj->created_by : "")};
        int changes = 0;
        int rc = bs_meta_exec(j->meta, insert_sql[pg(j)], a, 11, &changes, err);
        if (rc)
            return rc;
        if (changes) {
            *existed = 0;
            return 0;
        }
        if (!nj->unique_key)
            continue; /* an id collision: never, but a new id is cheap */
        /* the unique key is taken by a live job: that one is the answer, unless it was
         * finalized meanwhile (then insert again) */
        bs_val_t q[] = {BS_TXT(nj->tenant), BS_TXT(k->name), BS_TXT(nj->unique_key)};
        id[0] = 0;
        rc = bs_meta_query(j->meta,
                           "SELECT id FROM jobs WHERE tenant = ? AND kind = ? AND unique_key = ?"
                           " AND " LIVE,
                           q, 3, id_row, id, err);
        if (rc)
            return rc;
        if (id[0]) {
            *existed = 1;
            return 0;
        }
    }
    return bs_err_set(err, BS_ECONFLICT, "job unique_key '%.64s' kept changing hands; try again",
                      nj->unique_key ? nj->unique_key : "");
}

int bs_jobs_enqueue(bs_jobs_t *j, const bs_job_new_t *nj, char id[37], int *existed, bs_err_t *err)
{
    bs__job_kind_t *k;
    int ex = 0;
    int rc = check_new(j, nj, "", &k, err);
    if (!rc)
        rc = insert_one(j, nj, k, id, &ex, err);
    if (rc)
        return rc;
    if (existed)
        *existed = ex;
    if (!ex)
        wake(j, &k, 1);
    return 0;
}

int bs_jobs_enqueue_many(bs_jobs_t *j, const bs_job_new_t *nj, int n, char (*ids)[37], int *existed,
                         bs_err_t *err)
{
    if (n < 1 || n > BS_JOBS_BATCH_MAX)
        return bs_err_setf(err, BS_EINVAL, "jobs", "a batch holds 1-%d jobs, got %d",
                           BS_JOBS_BATCH_MAX, n);
    bs__job_kind_t **kinds = malloc((size_t)n * sizeof *kinds);
    if (!kinds)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        char pre[24];
        snprintf(pre, sizeof pre, "jobs[%d].", i);
        rc = check_new(j, &nj[i], pre, &kinds[i], err);
    }
    if (!rc)
        rc = bs_meta_tx_begin(j->meta, err);
    if (rc) {
        free(kinds);
        return rc;
    }
    for (int i = 0; i < n && !rc; i++) {
        int ex = 0;
        rc = insert_one(j, &nj[i], kinds[i], ids[i], &ex, err);
        if (existed)
            existed[i] = ex;
    }
    if (rc) {
        bs_meta_tx_rollback(j->meta);
        free(kinds);
        return rc;
    }
    if ((rc = bs_meta_tx_commit(j->meta, err))) {
        free(kinds);
        return rc;
    }
    wake(j, kinds, n);
    free(kinds);
    return 0;
}

/* ---- queries --------------------------------------------------------------------------- */

#define COLS                                                                                       \
    "id, tenant, kind, state, args, unique_key, priority, attempt, max_attempts, errors,"          \
    " progress_done, progress_total, progress_rate, result, result_location, cancel_requested,"    \
    " created_at, scheduled_at, attempted_at, finalized_at, created_by, lease_owner, lease_token"

typedef struct {
    bs_buf_t *b;
    int n, limit;
    char last[37];
} render_t;

static void jw_opt_str(bs_buf_t *b, const bs_meta_row_t *r, int col)
{
    if (bs_meta_row_is_null(r, col))
        bs_jw_null(b);
    else
        bs_jw_str(b, bs_meta_row_text(r, col));
}

static void jw_opt_time(bs_buf_t *b, const bs_meta_row_t *r, int col)
{
    bs_jw_time(b, bs_meta_row_is_null(r, col) ? 0 : bs_meta_row_int(r, col));
}

static void jw_json(bs_buf_t *b, const bs_meta_row_t *r, int col, const char *dflt)
{
    if (bs_meta_row_is_null(r, col)) {
        if (dflt)
            bs_jw_raw(b, dflt, strlen(dflt));
        else
            bs_jw_null(b);
        return;
    }
    const char *t = bs_meta_row_text(r, col);
    bs_jw_raw(b, t, strlen(t));
}

static void render_row(bs_buf_t *b, const bs_meta_row_t *r)
{
    bs_jw_obj_begin(b);
    bs_jw_key(b, "id");
    bs_jw_str(b, bs_meta_row_text(r, 0));
    bs_jw_key(b, "kind");
    bs_jw_str(b, bs_meta_row_text(r, 2));
    bs_jw_key(b, "tenant");
    bs_jw_str(b, bs_meta_row_text(r, 1));
    const char *state = bs_meta_row_text(r, 3);
    bs_jw_key(b, "state");
    bs_jw_str(b, state);
    bs_jw_key(b, "args");
    jw_json(b, r, 4, "{}");
    bs_jw_key(b, "unique_key");
    jw_opt_str(b, r, 5);
    bs_jw_key(b, "priority");
    bs_jw_int(b, bs_meta_row_int(r, 6));
    bs_jw_key(b, "attempt");
    bs_jw_int(b, bs_meta_row_int(r, 7));
    bs_jw_key(b, "max_attempts");
    bs_jw_int(b, bs_meta_row_int(r, 8));
    bs_jw_key(b, "errors");
    jw_json(b, r, 9, "[]");
    int64_t done = bs_meta_row_int(r, 10), total = bs_meta_row_int(r, 11);
    double rate = bs_meta_row_is_null(r, 12) ? 0 : bs_meta_row_double(r, 12);
    bs_jw_key(b, "progress");
    bs_jw_obj_begin(b);
    bs_jw_key(b, "done");
    bs_jw_int(b, done);
    bs_jw_key(b, "total");
    bs_jw_int(b, total);
    bs_jw_key(b, "rate_per_s");
    if (bs_meta_row_is_null(r, 12))
        bs_jw_null(b);
    else
        bs_jw_double(b, rate);
    /* ETA: what is left at the measured rate, while the job runs */
    bs_jw_key(b, "eta_s");
    if (!strcmp(state, "running") && total > 0 && done >= total)
        bs_jw_double(b, 0);
    else if (!strcmp(state, "running") && total > 0 && rate > 0)
        bs_jw_double(b, (double)(total - done) / rate);
    else
        bs_jw_null(b);
    bs_jw_obj_end(b);
    bs_jw_key(b, "result");
    jw_json(b, r, 13, NULL);
    bs_jw_key(b, "result_location");
    jw_opt_str(b, r, 14);
    bs_jw_key(b, "cancel_requested");
    bs_jw_bool(b, bs_meta_row_int(r, 15) != 0);
    bs_jw_key(b, "created_at");
    jw_opt_time(b, r, 16);
    bs_jw_key(b, "scheduled_at");
    jw_opt_time(b, r, 17);
    bs_jw_key(b, "attempted_at");
    jw_opt_time(b, r, 18);
    bs_jw_key(b, "finalized_at");
    jw_opt_time(b, r, 19);
    bs_jw_key(b, "created_by");
    bs_jw_str(b, bs_meta_row_text(r, 20));
    bs_jw_key(b, "attempted_by");
    if (bs_meta_row_is_null(r, 21) || !*bs_meta_row_text(r, 21))
        bs_jw_null(b);
    else
        bs_jw_str(b, bs_meta_row_text(r, 21));
    bs_jw_key(b, "lease_token");
    bs_jw_int(b, bs_meta_row_int(r, 22));
    bs_jw_obj_end(b);
}

static int render_cb(const bs_meta_row_t *row, void *ud)
{
    render_t *x = ud;
    if (x->n == x->limit) {
        x->n++; /* one more than the page: there is a next page */
        return 1;
    }
    render_row(x->b, row);
    snprintf(x->last, sizeof x->last, "%s", bs_meta_row_text(row, 0));
    x->n++;
    return 0;
}

int bs_jobs_get(bs_jobs_t *j, const char *tenant, const char *id, bs_buf_t *out, bs_err_t *err)
{
    render_t x = {out, 0, 1, ""};
    bs_val_t a[] = {BS_TXT(id), BS_TXT(tenant ? tenant : ""), BS_TXT(tenant ? tenant : "")};
    int rc =
        bs_meta_query(j->meta, "SELECT " COLS " FROM jobs WHERE id = ? AND (? = '' OR tenant = ?)",
                      a, 3, render_cb, &x, err);
    if (rc)
        return rc;
    if (!x.n)
        return bs_err_set(err, BS_ENOTFOUND, "job '%.40s' not found", id);
    return 0;
}

int bs_jobs_list(bs_jobs_t *j, const char *tenant, const char *state, const char *kind, int limit,
                 const char *cursor, bs_buf_t *out, bs_err_t *err)
{
    bs_job_state_t st;
    if (state && bs_job_state_parse(state, &st))
        return bs_err_setf(err, BS_EINVAL, "state",
                           "unknown job state '%.32s': available, scheduled, running, retryable, "
                           "completed, discarded or cancelled",
                           state);
    if (limit < 1 || limit > 1000)
        return bs_err_setf(err, BS_EINVAL, "limit", "limit must be 1-1000, got %d", limit);
    size_t start = out->len;
    bs_jw_obj_begin(out);
    bs_jw_key(out, "items");
    bs_jw_arr_begin(out);
    render_t x = {out, 0, limit, ""};
    /* id < cursor as a range (a sentinel above every id for the first page), and one
     * statement per shape, so each walks its index (jobs_tenant, jobs_tenant_state, the
     * primary key) backwards from the cursor instead of filtering a scan */
    const char *k = kind ? kind : "", *c = cursor ? cursor : "zzzzzzzz";
    int rc;
    if (tenant && state) {
        bs_val_t a[] = {BS_TXT(tenant), BS_TXT(state), BS_TXT(c),
                        BS_TXT(k),      BS_TXT(k),     BS_INT(limit + 1)};
        rc = bs_meta_query(j->meta,
                           "SELECT " COLS " FROM jobs WHERE tenant = ? AND state = ? AND id < ?"
                           " AND (? = '' OR kind = ?) ORDER BY id DESC LIMIT ?",
                           a, 6, render_cb, &x, err);
    } else if (tenant) {
        bs_val_t a[] = {BS_TXT(tenant), BS_TXT(c), BS_TXT(k), BS_TXT(k), BS_INT(limit + 1)};
        rc = bs_meta_query(j->meta,
                           "SELECT " COLS " FROM jobs WHERE tenant = ? AND id < ?"
                           " AND (? = '' OR kind = ?) ORDER BY id DESC LIMIT ?",
                           a, 5, render_cb, &x, err);
    } else {
        const char *s = state ? state : "";
        bs_val_t a[] = {BS_TXT(c), BS_TXT(s), BS_TXT(s), BS_TXT(k), BS_TXT(k), BS_INT(limit + 1)};
        rc = bs_meta_query(j->meta,
                           "SELECT " COLS " FROM jobs WHERE id < ? AND (? = '' OR state = ?)"
                           " AND (? = '' OR kind = ?) ORDER BY id DESC LIMIT ?",
                           a, 6, render_cb, &x, err);
    }
    if (rc) {
        out->len = start;
        return rc;
    }
    bs_jw_page_end(out, x.n > limit ? x.last : NULL);
    return out->oom ? bs_err_set(err, BS_ENOMEM, "out of memory listing jobs") : 0;
}

/* ---- cancel and retry ------------------------------------------------------------------ */

typedef struct {
    char state[16];
    int found;
} state_row_t;

static int state_cb(const bs_meta_row_t *row, void *ud)
{
    state_row_t *s = ud;
    snprintf(s->state, sizeof s->state, "%s", bs_meta_row_text(row, 0));
    s->found = 1;
    return 1;
}

static int read_state(bs_jobs_t *j, const char *tenant, const char *id, state_row_t *s,
                      bs_err_t *err)
{
    memset(s, 0, sizeof *s);
    bs_val_t a[] = {BS_TXT(id), BS_TXT(tenant ? tenant : ""), BS_TXT(tenant ? tenant : "")};
    int rc =
        bs_meta_query(j->meta, "SELECT state FROM jobs WHERE id = ? AND (? = '' OR tenant = ?)", a,
                      3, state_cb, s, err);
    if (rc)
        return rc;
    return s->found ? 0 : bs_err_set(err, BS_ENOTFOUND, "job '%.40s' not found", id);
}

#define CANCEL_WAITING(now)                                                                        \
    "UPDATE jobs SET state = 'cancelled', cancel_requested = 1, finalized_at = " now               \
    " WHERE id = ? AND state IN ('available', 'scheduled', 'retryable')"
static const char *const cancel_waiting_sql[] = {CANCEL_WAITING(NOW_S), CANCEL_WAITING(NOW_P)};

int bs_jobs_cancel(bs_jobs_t *j, const char *tenant, const char *id, bs_err_t *err)
{
    /* Optimistic: read the state, act on it with a statement guarded by that state; a
     * change in between (the job was claimed) makes the statement miss, and we look again. */
    for (int round = 0; round < 5; round++) {
        state_row_t s;
        int rc = read_state(j, tenant, id, &s, err);
        if (rc)
            return rc;
        int changes = 0;
        bs_val_t a[] = {BS_TXT(id)};
        if (!strcmp(s.state, "completed") || !strcmp(s.state, "discarded") ||
            !strcmp(s.state, "cancelled"))
            return bs_err_set(err, BS_ECONFLICT, "job '%.40s' is %s already: nothing to cancel", id,
                              s.state);
        if (!strcmp(s.state, "running")) {
            rc = bs_meta_exec(
                j->meta, "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state = 'running'",
                a, 1, &changes, err);
            if (rc)
                return rc;
            if (changes) {
                bs__jobs_cancel_local(j, id);
                return 0;
            }
            continue;
        }
        rc = bs_meta_exec(j->meta, cancel_waiting_sql[pg(j)], a, 1, &changes, err);
        if (rc)
            return rc;
        if (changes)
            return 0;
    }
    return bs_err_set(err, BS_ECONFLICT, "job '%.40s' kept changing state; try again", id);
}

#define RETRY(now)                                                                                 \
    "UPDATE jobs SET state = 'available', scheduled_at = " now ", finalized_at = NULL,"            \
    " cancel_requested = 0 WHERE id = ? AND state = ? RETURNING kind"
static const char *const retry_sql[] = {RETRY(NOW_S), RETRY(NOW_P)};

static int kind_row(const bs_meta_row_t *row, void *ud)
{
    snprintf(ud, 64, "%s", bs_meta_row_text(row, 0));
    return 0;
}

int bs_jobs_retry(bs_jobs_t *j, const char *tenant, const char *id, bs_err_t *err)
{
    for (int round = 0; round < 5; round++) {
        state_row_t s;
        int rc = read_state(j, tenant, id, &s, err);
        if (rc)
            return rc;
        if (strcmp(s.state, "discarded") && strcmp(s.state, "cancelled") &&
            strcmp(s.state, "retryable"))
            return bs_err_set(err, BS_ECONFLICT,
                              "job '%.40s' is %s: only discarded, cancelled or retryable jobs "
                              "can be retried",
                              id, s.state);
        char kind[64] = "";
        bs_val_t a[] = {BS_TXT(id), BS_TXT(s.state)};
        rc = bs_meta_query(j->meta, retry_sql[pg(j)], a, 2, kind_row, kind, err);
        if (rc == BS_ECONFLICT)
            return bs_err_set(err, BS_ECONFLICT,
                              "job '%.40s' cannot run again: a live job of its kind holds its "
                              "unique_key",
                              id);
        if (rc)
            return rc;
        if (kind[0]) { /* the row changed */
            bs__job_kind_t *k = bs__jobs_kind_find(j, kind);
            if (k)
                wake(j, &k, 1);
            return 0;
        }
    }
    return bs_err_set(err, BS_ECONFLICT, "job '%.40s' kept changing state; try again", id);
}

/* ---- retention ------------------------------------------------------------------------- */

#define RETAIN(now)                                                                                \
    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE finalized_at IS NOT NULL AND"         \
    " finalized_at < " now " - ? LIMIT 1000)"
static const char *const retain_sql[] = {RETAIN(NOW_S), RETAIN(NOW_P)};

int bs__jobs_retention_pass(bs_jobs_t *j, int (*held)(void *), void *ud, bs_err_t *err)
{
    int total = 0;
    for (;;) {
        if (held && !held(ud))
            return total;
        int changes = 0;
        bs_val_t a[] = {BS_INT(j->retention_ms)};
        int rc = bs_meta_exec(j->meta, retain_sql[pg(j)], a, 1, &changes, err);
        if (rc)
            return rc;
        total += changes;
        pthread_mutex_lock(&j->hub->mu);
        j->retention_deleted += (uint64_t)changes;
        pthread_mutex_unlock(&j->hub->mu);
        if (changes < 1000)
            return total;
    }
}

/* ---- statistics ------------------------------------------------------------------------ */

void bs_jobs_stats(bs_jobs_t *j, bs_jobs_stats_t *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&j->hub->mu);
    for (int i = 0; i < j->nkinds; i++) {
        const bs__job_kind_t *k = &j->kinds[i];
        out->claimed += k->claimed;
        out->completed += k->completed;
        out->failed += k->failed;
        out->discarded += k->discarded;
        out->cancelled += k->cancelled;
        out->running += k->inflight;
    }
    out->lost_leases = j->lost_leases;
    out->rescued = j->rescued;
    out->stale_ends = j->stale_ends;
    out->retention_deleted = j->retention_deleted;
    pthread_mutex_unlock(&j->hub->mu);
}

void bs_jobs_metrics(bs_jobs_t *j, bs_buf_t *b)
{
    if (!j)
        return;
    static const struct {
        const char *name, *help;
        size_t off;
    } counters[] = {
        {"claimed", "Job attempts claimed by this replica.", offsetof(bs__job_kind_t, claimed)},
        {"completed", "Jobs completed by this replica.", offsetof(bs__job_kind_t, completed)},
        {"failed", "Job attempts that failed and will be retried.",
         offsetof(bs__job_kind_t, failed)},
        {"discarded", "Jobs discarded (attempts exhausted or a non-retryable error).",
         offsetof(bs__job_kind_t, discarded)},
        {"cancelled", "Running jobs that ended cancelled on this replica.",
         offsetof(bs__job_kind_t, cancelled)},
    };
    pthread_mutex_lock(&j->hub->mu);
    for (size_t c = 0; c < sizeof counters / sizeof *counters; c++) {
        bs_buf_printf(b, "# HELP basalt_jobs_%s_total %s\n# TYPE basalt_jobs_%s_total counter\n",
                      counters[c].name, counters[c].help, counters[c].name);
        for (int i = 0; i < j->nkinds; i++)
            bs_buf_printf(b, "basalt_jobs_%s_total{kind=\"%s\"} %llu\n", counters[c].name,
                          j->kinds[i].name,
                          (unsigned long long)*(const uint64_t *)((const char *)&j->kinds[i] +
                                                                  counters[c].off));
    }
    bs_buf_puts(b, "# HELP basalt_jobs_running Job attempts in flight on this replica.\n"
                   "# TYPE basalt_jobs_running gauge\n");
    for (int i = 0; i < j->nkinds; i++)
        bs_buf_printf(b, "basalt_jobs_running{kind=\"%s\"} %d\n", j->kinds[i].name,
                      j->kinds[i].inflight);
    bs_buf_printf(b,
                  "# HELP basalt_jobs_ready Claimed job attempts waiting for a worker.\n"
                  "# TYPE basalt_jobs_ready gauge\n"
                  "basalt_jobs_ready %d\n"
                  "# HELP basalt_jobs_lost_leases_total Attempts whose lease this replica lost "
                  "(their late end changes nothing).\n"
                  "# TYPE basalt_jobs_lost_leases_total counter\n"
                  "basalt_jobs_lost_leases_total %llu\n"
                  "# HELP basalt_jobs_rescued_total Running jobs of a dead holder made "
                  "retryable by this replica after their lease expired.\n"
                  "# TYPE basalt_jobs_rescued_total counter\n"
                  "basalt_jobs_rescued_total %llu\n"
                  "# HELP basalt_jobs_stale_ends_total Attempt ends ignored because the "
                  "claim had been lost.\n"
                  "# TYPE basalt_jobs_stale_ends_total counter\n"
                  "basalt_jobs_stale_ends_total %llu\n"
                  "# HELP basalt_jobs_retention_deleted_total Finalized jobs deleted by "
                  "retention on this replica.\n"
                  "# TYPE basalt_jobs_retention_deleted_total counter\n"
                  "basalt_jobs_retention_deleted_total %llu\n",
                  j->nready, (unsigned long long)j->lost_leases, (unsigned long long)j->rescued,
                  (unsigned long long)j->stale_ends, (unsigned long long)j->retention_deleted);
    pthread_mutex_unlock(&j->hub->mu);
}
