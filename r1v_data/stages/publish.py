"""`publish`: push a folder written by `r1v-data mix` to a Hugging Face Hub dataset repository.

What goes up is an allowlist, never the whole folder: `README.md` (the dataset card, whose YAML
front matter holds the configs), `manifest.json`, `report.html` (mix's report, which the card links
to) when the folder has one, and the shards `KIND/data/*.parquet`. Anything
else in the folder is reported as ignored, so a stray file (notes, a `.env`) is never published.
The folder is checked completely before the first request: the card's front matter parses, every
shard set is whole (`train-00000-of-000NN` ... `train-000NN-1-of-000NN`), no half-written shard
from an interrupted mix is left, and every config in the card matches at least one shard.

The upload is one commit made with `huggingface_hub`: the repository is created if missing
(`exist_ok`; `private` applies only then, so asking for a private repository that exists and is
public fails before anything is uploaded), the branch too when `revision` is not main, and the
commit adds the files and deletes the branch's other `*/data/*.parquet` shards, so the
`KIND/data/train-*.parquet` globs in the card read exactly this mix, never shards left by an
earlier, larger one. Other remote files are left alone. `huggingface_hub` chooses the transfer:
Xet when `hf_xet` is installed (the default), the Git LFS batch API otherwise; small text files
go inline in the commit.

Each step is retried on transient errors only (a connection error, a timeout, 408, 429, 5xx),
with jittered exponential backoff, at most `retries` re-sends per step. (Inside a step,
huggingface_hub itself re-sends its preupload, LFS batch and LFS PUT requests on those errors, and
hf_xet its Xet transfers.) Retrying the commit step is safe: it lists the branch again, the Hub
reports the files it already holds with the same content, those are neither sent nor committed
again, and a commit that landed before its reply was lost becomes a no-op. A 4xx (401 bad token,
403 no write access, 404 ...) fails at once.

The token is the one `huggingface_hub` finds (`HF_TOKEN`, or the file `hf auth login` writes);
it is never printed, logged or written, and it is scrubbed from every error message.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from r1v_data import __version__
from r1v_data.errors import ConfigError, R1VError
from r1v_data.outputs.publishable import (
    DEFAULT_REVISION,
    Plan,
    check_repo_id,
    check_revision,
    is_shard_path,
    plan_upload,
)
from r1v_data.readers.hub import require_hub

REPO_TYPE = "dataset"
# transient: the same request may well succeed a moment later
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

T = TypeVar("T")


class PublishError(R1VError):
    """The Hub refused the upload, or could not be reached after the retries."""


@dataclass
class PublishResult:
    repo_id: str
    revision: str
    dry_run: bool
    private: bool | None = None  # as asked (dry run), then as the Hub reports it
    repo_type: str = REPO_TYPE
    files: list[dict[str, Any]] = field(default_factory=list)  # {"path", "size"} in upload order
    total_bytes: int = 0
    ignored: list[str] = field(default_factory=list)  # local files not published
    deleted: list[str] = field(default_factory=list)  # stale remote shards the commit removes
    repo_url: str | None = None
    commit_url: str | None = None
    commit_oid: str | None = None
    commit_message: str = ""
    retries: int = 0  # re-sends after transient errors, all steps together
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def publish(
    out_dir: Path | str,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
    retries: int = 4,
    backoff_base_s: float = 1.0,
    backoff_max_s: float = 30.0,
) -> PublishResult:
    """Upload a mix folder to the dataset repository `repo_id` (ORG/NAME) as one commit.

    Args:
        out_dir: A folder written by `r1v-data mix`.
        repo_id: The dataset repository, `ORG/NAME`; created if missing.
        private: Create the repository private; an existing public one is refused, not changed.
        revision: The branch to commit to, created from main if missing (default: main).
        commit_message: The commit's summary (default: names the mix's filter run).
        dry_run: Check the folder and list what would be uploaded; no request is made at all.
        retries: Re-sends per step after a transient error (connection, timeout, 408, 429, 5xx).

    Raises:
        ConfigError: The folder, repo id or revision is wrong, there is no token, or the Hub is
            switched off (`HF_HUB_OFFLINE`); nothing was sent.
        PublishError: The Hub refused a request, or a transient error outlasted the retries.
    """
    start = time.perf_counter()
    repo_id = check_repo_id(repo_id)
    revision = check_revision(revision)
    if retries < 0:
        raise ConfigError(f"retries must be 0 or more, got {retries}")
    plan = plan_upload(Path(out_dir))
    if not commit_message:
        run = plan.manifest.get("filter_run")
        commit_message = f"r1v {__version__} mix" + (f" of filter run {run}" if run else "")
    result = PublishResult(
        repo_id=repo_id,
        revision=revision,
        dry_run=dry_run,
        private=True if private else None,
        files=[{"path": p, "size": size} for p, _, size in plan.files],
        total_bytes=sum(size for _, _, size in plan.files),
        ignored=plan.ignored,
        commit_message=commit_message,
    )
    if dry_run:  # before anything that could touch the network, the token lookup included
        result.seconds = time.perf_counter() - start
        return result

    from huggingface_hub import constants, get_token

    if constants.is_offline_mode():
        raise ConfigError(
            "HF_HUB_OFFLINE is set, so huggingface_hub sends no request: unset it to publish "
            "(--dry-run works offline)"
        )
    token = get_token()
    if not token:
        raise ConfigError("no Hugging Face token: set HF_TOKEN to a write token or run `hf auth login`")
    require_hub(f"publish to {repo_id}")  # seconds, not the retries' minutes, when there is no network
    _Uploader(result, plan, token, retries, backoff_base_s, backoff_max_s).run()
    result.seconds = time.perf_counter() - start
    return result


# ---- checks before any request ----------------------------------------------------------------


# ---- the upload ---------------------------------------------------------------------------------


class _Uploader:
    def __init__(
        self, result: PublishResult, plan: Plan, token: str, retries: int, base_s: float, max_s: float
    ):
        self.result, self.plan, self.token = result, plan, token
        self.retries, self.base_s, self.max_s = retries, base_s, max_s

    def run(self) -> None:
        from huggingface_hub import HfApi

        r = self.result
        # the token get_token() found, passed on so HF_HUB_DISABLE_IMPLICIT_TOKEN cannot drop it
        api = HfApi(token=self.token)
        repo_url = self._retry(
            "create the repository",
            lambda: api.create_repo(r.repo_id, repo_type=REPO_TYPE, private=r.private, exist_ok=True),
        )
        r.repo_url = str(repo_url)
        info = self._retry("read the repository", lambda: api.repo_info(r.repo_id, repo_type=REPO_TYPE))
        if r.private and info.private is False:  # create_repo leaves an existing repo as it is
            raise PublishError(
                f"publish to {r.repo_id}: the repository exists and is public, and --private does not change "
                "that: make it private in its settings on the Hub first, or publish without --private"
            )
        r.private = info.private
        if r.revision != DEFAULT_REVISION:
            self._retry(
                f"create the branch {r.revision}",
                lambda: api.create_branch(r.repo_id, branch=r.revision, repo_type=REPO_TYPE, exist_ok=True),
            )
        info = self._retry("upload and commit", lambda: self._commit(api))
        r.commit_url, r.commit_oid = info.commit_url, info.oid

    def _commit(self, api: Any) -> Any:
        """List the branch, then commit; each attempt starts afresh, so a retry after a commit that
        landed without its reply finds nothing left to delete or send, and commits nothing."""
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        r = self.result
        remote = api.list_repo_files(r.repo_id, repo_type=REPO_TYPE, revision=r.revision)
        ours = {f["path"] for f in r.files}
        stale = sorted(p for p in remote if is_shard_path(p) and p not in ours)
        r.deleted = sorted(set(r.deleted) | set(stale))  # with the attempts whose commit may have landed
        # fresh operations on every attempt: huggingface_hub marks them as used
        ops: list[Any] = [CommitOperationDelete(path_in_repo=p) for p in stale]
        ops += [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(p)) for rel, p, _ in self.plan.files]
        return api.create_commit(
            r.repo_id,
            ops,
            commit_message=r.commit_message,
            repo_type=REPO_TYPE,
            revision=r.revision,
        )

    def _retry(self, step: str, call: Callable[[], T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return call()
            except Exception as exc:
                status, transient = _classify(exc)
                if status is None and not transient and not _is_hub_error(exc):
                    raise  # not a Hub or network failure: a bug, keep its traceback
                if not transient:
                    raise PublishError(self._message(step, exc, status)) from exc
                if attempt > self.retries:
                    msg = self._message(step, exc, status)
                    raise PublishError(f"{msg} (gave up after {attempt} attempts; try again later)") from exc
                self.result.retries += 1
                time.sleep(self._delay(attempt, exc))

    def _delay(self, attempt: int, exc: BaseException) -> float:
        """Uniform in [cap/2, cap], cap = min(max, base·2^(attempt-1)); at least Retry-After."""
        cap = min(self.max_s, self.base_s * 2 ** (attempt - 1))
        delay = random.uniform(cap / 2, cap)
        response = _response(exc)
        after = response.headers.get("retry-after") if response is not None else None
        if after and after.strip().isdigit():
            delay = max(delay, min(float(after), self.max_s))
        return delay

    def _message(self, step: str, exc: BaseException, status: int | None) -> str:
        r = self.result
        where = f"{r.repo_id}@{r.revision}"
        hint = {
            401: "the Hub rejected the token: set HF_TOKEN to a valid token or run `hf auth login`",
            403: f"the token may not write to {r.repo_id.split('/')[0]}: use a token with write access",
            404: "not found: check --repo-id and --revision, and that the token can see the repository",
            409: "a conflicting operation is in progress on the repository; try again",
            412: "the branch moved during the upload; run publish again",
            429: "rate limited by the Hub; wait and run publish again",
        }.get(status or 0)
        detail = _one_line(_server_message(exc) or str(exc) or type(exc).__name__)
        code = f"HTTP {status}" if status else _error_name(exc)
        text = f"publish to {where}: {step} failed ({code}): " + (f"{hint} ({detail})" if hint else detail)
        return text.replace(self.token, "<token>") if self.token else text


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _error_name(exc: BaseException) -> str:
    import httpx2

    chain = _chain(exc)
    named = next((e for e in chain if isinstance(e, httpx2.TransportError)), chain[-1])
    return type(named).__name__


def _response(exc: BaseException) -> Any:
    from huggingface_hub.errors import HfHubHTTPError

    for e in _chain(exc):
        if isinstance(e, HfHubHTTPError) and e.response is not None:
            return e.response
    return None


def _classify(exc: BaseException) -> tuple[int | None, bool]:
    """(HTTP status or None, transient?) for an exception raised by a huggingface_hub call."""
    import httpx2

    response = _response(exc)
    if response is not None:
        return response.status_code, response.status_code in RETRY_STATUSES
    for e in _chain(exc):
        if isinstance(e, httpx2.TransportError):  # connect/read errors, timeouts, dropped connections
            return None, True
    return None, False


def _is_hub_error(exc: BaseException) -> bool:
    """Failures the Hub or the transfer reports (bad card metadata, LFS batch errors, Xet errors),
    as opposed to a bug: an HTTP or Hub exception type, or a ValueError, RuntimeError or OSError
    raised inside huggingface_hub or hf_xet."""
    import httpx2

    for e in _chain(exc):
        module = type(e).__module__ or ""
        if isinstance(e, httpx2.HTTPError) or module.startswith(("huggingface_hub", "hf_xet")):
            return True
        if isinstance(e, (ValueError, RuntimeError, OSError)) and _raised_in_hub(e):
            return True
    return False


def _raised_in_hub(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    name = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return name.startswith(("huggingface_hub", "hf_xet"))


def _server_message(exc: BaseException) -> str | None:
    from huggingface_hub.errors import HfHubHTTPError

    for e in _chain(exc):
        if isinstance(e, HfHubHTTPError) and e.server_message:
            return e.server_message
    return None


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
