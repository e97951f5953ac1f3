/* Opening and closing the application's stores and domain modules. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "registry/registry.h"
#include "serving/serving.h"
#include "base/parallel.h"
#include "base/pool.h"

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
    app->auth = bs_auth_new(app->meta, app->cfg.rate_limit_rps, app->cfg.rate_limit_burst, err);
    if (!app->auth)
        return err->code;
    snprintf(path, sizeof path, "%s/artifacts", app->data_dir);
    app->registry = bs_registry_new(app->meta, path, err);
    if (!app->registry)
        return err->code;
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
    bs_registry_on_change(app->registry, bs_serving_refresh_cb, app->serving);
    /* Uploads, every registry write (with its snapshot rebuild), artifact reads: mostly
     * short, some long (a big upload's parse); four workers keep a quick job from queueing
     * behind two long ones. Model loads have the serving module's own threads. */
    app->workers = bs_pool_new(4, err);
    if (!app->workers)
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
    return 0;
}

void bs_api_app_close(bs_app_t *app)
{
    bs_pool_free(app->workers); /* finishes queued jobs first */
    app->workers = NULL;
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
     "system", NULL, NULL, 0},
    {"GET", "/healthz", bs__api_healthz, BS_ROLE_PUBLIC, "Liveness: the process serves requests",
     "system", NULL, "{\"type\":\"object\"}", 0},
};

const bs_route_t *bs_api_metrics_routes(int *n)
{
    *n = (int)(sizeof metrics_routes / sizeof metrics_routes[0]);
    return metrics_routes;
}
