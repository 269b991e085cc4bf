"""r1v's helper processes (the verifier's workers, generate's grader and HTTP client) start as
plain interpreters: a user's script without an `if __name__ == "__main__":` guard runs once, and
its work gets done (multiprocessing's spawn and forkserver import the main script again in the
child: such a script then started over or failed to bootstrap)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

WORK = {
    "verifier workers": """
        from r1v_data.grading.verify_pool import VerifierPool
        with VerifierPool(workers=1) as pool:
            print("RESULT", pool.verify("x^2 + 1", "1 + x^2").verdict)
    """,
    "grader and its verifier": """
        from r1v_data.stages.generate_grading import TraceGrader
        sample = {"answer": "1 + x^2", "answer_type": None, "options": None}
        with TraceGrader() as grader:
            grader.submit("k", "<think>\\nso\\n</think>\\n\\n\\\\boxed{x^2 + 1}", "stop", "", sample)
            print("RESULT", grader.receive()[1]["verdict"])
    """,
    "HTTP client process": """
        from servers.fake_openai import FakeOpenAI
        from r1v_data.backends.base import GenRequest, Message, Sampling
        from r1v_data.backends.openai_compat import OpenAIBackend
        with FakeOpenAI() as srv, OpenAIBackend(srv.url, "fake-model") as backend:
            requests = [GenRequest(f"r{i}", [Message("user", f"q{i}")], Sampling()) for i in range(3)]
            done = [r for r in backend.generate(requests) if r.error is None]
            print("RESULT", "correct" if len(done) == 3 else f"{len(done)} of 3")
    """,
}


@pytest.mark.parametrize("kind", sorted(WORK))
def test_a_script_without_a_main_guard_runs_once_and_its_helpers_work(tmp_path: Path, kind: str) -> None:
    """Run from a folder holding another `r1v_data` (an old checkout, say): the helpers import the
    script's r1v_data, as the script does, not the folder's (a `python -c` child puts the
    current folder first on its path)."""
    script = tmp_path / "scripts" / "user_script.py"
    script.parent.mkdir()
    script.write_text('print("BODY", flush=True)\n' + textwrap.dedent(WORK[kind]))
    other = tmp_path / "work" / "r1v_data"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text('raise ImportError("the r1v_data of the current folder")\n')
    path = os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, str(script)],
        cwd=other.parent,
        env={**os.environ, "PYTHONPATH": path},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("BODY") == 1, run.stdout
    assert "RESULT correct" in run.stdout, run.stdout + run.stderr[-2000:]
