/* The shadow runner (serving/shadow.h) over a real registry and serving snapshot: runs
 * predict on the named version off the caller's thread, failures reach done with the
 * failing step's error, the queue is bounded (a full queue drops and counts, never
 * blocks), and free drops what is still queued. */
#include "test_common.h"

#include <math.h>
#include <pthread.h>
#include <unistd.h>

#include "base/rcu.h"
#include "registry/registry.h"
#include "serving/serving.h"
#include "serving/shadow.h"

typedef struct {
    char dir[64];
    bs_meta_t *meta;
    bs_registry_t *reg;
    bs_serving_t *serving;
} fx_t;

static const char LINEAR[] = "{\"basalt_model\":1,\"inputs\":[{\"name\":\"a\",\"type\":\"float\"}],"
                             "\"estimator\":{\"type\":\"linear\",\"link\":\"identity\",\"coef\":[["
                             "2.0]],\"intercept\":[1.0]},"
                             "\"output\":{\"task\":\"regression\",\"n_outputs\":1}}";

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/bs-test-shadow-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    char path[128];
    snprintf(path, sizeof path, "%s/basalt.db", f->dir);
    bs_err_t err;
    if (!(f->meta = bs_meta_open(path, &err)))
        return -1;
    snprintf(path, sizeof path, "%s/artifacts", f->dir);
    if (!(f->reg = bs_registry_new(f->meta, path, BS_BLOBS_FILES, &err)))
        return -1;
    bs_principal_t who = {.tenant = "default", .role = BS_ROLE_ADMIN};
    bs_buf_t b;
    bs_buf_init(&b);
    cJSON *body = cJSON_Parse("{\"name\":\"m\"}");
    int rc = bs_registry_model_create(f->reg, &who, body, &b, &err);
    cJSON_Delete(body);
    bs_buf_reset(&b);
    if (!rc)
        rc = bs_registry_version_create(f->reg, &who, "m", NULL, LINEAR, sizeof LINEAR - 1, NULL,
                                        &b, &err);
    bs_buf_reset(&b);
    if (!rc)
        rc = bs_registry_version_transition(f->reg, &who, "m", 1, "approve", NULL, &b, &err);
    bs_buf_free(&b);
    if (rc) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    bs_serving_opts_t so = {.memory_budget = 1 << 28, .max_rows = 1000};
    if (!(f->serving = bs_serving_new(f->meta, f->reg, &so, &err)) ||
        bs_serving_refresh(f->serving, &err))
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    bs_serving_free(f->serving);
    bs_registry_free(f->reg);
    bs_meta_close(f->meta);
    bs_rcu_drain();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* One job's state: what parse reads, what done saw. */
typedef struct {
    double x; /* the row */
    int fail_parse;
    pthread_mutex_t *gate; /* parse waits for it (a slow shadow) when non-NULL */
    int *freed;            /* incremented by free_ud */
    /* results */
    int done;
    int had_handle;
    int code;
    double out;
    int version;
} job_ud_t;

static pthread_mutex_t results = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t results_cv = PTHREAD_COND_INITIALIZER;

static int parse(void *ud, bs_serving_t *s, const bs_model_handle_t *h, bs_arena_t *a,
                 double **rows, size_t *n, bs_err_t *err)
{
    (void)s;
    job_ud_t *j = ud;
    if (j->gate) {
        pthread_mutex_lock(j->gate);
        pthread_mutex_unlock(j->gate);
    }
    if (j->fail_parse)
        return bs_err_setf(err, BS_EINVAL, "extra", "inputs: required feature 'extra' is missing");
    double *r = bs_arena_alloc(a, (size_t)bs_model_handle_schema(h)->n_features * sizeof(double));
    r[0] = j->x;
    *rows = r;
    *n = 1;
    return 0;
}

static void done(void *ud, bs_model_handle_t *h, const double *rows, const double *out, size_t n,
                 uint64_t ns, const bs_err_t *err)
{
    (void)rows;
    (void)ns;
    (void)n;
    job_ud_t *j = ud;
    pthread_mutex_lock(&results);
    j->had_handle = h != NULL;
    j->version = h ? bs_model_handle_version(h) : 0;
    j->code = err ? err->code : 0;
    j->out = out ? out[0] : NAN;
    j->done = 1;
    pthread_cond_broadcast(&results_cv);
    pthread_mutex_unlock(&results);
}

static void free_ud(void *ud)
{
    job_ud_t *j = ud;
    if (j->freed) {
        pthread_mutex_lock(&results);
        (*j->freed)++;
        pthread_cond_broadcast(&results_cv);
        pthread_mutex_unlock(&results);
    }
}

static void wait_done(job_ud_t *j)
{
    pthread_mutex_lock(&results);
    while (!j->done)
        pthread_cond_wait(&results_cv, &results);
    pthread_mutex_unlock(&results);
}

static bs_shadow_job_t job_of(job_ud_t *j, const char *ref, int version)
{
    return (bs_shadow_job_t){.tenant = "default",
                             .ref = ref,
                             .version = version,
                             .parse = parse,
                             .done = done,
                             .free_ud = free_ud,
                             .ud = j,
                             .bytes = 100};
}

static void test_runs_and_failures(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_shadow_t *sh = bs_shadow_new(f->serving, &err);
    assert_non_null(sh);
    int freed = 0;
    job_ud_t ok = {.x = 3, .freed = &freed}, bad_parse = {.x = 1, .fail_parse = 1, .freed = &freed};
    job_ud_t no_version = {.x = 1, .freed = &freed}, no_model = {.x = 1, .freed = &freed};
    bs_shadow_job_t j1 = job_of(&ok, "m", 1), j2 = job_of(&bad_parse, "m", 1),
                    j3 = job_of(&no_version, "m", 7), j4 = job_of(&no_model, "nope@champion", 0);
    assert_int_equal(bs_shadow_submit(sh, &j1, &err), 0);
    assert_int_equal(bs_shadow_submit(sh, &j2, &err), 0);
    assert_int_equal(bs_shadow_submit(sh, &j3, &err), 0);
    assert_int_equal(bs_shadow_submit(sh, &j4, &err), 0);
    wait_done(&ok);
    wait_done(&bad_parse);
    wait_done(&no_version);
    wait_done(&no_model);
    assert_int_equal(ok.code, 0);
    assert_true(ok.had_handle);
    assert_int_equal(ok.version, 1);
    assert_true(ok.out == 7.0); /* 2 * 3 + 1 */
    assert_int_equal(bad_parse.code, BS_EINVAL);
    assert_true(bad_parse.had_handle);
    assert_int_equal(no_version.code, BS_ENOTFOUND);
    assert_false(no_version.had_handle);
    assert_int_equal(no_model.code, BS_ENOTFOUND);
    bs_shadow_free(sh); /* joins: every free_ud has run */
    assert_int_equal(freed, 4);
}

static void *free_runner(void *sh)
{
    bs_shadow_free(sh);
    return NULL;
}

static void test_bounded_queue_drops_and_free_drops_queued(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_shadow_t *sh = bs_shadow_new(f->serving, &err);
    assert_non_null(sh);
    /* A slow shadow: the first BS_SHADOW_THREADS jobs hold every thread until the gate
     * opens; the queue behind them fills up to its bound, and the next submit is refused
     * at once (the caller is never blocked). */
    pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&gate);
    int total = BS_SHADOW_THREADS + BS_SHADOW_MAX_JOBS;
    job_ud_t *jobs = calloc((size_t)total + 1, sizeof *jobs);
    int freed = 0;
    for (int i = 0; i < total; i++) {
        jobs[i] = (job_ud_t){.x = i, .gate = &gate, .freed = &freed};
        bs_shadow_job_t j = job_of(&jobs[i], "m", 1);
        assert_int_equal(bs_shadow_submit(sh, &j, &err), 0);
        if (i < BS_SHADOW_THREADS) /* let a thread take it before queueing more */
            for (int t = 0; t < 2000; t++) {
                bs_buf_t b;
                bs_buf_init(&b);
                bs_shadow_metrics(sh, &b);
                int queued = strstr(b.data, "basalt_shadow_queue_jobs 0\n") != NULL;
                bs_buf_free(&b);
                if (queued)
                    break;
                usleep(1000);
            }
    }
    job_ud_t extra = {.x = -1, .freed = &freed};
    bs_shadow_job_t je = job_of(&extra, "m", 1);
    assert_int_equal(bs_shadow_submit(sh, &je, &err), BS_EOVERLOAD);
    assert_non_null(strstr(err.msg, "full"));
    assert_int_equal(extra.done, 0); /* refused: still the caller's */
    bs_buf_t b;
    bs_buf_init(&b);
    bs_shadow_metrics(sh, &b);
    assert_non_null(strstr(b.data, "basalt_shadow_dropped_total 1\n"));
    char want[64];
    snprintf(want, sizeof want, "basalt_shadow_queue_jobs %d\n", BS_SHADOW_MAX_JOBS);
    assert_non_null(strstr(b.data, want));
    bs_buf_free(&b);
    /* Free while the slow runs hold the threads: it stops taking jobs at once (a submit now
     * says "stopping"); opening the gate lets the running ones end; the queued ones are
     * dropped (free_ud, counted), never run. */
    pthread_t freer;
    assert_int_equal(pthread_create(&freer, NULL, free_runner, sh), 0);
    for (;;) {
        job_ud_t probe = {.x = -1};
        bs_shadow_job_t jp = job_of(&probe, "m", 1);
        assert_int_equal(bs_shadow_submit(sh, &jp, &err), BS_EOVERLOAD);
        if (strstr(err.msg, "stopping"))
            break;
        usleep(1000);
    }
    pthread_mutex_unlock(&gate);
    pthread_join(freer, NULL);
    assert_int_equal(freed, total);
    int ran = 0;
    for (int i = 0; i < total; i++)
        ran += jobs[i].done;
    assert_int_equal(ran, BS_SHADOW_THREADS);
    free(jobs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_runs_and_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounded_queue_drops_and_free_drops_queued, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
