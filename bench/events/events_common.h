/*
 * Helpers shared by bench/events' C drivers (js_pub.c, http_pub.c): the clock, the
 * benchmark's event (one JSON object of about EVENT_BYTES bytes, the same for basalt and
 * JetStream) and latency percentiles. Header-only: each driver is one translation unit.
 */
#ifndef BENCH_EVENTS_COMMON_H
#define BENCH_EVENTS_COMMON_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double ev_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline double ev_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Writes one event into buf (cap >= bytes + 64): an order-like JSON object whose "note"
 * pads it to `bytes` bytes. The features a trigger's model reads are numbers derived
 * from (client, seq). Returns its length.
 */
static inline int ev_format_event(char *buf, size_t cap, int client, uint64_t seq, int bytes)
{
    unsigned h = (unsigned)(seq * 2654435761u) ^ (unsigned)client * 40503u;
    int n = snprintf(buf, cap,
                     "{\"type\":\"order.created\",\"client\":%d,\"seq\":%" PRIu64
                     ",\"user\":\"u%05u\",\"country\":\"FR\",\"amount\":%u.%02u,"
                     "\"items\":%u,\"age_days\":%u,\"score_hint\":0.%03u,\"note\":\"",
                     client, seq, h % 100000u, h % 5000u, h % 100u, 1u + h % 9u,
                     h % 3650u, h % 1000u);
    while (n < bytes - 2 && (size_t)n < cap - 3)
        buf[n++] = 'x';
    buf[n++] = '"';
    buf[n++] = '}';
    buf[n] = '\0';
    return n;
}

typedef struct {
    uint64_t *v;
    size_t n, cap;
    int sorted;
} ev_lat_t;

static inline void ev_lat_add(ev_lat_t *l, const uint64_t *v, size_t n)
{
    if (l->n + n > l->cap) {
        l->cap = (l->n + n) * 2;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
    }
    memcpy(l->v + l->n, v, n * sizeof *v);
    l->n += n;
    l->sorted = 0;
}

static int ev_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static inline uint64_t ev_lat_pct(ev_lat_t *l, int pct)
{
    if (l->n == 0)
        return 0;
    if (!l->sorted) {
        qsort(l->v, l->n, sizeof *l->v, ev_cmp_u64);
        l->sorted = 1;
    }
    size_t i = (size_t)((double)pct / 100.0 * (double)(l->n - 1) + 0.5);
    return l->v[i];
}

static inline void ev_lat_free(ev_lat_t *l)
{
    free(l->v);
    *l = (ev_lat_t){0};
}

#endif
