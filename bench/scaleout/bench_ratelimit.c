/*
 * Rate limit decisions across replicas, two schemes, one thread each, same Redis:
 *
 *   per-decision: one EVALSHA of the global-bucket script (want = 1) per request: the
 *                 decision waits for a Redis round trip (what an I/O thread would do if
 *                 it asked Redis every time);
 *   slices:       bs_ratelimit_charge, the scheme basalt uses: decisions from the local
 *                 slice, refilled by the background thread in pipelined rounds.
 *
 * Prints per scheme: decisions, seconds, decisions/s, mean and p50/p99 latency per
 * decision (every decision timed), and for slices the Redis round trips per decision;
 * then the ratios. Usage: bench_ratelimit REDIS_URL [SECONDS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "base/time.h"
#include "store/kv.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    double n, secs, per_s, mean_ns, p50_ns, p99_ns;
} result_t;

static result_t summarize(uint64_t *lat, size_t n, double secs)
{
    result_t r = {.n = (double)n, .secs = secs, .per_s = (double)n / secs};
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)lat[i];
    r.mean_ns = sum / (double)n;
    qsort(lat, n, sizeof *lat, cmp_u64);
    r.p50_ns = (double)lat[n / 2];
    r.p99_ns = (double)lat[n * 99 / 100];
    return r;
}

static void print(const char *name, const result_t *r)
{
    printf("%-13s %10.0f decisions in %.2f s: %12.0f decisions/s, latency mean %8.2f us, "
           "p50 %8.2f us, p99 %8.2f us\n",
           name, r->n, r->secs, r->per_s, r->mean_ns / 1e3, r->p50_ns / 1e3, r->p99_ns / 1e3);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s REDIS_URL [SECONDS]\n", argv[0]);
        return 2;
    }
    const char *url = argv[1];
    double secs = argc > 2 ? atof(argv[2]) : 3;
    size_t cap = 4000000; /* latencies kept (EVALSHA: ~30k/s; slices: 2M timed) */
    uint64_t *lat = malloc(cap * sizeof *lat);
    if (!lat)
        return 1;
    bs_err_t err;
    bs_err_clear(&err);

    /* per-decision EVALSHA */
    bs_kv_t *kv = bs_kv_new(url, NULL, &err);
    if (!kv || bs_kv_connect(kv, &err) != 0) {
        fprintf(stderr, "bench_ratelimit: %s\n", err.msg);
        return 1;
    }
    bs_kv_script_t script;
    bs_kv_script_init(&script, bs_ratelimit_script());
    /* a rate high enough that the bucket never runs dry: every decision is an admit */
    const char *args[] = {"bench:rl:per-decision", "1000000000", "1000000000", "1"};
    size_t n = 0, admitted = 0;
    uint64_t t0 = bs_time_mono_ns(), end = t0 + (uint64_t)(secs * 1e9), t = t0;
    while (t < end && n < cap) {
        bs_kv_reply_t *r = NULL;
        if (bs_kv_eval(kv, &script, 1, 4, args, &r, &err) != 0) {
            fprintf(stderr, "bench_ratelimit: EVALSHA: %s\n", err.msg);
            return 1;
        }
        admitted += r->type == BS_KV_ARRAY && r->n == 2 && r->elem[0].integer == 1;
        bs_kv_reply_free(r);
        uint64_t t2 = bs_time_mono_ns();
        lat[n++] = t2 - t;
        t = t2;
    }
    result_t per = summarize(lat, n, (double)(t - t0) / 1e9);
    if (admitted != n)
        fprintf(stderr, "bench_ratelimit: %zu of %zu EVALSHA decisions refused\n", n - admitted, n);
    bs_kv_free(kv);

    /* slices: throughput from an untimed loop, latency from a timed one (the clock read,
     * ~20 ns, is in that figure) */
    bs_ratelimit_opts_t o = {.prefix = "bench:rl:slices:"};
    bs_ratelimit_t *rl = bs_ratelimit_new(url, &o, &err);
    if (!rl) {
        fprintf(stderr, "bench_ratelimit: %s\n", err.msg);
        return 1;
    }
    double retry;
    n = admitted = 0;
    t0 = bs_time_mono_ns();
    end = t0 + (uint64_t)(secs * 1e9);
    for (t = t0; t < end; t = (n & 1023) ? t : bs_time_mono_ns()) {
        admitted += bs_ratelimit_charge(rl, "k", 1e9, 1e9, &retry) == 0;
        n++;
    }
    double slice_secs = (double)(t - t0) / 1e9, slice_n = (double)n;
    size_t nt = cap < 2000000 ? cap : 2000000;
    t = bs_time_mono_ns();
    for (size_t i = 0; i < nt; i++) {
        admitted += bs_ratelimit_charge(rl, "k", 1e9, 1e9, &retry) == 0;
        uint64_t t2 = bs_time_mono_ns();
        lat[i] = t2 - t;
        t = t2;
    }
    result_t sl = summarize(lat, nt, slice_secs);
    sl.n = slice_n;
    sl.per_s = slice_n / slice_secs;
    bs_ratelimit_stats_t st;
    bs_ratelimit_stats(rl, &st);
    double total = slice_n + (double)nt;
    /* a key limited to 1000/s asked far more often: refused locally, Redis traffic bounded */
    uint64_t rounds0 = st.refill_rounds;
    size_t lim_n = 0, lim_ok = 0;
    t0 = bs_time_mono_ns();
    for (t = t0; t < t0 + 1000000000ull; t = (lim_n & 1023) ? t : bs_time_mono_ns()) {
        lim_ok += bs_ratelimit_charge(rl, "limited", 1000, 100, &retry) == 0;
        lim_n++;
    }
    bs_ratelimit_stats_t st2;
    bs_ratelimit_stats(rl, &st2);
    bs_ratelimit_free(rl);

    print("per-decision", &per);
    print("slices", &sl);
    printf("slices: %.0f%% admitted, %llu Redis round trips (%.7f per decision), %s\n",
           100.0 * (double)admitted / total, (unsigned long long)st.refill_rounds,
           (double)st.refill_rounds / total,
           st.fallback_decisions ? "SOME DECISIONS FELL BACK" : "no fallback");
    printf("slices, a key limited to 1000/s (burst 100) asked %zu times in 1 s: %zu admitted, "
           "%llu round trips\n",
           lim_n, lim_ok, (unsigned long long)(st2.refill_rounds - rounds0));
    printf("ratio slices/per-decision: throughput %.1fx, mean latency %.4fx (per-decision "
           "latency / slices latency %.0fx)\n",
           sl.per_s / per.per_s, sl.mean_ns / per.mean_ns, per.mean_ns / sl.mean_ns);
    free(lat);
    return 0;
}
