/* Routing snapshot, slots, loading and eviction; see serving.h. */
#include "serving/serving_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void handle_free(bs_model_handle_t *h)
{
    if (!h)
        return;
    bs_ml_model_free(h->model);
    bs_ml_schema_deinit(&h->sig);
    free(h->name_index);
    free(h->name_len);
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
        if (!h->name_index || !h->name_len)
            rc = bs_err_set(err, BS_ENOMEM, "out of memory");
        for (int i = 0; !rc && i < h->sig.n_features; i++) {
            const char *n = h->sig.features[i].name;
            h->name_len[i] = (uint32_t)strlen(n);
            uint32_t k = hash_name(n, h->name_len[i]) & h->name_mask;
            while (h->name_index[k])
                k = (k + 1) & h->name_mask;
            h->name_index[k] = i + 1;
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

static void unload(bs_serving_t *s, bs__slot_t *slot)
{
    bs_model_handle_t *h = atomic_exchange(&slot->handle, NULL);
    if (h) {
        atomic_fetch_sub(&s->loaded_bytes, h->memory);
        BS_LOG(BS_LOG_INFO, "serving", "unloaded %s version %d", slot->name, slot->version);
        bs_rcu_retire(h, drop_slot_ref);
    }
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
        unload(s, victim);
    }
}

static bs_model_handle_t *slot_load(bs_serving_t *s, bs__slot_t *slot, bs_err_t *err)
{
    pthread_mutex_lock(&slot->load_lock);
    bs_model_handle_t *h = atomic_load(&slot->handle);
    if (!h) {
        uint64_t t0 = bs_time_mono_ns();
        BS_LOG(BS_LOG_INFO, "serving", "loading %s version %d", slot->name, slot->version);
        h = load_handle(s, slot, err);
        if (!h) {
            atomic_fetch_add(&slot->load_failures, 1);
        } else {
            atomic_store(&slot->last_used_ns, bs_time_mono_ns());
            atomic_store(&slot->handle, h);
            atomic_fetch_add(&slot->loads, 1);
            atomic_fetch_add(&s->loaded_bytes, h->memory);
            BS_LOG(BS_LOG_INFO, "serving", "loaded %s version %d (%zu bytes) in %.2f ms", slot->name,
                   slot->version, h->memory, (double)(bs_time_mono_ns() - t0) / 1e6);
        }
    }
    pthread_mutex_unlock(&slot->load_lock);
    if (h) {
        pthread_mutex_lock(&s->lock);
        evict(s, slot);
        pthread_mutex_unlock(&s->lock);
    }
    return h;
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

static bs__slot_t *slot_get(bs_serving_t *s, const char *tenant, const char *name, const char *id,
                            int version)
{
    for (bs__slot_t *sl = s->slots; sl; sl = sl->next)
        if (sl->version == version && strcmp(sl->model_id, id) == 0)
            return sl;
    bs__slot_t *sl = calloc(1, sizeof *sl);
    if (!sl)
        return NULL;
    snprintf(sl->tenant, sizeof sl->tenant, "%s", tenant);
    snprintf(sl->name, sizeof sl->name, "%s", name);
    snprintf(sl->model_id, sizeof sl->model_id, "%s", id);
    sl->version = version;
    pthread_mutex_init(&sl->load_lock, NULL);
    sl->next = s->slots;
    s->slots = sl;
    return sl;
}

typedef struct {
    bs_serving_t *s;
    bs__snapshot_t *sn;
    int cap;
    int oom;
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

/* Rows arrive ordered by tenant, name, version. */
static int version_row(const bs_meta_row_t *row, void *ud)
{
    build_t *b = ud;
    bs__snapshot_t *sn = b->sn;
    const char *tenant = bs_meta_row_text(row, 0), *name = bs_meta_row_text(row, 1),
               *id = bs_meta_row_text(row, 2);
    bs__snap_model_t *m = sn->n ? &sn->models[sn->n - 1] : NULL;
    if (!m || strcmp(m->model_id, id) != 0) {
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
        m = &sn->models[sn->n++];
        memset(m, 0, sizeof *m);
        snprintf(m->tenant, sizeof m->tenant, "%s", tenant);
        snprintf(m->name, sizeof m->name, "%s", name);
        snprintf(m->model_id, sizeof m->model_id, "%s", id);
    }
    if (bs_meta_row_is_null(row, 3))
        return 0;
    bs__snap_version_t *v = realloc(m->versions, (size_t)(m->n_versions + 1) * sizeof *v);
    if (!v) {
        b->oom = 1;
        return 1;
    }
    m->versions = v;
    bs__snap_version_t *e = &m->versions[m->n_versions++];
    e->version = (int)bs_meta_row_int(row, 3);
    e->approved = strcmp(bs_meta_row_text(row, 4), "approved") == 0;
    e->rejected = strcmp(bs_meta_row_text(row, 4), "rejected") == 0;
    e->slot = slot_get(b->s, tenant, name, id, e->version);
    if (!e->slot) {
        b->oom = 1;
        return 1;
    }
    /* The model's batching settings, over the server's defaults. */
    int enabled = -1, size = b->s->o.batch_max_size, delay = (int)b->s->o.batch_delay_us;
    if (!bs_meta_row_is_null(row, 5)) {
        cJSON *j = cJSON_Parse(bs_meta_row_text(row, 5));
        const cJSON *en = cJSON_GetObjectItemCaseSensitive(j, "enabled");
        const cJSON *sz = cJSON_GetObjectItemCaseSensitive(j, "max_batch_size");
        const cJSON *dl = cJSON_GetObjectItemCaseSensitive(j, "max_queue_delay_us");
        if (cJSON_IsBool(en))
            enabled = cJSON_IsTrue(en);
        if (cJSON_IsNumber(sz))
            size = sz->valueint;
        if (cJSON_IsNumber(dl))
            delay = dl->valueint;
        cJSON_Delete(j);
    }
    bs__slot_t *sl = e->slot;
    atomic_store(&sl->batch_enabled, enabled);
    atomic_store(&sl->batch_max_size, size);
    atomic_store(&sl->batch_delay_us, delay);
    if (sl->batcher)
        bs__batcher_configure(sl->batcher, size, (uint32_t)delay);
    return 0;
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

static bs__snap_version_t *find_version(bs__snap_model_t *m, int version)
{
    for (int i = 0; i < m->n_versions; i++)
        if (m->versions[i].version == version)
            return &m->versions[i];
    return NULL;
}

int bs_serving_refresh(bs_serving_t *s, bs_err_t *err)
{
    pthread_mutex_lock(&s->lock);
    build_t b = {.s = s};
    b.sn = calloc(1, sizeof *b.sn);
    int rc = b.sn ? 0 : BS_ENOMEM;
    /* Tenant and name collate with SQLite's BINARY order, the same as strcmp. */
    if (!rc)
        rc = bs_meta_query(s->meta,
                           "SELECT m.tenant, m.name, m.id, v.version, v.status, m.batching FROM models m"
                           " LEFT JOIN model_versions v ON v.model_id = m.id"
                           " ORDER BY m.tenant, m.name, v.version",
                           NULL, 0, version_row, &b, err);
    if (!rc)
        rc = bs_meta_query(s->meta,
                           "SELECT m.tenant, m.name, a.alias, a.version FROM model_aliases a"
                           " JOIN models m ON m.id = a.model_id",
                           NULL, 0, alias_row, &b, err);
    if (!rc && b.oom)
        rc = bs_err_set(err, BS_ENOMEM, "out of memory building the routing snapshot");
    if (rc) {
        pthread_mutex_unlock(&s->lock);
        snapshot_free(b.sn);
        return rc;
    }
    /* Slots no longer routed (deleted models) give back their memory. */
    for (bs__slot_t *sl = s->slots; sl; sl = sl->next)
        sl->live = 0;
    bs__slot_t *eager[64];
    int n_eager = 0;
    for (int i = 0; i < b.sn->n; i++) {
        bs__snap_model_t *m = &b.sn->models[i];
        for (int k = 0; k < m->n_versions; k++)
            m->versions[k].slot->live = 1;
        for (int k = 0; k < m->n_aliases; k++) {
            bs__snap_version_t *v = find_version(m, m->aliases[k].version);
            if (v && !atomic_load(&v->slot->handle) && n_eager < 64)
                eager[n_eager++] = v->slot;
        }
    }
    for (bs__slot_t *sl = s->slots; sl; sl = sl->next)
        if (!sl->live)
            unload(s, sl);
    bs__snapshot_t *old = atomic_exchange(&s->snap, b.sn);
    pthread_mutex_unlock(&s->lock);
    bs_rcu_retire(old, snapshot_free);
    /* Aliased versions load eagerly, so the first request after a rollout is fast. */
    for (int i = 0; i < n_eager; i++) {
        bs_err_t lerr;
        if (!slot_load(s, eager[i], &lerr))
            BS_LOG(BS_LOG_WARN, "serving", "cannot load %s version %d: %s", eager[i]->name,
                   eager[i]->version, lerr.msg);
    }
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
    if (bs_serving_refresh(s, err) != 0) {
        bs_serving_free(s);
        return NULL;
    }
    return s;
}

void bs_serving_free(bs_serving_t *s)
{
    if (!s)
        return;
    snapshot_free(atomic_load(&s->snap));
    bs__slot_t *sl = s->slots;
    while (sl) {
        bs__slot_t *n = sl->next;
        bs__batcher_free(sl->batcher);
        bs_model_handle_t *h = atomic_load(&sl->handle);
        if (h)
            bs_serving_release(h);
        pthread_mutex_destroy(&sl->load_lock);
        free(sl);
        sl = n;
    }
    pthread_mutex_destroy(&s->lock);
    free(s);
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

int bs_serving_load(bs_serving_t *s, bs_serving_slot_t *slot, bs_err_t *err)
{
    return slot_load(s, slot, err) ? 0 : err->code;
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
