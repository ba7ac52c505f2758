"""Cold and cached build time of a 4-layer module (generate + import + Numba compile).

Run twice with the same empty cache directory; the first run is cold, the second cached:

    export DERIVE_CACHE_DIR=$(mktemp -d)
    python bench/cold_build.py && python bench/cold_build.py
"""

import time
from pathlib import Path

start = time.perf_counter()
import numpy as np  # noqa: E402

import derive  # noqa: E402

imported = time.perf_counter()
module = derive.build(derive.load_spec(Path(__file__).with_name("four_layers.toml")))
built = time.perf_counter()
params = module.init_params(0)
rng = np.random.default_rng(0)
X = rng.random((64, 8))
Y = np.eye(4)[rng.integers(0, 4, 64)]
module.loss_and_grad(params, X, Y)
module.fit(params, X, Y, epochs=1)
called = time.perf_counter()
print(
    f"import derive {imported - start:.2f}s, generate+import {built - imported:.2f}s, "
    f"first calls (compile or cache load) {called - built:.2f}s, total {called - start:.2f}s"
)
