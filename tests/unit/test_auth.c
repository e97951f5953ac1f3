/* Auth: token buckets through bs_auth_charge with a fake principal, and key create /
 * verify / wrong secret / expiry / delete / tenant scoping against a temporary SQLite
 * metadata store. */
#include "test_common.h"

#include <unistd.h>

#include "auth/auth.h"
#include "base/rcu.h"
#include "base/time.h"
#include "store/meta.h"

typedef struct {
    char dir[64];
    bs_meta_t *meta;
    bs_auth_t *auth;
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/bs-test-auth-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    char path[128];
    snprintf(path, sizeof path, "%s/basalt.db", f->dir);
    bs_err_t err;
    f->meta = bs_meta_open(path, &err);
    if (!f->meta)
        return -1;
    f->auth = bs_auth_new(f->meta, 0, 0, &err);
    if (!f->auth)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    bs_auth_free(f->auth);
    bs_meta_close(f->meta);
    bs_rcu_drain();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* ---- token bucket ------------------------------------------------------------------------ */

static void sleep_s(double s) { usleep((useconds_t)(s * 1e6)); }

static void test_bucket_burst_then_limited(void **state)
{
    fx_t *f = *state;
    bs_principal_t who = {.key_id = "fake-key-1", .tenant = "default", .role = BS_ROLE_VIEWER,
                          .rate_rps = 0.001, .rate_burst = 3};
    double retry = -1;
    for (int i = 0; i < 3; i++)
        assert_int_equal(bs_auth_charge(f->auth, &who, &retry), 0);
    /* a refill of one token per 1000 s cannot have added a whole token since */
    assert_int_equal(bs_auth_charge(f->auth, &who, &retry), BS_ERATE);
    assert_true(retry > 0 && retry <= 1000.0);
    /* another key has its own bucket */
    bs_principal_t other = who;
    snprintf(other.key_id, sizeof other.key_id, "fake-key-2");
    assert_int_equal(bs_auth_charge(f->auth, &other, &retry), 0);
}

static void test_bucket_refills(void **state)
{
    fx_t *f = *state;
    bs_principal_t who = {.key_id = "fake-refill", .tenant = "default", .role = BS_ROLE_VIEWER,
                          .rate_rps = 2, .rate_burst = 1};
    double retry = 0;
    assert_int_equal(bs_auth_charge(f->auth, &who, &retry), 0);
    int limited = 0;
    for (int i = 0; i < 5 && !limited; i++)
        limited = bs_auth_charge(f->auth, &who, &retry) == BS_ERATE;
    assert_true(limited);
    assert_true(retry > 0 && retry <= 1.0 / 2 + 1e-9);
    sleep_s(retry + 0.05);
    assert_int_equal(bs_auth_charge(f->auth, &who, &retry), 0);
}

static void test_bucket_unlimited_and_default(void **state)
{
    fx_t *f = *state;
    bs_principal_t who = {.key_id = "fake-unlimited", .role = BS_ROLE_VIEWER};
    double retry = 0;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(bs_auth_charge(f->auth, &who, &retry), 0); /* default rps 0 */
    bs_auth_t *limited = bs_auth_new(f->meta, 0.001, 2, NULL);
    assert_non_null(limited);
    assert_int_equal(bs_auth_charge(limited, &who, &retry), 0);
    assert_int_equal(bs_auth_charge(limited, &who, &retry), 0);
    assert_int_equal(bs_auth_charge(limited, &who, &retry), BS_ERATE);
    assert_true(retry > 0 && retry <= 1000.0);
    bs_auth_free(limited);
}

/* ---- keys -------------------------------------------------------------------------------- */

static void make_key(fx_t *f, const char *name, const char *tenant, bs_role_t role,
                     int64_t expires_at, bs_key_info_t *info, char *secret)
{
    memset(info, 0, sizeof *info);
    snprintf(info->name, sizeof info->name, "%s", name);
    snprintf(info->tenant, sizeof info->tenant, "%s", tenant);
    info->role = role;
    info->expires_at = expires_at;
    bs_err_t err;
    bs_err_clear(&err);
    if (bs_auth_key_create(f->auth, "test", info, secret, &err) != 0)
        fail_msg("key_create: %s", err.msg);
}

static void test_bootstrap_once(void **state)
{
    fx_t *f = *state;
    char secret[BS_KEY_SECRET_MAX];
    int created = 0;
    bs_err_t err;
    assert_int_equal(bs_auth_bootstrap(f->auth, secret, &created, &err), 0);
    assert_int_equal(created, 1);
    bs_principal_t who;
    assert_int_equal(bs_auth_verify(f->auth, secret, strlen(secret), &who, &err), 0);
    assert_int_equal(who.role, BS_ROLE_ADMIN);
    assert_string_equal(who.tenant, BS_DEFAULT_TENANT);
    char again[BS_KEY_SECRET_MAX] = "";
    assert_int_equal(bs_auth_bootstrap(f->auth, again, &created, &err), 0);
    assert_int_equal(created, 0);
}

static void test_create_verify_wrong_secret_delete(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_tenant_t t;
    assert_int_equal(bs_auth_tenant_create(f->auth, "acme", &t, &err), 0);
    assert_int_equal(bs_auth_tenant_create(f->auth, "acme", &t, &err), BS_ECONFLICT);
    assert_int_equal(bs_auth_tenant_create(f->auth, "Bad Name", &t, &err), BS_EINVAL);
    bs_key_info_t k;
    char secret[BS_KEY_SECRET_MAX];
    make_key(f, "dev", "acme", BS_ROLE_DEVELOPER, 0, &k, secret);
    assert_int_equal(strlen(k.id), 36);
    assert_memory_equal(secret, "bsk_", 4);

    bs_principal_t who;
    assert_int_equal(bs_auth_verify(f->auth, secret, strlen(secret), &who, &err), 0);
    assert_string_equal(who.key_id, k.id);
    assert_string_equal(who.tenant, "acme");
    assert_int_equal(who.role, BS_ROLE_DEVELOPER);

    /* every single-character change to the secret part is rejected */
    size_t n = strlen(secret);
    char bad[BS_KEY_SECRET_MAX];
    for (size_t i = 37; i < n; i += 7) {
        memcpy(bad, secret, n + 1);
        bad[i] = bad[i] == 'a' ? 'b' : 'a';
        assert_int_equal(bs_auth_verify(f->auth, bad, n, &who, &err), BS_EUNAUTH);
    }
    assert_int_equal(bs_auth_verify(f->auth, secret, n - 1, &who, &err), BS_EUNAUTH);
    assert_int_equal(bs_auth_verify(f->auth, "", 0, &who, &err), BS_EUNAUTH);
    assert_int_equal(bs_auth_verify(f->auth, "bsk_", 4, &who, &err), BS_EUNAUTH);

    /* listing by tenant */
    bs_key_info_t out[8];
    int got = bs_auth_key_list(f->auth, "acme", NULL, 8, out, &err);
    assert_int_equal(got, 1);
    assert_string_equal(out[0].id, k.id);
    assert_int_equal(bs_auth_key_list(f->auth, "nobody", NULL, 8, out, &err), 0);

    /* deleting scoped to another tenant does nothing */
    assert_int_equal(bs_auth_key_delete(f->auth, k.id, "other", &err), BS_ENOTFOUND);
    assert_int_equal(bs_auth_verify(f->auth, secret, n, &who, &err), 0);
    assert_int_equal(bs_auth_key_delete(f->auth, k.id, "acme", &err), 0);
    assert_int_equal(bs_auth_verify(f->auth, secret, n, &who, &err), BS_EUNAUTH);
    assert_int_equal(bs_auth_key_delete(f->auth, k.id, NULL, &err), BS_ENOTFOUND);
}

static void test_expired(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_tenant_t t;
    if (!bs_auth_tenant_exists(f->auth, BS_DEFAULT_TENANT))
        assert_int_equal(bs_auth_tenant_create(f->auth, BS_DEFAULT_TENANT, &t, &err), 0);
    bs_key_info_t k;
    char secret[BS_KEY_SECRET_MAX];
    make_key(f, "old", BS_DEFAULT_TENANT, BS_ROLE_VIEWER, bs_time_wall_ms() - 1000, &k, secret);
    bs_principal_t who;
    assert_int_equal(bs_auth_verify(f->auth, secret, strlen(secret), &who, &err), BS_EUNAUTH);
    make_key(f, "soon", BS_DEFAULT_TENANT, BS_ROLE_VIEWER, bs_time_wall_ms() + 300, &k, secret);
    /* valid now unless the machine stalled for 300 ms; invalid after the deadline for sure */
    int64_t deadline = k.expires_at;
    while (bs_time_wall_ms() < deadline + 5)
        sleep_s(0.05);
    assert_int_equal(bs_auth_verify(f->auth, secret, strlen(secret), &who, &err), BS_EUNAUTH);
    make_key(f, "future", BS_DEFAULT_TENANT, BS_ROLE_VIEWER, bs_time_wall_ms() + 3600000, &k, secret);
    assert_int_equal(bs_auth_verify(f->auth, secret, strlen(secret), &who, &err), 0);
}

static void test_create_validation(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    char secret[BS_KEY_SECRET_MAX];
    bs_key_info_t k = {.role = BS_ROLE_VIEWER};
    snprintf(k.tenant, sizeof k.tenant, "missing-tenant");
    snprintf(k.name, sizeof k.name, "x");
    assert_int_equal(bs_auth_key_create(f->auth, "t", &k, secret, &err), BS_ENOTFOUND);
    assert_string_equal(err.field, "tenant");
    bs_key_info_t e = {.role = BS_ROLE_VIEWER};
    snprintf(e.tenant, sizeof e.tenant, "acme");
    assert_int_equal(bs_auth_key_create(f->auth, "t", &e, secret, &err), BS_EINVAL); /* no name */
    assert_string_equal(err.field, "name");
    bs_key_info_t r = {.role = BS_ROLE_PUBLIC};
    snprintf(r.tenant, sizeof r.tenant, "acme");
    snprintf(r.name, sizeof r.name, "x");
    assert_int_equal(bs_auth_key_create(f->auth, "t", &r, secret, &err), BS_EINVAL);
    assert_string_equal(err.field, "role");
}

static void test_persisted_across_reopen(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    bs_tenant_t t;
    if (!bs_auth_tenant_exists(f->auth, "acme"))
        assert_int_equal(bs_auth_tenant_create(f->auth, "acme", &t, &err), 0);
    bs_key_info_t k;
    char secret[BS_KEY_SECRET_MAX];
    make_key(f, "kept", "acme", BS_ROLE_PREDICTOR, 0, &k, secret);
    bs_auth_free(f->auth);
    bs_meta_close(f->meta);
    char path[128];
    snprintf(path, sizeof path, "%s/basalt.db", f->dir);
    f->meta = bs_meta_open(path, &err);
    assert_non_null(f->meta);
    f->auth = bs_auth_new(f->meta, 0, 0, &err);
    assert_non_null(f->auth);
    bs_principal_t who;
    assert_int_equal(bs_auth_verify(f->auth, secret, strlen(secret), &who, &err), 0);
    assert_int_equal(who.role, BS_ROLE_PREDICTOR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bucket_burst_then_limited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bucket_refills, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bucket_unlimited_and_default, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bootstrap_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_verify_wrong_secret_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persisted_across_reopen, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
