"""RecordStore: dedupe on (query_id, model, tool), resumability, dtypes, compaction and crash safety."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from atlas_router.errors import AtlasError
from atlas_router.records.schema import COLUMNS, SCHEMA_VERSION, query_key
from atlas_router.records.store import ARROW_SCHEMA, RecordStore, normalize


def _rows(n: int, model: str = "m1", tool: str = "none", start: int = 0) -> list[dict]:
    return [
        {"benchmark": "gsm8k", "query": f"question {i}", "model": model, "tool": tool, "score": i % 2, "cost": 0.001}
        for i in range(start, start + n)
    ]


def test_append_adds_only_new_keys_and_counts(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "rec")
    assert store.append(_rows(5)) == 5
    assert store.append(_rows(5)) == 0
    assert store.append(_rows(5, start=3)) == 3  # questions 3, 4 already there
    assert store.append(_rows(2, tool="python_code")) == 2  # same queries, another pair
    assert len(store) == 10
    # within one batch the first row of a key wins
    dup = _rows(1, start=100) + [dict(_rows(1, start=100)[0], score=0.25)]
    assert store.append(dup) == 1
    df = store.load()
    assert df.loc[df["query"] == "question 100", "score"].tolist() == [0.0]
    assert json.loads((tmp_path / "rec" / "meta.json").read_text())["schema_version"] == SCHEMA_VERSION


def test_defaults_and_dtypes(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    store.append(
        pd.DataFrame(
            [
                {"benchmark": "b", "query": "q", "model": "m", "reference": ["x", 1], "input_tokens": 12.0},
                {"query_id": "given", "model": "m", "tool": None, "score": None, "cost": "0.5"},
            ]
        )
    )
    df = store.load()
    assert [str(df[c].dtype) for c in COLUMNS] == list(COLUMNS.values())
    first, second = df.iloc[0], df.iloc[1]
    assert first["query_id"] == query_key("b", "q")
    assert json.loads(first["reference"]) == ["x", 1]
    assert first["input_tokens"] == 12 and first["output_tokens"] == 0 and first["calls"] == 1
    assert first["tool"] == "none" and second["tool"] == "none"
    assert math.isnan(second["score"]) and second["cost"] == 0.5
    assert first["split"] == "" and first["error"] == ""
    assert (df["schema_version"] == SCHEMA_VERSION).all()
    only_lists = normalize([{"query": "q", "model": "m", "reference": ["x", 1]}])  # no NaN in the column
    assert json.loads(only_lists["reference"][0]) == ["x", 1]


def test_bad_rows_are_one_line_errors(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    with pytest.raises(AtlasError, match="unknown record columns: transcript"):
        store.append([{"query": "q", "model": "m", "transcript": []}])
    with pytest.raises(AtlasError, match="'model'"):
        store.append([{"query": "q"}])
    with pytest.raises(AtlasError, match="non-empty 'model'"):
        store.append([{"query": "q", "model": ""}])
    with pytest.raises(AtlasError, match="whole numbers"):
        store.append([{"query": "q", "model": "m", "calls": 1.5}])
    with pytest.raises(AtlasError, match="unknown record columns: nope"):
        store.load(["score", "nope"])
    assert len(store) == 0


def test_resume_from_a_new_instance_and_see_other_writers(tmp_path: Path) -> None:
    a = RecordStore(tmp_path)
    a.append(_rows(4))
    b = RecordStore(tmp_path)
    assert b.keys() == a.keys() and len(b.keys()) == 4
    b.append(_rows(2, model="m2"))
    assert len(a.keys()) == 6  # a's cache picks up b's new part
    assert a.append(_rows(2, model="m2")) == 0


def test_load_columns_and_empty_store(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "new")
    empty = store.load()
    assert list(empty.columns) == list(COLUMNS) and len(empty) == 0 and len(store) == 0
    store.append(_rows(3))
    sub = store.load(["model", "score"])
    assert list(sub.columns) == ["model", "score"] and sub["score"].tolist() == [0.0, 1.0, 0.0]


def test_compact_merges_parts_and_keeps_rows(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    for i in range(4):
        store.append(_rows(3, start=3 * i))
    before = store.load().sort_values("query").reset_index(drop=True)
    assert len(store.parts()) == 4
    assert store.compact() == 4
    assert len(store.parts()) == 1 and not (tmp_path / "compact.json").exists()
    after = RecordStore(tmp_path).load().sort_values("query").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    assert store.append(_rows(12)) == 0
    assert store.compact() == 0


def test_interrupted_compaction_never_shows_duplicates(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    store.append(_rows(3))
    store.append(_rows(3, start=3))
    olds = [p.name for p in store.parts()]
    table = store.to_arrow()
    # Crash after the merged part appeared but before the old parts were deleted.
    merged = tmp_path / "part-99999999999999999999-merged00.parquet"
    pq.write_table(table, merged)
    (tmp_path / "compact.json").write_text(json.dumps({"replaces": olds, "merged": merged.name}))
    reader = RecordStore(tmp_path)
    assert len(reader) == 6 and len(reader.load()) == 6 and len(reader.keys()) == 6
    reader.append(_rows(1, start=50))  # the next writer finishes the compaction
    assert not (tmp_path / "compact.json").exists()
    assert all(not (tmp_path / n).exists() for n in olds) and len(reader) == 7

    # Crash before the merged part appeared: the journal is ignored and rolled back.
    olds = [p.name for p in reader.parts()]
    (tmp_path / ".tmp-part-5.parquet").write_bytes(b"half written")
    (tmp_path / "compact.json").write_text(json.dumps({"replaces": olds, "merged": "part-5.parquet"}))
    assert len(RecordStore(tmp_path).load()) == 7
    assert reader.compact() == 2 and len(reader.load()) == 7
    assert not (tmp_path / ".tmp-part-5.parquet").exists()


def test_stray_temp_files_are_not_read(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    store.append(_rows(2))
    pq.write_table(pa.Table.from_pandas(normalize(_rows(5, start=10)), schema=ARROW_SCHEMA), tmp_path / ".tmp-part-x.parquet")
    assert len(store.load()) == 2


def test_refuses_foreign_or_newer_directories(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text(json.dumps({"format": "atlas-records", "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(AtlasError, match="schema version"):
        RecordStore(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "meta.json").write_text("{}")
    with pytest.raises(AtlasError, match="not an atlas records store"):
        RecordStore(other)
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(AtlasError, match="must be a directory"):
        RecordStore(afile)


WRITER = """
import sys
from atlas_router.records.store import RecordStore
rows = [{"benchmark": "gsm8k", "query": f"question {i}", "model": "m1", "score": 1.0} for i in range(300)]
print(RecordStore(sys.argv[1]).append(rows))
"""


def test_concurrent_writer_processes_do_not_duplicate(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    added = sorted(int(p.communicate(timeout=120)[0]) for p in procs)
    assert added == [0, 0, 300]
    assert len(RecordStore(tmp_path)) == 300


def test_threads_sharing_a_store_do_not_duplicate(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = RecordStore(tmp_path)
    with ThreadPoolExecutor(4) as pool:
        added = list(pool.map(lambda start: store.append(_rows(50, start=start)), [0, 25, 50, 0]))
    assert sum(added) == 100 and len(store) == 100 and len(store.keys()) == 100


# -- corrupt parts: one line naming the part, and a repair that keeps every readable row --------------------
def _store_with_parts(path: Path, n_parts: int = 3, rows: int = 5) -> RecordStore:
    store = RecordStore(path)
    for i in range(n_parts):
        assert store.append(_rows(rows, start=i * rows)) == rows
    return store


def _atlas(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atlas_router", *args], capture_output=True, text=True, timeout=300)


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_truncated_part_is_one_line_everywhere_and_repair_keeps_the_other_parts(tmp_path: Path) -> None:
    from atlas_router.records.store import CorruptPartError

    d = tmp_path / "rec"
    store = _store_with_parts(d)
    parts = store.parts()
    bad = parts[1]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # a disk that filled up, a copy cut short
    fresh = RecordStore(d)
    for read in (fresh.load, fresh.keys, fresh.__len__, lambda: fresh.load(["score"]), fresh.compact):
        with pytest.raises(CorruptPartError) as info:
            read()
        msg = str(info.value)
        assert "\n" not in msg and str(bad) in msg and f"atlas records repair {d}" in msg
    line = _one_line(_atlas("records", "show", str(d)))
    assert bad.name in line and "atlas records repair" in line
    assert bad.name in _one_line(_atlas("fit", "--records", str(d), "--out", str(tmp_path / "r.atlas")))
    questions = tmp_path / "gsm8k.jsonl"
    questions.write_text('{"question": "What is 2+3?", "answer": "#### 5"}\n')
    resume = _atlas("collect", "--benchmark", "gsm8k", "--path", str(questions), "--out", str(d), "--limit", "1")
    assert bad.name in _one_line(resume)  # resuming reads the store's keys first; nothing was run or written
    assert len(list(d.glob("part-*.parquet"))) == 3

    proc = _atlas("records", "repair", str(d), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report == {"parts": 3, "quarantined": [bad.name], "rows_kept": 0, "rows_lost": None, "rows": 10}
    assert (d / "quarantine" / bad.name).is_file() and not bad.exists()
    df = RecordStore(d).load()
    assert sorted(df["query"]) == sorted(f"question {i}" for i in (*range(0, 5), *range(10, 15)))
    # the store works again: resume adds back exactly the lost rows
    assert RecordStore(d).append(_rows(15)) == 5 and len(RecordStore(d)) == 15
    assert json.loads(_atlas("records", "repair", str(d), "--json").stdout)["quarantined"] == []


def test_garbled_row_group_loses_only_that_row_group(tmp_path: Path) -> None:
    from atlas_router.records.store import CorruptPartError

    d = tmp_path / "rec"
    _store_with_parts(d, n_parts=2)
    # a part with three row groups of five rows (as a large collection batch would be)
    table = pa.Table.from_pandas(normalize(_rows(15, model="m2")), schema=ARROW_SCHEMA, preserve_index=False)
    big = d / "part-99999999999999999999-abcdef01.parquet"
    pq.write_table(table, big, row_group_size=5, compression="zstd", write_page_checksum=True)
    meta = pq.ParquetFile(big).metadata
    assert meta.num_row_groups == 3
    offset = meta.row_group(1).column(COLUMNS_INDEX["query"]).data_page_offset
    raw = bytearray(big.read_bytes())
    for k in range(offset + 24, offset + 40):
        raw[k] ^= 0x5A  # garble data inside the second row group; the footer stays intact
    big.write_bytes(bytes(raw))
    with pytest.raises(CorruptPartError, match=big.name):
        RecordStore(d).load()

    report = RecordStore(d).repair()
    assert report.quarantined == [big.name] and report.rows_kept == 10 and report.rows_lost == 5
    df = RecordStore(d).load()
    kept = df[df["model"] == "m2"]["query"].tolist()
    assert sorted(kept) == sorted(f"question {i}" for i in (*range(0, 5), *range(10, 15)))
    assert len(df[df["model"] == "m1"]) == 10  # every row of the healthy parts
    # repairing twice changes nothing; a repair that stopped before the move would not duplicate rows either
    assert RecordStore(d).repair().quarantined == [] and len(RecordStore(d)) == 20


def test_part_missing_a_later_column_reads_with_its_default(tmp_path: Path) -> None:
    d = tmp_path / "rec"
    _store_with_parts(d, n_parts=1)
    old = normalize(_rows(3, start=50)).drop(columns=["error", "source"])  # written before those columns existed
    pq.write_table(pa.Table.from_pandas(old, preserve_index=False), d / "part-00000000000000000001-00000000.parquet")
    df = RecordStore(d).load()
    assert len(df) == 8 and (df["error"] == "").all() and (df["source"] == "").all()
    assert RecordStore(d).append(_rows(3, start=50)) == 0  # its keys count for resume


COLUMNS_INDEX = {name: i for i, name in enumerate(COLUMNS)}
