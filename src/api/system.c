/* Always-on endpoints: health, readiness, Prometheus metrics, the OpenAPI
 * document, a docs page and server info. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "api/api_int.h"
#include "serving/predlog.h"
#include "events/triggers.h"
#include "serving/rollouts.h"
#include "base/log.h"
#include "base/version.h"
#include "events/topics.h"
#include "events/jobs.h"
#include "store/changes.h"
#include "store/log.h"
#include "store/lease.h"

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
    /* In-memory flags only, never a round trip here: the PostgreSQL backend's own view
     * (a lost or refused connection, until its probe or any statement connects again)
     * and the change watcher's last poll of the store. */
    bs_meta_stats_t ms;
    bs_meta_stats(app->meta, &ms);
    int meta_ok = app->meta && bs_meta_ready(app->meta) && !ms.down;
    bs_changes_stats_t cs = {.reachable = 1};
    if (app->changes)
        bs_changes_stats(app->changes, &cs);
    int ready = meta_ok && cs.reachable && !app->shutting_down;
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
    bs_jw_key(&b, "metadata");
    bs_jw_str(&b, cs.reachable && !ms.down ? "ok" : "unavailable");
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
    if (app->changes) {
        bs_changes_stats_t cs;
        bs_changes_stats(app->changes, &cs);
        bs_buf_printf(&b,
                      "# HELP basalt_snapshot_generation Sum of the change generations the "
                      "snapshots reflect.\n"
                      "# TYPE basalt_snapshot_generation gauge\n"
                      "basalt_snapshot_generation %lld\n"
                      "# HELP basalt_snapshot_age_seconds Since the snapshots were last known "
                      "current.\n"
                      "# TYPE basalt_snapshot_age_seconds gauge\n"
                      "basalt_snapshot_age_seconds %.3f\n"
                      "# HELP basalt_metadata_reachable 1 if the last change poll reached the "
                      "metadata store.\n"
                      "# TYPE basalt_metadata_reachable gauge\n"
                      "basalt_metadata_reachable %d\n"
                      "# HELP basalt_change_polls_total Change polls, by result.\n"
                      "# TYPE basalt_change_polls_total counter\n"
                      "basalt_change_polls_total{result=\"ok\"} %llu\n"
                      "basalt_change_polls_total{result=\"error\"} %llu\n"
                      "# HELP basalt_snapshot_rebuilds_total Snapshot rebuilds for other replicas' "
                      "changes, by result.\n"
                      "# TYPE basalt_snapshot_rebuilds_total counter\n"
                      "basalt_snapshot_rebuilds_total{result=\"ok\"} %llu\n"
                      "basalt_snapshot_rebuilds_total{result=\"error\"} %llu\n",
                      (long long)cs.generation, cs.age_ms < 0 ? 0.0 : (double)cs.age_ms / 1000.0,
                      cs.reachable, (unsigned long long)cs.polls,
                      (unsigned long long)cs.poll_errors,
                      (unsigned long long)(cs.rebuilds - cs.rebuild_errors),
                      (unsigned long long)cs.rebuild_errors);
    }
    bs_lease_metrics(&b);
    bs_jobs_metrics(app->jobs, &b);
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
    bs__api_webhooks_metrics(app, &b);
    bs__api_shadow_metrics(app, &b); /* issue 10: endpoints' shadow runner */
    if (app->predlog)
        bs_predlog_metrics(app->predlog, &b); /* issue 10: the prediction log */
    bs__api_monitor_metrics(app, &b);         /* issue 10: feedback and the monitor */
    if (app->log)
        bs_log_metrics(app->log, &b);
    if (app->topics)
        bs_topics_metrics(app->topics, &b);
    if (app->triggers)
        bs_triggers_metrics(app->triggers, &b);
    if (app->rollouts)
        bs_rollouts_metrics(app->rollouts, &b);
    bs__api_endpoints_metrics(app, &b);
    bs_ratelimit_stats_t rs;
    if (bs_auth_limits_stats(app->auth, &rs))
        bs_buf_printf(
            &b,
            "# HELP basalt_redis_up 1 while the connection to redis_url is up.\n"
            "# TYPE basalt_redis_up gauge\n"
            "basalt_redis_up %d\n"
            "# HELP basalt_redis_commands_total Commands sent to Redis.\n"
            "# TYPE basalt_redis_commands_total counter\n"
            "basalt_redis_commands_total %llu\n"
            "# HELP basalt_redis_errors_total Redis commands that failed (connection, timeout, error reply).\n"
            "# TYPE basalt_redis_errors_total counter\n"
            "basalt_redis_errors_total %llu\n"
            "# HELP basalt_redis_reconnects_total Connections to Redis made again after one was lost.\n"
            "# TYPE basalt_redis_reconnects_total counter\n"
            "basalt_redis_reconnects_total %llu\n"
            "# HELP basalt_ratelimit_shared 1 while rate limits are global (Redis), 0 while per replica.\n"
            "# TYPE basalt_ratelimit_shared gauge\n"
            "basalt_ratelimit_shared %d\n"
            "# HELP basalt_ratelimit_fallback_total Rate limit decisions taken per replica because Redis was unavailable.\n"
            "# TYPE basalt_ratelimit_fallback_total counter\n"
            "basalt_ratelimit_fallback_total %llu\n"
            "# HELP basalt_ratelimit_fallback_transitions_total Times the rate limits fell back to per-replica buckets.\n"
            "# TYPE basalt_ratelimit_fallback_transitions_total counter\n"
            "basalt_ratelimit_fallback_transitions_total %llu\n"
            "# HELP basalt_ratelimit_refill_rounds_total Pipelined round trips that refilled slices of the global buckets.\n"
            "# TYPE basalt_ratelimit_refill_rounds_total counter\n"
            "basalt_ratelimit_refill_rounds_total %llu\n"
            "# HELP basalt_ratelimit_tokens_granted_total Tokens of the global buckets granted to this replica.\n"
            "# TYPE basalt_ratelimit_tokens_granted_total counter\n"
            "basalt_ratelimit_tokens_granted_total %llu\n",
            rs.kv.connected, (unsigned long long)rs.kv.commands, (unsigned long long)rs.kv.errors,
            (unsigned long long)rs.kv.reconnects, rs.shared,
            (unsigned long long)rs.fallback_decisions, (unsigned long long)rs.fallback_transitions,
            (unsigned long long)rs.refill_rounds, (unsigned long long)rs.tokens_granted);
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
    bs_jw_key(&b, "replica_id");
    bs_jw_str(&b, app->replica_id);
    bs_jw_key(&b, "snapshot");
    bs_jw_obj_begin(&b);
    if (app->changes) {
        bs_changes_stats_t cs;
        bs_changes_stats(app->changes, &cs);
        bs_jw_key(&b, "generation");
        bs_jw_int(&b, cs.generation);
        bs_jw_key(&b, "age_ms");
        bs_jw_int(&b, cs.age_ms < 0 ? 0 : cs.age_ms);
        bs_jw_key(&b, "scopes");
        bs_jw_obj_begin(&b);
        bs_jw_key(&b, "auth");
        bs_jw_int(&b, bs_changes_seen(app->changes, "auth"));
        bs_jw_key(&b, "registry");
        bs_jw_int(&b, bs_changes_seen(app->changes, "registry"));
        bs_jw_obj_end(&b);
    }
    bs_jw_obj_end(&b);
    bs_jw_key(&b, "backends");
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "metadata");
    bs_jw_str(&b, bs_meta_backend(app->meta));
    bs_jw_key(&b, "artifacts");
    bs_jw_str(&b, bs_blobs_kind(bs_registry_blobs(app->registry)) == BS_BLOBS_METADATA
                      ? "metadata"
                      : "filesystem");
    /* Rate limits: "redis" (global buckets, while Redis answers), "redis-fallback" (shared
     * limits configured, Redis unreachable: per-replica buckets) or "local". */
    bs_ratelimit_stats_t rs;
    int shared = bs_auth_limits_stats(app->auth, &rs);
    bs_jw_key(&b, "events"); /* the topics' log: "segments" or "jetstream" */
    bs_jw_str(&b, app->log ? bs_log_backend(app->log) : "none");
    bs_jw_key(&b, "rate_limits");
    bs_jw_str(&b, !shared ? "local" : rs.shared ? "redis" : "redis-fallback");
    if (shared) {
        bs_jw_key(&b, "redis_errors");
        bs_jw_int(&b, (int64_t)rs.kv.errors);
    }
    bs_jw_obj_end(&b);
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
