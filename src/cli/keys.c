/*
 * `basalt keys create|ls|delete`: API keys through the API (an admin key), or
 * `keys create --data DIR` offline, straight into a data directory — the way
 * back in when the bootstrap admin key is lost.
 *
 * Offline creation goes through src/auth on the directory's own store
 * (bs_meta_open + bs_auth_key_create: the same validation, hashing and SQL as
 * POST /v1/keys). It takes data/basalt.lock like a server does, so a server
 * started meanwhile waits its turn (it refuses to start while the lock is
 * held). When a server holds the lock, the write goes through SQLite anyway
 * (WAL mode: one writer at a time, readers undisturbed; the busy timeout
 * covers a server's write in progress; the write bumps the "auth" change
 * generation, which the server polls) and the server is told to reload its
 * key snapshot at once with SIGHUP, sent to the pid the server wrote into
 * basalt.lock — only after checking that this process really has the lock
 * file open, so a stale pid is never signalled.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/auth.h"
#include "base/json.h"
#include "base/rcu.h"
#include "base/time.h"
#include "cli/cli.h"

#define MAX_TTL_SECONDS (10LL * 365 * 86400) /* as POST /v1/keys */

typedef struct {
    const char *role, *name, *tenant, *data, *url;
    long long ttl;
} key_args_t;

static int parse_ttl(const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < 1 || v > MAX_TTL_SECONDS) {
        fprintf(stderr, "basalt: --ttl must be a whole number of seconds from 1 to %lld, got '%s'\n",
                MAX_TTL_SECONDS, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* Prints a created key (the API's key document, secret included) for people. */
static void print_created(const cJSON *k, const char *note)
{
    const cJSON *role = cJSON_GetObjectItem(k, "role"), *name = cJSON_GetObjectItem(k, "name"),
                *id = cJSON_GetObjectItem(k, "id"), *tenant = cJSON_GetObjectItem(k, "tenant"),
                *exp = cJSON_GetObjectItem(k, "expires_at"), *key = cJSON_GetObjectItem(k, "key");
    printf("created %s key '%s' (id %s) in tenant %s%s%s\n",
           cJSON_IsString(role) ? role->valuestring : "?",
           cJSON_IsString(name) ? name->valuestring : "?", cJSON_IsString(id) ? id->valuestring : "?",
           cJSON_IsString(tenant) ? tenant->valuestring : "?",
           cJSON_IsString(exp) ? ", expires " : "", cJSON_IsString(exp) ? exp->valuestring : "");
    if (note)
        printf("%s\n", note);
    printf("API key (shown once, store it now):\n  %s\n",
           cJSON_IsString(key) ? key->valuestring : "?");
}

/* 1 if process pid has the file (dev, ino) open: a pid read from the lock file is signalled
 * only when it is really the lock holder. */
static int holds_file(int pid, const struct stat *lock)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/fd", pid);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        char p[320];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (e->d_name[0] != '.' && stat(p, &st) == 0 && st.st_dev == lock->st_dev &&
            st.st_ino == lock->st_ino)
            found = 1;
    }
    closedir(d);
    return found;
}

static int print_offline(const bs_key_info_t *k, const char *secret, int server_pid, int json,
                         const char *note);

/* Creates the key in the store at path (a SQLite file or a PostgreSQL URL) through
 * src/auth; fills info and secret. Returns 0, or 1 after printing why not. */
static int make_key(const char *path, const key_args_t *a, bs_key_info_t *info, char *secret)
{
    bs_err_t err;
    bs_err_clear(&err);
    memset(info, 0, sizeof *info);
    int role = bs_role_parse(a->role);
    info->role = role < 0 ? BS_ROLE_PUBLIC : (bs_role_t)role; /* auth rejects PUBLIC */
    snprintf(info->name, sizeof info->name, "%s", a->name);
    snprintf(info->tenant, sizeof info->tenant, "%s", a->tenant ? a->tenant : BS_DEFAULT_TENANT);
    if (a->ttl)
        info->expires_at = bs_time_wall_ms() + a->ttl * 1000;
    int rc = 1;
    bs_meta_t *meta = bs_meta_open(path, &err);
    bs_auth_t *auth = meta ? bs_auth_new(meta, 0, 0, &err) : NULL;
    if (auth && bs_auth_key_create(auth, "offline", info, secret, &err) == 0) {
        rc = 0;
    } else {
        char shown[PATH_MAX + 16];
        bs_meta_redact(path, shown, sizeof shown);
        fprintf(stderr, "basalt: cannot create the key in %s: %s\n", shown, err.msg);
    }
    bs_auth_free(auth);
    bs_meta_close(meta);
    bs_rcu_drain();
    return rc;
}

/* The offline path: the key goes into DIR/basalt.db through src/auth. */
static int create_offline(const key_args_t *a, int json)
{
    char dir[PATH_MAX], db[PATH_MAX + 16], lock[PATH_MAX + 16];
    if (!realpath(a->data, dir)) {
        fprintf(stderr, "basalt: no data directory %s: %s\n", a->data, strerror(errno));
        return 1;
    }
    snprintf(db, sizeof db, "%s/basalt.db", dir);
    snprintf(lock, sizeof lock, "%s/basalt.lock", dir);
    struct stat st;
    if (stat(db, &st) != 0) {
        fprintf(stderr,
                "basalt: %s holds no basalt.db: not a basalt data directory, or no server has "
                "started there yet (the first start prints an admin key)\n",
                dir);
        return 1;
    }
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "basalt: cannot open lock file %s: %s\n", lock, strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    int server_pid = 0; /* the running server that holds the lock, if any */
    /* While this process holds the lock, another `keys create --data` sends it SIGHUP (as it
     * would a server): ignored, so it cannot end this one between the write and the print. */
    signal(SIGHUP, SIG_IGN);
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
        char pid[32];
        int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
        if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) < 0)
            fprintf(stderr, "basalt: warning: could not write the pid to %s\n", lock);
    } else if (errno == EWOULDBLOCK) {
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        if (n > 0)
            pid[n] = '\0';
        server_pid = atoi(pid) > 0 ? atoi(pid) : -1;
    } else {
        fprintf(stderr, "basalt: cannot lock %s: %s\n", lock, strerror(errno));
        close(fd);
        return 1;
    }

    char secret[BS_KEY_SECRET_MAX];
    bs_key_info_t info;
    int rc = make_key(db, a, &info, secret);

    char note[512] = "";
    int notified = 0;
    if (rc == 0 && server_pid) {
        const char *why = NULL;
        if (server_pid < 0)
            why = "no pid in the lock file";
        else if (!holds_file(server_pid, &st))
            why = "the pid in the lock file does not have it open, or is not visible to this user";
        else if (kill(server_pid, SIGHUP) != 0)
            why = strerror(errno);
        else
            notified = 1;
        if (notified)
            snprintf(note, sizeof note,
                     "the running server (pid %d) was sent SIGHUP and loads the key at once",
                     server_pid);
        else /* written, but the holder could not be told: say how to finish */
            fprintf(stderr,
                    "basalt: warning: a server holds %s but could not be told to reload its keys "
                    "(%s); it loads the key by itself within its change_poll_ms (1 s by default), "
                    "or at once after SIGHUP (kill -HUP PID)\n",
                    lock, why);
    }
    close(fd); /* releases the lock, if it was ours */
    if (rc)
        return rc;
    return print_offline(&info, secret, notified ? server_pid : 0, json,
                         notified ? note
                                  : (server_pid ? NULL
                                                : "written into the stopped server's data "
                                                  "directory; it works from the next start"));
}

/* --metadata-url: the key goes into the PostgreSQL store every replica shares. No lock
 * file and no signal: a replica loads it at its next key reload (SIGHUP or a restart). */
static int create_in_store(const key_args_t *a, int json)
{
    if (!bs_meta_is_url(a->url)) {
        fprintf(stderr, "basalt: --metadata-url must be a postgres:// or postgresql:// URL\n");
        return 2;
    }
    char secret[BS_KEY_SECRET_MAX];
    bs_key_info_t info;
    if (make_key(a->url, a, &info, secret))
        return 1;
    return print_offline(&info, secret, 0, json,
                         "written into the PostgreSQL metadata store; each replica loads it at "
                         "its next key reload (SIGHUP or a restart)");
}

/* Prints a key made offline (the API's key document, plus server_pid: the server told to
 * reload, or null). */
static int print_offline(const bs_key_info_t *k, const char *secret, int server_pid, int json,
                         const char *note)
{
    const bs_key_info_t info = *k;
    int notified = server_pid > 0;
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "id");
    bs_jw_str(&b, info.id);
    bs_jw_key(&b, "name");
    bs_jw_str(&b, info.name);
    bs_jw_key(&b, "tenant");
    bs_jw_str(&b, info.tenant);
    bs_jw_key(&b, "role");
    bs_jw_str(&b, bs_role_name(info.role));
    bs_jw_key(&b, "rate_limit");
    bs_jw_null(&b);
    bs_jw_key(&b, "expires_at");
    bs_jw_time(&b, info.expires_at);
    bs_jw_key(&b, "created_at");
    bs_jw_time(&b, info.created_at);
    bs_jw_key(&b, "created_by");
    bs_jw_str(&b, info.created_by);
    bs_jw_key(&b, "key");
    bs_jw_str(&b, secret);
    bs_jw_key(&b, "server_pid"); /* the running server told to reload, or null */
    if (notified)
        bs_jw_int(&b, server_pid);
    else
        bs_jw_null(&b);
    bs_jw_obj_end(&b);
    if (json) {
        printf("%.*s\n", (int)b.len, b.data);
    } else {
        cJSON *doc = cJSON_Parse(b.data);
        print_created(doc, note);
        cJSON_Delete(doc);
    }
    bs_buf_free(&b);
    return 0;
}

int bs_cli_keys_create(int argc, char **argv)
{
    bs_cli_remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    key_args_t a = {0};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char **slot = !strcmp(o, "--role")     ? &a.role
                            : !strcmp(o, "--name")   ? &a.name
                            : !strcmp(o, "--tenant") ? &a.tenant
                            : !strcmp(o, "--data")   ? &a.data
                            : !strcmp(o, "--metadata-url") ? &a.url
                                                     : NULL;
        if (!slot && strcmp(o, "--ttl")) {
            fprintf(stderr, "basalt: unknown argument '%s' for keys create\n", o);
            bs_cli_usage(stderr, "keys", "create");
            return 2;
        }
        if (!v) {
            fprintf(stderr, "basalt: %s needs a value\n", o);
            return 2;
        }
        if (!slot && parse_ttl(v, &a.ttl))
            return 2;
        if (slot)
            *slot = v;
        i++;
    }
    if (!a.role) {
        fprintf(stderr, "basalt: keys create needs --role (admin, developer, predictor or "
                        "viewer)\n");
        bs_cli_usage(stderr, "keys", "create");
        return 2;
    }
    if (bs_role_parse(a.role) < 0) {
        fprintf(stderr, "basalt: role must be admin, developer, predictor or viewer, got '%s'\n",
                a.role);
        return 2;
    }
    char default_name[64];
    if (!a.name) {
        snprintf(default_name, sizeof default_name, "cli-%s", a.role);
        a.name = default_name;
    }
    if (a.data && a.url) {
        fprintf(stderr, "basalt: keys create takes --data or --metadata-url, not both\n");
        return 2;
    }
    if (a.url)
        return create_in_store(&a, r.json);
    if (a.data)
        return create_offline(&a, r.json);

    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", a.name);
    cJSON_AddStringToObject(o, "role", a.role);
    if (a.tenant)
        cJSON_AddStringToObject(o, "tenant", a.tenant);
    if (a.ttl)
        cJSON_AddNumberToObject(o, "ttl_seconds", (double)a.ttl);
    char *body = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    bs_buf_t out;
    bs_buf_init(&out);
    int rc = bs_cli_call(&r, "POST", "/v1/keys", "application/json", body, strlen(body), &out);
    free(body);
    if (!rc && r.json) {
        printf("%.*s\n", (int)out.len, out.data ? out.data : "");
    } else if (!rc) {
        cJSON *k = cJSON_Parse(out.data ? out.data : "");
        print_created(k, NULL);
        cJSON_Delete(k);
    }
    bs_buf_free(&out);
    return rc;
}

int bs_cli_keys_ls(int argc, char **argv)
{
    bs_cli_remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    const char *tenant = NULL;
    if (argc == 3 && !strcmp(argv[1], "--tenant"))
        tenant = argv[2];
    else if (argc != 1) {
        bs_cli_usage(stderr, "keys", argv[0]);
        return 2;
    }
    char path[256];
    snprintf(path, sizeof path, "/v1/keys?limit=1000%s%.64s", tenant ? "&tenant=" : "",
             tenant ? tenant : "");
    cJSON *items;
    int rc = bs__cli_list_all(&r, path, &items);
    if (rc)
        return rc;
    if (r.json) {
        bs__cli_print_items(items);
        cJSON_Delete(items);
        return 0;
    }
    bs_cli_table_t t;
    bs_cli_table_init(&t, 7);
    bs_cli_table_row(&t, "ID", "NAME", "TENANT", "ROLE", "EXPIRES", "CREATED", "CREATED_BY");
    const cJSON *k;
    cJSON_ArrayForEach(k, items)
    {
        const char *f[7];
        static const char *const keys[] = {"id",         "name",       "tenant",    "role",
                                           "expires_at", "created_at", "created_by"};
        for (int i = 0; i < 7; i++) {
            const cJSON *v = cJSON_GetObjectItem(k, keys[i]);
            f[i] = cJSON_IsString(v) && *v->valuestring ? v->valuestring : (i == 4 ? "never" : "-");
        }
        bs_cli_table_rowv(&t, f);
    }
    bs_cli_table_print(&t, stdout);
    bs_cli_table_free(&t);
    cJSON_Delete(items);
    return 0;
}

int bs_cli_keys_delete(int argc, char **argv)
{
    bs_cli_remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    if (argc != 2 || !argv[1][0] || argv[1][0] == '-') {
        bs_cli_usage(stderr, "keys", "delete");
        return 2;
    }
    char path[256];
    snprintf(path, sizeof path, "/v1/keys/%.64s", argv[1]);
    bs_buf_t out;
    bs_buf_init(&out);
    int rc = bs_cli_call(&r, "DELETE", path, NULL, NULL, 0, &out);
    bs_buf_free(&out);
    if (rc)
        return rc;
    if (r.json) {
        bs_buf_t b;
        bs_buf_init(&b);
        bs_jw_obj_begin(&b);
        bs_jw_key(&b, "id");
        bs_jw_str(&b, argv[1]);
        bs_jw_key(&b, "deleted");
        bs_jw_bool(&b, 1);
        bs_jw_obj_end(&b);
        printf("%.*s\n", (int)b.len, b.data);
        bs_buf_free(&b);
    } else {
        printf("deleted key %s\n", argv[1]);
    }
    return 0;
}
