"""`etl-assets bench` runs end to end at a tiny size (figures are not asserted: it is not a timed test)."""

import json
import subprocess
import sys


def test_bench_produces_every_variant_with_ratios(tmp_path, postgres_server):
    result = subprocess.run(
        [sys.executable, "-m", "etl_assets.cli", "bench", "--rows", "3000", "--rounds", "1", "--skip-sensor",
         "--targets", "pg,duckdb,baseline", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "loads.json").read_text())
    text = json.dumps(report)
    for variant in ("raw_pg_copy", "pipeline_pg_first", "pipeline_pg_reload", "raw_duckdb_csv",
                    "pipeline_duckdb_first", "pipeline_duckdb_reload", "json_baseline_pg"):
        assert variant in text, f"{variant} missing from the report"
    assert (tmp_path / "out" / "loads.md").read_text().count("|") > 20
