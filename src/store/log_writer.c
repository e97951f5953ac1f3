/*
 * The segments backend's writer (log_seg_int.h): the append queue, the one
 * writer thread that group-commits, the dedup window and retention.
 *
 * An append is framed on the caller's thread (one allocation holds the
 * request, its results and every record's frame, offset and time left blank)
 * and queued; past BS__LOG_QUEUE_MAX requests or BS__LOG_QUEUE_BYTES bytes it
 * is refused with BS_EOVERLOAD. The writer takes everything queued at once (a
 * round), groups it by topic and, per topic: answers duplicates from the dedup
 * window (duplicates inside the round too), numbers and stamps the others
 * (time = max(previous, wall clock)), checksums them in place and writes the
 * round with pwritev from the requests' own buffers (no copy, no per-record
 * allocation), then one fdatasync covers the whole round. Only then are the
 * records published (readers, watches, fetches) and the callbacks run. With
 * sync_interval_ms > 0 the callbacks run once written and the fdatasync
 * follows on a timer. While the writer syncs, new appends queue up: the next
 * round takes them all, which is what makes concurrent appends share fsyncs.
 *
 * Segments roll between requests once the active one is past segment_bytes:
 * what was written is fsynced first, so every segment but the last is whole.
 * A failed write or sync truncates the segment back to where the failing
 * chunk started and fails that chunk's appends (their dedup keys are taken
 * back); the rest of the round fails too.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "base/id.h"
#include "base/log.h"
#include "base/time.h"
#include "store/log_seg_int.h"

/* ---- the dedup window ------------------------------------------------------------------- */

struct bs__dd_entry {
    uint64_t hash;
    int64_t offset, time_ms;
    uint16_t key_len;
    uint8_t id_len;
    uint8_t bytes[]; /* key, then id */
};

struct bs__dd_chunk {
    struct bs__dd_chunk *next;
    size_t used, cap;
    _Alignas(8) uint8_t data[];
};

#define DD_CHUNK ((size_t)64 << 10)
#define DD_SPARES 8
#define DD_MIGRATE 64
static bs__dd_entry_t dd_tomb;
#define BS__DD_TOMB (&dd_tomb)

static size_t dd_size(size_t key_len, size_t id_len)
{
    return (sizeof(bs__dd_entry_t) + key_len + id_len + 7) & ~(size_t)7;
}

static size_t dd_entry_size(const bs__dd_entry_t *e)
{
    return dd_size(e->key_len, e->id_len);
}

/* 64-bit words through a multiply-xorshift mix, then murmur3's finaliser. */
static uint64_t dd_hash(const uint8_t *p, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xC2B2AE3D27D4EB4Full);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 31;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++)
        w |= (uint64_t)p[i] << (8 * i);
    h = (h ^ w) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 33;
    return h;
}

/* Slot arrays: big ones are mapped on their own, aligned for transparent huge pages (a
 * lookup is a random access into them; fewer TLB misses). */
#define DD_HUGE ((size_t)2 << 20)

static bs__dd_slot_t *dd_slots_new(size_t cap)
{
    size_t n = cap * sizeof(bs__dd_slot_t);
    if (n < DD_HUGE)
        return calloc(cap, sizeof(bs__dd_slot_t));
    uint8_t *p =
        mmap(NULL, n + DD_HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    uint8_t *a = (uint8_t *)(((uintptr_t)p + DD_HUGE - 1) & ~(uintptr_t)(DD_HUGE - 1));
    if (a > p)
        munmap(p, (size_t)(a - p));
    munmap(a + n, (size_t)(p + n + DD_HUGE - a - n));
    madvise(a, n, MADV_HUGEPAGE);
    return (bs__dd_slot_t *)a;
}

static void dd_slots_free(bs__dd_slot_t *s, size_t cap)
{
    size_t n = cap * sizeof(bs__dd_slot_t);
    if (!s)
        return;
    if (n < DD_HUGE)
        free(s);
    else
        munmap(s, n);
}

void bs__dedup_init(bs__dedup_t *d)
{
    memset(d, 0, sizeof *d);
}

void bs__dedup_free(bs__dedup_t *d)
{
    for (bs__dd_chunk_t *c = d->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    for (bs__dd_chunk_t *c = d->spare, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    dd_slots_free(d->cur.s, d->cur.cap);
    dd_slots_free(d->old.s, d->old.cap);
    bs__dedup_init(d);
}

static const bs__dd_entry_t *dd_lookup(const bs__dd_table_t *t, uint64_t h, const uint8_t *key,
                                       size_t key_len)
{
    if (!t->s)
        return NULL;
    size_t mask = t->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const bs__dd_slot_t *s = &t->s[i];
        if (!s->e)
            return NULL;
        if (s->hash == h && s->e != BS__DD_TOMB && s->e->key_len == key_len &&
            memcmp(s->e->bytes, key, key_len) == 0)
            return s->e;
    }
}

uint64_t bs__dedup_hash(const uint8_t *key, size_t key_len)
{
    return dd_hash(key, key_len);
}

const bs__dd_entry_t *bs__dedup_find_hashed(const bs__dedup_t *d, uint64_t h, const uint8_t *key,
                                            size_t key_len)
{
    const bs__dd_entry_t *e = dd_lookup(&d->cur, h, key, key_len);
    return e ? e : dd_lookup(&d->old, h, key, key_len);
}

const bs__dd_entry_t *bs__dedup_find(const bs__dedup_t *d, const uint8_t *key, size_t key_len,
                                     uint64_t *hash)
{
    *hash = dd_hash(key, key_len);
    return bs__dedup_find_hashed(d, *hash, key, key_len);
}

void bs__dedup_prefetch(const bs__dedup_t *d, uint64_t h)
{
    if (d->cur.s)
        __builtin_prefetch(&d->cur.s[h & (d->cur.cap - 1)], 1);
    if (d->old.s)
        __builtin_prefetch(&d->old.s[h & (d->old.cap - 1)], 0);
}

static void dd_place(bs__dd_table_t *t, uint64_t h, bs__dd_entry_t *e)
{
    size_t mask = t->cap - 1, i = h & mask;
    while (t->s[i].e)
        i = (i + 1) & mask;
    t->s[i] = (bs__dd_slot_t){h, e};
    t->live++;
}

/* Moves up to n slots of the old table into the current one; frees it when done. */
static void dd_migrate(bs__dedup_t *d, size_t n)
{
    while (d->old.s && n--) {
        if (d->mig == d->old.cap) {
            dd_slots_free(d->old.s, d->old.cap);
            d->old = (bs__dd_table_t){0};
            d->mig = 0;
            return;
        }
        bs__dd_slot_t *s = &d->old.s[d->mig++];
        if (s->e && s->e != BS__DD_TOMB) {
            dd_place(&d->cur, s->hash, s->e);
            s->e = BS__DD_TOMB; /* found in the current table from now on */
            d->old.live--;
        }
    }
}

static int dd_grow(bs__dedup_t *d)
{
    while (d->old.s) /* finish the previous migration first */
        dd_migrate(d, SIZE_MAX);
    size_t cap = d->cur.cap ? d->cur.cap * 2 : 1024;
    bs__dd_slot_t *s = dd_slots_new(cap);
    if (!s)
        return -1;
    d->old = d->cur;
    d->mig = 0;
    d->cur = (bs__dd_table_t){s, cap, 0};
    if (!d->old.s)
        d->old = (bs__dd_table_t){0};
    return 0;
}

/* Removes e: from the current table by backward-shift deletion, or from the old one (being
 * scanned in index order, where entries must not move) by a tombstone. */
static void dd_unlink(bs__dedup_t *d, const bs__dd_entry_t *e)
{
    bs__dd_table_t *t = &d->cur;
    size_t mask = t->cap - 1, i = e->hash & mask;
    if (t->s) {
        while (t->s[i].e && t->s[i].e != e)
            i = (i + 1) & mask;
    }
    if (!t->s || !t->s[i].e) {
        t = &d->old;
        if (!t->s)
            return;
        mask = t->cap - 1;
        for (i = e->hash & mask; t->s[i].e && t->s[i].e != e; i = (i + 1) & mask)
            ;
        if (t->s[i].e) {
            t->s[i].e = BS__DD_TOMB;
            t->live--;
            d->count--;
        }
        return;
    }
    for (size_t j = i;;) {
        j = (j + 1) & mask;
        if (!t->s[j].e)
            break;
        size_t k = t->s[j].hash & mask;
        /* The entry at j may move to the hole at i unless its home lies in (i, j]. */
        int stays = i <= j ? (k > i && k <= j) : (k > i || k <= j);
        if (!stays) {
            t->s[i] = t->s[j];
            i = j;
        }
    }
    t->s[i] = (bs__dd_slot_t){0, NULL};
    t->live--;
    d->count--;
}

static void dd_free_chunk(bs__dedup_t *d, bs__dd_chunk_t *c)
{
    if (d->nspare < DD_SPARES && c->cap == DD_CHUNK) {
        c->next = d->spare;
        d->spare = c;
        d->nspare++;
    } else {
        free(c);
    }
}

/* Forgets the oldest key. */
static void dd_pop(bs__dedup_t *d)
{
    while (d->head) {
        bs__dd_chunk_t *c = d->head;
        if (d->head_pos < c->used) {
            bs__dd_entry_t *e = (bs__dd_entry_t *)(c->data + d->head_pos);
            dd_unlink(d, e);
            d->head_pos += dd_entry_size(e);
            return;
        }
        if (c == d->tail) {
            c->used = 0;
            d->head_pos = 0;
            return;
        }
        d->head = c->next;
        d->head_pos = 0;
        dd_free_chunk(d, c);
    }
}

int bs__dedup_insert(bs__dedup_t *d, uint64_t hash, const uint8_t *key, size_t key_len,
                     const uint8_t *id, size_t id_len, int64_t offset, int64_t time_ms)
{
    if (d->count >= BS__DEDUP_MAX_KEYS) {
        dd_pop(d);
        d->evicted++;
    }
    if ((d->cur.live + d->old.live + 1) * 2 > d->cur.cap && dd_grow(d) != 0)
        return -1;
    size_t need = dd_size(key_len, id_len);
    bs__dd_chunk_t *c = d->tail;
    if (!c || c->used + need > c->cap) {
        if (d->spare && need <= DD_CHUNK) {
            c = d->spare;
            d->spare = c->next;
            d->nspare--;
        } else {
            size_t cap = need > DD_CHUNK ? need : DD_CHUNK;
            c = malloc(sizeof *c + cap);
            if (!c)
                return -1;
            c->cap = cap;
        }
        c->next = NULL;
        c->used = 0;
        if (d->tail)
            d->tail->next = c;
        else {
            d->head = c;
            d->head_pos = 0;
        }
        d->tail = c;
    }
    bs__dd_entry_t *e = (bs__dd_entry_t *)(c->data + c->used);
    c->used += need;
    e->hash = hash;
    e->offset = offset;
    e->time_ms = time_ms;
    e->key_len = (uint16_t)key_len;
    e->id_len = (uint8_t)id_len;
    memcpy(e->bytes, key, key_len);
    memcpy(e->bytes + key_len, id, id_len);
    dd_place(&d->cur, hash, e);
    d->count++;
    dd_migrate(d, DD_MIGRATE);
    return 0;
}

void bs__dedup_expire(bs__dedup_t *d, int64_t cutoff_ms)
{
    while (d->head) {
        bs__dd_chunk_t *c = d->head;
        if (d->head_pos < c->used) {
            if (((bs__dd_entry_t *)(c->data + d->head_pos))->time_ms >= cutoff_ms)
                return;
            dd_pop(d);
            continue;
        }
        if (c == d->tail) {
            c->used = 0;
            d->head_pos = 0;
            return;
        }
        d->head = c->next;
        d->head_pos = 0;
        dd_free_chunk(d, c);
    }
}

bs__dd_mark_t bs__dedup_mark(const bs__dedup_t *d)
{
    return (bs__dd_mark_t){d->tail, d->tail ? d->tail->used : 0, d->count};
}

void bs__dedup_rollback(bs__dedup_t *d, bs__dd_mark_t m)
{
    bs__dd_chunk_t *c = m.chunk ? m.chunk : d->head;
    size_t pos = m.chunk ? m.used : d->head_pos;
    while (c) {
        while (pos < c->used) {
            bs__dd_entry_t *e = (bs__dd_entry_t *)(c->data + pos);
            dd_unlink(d, e);
            pos += dd_entry_size(e);
        }
        c = c->next;
        pos = 0;
    }
    bs__dd_chunk_t *keep = m.chunk;
    c = keep ? keep->next : d->head;
    while (c) {
        bs__dd_chunk_t *n = c->next;
        dd_free_chunk(d, c);
        c = n;
    }
    if (keep) {
        keep->next = NULL;
        keep->used = m.used;
        d->tail = keep;
    } else {
        d->head = d->tail = NULL;
        d->head_pos = 0;
    }
}

int64_t bs__dedup_offset(const bs__dd_entry_t *e)
{
    return e->offset;
}

void bs__dedup_id(const bs__dd_entry_t *e, char *out)
{
    memcpy(out, e->bytes + e->key_len, e->id_len);
    out[e->id_len] = '\0';
}

typedef struct {
    bs__dedup_t *d;
    int oom;
} rebuild_t;

static int rebuild_visit(const bs_log_record_t *r, void *ud)
{
    rebuild_t *rb = ud;
    size_t kl = strlen(r->dedup_key);
    if (!kl)
        return 0;
    uint64_t h;
    if (bs__dedup_find(rb->d, (const uint8_t *)r->dedup_key, kl, &h))
        return 0;
    if (bs__dedup_insert(rb->d, h, (const uint8_t *)r->dedup_key, kl, (const uint8_t *)r->id,
                         strlen(r->id), r->offset, r->time_ms) != 0) {
        rb->oom = 1;
        return 1;
    }
    return 0;
}

int bs__writer_dedup_rebuild(bs__topic_t *t, bs_err_t *err)
{
    bs_log_topic_config_t c = bs__topic_config_norm(&t->cfg);
    if (c.dedup_window_ms <= 0)
        return 0;
    int64_t now = bs_time_wall_ms(), from;
    if (bs__topic_offset_at(t, now - c.dedup_window_ms, &from, err) != 0)
        return err ? err->code : BS_EIO;
    rebuild_t rb = {.d = &t->w.dedup};
    while (from < t->next_offset) {
        int64_t next = from;
        int n = bs__topic_read(t, from, 10000, 0, rebuild_visit, &rb, &next, err);
        if (n < 0)
            return n;
        if (rb.oom)
            return bs_err_set(err, BS_ENOMEM, "out of memory rebuilding the dedup window");
        if (n == 0 || next <= from)
            break;
        from = next;
    }
    return 0;
}

/* ---- requests --------------------------------------------------------------------------- */

enum { REQ_APPEND, REQ_FORGET, REQ_ROLL };

typedef struct bs__req {
    struct bs__req *next;
    bs__topic_t *t;
    int kind;
    int n;
    int code;
    bs_log_append_cb cb;
    void *ud;
    uint64_t queued_ns;
    size_t bytes;
    bs_log_append_result_t *res;
    size_t *foff; /* per record: its frame in buf, or SIZE_MAX (a record error) */
    uint8_t *buf;
    bs_err_t err;
    /* REQ_FORGET: the waiting caller */
    pthread_mutex_t *wmu;
    pthread_cond_t *wcv;
    int *wdone;
} bs__req_t;

static int queue_push(bs__seglog_t *l, bs__req_t *r, bs_err_t *err)
{
    pthread_mutex_lock(&l->qmu);
    if (l->stop && r->kind == REQ_APPEND) {
        pthread_mutex_unlock(&l->qmu);
        return bs_err_set(err, BS_EUNAVAIL, "the log is closing");
    }
    if (r->kind == REQ_APPEND && (l->qcount >= BS__LOG_QUEUE_MAX ||
                                  (l->qbytes && l->qbytes + r->bytes > BS__LOG_QUEUE_BYTES))) {
        int qc = l->qcount;
        size_t qb = l->qbytes;
        pthread_mutex_unlock(&l->qmu);
        return bs_err_set(err, BS_EOVERLOAD,
                          "the log's write queue is full (%d appends, %zu bytes queued; limits %d, "
                          "%zu): retry later",
                          qc, qb, BS__LOG_QUEUE_MAX, BS__LOG_QUEUE_BYTES);
    }
    if (l->qtail)
        l->qtail->next = r;
    else
        l->qhead = r;
    l->qtail = r;
    l->qcount++;
    l->qbytes += r->bytes;
    if (l->writer_idle)
        pthread_cond_signal(&l->qcv);
    pthread_mutex_unlock(&l->qmu);
    return 0;
}

int bs__seglog_append_async(bs_log_t *lb, const char *tenant, const char *topic,
                            const bs_log_record_in_t *recs, int n, bs_log_append_cb cb, void *ud,
                            bs_err_t *err)
{
    bs__seglog_t *l = (bs__seglog_t *)lb;
    bs__topic_t *t = bs__topic_get(l, tenant, topic);
    if (!t)
        return bs_err_set(err, BS_ENOTFOUND, "topic '%s' not found", topic ? topic : "");
    int64_t maxrec = atomic_load(&t->max_record);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t idl = recs[i].id && recs[i].id[0] ? strlen(recs[i].id) : 36;
        size_t kl = recs[i].dedup_key ? strlen(recs[i].dedup_key) : 0;
        if (idl <= BS__ID_MAX && kl <= BS__KEY_MAX && recs[i].len <= (uint64_t)maxrec)
            total += bs__rec_frame_len(idl, kl, recs[i].len);
    }
    size_t head =
        (sizeof(bs__req_t) + (size_t)n * (sizeof(bs_log_append_result_t) + sizeof(size_t)) + 7) &
        ~(size_t)7;
    bs__req_t *r = malloc(head + total);
    if (!r) {
        bs__topic_unref(t);
        return bs_err_set(err, BS_ENOMEM, "out of memory queueing %d records (%zu bytes)", n,
                          total);
    }
    memset(r, 0, sizeof *r);
    r->t = t;
    r->kind = REQ_APPEND;
    r->n = n;
    r->cb = cb;
    r->ud = ud;
    r->bytes = total;
    r->res = (bs_log_append_result_t *)(r + 1);
    r->foff = (size_t *)(r->res + n);
    r->buf = (uint8_t *)r + head;
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        bs_log_append_result_t *res = &r->res[i];
        res->offset = -1;
        res->duplicate = 0;
        res->code = 0;
        r->foff[i] = SIZE_MAX;
        const char *id = recs[i].id;
        size_t idl = id && id[0] ? strlen(id) : 0,
               kl = recs[i].dedup_key ? strlen(recs[i].dedup_key) : 0;
        if (idl > BS__ID_MAX || kl > BS__KEY_MAX) {
            res->code = BS_EINVAL;
            snprintf(res->id, sizeof res->id, "%.*s", BS__ID_MAX, id ? id : "");
            continue;
        }
        if (idl)
            memcpy(res->id, id, idl + 1);
        else {
            bs_uuid7(res->id);
            idl = 36;
        }
        if (recs[i].len > (uint64_t)maxrec) {
            res->code = BS_ETOOBIG;
            continue;
        }
        r->foff[i] = pos;
        bs__rec_encode(r->buf + pos, res->id, idl, recs[i].dedup_key, kl, recs[i].data,
                       recs[i].len);
        pos += bs__rec_frame_len(idl, kl, recs[i].len);
    }
    r->queued_ns = bs_time_mono_ns();
    int rc = queue_push(l, r, err);
    if (rc != 0) {
        bs__topic_unref(t);
        free(r);
    }
    return rc;
}

/* ---- one round -------------------------------------------------------------------------- */

/* A run of a topic's round written to one segment. */
typedef struct {
    bs__req_t *first;
    int64_t next, time;
    uint64_t pos, idx_pos;
    bs__dd_mark_t dd;
    uint64_t dups;
    int oom;
    int64_t first_time; /* of the segment's first record, when this chunk writes it */
} chunk_t;

static void chunk_begin(bs__topic_t *t, chunk_t *ch, bs__req_t *first)
{
    bs__wstate_t *w = &t->w;
    *ch = (chunk_t){.first = first,
                    .next = w->next,
                    .time = w->time,
                    .pos = w->pos,
                    .idx_pos = w->idx_pos,
                    .dd = bs__dedup_mark(&w->dedup),
                    .first_time = -1};
}

static int iov_add(bs__wstate_t *w, uint8_t *p, size_t n)
{
    if (w->niov && (uint8_t *)w->iov[w->niov - 1].iov_base + w->iov[w->niov - 1].iov_len == p) {
        w->iov[w->niov - 1].iov_len += n;
        return 0;
    }
    if (w->niov == w->ciov) {
        int c = w->ciov ? w->ciov * 2 : 64;
        struct iovec *v = realloc(w->iov, (size_t)c * sizeof *v);
        if (!v)
            return -1;
        w->iov = v;
        w->ciov = c;
    }
    w->iov[w->niov++] = (struct iovec){p, n};
    return 0;
}

static int pidx_add(bs__wstate_t *w, int64_t off, int64_t tm, uint64_t pos)
{
    if (w->npidx == w->cpidx) {
        int c = w->cpidx ? w->cpidx * 2 : 16;
        bs__idx_t *v = realloc(w->pidx, (size_t)c * sizeof *v);
        if (!v)
            return -1;
        w->pidx = v;
        w->cpidx = c;
    }
    w->pidx[w->npidx++] = (bs__idx_t){off, tm, pos};
    return 0;
}

/* Lookups prefetch the table slots of the key this many records ahead. */
#define DD_AHEAD 16

static void assign(bs__topic_t *t, bs__req_t *r, chunk_t *ch, int64_t window, int64_t now)
{
    bs__wstate_t *w = &t->w;
    uint64_t *hashes = NULL;
    if (window > 0) {
        if (w->chash < r->n) {
            uint64_t *nh = realloc(w->hashes, (size_t)r->n * sizeof *nh);
            if (nh) {
                w->hashes = nh;
                w->chash = r->n;
            }
        }
        if (w->chash >= r->n) {
            hashes = w->hashes;
            for (int k = 0; k < r->n; k++) {
                hashes[k] = 0;
                if (r->foff[k] == SIZE_MAX)
                    continue;
                const uint8_t *b = r->buf + r->foff[k] + BS__REC_HDR;
                size_t kl = (size_t)b[18] | (size_t)b[19] << 8;
                if (kl)
                    hashes[k] = bs__dedup_hash(b + BS__REC_FIXED + b[16], kl);
                if (k < DD_AHEAD && kl)
                    bs__dedup_prefetch(&w->dedup, hashes[k]);
            }
        }
    }
    for (int i = 0; i < r->n; i++) {
        if (hashes && i + DD_AHEAD < r->n && hashes[i + DD_AHEAD])
            bs__dedup_prefetch(&w->dedup, hashes[i + DD_AHEAD]);
        if (r->foff[i] == SIZE_MAX)
            continue;
        uint8_t *f = r->buf + r->foff[i], *b = f + BS__REC_HDR;
        size_t flen = BS__REC_HDR + bs__get32(f);
        size_t id_len = b[16], key_len = (size_t)b[18] | (size_t)b[19] << 8;
        const uint8_t *id = b + BS__REC_FIXED, *key = id + id_len;
        uint64_t h = 0;
        if (window > 0 && key_len) {
            h = hashes ? hashes[i] : bs__dedup_hash(key, key_len);
            const bs__dd_entry_t *e = bs__dedup_find_hashed(&w->dedup, h, key, key_len);
            if (e) {
                r->res[i].duplicate = 1;
                r->res[i].offset = bs__dedup_offset(e);
                bs__dedup_id(e, r->res[i].id);
                ch->dups++;
                continue;
            }
        }
        int64_t off = w->next++;
        int64_t tm = now > w->time ? now : w->time;
        w->time = tm;
        bs__rec_seal(f, off, tm);
        if (window > 0 && key_len &&
            bs__dedup_insert(&w->dedup, h, key, key_len, id, id_len, off, tm))
            ch->oom = 1;
        r->res[i].offset = off;
        if (off == w->active->base) {
            ch->first_time = tm;
            if (pidx_add(w, off, tm, w->pos) != 0)
                ch->oom = 1;
            w->idx_pos = w->pos;
        } else if (w->pos - w->idx_pos >= BS__IDX_EVERY) {
            if (pidx_add(w, off, tm, w->pos) != 0)
                ch->oom = 1;
            w->idx_pos = w->pos;
        }
        if (iov_add(w, f, flen) != 0)
            ch->oom = 1;
        w->pos += flen;
    }
}

static int write_iov(int fd, struct iovec *iov, int n, uint64_t at)
{
    while (n > 0) {
        int k = n < IOV_MAX ? n : IOV_MAX;
        ssize_t wr = pwritev(fd, iov, k, (off_t)at);
        if (wr < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        at += (uint64_t)wr;
        while (n > 0 && (size_t)wr >= iov->iov_len) {
            wr -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0 && wr > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + wr;
            iov->iov_len -= (size_t)wr;
        }
    }
    return 0;
}

static void fail_reqs(bs__req_t *from, bs__req_t *to, int code, const bs_err_t *err)
{
    for (bs__req_t *r = from; r && r != to; r = r->next) {
        r->code = code;
        if (err)
            r->err = *err;
        else
            bs_err_set(&r->err, code, "append failed");
    }
}

/* Writes (and with sync, fdatasyncs) the chunk [ch->first, end), then publishes it. On
 * failure the segment is cut back, the chunk's appends fail and the state is restored. */
static int chunk_finish(bs__topic_t *t, chunk_t *ch, bs__req_t *end, int sync, int *published)
{
    bs__wstate_t *w = &t->w;
    int fd = w->active->fd, rc = 0;
    int wrote = w->niov > 0;
    bs_err_t err;
    bs_err_clear(&err);
    if (ch->oom)
        rc = bs_err_set(&err, BS_ENOMEM, "out of memory writing topic %s/%s", t->tenant, t->name);
    if (rc == 0 && wrote && write_iov(fd, w->iov, w->niov, ch->pos) != 0)
        rc = bs_err_set(&err, BS_EIO, "cannot write %s: %s", w->active->path, strerror(errno));
    if (rc == 0 && wrote && sync) {
        if (fdatasync(fd) != 0)
            rc = bs_err_set(&err, BS_EIO, "cannot fsync %s: %s", w->active->path, strerror(errno));
        else
            atomic_fetch_add(&t->syncs, 1);
    }
    w->niov = 0;
    if (rc != 0) {
        BS_LOG(BS_LOG_ERROR, "log", "topic %s/%s: %s", t->tenant, t->name, err.msg);
        if (wrote && ftruncate(fd, (off_t)ch->pos) != 0) {
            BS_LOG(BS_LOG_ERROR, "log",
                   "topic %s/%s: cannot cut %s back: %s; appends fail until "
                   "reopened",
                   t->tenant, t->name, w->active->path, strerror(errno));
            w->failed = 1;
        }
        w->next = ch->next;
        w->time = ch->time;
        w->pos = ch->pos;
        w->idx_pos = ch->idx_pos;
        w->npidx = 0;
        bs__dedup_rollback(&w->dedup, ch->dd);
        fail_reqs(ch->first, end, rc, &err);
        return rc;
    }
    if (w->next == ch->next && !ch->dups)
        return 0;
    bs__seg_t *s = w->active;
    pthread_mutex_lock(&t->mu);
    for (int i = 0; i < w->npidx; i++)
        if (bs__seg_idx_push(s, w->pidx[i].offset, w->pidx[i].time_ms, w->pidx[i].pos) != 0)
            break; /* a sparser index: reads scan further */
    if (ch->first_time >= 0)
        s->first_time = ch->first_time;
    if (w->next > ch->next)
        s->last_time = w->time;
    s->end = w->next;
    s->size = w->pos;
    t->bytes += (int64_t)(w->pos - ch->pos);
    t->next_offset = w->next;
    t->last_time = w->time;
    pthread_mutex_unlock(&t->mu);
    w->npidx = 0;
    atomic_fetch_add(&t->published, 1);
    atomic_fetch_add(&t->appended, (uint64_t)(w->next - ch->next));
    atomic_fetch_add(&t->duplicates, ch->dups);
    *published = 1;
    return 0;
}

/* Seals the active segment (already fsynced) and starts the next one. */
static int roll(bs__topic_t *t, bs_err_t *err)
{
    bs__wstate_t *w = &t->w;
    bs__seg_t *old = w->active;
    bs__seg_write_index(t, old);
    bs__seg_t *s = bs__seg_create(t->dir, w->next, err);
    if (!s)
        return err->code;
    pthread_mutex_lock(&t->mu);
    int rc = bs__topic_push_seg(t, s);
    if (rc == 0) {
        old->sealed = 1;
        t->bytes += BS__SEG_HDR;
    }
    pthread_mutex_unlock(&t->mu);
    if (rc != 0) {
        unlink(s->path);
        bs__seg_unref(s);
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    w->active = s;
    w->pos = BS__SEG_HDR;
    w->idx_pos = 0;
    return 0;
}

static void mark_dirty(bs__seglog_t *l, bs__topic_t *t, int64_t interval_ms)
{
    if (t->w.dirty)
        return;
    t->w.dirty = 1;
    t->w.sync_due_ns = bs_time_mono_ns() + (uint64_t)interval_ms * 1000000u;
    t->w.dirty_next = l->dirty;
    l->dirty = t;
}

static void unmark_dirty(bs__seglog_t *l, bs__topic_t *t)
{
    if (!t->w.dirty)
        return;
    for (bs__topic_t **p = &l->dirty; *p; p = &(*p)->w.dirty_next)
        if (*p == t) {
            *p = t->w.dirty_next;
            break;
        }
    t->w.dirty = 0;
}

/* One topic's share of a round. Returns 1 when records were published. */
static int topic_round(bs__seglog_t *l, bs__topic_t *t)
{
    bs__wstate_t *w = &t->w;
    pthread_mutex_lock(&t->mu);
    bs_log_topic_config_t c = bs__topic_config_norm(&t->cfg);
    pthread_mutex_unlock(&t->mu);
    bs_err_t err;
    if (atomic_load(&t->dropped)) {
        bs_err_set(&err, BS_ENOTFOUND, "topic '%s' was dropped", t->name);
        fail_reqs(w->head, NULL, BS_ENOTFOUND, &err);
        return 0;
    }
    if (w->failed) {
        bs_err_set(&err, BS_EIO, "topic %s/%s failed a write it could not undo; reopen the log",
                   t->tenant, t->name);
        fail_reqs(w->head, NULL, BS_EIO, &err);
        return 0;
    }
    int64_t now = bs_time_wall_ms();
    if (c.dedup_window_ms > 0)
        bs__dedup_expire(&w->dedup, now - c.dedup_window_ms);
    else if (w->dedup.count || w->dedup.head)
        bs__dedup_free(&w->dedup);
    int published = 0;
    chunk_t ch;
    chunk_begin(t, &ch, w->head);
    for (bs__req_t *r = w->head; r; r = r->next) {
        if (r->bytes && w->next > w->active->base &&
            w->pos + r->bytes > (uint64_t)c.segment_bytes) {
            if (chunk_finish(t, &ch, r, 1, &published) != 0) {
                fail_reqs(r, NULL, BS_EIO, NULL);
                return published;
            }
            if (roll(t, &err) != 0) {
                BS_LOG(BS_LOG_ERROR, "log", "topic %s/%s: %s", t->tenant, t->name, err.msg);
                fail_reqs(r, NULL, err.code, &err);
                return published;
            }
            chunk_begin(t, &ch, r);
        }
        assign(t, r, &ch, c.dedup_window_ms, now);
    }
    int wrote = w->next > ch.next;
    if (chunk_finish(t, &ch, NULL, c.sync_interval_ms == 0, &published) == 0 && wrote &&
        c.sync_interval_ms > 0)
        mark_dirty(l, t, c.sync_interval_ms);
    return published;
}

static void hist_add(bs__seglog_t *l, uint64_t ns)
{
    double s = (double)ns / 1e9;
    int b = 0;
    while (b < BS__LOG_HIST_N && s > bs__log_hist_bounds[b])
        b++;
    atomic_fetch_add_explicit(&l->hist[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&l->hist_sum_ns, ns, memory_order_relaxed);
}

static void complete(bs__seglog_t *l, bs__req_t *r, uint64_t now_ns)
{
    hist_add(l, now_ns - r->queued_ns);
    if (r->code == 0)
        r->cb(r->ud, 0, r->res, r->n, NULL);
    else
        r->cb(r->ud, r->code, NULL, 0, &r->err);
    bs__topic_unref(r->t);
    free(r);
}

static void do_roll(bs__seglog_t *l, bs__topic_t *t)
{
    atomic_store(&t->roll_asked, 0);
    bs__wstate_t *w = &t->w;
    if (atomic_load(&t->dropped) || w->failed || w->next == w->active->base)
        return;
    bs_err_t err;
    if (w->dirty) {
        if (fdatasync(w->active->fd) != 0) {
            BS_LOG(BS_LOG_ERROR, "log", "topic %s/%s: cannot fsync %s: %s", t->tenant, t->name,
                   w->active->path, strerror(errno));
            return;
        }
        atomic_fetch_add(&t->syncs, 1);
        unmark_dirty(l, t);
    }
    if (roll(t, &err) != 0)
        BS_LOG(BS_LOG_ERROR, "log", "topic %s/%s: %s", t->tenant, t->name, err.msg);
}

static void writer_round(bs__seglog_t *l, bs__req_t *batch)
{
    bs__topic_t *touched = NULL;
    bs__req_t *ctl = NULL, **ctl_tail = &ctl;
    for (bs__req_t *r = batch, *nx; r; r = nx) {
        nx = r->next;
        r->next = NULL;
        if (r->kind != REQ_APPEND) {
            *ctl_tail = r;
            ctl_tail = &r->next;
            continue;
        }
        bs__topic_t *t = r->t;
        if (!t->w.in_round) {
            t->w.in_round = 1;
            t->w.head = t->w.tail = NULL;
            t->w.round_next = touched;
            touched = t;
        }
        if (t->w.tail)
            t->w.tail->next = r;
        else
            t->w.head = r;
        t->w.tail = r;
    }
    for (bs__topic_t *t = touched; t; t = t->w.round_next)
        if (topic_round(l, t)) {
            if (atomic_load(&t->nwatch) > 0)
                bs__watch_fire(l, t, 0);
            if (atomic_load(&t->nwait) > 0)
                bs__consumer_kick(l);
        }
    uint64_t now = bs_time_mono_ns();
    for (bs__topic_t *t = touched, *nt; t; t = nt) {
        nt = t->w.round_next;
        bs__req_t *r = t->w.head;
        t->w.head = t->w.tail = NULL;
        t->w.in_round = 0;
        t->w.round_next = NULL;
        for (bs__req_t *nx; r; r = nx) {
            nx = r->next;
            complete(l, r, now);
        }
    }
    atomic_fetch_add_explicit(&l->rounds, 1, memory_order_relaxed);
    for (bs__req_t *r = ctl, *nx; r; r = nx) {
        nx = r->next;
        bs__topic_t *t = r->t;
        if (r->kind == REQ_FORGET) {
            unmark_dirty(l, t);
            pthread_mutex_lock(r->wmu);
            *r->wdone = 1;
            pthread_cond_signal(r->wcv);
            pthread_mutex_unlock(r->wmu);
        } else {
            do_roll(l, t);
        }
        bs__topic_unref(t);
        free(r);
    }
}

static void sync_due(bs__seglog_t *l, int all)
{
    uint64_t now = bs_time_mono_ns();
    for (bs__topic_t **p = &l->dirty; *p;) {
        bs__topic_t *t = *p;
        if (!all && now < t->w.sync_due_ns) {
            p = &t->w.dirty_next;
            continue;
        }
        if (fdatasync(t->w.active->fd) != 0)
            BS_LOG(BS_LOG_ERROR, "log",
                   "topic %s/%s: cannot fsync %s: %s (acknowledged records "
                   "may be lost)",
                   t->tenant, t->name, t->w.active->path, strerror(errno));
        else
            atomic_fetch_add(&t->syncs, 1);
        t->w.dirty = 0;
        *p = t->w.dirty_next;
    }
}

static void *writer_main(void *arg)
{
    bs__seglog_t *l = arg;
    pthread_mutex_lock(&l->qmu);
    for (;;) {
        while (!l->qhead && !l->stop) {
            uint64_t due = 0;
            for (bs__topic_t *t = l->dirty; t; t = t->w.dirty_next)
                if (!due || t->w.sync_due_ns < due)
                    due = t->w.sync_due_ns;
            l->writer_idle = 1;
            if (due) {
                struct timespec ts = {(time_t)(due / 1000000000u), (long)(due % 1000000000u)};
                int rc = pthread_cond_timedwait(&l->qcv, &l->qmu, &ts);
                if (rc == ETIMEDOUT)
                    break;
            } else {
                pthread_cond_wait(&l->qcv, &l->qmu);
            }
        }
        l->writer_idle = 0;
        bs__req_t *batch = l->qhead;
        l->qhead = l->qtail = NULL;
        l->qbytes = 0;
        l->qcount = 0;
        int stop = l->stop;
        pthread_mutex_unlock(&l->qmu);
        if (batch)
            writer_round(l, batch);
        sync_due(l, stop);
        pthread_mutex_lock(&l->qmu);
        if (stop && !l->qhead)
            break;
    }
    pthread_mutex_unlock(&l->qmu);
    return NULL;
}

int bs__writer_start(bs__seglog_t *l, bs_err_t *err)
{
    if (pthread_create(&l->writer, NULL, writer_main, l) != 0)
        return bs_err_set(err, BS_EINTERNAL, "cannot start the log writer: %s", strerror(errno));
    l->writer_started = 1;
    return 0;
}

void bs__writer_stop(bs__seglog_t *l)
{
    if (!l->writer_started)
        return;
    pthread_mutex_lock(&l->qmu);
    l->stop = 1;
    pthread_cond_signal(&l->qcv);
    pthread_mutex_unlock(&l->qmu);
    pthread_join(l->writer, NULL);
    l->writer_started = 0;
}

static bs__req_t *ctl_new(bs__topic_t *t, int kind)
{
    bs__req_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    atomic_fetch_add(&t->refs, 1);
    r->t = t;
    r->kind = kind;
    return r;
}

void bs__writer_forget(bs__seglog_t *l, bs__topic_t *t)
{
    if (!l->writer_started)
        return;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    int done = 0;
    bs__req_t *r;
    while (!(r = ctl_new(t, REQ_FORGET)))
        usleep(1000);
    r->wmu = &mu;
    r->wcv = &cv;
    r->wdone = &done;
    queue_push(l, r, NULL);
    pthread_mutex_lock(&mu);
    while (!done)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    pthread_mutex_destroy(&mu);
    pthread_cond_destroy(&cv);
}

void bs__writer_ask_roll(bs__seglog_t *l, bs__topic_t *t)
{
    if (!l->writer_started || atomic_exchange(&t->roll_asked, 1))
        return;
    bs__req_t *r = ctl_new(t, REQ_ROLL);
    if (!r) {
        atomic_store(&t->roll_asked, 0);
        return;
    }
    queue_push(l, r, NULL);
}

/* ---- retention -------------------------------------------------------------------------- */

void bs__retention_run(bs__seglog_t *l, bs__topic_t *t, int64_t now_ms)
{
    bs__seg_t *victims[64];
    int nv = 0, ask_roll = 0;
    pthread_mutex_lock(&t->mu);
    bs_log_topic_config_t c = bs__topic_config_norm(&t->cfg);
    while (t->nsegs > 1 && nv < 64) {
        bs__seg_t *s = t->segs[0];
        int old =
            c.retention_ms > 0 && (s->end == s->base || s->last_time < now_ms - c.retention_ms);
        int big = c.retention_bytes > 0 && t->bytes > c.retention_bytes;
        if (!old && !big)
            break;
        memmove(t->segs, t->segs + 1, (size_t)(t->nsegs - 1) * sizeof *t->segs);
        t->nsegs--;
        t->bytes -= (int64_t)s->size;
        victims[nv++] = s;
    }
    if (t->nsegs == 1 && c.retention_ms > 0) {
        bs__seg_t *a = t->segs[0];
        ask_roll = a->end > a->base && a->last_time < now_ms - c.retention_ms;
    }
    pthread_mutex_unlock(&t->mu);
    for (int i = 0; i < nv; i++) {
        bs__seg_t *s = victims[i];
        char idx[1100];
        snprintf(idx, sizeof idx, "%.*s.idx", (int)(strlen(s->path) - 4), s->path);
        if (unlink(s->path) != 0 && errno != ENOENT)
            BS_LOG(BS_LOG_WARN, "log", "topic %s/%s: cannot remove %s: %s", t->tenant, t->name,
                   s->path, strerror(errno));
        unlink(idx);
        bs__seg_unref(s);
    }
    if (nv)
        bs__fsync_dir(t->dir);
    if (ask_roll)
        bs__writer_ask_roll(l, t);
}
