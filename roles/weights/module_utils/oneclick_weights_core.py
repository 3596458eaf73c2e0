"""Staging of model weights: listing a source, resumable transfer and completeness checks.

The weights role's Ansible module runs this file on the appliance, and oneclick.weights
loads it on the controller, so both stage weights the same way. It uses the standard
library only and must run on Python 3.10, the python3 of Ubuntu 22.04.

A staged directory contains a file under its final name only after its size (and sha256,
when the source publishes one) matched. Transfers write into ``<name>.incomplete`` first
and resume from that file's size. The marker file ``.oneclick-weights.json`` records
what was staged, so a later run can tell that nothing changed without reading the files.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

SOURCES = ("present", "local", "url", "huggingface", "modelscope")
REMOTE_SOURCES = ("url", "huggingface", "modelscope")
DEFAULT_ENDPOINTS = {
    "huggingface": "https://huggingface.co",
    "modelscope": "https://www.modelscope.cn",
}

# File list that a `url` source (and a bundle's weights directory) publishes:
# {"files": [{"name": "config.json", "size": 123, "sha256": "..."}]}
LISTING_NAME = "oneclick-weights.json"
MARKER_NAME = ".oneclick-weights.json"
MARKER_FORMAT = 1
PARTIAL_SUFFIX = ".incomplete"
CONFIG_NAME = "config.json"
INDEX_NAME = "model.safetensors.index.json"

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# Pickle checkpoints that repositories often ship next to their safetensors copy.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
# Meta's consolidated checkpoints, which Hugging Face loaders never read.
SKIPPED_DIRECTORIES = ("original/",)

CHUNK_SIZE = 1 << 20
FILE_MODE = 0o644
DIRECTORY_MODE = 0o755
MAX_RETRIES = 20
MAX_BACKOFF_S = 30.0
# The Hugging Face tree API returns large repositories in pages linked by a Link header.
MAX_LISTING_PAGES = 100
# How many file names an error message lists before it counts the rest.
MAX_NAMES_IN_MESSAGE = 10

Progress = Callable[[str, int, int], None]


def _identity(message: str) -> str:
    return message


_translate: Callable[[str], str] = _identity


def set_translator(translate: Callable[[str], str]) -> None:
    """Route every message of this module through a gettext function (the controller's)."""
    global _translate  # noqa: PLW0603 - one process-wide hook, set once by oneclick.weights
    _translate = translate


def _(message: str) -> str:
    return _translate(message)


class WeightsError(Exception):
    """Staging or checking weights failed; the message is complete and names no secret."""


@dataclass(frozen=True)
class WeightFile:
    """One file of a model: its path relative to the model directory, size and sha256."""

    name: str
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class Source:
    """Source of the weights. ``location`` is the directory (local) or base URL (url)."""

    kind: str
    location: str = ""
    model_id: str = ""
    revision: str = "main"
    endpoint: str = ""
    token: str = field(default="", repr=False)
    timeout: float = 30.0
    retries: int = 5

    def identity(self) -> dict[str, str]:
        """Return what identifies the content for the marker, without the token."""
        if self.kind in ("huggingface", "modelscope"):
            return {"kind": self.kind, "model_id": self.model_id, "revision": self.revision}
        if self.kind == "url":
            return {"kind": self.kind, "url": redact_url(self.location)}
        if self.kind == "local":
            return {"kind": self.kind, "path": os.path.normpath(self.location)}
        return {"kind": self.kind}

    def base_endpoint(self) -> str:
        return (self.endpoint or DEFAULT_ENDPOINTS.get(self.kind, "")).rstrip("/")


@dataclass
class StageResult:
    """Outcome of a staging run, or in check mode the planned outcome."""

    files: list[WeightFile] = field(default_factory=list)
    bytes_transferred: int = 0
    bytes_to_transfer: int = 0
    changed: bool = False
    transferred: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    marker_written: bool = False


@dataclass
class _Transfer:
    file: WeightFile
    offset: int


# --- Formatting ---------------------------------------------------------------------------


def format_bytes(size: int) -> str:
    """Format a byte count in binary units with one decimal, such as 131.4 GiB."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def redact_url(url: str) -> str:
    """Return the URL without user name and password, for messages and the marker."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _name_list(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES_IN_MESSAGE])
    if len(names) > MAX_NAMES_IN_MESSAGE:
        shown += _(" and {count} more").format(count=len(names) - MAX_NAMES_IN_MESSAGE)
    return shown


# --- File names and selection -------------------------------------------------------------


def check_name(name: str) -> str:
    """Return a listed file name if it is a safe relative path, else raise WeightsError.

    A listing comes from the network, so a name must not climb out of the model directory.
    """
    parts = name.split("/")
    unsafe = (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or any(part in ("", ".", "..") for part in parts)
    )
    if unsafe:
        raise WeightsError(
            _("The file list names an unsafe path {name!r}; names must be relative paths").format(
                name=name
            )
        )
    return name


def select_files(files: list[WeightFile]) -> tuple[list[WeightFile], list[str]]:
    """Split a listing into the files to stage and the repository clutter to skip.

    Skipped: hidden files and directories (.gitattributes, .git/, .cache/), Meta's
    original/ directory, the published file list itself and, when the model has
    safetensors, its pickle copies (*.bin, *.pt, *.pth).
    """
    has_safetensors = any(entry.name.endswith(".safetensors") for entry in files)
    kept: list[WeightFile] = []
    skipped: list[str] = []

    for entry in files:
        parts = entry.name.split("/")
        clutter = (
            any(part.startswith(".") for part in parts)
            or entry.name.startswith(SKIPPED_DIRECTORIES)
            or entry.name == LISTING_NAME
            or entry.name.endswith(PARTIAL_SUFFIX)
            or (has_safetensors and entry.name.endswith(PICKLE_SUFFIXES))
        )
        if clutter:
            skipped.append(entry.name)
        else:
            kept.append(entry)

    return kept, skipped


def _entries_from_listing(document: Any, origin: str) -> list[WeightFile]:
    """Parse a published file list ({"files": [{"name", "size", "sha256"}]})."""
    entries = document.get("files") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise WeightsError(
            _('{origin} is not a weights file list: it has no "files" array').format(origin=origin)
        )

    files: list[WeightFile] = []
    for entry in entries:
        valid = (
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("size"), int)
            and entry["size"] >= 0
            and isinstance(entry.get("sha256") or "", str)
        )
        if not valid:
            raise WeightsError(
                _(
                    "{origin} has an invalid entry {entry}; each entry needs a name, a size in "
                    "bytes and optionally a sha256"
                ).format(origin=origin, entry=json.dumps(entry)[:200])
            )
        sha256 = str(entry.get("sha256") or "").lower() or None
        files.append(WeightFile(check_name(entry["name"]), entry["size"], sha256))
    return files


def walk_files(root: str) -> list[WeightFile]:
    """List the regular files under a directory (following file symlinks), sorted by name."""
    files: list[WeightFile] = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories.sort()
        for name in names:
            path = os.path.join(directory, name)
            if not os.path.isfile(path):
                continue
            relative = os.path.relpath(path, root).replace(os.sep, "/")
            files.append(WeightFile(relative, os.stat(path).st_size))
    return sorted(files, key=lambda entry: entry.name)


# --- HTTP ---------------------------------------------------------------------------------


class _SameHostRedirect(urllib.request.HTTPRedirectHandler):
    """Keep the Authorization header on redirects to the same host and drop it elsewhere.

    The hubs redirect large files to a CDN with a signed URL, which must not get the token.
    """

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        token = req.unredirected_hdrs.get("Authorization")
        old_host = urllib.parse.urlsplit(req.full_url).netloc
        if new is not None and token and urllib.parse.urlsplit(newurl).netloc == old_host:
            new.add_unredirected_header("Authorization", token)
        return new


_OPENER = urllib.request.build_opener(_SameHostRedirect())

# Errors after which another attempt can succeed. HTTP errors are sorted by status.
_TRANSIENT_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    socket.timeout,
    ConnectionError,
    TimeoutError,
)
_RETRIED_STATUSES = (408, 425, 429, 500, 502, 503, 504)


def _open(source: Source, url: str, offset: int = 0) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": "oneclick-weights"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    if source.token:
        # Unredirected, so that _SameHostRedirect decides where the token goes.
        request.add_unredirected_header("Authorization", f"Bearer {source.token}")
    return _OPENER.open(request, timeout=source.timeout)


def _http_failure(source: Source, url: str, error: BaseException, attempts: int) -> WeightsError:
    """Build the message for a request that failed for good: URL, cause, timeout, next step."""
    shown_url = redact_url(url)
    if isinstance(error, urllib.error.HTTPError):
        cause = _("HTTP {status} {reason}").format(status=error.code, reason=error.reason)
        if error.code in (401, 403):
            hint = _(
                "The repository may be gated or private: accept its license on the hub and give "
                "an access token."
            )
        elif error.code == 404:
            hint = _("Check the model id, the revision and the endpoint.")
        else:
            hint = _("Check that the server is up and serves this path, then run again.")
    else:
        reason = getattr(error, "reason", None) or error
        cause = _("{kind}: {reason}").format(kind=type(error).__name__, reason=reason)
        hint = _("Check the address and the network path to it, then run again.")
    return WeightsError(
        _(
            "Request to {url} failed after {attempts} attempt(s) with a timeout of {timeout} s "
            "per connection and read: {cause}. {hint}"
        ).format(url=shown_url, attempts=attempts, timeout=source.timeout, cause=cause, hint=hint)
    )


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, urllib.error.HTTPError):
        return error.code in _RETRIED_STATUSES
    # Nothing listens there (a wrong port or a stopped server): report it at once.
    if isinstance(error, urllib.error.URLError) and isinstance(
        error.reason, ConnectionRefusedError
    ):
        return False
    return isinstance(error, _TRANSIENT_ERRORS)


def _backoff(attempt: int) -> None:
    """Sleep before retry number attempt: 1, 2, 4, 8 ... seconds, at most MAX_BACKOFF_S."""
    time.sleep(min(MAX_BACKOFF_S, 0.5 * 2**attempt))


def _get_json(source: Source, url: str) -> tuple[Any, str]:
    """GET a JSON document with retries; return it and the response's Link header."""
    last_error: BaseException | None = None
    for attempt in range(source.retries + 1):
        if attempt:
            _backoff(attempt)
        try:
            with _open(source, url) as response:
                body = response.read()
                link = response.headers.get("Link", "")
            return json.loads(body), link
        except ValueError as error:
            raise WeightsError(
                _("{url} did not return JSON: {error}").format(url=redact_url(url), error=error)
            ) from None
        except _TRANSIENT_ERRORS as error:
            _close_error(error)
            last_error = error
            if not _is_transient(error):
                break
    assert last_error is not None
    raise _http_failure(source, url, last_error, attempt + 1) from None


def _close_error(error: BaseException) -> None:
    """Close the response an HTTPError holds, so that its connection is not left open."""
    if isinstance(error, urllib.error.HTTPError):
        error.close()


def _next_link(link_header: str) -> str:
    for part in link_header.split(","):
        if 'rel="next"' in part and "<" in part and ">" in part:
            return part[part.index("<") + 1 : part.index(">")]
    return ""


# --- Listing each source ------------------------------------------------------------------


def _quote_id(model_id: str) -> str:
    return "/".join(urllib.parse.quote(part, safe="") for part in model_id.split("/"))


def file_url(source: Source, name: str) -> str:
    """Return the download URL of one file of a remote source."""
    quoted = urllib.parse.quote(name, safe="/")
    if source.kind == "url":
        return source.location.rstrip("/") + "/" + quoted
    revision = urllib.parse.quote(source.revision, safe="")
    if source.kind == "huggingface":
        return f"{source.base_endpoint()}/{_quote_id(source.model_id)}/resolve/{revision}/{quoted}"
    query = urllib.parse.urlencode({"Revision": source.revision, "FilePath": name})
    return f"{source.base_endpoint()}/api/v1/models/{_quote_id(source.model_id)}/repo?{query}"


def _list_url(source: Source) -> list[WeightFile]:
    url = source.location.rstrip("/") + "/" + LISTING_NAME
    document, _link = _get_json(source, url)
    return _entries_from_listing(document, redact_url(url))


def _list_huggingface(source: Source) -> list[WeightFile]:
    revision = urllib.parse.quote(source.revision, safe="")
    url = (
        f"{source.base_endpoint()}/api/models/{_quote_id(source.model_id)}/tree/{revision}"
        "?recursive=true"
    )
    files: list[WeightFile] = []

    for _page in range(MAX_LISTING_PAGES):
        document, link = _get_json(source, url)
        if not isinstance(document, list):
            raise WeightsError(
                _("{url} did not return a file tree (a JSON array)").format(url=redact_url(url))
            )
        for entry in document:
            if not isinstance(entry, dict) or entry.get("type") != "file":
                continue
            lfs = entry.get("lfs")
            # Only LFS files carry a sha256 (lfs.oid); "oid" of other files is a git blob id.
            sha256 = lfs.get("oid") if isinstance(lfs, dict) else None
            files.append(WeightFile(check_name(str(entry["path"])), int(entry["size"]), sha256))
        url = _next_link(link)
        if not url:
            return files

    raise WeightsError(
        _("The file tree of {model_id} has more than {pages} pages; not staged").format(
            model_id=source.model_id, pages=MAX_LISTING_PAGES
        )
    )


def _list_modelscope(source: Source) -> list[WeightFile]:
    query = urllib.parse.urlencode({"Revision": source.revision, "Recursive": "true"})
    url = f"{source.base_endpoint()}/api/v1/models/{_quote_id(source.model_id)}/repo/files?{query}"
    document, _link = _get_json(source, url)
    data = document.get("Data") if isinstance(document, dict) else None
    entries = data.get("Files") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        message = document.get("Message", "") if isinstance(document, dict) else ""
        raise WeightsError(
            _(
                "{url} did not return a file list (Data.Files): {message}. Check the model id "
                "and the revision (ModelScope repositories usually use master)."
            ).format(url=redact_url(url), message=message or _("no message"))
        )

    files: list[WeightFile] = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("Type") == "tree":
            continue
        sha256 = entry.get("Sha256") if isinstance(entry.get("Sha256"), str) else None
        files.append(WeightFile(check_name(str(entry["Path"])), int(entry["Size"]), sha256 or None))
    return files


def _list_local(source: Source) -> list[WeightFile]:
    root = source.location
    if not os.path.isdir(root):
        raise WeightsError(
            _("The local weights directory {path} does not exist or is not a directory").format(
                path=root
            )
        )

    listing = os.path.join(root, LISTING_NAME)
    if os.path.isfile(listing):
        # A bundle's weights directory publishes sizes and sha256 sums; use them.
        try:
            with open(listing, encoding="utf-8") as handle:
                document = json.load(handle)
        except ValueError as error:
            raise WeightsError(
                _("{path} is not valid JSON: {error}").format(path=listing, error=error)
            ) from None
        return _entries_from_listing(document, listing)

    return walk_files(root)


def list_source(source: Source) -> list[WeightFile]:
    """List every file the source offers, before selection."""
    listers: dict[str, Callable[[Source], list[WeightFile]]] = {
        "local": _list_local,
        "url": _list_url,
        "huggingface": _list_huggingface,
        "modelscope": _list_modelscope,
    }
    try:
        return listers[source.kind](source)
    except (KeyError, TypeError, ValueError) as error:
        raise WeightsError(
            _("The file list of {source} has an entry of an unexpected shape ({error})").format(
                source=source.identity(), error=repr(error)
            )
        ) from None


# --- Marker -------------------------------------------------------------------------------


def read_marker(dest: str) -> dict[str, Any] | None:
    """Return the marker of a staged directory, or None when it is missing or unreadable."""
    try:
        with open(os.path.join(dest, MARKER_NAME), encoding="utf-8") as handle:
            marker = json.load(handle)
    except (OSError, ValueError):
        return None
    valid = (
        isinstance(marker, dict)
        and marker.get("format") == MARKER_FORMAT
        and isinstance(marker.get("files"), list)
        and all(isinstance(entry, dict) for entry in marker["files"])
    )
    return marker if valid else None


def _marker_entries(marker: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if marker is None:
        return {}
    return {str(entry.get("name")): entry for entry in marker["files"]}


def _unchanged(dest: str, entry: dict[str, Any]) -> bool:
    """Tell whether a file still has the size and mtime the marker recorded."""
    try:
        stats = os.stat(os.path.join(dest, str(entry.get("name"))))
    except OSError:
        return False
    return stats.st_size == entry.get("size") and stats.st_mtime_ns == entry.get("mtime_ns")


def _marker_document(dest: str, source: dict[str, str], files: list[WeightFile]) -> dict[str, Any]:
    entries = []
    for entry in sorted(files, key=lambda item: item.name):
        stats = os.stat(os.path.join(dest, entry.name))
        entries.append(
            {
                "name": entry.name,
                "size": entry.size,
                "sha256": entry.sha256,
                "mtime_ns": stats.st_mtime_ns,
            }
        )
    return {"format": MARKER_FORMAT, "source": source, "files": entries}


def _write_marker(dest: str, document: dict[str, Any]) -> bool:
    """Write the marker atomically unless it already has this content; return whether it did."""
    if read_marker(dest) == document:
        return False
    path = os.path.join(dest, MARKER_NAME)
    temporary = path + PARTIAL_SUFFIX
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.chmod(temporary, FILE_MODE)
    os.replace(temporary, path)
    return True


# --- Completeness -------------------------------------------------------------------------


def check_complete(dest: str, expected: list[WeightFile] | None = None) -> None:
    """Raise WeightsError unless a model directory is complete enough to hand to the engine.

    Checks: config.json exists, every shard named in model.safetensors.index.json exists and
    is not empty, at least one weight file exists when there is no index, no *.incomplete
    file is left anywhere, and each expected file has its exact size.
    """
    if not os.path.isdir(dest):
        raise WeightsError(
            _("The model directory {path} does not exist. Stage the weights into it first.").format(
                path=dest
            )
        )

    problems: list[str] = []
    present = {entry.name: entry.size for entry in walk_files(dest)}

    partials = sorted(name for name in present if name.endswith(PARTIAL_SUFFIX))
    if partials:
        problems.append(_("unfinished transfers {names}").format(names=_name_list(partials)))

    if CONFIG_NAME not in present:
        problems.append(_("{name} is missing").format(name=CONFIG_NAME))

    if INDEX_NAME in present:
        problems.extend(_index_problems(dest, present))
    elif not any(name.endswith(WEIGHT_SUFFIXES) for name in present):
        problems.append(_("no weight file (*.safetensors) and no {index}").format(index=INDEX_NAME))

    wrong_size = [
        f"{entry.name} ({present[entry.name]} of {entry.size} bytes)"
        for entry in expected or []
        if entry.name in present and present[entry.name] != entry.size
    ]
    missing = [entry.name for entry in expected or [] if entry.name not in present]
    if missing:
        problems.append(_("missing files {names}").format(names=_name_list(missing)))
    if wrong_size:
        problems.append(_("files with the wrong size {names}").format(names=_name_list(wrong_size)))

    if problems:
        raise WeightsError(
            _(
                "The model weights in {path} are incomplete: {problems}. Stage the weights again "
                "(an interrupted transfer resumes), or copy the missing files into {path}."
            ).format(path=dest, problems="; ".join(problems))
        )


def _index_problems(dest: str, present: dict[str, int]) -> list[str]:
    try:
        with open(os.path.join(dest, INDEX_NAME), encoding="utf-8") as handle:
            weight_map = json.load(handle).get("weight_map")
    except (ValueError, AttributeError) as error:
        return [_("{name} is not valid JSON ({error})").format(name=INDEX_NAME, error=error)]
    if not isinstance(weight_map, dict):
        return [_("{name} has no weight_map").format(name=INDEX_NAME)]

    shards = sorted({str(shard) for shard in weight_map.values()})
    missing = [shard for shard in shards if shard not in present]
    empty = [shard for shard in shards if present.get(shard) == 0]
    problems = []
    if missing:
        problems.append(
            _("shards named in {index} are missing: {names}").format(
                index=INDEX_NAME, names=_name_list(missing)
            )
        )
    if empty:
        problems.append(_("empty shards {names}").format(names=_name_list(empty)))
    return problems


# --- Space --------------------------------------------------------------------------------


def _nearest_existing(path: str) -> str:
    candidate = os.path.abspath(path)
    while not os.path.exists(candidate):
        candidate = os.path.dirname(candidate)
    return candidate


def _mount_point(path: str) -> str:
    candidate = os.path.realpath(path)
    while not os.path.ismount(candidate):
        candidate = os.path.dirname(candidate)
    return candidate


def check_space(dest: str, needed: int) -> None:
    """Raise WeightsError when the filesystem of dest has less free space than needed."""
    existing = _nearest_existing(dest)
    stats = os.statvfs(existing)
    free = stats.f_bavail * stats.f_frsize
    if needed > free:
        raise WeightsError(
            _(
                "Not enough disk space for the model weights in {path}: the transfer needs "
                "{needed}, {free} free on {mount}. Free up space there or stage the weights on a "
                "larger filesystem."
            ).format(
                path=dest,
                needed=format_bytes(needed),
                free=format_bytes(free),
                mount=_mount_point(existing),
            )
        )


# --- Transfer -----------------------------------------------------------------------------


def _hash_file(path: str, limit: int | None = None) -> Any:
    digest = hashlib.sha256()
    remaining = limit
    with open(path, "rb") as handle:
        while remaining is None or remaining > 0:
            chunk = handle.read(CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining))
            if not chunk:
                break
            digest.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
    return digest


def _makedirs(path: str) -> None:
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        os.mkdir(directory)
        os.chmod(directory, DIRECTORY_MODE)


def _open_partial(path: str, offset: int) -> BinaryIO:
    """Open the partial file for writing at offset; offset 0 truncates it."""
    if offset == 0:
        return open(path, "wb")
    handle = open(path, "r+b")  # noqa: SIM115 - the caller closes it in a with block
    handle.truncate(offset)
    handle.seek(offset)
    return handle


class _Copy:
    """One file's transfer into its partial file, counting bytes and hashing as it goes."""

    def __init__(self, dest: str, entry: WeightFile, progress: Progress | None) -> None:
        self.entry = entry
        self.final = os.path.join(dest, entry.name)
        self.partial = self.final + PARTIAL_SUFFIX
        self.progress = progress
        self.transferred = 0

    def start_digest(self, offset: int) -> Any:
        return _hash_file(self.partial, offset) if offset else hashlib.sha256()

    def pump(self, reader: BinaryIO, handle: BinaryIO, offset: int, digest: Any) -> int:
        """Copy reader into handle until EOF or the expected size; return the new offset."""
        while True:
            chunk = reader.read(min(CHUNK_SIZE, max(self.entry.size - offset, 1)))
            if not chunk:
                return offset
            if offset + len(chunk) > self.entry.size:
                raise WeightsError(
                    _("{name} is larger than the {size} bytes its listing gives").format(
                        name=self.entry.name, size=self.entry.size
                    )
                )
            handle.write(chunk)
            digest.update(chunk)
            offset += len(chunk)
            self.transferred += len(chunk)
            if self.progress is not None:
                self.progress(self.entry.name, offset, self.entry.size)

    def finish(self, digest: Any, origin: str) -> str:
        """Check size and sha256 of the partial file, then move it to its final name."""
        size = os.path.getsize(self.partial)
        if size != self.entry.size:
            raise WeightsError(
                _("{name} from {origin} has {size} bytes, expected {expected}").format(
                    name=self.entry.name, origin=origin, size=size, expected=self.entry.size
                )
            )
        actual = str(digest.hexdigest())
        if self.entry.sha256 is not None and actual != self.entry.sha256:
            os.remove(self.partial)
            raise _ChecksumMismatchError(
                _(
                    "{name} from {origin} has sha256 {actual}, expected {expected}. The copy was "
                    "removed; run again to transfer it again, and check the source if this repeats."
                ).format(
                    name=self.entry.name, origin=origin, actual=actual, expected=self.entry.sha256
                )
            )
        os.chmod(self.partial, FILE_MODE)
        os.replace(self.partial, self.final)
        return actual


class _ChecksumMismatchError(WeightsError):
    pass


def _copy_local(source: Source, copy: _Copy, offset: int) -> str:
    origin = os.path.join(source.location, copy.entry.name)
    digest = copy.start_digest(offset)
    with open(origin, "rb") as reader, _open_partial(copy.partial, offset) as handle:
        reader.seek(offset)
        copy.pump(reader, handle, offset, digest)
        handle.flush()
        os.fsync(handle.fileno())
    return copy.finish(digest, origin)


def _download(source: Source, copy: _Copy, offset: int, result: StageResult) -> str:
    """Download one file with Range resume and bounded retries; return its sha256."""
    url = file_url(source, copy.entry.name)
    shown_url = redact_url(url)
    last_error: BaseException | None = None

    for attempt in range(source.retries + 1):
        if attempt:
            _backoff(attempt)
            offset = os.path.getsize(copy.partial) if os.path.exists(copy.partial) else 0
        digest = copy.start_digest(offset)
        if offset == copy.entry.size:
            return copy.finish(digest, shown_url)

        try:
            offset, digest = _receive(source, copy, url, offset, digest, result)
            if offset == copy.entry.size:
                return copy.finish(digest, shown_url)
            last_error = http.client.IncompleteRead(b"", copy.entry.size - offset)
        except urllib.error.HTTPError as error:
            _close_error(error)
            last_error = error
            if error.code == 416 and offset:
                # The partial file cannot be resumed, so this file starts over.
                os.remove(copy.partial)
            elif not _is_transient(error):
                break
        except _TRANSIENT_ERRORS as error:
            last_error = error
            if not _is_transient(error):
                break

    assert last_error is not None
    failure = _http_failure(source, url, last_error, attempt + 1)
    kept = os.path.getsize(copy.partial) if os.path.exists(copy.partial) else 0
    if kept:
        failure = WeightsError(
            _("{message} The next run resumes {name} from byte {offset}.").format(
                message=failure, name=copy.entry.name + PARTIAL_SUFFIX, offset=kept
            )
        )
    raise failure


def _receive(
    source: Source, copy: _Copy, url: str, offset: int, digest: Any, result: StageResult
) -> tuple[int, Any]:
    """Send one request from offset and write the body; return the new offset and digest."""
    with _open(source, url, offset) as response:
        if offset and response.status != 206:
            # The server ignored the Range header and sends the whole file.
            if copy.entry.name not in result.restarted:
                result.restarted.append(copy.entry.name)
            offset, digest = 0, hashlib.sha256()
        elif offset and not _range_starts_at(response, offset):
            raise WeightsError(
                _("{url} answered a request for bytes {offset}- with {range}").format(
                    url=redact_url(url),
                    offset=offset,
                    range=response.headers.get("Content-Range", ""),
                )
            )

        with _open_partial(copy.partial, offset) as handle:
            try:
                offset = copy.pump(response, handle, offset, digest)
            finally:
                handle.flush()
                os.fsync(handle.fileno())
    return offset, digest


def _range_starts_at(response: Any, offset: int) -> bool:
    content_range = str(response.headers.get("Content-Range", ""))
    return content_range.startswith(f"bytes {offset}-")


def _transfer(
    source: Source, dest: str, item: _Transfer, result: StageResult, progress: Progress | None
) -> str:
    copy = _Copy(dest, item.file, progress)
    _makedirs(os.path.dirname(copy.final))
    try:
        try:
            return _run_transfer(source, copy, item.offset, result)
        except _ChecksumMismatchError:
            if item.offset == 0:
                raise
            # The resumed bytes came from an earlier run and may be the bad part: start over once.
            return _run_transfer(source, copy, 0, result)
    finally:
        result.bytes_transferred += copy.transferred


def _run_transfer(source: Source, copy: _Copy, offset: int, result: StageResult) -> str:
    if source.kind == "local":
        return _copy_local(source, copy, offset)
    return _download(source, copy, offset, result)


# --- Planning and staging -----------------------------------------------------------------


def _plan(
    dest: str, files: list[WeightFile], marker: dict[str, Any] | None
) -> tuple[list[WeightFile], list[_Transfer]]:
    """Sort files into those already in place (with their sha256) and those to transfer."""
    recorded = _marker_entries(marker)
    in_place: list[WeightFile] = []
    transfers: list[_Transfer] = []

    for entry in files:
        final = os.path.join(dest, entry.name)
        partial = final + PARTIAL_SUFFIX
        known = recorded.get(entry.name)

        if os.path.isfile(final) and os.path.getsize(final) == entry.size:
            if known is not None and _unchanged(dest, known):
                recorded_sha = known.get("sha256")
                if entry.sha256 is None or recorded_sha == entry.sha256:
                    in_place.append(
                        WeightFile(entry.name, entry.size, recorded_sha or entry.sha256)
                    )
                    continue
            elif entry.sha256 is None or _hash_file(final).hexdigest() == entry.sha256:
                in_place.append(entry)
                continue

        offset = os.path.getsize(partial) if os.path.isfile(partial) else 0
        transfers.append(_Transfer(entry, offset if offset <= entry.size else 0))

    return in_place, transfers


def _marker_still_valid(dest: str, source: Source, marker: dict[str, Any] | None) -> bool:
    return (
        marker is not None
        and marker.get("source") == source.identity()
        and bool(marker["files"])
        and all(_unchanged(dest, entry) for entry in marker["files"])
    )


def _files_from_marker(marker: dict[str, Any]) -> list[WeightFile]:
    return [
        WeightFile(str(entry["name"]), int(entry["size"]), entry.get("sha256"))
        for entry in marker["files"]
    ]


def validate_source(source: Source) -> None:
    """Raise WeightsError when the settings of a source cannot work."""
    if source.kind not in SOURCES:
        raise WeightsError(
            _("Unknown weights source {kind!r}; use one of {choices}").format(
                kind=source.kind, choices=", ".join(SOURCES)
            )
        )
    if source.kind == "local" and not os.path.isabs(source.location):
        raise WeightsError(
            _("The local weights directory must be an absolute path, got {path!r}").format(
                path=source.location
            )
        )
    if source.kind == "url" and not source.location.startswith(("http://", "https://")):
        raise WeightsError(
            _("The weights URL must start with http:// or https://, got {url!r}").format(
                url=redact_url(source.location)
            )
        )
    if source.kind in ("huggingface", "modelscope"):
        if source.model_id.count("/") != 1 or not all(source.model_id.split("/")):
            raise WeightsError(
                _("The model id must look like owner/name, got {model_id!r}").format(
                    model_id=source.model_id
                )
            )
        if source.endpoint and not source.endpoint.startswith(("http://", "https://")):
            raise WeightsError(
                _("The endpoint must start with http:// or https://, got {url!r}").format(
                    url=redact_url(source.endpoint)
                )
            )
    if source.timeout <= 0 or not 0 <= source.retries <= MAX_RETRIES:
        raise WeightsError(
            _(
                "The timeout must be above 0 seconds and retries 0 to {max_retries}; got "
                "{timeout} and {retries}"
            ).format(max_retries=MAX_RETRIES, timeout=source.timeout, retries=source.retries)
        )


def stage(
    source: Source,
    dest: str,
    *,
    check_mode: bool = False,
    progress: Progress | None = None,
) -> StageResult:
    """Stage the weights of a source into dest, or with source kind present only check them.

    Raises WeightsError with a complete message; the message never contains the token.
    """
    try:
        return _stage(source, os.path.normpath(dest), check_mode, progress)
    except WeightsError as error:
        raise WeightsError(_scrub(str(error), source.token)) from None
    except OSError as error:
        raise WeightsError(
            _("Staging the model weights into {path} failed: {error}").format(
                path=dest, error=_scrub(str(error), source.token)
            )
        ) from None


def _scrub(message: str, token: str) -> str:
    return message.replace(token, "********") if token else message


def _stage(source: Source, dest: str, check_mode: bool, progress: Progress | None) -> StageResult:
    validate_source(source)
    if not os.path.isabs(dest):
        raise WeightsError(
            _("The model directory must be an absolute path, got {path!r}").format(path=dest)
        )
    marker = read_marker(dest)

    if source.kind == "present":
        return _check_present(dest, marker, check_mode)

    # A remote source that staged this directory before is not asked again, so that a re-run
    # works offline. NOTE: a moving revision such as main is therefore not re-read; remove
    # the marker to fetch its newer commits.
    if (
        source.kind in REMOTE_SOURCES
        and marker is not None
        and _marker_still_valid(dest, source, marker)
    ):
        files = _files_from_marker(marker)
        check_complete(dest, files)
        return StageResult(files=files)

    files, skipped = select_files(list_source(source))
    if not files:
        raise WeightsError(
            _("The source {source} lists no files to stage").format(source=source.identity())
        )
    in_place, transfers = _plan(dest, files, marker)
    needed = sum(item.file.size - item.offset for item in transfers)
    check_space(dest, needed)
    result = StageResult(skipped=skipped, bytes_to_transfer=needed)

    if check_mode:
        result.transferred = [item.file.name for item in transfers]
        result.files = files
        result.changed = bool(transfers) or marker != _marker_document(
            dest, source.identity(), in_place
        )
        return result

    _makedirs(dest)
    staged = {entry.name: entry for entry in in_place}
    for item in transfers:
        sha256 = _transfer(source, dest, item, result, progress)
        staged[item.file.name] = WeightFile(item.file.name, item.file.size, sha256)
        result.transferred.append(item.file.name)

    result.files = [staged[entry.name] for entry in files]
    check_complete(dest, result.files)
    result.marker_written = _write_marker(
        dest, _marker_document(dest, source.identity(), result.files)
    )
    result.changed = bool(transfers) or result.marker_written
    return result


def _check_present(dest: str, marker: dict[str, Any] | None, check_mode: bool) -> StageResult:
    """Check weights that are already in place and record them in the marker."""
    if marker is not None and marker["files"] and all(_unchanged(dest, e) for e in marker["files"]):
        files = _files_from_marker(marker)
        check_complete(dest, files)
        return StageResult(files=files)

    check_complete(dest)
    recorded = _marker_entries(marker)
    files = []
    for entry in select_files(walk_files(dest))[0]:
        known = recorded.get(entry.name)
        sha256 = known.get("sha256") if known is not None and _unchanged(dest, known) else None
        files.append(WeightFile(entry.name, entry.size, sha256))

    result = StageResult(files=files, changed=True)
    if not check_mode:
        document = _marker_document(dest, {"kind": "present"}, files)
        result.marker_written = _write_marker(dest, document)
        result.changed = result.marker_written
    return result
