/* The kinds of declarative resources: one row per kind, whose hooks live with the
 * subsystem's handlers (src/api/<resource>.c). The routes of each kind are in routes.c
 * (RESOURCE_ROUTES); `basalt apply` learns the kinds from GET /v1/kinds. */
#include "api/api_int.h"

const bs__api_kind_t bs__api_kinds[] = {
    {"Webhook", "webhooks", "a webhook destination: signed (Standard Webhooks) deliveries of "
                            "events with retries",
     bs__api_webhook_validate, NULL, NULL, bs__api_webhook_status, bs__api_webhook_redact, NULL},
    {"Topic", "topics", "a durable topic of events (retention, sync, dedup window)",
     bs__api_topic_validate, bs__api_topic_prepare, bs__api_topic_deleted, bs__api_topic_status,
     NULL, bs__api_topic_rebuild},
    /* After Topic and Webhook: a rebuild runs the kinds in this order, and the triggers'
     * consumer groups are made on the topics the Topic rebuild ensures. */
    {"Trigger", "triggers", "a trigger: events of a topic (or registry events) that match a "
                            "filter are scored by a model, sent to a webhook or start a job",
     bs__api_trigger_validate, bs__api_trigger_prepare, bs__api_trigger_deleted, bs__api_trigger_status, NULL,
     bs__api_trigger_rebuild},
    /* After Topic: an endpoint's prepare hook ensures the tenant's system topics. */
    {"Endpoint", "endpoints", "an endpoint: a stable name over a model's versions and its "
                              "traffic policy (canary, A/B, shadow, blue-green, bandit)",
     bs__api_endpoint_validate, bs__api_endpoint_prepare, NULL, bs__api_endpoint_status, NULL,
     bs__api_endpoint_rebuild},
    {NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
};
