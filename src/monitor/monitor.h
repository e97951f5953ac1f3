/*
 * ML monitoring of endpoints (issue 10): ground-truth feedback joined to the
 * prediction log, live performance per endpoint / version / variant, the A/B
 * experiment report, the shadow report, and the window summaries the rollout
 * controller's guards read.
 *
 * How: every replica tails its tenants' topics `predictions` (serving/predlog.h has the
 * record) and `feedback` (below) from the shared durable log into an in-memory table per
 * endpoint — one compact entry per logged row (time, version, variant, shadow, latency,
 * error, outputs, and once joined the label) with a hash index by prediction id — bounded
 * by the settings monitor_window_ms (entries older than it are evicted; at start the tail
 * replays from now − window) and monitor_max_predictions (oldest evicted first). On the
 * JetStream backend every replica reads the same streams, so every replica's table, and so
 * every report, covers all replicas' traffic; on the segments backend a replica sees its
 * own (docs/scaleout.md).
 *
 * The feedback record (JSON, one per item, in topic `feedback`, appended with sync
 * "always": acknowledged feedback survives kill -9):
 *   {"prediction_id": "…", "label": <any JSON scalar> | "value": <number>,
 *    "time": "<RFC 3339>" (the item's, else received), "received": "<RFC 3339>",
 *    "endpoint": "<the endpoint that logged the prediction>"}
 * The last feedback for an id wins.
 *
 * Metrics (docs/endpoints.md): classification — accuracy, precision, recall, F1 (binary:
 * of the positive class, the model's second class; multiclass: macro averages), log-loss
 * (probabilities clipped to [1e-15, 1 - 1e-15] as scikit-learn 1.2), ROC AUC (binary);
 * regression — MAE, RMSE, R². All from src/monitor/stats.h.
 *
 * Thread safety: any thread. Functions that wait say so.
 */
#ifndef BS_MONITOR_MONITOR_H
#define BS_MONITOR_MONITOR_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"

struct bs_log;
struct bs_predlog;

typedef struct bs_monitor bs_monitor_t;

#define BS_MONITOR_FEEDBACK_TOPIC "feedback"
#define BS_MONITOR_MAX_FEEDBACK_BATCH 10000

typedef struct {
    struct bs_log *log;         /* borrowed */
    struct bs_predlog *predlog; /* borrowed: flushed before an unknown id is refused */
    int64_t window_ms;          /* how long entries are kept (and replayed at start) */
    int64_t max_predictions;    /* entries kept across every endpoint */
} bs_monitor_opts_t;

bs_monitor_t *bs_monitor_new(const bs_monitor_opts_t *o, bs_err_t *err);
void bs_monitor_free(bs_monitor_t *m);

/*
 * The local feed: a row this process predicted (routed or shadow), straight into the
 * monitor's tables without a round trip through the log. Never blocks on the monitor's
 * lock: one mutex of its own and a copy into a queue the monitor drains every few
 * milliseconds (and before bs_monitor_feedback refuses an unknown id). Everything is
 * borrowed (copied). 0: observed — the caller must then write the row's record with
 * "origin": bs_monitor_origin(m) as its first member (serving/predlog.h), which the
 * monitor's tail skips so the row is not counted twice; BS_EOVERLOAD (the queue is full)
 * or BS_EINVAL: not observed — write the record without "origin" and the tail ingests it.
 */
enum { BS_MONITOR_OBS_NONE, BS_MONITOR_OBS_VALUE, BS_MONITOR_OBS_CLASSES, BS_MONITOR_OBS_OTHER };
typedef struct {
    const char *prediction_id, *endpoint, *variant;
    int64_t time_ms; /* when the prediction was made (the record's "time") */
    int version;     /* 0: unknown */
    int shadow, error;
    double latency_ms;
    int kind;                   /* BS_MONITOR_OBS_*: no output, one number, classes, else */
    const double *out;          /* VALUE: out[0]; CLASSES: the k probabilities */
    int k;                      /* CLASSES */
    const char *const *labels;  /* CLASSES: the k class names (NULL: all "") */
} bs_monitor_obs_t;
int bs_monitor_observe(bs_monitor_t *m, const char *tenant, const bs_monitor_obs_t *o);
/* This process's run id (a UUIDv7 made when the monitor was), the records' "origin". */
const char *bs_monitor_origin(const bs_monitor_t *m);

/* Starts tailing tenant's predictions and feedback topics (idempotent; the endpoint
 * rebuild calls it for every tenant that has an endpoint). The topics must exist. */
int bs_monitor_track(bs_monitor_t *m, const char *tenant, bs_err_t *err);

/*
 * POST /v1/feedback: body is one item {prediction_id, label | value, time?} or
 * {"items": [...]} (1..BS_MONITOR_MAX_FEEDBACK_BATCH). Items whose prediction id the
 * table does not know (after flushing the prediction log and catching the tail up, at
 * most 2 s) or that are malformed are reported per item; the others are appended to the
 * feedback topic and acknowledged durably before this returns. Renders
 * {"items": [{"index", "prediction_id", "accepted": true, "endpoint"} | {"index", "prediction_id",
 *   "error": {code, message, field}}], "accepted": n, "rejected": n} into out.
 * 0 (even when items were rejected); BS_EINVAL for a malformed body, BS_ETOOBIG for too
 * many items. Waits (log fsync): a worker's call.
 */
int bs_monitor_feedback(bs_monitor_t *m, const char *tenant, const cJSON *body, bs_buf_t *out,
                        bs_err_t *err);

/* Which entries a summary covers. */
typedef struct {
    int64_t since_ms, until_ms; /* prediction time in [since, until); until 0: no bound */
    int version;                /* > 0: only this version */
    int exclude_version;        /* > 0: every version but this one */
    const char *variant;        /* non-NULL: only this variant */
    int shadow;                 /* 0: routed predictions; 1: shadow runs */
    const char *reward_label;   /* JSON text (the thompson reward.label); NULL: no rewards */
} bs_monitor_filter_t;

typedef struct {
    int64_t requests; /* rows */
    int64_t errors;
    double error_rate;                     /* errors / requests; 0 when none */
    double latency_p50_ms, latency_p99_ms; /* NaN when none (numpy's linear quantile) */
    double mean_prediction; /* regression: the value; binary: P(positive class); else NaN */
    int classification;     /* 1: the outputs are {label, probabilities} */
    int64_t labelled;       /* entries with feedback */
    double accuracy, precision, recall, f1, log_loss, roc_auc; /* NaN when not defined */
    double mae, rmse, r2;
    int64_t successes, failures; /* with reward_label: feedback equal to it / not */
} bs_monitor_summary_t;

/* Summary of tenant's endpoint over f: 0 always for a valid filter (an endpoint or window
 * with nothing in it gives requests 0 and NaN metrics); BS_EINVAL for a bad filter. */
int bs_monitor_summary(bs_monitor_t *m, const char *tenant, const char *endpoint,
                       const bs_monitor_filter_t *f, bs_monitor_summary_t *out, bs_err_t *err);

/* The reward counts of one variant (NULL: every variant) of tenant's endpoint: routed
 * entries since since_ms with feedback equal to reward_label (JSON text; the comparison of
 * docs/endpoints-monitoring.md) are successes, the other labelled ones failures. No
 * allocation: the endpoints module's rewards source calls it about every second per route.
 * 0, or BS_EINVAL (reward_label is no JSON scalar). */
int bs_monitor_rewards(bs_monitor_t *m, const char *tenant, const char *endpoint,
                       const char *variant, int64_t since_ms, const char *reward_label,
                       int64_t *successes, int64_t *failures);

/* Population stability index of cur's predictions (mean_prediction's value per row)
 * against ref's: 10 bins at ref's deciles, shares of empty bins raised to 1e-4
 * (docs/endpoints.md). *psi NaN when either side has fewer than 10 rows. */
int bs_monitor_psi(bs_monitor_t *m, const char *tenant, const char *endpoint,
                   const bs_monitor_filter_t *ref, const bs_monitor_filter_t *cur, double *psi,
                   int64_t *n_ref, int64_t *n_cur, bs_err_t *err);

/* GET /v1/endpoints/{name}/performance?window=&by=version|variant: renders
 * {"endpoint", "window", "items": [{"version"|"variant", requests, labelled, metrics…}]}. */
int bs_monitor_performance(bs_monitor_t *m, const char *tenant, const char *endpoint,
                           int64_t window_ms, const char *by, bs_buf_t *out, bs_err_t *err);

typedef struct {
    int64_t window_ms;
    const char *const *variants; /* the endpoint's routes in spec order; the first is control */
    int n_variants;
    const char *metric;       /* "accuracy" (rates: two-proportion z-test), "mae", "value"
                                 (means: Welch's t-test); NULL: by task */
    double mde;               /* minimum detectable effect (absolute) for samples_needed */
    double alpha, power;      /* 0.05, 0.8 by default */
    const char *reward_label; /* thompson: posteriors Beta(1+s, 1+f) per variant; NULL: none */
} bs_monitor_experiment_opts_t;

/* GET /v1/endpoints/{name}/experiment (docs/endpoints.md has the object). */
int bs_monitor_experiment(bs_monitor_t *m, const char *tenant, const char *endpoint,
                          const bs_monitor_experiment_opts_t *o, bs_buf_t *out, bs_err_t *err);

/* GET /v1/endpoints/{name}/shadow?window=: per shadow variant, agreement rate with the
 * routed prediction of the same prediction id (classification), mean and max absolute
 * difference (regression), latency p50/p99 of each side, shadow errors. */
int bs_monitor_shadow(bs_monitor_t *m, const char *tenant, const char *endpoint,
                      int64_t window_ms, bs_buf_t *out, bs_err_t *err);

/* Prometheus text: basalt_feedback_received_total{tenant,endpoint},
 * basalt_feedback_rejected_total{tenant,reason}, basalt_monitor_entries,
 * basalt_monitor_evicted_total, basalt_monitor_tail_lag_records{tenant,topic}. */
void bs_monitor_metrics(bs_monitor_t *m, bs_buf_t *b);

#endif
