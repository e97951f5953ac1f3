/* Opening and closing the application's stores and domain modules. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "events/jobs.h"
#include "events/webhooks.h"
#include "http/client.h"
#include "events/triggers.h"
#include "registry/registry.h"
#include "serving/endpoints.h"
#include "serving/predlog.h"
#include "serving/serving.h"
#include "serving/rollouts.h"
#include "base/log.h"
#include "base/parallel.h"
#include "base/pool.h"
#include "base/log.h"
#include "events/topics.h"
#include "store/changes.h"
#include "store/log.h"
#include "store/resources.h"
#include <unistd.h>

/* Change subscribers (the watcher's thread, or a writer's through bs_changes_refresh). */
static int reload_keys(void *ud, bs_err_t *err) { return bs_auth_reload(ud, err); }
static int rebuild_routing(void *ud, bs_err_t *err) { return bs_serving_refresh(ud, err); }
static int rebuild_resources(void *ud, bs_err_t *err) { return bs__api_resources_rebuild(ud, err); }

/* Registry events (on the writer's thread, after the commit) → the tenant's registry-events
 * topic, for registry triggers. */
static void registry_event(void *ud, const char *tenant, const char *type, const char *subject,
                           const char *data_json)
{
    bs_app_t *app = ud;
    bs_triggers_registry_event(app->triggers, tenant, type, subject, data_json);
}

/* After this replica's own committed write: rebuild before answering (read your writes)
 * and note the generation, so the watcher does not rebuild again for it. */
static int auth_changed(void *ud, bs_err_t *err)
{
    return bs_changes_refresh(((bs_app_t *)ud)->changes, "auth", err);
}
static void registry_changed(void *ud)
{
    bs_err_t err;
    if (bs_changes_refresh(((bs_app_t *)ud)->changes, "registry", &err) != 0)
        BS_LOG(BS_LOG_ERROR, "serving", "routing refresh failed: %s", err.msg);
}

int bs_api_app_open(bs_app_t *app, bs_err_t *err)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/basalt.db", app->data_dir);
    /* metadata_url set: PostgreSQL; the data directory keeps the lock file and the
     * local files (artifacts). */
    bs_meta_opts_t mo = {.pool_size = app->cfg.metadata_pool_size,
                         .application_name = app->cfg.replica_id};
    app->meta = bs_meta_open_ex(app->cfg.metadata_url[0] ? app->cfg.metadata_url : path, &mo, err);
    if (!app->meta)
        return err->code;
    if (app->cfg.replica_id[0]) {
        snprintf(app->replica_id, sizeof app->replica_id, "%s", app->cfg.replica_id);
    } else {
        char host[64] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(app->replica_id, sizeof app->replica_id, "%s-%ld", host, (long)getpid());
    }
    /* The job runtime on the metadata store (events/jobs.h). Kinds register between here
     * and bs_jobs_start at the end of this function. */
    bs_jobs_opts_t jo = {.workers = app->cfg.job_workers,
                         .lease_ms = app->cfg.job_lease_ms,
                         .retention_ms = app->cfg.job_retention_ms,
                         .owner = app->replica_id};
    app->jobs = bs_jobs_new(app->meta, &jo, err);
    if (!app->jobs || bs__api_jobs_register(app, err))
        return err->code;
    /* Before the snapshots are built: it takes the generations it reads now as seen, so
     * a change committed while they build is rebuilt at its first poll. */
    app->changes = bs_changes_new(app->meta, app->cfg.change_poll_ms, err);
    if (!app->changes)
        return err->code;
    app->auth = bs_auth_new(app->meta, app->cfg.rate_limit_rps, app->cfg.rate_limit_burst, err);
    if (!app->auth)
        return err->code;
    /* Artifacts: files under <data>/artifacts, or chunks in the metadata store (cached
     * there) so replicas on one PostgreSQL share them without a shared disk. */
    bs_blobs_kind_t store =
        bs_meta_dialect(app->meta) == BS_META_POSTGRES ? BS_BLOBS_METADATA : BS_BLOBS_FILES;
    if (app->cfg.artifact_store[0] && bs_blobs_parse_kind(app->cfg.artifact_store, &store, err))
        return err->code;
    /* redis_url: the keys' buckets become global, shared by every replica on that Redis.
     * A Redis that is down now is not fatal: the limits start per replica and go global
     * once it answers. */
    if (app->cfg.redis_url[0]) {
        if (bs_auth_share_limits(app->auth, app->cfg.redis_url, err) != 0)
            return err->code;
        bs_kv_url_t u; /* named without the password */
        if (bs_kv_parse_url(app->cfg.redis_url, &u, NULL) == 0)
            BS_LOG(BS_LOG_INFO, "serve", "rate limits: global buckets in redis at %s%s%.0d%s%.0d",
                   u.unix_path[0] ? u.unix_path : u.host, u.unix_path[0] ? "" : ":",
                   u.unix_path[0] ? 0 : u.port, u.db ? " db " : "", u.db);
    }
    snprintf(path, sizeof path, "%s/artifacts", app->data_dir);
    app->registry = bs_registry_new(app->meta, path, store, err);
    if (!app->registry)
        return err->code;
    bs_registry_set_replica_id(app->registry, app->replica_id);
    if (bs_registry_gc_start(app->registry, app->cfg.artifact_gc_grace_seconds, err) != 0)
        return err->code;
    bs_serving_opts_t so = {.memory_budget = (size_t)app->cfg.model_memory_bytes,
                            .max_rows = app->cfg.max_batch_rows,
                            .reject_unknown = strcmp(app->cfg.unknown_features, "reject") == 0,
                            .batch_max_size = app->cfg.batch_max_size,
                            .batch_delay_us = (uint32_t)app->cfg.batch_delay_us};
    bs_parallel_set_max(app->cfg.predict_threads);
    app->serving = bs_serving_new(app->meta, app->registry, &so, err);
    if (!app->serving)
        return err->code;
    /* ---- issue 10: endpoints' shadow runs (serving/shadow.h; api/endpoint_predict.c) ---- */
    if (bs__api_shadow_open(app, err) != 0)
        return err->code;

    /* ---- issue 10: endpoints (serving/endpoints.h) ----
     * Before the resource kinds' first rebuild (below), which fills its snapshot. */
    app->endpoints = bs_endpoints_new(app->meta, app->serving, err);
    if (!app->endpoints)
        return err->code;
    /* The topics' log (segments under <data>/log, or JetStream with nats_url), then the
     * topics snapshot over it. Opened after the metadata store; the subsystems that use it
     * (topics, jobs, webhooks, triggers) open after it and close before it. */
    snprintf(path, sizeof path, "%s/log", app->data_dir);
    bs_log_opts_t lo = {.dir = path, .nats_url = app->cfg.nats_url, .replica_id = app->replica_id};
    app->log = bs_log_open(&lo, err);
    if (!app->log)
        return err->code;
    if (bs_meta_dialect(app->meta) == BS_META_POSTGRES && !app->cfg.nats_url[0])
        BS_LOG(BS_LOG_WARN, "serve",
               "topics are in this replica's own log (%s): replicas sharing the PostgreSQL "
               "store do not share them; set nats_url for topics all replicas see",
               path);
    app->topics = bs_topics_new(app->log, app->meta, app->cfg.max_event_bytes, err);
    if (!app->topics)
        return err->code;
    bs_auth_on_change(app->auth, auth_changed, app);
    bs_registry_on_change(app->registry, registry_changed, app);
    if (bs_changes_subscribe(app->changes, "auth", reload_keys, app->auth, err) ||
        bs_changes_subscribe(app->changes, "registry", rebuild_routing, app->serving, err) ||
        bs_changes_subscribe(app->changes, BS_RESOURCES_SCOPE, rebuild_resources, app, err))
        return err->code;
    /* The resource kinds' snapshots (topics: each one ensured in the log). A failure here
     * is logged, not fatal: what could be built is published (a topic the log refused
     * answers 503), and the next change of scope "resources" rebuilds again. */
    bs_err_t rerr;
    if (bs__api_resources_rebuild(app, &rerr) != 0)
        BS_LOG(BS_LOG_ERROR, "serve", "resource snapshots: %s (retried at the next poll)",
               rerr.msg);
    if (bs_changes_start(app->changes, err))
        return err->code;
    /* The outbound HTTP client (webhooks, later upstream providers): its own thread. */
    bs_httpc_opts_t ho = {0};
    app->http = bs_httpc_new(&ho, err);
    if (!app->http)
        return err->code;
    /* Webhook deliveries: the webhook.deliver job kind, on the outbound client. */
    app->webhooks = bs_webhooks_new(app->meta, app->jobs, app->http, err);
    if (!app->webhooks)
        return err->code;
    bs_webhooks_set_retention(app->webhooks, app->cfg.job_retention_ms);
    /* Uploads, every registry write (with its snapshot rebuild), artifact reads: mostly
     * short, some long (a big upload's parse); four workers keep a quick job from queueing
     * behind two long ones. Model loads have the serving module's own threads. */
    app->workers = bs_pool_new(4, err);
    if (!app->workers)
        return err->code;
    /* Topic streams (SSE) read the log on a small pool of their own: a publish wakes every
     * stream of its topic at once, and those runs must not queue ahead of the above. */
    app->stream_workers = bs_pool_new(2, err);
    if (!app->stream_workers)
        return err->code;
    int n;
    const bs_route_t *routes = bs_api_routes(&n);
    app->routes = malloc((size_t)n * sizeof *app->routes);
    if (!app->routes)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    memcpy(app->routes, routes, (size_t)n * sizeof *routes);
    app->n_routes = n;
    for (int i = 0; i < n; i++) /* metrics_public: anyone may scrape on the main listener */
        if (app->cfg.metrics_public && app->routes[i].fn == bs__api_metrics)
            app->routes[i].min_role = BS_ROLE_PUBLIC;
    bs_buf_t b;
    bs_buf_init(&b);
    bs_api_openapi(app->routes, n, &b);
    app->openapi_len = b.len;
    app->openapi = bs_buf_take(&b);
    if (!app->openapi)
        return bs_err_set(err, BS_ENOMEM, "out of memory building the OpenAPI document");
    bs_buf_init(&b);
    if (bs__api_docs_render(app->openapi, app->openapi_len, &b, err)) {
        bs_buf_free(&b);
        return err->code;
    }
    app->docs_len = b.len;
    app->docs = bs_buf_take(&b);
    /* ---- job kinds -------------------------------------------------------------------
     * Every module that owns a job kind registers it above this line (bs_jobs_register on
     * app->jobs; the API's own `sleep` kind is registered next to bs_jobs_new). Claiming
     * starts here: a kind registered later would be refused. */
    if (bs_jobs_start(app->jobs, err) != 0)
        return err->code;
    /* Triggers, once everything they use is open (the log, serving, webhooks) and the jobs
     * runtime runs: started from the stored specs now, kept current by the resources
     * scope. Without a log (no topics) there are none. */
    if (app->log) {
        bs_triggers_opts_t to = {.meta = app->meta,
                                 .log = app->log,
                                 .serving = app->serving,
                                 .registry = app->registry,
                                 .jobs = app->jobs,
                                 .webhooks = app->webhooks,
                                 .topics = app->topics,
                                 .workers = app->cfg.trigger_workers,
                                 .max_json_depth = app->cfg.max_json_depth};
        app->triggers = bs_triggers_new(&to, err);
        if (!app->triggers)
            return err->code;
        bs_registry_on_event(app->registry, registry_event, app);
        if (bs_triggers_rebuild(app->triggers, err) != 0)
            return err->code;
    }

    /* ---- issue 10: the prediction log (serving/predlog.h) ----
     * On the topics' log, with the outbound client for the payload logger. */
    if (app->log) {
        bs_predlog_opts_t po = {.log = app->log,
                                .http = app->http,
                                .buffer_bytes = (size_t)app->cfg.prediction_log_buffer_bytes,
                                .source = app->replica_id};
        app->predlog = bs_predlog_new(&po, err);
        if (!app->predlog)
            return err->code;
    }

    /* ---- issue 10: the monitor (monitor/monitor.h) ----
     * Tails every tenant with an endpoint (the endpoints' rebuild hook calls it for each one
     * now and after every rebuild) and feeds the bandits' rewards. */
    if (bs__api_monitor_open(app, err) != 0)
        return err->code;

    /* ---- issue 10: the rollout controller (serving/rollouts.h) ---- */
    /* After the monitor and endpoints it reads; its lease runner evaluates running
     * rollouts on whichever replica holds "rollout-controller". */
    bs_rollouts_opts_t ro = {.meta = app->meta,
                             .monitor = app->monitor,
                             .endpoints = app->endpoints,
                             .changes = app->changes,
                             .registry = app->registry,
                             .owner = app->replica_id,
                             .tick_ms = app->cfg.rollout_tick_ms,
                             .lease_ms = app->cfg.rollout_lease_ms};
    app->rollouts = bs_rollouts_new(&ro, err);
    if (!app->rollouts || bs_rollouts_start(app->rollouts, err) != 0)
        return err->code;

    return 0;
}

void bs_api_app_close(bs_app_t *app)
{
    /* ---- issue 10: the shadow runs first (they use serving, endpoints and the log) ---- */
    bs__api_shadow_close(app);
    /* Triggers first: they call the jobs runtime, webhooks, serving and the log. Freed
     * once the change watcher (which rebuilds them) is gone. */
    if (app->registry)
        bs_registry_on_event(app->registry, NULL, NULL);
    bs_triggers_stop(app->triggers);

    /* ---- issue 10: stop the rollout controller, the monitor, the prediction log ---- */
    bs_rollouts_free(app->rollouts); /* first: its ticks read the monitor and endpoints */
    app->rollouts = NULL;
    bs__api_monitor_close(app); /* its tails read the log; it flushes the prediction log */
    bs_predlog_free(app->predlog); /* drains what it holds (bounded), before the log closes */
    app->predlog = NULL;

    /* Completions still arriving from the log (a fetch whose request outlived the drain)
     * see this and answer at once instead of queueing more work on the pool. */
    app->shutting_down = 1;
    /* Webhooks stop submitting and the outbound client fails what is in flight (those
     * attempts end retryable, at once), so the job runtime need not wait for receivers. */
    bs_webhooks_stop(app->webhooks);
    bs_httpc_free(app->http);
    app->http = NULL;
    /* Then the job runtime: its handlers use the modules below. Attempts in flight are
     * told to stop; those still open after a third of the lease are released to other
     * replicas. */
    bs_jobs_free(app->jobs);
    app->jobs = NULL;
    bs__api_jobs_unregister(app);
    bs_webhooks_free(app->webhooks); /* after the runtime: ends what it still records */
    app->webhooks = NULL;
    bs_pool_free(app->stream_workers); /* the streams' teardown runs, queued at the stop */
    app->stream_workers = NULL;
    bs_pool_free(app->workers); /* finishes queued jobs first */
    app->workers = NULL;
    bs_changes_free(app->changes); /* no rebuild runs past here */
    app->changes = NULL;
    bs_triggers_free(app->triggers);
    app->triggers = NULL;
    /* ---- issue 10: endpoints: after the change watcher (its rebuilds) and the modules that
     * route through it; before serving, whose snapshot it reads. */
    bs_endpoints_free(app->endpoints);
    app->endpoints = NULL;
    /* The log's users close before it (the job runtime above; webhooks and triggers here),
     * then the log: it completes or fails every pending append and fetch, whose deferred
     * responses are dropped once the server's loops are gone. The topics snapshot goes
     * last. */
    bs_log_close(app->log);
    app->log = NULL;
    bs_topics_free(app->topics);
    app->topics = NULL;
    bs_serving_free(app->serving);
    app->serving = NULL;
    bs_registry_free(app->registry);
    app->registry = NULL;
    bs_auth_free(app->auth);
    app->auth = NULL;
    bs_meta_close(app->meta);
    app->meta = NULL;
    free(app->openapi);
    app->openapi = NULL;
    free(app->docs);
    app->docs = NULL;
    free(app->routes);
    app->routes = NULL;
}

/* Not in routes.c: that file is the main listener's table (tests read it as such). */
static const bs_route_t metrics_routes[] = {
    {"GET", "/metrics", bs__api_metrics, BS_ROLE_PUBLIC, "Prometheus metrics (text format 0.0.4)",
     "system", NULL, NULL, 0, BS_ROUTE_INLINE},
    {"GET", "/healthz", bs__api_healthz, BS_ROLE_PUBLIC, "Liveness: the process serves requests",
     "system", NULL, "{\"type\":\"object\"}", 0, BS_ROUTE_INLINE},
};

const bs_route_t *bs_api_metrics_routes(int *n)
{
    *n = (int)(sizeof metrics_routes / sizeof metrics_routes[0]);
    return metrics_routes;
}
