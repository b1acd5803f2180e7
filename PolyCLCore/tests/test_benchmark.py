"""The benchmark script still runs (its numbers are not asserted: speed is reported, not tested)."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "benchmark.py"


def test_benchmark_runs_and_writes_json(tmp_path, data):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--stages", "load,segment", "--json", str(out)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "POLYCL_DATA_DIR": str(data)})
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(row["stage"], row["n_slices"]) for row in rows] == [("load", 112), ("load", 20), ("segment", 112), ("segment", 20)]
    assert all(row["seconds"] > 0 for row in rows) and "ms/slice" in r.stdout
