/* Change propagation between replicas: two metadata handles on one SQLite file act as
 * two replicas. A bump committed through one reaches the other's watcher (by its poll:
 * SQLite has no notifications, so every delivery here is the lost-notification path);
 * a rolled-back bump does not; a replica's own refresh is not rebuilt again; a failed
 * rebuild is retried and the old key snapshot keeps serving; an unreachable store is
 * reported and recovers; stopping is prompt however long the poll interval is. */
#include "test_common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "auth/auth.h"
#include "base/rcu.h"
#include "store/changes.h"
#include "store/meta.h"

typedef struct {
    char dir[64];
    bs_meta_t *a, *b; /* two replicas */
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/bs-test-changes-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    char path[128];
    snprintf(path, sizeof path, "%s/basalt.db", f->dir);
    bs_err_t err;
    if (!(f->a = bs_meta_open(path, &err)) || !(f->b = bs_meta_open(path, &err)))
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    bs_meta_close(f->a);
    bs_meta_close(f->b);
    bs_rcu_drain();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

typedef struct {
    _Atomic int calls;
    _Atomic int fail; /* calls left that fail */
} sub_t;

static int sub_fn(void *ud, bs_err_t *err)
{
    sub_t *s = ud;
    atomic_fetch_add(&s->calls, 1);
    if (atomic_load(&s->fail) > 0) {
        atomic_fetch_sub(&s->fail, 1);
        return bs_err_set(err, BS_EUNAVAIL, "test: rebuild fails");
    }
    return 0;
}

static void bump(bs_meta_t *m, const char *scope, int commit)
{
    bs_err_t err;
    assert_int_equal(bs_meta_tx_begin(m, &err), 0);
    assert_int_equal(bs_changes_bump(m, scope, &err), 0);
    if (commit)
        assert_int_equal(bs_meta_tx_commit(m, &err), 0);
    else
        bs_meta_tx_rollback(m);
}

static int64_t db_generation(bs_meta_t *m, const char *scope);

/* Waits (bounded: the test fails rather than hangs) until *v reaches want. */
static void wait_calls(_Atomic int *v, int want)
{
    for (int i = 0; i < 20000 && atomic_load(v) < want; i++)
        usleep(1000);
    assert_true(atomic_load(v) >= want);
}

static void test_bump_reaches_the_other_replica(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_changes_t *c = bs_changes_new(f->a, 20, &err);
    assert_non_null(c);
    sub_t reg = {0}, auth = {0};
    assert_int_equal(bs_changes_subscribe(c, "registry", sub_fn, &reg, &err), 0);
    assert_int_equal(bs_changes_subscribe(c, "auth", sub_fn, &auth, &err), 0);
    assert_int_equal(bs_changes_seen(c, "registry"), 0); /* migration 7 seeds both at 0 */
    assert_int_equal(bs_changes_start(c, &err), 0);
    bump(f->b, "registry", 1);
    wait_calls(&reg.calls, 1);
    /* its seen generation follows the store's, and the other scope did not move */
    for (int i = 0; i < 20000 && bs_changes_seen(c, "registry") < 1; i++)
        usleep(1000);
    assert_int_equal(bs_changes_seen(c, "registry"), db_generation(f->b, "registry"));
    assert_int_equal(atomic_load(&auth.calls), 0);
    bump(f->b, "registry", 1);
    bump(f->b, "auth", 1);
    wait_calls(&auth.calls, 1);
    wait_calls(&reg.calls, 2);
    bs_changes_stats_t st;
    bs_changes_stats(c, &st);
    assert_int_equal(st.notifications, 0); /* SQLite: all of it came through the poll */
    assert_true(st.reachable);
    bs_changes_free(c);
}

static int gen_row(const bs_meta_row_t *r, void *ud)
{
    *(int64_t *)ud = bs_meta_row_int(r, 0);
    return 1;
}

static int64_t db_generation(bs_meta_t *m, const char *scope)
{
    int64_t g = -1;
    bs_val_t arg = BS_TXT(scope);
    bs_err_t err;
    assert_int_equal(bs_meta_query(m, "SELECT generation FROM generations WHERE scope = ?", &arg, 1,
                                   gen_row, &g, &err),
                     0);
    return g;
}

static void test_rollback_does_not_bump(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_changes_t *c = bs_changes_new(f->a, 1000, &err);
    sub_t reg = {0};
    assert_int_equal(bs_changes_subscribe(c, "registry", sub_fn, &reg, &err), 0);
    bump(f->b, "registry", 0);
    assert_int_equal(bs_changes_poll(c, &err), 0);
    assert_int_equal(atomic_load(&reg.calls), 0);
    bump(f->b, "registry", 1);
    assert_int_equal(bs_changes_poll(c, &err), 0);
    assert_int_equal(atomic_load(&reg.calls), 1);
    assert_int_equal(bs_changes_poll(c, &err), 0); /* nothing new: no second rebuild */
    assert_int_equal(atomic_load(&reg.calls), 1);
    bs_changes_free(c);
}

static void test_own_write_is_not_rebuilt_twice(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_changes_t *c = bs_changes_new(f->a, 1000, &err);
    sub_t reg = {0};
    assert_int_equal(bs_changes_subscribe(c, "registry", sub_fn, &reg, &err), 0);
    bump(f->a, "registry", 1);
    assert_int_equal(bs_changes_refresh(c, "registry", &err), 0); /* the writer's own */
    assert_int_equal(atomic_load(&reg.calls), 1);
    assert_int_equal(bs_changes_seen(c, "registry"), 1);
    assert_int_equal(bs_changes_poll(c, &err), 0);
    assert_int_equal(atomic_load(&reg.calls), 1);
    /* another replica's write after it still is */
    bump(f->b, "registry", 1);
    assert_int_equal(bs_changes_poll(c, &err), 0);
    assert_int_equal(atomic_load(&reg.calls), 2);
    bs_changes_free(c);
}

static void test_failed_rebuild_is_retried(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_changes_t *c = bs_changes_new(f->a, 1000, &err);
    sub_t reg = {0};
    atomic_store(&reg.fail, 2);
    assert_int_equal(bs_changes_subscribe(c, "registry", sub_fn, &reg, &err), 0);
    bump(f->b, "registry", 1);
    assert_int_equal(bs_changes_poll(c, &err), 0);
    assert_int_equal(bs_changes_seen(c, "registry"), 0); /* failed: not seen */
    assert_int_equal(bs_changes_poll(c, &err), 0);
    assert_int_equal(bs_changes_seen(c, "registry"), 0);
    assert_int_equal(bs_changes_poll(c, &err), 0);
    assert_int_equal(atomic_load(&reg.calls), 3);
    assert_int_equal(bs_changes_seen(c, "registry"), 1);
    bs_changes_stats_t st;
    bs_changes_stats(c, &st);
    assert_int_equal(st.rebuild_errors, 2);
    bs_changes_free(c);
}

static int auth_reload(void *ud, bs_err_t *err)
{
    return bs_auth_reload(ud, err);
}

static void test_keys_follow_the_other_replica(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_changes_t *c = bs_changes_new(f->a, 1000, &err);
    bs_auth_t *auth_a = bs_auth_new(f->a, 0, 0, &err), *auth_b = bs_auth_new(f->b, 0, 0, &err);
    assert_non_null(auth_a);
    assert_non_null(auth_b);
    assert_int_equal(bs_changes_subscribe(c, "auth", auth_reload, auth_a, &err), 0);
    char secret[BS_KEY_SECRET_MAX];
    int created;
    assert_int_equal(bs_auth_bootstrap(auth_b, secret, &created, &err), 0);
    assert_int_equal(created, 1);
    bs_principal_t who;
    assert_int_equal(bs_auth_verify(auth_a, secret, strlen(secret), &who, &err), BS_EUNAUTH);
    assert_int_equal(bs_changes_poll(c, &err), 0);
    assert_int_equal(bs_auth_verify(auth_a, secret, strlen(secret), &who, &err), 0);
    /* A rebuild that fails keeps the previous snapshot: B deletes the key while A cannot
     * read the keys table; A still serves the key it knew, and drops it once it can read. */
    char id[40];
    snprintf(id, sizeof id, "%s", who.key_id);
    assert_int_equal(bs_auth_key_delete(auth_b, id, NULL, &err), 0);
    assert_int_equal(
        bs_meta_exec(f->b, "ALTER TABLE api_keys RENAME TO api_keys_away", NULL, 0, NULL, &err), 0);
    assert_int_equal(bs_changes_poll(c, &err), 0);
    assert_int_equal(bs_auth_verify(auth_a, secret, strlen(secret), &who, &err), 0);
    assert_int_equal(
        bs_meta_exec(f->b, "ALTER TABLE api_keys_away RENAME TO api_keys", NULL, 0, NULL, &err), 0);
    assert_int_equal(bs_changes_poll(c, &err), 0);
    assert_int_equal(bs_auth_verify(auth_a, secret, strlen(secret), &who, &err), BS_EUNAUTH);
    bs_changes_free(c);
    bs_auth_free(auth_a);
    bs_auth_free(auth_b);
}

static void test_unreachable_is_reported_and_recovers(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_changes_t *c = bs_changes_new(f->a, 1000, &err);
    sub_t reg = {0};
    assert_int_equal(bs_changes_subscribe(c, "registry", sub_fn, &reg, &err), 0);
    bs_changes_stats_t st;
    bs_changes_stats(c, &st);
    assert_true(st.reachable);
    /* the poll's table vanishes: what a dropped connection looks like to the watcher */
    assert_int_equal(bs_meta_exec(f->b, "ALTER TABLE generations RENAME TO generations_away", NULL,
                                  0, NULL, &err),
                     0);
    assert_int_not_equal(bs_changes_poll(c, &err), 0);
    bs_changes_stats(c, &st);
    assert_false(st.reachable);
    assert_int_equal(st.poll_errors, 1);
    assert_int_equal(bs_meta_exec(f->b, "ALTER TABLE generations_away RENAME TO generations", NULL,
                                  0, NULL, &err),
                     0);
    bump(f->b, "registry", 1);
    assert_int_equal(bs_changes_poll(c, &err), 0);
    bs_changes_stats(c, &st);
    assert_true(st.reachable);
    assert_int_equal(atomic_load(&reg.calls), 1);
    assert_int_equal(st.generation, 1);
    bs_changes_free(c);
}

/* An hour's poll interval: if stopping waited for it, this test would hang (and fail by
 * the runner's timeout) instead of finishing. Started and stopped many times, as servers
 * are in the test suite. */
static void test_stop_is_prompt(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    for (int i = 0; i < 200; i++) {
        bs_changes_t *c = bs_changes_new(f->a, 3600000, &err);
        assert_non_null(c);
        assert_int_equal(bs_changes_start(c, &err), 0);
        if (i % 50 == 0)
            usleep(2000); /* sometimes already waiting in listen */
        bs_changes_free(c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bump_reaches_the_other_replica, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_does_not_bump, setup, teardown),
        cmocka_unit_test_setup_teardown(test_own_write_is_not_rebuilt_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_rebuild_is_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys_follow_the_other_replica, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_is_reported_and_recovers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_is_prompt, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
