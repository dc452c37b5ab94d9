// IOps dashboard glue: connection state and reconnects, Chart.js charts fed by JSON islands
// (json_script), live feed ordering, the alert drawer, the theme toggle and error toasts.
// Server text only ever reaches the page through htmx swaps of escaped HTML or textContent.
(function () {
  "use strict";

  // --- connection state and reconnect ---------------------------------------------------------
  var LABELS = { connecting: "connecting…", open: "live", closed: "disconnected – retrying" };
  var RETRY_CODES = [1006, 1011, 1012, 1013]; // the ws extension retries these itself
  var retries = 0;
  var retryTimer = null;

  // Exponential backoff with jitter, capped at 10 s: a restarted server is found again quickly.
  function backoff(attempt) {
    return Math.min(10000, 500 * Math.pow(2, attempt)) * (0.5 + Math.random() / 2);
  }
  if (window.htmx) window.htmx.config.wsReconnectDelay = backoff;

  function setState(state, label) {
    var el = document.getElementById("ws-state");
    if (!el) return;
    el.setAttribute("data-ws-state", state);
    el.textContent = label || LABELS[state];
  }

  document.addEventListener("htmx:wsConnecting", function () { setState("connecting"); });
  document.addEventListener("htmx:wsOpen", function () { retries = 0; setState("open"); });
  document.addEventListener("htmx:wsError", function () { setState("closed"); });
  document.addEventListener("htmx:wsClose", function (evt) {
    var elt = evt.target;
    var code = evt.detail && evt.detail.event ? evt.detail.event.code : 0;
    if (!document.body.contains(elt)) return; // replaced by a new range or filter: its successor connects
    if (code === 4403) { setState("closed", "signed out – reload the page"); return; }
    setState("closed");
    if (RETRY_CODES.indexOf(code) >= 0) return;
    // A server going away cleanly (restart, deploy) closes with 1000/1001: retry with backoff too.
    var wrapper = evt.detail.socketWrapper;
    var delay = backoff(retries++);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(function () {
      if (document.body.contains(elt) && wrapper) wrapper.reconnect();
    }, delay);
  });

  // --- charts -----------------------------------------------------------------------------------
  var charts = {}; // island id -> {chart, text}
  var COLOURS = { info: "--info", ok: "--ok", warn: "--warn", crit: "--crit", muted: "--muted" };

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }
  function colour(key) { return cssVar(COLOURS[key] || "--info") || "#888888"; }

  function readSpec(id) {
    var el = document.getElementById(id);
    if (!el) return null;
    try { return { text: el.textContent, spec: JSON.parse(el.textContent) }; } catch (e) { return null; }
  }

  function datasetColours(spec, d) {
    var c = colour(d.color);
    if (d.signed) return d.data.map(function (v) { return v >= 0 ? colour("crit") : colour("ok"); });
    if (d.band) {
      return spec.labels.map(function (_l, i) { return i < 5 ? colour("crit") : i < 7 ? colour("warn") : colour("ok"); });
    }
    return spec.type === "line" ? c + "33" : c + "d0";
  }

  function buildConfig(spec) {
    var line = spec.type === "line";
    var datasets = spec.datasets.map(function (d) {
      return {
        label: d.label,
        data: d.data.slice(),
        borderColor: colour(d.color),
        backgroundColor: datasetColours(spec, d),
        borderWidth: line ? 2 : 0,
        borderRadius: line ? 0 : 3,
        pointRadius: 0,
        pointHitRadius: 6,
        tension: 0.25,
        fill: line && spec.datasets.length === 1
      };
    });
    var text = cssVar("--muted");
    var grid = cssVar("--line");
    var valueAxis = { beginAtZero: true, grid: { color: grid }, ticks: { color: text, precision: 0 } };
    if (spec.max) valueAxis.suggestedMax = spec.max;
    var categoryAxis = { grid: { display: false }, ticks: { color: text, autoSkip: line, maxRotation: line ? 0 : 50 } };
    return {
      type: spec.type,
      data: { labels: spec.labels.slice(), datasets: datasets },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        indexAxis: spec.horizontal ? "y" : "x",
        interaction: { mode: "index", intersect: false },
        plugins: {
          legend: { display: spec.datasets.length > 1, labels: { color: text, boxWidth: 12 } }
        },
        scales: spec.horizontal ? { x: valueAxis, y: categoryAxis } : { x: categoryAxis, y: valueAxis }
      }
    };
  }

  function initCharts() {
    if (typeof Chart === "undefined") return;
    Object.keys(charts).forEach(function (id) {
      if (!document.body.contains(charts[id].chart.canvas)) { charts[id].chart.destroy(); delete charts[id]; }
    });
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var id = canvas.getAttribute("data-chart");
      if (charts[id] && charts[id].chart.canvas === canvas) return;
      if (charts[id]) { charts[id].chart.destroy(); delete charts[id]; }
      var src = readSpec(id);
      if (!src) return;
      charts[id] = { chart: new Chart(canvas, buildConfig(src.spec)), text: src.text };
    });
  }

  function rebuildCharts() {
    Object.keys(charts).forEach(function (id) { charts[id].chart.destroy(); delete charts[id]; });
    initCharts();
  }

  // The events chart appends: points for new minutes are pushed, the oldest shifted out.
  function appendPoints(chart, spec) {
    var labels = chart.data.labels;
    var values = chart.data.datasets[0].data;
    spec.labels.forEach(function (label, i) {
      var at = labels.lastIndexOf(label);
      if (at >= 0) { values[at] = spec.datasets[0].data[i]; } else { labels.push(label); values.push(spec.datasets[0].data[i]); }
    });
    while (labels.length > spec.labels.length) { labels.shift(); values.shift(); }
  }

  function refreshCharts() {
    Object.keys(charts).forEach(function (id) {
      var entry = charts[id];
      var src = readSpec(id);
      if (!src || src.text === entry.text) return;
      entry.text = src.text;
      var chart = entry.chart;
      if (src.spec.mode === "append") {
        appendPoints(chart, src.spec);
      } else {
        chart.data.labels = src.spec.labels.slice();
        src.spec.datasets.forEach(function (d, i) {
          if (!chart.data.datasets[i]) return;
          chart.data.datasets[i].data = d.data.slice();
          chart.data.datasets[i].backgroundColor = datasetColours(src.spec, d);
        });
      }
      chart.update("none");
    });
  }

  // --- the live alert feed ----------------------------------------------------------------------
  // Rows are kept in the server's order: most severe first, then most recently seen. A pushed row
  // replaces its older copy (also inside a group, whose count follows); "show more" stays last.
  var RANK = { critical: 2, warning: 1, info: 0 };

  function tidyFeed() {
    var feed = document.getElementById("alert-feed");
    if (!feed) return;
    var refocus = null;
    var kept = {};
    // In document order: a pushed row arrives on top, so on a tie the first copy is the newest.
    Array.prototype.slice.call(feed.querySelectorAll("li[data-alert-id]")).forEach(function (li) {
      var id = li.getAttribute("data-alert-id");
      var other = kept[id];
      if (!other) { kept[id] = li; return; }
      var keep = (+li.dataset.lastSeen > +other.dataset.lastSeen) ? li : other;
      var gone = keep === li ? other : li;
      if (gone.contains(document.activeElement)) refocus = keep;
      gone.remove();
      kept[id] = keep;
    });
    Array.prototype.slice.call(feed.querySelectorAll(":scope > li[data-group]")).forEach(function (group) {
      var n = group.querySelectorAll("li[data-alert-id]").length;
      if (!n) { group.remove(); return; }
      var count = group.querySelector(".count");
      if (count) count.textContent = n;
    });
    var rows = Array.prototype.slice.call(feed.querySelectorAll(":scope > li[data-alert-id], :scope > li[data-group]"));
    var sorted = rows.slice().sort(function (a, b) {
      return ((RANK[b.dataset.severity] || 0) - (RANK[a.dataset.severity] || 0)) ||
        (+b.dataset.lastSeen - +a.dataset.lastSeen) || ((+b.dataset.alertId || 0) - (+a.dataset.alertId || 0));
    });
    if (sorted.some(function (li, i) { return li !== rows[i]; })) {
      sorted.forEach(function (li) { feed.appendChild(li); });
    }
    var more = feed.querySelector(":scope > li.more");
    if (more && more !== feed.lastElementChild) feed.appendChild(more);
    var empty = feed.querySelector(":scope > li.empty");
    if (empty && rows.length) empty.remove();
    if (refocus) { var link = refocus.querySelector("a.msg"); if (link) link.focus(); }
  }

  function ago(seconds) {
    if (seconds < 60) return "just now";
    var units = [[86400, "day"], [3600, "hour"], [60, "minute"]];
    for (var i = 0; i < units.length; i++) {
      var n = Math.floor(seconds / units[i][0]);
      if (n >= 1) return n + " " + units[i][1] + (n === 1 ? "" : "s") + " ago";
    }
    return "just now";
  }

  function updateAges() {
    var now = Date.now();
    document.querySelectorAll("time[data-age]").forEach(function (el) {
      var t = Date.parse(el.getAttribute("datetime"));
      if (!isNaN(t)) el.textContent = ago(Math.max(0, (now - t) / 1000));
    });
  }
  setInterval(updateAges, 30000);

  // --- alert drawer -------------------------------------------------------------------------------
  var opener = null;

  function openPanel() {
    var panel = document.getElementById("panel");
    if (!panel) return;
    panel.hidden = false;
    document.body.classList.add("panel-open");
    var title = document.getElementById("panel-title");
    if (title) title.focus();
  }

  function closePanel() {
    var panel = document.getElementById("panel");
    if (!panel || panel.hidden) return;
    panel.hidden = true;
    document.body.classList.remove("panel-open");
    if (opener && document.body.contains(opener)) opener.focus();
  }

  document.addEventListener("htmx:beforeRequest", function (evt) {
    var target = evt.detail.target;
    if (target && target.id === "panel-body" && !(document.getElementById("panel") || {}).contains(evt.detail.elt)) {
      opener = evt.detail.elt;
    }
  });
  document.addEventListener("click", function (evt) {
    if (evt.target.closest && evt.target.closest("[data-close-panel]")) closePanel();
  });
  document.addEventListener("keydown", function (evt) {
    if (evt.key === "Escape") closePanel();
  });

  // --- theme --------------------------------------------------------------------------------------
  var THEMES = ["auto", "light", "dark"];

  function showTheme() {
    var theme = document.documentElement.getAttribute("data-theme") || "auto";
    document.querySelectorAll("[data-theme-toggle]").forEach(function (btn) {
      btn.setAttribute("aria-label", "Colour theme: " + theme + " (switch)");
      btn.textContent = theme === "dark" ? "☾" : theme === "light" ? "☀" : "◐";
    });
  }

  document.addEventListener("click", function (evt) {
    var btn = evt.target.closest && evt.target.closest("[data-theme-toggle]");
    if (!btn) return;
    var current = document.documentElement.getAttribute("data-theme") || "auto";
    var next = THEMES[(THEMES.indexOf(current) + 1) % THEMES.length];
    document.documentElement.setAttribute("data-theme", next);
    try {
      if (next === "auto") window.localStorage.removeItem("iops-theme");
      else window.localStorage.setItem("iops-theme", next);
    } catch (e) { /* storage disabled */ }
    showTheme();
    rebuildCharts();
  });
  if (window.matchMedia) {
    var mq = window.matchMedia("(prefers-color-scheme: dark)");
    if (mq.addEventListener) mq.addEventListener("change", rebuildCharts);
  }

  // --- errors ----------------------------------------------------------------------------------
  var toastTimer = null;

  function toast(message) {
    var el = document.getElementById("toast");
    if (!el) return;
    el.textContent = message;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { el.hidden = true; }, 6000);
  }

  document.addEventListener("htmx:responseError", function (evt) {
    var xhr = evt.detail.xhr;
    var type = xhr.getResponseHeader("Content-Type") || "";
    var text = type.indexOf("text/plain") === 0 ? xhr.responseText.slice(0, 300) : "";
    if (xhr.status === 403 && !text) text = "Refused (403): reload the page and try again.";
    toast(text || "Request failed (" + xhr.status + ").");
  });
  document.addEventListener("htmx:sendError", function () { toast("The server cannot be reached."); });

  // Keep the URL short: filters left on "all" are not sent (the server defaults to all).
  document.addEventListener("htmx:configRequest", function (evt) {
    if (!evt.detail.elt.matches || !evt.detail.elt.matches("form.filters")) return;
    ["severity", "status"].forEach(function (name) {
      if (evt.detail.parameters[name] === "all") delete evt.detail.parameters[name];
    });
  });

  // --- wiring ----------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", function () { showTheme(); initCharts(); tidyFeed(); });
  document.addEventListener("htmx:afterSettle", function (evt) {
    initCharts();
    if (evt.detail.target && evt.detail.target.id === "panel-body") openPanel();
    tidyFeed(); // a "show more" page joined the feed
  });
  document.addEventListener("htmx:wsAfterMessage", function () {
    initCharts();
    refreshCharts();
    tidyFeed();
    updateAges();
  });
})();
