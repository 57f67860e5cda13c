/* The status page's refresh (GET /, served from /static/status.js).
 *
 * Every 2 s it reads /v1/status/live and redraws. The server formats every text: the JSON's
 * "display" maps an element id to its text (versions, mode, traffic split, rollout, latest
 * values), so this script only places those texts and draws the sparklines from the per-second
 * series in "variants". The first drawing uses the JSON the page was rendered with (#initial).
 */
(function () {
  "use strict";
  var W = 600, H = 120, PAD = 6, VARIANTS = ["champion", "challenger", "shadow"];
  var SERIES = { rps: "rps", p99: "p99_ms" };

  function text(id, value) {
    var el = document.getElementById(id);
    if (el) { el.textContent = value; }
  }

  function draw(metric, data) {
    var svg = document.getElementById("chart-" + metric);
    if (!svg) { return; }
    var key = SERIES[metric], variants = data.variants || {}, max = 0;
    VARIANTS.forEach(function (v) {
      var s = variants[v];
      if (!s) { return; }
      s[key].forEach(function (x) { if (x !== null && x > max) { max = x; } });
    });
    max = max > 0 ? max * 1.1 : 1;
    VARIANTS.forEach(function (v) {
      var line = svg.querySelector('polyline[data-variant="' + v + '"]');
      var s = variants[v];
      if (!line) { return; }
      if (!s) { line.setAttribute("points", ""); return; }
      var values = s[key], n = values.length, step = W / Math.max(n - 1, 1), pts = [];
      for (var i = 0; i < n; i++) {
        var x = values[i];
        if (x === null) { continue; }
        pts.push((i * step).toFixed(1) + "," + (H - PAD - (x / max) * (H - 2 * PAD)).toFixed(1));
      }
      line.setAttribute("points", pts.join(" "));
    });
  }

  function show(data) {
    var display = data.display || {};
    text("pid", data.pid);
    Object.keys(display).forEach(function (id) { text(id, display[id]); });
    draw("rps", data);
    draw("p99", data);
    document.body.setAttribute("data-refreshed", String(data.ts));
  }

  function refresh() {
    fetch("/v1/status/live", { cache: "no-store" })
      .then(function (resp) { return resp.json(); })
      .then(show)
      .catch(function () {});
  }

  show(JSON.parse(document.getElementById("initial").textContent));
  setInterval(refresh, 2000);
})();
