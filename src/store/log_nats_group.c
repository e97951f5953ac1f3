/*
 * Consumer groups on JetStream (log.h "consumer groups"): each group is a
 * durable pull consumer of the topic's stream, named after the group, with
 * AckExplicit, AckWait = ack_wait, MaxAckPending = max_ack_pending, deliver
 * policy all or new (set at creation only; JetStream cannot change it).
 *
 * Fetch speaks the pull protocol itself, asynchronously: one request to
 * $JS.API.CONSUMER.MSG.NEXT.<stream>.<group> with a reply subject of the
 * fetch's own (<inbox>.f.<n>, subscribed for the fetch: JetStream delivers
 * pulled messages under their original subject, so the subscription is what
 * tells fetches apart), {"batch": max, "expires": wait, "no_wait": true}.
 * With no_wait and expires JetStream treats it as one-shot: it answers as
 * soon as it has delivered what is available (then a 408 status), or at
 * expires with nothing; a full batch ends without a status. No thread waits:
 * the subscription's callback (libnats' delivery pool) collects the
 * deliveries, and the maintenance thread enforces a client-side deadline
 * (wait + 5 s) in case the answer is lost, and re-sends a request that
 * JetStream turned away while others were waiting (408 Requests Pending,
 * 409 Exceeded MaxWaiting). JetStream does not answer a pull for a group
 * that does not exist, so a group this process has not seen (or a fetch
 * that heard nothing by its deadline) is looked up with a consumer info on
 * a worker: BS_ENOTFOUND through the callback. Ending a fetch unsubscribes
 * its reply subject, which also withdraws the request on the server. A wait of 0 still sends a 500
 * ms expiry: a request without one could linger on the server (when max_ack_pending is reached) and
 * take deliveries after the fetch ended. Deliveries that arrive for a fetch already over are handed
 * back at once (-NAK); their delivery count has grown, which is why the expiry is short.
 *
 * Delivery ids are the delivery's ack reply subject
 * ($JS.ACK.<stream>.<group>.<delivered>.<stream seq>.<consumer seq>.<time>.
 * <pending>) without the stream and group (ack gets those from its
 * arguments) plus an 8-hex-digit FNV-1a of all three, so an id of another
 * group or topic is BS_EINVAL instead of a silent no-op. ack (+ACK), nack
 * (-NAK, or -NAK {"delay": ns}) and in_progress (+WPI) are requests to that
 * subject, answered by JetStream once it has processed them, so they work
 * from any replica and report a deleted group (no responders: BS_ENOTFOUND).
 *
 * max_deliver and dead letters are enforced here, not by JetStream: the
 * consumer has MaxDeliver unlimited, and a fetch that receives a delivery
 * whose count exceeds max_deliver appends the dead letter to the dead letter
 * topic (waiting for its pub ack), then acks the original, and does not hand
 * it to the caller. Why not JetStream's own MaxDeliver: past it JetStream
 * only stops redelivering and publishes an advisory on core NATS (at most
 * once: lost when no replica listens at that instant), and the message stays
 * unacknowledged, holding the group's ack floor and a max_ack_pending slot
 * forever. Here a dead letter is durable before the original is acked; if
 * the replica dies between the two, the record is redelivered and dead-
 * lettered again, deduplicated when the dead letter topic has a dedup window
 * (key "dlq/<topic>/<group>/<offset>", as on the segments). A dead letter topic
 * that does not exist is made like the source topic. max_deliver and dead_letter live in
 * the consumer's description so every replica reads them (cached 2 s).
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/time.h"
#include "store/log_nats_int.h"

#define GUARD_MS 5000
/* The shortest expiry of a pull (a wait of 0 included). With no_wait JetStream answers at once
 * when it has nothing, and as soon as it delivered what it has otherwise, so this bounds only
 * how long a loaded server may take to deliver available records (with 20 ms a busy machine
 * lost deliveries) and how long a request lingers when max_ack_pending is reached. */
#define MIN_EXPIRES_MS 500
#define RETRY_MS 25
#define CONFIG_TTL_MS 2000
/* max_ack_pending -1 (no limit): libnats sends no MaxAckPending below 1 (JetStream then
 * takes its default, 1000), so "no limit" is this many, and reads back as -1 */
#define NO_ACK_LIMIT (1 << 30)

struct nl_fetch {
    nl_fetch_t *next; /* l->fetches while waiting */
    int refs;         /* the logic's, plus one per subscription whose last callback has not run */
    int over;         /* the current request ended: messages now are late (handed back) */
    int answered;     /* JetStream said something (a delivery or a status) */
    natsSubscription *sub;
    char subject[96]; /* the reply subject of the current request */
    nlog_t *l;
    nl_topic_t *t;
    nl_group_t *g;
    int max;
    bs_log_fetch_cb cb;
    void *ud;
    natsMsg **msgs;
    int n;
    uint64_t end_ns;   /* start + wait */
    uint64_t guard_ns; /* end + GUARD_MS: JetStream should have answered by then */
    uint64_t retry_ns; /* 0, or when to send the request again */
    int code;
    bs_err_t err;
};

typedef struct {
    uint64_t delivered, sseq, dseq, pending;
    int64_t ts_ns;
    const char *tail; /* "<delivered>.<sseq>.<dseq>.<ts>.<pending>" inside the subject */
    int v1;
} ack_meta_t;

/* ---- ack subjects and delivery ids ------------------------------------------------------- */

/* Parses a JetStream ack reply subject; 0 or -1. */
static int parse_ack_subject(const char *s, ack_meta_t *m)
{
    if (!s || strncmp(s, "$JS.ACK.", 8) != 0)
        return -1;
    const char *tok[16];
    int n = 0;
    tok[n++] = s;
    for (const char *p = s; *p && n < 16; p++)
        if (*p == '.')
            tok[n++] = p + 1;
    int first; /* index of <delivered> */
    if (n == 9)
        first = 4; /* $JS.ACK.<stream>.<consumer>.<5 numbers> */
    else if (n >= 11)
        first = 6; /* $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<5 numbers>[.<token>] */
    else
        return -1;
    uint64_t v[5];
    for (int i = 0; i < 5; i++) {
        char *end;
        v[i] = strtoull(tok[first + i], &end, 10);
        if (end == tok[first + i] || (*end != '.' && *end != '\0'))
            return -1;
    }
    m->delivered = v[0];
    m->sseq = v[1];
    m->dseq = v[2];
    m->ts_ns = (int64_t)v[3];
    m->pending = v[4];
    m->tail = tok[first];
    m->v1 = n == 9;
    return 0;
}

static uint32_t fnv1a(uint32_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static uint32_t id_hash(const char *stream, const char *group, const char *tail, size_t tail_len)
{
    uint32_t h = 2166136261u;
    h = fnv1a(h, stream, strlen(stream) + 1);
    h = fnv1a(h, group, strlen(group) + 1);
    return fnv1a(h, tail, tail_len);
}

/* The delivery id of an ack subject into out (> BS_LOG_DELIVERY_ID_MAX). 0 or -1. */
static int delivery_id(const char *stream, const char *group, const char *subject,
                       const ack_meta_t *m, char *out, size_t n)
{
    if (m->v1) {
        size_t tl = strlen(m->tail);
        snprintf(out, n, "%s.%08x", m->tail, id_hash(stream, group, m->tail, tl));
        return 0;
    }
    if (strlen(subject) > BS_LOG_DELIVERY_ID_MAX)
        return -1;
    snprintf(out, n, "%s", subject);
    return 0;
}

/* 1 if s can go on the wire as a subject just as it is: tokens of printable ASCII without
 * wildcards, one dot apart. A delivery id comes from a client; one holding a space or CR/LF
 * would otherwise be NATS protocol on basalt's connection. */
static int plain_subject(const char *s)
{
    if (!*s || *s == '.')
        return 0;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c >= 0x7f || c == '*' || c == '>')
            return 0;
        if (c == '.' && (p[1] == '.' || p[1] == '\0'))
            return 0;
    }
    return 1;
}

/* The ack subject a delivery id stands for, checked against the group. 0 or BS_EINVAL. */
static int ack_subject(const char *stream, const char *group, const char *id, char *out, size_t n,
                       bs_err_t *err)
{
    if (!id || !*id || strlen(id) > BS_LOG_DELIVERY_ID_MAX)
        return bs_err_setf(err, BS_EINVAL, "delivery_id", "not a delivery id");
    if (strncmp(id, "$JS.ACK.", 8) == 0) {
        /* the whole subject (a server whose ack subjects carry a domain): its stream and
         * consumer tokens must be exactly this group's */
        ack_meta_t m;
        if (!plain_subject(id) || parse_ack_subject(id, &m) || m.v1)
            return bs_err_setf(err, BS_EINVAL, "delivery_id", "not a delivery id");
        const char *p = id + 8;
        for (int skip = 0; skip < 2; skip++) { /* domain, account hash */
            p = strchr(p, '.');
            if (!p)
                return bs_err_setf(err, BS_EINVAL, "delivery_id", "not a delivery id");
            p++;
        }
        size_t sl = strlen(stream), gl = strlen(group);
        if (strncmp(p, stream, sl) != 0 || p[sl] != '.' || strncmp(p + sl + 1, group, gl) != 0 ||
            p[sl + 1 + gl] != '.')
            return bs_err_setf(err, BS_EINVAL, "delivery_id", "not a delivery id of group '%s'",
                               group);
        snprintf(out, n, "%s", id);
        return 0;
    }
    /* "<delivered>.<stream seq>.<consumer seq>.<time>.<pending>.<checksum>": five runs of
     * digits, then 8 lowercase hex digits */
    const char *p = id;
    for (int i = 0; i < 5; i++) {
        const char *q = p;
        while (*q >= '0' && *q <= '9')
            q++;
        if (q == p || *q != '.')
            return bs_err_setf(err, BS_EINVAL, "delivery_id", "not a delivery id");
        p = q + 1;
    }
    size_t tail_len = (size_t)(p - 1 - id);
    if (strlen(p) != 8 || strspn(p, "0123456789abcdef") != 8)
        return bs_err_setf(err, BS_EINVAL, "delivery_id", "not a delivery id");
    char hex[9];
    snprintf(hex, sizeof hex, "%08x", id_hash(stream, group, id, tail_len));
    if (strcmp(hex, p) != 0)
        return bs_err_setf(err, BS_EINVAL, "delivery_id", "not a delivery id of group '%s'", group);
    snprintf(out, n, "$JS.ACK.%s.%s.%.*s", stream, group, (int)tail_len, id);
    return 0;
}

/* ---- group config ------------------------------------------------------------------------ */

/* Copies a consumer info into g. Under l->mu. */
static void group_from_info(nl_group_t *g, const jsConsumerInfo *ci)
{
    g->present = 1;
    g->ack_floor = (int64_t)ci->AckFloor.Stream;
    g->next_offset = (int64_t)ci->Delivered.Stream;
    g->pending = (int64_t)ci->NumPending;
    g->ack_pending = ci->NumAckPending;
    if (!ci->Config)
        return;
    g->max_ack_pending =
        ci->Config->MaxAckPending >= NO_ACK_LIMIT ? -1 : (int)ci->Config->MaxAckPending;
    g->max_deliver = 0;
    g->dead_letter[0] = '\0';
    /* "basalt group: max_deliver=N dead_letter=NAME" (no quotes: libnats does not escape) */
    const char *d = ci->Config->Description;
    if (d && strncmp(d, "basalt group:", 13) == 0) {
        const char *p = strstr(d, " max_deliver=");
        int md;
        if (p && sscanf(p + 13, "%d", &md) == 1 && md > 0)
            g->max_deliver = md;
        p = strstr(d, " dead_letter=");
        char dl[NL_NAME_MAX];
        if (p && sscanf(p + 13, "%63[a-z0-9_-]", dl) == 1 && bs__log_valid_name(dl))
            snprintf(g->dead_letter, sizeof g->dead_letter, "%s", dl);
    }
    g->config_ms = bs_time_wall_ms();
}

/* Reads the consumer info of g. 0, BS_ENOTFOUND (g marked absent), or the error. Waits. */
static int group_refresh(nlog_t *l, nl_topic_t *t, nl_group_t *g, bs_err_t *err)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, l->js, t->stream, g->name, NULL, &jerr);
    if (s == NATS_OK && ci) {
        pthread_mutex_lock(&l->mu);
        group_from_info(g, ci);
        pthread_mutex_unlock(&l->mu);
        jsConsumerInfo_Destroy(ci);
        return 0;
    }
    if (s == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr || jerr == JSStreamNotFoundErr) {
        pthread_mutex_lock(&l->mu);
        g->present = 0;
        pthread_mutex_unlock(&l->mu);
        return bs_err_set(err, BS_ENOTFOUND, "no consumer group '%s' on topic '%s'", g->name,
                          t->name);
    }
    return bs__nl_err(err, s, jerr, "consumer info");
}

void bs__nl_groups_refresh(nlog_t *l, nl_topic_t *t)
{
    jsConsumerInfoList *list = NULL;
    jsErrCode jerr = 0;
    if (js_Consumers(&list, l->js, t->stream, NULL, &jerr) != NATS_OK || !list)
        return;
    pthread_mutex_lock(&l->mu);
    for (nl_group_t *g = t->groups; g; g = g->next)
        g->present = 0;
    for (int i = 0; i < list->Count; i++) {
        jsConsumerInfo *ci = list->List[i];
        if (!ci || !ci->Name || !bs__log_valid_name(ci->Name))
            continue;
        nl_group_t *g = bs__nl_group(t, ci->Name);
        if (g)
            group_from_info(g, ci);
    }
    pthread_mutex_unlock(&l->mu);
    jsConsumerInfoList_Destroy(list);
}

/* Topic and group entries for the names (created when absent). */
static int entries(nlog_t *l, const char *tenant, const char *topic, const char *group,
                   nl_topic_t **t, nl_group_t **g, bs_err_t *err)
{
    int rc = bs__nl_names(tenant, topic, group, err);
    if (rc)
        return rc;
    pthread_mutex_lock(&l->mu);
    *t = bs__nl_topic(l, tenant, topic);
    *g = *t ? bs__nl_group(*t, group) : NULL;
    pthread_mutex_unlock(&l->mu);
    if (!*g)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    return 0;
}

int bs__nl_consumer_ensure(bs_log_t *base, const char *tenant, const char *topic, const char *group,
                           const bs_log_consumer_config_t *cin, bs_err_t *err)
{
    nlog_t *l = (nlog_t *)base;
    nl_topic_t *t;
    nl_group_t *g;
    bs_log_consumer_config_t c = cin ? *cin : (bs_log_consumer_config_t){0};
    int rc = entries(l, tenant, topic, group, &t, &g, err);
    if (rc)
        return rc;
    /* the segments backend's bounds (log_consumer.c), so both take the same configs */
    if (c.ack_wait_ms < 0 || c.ack_wait_ms > 86400000LL * 7)
        return bs_err_setf(err, BS_EINVAL, "ack_wait", "ack_wait must be 0 to 7 days, got %lld ms",
                           (long long)c.ack_wait_ms);
    if (c.max_deliver < -1)
        return bs_err_setf(err, BS_EINVAL, "max_deliver", "max_deliver must be -1 or more, got %d",
                           c.max_deliver);
    if (c.max_ack_pending < -1 || c.max_ack_pending > 1000000)
        return bs_err_setf(err, BS_EINVAL, "max_ack_pending",
                           "max_ack_pending must be -1 to 1000000, got %d", c.max_ack_pending);
    const char *dl = c.dead_letter && c.dead_letter[0] ? c.dead_letter : "";
    if (*dl && !bs__log_valid_name(dl))
        return bs_err_setf(err, BS_EINVAL, "dead_letter",
                           "dead letter topic '%.64s' must match [a-z0-9][a-z0-9_-]{0,62}", dl);
    if (*dl && strcmp(dl, topic) == 0)
        return bs_err_setf(err, BS_EINVAL, "dead_letter",
                           "a topic cannot be its own dead letter topic");
    int64_t ack_wait = c.ack_wait_ms > 0 ? c.ack_wait_ms : 30000;
    int max_ack_pending = c.max_ack_pending == -1 ? NO_ACK_LIMIT
                          : c.max_ack_pending > 0 ? c.max_ack_pending
                                                  : 1000;
    int max_deliver = c.max_deliver > 0 ? c.max_deliver : 0;
    char desc[256];
    snprintf(desc, sizeof desc, "basalt group: max_deliver=%d dead_letter=%s", max_deliver, dl);
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = group;
    cc.Description = desc;
    cc.DeliverPolicy = c.deliver_new ? js_DeliverNew : js_DeliverAll;
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = ack_wait * 1000000;
    cc.MaxDeliver = -1;
    cc.MaxAckPending = max_ack_pending;
    cc.MaxWaiting = 512;
    cc.ReplayPolicy = js_ReplayInstant;

    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, l->js, t->stream, group, NULL, &jerr);
    if (s == NATS_OK && ci) {
        if (ci->Config) { /* what JetStream cannot change stays as created */
            cc.DeliverPolicy = ci->Config->DeliverPolicy;
            cc.OptStartSeq = ci->Config->OptStartSeq;
            cc.OptStartTime = ci->Config->OptStartTime;
            cc.MaxWaiting = ci->Config->MaxWaiting;
        }
        jsConsumerInfo_Destroy(ci);
        ci = NULL;
        jerr = 0;
        s = js_UpdateConsumer(&ci, l->js, t->stream, &cc, NULL, &jerr);
    } else if (jerr == JSConsumerNotFoundErr ||
               (s == NATS_NOT_FOUND && jerr != JSStreamNotFoundErr)) {
        jerr = 0;
        s = js_AddConsumer(&ci, l->js, t->stream, &cc, NULL, &jerr);
    }
    if (jerr == JSStreamNotFoundErr)
        return bs_err_set(err, BS_ENOTFOUND, "no topic '%s'", topic);
    if (s != NATS_OK || !ci)
        return bs__nl_err(err, s, jerr, "consumer ensure");
    pthread_mutex_lock(&l->mu);
    group_from_info(g, ci);
    pthread_mutex_unlock(&l->mu);
    jsConsumerInfo_Destroy(ci);
    return 0;
}

int bs__nl_consumer_delete(bs_log_t *base, const char *tenant, const char *topic, const char *group,
                           bs_err_t *err)
{
    nlog_t *l = (nlog_t *)base;
    nl_topic_t *t;
    nl_group_t *g;
    int rc = entries(l, tenant, topic, group, &t, &g, err);
    if (rc)
        return rc;
    jsErrCode jerr = 0;
    natsStatus s = js_DeleteConsumer(l->js, t->stream, group, NULL, &jerr);
    if (s != NATS_OK && s != NATS_NOT_FOUND && jerr != JSConsumerNotFoundErr &&
        jerr != JSStreamNotFoundErr)
        return bs__nl_err(err, s, jerr, "consumer delete");
    pthread_mutex_lock(&l->mu);
    g->present = 0;
    pthread_mutex_unlock(&l->mu);
    return 0;
}

int bs__nl_consumer_stats(bs_log_t *base, const char *tenant, const char *topic, const char *group,
                          bs_log_consumer_stats_t *out, bs_err_t *err)
{
    nlog_t *l = (nlog_t *)base;
    nl_topic_t *t;
    nl_group_t *g;
    int rc = entries(l, tenant, topic, group, &t, &g, err);
    if (rc)
        return rc;
    if ((rc = group_refresh(l, t, g, err)))
        return rc;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&l->mu);
    out->ack_floor = g->ack_floor;
    out->next_offset = g->next_offset;
    out->pending = g->pending;
    out->ack_pending = g->ack_pending;
    out->max_ack_pending = g->max_ack_pending;
    out->stalled = g->max_ack_pending > 0 && g->ack_pending >= g->max_ack_pending;
    out->delivered = g->delivered;
    out->redelivered = g->redelivered;
    out->acked = g->acked;
    out->dead_lettered = g->dead_lettered;
    pthread_mutex_unlock(&l->mu);
    return 0;
}

int bs__nl_consumers(bs_log_t *base, const char *tenant, const char *topic,
                     int (*cb)(const char *group, void *ud), void *ud, bs_err_t *err)
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
    jsConsumerNamesList *list = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_ConsumerNames(&list, l->js, t->stream, NULL, &jerr);
    if (s == NATS_NOT_FOUND && jerr != JSStreamNotFoundErr) /* no consumers at all */
        return 0;
    if (s != NATS_OK || !list)
        return jerr == JSStreamNotFoundErr || s == NATS_NOT_FOUND
                   ? bs_err_set(err, BS_ENOTFOUND, "no topic '%s'", topic)
                   : bs__nl_err(err, s, jerr, "consumer list");
    for (int i = 0; i < list->Count; i++)
        if (cb(list->List[i], ud))
            break;
    jsConsumerNamesList_Destroy(list);
    return 0;
}

/* ---- fetch ------------------------------------------------------------------------------- */

/* Drops a reference to f (the logic's, or a subscription's once its last callback ran);
 * frees it at 0. Under l->mu. */
static void fetch_unref(nl_fetch_t *f)
{
    if (--f->refs > 0)
        return;
    for (int i = 0; i < f->n; i++)
        if (f->msgs[i])
            natsMsg_Destroy(f->msgs[i]);
    free(f->msgs);
    free(f);
}

static void fetch_sub_done(void *closure)
{
    nl_fetch_t *f = closure;
    nlog_t *l = f->l;
    pthread_mutex_lock(&l->mu);
    l->live_subs--;
    pthread_cond_broadcast(&l->subs_cv);
    fetch_unref(f);
    pthread_mutex_unlock(&l->mu);
}

/* f's request is over: off the waiting list; returns its subscription for the caller to
 * unsubscribe (outside l->mu). Under l->mu. */
static natsSubscription *fetch_end(nlog_t *l, nl_fetch_t *f)
{
    for (nl_fetch_t **p = &l->fetches; *p; p = &(*p)->next)
        if (*p == f) {
            *p = f->next;
            break;
        }
    f->next = NULL;
    f->over = 1;
    natsSubscription *sub = f->sub;
    f->sub = NULL;
    return sub;
}

static void unsubscribe(natsSubscription *sub)
{
    if (sub) {
        natsSubscription_Unsubscribe(sub);
        natsSubscription_Destroy(sub);
    }
}

/* Sends (or sends again) f's pull request for the time left. Under l->mu. */
static natsStatus send_pull(nlog_t *l, nl_fetch_t *f)
{
    uint64_t now = bs_time_mono_ns();
    int64_t left_ms = f->end_ns > now ? (int64_t)((f->end_ns - now) / 1000000) : 0;
    if (left_ms < MIN_EXPIRES_MS)
        left_ms = MIN_EXPIRES_MS;
    char subj[NL_STREAM_MAX + NL_NAME_MAX + 40], body[128];
    snprintf(subj, sizeof subj, "$JS.API.CONSUMER.MSG.NEXT.%s.%s", f->t->stream, f->g->name);
    int bl = snprintf(body, sizeof body, "{\"batch\":%d,\"expires\":%lld,\"no_wait\":true}",
                      f->max - f->n, (long long)left_ms * 1000000);
    return natsConnection_PublishRequest(l->nc, subj, f->subject, body, bl);
}

static void fetch_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure);
/* Completes a fetch that is over: dead letters, the callback, freeing. Without l->mu. */
static void fetch_finish(nlog_t *l, nl_fetch_t *f);

/* Subscribes f to a reply subject of its own and sends its request; on the waiting list
 * then. Under l->mu: nothing can end f before the request is out (libnats calls none of
 * our callbacks while it holds its own locks, so this cannot deadlock). */
static natsStatus fetch_arm(nlog_t *l, nl_fetch_t *f)
{
    /* "<inbox>.f.<n>": two tokens after the inbox, so the inbox's own "<inbox>.*" does not
     * match it (JetStream delivers to the reply subject; each subscription gets a copy). */
    snprintf(f->subject, sizeof f->subject, "%s.f.%" PRIu64, l->inbox, ++l->next_token);
    natsSubscription *sub = NULL;
    natsStatus s = natsConnection_Subscribe(&sub, l->nc, f->subject, fetch_msg, f);
    if (s != NATS_OK)
        return s;
    l->live_subs++;
    f->refs++;
    if (natsSubscription_SetOnCompleteCB(sub, fetch_sub_done, f) != NATS_OK) {
        /* cannot happen for a new asynchronous subscription; account for it anyway */
        l->live_subs--;
        f->refs--;
        natsSubscription_Unsubscribe(sub);
        natsSubscription_Destroy(sub);
        return NATS_ERR;
    }
    natsSubscription_SetPendingLimits(sub, -1, -1);
    f->sub = sub;
    f->over = 0;
    f->retry_ns = 0;
    f->guard_ns = f->end_ns + (uint64_t)GUARD_MS * 1000000u;
    f->next = l->fetches;
    l->fetches = f;
    s = send_pull(l, f);
    if (s != NATS_OK)
        unsubscribe(fetch_end(l, f));
    return s;
}

/* A worker job: a fetch for a group not known here (or whose request JetStream never
 * answered): the group's info says whether it exists; then the fetch goes on or ends. */
static void fetch_check_job(void *arg)
{
    nl_fetch_t *f = arg;
    nlog_t *l = f->l;
    bs_err_t err;
    int rc = group_refresh(l, f->t, f->g, &err);
    if (rc == 0 && f->n == 0 && !f->answered) {
        pthread_mutex_lock(&l->mu);
        natsStatus s = !l->closing ? fetch_arm(l, f) : NATS_ERR;
        pthread_mutex_unlock(&l->mu);
        if (s == NATS_OK)
            return;
    }
    if (rc && f->n == 0) {
        f->code = rc;
        f->err = err;
    }
    f->answered = 1;
    fetch_finish(l, f);
}

int bs__nl_fetch_async(bs_log_t *base, const char *tenant, const char *topic, const char *group,
                       int max, int wait_ms, bs_log_fetch_cb cb, void *ud, bs_err_t *err)
{
    nlog_t *l = (nlog_t *)base;
    nl_topic_t *t;
    nl_group_t *g;
    int rc = entries(l, tenant, topic, group, &t, &g, err);
    if (rc)
        return rc;
    nl_fetch_t *f = calloc(1, sizeof *f);
    if (f)
        f->msgs = calloc((size_t)max, sizeof *f->msgs);
    if (!f || !f->msgs) {
        free(f);
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    f->l = l;
    f->t = t;
    f->g = g;
    f->max = max;
    f->cb = cb;
    f->ud = ud;
    f->refs = 1; /* the logic's; each subscription adds one */
    f->end_ns = bs_time_mono_ns() + (uint64_t)wait_ms * 1000000u;
    pthread_mutex_lock(&l->mu);
    if (l->closing) {
        fetch_unref(f);
        pthread_mutex_unlock(&l->mu);
        return bs_err_set(err, BS_EUNAVAIL, "the log is closing");
    }
    if (!g->present) {
        /* JetStream does not answer a pull for a group that does not exist: one this
         * process has not seen is looked up first, on a worker. */
        rc = bs__nl_job(l, fetch_check_job, f);
        if (rc)
            fetch_unref(f);
        pthread_mutex_unlock(&l->mu);
        return rc ? bs_err_set(err, rc, "cannot queue the fetch") : 0;
    }
    natsStatus s = fetch_arm(l, f);
    if (s != NATS_OK)
        fetch_unref(f);
    pthread_mutex_unlock(&l->mu);
    if (s != NATS_OK)
        return bs__nl_err(err, s, 0, "fetch");
    return 0;
}

/* A message on f's subscription: a delivery, or a status that ends the request. */
static void fetch_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc;
    (void)sub;
    nl_fetch_t *f = closure;
    nlog_t *l = f->l;
    const char *desc;
    const char *st = bs__nl_status(m, &desc);
    pthread_mutex_lock(&l->mu);
    if (f->over) { /* late: the fetch ended (deadline, close) while this was on its way */
        pthread_mutex_unlock(&l->mu);
        bs__nl_orphan(l, m);
        return;
    }
    int over = 0;
    uint64_t now = bs_time_mono_ns();
    int time_left = f->end_ns > now + (uint64_t)MIN_EXPIRES_MS * 1000000u;
    f->answered = 1;
    if (natsMsg_IsNoResponders(m)) {
        f->code = bs_err_set(&f->err, BS_ENOTFOUND, "no consumer group '%s' on topic '%s'",
                             f->g->name, f->t->name);
        over = 1;
    } else if (st) {
        int code = atoi(st);
        if (code == 100) {
            /* heartbeat: nothing */
        } else if (f->n == 0 && time_left &&
                   (strstr(desc, "Requests Pending") || strstr(desc, "Exceeded MaxWaiting"))) {
            f->retry_ns = now + (uint64_t)RETRY_MS * 1000000u; /* turned away: ask again */
        } else if (code == 404 || code == 408 || code == 409) {
            if (strstr(desc, "Consumer Deleted") && f->n == 0)
                f->code = bs_err_set(&f->err, BS_ENOTFOUND, "consumer group '%s' was deleted",
                                     f->g->name);
            over = 1;
        } else {
            if (f->n == 0)
                f->code =
                    bs_err_set(&f->err, BS_EIO, "jetstream refused the fetch: %s %.120s", st, desc);
            over = 1;
        }
        natsMsg_Destroy(m);
        m = NULL;
    } else if (f->n < f->max) {
        f->msgs[f->n++] = m;
        m = NULL;
        over = f->n == f->max;
    }
    natsSubscription *done = over ? fetch_end(l, f) : NULL;
    pthread_mutex_unlock(&l->mu);
    if (m)
        bs__nl_orphan(l, m); /* more than the batch: cannot happen */
    if (over) {
        unsubscribe(done);
        fetch_finish(l, f);
    }
}

void bs__nl_orphan(nlog_t *l, natsMsg *m)
{
    const char *reply = natsMsg_GetReply(m);
    const char *desc;
    if (reply && strncmp(reply, "$JS.ACK.", 8) == 0 && !bs__nl_status(m, &desc))
        natsConnection_PublishString(l->nc, reply, "-NAK");
    natsMsg_Destroy(m);
}

/* Hands f's deliveries to its callback and drops the logic's reference. */
static void fetch_deliver(nlog_t *l, nl_fetch_t *f)
{
    int n = 0, cap = f->n ? f->n : 1;
    bs_log_delivery_t *d = calloc((size_t)cap, sizeof *d);
    char(*ids)[BS_LOG_DELIVERY_ID_MAX + 1] = calloc((size_t)cap, sizeof *ids);
    char(*rid)[129] = calloc((size_t)cap, sizeof *rid);
    char(*key)[300] = calloc((size_t)cap, sizeof *key);
    if (!d || !ids || !rid || !key) {
        free(d);
        free(ids);
        free(rid);
        free(key);
        bs_err_t e;
        bs_err_set(&e, BS_ENOMEM, "out of memory for %d deliveries", f->n);
        f->cb(f->ud, BS_ENOMEM, NULL, 0, &e); /* unacked: redelivered after ack_wait */
        pthread_mutex_lock(&l->mu);
        fetch_unref(f);
        pthread_mutex_unlock(&l->mu);
        return;
    }
    uint64_t redelivered = 0;
    for (int i = 0; i < f->n; i++) {
        natsMsg *m = f->msgs[i];
        ack_meta_t am;
        if (!m || parse_ack_subject(natsMsg_GetReply(m), &am) ||
            delivery_id(f->t->stream, f->g->name, natsMsg_GetReply(m), &am, ids[n], sizeof ids[n]))
            continue;
        bs__nl_msg_ids(m, rid[n], sizeof rid[n], key[n], sizeof key[n]);
        bs_log_delivery_t *x = &d[n];
        x->rec.offset = (int64_t)am.sseq - 1;
        x->rec.time_ms = am.ts_ns / 1000000;
        x->rec.id = rid[n];
        x->rec.dedup_key = key[n];
        x->rec.data = natsMsg_GetData(m) ? natsMsg_GetData(m) : "";
        x->rec.len = (size_t)natsMsg_GetDataLength(m);
        x->delivery = (int)am.delivered;
        x->delivery_id = ids[n];
        if (am.delivered > 1)
            redelivered++;
        n++;
    }
    pthread_mutex_lock(&l->mu);
    f->g->delivered += (uint64_t)n;
    f->g->redelivered += redelivered;
    pthread_mutex_unlock(&l->mu);
    f->cb(f->ud, 0, d, n, NULL);
    free(d);
    free(ids);
    free(rid);
    free(key);
    pthread_mutex_lock(&l->mu);
    fetch_unref(f);
    pthread_mutex_unlock(&l->mu);
}

/* Appends the dead letter of m (a delivery past max_deliver) and acks m. 0 or the error
 * (m then stays unacked: redelivered after ack_wait, dead-lettered again). Waits. */
static int dead_letter(nlog_t *l, nl_fetch_t *f, natsMsg *m, const ack_meta_t *am,
                       const char *dl_topic, bs_err_t *err)
{
    if (dl_topic[0]) {
        pthread_mutex_lock(&l->mu);
        nl_topic_t *dt = bs__nl_topic(l, f->t->tenant, dl_topic);
        int known = dt && dt->state == NL_PRESENT;
        pthread_mutex_unlock(&l->mu);
        if (!dt)
            return bs_err_set(err, BS_ENOMEM, "out of memory");
        int rc = known ? 0 : bs__nl_stream_refresh(l, dt, err);
        if (rc == BS_ENOTFOUND) {
            /* made like the source topic, as the segments backend does; room for the
             * wrapper around the largest record */
            pthread_mutex_lock(&l->mu);
            bs_log_topic_config_t c = f->t->cfg;
            pthread_mutex_unlock(&l->mu);
            if (c.max_record_bytes > 0)
                c.max_record_bytes += 4096;
            rc = l->base.ops->topic_ensure(&l->base, f->t->tenant, dl_topic, &c, err);
        }
        if (rc)
            return rc;
        bs_buf_t b;
        bs_buf_init(&b);
        const char *data = natsMsg_GetData(m) ? natsMsg_GetData(m) : "";
        size_t len = (size_t)natsMsg_GetDataLength(m);
        bs_buf_printf(&b,
                      "{\"topic\":\"%s\",\"offset\":%" PRIu64 ",\"deliveries\":%" PRIu64
                      ",\"group\":\"%s\",\"event\":",
                      f->t->name, am->sseq - 1, am->delivered - 1, f->g->name);
        cJSON *j = cJSON_ParseWithLength(data, len);
        if (j)
            bs_buf_append(&b, data, len);
        else
            bs_jw_strn(&b, data, len); /* not JSON: kept as a string */
        cJSON_Delete(j);
        bs_buf_putc(&b, '}');
        char id[129], key[300]; /* the original's id; its key is not the dead letter's */
        bs__nl_msg_ids(m, id, sizeof id, key, sizeof key);
        pthread_mutex_lock(&l->mu);
        int dedup = dt->cfg.dedup_window_ms > 0;
        pthread_mutex_unlock(&l->mu);
        char dlkey[NL_NAME_MAX * 2 + 48]; /* the segments backend's key */
        snprintf(dlkey, sizeof dlkey, "dlq/%s/%s/%" PRIu64, f->t->name, f->g->name, am->sseq - 1);
        uint64_t seq = 0;
        rc = bs__nl_publish_sync(l, dt, id, dedup ? dlkey : NULL, b.data, b.len, &seq, err);
        bs_buf_free(&b);
        if (rc)
            return rc;
    }
    natsMsg *reply = NULL;
    natsStatus s =
        natsConnection_RequestString(&reply, l->nc, natsMsg_GetReply(m), "+ACK", NL_REQ_TIMEOUT_MS);
    natsMsg_Destroy(reply);
    if (s != NATS_OK)
        return bs__nl_err(err, s, 0, "ack after dead-lettering");
    pthread_mutex_lock(&l->mu);
    f->g->dead_lettered++;
    pthread_mutex_unlock(&l->mu);
    return 0;
}

/* A worker job: the fetch holds redeliveries; dead-letter those past max_deliver. */
static void fetch_dl_job(void *arg)
{
    nl_fetch_t *f = arg;
    nlog_t *l = f->l;
    bs_err_t err;
    pthread_mutex_lock(&l->mu);
    int stale = bs_time_wall_ms() - f->g->config_ms > CONFIG_TTL_MS;
    pthread_mutex_unlock(&l->mu);
    if (stale)
        group_refresh(l, f->t, f->g, &err);
    pthread_mutex_lock(&l->mu);
    int max_deliver = f->g->max_deliver;
    char dl[NL_NAME_MAX];
    snprintf(dl, sizeof dl, "%s", f->g->dead_letter);
    pthread_mutex_unlock(&l->mu);
    int kept = 0, lettered = 0;
    for (int i = 0; i < f->n; i++) {
        natsMsg *m = f->msgs[i];
        ack_meta_t am;
        if (max_deliver > 0 && parse_ack_subject(natsMsg_GetReply(m), &am) == 0 &&
            am.delivered > (uint64_t)max_deliver) {
            if (dead_letter(l, f, m, &am, dl, &err) == 0)
                lettered++;
            else
                BS_LOG(BS_LOG_WARN, "log",
                       "topic %s group %s: cannot dead-letter offset %" PRIu64
                       " (retried after ack_wait): %s",
                       f->t->name, f->g->name, am.sseq - 1, err.msg);
            natsMsg_Destroy(m);
            continue;
        }
        f->msgs[kept++] = m;
    }
    for (int i = kept; i < f->n; i++)
        f->msgs[i] = NULL;
    f->n = kept;
    uint64_t now = bs_time_mono_ns();
    if (kept == 0 && lettered > 0 && f->end_ns > now + (uint64_t)MIN_EXPIRES_MS * 1000000u) {
        /* Everything went to the dead letter topic and the caller still waits: ask again. */
        pthread_mutex_lock(&l->mu);
        int armed = !l->closing && fetch_arm(l, f) == NATS_OK;
        pthread_mutex_unlock(&l->mu);
        if (armed)
            return;
    }
    fetch_deliver(l, f);
}

static void fetch_finish(nlog_t *l, nl_fetch_t *f)
{
    if (f->code && f->n == 0) {
        f->cb(f->ud, f->code, NULL, 0, &f->err);
        pthread_mutex_lock(&l->mu);
        fetch_unref(f);
        pthread_mutex_unlock(&l->mu);
        return;
    }
    /* Redeliveries may be past max_deliver: decided on a worker (it may read the group's
     * config and append dead letters) unless the cached config already says no. */
    uint64_t most = 0;
    for (int i = 0; i < f->n; i++) {
        ack_meta_t am;
        if (parse_ack_subject(natsMsg_GetReply(f->msgs[i]), &am) == 0 && am.delivered > most)
            most = am.delivered;
    }
    if (most > 1) {
        pthread_mutex_lock(&l->mu);
        int fresh = bs_time_wall_ms() - f->g->config_ms <= CONFIG_TTL_MS;
        int over = f->g->max_deliver > 0 && most > (uint64_t)f->g->max_deliver;
        int queued = (!fresh || over) && bs__nl_job(l, fetch_dl_job, f) == 0;
        pthread_mutex_unlock(&l->mu);
        if (queued)
            return;
    }
    fetch_deliver(l, f);
}

void bs__nl_fetch_tick(nlog_t *l)
{
    uint64_t now = bs_time_mono_ns();
    nl_fetch_t *done = NULL;
    natsSubscription *subs[64];
    int nsubs = 0;
    pthread_mutex_lock(&l->mu);
    for (nl_fetch_t *f = l->fetches, *nf; f; f = nf) {
        nf = f->next;
        if (f->retry_ns && now >= f->retry_ns) {
            f->retry_ns = 0;
            if (send_pull(l, f) == NATS_OK)
                continue;
            f->guard_ns = now; /* cannot ask: end it */
        }
        if (now >= f->guard_ns && nsubs < 64) {
            subs[nsubs++] = fetch_end(l, f);
            if (f->n == 0 && natsConnection_Status(l->nc) != NATS_CONN_STATUS_CONNECTED)
                f->code = bs_err_set(&f->err, BS_EUNAVAIL, "jetstream is unreachable");
            f->next = done;
            done = f;
        }
    }
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < nsubs; i++)
        unsubscribe(subs[i]);
    for (nl_fetch_t *f = done, *nf; f; f = nf) {
        nf = f->next;
        /* Not a word from JetStream: the group (or topic) may be gone, which it does not
         * answer for. Ask on a worker (it ends the fetch); else end it here. */
        if (!f->answered && !f->code) {
            f->answered = 1;
            pthread_mutex_lock(&l->mu);
            int queued = bs__nl_job(l, fetch_check_job, f) == 0;
            pthread_mutex_unlock(&l->mu);
            if (queued)
                continue;
        }
        fetch_finish(l, f);
    }
}

void bs__nl_fetch_close_all(nlog_t *l)
{
    for (;;) {
        pthread_mutex_lock(&l->mu);
        nl_fetch_t *f = l->fetches;
        natsSubscription *sub = f ? fetch_end(l, f) : NULL;
        pthread_mutex_unlock(&l->mu);
        if (!f)
            break;
        unsubscribe(sub);
        fetch_finish(l, f);
    }
}

/* ---- ack, nack, in progress -------------------------------------------------------------- */

static int ack_send(nlog_t *l, const char *tenant, const char *topic, const char *group,
                    const char *id, const char *body, const char *what, int count_ack,
                    bs_err_t *err)
{
    nl_topic_t *t;
    nl_group_t *g;
    int rc = entries(l, tenant, topic, group, &t, &g, err);
    if (rc)
        return rc;
    char subj[BS_LOG_DELIVERY_ID_MAX + NL_STREAM_MAX + NL_NAME_MAX + 16];
    if ((rc = ack_subject(t->stream, group, id, subj, sizeof subj, err)))
        return rc;
    natsMsg *reply = NULL;
    natsStatus s =
        natsConnection_Request(&reply, l->nc, subj, body, (int)strlen(body), NL_REQ_TIMEOUT_MS);
    natsMsg_Destroy(reply);
    if (s == NATS_NO_RESPONDERS)
        return bs_err_set(err, BS_ENOTFOUND, "no consumer group '%s' on topic '%s'", group, topic);
    if (s != NATS_OK)
        return bs__nl_err(err, s, 0, what);
    if (count_ack) {
        pthread_mutex_lock(&l->mu);
        g->acked++;
        pthread_mutex_unlock(&l->mu);
    }
    return 0;
}

int bs__nl_ack(bs_log_t *base, const char *tenant, const char *topic, const char *group,
               const char *delivery_id, bs_err_t *err)
{
    return ack_send((nlog_t *)base, tenant, topic, group, delivery_id, "+ACK", "ack", 1, err);
}

int bs__nl_nack(bs_log_t *base, const char *tenant, const char *topic, const char *group,
                const char *delivery_id, int64_t delay_ms, bs_err_t *err)
{
    char body[64];
    if (delay_ms > INT64_MAX / 1000000) /* JetStream takes nanoseconds */
        delay_ms = INT64_MAX / 1000000;
    if (delay_ms > 0)
        snprintf(body, sizeof body, "-NAK {\"delay\": %lld}", (long long)delay_ms * 1000000);
    else
        snprintf(body, sizeof body, "-NAK");
    return ack_send((nlog_t *)base, tenant, topic, group, delivery_id, body, "nack", 0, err);
}

int bs__nl_in_progress(bs_log_t *base, const char *tenant, const char *topic, const char *group,
                       const char *delivery_id, bs_err_t *err)
{
    return ack_send((nlog_t *)base, tenant, topic, group, delivery_id, "+WPI", "in_progress", 0,
                    err);
}
