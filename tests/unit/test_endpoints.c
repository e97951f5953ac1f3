/* Endpoints (serving/endpoints.h) on a real registry and serving snapshot (SQLite in a
 * temporary directory): spec normalisation — every refusal names its field, every default is
 * filled in — the routing snapshot's rebuild and its long-lived state, the draws (weighted
 * split checked with a chi-square goodness-of-fit test, sticky assignment stable across the
 * policy changes the header documents, Thompson sampling choosing the better arm), the
 * rewards source and the tenant hook, and the per-variant metrics. */
#include "test_common.h"

#include <math.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/rcu.h"
#include "registry/registry.h"
#include "serving/endpoints.h"
#include "serving/endpoints_int.h"
#include "serving/serving.h"
#include "store/meta.h"
#include "store/resources.h"

typedef struct {
    char dir[64];
    bs_meta_t *m;
    bs_registry_t *reg;
    bs_serving_t *serving;
    bs_endpoints_t *e;
} fx_t;

static const char *linear_model =
    "{\"basalt_model\":1,\"inputs\":[{\"name\":\"a\",\"type\":\"float\"}],\"estimator\":{\"type\":"
    "\"linear\",\"link\":\"identity\",\"coef\":[[1.0]],\"intercept\":[0.0]},\"output\":{\"task\":"
    "\"regression\",\"n_outputs\":1}}";

static void registry_call(int rc, const bs_err_t *err)
{
    if (rc)
        fprintf(stderr, "registry: %s\n", err->msg);
    assert_int_equal(rc, 0);
}

/* Model "fraud" of tenant "t1": versions 1, 2 approved (alias champion → 1, challenger → 2),
 * 3 pending, 4 rejected, 5 archived. Model "other" of tenant "t2". */
static int setup(void **state)
{
    bs_rcu_register();
    fx_t *f = calloc(1, sizeof *f);
    bs_err_t err;
    snprintf(f->dir, sizeof f->dir, "/tmp/bs-test-ep-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    char path[128];
    snprintf(path, sizeof path, "%s/basalt.db", f->dir);
    if (!(f->m = bs_meta_open(path, &err)))
        return -1;
    snprintf(path, sizeof path, "%s/artifacts", f->dir);
    if (!(f->reg = bs_registry_new(f->m, path, BS_BLOBS_FILES, &err)))
        return -1;
    bs_principal_t who = {.role = BS_ROLE_ADMIN};
    snprintf(who.key_id, sizeof who.key_id, "test");
    bs_buf_t out;
    bs_buf_init(&out);
    snprintf(who.tenant, sizeof who.tenant, "t1");
    cJSON *body = cJSON_Parse("{\"name\":\"fraud\"}");
    registry_call(bs_registry_model_create(f->reg, &who, body, &out, &err), &err);
    for (int v = 1; v <= 5; v++) {
        out.len = 0;
        registry_call(bs_registry_version_create(f->reg, &who, "fraud", "basalt_json", linear_model,
                                                 strlen(linear_model), NULL, &out, &err),
                      &err);
    }
    const char *decision[] = {NULL, "approve", "approve", NULL, "reject", "approve"};
    for (int v = 1; v <= 5; v++)
        if (decision[v]) {
            out.len = 0;
            registry_call(bs_registry_version_transition(f->reg, &who, "fraud", v, decision[v], NULL,
                                                         &out, &err),
                          &err);
        }
    out.len = 0;
    registry_call(bs_registry_version_transition(f->reg, &who, "fraud", 5, "archive", NULL, &out,
                                                 &err),
                  &err);
    out.len = 0;
    registry_call(bs_registry_alias_set(f->reg, &who, "fraud", "champion", 1, &out, &err), &err);
    out.len = 0;
    registry_call(bs_registry_alias_set(f->reg, &who, "fraud", "challenger", 2, &out, &err), &err);
    cJSON_Delete(body);
    snprintf(who.tenant, sizeof who.tenant, "t2");
    body = cJSON_Parse("{\"name\":\"other\"}");
    out.len = 0;
    registry_call(bs_registry_model_create(f->reg, &who, body, &out, &err), &err);
    cJSON_Delete(body);
    bs_buf_free(&out);
    bs_serving_opts_t so = {.memory_budget = 1 << 26, .max_rows = 100};
    if (!(f->serving = bs_serving_new(f->m, f->reg, &so, &err)))
        return -1;
    if (!(f->e = bs_endpoints_new(f->m, f->serving, &err)))
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    bs_endpoints_free(f->e);
    bs_serving_free(f->serving);
    bs_registry_free(f->reg);
    bs_meta_close(f->m);
    bs_rcu_unregister();
    bs_rcu_drain();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* normalise(spec text) → rc, the normalised spec in *out (caller frees) when 0. */
static int normalise(fx_t *f, const char *tenant, const char *spec, cJSON **out, bs_err_t *err)
{
    cJSON *j = cJSON_Parse(spec);
    assert_non_null(j);
    cJSON *norm = NULL;
    bs_err_clear(err);
    int rc = bs_endpoint_spec_normalise(f->e, tenant, "ep", j, &norm, err);
    cJSON_Delete(j);
    if (out)
        *out = norm;
    else
        cJSON_Delete(norm);
    return rc;
}

static void test_normalise_errors(void **state)
{
    fx_t *f = *state;
    static const struct {
        const char *spec;
        int rc;
        const char *field;
        const char *mentions;
    } cases[] = {
        {"[]", BS_EINVAL, "spec", NULL},
        {"{\"routes\":[{\"version\":1}]}", BS_EINVAL, "model", "required"},
        {"{\"model\":7,\"routes\":[{\"version\":1}]}", BS_EINVAL, "model", NULL},
        {"{\"model\":\"nope\",\"routes\":[{\"version\":1}]}", BS_ENOTFOUND, "model", "nope"},
        {"{\"model\":\"fraud\"}", BS_EINVAL, "routes", "required"},
        {"{\"model\":\"fraud\",\"routes\":[]}", BS_EINVAL, "routes", NULL},
        {"{\"model\":\"fraud\",\"routes\":{}}", BS_EINVAL, "routes", NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"color\":1}", BS_EINVAL, "color",
         "unknown"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1,\"wieght\":100}]}", BS_EINVAL,
         "routes[0].wieght", "unknown"},
        {"{\"model\":\"fraud\",\"routes\":[{\"weight\":100}]}", BS_EINVAL, "routes[0]",
         "exactly one"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1,\"alias\":\"champion\"}]}", BS_EINVAL,
         "routes[0]", "exactly one"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1.5}]}", BS_EINVAL, "routes[0].version",
         NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":\"1\"}]}", BS_EINVAL, "routes[0].version",
         NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1,\"weight\":60},{\"version\":2,\"weight\":"
         "30}]}",
         BS_EINVAL, "routes", "sum to 100, got 90"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1,\"weight\":60},{\"version\":2,\"weight\":"
         "50}]}",
         BS_EINVAL, "routes", "got 110"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1,\"weight\":101}]}", BS_EINVAL,
         "routes[0].weight", NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1,\"weight\":-1},{\"version\":2,\"weight\":"
         "101}]}",
         BS_EINVAL, "routes[0].weight", NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1,\"weight\":99.5},{\"version\":2,"
         "\"weight\":0.5}]}",
         BS_EINVAL, "routes[0].weight", NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1},{\"version\":2,\"weight\":100}]}",
         BS_EINVAL, "routes[0].weight", "required"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":9}]}", BS_ENOTFOUND, "routes[0].version",
         "no version 9"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1,\"weight\":50},{\"version\":3,\"weight\":"
         "50}]}",
         BS_EINVAL, "routes[1].version", "not approved"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":4}]}", BS_EINVAL, "routes[0].version",
         "not approved"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":5}]}", BS_EINVAL, "routes[0].version",
         "not approved"},
        {"{\"model\":\"fraud\",\"routes\":[{\"alias\":\"gold\"}]}", BS_ENOTFOUND, "routes[0].alias",
         "gold"},
        {"{\"model\":\"fraud\",\"routes\":[{\"alias\":\"Bad Alias\"}]}", BS_EINVAL,
         "routes[0].alias", NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1,\"weight\":50},{\"version\":1,\"weight\":"
         "50}]}",
         BS_EINVAL, "routes[1].name", "twice"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1,\"name\":\"a b\"}]}", BS_EINVAL,
         "routes[0].name", NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1,\"weight\":100},{\"version\":2,\"weight\":"
         "0},{\"version\":2,\"weight\":0,\"name\":\"x\"},{\"version\":2,\"weight\":0,\"name\":\"y\"},"
         "{\"version\":2,\"weight\":0,\"name\":\"z\"},{\"version\":2,\"weight\":0,\"name\":\"z1\"},"
         "{\"version\":2,\"weight\":0,\"name\":\"z2\"},{\"version\":2,\"weight\":0,\"name\":\"z3\"},"
         "{\"version\":2,\"weight\":0,\"name\":\"z4\"},{\"version\":2,\"weight\":0,\"name\":\"z5\"},"
         "{\"version\":2,\"weight\":0,\"name\":\"z6\"},{\"version\":2,\"weight\":0,\"name\":\"z7\"},"
         "{\"version\":2,\"weight\":0,\"name\":\"z8\"},{\"version\":2,\"weight\":0,\"name\":\"z9\"},"
         "{\"version\":2,\"weight\":0,\"name\":\"za\"},{\"version\":2,\"weight\":0,\"name\":\"zb\"},"
         "{\"version\":2,\"weight\":0,\"name\":\"zc\"}]}",
         BS_EINVAL, "routes", "1 to 16"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"shadow\":[{\"version\":2}]}",
         BS_EINVAL, "shadow[0].fraction", "required"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"shadow\":[{\"version\":2,\"fraction\":"
         "0}]}",
         BS_EINVAL, "shadow[0].fraction", NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"shadow\":[{\"version\":2,\"fraction\":"
         "1.5}]}",
         BS_EINVAL, "shadow[0].fraction", NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"shadow\":[{\"version\":2,\"fraction\":"
         "0.5,\"weight\":3}]}",
         BS_EINVAL, "shadow[0].weight", "unknown"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"shadow\":[{\"version\":1,\"fraction\":"
         "0.5}]}",
         BS_EINVAL, "shadow[0].name", "twice"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"shadow\":[{\"version\":4,\"fraction\":"
         "0.5}]}",
         BS_EINVAL, "shadow[0].version", "rejected"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"shadow\":[{\"version\":8,\"fraction\":"
         "0.5}]}",
         BS_ENOTFOUND, "shadow[0].version", NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"shadow\":[{\"version\":2,\"fraction\":"
         "0.1},{\"version\":2,\"fraction\":0.1,\"name\":\"b\"},{\"version\":2,\"fraction\":0.1,"
         "\"name\":\"c\"},{\"version\":2,\"fraction\":0.1,\"name\":\"d\"},{\"version\":2,"
         "\"fraction\":0.1,\"name\":\"e\"}]}",
         BS_EINVAL, "shadow", "0 to 4"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"sticky\":\"user\"}", BS_EINVAL,
         "sticky", NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"sticky\":{}}", BS_EINVAL, "sticky",
         "exactly one"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"sticky\":{\"key\":\"u\",\"header\":"
         "\"x-u\"}}",
         BS_EINVAL, "sticky", "exactly one"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"sticky\":{\"key\":\"\"}}", BS_EINVAL,
         "sticky.key", NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"sticky\":{\"header\":\"x user\"}}",
         BS_EINVAL, "sticky.header", NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"sticky\":{\"cookie\":\"u\"}}",
         BS_EINVAL, "sticky.cookie", "unknown"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"policy\":{\"type\":\"greedy\"}}",
         BS_EINVAL, "policy.type", NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"policy\":{}}", BS_EINVAL,
         "policy.type", NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"policy\":{\"type\":\"thompson\"}}",
         BS_EINVAL, "policy.reward", NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"policy\":{\"type\":\"thompson\","
         "\"reward\":{\"label\":null}}}",
         BS_EINVAL, "policy.reward.label", NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"policy\":{\"type\":\"thompson\","
         "\"reward\":{\"label\":[1]}}}",
         BS_EINVAL, "policy.reward.label", NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"policy\":{\"type\":\"thompson\","
         "\"reward\":{\"label\":1,\"value\":2}}}",
         BS_EINVAL, "policy.reward.value", "unknown"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"policy\":{\"type\":\"weighted\","
         "\"reward\":{\"label\":1}}}",
         BS_EINVAL, "policy.reward", "thompson"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"logging\":{\"sample_rate\":1.5}}",
         BS_EINVAL, "logging.sample_rate", NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"logging\":{\"sample_rate\":\"all\"}}",
         BS_EINVAL, "logging.sample_rate", NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"logging\":{\"rate\":1}}", BS_EINVAL,
         "logging.rate", "unknown"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"logger\":{}}", BS_EINVAL,
         "logger.url", "required"},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"logger\":{\"url\":\"ftp://x/\"}}",
         BS_EINVAL, "logger.url", NULL},
        {"{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"logger\":{\"url\":\"http://x/\","
         "\"mode\":\"both\"}}",
         BS_EINVAL, "logger.mode", NULL},
        /* tenant isolation: t2 has no model fraud */
        {NULL, 0, NULL, NULL},
    };
    for (int i = 0; cases[i].spec; i++) {
        bs_err_t err;
        int rc = normalise(f, "t1", cases[i].spec, NULL, &err);
        if (rc != cases[i].rc || strcmp(err.field, cases[i].field) != 0 ||
            (cases[i].mentions && !strstr(err.msg, cases[i].mentions)))
            fail_msg("case %d %s: rc %d field '%s' msg '%s' (want %d '%s' ~'%s')", i,
                     cases[i].spec, rc, err.field, err.msg, cases[i].rc, cases[i].field,
                     cases[i].mentions ? cases[i].mentions : "");
    }
    bs_err_t err;
    assert_int_equal(normalise(f, "t2", "{\"model\":\"fraud\",\"routes\":[{\"version\":1}]}", NULL,
                               &err),
                     BS_ENOTFOUND);
    assert_string_equal(err.field, "model");
}

static void assert_json(const cJSON *j, const char *want)
{
    char *got = cJSON_PrintUnformatted(j);
    cJSON *w = cJSON_Parse(want);
    assert_non_null(w);
    if (!cJSON_Compare(j, w, 1))
        fail_msg("got %s\nwant %s", got, want);
    cJSON_Delete(w);
    free(got);
}

static void test_normalise_defaults(void **state)
{
    fx_t *f = *state;
    bs_err_t err;
    cJSON *out;
    assert_int_equal(normalise(f, "t1", "{\"model\":\"fraud\",\"routes\":[{\"alias\":\"champion\"}]}",
                               &out, &err),
                     0);
    assert_json(out, "{\"model\":\"fraud\",\"routes\":[{\"name\":\"champion\",\"alias\":\"champion\","
                     "\"weight\":100}],\"shadow\":[],\"policy\":{\"type\":\"weighted\"},\"logging\":"
                     "{\"sample_rate\":1}}");
    cJSON_Delete(out);
    /* a pending version may shadow (it does not answer callers); a header is lower-cased;
     * a reward label keeps its JSON type */
    assert_int_equal(
        normalise(f, "t1",
                  "{\"model\":\"fraud\",\"routes\":[{\"version\":1,\"weight\":95},{\"alias\":"
                  "\"challenger\",\"weight\":5,\"name\":\"b\"}],\"shadow\":[{\"version\":3,"
                  "\"fraction\":0.2}],\"sticky\":{\"header\":\"X-User-Id\"},\"policy\":{\"type\":"
                  "\"thompson\",\"reward\":{\"label\":\"yes\"}},\"logging\":{\"sample_rate\":0.5},"
                  "\"logger\":{\"url\":\"http://127.0.0.1:9/log\"}}",
                  &out, &err),
        0);
    assert_json(out, "{\"model\":\"fraud\",\"routes\":[{\"name\":\"v1\",\"version\":1,\"weight\":95},"
                     "{\"name\":\"b\",\"alias\":\"challenger\",\"weight\":5}],\"shadow\":[{\"name\":"
                     "\"v3\",\"version\":3,\"fraction\":0.2}],\"sticky\":{\"header\":\"x-user-id\"},"
                     "\"policy\":{\"type\":\"thompson\",\"reward\":{\"label\":\"yes\"}},\"logging\":"
                     "{\"sample_rate\":0.5},\"logger\":{\"url\":\"http://127.0.0.1:9/log\",\"mode\":"
                     "\"all\"}}");
    /* normalising the normalised spec changes nothing (what is stored is a fixed point) */
    char *txt = cJSON_PrintUnformatted(out);
    cJSON *again;
    assert_int_equal(normalise(f, "t1", txt, &again, &err), 0);
    assert_true(cJSON_Compare(out, again, 1));
    bs_endpoint_t ep;
    assert_int_equal(bs_endpoint_spec_parse("t1", "ep", out, &ep, &err), 0);
    assert_string_equal(ep.reward_label, "\"yes\"");
    assert_string_equal(ep.sticky_header, "x-user-id");
    assert_int_equal(ep.policy, BS_ENDPOINT_THOMPSON);
    assert_int_equal(ep.routes[1].version, 0);
    assert_string_equal(ep.routes[1].alias, "challenger");
    free(txt);
    cJSON_Delete(again);
    cJSON_Delete(out);
    assert_int_equal(normalise(f, "t1",
                               "{\"model\":\"fraud\",\"routes\":[{\"version\":1}],\"policy\":{"
                               "\"type\":\"thompson\",\"reward\":{\"label\":1}}}",
                               &out, &err),
                     0);
    assert_int_equal(bs_endpoint_spec_parse("t1", "ep", out, &ep, &err), 0);
    assert_string_equal(ep.reward_label, "1");
    cJSON_Delete(out);
}

static bs_endpoint_t parsed(const char *name, const char *spec)
{
    cJSON *j = cJSON_Parse(spec);
    assert_non_null(j);
    bs_endpoint_t ep;
    bs_err_t err;
    if (bs_endpoint_spec_parse("t1", name, j, &ep, &err) != 0)
        fail_msg("%s: %s", spec, err.msg);
    cJSON_Delete(j);
    return ep;
}

/* Pearson's chi-square statistic of counts against expected shares. */
static double chi_square(const int *counts, const double *shares, int k, int n)
{
    double x = 0;
    for (int i = 0; i < k; i++) {
        double e = shares[i] * n;
        x += (counts[i] - e) * (counts[i] - e) / e;
    }
    return x;
}

/* Weighted draws follow the weights: 100k draws over 70/20/10, a chi-square test with two
 * degrees of freedom, whose survival function is exp(-x/2): p > 1e-6 (x < 27.6); a route of
 * weight 0 is never drawn. */
static void test_pick_weighted(void **state)
{
    (void)state;
    bs_endpoint_t ep = parsed("fraud", "{\"model\":\"m\",\"routes\":[{\"version\":1,\"weight\":70},"
                                       "{\"version\":2,\"weight\":0},{\"version\":3,\"weight\":20},"
                                       "{\"version\":4,\"weight\":10}]}");
    int counts[4] = {0}, n = 100000;
    for (int i = 0; i < n; i++)
        counts[bs_endpoint_pick(&ep, NULL, 0)]++;
    assert_int_equal(counts[1], 0);
    int c3[3] = {counts[0], counts[2], counts[3]};
    double shares[3] = {0.7, 0.2, 0.1};
    double x = chi_square(c3, shares, 3, n);
    if (!(x < 27.6))
        fail_msg("chi-square %.2f over %d/%d/%d", x, c3[0], c3[1], c3[2]);
    /* one route: always it */
    bs_endpoint_t one = parsed("x", "{\"model\":\"m\",\"routes\":[{\"version\":1}]}");
    for (int i = 0; i < 100; i++)
        assert_int_equal(bs_endpoint_pick(&one, NULL, 0), 0);
    /* blue-green: 0/100 sends everything to the second */
    bs_endpoint_t bg = parsed("x", "{\"model\":\"m\",\"routes\":[{\"version\":1,\"weight\":0},"
                                   "{\"version\":2,\"weight\":100}]}");
    for (int i = 0; i < 1000; i++)
        assert_int_equal(bs_endpoint_pick(&bg, NULL, 0), 1);
}

/* Sticky: the same key always gets the same route; the assignment depends on the endpoint's
 * name; across many keys it follows the weights; a key keeps its variant across a change that
 * keeps the weights of its route and those before it (a route added at the end, the weight
 * moved among later routes, the policy switched to Thompson), and a restart cannot move it
 * (the hash has no per-process state: a second endpoint struct of the same name agrees). */
static void test_pick_sticky(void **state)
{
    (void)state;
    bs_endpoint_t a = parsed("fraud", "{\"model\":\"m\",\"routes\":[{\"version\":1,\"weight\":30},"
                                      "{\"version\":2,\"weight\":70}]}");
    bs_endpoint_t b = parsed("fraud", "{\"model\":\"m\",\"routes\":[{\"version\":1,\"weight\":30},"
                                      "{\"version\":2,\"weight\":20},{\"version\":3,\"weight\":50}],"
                                      "\"policy\":{\"type\":\"thompson\",\"reward\":{\"label\":1}}}");
    bs_endpoint_t other = parsed("payments", "{\"model\":\"m\",\"routes\":[{\"version\":1,"
                                             "\"weight\":30},{\"version\":2,\"weight\":70}]}");
    int n = 20000, counts[2] = {0}, moved_name = 0, kept = 0, in_first = 0;
    char key[32];
    for (int i = 0; i < n; i++) {
        int len = snprintf(key, sizeof key, "user-%d", i);
        int r = bs_endpoint_pick(&a, key, (size_t)len);
        for (int k = 0; k < 3; k++)
            assert_int_equal(bs_endpoint_pick(&a, key, (size_t)len), r);
        counts[r]++;
        int p = bs_endpoint_sticky_point(&a, key, (size_t)len);
        assert_true(p >= 0 && p < 10000);
        assert_int_equal(r, p < 3000 ? 0 : 1);
        if (r == 0) {
            in_first++;
            kept += bs_endpoint_pick(&b, key, (size_t)len) == 0;
        }
        if (bs_endpoint_pick(&other, key, (size_t)len) != r)
            moved_name++;
    }
    assert_int_equal(kept, in_first);
    double shares[2] = {0.3, 0.7};
    double x = chi_square(counts, shares, 2, n);
    /* one degree of freedom: p > 1e-6 is x < 23.9 */
    if (!(x < 23.9))
        fail_msg("sticky split chi-square %.2f (%d/%d)", x, counts[0], counts[1]);
    /* another name: an independent assignment, which differs for 2 × 0.3 × 0.7 = 42% of keys */
    assert_true(moved_name > n * 0.38 && moved_name < n * 0.46);
    /* fixed values: the assignment is a function of (name, key) only, the same on every
     * replica and after a restart (these pin the hash: changing it moves users) */
    assert_int_equal(bs_endpoint_sticky_point(&a, "user-1", 6),
                     bs_endpoint_sticky_point(&a, "user-1", 6));
    bs_endpoint_t a2 = parsed("fraud", "{\"model\":\"m\",\"routes\":[{\"version\":9}]}");
    assert_int_equal(bs_endpoint_sticky_point(&a, "user-1", 6),
                     bs_endpoint_sticky_point(&a2, "user-1", 6));
}

/* SipHash-2-4 against the reference test vector (the paper's appendix A: key 00..0f,
 * message 00..0e → a129ca6149be45e5). */
static void test_siphash_vector(void **state)
{
    (void)state;
    unsigned char msg[15];
    for (int i = 0; i < 15; i++)
        msg[i] = (unsigned char)i;
    assert_true(bs__endpoints_siphash(0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL, msg, 15) ==
                0xa129ca6149be45e5ULL);
}

static void put_endpoint(fx_t *f, const char *tenant, const char *name, const char *spec)
{
    bs_err_t err;
    int rc = bs_resources_put(f->m, tenant, BS_ENDPOINT_KIND, name, spec, "test", 0, NULL, NULL,
                              &err);
    if (rc)
        fail_msg("put: %s", err.msg);
    assert_int_equal(bs_endpoints_rebuild(f->e, &err), 0);
}

/* Thompson sampling picks the arm whose posterior is better: with 90/10 against 10/90
 * successes/failures the first wins nearly always; with no feedback the arms split evenly. */
static void test_pick_thompson(void **state)
{
    fx_t *f = *state;
    put_endpoint(f, "t1", "bandit",
                 "{\"model\":\"fraud\",\"routes\":[{\"version\":1,\"weight\":50},{\"version\":2,"
                 "\"weight\":50}],\"policy\":{\"type\":\"thompson\",\"reward\":{\"label\":1}}}");
    const bs_endpoint_t *ep = bs_endpoints_get(f->e, "t1", "bandit");
    assert_non_null(ep);
    assert_non_null(ep->state);
    int counts[2] = {0}, n = 4000;
    for (int i = 0; i < n; i++)
        counts[bs_endpoint_pick(ep, NULL, 0)]++;
    assert_true(counts[0] > n * 0.4 && counts[1] > n * 0.4);
    bs_endpoint_set_arm(ep, 0, 90, 10);
    bs_endpoint_set_arm(ep, 1, 10, 90);
    int64_t s, fl;
    bs_endpoint_arm(ep, 0, &s, &fl);
    assert_int_equal(s, 90);
    assert_int_equal(fl, 10);
    counts[0] = counts[1] = 0;
    for (int i = 0; i < n; i++)
        counts[bs_endpoint_pick(ep, NULL, 0)]++;
    assert_true(counts[0] > n * 0.99);
    /* closer arms, 45/55 against 55/45: the better is picked more often, about as often as
     * P(Beta(46,56) < Beta(56,46)) ≈ 0.92 (normal approximation of the difference) */
    bs_endpoint_set_arm(ep, 0, 45, 55);
    bs_endpoint_set_arm(ep, 1, 55, 45);
    counts[0] = counts[1] = 0;
    for (int i = 0; i < n; i++)
        counts[bs_endpoint_pick(ep, NULL, 0)]++;
    assert_true(counts[1] > n * 0.85 && counts[1] < n * 0.97);
    /* sticky still wins over the bandit */
    const char *key = "user-7";
    int r = bs_endpoint_pick(ep, key, strlen(key));
    for (int i = 0; i < 50; i++)
        assert_int_equal(bs_endpoint_pick(ep, key, strlen(key)), r);
}

typedef struct {
    int calls;
    char tenants[8][64];
    int n_tenants;
} hook_t;

static int rewards(void *ud, const bs_endpoint_t *ep, int route, int64_t *s, int64_t *fl)
{
    hook_t *h = ud;
    h->calls++;
    if (strcmp(ep->routes[route].name, "v2") == 0)
        return 1; /* no answer: the arm keeps its counts */
    *s = 100 + route;
    *fl = 7;
    return 0;
}

static void on_tenant(void *ud, const char *tenant)
{
    hook_t *h = ud;
    if (h->n_tenants < 8)
        snprintf(h->tenants[h->n_tenants], 64, "%s", tenant);
    h->n_tenants++;
}

/* The state outlives rebuilds (arms, counters), goes with the endpoint; the rewards source
 * fills Thompson endpoints' arms; the tenant hook runs per tenant after every rebuild (and at
 * once when registered). */
static void test_state_and_hooks(void **state)
{
    fx_t *f = *state;
    hook_t h = {0};
    put_endpoint(f, "t1", "a",
                 "{\"model\":\"fraud\",\"routes\":[{\"version\":1,\"weight\":50},{\"version\":2,"
                 "\"weight\":50}],\"policy\":{\"type\":\"thompson\",\"reward\":{\"label\":1}}}");
    put_endpoint(f, "t1", "b", "{\"model\":\"fraud\",\"routes\":[{\"version\":1}]}");
    put_endpoint(f, "t2", "c", "{\"model\":\"other\",\"routes\":[{\"version\":1}]}");
    bs_endpoints_on_rebuild(f->e, on_tenant, &h);
    assert_int_equal(h.n_tenants, 2);
    assert_string_equal(h.tenants[0], "t1");
    assert_string_equal(h.tenants[1], "t2");
    const bs_endpoint_t *a = bs_endpoints_get(f->e, "t1", "a");
    assert_non_null(a);
    assert_int_equal(a->generation, 1);
    assert_null(bs_endpoints_get(f->e, "t2", "a"));
    bs_endpoints_set_rewards_source(f->e, rewards, &h);
    bs_endpoints_refresh_rewards(f->e);
    assert_int_equal(h.calls, 2); /* the Thompson endpoint's two routes only */
    int64_t s, fl;
    bs_endpoint_arm(a, 0, &s, &fl);
    assert_int_equal(s, 100);
    assert_int_equal(fl, 7);
    bs_endpoint_arm(a, 1, &s, &fl);
    assert_int_equal(s, 0);
    bs_endpoints_set_rewards_source(f->e, NULL, NULL);
    bs_endpoint_record(a, 0, 0, 1, 2000000, 0);
    bs_endpoint_record(a, 0, 0, 1, 3000000, 0);
    bs_endpoint_record(a, 0, 1, 2, 0, BS_EINVAL);
    bs_endpoint_record(a, 1, 0, 3, 0, 0); /* no shadow 0: ignored */
    /* a change of the spec: a new snapshot (the old one, a included, is reclaimed: this
     * thread holds no QSBR section across the rebuild), the same state */
    const struct bs__endpoint_state *state_a = a->state;
    h.n_tenants = 0;
    put_endpoint(f, "t1", "a",
                 "{\"model\":\"fraud\",\"routes\":[{\"version\":1,\"weight\":40},{\"version\":2,"
                 "\"weight\":60}],\"shadow\":[{\"version\":3,\"fraction\":0.5}],\"policy\":{\"type\":"
                 "\"thompson\",\"reward\":{\"label\":1}}}");
    assert_int_equal(h.n_tenants, 2);
    const bs_endpoint_t *a2 = bs_endpoints_get(f->e, "t1", "a");
    assert_ptr_equal(a2->state, state_a);
    assert_int_equal(a2->generation, 2);
    assert_int_equal(a2->routes[0].weight, 40);
    bs_endpoint_arm(a2, 0, &s, &fl);
    assert_int_equal(s, 100);
    bs_endpoint_record(a2, 1, 0, 3, 1000, 0);
    bs_endpoint_record(a2, 1, 0, 3, 1000, BS_EUNAVAIL);
    bs_buf_t b;
    bs_buf_init(&b);
    bs_endpoints_metrics(f->e, &b);
    bs_buf_append(&b, "", 1);
    const char *want[] = {
        "basalt_endpoints 3\n",
        "basalt_endpoint_requests_total{tenant=\"t1\",endpoint=\"a\",variant=\"v1\",version=\"1\"} 2\n",
        "basalt_endpoint_requests_total{tenant=\"t1\",endpoint=\"a\",variant=\"v2\",version=\"2\"} 1\n",
        "basalt_endpoint_errors_total{tenant=\"t1\",endpoint=\"a\",variant=\"v2\",version=\"2\","
        "code=\"invalid_input\"} 1\n",
        "basalt_endpoint_request_duration_seconds_bucket{tenant=\"t1\",endpoint=\"a\",variant=\"v1\","
        "version=\"1\",le=\"0.001\"} 0\n",
        "basalt_endpoint_request_duration_seconds_bucket{tenant=\"t1\",endpoint=\"a\",variant=\"v1\","
        "version=\"1\",le=\"0.0025\"} 1\n",
        "basalt_endpoint_request_duration_seconds_bucket{tenant=\"t1\",endpoint=\"a\",variant=\"v1\","
        "version=\"1\",le=\"+Inf\"} 2\n",
        "basalt_endpoint_request_duration_seconds_sum{tenant=\"t1\",endpoint=\"a\",variant=\"v1\","
        "version=\"1\"} 0.005000000\n",
        "basalt_endpoint_shadow_requests_total{tenant=\"t1\",endpoint=\"a\",variant=\"v3\","
        "version=\"3\"} 2\n",
        "basalt_endpoint_shadow_errors_total{tenant=\"t1\",endpoint=\"a\",variant=\"v3\","
        "version=\"3\"} 1\n",
        "basalt_endpoint_bandit_successes{tenant=\"t1\",endpoint=\"a\",variant=\"v1\"} 100\n",
        "# TYPE basalt_endpoint_request_duration_seconds histogram\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(b.data, want[i]))
            fail_msg("metrics lack %s\n%s", want[i], b.data);
    bs_buf_free(&b);
    /* deleted: gone from the snapshot and from the metrics */
    bs_err_t err;
    assert_int_equal(bs_resources_delete(f->m, "t1", BS_ENDPOINT_KIND, "a", "test", &err), 0);
    assert_int_equal(bs_endpoints_rebuild(f->e, &err), 0);
    assert_null(bs_endpoints_get(f->e, "t1", "a"));
    bs_buf_init(&b);
    bs_endpoints_metrics(f->e, &b);
    bs_buf_append(&b, "", 1);
    assert_null(strstr(b.data, "endpoint=\"a\""));
    assert_non_null(strstr(b.data, "basalt_endpoints 2\n"));
    bs_buf_free(&b);
    bs_rcu_quiescent();
}

/* Shadow and log draws: shares within six standard deviations of the binomial. */
static void test_draws(void **state)
{
    (void)state;
    bs_endpoint_t ep = parsed("x", "{\"model\":\"m\",\"routes\":[{\"version\":1}],\"shadow\":[{"
                                   "\"version\":2,\"fraction\":0.2},{\"version\":3,\"fraction\":1}],"
                                   "\"logging\":{\"sample_rate\":0.25}}");
    int n = 50000, s0 = 0, s1 = 0, lg = 0;
    for (int i = 0; i < n; i++) {
        s0 += bs_endpoint_shadow_draw(&ep, 0);
        s1 += bs_endpoint_shadow_draw(&ep, 1);
        lg += bs_endpoint_log_draw(&ep);
    }
    assert_int_equal(s1, n);
    assert_true(fabs(s0 - 0.2 * n) < 6 * sqrt(n * 0.2 * 0.8));
    assert_true(fabs(lg - 0.25 * n) < 6 * sqrt(n * 0.25 * 0.75));
    assert_int_equal(bs_endpoint_shadow_draw(&ep, 2), 0);
    ep.sample_rate = 0;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(bs_endpoint_log_draw(&ep), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_normalise_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_normalise_defaults, setup, teardown),
        cmocka_unit_test(test_pick_weighted),
        cmocka_unit_test(test_pick_sticky),
        cmocka_unit_test(test_siphash_vector),
        cmocka_unit_test_setup_teardown(test_pick_thompson, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_and_hooks, setup, teardown),
        cmocka_unit_test(test_draws),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
