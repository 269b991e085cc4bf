"""`r1v-data publish` through the CLI against a stand-in Hub (tests/servers/fake_hub.py).

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when it is imported, so every publish runs
as a child process with its own environment: the fake Hub's URL, HF_HUB_OFFLINE=0 for that
process only, HF_HUB_DISABLE_XET=1 (hf_xet is installed; the fake Hub speaks Git LFS, not Xet's
CAS protocol), and an HF_HOME of its own so no real token or cache is read or written.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BIN, mathv_with_outputs, run_cli
from servers.fake_hub import FakeHub

TOKEN = "hf_TestSecretToken_4f1c9a7e"
REPO = "r1v-test/mathv-mix"
# what huggingface_hub 2.4.0 asks before the LFS PUTs (and a verify each), then the commit
FIRST_CALLS = ["create_repo", "repo_info", "tree", "validate_yaml", "preupload", "lfs_batch"]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> dict[str, Path]:
    """Two real mix folders: all kinds in small shards, and SFT only (fewer shards)."""
    root = tmp_path_factory.mktemp("publish")
    store = mathv_with_outputs(root / "store", shared, "--min-score", "3")
    run_cli("mix", "--store", store, "--out", root / "all", "--set", "shard_bytes=400000", "--json")
    run_cli("mix", "--store", store, "--out", root / "sft", "--kind", "sft", "--json")
    return {"all": root / "all", "sft": root / "sft"}


def hub_env(hub_url: str, home: Path, token: str | None = TOKEN, **extra: str) -> dict[str, str]:
    # no HF_* from the machine running the tests: never a real token or endpoint
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(
        HF_ENDPOINT=hub_url, HF_HOME=str(home), HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1", COLUMNS="200"
    )
    if token is not None:
        env["HF_TOKEN"] = token
    env.update(extra)
    return env


def publish(env: dict[str, str], *args: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(BIN / "r1v-data"), "publish", *map(str, args)],
        capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=300,
    )  # fmt: skip
    assert TOKEN not in proc.stdout and TOKEN not in proc.stderr, "the token was printed"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def ok_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(proc.stdout)


def failed(proc: subprocess.CompletedProcess[str]) -> str:
    """The one-line error of a failed run."""
    assert proc.returncode == 1, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def local_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def front_matter(text: str) -> dict[str, Any]:
    return yaml.safe_load(text.split("---\n")[1])


def assert_no_token_written(*roots: Path) -> None:
    for root in roots:
        for p in root.rglob("*"):
            if p.is_file():
                assert TOKEN.encode() not in p.read_bytes(), f"the token was written to {p}"


def test_publish_uploads_every_byte_over_lfs_and_is_idempotent(
    mixed: dict[str, Path], tmp_path: Path
) -> None:
    import datasets

    out, home = mixed["all"], tmp_path / "hf"
    local = local_files(out)
    with FakeHub(token=TOKEN) as hub:
        result = ok_json(publish(hub_env(hub.url, home), out, "--repo-id", REPO, "--json"))
        endpoints = [e for e in hub.endpoints() if e != "agent_harnesses"]

        # the calls huggingface_hub makes, and nothing refused or unknown
        assert endpoints[:6] == FIRST_CALLS
        assert endpoints[-1] == "commit" and hub.count("commit") == 1
        assert all(r.status < 400 for r in hub.requests), [(r.endpoint, r.status) for r in hub.requests]
        assert all(
            r.authorization == f"Bearer {TOKEN}"
            for r in hub.requests
            if r.endpoint not in ("lfs_upload", "agent_harnesses")
        )
        repo = hub.repo("dataset", REPO)
        assert repo.private is False

        # the result names the repo, the commit and every file
        assert result["repo_url"] == f"{hub.url}/datasets/{REPO}"
        assert result["commit_url"] == f"{hub.url}/datasets/{REPO}/commit/{repo.heads['main']}"
        assert result["commit_oid"] == repo.heads["main"] and result["revision"] == "main"
        assert {f["path"]: f["size"] for f in result["files"]} == {p: len(b) for p, b in local.items()}
        assert result["total_bytes"] == sum(map(len, local.values())) and result["deleted"] == []

        # the commit: parquet shards as LFS pointers to the uploaded content, the card and manifest inline
        commit = hub.commits[0]
        assert commit["header"]["summary"].startswith("r1v ") and "filter run" in commit["header"]["summary"]
        ops = {op["value"]["path"]: op for op in commit["operations"]}
        assert set(ops) == set(local)
        for path, data in local.items():
            op = ops[path]
            if path.endswith(".parquet"):
                assert op["key"] == "lfsFile" and op["value"]["oid"] == sha(data)
                assert op["value"]["size"] == len(data)
                assert sha(hub.blobs[sha(data)]) == sha(data)  # the bytes the LFS PUT delivered
            else:
                assert op["key"] == "file" and base64.b64decode(op["value"]["content"]) == data
        n_shards = sum(p.endswith(".parquet") for p in local)
        assert hub.count("lfs_upload") == n_shards > 10
        stored = hub.files("dataset", REPO)
        assert {p: sha(f.data) for p, f in stored.items() if p != ".gitattributes"} == {
            p: sha(b) for p, b in local.items()
        }
        assert hub.validated[0]["repoType"] == "dataset"
        assert hub.validated[0]["content"] == local["README.md"].decode()
        card = front_matter(stored["README.md"].data.decode())
        assert card == front_matter(local["README.md"].decode())
        assert card["configs"][0]["config_name"] == "sft"
        assert json.loads(stored["manifest.json"].data) == json.loads(local["manifest.json"])
        assert all(TOKEN.encode() not in r.body for r in hub.requests), "the token was sent in a body"

        # what the repo holds loads as the dataset the mix wrote
        down = tmp_path / "downloaded"
        for path, f in stored.items():
            (down / path).parent.mkdir(parents=True, exist_ok=True)
            (down / path).write_bytes(f.data)
        manifest = json.loads(local["manifest.json"])
        assert len(datasets.load_dataset(str(down), "rl", split="train")) == manifest["counts"]["rows"]["rl"]

        # publishing the same folder again sends no content and makes no new commit
        again = ok_json(publish(hub_env(hub.url, home), out, "--repo-id", REPO, "--json"))
        assert again["commit_oid"] == result["commit_oid"] and len(hub.commits) == 1
        assert hub.count("lfs_upload") == n_shards and hub.count("preupload") == 2
    assert_no_token_written(home, out)


def test_private_repo_on_a_new_branch_drops_stale_shards(mixed: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "hf"
    with FakeHub(token=TOKEN) as hub:
        env = hub_env(hub.url, home)
        first = publish(env, mixed["all"], "--repo-id", REPO, "--private", "--revision", "dev",
                        "--commit-message", "first mix")  # fmt: skip
        assert first.returncode == 0, first.stderr
        assert f"/datasets/{REPO}/commit/" in first.stdout and "published" in first.stdout
        assert "README.md" in first.stdout and "sft/data/train-00000-of-" in first.stdout
        repo = hub.repo("dataset", REPO)
        assert repo.private is True and hub.count("create_branch") == 1
        assert set(repo.branches["main"]) == {".gitattributes"}  # main untouched
        assert hub.commits[0]["revision"] == "dev" and hub.commits[0]["header"]["summary"] == "first mix"
        before = set(repo.branches["dev"])

        # an SFT-only mix in one shard: every other shard on the branch goes in the same commit,
        # whose reply is lost (a 502 after it landed): the retry finds nothing left to do
        hub.faults["commit"] = ["ok", "lost:502"]
        second = ok_json(publish(env, mixed["sft"], "--repo-id", REPO, "--revision", "dev", "--json"))
        assert second["retries"] == 1 and hub.count("commit") == 2 and len(hub.commits) == 2
        assert second["commit_oid"] == repo.heads["dev"] == hub.commits[1]["oid"]
        now = set(repo.branches["dev"])
        kept = {f["path"] for f in second["files"]}
        gone = sorted(p for p in before if p.endswith(".parquet") and p not in kept)  # old sft shards too
        assert (
            second["deleted"] == gone and len(gone) == len(before) - 4
        )  # all but 4 non-shards (report.html too)
        assert now == {".gitattributes"} | kept and not any(p.startswith(("rl/", "preference/")) for p in now)
        ops = hub.commits[1]["operations"]
        assert sorted(op["value"]["path"] for op in ops if op["key"] == "deletedFile") == gone
        assert hub.count("create_branch") == 2 and hub.count("create_repo") == 2  # both exist already: fine
        card = front_matter(repo.branches["dev"]["README.md"].data.decode())
        assert [c["config_name"] for c in card["configs"]] == ["sft"]

        # --private never publishes into a repository that exists and is public
        public = ok_json(publish(env, mixed["sft"], "--repo-id", "r1v-test/public", "--json"))
        assert public["private"] is False and len(hub.commits) == 3
        sent = hub.count()
        line = failed(publish(env, mixed["sft"], "--repo-id", "r1v-test/public", "--private"))
        assert "exists and is public" in line and len(hub.commits) == 3
        assert [e for e in hub.endpoints()[sent:] if e != "agent_harnesses"] == ["create_repo", "repo_info"]
    assert_no_token_written(home)


def test_503_twice_then_success_is_retried_without_resending_content(
    mixed: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(mixed["sft"], out)
    (out / ".env").write_text("SECRET=do-not-publish\n")  # stray files never go up
    (out / "notes").mkdir()
    (out / "notes" / "todo.txt").write_text("check the rl split\n")
    with FakeHub(token=TOKEN, faults={"commit": ["503", "503"]}) as hub:
        result = ok_json(publish(hub_env(hub.url, tmp_path / "hf"), out, "--repo-id", REPO, "--json"))
        assert [r.status for r in hub.requests if r.endpoint == "commit"] == [503, 503, 200]
        assert result["retries"] == 2 and len(hub.commits) == 1
        n_shards = sum(f["path"].endswith(".parquet") for f in result["files"])
        assert hub.count("lfs_upload") == n_shards  # the retries found the content already held
        assert result["ignored"] == [".env", "notes/todo.txt"]
        stored = hub.files("dataset", REPO)
        shard = "sft/data/train-00000-of-00001.parquet"
        assert set(stored) == {".gitattributes", "README.md", "manifest.json", "report.html", shard}
        for path, f in stored.items():
            if path != ".gitattributes":
                assert sha(f.data) == sha((out / path).read_bytes())
        assert all(b"do-not-publish" not in r.body for r in hub.requests)


def test_401_fails_at_once_with_one_line_and_no_token(mixed: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "hf"
    with FakeHub(token="hf_the_right_one") as hub:
        proc = publish(hub_env(hub.url, home), mixed["sft"], "--repo-id", REPO)
        line = failed(proc)
        assert "HTTP 401" in line and "hf auth login" in line and "create the repository" in line
        # huggingface_hub's create_repo(exist_ok=True) checks once whether the repo exists anyway; no retry
        assert [e for e in hub.endpoints() if e != "agent_harnesses"] == ["create_repo", "repo_info"]
        assert all(
            r.authorization == f"Bearer {TOKEN}" for r in hub.requests if r.endpoint != "agent_harnesses"
        )
    with FakeHub(token=TOKEN, faults={"commit": ["403"]}) as hub:
        line = failed(publish(hub_env(hub.url, home), mixed["sft"], "--repo-id", REPO))
        assert "HTTP 403" in line and "write access" in line and hub.count("commit") == 1
    assert_no_token_written(home)


def test_transient_errors_give_up_after_the_retries(mixed: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "hf"
    with FakeHub(token=TOKEN, faults={"create_repo": ["503"] * 5}) as hub:
        line = failed(publish(hub_env(hub.url, home), mixed["sft"], "--repo-id", REPO, "--retries", "1"))
        assert "HTTP 503" in line and "gave up after 2 attempts" in line and hub.count("create_repo") == 2
    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = hub_env(f"http://127.0.0.1:{port}", home, HF_HUB_DISABLE_TELEMETRY="1")
    line = failed(publish(env, mixed["sft"], "--repo-id", REPO, "--retries", "1"))
    # a Hub that refuses every connection is said at once, before any retry (issue 16)
    assert "cannot reach the Hugging Face Hub at 127.0.0.1 (Connection refused)" in line


def test_dry_run_lists_the_files_and_sends_nothing(mixed: dict[str, Path], tmp_path: Path) -> None:
    out = mixed["all"]
    local = local_files(out)
    with FakeHub(token=TOKEN) as hub:
        for offline in ("0", "1"):
            env = hub_env(hub.url, tmp_path / "hf", HF_HUB_OFFLINE=offline)
            r = ok_json(publish(env, out, "--repo-id", REPO, "--dry-run", "--private", "--json"))
            assert r["dry_run"] is True and r["commit_url"] is None and r["private"] is True
            shards = sorted(p for p in local if p.endswith(".parquet"))
            assert [f["path"] for f in r["files"]] == ["README.md", "manifest.json", "report.html", *shards]
            assert r["total_bytes"] == sum(map(len, local.values()))
        text = publish(env, out, "--repo-id", REPO, "--dry-run")
        assert text.returncode == 0 and "would upload" in text.stdout and "nothing was sent" in text.stdout
        assert f"{len(local)} files" in text.stdout and "manifest.json" in text.stdout
        assert hub.count() == 0, hub.endpoints()


def test_token_from_hf_auth_login_and_no_token(mixed: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "hf"
    home.mkdir()
    with FakeHub(token=TOKEN) as hub:
        line = failed(publish(hub_env(hub.url, home, token=None), mixed["sft"], "--repo-id", REPO))
        assert "no Hugging Face token" in line and hub.count() == 0
        line = failed(publish(hub_env(hub.url, home, HF_HUB_OFFLINE="1"), mixed["sft"], "--repo-id", REPO))
        assert "HF_HUB_OFFLINE" in line and hub.count() == 0
        (home / "token").write_text(TOKEN)  # where `hf auth login` saves it
        result = ok_json(
            publish(hub_env(hub.url, home, token=None), mixed["sft"], "--repo-id", REPO, "--json")
        )
        assert result["commit_oid"] and hub.count("commit") == 1
        assert all(r.authorization == f"Bearer {TOKEN}" for r in hub.requests if r.endpoint == "commit")
    (home / "token").unlink()
    assert_no_token_written(home)


def _break(out: Path, how: str) -> None:
    readme, shards = out / "README.md", sorted((out / "sft" / "data").glob("*.parquet"))
    if how == "no card":
        readme.unlink()
    elif how == "no front matter":
        readme.write_text("# just a title\n")
    elif how == "bad yaml":
        readme.write_text("---\nconfigs: [unclosed\n---\n# x\n")
    elif how == "no manifest":
        (out / "manifest.json").unlink()
    elif how == "bad manifest":
        (out / "manifest.json").write_text("{not json")
    elif how == "no shards":
        for kind in ("sft", "rl", "preference"):
            shutil.rmtree(out / kind)
    elif how == "missing shard":
        shards[3].unlink()
    elif how == "partial shard":
        (out / "sft" / "data" / ".train-00009.parquet.tmp").write_bytes(b"PAR1")
    elif how == "config without files":
        readme.write_text(readme.read_text().replace("sft/data/train-*.parquet", "sft/data/test-*.parquet"))


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("no card", "has no README.md"),
        ("no front matter", "no YAML front matter"),
        ("bad yaml", "does not parse"),
        ("no manifest", "has no manifest.json"),
        ("bad manifest", "is not valid JSON"),
        ("no shards", "no Parquet shards"),
        ("missing shard", "sft/data/train-00003-of-00013.parquet is missing (1 of 13 shards)"),
        ("partial shard", "partial shard"),
        ("config without files", "matches no file"),
    ],
)
def test_a_damaged_folder_fails_before_any_request(
    mixed: dict[str, Path], tmp_path: Path, how: str, message: str
) -> None:
    out = tmp_path / "out"
    shutil.copytree(mixed["all"], out)
    _break(out, how)
    with FakeHub(token=TOKEN) as hub:
        line = failed(publish(hub_env(hub.url, tmp_path / "hf"), out, "--repo-id", REPO))
        assert message in line and hub.count() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repo-id", "no-namespace"], "expected ORG/NAME"),
        (["--repo-id", "a/b/c"], "expected ORG/NAME"),
        (["--repo-id", "org/has space"], "expected ORG/NAME"),
        (["--repo-id", "org/x--y"], "expected ORG/NAME"),
        (["--repo-id", "org/name.git"], "expected ORG/NAME"),
        (["--repo-id", REPO, "--revision", "a..b"], "not a valid branch name"),
        (["--repo-id", REPO, "--revision", "refs/pr/1"], "not a valid branch name"),
    ],
)
def test_bad_repo_ids_and_revisions_fail_before_any_request(
    mixed: dict[str, Path], tmp_path: Path, args: list[str], message: str
) -> None:
    with FakeHub(token=TOKEN) as hub:
        line = failed(publish(hub_env(hub.url, tmp_path / "hf"), mixed["sft"], *args))
        assert message in line and hub.count() == 0


def test_a_missing_folder_or_a_file_is_refused(tmp_path: Path) -> None:
    env = hub_env("http://127.0.0.1:9", tmp_path / "hf")
    assert "does not exist" in failed(publish(env, tmp_path / "nope", "--repo-id", REPO))
    (tmp_path / "f").write_text("x")
    assert "is not a folder" in failed(publish(env, tmp_path / "f", "--repo-id", REPO))
