(function () {
  "use strict";
  var root = document.documentElement;
  var table = document.getElementById("summary");
  if (table) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var filter = document.getElementById("filter");
    var verdict = document.getElementById("verdict-filter");
    var shown = document.getElementById("shown");
    var apply = function () {
      var q = filter.value.trim().toLowerCase();
      var v = verdict.value;
      var n = 0;
      rows.forEach(function (row) {
        var ok = (!q || row.getAttribute("data-text").indexOf(q) !== -1) &&
                 (!v || (" " + row.getAttribute("data-verdicts") + " ").indexOf(" " + v + " ") !== -1);
        row.classList.toggle("hidden", !ok);
        if (ok) { n += 1; }
      });
      shown.textContent = String(n);
    };
    filter.addEventListener("input", apply);
    verdict.addEventListener("change", apply);
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      var button = th.querySelector("button");
      if (!button) { return; }
      button.addEventListener("click", function () {
        var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
        var numeric = th.hasAttribute("data-numeric");
        var key = function (row) {
          var s = row.cells[col].getAttribute("data-sort");
          if (s === null) { s = row.cells[col].textContent; }
          return numeric ? parseFloat(s) : s.toLowerCase();
        };
        rows.sort(function (a, b) {
          var x = key(a), y = key(b);
          if (x < y) { return -dir; }
          if (x > y) { return dir; }
          return parseInt(a.getAttribute("data-index"), 10) - parseInt(b.getAttribute("data-index"), 10);
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  }
  // a link to a file's section or to a listed condition opens the <details> around it
  var reveal = function () {
    var id = location.hash.slice(1);
    try { id = decodeURIComponent(id); } catch (e) { /* a malformed fragment: use it as it is */ }
    var target = id ? document.getElementById(id) : null;
    for (var node = target; node; node = node.parentElement) {
      if (node.tagName === "DETAILS") { node.open = true; }
    }
    if (target) { target.scrollIntoView(); }
  };
  window.addEventListener("hashchange", reveal);
  reveal();
  var opened = [];
  window.addEventListener("beforeprint", function () {
    opened = Array.prototype.filter.call(document.querySelectorAll("details"), function (d) { return !d.open; });
    opened.forEach(function (d) { d.open = true; });
  });
  window.addEventListener("afterprint", function () {
    opened.forEach(function (d) { d.open = false; });
    opened = [];
  });
  window.addEventListener("load", function () {
    root.setAttribute("data-load-ms", String(Math.round(performance.now())));
  });
  root.setAttribute("data-ready-ms", String(Math.round(performance.now())));
  root.setAttribute("data-report-ready", "1");
}());
