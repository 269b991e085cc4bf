"""Executors: where a stage's model requests run. `local` (this process, the default) or `ray`
(Ray Data actor pools over a cluster). Stages hand over a `Work` and items and get `Done`
records back; the request ids, the rows and the store are the same under both."""

from __future__ import annotations

from r1v_data.config import ExecutorConfig
from r1v_data.executors.base import BlockFn, Done, Executor, Resources, Rows, Work

__all__ = ["BlockFn", "Done", "Executor", "Resources", "Rows", "Work", "make_executor", "require"]


def require(cfg: ExecutorConfig) -> None:
    """Refuse, before a run begins, an executor whose extra is not installed."""
    if cfg.kind == "ray":
        from r1v_data.executors.ray_data import import_ray

        import_ray()


def make_executor(cfg: ExecutorConfig) -> Executor:
    """The executor `cfg.kind` names; `ray` needs the `ray` extra and says so in one line."""
    if cfg.kind == "ray":
        from r1v_data.executors.ray_data import RayExecutor

        return RayExecutor(cfg)
    from r1v_data.executors.local import LocalExecutor

    return LocalExecutor()
