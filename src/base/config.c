/* Settings table, parsing and precedence; see config.h. The YAML file is read with
 * libyaml's event parser and must be one flat mapping of scalar values. */
#include "base/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "base/log.h"
#include "store/kv.h"

typedef enum { T_STR, T_INT, T_I64, T_SIZE, T_DOUBLE, T_BOOL } ctype_t;

typedef struct {
    const char *name;
    ctype_t type;
    size_t offset;
    size_t size; /* for strings */
    double min, max;
    const char *def;
    const char *help;
} setting_t;

#define S(name, type, min, max, def, help)                                                         \
    {#name, type, offsetof(bs_config_t, name), sizeof(((bs_config_t *)0)->name), min, max, def, help}

static const setting_t settings[] = {
    S(listen, T_STR, 0, 0, "127.0.0.1:8080", "address and port to listen on"),
    S(data, T_STR, 0, 0, "./data", "data directory"),
    S(config, T_STR, 0, 0, "", "YAML config file"),
    S(threads, T_INT, 0, 256, "0", "I/O threads (0 = number of cores)"),
    S(store_threads, T_INT, 1, 64, "8",
      "workers that run requests which wait on the metadata store, off the I/O threads"),
    S(store_queue, T_INT, 1, 1000000, "1024",
      "requests waiting for a store worker (503 overloaded beyond)"),
    S(log_level, T_STR, 0, 0, "info", "debug, info, warn, error or off"),
    S(no_auth, T_BOOL, 0, 1, "false", "disable API keys (local development only)"),
    S(metrics_public, T_BOOL, 0, 1, "false", "serve /metrics without an API key"),
    S(metrics_listen, T_STR, 0, 0, "",
      "also serve /metrics and /healthz, without a key, on this HOST:PORT"),
    S(h2c, T_BOOL, 0, 1, "false",
      "accept cleartext HTTP/2 (prior knowledge, Upgrade: h2c); bodies over the limit are reset"),
    S(max_body_bytes, T_SIZE, 1024, 1e12, "16MiB", "largest request body (413 beyond)"),
    S(max_header_bytes, T_SIZE, 1024, 262144, "32KiB", "largest request header block (431 beyond)"),
    S(max_json_depth, T_INT, 2, 10000, "64", "deepest JSON nesting accepted (400 beyond)"),
    S(idle_timeout_ms, T_I64, 100, 86400000, "10000",
      "close a connection idle this long or slower to send a request"),
    S(max_connections, T_INT, 1, 10000000, "10000", "open connections per server"),
    S(shutdown_timeout_ms, T_I64, 0, 3600000, "10000", "graceful shutdown wait for in-flight requests"),
    S(rate_limit_rps, T_DOUBLE, 0, 1e9, "0", "default requests/s per API key (0 = unlimited)"),
    S(rate_limit_burst, T_DOUBLE, 0, 1e9, "0", "default burst per API key (0 = same as rate)"),
    S(redis_url, T_STR, 0, 0, "",
      "redis://[user:pass@]host:port[/db] or unix:/path: rate limits shared by replicas"),
    S(access_log_sample, T_DOUBLE, 0, 1, "1", "fraction of requests written to the access log"),
    S(model_memory_bytes, T_SIZE, 1048576, 1e15, "1GiB", "memory budget for loaded models (LRU)"),
    S(upload_memory_bytes, T_SIZE, 1024, 1e15, "64MiB",
      "artifact bytes of uploads processed at once (503 overloaded beyond)"),
    S(artifact_gc_grace_seconds, T_I64, 1, 31536000, "3600",
      "unreferenced artifact files older than this are removed"),
    S(artifact_store, T_STR, 0, 0, "",
      "files, or metadata (chunks in the metadata store, cached under <data>/artifacts); "
      "empty = metadata on PostgreSQL, else files"),
    S(max_batch_rows, T_INT, 1, 10000000, "10000", "most rows in one predict request"),
    S(batch_max_size, T_INT, 1, 100000, "32",
      "dynamic batching: most rows per batch for runtimes that gain from it (MLP)"),
    S(batch_delay_us, T_INT, 0, 1000000, "200",
      "dynamic batching: longest wait for a batch to fill (0 = batching off)"),
    S(unknown_features, T_STR, 0, 0, "reject", "reject or ignore input features a model lacks"),
    S(predict_threads, T_INT, 0, 8, "0",
      "threads one large batch of rows (512+) may use, tree ensembles (0 = one per core)"),
    S(change_poll_ms, T_INT, 10, 3600000, "1000",
      "how often the change generations are polled (bound on picking up other replicas' writes)"),
    S(metadata_url, T_STR, 0, 0, "",
      "metadata store: empty = SQLite in the data directory, postgres://... = PostgreSQL"),
    S(replica_id, T_STR, 0, 0, "",
      "this replica's name in leases and /v1/info (default hostname-pid)"),
    S(metadata_pool_size, T_INT, 1, 1000, "8", "PostgreSQL connections per replica"),
    S(nats_url, T_STR, 0, 0, "",
      "topics: empty = the embedded segment log under <data>/log, nats://host:port = JetStream"),
    S(job_workers, T_INT, 1, 256, "4", "threads running background jobs on this replica"),
    S(job_retention_ms, T_I64, 1000, 31536000000, "604800000",
      "finished jobs (completed, discarded, cancelled) are deleted after this"),
    S(max_event_bytes, T_INT, 16, 16777216, "1048576", "largest event a topic accepts (413 beyond)"),
    S(job_lease_ms, T_I64, 300, 3600000, "30000",
      "a running job's lease: renewed every third of it; a dead replica's jobs run again after it"),
    S(trigger_workers, T_INT, 1, 64, "2",
      "threads running triggers (filter, predict, webhook, job) on this replica"),
    S(prediction_log_buffer_bytes, T_SIZE, 65536, 1e12, "64MiB",
      "prediction log records held in memory before drops (counted; predictions never wait)"),
    S(monitor_window_ms, T_I64, 60000, 31536000000, "86400000",
      "how long the monitor keeps predictions for feedback joins and reports (replayed at start)"),
    S(monitor_max_predictions, T_I64, 1000, 1000000000, "2000000",
      "predictions the monitor keeps in memory across every endpoint (oldest evicted first)"),
    S(rollout_tick_ms, T_INT, 50, 600000, "1000",
      "how often the rollout controller evaluates running rollouts' guards"),
    S(rollout_lease_ms, T_I64, 300, 3600000, "15000",
      "the rollout controller's lease: another replica takes over within it when the holder dies"),
};

#define N_SETTINGS (sizeof settings / sizeof settings[0])

static const setting_t *find(const char *name)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (strcmp(settings[i].name, name) == 0)
            return &settings[i];
    return NULL;
}

static int parse_size(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !isfinite(v) || v < 0)
        return -1;
    while (*end == ' ')
        end++;
    double mult = 1;
    if (*end) {
        char u = (char)toupper((unsigned char)*end);
        const char *rest = end + 1;
        if (u == 'K')
            mult = 1024;
        else if (u == 'M')
            mult = 1024.0 * 1024;
        else if (u == 'G')
            mult = 1024.0 * 1024 * 1024;
        else if (u == 'T')
            mult = 1024.0 * 1024 * 1024 * 1024;
        else if (u == 'B' && !*rest)
            rest = "";
        else
            return -1;
        if (strcasecmp(rest, "") != 0 && strcasecmp(rest, "b") != 0 && strcasecmp(rest, "ib") != 0)
            return -1;
    }
    *out = floor(v * mult);
    return 0;
}

int bs_config_set(bs_config_t *c, const char *key, const char *value, const char *source,
                  bs_err_t *err)
{
    const setting_t *s = find(key);
    if (!s)
        return bs_err_setf(err, BS_EINVAL, key, "unknown setting '%s' in %s", key, source);
    char *p = (char *)c + s->offset;
    double v = 0;
    char *end = NULL;
    switch (s->type) {
    case T_STR:
        if (strlen(value) >= s->size)
            return bs_err_setf(err, BS_EINVAL, key, "setting '%s' from %s is longer than %zu bytes",
                               key, source, s->size - 1);
        memcpy(p, value, strlen(value) + 1);
        break;
    case T_BOOL:
        if (!strcasecmp(value, "true") || !strcmp(value, "1") || !strcasecmp(value, "yes") ||
            !strcasecmp(value, "on"))
            *(int *)p = 1;
        else if (!strcasecmp(value, "false") || !strcmp(value, "0") || !strcasecmp(value, "no") ||
                 !strcasecmp(value, "off"))
            *(int *)p = 0;
        else
            return bs_err_setf(err, BS_EINVAL, key,
                               "setting '%s' from %s must be true or false, got '%.64s'", key,
                               source, value);
        break;
    case T_SIZE:
        if (parse_size(value, &v) < 0)
            return bs_err_setf(err, BS_EINVAL, key,
                               "setting '%s' from %s must be a size like 16MiB, got '%.64s'", key,
                               source, value);
        goto range;
    case T_INT:
    case T_I64:
    case T_DOUBLE:
        errno = 0;
        v = strtod(value, &end);
        if (end == value || *end || errno || !isfinite(v) ||
            (s->type != T_DOUBLE && v != floor(v)))
            return bs_err_setf(err, BS_EINVAL, key, "setting '%s' from %s must be a%s, got '%.64s'",
                               key, source, s->type == T_DOUBLE ? " number" : "n integer", value);
    range:
        if (v < s->min || v > s->max)
            return bs_err_setf(err, BS_EINVAL, key,
                               "setting '%s' from %s is %.15g, must be between %.15g and %.15g",
                               key, source, v, s->min, s->max);
        if (s->type == T_INT)
            *(int *)p = (int)v;
        else if (s->type == T_DOUBLE)
            *(double *)p = v;
        else
            *(int64_t *)p = (int64_t)v;
        break;
    }
    /* The value is not echoed: a URL may carry a password. */
    if (strcmp(key, "metadata_url") == 0 && *value && strncmp(value, "postgres://", 11) != 0 &&
        strncmp(value, "postgresql://", 13) != 0)
        return bs_err_setf(err, BS_EINVAL, key,
                           "setting 'metadata_url' from %s must be empty or a postgres:// or "
                           "postgresql:// URL",
                           source);
    if (strcmp(key, "log_level") == 0 && bs_log_parse_level(value) < 0)
        return bs_err_setf(err, BS_EINVAL, key,
                           "setting 'log_level' from %s must be debug, info, warn, error or off, "
                           "got '%.64s'",
                           source, value);
    if (strcmp(key, "artifact_store") == 0 && value[0] && strcmp(value, "files") &&
        strcmp(value, "metadata"))
        return bs_err_setf(err, BS_EINVAL, key,
                           "setting 'artifact_store' from %s must be files or metadata, got '%.64s'",
                           source, value);
    if (strcmp(key, "redis_url") == 0 && value[0]) {
        bs_kv_url_t u;
        bs_err_t uerr;
        if (bs_kv_parse_url(value, &u, &uerr) < 0)
            return bs_err_setf(err, BS_EINVAL, key, "setting 'redis_url' from %s: %s", source,
                               uerr.msg);
    }
    if (strcmp(key, "unknown_features") == 0 && strcmp(value, "reject") && strcmp(value, "ignore"))
        return bs_err_setf(err, BS_EINVAL, key,
                           "setting 'unknown_features' from %s must be reject or ignore, got '%.64s'",
                           source, value);
    return 0;
}

/* replica_id's default: unique per process on a host, readable in logs and /v1/info. */
static void default_replica_id(bs_config_t *c)
{
    if (c->replica_id[0])
        return;
    char host[64] = "basalt";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    snprintf(c->replica_id, sizeof c->replica_id, "%s-%ld", host, (long)getpid());
}

void bs_config_defaults(bs_config_t *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < N_SETTINGS; i++) {
        int rc = bs_config_set(c, settings[i].name, settings[i].def, "defaults", NULL);
        (void)rc;
    }
    default_replica_id(c);
}

static int load_yaml(bs_config_t *c, const char *path, bs_err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return bs_err_setf(err, BS_EINVAL, "config", "cannot open config file '%s': %s", path,
                           strerror(errno));
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    int rc = 0, depth = 0, done = 0;
    char key[128] = "";
    int have_key = 0;
    char source[1100];
    snprintf(source, sizeof source, "config file %s", path);
    while (!done && rc == 0) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = bs_err_setf(err, BS_EINVAL, "config", "config file %s: %s at line %zu", path,
                             parser.problem ? parser.problem : "syntax error",
                             parser.problem_mark.line + 1);
            break;
        }
        switch (ev.type) {
        case YAML_MAPPING_START_EVENT:
            if (++depth > 1)
                rc = bs_err_setf(err, BS_EINVAL, key, "config file %s: setting '%s' must be a scalar",
                                 path, key);
            break;
        case YAML_MAPPING_END_EVENT:
            depth--;
            break;
        case YAML_SEQUENCE_START_EVENT:
            rc = bs_err_setf(err, BS_EINVAL, key, "config file %s: setting '%s' must be a scalar",
                             path, have_key ? key : "(top level)");
            break;
        case YAML_SCALAR_EVENT:
            if (depth != 1) {
                rc = bs_err_setf(err, BS_EINVAL, "config", "config file %s must be a mapping", path);
            } else if (!have_key) {
                snprintf(key, sizeof key, "%s", (const char *)ev.data.scalar.value);
                have_key = 1;
            } else {
                rc = bs_config_set(c, key, (const char *)ev.data.scalar.value, source, err);
                have_key = 0;
            }
            break;
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}

/* "max-body-bytes" -> "max_body_bytes" */
static void flag_to_key(const char *flag, char *out, size_t n)
{
    size_t i = 0;
    for (; flag[i] && flag[i] != '=' && i + 1 < n; i++)
        out[i] = flag[i] == '-' ? '_' : flag[i];
    out[i] = '\0';
}

static const char *env_lookup(char **envp, const char *key)
{
    char name[128] = "BASALT_";
    size_t k = 7;
    for (const char *p = key; *p && k + 1 < sizeof name; p++)
        name[k++] = (char)toupper((unsigned char)*p);
    name[k] = '\0';
    for (char **e = envp; e && *e; e++)
        if (strncmp(*e, name, k) == 0 && (*e)[k] == '=')
            return *e + k + 1;
    return NULL;
}

int bs_config_load(bs_config_t *c, int argc, char **argv, char **envp, bs_err_t *err)
{
    bs_config_defaults(c);
    /* Find the config file first: flag, then env. */
    const char *file = env_lookup(envp, "config");
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            file = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            file = argv[i] + 9;
    }
    if (file && *file) {
        int rc = load_yaml(c, file, err);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const char *v = env_lookup(envp, settings[i].name);
        if (v) {
            char source[160];
            snprintf(source, sizeof source, "environment variable BASALT_%s", settings[i].name);
            for (char *q = source + 26; *q; q++)
                *q = (char)toupper((unsigned char)*q);
            int rc = bs_config_set(c, settings[i].name, v, source, err);
            if (rc)
                return rc;
        }
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0)
            return bs_err_setf(err, BS_EINVAL, a, "unexpected argument '%.64s'", a);
        char key[128];
        flag_to_key(a + 2, key, sizeof key);
        const setting_t *s = find(key);
        if (!s)
            return bs_err_setf(err, BS_EINVAL, key, "unknown flag '%.64s'", a);
        const char *eq = strchr(a, '=');
        const char *value;
        if (eq) {
            value = eq + 1;
        } else if (s->type == T_BOOL) {
            value = "true";
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            return bs_err_setf(err, BS_EINVAL, key, "flag '%s' needs a value", a);
        }
        char source[160];
        snprintf(source, sizeof source, "flag --%s", a + 2);
        if (eq)
            source[strlen("flag --") + (size_t)(eq - a - 2)] = '\0';
        int rc = bs_config_set(c, key, value, source, err);
        if (rc)
            return rc;
    }
    default_replica_id(c); /* set to "" explicitly */
    return 0;
}

void bs_config_print_help(void *file)
{
    FILE *f = file;
    for (size_t i = 0; i < N_SETTINGS; i++) {
        char flag[64], env[64];
        snprintf(flag, sizeof flag, "--%s", settings[i].name);
        for (char *p = flag; *p; p++)
            if (*p == '_')
                *p = '-';
        snprintf(env, sizeof env, "BASALT_%s", settings[i].name);
        for (char *p = env; *p; p++)
            *p = (char)toupper((unsigned char)*p);
        fprintf(f, "  %-24s %-30s %s (default: %s)\n", flag, env, settings[i].help,
                *settings[i].def ? settings[i].def : "none");
    }
}
