// The tables of `harness report` (harness/report/html_report.py): sort on a click on a header, filter with
// the selects above each table, show a row's provenance on a click on its ▸.  Each row sits in its own
// <tbody> with its provenance row, so that sorting and filtering move and hide the two together.
(function () {
  "use strict";

  // Empty cells sort last in both directions; numbers as numbers (10 after 9), text as text.
  function order(a, b, numeric) {
    if (a === "" || b === "") return a === b ? 0 : a === "" ? 1 : -1;
    return numeric ? Number(a) - Number(b) : a.localeCompare(b);
  }

  function sortBy(table, header) {
    var index = header.cellIndex;
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th[aria-sort]").forEach(function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var bodies = Array.prototype.slice.call(table.tBodies);
    var values = bodies.map(function (body) { return body.rows[0].cells[index].dataset.sort || ""; });
    var numeric = values.every(function (value) { return value === "" || !isNaN(Number(value)); });
    var positions = bodies.map(function (_, i) { return i; });
    positions.sort(function (i, j) {
      var empty = values[i] === "" || values[j] === "";
      var difference = order(values[i], values[j], numeric);
      return (empty || ascending ? difference : -difference) || i - j;
    });
    positions.forEach(function (i) { table.appendChild(bodies[i]); });
  }

  function filter(section) {
    var selects = Array.prototype.slice.call(section.querySelectorAll("select[data-filter]"));
    var bodies = section.querySelectorAll("table.board > tbody");
    var shown = 0;
    bodies.forEach(function (body) {
      var keep = selects.every(function (select) {
        return select.value === "" || body.dataset[select.dataset.filter] === select.value;
      });
      body.hidden = !keep;
      shown += keep ? 1 : 0;
    });
    section.querySelector(".count").textContent = shown + " of " + bodies.length + " rows";
  }

  function toggle(button) {
    var details = button.closest("tbody").rows[1];
    details.hidden = !details.hidden;
    button.setAttribute("aria-expanded", String(!details.hidden));
    button.textContent = details.hidden ? "▸" : "▾";
  }

  document.querySelectorAll("section.task").forEach(function (section) {
    var table = section.querySelector("table.board");
    table.tHead.querySelectorAll("th:not(.toggle)").forEach(function (header) {
      header.addEventListener("click", function () { sortBy(table, header); });
    });
    table.addEventListener("click", function (event) {
      var button = event.target.closest("td.toggle button");
      if (button) toggle(button);
    });
    section.querySelectorAll("select[data-filter]").forEach(function (select) {
      select.addEventListener("change", function () { filter(section); });
    });
  });
})();
