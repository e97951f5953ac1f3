/* Always-on endpoints: health, readiness, Prometheus metrics, the OpenAPI
 * document, a docs page and server info. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "api/api_int.h"
#include "base/log.h"
#include "base/version.h"

int bs__api_limit(bs_req_t *req, int def, int max, int *out)
{
    const char *l = bs_req_query(req, "limit");
    *out = def;
    if (!l)
        return 0;
    char *end;
    long v = strtol(l, &end, 10);
    if (!*l || *end || v < 1 || v > max) {
        bs_resp_errorf(req, BS_EINVAL, "limit", "limit must be an integer from 1 to %d", max);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int bs__api_tenant_allowed(const bs_req_t *req, const char *t)
{
    if (req->who.role == BS_ROLE_ADMIN && strcmp(req->who.tenant, BS_DEFAULT_TENANT) == 0)
        return 1;
    return strcmp(req->who.tenant, t) == 0;
}

void bs__api_healthz(bs_req_t *req)
{
    static const char body[] = "{\"status\":\"ok\"}";
    bs_resp_body(req, 200, "application/json", body, sizeof body - 1);
}

void bs__api_readyz(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    /* PostgreSQL: not ready from a lost or refused connection until the backend's probe
     * (or any statement) connects again; an in-memory flag, no round trip here. */
    bs_meta_stats_t ms;
    bs_meta_stats(app->meta, &ms);
    int meta_ok = app->meta && bs_meta_ready(app->meta) && !ms.down;
    int ready = meta_ok && !app->shutting_down;
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "status");
    bs_jw_str(&b, ready ? "ready" : "not_ready");
    bs_jw_key(&b, "checks");
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "metadata_store");
    bs_jw_str(&b, meta_ok ? "ok" : "unavailable");
    bs_jw_key(&b, "schema_version");
    bs_jw_int(&b, meta_ok ? bs_meta_schema_version(app->meta) : 0);
    bs_jw_key(&b, "accepting");
    bs_jw_bool(&b, !app->shutting_down);
    bs_jw_obj_end(&b);
    bs_jw_obj_end(&b);
    bs_resp_json(req, ready ? 200 : 503, &b);
    bs_buf_free(&b);
}

static long count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory stream itself */
}

static long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * sysconf(_SC_PAGESIZE);
}

void bs__api_metrics(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    /* The text names every tenant's models and versions: a key of another tenant needs
     * the metrics scope. A public route (metrics_public, the metrics_listen listener) and
     * --no-auth skip this. */
    if (req->route->min_role > BS_ROLE_PUBLIC && !(req->who.scopes & BS_SCOPE_METRICS) &&
        strcmp(req->who.tenant, BS_DEFAULT_TENANT) != 0)
        return bs_resp_errorf(req, BS_EFORBID, NULL,
                              "/metrics covers every tenant: it needs a key of the '%s' tenant "
                              "or one with the metrics scope",
                              BS_DEFAULT_TENANT);
    bs_buf_t b;
    bs_buf_init(&b);
    bs_server_metrics(app->server, &b);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    bs_buf_printf(&b,
                  "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                  "# TYPE process_resident_memory_bytes gauge\n"
                  "process_resident_memory_bytes %ld\n"
                  "# HELP process_cpu_seconds_total Total user and system CPU time in seconds.\n"
                  "# TYPE process_cpu_seconds_total counter\n"
                  "process_cpu_seconds_total %.6f\n"
                  "# HELP process_open_fds Number of open file descriptors.\n"
                  "# TYPE process_open_fds gauge\n"
                  "process_open_fds %ld\n"
                  "# HELP process_start_time_seconds Start time of the process since the epoch.\n"
                  "# TYPE process_start_time_seconds gauge\n"
                  "process_start_time_seconds %.3f\n"
                  "# HELP basalt_build_info Build information.\n"
                  "# TYPE basalt_build_info gauge\n"
                  "basalt_build_info{version=\"%s\",git_sha=\"%s\"} 1\n"
                  "# HELP basalt_uptime_seconds Seconds since the server started.\n"
                  "# TYPE basalt_uptime_seconds gauge\n"
                  "basalt_uptime_seconds %.3f\n"
                  "# HELP basalt_log_dropped_lines_total Log lines dropped because stderr fell behind.\n"
                  "# TYPE basalt_log_dropped_lines_total counter\n"
                  "basalt_log_dropped_lines_total %llu\n",
                  rss_bytes(), cpu, count_fds(), (double)app->started_ms / 1000.0, BS_VERSION,
                  bs_build_sha(), (double)(bs_time_mono_ns() - app->started_mono_ns) / 1e9,
                  bs_log_dropped());
    /* The metadata store's pool (PostgreSQL; SQLite reports its one connection). Read
     * from counters in memory: no round trip. */
    bs_meta_stats_t ms;
    bs_meta_stats(app->meta, &ms);
    bs_buf_printf(&b,
                  "# HELP basalt_metadata_connections Metadata store connections by state.\n"
                  "# TYPE basalt_metadata_connections gauge\n"
                  "basalt_metadata_connections{state=\"max\"} %d\n"
                  "basalt_metadata_connections{state=\"open\"} %d\n"
                  "basalt_metadata_connections{state=\"in_use\"} %d\n"
                  "# HELP basalt_metadata_pool_waits_total Times a caller waited for a free metadata connection.\n"
                  "# TYPE basalt_metadata_pool_waits_total counter\n"
                  "basalt_metadata_pool_waits_total %llu\n"
                  "# HELP basalt_metadata_errors_total Failed metadata store statements, by kind.\n"
                  "# TYPE basalt_metadata_errors_total counter\n"
                  "basalt_metadata_errors_total{kind=\"unavailable\"} %llu\n"
                  "basalt_metadata_errors_total{kind=\"other\"} %llu\n",
                  ms.pool_size, ms.open, ms.in_use, (unsigned long long)ms.waits,
                  (unsigned long long)ms.unavailable,
                  (unsigned long long)(ms.errors - ms.unavailable));
    bs__api_model_metrics(app, &b);
    if (b.oom) {
        bs_buf_free(&b);
        bs_resp_errorf(req, BS_ENOMEM, NULL, "out of memory rendering metrics");
        return;
    }
    bs_resp_body(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
    bs_buf_free(&b);
}

void bs__api_openapi(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    bs_resp_body(req, 200, "application/json", app->openapi, app->openapi_len);
}

void bs__api_docs(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    bs_resp_body(req, 200, "text/html; charset=utf-8", app->docs, app->docs_len);
}

void bs__api_info(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "name");
    bs_jw_str(&b, "basalt");
    bs_jw_key(&b, "version");
    bs_jw_str(&b, BS_VERSION);
    bs_jw_key(&b, "build");
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "git_sha");
    bs_jw_str(&b, bs_build_sha());
    bs_jw_key(&b, "compiler");
    bs_jw_str(&b, __VERSION__);
    bs_jw_key(&b, "built_at");
    bs_jw_str(&b, __DATE__ " " __TIME__);
    bs_jw_obj_end(&b);
    bs_jw_key(&b, "started_at");
    bs_jw_time(&b, app->started_ms);
    bs_jw_key(&b, "uptime_seconds");
    bs_jw_double(&b, (double)(bs_time_mono_ns() - app->started_mono_ns) / 1e9);
    bs_jw_key(&b, "data_dir");
    bs_jw_str(&b, app->data_dir);
    bs_jw_key(&b, "threads");
    bs_jw_int(&b, app->cfg.threads > 0 ? app->cfg.threads : sysconf(_SC_NPROCESSORS_ONLN));
    bs_jw_key(&b, "auth");
    bs_jw_bool(&b, !app->cfg.no_auth);
    bs_jw_key(&b, "backends");
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "metadata");
    bs_jw_str(&b, bs_meta_backend(app->meta));
    bs_jw_key(&b, "artifacts");
    bs_jw_str(&b, "filesystem");
    bs_jw_obj_end(&b);
    bs_jw_key(&b, "replica_id");
    bs_jw_str(&b, app->cfg.replica_id);
    bs_meta_stats_t ms;
    bs_meta_stats(app->meta, &ms);
    bs_jw_key(&b, "metadata_pool"); /* never the URL: it may hold a password */
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "size");
    bs_jw_int(&b, ms.pool_size);
    bs_jw_key(&b, "open");
    bs_jw_int(&b, ms.open);
    bs_jw_key(&b, "in_use");
    bs_jw_int(&b, ms.in_use);
    bs_jw_key(&b, "waits");
    bs_jw_int(&b, (int64_t)ms.waits);
    bs_jw_key(&b, "errors");
    bs_jw_int(&b, (int64_t)ms.errors);
    bs_jw_key(&b, "unavailable");
    bs_jw_int(&b, (int64_t)ms.unavailable);
    bs_jw_key(&b, "down"); /* since the last lost or refused connection */
    bs_jw_bool(&b, ms.down);
    bs_jw_obj_end(&b);
    bs_jw_key(&b, "caller");
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "key_id");
    bs_jw_str(&b, req->who.key_id);
    bs_jw_key(&b, "tenant");
    bs_jw_str(&b, req->who.tenant);
    bs_jw_key(&b, "role");
    bs_jw_str(&b, bs_role_name(req->who.role));
    bs_jw_obj_end(&b);
    bs_jw_obj_end(&b);
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
}
