/*
 * The metadata store's front: picks the backend by the path's prefix (a postgres:// or
 * postgresql:// URL opens meta_pg.c, anything else is a SQLite file for meta_sqlite.c)
 * and forwards each call through the backend's ops table. Also the URL redaction every
 * printer of metadata_url uses, so a password never reaches a log line or /v1/info.
 */
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "store/meta.h"
#include "store/meta_int.h"

struct bs_meta {
    const bs_meta_ops_t *ops;
    void *impl;
};

int bs_meta_is_url(const char *path)
{
    return path && (!strncmp(path, "postgres://", 11) || !strncmp(path, "postgresql://", 13));
}

void bs_meta_redact(const char *path, char *out, size_t n)
{
    if (!n)
        return;
    out[0] = 0;
    if (!path)
        return;
    size_t o = 0;
#define PUT(c)                                                                                 \
    do {                                                                                       \
        if (o + 1 < n)                                                                         \
            out[o++] = (c);                                                                    \
    } while (0)
    const char *p = path;
    if (bs_meta_is_url(path)) {
        /* scheme://[user[:password]@]host...: the userinfo ends at the last '@' before the
         * path, and the password after the first ':' in it. */
        const char *auth = strstr(path, "://") + 3;
        const char *end = auth + strcspn(auth, "/?#");
        const char *at = NULL;
        for (const char *q = auth; q < end; q++)
            if (*q == '@')
                at = q;
        const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
        for (; p < path + strlen(path); p++) {
            if (colon && p == colon + 1) {
                for (const char *s = "***"; *s; s++)
                    PUT(*s);
                p = at - 1;
                continue;
            }
            /* password=... in the query string */
            if ((*p == '?' || *p == '&') && !strncmp(p + 1, "password=", 9)) {
                PUT(*p);
                for (const char *s = "password=***"; *s; s++)
                    PUT(*s);
                p += 10;
                while (*p && *p != '&')
                    p++;
                p--;
                continue;
            }
            PUT(*p);
        }
    } else {
        for (; *p; p++)
            PUT(*p);
    }
#undef PUT
    out[o] = 0;
}

bs_meta_t *bs_meta_open_ex(const char *path, const bs_meta_opts_t *opts, bs_err_t *err)
{
    bs_meta_t *m = calloc(1, sizeof *m);
    if (!m) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    bs_meta_opts_t none = {0};
    if (bs_meta_is_url(path)) {
        m->ops = &bs__meta_pg_ops;
        m->impl = bs__meta_pg_open(path, opts ? opts : &none, err);
    } else {
        m->ops = &bs__meta_sqlite_ops;
        m->impl = bs__meta_sqlite_open(path, err);
    }
    if (!m->impl) {
        free(m);
        return NULL;
    }
    return m;
}

bs_meta_t *bs_meta_open(const char *path, bs_err_t *err) { return bs_meta_open_ex(path, NULL, err); }

void bs_meta_close(bs_meta_t *m)
{
    if (!m)
        return;
    m->ops->close(m->impl);
    free(m);
}

int bs_meta_exec(bs_meta_t *m, const char *sql, const bs_val_t *args, int nargs, int *changes,
                 bs_err_t *err)
{
    return m->ops->exec(m->impl, sql, args, nargs, changes, err);
}

int bs_meta_query(bs_meta_t *m, const char *sql, const bs_val_t *args, int nargs,
                  bs_meta_row_cb cb, void *ud, bs_err_t *err)
{
    return m->ops->query(m->impl, sql, args, nargs, cb, ud, err);
}

/* Nested transactions are flattened: a begin inside this thread's open transaction on
 * the same store only counts, its commit only uncounts, and its rollback dooms the outer
 * one (whose commit then rolls back and fails). So a write that is a transaction of its
 * own (a tenant create) can also run inside a bigger one (the first start's bootstrap). */
static __thread struct {
    bs_meta_t *m;
    int depth;
    int doomed;
} tx_tls;

int bs_meta_tx_begin(bs_meta_t *m, bs_err_t *err)
{
    if (tx_tls.m == m && tx_tls.depth > 0) {
        tx_tls.depth++;
        return 0;
    }
    int rc = m->ops->tx_begin(m->impl, err);
    if (rc == 0) {
        tx_tls.m = m;
        tx_tls.depth = 1;
        tx_tls.doomed = 0;
    }
    return rc;
}

int bs_meta_tx_commit(bs_meta_t *m, bs_err_t *err)
{
    if (tx_tls.m == m && tx_tls.depth > 1) {
        tx_tls.depth--;
        return 0;
    }
    int doomed = tx_tls.m == m && tx_tls.doomed;
    tx_tls.m = NULL;
    tx_tls.depth = 0;
    if (doomed) {
        m->ops->tx_rollback(m->impl);
        return bs_err_set(err, BS_EIO, "transaction rolled back: an inner part of it failed");
    }
    return m->ops->tx_commit(m->impl, err);
}

void bs_meta_tx_rollback(bs_meta_t *m)
{
    if (tx_tls.m == m && tx_tls.depth > 1) {
        tx_tls.depth--;
        tx_tls.doomed = 1;
        return;
    }
    tx_tls.m = NULL;
    tx_tls.depth = 0;
    m->ops->tx_rollback(m->impl);
}
int bs_meta_schema_version(bs_meta_t *m) { return m ? m->ops->schema_version(m->impl) : 0; }
int bs_meta_ready(bs_meta_t *m) { return m && m->ops->ready(m->impl); }
const char *bs_meta_backend(const bs_meta_t *m) { return m ? m->ops->name : "sqlite"; }
bs_meta_dialect_t bs_meta_dialect(const bs_meta_t *m)
{
    return m ? m->ops->dialect : BS_META_SQLITE;
}

int bs_meta_notify(bs_meta_t *m, const char *channel, const char *payload, bs_err_t *err)
{
    return m->ops->notify ? m->ops->notify(m->impl, channel, payload, err) : 0;
}

int bs_meta_listen(bs_meta_t *m, const char *channel, int wake_fd, int timeout_ms,
                   bs_meta_notify_cb cb, void *ud, bs_err_t *err)
{
    if (m->ops->listen)
        return m->ops->listen(m->impl, channel, wake_fd, timeout_ms, cb, ud, err);
    /* SQLite: nothing to listen to (one process owns the file); wait for the wake fd. */
    struct pollfd pfd = {.fd = wake_fd, .events = POLLIN};
    poll(&pfd, wake_fd >= 0 ? 1 : 0, timeout_ms);
    return 0;
}

void bs_meta_stats(bs_meta_t *m, bs_meta_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (m && m->ops->stats)
        m->ops->stats(m->impl, out);
}

int bs_meta_row_is_null(const bs_meta_row_t *r, int col) { return r->ops->row_is_null(r, col); }
int64_t bs_meta_row_int(const bs_meta_row_t *r, int col) { return r->ops->row_int(r, col); }
double bs_meta_row_double(const bs_meta_row_t *r, int col) { return r->ops->row_double(r, col); }
const char *bs_meta_row_text(const bs_meta_row_t *r, int col) { return r->ops->row_text(r, col); }
const void *bs_meta_row_blob(const bs_meta_row_t *r, int col, size_t *len)
{
    return r->ops->row_blob(r, col, len);
}
