"""TF Serving's versioned layout `<root>/<name>/<version>/`, written atomically."""

import contextlib
import numbers
import os
import shutil
import tempfile
from pathlib import Path


def existing_versions(model_dir: str | os.PathLike) -> list[int]:
    """The complete version directories (integer names) under `model_dir`, ascending."""
    path = Path(model_dir)
    if not path.is_dir():
        return []
    return sorted(int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_dir: str | os.PathLike) -> int:
    """One more than the newest existing version (1 for a new model)."""
    versions = existing_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def check_version(version) -> int:
    """`version` as an `int`, or a `ValueError` unless it is an integer `>= 0` (TF Serving loads
    only version directories named by a non-negative integer; `keep_latest` sees only those).

    Example:
    >>> check_version(3)
    3
    >>> check_version(-3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: version must be an int >= 0 (...). Received: version=-3
    """
    if isinstance(version, bool) or not isinstance(version, numbers.Integral) or version < 0:
        raise ValueError("version must be an int >= 0 (TF Serving loads only non-negative "
                         f"integer version directories). Received: version={version!r}")
    return int(version)


@contextlib.contextmanager
def atomic_version_dir(model_dir: str | os.PathLike, version: int | None = None):
    """Yields a scratch directory; on success renames it to `model_dir/<version>`.

    `version` defaults to one more than the newest; any other must be an int `>= 0`
    (`check_version`: a `ValueError` before anything is written).

    The scratch directory lives beside the versions (same file system, so `os.rename` is atomic)
    under a name TF Serving ignores (not an integer). If the body raises, the scratch directory
    is removed and no version appears; existing versions are never touched. The version
    directory gets the usual mode of a new directory (0777 less the umask), not the scratch
    directory's owner-only 0700.

    Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_version_dir(root / "m") as scratch:
    ...     _ = (scratch / "saved_model.pb").write_bytes(b"x")
    >>> existing_versions(root / "m")
    [1]
    """
    version = None if version is None else check_version(version)
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(model_dir) if version is None else version
    final = model_dir / str(version)
    if final.exists():
        raise FileExistsError(f"Version {version} already exists at {final}; not overwriting.")
    scratch = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir))
    try:
        yield scratch
        # mkdtemp makes the directory owner-only (0700); the version gets the mode any new
        # directory gets (0777 less the umask), so a TF Serving process running as another
        # user can read it.
        os.chmod(scratch, 0o777 & ~_umask())
        os.rename(scratch, final)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def check_keep(keep) -> None:
    """`keep` (how many versions an export leaves) is `None` (all) or an int >= 1; checked
    before anything is written, so a bad value never leaves a new version behind.

    Example:
    >>> check_keep(2)
    >>> check_keep(0)
    Traceback (most recent call last):
    ...
    ValueError: keep must be an int >= 1 or None (keep every version). Received: keep=0
    """
    if keep is not None and (not isinstance(keep, numbers.Integral) or isinstance(keep, bool)
                             or keep < 1):
        raise ValueError("keep must be an int >= 1 or None (keep every version). "
                         f"Received: keep={keep!r}")


def keep_latest(model_dir: str | os.PathLike, keep: int) -> list[int]:
    """Deletes all but the `keep` newest versions (`None`: none deleted); returns the deleted
    version numbers."""
    check_keep(keep)
    if keep is None:
        return []
    versions = existing_versions(model_dir)
    doomed = versions[:-keep]
    for version in doomed:
        shutil.rmtree(Path(model_dir) / str(version))
    return doomed
