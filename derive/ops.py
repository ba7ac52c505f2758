"""The op library: forward definitions only.

Each activation and loss is one small definition: a name, its SymPy forward
expression, its parameters (with defaults and constraints) and the few facts
the spec validator needs. No derivative is written anywhere: the derivation
engine (:mod:`derive.derivation`) asks SymPy for every one of them.

Non-smooth points follow PyTorch's convention, which the forward definitions
encode by their branch conditions: ``relu`` is ``z if z > 0 else 0`` so its
derivative at 0 is 0; ``leaky_relu`` gives ``alpha`` at 0; ``abs`` has SymPy's
``sign(0) = 0`` derivative. SymPy's ``Heaviside(0) = 1/2`` never appears.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ._lazy import sympy as sp
from .errors import ExpressionError

if TYPE_CHECKING:
    import sympy

Constraint = Literal["positive", "nonnegative", "real"]


@dataclass(frozen=True)
class Param:
    """A named numeric parameter of an op (e.g. leaky_relu's ``alpha``)."""

    name: str
    default: float
    constraint: Constraint = "real"
    doc: str = ""

    def check(self, value: float) -> str | None:
        """Return a problem description if ``value`` violates the constraint."""
        if self.constraint == "positive" and not value > 0:
            return f"{self.name} must be > 0, got {value}"
        if self.constraint == "nonnegative" and not value >= 0:
            return f"{self.name} must be >= 0, got {value}"
        return None


@dataclass(frozen=True)
class Activation:
    """An activation function.

    ``forward(z, **params)`` returns the SymPy expression of ``a = f(z)`` for an
    elementwise op. For ``kind == "softmax"`` the op is a vector op over the
    outputs of one sample and ``forward(z, i, k, n)`` returns ``a_i`` in index
    form, with ``z`` an :class:`sympy.IndexedBase` and ``k`` the summation index
    over ``0..n-1``.
    """

    name: str
    doc: str
    forward: Callable[..., sympy.Expr]
    params: tuple[Param, ...] = ()
    kind: Literal["elementwise", "softmax"] = "elementwise"
    init: Literal["xavier", "he"] = "xavier"
    output_only: bool = False
    requires_loss: tuple[str, ...] = ()


@dataclass(frozen=True)
class Loss:
    """A loss: ``forward(y_hat, y, **params)`` is the per-output-element loss.

    The per-sample loss is the sum (``reduce="sum"``) or the mean
    (``reduce="mean"``) of the elements over the outputs; the batch loss is the
    mean over the rows. ``targets`` documents (and the generated module checks)
    what targets the loss accepts.
    """

    name: str
    doc: str
    forward: Callable[..., sympy.Expr]
    reduce: Literal["mean", "sum"] = "mean"
    params: tuple[Param, ...] = ()
    requires_activation: tuple[str, ...] = ()
    targets: Literal["any", "probability", "distribution"] = "any"


def _relu(z: sympy.Expr) -> sympy.Expr:
    return sp.Piecewise((z, z > 0), (0, True))


def _leaky_relu(z: sympy.Expr, alpha: sympy.Expr) -> sympy.Expr:
    return sp.Piecewise((z, z > 0), (alpha * z, True))


def _elu(z: sympy.Expr, alpha: sympy.Expr) -> sympy.Expr:
    return sp.Piecewise((z, z > 0), (alpha * (sp.exp(z) - 1), True))


# SELU's constants, as in Klambauer et al. (2017) and torch.nn.SELU (SymPy
# Floats of 30 digits, made on first use: ``SELU_ALPHA``, ``SELU_SCALE``).
_SELU_DIGITS = {
    "SELU_ALPHA": "1.6732632423543772848170429916717",
    "SELU_SCALE": "1.0507009873554804934193349852946",
}


def __getattr__(name: str) -> Any:
    if name in _SELU_DIGITS:
        return sp.Float(_SELU_DIGITS[name], 30)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _selu(z: sympy.Expr) -> sympy.Expr:
    alpha, scale = __getattr__("SELU_ALPHA"), __getattr__("SELU_SCALE")
    return scale * sp.Piecewise((z, z > 0), (alpha * (sp.exp(z) - 1), True))


def _softmax(
    z: sympy.IndexedBase, i: sympy.Symbol, k: sympy.Symbol, n: sympy.Expr
) -> sympy.Expr:
    return sp.exp(z[i]) / sp.Sum(sp.exp(z[k]), (k, 0, n - 1))


def _sigmoid(z: sympy.Expr) -> sympy.Expr:
    return 1 / (1 + sp.exp(-z))


def _huber(y_hat: sympy.Expr, y: sympy.Expr, delta: sympy.Expr) -> sympy.Expr:
    u = y_hat - y
    # torch.nn.HuberLoss: quadratic where |u| < delta.
    return sp.Piecewise(
        (u**2 / 2, sp.Abs(u) < delta), (delta * (sp.Abs(u) - delta / 2), True)
    )


ACTIVATIONS: Mapping[str, Activation] = {
    a.name: a
    for a in [
        Activation("identity", "a = z", lambda z: z),
        Activation("sigmoid", "logistic 1 / (1 + exp(-z))", _sigmoid),
        Activation("tanh", "hyperbolic tangent", lambda z: sp.tanh(z)),
        Activation("relu", "max(z, 0); relu'(0) = 0", _relu, init="he"),
        Activation(
            "leaky_relu",
            "z if z > 0 else alpha z; derivative alpha at 0",
            _leaky_relu,
            params=(Param("alpha", 0.01, "nonnegative", "slope for z <= 0"),),
            init="he",
        ),
        Activation(
            "elu",
            "z if z > 0 else alpha (exp(z) - 1)",
            _elu,
            params=(Param("alpha", 1.0, "positive", "saturation value for z -> -inf"),),
            init="he",
        ),
        Activation(
            "selu", "scale * elu(z, alpha) with the SELU constants", _selu, init="he"
        ),
        Activation(
            "softplus", "log(1 + exp(z))", lambda z: sp.log(1 + sp.exp(z)), init="he"
        ),
        Activation(
            "silu", "z * sigmoid(z) (swish)", lambda z: z * _sigmoid(z), init="he"
        ),
        Activation(
            "gelu",
            "exact GELU: z Phi(z) = z (1 + erf(z / sqrt 2)) / 2",
            lambda z: z * (1 + sp.erf(z / sp.sqrt(2))) / 2,
            init="he",
        ),
        Activation(
            "gelu_tanh",
            "GELU, tanh approximation (torch approximate='tanh')",
            lambda z: (
                z
                * (
                    1
                    + sp.tanh(
                        sp.sqrt(2 / sp.pi) * (z + sp.Rational(44715, 1000000) * z**3)
                    )
                )
                / 2
            ),
            init="he",
        ),
        Activation("softsign", "z / (1 + |z|)", lambda z: z / (1 + sp.Abs(z))),
        Activation(
            "softmax",
            "exp(z_i) / sum_k exp(z_k) over the outputs of a sample",
            _softmax,
            kind="softmax",
            output_only=True,
            requires_loss=("cross_entropy",),
        ),
    ]
}

LOSSES: Mapping[str, Loss] = {
    loss.name: loss
    for loss in [
        Loss("mse", "(y_hat - y)^2, mean over outputs", lambda p, y: (p - y) ** 2),
        Loss(
            "quadratic",
            "1/2 (y_hat - y)^2 summed over outputs (the textbook cost)",
            lambda p, y: (p - y) ** 2 / 2,
            reduce="sum",
        ),
        Loss(
            "mae",
            "|y_hat - y|, mean over outputs; mae'(0) = 0",
            lambda p, y: sp.Abs(p - y),
        ),
        Loss(
            "huber",
            "1/2 u^2 if |u| < delta else delta (|u| - delta/2), u = y_hat - y",
            _huber,
            params=(Param("delta", 1.0, "positive", "where the loss turns linear"),),
        ),
        Loss(
            "binary_cross_entropy",
            "-(y log y_hat + (1 - y) log(1 - y_hat)) on probabilities",
            lambda p, y: -(y * sp.log(p) + (1 - y) * sp.log(1 - p)),
            requires_activation=("sigmoid",),
            targets="probability",
        ),
        Loss(
            "bce_with_logits",
            "binary cross-entropy on logits: BCE(sigmoid(y_hat), y)",
            lambda p, y: -(y * sp.log(_sigmoid(p)) + (1 - y) * sp.log(1 - _sigmoid(p))),
            requires_activation=("identity",),
            targets="probability",
        ),
        Loss(
            "cross_entropy",
            "-sum_i y_i log y_hat_i on softmax probabilities; targets one-hot or "
            "class probabilities (rows sum to 1)",
            lambda p, y: -y * sp.log(p),
            reduce="sum",
            requires_activation=("softmax",),
            targets="distribution",
        ),
    ]
}


@dataclass(frozen=True)
class UserExpr:
    """A user expression from a spec, with its named constants."""

    text: str
    constants: tuple[tuple[str, float], ...] = field(default=())


RESERVED = {"x", "y", "y_hat", "z", "a", *("pi", "e")}


def user_activation(expr: UserExpr) -> Activation:
    """Build an elementwise activation from a user expression in ``x``.

    Raises :class:`ExpressionError` if the text is refused or does not use ``x``.
    """
    from .exprparse import parse_expression

    x = sp.Symbol("x", real=True)
    names: dict[str, sympy.Expr] = {"x": x}
    names.update({k: sp.nsimplify(v, rational=True) for k, v in expr.constants})
    parsed = parse_expression(expr.text, names)
    if x not in parsed.free_symbols:
        raise ExpressionError(f"activation expression {expr.text!r} does not use x")
    return Activation(
        name="expr",
        doc=expr.text,
        forward=lambda z: parsed.subs(x, z),
        init="xavier",
    )


def user_loss(expr: UserExpr) -> Loss:
    """Build a per-element loss from a user expression in ``y_hat`` and ``y``."""
    from .exprparse import parse_expression

    y_hat, y = sp.symbols("y_hat y", real=True)
    names: dict[str, sympy.Expr] = {"y_hat": y_hat, "y": y}
    names.update({k: sp.nsimplify(v, rational=True) for k, v in expr.constants})
    parsed = parse_expression(expr.text, names)
    if y_hat not in parsed.free_symbols:
        raise ExpressionError(f"loss expression {expr.text!r} does not use y_hat")
    return Loss(
        name="expr",
        doc=expr.text + " (summed over outputs)",
        forward=lambda p, t: parsed.subs({y_hat: p, y: t}, simultaneous=True),
        reduce="sum",
    )
