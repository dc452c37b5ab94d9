// Live dashboard glue: connection state, and the events-per-minute chart fed by OOB-swapped data.
(function () {
  "use strict";
  var stateEl = function () { return document.getElementById("ws-state"); };
  function setState(state) {
    var el = stateEl();
    if (!el) return;
    el.setAttribute("data-ws-state", state);
    el.textContent = state === "open" ? "live" : state === "closed" ? "disconnected – retrying" : "connecting…";
  }
  document.addEventListener("htmx:wsConnecting", function () { setState("connecting"); });
  document.addEventListener("htmx:wsOpen", function () { setState("open"); });
  document.addEventListener("htmx:wsClose", function () { setState("closed"); });
  document.addEventListener("htmx:wsError", function () { setState("closed"); });

  var chart = null;
  function readSeries() {
    var el = document.getElementById("events-series");
    if (!el) return [];
    try { return JSON.parse(el.textContent); } catch (e) { return []; }
  }
  function drawChart() {
    var canvas = document.getElementById("events-chart");
    if (!canvas || typeof Chart === "undefined") return;
    var series = readSeries();
    var labels = series.map(function (p) { return p.t; });
    var values = series.map(function (p) { return p.v; });
    if (chart) {
      chart.data.labels = labels;
      chart.data.datasets[0].data = values;
      chart.update("none");
      return;
    }
    chart = new Chart(canvas, {
      type: "line",
      data: { labels: labels, datasets: [{ label: "events/min", data: values, tension: 0.25, pointRadius: 0, fill: true }] },
      options: { animation: false, plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } }
    });
  }
  document.addEventListener("DOMContentLoaded", drawChart);
  document.addEventListener("htmx:wsAfterMessage", drawChart);
})();
