"""docs/images/report.png: the top of a run's report.html (``autoencoders report``) as headless
Chromium draws it in a 1200 x 1600 window.

    python -m autoencoders train vae --epochs 5 --quiet --out /tmp/rep-shot
    python docs/images/make_report_screenshot.py /tmp/rep-shot docs/images/report.png

The report is written (again) first, so the picture shows the page as this checkout writes it.
Needs Chromium on PATH (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from autoencoders._files import atomic_write_bytes
from autoencoders.report import write_report

WINDOW = "1200,1600"


def main(run_dir: str, out: str) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("chromium is not on PATH (Debian: apt-get install chromium)")
    report = write_report(run_dir)
    with tempfile.TemporaryDirectory() as scratch:
        shot = Path(scratch) / "report.png"
        subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--hide-scrollbars", "--force-device-scale-factor=1", f"--user-data-dir={scratch}/profile",
                        f"--window-size={WINDOW}", f"--screenshot={shot}", report.resolve().as_uri()],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        atomic_write_bytes(out, shot.read_bytes())
    print(f"{out}: {Path(out).stat().st_size} bytes, from {report}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:3])
