"""The `ctrlaug` command line: one entry point, one subcommand per job.

Subcommands import their heavy dependencies lazily so `ctrlaug --help` stays fast and a
preprocessing box never imports torch. Options of a config dataclass take their type, choices
and default from it (`_option`); `ctrlaug config` prints every key of the experiment config.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _package_version() -> str:
    try:
        return version("ctrlaug")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _demo(args: argparse.Namespace) -> int:
    from orchestration.demo import run_demo

    run_demo(args.workdir, args.overrides)
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from orchestration.experiment import ConfigError, load_config
    from orchestration.pretrain import run_pretraining
    from orchestration.tracking import TrackingUnavailable
    from orchestration.train_step import NonFiniteLoss

    try:
        overrides = list(args.overrides)
        if args.tracking_uri:
            overrides.append(f"--run.tracking_uri={args.tracking_uri}")
        config = load_config(args.config, overrides)
        run_pretraining(config)
    except (ConfigError, ValueError, TrackingUnavailable) as error:
        print(f"ctrlaug pretrain: {error}", file=sys.stderr)
        return 2
    except NonFiniteLoss as error:
        print(f"ctrlaug pretrain: stopped: {error}", file=sys.stderr)
        return 1
    return 0


def _config(args: argparse.Namespace) -> int:
    from orchestration.experiment import ConfigError, describe, load_config

    try:
        print(describe(load_config(args.config, list(args.overrides))), end="")
    except ConfigError as error:
        print(f"ctrlaug config: {error}", file=sys.stderr)
        return 2
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from orchestration.ablation import JobsFailed, run_ablation
    from orchestration.benchmark_data import MotionBenchmark
    from orchestration.experiment import ConfigError
    from orchestration.tracking import TrackingUnavailable

    try:
        rows = [name.strip() for name in args.rows.split(";")] if args.rows else None
        if args.appearances < 0:
            raise ValueError(f"--appearances must be >= 0, got {args.appearances}")
        if args.appearances and args.train:
            raise ValueError("--appearances shapes the synthetic benchmark; it does not apply "
                             "to --train/--test shards")
        benchmark = MotionBenchmark(appearances=args.appearances)
        run_ablation(args.config, list(args.overrides), args.table, args.seeds, args.out,
                     args.train, args.test, rows, benchmark=benchmark, parallel=args.jobs)
    except (ConfigError, ValueError, TrackingUnavailable) as error:
        print(f"ctrlaug ablate: {error}", file=sys.stderr)
        return 2
    except JobsFailed as error:
        print(f"ctrlaug ablate: {error}", file=sys.stderr)
        return 1
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from orchestration.evaluate import load_encoder, run_evaluation
    from orchestration.finetune import FinetuneConfig
    from orchestration.tracking import TrackingUnavailable, resolve_tracking_uri
    from preprocessing.storage import is_uri

    if (args.checkpoint is None) == (args.model_uri is None):
        print("ctrlaug evaluate: give exactly one of --checkpoint and --model-uri",
              file=sys.stderr)
        return 2
    if is_uri(args.storage_path):
        print(f"ctrlaug evaluate: --storage-path {args.storage_path} is an object store; it "
              f"must be a local folder (it holds the feature cache; give --tracking-uri for "
              f"the MLflow server)", file=sys.stderr)
        return 2
    try:
        uri = resolve_tracking_uri(args.tracking_uri or "", args.storage_path)
        encoder, pretrain_run, augment = load_encoder(args.checkpoint, args.model_uri, uri)
        finetune = FinetuneConfig(**_fields(args, FinetuneConfig))
        results = run_evaluation(args.protocol.split(","), encoder, args.train, args.test, uri,
                                 pretrain_run, Path(args.storage_path) / "feature-cache",
                                 backend=finetune.backend, finetune=finetune, augment=augment,
                                 device="gpu" if finetune.gpu else "cpu")
    except (TypeError, ValueError, OSError, TrackingUnavailable) as error:
        print(f"ctrlaug evaluate: {error}", file=sys.stderr)
        return 2
    for key, value in results.items():
        print(f"{key:14s} {value if isinstance(value, str) else f'{value:.4f}'}")
    return 0


def _option(parser: argparse.ArgumentParser, config: type, field: str, flag: str | None = None,
            help: str = "") -> None:
    """An option for a config dataclass field: its type, choices and default come from the
    dataclass, so the command line never restates them."""
    hint = typing.get_type_hints(config)[field]
    default = next(f.default for f in dataclasses.fields(config) if f.name == field)
    options = [a for a in typing.get_args(hint) if a is not type(None)] \
        if typing.get_origin(hint) in (typing.Union, types.UnionType) else [hint]
    kind = options[0]
    choices = list(typing.get_args(kind)) if typing.get_origin(kind) is typing.Literal else None
    parser.add_argument(flag or "--" + field.replace("_", "-"), dest=field, default=default,
                        choices=choices, type=type(choices[0]) if choices else kind,
                        help=f"{help} (default {default})".strip())


def _fields(args: argparse.Namespace, config: type) -> dict:
    """The values given for a config dataclass's fields among the parsed options (options left
    at None take the dataclass default)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config)
            if getattr(args, f.name, None) is not None}


def _synth(args: argparse.Namespace) -> int:
    from preprocessing.synth import SynthConfig, synthesize

    try:
        config = SynthConfig(**_fields(args, SynthConfig))
    except (TypeError, ValueError) as error:
        print(f"ctrlaug synth: {error}", file=sys.stderr)
        return 2
    paths = synthesize(args.out, config)
    print(f"wrote {len(paths)} videos in {config.classes} classes to {args.out}")
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    from preprocessing.config import PreprocessConfig
    from preprocessing.job import PlanMismatch, WorkerDied, local_executor, run_preprocess
    from preprocessing.sources import AnnotationError, list_dataset

    try:
        config = PreprocessConfig(**_fields(args, PreprocessConfig))
        listing = list_dataset(args.dataset, args.videos, args.annotations, args.split,
                               args.fold)
    except (AnnotationError, ValueError, TypeError, OSError) as error:
        print(f"ctrlaug preprocess: {error}", file=sys.stderr)
        return 2
    print(f"{args.dataset}: {listing.num_inputs} inputs, {len(listing.videos)} videos to "
          f"transcode, {len(listing.rejected)} rejected from the annotations, "
          f"{len(listing.classes)} classes", file=sys.stderr)
    if args.ray or args.ray_address:
        from orchestration.ray_preprocess import ray_executor

        executor = ray_executor(args.ray_address)
    else:
        executor = local_executor(args.workers)
    try:
        manifest = run_preprocess(listing, config, args.out, executor, overwrite=args.overwrite,
                                  task_videos=args.task_videos)
    except (PlanMismatch, WorkerDied, ValueError, OSError) as error:
        print(f"ctrlaug preprocess: {error}", file=sys.stderr)
        return 2
    print(f"{args.out}: {manifest['num_videos']} videos in {len(manifest['shards'])} shards, "
          f"{manifest['num_rejected']} rejected (see {args.out}/{manifest['rejected_file']})")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from preprocessing.verify import verify_shards

    report = verify_shards(args.shards, sample=args.sample)
    for problem in report.problems:
        print(f"PROBLEM {problem}")
    status = "OK" if report.ok else f"FAILED ({len(report.problems)} problems)"
    print(f"{args.shards}: {status}: {report.shards} shards, {report.rows} rows, "
          f"{report.decoded} sampled rows decoded")
    return 0 if report.ok else 1


def _inspect(args: argparse.Namespace) -> int:
    from preprocessing.summary import summarize_shards

    try:
        print(summarize_shards(args.shards))
    except ValueError as error:
        print(f"ctrlaug inspect: {error}", file=sys.stderr)
        return 2
    return 0


def _preview(args: argparse.Namespace) -> int:
    from orchestration.experiment import ConfigError, load_config
    from orchestration.preview import write_preview

    try:
        config = load_config(args.config, list(args.overrides))
        path = write_preview(args.shards, args.out, index=args.index, seed=args.seed,
                             backend=args.backend, config=config)
    except (ConfigError, ValueError) as error:
        print(f"ctrlaug preview: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def _add_data_commands(commands) -> None:
    from preprocessing.config import PreprocessConfig
    from preprocessing.job import DEFAULT_TASK_VIDEOS
    from preprocessing.synth import SynthConfig

    synth = commands.add_parser("synth", help="write a synthetic motion-class video dataset")
    synth.add_argument("--out", type=Path, required=True)
    for field in dataclasses.fields(SynthConfig):
        _option(synth, SynthConfig, field.name)
    synth.set_defaults(handler=_synth)

    pre = commands.add_parser("preprocess", help="transcode a video dataset into Parquet shards")
    pre.add_argument("--dataset", required=True,
                     choices=["kinetics400", "ucf101", "hmdb51", "diving48", "folder"])
    pre.add_argument("--videos", required=True, help="folder holding the videos (path or "
                                                     "s3:// / gs:// URI)")
    pre.add_argument("--annotations", type=Path,
                     help="CSV file or folder (kinetics400), split-file folder (ucf101, "
                          "hmdb51), JSON folder (diving48)")
    pre.add_argument("--split", help="keep only this split (folder datasets: the split name, "
                                     "default train)")
    pre.add_argument("--fold", type=int, default=1, choices=[1, 2, 3],
                     help="UCF-101 / HMDB-51 split files to use (default 1)")
    pre.add_argument("--out", required=True, help="shard folder to write (path or s3:// / "
                                                  "gs:// URI)")
    option_help = {
        "payload": "one encoded video per row, or one JPEG per frame",
        "crf": "constant quality (None: 32 for vp9, 23 for h264)",
        "min_frames": "reject videos with fewer frames",
        "videos_per_shard": "None: derived from --target-shard-mb",
        "shuffle_seed": "seed of the video order across shards (recorded in the manifest)"}
    for field in dataclasses.fields(PreprocessConfig):
        _option(pre, PreprocessConfig, field.name, "--format" if field.name == "payload"
                else None, option_help.get(field.name, ""))
    pre.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                     help="local worker processes (default: all cores)")
    pre.add_argument("--task-videos", type=int, default=DEFAULT_TASK_VIDEOS,
                     help="videos per unit of work (a task), independent of the shard size "
                          f"(default {DEFAULT_TASK_VIDEOS})")
    pre.add_argument("--ray", action="store_true", help="run the pieces as Ray tasks")
    pre.add_argument("--ray-address", help="address of a running Ray cluster (implies --ray)")
    pre.add_argument("--overwrite", action="store_true",
                     help="replace shards of a different plan in --out")
    pre.set_defaults(handler=_preprocess)

    verify = commands.add_parser("verify", help="check shards: checksums, schema, counts, "
                                                "decodability of a sample")
    verify.add_argument("shards", help="shard folder (path or URI)")
    verify.add_argument("--sample", type=int, default=8, help="rows to decode (default 8)")
    verify.set_defaults(handler=_verify)

    inspect = commands.add_parser("inspect", help="summarise a shard folder")
    inspect.add_argument("shards", help="shard folder (path or URI)")
    inspect.set_defaults(handler=_inspect)

    evaluate = commands.add_parser("evaluate", help="linear probe and retrieval of a "
                                                    "pretrained encoder, tracked in MLflow")
    evaluate.add_argument("--protocol", default="linear,retrieval",
                          help="comma-separated: linear, retrieval, finetune")
    evaluate.add_argument("--checkpoint", help="a pretraining checkpoint.pt, or a job's folder "
                                               "(its latest checkpoint); path or URI")
    evaluate.add_argument("--model-uri", help="an MLflow model URI, e.g. runs:/ID/encoder")
    evaluate.add_argument("--train", required=True, help="train shard folder (path or URI)")
    evaluate.add_argument("--test", required=True, help="test shard folder (path or URI)")
    evaluate.add_argument("--tracking-uri", help="MLflow server (default: SQLite in "
                                                 "--storage-path)")
    evaluate.add_argument("--storage-path", default="runs",
                          help="a local folder: the feature cache and, without "
                               "--tracking-uri, the SQLite MLflow store (default: runs)")
    # The finetune protocol's settings (defaults: FinetuneConfig in orchestration/finetune.py,
    # not imported here: it needs torch, and `ctrlaug --help` should not).
    evaluate.add_argument("--backend", help="decode backend: dali (default) or reference")
    evaluate.add_argument("--gpu", action="store_true",
                          help="decode and encode on the GPU (features, and finetuning "
                               "workers with one GPU each, NCCL, bf16)")
    for field, kind in (("epochs", int), ("lr", float), ("weight_decay", float),
                        ("batch_size", int), ("workers", int)):
        evaluate.add_argument("--" + field.replace("_", "-"), dest=field, type=kind,
                              help="finetune protocol (default: FinetuneConfig's)")
    evaluate.set_defaults(handler=_evaluate)

    preview = commands.add_parser("preview", help="draw one video's views, boxes, time spans "
                                                  "and S_k heat maps")
    preview.add_argument("shards", help="shard folder (path or URI)")
    preview.add_argument("--out", type=Path, required=True, help="PNG file to write")
    preview.add_argument("--index", type=int, default=0, help="which video of the first batch")
    preview.add_argument("--seed", type=int, default=0)
    preview.add_argument("--backend", default="dali", choices=["dali", "reference"])
    preview.add_argument("--config", type=Path, help="experiment whose views to draw (its "
                                                     "augment and model sections)")
    preview.set_defaults(handler=_preview)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctrlaug",
        description="Self-supervised video representation learning with controllable "
                    "augmentations.",
    )
    parser.add_argument("--version", action="version", version=f"ctrlaug {_package_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser("demo", help="the main job end to end: synthesize, preprocess, "
                                            "pretrain on Ray, track in MLflow")
    demo.add_argument("--workdir", type=Path, default=Path("demo-run"))
    demo.set_defaults(handler=_demo, overrides=[])

    pretrain = commands.add_parser(
        "pretrain", help="pretrain on Ray Train or in this process (rerun to resume)",
        description="Pretrain with one typed config: a TOML file (--config) plus "
                    "--section.key=value overrides. `ctrlaug config` lists every key with its "
                    "type and default; `ctrlaug config --config FILE [overrides]` shows the "
                    "values a run would use.")
    pretrain.add_argument("--config", type=Path, help="TOML config (configs/*.toml)")
    pretrain.add_argument("--tracking-uri", help="MLflow server URL (default: a SQLite file in "
                                                 "run.storage_path)")
    pretrain.set_defaults(handler=_pretrain)

    config = commands.add_parser(
        "config", help="print every config key with its type, default and resolved value")
    config.add_argument("--config", type=Path, help="TOML config (configs/*.toml)")
    config.set_defaults(handler=_config)

    ablate = commands.add_parser(
        "ablate", help="run one of the paper's ablation tables (4, 5, 6, 7): pretraining and "
                       "held-out evaluation per row and seed, a results table, MLflow runs")
    ablate.add_argument("--config", type=Path, required=True,
                        help="the experiment (configs/ablation-cpu.toml on a CPU machine)")
    ablate.add_argument("--table", type=int, required=True, choices=[4, 5, 6, 7])
    ablate.add_argument("--seeds", type=int, default=3, help="seeds per row (default 3)")
    ablate.add_argument("--jobs", type=int, default=1,
                        help="jobs side by side on this machine (run.ray = false; default 1)")
    ablate.add_argument("--out", type=Path, default=Path("ablation"),
                        help="results, tables and job folders (rerun to resume)")
    ablate.add_argument("--train", help="train shards (default: the synthetic "
                                                   "motion benchmark, built under OUT/data)")
    ablate.add_argument("--test", help="held-out test shards (with --train)")
    ablate.add_argument("--rows", help="only these rows, separated by ';' (names as in the "
                                       "table, e.g. 'L_nce;L_rc + L_mi + L_td')")
    ablate.add_argument("--appearances", type=int, default=0,
                        help="the synthetic benchmark with N appearances shared across its "
                             "videos and classes (default 0: each video its own; the "
                             "appearance probe of README, Results)")
    ablate.set_defaults(handler=_ablate)
    _add_data_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = [item for item in extra if item.startswith("--") and "." in item.split("=")[0]]
    if args.command in ("pretrain", "demo", "ablate", "preview", "config"):
        unknown = [item for item in extra if item not in overrides]
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.overrides = overrides
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 0
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
