/*
 * Tails a basalt topic through a consumer group for bench/events' trigger latency and
 * writes when each record arrived: one line per delivered item, "<value>
 * <arrival_unix_time_us>", where <value> is the integer after the first PATTERN (e.g.
 * "\"source_offset\":") inside that item. Items without PATTERN are skipped.
 *
 * The loop is POST PATH (…/consumers/{group}/fetch?max=1000&wait=1s: answered as soon as
 * at least one record is there) on one keep-alive connection; nothing is acknowledged, so
 * the group must be made with a max_ack_pending and an ack_wait larger than the run needs.
 * (basalt's Server-Sent Events tail, GET /v1/topics/{name}/stream, is not built yet.)
 *
 * Usage: fetch_tail HOST:PORT PATH KEY SECONDS OUTFILE PATTERN [READY_FILE]
 *   KEY "-" sends no Authorization header. Stops after SECONDS, or on SIGTERM / SIGINT
 *   (the lines written so far are kept). READY_FILE is created after the first answer.
 * Prints "events=N fetches=F" on exit. Exit status 0, or 1 (no connection, a non-2xx).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events_common.h"

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
    const char *path = argv[2], *key = strcmp(argv[3], "-") == 0 ? NULL : argv[3];
    double seconds = atof(argv[4]);
    const char *pattern = argv[6];
    size_t plen = strlen(pattern);
    FILE *out = fopen(argv[5], "w");
    if (!out) {
        perror(argv[5]);
        return 1;
    }
    ev_catch_stop();
    int fd = ev_connect(&addr);
    if (fd < 0) {
        perror("fetch_tail: connect");
        return 1;
    }
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: 2\r\n%s%s%s\r\n{}",
                     path, argv[1], key ? "Authorization: Bearer " : "", key ? key : "",
                     key ? "\r\n" : "");
    ev_rbuf_t rb = {0};
    long events = 0, fetches = 0;
    double end = ev_now() + seconds;
    int rc = 0;
    while (!ev_stop && ev_now() < end) {
        int status = 0;
        char *body;
        size_t blen;
        if (ev_write_all(fd, req, (size_t)n) != 0 ||
            ev_read_response(fd, &rb, &status, &body, &blen) != 0) {
            if (!ev_stop) {
                fprintf(stderr, "fetch_tail: connection dropped\n");
                rc = 1;
            }
            break;
        }
        double at = ev_wall();
        fetches++;
        if (status < 200 || status > 299) {
            fprintf(stderr, "fetch_tail: %d: %.*s\n", status, (int)(blen > 500 ? 500 : blen), body);
            rc = 1;
            break;
        }
        if (fetches == 1 && argc > 7) {
            FILE *ready = fopen(argv[7], "w");
            if (ready)
                fclose(ready);
        }
        /* Items are objects that start with "delivery_id"; take PATTERN within each. */
        char save = body[blen];
        body[blen] = '\0';
        char *item = strstr(body, "\"delivery_id\"");
        while (item) {
            char *next = strstr(item + 13, "\"delivery_id\"");
            char *p = strstr(item, pattern);
            if (p && (!next || p < next)) {
                p += plen;
                while (*p == ' ')
                    p++;
                if (*p >= '0' && *p <= '9') {
                    fprintf(out, "%ld %.0f\n", strtol(p, NULL, 10), at * 1e6);
                    events++;
                }
            }
            item = next;
        }
        body[blen] = save;
    }
    fclose(out);
    close(fd);
    free(rb.p);
    printf("events=%ld fetches=%ld\n", events, fetches);
    return rc;
}
