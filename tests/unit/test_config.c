/* Settings: precedence flag > env > file > default with a temporary YAML file and a fake
 * envp; unknown keys and bad values name the key; sizes with units; booleans; ranges. */
#include "test_common.h"

#include <unistd.h>

#include "base/config.h"

static char yaml_path[64];

static void write_yaml(const char *text)
{
    snprintf(yaml_path, sizeof yaml_path, "/tmp/bs-test-config-XXXXXX");
    int fd = mkstemp(yaml_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static int teardown(void **state)
{
    (void)state;
    if (yaml_path[0])
        unlink(yaml_path);
    yaml_path[0] = '\0';
    return 0;
}

static int load(bs_config_t *c, int argc, char **argv, char **envp, bs_err_t *err)
{
    bs_err_clear(err);
    return bs_config_load(c, argc, argv, envp, err);
}

static void test_defaults(void **state)
{
    (void)state;
    bs_config_t a, b;
    bs_err_t err;
    bs_config_defaults(&a);
    assert_int_equal(load(&b, 0, NULL, NULL, &err), 0);
    assert_memory_equal(&a, &b, sizeof a);
    assert_true(a.max_body_bytes > 0 && a.max_header_bytes > 0 && a.max_json_depth > 0);
    assert_int_equal(a.no_auth, 0);
}

static void test_precedence(void **state)
{
    (void)state;
    write_yaml("# comment\nlisten: 127.0.0.1:1111\nthreads: 3\nmax_json_depth: 11\n"
               "rate_limit_rps: 2.5\n");
    char cfgflag[80];
    snprintf(cfgflag, sizeof cfgflag, "--config=%s", yaml_path);
    bs_config_t c;
    bs_err_t err;
    bs_config_t d;
    bs_config_defaults(&d);

    /* file only */
    char *argv1[] = {cfgflag};
    assert_int_equal(load(&c, 1, argv1, NULL, &err), 0);
    assert_string_equal(c.listen, "127.0.0.1:1111");
    assert_int_equal(c.threads, 3);
    assert_int_equal(c.max_json_depth, 11);
    assert_true(c.rate_limit_rps == 2.5);
    assert_int_equal(c.max_header_bytes, d.max_header_bytes); /* untouched: default */

    /* env beats file */
    char *env[] = {"PATH=/bin", "BASALT_LISTEN=127.0.0.1:2222", "BASALT_THREADS=4",
                   "BASALT_BOGUS_IGNORED=1", "XBASALT_MAX_JSON_DEPTH=99", NULL};
    assert_int_equal(load(&c, 1, argv1, env, &err), 0);
    assert_string_equal(c.listen, "127.0.0.1:2222");
    assert_int_equal(c.threads, 4);
    assert_int_equal(c.max_json_depth, 11);

    /* flag beats env and file, both flag forms */
    char *argv2[] = {cfgflag, "--listen", "127.0.0.1:3333", "--threads=5"};
    assert_int_equal(load(&c, 4, argv2, env, &err), 0);
    assert_string_equal(c.listen, "127.0.0.1:3333");
    assert_int_equal(c.threads, 5);
    assert_int_equal(c.max_json_depth, 11);

    /* the config file can come from the environment */
    char envcfg[96];
    snprintf(envcfg, sizeof envcfg, "BASALT_CONFIG=%s", yaml_path);
    char *env2[] = {envcfg, NULL};
    assert_int_equal(load(&c, 0, NULL, env2, &err), 0);
    assert_int_equal(c.threads, 3);
    /* a later flag wins over an earlier one */
    char *argv3[] = {"--threads", "1", "--threads", "2"};
    assert_int_equal(load(&c, 4, argv3, NULL, &err), 0);
    assert_int_equal(c.threads, 2);
}

static void expect_error(int argc, char **argv, char **envp, const char *name)
{
    bs_config_t c;
    bs_err_t err;
    assert_int_equal(load(&c, argc, argv, envp, &err), BS_EINVAL);
    if (!strstr(err.msg, name) && strcmp(err.field, name) != 0)
        fail_msg("error '%s' (field '%s') does not name '%s'", err.msg, err.field, name);
}

static void test_unknown_keys(void **state)
{
    (void)state;
    char *a1[] = {"--no-such-flag", "1"};
    expect_error(2, a1, NULL, "no-such-flag");
    char *a2[] = {"stray"};
    expect_error(1, a2, NULL, "stray");
    write_yaml("listen: 127.0.0.1:1\nnot_a_setting: 4\n");
    char *a3[] = {"--config", yaml_path};
    expect_error(2, a3, NULL, "not_a_setting");
    char *a4[] = {"--config", "/nonexistent/basalt.yaml"};
    expect_error(2, a4, NULL, "/nonexistent/basalt.yaml");
}

static void test_bad_values(void **state)
{
    (void)state;
    char *a1[] = {"--threads", "abc"};
    expect_error(2, a1, NULL, "threads");
    char *a2[] = {"--threads", "1.5"};
    expect_error(2, a2, NULL, "threads");
    char *a3[] = {"--threads", "257"};
    expect_error(2, a3, NULL, "threads");
    char *a4[] = {"--max-body-bytes", "12 parsecs"};
    expect_error(2, a4, NULL, "max_body_bytes");
    char *a5[] = {"--max-body-bytes", "-5"};
    expect_error(2, a5, NULL, "max_body_bytes");
    char *a6[] = {"--rate-limit-rps", "inf"};
    expect_error(2, a6, NULL, "rate_limit_rps");
    char *a7[] = {"--no-auth=perhaps"};
    expect_error(1, a7, NULL, "no_auth");
    char *a8[] = {"--log-level", "chatty"};
    expect_error(2, a8, NULL, "log_level");
    char *a9[] = {"--max-json-depth"};
    expect_error(1, a9, NULL, "max_json_depth");
    char *e1[] = {"BASALT_MAX_JSON_DEPTH=1", NULL};
    expect_error(0, NULL, e1, "BASALT_MAX_JSON_DEPTH");
    char longv[400];
    memset(longv, 'l', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    char *a10[] = {"--listen", longv};
    expect_error(2, a10, NULL, "listen");
    write_yaml("threads: [1]\n");
    char *a11[] = {"--config", yaml_path};
    expect_error(2, a11, NULL, "threads");
    teardown(NULL);
    write_yaml("threads:\n  a: 1\n");
    expect_error(2, a11, NULL, "threads");
    teardown(NULL);
    write_yaml("- 1\n- 2\n");
    expect_error(2, a11, NULL, "config");
    teardown(NULL);
    write_yaml("threads: [\n");
    expect_error(2, a11, NULL, "config");
}

static void test_sizes(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int64_t bytes;
    } cases[] = {
        {"16MiB", 16LL << 20}, {"16MB", 16LL << 20}, {"16m", 16LL << 20}, {"2KiB", 2048},
        {"2k", 2048},          {"1GiB", 1LL << 30},  {"1.5KiB", 1536},    {"4096", 4096},
        {"4096B", 4096},       {"1 KiB", 1024},      {"0.5TiB", 1LL << 39},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bs_config_t c;
        bs_err_t err;
        char *argv[] = {"--max-body-bytes", (char *)cases[i].text};
        if (load(&c, 2, argv, NULL, &err) != 0)
            fail_msg("'%s' rejected: %s", cases[i].text, err.msg);
        assert_int_equal(c.max_body_bytes, cases[i].bytes);
    }
    const char *bad[] = {"", "KiB", "1KiBx", "1QB", "1e400", "nan", "1 K i B"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *argv[] = {"--max-body-bytes", (char *)bad[i]};
        expect_error(2, argv, NULL, "max_body_bytes");
    }
    /* below the minimum */
    char *small[] = {"--max-body-bytes", "10"};
    expect_error(2, small, NULL, "max_body_bytes");
}

static void test_bools(void **state)
{
    (void)state;
    const char *yes[] = {"true", "TRUE", "1", "yes", "on"}, *no[] = {"false", "0", "no", "Off"};
    bs_config_t c;
    bs_err_t err;
    char *bare[] = {"--no-auth"};
    assert_int_equal(load(&c, 1, bare, NULL, &err), 0);
    assert_int_equal(c.no_auth, 1);
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        char flag[40];
        snprintf(flag, sizeof flag, "--no-auth=%s", yes[i]);
        char *argv[] = {flag};
        assert_int_equal(load(&c, 1, argv, NULL, &err), 0);
        assert_int_equal(c.no_auth, 1);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        char env[40];
        snprintf(env, sizeof env, "BASALT_NO_AUTH=%s", no[i]);
        char *envp[] = {env, NULL};
        assert_int_equal(load(&c, 0, NULL, envp, &err), 0);
        assert_int_equal(c.no_auth, 0);
    }
}

static void test_set_single(void **state)
{
    (void)state;
    bs_config_t c;
    bs_err_t err;
    bs_config_defaults(&c);
    assert_int_equal(bs_config_set(&c, "max_json_depth", "7", "test", &err), 0);
    assert_int_equal(c.max_json_depth, 7);
    assert_int_equal(bs_config_set(&c, "nope", "7", "test", &err), BS_EINVAL);
    assert_string_equal(err.field, "nope");
    assert_int_equal(bs_config_set(&c, "unknown_features", "sometimes", "test", &err), BS_EINVAL);
    assert_string_equal(err.field, "unknown_features");
}

/* metadata_url: empty or a PostgreSQL URL, and a rejected value is not echoed (it may
 * hold a password); replica_id defaults to hostname-pid; the pool size is bounded. */
static void test_metadata_settings(void **state)
{
    (void)state;
    bs_config_t c;
    bs_err_t err;
    bs_config_defaults(&c);
    assert_string_equal(c.metadata_url, "");
    assert_int_equal(c.metadata_pool_size, 8);
    char want[200], host[64] = "";
    gethostname(host, sizeof host - 1);
    snprintf(want, sizeof want, "%s-%ld", host, (long)getpid());
    assert_string_equal(c.replica_id, want);
    assert_int_equal(bs_config_set(&c, "metadata_url", "postgres://u:pw@db/x", "test", &err), 0);
    assert_int_equal(bs_config_set(&c, "metadata_url", "postgresql://db/x", "test", &err), 0);
    assert_int_equal(bs_config_set(&c, "metadata_url", "", "test", &err), 0);
    assert_int_equal(bs_config_set(&c, "metadata_url", "mysql://u:hunter2@db/x", "test", &err),
                     BS_EINVAL);
    assert_null(strstr(err.msg, "hunter2"));
    assert_string_equal(err.field, "metadata_url");
    assert_int_equal(bs_config_set(&c, "metadata_pool_size", "0", "test", &err), BS_EINVAL);
    assert_int_equal(bs_config_set(&c, "replica_id", "a", "test", &err), 0);
    assert_string_equal(c.replica_id, "a");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_defaults, teardown),
        cmocka_unit_test_teardown(test_precedence, teardown),
        cmocka_unit_test_teardown(test_unknown_keys, teardown),
        cmocka_unit_test_teardown(test_bad_values, teardown),
        cmocka_unit_test_teardown(test_sizes, teardown),
        cmocka_unit_test_teardown(test_bools, teardown),
        cmocka_unit_test_teardown(test_set_single, teardown),
        cmocka_unit_test_teardown(test_metadata_settings, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
