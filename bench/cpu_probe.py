"""Single-threaded float32 GEMM rate for about half a second (GFLOP/s on stdout).

run.py starts it alone and then twice at once: if two copies together do not
reach about twice one copy's rate, the machine's cores are not all available
(other load, or virtual CPUs sharing physical cores), and multi-threaded
timings (BLAS, OpenMP, XLA) suffer far more than single-threaded ones.
"""

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

import time  # noqa: E402

import numpy as np  # noqa: E402

a = np.random.default_rng(0).random((256, 784), dtype=np.float32)
b = np.random.default_rng(1).random((784, 256), dtype=np.float32)
out = np.empty((256, 256), dtype=np.float32)
np.dot(a, b, out=out)
count, start = 0, time.perf_counter()
while time.perf_counter() - start < 0.5:
    np.dot(a, b, out=out)
    count += 1
print(2 * 256 * 784 * 256 * count / (time.perf_counter() - start) / 1e9)
