"""The `ctrlaug` command line: one entry point, one subcommand per job.

Subcommands import their heavy dependencies lazily so `ctrlaug --help` stays fast and a
preprocessing box never imports torch. Later issues add synth, preprocess, verify, inspect,
preview, pretrain and evaluate (DESIGN section 7).
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version


def _package_version() -> str:
    try:
        return version("ctrlaug")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _demo(args: argparse.Namespace) -> int:
    from model import LossConfig, ModelConfig
    from orchestration.smoke import SmokeConfig, run_smoke

    model = ModelConfig(width=args.width)
    loss = LossConfig()
    smoke = SmokeConfig(steps=args.steps, batch_size=args.batch_size)
    print(f"ctrlaug demo: model core smoke run on random clips "
          f"(B={smoke.batch_size}, K={model.num_clips}, {smoke.frames}x{smoke.size}x{smoke.size}, "
          f"R3D-18 width {model.width}, L_rc + L_mi + L_td)", flush=True)
    first = last = None
    for scalars in run_smoke(model, loss, smoke):
        first = first or scalars
        last = scalars
        print(f"step {scalars['step'] + 1:3d}/{smoke.steps}  loss {scalars['loss']:8.4f}  "
              f"rc {scalars['loss_rc']:.4f}  mi_level {scalars['mi_level']:+.4f}  "
              f"mi_local_global {scalars['mi_local_global']:+.4f}  td_mi {scalars['td_mi']:.4f}  "
              f"({scalars['seconds']:.1f}s)", flush=True)
    print(f"L_rc {first['loss_rc']:.4f} -> {last['loss_rc']:.4f} over {smoke.steps} steps; "
          f"total {first['loss']:.4f} -> {last['loss']:.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctrlaug",
        description="Self-supervised video representation learning with controllable "
                    "augmentations.",
    )
    parser.add_argument("--version", action="version", version=f"ctrlaug {_package_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser("demo", help="run the main job end to end (for now: a smoke run "
                                            "of the model core on random clips)")
    demo.add_argument("--steps", type=int, default=8, help="optimisation steps (default 8)")
    demo.add_argument("--batch-size", type=int, default=4, help="videos per step (default 4)")
    demo.add_argument("--width", type=int, default=16,
                      help="R3D-18 base width; 64 is the paper's (default 16 for CPU)")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
