"""Trains the benchmark model: XGBoost binary:logistic, 100 trees of depth 6
on 30 features, and writes model.json plus rows.bin (float64, row-major) with
2000 clean rows followed by 2000 rows with ~10% missing values (NaN).
Usage: train.py OUTDIR"""
import os
import sys

import numpy as np
import xgboost as xgb

out = sys.argv[1]
rng = np.random.default_rng(42)
n, nf = 20000, 30
X = rng.normal(size=(n, nf))
w = rng.normal(size=nf)
logit = X @ w + 0.5 * np.sin(3 * X[:, 0]) * X[:, 1] + 0.3 * X[:, 2] ** 2
y = (logit + rng.normal(scale=0.5, size=n) > 0).astype(np.float64)
Xtrain = X.copy()
Xtrain[rng.random(X.shape) < 0.05] = np.nan  # so default directions are learned
booster = xgb.train(
    {"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "nthread": 2, "seed": 1},
    xgb.DMatrix(Xtrain, y),
    num_boost_round=100,
)
booster.save_model(os.path.join(out, "model.json"))
test = rng.normal(size=(2000, nf))
missing = test.copy()
missing[rng.random(missing.shape) < 0.1] = np.nan
np.concatenate([test, missing]).astype("<f8").tofile(os.path.join(out, "rows.bin"))
print(f"trained xgboost {xgb.__version__}: 100 trees, max_depth 6, {nf} features")
