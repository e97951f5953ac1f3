/*
 * Server settings. Each setting has one name used three ways: the YAML key
 * (`max_body_bytes`), the environment variable (`BASALT_MAX_BODY_BYTES`)
 * and the flag (`--max-body-bytes`). Precedence: flag > env > file > default.
 * Unknown keys and bad values are errors that name the key.
 */
#ifndef BS_BASE_CONFIG_H
#define BS_BASE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef struct {
    char listen[256];
    char data[1024];
    char config[1024];
    int threads;
    int store_threads;
    int store_queue;
    char log_level[16];
    int no_auth;
    int metrics_public;
    char metrics_listen[256];
    int h2c;
    int64_t max_body_bytes;
    int64_t max_header_bytes;
    int max_json_depth;
    int64_t idle_timeout_ms;
    int max_connections;
    int64_t shutdown_timeout_ms;
    double rate_limit_rps;
    double rate_limit_burst;
    char redis_url[512]; /* empty: no Redis */
    double access_log_sample;
    int64_t model_memory_bytes;
    int64_t upload_memory_bytes;
    int64_t artifact_gc_grace_seconds;
    char artifact_store[16]; /* "" (by metadata_url), "files" or "metadata" */
    int max_batch_rows;
    int batch_max_size;
    int batch_delay_us;
    int predict_threads;
    char unknown_features[16];
    int change_poll_ms;
    char metadata_url[1024]; /* "" = SQLite at <data>/basalt.db; postgres://... = PostgreSQL */
    char replica_id[128];    /* "" at load becomes hostname-pid */
    int metadata_pool_size;
    char nats_url[512]; /* empty: topics in the embedded segment log; nats://... = JetStream */
    int job_workers;
    int64_t job_retention_ms;
    int max_event_bytes;
    int64_t job_lease_ms; /* a job attempt's lease; heartbeats every third of it */
    int trigger_workers;
    int64_t prediction_log_buffer_bytes; /* the prediction log's in-memory buffer (drops beyond) */
    int64_t monitor_window_ms;           /* how long the monitor keeps predictions */
    int64_t monitor_max_predictions;     /* predictions the monitor keeps, every endpoint */
    int rollout_tick_ms;                 /* how often the controller evaluates rollouts */
    int64_t rollout_lease_ms;            /* the rollout controller's lease */
} bs_config_t;

void bs_config_defaults(bs_config_t *c);

/*
 * Fills c from defaults, the YAML file named by --config / BASALT_CONFIG, the
 * environment (envp: NULL-terminated "KEY=VALUE" strings, may be NULL) and the
 * flags in argv[0..argc) (only settings flags; argv[0] is not skipped).
 * Returns 0 or BS_EINVAL with err naming the key and the value.
 */
int bs_config_load(bs_config_t *c, int argc, char **argv, char **envp, bs_err_t *err);

/* Applies one setting by its YAML name from text. 0 or BS_EINVAL. */
int bs_config_set(bs_config_t *c, const char *key, const char *value, const char *source,
                  bs_err_t *err);

/* Writes the settings help (flag, env, default, description) to f. */
void bs_config_print_help(void *file);

#endif
