/*
 * The topics API (issue 9 "Topics"): the Topic kind's hooks (kinds.c), publishing,
 * reading, consumer groups and dead-letter replay. Thin: events/topics parses and
 * keeps the snapshot, store/log stores and delivers.
 *
 * Publish and fetch are inline handlers: they check the topic against the in-process
 * snapshot (never the metadata store), parse on the I/O thread, defer the request and
 * answer from the log's completion callback, so no worker is held while the writer's
 * fsync or a long poll runs. Everything else may wait on the log or the store and runs
 * on store workers (BS_ROUTE_BLOCKING).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "base/log.h"
#include "base/pool.h"
#include "events/topics.h"
#include "store/changes.h"
#include "store/log.h"
#include "store/resources.h"

#define MAX_FETCH 1000
#define MAX_FETCH_WAIT_MS 30000
#define MAX_READ 1000
#define MAX_READ_BYTES (8u << 20)
#define MAX_CE_HEADERS 64
#define MAX_IDS 10000
#define DLQ_ACTOR "system:dead-letter"

/* ---- the Topic kind's hooks ------------------------------------------------------------- */

int bs__api_topic_validate(bs_app_t *app, const bs_principal_t *who, const char *name,
                           const cJSON *spec, cJSON **out, bs_err_t *err)
{
    (void)who;
    return bs_topic_spec_normalise(name, spec, app->cfg.max_event_bytes, out, NULL, err);
}

/* Makes sure the dead letter topic dl of tenant exists: a Topic resource with the default
 * spec when there is none, and in the log. */
int bs__api_topic_ensure_dead_letter(bs_app_t *app, const char *tenant, const char *dl,
                                     bs_err_t *err)
{
    return bs__api_topic_ensure(app, tenant, dl, DLQ_ACTOR, err);
}

int bs__api_topic_ensure(bs_app_t *app, const char *tenant, const char *dl, const char *actor,
                         bs_err_t *err)
{
    return bs__api_topic_ensure_spec(app, tenant, dl, NULL, actor, err);
}

int bs__api_topic_ensure_spec(bs_app_t *app, const char *tenant, const char *dl,
                              const char *spec, const char *actor, bs_err_t *err)
{
    bs_topic_t t;
    if (app->topics && bs_topics_get(app->topics, tenant, dl, &t))
        return 0;
    cJSON *given = spec ? cJSON_Parse(spec) : cJSON_CreateObject(), *norm = NULL;
    if (!given)
        return bs_err_set(err, spec ? BS_EINTERNAL : BS_ENOMEM, "topic spec for '%s' is not JSON",
                          dl);
    int rc = bs_topic_spec_normalise(dl, given, app->cfg.max_event_bytes, &norm, &t, err);
    cJSON_Delete(given);
    if (rc)
        return rc;
    char *txt = cJSON_PrintUnformatted(norm);
    cJSON_Delete(norm);
    if (!txt)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    /* Not in this replica's snapshot: it may still be stored (another replica's write). */
    rc = bs_resources_get(app->meta, tenant, BS_TOPIC_KIND, dl, NULL, NULL, err);
    bs_resource_outcome_t outcome = BS_RESOURCE_UNCHANGED;
    if (rc == BS_ENOTFOUND)
        rc = bs_resources_put(app->meta, tenant, BS_TOPIC_KIND, dl, txt, actor, 0, &outcome,
                              NULL, err);
    free(txt);
    if (rc)
        return rc;
    if (outcome == BS_RESOURCE_CREATED)
        BS_LOG(BS_LOG_INFO, "topics", "topic %s/%s created by %s", tenant, dl, actor);
    /* A topic stored already with a spec of its own (a user's edit of a system topic) is
     * not reconfigured with the one given here: the rebuild below ensures its stored spec. */
    if ((spec == NULL || outcome == BS_RESOURCE_CREATED) &&
        (rc = bs_log_topic_ensure(app->log, tenant, dl, &t.log, err)) != 0)
        return rc;
    return app->changes ? bs_changes_refresh(app->changes, BS_RESOURCES_SCOPE, err) : 0;
}

int bs__api_topic_prepare(bs_app_t *app, const char *tenant, const char *name, const char *spec,
                          bs_err_t *err)
{
    bs_topic_t t;
    int rc = bs_topic_spec_parse(tenant, name, spec, app->cfg.max_event_bytes, &t, err);
    if (rc == 0)
        rc = bs_log_topic_ensure(app->log, tenant, name, &t.log, err);
    if (rc == 0 && t.dead_letter[0])
        rc = bs__api_topic_ensure_dead_letter(app, tenant, t.dead_letter, err);
    return rc;
}

int bs__api_topic_deleted(bs_app_t *app, const char *tenant, const char *name, bs_err_t *err)
{
    return bs_log_topic_drop(app->log, tenant, name, err);
}

static void stats_json(cJSON *o, const bs_log_consumer_stats_t *s)
{
    cJSON_AddNumberToObject(o, "pending", (double)s->pending);
    cJSON_AddNumberToObject(o, "ack_pending", (double)s->ack_pending);
    cJSON_AddNumberToObject(o, "max_ack_pending", s->max_ack_pending);
    cJSON_AddBoolToObject(o, "stalled", s->stalled);
    cJSON_AddNumberToObject(o, "ack_floor", (double)s->ack_floor);
    cJSON_AddNumberToObject(o, "next_offset", (double)s->next_offset);
    cJSON_AddNumberToObject(o, "delivered", (double)s->delivered);
    cJSON_AddNumberToObject(o, "redelivered", (double)s->redelivered);
    cJSON_AddNumberToObject(o, "acked", (double)s->acked);
    cJSON_AddNumberToObject(o, "dead_lettered", (double)s->dead_lettered);
}

/* The names of a topic's groups, collected before anything else is asked of the log (its
 * listing callback must not call back into it). */
typedef struct {
    char (*v)[64];
    int n, cap;
} names_t;

static int name_cb(const char *group, void *ud)
{
    names_t *c = ud;
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 16;
        char(*v)[64] = realloc(c->v, (size_t)cap * sizeof *v);
        if (!v)
            return 1;
        c->v = v;
        c->cap = cap;
    }
    snprintf(c->v[c->n++], 64, "%s", group);
    return 0;
}

static int group_names(bs_app_t *app, const char *tenant, const char *topic, names_t *out,
                       bs_err_t *err)
{
    memset(out, 0, sizeof *out);
    return bs_log_consumers(app->log, tenant, topic, name_cb, out, err);
}

static void time_json(cJSON *o, const char *key, int64_t ms)
{
    if (!ms) {
        cJSON_AddNullToObject(o, key);
        return;
    }
    char t[40];
    bs_time_rfc3339(ms, t, sizeof t);
    cJSON_AddStringToObject(o, key, t);
}

void bs__api_topic_status(bs_app_t *app, const char *tenant, const char *name, const char *spec,
                          cJSON *status)
{
    (void)spec;
    bs_log_topic_stats_t s;
    bs_err_t err;
    if (!app->log || bs_log_topic_stats(app->log, tenant, name, &s, &err) != 0) {
        cJSON_AddBoolToObject(status, "ready", 0);
        return;
    }
    cJSON_AddBoolToObject(status, "ready", 1);
    cJSON_AddStringToObject(status, "backend", bs_log_backend(app->log));
    cJSON_AddNumberToObject(status, "first_offset", (double)s.first_offset);
    cJSON_AddNumberToObject(status, "next_offset", (double)s.next_offset);
    cJSON_AddNumberToObject(status, "records", (double)(s.next_offset - s.first_offset));
    cJSON_AddNumberToObject(status, "bytes", (double)s.bytes);
    cJSON_AddNumberToObject(status, "segments", s.segments);
    time_json(status, "first_time", s.first_time_ms);
    time_json(status, "last_time", s.last_time_ms);
    cJSON_AddNumberToObject(status, "appended", (double)s.appended);
    cJSON_AddNumberToObject(status, "duplicates", (double)s.duplicates);
    cJSON_AddNumberToObject(status, "syncs", (double)s.syncs);
    cJSON *arr = cJSON_AddArrayToObject(status, "consumers");
    names_t g;
    group_names(app, tenant, name, &g, &err);
    for (int i = 0; i < g.n; i++) {
        bs_log_consumer_stats_t cs;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "group", g.v[i]);
        if (bs_log_consumer_stats(app->log, tenant, name, g.v[i], &cs, &err) == 0)
            stats_json(o, &cs);
        cJSON_AddItemToArray(arr, o);
    }
    free(g.v);
}

int bs__api_topic_rebuild(bs_app_t *app, bs_err_t *err)
{
    return app->topics ? bs_topics_rebuild(app->topics, err) : 0;
}

/* ---- helpers ------------------------------------------------------------------------------ */

/* The topic of the path, from the snapshot (RCU: I/O threads and store workers). NULL
 * after responding 404. */
static const bs_topic_t *path_topic(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    const char *name = bs_req_param(req, "name");
    const bs_topic_t *t = app->topics ? bs_topics_find(app->topics, req->who.tenant, name) : NULL;
    if (!t)
        bs_resp_errorf(req, BS_ENOTFOUND, "name", "no topic named '%.64s'", name ? name : "");
    return t;
}

/* The same copied, for handlers that call into the log (which may outlast a quiescent
 * state on some backends). 1, or 0 after responding 404. */
static int path_topic_copy(bs_req_t *req, bs_topic_t *out)
{
    bs_app_t *app = APP(req);
    const char *name = bs_req_param(req, "name");
    if (app->topics && name && bs_topics_get(app->topics, req->who.tenant, name, out))
        return 1;
    bs_resp_errorf(req, BS_ENOTFOUND, "name", "no topic named '%.64s'", name ? name : "");
    return 0;
}

static const char *path_group(bs_req_t *req)
{
    const char *g = bs_req_param(req, "group");
    if (!bs_resources_valid_name(g)) {
        bs_resp_errorf(req, BS_EINVAL, "group",
                       "a consumer group name must match [a-z0-9][a-z0-9_-]{0,62}, got '%.64s'",
                       g ? g : "");
        return NULL;
    }
    return g;
}

/* The topic (copied) and the group of a consumer route's path. 1, or 0 after responding
 * (404 for the topic, 400 for the group's name). */
static int path_topic_group(bs_req_t *req, bs_topic_t *t, const char **group)
{
    return path_topic_copy(req, t) && (*group = path_group(req)) != NULL;
}

/* The group's stats. 1, or 0 after responding with the log's error (404: no such group). */
static int group_stats(bs_req_t *req, const bs_topic_t *t, const char *group,
                       bs_log_consumer_stats_t *s)
{
    bs_err_t err;
    if (bs_log_consumer_stats(APP(req)->log, t->tenant, t->name, group, s, &err) == 0)
        return 1;
    bs_resp_error(req, &err);
    return 0;
}

/* Starts {"items": [ in b (the caller ends the array and whatever follows). */
static void items_begin(bs_buf_t *b)
{
    bs_jw_obj_begin(b);
    bs_jw_key(b, "items");
    bs_jw_arr_begin(b);
}

/* A log error about the topic or group: the log lost track of a topic the snapshot has
 * (its ensure failed) is the server's state, not the client's mistake. */
static void log_error(bs_deferred_t *d, bs_req_t *req, const bs_err_t *err)
{
    if (d)
        bs_deferred_respond_error(d, err);
    else
        bs_resp_error(req, err);
}

int bs__api_parse_offset(const char *s, int64_t *out)
{
    if (!s || !*s || strlen(s) > 18)
        return -1;
    int64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    *out = v;
    return 0;
}

/* A wait or delay: a duration ("5s", "250ms") or a bare number of seconds. */
static int parse_wait(const char *s, int64_t *ms)
{
    if (!s || !*s)
        return -1;
    char *end;
    double v = strtod(s, &end);
    if (end != s && !*end && v >= 0 && v <= 86400.0 && *s != '-' && *s != '+' && *s != ' ') {
        *ms = (int64_t)(v * 1000.0 + 0.5);
        return 0;
    }
    return bs_time_parse_duration(s, ms) == 0 ? 0 : -1;
}

void bs__api_render_error_obj(bs_buf_t *b, int code, const char *field, const char *msg)
{
    bs_jw_key(b, "error");
    bs_jw_obj_begin(b);
    bs_jw_key(b, "code");
    bs_jw_str(b, bs_err_name(code));
    bs_jw_key(b, "message");
    bs_jw_str(b, msg);
    if (field && *field) {
        bs_jw_key(b, "field");
        bs_jw_str(b, field);
    }
    bs_jw_obj_end(b);
}

/* ---- publish -------------------------------------------------------------------------------- */

/* What the completion needs, copied out of the request (which may be gone by then). */
typedef struct {
    bs_deferred_t *d;
    bs_topics_t *topics;
    int n;           /* events in the body */
    int single;
    int rejected;    /* before the append */
    int *rec_of;     /* per event: its index among the appended records, or -1 */
    size_t *err_off; /* per rejected event: its rendered error object in errs */
    bs_buf_t errs;
} publish_t;

static void publish_free(publish_t *p)
{
    bs_buf_free(&p->errs);
    free(p->rec_of);
    free(p->err_off);
    free(p);
}

/* The 200 body: one item per event of the body, in order. */
static void render_published(publish_t *p, const bs_log_append_result_t *res, int n, bs_buf_t *b)
{
    items_begin(b);
    int accepted = 0, rejected = 0, dups = 0;
    for (int i = 0; i < p->n; i++) {
        int r = p->rec_of[i];
        if (r < 0) {
            bs_jw_raw(b, p->errs.data + p->err_off[i], strlen(p->errs.data + p->err_off[i]));
            rejected++;
            continue;
        }
        bs_jw_obj_begin(b);
        bs_jw_key(b, "index");
        bs_jw_int(b, i);
        if (r >= n || res[r].code) {
            int c = r >= n ? BS_EINTERNAL : res[r].code;
            bs__api_render_error_obj(b, c, NULL, bs_err_desc(c));
            rejected++;
        } else {
            bs_jw_key(b, "offset");
            bs_jw_int(b, res[r].offset);
            bs_jw_key(b, "id");
            bs_jw_str(b, res[r].id);
            bs_jw_key(b, "duplicate");
            bs_jw_bool(b, res[r].duplicate);
            accepted++;
            dups += res[r].duplicate != 0;
        }
        bs_jw_obj_end(b);
    }
    bs_jw_arr_end(b);
    bs_jw_key(b, "accepted");
    bs_jw_int(b, accepted);
    bs_jw_key(b, "rejected");
    bs_jw_int(b, rejected);
    bs_jw_key(b, "duplicates");
    bs_jw_int(b, dups);
    bs_jw_obj_end(b);
    bs_topics_count_publish(p->topics, (uint64_t)(accepted - dups), (uint64_t)dups,
                            (uint64_t)rejected);
}

/* The log's completion (a log thread): answers the deferred request. */
static void published(void *ud, int code, const bs_log_append_result_t *res, int n,
                      const bs_err_t *err)
{
    publish_t *p = ud;
    if (code < 0) {
        bs_topics_count_publish(p->topics, 0, 0, (uint64_t)p->n);
        bs_deferred_respond_error(p->d, err);
    } else if (p->single && n == 1 && res[0].code) {
        /* a single event refused by the log itself (its size as the log counts it) */
        bs_err_t e;
        bs_err_set(&e, res[0].code, "event refused by the log: %s", bs_err_desc(res[0].code));
        bs_topics_count_publish(p->topics, 0, 0, 1);
        bs_deferred_respond_error(p->d, &e);
    } else {
        bs_buf_t b;
        bs_buf_init(&b);
        render_published(p, res, n, &b);
        bs_deferred_respond_json(p->d, 200, &b);
        bs_buf_free(&b);
    }
    publish_free(p);
}

typedef struct {
    bs_topic_attr_t v[MAX_CE_HEADERS];
    int n, over;
} ce_ctx_t;

static int ce_header_cb(const char *name, const char *value, void *ud)
{
    ce_ctx_t *c = ud;
    if (c->n == MAX_CE_HEADERS) {
        c->over = 1;
        return 1;
    }
    c->v[c->n].name = name + 3; /* "ce-" */
    c->v[c->n].value = value;
    c->n++;
    return 0;
}

void bs__api_topic_publish(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    const bs_topic_t *t = path_topic(req);
    if (!t)
        return;
    ce_ctx_t ce = {.n = 0};
    bs_req_headers(req, "ce-", ce_header_cb, &ce);
    if (ce.over)
        return bs_resp_errorf(req, BS_EINVAL, NULL, "more than %d ce-* headers", MAX_CE_HEADERS);
    bs_topic_parse_opts_t o = {
        .content_type = bs_req_header(req, "content-type"),
        .idempotency_key = bs_req_header(req, "idempotency-key"),
        .nats_msg_id = bs_req_header(req, "nats-msg-id"),
        .ce = ce.v,
        .n_ce = ce.n,
        .max_event_bytes = t->max_event_bytes,
        .max_depth = req->cfg->max_json_depth,
    };
    bs_topic_batch_t batch;
    bs_err_t err;
    if (bs_topic_events_parse(&req->arena, req->body, req->body_len, &o, &batch, &err) != 0) {
        bs_topics_count_publish(app->topics, 0, 0, 1);
        return bs_resp_error(req, &err);
    }
    publish_t *p = calloc(1, sizeof *p);
    bs_log_record_in_t *recs =
        batch.accepted ? bs_arena_calloc(&req->arena, (size_t)batch.accepted, sizeof *recs) : NULL;
    if (p) {
        p->rec_of = calloc((size_t)batch.n, sizeof *p->rec_of);
        p->err_off = calloc((size_t)batch.n, sizeof *p->err_off);
        bs_buf_init(&p->errs);
    }
    if (!p || !p->rec_of || !p->err_off || (batch.accepted && !recs)) {
        if (p)
            publish_free(p);
        return bs_resp_errorf(req, BS_ENOMEM, NULL, "out of memory");
    }
    p->topics = app->topics;
    p->n = batch.n;
    p->single = batch.single;
    int nrec = 0;
    for (int i = 0; i < batch.n; i++) {
        const bs_topic_event_t *ev = &batch.events[i];
        if (ev->code == 0) {
            recs[nrec] = ev->rec;
            p->rec_of[i] = nrec++;
            continue;
        }
        p->rec_of[i] = -1;
        p->err_off[i] = p->errs.len;
        bs_jw_obj_begin(&p->errs);
        bs_jw_key(&p->errs, "index");
        bs_jw_int(&p->errs, i);
        bs__api_render_error_obj(&p->errs, ev->code, ev->field, ev->message);
        bs_jw_obj_end(&p->errs);
        bs_buf_putc(&p->errs, '\0'); /* each one a string of its own, rendered in place later */
        p->errs.need_comma = 0;
        p->rejected++;
    }
    if (p->errs.oom) {
        publish_free(p);
        return bs_resp_errorf(req, BS_ENOMEM, NULL, "out of memory");
    }
    if (nrec == 0) { /* nothing to append: every event of the batch was refused */
        bs_buf_t b;
        bs_buf_init(&b);
        render_published(p, NULL, 0, &b);
        bs_resp_json(req, 200, &b);
        bs_buf_free(&b);
        publish_free(p);
        return;
    }
    /* The request's own copies of the names: t is borrowed until this loop iteration ends. */
    char tenant[64], name[64];
    snprintf(tenant, sizeof tenant, "%s", t->tenant);
    snprintf(name, sizeof name, "%s", t->name);
    p->d = bs_req_defer(req);
    if (!p->d) {
        publish_free(p);
        return bs_resp_errorf(req, BS_ENOMEM, NULL, "out of memory");
    }
    bs_deferred_t *d = p->d;
    int rc = bs_log_append_async(app->log, tenant, name, recs, nrec, published, p, &err);
    if (rc != 0) {
        if (rc == BS_EOVERLOAD)
            bs_deferred_header(d, "retry-after", "1");
        else if (rc == BS_ENOTFOUND) /* in the snapshot, not (yet) in the log */
            bs_err_set(&err, BS_EUNAVAIL, "topic '%s' is not ready in the log yet; retry", name);
        bs_topics_count_publish(app->topics, 0, 0, (uint64_t)batch.n);
        publish_free(p);
        bs_deferred_respond_error(d, &err);
    }
}

/* ---- reading --------------------------------------------------------------------------------- */

typedef struct {
    bs_buf_t *b;
} read_ctx_t;

static void render_record(bs_buf_t *b, const bs_log_record_t *r)
{
    bs_jw_key(b, "offset");
    bs_jw_int(b, r->offset);
    bs_jw_key(b, "id");
    bs_jw_str(b, r->id);
    bs_jw_key(b, "time");
    bs_jw_time(b, r->time_ms);
    bs_jw_key(b, "event");
    if (r->len)
        bs_jw_raw(b, r->data, r->len);
    else
        bs_jw_null(b);
}

static int read_cb(const bs_log_record_t *r, void *ud)
{
    read_ctx_t *c = ud;
    bs_jw_obj_begin(c->b);
    render_record(c->b, r);
    bs_jw_obj_end(c->b);
    return 0;
}

void bs__api_topic_read(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    bs_topic_t t;
    if (!path_topic_copy(req, &t))
        return;
    const char *fo = bs_req_query(req, "from_offset"), *ft = bs_req_query(req, "from_time");
    if (fo && ft)
        return bs_resp_errorf(req, BS_EINVAL, "from_offset",
                              "give from_offset or from_time, not both");
    int limit;
    if (bs__api_limit(req, 100, MAX_READ, &limit) < 0)
        return;
    bs_err_t err;
    int64_t from = 0;
    if (fo && bs__api_parse_offset(fo, &from) != 0)
        return bs_resp_errorf(req, BS_EINVAL, "from_offset",
                              "from_offset must be a non-negative integer, got '%.32s'", fo);
    if (ft) {
        int64_t ms;
        if (bs_time_parse_rfc3339(ft, &ms) != 0)
            return bs_resp_errorf(req, BS_EINVAL, "from_time",
                                  "from_time must be an RFC 3339 timestamp such as "
                                  "2024-05-01T12:00:00Z, got '%.40s'",
                                  ft);
        if (bs_log_offset_at(app->log, t.tenant, t.name, ms, &from, &err) != 0)
            return bs_resp_error(req, &err);
    }
    bs_buf_t b;
    bs_buf_init(&b);
    items_begin(&b);
    read_ctx_t c = {&b};
    int64_t next = from;
    int n = bs_log_read(app->log, t.tenant, t.name, from, limit, MAX_READ_BYTES, read_cb, &c, &next,
                        &err);
    if (n < 0) {
        bs_buf_free(&b);
        return bs_resp_error(req, &err);
    }
    bs_jw_arr_end(&b);
    bs_jw_key(&b, "next_offset");
    bs_jw_int(&b, next);
    bs_jw_obj_end(&b);
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
}

/* ---- consumer groups ----------------------------------------------------------------------- */

#define DEFAULT_ACK_WAIT_MS 30000
#define DEFAULT_MAX_ACK_PENDING 1000

typedef struct {
    bs_log_consumer_config_t c;
    char dead_letter[64];
} group_config_t;

/* The body of PUT .../consumers/{group}: JetStream's defaults for what is absent (ack_wait
 * 30 s, max_deliver unlimited, max_ack_pending 1000, deliver all) and the topic's
 * dead_letter. 0 or BS_EINVAL with err->field. */
static int group_config(const cJSON *j, const bs_topic_t *t, const char *group, group_config_t *g,
                        bs_err_t *err)
{
    memset(g, 0, sizeof *g);
    g->c.ack_wait_ms = DEFAULT_ACK_WAIT_MS;
    g->c.max_deliver = -1;
    g->c.max_ack_pending = DEFAULT_MAX_ACK_PENDING;
    snprintf(g->dead_letter, sizeof g->dead_letter, "%s", t->dead_letter);
    (void)group;
    if (!j)
        goto done;
    if (!cJSON_IsObject(j))
        return bs_err_set(err, BS_EINVAL, "body must be a JSON object (the group's config)");
    static const char *const allowed[] = {"ack_wait",    "max_deliver", "max_ack_pending",
                                          "dead_letter", "deliver",     NULL};
    if (bs_json_reject_unknown(j, allowed, err))
        return BS_EINVAL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "ack_wait");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v) || bs_time_parse_duration(v->valuestring, &g->c.ack_wait_ms) != 0 ||
            g->c.ack_wait_ms < 1 || g->c.ack_wait_ms > 24LL * 3600 * 1000)
            return bs_err_setf(err, BS_EINVAL, "ack_wait",
                               "ack_wait must be a duration from 1ms to 24h such as \"30s\"");
    }
    int64_t n;
    int rc = bs_json_get_int(j, "max_deliver", 0, -1, 1000000, &n, err);
    if (rc < 0 || (rc == 0 && n == 0))
        return bs_err_setf(err, BS_EINVAL, "max_deliver",
                           "max_deliver must be an integer from 1 to 1000000, or -1 (no limit)");
    if (rc == 0)
        g->c.max_deliver = (int)n;
    rc = bs_json_get_int(j, "max_ack_pending", 0, 1, 1000000, &n, err);
    if (rc < 0)
        return bs_err_setf(err, BS_EINVAL, "max_ack_pending",
                           "max_ack_pending must be an integer from 1 to 1000000");
    if (rc == 0)
        g->c.max_ack_pending = (int)n;
    v = cJSON_GetObjectItemCaseSensitive(j, "dead_letter");
    if (cJSON_IsNull(v)) {
        g->dead_letter[0] = 0;
    } else if (v) {
        if (!cJSON_IsString(v) || !bs_resources_valid_name(v->valuestring))
            return bs_err_setf(err, BS_EINVAL, "dead_letter",
                               "dead_letter must be a topic name matching [a-z0-9][a-z0-9_-]{0,62} "
                               "or null");
        snprintf(g->dead_letter, sizeof g->dead_letter, "%s", v->valuestring);
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "deliver");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v) ||
            (strcmp(v->valuestring, "all") != 0 && strcmp(v->valuestring, "new") != 0))
            return bs_err_setf(err, BS_EINVAL, "deliver", "deliver must be \"all\" or \"new\"");
        g->c.deliver_new = strcmp(v->valuestring, "new") == 0;
    }
done:
    if (g->dead_letter[0] && strcmp(g->dead_letter, t->name) == 0)
        return bs_err_setf(err, BS_EINVAL, "dead_letter",
                           "a topic cannot be its own dead letter topic");
    g->c.dead_letter = g->dead_letter[0] ? g->dead_letter : NULL;
    return 0;
}

static void render_group(bs_buf_t *b, const char *topic, const char *group,
                         const bs_log_consumer_stats_t *s, const group_config_t *g)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "topic", topic);
    cJSON_AddStringToObject(o, "group", group);
    if (g) {
        cJSON *c = cJSON_AddObjectToObject(o, "config");
        char w[32];
        snprintf(w, sizeof w, "%lldms", (long long)g->c.ack_wait_ms);
        if (g->c.ack_wait_ms % 1000 == 0)
            snprintf(w, sizeof w, "%llds", (long long)(g->c.ack_wait_ms / 1000));
        cJSON_AddStringToObject(c, "ack_wait", w);
        cJSON_AddNumberToObject(c, "max_deliver", g->c.max_deliver);
        cJSON_AddNumberToObject(c, "max_ack_pending", g->c.max_ack_pending);
        if (g->dead_letter[0])
            cJSON_AddStringToObject(c, "dead_letter", g->dead_letter);
        else
            cJSON_AddNullToObject(c, "dead_letter");
        cJSON_AddStringToObject(c, "deliver", g->c.deliver_new ? "new" : "all");
    }
    if (s)
        stats_json(o, s);
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (txt)
        bs_jw_raw(b, txt, strlen(txt));
    else
        b->oom = 1;
    free(txt);
}

/* Creates or updates a group: its dead letter topic first (created when missing). */
static int group_ensure(bs_app_t *app, const bs_topic_t *t, const char *group,
                        const group_config_t *g, bs_err_t *err)
{
    if (g->dead_letter[0]) {
        int rc = bs__api_topic_ensure_dead_letter(app, t->tenant, g->dead_letter, err);
        if (rc)
            return rc;
    }
    return bs_log_consumer_ensure(app->log, t->tenant, t->name, group, &g->c, err);
}

/* Answers with the group's object (render_group). */
static void respond_group(bs_req_t *req, int status, const bs_topic_t *t, const char *group,
                          const bs_log_consumer_stats_t *s, const group_config_t *g)
{
    bs_buf_t b;
    bs_buf_init(&b);
    render_group(&b, t->name, group, s, g);
    bs_resp_json(req, status, &b);
    bs_buf_free(&b);
}

void bs__api_consumer_put(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    bs_topic_t t;
    const char *group;
    if (!path_topic_group(req, &t, &group))
        return;
    bs_err_t err;
    cJSON *j = NULL;
    if (req->body_len > 0 && !(j = bs_req_json(req, &err)))
        return bs_resp_error(req, &err);
    group_config_t g;
    if (group_config(j, &t, group, &g, &err) != 0)
        return bs_resp_error(req, &err);
    bs_log_consumer_stats_t s;
    int existed = bs_log_consumer_stats(app->log, t.tenant, t.name, group, &s, &err) == 0;
    if (group_ensure(app, &t, group, &g, &err) != 0)
        return bs_resp_error(req, &err);
    if (group_stats(req, &t, group, &s))
        respond_group(req, existed ? 200 : 201, &t, group, &s, &g);
}

void bs__api_consumer_get(bs_req_t *req)
{
    bs_topic_t t;
    const char *group;
    bs_log_consumer_stats_t s;
    if (path_topic_group(req, &t, &group) && group_stats(req, &t, group, &s))
        respond_group(req, 200, &t, group, &s, NULL);
}

void bs__api_consumer_list(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    bs_topic_t t;
    if (!path_topic_copy(req, &t))
        return;
    bs_buf_t b;
    bs_buf_init(&b);
    items_begin(&b);
    names_t g;
    bs_err_t err;
    if (group_names(app, t.tenant, t.name, &g, &err) != 0) {
        free(g.v);
        bs_buf_free(&b);
        return bs_resp_error(req, &err);
    }
    for (int i = 0; i < g.n; i++) {
        bs_log_consumer_stats_t s;
        int ok = bs_log_consumer_stats(app->log, t.tenant, t.name, g.v[i], &s, &err) == 0;
        render_group(&b, t.name, g.v[i], ok ? &s : NULL, NULL);
    }
    free(g.v);
    bs_jw_page_end(&b, NULL);
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
}

void bs__api_consumer_delete(bs_req_t *req)
{
    bs_topic_t t;
    const char *group;
    bs_log_consumer_stats_t s;
    if (!path_topic_group(req, &t, &group) || !group_stats(req, &t, group, &s))
        return;
    bs_err_t err;
    if (bs_log_consumer_delete(APP(req)->log, t.tenant, t.name, group, &err) != 0)
        return bs_resp_error(req, &err);
    bs_resp_empty(req, 204);
}

/* ---- fetch ------------------------------------------------------------------------------- */

/* A long poll waits in slices of at most this: between two, a server that is shutting down
 * answers the fetch (empty) instead of holding its drain for the whole wait. */
#define FETCH_SLICE_MS 1000

typedef struct {
    bs_deferred_t *d;
    bs_app_t *app;
    bs_topic_t t;
    char group[64];
    int max;
    uint64_t deadline_ns; /* monotonic: the end of the client's wait */
    int created; /* the group was made by this fetch: a second ENOTFOUND is final */
} fetch_t;

static void fetch_start(fetch_t *f);
static void fetched(void *ud, int code, const bs_log_delivery_t *d, int n, const bs_err_t *err);

static int64_t wait_left_ms(const fetch_t *f)
{
    uint64_t now = bs_time_mono_ns();
    return now >= f->deadline_ns ? 0 : (int64_t)((f->deadline_ns - now) / 1000000);
}

/* One slice of the fetch. 0 (fetched will run) or the log's error. */
static int fetch_slice(fetch_t *f, bs_err_t *err)
{
    int64_t w = wait_left_ms(f);
    if (w > FETCH_SLICE_MS)
        w = FETCH_SLICE_MS;
    return bs_log_fetch_async(f->app->log, f->t.tenant, f->t.name, f->group, f->max, (int)w,
                              fetched, f, err);
}

static void respond_empty(fetch_t *f)
{
    static const char empty[] = "{\"items\":[]}";
    bs_deferred_respond_body(f->d, 200, "application/json", empty, sizeof empty - 1);
    free(f);
}

/* On a pool worker: the next slice of a long poll (not from the log's own callback). */
static void next_slice(void *arg)
{
    fetch_t *f = arg;
    bs_err_t err;
    if (fetch_slice(f, &err) != 0) {
        bs_deferred_respond_error(f->d, &err);
        free(f);
    }
}

static void fetched(void *ud, int code, const bs_log_delivery_t *d, int n, const bs_err_t *err)
{
    fetch_t *f = ud;
    if (code == BS_ENOTFOUND && !f->created) {
        fetch_start(f); /* created on first fetch (see fetch_start) */
        return;
    }
    if (code == 0 && n == 0 && wait_left_ms(f) > 0) {
        if (f->app->shutting_down || !f->app->workers ||
            bs_pool_submit(f->app->workers, next_slice, f) != 0)
            respond_empty(f);
        return;
    }
    if (code < 0) {
        bs_deferred_respond_error(f->d, err);
        free(f);
        return;
    }
    bs_buf_t b;
    bs_buf_init(&b);
    items_begin(&b);
    for (int i = 0; i < n; i++) {
        bs_jw_obj_begin(&b);
        bs_jw_key(&b, "delivery_id");
        bs_jw_str(&b, d[i].delivery_id);
        bs_jw_key(&b, "delivery");
        bs_jw_int(&b, d[i].delivery);
        render_record(&b, &d[i].rec);
        bs_jw_obj_end(&b);
    }
    bs_jw_arr_end(&b);
    bs_jw_obj_end(&b);
    bs_deferred_respond_json(f->d, 200, &b);
    bs_buf_free(&b);
    free(f);
}

/* On a pool worker: the group does not exist; create it with the defaults (and the
 * topic's dead_letter), then fetch again. */
static void create_and_fetch(void *arg)
{
    fetch_t *f = arg;
    group_config_t g;
    bs_err_t err;
    f->created = 1;
    if (group_config(NULL, &f->t, f->group, &g, &err) != 0 ||
        group_ensure(f->app, &f->t, f->group, &g, &err) != 0) {
        if (err.code == BS_ENOTFOUND)
            bs_err_set(&err, BS_EUNAVAIL, "topic '%s' is not ready in the log yet; retry",
                       f->t.name);
        bs_deferred_respond_error(f->d, &err);
        free(f);
        return;
    }
    BS_LOG(BS_LOG_INFO, "topics", "consumer group %s/%s/%s created by its first fetch",
           f->t.tenant, f->t.name, f->group);
    if (fetch_slice(f, &err) != 0) {
        bs_deferred_respond_error(f->d, &err);
        free(f);
    }
}

/* Hands the group's creation to a worker (it waits on the log). */
static void fetch_start(fetch_t *f)
{
    bs_err_t err;
    if (f->app->shutting_down || !f->app->workers ||
        bs_pool_submit(f->app->workers, create_and_fetch, f) != 0) {
        bs_err_set(&err, BS_EUNAVAIL, "cannot create consumer group '%s' now; retry", f->group);
        bs_deferred_respond_error(f->d, &err);
        free(f);
    }
}

void bs__api_consumer_fetch(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    const bs_topic_t *t = path_topic(req);
    if (!t)
        return;
    const char *group = path_group(req);
    if (!group)
        return;
    int max = 1;
    const char *ms = bs_req_query(req, "max");
    if (ms) {
        char *end;
        long v = strtol(ms, &end, 10);
        if (!*ms || *end || v < 1 || v > MAX_FETCH)
            return bs_resp_errorf(req, BS_EINVAL, "max", "max must be an integer from 1 to %d",
                                  MAX_FETCH);
        max = (int)v;
    }
    int64_t wait = 0;
    const char *ws = bs_req_query(req, "wait");
    if (ws && parse_wait(ws, &wait) != 0)
        return bs_resp_errorf(req, BS_EINVAL, "wait",
                              "wait must be a duration such as \"5s\" or \"250ms\" (or seconds), "
                              "got '%.32s'",
                              ws);
    if (wait > MAX_FETCH_WAIT_MS)
        wait = MAX_FETCH_WAIT_MS;
    fetch_t *f = calloc(1, sizeof *f);
    if (!f)
        return bs_resp_errorf(req, BS_ENOMEM, NULL, "out of memory");
    f->app = app;
    f->t = *t;
    snprintf(f->group, sizeof f->group, "%s", group);
    f->max = max;
    f->deadline_ns = bs_time_mono_ns() + (uint64_t)wait * 1000000u;
    f->d = bs_req_defer(req);
    if (!f->d) {
        free(f);
        return bs_resp_errorf(req, BS_ENOMEM, NULL, "out of memory");
    }
    bs_err_t err;
    int rc = fetch_slice(f, &err);
    if (rc == BS_ENOTFOUND)
        return fetch_start(f);
    if (rc != 0) {
        bs_deferred_t *d = f->d;
        free(f);
        log_error(d, req, &err);
    }
}

/* ---- ack, nack, in_progress ---------------------------------------------------------------- */

enum { OP_ACK, OP_NACK, OP_PROGRESS };

static void settle(bs_req_t *req, int op)
{
    bs_app_t *app = APP(req);
    bs_topic_t t;
    const char *group;
    if (!path_topic_group(req, &t, &group))
        return;
    bs_err_t err;
    cJSON *j = bs_req_json(req, &err);
    if (!j)
        return bs_resp_error(req, &err);
    if (!cJSON_IsObject(j))
        return bs_resp_errorf(req, BS_EINVAL, NULL,
                              "body must be {\"delivery_ids\": [...]} or {\"delivery_id\": ...}");
    static const char *const allowed_ack[] = {"delivery_ids", "delivery_id", NULL};
    static const char *const allowed_nack[] = {"delivery_ids", "delivery_id", "delay", NULL};
    if (bs_json_reject_unknown(j, op == OP_NACK ? allowed_nack : allowed_ack, &err))
        return bs_resp_error(req, &err);
    int64_t delay = 0;
    const cJSON *dv = cJSON_GetObjectItemCaseSensitive(j, "delay");
    if (dv && !cJSON_IsNull(dv) &&
        (!cJSON_IsString(dv) || bs_time_parse_duration(dv->valuestring, &delay) != 0))
        return bs_resp_errorf(req, BS_EINVAL, "delay",
                              "delay must be a duration such as \"5s\" (\"0\": at the next fetch)");
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(j, "delivery_ids");
    const cJSON *one = cJSON_GetObjectItemCaseSensitive(j, "delivery_id");
    if ((ids && one) || (!ids && !one))
        return bs_resp_errorf(req, BS_EINVAL, "delivery_ids",
                              "give delivery_ids (a list) or delivery_id (one)");
    if (one && !cJSON_IsString(one))
        return bs_resp_errorf(req, BS_EINVAL, "delivery_id", "delivery_id must be a string");
    if (ids && (!cJSON_IsArray(ids) || cJSON_GetArraySize(ids) < 1 ||
                cJSON_GetArraySize(ids) > MAX_IDS))
        return bs_resp_errorf(req, BS_EINVAL, "delivery_ids",
                              "delivery_ids must be a list of 1 to %d delivery ids", MAX_IDS);
    if (ids)
        for (const cJSON *e = ids->child; e; e = e->next)
            if (!cJSON_IsString(e))
                return bs_resp_errorf(req, BS_EINVAL, "delivery_ids",
                                      "delivery_ids must hold strings");
    /* An unknown group is the request's 404 whatever its ids look like (backends check the
     * ids' shape and the group in different orders). */
    bs_log_consumer_stats_t gs;
    if (!group_stats(req, &t, group, &gs))
        return;
    bs_buf_t b;
    bs_buf_init(&b);
    items_begin(&b);
    int ok = 0, failed = 0;
    for (const cJSON *e = ids ? ids->child : one; e; e = ids ? e->next : NULL) {
        const char *id = e->valuestring;
        int rc;
        if (strlen(id) > BS_LOG_DELIVERY_ID_MAX)
            rc = bs_err_setf(&err, BS_EINVAL, "delivery_id", "not a delivery id of this group");
        else if (op == OP_ACK)
            rc = bs_log_ack(app->log, t.tenant, t.name, group, id, &err);
        else if (op == OP_NACK)
            rc = bs_log_nack(app->log, t.tenant, t.name, group, id, delay, &err);
        else
            rc = bs_log_in_progress(app->log, t.tenant, t.name, group, id, &err);
        if (rc == BS_ENOTFOUND) { /* the group (or topic) itself */
            bs_buf_free(&b);
            return bs_resp_error(req, &err);
        }
        bs_jw_obj_begin(&b);
        bs_jw_key(&b, "delivery_id");
        bs_jw_str(&b, id);
        bs_jw_key(&b, "ok");
        bs_jw_bool(&b, rc == 0);
        if (rc) {
            bs__api_render_error_obj(&b, rc, err.field, err.msg);
            failed++;
        } else {
            ok++;
        }
        bs_jw_obj_end(&b);
    }
    bs_jw_arr_end(&b);
    bs_jw_key(&b, "ok");
    bs_jw_int(&b, ok);
    bs_jw_key(&b, "failed");
    bs_jw_int(&b, failed);
    bs_jw_obj_end(&b);
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
}

void bs__api_consumer_ack(bs_req_t *req) { settle(req, OP_ACK); }
void bs__api_consumer_nack(bs_req_t *req) { settle(req, OP_NACK); }
void bs__api_consumer_in_progress(bs_req_t *req) { settle(req, OP_PROGRESS); }

/* ---- replay ------------------------------------------------------------------------------ */

#define REPLAY_DEFAULT 1000
#define REPLAY_MAX 10000

typedef struct {
    int64_t offset;
    char topic[64];
    char id[129];
    char *event; /* malloc'd: the original event's JSON text as published */
    size_t len;
    const char *why; /* not replayable: the reason */
} dead_t;

typedef struct {
    dead_t *v;
    int n, cap;
    int64_t to; /* exclusive; -1: none */
    int64_t last;
    int stop_at_to, oom;
} replay_ctx_t;

/* A dead letter is {"topic", "offset", "deliveries", "group", "event": <the data>}. */
static int replay_cb(const bs_log_record_t *r, void *ud)
{
    replay_ctx_t *c = ud;
    if (c->to >= 0 && r->offset >= c->to) {
        c->stop_at_to = 1;
        return 1;
    }
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 64;
        dead_t *v = realloc(c->v, (size_t)cap * sizeof *v);
        if (!v) {
            c->oom = 1;
            return 1;
        }
        c->v = v;
        c->cap = cap;
    }
    dead_t *d = &c->v[c->n++];
    memset(d, 0, sizeof *d);
    d->offset = r->offset;
    c->last = r->offset;
    snprintf(d->id, sizeof d->id, "%s", r->id);
    cJSON *j = cJSON_ParseWithLength(r->data, r->len);
    const cJSON *tp = cJSON_GetObjectItemCaseSensitive(j, "topic");
    const char *ev;
    size_t evlen;
    if (!cJSON_IsObject(j) || !cJSON_IsString(tp) ||
        !bs_topic_json_member(r->data, r->len, "event", &ev, &evlen) || !evlen) {
        d->why = "not a dead letter (no topic and event)";
    } else {
        snprintf(d->topic, sizeof d->topic, "%s", tp->valuestring);
        d->event = malloc(evlen + 1);
        if (d->event) {
            memcpy(d->event, ev, evlen);
            d->event[evlen] = 0;
            d->len = evlen;
        } else {
            d->why = "out of memory";
        }
    }
    cJSON_Delete(j);
    return 0;
}

void bs__api_topic_replay(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    bs_topic_t t;
    if (!path_topic_copy(req, &t))
        return;
    bs_err_t err;
    cJSON *j = NULL;
    if (req->body_len > 0 && !(j = bs_req_json(req, &err)))
        return bs_resp_error(req, &err);
    if (j && !cJSON_IsObject(j))
        return bs_resp_errorf(req, BS_EINVAL, NULL, "body must be a JSON object");
    static const char *const allowed[] = {"from_offset", "to_offset", "limit", NULL};
    if (j && bs_json_reject_unknown(j, allowed, &err))
        return bs_resp_error(req, &err);
    int64_t from = 0, to = -1, limit = REPLAY_DEFAULT;
    if (j && (bs_json_get_int(j, "from_offset", 0, 0, INT64_MAX / 2, &from, &err) < 0 ||
              bs_json_get_int(j, "to_offset", 0, 0, INT64_MAX / 2, &to, &err) < 0 ||
              bs_json_get_int(j, "limit", 0, 1, REPLAY_MAX, &limit, &err) < 0))
        return bs_resp_error(req, &err);
    if (to >= 0 && to < from)
        return bs_resp_errorf(req, BS_EINVAL, "to_offset",
                              "to_offset (%lld) must not be below from_offset (%lld)",
                              (long long)to, (long long)from);
    replay_ctx_t c = {.to = to, .last = -1};
    int64_t next = from;
    int n = bs_log_read(app->log, t.tenant, t.name, from, (int)limit, 64u << 20, replay_cb, &c,
                        &next, &err);
    if (n < 0) {
        free(c.v);
        return bs_resp_error(req, &err);
    }
    if (c.stop_at_to)
        next = to;
    else if (c.oom)
        next = c.last + 1;
    /* Re-publish in dead-letter order, one append per run of the same target topic. */
    int replayed = 0, skipped = 0;
    cJSON *errors = cJSON_CreateArray(), *by_topic = cJSON_CreateObject();
    for (int i = 0; i < c.n;) {
        dead_t *d = &c.v[i];
        bs_topic_t target;
        if (d->why || !bs_topics_get(app->topics, t.tenant, d->topic, &target)) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "offset", (double)d->offset);
            cJSON_AddStringToObject(e, "error",
                                    d->why ? d->why : "the topic it came from does not exist");
            if (d->topic[0])
                cJSON_AddStringToObject(e, "topic", d->topic);
            cJSON_AddItemToArray(errors, e);
            skipped++;
            i++;
            continue;
        }
        int k = i;
        while (k < c.n && k - i < 1000 && !c.v[k].why && strcmp(c.v[k].topic, d->topic) == 0)
            k++;
        int cnt = k - i;
        bs_log_record_in_t *recs = calloc((size_t)cnt, sizeof *recs);
        bs_log_append_result_t *res = calloc((size_t)cnt, sizeof *res);
        int rc = recs && res ? 0 : bs_err_set(&err, BS_ENOMEM, "out of memory");
        for (int m = 0; !rc && m < cnt; m++) {
            /* The original's id; no dedup key: a replay must deliver again. */
            recs[m].id = c.v[i + m].id[0] ? c.v[i + m].id : NULL;
            recs[m].data = c.v[i + m].event;
            recs[m].len = c.v[i + m].len;
        }
        if (!rc)
            rc = bs_log_append(app->log, t.tenant, target.name, recs, cnt, res, &err);
        int done = 0;
        for (int m = 0; m < cnt; m++) {
            if (rc == 0 && res[m].code == 0) {
                done++;
                continue;
            }
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "offset", (double)c.v[i + m].offset);
            cJSON_AddStringToObject(e, "topic", d->topic);
            cJSON_AddStringToObject(e, "error", rc ? err.msg : bs_err_desc(res[m].code));
            cJSON_AddItemToArray(errors, e);
            skipped++;
        }
        replayed += done;
        const cJSON *prev = cJSON_GetObjectItemCaseSensitive(by_topic, d->topic);
        if (prev)
            cJSON_SetNumberValue((cJSON *)prev, prev->valuedouble + done);
        else
            cJSON_AddNumberToObject(by_topic, d->topic, done);
        free(recs);
        free(res);
        i = k;
    }
    for (int i = 0; i < c.n; i++)
        free(c.v[i].event);
    free(c.v);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "read", c.n);
    cJSON_AddNumberToObject(o, "replayed", replayed);
    cJSON_AddNumberToObject(o, "skipped", skipped);
    cJSON_AddItemToObject(o, "topics", by_topic);
    cJSON_AddItemToObject(o, "errors", errors);
    cJSON_AddNumberToObject(o, "next_offset", (double)next);
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!txt)
        return bs_resp_errorf(req, BS_ENOMEM, NULL, "out of memory");
    bs_resp_body(req, 200, "application/json", txt, strlen(txt));
    free(txt);
}
