"""`run_import_traces`: completions made elsewhere (API batch outputs, other tools, published
model outputs) join the store as trace rows, parsed and verified like generated ones.

Each row must name its problem: by `sample_id`, or by the source's own id (`id`/`source_id`,
matched against the samples' `source_id`, optionally within one `--source`), or by the exact
question text. A row that names no stored problem goes to the quarantine; nothing is dropped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from r1v_data import __version__, text
from r1v_data.config import ImportTracesConfig
from r1v_data.errors import ConfigError, Interrupted
from r1v_data.grading.traces import parse_completion
from r1v_data.grading.verify_pool import VerifierPool
from r1v_data.readers.samples import quarantine_row
from r1v_data.readers.sources import Record, open_source
from r1v_data.store import Store, utcnow

_TEXT_FIELDS = ("text", "response", "completion", "model_output", "output")
_TEACHER_FIELDS = ("teacher", "model")


@dataclass
class ImportResult:
    run_id: str
    read: int = 0
    imported: int = 0
    unchanged: int = 0
    unmatched: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    label_agreement: Counter[str] = field(default_factory=Counter)  # our verdict vs a shipped label

    def as_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in self.__dict__.items() if not isinstance(v, Counter)},
            "verdicts": dict(self.verdicts),
            "label_agreement": dict(self.label_agreement),
        }


class _Index:
    """Ways to find a stored sample from an imported row."""

    def __init__(self, store: Store, source: str | None):
        con = store.connect()
        try:
            rows = con.sql(
                "SELECT p.sample_id, p.source, p.source_id, s.question, s.answer, s.answer_type, "
                "s.options FROM provenance p JOIN samples s USING (sample_id)"
            ).fetchall()
        finally:
            con.close()
        self.samples: dict[str, dict[str, Any]] = {}
        self.by_source_id: dict[str, set[str]] = {}
        self.by_question: dict[str, set[str]] = {}
        for sid, src, source_id, question, answer, answer_type, options in rows:
            self.samples[sid] = {
                "sample_id": sid,
                "answer": answer,
                "answer_type": answer_type,
                "options": options,
            }
            if source is None or src == source:
                if source_id is not None:
                    self.by_source_id.setdefault(str(source_id), set()).add(sid)
                self.by_question.setdefault(text.identity_text(question), set()).add(sid)

    def find(self, row: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        if isinstance(row.get("sample_id"), str) and row["sample_id"] in self.samples:
            return self.samples[row["sample_id"]], ""
        for key in ("source_id", "id", "custom_id"):
            if row.get(key) is not None:
                found = self.by_source_id.get(str(row[key]), set())
                if len(found) == 1:
                    return self.samples[next(iter(found))], ""
                if found:
                    return None, f"{key}={row[key]!r} matches {len(found)} samples; pass --source"
        question = row.get("question")
        if isinstance(question, dict):  # R1-V eval logs nest the prompt
            question = question.get("question")
        if isinstance(question, str):
            found = self.by_question.get(text.identity_text(question), set())
            if len(found) == 1:
                return self.samples[next(iter(found))], ""
        return None, "names no stored sample (no matching sample_id, id or question)"


def run_import_traces(cfg: ImportTracesConfig) -> ImportResult:
    sources = [open_source(str(p), records_key=cfg.records_key) for p in cfg.files]  # fail early
    with Store.open(cfg.store, write=True) as store:
        run_id = store.begin_run("import-traces")
        result = ImportResult(run_id)
        index = _Index(store, cfg.source)
        if cfg.source and not index.by_question:
            raise ConfigError(f"--source {cfg.source!r}: the store has no samples from that source")
        done = store.ids("traces", "request_id") | store.ids("quarantine", "quarantine_id")
        status = "failed"
        try:
            with (
                VerifierPool() as verifier,
                store.writer("traces", run_id, flush_rows=1024) as traces,
                store.writer("quarantine", run_id, flush_rows=1024) as quarantine,
            ):
                for src in sources:
                    for record in src.records():
                        result.read += 1
                        _import_one(
                            record,
                            src.uri,
                            src.name,
                            cfg,
                            index,
                            done,
                            verifier,
                            traces,
                            quarantine,
                            result,
                        )
            status = "ok"
        except KeyboardInterrupt as exc:
            status = "interrupted"
            raise Interrupted(f"import-traces run {run_id} saved {result.imported} traces") from exc
        finally:
            manifest = {
                "command": "import-traces",
                "r1v_version": __version__,
                "run_id": run_id,
                "config": cfg.model_dump(mode="json"),
                "counts": result.as_dict(),
                "inputs": [s.fingerprint for s in sources],
            }
            store.finish_run(run_id, status, result.as_dict(), manifest)
    return result


def _import_one(
    record: Record,
    uri: str,
    name: str,
    cfg: ImportTracesConfig,
    index: _Index,
    done: set[str],
    verifier: VerifierPool,
    traces: Any,
    quarantine: Any,
    result: ImportResult,
) -> None:
    row = _unwrap_batch_output(record.data or {})
    completion = next((row[k] for k in _TEXT_FIELDS if isinstance(row.get(k), str)), None)
    sample, why = index.find(row) if record.data is not None else (None, "")
    problem = (record.error and record.error[0]) or (completion is None and "no completion text") or why
    if problem or sample is None:
        result.unmatched += 1
        reason = "unmatched trace" if record.data is not None else str(problem)
        bad = quarantine_row(
            name, uri, record.location, reason, str(problem), record.raw or str(row)[:4000], traces.run_id
        )
        if bad["quarantine_id"] not in done:  # else recorded by an earlier import of this file
            done.add(bad["quarantine_id"])
            quarantine.add(bad)
        return
    teacher = cfg.teacher or next((str(row[k]) for k in _TEACHER_FIELDS if row.get(k)), "unknown")
    # the same completion for the same problem is one trace, whichever file or line it came from
    rid = text.stable_hash("import", sample["sample_id"], teacher, completion)
    if rid in done:
        result.unchanged += 1
        return
    done.add(rid)
    finish = row.get("finish_reason")
    finish = str(finish) if finish is not None else None
    parsed = parse_completion(
        completion, finish, options=sample["options"], answer_type=sample["answer_type"]
    )
    verdict = verifier.verify(parsed.answer, sample["answer"], sample["answer_type"], sample["options"])
    result.verdicts[verdict.verdict] += 1
    label = _shipped_label(row)
    if label is not None and verdict.verdict in ("correct", "wrong"):
        result.label_agreement["agree" if label == (verdict.verdict == "correct") else "disagree"] += 1
    traces.add(
        {
            "request_id": rid,
            "sample_id": sample["sample_id"],
            "teacher": teacher,
            "round": 1,
            "sample_index": 0,
            "text": completion,
            "think": parsed.think,
            "answer": parsed.answer,
            "finish_reason": finish,
            "think_closed": parsed.think_closed,
            "truncated": parsed.truncated,
            "repetition": parsed.repetition,
            "verdict": verdict.verdict,
            "verifier": verdict.verifier,
            "provenance": f"imported:{record.location}",  # the location names the file
            "run_id": traces.run_id,
            "created_at": utcnow(),
        }
    )
    result.imported += 1


def _unwrap_batch_output(row: dict[str, Any]) -> dict[str, Any]:
    """OpenAI batch output lines ({"custom_id", "response": {"body": {"choices": ...}}}) as flat rows."""
    body = (row.get("response") or {}).get("body") if isinstance(row.get("response"), dict) else None
    if not isinstance(body, dict) or not body.get("choices"):
        return row
    choice = body["choices"][0]
    message = choice.get("message") or {}
    return {
        **row,
        "response": message.get("content"),
        "finish_reason": choice.get("finish_reason"),
        "model": body.get("model"),
    }


def _shipped_label(row: dict[str, Any]) -> bool | None:
    for key in ("correct", "is_correct"):
        if isinstance(row.get(key), bool):
            return row[key]
    return None
