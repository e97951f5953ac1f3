/*
 * Endpoints (issue 10): a stable name clients call and its traffic policy over the
 * versions of one model — weighted routes (canary, blue-green), a sticky key (A/B),
 * Thompson sampling over the routes (bandit), shadow versions, prediction-log sampling
 * and an optional KServe payload logger. An endpoint is a declarative resource of kind
 * "Endpoint" (store/resources.h): PUT /v1/endpoints/{name}, `basalt apply`; every change
 * is a revision (the resource's generation; store/resources.h keeps each generation's
 * spec), and a rollback puts an earlier revision's spec again.
 *
 * The spec (JSON; docs/endpoints.md):
 *   {"model": "fraud",
 *    "routes": [{"version": 3, "weight": 95}, {"alias": "challenger", "weight": 5,
 *                "name": "b"}],                 weights are integers summing to 100
 *    "shadow": [{"version": 5, "fraction": 0.2}],
 *    "sticky": {"key": "user_id"} | {"header": "x-user-id"},
 *    "policy": {"type": "weighted"} | {"type": "thompson", "reward": {"label": 1}},
 *    "logging": {"sample_rate": 1.0},
 *    "logger": {"url": "http://…", "mode": "all|request|response"}}
 * A route's (and a shadow's) variant name is its "name", else "v<version>", else the
 * alias; names are unique within an endpoint (routes and shadows together). Only approved
 * versions may be routed (an alias can only point at approved ones); a shadow may run a
 * pending version (not a rejected one). A single route's weight defaults to 100. The
 * normalised spec written back has every default filled in (names, "shadow": [], policy,
 * logging; "sticky" and "logger" only when set). docs/endpoints-spec.md is the reference.
 *
 * Routing state is an immutable snapshot per replica (every tenant's endpoints), rebuilt
 * when scope "resources" changes and published by an atomic pointer swap; a request reads
 * one snapshot, so it is served by exactly one consistent policy.
 *
 * Sticky assignment: the key's value (the input field's JSON text as sent — a string's
 * characters, a number's digits — or the header's value) is hashed with a 64-bit hash
 * seeded by the endpoint's name into [0, 10000); the routes own consecutive ranges of
 * it in spec order, weight × 100 each. A key keeps its variant across restarts, and across
 * a policy change that keeps that variant's weight and the weights of the routes before it.
 *
 * Thread safety: lookups from QSBR-registered threads (I/O threads, workers that
 * registered); everything else from any thread.
 */
#ifndef BS_SERVING_ENDPOINTS_H
#define BS_SERVING_ENDPOINTS_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "serving/serving.h"
#include "store/meta.h"

#define BS_ENDPOINT_KIND "Endpoint"
#define BS_ENDPOINT_MAX_ROUTES 16
#define BS_ENDPOINT_MAX_SHADOWS 4

typedef enum { BS_ENDPOINT_WEIGHTED = 0, BS_ENDPOINT_THOMPSON = 1 } bs_endpoint_policy_t;

typedef struct {
    char name[64];  /* the variant's name */
    int version;    /* > 0: this version; 0: by alias */
    char alias[65]; /* "" unless by alias */
    int weight;     /* 0..100; shadows: 0 */
    double fraction; /* shadows: share of requests also run on it (0..1]; routes: 0 */
} bs_endpoint_route_t;

/* One endpoint of the snapshot: immutable while published. */
typedef struct bs_endpoint {
    char tenant[64];
    char name[64];
    char model[129];
    int64_t generation; /* the resource's generation = the revision number */
    int n_routes, n_shadows;
    bs_endpoint_route_t routes[BS_ENDPOINT_MAX_ROUTES];
    bs_endpoint_route_t shadows[BS_ENDPOINT_MAX_SHADOWS];
    char sticky_field[129];  /* "" unless sticky by an input field */
    char sticky_header[129]; /* "" unless sticky by a request header (lower case) */
    bs_endpoint_policy_t policy;
    char reward_label[128]; /* thompson: JSON text of reward.label ("1", "\"yes\"") */
    double sample_rate;     /* prediction log: share of requests logged, 0..1 */
    char logger_url[512];   /* "" when no payload logger */
    char logger_mode[16];   /* "all", "request", "response" */
    struct bs__endpoint_state *state; /* long-lived per (tenant, name): bandit arms, counters */
} bs_endpoint_t;

typedef struct bs_endpoints bs_endpoints_t;

/* serving is borrowed (validation resolves versions and aliases in its snapshot). */
bs_endpoints_t *bs_endpoints_new(bs_meta_t *meta, bs_serving_t *serving, bs_err_t *err);
void bs_endpoints_free(bs_endpoints_t *e);

/* Rebuilds the snapshot from the stored Endpoint resources (the kind's rebuild hook).
 * Blocking (SQL). */
int bs_endpoints_rebuild(bs_endpoints_t *e, bs_err_t *err);

/* Checks a spec for endpoint `name` of tenant and returns the normalised spec in *out
 * (caller frees): BS_EINVAL with err->field naming the spec field ("routes[1].weight") for
 * a malformed spec or weights not summing to 100; BS_ENOTFOUND for an unknown model,
 * version or alias; BS_EINVAL for a version that is not approved. Reads the serving
 * snapshot only. */
int bs_endpoint_spec_normalise(bs_endpoints_t *e, const char *tenant, const char *name,
                               const cJSON *spec, cJSON **out, bs_err_t *err);

/* The structural part of normalise, without the registry: parses spec (borrowed) into *ep
 * (defaults filled in; generation 0, state NULL). 0 or BS_EINVAL with err->field set. The
 * rebuild reads stored specs with it; the rollout controller edits weights with it. */
int bs_endpoint_spec_parse(const char *tenant, const char *name, const cJSON *spec,
                           bs_endpoint_t *ep, bs_err_t *err);
/* The normalised spec of ep as JSON (caller frees; NULL out of memory): every default
 * filled in, "shadow" always present, "sticky" and "logger" only when set. */
cJSON *bs_endpoint_spec_render(const bs_endpoint_t *ep);

/* The endpoint, borrowed until the calling thread's QSBR section ends; NULL if none. */
const bs_endpoint_t *bs_endpoints_get(bs_endpoints_t *e, const char *tenant, const char *name);

/* The route index for one request: sticky (key non-NULL: its bytes as described above),
 * else Thompson sampling over the routes' reward posteriors Beta(1 + successes,
 * 1 + failures) (policy thompson; a route of weight 0 is no arm, other weights do not
 * matter), else weighted at random. Never fails (weights sum to
 * 100; a route of weight 0 is never picked unless every route is 0 — then the first). */
int bs_endpoint_pick(const bs_endpoint_t *ep, const char *key, size_t key_len);
/* The sticky point of a key, in [0, 10000): SipHash-2-4 keyed by the endpoint's name
 * (docs/endpoints-spec.md), reduced by a 128-bit multiply. */
int bs_endpoint_sticky_point(const bs_endpoint_t *ep, const char *key, size_t key_len);
/* 1 if shadow i runs for this request (a fresh random draw below its fraction). */
int bs_endpoint_shadow_draw(const bs_endpoint_t *ep, int i);
/* 1 if this request's records go to the prediction log (a draw below sample_rate). */
int bs_endpoint_log_draw(const bs_endpoint_t *ep);

/* Sets the reward counts of route i's arm (the monitor's feedback, refreshed about every
 * second by the endpoints module's own timer through bs_endpoints_set_rewards_source). */
typedef int (*bs_endpoint_rewards_fn)(void *ud, const bs_endpoint_t *ep, int route,
                                      int64_t *successes, int64_t *failures);
/* fn NULL: no source. Returns once no call to the previous fn runs (so its owner may be
 * freed after); never call it while holding a lock fn takes. The timer calls fn on its own
 * thread (a QSBR reader during the call), once per route of every Thompson endpoint; a
 * return other than 0 leaves that arm's counts as they were. */
void bs_endpoints_set_rewards_source(bs_endpoints_t *e, bs_endpoint_rewards_fn fn, void *ud);
/* One pass of the rewards timer now (tests; from a QSBR-registered thread). */
void bs_endpoints_refresh_rewards(bs_endpoints_t *e);
/* Sets route i's arm counts directly (what the timer does with the source's answer). */
void bs_endpoint_set_arm(const bs_endpoint_t *ep, int route, int64_t successes, int64_t failures);
/* Route i's current arm counts (what pick samples from). */
void bs_endpoint_arm(const bs_endpoint_t *ep, int route, int64_t *successes, int64_t *failures);

/* Called after every rebuild, once per tenant that has an endpoint, on the rebuilding
 * thread (the monitor starts tailing the tenant's predictions and feedback topics from it).
 * Registering calls fn at once for the tenants of the current snapshot; fn NULL unregisters.
 * Returns once no call to the previous fn runs (its owner may be freed after). fn must not
 * call bs_endpoints_rebuild or bs_endpoints_on_rebuild. */
typedef void (*bs_endpoints_tenant_fn)(void *ud, const char *tenant);
void bs_endpoints_on_rebuild(bs_endpoints_t *e, bs_endpoints_tenant_fn fn, void *ud);

/* Calls cb for every endpoint of the snapshot (tenant NULL: all tenants). From a
 * QSBR-registered thread; the endpoint is borrowed for the call. */
void bs_endpoints_each(bs_endpoints_t *e, const char *tenant,
                       void (*cb)(const bs_endpoint_t *ep, void *ud), void *ud);

/* Per endpoint, version and variant, Prometheus text: basalt_endpoint_requests_total,
 * basalt_endpoint_errors_total{code}, basalt_endpoint_request_duration_seconds (histogram),
 * basalt_endpoint_shadow_requests_total, basalt_endpoint_shadow_errors_total. */
void bs_endpoints_metrics(bs_endpoints_t *e, bs_buf_t *b);
/* Counts one request (or one shadow run) of route/shadow index i of ep. */
void bs_endpoint_record(const bs_endpoint_t *ep, int shadow, int i, int version,
                        uint64_t duration_ns, int code);

#endif
