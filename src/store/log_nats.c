/*
 * The JetStream backend of the shared durable log (log.h), on libnats.
 *
 * Mapping
 *   - A topic (tenant, topic) is one stream, file storage, one replica,
 *     retention "limits" (MaxAge = retention, MaxBytes = retention_bytes,
 *     discard old), named "basalt_<len(tenant)>_<tenant>_<topic>": names
 *     are [a-z0-9_-] so both may hold '_', and the decimal length makes the
 *     split unambiguous ("basalt_7_default_orders"). Its one subject is
 *     "basalt.log.<tenant>.<topic>" (names hold no '.', so tokens cannot
 *     collide). The stream's description holds basalt's topic config
 *     ("basalt topic: retention_ms=... sync_interval_ms=..."), so every
 *     replica reads back exactly what was ensured.
 *   - offset = stream sequence - 1. JetStream sequences are dense for stored
 *     messages (a duplicate gets none), so offsets are too; retention only
 *     moves the first one.
 *   - A record's id is the header Basalt-Id; its dedup key is Nats-Msg-Id
 *     (sent only when the topic has a dedup window), and the stream's
 *     Duplicates window is the topic's dedup_window_ms (clamped to MaxAge,
 *     which JetStream requires). A duplicate's pub ack names the original's
 *     sequence; the original's id is read back from it (a direct get).
 *   - time = the message's JetStream timestamp (the server's clock, ns,
 *     truncated to ms). It does not decrease while the server's wall clock
 *     does not step back.
 *   - max_record_bytes is checked here (data bytes) and by the stream's
 *     MaxMsgSize (max_record_bytes + 4 KiB for headers); a record whose
 *     message would exceed the server's max_payload is BS_ETOOBIG too.
 *   - Reads by offset are direct gets ($JS.API.DIRECT.GET.<stream>, the
 *     stream has AllowDirect), pipelined: up to 256 requests in flight,
 *     answered on this connection's inbox. offset_at is a binary search over
 *     sequences (timestamps do not decrease).
 *   - Watches: the stream republishes each stored message's headers (RePublish,
 *     headers only) to "basalt.tail.<tenant>.<topic>"; a core subscription on
 *     it, held while the topic is watched, carries the new sequence from
 *     whichever replica appended. Core delivery is at most once, so the
 *     maintenance thread also polls the stream info of watched topics every
 *     second (and notices a drop by another replica).
 *   - Consumer groups, dead letters, delivery ids: log_nats_group.c.
 *
 * Durability (docs/scaleout.md, "Events on JetStream"): an append is
 * acknowledged when JetStream's pub ack arrives, i.e. when the stream leader
 * has written it to its file, not when it is fsynced. nats-server 2.9 (Debian
 * 12's 2.9.10) fsyncs a stream's blocks every 2 minutes (hard-coded) and has
 * no setting for it; 2.10 added the server-wide `jetstream { sync_interval }`,
 * `always` included. A topic's sync_interval_ms cannot be applied per stream:
 * it is recorded in the stream's description and reported, nothing more.
 * So on JetStream an acknowledged event survives a crash of nats-server or of
 * basalt (the data is in the kernel's page cache) but not a power loss or a
 * kernel crash within the server's sync interval, unless the server runs with
 * sync_interval: always (2.10+) or with several replicas. A consumer group's
 * recent acks may not survive a nats-server crash: acked records can be
 * delivered again (at least once still holds).
 *
 * Threads
 *   - libnats' own: the connection's reader and flusher, and its shared pool
 *     of two delivery threads for every subscription (the inbox, each
 *     watched topic's tail, each waiting fetch), so subscriptions cost no
 *     thread.
 *   - the publisher: drains the append queue (bs_log_append_async never
 *     touches the socket), resolves topics this process has not seen, checks
 *     sizes and publishes with reply <inbox>.<token>; at most 65536 records
 *     in flight.
 *   - two workers: jobs that wait on the network off the delivery thread
 *     (reading back a duplicate's original id, dead-lettering).
 *   - the maintenance thread, every 100 ms: publish timeouts (10 s), fetch
 *     deadlines and retries, watch polls, idle tail subscriptions, gauges
 *     for /metrics (every 2 s).
 * Replies to appends and reads come to one wildcard subscription, <inbox>.*,
 * whose callback finds the waiting request by token in a hash map; each
 * waiting fetch has a subscription of its own (JetStream delivers pulled
 * messages under their original subject, so only the subscription tells
 * which fetch they answer).
 *
 * Connection: named after replica_id, reconnecting forever (250 ms apart,
 * jittered); requests fail at once while disconnected, publishes are
 * buffered by libnats (32 MiB) and sent on reconnect. Open fails with
 * BS_EUNAVAIL when the first connect fails or JetStream does not answer.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/id.h"
#include "base/log.h"
#include "base/time.h"
#include "store/log_nats_int.h"

#define MAX_INFLIGHT 65536
#define MAX_QUEUED 200000
#define READ_WINDOW 256
#define HDR_ALLOWANCE 4096
#define TAIL_IDLE_MS 30000
#define WATCH_POLL_MS 1000
#define NL_DELIVERY_THREADS 2

typedef struct {
    char id[129];
    char *dedup;  /* header-encoded; NULL: none */
    natsMsg *msg; /* built at queue time: the copy of the caller's data */
    size_t len;
    nl_pend_t pend;
} nl_rec_t;

struct nl_append {
    nl_append_t *next;
    nlog_t *l;
    nl_topic_t *t;
    bs_log_append_cb cb;
    void *ud;
    int n;
    int outstanding; /* records not answered yet (published or not) */
    int failed;      /* the code the whole append fails with */
    bs_err_t err;
    int dups;
    uint64_t queued_ns;
    bs_log_append_result_t *res;
    nl_rec_t *recs;
};

struct nl_watch {
    nl_watch_t *next;
    int64_t id;
    nl_topic_t *t;
    int64_t after;
    bs_log_wake_cb cb;
    void *ud;
};

typedef struct {
    nlog_t *l;
    nl_topic_t *t;
} nl_tail_ctx_t;

typedef struct {
    pthread_cond_t cv;
    int n, got;
    natsMsg **msgs;
    nl_pend_t *pends;
} nl_read_t;

static const double hist_bounds[NL_HIST_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                    0.1,    0.25,  0.5,    1,     2.5,  5,     10};

static void fire_ready(nlog_t *l, nl_topic_t *t, int all);

/* ---- small helpers ----------------------------------------------------------------------- */

/* Percent-encodes what a NATS header value cannot hold (controls, space, '%'). */
static void hdr_encode(const char *s, char *out, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && o + 4 < n; p++) {
        if (*p <= 0x20 || *p == 0x7f || *p == '%') {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        } else {
            out[o++] = (char)*p;
        }
    }
    out[o] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Reverses hdr_encode in place. */
static void hdr_decode(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        int h, lo;
        if (*r == '%' && (h = hexval(r[1])) >= 0 && (lo = hexval(r[2])) >= 0) {
            *w++ = (char)(h * 16 + lo);
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

int bs__nl_names(const char *tenant, const char *topic, const char *group, bs_err_t *err)
{
    if (!bs__log_valid_name(tenant))
        return bs_err_setf(err, BS_EINVAL, "tenant",
                           "tenant '%.64s' must match [a-z0-9][a-z0-9_-]{0,62}",
                           tenant ? tenant : "");
    if (!bs__log_valid_name(topic))
        return bs_err_setf(err, BS_EINVAL, "topic",
                           "topic '%.64s' must match [a-z0-9][a-z0-9_-]{0,62}", topic ? topic : "");
    if (group && !bs__log_valid_name(group))
        return bs_err_setf(err, BS_EINVAL, "group",
                           "group '%.64s' must match [a-z0-9][a-z0-9_-]{0,62}", group);
    return 0;
}

int bs__nl_err(bs_err_t *err, natsStatus s, jsErrCode jerr, const char *what)
{
    const char *last = nats_GetLastError(NULL);
    if (!last || !*last)
        last = natsStatus_GetText(s);
    if (jerr == JSStreamNotFoundErr)
        return bs_err_set(err, BS_ENOTFOUND, "%s: no such topic", what);
    if (jerr == JSConsumerNotFoundErr)
        return bs_err_set(err, BS_ENOTFOUND, "%s: no such consumer group", what);
    switch (s) {
    case NATS_TIMEOUT:
    case NATS_NO_RESPONDERS:
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NO_SERVER:
    case NATS_STALE_CONNECTION:
    case NATS_NOT_YET_CONNECTED:
    case NATS_CONNECTION_AUTH_FAILED:
        return bs_err_set(err, BS_EUNAVAIL, "%s: jetstream unavailable: %.160s", what, last);
    default:
        break;
    }
    if (jerr != 0 && jerr != JSNotEnabledErr)
        return bs_err_set(err, BS_EINVAL, "%s: jetstream refused it (%d): %.160s", what, (int)jerr,
                          last);
    return bs_err_set(err, BS_EIO, "%s: %.160s", what, last);
}

/* ---- the pending-reply map --------------------------------------------------------------- */

static nl_pend_t **pend_slot(nlog_t *l, uint64_t token)
{
    return &l->pend[(token * 0x9E3779B97F4A7C15ull) >> 52 & (NL_HBUCKETS - 1)];
}

/* Registers p under a fresh token. Under l->mu. */
static void pend_add(nlog_t *l, nl_pend_t *p, int kind, void *obj, int index)
{
    p->token = ++l->next_token;
    p->kind = kind;
    p->obj = obj;
    p->index = index;
    p->prev = p->next = NULL;
    p->deadline_ns = 0;
    nl_pend_t **s = pend_slot(l, p->token);
    p->hnext = *s;
    *s = p;
}

static nl_pend_t *pend_find(nlog_t *l, uint64_t token)
{
    for (nl_pend_t *p = *pend_slot(l, token); p; p = p->hnext)
        if (p->token == token)
            return p;
    return NULL;
}

static void fifo_unlink(nlog_t *l, nl_pend_t *p)
{
    if (p->deadline_ns == 0)
        return;
    if (p->prev)
        p->prev->next = p->next;
    else
        l->pub_head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        l->pub_tail = p->prev;
    p->prev = p->next = NULL;
    p->deadline_ns = 0;
    l->pub_inflight--;
}

/* Removes p if registered; 1 if it was. Under l->mu. */
static int pend_del(nlog_t *l, nl_pend_t *p)
{
    if (p->token == 0)
        return 0;
    for (nl_pend_t **s = pend_slot(l, p->token); *s; s = &(*s)->hnext)
        if (*s == p) {
            *s = p->hnext;
            p->hnext = NULL;
            p->token = 0;
            fifo_unlink(l, p);
            return 1;
        }
    return 0;
}

/* "<inbox>.<token>" into out. */
static void reply_subject(const nlog_t *l, const nl_pend_t *p, char *out, size_t n)
{
    snprintf(out, n, "%s.%" PRIu64, l->inbox, p->token);
}

/* ---- topics and jobs --------------------------------------------------------------------- */

static unsigned topic_hash(const char *tenant, const char *topic)
{
    unsigned h = 2166136261u;
    for (const char *p = tenant; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ '/') * 16777619u;
    for (const char *p = topic; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h;
}

nl_topic_t *bs__nl_topic(nlog_t *l, const char *tenant, const char *topic)
{
    unsigned b = topic_hash(tenant, topic) % NL_TBUCKETS;
    for (nl_topic_t *t = l->topics[b]; t; t = t->hnext)
        if (strcmp(t->tenant, tenant) == 0 && strcmp(t->name, topic) == 0)
            return t;
    nl_topic_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    snprintf(t->tenant, sizeof t->tenant, "%s", tenant);
    snprintf(t->name, sizeof t->name, "%s", topic);
    snprintf(t->stream, sizeof t->stream, "basalt_%zu_%s_%s", strlen(tenant), tenant, topic);
    snprintf(t->subject, sizeof t->subject, "basalt.log.%s.%s", tenant, topic);
    snprintf(t->tail, sizeof t->tail, "basalt.tail.%s.%s", tenant, topic);
    t->next_offset = -1;
    t->hnext = l->topics[b];
    l->topics[b] = t;
    l->ntopics++;
    return t;
}

nl_group_t *bs__nl_group(nl_topic_t *t, const char *group)
{
    for (nl_group_t *g = t->groups; g; g = g->next)
        if (strcmp(g->name, group) == 0)
            return g;
    nl_group_t *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    snprintf(g->name, sizeof g->name, "%s", group);
    g->next = t->groups;
    t->groups = g;
    return g;
}

/* Snapshot of every topic pointer (they live until close). Under l->mu. */
static nl_topic_t **topics_snapshot(nlog_t *l, int *n)
{
    nl_topic_t **a = malloc(sizeof *a * (size_t)(l->ntopics ? l->ntopics : 1));
    int k = 0;
    if (!a) {
        *n = 0;
        return NULL;
    }
    for (int b = 0; b < NL_TBUCKETS; b++)
        for (nl_topic_t *t = l->topics[b]; t; t = t->hnext)
            a[k++] = t;
    *n = k;
    return a;
}

int bs__nl_job(nlog_t *l, void (*fn)(void *), void *arg)
{
    if (l->stop_threads)
        return BS_EUNAVAIL;
    nl_job_t *j = malloc(sizeof *j);
    if (!j)
        return BS_ENOMEM;
    j->fn = fn;
    j->arg = arg;
    j->next = NULL;
    if (l->j_tail)
        l->j_tail->next = j;
    else
        l->j_head = j;
    l->j_tail = j;
    pthread_cond_signal(&l->work_cv);
    return 0;
}

static void *worker_main(void *arg)
{
    nlog_t *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->j_head && !l->stop_threads)
            pthread_cond_wait(&l->work_cv, &l->mu);
        if (!l->j_head)
            break;
        nl_job_t *j = l->j_head;
        l->j_head = j->next;
        if (!l->j_head)
            l->j_tail = NULL;
        l->jobs_running++;
        pthread_mutex_unlock(&l->mu);
        j->fn(j->arg);
        free(j);
        pthread_mutex_lock(&l->mu);
        l->jobs_running--;
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ---- stream info ------------------------------------------------------------------------- */

/* The topic config JetStream holds for t: basalt's own from the description when it is
 * there, else read off the stream's limits. */
static void config_from_stream(const jsStreamConfig *sc, bs_log_topic_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->retention_ms = sc->MaxAge / 1000000;
    c->retention_bytes = sc->MaxBytes > 0 ? sc->MaxBytes : 0;
    c->dedup_window_ms = sc->Duplicates / 1000000;
    c->max_record_bytes =
        sc->MaxMsgSize > HDR_ALLOWANCE ? sc->MaxMsgSize - HDR_ALLOWANCE : (1 << 20);
    /* "basalt topic: key=value ..." (libnats sends the description unescaped, so it holds
     * no quotes) */
    const char *d = sc->Description;
    if (d && strncmp(d, "basalt topic:", 13) == 0) {
        static const char *keys[] = {"retention_ms",    "retention_bytes",  "sync_interval_ms",
                                     "dedup_window_ms", "max_record_bytes", "segment_bytes"};
        int64_t *dst[] = {&c->retention_ms,    &c->retention_bytes,  &c->sync_interval_ms,
                          &c->dedup_window_ms, &c->max_record_bytes, &c->segment_bytes};
        for (int i = 0; i < 6; i++) {
            char pat[48];
            snprintf(pat, sizeof pat, " %s=", keys[i]);
            const char *p = strstr(d, pat);
            long long v;
            if (p && sscanf(p + strlen(pat), "%lld", &v) == 1 && v >= 0)
                *dst[i] = (int64_t)v;
        }
    }
    if (c->max_record_bytes <= 0)
        c->max_record_bytes = 1 << 20;
}

/* Copies a stream info into t. Under l->mu. */
static void topic_from_info(nl_topic_t *t, const jsStreamInfo *si)
{
    t->state = NL_PRESENT;
    t->checked_ms = bs_time_wall_ms();
    if (si->Config)
        config_from_stream(si->Config, &t->cfg);
    const jsStreamState *st = &si->State;
    /* Sequences only grow within one stream; a stream created anew (dropped and ensured
     * again, perhaps by another replica) starts over. */
    if (si->Created != t->created || (int64_t)st->LastSeq > t->next_offset)
        t->next_offset = (int64_t)st->LastSeq;
    t->created = si->Created;
    t->records = (int64_t)st->Msgs;
    t->first_offset = st->Msgs ? (int64_t)st->FirstSeq - 1 : (int64_t)st->LastSeq;
    t->bytes = (int64_t)st->Bytes;
    t->first_time_ms = st->Msgs ? st->FirstTime / 1000000 : 0;
    t->last_time_ms = st->Msgs ? st->LastTime / 1000000 : 0;
}

int bs__nl_stream_refresh(nlog_t *l, nl_topic_t *t, bs_err_t *err)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, l->js, t->stream, NULL, &jerr);
    if (s == NATS_OK && si) {
        pthread_mutex_lock(&l->mu);
        topic_from_info(t, si);
        pthread_mutex_unlock(&l->mu);
        jsStreamInfo_Destroy(si);
        return 0;
    }
    if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
        pthread_mutex_lock(&l->mu);
        t->state = NL_ABSENT;
        t->checked_ms = bs_time_wall_ms();
        for (nl_group_t *g = t->groups; g; g = g->next)
            g->present = 0;
        pthread_mutex_unlock(&l->mu);
        return bs_err_set(err, BS_ENOTFOUND, "no topic '%s'", t->name);
    }
    return bs__nl_err(err, s, jerr, "stream info");
}

/* The topic, known to exist (looked up when this process has not seen it for a while).
 * NULL with err (BS_ENOTFOUND, ...). Waits. */
static nl_topic_t *topic_resolve(nlog_t *l, const char *tenant, const char *topic, bs_err_t *err)
{
    if (bs__nl_names(tenant, topic, NULL, err))
        return NULL;
    pthread_mutex_lock(&l->mu);
    nl_topic_t *t = bs__nl_topic(l, tenant, topic);
    pthread_mutex_unlock(&l->mu);
    if (!t) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    if (bs__nl_stream_refresh(l, t, err))
        return NULL;
    return t;
}

/* ---- appending --------------------------------------------------------------------------- */

static void append_free(nl_append_t *a)
{
    for (int i = 0; i < a->n; i++) {
        if (a->recs[i].msg)
            natsMsg_Destroy(a->recs[i].msg);
        free(a->recs[i].dedup);
    }
    free(a->recs);
    free(a->res);
    free(a);
}

/* Calls the append's callback and frees it. Without l->mu. */
static void append_finish(nlog_t *l, nl_append_t *a)
{
    double secs = (double)(bs_time_mono_ns() - a->queued_ns) / 1e9;
    pthread_mutex_lock(&l->mu);
    int b = 0;
    while (b < NL_HIST_BUCKETS && secs > hist_bounds[b])
        b++;
    l->hist[b]++;
    l->hist_sum += secs;
    l->hist_count++;
    pthread_mutex_unlock(&l->mu);
    if (a->failed)
        a->cb(a->ud, a->failed, NULL, 0, &a->err);
    else
        a->cb(a->ud, 0, a->res, a->n, NULL);
    append_free(a);
}

/* Reads the id of the message at seq into id (unchanged when it cannot be read). */
static int read_ids(nlog_t *l, nl_topic_t *t, const uint64_t *seqs, int n, char (*ids)[129],
                    bs_err_t *err);

static void dup_lookup_job(void *arg)
{
    nl_append_t *a = arg;
    uint64_t *seqs = malloc(sizeof *seqs * (size_t)a->n);
    char(*ids)[129] = malloc(sizeof *ids * (size_t)a->n);
    int *idx = malloc(sizeof *idx * (size_t)a->n);
    int k = 0;
    if (seqs && ids && idx) {
        for (int i = 0; i < a->n; i++)
            if (a->res[i].code == 0 && a->res[i].duplicate) {
                seqs[k] = (uint64_t)a->res[i].offset + 1;
                snprintf(ids[k], sizeof ids[k], "%s", a->res[i].id);
                idx[k++] = i;
            }
        bs_err_t err;
        if (read_ids(a->l, a->t, seqs, k, ids, &err) == 0)
            for (int j = 0; j < k; j++)
                snprintf(a->res[idx[j]].id, sizeof a->res[idx[j]].id, "%s", ids[j]);
    }
    free(seqs);
    free(ids);
    free(idx);
    append_finish(a->l, a);
}

/* The append's last record was answered. Without l->mu. */
static void append_complete(nlog_t *l, nl_append_t *a)
{
    if (!a->failed && a->dups > 0) {
        pthread_mutex_lock(&l->mu);
        int rc = bs__nl_job(l, dup_lookup_job, a);
        pthread_mutex_unlock(&l->mu);
        if (rc == 0)
            return;
    }
    append_finish(l, a);
}

/* One record of a is answered (or will never be). Under l->mu; 1 if a is now complete. */
static int record_done(nl_append_t *a)
{
    return --a->outstanding == 0;
}

static void append_fail(nl_append_t *a, int code, const bs_err_t *err)
{
    if (!a->failed) {
        a->failed = code;
        if (err)
            a->err = *err;
    }
}

/* A reply to a published record: a pub ack, a JetStream error, or "no responders". */
static void on_pub_reply(nlog_t *l, nl_pend_t *p, natsMsg *m)
{
    nl_append_t *a = p->obj;
    nl_topic_t *t = a->t;
    int i = p->index;
    uint64_t seq = 0;
    int dup = 0, code = 0, whole = 0;
    bs_err_t err;
    bs_err_clear(&err);
    if (natsMsg_IsNoResponders(m)) {
        whole = bs_err_set(&err, BS_ENOTFOUND, "no topic '%s'", t->name);
    } else {
        cJSON *j = cJSON_ParseWithLength(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
        cJSON *e = j ? cJSON_GetObjectItemCaseSensitive(j, "error") : NULL;
        cJSON *s = j ? cJSON_GetObjectItemCaseSensitive(j, "seq") : NULL;
        if (e) {
            cJSON *ec = cJSON_GetObjectItemCaseSensitive(e, "err_code");
            cJSON *ds = cJSON_GetObjectItemCaseSensitive(e, "description");
            int jc = cJSON_IsNumber(ec) ? ec->valueint : 0;
            const char *desc = cJSON_IsString(ds) ? ds->valuestring : "error";
            if (jc == JSStreamMessageExceedsMaximumErr)
                code = BS_ETOOBIG;
            else if (jc == JSStreamNotFoundErr)
                whole = bs_err_set(&err, BS_ENOTFOUND, "no topic '%s'", t->name);
            else
                whole =
                    bs_err_set(&err, BS_EIO, "jetstream refused the append (%d): %.160s", jc, desc);
        } else if (cJSON_IsNumber(s) && s->valuedouble >= 1) {
            seq = (uint64_t)s->valuedouble;
            dup = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "duplicate"));
        } else {
            whole = bs_err_set(&err, BS_EIO, "unreadable jetstream pub ack");
        }
        cJSON_Delete(j);
    }
    int fire = 0;
    pthread_mutex_lock(&l->mu);
    if (whole) {
        append_fail(a, whole, &err);
        if (whole == BS_ENOTFOUND) {
            t->state = NL_ABSENT;
            t->checked_ms = bs_time_wall_ms();
        }
    } else if (code) {
        a->res[i].code = code;
        a->res[i].offset = -1;
    } else {
        a->res[i].offset = (int64_t)seq - 1;
        a->res[i].duplicate = dup;
        if (dup) {
            a->dups++;
            t->duplicates++;
        } else {
            t->appended++;
        }
        if ((int64_t)seq > t->next_offset) {
            t->next_offset = (int64_t)seq;
            fire = t->nwatch > 0;
        }
    }
    int done = record_done(a);
    if (l->pub_throttled && l->pub_inflight < MAX_INFLIGHT / 2)
        pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    if (fire)
        fire_ready(l, t, 0);
    if (done)
        append_complete(l, a);
}

static int append_async(bs_log_t *base, const char *tenant, const char *topic,
                        const bs_log_record_in_t *recs, int n, bs_log_append_cb cb, void *ud,
                        bs_err_t *err)
{
    nlog_t *l = (nlog_t *)base;
    int rc = bs__nl_names(tenant, topic, NULL, err);
    if (rc)
        return rc;
    for (int i = 0; i < n; i++) {
        if (recs[i].id && strlen(recs[i].id) > 128)
            return bs_err_setf(err, BS_EINVAL, "id", "record %d: id is %zu bytes, at most 128", i,
                               strlen(recs[i].id));
        if (recs[i].dedup_key && strlen(recs[i].dedup_key) > 256)
            return bs_err_setf(err, BS_EINVAL, "dedup_key",
                               "record %d: dedup key is %zu bytes, at most 256", i,
                               strlen(recs[i].dedup_key));
        if (recs[i].len > 0 && !recs[i].data)
            return bs_err_set(err, BS_EINVAL, "record %d: no data", i);
        if (recs[i].len > (size_t)INT32_MAX)
            return bs_err_set(err, BS_ETOOBIG, "record %d: %zu bytes", i, recs[i].len);
    }
    pthread_mutex_lock(&l->mu);
    if (l->closing) {
        pthread_mutex_unlock(&l->mu);
        return bs_err_set(err, BS_EUNAVAIL, "the log is closing");
    }
    nl_topic_t *t = bs__nl_topic(l, tenant, topic);
    if (!t) {
        pthread_mutex_unlock(&l->mu);
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    /* A topic not known to exist is looked up by the publisher (it may have been made by
     * another replica a moment ago): a missing one fails through cb with BS_ENOTFOUND. */
    if (l->q_records + n > MAX_QUEUED) {
        pthread_mutex_unlock(&l->mu);
        return bs_err_set(err, BS_EOVERLOAD, "%lld records wait for jetstream; retry later",
                          (long long)l->q_records);
    }
    pthread_mutex_unlock(&l->mu);

    nl_append_t *a = calloc(1, sizeof *a);
    if (a) {
        a->res = calloc((size_t)n, sizeof *a->res);
        a->recs = calloc((size_t)n, sizeof *a->recs);
    }
    if (!a || !a->res || !a->recs) {
        if (a) {
            free(a->res);
            free(a->recs);
            free(a);
        }
        return bs_err_set(err, BS_ENOMEM, "out of memory for %d records", n);
    }
    a->l = l;
    a->t = t;
    a->cb = cb;
    a->ud = ud;
    a->n = n;
    a->outstanding = n;
    a->queued_ns = bs_time_mono_ns();
    /* Tokens first (under the lock), then the messages (copies of the data) outside it. */
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < n; i++)
        pend_add(l, &a->recs[i].pend, NL_PEND_PUB, a, i);
    pthread_mutex_unlock(&l->mu);
    char reply[96], hdr[800];
    natsStatus s = NATS_OK;
    for (int i = 0; i < n && s == NATS_OK; i++) {
        nl_rec_t *r = &a->recs[i];
        if (recs[i].id)
            snprintf(r->id, sizeof r->id, "%s", recs[i].id);
        else
            bs_uuid7(r->id);
        snprintf(a->res[i].id, sizeof a->res[i].id, "%s", r->id);
        a->res[i].offset = -1;
        r->len = recs[i].len;
        reply_subject(l, &r->pend, reply, sizeof reply);
        s = natsMsg_Create(&r->msg, t->subject, reply, recs[i].data, (int)recs[i].len);
        if (s == NATS_OK) {
            hdr_encode(r->id, hdr, sizeof hdr);
            s = natsMsgHeader_Set(r->msg, "Basalt-Id", hdr);
        }
        if (s == NATS_OK && recs[i].dedup_key && recs[i].dedup_key[0]) {
            hdr_encode(recs[i].dedup_key, hdr, sizeof hdr);
            r->dedup = strdup(hdr);
            if (!r->dedup)
                s = NATS_NO_MEMORY;
        }
    }
    pthread_mutex_lock(&l->mu);
    if (s != NATS_OK || l->closing) {
        for (int i = 0; i < n; i++)
            pend_del(l, &a->recs[i].pend);
        int closing = l->closing;
        pthread_mutex_unlock(&l->mu);
        append_free(a);
        return closing ? bs_err_set(err, BS_EUNAVAIL, "the log is closing")
                       : bs_err_set(err, BS_ENOMEM, "out of memory building %d messages", n);
    }
    if (l->q_tail)
        l->q_tail->next = a;
    else
        l->q_head = a;
    l->q_tail = a;
    l->q_records += n;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

/* Publishes the records of one append (the publisher thread). */
static void publish_append(nlog_t *l, nl_append_t *a)
{
    nl_topic_t *t = a->t;
    bs_err_t err;
    pthread_mutex_lock(&l->mu);
    int state = t->state;
    int64_t age = bs_time_wall_ms() - t->checked_ms;
    pthread_mutex_unlock(&l->mu);
    if (state != NL_PRESENT || age > 60000) {
        int rc = bs__nl_stream_refresh(l, t, &err);
        if (rc && (rc == BS_ENOTFOUND || state != NL_PRESENT)) {
            pthread_mutex_lock(&l->mu);
            for (int i = 0; i < a->n; i++)
                pend_del(l, &a->recs[i].pend);
            append_fail(a, rc, &err);
            a->outstanding = 0;
            pthread_mutex_unlock(&l->mu);
            append_finish(l, a);
            return;
        }
    }
    pthread_mutex_lock(&l->mu);
    int64_t max_record = t->cfg.max_record_bytes > 0 ? t->cfg.max_record_bytes : (1 << 20);
    int dedup = t->cfg.dedup_window_ms > 0;
    pthread_mutex_unlock(&l->mu);
    int64_t max_payload = natsConnection_GetMaxPayload(l->nc);
    int n = a->n;
    for (int i = 0; i < n; i++) {
        nl_rec_t *r = &a->recs[i];
        natsMsg *m = r->msg;
        int skip = 0;
        natsStatus s = NATS_OK;
        if ((int64_t)r->len > max_record) {
            a->res[i].code = BS_ETOOBIG;
            skip = 1;
        } else if (max_payload > 0 &&
                   (int64_t)r->len + 1024 + (int64_t)strlen(t->subject) > max_payload) {
            a->res[i].code = BS_ETOOBIG; /* the server's max_payload is the tighter limit */
            skip = 1;
        }
        if (!skip && dedup && r->dedup)
            s = natsMsgHeader_Set(m, "Nats-Msg-Id", r->dedup);
        pthread_mutex_lock(&l->mu);
        if (skip || a->failed || s != NATS_OK) {
            if (s != NATS_OK)
                append_fail(a, BS_ENOMEM, NULL);
            pend_del(l, &r->pend);
            int done = record_done(a);
            pthread_mutex_unlock(&l->mu);
            if (done)
                append_complete(l, a);
            continue;
        }
        r->msg = NULL; /* ours now; a reply may complete (and free) a after the publish */
        r->pend.deadline_ns = bs_time_mono_ns() + (uint64_t)NL_PUB_TIMEOUT_MS * 1000000u;
        r->pend.prev = l->pub_tail;
        r->pend.next = NULL;
        if (l->pub_tail)
            l->pub_tail->next = &r->pend;
        else
            l->pub_head = &r->pend;
        l->pub_tail = &r->pend;
        l->pub_inflight++;
        pthread_mutex_unlock(&l->mu);
        s = natsConnection_PublishMsg(l->nc, m);
        natsMsg_Destroy(m);
        if (s != NATS_OK) {
            bs_err_t e;
            bs__nl_err(&e, s, 0, "publish");
            pthread_mutex_lock(&l->mu);
            int done = 0;
            if (pend_del(l, &r->pend)) {
                append_fail(a, e.code ? e.code : BS_EUNAVAIL, &e);
                done = record_done(a);
            }
            pthread_mutex_unlock(&l->mu);
            if (done)
                append_complete(l, a);
        }
    }
}

static void *publisher_main(void *arg)
{
    nlog_t *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->q_head && !l->stop_threads)
            pthread_cond_wait(&l->cv, &l->mu);
        if (!l->q_head)
            break;
        while (l->pub_inflight >= MAX_INFLIGHT && !l->stop_threads) {
            l->pub_throttled = 1;
            pthread_cond_wait(&l->cv, &l->mu);
        }
        l->pub_throttled = 0;
        nl_append_t *a = l->q_head;
        l->q_head = a->next;
        if (!l->q_head)
            l->q_tail = NULL;
        l->q_records -= a->n;
        a->next = NULL;
        pthread_mutex_unlock(&l->mu);
        publish_append(l, a);
        pthread_mutex_lock(&l->mu);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* Appends publish timeouts (the maintenance thread). */
static void pub_timeouts(nlog_t *l)
{
    uint64_t now = bs_time_mono_ns();
    nl_append_t *done[64];
    int nd = 0;
    pthread_mutex_lock(&l->mu);
    while (l->pub_head && l->pub_head->deadline_ns <= now && nd < 64) {
        nl_pend_t *p = l->pub_head;
        nl_append_t *a = p->obj;
        pend_del(l, p);
        bs_err_t e;
        bs_err_set(&e, BS_EUNAVAIL, "jetstream did not acknowledge the append within %d ms",
                   NL_PUB_TIMEOUT_MS);
        append_fail(a, BS_EUNAVAIL, &e);
        if (record_done(a))
            done[nd++] = a;
    }
    if (l->pub_throttled)
        pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < nd; i++)
        append_complete(l, done[i]);
}

int bs__nl_publish_sync(nlog_t *l, nl_topic_t *t, const char *id, const char *dedup_key,
                        const void *data, size_t len, uint64_t *seq, bs_err_t *err)
{
    natsMsg *m = NULL, *reply = NULL;
    char hdr[800];
    natsStatus s = natsMsg_Create(&m, t->subject, NULL, data, (int)len);
    if (s == NATS_OK) {
        hdr_encode(id, hdr, sizeof hdr);
        s = natsMsgHeader_Set(m, "Basalt-Id", hdr);
    }
    if (s == NATS_OK && dedup_key && *dedup_key) {
        hdr_encode(dedup_key, hdr, sizeof hdr);
        s = natsMsgHeader_Set(m, "Nats-Msg-Id", hdr);
    }
    if (s == NATS_OK)
        s = natsConnection_RequestMsg(&reply, l->nc, m, NL_REQ_TIMEOUT_MS);
    natsMsg_Destroy(m);
    if (s == NATS_NO_RESPONDERS)
        return bs_err_set(err, BS_ENOTFOUND, "no topic '%s'", t->name);
    if (s != NATS_OK)
        return bs__nl_err(err, s, 0, "append");
    cJSON *j = cJSON_ParseWithLength(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply));
    cJSON *sq = j ? cJSON_GetObjectItemCaseSensitive(j, "seq") : NULL;
    cJSON *e = j ? cJSON_GetObjectItemCaseSensitive(j, "error") : NULL;
    int rc = 0;
    if (!e && cJSON_IsNumber(sq)) {
        *seq = (uint64_t)sq->valuedouble;
        pthread_mutex_lock(&l->mu);
        if ((int64_t)*seq > t->next_offset)
            t->next_offset = (int64_t)*seq;
        t->appended++;
        pthread_mutex_unlock(&l->mu);
    } else {
        cJSON *ds = e ? cJSON_GetObjectItemCaseSensitive(e, "description") : NULL;
        rc = bs_err_set(err, BS_EIO, "jetstream refused the append: %.160s",
                        cJSON_IsString(ds) ? ds->valuestring : "unreadable pub ack");
    }
    cJSON_Delete(j);
    natsMsg_Destroy(reply);
    if (rc == 0)
        fire_ready(l, t, 0);
    return rc;
}

/* ---- reading ----------------------------------------------------------------------------- */

/* Direct-gets n consecutive sequences from first: out[i] is the reply for first + i (a
 * record, or a 404 status). 0, or the error (out untouched). Waits. */
static int direct_get(nlog_t *l, nl_topic_t *t, const uint64_t *seqs, int n, natsMsg **out,
                      bs_err_t *err)
{
    nl_read_t rd;
    memset(&rd, 0, sizeof rd);
    rd.n = n;
    rd.msgs = out;
    rd.pends = calloc((size_t)n, sizeof *rd.pends);
    if (!rd.pends)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    memset(out, 0, sizeof *out * (size_t)n);
    pthread_cond_init(&rd.cv, NULL);
    char subj[NL_STREAM_MAX + 32], reply[96], body[48];
    snprintf(subj, sizeof subj, "$JS.API.DIRECT.GET.%s", t->stream);
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < n; i++)
        pend_add(l, &rd.pends[i], NL_PEND_READ, &rd, i);
    pthread_mutex_unlock(&l->mu);
    natsStatus s = NATS_OK;
    for (int i = 0; i < n && s == NATS_OK; i++) {
        reply_subject(l, &rd.pends[i], reply, sizeof reply);
        int bl = snprintf(body, sizeof body, "{\"seq\":%" PRIu64 "}", seqs[i]);
        s = natsConnection_PublishRequest(l->nc, subj, reply, body, bl);
    }
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += NL_REQ_TIMEOUT_MS / 1000;
    pthread_mutex_lock(&l->mu);
    while (s == NATS_OK && rd.got < n)
        if (pthread_cond_timedwait(&rd.cv, &l->mu, &dl) == ETIMEDOUT)
            break;
    int complete = rd.got == n;
    for (int i = 0; i < n; i++)
        pend_del(l, &rd.pends[i]);
    pthread_mutex_unlock(&l->mu);
    pthread_cond_destroy(&rd.cv);
    free(rd.pends);
    if (!complete) {
        for (int i = 0; i < n; i++)
            if (out[i]) {
                natsMsg_Destroy(out[i]);
                out[i] = NULL;
            }
        if (s != NATS_OK)
            return bs__nl_err(err, s, 0, "read");
        return bs_err_set(err, BS_EUNAVAIL, "jetstream did not answer %d reads within %d ms",
                          n - rd.got, NL_REQ_TIMEOUT_MS);
    }
    return 0;
}

const char *bs__nl_status(natsMsg *m, const char **desc)
{
    const char *v = NULL;
    *desc = "";
    if (natsMsg_GetDataLength(m) != 0 || natsMsgHeader_Get(m, "Status", &v) != NATS_OK || !v)
        return NULL;
    if (natsMsgHeader_Get(m, "Description", desc) != NATS_OK || !*desc)
        *desc = "";
    return v;
}

/* 1 if m is a status reply (a direct get's 404: no such record). */
static int msg_status(natsMsg *m)
{
    const char *desc;
    return bs__nl_status(m, &desc) != NULL;
}

static int64_t hdr_i64(natsMsg *m, const char *key)
{
    const char *v = NULL;
    if (natsMsgHeader_Get(m, key, &v) != NATS_OK || !v)
        return -1;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    return (errno || end == v) ? -1 : (int64_t)x;
}

void bs__nl_msg_ids(natsMsg *m, char *id, size_t idn, char *key, size_t keyn)
{
    const char *v = NULL;
    id[0] = key[0] = '\0';
    if (natsMsgHeader_Get(m, "Nats-Msg-Id", &v) == NATS_OK && v) {
        snprintf(key, keyn, "%s", v);
        hdr_decode(key);
    }
    if (natsMsgHeader_Get(m, "Basalt-Id", &v) == NATS_OK && v) {
        snprintf(id, idn, "%s", v);
        hdr_decode(id);
    } else {
        snprintf(id, idn, "%s", key);
    }
}

/* Fills r from a stored message (a direct get reply); id and key point into the buffers. */
static int rec_from_msg(natsMsg *m, bs_log_record_t *r, char *id, size_t idn, char *key,
                        size_t keyn)
{
    int64_t seq = hdr_i64(m, "Nats-Sequence");
    if (seq < 1)
        return -1;
    const char *v = NULL;
    r->offset = seq - 1;
    r->time_ms = 0;
    if (natsMsgHeader_Get(m, "Nats-Time-Stamp", &v) == NATS_OK && v)
        bs_time_parse_rfc3339(v, &r->time_ms);
    bs__nl_msg_ids(m, id, idn, key, keyn);
    r->id = id;
    r->dedup_key = key;
    r->data = natsMsg_GetData(m);
    r->len = (size_t)natsMsg_GetDataLength(m);
    if (!r->data)
        r->data = "";
    return 0;
}

static int read_ids(nlog_t *l, nl_topic_t *t, const uint64_t *seqs, int n, char (*ids)[129],
                    bs_err_t *err)
{
    if (n == 0)
        return 0;
    natsMsg **msgs = calloc((size_t)n, sizeof *msgs);
    if (!msgs)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    int rc = direct_get(l, t, seqs, n, msgs, err);
    if (rc == 0)
        for (int i = 0; i < n; i++) {
            bs_log_record_t r;
            char key[300];
            char id[129];
            if (!msg_status(msgs[i]) &&
                rec_from_msg(msgs[i], &r, id, sizeof id, key, sizeof key) == 0 && id[0])
                snprintf(ids[i], sizeof ids[i], "%s", id);
            natsMsg_Destroy(msgs[i]);
        }
    free(msgs);
    return rc;
}

static int nl_read(bs_log_t *base, const char *tenant, const char *topic, int64_t from_offset,
                   int max, size_t max_bytes, bs_log_record_cb cb, void *ud, int64_t *next,
                   bs_err_t *err)
{
    nlog_t *l = (nlog_t *)base;
    nl_topic_t *t = topic_resolve(l, tenant, topic, err);
    if (!t)
        return err ? err->code : BS_ENOTFOUND;
    pthread_mutex_lock(&l->mu);
    int64_t first = t->first_offset, end = t->next_offset;
    pthread_mutex_unlock(&l->mu);
    int64_t off = from_offset < first ? first : from_offset;
    int count = 0, stop = 0;
    size_t bytes = 0;
    int window = 16;
    uint64_t seqs[READ_WINDOW];
    natsMsg *msgs[READ_WINDOW];
    char id[129], key[300];
    while (!stop && count < max && off < end) {
        int w = window;
        if (w > max - count)
            w = max - count;
        if ((int64_t)w > end - off)
            w = (int)(end - off);
        for (int i = 0; i < w; i++)
            seqs[i] = (uint64_t)(off + i) + 1;
        int rc = direct_get(l, t, seqs, w, msgs, err);
        if (rc) {
            if (count == 0)
                return rc;
            break; /* what was passed to cb stands; the caller reads on from *next */
        }
        for (int i = 0; i < w; i++) {
            natsMsg *m = msgs[i];
            bs_log_record_t r;
            if (!stop && !msg_status(m) &&
                rec_from_msg(m, &r, id, sizeof id, key, sizeof key) == 0) {
                count++;
                bytes += r.len;
                off = r.offset + 1;
                if (cb && cb(&r, ud))
                    stop = 1;
                if (count >= max || (max_bytes > 0 && bytes >= max_bytes))
                    stop = 1;
            } else if (!stop) {
                off = (int64_t)seqs[i]; /* a gap (removed by retention meanwhile): skip it */
            }
            natsMsg_Destroy(m);
        }
        if (window < READ_WINDOW)
            window *= 2;
    }
    if (next)
        *next = off;
    return count;
}

/* The offset of the first record with time >= t_ms: a binary search over sequences. */
static int nl_offset_at(bs_log_t *base, const char *tenant, const char *topic, int64_t t_ms,
                        int64_t *offset, bs_err_t *err)
{
    nlog_t *l = (nlog_t *)base;
    nl_topic_t *t = topic_resolve(l, tenant, topic, err);
    if (!t)
        return err ? err->code : BS_ENOTFOUND;
    pthread_mutex_lock(&l->mu);
    int64_t lo = t->first_offset, hi = t->next_offset; /* answer in [lo, hi] */
    int64_t first_time = t->first_time_ms, last_time = t->last_time_ms;
    pthread_mutex_unlock(&l->mu);
    if (lo >= hi || t_ms > last_time) {
        *offset = hi;
        return 0;
    }
    if (t_ms <= first_time) {
        *offset = lo;
        return 0;
    }
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        uint64_t seq = (uint64_t)mid + 1;
        natsMsg *m = NULL;
        int rc = direct_get(l, t, &seq, 1, &m, err);
        if (rc)
            return rc;
        bs_log_record_t r;
        char id[129], key[300];
        int older;
        if (msg_status(m) || rec_from_msg(m, &r, id, sizeof id, key, sizeof key))
            older = 1; /* gone meanwhile (retention): it was older */
        else
            older = r.time_ms < t_ms;
        natsMsg_Destroy(m);
        if (older)
            lo = mid + 1;
        else
            hi = mid;
    }
    *offset = lo;
    return 0;
}

/* ---- watches ----------------------------------------------------------------------------- */

/* Fires the watches of t (every topic's with t NULL) whose condition holds, all of them
 * with all = 1. Each is moved to the firing list, where unwatch finds (and waits for) it,
 * and called once by whichever thread takes it. Without l->mu. */
static void fire_ready(nlog_t *l, nl_topic_t *t, int all)
{
    pthread_mutex_lock(&l->mu);
    if (t && t->nwatch == 0) {
        pthread_mutex_unlock(&l->mu);
        return;
    }
    int moved = 0;
    for (nl_watch_t **w = &l->watches; *w;) {
        nl_watch_t *x = *w;
        if ((!t || x->t == t) &&
            (all || x->t->next_offset > x->after || x->t->state == NL_ABSENT)) {
            *w = x->next;
            x->next = l->firing;
            l->firing = x;
            moved++;
            if (--x->t->nwatch == 0)
                x->t->tail_idle_ms = bs_time_wall_ms();
        } else {
            w = &x->next;
        }
    }
    while (moved > 0) {
        nl_watch_t *x = NULL;
        for (nl_watch_t *f = l->firing; f; f = f->next)
            if (f->cb) { /* not called yet */
                x = f;
                break;
            }
        if (!x)
            break;
        bs_log_wake_cb cb = x->cb;
        void *ud = x->ud;
        x->cb = NULL; /* taken by this thread */
        pthread_mutex_unlock(&l->mu);
        cb(ud);
        pthread_mutex_lock(&l->mu);
        for (nl_watch_t **f = &l->firing; *f; f = &(*f)->next)
            if (*f == x) {
                *f = x->next;
                break;
            }
        free(x);
        moved--;
        pthread_cond_broadcast(&l->fired_cv);
    }
    pthread_mutex_unlock(&l->mu);
}

static void tail_on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc;
    (void)sub;
    nl_tail_ctx_t *c = closure;
    int64_t seq = hdr_i64(m, "Nats-Sequence");
    natsMsg_Destroy(m);
    if (seq < 1)
        return;
    nlog_t *l = c->l;
    pthread_mutex_lock(&l->mu);
    int fire = 0;
    if (seq > c->t->next_offset) {
        c->t->next_offset = seq;
        fire = c->t->nwatch > 0;
    }
    pthread_mutex_unlock(&l->mu);
    if (fire)
        fire_ready(l, c->t, 0);
}

static void sub_complete(void *closure)
{
    nl_tail_ctx_t *c = closure;
    nlog_t *l = c->l;
    free(c);
    pthread_mutex_lock(&l->mu);
    l->live_subs--;
    pthread_cond_broadcast(&l->subs_cv);
    pthread_mutex_unlock(&l->mu);
}

static int64_t nl_watch(bs_log_t *base, const char *tenant, const char *topic, int64_t after,
                        bs_log_wake_cb cb, void *ud, bs_err_t *err)
{
    nlog_t *l = (nlog_t *)base;
    int rc = bs__nl_names(tenant, topic, NULL, err);
    if (rc)
        return rc;
    nl_watch_t *w = calloc(1, sizeof *w);
    if (!w)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    pthread_mutex_lock(&l->mu);
    nl_topic_t *t = bs__nl_topic(l, tenant, topic);
    if (!t) {
        pthread_mutex_unlock(&l->mu);
        free(w);
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    w->id = ++l->next_watch_id;
    w->t = t;
    w->after = after;
    w->cb = cb;
    w->ud = ud;
    int64_t id = w->id;
    w->next = l->watches;
    l->watches = w;
    t->nwatch++;
    int closing = l->closing;
    int ready = t->state == NL_PRESENT && t->next_offset > after;
    if (!ready && (t->state != NL_PRESENT || t->next_offset < 0)) {
        t->want_poll = 1; /* the maintenance thread reads the stream info at once */
        pthread_cond_broadcast(&l->maint_cv);
    }
    int subscribe = !t->tail_sub && !closing;
    if (subscribe)
        t->tail_sub = (natsSubscription *)1; /* being created */
    pthread_mutex_unlock(&l->mu);
    if (subscribe) {
        natsSubscription *sub = NULL;
        nl_tail_ctx_t *c = malloc(sizeof *c);
        natsStatus s =
            c ? natsConnection_Subscribe(&sub, l->nc, t->tail, tail_on_msg, c) : NATS_NO_MEMORY;
        if (c) {
            c->l = l;
            c->t = t;
        }
        if (s == NATS_OK) {
            pthread_mutex_lock(&l->mu);
            l->live_subs++;
            pthread_mutex_unlock(&l->mu);
            if (natsSubscription_SetOnCompleteCB(sub, sub_complete, c) != NATS_OK) {
                /* cannot know when its callbacks end: do without (the poll wakes the watch) */
                natsSubscription_Unsubscribe(sub);
                natsSubscription_Destroy(sub);
                pthread_mutex_lock(&l->mu);
                l->live_subs--;
                pthread_mutex_unlock(&l->mu);
                sub = NULL; /* c leaks: a callback in flight may still read it */
            }
        } else {
            free(c);
            sub = NULL;
        }
        pthread_mutex_lock(&l->mu);
        t->tail_sub = sub;
        pthread_mutex_unlock(&l->mu);
    }
    if (ready || closing)
        fire_ready(l, t, closing);
    return id;
}

static void nl_unwatch(bs_log_t *base, int64_t id)
{
    nlog_t *l = (nlog_t *)base;
    pthread_mutex_lock(&l->mu);
    for (nl_watch_t **w = &l->watches; *w; w = &(*w)->next)
        if ((*w)->id == id) {
            nl_watch_t *x = *w;
            *w = x->next;
            if (--x->t->nwatch == 0)
                x->t->tail_idle_ms = bs_time_wall_ms();
            free(x);
            pthread_mutex_unlock(&l->mu);
            return;
        }
    for (;;) {
        int found = 0;
        for (nl_watch_t *f = l->firing; f; f = f->next)
            if (f->id == id)
                found = 1;
        if (!found)
            break;
        pthread_cond_wait(&l->fired_cv, &l->mu);
    }
    pthread_mutex_unlock(&l->mu);
}

/* ---- the maintenance thread -------------------------------------------------------------- */

static void maint_topics(nlog_t *l, int64_t *last_refresh)
{
    int64_t now = bs_time_wall_ms();
    int gauges = now - *last_refresh >= NL_REFRESH_MS;
    if (gauges)
        *last_refresh = now;
    pthread_mutex_lock(&l->mu);
    int n = 0;
    nl_topic_t **ts = topics_snapshot(l, &n);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < n; i++) {
        nl_topic_t *t = ts[i];
        pthread_mutex_lock(&l->mu);
        int watched = t->nwatch > 0;
        int poll = watched && (t->want_poll || now - t->checked_ms >= WATCH_POLL_MS);
        int refresh = gauges && t->state == NL_PRESENT;
        natsSubscription *idle = NULL;
        if (!watched && t->tail_sub && t->tail_sub != (natsSubscription *)1 &&
            now - t->tail_idle_ms > TAIL_IDLE_MS) {
            idle = t->tail_sub;
            t->tail_sub = NULL;
        }
        t->want_poll = 0;
        int stop = l->stop_threads;
        pthread_mutex_unlock(&l->mu);
        if (idle) {
            natsSubscription_Unsubscribe(idle);
            natsSubscription_Destroy(idle);
        }
        if (stop)
            continue;
        if (poll || refresh) {
            bs_err_t err;
            int rc = bs__nl_stream_refresh(l, t, &err);
            if (poll)
                fire_ready(l, t, 0);
            if (rc == 0 && refresh)
                bs__nl_groups_refresh(l, t);
        }
    }
    free(ts);
}

static void *maint_main(void *arg)
{
    nlog_t *l = arg;
    int64_t last_refresh = bs_time_wall_ms();
    pthread_mutex_lock(&l->mu);
    while (!l->stop_threads) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_nsec += 100 * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&l->maint_cv, &l->mu, &dl);
        if (l->stop_threads)
            break;
        pthread_mutex_unlock(&l->mu);
        pub_timeouts(l);
        bs__nl_fetch_tick(l);
        maint_topics(l, &last_refresh);
        pthread_mutex_lock(&l->mu);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ---- the inbox --------------------------------------------------------------------------- */

static void inbox_on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc;
    (void)sub;
    nlog_t *l = closure;
    const char *subj = natsMsg_GetSubject(m);
    uint64_t token = 0;
    if (subj && strlen(subj) > l->inbox_len + 1)
        token = strtoull(subj + l->inbox_len + 1, NULL, 10);
    pthread_mutex_lock(&l->mu);
    nl_pend_t *p = token ? pend_find(l, token) : NULL;
    if (!p) {
        pthread_mutex_unlock(&l->mu);
        bs__nl_orphan(l, m);
        return;
    }
    switch (p->kind) {
    case NL_PEND_PUB:
        pend_del(l, p);
        pthread_mutex_unlock(&l->mu);
        on_pub_reply(l, p, m);
        natsMsg_Destroy(m);
        return;
    case NL_PEND_READ: {
        nl_read_t *rd = p->obj;
        pend_del(l, p);
        rd->msgs[p->index] = m;
        if (++rd->got == rd->n)
            pthread_cond_signal(&rd->cv);
        pthread_mutex_unlock(&l->mu);
        return;
    }
    default:
        pthread_mutex_unlock(&l->mu);
        natsMsg_Destroy(m);
    }
}

static void inbox_complete(void *closure)
{
    nlog_t *l = closure;
    pthread_mutex_lock(&l->mu);
    l->live_subs--;
    pthread_cond_broadcast(&l->subs_cv);
    pthread_mutex_unlock(&l->mu);
}

/* ---- topics ------------------------------------------------------------------------------ */

static int topic_ensure(bs_log_t *base, const char *tenant, const char *topic,
                        const bs_log_topic_config_t *cin, bs_err_t *err)
{
    nlog_t *l = (nlog_t *)base;
    int rc = bs__nl_names(tenant, topic, NULL, err);
    if (rc)
        return rc;
    bs_log_topic_config_t c = cin ? *cin : (bs_log_topic_config_t){0};
    if ((rc = bs__topic_config_check(&c, err)))
        return rc;
    if (c.retention_ms > INT64_MAX / 1000000) /* MaxAge is in nanoseconds */
        return bs_err_setf(err, BS_EINVAL, "retention_ms",
                           "retention must be at most %lld ms on JetStream, got %lld",
                           (long long)(INT64_MAX / 1000000), (long long)c.retention_ms);
    if (c.max_record_bytes == 0)
        c.max_record_bytes = 1 << 20;
    pthread_mutex_lock(&l->mu);
    nl_topic_t *t = bs__nl_topic(l, tenant, topic);
    pthread_mutex_unlock(&l->mu);
    if (!t)
        return bs_err_set(err, BS_ENOMEM, "out of memory");

    char desc[512];
    snprintf(desc, sizeof desc,
             "basalt topic: tenant=%s topic=%s retention_ms=%lld retention_bytes=%lld "
             "sync_interval_ms=%lld dedup_window_ms=%lld max_record_bytes=%lld segment_bytes=%lld",
             tenant, topic, (long long)c.retention_ms, (long long)c.retention_bytes,
             (long long)c.sync_interval_ms, (long long)c.dedup_window_ms,
             (long long)c.max_record_bytes, (long long)c.segment_bytes);
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[1] = {t->subject};
    jsRePublish rp;
    jsRePublish_Init(&rp);
    rp.Source = t->subject;
    rp.Destination = t->tail;
    rp.HeadersOnly = true;
    sc.Name = t->stream;
    sc.Description = desc;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Retention = js_LimitsPolicy;
    sc.MaxConsumers = -1;
    sc.MaxMsgs = -1;
    sc.MaxBytes = c.retention_bytes > 0 ? c.retention_bytes : -1;
    sc.MaxAge = c.retention_ms * 1000000;
    sc.MaxMsgsPerSubject = -1;
    sc.MaxMsgSize = (int32_t)(c.max_record_bytes + HDR_ALLOWANCE);
    sc.Discard = js_DiscardOld;
    sc.Storage = js_FileStorage;
    sc.Replicas = 1;
    /* JetStream needs a positive window no longer than MaxAge; without dedup no record
     * carries a Nats-Msg-Id, so the window then holds nothing. */
    int64_t dup = c.dedup_window_ms > 0 ? c.dedup_window_ms : 1000;
    if (c.retention_ms > 0 && dup > c.retention_ms)
        dup = c.retention_ms;
    sc.Duplicates = dup * 1000000;
    sc.AllowDirect = true;
    sc.RePublish = &rp;

    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_AddStream(&si, l->js, &sc, NULL, &jerr);
    if (s != NATS_OK && jerr == JSStreamNameExistErr) {
        jerr = 0;
        s = js_UpdateStream(&si, l->js, &sc, NULL, &jerr);
    }
    if (s != NATS_OK || !si)
        return bs__nl_err(err, s, jerr, "topic ensure");
    pthread_mutex_lock(&l->mu);
    topic_from_info(t, si);
    t->cfg = c; /* exactly what was asked (the description says the same) */
    pthread_mutex_unlock(&l->mu);
    jsStreamInfo_Destroy(si);
    return 0;
}

static int topic_drop(bs_log_t *base, const char *tenant, const char *topic, bs_err_t *err)
{
    nlog_t *l = (nlog_t *)base;
    int rc = bs__nl_names(tenant, topic, NULL, err);
    if (rc)
        return rc;
    pthread_mutex_lock(&l->mu);
    nl_topic_t *t = bs__nl_topic(l, tenant, topic);
    pthread_mutex_unlock(&l->mu);
    if (!t)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    jsErrCode jerr = 0;
    natsStatus s = js_DeleteStream(l->js, t->stream, NULL, &jerr);
    if (s != NATS_OK && s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr)
        return bs__nl_err(err, s, jerr, "topic drop");
    pthread_mutex_lock(&l->mu);
    t->state = NL_ABSENT;
    t->checked_ms = bs_time_wall_ms();
    t->next_offset = -1;
    for (nl_group_t *g = t->groups; g; g = g->next)
        g->present = 0;
    pthread_mutex_unlock(&l->mu);
    fire_ready(l, t, 1);
    return 0;
}

static int topic_stats(bs_log_t *base, const char *tenant, const char *topic,
                       bs_log_topic_stats_t *out, bs_err_t *err)
{
    nlog_t *l = (nlog_t *)base;
    nl_topic_t *t = topic_resolve(l, tenant, topic, err);
    if (!t)
        return err ? err->code : BS_ENOTFOUND;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&l->mu);
    out->first_offset = t->first_offset;
    out->next_offset = t->next_offset;
    out->first_time_ms = t->first_time_ms;
    out->last_time_ms = t->last_time_ms;
    out->bytes = t->bytes;
    out->segments = 0; /* JetStream's blocks are not visible through its API */
    out->appended = t->appended;
    out->duplicates = t->duplicates;
    out->syncs = 0; /* the server fsyncs on its own schedule */
    pthread_mutex_unlock(&l->mu);
    return 0;
}

/* ---- metrics ----------------------------------------------------------------------------- */

static void nl_metrics(bs_log_t *base, bs_buf_t *b)
{
    nlog_t *l = (nlog_t *)base;
    pthread_mutex_lock(&l->mu);
    int n = 0;
    nl_topic_t **ts = topics_snapshot(l, &n);
    static const struct {
        const char *name, *type, *help;
    } tf[] = {
        {"basalt_log_records", "gauge", "Records retained in the topic."},
        {"basalt_log_bytes", "gauge", "Bytes the topic's records take in storage."},
        {"basalt_log_appends_total", "counter", "Records appended by this process."},
        {"basalt_log_duplicates_total", "counter", "Appends answered from the dedup window."},
        {"basalt_log_syncs_total", "counter", "fsyncs of the topic by basalt (0 on JetStream)."},
    };
    for (int f = 0; f < 5; f++) {
        bs_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", tf[f].name, tf[f].help, tf[f].name,
                      tf[f].type);
        for (int i = 0; i < n; i++) {
            nl_topic_t *t = ts[i];
            if (t->state != NL_PRESENT)
                continue;
            long long v = f == 0   ? (long long)t->records
                          : f == 1 ? (long long)t->bytes
                          : f == 2 ? (long long)t->appended
                          : f == 3 ? (long long)t->duplicates
                                   : 0;
            bs_buf_printf(b, "%s{tenant=\"%s\",topic=\"%s\"} %lld\n", tf[f].name, t->tenant,
                          t->name, v);
        }
    }
    static const struct {
        const char *name, *type, *help;
    } gf[] = {
        {"basalt_consumer_pending", "gauge", "Records not yet delivered to the group."},
        {"basalt_consumer_ack_pending", "gauge", "Deliveries not acknowledged yet."},
        {"basalt_consumer_stalled", "gauge", "1 while ack_pending has reached max_ack_pending."},
        {"basalt_consumer_redelivered_total", "counter", "Redeliveries made by this process."},
        {"basalt_consumer_dead_lettered_total", "counter",
         "Records dead-lettered (or dropped) past max_deliver by this process."},
    };
    for (int f = 0; f < 5; f++) {
        bs_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", gf[f].name, gf[f].help, gf[f].name,
                      gf[f].type);
        for (int i = 0; i < n; i++) {
            nl_topic_t *t = ts[i];
            if (t->state != NL_PRESENT)
                continue;
            for (nl_group_t *g = t->groups; g; g = g->next) {
                if (!g->present)
                    continue;
                long long v = f == 0   ? (long long)g->pending
                              : f == 1 ? (long long)g->ack_pending
                              : f == 2 ? (long long)(g->max_ack_pending > 0 &&
                                                     g->ack_pending >= g->max_ack_pending)
                              : f == 3 ? (long long)g->redelivered
                                       : (long long)g->dead_lettered;
                bs_buf_printf(b, "%s{tenant=\"%s\",topic=\"%s\",group=\"%s\"} %lld\n", gf[f].name,
                              t->tenant, t->name, g->name, v);
            }
        }
    }
    bs_buf_puts(b, "# HELP basalt_log_append_seconds Appends from queued to acknowledged by "
                   "JetStream.\n# TYPE basalt_log_append_seconds histogram\n");
    uint64_t cum = 0;
    for (int i = 0; i < NL_HIST_BUCKETS; i++) {
        cum += l->hist[i];
        bs_buf_printf(b, "basalt_log_append_seconds_bucket{le=\"%g\"} %llu\n", hist_bounds[i],
                      (unsigned long long)cum);
    }
    cum += l->hist[NL_HIST_BUCKETS];
    bs_buf_printf(b, "basalt_log_append_seconds_bucket{le=\"+Inf\"} %llu\n",
                  (unsigned long long)cum);
    bs_buf_printf(b, "basalt_log_append_seconds_sum %.6f\nbasalt_log_append_seconds_count %llu\n",
                  l->hist_sum, (unsigned long long)l->hist_count);
    pthread_mutex_unlock(&l->mu);
    free(ts);
}

/* ---- open and close ---------------------------------------------------------------------- */

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    nlog_t *l = closure;
    pthread_mutex_lock(&l->mu);
    int closing = l->closing;
    pthread_mutex_unlock(&l->mu);
    if (!closing)
        BS_LOG(BS_LOG_WARN, "log", "jetstream connection lost (%s); reconnecting", l->replica);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    (void)closure;
    char url[256] = "";
    natsConnection_GetConnectedUrl(nc, url, sizeof url);
    BS_LOG(BS_LOG_INFO, "log", "jetstream connection back (%.200s)", url);
}

/* The last of the connection's callbacks (libnats runs them in order on one thread):
 * close waits for it before freeing l. */
static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    nlog_t *l = closure;
    pthread_mutex_lock(&l->mu);
    l->conn_closed = 1;
    pthread_cond_broadcast(&l->subs_cv);
    pthread_mutex_unlock(&l->mu);
}

static void on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)nc;
    (void)sub;
    (void)closure;
    BS_LOG(BS_LOG_WARN, "log", "jetstream asynchronous error: %s", natsStatus_GetText(err));
}

static void nl_close(bs_log_t *base);

static const bs__log_ops_t nats_ops = {
    .name = "jetstream",
    .close = nl_close,
    .topic_ensure = topic_ensure,
    .topic_drop = topic_drop,
    .topic_stats = topic_stats,
    .append_async = append_async,
    .read = nl_read,
    .offset_at = nl_offset_at,
    .watch = nl_watch,
    .unwatch = nl_unwatch,
    .consumer_ensure = bs__nl_consumer_ensure,
    .consumer_delete = bs__nl_consumer_delete,
    .fetch_async = bs__nl_fetch_async,
    .ack = bs__nl_ack,
    .nack = bs__nl_nack,
    .in_progress = bs__nl_in_progress,
    .consumer_stats = bs__nl_consumer_stats,
    .consumers = bs__nl_consumers,
    .metrics = nl_metrics,
};

/* Frees what open built; the connection must be closed and its subscriptions done. */
static void nl_free(nlog_t *l)
{
    if (l->js)
        jsCtx_Destroy(l->js);
    if (l->inbox_sub)
        natsSubscription_Destroy(l->inbox_sub);
    if (l->nc)
        natsConnection_Destroy(l->nc);
    for (int b = 0; b < NL_TBUCKETS; b++)
        for (nl_topic_t *t = l->topics[b], *nt; t; t = nt) {
            nt = t->hnext;
            for (nl_group_t *g = t->groups, *ng; g; g = ng) {
                ng = g->next;
                free(g);
            }
            if (t->tail_sub && t->tail_sub != (natsSubscription *)1)
                natsSubscription_Destroy(t->tail_sub);
            free(t);
        }
    for (nl_job_t *j = l->j_head, *nj; j; j = nj) {
        nj = j->next;
        free(j);
    }
    pthread_cond_destroy(&l->cv);
    pthread_cond_destroy(&l->work_cv);
    pthread_cond_destroy(&l->fired_cv);
    pthread_cond_destroy(&l->subs_cv);
    pthread_cond_destroy(&l->maint_cv);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

/* Closes the connection and waits for every subscription's last callback. */
static void close_connection(nlog_t *l)
{
    if (!l->nc)
        return;
    natsConnection_Close(l->nc);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 10;
    pthread_mutex_lock(&l->mu);
    while (l->live_subs > 0 || !l->conn_closed)
        if (pthread_cond_timedwait(&l->subs_cv, &l->mu, &dl) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&l->mu);
}

bs_log_t *bs__log_nats_open(const bs_log_opts_t *o, bs_err_t *err)
{
    nlog_t *l = calloc(1, sizeof *l);
    if (!l) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    l->base.ops = &nats_ops;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    pthread_cond_init(&l->work_cv, NULL);
    pthread_cond_init(&l->fired_cv, NULL);
    pthread_cond_init(&l->subs_cv, NULL);
    pthread_cond_init(&l->maint_cv, NULL);
    snprintf(l->replica, sizeof l->replica, "%s",
             o->replica_id && o->replica_id[0] ? o->replica_id : "basalt");

    natsOptions *opts = NULL;
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = natsOptions_SetURL(opts, o->nats_url);
    if (s == NATS_OK)
        s = natsOptions_SetName(opts, l->replica);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(opts, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(opts, 250);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectJitter(opts, 100, 1000);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectBufSize(opts, 32 * 1024 * 1024);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(opts, 2000);
    if (s == NATS_OK)
        s = natsOptions_SetPingInterval(opts, 10000);
    if (s == NATS_OK)
        s = natsOptions_SetMaxPingsOut(opts, 3);
    if (s == NATS_OK)
        s = natsOptions_SetFailRequestsOnDisconnect(opts, true);
    if (s == NATS_OK)
        s = natsOptions_SetMaxPendingMsgs(opts, 1 << 20);
    /* Subscriptions share libnats' pool of delivery threads instead of one thread each:
     * every fetch has a subscription of its own, and every watched topic one. */
    if (s == NATS_OK)
        s = natsOptions_UseGlobalMessageDelivery(opts, true);
    if (s == NATS_OK)
        s = nats_SetMessageDeliveryPoolSize(NL_DELIVERY_THREADS);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(opts, on_disconnected, l);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(opts, on_reconnected, l);
    if (s == NATS_OK)
        s = natsOptions_SetErrorHandler(opts, on_async_error, l);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(opts, on_closed, l);
    if (s != NATS_OK) {
        bs__nl_err(err, s, 0, "nats options");
        natsOptions_Destroy(opts);
        nl_free(l);
        return NULL;
    }
    s = natsConnection_Connect(&l->nc, opts);
    natsOptions_Destroy(opts);
    if (s != NATS_OK) {
        bs_err_set(err, BS_EUNAVAIL, "cannot connect to nats at %.120s: %.100s", o->nats_url,
                   natsStatus_GetText(s));
        l->nc = NULL;
        nl_free(l);
        return NULL;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = NL_REQ_TIMEOUT_MS;
    s = natsConnection_JetStream(&l->js, l->nc, &jo);
    jsAccountInfo *ai = NULL;
    jsErrCode jerr = 0;
    if (s == NATS_OK)
        s = js_GetAccountInfo(&ai, l->js, NULL, &jerr);
    if (ai)
        jsAccountInfo_Destroy(ai);
    if (s != NATS_OK) {
        bs_err_set(err, BS_EUNAVAIL, "jetstream is not available at %.120s: %.100s", o->nats_url,
                   nats_GetLastError(NULL) ? nats_GetLastError(NULL) : natsStatus_GetText(s));
        close_connection(l);
        nl_free(l);
        return NULL;
    }
    natsInbox *inbox = NULL;
    s = natsInbox_Create(&inbox);
    if (s == NATS_OK) {
        snprintf(l->inbox, sizeof l->inbox, "%s", (const char *)inbox);
        natsInbox_Destroy(inbox);
        l->inbox_len = strlen(l->inbox);
        char wild[80];
        snprintf(wild, sizeof wild, "%s.*", l->inbox);
        s = natsConnection_Subscribe(&l->inbox_sub, l->nc, wild, inbox_on_msg, l);
    }
    if (s == NATS_OK) {
        l->live_subs++;
        s = natsSubscription_SetOnCompleteCB(l->inbox_sub, inbox_complete, l);
        if (s != NATS_OK)
            l->live_subs--;
    }
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(l->inbox_sub, -1, -1);
    if (s == NATS_OK)
        s = natsConnection_FlushTimeout(l->nc, NL_REQ_TIMEOUT_MS);
    if (s != NATS_OK) {
        bs__nl_err(err, s, 0, "nats subscribe");
        close_connection(l);
        nl_free(l);
        return NULL;
    }
    /* threads_started counts in this order (publisher, maintenance, workers): close joins
     * exactly those */
    int ok = pthread_create(&l->publisher, NULL, publisher_main, l) == 0;
    if (ok)
        l->threads_started = 1;
    if (ok && (ok = pthread_create(&l->maint, NULL, maint_main, l) == 0))
        l->threads_started = 2;
    for (int i = 0; ok && i < NL_WORKERS; i++)
        if (pthread_create(&l->workers[i], NULL, worker_main, l) == 0)
            l->threads_started++;
        else
            ok = 0;
    if (!ok) {
        bs_err_set(err, BS_ENOMEM, "cannot start the log's threads");
        nl_close(&l->base);
        return NULL;
    }
    return &l->base;
}

static void nl_close(bs_log_t *base)
{
    nlog_t *l = (nlog_t *)base;
    pthread_mutex_lock(&l->mu);
    l->closing = 1;
    pthread_mutex_unlock(&l->mu);
    /* 1. Fetches waiting on JetStream end now, with what they got. */
    bs__nl_fetch_close_all(l);
    /* 2. The publisher sends what is queued; JetStream answers it (or the 10 s timeout of
     *    the maintenance thread fails it); the workers finish their jobs. */
    uint64_t until = bs_time_mono_ns() + (uint64_t)(NL_PUB_TIMEOUT_MS + 2000) * 1000000u;
    pthread_mutex_lock(&l->mu);
    while (l->threads_started >= 4 && (l->q_head || l->pub_head || l->j_head || l->jobs_running) &&
           bs_time_mono_ns() < until) {
        pthread_mutex_unlock(&l->mu);
        usleep(5000);
        pthread_mutex_lock(&l->mu);
    }
    /* 3. The threads stop. */
    l->stop_threads = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_cond_broadcast(&l->work_cv);
    pthread_cond_broadcast(&l->maint_cv);
    pthread_mutex_unlock(&l->mu);
    int started = l->threads_started;
    if (started >= 1)
        pthread_join(l->publisher, NULL);
    if (started >= 2)
        pthread_join(l->maint, NULL);
    for (int i = 0; i + 2 < started; i++)
        pthread_join(l->workers[i], NULL);
    /* 4. Whatever is still unanswered fails; queued jobs (none normally) are dropped. */
    nl_append_t *left = NULL;
    pthread_mutex_lock(&l->mu);
    for (nl_append_t *a = l->q_head, *na; a; a = na) { /* never published */
        na = a->next;
        for (int i = 0; i < a->n; i++)
            pend_del(l, &a->recs[i].pend);
        a->outstanding = 0;
        a->next = left;
        left = a;
    }
    l->q_head = l->q_tail = NULL;
    while (l->pub_head) {
        nl_pend_t *p = l->pub_head;
        nl_append_t *a = p->obj;
        pend_del(l, p);
        if (record_done(a)) {
            a->next = left;
            left = a;
        }
    }
    pthread_mutex_unlock(&l->mu);
    for (nl_append_t *a = left, *na; a; a = na) {
        na = a->next;
        bs_err_t e;
        bs_err_set(&e, BS_EUNAVAIL, "the log closed before jetstream acknowledged the append");
        append_fail(a, BS_EUNAVAIL, &e);
        append_finish(l, a);
    }
    fire_ready(l, NULL, 1);
    /* 5. The connection goes; every subscription's callbacks are over after this. */
    close_connection(l);
    nl_free(l);
}
