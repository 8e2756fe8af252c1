"""Tests of the trace readers (llmsim/workload/readers.py): the shipped traces under traces/,
malformed rows reported by file and line (or skipped and counted), llmsim's own format round trip,
and trace statistics against hand-computed values."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.errors import LlmsimError
from llmsim.workload.readers import FORMATS, Trace, detect_format, read_trace, trace_stats, write_llmsim_trace

TRACES = Path(__file__).resolve().parent.parent / "traces"
AZURE_CONV = TRACES / "azure2023" / "AzureLLMInferenceTrace_conv.csv"
AZURE_CODE = TRACES / "azure2023" / "AzureLLMInferenceTrace_code.csv"
MOONCAKE = TRACES / "mooncake" / "conversation_trace.jsonl"
SHAREGPT = TRACES / "sharegpt" / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
ARXIV = TRACES / "arxiv" / "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"

# path, format, rows (PROVENANCE.md; wc -l agrees: the Azure files have no final newline), span (s)
SHIPPED = [
    (AZURE_CONV, "azure", 19_366, 3501.721937),
    (AZURE_CODE, "azure", 8_819, 3435.948056),
    (MOONCAKE, "mooncake", 12_031, 3536.999),
    (SHAREGPT, "length-table", 30_731, None),
    (ARXIV, "length-table", 28_257, None),
]
IDS = [p.parent.name + "/" + p.stem[:12] for p, *_ in SHIPPED]


@pytest.fixture(scope="module")
def shipped() -> dict[Path, Trace]:
    return {p: read_trace(p) for p, *_ in SHIPPED}


def _data_lines(path: Path) -> int:
    lines = [l for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
    return len(lines) - (path.suffix == ".csv")


@pytest.mark.parametrize("path,fmt,rows,span", SHIPPED, ids=IDS)
def test_shipped_trace(shipped, path, fmt, rows, span):
    tr = shipped[path]
    assert detect_format(path) == fmt
    assert tr.format == fmt and tr.source == str(path)
    assert len(tr) == rows == _data_lines(path)
    assert tr.skipped_rows == 0 and tr.skipped_examples == []
    assert tr.prompt_tokens.dtype == np.int64 and tr.output_tokens.dtype == np.int64
    assert tr.prompt_tokens.min() >= 1 and tr.output_tokens.min() >= 1  # no zero outputs shipped
    if span is None:
        assert tr.arrival_s is None
    else:
        assert tr.arrival_s.dtype == np.float64 and len(tr.arrival_s) == rows
        assert tr.arrival_s[0] == 0.0
        assert np.all(np.diff(tr.arrival_s) >= 0)
        assert tr.arrival_s[-1] == pytest.approx(span, abs=1e-6)
    if fmt == "mooncake":
        assert len(tr.hash_ids) == rows
    else:
        assert tr.hash_ids is None


def test_azure_timestamps_exact():
    tr = read_trace(AZURE_CONV)
    # rows 2 and 3: 18:15:46.6805900 and 18:15:50.9951690
    assert tr.arrival_s[1] == pytest.approx(4.314579, abs=1e-9)
    assert (tr.prompt_tokens[:2] == [374, 396]).all() and (tr.output_tokens[:2] == [44, 109]).all()


def test_mooncake_hash_ids_one_per_512_token_block(shipped):
    tr = shipped[MOONCAKE]
    lengths = np.array([len(h) for h in tr.hash_ids])
    assert (lengths == np.ceil(tr.prompt_tokens / 512).astype(int)).all()  # holds for every row
    assert all(h.dtype == np.int64 for h in tr.hash_ids)
    assert tr.hash_ids[0].tolist() == list(range(14)) and tr.hash_ids[1][0] == 0  # shared first block
    # ms -> s, ties (~90% of gaps) kept in file order
    raw = [json.loads(l) for l in MOONCAKE.read_text().splitlines()]
    assert (tr.arrival_s == np.array([r["timestamp"] for r in raw]) / 1000).all()
    assert (tr.prompt_tokens == [r["input_length"] for r in raw]).all()


@pytest.mark.parametrize("path", [SHAREGPT, ARXIV], ids=["sharegpt", "arxiv"])
def test_length_table_matches_an_independent_pandas_read(shipped, path):
    df = pd.read_csv(path)
    assert (shipped[path].prompt_tokens == df["num_prefill_tokens"].to_numpy()).all()
    assert (shipped[path].output_tokens == df["num_decode_tokens"].to_numpy()).all()


# --- malformed rows -------------------------------------------------------------------------------

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
GOOD = "2023-11-16 18:15:46.6805900,374,44\n"

# name, text, bad line, message fragment; each file has good rows 2 and 5 (and a blank line 3)
AZURE_BAD = [
    ("timestamp", "2023-11-16 18:15:4x.1,5,6\n", "TIMESTAMP is '2023-11-16 18:15:4x.1'"),
    ("non-numeric", "2023-11-16 18:15:47.0,abc,6\n", "ContextTokens is 'abc'"),
    ("negative", "2023-11-16 18:15:47.0,5,-3\n", "GeneratedTokens is '-3', expected a whole number of tokens >= 1"),
    ("zero-output", "2023-11-16 18:15:47.0,5,0\n", "GeneratedTokens is '0'"),
    ("fractional", "2023-11-16 18:15:47.0,5.5,3\n", "ContextTokens is '5.5', expected a whole number"),
    ("too-few", "2023-11-16 18:15:47.0,5\n", "expected 3 fields"),
    ("too-many", "2023-11-16 18:15:47.0,5,6,7\n", "expected 3 fields"),
    ("empty-field", "2023-11-16 18:15:47.0,,6\n", "ContextTokens is ''"),
]


def _azure_file(tmp_path: Path, bad_row: str) -> Path:
    p = tmp_path / "bad.csv"
    p.write_text(AZURE_HEADER + GOOD + "\n" + bad_row + "2023-11-16 18:15:48.0,7,8\n")
    return p


@pytest.mark.parametrize("name,row,fragment", AZURE_BAD, ids=[b[0] for b in AZURE_BAD])
def test_azure_bad_row(tmp_path, name, row, fragment):
    p = _azure_file(tmp_path, row)
    with pytest.raises(LlmsimError) as e:
        read_trace(p)
    assert str(e.value).startswith(f"{p}:4: ") and fragment in str(e.value)
    tr = read_trace(p, on_bad_row="skip")
    assert tr.skipped_rows == 1 and tr.skipped_examples == [str(e.value)]
    assert tr.prompt_tokens.tolist() == [374, 7] and tr.output_tokens.tolist() == [44, 8]
    assert tr.arrival_s.tolist() == pytest.approx([0.0, 1.31941])


MOONCAKE_BAD = [
    ("bad-json", '{"timestamp": 5, "input_length": 10, "output_length": 3, "hash_ids": [0]\n', "not valid JSON"),
    ("missing-key", '{"timestamp": 5, "output_length": 3, "hash_ids": [0]}\n', "missing key 'input_length'"),
    ("missing-hash-ids", '{"timestamp": 5, "input_length": 10, "output_length": 3}\n', "missing key 'hash_ids'"),
    ("non-numeric", '{"timestamp": 5, "input_length": "ten", "output_length": 3, "hash_ids": [0]}\n', "input_length is 'ten'"),
    ("negative", '{"timestamp": 5, "input_length": 10, "output_length": -1, "hash_ids": [0]}\n', "output_length is -1"),
    ("bad-timestamp", '{"timestamp": "noon", "input_length": 10, "output_length": 3, "hash_ids": [0]}\n', "timestamp is 'noon'"),
    ("bad-hash-ids", '{"timestamp": 5, "input_length": 10, "output_length": 3, "hash_ids": [0.5]}\n', "hash_ids"),
    ("not-object", "[1, 2, 3]\n", "expected a JSON object"),
]


@pytest.mark.parametrize("name,row,fragment", MOONCAKE_BAD, ids=[b[0] for b in MOONCAKE_BAD])
def test_mooncake_bad_row(tmp_path, name, row, fragment):
    p = tmp_path / "bad.jsonl"
    good1 = '{"timestamp": 3000, "input_length": 600, "output_length": 2, "hash_ids": [0, 1]}\n'
    good2 = '{"timestamp": 9000, "input_length": 100, "output_length": 4, "hash_ids": [7]}\n'
    p.write_text(good1 + "\n  \n" + row + good2)
    with pytest.raises(LlmsimError) as e:
        read_trace(p)
    assert str(e.value).startswith(f"{p}:4: ") and fragment in str(e.value)
    tr = read_trace(p, on_bad_row="skip")
    assert tr.skipped_rows == 1 and tr.skipped_examples == [str(e.value)]
    assert tr.arrival_s.tolist() == [0.0, 6.0] and tr.prompt_tokens.tolist() == [600, 100]
    assert [h.tolist() for h in tr.hash_ids] == [[0, 1], [7]]


def test_length_table_bad_rows_first_line_reported_and_skips_counted(tmp_path):
    p = tmp_path / "table.csv"
    rows = ["num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio", "10,5,15,2.0"]
    rows += ["x,5,5,1.0", "10,5,15", "10,0,10,inf", "", "-1,5,4,0.2", "3,4,7,0.75", "7,7", "1.5,2,3,1", "8,1,9,8.0"]
    p.write_text("\n".join(rows) + "\n")
    with pytest.raises(LlmsimError, match=rf"^{re.escape(str(p))}:3: num_prefill_tokens is 'x'"):
        read_trace(p)
    tr = read_trace(p, on_bad_row="skip")
    assert tr.skipped_rows == 6
    assert [m.split(": ")[0] for m in tr.skipped_examples] == [f"{p}:{n}" for n in (3, 4, 5, 7, 9)]  # first five
    assert tr.prompt_tokens.tolist() == [10, 3, 8] and tr.output_tokens.tolist() == [5, 4, 1]
    assert tr.arrival_s is None


def test_errors_in_later_column_still_report_first_line(tmp_path):
    # line 3 has a bad field count, line 2 a bad token: the earlier line is reported
    p = tmp_path / "t.csv"
    p.write_text(AZURE_HEADER + "2023-11-16 18:15:46.0,1,zero\n2023-11-16 18:15:47.0,1\n")
    with pytest.raises(LlmsimError, match=rf"^{re.escape(str(p))}:2: GeneratedTokens"):
        read_trace(p)


def test_all_rows_bad_is_an_error_even_when_skipping(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text(AZURE_HEADER + "nope,1,1\n")
    with pytest.raises(LlmsimError, match="no requests.*1 bad rows skipped"):
        read_trace(p, on_bad_row="skip")
    p.write_text(AZURE_HEADER)
    with pytest.raises(LlmsimError, match="no requests"):
        read_trace(p)


def test_format_errors(tmp_path):
    p = tmp_path / "odd.csv"
    p.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(LlmsimError, match=rf"^{re.escape(str(p))}:1: unknown trace format"):
        detect_format(p)
    j = tmp_path / "odd.jsonl"
    j.write_text('{"a": 1}\n')
    with pytest.raises(LlmsimError, match=rf"^{re.escape(str(j))}:1: unknown trace format"):
        read_trace(j)
    with pytest.raises(LlmsimError, match=rf"^{re.escape(str(AZURE_CONV))}:1: no column 'arrival_s'"):
        read_trace(AZURE_CONV, format="llmsim")
    with pytest.raises(LlmsimError, match="unknown trace format 'csv'"):
        read_trace(AZURE_CONV, format="csv")
    with pytest.raises(LlmsimError, match="on_bad_row"):
        read_trace(AZURE_CONV, on_bad_row="ignore")
    with pytest.raises(LlmsimError, match="not found"):
        read_trace(tmp_path / "missing.csv")
    assert set(FORMATS) == {"azure", "mooncake", "length-table", "llmsim"}


def test_unsorted_rows_are_sorted_stably(tmp_path):
    p = tmp_path / "unsorted.csv"
    p.write_text(AZURE_HEADER + "2023-11-16 18:00:02,1,1\n2023-11-16 18:00:01,2,2\n2023-11-16 18:00:02,3,3\n2023-11-16 18:00:01.5,4,4\n")
    tr = read_trace(p)
    assert tr.arrival_s.tolist() == [0.0, 0.5, 1.0, 1.0]
    assert tr.prompt_tokens.tolist() == [2, 4, 1, 3]


def test_llmsim_formats_subtract_first_arrival(tmp_path):
    c = tmp_path / "mine.csv"
    c.write_text("input_tokens,arrival_s,output_tokens,user\n5,10.5,1,a\n\n6,12.0,2,b\n7,11,3,c\n")
    assert detect_format(c) == "llmsim"
    tr = read_trace(c)
    assert tr.arrival_s.tolist() == [0.0, 0.5, 1.5] and tr.prompt_tokens.tolist() == [5, 7, 6]
    j = tmp_path / "mine.jsonl"
    j.write_text('{"arrival_s": 3, "input_tokens": 5, "output_tokens": 1}\n{"arrival_s": 4.25, "input_tokens": 6, "output_tokens": 2}\n')
    assert detect_format(j) == "llmsim"
    tr = read_trace(j)
    assert tr.arrival_s.tolist() == [0.0, 1.25] and tr.hash_ids is None
    c.write_text("arrival_s,input_tokens,output_tokens\nsoon,1,1\n")
    with pytest.raises(LlmsimError, match=rf"^{re.escape(str(c))}:2: arrival_s is 'soon'"):
        read_trace(c)


# --- writing --------------------------------------------------------------------------------------


def _assert_same(a: Trace, b: Trace) -> None:
    assert len(a) == len(b)
    assert np.array_equal(a.arrival_s, b.arrival_s)
    assert np.array_equal(a.prompt_tokens, b.prompt_tokens) and np.array_equal(a.output_tokens, b.output_tokens)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
@pytest.mark.parametrize("path", [AZURE_CONV, MOONCAKE], ids=["azure", "mooncake"])
def test_write_round_trip(shipped, tmp_path, path, suffix):
    tr = shipped[path]
    out = tmp_path / ("t" + suffix)
    write_llmsim_trace(tr, out)
    back = read_trace(out)
    assert back.format == "llmsim"
    _assert_same(tr, back)
    if tr.hash_ids is not None and suffix == ".jsonl":
        assert all(np.array_equal(x, y) for x, y in zip(tr.hash_ids, back.hash_ids))
    else:
        assert back.hash_ids is None


def test_write_length_table_needs_arrivals(shipped, tmp_path):
    tr = shipped[ARXIV]
    with pytest.raises(LlmsimError, match="length table has no timestamps"):
        write_llmsim_trace(tr, tmp_path / "a.csv")
    arrivals = np.arange(len(tr)) * 0.25
    write_llmsim_trace(tr, tmp_path / "a.csv", arrival_s=arrivals)
    back = read_trace(tmp_path / "a.csv")
    assert np.array_equal(back.arrival_s, arrivals) and np.array_equal(back.output_tokens, tr.output_tokens)
    with pytest.raises(LlmsimError, match="non-decreasing"):
        write_llmsim_trace(tr, tmp_path / "b.csv", arrival_s=arrivals[::-1])
    with pytest.raises(LlmsimError, match="values for a trace"):
        write_llmsim_trace(tr, tmp_path / "b.csv", arrival_s=arrivals[:5])
    with pytest.raises(LlmsimError, match=r"\.csv or \.jsonl"):
        write_llmsim_trace(tr, tmp_path / "b.txt", arrival_s=arrivals)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 1e6, allow_nan=False), st.integers(1, 10**9), st.integers(1, 10**6)),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from([".csv", ".jsonl"]),
)
def test_write_round_trip_property(tmp_path_factory, rows, suffix):
    t = np.sort(np.array([r[0] for r in rows]))
    t -= t[0]
    tr = Trace("mem", "llmsim", t, np.array([r[1] for r in rows], dtype=np.int64), np.array([r[2] for r in rows], dtype=np.int64), None)
    out = tmp_path_factory.mktemp("rt") / ("t" + suffix)
    write_llmsim_trace(tr, out)
    _assert_same(tr, read_trace(out))


# --- statistics -----------------------------------------------------------------------------------


def test_trace_stats_hand_computed():
    tr = Trace("mem", "llmsim", np.array([0.0, 1.0, 1.0, 4.0]), np.array([10, 20, 30, 40]), np.array([1, 1, 2, 100]), None)
    s = trace_stats(tr)
    assert s["requests"] == 4
    assert s["span_s"] == 4.0
    assert s["rate_per_s"] == pytest.approx(0.75)  # 3 gaps over 4 s
    # gaps 1, 0, 3: mean 4/3, population std sqrt(14)/3
    assert s["burstiness_cv"] == pytest.approx(math.sqrt(14) / 4)
    assert s["zero_gap_fraction"] == pytest.approx(1 / 3)
    assert s["input_tokens"] == pytest.approx({"p50": 25.0, "p90": 37.0, "p99": 39.7, "mean": 25.0, "max": 40.0})
    assert s["output_tokens"] == pytest.approx({"p50": 1.5, "p90": 70.6, "p99": 97.06, "mean": 26.0, "max": 100.0})


def test_trace_stats_without_times(shipped):
    s = trace_stats(shipped[SHAREGPT])
    assert s["requests"] == 30_731 and s["span_s"] is None and s["rate_per_s"] is None and s["burstiness_cv"] is None
    assert s["input_tokens"]["p50"] == 1730 and s["output_tokens"]["p50"] == 415


def test_trace_stats_shipped_shape(shipped):
    conv, code = trace_stats(shipped[AZURE_CONV]), trace_stats(shipped[AZURE_CODE])
    assert conv["rate_per_s"] == pytest.approx(5.53, abs=0.01) and 0.9 < conv["burstiness_cv"] < 1.3  # near Poisson
    assert code["burstiness_cv"] > 5  # idle gaps of minutes
    assert trace_stats(shipped[MOONCAKE])["zero_gap_fraction"] > 0.85  # ~3 s slots
