/*
 * JetStream side of bench/events' durable publish: CLIENTS threads, each with its own
 * connection and JetStream context, publish batches of BATCH events (the same ~200-byte
 * JSON events bench/events/http_pub.c posts to basalt) to a file-storage stream: one
 * batch = js_PublishAsync BATCH messages, then js_PublishAsyncComplete (every ack in).
 * Counts acknowledged messages only (the ack handler's successes) and checks that the
 * stream's message count grew by exactly that.
 *
 * Usage: js_pub URL STREAM SUBJECT CLIENTS BATCH SECONDS [EVENT_BYTES]
 *   creates STREAM (file storage, SUBJECT) when it does not exist.
 * Prints one line:
 *   acked=N errors=E batches=B seconds=S events_per_s=R p50_us=X p99_us=Y stream_delta=D
 * Exit status 0, or 1 when it could not run or the stream's count disagrees.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>

#include "events_common.h"

typedef struct {
    int id;
    const char *url, *subject;
    int batch, event_bytes;
    double seconds;
    atomic_long acked, errors;
    long published, batches;
    uint64_t *lat_us;
    size_t nlat, caplat;
    int failed;
} client_t;

static void ack_cb(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    client_t *c = closure;
    if (pa != NULL && pae == NULL)
        atomic_fetch_add(&c->acked, 1);
    else
        atomic_fetch_add(&c->errors, 1);
    natsMsg_Destroy(msg);
}

static void *client_main(void *arg)
{
    client_t *c = arg;
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsOptions jo;
    natsStatus s = natsConnection_ConnectTo(&nc, c->url);
    if (s == NATS_OK) {
        jsOptions_Init(&jo);
        jo.PublishAsync.MaxPending = c->batch * 2;
        jo.PublishAsync.AckHandler = ack_cb;
        jo.PublishAsync.AckHandlerClosure = c;
        s = natsConnection_JetStream(&js, nc, &jo);
    }
    if (s != NATS_OK) {
        fprintf(stderr, "js_pub: client %d: %s\n", c->id, natsStatus_GetText(s));
        c->failed = 1;
        goto out;
    }
    char *buf = malloc((size_t)c->event_bytes + 64);
    uint64_t seq = 0;
    double end = ev_now() + c->seconds;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 30000;
    while (ev_now() < end) {
        double t0 = ev_now();
        for (int i = 0; i < c->batch; i++) {
            int n = ev_format_event(buf, (size_t)c->event_bytes + 64, c->id, seq++, c->event_bytes);
            s = js_PublishAsync(js, c->subject, buf, n, NULL);
            if (s != NATS_OK) {
                atomic_fetch_add(&c->errors, 1);
                break;
            }
            c->published++;
        }
        s = js_PublishAsyncComplete(js, &po);
        if (s != NATS_OK) {
            fprintf(stderr, "js_pub: client %d: complete: %s\n", c->id, natsStatus_GetText(s));
            c->failed = 1;
            break;
        }
        uint64_t us = (uint64_t)((ev_now() - t0) * 1e6);
        if (c->nlat == c->caplat) {
            c->caplat = c->caplat ? c->caplat * 2 : 4096;
            c->lat_us = realloc(c->lat_us, c->caplat * sizeof *c->lat_us);
        }
        c->lat_us[c->nlat++] = us;
        c->batches++;
    }
    free(buf);
    /* The ack handler may still be running for the last acks when Complete returns. */
    for (int i = 0; i < 5000 && atomic_load(&c->acked) + atomic_load(&c->errors) < c->published;
         i++)
        nats_Sleep(1);
out:
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return NULL;
}

static int64_t stream_msgs(const char *url, const char *stream, const char *subject, int create)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    int64_t msgs = -1;
    natsStatus s = natsConnection_ConnectTo(&nc, url);
    if (s == NATS_OK)
        s = natsConnection_JetStream(&js, nc, NULL);
    if (s == NATS_OK) {
        s = js_GetStreamInfo(&si, js, stream, NULL, &jerr);
        if (s == NATS_NOT_FOUND && create) {
            jsStreamConfig sc;
            const char *subjects[1] = {subject};
            jsStreamConfig_Init(&sc);
            sc.Name = stream;
            sc.Subjects = subjects;
            sc.SubjectsLen = 1;
            sc.Storage = js_FileStorage;
            s = js_AddStream(&si, js, &sc, NULL, &jerr);
        }
    }
    if (s == NATS_OK && si != NULL)
        msgs = (int64_t)si->State.Msgs;
    else
        fprintf(stderr, "js_pub: stream %s: %s (jetstream error %d)\n", stream,
                natsStatus_GetText(s), (int)jerr);
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return msgs;
}

int main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: %s URL STREAM SUBJECT CLIENTS BATCH SECONDS [EVENT_BYTES]\n",
                argv[0]);
        return 2;
    }
    const char *url = argv[1], *stream = argv[2], *subject = argv[3];
    int nclients = atoi(argv[4]), batch = atoi(argv[5]);
    double seconds = atof(argv[6]);
    int event_bytes = argc > 7 ? atoi(argv[7]) : 200;
    if (nclients < 1 || batch < 1 || seconds <= 0 || event_bytes < 64) {
        fprintf(stderr, "js_pub: bad arguments\n");
        return 2;
    }
    if (nats_Open(-1) != NATS_OK)
        return 1;
    int64_t before = stream_msgs(url, stream, subject, 1);
    if (before < 0)
        return 1;
    client_t *cs = calloc((size_t)nclients, sizeof *cs);
    pthread_t *th = calloc((size_t)nclients, sizeof *th);
    double t0 = ev_now();
    for (int i = 0; i < nclients; i++) {
        cs[i] = (client_t){.id = i,
                           .url = url,
                           .subject = subject,
                           .batch = batch,
                           .event_bytes = event_bytes,
                           .seconds = seconds};
        pthread_create(&th[i], NULL, client_main, &cs[i]);
    }
    long acked = 0, errors = 0, batches = 0;
    int failed = 0;
    ev_lat_t lat = {0};
    for (int i = 0; i < nclients; i++) {
        pthread_join(th[i], NULL);
        acked += atomic_load(&cs[i].acked);
        errors += atomic_load(&cs[i].errors);
        batches += cs[i].batches;
        failed |= cs[i].failed;
        ev_lat_add(&lat, cs[i].lat_us, cs[i].nlat);
        free(cs[i].lat_us);
    }
    double secs = ev_now() - t0;
    int64_t after = stream_msgs(url, stream, subject, 0);
    printf("acked=%ld errors=%ld batches=%ld seconds=%.3f events_per_s=%.0f p50_us=%" PRIu64
           " p99_us=%" PRIu64 " stream_delta=%" PRId64 "\n",
           acked, errors, batches, secs, (double)acked / secs, ev_lat_pct(&lat, 50),
           ev_lat_pct(&lat, 99), after - before);
    ev_lat_free(&lat);
    free(cs);
    free(th);
    nats_Close();
    if (failed || after - before != acked) {
        fprintf(stderr, "js_pub: stream grew by %" PRId64 ", acknowledged %ld%s\n", after - before,
                acked, failed ? " (a client failed)" : "");
        return 1;
    }
    return 0;
}
