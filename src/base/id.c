/* UUIDv7 generation with a per-thread random pool refilled from getrandom; see id.h.
 * Within one millisecond, rand_a carries a per-thread counter so ids from one thread
 * stay ordered (RFC 9562 §6.2, method 1). bs_uuid7_ordered shares one counter across
 * threads, for records listed in id order. */
#include "base/id.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "base/crypto.h"
#include "base/time.h"

static _Thread_local unsigned char pool[4096];
static _Thread_local size_t pool_pos = sizeof pool;
static _Thread_local int64_t last_ms;
static _Thread_local uint16_t seq;

static void take(unsigned char *out, size_t n)
{
    if (pool_pos + n > sizeof pool) {
        bs_random_bytes(pool, sizeof pool);
        pool_pos = 0;
    }
    memcpy(out, pool + pool_pos, n);
    pool_pos += n;
}

void bs_uuid7(char out[37]) { bs_uuid7_at(out, bs_time_wall_ms()); }

static void format(char out[37], unsigned char u[16], int64_t ms, unsigned counter)
{
    for (int i = 0; i < 6; i++)
        u[i] = (unsigned char)(ms >> (40 - 8 * i));
    u[6] = (unsigned char)(0x70 | ((counter >> 8) & 0x0F));
    u[7] = (unsigned char)(counter & 0xFF);
    u[8] = (unsigned char)(0x80 | (u[8] & 0x3F));
    static const char hex[] = "0123456789abcdef";
    char *p = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[u[i] >> 4];
        *p++ = hex[u[i] & 15];
    }
    *p = '\0';
}

void bs_uuid7_at(char out[37], int64_t ms)
{
    unsigned char u[16];
    take(u + 6, 10);
    if (ms <= last_ms) {
        ms = last_ms;
        if (++seq > 0xFFF) {
            /* The 12-bit counter is used up within this millisecond: move on to the next
             * one rather than wrap, so ids stay ordered (RFC 9562 §6.2, method 1). */
            ms = ++last_ms;
            seq = 0;
        }
    } else {
        last_ms = ms;
        seq = (uint16_t)((u[6] << 8 | u[7]) & 0x7FF); /* random start, room to count up */
    }
    format(out, u, ms, seq);
}

/* The process's last ordered id as ms << 12 | counter; a counter overflow carries into
 * the millisecond, so the sequence never goes back. */
static _Atomic uint64_t ordered_last;

static int hexdig(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* ms << 12 | counter of a canonical UUIDv7 text, or 0 when it is not one. */
static uint64_t ordered_value(const char *id)
{
    static const int pos[] = {0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 15, 16, 17};
    if (!id || strlen(id) != 36 || id[14] != '7')
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < 15; i++) {
        int d = hexdig(id[pos[i]]);
        if (d < 0)
            return 0;
        v = v << 4 | (uint64_t)d;
    }
    return v;
}

void bs_uuid7_ordered_after(char out[37], const char *floor)
{
    unsigned char u[16];
    take(u + 6, 10);
    uint64_t fresh = (uint64_t)bs_time_wall_ms() << 12 | ((u[6] << 8 | u[7]) & 0x7FF);
    uint64_t low = ordered_value(floor);
    if (low >= fresh)
        fresh = low + 1; /* another replica's clock is ahead, or it wrote this ms */
    uint64_t cur = atomic_load(&ordered_last), next;
    do
        next = fresh > cur ? fresh : cur + 1;
    while (!atomic_compare_exchange_weak(&ordered_last, &cur, next));
    format(out, u, (int64_t)(next >> 12), (unsigned)(next & 0xFFF));
}

void bs_uuid7_ordered(char out[37]) { bs_uuid7_ordered_after(out, NULL); }
