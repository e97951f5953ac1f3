/*
 * The artifact blob store (see blobs.h): the files backend, the metadata
 * backend with its local cache, and the collector of both.
 *
 * Layout on disk, the same for the files backend's store and the metadata
 * backend's cache: <dir>/<first two hex digits>/<sha256>, written as
 * <sha256>.tmp.<16 random hex digits> and renamed into place.
 *
 * Metadata tables (migration 8): blobs(sha256, size, chunks, complete,
 * created_at, touched_at) and blob_chunks(sha256, seq, data); touched_at (ms)
 * is the grace clock, restarted by every put, every chunk written and
 * bs_blobs_touch. A blob is readable only once complete = 1, which the last
 * short transaction of a put sets after checking that every chunk is there.
 */
#include "store/blobs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/log.h"
#include "base/time.h"

struct bs_blobs {
    bs_blobs_kind_t kind;
    bs_meta_t *meta;
    char dir[1024];
    _Atomic uint64_t cache_hits, cache_misses, cache_discards, fetched_bytes;
};

int bs_blobs_parse_kind(const char *name, bs_blobs_kind_t *kind, bs_err_t *err)
{
    if (strcmp(name, "files") == 0)
        *kind = BS_BLOBS_FILES;
    else if (strcmp(name, "metadata") == 0)
        *kind = BS_BLOBS_METADATA;
    else
        return bs_err_setf(err, BS_EINVAL, "artifact_store",
                           "artifact_store must be files or metadata, got '%.64s'", name);
    return 0;
}

static int mkdirs(const char *path)
{
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

bs_blobs_t *bs_blobs_new(bs_blobs_kind_t kind, bs_meta_t *meta, const char *dir, bs_err_t *err)
{
    bs_blobs_t *b = calloc(1, sizeof *b);
    if (!b) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    b->kind = kind;
    b->meta = meta;
    snprintf(b->dir, sizeof b->dir, "%s", dir);
    if (mkdirs(b->dir) != 0) {
        bs_err_set(err, BS_EIO, "cannot create %s: %s", b->dir, strerror(errno));
        free(b);
        return NULL;
    }
    return b;
}

void bs_blobs_free(bs_blobs_t *b) { free(b); }

bs_blobs_kind_t bs_blobs_kind(const bs_blobs_t *b) { return b->kind; }

const char *bs_blobs_kind_name(const bs_blobs_t *b)
{
    return b->kind == BS_BLOBS_METADATA ? "metadata" : "files";
}

void bs_blobs_stats(const bs_blobs_t *b, bs_blobs_stats_t *out)
{
    out->cache_hits = atomic_load(&b->cache_hits);
    out->cache_misses = atomic_load(&b->cache_misses);
    out->cache_discards = atomic_load(&b->cache_discards);
    out->fetched_bytes = atomic_load(&b->fetched_bytes);
}

/* ---- files: the store of the files backend, the cache of the metadata backend ------------ */

static void file_path(const bs_blobs_t *b, const char *sha, char *path, size_t n)
{
    snprintf(path, n, "%s/%.2s/%.64s", b->dir, sha, sha);
}

/* Writes bytes to <dir>/ab/<sha256> via a temporary file and rename, so a reader never
 * sees a partial blob and a crash leaves either nothing or the whole file. */
static int write_file(const bs_blobs_t *b, const char *sha, const void *bytes, size_t len,
                      bs_err_t *err)
{
    char dir[1200], path[1300], tmp[1400];
    snprintf(dir, sizeof dir, "%s/%.2s", b->dir, sha);
    snprintf(path, sizeof path, "%s/%.64s", dir, sha);
    struct stat st;
    /* Already there (another version has the same bytes): restart its grace period, so
     * the collector leaves it alone until this version's row is committed. */
    if (stat(path, &st) == 0 && (size_t)st.st_size == len && utimensat(AT_FDCWD, path, NULL, 0) == 0)
        return 0;
    if (mkdirs(dir) != 0)
        return bs_err_set(err, BS_EIO, "cannot create %s: %s", dir, strerror(errno));
    char rnd[17];
    bs_random_hex(rnd, 8);
    snprintf(tmp, sizeof tmp, "%s.tmp.%s", path, rnd);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return bs_err_set(err, BS_EIO, "cannot write artifact: %s", strerror(errno));
    const char *p = bytes;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return bs_err_set(err, BS_EIO, "cannot write artifact: %s", strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return bs_err_set(err, BS_EIO, "cannot store artifact: %s", strerror(e));
    }
    return 0;
}

/* Reads exactly size bytes of path into a new buffer. 0, or -errno (ENOENT: no file;
 * EFBIG: the file is not size bytes; ENOMEM). */
static int read_file(const char *path, size_t size, int exact, void **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (exact && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size != size)) {
        close(fd);
        return -EFBIG;
    }
    char *buf = malloc(size ? size : 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != size) {
        free(buf);
        return -EFBIG;
    }
    *out = buf;
    return 0;
}

static int verified(const void *bytes, size_t len, const char *sha)
{
    char got[65];
    bs_sha256_hex(bytes, len, got);
    return strncmp(got, sha, 64) == 0;
}

static int files_get(bs_blobs_t *b, const char *sha, size_t size, void **bytes, bs_err_t *err)
{
    char path[1300];
    file_path(b, sha, path, sizeof path);
    int rc = read_file(path, size, 0, bytes);
    if (rc == -ENOMEM)
        return bs_err_set(err, BS_ENOMEM, "out of memory reading artifact %.64s", sha);
    if (rc == -EFBIG)
        return bs_err_set(err, BS_EIO, "artifact %.64s is truncated", sha);
    if (rc)
        return bs_err_set(err, BS_EIO, "artifact %.64s is missing: %s", sha, strerror(-rc));
    if (!verified(*bytes, size, sha)) {
        free(*bytes);
        *bytes = NULL;
        return bs_err_set(err, BS_EIO, "artifact %.64s failed its checksum", sha);
    }
    return 0;
}

/* ---- metadata: chunks in the store -------------------------------------------------------- */

typedef struct {
    int64_t size, chunks, complete;
    int found;
} blob_row_t;

static int blob_row(const bs_meta_row_t *row, void *ud)
{
    blob_row_t *s = ud;
    s->size = bs_meta_row_int(row, 0);
    s->chunks = bs_meta_row_int(row, 1);
    s->complete = bs_meta_row_int(row, 2);
    s->found = 1;
    return 1;
}

static int md_state(bs_blobs_t *b, const char *sha, blob_row_t *s, bs_err_t *err)
{
    memset(s, 0, sizeof *s);
    bs_val_t a = BS_TXT(sha);
    return bs_meta_query(b->meta, "SELECT size, chunks, complete FROM blobs WHERE sha256 = ?", &a, 1,
                         blob_row, s, err);
}

/* One chunk (or, for seq == n, none: the row of an empty blob), with the blob's row
 * inserted or its grace clock restarted, in its own transaction unless in_tx. */
static int md_write_chunk(bs_blobs_t *b, const char *sha, const char *bytes, size_t len, int64_t n,
                          int64_t seq, int in_tx, bs_err_t *err)
{
    int rc = in_tx ? 0 : bs_meta_tx_begin(b->meta, err);
    if (rc)
        return rc;
    int64_t now = bs_time_wall_ms();
    bs_val_t ra[] = {BS_TXT(sha), BS_INT((int64_t)len), BS_INT(n), BS_INT(now), BS_INT(now)};
    rc = bs_meta_exec(b->meta,
                      "INSERT INTO blobs (sha256, size, chunks, complete, created_at, touched_at)"
                      " VALUES (?,?,?,0,?,?) ON CONFLICT (sha256) DO UPDATE SET"
                      " touched_at = excluded.touched_at",
                      ra, 5, NULL, err);
    if (!rc && seq < n) {
        size_t off = (size_t)seq * BS_BLOBS_CHUNK;
        size_t clen = len - off < BS_BLOBS_CHUNK ? len - off : BS_BLOBS_CHUNK;
        /* DO UPDATE, not NOTHING: the chunk left by a put that died is the same bytes, but
         * rewriting it costs one chunk and never keeps a stale one. */
        bs_val_t ca[] = {BS_TXT(sha), BS_INT(seq), BS_BLOB(bytes + off, clen)};
        rc = bs_meta_exec(b->meta,
                          "INSERT INTO blob_chunks (sha256, seq, data) VALUES (?,?,?)"
                          " ON CONFLICT (sha256, seq) DO UPDATE SET data = excluded.data",
                          ca, 3, NULL, err);
    }
    if (in_tx)
        return rc;
    if (rc) {
        bs_meta_tx_rollback(b->meta);
        return rc;
    }
    return bs_meta_tx_commit(b->meta, err);
}

typedef struct {
    int64_t count, bytes;
} chunk_sum_t;

static int chunk_sum_row(const bs_meta_row_t *row, void *ud)
{
    chunk_sum_t *s = ud;
    s->count = bs_meta_row_int(row, 0);
    s->bytes = bs_meta_row_int(row, 1);
    return 1;
}

/* Marks the blob complete once every chunk is there. 1 if chunks were missing (a
 * collector took the unfinished blob between two chunks), 0, or an error. */
static int md_finish(bs_blobs_t *b, const char *sha, size_t len, int64_t n, int in_tx, bs_err_t *err)
{
    int rc = in_tx ? 0 : bs_meta_tx_begin(b->meta, err);
    if (rc)
        return rc;
    chunk_sum_t s = {0, 0};
    bs_val_t qa[] = {BS_TXT(sha), BS_INT(n)};
    rc = bs_meta_query(b->meta,
                       "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM blob_chunks"
                       " WHERE sha256 = ? AND seq < ?",
                       qa, 2, chunk_sum_row, &s, err);
    int lost = 0, changed = 0;
    if (!rc && (s.count != n || s.bytes != (int64_t)len))
        lost = 1;
    if (!rc && !lost)
        rc = bs_meta_exec(b->meta, "DELETE FROM blob_chunks WHERE sha256 = ? AND seq >= ?", qa, 2,
                          NULL, err);
    if (!rc && !lost) {
        bs_val_t ua[] = {BS_INT(bs_time_wall_ms()), BS_TXT(sha)};
        rc = bs_meta_exec(b->meta, "UPDATE blobs SET complete = 1, touched_at = ? WHERE sha256 = ?",
                          ua, 2, &changed, err);
        if (!rc && changed != 1)
            lost = 1;
    }
    if (in_tx)
        return rc ? rc : lost;
    if (rc || lost) {
        bs_meta_tx_rollback(b->meta);
        return rc ? rc : lost;
    }
    rc = bs_meta_tx_commit(b->meta, err);
    return rc;
}

static int md_write(bs_blobs_t *b, const char *sha, const void *bytes, size_t len, int in_tx,
                    bs_err_t *err)
{
    int64_t n = (int64_t)((len + BS_BLOBS_CHUNK - 1) / BS_BLOBS_CHUNK);
    for (int attempt = 0; attempt < 2; attempt++) {
        int rc = 0;
        for (int64_t seq = 0; !rc && (seq < n || (n == 0 && seq == 0)); seq++)
            rc = md_write_chunk(b, sha, bytes, len, n, seq, in_tx, err);
        if (!rc)
            rc = md_finish(b, sha, len, n, in_tx, err);
        if (rc <= 0)
            return rc;
        BS_LOG(BS_LOG_WARN, "blobs", "artifact %.64s lost chunks while being written; writing it again",
               sha);
    }
    return bs_err_set(err, BS_EIO, "artifact %.64s lost chunks twice while being written", sha);
}

/* The cache file, written best effort: a failure only costs a fetch next time. */
static void cache_put(bs_blobs_t *b, const char *sha, const void *bytes, size_t len)
{
    bs_err_t err;
    bs_err_clear(&err);
    if (write_file(b, sha, bytes, len, &err) != 0)
        BS_LOG(BS_LOG_WARN, "blobs", "cannot cache artifact %.64s: %s", sha, err.msg);
}

static int md_put(bs_blobs_t *b, const char *sha, const void *bytes, size_t len, bs_err_t *err)
{
    blob_row_t s;
    int rc = md_state(b, sha, &s, err);
    if (rc)
        return rc;
    if (s.found && s.complete == 1 && s.size == (int64_t)len) {
        int changed = 0;
        bs_val_t a[] = {BS_INT(bs_time_wall_ms()), BS_TXT(sha)};
        rc = bs_meta_exec(b->meta, "UPDATE blobs SET touched_at = ? WHERE sha256 = ? AND complete = 1",
                          a, 2, &changed, err);
        if (rc)
            return rc;
        if (changed == 1) { /* else collected meanwhile: write it again below */
            cache_put(b, sha, bytes, len);
            return 0;
        }
    }
    if ((rc = md_write(b, sha, bytes, len, 0, err)))
        return rc;
    cache_put(b, sha, bytes, len);
    return 0;
}

static int md_ensure(bs_blobs_t *b, const char *sha, const void *bytes, size_t len, bs_err_t *err)
{
    blob_row_t s;
    int rc = md_state(b, sha, &s, err);
    if (rc)
        return rc;
    if (s.found && s.complete == 1)
        return 0;
    return md_write(b, sha, bytes, len, 1, err);
}

typedef struct {
    char *buf;
    size_t size, off;
    int found, overflow;
} chunk_read_t;

static int chunk_row(const bs_meta_row_t *row, void *ud)
{
    chunk_read_t *c = ud;
    size_t n = 0;
    const void *p = bs_meta_row_blob(row, 0, &n);
    c->found = 1;
    if (n > c->size - c->off) {
        c->overflow = 1;
        return 1;
    }
    if (n)
        memcpy(c->buf + c->off, p, n);
    c->off += n;
    return 1;
}

static int md_fetch(bs_blobs_t *b, const char *sha, size_t size, void **bytes, bs_err_t *err)
{
    blob_row_t s;
    int rc = md_state(b, sha, &s, err);
    if (rc)
        return rc;
    if (!s.found || s.complete != 1)
        return bs_err_set(err, BS_EIO, "artifact %.64s is missing from the metadata store", sha);
    if (s.size != (int64_t)size)
        return bs_err_set(err, BS_EIO, "artifact %.64s is %lld bytes in the metadata store, not %zu",
                          sha, (long long)s.size, size);
    chunk_read_t c = {.buf = malloc(size ? size : 1), .size = size};
    if (!c.buf)
        return bs_err_set(err, BS_ENOMEM, "out of memory reading artifact %.64s", sha);
    /* One chunk per query: a client library that buffers a whole result (libpq) then
     * holds one chunk besides the blob, never a second copy of it. */
    int64_t seq = 0;
    for (; !rc && seq < s.chunks; seq++) {
        bs_val_t a[] = {BS_TXT(sha), BS_INT(seq)};
        c.found = 0;
        rc = bs_meta_query(b->meta, "SELECT data FROM blob_chunks WHERE sha256 = ? AND seq = ?", a,
                           2, chunk_row, &c, err);
        if (!rc && (!c.found || c.overflow))
            break;
    }
    if (!rc && (seq != s.chunks || c.off != size || c.overflow))
        rc = bs_err_set(err, BS_EIO,
                        "artifact %.64s is truncated in the metadata store (%zu of %zu bytes)", sha,
                        c.off, size);
    if (!rc && !verified(c.buf, size, sha))
        rc = bs_err_set(err, BS_EIO, "artifact %.64s failed its checksum in the metadata store", sha);
    if (rc) {
        free(c.buf);
        return rc;
    }
    atomic_fetch_add(&b->fetched_bytes, size);
    *bytes = c.buf;
    return 0;
}

static int md_get(bs_blobs_t *b, const char *sha, size_t size, void **bytes, bs_err_t *err)
{
    char path[1300];
    file_path(b, sha, path, sizeof path);
    void *buf = NULL;
    int rc = read_file(path, size, 1, &buf);
    if (rc == 0 && verified(buf, size, sha)) {
        atomic_fetch_add(&b->cache_hits, 1);
        *bytes = buf;
        return 0;
    }
    free(buf); /* before the fetch: never two copies of a big artifact at once */
    if (rc != -ENOENT && rc != -ENOMEM) {
        /* There but wrong: truncated, overwritten, bit rot. The store is the truth. */
        BS_LOG(BS_LOG_WARN, "blobs", "cached artifact %.64s failed its %s; fetching it again", sha,
               rc ? "size check" : "checksum");
        unlink(path);
        atomic_fetch_add(&b->cache_discards, 1);
    }
    atomic_fetch_add(&b->cache_misses, 1);
    if ((rc = md_fetch(b, sha, size, bytes, err)))
        return rc;
    cache_put(b, sha, *bytes, size);
    return 0;
}

/* ---- the interface ------------------------------------------------------------------------ */

int bs_blobs_put(bs_blobs_t *b, const char *sha, const void *bytes, size_t len, bs_err_t *err)
{
    if (b->kind == BS_BLOBS_METADATA)
        return md_put(b, sha, bytes, len, err);
    return write_file(b, sha, bytes, len, err);
}

int bs_blobs_ensure(bs_blobs_t *b, const char *sha, const void *bytes, size_t len, bs_err_t *err)
{
    if (b->kind == BS_BLOBS_METADATA)
        return md_ensure(b, sha, bytes, len, err);
    /* The collector removes files only inside a transaction: checked under the same lock,
     * the file is either still here or gone for good, and then written again. */
    char path[1300];
    struct stat st;
    file_path(b, sha, path, sizeof path);
    if (stat(path, &st) == 0)
        return 0;
    return write_file(b, sha, bytes, len, err);
}

int bs_blobs_get(bs_blobs_t *b, const char *sha, size_t size, void **bytes, bs_err_t *err)
{
    *bytes = NULL;
    if (b->kind == BS_BLOBS_METADATA)
        return md_get(b, sha, size, bytes, err);
    return files_get(b, sha, size, bytes, err);
}

void bs_blobs_touch(bs_blobs_t *b, const char *sha)
{
    char path[1300];
    file_path(b, sha, path, sizeof path);
    utimensat(AT_FDCWD, path, NULL, 0);
    if (b->kind == BS_BLOBS_METADATA) {
        bs_val_t a[] = {BS_INT(bs_time_wall_ms()), BS_TXT(sha)};
        bs_err_t err;
        bs_err_clear(&err);
        if (bs_meta_exec(b->meta, "UPDATE blobs SET touched_at = ? WHERE sha256 = ?", a, 2, NULL,
                         &err) != 0)
            BS_LOG(BS_LOG_WARN, "blobs", "cannot restart the grace period of %.64s: %s", sha,
                   err.msg);
    }
}

/* ---- collection --------------------------------------------------------------------------- */

typedef struct {
    char path[1300];
    char sha[65];
} candidate_t;

typedef struct {
    char (*sha)[65];
    size_t n, cap;
    int oom;
} sha_set_t;

static int sha_row(const bs_meta_row_t *row, void *ud)
{
    sha_set_t *s = ud;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        char(*v)[65] = realloc(s->sha, cap * sizeof *v);
        if (!v) {
            s->oom = 1;
            return 1;
        }
        s->sha = v;
        s->cap = cap;
    }
    snprintf(s->sha[s->n++], 65, "%s", bs_meta_row_text(row, 0));
    return 0;
}

static int cmp_sha(const void *a, const void *b) { return strcmp(a, b); }

/* Reads refs_sql into a sorted set. */
static int load_refs(bs_blobs_t *b, const char *refs_sql, sha_set_t *refs, bs_err_t *err)
{
    int rc = bs_meta_query(b->meta, refs_sql, NULL, 0, sha_row, refs, err);
    if (!rc && refs->oom)
        rc = bs_err_set(err, BS_ENOMEM, "out of memory listing referenced artifacts");
    if (!rc && refs->n)
        qsort(refs->sha, refs->n, sizeof *refs->sha, cmp_sha);
    return rc;
}

static int referenced(const sha_set_t *refs, const char *sha)
{
    return sha[0] && refs->n && bsearch(sha, refs->sha, refs->n, sizeof *refs->sha, cmp_sha);
}

static int is_hex64(const char *s, size_t n)
{
    if (n != 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* Files under dir not modified since cutoff: blobs and temporary files of ours. */
static void scan(const char *dir, time_t cutoff, candidate_t **out, size_t *n_out)
{
    size_t n = 0, cap = 0;
    candidate_t *c = NULL;
    *out = NULL;
    *n_out = 0;
    DIR *top = opendir(dir);
    if (!top)
        return;
    struct dirent *de;
    while ((de = readdir(top))) {
        if (strlen(de->d_name) != 2 || de->d_name[0] == '.')
            continue;
        char sub[1200];
        snprintf(sub, sizeof sub, "%s/%s", dir, de->d_name);
        DIR *d = opendir(sub);
        if (!d)
            continue;
        struct dirent *fe;
        while ((fe = readdir(d))) {
            const char *name = fe->d_name;
            const char *tmp = strstr(name, ".tmp.");
            size_t shalen = tmp ? (size_t)(tmp - name) : strlen(name);
            if (!is_hex64(name, shalen))
                continue; /* not ours */
            candidate_t cand;
            snprintf(cand.path, sizeof cand.path, "%s/%s", sub, name);
            struct stat st;
            if (stat(cand.path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_mtime > cutoff)
                continue;
            /* A temporary file is never referenced: an empty sha cannot match a row. */
            if (tmp)
                cand.sha[0] = '\0';
            else
                snprintf(cand.sha, sizeof cand.sha, "%.64s", name);
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 64;
                candidate_t *v = realloc(c, nc * sizeof *v);
                if (!v)
                    break;
                c = v;
                cap = nc;
            }
            c[n++] = cand;
        }
        closedir(d);
    }
    closedir(top);
    *out = c;
    *n_out = n;
}

/* Unlinks the unreferenced candidates still older than cutoff. */
static int unlink_unreferenced(const candidate_t *c, size_t n, const sha_set_t *refs, time_t cutoff)
{
    int removed = 0;
    for (size_t i = 0; i < n; i++) {
        if (referenced(refs, c[i].sha))
            continue;
        /* Touched since the scan (re-uploaded, or its model just deleted): not yet. */
        struct stat st;
        if (stat(c[i].path, &st) != 0 || st.st_mtime > cutoff)
            continue;
        if (unlink(c[i].path) == 0)
            removed++;
        else
            BS_LOG(BS_LOG_WARN, "blobs", "cannot remove artifact %s: %s", c[i].path,
                   strerror(errno));
    }
    return removed;
}

/* Removes the files under b->dir older than grace_s that no version references. locked:
 * decide and unlink inside a transaction (the files backend's artifacts, see blobs.h);
 * else without one (the metadata backend's cache: a file evicted a moment too early costs
 * a fetch, nothing more). Returns the count removed or an error. */
static int collect_files(bs_blobs_t *b, int64_t grace_s, const char *refs_sql, int locked,
                         bs_err_t *err)
{
    time_t cutoff = time(NULL) - (time_t)grace_s;
    candidate_t *c = NULL;
    size_t n = 0;
    scan(b->dir, cutoff, &c, &n);
    if (!n) {
        free(c);
        return 0;
    }
    int rc = locked ? bs_meta_tx_begin(b->meta, err) : 0;
    if (rc) {
        free(c);
        return rc;
    }
    sha_set_t refs = {0};
    int removed = 0;
    rc = load_refs(b, refs_sql, &refs, err);
    if (!rc)
        removed = unlink_unreferenced(c, n, &refs, cutoff);
    if (locked)
        bs_meta_tx_rollback(b->meta); /* read-only: the transaction only held the store's lock */
    free(refs.sha);
    free(c);
    return rc ? rc : removed;
}

static int files_collect(bs_blobs_t *b, int64_t grace_s, const char *refs_sql, bs_err_t *err)
{
    int removed = collect_files(b, grace_s, refs_sql, 1, err);
    if (removed > 0)
        BS_LOG(BS_LOG_INFO, "blobs", "removed %d unreferenced artifact file(s)", removed);
    return removed;
}

/* The metadata backend: rows whose grace clock ran out and that nothing references,
 * complete or not, deleted with their chunks in one transaction. */
static int md_collect(bs_blobs_t *b, int64_t grace_s, const char *refs_sql, bs_err_t *err)
{
    int64_t cutoff = bs_time_wall_ms() - grace_s * 1000;
    sha_set_t refs = {0}, old = {0};
    int rc = bs_meta_tx_begin(b->meta, err);
    if (rc)
        return rc;
    bs_val_t ca = BS_INT(cutoff);
    rc = bs_meta_query(b->meta, "SELECT sha256 FROM blobs WHERE touched_at < ?", &ca, 1, sha_row,
                       &old, err);
    if (!rc && old.oom)
        rc = bs_err_set(err, BS_ENOMEM, "out of memory listing artifacts");
    if (!rc && old.n)
        rc = load_refs(b, refs_sql, &refs, err);
    int removed = 0;
    for (size_t i = 0; !rc && i < old.n; i++) {
        if (referenced(&refs, old.sha[i]))
            continue;
        bs_val_t a = BS_TXT(old.sha[i]);
        rc = bs_meta_exec(b->meta, "DELETE FROM blob_chunks WHERE sha256 = ?", &a, 1, NULL, err);
        if (!rc)
            rc = bs_meta_exec(b->meta, "DELETE FROM blobs WHERE sha256 = ?", &a, 1, NULL, err);
        removed++;
    }
    if (rc || !removed)
        bs_meta_tx_rollback(b->meta);
    else
        rc = bs_meta_tx_commit(b->meta, err);
    free(refs.sha);
    free(old.sha);
    if (rc)
        return rc;
    if (removed)
        BS_LOG(BS_LOG_INFO, "blobs", "removed %d unreferenced artifact(s) from the metadata store",
               removed);
    return removed;
}

int bs_blobs_collect(bs_blobs_t *b, int64_t grace_s, const char *refs_sql, bs_err_t *err)
{
    if (b->kind == BS_BLOBS_METADATA)
        return md_collect(b, grace_s, refs_sql, err);
    return files_collect(b, grace_s, refs_sql, err);
}

int bs_blobs_evict_cache(bs_blobs_t *b, int64_t grace_s, const char *refs_sql, bs_err_t *err)
{
    if (b->kind != BS_BLOBS_METADATA)
        return 0;
    int removed = collect_files(b, grace_s, refs_sql, 0, err);
    if (removed > 0)
        BS_LOG(BS_LOG_INFO, "blobs", "evicted %d unreferenced cached artifact file(s)", removed);
    return removed;
}
