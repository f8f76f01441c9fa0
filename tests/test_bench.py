"""The benchmark runs (its figures are measured, not asserted: targets live in the benchmark's output). Its two
cheap figures here; the real packages its verify figures build are built and verified by tests/test_corpus.py."""
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.docker


def test_benchmark_prints_its_figures_with_the_machine(base_image, tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench", "--only", "collect,skip-pushed", "--rounds", "1",
                           "--base-image", base_image, "--json", str(tmp_path / "figures.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert done.returncode == (1 if any(f["met"] is False for f in figures) else 0), done.stdout + done.stderr
    assert done.stdout.startswith("machine: ")
    for name in ("collect", "skip-pushed"):
        assert f"\n{name} " in done.stdout
    assert [f["name"] for f in figures] == ["collect", "skip-pushed"]
    assert all(f["target"].startswith("<=") and f["met"] in (True, False) for f in figures), figures


def test_benchmark_refuses_unknown_figures():
    done = subprocess.run([sys.executable, "-m", "bench", "--only", "speed"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "unknown figures: speed" in done.stderr
