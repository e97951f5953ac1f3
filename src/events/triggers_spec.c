/*
 * Trigger specs: checking, normalising and compiling the JSON spec of a Trigger
 * (triggers.h) into the form the runtime runs (triggers_int.h). Every expression is
 * compiled here once (base/expr.h); an error names the spec field and the position in
 * the expression. The normalised spec has every default written out, so what the store
 * holds says what runs.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/time.h"
#include "events/triggers_int.h"
#include "registry/registry.h"
#include "store/resources.h"

#define MAX_PARAMS 1024
#define DEFAULT_ACK_WAIT "30s"
#define DEFAULT_MAX_DELIVER 5
#define DEFAULT_MAX_ACK_PENDING 1000

int bs__trig_check_name(const char *name, bs_err_t *err)
{
    if (!bs_resources_valid_name(name) || strlen(name) > BS_TRIGGERS_MAX_NAME)
        return bs_err_setf(err, BS_EINVAL, "name",
                           "trigger names match [a-z0-9][a-z0-9_-]{0,%d} (its consumer group is "
                           "trigger-<name>), got '%.64s'",
                           BS_TRIGGERS_MAX_NAME - 1, name);
    return 0;
}

bs__trig_spec_t *bs__trig_spec_ref(bs__trig_spec_t *s)
{
    if (s)
        atomic_fetch_add(&s->refs, 1);
    return s;
}

static void params_free(bs__trig_param_t *p, int n)
{
    for (int i = 0; i < n; i++) {
        free(p[i].name);
        bs_expr_free(p[i].expr);
        cJSON_Delete(p[i].constant);
    }
    free(p);
}

void bs__trig_spec_unref(bs__trig_spec_t *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    free(s->text);
    bs_expr_free(s->filter);
    bs_expr_free(s->when);
    params_free(s->inputs, s->n_inputs);
    params_free(s->args, s->n_args);
    free(s->restart_key);
    free(s);
}

/* A resource name (topic, destination) at key of obj into out (64 bytes). 0, 1 (absent and
 * optional) or BS_EINVAL naming field. */
static int get_name(const cJSON *obj, const char *key, const char *field, int required, char *out,
                    bs_err_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        if (required)
            return bs_err_setf(err, BS_EINVAL, field, "%s is required", field);
        return 1;
    }
    if (!cJSON_IsString(v) || !bs_resources_valid_name(v->valuestring))
        return bs_err_setf(err, BS_EINVAL, field,
                           "%s must be a name matching [a-z0-9][a-z0-9_-]{0,62}%s%.64s%s", field,
                           cJSON_IsString(v) ? ", got '" : "",
                           cJSON_IsString(v) ? v->valuestring : "", cJSON_IsString(v) ? "'" : "");
    snprintf(out, 64, "%s", v->valuestring);
    return 0;
}

static int unknown_field(bs_err_t *err, const char *prefix, const bs_err_t *e)
{
    char f[64];
    snprintf(f, sizeof f, "%s.%.40s", prefix, e->field);
    return bs_err_setf(err, BS_EINVAL, f, "%s: %s", prefix, e->msg);
}

/* Compiles the expression string at key of obj (field names it in errors). want: BOOL for
 * conditions. *out stays NULL when absent. 0 or BS_EINVAL. */
static int get_expr(const cJSON *obj, const char *key, const char *field, bs_expr_type_t want,
                    bs_expr_t **out, bs_err_t *err)
{
    *out = NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsString(v))
        return bs_err_setf(err, BS_EINVAL, field, "%s must be an expression (a string)", field);
    bs_expr_opts_t o = {.allow_undeclared = 1, .want = want};
    bs_err_t e;
    bs_err_clear(&e);
    int pos = -1;
    *out = bs_expr_compile(v->valuestring, strlen(v->valuestring), &o, &pos, &e);
    if (!*out)
        return bs_err_setf(err, e.code ? e.code : BS_EINVAL, field, "%s: %s", field, e.msg);
    return 0;
}

/* {"name": "<expression>" | constant, …} at key of obj into *out / *n. */
static int get_params(const cJSON *obj, const char *key, const char *field, bs__trig_param_t **out,
                      int *n, cJSON **norm, bs_err_t *err)
{
    *out = NULL;
    *n = 0;
    *norm = NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v))
        return 1;
    if (!cJSON_IsObject(v))
        return bs_err_setf(err, BS_EINVAL, field,
                           "%s must be an object of names to expressions (strings) or constants",
                           field);
    int count = cJSON_GetArraySize(v);
    if (count > MAX_PARAMS)
        return bs_err_setf(err, BS_EINVAL, field, "%s has %d entries, the limit is %d", field,
                           count, MAX_PARAMS);
    bs__trig_param_t *p = calloc((size_t)count + 1, sizeof *p);
    cJSON *nj = cJSON_CreateObject();
    if (!p || !nj) {
        free(p);
        cJSON_Delete(nj);
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    int i = 0, rc = 0;
    for (const cJSON *c = v->child; c && !rc; c = c->next, i++) {
        char f[64];
        snprintf(f, sizeof f, "%s.%.40s", field, c->string ? c->string : "");
        if (!c->string || !c->string[0] || strlen(c->string) > 128) {
            rc = bs_err_setf(err, BS_EINVAL, f, "%s: names are 1 to 128 bytes", field);
            break;
        }
        for (int k = 0; k < i; k++)
            if (strcmp(p[k].name, c->string) == 0) {
                rc = bs_err_setf(err, BS_EINVAL, f, "%s: '%.64s' is given twice", field, c->string);
                break;
            }
        if (rc)
            break;
        p[i].name = strdup(c->string);
        if (!p[i].name) {
            rc = bs_err_set(err, BS_ENOMEM, "out of memory");
            break;
        }
        if (cJSON_IsString(c)) {
            rc = get_expr(v, c->string, f, BS_EXPR_ANY, &p[i].expr, err);
            if (!rc)
                cJSON_AddStringToObject(nj, c->string, bs_expr_source(p[i].expr));
        } else {
            p[i].constant = cJSON_Duplicate(c, 1);
            if (!p[i].constant)
                rc = bs_err_set(err, BS_ENOMEM, "out of memory");
            else
                cJSON_AddItemToObject(nj, c->string, cJSON_Duplicate(c, 1));
        }
    }
    if (rc) {
        params_free(p, count); /* calloc'd: the unused entries are empty */
        cJSON_Delete(nj);
        return rc;
    }
    *out = p;
    *n = count;
    *norm = nj;
    return 0;
}

static int compile_predict(bs__trig_spec_t *s, const cJSON *a, cJSON *na, bs_err_t *err)
{
    static const char *const allowed[] = {"model",        "version", "alias", "inputs",
                                          "output_topic", "webhook", "when",  NULL};
    if (!cJSON_IsObject(a))
        return bs_err_setf(err, BS_EINVAL, "action.predict", "action.predict must be an object");
    bs_err_t e;
    if (bs_json_reject_unknown(a, allowed, &e))
        return unknown_field(err, "action.predict", &e);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(a, "model");
    if (!cJSON_IsString(m) || !bs_registry_valid_name(m->valuestring))
        return bs_err_setf(err, BS_EINVAL, "action.predict.model",
                           "action.predict.model must be a model name (1-128 of [A-Za-z0-9._-])");
    snprintf(s->model, sizeof s->model, "%s", m->valuestring);
    cJSON_AddStringToObject(na, "model", s->model);
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(a, "version");
    const cJSON *al = cJSON_GetObjectItemCaseSensitive(a, "alias");
    if (ver && !cJSON_IsNull(ver) && al && !cJSON_IsNull(al))
        return bs_err_setf(err, BS_EINVAL, "action.predict.version",
                           "give action.predict.version or action.predict.alias, not both");
    if (ver && !cJSON_IsNull(ver)) {
        if (!cJSON_IsNumber(ver) || ver->valuedouble != floor(ver->valuedouble) ||
            ver->valuedouble < 1 || ver->valuedouble > 1e9)
            return bs_err_setf(err, BS_EINVAL, "action.predict.version",
                               "action.predict.version must be a version number (1 or more)");
        s->version = (int)ver->valuedouble;
        cJSON_AddNumberToObject(na, "version", s->version);
    }
    if (al && !cJSON_IsNull(al)) {
        if (!cJSON_IsString(al) || !al->valuestring[0] || strlen(al->valuestring) > 64 ||
            strspn(al->valuestring, "abcdefghijklmnopqrstuvwxyz0123456789-_") !=
                strlen(al->valuestring))
            return bs_err_setf(
                err, BS_EINVAL, "action.predict.alias",
                "action.predict.alias must be 1-64 characters of a-z, 0-9, '-' or '_'");
        snprintf(s->alias, sizeof s->alias, "%s", al->valuestring);
        cJSON_AddStringToObject(na, "alias", s->alias);
    }
    cJSON *ni = NULL;
    int rc = get_params(a, "inputs", "action.predict.inputs", &s->inputs, &s->n_inputs, &ni, err);
    if (rc < 0)
        return rc;
    if (ni)
        cJSON_AddItemToObject(na, "inputs", ni);
    rc = get_name(a, "output_topic", "action.predict.output_topic", 0, s->output_topic, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        cJSON_AddStringToObject(na, "output_topic", s->output_topic);
    rc = get_name(a, "webhook", "action.predict.webhook", 0, s->webhook, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        cJSON_AddStringToObject(na, "webhook", s->webhook);
    if (!s->output_topic[0] && !s->webhook[0])
        return bs_err_setf(err, BS_EINVAL, "action.predict.output_topic",
                           "action.predict needs an output_topic, a webhook or both");
    if ((rc = get_expr(a, "when", "action.predict.when", BS_EXPR_BOOL, &s->when, err)))
        return rc;
    if (s->when)
        cJSON_AddStringToObject(na, "when", bs_expr_source(s->when));
    return 0;
}

static int compile_webhook(bs__trig_spec_t *s, const cJSON *a, cJSON *na, bs_err_t *err)
{
    static const char *const allowed[] = {"destination", NULL};
    if (!cJSON_IsObject(a))
        return bs_err_setf(err, BS_EINVAL, "action.webhook", "action.webhook must be an object");
    bs_err_t e;
    if (bs_json_reject_unknown(a, allowed, &e))
        return unknown_field(err, "action.webhook", &e);
    int rc = get_name(a, "destination", "action.webhook.destination", 1, s->webhook, err);
    if (rc)
        return rc;
    cJSON_AddStringToObject(na, "destination", s->webhook);
    return 0;
}

static int valid_kind(const char *k)
{
    size_t n = strlen(k);
    return n >= 1 && n <= 63 && strspn(k, "abcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

static int compile_job(bs__trig_spec_t *s, const cJSON *a, cJSON *na, bs_err_t *err)
{
    static const char *const allowed[] = {"kind", "args", NULL};
    if (!cJSON_IsObject(a))
        return bs_err_setf(err, BS_EINVAL, "action.job", "action.job must be an object");
    bs_err_t e;
    if (bs_json_reject_unknown(a, allowed, &e))
        return unknown_field(err, "action.job", &e);
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(a, "kind");
    if (!cJSON_IsString(k) || !valid_kind(k->valuestring))
        return bs_err_setf(err, BS_EINVAL, "action.job.kind",
                           "action.job.kind must be a job kind ([a-z0-9_.-]{1,63})");
    snprintf(s->job_kind, sizeof s->job_kind, "%s", k->valuestring);
    cJSON_AddStringToObject(na, "kind", s->job_kind);
    cJSON *nargs = NULL;
    int rc = get_params(a, "args", "action.job.args", &s->args, &s->n_args, &nargs, err);
    if (rc < 0)
        return rc;
    cJSON_AddItemToObject(na, "args", nargs ? nargs : cJSON_CreateObject());
    return 0;
}

static int compile_action(bs__trig_spec_t *s, const cJSON *spec, cJSON *norm, bs_err_t *err)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(spec, "action");
    if (!cJSON_IsObject(a))
        return bs_err_setf(err, BS_EINVAL, "action",
                           "action must be an object with one of predict, webhook or job");
    if (cJSON_GetArraySize(a) != 1)
        return bs_err_setf(err, BS_EINVAL, "action",
                           "action must hold exactly one of predict, webhook or job");
    const cJSON *body = a->child;
    cJSON *na = cJSON_CreateObject(), *nb = cJSON_CreateObject();
    if (!na || !nb) {
        cJSON_Delete(na);
        cJSON_Delete(nb);
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    cJSON_AddItemToObject(norm, "action", na);
    cJSON_AddItemToObject(na, body->string ? body->string : "", nb);
    if (body->string && strcmp(body->string, "predict") == 0) {
        s->action = BS__TRIG_PREDICT;
        return compile_predict(s, body, nb, err);
    }
    if (body->string && strcmp(body->string, "webhook") == 0) {
        s->action = BS__TRIG_WEBHOOK;
        return compile_webhook(s, body, nb, err);
    }
    if (body->string && strcmp(body->string, "job") == 0) {
        s->action = BS__TRIG_JOB;
        return compile_job(s, body, nb, err);
    }
    return bs_err_setf(err, BS_EINVAL, "action",
                       "unknown action '%.64s'; use predict, webhook or job",
                       body->string ? body->string : "");
}

static int compile_consumer(bs__trig_spec_t *s, const cJSON *spec, cJSON *norm, bs_err_t *err)
{
    static const char *const allowed[] = {"ack_wait", "max_deliver", "dead_letter",
                                          "max_ack_pending", NULL};
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(spec, "consumer");
    if (c && !cJSON_IsNull(c) && !cJSON_IsObject(c))
        return bs_err_setf(err, BS_EINVAL, "consumer", "consumer must be an object");
    if (c && cJSON_IsNull(c))
        c = NULL;
    bs_err_t e;
    if (c && bs_json_reject_unknown(c, allowed, &e))
        return unknown_field(err, "consumer", &e);
    cJSON *nc = cJSON_AddObjectToObject(norm, "consumer");
    if (!nc)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    const char *ack_wait = DEFAULT_ACK_WAIT;
    const cJSON *aw = c ? cJSON_GetObjectItemCaseSensitive(c, "ack_wait") : NULL;
    if (aw && !cJSON_IsNull(aw)) {
        if (!cJSON_IsString(aw))
            return bs_err_setf(err, BS_EINVAL, "consumer.ack_wait",
                               "consumer.ack_wait must be a duration such as \"30s\"");
        ack_wait = aw->valuestring;
    }
    int64_t ms;
    if (bs_time_parse_duration(ack_wait, &ms) != 0 || ms < 100 || ms > 12 * 3600 * 1000LL)
        return bs_err_setf(err, BS_EINVAL, "consumer.ack_wait",
                           "consumer.ack_wait must be a duration from 100ms to 12h, got '%.32s'",
                           ack_wait);
    s->consumer.ack_wait_ms = ms;
    cJSON_AddStringToObject(nc, "ack_wait", ack_wait);
    int64_t md = DEFAULT_MAX_DELIVER, map = DEFAULT_MAX_ACK_PENDING;
    if (c) {
        int rc = bs_json_get_int(c, "max_deliver", 0, -1, 1000000, &md, &e);
        if (rc < 0 || md == 0)
            return bs_err_setf(err, BS_EINVAL, "consumer.max_deliver",
                               "consumer.max_deliver must be -1 (no limit) or 1 to 1000000");
        rc = bs_json_get_int(c, "max_ack_pending", 0, 1, 100000, &map, &e);
        if (rc < 0)
            return bs_err_setf(err, BS_EINVAL, "consumer.max_ack_pending",
                               "consumer.max_ack_pending must be 1 to 100000");
        rc = get_name(c, "dead_letter", "consumer.dead_letter", 0, s->dead_letter, err);
        if (rc < 0)
            return rc;
    }
    s->consumer.max_deliver = (int)md;
    s->consumer.max_ack_pending = (int)map;
    s->consumer.dead_letter = s->dead_letter[0] ? s->dead_letter : NULL;
    cJSON_AddNumberToObject(nc, "max_deliver", (double)md);
    cJSON_AddNumberToObject(nc, "max_ack_pending", (double)map);
    if (s->dead_letter[0])
        cJSON_AddStringToObject(nc, "dead_letter", s->dead_letter);
    if (s->dead_letter[0] && strcmp(s->dead_letter, s->topic) == 0)
        return bs_err_setf(err, BS_EINVAL, "consumer.dead_letter",
                           "consumer.dead_letter must differ from the trigger's topic");
    return 0;
}

bs__trig_spec_t *bs__trig_spec_compile(const cJSON *spec, cJSON **norm_out, bs_err_t *err)
{
    static const char *const allowed[] = {"topic", "on",     "filter",      "action", "consumer",
                                          "start", "paused", "description", NULL};
    if (norm_out)
        *norm_out = NULL;
    if (!cJSON_IsObject(spec)) {
        bs_err_set(err, BS_EINVAL, "a trigger's spec must be a JSON object");
        return NULL;
    }
    bs_err_t e;
    if (bs_json_reject_unknown(spec, allowed, &e)) {
        bs_err_setf(err, BS_EINVAL, e.field, "%s", e.msg);
        return NULL;
    }
    bs__trig_spec_t *s = calloc(1, sizeof *s);
    cJSON *norm = cJSON_CreateObject();
    if (!s || !norm) {
        free(s);
        cJSON_Delete(norm);
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    atomic_init(&s->refs, 1);
    int rc = 0;
    const cJSON *on = cJSON_GetObjectItemCaseSensitive(spec, "on");
    const cJSON *topic = cJSON_GetObjectItemCaseSensitive(spec, "topic");
    if (on && !cJSON_IsNull(on)) {
        if (topic && !cJSON_IsNull(topic))
            rc = bs_err_setf(err, BS_EINVAL, "on", "give topic or on, not both");
        else if (!cJSON_IsString(on) || strcmp(on->valuestring, "registry") != 0)
            rc = bs_err_setf(err, BS_EINVAL, "on",
                             "on must be \"registry\" (registry events); use topic for a topic");
        else {
            s->registry = 1;
            snprintf(s->topic, sizeof s->topic, "%s", BS_TRIGGERS_REGISTRY_TOPIC);
            cJSON_AddStringToObject(norm, "on", "registry");
        }
    } else {
        rc = get_name(spec, "topic", "topic", 1, s->topic, err);
        if (!rc)
            cJSON_AddStringToObject(norm, "topic", s->topic);
    }
    if (!rc && (rc = get_expr(spec, "filter", "filter", BS_EXPR_BOOL, &s->filter, err)) == 0 &&
        s->filter)
        cJSON_AddStringToObject(norm, "filter", bs_expr_source(s->filter));
    if (!rc)
        rc = compile_action(s, spec, norm, err);
    if (!rc)
        rc = compile_consumer(s, spec, norm, err);
    if (!rc) {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(spec, "start");
        const char *start = "new";
        if (st && !cJSON_IsNull(st)) {
            if (!cJSON_IsString(st) ||
                (strcmp(st->valuestring, "new") && strcmp(st->valuestring, "earliest")))
                rc = bs_err_setf(err, BS_EINVAL, "start",
                                 "start must be \"new\" (events published from now on) or "
                                 "\"earliest\" (the topic's retained events too)");
            else
                start = st->valuestring;
        }
        s->consumer.deliver_new = strcmp(start, "new") == 0;
        cJSON_AddStringToObject(norm, "start", start);
    }
    if (!rc) {
        int paused = 0;
        int r = bs_json_get_bool(spec, "paused", 0, &paused, &e);
        if (r < 0)
            rc = bs_err_setf(err, BS_EINVAL, "paused", "paused must be true or false");
        s->paused = paused;
        cJSON_AddBoolToObject(norm, "paused", paused);
    }
    if (!rc) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(spec, "description");
        if (d && !cJSON_IsNull(d)) {
            if (!cJSON_IsString(d) || strlen(d->valuestring) > 4096)
                rc = bs_err_setf(err, BS_EINVAL, "description",
                                 "description must be a string of at most 4096 bytes");
            else
                cJSON_AddStringToObject(norm, "description", d->valuestring);
        }
    }
    if (!rc) {
        s->text = cJSON_PrintUnformatted(norm);
        char key[256];
        snprintf(key, sizeof key, "%s|%lld|%d|%d|%s|%d", s->topic,
                 (long long)s->consumer.ack_wait_ms, s->consumer.max_deliver,
                 s->consumer.max_ack_pending, s->dead_letter, s->consumer.deliver_new);
        s->restart_key = strdup(key);
        if (!s->text || !s->restart_key)
            rc = bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    if (rc) {
        cJSON_Delete(norm);
        bs__trig_spec_unref(s);
        return NULL;
    }
    if (norm_out)
        *norm_out = norm;
    else
        cJSON_Delete(norm);
    return s;
}

cJSON *bs__trig_param_eval(const bs__trig_param_t *p, const cJSON *obj, bs_err_t *err)
{
    if (!p->expr) {
        cJSON *c = cJSON_Duplicate(p->constant, 1);
        if (!c)
            bs_err_set(err, BS_ENOMEM, "out of memory");
        return c;
    }
    bs_arena_t a;
    bs_arena_init(&a, 1024);
    bs_expr_value_t v;
    cJSON *out = NULL;
    if (bs_expr_eval_json(p->expr, obj, &a, &v, err) == 0) {
        switch (v.type) {
        case BS_EXPR_BOOL:
            out = cJSON_CreateBool(v.b);
            break;
        case BS_EXPR_NUM:
            out = cJSON_CreateNumber(v.num);
            break;
        case BS_EXPR_STR: {
            char *s = malloc(v.len + 1);
            if (s) {
                memcpy(s, v.s, v.len);
                s[v.len] = 0;
                out = cJSON_CreateString(s);
                free(s);
            }
            break;
        }
        default:
            out = cJSON_CreateNull();
            break;
        }
        if (!out)
            bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    bs_arena_deinit(&a);
    return out;
}
