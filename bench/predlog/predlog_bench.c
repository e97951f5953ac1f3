/*
 * The prediction log's submit path (serving/predlog.h) against the copy it cannot avoid,
 * in one run: per call, bs_predlog_submit of a ~450-byte record vs memcpy of the same
 * record into a preallocated buffer (the floor), with the drain thread appending to a real
 * segments log (sync 1 s) meanwhile.
 *   burst: THREADS threads submit N records each as fast as they can (a buffer big enough
 *          that nothing drops): ns per call, and the ratio to the memcpy floor.
 *   paced: THREADS threads at RATE records/s in total for SECS s (the predict rate the
 *          design targets: 50k/s on 2 cores): ns per call measured around each call, and
 *          drops (the log must keep up: 0 expected).
 * Usage: predlog_bench DIR [THREADS] [N] [RATE] [SECS]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/time.h"
#include "serving/predlog.h"
#include "store/log.h"

static bs_predlog_t *P;
static int N = 200000, RATE = 50000, SECS = 5, THREADS = 2;
static char REC[1024];
static size_t REC_LEN;

static double now_s(void)
{
    return (double)bs_time_mono_ns() / 1e9;
}

typedef struct {
    double secs;
    long calls, refused;
    double call_ns; /* paced: sum of per-call durations */
} res_t;

static void *burst(void *arg)
{
    res_t *r = arg;
    double t0 = now_s();
    for (int i = 0; i < N; i++)
        if (bs_predlog_submit(P, "acme", "fraud", REC, REC_LEN) != 0)
            r->refused++;
    r->secs = now_s() - t0;
    r->calls = N;
    return NULL;
}

#define SINK_BYTES ((size_t)16 << 20)
static void *floor_copy(void *arg)
{
    res_t *r = arg;
    char *dst = malloc(SINK_BYTES); /* each thread its own, touched before the clock starts */
    memset(dst, 0, SINK_BYTES);
    double t0 = now_s();
    size_t off = 0;
    for (int i = 0; i < N; i++) {
        if (off + REC_LEN > SINK_BYTES)
            off = 0;
        memcpy(dst + off, REC, REC_LEN);
        off += (REC_LEN + 7) & ~(size_t)7;
        __asm__ volatile("" ::"r"(dst) : "memory");
    }
    r->secs = now_s() - t0;
    r->calls = N;
    free(dst);
    return NULL;
}

static void *paced(void *arg)
{
    res_t *r = arg;
    double per = (double)THREADS / RATE, t0 = now_s(), next = t0;
    while (now_s() - t0 < SECS) {
        next += per;
        uint64_t a = bs_time_mono_ns();
        if (bs_predlog_submit(P, "acme", "fraud", REC, REC_LEN) != 0)
            r->refused++;
        r->call_ns += (double)(bs_time_mono_ns() - a);
        r->calls++;
        double w = next - now_s();
        if (w > 0)
            usleep((useconds_t)(w * 1e6));
    }
    return NULL;
}

static void run(void *(*fn)(void *), const char *what, res_t *sum)
{
    pthread_t t[16];
    res_t r[16];
    memset(r, 0, sizeof r);
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, fn, &r[i]);
    memset(sum, 0, sizeof *sum);
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        sum->calls += r[i].calls;
        sum->refused += r[i].refused;
        sum->secs += r[i].secs;
        sum->call_ns += r[i].call_ns;
    }
    (void)what;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: predlog_bench DIR [THREADS] [N] [RATE] [SECS]\n");
        return 2;
    }
    if (argc > 2)
        THREADS = atoi(argv[2]);
    if (argc > 3)
        N = atoi(argv[3]);
    if (argc > 4)
        RATE = atoi(argv[4]);
    if (argc > 5)
        SECS = atoi(argv[5]);
    if (THREADS < 1 || THREADS > 16)
        THREADS = 2;
    REC_LEN = (size_t)snprintf(
        REC, sizeof REC,
        "{\"prediction_id\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\",\"request_id\":\"0190a1b2-"
        "c3d4-7e5f-8a9b-0c1d2e3f4a5c\",\"time\":\"2026-01-02T03:04:05.678Z\",\"endpoint\":"
        "\"fraud\","
        "\"model\":\"fraud\",\"version\":3,\"variant\":\"v3\",\"shadow\":false,\"latency_ms\":0."
        "041,"
        "\"inputs\":{\"amount\":12.5,\"country\":\"fr\",\"age\":41,\"merchant\":\"m-17\",\"hour\":"
        "13,\"device\":\"ios\",\"f7\":0.25,\"f8\":1.5,\"f9\":-3.25},\"output\":{\"label\":\"1\","
        "\"probabilities\":[0.125,0.875]}}");
    bs_log_opts_t lo = {.dir = argv[1]};
    bs_err_t err;
    bs_log_t *log = bs_log_open(&lo, &err);
    if (!log) {
        fprintf(stderr, "log: %s\n", err.msg);
        return 1;
    }
    bs_log_topic_config_t tc = {.retention_ms = 3600 * 1000, .sync_interval_ms = 1000};
    if (bs_log_topic_ensure(log, "acme", BS_PREDLOG_TOPIC, &tc, &err) != 0) {
        fprintf(stderr, "topic: %s\n", err.msg);
        return 1;
    }
    bs_predlog_opts_t po = {.log = log, .buffer_bytes = (size_t)1 << 30};
    P = bs_predlog_new(&po, &err);
    res_t fl, bu, pa;
    run(floor_copy, "floor", &fl);
    run(burst, "burst", &bu);
    bs_predlog_flush(P, 60000);
    double floor_ns = fl.secs / (double)fl.calls * 1e9, burst_ns = bu.secs / (double)bu.calls * 1e9;
    printf("record %zu bytes, %d threads\n", REC_LEN, THREADS);
    printf("burst: submit %.0f ns/call, memcpy floor %.0f ns/call, submit - floor %.0f ns "
           "(ratio %.2fx), refused %ld of %ld\n",
           burst_ns, floor_ns, burst_ns - floor_ns, burst_ns / floor_ns, bu.refused, bu.calls);
    bs_predlog_free(P);
    /* paced at the design's predict rate, with the default 64 MiB buffer */
    po.buffer_bytes = 0;
    P = bs_predlog_new(&po, &err);
    run(paced, "paced", &pa);
    bs_predlog_flush(P, 60000);
    bs_buf_t b;
    bs_buf_init(&b);
    bs_predlog_metrics(P, &b);
    long long dropped = 0;
    for (char *l = b.data; l && *l;) {
        char *nl = strchr(l, '\n');
        if (!strncmp(l, "basalt_prediction_log_dropped_total{", 36))
            dropped += atoll(strrchr(l, ' ') + 1);
        l = nl ? nl + 1 : NULL;
    }
    bs_buf_free(&b);
    printf("paced: %ld records at %d/s for %d s: submit %.0f ns/call (timer included), "
           "dropped %lld, refused %ld\n",
           pa.calls, RATE, SECS, pa.call_ns / (double)pa.calls, dropped, pa.refused);
    bs_predlog_free(P);
    bs_log_close(log);
    return 0;
}
