/*
 * Artifact garbage collection. Artifacts are content-addressed files
 * (<dir>/ab/<sha256>) that any number of versions may share; a file is removed
 * once no version references it and it has not been written, re-uploaded or
 * orphaned by a delete for `grace` seconds. Leftover temporary files of
 * interrupted uploads (<sha256>.tmp.<random>) go after the same grace.
 *
 * Races with uploads: an upload writes (or touches) its file before the
 * transaction that inserts its version, and checks inside that transaction that
 * the file is still there (rewriting it if not). This collector decides and
 * unlinks inside a transaction too, so the two serialize on the store's lock:
 * either the version row exists when the collector looks, or the upload sees the
 * file gone and writes it again. Directory scans and stats happen outside it.
 *
 * Thread: the task thread of a lease runner (store/lease.h) per registry, never an
 * I/O thread: passes run only while this replica holds the lease "artifact-gc", so
 * replicas sharing a store never collect at once. Stopping ends a pass in progress
 * and releases the lease, so shutdown is prompt.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/time.h"
#include "registry/registry_int.h"
#include "store/lease.h"

/* The collector's singleton lease: of replicas sharing a store, one collects. Its time
 * is three passes, 3 s .. 30 s: another replica takes over within that when the holder
 * dies, and tries to every third of it. */
#define GC_LEASE "artifact-gc"

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

static int is_hex64(const char *s, size_t n)
{
    if (n != 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* Files under dir old enough to go, if nothing references them. */
static int scan(const char *dir, time_t cutoff, candidate_t **out, size_t *n_out)
{
    size_t n = 0, cap = 0;
    candidate_t *c = NULL;
    DIR *top = opendir(dir);
    if (!top)
        return 0;
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
    return 0;
}

int bs__registry_gc(bs_registry_t *r, int64_t grace_s, bs_err_t *err)
{
    time_t cutoff = time(NULL) - (time_t)grace_s;
    candidate_t *c = NULL;
    size_t n = 0;
    scan(r->dir, cutoff, &c, &n);
    if (!n) {
        free(c);
        return 0;
    }
    sha_set_t refs = {0};
    int removed = 0;
    int rc = bs_meta_tx_begin(r->meta, err);
    if (rc) {
        free(c);
        return rc;
    }
    rc = bs_meta_query(r->meta, "SELECT DISTINCT sha256 FROM model_versions", NULL, 0, sha_row,
                       &refs, err);
    if (!rc && refs.oom)
        rc = bs_err_set(err, BS_ENOMEM, "out of memory listing referenced artifacts");
    if (!rc && refs.n)
        qsort(refs.sha, refs.n, sizeof *refs.sha, cmp_sha);
    for (size_t i = 0; !rc && i < n; i++) {
        if (c[i].sha[0] && refs.n && bsearch(c[i].sha, refs.sha, refs.n, sizeof *refs.sha, cmp_sha))
            continue;
        /* Touched since the scan (re-uploaded, or its model just deleted): not yet. */
        struct stat st;
        if (stat(c[i].path, &st) != 0 || st.st_mtime > cutoff)
            continue;
        if (unlink(c[i].path) == 0)
            removed++;
        else
            BS_LOG(BS_LOG_WARN, "registry", "cannot remove artifact %s: %s", c[i].path,
                   strerror(errno));
    }
    bs_meta_tx_rollback(r->meta); /* read-only: the transaction only held the store's lock */
    free(refs.sha);
    free(c);
    if (removed)
        BS_LOG(BS_LOG_INFO, "registry", "removed %d unreferenced artifact file(s)", removed);
    return rc ? rc : removed;
}

/* One pass, on the lease runner's task thread, while this replica holds "artifact-gc". */
static void gc_task(void *ud, bs_lease_runner_t *run, int64_t token)
{
    (void)token;
    bs_registry_t *r = ud;
    if (!bs_lease_runner_held(run))
        return;
    bs_err_t err;
    bs_err_clear(&err);
    if (bs__registry_gc(r, r->gc_grace_s, &err) < 0)
        BS_LOG(BS_LOG_WARN, "registry", "artifact collection failed: %s", err.msg);
}

void bs_registry_set_replica_id(bs_registry_t *r, const char *id)
{
    snprintf(r->replica_id, sizeof r->replica_id, "%s", id);
}

int bs_registry_gc_start(bs_registry_t *r, int64_t grace_s, bs_err_t *err)
{
    if (r->gc_running)
        return 0;
    r->gc_grace_s = grace_s;
    /* A pass every half grace period (1 s .. 5 min): a file goes between grace and 1.5x. */
    int64_t every = grace_s / 2;
    if (every < 1)
        every = 1;
    if (every > 300)
        every = 300;
    if (!r->replica_id[0]) {
        char host[64] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(r->replica_id, sizeof r->replica_id, "%s-%ld", host, (long)getpid());
    }
    int64_t ttl_s = every * 3 < 3 ? 3 : every * 3 > 30 ? 30 : every * 3;
    bs_lease_runner_opts_t o = {.name = GC_LEASE,
                                .owner = r->replica_id,
                                .ttl_ms = ttl_s * 1000,
                                .period_ms = every * 1000,
                                .task = gc_task,
                                .ud = r};
    r->gc_lease = bs_lease_runner_start(r->meta, &o, err);
    if (!r->gc_lease)
        return err->code;
    r->gc_running = 1;
    return 0;
}

void bs__registry_gc_stop(bs_registry_t *r)
{
    if (!r->gc_running)
        return;
    bs_lease_runner_stop(r->gc_lease); /* ends a pass in progress, releases the lease */
    r->gc_lease = NULL;
    r->gc_running = 0;
}
