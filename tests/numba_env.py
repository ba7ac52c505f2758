"""The environment of test processes that rely on Numba's on-disk cache."""

from __future__ import annotations

import os


def caching_env(**overrides: str) -> dict[str, str]:
    """``os.environ`` updated with ``overrides``, at an optimization level at which
    Numba writes its cache.

    At ``NUMBA_OPT=0`` (make test's first tier) Numba caches no function that calls
    another jitted one: unoptimized code keeps the callee's address as a "dynamic
    global", which optimization removes. Those processes compile at
    ``NUMBA_OPT=1`` instead."""
    env = {**os.environ, **overrides}
    if env.get("NUMBA_OPT", "").strip() == "0":
        env["NUMBA_OPT"] = "1"
    return env
