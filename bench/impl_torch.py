"""PyTorch eager: nn.Linear layers, F.*_with_logits / F.cross_entropy, torch.optim."""

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


class Trainer:
    def __init__(self, workload, params, X, Y, *, shuffle, batch_size=None):
        import torch
        import torch.nn.functional as F

        self.torch = torch
        sizes, acts = workload.sizes, workload.activations
        layers = []
        for i in range(len(acts)):
            linear = torch.nn.Linear(sizes[i], sizes[i + 1], dtype=torch.float32)
            with torch.no_grad():  # the shared initial weights; W is (n_out, n_in)
                linear.weight.copy_(torch.from_numpy(params[2 * i]))
                linear.bias.copy_(torch.from_numpy(params[2 * i + 1]))
            layers.append(linear)
            if i < len(acts) - 1:
                layers.append(_activation(acts[i]))
        # The output activation lives in the loss (sigmoid+BCE, softmax+CE), as
        # PyTorch users write it; the loss values are the same.
        self.model = torch.nn.Sequential(*layers)
        self.X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        if workload.loss == "cross_entropy":
            self.Y = torch.from_numpy(Y.argmax(axis=1))  # class indices
            self.loss_fn = F.cross_entropy
        elif workload.loss == "binary_cross_entropy":
            self.Y = torch.from_numpy(np.ascontiguousarray(Y, dtype=np.float32))
            self.loss_fn = F.binary_cross_entropy_with_logits
        else:
            raise ValueError(f"torch bench: no loss {workload.loss!r}")
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
                opt.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
                total += loss.item() * len(x)
            history[e] = total / n
        return history

    def get_params(self) -> list[np.ndarray]:
        return [p.detach().numpy().copy() for p in self.model.parameters()]
