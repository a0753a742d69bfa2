/* Monitoring charts: reads the JSON embedded by the page (json_script) and draws Chart.js charts.
   Every chart container is <canvas data-chart="KIND" data-source="ELEMENT-ID">. */
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
  function line(name, data, i, extra) {
    return Object.assign({label: name, data: data, borderColor: palette[i % palette.length],
      backgroundColor: palette[i % palette.length], spanGaps: true, pointRadius: 0,
      borderWidth: 2, tension: 0.2}, extra || {});
  }
  function opts(yTitle, more) {
    return Object.assign({responsive: true, maintainAspectRatio: false, animation: false,
      interaction: {mode: "index", intersect: false},
      plugins: {legend: {position: "bottom"}},
      scales: {x: {ticks: {maxTicksLimit: 8}}, y: {beginAtZero: true,
        title: {display: !!yTitle, text: yTitle}}}}, more || {});
  }
  var builders = {
    requests: function (s) {
      return {type: "line", data: {labels: s.timestamps.map(label),
        datasets: [line("requests/min", s.requests_per_min, 0, {fill: true,
          backgroundColor: "rgba(1,114,173,0.15)"})]}, options: opts("req/min")};
    },
    errors: function (s) {
      return {type: "line", data: {labels: s.timestamps.map(label),
        datasets: [line("error rate %", s.error_rate, 1)]}, options: opts("%")};
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
        line("p99", s.latency_p99, 1)]}, options: opts("ms")};
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
  function draw() {
    if (!window.Chart) return;
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var source = document.getElementById(canvas.dataset.source);
      if (!source) return;
      var config = builders[canvas.dataset.chart](JSON.parse(source.textContent), canvas);
      if (!config) {
        var empty = document.createElement("p");
        empty.className = "empty";
        empty.textContent = canvas.dataset.empty || "No data in this range.";
        canvas.parentElement.replaceChildren(empty);
        return;
      }
      new window.Chart(canvas, config);
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
