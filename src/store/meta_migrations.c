/* Numbered, forward-only schema migrations of the metadata store. Append new
 * entries; never edit an applied one. Each runs in one transaction.
 *
 * An entry is {sql, pg}: sql is the SQLite text; pg is the PostgreSQL text, or NULL when
 * the SQLite text serves both engines after the PostgreSQL backend maps its column types
 * (INTEGER -> BIGINT, REAL -> DOUBLE PRECISION, BLOB -> BYTEA; see meta_pg.c). */
#include <stddef.h>

#include "store/meta_int.h"

const bs_meta_migration_t bs__meta_migrations[] = {
    /* 1: tenants and API keys */
    {"CREATE TABLE tenants ("
    "  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL);"
    "CREATE TABLE api_keys ("
    "  id TEXT PRIMARY KEY, name TEXT NOT NULL, tenant TEXT NOT NULL, role TEXT NOT NULL,"
    "  salt TEXT NOT NULL, hash TEXT NOT NULL, rate_rps REAL, rate_burst REAL,"
    "  expires_at INTEGER, created_at INTEGER NOT NULL, created_by TEXT);"
    "CREATE INDEX api_keys_tenant ON api_keys(tenant);", NULL},
    /* 2: model registry, experiment runs, audit log */
    {"CREATE TABLE models ("
    "  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',"
    "  tags TEXT NOT NULL DEFAULT '[]', require_distinct_approver INTEGER NOT NULL DEFAULT 0,"
    "  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, created_by TEXT NOT NULL,"
    "  UNIQUE (tenant, name));"
    "CREATE TABLE model_versions ("
    "  model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE, version INTEGER NOT NULL,"
    "  status TEXT NOT NULL, format TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,"
    "  kind TEXT NOT NULL, schema_override TEXT, signature TEXT NOT NULL,"
    "  metrics TEXT NOT NULL DEFAULT '{}', params TEXT NOT NULL DEFAULT '{}', tags TEXT NOT NULL DEFAULT '[]',"
    "  description TEXT NOT NULL DEFAULT '', run_id TEXT, dataset TEXT, source_commit TEXT,"
    "  created_by TEXT NOT NULL, created_at INTEGER NOT NULL,"
    "  reviewed_by TEXT, reviewed_at INTEGER, review_comment TEXT,"
    "  PRIMARY KEY (model_id, version));"
    "CREATE TABLE model_aliases ("
    "  model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE, alias TEXT NOT NULL,"
    "  version INTEGER NOT NULL, updated_at INTEGER NOT NULL, updated_by TEXT NOT NULL,"
    "  PRIMARY KEY (model_id, alias));"
    "CREATE TABLE runs ("
    "  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, experiment TEXT NOT NULL, name TEXT NOT NULL,"
    "  status TEXT NOT NULL, params TEXT NOT NULL DEFAULT '{}', tags TEXT NOT NULL DEFAULT '{}',"
    "  created_by TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
    "CREATE INDEX runs_experiment ON runs(tenant, experiment);"
    "CREATE TABLE run_metrics ("
    "  run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, key TEXT NOT NULL,"
    "  value REAL NOT NULL, step INTEGER NOT NULL, ts INTEGER NOT NULL);"
    "CREATE INDEX run_metrics_run ON run_metrics(run_id, key, step);"
    "CREATE TABLE audit ("
    "  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,"
    "  resource TEXT NOT NULL, before TEXT, after TEXT, ts INTEGER NOT NULL);"
    "CREATE INDEX audit_tenant ON audit(tenant, id);", NULL},
    /* 3: per-model dynamic batching settings (JSON; NULL = the server's defaults) */
    {"ALTER TABLE models ADD COLUMN batching TEXT;", NULL},
    /* 4: the four-eyes rule a version was uploaded under (NULL: the model's current rule);
     * existing versions keep the rule their model has now */
    {"ALTER TABLE model_versions ADD COLUMN require_distinct_approver INTEGER;"
    "UPDATE model_versions SET require_distinct_approver ="
    "  (SELECT m.require_distinct_approver FROM models m WHERE m.id = model_versions.model_id);", NULL},
    /* 5: key scopes, comma-separated names ('' = the role's full reach) */
    {"ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT '';", NULL},
    /* 6: what a routing rebuild reads of every version, as a covering index: the rebuild
     * scans it (a few dozen bytes a version) instead of the table's wide rows; sha256 for
     * the artifact collector's reference check */
    {"CREATE INDEX model_versions_routing ON model_versions(model_id, version, status);"
    "CREATE INDEX model_versions_sha256 ON model_versions(sha256);", NULL},
    /* 7: change generations (a writer bumps its scope in its transaction; every replica
     * polls them to know when to rebuild a snapshot) and leases (background singletons
     * and their fencing tokens; rows are never deleted, so a token only grows). Times in
     * ms since the epoch. */
    {"CREATE TABLE generations ("
    "  scope TEXT PRIMARY KEY, generation INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
    "INSERT INTO generations (scope, generation, updated_at) VALUES ('auth', 0, 0), ('registry', 0, 0);"
    "CREATE TABLE leases ("
    "  name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at INTEGER NOT NULL,"
    "  token INTEGER NOT NULL, acquired_at INTEGER NOT NULL, renewed_at INTEGER NOT NULL);", NULL},
    /* 8: artifact blobs in the metadata store (artifact_store = metadata; store/blobs.c):
     * one row per blob (complete = 1 once every chunk is written; touched_at, ms, is the
     * collector's grace clock) and its 1 MiB chunks, numbered from 0 */
    {"CREATE TABLE blobs ("
    "  sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, chunks INTEGER NOT NULL,"
    "  complete INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL,"
    "  touched_at INTEGER NOT NULL);"
    "CREATE INDEX blobs_touched ON blobs(touched_at);"
    "CREATE TABLE blob_chunks ("
    "  sha256 TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL,"
    "  PRIMARY KEY (sha256, seq));", NULL},
    /* 9: declarative resources (store/resources.c): one JSON spec per (tenant, kind, name),
     * its generation growing with every change */
    {"CREATE TABLE resources ("
    "  tenant TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, spec TEXT NOT NULL,"
    "  generation INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
    "  created_by TEXT NOT NULL, updated_by TEXT NOT NULL,"
    "  PRIMARY KEY (tenant, kind, name));"
    "CREATE INDEX resources_kind ON resources(kind, tenant, name);"
    "INSERT INTO generations (scope, generation, updated_at) VALUES ('resources', 0, 0);", NULL},
    /* 10: jobs (events/jobs.c): River's states, claimed with leases (store/lease.h's work
     * table convention; lease_owner and lease_token stay after the attempt, naming its
     * holder). Times are the database's clock, ms since the epoch. errors is a JSON array
     * of the failed attempts; progress_rate (per second) is the holder's measure. Indexes:
     * the claim (a kind's available jobs in priority order), the due scan (scheduled and
     * retryable jobs whose time came, running jobs whose lease expired), a tenant's listing
     * (all, or of one state), retention; unique_key is unique among a tenant's live jobs of a kind. */
    {"CREATE TABLE jobs ("
    "  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,"
    "  args TEXT NOT NULL DEFAULT '{}', unique_key TEXT, priority INTEGER NOT NULL DEFAULT 0,"
    "  attempt INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL,"
    "  scheduled_at INTEGER NOT NULL, created_at INTEGER NOT NULL, attempted_at INTEGER,"
    "  finalized_at INTEGER, created_by TEXT NOT NULL DEFAULT '',"
    "  errors TEXT NOT NULL DEFAULT '[]', progress_done INTEGER NOT NULL DEFAULT 0,"
    "  progress_total INTEGER NOT NULL DEFAULT 0, progress_rate REAL,"
    "  result TEXT, result_location TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0,"
    "  lease_owner TEXT, lease_expires_at INTEGER NOT NULL DEFAULT 0,"
    "  lease_token INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX jobs_claim ON jobs(kind, state, priority DESC, scheduled_at, id);"
    "CREATE INDEX jobs_due ON jobs(state, scheduled_at);"
    "CREATE INDEX jobs_tenant ON jobs(tenant, id);"
    "CREATE INDEX jobs_tenant_state ON jobs(tenant, state, id);"
    "CREATE INDEX jobs_finalized ON jobs(finalized_at);"
    "CREATE UNIQUE INDEX jobs_unique ON jobs(tenant, kind, unique_key)"
    "  WHERE unique_key IS NOT NULL AND state NOT IN ('completed', 'discarded', 'cancelled');",
     NULL},
    /* 11: webhook deliveries (events/webhooks.c): one row per delivery (its job has the same
     * id; state, attempts and the last outcome mirror it for the delivery log, which outlives
     * the job's retention) and one per attempt */
    {"CREATE TABLE webhook_deliveries ("
    "  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, destination TEXT NOT NULL,"
    "  event_id TEXT NOT NULL, webhook_id TEXT NOT NULL, payload TEXT NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,"
    "  max_attempts INTEGER NOT NULL, last_status INTEGER NOT NULL DEFAULT 0,"
    "  last_error TEXT, next_attempt_at INTEGER, replay_of TEXT,"
    "  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
    "  created_by TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries(tenant, id);"
    "CREATE INDEX webhook_deliveries_dest ON webhook_deliveries(tenant, destination, id);"
    "CREATE TABLE webhook_attempts ("
    "  delivery_id TEXT NOT NULL, attempt INTEGER NOT NULL, at INTEGER NOT NULL,"
    "  outcome TEXT NOT NULL, status INTEGER NOT NULL DEFAULT 0,"
    "  duration_ms REAL NOT NULL DEFAULT 0, error TEXT, response TEXT,"
    "  retry_in_ms INTEGER, PRIMARY KEY (delivery_id, attempt));", NULL},
    /* 12: every generation's spec of a declarative resource (store/resources.c): the
     * revisions of an endpoint, what a rollback restores; written in the put's transaction,
     * deleted with the resource */
    {"CREATE TABLE resource_revisions ("
    "  tenant TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,"
    "  generation INTEGER NOT NULL, spec TEXT NOT NULL, created_at INTEGER NOT NULL,"
    "  created_by TEXT NOT NULL, PRIMARY KEY (tenant, kind, name, generation));", NULL},
    /* 13: progressive rollouts (serving/rollouts.c): one row per rollout of an endpoint;
     * state running|paused|promoted|rolled_back|aborted; spec the request as normalised;
     * base_spec the endpoint's spec before the rollout (what a rollback restores);
     * last_check the guards' values at the last evaluation; history a JSON array of steps
     * and decisions. At most one running or paused rollout per endpoint. */
    {"CREATE TABLE rollouts ("
    "  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, endpoint TEXT NOT NULL,"
    "  state TEXT NOT NULL, spec TEXT NOT NULL, base_spec TEXT NOT NULL,"
    "  base_generation INTEGER NOT NULL, step INTEGER NOT NULL DEFAULT 0,"
    "  step_started_at INTEGER NOT NULL, last_check TEXT, reason TEXT,"
    "  history TEXT NOT NULL DEFAULT '[]', created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL, created_by TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX rollouts_endpoint ON rollouts(tenant, endpoint, id);"
    "CREATE UNIQUE INDEX rollouts_active ON rollouts(tenant, endpoint)"
    "  WHERE state IN ('running', 'paused');", NULL},
    {NULL, NULL},
};
