"""A fake Hugging Face Hub for the tests: the part of the Hub HTTP API that `huggingface_hub`, `transformers` and
`datasets` call to push and download repos, served by a stdlib `ThreadingHTTPServer` on 127.0.0.1.

It is a real server over an in-memory store of repos and their commits, not a mock of the client: the clients
under test build their requests, send them and parse the answers exactly as they would against huggingface.co.
Only what a push and a download need is implemented; any other route answers 404 and is recorded in
`FakeHub.unhandled`, so a client that starts calling something new shows up as that, not as a silent pass.

- Text files go up as `uploadMode: "regular"` (inline, base64, in the commit's ndjson); binary files (a NUL byte in
  the sample the client sends, as the Hub decides) as `"lfs"` through the basic LFS batch protocol (batch, PUT,
  verify), since `datasets.push_to_hub` deletes its parquet shards right after the pre-upload and so needs a
  binary-file upload that happens there. The hub sends no Xet headers, so downloads are plain HTTP; uploads need
  `HF_HUB_DISABLE_XET=1` on the client, which otherwise sends every LFS file through Xet whenever `hf_xet` is
  installed, without asking the server.
- Writes need `Authorization: Bearer <token>` with a token the hub knows; private repos are visible only to
  their owner. The server logs method, path and status only, never headers.
- `FakeHub.refusing_commits(pattern)` makes commits that add a matching file fail, as an outage in the middle of a
  push would: what was uploaded before stays uncommitted, and the repo keeps its state.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def git_blob_sha(content: bytes) -> str:
    """The git object id of a file (what the Hub reports as a regular file's `oid` and `ETag`)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(content: bytes) -> bytes:
    sha256 = hashlib.sha256(content).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(content)}\n".encode()


@dataclass
class Commit:
    oid: str
    title: str
    date: str
    files: dict[str, bytes]  # the whole tree at this commit: path -> content
    lfs: frozenset[str] = frozenset()  # the paths stored through LFS

    def entry(self, path: str) -> dict:
        """A file as the tree and paths-info APIs describe it (`oid` of an LFS file: its pointer's)."""
        content = self.files[path]
        if path in self.lfs:
            pointer = lfs_pointer(content)
            lfs = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": len(pointer)}
            return {"type": "file", "path": path, "oid": git_blob_sha(pointer), "size": len(content), "lfs": lfs}
        return {"type": "file", "path": path, "oid": git_blob_sha(content), "size": len(content)}

    def etag(self, path: str) -> str:
        content = self.files[path]
        return hashlib.sha256(content).hexdigest() if path in self.lfs else git_blob_sha(content)


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    owner: str
    private: bool
    commits: list[Commit] = field(default_factory=list)  # oldest first

    def resolve(self, revision: str) -> Commit | None:
        if revision == "main":
            return self.commits[-1]
        return next((c for c in self.commits if c.oid == revision), None)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class FakeHub:
    """The server and its store. `with FakeHub(tokens={"hf_xxx": "user"}) as hub:` serves on `hub.url`."""

    def __init__(self, tokens: dict[str, str]):
        self.tokens = dict(tokens)  # token -> user name
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content, uploaded but maybe not committed yet
        self.log: list[tuple[str, str, int]] = []  # (method, path, status) of every request
        self.unhandled: list[str] = []
        self.refused_patterns: list[str] = []  # commits adding a file that matches one of these fail (500)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ---- lifecycle

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # port 0: a free port
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @contextlib.contextmanager
    def refusing_commits(self, pattern: str):
        """Inside the block, a commit that adds a file matching `pattern` (fnmatch, e.g. `*.parquet`) fails."""
        self.refused_patterns.append(pattern)
        try:
            yield self
        finally:
            self.refused_patterns.remove(pattern)

    # ---- store

    def repo(self, repo_type: str, repo_id: str, user: str | None = None) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and user != repo.owner):
            raise HubError(404, f"Repository Not Found for url: {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def files(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of a repo at a revision (for assertions)."""
        return dict(self.repos[(repo_type, repo_id)].resolve(revision).files)

    def commit(self, repo: Repo, title: str, files: dict[str, bytes], lfs: set[str], deleted: list[str]) -> Commit:
        parent = repo.commits[-1]
        tree, lfs_paths = dict(parent.files), set(parent.lfs) - set(files)
        for path in deleted:
            gone = {p for p in tree if p == path or p.startswith(path.rstrip("/") + "/")}
            tree = {p: c for p, c in tree.items() if p not in gone}
            lfs_paths -= gone
        tree.update(files)
        lfs_paths |= lfs
        digest = hashlib.sha1(parent.oid.encode() + title.encode())
        for path in sorted(tree):
            digest.update(path.encode() + git_blob_sha(tree[path]).encode())
        commit = Commit(digest.hexdigest(), title, _now(), tree, frozenset(lfs_paths))
        repo.commits.append(commit)
        return commit


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _tree_entries(commit: Commit, folder: str, recursive: bool) -> list[dict]:
    """Files and folders under `folder` ("" for the root), as the tree and paths-info APIs list them."""
    prefix = folder.strip("/") + "/" if folder.strip("/") else ""
    entries: dict[str, dict] = {}
    for path in sorted(commit.files):
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix) :].split("/")
        for depth in range(1, len(parts)):  # the folders on the way
            sub = prefix + "/".join(parts[:depth])
            if recursive or depth == 1:
                entries.setdefault(sub, _folder_entry(sub))
        if recursive or len(parts) == 1:
            entries[path] = commit.entry(path)
    return list(entries.values())


def _folder_entry(path: str) -> dict:
    return {"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0}


def _path_entry(commit: Commit, path: str) -> dict | None:
    path = path.strip("/")
    if path in commit.files:
        return commit.entry(path)
    if any(p.startswith(path + "/") for p in commit.files):
        return _folder_entry(path)
    return None


def _expand(entry: dict, commit: Commit) -> dict:
    return {**entry, "lastCommit": {"id": commit.oid, "title": commit.title, "date": commit.date}}


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # the default writes to stderr; requests are recorded in hub.log
        pass

    # ---- plumbing

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        self.body = self._read_body()
        segments = split.path.strip("/").split("/")
        try:
            with self.hub._lock:
                self._route(method, segments)
        except HubError as err:
            self._send_json({"error": err.message}, err.status, {"X-Error-Code": err.code} if err.code else {})
        except Exception as err:  # a bug here, shown to the client as a server error
            self._send_json({"error": f"{type(err).__name__}: {err}"}, 500)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # a streamed upload
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers, up to the blank line
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.hub.log.append((self.command, self.path, status))

    def _send_json(self, payload, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _user(self, required: bool = False) -> str | None:
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        user = self.hub.tokens.get(token) if token else None
        if required and user is None:
            raise HubError(401, "Invalid credentials in Authorization header", "InvalidCredentials")
        return user

    def _writable(self, repo_type: str, repo_id: str) -> Repo:
        user = self._user(required=True)
        repo = self.hub.repo(repo_type, repo_id, user)
        if repo.owner != user:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    @staticmethod
    def _commit_at(repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(unquote(revision))
        if commit is None:
            raise HubError(404, f"Invalid rev id: {unquote(revision)}", "RevisionNotFound")
        return commit

    # ---- routes

    def _route(self, method: str, s: list[str]) -> None:
        if s[:2] == ["api", "agent-harnesses"] and method == "GET":  # the client's agent detection asks once a day
            return self._send_json({"standardEnvVars": [], "harnesses": {}})
        if s[:2] == ["api", "whoami-v2"] and method == "GET":
            user = self._user(required=True)
            return self._send_json({"type": "user", "name": user, "orgs": [], "auth": {"type": "access_token"}})
        if s[:3] == ["api", "repos", "create"] and method == "POST":
            return self._create_repo(json.loads(self.body))
        if s[:2] == ["api", "validate-yaml"] and method == "POST":
            return self._validate_yaml(json.loads(self.body))
        if s[:1] == ["lfs-upload"] and method == "PUT":
            return self._lfs_put(s[1])
        lfs = re.fullmatch(r"/(datasets/|spaces/)?([^/]+/[^/]+)\.git/info/lfs/objects/(batch|verify)", self.path)
        if lfs and method == "POST":
            repo_type = {"datasets/": "dataset", "spaces/": "space"}.get(lfs.group(1), "model")
            repo = self._writable(repo_type, lfs.group(2))
            return self._lfs_batch(repo, json.loads(self.body)) if lfs.group(3) == "batch" else self._lfs_verify()
        if len(s) >= 4 and s[0] == "api" and s[1] in REPO_TYPES:
            repo_type, repo_id, rest = REPO_TYPES[s[1]], f"{s[2]}/{s[3]}", s[4:]
            if method == "GET" and (not rest or (rest[0] == "revision" and len(rest) == 2)):
                return self._repo_info(repo_type, repo_id, rest[1] if rest else "main")
            if method == "POST" and len(rest) == 2 and rest[0] == "preupload":
                return self._preupload(self._writable(repo_type, repo_id), json.loads(self.body))
            if method == "POST" and len(rest) == 2 and rest[0] == "commit":
                return self._commit(self._writable(repo_type, repo_id), rest[1])
            if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
                return self._tree(repo_type, repo_id, rest[1], unquote("/".join(rest[2:])))
            if method == "POST" and len(rest) == 2 and rest[0] == "paths-info":
                return self._paths_info(repo_type, repo_id, rest[1])
        prefix = 1 if s and s[0] in ("datasets", "spaces") else 0
        if method in ("GET", "HEAD") and len(s) >= prefix + 5 and s[prefix + 2] == "resolve":
            repo_type = REPO_TYPES[s[0]] if prefix else "model"
            repo_id = f"{s[prefix]}/{s[prefix + 1]}"
            return self._resolve(repo_type, repo_id, s[prefix + 3], unquote("/".join(s[prefix + 4 :])))
        self.hub.unhandled.append(f"{method} {self.path}")
        raise HubError(404, f"fake hub: no route for {method} {self.path}")

    def _create_repo(self, payload: dict) -> None:
        user = self._user(required=True)
        namespace = payload.get("organization") or user
        if namespace != user:
            raise HubError(403, f"You don't have the rights to create a repo under {namespace}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{namespace}/{payload['name']}"
        url = f"{self.hub.url}/{URL_PREFIXES[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.hub.repos:
            return self._send_json({"error": "You already created this repo", "url": url}, 409)
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        repo = Repo(repo_type, repo_id, owner=user, private=private)
        initial = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
        repo.commits.append(Commit(hashlib.sha1(repo_id.encode()).hexdigest(), "initial commit", _now(), initial))
        self.hub.repos[(repo_type, repo_id)] = repo
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, payload: dict) -> None:
        match = re.match(r"^---\n(.*?)\n---", payload["content"], re.DOTALL)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as err:
            return self._send_json({"errors": [{"message": f"invalid YAML: {err}"}]}, 400)
        if metadata is not None and not isinstance(metadata, dict):
            return self._send_json({"errors": [{"message": "metadata must be a YAML mapping"}]}, 400)
        self._send_json({"errors": [], "warnings": []})

    def _repo_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        repo = self.hub.repo(repo_type, repo_id, self._user())
        commit = self._commit_at(repo, revision)
        self._send_json(
            {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "author": repo.owner,
                "sha": commit.oid,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "lastModified": commit.date,
                "createdAt": repo.commits[0].date,
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "siblings": [{"rfilename": path} for path in sorted(commit.files)],
            }
        )

    def _preupload(self, repo: Repo, payload: dict) -> None:
        head = repo.commits[-1]
        answer = []
        for item in payload["files"]:
            binary = b"\0" in base64.b64decode(item["sample"]) or item["size"] > 10_000_000
            mode = "lfs" if binary else "regular"
            same_mode = item["path"] in head.files and (item["path"] in head.lfs) == binary
            oid = head.etag(item["path"]) if same_mode else None  # sha256 for LFS files, git sha1 for the rest
            answer.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._send_json({"files": answer, "commitOid": head.oid})

    def _lfs_batch(self, repo: Repo, payload: dict) -> None:
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
            raise HubError(400, "the fake hub takes basic LFS uploads only")
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.hub.lfs_objects:
                prefix = f"{self.hub.url}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}.git/info/lfs/objects"
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.url}/lfs-upload/{obj['oid']}"},
                    "verify": {"href": f"{prefix}/verify"},
                }
            objects.append(entry)
        self._send_json({"transfer": "basic", "objects": objects})

    def _lfs_put(self, oid: str) -> None:
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, f"uploaded content does not match its sha256 {oid}")
        self.hub.lfs_objects[oid] = self.body
        self._send(200, b"", {})

    def _lfs_verify(self) -> None:
        payload = json.loads(self.body)
        content = self.hub.lfs_objects.get(payload["oid"])
        if content is None or len(content) != payload["size"]:
            raise HubError(404, f"LFS object {payload['oid']} was not uploaded")
        self._send_json({"success": True})

    def _commit(self, repo: Repo, revision: str) -> None:
        if unquote(revision) != "main":
            raise HubError(400, "the fake hub commits to main only")
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        parent = header.get("parentCommit")
        if parent and not repo.commits[-1].oid.startswith(parent):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        added, lfs, deleted = {}, set(), []
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                added[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                content = self.hub.lfs_objects.get(value["oid"])
                if content is None:
                    raise HubError(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                added[value["path"]] = content
                lfs.add(value["path"])
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            elif key != "header":
                raise HubError(400, f"the fake hub does not know the commit operation {key!r}")
        refused = [p for p in added if any(fnmatch.fnmatchcase(p, pat) for pat in self.hub.refused_patterns)]
        if refused:
            raise HubError(500, f"fake hub: commit refused (it adds {refused[0]}; the test made commits fail)")
        commit = self.hub.commit(repo, header["summary"], added, lfs, deleted)
        url = f"{self.hub.url}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}/commit/{commit.oid}"
        self._send_json({"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None})

    def _tree(self, repo_type: str, repo_id: str, revision: str, folder: str) -> None:
        commit = self._commit_at(self.hub.repo(repo_type, repo_id, self._user()), revision)
        if folder and _path_entry(commit, folder) is None:
            raise HubError(404, f"{folder} does not exist on {revision}", "EntryNotFound")
        entries = _tree_entries(commit, folder, self.query.get("recursive", "false").lower() == "true")
        if self.query.get("expand", "false").lower() == "true":
            entries = [_expand(entry, commit) for entry in entries]
        self._send_json(entries)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        commit = self._commit_at(self.hub.repo(repo_type, repo_id, self._user()), revision)
        if self.headers.get("Content-Type", "").startswith("application/json"):
            form = json.loads(self.body)
            paths, expand = form.get("paths", []), bool(form.get("expand"))
        else:
            form = parse_qs(self.body.decode())
            paths, expand = form.get("paths", []), form.get("expand", ["False"])[-1].lower() == "true"
        entries = [entry for entry in (_path_entry(commit, path) for path in paths) if entry is not None]
        self._send_json([_expand(entry, commit) if expand else entry for entry in entries])

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        commit = self._commit_at(self.hub.repo(repo_type, repo_id, self._user()), revision)
        if path not in commit.files:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        content = commit.files[path]
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": f'"{commit.etag(path)}"',
            "X-Repo-Commit": commit.oid,
            "Accept-Ranges": "bytes",
            "Last-Modified": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()),
        }
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if match and self.command == "GET":
            start = int(match.group(1)) if match.group(1) else max(0, len(content) - int(match.group(2)))
            end = int(match.group(2)) if match.group(1) and match.group(2) else len(content) - 1
            end = min(end, len(content) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            return self._send(206, content[start : end + 1], headers)
        self._send(200, content, {**headers, "Content-Length": str(len(content))})
