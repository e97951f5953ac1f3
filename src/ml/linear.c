/*
 * Linear estimator of the basalt model format: z = coef · x + intercept per
 * row of coef, then a link — identity (linear / ridge / lasso / elastic-net
 * regression), logistic (binary logistic regression, outputs [1 - p, p]),
 * softmax (multinomial) or one-vs-rest (a sigmoid per class, normalised so the
 * row sums to 1, as scikit-learn's LogisticRegression does for multi_class
 * "ovr"). Everything is computed in double; the model is immutable.
 */
#include "ml/basalt_int.h"

#include <math.h>
#include <stdlib.h>

static double sigmoid(double z)
{
    if (z >= 0)
        return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

void bs__linear_predict_row(const bs__linear_t *m, const double *x, double *out, double *z)
{
    for (int r = 0; r < m->n_rows; r++) {
        const double *w = m->coef + (size_t)r * (size_t)m->n_in;
        double s = 0.0;
        for (int j = 0; j < m->n_in; j++)
            s += w[j] * x[j];
        z[r] = s + m->intercept[r];
    }
    switch (m->link) {
    case BS__LINK_IDENTITY:
        for (int r = 0; r < m->n_rows; r++)
            out[r] = z[r];
        break;
    case BS__LINK_LOGISTIC: {
        double p = sigmoid(z[0]);
        out[0] = 1.0 - p;
        out[1] = p;
        break;
    }
    case BS__LINK_SOFTMAX: {
        double mx = z[0];
        for (int r = 1; r < m->n_rows; r++)
            if (z[r] > mx)
                mx = z[r];
        double sum = 0.0;
        for (int r = 0; r < m->n_rows; r++) {
            out[r] = exp(z[r] - mx);
            sum += out[r];
        }
        for (int r = 0; r < m->n_rows; r++)
            out[r] /= sum;
        break;
    }
    case BS__LINK_OVR: {
        double sum = 0.0;
        for (int r = 0; r < m->n_rows; r++) {
            out[r] = sigmoid(z[r]);
            sum += out[r];
        }
        /* every sigmoid underflowing to 0 only happens for |z| > ~745; keep it defined */
        if (sum > 0)
            for (int r = 0; r < m->n_rows; r++)
                out[r] /= sum;
        break;
    }
    }
}

void bs__linear_free(bs__linear_t *m)
{
    if (!m)
        return;
    free(m->coef);
    free(m->intercept);
    free(m);
}

size_t bs__linear_memory(const bs__linear_t *m)
{
    return sizeof *m + sizeof(double) * ((size_t)m->n_rows * (size_t)m->n_in + (size_t)m->n_rows);
}
