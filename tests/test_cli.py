"""The `ctrlaug` entry point: --help, --version, and a light import path."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

# The console script installed beside this interpreter (make test installs the package).
CTRLAUG = str(Path(sys.executable).parent / "ctrlaug")


def test_version_and_help():
    out = subprocess.run([CTRLAUG, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"ctrlaug {version('ctrlaug')}"
    out = subprocess.run([CTRLAUG, "--help"], capture_output=True, text=True, check=True)
    assert "usage: ctrlaug" in out.stdout and "demo" in out.stdout


def test_help_does_not_import_torch():
    code = ("import sys; from orchestration.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported by --help'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_unknown_command_fails_with_usage():
    out = subprocess.run([sys.executable, "-m", "orchestration.cli", "frobnicate"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "invalid choice" in out.stderr
