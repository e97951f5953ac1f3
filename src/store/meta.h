/*
 * The metadata store: a small relational interface (statements with bound
 * values, row callbacks, transactions, numbered forward-only migrations) with
 * two backends behind it: SQLite in WAL mode (embedded, the default; a file
 * path) and PostgreSQL on libpq (a `postgres://` or `postgresql://` URL; see
 * meta_pg.c). No SQLite or libpq type appears here. SQL uses `?` placeholders
 * and the portable subset both engines share (docs/architecture.md).
 *
 * Thread safety, SQLite: one connection guarded by a mutex; every call is
 * atomic. A transaction (bs_meta_tx_begin … commit/rollback) holds the mutex
 * from begin to end, so keep it short and never span I/O waits. Writes use
 * synchronous=NORMAL in WAL mode: a committed write survives a process kill
 * (the WAL is in the OS page cache), and the I/O thread never fsyncs.
 *
 * PostgreSQL: a pool of connections; a statement outside a transaction takes
 * any free one; a transaction pins one to the calling thread until commit or
 * rollback and takes a cluster-wide write lock, so write transactions of all
 * replicas serialise as SQLite's BEGIN IMMEDIATE does. Every call makes
 * network round trips: never call it on an I/O thread.
 */
#ifndef BS_STORE_META_H
#define BS_STORE_META_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef struct bs_meta bs_meta_t;

typedef enum { BS_META_SQLITE = 1, BS_META_POSTGRES = 2 } bs_meta_dialect_t;

/* Options of bs_meta_open_ex; zero fields take the defaults. */
typedef struct {
    int pool_size;                /* PostgreSQL connections (default 8) */
    const char *application_name; /* PostgreSQL application_name (e.g. the replica id) */
} bs_meta_opts_t;

/* Pool and error counters (all zero for SQLite but pool_size = 1). */
typedef struct {
    int pool_size;    /* connections the pool may open */
    int open;         /* connections currently open */
    int in_use;       /* connections handed out right now */
    uint64_t waits;   /* times a caller waited for a free connection */
    uint64_t errors;  /* failed statements (any cause) */
    uint64_t unavailable; /* of those, lost or refused connections */
    int down;             /* 1 since a lost or refused connection, until one is made again
                             (no probe of its own: it follows the store's use) */
} bs_meta_stats_t;

typedef enum { BS_VAL_NULL = 0, BS_VAL_INT, BS_VAL_DOUBLE, BS_VAL_TEXT, BS_VAL_BLOB } bs_val_type_t;

/* A bound value; text and blobs are borrowed for the duration of the call. */
typedef struct {
    bs_val_type_t type;
    int64_t i;
    double d;
    const char *s;
    size_t len; /* text/blob length; for text, SIZE_MAX means NUL-terminated */
} bs_val_t;

#define BS_INT(v) ((bs_val_t){.type = BS_VAL_INT, .i = (v)})
#define BS_DBL(v) ((bs_val_t){.type = BS_VAL_DOUBLE, .d = (v)})
#define BS_TXT(v) bs_val_text(v)

/* Text value, or NULL value for a NULL pointer. */
static inline bs_val_t bs_val_text(const char *s)
{
    bs_val_t v = {.type = s ? BS_VAL_TEXT : BS_VAL_NULL, .s = s, .len = SIZE_MAX};
    return v;
}
#define BS_BLOB(p, n) ((bs_val_t){.type = BS_VAL_BLOB, .s = (const char *)(p), .len = (n)})
#define BS_NUL ((bs_val_t){.type = BS_VAL_NULL})

typedef struct bs_meta_row bs_meta_row_t;

/* Row accessors: column index from 0. Text is borrowed until the callback returns. */
int bs_meta_row_is_null(const bs_meta_row_t *r, int col);
int64_t bs_meta_row_int(const bs_meta_row_t *r, int col);
double bs_meta_row_double(const bs_meta_row_t *r, int col);
const char *bs_meta_row_text(const bs_meta_row_t *r, int col); /* "" for NULL */
const void *bs_meta_row_blob(const bs_meta_row_t *r, int col, size_t *len);

/* Called per row; return nonzero to stop early (that value is not an error). */
typedef int (*bs_meta_row_cb)(const bs_meta_row_t *row, void *ud);

/* Opens (creating) the store at path and applies pending migrations. A path starting
 * with postgres:// or postgresql:// is a libpq URL and opens the PostgreSQL backend
 * (migrations under an advisory lock, so replicas starting together migrate once).
 * Returns NULL with err set on failure: BS_EUNAVAIL when PostgreSQL is unreachable,
 * BS_EIO otherwise. */
bs_meta_t *bs_meta_open(const char *path, bs_err_t *err);
bs_meta_t *bs_meta_open_ex(const char *path, const bs_meta_opts_t *opts, bs_err_t *err);
/* 1 when path names the PostgreSQL backend. */
int bs_meta_is_url(const char *path);
/* Copies path_or_url to out (size n) with any password replaced by "***": the form to
 * print in logs, errors and /v1/info. */
void bs_meta_redact(const char *path_or_url, char *out, size_t n);
void bs_meta_close(bs_meta_t *m);

/* Runs one statement. Returns 0, BS_ECONFLICT on a constraint (uniqueness) violation,
 * BS_EUNAVAIL when PostgreSQL is unreachable, BS_EIO on other failures. changes
 * (optional) receives the rows affected.
 *
 * sql is borrowed for the call. Both backends keep the statement prepared, keyed by its
 * text (a copy, so a buffer that holds other SQL on the next call is fine): SQLite up to
 * 192 statements per store, PostgreSQL 96 per connection; past that a statement is prepared
 * at every call. So the SQL text is a fixed set per call site: one literal per variant,
 * values always as `?` args, never formatted into the text (which would also be an
 * injection). The same rules hold for bs_meta_query. */
int bs_meta_exec(bs_meta_t *m, const char *sql, const bs_val_t *args, int nargs, int *changes,
                 bs_err_t *err);
/* Runs a query, calling cb per row. Returns 0 or an error as bs_meta_exec. A callback
 * may run further statements on the same store. */
int bs_meta_query(bs_meta_t *m, const char *sql, const bs_val_t *args, int nargs,
                  bs_meta_row_cb cb, void *ud, bs_err_t *err);

/* Transactions: begin takes the store's lock until commit/rollback. Nested begins on one
 * thread are flattened (see meta.c): only the outermost commit commits. */
int bs_meta_tx_begin(bs_meta_t *m, bs_err_t *err);
int bs_meta_tx_commit(bs_meta_t *m, bs_err_t *err);
void bs_meta_tx_rollback(bs_meta_t *m);

/* Highest applied migration number. */
int bs_meta_schema_version(bs_meta_t *m);
/* 1 if open and migrated. */
int bs_meta_ready(bs_meta_t *m);
/* Name of the backend: "sqlite" or "postgresql". */
const char *bs_meta_backend(const bs_meta_t *m);
/* The SQL dialect, for the few statements that differ (e.g. FOR UPDATE SKIP LOCKED). */
bs_meta_dialect_t bs_meta_dialect(const bs_meta_t *m);

/* Notifications. notify: PostgreSQL pg_notify on the current connection (inside a
 * transaction it is delivered at commit); SQLite: no-op returning 0. */
int bs_meta_notify(bs_meta_t *m, const char *channel, const char *payload, bs_err_t *err);
typedef void (*bs_meta_notify_cb)(const char *channel, const char *payload, void *ud);
/* Waits up to timeout_ms for notifications on channel (PostgreSQL: a dedicated LISTEN
 * connection, reconnected as needed) or for wake_fd (-1: none) to become readable; calls
 * cb per notification received. Returns 0, or BS_EUNAVAIL when the server is unreachable
 * (after waiting the timeout). SQLite: waits on wake_fd only and returns 0. Meant for one
 * listening thread per store. */
int bs_meta_listen(bs_meta_t *m, const char *channel, int wake_fd, int timeout_ms,
                   bs_meta_notify_cb cb, void *ud, bs_err_t *err);
void bs_meta_stats(bs_meta_t *m, bs_meta_stats_t *out);


#endif
