/*
 * Multi-layer perceptron of the basalt model format (scikit-learn's
 * MLPClassifier / MLPRegressor): dense layers a' = act(W a + b), one hidden
 * activation (identity, relu, tanh, logistic) for every layer but the last,
 * and an output activation (identity, logistic, softmax). Weights are stored
 * unit-major so each unit is one contiguous dot product. A one-unit logistic
 * output is a binary classifier and reports [1 - p, p]. Computed in double,
 * ping-ponging between two caller-provided scratch vectors; the model is
 * immutable.
 */
#include "ml/basalt_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double sigmoid(double z)
{
    if (z >= 0)
        return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

static void activate(bs__act_t act, double *v, int n)
{
    switch (act) {
    case BS__ACT_IDENTITY:
        break;
    case BS__ACT_RELU:
        for (int i = 0; i < n; i++)
            if (!(v[i] > 0))
                v[i] = 0;
        break;
    case BS__ACT_TANH:
        for (int i = 0; i < n; i++)
            v[i] = tanh(v[i]);
        break;
    case BS__ACT_LOGISTIC:
        for (int i = 0; i < n; i++)
            v[i] = sigmoid(v[i]);
        break;
    case BS__ACT_SOFTMAX: {
        double mx = v[0], sum = 0;
        for (int i = 1; i < n; i++)
            if (v[i] > mx)
                mx = v[i];
        for (int i = 0; i < n; i++) {
            v[i] = exp(v[i] - mx);
            sum += v[i];
        }
        for (int i = 0; i < n; i++)
            v[i] /= sum;
        break;
    }
    }
}

void bs__mlp_predict_row(const bs__mlp_t *m, const double *x, double *out, double *scratch)
{
    double *bufs[2] = {scratch, scratch + m->max_width};
    const double *in = x;
    double *cur = bufs[0];
    for (int l = 0; l < m->n_layers; l++) {
        const bs__mlp_layer_t *L = &m->layers[l];
        cur = bufs[l & 1];
        for (int j = 0; j < L->n_out; j++) {
            const double *w = L->w + (size_t)j * (size_t)L->n_in;
            double s = 0.0;
            for (int i = 0; i < L->n_in; i++)
                s += w[i] * in[i];
            cur[j] = s + L->b[j];
        }
        activate(l + 1 < m->n_layers ? m->hidden : m->output, cur, L->n_out);
        in = cur;
    }
    int last = m->layers[m->n_layers - 1].n_out;
    if (m->output == BS__ACT_LOGISTIC && last == 1) {
        out[0] = 1.0 - cur[0];
        out[1] = cur[0];
    } else {
        memcpy(out, cur, sizeof(double) * (size_t)last);
    }
}

void bs__mlp_free(bs__mlp_t *m)
{
    if (!m)
        return;
    for (int l = 0; l < m->n_layers; l++) {
        free(m->layers[l].w);
        free(m->layers[l].b);
    }
    free(m->layers);
    free(m);
}

size_t bs__mlp_memory(const bs__mlp_t *m)
{
    size_t n = sizeof *m + sizeof(bs__mlp_layer_t) * (size_t)m->n_layers;
    for (int l = 0; l < m->n_layers; l++)
        n += sizeof(double) * ((size_t)m->layers[l].n_out * ((size_t)m->layers[l].n_in + 1));
    return n;
}
