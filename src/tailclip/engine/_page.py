"""The report page's style sheet and its one script (sorting tables by a click on a header)."""

CSS = """
:root { --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --head: #f6f8fa; --accent: #0a5bd3; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--fg); margin: 0 auto; padding: 24px 32px 64px; max-width: 1500px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 22px 0 6px; }
.meta, .note { color: var(--muted); }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
table { border-collapse: collapse; margin: 6px 0 14px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: right; vertical-align: top; }
th { background: var(--head); cursor: pointer; user-select: none; white-space: nowrap; }
th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: 10px; }
th[aria-sort="descending"]::after { content: " \\25BC"; font-size: 10px; }
td.text, th.text { text-align: left; }
td.text:first-child { white-space: nowrap; }
tr.baseline td { background: #eef5ff; }
.status { border-radius: 10px; padding: 1px 8px; font-size: 12px; }
.status.finished { background: #dafbe1; } .status.failed { background: #ffebe9; }
.status.running { background: #fff8c5; } .status.pending { background: #eaeef2; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 16px; }
.figures.wide { grid-template-columns: 1fr; }
figure { margin: 0; } figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12px; }
pre { background: var(--head); padding: 8px; overflow: auto; max-height: 360px; }
details { margin: 8px 0; } summary { cursor: pointer; color: var(--accent); }
section.experiment { margin-top: 28px; }
.claims { list-style: none; padding: 0; margin: 6px 0 10px; }
.claims li { margin: 4px 0; }
.verdict { border-radius: 4px; padding: 1px 7px; font-weight: 600; font-size: 12px; margin-right: 6px; }
.verdict.pass { background: #dafbe1; color: #116329; } .verdict.fail { background: #ffebe9; color: #a40e26; }
figure.headline { margin: 8px 0 12px; } figure.headline img { max-width: min(100%, 960px); }
.label { white-space: nowrap; }
figure.small img { max-width: min(100%, 480px); }
section.advice .advice-verdict { border: 1px solid var(--line); border-left: 4px solid var(--accent);
  padding: 4px 16px; margin: 8px 0 12px; max-width: 960px; }
.advice-headline { font-size: 18px; margin: 8px 0; }
.advice-verdict pre { display: inline-block; min-width: 280px; margin: 0; }
.noise-verdict { border-radius: 4px; padding: 1px 7px; font-weight: 600; font-size: 12px;
  background: #eaeef2; }
.noise-verdict.heavy-tailed { background: #fff1e5; color: #953800; }
.noise-verdict.light-tailed { background: #dafbe1; color: #116329; }
tr.recommended td { background: #dafbe1; }
.error { color: #a40e26; max-width: 420px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
"""

# Click (or Enter on) a header to sort by that column; numbers come from data-v, text otherwise.
JS = """
(function () {
  function value(row, col) {
    var cell = row.cells[col], v = cell ? cell.getAttribute('data-v') : null;
    if (v !== null && v !== '' && !isNaN(parseFloat(v))) { return parseFloat(v); }
    return cell ? cell.textContent.trim().toLowerCase() : '';
  }
  function sortBy(table, th, col) {
    var ascending = th.getAttribute('aria-sort') !== 'ascending';
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, col), y = value(b, col), c;
      if (typeof x === typeof y) { c = x < y ? -1 : (x > y ? 1 : 0); }
      else { c = typeof x === 'number' ? -1 : 1; }
      return ascending ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.title = 'Sort by ' + th.textContent;
      th.addEventListener('click', function () { sortBy(table, th, col); });
      th.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortBy(table, th, col); }
      });
    });
  });
})();
"""
