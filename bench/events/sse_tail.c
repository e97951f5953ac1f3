/*
 * Tails a basalt topic over Server-Sent Events (GET PATH, e.g.
 * /v1/topics/scores/stream?from_offset=N) for bench/events' trigger latency, and writes
 * when each record arrived: one line per SSE event, "<value> <arrival_unix_time_us>",
 * where <value> is the integer that follows the first occurrence of PATTERN (e.g.
 * "\"source_offset\":") in the event's data. Events without PATTERN are skipped.
 *
 * SIGTERM or SIGINT ends it cleanly (the lines written so far are kept).
 *
 * Usage: sse_tail HOST:PORT PATH KEY SECONDS OUTFILE PATTERN [READY_FILE]
 *   KEY "-" sends no Authorization header. Stops after SECONDS, or at the end of the
 *   response. READY_FILE is created once the response headers have arrived.
 * Prints "events=N" on exit. Exit status 0, or 1 (could not connect, not a 200).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "events_common.h"

typedef struct {
    FILE *out;
    const char *pattern;
    size_t plen;
    long events;
    /* the current SSE line */
    char *line;
    size_t len, cap;
    /* chunked decoding */
    int chunked;
    int state; /* 0: size line, 1: data, 2: CRLF after data */
    size_t remaining;
    char size_line[32];
    size_t size_len;
    double arrival;
} tail_t;

static void on_line(tail_t *t)
{
    t->line[t->len] = '\0';
    if (t->len < 5 || strncmp(t->line, "data:", 5) != 0)
        return;
    char *p = strstr(t->line, t->pattern);
    if (!p)
        return;
    p += t->plen;
    while (*p == ' ')
        p++;
    if (*p < '0' || *p > '9')
        return;
    fprintf(t->out, "%ld %.0f\n", strtol(p, NULL, 10), t->arrival * 1e6);
    t->events++;
}

static void body_bytes(tail_t *t, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\n') {
            if (t->len && t->line[t->len - 1] == '\r')
                t->len--;
            on_line(t);
            t->len = 0;
            continue;
        }
        if (t->len + 2 > t->cap) {
            t->cap = t->cap ? t->cap * 2 : 4096;
            t->line = realloc(t->line, t->cap);
        }
        t->line[t->len++] = c;
    }
}

static void wire_bytes(tail_t *t, const char *p, size_t n)
{
    if (!t->chunked) {
        body_bytes(t, p, n);
        return;
    }
    while (n > 0) {
        if (t->state == 0) {
            char c = *p++;
            n--;
            if (c == '\n') {
                t->size_line[t->size_len] = '\0';
                t->remaining = (size_t)strtoul(t->size_line, NULL, 16);
                t->size_len = 0;
                t->state = t->remaining ? 1 : 3;
            } else if (t->size_len + 1 < sizeof t->size_line) {
                t->size_line[t->size_len++] = c;
            }
        } else if (t->state == 1) {
            size_t k = n < t->remaining ? n : t->remaining;
            body_bytes(t, p, k);
            p += k;
            n -= k;
            t->remaining -= k;
            if (t->remaining == 0)
                t->state = 2;
        } else if (t->state == 2) {
            if (*p == '\n')
                t->state = 0;
            p++;
            n--;
        } else {
            return; /* last chunk */
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: %s HOST:PORT PATH KEY SECONDS OUTFILE PATTERN [READY_FILE]\n",
                argv[0]);
        return 2;
    }
    struct sockaddr_in addr;
    if (ev_parse_addr(argv[1], &addr) != 0)
        return 2;
    const char *key = strcmp(argv[3], "-") == 0 ? NULL : argv[3];
    double seconds = atof(argv[4]);
    tail_t t = {.pattern = argv[6], .plen = strlen(argv[6])};
    if (!(t.out = fopen(argv[5], "w"))) {
        perror(argv[5]);
        return 1;
    }
    int fd = ev_connect(&addr);
    if (fd < 0) {
        perror("sse_tail: connect");
        return 1;
    }
    char req[2048];
    int n = snprintf(
        req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n%s%s%s\r\n",
        argv[2], argv[1], key ? "Authorization: Bearer " : "", key ? key : "", key ? "\r\n" : "");
    if (write(fd, req, (size_t)n) != n)
        return 1;
    char buf[65536];
    size_t have = 0;
    int headers_done = 0;
    double end = ev_now() + seconds;
    ev_catch_stop();
    while (!ev_stop) {
        double left = end - ev_now();
        if (left <= 0)
            break;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, (int)(left * 1000) + 1);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            continue;
        ssize_t r = read(fd, buf + have, sizeof buf - have - 1);
        if (r <= 0)
            break;
        t.arrival = ev_wall();
        if (headers_done) {
            wire_bytes(&t, buf, (size_t)r);
            continue;
        }
        have += (size_t)r;
        buf[have] = '\0';
        char *e = strstr(buf, "\r\n\r\n");
        if (!e) {
            if (have >= sizeof buf - 1)
                return 1;
            continue;
        }
        int status = 0;
        sscanf(buf, "HTTP/1.%*d %d", &status);
        if (status != 200) {
            fprintf(stderr, "sse_tail: %d: %s\n", status, buf);
            return 1;
        }
        for (char *l = strstr(buf, "\r\n") + 2; l < e; l = strstr(l, "\r\n") + 2)
            if (strncasecmp(l, "transfer-encoding:", 18) == 0 && strstr(l, "chunked") &&
                strstr(l, "chunked") < e)
                t.chunked = 1;
        headers_done = 1;
        if (argc > 7) {
            FILE *ready = fopen(argv[7], "w");
            if (ready)
                fclose(ready);
        }
        size_t hl = (size_t)(e - buf) + 4;
        wire_bytes(&t, buf + hl, have - hl);
        have = 0; /* later reads go to the start of buf */
    }
    fclose(t.out);
    close(fd);
    printf("events=%ld\n", t.events);
    free(t.line);
    return 0;
}
