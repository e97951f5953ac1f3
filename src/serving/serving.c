/* Routing snapshot, slots, loading and eviction; see serving.h. */
#include "serving/serving_int.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/log.h"
#include "base/rcu.h"
#include "base/time.h"
#include "ml/signature.h"

/* ---- handles --------------------------------------------------------------------------- */

static uint32_t hash_name(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

int bs_model_handle_feature(const bs_model_handle_t *h, const char *name, size_t len)
{
    uint32_t i = hash_name(name, len) & h->name_mask;
    for (;;) {
        int v = h->name_index[i];
        if (!v)
            return -1;
        if (h->name_len[v - 1] == len) {
            /* Names are short: a byte loop beats a library call here. */
            const char *fn = h->sig.features[v - 1].name;
            size_t k = 0;
            while (k < len && fn[k] == name[k])
                k++;
            if (k == len)
                return v - 1;
        }
        i = (i + 1) & h->name_mask;
    }
}

/* The feature's BS__FAST_* bits (see serving_int.h). */
static unsigned char fast_bits(const bs_ml_feature_t *f, size_t n)
{
    unsigned char bits = 0;
    const unsigned char *u = (const unsigned char *)f->name;
    size_t i = 0;
    while (i < n) {
        if (u[i] == '"' || u[i] == '\\' || u[i] < 0x20)
            break;
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t l = bs_utf8_len(u + i, n - i);
        if (!l)
            break;
        i += l;
    }
    if (i == n)
        bits |= BS__FAST_NAME_LITERAL;
    if (f->type == BS_ML_FLOAT && !f->has_min && !f->has_max)
        bits |= BS__FAST_PLAIN_NUMBER;
    return bits;
}

static void handle_free(bs_model_handle_t *h)
{
    if (!h)
        return;
    bs_ml_model_free(h->model);
    bs_ml_schema_deinit(&h->sig);
    free(h->name_index);
    free(h->name_len);
    free(h->fast);
    free(h);
}

void bs_serving_release(bs_model_handle_t *h)
{
    if (h && atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) == 1)
        handle_free(h);
}

const char *bs_model_handle_name(const bs_model_handle_t *h) { return h->slot->name; }
int bs_model_handle_version(const bs_model_handle_t *h) { return h->slot->version; }
const bs_ml_schema_t *bs_model_handle_schema(const bs_model_handle_t *h) { return &h->sig; }
const bs_ml_model_t *bs_model_handle_model(const bs_model_handle_t *h) { return h->model; }

bs_model_handle_t *bs__serving_handle_new(bs_ml_model_t *model, const cJSON *input_override,
                                          const cJSON *output_override, bs_err_t *err)
{
    bs_model_handle_t *h = calloc(1, sizeof *h);
    if (!h) {
        bs_ml_model_free(model);
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    h->model = model;
    int rc = bs_ml_signature_build(h->model, input_override, output_override, &h->sig, err);
    if (rc == 0) {
        uint32_t cap = 8;
        while (cap < (uint32_t)h->sig.n_features * 2)
            cap <<= 1;
        h->name_index = calloc(cap, sizeof(int));
        h->name_mask = cap - 1;
        h->name_len = calloc((size_t)h->sig.n_features + 1, sizeof(uint32_t));
        h->fast = calloc((size_t)h->sig.n_features + 1, 1);
        if (!h->name_index || !h->name_len || !h->fast)
            rc = bs_err_set(err, BS_ENOMEM, "out of memory");
        for (int i = 0; !rc && i < h->sig.n_features; i++) {
            const char *n = h->sig.features[i].name;
            h->name_len[i] = (uint32_t)strlen(n);
            uint32_t k = hash_name(n, h->name_len[i]) & h->name_mask;
            while (h->name_index[k])
                k = (k + 1) & h->name_mask;
            h->name_index[k] = i + 1;
            h->fast[i] = fast_bits(&h->sig.features[i], h->name_len[i]);
        }
    }
    if (rc) {
        handle_free(h);
        return NULL;
    }
    h->memory = bs_ml_model_memory(h->model) + sizeof *h;
    atomic_init(&h->refs, 1);
    return h;
}

static bs_model_handle_t *load_handle(bs_serving_t *s, bs__slot_t *slot, bs_err_t *err)
{
    bs_registry_artifact_t art;
    if (bs_registry_artifact_load(s->reg, slot->model_id, slot->version, &art, err) != 0) {
        if (err->code != BS_ENOTFOUND)
            err->code = BS_EUNAVAIL;
        return NULL;
    }
    bs_ml_model_t *model = bs_ml_load(art.format, art.bytes, art.len, err);
    bs_model_handle_t *h = NULL;
    if (model) {
        cJSON *ov = art.schema_override ? cJSON_Parse(art.schema_override) : NULL;
        h = bs__serving_handle_new(model, cJSON_GetObjectItemCaseSensitive(ov, "input_schema"),
                                   cJSON_GetObjectItemCaseSensitive(ov, "output_schema"), err);
        cJSON_Delete(ov);
    }
    bs_registry_artifact_deinit(&art);
    if (!h) {
        err->code = err->code == BS_ENOMEM ? BS_ENOMEM : BS_EUNAVAIL;
        return NULL;
    }
    h->slot = slot; /* the slot's reference */
    return h;
}

/* The slot's reference is dropped after a grace period, so readers that saw the
 * pointer before it was unpublished have taken theirs. */
static void drop_slot_ref(void *p) { bs_serving_release(p); }

/* Unpublishes slot's handle (if any). Whoever exchanges it out accounts for it, so a
 * racing unload and load-then-recheck (slot_load) give it back exactly once. */
static int unload(bs_serving_t *s, bs__slot_t *slot)
{
    bs_model_handle_t *h = atomic_exchange(&slot->handle, NULL);
    if (!h)
        return 0;
    atomic_fetch_sub(&s->loaded_bytes, h->memory);
    BS_LOG(BS_LOG_INFO, "serving", "unloaded %s version %d", slot->name, slot->version);
    bs_rcu_retire(h, drop_slot_ref);
    return 1;
}

/* Evicts least recently used versions until under budget (never `keep`). Holds s->lock. */
static void evict(bs_serving_t *s, bs__slot_t *keep)
{
    while (atomic_load(&s->loaded_bytes) > s->o.memory_budget) {
        bs__slot_t *victim = NULL;
        uint64_t oldest = UINT64_MAX;
        for (bs__slot_t *sl = s->slots; sl; sl = sl->next) {
            if (sl == keep || !atomic_load(&sl->handle))
                continue;
            uint64_t t = atomic_load(&sl->last_used_ns);
            if (t < oldest) {
                oldest = t;
                victim = sl;
            }
        }
        if (!victim)
            break;
        if (unload(s, victim))
            atomic_fetch_add(&victim->evictions, 1);
    }
}

/* After a large load or free, glibc keeps the pages in its arenas; hand them back so
 * RSS follows what is in use (milliseconds at most; loader and worker threads only). */
static void give_back_memory(size_t bytes)
{
#ifdef __GLIBC__
    if (bytes >= (1u << 20))
        malloc_trim(0);
#else
    (void)bytes;
#endif
}

static bs_model_handle_t *slot_load(bs_serving_t *s, bs__slot_t *slot, bs_err_t *err)
{
    pthread_mutex_lock(&slot->load_lock);
    bs_model_handle_t *h = atomic_load(&slot->handle);
    if (!h && atomic_load(&slot->dead)) {
        bs_err_setf(err, BS_ENOTFOUND, "model", "model '%s' was deleted", slot->name);
    } else if (!h) {
        uint64_t t0 = bs_time_mono_ns();
        BS_LOG(BS_LOG_INFO, "serving", "loading %s version %d", slot->name, slot->version);
        h = load_handle(s, slot, err);
        if (!h) {
            atomic_fetch_add(&slot->load_failures, 1);
        } else {
            atomic_store(&slot->last_used_ns, bs_time_mono_ns());
            atomic_fetch_add(&s->loaded_bytes, h->memory);
            atomic_store(&slot->handle, h);
            atomic_fetch_add(&slot->loads, 1);
            BS_LOG(BS_LOG_INFO, "serving", "loaded %s version %d (%zu bytes) in %.2f ms", slot->name,
                   slot->version, h->memory, (double)(bs_time_mono_ns() - t0) / 1e6);
            /* Deleted meanwhile: the rebuild's unload may have run before the store above
             * (both sides are seq_cst, so one of them sees the other). */
            if (atomic_load(&slot->dead)) {
                unload(s, slot);
                h = NULL;
                bs_err_setf(err, BS_ENOTFOUND, "model", "model '%s' was deleted", slot->name);
            }
        }
        give_back_memory(h ? h->memory : 0);
    }
    pthread_mutex_unlock(&slot->load_lock);
    if (h) {
        pthread_mutex_lock(&s->lock);
        evict(s, slot);
        pthread_mutex_unlock(&s->lock);
    }
    return h;
}

/* ---- slots ----------------------------------------------------------------------------- */

static void slot_destroy(bs__slot_t *sl)
{
    bs__batcher_free(sl->batcher); /* completes what is queued */
    bs_model_handle_t *h = atomic_exchange(&sl->handle, NULL);
    if (h)
        bs_serving_release(h);
    pthread_mutex_destroy(&sl->load_lock);
    pthread_mutex_destroy(&sl->wait_lock);
    free(sl);
}

static void slot_unref(bs__slot_t *sl)
{
    if (atomic_fetch_sub(&sl->refs, 1) == 1)
        slot_destroy(sl);
}

static void slot_unref_cb(void *p) { slot_unref(p); }

static size_t slot_hash(uint32_t id_hash, int version)
{
    return (size_t)((id_hash ^ (uint32_t)version) * 2654435761u);
}

/* Doubles the index when it is over 3/4 full. Holds s->lock. 0 or BS_ENOMEM. */
static int index_grow(bs_serving_t *s)
{
    if (s->index && s->n_slots < (s->index_mask + 1) / 4 * 3)
        return 0;
    size_t cap = s->index ? (s->index_mask + 1) * 2 : 64;
    bs__slot_t **ix = calloc(cap, sizeof *ix);
    if (!ix)
        return BS_ENOMEM;
    for (bs__slot_t *sl = s->slots; sl; sl = sl->next) {
        size_t k = slot_hash(sl->id_hash, sl->version) & (cap - 1);
        sl->hnext = ix[k];
        ix[k] = sl;
    }
    free(s->index);
    s->index = ix;
    s->index_mask = cap - 1;
    return 0;
}

/* The slot of (model id, version), created when missing. Holds s->lock. */
static bs__slot_t *slot_get(bs_serving_t *s, const bs__snap_model_t *m, uint32_t id_hash,
                            int version)
{
    if (s->index) {
        for (bs__slot_t *sl = s->index[slot_hash(id_hash, version) & s->index_mask]; sl;
             sl = sl->hnext)
            if (sl->version == version && sl->id_hash == id_hash &&
                strcmp(sl->model_id, m->model_id) == 0)
                return sl;
    }
    if (index_grow(s) != 0)
        return NULL;
    bs__slot_t *sl = calloc(1, sizeof *sl);
    if (!sl)
        return NULL;
    snprintf(sl->tenant, sizeof sl->tenant, "%s", m->tenant);
    snprintf(sl->name, sizeof sl->name, "%s", m->name);
    snprintf(sl->model_id, sizeof sl->model_id, "%s", m->model_id);
    sl->version = version;
    sl->id_hash = id_hash;
    atomic_init(&sl->refs, 1);
    pthread_mutex_init(&sl->load_lock, NULL);
    pthread_mutex_init(&sl->wait_lock, NULL);
    sl->next = s->slots;
    if (s->slots)
        s->slots->prev = sl;
    s->slots = sl;
    size_t k = slot_hash(id_hash, version) & s->index_mask;
    sl->hnext = s->index[k];
    s->index[k] = sl;
    s->n_slots++;
    return sl;
}

/* Takes a slot out of the list and the index; its memory goes after a grace period (and
 * once queued loads let go of it). Holds s->lock. */
static void slot_retire(bs_serving_t *s, bs__slot_t *sl)
{
    atomic_store(&sl->dead, 1);
    unload(s, sl);
    if (sl->prev)
        sl->prev->next = sl->next;
    else
        s->slots = sl->next;
    if (sl->next)
        sl->next->prev = sl->prev;
    bs__slot_t **pp = &s->index[slot_hash(sl->id_hash, sl->version) & s->index_mask];
    while (*pp != sl)
        pp = &(*pp)->hnext;
    *pp = sl->hnext;
    s->n_slots--;
    bs_rcu_retire(sl, slot_unref_cb);
}

/* ---- snapshot -------------------------------------------------------------------------- */

static void snapshot_free(void *p)
{
    bs__snapshot_t *sn = p;
    if (!sn)
        return;
    for (int i = 0; i < sn->n; i++) {
        free(sn->models[i].versions);
        free(sn->models[i].aliases);
    }
    free(sn->models);
    free(sn);
}

typedef struct {
    bs_serving_t *s;
    bs__snapshot_t *sn;
    int cap;
    int oom;
    int *by_id; /* see index_models */
    size_t by_id_mask;
} build_t;

static bs__snap_model_t *find_model(bs__snapshot_t *sn, const char *tenant, const char *name)
{
    int lo = 0, hi = sn->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(sn->models[mid].tenant, tenant);
        if (!c)
            c = strcmp(sn->models[mid].name, name);
        if (!c)
            return &sn->models[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

/* The model's batching settings over the server's defaults (JSON text or NULL). */
static void batching_settings(bs__snap_model_t *m, const bs_serving_t *s, const char *json)
{
    m->batch_enabled = -1;
    m->batch_max_size = s->o.batch_max_size;
    m->batch_delay_us = (int)s->o.batch_delay_us;
    if (!json)
        return;
    cJSON *j = cJSON_Parse(json);
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(j, "enabled");
    const cJSON *sz = cJSON_GetObjectItemCaseSensitive(j, "max_batch_size");
    const cJSON *dl = cJSON_GetObjectItemCaseSensitive(j, "max_queue_delay_us");
    if (cJSON_IsBool(en))
        m->batch_enabled = cJSON_IsTrue(en);
    if (cJSON_IsNumber(sz))
        m->batch_max_size = sz->valueint;
    if (cJSON_IsNumber(dl))
        m->batch_delay_us = dl->valueint;
    cJSON_Delete(j);
}

/* Models arrive ordered by tenant, name (the snapshot's order). */
static int model_row(const bs_meta_row_t *row, void *ud)
{
    build_t *b = ud;
    bs__snapshot_t *sn = b->sn;
    if (sn->n == b->cap) {
        int cap = b->cap ? b->cap * 2 : 16;
        bs__snap_model_t *v = realloc(sn->models, (size_t)cap * sizeof *v);
        if (!v) {
            b->oom = 1;
            return 1;
        }
        sn->models = v;
        b->cap = cap;
    }
    bs__snap_model_t *m = &sn->models[sn->n++];
    memset(m, 0, sizeof *m);
    snprintf(m->tenant, sizeof m->tenant, "%s", bs_meta_row_text(row, 0));
    snprintf(m->name, sizeof m->name, "%s", bs_meta_row_text(row, 1));
    snprintf(m->model_id, sizeof m->model_id, "%s", bs_meta_row_text(row, 2));
    batching_settings(m, b->s, bs_meta_row_is_null(row, 3) ? NULL : bs_meta_row_text(row, 3));
    return 0;
}

/* An open-addressing index of the snapshot's models by id (2^k entries holding index+1),
 * so version rows can come in the table's own order: a sequential scan of model_versions
 * instead of one b-tree seek per version through its primary-key index. */
static int index_models(build_t *b)
{
    size_t cap = 16;
    while (cap < (size_t)b->sn->n * 2)
        cap <<= 1;
    b->by_id = calloc(cap, sizeof *b->by_id);
    if (!b->by_id)
        return BS_ENOMEM;
    b->by_id_mask = cap - 1;
    for (int i = 0; i < b->sn->n; i++) {
        const char *id = b->sn->models[i].model_id;
        size_t k = hash_name(id, strlen(id)) & b->by_id_mask;
        while (b->by_id[k])
            k = (k + 1) & b->by_id_mask;
        b->by_id[k] = i + 1;
    }
    return 0;
}

static bs__snap_model_t *model_by_id(build_t *b, const char *id)
{
    size_t k = hash_name(id, strlen(id)) & b->by_id_mask;
    for (int v; (v = b->by_id[k]); k = (k + 1) & b->by_id_mask)
        if (strcmp(b->sn->models[v - 1].model_id, id) == 0)
            return &b->sn->models[v - 1];
    return NULL;
}

/* Rows in table order: (model_id, version, status). Slots are attached later. */
static int version_row(const bs_meta_row_t *row, void *ud)
{
    build_t *b = ud;
    bs__snap_model_t *m = model_by_id(b, bs_meta_row_text(row, 0));
    if (!m)
        return 0;
    if (m->n_versions == m->cap_versions) {
        int cap = m->cap_versions ? m->cap_versions * 2 : 4;
        bs__snap_version_t *v = realloc(m->versions, (size_t)cap * sizeof *v);
        if (!v) {
            b->oom = 1;
            return 1;
        }
        m->versions = v;
        m->cap_versions = cap;
    }
    bs__snap_version_t *e = &m->versions[m->n_versions++];
    e->version = (int)bs_meta_row_int(row, 1);
    const char *status = bs_meta_row_text(row, 2);
    e->approved = strcmp(status, "approved") == 0;
    e->rejected = strcmp(status, "rejected") == 0;
    e->slot = NULL;
    return 0;
}

static int cmp_version(const void *a, const void *b)
{
    int x = ((const bs__snap_version_t *)a)->version, y = ((const bs__snap_version_t *)b)->version;
    return (x > y) - (x < y);
}

static int alias_row(const bs_meta_row_t *row, void *ud)
{
    build_t *b = ud;
    bs__snap_model_t *m = find_model(b->sn, bs_meta_row_text(row, 0), bs_meta_row_text(row, 1));
    if (!m)
        return 0;
    bs__snap_alias_t *a = realloc(m->aliases, (size_t)(m->n_aliases + 1) * sizeof *a);
    if (!a) {
        b->oom = 1;
        return 1;
    }
    m->aliases = a;
    bs__snap_alias_t *e = &m->aliases[m->n_aliases++];
    snprintf(e->alias, sizeof e->alias, "%s", bs_meta_row_text(row, 2));
    e->version = (int)bs_meta_row_int(row, 3);
    return 0;
}

/* Versions are ascending: binary search (a model can have thousands). */
static bs__snap_version_t *find_version(bs__snap_model_t *m, int version)
{
    int lo = 0, hi = m->n_versions - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (m->versions[mid].version == version)
            return &m->versions[mid];
        if (m->versions[mid].version < version)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

/* Reads every model, version and alias from the store into a snapshot without slots.
 * The three queries run in one transaction (one consistent state of the store). */
static bs__snapshot_t *snapshot_read(bs_serving_t *s, bs_err_t *err)
{
    build_t b = {.s = s};
    b.sn = calloc(1, sizeof *b.sn);
    if (!b.sn) {
        bs_err_set(err, BS_ENOMEM, "out of memory building the routing snapshot");
        return NULL;
    }
    int rc = bs_meta_tx_begin(s->meta, err);
    if (rc) {
        snapshot_free(b.sn);
        return NULL;
    }
    /* Tenant and name collate with SQLite's BINARY order, the same as strcmp (on
     * PostgreSQL every text column is COLLATE "C": byte order too). */
    rc = bs_meta_query(s->meta, "SELECT tenant, name, id, batching FROM models ORDER BY tenant, name",
                       NULL, 0, model_row, &b, err);
    if (!rc && !b.oom && index_models(&b) != 0)
        b.oom = 1;
    if (!rc && !b.oom)
        rc = bs_meta_query(s->meta,
                           bs_meta_dialect(s->meta) == BS_META_POSTGRES
                               ? "SELECT model_id, version, status FROM model_versions"
                               : "SELECT model_id, version, status FROM model_versions"
                                 " INDEXED BY model_versions_routing",
                           NULL, 0, version_row, &b, err);
    if (!rc && !b.oom)
        rc = bs_meta_query(s->meta,
                           "SELECT m.tenant, m.name, a.alias, a.version FROM model_aliases a"
                           " JOIN models m ON m.id = a.model_id",
                           NULL, 0, alias_row, &b, err);
    /* read-only: committed rather than rolled back, so that a rebuild that runs inside a
     * caller's transaction (a rollout's promotion moves `champion`, whose change hook
     * rebuilds here) does not doom it */
    if (rc)
        bs_meta_tx_rollback(s->meta);
    else
        rc = bs_meta_tx_commit(s->meta, err);
    free(b.by_id);
    if (!rc && b.oom)
        rc = bs_err_set(err, BS_ENOMEM, "out of memory building the routing snapshot");
    if (rc) {
        snapshot_free(b.sn);
        return NULL;
    }
    /* Table order is insertion order, which is version order within a model (a version is
     * MAX + 1); sort only if that ever does not hold. */
    for (int i = 0; i < b.sn->n; i++) {
        bs__snap_model_t *m = &b.sn->models[i];
        for (int k = 1; k < m->n_versions; k++)
            if (m->versions[k - 1].version >= m->versions[k].version) {
                qsort(m->versions, (size_t)m->n_versions, sizeof *m->versions, cmp_version);
                break;
            }
    }
    return b.sn;
}

int bs_serving_refresh(bs_serving_t *s, bs_err_t *err)
{
    /* Coalescing: the change this call reports was committed before the increment, so a
     * rebuild that read gen_requested >= want before its query sees it. */
    uint64_t want = atomic_fetch_add(&s->gen_requested, 1) + 1;
    pthread_mutex_lock(&s->refresh_lock);
    if (s->gen_built >= want) {
        pthread_mutex_unlock(&s->refresh_lock);
        return 0;
    }
    uint64_t gen = atomic_load(&s->gen_requested);
    bs__snapshot_t *sn = snapshot_read(s, err);
    if (!sn) {
        pthread_mutex_unlock(&s->refresh_lock);
        return err->code;
    }
    /* Attach slots (O(1) each through the index), retire the slots of versions that are
     * gone, unload rejected versions, and find versions an alias newly points at. */
    size_t n_eager = 0, cap_eager = 0, n_alias = 0, cap_alias = 0, attached = 0;
    bs__slot_t **eager = NULL, **aliased = NULL;
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < sn->n && !rc; i++) {
        bs__snap_model_t *m = &sn->models[i];
        uint32_t id_hash = hash_name(m->model_id, strlen(m->model_id));
        for (int k = 0; k < m->n_versions; k++) {
            bs__snap_version_t *v = &m->versions[k];
            if (!(v->slot = slot_get(s, m, id_hash, v->version))) {
                rc = bs_err_set(err, BS_ENOMEM, "out of memory building the routing snapshot");
                break;
            }
            bs__slot_t *sl = v->slot;
            sl->seen_gen = gen;
            attached++;
            if (atomic_load_explicit(&sl->batch_enabled, memory_order_relaxed) != m->batch_enabled ||
                atomic_load_explicit(&sl->batch_max_size, memory_order_relaxed) != m->batch_max_size ||
                atomic_load_explicit(&sl->batch_delay_us, memory_order_relaxed) != m->batch_delay_us) {
                atomic_store(&sl->batch_enabled, m->batch_enabled);
                atomic_store(&sl->batch_max_size, m->batch_max_size);
                atomic_store(&sl->batch_delay_us, m->batch_delay_us);
                if (sl->batcher)
                    bs__batcher_configure(sl->batcher, m->batch_max_size, (uint32_t)m->batch_delay_us);
            }
            /* A reviewer rejected it: it never serves again, so its memory goes now. */
            if (v->rejected && atomic_load_explicit(&sl->handle, memory_order_relaxed))
                unload(s, sl);
        }
    }
    for (int i = 0; i < sn->n && !rc; i++) {
        bs__snap_model_t *m = &sn->models[i];
        for (int k = 0; k < m->n_aliases; k++) {
            bs__snap_version_t *v = find_version(m, m->aliases[k].version);
            if (!v)
                continue;
            bs__slot_t *sl = v->slot;
            if (sl->aliased == 2) /* a second alias on the same version */
                continue;
            if (n_alias == cap_alias) {
                size_t c = cap_alias ? cap_alias * 2 : 16;
                bs__slot_t **a = realloc(aliased, c * sizeof *a);
                if (!a) {
                    rc = bs_err_set(err, BS_ENOMEM, "out of memory building the routing snapshot");
                    break;
                }
                aliased = a;
                cap_alias = c;
            }
            aliased[n_alias++] = sl;
            /* Only a version an alias was just pointed at loads eagerly (so the first
             * request after a rollout is fast); an aliased version that was evicted
             * loads again when it is used, not on every registry change. */
            int was = sl->aliased == 1;
            sl->aliased = 2; /* 2: aliased in this rebuild */
            if (!was && !atomic_load(&sl->handle)) {
                if (n_eager == cap_eager) {
                    size_t c = cap_eager ? cap_eager * 2 : 8;
                    bs__slot_t **e = realloc(eager, c * sizeof *e);
                    if (!e)
                        continue; /* it loads on first use instead */
                    eager = e;
                    cap_eager = c;
                }
                eager[n_eager++] = sl;
                atomic_fetch_add(&sl->refs, 1);
            }
        }
    }
    if (rc) {
        for (size_t i = 0; i < n_alias; i++)
            aliased[i]->aliased = 0;
        for (size_t i = 0; i < s->n_aliased; i++)
            s->aliased[i]->aliased = 1;
        pthread_mutex_unlock(&s->lock);
        pthread_mutex_unlock(&s->refresh_lock);
        for (size_t i = 0; i < n_eager; i++)
            slot_unref(eager[i]);
        free(eager);
        free(aliased);
        snapshot_free(sn);
        return rc;
    }
    for (size_t i = 0; i < s->n_aliased; i++)
        if (s->aliased[i]->aliased == 1) /* no alias points at it any more */
            s->aliased[i]->aliased = 0;
    for (size_t i = 0; i < n_alias; i++)
        aliased[i]->aliased = 1;
    free(s->aliased);
    s->aliased = aliased;
    s->n_aliased = n_alias;
    /* Slots the store no longer has (deleted models): only when there are any, so a
     * rebuild touches each live slot once. */
    if (s->n_slots > attached)
        for (bs__slot_t *sl = s->slots, *next; sl; sl = next) {
            next = sl->next;
            if (sl->seen_gen != gen)
                slot_retire(s, sl);
        }
    bs__snapshot_t *old = atomic_exchange(&s->snap, sn);
    pthread_mutex_unlock(&s->lock);
    s->gen_built = gen;
    pthread_mutex_unlock(&s->refresh_lock);
    bs_rcu_retire(old, snapshot_free);
    for (size_t i = 0; i < n_eager; i++) {
        bs_err_t lerr;
        if (bs_serving_load_async(s, eager[i], NULL, NULL, &lerr) != 0)
            BS_LOG(BS_LOG_WARN, "serving", "cannot queue the load of %s version %d: %s",
                   eager[i]->name, eager[i]->version, lerr.msg);
        slot_unref(eager[i]);
    }
    free(eager);
    return 0;
}

void bs_serving_refresh_cb(void *p)
{
    bs_err_t err;
    if (bs_serving_refresh(p, &err) != 0)
        BS_LOG(BS_LOG_ERROR, "serving", "routing refresh failed: %s", err.msg);
}

bs_serving_t *bs_serving_new(bs_meta_t *meta, bs_registry_t *reg, const bs_serving_opts_t *o,
                             bs_err_t *err)
{
    bs_serving_t *s = calloc(1, sizeof *s);
    if (!s) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    s->meta = meta;
    s->reg = reg;
    s->o = *o;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->refresh_lock, NULL);
    /* Two loader threads: a big model's load does not hold up every other first use. */
    s->loader = bs_pool_new(2, err);
    if (!s->loader || bs_serving_refresh(s, err) != 0) {
        bs_serving_free(s);
        return NULL;
    }
    return s;
}

void bs_serving_free(bs_serving_t *s)
{
    if (!s)
        return;
    bs_pool_free(s->loader); /* finishes queued loads (their waiters are answered) */
    bs_rcu_drain();          /* nothing reads the snapshot any more: retired slots go too */
    snapshot_free(atomic_load(&s->snap));
    bs__slot_t *sl = s->slots;
    while (sl) {
        bs__slot_t *n = sl->next;
        slot_unref(sl);
        sl = n;
    }
    free(s->index);
    free(s->aliased);
    pthread_mutex_destroy(&s->refresh_lock);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* ---- loads off the calling thread ------------------------------------------------------ */

typedef struct {
    bs_serving_t *s;
    bs__slot_t *slot;
} load_job_t;

static void run_load(void *arg)
{
    load_job_t *j = arg;
    bs__slot_t *slot = j->slot;
    bs_err_t err;
    bs_err_clear(&err);
    bs_model_handle_t *h = slot_load(j->s, slot, &err);
    pthread_mutex_lock(&slot->wait_lock);
    bs__waiter_t *w = slot->waiters;
    slot->waiters = NULL;
    slot->load_queued = 0;
    pthread_mutex_unlock(&slot->wait_lock);
    if (!h && !w)
        BS_LOG(BS_LOG_WARN, "serving", "cannot load %s version %d: %s", slot->name, slot->version,
               err.msg);
    while (w) {
        bs__waiter_t *n = w->next;
        w->done(w->ud, h ? NULL : &err);
        free(w);
        w = n;
    }
    slot_unref(slot);
    free(j);
}

int bs_serving_load_async(bs_serving_t *s, bs_serving_slot_t *slot, bs_serving_loaded_fn done,
                          void *ud, bs_err_t *err)
{
    bs__waiter_t *w = NULL;
    if (done && !(w = malloc(sizeof *w)))
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    if (w)
        *w = (bs__waiter_t){.done = done, .ud = ud};
    pthread_mutex_lock(&slot->wait_lock);
    if (slot->load_queued) { /* the queued load answers this waiter too */
        if (w) {
            w->next = slot->waiters;
            slot->waiters = w;
        }
        pthread_mutex_unlock(&slot->wait_lock);
        return 0;
    }
    load_job_t *j = malloc(sizeof *j);
    if (!j) {
        pthread_mutex_unlock(&slot->wait_lock);
        free(w);
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    *j = (load_job_t){.s = s, .slot = slot};
    atomic_fetch_add(&slot->refs, 1);
    slot->load_queued = 1;
    slot->waiters = w;
    int rc = bs_pool_submit(s->loader, run_load, j);
    if (rc) {
        slot->load_queued = 0;
        slot->waiters = NULL;
    }
    pthread_mutex_unlock(&slot->wait_lock);
    if (rc) {
        free(j);
        free(w);
        slot_unref(slot);
        return bs_err_set(err, rc, rc == BS_ENOMEM ? "out of memory" : "the server is shutting down");
    }
    return 0;
}

int bs_serving_overloaded(bs_serving_slot_t *slot, bs_err_t *err)
{
    atomic_fetch_add(&slot->load_rejections, 1);
    return bs_err_setf(err, BS_EOVERLOAD, "model",
                       "model '%s' version %d was evicted again before it could serve: the loaded "
                       "models do not fit model_memory_bytes; retry later",
                       slot->name, slot->version);
}

/* ---- resolution ------------------------------------------------------------------------ */

bs_model_handle_t *bs_serving_peek(bs_serving_t *s, const char *tenant, const char *ref,
                                   int version, bs_serving_slot_t **unloaded, bs_err_t *err)
{
    char name[129];
    const char *at = strchr(ref, '@');
    size_t nl = at ? (size_t)(at - ref) : strlen(ref);
    if (nl == 0 || nl >= sizeof name) {
        bs_err_setf(err, BS_ENOTFOUND, "model", "no model '%.128s'", ref);
        return NULL;
    }
    memcpy(name, ref, nl);
    name[nl] = '\0';
    bs__snapshot_t *sn = atomic_load_explicit(&s->snap, memory_order_acquire);
    bs__snap_model_t *m = find_model(sn, tenant, name);
    if (!m) {
        bs_err_setf(err, BS_ENOTFOUND, "model", "no model '%s'", name);
        return NULL;
    }
    bs__snap_version_t *v = NULL;
    if (version > 0) {
        v = find_version(m, version);
        if (!v) {
            bs_err_setf(err, BS_ENOTFOUND, "version", "model '%s' has no version %d", name, version);
            return NULL;
        }
        if (v->rejected) {
            bs_err_setf(err, BS_ECONFLICT, "version",
                        "version %d of model '%s' was rejected in review and does not serve",
                        version, name);
            return NULL;
        }
    } else {
        const char *alias = at ? at + 1 : "champion";
        for (int i = 0; i < m->n_aliases; i++)
            if (strcmp(m->aliases[i].alias, alias) == 0)
                v = find_version(m, m->aliases[i].version);
        if (!v && at) {
            bs_err_setf(err, BS_ENOTFOUND, "alias", "model '%s' has no alias '%.64s'", name, alias);
            return NULL;
        }
        for (int i = m->n_versions - 1; !v && i >= 0; i--)
            if (m->versions[i].approved)
                v = &m->versions[i];
        if (!v) {
            bs_err_setf(err, BS_ENOTFOUND, "model",
                        "model '%s' has no champion alias and no approved version; name a version "
                        "(%s/versions/N) or approve one",
                        name, name);
            return NULL;
        }
    }
    bs__slot_t *slot = v->slot;
    /* No reference is taken: an unpublished handle is released only after a QSBR grace
     * period, which cannot end before this loop iteration does. */
    bs_model_handle_t *h = atomic_load_explicit(&slot->handle, memory_order_acquire);
    if (!h && unloaded) {
        *unloaded = slot;
        return NULL;
    }
    if (!h && !(h = slot_load(s, slot, err)))
        return NULL;
    /* LRU clock: written at most once a millisecond, so the I/O threads do not
     * bounce the slot's cache line on every request. */
    uint64_t now = bs_time_mono_ns();
    if (now - atomic_load_explicit(&slot->last_used_ns, memory_order_relaxed) > 1000000u)
        atomic_store_explicit(&slot->last_used_ns, now, memory_order_relaxed);
    return h;
}

int bs_serving_resolve(bs_serving_t *s, const char *tenant, const char *model, int version,
                       const char *alias, int *resolved_version, int *approved, bs_err_t *err)
{
    bs__snapshot_t *sn = atomic_load_explicit(&s->snap, memory_order_acquire);
    bs__snap_model_t *m = find_model(sn, tenant, model);
    if (!m)
        return bs_err_setf(err, BS_ENOTFOUND, "model", "no model '%.128s'", model);
    int v = version;
    if (v <= 0) {
        v = 0;
        for (int i = 0; alias && i < m->n_aliases; i++)
            if (strcmp(m->aliases[i].alias, alias) == 0)
                v = m->aliases[i].version;
        if (!v)
            return bs_err_setf(err, BS_ENOTFOUND, "alias", "model '%s' has no alias '%.64s'",
                               model, alias ? alias : "");
    }
    bs__snap_version_t *sv = find_version(m, v);
    if (!sv)
        return bs_err_setf(err, BS_ENOTFOUND, "version", "model '%s' has no version %d", model, v);
    if (resolved_version)
        *resolved_version = v;
    if (approved)
        *approved = sv->approved ? 1 : sv->rejected ? -1 : 0;
    return 0;
}

int bs_serving_load(bs_serving_t *s, bs_serving_slot_t *slot, bs_err_t *err)
{
    return slot_load(s, slot, err) ? 0 : err->code;
}

int bs_serving_has_model(bs_serving_t *s, const char *tenant, const char *name)
{
    bs__snapshot_t *sn = atomic_load_explicit(&s->snap, memory_order_acquire);
    return find_model(sn, tenant, name) != NULL;
}

int bs_serving_versions(bs_serving_t *s, const char *tenant, const char *name, int *out, int max)
{
    bs__snapshot_t *sn = atomic_load_explicit(&s->snap, memory_order_acquire);
    bs__snap_model_t *m = find_model(sn, tenant, name);
    if (!m)
        return -1;
    int n = 0;
    for (int i = 0; i < m->n_versions && n < max; i++)
        out[n++] = m->versions[i].version;
    return n;
}

int bs_serving_batched(bs_serving_t *s, const bs_model_handle_t *h)
{
    (void)s;
    const bs__slot_t *sl = h->slot;
    if (!sl)
        return 0;
    int enabled = atomic_load_explicit(&sl->batch_enabled, memory_order_relaxed);
    if (enabled == 0)
        return 0;
    if (enabled < 0 && !bs_ml_model_prefers_batching(h->model))
        return 0;
    return atomic_load_explicit(&sl->batch_delay_us, memory_order_relaxed) > 0 &&
           atomic_load_explicit(&sl->batch_max_size, memory_order_relaxed) > 1;
}

int bs_serving_submit(bs_serving_t *s, bs_model_handle_t *h, const double *rows, size_t n,
                      bs_serving_done_fn done, void *ud, bs_err_t *err)
{
    (void)s;
    bs__slot_t *slot = h->slot;
    if (!slot)
        return bs_err_set(err, BS_EINTERNAL, "a handle without a slot cannot be batched");
    pthread_mutex_lock(&slot->load_lock);
    if (!slot->batcher)
        slot->batcher = bs__batcher_new(atomic_load(&slot->batch_max_size),
                                        (uint32_t)atomic_load(&slot->batch_delay_us));
    bs__batcher_t *b = slot->batcher;
    pthread_mutex_unlock(&slot->load_lock);
    if (!b)
        return bs_err_set(err, BS_ENOMEM, "cannot start a batcher thread");
    return bs__batcher_submit(b, h, rows, n, done, ud, err);
}
