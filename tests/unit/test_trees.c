/*
 * Unit tests of the tree-ensemble runtime (src/ml/trees.c): hand-built
 * ensembles whose answers are worked out by hand in the comments, both split
 * rules, NaN default directions, both compiled layouts (heap and explicit),
 * float32 vs double arithmetic, the transforms, and validation rejections.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ml/ml_int.h"

/* An ensemble with room for n_nodes nodes and n_trees trees, to be filled in. */
static bs__tree_ensemble_t *new_ensemble(int n_features, int n_trees, int n_nodes, int n_groups)
{
    bs__tree_ensemble_t *e = calloc(1, sizeof *e);
    e->n_features = n_features;
    e->n_trees = n_trees;
    e->n_groups = n_groups;
    e->leaf_width = 1;
    e->n_outputs = n_groups;
    e->split_rule = BS__TREE_LT;
    e->transform = BS__TREE_IDENTITY;
    e->scale = 1.0;
    e->base = calloc((size_t)n_groups, sizeof *e->base);
    e->tree_root = calloc((size_t)n_trees + 1, sizeof *e->tree_root);
    e->tree_group = calloc((size_t)n_trees + 1, sizeof *e->tree_group);
    e->nodes = calloc((size_t)n_nodes + 1, sizeof *e->nodes);
    e->n_nodes = n_nodes;
    e->leaf_values = calloc((size_t)n_nodes + 1, sizeof *e->leaf_values);
    e->n_leaf_values = n_nodes;
    return e;
}

static void split(bs__tree_ensemble_t *e, int i, int feature, double threshold, int left, int right,
                  int default_left)
{
    e->nodes[i] = (bs__tree_node_t){.feature = feature, .left = left, .right = right,
                                    .threshold = threshold, .default_left = (uint8_t)default_left};
}

static void leaf(bs__tree_ensemble_t *e, int i, double value)
{
    e->nodes[i] = (bs__tree_node_t){.feature = -1, .left = -1, .right = -1,
                                    .value_offset = (uint32_t)i};
    e->leaf_values[i] = value;
}

/*
 * Tree 0 (nodes 0..4):           Tree 1 (nodes 5..7):
 *   0: x0 < 0.5 (NaN left)         5: x1 < 2 (NaN right)
 *    1: x1 < 1 (NaN right)          6: +10   7: +20
 *      3: 1    4: 2
 *    2: 3
 */
static bs__tree_ensemble_t *two_trees(void)
{
    bs__tree_ensemble_t *e = new_ensemble(2, 2, 8, 1);
    e->tree_root[1] = 5;
    split(e, 0, 0, 0.5, 1, 2, 1);
    split(e, 1, 1, 1.0, 3, 4, 0);
    leaf(e, 2, 3.0);
    leaf(e, 3, 1.0);
    leaf(e, 4, 2.0);
    split(e, 5, 1, 2.0, 6, 7, 0);
    leaf(e, 6, 10.0);
    leaf(e, 7, 20.0);
    e->base[0] = 0.25;
    return e;
}

static bs_ml_model_t *wrap(bs__tree_ensemble_t *e)
{
    bs_ml_schema_t schema = {.n_features = e->n_features, .n_outputs = e->n_outputs};
    bs_err_t err = {0};
    bs_ml_model_t *m = bs__ml_model_new(&bs__tree_vtable, e, &schema, &err);
    assert_non_null(m);
    return m;
}

static void check_two_trees(bs_ml_model_t *m)
{
    const double rows[][2] = {
        {0.0, 0.0},      /* t0: 0<.5 L, 0<1 L -> 1; t1: 0<2 L -> 10 */
        {0.0, 1.0},      /* t0: L, 1<1 no -> R 2;  t1: 1<2 -> 10 */
        {0.5, 5.0},      /* t0: .5<.5 no -> 3;     t1: 5<2 no -> 20 */
        {NAN, 0.0},      /* t0: NaN default left, x1 0 -> 1; t1: 10 */
        {NAN, NAN},      /* t0: left, then NaN default right -> 2; t1: NaN right -> 20 */
        {-INFINITY, 2.0} /* t0: L, 2<1 no -> 2; t1: 2<2 no -> 20 */
    };
    const double want[] = {11.25, 12.25, 23.25, 11.25, 22.25, 22.25};
    double out[6];
    bs_err_t err = {0};
    assert_int_equal(bs_ml_predict(m, &rows[0][0], 6, out, &err), 0);
    for (int i = 0; i < 6; i++)
        assert_true(out[i] == want[i]);
    /* one row at a time takes the single-row path */
    for (int i = 0; i < 6; i++) {
        assert_int_equal(bs_ml_predict(m, rows[i], 1, out, &err), 0);
        assert_true(out[0] == want[i]);
    }
}

static void test_hand_built(void **state)
{
    (void)state;
    bs_ml_model_t *m = wrap(two_trees());
    assert_string_equal(bs_ml_model_kind(m), "trees");
    assert_int_equal(bs_ml_model_handles_missing(m), 1);
    assert_int_equal(bs_ml_model_prefers_batching(m), 0);
    assert_true(bs_ml_model_memory(m) > 0);
    check_two_trees(m);
    bs_ml_model_free(m);
}

/* Many rows (several blocks, grouped and leftover rows) agree with one-at-a-time. */
/* 203 rows run on the calling thread; 2203 rows are split over the other cores
 * (PARALLEL_MIN_ROWS): either way each row gets the bits of a one-row call. */
static void test_batch_matches_single(void **state)
{
    (void)state;
    bs_ml_model_t *m = wrap(two_trees());
    for (int big = 0; big < 2; big++) {
        const int N = big ? 2203 : 203;
        double *rows = malloc(sizeof(double) * 2 * N), *out = malloc(sizeof(double) * N), one;
        bs_err_t err = {0};
        for (int i = 0; i < N * 2; i++)
            rows[i] = (i % 7 == 0) ? NAN : (double)((i * 37) % 11) / 4.0 - 0.5;
        assert_int_equal(bs_ml_predict(m, rows, N, out, &err), 0);
        for (int i = 0; i < N; i++) {
            assert_int_equal(bs_ml_predict(m, rows + 2 * i, 1, &one, &err), 0);
            assert_true(one == out[i]);
        }
        free(rows);
        free(out);
    }
    bs_ml_model_free(m);
}

/*
 * A lopsided tree deeper than HEAP_MAX_DEPTH forces the explicit layout:
 * a chain x0 < k ? leaf k : next, for k = 1..20; the last right child is 100.
 */
static void test_explicit_layout(void **state)
{
    (void)state;
    const int K = 20;
    bs__tree_ensemble_t *e = new_ensemble(1, 1, 2 * K + 1, 1);
    for (int k = 0; k < K; k++) {
        split(e, 2 * k, 0, k + 1.0, 2 * k + 1, 2 * k + 2, k % 2);
        leaf(e, 2 * k + 1, k + 1.0);
    }
    leaf(e, 2 * K, 100.0);
    bs_ml_model_t *m = wrap(e);
    const double rows[] = {0.0, 0.999, 1.0, 7.5, 19.99, 20.0, 1e9, NAN};
    /* NaN: node 0 has default_left 0 -> right; node 1 (k=1) default_left 1 -> leaf 2 */
    const double want[] = {1, 1, 2, 8, 20, 100, 100, 2};
    double out[8];
    bs_err_t err = {0};
    assert_int_equal(bs_ml_predict(m, rows, 8, out, &err), 0);
    for (int i = 0; i < 8; i++)
        assert_true(out[i] == want[i]);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(bs_ml_predict(m, &rows[i], 1, out, &err), 0);
        assert_true(out[0] == want[i]);
    }
    bs_ml_model_free(m);
}

/* <= with a double threshold vs < with a float one, at the float boundary. */
static void test_split_rules(void **state)
{
    (void)state;
    const double t = 0.1; /* not a float: (float)0.1 > 0.1 */
    const float above = (float)t, below = nextafterf(above, 0.0f);
    for (int rule = 0; rule < 2; rule++) {
        bs__tree_ensemble_t *e = new_ensemble(1, 1, 3, 1);
        e->split_rule = rule ? BS__TREE_LE : BS__TREE_LT;
        split(e, 0, 0, t, 1, 2, 0);
        leaf(e, 1, -1.0);
        leaf(e, 2, 1.0);
        bs_ml_model_t *m = wrap(e);
        double rows[] = {below, above, t}, out[3];
        bs_err_t err = {0};
        assert_int_equal(bs_ml_predict(m, rows, 3, out, &err), 0);
        /* LT: float(x) < 0.1: below yes, above no, 0.1 -> float above: no
         * LE: float(x) <= 0.1: below yes, above (> 0.1) no, 0.1 -> above: no */
        assert_true(out[0] == -1.0);
        assert_true(out[1] == 1.0);
        assert_true(out[2] == 1.0);
        bs_ml_model_free(m);
    }
    /* LE at an exact float threshold: equal goes left */
    bs__tree_ensemble_t *e = new_ensemble(1, 1, 3, 1);
    e->split_rule = BS__TREE_LE;
    split(e, 0, 0, 0.5, 1, 2, 0);
    leaf(e, 1, -1.0);
    leaf(e, 2, 1.0);
    bs_ml_model_t *m = wrap(e);
    double rows[] = {0.5, 0.5000001}, out[2];
    assert_int_equal(bs_ml_predict(m, rows, 2, out, NULL), 0);
    assert_true(out[0] == -1.0 && out[1] == 1.0);
    bs_ml_model_free(m);
}

/* Transforms: sigmoid (2 columns), softmax over groups, exp, float32 sums. */
static void test_transforms(void **state)
{
    (void)state;
    bs_err_t err = {0};
    double row[2] = {0.0, 0.0}, out[3];

    bs__tree_ensemble_t *e = two_trees(); /* leaves 1 + 10 for row {0,0} */
    e->transform = BS__TREE_SIGMOID;
    e->n_outputs = 2;
    e->base[0] = -11.0; /* sum 0 -> p = 0.5 */
    bs_ml_model_t *m = wrap(e);
    assert_int_equal(bs_ml_predict(m, row, 1, out, &err), 0);
    assert_true(out[0] == 0.5 && out[1] == 0.5);
    bs_ml_model_free(m);

    e = two_trees();
    e->transform = BS__TREE_EXP;
    e->base[0] = -11.0 + log(3.0);
    m = wrap(e);
    assert_int_equal(bs_ml_predict(m, row, 1, out, &err), 0);
    assert_true(fabs(out[0] - 3.0) < 1e-12);
    bs_ml_model_free(m);

    /* three groups, one stump per group; leaves 0, ln 2, ln 5 -> softmax 1/8, 2/8, 5/8 */
    e = new_ensemble(1, 3, 3, 3);
    e->transform = BS__TREE_SOFTMAX;
    for (int t = 0; t < 3; t++) {
        e->tree_root[t] = t;
        e->tree_group[t] = t;
    }
    leaf(e, 0, 0.0);
    leaf(e, 1, log(2.0));
    leaf(e, 2, log(5.0));
    m = wrap(e);
    assert_int_equal(bs_ml_predict(m, row, 1, out, &err), 0);
    assert_true(fabs(out[0] - 0.125) < 1e-12);
    assert_true(fabs(out[1] - 0.25) < 1e-12);
    assert_true(fabs(out[2] - 0.625) < 1e-12);
    bs_ml_model_free(m);

    /* float32 sums: 1e8 + 1 + 1 stays 1e8 in float, not in double */
    for (int f32 = 0; f32 < 2; f32++) {
        e = new_ensemble(1, 2, 2, 1);
        e->float32_sums = f32;
        e->tree_root[1] = 1;
        leaf(e, 0, 1.0);
        leaf(e, 1, 1.0);
        e->base[0] = 1e8;
        m = wrap(e);
        assert_int_equal(bs_ml_predict(m, row, 1, out, &err), 0);
        assert_true(out[0] == (f32 ? 1e8 : 1e8 + 2));
        bs_ml_model_free(m);
    }
}

/* Vector leaves (random-forest style): leaf_width = n_groups, scale, normalize. */
static void test_vector_leaves(void **state)
{
    (void)state;
    bs__tree_ensemble_t *e = new_ensemble(1, 2, 5, 2);
    e->leaf_width = 2;
    e->transform = BS__TREE_NORMALIZE;
    e->scale = 0.5;
    free(e->leaf_values);
    e->leaf_values = calloc(8, sizeof(double));
    e->n_leaf_values = 8;
    split(e, 0, 0, 0.0, 1, 2, 1);
    e->nodes[1] = (bs__tree_node_t){.feature = -1, .value_offset = 0};
    e->nodes[2] = (bs__tree_node_t){.feature = -1, .value_offset = 2};
    e->tree_root[1] = 3;
    split(e, 3, 0, 5.0, 4, 4, 0); /* broken on purpose below, then fixed */
    bs_err_t err = {0};
    assert_int_equal(bs__tree_ensemble_validate(e, &err), BS_EINVAL);
    /* tree 1 is a single leaf: nodes 3 (leaf) and 4 (unreachable leaf) */
    e->nodes[3] = (bs__tree_node_t){.feature = -1, .value_offset = 4};
    e->nodes[4] = (bs__tree_node_t){.feature = -1, .value_offset = 6};
    const double v[8] = {1, 0, 0, 1, 0.5, 0.5, 9, 9};
    memcpy(e->leaf_values, v, sizeof v);
    bs_ml_model_t *m = wrap(e);
    double rows[] = {-1.0, 1.0}, out[4];
    assert_int_equal(bs_ml_predict(m, rows, 2, out, &err), 0);
    /* x=-1: 0.5*[1,0] + 0.5*[.5,.5] = [.75,.25]; x=1: [.25,.75] */
    assert_true(fabs(out[0] - 0.75) < 1e-15 && fabs(out[1] - 0.25) < 1e-15);
    assert_true(fabs(out[2] - 0.25) < 1e-15 && fabs(out[3] - 0.75) < 1e-15);
    bs_ml_model_free(m);
}

static void expect_invalid(bs__tree_ensemble_t *e, const char *needle)
{
    bs_err_t err = {0};
    assert_int_equal(bs__tree_ensemble_validate(e, &err), BS_EINVAL);
    if (!strstr(err.msg, needle))
        fail_msg("message '%s' lacks '%s'", err.msg, needle);
    bs_ml_schema_t schema = {0};
    bs_err_clear(&err);
    assert_null(bs__ml_model_new(&bs__tree_vtable, e, &schema, &err)); /* frees e */
    assert_int_equal(err.code, BS_EINVAL);
}

static void test_validation(void **state)
{
    (void)state;
    bs__tree_ensemble_t *e = two_trees();
    e->nodes[1].left = 0; /* backward link: a cycle 0 -> 1 -> 0 */
    expect_invalid(e, "point forward");

    e = two_trees();
    e->nodes[0].right = 0; /* self loop */
    expect_invalid(e, "point forward");

    e = two_trees();
    e->nodes[0].right = 6; /* into tree 1 */
    expect_invalid(e, "point forward");

    e = two_trees();
    e->nodes[1].right = 2; /* node 2 gets two parents */
    expect_invalid(e, "more than one parent");

    e = two_trees();
    e->nodes[5].feature = 2; /* 2 features */
    expect_invalid(e, "feature 2");

    e = two_trees();
    e->nodes[3].value_offset = 8; /* 8 leaf values */
    expect_invalid(e, "value offset");

    e = two_trees();
    e->nodes[0].threshold = NAN;
    expect_invalid(e, "threshold");

    e = two_trees();
    e->tree_root[1] = 9; /* beyond the nodes */
    expect_invalid(e, "tree 0");

    e = two_trees();
    e->tree_group[1] = 1; /* one group */
    expect_invalid(e, "group 1");

    e = two_trees();
    e->n_outputs = 2; /* identity gives 1 */
    expect_invalid(e, "outputs");

    e = two_trees();
    e->leaf_values[6] = INFINITY;
    expect_invalid(e, "finite");

    e = two_trees();
    e->n_nodes = (int64_t)BS_ML_MAX_NODES + 1;
    expect_invalid(e, "nodes");

    e = two_trees();
    e->n_trees = -1;
    expect_invalid(e, "trees");

    bs_err_t err = {0};
    assert_int_equal(bs__tree_ensemble_validate(NULL, &err), BS_EINVAL);
}

static void test_zero_trees(void **state)
{
    (void)state;
    bs__tree_ensemble_t *e = new_ensemble(3, 0, 0, 1);
    e->base[0] = 4.5;
    bs_ml_model_t *m = wrap(e);
    double row[3] = {1, 2, 3}, out[1];
    assert_int_equal(bs_ml_predict(m, row, 1, out, NULL), 0);
    assert_true(out[0] == 4.5);
    bs_ml_model_free(m);
}

/* ---- random ensembles of every heap depth vs a reference walk ------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005u + 1442695040888963407u;
    return (uint32_t)(rng_state >> 33) % n;
}

/* Tree in pre-order from node *pos, at most depth left; the first branch reaches it. */
static void random_tree(bs__tree_ensemble_t *e, int *pos, int depth, int full, int nf)
{
    int me = (*pos)++;
    if (depth == 0 || (!full && rnd(16) == 0)) {
        leaf(e, me, (double)((int)rnd(2001) - 1000) / 64.0);
        return;
    }
    int left = *pos;
    random_tree(e, pos, depth - 1, full, nf);
    int right = *pos;
    random_tree(e, pos, depth - 1, 0, nf);
    split(e, me, (int)rnd((uint32_t)nf), (double)((int)rnd(17) - 8) / 8.0, left, right,
          (int)rnd(2));
}

static double reference(const bs__tree_ensemble_t *e, const double *row)
{
    float accf = (float)e->base[0];
    double accd = e->base[0];
    for (int t = 0; t < e->n_trees; t++) {
        const bs__tree_node_t *n = &e->nodes[e->tree_root[t]];
        while (n->feature >= 0) {
            double x = row[n->feature];
            int go_left = isnan(x)                         ? n->default_left
                          : e->split_rule == BS__TREE_LT ? (float)x < (float)n->threshold
                                                           : (float)x <= n->threshold;
            n = &e->nodes[go_left ? n->left : n->right];
        }
        accf += (float)e->leaf_values[n->value_offset];
        accd += e->scale * e->leaf_values[n->value_offset];
    }
    return e->float32_sums ? (double)accf : accd;
}

/* Every depth of the heap layout (0 .. 12, one walker copy each), both split
 * rules, float and double sums, more trees than one walk chunk: one row at a
 * time and a batch give the reference walk's exact sums. */
static void test_heap_depths(void **state)
{
    (void)state;
    enum { NF = 5, NT = 70, NR = 40 };
    double rows[NR * NF], out[NR], one;
    for (int i = 0; i < NR * NF; i++)
        rows[i] = rnd(9) == 0 ? NAN : (double)((int)rnd(21) - 10) / 8.0;
    for (int depth = 0; depth <= 12; depth++) {
        for (int variant = 0; variant < 4; variant++) {
            int max_nodes = NT * ((2 << depth) - 1);
            bs__tree_ensemble_t *e = new_ensemble(NF, NT, max_nodes, 1);
            e->split_rule = variant & 1 ? BS__TREE_LE : BS__TREE_LT;
            e->float32_sums = !(variant & 2);
            e->scale = e->float32_sums ? 1.0 : 0.5;
            e->base[0] = 0.375;
            int pos = 0;
            for (int t = 0; t < NT; t++) {
                e->tree_root[t] = pos;
                random_tree(e, &pos, depth, t % 3 == 0, NF);
            }
            e->n_nodes = pos;
            /* dense enough for the heap layout (trees.c: padding costs at most ~4x) */
            assert_true(((int64_t)NT << depth) <= 4 * (int64_t)pos + 4096);
            bs_ml_model_t *m = wrap(e);
            bs_err_t err = {0};
            assert_int_equal(bs_ml_predict(m, rows, NR, out, &err), 0);
            for (int i = 0; i < NR; i++) {
                double want = reference(e, rows + i * NF);
                assert_int_equal(bs_ml_predict(m, rows + i * NF, 1, &one, &err), 0);
                assert_true(one == want);
                assert_true(out[i] == want);
            }
            bs_ml_model_free(m);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_built),   cmocka_unit_test(test_batch_matches_single),
        cmocka_unit_test(test_explicit_layout), cmocka_unit_test(test_split_rules),
        cmocka_unit_test(test_transforms),   cmocka_unit_test(test_vector_leaves),
        cmocka_unit_test(test_validation),   cmocka_unit_test(test_zero_trees),
        cmocka_unit_test(test_heap_depths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
