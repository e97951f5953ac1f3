/* Leases and claims between two replicas: two metadata handles on one SQLite file, or on
 * the PostgreSQL server named by BASALT_TEST_PG_URL when it is set (the same tests; lease
 * names and the work table are per run, so a shared database is fine). Exclusive holding,
 * renew, release, takeover after expiry with a higher token; the singleton runner runs its
 * task only while it holds the lease, stops it when the lease is lost, takes it back, and
 * releases it on stop; two runners never run their task at once; two claimers never get
 * the same work item, and an expired claim is claimed again. */
#include "test_common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "base/rcu.h"
#include "store/lease.h"
#include "store/meta.h"

typedef struct {
    char dir[64];
    bs_meta_t *a, *b; /* two replicas */
    char name[64];    /* this test's lease */
} fx_t;

static int run_id;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    bs_err_t err;
    const char *pg = getenv("BASALT_TEST_PG_URL");
    if (pg && *pg) {
        if (!(f->a = bs_meta_open(pg, &err)) || !(f->b = bs_meta_open(pg, &err))) {
            fprintf(stderr, "cannot open %s: %s\n", pg, err.msg);
            return -1;
        }
    } else {
        snprintf(f->dir, sizeof f->dir, "/tmp/bs-test-lease-XXXXXX");
        if (!mkdtemp(f->dir))
            return -1;
        char path[128];
        snprintf(path, sizeof path, "%s/basalt.db", f->dir);
        if (!(f->a = bs_meta_open(path, &err)) || !(f->b = bs_meta_open(path, &err)))
            return -1;
    }
    snprintf(f->name, sizeof f->name, "test-%ld-%d", (long)getpid(), ++run_id);
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

static void test_exclusive_renew_release(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_lease_t la, lb, lr;
    assert_int_equal(bs_lease_acquire(f->a, f->name, "a", 60000, &la, &err), 0);
    assert_true(la.token >= 1);
    assert_int_equal(bs_lease_acquire(f->b, f->name, "b", 60000, &lb, &err), BS_ECONFLICT);
    assert_int_equal(bs_lease_renew(f->a, f->name, "a", la.token, 60000, &lr, &err), 0);
    assert_int_equal(lr.token, la.token);
    assert_true(lr.expires_at >= la.expires_at);
    /* only the holder renews: another owner, or the holder with a wrong token, cannot */
    assert_int_equal(bs_lease_renew(f->b, f->name, "b", la.token, 60000, &lr, &err), BS_ECONFLICT);
    assert_int_equal(bs_lease_renew(f->a, f->name, "a", la.token + 1, 60000, &lr, &err),
                     BS_ECONFLICT);
    /* releasing another's holding does nothing */
    assert_int_equal(bs_lease_release(f->b, f->name, "b", la.token, &err), 0);
    assert_int_equal(bs_lease_acquire(f->b, f->name, "b", 60000, &lb, &err), BS_ECONFLICT);
    assert_int_equal(bs_lease_release(f->a, f->name, "a", la.token, &err), 0);
    assert_int_equal(bs_lease_acquire(f->b, f->name, "b", 60000, &lb, &err), 0);
    assert_true(lb.token > la.token);
    assert_int_equal(bs_lease_renew(f->a, f->name, "a", la.token, 60000, &lr, &err), BS_ECONFLICT);
    assert_int_equal(bs_lease_acquire(f->a, f->name, "a", 60000, &la, &err), BS_ECONFLICT);
    assert_int_equal(bs_lease_acquire(f->a, f->name, "a", 0, &la, &err), BS_EINVAL);
}

static void test_takeover_after_expiry(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_lease_t la, lb, lr;
    assert_int_equal(bs_lease_acquire(f->a, f->name, "a", 50, &la, &err), 0);
    int rc = BS_ECONFLICT;
    for (int i = 0; i < 10000 && rc == BS_ECONFLICT; i++) { /* "a" stopped renewing: died */
        rc = bs_lease_acquire(f->b, f->name, "b", 60000, &lb, &err);
        if (rc == BS_ECONFLICT)
            usleep(1000);
    }
    assert_int_equal(rc, 0);
    assert_true(lb.token > la.token);
    /* the old holder, back, finds it gone: its renew and its release change nothing */
    assert_int_equal(bs_lease_renew(f->a, f->name, "a", la.token, 60000, &lr, &err), BS_ECONFLICT);
    assert_int_equal(bs_lease_release(f->a, f->name, "a", la.token, &err), 0);
    assert_int_equal(bs_lease_acquire(f->a, f->name, "a", 60000, &la, &err), BS_ECONFLICT);
}

/* ---- the runner -------------------------------------------------------------------------- */

typedef struct {
    fx_t *f;
    bs_meta_t *m;
    const char *owner;
    _Atomic int runs;
    _Atomic int bad; /* task calls that found another holder in the store */
    _Atomic int *active, *max_active;
} task_t;

typedef struct {
    char owner[128];
    int64_t token;
} row_t;

static int lease_row(const bs_meta_row_t *r, void *ud)
{
    row_t *x = ud;
    snprintf(x->owner, sizeof x->owner, "%s", bs_meta_row_text(r, 0));
    x->token = bs_meta_row_int(r, 1);
    return 1;
}

static void task(void *ud, bs_lease_runner_t *run, int64_t token)
{
    (void)run;
    task_t *t = ud;
    if (t->active) {
        int now = atomic_fetch_add(t->active, 1) + 1;
        int m = atomic_load(t->max_active);
        while (now > m && !atomic_compare_exchange_weak(t->max_active, &m, now))
            ;
    }
    row_t x = {"", 0};
    bs_val_t arg = BS_TXT(t->f->name);
    bs_err_t err;
    bs_meta_query(t->m, "SELECT owner, token FROM leases WHERE name = ?", &arg, 1, lease_row, &x,
                  &err);
    if (strcmp(x.owner, t->owner) != 0 || x.token != token)
        atomic_fetch_add(&t->bad, 1);
    atomic_fetch_add(&t->runs, 1);
    usleep(1000);
    if (t->active)
        atomic_fetch_sub(t->active, 1);
}

static bs_lease_runner_t *runner(fx_t *f, bs_meta_t *m, const char *owner, task_t *t)
{
    t->f = f;
    t->m = m;
    t->owner = owner;
    bs_lease_runner_opts_t o = {
        .name = f->name, .owner = owner, .ttl_ms = 600, .period_ms = 5, .task = task, .ud = t};
    bs_err_t err;
    bs_lease_runner_t *r = bs_lease_runner_start(m, &o, &err);
    assert_non_null(r);
    return r;
}

#define WAIT_UNTIL(cond)                                                                           \
    do {                                                                                           \
        for (int i_ = 0; i_ < 20000 && !(cond); i_++)                                              \
            usleep(1000);                                                                          \
        assert_true(cond);                                                                         \
    } while (0)

static void test_runner_stops_its_task_when_the_lease_is_lost(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    task_t t = {0};
    bs_lease_runner_t *r = runner(f, f->a, "a", &t);
    WAIT_UNTIL(atomic_load(&t.runs) >= 3);
    assert_true(bs_lease_runner_held(r));
    bs_lease_runner_stats_t st;
    bs_lease_runner_stats(r, &st);
    int64_t first = st.token;
    /* Another replica takes it over (as when "a" stalled past its expiry). */
    bs_val_t args[] = {BS_TXT(f->name)};
    assert_int_equal(bs_meta_exec(f->b,
                                  "UPDATE leases SET owner = 'thief', token = token + 1,"
                                  " expires_at = 9000000000000 WHERE name = ?",
                                  args, 1, NULL, &err),
                     0);
    WAIT_UNTIL(!bs_lease_runner_held(r));
    bs_lease_runner_stats(r, &st);
    uint64_t attempts = st.attempts;
    /* one attempt later a task call that was under way at the loss has ended; over two
     * more attempts that find the thief holding it, no task call starts */
    WAIT_UNTIL((bs_lease_runner_stats(r, &st), st.attempts >= attempts + 1));
    int runs = atomic_load(&t.runs);
    WAIT_UNTIL((bs_lease_runner_stats(r, &st), st.attempts >= attempts + 3));
    assert_int_equal(atomic_load(&t.runs), runs);
    assert_int_equal(st.losses, 1);
    assert_int_equal(st.acquisitions, 1);
    /* the thief lets go: "a" takes it back with a higher token and runs again */
    assert_int_equal(
        bs_meta_exec(f->b, "UPDATE leases SET expires_at = 0 WHERE name = ?", args, 1, NULL, &err),
        0);
    WAIT_UNTIL(bs_lease_runner_held(r) && atomic_load(&t.runs) > runs + 2);
    bs_lease_runner_stats(r, &st);
    assert_true(st.token > first + 1);
    /* stop releases it: another replica acquires at once, no expiry to wait for */
    bs_lease_runner_stop(r);
    bs_lease_t lb;
    assert_int_equal(bs_lease_acquire(f->b, f->name, "b", 60000, &lb, &err), 0);
    assert_true(lb.token > st.token);
}

static void test_two_runners_one_task_at_a_time(void **state)
{
    fx_t *f = *state;
    _Atomic int active = 0, max_active = 0;
    task_t ta = {.active = &active, .max_active = &max_active};
    task_t tb = {.active = &active, .max_active = &max_active};
    bs_lease_runner_t *ra = runner(f, f->a, "a", &ta);
    bs_lease_runner_t *rb = runner(f, f->b, "b", &tb);
    WAIT_UNTIL(atomic_load(&ta.runs) + atomic_load(&tb.runs) >= 5);
    /* the holder stops (a replica shuts down); the other takes over */
    int a_held = bs_lease_runner_held(ra);
    bs_lease_runner_t *holder = a_held ? ra : rb, *other = a_held ? rb : ra;
    task_t *tother = a_held ? &tb : &ta;
    assert_int_equal(atomic_load(&tother->runs), 0);
    bs_lease_runner_stop(holder);
    WAIT_UNTIL(atomic_load(&tother->runs) >= 3);
    assert_true(bs_lease_runner_held(other));
    bs_lease_runner_stop(other);
    assert_int_equal(atomic_load(&max_active), 1);
    assert_int_equal(atomic_load(&ta.bad), 0);
    assert_int_equal(atomic_load(&tb.bad), 0);
}

static void test_runner_options_are_checked(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_lease_runner_opts_t o = {
        .name = f->name, .owner = "a", .ttl_ms = 10, .period_ms = 5, .task = task};
    assert_null(bs_lease_runner_start(f->a, &o, &err));
    assert_int_equal(err.code, BS_EINVAL);
    bs_lease_runner_stop(NULL);
}

/* ---- claims ------------------------------------------------------------------------------ */

#define N_ITEMS 120

static const bs_lease_claim_sql_t claim_sql =
    BS_LEASE_CLAIM_SQL("test_work_items", "id", "state = ?", "id, lease_token");

/* Created here, not by a migration: BIGINT spelled out (ms since the epoch overflow
 * PostgreSQL's INTEGER; migrations get the mapping, this statement does not). */
static void make_items(bs_meta_t *m, int n)
{
    bs_err_t err;
    assert_int_equal(bs_meta_exec(m, "DROP TABLE IF EXISTS test_work_items", NULL, 0, NULL, &err),
                     0);
    assert_int_equal(bs_meta_exec(m,
                                  "CREATE TABLE test_work_items (id INTEGER PRIMARY KEY,"
                                  " state TEXT NOT NULL, lease_owner TEXT,"
                                  " lease_expires_at BIGINT NOT NULL DEFAULT 0,"
                                  " lease_token BIGINT NOT NULL DEFAULT 0)",
                                  NULL, 0, NULL, &err),
                     0);
    for (int i = 1; i <= n; i++) {
        bs_val_t args[] = {BS_INT(i), BS_TXT(i % 10 == 0 ? "done" : "ready")};
        assert_int_equal(bs_meta_exec(m, "INSERT INTO test_work_items (id, state) VALUES (?, ?)",
                                      args, 2, NULL, &err),
                         0);
    }
}

typedef struct {
    bs_meta_t *m;
    const char *owner;
    int got[N_ITEMS + 1];
    int64_t token[N_ITEMS + 1];
    int n, calls;
} claimer_t;

static int claimed_row(const bs_meta_row_t *r, void *ud)
{
    claimer_t *c = ud;
    int64_t id = bs_meta_row_int(r, 0);
    if (id >= 1 && id <= N_ITEMS) {
        c->got[id]++;
        c->token[id] = bs_meta_row_int(r, 1);
    }
    c->n++;
    return 0;
}

static void *claim_main(void *arg)
{
    claimer_t *c = arg;
    bs_val_t cond = BS_TXT("ready");
    for (;;) {
        bs_err_t err;
        int n =
            bs_lease_claim(c->m, &claim_sql, c->owner, 60000, &cond, 1, 7, claimed_row, c, &err);
        c->calls++;
        if (n <= 0)
            break;
    }
    return NULL;
}

static void test_two_claimers_never_share_an_item(void **state)
{
    fx_t *f = *state;
    make_items(f->a, N_ITEMS);
    claimer_t *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    a->m = f->a, a->owner = "a";
    b->m = f->b, b->owner = "b";
    pthread_t ta, tb;
    pthread_create(&ta, NULL, claim_main, a);
    pthread_create(&tb, NULL, claim_main, b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    int ready = 0;
    for (int id = 1; id <= N_ITEMS; id++) {
        int want = id % 10 == 0 ? 0 : 1; /* "done" items match no claim */
        ready += want;
        assert_int_equal(a->got[id] + b->got[id], want);
        if (want)
            assert_int_equal(a->token[id] + b->token[id], 1);
    }
    assert_int_equal(a->n + b->n, ready);
    /* everything is claimed and unexpired: nothing more to get */
    bs_err_t err;
    bs_val_t cond = BS_TXT("ready");
    assert_int_equal(bs_lease_claim(f->a, &claim_sql, "a", 60000, &cond, 1, 10, NULL, NULL, &err),
                     0);
    assert_int_equal(bs_lease_claim(f->a, &claim_sql, "a", 60000, &cond, 1, 0, NULL, NULL, &err),
                     BS_EINVAL);
    free(a);
    free(b);
    bs_meta_exec(f->a, "DROP TABLE test_work_items", NULL, 0, NULL, &err);
}

static void test_expired_claim_is_claimed_again(void **state)
{
    fx_t *f = *state;
    make_items(f->a, 3);
    bs_err_t err;
    bs_val_t cond = BS_TXT("ready");
    claimer_t *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    /* "a" claims item 1 for 50 ms and dies */
    assert_int_equal(bs_lease_claim(f->a, &claim_sql, "a", 50, &cond, 1, 1, claimed_row, a, &err),
                     1);
    assert_int_equal(a->got[1], 1);
    assert_int_equal(a->token[1], 1);
    /* "b" takes the rest at once; item 1 only once its claim expired */
    assert_int_equal(
        bs_lease_claim(f->b, &claim_sql, "b", 60000, &cond, 1, 10, claimed_row, b, &err), 2);
    assert_int_equal(b->got[1], 0);
    for (int i = 0; i < 10000 && !b->got[1]; i++) {
        int n = bs_lease_claim(f->b, &claim_sql, "b", 60000, &cond, 1, 10, claimed_row, b, &err);
        assert_true(n >= 0);
        if (!n)
            usleep(1000);
    }
    assert_int_equal(b->got[1], 1);
    assert_int_equal(b->token[1], 2); /* the second claim of it: a's token is stale */
    /* the stale holder's guarded finish changes nothing */
    int changes = -1;
    bs_val_t fin[] = {BS_INT(1), BS_TXT("a"), BS_INT(1)};
    assert_int_equal(bs_meta_exec(f->a,
                                  "UPDATE test_work_items SET state = 'done' WHERE id = ? AND"
                                  " lease_owner = ? AND lease_token = ?",
                                  fin, 3, &changes, &err),
                     0);
    assert_int_equal(changes, 0);
    free(a);
    free(b);
    bs_meta_exec(f->a, "DROP TABLE test_work_items", NULL, 0, NULL, &err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exclusive_renew_release, setup, teardown),
        cmocka_unit_test_setup_teardown(test_takeover_after_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_stops_its_task_when_the_lease_is_lost, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_two_runners_one_task_at_a_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_options_are_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_claimers_never_share_an_item, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_claim_is_claimed_again, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
