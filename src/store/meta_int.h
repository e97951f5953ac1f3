/* Private to src/store: the migration list. */
#ifndef BS_STORE_META_INT_H
#define BS_STORE_META_INT_H

/* One migration: the SQLite text, and the PostgreSQL text or NULL when the SQLite text
 * serves both (after the column-type mapping in meta_pg.c). */
typedef struct {
    const char *sql;
    const char *pg;
} bs_meta_migration_t;

/* Ended by {NULL, NULL}; entry i is migration number i + 1. */
extern const bs_meta_migration_t bs__meta_migrations[];

#endif
