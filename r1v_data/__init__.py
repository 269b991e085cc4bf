"""r1v_data: ingest, distil, curate and publish reasoning data for vision-language models."""

from r1v_data._compat import install as _install_old_import_paths

_install_old_import_paths()


def __getattr__(name: str) -> str:
    # `__version__` on first use: importlib.metadata costs ~0.1 s of every helper process's start
    # (the HTTP client, the grader, the verifier's workers), and none of them needs it
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("r1v")
    except PackageNotFoundError:  # running from a source tree that was never installed
        value = "0.0.0+source"
    globals()["__version__"] = value
    return value
