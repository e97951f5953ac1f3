/*
 * The monitor's reports (monitor.h): summaries over a filter, PSI, and the performance,
 * experiment and shadow reports, all from one endpoint's table.
 *
 * A report copies what it needs under m->mu — one compact row per entry of the time
 * range, the probabilities into one pool, the table's interned class lists, labels and
 * variant names as pointers (immutable objects: monitor_int.h) — and computes after
 * unlocking, so the tails are held up only by the copy.
 *
 * Classification: the class lists of the rows a summary covers are merged in order of
 * first appearance (the union; one model version's classes in model order when there is
 * one version), so versions whose class order differs are compared label by label. A
 * feedback label is matched to a class by the rule of bs__monitor_scalar_match; a label
 * that is none of the classes counts as one extra class ("other"): a wrong prediction for
 * accuracy, precision, recall and F1, left out of log-loss and ROC AUC. Binary (two
 * classes): precision, recall and F1 of the second class, P(second class) is the score for
 * ROC AUC, mean_prediction and PSI. Multiclass: macro averages over the classes present in
 * the labels or the predictions (scikit-learn's average="macro" with labels=None).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/time.h"
#include "monitor/monitor_int.h"
#include "monitor/stats.h"

/* ---- collection ------------------------------------------------------------------------- */

typedef struct {
    int64_t time_ms;
    double out, label_num, p_out;
    double lat, p_lat;
    uint32_t poff;
    int32_t version, label_sid;
    uint16_t variant, cset, p_cset;
    int16_t pred, p_pred;
    uint8_t flags, p_flags; /* p_*: a shadow row's primary (p_flags 0: not found) */
} row_t;

typedef struct {
    row_t *v;
    size_t n, cap;
    double *probs;
    size_t np, capp;
    cset_t **csets;
    int n_csets;
    label_t **labels;
    int n_labels;
    char (*variants)[64];
    int n_variants;
    int found; /* the endpoint has a table */
} rows_t;

static void rows_free(rows_t *r)
{
    free(r->v);
    free(r->probs);
    free(r->csets);
    free(r->labels);
    free(r->variants);
    memset(r, 0, sizeof *r);
}

static int row_push(rows_t *r, const row_t *x)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 1024;
        row_t *v = realloc(r->v, cap * sizeof *v);
        if (!v)
            return -1;
        r->v = v;
        r->cap = cap;
    }
    r->v[r->n++] = *x;
    return 0;
}

static int probs_push(rows_t *r, const double *p, int k, uint32_t *off)
{
    if (r->np + (size_t)k > r->capp) {
        size_t cap = r->capp ? r->capp : 4096;
        while (cap < r->np + (size_t)k)
            cap *= 2;
        double *v = realloc(r->probs, cap * sizeof *v);
        if (!v)
            return -1;
        r->probs = v;
        r->capp = cap;
    }
    if (r->np > UINT32_MAX - (size_t)k)
        return -1;
    *off = (uint32_t)r->np;
    memcpy(r->probs + r->np, p, (size_t)k * sizeof *p);
    r->np += (size_t)k;
    return 0;
}

/* Copies the rows of tenant's endpoint with time in [since, until) (until 0: no bound). */
static int collect(bs_monitor_t *m, const char *tenant, const char *endpoint, int64_t since,
                   int64_t until, rows_t *r, bs_err_t *err)
{
    memset(r, 0, sizeof *r);
    int rc = 0;
    pthread_mutex_lock(&m->mu);
    tenant_t *t = bs__monitor_tenant(m, tenant);
    table_t *tb = t ? bs__monitor_table(t, endpoint, 0) : NULL;
    if (!tb)
        goto out;
    r->found = 1;
    r->n_csets = tb->n_csets;
    r->n_labels = tb->n_labels;
    r->n_variants = tb->n_variants;
    r->csets = malloc((size_t)(tb->n_csets + 1) * sizeof *r->csets);
    r->labels = malloc((size_t)(tb->n_labels + 1) * sizeof *r->labels);
    r->variants = malloc((size_t)(tb->n_variants + 1) * sizeof *r->variants);
    if (!r->csets || !r->labels || !r->variants) {
        rc = bs_err_set(err, BS_ENOMEM, "out of memory");
        goto out;
    }
    if (tb->n_csets)
        memcpy(r->csets, tb->csets, (size_t)tb->n_csets * sizeof *r->csets);
    if (tb->n_labels)
        memcpy(r->labels, tb->labels, (size_t)tb->n_labels * sizeof *r->labels);
    if (tb->n_variants)
        memcpy(r->variants, tb->variants, (size_t)tb->n_variants * sizeof *r->variants);
    for (size_t i = 0; i < tb->count; i++) {
        const entry_t *e = bs__monitor_at(tb, i);
        if (e->time_ms < since || (until && e->time_ms >= until))
            continue;
        row_t x = {.time_ms = e->time_ms,
                   .out = e->out,
                   .label_num = e->label_num,
                   .p_out = NAN,
                   .lat = e->latency_ms,
                   .p_lat = NAN,
                   .version = e->version,
                   .label_sid = e->label_sid,
                   .variant = e->variant,
                   .cset = e->cset,
                   .pred = e->pred,
                   .p_pred = -1,
                   .flags = e->flags};
        if ((e->flags & E_PROBS) && probs_push(r, tb->csets[e->cset]->k > 2 ? e->pk : e->p2,
                                               tb->csets[e->cset]->k, &x.poff) != 0) {
            rc = bs_err_set(err, BS_ENOMEM, "out of memory");
            goto out;
        }
        if (e->flags & E_SHADOW) {
            /* its primary: the label comes from there, and the shadow report compares */
            table_t *ptb;
            const entry_t *p = bs__monitor_lookup_entry(t, e, &ptb);
            x.flags &= (uint8_t)~E_LABELLED;
            x.label_sid = -1;
            x.label_num = NAN;
            if (p && ptb == tb) {
                x.p_flags = p->flags | 0x80; /* 0x80: found */
                x.p_out = p->out;
                x.p_lat = p->latency_ms;
                x.p_cset = p->cset;
                x.p_pred = p->pred;
                if (p->flags & E_LABELLED) {
                    x.flags |= E_LABELLED;
                    x.label_sid = p->label_sid;
                    x.label_num = p->label_num;
                }
            }
        }
        if (row_push(r, &x) != 0) {
            rc = bs_err_set(err, BS_ENOMEM, "out of memory");
            goto out;
        }
    }
out:
    pthread_mutex_unlock(&m->mu);
    if (rc)
        rows_free(r);
    return rc;
}

static int variant_index(const rows_t *r, const char *name)
{
    for (int i = 0; i < r->n_variants; i++)
        if (strcmp(r->variants[i], name) == 0)
            return i;
    return -1;
}

/* Which rows a computation covers. */
typedef struct {
    int64_t since, until;
    int version;         /* -1: any; else only this one */
    int exclude_version; /* > 0: every version but this one */
    int variant;         /* -1: any; -2: none can match (an unknown name) */
    int shadow;
} sel_t;

static int selected(const sel_t *s, const row_t *x)
{
    if (x->time_ms < s->since || (s->until && x->time_ms >= s->until))
        return 0;
    if (s->version >= 0 && x->version != s->version)
        return 0;
    if (s->exclude_version > 0 && x->version == s->exclude_version)
        return 0;
    if (s->variant == -2 || (s->variant >= 0 && x->variant != s->variant))
        return 0;
    return ((x->flags & E_SHADOW) != 0) == (s->shadow != 0);
}

static int sel_from_filter(const rows_t *r, const bs_monitor_filter_t *f, sel_t *s, bs_err_t *err)
{
    if (f->until_ms && f->until_ms < f->since_ms)
        return bs_err_set(err, BS_EINVAL, "the filter's until is before its since");
    if (f->shadow != 0 && f->shadow != 1)
        return bs_err_set(err, BS_EINVAL, "the filter's shadow is 0 or 1, got %d", f->shadow);
    s->since = f->since_ms;
    s->until = f->until_ms;
    s->version = f->version > 0 ? f->version : -1;
    s->exclude_version = f->exclude_version;
    s->shadow = f->shadow;
    s->variant = -1;
    if (f->variant) {
        s->variant = variant_index(r, f->variant);
        if (s->variant < 0)
            s->variant = -2;
    }
    return 0;
}

/* ---- classes ---------------------------------------------------------------------------- */

typedef struct {
    int k;
    const char **names;
    int **map; /* per cset of the rows: its classes' union indexes (NULL: not seen) */
    int n_csets;
} union_t;

static void union_free(union_t *u)
{
    if (u->map)
        for (int i = 0; i < u->n_csets; i++)
            free(u->map[i]);
    free(u->map);
    free(u->names);
    memset(u, 0, sizeof *u);
}

static int union_init(union_t *u, const rows_t *r)
{
    memset(u, 0, sizeof *u);
    u->n_csets = r->n_csets;
    u->map = calloc((size_t)(r->n_csets + 1), sizeof *u->map);
    return u->map ? 0 : -1;
}

static int union_add(union_t *u, const rows_t *r, int c)
{
    if (c < 0 || c >= u->n_csets || u->map[c])
        return 0;
    const cset_t *cs = r->csets[c];
    int *map = malloc((size_t)(cs->k ? cs->k : 1) * sizeof *map);
    const char **names = realloc(u->names, (size_t)(u->k + cs->k + 1) * sizeof *names);
    if (!map || !names) {
        free(map);
        if (names)
            u->names = names;
        return -1;
    }
    u->names = names;
    for (int j = 0; j < cs->k; j++) {
        int at = -1;
        for (int i = 0; i < u->k && at < 0; i++)
            if (strcmp(u->names[i], cs->labels[j]) == 0)
                at = i;
        if (at < 0) {
            at = u->k;
            u->names[u->k++] = cs->labels[j];
        }
        map[j] = at;
    }
    u->map[c] = map;
    return 0;
}

/* The feedback label of a row as a scalar. */
static void row_label(const rows_t *r, const row_t *x, bs__scalar_t *s)
{
    memset(s, 0, sizeof *s);
    if (x->label_sid >= 0 && x->label_sid < r->n_labels) {
        const label_t *l = r->labels[x->label_sid];
        if (l->is_bool) {
            s->type = 3;
            s->b = l->bool_value;
        } else {
            s->type = 2;
            s->str = l->str;
        }
    } else if (isfinite(x->label_num)) {
        s->type = 1;
        s->num = x->label_num;
    }
}

/* The union class a label names, or u->k ("other"). */
static int label_class(const union_t *u, const bs__scalar_t *l)
{
    for (int i = 0; i < u->k; i++) {
        bs__scalar_t c = {.type = 2, .str = u->names[i]};
        if (bs__monitor_scalar_match(l, &c))
            return i;
    }
    return u->k;
}

/* P(union class cls) of a row with probabilities, or NaN. */
static double row_prob(const rows_t *r, const union_t *u, const row_t *x, int cls)
{
    if (!(x->flags & E_PROBS) || !u->map[x->cset])
        return NAN;
    const cset_t *cs = r->csets[x->cset];
    for (int j = 0; j < cs->k; j++)
        if (u->map[x->cset][j] == cls)
            return r->probs[x->poff + (uint32_t)j];
    return 0;
}

/* ---- summaries -------------------------------------------------------------------------- */

typedef struct {
    bs_monitor_summary_t s;
    int64_t correct, class_n; /* labelled classification rows, of them right */
    double *abs_err, *values; /* per labelled row: |prediction - value|; the value */
    size_t n_abs, n_values;
    double *scores; /* per row: mean_prediction's value (NaN-free) */
    size_t n_scores;
} calc_t;

static void calc_free(calc_t *c)
{
    free(c->abs_err);
    free(c->values);
    free(c->scores);
}

static int push_d(double **v, size_t *n, size_t *cap, double x)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 256;
        double *nv = realloc(*v, nc * sizeof *nv);
        if (!nv)
            return -1;
        *v = nv;
        *cap = nc;
    }
    (*v)[(*n)++] = x;
    return 0;
}

static void summary_nan(bs_monitor_summary_t *s)
{
    memset(s, 0, sizeof *s);
    s->latency_p50_ms = s->latency_p99_ms = s->mean_prediction = NAN;
    s->accuracy = s->precision = s->recall = s->f1 = s->log_loss = s->roc_auc = NAN;
    s->mae = s->rmse = s->r2 = NAN;
}

static double mean_of(const double *v, size_t n)
{
    if (!n)
        return NAN;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    return sum / (double)n;
}

/* Computes the summary of the selected rows with the union u (built here when it has no
 * classes yet: pass a fresh one). reward: the thompson reward label, or NULL. */
static int compute(const rows_t *r, const sel_t *sel, union_t *u, const bs__scalar_t *reward,
                   calc_t *c, bs_err_t *err)
{
    memset(c, 0, sizeof *c);
    bs_monitor_summary_t *s = &c->s;
    summary_nan(s);
    size_t n_sel = 0;
    for (size_t i = 0; i < r->n; i++) {
        const row_t *x = &r->v[i];
        if (!selected(sel, x))
            continue;
        n_sel++;
        if ((x->flags & E_CLASS) && union_add(u, r, x->cset) != 0)
            return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    double *lat = NULL, *yv = NULL, *pv = NULL, *scores = NULL, *P = NULL, *auc_s = NULL;
    int *yc = NULL, *pc = NULL, *ll_y = NULL, *auc_y = NULL;
    size_t n_lat = 0, n_reg = 0, n_cls = 0, n_ll = 0, n_auc = 0, cap_abs = 0, cap_val = 0;
    int rc = 0;
    int K = u->k + 1; /* the classes and "other" */
    if (n_sel) {
        lat = malloc(n_sel * sizeof *lat);
        yv = malloc(n_sel * sizeof *yv);
        pv = malloc(n_sel * sizeof *pv);
        scores = malloc(n_sel * sizeof *scores);
        yc = malloc(n_sel * sizeof *yc);
        pc = malloc(n_sel * sizeof *pc);
        ll_y = malloc(n_sel * sizeof *ll_y);
        auc_y = malloc(n_sel * sizeof *auc_y);
        auc_s = malloc(n_sel * sizeof *auc_s);
        P = u->k > 0 && n_sel <= SIZE_MAX / sizeof *P / (size_t)u->k
                ? malloc(n_sel * (size_t)u->k * sizeof *P)
                : NULL;
        if (!lat || !yv || !pv || !scores || !yc || !pc || !ll_y || !auc_y || !auc_s ||
            (u->k > 0 && !P)) {
            rc = bs_err_set(err, BS_ENOMEM, "out of memory");
            goto done;
        }
    }
    int binary = u->k == 2;
    int64_t n_class_rows = 0;
    for (size_t i = 0; i < r->n; i++) {
        const row_t *x = &r->v[i];
        if (!selected(sel, x))
            continue;
        s->requests++;
        if (x->flags & E_ERROR)
            s->errors++;
        if (isfinite(x->lat))
            lat[n_lat++] = x->lat;
        if (x->flags & E_VALUE)
            scores[c->n_scores++] = x->out;
        else if ((x->flags & E_CLASS) && binary && isfinite(row_prob(r, u, x, 1)))
            scores[c->n_scores++] = row_prob(r, u, x, 1);
        if (x->flags & E_CLASS)
            n_class_rows++;
        if (!(x->flags & E_LABELLED))
            continue;
        bs__scalar_t l;
        row_label(r, x, &l);
        if (reward && reward->type) {
            if (bs__monitor_scalar_match(&l, reward))
                s->successes++;
            else
                s->failures++;
        }
        if (x->flags & E_ERROR)
            continue;
        if (isfinite(x->label_num) &&
            push_d(&c->values, &c->n_values, &cap_val, x->label_num) != 0) {
            rc = bs_err_set(err, BS_ENOMEM, "out of memory");
            goto done;
        }
        if ((x->flags & E_VALUE) && isfinite(x->label_num)) {
            s->labelled++;
            yv[n_reg] = x->label_num;
            pv[n_reg++] = x->out;
            if (push_d(&c->abs_err, &c->n_abs, &cap_abs, fabs(x->out - x->label_num)) != 0) {
                rc = bs_err_set(err, BS_ENOMEM, "out of memory");
                goto done;
            }
        } else if ((x->flags & E_CLASS) && u->map[x->cset] && l.type) {
            s->labelled++;
            int y = label_class(u, &l), p = u->map[x->cset][x->pred];
            yc[n_cls] = y;
            pc[n_cls++] = p;
            c->class_n++;
            c->correct += y == p;
            if ((x->flags & E_PROBS) && y < u->k) {
                for (int j = 0; j < u->k; j++)
                    P[n_ll * (size_t)u->k + (size_t)j] = row_prob(r, u, x, j);
                ll_y[n_ll++] = y;
                if (binary) {
                    auc_s[n_auc] = row_prob(r, u, x, 1);
                    auc_y[n_auc++] = y == 1;
                }
            }
        }
    }
    s->error_rate = s->requests ? (double)s->errors / (double)s->requests : 0;
    if (n_lat) {
        s->latency_p50_ms = bs_stats_quantile(lat, n_lat, 0.5);
        s->latency_p99_ms = bs_stats_quantile(lat, n_lat, 0.99);
    }
    s->classification = n_class_rows > 0;
    if (c->n_scores)
        s->mean_prediction = mean_of(scores, c->n_scores);
    if (n_cls) {
        bs_stats_classification_t cl;
        if (binary) {
            bs_stats_classification(yc, pc, n_cls, K, 1, &cl);
        } else {
            /* macro over the classes present in the labels or the predictions */
            int *dense = malloc((size_t)K * sizeof *dense);
            if (!dense) {
                rc = bs_err_set(err, BS_ENOMEM, "out of memory");
                goto done;
            }
            for (int j = 0; j < K; j++)
                dense[j] = -1;
            int kp = 0;
            for (size_t i = 0; i < n_cls; i++) {
                if (dense[yc[i]] < 0)
                    dense[yc[i]] = kp++;
                if (dense[pc[i]] < 0)
                    dense[pc[i]] = kp++;
                yc[i] = dense[yc[i]];
                pc[i] = dense[pc[i]];
            }
            free(dense);
            bs_stats_classification(yc, pc, n_cls, kp, -1, &cl);
        }
        s->accuracy = cl.accuracy;
        s->precision = cl.precision;
        s->recall = cl.recall;
        s->f1 = cl.f1;
    }
    if (n_ll)
        s->log_loss = bs_stats_log_loss(P, ll_y, n_ll, u->k, 1e-15);
    if (n_auc)
        s->roc_auc = bs_stats_roc_auc(auc_s, auc_y, n_auc);
    if (n_reg) {
        bs_stats_regression_t rg;
        bs_stats_regression(yv, pv, n_reg, &rg);
        s->mae = rg.mae;
        s->rmse = rg.rmse;
        s->r2 = rg.r2;
    }
    c->scores = scores;
    scores = NULL;
done:
    free(lat);
    free(yv);
    free(pv);
    free(scores);
    free(yc);
    free(pc);
    free(ll_y);
    free(auc_y);
    free(auc_s);
    free(P);
    if (rc)
        calc_free(c);
    return rc;
}

/* Parses a reward label (JSON text) into s; *hold owns the text. NULL or "": none. */
static int reward_parse(const char *json, bs__scalar_t *s, cJSON **hold, bs_err_t *err)
{
    memset(s, 0, sizeof *s);
    *hold = NULL;
    if (!json || !*json)
        return 0;
    if (bs__monitor_scalar_parse(json, s, hold) != 0) {
        cJSON_Delete(*hold);
        *hold = NULL;
        return bs_err_set(err, BS_EINVAL,
                          "the reward label must be a JSON string, number or "
                          "boolean, got '%.64s'",
                          json);
    }
    return 0;
}

int bs_monitor_summary(bs_monitor_t *m, const char *tenant, const char *endpoint,
                       const bs_monitor_filter_t *f, bs_monitor_summary_t *out, bs_err_t *err)
{
    summary_nan(out);
    if (!m || !tenant || !endpoint || !f)
        return bs_err_set(err, BS_EINVAL, "a summary needs a tenant, an endpoint and a filter");
    bs__scalar_t reward;
    cJSON *hold;
    int rc = reward_parse(f->reward_label, &reward, &hold, err);
    if (rc)
        return rc;
    rows_t r;
    if ((rc = collect(m, tenant, endpoint, f->since_ms, f->until_ms, &r, err)) != 0) {
        cJSON_Delete(hold);
        return rc;
    }
    sel_t sel;
    if ((rc = sel_from_filter(&r, f, &sel, err)) == 0) {
        union_t u;
        calc_t c;
        if (union_init(&u, &r) != 0) {
            rc = bs_err_set(err, BS_ENOMEM, "out of memory");
        } else if ((rc = compute(&r, &sel, &u, &reward, &c, err)) == 0) {
            *out = c.s;
            calc_free(&c);
        }
        union_free(&u);
    }
    rows_free(&r);
    cJSON_Delete(hold);
    return rc;
}

int bs_monitor_rewards(bs_monitor_t *m, const char *tenant, const char *endpoint,
                       const char *variant, int64_t since_ms, const char *reward_label,
                       int64_t *successes, int64_t *failures)
{
    *successes = *failures = 0;
    bs__scalar_t reward;
    cJSON *hold;
    if (!m || reward_parse(reward_label, &reward, &hold, NULL) != 0)
        return BS_EINVAL;
    if (!reward.type) {
        cJSON_Delete(hold);
        return 0;
    }
    pthread_mutex_lock(&m->mu);
    tenant_t *t = bs__monitor_tenant(m, tenant);
    table_t *tb = t ? bs__monitor_table(t, endpoint, 0) : NULL;
    int vi = -1;
    if (tb && variant)
        for (int i = 0; i < tb->n_variants && vi < 0; i++)
            if (strcmp(tb->variants[i], variant) == 0)
                vi = i;
    if (tb && (!variant || vi >= 0)) {
        for (size_t i = 0; i < tb->count; i++) {
            const entry_t *e = bs__monitor_at(tb, i);
            if (e->time_ms < since_ms || (e->flags & E_SHADOW) || !(e->flags & E_LABELLED) ||
                (vi >= 0 && e->variant != vi))
                continue;
            bs__scalar_t l = {0};
            if (e->label_sid >= 0) {
                const label_t *lb = tb->labels[e->label_sid];
                l.type = lb->is_bool ? 3 : 2;
                l.b = lb->bool_value;
                l.str = lb->str;
            } else if (isfinite(e->label_num)) {
                l.type = 1;
                l.num = e->label_num;
            }
            if (bs__monitor_scalar_match(&l, &reward))
                (*successes)++;
            else
                (*failures)++;
        }
    }
    pthread_mutex_unlock(&m->mu);
    cJSON_Delete(hold);
    return 0;
}

/* ---- PSI -------------------------------------------------------------------------------- */

int bs_monitor_psi(bs_monitor_t *m, const char *tenant, const char *endpoint,
                   const bs_monitor_filter_t *ref, const bs_monitor_filter_t *cur, double *psi,
                   int64_t *n_ref, int64_t *n_cur, bs_err_t *err)
{
    *psi = NAN;
    if (n_ref)
        *n_ref = 0;
    if (n_cur)
        *n_cur = 0;
    if (!m || !tenant || !endpoint || !ref || !cur)
        return bs_err_set(err, BS_EINVAL, "PSI needs a tenant, an endpoint and two filters");
    int64_t since = ref->since_ms < cur->since_ms ? ref->since_ms : cur->since_ms;
    int64_t until = !ref->until_ms || !cur->until_ms ? 0
                    : ref->until_ms > cur->until_ms  ? ref->until_ms
                                                     : cur->until_ms;
    rows_t r;
    int rc = collect(m, tenant, endpoint, since, until, &r, err);
    if (rc)
        return rc;
    sel_t sr, sc;
    union_t u;
    calc_t cr = {0}, cc = {0};
    if ((rc = sel_from_filter(&r, ref, &sr, err)) || (rc = sel_from_filter(&r, cur, &sc, err))) {
        rows_free(&r);
        return rc;
    }
    if (union_init(&u, &r) != 0) {
        rows_free(&r);
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    /* One union for both sides (the reference's classes first), so "the second class" is
     * the same label on both. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < r.n; i++)
            if ((r.v[i].flags & E_CLASS) && selected(pass ? &sc : &sr, &r.v[i]))
                union_add(&u, &r, r.v[i].cset);
    if ((rc = compute(&r, &sr, &u, NULL, &cr, err)) == 0 &&
        (rc = compute(&r, &sc, &u, NULL, &cc, err)) == 0) {
        if (n_ref)
            *n_ref = (int64_t)cr.n_scores;
        if (n_cur)
            *n_cur = (int64_t)cc.n_scores;
        if (cr.n_scores >= 10 && cc.n_scores >= 10)
            *psi = bs_stats_psi(cr.scores, cr.n_scores, cc.scores, cc.n_scores, 10, 1e-4);
    }
    calc_free(&cr);
    calc_free(&cc);
    union_free(&u);
    rows_free(&r);
    return rc;
}

/* ---- rendering helpers ------------------------------------------------------------------ */

static void window_str(int64_t ms, char *out, size_t n)
{
    static const struct {
        int64_t ms;
        const char *unit;
    } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (ms > 0 && ms % units[i].ms == 0) {
            snprintf(out, n, "%lld%s", (long long)(ms / units[i].ms), units[i].unit);
            return;
        }
    snprintf(out, n, "%lldms", (long long)ms);
}

static void key_num(bs_buf_t *b, const char *k, double v)
{
    bs_jw_key(b, k);
    bs_jw_double(b, v);
}

static void key_int(bs_buf_t *b, const char *k, int64_t v)
{
    bs_jw_key(b, k);
    bs_jw_int(b, v);
}

static void report_head(bs_buf_t *b, const char *endpoint, int64_t window_ms, int64_t now)
{
    char w[32];
    window_str(window_ms, w, sizeof w);
    bs_jw_obj_begin(b);
    bs_jw_key(b, "endpoint");
    bs_jw_str(b, endpoint);
    bs_jw_key(b, "window");
    bs_jw_str(b, w);
    bs_jw_key(b, "since");
    bs_jw_time(b, now - window_ms);
    bs_jw_key(b, "until");
    bs_jw_time(b, now);
}

/* The members of a summary: traffic, then the task's metrics. */
static void render_summary(bs_buf_t *b, const bs_monitor_summary_t *s)
{
    key_int(b, "requests", s->requests);
    key_int(b, "errors", s->errors);
    key_num(b, "error_rate", s->error_rate);
    key_num(b, "latency_p50_ms", s->latency_p50_ms);
    key_num(b, "latency_p99_ms", s->latency_p99_ms);
    key_num(b, "mean_prediction", s->mean_prediction);
    bs_jw_key(b, "task");
    bs_jw_str(b, s->classification ? "classification" : "regression");
    key_int(b, "labelled", s->labelled);
    if (s->classification) {
        key_num(b, "accuracy", s->accuracy);
        key_num(b, "precision", s->precision);
        key_num(b, "recall", s->recall);
        key_num(b, "f1", s->f1);
        key_num(b, "log_loss", s->log_loss);
        key_num(b, "roc_auc", s->roc_auc);
    } else {
        key_num(b, "mae", s->mae);
        key_num(b, "rmse", s->rmse);
        key_num(b, "r2", s->r2);
    }
}

/* ---- performance ------------------------------------------------------------------------ */

typedef struct {
    int shadow;
    int key; /* version, or variant index */
} group_t;

static int group_cmp(const void *a, const void *b)
{
    const group_t *x = a, *y = b;
    if (x->shadow != y->shadow)
        return x->shadow - y->shadow;
    return (x->key > y->key) - (x->key < y->key);
}

int bs_monitor_performance(bs_monitor_t *m, const char *tenant, const char *endpoint,
                           int64_t window_ms, const char *by, bs_buf_t *out, bs_err_t *err)
{
    if (!by)
        by = "version";
    int by_variant = strcmp(by, "variant") == 0;
    if (!by_variant && strcmp(by, "version") != 0)
        return bs_err_setf(err, BS_EINVAL, "by", "by is version or variant, got '%.32s'", by);
    if (window_ms <= 0)
        return bs_err_setf(err, BS_EINVAL, "window", "the window must be positive");
    int64_t now = bs_time_wall_ms();
    rows_t r;
    int rc = collect(m, tenant, endpoint, now - window_ms, 0, &r, err);
    if (rc)
        return rc;
    group_t *g = NULL;
    int ng = 0, capg = 0;
    for (size_t i = 0; i < r.n && !rc; i++) {
        group_t x = {.shadow = (r.v[i].flags & E_SHADOW) != 0,
                     .key = by_variant ? r.v[i].variant : r.v[i].version};
        int j = 0;
        while (j < ng && (g[j].shadow != x.shadow || g[j].key != x.key))
            j++;
        if (j < ng)
            continue;
        if (ng == capg) {
            capg = capg ? capg * 2 : 8;
            group_t *ng2 = realloc(g, (size_t)capg * sizeof *g);
            if (!ng2) {
                rc = bs_err_set(err, BS_ENOMEM, "out of memory");
                break;
            }
            g = ng2;
        }
        g[ng++] = x;
    }
    if (!by_variant && ng > 1) {
        qsort(g, (size_t)ng, sizeof *g, group_cmp);
    } else if (ng > 1) { /* variants: routed first, each part in order of first appearance */
        group_t *tmp = malloc((size_t)ng * sizeof *tmp);
        if (tmp) {
            int k = 0;
            for (int pass = 0; pass < 2; pass++)
                for (int i = 0; i < ng; i++)
                    if (g[i].shadow == pass)
                        tmp[k++] = g[i];
            memcpy(g, tmp, (size_t)ng * sizeof *g);
            free(tmp);
        }
    }
    report_head(out, endpoint, window_ms, now);
    bs_jw_key(out, "by");
    bs_jw_str(out, by_variant ? "variant" : "version");
    bs_jw_key(out, "items");
    bs_jw_arr_begin(out);
    for (int i = 0; i < ng && !rc; i++) {
        sel_t sel = {.since = now - window_ms, .version = -1, .variant = -1, .shadow = g[i].shadow};
        if (by_variant)
            sel.variant = g[i].key;
        else
            sel.version = g[i].key;
        union_t u;
        calc_t c;
        if (union_init(&u, &r) != 0) {
            rc = bs_err_set(err, BS_ENOMEM, "out of memory");
            break;
        }
        rc = compute(&r, &sel, &u, NULL, &c, err);
        union_free(&u);
        if (rc)
            break;
        bs_jw_obj_begin(out);
        if (by_variant) {
            bs_jw_key(out, "variant");
            bs_jw_str(out, r.variants[g[i].key]);
        } else {
            key_int(out, "version", g[i].key);
        }
        bs_jw_key(out, "shadow");
        bs_jw_bool(out, g[i].shadow);
        render_summary(out, &c.s);
        bs_jw_obj_end(out);
        calc_free(&c);
    }
    bs_jw_arr_end(out);
    bs_jw_obj_end(out);
    free(g);
    rows_free(&r);
    return rc;
}

/* ---- experiment ------------------------------------------------------------------------- */

typedef struct {
    calc_t c;
    double metric, ci_low, ci_high, sd;
    int64_t n, x;
} arm_t;

int bs_monitor_experiment(bs_monitor_t *m, const char *tenant, const char *endpoint,
                          const bs_monitor_experiment_opts_t *o, bs_buf_t *out, bs_err_t *err)
{
    if (!o || o->n_variants < 1 || !o->variants)
        return bs_err_set(err, BS_EINVAL, "an experiment needs the endpoint's variants");
    if (o->window_ms <= 0)
        return bs_err_setf(err, BS_EINVAL, "window", "the window must be positive");
    double alpha = o->alpha > 0 ? o->alpha : 0.05, power = o->power > 0 ? o->power : 0.8;
    if (alpha >= 1 || power >= 1)
        return bs_err_setf(err, BS_EINVAL, alpha >= 1 ? "alpha" : "power",
                           "alpha and power are in (0, 1)");
    if (o->metric && strcmp(o->metric, "accuracy") && strcmp(o->metric, "mae") &&
        strcmp(o->metric, "value"))
        return bs_err_setf(err, BS_EINVAL, "metric",
                           "metric is accuracy, mae or value, got '%.32s'", o->metric);
    if (!isfinite(o->mde) || o->mde < 0)
        return bs_err_setf(err, BS_EINVAL, "mde", "mde must be a non-negative number");
    bs__scalar_t reward;
    cJSON *hold;
    int rc = reward_parse(o->reward_label, &reward, &hold, err);
    if (rc)
        return rc;
    int64_t now = bs_time_wall_ms();
    rows_t r;
    if ((rc = collect(m, tenant, endpoint, now - o->window_ms, 0, &r, err)) != 0) {
        cJSON_Delete(hold);
        return rc;
    }
    arm_t *arms = calloc((size_t)o->n_variants, sizeof *arms);
    union_t u;
    if (!arms || union_init(&u, &r) != 0) {
        free(arms);
        rows_free(&r);
        cJSON_Delete(hold);
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    /* One union over every variant, the control's classes first. */
    int classification = 0;
    for (int v = 0; v < o->n_variants; v++) {
        int vi = variant_index(&r, o->variants[v]);
        for (size_t i = 0; vi >= 0 && i < r.n; i++)
            if ((r.v[i].flags & E_CLASS) && !(r.v[i].flags & E_SHADOW) && r.v[i].variant == vi) {
                union_add(&u, &r, r.v[i].cset);
                classification = 1;
            }
    }
    const char *metric = o->metric ? o->metric : classification ? "accuracy" : "mae";
    int rates = strcmp(metric, "accuracy") == 0;
    int computed = 0;
    for (int v = 0; v < o->n_variants && !rc; v++, computed++) {
        int vi = variant_index(&r, o->variants[v]);
        sel_t sel = {.since = now - o->window_ms, .version = -1, .variant = vi >= 0 ? vi : -2};
        rc = compute(&r, &sel, &u, &reward, &arms[v].c, err);
        if (rc)
            break;
        arm_t *a = &arms[v];
        double z = bs_stats_norm_ppf(1 - alpha / 2);
        if (rates) {
            a->n = a->c.class_n;
            a->x = a->c.correct;
            a->metric = a->n ? (double)a->x / (double)a->n : NAN;
            double se = a->n ? sqrt(a->metric * (1 - a->metric) / (double)a->n) : NAN;
            a->ci_low = a->metric - z * se;
            a->ci_high = a->metric + z * se;
            a->sd = a->n ? sqrt(a->metric * (1 - a->metric)) : NAN;
        } else {
            const double *x = strcmp(metric, "mae") == 0 ? a->c.abs_err : a->c.values;
            size_t n = strcmp(metric, "mae") == 0 ? a->c.n_abs : a->c.n_values;
            double mean = NAN, var = NAN;
            if (n)
                bs_stats_mean_var(x, n, &mean, &var);
            a->n = (int64_t)n;
            a->metric = mean;
            a->sd = sqrt(var);
            double h = n >= 2
                           ? bs_stats_t_ppf(1 - alpha / 2, (double)(n - 1)) * sqrt(var / (double)n)
                           : NAN;
            a->ci_low = mean - h;
            a->ci_high = mean + h;
        }
    }
    if (!rc) {
        const arm_t *ctl = &arms[0];
        double mde = o->mde;
        if (mde <= 0)
            mde = rates ? 0.05 : 0.1 * ctl->sd;
        int64_t needed = -1;
        if (rates)
            needed = bs_stats_samples_proportion(isfinite(ctl->metric) ? ctl->metric : 0.5, mde,
                                                 alpha, power);
        else if (isfinite(ctl->sd) && ctl->sd > 0 && mde > 0)
            needed = bs_stats_samples_mean(ctl->sd, mde, alpha, power);
        char w[32];
        window_str(o->window_ms, w, sizeof w);
        report_head(out, endpoint, o->window_ms, now);
        bs_jw_key(out, "metric");
        bs_jw_str(out, metric);
        bs_jw_key(out, "test");
        bs_jw_str(out, rates ? "two_proportion_ztest" : "welch_ttest");
        key_num(out, "alpha", alpha);
        key_num(out, "power", power);
        key_num(out, "mde", mde);
        bs_jw_key(out, "control");
        bs_jw_str(out, o->variants[0]);
        bs_jw_key(out, "samples_needed_per_variant");
        if (needed >= 0)
            bs_jw_int(out, needed);
        else
            bs_jw_null(out);
        bs_jw_key(out, "variants");
        bs_jw_arr_begin(out);
        for (int v = 0; v < o->n_variants; v++) {
            const arm_t *a = &arms[v];
            bs_jw_obj_begin(out);
            bs_jw_key(out, "variant");
            bs_jw_str(out, o->variants[v]);
            render_summary(out, &a->c.s);
            bs_jw_key(out, "metric");
            bs_jw_obj_begin(out);
            bs_jw_key(out, "name");
            bs_jw_str(out, metric);
            key_num(out, "value", a->metric);
            key_num(out, "ci_low", a->ci_low);
            key_num(out, "ci_high", a->ci_high);
            key_int(out, "n", a->n);
            if (rates)
                key_int(out, "successes", a->x);
            else
                key_num(out, "sd", a->sd);
            bs_jw_obj_end(out);
            bs_jw_key(out, "difference");
            if (v == 0) {
                bs_jw_null(out);
            } else {
                bs_stats_test_t t;
                if (rates)
                    bs_stats_two_proportion_ztest(ctl->x, ctl->n, a->x, a->n, alpha, &t);
                else
                    bs_stats_welch_ttest(ctl->metric, ctl->sd * ctl->sd, ctl->n, a->metric,
                                         a->sd * a->sd, a->n, alpha, &t);
                bs_jw_obj_begin(out);
                key_num(out, "diff", t.diff);
                key_num(out, "ci_low", t.ci_low);
                key_num(out, "ci_high", t.ci_high);
                key_num(out, "statistic", t.statistic);
                key_num(out, "df", t.df);
                key_num(out, "p_value", t.p_value);
                bs_jw_key(out, "significant");
                bs_jw_bool(out, isfinite(t.p_value) && t.p_value < alpha);
                bs_jw_obj_end(out);
            }
            bs_jw_key(out, "samples_remaining");
            if (needed >= 0)
                bs_jw_int(out, needed > a->n ? needed - a->n : 0);
            else
                bs_jw_null(out);
            if (reward.type) {
                double pa = 1 + (double)a->c.s.successes, pb = 1 + (double)a->c.s.failures;
                bs_jw_key(out, "posterior");
                bs_jw_obj_begin(out);
                key_num(out, "alpha", pa);
                key_num(out, "beta", pb);
                key_num(out, "mean", pa / (pa + pb));
                key_int(out, "successes", a->c.s.successes);
                key_int(out, "failures", a->c.s.failures);
                bs_jw_obj_end(out);
            }
            bs_jw_obj_end(out);
        }
        bs_jw_arr_end(out);
        bs_jw_obj_end(out);
    }
    for (int v = 0; v < computed; v++)
        calc_free(&arms[v].c);
    free(arms);
    union_free(&u);
    rows_free(&r);
    cJSON_Delete(hold);
    return rc;
}

/* ---- shadow ----------------------------------------------------------------------------- */

static double quantile_copy(const double *v, size_t n, double q, double *tmp)
{
    for (size_t i = 0; i < n; i++)
        tmp[i] = v[i];
    return n ? bs_stats_quantile(tmp, n, q) : NAN;
}

int bs_monitor_shadow(bs_monitor_t *m, const char *tenant, const char *endpoint, int64_t window_ms,
                      bs_buf_t *out, bs_err_t *err)
{
    if (window_ms <= 0)
        return bs_err_setf(err, BS_EINVAL, "window", "the window must be positive");
    int64_t now = bs_time_wall_ms();
    rows_t r;
    int rc = collect(m, tenant, endpoint, now - window_ms, 0, &r, err);
    if (rc)
        return rc;
    double *sl = malloc((r.n + 1) * sizeof *sl), *pl = malloc((r.n + 1) * sizeof *pl);
    double *tmp = malloc((r.n + 1) * sizeof *tmp);
    int *seen = calloc((size_t)(r.n_variants + 1), sizeof *seen);
    if (!sl || !pl || !tmp || !seen) {
        free(sl);
        free(pl);
        free(tmp);
        free(seen);
        rows_free(&r);
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    report_head(out, endpoint, window_ms, now);
    bs_jw_key(out, "items");
    bs_jw_arr_begin(out);
    for (size_t first = 0; first < r.n; first++) {
        const row_t *f0 = &r.v[first];
        if (!(f0->flags & E_SHADOW) || seen[f0->variant])
            continue;
        seen[f0->variant] = 1;
        int64_t req = 0, errs = 0, paired = 0, agree = 0, classif = 0, p_errs = 0;
        double sum_diff = 0, max_diff = NAN;
        size_t nsl = 0, npl = 0;
        int version = f0->version;
        for (size_t i = first; i < r.n; i++) {
            const row_t *x = &r.v[i];
            if (!(x->flags & E_SHADOW) || x->variant != f0->variant)
                continue;
            req++;
            version = x->version;
            if (x->flags & E_ERROR)
                errs++;
            if (isfinite(x->lat))
                sl[nsl++] = x->lat;
            if (!(x->p_flags & 0x80))
                continue;
            if (isfinite(x->p_lat))
                pl[npl++] = x->p_lat;
            if (x->p_flags & E_ERROR)
                p_errs++;
            if ((x->flags & E_ERROR) || (x->p_flags & E_ERROR))
                continue;
            if ((x->flags & E_CLASS) && (x->p_flags & E_CLASS) && x->pred >= 0 && x->p_pred >= 0) {
                paired++;
                classif = 1;
                agree += strcmp(r.csets[x->cset]->labels[x->pred],
                                r.csets[x->p_cset]->labels[x->p_pred]) == 0;
            } else if ((x->flags & E_VALUE) && (x->p_flags & E_VALUE)) {
                paired++;
                double d = fabs(x->out - x->p_out);
                sum_diff += d;
                if (!(d <= max_diff))
                    max_diff = d;
            }
        }
        bs_jw_obj_begin(out);
        bs_jw_key(out, "variant");
        bs_jw_str(out, r.variants[f0->variant]);
        key_int(out, "version", version);
        key_int(out, "requests", req);
        key_int(out, "errors", errs);
        key_num(out, "error_rate", req ? (double)errs / (double)req : 0);
        key_int(out, "paired", paired);
        key_int(out, "primary_errors", p_errs);
        bs_jw_key(out, "task");
        bs_jw_str(out, classif ? "classification" : "regression");
        if (classif) {
            key_num(out, "agreement", paired ? (double)agree / (double)paired : NAN);
        } else {
            key_num(out, "mean_abs_diff", paired ? sum_diff / (double)paired : NAN);
            key_num(out, "max_abs_diff", max_diff);
        }
        bs_jw_key(out, "latency_ms");
        bs_jw_obj_begin(out);
        bs_jw_key(out, "shadow");
        bs_jw_obj_begin(out);
        key_num(out, "p50", quantile_copy(sl, nsl, 0.5, tmp));
        key_num(out, "p99", quantile_copy(sl, nsl, 0.99, tmp));
        bs_jw_obj_end(out);
        bs_jw_key(out, "primary");
        bs_jw_obj_begin(out);
        key_num(out, "p50", quantile_copy(pl, npl, 0.5, tmp));
        key_num(out, "p99", quantile_copy(pl, npl, 0.99, tmp));
        bs_jw_obj_end(out);
        bs_jw_obj_end(out);
        bs_jw_obj_end(out);
    }
    bs_jw_arr_end(out);
    bs_jw_obj_end(out);
    free(sl);
    free(pl);
    free(tmp);
    free(seen);
    rows_free(&r);
    return 0;
}
