"""learndock: reusable learnware components for multiscale scientific imaging.

The distribution's code lives in the top-level packages ``specs`` (the dock),
``components`` (the algorithms), ``pipelines`` (composition and execution) and
``sample_data``; this package holds the public toolkit for plug-in authors
(:mod:`learndock.testing`) and the version.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("learndock")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0"

__all__ = ["__version__"]
