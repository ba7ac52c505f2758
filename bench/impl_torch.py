"""PyTorch eager: nn.Linear layers (W7: nn.BatchNorm1d, nn.Dropout; W5, W6:
nn.Conv2d, nn.MaxPool2d, nn.Flatten), F.*_with_logits / F.cross_entropy,
torch.optim."""

from __future__ import annotations

import numpy as np
from workloads import epoch_order

NAME = "pytorch"


def version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def _activation(name: str):
    import torch

    return {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[name]()


def _fixed_dropout(p: float):
    """nn.Dropout's training-mode arithmetic with a mask set from outside (the
    agreement check's fixed masks): x * mask / (1 - p)."""
    import torch

    class FixedDropout(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale, self.mask = 1.0 / (1.0 - p), None

        def forward(self, x):
            return x * self.mask * self.scale

    return FixedDropout()


class Trainer:
    def __init__(self, workload, params, X, Y, *, shuffle, batch_size=None,
                 buffers=None, masks=None):  # fmt: skip
        import torch
        import torch.nn.functional as F

        self.torch = torch
        if masks is not None and shuffle:
            raise ValueError("fixed masks: the agreement run is unshuffled")
        torch.manual_seed(workload.seed)  # nn.Dropout's masks
        layers, self.norms, self.dropouts = [], [], []
        dense, last = 0, len(workload.activations) - 1
        for layer, shape in zip(workload.layers, workload.shapes, strict=False):
            width = shape[0]  # features, or channels of an image
            if layer["kind"] == "dense":
                linear = torch.nn.Linear(width, layer["units"], dtype=torch.float32)
                layers.append(linear)
                if dense < last:
                    layers.append(_activation(layer["activation"]))
                dense += 1
            elif layer["kind"] == "conv2d":
                layers.append(torch.nn.Conv2d(
                    width, layer["filters"], layer["kernel"], stride=layer["stride"],
                    padding=layer["padding"], dilation=layer["dilation"],
                ))  # fmt: skip
                layers.append(_activation(layer["activation"]))
            elif layer["kind"] == "max_pool2d":
                layers.append(torch.nn.MaxPool2d(
                    layer["kernel"], layer["stride"], layer["padding"]
                ))  # fmt: skip
            elif layer["kind"] == "flatten":
                layers.append(torch.nn.Flatten())
            elif layer["kind"] == "batch_norm":
                norm = torch.nn.BatchNorm1d(width, eps=layer["eps"],
                                            momentum=layer["momentum"],
                                            affine=layer["affine"])  # fmt: skip
                layers.append(norm)
                self.norms.append(norm)
            else:
                drop = _fixed_dropout(layer["p"]) if masks is not None else None
                layers.append(drop or torch.nn.Dropout(layer["p"]))
                self.dropouts.append(drop)
        # The output activation lives in the loss (sigmoid+BCE, softmax+CE), as
        # PyTorch users write it; the loss values are the same.
        self.model = torch.nn.Sequential(*layers)
        with torch.no_grad():  # the shared initial weights; W is (n_out, n_in)
            for mine, given in zip(self.model.parameters(), params, strict=True):
                mine.copy_(torch.from_numpy(given))
            for norm, k in zip(self.norms, range(0, 2 * len(self.norms), 2),
                               strict=True):  # fmt: skip
                if buffers:
                    norm.running_mean.copy_(torch.from_numpy(buffers[k]))
                    norm.running_var.copy_(torch.from_numpy(buffers[k + 1]))
        self.model.train()
        self.masks = None if masks is None else [torch.from_numpy(m) for m in masks]
        self.X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        if workload.loss == "cross_entropy":
            self.to_targets = lambda Y: torch.from_numpy(Y.argmax(axis=1))  # classes
            self.loss_fn = F.cross_entropy
        elif workload.loss == "binary_cross_entropy":
            self.to_targets = lambda Y: torch.from_numpy(
                np.ascontiguousarray(Y, dtype=np.float32)
            )
            self.loss_fn = F.binary_cross_entropy_with_logits
        else:
            raise ValueError(f"torch bench: no loss {workload.loss!r}")
        self.Y = self.to_targets(Y)
        if workload.optimizer == "sgd":
            self.opt = torch.optim.SGD(self.model.parameters(), lr=workload.lr)
        elif workload.optimizer == "adam":
            self.opt = torch.optim.Adam(self.model.parameters(), lr=workload.lr)
        else:
            raise ValueError(f"torch bench: no optimizer {workload.optimizer!r}")
        self.batch_size = batch_size or workload.batch_size
        self.shuffle, self.seed, self.epoch = shuffle, workload.seed, 0

    def fit(self, epochs: int) -> np.ndarray:
        n, B = len(self.X), self.batch_size
        X, Y, model, opt, loss_fn = self.X, self.Y, self.model, self.opt, self.loss_fn
        history = np.empty(epochs)
        for e in range(epochs):
            if self.shuffle:
                order = self.torch.from_numpy(epoch_order(self.seed, self.epoch, n))
            self.epoch += 1
            total = 0.0
            for start in range(0, n, B):
                if self.shuffle:
                    rows = order[start : start + B]
                    x, y = X[rows], Y[rows]
                else:
                    x, y = X[start : start + B], Y[start : start + B]
                if self.masks is not None:
                    self._set_masks([m[start : start + B] for m in self.masks])
                opt.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
                total += loss.item() * len(x)
            history[e] = total / n
        return history

    def _set_masks(self, masks) -> None:
        for drop, mask in zip(self.dropouts, masks, strict=True):
            drop.mask = mask

    def loss_and_grad(self, x, y, masks):
        """Training-mode batch loss and gradients in the order of params, with
        these masks (batch norm updates its running statistics, as in a step)."""
        torch = self.torch
        self._set_masks([torch.from_numpy(m) for m in masks])
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        y = self.to_targets(y)
        self.opt.zero_grad()
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        grads = [p.grad.numpy().copy() for p in self.model.parameters()]
        return float(loss.item()), grads

    def get_params(self) -> list[np.ndarray]:
        return [p.detach().numpy().copy() for p in self.model.parameters()]

    def get_buffers(self) -> list[np.ndarray]:
        return [
            b.numpy().copy()
            for norm in self.norms
            for b in (norm.running_mean, norm.running_var)
        ]
