"""Build script for streamlib's optional Cython extensions.

Project metadata lives in pyproject.toml; this file only declares the native
extensions.  Every ``streamlib/_native/<name>.pyx`` becomes the extension module
``streamlib._native.<name>``.  The extensions are an optimisation: when Cython
is unavailable or the C compiler fails, the install still succeeds in pure
Python and a one-line warning is printed; ``import streamlib`` then warns too
(``NativeExtensionWarning``), once per process.  Release builds
(``scripts/build_dist.py``, cibuildwheel) set ``STREAMLIB_REQUIRE_NATIVE=1``.

Environment variables:

* ``STREAMLIB_ANNOTATE=1``   write Cython's annotated HTML next to each .pyx
                             (``streamlib/_native/<name>.html``) to find code
                             that still goes through Python objects.
* ``STREAMLIB_PURE=1``       skip the extensions, install pure Python only.
* ``STREAMLIB_REQUIRE_NATIVE=1``  make any extension build failure fatal.
"""

from __future__ import annotations

import glob
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
NATIVE_DIR = os.path.join("streamlib", "_native")

COMPILER_DIRECTIVES = {
    "language_level": "3",
    "boundscheck": False,
    "wraparound": False,
}
UNIX_COMPILE_ARGS = ["-O3"]


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _warn(message: str) -> None:
    print(f"WARNING: streamlib: {message}", file=sys.stderr, flush=True)


def _pyx_sources() -> list[str]:
    # Relative, '/'-separated paths: setuptools rejects absolute sources.
    return sorted(
        os.path.relpath(path, HERE).replace(os.sep, "/")
        for path in glob.glob(os.path.join(HERE, NATIVE_DIR, "*.pyx"))
    )


def _native_extensions() -> list[Extension]:
    extensions = []
    for source in _pyx_sources():
        name = os.path.splitext(os.path.basename(source))[0]
        extensions.append(
            Extension(
                f"streamlib._native.{name}",
                sources=[source],
                language="c",
            )
        )
    return extensions


class OptionalBuildExt(build_ext):
    """Cythonize and compile the extensions; on failure fall back to pure Python.

    Each extension is built on its own: one that fails is skipped (a one-line
    warning names it) and the pure-Python code is used for it at run time.
    """

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        inplace = bool(self.inplace)
        if not self.extensions:
            return
        self._failed: dict[str, str] = {}
        try:
            self._cythonize()
            super().run()
        except Exception as exc:  # noqa: BLE001 - e.g. Cython missing, no compiler at all
            if _flag("STREAMLIB_REQUIRE_NATIVE"):
                raise
            for ext in self.extensions:
                if not os.path.exists(self._built_path(ext)):
                    self._failed.setdefault(ext.name, _one_line(exc))
        if self._failed:
            if inplace:
                self._remove_stale_inplace()
            if _flag("STREAMLIB_REQUIRE_NATIVE"):
                raise RuntimeError(f"native extensions failed to build: {self._failed}")
            what = "; ".join(f"{name}: {why}" for name, why in self._failed.items())
            _warn(f"native extensions not built ({what}); using the pure-Python fallback")

    def _cythonize(self) -> None:
        try:
            from Cython.Build import cythonize
        except ImportError as exc:
            raise RuntimeError("Cython is not installed") from exc
        annotate = _flag("STREAMLIB_ANNOTATE")
        for ext in self.extensions:
            try:
                (generated,) = cythonize(
                    [ext],
                    compiler_directives=COMPILER_DIRECTIVES,
                    annotate=annotate,
                    # Regenerate when annotating so every module gets its HTML.
                    force=bool(self.force) or annotate,
                    quiet=True,
                )
            except Exception as exc:  # noqa: BLE001 - e.g. a Cython syntax error
                if _flag("STREAMLIB_REQUIRE_NATIVE"):
                    raise
                self._failed[ext.name] = _one_line(exc)
                ext.sources = []
            else:
                # Update in place: setuptools keeps private per-extension state
                # (set in finalize_options) on the original objects.
                for key, value in vars(generated).items():
                    if not key.startswith("_"):
                        setattr(ext, key, value)
            # A failed build leaves no .so behind; setuptools then skips
            # copying it into the source tree instead of failing.
            ext.optional = True
        self.extensions[:] = [ext for ext in self.extensions if ext.name not in self._failed]

    def build_extension(self, ext: Extension) -> None:
        if self.compiler.compiler_type == "unix":
            ext.extra_compile_args = UNIX_COMPILE_ARGS + [
                arg for arg in (ext.extra_compile_args or []) if arg not in UNIX_COMPILE_ARGS
            ]
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            if _flag("STREAMLIB_REQUIRE_NATIVE"):
                raise
            self._failed[ext.name] = _one_line(exc)

    def _built_path(self, ext: Extension) -> str:
        return os.path.join(self.build_lib, self.get_ext_filename(self.get_ext_fullname(ext.name)))

    def _remove_stale_inplace(self) -> None:
        """Drop in-tree binaries left by an earlier build of a now failing module.

        Otherwise an editable install would keep importing the old compiled
        code instead of the pure-Python fallback.
        """
        build_py = self.get_finalized_command("build_py")
        for name in self._failed:
            filename = self.get_ext_filename(self.get_ext_fullname(name))
            package = name.rpartition(".")[0]
            stale = os.path.join(build_py.get_package_dir(package), os.path.basename(filename))
            if os.path.exists(stale):
                os.remove(stale)

    def get_outputs(self) -> list[str]:
        # Only report files that were really built.
        return [path for path in super().get_outputs() if os.path.exists(path)]

    def get_output_mapping(self) -> dict[str, str]:
        mapping = super().get_output_mapping()
        return {built: dest for built, dest in mapping.items() if os.path.exists(built)}


def _prune_orphans() -> None:
    """Delete in-tree build products whose .pyx is gone.

    A leftover binary would shadow the pure-Python module of the same name.
    """
    from importlib.machinery import EXTENSION_SUFFIXES

    native = os.path.join(HERE, NATIVE_DIR)
    if not os.path.isdir(native):
        return
    stems = {os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(native, "*.pyx"))}
    for entry in os.listdir(native):
        path = os.path.join(native, entry)
        stem = None
        for suffix in EXTENSION_SUFFIXES:
            if entry.endswith(suffix):
                stem = entry[: -len(suffix)]
                break
        else:
            base, ext = os.path.splitext(entry)
            if ext in (".c", ".cpp", ".html") and _generated_by_cython(path):
                stem = base
        if stem is not None and stem not in stems and os.path.isfile(path):
            os.remove(path)


def _generated_by_cython(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(400)
    except OSError:
        return False
    return "Generated by Cython" in head


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {' '.join(str(exc).split())}".rstrip(": ")
    return text if len(text) <= 200 else f"{text[:120]} ... {text[-75:]}"


# Binaries and generated C left in the tree by a .pyx that has since been
# removed would shadow the pure-Python module of the same name.
_prune_orphans()
ext_modules = [] if _flag("STREAMLIB_PURE") else _native_extensions()

setup(
    ext_modules=ext_modules,
    cmdclass={"build_ext": OptionalBuildExt},
)
