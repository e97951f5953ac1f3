/* The artifact blob store on a temporary SQLite metadata store, each test run on both
 * backends (files, metadata): round trips of binary bytes at the chunk boundaries,
 * idempotent puts, the metadata backend's cache (hit, miss, a damaged or truncated cache
 * file fetched again), damaged and missing stored data as BS_EIO naming the blob,
 * unfinished puts that stay invisible, and collection of unreferenced blobs after the
 * grace period while referenced ones stay. */
#include "test_common.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/crypto.h"
#include "store/blobs.h"
#include "store/meta.h"

typedef struct {
    char dir[64];
    char cache[128];
    bs_blobs_kind_t kind;
    bs_meta_t *meta;
    bs_blobs_t *blobs;
} fx_t;

static int setup(void **state, bs_blobs_kind_t kind)
{
    fx_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/bs-test-blobs-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    char path[128];
    snprintf(path, sizeof path, "%s/basalt.db", f->dir);
    snprintf(f->cache, sizeof f->cache, "%s/artifacts", f->dir);
    bs_err_t err;
    f->meta = bs_meta_open(path, &err);
    if (!f->meta)
        return -1;
    f->kind = kind;
    f->blobs = bs_blobs_new(kind, f->meta, f->cache, &err);
    if (!f->blobs)
        return -1;
    /* What references a blob in these tests. */
    if (bs_meta_exec(f->meta, "CREATE TABLE refs (sha256 TEXT NOT NULL)", NULL, 0, NULL, &err))
        return -1;
    *state = f;
    return 0;
}

static int setup_files(void **state) { return setup(state, BS_BLOBS_FILES); }
static int setup_metadata(void **state) { return setup(state, BS_BLOBS_METADATA); }

static int teardown(void **state)
{
    fx_t *f = *state;
    bs_blobs_free(f->blobs);
    bs_meta_close(f->meta);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static const char *REFS = "SELECT sha256 FROM refs";

/* size bytes of every value 0..255, NULs included, from a fixed xorshift sequence. */
static unsigned char *bytes_of(size_t size, uint32_t seed)
{
    unsigned char *p = malloc(size ? size : 1);
    uint32_t x = seed | 1;
    for (size_t i = 0; i < size; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (unsigned char)x;
    }
    return p;
}

static void put_ok(fx_t *f, const void *bytes, size_t len, char sha[65])
{
    bs_err_t err;
    bs_err_clear(&err);
    bs_sha256_hex(bytes, len, sha);
    int rc = bs_blobs_put(f->blobs, sha, bytes, len, &err);
    if (rc)
        fail_msg("put of %zu bytes: %s", len, err.msg);
}

static void get_equals(fx_t *f, const char *sha, const void *want, size_t len)
{
    bs_err_t err;
    bs_err_clear(&err);
    void *got = NULL;
    int rc = bs_blobs_get(f->blobs, sha, len, &got, &err);
    if (rc)
        fail_msg("get of %zu bytes: %s", len, err.msg);
    assert_non_null(got);
    assert_memory_equal(got, want, len ? len : 0);
    free(got);
}



static int int_row(const bs_meta_row_t *row, void *ud)
{
    *(int64_t *)ud = bs_meta_row_int(row, 0);
    return 1;
}

static int64_t count(fx_t *f, const char *sql, const char *sha)
{
    int64_t n = -1;
    bs_val_t a = BS_TXT(sha);
    bs_err_t err;
    assert_int_equal(bs_meta_query(f->meta, sql, &a, sha ? 1 : 0, int_row, &n, &err), 0);
    return n;
}

static void file_of(fx_t *f, const char *sha, char *path, size_t n)
{
    snprintf(path, n, "%s/%.2s/%s", f->cache, sha, sha);
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void age_file(const char *path, time_t secs)
{
    struct timespec ts[2] = {{.tv_sec = time(NULL) - secs}, {.tv_sec = time(NULL) - secs}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

/* Makes every blob (rows and files) look last touched an hour ago. */
static void age_all(fx_t *f, const char *const *shas, int n)
{
    for (int i = 0; i < n; i++) {
        char path[256];
        file_of(f, shas[i], path, sizeof path);
        if (exists(path))
            age_file(path, 3600);
    }
    bs_err_t err;
    if (f->kind == BS_BLOBS_METADATA)
        assert_int_equal(bs_meta_exec(f->meta, "UPDATE blobs SET touched_at = 0", NULL, 0, NULL, &err),
                         0);
}

static void add_ref(fx_t *f, const char *sha)
{
    bs_val_t a = BS_TXT(sha);
    bs_err_t err;
    assert_int_equal(bs_meta_exec(f->meta, "INSERT INTO refs VALUES (?)", &a, 1, NULL, &err), 0);
}

/* ---- round trips --------------------------------------------------------------------------- */

static void test_round_trip_sizes(void **state)
{
    fx_t *f = *state;
    const size_t sizes[] = {0, 1, BS_BLOBS_CHUNK - 1, BS_BLOBS_CHUNK, BS_BLOBS_CHUNK + 1,
                            5 * BS_BLOBS_CHUNK + 12345};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        unsigned char *p = bytes_of(sizes[i], (uint32_t)(i + 7));
        char sha[65];
        put_ok(f, p, sizes[i], sha);
        get_equals(f, sha, p, sizes[i]);
        if (f->kind == BS_BLOBS_METADATA) {
            int64_t want = (int64_t)((sizes[i] + BS_BLOBS_CHUNK - 1) / BS_BLOBS_CHUNK);
            assert_int_equal(count(f, "SELECT COUNT(*) FROM blob_chunks WHERE sha256 = ?", sha), want);
            assert_int_equal(count(f, "SELECT complete FROM blobs WHERE sha256 = ?", sha), 1);
            assert_int_equal(count(f, "SELECT size FROM blobs WHERE sha256 = ?", sha),
                             (int64_t)sizes[i]);
            /* the stored bytes alone, without the cache */
            char path[256];
            file_of(f, sha, path, sizeof path);
            assert_int_equal(unlink(path), 0);
            get_equals(f, sha, p, sizes[i]);
        }
        free(p);
    }
}

static void test_put_is_idempotent(void **state)
{
    fx_t *f = *state;
    size_t len = 2 * BS_BLOBS_CHUNK + 10;
    unsigned char *p = bytes_of(len, 99);
    char sha[65], sha2[65];
    put_ok(f, p, len, sha);
    put_ok(f, p, len, sha2);
    assert_string_equal(sha, sha2);
    get_equals(f, sha, p, len);
    if (f->kind == BS_BLOBS_METADATA) {
        assert_int_equal(count(f, "SELECT COUNT(*) FROM blobs", NULL), 1);
        assert_int_equal(count(f, "SELECT COUNT(*) FROM blob_chunks", NULL), 3);
    }
    char cmd[256];
    snprintf(cmd, sizeof cmd, "test $(find '%s' -type f | wc -l) -eq 1", f->cache);
    assert_int_equal(system(cmd), 0); /* one file: the blob (files) or its cache (metadata) */
    free(p);
}

static void test_wrong_size_or_absent_is_eio(void **state)
{
    fx_t *f = *state;
    unsigned char *p = bytes_of(1000, 5);
    char sha[65];
    put_ok(f, p, 1000, sha);
    bs_err_t err;
    void *got = (void *)1;
    /* the version row says another size: truncated either way */
    assert_int_equal(bs_blobs_get(f->blobs, sha, 2000, &got, &err), BS_EIO);
    assert_null(got);
    assert_non_null(strstr(err.msg, sha));
    const char *absent = "0000000000000000000000000000000000000000000000000000000000000000";
    assert_int_equal(bs_blobs_get(f->blobs, absent, 10, &got, &err), BS_EIO);
    assert_non_null(strstr(err.msg, absent));
    assert_non_null(strstr(err.msg, "missing"));
    free(p);
}

/* ---- the metadata backend's cache ------------------------------------------------------------ */

static void test_cache_hit_and_miss(void **state)
{
    fx_t *f = *state;
    size_t len = BS_BLOBS_CHUNK + 1;
    unsigned char *p = bytes_of(len, 11);
    char sha[65], path[256];
    put_ok(f, p, len, sha);
    file_of(f, sha, path, sizeof path);
    assert_true(exists(path)); /* the uploading replica caches what it put */
    get_equals(f, sha, p, len);
    bs_blobs_stats_t s;
    bs_blobs_stats(f->blobs, &s);
    assert_int_equal(s.cache_hits, 1);
    assert_int_equal(s.cache_misses, 0);
    assert_int_equal(s.fetched_bytes, 0);
    assert_int_equal(unlink(path), 0);
    get_equals(f, sha, p, len);
    bs_blobs_stats(f->blobs, &s);
    assert_int_equal(s.cache_misses, 1);
    assert_int_equal(s.fetched_bytes, len);
    assert_true(exists(path)); /* fetched and cached again */
    get_equals(f, sha, p, len);
    bs_blobs_stats(f->blobs, &s);
    assert_int_equal(s.cache_hits, 2);
    assert_int_equal(s.cache_misses, 1);
    free(p);
}

static void overwrite(const char *path, off_t at, const char *what)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, what, strlen(what), at), (ssize_t)strlen(what));
    close(fd);
}

static void test_damaged_cache_file_is_fetched_again(void **state)
{
    fx_t *f = *state;
    size_t len = 3 * BS_BLOBS_CHUNK;
    unsigned char *p = bytes_of(len, 12);
    char sha[65], path[256];
    put_ok(f, p, len, sha);
    file_of(f, sha, path, sizeof path);
    overwrite(path, BS_BLOBS_CHUNK + 3, "not the bytes");
    get_equals(f, sha, p, len);
    bs_blobs_stats_t s;
    bs_blobs_stats(f->blobs, &s);
    assert_int_equal(s.cache_discards, 1);
    assert_int_equal(s.cache_misses, 1);
    /* the cache file was rewritten with the stored bytes */
    void *again = NULL;
    bs_err_t err;
    assert_int_equal(bs_blobs_get(f->blobs, sha, len, &again, &err), 0);
    free(again);
    bs_blobs_stats(f->blobs, &s);
    assert_int_equal(s.cache_hits, 1);
    /* truncated, and longer than it should be */
    assert_int_equal(truncate(path, (off_t)(len / 2)), 0);
    get_equals(f, sha, p, len);
    assert_int_equal(truncate(path, (off_t)(len + 1)), 0);
    get_equals(f, sha, p, len);
    bs_blobs_stats(f->blobs, &s);
    assert_int_equal(s.cache_discards, 3);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal((size_t)st.st_size, len);
    free(p);
}

static void test_damaged_stored_data_is_eio_naming_the_blob(void **state)
{
    fx_t *f = *state;
    size_t len = 2 * BS_BLOBS_CHUNK + 100;
    unsigned char *p = bytes_of(len, 13);
    char sha[65], path[256];
    put_ok(f, p, len, sha);
    file_of(f, sha, path, sizeof path);
    bs_err_t err;
    void *got = NULL;
    if (f->kind == BS_BLOBS_FILES) {
        overwrite(path, 10, "#");
        assert_int_equal(bs_blobs_get(f->blobs, sha, len, &got, &err), BS_EIO);
        assert_non_null(strstr(err.msg, "checksum"));
        assert_non_null(strstr(err.msg, sha));
        unlink(path);
        assert_int_equal(bs_blobs_get(f->blobs, sha, len, &got, &err), BS_EIO);
        assert_non_null(strstr(err.msg, "missing"));
        assert_null(got);
        free(p);
        return;
    }
    /* the middle chunk zeroed, and no cache to fall back on */
    bs_val_t a[] = {BS_TXT(sha)};
    assert_int_equal(bs_meta_exec(f->meta,
                                  "UPDATE blob_chunks SET data = zeroblob(length(data))"
                                  " WHERE sha256 = ? AND seq = 1",
                                  a, 1, NULL, &err),
                     0);
    unlink(path);
    assert_int_equal(bs_blobs_get(f->blobs, sha, len, &got, &err), BS_EIO);
    assert_null(got);
    assert_non_null(strstr(err.msg, sha));
    assert_non_null(strstr(err.msg, "checksum"));
    assert_false(exists(path)); /* nothing wrong is cached */
    /* a chunk gone */
    assert_int_equal(bs_meta_exec(f->meta, "DELETE FROM blob_chunks WHERE sha256 = ? AND seq = 1", a,
                                  1, NULL, &err),
                     0);
    assert_int_equal(bs_blobs_get(f->blobs, sha, len, &got, &err), BS_EIO);
    assert_non_null(strstr(err.msg, sha));
    assert_non_null(strstr(err.msg, "truncated"));
    free(p);
}

/* A put that died between chunks: the row is there with complete = 0 and some chunks. */
static void test_unfinished_put_is_invisible_and_finished_by_the_next(void **state)
{
    fx_t *f = *state;
    size_t len = 3 * BS_BLOBS_CHUNK + 5;
    unsigned char *p = bytes_of(len, 14);
    char sha[65];
    bs_sha256_hex(p, len, sha);
    bs_err_t err;
    bs_val_t ra[] = {BS_TXT(sha), BS_INT((int64_t)len)};
    assert_int_equal(bs_meta_exec(f->meta,
                                  "INSERT INTO blobs (sha256, size, chunks, complete, created_at,"
                                  " touched_at) VALUES (?, ?, 4, 0, 0, 0)",
                                  ra, 2, NULL, &err),
                     0);
    bs_val_t ca[] = {BS_TXT(sha), BS_BLOB(p, BS_BLOBS_CHUNK)};
    assert_int_equal(bs_meta_exec(f->meta, "INSERT INTO blob_chunks VALUES (?, 0, ?)", ca, 2, NULL,
                                  &err),
                     0);
    void *got = NULL;
    assert_int_equal(bs_blobs_get(f->blobs, sha, len, &got, &err), BS_EIO);
    assert_non_null(strstr(err.msg, "missing"));
    put_ok(f, p, len, sha);
    assert_int_equal(count(f, "SELECT complete FROM blobs WHERE sha256 = ?", sha), 1);
    char path[256];
    file_of(f, sha, path, sizeof path);
    unlink(path);
    get_equals(f, sha, p, len);
    free(p);
}

/* ---- collection ------------------------------------------------------------------------------ */

static void test_collect_after_grace_keeps_referenced(void **state)
{
    fx_t *f = *state;
    size_t la = BS_BLOBS_CHUNK + 7, lb = 2 * BS_BLOBS_CHUNK;
    unsigned char *a = bytes_of(la, 21), *b = bytes_of(lb, 22);
    char sa[65], sb[65], pa[256], pb[256];
    put_ok(f, a, la, sa);
    put_ok(f, b, lb, sb);
    file_of(f, sa, pa, sizeof pa);
    file_of(f, sb, pb, sizeof pb);
    add_ref(f, sa);
    bs_err_t err;
    /* young: nothing goes, referenced or not */
    assert_int_equal(bs_blobs_collect(f->blobs, 3600, REFS, &err), 0);
    assert_int_equal(bs_blobs_evict_cache(f->blobs, 3600, REFS, &err), 0);
    const char *const both[] = {sa, sb};
    age_all(f, both, 2);
    /* a temporary file left by an interrupted write */
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp.0123456789abcdef", pb);
    FILE *t = fopen(tmp, "wb");
    fputs("partial", t);
    fclose(t);
    age_file(tmp, 3600);
    int removed = bs_blobs_collect(f->blobs, 60, REFS, &err);
    if (f->kind == BS_BLOBS_FILES) {
        assert_int_equal(removed, 2); /* b's file and the temporary file */
        assert_int_equal(bs_blobs_evict_cache(f->blobs, 60, REFS, &err), 0);
    } else {
        assert_int_equal(removed, 1); /* b's row and chunks */
        assert_int_equal(count(f, "SELECT COUNT(*) FROM blob_chunks WHERE sha256 = ?", sb), 0);
        assert_int_equal(count(f, "SELECT COUNT(*) FROM blobs WHERE sha256 = ?", sb), 0);
        assert_int_equal(count(f, "SELECT COUNT(*) FROM blob_chunks WHERE sha256 = ?", sa), 2);
        assert_true(exists(pb)); /* the cache is the replica's own pass */
        assert_int_equal(bs_blobs_evict_cache(f->blobs, 60, REFS, &err), 2);
    }
    assert_false(exists(pb));
    assert_false(exists(tmp));
    assert_true(exists(pa));
    get_equals(f, sa, a, la);
    void *got = NULL;
    assert_int_equal(bs_blobs_get(f->blobs, sb, lb, &got, &err), BS_EIO);
    /* b uploaded again after its collection: stored again */
    put_ok(f, b, lb, sb);
    get_equals(f, sb, b, lb);
    if (f->kind == BS_BLOBS_METADATA) {
        /* a referenced blob's cache file stays however old; an unreferenced young one too */
        age_file(pa, 3600);
        assert_int_equal(bs_blobs_evict_cache(f->blobs, 60, REFS, &err), 0);
        assert_true(exists(pa) && exists(pb));
        /* an unfinished put, old: collected like an unreferenced blob */
        char dead[65];
        memset(dead, '0', 64);
        dead[64] = '\0';
        dead[0] = 'a';
        bs_val_t ra[] = {BS_TXT(dead)};
        assert_int_equal(bs_meta_exec(f->meta,
                                      "INSERT INTO blobs VALUES (?, 10, 1, 0, 0, 0)", ra, 1, NULL,
                                      &err),
                         0);
        assert_int_equal(bs_meta_exec(f->meta, "INSERT INTO blob_chunks VALUES (?, 0, x'00')", ra, 1,
                                      NULL, &err),
                         0);
        assert_int_equal(bs_blobs_collect(f->blobs, 60, REFS, &err), 1);
        assert_int_equal(count(f, "SELECT COUNT(*) FROM blob_chunks", NULL), 2 + 2);
    }
    free(a);
    free(b);
}

/* Touch restarts the grace clock: a blob whose last reference just went stays for grace. */
static void test_touch_restarts_grace(void **state)
{
    fx_t *f = *state;
    unsigned char *a = bytes_of(100, 31);
    char sa[65];
    put_ok(f, a, 100, sa);
    const char *const one[] = {sa};
    age_all(f, one, 1);
    bs_blobs_touch(f->blobs, sa);
    bs_err_t err;
    assert_int_equal(bs_blobs_collect(f->blobs, 60, REFS, &err), 0);
    assert_int_equal(bs_blobs_evict_cache(f->blobs, 60, REFS, &err), 0);
    get_equals(f, sa, a, 100);
    free(a);
}

/* A blob collected between the put and the referencing transaction: ensure, inside that
 * transaction, writes it again. */
static void test_ensure_rewrites_a_collected_blob(void **state)
{
    fx_t *f = *state;
    size_t len = BS_BLOBS_CHUNK + 2;
    unsigned char *a = bytes_of(len, 41);
    char sa[65], pa[256];
    put_ok(f, a, len, sa);
    file_of(f, sa, pa, sizeof pa);
    const char *const one[] = {sa};
    age_all(f, one, 1);
    bs_err_t err;
    assert_int_equal(bs_blobs_collect(f->blobs, 60, REFS, &err), 1);
    bs_blobs_evict_cache(f->blobs, 60, REFS, &err);
    assert_false(exists(pa));
    assert_int_equal(bs_meta_tx_begin(f->meta, &err), 0);
    assert_int_equal(bs_blobs_ensure(f->blobs, sa, a, len, &err), 0);
    add_ref(f, sa);
    assert_int_equal(bs_meta_tx_commit(f->meta, &err), 0);
    if (f->kind == BS_BLOBS_METADATA) {
        assert_int_equal(count(f, "SELECT complete FROM blobs WHERE sha256 = ?", sa), 1);
        unlink(pa);
    }
    get_equals(f, sa, a, len);
    /* present: ensure writes nothing */
    assert_int_equal(bs_meta_tx_begin(f->meta, &err), 0);
    assert_int_equal(bs_blobs_ensure(f->blobs, sa, a, len, &err), 0);
    bs_meta_tx_rollback(f->meta);
    free(a);
}

static void test_parse_kind(void **state)
{
    (void)state;
    bs_blobs_kind_t k;
    bs_err_t err;
    assert_int_equal(bs_blobs_parse_kind("files", &k, &err), 0);
    assert_int_equal(k, BS_BLOBS_FILES);
    assert_int_equal(bs_blobs_parse_kind("metadata", &k, &err), 0);
    assert_int_equal(k, BS_BLOBS_METADATA);
    assert_int_equal(bs_blobs_parse_kind("s3", &k, &err), BS_EINVAL);
    assert_non_null(strstr(err.msg, "s3"));
}

#define BOTH(t)                                                                                    \
    cmocka_unit_test_setup_teardown(t, setup_files, teardown),                                    \
        cmocka_unit_test_setup_teardown(t, setup_metadata, teardown)
#define METADATA(t) cmocka_unit_test_setup_teardown(t, setup_metadata, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_round_trip_sizes),
        BOTH(test_put_is_idempotent),
        BOTH(test_wrong_size_or_absent_is_eio),
        METADATA(test_cache_hit_and_miss),
        METADATA(test_damaged_cache_file_is_fetched_again),
        BOTH(test_damaged_stored_data_is_eio_naming_the_blob),
        METADATA(test_unfinished_put_is_invisible_and_finished_by_the_next),
        BOTH(test_collect_after_grace_keeps_referenced),
        BOTH(test_touch_restarts_grace),
        BOTH(test_ensure_rewrites_a_collected_blob),
        cmocka_unit_test(test_parse_kind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
