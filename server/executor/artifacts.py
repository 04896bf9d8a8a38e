"""Model artifacts: skops files per version, addressed by model and version, checked by SHA-256.

skops stores an estimator as a schema of known types instead of a pickle, and refuses to build types
it was not told to trust. We trust what skops trusts by default plus scikit-learn's own internal
types (e.g. sklearn.tree._tree.Tree inside a random forest): every estimator the trainer builds
comes from the sklearn namespace, so an artifact that needs anything else was not written by us and
is refused.

Layout: <data_dir>/artifacts/<model_id, escaped>/<version>.skops
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
from typing import Any

from .errors import PermanentJobError

TRUSTED_PREFIXES = ("sklearn.", "numpy.")


class UntrustedArtifact(PermanentJobError):
    """The artifact needs types outside the trusted set, or its digest does not match the record."""


def dumps(model: Any) -> bytes:
    import skops.io as sio

    return sio.dumps(model)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def loads(data: bytes, expected_sha256: str | None = None) -> Any:
    """Build the estimator from skops bytes, refusing unknown types and a wrong digest."""
    import skops.io as sio

    if expected_sha256 is not None and digest(data) != expected_sha256:
        raise UntrustedArtifact("artifact digest does not match the one recorded for its version")
    untrusted = sio.get_untrusted_types(data=data)
    refused = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
    if refused:
        raise UntrustedArtifact(f"artifact needs untrusted types: {', '.join(sorted(refused))}")
    return sio.loads(data, trusted=untrusted)


def model_folder_name(model_id: str) -> str:
    """A file-system-safe, reversible name for a model id ('/', ':' and '.' would be path syntax)."""
    return "".join(c if c.isalnum() or c in "-_" else f"%{ord(c):02X}" for c in model_id)


def artifact_path(data_dir: str | os.PathLike, model_id: str, version: int) -> pathlib.Path:
    return pathlib.Path(data_dir) / "artifacts" / model_folder_name(model_id) / f"{version}.skops"


def save(data_dir: str | os.PathLike, model_id: str, version: int, data: bytes) -> tuple[pathlib.Path, str]:
    """Write atomically (temp file + rename, fsynced); returns (path, sha256)."""
    path = artifact_path(data_dir, model_id, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{version}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path, digest(data)


def read(path: str | os.PathLike, expected_sha256: str) -> bytes:
    data = pathlib.Path(path).read_bytes()
    if digest(data) != expected_sha256:
        raise UntrustedArtifact(f"{path}: digest does not match the one recorded for its version")
    return data
