"""The report opens in headless Chromium from disk (no server) and renders something (slow)."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from normlab.report import run_and_report

sys.path.insert(0, str(Path(__file__).parent.parent / "engine"))
from toy_study import ToyConfig, ToyStudy

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_report_screenshot_in_headless_chromium_is_not_blank(tmp_path):
    import matplotlib.image as mpimg

    out = run_and_report(ToyStudy(), ToyConfig(), tmp_path / "run")
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'prof'}",
           "--window-size=1200,1600", f"--screenshot={shot}", out.report.resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    img = mpimg.imread(shot)[..., :3]
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    # Not blank: many distinct colors, a real share of non-white pixels (text, tables, the figure).
    non_white = (img < 0.95).any(axis=-1).mean()
    assert non_white > 0.02, f"only {non_white:.1%} of the screenshot is not white"
    assert len(np.unique((img * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50
