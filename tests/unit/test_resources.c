/* Declarative resources on SQLite, or on the PostgreSQL server named by BASALT_TEST_PG_URL
 * when it is set (a tenant per run, so a shared database is fine): create, unchanged,
 * update (generation + 1), optimistic concurrency, get, list with cursor and across
 * tenants, delete; every write leaves an audit row and bumps scope "resources". */
#include "test_common.h"

#include <unistd.h>

#include "base/rcu.h"
#include "store/meta.h"
#include "store/resources.h"

typedef struct {
    char dir[64];
    bs_meta_t *m;
    char tenant[64], other[64];
} fx_t;

static int run_id;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    bs_err_t err;
    const char *pg = getenv("BASALT_TEST_PG_URL");
    if (pg && *pg) {
        if (!(f->m = bs_meta_open(pg, &err))) {
            fprintf(stderr, "cannot open %s: %s\n", pg, err.msg);
            return -1;
        }
    } else {
        snprintf(f->dir, sizeof f->dir, "/tmp/bs-test-res-XXXXXX");
        if (!mkdtemp(f->dir))
            return -1;
        char path[128];
        snprintf(path, sizeof path, "%s/basalt.db", f->dir);
        if (!(f->m = bs_meta_open(path, &err)))
            return -1;
    }
    snprintf(f->tenant, sizeof f->tenant, "t%ld-%d", (long)getpid(), ++run_id);
    snprintf(f->other, sizeof f->other, "o%ld-%d", (long)getpid(), run_id);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    bs_meta_close(f->m);
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

static int count_cb(const bs_meta_row_t *r, void *ud)
{
    *(int64_t *)ud = bs_meta_row_int(r, 0);
    return 1;
}

static int64_t count(bs_meta_t *m, const char *sql, const char *arg)
{
    int64_t n = -1;
    bs_val_t a[] = {BS_TXT(arg)};
    assert_int_equal(bs_meta_query(m, sql, a, arg ? 1 : 0, count_cb, &n, NULL), 0);
    return n;
}

static int64_t generation(bs_meta_t *m)
{
    return count(m, "SELECT generation FROM generations WHERE scope = ?", "resources");
}

typedef struct {
    char names[16][64];
    char specs[16][128];
    int64_t gens[16];
    int n;
} seen_t;

static int seen_cb(const bs_resource_t *r, void *ud)
{
    seen_t *s = ud;
    if (s->n < 16) {
        snprintf(s->names[s->n], 64, "%s", r->name);
        snprintf(s->specs[s->n], 128, "%s", r->spec);
        s->gens[s->n] = r->generation;
    }
    s->n++;
    return 0;
}

static void test_put_get_update(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_resource_outcome_t out;
    int64_t gen, g0 = generation(f->m);
    assert_int_equal(bs_resources_put(f->m, f->tenant, "Topic", "orders", "{\"a\":1}", "k1", 0, &out,
                                      &gen, &err),
                     0);
    assert_int_equal(out, BS_RESOURCE_CREATED);
    assert_int_equal(gen, 1);
    assert_true(generation(f->m) > g0);
    int64_t g1 = generation(f->m);
    /* the same spec again writes nothing */
    assert_int_equal(bs_resources_put(f->m, f->tenant, "Topic", "orders", "{\"a\":1}", "k1", 0, &out,
                                      &gen, &err),
                     0);
    assert_int_equal(out, BS_RESOURCE_UNCHANGED);
    assert_int_equal(gen, 1);
    assert_int_equal(generation(f->m), g1);
    assert_int_equal(bs_resources_put(f->m, f->tenant, "Topic", "orders", "{\"a\":2}", "k2", 0, &out,
                                      &gen, &err),
                     0);
    assert_int_equal(out, BS_RESOURCE_UPDATED);
    assert_int_equal(gen, 2);
    seen_t s = {0};
    assert_int_equal(bs_resources_get(f->m, f->tenant, "Topic", "orders", seen_cb, &s, &err), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.specs[0], "{\"a\":2}");
    assert_int_equal(s.gens[0], 2);
    /* another kind and another tenant do not see it */
    assert_int_equal(bs_resources_get(f->m, f->tenant, "Trigger", "orders", seen_cb, &s, &err),
                     BS_ENOTFOUND);
    assert_int_equal(bs_resources_get(f->m, f->other, "Topic", "orders", seen_cb, &s, &err),
                     BS_ENOTFOUND);
    /* two writes, two audit rows with the before/after */
    char res[] = "Topic/orders";
    assert_int_equal(count(f->m, "SELECT COUNT(*) FROM audit WHERE resource = ? AND tenant IS NOT NULL",
                           res) >= 2,
                     1);
}

static void test_expect_generation(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    int64_t gen;
    assert_int_equal(bs_resources_put(f->m, f->tenant, "Topic", "t", "{}", "k", 0, NULL, &gen, &err), 0);
    assert_int_equal(bs_resources_put(f->m, f->tenant, "Topic", "t", "{\"x\":1}", "k", 7, NULL, &gen,
                                      &err),
                     BS_ECONFLICT);
    assert_string_equal(err.field, "generation");
    assert_int_equal(bs_resources_put(f->m, f->tenant, "Topic", "t", "{\"x\":1}", "k", 1, NULL, &gen,
                                      &err),
                     0);
    assert_int_equal(gen, 2);
}

static void test_list_and_delete(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    const char *names[] = {"c", "a", "b", "d"};
    for (int i = 0; i < 4; i++)
        assert_int_equal(bs_resources_put(f->m, f->tenant, "Topic", names[i], "{}", "k", 0, NULL, NULL,
                                          &err),
                         0);
    assert_int_equal(bs_resources_put(f->m, f->other, "Topic", "z", "{}", "k", 0, NULL, NULL, &err), 0);
    seen_t s = {0};
    assert_int_equal(bs_resources_list(f->m, f->tenant, "Topic", NULL, 2, seen_cb, &s, &err), 2);
    assert_string_equal(s.names[0], "a");
    assert_string_equal(s.names[1], "b");
    memset(&s, 0, sizeof s);
    assert_int_equal(bs_resources_list(f->m, f->tenant, "Topic", "b", 0, seen_cb, &s, &err), 2);
    assert_string_equal(s.names[0], "c");
    assert_string_equal(s.names[1], "d");
    /* every tenant: ours and the other's */
    memset(&s, 0, sizeof s);
    int n = bs_resources_list(f->m, NULL, "Topic", NULL, 0, seen_cb, &s, &err);
    assert_true(n >= 5);
    int64_t g = generation(f->m);
    assert_int_equal(bs_resources_delete(f->m, f->tenant, "Topic", "b", "k", &err), 0);
    assert_true(generation(f->m) > g);
    assert_int_equal(bs_resources_delete(f->m, f->tenant, "Topic", "b", "k", &err), BS_ENOTFOUND);
    memset(&s, 0, sizeof s);
    assert_int_equal(bs_resources_list(f->m, f->tenant, "Topic", NULL, 0, seen_cb, &s, &err), 3);
    char res[] = "Topic/b";
    assert_true(count(f->m, "SELECT COUNT(*) FROM audit WHERE resource = ? AND after IS NULL", res) >= 1);
}

typedef struct {
    int64_t gens[16];
    char specs[16][128];
    char by[16][64];
    int n;
} revs_t;

static int revs_cb(const bs_resource_revision_t *r, void *ud)
{
    revs_t *s = ud;
    if (s->n < 16) {
        s->gens[s->n] = r->generation;
        snprintf(s->specs[s->n], 128, "%s", r->spec);
        snprintf(s->by[s->n], 64, "%s", r->created_by);
    }
    s->n++;
    return 0;
}

/* Every generation's spec is a revision (the first too; an unchanged put adds none), newest
 * first with a cursor; one revision by number; a delete removes them, so a resource created
 * again under the name starts over at revision 1. */
static void test_revisions(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    const char *specs[] = {"{\"w\":1}", "{\"w\":2}", "{\"w\":2}", "{\"w\":3}"};
    const char *actors[] = {"k1", "k2", "k2", "k3"};
    for (int i = 0; i < 4; i++)
        assert_int_equal(bs_resources_put(f->m, f->tenant, "Endpoint", "fraud", specs[i],
                                          actors[i], 0, NULL, NULL, &err),
                         0);
    /* another tenant's resource of the same name has its own */
    assert_int_equal(bs_resources_put(f->m, f->other, "Endpoint", "fraud", "{\"w\":9}", "o", 0,
                                      NULL, NULL, &err),
                     0);
    revs_t r = {0};
    assert_int_equal(bs_resources_revisions(f->m, f->tenant, "Endpoint", "fraud", 0, 0, revs_cb, &r,
                                            &err),
                     3);
    assert_int_equal(r.gens[0], 3);
    assert_int_equal(r.gens[1], 2);
    assert_int_equal(r.gens[2], 1);
    assert_string_equal(r.specs[0], "{\"w\":3}");
    assert_string_equal(r.specs[2], "{\"w\":1}");
    assert_string_equal(r.by[0], "k3");
    assert_string_equal(r.by[2], "k1");
    memset(&r, 0, sizeof r);
    assert_int_equal(bs_resources_revisions(f->m, f->tenant, "Endpoint", "fraud", 3, 1, revs_cb, &r,
                                            &err),
                     1);
    assert_int_equal(r.gens[0], 2);
    memset(&r, 0, sizeof r);
    assert_int_equal(bs_resources_revision_get(f->m, f->tenant, "Endpoint", "fraud", 1, revs_cb, &r,
                                               &err),
                     0);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.specs[0], "{\"w\":1}");
    assert_int_equal(bs_resources_revision_get(f->m, f->tenant, "Endpoint", "fraud", 4, revs_cb, &r,
                                               &err),
                     BS_ENOTFOUND);
    assert_string_equal(err.field, "revision");
    assert_int_equal(bs_resources_revisions(f->m, f->tenant, "Endpoint", "nope", 0, 0, revs_cb, &r,
                                            &err),
                     BS_ENOTFOUND);
    assert_int_equal(bs_resources_delete(f->m, f->tenant, "Endpoint", "fraud", "k", &err), 0);
    assert_int_equal(bs_resources_revisions(f->m, f->tenant, "Endpoint", "fraud", 0, 0, revs_cb, &r,
                                            &err),
                     BS_ENOTFOUND);
    char t[64];
    snprintf(t, sizeof t, "%s", f->tenant);
    assert_int_equal(count(f->m, "SELECT COUNT(*) FROM resource_revisions WHERE tenant = ?", t), 0);
    /* the other tenant's are untouched */
    memset(&r, 0, sizeof r);
    assert_int_equal(bs_resources_revisions(f->m, f->other, "Endpoint", "fraud", 0, 0, revs_cb, &r,
                                            &err),
                     1);
    /* created again: revision 1 again, alone */
    assert_int_equal(bs_resources_put(f->m, f->tenant, "Endpoint", "fraud", "{\"w\":5}", "k", 0,
                                      NULL, NULL, &err),
                     0);
    memset(&r, 0, sizeof r);
    assert_int_equal(bs_resources_revisions(f->m, f->tenant, "Endpoint", "fraud", 0, 0, revs_cb, &r,
                                            &err),
                     1);
    assert_int_equal(r.gens[0], 1);
    assert_string_equal(r.specs[0], "{\"w\":5}");
}

static void test_bad_names(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    const char *bad[] = {"", "Orders", "-x", "a/b", "a.b", "a b",
                         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(bs_resources_put(f->m, f->tenant, "Topic", bad[i], "{}", "k", 0, NULL, NULL,
                                          &err),
                         BS_EINVAL);
        assert_string_equal(err.field, "name");
    }
    assert_int_equal(bs_resources_put(f->m, f->tenant, "topic", "x", "{}", "k", 0, NULL, NULL, &err),
                     BS_EINVAL);
    assert_string_equal(err.field, "kind");
    assert_true(bs_resources_valid_name("a"));
    assert_true(bs_resources_valid_name("0-a_b"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_get_update, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expect_generation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_and_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revisions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_names, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
