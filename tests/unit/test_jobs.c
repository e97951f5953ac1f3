/* The job runtime (events/jobs.h) on SQLite and, when BASALT_TEST_PG_URL is set, again on
 * that PostgreSQL server (the same tests; every test has its own tenant and kinds, so a
 * shared database is fine). The state machine (complete, non-retryable → discarded, retries
 * with backoff → completed, attempts exhausted → discarded, scheduled → due), unique keys,
 * batch enqueue (all or nothing), listing with cursors, priority order, cancellation of
 * waiting and running jobs, retry, progress with rate and ETA, claim exclusivity between
 * two runtimes on one store, a dead holder's expired lease → rescued and claimed again with
 * a higher token while the stale holder's completion changes nothing, a lost claim noticed
 * by the heartbeat, shutdown releasing claims, retention, and the default backoff's bounds. */
#include "test_common.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "base/json.h"
#include "base/rcu.h"
#include "base/time.h"
#include "events/jobs_int.h"
#include "store/meta.h"

static const char *pg_url; /* the group being run: NULL = SQLite */

typedef struct {
    char dir[64];
    char path[128];
    bs_meta_t *a, *b;
    char tenant[64];
    char prefix[32]; /* of this test's kinds */
} fx_t;

static int run_id;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    bs_err_t err;
    if (pg_url) {
        snprintf(f->path, sizeof f->path, "%s", pg_url);
    } else {
        snprintf(f->dir, sizeof f->dir, "/tmp/bs-test-jobs-XXXXXX");
        if (!mkdtemp(f->dir))
            return -1;
        snprintf(f->path, sizeof f->path, "%s/basalt.db", f->dir);
    }
    if (!(f->a = bs_meta_open(f->path, &err)) || !(f->b = bs_meta_open(f->path, &err))) {
        fprintf(stderr, "cannot open %s: %s\n", f->path, err.msg);
        return -1;
    }
    run_id++;
    snprintf(f->tenant, sizeof f->tenant, "t%ld-%d", (long)getpid(), run_id);
    snprintf(f->prefix, sizeof f->prefix, "t%ld-%d.", (long)getpid(), run_id);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    bs_meta_close(f->a);
    bs_meta_close(f->b);
    bs_rcu_drain();
    if (f->dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        if (system(cmd) != 0)
            return -1;
    }
    free(f);
    return 0;
}

/* ---- handlers ---------------------------------------------------------------------------- */

/* Shared by the handlers of one test: what they saw. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    int running, max_running;
    char order[64][37]; /* job ids in the order handlers ran */
    int norder;
    bs_job_run_t *stash[64]; /* async attempts left open */
    int nstash;
    int release;     /* blockers return */
    const char *tag; /* written into results */
} seen_t;

static seen_t *seen_new(void)
{
    seen_t *s = calloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    return s;
}

static void seen_free(seen_t *s)
{
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

static void note(seen_t *s, bs_job_run_t *r)
{
    pthread_mutex_lock(&s->mu);
    s->calls++;
    if (s->norder < 64)
        snprintf(s->order[s->norder++], 37, "%s", bs_job_id(r));
    pthread_mutex_unlock(&s->mu);
}

static void h_noop(void *ud, bs_job_run_t *r)
{
    seen_t *s = ud;
    note(s, r);
    char res[128];
    snprintf(res, sizeof res, "{\"by\":\"%s\",\"attempt\":%d}", s->tag ? s->tag : "",
             bs_job_attempt(r));
    bs_job_complete(r, res, "file:///tmp/result");
}

static void h_fatal(void *ud, bs_job_run_t *r)
{
    note(ud, r);
    bs_job_fail(r, 0, 0, "boom: not retryable");
}

/* Fails while attempt <= args.fail (retryably), then completes. */
static void h_flaky(void *ud, bs_job_run_t *r)
{
    note(ud, r);
    cJSON *a = cJSON_Parse(bs_job_args(r));
    const cJSON *fail = cJSON_GetObjectItem(a, "fail");
    int k = cJSON_IsNumber(fail) ? fail->valueint : 0;
    cJSON_Delete(a);
    if (bs_job_attempt(r) <= k) {
        char msg[64];
        snprintf(msg, sizeof msg, "flaky failure %d", bs_job_attempt(r));
        bs_job_fail(r, 1, 0, msg);
    } else {
        bs_job_complete(r, "{\"ok\":true}", NULL);
    }
}

/* Async: leaves the attempt open for the test to end. */
static void h_stash(void *ud, bs_job_run_t *r)
{
    seen_t *s = ud;
    note(s, r);
    pthread_mutex_lock(&s->mu);
    if (s->nstash < 64)
        s->stash[s->nstash++] = r;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Sync: blocks (on a worker) until cancelled or released; counts concurrency. */
static void h_block(void *ud, bs_job_run_t *r)
{
    seen_t *s = ud;
    note(s, r);
    pthread_mutex_lock(&s->mu);
    s->running++;
    if (s->running > s->max_running)
        s->max_running = s->running;
    pthread_cond_broadcast(&s->cv);
    while (!s->release && !bs_job_cancelled(r)) {
        pthread_mutex_unlock(&s->mu);
        usleep(2000);
        pthread_mutex_lock(&s->mu);
    }
    s->running--;
    int cancelled = bs_job_cancelled(r);
    pthread_mutex_unlock(&s->mu);
    if (cancelled)
        bs_job_fail(r, 1, 0, "stopped: cancelled");
    else
        bs_job_complete(r, NULL, NULL);
}

static int64_t backoff_10ms(void *ud, int failed_attempt)
{
    (void)ud;
    (void)failed_attempt;
    return 10;
}

/* ---- helpers ----------------------------------------------------------------------------- */

static bs_jobs_t *runtime(bs_meta_t *m, const char *owner, int64_t lease_ms, int64_t retention_ms,
                          int workers)
{
    bs_err_t err;
    bs_jobs_opts_t o = {.workers = workers,
                        .lease_ms = lease_ms,
                        .poll_ms = 20,
                        .retention_ms = retention_ms,
                        .owner = owner};
    bs_jobs_t *j = bs_jobs_new(m, &o, &err);
    assert_non_null(j);
    return j;
}

static void reg(bs_jobs_t *j, const fx_t *f, const char *name, bs_job_fn fn, void *ud,
                int max_attempts, int concurrency, char out[64])
{
    snprintf(out, 64, "%s%s", f->prefix, name);
    bs_job_kind_t k = {.kind = out,
                       .run = fn,
                       .ud = ud,
                       .max_attempts = max_attempts,
                       .backoff_ms = backoff_10ms,
                       .concurrency = concurrency,
                       .description = "a test kind"};
    bs_err_t err;
    assert_int_equal(bs_jobs_register(j, &k, &err), 0);
}

static void start(bs_jobs_t *j)
{
    bs_err_t err;
    assert_int_equal(bs_jobs_start(j, &err), 0);
}

/* The set-up most tests share: a runtime on store a (owner "a", 2 workers, the default
 * lease) with one kind, started; the kind's full name in kind. */
static bs_jobs_t *started(const fx_t *f, const char *name, bs_job_fn fn, seen_t *s,
                          int max_attempts, char kind[64])
{
    bs_jobs_t *j = runtime(f->a, "a", 0, 0, 2);
    reg(j, f, name, fn, s, max_attempts, 0, kind);
    start(j);
    return j;
}

/* Enqueues nj (which must succeed); returns existed. */
static int enqueue_nj(bs_jobs_t *j, const bs_job_new_t *nj, char id[37])
{
    bs_err_t err;
    int existed = -1;
    assert_int_equal(bs_jobs_enqueue(j, nj, id, &existed, &err), 0);
    return existed;
}

static void enqueue(bs_jobs_t *j, const fx_t *f, const char *kind, const char *args, char id[37])
{
    bs_job_new_t nj = {.kind = kind, .tenant = f->tenant, .args = args, .created_by = "test"};
    assert_int_equal(enqueue_nj(j, &nj, id), 0);
}

/* A job due in an hour: it waits (scheduled) while the test looks. */
static void enqueue_later(bs_jobs_t *j, const fx_t *f, const char *kind, char id[37])
{
    bs_job_new_t nj = {.kind = kind, .tenant = f->tenant, .run_at_ms = bs_time_wall_ms() + 3600000};
    assert_int_equal(enqueue_nj(j, &nj, id), 0);
}

/* The job as GET shows it (caller frees), or NULL when not found. */
static cJSON *job(bs_jobs_t *j, const fx_t *f, const char *id)
{
    bs_buf_t b;
    bs_buf_init(&b);
    bs_err_t err;
    int rc = bs_jobs_get(j, f->tenant, id, &b, &err);
    cJSON *o = rc ? NULL : cJSON_Parse(b.data);
    if (!rc)
        assert_non_null(o);
    else
        assert_int_equal(rc, BS_ENOTFOUND);
    bs_buf_free(&b);
    return o;
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* Waits (up to 20 s) for the job to be in state; returns its object. */
static cJSON *wait_state(bs_jobs_t *j, const fx_t *f, const char *id, const char *state)
{
    uint64_t until = bs_time_mono_ns() + 20000000000ull;
    char last[32] = "";
    while (bs_time_mono_ns() < until) {
        cJSON *o = job(j, f, id);
        assert_non_null(o);
        const char *st = str(o, "state");
        snprintf(last, sizeof last, "%s", st ? st : "?");
        if (!strcmp(last, state))
            return o;
        cJSON_Delete(o);
        usleep(5000);
    }
    fail_msg("job %s: state %s, waited for %s", id, last, state);
    return NULL;
}

static void wait_calls(seen_t *s, int n)
{
    uint64_t until = bs_time_mono_ns() + 20000000000ull;
    pthread_mutex_lock(&s->mu);
    while (s->calls < n && bs_time_mono_ns() < until) {
        pthread_mutex_unlock(&s->mu);
        usleep(2000);
        pthread_mutex_lock(&s->mu);
    }
    int calls = s->calls;
    pthread_mutex_unlock(&s->mu);
    assert_true(calls >= n);
}

static bs_job_run_t *wait_stash(seen_t *s, int i)
{
    wait_calls(s, i + 1);
    pthread_mutex_lock(&s->mu);
    bs_job_run_t *r = s->nstash > i ? s->stash[i] : NULL;
    pthread_mutex_unlock(&s->mu);
    assert_non_null(r);
    return r;
}

/* The runtime's counters once cond holds (up to 30 s): they are counted after the write a
 * test sees. */
#define STATS_WHEN(j, st, cond)                                                                    \
    do {                                                                                           \
        uint64_t until_ = bs_time_mono_ns() + 30000000000ull;                                      \
        for (;;) {                                                                                 \
            bs_jobs_stats((j), &(st));                                                             \
            if ((cond) || bs_time_mono_ns() > until_)                                              \
                break;                                                                             \
            usleep(2000);                                                                          \
        }                                                                                          \
    } while (0)

static int count_errors(const cJSON *o)
{
    return cJSON_GetArraySize(cJSON_GetObjectItem(o, "errors"));
}

/* The job's errors[i]. */
static const cJSON *error_at(const cJSON *o, int i)
{
    return cJSON_GetArrayItem(cJSON_GetObjectItem(o, "errors"), i);
}

/* The job is in state now. */
static void assert_state(bs_jobs_t *j, const fx_t *f, const char *id, const char *state)
{
    cJSON *o = job(j, f, id);
    assert_non_null(o);
    assert_string_equal(str(o, "state"), state);
    cJSON_Delete(o);
}

/* Waits (up to 20 s) for the job's progress.done to be done; returns the job. */
static cJSON *wait_progress(bs_jobs_t *j, const fx_t *f, const char *id, int64_t done)
{
    uint64_t until = bs_time_mono_ns() + 20000000000ull;
    for (;;) {
        cJSON *o = job(j, f, id);
        if (num(cJSON_GetObjectItem(o, "progress"), "done") == (double)done ||
            bs_time_mono_ns() > until)
            return o;
        cJSON_Delete(o);
        usleep(20000);
    }
}

/* Waits (up to 20 s) for bs_job_cancelled(r). */
static void wait_cancelled(const bs_job_run_t *r)
{
    uint64_t until = bs_time_mono_ns() + 20000000000ull;
    while (!bs_job_cancelled(r) && bs_time_mono_ns() < until)
        usleep(5000);
    assert_int_equal(bs_job_cancelled(r), 1);
}

/* A page of bs_jobs_list (which must succeed), parsed (caller frees). */
static cJSON *list(bs_jobs_t *j, const fx_t *f, const char *state, const char *kind, int limit,
                   const char *cursor)
{
    bs_buf_t b;
    bs_buf_init(&b);
    bs_err_t err;
    assert_int_equal(bs_jobs_list(j, f->tenant, state, kind, limit, cursor, &b, &err), 0);
    cJSON *o = cJSON_Parse(b.data);
    assert_non_null(o);
    bs_buf_free(&b);
    return o;
}

static int items(const cJSON *page)
{
    return cJSON_GetArraySize(cJSON_GetObjectItem(page, "items"));
}

/* ---- pure parts -------------------------------------------------------------------------- */

static void test_state_names(void **state)
{
    (void)state;
    for (int s = BS_JOB_AVAILABLE; s <= BS_JOB_CANCELLED; s++) {
        bs_job_state_t back;
        assert_int_equal(bs_job_state_parse(bs_job_state_name((bs_job_state_t)s), &back), 0);
        assert_int_equal((int)back, s);
    }
    bs_job_state_t x;
    assert_int_equal(bs_job_state_parse("done", &x), BS_EINVAL);
    assert_int_equal(bs_job_state_parse(NULL, &x), BS_EINVAL);
    assert_null(bs_job_state_name((bs_job_state_t)99));
    assert_string_equal(bs_job_state_name(BS_JOB_RETRYABLE), "retryable");
}

static void test_default_backoff_within_ten_percent_of_attempt_to_the_fourth(void **state)
{
    (void)state;
    for (int a = 1; a <= 25; a++) {
        double base = pow((double)a, 4) * 1000.0; /* attempt^4 s, in ms */
        /* the extremes of the jitter and random draws through the kind-less path */
        double lo = bs__jobs_backoff_default_ms(a, 0.0),
               hi = bs__jobs_backoff_default_ms(a, 0.999999);
        assert_true(fabs(lo - 0.9 * base) <= 1.0);
        assert_true(fabs(hi - 1.1 * base) <= 1.0 + base * 1e-6);
        double mn = INFINITY, mx = -INFINITY;
        for (int i = 0; i < 200; i++) {
            double v = (double)bs__jobs_backoff_ms(NULL, a);
            assert_true(v >= 0.9 * base - 1.0 && v <= 1.1 * base + 1.0);
            mn = v < mn ? v : mn;
            mx = v > mx ? v : mx;
        }
        if (a >= 2) /* jitter is there: 200 draws are not all alike */
            assert_true(mx > mn);
    }
    /* a kind's own function wins */
    bs__job_kind_t k = {.k = {.backoff_ms = backoff_10ms}};
    assert_int_equal(bs__jobs_backoff_ms(&k, 7), 10);
}

static void test_rate_and_samples(void **state)
{
    (void)state;
    bs__job_sample_t s[BS__JOBS_SAMPLES] = {{0, 0}};
    int n = 0;
    assert_true(bs__jobs_rate(s, n) == 0);
    const uint64_t sec = 1000000000ull;
    bs__jobs_sample_add(s, &n, 0, 0);
    bs__jobs_sample_add(s, &n, 1 * sec, 10);
    bs__jobs_sample_add(s, &n, 2 * sec, 20);
    assert_int_equal(n, 3);
    assert_true(fabs(bs__jobs_rate(s, n) - 10.0) < 1e-9);
    /* within 250 ms of the sample before the newest: the newest moves instead */
    bs__jobs_sample_add(s, &n, 2 * sec + 100000000ull, 21);
    assert_int_equal(n, 4);
    bs__jobs_sample_add(s, &n, 2 * sec + 200000000ull, 22);
    assert_int_equal(n, 4);
    assert_true(s[3].done == 22);
    assert_true(fabs(bs__jobs_rate(s, n) - 22.0 / 2.2) < 1e-9);
    /* the window keeps the newest BS__JOBS_SAMPLES */
    for (int i = 3; i < 100; i++)
        bs__jobs_sample_add(s, &n, (uint64_t)i * sec, 5 * i);
    assert_int_equal(n, BS__JOBS_SAMPLES);
    assert_true(fabs(bs__jobs_rate(s, n) - 5.0) < 1e-9);
    /* errors: the newest BS__JOBS_ERRORS_KEPT entries, valid JSON even from bad UTF-8 */
    char *e = strdup("[]");
    for (int i = 1; i <= 30; i++) {
        char *next = bs__jobs_errors_append(e, i, i == 30 ? "bad \xff byte" : "x", "me", i, 0);
        free(e);
        e = next;
    }
    cJSON *arr = cJSON_Parse(e);
    assert_int_equal(cJSON_GetArraySize(arr), BS__JOBS_ERRORS_KEPT);
    assert_int_equal((int)num(cJSON_GetArrayItem(arr, 0), "attempt"),
                     30 - BS__JOBS_ERRORS_KEPT + 1);
    assert_int_equal((int)num(cJSON_GetArrayItem(arr, BS__JOBS_ERRORS_KEPT - 1), "attempt"), 30);
    assert_true(bs_utf8_valid(e, strlen(e)));
    cJSON_Delete(arr);
    free(e);
}

/* ---- the state machine ------------------------------------------------------------------- */

static void test_complete_with_result(void **state)
{
    fx_t *f = *state;
    seen_t *s = seen_new();
    s->tag = "a";
    bs_jobs_t *j = runtime(f->a, "owner-a", 0, 0, 2); /* an owner of its own: attempted_by */
    char kind[64], id[37];
    reg(j, f, "noop", h_noop, s, 0, 0, kind);
    start(j);
    enqueue(j, f, kind, "{\"x\":1}", id);
    cJSON *o = wait_state(j, f, id, "completed");
    assert_string_equal(str(o, "kind"), kind);
    assert_string_equal(str(o, "tenant"), f->tenant);
    assert_int_equal((int)num(o, "attempt"), 1);
    assert_int_equal((int)num(o, "max_attempts"), 25);
    assert_int_equal((int)num(cJSON_GetObjectItem(o, "args"), "x"), 1);
    assert_string_equal(str(cJSON_GetObjectItem(o, "result"), "by"), "a");
    assert_string_equal(str(o, "result_location"), "file:///tmp/result");
    assert_string_equal(str(o, "attempted_by"), "owner-a");
    assert_int_equal((int)num(o, "lease_token"), 1);
    assert_non_null(str(o, "finalized_at"));
    assert_non_null(str(o, "attempted_at"));
    assert_string_equal(str(o, "created_by"), "test");
    assert_int_equal(count_errors(o), 0);
    cJSON_Delete(o);
    bs_jobs_stats_t st;
    STATS_WHEN(j, st, st.completed == 1);
    assert_int_equal((int)st.completed, 1);
    assert_int_equal((int)st.claimed, 1);
    /* another tenant does not see it; tenant NULL does */
    bs_buf_t b;
    bs_buf_init(&b);
    bs_err_t err;
    assert_int_equal(bs_jobs_get(j, "someone-else", id, &b, &err), BS_ENOTFOUND);
    assert_int_equal(bs_jobs_get(j, NULL, id, &b, &err), 0);
    bs_buf_free(&b);
    bs_jobs_free(j);
    assert_int_equal(s->calls, 1);
    seen_free(s);
}

static void test_non_retryable_error_discards(void **state)
{
    fx_t *f = *state;
    seen_t *s = seen_new();
    char kind[64], id[37];
    bs_jobs_t *j = started(f, "fatal", h_fatal, s, 0, kind);
    enqueue(j, f, kind, NULL, id);
    cJSON *o = wait_state(j, f, id, "discarded");
    assert_int_equal((int)num(o, "attempt"), 1);
    assert_int_equal(count_errors(o), 1);
    const cJSON *e = error_at(o, 0);
    assert_string_equal(str(e, "error"), "boom: not retryable");
    assert_int_equal((int)num(e, "attempt"), 1);
    assert_string_equal(str(e, "attempted_by"), "a");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "result")));
    cJSON_Delete(o);
    bs_jobs_free(j);
    assert_int_equal(s->calls, 1);
    seen_free(s);
}

static void test_retries_then_completes(void **state)
{
    fx_t *f = *state;
    seen_t *s = seen_new();
    char kind[64], id[37];
    bs_jobs_t *j = started(f, "flaky", h_flaky, s, 0, kind);
    enqueue(j, f, kind, "{\"fail\":2}", id);
    cJSON *o = wait_state(j, f, id, "completed");
    assert_int_equal((int)num(o, "attempt"), 3);
    assert_int_equal(count_errors(o), 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal((int)num(error_at(o, i), "attempt"), i + 1);
        assert_int_equal((int)num(error_at(o, i), "lease_token"), i + 1);
    }
    assert_int_equal((int)num(o, "lease_token"), 3);
    cJSON_Delete(o);
    bs_jobs_stats_t st;
    STATS_WHEN(j, st, st.completed == 1);
    assert_int_equal((int)st.failed, 2);
    assert_int_equal((int)st.completed, 1);
    bs_jobs_free(j);
    assert_int_equal(s->calls, 3);
    seen_free(s);
}

static void test_attempts_exhausted_discards(void **state)
{
    fx_t *f = *state;
    seen_t *s = seen_new();
    char kind[64], id[37];
    bs_jobs_t *j = started(f, "flaky", h_flaky, s, 5, kind);
    /* the job's own max_attempts overrides the kind's */
    bs_job_new_t nj = {
        .kind = kind, .tenant = f->tenant, .args = "{\"fail\":100}", .max_attempts = 3};
    assert_int_equal(enqueue_nj(j, &nj, id), 0);
    cJSON *o = wait_state(j, f, id, "discarded");
    assert_int_equal((int)num(o, "attempt"), 3);
    assert_int_equal((int)num(o, "max_attempts"), 3);
    assert_int_equal(count_errors(o), 3);
    cJSON_Delete(o);
    bs_jobs_free(j);
    assert_int_equal(s->calls, 3);
    seen_free(s);
}

static void test_scheduled_job_waits_for_its_time(void **state)
{
    fx_t *f = *state;
    seen_t *s = seen_new();
    char kind[64], id[37], far[37];
    bs_jobs_t *j = started(f, "noop", h_noop, s, 0, kind);
    int64_t at = bs_time_wall_ms() + 400;
    bs_job_new_t nj = {.kind = kind, .tenant = f->tenant, .run_at_ms = at};
    assert_int_equal(enqueue_nj(j, &nj, id), 0);
    enqueue_later(j, f, kind, far);
    assert_state(j, f, far, "scheduled");
    cJSON *o = wait_state(j, f, id, "completed");
    int64_t attempted;
    assert_int_equal(bs_time_parse_rfc3339(str(o, "attempted_at"), &attempted), 0);
    assert_true(attempted >= at);
    cJSON_Delete(o);
    assert_state(j, f, far, "scheduled"); /* an hour away: still waiting */
    bs_jobs_free(j);
    seen_free(s);
}

static void test_unique_keys(void **state)
{
    fx_t *f = *state;
    seen_t *s = seen_new();
    bs_jobs_t *j = runtime(f->a, "a", 0, 0, 2);
    char kind[64], other[64], id1[37], id2[37], id3[37], id4[37];
    reg(j, f, "noop", h_noop, s, 0, 0, kind);
    reg(j, f, "other", h_noop, s, 0, 0, other);
    /* not started: the jobs stay available while we look */
    bs_job_new_t nj = {.kind = kind, .tenant = f->tenant, .unique_key = "k1"};
    assert_int_equal(enqueue_nj(j, &nj, id1), 0);
    assert_int_equal(enqueue_nj(j, &nj, id2), 1);
    assert_string_equal(id1, id2);
    nj.kind = other; /* per kind */
    assert_int_equal(enqueue_nj(j, &nj, id3), 0);
    assert_string_not_equal(id1, id3);
    nj.kind = kind;
    nj.tenant = "another-tenant"; /* per tenant */
    assert_int_equal(enqueue_nj(j, &nj, id4), 0);
    nj.tenant = f->tenant;
    start(j);
    cJSON_Delete(wait_state(j, f, id1, "completed"));
    /* finalized: the key is free again */
    assert_int_equal(enqueue_nj(j, &nj, id4), 0);
    assert_string_not_equal(id1, id4);
    cJSON_Delete(wait_state(j, f, id4, "completed"));
    bs_jobs_free(j);
    seen_free(s);
}

static int count_cb(const bs_meta_row_t *row, void *ud)
{
    *(int *)ud = (int)bs_meta_row_int(row, 0);
    return 0;
}

static int jobs_of(bs_meta_t *m, const char *tenant)
{
    int n = -1;
    bs_val_t a[] = {BS_TXT(tenant)};
    bs_err_t err;
    assert_int_equal(
        bs_meta_query(m, "SELECT COUNT(*) FROM jobs WHERE tenant = ?", a, 1, count_cb, &n, &err),
        0);
    return n;
}

static void test_enqueue_many_is_all_or_nothing(void **state)
{
    fx_t *f = *state;
    seen_t *s = seen_new();
    bs_jobs_t *j = runtime(f->a, "a", 0, 0, 2);
    char kind[64];
    reg(j, f, "noop", h_noop, s, 0, 0, kind);
    enum { N = 1000 };
    bs_job_new_t *nj = calloc(N, sizeof *nj);
    char(*ids)[37] = calloc(N, 37);
    int *existed = calloc(N, sizeof *existed);
    for (int i = 0; i < N; i++)
        nj[i] = (bs_job_new_t){.kind = kind, .tenant = f->tenant, .args = "{}"};
    nj[5].kind = "no.such.kind";
    bs_err_t err;
    assert_int_equal(bs_jobs_enqueue_many(j, nj, N, ids, existed, &err), BS_EINVAL);
    assert_string_equal(err.field, "jobs[5].kind");
    nj[5].kind = kind;
    nj[7].args = "[1,2]";
    assert_int_equal(bs_jobs_enqueue_many(j, nj, N, ids, existed, &err), BS_EINVAL);
    assert_string_equal(err.field, "jobs[7].args");
    nj[7].args = "{}";
    assert_int_equal(jobs_of(f->a, f->tenant), 0);
    assert_int_equal(bs_jobs_enqueue_many(j, nj, N + 1, ids, existed, &err), BS_EINVAL);
    assert_int_equal(bs_jobs_enqueue_many(j, nj, N, ids, existed, &err), 0);
    assert_int_equal(jobs_of(f->a, f->tenant), N);
    for (int i = 1; i < N; i++)
        assert_string_not_equal(ids[i], ids[i - 1]);
    start(j);
    bs_jobs_stats_t st;
    STATS_WHEN(j, st, st.completed >= N);
    assert_int_equal((int)st.completed, N);
    assert_state(j, f, ids[N - 1], "completed");
    bs_jobs_free(j);
    assert_int_equal(s->calls, N);
    free(nj);
    free(ids);
    free(existed);
    seen_free(s);
}

static void test_list_pages_and_filters(void **state)
{
    fx_t *f = *state;
    seen_t *s = seen_new();
    bs_jobs_t *j = runtime(f->a, "a", 0, 0, 2);
    char k1[64], k2[64], ids[5][37];
    reg(j, f, "one", h_noop, s, 0, 0, k1);
    reg(j, f, "two", h_noop, s, 0, 0, k2);
    for (int i = 0; i < 5; i++)
        enqueue(j, f, i < 3 ? k1 : k2, NULL, ids[i]);
    /* pages of 2, newest first, following next_cursor */
    char got[5][37];
    int n = 0;
    char cursor[64] = "";
    for (int page = 0; page < 10; page++) {
        cJSON *o = list(j, f, NULL, NULL, 2, cursor[0] ? cursor : NULL);
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItem(o, "items"))
        {
            assert_true(n < 5);
            snprintf(got[n++], 37, "%s", str(it, "id"));
        }
        const char *next = str(o, "next_cursor");
        snprintf(cursor, sizeof cursor, "%s", next ? next : "");
        cJSON_Delete(o);
        if (!cursor[0])
            break;
    }
    assert_int_equal(n, 5);
    for (int i = 0; i < 5; i++)
        assert_string_equal(got[i], ids[4 - i]);
    /* filters */
    cJSON *o = list(j, f, "available", k2, 100, NULL);
    assert_int_equal(items(o), 2);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "next_cursor")));
    cJSON_Delete(o);
    o = list(j, f, "completed", NULL, 100, NULL);
    assert_int_equal(items(o), 0);
    cJSON_Delete(o);
    bs_buf_t b;
    bs_buf_init(&b);
    bs_err_t err;
    assert_int_equal(bs_jobs_list(j, f->tenant, "bogus", NULL, 100, NULL, &b, &err), BS_EINVAL);
    assert_string_equal(err.field, "state");
    bs_buf_free(&b);
    bs_jobs_free(j);
    seen_free(s);
}

static void test_priority_first(void **state)
{
    fx_t *f = *state;
    seen_t *s = seen_new();
    bs_jobs_t *j = runtime(f->a, "a", 0, 0, 1);
    char kind[64], low[37], high[37], mid[37];
    reg(j, f, "noop", h_noop, s, 0, 1, kind);
    bs_job_new_t nj = {.kind = kind, .tenant = f->tenant, .priority = -5};
    assert_int_equal(enqueue_nj(j, &nj, low), 0);
    nj.priority = 0;
    assert_int_equal(enqueue_nj(j, &nj, mid), 0);
    nj.priority = 10;
    assert_int_equal(enqueue_nj(j, &nj, high), 0);
    start(j);
    wait_calls(s, 3);
    assert_string_equal(s->order[0], high);
    assert_string_equal(s->order[1], mid);
    assert_string_equal(s->order[2], low);
    bs_jobs_free(j);
    seen_free(s);
}

/* ---- cancel and retry -------------------------------------------------------------------- */

static void test_cancel_waiting_job(void **state)
{
    fx_t *f = *state;
    seen_t *s = seen_new();
    char kind[64], id[37];
    bs_jobs_t *j = started(f, "noop", h_noop, s, 0, kind);
    enqueue_later(j, f, kind, id);
    bs_err_t err;
    assert_int_equal(bs_jobs_cancel(j, "someone-else", id, &err), BS_ENOTFOUND);
    assert_int_equal(bs_jobs_cancel(j, f->tenant, "0190-none", &err), BS_ENOTFOUND);
    assert_int_equal(bs_jobs_cancel(j, f->tenant, id, &err), 0);
    cJSON *o = job(j, f, id);
    assert_string_equal(str(o, "state"), "cancelled");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(o, "cancel_requested")));
    assert_non_null(str(o, "finalized_at"));
    cJSON_Delete(o);
    assert_int_equal(bs_jobs_cancel(j, f->tenant, id, &err), BS_ECONFLICT);
    /* retried: runs now */
    assert_int_equal(bs_jobs_retry(j, f->tenant, id, &err), 0);
    o = wait_state(j, f, id, "completed");
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(o, "cancel_requested")));
    cJSON_Delete(o);
    assert_int_equal(bs_jobs_retry(j, f->tenant, id, &err), BS_ECONFLICT); /* completed */
    bs_jobs_free(j);
    assert_int_equal(s->calls, 1);
    seen_free(s);
}

static void test_cancel_running_job(void **state)
{
    fx_t *f = *state;
    seen_t *s = seen_new();
    char kind[64], id[37];
    bs_jobs_t *j = started(f, "block", h_block, s, 0, kind);
    enqueue(j, f, kind, NULL, id);
    wait_calls(s, 1);
    cJSON_Delete(wait_state(j, f, id, "running"));
    bs_err_t err;
    assert_int_equal(bs_jobs_cancel(j, f->tenant, id, &err), 0);
    cJSON *o = wait_state(j, f, id, "cancelled");
    assert_int_equal(count_errors(o), 1);
    assert_non_null(str(o, "finalized_at"));
    cJSON_Delete(o);
    bs_jobs_stats_t st;
    STATS_WHEN(j, st, st.cancelled == 1);
    assert_int_equal((int)st.cancelled, 1);
    bs_jobs_free(j);
    assert_int_equal(s->calls, 1); /* not retried */
    seen_free(s);
}

/* A running job cancelled through another runtime (a replica): its holder hears of it from
 * its cancel poll. */
static void test_cancel_seen_by_another_replica(void **state)
{
    fx_t *f = *state;
    seen_t *s = seen_new();
    bs_jobs_t *a = runtime(f->a, "a", 0, 0, 2), *b = runtime(f->b, "b", 0, 0, 2);
    char kind[64], kb[64], id[37];
    reg(a, f, "block", h_block, s, 0, 0, kind);
    reg(b, f, "other", h_noop, s, 0, 0, kb); /* b does not run this kind */
    start(a);
    start(b);
    enqueue(a, f, kind, NULL, id);
    wait_calls(s, 1);
    bs_err_t err;
    assert_int_equal(bs_jobs_cancel(b, f->tenant, id, &err), 0);
    cJSON_Delete(wait_state(b, f, id, "cancelled"));
    bs_jobs_free(a);
    bs_jobs_free(b);
    seen_free(s);
}

static void test_retry_discarded_job(void **state)
{
    fx_t *f = *state;
    seen_t *s = seen_new();
    char kind[64], id[37];
    /* max_attempts 1: discarded after its first failure */
    bs_jobs_t *j = started(f, "flaky", h_flaky, s, 1, kind);
    enqueue(j, f, kind, "{\"fail\":1}", id);
    cJSON_Delete(wait_state(j, f, id, "discarded"));
    bs_err_t err;
    assert_int_equal(bs_jobs_retry(j, "someone-else", id, &err), BS_ENOTFOUND);
    assert_int_equal(bs_jobs_retry(j, f->tenant, id, &err), 0);
    cJSON *o = wait_state(j, f, id, "completed");
    assert_int_equal((int)num(o, "attempt"), 2); /* attempts continue */
    assert_int_equal(count_errors(o), 1);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "finalized_at")) == 0);
    cJSON_Delete(o);
    bs_jobs_free(j);
    seen_free(s);
}

/* ---- progress ---------------------------------------------------------------------------- */

static void test_progress_rate_and_eta(void **state)
{
    fx_t *f = *state;
    seen_t *s = seen_new();
    char kind[64], id[37];
    bs_jobs_t *j = started(f, "stash", h_stash, s, 0, kind);
    enqueue(j, f, kind, NULL, id);
    bs_job_run_t *r = wait_stash(s, 0);
    assert_string_equal(bs_job_id(r), id);
    assert_string_equal(bs_job_tenant(r), f->tenant);
    assert_string_equal(bs_job_kind(r), kind);
    assert_string_equal(bs_job_args(r), "{}");
    bs_job_progress(r, 10, 100);
    usleep(300000);
    bs_job_progress(r, 50, 100);
    cJSON *o = wait_progress(j, f, id, 50); /* written within about a second */
    const cJSON *p = cJSON_GetObjectItem(o, "progress");
    assert_int_equal((int)num(p, "done"), 50);
    assert_int_equal((int)num(p, "total"), 100);
    double rate = num(p, "rate_per_s"), eta = num(p, "eta_s");
    assert_true(rate > 0);
    assert_true(fabs(eta - 50.0 / rate) <= 1e-6 * (50.0 / rate) + 1e-9);
    cJSON_Delete(o);
    bs_job_progress(r, 100, 100);
    bs_job_complete(r, "{\"rows\":100}", NULL);
    o = wait_state(j, f, id, "completed");
    p = cJSON_GetObjectItem(o, "progress");
    assert_int_equal((int)num(p, "done"), 100); /* the last value at the end */
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(p, "eta_s")));
    assert_int_equal((int)num(cJSON_GetObjectItem(o, "result"), "rows"), 100);
    cJSON_Delete(o);
    bs_jobs_free(j);
    seen_free(s);
}

/* ---- two runtimes on one store ----------------------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    char ids[400][37];
    int counts[400];
    int n;
} ledger_t;

static ledger_t ledger;

static void h_ledger(void *ud, bs_job_run_t *r)
{
    (void)ud;
    pthread_mutex_lock(&ledger.mu);
    int i;
    for (i = 0; i < ledger.n; i++)
        if (!strcmp(ledger.ids[i], bs_job_id(r)))
            break;
    if (i == ledger.n && ledger.n < 400)
        snprintf(ledger.ids[ledger.n++], 37, "%s", bs_job_id(r));
    if (i < 400)
        ledger.counts[i]++;
    pthread_mutex_unlock(&ledger.mu);
    bs_job_complete(r, NULL, NULL);
}

static void test_two_runtimes_never_run_a_job_twice(void **state)
{
    fx_t *f = *state;
    memset(&ledger, 0, sizeof ledger);
    pthread_mutex_init(&ledger.mu, NULL);
    bs_jobs_t *a = runtime(f->a, "a", 0, 0, 3), *b = runtime(f->b, "b", 0, 0, 3);
    char kind[64], kb[64];
    reg(a, f, "work", h_ledger, NULL, 0, 0, kind);
    reg(b, f, "work", h_ledger, NULL, 0, 0, kb);
    start(a);
    start(b);
    enum { N = 400 };
    for (int i = 0; i < N; i++) {
        char id[37];
        enqueue(i % 2 ? a : b, f, kind, NULL, id);
    }
    uint64_t until = bs_time_mono_ns() + 60000000000ull;
    bs_jobs_stats_t sa, sb;
    do {
        usleep(10000);
        bs_jobs_stats(a, &sa);
        bs_jobs_stats(b, &sb);
    } while (sa.completed + sb.completed < N && bs_time_mono_ns() < until);
    assert_int_equal((int)(sa.completed + sb.completed), N);
    assert_int_equal((int)(sa.claimed + sb.claimed), N);
    bs_jobs_free(a);
    bs_jobs_free(b);
    assert_int_equal(ledger.n, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(ledger.counts[i], 1);
    pthread_mutex_destroy(&ledger.mu);
}

static void exec_sql(bs_meta_t *m, const char *sql, const char *id)
{
    bs_val_t a[] = {BS_TXT(id)};
    bs_err_t err;
    int changes = 0;
    assert_int_equal(bs_meta_exec(m, sql, a, 1, &changes, &err), 0);
    assert_int_equal(changes, 1);
}

/* The holder (a) stalls past its lease: the database expires it (simulated: the row's
 * lease ends now), b rescues the job (retryable, the attempt counted), claims it with a
 * higher token and completes it; a's late completion changes nothing. */
static void test_expired_lease_is_claimed_again_and_the_stale_end_ignored(void **state)
{
    fx_t *f = *state;
    seen_t *sa = seen_new(), *sb = seen_new();
    sb->tag = "b";
    /* a renews every 10 s: it does not renew before b rescues */
    bs_jobs_t *a = runtime(f->a, "a", 30000, 0, 2);
    char kind[64], kb[64], id[37];
    /* concurrency 1: a, busy with its stale attempt, cannot take the job back itself */
    reg(a, f, "work", h_stash, sa, 0, 1, kind);
    start(a);
    enqueue(a, f, kind, NULL, id);
    bs_job_run_t *ra = wait_stash(sa, 0);
    assert_int_equal(bs_job_attempt(ra), 1);
    cJSON *o = job(a, f, id);
    assert_string_equal(str(o, "attempted_by"), "a");
    int token_a = (int)num(o, "lease_token");
    cJSON_Delete(o);
    exec_sql(f->a, "UPDATE jobs SET lease_expires_at = 1 WHERE id = ? AND state = 'running'", id);
    bs_jobs_t *b = runtime(f->b, "b", 30000, 0, 2);
    reg(b, f, "work", h_noop, sb, 0, 0, kb);
    start(b);
    o = wait_state(b, f, id, "completed");
    assert_string_equal(str(o, "attempted_by"), "b");
    assert_int_equal((int)num(o, "lease_token"), token_a + 1);
    assert_int_equal((int)num(o, "attempt"), 2);
    assert_string_equal(str(cJSON_GetObjectItem(o, "result"), "by"), "b");
    assert_int_equal(count_errors(o), 1);
    const cJSON *e = error_at(o, 0);
    assert_string_equal(str(e, "attempted_by"), "a");
    assert_int_equal((int)num(e, "lease_token"), token_a);
    assert_non_null(str(e, "lease_expired_at"));
    assert_non_null(strstr(str(e, "error"), "lease expired"));
    cJSON_Delete(o);
    bs_jobs_stats_t st;
    STATS_WHEN(b, st, st.rescued == 1);
    assert_int_equal((int)st.rescued, 1);
    /* the stale holder ends late: ignored */
    bs_job_complete(ra, "{\"by\":\"a\"}", NULL);
    STATS_WHEN(a, st, st.stale_ends >= 1);
    assert_int_equal((int)st.stale_ends, 1);
    assert_int_equal((int)st.completed, 0);
    o = job(a, f, id);
    assert_string_equal(str(cJSON_GetObjectItem(o, "result"), "by"), "b");
    assert_int_equal((int)num(o, "attempt"), 2);
    cJSON_Delete(o);
    bs_jobs_free(a);
    bs_jobs_free(b);
    assert_int_equal(sb->calls, 1);
    seen_free(sa);
    seen_free(sb);
}

/* Another holder took the job over (its token moved): the heartbeat notices, the attempt is
 * told to stop, and its end changes nothing. */
static void test_heartbeat_notices_a_lost_claim(void **state)
{
    fx_t *f = *state;
    seen_t *s = seen_new();
    bs_jobs_t *j = runtime(f->a, "a", 600, 0, 2); /* renewals every 200 ms */
    char kind[64], id[37];
    reg(j, f, "work", h_stash, s, 0, 0, kind);
    start(j);
    enqueue(j, f, kind, NULL, id);
    bs_job_run_t *r = wait_stash(s, 0);
    /* renewals keep it: a few lease lengths pass without losing it */
    usleep(1500000);
    assert_int_equal(bs_job_cancelled(r), 0);
    assert_state(j, f, id, "running");
    exec_sql(f->b,
             "UPDATE jobs SET lease_token = lease_token + 100, lease_owner = 'thief' WHERE id = ?",
             id);
    wait_cancelled(r);
    bs_jobs_stats_t st;
    bs_jobs_stats(j, &st);
    assert_int_equal((int)st.lost_leases, 1);
    bs_job_complete(r, "{}", NULL);
    STATS_WHEN(j, st, st.stale_ends >= 1);
    assert_int_equal((int)st.stale_ends, 1);
    cJSON *o = job(j, f, id);
    assert_string_equal(str(o, "state"), "running"); /* the thief's */
    assert_string_equal(str(o, "attempted_by"), "thief");
    cJSON_Delete(o);
    bs_jobs_free(j);
    seen_free(s);
}

/* Several attempts in flight: one statement renews them all, one writes their progress and
 * one polls for their cancellation; each row gets its own values, and a claim lost or a
 * cancel made on another replica reaches only its own attempt. */
static void test_attempts_in_flight_are_renewed_and_polled_together(void **state)
{
    fx_t *f = *state;
    seen_t *s = seen_new();
    bs_jobs_t *j = runtime(f->a, "a", 600, 0, 2); /* renewals every 200 ms */
    bs_jobs_t *other = runtime(f->b, "b", 600, 0, 1);
    char kind[64], id[3][37];
    reg(j, f, "stash", h_stash, s, 0, 3, kind);
    start(j);
    for (int i = 0; i < 3; i++)
        enqueue(j, f, kind, NULL, id[i]);
    bs_job_run_t *r[3];
    for (int i = 0; i < 3; i++) {
        r[i] = wait_stash(s, i);
        bs_job_progress(r[i], 10 * (i + 1), 100 + i);
    }
    for (int i = 0; i < 3; i++) {
        cJSON *o = wait_progress(j, f, bs_job_id(r[i]), 10 * (i + 1));
        const cJSON *p = cJSON_GetObjectItem(o, "progress");
        assert_int_equal((int)num(p, "done"), 10 * (i + 1));
        assert_int_equal((int)num(p, "total"), 100 + i);
        cJSON_Delete(o);
    }
    /* a few lease lengths pass: every claim is kept */
    usleep(1500000);
    for (int i = 0; i < 3; i++)
        assert_int_equal(bs_job_cancelled(r[i]), 0);
    exec_sql(f->b, "UPDATE jobs SET lease_token = lease_token + 100 WHERE id = ?", bs_job_id(r[0]));
    bs_err_t err;
    assert_int_equal(bs_jobs_cancel(other, f->tenant, bs_job_id(r[1]), &err), 0);
    wait_cancelled(r[0]);
    wait_cancelled(r[1]);
    assert_int_equal(bs_job_cancelled(r[2]), 0);
    bs_jobs_stats_t st;
    bs_jobs_stats(j, &st);
    assert_int_equal((int)st.lost_leases, 1);
    char done_id[3][37]; /* a run is freed once it ended: keep its id */
    for (int i = 0; i < 3; i++)
        snprintf(done_id[i], sizeof done_id[i], "%s", bs_job_id(r[i]));
    bs_job_complete(r[0], NULL, NULL);
    bs_job_fail(r[1], 1, 0, "stopped: cancelled");
    bs_job_complete(r[2], NULL, NULL);
    cJSON_Delete(wait_state(j, f, done_id[1], "cancelled"));
    cJSON_Delete(wait_state(j, f, done_id[2], "completed"));
    STATS_WHEN(j, st, st.stale_ends == 1);
    assert_int_equal((int)st.stale_ends, 1);
    bs_jobs_free(j);
    bs_jobs_free(other);
    seen_free(s);
}

/* Shutdown: an async attempt still open after lease/3 is released (available again, its
 * attempt recorded); ending it later only frees it. A blocking attempt that stops when told
 * is retried at once. */
static void test_shutdown_releases_claims(void **state)
{
    fx_t *f = *state;
    seen_t *s = seen_new(), *sblock = seen_new();
    bs_jobs_t *j = runtime(f->a, "a", 600, 0, 2);
    char kind[64], kblock[64], id[37], idb[37];
    reg(j, f, "stash", h_stash, s, 0, 0, kind);
    reg(j, f, "block", h_block, sblock, 0, 0, kblock);
    start(j);
    enqueue(j, f, kind, NULL, id);
    enqueue(j, f, kblock, NULL, idb);
    bs_job_run_t *r = wait_stash(s, 0);
    wait_calls(sblock, 1);
    bs_jobs_free(j); /* waits 200 ms for r, then releases it */
    assert_int_equal(bs_job_cancelled(r), 1);
    bs_job_complete(r, "{}", NULL);               /* detached: frees it, writes nothing */
    bs_jobs_t *k = runtime(f->b, "b", 600, 0, 2); /* to read; no kinds run */
    cJSON *o = job(k, f, id);
    assert_string_equal(str(o, "state"), "available");
    assert_int_equal(count_errors(o), 1);
    assert_non_null(strstr(str(error_at(o, 0), "error"), "interrupted"));
    cJSON_Delete(o);
    o = job(k, f, idb);
    const char *st = str(o, "state");
    assert_true(!strcmp(st, "retryable") || !strcmp(st, "available"));
    int64_t sched;
    assert_int_equal(bs_time_parse_rfc3339(str(o, "scheduled_at"), &sched), 0);
    assert_true(sched <= bs_time_wall_ms() + 1000); /* at once, not after a backoff */
    cJSON_Delete(o);
    bs_jobs_free(k);
    seen_free(s);
    seen_free(sblock);
}

static void test_retention_deletes_old_finalized_jobs(void **state)
{
    fx_t *f = *state;
    seen_t *s = seen_new();
    bs_jobs_t *j = runtime(f->a, "a", 300, 300, 2);
    char kind[64], id[37], waiting[37];
    reg(j, f, "noop", h_noop, s, 0, 0, kind);
    start(j);
    enqueue_later(j, f, kind, waiting);
    enqueue(j, f, kind, NULL, id);
    cJSON_Delete(wait_state(j, f, id, "completed"));
    uint64_t until = bs_time_mono_ns() + 20000000000ull;
    cJSON *o;
    while ((o = job(j, f, id)) && bs_time_mono_ns() < until) {
        cJSON_Delete(o);
        usleep(20000);
    }
    assert_null(o);
    o = job(j, f, waiting); /* not finalized: kept */
    assert_non_null(o);
    cJSON_Delete(o);
    bs_jobs_stats_t st;
    STATS_WHEN(j, st, st.retention_deleted >= 1);
    assert_true(st.retention_deleted >= 1);
    bs_jobs_free(j);
    seen_free(s);
}

static void test_register_and_enqueue_checks(void **state)
{
    fx_t *f = *state;
    seen_t *s = seen_new();
    bs_jobs_t *j = runtime(f->a, "a", 0, 0, 2);
    bs_err_t err;
    bs_job_kind_t bad = {.kind = "Bad Kind", .run = h_noop};
    assert_int_equal(bs_jobs_register(j, &bad, &err), BS_EINVAL);
    char kind[64];
    reg(j, f, "noop", h_noop, s, 0, 0, kind);
    bs_job_kind_t dup = {.kind = kind, .run = h_noop};
    assert_int_equal(bs_jobs_register(j, &dup, &err), BS_ECONFLICT);
    bs_job_kind_t info;
    assert_int_equal(bs_jobs_kind(j, kind, &info), 0);
    assert_int_equal(info.max_attempts, 25);
    assert_int_equal(info.concurrency, 2);
    assert_int_equal(bs_jobs_kind(j, "nope", &info), BS_ENOTFOUND);
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jobs_kinds_json(j, &b);
    cJSON *o = cJSON_Parse(b.data);
    assert_string_equal(str(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "items"), 0), "kind"), kind);
    cJSON_Delete(o);
    bs_buf_free(&b);
    char id[37];
    int existed;
    bs_job_new_t nj = {.kind = kind, .tenant = f->tenant, .args = "not json"};
    assert_int_equal(bs_jobs_enqueue(j, &nj, id, &existed, &err), BS_EINVAL);
    assert_string_equal(err.field, "args");
    nj.args = "{\"s\":\"\xff\"}";
    assert_int_equal(bs_jobs_enqueue(j, &nj, id, &existed, &err), BS_EINVAL);
    nj.args = NULL;
    nj.kind = "missing";
    assert_int_equal(bs_jobs_enqueue(j, &nj, id, &existed, &err), BS_EINVAL);
    assert_string_equal(err.field, "kind");
    nj.kind = kind;
    nj.tenant = NULL;
    assert_int_equal(bs_jobs_enqueue(j, &nj, id, &existed, &err), BS_EINVAL);
    nj.tenant = f->tenant;
    /* the limits: args of BS__JOBS_ARGS_MAX bytes, a unique_key of BS__JOBS_UNIQUE_MAX */
    char *big = malloc(BS__JOBS_ARGS_MAX + 2);
    memset(big, 'x', BS__JOBS_ARGS_MAX + 1);
    memcpy(big, "{\"a\":\"", 6);
    memcpy(big + BS__JOBS_ARGS_MAX - 2, "\"}", 3); /* BS__JOBS_ARGS_MAX bytes */
    nj.args = big;
    assert_int_equal(bs_jobs_enqueue(j, &nj, id, &existed, &err), 0);
    memcpy(big + BS__JOBS_ARGS_MAX - 2, "x\"}", 4); /* one more */
    assert_int_equal(bs_jobs_enqueue(j, &nj, id, &existed, &err), BS_EINVAL);
    assert_string_equal(err.field, "args");
    bs_job_new_t batch[2] = {{.kind = kind, .tenant = f->tenant}, nj};
    char ids[2][37];
    assert_int_equal(bs_jobs_enqueue_many(j, batch, 2, ids, NULL, &err), BS_EINVAL);
    assert_string_equal(err.field, "jobs[1].args");
    free(big);
    nj.args = NULL;
    char key[BS__JOBS_UNIQUE_MAX + 2];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = 0;
    nj.unique_key = key;
    assert_int_equal(bs_jobs_enqueue(j, &nj, id, &existed, &err), BS_EINVAL);
    assert_string_equal(err.field, "unique_key");
    key[BS__JOBS_UNIQUE_MAX] = 0;
    assert_int_equal(bs_jobs_enqueue(j, &nj, id, &existed, &err), 0);
    nj.unique_key = "";
    assert_int_equal(bs_jobs_enqueue(j, &nj, id, &existed, &err), BS_EINVAL);
    nj.unique_key = NULL;
    nj.max_attempts = -1;
    assert_int_equal(bs_jobs_enqueue(j, &nj, id, &existed, &err), BS_EINVAL);
    assert_string_equal(err.field, "max_attempts");
    nj.max_attempts = 0;
    nj.run_at_ms = -1;
    assert_int_equal(bs_jobs_enqueue(j, &nj, id, &existed, &err), BS_EINVAL);
    assert_string_equal(err.field, "run_at");
    assert_int_equal(jobs_of(f->a, f->tenant), 2); /* the two at their limits */
    start(j);
    assert_int_equal(bs_jobs_register(j, &dup, &err), BS_EINVAL); /* after start */
    bs_jobs_free(j);
    bs_jobs_free(NULL);
    seen_free(s);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

static const struct CMUnitTest store_tests[] = {
    T(test_complete_with_result),
    T(test_non_retryable_error_discards),
    T(test_retries_then_completes),
    T(test_attempts_exhausted_discards),
    T(test_scheduled_job_waits_for_its_time),
    T(test_unique_keys),
    T(test_enqueue_many_is_all_or_nothing),
    T(test_list_pages_and_filters),
    T(test_priority_first),
    T(test_cancel_waiting_job),
    T(test_cancel_running_job),
    T(test_cancel_seen_by_another_replica),
    T(test_retry_discarded_job),
    T(test_progress_rate_and_eta),
    T(test_two_runtimes_never_run_a_job_twice),
    T(test_expired_lease_is_claimed_again_and_the_stale_end_ignored),
    T(test_heartbeat_notices_a_lost_claim),
    T(test_attempts_in_flight_are_renewed_and_polled_together),
    T(test_shutdown_releases_claims),
    T(test_retention_deletes_old_finalized_jobs),
    T(test_register_and_enqueue_checks),
};

int main(void)
{
    const struct CMUnitTest pure[] = {
        cmocka_unit_test(test_state_names),
        cmocka_unit_test(test_default_backoff_within_ten_percent_of_attempt_to_the_fourth),
        cmocka_unit_test(test_rate_and_samples),
    };
    int failed = cmocka_run_group_tests_name("jobs (pure)", pure, NULL, NULL);
    pg_url = NULL;
    failed += _cmocka_run_group_tests("jobs on SQLite", store_tests,
                                      sizeof store_tests / sizeof *store_tests, NULL, NULL);
    const char *pg = getenv("BASALT_TEST_PG_URL");
    if (pg && *pg) {
        pg_url = pg;
        failed += _cmocka_run_group_tests("jobs on PostgreSQL", store_tests,
                                          sizeof store_tests / sizeof *store_tests, NULL, NULL);
    }
    return failed;
}
