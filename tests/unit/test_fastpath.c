/*
 * Unit tests of the one-row predict fast path (src/serving/fastpath.c) and of
 * the JSON number parser under it (src/base/numparse.c).
 *
 * The oracle for the fast path is the general path: bs_json_parse (cJSON) and
 * bs_serving_parse_inputs on the same bytes. The contract checked for every
 * body: when bs_serving_parse_fast returns 1, the general path succeeds with
 * exactly one row holding bit-identical values (any NaN equals any NaN); the
 * fast path never accepts a body the general path rejects. Bodies come from a
 * table (each also says whether the fast path must take it, so the test cannot
 * pass by declining everything), from every prefix of each table body, and
 * from single-byte edits of the accepted ones. Handles are built from small
 * basalt models written inline, without the registry (bs__serving_handle_new).
 *
 * The oracle for bs_parse_json_number is strtod: same bytes consumed, same
 * bits, on edge cases and on a few million generated numbers.
 */
#include <math.h>
#include <stdint.h>

#include "test_common.h"

#include "base/json.h"
#include "base/numparse.h"
#include "ml/ml.h"
#include "serving/serving_int.h"

/* ---- models --------------------------------------------------------------------------- */

/* x float; n float, made an int in 0..100 by the override; b bool; d float with
 * default 2.5 and range -10..10 from the override; flag bool defaulting to true;
 * r optional without a default in a model that cannot take missing values. */
static const char *LINEAR =
    "{\"basalt_model\":1,"
    " \"inputs\":[{\"name\":\"x\",\"type\":\"float\"},{\"name\":\"n\",\"type\":\"float\"},"
    "   {\"name\":\"b\",\"type\":\"bool\"},{\"name\":\"d\",\"type\":\"float\"},"
    "   {\"name\":\"flag\",\"type\":\"bool\",\"default\":true},"
    "   {\"name\":\"r\",\"type\":\"float\",\"required\":false}],"
    " \"estimator\":{\"type\":\"linear\",\"link\":\"identity\",\"coef\":[[1,2,3,4,5,6]],"
    "   \"intercept\":[0]},"
    " \"output\":{\"task\":\"regression\"}}";
static const char *LINEAR_OVERRIDE =
    "[{}, {\"type\":\"int\",\"min\":0,\"max\":100}, {}, {\"default\":2.5,\"min\":-10,\"max\":10},"
    " {}, {}]";

static const char *CATEGORY =
    "{\"basalt_model\":1,"
    " \"inputs\":[{\"name\":\"amount\",\"type\":\"float\"},"
    "   {\"name\":\"city\",\"type\":\"category\",\"categories\":[\"berlin\",\"paris\",\"rome\"]}],"
    " \"preprocess\":[{\"columns\":[\"amount\"],\"steps\":[]},"
    "   {\"columns\":[\"city\"],\"steps\":[{\"op\":\"one_hot\",\"handle_unknown\":\"ignore\"}]}],"
    " \"estimator\":{\"type\":\"linear\",\"link\":\"identity\",\"coef\":[[1,10,20,30]],"
    "   \"intercept\":[0]},"
    " \"output\":{\"task\":\"regression\"}}";
static const char *CATEGORY_DEFAULT = "[{}, {\"default\":\"paris\"}]";

/* A tree that takes missing values: every input optional, one with a non-ASCII name. */
#define GROSSE "gr\303\266\303\237e" /* UTF-8, octal escapes: \x would eat the e */
/* clang-format off */
static const char *TREES =
    "{\"basalt_model\":1,"
    " \"inputs\":[{\"name\":\"f0\",\"type\":\"float\",\"required\":false},"
    "   {\"name\":\"f1\",\"type\":\"float\",\"required\":false},"
    "   {\"name\":\"" GROSSE "\",\"type\":\"bool\",\"required\":false}],"
    " \"estimator\":{\"type\":\"trees\",\"base\":[0.5],\"scale\":1,\"leaf_width\":1,"
    "   \"transform\":\"identity\","
    "   \"trees\":[{\"feature\":[0,-1,1,-1,-1],\"threshold\":[0.5,0,2,0,0],"
    "     \"left\":[1,-1,3,-1,-1],\"right\":[2,-1,4,-1,-1],"
    "     \"value\":[null,[1],null,[2],[3]],\"missing_left\":[1,0,0,0,0]}]},"
    " \"output\":{\"task\":\"regression\"}}";
/* clang-format on */

/* An artifact is read by cJSON, which keeps any bytes: a feature name that is not UTF-8. A
 * body naming it is not valid JSON text, so both paths must refuse it. */
static const char *RAW_NAME =
    "{\"basalt_model\":1,"
    " \"inputs\":[{\"name\":\"f\xff\",\"type\":\"float\"},{\"name\":\"g\",\"type\":\"float\"}],"
    " \"estimator\":{\"type\":\"linear\",\"link\":\"identity\",\"coef\":[[1,2]],\"intercept\":[0]},"
    " \"output\":{\"task\":\"regression\"}}";

/* Names that a body can only spell with escapes ("a\"b", "c\\d"): the fast path must not
 * compare their bytes in place (BS__FAST_NAME_LITERAL), where `"a"b"` would match. */
static const char *ESCAPED_NAMES =
    "{\"basalt_model\":1,"
    " \"inputs\":[{\"name\":\"a\\\"b\",\"type\":\"float\",\"default\":0},"
    "   {\"name\":\"c\\\\d\",\"type\":\"float\",\"default\":0}],"
    " \"estimator\":{\"type\":\"linear\",\"link\":\"identity\",\"coef\":[[1,2]],\"intercept\":[0]},"
    " \"output\":{\"task\":\"regression\"}}";

/* Two plain floats: the row a log record can show as the request's own text. */
static const char *PLAIN =
    "{\"basalt_model\":1,"
    " \"inputs\":[{\"name\":\"a\",\"type\":\"float\"},{\"name\":\"b\",\"type\":\"float\"}],"
    " \"estimator\":{\"type\":\"linear\",\"link\":\"identity\",\"coef\":[[1,2]],\"intercept\":[0]},"
    " \"output\":{\"task\":\"regression\"}}";

enum { M_LIN, M_CAT, M_CATDEF, M_TREES, M_RAW, M_ESC, M_PLAIN, M_COUNT };

static bs_model_handle_t *handles[M_COUNT];
static bs_serving_t strict = {.o = {.max_rows = 16, .reject_unknown = 1}};
static bs_serving_t lenient = {.o = {.max_rows = 1, .reject_unknown = 0}}; /* the smallest limit */

static bs_model_handle_t *make_handle(const char *model_json, const char *override)
{
    bs_err_t err;
    bs_err_clear(&err);
    bs_ml_model_t *m = bs_ml_load(BS_ML_FORMAT_BASALT_JSON, model_json, strlen(model_json), &err);
    if (!m)
        fail_msg("model load failed: %s", err.msg);
    cJSON *ov = override ? cJSON_Parse(override) : NULL;
    if (override && !ov)
        fail_msg("override is not JSON: %s", override);
    bs_model_handle_t *h = bs__serving_handle_new(m, ov, NULL, &err);
    cJSON_Delete(ov);
    if (!h)
        fail_msg("handle failed: %s", err.msg);
    return h;
}

static int setup(void **state)
{
    (void)state;
    handles[M_LIN] = make_handle(LINEAR, LINEAR_OVERRIDE);
    handles[M_CAT] = make_handle(CATEGORY, NULL);
    handles[M_CATDEF] = make_handle(CATEGORY, CATEGORY_DEFAULT);
    handles[M_TREES] = make_handle(TREES, NULL);
    handles[M_RAW] = make_handle(RAW_NAME, NULL);
    handles[M_ESC] = make_handle(ESCAPED_NAMES, NULL);
    handles[M_PLAIN] = make_handle(PLAIN, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < M_COUNT; i++)
        bs_serving_release(handles[i]);
    return 0;
}

/* ---- the contract --------------------------------------------------------------------- */

static int same_value(double a, double b)
{
    if (isnan(a) && isnan(b))
        return 1;
    uint64_t x, y;
    memcpy(&x, &a, sizeof x);
    memcpy(&y, &b, sizeof y);
    return x == y;
}

static const char *shown(const char *body, size_t len)
{
    static char out[600];
    size_t o = 0;
    for (size_t i = 0; i < len && o + 8 < sizeof out; i++) {
        unsigned char c = (unsigned char)body[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, sizeof out - o, "\\x%02x", c);
    }
    out[o] = '\0';
    return out;
}

/* The general path's verdict on body: 0 and its row count and rows (malloc'd), or an error. */
static int general(bs_serving_t *s, const bs_model_handle_t *h, const char *body, size_t len,
                   double **rows_out, size_t *n_out)
{
    bs_err_t err;
    bs_err_clear(&err);
    *rows_out = NULL;
    *n_out = 0;
    cJSON *j = bs_json_parse(body, len, 64, &err);
    if (!j)
        return err.code ? err.code : BS_EPARSE;
    bs_arena_t a;
    bs_arena_init(&a, 4096);
    double *rows = NULL;
    size_t n = 0;
    int rc = bs_serving_parse_inputs(s, h, j, &a, &rows, &n, &err);
    if (!rc) {
        size_t nf = (size_t)h->sig.n_features;
        *rows_out = malloc((n * nf + 1) * sizeof(double));
        assert_non_null(*rows_out);
        memcpy(*rows_out, rows, n * nf * sizeof(double));
        *n_out = n;
    }
    bs_arena_deinit(&a);
    cJSON_Delete(j);
    return rc;
}

/* Runs both paths on body and fails the test if the contract is broken. Returns the fast
 * path's answer; *general_rc gets the general path's. */
static int contract(bs_serving_t *s, const bs_model_handle_t *h, const char *body, size_t len,
                    int *general_rc)
{
    int nf = h->sig.n_features;
    /* Exact-size copies, so ASan catches a read past the body or a write past the row. */
    char *copy = malloc(len ? len : 1);
    double *row = malloc((size_t)nf * sizeof(double));
    assert_true(copy && row);
    memcpy(copy, body, len);
    for (int i = 0; i < nf; i++)
        row[i] = -7.25e77; /* not a value any body here produces: a slot left unwritten shows */
    int fast = bs_serving_parse_fast(s, h, copy, len, row);
    assert_true(fast == 0 || fast == 1);
    double *rows;
    size_t n;
    int rc = general(s, h, copy, len, &rows, &n);
    if (general_rc)
        *general_rc = rc;
    if (fast) {
        if (rc)
            fail_msg("fast path accepted a body the general path rejects (%d): %s", rc,
                     shown(body, len));
        if (n != 1)
            fail_msg("fast path accepted a body of %zu rows: %s", n, shown(body, len));
        for (int i = 0; i < nf; i++)
            if (!same_value(row[i], rows[i]))
                fail_msg("feature %d: fast %.17g, general %.17g: %s", i, row[i], rows[i],
                         shown(body, len));
    }
    free(rows);
    free(row);
    free(copy);
    return fast;
}

/* ---- the table ------------------------------------------------------------------------ */

enum { G_OK, G_ERR, G_ANY }; /* the general path's verdict (reject_unknown on) */
enum { F_ANY = 2 };

typedef struct {
    int model;
    int fast; /* 1: the fast path must take it; 0: it must decline; F_ANY: either */
    int general;
    const char *body;
    size_t len; /* 0: strlen(body) */
} body_case_t;

/* clang-format off */
#define ACC(m, b) {m, 1, G_OK, b, 0}
#define DEC(m, g, b) {m, 0, g, b, 0}
#define DEC_LEN(m, g, lit) {m, 0, g, lit, sizeof(lit) - 1} /* bodies with NUL bytes */
/* x and r of an otherwise valid linear body */
#define NUMS(x, r) "{\"inputs\":{\"x\":" x ",\"n\":1,\"b\":true,\"r\":" r "}}"
/* the end of a linear body after x */
#define REST ",\"n\":3,\"b\":true,\"r\":0}}"

/* Upstream cJSON 1.7.15 reads at most 63 bytes of a number (a 64-byte buffer in
 * parse_number) and fails on the rest; Debian's 1.7.15-1+deb12u3 (CVE-2023-26819) reads
 * any length. The fast path may take or decline longer numbers, but only if cJSON agrees. */
#define NUM63 "1.0000000000000000000000000000000000000000000000000000000000001"
#define NUM64 "1.00000000000000000000000000000000000000000000000000000000000001"
#define NUM64_ZEROS "0.00000000000000000000000000000000000000000000000000000000000000"

static const body_case_t CASES[] = {
    /* valid: shapes and whitespace */
    ACC(M_LIN, "{\"inputs\":{\"x\":1.5" REST),
    ACC(M_LIN, "  {\n\t\"inputs\" :\r\n { \"x\" : 1.5 , \"n\" : 3 , \"b\" : true ,"
               " \"r\" : 0 } }  \n"),
    ACC(M_LIN, "{\"inputs\":{\"r\":0,\"b\":false,\"n\":3,\"x\":1.5}}"),
    ACC(M_LIN, "{\"inputs\":{\"x\":-0,\"n\":0,\"b\":false,\"d\":-10,\"flag\":false,\"r\":-0.0}}"),
    ACC(M_LIN, "{\"inputs\":{\"x\":0,\"n\":100,\"b\":1,\"d\":10,\"flag\":0,\"r\":1}}"),
    ACC(M_LIN, "{\"inputs\":{\"x\":0,\"n\":-0,\"b\":-0,\"d\":1e1,\"flag\":1.0,\"r\":0e0}}"),
    ACC(M_LIN, "{\"inputs\":{\"x\":0,\"n\":5.0,\"b\":0e5,\"d\":-1E+1,\"flag\":true,\"r\":1}}"),
    ACC(M_LIN, "{\"inputs\":{\"x\":0,\"n\":1.5e1,\"b\":0.0,\"r\":1}}"),
    ACC(M_LIN, "{\"inputs\":{\"x\":0,\"n\":100.000,\"b\":1E0,\"r\":1}}"),
    /* valid: numbers */
    ACC(M_LIN, NUMS("1e5", "1E+5")),
    ACC(M_LIN, NUMS("1.5e-7", "-2.5E-3")),
    ACC(M_LIN, NUMS("1e308", "-1.7976931348623157e308")),
    ACC(M_LIN, NUMS("2.2250738585072014e-308", "4.9e-324")),
    ACC(M_LIN, NUMS("1e-400", "-1e-400")),
    ACC(M_LIN, NUMS("2.4703282292062328e-324", "2.4703282292062327e-324")),
    ACC(M_LIN, NUMS("0.30000000000000004", "0.1")),
    ACC(M_LIN, NUMS("9007199254740993", "9007199254740992")),
    ACC(M_LIN, NUMS("123456789012345678", "12345678901234567890123")),
    ACC(M_LIN, NUMS("1.0000000000000002", "0.99999999999999989")),
    ACC(M_LIN, NUMS("1e22", "1e23")),
    ACC(M_LIN, NUMS("123456789012345e-22", "1234567890123456e-23")),
    ACC(M_LIN, NUMS("8.98846567431158e307", "-1e-7")),
    ACC(M_LIN, NUMS("0.000000000000000000000000000000000001", "1")),
    ACC(M_LIN, NUMS(NUM63, "1")),
    /* valid: defaults and missing values */
    ACC(M_TREES, "{\"inputs\":{}}"),
    ACC(M_TREES, "{\"inputs\" : { } }"),
    ACC(M_TREES, "{\"inputs\":{\"f0\":1}}"),
    ACC(M_TREES, "{\"inputs\":{\"f1\":-3.25,\"" GROSSE "\":true}}"),
    ACC(M_TREES, "{\"inputs\":{\"" GROSSE "\":0,\"f0\":0.5,\"f1\":2}}"),
    ACC(M_CATDEF, "{\"inputs\":{\"amount\":3}}"),
    ACC(M_CATDEF, "{\"inputs\":{\"amount\":-0.0}}"),

    /* declined: the general path takes these */
    DEC(M_LIN, G_OK, "{\"inputs\":{\"\\u0078\":1.5" REST),
    DEC(M_LIN, G_OK, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0,\"d\":null}}"),
    DEC(M_LIN, G_OK, "{\"in\\u0070uts\":{\"x\":1.5" REST),
    DEC(M_LIN, G_OK, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0},\"id\":\"abc\"}"),
    DEC(M_LIN, G_OK, "{\"id\":1,\"inputs\":{\"x\":1.5" REST),
    DEC(M_LIN, G_OK, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0},\"parameters\":{}}"),
    DEC(M_LIN, G_OK, "{\"inputs\":[{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0}]}"),
    DEC(M_LIN, G_OK, "{\"instances\":[[1.5,3,true,2.5,true,0]]}"),
    DEC(M_LIN, G_OK, "{\"instances\":[{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0}]}"),
    DEC_LEN(M_LIN, G_OK, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0}}\0"),
    DEC_LEN(M_LIN, G_OK, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0}}\0\0 "),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0}}\f"),
    DEC(M_LIN, G_OK, "\v{\"inputs\":{\"x\":1.5" REST),
    DEC(M_CAT, G_OK, "{\"inputs\":{\"amount\":1,\"city\":\"paris\"}}"),
    DEC(M_CAT, G_OK, "{\"inputs\":{\"amount\":1,\"city\":\"lima\"}}"),
    DEC(M_CATDEF, G_OK, "{\"inputs\":{\"amount\":1,\"city\":\"rome\"}}"),
    DEC(M_CATDEF, G_OK, "{\"inputs\":{\"amount\":1,\"city\":null}}"),
    DEC(M_TREES, G_OK, "{\"inputs\":{\"f0\":null}}"),
    DEC(M_TREES, G_OK, "{\"inputs\":{\"f0\":1,\"" GROSSE "\":null}}"),

    /* declined: the general path rejects these (or, marked G_ANY, may take them) */
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0,\"zz\":1}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0,\"X\":1}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0,\"\":1}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"x\":1.5" REST),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0,\"r\":0}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\\n\":1.5" REST),
    DEC(M_LIN, G_ANY, "{\"inputs\":{\"x\x01\":1.5" REST),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":null" REST),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":null}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":\"1.5\"" REST),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":\"true\",\"r\":0}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":true" REST),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":{\"v\":1}" REST),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":[1.5]" REST),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true}}"), /* r: no default */
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"n\":3,\"b\":true,\"r\":0}}"),  /* x: required */
    DEC(M_LIN, G_ERR, "{\"inputs\":{}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0}}x"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0}}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0}},"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0}} {}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0},}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0,}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5," REST),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\" 1.5" REST),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5 \"n\":3,\"b\":true,\"r\":0}}"),
    DEC(M_LIN, G_ANY, "{\"inputs\":{\"x\":01" REST),
    DEC(M_LIN, G_ANY, "{\"inputs\":{\"x\":-01" REST),
    DEC(M_LIN, G_ANY, "{\"inputs\":{\"x\":1." REST),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":.5" REST),
    DEC(M_LIN, G_ANY, "{\"inputs\":{\"x\":-.5" REST),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":+1" REST),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":-" REST),
    DEC(M_LIN, G_ANY, "{\"inputs\":{\"x\":1e" REST),
    DEC(M_LIN, G_ANY, "{\"inputs\":{\"x\":1e+" REST),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":0x10" REST),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5.5" REST),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1-2" REST),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":NaN" REST),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":Infinity" REST),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1e999" REST),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":-1e999" REST),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.7976931348623159e308" REST),
    {M_LIN, F_ANY, G_ANY, "{\"inputs\":{\"x\":" NUM64 REST, 0},
    {M_LIN, F_ANY, G_ANY, "{\"inputs\":{\"x\":" NUM64_ZEROS REST, 0},
    {M_LIN, F_ANY, G_ANY, "{\"inputs\":{\"x\":-" NUM63 "0" REST, 0},
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":101,\"b\":true,\"r\":0}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":-1,\"b\":true,\"r\":0}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":100.00000000000001,\"b\":true,\"r\":0}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"d\":10.5,\"r\":0}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"d\":-1e300,\"r\":0}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":1.5,\"b\":true,\"r\":0}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3.0000000000000004,\"b\":true,\"r\":0}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":2,\"r\":0}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":0.5,\"r\":0}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":True,\"r\":0}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":truex,\"r\":0}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":tru,\"r\":0}}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0},\"foo\":1}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0},\"instances\":[]}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0},\"inputs\":{}}"),
    DEC(M_LIN, G_ERR, "{\"Inputs\":{\"x\":1.5" REST),
    DEC(M_LIN, G_ERR, "{\"instances\":{\"x\":1.5" REST),
    DEC(M_LIN, G_ERR, "{\"instances\":[]}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":[]}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":1}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":null}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":\"x\"}"),
    DEC(M_LIN, G_ERR, "{}"),
    DEC(M_LIN, G_ERR, "[]"),
    DEC(M_LIN, G_ERR, "null"),
    DEC(M_LIN, G_ERR, "1"),
    DEC(M_LIN, G_ERR, ""),
    DEC(M_LIN, G_ERR, "   "),
    DEC(M_LIN, G_ERR, "{"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0}"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":0"),
    DEC(M_LIN, G_ERR, "{\"inputs\":{\"x\":1.5,\"n\":3,\"b\":true,\"r\":"),
    DEC(M_CAT, G_ERR, "{\"inputs\":{\"amount\":1}}"), /* city: required */
    DEC(M_CAT, G_OK, "{\"inputs\":{\"amount\":1,\"city\":1}}"), /* unknown: ignored */
    DEC(M_CAT, G_ERR, "{\"inputs\":{\"amount\":1,\"city\":true}}"),
    DEC(M_CAT, G_ERR, "{\"inputs\":{\"amount\":1,\"city\":null}}"),
    DEC(M_TREES, G_ERR, "{\"inputs\":{\"f0\":1,\"" GROSSE "\":3}}"),
    DEC(M_TREES, G_ERR, "{\"inputs\":{\"f0\":1,\"gr\xc3\xb6\xc3\x9f\":true}}"),
    DEC(M_TREES, G_ERR, "{\"inputs\":{\"f0\":1,\"f0\":null}}"),
    /* strings: no \u0000 (cJSON would cut "f0\u0000" to "f0"), no unpaired surrogates,
     * UTF-8 only, no raw control characters */
    DEC(M_TREES, G_ERR, "{\"inputs\":{\"f0\\u0000\":1}}"),
    DEC(M_TREES, G_ERR, "{\"inputs\":{\"f0\":1,\"f1\\u0000x\":2}}"),
    DEC(M_CAT, G_ERR, "{\"inputs\":{\"amount\":1,\"city\":\"paris\\u0000\"}}"),
    DEC(M_CAT, G_ERR, "{\"inputs\":{\"amount\":1,\"city\":\"\\ud800\"}}"),
    DEC(M_CAT, G_ERR, "{\"inputs\":{\"amount\":1,\"city\":\"par\xffis\"}}"),
    DEC(M_CATDEF, G_ERR, "{\"inputs\":{\"amount\":1,\"\xc3\":1}}"),
    DEC(M_TREES, G_ERR, "{\"inputs\":{\"f0\":1,\"gr\xc3\":true}}"),
    DEC(M_RAW, G_ERR, "{\"inputs\":{\"f\xff\":1,\"g\":2}}"),
    DEC(M_RAW, G_ERR, "{\"inputs\":{\"g\":2,\"f\xff\":1}}"),
    /* names spelled with escapes: the general path's; their raw bytes are not JSON */
    DEC(M_ESC, G_OK, "{\"inputs\":{\"a\\\"b\":1,\"c\\\\d\":2}}"),
    DEC(M_ESC, G_ERR, "{\"inputs\":{\"a\"b\":1,\"c\\\\d\":2}}"),
    DEC(M_ESC, G_ERR, "{\"inputs\":{\"a\\\"b\":1,\"c\\d\":2}}"),
    DEC(M_ESC, G_ERR, "{\"inputs\":{\"a\"b\":1}}"),
    DEC(M_ESC, G_ERR, "{\"inputs\":{\"a\"b\":1,\"c\\d\":2}}"),
};

/* clang-format on */

#define N_CASES (sizeof CASES / sizeof CASES[0])

static size_t case_len(const body_case_t *c)
{
    return c->len ? c->len : strlen(c->body);
}

static void test_table(void **state)
{
    (void)state;
    int wrong = 0;
    for (size_t k = 0; k < N_CASES; k++) {
        const body_case_t *c = &CASES[k];
        const bs_model_handle_t *h = handles[c->model];
        size_t len = case_len(c);
        int grc;
        int fast = contract(&strict, h, c->body, len, &grc);
        if (c->fast != F_ANY && fast != c->fast) {
            print_error("case %zu: fast path %s: %s\n", k, fast ? "accepted" : "declined",
                        shown(c->body, len));
            wrong++;
        }
        if ((c->general == G_OK && grc != 0) || (c->general == G_ERR && grc == 0)) {
            print_error("case %zu: general path %s: %s\n", k, grc ? "rejects" : "accepts",
                        shown(c->body, len));
            wrong++;
        }
        /* Unknown features ignored: the fast path still declines, the contract holds. */
        int lenient_fast = contract(&lenient, h, c->body, len, NULL);
        if (c->fast != F_ANY)
            assert_int_equal(lenient_fast, c->fast);
    }
    assert_int_equal(wrong, 0);
}

/* The per-feature bits bs__serving_handle_new precomputes for the fast path. */
static void test_fast_bits(void **state)
{
    (void)state;
    const unsigned L = BS__FAST_NAME_LITERAL, P = BS__FAST_PLAIN_NUMBER;
    const bs_model_handle_t *lin = handles[M_LIN], *tr = handles[M_TREES];
    /* x float; n int 0..100; b bool; d float -10..10; flag bool; r float */
    assert_int_equal(lin->fast[0], L | P);
    assert_int_equal(lin->fast[1], L);
    assert_int_equal(lin->fast[2], L);
    assert_int_equal(lin->fast[3], L);
    assert_int_equal(lin->fast[5], L | P);
    assert_int_equal(tr->fast[2], L); /* UTF-8 name, bool */
    assert_int_equal(handles[M_CAT]->fast[1], L); /* category */
    assert_int_equal(handles[M_RAW]->fast[0], P); /* "f\xff": not UTF-8 */
    assert_int_equal(handles[M_RAW]->fast[1], L | P);
    assert_int_equal(handles[M_ESC]->fast[0], P); /* a"b */
    assert_int_equal(handles[M_ESC]->fast[1], P); /* c\d */
}

/* Values the contract alone would not pin down (both paths could share a mistake). */
static void test_values(void **state)
{
    (void)state;
    double row[6];
    const char *b1 = "{\"inputs\":{\"x\":-0,\"n\":7,\"b\":true,\"r\":1e-400}}";
    assert_int_equal(bs_serving_parse_fast(&strict, handles[M_LIN], b1, strlen(b1), row), 1);
    assert_true(row[0] == 0 && signbit(row[0]));
    assert_true(row[1] == 7 && row[2] == 1 && row[3] == 2.5 && row[4] == 1);
    assert_true(row[5] == 0 && !signbit(row[5]));
    const char *b2 = "{\"inputs\":{\"x\":0.1,\"n\":0,\"b\":false,\"flag\":false,\"r\":4.9e-324}}";
    assert_int_equal(bs_serving_parse_fast(&strict, handles[M_LIN], b2, strlen(b2), row), 1);
    assert_true(row[0] == 0.1 && row[2] == 0 && row[4] == 0 && row[5] == 0x1p-1074);
    const char *b3 = "{\"inputs\":{\"f1\":2}}";
    assert_int_equal(bs_serving_parse_fast(&strict, handles[M_TREES], b3, strlen(b3), row), 1);
    assert_true(isnan(row[0]) && row[1] == 2 && isnan(row[2]));
    const char *b4 = "{\"inputs\":{\"amount\":3}}";
    assert_int_equal(bs_serving_parse_fast(&strict, handles[M_CATDEF], b4, strlen(b4), row), 1);
    assert_true(row[0] == 3 && row[1] == 1); /* "paris" is category 1 */
    /* No body at all. */
    assert_int_equal(bs_serving_parse_fast(&strict, handles[M_LIN], NULL, 0, row), 0);
}

/* bs_serving_parse_fast_ex's text: the inputs object's bytes when they equal the row (every
 * feature a plain number, on one line), NULL otherwise; the row is parsed either way. */
static void expect_text(int model, const char *body, const char *want)
{
    double row[8];
    const char *text = "unset";
    size_t len = 99;
    assert_int_equal(
        bs_serving_parse_fast_ex(&strict, handles[model], body, strlen(body), row, &text, &len), 1);
    if (!want) {
        assert_null(text);
        assert_int_equal(len, 0);
        return;
    }
    assert_non_null(text);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(text, want, len);
    /* The text read back is the row: a parser of its own (cJSON) agrees on every value. */
    cJSON *j = cJSON_ParseWithLength(text, len);
    assert_non_null(j);
    const bs_ml_schema_t *sc = bs_model_handle_schema(handles[model]);
    assert_int_equal(cJSON_GetArraySize(j), sc->n_features);
    for (int i = 0; i < sc->n_features; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, sc->features[i].name);
        assert_true(cJSON_IsNumber(v));
        assert_true(v->valuedouble == row[i]);
    }
    cJSON_Delete(j);
}

static void test_inputs_text(void **state)
{
    (void)state;
    expect_text(M_PLAIN, "{\"inputs\":{\"a\":0.10,\"b\":-2E2}}", "{\"a\":0.10,\"b\":-2E2}");
    expect_text(M_PLAIN, "{\"inputs\": {\t\"b\" : 1 , \"a\":3.5e-1 } }",
                "{\t\"b\" : 1 , \"a\":3.5e-1 }"); /* the client's order, tabs are fine */
    expect_text(M_PLAIN, "{\"inputs\":{\"a\":1,\n\"b\":2}}", NULL); /* a record is one line */
    expect_text(M_PLAIN, "{\"inputs\":{\"a\":1,\r\"b\":2}}", NULL);
    expect_text(M_TREES, "{\"inputs\":{\"f0\":1,\"f1\":2}}", NULL); /* a feature omitted */
    expect_text(M_TREES, "{\"inputs\":{\"f0\":1,\"f1\":2,\"" GROSSE "\":true}}", NULL); /* bool */
    expect_text(M_LIN, "{\"inputs\":{\"x\":1,\"n\":2,\"b\":1,\"d\":0,\"flag\":0,\"r\":1}}",
                NULL); /* an int and bools: not plain numbers */
    expect_text(M_CATDEF, "{\"inputs\":{\"amount\":3}}", NULL); /* a default filled in */
}

/* Every strict prefix of every table body: truncated requests. */
static void test_prefixes(void **state)
{
    (void)state;
    for (size_t k = 0; k < N_CASES; k++) {
        const body_case_t *c = &CASES[k];
        size_t len = case_len(c);
        for (size_t n = 0; n < len; n++) {
            int fast = contract(&strict, handles[c->model], c->body, n, NULL);
            /* A prefix of an accepted body is complete only if all that was cut is whitespace. */
            if (fast && c->fast == 1) {
                for (size_t i = n; i < len; i++)
                    if (c->body[i] != ' ' && c->body[i] != '\t' && c->body[i] != '\r' &&
                        c->body[i] != '\n')
                        fail_msg("fast path accepted a truncated body: %s", shown(c->body, n));
            }
        }
    }
}

/* One-byte substitutions, deletions and insertions in every accepted body. */
static void test_edits(void **state)
{
    (void)state;
    static const char bytes[] = " \t\n\"\\{}[]:,-+.eE019xnt\x00\x01\x7f\xc3";
    char buf[512];
    for (size_t k = 0; k < N_CASES; k++) {
        const body_case_t *c = &CASES[k];
        if (c->fast != 1)
            continue;
        const bs_model_handle_t *h = handles[c->model];
        size_t len = case_len(c);
        assert_true(len + 1 < sizeof buf);
        for (size_t i = 0; i <= len; i++) {
            for (size_t b = 0; b < sizeof bytes - 1; b++) {
                if (i < len) { /* substitute */
                    memcpy(buf, c->body, len);
                    buf[i] = bytes[b];
                    contract(&strict, h, buf, len, NULL);
                }
                memcpy(buf, c->body, i); /* insert */
                buf[i] = bytes[b];
                memcpy(buf + i + 1, c->body + i, len - i);
                contract(&strict, h, buf, len + 1, NULL);
            }
            if (i < len) { /* delete */
                memcpy(buf, c->body, i);
                memcpy(buf + i, c->body + i + 1, len - i - 1);
                contract(&strict, h, buf, len - 1, NULL);
            }
        }
    }
}

/* ---- bs_parse_json_number against strtod ---------------------------------------------- */

#if defined(__SANITIZE_ADDRESS__)
#define RANDOM_NUMBERS 300000 /* sanitizer builds run several times slower */
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RANDOM_NUMBERS 300000
#endif
#endif
#ifndef RANDOM_NUMBERS
#define RANDOM_NUMBERS 2000000
#endif

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rnd(void)
{
    /* xorshift64*; a fixed seed, so a failure reproduces */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717u;
}

static unsigned below(unsigned n)
{
    return (unsigned)(rnd() % n);
}

/* s (len bytes, a complete JSON number) must parse exactly as strtod parses it. The
 * number is copied to an exact-size buffer (ASan sees over-reads) and then followed by
 * more digits that the length excludes. */
static void number_agrees(const char *s, size_t len)
{
    char *exact = malloc(len ? len : 1);
    assert_non_null(exact);
    memcpy(exact, s, len);
    double v = -1234.5;
    size_t used = bs_parse_json_number(exact, len, &v);
    char *z = malloc(len + 1);
    assert_non_null(z);
    memcpy(z, s, len);
    z[len] = '\0';
    char *end;
    double want = strtod(z, &end);
    if (used != len || (size_t)(end - z) != len || !same_value(v, want))
        fail_msg("'%s': consumed %zu of %zu, got %.17g, strtod %.17g", z, used, len, v, want);
    free(z);
    free(exact);
}

static void number_agrees_str(const char *s)
{
    number_agrees(s, strlen(s));
    char buf[1100];
    size_t n = strlen(s);
    if (n + 4 < sizeof buf) {
        memcpy(buf, s, n);
        memcpy(buf + n, "123", 4); /* beyond n: must not be read as part of the number */
        double v;
        assert_int_equal(bs_parse_json_number(buf, n, &v), n);
        assert_true(same_value(v, strtod(s, NULL)));
    }
}

static void test_number_edges(void **state)
{
    (void)state;
    static const char *const edges[] = {
        "0",
        "-0",
        "0.0",
        "-0.0",
        "0e0",
        "-0E-0",
        "0e999999",
        "-0e-999999",
        "0.000e+5",
        "1",
        "-1",
        "9",
        "10",
        "1e0",
        "1E1",
        "1e+1",
        "1e-1",
        "0.5",
        "-2.5e-3",
        "123456789012345",
        "1234567890123456",
        "12345678901234567",
        "123456789012345678",
        "1234567890123456789",
        "12345678901234567890",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999999",
        "9007199254740992",
        "9007199254740993",
        "9007199254740994",
        "9007199254740995",
        "123456789012345e22",
        "123456789012345e-22",
        "123456789012345e23",
        "1e22",
        "1e23",
        "1e-22",
        "1e-23",
        "999999999999999e22",
        "0.000000000000000000001",
        "0.1",
        "0.2",
        "0.3",
        "0.30000000000000004",
        "1.0000000000000002",
        "0.99999999999999989",
        "2.2250738585072011e-308",
        "2.2250738585072014e-308",
        "2.2250738585072012e-308",
        "4.9406564584124654e-324",
        "4.9e-324",
        "5e-324",
        "2.4703282292062327e-324",
        "2.4703282292062328e-324",
        "1e-324",
        "1e-400",
        "1.7976931348623157e308",
        "1.7976931348623158e308",
        "1.7976931348623159e308",
        "1e308",
        "1e309",
        "-1e999",
        "1e999999",
        "1e0000000000000000000000000000001",
        "8.98846567431158e307",
        "3.141592653589793238462643383279502884197169399375105820974944",
        "7.2057594037927933e16",
        "9223372036854775807",
        "9223372036854775808",
        "2.0000000000000000000000000000000000000000000000000000000000000000001",
        "1.00000000000000011102230246251565404236316680908203125",
        "1.00000000000000011102230246251565404236316680908203124",
        "1.00000000000000011102230246251565404236316680908203126",
        "6.6336520000000000000000000000000000000000000000000000000001e-1",
    };
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
        number_agrees_str(edges[i]);

    /* Long ones: many zeros around a digit, and long mantissas (the strtod fallback's heap copy).
     */
    char buf[1024];
    for (int z = 0; z < 900; z += 37) {
        int n = snprintf(buf, sizeof buf, "0.");
        for (int i = 0; i < z; i++)
            buf[n++] = '0';
        snprintf(buf + n, sizeof buf - (size_t)n, "17e%d", z / 3);
        number_agrees_str(buf);
        n = snprintf(buf, sizeof buf, "-1");
        for (int i = 0; i < z; i++)
            buf[n++] = '0';
        snprintf(buf + n, sizeof buf - (size_t)n, ".5e-%d", z);
        number_agrees_str(buf);
        n = snprintf(buf, sizeof buf, "4");
        for (int i = 0; i < z; i++)
            buf[n++] = (char)('0' + (i * 7 + z) % 10);
        buf[n] = '\0';
        number_agrees_str(buf);
    }

    /* Not numbers, or a number followed by a dangling part that must not be consumed. */
    static const struct {
        const char *s;
        size_t max_used;
    } bad[] = {
        {"", 0},     {"-", 0},   {"+1", 0},  {".5", 0},  {"-.5", 0},  {"a", 0},
        {"-a", 0},   {"- 1", 0}, {"e5", 0},  {"01", 1},  {"-01", 2},  {"1.", 1},
        {"1.e5", 1}, {"1e", 1},  {"1e+", 1}, {"1E-", 1}, {"0x10", 1}, {"1..2", 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        double v;
        size_t used = bs_parse_json_number(bad[i].s, strlen(bad[i].s), &v);
        if (used > bad[i].max_used)
            fail_msg("'%s': consumed %zu bytes, at most %zu expected", bad[i].s, used,
                     bad[i].max_used);
        if (used) {
            char prefix[16];
            snprintf(prefix, sizeof prefix, "%.*s", (int)used, bad[i].s);
            assert_true(same_value(v, strtod(prefix, NULL)));
        }
    }
    /* Reads no byte past n. */
    double v;
    assert_int_equal(bs_parse_json_number("12345", 3, &v), 3);
    assert_true(v == 123);
    assert_int_equal(bs_parse_json_number("-5", 1, &v), 0);
    assert_int_equal(bs_parse_json_number("1.5", 2, &v), 0);
}

/* A random number in JSON syntax; digits and exponents chosen to hit both the Clinger
 * path and the strtod fallback and the boundaries between them. */
static size_t random_syntax(char *buf)
{
    size_t n = 0;
    if (below(2))
        buf[n++] = '-';
    unsigned int_digits = below(4) == 0 ? 1 : 1 + below(below(2) ? 17 : 30);
    if (below(5) == 0) {
        buf[n++] = '0';
    } else {
        buf[n++] = (char)('1' + below(9));
        for (unsigned i = 1; i < int_digits; i++)
            buf[n++] = (char)('0' + (below(3) == 0 ? 0 : below(10)));
    }
    if (below(2)) {
        buf[n++] = '.';
        unsigned frac = 1 + below(below(2) ? 17 : 40);
        for (unsigned i = 0; i < frac; i++)
            buf[n++] = (char)('0' + (below(3) == 0 ? 0 : below(10)));
    }
    if (below(2)) {
        buf[n++] = below(2) ? 'e' : 'E';
        unsigned r = below(3);
        if (r == 1)
            buf[n++] = '+';
        else if (r == 2)
            buf[n++] = '-';
        unsigned e = below(3) ? below(30) : below(350);
        n += (size_t)sprintf(buf + n, "%u", e);
    }
    buf[n] = '\0';
    return n;
}

static void test_number_random(void **state)
{
    (void)state;
    char buf[128];
    for (long i = 0; i < RANDOM_NUMBERS; i++) {
        unsigned kind = i % 2 ? 0 : 1 + (unsigned)(i / 2 % 3); /* half generated, half printed */
        size_t n;
        if (kind == 0) {
            n = random_syntax(buf);
        } else {
            /* A double (random bits, finite), printed shortest-ish, exactly, or near a
             * halfway point between it and its neighbour. */
            double d;
            uint64_t bits = rnd();
            memcpy(&d, &bits, sizeof d);
            if (!isfinite(d))
                continue;
            if (kind == 1) {
                n = (size_t)snprintf(buf, sizeof buf, "%.*g", 1 + (int)below(17), d);
            } else if (kind == 2) {
                n = (size_t)snprintf(buf, sizeof buf, "%.17e", d);
            } else {
                long double mid = ((long double)d + (long double)nextafter(d, INFINITY)) / 2;
                n = (size_t)snprintf(buf, sizeof buf, "%.*Le", 16 + (int)below(25), mid);
            }
            if (strchr(buf, 'n') || strchr(buf, 'i')) /* inf, nan */
                continue;
        }
        /* buf is NUL-terminated at n: strtod reads it in place (no copies, to keep it quick). */
        double v = -1234.5, want;
        char *end;
        size_t used = bs_parse_json_number(buf, n, &v);
        want = strtod(buf, &end);
        if (used != n || (size_t)(end - buf) != n || !same_value(v, want))
            fail_msg("'%s': consumed %zu of %zu, got %.17g, strtod %.17g", buf, used, n, v, want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),        cmocka_unit_test(test_fast_bits),
        cmocka_unit_test(test_values),       cmocka_unit_test(test_inputs_text),
        cmocka_unit_test(test_prefixes),     cmocka_unit_test(test_edits),
        cmocka_unit_test(test_number_edges), cmocka_unit_test(test_number_random),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
