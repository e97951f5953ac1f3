/*
 * PostgreSQL backend of the metadata store (see meta.h; meta.c dispatches here), on libpq.
 *
 * - A pool of up to pool_size connections, opened on first use. A statement outside a
 *   transaction takes any free connection for one call (waiting, counted, when all are
 *   busy); results are read whole (PQexecPrepared), so the connection is back in the pool
 *   before the row callbacks run and a callback may run further statements.
 * - A transaction pins one connection to the calling thread (thread-local) until commit
 *   or rollback; every statement of that thread goes to it, callbacks included.
 * - Write serialisation. SQLite's BEGIN IMMEDIATE gives the code above one writer at a
 *   time: a transaction that reads (say) the highest version number and inserts the next
 *   one is never interleaved with another writer. PostgreSQL's default READ COMMITTED
 *   does not give that (two replicas would read the same maximum), and SERIALIZABLE would
 *   turn it into retry loops the callers do not have. So every transaction begins with
 *   pg_advisory_xact_lock(WRITE_LOCK): one cluster-wide lock, held to commit, taken
 *   by the transactions of every replica — the same one-writer-at-a-time model SQLite has
 *   on one machine, at the same cost (writes are serial; reads are not blocked). Single
 *   statements outside a transaction take the same lock in an implicit transaction, as a
 *   single SQLite write does.
 * - `?` placeholders become `$n` (outside quoted literals and identifiers); parameter
 *   types come from the bound values (int8, float8, text, bytea; NULL unknown) and the
 *   statement is prepared once per connection per (SQL text pointer, types) pair.
 * - Errors: class 23 (integrity; 23505 unique) -> BS_ECONFLICT as SQLite's constraint
 *   errors; lost, refused or timed-out connections -> BS_EUNAVAIL (the connection is
 *   dropped and a new one made on next use); 40P01/40001 retried for single statements.
 *   connect_timeout, TCP keepalives and statement/lock timeouts bound every call.
 * - Migrations run under a session advisory lock, so replicas starting together on an
 *   empty database apply them once.
 */
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/crypto.h"
#include "store/meta.h"
#include "store/meta_int.h"

#define STMT_CACHE 96
#define MAX_ARGS 64
#define RETRIES 3
#define POOL_WAIT_MS 10000
/* Fixed advisory-lock keys, arbitrary ("bslt" and "bslm" in ASCII as 32-bit numbers). */
#define WRITE_LOCK "1651731572"
#define MIGRATE_LOCK "1651731565"
#define WRITE_LOCK_BEGIN "BEGIN; SELECT pg_advisory_xact_lock(" WRITE_LOCK ")"

/* Bounds on every call: a stuck server or a held lock fails the call within seconds (a
 * 503 to the client) instead of hanging a worker. Given before the URL, so options in
 * the URL override them. */
static const char *const CONN_KEYS[] = {"connect_timeout",     "keepalives",    "keepalives_idle",
                                        "keepalives_interval", "keepalives_count",
                                        "options",             "application_name", "dbname",
                                        NULL};

#define OID_BOOL 16
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_TEXT 25
#define OID_FLOAT8 701

typedef struct {
    char *sql;       /* the statement's text (owned copy: the key with sig) */
    size_t len;
    uint64_t sig;    /* parameter types */
    char name[12];
} pg_stmt_t;

typedef struct {
    PGconn *c;
    int in_use;
    unsigned gen; /* the pool's generation when connected */
    int reused;   /* acquire handed it out already connected (it may have gone stale) */
    pg_stmt_t cache[STMT_CACHE];
    int n_cache, next_name;
} pg_conn_t;

typedef struct pg_store {
    char *url;
    char safe[512]; /* url without the password, for messages */
    char app_name[64];
    int pool_size;
    pg_conn_t *conns;
    pthread_mutex_t lock;
    pthread_cond_t freed;
    int version;
    /* Bumped when a connection is found lost: the server went away, so the other idle
     * connections are stale too and are replaced on their next use instead of each
     * failing one call first. */
    unsigned gen;
    /* 1 from a lost or refused connection until a connection is made again; while it is
     * set the probe thread tries to connect once a second, so it clears by itself when
     * the server is back even if nothing else uses the store (readiness follows it) */
    _Atomic int down;
    pthread_t probe;
    int probe_started, probe_stop; /* under lock */
    pthread_cond_t probe_wake;
    /* counters (under lock) */
    int in_use;
    uint64_t waits, errors, unavailable;
    /* the LISTEN connection (one listening thread) */
    pthread_mutex_t listen_lock;
    PGconn *lc;
    char listening[8][64];
    int n_listening;
} pg_t;

/* The transaction this thread has open, if any. A thread has at most one (SQLite has no
 * nested transactions either). broken: the connection died inside the transaction. */
static _Thread_local struct {
    pg_t *s;
    pg_conn_t *c;
    int broken;
} tls_tx;

/* ---- rows ---- */

typedef struct {
    void **bufs;
    int n, cap;
} row_aux_t;

static int row_is_null(const bs_meta_row_t *r, int col) { return PQgetisnull(r->p, r->i, col); }

static int64_t row_int(const bs_meta_row_t *r, int col)
{
    const char *v = PQgetvalue(r->p, r->i, col);
    if (PQftype(r->p, col) == OID_BOOL)
        return v[0] == 't';
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (*end == '.' || *end == 'e' || *end == 'E' || errno == ERANGE)
        return (int64_t)strtod(v, NULL); /* a REAL read as an integer, as SQLite casts */
    return x;
}

static double row_double(const bs_meta_row_t *r, int col)
{
    const char *v = PQgetvalue(r->p, r->i, col);
    if (PQftype(r->p, col) == OID_BOOL)
        return v[0] == 't';
    return strtod(v, NULL);
}

static const char *row_text(const bs_meta_row_t *r, int col)
{
    return PQgetvalue(r->p, r->i, col); /* "" for NULL */
}

static const void *row_blob(const bs_meta_row_t *r, int col, size_t *len)
{
    const char *v = PQgetvalue(r->p, r->i, col);
    size_t n = (size_t)PQgetlength(r->p, r->i, col);
    if (PQftype(r->p, col) != OID_BYTEA || n < 2 || v[0] != '\\' || v[1] != 'x') {
        *len = PQgetisnull(r->p, r->i, col) ? 0 : n;
        return *len ? v : NULL;
    }
    /* bytea in text format is "\x" + hex (bytea_output=hex, the default since 9.0):
     * decode into a buffer that lives until the callback returns. */
    row_aux_t *aux = r->aux;
    size_t out_n = (n - 2) / 2;
    *len = out_n;
    if (!out_n)
        return NULL;
    unsigned char *out = malloc(out_n);
    if (!out || (aux->n == aux->cap && !(aux->bufs = realloc(aux->bufs, sizeof(void *) *
                                                                          (size_t)(aux->cap = aux->cap ? aux->cap * 2 : 4))))) {
        free(out);
        *len = 0;
        return NULL;
    }
    aux->bufs[aux->n++] = out;
    for (size_t i = 0; i < out_n; i++) {
        int hi = bs_hex_digit(v[2 + 2 * i]), lo = bs_hex_digit(v[3 + 2 * i]);
        out[i] = (unsigned char)((hi < 0 ? 0 : hi) << 4 | (lo < 0 ? 0 : lo));
    }
    return out;
}

static void aux_clear(row_aux_t *aux)
{
    for (int i = 0; i < aux->n; i++)
        free(aux->bufs[i]);
    aux->n = 0;
}

/* ---- SQL text ---- */

static int is_word(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

/* Copies sql to a new string with each `?` outside quotes replaced by $1, $2, ...
 * Quoted literals ('...', with '' inside), identifiers ("...") and comments are kept. */
static char *rewrite_params(const char *sql)
{
    size_t n = strlen(sql), cap = n + 1, o = 0;
    for (const char *p = sql; *p; p++)
        cap += *p == '?' ? 24 : 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    int argn = 0;
    for (const char *p = sql; *p;) {
        if (*p == '\'' || *p == '"') {
            char q = *p;
            out[o++] = *p++;
            while (*p) {
                if (*p == q && p[1] == q) {
                    out[o++] = *p++;
                    out[o++] = *p++;
                    continue;
                }
                if (*p == q)
                    break;
                out[o++] = *p++;
            }
            if (*p)
                out[o++] = *p++;
        } else if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n')
                out[o++] = *p++;
        } else if (*p == '?') {
            /* `? IS [NOT] NULL` leaves a NULL parameter's type undetermined (PostgreSQL
             * refuses the statement): give it one; only its nullness is tested. */
            const char *q = p + 1;
            while (*q == ' ')
                q++;
            int is_null_test = !strncasecmp(q, "IS", 2) && !is_word((unsigned char)q[2]);
            o += (size_t)snprintf(out + o, cap - o, is_null_test ? "CAST($%d AS TEXT)" : "$%d",
                                  ++argn);
            p++;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = 0;
    return out;
}

/* The SQLite migration text with its column types mapped for PostgreSQL, on word
 * boundaries and outside quoted literals: INTEGER -> BIGINT (SQLite integers are 64-bit),
 * REAL -> DOUBLE PRECISION, BLOB -> BYTEA, and TEXT -> TEXT COLLATE "C": SQLite compares
 * text bytewise (BINARY), and the code relies on it (list cursors `name > ?` with ORDER
 * BY name, the routing snapshot's strcmp order); the database's default collation (say
 * en_US) would order 'B' < 'a' differently. */
char *bs__meta_pg_map_types(const char *sql)
{
    static const struct {
        const char *from, *to;
    } map[] = {{"INTEGER", "BIGINT"},
               {"REAL", "DOUBLE PRECISION"},
               {"BLOB", "BYTEA"},
               {"TEXT", "TEXT COLLATE \"C\""}};
    size_t cap = strlen(sql) * 2 + 1, o = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    for (const char *p = sql; *p;) {
        if (*p == '\'') {
            out[o++] = *p++;
            while (*p && *p != '\'')
                out[o++] = *p++;
            if (*p)
                out[o++] = *p++;
            continue;
        }
        if (is_word((unsigned char)*p) && (p == sql || !is_word((unsigned char)p[-1]))) {
            size_t w = 0;
            while (is_word((unsigned char)p[w]))
                w++;
            const char *to = NULL;
            for (size_t i = 0; i < sizeof map / sizeof *map; i++)
                if (strlen(map[i].from) == w && !strncasecmp(p, map[i].from, w))
                    to = map[i].to;
            if (to) {
                o += (size_t)snprintf(out + o, cap - o, "%s", to);
            } else {
                memcpy(out + o, p, w);
                o += w;
            }
            p += w;
            continue;
        }
        out[o++] = *p++;
    }
    out[o] = 0;
    return out;
}

/* ---- errors ---- */

static int state_unavailable(const char *st)
{
    /* 08: connection exception; 57P01-03: shutdown / cannot connect now; 57014: statement
     * timeout; 55P03: lock timeout; 53: insufficient resources (too many connections) */
    return st && (!strncmp(st, "08", 2) || !strncmp(st, "57P", 3) || !strcmp(st, "57014") ||
                  !strcmp(st, "55P03") || !strncmp(st, "53", 2));
}

static void first_line(char *dst, size_t n, const char *msg)
{
    snprintf(dst, n, "%s", msg ? msg : "error");
    dst[strcspn(dst, "\n")] = 0;
}

static void count_error(pg_t *s, int unavailable)
{
    pthread_mutex_lock(&s->lock);
    s->errors++;
    s->unavailable += unavailable != 0;
    pthread_mutex_unlock(&s->lock);
}

/* ---- connections ---- */

/* Must hold lock. */
static void mark_down(pg_t *s)
{
    atomic_store(&s->down, 1);
    pthread_cond_signal(&s->probe_wake);
}

static void conn_drop(pg_conn_t *c)
{
    if (c->c)
        PQfinish(c->c);
    c->c = NULL;
    for (int i = 0; i < c->n_cache; i++)
        free(c->cache[i].sql);
    c->n_cache = 0;
}

static void quiet_notices(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* "relation already exists, skipping" and the like: not for stderr */
}

static PGconn *connect_db(pg_t *s, int *rc, bs_err_t *err)
{
    *rc = BS_EUNAVAIL;
    const char *vals[] = {"5",  "1", "10", "3", "3",
                          "-c statement_timeout=10000 -c lock_timeout=8000 "
                          "-c idle_in_transaction_session_timeout=60000 "
                          "-c client_min_messages=warning",
                          s->app_name, s->url, NULL};
    PGconn *c = PQconnectdbParams(CONN_KEYS, vals, 1);
    if (!c) {
        bs_err_set(err, BS_EUNAVAIL, "metadata store %s: out of memory", s->safe);
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        char msg[256];
        first_line(msg, sizeof msg, PQerrorMessage(c));
        bs_err_set(err, BS_EUNAVAIL, "metadata store %s unavailable: %s", s->safe, msg);
        PQfinish(c);
        pthread_mutex_lock(&s->lock);
        mark_down(s);
        pthread_mutex_unlock(&s->lock);
        return NULL;
    }
    PQsetNoticeProcessor(c, quiet_notices, NULL);
    atomic_store(&s->down, 0);
    *rc = 0;
    return c;
}

/* Takes a connection: this thread's transaction's, or a free one from the pool (waiting
 * for one, counted). Connects it if it has none. */
static pg_conn_t *acquire(pg_t *s, int *rc, bs_err_t *err)
{
    *rc = BS_EUNAVAIL;
    if (tls_tx.s == s) {
        if (tls_tx.broken || !tls_tx.c->c) {
            bs_err_set(err, BS_EUNAVAIL, "metadata store %s unavailable: connection lost",
                       s->safe);
            return NULL;
        }
        return tls_tx.c;
    }
    pthread_mutex_lock(&s->lock);
    pg_conn_t *c = NULL;
    int waited = 0;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += POOL_WAIT_MS / 1000;
    for (;;) {
        /* prefer a connected one */
        for (int i = 0; i < s->pool_size && !c; i++)
            if (!s->conns[i].in_use && s->conns[i].c)
                c = &s->conns[i];
        for (int i = 0; i < s->pool_size && !c; i++)
            if (!s->conns[i].in_use)
                c = &s->conns[i];
        if (c)
            break;
        if (!waited) {
            s->waits++;
            waited = 1;
        }
        if (pthread_cond_timedwait(&s->freed, &s->lock, &until) == ETIMEDOUT) {
            s->errors++;
            s->unavailable++;
            pthread_mutex_unlock(&s->lock);
            bs_err_set(err, BS_EUNAVAIL, "metadata store: no free connection within %d s",
                       POOL_WAIT_MS / 1000);
            return NULL;
        }
    }
    c->in_use = 1;
    s->in_use++;
    unsigned gen = s->gen;
    pthread_mutex_unlock(&s->lock);
    if (c->c && (PQstatus(c->c) != CONNECTION_OK || c->gen != gen))
        conn_drop(c);
    c->gen = gen;
    c->reused = c->c != NULL;
    if (!c->c && !(c->c = connect_db(s, rc, err))) {
        pthread_mutex_lock(&s->lock);
        mark_down(s);
        c->in_use = 0;
        s->in_use--;
        s->errors++;
        s->unavailable++;
        pthread_cond_signal(&s->freed);
        pthread_mutex_unlock(&s->lock);
        return NULL;
    }
    return c;
}

static void release(pg_t *s, pg_conn_t *c)
{
    if (tls_tx.s == s && tls_tx.c == c)
        return; /* pinned until commit/rollback */
    pthread_mutex_lock(&s->lock);
    c->in_use = 0;
    s->in_use--;
    pthread_cond_signal(&s->freed);
    pthread_mutex_unlock(&s->lock);
}

/* Maps a failed result (or NULL) on c to an error code; drops c when it is broken. */
static int result_err(pg_t *s, pg_conn_t *c, PGresult *res, const char *what, bs_err_t *err)
{
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    char msg[300];
    first_line(msg, sizeof msg,
               res && PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res) : PQerrorMessage(c->c));
    int rc;
    if (PQstatus(c->c) != CONNECTION_OK || state_unavailable(st) || (!st && !res)) {
        rc = bs_err_set(err, BS_EUNAVAIL, "metadata store %s unavailable: %s", s->safe, msg);
        if (PQstatus(c->c) != CONNECTION_OK) {
            conn_drop(c);
            if (tls_tx.s == s && tls_tx.c == c)
                tls_tx.broken = 1;
            pthread_mutex_lock(&s->lock);
            s->gen++;
            mark_down(s);
            pthread_mutex_unlock(&s->lock);
        }
    } else if (st && !strncmp(st, "23", 2)) {
        rc = bs_err_set(err, BS_ECONFLICT, "%s: %s", what, msg);
    } else {
        rc = bs_err_set(err, BS_EIO, "%s: %s", what, msg);
    }
    count_error(s, rc == BS_EUNAVAIL);
    return rc;
}

static int retryable(PGresult *res)
{
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return st && (!strcmp(st, "40P01") || !strcmp(st, "40001"));
}

/* Runs a simple command (no parameters) on c. */
static int simple(pg_t *s, pg_conn_t *c, const char *sql, bs_err_t *err)
{
    PGresult *res = PQexec(c->c, sql);
    ExecStatusType t = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    int rc = 0;
    if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK)
        rc = result_err(s, c, res, "metadata store", err);
    PQclear(res);
    return rc;
}

/* Type signature of the bound values: 3 bits a value; 0 = too many to cache. */
static uint64_t signature(const bs_val_t *args, int nargs)
{
    if (nargs > 20)
        return 0;
    uint64_t sig = 1;
    for (int i = 0; i < nargs; i++)
        sig = sig << 3 | (uint64_t)(args[i].type + 1);
    return sig;
}

static Oid type_oid(bs_val_type_t t)
{
    switch (t) {
    case BS_VAL_INT: return OID_INT8;
    case BS_VAL_DOUBLE: return OID_FLOAT8;
    case BS_VAL_TEXT: return OID_TEXT;
    case BS_VAL_BLOB: return OID_BYTEA;
    default: return 0; /* unknown: the server infers it from the context */
    }
}

/* Executes sql with args on c; returns the result (caller PQclears) or NULL with *rc. */
static PGresult *run(pg_t *s, pg_conn_t *c, const char *sql, const bs_val_t *args, int nargs,
                     int *rc, bs_err_t *err)
{
    *rc = 0;
    if (nargs > MAX_ARGS) {
        *rc = bs_err_set(err, BS_EINVAL, "metadata store: too many parameters");
        return NULL;
    }
    Oid types[MAX_ARGS];
    const char *vals[MAX_ARGS];
    int lens[MAX_ARGS], fmts[MAX_ARGS];
    char nums[MAX_ARGS][32];
    for (int i = 0; i < nargs; i++) {
        const bs_val_t *v = &args[i];
        types[i] = type_oid(v->type);
        lens[i] = 0;
        fmts[i] = 0;
        switch (v->type) {
        case BS_VAL_INT:
            snprintf(nums[i], sizeof nums[i], "%lld", (long long)v->i);
            vals[i] = nums[i];
            break;
        case BS_VAL_DOUBLE:
            snprintf(nums[i], sizeof nums[i], "%.17g", v->d);
            vals[i] = nums[i];
            break;
        case BS_VAL_TEXT:
        case BS_VAL_BLOB:
            /* binary format: text and bytea are their bytes, no terminator or escaping */
            vals[i] = v->s ? v->s : "";
            lens[i] = (int)(v->type == BS_VAL_TEXT && v->len == SIZE_MAX ? strlen(vals[i]) : v->len);
            fmts[i] = 1;
            break;
        default: vals[i] = NULL;
        }
    }
    uint64_t sig = signature(args, nargs);
    pg_stmt_t *ps = NULL;
    size_t len = strlen(sql);
    for (int i = 0; sig && i < c->n_cache && !ps; i++)
        if (c->cache[i].sig == sig && c->cache[i].len == len &&
            memcmp(c->cache[i].sql, sql, len) == 0)
            ps = &c->cache[i];
    PGresult *res;
    char *key = !ps && sig && c->n_cache < STMT_CACHE ? malloc(len + 1) : NULL;
    if (key) {
        char *text = rewrite_params(sql);
        if (!text) {
            free(key);
            *rc = bs_err_set(err, BS_ENOMEM, "out of memory");
            return NULL;
        }
        pg_stmt_t *n = &c->cache[c->n_cache];
        snprintf(n->name, sizeof n->name, "bs%d", c->next_name++);
        res = PQprepare(c->c, n->name, text, nargs, types);
        free(text);
        if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
            *rc = result_err(s, c, res, "prepare", err);
            PQclear(res);
            free(key);
            return NULL;
        }
        PQclear(res);
        memcpy(key, sql, len + 1);
        n->sql = key;
        n->len = len;
        n->sig = sig;
        c->n_cache++;
        ps = n;
    }
    if (ps) {
        res = PQexecPrepared(c->c, ps->name, nargs, vals, lens, fmts, 0);
    } else {
        char *text = rewrite_params(sql);
        if (!text) {
            *rc = bs_err_set(err, BS_ENOMEM, "out of memory");
            return NULL;
        }
        res = PQexecParams(c->c, text, nargs, types, vals, lens, fmts, 0);
        free(text);
    }
    ExecStatusType t = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK) {
        *rc = -1; /* caller maps (it may retry) */
        return res;
    }
    return res;
}

static int is_select(const char *sql)
{
    while (*sql == ' ' || *sql == '\n' || *sql == '\t' || *sql == '(')
        sql++;
    return !strncasecmp(sql, "SELECT", 6) || !strncasecmp(sql, "WITH", 4) ||
           !strncasecmp(sql, "VALUES", 6);
}

/* One statement with the retries and, for writes outside a transaction, the write lock:
 * a single SQLite write takes the database's write lock too. */
static int statement(pg_t *s, const char *sql, const bs_val_t *args, int nargs, int *changes,
                     bs_meta_row_cb cb, void *ud, bs_err_t *err)
{
    int in_tx = tls_tx.s == s;
    int lock = !in_tx && !is_select(sql);
    for (int attempt = 0;; attempt++) {
        int rc;
        pg_conn_t *c = acquire(s, &rc, err);
        if (!c)
            return rc;
        rc = 0;
        if (lock && (rc = simple(s, c, WRITE_LOCK_BEGIN, err))) {
            /* a pooled connection found lost before anything ran: again on a new one */
            int stale = c->reused && !c->c && rc == BS_EUNAVAIL;
            if (c->c)
                simple(s, c, "ROLLBACK", NULL);
            release(s, c);
            if (stale && attempt + 1 < RETRIES)
                continue;
            return rc;
        }
        PGresult *res = run(s, c, sql, args, nargs, &rc, err);
        if (rc == -1) {
            int again = !in_tx && attempt + 1 < RETRIES && retryable(res);
            if (again) {
                PQclear(res);
                if (lock)
                    simple(s, c, "ROLLBACK", NULL);
                release(s, c);
                continue;
            }
            rc = result_err(s, c, res, "metadata store", err);
            PQclear(res);
            if (lock && c->c)
                simple(s, c, "ROLLBACK", NULL);
            /* a read outside a transaction on a pooled connection found lost: run it again
             * on a new one (a write is retried above, at its BEGIN, where nothing ran yet) */
            int stale = !in_tx && !lock && c->reused && !c->c && rc == BS_EUNAVAIL;
            release(s, c);
            if (stale && attempt + 1 < RETRIES)
                continue;
            return rc;
        }
        if (rc) {
            if (lock && c->c)
                simple(s, c, "ROLLBACK", NULL);
            int stale = !in_tx && !lock && c->reused && !c->c && rc == BS_EUNAVAIL;
            release(s, c);
            if (stale && attempt + 1 < RETRIES)
                continue;
            return rc;
        }
        /* not retried: a COMMIT whose answer was lost may have committed */
        if (lock && (rc = simple(s, c, "COMMIT", err))) {
            PQclear(res);
            if (c->c)
                simple(s, c, "ROLLBACK", NULL);
            release(s, c);
            return rc;
        }
        release(s, c);
        if (changes) {
            const char *t = PQcmdTuples(res);
            *changes = t && *t ? atoi(t) : 0;
        }
        if (cb) {
            row_aux_t aux = {0};
            bs_meta_row_t row = {.ops = &bs__meta_pg_ops, .p = res, .aux = &aux};
            int n = PQntuples(res);
            for (int i = 0; i < n; i++) {
                row.i = i;
                int stop = cb(&row, ud);
                aux_clear(&aux);
                if (stop)
                    break;
            }
            free(aux.bufs);
        }
        PQclear(res);
        return 0;
    }
}

static int pg_exec(void *impl, const char *sql, const bs_val_t *args, int nargs, int *changes,
                   bs_err_t *err)
{
    return statement(impl, sql, args, nargs, changes, NULL, NULL, err);
}

static int pg_query(void *impl, const char *sql, const bs_val_t *args, int nargs,
                    bs_meta_row_cb cb, void *ud, bs_err_t *err)
{
    return statement(impl, sql, args, nargs, NULL, cb, ud, err);
}

/* ---- transactions ---- */

static int pg_tx_begin(void *impl, bs_err_t *err)
{
    pg_t *s = impl;
    if (tls_tx.s)
        return bs_err_set(err, BS_EIO, "metadata store: a transaction is already open");
    int rc;
    pg_conn_t *c;
    for (int attempt = 0;; attempt++) {
        if (!(c = acquire(s, &rc, err)))
            return rc;
        if (!(rc = simple(s, c, WRITE_LOCK_BEGIN, err)))
            break;
        /* a pooled connection found lost before anything ran: try a new one */
        int stale = c->reused && !c->c && rc == BS_EUNAVAIL;
        if (c->c)
            simple(s, c, "ROLLBACK", NULL);
        release(s, c);
        if (!stale || attempt + 1 >= RETRIES)
            return rc;
    }
    tls_tx.s = s;
    tls_tx.c = c;
    tls_tx.broken = 0;
    return 0;
}

static void unpin(pg_t *s)
{
    pg_conn_t *c = tls_tx.c;
    tls_tx.s = NULL;
    tls_tx.c = NULL;
    tls_tx.broken = 0;
    release(s, c);
}

static int pg_tx_commit(void *impl, bs_err_t *err)
{
    pg_t *s = impl;
    if (tls_tx.s != s)
        return bs_err_set(err, BS_EIO, "metadata store: no transaction is open");
    int rc;
    if (tls_tx.broken || !tls_tx.c->c) {
        rc = bs_err_set(err, BS_EUNAVAIL, "metadata store %s unavailable: connection lost",
                        s->safe);
    } else {
        PGresult *res = PQexec(tls_tx.c->c, "COMMIT");
        /* COMMIT of a transaction a failed statement aborted answers "ROLLBACK" */
        if (res && PQresultStatus(res) == PGRES_COMMAND_OK &&
            !strcmp(PQcmdStatus(res), "ROLLBACK"))
            rc = bs_err_set(err, BS_EIO, "metadata store: transaction was aborted");
        else if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = result_err(s, tls_tx.c, res, "commit", err);
        else
            rc = 0;
        PQclear(res);
        if (rc && tls_tx.c->c)
            simple(s, tls_tx.c, "ROLLBACK", NULL);
    }
    unpin(s);
    return rc;
}

static void pg_tx_rollback(void *impl)
{
    pg_t *s = impl;
    if (tls_tx.s != s)
        return;
    if (!tls_tx.broken && tls_tx.c->c)
        simple(s, tls_tx.c, "ROLLBACK", NULL);
    unpin(s);
}

/* ---- migrations ---- */

static int migrate(pg_t *s, bs_err_t *err)
{
    int rc;
    pg_conn_t *c = acquire(s, &rc, err);
    if (!c)
        return rc;
    /* A session lock, held across the per-migration transactions: the first replica
     * migrates, the others wait here and then find nothing to do. No timeouts while
     * migrating or waiting for another replica's migration (an index on a big table may
     * take longer than a statement may); restored to the session's after. */
    rc = simple(s, c,
                "SET statement_timeout = 0; SET lock_timeout = 0;"
                " SELECT pg_advisory_lock(" MIGRATE_LOCK ")",
                err);
    if (rc) {
        release(s, c);
        return rc;
    }
    rc = simple(s, c,
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
                err);
    int have = 0;
    if (!rc) {
        PGresult *res = PQexec(c->c, "SELECT COALESCE(MAX(version),0) FROM schema_migrations");
        if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
            have = atoi(PQgetvalue(res, 0, 0));
        else
            rc = result_err(s, c, res, "metadata store", err);
        PQclear(res);
    }
    int n = 0;
    while (bs__meta_migrations[n].sql)
        n++;
    if (!rc && have > n)
        rc = bs_err_set(err, BS_EIO,
                        "data directory has schema version %d, newer than this binary's %d",
                        have, n);
    for (int v = have + 1; !rc && v <= n; v++) {
        const bs_meta_migration_t *mg = &bs__meta_migrations[v - 1];
        char *text = mg->pg ? strdup(mg->pg) : bs__meta_pg_map_types(mg->sql);
        if (!text) {
            rc = bs_err_set(err, BS_ENOMEM, "out of memory");
            break;
        }
        char record[160];
        snprintf(record, sizeof record, "INSERT INTO schema_migrations VALUES (%d, %lld)", v,
                 (long long)time(NULL));
        if (!(rc = simple(s, c, "BEGIN", err))) {
            if ((rc = simple(s, c, text, err)) || (rc = simple(s, c, record, err)) ||
                (rc = simple(s, c, "COMMIT", err))) {
                if (c->c)
                    simple(s, c, "ROLLBACK", NULL);
                if (err && rc != BS_EUNAVAIL) {
                    char what[sizeof err->msg];
                    snprintf(what, sizeof what, "%s", err->msg);
                    bs_err_set(err, rc, "migration %d: %s", v, what);
                }
            }
        }
        free(text);
    }
    if (c->c)
        simple(s, c,
               "SELECT pg_advisory_unlock(" MIGRATE_LOCK "); RESET statement_timeout;"
               " RESET lock_timeout",
               NULL);
    release(s, c);
    if (!rc)
        s->version = n;
    return rc;
}

/* ---- notifications ---- */

static int pg_notify(void *impl, const char *channel, const char *payload, bs_err_t *err)
{
    bs_val_t args[] = {BS_TXT(channel), BS_TXT(payload ? payload : "")};
    /* a SELECT: no write lock of its own; in a transaction it goes out at commit */
    return statement(impl, "SELECT pg_notify(?, ?)", args, 2, NULL, NULL, NULL, err);
}

static int listen_connect(pg_t *s, const char *channel, bs_err_t *err)
{
    if (s->lc && PQstatus(s->lc) != CONNECTION_OK) {
        PQfinish(s->lc);
        s->lc = NULL;
        s->n_listening = 0;
    }
    int rc;
    if (!s->lc && !(s->lc = connect_db(s, &rc, err)))
        return rc;
    for (int i = 0; i < s->n_listening; i++)
        if (!strcmp(s->listening[i], channel))
            return 0;
    char *id = PQescapeIdentifier(s->lc, channel, strlen(channel));
    if (!id)
        return bs_err_set(err, BS_EINVAL, "bad channel name");
    char sql[200];
    snprintf(sql, sizeof sql, "LISTEN %s", id);
    PQfreemem(id);
    PGresult *res = PQexec(s->lc, sql);
    int ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    if (!ok) {
        char msg[256];
        first_line(msg, sizeof msg, PQerrorMessage(s->lc));
        if (PQstatus(s->lc) != CONNECTION_OK) {
            PQfinish(s->lc);
            s->lc = NULL;
            s->n_listening = 0;
            return bs_err_set(err, BS_EUNAVAIL, "metadata store %s unavailable: %s", s->safe, msg);
        }
        return bs_err_set(err, BS_EIO, "listen: %s", msg);
    }
    if (s->n_listening < (int)(sizeof s->listening / sizeof *s->listening))
        snprintf(s->listening[s->n_listening++], sizeof s->listening[0], "%s", channel);
    return 0;
}

static int deliver(pg_t *s, bs_meta_notify_cb cb, void *ud)
{
    int n = 0;
    PGnotify *nt;
    while ((nt = PQnotifies(s->lc))) {
        if (cb)
            cb(nt->relname, nt->extra ? nt->extra : "", ud);
        PQfreemem(nt);
        n++;
    }
    return n;
}

static int pg_listen(void *impl, const char *channel, int wake_fd, int timeout_ms,
                     bs_meta_notify_cb cb, void *ud, bs_err_t *err)
{
    pg_t *s = impl;
    pthread_mutex_lock(&s->listen_lock);
    int rc = listen_connect(s, channel, err);
    if (rc) {
        pthread_mutex_unlock(&s->listen_lock);
        struct pollfd pfd = {.fd = wake_fd, .events = POLLIN};
        poll(&pfd, wake_fd >= 0 ? 1 : 0, timeout_ms);
        return rc;
    }
    PQconsumeInput(s->lc);
    if (deliver(s, cb, ud)) {
        pthread_mutex_unlock(&s->listen_lock);
        return 0;
    }
    struct pollfd pfd[2] = {{.fd = PQsocket(s->lc), .events = POLLIN},
                            {.fd = wake_fd, .events = POLLIN}};
    int pr = poll(pfd, wake_fd >= 0 ? 2 : 1, timeout_ms);
    if (pr > 0 && (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))) {
        if (!PQconsumeInput(s->lc) || PQstatus(s->lc) != CONNECTION_OK) {
            char msg[256];
            first_line(msg, sizeof msg, PQerrorMessage(s->lc));
            PQfinish(s->lc);
            s->lc = NULL;
            s->n_listening = 0;
            pthread_mutex_lock(&s->lock);
            mark_down(s);
            pthread_mutex_unlock(&s->lock);
            rc = bs_err_set(err, BS_EUNAVAIL, "metadata store %s unavailable: %s", s->safe, msg);
        } else {
            deliver(s, cb, ud);
        }
    }
    pthread_mutex_unlock(&s->listen_lock);
    return rc;
}

/* ---- open/close ---- */

static void *probe_main(void *arg)
{
    pg_t *s = arg;
    pthread_mutex_lock(&s->lock);
    while (!s->probe_stop) {
        if (!atomic_load(&s->down)) {
            pthread_cond_wait(&s->probe_wake, &s->lock);
            continue;
        }
        pthread_mutex_unlock(&s->lock);
        int rc;
        PGconn *c = connect_db(s, &rc, NULL); /* clears down on success */
        if (c)
            PQfinish(c);
        pthread_mutex_lock(&s->lock);
        if (atomic_load(&s->down) && !s->probe_stop) {
            struct timespec t;
            clock_gettime(CLOCK_REALTIME, &t);
            t.tv_sec += 1;
            pthread_cond_timedwait(&s->probe_wake, &s->lock, &t);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void pg_close(void *impl)
{
    pg_t *s = impl;
    if (!s)
        return;
    if (s->probe_started) {
        pthread_mutex_lock(&s->lock);
        s->probe_stop = 1;
        pthread_cond_signal(&s->probe_wake);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->probe, NULL);
    }
    for (int i = 0; i < s->pool_size && s->conns; i++)
        conn_drop(&s->conns[i]);
    if (s->lc)
        PQfinish(s->lc);
    free(s->conns);
    free(s->url);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->listen_lock);
    pthread_cond_destroy(&s->freed);
    pthread_cond_destroy(&s->probe_wake);
    free(s);
}

void *bs__meta_pg_open(const char *url, const bs_meta_opts_t *opts, bs_err_t *err)
{
    pg_t *s = calloc(1, sizeof *s);
    if (!s) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    s->pool_size = opts->pool_size > 0 ? opts->pool_size : 8;
    s->url = strdup(url);
    s->conns = calloc((size_t)s->pool_size, sizeof *s->conns);
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->listen_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_cond_init(&s->freed, &ca);
    pthread_cond_init(&s->probe_wake, &ca);
    pthread_condattr_destroy(&ca);
    bs_meta_redact(url, s->safe, sizeof s->safe);
    snprintf(s->app_name, sizeof s->app_name, "%s",
             opts->application_name && *opts->application_name ? opts->application_name
                                                                 : "basalt");
    if (!s->url || !s->conns) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        pg_close(s);
        return NULL;
    }
    if (migrate(s, err)) {
        pg_close(s);
        return NULL;
    }
    if (pthread_create(&s->probe, NULL, probe_main, s) == 0)
        s->probe_started = 1;
    return s;
}

static int pg_schema_version(void *impl) { return ((pg_t *)impl)->version; }
static int pg_ready(void *impl) { return impl && ((pg_t *)impl)->version > 0; }

static void pg_stats(void *impl, bs_meta_stats_t *out)
{
    pg_t *s = impl;
    pthread_mutex_lock(&s->lock);
    out->pool_size = s->pool_size;
    for (int i = 0; i < s->pool_size; i++)
        out->open += s->conns[i].c != NULL;
    out->in_use = s->in_use;
    out->waits = s->waits;
    out->errors = s->errors;
    out->unavailable = s->unavailable;
    out->down = atomic_load(&s->down);
    pthread_mutex_unlock(&s->lock);
}

const bs_meta_ops_t bs__meta_pg_ops = {
    .name = "postgresql",
    .dialect = BS_META_POSTGRES,
    .close = pg_close,
    .exec = pg_exec,
    .query = pg_query,
    .tx_begin = pg_tx_begin,
    .tx_commit = pg_tx_commit,
    .tx_rollback = pg_tx_rollback,
    .schema_version = pg_schema_version,
    .ready = pg_ready,
    .notify = pg_notify,
    .listen = pg_listen,
    .stats = pg_stats,
    .row_is_null = row_is_null,
    .row_int = row_int,
    .row_double = row_double,
    .row_text = row_text,
    .row_blob = row_blob,
};
