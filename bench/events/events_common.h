/*
 * Helpers shared by bench/events' C drivers (js_pub.c, http_pub.c, fetch_tail.c, sse_tail.c): the
 * clock, the benchmark's event (one JSON object of about EVENT_BYTES bytes, the same for
 * basalt and JetStream), latency percentiles and a blocking HTTP/1.1 keep-alive client.
 * Header-only: each driver is one translation unit.
 */
#ifndef BENCH_EVENTS_COMMON_H
#define BENCH_EVENTS_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

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
    int n =
        snprintf(buf, cap,
                 "{\"type\":\"order.created\",\"client\":%d,\"seq\":%" PRIu64
                 ",\"user\":\"u%05u\",\"country\":\"FR\",\"amount\":%u.%02u,"
                 "\"items\":%u,\"age_days\":%u,\"score_hint\":0.%03u,\"note\":\"",
                 client, seq, h % 100000u, h % 5000u, h % 100u, 1u + h % 9u, h % 3650u, h % 1000u);
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

/* ---- the drivers' command line and signals ---------------------------------------------- */

/* "HOST:PORT" (an IPv4 address or localhost) into addr. 0, or -1 with a message. */
static inline int ev_parse_addr(const char *hostport, struct sockaddr_in *addr)
{
    char host[256];
    snprintf(host, sizeof host, "%s", hostport);
    char *colon = strrchr(host, ':');
    if (!colon) {
        fprintf(stderr, "%s: not HOST:PORT\n", hostport);
        return -1;
    }
    *colon = '\0';
    *addr = (struct sockaddr_in){.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, strcmp(host, "localhost") == 0 ? "127.0.0.1" : host,
                  &addr->sin_addr) != 1) {
        fprintf(stderr, "%s: not an IPv4 address\n", host);
        return -1;
    }
    return 0;
}

/* Set by SIGTERM / SIGINT (ev_catch_stop): the drivers end their loop and print totals. */
static volatile sig_atomic_t ev_stop;

static void ev_on_stop(int sig)
{
    (void)sig;
    ev_stop = 1;
}

/* Without SA_RESTART, so a blocked read or poll returns EINTR and the loop sees ev_stop. */
static inline void ev_catch_stop(void)
{
    struct sigaction sa = {.sa_handler = ev_on_stop};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

/* ---- a blocking HTTP/1.1 keep-alive client --------------------------------------------- */

static inline int ev_connect(const struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static inline int ev_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

typedef struct {
    char *p;
    size_t len, cap, off; /* off: start of unconsumed bytes */
} ev_rbuf_t;

static inline int ev_fill(int fd, ev_rbuf_t *b)
{
    if (b->off > 0 && b->off == b->len)
        b->off = b->len = 0;
    if (b->len == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 65536;
        b->p = realloc(b->p, b->cap + 1);
    }
    ssize_t r;
    do
        r = read(fd, b->p + b->len, b->cap - b->len);
    while (r < 0 && errno == EINTR);
    if (r <= 0)
        return -1;
    b->len += (size_t)r;
    b->p[b->len] = '\0';
    return 0;
}

/* Reads one response (Content-Length or chunked); *body points into b (valid until the next call).
 */
static inline int ev_read_response(int fd, ev_rbuf_t *b, int *status, char **body, size_t *body_len)
{
    if (b->off > 0) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->p)
            b->p[b->len] = '\0';
    }
    char *end;
    while (!b->p || !(end = strstr(b->p, "\r\n\r\n")))
        if (ev_fill(fd, b) != 0)
            return -1;
    size_t hlen = (size_t)(end - b->p) + 4;
    if (sscanf(b->p, "HTTP/1.%*d %d", status) != 1)
        return -1;
    long clen = -1;
    int chunked = 0;
    for (char *line = strstr(b->p, "\r\n") + 2; line < end; line = strstr(line, "\r\n") + 2) {
        if (strncasecmp(line, "content-length:", 15) == 0)
            clen = strtol(line + 15, NULL, 10);
        else if (strncasecmp(line, "transfer-encoding:", 18) == 0 && strstr(line, "chunked"))
            chunked = 1;
    }
    if (!chunked) {
        if (clen < 0)
            return -1;
        while (b->len < hlen + (size_t)clen)
            if (ev_fill(fd, b) != 0)
                return -1;
        *body = b->p + hlen;
        *body_len = (size_t)clen;
        b->off = hlen + (size_t)clen;
        return 0;
    }
    /* Chunked: de-chunk in place after the headers. */
    size_t in = hlen, out = hlen;
    for (;;) {
        char *crlf;
        while (!(crlf = strstr(b->p + in, "\r\n")))
            if (ev_fill(fd, b) != 0)
                return -1;
        size_t n = (size_t)strtoul(b->p + in, NULL, 16);
        size_t data = (size_t)(crlf - b->p) + 2;
        while (b->len < data + n + 2)
            if (ev_fill(fd, b) != 0)
                return -1;
        memmove(b->p + out, b->p + data, n);
        out += n;
        in = data + n + 2;
        if (n == 0)
            break;
    }
    *body = b->p + hlen;
    *body_len = out - hlen;
    b->off = in;
    return 0;
}

#endif
