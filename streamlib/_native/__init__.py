"""The one switch between compiled kernels and their pure-Python twins.

Compiled modules live beside this file (built from ``.pyx`` by ``setup.py``):

* ``_chain``: ``NativeChainLogic``, the fused element-wise ops run element by
  element in C (twin: ``streamlib._ops.chain.ChainLogic``);
* ``_fold``: ``fold_chunk(f, chunk, acc)``, the fold sinks' per-chunk step
  (twin: ``functools.reduce``);
* ``_windows``: window kernels (twins: ``streamlib._time.kernels``), picked by
  name through :func:`window_kernel`: the per-chunk update functions on every
  chunk, the ``SessionCore`` once, when a session operator starts;
* ``_cep``: the pattern matcher's kernels, picked by name through
  :func:`cep_kernel` when a match stage starts: ``feed_linear``, the fast path
  for chains of single-event steps (twin: ``streamlib.cep._linear``), and
  ``stamp`` and ``close_due`` (twins: ``streamlib.cep._kernels``).

``STREAMLIB_PURE=1`` in the environment forces the pure-Python twins; so does
an install without a compiler. Both give identical results; the test suite runs
both and compares. The choice is made once per process (``functools.cache``);
tests that flip ``STREAMLIB_PURE`` call :func:`reset` afterwards.

A compiled module that cannot be imported while ``STREAMLIB_PURE`` is not set
is never a silent fallback: importing this package (so ``import streamlib``)
emits one :class:`NativeExtensionWarning` naming each such module, its import
error and how to build it.
"""

from __future__ import annotations

import importlib
import os
import warnings
from functools import cache, reduce
from types import ModuleType
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: Every compiled module, one per ``.pyx`` beside this file.
_MODULES = ("_cep", "_chain", "_fold", "_windows")


class NativeExtensionWarning(RuntimeWarning):
    """streamlib's compiled modules could not be imported; the pure-Python versions run instead.

    Results are the same, throughput is lower. Emitted once, when streamlib is
    imported. To silence it on purpose, set ``STREAMLIB_PURE=1`` (or filter
    ``ignore::RuntimeWarning:streamlib._native`` before importing streamlib).
    """


def _pure_forced() -> bool:
    return os.environ.get("STREAMLIB_PURE", "") not in ("", "0")


def _import_error(name: str) -> ImportError | None:
    try:
        importlib.import_module(f"{__name__}.{name}")
    except ImportError as exc:
        return exc
    return None


@cache
def _compiled(name: str) -> ModuleType | None:
    """The compiled module ``streamlib._native.<name>``, or None (pure forced or not built)."""
    if _pure_forced():
        return None
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ImportError:
        return None


def _warn_if_missing() -> None:
    """One :class:`NativeExtensionWarning` naming every compiled module that does not import."""
    if _pure_forced():
        return
    failed = {name: exc for name in _MODULES if (exc := _import_error(name)) is not None}
    if not failed:
        return
    why = "; ".join(f"{__name__}.{name}: {exc}" for name, exc in failed.items())
    warnings.warn(
        f"streamlib: compiled modules not available, running their pure-Python versions "
        f"(same results, lower throughput): {why}. To build them, install a C compiler and "
        f"reinstall from source: `pip install --force-reinstall --no-binary streamlib streamlib` "
        f"(in a source checkout: `make install`). Set STREAMLIB_PURE=1 to run pure Python on "
        f"purpose without this warning.",
        NativeExtensionWarning,
        stacklevel=2,
    )


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


def cep_kernel(name: str, pure: F) -> F:
    """The compiled pattern-matcher kernel ``name`` when in use, else ``pure``."""
    mod = _compiled("_cep")
    if mod is not None:
        return getattr(mod, name)  # type: ignore[no-any-return]
    return pure


_warn_if_missing()
