"""Loads every results file under a results directory with pandas, as the README shows, and
checks the documented columns and their dtypes. Run by scripts/check-results-pandas.sh (which
makes the pandas venv); exits 1 naming the file, the column and what was wrong.

    python check-results-pandas.py results/
"""

import json
import sys
from pathlib import Path

import pandas as pd
from pandas.api import types

# README "Results for pandas": column → kind. "num" is any numeric dtype (an integer column
# with nulls reads as float), "int" integers only, "bool", "str" (object or string dtype, nulls
# allowed), "list" (a list per row).
REQUESTS = {
    "schema_version": "int", "phase": "str", "repeat": "int", "index": "int", "warmup": "bool", "ok": "bool",
    "error_kind": "str", "intended_ms": "num", "sent_ms": "num", "end_ms": "num",
    "client_queue_ms": "num", "ttft_ms": "num", "e2e_ms": "num", "tpot_ms": "num",
    "prompt_tokens": "num", "output_tokens": "int", "cached_tokens": "num",
    "usage_reported": "bool", "token_counting": "str", "output_chunks": "int",
    "chunk_offsets_ms": "list", "chunk_tokens": "list",
}
SUMMARY_PHASES = {
    "name": "str", "requests": "int", "succeeded": "int", "failed": "int", "error_rate": "num",
    "duration_s": "num", "request_throughput": "num", "output_throughput": "num",
    "prompt_tokens": "int", "output_tokens": "int", "ttft.p50_ms": "num", "ttft.p99_ms": "num",
    "e2e.p50_ms": "num", "tpot.p50_ms": "num", "chunk_itl.p50_ms": "num",
}
SLICES = {
    "schema_version": "int", "index": "int", "start_s": "num", "end_s": "num", "phases": "str",
    "requests_sent": "int", "requests_ended": "int", "requests_failed": "int", "errors": "int",
    "output_tokens": "num", "output_throughput": "num", "request_throughput": "num",
    "concurrency_mean": "num", "ttft_count": "int", "ttft_p50_ms": "num", "itl_p50_ms": "num",
    "e2e_p90_ms": "num",
}
SERVER_METRICS = {
    "schema_version": "int", "phase": "str", "point": "str", "at_ms": "num",
    "in_phase_ms": "num", "ok": "bool",
}


def kind_ok(series, kind):
    s = series.dropna()
    if kind == "num":
        return types.is_numeric_dtype(series) and not types.is_bool_dtype(series)
    if kind == "int":
        return types.is_integer_dtype(series)
    if kind == "bool":
        return types.is_bool_dtype(series)
    if kind == "str":
        return s.empty or s.map(lambda v: isinstance(v, str)).all()
    if kind == "list":
        return s.map(lambda v: isinstance(v, list)).all()
    raise ValueError(kind)


def check(df, expected, where, problems):
    for column, kind in expected.items():
        if column not in df.columns:
            problems.append(f"{where}: no column `{column}`")
        elif not kind_ok(df[column], kind):
            problems.append(f"{where}: column `{column}` is {df[column].dtype}, expected {kind}")


def main():
    root = Path(sys.argv[1])
    runs = sorted(p.parent for p in root.glob("*/*/manifest.json"))
    if not runs:
        sys.exit(f"check-results-pandas: no run directories under {root}")
    problems, rows, sliced = [], 0, 0
    for run in runs:
        requests = run / "requests.jsonl"
        df = pd.read_json(requests, lines=True)
        rows += len(df)
        if df.empty:
            problems.append(f"{requests}: no rows")
        else:
            check(df, REQUESTS, requests, problems)
        summary_path = run / "summary.json"
        if summary_path.exists():
            summary = json.loads(summary_path.read_text())
            phases = pd.json_normalize(summary["phases"])
            check(phases, SUMMARY_PHASES, f"{summary_path} (phases)", problems)
        slices = run / "slices.jsonl"
        if slices.exists():
            sliced += 1
            sl = pd.read_json(slices, lines=True)
            if sl.empty:
                problems.append(f"{slices}: no rows")
            else:
                check(sl, SLICES, slices, problems)
                if list(sl["index"]) != list(range(len(sl))):
                    problems.append(f"{slices}: slices are not contiguous from 0")
        metrics = run / "server_metrics.jsonl"
        if metrics.exists() and metrics.stat().st_size > 0:
            sm = pd.json_normalize([json.loads(line) for line in metrics.read_text().splitlines() if line])
            check(sm, SERVER_METRICS, metrics, problems)
            if sm["ok"].any() and not any(c.startswith("values.") for c in sm.columns):
                problems.append(f"{metrics}: scrapes succeeded but no `values.*` columns")
    for p in problems[:40]:
        print(p, file=sys.stderr)
    print(f"check-results-pandas: pandas {pd.__version__}: {len(runs)} runs, {rows} request rows, "
          f"{sliced} with time slices, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
