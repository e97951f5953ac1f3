/*
 * The segments backend's files (log_seg_int.h, docs/log.md): CRC32C, the
 * record frame, the recovery scanner, segment files and their sparse indexes,
 * recovery of a topic directory on open, reads by offset and by time, and the
 * topic's config file.
 *
 * Recovery: every segment but the last was fsynced before the next one was
 * created, so only the last can end in a torn record; it is scanned from its
 * header (a short record, a bad CRC or an offset out of sequence ends the
 * valid prefix) and truncated to the valid prefix. A sealed segment is
 * trusted through its index file when that file is consistent with it (size,
 * checksum), else scanned and its index rewritten.
 *
 * Reads take the topic's mu only to find the segment, its index entry and
 * the published end, then pread the file with a reference on the segment;
 * every record read is checked (CRC, offset) again.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#include "base/buf.h"
#include "base/json.h"
#include "base/log.h"
#include "store/log_seg_int.h"

/* ---- CRC32C ----------------------------------------------------------------------------- */

static uint32_t crc_table[8][256];
static uint32_t (*crc_impl)(uint32_t, const uint8_t *, size_t);
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static uint32_t crc_sw(uint32_t c, const uint8_t *p, size_t n)
{
    while (n && ((uintptr_t)p & 7)) {
        c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
        n--;
    }
    while (n >= 8) {
        uint32_t lo = c ^ bs__get32(p), hi = bs__get32(p + 4);
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xff] ^
            crc_table[2][(hi >> 8) & 0xff] ^ crc_table[1][(hi >> 16) & 0xff] ^
            crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const uint8_t *p, size_t n)
{
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = _mm_crc32_u64(c64, v);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--)
        c = _mm_crc32_u8(c, *p++);
    return c;
}
#endif

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (int k = 1; k < 8; k++)
        for (int i = 0; i < 256; i++)
            crc_table[k][i] = (crc_table[k - 1][i] >> 8) ^ crc_table[0][crc_table[k - 1][i] & 0xff];
    crc_impl = crc_sw;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2") && !getenv("BASALT_CRC32C_SOFTWARE"))
        crc_impl = crc_hw;
#endif
}

uint32_t bs__crc32c(uint32_t crc, const void *p, size_t n)
{
    pthread_once(&crc_once, crc_init);
    return ~crc_impl(~crc, p, n);
}

/* ---- records ---------------------------------------------------------------------------- */

void bs__rec_encode(uint8_t *f, const char *id, size_t id_len, const char *key, size_t key_len,
                    const void *data, size_t len)
{
    bs__put32(f, (uint32_t)(BS__REC_FIXED + id_len + key_len + len));
    bs__put32(f + 4, 0);
    uint8_t *b = f + BS__REC_HDR;
    memset(b, 0, 16);
    b[16] = (uint8_t)id_len;
    b[17] = 0;
    b[18] = (uint8_t)key_len;
    b[19] = (uint8_t)(key_len >> 8);
    memcpy(b + BS__REC_FIXED, id, id_len);
    if (key_len)
        memcpy(b + BS__REC_FIXED + id_len, key, key_len);
    if (len)
        memcpy(b + BS__REC_FIXED + id_len + key_len, data, len);
}

void bs__rec_seal(uint8_t *f, int64_t offset, int64_t time_ms)
{
    uint8_t *b = f + BS__REC_HDR;
    bs__put64(b, (uint64_t)offset);
    bs__put64(b + 8, (uint64_t)time_ms);
    bs__put32(f + 4, bs__crc32c(0, b, bs__get32(f)));
}

int bs__rec_parse(const uint8_t *p, size_t n, bs__rec_view_t *v, size_t *need)
{
    if (n < BS__REC_HDR) {
        *need = BS__REC_HDR;
        return 0;
    }
    uint32_t blen = bs__get32(p);
    if (blen < BS__REC_FIXED || blen > BS__BODY_MAX)
        return -1;
    size_t flen = (size_t)BS__REC_HDR + blen;
    if (n < flen) {
        *need = flen;
        return 0;
    }
    const uint8_t *b = p + BS__REC_HDR;
    size_t id_len = b[16], key_len = (size_t)b[18] | (size_t)b[19] << 8;
    if (b[17] != 0 || id_len > BS__ID_MAX || key_len > BS__KEY_MAX ||
        BS__REC_FIXED + id_len + key_len > blen)
        return -1;
    if (bs__crc32c(0, b, blen) != bs__get32(p + 4))
        return -1;
    v->offset = (int64_t)bs__get64(b);
    v->time_ms = (int64_t)bs__get64(b + 8);
    v->id = b + BS__REC_FIXED;
    v->id_len = id_len;
    v->key = v->id + id_len;
    v->key_len = key_len;
    v->data = v->key + key_len;
    v->len = blen - BS__REC_FIXED - id_len - key_len;
    v->frame_len = flen;
    return 1;
}

/* Offsets stay far from overflow whatever a file says. */
#define OFFSET_LIMIT ((int64_t)1 << 62)

int64_t bs__seg_scan(const uint8_t *p, size_t n, int64_t base, bs__rec_visit_cb cb, void *ud,
                     int64_t *count)
{
    if (count)
        *count = 0;
    if (n < BS__SEG_HDR || memcmp(p, BS__SEG_MAGIC, 8) != 0)
        return -1;
    int64_t first = (int64_t)bs__get64(p + 8);
    if (first < 0 || first >= OFFSET_LIMIT || (base >= 0 && first != base))
        return -1;
    size_t pos = BS__SEG_HDR;
    int64_t expect = first, c = 0;
    while (pos < n && expect < OFFSET_LIMIT) {
        bs__rec_view_t v;
        size_t need;
        if (bs__rec_parse(p + pos, n - pos, &v, &need) != 1 || v.offset != expect)
            break;
        int stop = cb && cb(&v, pos, ud);
        pos += v.frame_len;
        expect++;
        c++;
        if (stop)
            break;
    }
    if (count)
        *count = c;
    return (int64_t)pos;
}

/* ---- segments --------------------------------------------------------------------------- */

bs__seg_t *bs__seg_new(const char *dir, int64_t base)
{
    size_t n = strlen(dir) + 32;
    bs__seg_t *s = calloc(1, sizeof *s + n);
    if (!s)
        return NULL;
    snprintf(s->path, n, "%s/%020lld.seg", dir, (long long)base);
    s->base = s->end = base;
    s->fd = -1;
    s->size = BS__SEG_HDR;
    atomic_init(&s->refs, 1);
    return s;
}

void bs__seg_ref(bs__seg_t *s)
{
    atomic_fetch_add(&s->refs, 1);
}

void bs__seg_unref(bs__seg_t *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    if (s->fd >= 0)
        close(s->fd);
    free(s->idx);
    free(s);
}

static int write_all(int fd, const void *p, size_t n, off_t at)
{
    const uint8_t *c = p;
    while (n) {
        ssize_t w = pwrite(fd, c, n, at);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
        at += w;
    }
    return 0;
}

static void seg_header(uint8_t *h, int64_t base)
{
    memcpy(h, BS__SEG_MAGIC, 8);
    bs__put64(h + 8, (uint64_t)base);
}

bs__seg_t *bs__seg_create(const char *dir, int64_t base, bs_err_t *err)
{
    bs__seg_t *s = bs__seg_new(dir, base);
    if (!s) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    s->fd = open(s->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    uint8_t h[BS__SEG_HDR];
    seg_header(h, base);
    if (s->fd < 0 || write_all(s->fd, h, sizeof h, 0) != 0 || fsync(s->fd) != 0 ||
        bs__fsync_dir(dir) != 0) {
        bs_err_set(err, BS_EIO, "cannot create segment %s: %s", s->path, strerror(errno));
        bs__seg_unref(s);
        return NULL;
    }
    return s;
}

int bs__seg_idx_push(bs__seg_t *s, int64_t offset, int64_t time_ms, uint64_t pos)
{
    if (s->nidx == s->cidx) {
        int c = s->cidx ? s->cidx * 2 : 16;
        bs__idx_t *n = realloc(s->idx, (size_t)c * sizeof *n);
        if (!n)
            return -1;
        s->idx = n;
        s->cidx = c;
    }
    s->idx[s->nidx++] = (bs__idx_t){offset, time_ms, pos};
    return 0;
}

/* Index file: magic, u64 segment size, u64 end, i64 first time, i64 last time, u32 count,
 * u32 0, count x (u64 offset, i64 time, u64 pos), u32 CRC32C of all that precedes. */
#define IDX_HDR 48

static void idx_path(const bs__seg_t *s, char *out, size_t n)
{
    snprintf(out, n, "%.*s.idx", (int)(strlen(s->path) - 4), s->path);
}

void bs__seg_write_index(bs__topic_t *t, bs__seg_t *s)
{
    size_t n = IDX_HDR + (size_t)s->nidx * 24 + 4;
    uint8_t *b = malloc(n);
    if (!b)
        return;
    memcpy(b, BS__IDX_MAGIC, 8);
    bs__put64(b + 8, s->size);
    bs__put64(b + 16, (uint64_t)s->end);
    bs__put64(b + 24, (uint64_t)s->first_time);
    bs__put64(b + 32, (uint64_t)s->last_time);
    bs__put32(b + 40, (uint32_t)s->nidx);
    bs__put32(b + 44, 0);
    for (int i = 0; i < s->nidx; i++) {
        uint8_t *e = b + IDX_HDR + (size_t)i * 24;
        bs__put64(e, (uint64_t)s->idx[i].offset);
        bs__put64(e + 8, (uint64_t)s->idx[i].time_ms);
        bs__put64(e + 16, s->idx[i].pos);
    }
    bs__put32(b + n - 4, bs__crc32c(0, b, n - 4));
    char path[1100], tmp[1110];
    idx_path(s, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write_all(fd, b, n, 0) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        BS_LOG(BS_LOG_WARN, "log", "topic %s/%s: cannot write index %s: %s", t->tenant, t->name,
               path, strerror(errno));
        if (fd >= 0)
            unlink(tmp);
    }
    free(b);
}

int bs__idx_parse(const uint8_t *p, size_t n, int64_t base, uint64_t seg_size, bs__idx_t **idx,
                  int *nidx, int64_t *end, int64_t *first_time, int64_t *last_time)
{
    if (n < IDX_HDR + 4 || memcmp(p, BS__IDX_MAGIC, 8) != 0 || bs__get64(p + 8) != seg_size)
        return -1;
    uint32_t cnt = bs__get32(p + 40);
    if ((n - IDX_HDR - 4) / 24 != cnt || (n - IDX_HDR - 4) % 24 != 0)
        return -1;
    if (bs__crc32c(0, p, n - 4) != bs__get32(p + n - 4))
        return -1;
    int64_t e = (int64_t)bs__get64(p + 16);
    if (e < base || e >= OFFSET_LIMIT || (cnt == 0) != (e == base))
        return -1;
    bs__idx_t *v = cnt ? malloc((size_t)cnt * sizeof *v) : NULL;
    if (cnt && !v)
        return -1;
    for (uint32_t i = 0; i < cnt; i++) {
        const uint8_t *q = p + IDX_HDR + (size_t)i * 24;
        v[i] = (bs__idx_t){(int64_t)bs__get64(q), (int64_t)bs__get64(q + 8), bs__get64(q + 16)};
        int ok = v[i].pos >= BS__SEG_HDR && v[i].pos < seg_size && v[i].offset >= base &&
                 v[i].offset < e;
        if (i == 0)
            ok = ok && v[i].offset == base && v[i].pos == BS__SEG_HDR;
        else
            ok = ok && v[i].offset > v[i - 1].offset && v[i].pos > v[i - 1].pos &&
                 v[i].time_ms >= v[i - 1].time_ms;
        if (!ok) {
            free(v);
            return -1;
        }
    }
    *idx = v;
    *nidx = (int)cnt;
    *end = e;
    *first_time = (int64_t)bs__get64(p + 24);
    *last_time = (int64_t)bs__get64(p + 32);
    return 0;
}

/* ---- recovery --------------------------------------------------------------------------- */

typedef struct {
    bs__seg_t *s;
    uint64_t last_pos;
    int oom;
} build_t;

static int build_visit(const bs__rec_view_t *v, uint64_t pos, void *ud)
{
    build_t *b = ud;
    bs__seg_t *s = b->s;
    if (s->nidx == 0 || pos - b->last_pos >= BS__IDX_EVERY) {
        if (bs__seg_idx_push(s, v->offset, v->time_ms, pos) != 0) {
            b->oom = 1;
            return 1;
        }
        b->last_pos = pos;
    }
    if (s->end == s->base)
        s->first_time = v->time_ms;
    s->last_time = v->time_ms;
    s->end = v->offset + 1;
    return 0;
}

/* Scans the file into s (index, end, times): the valid prefix's length, or -1 (bad header). */
static int scan_segment(bs__seg_t *s, int fd, uint64_t fsize, int64_t *valid, bs_err_t *err)
{
    s->nidx = 0;
    s->end = s->base;
    s->first_time = s->last_time = 0;
    *valid = -1;
    if (fsize < BS__SEG_HDR)
        return 0;
    uint8_t *m = mmap(NULL, fsize, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED)
        return bs_err_set(err, BS_EIO, "cannot map %s: %s", s->path, strerror(errno));
    madvise(m, fsize, MADV_SEQUENTIAL);
    build_t b = {.s = s};
    *valid = bs__seg_scan(m, fsize, s->base, build_visit, &b, NULL);
    munmap(m, fsize);
    if (b.oom)
        return bs_err_set(err, BS_ENOMEM, "out of memory indexing %s", s->path);
    return 0;
}

static int load_index(bs__seg_t *s, uint64_t fsize)
{
    char path[1100];
    idx_path(s, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    int rc = -1;
    if (fstat(fd, &st) == 0 && st.st_size > 0 && st.st_size < (1 << 30)) {
        uint8_t *b = malloc((size_t)st.st_size);
        if (b && pread(fd, b, (size_t)st.st_size, 0) == st.st_size)
            rc = bs__idx_parse(b, (size_t)st.st_size, s->base, fsize, &s->idx, &s->nidx, &s->end,
                               &s->first_time, &s->last_time);
        free(b);
    }
    close(fd);
    if (rc == 0)
        s->cidx = s->nidx;
    return rc;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int list_segments(const char *dir, int64_t **out, int *n)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int64_t *v = NULL;
    int c = 0, k = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *s = e->d_name;
        if (strlen(s) != 24 || strcmp(s + 20, ".seg") != 0)
            continue;
        int64_t base = 0;
        int ok = 1;
        for (int i = 0; i < 20; i++) {
            if (s[i] < '0' || s[i] > '9' || base > (OFFSET_LIMIT - 9) / 10) {
                ok = 0;
                break;
            }
            base = base * 10 + (s[i] - '0');
        }
        if (!ok)
            continue;
        if (k == c) {
            c = c ? c * 2 : 16;
            int64_t *nv = realloc(v, (size_t)c * sizeof *nv);
            if (!nv) {
                free(v);
                closedir(d);
                return -1;
            }
            v = nv;
        }
        v[k++] = base;
    }
    closedir(d);
    if (k)
        qsort(v, (size_t)k, sizeof *v, cmp_i64);
    *out = v;
    *n = k;
    return 0;
}

int bs__topic_push_seg(bs__topic_t *t, bs__seg_t *s)
{
    if (t->nsegs == t->csegs) {
        int c = t->csegs ? t->csegs * 2 : 8;
        bs__seg_t **n = realloc(t->segs, (size_t)c * sizeof *n);
        if (!n)
            return -1;
        t->segs = n;
        t->csegs = c;
    }
    t->segs[t->nsegs++] = s;
    return 0;
}

/* Recovers the last segment: scanned, a torn tail truncated, a missing header rewritten. */
static int recover_active(bs__topic_t *t, bs__seg_t *s, bs_err_t *err)
{
    s->fd = open(s->path, O_RDWR | O_CLOEXEC);
    struct stat st;
    if (s->fd < 0 || fstat(s->fd, &st) != 0)
        return bs_err_set(err, BS_EIO, "cannot open %s: %s", s->path, strerror(errno));
    int64_t valid;
    if (scan_segment(s, s->fd, (uint64_t)st.st_size, &valid, err) != 0)
        return err ? err->code : BS_EIO;
    if (valid < 0) {
        /* A segment created by a roll that did not finish: its header is incomplete. */
        uint8_t h[BS__SEG_HDR];
        seg_header(h, s->base);
        if (st.st_size > 0)
            BS_LOG(BS_LOG_WARN, "log", "topic %s/%s: segment %s had no valid header; emptied",
                   t->tenant, t->name, s->path);
        if (ftruncate(s->fd, 0) != 0 || write_all(s->fd, h, sizeof h, 0) != 0 || fsync(s->fd) != 0)
            return bs_err_set(err, BS_EIO, "cannot repair %s: %s", s->path, strerror(errno));
        valid = BS__SEG_HDR;
    } else if ((uint64_t)valid < (uint64_t)st.st_size) {
        BS_LOG(BS_LOG_INFO, "log", "topic %s/%s: truncated a torn tail of %lld bytes at %s:%lld",
               t->tenant, t->name, (long long)(st.st_size - valid), s->path, (long long)valid);
        if (ftruncate(s->fd, valid) != 0 || fdatasync(s->fd) != 0)
            return bs_err_set(err, BS_EIO, "cannot truncate %s: %s", s->path, strerror(errno));
    }
    s->size = (uint64_t)valid;
    return 0;
}

static int recover_sealed(bs__topic_t *t, bs__seg_t *s, bs_err_t *err)
{
    struct stat st;
    if (stat(s->path, &st) != 0)
        return bs_err_set(err, BS_EIO, "cannot stat %s: %s", s->path, strerror(errno));
    s->sealed = 1;
    if (load_index(s, (uint64_t)st.st_size) == 0) {
        s->size = (uint64_t)st.st_size;
        return 0;
    }
    int fd = open(s->path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return bs_err_set(err, BS_EIO, "cannot open %s: %s", s->path, strerror(errno));
    int64_t valid;
    int rc = scan_segment(s, fd, (uint64_t)st.st_size, &valid, err);
    if (rc == 0 && valid < 0) {
        BS_LOG(BS_LOG_ERROR, "log", "topic %s/%s: sealed segment %s has no valid header; skipped",
               t->tenant, t->name, s->path);
        valid = BS__SEG_HDR;
    } else if (rc == 0 && (uint64_t)valid < (uint64_t)st.st_size) {
        /* Sealed segments were fsynced whole: this is damage, not a torn write. */
        BS_LOG(BS_LOG_ERROR, "log",
               "topic %s/%s: sealed segment %s is damaged at position %lld of %lld; "
               "records from offset %lld on in it are lost",
               t->tenant, t->name, s->path, (long long)valid, (long long)st.st_size,
               (long long)s->end);
        if (ftruncate(fd, valid) != 0 || fdatasync(fd) != 0)
            rc = bs_err_set(err, BS_EIO, "cannot truncate %s: %s", s->path, strerror(errno));
    }
    close(fd);
    if (rc != 0)
        return rc;
    s->size = (uint64_t)valid;
    bs__seg_write_index(t, s);
    return 0;
}

int bs__topic_recover(bs__topic_t *t, bs_err_t *err)
{
    int64_t *bases = NULL;
    int n = 0;
    if (list_segments(t->dir, &bases, &n) != 0)
        return bs_err_set(err, BS_EIO, "cannot list %s: %s", t->dir, strerror(errno));
    int rc = 0;
    if (n == 0) {
        bs__seg_t *s = bs__seg_create(t->dir, 0, err);
        if (!s || bs__topic_push_seg(t, s) != 0) {
            bs__seg_unref(s);
            free(bases);
            return s ? bs_err_set(err, BS_ENOMEM, "out of memory") : (err ? err->code : BS_EIO);
        }
    }
    for (int i = 0; i < n && rc == 0; i++) {
        bs__seg_t *s = bs__seg_new(t->dir, bases[i]);
        if (!s || bs__topic_push_seg(t, s) != 0) {
            bs__seg_unref(s);
            rc = bs_err_set(err, BS_ENOMEM, "out of memory");
            break;
        }
        rc = i + 1 < n ? recover_sealed(t, s, err) : recover_active(t, s, err);
        if (rc == 0 && i > 0 && s->base != t->segs[i - 1]->end)
            BS_LOG(BS_LOG_ERROR, "log",
                   "topic %s/%s: segment %s starts at %lld, the one before ends "
                   "at %lld",
                   t->tenant, t->name, s->path, (long long)s->base, (long long)t->segs[i - 1]->end);
    }
    free(bases);
    if (rc != 0)
        return rc;
    bs__seg_t *a = t->segs[t->nsegs - 1];
    if (a->fd < 0) {
        a->fd = open(a->path, O_RDWR | O_CLOEXEC);
        if (a->fd < 0)
            return bs_err_set(err, BS_EIO, "cannot open %s: %s", a->path, strerror(errno));
    }
    t->next_offset = a->end;
    t->bytes = 0;
    t->last_time = 0;
    for (int i = 0; i < t->nsegs; i++) {
        t->bytes += (int64_t)t->segs[i]->size;
        if (t->segs[i]->end > t->segs[i]->base)
            t->last_time = t->segs[i]->last_time;
    }
    t->w.next = a->end;
    t->w.time = t->last_time;
    t->w.pos = a->size;
    t->w.idx_pos = a->nidx ? a->idx[a->nidx - 1].pos : 0;
    t->w.active = a;
    return 0;
}

/* ---- reading ---------------------------------------------------------------------------- */

typedef struct {
    int fd;
    uint8_t *buf;
    size_t cap, len;
    uint64_t at; /* file position of buf[0] */
} reader_t;

/* Points *p at file bytes [pos, pos + want) (want <= limit - pos). 0, or -1 (I/O, EOF). */
static int reader_get(reader_t *r, uint64_t pos, size_t want, uint64_t limit, const uint8_t **p)
{
    if (pos >= r->at && pos + want <= r->at + r->len) {
        *p = r->buf + (pos - r->at);
        return 0;
    }
    if (want > r->cap) {
        uint8_t *nb = realloc(r->buf, want);
        if (!nb)
            return -1;
        r->buf = nb;
        r->cap = want;
    }
    size_t n = r->cap;
    if (n > limit - pos)
        n = (size_t)(limit - pos);
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(r->fd, r->buf + got, n - got, (off_t)(pos + got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    r->at = pos;
    r->len = got;
    if (got < want)
        return -1;
    *p = r->buf;
    return 0;
}

/* Reads the record at pos of segment s (limit: the segment's published size). */
static int reader_record(reader_t *r, const bs__seg_t *s, uint64_t pos, uint64_t limit,
                         bs__rec_view_t *v, bs_err_t *err)
{
    const uint8_t *p;
    size_t need = BS__REC_HDR;
    for (int tries = 0; tries < 2; tries++) {
        if (pos + need > limit || reader_get(r, pos, need, limit, &p) != 0)
            break;
        int rc = bs__rec_parse(p, (size_t)(r->at + r->len - pos), v, &need);
        if (rc == 1)
            return 0;
        if (rc < 0)
            break;
    }
    return bs_err_set(err, BS_EIO, "segment %s: unreadable record at position %llu", s->path,
                      (unsigned long long)pos);
}

/* The last index entry at or before offset (or time, by_time: the last one with time < t). */
static void idx_seek(const bs__seg_t *s, int64_t key, int by_time, int64_t *off, uint64_t *pos)
{
    int lo = 0, hi = s->nidx - 1, best = -1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int ok = by_time ? s->idx[mid].time_ms < key : s->idx[mid].offset <= key;
        if (ok) {
            best = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    if (best < 0) {
        *off = s->base;
        *pos = BS__SEG_HDR;
    } else {
        *off = s->idx[best].offset;
        *pos = s->idx[best].pos;
    }
}

/* Index of the last segment with base <= offset, or 0. Under t->mu. */
static int seg_find(const bs__topic_t *t, int64_t offset)
{
    int lo = 0, hi = t->nsegs - 1, best = 0;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (t->segs[mid]->base <= offset) {
            best = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return best;
}

static int seg_open_fd(bs__seg_t *s, bs_err_t *err)
{
    if (s->fd >= 0)
        return 0;
    s->fd = open(s->path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0)
        return bs_err_set(err, BS_EIO, "cannot open %s: %s", s->path, strerror(errno));
    return 0;
}

int bs__topic_read(bs__topic_t *t, int64_t from, int max, size_t max_bytes, bs_log_record_cb cb,
                   void *ud, int64_t *next, bs_err_t *err)
{
    reader_t r = {.fd = -1, .cap = 64 << 10};
    if (max_bytes && max_bytes < r.cap)
        r.cap = max_bytes < 4096 ? 4096 : max_bytes;
    r.buf = malloc(r.cap);
    if (!r.buf)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    int64_t cur = from;
    int count = 0, rc = 0, done = 0;
    size_t bytes = 0;
    char id[BS__ID_MAX + 1], key[BS__KEY_MAX + 1];
    pthread_mutex_lock(&t->mu);
    while (!done) {
        if (cur < t->segs[0]->base)
            cur = t->segs[0]->base;
        if (cur >= t->next_offset)
            break;
        int si = seg_find(t, cur);
        bs__seg_t *s = t->segs[si];
        if (cur >= s->end) { /* a gap after a damaged segment */
            if (si + 1 >= t->nsegs)
                break;
            cur = t->segs[si + 1]->base;
            continue;
        }
        if (seg_open_fd(s, err) != 0) {
            rc = err ? err->code : BS_EIO;
            break;
        }
        int64_t off;
        uint64_t pos;
        idx_seek(s, cur, 0, &off, &pos);
        int64_t send = s->end;
        uint64_t limit = s->size;
        bs__seg_ref(s);
        pthread_mutex_unlock(&t->mu);
        r.fd = s->fd;
        r.len = 0;
        while (off < send) {
            bs__rec_view_t v;
            if (reader_record(&r, s, pos, limit, &v, err) != 0) {
                rc = BS_EIO;
                break;
            }
            if (v.offset != off) {
                rc = bs_err_set(err, BS_EIO,
                                "segment %s: record at position %llu has offset %lld, "
                                "expected %lld",
                                s->path, (unsigned long long)pos, (long long)v.offset,
                                (long long)off);
                break;
            }
            pos += v.frame_len;
            off++;
            if (v.offset < cur)
                continue;
            memcpy(id, v.id, v.id_len);
            id[v.id_len] = '\0';
            memcpy(key, v.key, v.key_len);
            key[v.key_len] = '\0';
            bs_log_record_t rec = {v.offset, v.time_ms, id, key, v.data, v.len};
            count++;
            bytes += v.len;
            cur = v.offset + 1;
            if (cb(&rec, ud) || count >= max || (max_bytes && bytes >= max_bytes)) {
                done = 1;
                break;
            }
        }
        bs__seg_unref(s);
        pthread_mutex_lock(&t->mu);
        if (rc != 0)
            break;
        if (!done && off >= send && cur < off)
            cur = off;
    }
    pthread_mutex_unlock(&t->mu);
    free(r.buf);
    if (rc != 0)
        return rc;
    if (next)
        *next = cur;
    return count;
}

int bs__topic_offset_at(bs__topic_t *t, int64_t time_ms, int64_t *offset, bs_err_t *err)
{
    pthread_mutex_lock(&t->mu);
    bs__seg_t *s = NULL;
    for (int i = 0; i < t->nsegs; i++)
        if (t->segs[i]->end > t->segs[i]->base && t->segs[i]->last_time >= time_ms) {
            s = t->segs[i];
            break;
        }
    if (!s || s->first_time >= time_ms) {
        *offset = s ? s->base : t->next_offset;
        pthread_mutex_unlock(&t->mu);
        return 0;
    }
    if (seg_open_fd(s, err) != 0) {
        pthread_mutex_unlock(&t->mu);
        return err ? err->code : BS_EIO;
    }
    int64_t off;
    uint64_t pos;
    idx_seek(s, time_ms, 1, &off, &pos);
    int64_t send = s->end;
    uint64_t limit = s->size;
    bs__seg_ref(s);
    pthread_mutex_unlock(&t->mu);
    reader_t r = {.fd = s->fd, .cap = 64 << 10};
    r.buf = malloc(r.cap);
    int rc = r.buf ? 0 : bs_err_set(err, BS_ENOMEM, "out of memory");
    *offset = send;
    while (rc == 0 && off < send) {
        bs__rec_view_t v;
        if (reader_record(&r, s, pos, limit, &v, err) != 0) {
            rc = BS_EIO;
            break;
        }
        if (v.time_ms >= time_ms) {
            *offset = v.offset;
            break;
        }
        pos += v.frame_len;
        off++;
    }
    free(r.buf);
    bs__seg_unref(s);
    return rc;
}

/* ---- the topic's config file (topic.json) ----------------------------------------------- */

bs_log_topic_config_t bs__topic_config_norm(const bs_log_topic_config_t *c)
{
    bs_log_topic_config_t n = *c;
    if (n.max_record_bytes == 0)
        n.max_record_bytes = 1 << 20;
    if (n.segment_bytes == 0)
        n.segment_bytes = 64 << 20;
    return n;
}

int bs__topic_config_check(const bs_log_topic_config_t *c, bs_err_t *err)
{
    const int64_t day = 86400000;
    if (c->retention_ms < 0)
        return bs_err_setf(err, BS_EINVAL, "retention_ms", "retention must be >= 0, got %lld",
                           (long long)c->retention_ms);
    if (c->retention_bytes < 0)
        return bs_err_setf(err, BS_EINVAL, "retention_bytes",
                           "retention_bytes must be >= 0, got %lld", (long long)c->retention_bytes);
    if (c->sync_interval_ms < 0 || c->sync_interval_ms > day)
        return bs_err_setf(err, BS_EINVAL, "sync_interval_ms",
                           "sync interval must be 0 to %lld ms, got %lld", (long long)day,
                           (long long)c->sync_interval_ms);
    if (c->dedup_window_ms < 0 || c->dedup_window_ms > 30 * day)
        return bs_err_setf(err, BS_EINVAL, "dedup_window_ms",
                           "dedup window must be 0 to %lld ms, got %lld", (long long)(30 * day),
                           (long long)c->dedup_window_ms);
    if (c->max_record_bytes < 0 || c->max_record_bytes > BS__RECORD_MAX)
        return bs_err_setf(err, BS_EINVAL, "max_record_bytes",
                           "max_record_bytes must be 0 to %d, got %lld", BS__RECORD_MAX,
                           (long long)c->max_record_bytes);
    if (c->segment_bytes != 0 && (c->segment_bytes < 512 || c->segment_bytes > (1 << 30)))
        return bs_err_setf(err, BS_EINVAL, "segment_bytes",
                           "segment_bytes must be 0 or 512 to %d, got %lld", 1 << 30,
                           (long long)c->segment_bytes);
    return 0;
}

static const char *const cfg_keys[] = {"retention_ms",    "retention_bytes",  "sync_interval_ms",
                                       "dedup_window_ms", "max_record_bytes", "segment_bytes"};

static int64_t *cfg_field(bs_log_topic_config_t *c, int i)
{
    int64_t *f[] = {&c->retention_ms,    &c->retention_bytes,  &c->sync_interval_ms,
                    &c->dedup_window_ms, &c->max_record_bytes, &c->segment_bytes};
    return f[i];
}

int bs__topic_config_save(const char *dir, const bs_log_topic_config_t *c, bs_err_t *err)
{
    bs_log_topic_config_t v = *c;
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "version");
    bs_jw_int(&b, 1);
    for (int i = 0; i < 6; i++) {
        bs_jw_key(&b, cfg_keys[i]);
        bs_jw_int(&b, *cfg_field(&v, i));
    }
    bs_jw_obj_end(&b);
    bs_buf_putc(&b, '\n');
    char path[1100], tmp[1110];
    snprintf(path, sizeof path, "%s/topic.json", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int rc = 0;
    int fd = b.oom ? -1 : open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write_all(fd, b.data, b.len, 0) != 0 || fsync(fd) != 0 ||
        rename(tmp, path) != 0 || bs__fsync_dir(dir) != 0)
        rc = bs_err_set(err, BS_EIO, "cannot write %s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    bs_buf_free(&b);
    return rc;
}

int bs__topic_config_load(const char *dir, bs_log_topic_config_t *c, bs_err_t *err)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/topic.json", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return bs_err_set(err, BS_EIO, "cannot open %s: %s", path, strerror(errno));
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n <= 0 || n == (ssize_t)sizeof buf)
        return bs_err_set(err, BS_EIO, "cannot read %s", path);
    bs_err_t jerr;
    cJSON *j = bs_json_parse(buf, (size_t)n, 8, &jerr);
    if (!j)
        return bs_err_set(err, BS_EIO, "%s: %s", path, jerr.msg);
    memset(c, 0, sizeof *c);
    int rc = 0;
    for (int i = 0; i < 6 && rc == 0; i++)
        if (bs_json_get_int(j, cfg_keys[i], 0, 0, INT64_MAX, cfg_field(c, i), &jerr) < 0)
            rc = bs_err_set(err, BS_EIO, "%s: %s", path, jerr.msg);
    cJSON_Delete(j);
    if (rc == 0 && bs__topic_config_check(c, &jerr) != 0)
        rc = bs_err_set(err, BS_EIO, "%s: %s", path, jerr.msg);
    return rc;
}
