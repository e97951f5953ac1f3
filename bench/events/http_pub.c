/*
 * basalt side of bench/events' publish benchmarks: CONNS threads, one HTTP/1.1 keep-alive
 * connection each, POST batches of BATCH events (a JSON array of the ~200-byte events of
 * events_common.h) to PATH. A batch counts as acknowledged events only from a 2xx answer,
 * and only the items of that answer that carry an "offset" (a batch's per-item errors are
 * counted as errors).
 *
 * Closed loop (RATE 0): each connection sends its next batch when the previous one is
 * answered, for SECONDS. Open loop (RATE > 0 events/s in total): each connection sends a
 * batch every CONNS * BATCH / RATE seconds on a fixed schedule (late batches go at once).
 *
 * Usage: http_pub HOST:PORT PATH KEY CONNS BATCH SECONDS RATE [EVENT_BYTES [ACKS_FILE]]
 *   KEY "-" sends no Authorization header. ACKS_FILE: one line per acknowledged batch,
 *   "first_offset count ack_unix_time_us latency_us", for latency measurements.
 * Prints one line:
 *   acked=N errors=E batches=B seconds=S events_per_s=R p50_us=X p99_us=Y http_errors=H
 * Exit status 0, or 1 when it could not run (no connection, a dropped connection).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events_common.h"

typedef struct {
    int id, nconns;
    struct sockaddr_in addr;
    const char *host, *path, *key;
    int batch, event_bytes;
    double seconds, interval;
    long acked, errors, http_errors, batches;
    uint64_t *lat_us;
    size_t nlat, caplat;
    FILE *acks;
    pthread_mutex_t *acks_lock;
    int failed;
} conn_t;

/* Counts the items of a publish answer that have an offset; *first = the first one's. */
static long count_offsets(const char *body, size_t len, long *first, long *errors)
{
    long n = 0;
    *first = -1;
    const char *end = body + len;
    for (const char *p = body; p < end && (p = strstr(p, "\"offset\"")) && p < end; p += 8) {
        const char *q = p + 8;
        while (*q == ' ' || *q == ':')
            q++;
        if (*q < '0' || *q > '9')
            continue;
        if (n == 0)
            *first = strtol(q, NULL, 10);
        n++;
    }
    for (const char *p = body; p < end && (p = strstr(p, "\"error\"")) && p < end; p += 7)
        (*errors)++;
    return n;
}

static void *conn_main(void *arg)
{
    conn_t *c = arg;
    int fd = ev_connect(&c->addr);
    if (fd < 0) {
        fprintf(stderr, "http_pub: connection %d: connect: %s\n", c->id, strerror(errno));
        c->failed = 1;
        return NULL;
    }
    size_t cap = (size_t)c->batch * ((size_t)c->event_bytes + 2) + 1024;
    char *body = malloc(cap), *req = malloc(cap + 1024);
    ev_rbuf_t rb = {0};
    uint64_t seq = 0;
    double start = ev_now(), end = start + c->seconds;
    /* Open loop: spread the connections' first batches over one interval. */
    double next = start + (c->interval > 0 ? c->interval * c->id / c->nconns : 0);
    while (ev_now() < end) {
        if (c->interval > 0) {
            double now = ev_now();
            if (next > now) {
                double d = next - now;
                struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
                nanosleep(&ts, NULL);
            }
            next += c->interval;
            if (next > end + c->interval)
                break;
        }
        size_t n = 0;
        body[n++] = '[';
        for (int i = 0; i < c->batch; i++) {
            if (i)
                body[n++] = ',';
            n += (size_t)ev_format_event(body + n, cap - n, c->id, seq++, c->event_bytes);
        }
        body[n++] = ']';
        int h = snprintf(req, 1024,
                         "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\n%s%s%s\r\n",
                         c->path, c->host, n, c->key ? "Authorization: Bearer " : "",
                         c->key ? c->key : "", c->key ? "\r\n" : "");
        memcpy(req + h, body, n);
        double t0 = ev_now();
        int status = 0;
        char *rbody;
        size_t rlen;
        if (ev_write_all(fd, req, (size_t)h + n) != 0 ||
            ev_read_response(fd, &rb, &status, &rbody, &rlen) != 0) {
            fprintf(stderr, "http_pub: connection %d: dropped\n", c->id);
            c->failed = 1;
            break;
        }
        double t1 = ev_now();
        c->batches++;
        if (status < 200 || status > 299) {
            c->http_errors++;
            c->errors += c->batch;
            if (c->http_errors <= 3)
                fprintf(stderr, "http_pub: %d: %.*s\n", status, (int)(rlen > 300 ? 300 : rlen),
                        rbody);
            continue;
        }
        long first, errs = 0;
        long ok = count_offsets(rbody, rlen, &first, &errs);
        c->acked += ok;
        c->errors += errs;
        uint64_t us = (uint64_t)((t1 - t0) * 1e6);
        if (c->nlat == c->caplat) {
            c->caplat = c->caplat ? c->caplat * 2 : 4096;
            c->lat_us = realloc(c->lat_us, c->caplat * sizeof *c->lat_us);
        }
        c->lat_us[c->nlat++] = us;
        if (c->acks) {
            pthread_mutex_lock(c->acks_lock);
            fprintf(c->acks, "%ld %ld %.0f %" PRIu64 "\n", first, ok, ev_wall() * 1e6, us);
            pthread_mutex_unlock(c->acks_lock);
        }
    }
    close(fd);
    free(rb.p);
    free(body);
    free(req);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 8) {
        fprintf(stderr,
                "usage: %s HOST:PORT PATH KEY CONNS BATCH SECONDS RATE [EVENT_BYTES [ACKS_FILE]]\n",
                argv[0]);
        return 2;
    }
    struct sockaddr_in addr;
    if (ev_parse_addr(argv[1], &addr) != 0)
        return 2;
    const char *path = argv[2], *key = strcmp(argv[3], "-") == 0 ? NULL : argv[3];
    int nconns = atoi(argv[4]), batch = atoi(argv[5]);
    double seconds = atof(argv[6]), rate = atof(argv[7]);
    int event_bytes = argc > 8 ? atoi(argv[8]) : 200;
    FILE *acks = NULL;
    if (argc > 9 && !(acks = fopen(argv[9], "w"))) {
        perror(argv[9]);
        return 1;
    }
    if (nconns < 1 || batch < 1 || seconds <= 0 || event_bytes < 64)
        return 2;
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    conn_t *cs = calloc((size_t)nconns, sizeof *cs);
    pthread_t *th = calloc((size_t)nconns, sizeof *th);
    double t0 = ev_now();
    for (int i = 0; i < nconns; i++) {
        cs[i] = (conn_t){.id = i,
                         .nconns = nconns,
                         .addr = addr,
                         .host = argv[1],
                         .path = path,
                         .key = key,
                         .batch = batch,
                         .event_bytes = event_bytes,
                         .seconds = seconds,
                         .interval = rate > 0 ? (double)nconns * batch / rate : 0,
                         .acks = acks,
                         .acks_lock = &lock};
        pthread_create(&th[i], NULL, conn_main, &cs[i]);
    }
    long acked = 0, errors = 0, http_errors = 0, batches = 0;
    int failed = 0;
    ev_lat_t lat = {0};
    for (int i = 0; i < nconns; i++) {
        pthread_join(th[i], NULL);
        acked += cs[i].acked;
        errors += cs[i].errors;
        http_errors += cs[i].http_errors;
        batches += cs[i].batches;
        failed |= cs[i].failed;
        ev_lat_add(&lat, cs[i].lat_us, cs[i].nlat);
        free(cs[i].lat_us);
    }
    double secs = ev_now() - t0;
    if (acks)
        fclose(acks);
    printf("acked=%ld errors=%ld batches=%ld seconds=%.3f events_per_s=%.0f p50_us=%" PRIu64
           " p99_us=%" PRIu64 " http_errors=%ld\n",
           acked, errors, batches, secs, (double)acked / secs, ev_lat_pct(&lat, 50),
           ev_lat_pct(&lat, 99), http_errors);
    ev_lat_free(&lat);
    free(cs);
    free(th);
    return failed ? 1 : 0;
}
