// Click a header to sort (again to reverse); numbers sort by their data-value, missing
// values last. "#sort=COLUMN:desc" in the address sorts every table holding COLUMN on load.
(function () {
  "use strict";
  function numberOf(cell) {
    var v = cell.getAttribute("data-value");
    return v === null ? null : parseFloat(v);
  }
  function compare(a, b, numeric) {
    if (!numeric) {
      return a.textContent.localeCompare(b.textContent, undefined, {numeric: true});
    }
    var x = numberOf(a), y = numberOf(b);
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  function sortTable(table, column, descending) {
    var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var i = headers.findIndex(function (th) { return th.dataset.column === column; });
    if (i < 0) { return; }
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var numeric = rows.every(function (r) {
      return r.cells[i].hasAttribute("data-value") || r.cells[i].classList.contains("na");
    });
    rows.sort(function (a, b) {
      var missA = a.cells[i].classList.contains("na"), missB = b.cells[i].classList.contains("na");
      if (missA || missB) { return missA - missB; }
      var c = compare(a.cells[i], b.cells[i], numeric);
      return descending ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    headers.forEach(function (th) { th.removeAttribute("aria-sort"); });
    headers[i].setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  var asked = /^#sort=([^:]+)(?::(asc|desc))?$/.exec(decodeURIComponent(location.hash));
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.addEventListener("click", function () {
        sortTable(table, th.dataset.column, th.getAttribute("aria-sort") === "ascending");
      });
    });
    if (asked) { sortTable(table, asked[1], asked[2] === "desc"); }
  });
})();
