/*
 * Progressive rollouts with automatic rollback (issue 10): a candidate version's share
 * of an endpoint's traffic is raised step by step while every guard holds, comparing the
 * candidate against the stable routes over the step's window; when a guard fails the
 * endpoint is restored to its revision from before the rollout at once, and the rollout
 * records which guard failed with the numbers.
 *
 *   POST /v1/endpoints/{name}/rollouts
 *   {"candidate": {"version": 4} | {"alias": "challenger"}, "steps": [5, 25, 50, 100],
 *    "step_interval": "5m", "min_requests_per_step": 500,
 *    "guards": {"max_error_rate": 0.01, "max_p99_latency_ms": 20, "max_prediction_psi": 0.2,
 *               "max_metric_drop": {"metric": "accuracy", "delta": 0.02}}}
 *
 * State (table `rollouts`, migration 13): running → paused ⇄ running → promoted |
 * rolled_back | aborted. A step advances when it has lasted step_interval and the
 * candidate served min_requests_per_step in it with every guard holding; at the last step
 * (100) the rollout is promoted: the candidate takes the whole route (and the endpoint's
 * `champion` alias, when it routes by that alias, moves to the candidate). Each step
 * writes the endpoint's spec through the resources mechanism (a new revision, propagated
 * to every replica like any change).
 *
 * Decisions (docs/endpoints-rollouts.md has them all): the candidate's route is the base's
 * route of that version if it had one (pinned to the version), else "v<version>"; the stable
 * routes share 100 − step by the largest remainder; promotion routes everything to the
 * candidate alone (the base's `champion` route at 100 with the alias moved, when it routed
 * by it; the stable routes are removed, not kept at 0). Guards are judged once the
 * candidate served guards.min_requests predictions in the step (default min(100,
 * min_requests_per_step)); PSI needs 10 predictions a side, the metric drop
 * max_metric_drop.min_labelled (default 30) labelled ones a side; a guard without enough data
 * is pending (neither fails nor blocks). A change of the endpoint by anyone else while a
 * rollout runs aborts the rollout and keeps the change.
 *
 * The controller is a background singleton under the lease "rollout-controller"
 * (store/lease.h): one replica evaluates every running rollout each tick; when it dies
 * another takes over within the lease time and resumes from the stored state (step,
 * step start), since the guard windows are read from the monitor (monitor/monitor.h),
 * which covers every replica's traffic. Every state change is one metadata transaction that
 * checks the lease's fencing token (the controller's) and the row's state, step and
 * updated_at, so a replica that lost the lease, or a tick racing an API action, writes nothing.
 *
 * Thread safety: any thread; the API calls wait on the store.
 */
#ifndef BS_SERVING_ROLLOUTS_H
#define BS_SERVING_ROLLOUTS_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/principal.h"
#include "store/meta.h"

struct bs_monitor;
struct bs_endpoints;
struct bs_changes;
struct bs_registry;

typedef struct bs_rollouts bs_rollouts_t;

typedef struct {
    bs_meta_t *meta;                 /* borrowed */
    struct bs_monitor *monitor;      /* borrowed: guard windows */
    struct bs_endpoints *endpoints;  /* borrowed: spec validation */
    struct bs_changes *changes;      /* borrowed: refresh after a spec write (may be NULL) */
    struct bs_registry *registry;    /* borrowed: moves `champion` on promotion (may be NULL:
                                        then the alias is not moved) */
    const char *owner;               /* the replica id (lease owner); copied */
    int tick_ms;                     /* how often running rollouts are evaluated; 0: 1000 */
    int64_t lease_ms;                /* the controller's lease; 0: 15000 */
} bs_rollouts_opts_t;

bs_rollouts_t *bs_rollouts_new(const bs_rollouts_opts_t *o, bs_err_t *err);
/* Starts the controller's lease runner. */
int bs_rollouts_start(bs_rollouts_t *r, bs_err_t *err);
/* Stops the controller (releasing its lease) and frees. NULL is a no-op. */
void bs_rollouts_free(bs_rollouts_t *r);

/* Starts a rollout on tenant's endpoint: BS_EINVAL (body, field named), BS_ENOTFOUND
 * (endpoint, candidate), BS_ECONFLICT (one is already running or paused on it). Renders the
 * rollout object (as get) into out. Waits on the store. */
int bs_rollouts_create(bs_rollouts_t *r, const bs_principal_t *who, const char *endpoint,
                       const cJSON *body, bs_buf_t *out, bs_err_t *err);
/* {"id", "endpoint", "state", "candidate", "stable", "step", "steps", "weight",
 *  "step_interval", "min_requests_per_step", "step_started_at", "guards",
 *  "last_check": {candidate and stable summaries, per guard: value, limit, stable, ok},
 *  "reason", "failed_guard", "history": [...], "base_generation", "created_at",
 *  "updated_at", "created_by"}. BS_ENOTFOUND. */
int bs_rollouts_get(bs_rollouts_t *r, const char *tenant, const char *endpoint, const char *id,
                    bs_buf_t *out, bs_err_t *err);
/* {"items": [...], "next_cursor"} newest first. */
int bs_rollouts_list(bs_rollouts_t *r, const char *tenant, const char *endpoint,
                     const char *cursor, int limit, bs_buf_t *out, bs_err_t *err);
/* action: "pause", "resume", "abort" (restores the pre-rollout revision), "promote" (now).
 * BS_ECONFLICT when the state does not allow it. Renders the rollout. */
int bs_rollouts_action(bs_rollouts_t *r, const bs_principal_t *who, const char *endpoint,
                       const char *id, const char *action, bs_buf_t *out, bs_err_t *err);

/* Prometheus text: basalt_rollout_step{tenant,endpoint,rollout}, basalt_rollout_state{…,state}
 * (1 for the current state), basalt_rollouts_total{outcome}. */
void bs_rollouts_metrics(bs_rollouts_t *r, bs_buf_t *b);

#endif
