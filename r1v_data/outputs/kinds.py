"""The output kinds `mix` writes, each as the query that selects its rows from a filtered store and
the function that builds one row:

- `sft`: one row per kept trace: the user turn (image parts, then the question with the
  answer-format instruction the teacher saw) and the assistant turn (the `<think>` trace and the
  answer), with the sample's images in `images`, as TRL's SFTTrainer reads conversational data;
- `rl`: one row per kept sample with a reference answer: the prompt, the images and the
  `solution` the GRPO accuracy reward verifies against;
- `preference`: per kept sample, the best kept trace verified correct (chosen) against the
  lowest-rewarded candidate trace with a lower reward (rejected), for DPO/MPO. A chosen trace is
  never a wrong one, whatever the filter kept (`filter --keep-wrong`, `--min-score 0`): a sample
  with no correct kept trace makes no pair.

The dataset card reads the same queries, so it lives beside them (in `outputs/`) and not in the
stage that runs them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from r1v_data.backends.prompts import build_prompt
from r1v_data.grading.reward_model import completion_text

KINDS = {"sft": "sft_row", "rl": "rl_row", "preference": "preference_pair"}


# SFT and RL: no ORDER BY and no window over whole rows: DuckDB then streams them, so memory does
# not grow with the number of rows mixed. Preference pairs need a sort (below), which DuckDB spills
# to disk past its memory limit.
_SAMPLE = (
    "s.sample_id, s.question, s.options, s.answer, s.answer_type, s.images, s.source, s.subject, s.difficulty"
)


# the kept traces (t) of the filter run $run, with their samples (s)
KEPT_TRACES = """
FROM (SELECT * FROM traces WHERE error IS NULL) t
SEMI JOIN (SELECT request_id FROM decisions WHERE run_id = $run AND kept AND request_id IS NOT NULL) k
     USING (request_id)
JOIN samples s ON s.sample_id = t.sample_id"""


# Mix reads the SFT rows a group of trace parts at a time (`store/groups.py`: up to PART_ROWS
# traces, the view `part_traces`), and the RL rows in parts split by a hash of the sample id ($parts
# of them; one for up to RL_PART_ROWS rows). In one query DuckDB built its hash table on the kept
# traces, texts and all, and 20M of them ran out of mix's 256MB; split by sample, each SFT part
# rescanned every trace. A group's kept ids are found first (PART_KEPT, one pass over the narrow
# decisions, its hash table on the group's ids alone), so the rows' query joins only the group's
# kept ids and samples. Rows come in the traces' own order, group after group.
PART_ROWS = 1_000_000
# RL rows join the kept sample ids to the samples, whose hash table holds their questions and
# images: parts of up to 100k samples (in parts of 1M, 500k kept samples took the peak from 200 MB
# to 380 MB). Each part scans the decisions and samples again: 20 scans at 2M samples.
RL_PART_ROWS = 100_000
PART_KEPT = """
CREATE OR REPLACE TEMP TABLE part_kept AS
SELECT request_id FROM decisions WHERE run_id = $run AND kept AND request_id IS NOT NULL
  AND request_id IN (SELECT request_id FROM part_traces)"""
RL_SIZE = "SELECT count(*) FROM decisions WHERE run_id = $run AND kept AND request_id IS NULL"


# what the dataset card counts about each kept trace
TRACE_COLUMNS = (
    "t.teacher, t.verifier, t.completion_tokens, coalesce(t.completion_tokens, length(t.text) // 4) AS tokens"
)
_SFT = f"SELECT {_SAMPLE}, t.request_id, t.text, {TRACE_COLUMNS}"

# the SFT rows of one group of trace parts, after PART_KEPT
SFT_QUERY = f"""{_SFT}
FROM (SELECT * FROM part_traces WHERE error IS NULL) t
SEMI JOIN part_kept k USING (request_id)
JOIN (SELECT * FROM samples WHERE sample_id IN (SELECT sample_id FROM part_traces)) s
     ON s.sample_id = t.sample_id"""

# the same rows in one query over the whole store (what bench/mix.py's DuckDB baseline copies)
SFT_ONE_QUERY = f"{_SFT} {KEPT_TRACES}"

RL_QUERY = f"""
SELECT {_SAMPLE} FROM decisions d JOIN (SELECT * FROM samples WHERE hash(sample_id) % $parts = $part) s
     USING (sample_id)
WHERE d.run_id = $run AND d.kept AND d.request_id IS NULL AND s.answer IS NOT NULL
  AND hash(d.sample_id) % $parts = $part"""


# chosen: the best kept trace of a sample that is verified correct; rejected: its lowest-rewarded
# candidate below that
# Ordered by sample: the GROUP BY and the window hand rows over in any order (8 runs, 8 orders),
# so the same store gave other shards on every mix. DuckDB's sort spills, so memory stays bounded.
PREFERENCE_QUERY = f"""
WITH cand AS (
    SELECT d.sample_id, d.request_id, d.kept AND v.verdict = 'correct' AS choosable, r.value AS reward
    FROM decisions d
    JOIN (SELECT request_id, arg_max(value, created_at) AS value FROM scores
          WHERE name = 'reward' AND version = $version GROUP BY request_id) r USING (request_id)
    JOIN (SELECT request_id, arg_max(verdict, created_at) AS verdict FROM traces
          WHERE error IS NULL GROUP BY request_id) v USING (request_id)
    WHERE d.run_id = $run AND d.request_id IS NOT NULL
), pairs AS (
    SELECT sample_id,
           -- ties broken by request id: the same pairs on every run (arg_max alone picks any)
           arg_max(request_id, (reward, request_id)) FILTER (WHERE choosable) AS chosen_id,
           max(reward) FILTER (WHERE choosable) AS chosen_score,
           arg_min(request_id, (reward, request_id)) AS rejected_id, min(reward) AS rejected_score
    FROM cand GROUP BY sample_id HAVING min(reward) < max(reward) FILTER (WHERE choosable)
)
SELECT {_SAMPLE}, p.chosen_id, p.chosen_score, p.rejected_id, p.rejected_score,
       c.text AS chosen_text, r.text AS rejected_text
FROM pairs p JOIN samples s USING (sample_id)
JOIN traces c ON c.request_id = p.chosen_id AND c.error IS NULL
JOIN traces r ON r.request_id = p.rejected_id AND r.error IS NULL
QUALIFY row_number() OVER (PARTITION BY p.sample_id ORDER BY c.created_at DESC, r.created_at DESC) = 1
ORDER BY p.sample_id"""


SFT_COLUMNS = f"""
SELECT t.request_id, t.sample_id, t.teacher, s.source, s.subject, s.difficulty, s.answer_type,
       t.completion_tokens, length(t.text) AS text_chars,
       coalesce(t.completion_tokens, length(t.text) // 4) AS tokens  -- imports may have no count
{KEPT_TRACES}"""


def _prompt(row: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """The user turn as content parts, the images for the `images` column, and their size."""
    images = row["images"] or []
    text = _user_text(row["question"], bool(row["options"]))
    parts = [{"type": "image", "text": None} for _ in images] + [{"type": "text", "text": text}]
    hf_images = [{"bytes": im["bytes"], "path": None} for im in images]
    return (
        [{"role": "user", "content": parts}],
        hf_images,
        sum(len(im["bytes"]) for im in images) + len(text),
    )


@lru_cache(maxsize=1024)
def _user_text(question: str, has_options: bool) -> str:
    """The user turn's text as the teacher saw it. Cached: the traces of a sample come together
    (one sample, many traces), and rendering it again for each was a fifth of mix's time."""
    # the images go in their own parts, so the text is the same with or without them
    sample = {"question": question, "options": [""] if has_options else [], "images": []}
    (user,) = build_prompt(sample, supports_images=True).messages
    return user.text


def _assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def _meta(row: dict[str, Any]) -> dict[str, Any]:
    return {"sample_id": row["sample_id"], "source": row["source"], "subject": row["subject"],
            "difficulty": row["difficulty"]}  # fmt: skip


def _sft(row: dict[str, Any]) -> tuple[dict[str, Any], int]:
    prompt, images, size = _prompt(row)
    answer = completion_text(row)
    built = {"id": row["request_id"], "request_id": row["request_id"], "messages": [*prompt, _assistant(answer)],
             "images": images, **_meta(row)}  # fmt: skip
    return built, size + len(answer)


def _rl(row: dict[str, Any]) -> tuple[dict[str, Any], int]:
    prompt, images, size = _prompt(row)
    built = {"id": row["sample_id"], "prompt": prompt, "images": images, "solution": row["answer"],
             "answer_type": row["answer_type"], "options": row["options"] or [], **_meta(row)}  # fmt: skip
    return built, size


def _preference(row: dict[str, Any]) -> tuple[dict[str, Any], int]:
    prompt, images, size = _prompt(row)
    chosen, rejected = (
        completion_text({"text": row["chosen_text"]}),
        completion_text({"text": row["rejected_text"]}),
    )
    built = {"id": f"{row['chosen_id']}>{row['rejected_id']}", "sample_id": row["sample_id"], "prompt": prompt,
             "images": images, "chosen": [_assistant(chosen)], "rejected": [_assistant(rejected)],
             "chosen_score": row["chosen_score"], "rejected_score": row["rejected_score"],
             "chosen_request_id": row["chosen_id"], "rejected_request_id": row["rejected_id"]}  # fmt: skip
    return built, size + len(chosen) + len(rejected)


BUILDERS = {"sft": _sft, "rl": _rl, "preference": _preference}
QUERIES = {"sft": SFT_QUERY, "rl": RL_QUERY, "preference": PREFERENCE_QUERY}
