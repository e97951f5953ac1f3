/*
 * Private to src/events/triggers*.c: a trigger's compiled spec (triggers_spec.c builds it
 * from the JSON spec, triggers.c runs it). A compiled spec is immutable once built and
 * reference-counted: the runtime swaps a trigger's spec under its lock while a worker may
 * still be running a batch with the previous one.
 */
#ifndef BS_EVENTS_TRIGGERS_INT_H
#define BS_EVENTS_TRIGGERS_INT_H

#include <stdatomic.h>

#include "base/expr.h"
#include "events/triggers.h"
#include "store/log.h"

typedef enum { BS__TRIG_PREDICT = 0, BS__TRIG_WEBHOOK, BS__TRIG_JOB } bs__trig_action_t;

/* One named value computed from the event: an input feature or a job argument. Either an
 * expression (the spec gave a string) or a constant (a number, bool, null, object, array). */
typedef struct {
    char *name;
    bs_expr_t *expr; /* or NULL: */
    cJSON *constant; /* owned */
} bs__trig_param_t;

typedef struct bs__trig_spec {
    atomic_int refs;
    char *text;        /* the normalised spec as JSON text (what the store holds) */
    char topic[64];    /* the topic consumed (BS_TRIGGERS_REGISTRY_TOPIC for registry) */
    int registry;      /* 1: "on": "registry" */
    bs_expr_t *filter; /* NULL: every event */
    bs__trig_action_t action;
    /* predict */
    char model[129];
    int version;              /* > 0: that version */
    char alias[65];           /* "" unless given */
    bs__trig_param_t *inputs; /* NULL: the event (a CloudEvent's data) is the input row */
    int n_inputs;
    char output_topic[64]; /* "" when none */
    char webhook[64];      /* predict's optional destination, or the webhook action's */
    bs_expr_t *when;       /* NULL: always */
    /* job */
    char job_kind[64];
    bs__trig_param_t *args;
    int n_args;
    /* consumer */
    bs_log_consumer_config_t consumer; /* .dead_letter points into dead_letter */
    char dead_letter[64];
    int paused;
    char *restart_key; /* topic + consumer config: a change restarts the trigger */
} bs__trig_spec_t;

/* 0, or BS_EINVAL (field "name") unless name is a resource name of at most
 * BS_TRIGGERS_MAX_NAME bytes. */
int bs__trig_check_name(const char *name, bs_err_t *err);
/* Compiles spec (borrowed JSON) into a new compiled spec (refs 1) and, when norm is not NULL,
 * the normalised spec (a new object the caller frees). Checks the spec alone (no reference
 * to the store or the log). NULL with err: BS_EINVAL naming the field. */
bs__trig_spec_t *bs__trig_spec_compile(const cJSON *spec, cJSON **norm, bs_err_t *err);
bs__trig_spec_t *bs__trig_spec_ref(bs__trig_spec_t *s);
void bs__trig_spec_unref(bs__trig_spec_t *s);

/* Evaluates p against obj into a new cJSON value (caller frees): an expression's value
 * (null, bool, number, string) or a copy of the constant. NULL with err. */
cJSON *bs__trig_param_eval(const bs__trig_param_t *p, const cJSON *obj, bs_err_t *err);

#endif
