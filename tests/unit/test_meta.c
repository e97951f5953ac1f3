/* The metadata store, the same cases on both backends: SQLite in a temporary directory,
 * and PostgreSQL at BASALT_TEST_PG_URL (a fresh database; `make unit` runs the binaries
 * under tests/pg_server.py, which starts a server). Without that variable the PostgreSQL
 * group fails: a backend that is not tested is not skipped silently.
 *
 * Cases: types, NULL and binary blobs round trip; `?` inside string literals; SQL in a
 * reused buffer (the statement cache is keyed by text); constraint
 * violations are conflicts; transactions commit and roll back; a row callback runs a
 * query (in and outside a transaction); read-modify-write transactions from threads
 * serialise (no lost update); notifications; URL redaction. PostgreSQL only: racing
 * opens of an empty database migrate once; a stopped server answers BS_EUNAVAIL without
 * hanging and the same store works again after the server restarts. */
#include "test_common.h"

#include <pthread.h>
#include <unistd.h>

#include "store/meta.h"

typedef struct {
    int pg;
    char dir[64];
    char path[256];
    bs_meta_t *m;
} fx_t;

static const char *pg_url(void) { return getenv("BASALT_TEST_PG_URL"); }

static int open_fx(void **state, int pg)
{
    fx_t *f = calloc(1, sizeof *f);
    f->pg = pg;
    if (pg) {
        if (!pg_url()) {
            fprintf(stderr, "BASALT_TEST_PG_URL is not set: run under tests/pg_server.py --\n");
            free(f);
            return -1;
        }
        snprintf(f->path, sizeof f->path, "%s", pg_url());
    } else {
        snprintf(f->dir, sizeof f->dir, "/tmp/bs-test-meta-XXXXXX");
        if (!mkdtemp(f->dir))
            return -1;
        snprintf(f->path, sizeof f->path, "%s/basalt.db", f->dir);
    }
    bs_err_t err = {0};
    f->m = bs_meta_open(f->path, &err);
    if (!f->m) {
        fprintf(stderr, "open %s: %s\n", pg ? "postgres" : f->path, err.msg);
        free(f);
        return -1;
    }
    /* a scratch table, typed per dialect */
    bs_meta_exec(f->m, "DROP TABLE IF EXISTS t", NULL, 0, NULL, &err);
    int rc = bs_meta_exec(f->m,
                          pg ? "CREATE TABLE t (k TEXT PRIMARY KEY, i BIGINT, d DOUBLE PRECISION,"
                               " s TEXT, b BYTEA)"
                             : "CREATE TABLE t (k TEXT PRIMARY KEY, i INTEGER, d REAL, s TEXT, b BLOB)",
                          NULL, 0, NULL, &err);
    if (rc) {
        fprintf(stderr, "create: %s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int setup_sqlite(void **state) { return open_fx(state, 0); }
static int setup_pg(void **state) { return open_fx(state, 1); }

static int teardown(void **state)
{
    fx_t *f = *state;
    bs_meta_close(f->m);
    if (!f->pg) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        if (system(cmd) != 0)
            return -1;
    }
    free(f);
    return 0;
}

typedef struct {
    int n;
    int64_t i;
    double d;
    char s[256];
    int s_null, i_null;
    unsigned char b[64];
    size_t blen;
} row_t;

static int grab(const bs_meta_row_t *r, void *ud)
{
    row_t *o = ud;
    o->n++;
    o->i = bs_meta_row_int(r, 0);
    o->i_null = bs_meta_row_is_null(r, 0);
    o->d = bs_meta_row_double(r, 1);
    snprintf(o->s, sizeof o->s, "%s", bs_meta_row_text(r, 2));
    o->s_null = bs_meta_row_is_null(r, 2);
    size_t n = 0;
    const void *p = bs_meta_row_blob(r, 3, &n);
    o->blen = n;
    if (n && n <= sizeof o->b)
        memcpy(o->b, p, n);
    return 0;
}

static void get_row(fx_t *f, const char *k, row_t *o)
{
    memset(o, 0, sizeof *o);
    bs_err_t err = {0};
    bs_val_t a[] = {BS_TXT(k)};
    assert_int_equal(bs_meta_query(f->m, "SELECT i, d, s, b FROM t WHERE k = ?", a, 1, grab, o, &err),
                     0);
}

static void test_types(void **state)
{
    fx_t *f = *state;
    bs_err_t err = {0};
    static const unsigned char bin[] = {0x00, 0xff, '\\', 'x', 0x27, 0x00, 0x80, '?'};
    bs_val_t a[] = {BS_TXT("a"), BS_INT(-9007199254740993LL), BS_DBL(0.1), BS_TXT("héllo 'q'"),
                    BS_BLOB(bin, sizeof bin)};
    int changes = -1;
    assert_int_equal(bs_meta_exec(f->m, "INSERT INTO t (k, i, d, s, b) VALUES (?,?,?,?,?)", a, 5,
                                  &changes, &err),
                     0);
    assert_int_equal(changes, 1);
    row_t o;
    get_row(f, "a", &o);
    assert_int_equal(o.n, 1);
    assert_true(o.i == -9007199254740993LL);
    assert_true(o.d == 0.1);
    assert_string_equal(o.s, "héllo 'q'");
    assert_int_equal(o.blen, sizeof bin);
    assert_memory_equal(o.b, bin, sizeof bin);
    /* NULLs: is_null, "" text, 0 numbers, empty blob */
    bs_val_t n[] = {BS_TXT("n"), BS_NUL, BS_NUL, BS_TXT(NULL), BS_NUL};
    assert_int_equal(bs_meta_exec(f->m, "INSERT INTO t (k, i, d, s, b) VALUES (?,?,?,?,?)", n, 5,
                                  NULL, &err),
                     0);
    get_row(f, "n", &o);
    assert_int_equal(o.n, 1);
    assert_true(o.i_null && o.s_null);
    assert_string_equal(o.s, "");
    assert_true(o.i == 0 && o.d == 0 && o.blen == 0);
    /* a text with an explicit length (not NUL-terminated at len) */
    bs_val_t l[] = {{.type = BS_VAL_TEXT, .s = "abcdef", .len = 3}, BS_TXT("l")};
    assert_int_equal(bs_meta_exec(f->m, "INSERT INTO t (s, k) VALUES (?, ?)", l, 2, NULL, &err), 0);
    get_row(f, "l", &o);
    assert_string_equal(o.s, "abc");
    /* changes of an UPDATE matching two rows; a COUNT read as an integer */
    bs_val_t u[] = {BS_INT(7)};
    assert_int_equal(bs_meta_exec(f->m, "UPDATE t SET i = ? WHERE k <> 'l'", u, 1, &changes, &err), 0);
    assert_int_equal(changes, 2);
    memset(&o, 0, sizeof o);
    assert_int_equal(bs_meta_query(f->m, "SELECT COUNT(*), 2.5, 'x', NULL FROM t", NULL, 0, grab, &o,
                                   &err),
                     0);
    assert_true(o.i == 3 && o.d == 2.5);
}

static void test_placeholders_in_literals(void **state)
{
    fx_t *f = *state;
    bs_err_t err = {0};
    bs_val_t a[] = {BS_INT(5), BS_TXT("it's")};
    row_t o = {0};
    /* the ? inside quotes are text, the bare ones parameters; `? IS NULL` with a NULL */
    assert_int_equal(bs_meta_query(f->m,
                                   "SELECT ?, 0.5, 'a?b''?' || ? || \"k\", NULL FROM t WHERE \"k\" = 'a?'"
                                   " OR 1 = 1 LIMIT 1",
                                   a, 2, grab, &o, &err),
                     0);
    assert_int_equal(o.n, 0); /* empty table */
    bs_val_t ins[] = {BS_TXT("q?")};
    assert_int_equal(bs_meta_exec(f->m, "INSERT INTO t (k, s) VALUES (?, 'x?y')", ins, 1, NULL, &err), 0);
    assert_int_equal(bs_meta_query(f->m, "SELECT ?, 0.5, 'a?b''?' || ? || k, NULL FROM t WHERE k = 'q?'",
                                   a, 2, grab, &o, &err),
                     0);
    assert_int_equal(o.n, 1);
    assert_int_equal(o.i, 5);
    assert_string_equal(o.s, "a?b'?it'sq?");
    bs_val_t nul[] = {BS_TXT(NULL), BS_TXT(NULL), BS_TXT("q?")};
    memset(&o, 0, sizeof o);
    assert_int_equal(bs_meta_query(f->m,
                                   "SELECT 1, 0, s, NULL FROM t WHERE (? IS NULL OR k = ?) AND k = ?",
                                   nul, 3, grab, &o, &err),
                     0);
    assert_int_equal(o.n, 1);
    assert_string_equal(o.s, "x?y");
}

/* Prepared statements are cached by their text, not by where it lives: one buffer holding
 * other SQL (of the same length, too) on each call runs what it holds each time, first
 * prepared and then from the cache. */
static void test_sql_in_a_reused_buffer(void **state)
{
    fx_t *f = *state;
    bs_err_t err = {0};
    char sql[64];
    bs_val_t a[] = {BS_INT(100)};
    for (int round = 0; round < 2; round++)
        for (int k = 1; k <= 3; k++) {
            snprintf(sql, sizeof sql, "SELECT ? + %d, 0.5, 'x', NULL", k);
            row_t o = {0};
            assert_int_equal(bs_meta_query(f->m, sql, a, 1, grab, &o, &err), 0);
            assert_int_equal(o.n, 1);
            assert_int_equal(o.i, 100 + k);
        }
    /* An exec through a reused buffer writes what the buffer holds now. */
    static const char *const keys[] = {"r1", "r2"};
    for (int k = 0; k < 2; k++) {
        snprintf(sql, sizeof sql, "INSERT INTO t (k, i) VALUES ('%s', ?)", keys[k]);
        bs_val_t v[] = {BS_INT(k)};
        assert_int_equal(bs_meta_exec(f->m, sql, v, 1, NULL, &err), 0);
    }
    row_t o;
    get_row(f, "r2", &o);
    assert_int_equal(o.n, 1);
    assert_int_equal(o.i, 1);
}

static void test_conflict(void **state)
{
    fx_t *f = *state;
    bs_err_t err = {0};
    bs_val_t a[] = {BS_TXT("dup")};
    assert_int_equal(bs_meta_exec(f->m, "INSERT INTO t (k) VALUES (?)", a, 1, NULL, &err), 0);
    assert_int_equal(bs_meta_exec(f->m, "INSERT INTO t (k) VALUES (?)", a, 1, NULL, &err), BS_ECONFLICT);
    /* a syntax error is not a conflict */
    assert_int_equal(bs_meta_exec(f->m, "INSERT INTO nope VALUES (1)", NULL, 0, NULL, &err), BS_EIO);
    /* ON CONFLICT DO NOTHING on both */
    int changes = -1;
    assert_int_equal(bs_meta_exec(f->m, "INSERT INTO t (k) VALUES (?) ON CONFLICT (k) DO NOTHING", a, 1,
                                  &changes, &err),
                     0);
    assert_int_equal(changes, 0);
}

static int count_rows(fx_t *f)
{
    row_t o = {0};
    bs_err_t err = {0};
    assert_int_equal(bs_meta_query(f->m, "SELECT COUNT(*), 0, '', NULL FROM t", NULL, 0, grab, &o, &err), 0);
    return (int)o.i;
}

static void test_transactions(void **state)
{
    fx_t *f = *state;
    bs_err_t err = {0};
    bs_val_t a[] = {BS_TXT("r")}, b[] = {BS_TXT("c")};
    assert_int_equal(bs_meta_tx_begin(f->m, &err), 0);
    assert_int_equal(bs_meta_exec(f->m, "INSERT INTO t (k) VALUES (?)", a, 1, NULL, &err), 0);
    assert_int_equal(count_rows(f), 1); /* visible inside */
    bs_meta_tx_rollback(f->m);
    assert_int_equal(count_rows(f), 0);
    assert_int_equal(bs_meta_tx_begin(f->m, &err), 0);
    assert_int_equal(bs_meta_exec(f->m, "INSERT INTO t (k) VALUES (?)", b, 1, NULL, &err), 0);
    assert_int_equal(bs_meta_tx_commit(f->m, &err), 0);
    assert_int_equal(count_rows(f), 1);
    /* a conflict inside a transaction, then rollback: nothing of it stays */
    assert_int_equal(bs_meta_tx_begin(f->m, &err), 0);
    assert_int_equal(bs_meta_exec(f->m, "INSERT INTO t (k) VALUES (?)", a, 1, NULL, &err), 0);
    assert_int_equal(bs_meta_exec(f->m, "INSERT INTO t (k) VALUES (?)", b, 1, NULL, &err), BS_ECONFLICT);
    bs_meta_tx_rollback(f->m);
    assert_int_equal(count_rows(f), 1);
}

typedef struct {
    fx_t *f;
    int outer, inner_total;
} nest_t;

static int inner_cb(const bs_meta_row_t *r, void *ud)
{
    ((nest_t *)ud)->inner_total += (int)bs_meta_row_int(r, 0);
    return 0;
}

static int outer_cb(const bs_meta_row_t *r, void *ud)
{
    nest_t *n = ud;
    n->outer++;
    bs_err_t err = {0};
    bs_val_t a[] = {BS_TXT(bs_meta_row_text(r, 0))};
    assert_int_equal(bs_meta_query(n->f->m, "SELECT i FROM t WHERE k = ?", a, 1, inner_cb, n, &err), 0);
    return 0;
}

static void test_nested_query(void **state)
{
    fx_t *f = *state;
    bs_err_t err = {0};
    for (int i = 1; i <= 3; i++) {
        char k[8];
        snprintf(k, sizeof k, "k%d", i);
        bs_val_t a[] = {BS_TXT(k), BS_INT(i)};
        assert_int_equal(bs_meta_exec(f->m, "INSERT INTO t (k, i) VALUES (?, ?)", a, 2, NULL, &err), 0);
    }
    nest_t n = {.f = f};
    assert_int_equal(bs_meta_query(f->m, "SELECT k FROM t ORDER BY k", NULL, 0, outer_cb, &n, &err), 0);
    assert_int_equal(n.outer, 3);
    assert_int_equal(n.inner_total, 6);
    /* inside a transaction the nested query sees the transaction's own write */
    assert_int_equal(bs_meta_tx_begin(f->m, &err), 0);
    bs_val_t a[] = {BS_TXT("k4"), BS_INT(4)};
    assert_int_equal(bs_meta_exec(f->m, "INSERT INTO t (k, i) VALUES (?, ?)", a, 2, NULL, &err), 0);
    n = (nest_t){.f = f};
    assert_int_equal(bs_meta_query(f->m, "SELECT k FROM t ORDER BY k", NULL, 0, outer_cb, &n, &err), 0);
    assert_int_equal(n.inner_total, 10);
    bs_meta_tx_rollback(f->m);
    /* text order is byte order on both (PostgreSQL columns are COLLATE "C") */
    bs_val_t up[] = {BS_TXT("B"), BS_TXT("a")};
    assert_int_equal(bs_meta_exec(f->m, "INSERT INTO t (k) VALUES (?), (?)", up, 2, NULL, &err), 0);
    row_t o = {0};
    assert_int_equal(bs_meta_query(f->m, "SELECT 0, 0, k, NULL FROM t ORDER BY k LIMIT 1", NULL, 0, grab, &o,
                                   &err),
                     0);
    assert_string_equal(o.s, "B");
}

#define THREADS 4
#define ROUNDS 25

static int read_i(const bs_meta_row_t *r, void *ud)
{
    *(int64_t *)ud = bs_meta_row_int(r, 0);
    return 0;
}

static void *increment(void *arg)
{
    fx_t *f = arg;
    for (int i = 0; i < ROUNDS; i++) {
        bs_err_t err = {0};
        if (bs_meta_tx_begin(f->m, &err))
            return "begin";
        int64_t v = -1;
        if (bs_meta_query(f->m, "SELECT i FROM t WHERE k = 'ctr'", NULL, 0, read_i, &v, &err)) {
            bs_meta_tx_rollback(f->m);
            return "read";
        }
        usleep(200); /* widen the window a lost update would need */
        bs_val_t a[] = {BS_INT(v + 1)};
        if (bs_meta_exec(f->m, "UPDATE t SET i = ? WHERE k = 'ctr'", a, 1, NULL, &err)) {
            bs_meta_tx_rollback(f->m);
            return "write";
        }
        if (bs_meta_tx_commit(f->m, &err))
            return "commit";
    }
    return NULL;
}

static void test_transactions_serialise(void **state)
{
    fx_t *f = *state;
    bs_err_t err = {0};
    assert_int_equal(bs_meta_exec(f->m, "INSERT INTO t (k, i) VALUES ('ctr', 0)", NULL, 0, NULL, &err), 0);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, increment, f);
    for (int i = 0; i < THREADS; i++) {
        void *res;
        pthread_join(th[i], &res);
        assert_null(res);
    }
    int64_t v = -1;
    assert_int_equal(bs_meta_query(f->m, "SELECT i FROM t WHERE k = 'ctr'", NULL, 0, read_i, &v, &err), 0);
    assert_int_equal(v, THREADS * ROUNDS);
}

/* A second store on the same database: on PostgreSQL, another replica. Transactions of
 * two stores serialise too (the advisory lock is the database's, not the process's). */
static void test_two_stores_serialise(void **state)
{
    fx_t *f = *state;
    if (!f->pg)
        return; /* SQLite: one process per data directory (the lock file) */
    bs_err_t err = {0};
    fx_t g = *f;
    g.m = bs_meta_open(f->path, &err);
    assert_non_null(g.m);
    assert_int_equal(bs_meta_exec(f->m, "INSERT INTO t (k, i) VALUES ('ctr', 0)", NULL, 0, NULL, &err), 0);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, increment, i % 2 ? f : &g);
    for (int i = 0; i < THREADS; i++) {
        void *res;
        pthread_join(th[i], &res);
        assert_null(res);
    }
    int64_t v = -1;
    assert_int_equal(bs_meta_query(g.m, "SELECT i FROM t WHERE k = 'ctr'", NULL, 0, read_i, &v, &err), 0);
    assert_int_equal(v, THREADS * ROUNDS);
    bs_meta_close(g.m);
}

typedef struct {
    int n;
    char last[64];
} notes_t;

static void on_note(const char *channel, const char *payload, void *ud)
{
    notes_t *n = ud;
    n->n++;
    snprintf(n->last, sizeof n->last, "%s:%s", channel, payload);
}

static void test_notify(void **state)
{
    fx_t *f = *state;
    bs_err_t err = {0};
    notes_t n = {0};
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    if (!f->pg) {
        assert_int_equal(bs_meta_notify(f->m, "bs_test", "x", &err), 0);
        assert_int_equal(write(fds[1], "w", 1), 1);
        assert_int_equal(bs_meta_listen(f->m, "bs_test", fds[0], 10000, on_note, &n, &err), 0);
        assert_int_equal(n.n, 0);
    } else {
        /* first call subscribes */
        assert_int_equal(bs_meta_listen(f->m, "bs_test", -1, 0, on_note, &n, &err), 0);
        assert_int_equal(bs_meta_tx_begin(f->m, &err), 0);
        assert_int_equal(bs_meta_notify(f->m, "bs_test", "in-tx", &err), 0);
        assert_int_equal(bs_meta_listen(f->m, "bs_test", -1, 50, on_note, &n, &err), 0);
        assert_int_equal(n.n, 0); /* not before commit */
        assert_int_equal(bs_meta_tx_commit(f->m, &err), 0);
        for (int i = 0; i < 50 && !n.n; i++)
            assert_int_equal(bs_meta_listen(f->m, "bs_test", -1, 100, on_note, &n, &err), 0);
        assert_int_equal(n.n, 1);
        assert_string_equal(n.last, "bs_test:in-tx");
        /* the wake fd ends a wait */
        assert_int_equal(write(fds[1], "w", 1), 1);
        assert_int_equal(bs_meta_listen(f->m, "bs_test", fds[0], 60000, on_note, &n, &err), 0);
        assert_int_equal(n.n, 1);
    }
    close(fds[0]);
    close(fds[1]);
    bs_meta_stats_t st;
    bs_meta_stats(f->m, &st);
    assert_true(st.pool_size >= 1);
    assert_int_equal(st.in_use, 0);
    assert_string_equal(bs_meta_backend(f->m), f->pg ? "postgresql" : "sqlite");
    assert_int_equal(bs_meta_dialect(f->m), f->pg ? BS_META_POSTGRES : BS_META_SQLITE);
}

static void test_redact(void **state)
{
    (void)state;
    char out[256];
    bs_meta_redact("postgres://basalt:s3cret@db:5432/basalt?sslmode=require", out, sizeof out);
    assert_string_equal(out, "postgres://basalt:***@db:5432/basalt?sslmode=require");
    bs_meta_redact("postgresql://db/basalt?user=u&password=p@ss&x=1", out, sizeof out);
    assert_string_equal(out, "postgresql://db/basalt?user=u&password=***&x=1");
    bs_meta_redact("postgresql://u@db/b", out, sizeof out);
    assert_string_equal(out, "postgresql://u@db/b");
    bs_meta_redact("/data/basalt.db", out, sizeof out);
    assert_string_equal(out, "/data/basalt.db");
    assert_true(bs_meta_is_url("postgres://x") && bs_meta_is_url("postgresql://x"));
    assert_false(bs_meta_is_url("/tmp/postgres://x"));
}

/* ---- PostgreSQL only ---- */

typedef struct {
    const char *url;
    bs_meta_t *m;
    char msg[256];
} opener_t;

static void *open_one(void *arg)
{
    opener_t *o = arg;
    bs_err_t err = {0};
    o->m = bs_meta_open(o->url, &err);
    snprintf(o->msg, sizeof o->msg, "%s", err.msg);
    return NULL;
}

static void test_pg_racing_migrations(void **state)
{
    (void)state;
    const char *url = getenv("BASALT_TEST_PG_URL2");
    assert_non_null(url); /* an empty database from tests/pg_server.py */
    opener_t o[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        o[i] = (opener_t){.url = url};
        pthread_create(&th[i], NULL, open_one, &o[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    int versions = 0;
    for (int i = 0; i < THREADS; i++) {
        if (!o[i].m)
            fail_msg("open %d: %s", i, o[i].msg);
        versions = bs_meta_schema_version(o[i].m);
        assert_true(versions > 0);
    }
    /* each migration recorded once, and every store at the same version */
    int64_t n = -1, distinct = -1;
    bs_err_t err = {0};
    assert_int_equal(bs_meta_query(o[0].m, "SELECT COUNT(*) FROM schema_migrations", NULL, 0, read_i, &n, &err),
                     0);
    assert_int_equal(bs_meta_query(o[0].m, "SELECT COUNT(DISTINCT version) FROM schema_migrations", NULL, 0,
                                   read_i, &distinct, &err),
                     0);
    assert_int_equal(n, versions);
    assert_int_equal(distinct, versions);
    for (int i = 0; i < THREADS; i++)
        bs_meta_close(o[i].m);
    /* a schema newer than the binary is refused with SQLite's message */
    bs_meta_t *m = bs_meta_open(url, &err);
    assert_non_null(m);
    bs_val_t v[] = {BS_INT(versions + 1)};
    assert_int_equal(bs_meta_exec(m, "INSERT INTO schema_migrations VALUES (?, 0)", v, 1, NULL, &err), 0);
    bs_meta_close(m);
    assert_null(bs_meta_open(url, &err));
    assert_non_null(strstr(err.msg, "newer than this binary's"));
}

static void test_pg_outage(void **state)
{
    fx_t *f = *state;
    const char *stop = getenv("BASALT_TEST_PG_STOP"), *start = getenv("BASALT_TEST_PG_START");
    assert_non_null(stop);
    assert_non_null(start);
    bs_err_t err = {0};
    /* two connections in the pool, both used before the outage */
    nest_t n = {.f = f};
    assert_int_equal(bs_meta_exec(f->m, "INSERT INTO t (k, i) VALUES ('o', 1)", NULL, 0, NULL, &err), 0);
    assert_int_equal(bs_meta_query(f->m, "SELECT k FROM t", NULL, 0, outer_cb, &n, &err), 0);
    notes_t nt = {0};
    assert_int_equal(bs_meta_listen(f->m, "bs_test", -1, 0, on_note, &nt, &err), 0); /* subscribed */
    assert_int_equal(system(stop), 0);
    assert_int_equal(bs_meta_exec(f->m, "INSERT INTO t (k) VALUES ('down')", NULL, 0, NULL, &err),
                     BS_EUNAVAIL);
    assert_int_equal(bs_meta_query(f->m, "SELECT k FROM t", NULL, 0, outer_cb, &n, &err), BS_EUNAVAIL);
    assert_int_equal(bs_meta_tx_begin(f->m, &err), BS_EUNAVAIL);
    /* the LISTEN connection sees its server go (within the wait), and stays failed */
    int lrc = 0;
    for (int i = 0; i < 50 && lrc == 0; i++)
        lrc = bs_meta_listen(f->m, "bs_test", -1, 100, on_note, &nt, &err);
    assert_int_equal(lrc, BS_EUNAVAIL);
    assert_int_equal(bs_meta_listen(f->m, "bs_test", -1, 10, on_note, &nt, &err), BS_EUNAVAIL);
    bs_meta_stats_t st;
    bs_meta_stats(f->m, &st);
    assert_true(st.unavailable >= 3);
    assert_int_equal(st.in_use, 0);
    assert_int_equal(st.down, 1);
    assert_int_equal(system(start), 0);
    /* down clears by itself (the probe thread connects), with no statement run */
    for (int i = 0; i < 3000 && st.down; i++) {
        usleep(10000);
        bs_meta_stats(f->m, &st);
    }
    assert_int_equal(st.down, 0);
    /* the same store works again: stale connections are replaced, not failed on */
    assert_int_equal(bs_meta_exec(f->m, "INSERT INTO t (k) VALUES ('up')", NULL, 0, NULL, &err), 0);
    bs_meta_stats(f->m, &st);
    assert_int_equal(st.down, 0);
    assert_int_equal(count_rows(f), 2);
    assert_int_equal(bs_meta_tx_begin(f->m, &err), 0);
    assert_int_equal(bs_meta_exec(f->m, "INSERT INTO t (k) VALUES ('tx')", NULL, 0, NULL, &err), 0);
    assert_int_equal(bs_meta_tx_commit(f->m, &err), 0);
    assert_int_equal(count_rows(f), 3);
    /* listening again after the restart (a new LISTEN connection) gets notifications */
    assert_int_equal(bs_meta_listen(f->m, "bs_test", -1, 0, on_note, &nt, &err), 0);
    assert_int_equal(bs_meta_notify(f->m, "bs_test", "back", &err), 0);
    for (int i = 0; i < 50 && !nt.n; i++)
        assert_int_equal(bs_meta_listen(f->m, "bs_test", -1, 100, on_note, &nt, &err), 0);
    assert_int_equal(nt.n, 1);
    assert_string_equal(nt.last, "bs_test:back");
}

typedef struct {
    bs_meta_t *m;
    int done;
    int rc;
} waiter_t;

static void *query_one(void *arg)
{
    waiter_t *w = arg;
    bs_err_t err = {0};
    int64_t v = -1;
    w->rc = bs_meta_query(w->m, "SELECT 1", NULL, 0, read_i, &v, &err);
    __atomic_store_n(&w->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

/* A pool of one: while a transaction pins the connection, another thread's statement
 * waits for it (counted), and runs once the transaction ends. */
static void test_pg_pool_wait(void **state)
{
    (void)state;
    bs_err_t err = {0};
    bs_meta_opts_t o = {.pool_size = 1, .application_name = "test-pool"};
    bs_meta_t *m = bs_meta_open_ex(pg_url(), &o, &err);
    assert_non_null(m);
    bs_meta_stats_t st;
    bs_meta_stats(m, &st);
    assert_int_equal(st.pool_size, 1);
    assert_int_equal(bs_meta_tx_begin(m, &err), 0);
    bs_meta_stats(m, &st);
    assert_int_equal(st.in_use, 1);
    waiter_t w = {.m = m};
    pthread_t th;
    pthread_create(&th, NULL, query_one, &w);
    for (int i = 0; i < 5000; i++) { /* until the other thread is seen waiting */
        bs_meta_stats(m, &st);
        if (st.waits >= 1)
            break;
        usleep(2000);
    }
    assert_true(st.waits >= 1);
    assert_int_equal(__atomic_load_n(&w.done, __ATOMIC_SEQ_CST), 0);
    assert_int_equal(bs_meta_tx_commit(m, &err), 0);
    pthread_join(th, NULL);
    assert_int_equal(w.rc, 0);
    bs_meta_stats(m, &st);
    assert_int_equal(st.in_use, 0);
    assert_int_equal(st.open, 1);
    bs_meta_close(m);
}

#define CASES(setup)                                                                               \
    cmocka_unit_test_setup_teardown(test_types, setup, teardown),                                  \
        cmocka_unit_test_setup_teardown(test_placeholders_in_literals, setup, teardown),           \
        cmocka_unit_test_setup_teardown(test_sql_in_a_reused_buffer, setup, teardown),             \
        cmocka_unit_test_setup_teardown(test_conflict, setup, teardown),                           \
        cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),                       \
        cmocka_unit_test_setup_teardown(test_nested_query, setup, teardown),                       \
        cmocka_unit_test_setup_teardown(test_transactions_serialise, setup, teardown),             \
        cmocka_unit_test_setup_teardown(test_two_stores_serialise, setup, teardown),               \
        cmocka_unit_test_setup_teardown(test_notify, setup, teardown)

int main(void)
{
    const struct CMUnitTest sqlite_tests[] = {CASES(setup_sqlite), cmocka_unit_test(test_redact)};
    const struct CMUnitTest pg_tests[] = {
        CASES(setup_pg),
        cmocka_unit_test(test_pg_racing_migrations),
        cmocka_unit_test(test_pg_pool_wait),
        cmocka_unit_test_setup_teardown(test_pg_outage, setup_pg, teardown),
    };
    int failed = cmocka_run_group_tests_name("meta_sqlite", sqlite_tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("meta_postgresql", pg_tests, NULL, NULL);
    return failed ? 1 : 0;
}
