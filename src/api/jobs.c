/*
 * /v1/jobs and /v1/job-kinds: list, get, enqueue (one job or a batch of up to 1000 in one
 * transaction), cancel and retry the caller's tenant's jobs, and the registered kinds
 * (events/jobs.h does the work; these handlers parse and render).
 *
 * Also the diagnostic kind `sleep`, registered here because it is the API's: users and tests
 * start it with POST /v1/jobs to see the runtime work. Its args {"seconds", "steps",
 * "fail_times", "fatal"}: it sleeps `seconds` in `steps` equal steps, reporting progress
 * (step/steps) after each; its first `fail_times` attempts fail retryably at their end; with
 * "fatal": true an attempt fails non-retryably (discarded at once). It is async: a sleeping
 * attempt holds no worker, only an entry on this file's timer thread, which also ends it
 * (failed, retryable) as soon as it is cancelled. seconds 0 completes inside the handler.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "base/log.h"
#include "events/jobs.h"

#define MAX_PAGE 1000

/* ---- the sleep kind -------------------------------------------------------------------- */

#define SLEEP_MAX_S 86400.0
#define SLEEP_MAX_STEPS 100000
#define SLEEP_CONCURRENCY 1000 /* async: sleeping attempts hold no worker */
#define SLEEP_CANCEL_POLL_NS 50000000ull

typedef struct sleeper {
    bs_job_run_t *run;
    uint64_t next_ns, step_ns;
    int step, steps;
    double seconds;
    int fail, fatal, cancelled;
    struct sleeper *next;
} sleeper_t;

struct bs__api_sleep {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t tid;
    int started, stop;
    sleeper_t *head;
};

typedef struct {
    double seconds;
    int steps, fail_times, fatal;
} sleep_args_t;

/* args of a sleep job; 0 or BS_EINVAL with err naming the field ("args.seconds"). */
static int sleep_parse(const cJSON *a, sleep_args_t *out, bs_err_t *err)
{
    memset(out, 0, sizeof *out);
    if (!a)
        return 0;
    if (!cJSON_IsObject(a))
        return bs_err_setf(err, BS_EINVAL, "args", "sleep args must be an object");
    static const char *const allowed[] = {"seconds", "steps", "fail_times", "fatal", NULL};
    if (bs_json_reject_unknown(a, allowed, err)) {
        char f[64], msg[256];
        snprintf(f, sizeof f, "args.%.50s", err->field);
        snprintf(msg, sizeof msg, "%s", err->msg);
        return bs_err_setf(err, BS_EINVAL, f,
                           "sleep takes seconds, steps, fail_times and fatal; %s", msg);
    }
    int64_t steps = 0, fail = 0;
    int rc;
    if ((rc = bs_json_get_double(a, "seconds", 0, &out->seconds, err)) < 0 ||
        (rc == 0 && !(out->seconds >= 0 && out->seconds <= SLEEP_MAX_S)))
        return bs_err_setf(err, BS_EINVAL, "args.seconds",
                           "args.seconds must be a number from 0 to %.0f", SLEEP_MAX_S);
    if (bs_json_get_int(a, "steps", 0, 1, SLEEP_MAX_STEPS, &steps, err) < 0)
        return bs_err_setf(err, BS_EINVAL, "args.steps",
                           "args.steps must be an integer from 1 to %d", SLEEP_MAX_STEPS);
    if (bs_json_get_int(a, "fail_times", 0, 0, 1000000, &fail, err) < 0)
        return bs_err_setf(err, BS_EINVAL, "args.fail_times",
                           "args.fail_times must be an integer from 0 to 1000000");
    if (bs_json_get_bool(a, "fatal", 0, &out->fatal, err) < 0)
        return bs_err_setf(err, BS_EINVAL, "args.fatal", "args.fatal must be true or false");
    out->steps = steps ? (int)steps : out->seconds > 0 ? 10 : 1;
    out->fail_times = (int)fail;
    return 0;
}

/* Ends s's attempt (s is off the list). */
static void sleeper_end(sleeper_t *s, int cancelled)
{
    bs_job_run_t *r = s->run;
    char msg[160];
    if (cancelled) {
        snprintf(msg, sizeof msg, "sleep stopped after step %d of %d: cancelled", s->step,
                 s->steps);
        bs_job_fail(r, 1, 0, msg);
    } else if (s->fatal) {
        bs_job_fail(r, 0, 0, "sleep: failing for good as asked (fatal)");
    } else if (s->fail) {
        snprintf(msg, sizeof msg, "sleep: failing attempt %d as asked (fail_times)",
                 bs_job_attempt(r));
        bs_job_fail(r, 1, 0, msg);
    } else {
        char res[160];
        snprintf(res, sizeof res, "{\"slept_s\":%.17g,\"steps\":%d,\"attempt\":%d}", s->seconds,
                 s->steps, bs_job_attempt(r));
        bs_job_complete(r, res, NULL);
    }
    free(s);
}

static void *sleep_main(void *arg)
{
    struct bs__api_sleep *sl = arg;
    pthread_mutex_lock(&sl->mu);
    while (!sl->stop) {
        uint64_t now = bs_time_mono_ns();
        sleeper_t *due = NULL, **p = &sl->head;
        uint64_t next = now + SLEEP_CANCEL_POLL_NS; /* cancellations are polled */
        while (*p) {
            sleeper_t *s = *p;
            int cancelled = bs_job_cancelled(s->run);
            while (!cancelled && s->step < s->steps && now >= s->next_ns) {
                s->step++;
                bs_job_progress(s->run, s->step, s->steps);
                s->next_ns += s->step_ns;
            }
            if (cancelled || s->step >= s->steps) {
                *p = s->next;
                s->next = due;
                due = s;
                s->cancelled = cancelled;
                continue;
            }
            if (s->next_ns < next)
                next = s->next_ns;
            p = &s->next;
        }
        pthread_mutex_unlock(&sl->mu);
        for (sleeper_t *s = due, *n; s; s = n) { /* ended outside the lock */
            n = s->next;
            sleeper_end(s, s->cancelled);
        }
        pthread_mutex_lock(&sl->mu);
        if (!sl->stop && !due) {
            struct timespec ts = {(time_t)(next / 1000000000u), (long)(next % 1000000000u)};
            pthread_cond_timedwait(&sl->cv, &sl->mu, &ts);
        }
    }
    sleeper_t *left = sl->head;
    sl->head = NULL;
    pthread_mutex_unlock(&sl->mu);
    for (sleeper_t *s = left, *n; s; s = n) {
        n = s->next;
        sleeper_end(s, 1);
    }
    return NULL;
}

static void sleep_run(void *ud, bs_job_run_t *r)
{
    struct bs__api_sleep *sl = ud;
    sleep_args_t a;
    bs_err_t err;
    bs_err_clear(&err);
    cJSON *args = cJSON_Parse(bs_job_args(r));
    int rc = sleep_parse(args, &a, &err);
    cJSON_Delete(args);
    if (rc) { /* enqueued around the API's checks (a trigger, a batch of another kind) */
        char msg[300];
        snprintf(msg, sizeof msg, "bad sleep args: %s", err.msg);
        bs_job_fail(r, 0, 0, msg);
        return;
    }
    sleeper_t *s = calloc(1, sizeof *s);
    if (!s) {
        bs_job_fail(r, 1, 0, "out of memory");
        return;
    }
    s->run = r;
    s->seconds = a.seconds;
    s->steps = a.steps;
    s->fail = bs_job_attempt(r) <= a.fail_times;
    s->fatal = a.fatal;
    if (a.seconds <= 0) { /* no wait: ends here, on the worker */
        s->step = s->steps;
        bs_job_progress(r, s->steps, s->steps);
        sleeper_end(s, 0);
        return;
    }
    s->step_ns = (uint64_t)llround(a.seconds * 1e9 / a.steps);
    bs_job_progress(r, 0, s->steps);
    pthread_mutex_lock(&sl->mu);
    s->next_ns = bs_time_mono_ns() + s->step_ns;
    s->next = sl->head;
    sl->head = s;
    pthread_cond_signal(&sl->cv);
    pthread_mutex_unlock(&sl->mu);
}

int bs__api_jobs_register(bs_app_t *app, bs_err_t *err)
{
    struct bs__api_sleep *sl = calloc(1, sizeof *sl);
    if (!sl)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    pthread_mutex_init(&sl->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sl->cv, &ca);
    pthread_condattr_destroy(&ca);
    app->job_sleep = sl;
    if (pthread_create(&sl->tid, NULL, sleep_main, sl) != 0)
        return bs_err_set(err, BS_EUNAVAIL, "cannot start the sleep kind's timer thread");
    sl->started = 1;
    bs_job_kind_t k = {
        .kind = "sleep",
        .run = sleep_run,
        .ud = sl,
        .concurrency = SLEEP_CONCURRENCY,
        .api_enqueue = 1,
        .description = "diagnostic: sleeps args.seconds in args.steps steps, reporting progress; "
                       "its first args.fail_times attempts fail (retryable), args.fatal fails "
                       "for good",
    };
    return bs_jobs_register(app->jobs, &k, err);
}

void bs__api_jobs_unregister(bs_app_t *app)
{
    struct bs__api_sleep *sl = app->job_sleep;
    if (!sl)
        return;
    if (sl->started) {
        pthread_mutex_lock(&sl->mu);
        sl->stop = 1;
        pthread_cond_signal(&sl->cv);
        pthread_mutex_unlock(&sl->mu);
        pthread_join(sl->tid, NULL);
    }
    pthread_cond_destroy(&sl->cv);
    pthread_mutex_destroy(&sl->mu);
    free(sl);
    app->job_sleep = NULL;
}

/* ---- handlers -------------------------------------------------------------------------- */

static int jobs_ready(bs_req_t *req)
{
    if (APP(req)->jobs)
        return 1;
    bs_resp_errorf(req, BS_EUNAVAIL, NULL, "the job runtime is not running");
    return 0;
}

static void respond_job(bs_req_t *req, int status, const char *id)
{
    bs_buf_t b;
    bs_buf_init(&b);
    bs_err_t err;
    if (bs_jobs_get(APP(req)->jobs, req->who.tenant, id, &b, &err) != 0) {
        bs_buf_free(&b);
        return bs_resp_error(req, &err);
    }
    bs_resp_json(req, status, &b);
    bs_buf_free(&b);
}

void bs__api_jobs_list(bs_req_t *req)
{
    if (!jobs_ready(req))
        return;
    int limit;
    if (bs__api_limit(req, 100, MAX_PAGE, &limit) < 0)
        return;
    const char *state = bs_req_query(req, "state"), *kind = bs_req_query(req, "kind");
    const char *cursor = bs_req_query(req, "cursor");
    if (state && !*state)
        state = NULL;
    if (kind && !*kind)
        kind = NULL;
    if (cursor && (!*cursor || strlen(cursor) > 36))
        return bs_resp_errorf(req, BS_EINVAL, "cursor", "cursor must be a next_cursor value");
    if (kind && strlen(kind) > 63)
        return bs_resp_errorf(req, BS_EINVAL, "kind", "kind is at most 63 characters");
    bs_buf_t b;
    bs_buf_init(&b);
    bs_err_t err;
    if (bs_jobs_list(APP(req)->jobs, req->who.tenant, state, kind, limit, cursor, &b, &err) != 0) {
        bs_buf_free(&b);
        return bs_resp_error(req, &err);
    }
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
}

void bs__api_jobs_get(bs_req_t *req)
{
    if (!jobs_ready(req))
        return;
    respond_job(req, 200, bs_req_param(req, "id"));
}

void bs__api_job_kinds(bs_req_t *req)
{
    if (!jobs_ready(req))
        return;
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jobs_kinds_json(APP(req)->jobs, &b);
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
}

/* Puts pre (a batch's "jobs[3].") before err's field and message; BS_EINVAL. */
static int prefixed(bs_err_t *err, const char *pre)
{
    char f[80], msg[256];
    snprintf(f, sizeof f, "%s%.50s", pre, err->field);
    snprintf(msg, sizeof msg, "%s", err->msg);
    return bs_err_setf(err, BS_EINVAL, f, "%s%s", pre, msg);
}

/* One job of a POST body into nj (strings borrowed from the tree or malloc'd into *args).
 * pre prefixes field names ("" or "jobs[3]."). */
static int parse_job(bs_app_t *app, const bs_req_t *req, const cJSON *o, const char *pre,
                     bs_job_new_t *nj, char **args, bs_err_t *err)
{
    char f[80];
    *args = NULL;
    if (!cJSON_IsObject(o))
        return bs_err_setf(err, BS_EINVAL, *pre ? "jobs" : NULL, "%sa job must be a JSON object",
                           pre);
    static const char *const allowed[] = {"kind",         "args",     "unique_key", "run_at",
                                          "max_attempts", "priority", NULL};
    if (bs_json_reject_unknown(o, allowed, err)) {
        char name[48];
        snprintf(name, sizeof name, "%.40s", err->field);
        snprintf(f, sizeof f, "%s%s", pre, name);
        return bs_err_setf(err, BS_EINVAL, f,
                           "%sunknown field '%s'; a job has kind, args, unique_key, run_at, "
                           "max_attempts and priority",
                           pre, name);
    }
    const char *kind = NULL, *unique = NULL, *run_at = NULL;
    int64_t max_attempts = 0, priority = 0;
    if (bs_json_get_str(o, "kind", 1, &kind, err) < 0 ||
        bs_json_get_str(o, "unique_key", 0, &unique, err) < 0 ||
        bs_json_get_str(o, "run_at", 0, &run_at, err) < 0 ||
        bs_json_get_int(o, "max_attempts", 0, 1, 1000000, &max_attempts, err) < 0 ||
        bs_json_get_int(o, "priority", 0, -1000, 1000, &priority, err) < 0)
        return prefixed(err, pre);
    bs_job_kind_t k;
    if (bs_jobs_kind(app->jobs, kind, &k) != 0) {
        snprintf(f, sizeof f, "%skind", pre);
        return bs_err_setf(err, BS_EINVAL, f,
                           "%sjob kind '%.63s' is not registered (GET /v1/job-kinds lists them)",
                           pre, kind);
    }
    if (!k.api_enqueue) {
        snprintf(f, sizeof f, "%skind", pre);
        return bs_err_setf(err, BS_EINVAL, f,
                           "%sjob kind '%.63s' is started by basalt itself, not through the API",
                           pre, kind);
    }
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "args");
    if (a && !cJSON_IsNull(a) && !cJSON_IsObject(a)) {
        snprintf(f, sizeof f, "%sargs", pre);
        return bs_err_setf(err, BS_EINVAL, f, "%sargs must be a JSON object", pre);
    }
    if (a && cJSON_IsNull(a))
        a = NULL;
    if (!strcmp(kind, "sleep")) {
        sleep_args_t sa;
        if (sleep_parse(a, &sa, err))
            return prefixed(err, pre);
    }
    int64_t at = 0;
    if (run_at && bs_time_parse_rfc3339(run_at, &at) != 0) {
        snprintf(f, sizeof f, "%srun_at", pre);
        return bs_err_setf(err, BS_EINVAL, f,
                           "%srun_at must be an RFC 3339 timestamp like 2027-01-01T00:00:00Z", pre);
    }
    if (a && !(*args = cJSON_PrintUnformatted(a)))
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    *nj = (bs_job_new_t){.kind = kind,
                         .tenant = req->who.tenant,
                         .args = *args,
                         .unique_key = unique,
                         .run_at_ms = at,
                         .max_attempts = (int)max_attempts,
                         .priority = (int)priority,
                         .created_by = req->who.key_id[0] ? req->who.key_id : "anonymous"};
    return 0;
}

void bs__api_jobs_create(bs_req_t *req)
{
    if (!jobs_ready(req))
        return;
    bs_app_t *app = APP(req);
    bs_err_t err;
    bs_err_clear(&err);
    cJSON *body = bs_req_json(req, &err);
    if (!body)
        return bs_resp_error(req, &err);
    if (!cJSON_IsObject(body))
        return bs_resp_errorf(req, BS_EINVAL, NULL,
                              "body must be a JSON object: a job, or {\"jobs\": [...]}");
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(body, "jobs");
    if (!list) {
        bs_job_new_t nj;
        char *args = NULL, id[37];
        int existed = 0;
        int rc = parse_job(app, req, body, "", &nj, &args, &err);
        if (!rc)
            rc = bs_jobs_enqueue(app->jobs, &nj, id, &existed, &err);
        free(args);
        if (rc)
            return bs_resp_error(req, &err);
        return respond_job(req, existed ? 200 : 201, id);
    }
    if (cJSON_GetArraySize(body) != 1)
        return bs_resp_errorf(req, BS_EINVAL, "jobs",
                              "a batch is {\"jobs\": [...]} with no other field");
    int n = cJSON_IsArray(list) ? cJSON_GetArraySize(list) : -1;
    if (n < 1 || n > BS_JOBS_BATCH_MAX)
        return bs_resp_errorf(req, BS_EINVAL, "jobs", "jobs must be an array of 1 to %d jobs",
                              BS_JOBS_BATCH_MAX);
    bs_job_new_t *nj = calloc((size_t)n, sizeof *nj);
    char **args = calloc((size_t)n, sizeof *args);
    char(*ids)[37] = calloc((size_t)n, 37);
    int *existed = calloc((size_t)n, sizeof *existed);
    int rc = nj && args && ids && existed ? 0 : bs_err_set(&err, BS_ENOMEM, "out of memory");
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, list)
    {
        if (rc)
            break;
        char pre[24];
        snprintf(pre, sizeof pre, "jobs[%d].", i);
        rc = parse_job(app, req, it, pre, &nj[i], &args[i], &err);
        i++;
    }
    if (!rc)
        rc = bs_jobs_enqueue_many(app->jobs, nj, n, ids, existed, &err);
    if (!rc) {
        bs_buf_t b;
        bs_buf_init(&b);
        bs_jw_obj_begin(&b);
        bs_jw_key(&b, "items");
        bs_jw_arr_begin(&b);
        for (int k = 0; k < n; k++) {
            bs_jw_obj_begin(&b);
            bs_jw_key(&b, "id");
            bs_jw_str(&b, ids[k]);
            bs_jw_key(&b, "kind");
            bs_jw_str(&b, nj[k].kind);
            bs_jw_key(&b, "existed");
            bs_jw_bool(&b, existed[k]);
            bs_jw_obj_end(&b);
        }
        bs_jw_arr_end(&b);
        bs_jw_obj_end(&b);
        bs_resp_json(req, 201, &b);
        bs_buf_free(&b);
    }
    for (int k = 0; args && k < n; k++)
        free(args[k]);
    free(nj);
    free(args);
    free(ids);
    free(existed);
    if (rc)
        bs_resp_error(req, &err);
}

void bs__api_jobs_cancel(bs_req_t *req)
{
    if (!jobs_ready(req))
        return;
    const char *id = bs_req_param(req, "id");
    bs_err_t err;
    if (bs_jobs_cancel(APP(req)->jobs, req->who.tenant, id, &err) != 0)
        return bs_resp_error(req, &err);
    respond_job(req, 200, id);
}

void bs__api_jobs_retry(bs_req_t *req)
{
    if (!jobs_ready(req))
        return;
    const char *id = bs_req_param(req, "id");
    bs_err_t err;
    if (bs_jobs_retry(APP(req)->jobs, req->who.tenant, id, &err) != 0)
        return bs_resp_error(req, &err);
    respond_job(req, 200, id);
}
