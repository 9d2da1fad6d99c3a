"""`ctrlaug ablate`: every table row is a valid config; a tiny run writes the table and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestration.ablation import (
    REFERENCE_ROWS,
    TABLES,
    JobsFailed,
    render_table,
    run_ablation,
    summarise,
)
from orchestration.benchmark_data import MotionBenchmark
from orchestration.experiment import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = MotionBenchmark(classes=3, train_per_class=2, test_per_class=1, frames=32, width=64,
                       height=48, short_side=48)


@pytest.mark.parametrize("table", sorted(TABLES))
@pytest.mark.parametrize("config", ["ablation-cpu.toml", "ucf101.toml"])
def test_every_row_of_every_table_is_a_valid_config(table, config):
    _, rows = TABLES[table]
    built = [load_config(CONFIGS / config, list(row.overrides)) for row in rows]
    assert len({json.dumps(c.to_dict(), sort_keys=True) for c in built}) == len(rows)


def test_tables_hold_the_papers_rows():
    assert [row.name for row in TABLES[7][1]] == [
        "L_nce", "L_rc", "L_rc + L_mi", "L_rc + L_td", "L_nce + L_mi + L_td",
        "L_rc + L_mi + L_td"]
    assert [row.name for row in TABLES[6][1]] == ["none", "vcop", "mlp", "gru", "gru_mlp"]
    assert len(TABLES[4][1]) == 11 and len(TABLES[5][1]) == 4
    assert {row.kind for row in REFERENCE_ROWS} == {"random", "supervised"}


def test_the_table_reports_mean_and_sample_spread_over_seeds():
    results = [{"row": "a", "seed": s, "linear_top1": v, "R@1": v, "R@5": 1.0,
                "instance@1": 0.5} for s, v in enumerate([0.5, 0.7, 0.6])]
    results.append({"row": "b", "seed": 0, "linear_top1": 0.1, "R@1": 0.2, "R@5": 0.3})
    summary = summarise(results)
    assert summary["a"]["linear_top1"] == pytest.approx((0.6, 0.1))
    assert summary["a"]["R@5"] == (1.0, 0.0)
    assert summary["b"]["instance@1"] is None  # not measured: shown as such, not as 0
    markdown = render_table("Table 7", results, 0.25)
    assert "| a | 0.600 ± 0.100 | 0.600 ± 0.100 | 1.000 ± 0.000 | 0.500 ± 0.000 | 0,1,2 |" \
        in markdown
    assert "| b | 0.100 ± 0.000 | 0.200 ± 0.000 | 0.300 ± 0.000 | – | 0 |" in markdown


def test_a_tiny_ablation_writes_the_table_groups_mlflow_runs_and_resumes(tmp_path):
    overrides = ["--model.width=4", "--optim.epochs=1", "--data.batch_size=3",
                 "--augment.size=32", "--augment.levels_per_batch=2"]
    rows = ["L_nce", "L_rc + L_mi + L_td"]
    results = run_ablation(CONFIGS / "ablation-cpu.toml", overrides, 7, 1, tmp_path,
                           rows=rows, benchmark=TINY, log=lambda *_: None)
    assert [r["row"] for r in results] == rows
    table = (tmp_path / "table7.md").read_text()
    assert "| L_nce |" in table and "| L_rc + L_mi + L_td |" in table
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "table7.csv").read_text().count("\n") == 3
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ctrlaug-ablation")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "ctrlaug.ablation" in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2  # the two pretraining jobs, each with its evaluation nested
    for child in children:
        assert child.info.status == "FINISHED"
        assert [r for r in runs if r.data.tags.get("mlflow.parentRunId") == child.info.run_id]
    assert parent.info.status == "FINISHED"
    # A rerun finds both results and trains nothing.
    logged = []
    again = run_ablation(CONFIGS / "ablation-cpu.toml", overrides, 7, 1, tmp_path, rows=rows,
                         benchmark=TINY, log=logged.append)
    assert [r["linear_top1"] for r in again] == [r["linear_top1"] for r in results]
    assert not any(line.startswith("[") for line in logged)  # no row was run again
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2


def test_jobs_side_by_side_write_the_same_kind_of_table(tmp_path):
    overrides = ["--model.width=4", "--optim.epochs=1", "--data.batch_size=3",
                 "--augment.size=32", "--augment.levels_per_batch=2"]
    rows = ["random init (no pretraining)", "L_nce"]
    results = run_ablation(CONFIGS / "ablation-cpu.toml", overrides, 7, 1, tmp_path,
                           rows=rows, benchmark=TINY, log=lambda *_: None, parallel=2)
    assert [r["row"] for r in results] == rows  # table order, whichever finished first
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2
    assert "| L_nce |" in (tmp_path / "table7.md").read_text()
    with pytest.raises(ValueError, match="run.ray = false"):
        run_ablation(CONFIGS / "ablation-cpu.toml", [*overrides, "--run.ray=true"], 7, 1,
                     tmp_path, rows=rows, benchmark=TINY, parallel=2)


def test_a_failing_job_leaves_the_others_recorded_and_names_itself(tmp_path):
    # The fault drill with no restarts makes every pretraining job fail at its first step;
    # the random-init row (no pretraining) runs beside it and is recorded all the same.
    overrides = ["--model.width=4", "--optim.epochs=1", "--data.batch_size=3",
                 "--augment.size=32", "--augment.levels_per_batch=2", "--run.fail_at_step=1",
                 "--run.max_failures=0"]
    rows = ["random init (no pretraining)", "L_nce"]
    logged = []
    with pytest.raises(JobsFailed, match=r"1 of 2 jobs failed.*L_nce, seed 0"):
        run_ablation(CONFIGS / "ablation-cpu.toml", overrides, 7, 1, tmp_path, rows=rows,
                     benchmark=TINY, log=logged.append, parallel=2)
    (recorded,) = [json.loads(line) for line in
                   (tmp_path / "results.jsonl").read_text().splitlines()]
    assert recorded["row"] == "random init (no pretraining)"
    assert any("L_nce, seed 0: FAILED" in line for line in logged)
