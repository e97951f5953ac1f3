"""Trains the two benchmark models and writes everything both servers need.
Usage: train.py OUTDIR

  lr.pkl            scikit-learn Pipeline(StandardScaler, LogisticRegression) on
                    breast_cancer (30 features, named with '_' for ' '); FastAPI loads it
  lr.basalt.json    the same pipeline exported by tools/export_sklearn.py; basalt loads it
  xgb.json          XGBoost binary:logistic, 100 trees, max_depth 6, 30 features
                    (f0..f29), Booster.save_model JSON; both servers load this file
  lr.body.json, xgb.body.json   the one-row predict bodies {"inputs": {...}}
"""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import xgboost as xgb
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

out = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
root = os.path.join(here, "..", "..")

# ---- logistic regression ------------------------------------------------------------------
data = load_breast_cancer()
names = [n.replace(" ", "_") for n in data.feature_names]
lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
lr.fit(data.data, data.target)
with open(os.path.join(out, "lr.pkl"), "wb") as f:
    pickle.dump({"model": lr, "features": names}, f)
with open(os.path.join(out, "lr.sk.pkl"), "wb") as f:
    pickle.dump(lr, f)
subprocess.run([sys.executable, os.path.join(root, "tools", "export_sklearn.py"),
                os.path.join(out, "lr.sk.pkl"), "--feature-names", ",".join(names),
                "-o", os.path.join(out, "lr.basalt.json")], check=True)
row = data.data[7]  # a row whose probability is not saturated
with open(os.path.join(out, "lr.body.json"), "w") as f:
    json.dump({"inputs": {n: float(v) for n, v in zip(names, row)}}, f, separators=(",", ":"))

# ---- XGBoost (same data recipe as bench/trees) ---------------------------------------------
rng = np.random.default_rng(42)
n, nf = 20000, 30
X = rng.normal(size=(n, nf))
w = rng.normal(size=nf)
logit = X @ w + 0.5 * np.sin(3 * X[:, 0]) * X[:, 1] + 0.3 * X[:, 2] ** 2
y = (logit + rng.normal(scale=0.5, size=n) > 0).astype(np.float64)
booster = xgb.train(
    {"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "nthread": 2, "seed": 1},
    xgb.DMatrix(X, y), num_boost_round=100)
booster.save_model(os.path.join(out, "xgb.json"))
xrow = np.round(rng.normal(size=nf) * 0.3, 6)  # a row near the boundary, short decimals
with open(os.path.join(out, "xgb.body.json"), "w") as f:
    json.dump({"inputs": {"f%d" % i: float(v) for i, v in enumerate(xrow)}}, f, separators=(",", ":"))

p_lr = lr.predict_proba(row.reshape(1, -1))[0, 1]
p_xgb = booster.inplace_predict(xrow.reshape(1, -1))[0]
print("bench/predict: trained logistic regression (breast_cancer, 30 features, p=%.4f) and "
      "xgboost %s (100 trees, max_depth 6, 30 features, p=%.4f)" % (p_lr, xgb.__version__, p_xgb))
