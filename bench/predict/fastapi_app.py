"""The FastAPI peer for bench/predict: the same two models basalt serves, the way a
typical user writes it. The body is a pydantic model (`inputs: Dict[str, float]`,
so FastAPI validates the numbers, as basalt does); the row is built in the model's
feature order and scored with scikit-learn's Pipeline.predict_proba or XGBoost's own
predictor (Booster.inplace_predict, its fastest one-row path, one thread per worker
process). Handlers are `async def`: the work is a few hundred microseconds of CPU,
and a plain `def` handler would add a thread-pool hop per request.

Run: BENCH_MODELS=DIR uvicorn fastapi_app:app --workers 2 --no-access-log
DIR holds lr.pkl and xgb.json as written by bench/predict/train.py.
"""
import os
import pickle
from typing import Dict

import numpy as np
import xgboost as xgb
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

DIR = os.environ["BENCH_MODELS"]

with open(os.path.join(DIR, "lr.pkl"), "rb") as f:
    _lr = pickle.load(f)
LR, LR_FEATURES = _lr["model"], _lr["features"]
LR_LABELS = [str(c) for c in LR.classes_]

XGB = xgb.Booster()
XGB.load_model(os.path.join(DIR, "xgb.json"))
XGB.set_param({"nthread": 1})
XGB_FEATURES = XGB.feature_names or ["f%d" % i for i in range(XGB.num_features())]

app = FastAPI()


class PredictRequest(BaseModel):
    inputs: Dict[str, float]


def _row(inputs: Dict[str, float], features):
    try:
        return np.array([[inputs[f] for f in features]], dtype=np.float64)
    except KeyError as e:
        raise HTTPException(status_code=400, detail="missing feature %s" % e)


def _reply(model: str, p1: float):
    p = {"0": 1.0 - p1, "1": p1}
    return {"model": model, "predictions": [{"label": "1" if p1 > 0.5 else "0", "probabilities": p}]}


@app.get("/healthz")
async def healthz():
    return {"status": "ok"}


@app.post("/v1/models/lr/predict")
async def predict_lr(req: PredictRequest):
    proba = LR.predict_proba(_row(req.inputs, LR_FEATURES))[0]
    return {"model": "lr", "predictions": [
        {"label": LR_LABELS[int(np.argmax(proba))],
         "probabilities": {l: float(v) for l, v in zip(LR_LABELS, proba)}}]}


@app.post("/v1/models/xgb/predict")
async def predict_xgb(req: PredictRequest):
    p1 = float(XGB.inplace_predict(_row(req.inputs, XGB_FEATURES))[0])
    return _reply("xgb", p1)
