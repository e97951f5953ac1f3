/*
 * Private to the rollouts module: the parsed plan of a rollout, a stored row, the one
 * transition function every state change goes through (rollouts.c), and the controller
 * (rollouts_ctl.c).
 */
#ifndef BS_SERVING_ROLLOUTS_INT_H
#define BS_SERVING_ROLLOUTS_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "serving/endpoints.h"
#include "serving/rollouts.h"
#include "store/lease.h"

#define BS__ROLLOUT_LEASE "rollout-controller"
#define BS__ROLLOUT_ACTOR "system:rollout-controller"
#define BS__ROLLOUT_MAX_STEPS 20
#define BS__ROLLOUT_MAX_HISTORY 200
/* Guards are judged once the candidate served this many predictions in the step (unless
 * guards.min_requests says otherwise): the smaller of this and min_requests_per_step. */
#define BS__ROLLOUT_GUARD_MIN_REQUESTS 100
/* max_metric_drop compares once both sides have this many labelled predictions in the step
 * (unless max_metric_drop.min_labelled says otherwise). */
#define BS__ROLLOUT_MIN_LABELLED 30

struct bs_rollouts {
    bs_meta_t *meta;
    struct bs_monitor *monitor;
    struct bs_endpoints *endpoints;
    struct bs_changes *changes;
    struct bs_registry *registry;
    char owner[128];
    int tick_ms;
    int64_t lease_ms;
    bs_lease_runner_t *runner;
    /* The metrics thread: every replica re-reads the latest rollout of each endpoint and
     * the outcome counts, and renders them into `metrics` for /metrics (which runs on an
     * I/O thread and must not query). mu guards metrics, stop and wake. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t metrics_tid;
    int metrics_started, stop, wake;
    bs_buf_t metrics;
    _Atomic uint64_t ticks, evaluations, tick_errors, transitions;
};

/* What a rollout does, parsed from its stored spec (or a request body). */
typedef struct {
    int version;    /* the candidate version */
    char alias[65]; /* the alias the request named it by ("" if by version) */
    char route[64]; /* the candidate's route (variant) name in the endpoint's spec */
    int steps[BS__ROLLOUT_MAX_STEPS];
    int n_steps;
    int64_t interval_ms;
    char interval[32]; /* as written */
    int64_t min_requests;
    int64_t guard_min_requests;
    double max_error_rate, max_p99_ms, max_psi; /* NaN: no such guard */
    int has_metric;
    char metric[16];
    double delta;
    int64_t min_labelled;
    int n_stable;
    char stable[BS_ENDPOINT_MAX_ROUTES][64]; /* the stable routes' names */
} bs__rollout_plan_t;

/* One row of `rollouts` (strings malloc'd; bs__rollout_row_free). */
typedef struct {
    char id[40], tenant[64], endpoint[64], state[16], created_by[128];
    char *spec, *base_spec, *last_check, *reason, *history;
    int64_t base_generation, step, step_started_at, created_at, updated_at;
} bs__rollout_row_t;

void bs__rollout_row_free(bs__rollout_row_t *row);
/* Loads every running rollout (all tenants), oldest first, at most max. Returns the count
 * (rows into *out, caller frees each and the array) or an error. */
int bs__rollout_load_running(bs_rollouts_t *r, bs__rollout_row_t **out, int max, bs_err_t *err);

/* The stored spec (JSON text) parsed. 0 or BS_EINVAL. */
int bs__rollout_plan_parse(const char *spec, bs__rollout_plan_t *p, bs_err_t *err);

/* The endpoint spec of step `step` (the candidate at steps[step], the stable routes scaled
 * to the rest), normalised (bs_endpoint_spec_normalise) as JSON text (caller frees), or
 * NULL with err. step == n_steps - 1 (100): the promoted spec; *champion is set when the
 * base routed by the alias `champion` (which the promotion then moves). */
char *bs__rollout_step_spec(bs_rollouts_t *r, const bs__rollout_row_t *row,
                            const bs__rollout_plan_t *p, int step, int *champion, bs_err_t *err);

/* A state change of one rollout, applied in one transaction (bs__rollout_apply). */
typedef struct {
    const char *state;       /* the new state */
    int64_t step;            /* the new step */
    int64_t step_started_at; /* the new step start */
    const char *reason;      /* NULL: keep */
    const char *last_check;  /* JSON text; NULL: keep */
    const cJSON *event;      /* appended to history (borrowed); NULL: history unchanged */
    const char *spec;        /* the endpoint spec to put (a new revision); NULL: none */
    int move_champion;       /* promotion: the model's `champion` alias → the candidate */
    const char *actor;       /* who (audit rows, alias move) */
    int64_t token;           /* > 0: the controller's fencing token, checked in the
                                transaction (a replica that lost the lease writes nothing) */
    int check_only;          /* only last_check changes (no history, updated_at kept) */
} bs__rollout_tr_t;

/* Applies t to row (as loaded: the update requires the row still to be in row's state,
 * step and updated_at, so a concurrent change makes it BS_ECONFLICT and writes nothing),
 * then refreshes this replica's resources snapshot. 0 or an error. */
int bs__rollout_apply(bs_rollouts_t *r, const bs__rollout_row_t *row, const bs__rollout_plan_t *p,
                      const bs__rollout_tr_t *t, bs_err_t *err);

/* A history event {"at", "event", "step", "weight", "by"} (caller deletes). */
cJSON *bs__rollout_event(const char *event, int64_t step, int weight, const char *by);

/* rollouts_ctl.c: the controller's lease runner and the metrics thread. */
int bs__rollouts_ctl_start(bs_rollouts_t *r, bs_err_t *err);
void bs__rollouts_ctl_stop(bs_rollouts_t *r);
/* Asks the metrics thread to re-read now. */
void bs__rollouts_metrics_wake(bs_rollouts_t *r);

#endif
