/*
 * Topics (topics.h): the Topic spec, the snapshot of every topic, and the
 * parsing of publish bodies into log records.
 *
 * The snapshot is a sorted array of bs_topic_t swapped by an atomic pointer;
 * the old one is retired through QSBR (base/rcu.h), so I/O threads read it
 * without a lock. bs_topics_get copies under get_mu, which the writer also
 * holds for the swap: a thread that is no RCU reader never sees a snapshot
 * after its retirement. Rebuilds are serialised by rebuild_mu; each remembers
 * which spec text it ensured per topic, so an unchanged topic costs the log
 * nothing the next time.
 *
 * Parsing keeps every event's text as sent: a JSON array is parsed whole (so
 * a body that is not JSON is the request's error) and then cut into its
 * elements' byte ranges by a lexical scan; JSON lines are parsed line by line
 * (a bad line is that event's error). CloudEvents binary mode builds the
 * structured form from the ce-* attributes and the body.
 */
#include <ctype.h>
#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/crypto.h"
#include "base/json.h"
#include "base/log.h"
#include "base/rcu.h"
#include "base/time.h"
#include "events/topics.h"
#include "store/resources.h"

/* ---- the spec ---------------------------------------------------------------------------- */

#define MAX_DEDUP_MS (7LL * 24 * 3600 * 1000)
#define MAX_SYNC_MS (3600LL * 1000)

int bs_topic_parse_size(const cJSON *v, int64_t *out)
{
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (!isfinite(d) || d < 0 || d != floor(d) || d > 9.0e15)
            return BS_EINVAL;
        *out = (int64_t)d;
        return 0;
    }
    if (!cJSON_IsString(v))
        return BS_EINVAL;
    const char *s = v->valuestring;
    char *end;
    if (!isdigit((unsigned char)*s))
        return BS_EINVAL;
    double d = strtod(s, &end);
    if (end == s || !isfinite(d) || d < 0)
        return BS_EINVAL;
    while (*end == ' ')
        end++;
    double mult = 1;
    if (*end) {
        char u = (char)toupper((unsigned char)*end);
        const char *rest = end + 1;
        if (u == 'K')
            mult = 1024.0;
        else if (u == 'M')
            mult = 1024.0 * 1024;
        else if (u == 'G')
            mult = 1024.0 * 1024 * 1024;
        else if (u == 'T')
            mult = 1024.0 * 1024 * 1024 * 1024;
        else if (u == 'B')
            rest = end + 1, mult = 1;
        else
            return BS_EINVAL;
        if (u == 'B') {
            if (*rest)
                return BS_EINVAL;
        } else if (*rest && strcasecmp(rest, "b") != 0 && strcasecmp(rest, "ib") != 0) {
            return BS_EINVAL;
        }
    }
    d = floor(d * mult);
    if (d > 9.0e15)
        return BS_EINVAL;
    *out = (int64_t)d;
    return 0;
}

static int valid_name(const char *s) { return bs_resources_valid_name(s); }

/* A duration member: 0 (set), 1 (absent or null), or BS_EINVAL. */
static int get_duration(const cJSON *obj, const char *key, const char *field, int64_t min_ms,
                        int64_t max_ms, int64_t *out, bs_err_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v))
        return 1;
    if (!cJSON_IsString(v) || bs_time_parse_duration(v->valuestring, out) != 0)
        return bs_err_setf(err, BS_EINVAL, field,
                           "%s must be a duration such as \"30s\", \"2m\" or \"7d\"", field);
    if (*out < min_ms || *out > max_ms)
        return bs_err_setf(err, BS_EINVAL, field, "%s must be from %lldms to %lldms, got '%s'",
                           field, (long long)min_ms, (long long)max_ms, v->valuestring);
    return 0;
}

static int normalise(const char *name, const cJSON *spec, int64_t def_meb, cJSON *out,
                     bs_topic_t *t, bs_err_t *err)
{
    memset(t, 0, sizeof *t);
    if (!cJSON_IsObject(spec))
        return bs_err_setf(err, BS_EINVAL, "spec", "a Topic spec must be a JSON object");
    static const char *const allowed[] = {"retention", "sync", "dedup_window", "max_event_bytes",
                                          "dead_letter", NULL};
    if (bs_json_reject_unknown(spec, allowed, err))
        return BS_EINVAL;

    /* retention */
    const cJSON *ret = cJSON_GetObjectItemCaseSensitive(spec, "retention");
    cJSON *oret = cJSON_AddObjectToObject(out, "retention");
    if (ret && !cJSON_IsNull(ret)) {
        if (!cJSON_IsObject(ret))
            return bs_err_setf(err, BS_EINVAL, "retention",
                               "retention must be an object {\"max_age\", \"max_bytes\"}");
        static const char *const rallowed[] = {"max_age", "max_bytes", NULL};
        if (bs_json_reject_unknown(ret, rallowed, err)) {
            char f[64];
            snprintf(f, sizeof f, "retention.%.50s", err->field);
            snprintf(err->field, sizeof err->field, "%s", f);
            return BS_EINVAL;
        }
        int rc = get_duration(ret, "max_age", "retention.max_age", 1000, 100LL * 365 * 86400000,
                              &t->log.retention_ms, err);
        if (rc < 0)
            return rc;
        if (rc == 0)
            cJSON_AddItemToObject(oret, "max_age",
                                  cJSON_Duplicate(cJSON_GetObjectItem(ret, "max_age"), 1));
        const cJSON *mb = cJSON_GetObjectItemCaseSensitive(ret, "max_bytes");
        if (mb && !cJSON_IsNull(mb)) {
            if (bs_topic_parse_size(mb, &t->log.retention_bytes) != 0 ||
                t->log.retention_bytes < 1)
                return bs_err_setf(err, BS_EINVAL, "retention.max_bytes",
                                   "retention.max_bytes must be a size such as \"10GiB\" or a "
                                   "positive number of bytes");
            cJSON_AddItemToObject(oret, "max_bytes", cJSON_Duplicate(mb, 1));
        }
    }

    /* sync */
    const cJSON *sync = cJSON_GetObjectItemCaseSensitive(spec, "sync");
    if (!sync || cJSON_IsNull(sync) ||
        (cJSON_IsString(sync) && strcmp(sync->valuestring, "always") == 0)) {
        cJSON_AddStringToObject(out, "sync", "always");
    } else {
        int rc = get_duration(spec, "sync", "sync", 1, MAX_SYNC_MS, &t->log.sync_interval_ms, err);
        if (rc < 0) {
            bs_err_setf(err, BS_EINVAL, "sync",
                        "sync must be \"always\" (acknowledged after fsync) or an interval "
                        "from 1ms to 1h such as \"1s\"");
            return BS_EINVAL;
        }
        cJSON_AddStringToObject(out, "sync", sync->valuestring);
    }

    /* dedup_window */
    int rc = get_duration(spec, "dedup_window", "dedup_window", 0, MAX_DEDUP_MS,
                          &t->log.dedup_window_ms, err);
    if (rc < 0)
        return rc;
    if (rc == 1) {
        t->log.dedup_window_ms = BS_TOPIC_DEFAULT_DEDUP_MS;
        cJSON_AddStringToObject(out, "dedup_window", "2m");
    } else {
        cJSON_AddStringToObject(out, "dedup_window",
                                cJSON_GetObjectItem(spec, "dedup_window")->valuestring);
    }

    /* max_event_bytes */
    const cJSON *meb = cJSON_GetObjectItemCaseSensitive(spec, "max_event_bytes");
    if (meb && !cJSON_IsNull(meb)) {
        if (bs_topic_parse_size(meb, &t->max_event_bytes) != 0 || t->max_event_bytes < 16 ||
            t->max_event_bytes > BS_TOPIC_MAX_EVENT_BYTES)
            return bs_err_setf(err, BS_EINVAL, "max_event_bytes",
                               "max_event_bytes must be a size from 16 bytes to 16MiB");
        cJSON_AddItemToObject(out, "max_event_bytes", cJSON_Duplicate(meb, 1));
    } else {
        t->max_event_bytes = def_meb;
        cJSON_AddNumberToObject(out, "max_event_bytes", (double)def_meb);
    }
    t->log.max_record_bytes = t->max_event_bytes;

    /* dead_letter */
    const cJSON *dl = cJSON_GetObjectItemCaseSensitive(spec, "dead_letter");
    if (dl && !cJSON_IsNull(dl)) {
        if (!cJSON_IsString(dl) || !valid_name(dl->valuestring))
            return bs_err_setf(err, BS_EINVAL, "dead_letter",
                               "dead_letter must be a topic name matching [a-z0-9][a-z0-9_-]{0,62}");
        if (name && strcmp(dl->valuestring, name) == 0)
            return bs_err_setf(err, BS_EINVAL, "dead_letter",
                               "a topic cannot be its own dead letter topic");
        snprintf(t->dead_letter, sizeof t->dead_letter, "%s", dl->valuestring);
        cJSON_AddStringToObject(out, "dead_letter", dl->valuestring);
    }
    if (name)
        snprintf(t->name, sizeof t->name, "%s", name);
    return 0;
}

int bs_topic_spec_normalise(const char *name, const cJSON *spec, int64_t default_max_event_bytes,
                            cJSON **out, bs_topic_t *cfg, bs_err_t *err)
{
    *out = NULL;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    bs_topic_t t;
    int rc = normalise(name, spec, default_max_event_bytes, o, &t, err);
    if (rc) {
        cJSON_Delete(o);
        return rc;
    }
    if (cfg)
        *cfg = t;
    *out = o;
    return 0;
}

int bs_topic_spec_parse(const char *tenant, const char *name, const char *spec,
                        int64_t default_max_event_bytes, bs_topic_t *out, bs_err_t *err)
{
    cJSON *j = cJSON_Parse(spec);
    if (!j)
        return bs_err_set(err, BS_EINVAL, "stored spec of topic '%s' is not JSON", name);
    cJSON *norm = NULL;
    int rc = bs_topic_spec_normalise(name, j, default_max_event_bytes, &norm, out, err);
    cJSON_Delete(j);
    cJSON_Delete(norm);
    if (rc == 0 && tenant)
        snprintf(out->tenant, sizeof out->tenant, "%s", tenant);
    return rc;
}

/* ---- the snapshot ------------------------------------------------------------------------ */

typedef struct {
    int n;
    bs_topic_t *v;  /* sorted by (tenant, name) */
    char **specs;   /* the spec text each entry was built from */
    char *ensured;  /* 1: the log has this entry's config */
} snap_t;

struct bs_topics {
    bs_log_t *log;
    bs_meta_t *meta;
    int64_t def_meb;
    _Atomic(snap_t *) snap;
    pthread_mutex_t rebuild_mu;
    pthread_mutex_t get_mu;
    _Atomic uint64_t accepted, duplicates, rejected;
};

static void snap_free(void *p)
{
    snap_t *s = p;
    if (!s)
        return;
    for (int i = 0; i < s->n; i++)
        free(s->specs[i]);
    free(s->specs);
    free(s->ensured);
    free(s->v);
    free(s);
}

bs_topics_t *bs_topics_new(bs_log_t *log, bs_meta_t *m, int64_t default_max_event_bytes,
                           bs_err_t *err)
{
    bs_topics_t *t = calloc(1, sizeof *t);
    snap_t *s = calloc(1, sizeof *s);
    if (!t || !s) {
        free(t);
        free(s);
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    t->log = log;
    t->meta = m;
    t->def_meb = default_max_event_bytes > 0 ? default_max_event_bytes : 1048576;
    atomic_init(&t->snap, s);
    pthread_mutex_init(&t->rebuild_mu, NULL);
    pthread_mutex_init(&t->get_mu, NULL);
    return t;
}

void bs_topics_free(bs_topics_t *t)
{
    if (!t)
        return;
    snap_free(atomic_load(&t->snap));
    pthread_mutex_destroy(&t->rebuild_mu);
    pthread_mutex_destroy(&t->get_mu);
    free(t);
}

static int cmp_key(const char *ta, const char *na, const char *tb, const char *nb)
{
    int c = strcmp(ta, tb);
    return c ? c : strcmp(na, nb);
}

static int snap_index(const snap_t *s, const char *tenant, const char *name)
{
    int lo = 0, hi = s->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = cmp_key(s->v[mid].tenant, s->v[mid].name, tenant, name);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

typedef struct {
    char tenant[64], name[64];
    char *spec;
} listed_t;

typedef struct {
    listed_t *v;
    int n, cap;
    int oom;
} list_ctx_t;

static int list_cb(const bs_resource_t *r, void *ud)
{
    list_ctx_t *c = ud;
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 16;
        listed_t *v = realloc(c->v, (size_t)cap * sizeof *v);
        if (!v) {
            c->oom = 1;
            return 1;
        }
        c->v = v;
        c->cap = cap;
    }
    listed_t *e = &c->v[c->n];
    snprintf(e->tenant, sizeof e->tenant, "%s", r->tenant);
    snprintf(e->name, sizeof e->name, "%s", r->name);
    if (!(e->spec = strdup(r->spec))) {
        c->oom = 1;
        return 1;
    }
    c->n++;
    return 0;
}

static int cmp_listed(const void *a, const void *b)
{
    const listed_t *x = a, *y = b;
    return cmp_key(x->tenant, x->name, y->tenant, y->name);
}

int bs_topics_rebuild(bs_topics_t *t, bs_err_t *err)
{
    pthread_mutex_lock(&t->rebuild_mu);
    list_ctx_t c = {0};
    int rc = bs_resources_list(t->meta, NULL, BS_TOPIC_KIND, NULL, 0, list_cb, &c, err);
    if (rc >= 0 && c.oom)
        rc = bs_err_set(err, BS_ENOMEM, "out of memory listing topics");
    snap_t *s = rc >= 0 ? calloc(1, sizeof *s) : NULL;
    if (rc >= 0 && !s)
        rc = bs_err_set(err, BS_ENOMEM, "out of memory");
    if (s && c.n) {
        s->v = calloc((size_t)c.n, sizeof *s->v);
        s->specs = calloc((size_t)c.n, sizeof *s->specs);
        s->ensured = calloc((size_t)c.n, 1);
        if (!s->v || !s->specs || !s->ensured)
            rc = bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    if (rc < 0) {
        for (int i = 0; i < c.n; i++)
            free(c.v[i].spec);
        free(c.v);
        snap_free(s);
        pthread_mutex_unlock(&t->rebuild_mu);
        return rc;
    }
    rc = 0;
    if (c.n > 1)
        qsort(c.v, (size_t)c.n, sizeof *c.v, cmp_listed);
    snap_t *old = atomic_load(&t->snap);
    for (int i = 0; i < c.n; i++) {
        listed_t *e = &c.v[i];
        bs_topic_t *tp = &s->v[s->n];
        bs_err_t e2;
        int oi = snap_index(old, e->tenant, e->name);
        int same = oi >= 0 && strcmp(old->specs[oi], e->spec) == 0;
        if (same) {
            *tp = old->v[oi]; /* the same text: the same topic, not parsed again */
        } else if (bs_topic_spec_parse(e->tenant, e->name, e->spec, t->def_meb, tp, &e2) != 0) {
            BS_LOG(BS_LOG_ERROR, "topics", "topic %s/%s: stored spec refused: %s", e->tenant,
                   e->name, e2.msg);
            free(e->spec);
            continue;
        }
        s->specs[s->n] = e->spec;
        if (same && old->ensured[oi]) {
            s->ensured[s->n] = 1;
        } else if (bs_log_topic_ensure(t->log, e->tenant, e->name, &tp->log, &e2) == 0) {
            s->ensured[s->n] = 1;
        } else {
            BS_LOG(BS_LOG_ERROR, "topics", "topic %s/%s: not ready in the log: %s", e->tenant,
                   e->name, e2.msg);
            if (!rc) {
                rc = e2.code ? e2.code : BS_EIO;
                if (err)
                    *err = e2;
            }
        }
        s->n++;
    }
    free(c.v);
    /* A topic gone from the store is not dropped here: the replica that deleted it dropped
     * it from the log before answering (the kind's deleted hook). Dropping again from every
     * replica's rebuild would race with a re-creation of the same name on JetStream (list
     * before the create, drop after it) and delete acknowledged events. */
    pthread_mutex_lock(&t->get_mu);
    atomic_store(&t->snap, s);
    pthread_mutex_unlock(&t->get_mu);
    bs_rcu_retire(old, snap_free);
    pthread_mutex_unlock(&t->rebuild_mu);
    return rc;
}

const bs_topic_t *bs_topics_find(bs_topics_t *t, const char *tenant, const char *name)
{
    const snap_t *s = atomic_load_explicit(&t->snap, memory_order_acquire);
    int i = snap_index(s, tenant, name);
    return i >= 0 ? &s->v[i] : NULL;
}

int bs_topics_get(bs_topics_t *t, const char *tenant, const char *name, bs_topic_t *out)
{
    pthread_mutex_lock(&t->get_mu);
    const snap_t *s = atomic_load(&t->snap);
    int i = snap_index(s, tenant, name);
    if (i >= 0)
        *out = s->v[i];
    pthread_mutex_unlock(&t->get_mu);
    return i >= 0;
}

int bs_topics_count(bs_topics_t *t)
{
    pthread_mutex_lock(&t->get_mu);
    int n = atomic_load(&t->snap)->n;
    pthread_mutex_unlock(&t->get_mu);
    return n;
}

void bs_topics_count_publish(bs_topics_t *t, uint64_t accepted, uint64_t duplicates,
                             uint64_t rejected)
{
    atomic_fetch_add_explicit(&t->accepted, accepted, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->duplicates, duplicates, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->rejected, rejected, memory_order_relaxed);
}

void bs_topics_metrics(bs_topics_t *t, bs_buf_t *b)
{
    bs_buf_printf(b,
                  "# HELP basalt_topics Topics in this replica's snapshot.\n"
                  "# TYPE basalt_topics gauge\n"
                  "basalt_topics %d\n"
                  "# HELP basalt_topic_events_published_total Events published over the API, by "
                  "result.\n"
                  "# TYPE basalt_topic_events_published_total counter\n"
                  "basalt_topic_events_published_total{result=\"accepted\"} %llu\n"
                  "basalt_topic_events_published_total{result=\"duplicate\"} %llu\n"
                  "basalt_topic_events_published_total{result=\"rejected\"} %llu\n",
                  bs_topics_count(t), (unsigned long long)atomic_load(&t->accepted),
                  (unsigned long long)atomic_load(&t->duplicates),
                  (unsigned long long)atomic_load(&t->rejected));
}

/* ---- CloudEvents --------------------------------------------------------------------------- */

#define MAX_ID_BYTES 128

/* CloudEvents 1.0 §3.1.1: attribute names are lower-case ASCII letters and digits. */
static int ce_attr_name_ok(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')))
            return 0;
    return 1;
}

static const char *type_name(const cJSON *v)
{
    if (cJSON_IsObject(v))
        return "an object";
    if (cJSON_IsArray(v))
        return "an array";
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsBool(v))
        return "a boolean";
    return "null";
}

static int ce_required(const cJSON *ev, const char *key, const cJSON **out, bs_err_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(ev, key);
    if (!v || cJSON_IsNull(v))
        return bs_err_setf(err, BS_EINVAL, key,
                           "a CloudEvent needs '%s' (CloudEvents 1.0 section 3.1: specversion, "
                           "id, source and type are required)",
                           key);
    if (!cJSON_IsString(v) || !v->valuestring[0])
        return bs_err_setf(err, BS_EINVAL, key,
                           "CloudEvents attribute '%s' must be a non-empty string, got %s", key,
                           cJSON_IsString(v) ? "an empty string" : type_name(v));
    *out = v;
    return 0;
}

int bs_topic_cloudevent_check(const cJSON *ev, bs_err_t *err)
{
    if (!cJSON_IsObject(ev))
        return bs_err_setf(err, BS_EINVAL, NULL, "a CloudEvent must be a JSON object, got %s",
                           type_name(ev));
    const cJSON *v;
    if (ce_required(ev, "specversion", &v, err))
        return BS_EINVAL;
    if (strcmp(v->valuestring, "1.0") != 0)
        return bs_err_setf(err, BS_EINVAL, "specversion",
                           "specversion must be \"1.0\" (CloudEvents 1.0), got \"%.32s\"",
                           v->valuestring);
    if (ce_required(ev, "id", &v, err))
        return BS_EINVAL;
    if (strlen(v->valuestring) > MAX_ID_BYTES)
        return bs_err_setf(err, BS_EINVAL, "id", "CloudEvents id is %zu bytes, at most %d accepted",
                           strlen(v->valuestring), MAX_ID_BYTES);
    if (ce_required(ev, "source", &v, err) || ce_required(ev, "type", &v, err))
        return BS_EINVAL;
    const cJSON *data = NULL, *data64 = NULL;
    for (const cJSON *m = ev->child; m; m = m->next) {
        const char *k = m->string;
        if (strcmp(k, "data") == 0) {
            data = m;
            continue;
        }
        if (strcmp(k, "data_base64") == 0) {
            data64 = m;
            if (!cJSON_IsString(m) && !cJSON_IsNull(m))
                return bs_err_setf(err, BS_EINVAL, "data_base64",
                                   "data_base64 must be a base64 string, got %s", type_name(m));
            continue;
        }
        if (!ce_attr_name_ok(k))
            return bs_err_setf(err, BS_EINVAL, k,
                               "CloudEvents attribute name '%.40s' must be lower-case letters and "
                               "digits only (CloudEvents 1.0 section 3.1.1)",
                               k);
        if (cJSON_IsNull(m))
            continue;
        if (strcmp(k, "time") == 0) {
            int64_t ms;
            if (!cJSON_IsString(m) || bs_time_parse_rfc3339(m->valuestring, &ms) != 0)
                return bs_err_setf(err, BS_EINVAL, "time",
                                   "CloudEvents time must be an RFC 3339 timestamp such as "
                                   "\"2024-05-01T12:00:00Z\"");
            continue;
        }
        if (strcmp(k, "datacontenttype") == 0 || strcmp(k, "dataschema") == 0 ||
            strcmp(k, "subject") == 0) {
            if (!cJSON_IsString(m) || (strcmp(k, "subject") != 0 && !m->valuestring[0]))
                return bs_err_setf(err, BS_EINVAL, k,
                                   "CloudEvents attribute '%s' must be a non-empty string, got %s",
                                   k, cJSON_IsString(m) ? "an empty string" : type_name(m));
            continue;
        }
        if (!cJSON_IsString(m) && !cJSON_IsNumber(m) && !cJSON_IsBool(m))
            return bs_err_setf(err, BS_EINVAL, k,
                               "CloudEvents extension '%.40s' must be a string, number or "
                               "boolean, got %s",
                               k, type_name(m));
    }
    if (data && data64 && !cJSON_IsNull(data) && !cJSON_IsNull(data64))
        return bs_err_setf(err, BS_EINVAL, "data_base64",
                           "a CloudEvent has data or data_base64, not both");
    return 0;
}

/* ---- events -------------------------------------------------------------------------------- */

enum { M_DETECT, M_STRUCTURED, M_BATCH, M_LINES, M_BINARY };

/* The media type of a Content-Type value: lower case, parameters and spaces stripped. */
static void media_type(const char *ct, char *out, size_t n)
{
    size_t k = 0;
    if (ct) {
        while (*ct == ' ' || *ct == '\t')
            ct++;
        for (; *ct && *ct != ';' && k + 1 < n; ct++)
            if (*ct != ' ' && *ct != '\t')
                out[k++] = (char)tolower((unsigned char)*ct);
    }
    out[k] = 0;
}

static int is_json_media(const char *m)
{
    if (!*m || strcmp(m, "application/json") == 0)
        return 1;
    size_t n = strlen(m);
    return strncmp(m, "application/", 12) == 0 && n > 5 && strcmp(m + n - 5, "+json") == 0;
}

static int is_lines_media(const char *m)
{
    return strcmp(m, "application/x-ndjson") == 0 || strcmp(m, "application/ndjson") == 0 ||
           strcmp(m, "application/jsonl") == 0 || strcmp(m, "application/x-jsonl") == 0 ||
           strcmp(m, "application/json-lines") == 0 || strcmp(m, "application/jsonlines") == 0 ||
           strcmp(m, "application/x-jsonlines") == 0;
}

/* What cJSON skips between tokens: any byte up to 0x20. Only space, tab, CR and LF are JSON
 * whitespace (RFC 8259 section 2); the others are trimmed off an event's ends and refused
 * between its tokens (stray_control), so that a stored text is JSON any reader takes: it is
 * sent back verbatim inside read, fetch and stream responses. */
static int is_space(char c) { return (unsigned char)c <= 0x20; }

/* The offset of the first byte of s[0..len) below 0x20 outside strings that is not JSON
 * whitespace, or -1. (Inside strings bs_json_parse refuses them.) */
static long stray_control(const char *s, size_t len)
{
    int in_str = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
            return (long)i;
        }
    }
    return -1;
}

/* Refuses s[0..len) (of a body, from its byte off) when stray_control finds a byte:
 * BS_EPARSE naming the byte and its offset in the body. 0 when there is none. */
static int stray_check(const char *s, size_t len, size_t off, bs_err_t *err)
{
    long at = stray_control(s, len);
    if (at < 0)
        return 0;
    return bs_err_set(err, BS_EPARSE,
                      "malformed JSON: control character 0x%02x at byte %zu (only space, tab, CR "
                      "and LF may separate JSON tokens, RFC 8259 section 2)",
                      (unsigned char)s[at], off + (size_t)at);
}

typedef struct {
    bs_arena_t *a;
    const bs_topic_parse_opts_t *o;
    bs_topic_batch_t *out;
    int batch; /* keys get ":<index>" */
} pctx_t;

static void event_error(pctx_t *p, bs_topic_event_t *ev, int code, const bs_err_t *e)
{
    ev->code = code;
    ev->field = e->field[0] ? bs_arena_strdup(p->a, e->field) : NULL;
    ev->message = bs_arena_strdup(p->a, e->msg);
    if (!ev->message)
        ev->message = "out of memory";
}

/* Fills ev from one event (text s[0..len), parsed j: borrowed for the call only). force_ce:
 * it must be a CloudEvent. */
static void take_event(pctx_t *p, int index, const char *s, size_t len, const cJSON *j,
                       int force_ce, bs_topic_event_t *ev)
{
    bs_err_t e;
    bs_err_clear(&e);
    memset(ev, 0, sizeof *ev);
    if (!cJSON_IsObject(j)) {
        bs_err_set(&e, BS_EINVAL, "an event must be a JSON object, got %s", type_name(j));
        return event_error(p, ev, BS_EINVAL, &e);
    }
    const cJSON *sv = cJSON_GetObjectItemCaseSensitive(j, "specversion");
    int is_ce = force_ce || sv != NULL;
    if (is_ce && bs_topic_cloudevent_check(j, &e) != 0)
        return event_error(p, ev, BS_EINVAL, &e);
    if ((int64_t)len > p->o->max_event_bytes) {
        bs_err_setf(&e, BS_ETOOBIG, NULL, "event is %zu bytes, the topic's max_event_bytes is %lld",
                    len, (long long)p->o->max_event_bytes);
        return event_error(p, ev, BS_ETOOBIG, &e);
    }
    const char *id = NULL;
    if (is_ce)
        id = cJSON_GetObjectItemCaseSensitive(j, "id")->valuestring;
    /* Idempotency-Key, else the CloudEvents id, else Nats-Msg-Id; a header's key names
     * the whole batch, so each event of one gets ":<index>". */
    const char *hdr = p->o->idempotency_key && *p->o->idempotency_key ? p->o->idempotency_key
                      : id                                             ? NULL
                      : p->o->nats_msg_id && *p->o->nats_msg_id        ? p->o->nats_msg_id
                                                                       : NULL;
    /* The arena's copy of the id (j may be freed before the record is appended). */
    ev->rec.id = id ? bs_arena_strdup(p->a, id) : NULL;
    const char *key =
        hdr ? (p->batch ? bs_arena_sprintf(p->a, "%s:%d", hdr, index) : hdr) : ev->rec.id;
    ev->rec.dedup_key = key;
    ev->rec.data = s;
    ev->rec.len = len;
    if ((id && !ev->rec.id) || (hdr && !key)) {
        bs_err_set(&e, BS_ENOMEM, "out of memory");
        return event_error(p, ev, BS_ENOMEM, &e);
    }
}

static int alloc_events(pctx_t *p, int n, bs_err_t *err)
{
    if (n > BS_LOG_MAX_BATCH)
        return bs_err_set(err, BS_ETOOBIG, "a publish holds at most %d events, got %d",
                          BS_LOG_MAX_BATCH, n);
    if (n == 0)
        return bs_err_set(err, BS_EINVAL, "the body holds no events");
    p->out->events = bs_arena_calloc(p->a, (size_t)n, sizeof *p->out->events);
    if (!p->out->events)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    p->out->n = n;
    return 0;
}

/* Where the JSON value starting at s[i] ends: the index of the ',', '}' or ']' after it at
 * its own level (or len). s is valid JSON, so a lexical scan suffices. */
static size_t value_end(const char *s, size_t len, size_t i)
{
    int depth = 0, in_str = 0;
    for (; i < len; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
            continue;
        }
        if (c == '"')
            in_str = 1;
        else if (c == '{' || c == '[')
            depth++;
        else if (c == '}' || c == ']') {
            if (depth == 0)
                break;
            depth--;
        } else if (c == ',' && depth == 0)
            break;
    }
    return i;
}

int bs_topic_json_member(const char *s, size_t len, const char *key, const char **v,
                         size_t *vlen)
{
    size_t i = 0, kl = strlen(key);
    while (i < len && is_space(s[i]))
        i++;
    if (i >= len || s[i] != '{')
        return 0;
    i++;
    while (i < len) {
        while (i < len && (is_space(s[i]) || s[i] == ','))
            i++;
        if (i >= len || s[i] != '"')
            return 0;
        size_t ks = ++i;
        while (i < len && s[i] != '"')
            i += s[i] == '\\' ? 2 : 1;
        if (i >= len)
            return 0;
        size_t ke = i++;
        while (i < len && (is_space(s[i]) || s[i] == ':'))
            i++;
        size_t vs = i;
        i = value_end(s, len, i);
        size_t ve = i;
        while (ve > vs && is_space(s[ve - 1]))
            ve--;
        if (ke - ks == kl && memcmp(s + ks, key, kl) == 0) {
            *v = s + vs;
            *vlen = ve - vs;
            return 1;
        }
        if (i < len && s[i] == '}')
            return 0;
    }
    return 0;
}

/* The byte ranges of the elements of the JSON array at s (valid JSON: parsed already). */
static int split_array(pctx_t *p, const char *s, size_t len, const cJSON *arr, int force_ce,
                       bs_err_t *err)
{
    int n = cJSON_GetArraySize(arr);
    if (alloc_events(p, n, err))
        return err->code;
    size_t i = 0;
    while (i < len && is_space(s[i]))
        i++;
    i++; /* '[' */
    const cJSON *el = arr->child;
    for (int k = 0; k < n && el; k++, el = el->next) {
        while (i < len && is_space(s[i]))
            i++;
        size_t start = i;
        i = value_end(s, len, i);
        size_t end = i;
        while (end > start && is_space(s[end - 1]))
            end--;
        take_event(p, k, s + start, end - start, el, force_ce, &p->out->events[k]);
        if (i < len && s[i] == ',')
            i++;
    }
    return 0;
}

static int json_lines(pctx_t *p, const char *s, size_t len, bs_err_t *err)
{
    int n = 0;
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && s[e] != '\n')
            e++;
        size_t a = i, b = e;
        while (a < b && is_space(s[a]))
            a++;
        if (a < b)
            n++;
        i = e + 1;
    }
    p->batch = 1;
    if (alloc_events(p, n, err))
        return err->code;
    int k = 0, line = 0;
    for (size_t i = 0; i < len && k < n;) {
        size_t e = i;
        line++;
        while (e < len && s[e] != '\n')
            e++;
        size_t a = i, b = e;
        while (a < b && is_space(s[a]))
            a++;
        while (b > a && is_space(s[b - 1]))
            b--;
        i = e + 1;
        if (a == b)
            continue;
        bs_err_t pe;
        cJSON *j = bs_json_parse_arena(p->a, s + a, b - a, p->o->max_depth, &pe);
        if (j && stray_check(s + a, b - a, 0, &pe))
            j = NULL;
        if (!j) {
            bs_err_t e2;
            bs_err_setf(&e2, BS_EINVAL, pe.field[0] ? pe.field : NULL, "line %d: %s", line, pe.msg);
            memset(&p->out->events[k], 0, sizeof p->out->events[k]);
            event_error(p, &p->out->events[k], BS_EINVAL, &e2);
        } else {
            take_event(p, k, s + a, b - a, j, 0, &p->out->events[k]);
        }
        k++;
    }
    return 0;
}

/* Percent-decodes v (CloudEvents HTTP binding §3.1.3.2) into the arena; NULL if malformed. */
static char *percent_decode(bs_arena_t *a, const char *v)
{
    size_t n = strlen(v);
    char *o = bs_arena_alloc(a, n + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] == '%') {
            int hi = i + 2 < n ? bs_hex_digit((unsigned char)v[i + 1]) : -1;
            int lo = hi >= 0 ? bs_hex_digit((unsigned char)v[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return NULL;
            o[k++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            o[k++] = v[i];
        }
    }
    o[k] = 0;
    if (strlen(o) != k || !bs_utf8_valid(o, k))
        return NULL;
    return o;
}

/* Binary mode (HTTP binding §3.1): the attributes from ce-* headers, the body as data.
 * The structured text is written once; the CloudEvents check runs on an object of the
 * attributes alone (the data is parsed once, on its own), so the event is not parsed
 * again as a whole. */
static int binary_event(pctx_t *p, const char *body, size_t len, const char *media, bs_err_t *err)
{
    const bs_topic_parse_opts_t *o = p->o;
    for (int i = 0; i < o->n_ce; i++) {
        const char *k = o->ce[i].name;
        if (strcmp(k, "datacontenttype") == 0)
            return bs_err_setf(err, BS_EINVAL, "ce-datacontenttype",
                               "in binary mode the Content-Type header is the "
                               "datacontenttype (CloudEvents HTTP binding section 3.1.1)");
        if (!ce_attr_name_ok(k) || strcmp(k, "data") == 0)
            return bs_err_setf(err, BS_EINVAL, "ce-", "header 'ce-%.40s' does not name a "
                               "CloudEvents attribute (lower-case letters and digits)", k);
        for (int j = 0; j < i; j++)
            if (strcmp(o->ce[j].name, k) == 0)
                return bs_err_setf(err, BS_EINVAL, k, "header ce-%.40s is given twice", k);
    }
    bs_buf_t b;
    bs_buf_init(&b);
    cJSON *attrs = cJSON_CreateObject();
    int rc = attrs ? 0 : bs_err_set(err, BS_ENOMEM, "out of memory");
    bs_jw_obj_begin(&b);
    /* required attributes first, then the others in header order */
    static const char *const first[] = {"specversion", "id", "source", "type"};
    const char *vals[4] = {0};
    for (int pass = 0; pass < 2 && !rc; pass++)
        for (int i = 0; i < o->n_ce && !rc; i++) {
            const char *k = o->ce[i].name;
            int req = -1;
            for (int r = 0; r < 4; r++)
                if (strcmp(k, first[r]) == 0)
                    req = r;
            if ((pass == 0) != (req >= 0))
                continue;
            char *v = percent_decode(p->a, o->ce[i].value);
            if (!v) {
                rc = bs_err_setf(err, BS_EINVAL, k,
                                 "header ce-%.40s is not valid percent-encoded UTF-8", k);
                break;
            }
            if (req >= 0)
                vals[req] = v;
            bs_jw_key(&b, k);
            bs_jw_str(&b, v);
            if (!cJSON_AddStringToObject(attrs, k, v))
                rc = bs_err_set(err, BS_ENOMEM, "out of memory");
        }
    for (int r = 0; r < 4 && !rc; r++)
        if (!vals[r])
            rc = bs_err_setf(err, BS_EINVAL, first[r],
                             "a CloudEvent in binary mode needs the ce-%s header (specversion, "
                             "id, source and type are required)",
                             first[r]);
    if (rc)
        goto done;
    if (o->content_type && *o->content_type) {
        bs_jw_key(&b, "datacontenttype");
        bs_jw_str(&b, o->content_type);
        if (!cJSON_AddStringToObject(attrs, "datacontenttype", o->content_type)) {
            rc = bs_err_set(err, BS_ENOMEM, "out of memory");
            goto done;
        }
    }
    size_t a = 0, z = len;
    while (a < z && is_space(body[a]))
        a++;
    while (z > a && is_space(body[z - 1]))
        z--;
    int json = is_json_media(media);
    if (len > 0 && json && a < z) {
        bs_err_t pe;
        if (!bs_json_parse_arena(p->a, body + a, z - a, o->max_depth, &pe)) {
            *err = pe;
            rc = err->code;
            goto done;
        }
        if ((rc = stray_check(body + a, z - a, a, err)) != 0)
            goto done;
        bs_jw_key(&b, "data");
        bs_jw_raw(&b, body + a, z - a);
    } else if (len > 0 && !json && strncmp(media, "text/", 5) == 0 && bs_utf8_valid(body, len)) {
        const char *nul = memchr(body, 0, len);
        if (nul) { /* what bs_json_parse refuses in a string, so no reader of the topic chokes */
            rc = bs_err_setf(err, BS_EINVAL, "data",
                             "'data' contains a NUL byte (at byte %zu of the body), which is not "
                             "accepted in strings",
                             (size_t)(nul - body));
            goto done;
        }
        bs_jw_key(&b, "data");
        bs_jw_strn(&b, body, len);
    } else if (len > 0 && !json) {
        if (len > (size_t)BS_TOPIC_MAX_EVENT_BYTES) {
            rc = bs_err_set(err, BS_ETOOBIG,
                            "event data is %zu bytes, the topic's max_event_bytes is %lld", len,
                            (long long)o->max_event_bytes);
            goto done;
        }
        size_t n64 = 4 * ((len + 2) / 3) + 1;
        unsigned char *t = bs_arena_alloc(p->a, n64);
        if (!t) {
            rc = bs_err_set(err, BS_ENOMEM, "out of memory");
            goto done;
        }
        int w = EVP_EncodeBlock(t, (const unsigned char *)body, (int)len);
        bs_jw_key(&b, "data_base64");
        bs_jw_strn(&b, (const char *)t, (size_t)w);
    }
    bs_jw_obj_end(&b);
    char *text = b.oom ? NULL : bs_arena_strndup(p->a, b.data, b.len);
    if (!text) {
        rc = bs_err_set(err, BS_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = alloc_events(p, 1, err)) != 0)
        goto done;
    p->out->single = 1;
    take_event(p, 0, text, b.len, attrs, 1, &p->out->events[0]);
done:
    cJSON_Delete(attrs);
    bs_buf_free(&b);
    return rc;
}

int bs_topic_events_parse(bs_arena_t *a, const char *body, size_t len,
                          const bs_topic_parse_opts_t *o, bs_topic_batch_t *out, bs_err_t *err)
{
    memset(out, 0, sizeof *out);
    bs_err_clear(err);
    pctx_t p = {a, o, out, 0};
    char media[128];
    media_type(o->content_type, media, sizeof media);
    int binary = 0;
    for (int i = 0; i < o->n_ce; i++)
        if (strcmp(o->ce[i].name, "specversion") == 0)
            binary = 1;
    int mode;
    if (strcmp(media, "application/cloudevents+json") == 0)
        mode = M_STRUCTURED;
    else if (strcmp(media, "application/cloudevents-batch+json") == 0)
        mode = M_BATCH;
    else if (strncmp(media, "application/cloudevents", 23) == 0)
        return bs_err_set(err, BS_EMEDIA,
                          "content type '%.64s' is not accepted: CloudEvents are taken in JSON "
                          "(application/cloudevents+json, application/cloudevents-batch+json)",
                          media);
    else if (binary)
        mode = M_BINARY;
    else if (is_lines_media(media))
        mode = M_LINES;
    else if (is_json_media(media) || strcmp(media, "application/x-www-form-urlencoded") == 0)
        mode = M_DETECT;
    else
        return bs_err_set(err, BS_EMEDIA,
                          "content type '%.64s' is not accepted: send application/json (one "
                          "event or an array), application/x-ndjson (JSON lines), "
                          "application/cloudevents+json, application/cloudevents-batch+json, "
                          "or a CloudEvent in binary mode (ce-* headers)",
                          media);
    if (o->idempotency_key && strlen(o->idempotency_key) > BS_TOPIC_MAX_KEY_BYTES)
        return bs_err_setf(err, BS_EINVAL, "Idempotency-Key",
                           "Idempotency-Key is %zu bytes, at most %d accepted",
                           strlen(o->idempotency_key), BS_TOPIC_MAX_KEY_BYTES);
    if (o->nats_msg_id && strlen(o->nats_msg_id) > BS_TOPIC_MAX_KEY_BYTES)
        return bs_err_setf(err, BS_EINVAL, "Nats-Msg-Id", "Nats-Msg-Id is %zu bytes, at most %d accepted",
                           strlen(o->nats_msg_id), BS_TOPIC_MAX_KEY_BYTES);
    if (mode == M_BINARY) {
        out->mode = "binary";
        if (binary_event(&p, body ? body : "", body ? len : 0, media, err))
            return err->code;
        goto single;
    }
    size_t i = 0;
    while (body && i < len && is_space(body[i]))
        i++;
    if (!body || i == len)
        return bs_err_set(err, BS_EINVAL, "the body holds no events");
    if (mode == M_LINES) {
        out->mode = "lines";
        if (json_lines(&p, body, len, err))
            return err->code;
        goto count;
    }
    bs_err_t pe;
    cJSON *j = bs_json_parse_arena(a, body, len, o->max_depth + 1, &pe);
    if (!j) {
        /* JSON lines sent as application/json: one complete value per line. */
        if (mode == M_DETECT) {
            const char *nl = memchr(body + i, '\n', len - i);
            size_t first = nl ? (size_t)(nl - body) : len;
            size_t rest = first;
            while (rest < len && is_space(body[rest]))
                rest++;
            bs_err_t le;
            if (nl && rest < len) {
                cJSON *fj = bs_json_parse(body + i, first - i, o->max_depth, &le);
                if (fj) {
                    cJSON_Delete(fj);
                    out->mode = "lines";
                    if (json_lines(&p, body, len, err))
                        return err->code;
                    goto count;
                }
            }
        }
        *err = pe;
        return err->code;
    }
    size_t z = len;
    while (z > i && is_space(body[z - 1]))
        z--;
    if (stray_check(body + i, z - i, i, err))
        return err->code;
    if (mode == M_BATCH || (mode == M_DETECT && cJSON_IsArray(j))) {
        if (!cJSON_IsArray(j))
            return bs_err_set(err, BS_EINVAL,
                              "a CloudEvents batch (application/cloudevents-batch+json) is a JSON "
                              "array of events, got %s",
                              type_name(j));
        out->mode = mode == M_BATCH ? "cloudevents-batch" : "array";
        p.batch = 1;
        if (split_array(&p, body, len, j, mode == M_BATCH, err))
            return err->code;
        goto count;
    }
    out->mode = mode == M_STRUCTURED ? "cloudevent" : "json";
    if (alloc_events(&p, 1, err))
        return err->code;
    take_event(&p, 0, body + i, z - i, j, mode == M_STRUCTURED, &out->events[0]);
single:
    out->single = 1;
    if (out->events[0].code) {
        bs_topic_event_t *ev = &out->events[0];
        return bs_err_setf(err, ev->code, ev->field, "%s", ev->message);
    }
count:
    for (int k = 0; k < out->n; k++)
        if (out->events[k].code == 0)
            out->accepted++;
    return 0;
}
