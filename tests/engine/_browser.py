"""Headless Chromium for the report tests (Debian's ``chromium`` package).

Two runs per page:

* ``screenshot``: the page as written, with Chromium's log on stderr; every ``CONSOLE`` line
  (console output and uncaught errors) is returned, since the report never logs.
* ``probe``: a copy of the page with a script injected first in ``<head>``: it records
  uncaught errors, ``console.error`` calls and resource loads; after the load event it counts
  the ``<img>`` elements that decoded (``naturalWidth > 0``), opens every ``<details>`` and
  records the text of every ``.label``, whether each ``section.experiment`` has a decoded
  headline figure, and the images wider than the page; clicks a header of a sortable table
  twice and reads the column order back, then writes the findings as JSON into the DOM,
  which ``--dump-dom`` prints.

DNS is mapped to nothing (``--host-resolver-rules``), so a page that reached for the network
would log a failed load.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path
from typing import Any

INSTALL_HINT = "install Debian's chromium package: apt-get update && apt-get install -y chromium"

_PROBE = r"""
<script>
(function () {
  var errors = [];
  window.addEventListener('error', function (e) {
    errors.push('error: ' + (e.message || (e.target && (e.target.src || e.target.href)) || 'resource'));
  }, true);
  window.addEventListener('unhandledrejection', function (e) { errors.push('rejection: ' + e.reason); });
  var consoleError = console.error;
  console.error = function () {
    errors.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
    consoleError.apply(console, arguments);
  };
  function column(table, col) {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) {
      var v = r.cells[col].getAttribute('data-v');
      return v === null ? r.cells[col].textContent.trim() : v;
    });
  }
  window.addEventListener('load', function () {
    setTimeout(function () {
      var images = Array.prototype.slice.call(document.images);
      var out = {
        errors: errors,
        images: images.length,
        decoded: images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
        resources: performance.getEntriesByType('resource').map(function (r) { return r.name; }),
        sortable: document.querySelectorAll('table.sortable').length,
        sort: null
      };
      // layout checks with every <details> open: labels, headline figures, figure widths
      Array.prototype.forEach.call(document.querySelectorAll('details'), function (d) { d.open = true; });
      var page = document.documentElement.clientWidth;
      out.pageWidth = page;
      out.labels = Array.prototype.map.call(document.querySelectorAll('.label'), function (e) {
        return e.textContent;
      });
      out.sections = Array.prototype.map.call(document.querySelectorAll('section.experiment'), function (s) {
        var img = s.querySelector('figure.headline img');
        return {id: s.id, headline: !!img && img.complete && img.naturalWidth > 0};
      });
      out.tooWide = images.filter(function (i) {
        return i.getBoundingClientRect().right > page + 0.5;
      }).map(function (i) { return i.alt; });
      var table = document.getElementById('__SORT_TABLE__');
      if (table) {
        var headers = table.tHead.rows[0].cells, col = -1;
        for (var i = 0; i < headers.length; i++) {
          if (headers[i].textContent === '__SORT_COLUMN__') { col = i; }
        }
        if (col >= 0) {
          var before = column(table, col);
          headers[col].click();
          var first = column(table, col), firstSort = headers[col].getAttribute('aria-sort');
          headers[col].click();
          out.sort = {before: before, first: first, firstSort: firstSort, second: column(table, col),
                      secondSort: headers[col].getAttribute('aria-sort')};
        }
      }
      var pre = document.createElement('pre');
      pre.id = '__probe__';
      pre.textContent = JSON.stringify(out);
      document.body.appendChild(pre);
      document.title = 'probe-done';
    }, 0);
  });
})();
</script>
"""


def find_chromium() -> str:
    """Path of the chromium executable, or an AssertionError that says how to install it."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError(f"chromium not found: {INSTALL_HINT}")


def _flags(user_data_dir: Path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={user_data_dir}",
    ]


def _run(args: list[str], timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def console_lines(stderr: str) -> list[str]:
    """Chromium log lines that carry page console output or uncaught errors."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def screenshot(html: Path, png: Path, tmp: Path, *, width: int = 1280, height: int = 2000) -> list[str]:
    """Screenshot ``html`` into ``png``; return the console lines Chromium logged for the page."""
    result = _run(
        [
            find_chromium(),
            *_flags(tmp / "profile-shot"),
            "--enable-logging=stderr",
            "--v=0",
            "--hide-scrollbars",
            f"--screenshot={png}",
            f"--window-size={width},{height}",
            html.resolve().as_uri(),
        ]
    )
    assert png.is_file(), f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    return console_lines(result.stderr)


def probe(
    html: Path, tmp: Path, *, sort_table: str, sort_column: str, width: int = 1280, height: int = 2000
) -> dict[str, Any]:
    """Load a probed copy of ``html`` (see the module docstring) and return the probe's findings."""
    text = html.read_text(encoding="utf-8")
    script = _PROBE.replace("__SORT_TABLE__", sort_table).replace("__SORT_COLUMN__", sort_column)
    head = re.search(r"<head[^>]*>", text)
    assert head is not None, "the report has no <head>"
    probed = tmp / f"probed-{html.name}"
    probed.write_text(text[: head.end()] + script + text[head.end() :], encoding="utf-8")
    result = _run(
        [
            find_chromium(),
            *_flags(tmp / "profile-probe"),
            "--virtual-time-budget=5000",
            f"--window-size={width},{height}",
            "--dump-dom",
            probed.resolve().as_uri(),
        ]
    )
    match = re.search(r'<pre id="__probe__">(.*?)</pre>', result.stdout, re.S)
    assert match is not None, f"the probe did not report (exit {result.returncode}): {result.stderr[-2000:]}"
    return json.loads(unescape(match.group(1)))
