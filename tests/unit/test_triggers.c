/* Trigger specs (events/triggers_spec.c: the checks bs_triggers_validate makes before it
 * looks at references): normalisation with every default written out, the errors of
 * each field (expressions with their position), the compiled form the runtime runs, and
 * the evaluation of input/argument parameters over an event. */
#include "test_common.h"

#include "events/triggers.h"
#include "events/triggers_int.h"

static cJSON *parse(const char *s)
{
    cJSON *j = cJSON_Parse(s);
    assert_non_null(j);
    return j;
}

/* Compiles spec text, which must compile (the compiled spec; caller unrefs). */
static bs__trig_spec_t *compile(const char *spec)
{
    cJSON *j = parse(spec);
    bs_err_t err;
    bs_err_clear(&err);
    bs__trig_spec_t *s = bs__trig_spec_compile(j, NULL, &err);
    cJSON_Delete(j);
    if (!s)
        fail_msg("'%s' does not compile: %s: %s", spec, err.field, err.msg);
    return s;
}

/* Validates spec text; returns the normalised spec (caller frees) or NULL with err. */
static cJSON *validate(const char *name, const char *spec, bs_err_t *err)
{
    cJSON *j = parse(spec), *out = NULL;
    bs_err_clear(err);
    int rc = bs__trig_check_name(name, err);
    bs__trig_spec_t *s = rc ? NULL : bs__trig_spec_compile(j, &out, err);
    if (!rc && !s)
        rc = err->code;
    bs__trig_spec_unref(s);
    cJSON_Delete(j);
    if (rc) {
        assert_null(out);
        assert_int_equal(rc, err->code);
        return NULL;
    }
    assert_non_null(out);
    return out;
}

static void expect_error(const char *spec, const char *field, const char *mentions)
{
    bs_err_t err;
    cJSON *out = validate("t", spec, &err);
    if (out) {
        char *s = cJSON_PrintUnformatted(out);
        fprintf(stderr, "accepted: %s\n", s);
        free(s);
    }
    assert_null(out);
    assert_int_equal(err.code, BS_EINVAL);
    if (strcmp(err.field, field) != 0)
        fprintf(stderr, "field '%s' (want '%s'): %s\n", err.field, field, err.msg);
    assert_string_equal(err.field, field);
    if (mentions && !strstr(err.msg, mentions)) {
        fprintf(stderr, "message '%s' lacks '%s'\n", err.msg, mentions);
        fail();
    }
}

static void test_defaults_are_written_out(void **state)
{
    (void)state;
    bs_err_t err;
    cJSON *out = validate("score",
                          "{\"topic\":\"orders\",\"action\":{\"predict\":{"
                          "\"model\":\"fraud\",\"output_topic\":\"scores\"}}}",
                          &err);
    assert_non_null(out);
    char *s = cJSON_PrintUnformatted(out);
    assert_string_equal(s, "{\"topic\":\"orders\",\"action\":{\"predict\":{\"model\":\"fraud\","
                           "\"output_topic\":\"scores\"}},\"consumer\":{\"ack_wait\":\"30s\","
                           "\"max_deliver\":5,\"max_ack_pending\":1000},\"start\":\"new\","
                           "\"paused\":false}");
    /* Normalising a normalised spec changes nothing (apply compares stored specs). */
    cJSON *again = validate("score", s, &err);
    char *s2 = cJSON_PrintUnformatted(again);
    assert_string_equal(s, s2);
    free(s);
    free(s2);
    cJSON_Delete(out);
    cJSON_Delete(again);
}

static void test_everything_given(void **state)
{
    (void)state;
    const char *spec =
        "{\"topic\":\"tx\",\"filter\":\"amount > 1000 && country == \\\"FR\\\"\","
        "\"action\":{\"predict\":{\"model\":\"fraud\",\"alias\":\"champion\","
        "\"inputs\":{\"amount\":\"amount / 100\",\"fixed\":3},\"output_topic\":\"scores\","
        "\"webhook\":\"risk\",\"when\":\"score > 0.9\"}},"
        "\"consumer\":{\"ack_wait\":\"2m\",\"max_deliver\":-1,\"dead_letter\":\"tx-dlq\","
        "\"max_ack_pending\":50},\"start\":\"earliest\",\"paused\":true,\"description\":\"d\"}";
    bs__trig_spec_t *s = compile(spec);
    assert_string_equal(s->topic, "tx");
    assert_int_equal(s->registry, 0);
    assert_non_null(s->filter);
    assert_int_equal(s->action, BS__TRIG_PREDICT);
    assert_string_equal(s->model, "fraud");
    assert_string_equal(s->alias, "champion");
    assert_int_equal(s->version, 0);
    assert_int_equal(s->n_inputs, 2);
    assert_non_null(s->inputs[0].expr);
    assert_null(s->inputs[1].expr);
    assert_non_null(s->inputs[1].constant);
    assert_string_equal(s->output_topic, "scores");
    assert_string_equal(s->webhook, "risk");
    assert_non_null(s->when);
    assert_int_equal(s->consumer.ack_wait_ms, 120000);
    assert_int_equal(s->consumer.max_deliver, -1);
    assert_int_equal(s->consumer.max_ack_pending, 50);
    assert_string_equal(s->consumer.dead_letter, "tx-dlq");
    assert_int_equal(s->consumer.deliver_new, 0);
    assert_int_equal(s->paused, 1);
    bs__trig_spec_unref(s);
}

static void test_registry_and_other_actions(void **state)
{
    (void)state;
    bs_err_t err;
    bs__trig_spec_t *s =
        compile("{\"on\":\"registry\",\"filter\":\"type == \\\"version.approved\\\"\","
                "\"action\":{\"job\":{\"kind\":\"batch.score\",\"args\":{"
                "\"model\":\"data.model\",\"n\":2}}}}");
    assert_int_equal(s->registry, 1);
    assert_string_equal(s->topic, BS_TRIGGERS_REGISTRY_TOPIC);
    assert_int_equal(s->action, BS__TRIG_JOB);
    assert_string_equal(s->job_kind, "batch.score");
    assert_int_equal(s->n_args, 2);
    /* Parameters evaluated over an event. */
    cJSON *ev = parse("{\"type\":\"version.approved\",\"data\":{\"model\":\"fraud\"}}");
    cJSON *v = bs__trig_param_eval(&s->args[0], ev, &err);
    assert_true(cJSON_IsString(v));
    assert_string_equal(v->valuestring, "fraud");
    cJSON_Delete(v);
    v = bs__trig_param_eval(&s->args[1], ev, &err);
    assert_true(cJSON_IsNumber(v));
    assert_true(v->valuedouble == 2);
    cJSON_Delete(v);
    cJSON_Delete(ev);
    bs__trig_spec_unref(s);

    s = compile("{\"topic\":\"signups\",\"action\":{\"webhook\":{\"destination\":\"crm\"}}}");
    assert_int_equal(s->action, BS__TRIG_WEBHOOK);
    assert_string_equal(s->webhook, "crm");
    assert_null(s->filter);
    bs__trig_spec_unref(s);
}

static void test_input_expressions(void **state)
{
    (void)state;
    bs_err_t err;
    bs__trig_spec_t *s =
        compile("{\"topic\":\"a\",\"action\":{\"predict\":{\"model\":\"m\","
                "\"output_topic\":\"b\",\"inputs\":{\"x\":\"order.total / 100\","
                "\"y\":\"if(user.country == \\\"FR\\\", 1, 0)\",\"z\":\"missing + 1\","
                "\"c\":\"lower(user.country)\",\"w\":\"-user.country\",\"k\":[1,2]}}}}");
    assert_int_equal(s->n_inputs, 6);
    cJSON *ev = parse("{\"order\":{\"total\":1250},\"user\":{\"country\":\"FR\"}}");
    cJSON *x = bs__trig_param_eval(&s->inputs[0], ev, &err);
    cJSON *y = bs__trig_param_eval(&s->inputs[1], ev, &err);
    cJSON *z = bs__trig_param_eval(&s->inputs[2], ev, &err);
    cJSON *c = bs__trig_param_eval(&s->inputs[3], ev, &err);
    cJSON *k = bs__trig_param_eval(&s->inputs[5], ev, &err);
    assert_true(cJSON_IsNumber(x) && x->valuedouble == 12.5);
    assert_true(cJSON_IsNumber(y) && y->valuedouble == 1);
    assert_true(cJSON_IsNull(z)); /* arithmetic on a missing field is null */
    assert_true(cJSON_IsString(c));
    assert_string_equal(c->valuestring, "fr"); /* a string the evaluation made (its arena) */
    assert_true(cJSON_IsArray(k) && cJSON_GetArraySize(k) == 2); /* a constant, copied */
    assert_ptr_not_equal(k, s->inputs[5].constant);
    /* An evaluation error is the caller's to report: NULL with the expression's message. */
    bs_err_clear(&err);
    assert_null(bs__trig_param_eval(&s->inputs[4], ev, &err));
    assert_int_equal(err.code, BS_EINVAL);
    assert_string_equal(err.msg, "at 1:1: '-' needs a number, field 'user.country' is a string");
    cJSON_Delete(x);
    cJSON_Delete(y);
    cJSON_Delete(z);
    cJSON_Delete(c);
    cJSON_Delete(k);
    cJSON_Delete(ev);
    bs__trig_spec_unref(s);
}

static void test_field_errors(void **state)
{
    (void)state;
    const char *ok = "\"action\":{\"predict\":{\"model\":\"m\",\"output_topic\":\"o\"}}";
    char spec[512];
    snprintf(spec, sizeof spec, "{\"topic\":\"t\",\"filter\":\"amount > > 1\",%s}", ok);
    expect_error(spec, "filter", "at 1:");
    snprintf(spec, sizeof spec, "{\"topic\":\"t\",\"filter\":\"lg(amount) > 1\",%s}", ok);
    expect_error(spec, "filter", "at 1:1");
    snprintf(spec, sizeof spec, "{\"topic\":\"t\",\"filter\":\"amount + 1\",%s}", ok);
    expect_error(spec, "filter", NULL); /* a number is not a condition */
    snprintf(spec, sizeof spec, "{\"topic\":\"t\",\"filter\":7,%s}", ok);
    expect_error(spec, "filter", NULL);
    snprintf(spec, sizeof spec, "{%s}", ok);
    expect_error(spec, "topic", "required");
    snprintf(spec, sizeof spec, "{\"topic\":\"Bad Name\",%s}", ok);
    expect_error(spec, "topic", NULL);
    snprintf(spec, sizeof spec, "{\"topic\":\"t\",\"on\":\"registry\",%s}", ok);
    expect_error(spec, "on", NULL);
    snprintf(spec, sizeof spec, "{\"on\":\"github\",%s}", ok);
    expect_error(spec, "on", NULL);
    snprintf(spec, sizeof spec, "{\"topic\":\"t\",\"colour\":1,%s}", ok);
    expect_error(spec, "colour", NULL);
    expect_error("{\"topic\":\"t\"}", "action", NULL);
    expect_error("{\"topic\":\"t\",\"action\":{}}", "action", NULL);
    expect_error("{\"topic\":\"t\",\"action\":{\"shout\":{}}}", "action", "shout");
    expect_error("{\"topic\":\"t\",\"action\":{\"predict\":{\"model\":\"m\",\"output_topic\":"
                 "\"o\"},\"job\":{\"kind\":\"k\"}}}",
                 "action", NULL);
    expect_error("{\"topic\":\"t\",\"action\":{\"predict\":{\"output_topic\":\"o\"}}}",
                 "action.predict.model", NULL);
    expect_error("{\"topic\":\"t\",\"action\":{\"predict\":{\"model\":\"m\"}}}",
                 "action.predict.output_topic", NULL);
    expect_error("{\"topic\":\"t\",\"action\":{\"predict\":{\"model\":\"m\",\"output_topic\":"
                 "\"o\",\"version\":2,\"alias\":\"a\"}}}",
                 "action.predict.version", NULL);
    expect_error("{\"topic\":\"t\",\"action\":{\"predict\":{\"model\":\"m\",\"output_topic\":"
                 "\"o\",\"version\":1.5}}}",
                 "action.predict.version", NULL);
    expect_error("{\"topic\":\"t\",\"action\":{\"predict\":{\"model\":\"m\",\"output_topic\":"
                 "\"o\",\"when\":\"score >\"}}}",
                 "action.predict.when", "at 1:");
    expect_error("{\"topic\":\"t\",\"action\":{\"predict\":{\"model\":\"m\",\"output_topic\":"
                 "\"o\",\"inputs\":{\"a\":\"((\"}}}}",
                 "action.predict.inputs.a", "at 1:");
    expect_error("{\"topic\":\"t\",\"action\":{\"predict\":{\"model\":\"m\",\"output_topic\":"
                 "\"o\",\"inputs\":[1]}}}",
                 "action.predict.inputs", NULL);
    expect_error("{\"topic\":\"t\",\"action\":{\"predict\":{\"model\":\"m\",\"output_topic\":"
                 "\"o\",\"colour\":1}}}",
                 "action.predict.colour", NULL);
    expect_error("{\"topic\":\"t\",\"action\":{\"webhook\":{}}}", "action.webhook.destination",
                 NULL);
    expect_error("{\"topic\":\"t\",\"action\":{\"job\":{\"kind\":\"Bad Kind\"}}}",
                 "action.job.kind", NULL);
    expect_error("{\"topic\":\"t\",\"action\":{\"job\":{\"kind\":\"sleep\",\"args\":{"
                 "\"seconds\":\"1 +\"}}}}",
                 "action.job.args.seconds", "at 1:");
    snprintf(spec, sizeof spec, "{\"topic\":\"t\",\"consumer\":{\"ack_wait\":\"soon\"},%s}", ok);
    expect_error(spec, "consumer.ack_wait", "soon");
    snprintf(spec, sizeof spec, "{\"topic\":\"t\",\"consumer\":{\"ack_wait\":\"10ms\"},%s}", ok);
    expect_error(spec, "consumer.ack_wait", NULL);
    snprintf(spec, sizeof spec, "{\"topic\":\"t\",\"consumer\":{\"max_deliver\":0},%s}", ok);
    expect_error(spec, "consumer.max_deliver", NULL);
    snprintf(spec, sizeof spec, "{\"topic\":\"t\",\"consumer\":{\"dead_letter\":\"t\"},%s}", ok);
    expect_error(spec, "consumer.dead_letter", NULL);
    snprintf(spec, sizeof spec, "{\"topic\":\"t\",\"consumer\":{\"x\":1},%s}", ok);
    expect_error(spec, "consumer.x", NULL);
    snprintf(spec, sizeof spec, "{\"topic\":\"t\",\"start\":\"yesterday\",%s}", ok);
    expect_error(spec, "start", NULL);
    snprintf(spec, sizeof spec, "{\"topic\":\"t\",\"paused\":\"no\",%s}", ok);
    expect_error(spec, "paused", NULL);
}

static void test_names(void **state)
{
    (void)state;
    bs_err_t err;
    const char *spec = "{\"topic\":\"t\",\"action\":{\"webhook\":{\"destination\":\"d\"}}}";
    char name[64];
    memset(name, 'a', 55);
    name[55] = 0;
    cJSON *out = validate(name, spec, &err);
    assert_non_null(out);
    cJSON_Delete(out);
    name[55] = 'a';
    name[56] = 0; /* "trigger-" + 56 is past the group name limit */
    assert_null(validate(name, spec, &err));
    assert_string_equal(err.field, "name");
    assert_null(validate("Upper", spec, &err));
    assert_string_equal(err.field, "name");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_are_written_out),
        cmocka_unit_test(test_everything_given),
        cmocka_unit_test(test_registry_and_other_actions),
        cmocka_unit_test(test_input_expressions),
        cmocka_unit_test(test_field_errors),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
