/*
 * Redis connections (src/store/kv): basalt's one way of talking to Redis, on hiredis,
 * shared by the cross-replica rate limits now and the online feature store and sessions
 * later. No hiredis type appears outside src/store/: replies are copied into bs_kv_reply_t.
 *
 * Threads: a bs_kv_t is one connection and belongs to one thread at a time (the thread
 * that calls its commands; hiredis contexts are not thread-safe). Only bs_kv_stats may be
 * called from any thread (the counters are atomics), e.g. by /metrics. A module that
 * needs Redis from several threads opens one bs_kv_t per thread. Every call blocks for at
 * most the connect or command timeout, so none may run on an I/O thread.
 *
 * Failures: a connection error, a timeout or a protocol error drops the connection and
 * the call returns BS_EUNAVAIL. The next call reconnects, but not before a backoff that
 * doubles from backoff_min_ms to backoff_max_ms after every failed attempt (a call inside
 * the backoff fails at once with BS_EUNAVAIL, without touching the network), and is reset
 * by a successful connect. A command the server answers with an error ("-ERR ...",
 * WRONGTYPE) is not a connection failure: the call returns 0 with a reply of type
 * BS_KV_ERROR.
 *
 * URLs: redis://[[user]:password@]host[:port][/db] (port 6379, db 0 by default; user and
 * password percent-decoded; "user:pass" sends AUTH user pass (Redis 6 ACL), ":pass" or
 * "pass" sends AUTH pass), and unix:/path/to/socket[?db=N] for a Unix socket.
 */
#ifndef BS_STORE_KV_H
#define BS_STORE_KV_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef struct bs_kv bs_kv_t;

typedef struct {
    char host[256]; /* empty for a Unix socket */
    int port;
    char unix_path[256]; /* empty for TCP */
    char user[128];
    char password[256];
    int db;
} bs_kv_url_t;

/* Parses a redis:// or unix: URL into out. 0 or BS_EINVAL naming what is wrong. */
int bs_kv_parse_url(const char *url, bs_kv_url_t *out, bs_err_t *err);

typedef struct {
    int connect_timeout_ms; /* 0: 1000 */
    int command_timeout_ms; /* 0: 1000 */
    int backoff_min_ms;     /* 0: 100 */
    int backoff_max_ms;     /* 0: 5000 */
} bs_kv_opts_t;

typedef enum {
    BS_KV_NIL = 0,
    BS_KV_INT,
    BS_KV_STR,    /* bulk string */
    BS_KV_STATUS, /* "+OK" */
    BS_KV_ERROR,  /* "-ERR ...": str holds the message */
    BS_KV_ARRAY,
} bs_kv_type_t;

/* A reply, owned by the caller (bs_kv_reply_free). str is NUL-terminated (len excludes
 * the NUL); elem holds n replies of an array. */
typedef struct bs_kv_reply {
    bs_kv_type_t type;
    long long integer;
    char *str;
    size_t len;
    size_t n;
    struct bs_kv_reply *elem;
} bs_kv_reply_t;

void bs_kv_reply_free(bs_kv_reply_t *r);

/* A Lua script run by EVALSHA. bs_kv_script_init computes its SHA-1 locally; src is
 * borrowed and must outlive the script (a string literal, usually). */
typedef struct {
    const char *src;
    char sha[41];
} bs_kv_script_t;

void bs_kv_script_init(bs_kv_script_t *s, const char *src);

/* One command of a pipeline. argv[0..argc) are the arguments, lens their lengths (NULL:
 * strlen of each). With script set, the command sent is
 * EVALSHA <sha> <nkeys> argv[0..argc), the first nkeys of argv being the keys. */
typedef struct {
    int argc;
    const char *const *argv;
    const size_t *lens;
    const bs_kv_script_t *script;
    int nkeys;
} bs_kv_cmd_t;

typedef struct {
    uint64_t commands;   /* commands sent (each command of a pipeline counts) */
    uint64_t errors;     /* commands failed: connection lost, timeout, error reply */
    uint64_t reconnects; /* successful connects after the first */
    int connected;       /* 1 while a connection is up */
} bs_kv_stats_t;

/* Parses url and returns a client that is not yet connected (the first command connects;
 * bs_kv_connect connects now). opts may be NULL (defaults). NULL with err (BS_EINVAL for a
 * bad URL, BS_ENOMEM). */
bs_kv_t *bs_kv_new(const char *url, const bs_kv_opts_t *opts, bs_err_t *err);
void bs_kv_free(bs_kv_t *kv);

/* Connects (AUTH, SELECT) unless connected. 0, or BS_EUNAVAIL (unreachable, inside the
 * backoff, or AUTH/SELECT refused: the message says which). */
int bs_kv_connect(bs_kv_t *kv, bs_err_t *err);
/* Drops the connection (the next command reconnects, without backoff). */
void bs_kv_disconnect(bs_kv_t *kv);

/* Sends one command and waits for its reply (*out, owned by the caller). 0 or BS_EUNAVAIL /
 * BS_ENOMEM. Error replies are 0 with type BS_KV_ERROR. */
int bs_kv_command(bs_kv_t *kv, int argc, const char *const *argv, const size_t *lens,
                  bs_kv_reply_t **out, bs_err_t *err);

/* Sends n commands in one write and reads their n replies (one round trip), out[i] the
 * reply of cmds[i] (owned by the caller). EVALSHA commands answered NOSCRIPT (the server
 * restarted or ran SCRIPT FLUSH) are followed by SCRIPT LOAD and sent again, once. 0, or
 * BS_EUNAVAIL / BS_ENOMEM with every out[i] NULL. */
int bs_kv_pipeline(bs_kv_t *kv, const bs_kv_cmd_t *cmds, int n, bs_kv_reply_t **out, bs_err_t *err);

/* EVALSHA of script with keys and args (NOSCRIPT handled as in bs_kv_pipeline). */
int bs_kv_eval(bs_kv_t *kv, const bs_kv_script_t *script, int nkeys, int argc,
               const char *const *argv, bs_kv_reply_t **out, bs_err_t *err);

/* Counters of this client; any thread. */
void bs_kv_stats(const bs_kv_t *kv, bs_kv_stats_t *out);

#endif
