/*
 * Feedback and the endpoint reports (issue 10): POST /v1/feedback and GET
 * /v1/endpoints/{name}/performance | experiment | shadow. Thin: monitor/monitor.h keeps the
 * tables, validates, appends and computes; this file reads the query, checks the endpoint
 * against this replica's endpoints snapshot (copying what a report needs: the routes'
 * variant names in spec order and the Thompson reward label) and renders.
 *
 * All four run on store workers (BS_ROUTE_BLOCKING): feedback waits for the log's fsync,
 * and a report scans up to monitor_max_predictions entries.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "base/log.h"
#include "base/time.h"
#include "monitor/monitor.h"
#include "serving/endpoints.h"

#define DEFAULT_WINDOW_MS (3600 * 1000LL)

/* What a report needs of the endpoint, copied out of the snapshot. */
typedef struct {
    char name[64];
    int n_routes;
    char variants[BS_ENDPOINT_MAX_ROUTES][64];
    const char *variant_ptrs[BS_ENDPOINT_MAX_ROUTES];
    int thompson;
    char reward_label[128];
} ep_info_t;

/* The endpoint of the path. 1, or 0 after responding (404, 503). */
static int path_endpoint(bs_req_t *req, ep_info_t *out)
{
    bs_app_t *app = APP(req);
    const char *name = bs_req_param(req, "name");
    if (!app->monitor) {
        bs_resp_errorf(req, BS_EUNAVAIL, NULL, "monitoring is not available on this server");
        return 0;
    }
    const bs_endpoint_t *ep =
        app->endpoints && name ? bs_endpoints_get(app->endpoints, req->who.tenant, name) : NULL;
    if (!ep) {
        bs_resp_errorf(req, BS_ENOTFOUND, "name", "no endpoint named '%.64s'", name ? name : "");
        return 0;
    }
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", ep->name);
    out->n_routes = ep->n_routes;
    for (int i = 0; i < ep->n_routes && i < BS_ENDPOINT_MAX_ROUTES; i++) {
        snprintf(out->variants[i], sizeof out->variants[i], "%s", ep->routes[i].name);
        out->variant_ptrs[i] = out->variants[i];
    }
    out->thompson = ep->policy == BS_ENDPOINT_THOMPSON;
    snprintf(out->reward_label, sizeof out->reward_label, "%s", ep->reward_label);
    return 1;
}

/* ?window= (w, or NULL) as a positive duration (default def). 0, or -1 after responding
 * 400. */
static int parse_window(bs_req_t *req, const char *w, int64_t def, int64_t *ms)
{
    *ms = def;
    if (!w)
        return 0;
    if (bs_time_parse_duration(w, ms) != 0 || *ms <= 0) {
        bs_resp_errorf(req, BS_EINVAL, "window",
                       "window must be a positive duration (15m, 1h, 7d), got '%.32s'", w);
        return -1;
    }
    return 0;
}

/* ?name= (s, or NULL) as a number in (lo, hi) (default def). 0, or -1 after responding
 * 400. */
static int parse_number(bs_req_t *req, const char *name, const char *s, double def, double lo,
                        double hi, double *out)
{
    *out = def;
    if (!s)
        return 0;
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !isfinite(v) || v <= lo || v >= hi) {
        bs_resp_errorf(req, BS_EINVAL, name, "%s must be a number in (%g, %g), got '%.32s'", name,
                       lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static void respond(bs_req_t *req, int rc, bs_buf_t *b, const bs_err_t *err)
{
    if (rc)
        bs_resp_error(req, err);
    else if (b->oom)
        bs_resp_errorf(req, BS_ENOMEM, NULL, "out of memory rendering the report");
    else
        bs_resp_json(req, 200, b);
    bs_buf_free(b);
}

void bs__api_feedback(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    if (!app->monitor)
        return bs_resp_errorf(req, BS_EUNAVAIL, NULL, "monitoring is not available on this server");
    bs_err_t err;
    cJSON *body = bs_req_json(req, &err);
    if (!body)
        return bs_resp_error(req, &err);
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_monitor_feedback(app->monitor, req->who.tenant, body, &b, &err);
    respond(req, rc, &b, &err);
}

void bs__api_endpoint_performance(bs_req_t *req)
{
    ep_info_t ep;
    int64_t window;
    if (!path_endpoint(req, &ep) ||
        parse_window(req, bs_req_query(req, "window"), DEFAULT_WINDOW_MS, &window) != 0)
        return;
    const char *by = bs_req_query(req, "by");
    bs_err_t err;
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_monitor_performance(APP(req)->monitor, req->who.tenant, ep.name, window,
                                    by ? by : "version", &b, &err);
    respond(req, rc, &b, &err);
}

void bs__api_endpoint_experiment(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    ep_info_t ep;
    int64_t window;
    double mde, alpha, power;
    if (!path_endpoint(req, &ep) ||
        parse_window(req, bs_req_query(req, "window"), app->cfg.monitor_window_ms, &window) != 0 ||
        parse_number(req, "mde", bs_req_query(req, "mde"), 0, 0, INFINITY, &mde) != 0 ||
        parse_number(req, "alpha", bs_req_query(req, "alpha"), 0.05, 0, 1, &alpha) != 0 ||
        parse_number(req, "power", bs_req_query(req, "power"), 0.8, 0, 1, &power) != 0)
        return;
    bs_monitor_experiment_opts_t o = {.window_ms = window,
                                      .variants = ep.variant_ptrs,
                                      .n_variants = ep.n_routes,
                                      .metric = bs_req_query(req, "metric"),
                                      .mde = mde,
                                      .alpha = alpha,
                                      .power = power,
                                      .reward_label = ep.thompson ? ep.reward_label : NULL};
    bs_err_t err;
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_monitor_experiment(app->monitor, req->who.tenant, ep.name, &o, &b, &err);
    respond(req, rc, &b, &err);
}

void bs__api_endpoint_shadow(bs_req_t *req)
{
    ep_info_t ep;
    int64_t window;
    if (!path_endpoint(req, &ep) ||
        parse_window(req, bs_req_query(req, "window"), DEFAULT_WINDOW_MS, &window) != 0)
        return;
    bs_err_t err;
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_monitor_shadow(APP(req)->monitor, req->who.tenant, ep.name, window, &b, &err);
    respond(req, rc, &b, &err);
}

/* ---- wiring (app.c) --------------------------------------------------------------------- */

/* The endpoints module's rewards source: a Thompson route's counts over the monitor's
 * window. */
static int rewards_cb(void *ud, const bs_endpoint_t *ep, int route, int64_t *successes,
                      int64_t *failures)
{
    bs_app_t *app = ud;
    if (!app->monitor || route < 0 || route >= ep->n_routes)
        return -1;
    return bs_monitor_rewards(app->monitor, ep->tenant, ep->name, ep->routes[route].name,
                              bs_time_wall_ms() - app->cfg.monitor_window_ms, ep->reward_label,
                              successes, failures);
}

/* After every endpoints rebuild, per tenant with an endpoint: tail its topics. */
static void track_cb(void *ud, const char *tenant)
{
    bs_app_t *app = ud;
    bs_err_t err;
    if (app->monitor && bs_monitor_track(app->monitor, tenant, &err) != 0)
        BS_LOG(BS_LOG_WARN, "monitor", "cannot tail the topics of tenant %s yet: %s", tenant,
               err.msg);
}

int bs__api_monitor_open(bs_app_t *app, bs_err_t *err)
{
    if (!app->log)
        return 0;
    bs_monitor_opts_t mo = {.log = app->log,
                            .predlog = app->predlog,
                            .window_ms = app->cfg.monitor_window_ms,
                            .max_predictions = app->cfg.monitor_max_predictions};
    app->monitor = bs_monitor_new(&mo, err);
    if (!app->monitor)
        return err->code;
    if (app->endpoints) {
        bs_endpoints_on_rebuild(app->endpoints, track_cb, app);
        bs_endpoints_set_rewards_source(app->endpoints, rewards_cb, app);
    }
    return 0;
}

void bs__api_monitor_close(bs_app_t *app)
{
    if (!app->monitor)
        return;
    if (app->endpoints) {
        bs_endpoints_set_rewards_source(app->endpoints, NULL, NULL);
        bs_endpoints_on_rebuild(app->endpoints, NULL, NULL);
    }
    bs_monitor_free(app->monitor);
    app->monitor = NULL;
}

void bs__api_monitor_metrics(bs_app_t *app, bs_buf_t *b)
{
    if (app->monitor)
        bs_monitor_metrics(app->monitor, b);
}
