/*
 * The model registry: models, numbered versions with content-addressed
 * artifacts in a blob store (store/blobs.h: files under <data>/artifacts/ab/<sha256>,
 * or chunks in the metadata store cached there), an approval workflow,
 * aliases, experiment runs with metrics, and an audit log of every change.
 *
 * Everything is scoped to a tenant. Operations return resources rendered as
 * JSON into a caller buffer (the same objects the API and the CLI show).
 * Writes run in one metadata transaction each, add an audit record in the
 * same transaction (writes that change routing also bump the "registry" change
 * generation there, so other replicas rebuild: store/changes.h), then call the
 * change hook (serving rebuilds its routing snapshot from it).
 *
 * Version lifecycle: pending → approved | rejected; approved → archived.
 * Only approved versions may hold aliases; an archived version stays
 * readable and predictable by number but cannot be aliased.
 *
 * Thread safety: all functions may be called from any thread.
 */
#ifndef BS_REGISTRY_REGISTRY_H
#define BS_REGISTRY_REGISTRY_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/principal.h"
#include "store/blobs.h"
#include "store/meta.h"

typedef struct bs_registry bs_registry_t;

/* meta is borrowed. artifacts_dir (created if missing) holds the artifact files of the
 * files store, or the local cache of the metadata store (artifact_store). */
bs_registry_t *bs_registry_new(bs_meta_t *meta, const char *artifacts_dir,
                               bs_blobs_kind_t artifact_store, bs_err_t *err);
void bs_registry_free(bs_registry_t *r);
/* The artifact store (borrowed; lives as long as the registry). */
bs_blobs_t *bs_registry_blobs(bs_registry_t *r);
/* Starts the artifact collector: it removes artifacts no version references once they
 * are older than grace_s seconds (deleted versions, uploads that never committed), and
 * the metadata store's cache files no version references, a pass every grace_s / 2
 * (1 s .. 5 min). Passes run under the lease "artifact-gc" (store/lease.h), so of
 * several replicas on one store only one collects at a time (and only its own cache is
 * trimmed), and another takes over within the lease's time (three passes, 3 s .. 30 s)
 * when it dies. Stopped by bs_registry_free. 0 or an error. */
int bs_registry_gc_start(bs_registry_t *r, int64_t grace_s, bs_err_t *err);
/* The owner name of this process's leases (the replica id; copied). Before gc_start;
 * default "<hostname>-<pid>". */
void bs_registry_set_replica_id(bs_registry_t *r, const char *id);
/* Called after every committed change (from the writing thread). */
void bs_registry_on_change(bs_registry_t *r, void (*fn)(void *ud), void *ud);
/* Registry events, called after the commit of the change they describe (from the writing
 * thread; must not block for long): type "version.created", "version.approved",
 * "version.rejected", "version.archived", "alias.moved" or "alias.deleted"; subject the
 * resource path ("models/fraud/versions/3", "models/fraud/aliases/champion"); data the JSON
 * object the write answered with (the version; for aliases {model, alias, version,
 * previous_version}). All borrowed for the call. Triggers record them (events/triggers.h). */
typedef void (*bs_registry_event_fn)(void *ud, const char *tenant, const char *type,
                                     const char *subject, const char *data_json);
void bs_registry_on_event(bs_registry_t *r, bs_registry_event_fn fn, void *ud);

/* Models. body: {name, description?, tags?, require_distinct_approver?}. */
int bs_registry_model_create(bs_registry_t *r, const bs_principal_t *who, const cJSON *body,
                             bs_buf_t *out, bs_err_t *err);
int bs_registry_model_get(bs_registry_t *r, const char *tenant, const char *name, bs_buf_t *out,
                          bs_err_t *err);
/* prefix, tag, cursor may be NULL. Renders {"items": [...], "next_cursor": ...}. */
int bs_registry_model_list(bs_registry_t *r, const char *tenant, const char *prefix,
                           const char *tag, const char *cursor, int limit, bs_buf_t *out,
                           bs_err_t *err);
/* body: {description?, tags?, require_distinct_approver?} */
int bs_registry_model_update(bs_registry_t *r, const bs_principal_t *who, const char *name,
                             const cJSON *body, bs_buf_t *out, bs_err_t *err);
int bs_registry_model_delete(bs_registry_t *r, const bs_principal_t *who, const char *name,
                             bs_err_t *err);

/* A new version: the artifact bytes (borrowed) in format (NULL: detect), and metadata
 * {input_schema, output_schema, metrics, params, tags, description, run_id, dataset,
 * source_commit} (may be NULL). The artifact is loaded to validate it; a model that does
 * not load is rejected with BS_EINVAL and the loader's reason, and nothing is stored. */
int bs_registry_version_create(bs_registry_t *r, const bs_principal_t *who, const char *name,
                               const char *format, const void *artifact, size_t len,
                               const cJSON *meta, bs_buf_t *out, bs_err_t *err);
int bs_registry_version_get(bs_registry_t *r, const char *tenant, const char *name, int version,
                            bs_buf_t *out, bs_err_t *err);
int bs_registry_version_list(bs_registry_t *r, const char *tenant, const char *name,
                             const char *status, int cursor, int limit, bs_buf_t *out, bs_err_t *err);
/* decision: "approve" | "reject" | "archive". */
int bs_registry_version_transition(bs_registry_t *r, const bs_principal_t *who, const char *name,
                                   int version, const char *decision, const char *comment,
                                   bs_buf_t *out, bs_err_t *err);
int bs_registry_alias_set(bs_registry_t *r, const bs_principal_t *who, const char *name,
                          const char *alias, int version, bs_buf_t *out, bs_err_t *err);
int bs_registry_alias_delete(bs_registry_t *r, const bs_principal_t *who, const char *name,
                             const char *alias, bs_err_t *err);

/* Experiment runs. */
int bs_registry_run_create(bs_registry_t *r, const bs_principal_t *who, const cJSON *body,
                           bs_buf_t *out, bs_err_t *err);
int bs_registry_run_get(bs_registry_t *r, const char *tenant, const char *id, bs_buf_t *out,
                        bs_err_t *err);
int bs_registry_run_list(bs_registry_t *r, const char *tenant, const char *experiment,
                         const char *cursor, int limit, bs_buf_t *out, bs_err_t *err);
/* body: {status?, params?, tags?} */
int bs_registry_run_update(bs_registry_t *r, const bs_principal_t *who, const char *id,
                           const cJSON *body, bs_buf_t *out, bs_err_t *err);
/* body: {key, value, step?, ts?} or {"metrics": [...]} or an array of those. */
int bs_registry_run_log_metrics(bs_registry_t *r, const bs_principal_t *who, const char *id,
                                const cJSON *body, bs_buf_t *out, bs_err_t *err);

/* Audit log, newest first. */
int bs_registry_audit_list(bs_registry_t *r, const char *tenant, const char *cursor, int limit,
                           bs_buf_t *out, bs_err_t *err);

/* Loads the artifact bytes of a version (malloc'd into *bytes) and its format and
 * stored overrides (JSON text, malloc'd or NULL). For serving. */
typedef struct {
    char model_id[40];
    int version;
    char status[16];
    char format[32];
    char sha256[65];
    char *schema_override; /* {"input_schema":…, "output_schema":…} or NULL */
    void *bytes;
    size_t len;
} bs_registry_artifact_t;
int bs_registry_artifact_load(bs_registry_t *r, const char *model_id, int version,
                              bs_registry_artifact_t *out, bs_err_t *err);
/* The same for tenant's model `name` (the download route). BS_ENOTFOUND names the model or
 * the version; BS_EIO (naming the sha256) when the stored artifact is missing, truncated or
 * fails its checksum. */
int bs_registry_artifact_get(bs_registry_t *r, const char *tenant, const char *name, int version,
                             bs_registry_artifact_t *out, bs_err_t *err);
void bs_registry_artifact_deinit(bs_registry_artifact_t *a);

/* Validates a model name (1-128 of [A-Za-z0-9._-]). */
int bs_registry_valid_name(const char *name);

#endif
