/*
 * Private to src/store/log*: the backend table. log.c dispatches every public
 * function of log.h to l->ops; log_segments*.c (embedded) and log_nats.c
 * (JetStream) each fill one. Each backend's open returns a struct whose first
 * member is bs_log_t.
 */
#ifndef BS_STORE_LOG_INT_H
#define BS_STORE_LOG_INT_H

#include "store/log.h"

typedef struct bs__log_ops {
    const char *name;
    void (*close)(bs_log_t *l);
    int (*topic_ensure)(bs_log_t *l, const char *tenant, const char *topic,
                        const bs_log_topic_config_t *c, bs_err_t *err);
    int (*topic_drop)(bs_log_t *l, const char *tenant, const char *topic, bs_err_t *err);
    int (*topic_stats)(bs_log_t *l, const char *tenant, const char *topic,
                       bs_log_topic_stats_t *out, bs_err_t *err);
    int (*append_async)(bs_log_t *l, const char *tenant, const char *topic,
                        const bs_log_record_in_t *recs, int n, bs_log_append_cb cb, void *ud,
                        bs_err_t *err);
    int (*read)(bs_log_t *l, const char *tenant, const char *topic, int64_t from_offset, int max,
                size_t max_bytes, bs_log_record_cb cb, void *ud, int64_t *next, bs_err_t *err);
    int (*offset_at)(bs_log_t *l, const char *tenant, const char *topic, int64_t t,
                     int64_t *offset, bs_err_t *err);
    int64_t (*watch)(bs_log_t *l, const char *tenant, const char *topic, int64_t after,
                     bs_log_wake_cb cb, void *ud, bs_err_t *err);
    void (*unwatch)(bs_log_t *l, int64_t watch_id);
    int (*consumer_ensure)(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                           const bs_log_consumer_config_t *c, bs_err_t *err);
    int (*consumer_delete)(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                           bs_err_t *err);
    int (*fetch_async)(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                       int max, int wait_ms, bs_log_fetch_cb cb, void *ud, bs_err_t *err);
    int (*ack)(bs_log_t *l, const char *tenant, const char *topic, const char *group,
               const char *delivery_id, bs_err_t *err);
    int (*nack)(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                const char *delivery_id, int64_t delay_ms, bs_err_t *err);
    int (*in_progress)(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                       const char *delivery_id, bs_err_t *err);
    int (*consumer_stats)(bs_log_t *l, const char *tenant, const char *topic, const char *group,
                          bs_log_consumer_stats_t *out, bs_err_t *err);
    int (*consumers)(bs_log_t *l, const char *tenant, const char *topic,
                     int (*cb)(const char *group, void *ud), void *ud, bs_err_t *err);
    void (*metrics)(bs_log_t *l, bs_buf_t *b);
} bs__log_ops_t;

struct bs_log {
    const bs__log_ops_t *ops;
};

/* The backends' constructors (called by bs_log_open). */
bs_log_t *bs__log_segments_open(const bs_log_opts_t *o, bs_err_t *err);
bs_log_t *bs__log_nats_open(const bs_log_opts_t *o, bs_err_t *err);

/* 1 if s is a valid tenant, topic or group name: [a-z0-9][a-z0-9_-]{0,62}. */
int bs__log_valid_name(const char *s);
/* The bounds of a topic's config, the same for every backend: 0, or BS_EINVAL with
 * err->field. Defined in log_segment.c (which also checks a topic.json it loads). */
int bs__topic_config_check(const bs_log_topic_config_t *c, bs_err_t *err);

#endif
