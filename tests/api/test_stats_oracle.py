"""src/monitor/stats.c against its oracles: scipy 1.10, scikit-learn 1.2, statsmodels 0.13
and numpy, on data built here (fixed seeds).

Needs no server: it runs build/tests/stats_oracle (tests/unit/stats_oracle.c, built by
`make unit` / `make api` / `make test`), which reads one {"fn": ..., "args": [...]} JSON per
line and answers one JSON value per line. The driver is looked for next to $BASALT_BIN
(<dir of BASALT_BIN>/tests/stats_oracle), then in build/tests.

Tolerances: 1e-9 relative for values (CDFs, the incomplete beta, test statistics, metrics);
1e-9 relative for quantile functions too where the oracle is that accurate (the normal), and
1e-6 for the t quantile and for p-values (scipy's stdtrit is itself accurate to ~1e-11 only).
"""
import json
import math
import os
import subprocess

import numpy as np
import pytest
from scipy import special, stats
from sklearn import metrics
from statsmodels.stats import power as smpower
from statsmodels.stats import proportion as smprop

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def _driver_path():
    cands = []
    if os.environ.get("BASALT_BIN"):
        cands.append(os.path.join(os.path.dirname(os.path.abspath(os.environ["BASALT_BIN"])),
                                  "tests", "stats_oracle"))
    cands.append(os.path.join(ROOT, "build", "tests", "stats_oracle"))
    for c in cands:
        if os.access(c, os.X_OK):
            return c
    pytest.fail("stats_oracle driver not found (looked in %s): build it with "
                "`make build/tests/stats_oracle`" % ", ".join(cands), pytrace=False)


DRIVER = None


def call_many(calls):
    """Runs [(fn, args), ...] through the driver in one process; returns the answers."""
    global DRIVER
    if DRIVER is None:
        DRIVER = _driver_path()
    text = "".join(json.dumps({"fn": fn, "args": args}) + "\n" for fn, args in calls)
    cp = subprocess.run([DRIVER], input=text, capture_output=True, text=True, timeout=600)
    assert cp.returncode == 0, cp.stderr
    out = [json.loads(line) for line in cp.stdout.splitlines()]
    assert len(out) == len(calls)
    for (fn, args), o in zip(calls, out):
        assert not (isinstance(o, dict) and "error" in o), (fn, args, o)
    return out


def call(fn, *args):
    return call_many([(fn, list(args))])[0]


def check_close(got, want, rtol, atol=0.0, what=""):
    """got ≈ want: both NaN, equal infinities, or |got - want| <= atol + rtol |want|."""
    if want is None or (isinstance(want, float) and math.isnan(want)):
        assert got is None or math.isnan(got), "%s: got %r, want NaN" % (what, got)
        return
    assert got is not None and not math.isnan(got), "%s: got NaN, want %r" % (what, want)
    if math.isinf(want):
        assert got == want, "%s: got %r, want %r" % (what, got, want)
        return
    err = abs(got - want)
    assert err <= atol + rtol * abs(want), "%s: got %.17g, want %.17g (rel err %.3g)" % (
        what, got, want, err / abs(want) if want else err)


def f(x):
    return float(x)


# ---- distributions ------------------------------------------------------------------------

def test_norm_cdf_and_ppf():
    rng = np.random.default_rng(1)
    xs = np.concatenate([np.linspace(-37, 37, 741), rng.normal(0, 5, 500), [0.0, -1e-300]])
    got = call_many([("norm_cdf", [f(x)]) for x in xs])
    for x, g in zip(xs, got):
        check_close(g, f(stats.norm.cdf(x)), 1e-9, what="norm_cdf(%r)" % x)

    ps = np.concatenate([np.logspace(-300, -1, 600), rng.uniform(0, 1, 1000),
                         1 - np.logspace(-16, -1, 100), [0.5, 0.025, 0.975, 1e-10]])
    got = call_many([("norm_ppf", [f(p)]) for p in ps])
    for p, g in zip(ps, got):
        check_close(g, f(stats.norm.ppf(p)), 1e-9, what="norm_ppf(%r)" % p)
    # the ends and outside
    assert call("norm_ppf", 0.0) == -math.inf and call("norm_ppf", 1.0) == math.inf
    assert math.isnan(call("norm_ppf", -0.1)) and math.isnan(call("norm_ppf", 1.5))


DFS = [1, 2, 3, 4, 5, 0.3, 1.5, 2.5, 7.3, 30, 100.5, 1e3, 12345.6, 1e5, 1e6]


def _t_points(rng):
    return np.concatenate([np.linspace(-50, 50, 101), rng.standard_cauchy(60),
                           [-1e6, -1e3, -1e-8, 1e-8, 1e3, 1e6, 0.0]])


def test_t_cdf():
    rng = np.random.default_rng(2)
    dfs = DFS + list(np.exp(rng.uniform(math.log(0.2), math.log(1e6), 15)))
    calls, want = [], []
    for df in dfs:
        for t in _t_points(rng):
            calls.append(("t_cdf", [f(t), f(df)]))
            want.append(f(stats.t.cdf(t, df)))
    got = call_many(calls)
    for (fn, (t, df)), g, w in zip(calls, got, want):
        if w < 1e-300:
            continue  # underflow region: scipy returns 0 or denormals
        check_close(g, w, 1e-9, what="t_cdf(%r, df=%r)" % (t, df))


def test_t_closed_forms():
    ts = [-1e5, -30.0, -2.5, -1.0, -0.3, 0.0, 0.7, 1.0, 4.0, 1e4]
    got = call_many([("t_cdf", [t, 1]) for t in ts] + [("t_cdf", [t, 2]) for t in ts])
    for t, g in zip(ts, got[:len(ts)]):
        # Cauchy; for large negative t use the tail form atan(1/|t|)/π
        w = 0.5 + math.atan(t) / math.pi if t > -1 else math.atan(-1 / t) / math.pi
        check_close(g, w, 1e-12, what="t_cdf(%r, 1)" % t)
    for t, g in zip(ts, got[len(ts):]):
        w = 0.5 + t / (2 * math.sqrt(2 + t * t)) if t > -1 else \
            1 / (math.sqrt(2 + t * t) * (math.sqrt(2 + t * t) - t))
        check_close(g, w, 1e-12, what="t_cdf(%r, 2)" % t)


def test_t_ppf():
    rng = np.random.default_rng(3)
    dfs = DFS + list(np.exp(rng.uniform(math.log(0.2), math.log(1e6), 10)))
    ps = np.concatenate([np.logspace(-12, -1, 23), rng.uniform(0, 1, 40),
                         1 - np.logspace(-12, -1, 12), [0.5, 0.025, 0.975]])
    calls, want = [], []
    for df in dfs:
        for p in ps:
            calls.append(("t_ppf", [f(p), f(df)]))
            want.append(f(stats.t.ppf(p, df)))
    got = call_many(calls)
    for (fn, (p, df)), g, w in zip(calls, got, want):
        check_close(g, w, 1e-6, 1e-12, what="t_ppf(%r, df=%r)" % (p, df))
    # and ppf∘cdf round trips on our own side
    back = call_many([("t_cdf", [g, df]) for (fn, (p, df)), g in zip(calls, got)])
    for (fn, (p, df)), b in zip(calls, back):
        check_close(b, p, 1e-9, what="t_cdf(t_ppf(%r), df=%r)" % (p, df))


def test_beta_inc():
    rng = np.random.default_rng(4)
    a = np.exp(rng.uniform(math.log(0.05), math.log(1e4), 1500))
    b = np.exp(rng.uniform(math.log(0.05), math.log(1e4), 1500))
    # x around the mean a/(a+b), where the function is neither 0 nor 1, and anywhere
    m = a / (a + b)
    x = np.clip(m + rng.normal(0, 1, 1500) * np.sqrt(m * (1 - m) / (a + b + 1)), 0, 1)
    x[::3] = rng.uniform(0, 1, len(x[::3]))
    calls = [("beta_inc", [f(ai), f(bi), f(xi)]) for ai, bi, xi in zip(a, b, x)]
    calls += [("beta_inc", [2.0, 3.0, 0.0]), ("beta_inc", [2.0, 3.0, 1.0]),
              ("beta_inc", [0.5, 0.5, 0.5])]
    got = call_many(calls)
    checked = 0
    for (fn, (ai, bi, xi)), g in zip(calls, got):
        w = f(special.betainc(ai, bi, xi))
        if w < 1e-290:
            continue
        check_close(g, w, 1e-9, what="beta_inc(%r, %r, %r)" % (ai, bi, xi))
        checked += 1
    assert checked > 1000
    assert math.isnan(call("beta_inc", -1, 2, 0.5)) and math.isnan(call("beta_inc", 1, 2, 1.5))


def test_beta_inc_and_t_cdf_large_a_against_mpmath():
    """Large a with x near 1 (the t CDF at df >= 1e6), where scipy's cephes incbet loses
    digits (1e-9..1e-7 here) and stats.c switches to the asymptotic expansion: mpmath at 40
    digits through the complement 1 - I_{1-x}(b, a), whose series it sums exactly."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40
    rng = np.random.default_rng(14)
    cases = [(7781180.463865256, 5.079876376878721, 0.9999998521713602),
             (3760543.252910262, 6.058442882319638, 0.999998090103304),
             (874503098.5291992, 4.805249005773415, 0.9999999926408949)]
    for _ in range(20):
        a = float(np.exp(rng.uniform(math.log(200), math.log(1e9))))
        b = float(np.exp(rng.uniform(math.log(0.05), math.log(15))))
        cases.append((a, b, float(1 - b / a * rng.uniform(0.2, 6))))
    got = call_many([("beta_inc", list(c)) for c in cases])
    for (a, b, x), g in zip(cases, got):
        w = 1 - mp.betainc(mp.mpf(b), mp.mpf(a), 0, 1 - mp.mpf(x), regularized=True)
        check_close(g, float(w), 1e-11, 0, "beta_inc(%r, %r, %r)" % (a, b, x))
    tcases = [(t, df) for df in (1e6, 1e7, 1e8, 1e10) for t in (-10, -7, -5, -3, -1.7, -1, -0.3)]
    got = call_many([("t_cdf", [t, df]) for t, df in tcases])
    for (t, df), g in zip(tcases, got):
        t_, df_ = mp.mpf(t), mp.mpf(df)
        w = (1 - mp.betainc(mp.mpf(0.5), df_ / 2, 0, t_ * t_ / (df_ + t_ * t_),
                            regularized=True)) / 2
        check_close(g, float(w), 1e-11, 0, "t_cdf(%r, df=%r)" % (t, df))


# ---- tests --------------------------------------------------------------------------------

def test_two_proportion_ztest():
    rng = np.random.default_rng(5)
    cases = []
    for _ in range(300):
        na, nb = (int(v) for v in rng.integers(5, 200000, 2))
        pa, pb = rng.uniform(0.001, 0.999, 2)
        xa, xb = int(rng.binomial(na, pa)), int(rng.binomial(nb, pb))
        cases.append((xa, na, xb, nb, float(rng.choice([0.05, 0.01, 0.1]))))
    cases += [(0, 100, 1, 100, 0.05), (50, 100, 50, 100, 0.05), (3, 1000, 20, 1000, 0.05)]
    got = call_many([("ztest", list(c)) for c in cases])
    for (xa, na, xb, nb, alpha), g in zip(cases, got):
        z, p = smprop.proportions_ztest([xb, xa], [nb, na])
        lo, hi = smprop.confint_proportions_2indep(xb, nb, xa, na, method="wald", alpha=alpha)
        what = "ztest(%d/%d vs %d/%d)" % (xb, nb, xa, na)
        check_close(g["diff"], xb / nb - xa / na, 1e-12, 1e-15, what)
        check_close(g["statistic"], f(z), 1e-9, 1e-12, what + " z")
        check_close(g["p_value"], f(p), 1e-9 if p > 1e-100 else 1e-6, 1e-300, what + " p")
        check_close(g["ci_low"], f(lo), 1e-9, 1e-12, what + " ci_low")
        check_close(g["ci_high"], f(hi), 1e-9, 1e-12, what + " ci_high")
        assert g["df"] is None or math.isnan(g["df"])
    # no variance (all or none succeed on both sides) and empty sides: NaN
    for c in [(0, 10, 0, 10, 0.05), (10, 10, 5, 5, 0.05)]:
        g = call("ztest", *c)
        assert math.isnan(g["statistic"]) and math.isnan(g["p_value"])
    g = call("ztest", 0, 0, 1, 10, 0.05)
    assert math.isnan(g["diff"])


def test_welch_ttest_and_mean_var():
    rng = np.random.default_rng(6)
    calls, samples = [], []
    for i in range(200):
        na, nb = (int(v) for v in rng.integers(2, 3000, 2))
        a = rng.normal(rng.uniform(-5, 5), rng.uniform(0.1, 10), na)
        b = rng.normal(rng.uniform(-5, 5), rng.uniform(0.1, 10), nb)
        if i % 10 == 0:
            b = a.mean() + (b - b.mean()) * 0.5 + rng.normal(0, 1e-3)  # p near 1
        alpha = float(rng.choice([0.05, 0.01]))
        samples.append((a, b, alpha))
        calls.append(("mean_var", [a.tolist()]))
        calls.append(("mean_var", [b.tolist()]))
    mv = call_many(calls)
    for i, (a, b, _) in enumerate(samples):
        for x, g in ((a, mv[2 * i]), (b, mv[2 * i + 1])):
            check_close(g["mean"], f(x.mean()), 1e-9, 1e-12, "mean")
            check_close(g["var"], f(x.var(ddof=1)), 1e-9, 0, "var")
    calls = []
    for a, b, alpha in samples:
        calls.append(("welch", [f(a.mean()), f(a.var(ddof=1)), len(a),
                                f(b.mean()), f(b.var(ddof=1)), len(b), alpha]))
    got = call_many(calls)
    for (a, b, alpha), g in zip(samples, got):
        r = stats.ttest_ind(b, a, equal_var=False)
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
        se = math.sqrt(va + vb)
        diff = b.mean() - a.mean()
        q = stats.t.ppf(1 - alpha / 2, df)
        check_close(g["statistic"], f(r.statistic), 1e-9, 0, "welch t")
        check_close(g["df"], f(df), 1e-9, 0, "welch df")
        check_close(g["p_value"], f(r.pvalue), 1e-9 if r.pvalue > 1e-100 else 1e-6, 1e-300,
                    "welch p")
        check_close(g["diff"], f(diff), 1e-12, 1e-15, "welch diff")
        # the interval's half width, with scipy's t quantile (accurate to ~1e-11)
        check_close(g["ci_low"], f(diff - q * se), 1e-9, 1e-9 * q * se, "welch ci_low")
        check_close(g["ci_high"], f(diff + q * se), 1e-9, 1e-9 * q * se, "welch ci_high")
    g = call("welch", 1.0, 1.0, 1, 2.0, 1.0, 10, 0.05)
    assert math.isnan(g["statistic"])  # a side with one row has no variance
    g = call("welch", 1.0, 0.0, 5, 2.0, 0.0, 10, 0.05)
    assert math.isnan(g["statistic"])  # no variance at all


def test_sample_sizes():
    rng = np.random.default_rng(7)
    nip = smpower.NormalIndPower()
    mean_cases = [(float(rng.uniform(0.1, 10)), 0.0, float(rng.choice([0.05, 0.01, 0.1])),
                   float(rng.choice([0.8, 0.9, 0.95]))) for _ in range(60)]
    mean_cases = [(sd, sd * float(rng.uniform(0.02, 1.5)), a, pw) for sd, _, a, pw in mean_cases]
    prop_cases = []
    for _ in range(80):
        p = float(rng.uniform(0.01, 0.9))
        mde = float(rng.uniform(-p + 0.005, min(0.3, 0.995 - p)))
        if abs(mde) < 0.002:
            mde = 0.01
        prop_cases.append((p, mde, float(rng.choice([0.05, 0.01])), float(rng.choice([0.8, 0.9]))))
    got = call_many([("samples_mean", list(c)) for c in mean_cases] +
                    [("samples_proportion", list(c)) for c in prop_cases])
    for (sd, mde, alpha, pw), g in zip(mean_cases, got[:len(mean_cases)]):
        # documented formula: n = 2 ((z_{1-α/2} + z_{power}) sd / mde)²
        n = 2 * ((stats.norm.isf(alpha / 2) + stats.norm.ppf(pw)) * sd / mde) ** 2
        # statsmodels solves the two-tailed power equation; the far tail is negligible
        n_sm = nip.solve_power(effect_size=mde / sd, alpha=alpha, power=pw, ratio=1)
        n_zt = smpower.zt_ind_solve_power(effect_size=mde / sd, alpha=alpha, power=pw)
        assert abs(n_sm - n) <= 1e-4 * n and abs(n_zt - n) <= 1e-4 * n, (n, n_sm, n_zt)
        if abs(n - round(n)) > 1e-6:
            assert g == math.ceil(n), (sd, mde, alpha, pw, g, n)
        if abs(n_sm - round(n_sm)) > 1e-3:
            assert g == math.ceil(n_sm), (sd, mde, alpha, pw, g, n_sm)
    for (p, mde, alpha, pw), g in zip(prop_cases, got[len(mean_cases):]):
        # documented formula (pooled variance under H0, unpooled under H1, one tail):
        n = smprop.samplesize_proportions_2indep_onetail(mde, p, pw, alpha=alpha)
        p2, pbar = p + mde, p + mde / 2
        n_doc = ((stats.norm.isf(alpha / 2) * math.sqrt(2 * pbar * (1 - pbar)) +
                  stats.norm.ppf(pw) * math.sqrt(p * (1 - p) + p2 * (1 - p2))) / mde) ** 2
        assert abs(n - n_doc) <= 1e-9 * n_doc
        if abs(n - round(n)) > 1e-6:
            assert g == math.ceil(n), (p, mde, alpha, pw, g, n)
        # and that many per group reach the power (statsmodels' two-tailed power function)
        achieved = smprop.power_proportions_2indep(mde, p, g, alpha=alpha).power
        assert achieved >= pw - 1e-9, (p, mde, g, achieved)
        below = smprop.power_proportions_2indep(mde, p, g - 1, alpha=alpha).power
        assert below < pw + 1e-5, (p, mde, g, below)
    bad = call_many([("samples_mean", [0, 1, 0.05, 0.8]), ("samples_mean", [1, 0, 0.05, 0.8]),
                     ("samples_proportion", [0.9, 0.2, 0.05, 0.8]),
                     ("samples_proportion", [0.5, 0.1, 0, 0.8])])
    assert bad == [-1, -1, -1, -1]


# ---- metrics ------------------------------------------------------------------------------

def test_quantile():
    rng = np.random.default_rng(8)
    calls, want = [], []
    for i in range(200):
        n = int(rng.integers(1, 300))
        x = rng.normal(0, 10, n) if i % 2 else rng.integers(0, 5, n).astype(float)
        for q in [0.0, 1.0, 0.5, 0.99, 0.01, float(rng.uniform())]:
            calls.append(("quantile", [x.tolist(), q]))
            want.append(f(np.quantile(x, q)))
    got = call_many(calls)
    for c, g, w in zip(calls, got, want):
        check_close(g, w, 1e-12, 1e-300, "quantile q=%r" % c[1][1])
    assert math.isnan(call("quantile", [], 0.5))


def test_roc_auc_with_ties():
    rng = np.random.default_rng(9)
    calls, want = [], []
    for i in range(150):
        n = int(rng.integers(2, 2000))
        y = rng.integers(0, 2, n)
        y[0], y[1] = 0, 1
        s = rng.normal(0, 1, n) + y * rng.uniform(0, 2)
        if i % 3 == 0:
            s = np.round(s, 1)  # many ties
        if i % 3 == 1:
            s = np.round(s)  # very many ties
        calls.append(("roc_auc", [s.tolist(), y.tolist()]))
        want.append(f(metrics.roc_auc_score(y, s)))
    got = call_many(calls)
    for g, w in zip(got, want):
        check_close(g, w, 1e-9, 0, "roc_auc")
    assert math.isnan(call("roc_auc", [0.1, 0.2], [1, 1]))


def test_log_loss():
    rng = np.random.default_rng(10)
    calls, want = [], []
    for i in range(120):
        k = 2 if i % 2 else int(rng.integers(3, 8))
        n = int(rng.integers(1, 500))
        y = rng.integers(0, k, n)
        p = rng.dirichlet(np.ones(k), n)
        if i % 4 == 1:
            p = p * rng.uniform(0.5, 1.5, (n, 1))  # rows not summing to 1
        if i % 4 == 3:
            p[rng.uniform(size=(n, k)) < 0.2] = 0.0  # zeros (clipped to eps)
            p[np.arange(n), y] = np.where(rng.uniform(size=n) < 0.1, 0.0, p[np.arange(n), y])
        eps = 1e-15 if i % 3 else float(np.finfo(float).eps)
        calls.append(("log_loss", [p.tolist(), y.tolist(), eps]))
        want.append(f(metrics.log_loss(y, p, eps=eps, labels=list(range(k)))))
    got = call_many(calls)
    for g, w in zip(got, want):
        check_close(g, w, 1e-9, 0, "log_loss")


def test_classification():
    rng = np.random.default_rng(11)
    calls, want = [], []
    for i in range(150):
        k = int(rng.integers(2, 9))
        n = int(rng.integers(1, 400))
        y = rng.integers(0, k, n)
        pred = np.where(rng.uniform(size=n) < 0.6, y, rng.integers(0, k, n))
        if i % 5 == 0 and k > 3:
            y[y == k - 1] = 0  # a class absent from y (maybe also from pred)
            pred[pred == k - 1] = 1
        if i % 7 == 0:
            pred[:] = 0  # nothing predicted for the other classes: zero_division
        acc = metrics.accuracy_score(y, pred)
        pr, rc, f1, _ = metrics.precision_recall_fscore_support(y, pred, average="macro",
                                                                zero_division=0)
        calls.append(("classification", [y.tolist(), pred.tolist(), k, -1]))
        want.append((acc, pr, rc, f1))
        # binary metrics of one class: k == 2 with average="binary", else labels=[pos]
        pos = int(rng.integers(0, k))
        if k == 2:
            pr, rc, f1, _ = metrics.precision_recall_fscore_support(
                y, pred, average="binary", pos_label=pos, zero_division=0)
        else:
            pr, rc, f1, _ = metrics.precision_recall_fscore_support(
                y, pred, labels=[pos], average="macro", zero_division=0)
        calls.append(("classification", [y.tolist(), pred.tolist(), k, pos]))
        want.append((acc, pr, rc, f1))
    got = call_many(calls)
    for c, g, w in zip(calls, got, want):
        for name, v in zip(("accuracy", "precision", "recall", "f1"), w):
            check_close(g[name], f(v), 1e-9, 1e-15, "%s (k=%d pos=%d)" % (name, c[1][2], c[1][3]))


def test_regression():
    rng = np.random.default_rng(12)
    calls, want = [], []
    for i in range(100):
        n = int(rng.integers(2, 1000))
        y = rng.normal(rng.uniform(-100, 100), rng.uniform(0.1, 50), n)
        pred = y + rng.normal(0, rng.uniform(0.01, 60), n)
        calls.append(("regression", [y.tolist(), pred.tolist()]))
        want.append((metrics.mean_absolute_error(y, pred),
                     math.sqrt(metrics.mean_squared_error(y, pred)),
                     metrics.r2_score(y, pred)))
    got = call_many(calls)
    for g, (mae, rmse, r2) in zip(got, want):
        check_close(g["mae"], f(mae), 1e-9, 0, "mae")
        check_close(g["rmse"], f(rmse), 1e-9, 0, "rmse")
        check_close(g["r2"], f(r2), 1e-9, 1e-12, "r2")
    # a constant y: sklearn says 1.0 (perfect) or 0.0; stats.h documents NaN
    g = call("regression", [3.0, 3.0, 3.0], [3.0, 2.0, 4.0])
    assert math.isnan(g["r2"]) and g["mae"] == pytest.approx(2 / 3)


def psi_numpy(ref, cur, bins, eps):
    """The definition documented in stats.h."""
    edges = np.quantile(ref, np.arange(1, bins) / bins)
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=bins) / len(ref)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=bins) / len(cur)
    r, c = np.maximum(r, eps), np.maximum(c, eps)
    return float(np.sum((c - r) * np.log(c / r)))


def test_psi():
    rng = np.random.default_rng(13)
    calls, want = [], []
    for i in range(100):
        ref = rng.normal(0, 1, int(rng.integers(10, 3000)))
        cur = rng.normal(rng.uniform(-1, 1), rng.uniform(0.5, 2), int(rng.integers(1, 3000)))
        if i % 3 == 0:  # discrete values: edges coincide, values sit on edges
            ref, cur = np.round(ref * 2), np.round(cur * 2)
        bins = 10 if i % 2 else int(rng.integers(2, 20))
        eps = 1e-4 if i % 4 else 1e-6
        calls.append(("psi", [ref.tolist(), cur.tolist(), bins, eps]))
        want.append(psi_numpy(ref, cur, bins, eps))
    got = call_many(calls)
    for g, w in zip(got, want):
        check_close(g, w, 1e-9, 1e-12, "psi")
    x = rng.normal(0, 1, 1000).tolist()
    assert call("psi", x, x, 10, 1e-4) == 0.0
    assert math.isnan(call("psi", [], x, 10, 1e-4))


# ---- sampling -----------------------------------------------------------------------------

@pytest.mark.parametrize("a,b", [(1.0, 1.0), (2.0, 5.0), (0.3, 0.7), (0.05, 3.0), (50.0, 20.0),
                                 (1000.0, 1.0)])
def test_beta_sample_distribution(a, b):
    # Deterministic (fixed seed): a Kolmogorov–Smirnov test against scipy's Beta CDF.
    draws = call("beta_sample", 12345, a, b, 20000)
    assert all(0.0 <= d <= 1.0 for d in draws)
    res = stats.kstest(draws, stats.beta(a, b).cdf)
    assert res.pvalue > 1e-4, (a, b, res)
    # and the same seed gives the same draws
    assert call("beta_sample", 12345, a, b, 5) == draws[:5]
