"""`run_doctor`: list what is wrong with a store's files and, with `repair`, put it right.

Reading commands refuse a damaged store with one line naming the first problem; doctor lists them
all (parts that are truncated, of another table, copies of other parts or from another store; a
missing schema part; a lost or unreadable catalog; temporary files of writes that never finished)
and says what `--repair` does about each (`r1v_data/store/repair.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1v_data.errors import StoreError
from r1v_data.store import Store
from r1v_data.store.repair import UNREADABLE_INFO, Problem, diagnose, repair


@dataclass
class DoctorResult:
    store: str
    problems: list[Problem] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    remaining: list[Problem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"store": self.store, "problems": [p.as_dict() for p in self.problems],
                "repaired": self.repaired, "remaining": [p.as_dict() for p in self.remaining]}  # fmt: skip


def run_doctor(store: Path, fix: bool = False) -> DoctorResult:
    root = Path(store).expanduser().absolute()
    if not (root / "store.json").is_file():
        raise StoreError(f"{root} is not an r1v store (no store.json)")
    result = DoctorResult(str(root), diagnose(root))
    if fix and any(p.kind == UNREADABLE_INFO for p in result.problems):
        raise StoreError(
            f"cannot repair {root}: its store.json is damaged; restore it from a copy of the store"
        )
    if fix:
        with Store.open(root, write=True, tidy=False):  # the lock: no writer may run meanwhile
            result.repaired = repair(root, result.problems)
        result.remaining = diagnose(root)
    return result
