/* Monitoring charts: reads the JSON embedded by the page (json_script) and draws Chart.js charts.
   Every chart container is <canvas data-chart="KIND" data-source="ELEMENT-ID">.
   Steps without traffic are null and drawn as gaps (spanGaps: false); a request count of 0 is
   a real 0. Revisions made in the range are vertical lines (the mpMarkers plugin below);
   dragging across a time chart zooms (the range goes into the URL); the page re-reads its
   charts every 30 s while "Auto-refresh" is on (no full reload). */
(function () {
  "use strict";
  var palette = ["#0172ad", "#d93526", "#2a7b3f", "#9236a4", "#c57f00", "#017fc0", "#5d6b89",
                 "#b0306a", "#3a8d8d", "#7a5c2e"];
  function label(ts) {
    var d = new Date(ts);
    var p = function (n) { return String(n).padStart(2, "0"); };
    return p(d.getUTCMonth() + 1) + "-" + p(d.getUTCDate()) + " " + p(d.getUTCHours()) + ":" +
      p(d.getUTCMinutes());
  }
  // With gaps not joined, a step between two empty ones would be invisible: give it a dot.
  function lonePoint(ctx) {
    var d = ctx.dataset.data, i = ctx.dataIndex;
    if (d[i] == null) return 0;
    return d[i - 1] == null && d[i + 1] == null ? 2.5 : 0;
  }
  function line(name, data, i, extra) {
    return Object.assign({label: name, data: data, borderColor: palette[i % palette.length],
      backgroundColor: palette[i % palette.length], spanGaps: false, pointRadius: lonePoint,
      borderWidth: 2, tension: 0.2}, extra || {});
  }
  function opts(yTitle, more) {
    return Object.assign({responsive: true, maintainAspectRatio: false, animation: false,
      interaction: {mode: "index", intersect: false},
      plugins: {legend: {position: "bottom"}},
      scales: {x: {ticks: {maxTicksLimit: 8}}, y: {beginAtZero: true,
        title: {display: !!yTitle, text: yTitle}}}}, more || {});
  }
  // While traffic is split (canary, blue/green): each revision's own line, dashed.
  function perRevision(s, key) {
    return (s.split || []).map(function (r, i) {
      var name = (key === "latency_p95" ? "p95 " : "errors ") + "r" + r.revision +
        (r.percent != null ? " (" + r.percent + " %)" : "");
      return line(name, r[key], 5 + i, {borderDash: [6, 3], revision: r.revision});
    });
  }
  var builders = {
    requests: function (s) {
      return {type: "line", data: {labels: s.timestamps.map(label),
        datasets: [line("requests/min", s.requests_per_min, 0, {fill: true,
          backgroundColor: "rgba(1,114,173,0.15)"})]}, options: opts("req/min")};
    },
    errors: function (s) {
      return {type: "line", data: {labels: s.timestamps.map(label),
        datasets: [line("error rate %", s.error_rate, 1)].concat(perRevision(s, "error_rate"))},
        options: opts("%")};
    },
    gateway: function (s) {
      var codes = Object.keys(s.gateway_errors || {});
      var any = codes.some(function (c) {
        return s.gateway_errors[c].some(function (v) { return v > 0; });
      });
      if (!any) return null;
      var colors = {"500": "#5d6b89", "502": "#c57f00", "503": "#d93526", "504": "#9236a4"};
      return {type: "bar", data: {labels: s.timestamps.map(label),
        datasets: codes.map(function (c) {
          return {label: c, data: s.gateway_errors[c], backgroundColor: colors[c] || palette[0],
                  stack: "g"};
        })},
        options: opts("requests", {scales: {x: {stacked: true, ticks: {maxTicksLimit: 8}},
                                             y: {stacked: true, beginAtZero: true}}})};
    },
    latency: function (s) {
      return {type: "line", data: {labels: s.timestamps.map(label), datasets: [
        line("p50", s.latency_p50, 0), line("p95", s.latency_p95, 4),
        line("p99", s.latency_p99, 1)].concat(perRevision(s, "latency_p95"))},
        options: opts("ms")};
    },
    predictions: function (s) {
      var p = s.predictions;
      if (p.kind === "classes") {
        var names = Object.keys(p.classes);
        return {type: "bar", data: {labels: s.timestamps.map(label),
          datasets: names.map(function (n, i) {
            return {label: "class " + n, data: p.classes[n],
                    backgroundColor: palette[i % palette.length], stack: "p"};
          })},
          options: opts("predictions", {scales: {x: {stacked: true, ticks: {maxTicksLimit: 8}},
                                               y: {stacked: true, beginAtZero: true}}})};
      }
      if (p.kind === "numeric") {
        var h = p.histogram;
        return {type: "bar", data: {labels: h.counts.map(function (_, i) {
            return h.edges[i].toPrecision(3) + "–" + h.edges[i + 1].toPrecision(3); }),
          datasets: [{label: "predictions in range", data: h.counts,
                      backgroundColor: palette[0]}]}, options: opts("count")};
      }
      if (p.kind === "vectors") {  // embeddings: the mean norm per step
        return {type: "line", data: {labels: s.timestamps.map(label), datasets: [
          line("mean norm of the " + p.dim + "-d output vectors", p.norm_series, 0)]},
          options: opts("norm")};
      }
      return null;
    },
    quality: function (s) {
      var q = s.quality || {};
      var names = q.task === "regression" ? ["mae", "rmse"] : ["accuracy", "f1"];
      if (!q.totals || !q.totals.labelled) return null;
      return {type: "line", data: {labels: s.timestamps.map(label),
        datasets: names.map(function (n, i) { return line(n, q[n] || [], i + 2); })},
        options: opts(q.task === "regression" ? "error" : "score")};
    },
    replica: function (s, canvas) {
      var id = canvas.dataset.replica;
      var cpu = (s.replica_cpu || {})[id], mem = (s.replica_memory || {})[id];
      if (!cpu || !mem) return null;
      var info = (s.replicas || []).filter(function (r) { return r.replica === id; })[0] || {};
      var memory = line("memory MB", mem, 2, {yAxisID: "mem"});
      var scales = {x: {ticks: {maxTicksLimit: 8}},
        y: {beginAtZero: true, position: "left", title: {display: true, text: "CPU %"}},
        mem: {beginAtZero: true, position: "right", grid: {drawOnChartArea: false},
              title: {display: true, text: "memory MB"}}};
      if (info.memory_limit_mb) scales.mem.suggestedMax = info.memory_limit_mb;
      return {type: "line", data: {labels: s.timestamps.map(label),
        datasets: [line("CPU %", cpu, 0, {yAxisID: "y"}), memory]},
        options: opts("", {scales: scales})};
    },
    // Replicas over time (the autoscaler's ScaleSample rows): each step's value holds until
    // the next step, so the lines are drawn as steps, not slopes.
    scale: function (s) {
      var r = s.scale || {};
      if (!r.sampled) return null;
      var stepped = {stepped: "after", tension: 0};
      return {type: "line", data: {labels: s.timestamps.map(label),
        datasets: [line("wanted", r.desired, 0, stepped),
                   line("ready", r.ready, 2, Object.assign({borderDash: [6, 3]}, stepped))]},
        options: opts("replicas", {scales: {x: {ticks: {maxTicksLimit: 8}},
          y: {beginAtZero: true, ticks: {precision: 0},
              title: {display: true, text: "replicas"}}}})};
    },
    drift: function (d) {
      var f = d.features || [];
      if (!f.length) return null;
      return {type: "bar", data: {labels: f.map(function (x) { return x.feature; }),
        datasets: [{label: "PSI", data: f.map(function (x) { return x.psi; }),
          backgroundColor: f.map(function (x) { return x.drifted ? "#d93526" : "#0172ad"; })}]},
        options: opts("PSI", {indexAxis: "y", plugins: {legend: {display: false}},
          scales: {x: {beginAtZero: true, title: {display: true,
            text: "PSI (threshold " + d.thresholds.psi + ")"}}}})};
    }
  };
  var TIME_CHARTS = {requests: 1, errors: 1, gateway: 1, latency: 1, quality: 1, replica: 1,
                     scale: 1};
  var markerColors = {deploy: "#2a7b3f", rollback: "#d93526", promote: "#9236a4"};

  // Where a marker's time falls among the steps (null: outside the range).
  function stepIndex(s, at) {
    var i = Math.floor((Date.parse(at) - Date.parse(s.start)) / (s.step * 1000));
    return i >= 0 && i < s.timestamps.length ? i : null;
  }

  // A tiny plugin of our own: revision events as dashed vertical lines with their label, and
  // the drag-to-zoom selection while the pointer is down.
  var markerPlugin = {
    id: "mpMarkers",
    afterDatasetsDraw: function (chart, _args, options) {
      var ctx = chart.ctx, area = chart.chartArea, x = chart.scales.x;
      ctx.save();
      var seen = {};
      (options.markers || []).forEach(function (m) {
        if (m.index == null) return;
        var px = x.getPixelForValue(m.index);
        var row = seen[m.index] = (seen[m.index] || 0) + 1;
        ctx.strokeStyle = markerColors[m.kind] || "#5d6b89";
        ctx.setLineDash([4, 3]);
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        ctx.moveTo(px, area.top);
        ctx.lineTo(px, area.bottom);
        ctx.stroke();
        ctx.setLineDash([]);
        ctx.fillStyle = ctx.strokeStyle;
        ctx.font = "11px sans-serif";
        var text = (m.kind === "rollback" ? "⟲ " : "▲ ") + "r" + m.revision;
        var right = px + ctx.measureText(text).width + 6 > area.right;
        ctx.textAlign = right ? "right" : "left";
        ctx.fillText(text, right ? px - 3 : px + 3, area.top + 10 + 12 * (row - 1));
      });
      var b = chart.$brush;
      if (b && Math.abs(b.x1 - b.x0) > 2) {
        ctx.fillStyle = "rgba(1,114,173,0.15)";
        ctx.fillRect(Math.min(b.x0, b.x1), area.top, Math.abs(b.x1 - b.x0),
                     area.bottom - area.top);
      }
      ctx.restore();
    }
  };

  function zoomTo(s, i0, i1) {
    var lo = Math.max(0, Math.min(i0, i1)), hi = Math.min(s.timestamps.length - 1,
                                                        Math.max(i0, i1));
    var start = new Date(Date.parse(s.timestamps[lo]));
    var end = new Date(Date.parse(s.timestamps[hi]) + s.step * 1000);
    if (end - start < 10 * 60 * 1000) end = new Date(start.getTime() + 10 * 60 * 1000);
    var url = new URL(window.location.href);
    url.searchParams.delete("range");
    url.searchParams.set("start", start.toISOString().slice(0, 16) + "Z");
    url.searchParams.set("end", end.toISOString().slice(0, 16) + "Z");
    window.location.assign(url.toString());
  }

  // Drag across a time chart: the selected steps become the page's range (in the URL).
  function brush(chart, s) {
    var canvas = chart.canvas;
    canvas.addEventListener("pointerdown", function (e) {
      if (e.button !== 0) return;
      chart.$brush = {x0: e.offsetX, x1: e.offsetX};
    });
    canvas.addEventListener("pointermove", function (e) {
      if (!chart.$brush) return;
      chart.$brush.x1 = e.offsetX;
      chart.draw();
    });
    function end() {
      var b = chart.$brush;
      chart.$brush = null;
      if (!b) return;
      chart.draw();
      if (Math.abs(b.x1 - b.x0) < 8) return;
      var x = chart.scales.x;
      zoomTo(s, Math.round(x.getValueForPixel(b.x0)), Math.round(x.getValueForPixel(b.x1)));
    }
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointerleave", function () {
      if (chart.$brush) { chart.$brush = null; chart.draw(); }
    });
  }

  function draw(root) {
    if (!window.Chart) return;
    (root || document).querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var source = document.getElementById(canvas.dataset.source);
      if (!source) return;
      var data = JSON.parse(source.textContent);
      var config = builders[canvas.dataset.chart](data, canvas);
      if (!config) {
        var empty = document.createElement("p");
        empty.className = "empty";
        empty.textContent = canvas.dataset.empty || "No data in this range.";
        canvas.parentElement.replaceChildren(empty);
        return;
      }
      var timed = TIME_CHARTS[canvas.dataset.chart] && data.timestamps;
      if (timed) {
        config.options.plugins = Object.assign({}, config.options.plugins, {mpMarkers: {
          markers: (data.markers || []).map(function (m) {
            return Object.assign({index: stepIndex(data, m.at)}, m);
          })}});
        config.plugins = [markerPlugin];
      }
      var chart = new window.Chart(canvas, config);
      if (timed) brush(chart, data);
    });
  }

  // Auto-refresh: re-read this page (its JSON and totals) and swap the chart columns in.
  var refreshing = false;
  function refresh() {
    var columns = document.querySelector(".monitor-columns");
    if (!columns || refreshing) return Promise.resolve(false);
    refreshing = true;
    var status = document.getElementById("refresh-status");
    return fetch(window.location.href, {credentials: "same-origin",
                                        headers: {"Accept": "text/html"}})
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html")
          .querySelector(".monitor-columns");
        if (!fresh) throw new Error("no charts in the page");
        columns.querySelectorAll("canvas[data-chart]").forEach(function (c) {
          var old = window.Chart.getChart(c);
          if (old) old.destroy();
        });
        var node = document.importNode(fresh, true);
        columns.replaceWith(node);
        draw(node);
        if (status) status.textContent = "Updated " + new Date().toISOString().slice(11, 19) +
          " UTC";
        return true;
      })
      .catch(function (err) {
        if (status) status.textContent = "Refresh failed (" + err.message + "); retrying.";
        return false;
      })
      .finally(function () { refreshing = false; });
  }

  function autoRefresh() {
    var toggle = document.getElementById("auto-refresh");
    if (!toggle) return;
    var seconds = Number(document.getElementById("refresh-bar").dataset.interval || 30);
    window.setInterval(function () {
      if (toggle.checked && !document.hidden) refresh();
    }, seconds * 1000);
    toggle.addEventListener("change", function () {
      var status = document.getElementById("refresh-status");
      if (status) status.textContent = toggle.checked ? "Auto-refresh on" : "Paused";
    });
  }

  window.mpCharts = {refresh: refresh};
  function start() { draw(); autoRefresh(); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
