/* Redis connections on hiredis; see kv.h for the threading and failure rules. */
#include "base/crypto.h"
#include "store/kv.h"

#include <ctype.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "base/time.h"

struct bs_kv {
    bs_kv_url_t url;
    bs_kv_opts_t o;
    redisContext *c;          /* NULL while disconnected */
    uint64_t next_attempt_ns; /* no connect attempt before this (backoff) */
    int backoff_ms;           /* the wait after the next failed attempt */
    int ever_connected;
    _Atomic uint64_t commands, errors, reconnects;
    _Atomic int connected;
};

/* ---- URLs ------------------------------------------------------------------------------- */

/* Percent-decodes s[0..n) into out (cap bytes with the NUL). -1 if malformed or too long. */
static int pct_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = bs_hex_digit((unsigned char)s[i + 1]);
            int lo = bs_hex_digit((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            ch = hi * 16 + lo;
            i += 2;
        }
        if (k + 1 >= cap || ch == 0)
            return -1;
        out[k++] = (char)ch;
    }
    out[k] = '\0';
    return 0;
}

static int parse_int(const char *s, size_t n, int min, int max, int *out)
{
    if (n == 0 || n > 10)
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < min || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

int bs_kv_parse_url(const char *url, bs_kv_url_t *out, bs_err_t *err)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (!url)
        return bs_err_set(err, BS_EINVAL, "redis URL is empty");
    if (strncmp(url, "unix:", 5) == 0) {
        const char *p = url + 5;
        if (strncmp(p, "//", 2) == 0)
            p += 2;
        const char *q = strchr(p, '?');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        if (n == 0 || p[0] != '/' || n >= sizeof out->unix_path)
            return bs_err_set(err, BS_EINVAL,
                              "redis URL '%.100s': unix: needs an absolute socket path of at most "
                              "%zu bytes",
                              url, sizeof out->unix_path - 1);
        memcpy(out->unix_path, p, n);
        if (q) {
            if (strncmp(q, "?db=", 4) != 0 || parse_int(q + 4, strlen(q + 4), 0, 1000000, &out->db))
                return bs_err_set(
                    err, BS_EINVAL,
                    "redis URL '%.100s': the only query is ?db=N (N a database number)", url);
        }
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0)
        return bs_err_set(err, BS_EINVAL,
                          "redis URL '%.100s' must start with redis:// or unix: (rediss:// TLS is "
                          "not supported)",
                          url);
    const char *p = url + 8;
    const char *slash = strchr(p, '/');
    const char *end = slash ? slash : p + strlen(p);
    const char *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pass = colon ? colon + 1 : p;
        if (colon && pct_decode(p, (size_t)(colon - p), out->user, sizeof out->user) < 0)
            return bs_err_set(err, BS_EINVAL, "redis URL: the user name is malformed or too long");
        if (pct_decode(pass, (size_t)(at - pass), out->password, sizeof out->password) < 0)
            return bs_err_set(err, BS_EINVAL, "redis URL: the password is malformed or too long");
        p = at + 1;
    }
    const char *hend = end;
    if (*p == '[') { /* [::1]:6379 */
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (!rb)
            return bs_err_set(err, BS_EINVAL, "redis URL '%.100s': unclosed '[' in the host", url);
        if ((size_t)(rb - p - 1) >= sizeof out->host)
            return bs_err_set(err, BS_EINVAL, "redis URL: the host is too long");
        memcpy(out->host, p + 1, (size_t)(rb - p - 1));
        p = rb + 1;
        if (p < end && *p != ':')
            return bs_err_set(err, BS_EINVAL, "redis URL '%.100s': junk after the host", url);
        hend = p;
    } else {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        hend = colon ? colon : end;
        if ((size_t)(hend - p) >= sizeof out->host)
            return bs_err_set(err, BS_EINVAL, "redis URL: the host is too long");
        memcpy(out->host, p, (size_t)(hend - p));
    }
    if (!out->host[0])
        return bs_err_set(err, BS_EINVAL, "redis URL '%.100s' names no host", url);
    if (hend < end && *hend == ':' &&
        parse_int(hend + 1, (size_t)(end - hend - 1), 1, 65535, &out->port) < 0)
        return bs_err_set(err, BS_EINVAL, "redis URL '%.100s': the port must be 1-65535", url);
    if (slash && slash[1] && parse_int(slash + 1, strlen(slash + 1), 0, 1000000, &out->db) < 0)
        return bs_err_set(err, BS_EINVAL, "redis URL '%.100s': the path must be a database number",
                          url);
    return 0;
}

/* ---- replies ------------------------------------------------------------------------------ */

/* Frees what r points to (not r itself): strings and nested arrays. */
static void free_fields(bs_kv_reply_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        free_fields(&r->elem[i]);
    free(r->elem);
    free(r->str);
}

void bs_kv_reply_free(bs_kv_reply_t *r)
{
    if (!r)
        return;
    free_fields(r);
    free(r);
}

/* Copies a hiredis reply into dst (fields zeroed first). 0 or -1 (out of memory). */
static int copy_reply(bs_kv_reply_t *dst, const redisReply *src)
{
    memset(dst, 0, sizeof *dst);
    switch (src->type) {
    case REDIS_REPLY_INTEGER:
        dst->type = BS_KV_INT;
        dst->integer = src->integer;
        return 0;
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        dst->type = src->type == REDIS_REPLY_STRING   ? BS_KV_STR
                    : src->type == REDIS_REPLY_STATUS ? BS_KV_STATUS
                                                      : BS_KV_ERROR;
        dst->str = malloc(src->len + 1);
        if (!dst->str)
            return -1;
        memcpy(dst->str, src->str, src->len);
        dst->str[src->len] = '\0';
        dst->len = src->len;
        return 0;
    case REDIS_REPLY_ARRAY:
        dst->type = BS_KV_ARRAY;
        if (src->elements == 0)
            return 0;
        dst->elem = calloc(src->elements, sizeof *dst->elem);
        if (!dst->elem)
            return -1;
        dst->n = src->elements;
        for (size_t i = 0; i < src->elements; i++)
            if (copy_reply(&dst->elem[i], src->element[i]) < 0)
                return -1;
        return 0;
    default:
        dst->type = BS_KV_NIL;
        return 0;
    }
}

static bs_kv_reply_t *take_reply(redisReply *r)
{
    bs_kv_reply_t *out = calloc(1, sizeof *out);
    if (out && copy_reply(out, r) < 0) {
        bs_kv_reply_free(out);
        out = NULL;
    }
    freeReplyObject(r);
    return out;
}

void bs_kv_script_init(bs_kv_script_t *s, const char *src)
{
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)src, strlen(src), md);
    s->src = src;
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(s->sha + 2 * i, 3, "%02x", md[i]);
}

/* ---- SIGPIPE ------------------------------------------------------------------------------- */

/* hiredis writes with write(2): a write to a connection the server has reset raises
 * SIGPIPE, whose default action ends the process. Around our I/O the signal is blocked
 * in this thread, and one it raised (pending on this thread) is consumed before the mask
 * is restored, so nothing depends on the process ignoring SIGPIPE. */
typedef struct {
    sigset_t old;
    int was_blocked;
} pipe_guard_t;

static void pipe_block(pipe_guard_t *g)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &g->old);
    g->was_blocked = sigismember(&g->old, SIGPIPE);
}

static void pipe_restore(pipe_guard_t *g)
{
    if (g->was_blocked)
        return;
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&set, NULL, &zero) > 0)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* ---- connections -------------------------------------------------------------------------- */

bs_kv_t *bs_kv_new(const char *url, const bs_kv_opts_t *opts, bs_err_t *err)
{
    bs_kv_url_t u;
    if (bs_kv_parse_url(url, &u, err) < 0)
        return NULL;
    bs_kv_t *kv = calloc(1, sizeof *kv);
    if (!kv) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    kv->url = u;
    if (opts)
        kv->o = *opts;
    if (kv->o.connect_timeout_ms <= 0)
        kv->o.connect_timeout_ms = 1000;
    if (kv->o.command_timeout_ms <= 0)
        kv->o.command_timeout_ms = 1000;
    if (kv->o.backoff_min_ms <= 0)
        kv->o.backoff_min_ms = 100;
    if (kv->o.backoff_max_ms < kv->o.backoff_min_ms)
        kv->o.backoff_max_ms = kv->o.backoff_min_ms > 5000 ? kv->o.backoff_min_ms : 5000;
    kv->backoff_ms = kv->o.backoff_min_ms;
    return kv;
}

static void drop(bs_kv_t *kv)
{
    if (kv->c)
        redisFree(kv->c);
    kv->c = NULL;
    atomic_store(&kv->connected, 0);
}

void bs_kv_disconnect(bs_kv_t *kv)
{
    drop(kv);
    kv->next_attempt_ns = 0;
}

void bs_kv_free(bs_kv_t *kv)
{
    if (!kv)
        return;
    drop(kv);
    free(kv);
}

static struct timeval tv_ms(int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

/* One command on a fresh connection during connect (AUTH, SELECT): 0, or -1 with err. */
static int setup_command(bs_kv_t *kv, int argc, const char **argv, bs_err_t *err)
{
    redisReply *r = redisCommandArgv(kv->c, argc, argv, NULL);
    if (!r)
        return bs_err_set(err, BS_EUNAVAIL, "redis %s: %s", argv[0],
                          kv->c->errstr[0] ? kv->c->errstr : "no reply");
    int bad = r->type == REDIS_REPLY_ERROR;
    if (bad)
        bs_err_set(err, BS_EUNAVAIL, "redis refused %s: %.200s", argv[0], r->str);
    freeReplyObject(r);
    return bad ? -1 : 0;
}

static int fail_connect(bs_kv_t *kv, bs_err_t *err)
{
    drop(kv);
    kv->next_attempt_ns = bs_time_mono_ns() + (uint64_t)kv->backoff_ms * 1000000u;
    kv->backoff_ms =
        kv->backoff_ms * 2 > kv->o.backoff_max_ms ? kv->o.backoff_max_ms : kv->backoff_ms * 2;
    return err ? err->code : BS_EUNAVAIL;
}

static int do_connect(bs_kv_t *kv, bs_err_t *err)
{
    if (kv->c)
        return 0;
    uint64_t now = bs_time_mono_ns();
    if (now < kv->next_attempt_ns)
        return bs_err_set(err, BS_EUNAVAIL, "redis is unreachable (next attempt in %llu ms)",
                          (unsigned long long)((kv->next_attempt_ns - now) / 1000000u));
    struct timeval ct = tv_ms(kv->o.connect_timeout_ms);
    kv->c = kv->url.unix_path[0] ? redisConnectUnixWithTimeout(kv->url.unix_path, ct)
                                 : redisConnectWithTimeout(kv->url.host, kv->url.port, ct);
    if (!kv->c) {
        bs_err_set(err, BS_EUNAVAIL, "redis: out of memory connecting");
        return fail_connect(kv, err);
    }
    if (kv->c->err) {
        if (kv->url.unix_path[0])
            bs_err_set(err, BS_EUNAVAIL, "cannot connect to redis at %s: %s", kv->url.unix_path,
                       kv->c->errstr);
        else
            bs_err_set(err, BS_EUNAVAIL, "cannot connect to redis at %s:%d: %s", kv->url.host,
                       kv->url.port, kv->c->errstr);
        return fail_connect(kv, err);
    }
    if (redisSetTimeout(kv->c, tv_ms(kv->o.command_timeout_ms)) != REDIS_OK) {
        bs_err_set(err, BS_EUNAVAIL, "redis: cannot set the command timeout");
        return fail_connect(kv, err);
    }
    if (!kv->url.unix_path[0])
        redisEnableKeepAlive(kv->c);
    if (kv->url.password[0]) {
        const char *a3[] = {"AUTH", kv->url.user, kv->url.password};
        const char *a2[] = {"AUTH", kv->url.password};
        if (setup_command(kv, kv->url.user[0] ? 3 : 2, kv->url.user[0] ? a3 : a2, err) < 0)
            return fail_connect(kv, err);
    }
    if (kv->url.db) {
        char db[16];
        snprintf(db, sizeof db, "%d", kv->url.db);
        const char *a[] = {"SELECT", db};
        if (setup_command(kv, 2, a, err) < 0)
            return fail_connect(kv, err);
    }
    kv->backoff_ms = kv->o.backoff_min_ms;
    kv->next_attempt_ns = 0;
    if (kv->ever_connected)
        atomic_fetch_add(&kv->reconnects, 1);
    kv->ever_connected = 1;
    atomic_store(&kv->connected, 1);
    return 0;
}

/* The connection failed under a command: drop it; the next call reconnects at once (a
 * server restart is over quickly), and the backoff applies if that attempt fails too. */
static int fail_io(bs_kv_t *kv, int n_cmds, bs_err_t *err)
{
    if (kv->c && kv->c->err == REDIS_ERR_IO && strcmp(kv->c->errstr, strerror(EAGAIN)) == 0)
        bs_err_set(err, BS_EUNAVAIL, "redis did not answer within %d ms (command_timeout)",
                   kv->o.command_timeout_ms);
    else
        bs_err_set(err, BS_EUNAVAIL, "redis connection lost: %s",
                   kv->c && kv->c->errstr[0] ? kv->c->errstr : "no reply");
    atomic_fetch_add(&kv->errors, (uint64_t)n_cmds);
    drop(kv);
    kv->next_attempt_ns = 0;
    return BS_EUNAVAIL;
}

#define ARGV_STACK 16

/* Appends one command to the output buffer (no I/O). 0 or BS_ENOMEM. */
static int append(bs_kv_t *kv, const bs_kv_cmd_t *cmd, bs_err_t *err)
{
    int extra = cmd->script ? 3 : 0;
    int total = cmd->argc + extra;
    const char *sv[ARGV_STACK] = {0};
    size_t sl[ARGV_STACK] = {0};
    const char **av = sv;
    size_t *al = sl;
    if (total > ARGV_STACK) {
        av = malloc((size_t)total * sizeof *av);
        al = malloc((size_t)total * sizeof *al);
        if (!av || !al) {
            free(av);
            free(al);
            return bs_err_set(err, BS_ENOMEM, "out of memory");
        }
    }
    char nkeys[16];
    if (cmd->script) {
        snprintf(nkeys, sizeof nkeys, "%d", cmd->nkeys);
        av[0] = "EVALSHA";
        av[1] = cmd->script->sha;
        av[2] = nkeys;
    }
    for (int i = 0; i < total; i++) {
        if (i >= extra)
            av[i] = cmd->argv[i - extra];
        al[i] = i >= extra && cmd->lens ? cmd->lens[i - extra] : strlen(av[i]);
    }
    int rc = redisAppendCommandArgv(kv->c, total, av, al);
    if (av != sv) {
        free(av);
        free(al);
    }
    return rc == REDIS_OK ? 0 : bs_err_set(err, BS_ENOMEM, "out of memory");
}

static int is_noscript(const bs_kv_reply_t *r)
{
    return r && r->type == BS_KV_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

/* Writes what append() queued and reads n replies into out. 0, or an error with out freed. */
static int round_trip(bs_kv_t *kv, int n, bs_kv_reply_t **out, bs_err_t *err)
{
    atomic_fetch_add(&kv->commands, (uint64_t)n);
    for (int i = 0; i < n; i++)
        out[i] = NULL;
    for (int i = 0; i < n; i++) {
        void *r = NULL;
        if (redisGetReply(kv->c, &r) != REDIS_OK || !r) {
            for (int j = 0; j < i; j++) {
                bs_kv_reply_free(out[j]);
                out[j] = NULL;
            }
            return fail_io(kv, n, err);
        }
        out[i] = take_reply(r);
        if (!out[i]) {
            /* The remaining replies are still in flight: the connection cannot be reused. */
            for (int j = 0; j < i; j++) {
                bs_kv_reply_free(out[j]);
                out[j] = NULL;
            }
            drop(kv);
            return bs_err_set(err, BS_ENOMEM, "out of memory reading a redis reply");
        }
        if (out[i]->type == BS_KV_ERROR && !is_noscript(out[i]))
            atomic_fetch_add(&kv->errors, 1);
    }
    return 0;
}

int bs_kv_connect(bs_kv_t *kv, bs_err_t *err)
{
    pipe_guard_t g;
    pipe_block(&g);
    int rc = do_connect(kv, err);
    pipe_restore(&g);
    return rc;
}

static int pipeline(bs_kv_t *kv, const bs_kv_cmd_t *cmds, int n, bs_kv_reply_t **out,
                    bs_err_t *err);

int bs_kv_pipeline(bs_kv_t *kv, const bs_kv_cmd_t *cmds, int n, bs_kv_reply_t **out, bs_err_t *err)
{
    if (n <= 0)
        return 0;
    pipe_guard_t g;
    pipe_block(&g);
    int rc = pipeline(kv, cmds, n, out, err);
    pipe_restore(&g);
    return rc;
}

static int pipeline(bs_kv_t *kv, const bs_kv_cmd_t *cmds, int n, bs_kv_reply_t **out, bs_err_t *err)
{
    for (int i = 0; i < n; i++)
        out[i] = NULL;
    int rc = do_connect(kv, err);
    if (rc)
        return rc;
    for (int i = 0; i < n; i++)
        if ((rc = append(kv, &cmds[i], err)) != 0) {
            drop(kv); /* a half-written pipeline must not be followed by another */
            return rc;
        }
    if ((rc = round_trip(kv, n, out, err)) != 0)
        return rc;
    /* NOSCRIPT: load each script concerned once, then send those commands again. */
    int again = 0;
    for (int i = 0; i < n; i++)
        again += is_noscript(out[i]) && cmds[i].script;
    if (!again)
        return 0;
    int *idx = malloc((size_t)again * sizeof *idx);
    bs_kv_reply_t **re = malloc((size_t)(again * 2) * sizeof *re);
    if (!idx || !re) {
        free(idx);
        free(re);
        for (int i = 0; i < n; i++) {
            bs_kv_reply_free(out[i]);
            out[i] = NULL;
        }
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    int k = 0, loads = 0;
    for (int i = 0; i < n; i++) {
        if (!(is_noscript(out[i]) && cmds[i].script))
            continue;
        int seen = 0;
        for (int j = 0; j < k; j++)
            seen |= cmds[idx[j]].script == cmds[i].script;
        if (!seen) {
            const char *a[] = {"SCRIPT", "LOAD", cmds[i].script->src};
            bs_kv_cmd_t load = {3, a, NULL, NULL, 0};
            if ((rc = append(kv, &load, err)) != 0)
                break;
            loads++;
        }
        idx[k++] = i;
    }
    for (int j = 0; rc == 0 && j < k; j++)
        rc = append(kv, &cmds[idx[j]], err);
    if (rc == 0)
        rc = round_trip(kv, loads + k, re, err);
    else
        drop(kv);
    if (rc == 0) {
        for (int j = 0; j < loads; j++)
            bs_kv_reply_free(re[j]);
        for (int j = 0; j < k; j++) {
            bs_kv_reply_free(out[idx[j]]);
            out[idx[j]] = re[loads + j];
        }
    } else {
        for (int i = 0; i < n; i++) {
            bs_kv_reply_free(out[i]);
            out[i] = NULL;
        }
    }
    free(idx);
    free(re);
    return rc;
}

int bs_kv_command(bs_kv_t *kv, int argc, const char *const *argv, const size_t *lens,
                  bs_kv_reply_t **out, bs_err_t *err)
{
    bs_kv_cmd_t cmd = {argc, argv, lens, NULL, 0};
    return bs_kv_pipeline(kv, &cmd, 1, out, err);
}

int bs_kv_eval(bs_kv_t *kv, const bs_kv_script_t *script, int nkeys, int argc,
               const char *const *argv, bs_kv_reply_t **out, bs_err_t *err)
{
    bs_kv_cmd_t cmd = {argc, argv, NULL, script, nkeys};
    return bs_kv_pipeline(kv, &cmd, 1, out, err);
}

void bs_kv_stats(const bs_kv_t *kv, bs_kv_stats_t *out)
{
    bs_kv_t *m = (bs_kv_t *)kv; /* atomics loaded through a non-const pointer */
    out->commands = atomic_load(&m->commands);
    out->errors = atomic_load(&m->errors);
    out->reconnects = atomic_load(&m->reconnects);
    out->connected = atomic_load(&m->connected);
}
