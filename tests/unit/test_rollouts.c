/* Rollouts (serving/rollouts.c, included for its static helpers): the request's validation
 * (each bad body names its field; defaults filled in), the largest-remainder scaling of the
 * stable routes (every sum, every share within one of exact, zero stays zero), the history's
 * cap, and the transition's guards on a real SQLite store — a holder whose lease another
 * replica took over (a stale fencing token) writes nothing, and neither does a transition
 * computed from a row that changed meanwhile. */
#include "test_common.h"

#include <math.h>
#include <unistd.h>

#include "base/rcu.h"
#include "serving/rollouts.c"

static cJSON *parse(const char *s)
{
    cJSON *j = cJSON_Parse(s);
    assert_non_null(j);
    return j;
}

/* plan_parse of body (a request) fails with BS_EINVAL naming field. */
static void bad(const char *body, const char *field)
{
    cJSON *j = parse(body);
    bs__rollout_plan_t p;
    bs_err_t err;
    bs_err_clear(&err);
    int rc = plan_parse(j, 0, &p, &err);
    if (rc != BS_EINVAL || strcmp(err.field, field))
        fail_msg("%s: want field %s, got rc %d field '%s' (%s)", body, field, rc, err.field,
                 err.msg);
    cJSON_Delete(j);
}

static void test_bad_bodies_name_their_field(void **state)
{
    (void)state;
    bad("[]", "");
    bad("{\"steps\": [5, 100]}", "candidate");
    bad("{\"candidate\": {}, \"steps\": [5, 100]}", "candidate");
    bad("{\"candidate\": {\"version\": 0}, \"steps\": [5, 100]}", "candidate.version");
    bad("{\"candidate\": {\"version\": 1.5}, \"steps\": [5, 100]}", "candidate.version");
    bad("{\"candidate\": {\"alias\": \"\"}, \"steps\": [5, 100]}", "candidate.alias");
    bad("{\"candidate\": {\"version\": 2, \"route\": \"x\"}, \"steps\": [5, 100]}",
        "candidate.route");
    bad("{\"candidate\": {\"version\": 2}}", "steps");
    bad("{\"candidate\": {\"version\": 2}, \"steps\": [100]}", "steps");
    bad("{\"candidate\": {\"version\": 2}, \"steps\": [5, 50]}", "steps");
    bad("{\"candidate\": {\"version\": 2}, \"steps\": [5, 5, 100]}", "steps[1]");
    bad("{\"candidate\": {\"version\": 2}, \"steps\": [5, 101]}", "steps[1]");
    bad("{\"candidate\": {\"version\": 2}, \"steps\": [\"5\", 100]}", "steps[0]");
    bad("{\"candidate\": {\"version\": 2}, \"steps\": [5, 100], \"step_interval\": \"5\"}",
        "step_interval");
    bad("{\"candidate\": {\"version\": 2}, \"steps\": [5, 100], \"step_interval\": \"31d\"}",
        "step_interval");
    bad("{\"candidate\": {\"version\": 2}, \"steps\": [5, 100], \"min_requests_per_step\": 1.5}",
        "min_requests_per_step");
    bad("{\"candidate\": {\"version\": 2}, \"steps\": [5, 100], \"stable\": []}", "stable");
    bad("{\"candidate\": {\"version\": 2}, \"steps\": [5, 100], \"guards\": []}", "guards");
    bad("{\"candidate\": {\"version\": 2}, \"steps\": [5, 100], \"guards\": {\"min_requests\": 0}}",
        "guards.min_requests");
    bad("{\"candidate\": {\"version\": 2}, \"steps\": [5, 100], \"guards\": "
        "{\"max_error_rate\": -0.1}}",
        "guards.max_error_rate");
    bad("{\"candidate\": {\"version\": 2}, \"steps\": [5, 100], \"guards\": "
        "{\"max_metric_drop\": {\"metric\": \"accuracy\", \"delta\": 0.1, \"x\": 1}}}",
        "guards.max_metric_drop.x");
    bad("{\"candidate\": {\"version\": 2}, \"steps\": [5, 100], \"guards\": "
        "{\"max_metric_drop\": {\"metric\": \"accuracy\", \"delta\": 0.1, \"min_labelled\": 0}}}",
        "guards.max_metric_drop.min_labelled");
}

static void test_defaults(void **state)
{
    (void)state;
    bs__rollout_plan_t p;
    bs_err_t err;
    cJSON *j = parse("{\"candidate\": {\"version\": 4}, \"steps\": [5, 25, 50, 100]}");
    assert_int_equal(plan_parse(j, 0, &p, &err), 0);
    cJSON_Delete(j);
    assert_int_equal(p.version, 4);
    assert_int_equal(p.n_steps, 4);
    assert_string_equal(p.interval, "5m");
    assert_int_equal(p.interval_ms, 300000);
    assert_int_equal(p.min_requests, 100);
    assert_int_equal(p.guard_min_requests, 100);
    assert_true(isnan(p.max_error_rate) && isnan(p.max_p99_ms) && isnan(p.max_psi));
    assert_false(p.has_metric);
    /* guards are judged from the smaller of 100 and min_requests_per_step (at least 1) */
    j = parse("{\"candidate\": {\"alias\": \"challenger\"}, \"steps\": [5, 100], "
              "\"min_requests_per_step\": 30, \"step_interval\": \"1s\", \"guards\": "
              "{\"max_metric_drop\": {\"metric\": \"mae\", \"delta\": 0.5}}}");
    assert_int_equal(plan_parse(j, 0, &p, &err), 0);
    cJSON_Delete(j);
    assert_int_equal(p.guard_min_requests, 30);
    assert_string_equal(p.alias, "challenger");
    assert_true(p.has_metric && p.delta == 0.5 && p.min_labelled == 30);
    j = parse(
        "{\"candidate\": {\"version\": 2}, \"steps\": [5, 100], \"min_requests_per_step\": 0}");
    assert_int_equal(plan_parse(j, 0, &p, &err), 0);
    cJSON_Delete(j);
    assert_int_equal(p.guard_min_requests, 1);
    /* the stored form parses back to the same plan */
    j = parse("{\"candidate\": {\"version\": 2}, \"steps\": [10, 60, 100], "
              "\"guards\": {\"max_error_rate\": 0.01, \"max_prediction_psi\": 0.2}}");
    assert_int_equal(plan_parse(j, 0, &p, &err), 0);
    cJSON_Delete(j);
    snprintf(p.route, sizeof p.route, "v2");
    stable_t st[1] = {{.name = "v1", .version = 1, .weight = 100}};
    snprintf(p.stable[p.n_stable++], sizeof p.stable[0], "v1");
    char *text = plan_render(&p, st, 1);
    bs__rollout_plan_t q;
    assert_int_equal(bs__rollout_plan_parse(text, &q, &err), 0);
    free(text);
    assert_int_equal(q.version, 2);
    assert_string_equal(q.route, "v2");
    assert_int_equal(q.n_steps, 3);
    assert_int_equal(q.steps[1], 60);
    assert_true(q.max_error_rate == 0.01 && q.max_psi == 0.2 && isnan(q.max_p99_ms));
    assert_int_equal(q.n_stable, 1);
    assert_string_equal(q.stable[0], "v1");
}

static void check_scale(const int *w, int n, int T)
{
    int out[BS_ENDPOINT_MAX_ROUTES], W = 0, sum = 0;
    for (int i = 0; i < n; i++)
        W += w[i];
    scale_weights(w, n, T, out);
    for (int i = 0; i < n; i++) {
        double exact = (double)w[i] * T / W;
        sum += out[i];
        if (fabs(out[i] - exact) >= 1.0 || (w[i] == 0 && out[i] != 0))
            fail_msg("route %d: weight %d of %d scaled to %d: %d, exact %g", i, w[i], W, T, out[i],
                     exact);
    }
    assert_int_equal(sum, T);
}

static void test_scaling(void **state)
{
    (void)state;
    int out[4];
    scale_weights((int[]){60, 40}, 2, 75, out);
    assert_int_equal(out[0], 45);
    assert_int_equal(out[1], 30);
    scale_weights((int[]){1, 1, 1}, 3, 50, out);
    assert_int_equal(out[0] + out[1] + out[2], 50);
    assert_int_equal(out[0], 17); /* ties: the earlier route */
    assert_int_equal(out[1], 17);
    assert_int_equal(out[2], 16);
    scale_weights((int[]){0, 100}, 2, 10, out);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 10);
    scale_weights((int[]){33, 33, 34}, 3, 1, out);
    assert_int_equal(out[2], 1);
    unsigned seed = 7;
    for (int k = 0; k < 20000; k++) {
        int n = 1 + rand_r(&seed) % BS_ENDPOINT_MAX_ROUTES, w[BS_ENDPOINT_MAX_ROUTES], W = 0;
        for (int i = 0; i < n; i++) {
            w[i] = rand_r(&seed) % 4 == 0 ? 0 : rand_r(&seed) % 101;
            W += w[i];
        }
        if (!W)
            continue;
        check_scale(w, n, rand_r(&seed) % 100);
    }
}

static void test_history_is_capped(void **state)
{
    (void)state;
    char *h = strdup("[]");
    for (int i = 0; i < BS__ROLLOUT_MAX_HISTORY + 50; i++) {
        cJSON *ev = bs__rollout_event(i ? "advanced" : "started", i, i % 100, "t");
        char *next = history_append(h, ev);
        cJSON_Delete(ev);
        free(h);
        h = next;
    }
    cJSON *a = parse(h);
    free(h);
    assert_int_equal(cJSON_GetArraySize(a), BS__ROLLOUT_MAX_HISTORY);
    assert_string_equal(str_item(cJSON_GetArrayItem(a, 0), "event"), "started");
    assert_int_equal(int_item(cJSON_GetArrayItem(a, BS__ROLLOUT_MAX_HISTORY - 1), "step"),
                     BS__ROLLOUT_MAX_HISTORY + 49);
    assert_int_equal(int_item(cJSON_GetArrayItem(a, 1), "step"), 51);
    cJSON_Delete(a);
}

/* ---- transitions on a store ------------------------------------------------------------ */

typedef struct {
    char dir[64];
    bs_meta_t *meta;
    bs_rollouts_t *a; /* the replica "a" */
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    bs_err_t err;
    snprintf(f->dir, sizeof f->dir, "/tmp/bs-test-rollouts-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    char path[128];
    snprintf(path, sizeof path, "%s/basalt.db", f->dir);
    if (!(f->meta = bs_meta_open(path, &err)))
        return -1;
    bs_rollouts_opts_t o = {.meta = f->meta, .owner = "a"};
    if (!(f->a = bs_rollouts_new(&o, &err)))
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    bs_rollouts_free(f->a);
    bs_meta_close(f->meta);
    bs_rcu_drain();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    int rc = system(cmd);
    free(f);
    return rc ? -1 : 0;
}

static const char *const SPEC =
    "{\"candidate\":{\"version\":2,\"route\":\"v2\"},\"steps\":[10,100],"
    "\"step_interval\":\"1s\",\"min_requests_per_step\":1,\"guards\":{\"min_requests\":1},"
    "\"stable\":[{\"name\":\"v1\",\"version\":1,\"weight\":100}]}";

static void insert_row(fx_t *f, const char *id)
{
    bs_err_t err;
    bs_val_t a[] = {BS_TXT(id), BS_TXT(SPEC)};
    assert_int_equal(bs_meta_exec(f->meta,
                                  "INSERT INTO rollouts (id, tenant, endpoint, state, spec,"
                                  " base_spec, base_generation, step, step_started_at, history,"
                                  " created_at, updated_at, created_by) VALUES (?, 'default',"
                                  " 'ep', 'running', ?, '{}', 1, 0, 1000, '[]', 1000, 1000, 't')",
                                  a, 2, NULL, &err),
                     0);
}

static void load(fx_t *f, const char *id, bs__rollout_row_t *row)
{
    bs_err_t err;
    assert_int_equal(load_one(f->a, "default", "ep", id, row, &err), 0);
}

static void test_stale_token_writes_nothing(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    insert_row(f, "r1");
    bs__rollout_row_t row;
    load(f, "r1", &row);
    bs__rollout_plan_t p;
    assert_int_equal(bs__rollout_plan_parse(row.spec, &p, &err), 0);
    /* a holds the lease: its transition is written */
    bs_lease_t la, lb;
    assert_int_equal(bs_lease_acquire(f->meta, BS__ROLLOUT_LEASE, "a", 60000, &la, &err), 0);
    cJSON *ev = bs__rollout_event("paused", 0, 10, "a");
    bs__rollout_tr_t t = {.state = "paused",
                          .step = 0,
                          .step_started_at = 1000,
                          .event = ev,
                          .actor = "a",
                          .token = la.token};
    assert_int_equal(bs__rollout_apply(f->a, &row, &p, &t, &err), 0);
    bs__rollout_row_free(&row);
    load(f, "r1", &row);
    assert_string_equal(row.state, "paused");
    assert_true(row.updated_at > 1000);
    /* b takes the lease over: a's token is stale and a writes nothing, even a check */
    assert_int_equal(bs_lease_release(f->meta, BS__ROLLOUT_LEASE, "a", la.token, &err), 0);
    assert_int_equal(bs_lease_acquire(f->meta, BS__ROLLOUT_LEASE, "b", 60000, &lb, &err), 0);
    assert_true(lb.token > la.token);
    bs__rollout_tr_t t2 = {.state = "running",
                           .step = 1,
                           .step_started_at = 2000,
                           .event = ev,
                           .actor = "a",
                           .token = la.token};
    assert_int_equal(bs__rollout_apply(f->a, &row, &p, &t2, &err), BS_ECONFLICT);
    assert_non_null(strstr(err.msg, "lease"));
    bs__rollout_tr_t t3 = {.last_check = "{}", .token = la.token, .check_only = 1};
    assert_int_equal(bs__rollout_apply(f->a, &row, &p, &t3, &err), BS_ECONFLICT);
    bs__rollout_row_t after;
    load(f, "r1", &after);
    assert_string_equal(after.state, "paused");
    assert_int_equal(after.step, 0);
    assert_null(after.last_check);
    assert_int_equal(after.updated_at, row.updated_at);
    bs__rollout_row_free(&after);
    bs__rollout_row_free(&row);
    cJSON_Delete(ev);
}

static void test_changed_row_writes_nothing(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    insert_row(f, "r2");
    bs__rollout_row_t row, stale;
    load(f, "r2", &row);
    load(f, "r2", &stale);
    bs__rollout_plan_t p;
    assert_int_equal(bs__rollout_plan_parse(row.spec, &p, &err), 0);
    cJSON *ev = bs__rollout_event("paused", 0, 10, "k");
    /* an API action (no token) pauses it */
    bs__rollout_tr_t t = {
        .state = "paused", .step = 0, .step_started_at = 1000, .event = ev, .actor = "k"};
    assert_int_equal(bs__rollout_apply(f->a, &row, &p, &t, &err), 0);
    /* and resumes it: state and step are as before, only updated_at moved */
    bs__rollout_row_free(&row);
    load(f, "r2", &row);
    bs__rollout_tr_t t2 = {
        .state = "running", .step = 0, .step_started_at = 1000, .event = ev, .actor = "k"};
    assert_int_equal(bs__rollout_apply(f->a, &row, &p, &t2, &err), 0);
    /* a transition computed from the row as it was before both is refused */
    bs__rollout_tr_t t3 = {
        .state = "running", .step = 1, .step_started_at = 5000, .event = ev, .actor = "k"};
    assert_int_equal(bs__rollout_apply(f->a, &stale, &p, &t3, &err), BS_ECONFLICT);
    bs__rollout_row_t after;
    load(f, "r2", &after);
    assert_int_equal(after.step, 0);
    cJSON *h = parse(after.history);
    assert_int_equal(cJSON_GetArraySize(h), 2); /* paused, resumed: nothing lost */
    cJSON_Delete(h);
    bs__rollout_row_free(&after);
    bs__rollout_row_free(&row);
    bs__rollout_row_free(&stale);
    cJSON_Delete(ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_bodies_name_their_field),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_scaling),
        cmocka_unit_test(test_history_is_capped),
        cmocka_unit_test_setup_teardown(test_stale_token_writes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changed_row_writes_nothing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
