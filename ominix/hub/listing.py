"""Listing the files a source offers, each listing returning (resolved revision, files): Hugging Face
through huggingface_hub, ModelScope through its HTTP API, a URL by a HEAD request; and the wording
of hub and network errors, shared with hub/fetch.py."""

from __future__ import annotations

import os
from urllib.parse import urlencode, urlsplit

from ominix.hub.names import UnsafeNameError, is_commit_hash, is_sha256, safe_relpath
from ominix.hub.sources import (
    DownloadError, GatedRepoError, NetworkError, RemoteFile, RepoNotFoundError, Source, UnsafeListingError,
    hf_endpoint, modelscope_endpoint, select_files, norm_sha,
)


def list_hf_files(source: Source, include: list[str] | None = None) -> tuple[str, list[RemoteFile]]:
    """All files of the repo at the revision, with sizes and hashes, through huggingface_hub."""
    from huggingface_hub import HfApi, hf_hub_url

    endpoint = hf_endpoint()
    api = HfApi(endpoint=endpoint, library_name="ominix")
    try:
        info = api.model_info(source.repo_id, revision=source.revision, files_metadata=True)
    except Exception as exc:  # mapped to our own errors below, anything else propagates
        raise hf_error(exc, source) from None
    commit = info.sha or source.revision
    siblings = info.siblings or []
    where = f"{endpoint} listed {source.repo_id}@{source.revision}"
    if not is_commit_hash(commit):
        raise UnsafeListingError(f"{where} at commit id {commit!r}, which is not 40 hex digits; "
                                 "nothing was downloaded.")
    _check_listing(where, [s.rfilename for s in siblings])
    for sibling in siblings:  # blob names come from these hashes: they must be hashes
        if sibling.lfs is not None and not is_sha256(sibling.lfs.sha256):
            raise UnsafeListingError(f"{where} with sha256 {sibling.lfs.sha256!r} for {sibling.rfilename!r}, "
                                     "which is not 64 hex digits; nothing was downloaded.")
        if sibling.lfs is None and sibling.blob_id is not None and not is_commit_hash(sibling.blob_id):
            raise UnsafeListingError(f"{where} with blob id {sibling.blob_id!r} for {sibling.rfilename!r}, "
                                     "which is not 40 hex digits; nothing was downloaded.")
    by_path = {s.rfilename: s for s in siblings}
    if source.only_files:
        missing = [p for p in source.only_files if p not in by_path]
        if missing:
            raise RepoNotFoundError(f"{source.repo_id}@{source.revision} has no file {missing[0]!r}.")
        wanted = list(source.only_files)
    else:
        wanted = select_files(sorted(by_path), include or source.allow_patterns)
    files = []
    for path in wanted:
        sibling = by_path[path]
        lfs = sibling.lfs
        if lfs is None and sibling.blob_id is None:
            raise DownloadError(f"{endpoint} listed {source.repo_id} without file hashes (blobs=true); "
                                "is HF_ENDPOINT a Hugging Face compatible hub?")
        files.append(RemoteFile(
            path=path,
            size=lfs.size if lfs else sibling.size,
            url=hf_hub_url(source.repo_id, path, revision=commit, endpoint=endpoint),
            sha256=lfs.sha256 if lfs else None,
            git_sha1=None if lfs else sibling.blob_id,
            blob=lfs.sha256 if lfs else sibling.blob_id,
        ))
    if not files:
        raise RepoNotFoundError(f"{source.repo_id}@{source.revision} has no files to download"
                                + (f" matching {include}." if include else "."))
    return commit, files


def _check_listing(where: str, names: list) -> None:
    """Every name of a listing, wanted or not, must be a safe relative path: else refuse it whole."""
    for name in names:
        try:
            safe_relpath(name)
        except UnsafeNameError as e:
            raise UnsafeListingError(f"{where} with an unsafe name, so nothing was downloaded: {e}.") from None


def hf_error(exc: Exception, source: Source) -> Exception:
    """Translate huggingface_hub / transport errors into ours, with the fix in the message."""
    from huggingface_hub import errors as hf_errors

    web = hf_endpoint()
    repo = source.repo_id
    if isinstance(exc, hf_errors.GatedRepoError) or _status(exc) == 403:
        return GatedRepoError(gated_message(repo, web))
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return RepoNotFoundError(f"{repo} has no revision '{source.revision}'. Check the branch, tag or commit.")
    if isinstance(exc, hf_errors.RepositoryNotFoundError) or _status(exc) in (401, 404):
        return RepoNotFoundError(not_found_message(source, web))
    if isinstance(exc, hf_errors.OfflineModeIsEnabled):
        return NetworkError(f"HF_HUB_OFFLINE is set, so {repo} cannot be listed on {web}. "
                            "Unset HF_HUB_OFFLINE to download it.")
    if is_transport_error(exc):
        return NetworkError(network_message(web, exc))
    if isinstance(exc, hf_errors.HfHubHTTPError):
        return DownloadError(f"{web} answered {_status(exc)} for {repo}: {str(exc).splitlines()[0]}")
    return exc


def gated_message(repo: str, web: str) -> str:
    has_token = bool(os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"))
    fix = ("your HF_TOKEN has no access yet: accept the licence at " if has_token
           else "accept the licence at ")
    return (f"{repo} is gated: {fix}{web}/{repo} and set HF_TOKEN to a read token "
            f"from {web}/settings/tokens.")


def not_found_message(source: Source, web: str) -> str:
    hint = ("the catalog entry points at it; the catalog may be out of date"
            if source.from_catalog else "check the id (case matters); `ominix list --all` shows catalog ids")
    return f"Repo {source.repo_id} not found on {web}: {hint}. Private repos also need HF_TOKEN."


def network_message(where: str, exc: Exception) -> str:
    return (f"Cannot reach {where} ({type(exc).__name__}: {exc}). Check your network connection, "
            "HF_ENDPOINT / MODELSCOPE_ENDPOINT and proxy settings; models already downloaded keep "
            "working offline (HF_HUB_OFFLINE=1).")


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def is_transport_error(exc: Exception) -> bool:
    """Connection refused, DNS failure, timeout: from our httpx or huggingface_hub's httpx fork."""
    import httpx

    if isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError)):
        return True
    try:
        import httpx2  # huggingface_hub >= 2 ships its own httpx fork

        if isinstance(exc, httpx2.TransportError):
            return True
    except ImportError:
        pass
    try:
        import requests  # huggingface_hub < 1 used requests

        return isinstance(exc, (requests.ConnectionError, requests.Timeout))
    except ImportError:
        return False


def list_modelscope_files(source: Source, client, include: list[str] | None = None) -> tuple[str, list[RemoteFile]]:
    """ModelScope's recursive file listing: Data.Files[] with Path, Size, Sha256, Type."""
    base = f"{modelscope_endpoint()}/api/v1/models/{source.repo_id}/repo"
    query = urlencode({"Revision": source.revision, "Recursive": "true"})
    response = client.get(f"{base}/files?{query}")
    if response.status_code in (401, 403):
        raise GatedRepoError(f"ModelScope repo {source.repo_id} needs access: accept its licence at "
                             f"{modelscope_endpoint()}/models/{source.repo_id}.")
    if response.status_code == 404:
        raise RepoNotFoundError(_ms_not_found(source))
    if response.status_code >= 400:
        raise DownloadError(f"ModelScope answered {response.status_code} when listing {source.repo_id}.")
    try:
        body = response.json()
    except ValueError:
        raise DownloadError(f"ModelScope returned a non-JSON file list for {source.repo_id}.") from None
    if body.get("Success") is False or body.get("Code") not in (None, 200):
        raise RepoNotFoundError(_ms_not_found(source) + f" ({body.get('Message', 'no message')})")
    entries = [f for f in (body.get("Data") or {}).get("Files") or [] if isinstance(f, dict)]
    _check_listing(f"ModelScope listed {source.repo_id}@{source.revision}", [f.get("Path") for f in entries])
    entries = [f for f in entries if f.get("Type") != "tree"]
    by_path = {f["Path"]: f for f in entries}
    files = []
    for path in select_files(sorted(by_path), include or source.allow_patterns):
        entry = by_path[path]
        query = urlencode({"Revision": source.revision, "FilePath": path})
        files.append(RemoteFile(path=path, size=entry.get("Size"), url=f"{base}?{query}",
                                sha256=norm_sha(entry.get("Sha256"))))
    if not files:
        raise RepoNotFoundError(f"ModelScope repo {source.repo_id}@{source.revision} has no files to download.")
    return source.revision, files


def _ms_not_found(source: Source) -> str:
    hint = ("the catalog entry points at it; the catalog may be out of date"
            if source.from_catalog else "check the id; `ominix list --all` shows catalog ids")
    return f"ModelScope repo {source.repo_id} (revision {source.revision}) not found: {hint}."


def url_file(source: Source, client) -> RemoteFile:
    """A direct download: its size comes from a HEAD when the server tells (else from the GET)."""
    size = None
    try:
        head = client.head(source.url)
        if head.status_code == 404:
            raise RepoNotFoundError(f"{source.url} answered 404: check the URL.")
        if head.status_code in (401, 403):
            raise GatedRepoError(f"{source.url} answered {head.status_code}: the file needs credentials.")
        if head.status_code < 400 and head.headers.get("Content-Length"):
            size = int(head.headers["Content-Length"])
    except DownloadError:
        raise
    except Exception as exc:
        if is_transport_error(exc):
            raise NetworkError(network_message(urlsplit(source.url).netloc, exc)) from None
        raise
    return RemoteFile(path=source.filename, size=size, url=source.url, sha256=source.sha256)
