/*
 * SQLite backend of the metadata store (see meta.h; meta.c dispatches here). One connection,
 * WAL journal, synchronous=NORMAL, foreign keys on, a busy timeout; prepared
 * statements are cached per SQL text (sqlite3_prepare_v3 with PERSISTENT) so
 * repeated queries skip the parser. All access is serialised by `lock`.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/meta.h"
#include "store/meta_int.h"

/* Statements are cached by their SQL text (a copy is the key: a caller's buffer may hold
 * another statement on the next call), first come first served; one that finds the cache
 * full is prepared at every call. The whole program has ~120 distinct statements (the job
 * runtime ~25, some hot: insert, claim, final update). */
#define STMT_CACHE 192

typedef struct sq_store {
    sqlite3 *db;
    pthread_mutex_t lock;
    int version;
    struct {
        char *sql; /* the statement's text (owned copy) */
        size_t len;
        sqlite3_stmt *stmt;
    } cache[STMT_CACHE];
    int n_cache;
} sq_t;

static int row_is_null(const bs_meta_row_t *r, int col)
{
    return sqlite3_column_type(r->p, col) == SQLITE_NULL;
}
static int64_t row_int(const bs_meta_row_t *r, int col) { return sqlite3_column_int64(r->p, col); }
static double row_double(const bs_meta_row_t *r, int col)
{
    return sqlite3_column_double(r->p, col);
}
static const char *row_text(const bs_meta_row_t *r, int col)
{
    const unsigned char *t = sqlite3_column_text(r->p, col);
    return t ? (const char *)t : "";
}
static const void *row_blob(const bs_meta_row_t *r, int col, size_t *len)
{
    *len = (size_t)sqlite3_column_bytes(r->p, col);
    return sqlite3_column_blob(r->p, col);
}

static int db_err(sq_t *m, bs_err_t *err, const char *what)
{
    int code = sqlite3_extended_errcode(m->db);
    if ((code & 0xff) == SQLITE_CONSTRAINT)
        return bs_err_set(err, BS_ECONFLICT, "%s: %s", what, sqlite3_errmsg(m->db));
    return bs_err_set(err, BS_EIO, "%s: %s", what, sqlite3_errmsg(m->db));
}

static int run_script(sq_t *m, const char *sql, bs_err_t *err)
{
    char *msg = NULL;
    if (sqlite3_exec(m->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        bs_err_set(err, BS_EIO, "metadata store: %s", msg ? msg : "error");
        sqlite3_free(msg);
        return BS_EIO;
    }
    return 0;
}

static int migrate(sq_t *m, bs_err_t *err)
{
    int rc = run_script(m, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                           " version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
                        err);
    if (rc)
        return rc;
    sqlite3_stmt *st;
    sqlite3_prepare_v2(m->db, "SELECT COALESCE(MAX(version),0) FROM schema_migrations", -1, &st,
                       NULL);
    int have = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_finalize(st);
    int n = 0;
    while (bs__meta_migrations[n].sql)
        n++;
    if (have > n)
        return bs_err_set(err, BS_EIO,
                          "data directory has schema version %d, newer than this binary's %d",
                          have, n);
    for (int v = have + 1; v <= n; v++) {
        char record[128];
        snprintf(record, sizeof record,
                 "INSERT INTO schema_migrations VALUES (%d, CAST(strftime('%%s','now') AS INTEGER));",
                 v);
        if ((rc = run_script(m, "BEGIN IMMEDIATE", err)))
            return rc;
        if ((rc = run_script(m, bs__meta_migrations[v - 1].sql, err)) ||
            (rc = run_script(m, record, err))) {
            run_script(m, "ROLLBACK", NULL);
            return rc;
        }
        if ((rc = run_script(m, "COMMIT", err)))
            return rc;
    }
    m->version = n;
    return 0;
}

static void sq_close(void *impl);

void *bs__meta_sqlite_open(const char *path, bs_err_t *err)
{
    sq_t *m = calloc(1, sizeof *m);
    if (!m) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    /* Recursive: a row callback may run another query (rendering nested resources), and
     * statements inside a transaction re-enter the lock its begin took. */
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&m->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    if (sqlite3_open_v2(path, &m->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        bs_err_set(err, BS_EIO, "cannot open metadata store %s: %s", path,
                   m->db ? sqlite3_errmsg(m->db) : "out of memory");
        sq_close(m);
        return NULL;
    }
    sqlite3_busy_timeout(m->db, 5000);
    if (run_script(m, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
                   err) ||
        migrate(m, err)) {
        sq_close(m);
        return NULL;
    }
    return m;
}

static void sq_close(void *impl)
{
    sq_t *m = impl;
    if (!m)
        return;
    for (int i = 0; i < m->n_cache; i++) {
        sqlite3_finalize(m->cache[i].stmt);
        free(m->cache[i].sql);
    }
    if (m->db)
        sqlite3_close(m->db);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* Must hold lock. Returns a reset statement with args bound, or NULL. */
static sqlite3_stmt *prepare(sq_t *m, const char *sql, const bs_val_t *args, int nargs,
                             int *cached, bs_err_t *err)
{
    sqlite3_stmt *st = NULL;
    *cached = 0;
    size_t len = strlen(sql);
    int known = 0; /* cached, but busy (a query running it calls back here) */
    for (int i = 0; i < m->n_cache && !st; i++) {
        if (m->cache[i].len != len || memcmp(m->cache[i].sql, sql, len) != 0)
            continue;
        known = 1;
        if (!sqlite3_stmt_busy(m->cache[i].stmt)) {
            st = m->cache[i].stmt;
            *cached = 1;
        }
    }
    if (!st) {
        if (sqlite3_prepare_v3(m->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
            db_err(m, err, "prepare");
            return NULL;
        }
        char *copy = !known && m->n_cache < STMT_CACHE ? malloc(len + 1) : NULL;
        if (copy) {
            memcpy(copy, sql, len + 1);
            m->cache[m->n_cache].sql = copy;
            m->cache[m->n_cache].len = len;
            m->cache[m->n_cache].stmt = st;
            m->n_cache++;
            *cached = 1;
        }
    }
    for (int i = 0; i < nargs; i++) {
        const bs_val_t *v = &args[i];
        int rc;
        switch (v->type) {
        case BS_VAL_INT: rc = sqlite3_bind_int64(st, i + 1, v->i); break;
        case BS_VAL_DOUBLE: rc = sqlite3_bind_double(st, i + 1, v->d); break;
        case BS_VAL_TEXT:
            rc = sqlite3_bind_text(st, i + 1, v->s, v->len == SIZE_MAX ? -1 : (int)v->len,
                                   SQLITE_STATIC);
            break;
        case BS_VAL_BLOB: rc = sqlite3_bind_blob64(st, i + 1, v->s, v->len, SQLITE_STATIC); break;
        default: rc = sqlite3_bind_null(st, i + 1);
        }
        if (rc != SQLITE_OK) {
            db_err(m, err, "bind");
            if (*cached) {
                sqlite3_reset(st);
                sqlite3_clear_bindings(st);
            } else {
                sqlite3_finalize(st);
            }
            return NULL;
        }
    }
    return st;
}

static void release(sqlite3_stmt *st, int cached)
{
    if (cached) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    } else {
        sqlite3_finalize(st);
    }
}

static void enter(sq_t *m) { pthread_mutex_lock(&m->lock); }
static void leave(sq_t *m) { pthread_mutex_unlock(&m->lock); }

static int sq_exec(void *impl, const char *sql, const bs_val_t *args, int nargs, int *changes,
                 bs_err_t *err)
{
    sq_t *m = impl;
    enter(m);
    int cached, rc = 0;
    sqlite3_stmt *st = prepare(m, sql, args, nargs, &cached, err);
    if (!st) {
        rc = err ? err->code : BS_EIO;
        if (!rc)
            rc = BS_EIO;
    } else {
        int s;
        while ((s = sqlite3_step(st)) == SQLITE_ROW)
            ;
        if (s != SQLITE_DONE)
            rc = db_err(m, err, "exec");
        else if (changes)
            *changes = sqlite3_changes(m->db);
        release(st, cached);
    }
    leave(m);
    return rc;
}

static int sq_query(void *impl, const char *sql, const bs_val_t *args, int nargs,
                    bs_meta_row_cb cb, void *ud, bs_err_t *err)
{
    sq_t *m = impl;
    enter(m);
    int cached, rc = 0;
    sqlite3_stmt *st = prepare(m, sql, args, nargs, &cached, err);
    if (!st) {
        rc = BS_EIO;
    } else {
        bs_meta_row_t row = {.ops = &bs__meta_sqlite_ops, .p = st};
        int s;
        while ((s = sqlite3_step(st)) == SQLITE_ROW) {
            if (cb(&row, ud))
                break;
        }
        if (s != SQLITE_ROW && s != SQLITE_DONE)
            rc = db_err(m, err, "query");
        release(st, cached);
    }
    leave(m);
    return rc;
}

static int sq_tx_begin(void *impl, bs_err_t *err)
{
    sq_t *m = impl;
    pthread_mutex_lock(&m->lock);
    int rc = run_script(m, "BEGIN IMMEDIATE", err);
    if (rc)
        pthread_mutex_unlock(&m->lock);
    return rc;
}

static int sq_tx_commit(void *impl, bs_err_t *err)
{
    sq_t *m = impl;
    int rc = run_script(m, "COMMIT", err);
    if (rc)
        run_script(m, "ROLLBACK", NULL);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static void sq_tx_rollback(void *impl)
{
    sq_t *m = impl;
    run_script(m, "ROLLBACK", NULL);
    pthread_mutex_unlock(&m->lock);
}

static int sq_schema_version(void *impl) { return ((sq_t *)impl)->version; }
static int sq_ready(void *impl)
{
    sq_t *m = impl;
    return m && m->db && m->version > 0;
}
static void sq_stats(void *impl, bs_meta_stats_t *out)
{
    (void)impl;
    out->pool_size = out->open = 1;
}

const bs_meta_ops_t bs__meta_sqlite_ops = {
    .name = "sqlite",
    .dialect = BS_META_SQLITE,
    .close = sq_close,
    .exec = sq_exec,
    .query = sq_query,
    .tx_begin = sq_tx_begin,
    .tx_commit = sq_tx_commit,
    .tx_rollback = sq_tx_rollback,
    .schema_version = sq_schema_version,
    .ready = sq_ready,
    .stats = sq_stats,
    .row_is_null = row_is_null,
    .row_int = row_int,
    .row_double = row_double,
    .row_text = row_text,
    .row_blob = row_blob,
};
