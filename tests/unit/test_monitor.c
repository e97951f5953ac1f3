/* The monitor (monitor/monitor.h) on a real segments log in a temporary directory: the id
 * index under insertion and eviction (every kept id found, every evicted one gone, with
 * UUIDs and other ids, across tables), eviction by count across endpoints and by window;
 * the label comparison rule; the tails (prediction records appended to the log land in the
 * table, feedback joins, the last feedback wins, feedback read before its prediction is
 * joined once the prediction arrives); a restart (a new monitor on the same log rebuilds
 * the table and its joins from the log); feedback's per-item results and its durable
 * append; summaries and PSI on known data. No timing assertions: waits are for a
 * condition with a generous deadline. */
#include "test_common.h"

#include <math.h>
#include <pthread.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/id.h"
#include "base/time.h"
#include "monitor/monitor.h"
#include "monitor/monitor_int.h"
#include "serving/predlog.h"
#include "store/log.h"

#define T "acme"

typedef struct {
    char dir[64];
    bs_log_t *log;
} fx_t;

static void ensure_topics(bs_log_t *l, const char *tenant)
{
    bs_log_topic_config_t p = {.retention_ms = 7LL * 86400 * 1000, .sync_interval_ms = 1000};
    bs_log_topic_config_t f = {.retention_ms = 30LL * 86400 * 1000};
    bs_err_t err;
    assert_int_equal(bs_log_topic_ensure(l, tenant, BS_PREDLOG_TOPIC, &p, &err), 0);
    assert_int_equal(bs_log_topic_ensure(l, tenant, BS_MONITOR_FEEDBACK_TOPIC, &f, &err), 0);
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/bs-test-monitor-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    bs_log_opts_t o = {.dir = f->dir};
    bs_err_t err;
    f->log = bs_log_open(&o, &err);
    *state = f;
    if (!f->log)
        return -1;
    ensure_topics(f->log, T);
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    bs_log_close(f->log);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static bs_monitor_t *new_monitor(bs_log_t *l, int64_t window_ms, int64_t max)
{
    bs_monitor_opts_t o = {.log = l, .window_ms = window_ms, .max_predictions = max};
    bs_err_t err;
    bs_monitor_t *m = bs_monitor_new(&o, &err);
    assert_non_null(m);
    return m;
}

static void wait_until(int (*cond)(void *), void *ud, const char *what)
{
    for (int i = 0; i < 2000; i++) {
        if (cond(ud))
            return;
        usleep(10000);
    }
    fail_msg("not within 20 s: %s", what);
}

/* ---- the index ------------------------------------------------------------------------ */

static entry_t mk_entry(const char *id, int64_t t)
{
    entry_t e;
    memset(&e, 0, sizeof e);
    e.time_ms = t;
    e.out = NAN;
    e.label_num = NAN;
    e.label_sid = -1;
    e.latency_ms = NAN;
    e.pred = -1;
    assert_int_equal(bs__monitor_id_set(&e, id), 0);
    return e;
}

static void test_index_survives_eviction(void **state)
{
    fx_t *f = *state;
    enum { N = 6000, MAX = 1500 };
    bs_monitor_t *m = new_monitor(f->log, 3600 * 1000, MAX);
    static char ids[N][40];
    int64_t now = bs_time_wall_ms();
    pthread_mutex_lock(&m->mu);
    tenant_t *t = bs__monitor_tenant_add(m, T);
    table_t *tb[2] = {bs__monitor_table(t, "a", 1), bs__monitor_table(t, "b", 1)};
    for (int i = 0; i < N; i++) {
        if (i % 3 == 0)
            snprintf(ids[i], sizeof ids[i], "req-%d", i); /* not a UUID */
        else
            bs_uuid7(ids[i]);
        /* times interleave across the two tables: eviction picks the oldest of both */
        entry_t e = mk_entry(ids[i], now - 1000000 + i);
        assert_int_equal(bs__monitor_insert(m, t, tb[(i * 7 / 5) % 2], &e), 0);
        if (i % 500 == 499)
            bs__monitor_evict(m, now);
    }
    bs__monitor_evict(m, now);
    assert_int_equal(m->entries, MAX);
    assert_int_equal((int)m->evicted, N - MAX);
    for (int i = 0; i < N; i++) {
        table_t *got = NULL;
        entry_t *e = bs__monitor_lookup(t, ids[i], &got);
        if (i < N - MAX) {
            assert_null(e);
        } else {
            assert_non_null(e);
            assert_int_equal(e->time_ms, now - 1000000 + i);
            assert_ptr_equal(got, tb[(i * 7 / 5) % 2]);
        }
    }
    assert_int_equal((int)t->used, MAX);
    /* an id logged again: the newest entry answers */
    entry_t e = mk_entry(ids[N - 1], now);
    assert_int_equal(bs__monitor_insert(m, t, tb[0], &e), 0);
    assert_int_equal(bs__monitor_lookup(t, ids[N - 1], NULL)->time_ms, now);
    /* and by window: everything older than an hour goes */
    bs__monitor_evict(m, now + 3600 * 1000);
    assert_int_equal(m->entries, 1);
    assert_non_null(bs__monitor_lookup(t, ids[N - 1], NULL));
    assert_null(bs__monitor_lookup(t, ids[N - 2], NULL));
    pthread_mutex_unlock(&m->mu);
    bs_monitor_free(m);
}

/* ---- labels --------------------------------------------------------------------------- */

static void test_scalar_match_rule(void **state)
{
    (void)state;
    struct {
        const char *a, *b;
        int want;
    } cases[] = {
        {"1", "1", 1},          {"1", "\"1\"", 1},        {"1.0", "\"1\"", 1},
        {"1", "\"1.0\"", 1},    {"\"yes\"", "\"yes\"", 1}, {"\"yes\"", "\"Yes\"", 0},
        {"true", "true", 1},    {"true", "\"TRUE\"", 1},  {"false", "\"true\"", 0},
        {"true", "1", 0},       {"2", "\"1\"", 0},        {"\"1 \"", "1", 0},
        {"\"\"", "0", 0},       {"0", "false", 0},        {"\"a\"", "\"b\"", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bs__scalar_t a, b;
        cJSON *ha, *hb;
        assert_int_equal(bs__monitor_scalar_parse(cases[i].a, &a, &ha), 0);
        assert_int_equal(bs__monitor_scalar_parse(cases[i].b, &b, &hb), 0);
        if (bs__monitor_scalar_match(&a, &b) != cases[i].want ||
            bs__monitor_scalar_match(&b, &a) != cases[i].want)
            fail_msg("%s vs %s: want %d", cases[i].a, cases[i].b, cases[i].want);
        cJSON_Delete(ha);
        cJSON_Delete(hb);
    }
}

/* ---- the tails ------------------------------------------------------------------------ */

static void append(bs_log_t *l, const char *topic, const char *json)
{
    bs_log_record_in_t r = {.data = json, .len = strlen(json)};
    bs_log_append_result_t res;
    bs_err_t err;
    assert_int_equal(bs_log_append(l, T, topic, &r, 1, &res, &err), 0);
    assert_int_equal(res.code, 0);
}

/* A binary classification record: class "1" with probability p1, at time t. */
static void log_prediction(bs_log_t *l, const char *id, const char *variant, int version,
                           double p1, int64_t t, double latency)
{
    char ts[40], buf[800];
    bs_time_rfc3339(t, ts, sizeof ts);
    snprintf(buf, sizeof buf,
             "{\"prediction_id\":\"%s\",\"time\":\"%s\",\"endpoint\":\"ep\",\"model\":\"m\","
             "\"version\":%d,\"variant\":\"%s\",\"shadow\":false,\"latency_ms\":%g,"
             "\"inputs\":{\"x\":1},\"output\":{\"label\":\"%s\",\"probabilities\":{\"0\":%.17g,"
             "\"1\":%.17g}}}",
             id, ts, version, variant, latency, p1 >= 0.5 ? "1" : "0", 1 - p1, p1);
    append(l, BS_PREDLOG_TOPIC, buf);
}

static void log_feedback(bs_log_t *l, const char *id, const char *label_json)
{
    char buf[400];
    snprintf(buf, sizeof buf, "{\"prediction_id\":\"%s\",\"label\":%s}", id, label_json);
    append(l, BS_MONITOR_FEEDBACK_TOPIC, buf);
}

typedef struct {
    bs_monitor_t *m;
    int64_t requests, labelled;
} want_t;

static int summary_is(void *ud)
{
    want_t *w = ud;
    bs_monitor_filter_t f = {.since_ms = 0};
    bs_monitor_summary_t s;
    bs_err_t err;
    assert_int_equal(bs_monitor_summary(w->m, T, "ep", &f, &s, &err), 0);
    return s.requests == w->requests && s.labelled == w->labelled;
}

static void test_tails_join_and_rebuild_after_restart(void **state)
{
    fx_t *f = *state;
    int64_t now = bs_time_wall_ms();
    char ids[8][37];
    double p1[8] = {0.9, 0.8, 0.3, 0.6, 0.1, 0.7, 0.4, 0.95};
    for (int i = 0; i < 8; i++) {
        bs_uuid7(ids[i]);
        log_prediction(f->log, ids[i], i % 2 ? "b" : "a", 1 + i % 2, p1[i], now - 1000 + i,
                       1.0 + i);
    }
    /* one record far older than the window: never kept */
    char old[37];
    bs_uuid7(old);
    log_prediction(f->log, old, "a", 1, 0.5, now - 7200 * 1000, 1);
    bs_monitor_t *m = new_monitor(f->log, 3600 * 1000, 1000);
    bs_err_t err;
    assert_int_equal(bs_monitor_track(m, T, &err), 0);
    assert_int_equal(bs_monitor_track(m, T, &err), 0); /* idempotent */
    want_t w = {.m = m, .requests = 8, .labelled = 0};
    wait_until(summary_is, &w, "8 predictions in the table");
    /* feedback: labels 1 1 0 0 1 0 1 1; the first id gets a wrong one first (last wins);
     * one label is a number, the others strings */
    const char *labels[8] = {"1", "\"1\"", "\"0\"", "\"0\"", "\"1\"", "\"0\"", "\"1\"", "\"1\""};
    log_feedback(f->log, ids[0], "\"0\"");
    for (int i = 0; i < 8; i++)
        log_feedback(f->log, ids[i], labels[i]);
    /* feedback read before its prediction: joined once the prediction arrives */
    char late[37];
    bs_uuid7(late);
    log_feedback(f->log, late, "\"1\"");
    w.labelled = 8;
    wait_until(summary_is, &w, "8 labelled");
    log_prediction(f->log, late, "a", 1, 0.2, now, 3.0);
    w.requests = w.labelled = 9;
    wait_until(summary_is, &w, "the late prediction joined");

    /* predicted: 1 1 0 1 0 1 0 1 (+ late: 0); truth: 1 1 0 0 1 0 1 1 (+ 1) */
    bs_monitor_filter_t all = {.since_ms = 0};
    bs_monitor_summary_t s;
    assert_int_equal(bs_monitor_summary(m, T, "ep", &all, &s, &err), 0);
    assert_true(s.classification);
    assert_int_equal(s.errors, 0);
    assert_true(fabs(s.accuracy - 4.0 / 9) < 1e-12);
    /* pred 1 at 0,1,3,5,7 -> truth 1,1,0,0,1: tp 3, fp 2; truth 1 at 0,1,4,6,7,late: 6 */
    assert_true(fabs(s.precision - 3.0 / 5) < 1e-12);
    assert_true(fabs(s.recall - 3.0 / 6) < 1e-12);
    /* latency: 1..8 and 3 → p50 of {1,2,3,3,4,5,6,7,8} = 4 */
    assert_true(fabs(s.latency_p50_ms - 4.0) < 1e-12);
    /* variant b only: ids 1 3 5 7 */
    bs_monitor_filter_t fb = {.variant = "b"};
    assert_int_equal(bs_monitor_summary(m, T, "ep", &fb, &s, &err), 0);
    assert_int_equal(s.requests, 4);
    assert_true(fabs(s.accuracy - 2.0 / 4) < 1e-12);
    assert_true(fabs(s.mean_prediction - (0.8 + 0.6 + 0.7 + 0.95) / 4) < 1e-12);
    /* rewards: label 1 is a success */
    int64_t succ, fail;
    assert_int_equal(bs_monitor_rewards(m, T, "ep", "a", 0, "1", &succ, &fail), 0);
    assert_int_equal(succ, 4); /* ids 0 4 6 late */
    assert_int_equal(fail, 1); /* id 2 */
    assert_int_equal(bs_monitor_rewards(m, T, "ep", NULL, 0, "\"0\"", &succ, &fail), 0);
    assert_int_equal(succ, 3);
    assert_int_equal(fail, 6);
    bs_monitor_summary_t before = s;
    bs_monitor_free(m);

    /* a new monitor on the same log: the same table and joins */
    m = new_monitor(f->log, 3600 * 1000, 1000);
    assert_int_equal(bs_monitor_track(m, T, &err), 0);
    w.m = m;
    wait_until(summary_is, &w, "the table rebuilt from the log");
    assert_int_equal(bs_monitor_summary(m, T, "ep", &fb, &s, &err), 0);
    assert_true(s.accuracy == before.accuracy && s.mean_prediction == before.mean_prediction);
    bs_monitor_free(m);
}

static void test_feedback_items_and_durable_append(void **state)
{
    fx_t *f = *state;
    int64_t now = bs_time_wall_ms();
    char id[37];
    bs_uuid7(id);
    log_prediction(f->log, id, "a", 1, 0.9, now, 1.0);
    bs_monitor_t *m = new_monitor(f->log, 3600 * 1000, 1000);
    bs_err_t err;
    assert_int_equal(bs_monitor_track(m, T, &err), 0);
    char body[600];
    snprintf(body, sizeof body,
             "{\"items\":[{\"prediction_id\":\"%s\",\"label\":true},"
             "{\"prediction_id\":\"unknown\",\"label\":1},{\"value\":1},"
             "{\"prediction_id\":\"%s\",\"value\":\"x\"}]}",
             id, id);
    cJSON *j = cJSON_Parse(body);
    bs_buf_t out;
    bs_buf_init(&out);
    assert_int_equal(bs_monitor_feedback(m, T, j, &out, &err), 0);
    cJSON *r = cJSON_ParseWithLength(out.data, out.len);
    assert_non_null(r);
    assert_int_equal(cJSON_GetObjectItem(r, "accepted")->valueint, 1);
    assert_int_equal(cJSON_GetObjectItem(r, "rejected")->valueint, 3);
    cJSON *items = cJSON_GetObjectItem(r, "items");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetArrayItem(items, 0), "accepted")));
    const char *codes[] = {NULL, "not_found", "invalid_input", "invalid_input"};
    for (int i = 1; i < 4; i++) {
        cJSON *e = cJSON_GetObjectItem(cJSON_GetArrayItem(items, i), "error");
        assert_string_equal(cJSON_GetObjectItem(e, "code")->valuestring, codes[i]);
    }
    cJSON_Delete(r);
    cJSON_Delete(j);
    /* in the topic, durably (sync always) and joined before the call returned */
    bs_log_topic_stats_t st;
    assert_int_equal(bs_log_topic_stats(f->log, T, BS_MONITOR_FEEDBACK_TOPIC, &st, &err), 0);
    assert_int_equal(st.next_offset, 1);
    bs_monitor_filter_t all = {.since_ms = 0};
    bs_monitor_summary_t s;
    assert_int_equal(bs_monitor_summary(m, T, "ep", &all, &s, &err), 0);
    assert_int_equal(s.labelled, 1);
    assert_true(s.accuracy == 0); /* true matches no class of "0"/"1": counted wrong */
    /* body errors */
    bs_buf_reset(&out);
    j = cJSON_Parse("[1]");
    assert_int_equal(bs_monitor_feedback(m, T, j, &out, &err), BS_EINVAL);
    cJSON_Delete(j);
    cJSON *big = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(big, "items");
    for (int i = 0; i <= BS_MONITOR_MAX_FEEDBACK_BATCH; i++)
        cJSON_AddItemToArray(arr, cJSON_CreateObject());
    assert_int_equal(bs_monitor_feedback(m, T, big, &out, &err), BS_ETOOBIG);
    cJSON_Delete(big);
    bs_buf_free(&out);
    bs_monitor_free(m);
}

/* ---- PSI ------------------------------------------------------------------------------ */

static void test_psi_of_versions(void **state)
{
    fx_t *f = *state;
    int64_t now = bs_time_wall_ms();
    /* version 1: p1 uniform on a grid; version 2: shifted up */
    for (int i = 0; i < 200; i++) {
        char id[37];
        bs_uuid7(id);
        int v = 1 + i % 2;
        double p = (double)((i * 37) % 100) / 125.0 + (v == 2 ? 0.15 : 0);
        log_prediction(f->log, id, v == 1 ? "a" : "b", v, p, now - 500 + i, 1);
    }
    bs_monitor_t *m = new_monitor(f->log, 3600 * 1000, 1000);
    bs_err_t err;
    assert_int_equal(bs_monitor_track(m, T, &err), 0);
    want_t w = {.m = m, .requests = 200, .labelled = 0};
    wait_until(summary_is, &w, "200 predictions");
    bs_monitor_filter_t ref = {.version = 1}, cur = {.version = 2}, same = {.exclude_version = 2};
    double psi, psi_same;
    int64_t nr, nc;
    assert_int_equal(bs_monitor_psi(m, T, "ep", &ref, &cur, &psi, &nr, &nc, &err), 0);
    assert_int_equal(nr, 100);
    assert_int_equal(nc, 100);
    assert_true(psi > 0.2);
    assert_int_equal(bs_monitor_psi(m, T, "ep", &ref, &same, &psi_same, &nr, &nc, &err), 0);
    assert_true(fabs(psi_same) < 1e-12);
    bs_monitor_filter_t none = {.variant = "nope"};
    assert_int_equal(bs_monitor_psi(m, T, "ep", &ref, &none, &psi, &nr, &nc, &err), 0);
    assert_true(isnan(psi));
    assert_int_equal(nc, 0);
    bs_monitor_filter_t bad = {.shadow = 2};
    assert_int_equal(bs_monitor_psi(m, T, "ep", &ref, &bad, &psi, &nr, &nc, &err), BS_EINVAL);
    bs_monitor_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_index_survives_eviction, setup, teardown),
        cmocka_unit_test(test_scalar_match_rule),
        cmocka_unit_test_setup_teardown(test_tails_join_and_rebuild_after_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_feedback_items_and_durable_append, setup, teardown),
        cmocka_unit_test_setup_teardown(test_psi_of_versions, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
