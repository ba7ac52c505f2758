"""Normalization: batch_norm and layer_norm, with torch's semantics.

Both are written as named stages (mean, centred values, variance, normalized
values, scale and shift), so the engine derives each stage's backward and the
variance is computed two-pass (from the centred values, never E[x^2] - mu^2).

* **batch_norm** (torch.nn.BatchNorm1d/2d): statistics over the batch and, after
  a convolution, over each channel's positions; the statements see the input as
  (C, R): C channels (a feature vector's features) of R positions each. Training
  normalizes with the batch's (biased) variance and updates the running
  statistics with the unbiased one (momentum 0.1 by default); evaluation
  normalizes with the running statistics.
* **layer_norm** (torch.nn.LayerNorm over a sample's whole shape): statistics
  over the features of one sample, the same in training and evaluation.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from .interface import KindInterface, Param, definition_in, same_shape

if TYPE_CHECKING:
    from .ir import LayerKind

_EPS = Param("eps", "float", "added to the variance", default=1e-5, minimum=0.0)
_BN_PARAMS = (
    _EPS,
    Param(
        "momentum",
        "float",
        "weight of the batch in the running statistics",
        default=0.1,
        minimum=0.0,
        below=1.0,
    ),  # fmt: skip
    Param(
        "affine",
        "bool",
        "learn a scale gamma and a shift beta per channel",
        default=True,
    ),  # fmt: skip
)


@functools.cache
def _definitions() -> dict[str, LayerKind]:
    from dataclasses import replace

    import sympy as sp

    from .ir import (
        B,
        Claim,
        LayerKind,
        Statement,
        TensorDef,
        integer_symbols,
        size_symbols,
    )

    c, r, k, o, s = integer_symbols("c r k o s")
    C, R, N = size_symbols("C R N")
    eps, momentum = sp.symbols("epsilon momentum", positive=True)
    x, dy = sp.IndexedBase("x"), sp.IndexedBase("dy")
    mean, xc, var, xhat = (sp.IndexedBase(n) for n in ("mean", "xc", "var", "xhat"))
    gamma, beta = sp.IndexedBase("gamma"), sp.IndexedBase("beta")
    running_mean, running_var = (
        sp.IndexedBase("running_mean"),
        sp.IndexedBase("running_var"),
    )

    # ------------------------------------------------------------------ batch_norm
    _count = B * R  # values per channel in a batch
    _BN_STATS = (
        Statement("mean", (c,), body=x[c, r] / _count, reduce=((r, R),)),
        Statement("xc", (c, r), body=x[c, r] - mean[c]),
        Statement("var", (c,), body=xc[c, r] ** 2 / _count, reduce=((r, R),)),
        Statement("xhat", (c, r), body=xc[c, r] / sp.sqrt(var[c] + eps)),
    )
    _BN_UPDATE = (
        Statement(
            "running_mean",
            (c,),
            body=(1 - momentum) * running_mean[c] + momentum * mean[c],
        ),
        # torch: the running variance is the unbiased one
        Statement(
            "running_var",
            (c,),
            body=(1 - momentum) * running_var[c]
            + momentum * var[c] * _count / (_count - 1),
        ),
    )
    _BN_TENSORS = (
        TensorDef("x", "input", (C, R)),
        TensorDef("mean", "stat", (C,)),
        TensorDef("xc", "work", (C, R)),
        TensorDef("var", "stat", (C,)),
        TensorDef("xhat", "work", (C, R)),
        TensorDef("y", "output", (C, R)),
        TensorDef("running_mean", "state", (C,), init="zeros"),
        TensorDef("running_var", "state", (C,), init="ones"),
    )
    _BN_BIND = {eps: ("eps", None), momentum: ("momentum", None)}
    _BN_CHECKS = (({"eps": 1e-5, "momentum": 0.1, "affine": True}, (3, 2)),)

    _TEXTBOOK = (
        "Ioffe & Szegedy (2015), the backward in one line as CS231n's batch norm "
        "assignment asks for it"
    )

    def _textbook(
        g: sp.Expr, xhat_at: sp.Expr, sigma: sp.Expr, n: sp.Expr, at: sp.Symbol
    ) -> sp.Expr:
        """``1/(n sigma) (n g - sum g - xhat sum g xhat)``, where g is the adjoint of
        xhat at index ``at`` (sums over a fresh index s in its place)."""
        g_s, xhat_s = g.xreplace({at: s}), xhat_at.xreplace({at: s})
        total, weighted = (
            sp.Sum(g_s, (s, 0, n - 1)),
            sp.Sum(g_s * xhat_s, (s, 0, n - 1)),
        )
        return (n * g - total - xhat_at * weighted) / (n * sigma)

    def _batch_norm(affine: bool) -> LayerKind:
        scaled = gamma[c] * xhat[c, r] + beta[c] if affine else xhat[c, r]
        at_running = (x[c, r] - running_mean[c]) / sp.sqrt(running_var[c] + eps)
        evaluated = gamma[c] * at_running + beta[c] if affine else at_running
        params = (
            (TensorDef("gamma", "param", (C,), init="ones"),
             TensorDef("beta", "param", (C,), init="zeros"))
            if affine
            else ()
        )  # fmt: skip
        return LayerKind(
            interface=BATCH_NORM,
            input=(C, R),
            bind=_BN_BIND,
            sizes={},
            tensors=(*_BN_TENSORS, *params),
            forward=(*_BN_STATS, Statement("y", (c, r), body=scaled)),
            evaluate=(Statement("y", (c, r), body=evaluated),),
            update=_BN_UPDATE,
            output="y",
            output_shape=(C, R),
            checks=_BN_CHECKS,
            claims=(_bn_claim(affine),),
        )

    def _bn_claim(affine: bool) -> Claim:
        """dx over a channel's N = B*R values: gamma sits outside the sums."""
        n = sp.Symbol("N", integer=True, positive=True)
        sigma = sp.sqrt(var[c] + eps)
        scale = gamma[c] if affine else sp.S.One
        value = scale * _textbook(dy[c, r], xhat[c, r], sigma, n, r)
        shown = "gamma/(N sigma) " if affine else "1/(N sigma) "
        return Claim(
            target="x",
            index=(c, r),
            value=value,
            count=B * R,
            text=shown + "(N dy - sum dy - xhat sum(dy xhat))",
            source=_TEXTBOOK,
            sizes=((B, sp.S.One), (R, n)),
        )

    # ------------------------------------------------------------------ layer_norm
    _LN_TENSORS = (
        TensorDef("x", "input", (N,)),
        TensorDef("mean", "work", (1,)),
        TensorDef("xc", "work", (N,)),
        TensorDef("var", "work", (1,)),
        TensorDef("xhat", "work", (N,)),
        TensorDef("y", "output", (N,)),
    )
    _LN_STATS = (
        Statement("mean", (o,), body=x[k] / N, reduce=((k, N),)),
        Statement("xc", (k,), body=x[k] - mean[0]),
        Statement("var", (o,), body=xc[k] ** 2 / N, reduce=((k, N),)),
        Statement("xhat", (k,), body=xc[k] / sp.sqrt(var[0] + eps)),
    )

    def _layer_norm(affine: bool) -> LayerKind:
        scaled = gamma[k] * xhat[k] + beta[k] if affine else xhat[k]
        params = (
            (TensorDef("gamma", "param", (N,), init="ones"),
             TensorDef("beta", "param", (N,), init="zeros"))
            if affine
            else ()
        )  # fmt: skip
        return LayerKind(
            interface=LAYER_NORM,
            input=(N,),
            bind={eps: ("eps", None)},
            sizes={},
            tensors=(*_LN_TENSORS, *params),
            forward=(*_LN_STATS, Statement("y", (k,), body=scaled)),
            output="y",
            output_shape=(N,),
            checks=(({"eps": 1e-5, "elementwise_affine": True}, (4,)),),
            claims=(
                Claim(
                    target="x",
                    index=(k,),
                    value=_textbook(
                        gamma[k] * dy[k] if affine else dy[k],
                        xhat[k],
                        sp.sqrt(var[0] + eps),
                        N,
                        k,
                    ),
                    count=N,
                    text="1/(N sigma) (N g - sum g - xhat sum(g xhat)), g = "
                    + ("gamma dy" if affine else "dy"),
                    source="Ba, Kiros & Hinton (2016): batch norm's form over a "
                    "sample's N features",
                ),
            ),
        )

    return {
        "batch_norm": replace(
            _batch_norm(affine=True),
            variants=(("affine", False, _batch_norm(affine=False)),),
        ),
        "layer_norm": replace(
            _layer_norm(affine=True),
            variants=(("elementwise_affine", False, _layer_norm(affine=False)),),
        ),
    }


BATCH_NORM = KindInterface(
    name="batch_norm",
    doc="y = gamma (x - mean) / sqrt(var + eps) + beta, statistics over the batch "
    "per channel (running statistics in evaluation)",
    params=_BN_PARAMS,
    rank=None,
    shape=same_shape,
    define=functools.partial(definition_in, _definitions, "batch_norm"),
    shape_of="channels",
    torch="torch.nn.BatchNorm1d / BatchNorm2d",
)

LAYER_NORM = KindInterface(
    name="layer_norm",
    doc="y = gamma (x - mean) / sqrt(var + eps) + beta, statistics over the "
    "features of each sample",
    params=(
        _EPS,
        Param(
            "elementwise_affine",
            "bool",
            "learn a scale and a shift per feature",
            default=True,
        ),
    ),  # fmt: skip
    rank=None,
    shape=same_shape,
    define=functools.partial(definition_in, _definitions, "layer_norm"),
    shape_of="features",
    torch="torch.nn.LayerNorm(normalized_shape = the sample's shape)",
)
