"""Built-in synthetic market data: a regime-switching price process with a drift knob.

Used by the demo and the tests: realistic enough that a model can learn something, fast (a few
thousand rows in milliseconds), and deterministic by seed.

The process, per bar t (one minute):
- a hidden regime (calm / turbulent) switches as a Markov chain; it sets the volatility and mean of
  returns;
- three exogenous signals (order flow, sentiment, carry) follow AR(1) processes;
- the next return is regime mean + regime volatility * (w(t) · signals + noise), where the weights
  w(t) rotate with t at a speed set by `drift` (0: a stationary relation; 1: the sign of the order
  flow effect flips over DRIFT_PERIOD bars).

The series is one infinite path per seed: row i is the same whatever window is asked for, because
each random stream comes from its own child of the seed. A model's k-th training run sees the window
starting at k * rows/4, so a retrain sees newer market data than its champion was trained on, and
with drift > 0 the champion's edge decays: the closed loop has something to fix.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .training_spec import SYNTHETIC_TARGETS as TARGETS

DRIFT_PERIOD = 4000  # bars over which drift=1 rotates the signal weights by half a turn
WARM_UP = 30  # bars needed by the rolling features
DEFAULT_ROWS = 4000
MAX_ROWS = 1_000_000
START = pd.Timestamp("2024-01-01T00:00:00Z")


def window_offset(epoch: int, rows: int) -> int:
    """First row of the window of the model's `epoch`-th training run."""
    return max(0, epoch) * max(1, rows // 4)


def generate(seed: int, drift: float = 0.0, rows: int = DEFAULT_ROWS, offset: int = 0) -> pd.DataFrame:
    """Rows [offset, offset + rows) of the series for `seed`.

    Columns: time, order_flow, sentiment, carry, ret_1, ret_5, vol_20, volume, regime_hint (features),
    direction (1 when the next bar's return is positive) and next_return (targets).
    """
    if not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"synthetic rows must be 1..{MAX_ROWS}, not {rows}")
    if not 0.0 <= drift <= 1.0:
        raise ValueError(f"synthetic drift must be in [0, 1], not {drift}")
    n = offset + rows + WARM_UP + 1
    regime_rng, signal_rng, noise_rng, volume_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(abs(int(seed))).spawn(4)
    )

    # Regimes: 2% chance per bar to switch. Drawn as uniforms so a longer path keeps its prefix.
    switches = regime_rng.random(n) < 0.02
    regime = np.cumsum(switches) % 2  # 0 calm, 1 turbulent
    vol = np.where(regime == 0, 0.004, 0.012)
    mean = np.where(regime == 0, 0.0002, -0.0003)

    phis = np.array([0.9, 0.7, 0.97])
    shocks = signal_rng.standard_normal((n, 3)) * np.sqrt(1 - phis**2)
    signals = np.empty((n, 3))
    signals[0] = shocks[0] / np.sqrt(1 - phis**2)
    for t in range(1, n):  # AR(1); a loop over a few thousand rows costs milliseconds
        signals[t] = phis * signals[t - 1] + shocks[t]

    t_abs = np.arange(n) - WARM_UP  # bar index of the series (0 = first row of window 0)
    theta = drift * np.pi * t_abs / DRIFT_PERIOD
    weights = np.stack([np.cos(theta), np.sin(theta), np.full(n, 0.3)], axis=1)
    edge = np.einsum("ij,ij->i", weights, signals)
    noise = noise_rng.standard_normal(n)
    # ret[t] is the return from bar t to t+1, driven by what was observable at t.
    ret = mean + vol * (0.9 * edge + noise)

    past = np.concatenate([[0.0], ret[:-1]])  # the return that ended at bar t
    frame = pd.DataFrame({
        "order_flow": signals[:, 0],
        "sentiment": signals[:, 1],
        "carry": signals[:, 2],
        "ret_1": past,
    })
    frame["ret_5"] = frame["ret_1"].rolling(5, min_periods=1).sum()
    frame["vol_20"] = frame["ret_1"].rolling(20, min_periods=2).std().fillna(0.0)
    frame["volume"] = np.exp(volume_rng.normal(0, 0.3, n) + 40 * np.abs(past))
    # A noisy, lagging view of the regime, as a desk's volatility model would give.
    frame["regime_hint"] = (frame["vol_20"] > 0.007).astype(float)
    frame["direction"] = (ret > 0).astype(int)
    frame["next_return"] = ret
    frame.insert(0, "time", START + pd.to_timedelta(t_abs, unit="min"))

    window = frame.iloc[WARM_UP + offset: WARM_UP + offset + rows].reset_index(drop=True)
    return window


def load(seed: int, drift: float, rows: int, epoch: int, target: str, *, regression: bool = False) -> pd.DataFrame:
    """The training frame for a model's `epoch`-th run, with exactly one target column.

    Keeping both targets would leak the answer: with target "direction", "next_return" as a feature
    predicts it perfectly. A target named otherwise (say "y") gets `next_return` when the model is a
    regression, else `direction`, under that name: RegisterModel now refuses such names (the target
    is optional instead), but models registered before keep training as they did.
    """
    rows = rows or DEFAULT_ROWS
    frame = generate(seed, drift, rows, window_offset(epoch, rows))
    if target in TARGETS:
        return frame.drop(columns=[c for c in TARGETS if c != target])
    source = "next_return" if regression else "direction"
    frame = frame.drop(columns=[c for c in TARGETS if c != source])
    return frame.rename(columns={source: target})
