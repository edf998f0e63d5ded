"""The report renders in a real browser: headless Chromium loads every embedded image.

Skipped when no Chromium is installed (/usr/bin/chromium, `chromium` or
`chromium-browser` on PATH; TRIPLETLAB_CHROMIUM=/path/to/chromium names another). The report itself has no script; the test
opens a copy with a small script that, on load, writes how many images decoded.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reports.build import write_report
from test_reports_units import fake_view

CANDIDATES = (os.environ.get("TRIPLETLAB_CHROMIUM", ""), "/usr/bin/chromium", "chromium",
              "chromium-browser")
CHROMIUM = next((path for path in map(shutil.which, filter(None, CANDIDATES)) if path), None)
PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var marker = document.createElement("p");
  marker.id = "probe";
  marker.textContent = "IMAGES-LOADED " + ok + "/" + images.length;
  document.body.appendChild(marker);
});
</script>
"""

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")]


def test_every_image_of_the_report_loads_in_headless_chromium(tmp_path):
    page = write_report(fake_view(seeds=(0, 1)), tmp_path / "report", umap_epochs=20,
                        umap_max_points=60, random_state=0, max_curve_points=50).read_text()
    n_images = page.count("<img ")
    assert n_images >= 8
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update", "--no-first-run",
               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
               "--dump-dom", probe.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    found = re.search(r"IMAGES-LOADED (\d+)/(\d+)", done.stdout)
    assert found, f"no probe marker in the DOM (rc {done.returncode}): {done.stderr[-2000:]}"
    assert (int(found.group(1)), int(found.group(2))) == (n_images, n_images)
