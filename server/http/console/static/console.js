// closedloop console: draws the charts (uPlot) and refreshes the live sections. The page works
// without this file; it only adds the charts and the refresh. Data come from <script
// type="application/json"> blocks and from the page's live JSON; HTML sections in that JSON are
// rendered (and escaped) by the server's templates.
"use strict";

const PALETTE = ["#1f5fa8", "#c2410c", "#15803d", "#7e22ce", "#b91c1c", "#0e7490", "#a16207"];
const POLL_MS = 2000;

function drawChart(box) {
  const source = document.getElementById(box.dataset.chart + "-data");
  if (!source || typeof uPlot === "undefined") return;
  const data = JSON.parse(source.textContent);
  const byVersion = data.x_label === "version";
  const series = [{label: byVersion ? "version" : "time"}];
  data.series.forEach((s, i) => {
    const colour = PALETTE[i % PALETTE.length];
    series.push(s.points_only
      ? {label: s.label, stroke: colour, width: 0, points: {show: true, size: 12, fill: colour}}
      : {label: s.label, stroke: colour, width: 2, points: {show: true, size: 6}, spanGaps: true});
  });
  const options = {
    width: Math.max(320, Math.min(box.clientWidth || 800, 1100)), height: 240, series: series,
    scales: {x: {time: !byVersion}},
    axes: [{label: byVersion ? "version" : undefined, incrs: byVersion ? [1, 2, 5, 10] : undefined}, {}],
  };
  new uPlot(options, [data.x, ...data.series.map((s) => s.values)], box);
}

async function refresh(url, status) {
  try {
    const reply = await fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}});
    if (!reply.ok) {
      status.textContent = "Live refresh stopped: the server answered " + reply.status;
      return false;
    }
    const body = await reply.json();
    for (const [name, html] of Object.entries(body.sections || {})) {
      const target = document.querySelector('[data-live-section="' + name + '"]');
      if (target && target.innerHTML !== html) target.innerHTML = html;
    }
    status.textContent = "Live: updated " + new Date().toLocaleTimeString();
  } catch (err) {
    status.textContent = "Live refresh paused: " + err.message;
  }
  return true;
}

function startLive() {
  const url = document.body.dataset.liveUrl;
  const status = document.querySelector("[data-live-status]");
  if (!url || !status) return;
  const tick = async () => {
    if (await refresh(url, status)) setTimeout(tick, POLL_MS);
  };
  setTimeout(tick, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-chart]").forEach(drawChart);
  startLive();
});
