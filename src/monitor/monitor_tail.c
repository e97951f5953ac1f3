/*
 * The monitor's tails: one thread per tracked tenant reads its topics `predictions` and
 * `feedback` from the shared log (bs_log_read, then bs_log_watch to sleep until either
 * grows) into the tenant's tables.
 *
 * Order of a pass: read a batch of feedback (not applied yet), then read predictions
 * until a read returns nothing, then apply the feedback batch. A feedback record is
 * appended only after its prediction was in some replica's table, so the prediction was
 * readable before the feedback batch was read, and the pass has it by the time the batch
 * is applied. Where the backends' streams can still interleave (JetStream tails learn of
 * new records through a subscription per stream), feedback whose id is unknown waits in
 * a small per-tenant list and is retried after each batch of predictions, for
 * PENDING_TTL_MS. On start both tails begin at bs_log_offset_at(now - window): the table
 * and its joins rebuild from the log after a restart.
 *
 * The rows this process predicted reach the tables through the local feed
 * (monitor_feed.c) instead; their records begin with {"origin":"<this run's id>", and
 * pred_cb drops those with one memcmp before any scan or parse. Reading them still costs
 * the log read (seg_read); on the segments backend only this process writes the log, so a
 * later step could stop reading its own run's records altogether — not done: the memcmp
 * is simple and keeps records from any other writer of the topic.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/numfmt.h"
#include "base/time.h"
#include "monitor/monitor_int.h"
#include "serving/predlog.h"
#include "store/log.h"

#define BATCH 1000
#define BATCH_BYTES (8u << 20)
#define IDLE_MS 1000

typedef struct {
    cJSON **v;
    int64_t *time_ms;
    int n, cap;
    uint64_t bad;
} batch_t;

static int batch_cb(const bs_log_record_t *r, void *ud)
{
    batch_t *b = ud;
    if (b->n == b->cap)
        return 1; /* cannot happen: cap is the read's max */
    cJSON *j = r->len ? cJSON_ParseWithLength(r->data, r->len) : NULL;
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        b->bad++;
        return 0;
    }
    b->v[b->n] = j;
    b->time_ms[b->n] = r->time_ms;
    b->n++;
    return 0;
}

static void batch_clear(batch_t *b)
{
    for (int i = 0; i < b->n; i++)
        cJSON_Delete(b->v[i]);
    b->n = 0;
    b->bad = 0;
}

static const char *str_member(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The class list and probabilities of a classification output {label, probabilities}. */
static int class_output(table_t *tb, const cJSON *out, entry_t *e)
{
    const cJSON *label = cJSON_GetObjectItemCaseSensitive(out, "label");
    const cJSON *probs = cJSON_GetObjectItemCaseSensitive(out, "probabilities");
    char num[40];
    const char *ltext = NULL;
    if (cJSON_IsString(label)) {
        ltext = label->valuestring;
    } else if (cJSON_IsNumber(label)) {
        if (!bs_fmt_json_double(label->valuedouble, num))
            snprintf(num, sizeof num, "%.17g", label->valuedouble);
        ltext = num;
    } else if (cJSON_IsBool(label)) {
        ltext = cJSON_IsTrue(label) ? "true" : "false";
    }
    int k = cJSON_IsObject(probs) ? cJSON_GetArraySize(probs) : 0;
    if (k > MAX_CLASSES)
        return -1;
    if (k == 0) { /* a label without probabilities: a class list of its own */
        if (!ltext)
            return -1;
        char *one[1] = {(char *)ltext};
        int c = bs__monitor_cset(tb, one, 1);
        if (c < 0)
            return -1;
        e->cset = (uint16_t)c;
        e->pred = 0;
        e->flags |= E_CLASS;
        return 0;
    }
    char **names = malloc((size_t)k * sizeof *names);
    double *p = k > 2 ? malloc((size_t)k * sizeof *p) : NULL;
    if (!names || (k > 2 && !p)) {
        free(names);
        free(p);
        return -1;
    }
    double *dst = k > 2 ? p : e->p2;
    int i = 0, ok = 1, best = 0, pred = -1;
    for (const cJSON *c = probs->child; c; c = c->next, i++) {
        names[i] = c->string ? c->string : "";
        if (!cJSON_IsNumber(c) || !isfinite(c->valuedouble))
            ok = 0;
        dst[i] = ok ? c->valuedouble : 0;
        if (dst[i] > dst[best])
            best = i;
        if (pred < 0 && ltext) {
            double a, b;
            char *end;
            if (strcmp(names[i], ltext) == 0)
                pred = i;
            else if (cJSON_IsNumber(label) &&
                     (a = strtod(names[i], &end), *end == 0 && *names[i]) &&
                     (b = label->valuedouble, a == b))
                pred = i;
        }
    }
    int cs = bs__monitor_cset(tb, names, k);
    free(names);
    if (cs < 0) {
        free(p);
        return -1;
    }
    e->cset = (uint16_t)cs;
    e->pred = (int16_t)(pred >= 0 ? pred : best);
    e->flags |= E_CLASS;
    if (ok) {
        e->flags |= E_PROBS;
        e->pk = p;
    } else {
        free(p);
    }
    return 0;
}

/* ---- prediction records ----------------------------------------------------------------
 * Parsed in the read callback (outside the lock) into a view; the fast path scans the
 * record's top level (bs_predlog_fields, and one pass of our own for latency_ms and
 * output) and parses only the output object, so the inputs are never parsed. Records it
 * cannot take (escapes in the names, no prediction_id) go through a full parse. */

typedef struct {
    char id[129], endpoint[64], variant[64];
    int64_t time_ms; /* the record's "time", else the log's */
    int version, shadow, error;
    double latency; /* NaN when absent */
    int out_kind;   /* 0 none, 1 number, 2 object, 3 anything else */
    double out_num;
    const cJSON *out; /* out_kind 2 */
    cJSON *tree;      /* owned: the output's or the whole record's */
} pview_t;

typedef struct {
    pview_t *v;
    int n, cap;
    uint64_t bad;
    const char *own; /* how this run's records begin (already in the tables) */
    size_t own_len;
    uint64_t skipped;
} pbatch_t;

static const char *skip_ws(const char *s, const char *e)
{
    while (s < e && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
        s++;
    return s;
}

/* The end of the JSON value at s (bounded by e), or NULL. */
static const char *value_end(const char *s, const char *e)
{
    if (s >= e)
        return NULL;
    if (*s == '"') {
        for (s++; s < e; s++) {
            if (*s == '\\')
                s++;
            else if (*s == '"')
                return s + 1;
        }
        return NULL;
    }
    if (*s == '{' || *s == '[') {
        int depth = 0;
        for (; s < e; s++) {
            if (*s == '"') {
                const char *q = value_end(s, e);
                if (!q)
                    return NULL;
                s = q - 1;
            } else if (*s == '{' || *s == '[') {
                depth++;
            } else if (*s == '}' || *s == ']') {
                if (--depth == 0)
                    return s + 1;
            }
        }
        return NULL;
    }
    while (s < e && *s != ',' && *s != '}' && *s != ']' && *s != ' ' && *s != '\n' && *s != '\t' &&
           *s != '\r')
        s++;
    return s;
}

/* The raw values of the top-level members latency_ms and output. 0, or -1 (malformed). */
static int scan_members(const char *s, size_t len, const char **lat, size_t *lat_len,
                        const char **out, size_t *out_len)
{
    const char *e = s + len;
    *lat = *out = NULL;
    s = skip_ws(s, e);
    if (s >= e || *s != '{')
        return -1;
    s = skip_ws(s + 1, e);
    while (s < e && *s != '}') {
        const char *k = s, *ke = value_end(s, e);
        if (*s != '"' || !ke)
            return -1;
        s = skip_ws(ke, e);
        if (s >= e || *s != ':')
            return -1;
        const char *v = skip_ws(s + 1, e), *ve = value_end(v, e);
        if (!ve || ve == v)
            return -1;
        size_t kl = (size_t)(ke - k);
        if (kl == 12 && memcmp(k, "\"latency_ms\"", 12) == 0) {
            *lat = v;
            *lat_len = (size_t)(ve - v);
        } else if (kl == 8 && memcmp(k, "\"output\"", 8) == 0) {
            *out = v;
            *out_len = (size_t)(ve - v);
        }
        s = skip_ws(ve, e);
        if (s < e && *s == ',')
            s = skip_ws(s + 1, e);
    }
    return s < e ? 0 : -1;
}

static int copy_name(char *dst, size_t cap, const char *s, size_t n)
{
    if (!s || n >= cap || memchr(s, '\\', n))
        return -1;
    memcpy(dst, s, n);
    dst[n] = 0;
    return 0;
}

static int number_of(const char *s, size_t n, double *v)
{
    char buf[64];
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    double d = strtod(buf, &end);
    if (*end || !isfinite(d))
        return -1;
    *v = d;
    return 0;
}

static int view_fast(const bs_log_record_t *r, pview_t *pv)
{
    bs_predlog_fields_t f;
    const char *lat, *out;
    size_t lat_len = 0, out_len = 0;
    if (bs_predlog_fields(r->data, r->len, &f) != 0 ||
        copy_name(pv->id, sizeof pv->id, f.prediction_id, f.prediction_id_len) ||
        copy_name(pv->endpoint, sizeof pv->endpoint, f.endpoint, f.endpoint_len) ||
        (f.variant && copy_name(pv->variant, sizeof pv->variant, f.variant, f.variant_len)) ||
        scan_members(r->data, r->len, &lat, &lat_len, &out, &out_len) != 0)
        return -1;
    pv->time_ms = f.time_ms ? f.time_ms : r->time_ms;
    pv->version = f.version > 0 && f.version < 2000000000 ? (int)f.version : 0;
    pv->shadow = f.shadow;
    pv->error = f.error;
    if (!lat || number_of(lat, lat_len, &pv->latency) != 0)
        pv->latency = NAN;
    if (!out) {
        pv->out_kind = 0;
    } else if (*out == '{') {
        pv->tree = cJSON_ParseWithLength(out, out_len);
        if (!cJSON_IsObject(pv->tree))
            return -1;
        pv->out = pv->tree;
        pv->out_kind = 2;
    } else if (number_of(out, out_len, &pv->out_num) == 0) {
        pv->out_kind = 1;
    } else {
        pv->out_kind = 3;
    }
    return 0;
}

static int view_slow(const bs_log_record_t *r, pview_t *pv)
{
    cJSON *j = r->len ? cJSON_ParseWithLength(r->data, r->len) : NULL;
    pv->tree = j;
    const char *id = str_member(j, "prediction_id"), *ep = str_member(j, "endpoint");
    const char *variant = str_member(j, "variant"), *ts = str_member(j, "time");
    if (!cJSON_IsObject(j) || !id || !*id || !ep ||
        copy_name(pv->id, sizeof pv->id, id, strlen(id)) ||
        copy_name(pv->endpoint, sizeof pv->endpoint, ep, strlen(ep)) ||
        (variant && copy_name(pv->variant, sizeof pv->variant, variant, strlen(variant))))
        return -1;
    if (!ts || bs_time_parse_rfc3339(ts, &pv->time_ms) != 0)
        pv->time_ms = r->time_ms;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "version");
    pv->version =
        cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 2e9 ? (int)v->valuedouble : 0;
    pv->shadow = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "shadow"));
    pv->error = cJSON_GetObjectItemCaseSensitive(j, "error") != NULL;
    v = cJSON_GetObjectItemCaseSensitive(j, "latency_ms");
    pv->latency = cJSON_IsNumber(v) && isfinite(v->valuedouble) ? v->valuedouble : NAN;
    const cJSON *out = cJSON_GetObjectItemCaseSensitive(j, "output");
    if (!out) {
        pv->out_kind = 0;
    } else if (cJSON_IsObject(out)) {
        pv->out = out;
        pv->out_kind = 2;
    } else if (cJSON_IsNumber(out) && isfinite(out->valuedouble)) {
        pv->out_num = out->valuedouble;
        pv->out_kind = 1;
    } else {
        pv->out_kind = 3;
    }
    return 0;
}

static int pred_cb(const bs_log_record_t *r, void *ud)
{
    pbatch_t *b = ud;
    if (b->n == b->cap)
        return 1; /* cannot happen: cap is the read's max */
    if (r->len > b->own_len && memcmp(r->data, b->own, b->own_len) == 0) {
        b->skipped++; /* observed by this process through the local feed */
        return 0;
    }
    pview_t *pv = &b->v[b->n];
    memset(pv, 0, sizeof *pv);
    if (view_fast(r, pv) != 0) {
        cJSON_Delete(pv->tree);
        memset(pv, 0, sizeof *pv);
        if (view_slow(r, pv) != 0) {
            cJSON_Delete(pv->tree);
            b->bad++;
            return 0;
        }
    }
    b->n++;
    return 0;
}

static void pbatch_clear(pbatch_t *b)
{
    for (int i = 0; i < b->n; i++)
        cJSON_Delete(b->v[i].tree);
    b->n = 0;
    b->bad = 0;
}

/* One prediction record into its table (under m->mu). */
static void add_prediction(bs_monitor_t *m, tenant_t *t, const pview_t *pv, int64_t floor)
{
    if (pv->time_ms < floor)
        return; /* already out of the window */
    table_t *tb = pv->endpoint[0] ? bs__monitor_table(t, pv->endpoint, 1) : NULL;
    if (!tb || !pv->id[0]) {
        t->bad_records++;
        return;
    }
    entry_t e;
    memset(&e, 0, sizeof e);
    e.time_ms = pv->time_ms;
    e.out = NAN;
    e.label_num = NAN;
    e.label_sid = -1;
    e.pred = -1;
    e.version = pv->version;
    int vi = bs__monitor_variant(tb, pv->variant);
    if (vi < 0) {
        t->bad_records++;
        return;
    }
    e.variant = (uint16_t)vi;
    if (pv->shadow)
        e.flags |= E_SHADOW;
    e.latency_ms = pv->latency;
    if (pv->error && !pv->out_kind) {
        e.flags |= E_ERROR;
    } else if (pv->out_kind == 1) {
        e.out = pv->out_num;
        e.flags |= E_VALUE;
    } else if (pv->out_kind == 2) {
        if (class_output(tb, pv->out, &e) != 0)
            t->bad_records++;
    }
    if (bs__monitor_id_set(&e, pv->id) != 0) {
        bs__monitor_entry_free(&e);
        return;
    }
    bs__monitor_insert(m, t, tb, &e);
}

int bs__monitor_join(bs_monitor_t *m, tenant_t *t, const char *id, const cJSON *label, int is_value)
{
    table_t *tb;
    entry_t *e = bs__monitor_lookup(t, id, &tb);
    if (!e)
        return 0;
    e->label_num = NAN;
    e->label_sid = -1;
    if (cJSON_IsNumber(label)) {
        e->label_num = label->valuedouble;
    } else if (!is_value && cJSON_IsString(label)) {
        e->label_sid = bs__monitor_label(tb, label->valuestring, 0, 0);
        char *end;
        double d = strtod(label->valuestring, &end);
        if (*label->valuestring && !*end && isfinite(d))
            e->label_num = d;
    } else if (!is_value && cJSON_IsBool(label)) {
        e->label_sid = bs__monitor_label(tb, NULL, 1, cJSON_IsTrue(label));
    } else {
        return 1; /* not a label the record can carry: known, not joined */
    }
    e->flags |= E_LABELLED;
    m->feedback_joined++;
    return 1;
}

/* The label member of a feedback record: "label", else "value". */
static const cJSON *label_of(const cJSON *r, int *is_value)
{
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(r, "label");
    *is_value = 0;
    if (!l) {
        l = cJSON_GetObjectItemCaseSensitive(r, "value");
        *is_value = 1;
    }
    return l;
}

static void pending_add(tenant_t *t, const char *id, const cJSON *label, int is_value, int64_t now)
{
    if (t->n_pending >= MAX_PENDING)
        return;
    if (!t->pending && !(t->pending = calloc(MAX_PENDING, sizeof *t->pending)))
        return;
    pending_t *p = &t->pending[t->n_pending];
    p->id = strdup(id);
    p->label_json = cJSON_PrintUnformatted(label);
    p->is_value = is_value;
    p->seen_ms = now;
    if (!p->id || !p->label_json) {
        free(p->id);
        free(p->label_json);
        return;
    }
    t->n_pending++;
}

/* Retries the waiting feedback (under m->mu), in the order it was read. */
static void pending_retry(bs_monitor_t *m, tenant_t *t, int64_t now)
{
    int w = 0;
    for (int i = 0; i < t->n_pending; i++) {
        pending_t *p = &t->pending[i];
        cJSON *l = cJSON_Parse(p->label_json);
        int done = now - p->seen_ms > PENDING_TTL_MS || !l ||
                   bs__monitor_join(m, t, p->id, l, p->is_value);
        cJSON_Delete(l);
        if (done) {
            free(p->id);
            free(p->label_json);
        } else {
            t->pending[w++] = *p;
        }
    }
    t->n_pending = w;
}

static int stopping(bs_monitor_t *m)
{
    pthread_mutex_lock(&m->mu);
    int s = m->stopping;
    pthread_mutex_unlock(&m->mu);
    return s;
}

static void on_wake(void *ud)
{
    tenant_t *t = ud;
    pthread_mutex_lock(&t->wmu);
    t->woken = 1;
    pthread_cond_signal(&t->wcv);
    pthread_mutex_unlock(&t->wmu);
}

/* Sleeps until a watch fires, the monitor stops or ms pass. */
static void nap(tenant_t *t, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&t->wmu);
    while (!t->woken)
        if (pthread_cond_timedwait(&t->wcv, &t->wmu, &ts) != 0)
            break;
    t->woken = 0;
    pthread_mutex_unlock(&t->wmu);
}

/* The start positions: the first records of the window. 0 or an error. */
static int start_positions(bs_monitor_t *m, tenant_t *t, bs_err_t *err)
{
    int64_t from = bs_time_wall_ms() - m->window_ms, p, f;
    int rc = bs_log_offset_at(m->log, t->name, BS_PREDLOG_TOPIC, from, &p, err);
    if (rc == 0)
        rc = bs_log_offset_at(m->log, t->name, BS_MONITOR_FEEDBACK_TOPIC, from, &f, err);
    if (rc)
        return rc;
    pthread_mutex_lock(&m->mu);
    t->pred_next = p;
    t->fb_next = f;
    t->started = 1;
    pthread_cond_broadcast(&m->progress);
    pthread_mutex_unlock(&m->mu);
    return 0;
}

/* A topic that was dropped and made again restarts its offsets: follow it. */
static void check_rewind(bs_monitor_t *m, tenant_t *t)
{
    bs_log_topic_stats_t s;
    bs_err_t err;
    int64_t p, f;
    pthread_mutex_lock(&m->mu);
    p = t->pred_next;
    f = t->fb_next;
    pthread_mutex_unlock(&m->mu);
    if (bs_log_topic_stats(m->log, t->name, BS_PREDLOG_TOPIC, &s, &err) == 0 && s.next_offset < p)
        p = s.first_offset;
    if (bs_log_topic_stats(m->log, t->name, BS_MONITOR_FEEDBACK_TOPIC, &s, &err) == 0 &&
        s.next_offset < f)
        f = s.first_offset;
    pthread_mutex_lock(&m->mu);
    t->pred_next = p;
    t->fb_next = f;
    pthread_mutex_unlock(&m->mu);
}

static void *tail_main(void *arg)
{
    tenant_t *t = arg;
    bs_monitor_t *m = t->m;
    batch_t fb = {0};
    pbatch_t pr = {0};
    fb.cap = pr.cap = BATCH;
    pr.own = m->origin_prefix;
    pr.own_len = m->origin_len;
    fb.v = calloc(BATCH, sizeof *fb.v);
    fb.time_ms = calloc(BATCH, sizeof *fb.time_ms);
    pr.v = calloc(BATCH, sizeof *pr.v);
    if (!fb.v || !fb.time_ms || !pr.v) {
        BS_LOG(BS_LOG_ERROR, "monitor", "tail of tenant %s: out of memory", t->name);
        goto done;
    }
    bs_err_t err;
    int logged = 0;
    while (!stopping(m) && start_positions(m, t, &err) != 0) {
        if (!logged++)
            BS_LOG(BS_LOG_WARN, "monitor", "tail of tenant %s cannot start yet: %s (retrying)",
                   t->name, err.msg);
        nap(t, IDLE_MS);
    }
    int64_t last_check = bs_time_wall_ms();
    while (!stopping(m)) {
        int64_t p, f, fnext, pnext;
        pthread_mutex_lock(&m->mu);
        p = t->pred_next;
        f = t->fb_next;
        pthread_mutex_unlock(&m->mu);
        /* 1: a batch of feedback, held */
        int nf = bs_log_read(m->log, t->name, BS_MONITOR_FEEDBACK_TOPIC, f, BATCH, BATCH_BYTES,
                             batch_cb, &fb, &fnext, &err);
        int failed = nf < 0;
        /* 2: predictions until a read returns nothing */
        for (;;) {
            int np = bs_log_read(m->log, t->name, BS_PREDLOG_TOPIC, p, BATCH, BATCH_BYTES, pred_cb,
                                 &pr, &pnext, &err);
            if (np < 0) {
                failed = 1;
                break;
            }
            int64_t now = bs_time_wall_ms();
            pthread_mutex_lock(&m->mu);
            t->bad_records += pr.bad;
            for (int i = 0; i < pr.n; i++)
                add_prediction(m, t, &pr.v[i], now - m->window_ms);
            t->pred_next = pnext > p ? pnext : p;
            if (t->n_pending)
                pending_retry(m, t, now);
            bs__monitor_evict(m, now);
            pthread_cond_broadcast(&m->progress);
            pthread_mutex_unlock(&m->mu);
            pbatch_clear(&pr);
            if (np == 0 || pnext <= p)
                break;
            p = pnext;
        }
        /* 3: the feedback batch */
        if (nf > 0) {
            int64_t now = bs_time_wall_ms();
            pthread_mutex_lock(&m->mu);
            t->bad_records += fb.bad;
            for (int i = 0; i < fb.n; i++) {
                const char *id = str_member(fb.v[i], "prediction_id");
                int is_value;
                const cJSON *l = label_of(fb.v[i], &is_value);
                if (!id || !l) {
                    t->bad_records++;
                    continue;
                }
                if (!bs__monitor_join(m, t, id, l, is_value))
                    pending_add(t, id, l, is_value, now);
            }
            t->fb_next = fnext > f ? fnext : f;
            pthread_cond_broadcast(&m->progress);
            pthread_mutex_unlock(&m->mu);
            batch_clear(&fb);
            continue;
        }
        if (failed) { /* the topic is gone (dropped) or the disk failed: retry later */
            nap(t, IDLE_MS);
            check_rewind(m, t);
            continue;
        }
        /* 4: caught up on both: sleep until either grows */
        pthread_mutex_lock(&m->mu);
        p = t->pred_next;
        f = t->fb_next;
        pthread_mutex_unlock(&m->mu);
        int64_t wp = bs_log_watch(m->log, t->name, BS_PREDLOG_TOPIC, p, on_wake, t, &err);
        int64_t wf = bs_log_watch(m->log, t->name, BS_MONITOR_FEEDBACK_TOPIC, f, on_wake, t, &err);
        if (!stopping(m))
            nap(t, IDLE_MS);
        if (wp > 0)
            bs_log_unwatch(m->log, wp);
        if (wf > 0)
            bs_log_unwatch(m->log, wf);
        int64_t now = bs_time_wall_ms();
        pthread_mutex_lock(&m->mu);
        bs__monitor_evict(m, now);
        if (t->n_pending)
            pending_retry(m, t, now);
        pthread_mutex_unlock(&m->mu);
        if (now - last_check >= IDLE_MS) {
            check_rewind(m, t);
            last_check = now;
        }
    }
done:
    batch_clear(&fb);
    pbatch_clear(&pr);
    free(fb.v);
    free(fb.time_ms);
    free(pr.v);
    return NULL;
}

int bs__monitor_tail_start(bs_monitor_t *m, tenant_t *t, bs_err_t *err)
{
    (void)m;
    if (pthread_create(&t->thread, NULL, tail_main, t) != 0)
        return bs_err_set(err, BS_ENOMEM, "cannot start the monitor's tail thread");
    return 0;
}

void bs__monitor_tail_stop(bs_monitor_t *m, tenant_t *t)
{
    (void)m;
    if (!t->thread_started)
        return;
    on_wake(t);
    pthread_join(t->thread, NULL);
    t->thread_started = 0;
}
