/* Private to src/store: the migration list and the backend dispatch table. */
#ifndef BS_STORE_META_INT_H
#define BS_STORE_META_INT_H

#include "store/meta.h"

/* One migration: the SQLite text, and the PostgreSQL text or NULL when the SQLite text
 * serves both (after the column-type mapping in meta_pg.c). */
typedef struct {
    const char *sql;
    const char *pg;
} bs_meta_migration_t;

/* Ended by {NULL, NULL}; entry i is migration number i + 1. */
extern const bs_meta_migration_t bs__meta_migrations[];

/* A backend: meta.c forwards every public call through one of these. `impl` is the
 * backend's own state. Row accessors dispatch on the row's ops too, so one row type
 * serves both backends. */
typedef struct bs_meta_ops {
    const char *name;
    bs_meta_dialect_t dialect;
    void (*close)(void *impl);
    int (*exec)(void *impl, const char *sql, const bs_val_t *args, int nargs, int *changes,
                bs_err_t *err);
    int (*query)(void *impl, const char *sql, const bs_val_t *args, int nargs, bs_meta_row_cb cb,
                 void *ud, bs_err_t *err);
    int (*tx_begin)(void *impl, bs_err_t *err);
    int (*tx_commit)(void *impl, bs_err_t *err);
    void (*tx_rollback)(void *impl);
    int (*schema_version)(void *impl);
    int (*ready)(void *impl);
    int (*notify)(void *impl, const char *channel, const char *payload, bs_err_t *err);
    int (*listen)(void *impl, const char *channel, int wake_fd, int timeout_ms,
                  bs_meta_notify_cb cb, void *ud, bs_err_t *err);
    void (*stats)(void *impl, bs_meta_stats_t *out);
    int (*row_is_null)(const bs_meta_row_t *r, int col);
    int64_t (*row_int)(const bs_meta_row_t *r, int col);
    double (*row_double)(const bs_meta_row_t *r, int col);
    const char *(*row_text)(const bs_meta_row_t *r, int col);
    const void *(*row_blob)(const bs_meta_row_t *r, int col, size_t *len);
} bs_meta_ops_t;

/* A result row as the callback sees it: p is the backend's cursor (a sqlite3_stmt, or a
 * PGresult with row index i); aux is backend scratch (decoded bytea buffers). */
struct bs_meta_row {
    const bs_meta_ops_t *ops;
    void *p;
    int i;
    void *aux;
};

extern const bs_meta_ops_t bs__meta_sqlite_ops;
extern const bs_meta_ops_t bs__meta_pg_ops;
void *bs__meta_sqlite_open(const char *path, bs_err_t *err);
void *bs__meta_pg_open(const char *url, const bs_meta_opts_t *opts, bs_err_t *err);

#endif
