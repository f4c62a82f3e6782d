"""Running apps in production: :func:`run`, the ``streamlib run`` command, settings, workers."""

from ._cli import main
from ._serve import run
from ._settings import RunSettings, SettingsError

__all__ = ["RunSettings", "SettingsError", "main", "run"]
