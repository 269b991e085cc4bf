"""r1v_data: ingest, distil, curate and publish reasoning data for vision-language models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("r1v")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

from r1v_data._compat import install as _install_old_import_paths

_install_old_import_paths()
