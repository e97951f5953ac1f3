/* Bump allocator over a chain of malloc'd blocks; see arena.h. */
#include "base/arena.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"

struct bs_arena_block {
    bs_arena_block_t *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

struct bs_arena_hook {
    bs_arena_hook_t *next;
    void (*fn)(void *);
    void *data;
};

void bs_arena_init(bs_arena_t *a, size_t block_size)
{
    memset(a, 0, sizeof *a);
    a->block_size = block_size ? block_size : 4096;
}

/* One spare block of the common size per thread, so a request's first allocation
 * does not go to malloc (and trigger its consolidation) every time. A thread that keeps one
 * registers spare_key once, whose destructor frees the block when the thread exits. */
static _Thread_local bs_arena_block_t *spare;
static _Thread_local int spare_registered;
static pthread_key_t spare_key;
static pthread_once_t spare_once = PTHREAD_ONCE_INIT;

static void spare_free(void *unused)
{
    (void)unused;
    free(spare);
    spare = NULL;
}

static void spare_key_create(void) { pthread_key_create(&spare_key, spare_free); }

static void keep_spare(bs_arena_block_t *b)
{
    if (!spare_registered) {
        pthread_once(&spare_once, spare_key_create);
        if (pthread_setspecific(spare_key, (void *)1) != 0) {
            free(b);
            return;
        }
        spare_registered = 1;
    }
    b->next = NULL;
    spare = b;
}

void bs_arena_deinit(bs_arena_t *a)
{
    for (bs_arena_hook_t *h = a->hooks; h; h = h->next)
        h->fn(h->data);
    a->hooks = NULL;
    bs_arena_block_t *b = a->head;
    while (b) {
        bs_arena_block_t *next = b->next;
        if (!spare && b->cap == 4096) {
            keep_spare(b);
        } else {
            free(b);
        }
        b = next;
    }
    a->head = NULL;
    a->total = 0;
}

void *bs_arena_alloc(bs_arena_t *a, size_t n)
{
    size_t need = (n + 15) & ~(size_t)15;
    if (need < n)
        return NULL;
    bs_arena_block_t *b = a->head;
    if (!b || b->cap - b->used < need) {
        size_t cap = need > a->block_size ? need : a->block_size;
        if (cap > SIZE_MAX - sizeof *b)
            return NULL;
        if (a->limit && a->total + cap > a->limit)
            return NULL;
        if (cap == 4096 && spare) {
            b = spare;
            spare = NULL;
        } else {
            b = malloc(sizeof *b + cap);
        }
        if (!b)
            return NULL;
        b->used = 0;
        b->cap = cap;
        /* A big one-off block goes behind the current one so its free space stays usable. */
        if (a->head && need > a->block_size) {
            b->next = a->head->next;
            a->head->next = b;
        } else {
            b->next = a->head;
            a->head = b;
        }
        a->total += cap;
    }
    void *p = b->data + b->used;
    b->used += need;
    return p;
}

void *bs_arena_calloc(bs_arena_t *a, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = bs_arena_alloc(a, n * size);
    if (p)
        memset(p, 0, n * size);
    return p;
}

char *bs_arena_strndup(bs_arena_t *a, const char *s, size_t len)
{
    char *p = bs_arena_alloc(a, len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

char *bs_arena_strdup(bs_arena_t *a, const char *s)
{
    return bs_arena_strndup(a, s, strlen(s));
}

char *bs_arena_sprintf(bs_arena_t *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *p = bs_arena_alloc(a, (size_t)n + 1);
    if (!p)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

int bs_arena_on_cleanup(bs_arena_t *a, void (*fn)(void *data), void *data)
{
    bs_arena_hook_t *h = bs_arena_alloc(a, sizeof *h);
    if (!h)
        return BS_ENOMEM;
    h->fn = fn;
    h->data = data;
    h->next = a->hooks;
    a->hooks = h;
    return 0;
}
