#!/usr/bin/python3
"""Export a fitted scikit-learn model to the basalt model JSON format.

The format is specified in docs/model-format.md ("basalt_model": 1). This file
is both a command and a module:

    python3 tools/export_sklearn.py model.pkl -o model.json
    python3 tools/export_sklearn.py model.joblib --feature-names a,b,c

    from export_sklearn import export, to_json
    doc = export(pipeline)                  # a dict
    text = to_json(pipeline, feature_names=["a", "b"])

Supported: a Pipeline and/or ColumnTransformer made of StandardScaler,
MinMaxScaler, OneHotEncoder, SimpleImputer, 'passthrough' and 'drop' in front
of one of LinearRegression, Ridge, Lasso, ElasticNet (and their CV variants),
LogisticRegression (binary, multinomial, one-vs-rest), DecisionTree,
RandomForest, ExtraTrees and GradientBoosting (classifier and regressor), and
MLPClassifier / MLPRegressor. Anything else raises ExportError naming the
class; the command then exits with status 2.

Inputs are named from `feature_names_in_` (a DataFrame fit), else from
`feature_names`, else x0..xN-1. Columns that a OneHotEncoder encodes become
category inputs whose categories are the encoder's categories as strings
(numbers as their str()). Columns a ColumnTransformer drops are left out of
the schema.
"""

import argparse
import json
import math
import sys

import numpy as np

FORMAT_VERSION = 1


class ExportError(Exception):
    """The model (or a part of it) cannot be expressed in the basalt format."""


def _cls(obj):
    return type(obj).__name__


def _floats(a):
    """A list of Python floats; rejects NaN and infinities."""
    out = [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]
    for v in out:
        if not math.isfinite(v):
            raise ExportError("the model holds a non-finite number (%r); basalt rejects it" % v)
    return out


def _is_nan(v):
    try:
        return v is None or (isinstance(v, float) and math.isnan(v)) or bool(np.isnan(v))
    except (TypeError, ValueError):
        return False


# ---- preprocessing ------------------------------------------------------------------------


class _Group:
    """One column group: input columns, the steps applied so far, and per output position
    either None (a number) or the input column whose raw category it still is."""

    def __init__(self, columns):
        self.columns = list(columns)
        self.steps = []
        self.pos = list(columns)  # raw positions: the input column itself
        self.encoded = [False] * len(columns)  # position already numeric
        self.drop = False

    @property
    def width(self):
        return len(self.pos)


class _Prep:
    """The preprocessing chain being built, plus what it learns about the inputs."""

    def __init__(self, names):
        self.names = list(names)
        self.groups = None  # None: identity over all inputs
        self.categories = {}  # input name -> list of category values (encoder order)
        self.pending_fill = []  # (step dict, index, input name, raw value) to resolve

    def _whole(self):
        if self.groups is None:
            self.groups = [_Group(self.names)]
        return self.groups

    def width(self):
        if self.groups is None:
            return len(self.names)
        return sum(g.width for g in self.groups if not g.drop)

    # A transformer applied to one group (inside a ColumnTransformer, or to the whole input).
    def apply_to_group(self, g, t):
        if isinstance(t, str):
            if t == "passthrough":
                return
            if t == "drop":
                g.drop = True
                return
            raise ExportError("unsupported transformer %r" % t)
        name = _cls(t)
        from sklearn.pipeline import Pipeline

        if isinstance(t, Pipeline):
            for _, step in t.steps:
                if step is None:
                    continue
                self.apply_to_group(g, step)
            return
        self._check_width(g, t)
        if name == "StandardScaler":
            self._numeric(g, name)
            mean = t.mean_ if t.with_mean and t.mean_ is not None else np.zeros(g.width)
            scale = t.scale_ if t.scale_ is not None else np.ones(g.width)
            g.steps.append({"op": "standard_scale", "mean": _floats(mean), "scale": _floats(scale)})
        elif name == "MinMaxScaler":
            self._numeric(g, name)
            step = {"op": "min_max_scale", "scale": _floats(t.scale_), "min": _floats(t.min_)}
            if getattr(t, "clip", False):
                step["clip"] = _floats(t.feature_range)
            g.steps.append(step)
        elif name == "SimpleImputer":
            self._imputer(g, t)
        elif name == "OneHotEncoder":
            self._one_hot(g, t)
        else:
            raise ExportError(
                "unsupported transformer %s: basalt supports StandardScaler, MinMaxScaler, "
                "OneHotEncoder, SimpleImputer, 'passthrough' and 'drop'" % name
            )

    def _check_width(self, g, t):
        n = getattr(t, "n_features_in_", None)
        if n is not None and n != g.width:
            raise ExportError(
                "%s was fitted on %d columns but receives %d here" % (_cls(t), n, g.width)
            )

    def _numeric(self, g, what):
        for i, p in enumerate(g.pos):
            if not g.encoded[i] and p in self.categories:
                raise ExportError("%s applies to category column %r before it is one-hot encoded"
                                  % (what, p))
            g.encoded[i] = True

    def _imputer(self, g, t):
        mv = t.missing_values
        if not _is_nan(mv):
            raise ExportError("SimpleImputer with missing_values=%r is not supported (only NaN)"
                              % (mv,))
        if getattr(t, "add_indicator", False):
            raise ExportError("SimpleImputer with add_indicator=True is not supported")
        stats = list(t.statistics_)
        if len(stats) != g.width:
            raise ExportError("SimpleImputer holds %d statistics for %d columns"
                              % (len(stats), g.width))
        step = {"op": "impute", "strategy": str(t.strategy), "fill": [None] * g.width}
        for i, v in enumerate(stats):
            if _is_nan(v):
                raise ExportError(
                    "SimpleImputer: column %r had no observed values when fitted; scikit-learn "
                    "drops it, which basalt does not express" % (g.pos[i],)
                )
            if g.encoded[i]:
                step["fill"][i] = _floats([v])[0]
            else:
                # raw input position: a number, or a category resolved once the encoder is known
                self.pending_fill.append((step, i, g.pos[i], v))
        g.steps.append(step)

    def _one_hot(self, g, t):
        if getattr(t, "drop_idx_", None) is not None:
            raise ExportError("OneHotEncoder with drop=%r is not supported" % (t.drop,))
        if getattr(t, "_infrequent_enabled", False):
            raise ExportError("OneHotEncoder with infrequent categories is not supported")
        hu = t.handle_unknown
        if hu == "infrequent_if_exist":
            hu = "ignore"  # without infrequent categories it behaves as ignore
        if hu not in ("error", "ignore"):
            raise ExportError("OneHotEncoder with handle_unknown=%r is not supported" % (hu,))
        new_pos, new_enc = [], []
        for i, cats in enumerate(t.categories_):
            col = g.pos[i]
            if g.encoded[i]:
                raise ExportError("OneHotEncoder applies to a column that is already transformed")
            cats = list(cats)
            for c in cats:
                if _is_nan(c):
                    raise ExportError(
                        "OneHotEncoder: column %r has a missing value among its categories; "
                        "impute it before encoding" % (col,)
                    )
            if col in self.categories and not _same_categories(self.categories[col], cats):
                raise ExportError("column %r is one-hot encoded twice with different categories"
                                  % (col,))
            self.categories[col] = cats
            new_pos += [None] * len(cats)
            new_enc += [True] * len(cats)
        g.steps.append({"op": "one_hot", "handle_unknown": hu})
        g.pos, g.encoded = new_pos, new_enc

    # A ColumnTransformer: one group per (transformer, columns).
    def column_transformer(self, ct):
        if self.groups is not None:
            raise ExportError("a ColumnTransformer after other preprocessing is not supported")
        if hasattr(ct, "feature_names_in_"):
            names = [str(n) for n in ct.feature_names_in_]
        else:
            names = self.names
        if len(names) != len(self.names):
            raise ExportError("ColumnTransformer was fitted on %d columns, expected %d"
                              % (len(names), len(self.names)))
        self.names = names
        groups = []
        index_map = getattr(ct, "_transformer_to_input_indices", None)
        for tname, trans, cols in ct.transformers_:
            if index_map is not None and tname in index_map:
                idx = list(index_map[tname])
            else:
                idx = _resolve_columns(cols, names)
            if len(idx) == 0:
                continue
            g = _Group([names[i] for i in idx])
            self.apply_to_group(g, trans)
            if not g.drop:
                groups.append(g)
        self.groups = groups

    # A transformer after the ColumnTransformer (or alone): applies to the whole vector.
    def whole(self, t):
        groups = self._whole()
        if len(groups) == 1:
            self.apply_to_group(groups[0], t)
            return
        name = _cls(t)
        if name not in ("StandardScaler", "MinMaxScaler", "SimpleImputer"):
            raise ExportError("%s after a ColumnTransformer is not supported (only column-wise "
                              "StandardScaler, MinMaxScaler, SimpleImputer)" % name)
        n = getattr(t, "n_features_in_", None)
        if n is not None and n != self.width():
            raise ExportError("%s was fitted on %d columns but the ColumnTransformer produces %d"
                              % (name, n, self.width()))
        off = 0
        for g in groups:
            self.apply_to_group(g, _slice_transformer(t, off, off + g.width))
            off += g.width

    def resolve(self):
        """Input schema and preprocess list, once every transformer was seen."""
        for step, i, col, v in self.pending_fill:
            if col in self.categories:
                s = _category_str(self.categories[col], v)
                if s is None:
                    raise ExportError("SimpleImputer fills column %r with %r, which is not one of "
                                      "its encoder's categories" % (col, v))
                step["fill"][i] = s
            else:
                try:
                    step["fill"][i] = _floats([v])[0]
                except (TypeError, ValueError):
                    raise ExportError("SimpleImputer fills numeric column %r with %r"
                                      % (col, v)) from None
        used = set()
        if self.groups is None:
            used = set(self.names)
        else:
            for g in self.groups:
                used.update(g.columns)
        inputs = []
        for n in self.names:
            if n not in used:
                continue
            if n in self.categories:
                inputs.append({"name": n, "type": "category",
                               "categories": [_cat_str(c) for c in self.categories[n]]})
            else:
                inputs.append({"name": n, "type": "float"})
        pre = None
        if self.groups is not None:
            pre = [{"columns": g.columns, "steps": g.steps} for g in self.groups]
        return inputs, pre


def _cat_str(c):
    if isinstance(c, bytes):
        return c.decode("utf-8")
    if isinstance(c, np.generic):
        c = c.item()
    return str(c)


def _category_str(cats, v):
    for c in cats:
        try:
            if c == v or _cat_str(c) == _cat_str(v):
                return _cat_str(c)
        except (TypeError, ValueError):
            continue
    return None


def _same_categories(a, b):
    return [_cat_str(c) for c in a] == [_cat_str(c) for c in b]


def _resolve_columns(cols, names):
    n = len(names)
    if callable(cols):
        raise ExportError("ColumnTransformer column selectors that are callables are not "
                          "supported after fitting")
    if isinstance(cols, slice):
        return list(range(n))[cols]
    if isinstance(cols, (str, int, np.integer)):
        cols = [cols]
    cols = list(cols)
    if cols and all(isinstance(c, (bool, np.bool_)) for c in cols):
        return [i for i, b in enumerate(cols) if b]
    out = []
    for c in cols:
        if isinstance(c, (int, np.integer)):
            out.append(int(c) % n)
        elif str(c) in names:
            out.append(names.index(str(c)))
        else:
            raise ExportError("ColumnTransformer column %r is not an input" % (c,))
    return out


class _Sliced:
    """A column slice [a, b) of a fitted column-wise transformer, duck-typed for apply_to_group."""


def _slice_transformer(t, a, b):
    s = _Sliced()
    name = _cls(t)
    s.__class__ = type(name, (_Sliced,), {})
    s.n_features_in_ = b - a
    if name == "StandardScaler":
        s.with_mean = t.with_mean
        s.mean_ = None if t.mean_ is None else np.asarray(t.mean_)[a:b]
        s.scale_ = None if t.scale_ is None else np.asarray(t.scale_)[a:b]
    elif name == "MinMaxScaler":
        s.scale_, s.min_ = np.asarray(t.scale_)[a:b], np.asarray(t.min_)[a:b]
        s.clip, s.feature_range = getattr(t, "clip", False), t.feature_range
    elif name == "SimpleImputer":
        s.missing_values, s.add_indicator = t.missing_values, getattr(t, "add_indicator", False)
        s.strategy, s.statistics_ = t.strategy, list(t.statistics_)[a:b]
    return s


# ---- estimators ---------------------------------------------------------------------------

LINEAR_REGRESSORS = {"LinearRegression", "Ridge", "RidgeCV", "Lasso", "LassoCV", "ElasticNet",
                     "ElasticNetCV"}


def _labels(est):
    return [_cat_str(c) for c in est.classes_]


def _linear_regressor(est):
    coef = np.atleast_2d(np.asarray(est.coef_, dtype=np.float64))
    intercept = np.broadcast_to(np.asarray(est.intercept_, dtype=np.float64), (coef.shape[0],))
    return ({"type": "linear", "link": "identity", "coef": [_floats(r) for r in coef],
             "intercept": _floats(intercept)},
            {"task": "regression", "n_outputs": int(coef.shape[0])})


def _logistic_is_ovr(est):
    k = len(est.classes_)
    mc = getattr(est, "multi_class", "auto")
    if mc in ("ovr", "warn"):
        return True
    if mc == "multinomial":
        return False
    # "auto" (and the default once multi_class is gone): liblinear or binary is one-vs-rest
    return k <= 2 or est.solver == "liblinear"


def _logistic(est):
    coef = np.atleast_2d(np.asarray(est.coef_, dtype=np.float64))
    intercept = np.broadcast_to(np.asarray(est.intercept_, dtype=np.float64), (coef.shape[0],))
    labels = _labels(est)
    ovr = _logistic_is_ovr(est)
    if len(labels) == 2:
        if ovr:
            link, rows, b = "logistic", coef, intercept
        else:  # scikit-learn applies softmax to [-z, z]
            link, rows, b = "softmax", np.vstack([-coef, coef]), np.concatenate([-intercept,
                                                                                   intercept])
    else:
        link, rows, b = ("ovr" if ovr else "softmax"), coef, intercept
    return ({"type": "linear", "link": link, "coef": [_floats(r) for r in rows],
             "intercept": _floats(b)},
            {"task": "classification", "labels": labels})


def _tree_dict(tree, leaf_fn):
    t = tree.tree_
    left, right = t.children_left, t.children_right
    feature, threshold = [], []
    value = []
    for i in range(t.node_count):
        if left[i] == -1:
            feature.append(-1)
            threshold.append(0.0)
            value.append(leaf_fn(t.value[i]))
        else:
            feature.append(int(t.feature[i]))
            threshold.append(float(t.threshold[i]))
            value.append(None)
    d = {"feature": feature, "threshold": _floats(threshold), "left": [int(v) for v in left],
         "right": [int(v) for v in right], "value": value}
    mgl = getattr(t, "missing_go_to_left", None)
    if mgl is not None:
        d["missing_left"] = [int(v) for v in mgl]
    return d


def _class_proba(v):
    v = np.asarray(v, dtype=np.float64)[0]
    s = v.sum()
    return _floats(v / (s if s != 0 else 1.0))


def _forest(est, trees, is_classifier):
    n_out = getattr(est, "n_outputs_", 1)
    if is_classifier:
        if n_out != 1:
            raise ExportError("%s with %d outputs (multi-output classification) is not supported"
                              % (_cls(est), n_out))
        labels = _labels(est)
        k = len(labels)
        dicts = [_tree_dict(t, _class_proba) for t in trees]
        output = {"task": "classification", "labels": labels}
    else:
        k = n_out
        dicts = [_tree_dict(t, lambda v: _floats(np.asarray(v)[:, 0])) for t in trees]
        output = {"task": "regression", "n_outputs": int(k)}
    return ({"type": "trees", "base": [0.0] * k, "leaf_width": k, "scale": 1.0 / len(trees),
             "transform": "identity", "trees": dicts}, output)


def _gradient_boosting(est, is_classifier, n_features):
    init = est.init_
    if not (isinstance(init, str) and init == "zero") and _cls(init) not in (
            "DummyClassifier", "DummyRegressor"):
        raise ExportError("%s with init estimator %s is not supported (only the default prior / "
                          "mean / quantile estimator or 'zero')" % (_cls(est), _cls(init)))
    base = np.asarray(est._raw_predict_init(np.zeros((1, n_features))), dtype=np.float64)[0]
    stages = est.estimators_
    k = stages.shape[1]
    lr = float(est.learning_rate)
    trees = []
    for stage in stages:
        for g, tree in enumerate(stage):
            d = _tree_dict(tree, lambda v: _floats([np.asarray(v).ravel()[0]]))
            d["group"] = g
            trees.append(d)
    doc = {"type": "trees", "leaf_width": 1, "scale": lr, "trees": trees}
    if not is_classifier:
        doc.update(base=_floats(base), transform="identity")
        return doc, {"task": "regression", "n_outputs": 1}
    labels = _labels(est)
    if k == 1:
        if est.loss == "exponential":  # P(class 1) = sigmoid(2 * raw)
            doc.update(base=_floats(2.0 * base), scale=2.0 * lr)
        elif est.loss in ("log_loss", "deviance"):
            doc.update(base=_floats(base))
        else:
            raise ExportError("%s with loss %r is not supported" % (_cls(est), est.loss))
        doc["transform"] = "sigmoid"
    else:
        doc.update(base=_floats(base), transform="softmax")
    return doc, {"task": "classification", "labels": labels}


def _mlp(est, is_classifier):
    layers = [{"weights": [_floats(r) for r in np.asarray(w)], "bias": _floats(b)}
              for w, b in zip(est.coefs_, est.intercepts_)]
    doc = {"type": "mlp", "activation": est.activation,
           "output_activation": est.out_activation_, "layers": layers}
    if not is_classifier:
        return doc, {"task": "regression", "n_outputs": int(est.n_outputs_)}
    lb = getattr(est, "_label_binarizer", None)
    if lb is not None and getattr(lb, "y_type_", "") == "multilabel-indicator":
        raise ExportError("MLPClassifier trained on multilabel targets is not supported")
    return doc, {"task": "classification", "labels": _labels(est)}


def _estimator(est, n_features):
    name = _cls(est)
    if name in LINEAR_REGRESSORS:
        return _linear_regressor(est)
    if name == "LogisticRegression":
        return _logistic(est)
    if name == "DecisionTreeClassifier":
        return _forest(est, [est], True)
    if name == "DecisionTreeRegressor":
        return _forest(est, [est], False)
    if name in ("RandomForestClassifier", "ExtraTreesClassifier"):
        return _forest(est, list(est.estimators_), True)
    if name in ("RandomForestRegressor", "ExtraTreesRegressor"):
        return _forest(est, list(est.estimators_), False)
    if name == "GradientBoostingClassifier":
        return _gradient_boosting(est, True, n_features)
    if name == "GradientBoostingRegressor":
        return _gradient_boosting(est, False, n_features)
    if name == "MLPClassifier":
        return _mlp(est, True)
    if name == "MLPRegressor":
        return _mlp(est, False)
    raise ExportError(
        "unsupported estimator %s: basalt exports linear/logistic regression, decision trees, "
        "random forests, extra trees, gradient boosting and MLPs" % name
    )


# ---- entry points -------------------------------------------------------------------------


def _flatten(model):
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline):
        out = []
        for _, step in model.steps:
            if step is None or (isinstance(step, str) and step == "passthrough"):
                continue
            out += _flatten(step)
        return out
    return [model]


def export(estimator, feature_names=None, categories=None):
    """Returns the basalt model document (a dict) for a fitted estimator or pipeline.

    feature_names: input names when the model was fitted without a DataFrame.
    categories: {input name: [category labels]} to rename the categories of a one-hot encoded
    input (same count and order as the encoder's categories_).
    Raises ExportError for anything the format cannot express.
    """
    steps = _flatten(estimator)
    if not steps:
        raise ExportError("the pipeline holds no estimator")
    final, transforms = steps[-1], steps[:-1]
    for s in steps:
        if isinstance(s, str):
            raise ExportError("unsupported pipeline step %r" % (s,))
    first = steps[0]
    names = getattr(first, "feature_names_in_", None)
    if names is not None:
        names = [str(n) for n in names]
    elif feature_names is not None:
        names = [str(n) for n in feature_names]
    else:
        n = getattr(first, "n_features_in_", None)
        if n is None:
            raise ExportError("%s is not fitted (no n_features_in_)" % _cls(first))
        names = ["x%d" % i for i in range(n)]
    if feature_names is not None and len(list(feature_names)) != len(names):
        raise ExportError("feature_names has %d names, the model takes %d"
                          % (len(list(feature_names)), len(names)))
    if len(set(names)) != len(names):
        raise ExportError("input names are not unique")

    prep = _Prep(names)
    for t in transforms:
        if _cls(t) == "ColumnTransformer":
            prep.column_transformer(t)
        else:
            prep.whole(t)
    width = prep.width()
    n_in = getattr(final, "n_features_in_", None)
    if n_in is not None and n_in != width:
        raise ExportError("%s expects %d inputs but the preprocessing produces %d"
                          % (_cls(final), n_in, width))
    est_doc, output = _estimator(final, width)
    inputs, pre = prep.resolve()
    if categories:
        byname = {i["name"]: i for i in inputs}
        for col, labels in categories.items():
            if col not in byname or byname[col]["type"] != "category":
                raise ExportError("categories given for %r, which is not a one-hot encoded input"
                                  % (col,))
            if len(labels) != len(byname[col]["categories"]):
                raise ExportError("categories for %r has %d labels, the encoder has %d"
                                  % (col, len(labels), len(byname[col]["categories"])))
            old = byname[col]["categories"]
            byname[col]["categories"] = [str(s) for s in labels]
            rename = dict(zip(old, byname[col]["categories"]))
            for g in pre or []:
                for st in g["steps"]:
                    if st["op"] == "impute":
                        for i, c in enumerate(g["columns"]):
                            if c == col and isinstance(st["fill"][i], str):
                                st["fill"][i] = rename[st["fill"][i]]
    if not inputs:
        raise ExportError("the model uses no input column")
    import sklearn

    doc = {"basalt_model": FORMAT_VERSION,
           "producer": "basalt tools/export_sklearn.py (scikit-learn %s, %s)"
                       % (sklearn.__version__, _cls(final)),
           "inputs": inputs}
    if pre is not None:
        doc["preprocess"] = pre
    doc["estimator"] = est_doc
    doc["output"] = output
    return doc


def to_json(estimator, feature_names=None, categories=None, indent=None):
    """export() serialised as JSON text (numbers round-trip exactly; NaN is never written)."""
    doc = export(estimator, feature_names=feature_names, categories=categories)
    try:
        return json.dumps(doc, indent=indent, allow_nan=False)
    except ValueError as e:
        raise ExportError("the model holds a non-finite number: %s" % e) from None


def _load(path):
    try:
        import joblib

        return joblib.load(path)
    except ImportError:
        with open(path, "rb") as f:
            return pickle_load(f)


def pickle_load(f):
    import pickle

    return pickle.load(f)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="export_sklearn.py",
        description="Export a fitted scikit-learn model (pickle or joblib) to basalt model JSON.")
    ap.add_argument("model", help="pickle/joblib file holding the fitted estimator or pipeline")
    ap.add_argument("-o", "--output", help="output file (default: stdout)")
    ap.add_argument("--feature-names", help="comma-separated input names (models fitted on arrays)")
    ap.add_argument("--indent", type=int, default=None)
    args = ap.parse_args(argv)
    try:
        model = _load(args.model)
    except Exception as e:  # unreadable file: not an export error
        print("export_sklearn: cannot load %s: %s" % (args.model, e), file=sys.stderr)
        return 1
    names = args.feature_names.split(",") if args.feature_names else None
    try:
        text = to_json(model, feature_names=names, indent=args.indent)
    except ExportError as e:
        print("export_sklearn: error: %s" % e, file=sys.stderr)
        return 2
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
            f.write("\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
