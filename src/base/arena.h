/*
 * Per-request arena: a chain of blocks carved by bump allocation and freed in
 * one step. Cleanup hooks release non-memory resources (a model reference,
 * a parsed cJSON tree) when the arena is reset or freed, in reverse order.
 * Not thread-safe: an arena belongs to one request on one thread.
 */
#ifndef BS_BASE_ARENA_H
#define BS_BASE_ARENA_H

#include <stddef.h>

typedef struct bs_arena_block bs_arena_block_t;
typedef struct bs_arena_hook bs_arena_hook_t;

typedef struct {
    bs_arena_block_t *head;
    bs_arena_hook_t *hooks;
    size_t block_size;
    size_t total; /* bytes allocated from the system */
    size_t limit; /* 0 = unlimited; allocations beyond it fail */
} bs_arena_t;

void bs_arena_init(bs_arena_t *a, size_t block_size);
/* Runs the cleanup hooks and frees every block. */
void bs_arena_deinit(bs_arena_t *a);

/* Returns n bytes aligned to 16, or NULL when out of memory or over the limit. */
void *bs_arena_alloc(bs_arena_t *a, size_t n);
/* Like bs_arena_alloc for n * size with overflow check, zeroed. */
void *bs_arena_calloc(bs_arena_t *a, size_t n, size_t size);
/* Copies len bytes and a terminating NUL. */
char *bs_arena_strndup(bs_arena_t *a, const char *s, size_t len);
char *bs_arena_strdup(bs_arena_t *a, const char *s);
char *bs_arena_sprintf(bs_arena_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Registers fn(data) to run when the arena is deinitialised. 0 or BS_ENOMEM. */
int bs_arena_on_cleanup(bs_arena_t *a, void (*fn)(void *data), void *data);

#endif
