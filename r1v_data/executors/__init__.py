"""Executors: where a stage's model requests run. `local` (this process, the default) or `ray`
(Ray Data actor pools over a cluster). Stages hand over a `Work` and items and get `Done`
records back; the request ids, the rows and the store are the same under both."""

from __future__ import annotations

from r1v_data.backends import is_batch_spec
from r1v_data.config import ExecutorConfig
from r1v_data.errors import ConfigError
from r1v_data.executors.base import BlockFn, Done, Executor, Resources, Rows, Work

__all__ = ["BlockFn", "Done", "Executor", "Resources", "Rows", "Work", "make_executor", "require"]


def require(cfg: ExecutorConfig, *specs: str | None) -> None:
    """Refuse, before a run begins, an executor whose extra is not installed, and a batch API
    (`specs`: the backends the run uses) on Ray: a batch backend records its batch ids in the
    store, which only the driver writes, and it needs no workers (the provider runs the batch)."""
    if cfg.kind == "ray":
        from r1v_data.executors.ray_data import import_ray

        import_ray()
        if batch := next((s for s in specs if is_batch_spec(s)), None):
            raise ConfigError(
                f"{batch.partition(':')[0]}: a batch API runs from this process; use --executor local "
                "(the provider does the work, Ray would add nothing)"
            )


def make_executor(cfg: ExecutorConfig) -> Executor:
    """The executor `cfg.kind` names; `ray` needs the `ray` extra and says so in one line."""
    if cfg.kind == "ray":
        from r1v_data.executors.ray_data import RayExecutor

        return RayExecutor(cfg)
    from r1v_data.executors.local import LocalExecutor

    return LocalExecutor()
