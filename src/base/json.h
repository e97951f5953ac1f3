/*
 * JSON reading: cJSON (Debian libcjson) behind a depth-checked parse and
 * typed getters that report errors naming the field. Writing lives in buf.h.
 * Parsed trees are heap-owned by cJSON; bs_json_parse_arena ties the tree's
 * lifetime to an arena.
 */
#ifndef BS_BASE_JSON_H
#define BS_BASE_JSON_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/err.h"

/* Nesting depth of the JSON text (brackets outside strings); no allocation. */
int bs_json_depth(const char *s, size_t len);

/* Parses s (len bytes, need not be NUL-terminated). Errors: BS_EDEPTH when the
 * nesting exceeds max_depth, BS_EPARSE with the byte offset. Caller owns the result
 * (cJSON_Delete). */
cJSON *bs_json_parse(const char *s, size_t len, int max_depth, bs_err_t *err);
/* Same, freed with the arena. */
cJSON *bs_json_parse_arena(bs_arena_t *a, const char *s, size_t len, int max_depth, bs_err_t *err);

/* Getters: return 0 (found, value set), 1 (absent and optional) or a negative error
 * (wrong type, absent and required) naming the field. */
int bs_json_get_str(const cJSON *obj, const char *key, int required, const char **out, bs_err_t *err);
int bs_json_get_int(const cJSON *obj, const char *key, int required, int64_t min, int64_t max,
                    int64_t *out, bs_err_t *err);
int bs_json_get_double(const cJSON *obj, const char *key, int required, double *out, bs_err_t *err);
int bs_json_get_bool(const cJSON *obj, const char *key, int required, int *out, bs_err_t *err);

/* 1 if an object has a key that is not in the NULL-terminated list; sets err naming it. */
int bs_json_reject_unknown(const cJSON *obj, const char *const *allowed, bs_err_t *err);

#endif
