/* Private to src/store: the migration list. */
#ifndef BS_STORE_META_INT_H
#define BS_STORE_META_INT_H

/* NULL-terminated; entry i is migration number i + 1. */
extern const char *const bs__meta_migrations[];

#endif
