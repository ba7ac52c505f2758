"""Seed 002's relu regression: 2-3-2-1, relu hidden layers, identity output.

The tutorial (Lourenzutti, "Feed Forward Neural Network") walks one sample of
a 2-3-2-1 relu network with an identity output and the cost
J = 1/(2n) sum (y_hat - y)^2 (``quadratic`` here), then trains by gradient
descent. Its data and weights are only in figures; the text gives the first
row, x = (6.1, 8.7) with y = 113, and one worked derivative,
dJ/dw3_21 = (0.0017178 - 113) * 1 * 0.02454 ~ -2.77 (its Equation 7).

This script evaluates our derived output delta at the tutorial's numbers, walks
row 0 of our data step by step, and trains on synthetic data of the same kind
(examples/data/seed002_regression.csv: x ~ U(0, 10)^2 rounded to 0.1 and
y = 5 + 3 x1 + 10 x2 + 6 max(x1 - 5, 0) + N(0, 2^2), numpy default_rng(2)).

Run:  .venv/bin/python examples/seed002_regression.py
Or:   .venv/bin/derive fit examples/seed002_regression.toml \
          --data examples/data/seed002_regression.csv --target y
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import derive
from derive.engine.derivation import A, Y, Z
from derive.present.worked import worked_example

HERE = Path(__file__).resolve().parent
SPEC = HERE / "seed002_regression.toml"
DATA = HERE / "data" / "seed002_regression.csv"

#: The tutorial's numbers for its first row (Section 4.2.1, Exercise 2).
TUTORIAL_X3, TUTORIAL_Y, TUTORIAL_X2_2 = 0.0017178, 113.0, 0.02454
TUTORIAL_DJ_DW3_21 = -2.77


def load_data() -> tuple[np.ndarray, np.ndarray]:
    """X (200, 2), Y (200, 1) from the CSV (header x1,x2,y)."""
    table = np.loadtxt(DATA, delimiter=",", skiprows=1)
    return table[:, :2], table[:, 2:3]


def epoch_losses(history: object) -> np.ndarray:
    """Per-epoch losses from fit's return value (a dict with "loss", or an array)."""
    if isinstance(history, dict):
        return np.asarray(history["loss"])
    return np.asarray(history)


def r_squared(truth: np.ndarray, predicted: np.ndarray) -> float:
    residual = float(np.sum((truth - predicted) ** 2))
    return 1.0 - residual / float(np.sum((truth - truth.mean()) ** 2))


def main() -> dict[str, float]:
    spec = derive.load_spec(SPEC)
    net = derive.build(spec)
    X, Y_data = load_data()

    # The output delta SymPy derived for identity + quadratic, at the
    # tutorial's numbers: its Equations 5 and 6 fused, (x3 - y) * 1.
    derived = derive.derive(spec).loss.output_delta
    delta = derived.expr
    delta_value = float(delta.subs({A: TUTORIAL_X3, Z: TUTORIAL_X3, Y: TUTORIAL_Y}))
    dj_dw = delta_value * TUTORIAL_X2_2
    print(f"derived output delta: delta3 = {derived.text}")
    print(
        f"tutorial's Equation 7: dJ/dw3_21 = delta3 * x2_2 = ({TUTORIAL_X3} - "
        f"{TUTORIAL_Y:g}) * {TUTORIAL_X2_2} = {dj_dw:.4f} (tutorial: ~ "
        f"{TUTORIAL_DJ_DW3_21})"
    )

    params = net.init_params(spec.training.seed)
    print("\nRow 0 of the data at the initial weights, step by step:\n")
    print(worked_example(spec, params, X[0], Y_data[0], sample=0).text())

    history = net.fit(params, X, Y_data)
    losses = epoch_losses(history)
    predicted = net.predict(params, X)
    r2 = r_squared(Y_data, predicted)
    rmse = float(np.sqrt(np.mean((Y_data - predicted) ** 2)))
    print(
        f"Trained {len(losses)} epochs: J {losses[0]:.1f} -> {losses[-1]:.2f}, "
        f"RMSE {rmse:.2f}, R^2 {r2:.3f} (noise std of the data: 2)"
    )
    print("   x1    x2       y   y_hat")
    for (x1, x2), truth, guess in zip(
        X[:5], Y_data[:5, 0], predicted[:5, 0], strict=True
    ):
        print(f"  {x1:4.1f}  {x2:4.1f}  {truth:6.1f}  {guess:6.1f}")
    return {"dj_dw3_21": dj_dw, "r2": r2, "rmse": rmse}


if __name__ == "__main__":
    main()
