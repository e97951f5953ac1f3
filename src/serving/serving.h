/*
 * Online serving: resolves model references to loaded versions and runs
 * predictions.
 *
 * Routing state is an immutable snapshot (every tenant's models, their
 * versions and aliases) rebuilt from the metadata store after each registry
 * change and published by an atomic pointer swap; readers take no lock
 * (QSBR, base/rcu.h). Each (model, version) has a long-lived slot holding
 * its per-version metrics and, once loaded, a reference-counted handle.
 * A version loads on first use (or eagerly when an alias is pointed at it);
 * when loaded models exceed the memory budget the least recently used are
 * evicted. A handle being evicted or replaced stays alive until its last
 * in-flight request releases it.
 *
 * Threads: loads run on the module's own loader threads (bs_serving_load_async),
 * never on the thread that changed the registry or asked for the version, and
 * never queued behind registry writes on the app's workers. Rebuilds run on the
 * thread that made the change (a worker: see src/api/models.c), or on the change
 * watcher's thread for changes made by another replica (store/changes.h), one at a
 * time, coalesced when several changes arrive together.
 */
#ifndef BS_SERVING_SERVING_H
#define BS_SERVING_SERVING_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/buf.h"
#include "base/err.h"
#include "ml/ml.h"
#include "registry/registry.h"
#include "store/meta.h"

typedef struct bs_serving bs_serving_t;
typedef struct bs_model_handle bs_model_handle_t;

typedef struct {
    size_t memory_budget;   /* bytes of loaded models before LRU eviction */
    int max_rows;           /* rows per predict request */
    int reject_unknown;     /* 1: unknown input features are a 400; 0: ignored */
    int batch_max_size;     /* dynamic batching for runtimes that gain from it (MLP) */
    uint32_t batch_delay_us; /* 0 turns dynamic batching off */
} bs_serving_opts_t;

bs_serving_t *bs_serving_new(bs_meta_t *meta, bs_registry_t *reg, const bs_serving_opts_t *o,
                             bs_err_t *err);
void bs_serving_free(bs_serving_t *s);
/*
 * Rebuilds the routing snapshot from the store (registry change hook). When it
 * returns, the snapshot reflects every change committed before the call (a
 * client that got its 2xx sees the change on its next request). Rebuilds run one
 * at a time; a caller whose change a rebuild started after it already covers
 * returns without one of its own. Blocking (SQL, O(versions)): not on an I/O thread.
 */
int bs_serving_refresh(bs_serving_t *s, bs_err_t *err);
void bs_serving_refresh_cb(void *s);

/* A routed (model, version): long-lived, valid until bs_serving_free. */
typedef struct bs__slot bs_serving_slot_t;

/*
 * Resolves tenant's `ref` — "name", "name@alias" — or, when version > 0, that
 * version of model `ref`. A bare name resolves to the "champion" alias, else the
 * latest approved version. Errors: BS_ENOTFOUND naming what is missing;
 * BS_EUNAVAIL/BS_EIO when the artifact cannot be loaded.
 *
 * A version that is not loaded yet: with `unloaded` NULL, peek loads it on the calling
 * thread; otherwise it loads nothing and returns NULL with *unloaded set (err untouched),
 * so an I/O thread can hand the load to a worker (bs_serving_load) and try again.
 *
 * The handle is borrowed: no reference is taken, and it stays valid only until
 * the calling thread's current QSBR section ends (an I/O thread's event-loop
 * iteration). Work that outlives it (the batcher) takes its own reference and
 * drops it with bs_serving_release. Must be called from a QSBR-registered thread.
 */
bs_model_handle_t *bs_serving_peek(bs_serving_t *s, const char *tenant, const char *ref,
                                   int version, bs_serving_slot_t **unloaded, bs_err_t *err);
/*
 * Looks up a version of tenant's model in the routing snapshot without loading anything
 * (endpoint specs are checked with it): version > 0 names that version, else alias names an
 * alias. *resolved_version gets the version (the alias's target), *approved 1 if its status
 * is "approved", -1 if "rejected", 0 otherwise (pending, archived). Errors: BS_ENOTFOUND with field "model",
 * "version" or "alias". Reads the snapshot only: from a QSBR-registered thread.
 */
int bs_serving_resolve(bs_serving_t *s, const char *tenant, const char *model, int version,
                       const char *alias, int *resolved_version, int *approved, bs_err_t *err);
/* Loads slot's version unless it is loaded (blocking: a worker's job). */
int bs_serving_load(bs_serving_t *s, bs_serving_slot_t *slot, bs_err_t *err);
/* Called on a loader thread when the load asked for finished: err NULL when the version
 * is loaded (it may be evicted again before the caller gets to it), else why not. */
typedef void (*bs_serving_loaded_fn)(void *ud, const bs_err_t *err);
/*
 * Queues a load of slot (from peek's *unloaded, during the same QSBR section) on the
 * loader threads and calls done(ud, …) once it ends; one load however many wait.
 * done NULL: load without telling anyone. Returns 0, or BS_ENOMEM / BS_EUNAVAIL
 * (shutting down) with err set, and done is not called.
 */
int bs_serving_load_async(bs_serving_t *s, bs_serving_slot_t *slot, bs_serving_loaded_fn done,
                          void *ud, bs_err_t *err);
/* A request gives up on slot after its loads were evicted before it could use them (a
 * budget smaller than the working set): counts it and sets err to BS_EOVERLOAD.
 * Returns BS_EOVERLOAD. */
int bs_serving_overloaded(bs_serving_slot_t *slot, bs_err_t *err);
void bs_serving_release(bs_model_handle_t *h);

const char *bs_model_handle_name(const bs_model_handle_t *h);
int bs_model_handle_version(const bs_model_handle_t *h);
const bs_ml_schema_t *bs_model_handle_schema(const bs_model_handle_t *h);
const bs_ml_model_t *bs_model_handle_model(const bs_model_handle_t *h);
/* 1 if tenant has a model called name (a bare name, no "@alias") in the routing snapshot,
 * whatever its versions' states. From a QSBR-registered thread. */
int bs_serving_has_model(bs_serving_t *s, const char *tenant, const char *name);
/* The list of version numbers of the model behind h (for KServe metadata); returns count. */
int bs_serving_versions(bs_serving_t *s, const char *tenant, const char *name, int *out, int max);

/*
 * Converts a predict body into rows (arena-allocated, row-major doubles):
 *   {"inputs": {...}}            one row by feature name
 *   {"inputs": [{...}, ...]}     rows by feature name
 *   {"instances": [[...], ...]}  rows by position (TF-Serving); objects also accepted
 * Every validation failure is BS_EINVAL naming the field ("inputs[3].amount"),
 * or BS_ETOOBIG for too many rows.
 */
int bs_serving_parse_inputs(bs_serving_t *s, const bs_model_handle_t *h, const cJSON *body,
                            bs_arena_t *a, double **rows, size_t *n_rows, bs_err_t *err);
/* The same, where a field called skip (NULL: none) is never an unknown feature whatever
 * reject_unknown says: an endpoint's sticky field travels in the rows without being one of
 * the model's features. (It is still read as the feature when the model has one of that
 * name.) */
int bs_serving_parse_inputs_ex(bs_serving_t *s, const bs_model_handle_t *h, const cJSON *body,
                               const char *skip, bs_arena_t *a, double **rows, size_t *n_rows,
                               bs_err_t *err);
/* One row by feature name from obj (borrowed) into row (n_features doubles), exactly as
 * {"inputs": obj} would be (errors name "inputs"); skip_unknown: fields the model has no
 * feature for are left out whatever reject_unknown says (a caller passing a whole record,
 * of which the features are a part). 0 or BS_EINVAL. */
int bs_serving_parse_row(bs_serving_t *s, const bs_model_handle_t *h, const cJSON *obj,
                         int skip_unknown, double *row, bs_err_t *err);
/*
 * The one-row fast path: scans `{"inputs": {name: number, …}}` straight into row
 * (n_features doubles). Returns 1 when it handled the body, 0 when the body needs
 * the general path (other shapes, categories, nulls, anything invalid).
 */
int bs_serving_parse_fast(const bs_serving_t *s, const bs_model_handle_t *h, const char *body,
                          size_t len, double *row);
/* The same, and when it handled the body: *text is the inputs object's text (in body,
 * text_len bytes) when that object gave every feature as a number and holds no line break —
 * a JSON text equal to the row (the client's key order and number spelling) — else NULL. */
int bs_serving_parse_fast_ex(const bs_serving_t *s, const bs_model_handle_t *h, const char *body,
                             size_t len, double *row, const char **text, size_t *text_len);

/* Converts one JSON value for feature i into its slot value (shared with the KServe path). */
int bs_serving_encode_value(const bs_model_handle_t *h, int i, const cJSON *v, double *out,
                            const char *where, bs_err_t *err);
/* Encodes an omitted feature i (default, NaN or an error). */
int bs_serving_encode_missing(const bs_model_handle_t *h, int i, double *out, const char *where,
                              bs_err_t *err);
/* Index of a feature by name, or -1. */
int bs_model_handle_feature(const bs_model_handle_t *h, const char *name, size_t len);

/* Runs the model on n rows into out (n * n_outputs doubles). */
int bs_serving_predict(bs_model_handle_t *h, const double *rows, size_t n, double *out, bs_err_t *err);

/* Called once per submitted request on the batcher thread: out holds n * n_outputs values,
 * or is NULL with err set. h stays valid during the call. */
typedef void (*bs_serving_done_fn)(void *ud, bs_model_handle_t *h, const double *out, size_t n,
                                   const bs_err_t *err);
/* 1 if requests for h should go through the dynamic batcher. */
int bs_serving_batched(bs_serving_t *s, const bs_model_handle_t *h);
/* Queues n rows (copied) for h's batcher. Errors: BS_ENOMEM, BS_EUNAVAIL (queue full). */
int bs_serving_submit(bs_serving_t *s, bs_model_handle_t *h, const double *rows, size_t n,
                      bs_serving_done_fn done, void *ud, bs_err_t *err);

/* Renders one row's prediction as "predictions" holds it (a number, an array of numbers,
 * or {"label", "probabilities"}) into b: o holds the row's n_outputs values. */
void bs_serving_render_value(const bs_model_handle_t *h, const double *o, bs_buf_t *b);
/* Renders {"model", "version", "predictions", "prediction_ids"} into b. */
void bs_serving_render(const bs_model_handle_t *h, const double *out, size_t n, bs_buf_t *b);
/* The same object with the row's prediction ids given — ids[r] is row r's UUID (36
 * characters and a NUL); NULL: fresh ones — and string members after "version": members is
 * {key, value, key, value, …, NULL} (borrowed; NULL: none). The endpoint predict path
 * renders {"model", "version", "endpoint", "variant", …} with it and logs the same ids. */
void bs_serving_render_ex(const bs_model_handle_t *h, const double *out, size_t n,
                          const char (*ids)[37], const char *const *members, bs_buf_t *b);
/* Renders one encoded row (n_features values, as parse produced it) as the object
 * {feature name: value}: numbers, a category as its string, null for a missing value
 * (NaN) or an unseen category the model takes. The prediction log's "inputs". */
void bs_serving_render_row(const bs_model_handle_t *h, const double *row, bs_buf_t *b);

/* Per-version metrics: one call per request. code 0 = success. */
void bs_serving_record(bs_model_handle_t *h, size_t rows, uint64_t duration_ns, int code);
/* Prometheus text for every version that served traffic. From a QSBR-registered thread. */
void bs_serving_metrics(bs_serving_t *s, bs_buf_t *b);

#endif
