/*
 * The monitor (monitor.h): the object and its tenants, the in-memory tables of logged
 * predictions with their id index, eviction by window and by count, and the metrics.
 * monitor_int.h has the data model and the locking; the tails, feedback and reports live
 * in monitor_tail.c, monitor_feedback.c and monitor_reports.c.
 *
 * The id index is open addressing with linear probing and backward-shift deletion (Knuth
 * TAOCP vol. 3 §6.4, Algorithm R), so evicting the oldest entries leaves no tombstones;
 * slots hold the id's 32-bit hash, the table's index and the entry's sequence number, and
 * a hit is confirmed against the entry's id.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "base/time.h"
#include "monitor/monitor_int.h"
#include "serving/predlog.h"
#include "store/log.h"

/* ---- ids -------------------------------------------------------------------------------- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A canonical 8-4-4-4-12 UUID into 16 bytes. 0 or -1. */
static int uuid_parse(const char *s, uint8_t out[16])
{
    if (strlen(s) != 36)
        return -1;
    int j = 0;
    for (int i = 0; i < 36;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return -1;
            i++;
            continue;
        }
        int hi = hexval((unsigned char)s[i]), lo = hexval((unsigned char)s[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[j++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    return 0;
}

static uint32_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (uint32_t)x;
}

static uint32_t hash_uid(const uint8_t u[16])
{
    uint64_t a, b;
    memcpy(&a, u, 8);
    memcpy(&b, u + 8, 8);
    return mix64(a ^ (b * 0x9e3779b97f4a7c15ULL));
}

static uint32_t hash_sid(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return mix64(h);
}

/* The key of an id: its UUID bytes, or the string itself. */
typedef struct {
    int is_uid;
    uint8_t uid[16];
    const char *sid;
    uint32_t h;
} idkey_t;

static void key_of(const char *id, idkey_t *k)
{
    k->is_uid = uuid_parse(id, k->uid) == 0;
    k->sid = k->is_uid ? NULL : id;
    k->h = k->is_uid ? hash_uid(k->uid) : hash_sid(id);
}

static void key_of_entry(const entry_t *e, idkey_t *k)
{
    k->is_uid = e->sid == NULL;
    if (k->is_uid)
        memcpy(k->uid, e->uid, 16);
    k->sid = e->sid;
    k->h = k->is_uid ? hash_uid(e->uid) : hash_sid(e->sid);
}

static int key_eq(const idkey_t *k, const entry_t *e)
{
    if (k->is_uid)
        return e->sid == NULL && memcmp(k->uid, e->uid, 16) == 0;
    return e->sid != NULL && strcmp(k->sid, e->sid) == 0;
}

int bs__monitor_id_set(entry_t *e, const char *id)
{
    e->sid = NULL;
    if (uuid_parse(id, e->uid) == 0)
        return 0;
    e->sid = strdup(id);
    return e->sid ? 0 : -1;
}

void bs__monitor_entry_free(entry_t *e)
{
    free(e->sid);
    free(e->pk);
    e->sid = NULL;
    e->pk = NULL;
}

/* ---- scalars (labels) ------------------------------------------------------------------- */

/* s's whole text as a finite number. 1 with *v, else 0. */
static int text_number(const char *s, double *v)
{
    if (!s || !*s || *s == ' ' || *s == '\t' || *s == '\n')
        return 0;
    char *end;
    double d = strtod(s, &end);
    if (*end || !isfinite(d))
        return 0;
    *v = d;
    return 1;
}

int bs__monitor_scalar_match(const bs__scalar_t *a, const bs__scalar_t *b)
{
    if (!a->type || !b->type)
        return 0;
    if (a->type > b->type) {
        const bs__scalar_t *t = a;
        a = b;
        b = t;
    }
    double v;
    switch (a->type * 4 + b->type) {
    case 1 * 4 + 1:
        return a->num == b->num;
    case 1 * 4 + 2:
        return text_number(b->str, &v) && v == a->num;
    case 2 * 4 + 2:
        return strcmp(a->str, b->str) == 0;
    case 2 * 4 + 3:
        return strcasecmp(a->str, b->b ? "true" : "false") == 0;
    case 3 * 4 + 3:
        return a->b == b->b;
    default: /* a number and a boolean */
        return 0;
    }
}

int bs__monitor_scalar_parse(const char *json, bs__scalar_t *s, cJSON **hold)
{
    memset(s, 0, sizeof *s);
    *hold = json ? cJSON_Parse(json) : NULL;
    const cJSON *v = *hold;
    if (cJSON_IsNumber(v)) {
        s->type = 1;
        s->num = v->valuedouble;
    } else if (cJSON_IsString(v)) {
        s->type = 2;
        s->str = v->valuestring;
    } else if (cJSON_IsBool(v)) {
        s->type = 3;
        s->b = cJSON_IsTrue(v);
    } else {
        return -1;
    }
    return 0;
}

/* ---- tenants and tables ----------------------------------------------------------------- */

tenant_t *bs__monitor_tenant(bs_monitor_t *m, const char *tenant)
{
    for (tenant_t *t = m->tenants; t; t = t->next)
        if (strcmp(t->name, tenant) == 0)
            return t;
    return NULL;
}

tenant_t *bs__monitor_tenant_add(bs_monitor_t *m, const char *tenant)
{
    tenant_t *t = bs__monitor_tenant(m, tenant);
    if (t)
        return t;
    t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    snprintf(t->name, sizeof t->name, "%s", tenant);
    t->m = m;
    pthread_mutex_init(&t->wmu, NULL);
    pthread_cond_init(&t->wcv, NULL);
    t->next = m->tenants;
    m->tenants = t;
    return t;
}

static void table_free(table_t *tb)
{
    for (size_t i = 0; i < tb->count; i++)
        bs__monitor_entry_free(bs__monitor_at(tb, i));
    for (size_t c = 0; c < tb->n_chunks; c++)
        free(tb->chunks[(tb->chunk0 + c) & (tb->cap_chunks - 1)]);
    free(tb->chunks);
    free(tb->spare);
    free(tb->variants);
    for (int i = 0; i < tb->n_csets; i++) {
        for (int j = 0; j < tb->csets[i]->k; j++)
            free(tb->csets[i]->labels[j]);
        free(tb->csets[i]->labels);
        free(tb->csets[i]);
    }
    free(tb->csets);
    for (int i = 0; i < tb->n_labels; i++) {
        free(tb->labels[i]->str);
        free(tb->labels[i]);
    }
    free(tb->labels);
    free(tb);
}

static void tenant_free(tenant_t *t)
{
    for (int i = 0; i < t->n_tables; i++)
        table_free(t->tables[i]);
    free(t->tables);
    free(t->slots);
    for (int i = 0; i < t->n_pending; i++) {
        free(t->pending[i].id);
        free(t->pending[i].label_json);
    }
    free(t->pending);
    pthread_mutex_destroy(&t->wmu);
    pthread_cond_destroy(&t->wcv);
    free(t);
}

table_t *bs__monitor_table(tenant_t *t, const char *endpoint, int create)
{
    for (int i = 0; i < t->n_tables; i++)
        if (strcmp(t->tables[i]->endpoint, endpoint) == 0)
            return t->tables[i];
    if (!create || strlen(endpoint) >= 64)
        return NULL;
    if (t->n_tables == t->cap_tables) {
        int cap = t->cap_tables ? t->cap_tables * 2 : 8;
        table_t **v = realloc(t->tables, (size_t)cap * sizeof *v);
        if (!v)
            return NULL;
        t->tables = v;
        t->cap_tables = cap;
    }
    table_t *tb = calloc(1, sizeof *tb);
    if (!tb)
        return NULL;
    snprintf(tb->endpoint, sizeof tb->endpoint, "%s", endpoint);
    tb->ix = t->n_tables;
    t->tables[t->n_tables++] = tb;
    return tb;
}

entry_t *bs__monitor_entry(table_t *tb, int64_t seq)
{
    if (seq < tb->head_seq || seq >= tb->head_seq + (int64_t)tb->count)
        return NULL;
    return bs__monitor_at(tb, (size_t)(seq - tb->head_seq));
}

int bs__monitor_variant(table_t *tb, const char *name)
{
    for (int i = tb->n_variants - 1; i >= 0; i--)
        if (strcmp(tb->variants[i], name) == 0)
            return i;
    if (tb->n_variants >= MAX_VARIANTS || strlen(name) >= 64)
        return -1;
    if (tb->n_variants == tb->cap_variants) {
        int cap = tb->cap_variants ? tb->cap_variants * 2 : 8;
        char(*v)[64] = realloc(tb->variants, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        tb->variants = v;
        tb->cap_variants = cap;
    }
    snprintf(tb->variants[tb->n_variants], 64, "%s", name);
    return tb->n_variants++;
}

int bs__monitor_cset(table_t *tb, char **labels, int k)
{
    for (int i = tb->n_csets - 1; i >= 0; i--) {
        const cset_t *c = tb->csets[i];
        if (c->k != k)
            continue;
        int j = 0;
        while (j < k && strcmp(c->labels[j], labels[j]) == 0)
            j++;
        if (j == k)
            return i;
    }
    if (tb->n_csets >= MAX_CSETS || k > MAX_CLASSES)
        return -1;
    if (tb->n_csets == tb->cap_csets) {
        int cap = tb->cap_csets ? tb->cap_csets * 2 : 4;
        cset_t **v = realloc(tb->csets, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        tb->csets = v;
        tb->cap_csets = cap;
    }
    cset_t *c = calloc(1, sizeof *c);
    if (!c || !(c->labels = calloc((size_t)(k ? k : 1), sizeof *c->labels))) {
        free(c);
        return -1;
    }
    for (int j = 0; j < k; j++) {
        if (!(c->labels[j] = strdup(labels[j]))) {
            while (j-- > 0)
                free(c->labels[j]);
            free(c->labels);
            free(c);
            return -1;
        }
    }
    c->k = k;
    tb->csets[tb->n_csets] = c;
    return tb->n_csets++;
}

int bs__monitor_label(table_t *tb, const char *s, int is_bool, int bool_value)
{
    for (int i = tb->n_labels - 1; i >= 0; i--) {
        const label_t *l = tb->labels[i];
        if (l->is_bool == is_bool &&
            (is_bool ? l->bool_value == bool_value : strcmp(l->str, s) == 0))
            return i;
    }
    if (tb->n_labels >= MAX_LABELS)
        return -1;
    if (tb->n_labels == tb->cap_labels) {
        int cap = tb->cap_labels ? tb->cap_labels * 2 : 8;
        label_t **v = realloc(tb->labels, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        tb->labels = v;
        tb->cap_labels = cap;
    }
    label_t *l = calloc(1, sizeof *l);
    if (!l || !(l->str = strdup(is_bool ? (bool_value ? "true" : "false") : s))) {
        free(l);
        return -1;
    }
    l->is_bool = is_bool;
    l->bool_value = bool_value;
    tb->labels[tb->n_labels] = l;
    return tb->n_labels++;
}

/* ---- the index -------------------------------------------------------------------------- */

static entry_t *slot_entry(tenant_t *t, const slot_t *s, table_t **tb)
{
    if (s->table >= (uint32_t)t->n_tables)
        return NULL;
    *tb = t->tables[s->table];
    return bs__monitor_entry(*tb, s->seq);
}

static entry_t *lookup_key(tenant_t *t, const idkey_t *k, table_t **tb, size_t *slot_ix)
{
    if (!t->n_slots)
        return NULL;
    size_t mask = t->n_slots - 1;
    for (size_t i = k->h & mask;; i = (i + 1) & mask) {
        slot_t *s = &t->slots[i];
        if (s->seq < 0)
            return NULL;
        if (s->h != k->h)
            continue;
        table_t *stb;
        entry_t *e = slot_entry(t, s, &stb);
        if (e && key_eq(k, e)) {
            if (tb)
                *tb = stb;
            if (slot_ix)
                *slot_ix = i;
            return e;
        }
    }
}

entry_t *bs__monitor_lookup(tenant_t *t, const char *id, table_t **tb)
{
    idkey_t k;
    key_of(id, &k);
    return lookup_key(t, &k, tb, NULL);
}

entry_t *bs__monitor_lookup_entry(tenant_t *t, const entry_t *e, table_t **tb)
{
    idkey_t k;
    key_of_entry(e, &k);
    return lookup_key(t, &k, tb, NULL);
}

static void slot_put(slot_t *slots, size_t n, uint32_t h, uint32_t table, int64_t seq)
{
    size_t mask = n - 1, i = h & mask;
    while (slots[i].seq >= 0)
        i = (i + 1) & mask;
    slots[i] = (slot_t){.h = h, .table = table, .seq = seq};
}

static int index_grow(tenant_t *t)
{
    size_t n = t->n_slots ? t->n_slots * 2 : 1024;
    slot_t *s = malloc(n * sizeof *s);
    if (!s)
        return -1;
    for (size_t i = 0; i < n; i++)
        s[i].seq = -1;
    for (size_t i = 0; i < t->n_slots; i++)
        if (t->slots[i].seq >= 0)
            slot_put(s, n, t->slots[i].h, t->slots[i].table, t->slots[i].seq);
    free(t->slots);
    t->slots = s;
    t->n_slots = n;
    return 0;
}

/* Removes slot i (backward shift: every later entry of the probe run that may move closer
 * to its home moves into the hole). */
static void slot_remove(tenant_t *t, size_t i)
{
    size_t mask = t->n_slots - 1, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (t->slots[j].seq < 0)
            break;
        size_t home = t->slots[j].h & mask;
        /* j's entry may fill i unless its home lies cyclically in (i, j] */
        int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            t->slots[i] = t->slots[j];
            i = j;
        }
    }
    t->slots[i].seq = -1;
    t->used--;
}

static void index_remove(tenant_t *t, const table_t *tb, int64_t seq, const entry_t *e)
{
    idkey_t k;
    key_of_entry(e, &k);
    if (!t->n_slots)
        return;
    size_t mask = t->n_slots - 1;
    for (size_t i = k.h & mask;; i = (i + 1) & mask) {
        slot_t *s = &t->slots[i];
        if (s->seq < 0)
            return; /* not indexed (a newer entry with the same id replaced it) */
        if (s->table == (uint32_t)tb->ix && s->seq == seq) {
            slot_remove(t, i);
            return;
        }
    }
}

/* ---- insert and evict ------------------------------------------------------------------- */

/* One more chunk at the ring's end: the spare, else a new one (rare: a chunk per
 * RING_CHUNK entries, and the pointer ring doubles, copying pointers only). 0 or -1. */
static int ring_grow(table_t *tb)
{
    if (tb->n_chunks == tb->cap_chunks) {
        size_t cap = tb->cap_chunks ? tb->cap_chunks * 2 : 8;
        entry_t **v = malloc(cap * sizeof *v);
        if (!v)
            return -1;
        for (size_t c = 0; c < tb->n_chunks; c++)
            v[c] = tb->chunks[(tb->chunk0 + c) & (tb->cap_chunks - 1)];
        free(tb->chunks);
        tb->chunks = v;
        tb->cap_chunks = cap;
        tb->chunk0 = 0;
    }
    entry_t *ch = tb->spare;
    tb->spare = NULL;
    if (!ch && !(ch = malloc(RING_CHUNK * sizeof *ch)))
        return -1;
    tb->chunks[(tb->chunk0 + tb->n_chunks) & (tb->cap_chunks - 1)] = ch;
    tb->n_chunks++;
    return 0;
}

int bs__monitor_insert(bs_monitor_t *m, tenant_t *t, table_t *tb, entry_t *e)
{
    if ((tb->head_off + tb->count == tb->n_chunks * RING_CHUNK && ring_grow(tb) != 0) ||
        (!(e->flags & E_SHADOW) && (t->used + 1) * 10 > t->n_slots * 7 && index_grow(t) != 0)) {
        bs__monitor_entry_free(e);
        return -1;
    }
    int64_t seq = tb->head_seq + (int64_t)tb->count;
    *bs__monitor_at(tb, tb->count) = *e;
    tb->count++;
    m->entries++;
    if (!(e->flags & E_SHADOW)) {
        idkey_t k;
        key_of_entry(e, &k);
        size_t at;
        table_t *otb;
        if (lookup_key(t, &k, &otb, &at)) { /* the id again: the newest entry wins */
            t->slots[at].table = (uint32_t)tb->ix;
            t->slots[at].seq = seq;
        } else {
            slot_put(t->slots, t->n_slots, k.h, (uint32_t)tb->ix, seq);
            t->used++;
        }
    }
    return 0;
}

static void pop_head(bs_monitor_t *m, tenant_t *t, table_t *tb)
{
    entry_t *e = bs__monitor_at(tb, 0);
    if (!(e->flags & E_SHADOW))
        index_remove(t, tb, tb->head_seq, e);
    bs__monitor_entry_free(e);
    tb->count--;
    if (++tb->head_off == RING_CHUNK) { /* the head's chunk is empty: keep it as the spare */
        entry_t *ch = tb->chunks[tb->chunk0];
        tb->chunk0 = (tb->chunk0 + 1) & (tb->cap_chunks - 1);
        tb->n_chunks--;
        tb->head_off = 0;
        if (tb->spare)
            free(ch);
        else
            tb->spare = ch;
    }
    tb->head_seq++;
    m->entries--;
    m->evicted++;
}

void bs__monitor_evict(bs_monitor_t *m, int64_t now_ms)
{
    int64_t floor = now_ms - m->window_ms;
    for (tenant_t *t = m->tenants; t; t = t->next)
        for (int i = 0; i < t->n_tables; i++) {
            table_t *tb = t->tables[i];
            while (tb->count && bs__monitor_at(tb, 0)->time_ms < floor)
                pop_head(m, t, tb);
        }
    while (m->max_predictions > 0 && m->entries > m->max_predictions) {
        tenant_t *bt = NULL;
        table_t *best = NULL;
        for (tenant_t *t = m->tenants; t; t = t->next)
            for (int i = 0; i < t->n_tables; i++) {
                table_t *tb = t->tables[i];
                if (tb->count &&
                    (!best || bs__monitor_at(tb, 0)->time_ms < bs__monitor_at(best, 0)->time_ms)) {
                    best = tb;
                    bt = t;
                }
            }
        if (!best)
            break;
        pop_head(m, bt, best);
    }
}

/* ---- the object ------------------------------------------------------------------------- */

bs_monitor_t *bs_monitor_new(const bs_monitor_opts_t *o, bs_err_t *err)
{
    if (!o || !o->log) {
        bs_err_set(err, BS_EINVAL, "the monitor needs the log");
        return NULL;
    }
    bs_monitor_t *m = calloc(1, sizeof *m);
    if (!m) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    m->log = o->log;
    m->predlog = o->predlog;
    m->window_ms = o->window_ms > 0 ? o->window_ms : 24 * 3600 * 1000LL;
    m->max_predictions = o->max_predictions > 0 ? o->max_predictions : 2000000;
    m->jetstream = strcmp(bs_log_backend(o->log), "jetstream") == 0;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->progress, NULL);
    if (bs__monitor_feed_start(m) != 0) {
        bs__monitor_feed_free(m);
        pthread_mutex_destroy(&m->mu);
        pthread_cond_destroy(&m->progress);
        free(m);
        bs_err_set(err, BS_ENOMEM, "cannot start the monitor's feed thread");
        return NULL;
    }
    return m;
}

void bs_monitor_free(bs_monitor_t *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->stopping = 1;
    pthread_cond_broadcast(&m->progress);
    pthread_mutex_unlock(&m->mu);
    for (tenant_t *t = m->tenants; t; t = t->next)
        bs__monitor_tail_stop(m, t);
    bs__monitor_feed_stop(m);
    bs__monitor_feed_free(m);
    while (m->tenants) {
        tenant_t *t = m->tenants;
        m->tenants = t->next;
        tenant_free(t);
    }
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->progress);
    free(m);
}

int bs_monitor_track(bs_monitor_t *m, const char *tenant, bs_err_t *err)
{
    if (!m || !tenant || !*tenant || strlen(tenant) >= 64)
        return bs_err_set(err, BS_EINVAL, "a tenant name is required");
    pthread_mutex_lock(&m->mu);
    tenant_t *t = bs__monitor_tenant(m, tenant);
    int running = t && t->thread_started;
    int stopping = m->stopping;
    pthread_mutex_unlock(&m->mu);
    if (running)
        return 0;
    if (stopping)
        return bs_err_set(err, BS_EUNAVAIL, "the monitor is stopping");
    /* Both topics must exist before the tail can take its start positions. */
    bs_log_topic_stats_t s;
    if (bs_log_topic_stats(m->log, tenant, BS_PREDLOG_TOPIC, &s, err) != 0 ||
        bs_log_topic_stats(m->log, tenant, BS_MONITOR_FEEDBACK_TOPIC, &s, err) != 0)
        return err ? err->code : BS_ENOTFOUND;
    pthread_mutex_lock(&m->mu);
    t = bs__monitor_tenant_add(m, tenant);
    if (!t) {
        pthread_mutex_unlock(&m->mu);
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    if (t->thread_started) { /* another caller won the race */
        pthread_mutex_unlock(&m->mu);
        return 0;
    }
    /* Started under the lock: bs_monitor_free (which sets stopping under it) then either
     * sees the thread or this call sees stopping. The thread's first step takes the lock. */
    int rc = m->stopping ? bs_err_set(err, BS_EUNAVAIL, "the monitor is stopping")
                         : bs__monitor_tail_start(m, t, err);
    if (rc == 0)
        t->thread_started = 1;
    pthread_mutex_unlock(&m->mu);
    if (rc)
        return rc;
    BS_LOG(BS_LOG_INFO, "monitor", "tailing %s/%s and %s/%s (window %lld ms)", tenant,
           BS_PREDLOG_TOPIC, tenant, BS_MONITOR_FEEDBACK_TOPIC, (long long)m->window_ms);
    return 0;
}

/* ---- metrics ---------------------------------------------------------------------------- */

void bs_monitor_metrics(bs_monitor_t *m, bs_buf_t *b)
{
    if (!m)
        return;
    typedef struct {
        char tenant[64];
        int64_t pred_next, fb_next;
        int started;
    } pos_t;
    pos_t *pos = NULL;
    int n = 0;
    bs_buf_puts(b, "# HELP basalt_feedback_received_total Feedback items accepted through this "
                   "replica\n# TYPE basalt_feedback_received_total counter\n");
    pthread_mutex_lock(&m->mu);
    for (tenant_t *t = m->tenants; t; t = t->next) {
        n++;
        for (int i = 0; i < t->n_tables; i++)
            bs_buf_printf(b, "basalt_feedback_received_total{tenant=\"%s\",endpoint=\"%s\"} %llu\n",
                          t->name, t->tables[i]->endpoint,
                          (unsigned long long)t->tables[i]->feedback_received);
    }
    bs_buf_puts(b, "# HELP basalt_feedback_rejected_total Feedback items refused, by reason\n"
                   "# TYPE basalt_feedback_rejected_total counter\n");
    for (tenant_t *t = m->tenants; t; t = t->next) {
        bs_buf_printf(b,
                      "basalt_feedback_rejected_total{tenant=\"%s\",reason=\"unknown_id\"} %llu\n",
                      t->name, (unsigned long long)t->rejected_unknown);
        bs_buf_printf(b, "basalt_feedback_rejected_total{tenant=\"%s\",reason=\"invalid\"} %llu\n",
                      t->name, (unsigned long long)t->rejected_invalid);
    }
    bs_buf_printf(b,
                  "# HELP basalt_monitor_entries Logged predictions held in the monitor's tables\n"
                  "# TYPE basalt_monitor_entries gauge\nbasalt_monitor_entries %lld\n"
                  "# HELP basalt_monitor_evicted_total Entries evicted (window or "
                  "monitor_max_predictions)\n# TYPE basalt_monitor_evicted_total counter\n"
                  "basalt_monitor_evicted_total %llu\n"
                  "# HELP basalt_monitor_feedback_joined_total Feedback records joined to a "
                  "prediction by this replica's tails\n"
                  "# TYPE basalt_monitor_feedback_joined_total counter\n"
                  "basalt_monitor_feedback_joined_total %llu\n",
                  (long long)m->entries, (unsigned long long)m->evicted,
                  (unsigned long long)m->feedback_joined);
    bs_buf_puts(
        b, "# HELP basalt_monitor_bad_records_total Records of the predictions or feedback "
           "topics the tail could not read\n# TYPE basalt_monitor_bad_records_total counter\n");
    for (tenant_t *t = m->tenants; t; t = t->next)
        bs_buf_printf(b, "basalt_monitor_bad_records_total{tenant=\"%s\"} %llu\n", t->name,
                      (unsigned long long)t->bad_records);
    if (n)
        pos = calloc((size_t)n, sizeof *pos);
    int k = 0;
    for (tenant_t *t = m->tenants; t && pos; t = t->next, k++) {
        snprintf(pos[k].tenant, sizeof pos[k].tenant, "%s", t->name);
        pos[k].pred_next = t->pred_next;
        pos[k].fb_next = t->fb_next;
        pos[k].started = t->started;
    }
    pthread_mutex_unlock(&m->mu);
    /* The lag, from the log's stats: outside the lock (the log has its own). */
    bs_buf_puts(b, "# HELP basalt_monitor_tail_lag_records Records of the topic the monitor's "
                   "tail has not read yet\n# TYPE basalt_monitor_tail_lag_records gauge\n");
    for (int i = 0; pos && i < n; i++) {
        if (!pos[i].started)
            continue;
        const char *topics[2] = {BS_PREDLOG_TOPIC, BS_MONITOR_FEEDBACK_TOPIC};
        int64_t at[2] = {pos[i].pred_next, pos[i].fb_next};
        for (int j = 0; j < 2; j++) {
            bs_log_topic_stats_t s;
            bs_err_t err;
            if (bs_log_topic_stats(m->log, pos[i].tenant, topics[j], &s, &err) != 0)
                continue;
            int64_t lag = s.next_offset - at[j];
            bs_buf_printf(b, "basalt_monitor_tail_lag_records{tenant=\"%s\",topic=\"%s\"} %lld\n",
                          pos[i].tenant, topics[j], (long long)(lag > 0 ? lag : 0));
        }
    }
    free(pos);
}
