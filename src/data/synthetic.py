"""A synthetic twin of the Kaggle credit-card data, built from per-column statistics of the real file.

Why not ``make_classification``: the real problem has heavy-tailed legitimate traffic, frauds that are strongly
correlated across V columns (V17-V18 r=0.97 among frauds), a minority of frauds that look legitimate, an Amount
tied to V2/V5/V7, and a night-time peak of fraud. Those shape how much tree depth and leaf size matter, so the
twin reproduces them (statistics in ``src/stats/``, computed from the real file).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd
from scipy import special

from src.data.schema import FEATURES, TARGET, V_COLUMNS

# Share of frauds drawn close to the legitimate traffic: the hard cases that keep average precision
# away from 1 (calibrated so a default RandomForest scores an AP in the real data's range).
CAMOUFLAGED_SHARE = 0.3
# Student-t degrees of freedom for legitimate traffic: the real V columns are heavy-tailed.
LEGIT_TAIL_DF = 4.0
# Frauds come in this many campaigns with distinct centres: a shallow tree cannot carve them all out.
N_CAMPAIGNS = 24
# Amount is tied to V2, V7, V5 among legitimate transactions (real correlations -0.53, 0.40, -0.39).
AMOUNT_LOADINGS = {"V2": -0.53, "V7": 0.40, "V5": -0.39}
# The most common real Amount is 1.00 (about 4.8 % of legitimate rows).
AMOUNT_ONE_SHARE = 0.048


@lru_cache(maxsize=1)
def _stats() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    folder = resources.files("src.data") / "stats"
    read = lambda name: pd.read_csv(folder / name)  # noqa: E731
    columns = read("creditcard_column_stats.csv").set_index("col")
    amounts = read("creditcard_amount_quantiles.csv")
    hours = read("creditcard_time_hour_of_day.csv")
    return columns, amounts, hours


def _quantile_sample(quantiles: np.ndarray, values: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.round(np.interp(u, quantiles, values), 2)


def generate(n_rows: int, fraud_rate: float, seed: int, sample_seed: int | None = None) -> pd.DataFrame:
    """Rows in the real file's schema (Time, V1..V28, Amount, Class), sorted by Time like the real file.

    ``sample_seed``: draw the rows afresh from the population that ``seed`` alone fixes (its fraud campaigns), so that
    samples with different sample seeds are independent draws from one population (the gate's benchmark); without
    it, one stream draws both, as it always has."""
    columns, amounts, hours = _stats()
    rng = np.random.default_rng(seed) if sample_seed is None else np.random.default_rng([seed, sample_seed])
    population = rng if sample_seed is None else np.random.default_rng(seed)
    n_fraud = max(2, int(round(n_rows * fraud_rate)))
    n_legit = n_rows - n_fraud

    mu_legit = columns.loc[V_COLUMNS, "mean_nonfraud"].to_numpy()
    sd_legit = columns.loc[V_COLUMNS, "std_nonfraud"].to_numpy()
    mu_fraud = columns.loc[V_COLUMNS, "mean_fraud"].to_numpy()
    sd_fraud = columns.loc[V_COLUMNS, "std_fraud"].to_numpy()

    # Legitimate: independent, unit-variance Student-t noise (V's are uncorrelated among non-frauds).
    t_scale = np.sqrt(LEGIT_TAIL_DF / (LEGIT_TAIL_DF - 2.0))
    z_legit = rng.standard_t(LEGIT_TAIL_DF, size=(n_legit, len(V_COLUMNS))) / t_scale
    v_legit = mu_legit + sd_legit * z_legit

    # Frauds come in campaigns: each has its own centre (the legit-to-fraud shift, scaled and perturbed per
    # column) and a tight, strongly correlated spread; a share of frauds is camouflaged near legitimate traffic.
    shift = mu_fraud - mu_legit
    campaign = rng.choice(N_CAMPAIGNS, size=n_fraud, p=population.dirichlet(np.full(N_CAMPAIGNS, 2.0)))
    centre_scale = population.gamma(2.0, 0.5, size=(N_CAMPAIGNS, 1)) * population.normal(
        1.0, 0.6, size=(N_CAMPAIGNS, len(V_COLUMNS)))
    centres = mu_legit + centre_scale * shift
    spread = np.sqrt(np.maximum(sd_fraud**2 - shift**2 * centre_scale.var(axis=0), (0.5 * sd_legit) ** 2))
    loading = 0.9 * np.sign(shift) * np.minimum(1.0, np.abs(shift) / (np.abs(shift).max() / 2))
    latent = rng.standard_normal((n_fraud, 1))
    noise = rng.standard_normal((n_fraud, len(V_COLUMNS)))
    v_fraud = centres[campaign] + 0.5 * spread * (loading * latent + np.sqrt(1.0 - loading**2) * noise)
    # Camouflaged frauds carry legitimate-looking noise around a small shift.
    camouflaged = rng.random(n_fraud) < CAMOUFLAGED_SHARE
    n_camo = int(camouflaged.sum())
    z_camo = rng.standard_t(LEGIT_TAIL_DF, size=(n_camo, len(V_COLUMNS))) / t_scale
    v_fraud[camouflaged] = mu_legit + rng.uniform(0.0, 0.6, size=(n_camo, 1)) * shift + sd_legit * z_camo

    # Amount: class-specific quantile functions; a Gaussian copula ties legitimate amounts to V2, V7, V5.
    q = amounts["quantile"].to_numpy()
    idx = {c: V_COLUMNS.index(c) for c in AMOUNT_LOADINGS}
    w = np.array(list(AMOUNT_LOADINGS.values()))
    drivers = np.column_stack([z_legit[:, idx[c]] for c in AMOUNT_LOADINGS])
    a = drivers @ w + np.sqrt(1.0 - (w**2).sum()) * rng.standard_normal(n_legit)
    amount_legit = _quantile_sample(q, amounts["nonfraud"].to_numpy(), special.ndtr(a))
    amount_legit[rng.random(n_legit) < AMOUNT_ONE_SHARE] = 1.0
    amount_fraud = _quantile_sample(q, amounts["fraud"].to_numpy(), rng.random(n_fraud))

    # Time: seconds over two days, hour of day drawn from the real per-class hourly counts.
    def times(counts: np.ndarray, n: int) -> np.ndarray:
        hour = rng.choice(len(counts), size=n, p=counts / counts.sum())
        day = rng.integers(0, 2, size=n)
        return np.minimum(day * 86_400 + hour * 3_600 + rng.integers(0, 3_600, size=n), 172_792)

    time_legit = times(hours["n_nonfraud"].to_numpy(float), n_legit)
    time_fraud = times(hours["n_fraud"].to_numpy(float), n_fraud)

    frame = pd.DataFrame(
        np.vstack(
            [
                np.column_stack([time_legit, v_legit, amount_legit]),
                np.column_stack([time_fraud, v_fraud, amount_fraud]),
            ]
        ),
        columns=FEATURES,
    )
    frame[TARGET] = np.concatenate([np.zeros(n_legit, np.int64), np.ones(n_fraud, np.int64)])
    order = np.lexsort((rng.random(n_rows), frame["Time"].to_numpy()))
    return frame.iloc[order].reset_index(drop=True)
