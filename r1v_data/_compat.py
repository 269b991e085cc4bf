"""Old import paths (r1v 0.1's flat layout) keep working for one release, with a warning.

r1v 0.2 moved every module into a subpackage (see docs/architecture.md). Code written against
0.1, such as an exported `r1v_reward.py` that imports `r1v_data.rl_rewards`, still runs: an import
of an old path loads the module at its new place and names it under both.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

# old module (under r1v_data.) -> its new place; r1v_data.store (now a package that exports Store
# and the part writers) and r1v_data.alcotd (now the AL-CoTD package) keep their own names
MOVED = {
    "ingest": "stages.ingest",
    "scoring": "stages.score",
    "generate": "stages.generate",
    "import_traces": "stages.import_traces",
    "filter": "stages.filter",
    "mix": "stages.mix",
    "export": "stages.export",
    "publish": "stages.publish",
    "preflight": "stages.preflight",
    "explain": "stages.explain",
    "stats": "stages.stats",
    "pipeline": "stages.pipeline",
    "prompts": "backends.prompts",
    "traces": "grading.traces",
    "verify": "grading.verify",
    "verify_pool": "grading.verify_pool",
    "rewards": "grading.rewards",
    "reward_model": "grading.reward_model",
    "reward_scoring": "grading.reward_scoring",
    "judge": "grading.judge",
    "rl_rewards": "grading.rl_rewards",
    "estimators": "alcotd.estimators",
    "clarity": "alcotd.clarity",
    "dedup": "curation.dedup",
    "minhash": "curation.minhash",
    "phash": "curation.phash",
    "decontam": "curation.decontam",
    "sample_checks": "curation.sample_checks",
    "shards": "outputs.shards",
    "card": "outputs.card",
    "recipe": "outputs.recipe",
    "sources": "readers.sources",
    "presets": "readers.presets",
    "samples": "readers.samples",
    "images": "readers.images",
    "schema": "store.schema",
    "sandbox": "store.sandbox",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(
        self, fullname: str, path: object, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != "r1v_data" or name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        """A plain module; `exec_module` fills it."""

    def exec_module(self, module: ModuleType) -> None:
        # the old name gets the new module's names (the same objects), not the module itself, so
        # the new module's own __spec__ and __name__ stay true
        new = "r1v_data." + MOVED[module.__name__.rpartition(".")[2]]
        warnings.warn(f"{module.__name__} moved to {new}; the old path goes away in r1v 0.3",
                      DeprecationWarning, stacklevel=2)  # fmt: skip
        moved = importlib.import_module(new)
        module.__dict__.update(
            {k: v for k, v in vars(moved).items() if not k.startswith("__") or k in ("__doc__", "__all__")}
        )


def install() -> None:
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())
