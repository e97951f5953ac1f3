/*
 * The segments backend of the log (log.h; the embedded default): open and
 * close, the topic map, topic create/update/drop/stats, reads, watches,
 * metrics and the background thread (retention, consumer journal syncs and
 * compaction). The format, the writer and consumer groups live in
 * log_segment.c, log_writer.c and log_consumer.c (log_seg_int.h has the design
 * and lock order).
 *
 * Layout: <dir>/<tenant>/<topic>/ holds topic.json, the segments
 * <first offset>.seg with their <first offset>.idx, and a journal per
 * consumer group <group>.group. A topic is created as .<topic>.tmp and renamed
 * into place, and dropped by renaming it to .<topic>.dropped.<n> before its
 * files are removed, so open finds either a whole topic or a leftover dot
 * directory, which it removes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/time.h"
#include "store/log_seg_int.h"

const double bs__log_hist_bounds[BS__LOG_HIST_N] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};

typedef struct bs__watch {
    struct bs__watch *hnext;
    struct bs__watch *tprev, *tnext;
    int64_t id, after;
    bs__topic_t *t;
    bs_log_wake_cb cb;
    void *ud;
} bs__watch_t;

/* ---- files ------------------------------------------------------------------------------ */

int bs__fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        return rmdir(path) != 0 && errno != ENOENT ? -1 : 0;
    return unlink(path) != 0 && errno != ENOENT ? -1 : 0;
}

int bs__rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int mkdirs(const char *path)
{
    char tmp[1024];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
        return -1;
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

/* ---- the topic map ---------------------------------------------------------------------- */

static unsigned bucket_of(const char *tenant, const char *topic)
{
    uint32_t h = 2166136261u;
    for (const char *p = tenant; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    h = (h ^ '/') * 16777619u;
    for (const char *p = topic; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return h % BS__LOG_BUCKETS;
}

bs__topic_t *bs__topic_get(bs__seglog_t *l, const char *tenant, const char *topic)
{
    if (!tenant || !topic)
        return NULL;
    unsigned b = bucket_of(tenant, topic);
    pthread_rwlock_rdlock(&l->map_lock);
    bs__topic_t *t = l->buckets[b];
    while (t && (strcmp(t->name, topic) != 0 || strcmp(t->tenant, tenant) != 0))
        t = t->hnext;
    if (t)
        atomic_fetch_add(&t->refs, 1);
    pthread_rwlock_unlock(&l->map_lock);
    return t;
}

static void topic_free(bs__topic_t *t)
{
    bs__groups_free(t);
    for (int i = 0; i < t->nsegs; i++)
        bs__seg_unref(t->segs[i]);
    free(t->segs);
    bs__dedup_free(&t->w.dedup);
    free(t->w.iov);
    free(t->w.pidx);
    free(t->w.hashes);
    pthread_mutex_destroy(&t->mu);
    pthread_mutex_destroy(&t->gmu);
    free(t->dir);
    free(t);
}

void bs__topic_unref(bs__topic_t *t)
{
    if (t && atomic_fetch_sub(&t->refs, 1) == 1)
        topic_free(t);
}

/* Every topic, each with a reference (the caller unrefs them and frees the array). */
static bs__topic_t **topics_snapshot(bs__seglog_t *l, int *n)
{
    pthread_rwlock_rdlock(&l->map_lock);
    int c = 0;
    for (int b = 0; b < BS__LOG_BUCKETS; b++)
        for (bs__topic_t *t = l->buckets[b]; t; t = t->hnext)
            c++;
    bs__topic_t **v = malloc((size_t)(c ? c : 1) * sizeof *v);
    int k = 0;
    if (v)
        for (int b = 0; b < BS__LOG_BUCKETS; b++)
            for (bs__topic_t *t = l->buckets[b]; t; t = t->hnext) {
                atomic_fetch_add(&t->refs, 1);
                v[k++] = t;
            }
    pthread_rwlock_unlock(&l->map_lock);
    *n = k;
    return v;
}

static void snapshot_free(bs__topic_t **v, int n)
{
    for (int i = 0; i < n; i++)
        bs__topic_unref(v[i]);
    free(v);
}

/* Loads <root>/<tenant>/<name>: config, segments, dedup window, groups. */
static bs__topic_t *topic_load(bs__seglog_t *l, const char *tenant, const char *name, bs_err_t *err)
{
    bs__topic_t *t = calloc(1, sizeof *t);
    size_t n = strlen(l->dir) + strlen(tenant) + strlen(name) + 3;
    if (!t || !(t->dir = malloc(n))) {
        free(t);
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    t->log = l;
    snprintf(t->tenant, sizeof t->tenant, "%s", tenant);
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->dir, n, "%s/%s/%s", l->dir, tenant, name);
    atomic_init(&t->refs, 1);
    pthread_mutex_init(&t->mu, NULL);
    pthread_mutex_init(&t->gmu, NULL);
    bs__dedup_init(&t->w.dedup);
    if (bs__topic_config_load(t->dir, &t->cfg, err) != 0 || bs__topic_recover(t, err) != 0 ||
        bs__writer_dedup_rebuild(t, err) != 0 || bs__groups_load(t, err) != 0) {
        topic_free(t);
        return NULL;
    }
    atomic_store(&t->max_record, bs__topic_config_norm(&t->cfg).max_record_bytes);
    return t;
}

static void map_insert(bs__seglog_t *l, bs__topic_t *t)
{
    unsigned b = bucket_of(t->tenant, t->name);
    pthread_rwlock_wrlock(&l->map_lock);
    t->hnext = l->buckets[b];
    l->buckets[b] = t;
    pthread_rwlock_unlock(&l->map_lock);
}

static bs__topic_t *map_remove(bs__seglog_t *l, const char *tenant, const char *topic)
{
    unsigned b = bucket_of(tenant, topic);
    pthread_rwlock_wrlock(&l->map_lock);
    bs__topic_t **p = &l->buckets[b];
    while (*p && (strcmp((*p)->name, topic) != 0 || strcmp((*p)->tenant, tenant) != 0))
        p = &(*p)->hnext;
    bs__topic_t *t = *p;
    if (t)
        *p = t->hnext;
    pthread_rwlock_unlock(&l->map_lock);
    return t;
}

/* Creates the topic directory (atomically, through a rename) and loads it. Under ddl_mu. */
static bs__topic_t *topic_create(bs__seglog_t *l, const char *tenant, const char *name,
                                 const bs_log_topic_config_t *c, bs_err_t *err)
{
    char tdir[1024], tmp[1100], final[1100];
    snprintf(tdir, sizeof tdir, "%s/%s", l->dir, tenant);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", tdir, name);
    snprintf(final, sizeof final, "%s/%s", tdir, name);
    struct stat st;
    if (stat(tdir, &st) != 0) {
        if (mkdir(tdir, 0755) != 0 && errno != EEXIST) {
            bs_err_set(err, BS_EIO, "cannot create %s: %s", tdir, strerror(errno));
            return NULL;
        }
        bs__fsync_dir(l->dir);
    }
    if (bs__rm_rf(tmp) != 0 || mkdir(tmp, 0755) != 0) {
        bs_err_set(err, BS_EIO, "cannot create %s: %s", tmp, strerror(errno));
        return NULL;
    }
    if (bs__topic_config_save(tmp, c, err) != 0)
        return NULL;
    bs__seg_t *s = bs__seg_create(tmp, 0, err);
    if (!s)
        return NULL;
    bs__seg_unref(s);
    if (rename(tmp, final) != 0 || bs__fsync_dir(tdir) != 0) {
        bs_err_set(err, BS_EIO, "cannot create topic %s/%s: %s", tenant, name, strerror(errno));
        bs__rm_rf(tmp);
        return NULL;
    }
    bs__topic_t *t = topic_load(l, tenant, name, err);
    if (t) {
        map_insert(l, t);
        atomic_fetch_add(&t->refs, 1);
    }
    return t;
}

static int check_names(const char *tenant, const char *topic, bs_err_t *err)
{
    if (!bs__log_valid_name(tenant))
        return bs_err_setf(err, BS_EINVAL, "tenant",
                           "tenant '%.64s' must match [a-z0-9][a-z0-9_-]{0,62}",
                           tenant ? tenant : "");
    if (!bs__log_valid_name(topic))
        return bs_err_setf(err, BS_EINVAL, "topic",
                           "topic name '%.64s' must match [a-z0-9][a-z0-9_-]{0,62}",
                           topic ? topic : "");
    return 0;
}

static int seg_topic_ensure(bs_log_t *lb, const char *tenant, const char *topic,
                            const bs_log_topic_config_t *c, bs_err_t *err)
{
    bs__seglog_t *l = (bs__seglog_t *)lb;
    bs_log_topic_config_t cfg = {0};
    if (c)
        cfg = *c;
    int rc = check_names(tenant, topic, err);
    if (rc == 0)
        rc = bs__topic_config_check(&cfg, err);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&l->ddl_mu);
    bs__topic_t *t = bs__topic_get(l, tenant, topic);
    if (t) {
        pthread_mutex_lock(&t->mu);
        int changed = memcmp(&t->cfg, &cfg, sizeof cfg) != 0;
        pthread_mutex_unlock(&t->mu);
        if (changed && (rc = bs__topic_config_save(t->dir, &cfg, err)) == 0) {
            pthread_mutex_lock(&t->mu);
            t->cfg = cfg;
            pthread_mutex_unlock(&t->mu);
            atomic_store(&t->max_record, bs__topic_config_norm(&cfg).max_record_bytes);
        }
    } else {
        t = topic_create(l, tenant, topic, &cfg, err);
        if (!t)
            rc = err ? err->code : BS_EIO;
    }
    pthread_mutex_unlock(&l->ddl_mu);
    bs__topic_unref(t);
    return rc;
}

bs__topic_t *bs__topic_ensure_like(bs__seglog_t *l, const char *tenant, const char *topic,
                                   const bs_log_topic_config_t *c, bs_err_t *err)
{
    bs__topic_t *t = bs__topic_get(l, tenant, topic);
    if (t)
        return t;
    if (check_names(tenant, topic, err) != 0)
        return NULL;
    pthread_mutex_lock(&l->ddl_mu);
    t = bs__topic_get(l, tenant, topic);
    if (!t)
        t = topic_create(l, tenant, topic, c, err);
    pthread_mutex_unlock(&l->ddl_mu);
    return t;
}

static int seg_topic_drop(bs_log_t *lb, const char *tenant, const char *topic, bs_err_t *err)
{
    bs__seglog_t *l = (bs__seglog_t *)lb;
    if (!tenant || !topic)
        return 0;
    pthread_mutex_lock(&l->ddl_mu);
    bs__topic_t *t = map_remove(l, tenant, topic);
    if (!t) {
        pthread_mutex_unlock(&l->ddl_mu);
        return 0;
    }
    atomic_store(&t->dropped, 1);
    bs__writer_forget(l, t);
    bs__groups_drop(t);
    bs__watch_fire(l, t, 1);
    static atomic_uint drops;
    char tdir[1024], gone[1200];
    snprintf(tdir, sizeof tdir, "%s/%s", l->dir, tenant);
    snprintf(gone, sizeof gone, "%s/.%s.dropped.%lld.%u", tdir, topic, (long long)getpid(),
             atomic_fetch_add(&drops, 1));
    int rc = 0;
    if (rename(t->dir, gone) != 0 || bs__fsync_dir(tdir) != 0)
        rc = bs_err_set(err, BS_EIO, "cannot drop topic %s/%s: %s", tenant, topic, strerror(errno));
    else if (bs__rm_rf(gone) != 0)
        BS_LOG(BS_LOG_WARN, "log", "topic %s/%s dropped; cannot remove %s: %s", tenant, topic, gone,
               strerror(errno));
    pthread_mutex_unlock(&l->ddl_mu);
    bs__topic_unref(t);
    return rc;
}

static int seg_topic_stats(bs_log_t *lb, const char *tenant, const char *topic,
                           bs_log_topic_stats_t *out, bs_err_t *err)
{
    bs__topic_t *t = bs__topic_get((bs__seglog_t *)lb, tenant, topic);
    if (!t)
        return bs_err_set(err, BS_ENOTFOUND, "topic '%s' not found", topic ? topic : "");
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&t->mu);
    out->first_offset = t->segs[0]->base;
    out->next_offset = t->next_offset;
    for (int i = 0; i < t->nsegs; i++)
        if (t->segs[i]->end > t->segs[i]->base) {
            out->first_time_ms = t->segs[i]->first_time;
            out->last_time_ms = t->last_time;
            break;
        }
    out->bytes = t->bytes;
    out->segments = t->nsegs;
    pthread_mutex_unlock(&t->mu);
    out->appended = atomic_load(&t->appended);
    out->duplicates = atomic_load(&t->duplicates);
    out->syncs = atomic_load(&t->syncs);
    bs__topic_unref(t);
    return 0;
}

static int seg_read(bs_log_t *lb, const char *tenant, const char *topic, int64_t from, int max,
                    size_t max_bytes, bs_log_record_cb cb, void *ud, int64_t *next, bs_err_t *err)
{
    bs__topic_t *t = bs__topic_get((bs__seglog_t *)lb, tenant, topic);
    if (!t)
        return bs_err_set(err, BS_ENOTFOUND, "topic '%s' not found", topic ? topic : "");
    int rc = bs__topic_read(t, from, max, max_bytes, cb, ud, next, err);
    bs__topic_unref(t);
    return rc;
}

static int seg_offset_at(bs_log_t *lb, const char *tenant, const char *topic, int64_t time_ms,
                         int64_t *offset, bs_err_t *err)
{
    bs__topic_t *t = bs__topic_get((bs__seglog_t *)lb, tenant, topic);
    if (!t)
        return bs_err_set(err, BS_ENOTFOUND, "topic '%s' not found", topic ? topic : "");
    int rc = bs__topic_offset_at(t, time_ms, offset, err);
    bs__topic_unref(t);
    return rc;
}

/* ---- watches ---------------------------------------------------------------------------- */

static void watch_unlink(bs__seglog_t *l, bs__watch_t *w)
{
    bs__watch_t **p = &l->wbuckets[(uint64_t)w->id % BS__LOG_BUCKETS];
    while (*p && *p != w)
        p = &(*p)->hnext;
    if (*p)
        *p = w->hnext;
    if (w->tprev)
        w->tprev->tnext = w->tnext;
    else
        w->t->watches = w->tnext;
    if (w->tnext)
        w->tnext->tprev = w->tprev;
    atomic_fetch_sub(&w->t->nwatch, 1);
}

static int64_t seg_watch(bs_log_t *lb, const char *tenant, const char *topic, int64_t after,
                         bs_log_wake_cb cb, void *ud, bs_err_t *err)
{
    bs__seglog_t *l = (bs__seglog_t *)lb;
    bs__topic_t *t = bs__topic_get(l, tenant, topic);
    if (!t)
        return bs_err_set(err, BS_ENOTFOUND, "topic '%s' not found", topic ? topic : "");
    bs__watch_t *w = calloc(1, sizeof *w);
    if (!w) {
        bs__topic_unref(t);
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    pthread_mutex_lock(&l->wmu);
    /* Counted before next_offset is read: a writer that publishes after the read sees the
     * count (the topic's mu orders the two) and fires. */
    atomic_fetch_add(&t->nwatch, 1);
    pthread_mutex_lock(&t->mu);
    int64_t next = t->next_offset;
    pthread_mutex_unlock(&t->mu);
    int64_t id = ++l->next_watch;
    if (next > after || atomic_load(&t->dropped)) {
        atomic_fetch_sub(&t->nwatch, 1);
        pthread_mutex_unlock(&l->wmu);
        free(w);
        bs__topic_unref(t);
        cb(ud);
        return id;
    }
    w->id = id;
    w->after = after;
    w->t = t;
    w->cb = cb;
    w->ud = ud;
    bs__watch_t **h = &l->wbuckets[(uint64_t)id % BS__LOG_BUCKETS];
    w->hnext = *h;
    *h = w;
    w->tnext = t->watches;
    if (t->watches)
        t->watches->tprev = w;
    t->watches = w;
    pthread_mutex_unlock(&l->wmu);
    return id;
}

static void seg_unwatch(bs_log_t *lb, int64_t id)
{
    bs__seglog_t *l = (bs__seglog_t *)lb;
    pthread_mutex_lock(&l->wmu);
    bs__watch_t *w = l->wbuckets[(uint64_t)id % BS__LOG_BUCKETS];
    while (w && w->id != id)
        w = w->hnext;
    if (w)
        watch_unlink(l, w);
    pthread_mutex_unlock(&l->wmu);
    if (w) {
        bs__topic_unref(w->t);
        free(w);
    }
}

void bs__watch_fire(bs__seglog_t *l, bs__topic_t *t, int all)
{
    bs__watch_t *fired = NULL;
    pthread_mutex_lock(&l->wmu);
    pthread_mutex_lock(&t->mu);
    int64_t next = t->next_offset;
    pthread_mutex_unlock(&t->mu);
    for (bs__watch_t *w = t->watches, *nw; w; w = nw) {
        nw = w->tnext;
        if (!all && next <= w->after)
            continue;
        watch_unlink(l, w);
        w->cb(w->ud);
        w->hnext = fired;
        fired = w;
    }
    pthread_mutex_unlock(&l->wmu);
    for (bs__watch_t *w = fired, *nw; w; w = nw) {
        nw = w->hnext;
        bs__topic_unref(w->t);
        free(w);
    }
}

/* ---- metrics ---------------------------------------------------------------------------- */

static void seg_metrics(bs_log_t *lb, bs_buf_t *b)
{
    bs__seglog_t *l = (bs__seglog_t *)lb;
    int n;
    bs__topic_t **v = topics_snapshot(l, &n);
    if (!v)
        return;
    static const char *const fam[][3] = {
        {"basalt_log_records", "gauge", "Records retained in the topic."},
        {"basalt_log_bytes", "gauge", "Bytes stored for the topic, framing included."},
        {"basalt_log_appends_total", "counter", "Records appended since the log opened."},
        {"basalt_log_duplicates_total", "counter", "Appends answered from the dedup window."},
        {"basalt_log_syncs_total", "counter", "fsyncs of the topic's segments."},
    };
    for (int f = 0; f < 5; f++) {
        bs_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", fam[f][0], fam[f][2], fam[f][0],
                      fam[f][1]);
        for (int i = 0; i < n; i++) {
            bs__topic_t *t = v[i];
            long long val;
            pthread_mutex_lock(&t->mu);
            if (f == 0)
                val = (long long)(t->next_offset - t->segs[0]->base);
            else
                val = (long long)t->bytes;
            pthread_mutex_unlock(&t->mu);
            if (f == 2)
                val = (long long)atomic_load(&t->appended);
            else if (f == 3)
                val = (long long)atomic_load(&t->duplicates);
            else if (f == 4)
                val = (long long)atomic_load(&t->syncs);
            bs_buf_printf(b, "%s{tenant=\"%s\",topic=\"%s\"} %lld\n", fam[f][0], t->tenant, t->name,
                          val);
        }
    }
    for (int part = 0; part < BS__GROUP_FAMILIES; part++) {
        bs__groups_metrics(NULL, b, part);
        for (int i = 0; i < n; i++)
            bs__groups_metrics(v[i], b, part);
    }
    snapshot_free(v, n);
    bs_buf_puts(b, "# HELP basalt_log_append_seconds Time from an append queued to acknowledged.\n"
                   "# TYPE basalt_log_append_seconds histogram\n");
    uint64_t cum = 0;
    for (int k = 0; k < BS__LOG_HIST_N; k++) {
        cum += atomic_load_explicit(&l->hist[k], memory_order_relaxed);
        bs_buf_printf(b, "basalt_log_append_seconds_bucket{le=\"%g\"} %llu\n",
                      bs__log_hist_bounds[k], (unsigned long long)cum);
    }
    cum += atomic_load_explicit(&l->hist[BS__LOG_HIST_N], memory_order_relaxed);
    bs_buf_printf(b, "basalt_log_append_seconds_bucket{le=\"+Inf\"} %llu\n",
                  (unsigned long long)cum);
    bs_buf_printf(b, "basalt_log_append_seconds_sum %.9f\n",
                  (double)atomic_load_explicit(&l->hist_sum_ns, memory_order_relaxed) / 1e9);
    bs_buf_printf(b, "basalt_log_append_seconds_count %llu\n", (unsigned long long)cum);
}

/* ---- the background thread -------------------------------------------------------------- */

static void *bg_main(void *arg)
{
    bs__seglog_t *l = arg;
    pthread_mutex_lock(&l->bmu);
    while (!l->bstop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&l->bcv, &l->bmu, &ts);
        if (l->bstop)
            break;
        pthread_mutex_unlock(&l->bmu);
        int n;
        bs__topic_t **v = topics_snapshot(l, &n);
        int64_t now = bs_time_wall_ms();
        for (int i = 0; v && i < n; i++) {
            bs__retention_run(l, v[i], now);
            bs__groups_maintain(v[i]);
        }
        if (v)
            snapshot_free(v, n);
        pthread_mutex_lock(&l->bmu);
    }
    pthread_mutex_unlock(&l->bmu);
    return NULL;
}

/* ---- open and close --------------------------------------------------------------------- */

static void seg_close(bs_log_t *lb);

static const bs__log_ops_t seg_ops = {
    .name = "segments",
    .close = seg_close,
    .topic_ensure = seg_topic_ensure,
    .topic_drop = seg_topic_drop,
    .topic_stats = seg_topic_stats,
    .append_async = bs__seglog_append_async,
    .read = seg_read,
    .offset_at = seg_offset_at,
    .watch = seg_watch,
    .unwatch = seg_unwatch,
    .consumer_ensure = bs__seglog_consumer_ensure,
    .consumer_delete = bs__seglog_consumer_delete,
    .fetch_async = bs__seglog_fetch_async,
    .ack = bs__seglog_ack,
    .nack = bs__seglog_nack,
    .in_progress = bs__seglog_in_progress,
    .consumer_stats = bs__seglog_consumer_stats,
    .consumers = bs__seglog_consumers,
    .metrics = seg_metrics,
};

static void cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

static int load_all(bs__seglog_t *l, bs_err_t *err)
{
    DIR *d = opendir(l->dir);
    if (!d)
        return bs_err_set(err, BS_EIO, "cannot open %s: %s", l->dir, strerror(errno));
    struct dirent *te;
    int rc = 0;
    while (rc == 0 && (te = readdir(d))) {
        if (!bs__log_valid_name(te->d_name))
            continue;
        char tdir[1024];
        snprintf(tdir, sizeof tdir, "%s/%s", l->dir, te->d_name);
        DIR *td = opendir(tdir);
        if (!td)
            continue;
        struct dirent *e;
        while (rc == 0 && (e = readdir(td))) {
            if (e->d_name[0] == '.' && e->d_name[1] && strcmp(e->d_name, "..") != 0) {
                char left[1300];
                snprintf(left, sizeof left, "%s/%s", tdir, e->d_name);
                if (bs__rm_rf(left) != 0)
                    BS_LOG(BS_LOG_WARN, "log", "cannot remove leftover %s: %s", left,
                           strerror(errno));
                continue;
            }
            if (!bs__log_valid_name(e->d_name))
                continue;
            bs__topic_t *t = topic_load(l, te->d_name, e->d_name, err);
            if (!t) {
                rc = err ? err->code : BS_EIO;
                break;
            }
            map_insert(l, t);
        }
        closedir(td);
    }
    closedir(d);
    return rc;
}

bs_log_t *bs__log_segments_open(const bs_log_opts_t *o, bs_err_t *err)
{
    if (!o || !o->dir || !o->dir[0]) {
        bs_err_set(err, BS_EINVAL, "the log needs a directory");
        return NULL;
    }
    bs__seglog_t *l = calloc(1, sizeof *l);
    if (!l || !(l->dir = strdup(o->dir))) {
        free(l);
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    size_t dl = strlen(l->dir);
    while (dl > 1 && l->dir[dl - 1] == '/')
        l->dir[--dl] = '\0';
    l->base.ops = &seg_ops;
    pthread_mutex_init(&l->ddl_mu, NULL);
    pthread_rwlock_init(&l->map_lock, NULL);
    pthread_mutex_init(&l->qmu, NULL);
    cond_init_mono(&l->qcv);
    pthread_mutex_init(&l->wmu, NULL);
    pthread_mutex_init(&l->cmu, NULL);
    cond_init_mono(&l->ccv);
    pthread_mutex_init(&l->bmu, NULL);
    cond_init_mono(&l->bcv);
    if (mkdirs(l->dir) != 0) {
        bs_err_set(err, BS_EIO, "cannot create %s: %s", l->dir, strerror(errno));
        seg_close(&l->base);
        return NULL;
    }
    if (load_all(l, err) != 0 || bs__writer_start(l, err) != 0 || bs__consumer_start(l, err) != 0) {
        seg_close(&l->base);
        return NULL;
    }
    if (pthread_create(&l->bg, NULL, bg_main, l) != 0) {
        bs_err_set(err, BS_EINTERNAL, "cannot start the log's background thread");
        seg_close(&l->base);
        return NULL;
    }
    l->bg_started = 1;
    return &l->base;
}

static void seg_close(bs_log_t *lb)
{
    bs__seglog_t *l = (bs__seglog_t *)lb;
    if (l->bg_started) {
        pthread_mutex_lock(&l->bmu);
        l->bstop = 1;
        pthread_cond_signal(&l->bcv);
        pthread_mutex_unlock(&l->bmu);
        pthread_join(l->bg, NULL);
    }
    bs__consumer_stop(l);
    bs__writer_stop(l);
    int n;
    bs__topic_t **v = topics_snapshot(l, &n);
    for (int i = 0; v && i < n; i++) {
        bs__watch_fire(l, v[i], 1);
        bs__topic_t *t = map_remove(l, v[i]->tenant, v[i]->name);
        bs__topic_unref(t);
    }
    if (v)
        snapshot_free(v, n);
    pthread_mutex_destroy(&l->ddl_mu);
    pthread_rwlock_destroy(&l->map_lock);
    pthread_mutex_destroy(&l->qmu);
    pthread_cond_destroy(&l->qcv);
    pthread_mutex_destroy(&l->wmu);
    pthread_mutex_destroy(&l->cmu);
    pthread_cond_destroy(&l->ccv);
    pthread_mutex_destroy(&l->bmu);
    pthread_cond_destroy(&l->bcv);
    free(l->dir);
    free(l);
}
