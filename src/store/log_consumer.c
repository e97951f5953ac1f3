/*
 * Consumer groups of the segments backend (log.h "consumer groups";
 * JetStream pull-consumer semantics): their state, its journal, and the fetch
 * thread.
 *
 * State of a group: next (the first record never delivered) and the pending
 * list, the records delivered and not acked, by offset, each with its
 * delivery count and the time its ack_wait (or nack delay) runs out. Every
 * record below next that is not pending is done (acked or dead-lettered), so
 * the ack floor is the first pending offset (or next).
 *
 * Journal <topic dir>/<group>.group: a header, then CRC-framed entries
 * (config; snapshot = next + pending list; NEXT from,to = records delivered
 * for the first time; REDELIVER offset,count; ACK offset). Entries are written
 * with write(2) as things happen (ack, fetch), not fsynced one by one: a kill
 * -9 loses nothing, a machine crash loses at most the last second (the
 * background thread fdatasyncs dirty journals every second), which means
 * redeliveries, never a lost record (at-least-once). The journal is rewritten
 * as a snapshot on open and when it grows (compaction, in the background
 * thread, without holding the group's lock across the fsync). After a reopen,
 * pending records are redelivered once their ack_wait (from the reopen) runs
 * out.
 *
 * Fetches: bs_log_fetch_async queues the request for the fetch thread (it may
 * be called on an I/O thread; reads go to disk). The thread picks what to
 * deliver under the group's lock, reads the records with no lock held, then
 * commits the deliveries under the lock and calls back. A fetch that found
 * nothing parks until the writer publishes records of its topic, an ack or
 * nack changes its group, a redelivery falls due, or its wait runs out.
 * Records past max_deliver are appended to the dead letter topic (created
 * like the source topic when missing) and acked once that append is durable.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/time.h"
#include "store/log_seg_int.h"

#include <cjson/cJSON.h>

typedef struct {
    int64_t offset;
    int64_t due_ms; /* monotonic ms: redeliver from then on */
    int32_t deliveries;
    uint8_t acked, dlq;
} pend_t;

typedef struct bs__group {
    struct bs__group *lnext; /* the topic's list, under gmu */
    bs__topic_t *t;
    char name[64];
    atomic_int refs;
    atomic_int nwait;
    atomic_uint_fast64_t gen; /* bumped by acks, nacks, dead letters, deletion */
    pthread_mutex_t mu;       /* everything below */
    bs_log_consumer_config_t cfg;
    char dl[64];
    int deleted;
    int64_t next;
    pend_t *p;
    int p0, np, cp, nacked;
    int64_t ack_pending;
    int64_t min_due;
    int stalled;
    int fd;
    char *path;
    uint64_t jbytes;
    int jdirty;
    bs_buf_t *capture; /* entries written while a compaction runs */
    uint64_t delivered, redelivered, acked, dead_lettered, stalls;
} bs__group_t;

typedef struct bs__fetch {
    struct bs__fetch *next;
    bs__group_t *g;
    int max;
    int waiting;
    uint64_t seen; /* topic publications + group changes at the last attempt */
    uint64_t deadline_ns;
    int64_t due_ms;
    bs_log_fetch_cb cb;
    void *ud;
} bs__fetch_t;

enum { J_CONFIG = 1, J_SNAP = 2, J_NEXT = 3, J_REDELIVER = 4, J_ACK = 5 };

#define JOURNAL_COMPACT_MIN ((uint64_t)1 << 20)
#define FETCH_BYTES ((size_t)64 << 20)
#define PENDING_LIMIT 10000000
#define DLQ_RETRY_MS 1000
/* A journal's delivery counts stay far from INT32_MAX (a fetch adds one). */
#define DELIVERIES_MAX 1000000000

static int64_t mono_ms(void)
{
    return (int64_t)(bs_time_mono_ns() / 1000000u);
}

/* ---- groups ----------------------------------------------------------------------------- */

static bs_log_consumer_config_t cfg_norm(const bs_log_consumer_config_t *c)
{
    bs_log_consumer_config_t n = *c;
    if (n.ack_wait_ms == 0)
        n.ack_wait_ms = 30000;
    if (n.max_deliver < 0)
        n.max_deliver = 0;
    if (n.max_ack_pending == 0)
        n.max_ack_pending = 1000;
    return n;
}

static void group_unref(bs__group_t *g)
{
    if (!g || atomic_fetch_sub(&g->refs, 1) != 1)
        return;
    if (g->fd >= 0) {
        if (g->jdirty)
            fdatasync(g->fd);
        close(g->fd);
    }
    free(g->p);
    free(g->path);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

static bs__group_t *group_new(bs__topic_t *t, const char *name)
{
    bs__group_t *g = calloc(1, sizeof *g);
    size_t n = strlen(t->dir) + strlen(name) + 16;
    if (!g || !(g->path = malloc(n))) {
        free(g);
        return NULL;
    }
    snprintf(g->path, n, "%s/%s.group", t->dir, name);
    snprintf(g->name, sizeof g->name, "%s", name);
    g->t = t;
    g->fd = -1;
    atomic_init(&g->refs, 1);
    pthread_mutex_init(&g->mu, NULL);
    g->min_due = INT64_MAX;
    g->cfg.dead_letter = g->dl;
    return g;
}

/* Index of the pending entry of offset in [p0, np), or -1. */
static int pend_find(const bs__group_t *g, int64_t offset)
{
    int lo = g->p0, hi = g->np - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (g->p[mid].offset == offset)
            return mid;
        if (g->p[mid].offset < offset)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

static int pend_push(bs__group_t *g, int64_t offset, int32_t deliveries, int64_t due)
{
    if (g->np == g->cp) {
        if (g->p0 > 0) {
            memmove(g->p, g->p + g->p0, (size_t)(g->np - g->p0) * sizeof *g->p);
            g->np -= g->p0;
            g->p0 = 0;
        }
        if (g->np == g->cp) {
            int c = g->cp ? g->cp * 2 : 64;
            pend_t *n = realloc(g->p, (size_t)c * sizeof *n);
            if (!n)
                return -1;
            g->p = n;
            g->cp = c;
        }
    }
    g->p[g->np++] = (pend_t){offset, due, deliveries, 0, 0};
    g->ack_pending++;
    if (due < g->min_due)
        g->min_due = due;
    return 0;
}

static void pend_compact(bs__group_t *g)
{
    while (g->p0 < g->np && g->p[g->p0].acked) {
        g->p0++;
        g->nacked--;
    }
    if (g->p0 == g->np) {
        g->p0 = g->np = g->nacked = 0;
    } else if (g->nacked > 64 && g->nacked * 2 > g->np - g->p0) {
        int j = 0;
        for (int i = g->p0; i < g->np; i++)
            if (!g->p[i].acked)
                g->p[j++] = g->p[i];
        g->np = j;
        g->p0 = 0;
        g->nacked = 0;
    }
}

static void pend_done(bs__group_t *g, int i)
{
    g->p[i].acked = 1;
    g->ack_pending--;
    g->nacked++;
    pend_compact(g);
}

/* Forgets the pending entries from offset on (records the log no longer has). They form
 * the tail of the list, which is dropped in place: nothing moves under an iteration. */
static void pend_truncate(bs__group_t *g, int64_t offset)
{
    while (g->np > g->p0 && g->p[g->np - 1].offset >= offset) {
        if (g->p[g->np - 1].acked)
            g->nacked--;
        else
            g->ack_pending--;
        g->np--;
    }
    pend_compact(g);
}

static int64_t group_floor(const bs__group_t *g)
{
    return g->p0 < g->np ? g->p[g->p0].offset : g->next;
}

/* What a parked fetch of g may be waiting for changed (an ack, a nack, a dead letter done or
 * to retry, deletion): bumps gen, then wakes the fetch thread if a fetch waits on g. */
static void group_changed(bs__group_t *g)
{
    atomic_fetch_add(&g->gen, 1);
    if (atomic_load(&g->nwait) > 0)
        bs__consumer_kick(g->t->log);
}

static int cfg_check(const char *topic, const bs_log_consumer_config_t *c, bs_err_t *err)
{
    if (c->ack_wait_ms < 0 || c->ack_wait_ms > 86400000LL * 7)
        return bs_err_setf(err, BS_EINVAL, "ack_wait", "ack_wait must be 0 to 7 days, got %lld ms",
                           (long long)c->ack_wait_ms);
    if (c->max_deliver < -1)
        return bs_err_setf(err, BS_EINVAL, "max_deliver", "max_deliver must be >= -1, got %d",
                           c->max_deliver);
    if (c->max_ack_pending < -1 || c->max_ack_pending > 1000000)
        return bs_err_setf(err, BS_EINVAL, "max_ack_pending",
                           "max_ack_pending must be -1 to 1000000, got %d", c->max_ack_pending);
    if (c->dead_letter && c->dead_letter[0]) {
        if (!bs__log_valid_name(c->dead_letter))
            return bs_err_setf(err, BS_EINVAL, "dead_letter",
                               "dead letter topic '%.64s' must match [a-z0-9][a-z0-9_-]{0,62}",
                               c->dead_letter);
        if (strcmp(c->dead_letter, topic) == 0)
            return bs_err_setf(err, BS_EINVAL, "dead_letter",
                               "a topic cannot be its own dead letter topic ('%s')", topic);
    }
    return 0;
}

static void cfg_store(bs__group_t *g, const bs_log_consumer_config_t *c)
{
    g->cfg = *c;
    snprintf(g->dl, sizeof g->dl, "%s", c->dead_letter ? c->dead_letter : "");
    g->cfg.dead_letter = g->dl;
}

/* ---- the journal ------------------------------------------------------------------------ */

static void jentry(bs_buf_t *b, const uint8_t *payload, size_t n)
{
    uint8_t h[8];
    bs__put32(h, (uint32_t)n);
    bs__put32(h + 4, bs__crc32c(0, payload, n));
    bs_buf_append(b, h, 8);
    bs_buf_append(b, payload, n);
}

static void j_config(bs_buf_t *b, const bs__group_t *g)
{
    uint8_t p[1 + 8 + 4 + 4 + 1 + 1 + 64];
    size_t dl = strlen(g->dl);
    p[0] = J_CONFIG;
    bs__put64(p + 1, (uint64_t)g->cfg.ack_wait_ms);
    bs__put32(p + 9, (uint32_t)g->cfg.max_deliver);
    bs__put32(p + 13, (uint32_t)g->cfg.max_ack_pending);
    p[17] = (uint8_t)(g->cfg.deliver_new != 0);
    p[18] = (uint8_t)dl;
    memcpy(p + 19, g->dl, dl);
    jentry(b, p, 19 + dl);
}

static void j_snap(bs_buf_t *b, const bs__group_t *g)
{
    int n = 0;
    for (int i = g->p0; i < g->np; i++)
        n += !g->p[i].acked;
    size_t len = 1 + 8 + 4 + (size_t)n * 12;
    uint8_t *p = malloc(len);
    if (!p) {
        b->oom = 1;
        return;
    }
    p[0] = J_SNAP;
    bs__put64(p + 1, (uint64_t)g->next);
    bs__put32(p + 9, (uint32_t)n);
    uint8_t *q = p + 13;
    for (int i = g->p0; i < g->np; i++)
        if (!g->p[i].acked) {
            bs__put64(q, (uint64_t)g->p[i].offset);
            bs__put32(q + 8, (uint32_t)g->p[i].deliveries);
            q += 12;
        }
    jentry(b, p, len);
    free(p);
}

static void j_next(bs_buf_t *b, int64_t from, int64_t to)
{
    uint8_t p[17] = {J_NEXT};
    bs__put64(p + 1, (uint64_t)from);
    bs__put64(p + 9, (uint64_t)to);
    jentry(b, p, sizeof p);
}

static void j_redeliver(bs_buf_t *b, int64_t offset, int32_t deliveries)
{
    uint8_t p[13] = {J_REDELIVER};
    bs__put64(p + 1, (uint64_t)offset);
    bs__put32(p + 9, (uint32_t)deliveries);
    jentry(b, p, sizeof p);
}

static void j_ack(bs_buf_t *b, int64_t offset)
{
    uint8_t p[9] = {J_ACK};
    bs__put64(p + 1, (uint64_t)offset);
    jentry(b, p, sizeof p);
}

/* Appends the entries in b to the journal. Under g->mu. */
static void jflush(bs__group_t *g, bs_buf_t *b)
{
    if (!b->len || g->fd < 0 || g->deleted)
        return;
    if (b->oom) {
        BS_LOG(BS_LOG_ERROR, "log", "group %s/%s/%s: out of memory journaling", g->t->tenant,
               g->t->name, g->name);
        return;
    }
    const char *p = b->data;
    size_t n = b->len;
    while (n) {
        ssize_t w = write(g->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            BS_LOG(BS_LOG_ERROR, "log",
                   "group %s/%s/%s: cannot write its journal: %s (positions "
                   "may go back on restart)",
                   g->t->tenant, g->t->name, g->name, strerror(errno));
            return;
        }
        p += w;
        n -= (size_t)w;
    }
    g->jbytes += b->len;
    g->jdirty = 1;
    if (g->capture)
        bs_buf_append(g->capture, b->data, b->len);
}

/* pend_done, journaled. Under g->mu. */
static void pend_ack(bs__group_t *g, int i)
{
    char st[32];
    bs_buf_t b = BS_BUF_ON(st);
    j_ack(&b, g->p[i].offset);
    pend_done(g, i);
    jflush(g, &b);
    bs_buf_free(&b);
}

/* Applies one journal entry; 0, or -1 when it does not make sense (the replay stops there,
 * the entry not applied: the invariants hold at every stop). */
static int japply(bs__group_t *g, const uint8_t *p, size_t n, int64_t due)
{
    if (n < 1)
        return -1;
    switch (p[0]) {
    case J_CONFIG: {
        if (n < 19 || p[18] > 63 || n != 19u + p[18])
            return -1;
        char dl[64];
        memcpy(dl, p + 19, p[18]);
        dl[p[18]] = '\0';
        bs_log_consumer_config_t c = {0};
        c.ack_wait_ms = (int64_t)bs__get64(p + 1);
        c.max_deliver = (int32_t)bs__get32(p + 9);
        c.max_ack_pending = (int32_t)bs__get32(p + 13);
        c.deliver_new = p[17] != 0;
        c.dead_letter = dl;
        /* What consumer_ensure accepts, no more (an ack_wait near INT64_MAX would overflow
         * every due time). */
        if (strlen(dl) != p[18] || cfg_check(g->t->name, &c, NULL) != 0)
            return -1;
        cfg_store(g, &c);
        return 0;
    }
    case J_SNAP: {
        if (n < 13)
            return -1;
        int64_t next = (int64_t)bs__get64(p + 1);
        uint32_t cnt = bs__get32(p + 9);
        if (next < 0 || next >= ((int64_t)1 << 62) || cnt > PENDING_LIMIT ||
            n != 13 + (size_t)cnt * 12)
            return -1;
        int64_t prev = -1;
        for (uint32_t i = 0; i < cnt; i++) {
            int64_t o = (int64_t)bs__get64(p + 13 + (size_t)i * 12);
            int32_t d = (int32_t)bs__get32(p + 13 + (size_t)i * 12 + 8);
            if (o <= prev || o >= next || d < 1 || d > DELIVERIES_MAX)
                return -1;
            prev = o;
        }
        g->p0 = g->np = g->nacked = 0;
        g->ack_pending = 0;
        for (uint32_t i = 0; i < cnt; i++)
            if (pend_push(g, (int64_t)bs__get64(p + 13 + (size_t)i * 12),
                          (int32_t)bs__get32(p + 13 + (size_t)i * 12 + 8), due) != 0) {
                g->np = 0; /* out of memory: an empty list, consistent with next */
                g->ack_pending = 0;
                return -1;
            }
        g->next = next;
        return 0;
    }
    case J_NEXT: {
        if (n != 17)
            return -1;
        int64_t from = (int64_t)bs__get64(p + 1), to = (int64_t)bs__get64(p + 9);
        if (from < g->next || to < from || to >= ((int64_t)1 << 62) ||
            to - from > BS_LOG_MAX_BATCH || g->np - g->p0 + (to - from) > PENDING_LIMIT)
            return -1;
        for (int64_t o = from; o < to; o++)
            if (pend_push(g, o, 1, due) != 0) {
                g->np -= (int)(o - from); /* out of memory: the entry changes nothing */
                g->ack_pending -= o - from;
                return -1;
            }
        g->next = to;
        return 0;
    }
    case J_REDELIVER: {
        if (n != 13)
            return -1;
        int i = pend_find(g, (int64_t)bs__get64(p + 1));
        int32_t d = (int32_t)bs__get32(p + 9);
        if (d < 1 || d > DELIVERIES_MAX)
            return -1;
        if (i >= 0 && !g->p[i].acked)
            g->p[i].deliveries = d;
        return 0;
    }
    case J_ACK: {
        if (n != 9)
            return -1;
        int i = pend_find(g, (int64_t)bs__get64(p + 1));
        if (i >= 0 && !g->p[i].acked)
            pend_done(g, i);
        return 0;
    }
    default:
        return -1;
    }
}

/* Replays a journal image; returns the number of bytes that made sense (-1: bad header). */
static int64_t jreplay(bs__group_t *g, const uint8_t *p, size_t n, int64_t due)
{
    if (n < 8 || memcmp(p, BS__GRP_MAGIC, 8) != 0)
        return -1;
    size_t pos = 8;
    while (pos + 8 <= n) {
        uint32_t len = bs__get32(p + pos);
        if (len > n - pos - 8 || bs__crc32c(0, p + pos + 8, len) != bs__get32(p + pos + 4) ||
            japply(g, p + pos + 8, len, due) != 0)
            break;
        pos += 8 + (size_t)len;
    }
    return (int64_t)pos;
}

/* After a replay: every pending record is redelivered once its ack_wait runs out from now,
 * and what lies past the topic's end (tnext: records a machine crash took with
 * sync_interval_ms > 0) is forgotten. */
static void group_replayed(bs__group_t *g, int64_t tnext)
{
    /* Replay used the ack_wait of whatever config came first; redo due times properly. */
    int64_t due = mono_ms() + cfg_norm(&g->cfg).ack_wait_ms;
    g->min_due = INT64_MAX;
    for (int i = g->p0; i < g->np; i++)
        g->p[i].due_ms = due;
    if (g->np > g->p0)
        g->min_due = due;
    if (g->next > tnext) {
        pend_truncate(g, tnext);
        g->next = tnext;
    }
}

int bs__journal_check(const uint8_t *p, size_t n)
{
    bs__topic_t t;
    memset(&t, 0, sizeof t);
    t.dir = (char *)"/nonexistent";
    bs__group_t *g = group_new(&t, "fuzz");
    if (!g)
        return -1;
    int64_t ok = jreplay(g, p, n, 0);
    if (ok >= 0) {
        /* As on open, against a topic that ends halfway through what the journal delivered. */
        group_replayed(g, g->next / 2);
        /* The invariants the rest relies on. */
        int64_t prev = -1, unacked = 0;
        for (int i = g->p0; i < g->np; i++) {
            if (g->p[i].offset <= prev || g->p[i].offset >= g->next)
                abort();
            prev = g->p[i].offset;
            unacked += !g->p[i].acked;
        }
        if (unacked != g->ack_pending || cfg_check(t.name, &g->cfg, NULL) != 0)
            abort();
        for (int i = g->p0; i < g->np; i++)
            if (g->p[i].deliveries < 1 || g->p[i].deliveries > DELIVERIES_MAX)
                abort();
        bs_buf_t b;
        bs_buf_init(&b);
        j_config(&b, g);
        j_snap(&b, g);
        bs_buf_free(&b);
    }
    group_unref(g);
    return ok >= 0 ? 0 : -1;
}

static int write_all_fd(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Writes header + config + snapshot (+ extra) to <path>.tmp, fsynced; returns its fd or -1. */
static int jwrite_tmp(bs__group_t *g, const bs_buf_t *snap, char *tmp, size_t tn)
{
    snprintf(tmp, tn, "%s.tmp", g->path);
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    if (write_all_fd(fd, BS__GRP_MAGIC, 8) != 0 || write_all_fd(fd, snap->data, snap->len) != 0 ||
        fdatasync(fd) != 0) {
        close(fd);
        unlink(tmp);
        return -1;
    }
    return fd;
}

/* Rewrites the journal as a snapshot, synchronously (creation, open). Under g->mu or before
 * g is shared. */
static int jrewrite(bs__group_t *g, bs_err_t *err)
{
    bs_buf_t b;
    bs_buf_init(&b);
    j_config(&b, g);
    j_snap(&b, g);
    char tmp[1200];
    int fd = b.oom ? -1 : jwrite_tmp(g, &b, tmp, sizeof tmp);
    size_t len = b.len;
    bs_buf_free(&b);
    if (fd < 0 || rename(tmp, g->path) != 0 || bs__fsync_dir(g->t->dir) != 0) {
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        return bs_err_set(err, BS_EIO, "cannot write %s: %s", g->path, strerror(errno));
    }
    if (lseek(fd, 0, SEEK_END) < 0) {
        close(fd);
        return bs_err_set(err, BS_EIO, "cannot seek %s: %s", g->path, strerror(errno));
    }
    if (g->fd >= 0)
        close(g->fd);
    g->fd = fd;
    g->jbytes = 8 + len;
    g->jdirty = 0;
    return 0;
}

/* Compacts g's journal without holding its lock across the fsync (the background thread). */
static void jcompact(bs__group_t *g)
{
    bs_buf_t snap, capture;
    bs_buf_init(&snap);
    bs_buf_init(&capture);
    pthread_mutex_lock(&g->mu);
    if (g->deleted || g->capture) {
        pthread_mutex_unlock(&g->mu);
        return;
    }
    j_config(&snap, g);
    j_snap(&snap, g);
    g->capture = &capture;
    pthread_mutex_unlock(&g->mu);
    char tmp[1200];
    int fd = snap.oom ? -1 : jwrite_tmp(g, &snap, tmp, sizeof tmp);
    pthread_mutex_lock(&g->mu);
    g->capture = NULL;
    int ok = fd >= 0 && !g->deleted && !capture.oom &&
             write_all_fd(fd, capture.data, capture.len) == 0 && rename(tmp, g->path) == 0;
    int old = -1;
    if (ok) {
        old = g->fd;
        g->fd = fd;
        g->jbytes = 8 + snap.len + capture.len;
        g->jdirty = capture.len > 0;
    }
    pthread_mutex_unlock(&g->mu);
    if (ok) {
        bs__fsync_dir(g->t->dir);
        if (old >= 0)
            close(old);
    } else if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    bs_buf_free(&snap);
    bs_buf_free(&capture);
}

static int group_load(bs__topic_t *t, const char *name, bs_err_t *err)
{
    bs__group_t *g = group_new(t, name);
    if (!g)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    int fd = open(g->path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0)
            close(fd);
        group_unref(g);
        return bs_err_set(err, BS_EIO, "cannot open %s: %s", g->path, strerror(errno));
    }
    uint8_t *buf = st.st_size ? malloc((size_t)st.st_size) : NULL;
    ssize_t got = buf ? pread(fd, buf, (size_t)st.st_size, 0) : 0;
    close(fd);
    int64_t ok = got == st.st_size ? jreplay(g, buf ? buf : (const uint8_t *)"", (size_t)got,
                                             mono_ms() + cfg_norm(&g->cfg).ack_wait_ms)
                                   : -1;
    free(buf);
    if (ok < 0) {
        group_unref(g);
        BS_LOG(BS_LOG_ERROR, "log", "topic %s/%s: group journal %s is unreadable; group skipped",
               t->tenant, t->name, name);
        return 0;
    }
    group_replayed(g, t->next_offset);
    if (jrewrite(g, err) != 0) {
        group_unref(g);
        return err ? err->code : BS_EIO;
    }
    pthread_mutex_lock(&t->gmu);
    g->lnext = t->groups;
    t->groups = g;
    pthread_mutex_unlock(&t->gmu);
    return 0;
}

int bs__groups_load(bs__topic_t *t, bs_err_t *err)
{
    DIR *d = opendir(t->dir);
    if (!d)
        return bs_err_set(err, BS_EIO, "cannot list %s: %s", t->dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n > 10 && strcmp(e->d_name + n - 10, ".group.tmp") == 0) {
            char p[1200];
            snprintf(p, sizeof p, "%s/%s", t->dir, e->d_name);
            unlink(p);
            continue;
        }
        if (n <= 6 || n > 63 + 6 || strcmp(e->d_name + n - 6, ".group") != 0)
            continue;
        char name[64];
        memcpy(name, e->d_name, n - 6);
        name[n - 6] = '\0';
        if (bs__log_valid_name(name))
            rc = group_load(t, name, err);
    }
    closedir(d);
    return rc;
}

void bs__groups_drop(bs__topic_t *t)
{
    pthread_mutex_lock(&t->gmu);
    for (bs__group_t *g = t->groups; g; g = g->lnext) {
        pthread_mutex_lock(&g->mu);
        g->deleted = 1;
        pthread_mutex_unlock(&g->mu);
        group_changed(g);
    }
    pthread_mutex_unlock(&t->gmu);
}

void bs__groups_free(bs__topic_t *t)
{
    for (bs__group_t *g = t->groups, *n; g; g = n) {
        n = g->lnext;
        group_unref(g);
    }
    t->groups = NULL;
}

/* The groups of t, each with a reference; *n of them (the caller unrefs and frees). */
static bs__group_t **groups_snapshot(bs__topic_t *t, int *n)
{
    pthread_mutex_lock(&t->gmu);
    int c = 0;
    for (bs__group_t *g = t->groups; g; g = g->lnext)
        c++;
    bs__group_t **v = malloc((size_t)(c ? c : 1) * sizeof *v);
    int k = 0;
    for (bs__group_t *g = t->groups; v && g; g = g->lnext) {
        atomic_fetch_add(&g->refs, 1);
        v[k++] = g;
    }
    pthread_mutex_unlock(&t->gmu);
    *n = k;
    return v;
}

static void groups_snapshot_free(bs__group_t **v, int n)
{
    for (int i = 0; i < n; i++)
        group_unref(v[i]);
    free(v);
}

void bs__groups_maintain(bs__topic_t *t)
{
    int n;
    bs__group_t **v = groups_snapshot(t, &n);
    for (int i = 0; v && i < n; i++) {
        bs__group_t *g = v[i];
        pthread_mutex_lock(&g->mu);
        int fd = -1, compact = 0;
        if (!g->deleted && g->jdirty && g->fd >= 0) {
            fd = dup(g->fd);
            g->jdirty = 0;
        }
        uint64_t snap = 64 + 12 * (uint64_t)g->ack_pending;
        compact = !g->deleted && g->jbytes > JOURNAL_COMPACT_MIN && g->jbytes > 4 * snap;
        pthread_mutex_unlock(&g->mu);
        if (fd >= 0) {
            fdatasync(fd);
            close(fd);
        }
        if (compact)
            jcompact(g);
    }
    if (v)
        groups_snapshot_free(v, n);
}

void bs__groups_metrics(bs__topic_t *t, bs_buf_t *b, int part)
{
    static const char *const fam[BS__GROUP_FAMILIES][3] = {
        {"basalt_consumer_pending", "gauge", "Records not delivered to the group yet."},
        {"basalt_consumer_ack_pending", "gauge", "Deliveries not acked yet."},
        {"basalt_consumer_stalled", "gauge", "1 while ack_pending has reached max_ack_pending."},
        {"basalt_consumer_redelivered_total", "counter", "Redeliveries since the log opened."},
        {"basalt_consumer_dead_lettered_total", "counter",
         "Records past max_deliver, dead-lettered or dropped."},
        {"basalt_consumer_stalls_total", "counter",
         "Fetches that delivered less because of max_ack_pending."},
    };
    if (!t) {
        bs_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", fam[part][0], fam[part][2], fam[part][0],
                      fam[part][1]);
        return;
    }
    pthread_mutex_lock(&t->mu);
    int64_t tnext = t->next_offset;
    pthread_mutex_unlock(&t->mu);
    int n;
    bs__group_t **v = groups_snapshot(t, &n);
    for (int i = 0; v && i < n; i++) {
        bs__group_t *g = v[i];
        pthread_mutex_lock(&g->mu);
        bs_log_consumer_config_t c = cfg_norm(&g->cfg);
        long long val = 0;
        switch (part) {
        case 0:
            val = tnext > g->next ? tnext - g->next : 0;
            break;
        case 1:
            val = g->ack_pending;
            break;
        case 2:
            val = c.max_ack_pending > 0 && g->ack_pending >= c.max_ack_pending;
            break;
        case 3:
            val = (long long)g->redelivered;
            break;
        case 4:
            val = (long long)g->dead_lettered;
            break;
        default:
            val = (long long)g->stalls;
            break;
        }
        pthread_mutex_unlock(&g->mu);
        bs_buf_printf(b, "%s{tenant=\"%s\",topic=\"%s\",group=\"%s\"} %lld\n", fam[part][0],
                      t->tenant, t->name, g->name, val);
    }
    if (v)
        groups_snapshot_free(v, n);
}

/* The group, with references on it and its topic; NULL with err (BS_ENOTFOUND). */
static bs__group_t *group_get(bs__seglog_t *l, const char *tenant, const char *topic,
                              const char *group, bs_err_t *err)
{
    bs__topic_t *t = bs__topic_get(l, tenant, topic);
    if (!t) {
        bs_err_set(err, BS_ENOTFOUND, "topic '%s' not found", topic ? topic : "");
        return NULL;
    }
    bs__group_t *g = NULL;
    pthread_mutex_lock(&t->gmu);
    for (g = t->groups; g; g = g->lnext)
        if (group && strcmp(g->name, group) == 0) {
            atomic_fetch_add(&g->refs, 1);
            break;
        }
    pthread_mutex_unlock(&t->gmu);
    if (!g) {
        bs_err_set(err, BS_ENOTFOUND, "consumer group '%s' of topic '%s' not found",
                   group ? group : "", topic);
        bs__topic_unref(t);
    }
    return g;
}

static void group_put(bs__group_t *g)
{
    bs__topic_t *t = g->t;
    group_unref(g);
    bs__topic_unref(t);
}

int bs__seglog_consumer_ensure(bs_log_t *lb, const char *tenant, const char *topic,
                               const char *group, const bs_log_consumer_config_t *c, bs_err_t *err)
{
    bs__seglog_t *l = (bs__seglog_t *)lb;
    bs_log_consumer_config_t cfg = {0};
    if (c)
        cfg = *c;
    if (!bs__log_valid_name(group))
        return bs_err_setf(err, BS_EINVAL, "group",
                           "group name '%.64s' must match "
                           "[a-z0-9][a-z0-9_-]{0,62}",
                           group ? group : "");
    bs__topic_t *t = bs__topic_get(l, tenant, topic);
    if (!t)
        return bs_err_set(err, BS_ENOTFOUND, "topic '%s' not found", topic ? topic : "");
    int rc = cfg_check(topic, &cfg, err);
    if (rc != 0) {
        bs__topic_unref(t);
        return rc;
    }
    pthread_mutex_lock(&t->gmu);
    bs__group_t *g = t->groups;
    while (g && strcmp(g->name, group) != 0)
        g = g->lnext;
    if (g) {
        pthread_mutex_lock(&g->mu);
        const char *dl = cfg.dead_letter ? cfg.dead_letter : "";
        if (g->cfg.ack_wait_ms != cfg.ack_wait_ms || g->cfg.max_deliver != cfg.max_deliver ||
            g->cfg.max_ack_pending != cfg.max_ack_pending ||
            (g->cfg.deliver_new != 0) != (cfg.deliver_new != 0) || strcmp(g->dl, dl) != 0) {
            cfg_store(g, &cfg);
            bs_buf_t b;
            bs_buf_init(&b);
            j_config(&b, g);
            jflush(g, &b);
            bs_buf_free(&b);
            if (g->fd >= 0 && fdatasync(g->fd) != 0)
                rc = bs_err_set(err, BS_EIO, "cannot sync %s: %s", g->path, strerror(errno));
        }
        pthread_mutex_unlock(&g->mu);
    } else if (!(g = group_new(t, group))) {
        rc = bs_err_set(err, BS_ENOMEM, "out of memory");
    } else {
        cfg_store(g, &cfg);
        pthread_mutex_lock(&t->mu);
        g->next = cfg.deliver_new ? t->next_offset : t->segs[0]->base;
        pthread_mutex_unlock(&t->mu);
        rc = jrewrite(g, err);
        if (rc == 0) {
            g->lnext = t->groups;
            t->groups = g;
        } else {
            group_unref(g);
        }
    }
    pthread_mutex_unlock(&t->gmu);
    bs__topic_unref(t);
    return rc;
}

int bs__seglog_consumer_delete(bs_log_t *lb, const char *tenant, const char *topic,
                               const char *group, bs_err_t *err)
{
    bs__topic_t *t = bs__topic_get((bs__seglog_t *)lb, tenant, topic);
    if (!t || !group) {
        bs__topic_unref(t);
        return 0;
    }
    pthread_mutex_lock(&t->gmu);
    bs__group_t **p = &t->groups;
    while (*p && strcmp((*p)->name, group) != 0)
        p = &(*p)->lnext;
    bs__group_t *g = *p;
    int rc = 0;
    if (g) {
        *p = g->lnext;
        pthread_mutex_lock(&g->mu);
        g->deleted = 1;
        pthread_mutex_unlock(&g->mu);
        if (unlink(g->path) != 0 && errno != ENOENT)
            rc = bs_err_set(err, BS_EIO, "cannot remove %s: %s", g->path, strerror(errno));
        bs__fsync_dir(t->dir);
    }
    pthread_mutex_unlock(&t->gmu);
    if (g) {
        group_changed(g);
        group_unref(g);
    }
    bs__topic_unref(t);
    return rc;
}

/* ---- acks ------------------------------------------------------------------------------- */

/* Parses "<offset>.<delivery>". */
static int parse_delivery_id(const char *s, int64_t *offset, int32_t *delivery)
{
    if (!s)
        return -1;
    int64_t o = 0, d = 0;
    const char *p = s;
    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (o > (INT64_MAX - 9) / 10)
            return -1;
        o = o * 10 + (*p - '0');
    }
    if (*p++ != '.' || *p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (d > 100000000)
            return -1;
        d = d * 10 + (*p - '0');
    }
    if (*p || d < 1)
        return -1;
    *offset = o;
    *delivery = (int32_t)d;
    return 0;
}

enum { OP_ACK, OP_NACK, OP_PROGRESS };

static int delivery_op(bs__seglog_t *l, const char *tenant, const char *topic, const char *group,
                       const char *delivery_id, int op, int64_t delay_ms, bs_err_t *err)
{
    bs__group_t *g = group_get(l, tenant, topic, group, err);
    if (!g)
        return BS_ENOTFOUND;
    int64_t off;
    int32_t d;
    int rc = 0, wake = 0;
    pthread_mutex_lock(&g->mu);
    if (g->deleted) {
        rc = bs_err_set(err, BS_ENOTFOUND, "consumer group '%s' not found", group);
    } else if (parse_delivery_id(delivery_id, &off, &d) != 0 || off >= g->next) {
        rc =
            bs_err_setf(err, BS_EINVAL, "delivery_id", "'%.64s' is not a delivery id of group '%s'",
                        delivery_id ? delivery_id : "", group);
    } else {
        int i = pend_find(g, off);
        if (i >= 0 && !g->p[i].acked) {
            pend_t *e = &g->p[i];
            if (d > e->deliveries) {
                rc = bs_err_setf(err, BS_EINVAL, "delivery_id",
                                 "'%.64s' is not a delivery id of group '%s'", delivery_id, group);
            } else if (op == OP_ACK && !e->dlq) {
                pend_ack(g, i);
                g->acked++;
                wake = 1;
            } else if (op != OP_ACK && d == e->deliveries && !e->dlq) {
                int64_t due =
                    mono_ms() + (op == OP_NACK ? delay_ms : cfg_norm(&g->cfg).ack_wait_ms);
                e->due_ms = due;
                if (due < g->min_due)
                    g->min_due = due;
                wake = op == OP_NACK;
            }
        }
    }
    pthread_mutex_unlock(&g->mu);
    if (wake)
        group_changed(g);
    group_put(g);
    return rc;
}

int bs__seglog_ack(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                   const char *delivery_id, bs_err_t *err)
{
    return delivery_op((bs__seglog_t *)l, tenant, topic, group, delivery_id, OP_ACK, 0, err);
}

int bs__seglog_nack(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                    const char *delivery_id, int64_t delay_ms, bs_err_t *err)
{
    return delivery_op((bs__seglog_t *)l, tenant, topic, group, delivery_id, OP_NACK, delay_ms,
                       err);
}

int bs__seglog_in_progress(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                           const char *delivery_id, bs_err_t *err)
{
    return delivery_op((bs__seglog_t *)l, tenant, topic, group, delivery_id, OP_PROGRESS, 0, err);
}

int bs__seglog_consumer_stats(bs_log_t *lb, const char *tenant, const char *topic,
                              const char *group, bs_log_consumer_stats_t *out, bs_err_t *err)
{
    bs__group_t *g = group_get((bs__seglog_t *)lb, tenant, topic, group, err);
    if (!g)
        return BS_ENOTFOUND;
    bs__topic_t *t = g->t;
    pthread_mutex_lock(&g->mu);
    pthread_mutex_lock(&t->mu);
    int64_t tnext = t->next_offset;
    pthread_mutex_unlock(&t->mu);
    bs_log_consumer_config_t c = cfg_norm(&g->cfg);
    memset(out, 0, sizeof *out);
    out->ack_floor = group_floor(g);
    out->next_offset = g->next;
    out->pending = tnext > g->next ? tnext - g->next : 0;
    out->ack_pending = g->ack_pending;
    out->max_ack_pending = c.max_ack_pending;
    out->stalled = c.max_ack_pending > 0 && g->ack_pending >= c.max_ack_pending;
    out->delivered = g->delivered;
    out->redelivered = g->redelivered;
    out->acked = g->acked;
    out->dead_lettered = g->dead_lettered;
    pthread_mutex_unlock(&g->mu);
    group_put(g);
    return 0;
}

int bs__seglog_consumers(bs_log_t *lb, const char *tenant, const char *topic,
                         int (*cb)(const char *group, void *ud), void *ud, bs_err_t *err)
{
    bs__topic_t *t = bs__topic_get((bs__seglog_t *)lb, tenant, topic);
    if (!t)
        return bs_err_set(err, BS_ENOTFOUND, "topic '%s' not found", topic ? topic : "");
    int n;
    bs__group_t **v = groups_snapshot(t, &n);
    for (int i = 0; v && i < n; i++)
        if (cb(v[i]->name, ud))
            break;
    if (v)
        groups_snapshot_free(v, n);
    bs__topic_unref(t);
    return 0;
}

/* ---- dead letters ----------------------------------------------------------------------- */

typedef struct {
    bs__group_t *g;
    int64_t offset;
} dlq_ctx_t;

/* The record at offset is done for g (dead-lettered or gone). */
static void group_term(bs__group_t *g, int64_t offset, int counted)
{
    pthread_mutex_lock(&g->mu);
    int i = pend_find(g, offset);
    if (i >= 0 && !g->p[i].acked) {
        pend_ack(g, i);
        if (counted)
            g->dead_lettered++;
    }
    pthread_mutex_unlock(&g->mu);
    group_changed(g);
}

static void group_dlq_retry(bs__group_t *g, int64_t offset)
{
    pthread_mutex_lock(&g->mu);
    int i = pend_find(g, offset);
    if (i >= 0 && !g->p[i].acked) {
        g->p[i].dlq = 0;
        g->p[i].due_ms = mono_ms() + DLQ_RETRY_MS;
        if (g->p[i].due_ms < g->min_due)
            g->min_due = g->p[i].due_ms;
    }
    pthread_mutex_unlock(&g->mu);
    /* A parked fetch's due time was taken before this one existed. */
    group_changed(g);
}

static void dlq_done(void *ud, int code, const bs_log_append_result_t *res, int n,
                     const bs_err_t *err)
{
    dlq_ctx_t *c = ud;
    if (code == 0 && n == 1 && res[0].code == 0) {
        group_term(c->g, c->offset, 1);
    } else if (code == 0 && n == 1) {
        /* Refused for good (the dead letter topic's max_record_bytes): retrying cannot help. */
        BS_LOG(BS_LOG_ERROR, "log",
               "group %s/%s/%s: the dead letter topic refused offset %lld (%s); dropped",
               c->g->t->tenant, c->g->t->name, c->g->name, (long long)c->offset,
               bs_err_name(res[0].code));
        group_term(c->g, c->offset, 1);
    } else {
        BS_LOG(BS_LOG_WARN, "log", "group %s/%s/%s: dead-lettering offset %lld failed: %s",
               c->g->t->tenant, c->g->t->name, c->g->name, (long long)c->offset,
               err ? err->msg : "record refused");
        group_dlq_retry(c->g, c->offset);
    }
    group_put(c->g);
    free(c);
}

typedef struct {
    int64_t want;
    int found;
    bs_buf_t *b;
    char id[BS__ID_MAX + 1];
} dlq_read_t;

static int dlq_read_cb(const bs_log_record_t *r, void *ud)
{
    dlq_read_t *d = ud;
    if (r->offset != d->want)
        return 1;
    d->found = 1;
    snprintf(d->id, sizeof d->id, "%s", r->id);
    cJSON *j = cJSON_ParseWithLength(r->data, r->len);
    bs_jw_key(d->b, "event");
    if (j)
        bs_jw_raw(d->b, r->data, r->len);
    else
        bs_jw_strn(d->b, r->data, r->len);
    cJSON_Delete(j);
    return 1;
}

static void dead_letter(bs__seglog_t *l, bs__group_t *g, int64_t offset, int deliveries)
{
    bs__topic_t *t = g->t;
    char dl[64];
    pthread_mutex_lock(&g->mu);
    snprintf(dl, sizeof dl, "%s", g->dl);
    pthread_mutex_unlock(&g->mu);
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "topic");
    bs_jw_str(&b, t->name);
    bs_jw_key(&b, "offset");
    bs_jw_int(&b, offset);
    bs_jw_key(&b, "deliveries");
    bs_jw_int(&b, deliveries);
    bs_jw_key(&b, "group");
    bs_jw_str(&b, g->name);
    dlq_read_t rd = {.want = offset, .b = &b};
    bs_err_t err;
    int rc = bs__topic_read(t, offset, 1, 0, dlq_read_cb, &rd, NULL, &err);
    bs_jw_obj_end(&b);
    if (rc >= 0 && !rd.found) { /* gone (retention): nothing to dead-letter */
        group_term(g, offset, 0);
    } else if (rc < 0 || b.oom) {
        BS_LOG(BS_LOG_WARN, "log", "group %s/%s/%s: cannot read offset %lld to dead-letter it: %s",
               t->tenant, t->name, g->name, (long long)offset, rc < 0 ? err.msg : "out of memory");
        group_dlq_retry(g, offset);
    } else if (!dl[0]) {
        group_term(g, offset, 1);
    } else {
        pthread_mutex_lock(&t->mu);
        bs_log_topic_config_t tc = t->cfg;
        pthread_mutex_unlock(&t->mu);
        if (tc.max_record_bytes && (int64_t)b.len > tc.max_record_bytes)
            tc.max_record_bytes = BS__RECORD_MAX;
        bs__topic_t *dt = bs__topic_ensure_like(l, t->tenant, dl, &tc, &err);
        dlq_ctx_t *c = dt ? malloc(sizeof *c) : NULL;
        char key[200];
        snprintf(key, sizeof key, "dlq/%s/%s/%lld", t->name, g->name, (long long)offset);
        bs_log_record_in_t in = {rd.id, key, b.data, b.len};
        if (c) {
            atomic_fetch_add(&g->refs, 1);
            atomic_fetch_add(&t->refs, 1);
            c->g = g;
            c->offset = offset;
        }
        if (!c ||
            bs__seglog_append_async(&l->base, t->tenant, dl, &in, 1, dlq_done, c, &err) != 0) {
            BS_LOG(BS_LOG_WARN, "log", "group %s/%s/%s: cannot dead-letter offset %lld to '%s': %s",
                   t->tenant, t->name, g->name, (long long)offset, dl,
                   dt ? err.msg : "cannot create the topic");
            if (c)
                group_put(g);
            free(c);
            group_dlq_retry(g, offset);
        }
        bs__topic_unref(dt);
    }
    bs_buf_free(&b);
}

/* ---- fetches ---------------------------------------------------------------------------- */

typedef struct {
    int64_t offset;
    int32_t delivery;
    uint8_t redelivery, keep;
    size_t at; /* the record in the fetch buffer, or SIZE_MAX */
} cand_t;

/* A record as kept in the fetch buffer, followed by id, key and data. */
typedef struct {
    int64_t offset, time_ms;
    size_t id_len, key_len, len;
} frec_t;

typedef struct {
    bs_buf_t *b;
    int64_t want; /* >= 0: only that offset */
    cand_t *c;    /* range reads: where records go */
    int n, cap;
    size_t budget;
    int found;
} fread_t;

static int fetch_read_cb(const bs_log_record_t *r, void *ud)
{
    fread_t *f = ud;
    if (f->want >= 0 && r->offset != f->want)
        return 1;
    size_t il = strlen(r->id), kl = strlen(r->dedup_key);
    frec_t h = {r->offset, r->time_ms, il, kl, r->len};
    size_t at = f->b->len;
    bs_buf_append(f->b, &h, sizeof h);
    bs_buf_append(f->b, r->id, il + 1);
    bs_buf_append(f->b, r->dedup_key, kl + 1);
    bs_buf_append(f->b, r->data, r->len);
    while (f->b->len % 8)
        bs_buf_putc(f->b, 0);
    f->found = 1;
    if (f->want >= 0) {
        f->c[0].at = at;
        return 1;
    }
    f->c[f->n] = (cand_t){r->offset, 1, 0, 1, at};
    f->n++;
    return f->n >= f->cap || f->b->len >= f->budget;
}

static void fetch_complete(bs__fetch_t *f, int code, const bs_log_delivery_t *d, int n,
                           const bs_err_t *err)
{
    bs__group_t *g = f->g;
    f->cb(f->ud, code, d, n, err);
    if (f->waiting) {
        atomic_fetch_sub(&g->nwait, 1);
        atomic_fetch_sub(&g->t->nwait, 1);
    }
    group_put(g);
    free(f);
}

/* One try at a fetch. Returns 1 when it completed (f freed), 0 when it should wait. */
static int fetch_attempt(bs__seglog_t *l, bs__fetch_t *f)
{
    bs__group_t *g = f->g;
    bs__topic_t *t = g->t;
    uint64_t now_ns = bs_time_mono_ns();
    int final = now_ns >= f->deadline_ns;
    if (!final && !f->waiting) {
        /* Counted before the topic's end is read (see bs__consumer_kick's callers). */
        f->waiting = 1;
        atomic_fetch_add(&g->nwait, 1);
        atomic_fetch_add(&t->nwait, 1);
    }
    f->seen = atomic_load(&t->published) + atomic_load(&g->gen);
    int64_t now = (int64_t)(now_ns / 1000000u);
    cand_t *c = malloc((size_t)f->max * sizeof *c);
    struct {
        int64_t offset;
        int deliveries;
    } *dlq = NULL;
    int nc = 0, ndlq = 0, cdlq = 0;
    bs_err_t err;
    if (!c) {
        bs_err_set(&err, BS_ENOMEM, "out of memory");
        fetch_complete(f, BS_ENOMEM, NULL, 0, &err);
        return 1;
    }

    /* 1. Choose, under the lock. */
    pthread_mutex_lock(&g->mu);
    if (g->deleted || atomic_load(&t->dropped)) {
        pthread_mutex_unlock(&g->mu);
        free(c);
        bs_err_set(&err, BS_ENOTFOUND, "consumer group '%s' of topic '%s' not found", g->name,
                   t->name);
        fetch_complete(f, BS_ENOTFOUND, NULL, 0, &err);
        return 1;
    }
    bs_log_consumer_config_t cfg = cfg_norm(&g->cfg);
    pthread_mutex_lock(&t->mu);
    int64_t tfirst = t->segs[0]->base, tnext = t->next_offset;
    pthread_mutex_unlock(&t->mu);
    char jst[256];
    bs_buf_t jb = BS_BUF_ON(jst);
    if (g->next < tfirst) {
        j_next(&jb, tfirst, tfirst);
        g->next = tfirst;
    }
    if (g->min_due <= now) {
        int64_t min_due = INT64_MAX;
        for (int i = g->p0; i < g->np; i++) {
            pend_t *e = &g->p[i];
            if (e->acked || e->dlq)
                continue;
            if (e->due_ms > now || nc >= f->max) {
                if (e->due_ms < min_due)
                    min_due = e->due_ms;
                continue;
            }
            if (cfg.max_deliver > 0 && e->deliveries >= cfg.max_deliver) {
                if (ndlq == cdlq) {
                    int nn = cdlq ? cdlq * 2 : 8;
                    void *v = realloc(dlq, (size_t)nn * sizeof *dlq);
                    if (!v) {
                        if (e->due_ms < min_due)
                            min_due = e->due_ms;
                        continue;
                    }
                    dlq = v;
                    cdlq = nn;
                }
                e->dlq = 1;
                dlq[ndlq].offset = e->offset;
                dlq[ndlq++].deliveries = e->deliveries;
                continue;
            }
            c[nc++] = (cand_t){e->offset, e->deliveries + 1, 1, 1, SIZE_MAX};
        }
        g->min_due = min_due;
    }
    int64_t avail = tnext - g->next,
            room = cfg.max_ack_pending < 0 ? INT64_MAX : cfg.max_ack_pending - g->ack_pending;
    int64_t k = f->max - nc;
    if (k > room)
        k = room;
    if (k > avail)
        k = avail;
    if (avail > 0 && room <= (int64_t)(f->max - nc) && room < avail) {
        if (!g->stalled)
            g->stalls++;
        g->stalled = 1;
    } else {
        g->stalled = 0;
    }
    int64_t new_from = g->next;
    jflush(g, &jb);
    pthread_mutex_unlock(&g->mu);
    bs_buf_free(&jb);

    /* 2. Read, with no lock held. */
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = 0;
    for (int i = 0; i < nc && rc >= 0; i++) {
        fread_t fr = {.b = &b, .want = c[i].offset, .c = &c[i], .budget = FETCH_BYTES};
        if (b.len >= FETCH_BYTES) {
            c[i].keep = 0;
            continue;
        }
        rc = bs__topic_read(t, c[i].offset, 1, 0, fetch_read_cb, &fr, NULL, &err);
        if (rc >= 0 && !fr.found)
            c[i].at = SIZE_MAX; /* gone: terminated below */
    }
    int nredo = nc;
    if (rc >= 0 && k > 0 && b.len < FETCH_BYTES) {
        fread_t fr = {.b = &b, .want = -1, .c = c + nc, .cap = (int)k, .budget = FETCH_BYTES};
        rc = bs__topic_read(t, new_from, (int)k, 0, fetch_read_cb, &fr, NULL, &err);
        if (rc >= 0)
            nc += fr.n;
    }
    if (rc < 0 || b.oom) {
        /* Nothing was committed: give the redelivery candidates back their due time. */
        pthread_mutex_lock(&g->mu);
        g->min_due = now;
        for (int i = 0; i < ndlq; i++) {
            int j = pend_find(g, dlq[i].offset);
            if (j >= 0)
                g->p[j].dlq = 0;
        }
        pthread_mutex_unlock(&g->mu);
        if (rc >= 0)
            bs_err_set(&err, BS_ENOMEM, "out of memory");
        free(c);
        free(dlq);
        bs_buf_free(&b);
        fetch_complete(f, rc < 0 ? rc : BS_ENOMEM, NULL, 0, &err);
        return 1;
    }

    /* 3. Commit, under the lock. */
    int nd = 0;
    int64_t due = now + cfg.ack_wait_ms, next_due;
    char jst2[512];
    bs_buf_t jb2 = BS_BUF_ON(jst2);
    pthread_mutex_lock(&g->mu);
    for (int i = 0; i < nredo; i++) {
        int j = pend_find(g, c[i].offset);
        pend_t *e = j >= 0 ? &g->p[j] : NULL;
        /* Not redelivered (past the fetch's byte budget, or changed meanwhile): it stays due,
         * so min_due, which step 1 computed without it, must count it again. */
        if (!c[i].keep || !e || e->acked || e->dlq || e->due_ms > now ||
            e->deliveries + 1 != c[i].delivery) {
            c[i].keep = 0;
            if (e && !e->acked && e->due_ms < g->min_due)
                g->min_due = e->due_ms;
            continue;
        }
        if (c[i].at == SIZE_MAX) {
            j_ack(&jb2, e->offset);
            pend_done(g, j);
            c[i].keep = 0;
            continue;
        }
        e->deliveries = c[i].delivery;
        e->due_ms = due;
        j_redeliver(&jb2, e->offset, e->deliveries);
        g->redelivered++;
        g->delivered++;
        nd++;
    }
    if (nc > nredo && !g->deleted && g->next == new_from) {
        int pushed = nredo;
        while (pushed < nc && pend_push(g, c[pushed].offset, 1, due) == 0)
            pushed++;
        /* Out of memory part way: deliver what is recorded, the rest stays undelivered. */
        for (int i = pushed; i < nc; i++)
            c[i].keep = 0;
        if (pushed > nredo) {
            j_next(&jb2, c[nredo].offset, c[pushed - 1].offset + 1);
            g->next = c[pushed - 1].offset + 1;
            g->delivered += (uint64_t)(pushed - nredo);
            nd += pushed - nredo;
        }
    } else {
        for (int i = nredo; i < nc; i++)
            c[i].keep = 0;
    }
    if (nd && due < g->min_due)
        g->min_due = due;
    next_due = g->min_due;
    jflush(g, &jb2);
    pthread_mutex_unlock(&g->mu);
    bs_buf_free(&jb2);

    /* 4. Dead letters. */
    for (int i = 0; i < ndlq; i++)
        dead_letter(l, g, dlq[i].offset, dlq[i].deliveries);
    free(dlq);

    if (nd == 0 && !final) {
        f->due_ms = next_due;
        free(c);
        bs_buf_free(&b);
        return 0;
    }

    /* 5. Deliver. */
    bs_log_delivery_t *d = nd ? malloc((size_t)nd * sizeof *d) : NULL;
    char(*ids)[32] = nd ? malloc((size_t)nd * sizeof *ids) : NULL;
    if (nd && (!d || !ids)) {
        free(d);
        free(ids);
        free(c);
        bs_buf_free(&b);
        bs_err_set(&err, BS_ENOMEM, "out of memory");
        fetch_complete(f, BS_ENOMEM, NULL, 0, &err);
        return 1;
    }
    int k3 = 0;
    for (int i = 0; i < nc; i++) {
        if (!c[i].keep)
            continue;
        const frec_t *h = (const frec_t *)(b.data + c[i].at);
        const char *id = (const char *)(h + 1), *key = id + h->id_len + 1;
        snprintf(ids[k3], sizeof ids[k3], "%lld.%d", (long long)c[i].offset, (int)c[i].delivery);
        d[k3].rec = (bs_log_record_t){h->offset, h->time_ms, id, key, key + h->key_len + 1, h->len};
        d[k3].delivery = c[i].delivery;
        d[k3].delivery_id = ids[k3];
        k3++;
    }
    fetch_complete(f, 0, d, nd, NULL);
    free(d);
    free(ids);
    free(c);
    bs_buf_free(&b);
    return 1;
}

void bs__consumer_kick(bs__seglog_t *l)
{
    pthread_mutex_lock(&l->cmu);
    l->ckick = 1;
    pthread_cond_signal(&l->ccv);
    pthread_mutex_unlock(&l->cmu);
}

int bs__seglog_fetch_async(bs_log_t *lb, const char *tenant, const char *topic, const char *group,
                           int max, int wait_ms, bs_log_fetch_cb cb, void *ud, bs_err_t *err)
{
    bs__seglog_t *l = (bs__seglog_t *)lb;
    bs__group_t *g = group_get(l, tenant, topic, group, err);
    if (!g)
        return BS_ENOTFOUND;
    bs__fetch_t *f = calloc(1, sizeof *f);
    if (!f) {
        group_put(g);
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    f->g = g;
    f->max = max;
    f->deadline_ns = bs_time_mono_ns() + (uint64_t)wait_ms * 1000000u;
    f->due_ms = INT64_MAX;
    f->cb = cb;
    f->ud = ud;
    pthread_mutex_lock(&l->cmu);
    if (l->cstop || !l->consumer_started) {
        pthread_mutex_unlock(&l->cmu);
        group_put(g);
        free(f);
        return bs_err_set(err, BS_EUNAVAIL, "the log is closing");
    }
    if (l->cq_tail)
        l->cq_tail->next = f;
    else
        l->cq_head = f;
    l->cq_tail = f;
    pthread_cond_signal(&l->ccv);
    pthread_mutex_unlock(&l->cmu);
    return 0;
}

static void *consumer_main(void *arg)
{
    bs__seglog_t *l = arg;
    bs__fetch_t *parked = NULL;
    pthread_mutex_lock(&l->cmu);
    while (!l->cstop) {
        bs__fetch_t *fresh = l->cq_head;
        l->cq_head = l->cq_tail = NULL;
        int kick = l->ckick;
        l->ckick = 0;
        pthread_mutex_unlock(&l->cmu);
        uint64_t now = bs_time_mono_ns();
        int64_t now_ms = (int64_t)(now / 1000000u);
        bs__fetch_t *keep = NULL;
        for (bs__fetch_t *f = fresh, *n; f; f = n) {
            n = f->next;
            if (!fetch_attempt(l, f)) {
                f->next = keep;
                keep = f;
            }
        }
        for (bs__fetch_t *f = parked, *n; f; f = n) {
            n = f->next;
            int changed =
                kick && atomic_load(&f->g->t->published) + atomic_load(&f->g->gen) != f->seen;
            if ((changed || now >= f->deadline_ns || now_ms >= f->due_ms) && fetch_attempt(l, f))
                continue;
            f->next = keep;
            keep = f;
        }
        parked = keep;
        uint64_t wake = UINT64_MAX;
        for (bs__fetch_t *f = parked; f; f = f->next) {
            if (f->deadline_ns < wake)
                wake = f->deadline_ns;
            if (f->due_ms != INT64_MAX && (uint64_t)f->due_ms * 1000000u < wake)
                wake = (uint64_t)f->due_ms * 1000000u;
        }
        pthread_mutex_lock(&l->cmu);
        if (l->cq_head || l->ckick || l->cstop)
            continue;
        if (wake == UINT64_MAX) {
            pthread_cond_wait(&l->ccv, &l->cmu);
        } else {
            struct timespec ts = {(time_t)(wake / 1000000000u), (long)(wake % 1000000000u)};
            pthread_cond_timedwait(&l->ccv, &l->cmu, &ts);
        }
    }
    bs__fetch_t *fresh = l->cq_head;
    l->cq_head = l->cq_tail = NULL;
    pthread_mutex_unlock(&l->cmu);
    bs_err_t err;
    bs_err_set(&err, BS_EUNAVAIL, "the log is closing");
    for (int pass = 0; pass < 2; pass++)
        for (bs__fetch_t *f = pass ? parked : fresh, *n; f; f = n) {
            n = f->next;
            fetch_complete(f, BS_EUNAVAIL, NULL, 0, &err);
        }
    return NULL;
}

int bs__consumer_start(bs__seglog_t *l, bs_err_t *err)
{
    if (pthread_create(&l->consumer, NULL, consumer_main, l) != 0)
        return bs_err_set(err, BS_EINTERNAL, "cannot start the log's fetch thread");
    pthread_mutex_lock(&l->cmu);
    l->consumer_started = 1;
    pthread_mutex_unlock(&l->cmu);
    return 0;
}

void bs__consumer_stop(bs__seglog_t *l)
{
    pthread_mutex_lock(&l->cmu);
    int started = l->consumer_started;
    l->cstop = 1;
    pthread_cond_signal(&l->ccv);
    pthread_mutex_unlock(&l->cmu);
    if (started)
        pthread_join(l->consumer, NULL);
    l->consumer_started = 0;
}
