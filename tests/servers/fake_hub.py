"""A stand-in for the Hugging Face Hub on 127.0.0.1 (aiohttp.web), for tests of `r1v-data publish`.

It serves the requests huggingface_hub 2.4.0 makes for `create_repo`, `create_branch`,
`list_repo_files`, `create_commit` (and `upload_folder`, which ends in it) and `repo_info`, over
the Git LFS transfer (run the client with `HF_HUB_DISABLE_XET=1`: with `hf_xet` installed the
client otherwise sends LFS content to a Xet CAS server, a binary protocol not stood in for here):

    GET  /api/whoami-v2                                        whoami
    GET  /api/agent-harnesses                                  agent_harnesses (fetched for the User-Agent,
                                                               once a day, unless HF_HUB_DISABLE_TELEMETRY=1)
    POST /api/repos/create                                     create_repo ({name, organization, type, visibility})
    POST /api/validate-yaml                                    validate_yaml (the card's front matter)
    POST /api/{type}s/{org}/{name}/branch/{rev}                create_branch
    GET  /api/{type}s/{org}/{name}/tree/{rev}[/{path}]         tree (?recursive=)
    GET  /api/{type}s/{org}/{name}[/revision/{rev}]            repo_info
    POST /api/{type}s/{org}/{name}/preupload/{rev}             preupload (upload mode per file: lfs or regular)
    POST /[{type}s/]{org}/{name}.git/info/lfs/objects/batch    lfs_batch (basic transfer only)
    PUT  /lfs-upload/{oid}                                     lfs_upload (the batch's upload href; no auth, like S3)
    POST /lfs-verify                                           lfs_verify
    POST /api/{type}s/{org}/{name}/commit/{rev}                commit (ndjson: header, file, lfsFile, deletedFile)

Like the Hub it checks the bearer token on every request but the LFS PUT and the harness list
(401 otherwise), refuses
a commit whose LFS pointers name content it does not hold, and reports the oid of files it already
holds in preupload, so the client skips unchanged files. Everything it received is kept for the
test to inspect: `requests` (endpoint, method, path, status), `blobs` (LFS content by sha256),
`commits` (each commit's header and operations) and the repositories' files per branch.

Faults are scheduled per endpoint name: `faults={"commit": ["503", "503"]}` answers the first two
commits 503 and lets later ones through; the key "*" applies to every endpoint. Outcomes:
`ok`, a status (`401`, `404`, `429`, `500`, `503`, ...), `STATUS:SECONDS` (with Retry-After),
`reset` (the connection is closed without a response) and `lost:STATUS` (the request is carried
out, a commit lands, but the client gets STATUS: a reply lost on the way back).

    with FakeHub(token="hf_test", faults={"commit": ["503"]}) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_test", "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0"}
        ...
        assert hub.count("commit") == 2
        hub.file("dataset", "org/name", "README.md")  # the bytes the repo now holds
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from servers.threaded import ThreadedServer

LFS_SUFFIXES = (".parquet", ".arrow", ".bin", ".safetensors", ".zip", ".gz", ".zst", ".png", ".jpg")
LFS_MIN_BYTES = 10 * 1024 * 1024  # the Hub sends files over 10 MB through LFS whatever their type
_OPEN = {"lfs_upload", "agent_harnesses"}  # served without a token (a presigned URL; public data)
_TYPES = {"datasets": "dataset", "models": "model", "spaces": "space"}
_REPO = r"(?P<type>datasets|models|spaces)/(?P<repo>[^/]+/[^/]+)"
# (method, path regex over the raw, still-quoted path, endpoint name)
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(p), name)
    for m, p, name in [
        ("GET", r"/api/whoami-v2", "whoami"),
        ("GET", r"/api/agent-harnesses", "agent_harnesses"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("POST", rf"/api/{_REPO}/branch/(?P<rev>[^/]+)", "create_branch"),
        ("GET", rf"/api/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
        ("POST", rf"/api/{_REPO}/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", rf"/api/{_REPO}/commit/(?P<rev>[^/]+)", "commit"),
        ("GET", rf"/api/{_REPO}(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
        (
            "POST",
            r"/(?:(?P<type>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+?)\.git/info/lfs/objects/batch",
            "lfs_batch",
        ),
        ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
        ("POST", r"/lfs-verify", "lfs_verify"),
    ]
]


@dataclass
class Received:
    """One request as the server saw it."""

    endpoint: str
    method: str
    path: str
    status: int = 0
    authorization: str | None = None
    body: bytes = b""
    at: float = field(default_factory=time.monotonic)


@dataclass
class StoredFile:
    size: int
    sha256: str
    git_oid: (
        str  # git blob sha1 for regular files; the LFS content sha256 for LFS files, as the client compares
    )
    lfs: bool
    data: bytes


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    branches: dict[str, dict[str, StoredFile]] = field(default_factory=dict)  # branch -> path -> file
    heads: dict[str, str] = field(default_factory=dict)  # branch -> commit oid


class FakeHub(ThreadedServer):
    """The server on a background thread; use as a context manager or start()/stop()."""

    name = "fake Hub"

    def __init__(
        self,
        *,
        token: str = "hf_fake_token",
        faults: Mapping[str, Sequence[str]] | None = None,
        port: int = 0,
    ):
        self.token = token
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.port = port
        self.requests: list[Received] = []
        self.attempts: Counter[str] = Counter()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.blobs: dict[str, bytes] = {}  # LFS storage, by sha256
        self.commits: list[dict[str, Any]] = []  # {"repo_id", "revision", "oid", "header", "operations"}
        self.validated: list[dict[str, Any]] = []  # bodies sent to validate-yaml

    # ---- lifecycle -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def make_runner(self) -> web.AppRunner:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.2)

    # ---- inspection ----------------------------------------------------------------------------
    def count(self, endpoint: str | None = None) -> int:
        """Requests received for `endpoint` (all of them when None), faults and refusals included."""
        return sum(1 for r in self.requests if endpoint is None or r.endpoint == endpoint)

    def endpoints(self) -> list[str]:
        return [r.endpoint for r in self.requests]

    def repo(self, repo_type: str, repo_id: str) -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, StoredFile]:
        return self.repo(repo_type, repo_id).branches[revision]

    def file(self, repo_type: str, repo_id: str, path: str, revision: str = "main") -> bytes:
        return self.files(repo_type, repo_id, revision)[path].data

    # ---- dispatch ------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.rel_url.raw_path
        endpoint, params = "unknown", {}
        for method, pattern, name in ROUTES:
            m = pattern.fullmatch(raw_path)
            if m and request.method == method:
                endpoint, params = name, {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
                break
        body = await request.read()
        rec = Received(endpoint, request.method, raw_path, authorization=request.headers.get("Authorization"))
        rec.body = body
        self.requests.append(rec)
        self.attempts[endpoint] += 1
        response, lost = self._fault(request, endpoint)
        if response is None and endpoint not in _OPEN and rec.authorization != f"Bearer {self.token}":
            response = _error(401, "Invalid credentials in Authorization header")
        if response is None and endpoint == "unknown":
            response = _error(404, f"fake Hub: no route for {request.method} {raw_path}")
        if response is None:
            try:
                response = getattr(self, f"_{endpoint}")(request, params, body)
            except _HubError as exc:
                response = _error(exc.status, exc.message, exc.code)
            if lost:  # done, but the reply is lost on the way back
                response = _error(lost, f"fake {lost} after {endpoint} was done")
        rec.status = response.status
        return response

    def _fault(self, request: web.Request, endpoint: str) -> tuple[web.StreamResponse | None, int]:
        """(a response instead of the real one, or None; a status to answer after doing the work)."""
        plan = self.faults.get(endpoint, self.faults.get("*"))
        attempt = self.attempts[endpoint]
        outcome = plan[attempt - 1] if plan and attempt <= len(plan) else "ok"
        if outcome == "ok":
            return None, 0
        if outcome == "reset":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=599), 0
        status, _, arg = outcome.partition(":")
        if status == "lost":
            return None, int(arg or 502)
        headers = {"Retry-After": arg} if arg else None
        return _error(int(status), f"fake {status} for {endpoint} attempt {attempt}", headers=headers), 0

    def _get_repo(self, params: Mapping[str, str]) -> Repo:
        repo = self.repos.get((_TYPES.get(params.get("type", "models"), "model"), params["repo"]))
        if repo is None:
            raise _HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _branch(self, repo: Repo, revision: str) -> dict[str, StoredFile]:
        files = repo.branches.get(revision)
        if files is None:
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return files

    def _commit_oid(self, repo: Repo, branch: str, what: Any) -> str:
        seed = json.dumps(
            [repo.repo_id, branch, repo.heads.get(branch), what, len(self.commits)], default=str
        )
        return hashlib.sha1(seed.encode()).hexdigest()

    # ---- endpoints -----------------------------------------------------------------------------
    def _whoami(self, request: web.Request, params: dict[str, str], body: bytes) -> web.Response:
        return web.json_response(
            {"type": "user", "name": "tester", "orgs": [], "auth": {"type": "access_token"}}
        )

    def _agent_harnesses(self, request: web.Request, params: dict[str, str], body: bytes) -> web.Response:
        return web.json_response({"standardEnvVars": [], "harnesses": {}})

    def _create_repo(self, request: web.Request, params: dict[str, str], body: bytes) -> web.Response:
        payload = json.loads(body)
        repo_type = payload.get("type") or "model"
        repo_id = (
            f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        )
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.url}/{prefix}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            return _error(409, f"You already created this {repo_type} repo", extra={"url": url})
        private = payload.get("visibility") == "private" or payload.get("private") is True
        repo = self.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, private)
        attributes = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"
        repo.branches["main"] = {".gitattributes": _regular(attributes)}
        repo.heads["main"] = self._commit_oid(repo, "main", "initial commit")
        return web.json_response(
            {"url": url, "name": repo_id, "id": hashlib.sha1(url.encode()).hexdigest()[:24]}
        )

    def _validate_yaml(self, request: web.Request, params: dict[str, str], body: bytes) -> web.Response:
        import yaml

        payload = json.loads(body)
        self.validated.append(payload)
        text = payload.get("content", "")
        m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
        try:
            meta = yaml.safe_load(m.group(1)) if m else {}
        except yaml.YAMLError as exc:
            return web.json_response(
                {"errors": [{"message": f"invalid YAML: {exc}"}], "warnings": []}, status=400
            )
        warnings = [] if meta else [{"message": "empty or missing yaml metadata in repo card"}]
        return web.json_response({"errors": [], "warnings": warnings})

    def _create_branch(self, request: web.Request, params: dict[str, str], body: bytes) -> web.Response:
        repo = self._get_repo(params)
        branch = params["rev"]
        if branch in repo.branches:
            return _error(409, f"Reference refs/heads/{branch} already exists")
        start = (json.loads(body) if body else {}).get("startingPoint") or "main"
        repo.branches[branch] = dict(self._branch(repo, start))
        repo.heads[branch] = repo.heads.get(start, start)
        return web.json_response({})

    def _tree(self, request: web.Request, params: dict[str, str], body: bytes) -> web.Response:
        repo = self._get_repo(params)
        files = self._branch(repo, params["rev"])
        prefix = params.get("path", "").strip("/")
        recursive = request.query.get("recursive", "false").lower() in ("1", "true")
        entries: list[dict[str, Any]] = []
        folders: set[str] = set()
        for path, f in sorted(files.items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1 :] if prefix else path
            if not recursive and "/" in rest:
                folders.add((prefix + "/" if prefix else "") + rest.split("/", 1)[0])
                continue
            if recursive:
                parts = path.split("/")[:-1]
                folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
            entry: dict[str, Any] = {"type": "file", "path": path, "size": f.size, "oid": _git_oid(f)}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
            entries.append(entry)
        entries += [{"type": "directory", "path": d, "size": 0, "oid": "0" * 40} for d in sorted(folders)]
        return web.json_response(entries)

    def _repo_info(self, request: web.Request, params: dict[str, str], body: bytes) -> web.Response:
        repo = self._get_repo(params)
        rev = params.get("rev", "main")
        files = self._branch(repo, rev)
        siblings = [{"rfilename": p} for p in sorted(files)]
        return web.json_response(
            {"id": repo.repo_id, "sha": repo.heads[rev], "private": repo.private, "siblings": siblings}
        )

    def _preupload(self, request: web.Request, params: dict[str, str], body: bytes) -> web.Response:
        repo = self._get_repo(params)
        files = self._branch(repo, params["rev"])
        out = []
        for f in json.loads(body)["files"]:
            sample = base64.b64decode(f["sample"])
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] >= LFS_MIN_BYTES or b"\x00" in sample
            have = files.get(f["path"])
            out.append({
                "path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                "oid": have.git_oid if have is not None else None,
            })  # fmt: skip
        return web.json_response({"files": out, "commitOid": repo.heads[params["rev"]]})

    def _lfs_batch(self, request: web.Request, params: dict[str, str], body: bytes) -> web.Response:
        self._get_repo(params)
        payload = json.loads(body)
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
            raise _HubError(422, "fake Hub: only basic LFS uploads")
        objects = []
        for obj in payload["objects"]:
            item: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.blobs:  # content already held: no actions, the client skips it
                item["actions"] = {
                    "upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}", "expires_in": 3600},
                    "verify": {"href": f"{self.url}/lfs-verify", "header": {"Authorization": "unused"}},
                }
            objects.append(item)
        return web.json_response({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_upload(self, request: web.Request, params: dict[str, str], body: bytes) -> web.Response:
        if hashlib.sha256(body).hexdigest() != params["oid"]:
            raise _HubError(400, "content does not match its oid")
        self.blobs[params["oid"]] = body
        return web.Response(status=200)

    def _lfs_verify(self, request: web.Request, params: dict[str, str], body: bytes) -> web.Response:
        obj = json.loads(body)
        blob = self.blobs.get(obj["oid"])
        if blob is None or len(blob) != obj["size"]:
            raise _HubError(404, f"LFS object {obj['oid']} not found")
        return web.json_response({"message": "ok"})

    def _commit(self, request: web.Request, params: dict[str, str], body: bytes) -> web.Response:
        repo = self._get_repo(params)
        branch = params["rev"]
        files = self._branch(repo, branch)
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HubError(400, "the commit payload must start with a header")
        header, ops = lines[0]["value"], lines[1:]
        parent = header.get("parentCommit")
        if parent is not None and parent != repo.heads[branch]:
            raise _HubError(412, "A commit has happened since. Please refresh and try again.")
        new = dict(files)
        for op in ops:
            key, value = op["key"], op["value"]
            if key == "file":
                new[value["path"]] = _regular(base64.b64decode(value["content"]))
            elif key == "lfsFile":
                blob = self.blobs.get(value["oid"])
                if blob is None or ("size" in value and len(blob) != value["size"]):
                    raise _HubError(422, f"Your push was rejected: LFS object {value['oid']} is missing")
                new[value["path"]] = StoredFile(len(blob), value["oid"], value["oid"], True, blob)
            elif key == "deletedFile":
                if value["path"] not in new:
                    raise _HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                del new[value["path"]]
            elif key == "deletedFolder":
                new = {p: f for p, f in new.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                raise _HubError(400, f"unknown commit operation {key!r}")
        oid = self._commit_oid(repo, branch, ops)
        repo.branches[branch], repo.heads[branch] = new, oid
        self.commits.append(
            {"repo_id": repo.repo_id, "revision": branch, "oid": oid, "header": header, "operations": ops}
        )
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return web.json_response(
            {"success": True, "commitOid": oid, "commitUrl": f"{self.url}/{prefix}{repo.repo_id}/commit/{oid}",
             "pullRequestUrl": None}
        )  # fmt: skip


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def _regular(data: bytes) -> StoredFile:
    git = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return StoredFile(len(data), hashlib.sha256(data).hexdigest(), git, False, data)


def _git_oid(f: StoredFile) -> str:
    if not f.lfs:
        return f.git_oid
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{f.sha256}\nsize {f.size}\n".encode()
    return hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()


def _error(
    status: int,
    message: str,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> web.Response:
    # the Hub puts the message in the body and in X-Error-Message, and a code in X-Error-Code
    h = {"X-Error-Message": message, **(headers or {})}
    if code:
        h["X-Error-Code"] = code
    return web.json_response({"error": message, **(extra or {})}, status=status, headers=h)
