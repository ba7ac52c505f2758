"""Independent NumPy reference for convolution and pooling layers.

Written directly from PyTorch's documented semantics (``torch.nn.functional``),
deliberately simple: explicit Python loops over output positions and kernel
offsets, float64 throughout, no im2col, no stride tricks, no closed-form
"transposed convolution" gathers.  The tests use it as the independent
reference the real implementation is checked against, and check it against
torch itself where torch is installed.

Layouts are batch-first exactly as torch:

* 1-D: ``x`` is ``(n, C, L)``, conv weight ``W`` is ``(F, C, k)``;
* 2-D: ``x`` is ``(n, C, H, W)``, conv weight ``W`` is ``(F, C, kh, kw)``.

1-D functions take ints for kernel / stride / padding / dilation; 2-D
functions take ``(h, w)`` pairs or a single int that is used for both.

Semantics, all as torch's defaults:

* convolution is cross-correlation (no kernel flip), zero padding of any
  size, ``groups=1``;
* input position of output ``o`` and kernel offset ``j`` is
  ``o * stride - padding + j * dilation``; positions outside ``[0, L)`` are
  padding;
* output size is ``(L + 2p - d(k-1) - 1) // s + 1`` (floor: trailing input
  that no full window reaches is ignored);
* max pooling pads with ``-inf`` (padding never wins), the first maximum in
  the window's row-major scan order wins ties (a NaN in the window wins and
  propagates, the last NaN if several, as torch's CPU kernel), the stride
  defaults to the kernel, and ``padding <= kernel // 2`` is required;
* average pooling has ``count_include_pad=True`` and ``ceil_mode=False``, so
  every window divides by the full kernel area, padded zeros included; the
  same padding limit applies.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "avg_pool1d",
    "avg_pool1d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "conv1d",
    "conv1d_backward",
    "conv2d",
    "conv2d_backward",
    "conv_output_size",
    "flatten",
    "max_pool1d",
    "max_pool1d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "pool_output_size",
]


# ---------------------------------------------------------------- helpers


def _int(v, name: str) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {v!r}")
    return int(v)


def _pair(v, name: str) -> tuple[int, int]:
    """An int or a pair of ints -> (h, w)."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair, got {v!r}")
        return _int(v[0], name), _int(v[1], name)
    v = _int(v, name)
    return v, v


def _check_positive(name: str, *values: int) -> None:
    for v in values:
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")


def _check_nonnegative(name: str, *values: int) -> None:
    for v in values:
        if v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")


def _as_input(x, ndim: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != ndim:
        raise ValueError(f"expected a {ndim}-d batch-first input, got shape {x.shape}")
    return x


def conv_output_size(
    L: int, kernel: int, stride: int, padding: int, dilation: int
) -> int:
    """Output length of a convolution along one axis (torch's floor formula).

    ``(L + 2p - d(k-1) - 1) // s + 1``; may be <= 0 when the (dilated) kernel
    does not fit into the padded input -- the layer functions reject that.
    """
    return (L + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(L: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a pooling layer along one axis, ``ceil_mode=False``.

    Same formula as ``conv_output_size`` with dilation 1: ``(L + 2p - k) // s + 1``.
    """
    return conv_output_size(L, kernel, stride, padding, 1)


def _out_size(L: int, k: int, s: int, p: int, d: int, what: str) -> int:
    out = conv_output_size(L, k, s, p, d)
    if out < 1:
        raise ValueError(
            f"{what}: kernel {k} (dilation {d}) does not fit input length {L} "
            f"with padding {p}; output size would be {out}"
        )
    return out


def _check_pool_padding(kernel: tuple[int, ...], padding: tuple[int, ...]) -> None:
    # torch: "pad should be at most half of effective kernel size".
    for k, p in zip(kernel, padding, strict=True):
        if p > k // 2:
            raise ValueError(
                f"pooling padding should be at most half of the kernel size "
                f"(padding <= kernel // 2, as torch), got padding {p} and kernel {k}"
            )


def _window_max(win, idx):
    """Max of each window, scanned as torch's CPU kernel does.

    win: (n, C, m) window values in scan order; idx: the m input indices.
    Returns (value, index), each (n, C).  Start from (-inf, idx[0]) and take
    a value only if it is strictly greater than the best so far, or NaN: so
    the first maximum wins ties (and, as in torch, NaN propagates, the last
    NaN of the window winning; an all -inf window picks its first element).
    """
    best = np.full(win.shape[:2], -np.inf)
    where = np.full(win.shape[:2], idx[0], dtype=np.int64)
    for j, i in enumerate(idx):
        v = win[:, :, j]
        take = (v > best) | np.isnan(v)
        best = np.where(take, v, best)
        where = np.where(take, i, where)
    return best, where


def flatten(x):
    """``(n, ...) -> (n, prod(...))`` in C order, as ``torch.flatten(x, 1)``."""
    x = np.asarray(x)
    return x.reshape(x.shape[0], -1)


# ---------------------------------------------------------------- conv 1-D


def _conv1d_args(x, W, stride, padding, dilation):
    x = _as_input(x, 3)
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 3 or W.shape[1] != x.shape[1]:
        raise ValueError(f"weight shape {W.shape} does not match input shape {x.shape}")
    s, p, d = (
        _int(stride, "stride"),
        _int(padding, "padding"),
        _int(dilation, "dilation"),
    )
    _check_positive("stride", s)
    _check_positive("dilation", d)
    _check_nonnegative("padding", p)
    L, k = x.shape[2], W.shape[2]
    Lo = _out_size(L, k, s, p, d, "conv1d")
    return x, W, s, p, d, Lo


def conv1d(x, W, b=None, stride=1, padding=0, dilation=1):
    """1-D convolution (cross-correlation), as ``torch.nn.functional.conv1d``.

    x: (n, C, L); W: (F, C, k); b: (F,) or None.
    Returns y: (n, F, Lo) with Lo = conv_output_size(L, k, stride, padding, dilation)
    and ``y[n, f, o] = b[f] + sum_{c, j} W[f, c, j] * x[n, c, o*s - p + j*d]``
    (terms whose input position falls in the zero padding are 0).
    """
    x, W, s, p, d, Lo = _conv1d_args(x, W, stride, padding, dilation)
    n, C, L = x.shape
    F, _, k = W.shape
    y = np.zeros((n, F, Lo))
    for o in range(Lo):
        for j in range(k):
            i = o * s - p + j * d
            if 0 <= i < L:
                # (n, C) @ (C, F) -> (n, F)
                y[:, :, o] += x[:, :, i] @ W[:, :, j].T
    if b is not None:
        b = np.asarray(b, dtype=np.float64)
        if b.shape != (F,):
            raise ValueError(f"bias shape {b.shape} != ({F},)")
        y += b[None, :, None]
    return y


def conv1d_backward(x, W, dy, stride=1, padding=0, dilation=1):
    """Gradients of ``sum(conv1d(x, W, b, ...) * dy)``.

    x: (n, C, L); W: (F, C, k); dy: (n, F, Lo).
    Returns (dx (n, C, L), dW (F, C, k), db (F,)).  db is returned whether or
    not the forward had a bias.  Scatter over the forward's loop nest.
    """
    x, W, s, p, d, Lo = _conv1d_args(x, W, stride, padding, dilation)
    n, C, L = x.shape
    F, _, k = W.shape
    dy = np.asarray(dy, dtype=np.float64)
    if dy.shape != (n, F, Lo):
        raise ValueError(f"dy shape {dy.shape} != {(n, F, Lo)}")
    dx = np.zeros_like(x)
    dW = np.zeros_like(W)
    for o in range(Lo):
        for j in range(k):
            i = o * s - p + j * d
            if 0 <= i < L:
                # y[:, :, o] += x[:, :, i] @ W[:, :, j].T
                dx[:, :, i] += dy[:, :, o] @ W[:, :, j]  # (n, F) @ (F, C)
                dW[:, :, j] += dy[:, :, o].T @ x[:, :, i]  # (F, n) @ (n, C)
    db = dy.sum(axis=(0, 2))
    return dx, dW, db


# ---------------------------------------------------------------- conv 2-D


def _conv2d_args(x, W, stride, padding, dilation):
    x = _as_input(x, 4)
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 4 or W.shape[1] != x.shape[1]:
        raise ValueError(f"weight shape {W.shape} does not match input shape {x.shape}")
    s, p, d = (
        _pair(stride, "stride"),
        _pair(padding, "padding"),
        _pair(dilation, "dilation"),
    )
    _check_positive("stride", *s)
    _check_positive("dilation", *d)
    _check_nonnegative("padding", *p)
    H, Wd = x.shape[2], x.shape[3]
    kh, kw = W.shape[2], W.shape[3]
    Ho = _out_size(H, kh, s[0], p[0], d[0], "conv2d (height)")
    Wo = _out_size(Wd, kw, s[1], p[1], d[1], "conv2d (width)")
    return x, W, s, p, d, Ho, Wo


def conv2d(x, W, b=None, stride=1, padding=0, dilation=1):
    """2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.

    x: (n, C, H, W); W: (F, C, kh, kw); b: (F,) or None;
    stride / padding / dilation: int or (h, w).
    Returns y: (n, F, Ho, Wo), Ho / Wo from conv_output_size per axis, and
    ``y[n, f, oh, ow] = b[f] + sum_{c, jh, jw} W[f, c, jh, jw] *
    x[n, c, oh*sh - ph + jh*dh, ow*sw - pw + jw*dw]`` (zero padding).
    """
    x, W, s, p, d, Ho, Wo = _conv2d_args(x, W, stride, padding, dilation)
    n, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    y = np.zeros((n, F, Ho, Wo))
    for oh in range(Ho):
        for ow in range(Wo):
            for jh in range(kh):
                ih = oh * s[0] - p[0] + jh * d[0]
                if not 0 <= ih < H:
                    continue
                for jw in range(kw):
                    iw = ow * s[1] - p[1] + jw * d[1]
                    if 0 <= iw < Wd:
                        y[:, :, oh, ow] += x[:, :, ih, iw] @ W[:, :, jh, jw].T
    if b is not None:
        b = np.asarray(b, dtype=np.float64)
        if b.shape != (F,):
            raise ValueError(f"bias shape {b.shape} != ({F},)")
        y += b[None, :, None, None]
    return y


def conv2d_backward(x, W, dy, stride=1, padding=0, dilation=1):
    """Gradients of ``sum(conv2d(x, W, b, ...) * dy)``.

    x: (n, C, H, W); W: (F, C, kh, kw); dy: (n, F, Ho, Wo).
    Returns (dx (n, C, H, W), dW (F, C, kh, kw), db (F,)).  Scatter over the
    forward's loop nest.
    """
    x, W, s, p, d, Ho, Wo = _conv2d_args(x, W, stride, padding, dilation)
    n, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    dy = np.asarray(dy, dtype=np.float64)
    if dy.shape != (n, F, Ho, Wo):
        raise ValueError(f"dy shape {dy.shape} != {(n, F, Ho, Wo)}")
    dx = np.zeros_like(x)
    dW = np.zeros_like(W)
    for oh in range(Ho):
        for ow in range(Wo):
            g = dy[:, :, oh, ow]  # (n, F)
            for jh in range(kh):
                ih = oh * s[0] - p[0] + jh * d[0]
                if not 0 <= ih < H:
                    continue
                for jw in range(kw):
                    iw = ow * s[1] - p[1] + jw * d[1]
                    if 0 <= iw < Wd:
                        dx[:, :, ih, iw] += g @ W[:, :, jh, jw]
                        dW[:, :, jh, jw] += g.T @ x[:, :, ih, iw]
    db = dy.sum(axis=(0, 2, 3))
    return dx, dW, db


# ---------------------------------------------------------------- pooling 1-D


def _pool1d_args(x_shape, kernel, stride, padding, what):
    k = _int(kernel, "kernel")
    s = k if stride is None else _int(stride, "stride")
    p = _int(padding, "padding")
    _check_positive("kernel", k)
    _check_positive("stride", s)
    _check_nonnegative("padding", p)
    _check_pool_padding((k,), (p,))
    Lo = _out_size(x_shape[2], k, s, p, 1, what)
    return k, s, p, Lo


def max_pool1d(x, kernel, stride=None, padding=0):
    """1-D max pooling, as ``F.max_pool1d(x, kernel, stride, padding, return_indices=True)``.

    x: (n, C, L).  stride defaults to kernel; padding <= kernel // 2.
    Returns (y, argmax), both (n, C, Lo), Lo = (L + 2p - k) // s + 1.
    ``argmax`` is the int64 index into the L axis of the unpadded input of the
    element each output came from (the same representation as torch's
    indices).  Padded positions never win; the first maximum of the window
    (lowest input index) wins ties.
    """
    x = _as_input(x, 3)
    k, s, p, Lo = _pool1d_args(x.shape, kernel, stride, padding, "max_pool1d")
    n, C, L = x.shape
    y = np.empty((n, C, Lo))
    argmax = np.empty((n, C, Lo), dtype=np.int64)
    for o in range(Lo):
        # input positions of the window, in scan order, padding dropped
        idx = [o * s - p + j for j in range(k) if 0 <= o * s - p + j < L]
        y[:, :, o], argmax[:, :, o] = _window_max(x[:, :, idx], idx)
    return y, argmax


def max_pool1d_backward(x, dy, kernel, stride=None, padding=0):
    """Gradient of ``sum(max_pool1d(x, ...)[0] * dy)`` w.r.t. x.

    x: (n, C, L); dy: (n, C, Lo).  Returns dx: (n, C, L).  Each output's dy
    goes whole to its window's first maximum; overlapping windows accumulate.
    """
    x = _as_input(x, 3)
    _, argmax = max_pool1d(x, kernel, stride, padding)
    n, C, L = x.shape
    dy = np.asarray(dy, dtype=np.float64)
    if dy.shape != argmax.shape:
        raise ValueError(f"dy shape {dy.shape} != {argmax.shape}")
    dx = np.zeros_like(x)
    for b in range(n):
        for c in range(C):
            for o in range(argmax.shape[2]):
                dx[b, c, argmax[b, c, o]] += dy[b, c, o]
    return dx


def avg_pool1d(x, kernel, stride=None, padding=0):
    """1-D average pooling, as ``F.avg_pool1d(x, kernel, stride, padding)``.

    count_include_pad=True, ceil_mode=False: every window sums its in-bounds
    inputs and divides by ``kernel``.  x: (n, C, L) -> y: (n, C, Lo).
    """
    x = _as_input(x, 3)
    k, s, p, Lo = _pool1d_args(x.shape, kernel, stride, padding, "avg_pool1d")
    n, C, L = x.shape
    y = np.zeros((n, C, Lo))
    for o in range(Lo):
        for j in range(k):
            i = o * s - p + j
            if 0 <= i < L:
                y[:, :, o] += x[:, :, i]
    return y / k


def avg_pool1d_backward(x_shape, dy, kernel, stride=None, padding=0):
    """Gradient of ``sum(avg_pool1d(x, ...) * dy)`` w.r.t. x.

    x_shape: (n, C, L); dy: (n, C, Lo).  Returns dx: (n, C, L); each in-bounds
    input of a window gets ``dy / kernel``; overlapping windows accumulate.
    """
    x_shape = tuple(x_shape)
    if len(x_shape) != 3:
        raise ValueError(f"expected a 3-d input shape, got {x_shape}")
    k, s, p, Lo = _pool1d_args(x_shape, kernel, stride, padding, "avg_pool1d")
    L = x_shape[2]
    dy = np.asarray(dy, dtype=np.float64)
    if dy.shape != (*x_shape[:2], Lo):
        raise ValueError(f"dy shape {dy.shape} != {(*x_shape[:2], Lo)}")
    dx = np.zeros(x_shape)
    for o in range(Lo):
        for j in range(k):
            i = o * s - p + j
            if 0 <= i < L:
                dx[:, :, i] += dy[:, :, o] / k
    return dx


# ---------------------------------------------------------------- pooling 2-D


def _pool2d_args(x_shape, kernel, stride, padding, what):
    k = _pair(kernel, "kernel")
    s = k if stride is None else _pair(stride, "stride")
    p = _pair(padding, "padding")
    _check_positive("kernel", *k)
    _check_positive("stride", *s)
    _check_nonnegative("padding", *p)
    _check_pool_padding(k, p)
    Ho = _out_size(x_shape[2], k[0], s[0], p[0], 1, what + " (height)")
    Wo = _out_size(x_shape[3], k[1], s[1], p[1], 1, what + " (width)")
    return k, s, p, Ho, Wo


def max_pool2d(x, kernel, stride=None, padding=0):
    """2-D max pooling, as ``F.max_pool2d(x, kernel, stride, padding, return_indices=True)``.

    x: (n, C, H, W); kernel / stride / padding: int or (h, w); stride
    defaults to kernel; padding <= kernel // 2 per axis.
    Returns (y, argmax), both (n, C, Ho, Wo).  ``argmax`` is the int64 flat
    index ``ih * W + iw`` into the (unpadded) H x W plane, as torch's indices.
    Padded positions never win; the first maximum in the window's row-major
    scan order (smallest ih, then smallest iw) wins ties.
    """
    x = _as_input(x, 4)
    k, s, p, Ho, Wo = _pool2d_args(x.shape, kernel, stride, padding, "max_pool2d")
    n, C, H, Wd = x.shape
    y = np.empty((n, C, Ho, Wo))
    argmax = np.empty((n, C, Ho, Wo), dtype=np.int64)
    for oh in range(Ho):
        for ow in range(Wo):
            # flat input indices of the window in row-major scan order, padding dropped
            idx = []
            for jh in range(k[0]):
                ih = oh * s[0] - p[0] + jh
                for jw in range(k[1]):
                    iw = ow * s[1] - p[1] + jw
                    if 0 <= ih < H and 0 <= iw < Wd:
                        idx.append(ih * Wd + iw)
            win = x.reshape(n, C, H * Wd)[:, :, idx]
            y[:, :, oh, ow], argmax[:, :, oh, ow] = _window_max(win, idx)
    return y, argmax


def max_pool2d_backward(x, dy, kernel, stride=None, padding=0):
    """Gradient of ``sum(max_pool2d(x, ...)[0] * dy)`` w.r.t. x.

    x: (n, C, H, W); dy: (n, C, Ho, Wo).  Returns dx: (n, C, H, W).  Each
    output's dy goes whole to its window's first maximum; overlapping windows
    accumulate.
    """
    x = _as_input(x, 4)
    _, argmax = max_pool2d(x, kernel, stride, padding)
    n, C, H, Wd = x.shape
    dy = np.asarray(dy, dtype=np.float64)
    if dy.shape != argmax.shape:
        raise ValueError(f"dy shape {dy.shape} != {argmax.shape}")
    dx = np.zeros((n, C, H * Wd))
    for b in range(n):
        for c in range(C):
            for oh in range(argmax.shape[2]):
                for ow in range(argmax.shape[3]):
                    dx[b, c, argmax[b, c, oh, ow]] += dy[b, c, oh, ow]
    return dx.reshape(n, C, H, Wd)


def avg_pool2d(x, kernel, stride=None, padding=0):
    """2-D average pooling, as ``F.avg_pool2d(x, kernel, stride, padding)``.

    count_include_pad=True, ceil_mode=False, no divisor_override: every window
    sums its in-bounds inputs and divides by ``kh * kw``.
    x: (n, C, H, W) -> y: (n, C, Ho, Wo).
    """
    x = _as_input(x, 4)
    k, s, p, Ho, Wo = _pool2d_args(x.shape, kernel, stride, padding, "avg_pool2d")
    n, C, H, Wd = x.shape
    y = np.zeros((n, C, Ho, Wo))
    for oh in range(Ho):
        for ow in range(Wo):
            for jh in range(k[0]):
                ih = oh * s[0] - p[0] + jh
                for jw in range(k[1]):
                    iw = ow * s[1] - p[1] + jw
                    if 0 <= ih < H and 0 <= iw < Wd:
                        y[:, :, oh, ow] += x[:, :, ih, iw]
    return y / (k[0] * k[1])


def avg_pool2d_backward(x_shape, dy, kernel, stride=None, padding=0):
    """Gradient of ``sum(avg_pool2d(x, ...) * dy)`` w.r.t. x.

    x_shape: (n, C, H, W); dy: (n, C, Ho, Wo).  Returns dx: (n, C, H, W);
    each in-bounds input of a window gets ``dy / (kh * kw)``; overlapping
    windows accumulate.
    """
    x_shape = tuple(x_shape)
    if len(x_shape) != 4:
        raise ValueError(f"expected a 4-d input shape, got {x_shape}")
    k, s, p, Ho, Wo = _pool2d_args(x_shape, kernel, stride, padding, "avg_pool2d")
    H, Wd = x_shape[2], x_shape[3]
    dy = np.asarray(dy, dtype=np.float64)
    if dy.shape != (*x_shape[:2], Ho, Wo):
        raise ValueError(f"dy shape {dy.shape} != {(*x_shape[:2], Ho, Wo)}")
    dx = np.zeros(x_shape)
    area = k[0] * k[1]
    for oh in range(Ho):
        for ow in range(Wo):
            for jh in range(k[0]):
                ih = oh * s[0] - p[0] + jh
                for jw in range(k[1]):
                    iw = ow * s[1] - p[1] + jw
                    if 0 <= ih < H and 0 <= iw < Wd:
                        dx[:, :, ih, iw] += dy[:, :, oh, ow] / area
    return dx
