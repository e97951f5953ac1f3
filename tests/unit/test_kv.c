/* src/store/kv and the shared rate limiter (src/auth/ratelimit.c) against a real
 * redis-server: BASALT_TEST_REDIS_URL names it and BASALT_TEST_REDIS_CONF its config file
 * (tests/redis_server.py sets both: `python3 tests/redis_server.py -- build/tests/test_kv`).
 * Without them the test fails: it cannot be skipped.
 *
 * Stopping and starting Redis: the server's pid file (redis.pid next to the config) names
 * the running process; it is stopped with SIGTERM and started again with
 * `redis-server CONF --daemonize yes` on the same port. */
#include "test_common.h"

#include <math.h>
#include <signal.h>
#include <unistd.h>

#include "auth/auth.h"
#include "base/time.h"
#include "store/kv.h"

static const char *redis_url;
static char redis_conf[512], redis_pidfile[600];

static void sleep_ms(int ms)
{
    usleep((useconds_t)ms * 1000);
}

/* 1 if Redis answers PING through a fresh connection. */
static int redis_alive(void)
{
    bs_kv_t *kv = bs_kv_new(redis_url, &(bs_kv_opts_t){.connect_timeout_ms = 200}, NULL);
    const char *a[] = {"PING"};
    bs_kv_reply_t *r = NULL;
    int ok = kv && bs_kv_command(kv, 1, a, NULL, &r, NULL) == 0 && r->type == BS_KV_STATUS;
    bs_kv_reply_free(r);
    bs_kv_free(kv);
    return ok;
}

static void redis_stop(void)
{
    FILE *f = fopen(redis_pidfile, "r");
    if (!f)
        fail_msg("no pid file %s", redis_pidfile);
    int pid = 0;
    if (fscanf(f, "%d", &pid) != 1 || pid <= 0)
        fail_msg("bad pid file %s", redis_pidfile);
    fclose(f);
    assert_int_equal(kill(pid, SIGTERM), 0);
    for (int i = 0; i < 3000 && redis_alive(); i++)
        sleep_ms(10);
    assert_false(redis_alive());
}

static int redis_pid(void)
{
    FILE *f = fopen(redis_pidfile, "r");
    int pid = 0;
    if (!f || fscanf(f, "%d", &pid) != 1 || pid <= 0)
        fail_msg("no pid in %s", redis_pidfile);
    fclose(f);
    return pid;
}

static void redis_start(void)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "redis-server '%s' --daemonize yes >/dev/null", redis_conf);
    assert_int_equal(system(cmd), 0);
    for (int i = 0; i < 3000 && !redis_alive(); i++)
        sleep_ms(10);
    assert_true(redis_alive());
}

/* Runs a command given as words; returns the reply (caller frees); fails on BS_EUNAVAIL. */
static bs_kv_reply_t *cmd(bs_kv_t *kv, int argc, const char **argv)
{
    bs_kv_reply_t *r = NULL;
    bs_err_t err;
    bs_err_clear(&err);
    int rc = bs_kv_command(kv, argc, argv, NULL, &r, &err);
    if (rc != 0)
        fail_msg("%s: %s", argv[0], err.msg);
    return r;
}

#define CMD(kv, ...)                                                                               \
    cmd(kv, (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)),                   \
        (const char *[]){__VA_ARGS__})

static void expect_status(bs_kv_reply_t *r, const char *s)
{
    assert_non_null(r);
    assert_int_equal(r->type, BS_KV_STATUS);
    assert_string_equal(r->str, s);
    bs_kv_reply_free(r);
}

/* ---- URLs ---------------------------------------------------------------------------------- */

static void test_parse_url(void **state)
{
    (void)state;
    bs_kv_url_t u;
    bs_err_t err;
    assert_int_equal(bs_kv_parse_url("redis://cache", &u, &err), 0);
    assert_string_equal(u.host, "cache");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.password, "");
    assert_int_equal(bs_kv_parse_url("redis://bob:p%40ss@10.0.0.1:7000/5", &u, &err), 0);
    assert_string_equal(u.user, "bob");
    assert_string_equal(u.password, "p@ss");
    assert_string_equal(u.host, "10.0.0.1");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 5);
    assert_int_equal(bs_kv_parse_url("redis://:secret@h:1/", &u, &err), 0);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "secret");
    assert_int_equal(u.db, 0);
    assert_int_equal(bs_kv_parse_url("redis://[::1]:6380", &u, &err), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 6380);
    assert_int_equal(bs_kv_parse_url("unix:/run/redis.sock?db=2", &u, &err), 0);
    assert_string_equal(u.unix_path, "/run/redis.sock");
    assert_int_equal(u.db, 2);
    const char *bad[] = {"",
                         "http://h",
                         "rediss://h",
                         "redis://",
                         "redis://h:0",
                         "redis://h:65536",
                         "redis://h:12x",
                         "redis://h/db",
                         "redis://h/-1",
                         "redis://u:%zz@h",
                         "redis://u:%4@h",
                         "redis://[::1",
                         "unix:relative.sock",
                         "unix:",
                         "unix:/s?x=1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bs_err_clear(&err);
        if (bs_kv_parse_url(bad[i], &u, &err) != BS_EINVAL)
            fail_msg("'%s' parsed", bad[i]);
        assert_true(err.msg[0] != '\0');
    }
    assert_null(bs_kv_new("nope://x", NULL, &err));
    assert_int_equal(err.code, BS_EINVAL);
}

/* ---- commands ------------------------------------------------------------------------------- */

static void test_commands(void **state)
{
    (void)state;
    bs_kv_t *kv = bs_kv_new(redis_url, NULL, NULL);
    assert_non_null(kv);
    expect_status(CMD(kv, "SET", "t:a", "hello"), "OK");
    bs_kv_reply_t *r = CMD(kv, "GET", "t:a");
    assert_int_equal(r->type, BS_KV_STR);
    assert_int_equal(r->len, 5);
    assert_string_equal(r->str, "hello");
    bs_kv_reply_free(r);
    /* binary-safe values: lens given */
    const char *av[] = {"SET", "t:bin", "a\0b"};
    size_t lens[] = {3, 5, 3};
    bs_kv_reply_t *rr = NULL;
    assert_int_equal(bs_kv_command(kv, 3, av, lens, &rr, NULL), 0);
    bs_kv_reply_free(rr);
    r = CMD(kv, "STRLEN", "t:bin");
    assert_int_equal(r->type, BS_KV_INT);
    assert_int_equal(r->integer, 3);
    bs_kv_reply_free(r);
    r = CMD(kv, "GET", "t:missing");
    assert_int_equal(r->type, BS_KV_NIL);
    bs_kv_reply_free(r);
    bs_kv_reply_free(CMD(kv, "DEL", "t:list"));
    bs_kv_reply_free(CMD(kv, "RPUSH", "t:list", "x", "y", "z"));
    r = CMD(kv, "LRANGE", "t:list", "0", "-1");
    assert_int_equal(r->type, BS_KV_ARRAY);
    assert_int_equal(r->n, 3);
    assert_string_equal(r->elem[2].str, "z");
    bs_kv_reply_free(r);
    /* an error reply is a reply, not a failure, and the connection stays usable */
    bs_kv_stats_t before, after;
    bs_kv_stats(kv, &before);
    r = CMD(kv, "INCR", "t:a");
    assert_int_equal(r->type, BS_KV_ERROR);
    assert_non_null(strstr(r->str, "not an integer"));
    bs_kv_reply_free(r);
    r = CMD(kv, "NOSUCHCOMMAND");
    assert_int_equal(r->type, BS_KV_ERROR);
    bs_kv_reply_free(r);
    bs_kv_stats(kv, &after);
    assert_int_equal(after.errors - before.errors, 2);
    assert_int_equal(after.commands - before.commands, 2);
    assert_int_equal(after.connected, 1);
    assert_int_equal(after.reconnects, 0);
    r = CMD(kv, "GET", "t:a");
    assert_string_equal(r->str, "hello");
    bs_kv_reply_free(r);
    bs_kv_free(kv);
}

static void test_pipeline(void **state)
{
    (void)state;
    bs_kv_t *kv = bs_kv_new(redis_url, NULL, NULL);
    bs_kv_reply_free(CMD(kv, "DEL", "t:ctr"));
    enum { N = 300 };
    static const char *incr[] = {"INCR", "t:ctr"};
    bs_kv_cmd_t cmds[N + 1];
    for (int i = 0; i < N; i++)
        cmds[i] = (bs_kv_cmd_t){2, incr, NULL, NULL, 0};
    static const char *get[] = {"GET", "t:ctr"};
    cmds[N] = (bs_kv_cmd_t){2, get, NULL, NULL, 0};
    bs_kv_reply_t *out[N + 1];
    bs_kv_stats_t before, after;
    bs_kv_stats(kv, &before);
    /* all in one write, the replies read in order */
    assert_int_equal(bs_kv_pipeline(kv, cmds, N + 1, out, NULL), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(out[i]->type, BS_KV_INT);
        assert_int_equal(out[i]->integer, i + 1); /* in order */
        bs_kv_reply_free(out[i]);
    }
    assert_string_equal(out[N]->str, "300");
    bs_kv_reply_free(out[N]);
    bs_kv_stats(kv, &after);
    assert_int_equal(after.commands - before.commands, N + 1);
    /* an empty pipeline is a no-op */
    assert_int_equal(bs_kv_pipeline(kv, cmds, 0, out, NULL), 0);
    bs_kv_free(kv);
}

static const char SCRIPT_SUM[] = "return tonumber(ARGV[1]) + tonumber(ARGV[2]) + #KEYS";

static void test_evalsha_noscript(void **state)
{
    (void)state;
    bs_kv_t *kv = bs_kv_new(redis_url, NULL, NULL);
    bs_kv_script_t s;
    bs_kv_script_init(&s, SCRIPT_SUM);
    assert_int_equal(strlen(s.sha), 40);
    expect_status(CMD(kv, "SCRIPT", "FLUSH"), "OK");
    bs_kv_reply_t *r = CMD(kv, "SCRIPT", "EXISTS", s.sha);
    assert_int_equal(r->elem[0].integer, 0);
    bs_kv_reply_free(r);
    /* NOSCRIPT -> SCRIPT LOAD -> EVALSHA again, inside the call */
    const char *args[] = {"k1", "40", "1"};
    assert_int_equal(bs_kv_eval(kv, &s, 1, 3, args, &r, NULL), 0);
    assert_int_equal(r->type, BS_KV_INT);
    assert_int_equal(r->integer, 42);
    bs_kv_reply_free(r);
    r = CMD(kv, "SCRIPT", "EXISTS", s.sha);
    assert_int_equal(r->elem[0].integer, 1); /* the sha we computed is Redis's */
    bs_kv_reply_free(r);
    /* in a pipeline, after a flush: evalsha, a plain command, evalsha; replies in order */
    expect_status(CMD(kv, "SCRIPT", "FLUSH"), "OK");
    static const char *a1[] = {"10", "1"}, *a2[] = {"x", "5", "5"}, *ping[] = {"PING"};
    bs_kv_cmd_t cmds[] = {{2, a1, NULL, &s, 0}, {1, ping, NULL, NULL, 0}, {3, a2, NULL, &s, 1}};
    bs_kv_reply_t *out[3];
    assert_int_equal(bs_kv_pipeline(kv, cmds, 3, out, NULL), 0);
    assert_int_equal(out[0]->integer, 11);
    assert_string_equal(out[1]->str, "PONG");
    assert_int_equal(out[2]->integer, 11);
    for (int i = 0; i < 3; i++)
        bs_kv_reply_free(out[i]);
    /* a script that fails at run time is an error reply, not a crash */
    bs_kv_script_t bad;
    bs_kv_script_init(&bad, "return redis.call('INCR', KEYS[1])");
    bs_kv_reply_free(CMD(kv, "SET", "t:notnum", "abc"));
    const char *k[] = {"t:notnum"};
    assert_int_equal(bs_kv_eval(kv, &bad, 1, 1, k, &r, NULL), 0);
    assert_int_equal(r->type, BS_KV_ERROR);
    bs_kv_reply_free(r);
    bs_kv_free(kv);
}

static void test_select_and_auth(void **state)
{
    (void)state;
    char url3[600];
    snprintf(url3, sizeof url3, "%s/3", redis_url);
    bs_kv_t *db3 = bs_kv_new(url3, NULL, NULL), *db0 = bs_kv_new(redis_url, NULL, NULL);
    expect_status(CMD(db3, "SET", "t:where", "three"), "OK");
    bs_kv_reply_t *r = CMD(db0, "EXISTS", "t:where");
    assert_int_equal(r->integer, 0);
    bs_kv_reply_free(r);
    expect_status(CMD(db0, "SELECT", "3"), "OK");
    r = CMD(db0, "GET", "t:where");
    assert_string_equal(r->str, "three");
    bs_kv_reply_free(r);
    bs_kv_free(db3);

    /* ACL user and the default user's password */
    expect_status(CMD(db0, "ACL", "SETUSER", "bob", "on", ">bobpw", "~*", "+@all"), "OK");
    expect_status(CMD(db0, "CONFIG", "SET", "requirepass", "defpw"), "OK");
    const char *host = redis_url + strlen("redis://");
    char u_bob[600], u_def[600], u_wrong[600];
    snprintf(u_bob, sizeof u_bob, "redis://bob:bobpw@%s", host);
    snprintf(u_def, sizeof u_def, "redis://:defpw@%s", host);
    snprintf(u_wrong, sizeof u_wrong, "redis://bob:nope@%s", host);
    bs_kv_t *bob = bs_kv_new(u_bob, NULL, NULL), *def = bs_kv_new(u_def, NULL, NULL),
            *wrong = bs_kv_new(u_wrong, NULL, NULL), *none = bs_kv_new(redis_url, NULL, NULL);
    r = CMD(bob, "ACL", "WHOAMI");
    assert_string_equal(r->str, "bob");
    bs_kv_reply_free(r);
    r = CMD(def, "ACL", "WHOAMI");
    assert_string_equal(r->str, "default");
    bs_kv_reply_free(r);
    bs_err_t err;
    bs_err_clear(&err);
    assert_int_equal(bs_kv_connect(wrong, &err), BS_EUNAVAIL);
    assert_non_null(strstr(err.msg, "AUTH"));
    r = CMD(none, "GET", "t:a"); /* connects, but the server wants AUTH */
    assert_int_equal(r->type, BS_KV_ERROR);
    assert_non_null(strstr(r->str, "NOAUTH"));
    bs_kv_reply_free(r);
    expect_status(CMD(def, "CONFIG", "SET", "requirepass", ""), "OK");
    bs_kv_reply_free(CMD(def, "ACL", "DELUSER", "bob"));
    bs_kv_free(bob);
    bs_kv_free(def);
    bs_kv_free(wrong);
    bs_kv_free(none);
    bs_kv_free(db0);
}

/* unix: URLs, the harness's socket next to its config (with ?db=N) */
static void test_unix_socket(void **state)
{
    (void)state;
    char url[700];
    snprintf(url, sizeof url, "unix:%s", redis_pidfile);
    snprintf(strrchr(url, '/') + 1, 16, "redis.sock?db=2");
    bs_kv_t *ux = bs_kv_new(url, NULL, NULL), *tcp = bs_kv_new(redis_url, NULL, NULL);
    assert_non_null(ux);
    expect_status(CMD(ux, "SET", "t:via-unix", "yes"), "OK");
    expect_status(CMD(tcp, "SELECT", "2"), "OK");
    bs_kv_reply_t *r = CMD(tcp, "GET", "t:via-unix");
    assert_string_equal(r->str, "yes");
    bs_kv_reply_free(r);
    bs_kv_free(ux);
    bs_kv_free(tcp);
}

static void test_command_timeout(void **state)
{
    (void)state;
    bs_kv_t *kv = bs_kv_new(redis_url, &(bs_kv_opts_t){.command_timeout_ms = 100}, NULL);
    bs_kv_t *admin = bs_kv_new(redis_url, NULL, NULL);
    expect_status(CMD(kv, "PING"), "PONG");
    /* Every client's commands wait 0.5 s: ours must give up after its timeout. */
    expect_status(CMD(admin, "CLIENT", "PAUSE", "500", "ALL"), "OK");
    const char *get[] = {"GET", "t:a"};
    bs_kv_reply_t *r = NULL;
    bs_err_t err;
    bs_err_clear(&err);
    assert_int_equal(bs_kv_command(kv, 2, get, NULL, &r, &err), BS_EUNAVAIL);
    assert_null(r);
    assert_non_null(strstr(err.msg, "did not answer within 100 ms"));
    bs_kv_stats_t st;
    bs_kv_stats(kv, &st);
    assert_int_equal(st.connected, 0);
    assert_true(st.errors >= 1);
    /* (CLIENT UNPAUSE would be paused too.) Once the pause is over, the next command
     * reconnects by itself. */
    int ok = 0;
    for (int i = 0; i < 100 && !ok; i++) {
        const char *ping[] = {"PING"};
        ok = bs_kv_command(kv, 1, ping, NULL, &r, NULL) == 0;
        if (ok)
            bs_kv_reply_free(r);
        else
            sleep_ms(100);
    }
    assert_true(ok);
    r = CMD(kv, "PING");
    assert_string_equal(r->str, "PONG");
    bs_kv_reply_free(r);
    bs_kv_stats(kv, &st);
    assert_int_equal(st.connected, 1);
    assert_true(st.reconnects >= 1);
    bs_kv_free(kv);
    bs_kv_free(admin);
}

static void test_reconnect_after_restart(void **state)
{
    (void)state;
    bs_kv_t *kv =
        bs_kv_new(redis_url, &(bs_kv_opts_t){.backoff_min_ms = 50, .backoff_max_ms = 400}, NULL);
    expect_status(CMD(kv, "PING"), "PONG");
    redis_stop();
    const char *ping[] = {"PING"};
    bs_kv_reply_t *r = NULL;
    bs_err_t err;
    /* A big command on the connection the server closed: the writes after the peer's
     * reset raise SIGPIPE, which must not kill the process (hiredis uses write(2)). */
    size_t big_len = 8u << 20;
    char *big = malloc(big_len);
    memset(big, 'x', big_len);
    const char *set[] = {"SET", "t:big", big};
    size_t set_lens[] = {3, 5, big_len};
    assert_int_equal(bs_kv_command(kv, 3, set, set_lens, &r, NULL), BS_EUNAVAIL);
    free(big);
    /* the lost connection, then refused connects (inside the backoff: no attempt at all) */
    for (int i = 0; i < 5; i++) {
        bs_err_clear(&err);
        assert_int_equal(bs_kv_command(kv, 1, ping, NULL, &r, &err), BS_EUNAVAIL);
        assert_null(r);
        assert_true(err.msg[0] != '\0');
    }
    bs_kv_stats_t st;
    bs_kv_stats(kv, &st);
    assert_int_equal(st.connected, 0);
    redis_start();
    int ok = 0;
    for (int i = 0; i < 500 && !ok; i++) { /* the backoff is at most 400 ms */
        ok = bs_kv_command(kv, 1, ping, NULL, &r, NULL) == 0;
        if (!ok)
            sleep_ms(10);
    }
    assert_true(ok);
    assert_string_equal(r->str, "PONG");
    bs_kv_reply_free(r);
    bs_kv_stats(kv, &st);
    assert_int_equal(st.connected, 1);
    assert_int_equal(st.reconnects, 1);
    bs_kv_free(kv);
}

/* ---- the shared rate limiter ---------------------------------------------------------------- */

static char prefix[64];

static bs_ratelimit_t *limiter(void)
{
    bs_ratelimit_opts_t o = {.prefix = prefix, .kv = {.backoff_min_ms = 50, .backoff_max_ms = 300}};
    bs_err_t err;
    bs_err_clear(&err);
    bs_ratelimit_t *rl = bs_ratelimit_new(redis_url, &o, &err);
    if (!rl)
        fail_msg("bs_ratelimit_new: %s", err.msg);
    return rl;
}

/*
 * Two replicas (two limiters in this process) on one Redis share one key's budget.
 * Requests come every ~0.5 ms (far above the rate), share_a of them to replica A.
 *
 * Oracle from the bucket arithmetic, over the window T from the first charge to the last:
 *   admitted <= burst + rate*T + 2*CREDIT (+1 for rounding): every admitted request used a
 *     token Redis granted (the bucket starts full and refills at rate, granted tokens
 *     never exceed what it holds), except at most one on credit per replica;
 *   admitted >= 0.6*rate*T: tokens are lost to the admitted count only when they sit unused
 *     in the bucket at the end (< burst), in slices held at the end (< burst per replica),
 *     or when the bucket overflows because the refill thread did not run for burst/rate
 *     = 0.5 s; 0.6 leaves room for the first two at T = 3 s and for a loaded machine.
 * Per-replica limits instead of one global limit would admit about 2*(burst+rate*T), and
 * slices that are never refilled only about 2*(CREDIT + one slice): both fail.
 */
static void run_split(const char *key, double share_a)
{
    const double rate = 40, burst = 20, secs = 3;
    bs_ratelimit_t *a = limiter(), *b = limiter();
    int admitted = 0, admitted_a = 0, n = 0;
    double acc = 0, retry = 0;
    uint64_t t0 = bs_time_mono_ns(), t1 = t0;
    while ((double)(t1 - t0) / 1e9 < secs) {
        acc += share_a;
        int to_a = acc >= 1;
        if (to_a)
            acc -= 1;
        int rc = bs_ratelimit_charge(to_a ? a : b, key, rate, burst, &retry);
        if (rc == 0) {
            admitted++;
            admitted_a += to_a;
        } else {
            assert_int_equal(rc, BS_ERATE);
            assert_true(retry > 0 && retry <= 1.0 / rate * 2 + 1e-9 + 1);
        }
        n++;
        t1 = bs_time_mono_ns();
        usleep(500);
    }
    double t = (double)(t1 - t0) / 1e9;
    double upper = burst + rate * t + 2 + 1, lower = 0.6 * rate * t;
    bs_ratelimit_stats_t sa, sb;
    bs_ratelimit_stats(a, &sa);
    bs_ratelimit_stats(b, &sb);
    print_message("split %.2f: %d of %d admitted in %.2f s (%d via A), bounds [%.0f, %.0f]\n",
                  share_a, admitted, n, t, admitted_a, lower, upper);
    assert_true(sa.shared && sb.shared);
    assert_int_equal(sa.fallback_decisions + sb.fallback_decisions, 0);
    assert_true(admitted <= upper);
    assert_true(admitted >= lower);
    if (share_a >= 0.2) /* both replicas got a part of the budget */
        assert_true(admitted_a > 0 && admitted - admitted_a > 0);
    bs_ratelimit_free(a);
    bs_ratelimit_free(b);
}

static void test_shared_even_split(void **state)
{
    (void)state;
    run_split("key-even", 0.5);
}

static void test_shared_uneven_split(void **state)
{
    (void)state;
    run_split("key-uneven", 0.9);
}

/* The first requests of a key new to a replica: admitted (one on credit, then from the
 * burst), and a slow key's budget is the global one: after the burst, both replicas
 * together are refused, with a Retry-After from Redis. */
static void test_shared_burst_then_refused(void **state)
{
    (void)state;
    bs_ratelimit_t *a = limiter(), *b = limiter();
    const double rate = 0.01, burst = 6; /* one token per 100 s: none comes back meanwhile */
    double retry = 0;
    int admitted = 0;
    uint64_t t0 = bs_time_mono_ns();
    /* 2 s of requests alternating over both replicas */
    for (int i = 0; bs_time_mono_ns() - t0 < 2000000000ull; i++) {
        if (bs_ratelimit_charge(i % 2 ? a : b, "slow-key", rate, burst, &retry) == 0)
            admitted++;
        usleep(2000);
    }
    /* the burst, plus at most one credit per replica outstanding (paid back: see below) */
    assert_true(admitted >= burst && admitted <= burst + 2);
    assert_int_equal(bs_ratelimit_charge(a, "slow-key", rate, burst, &retry), BS_ERATE);
    assert_true(retry > 1 && retry <= 100.0 + 1);
    /* the global bucket holds what was granted: nothing is left (a third replica is refused) */
    bs_ratelimit_t *c = limiter();
    int third = 0;
    for (int i = 0; i < 200; i++) {
        third += bs_ratelimit_charge(c, "slow-key", rate, burst, &retry) == 0;
        usleep(2000);
    }
    assert_true(third <= 1); /* its one credit at most */
    bs_ratelimit_free(c);
    bs_ratelimit_free(a);
    bs_ratelimit_free(b);
}

/* Redis stopped: decisions go to the per-replica buckets (counted), nothing blocks for long
 * or crashes; Redis started again: the limits are global again by themselves. */
static void test_fallback_and_recovery(void **state)
{
    (void)state;
    bs_ratelimit_t *rl = limiter();
    double retry = 0;
    bs_ratelimit_stats_t st;
    assert_int_equal(bs_ratelimit_charge(rl, "fb-warm", 100, 10, &retry), 0);
    bs_ratelimit_stats(rl, &st);
    assert_int_equal(st.shared, 1);
    assert_int_equal(st.fallback_transitions, 0);
    redis_stop();
    for (int i = 0; i < 2000 && st.shared; i++) { /* the next refill round notices */
        bs_ratelimit_charge(rl, "fb-warm", 100, 10, &retry);
        sleep_ms(5);
        bs_ratelimit_stats(rl, &st);
    }
    assert_int_equal(st.shared, 0);
    assert_int_equal(st.fallback_transitions, 1);
    /* a key new in fallback gets the local bucket: exactly its burst, then refused */
    int admitted = 0;
    for (int i = 0; i < 8; i++)
        admitted += bs_ratelimit_charge(rl, "fb-local", 0.01, 5, &retry) == 0;
    assert_int_equal(admitted, 5);
    assert_true(retry > 1);
    bs_ratelimit_stats(rl, &st);
    assert_true(st.fallback_decisions >= 8);
    assert_int_equal(st.kv.connected, 0);
    redis_start();
    for (int i = 0; i < 3000 && !st.shared; i++) {
        sleep_ms(5);
        bs_ratelimit_stats(rl, &st);
    }
    assert_int_equal(st.shared, 1);
    assert_int_equal(st.fallback_transitions, 1);
    /* global again: grants come from Redis (whose buckets restarted empty of state, i.e.
     * full) */
    uint64_t granted = st.tokens_granted;
    for (int i = 0; i < 200 && st.tokens_granted == granted; i++) {
        bs_ratelimit_charge(rl, "fb-after", 100, 10, &retry);
        sleep_ms(5);
        bs_ratelimit_stats(rl, &st);
    }
    assert_true(st.tokens_granted > granted);
    uint64_t local = st.fallback_decisions;
    for (int i = 0; i < 5; i++)
        bs_ratelimit_charge(rl, "fb-after", 100, 10, &retry);
    bs_ratelimit_stats(rl, &st);
    assert_int_equal(st.fallback_decisions, local);
    bs_ratelimit_free(rl);
}

/* A Redis that hangs (SIGSTOP: connections are accepted by the kernel, nothing is
 * answered): the refill round times out, decisions go local, and come back global after
 * SIGCONT. */
static void test_hung_redis(void **state)
{
    (void)state;
    bs_ratelimit_t *rl = limiter();
    double retry = 0;
    bs_ratelimit_stats_t st;
    bs_ratelimit_stats(rl, &st);
    assert_int_equal(st.shared, 1);
    int pid = redis_pid();
    assert_int_equal(kill(pid, SIGSTOP), 0);
    for (int i = 0; i < 2000 && st.shared; i++) {
        bs_ratelimit_charge(rl, "hung-key", 1000, 10, &retry);
        sleep_ms(2);
        bs_ratelimit_stats(rl, &st);
    }
    int shared = st.shared;
    bs_ratelimit_charge(rl, "hung-key", 1000, 10, &retry); /* decided locally now */
    bs_ratelimit_stats(rl, &st);
    assert_int_equal(kill(pid, SIGCONT), 0); /* first, so a failure leaves Redis running */
    assert_int_equal(shared, 0);
    assert_true(st.fallback_decisions > 0);
    for (int i = 0; i < 3000 && !st.shared; i++) {
        sleep_ms(5);
        bs_ratelimit_stats(rl, &st);
    }
    assert_int_equal(st.shared, 1);
    bs_ratelimit_free(rl);
}

/* A Redis that is down when the limiter starts: fallback from the start, global later. */
static void test_start_without_redis(void **state)
{
    (void)state;
    redis_stop();
    bs_ratelimit_t *rl = limiter();
    bs_ratelimit_stats_t st;
    bs_ratelimit_stats(rl, &st);
    assert_int_equal(st.shared, 0);
    double retry = 0;
    assert_int_equal(bs_ratelimit_charge(rl, "k", 10, 2, &retry), 0);
    redis_start();
    for (int i = 0; i < 3000 && !st.shared; i++) {
        sleep_ms(5);
        bs_ratelimit_stats(rl, &st);
    }
    assert_int_equal(st.shared, 1);
    bs_ratelimit_free(rl);
}

int main(void)
{
    redis_url = getenv("BASALT_TEST_REDIS_URL");
    const char *conf = getenv("BASALT_TEST_REDIS_CONF");
    if (!redis_url || !*redis_url || !conf || !*conf) {
        fprintf(stderr,
                "test_kv needs a redis-server: run it as\n"
                "  /usr/bin/python3 tests/redis_server.py -- %s\n"
                "(BASALT_TEST_REDIS_URL and BASALT_TEST_REDIS_CONF are not set)\n",
                "build/tests/test_kv");
        return 1;
    }
    snprintf(redis_conf, sizeof redis_conf, "%s", conf);
    snprintf(redis_pidfile, sizeof redis_pidfile, "%s", conf);
    char *slash = strrchr(redis_pidfile, '/');
    snprintf(slash ? slash + 1 : redis_pidfile, 16, "redis.pid");
    snprintf(prefix, sizeof prefix, "test:%d:rl:", (int)getpid());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_url),
        cmocka_unit_test(test_commands),
        cmocka_unit_test(test_pipeline),
        cmocka_unit_test(test_evalsha_noscript),
        cmocka_unit_test(test_select_and_auth),
        cmocka_unit_test(test_unix_socket),
        cmocka_unit_test(test_command_timeout),
        cmocka_unit_test(test_reconnect_after_restart),
        cmocka_unit_test(test_shared_even_split),
        cmocka_unit_test(test_shared_uneven_split),
        cmocka_unit_test(test_shared_burst_then_refused),
        cmocka_unit_test(test_fallback_and_recovery),
        cmocka_unit_test(test_hung_redis),
        cmocka_unit_test(test_start_without_redis),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
