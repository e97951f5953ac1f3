/* Numbered, forward-only schema migrations of the metadata store. Append new
 * entries; never edit an applied one. Each runs in one transaction. */
#include <stddef.h>

#include "store/meta_int.h"

const char *const bs__meta_migrations[] = {
    /* 1: tenants and API keys */
    "CREATE TABLE tenants ("
    "  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL);"
    "CREATE TABLE api_keys ("
    "  id TEXT PRIMARY KEY, name TEXT NOT NULL, tenant TEXT NOT NULL, role TEXT NOT NULL,"
    "  salt TEXT NOT NULL, hash TEXT NOT NULL, rate_rps REAL, rate_burst REAL,"
    "  expires_at INTEGER, created_at INTEGER NOT NULL, created_by TEXT);"
    "CREATE INDEX api_keys_tenant ON api_keys(tenant);",
    NULL,
};
