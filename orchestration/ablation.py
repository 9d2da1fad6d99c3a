"""`ctrlaug ablate`: the paper's ablation tables as experiments on held-out videos.

One command runs one table, from one experiment config:

    Table 7  learning objectives: L_nce; L_rc; L_rc + L_mi; L_rc + L_td; L_nce + L_mi + L_td;
             L_rc + L_mi + L_td
    Table 6  temporal dependency head: none, vcop, mlp, gru, gru_mlp (with L_rc + L_mi)
    Table 4  local clips K and global temporal resolution T_v (T_v computed from the encoder),
             and the local clips' extent (16 consecutive frames, or spanning their segment)
    Table 5  intensity levels: bins of brightness/contrast/saturation, hue, blur

Every row, for every seed, is a pretraining job (`run_pretraining`, so the config's `run.ray`
decides between Ray Train and this process) followed by the linear probe and retrieval of its
encoder on held-out test videos (`run_evaluation`). Two reference rows share the budget: a
randomly initialised encoder (no pretraining) and a supervised encoder (trained on the labels
for the same epochs, batch and learning rate), evaluated the same way. The supervised upper
bound is that row with a longer schedule (`--rows "supervised (same budget)"
--optim.epochs=N`).

What is written to OUT:
    results.jsonl    one line per (row, seed), appended as soon as it finishes: a rerun skips
                     what is there (keyed by the row's resolved config and seed), so a killed
                     ablation resumes (its job processes exit with it: preprocessing.processes)
    table<N>.md      the table: mean and standard deviation over seeds of each metric
    table<N>.csv     every seed's numbers
    runs/            the jobs' folders and, unless run.tracking_uri is set, the MLflow store
MLflow: one parent run per (OUT, table) in the experiment "ctrlaug-ablation", each row's
pretraining and evaluation runs nested under it, the table logged on the parent.

`--jobs N` runs N jobs side by side in processes of this machine (with run.ray = false; each
gets its share of the cores): on a 2-core machine two single-threaded jobs do about 16% more
work per hour than one job on both cores. Two `ctrlaug ablate` commands started by hand each
take every core: give each OMP_NUM_THREADS=cores/2 (measured on 2 cores: 12.8 s per step each
without it, 4.6 s with OMP_NUM_THREADS=1).

Scale: the config is the scale. configs/ablation-cpu.toml sizes Table 7 for a 2-core CPU
machine on the synthetic motion benchmark (built under OUT/data when --train/--test are not
given); configs/ucf101.toml with --train/--test shard folders takes the same experiment to GPUs
and a real dataset.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from model.encoder import R3D18
from orchestration.benchmark_data import MotionBenchmark, build_motion_benchmark
from orchestration.checkpoint import FINETUNE_FILE, encoder_from, encoder_state
from orchestration.experiment import ExperimentConfig, load_config
from preprocessing import shards as layout
from preprocessing.processes import spawn_pool
from preprocessing.progress import format_seconds

EXPERIMENT = "ctrlaug-ablation"
METRICS = ("linear_top1", "R@1", "R@5", "instance@1")
HEADINGS = ("linear top-1", "R@1", "R@5", "instance@1")


@dataclass(frozen=True)
class Row:
    """One line of a table: its label and the config overrides that make it.

    kind: "pretrain" (pretrain with the overrides, then evaluate), "random" (evaluate a randomly
    initialised encoder) or "supervised" (train encoder + linear head on the labels, then
    evaluate the encoder like the others).
    """

    name: str
    overrides: tuple[str, ...] = ()
    kind: Literal["pretrain", "random", "supervised"] = "pretrain"


REFERENCE_ROWS = (Row("random init (no pretraining)", kind="random"),
                  Row("supervised (same budget)", kind="supervised"))


def _objective(contrast: str, mi: bool, td: bool) -> tuple[str, ...]:
    return (f"--loss.contrast={contrast}", f"--loss.mi={str(mi).lower()}",
            f"--loss.td={str(td).lower()}")


def _clips(k: int, unstrided_stages: int) -> tuple[str, ...]:
    return (f"--model.num_clips={k}", f"--augment.num_clips={k}",
            f"--model.global_unstrided_stages={unstrided_stages}",
            *(("--loss.td=false",) if k < 2 else ()))


TABLES: dict[int, tuple[str, tuple[Row, ...]]] = {
    7: ("Table 7: learning objectives", (
        Row("L_nce", _objective("clip", False, False)),
        Row("L_rc", _objective("region", False, False)),
        Row("L_rc + L_mi", _objective("region", True, False)),
        Row("L_rc + L_td", _objective("region", False, True)),
        Row("L_nce + L_mi + L_td", _objective("clip", True, True)),
        Row("L_rc + L_mi + L_td", _objective("region", True, True)),
    )),
    6: ("Table 6: temporal dependency head (with L_rc + L_mi)", (
        Row("none", _objective("region", True, False)),
        *(Row(head, (*_objective("region", True, True), f"--model.temporal_head={head}"))
          for head in ("vcop", "mlp", "gru", "gru_mlp")),
    )),
    4: ("Table 4: local clips K, global temporal resolution T_v and the clips' extent and "
        "placement", (
        *(Row(f"K={k}, stages={stages}", _clips(k, stages))
          for k, stages in ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2), (4, 1), (4, 2))),
        *(Row(f"K=4, stages={stages}, segment", (*_clips(4, stages),
                                                 "--augment.clip_extent=segment"))
          for stages in (1, 2)),
        Row("K=4, stages=2, centre", (*_clips(4, 2), "--augment.clip_placement=centre")))),
    5: ("Table 5: intensity levels (bins of B/C/S, H, blur)", tuple(
        Row(f"{bcs}/{hue}/{blur}", (f"--augment.level_bins=[{bcs},{bcs},{bcs},{hue},{blur}]",))
        for bcs, hue, blur in ((2, 2, 2), (4, 2, 4), (4, 4, 4), (5, 2, 5)))),
}


def _label(row: Row, config: ExperimentConfig) -> str:
    """Table 4's rows name T_v, computed from the encoder for this config's views, and the
    clips' extent; with run.init_encoder the encoder without pretraining is that one."""
    if row.kind == "random" and config.run.init_encoder:
        return "initial encoder (run.init_encoder, no pretraining)"
    if not row.name.startswith("K="):
        return row.name
    frames = (config.augment.clip_frames, config.augment.size, config.augment.size)
    encoder = R3D18(1, config.model.global_unstrided_stages)
    t_c = encoder.feature_grid(frames, "clip")[0]
    t_v = encoder.feature_grid(frames, "global")[0]
    k = config.model.num_clips
    extent = {"stride": f"stride {config.augment.frame_stride}",
              "segment": "span T/K"}[config.augment.clip_extent]
    placement = {"inside": "inside segments", "centre": "centres in segments"}[
        config.augment.clip_placement]
    return f"K={k}, T_v={t_v} (T_v/KT_c={t_v / (k * t_c):.2f}), clips {extent}, {placement}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _key(config: ExperimentConfig, row: Row, seed: int) -> str:
    """What a result depends on: the row's kind, its resolved config (minus where it is
    written) and the seed."""
    values = config.to_dict()
    values["run"] = {k: v for k, v in values["run"].items()
                     if k not in ("name", "storage_path", "tracking_uri", "experiment")}
    text = json.dumps({"kind": row.kind, "config": values, "seed": seed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_results(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    return {line["key"]: line for line in map(json.loads, path.read_text().splitlines())
            if line}


def _parent_run(uri: str, out: Path, table: int) -> str:
    from mlflow.tracking import MlflowClient

    from orchestration.tracking import experiment_id

    client = MlflowClient(uri)
    experiment = experiment_id(client, EXPERIMENT)
    tag = f"{out.resolve()}:table{table}"
    runs = client.search_runs([experiment], filter_string=f"tags.`ctrlaug.ablation` = '{tag}'",
                              max_results=1)
    if runs:
        return runs[0].info.run_id
    return client.create_run(experiment, run_name=f"ablation table {table}",
                             tags={"ctrlaug.ablation": tag}).info.run_id


def _encoder_after(row: Row, config: ExperimentConfig, seed: int, train: Path, test: Path,
                   parent: str, num_classes: int) -> tuple[R3D18, str]:
    """The encoder the row evaluates, and the MLflow run its evaluation nests under."""
    from orchestration.finetune import FinetuneConfig, run_finetune
    from orchestration.pretrain import run_pretraining

    if row.kind == "pretrain":
        metrics = run_pretraining(config, tags={"mlflow.parentRunId": parent})
        encoder, _ = encoder_from(metrics["checkpoint"])
        return encoder, metrics["mlflow_run_id"]
    torch.manual_seed(seed)
    encoder = R3D18(config.model.width, config.model.global_unstrided_stages)
    if config.run.init_encoder:
        encoder.load_state_dict(encoder_state(config.run.init_encoder))
    if row.kind == "random":
        return encoder, parent
    finetune = FinetuneConfig(epochs=config.optim.epochs, lr=config.optim.lr,
                              weight_decay=config.optim.weight_decay,
                              batch_size=config.data.batch_size, seed=seed,
                              backend=config.data.backend, ray=False)
    folder = Path(config.run.storage_path)
    run_finetune(encoder, num_classes, train, test, finetune, config.run.name, folder,
                 config.augment)
    encoder, _ = encoder_from(folder.resolve() / config.run.name / FINETUNE_FILE)
    return encoder, parent


@dataclass(frozen=True)
class Job:
    """One (row, seed) of a table: its resolved config, its label and its results key."""

    row: Row
    seed: int
    config: ExperimentConfig
    label: str
    key: str


@dataclass(frozen=True)
class Where:
    """What every job of one ablation shares: the table, the data, the MLflow parent run."""

    table: int
    train: str
    test: str
    tracking_uri: str
    parent: str
    num_classes: int


def run_job(job: Job, where: Where, threads: int = 0) -> dict:
    """Pretrain (or not, for the reference rows) and evaluate one job; returns its result line.
    threads > 0 sets torch's intra-op threads (jobs side by side share the cores)."""
    from orchestration.evaluate import run_evaluation

    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    config, train, test = job.config, where.train, where.test  # paths or URIs, as given
    encoder, nest_under = _encoder_after(job.row, config, job.seed, train, test, where.parent,
                                         where.num_classes)
    scores = run_evaluation(
        ["linear", "retrieval"], encoder, train, test, where.tracking_uri, nest_under,
        Path(config.run.storage_path) / "feature-cache", name=f"{job.label} seed {job.seed}",
        backend=config.data.backend, augment=config.augment, experiment_name=EXPERIMENT,
        tags={"ctrlaug.ablation_row": job.label, "ctrlaug.seed": str(job.seed)})
    return {"key": job.key, "table": where.table, "row": job.label, "kind": job.row.kind,
            "seed": job.seed, **{m: scores[m] for m in (*METRICS, "linear_top5", "R@10")},
            "minutes": (time.perf_counter() - started) / 60,
            "evaluation_run": scores["mlflow_run_id"]}


class JobsFailed(RuntimeError):
    """Some jobs of a table failed; the others' results were recorded first."""


def _run_jobs(jobs: list[Job], where: Where, parallel: int, log) -> Iterator[dict]:
    """The jobs' results as they finish: one after another in this process, or `parallel`
    processes side by side (each with its share of the cores). A job that fails does not stop
    the others: every result is yielded (and so recorded) first, then JobsFailed names the
    failed jobs (rerunning the command retries just those)."""
    failed = []

    def failure(job: Job, error: BaseException) -> None:
        reason = str(error).strip().splitlines()[0][:300] if str(error) else repr(error)
        failed.append(f"{job.label}, seed {job.seed}: {type(error).__name__}: {reason}")
        log(f"{job.label}, seed {job.seed}: FAILED ({type(error).__name__}: {reason})")

    if parallel == 1:
        for number, job in enumerate(jobs, start=1):
            log(f"[{number}/{len(jobs)}] {job.label}, seed {job.seed}: started")
            try:
                result = run_job(job, where)
            except Exception as error:  # noqa: BLE001 - reported with the others at the end
                failure(job, error)
                continue
            yield result
    else:
        threads = max(1, (os.cpu_count() or 1) // parallel)
        with spawn_pool(parallel) as pool:
            futures = {pool.submit(run_job, job, where, threads): job for job in jobs}
            log(f"{len(jobs)} jobs, {parallel} at a time ({threads} threads each)")
            for future in as_completed(futures):
                try:
                    result = future.result()
                except Exception as error:  # noqa: BLE001 - as above
                    failure(futures[future], error)
                    continue
                yield result
    if failed:
        raise JobsFailed(f"{len(failed)} of {len(jobs)} jobs failed (the others' results are "
                         f"recorded; rerun the same command to retry these): "
                         + "; ".join(failed))


def summarise(results: list[dict]) -> dict[str, dict[str, tuple[float, float] | None]]:
    """{row: {metric: (mean, standard deviation over seeds) or None when not measured}} in
    the rows' order."""
    table: dict[str, dict[str, list[float]]] = {}
    for result in results:
        per_metric = table.setdefault(result["row"], {m: [] for m in METRICS})
        for metric in METRICS:
            if metric in result:
                per_metric[metric].append(result[metric])
    return {row: {m: (sum(v) / len(v), _std(v)) if v else None for m, v in metrics.items()}
            for row, metrics in table.items()}


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def render_table(title: str, results: list[dict], chance: float) -> str:
    """The markdown table: mean ± std over seeds per row, with the seeds used."""
    summary = summarise(results)
    seeds = {row: sorted({r["seed"] for r in results if r["row"] == row}) for row in summary}
    lines = [f"### {title}", "", f"| row | {' | '.join(HEADINGS)} | seeds |",
             "|---" * (len(HEADINGS) + 2) + "|"]
    for row, metrics in summary.items():
        cells = " | ".join("–" if value is None else f"{value[0]:.3f} ± {value[1]:.3f}"
                           for value in metrics.values())
        lines.append(f"| {row} | {cells} | {','.join(map(str, seeds[row]))} |")
    lines += ["", f"Chance: top-1 {chance:.3f}. Mean ± sample standard deviation over seeds; "
                  f"held-out test videos (linear probe: test clips' softmax averaged; "
                  f"retrieval: test videos query train videos; instance@1: test clips whose "
                  f"nearest other clip is from the same video, i.e. how much the features "
                  f"identify a video whatever its class)."]
    return "\n".join(lines) + "\n"


def run_ablation(config_path: Path, overrides: list[str], table: int, seeds: int, out: Path,
                 train: Path | None = None, test: Path | None = None,
                 rows: list[str] | None = None, benchmark: MotionBenchmark | None = None,
                 log=print, parallel: int = 1) -> list[dict]:
    """Run (or resume) one table; returns every row's per-seed results.

    rows: only these rows (by name, reference rows included), in table order; None: all.
    benchmark: the synthetic benchmark's sizes when train/test are not given (None: default).
    parallel: jobs run side by side in processes of this machine (run.ray = false only: on Ray
    each job already spreads over the cluster's workers).
    """
    from mlflow.tracking import MlflowClient

    from orchestration.tracking import check_reachable, resolve_tracking_uri

    if table not in TABLES:
        raise ValueError(f"--table must be one of {', '.join(map(str, sorted(TABLES)))}")
    if seeds < 1 or parallel < 1:
        raise ValueError("--seeds and --jobs must be >= 1")
    if (train is None) != (test is None):
        raise ValueError("give both --train and --test, or neither (the synthetic benchmark)")
    title, table_rows = TABLES[table]
    chosen = [row for row in (*REFERENCE_ROWS, *table_rows) if rows is None or row.name in rows]
    unknown = sorted(set(rows or ()) - {row.name for row in (*REFERENCE_ROWS, *table_rows)})
    if unknown or not chosen:
        raise ValueError(f"unknown row(s) {unknown} for table {table}; rows are: " + "; ".join(
            row.name for row in (*REFERENCE_ROWS, *table_rows)))
    out = Path(out).resolve()
    storage = out / "runs"
    base = load_config(config_path, [*overrides, f"--run.storage_path={storage}"])
    if parallel > 1 and base.run.ray:
        raise ValueError("--jobs > 1 runs jobs side by side in this machine's processes; set "
                         "run.ray = false (on Ray each job already uses the cluster)")
    if train is None:
        log(f"synthetic motion benchmark in {out / 'data'}")
        train, test = build_motion_benchmark(out / "data", benchmark or MotionBenchmark(),
                                             log=log)
    classes = layout.read_manifest(train)["classes"]
    uri = resolve_tracking_uri(base.run.tracking_uri, str(storage))
    check_reachable(uri)
    parent = _parent_run(uri, out, table)
    jobs = []
    for row in chosen:
        for seed in range(seeds):
            config = load_config(config_path, [
                *overrides, *row.overrides, f"--data.shards={train}", f"--run.seed={seed}",
                f"--run.storage_path={storage}", f"--run.experiment={EXPERIMENT}",
                f"--run.name=t{table}-{_slug(row.name)}-s{seed}", f"--run.tracking_uri={uri}"])
            jobs.append(Job(row, seed, config, _label(row, config), _key(config, row, seed)))
    results_path = out / "results.jsonl"
    done = _read_results(results_path)
    pending = [job for job in jobs if job.key not in done]
    where = Where(table, str(train), str(test), uri, parent, len(classes))
    started = time.perf_counter()
    for finished, result in enumerate(_run_jobs(pending, where, parallel, log), start=1):
        with results_path.open("a") as handle:
            handle.write(json.dumps(result) + "\n")
        done[result["key"]] = result
        left = (time.perf_counter() - started) / finished * (len(pending) - finished)
        log(f"[{finished}/{len(pending)}] {result['row']}, seed {result['seed']}: linear top-1 "
            f"{result['linear_top1']:.3f}  R@1 {result['R@1']:.3f}  R@5 {result['R@5']:.3f}  "
            f"instance@1 {result['instance@1']:.3f}  ({result['minutes']:.1f} min)"
            + (f", about {format_seconds(left)} left" if finished < len(pending) else ""))
    results = [{**done[job.key], "row": job.label} for job in jobs]
    markdown = render_table(title, results, 1 / len(classes))
    (out / f"table{table}.md").write_text(markdown)
    _write_csv(out / f"table{table}.csv", results)
    client = MlflowClient(uri)
    client.log_text(parent, markdown, f"table{table}.md")
    for row, metrics in summarise(results).items():
        for metric, value in metrics.items():
            if value is not None:
                client.log_metric(parent, f"{_slug(row)}.{metric.replace('@', '_at_')}",
                                  value[0])
    client.set_terminated(parent, "FINISHED")
    log(markdown)
    return results


def _write_csv(path: Path, results: list[dict]) -> None:
    columns = ("row", "seed", "kind", *METRICS, "linear_top5", "R@10", "minutes")
    lines = [",".join(columns)]
    for result in results:
        values = (result.get(c, "") for c in columns)
        lines.append(",".join(f'"{value}"' if c == "row" else
                              (f"{value:.4f}" if isinstance(value, float) else str(value))
                              for c, value in zip(columns, values, strict=True)))
    path.write_text("\n".join(lines) + "\n")


