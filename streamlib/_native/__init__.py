"""The one switch between compiled kernels and their pure-Python twins.

Compiled modules live beside this file (built from ``.pyx`` by ``setup.py``):

* ``_chain``: ``NativeChainLogic``, the fused element-wise ops run element by
  element in C (twin: ``streamlib._ops.chain.ChainLogic``);
* ``_fold``: ``fold_chunk(f, chunk, acc)``, the fold sinks' per-chunk step
  (twin: ``functools.reduce``);
* ``_windows``: window kernels (twins: ``streamlib._time.kernels``), picked by
  name through :func:`window_kernel` on every chunk.

``STREAMLIB_PURE=1`` in the environment forces the pure-Python twins; so does
an install without a compiler. Both give identical results; the test suite runs
both and compares. The choice is made once per process (``functools.cache``);
tests that flip ``STREAMLIB_PURE`` call :func:`reset` afterwards.
"""

from __future__ import annotations

import importlib
import os
from functools import cache, reduce
from types import ModuleType
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def _pure_forced() -> bool:
    return os.environ.get("STREAMLIB_PURE", "") not in ("", "0")


@cache
def _compiled(name: str) -> ModuleType | None:
    """The compiled module ``streamlib._native.<name>``, or None (pure forced or not built)."""
    if _pure_forced():
        return None
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ImportError:
        return None


def reset() -> None:
    """Forget the cached choice, so the next call reads ``STREAMLIB_PURE`` again."""
    _compiled.cache_clear()


def native_enabled() -> bool:
    """True when the compiled kernels are in use."""
    return _compiled("_chain") is not None


def chain_logic_class() -> Any:
    """The class that runs fused element-wise ops: compiled when available."""
    mod = _compiled("_chain")
    if mod is not None:
        return mod.NativeChainLogic
    from .._ops.chain import ChainLogic

    return ChainLogic


def fold_function() -> Callable[[Callable[[Any, Any], Any], list[Any], Any], Any]:
    """``fold(f, chunk, acc)`` with the result of ``functools.reduce(f, chunk, acc)``."""
    mod = _compiled("_fold")
    if mod is not None:
        fold: Callable[[Callable[[Any, Any], Any], list[Any], Any], Any] = mod.fold_chunk
        return fold
    return reduce


def window_kernel(name: str, pure: F) -> F:
    """The compiled window kernel ``name`` when there is one in use, else ``pure``."""
    mod = _compiled("_windows")
    if mod is not None:
        return getattr(mod, name, pure)  # type: ignore[no-any-return]
    return pure
