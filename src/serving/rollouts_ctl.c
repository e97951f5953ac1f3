/*
 * The rollout controller (rollouts.h): a lease runner ("rollout-controller", a tick every
 * rollout_tick_ms) that, while this replica holds the lease, evaluates every running
 * rollout; and a metrics thread that every replica runs for /metrics.
 *
 * One tick, per running rollout (state read from its row; nothing kept in memory):
 * 1. The endpoint's spec must be the step's (candidate at steps[step], the stable routes
 *    scaled to the rest). The rollout writes it in the same transaction as its state, so a
 *    different spec means someone else changed the endpoint (a PUT, an endpoint rollback):
 *    that change wins — the rollout is aborted, keeping it, with a reason naming the
 *    revision and who wrote it. An endpoint deleted meanwhile aborts it too.
 * 2. The guards compare the candidate (its version's routed predictions) with the stable
 *    (every other version's) over the step's window [step_started_at, now), from the
 *    monitor: error rate, p99 latency, PSI of the candidate's predictions against the
 *    stable's, the drop of a feedback metric. They are judged once the candidate served
 *    guards.min_requests predictions in the step; PSI needs 10 predictions on each side
 *    (the monitor's minimum), the metric max_metric_drop.min_labelled labelled predictions
 *    on each side. A guard without enough data is pending: it neither fails nor blocks.
 * 3. A failed guard rolls back at once: the pre-rollout spec is put again, state
 *    rolled_back, the reason names the guard with its value and limit.
 * 4. Else the step advances once it has lasted step_interval and the candidate served
 *    min_requests_per_step (and guards.min_requests when any guard is set) in it; past the
 *    step before the final 100 the rollout is promoted.
 * 5. Else only last_check is written.
 * Every write is one transaction with the fencing check (rollouts.c), so a replica that
 * lost the lease mid-tick writes nothing; the tick also stops between rollouts once
 * bs_lease_runner_held turns 0.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/rcu.h"
#include "base/time.h"
#include "monitor/monitor.h"
#include "serving/rollouts_int.h"
#include "store/resources.h"

#define MAX_RUNNING 1000

typedef struct {
    const char *name;
    double value, limit, stable;
    int state; /* 1 holds, 0 failed, -1 pending */
    char pending[192];
} guard_t;

static double metric_of(const bs_monitor_summary_t *s, const char *m)
{
    if (!strcmp(m, "accuracy"))
        return s->accuracy;
    if (!strcmp(m, "precision"))
        return s->precision;
    if (!strcmp(m, "recall"))
        return s->recall;
    if (!strcmp(m, "f1"))
        return s->f1;
    if (!strcmp(m, "roc_auc"))
        return s->roc_auc;
    if (!strcmp(m, "log_loss"))
        return s->log_loss;
    if (!strcmp(m, "mae"))
        return s->mae;
    if (!strcmp(m, "rmse"))
        return s->rmse;
    if (!strcmp(m, "r2"))
        return s->r2;
    return NAN;
}

/* Errors (log-loss, MAE, RMSE) drop when they grow. */
static int lower_is_better(const char *m)
{
    return !strcmp(m, "log_loss") || !strcmp(m, "mae") || !strcmp(m, "rmse");
}

static void add_num(cJSON *o, const char *key, double v)
{
    if (isfinite(v))
        cJSON_AddNumberToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

static cJSON *side_json(const bs_monitor_summary_t *s, const bs__rollout_plan_t *p)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "requests", (double)s->requests);
    cJSON_AddNumberToObject(o, "errors", (double)s->errors);
    add_num(o, "error_rate", s->requests ? s->error_rate : NAN);
    add_num(o, "latency_p50_ms", s->latency_p50_ms);
    add_num(o, "latency_p99_ms", s->latency_p99_ms);
    add_num(o, "mean_prediction", s->mean_prediction);
    cJSON_AddNumberToObject(o, "labelled", (double)s->labelled);
    if (p->has_metric)
        add_num(o, p->metric, metric_of(s, p->metric));
    return o;
}

static void guard_json(cJSON *check, const guard_t *g)
{
    cJSON *o = cJSON_AddObjectToObject(check, g->name);
    add_num(o, "value", g->value);
    add_num(o, "limit", g->limit);
    add_num(o, "stable", g->stable);
    if (g->state < 0) {
        cJSON_AddNullToObject(o, "ok");
        cJSON_AddStringToObject(o, "pending", g->pending);
    } else {
        cJSON_AddBoolToObject(o, "ok", g->state == 1);
    }
}

typedef struct {
    char *spec, *updated_by;
    int64_t generation;
} res_t;

static int res_cb(const bs_resource_t *res, void *ud)
{
    res_t *c = ud;
    c->spec = strdup(res->spec);
    c->updated_by = strdup(res->updated_by ? res->updated_by : "");
    c->generation = res->generation;
    return 0;
}

/* Applies t; a conflict (the lease lost, the row changed by an API call) is expected and
 * only logged at debug level. */
static void apply(bs_rollouts_t *r, const bs__rollout_row_t *row, const bs__rollout_plan_t *p,
                  const bs__rollout_tr_t *t, const char *what)
{
    bs_err_t err;
    bs_err_clear(&err);
    int rc = bs__rollout_apply(r, row, p, t, &err);
    if (rc == BS_ECONFLICT)
        BS_LOG(BS_LOG_DEBUG, "rollouts", "rollout %s: %s not written: %s", row->id, what, err.msg);
    else if (rc) {
        atomic_fetch_add(&r->tick_errors, 1);
        BS_LOG(BS_LOG_WARN, "rollouts", "rollout %s: %s failed: %s", row->id, what, err.msg);
    } else if (!t->check_only) {
        BS_LOG(BS_LOG_INFO, "rollouts", "rollout %s of endpoint %s/%s: %s%s%s", row->id,
               row->tenant, row->endpoint, what, t->reason ? ": " : "", t->reason ? t->reason : "");
    }
}

/* Rolls back to the pre-rollout spec with reason; ev_guard names the failed guard (or NULL). */
static void roll_back(bs_rollouts_t *r, const bs__rollout_row_t *row, const bs__rollout_plan_t *p,
                      int64_t token, const char *reason, const guard_t *g, const char *check)
{
    cJSON *ev = bs__rollout_event("rolled_back", row->step, 0, r->owner);
    if (g) {
        cJSON_AddStringToObject(ev, "guard", g->name);
        add_num(ev, "value", g->value);
        add_num(ev, "limit", g->limit);
    }
    cJSON_AddStringToObject(ev, "reason", reason);
    bs__rollout_tr_t t = {.state = "rolled_back",
                          .step = row->step,
                          .step_started_at = row->step_started_at,
                          .reason = reason,
                          .last_check = check,
                          .event = ev,
                          .spec = row->base_spec,
                          .actor = BS__ROLLOUT_ACTOR,
                          .token = token};
    apply(r, row, p, &t, "rolled back");
    cJSON_Delete(ev);
}

static void evaluate(bs_rollouts_t *r, const bs__rollout_row_t *row, int64_t token)
{
    bs_err_t err;
    bs_err_clear(&err);
    bs__rollout_plan_t p;
    if (bs__rollout_plan_parse(row->spec, &p, &err) != 0) {
        BS_LOG(BS_LOG_ERROR, "rollouts", "rollout %s: %s", row->id, err.msg);
        return;
    }
    atomic_fetch_add(&r->evaluations, 1);
    int step = (int)row->step;
    if (step < 0 || step >= p.n_steps - 1)
        step = p.n_steps - 2;
    res_t res = {0};
    int rc =
        bs_resources_get(r->meta, row->tenant, BS_ENDPOINT_KIND, row->endpoint, res_cb, &res, &err);
    if (rc == BS_ENOTFOUND) {
        cJSON *ev = bs__rollout_event("aborted", row->step, 0, r->owner);
        bs__rollout_tr_t t = {.state = "aborted",
                              .step = row->step,
                              .step_started_at = row->step_started_at,
                              .reason = "the endpoint was deleted",
                              .event = ev,
                              .actor = BS__ROLLOUT_ACTOR,
                              .token = token};
        apply(r, row, &p, &t, "aborted");
        cJSON_Delete(ev);
        return;
    }
    if (rc || !res.spec) {
        atomic_fetch_add(&r->tick_errors, 1);
        BS_LOG(BS_LOG_WARN, "rollouts", "rollout %s: reading endpoint %s failed: %s", row->id,
               row->endpoint, err.msg);
        free(res.spec);
        free(res.updated_by);
        return;
    }
    /* 1. the step's spec in place */
    char *desired = bs__rollout_step_spec(r, row, &p, step, NULL, &err);
    if (!desired) {
        free(res.spec);
        free(res.updated_by);
        if (err.code == BS_EINVAL || err.code == BS_ENOTFOUND) {
            char reason[400];
            snprintf(reason, sizeof reason, "the spec of step %d (%d%%) is no longer valid: %s",
                     step, p.steps[step], err.msg);
            roll_back(r, row, &p, token, reason, NULL, NULL);
        } else {
            atomic_fetch_add(&r->tick_errors, 1);
            BS_LOG(BS_LOG_WARN, "rollouts", "rollout %s: %s", row->id, err.msg);
        }
        return;
    }
    if (strcmp(desired, res.spec)) {
        char reason[400];
        snprintf(reason, sizeof reason,
                 "endpoint '%s' was changed outside the rollout (revision %lld by %s) at step %d "
                 "(%d%%); the rollout is aborted and that change kept",
                 row->endpoint, (long long)res.generation, res.updated_by ? res.updated_by : "?",
                 step, p.steps[step]);
        cJSON *ev = bs__rollout_event("aborted", step, 0, r->owner);
        cJSON_AddStringToObject(ev, "reason", reason);
        bs__rollout_tr_t t = {.state = "aborted",
                              .step = row->step,
                              .step_started_at = row->step_started_at,
                              .reason = reason,
                              .event = ev,
                              .actor = BS__ROLLOUT_ACTOR,
                              .token = token};
        apply(r, row, &p, &t, "aborted");
        cJSON_Delete(ev);
        free(desired);
        free(res.spec);
        free(res.updated_by);
        return;
    }
    free(desired);
    free(res.spec);
    free(res.updated_by);
    /* 2. the guards over the step's window */
    int64_t now = bs_time_wall_ms();
    bs_monitor_filter_t fc = {.since_ms = row->step_started_at, .version = p.version};
    bs_monitor_filter_t fs = {.since_ms = row->step_started_at, .exclude_version = p.version};
    bs_monitor_summary_t sc, ss;
    if (bs_monitor_summary(r->monitor, row->tenant, row->endpoint, &fc, &sc, &err) != 0 ||
        bs_monitor_summary(r->monitor, row->tenant, row->endpoint, &fs, &ss, &err) != 0) {
        atomic_fetch_add(&r->tick_errors, 1);
        BS_LOG(BS_LOG_WARN, "rollouts", "rollout %s: monitor summary failed: %s", row->id, err.msg);
        return;
    }
    int evaluated = sc.requests >= p.guard_min_requests;
    guard_t g[4];
    int ng = 0;
    char waiting[160];
    snprintf(waiting, sizeof waiting,
             "the candidate has %lld of the %lld predictions the guards "
             "need in this step",
             (long long)sc.requests, (long long)p.guard_min_requests);
    if (!isnan(p.max_error_rate)) {
        guard_t *x = &g[ng++];
        *x = (guard_t){.name = "max_error_rate",
                       .value = sc.requests ? sc.error_rate : NAN,
                       .limit = p.max_error_rate,
                       .stable = ss.requests ? ss.error_rate : NAN,
                       .state = -1};
        if (evaluated)
            x->state = x->value <= x->limit;
        else
            snprintf(x->pending, sizeof x->pending, "%s", waiting);
    }
    if (!isnan(p.max_p99_ms)) {
        guard_t *x = &g[ng++];
        *x = (guard_t){.name = "max_p99_latency_ms",
                       .value = sc.latency_p99_ms,
                       .limit = p.max_p99_ms,
                       .stable = ss.latency_p99_ms,
                       .state = -1};
        if (!evaluated)
            snprintf(x->pending, sizeof x->pending, "%s", waiting);
        else if (isnan(x->value))
            snprintf(x->pending, sizeof x->pending, "no latency measured for the candidate");
        else
            x->state = x->value <= x->limit;
    }
    int64_t n_ref = 0, n_cur = 0;
    if (!isnan(p.max_psi)) {
        guard_t *x = &g[ng++];
        *x = (guard_t){.name = "max_prediction_psi",
                       .value = NAN,
                       .limit = p.max_psi,
                       .stable = NAN,
                       .state = -1};
        if (!evaluated) {
            snprintf(x->pending, sizeof x->pending, "%s", waiting);
        } else if (bs_monitor_psi(r->monitor, row->tenant, row->endpoint, &fs, &fc, &x->value,
                                  &n_ref, &n_cur, &err) != 0) {
            snprintf(x->pending, sizeof x->pending, "psi failed: %.100s", err.msg);
            x->value = NAN;
        } else if (isnan(x->value)) {
            snprintf(x->pending, sizeof x->pending,
                     "psi needs 10 predictions on each side (stable %lld, candidate %lld)",
                     (long long)n_ref, (long long)n_cur);
        } else {
            x->state = x->value <= x->limit;
        }
    }
    double mc = NAN, ms = NAN;
    if (p.has_metric) {
        mc = metric_of(&sc, p.metric);
        ms = metric_of(&ss, p.metric);
        guard_t *x = &g[ng++];
        *x = (guard_t){.name = "max_metric_drop",
                       .value = lower_is_better(p.metric) ? mc - ms : ms - mc,
                       .limit = p.delta,
                       .stable = ms,
                       .state = -1};
        if (!evaluated)
            snprintf(x->pending, sizeof x->pending, "%s", waiting);
        else if (sc.labelled < p.min_labelled || ss.labelled < p.min_labelled)
            snprintf(x->pending, sizeof x->pending,
                     "%s needs %lld labelled predictions on each side (stable %lld, candidate "
                     "%lld)",
                     p.metric, (long long)p.min_labelled, (long long)ss.labelled,
                     (long long)sc.labelled);
        else if (isnan(x->value))
            snprintf(x->pending, sizeof x->pending, "%s is not defined on this feedback", p.metric);
        else
            x->state = x->value <= x->limit;
    }
    const guard_t *failed = NULL;
    for (int i = 0; i < ng && !failed; i++)
        if (g[i].state == 0)
            failed = &g[i];
    /* 3./4. the decision */
    int64_t need = p.min_requests;
    if (ng && p.guard_min_requests > need)
        need = p.guard_min_requests;
    int lasted = now - row->step_started_at >= p.interval_ms;
    const char *decision = failed ? "rollback" : lasted && sc.requests >= need ? "advance" : "wait";
    cJSON *check = cJSON_CreateObject();
    char t[40];
    bs_time_rfc3339(now, t, sizeof t);
    cJSON_AddStringToObject(check, "at", t);
    bs_time_rfc3339(row->step_started_at, t, sizeof t);
    cJSON_AddStringToObject(check, "since", t);
    cJSON_AddNumberToObject(check, "step", step);
    cJSON_AddNumberToObject(check, "weight", p.steps[step]);
    cJSON_AddBoolToObject(check, "evaluated", evaluated);
    cJSON *cj = side_json(&sc, &p);
    cJSON_AddNumberToObject(cj, "version", p.version);
    cJSON_AddItemToObject(check, "candidate", cj);
    cJSON_AddItemToObject(check, "stable", side_json(&ss, &p));
    for (int i = 0; i < ng; i++)
        guard_json(check, &g[i]);
    if (!isnan(p.max_psi)) {
        cJSON *x = cJSON_GetObjectItemCaseSensitive(check, "max_prediction_psi");
        cJSON_AddNumberToObject(x, "n_stable", (double)n_ref);
        cJSON_AddNumberToObject(x, "n_candidate", (double)n_cur);
    }
    if (p.has_metric) {
        cJSON *x = cJSON_GetObjectItemCaseSensitive(check, "max_metric_drop");
        cJSON_AddStringToObject(x, "metric", p.metric);
        add_num(x, "candidate", mc);
        cJSON_AddNumberToObject(x, "min_labelled", (double)p.min_labelled);
    }
    cJSON_AddStringToObject(check, "decision", decision);
    if (!strcmp(decision, "wait")) {
        char w[200];
        if (!lasted)
            snprintf(w, sizeof w, "the step has lasted %.1f s of %.1f s",
                     (double)(now - row->step_started_at) / 1000.0, (double)p.interval_ms / 1000.0);
        else
            snprintf(w, sizeof w,
                     "the candidate served %lld of the %lld predictions the step "
                     "needs",
                     (long long)sc.requests, (long long)need);
        cJSON_AddStringToObject(check, "waiting_for", w);
    }
    char *check_text = cJSON_PrintUnformatted(check);
    cJSON_Delete(check);
    if (!check_text)
        return;
    if (failed) {
        char reason[400], stable[40] = "-";
        if (isfinite(failed->stable))
            snprintf(stable, sizeof stable, "%.6g", failed->stable);
        snprintf(reason, sizeof reason,
                 "guard %s failed: %.6g > limit %.6g (the stable's figure %s; %lld candidate "
                 "predictions in step %d of %d at %d%%)",
                 failed->name, failed->value, failed->limit, stable, (long long)sc.requests,
                 step + 1, p.n_steps, p.steps[step]);
        roll_back(r, row, &p, token, reason, failed, check_text);
    } else if (!strcmp(decision, "advance")) {
        int next = step + 1;
        int champion = 0;
        char *spec = bs__rollout_step_spec(r, row, &p, next, &champion, &err);
        if (!spec) {
            char reason[400];
            snprintf(reason, sizeof reason, "the spec of step %d (%d%%) is not valid: %s", next,
                     p.steps[next], err.msg);
            if (err.code == BS_EINVAL || err.code == BS_ENOTFOUND)
                roll_back(r, row, &p, token, reason, NULL, check_text);
            else
                BS_LOG(BS_LOG_WARN, "rollouts", "rollout %s: %s", row->id, reason);
        } else {
            int promote = next >= p.n_steps - 1;
            cJSON *ev = bs__rollout_event(promote ? "promoted" : "advanced", promote ? step : next,
                                          p.steps[next], r->owner);
            cJSON_AddNumberToObject(ev, "candidate_requests", (double)sc.requests);
            bs__rollout_tr_t tr = {.state = promote ? "promoted" : "running",
                                   .step = promote ? row->step : next,
                                   .step_started_at = promote ? row->step_started_at : now,
                                   .reason = promote ? "every step passed its guards" : NULL,
                                   .last_check = check_text,
                                   .event = ev,
                                   .spec = spec,
                                   .move_champion = promote && champion,
                                   .actor = BS__ROLLOUT_ACTOR,
                                   .token = token};
            apply(r, row, &p, &tr, promote ? "promoted" : "advanced");
            cJSON_Delete(ev);
            free(spec);
        }
    } else {
        bs__rollout_tr_t tr = {.last_check = check_text, .token = token, .check_only = 1};
        apply(r, row, &p, &tr, "check");
    }
    free(check_text);
}

static void tick(void *ud, bs_lease_runner_t *run, int64_t token)
{
    bs_rollouts_t *r = ud;
    atomic_fetch_add(&r->ticks, 1);
    if (!r->monitor || !r->endpoints)
        return;
    bs__rollout_row_t *rows = NULL;
    bs_err_t err;
    bs_err_clear(&err);
    int n = bs__rollout_load_running(r, &rows, MAX_RUNNING, &err);
    if (n < 0) {
        atomic_fetch_add(&r->tick_errors, 1);
        BS_LOG(BS_LOG_WARN, "rollouts", "loading running rollouts failed: %s", err.msg);
        return;
    }
    /* The step specs are normalised against the serving snapshot (QSBR-protected): a reader
     * for the tick only, offline while the runner waits for the next. */
    int reader = bs_rcu_register() == 0;
    if (!reader && n) {
        atomic_fetch_add(&r->tick_errors, 1);
        BS_LOG(BS_LOG_WARN, "rollouts", "no QSBR reader slot for the controller: tick skipped");
    }
    for (int i = 0; i < n; i++) {
        if (bs_lease_runner_held(run) && reader)
            evaluate(r, &rows[i], token);
        bs__rollout_row_free(&rows[i]);
    }
    if (reader)
        bs_rcu_unregister();
    free(rows);
}

/* ---- metrics --------------------------------------------------------------------------- */

static const char *const states[] = {"running",     "paused",  "promoted",
                                     "rolled_back", "aborted", NULL};

typedef struct {
    bs_buf_t step, weight, state;
} latest_t;

static int latest_row(const bs_meta_row_t *m, void *ud)
{
    latest_t *x = ud;
    const char *tenant = bs_meta_row_text(m, 0), *endpoint = bs_meta_row_text(m, 1),
               *id = bs_meta_row_text(m, 2), *state = bs_meta_row_text(m, 3);
    int64_t step = bs_meta_row_int(m, 4);
    bs__rollout_plan_t p;
    bs_err_t e;
    int weight = 0;
    if (bs__rollout_plan_parse(bs_meta_row_text(m, 5), &p, &e) == 0) {
        if (!strcmp(state, "promoted"))
            weight = 100;
        else if ((!strcmp(state, "running") || !strcmp(state, "paused")) && step >= 0 &&
                 step < p.n_steps)
            weight = p.steps[step];
    }
    /* names are [a-z0-9_-] (tenants: checked at creation) and ids UUIDs: nothing to escape */
    bs_buf_printf(&x->step,
                  "basalt_rollout_step{tenant=\"%s\",endpoint=\"%s\",rollout=\"%s\"} %lld\n",
                  tenant, endpoint, id, (long long)step);
    bs_buf_printf(
        &x->weight,
        "basalt_rollout_weight_percent{tenant=\"%s\",endpoint=\"%s\",rollout=\"%s\"} %d\n", tenant,
        endpoint, id, weight);
    for (int i = 0; states[i]; i++)
        bs_buf_printf(&x->state,
                      "basalt_rollout_state{tenant=\"%s\",endpoint=\"%s\",rollout=\"%s\","
                      "state=\"%s\"} %d\n",
                      tenant, endpoint, id, states[i], !strcmp(state, states[i]));
    return 0;
}

static int count_row(const bs_meta_row_t *m, void *ud)
{
    int64_t *c = ud;
    const char *state = bs_meta_row_text(m, 0);
    for (int i = 0; states[i]; i++)
        if (!strcmp(state, states[i]))
            c[i] = bs_meta_row_int(m, 1);
    return 0;
}

static void metrics_refresh(bs_rollouts_t *r)
{
    latest_t x;
    bs_buf_init(&x.step);
    bs_buf_init(&x.weight);
    bs_buf_init(&x.state);
    int64_t counts[5] = {0};
    bs_err_t err;
    int rc = bs_meta_query(r->meta,
                           "SELECT tenant, endpoint, id, state, step, spec FROM rollouts r WHERE"
                           " id = (SELECT MAX(x.id) FROM rollouts x WHERE x.tenant = r.tenant AND"
                           " x.endpoint = r.endpoint) ORDER BY tenant, endpoint LIMIT 1000",
                           NULL, 0, latest_row, &x, &err);
    if (!rc)
        rc = bs_meta_query(r->meta, "SELECT state, COUNT(*) FROM rollouts GROUP BY state", NULL, 0,
                           count_row, counts, &err);
    if (!rc) {
        bs_buf_t b;
        bs_buf_init(&b);
        bs_buf_puts(&b, "# HELP basalt_rollout_step The step (index into steps, from 0) of each "
                        "endpoint's latest rollout.\n# TYPE basalt_rollout_step gauge\n");
        if (x.step.len)
            bs_buf_append(&b, x.step.data, x.step.len);
        bs_buf_puts(&b, "# HELP basalt_rollout_weight_percent The candidate's share of the traffic "
                        "in each endpoint's latest rollout (100 promoted, 0 rolled back or "
                        "aborted).\n# TYPE basalt_rollout_weight_percent gauge\n");
        if (x.weight.len)
            bs_buf_append(&b, x.weight.data, x.weight.len);
        bs_buf_puts(&b, "# HELP basalt_rollout_state 1 for the state of each endpoint's latest "
                        "rollout, 0 for the others.\n# TYPE basalt_rollout_state gauge\n");
        if (x.state.len)
            bs_buf_append(&b, x.state.data, x.state.len);
        bs_buf_printf(&b,
                      "# HELP basalt_rollouts_total Finished rollouts by outcome (every "
                      "replica's, from the store).\n# TYPE basalt_rollouts_total counter\n"
                      "basalt_rollouts_total{outcome=\"promoted\"} %lld\n"
                      "basalt_rollouts_total{outcome=\"rolled_back\"} %lld\n"
                      "basalt_rollouts_total{outcome=\"aborted\"} %lld\n"
                      "# HELP basalt_rollouts_active Rollouts running or paused.\n"
                      "# TYPE basalt_rollouts_active gauge\n"
                      "basalt_rollouts_active{state=\"running\"} %lld\n"
                      "basalt_rollouts_active{state=\"paused\"} %lld\n",
                      (long long)counts[2], (long long)counts[3], (long long)counts[4],
                      (long long)counts[0], (long long)counts[1]);
        pthread_mutex_lock(&r->mu);
        bs_buf_free(&r->metrics);
        r->metrics = b;
        pthread_mutex_unlock(&r->mu);
    }
    bs_buf_free(&x.step);
    bs_buf_free(&x.weight);
    bs_buf_free(&x.state);
}

static void *metrics_main(void *arg)
{
    bs_rollouts_t *r = arg;
    int period = r->tick_ms < 1000 ? 1000 : r->tick_ms;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        r->wake = 0;
        pthread_mutex_unlock(&r->mu);
        metrics_refresh(r);
        pthread_mutex_lock(&r->mu);
        if (r->stop || r->wake)
            continue;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += period / 1000;
        ts.tv_nsec += (long)(period % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        while (!r->stop && !r->wake)
            if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) != 0)
                break;
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

void bs__rollouts_metrics_wake(bs_rollouts_t *r)
{
    pthread_mutex_lock(&r->mu);
    r->wake = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

void bs_rollouts_metrics(bs_rollouts_t *r, bs_buf_t *b)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    if (r->metrics.len)
        bs_buf_append(b, r->metrics.data, r->metrics.len);
    pthread_mutex_unlock(&r->mu);
    bs_buf_printf(b,
                  "# HELP basalt_rollout_controller_ticks_total Controller ticks this replica ran "
                  "while holding the rollout-controller lease.\n"
                  "# TYPE basalt_rollout_controller_ticks_total counter\n"
                  "basalt_rollout_controller_ticks_total %llu\n"
                  "# HELP basalt_rollout_controller_evaluations_total Rollout evaluations by this "
                  "replica's controller.\n"
                  "# TYPE basalt_rollout_controller_evaluations_total counter\n"
                  "basalt_rollout_controller_evaluations_total %llu\n"
                  "# HELP basalt_rollout_transitions_total Rollout state changes this replica "
                  "wrote (controller and API).\n"
                  "# TYPE basalt_rollout_transitions_total counter\n"
                  "basalt_rollout_transitions_total %llu\n"
                  "# HELP basalt_rollout_controller_errors_total Evaluations that failed (store or "
                  "monitor errors; retried at the next tick).\n"
                  "# TYPE basalt_rollout_controller_errors_total counter\n"
                  "basalt_rollout_controller_errors_total %llu\n",
                  (unsigned long long)atomic_load(&r->ticks),
                  (unsigned long long)atomic_load(&r->evaluations),
                  (unsigned long long)atomic_load(&r->transitions),
                  (unsigned long long)atomic_load(&r->tick_errors));
}

/* ---- start and stop -------------------------------------------------------------------- */

int bs__rollouts_ctl_start(bs_rollouts_t *r, bs_err_t *err)
{
    if (r->runner)
        return 0;
    r->stop = 0;
    if (pthread_create(&r->metrics_tid, NULL, metrics_main, r) != 0)
        return bs_err_set(err, BS_EINTERNAL, "cannot start the rollout metrics thread");
    r->metrics_started = 1;
    bs_lease_runner_opts_t o = {.name = BS__ROLLOUT_LEASE,
                                .owner = r->owner,
                                .ttl_ms = r->lease_ms,
                                .period_ms = r->tick_ms,
                                .task = tick,
                                .ud = r};
    r->runner = bs_lease_runner_start(r->meta, &o, err);
    if (!r->runner) {
        bs__rollouts_ctl_stop(r);
        return err->code;
    }
    return 0;
}

void bs__rollouts_ctl_stop(bs_rollouts_t *r)
{
    bs_lease_runner_stop(r->runner); /* ends a tick in progress, releases the lease */
    r->runner = NULL;
    if (r->metrics_started) {
        pthread_mutex_lock(&r->mu);
        r->stop = 1;
        pthread_cond_signal(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->metrics_tid, NULL);
        r->metrics_started = 0;
    }
}
