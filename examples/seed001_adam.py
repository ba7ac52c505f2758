"""Seed 001's 2-3-2-1 relu network: its worked example, then training with Adam.

The tutorial sets hand-picked weights, runs its two samples forward, prints the
cost and PyTorch's gradients, walks the backward pass by hand, and defines
``torch.optim.Adam(model.parameters(), lr=0.01)``. This script does the same
with the generated module of ``seed001_adam.toml`` and ``derive.worked``,
printing each number next to the one the tutorial printed, then trains.

Run:  .venv/bin/python examples/seed001_adam.py
The worked example alone, from the shell (the weights as a model file):
      .venv/bin/derive explain examples/seed001_adam.toml --weights MODEL.npz \
          --data FILE.csv --sample 0
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import derive
from derive.present.worked import worked_example

HERE = Path(__file__).resolve().parent
SPEC = HERE / "seed001_adam.toml"

X = np.array([[1.0, 2.0], [3.0, 4.0]])
Y = np.array([[0.0], [1.0]])

# What the tutorial printed, by notebook cell. Forward values: In [7] (PyTorch,
# 4 decimals); cost: In [12]; gradients: In [20], In [26], In [30] (4 decimals).
TUTORIAL_FORWARD = {
    "Z1": [[4.0, 2.0, -7.8], [6.0, 9.0, -16.0]],
    "A1": [[4.0, 2.0, 0.0], [6.0, 9.0, 0.0]],
    "Z2": [[0.0, 8.0], [8.0, 10.1]],
    "A2": [[0.0, 8.0], [8.0, 10.1]],
    "Z3": [[-2.3], [1.07]],
    "A3": [[0.0911], [0.7446]],
}
TUTORIAL_COST = 0.19522885978221893
TUTORIAL_GRADS = {
    "W1": [[-0.0249, -0.0396], [-0.1814, -0.2428], [0.0, 0.0]],
    "b1": [-0.0147, -0.0614, 0.0],
    "W2": [[-0.3831, -0.5747, 0.0], [0.1752, 0.3175, 0.0]],
    "b2": [-0.0639, 0.0246],
    "W3": [[-1.0216, -0.9253]],
    "b3": [-0.0821],
}
NAMES = ["W1", "b1", "W2", "b2", "W3", "b3"]


def tutorial_params() -> list[np.ndarray]:
    """The weights the tutorial sets by hand (In [5]); W is (n_out, n_in)."""
    return [
        np.array([[-1.0, 2.0], [3.0, 0.5], [-0.1, -4.0]]),
        np.array([1.0, -2.0, 0.3]),
        np.array([[0.5, 1.0, -2.0], [0.7, 0.1, 0.3]]),
        np.array([-4.0, 5.0]),
        np.array([[0.5, -0.3]]),
        np.array([0.1]),
    ]


def epoch_losses(history: object) -> np.ndarray:
    """Per-epoch losses from fit's return value (a dict with "loss", or an array)."""
    if isinstance(history, dict):
        return np.asarray(history["loss"])
    return np.asarray(history)


def show(name: str, ours: np.ndarray, theirs: object) -> float:
    """Print ours next to the tutorial's value; return the largest difference."""
    ours = np.asarray(ours)
    diff = float(np.max(np.abs(ours - np.asarray(theirs))))
    flat_ours = np.array2string(ours.ravel(), precision=4, suppress_small=True)
    flat_theirs = np.array2string(np.ravel(theirs), precision=4, suppress_small=True)
    print(f"  {name:3s} ours     {flat_ours}\n      tutorial {flat_theirs}")
    return diff


def main() -> dict[str, float]:
    spec = derive.load_spec(SPEC)
    net = derive.build(spec)
    params = tutorial_params()

    print("Forward pass (rows are the two samples):")
    worked = [worked_example(spec, params, x, y, sample=i) for i, (x, y) in
              enumerate(zip(X, Y, strict=True))]  # fmt: skip
    forward_diff = 0.0
    for name, theirs in TUTORIAL_FORWARD.items():
        layer = worked[0].layers[int(name[1]) - 1]
        attr = "z" if name[0] == "Z" else "a"
        rows = np.array([getattr(w.layers[layer.index - 1], attr) for w in worked])
        forward_diff = max(forward_diff, show(name, rows, theirs))

    cost, grads = net.loss_and_grad(params, X, Y)
    print(f"\nCost: ours {cost:.8f}, tutorial {TUTORIAL_COST:.8f}")
    print("\nGradients of the cost (the batch mean of the two samples' gradients):")
    grad_diff = max(
        show(name, g, TUTORIAL_GRADS[name])
        for name, g in zip(NAMES, grads, strict=True)
    )
    print(f"  largest difference from the tutorial's 4-decimal values: {grad_diff:.1e}")

    print("\nSample 0 step by step (derive.worked):\n")
    print(worked[0].text())
    print(
        "Note: the tutorial's hand-computed dL_dA2 (In [32]) is dL_dZ3 * W3^T taken\n"
        "elementwise, one number per sample; it should be the (2, 2) matrix\n"
        "dL_dZ3 @ W3. Sample 0's row is W3^T delta3 above:\n"
        f"  {worked[0].layers[1].backprop}  (tutorial: [0.0456] for sample 0).\n"
        "Its dL_dZ2 (In [35]) inherits the slip; PyTorch's gradients (In [20]) and\n"
        "ours agree.\n"
    )

    print("One Adam step (lr 0.01) on the batch of two:")
    before = [p.copy() for p in params]
    state = net.init_state(params)
    net.fit(params, X, Y, epochs=1, state=state)
    # Adam's first bias-corrected step is lr * g / (|g| + eps): every parameter
    # with a non-zero gradient moves by lr against its gradient's sign.
    step_error = max(
        float(np.max(np.abs((p - b) + 0.01 * np.sign(g))))
        for p, b, g in zip(params, before, grads, strict=True)
    )
    for name, p in zip(NAMES, params, strict=True):
        print(f"  {name} = {np.array2string(p.ravel(), precision=4)}")
    print(f"  each step equals -0.01 * sign(gradient) to {step_error:.1e}")

    history = net.fit(params, X, Y, epochs=spec.training.epochs - 1, state=state)
    losses = epoch_losses(history)
    outputs = net.predict(params, X)[:, 0]
    print(
        f"\nAfter {spec.training.epochs} Adam steps: cost {losses[-1]:.6f}, "
        f"outputs {np.array2string(outputs, precision=4)} for targets {Y[:, 0]}"
    )
    return {
        "forward_diff": forward_diff,
        "cost": float(cost),
        "grad_diff": grad_diff,
        "step_error": step_error,
        "final_cost": float(losses[-1]),
    }


if __name__ == "__main__":
    main()
