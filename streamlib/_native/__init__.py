"""The one switch between compiled kernels and their pure-Python twins.

Compiled modules live beside this file (built from ``.pyx`` by ``setup.py``).
``STREAMLIB_PURE=1`` in the environment forces the pure-Python twins; so does
an install without a compiler. Both give identical results; the test suite runs
both and compares.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any


def _pure_forced() -> bool:
    return os.environ.get("STREAMLIB_PURE", "") not in ("", "0")


@cache
def _compiled_chain() -> Any:
    if _pure_forced():
        return None
    try:
        from . import _chain  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _chain


def native_enabled() -> bool:
    """True when the compiled kernels are in use."""
    return _compiled_chain() is not None


def chain_logic_class() -> Any:
    """The class that runs fused element-wise ops: compiled when available."""
    mod = _compiled_chain()
    if mod is not None:
        return mod.NativeChainLogic
    from .._ops.chain import ChainLogic

    return ChainLogic
