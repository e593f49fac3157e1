// vlpt leaderboard site: sortable, filterable tables. Inlined into index.html by vlpt/results/site.py.
(function () {
  "use strict";

  function sortKey(row, index) {
    var cell = row.cells[index];
    if (!cell) return "";
    return cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim().toLowerCase();
  }

  function isNumber(text) {
    return text !== "" && isFinite(Number(text));
  }

  // Rows of every tbody are sorted on their own (averages stay below the rows they average);
  // empty keys ("–") always sort last; equal keys keep their previous order.
  function sortTable(table, index, ascending) {
    Array.prototype.forEach.call(table.tBodies, function (body) {
      var rows = Array.prototype.slice.call(body.rows);
      var keys = rows.map(function (row) { return sortKey(row, index); });
      var numeric = keys.every(function (k) { return k === "" || isNumber(k); });
      var order = rows.map(function (row, i) { return i; });
      order.sort(function (a, b) {
        var ka = keys[a], kb = keys[b];
        if (ka === "" || kb === "") return (ka === "") - (kb === "") || a - b;
        var diff = numeric ? Number(ka) - Number(kb) : ka.localeCompare(kb, "en", { numeric: true });
        return (ascending ? diff : -diff) || a - b;
      });
      order.forEach(function (i) { body.appendChild(rows[i]); });
    });
  }

  function setUpSorting(table) {
    var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
    headers.forEach(function (th, index) {
      if (th.classList.contains("nosort")) return;
      th.tabIndex = 0;
      function activate() {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        headers.forEach(function (h) { if (!h.classList.contains("nosort")) h.setAttribute("aria-sort", "none"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        sortTable(table, index, ascending);
      }
      th.addEventListener("click", activate);
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); activate(); }
      });
    });
  }

  function setUpFilters(section) {
    var table = section.querySelector("table.board");
    var search = section.querySelector("input.filter-text");
    var selects = Array.prototype.slice.call(section.querySelectorAll("select.filter"));
    var count = section.querySelector(".count");
    function apply() {
      var words = search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0, total = 0;
      Array.prototype.forEach.call(table.tBodies, function (body) {
        Array.prototype.forEach.call(body.rows, function (row) {
          var text = row.getAttribute("data-text");
          var visible = words.every(function (w) { return text.indexOf(w) !== -1; }) &&
            selects.every(function (s) { return s.value === "" || row.getAttribute("data-" + s.name) === s.value; });
          row.hidden = !visible;
          total += 1;
          if (visible) shown += 1;
        });
      });
      var noun = total === 1 ? " row" : " rows";
      count.textContent = shown === total ? total + noun : shown + " of " + total + noun;
    }
    search.addEventListener("input", apply);
    selects.forEach(function (s) { s.addEventListener("change", apply); });
    apply();
  }

  document.querySelectorAll("table.board").forEach(setUpSorting);
  document.querySelectorAll("section.protocol").forEach(setUpFilters);
})();
