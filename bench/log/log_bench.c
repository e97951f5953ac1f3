/* The log's durable append path alone (no HTTP): T threads, each appending batches of B
 * records of S bytes (with an id and a dedup key, like published CloudEvents) and waiting
 * for the acknowledgement (fsynced: sync_interval_ms = 0), for D seconds, into a topic in a
 * temporary directory under DIR. Prints records/s, fsyncs/s, records per fsync and the
 * append latency percentiles. Usage: log_bench DIR [THREADS BATCH BYTES SECONDS SYNC_MS] */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/time.h"
#include "store/log.h"

static bs_log_t *lg;
static int batch, bytes;
static atomic_int stop;
static atomic_uint_fast64_t total;

typedef struct {
    int id;
    uint64_t *lat;
    size_t nlat, cap;
} worker_t;

static void *run(void *arg)
{
    worker_t *w = arg;
    bs_log_record_in_t *in = calloc((size_t)batch, sizeof *in);
    bs_log_append_result_t *res = calloc((size_t)batch, sizeof *res);
    char(*ids)[40] = calloc((size_t)batch, sizeof *ids);
    char *data = malloc((size_t)bytes + 1);
    memset(data, 'x', (size_t)bytes);
    data[0] = '{';
    data[bytes - 1] = '}';
    for (uint64_t seq = 0; !atomic_load(&stop); seq++) {
        for (int i = 0; i < batch; i++) {
            snprintf(ids[i], sizeof ids[i], "w%d-%llu-%d", w->id, (unsigned long long)seq, i);
            in[i] = (bs_log_record_in_t){ids[i], getenv("NODEDUP") ? NULL : ids[i], data,
                                         (size_t)bytes};
        }
        uint64_t t0 = bs_time_mono_ns();
        bs_err_t err;
        int rc = bs_log_append(lg, "bench", "events", in, batch, res, &err);
        if (rc != 0) {
            if (rc == BS_EOVERLOAD)
                continue;
            fprintf(stderr, "append: %s\n", err.msg);
            exit(1);
        }
        if (w->nlat == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 4096;
            w->lat = realloc(w->lat, w->cap * sizeof *w->lat);
        }
        w->lat[w->nlat++] = bs_time_mono_ns() - t0;
        atomic_fetch_add(&total, (uint64_t)batch);
    }
    free(in);
    free(res);
    free(ids);
    free(data);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: log_bench DIR [THREADS BATCH BYTES SECONDS SYNC_MS]\n");
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 32;
    batch = argc > 3 ? atoi(argv[3]) : 100;
    bytes = argc > 4 ? atoi(argv[4]) : 200;
    double secs = argc > 5 ? atof(argv[5]) : 5;
    int sync_ms = argc > 6 ? atoi(argv[6]) : 0;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/log-bench-XXXXXX", argv[1]);
    if (!mkdtemp(dir))
        return 1;
    bs_log_opts_t o = {.dir = dir};
    bs_err_t err;
    lg = bs_log_open(&o, &err);
    bs_log_topic_config_t c = {.sync_interval_ms = sync_ms, .dedup_window_ms = 120000};
    if (!lg || bs_log_topic_ensure(lg, "bench", "events", &c, &err) != 0) {
        fprintf(stderr, "open: %s\n", err.msg);
        return 1;
    }
    worker_t *w = calloc((size_t)threads, sizeof *w);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    uint64_t t0 = bs_time_mono_ns();
    for (int i = 0; i < threads; i++) {
        w[i].id = i;
        pthread_create(&th[i], NULL, run, &w[i]);
    }
    usleep((useconds_t)(secs * 1e6));
    atomic_store(&stop, 1);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    double el = (double)(bs_time_mono_ns() - t0) / 1e9;
    bs_log_topic_stats_t s;
    bs_log_topic_stats(lg, "bench", "events", &s, &err);
    size_t n = 0;
    for (int i = 0; i < threads; i++)
        n += w[i].nlat;
    uint64_t *all = malloc((n ? n : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < threads; i++) {
        memcpy(all + k, w[i].lat, w[i].nlat * sizeof *all);
        k += w[i].nlat;
    }
    qsort(all, n, sizeof *all, cmp_u64);
    double recs = (double)atomic_load(&total);
    printf("threads %d batch %d bytes %d sync_interval_ms %d: %.0f records/s, %.0f appends/s, "
           "%.0f fsyncs/s, %.1f records/fsync, append p50 %.2f ms p99 %.2f ms, %.1f MB/s\n",
           threads, batch, bytes, sync_ms, recs / el, (double)n / el, (double)s.syncs / el,
           s.syncs ? recs / (double)s.syncs : 0, n ? (double)all[n / 2] / 1e6 : 0,
           n ? (double)all[n * 99 / 100] / 1e6 : 0, (double)s.bytes / el / 1e6);
    bs_log_close(lg);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
