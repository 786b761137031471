// Compliance page: share of masked faces per node per hour over the last 24 hours (an SVG chart drawn here),
// and a per-node summary.
import { api, el, frame, nodeKey, pct, stream, throttle } from "./mw.js";

frame("Compliance");
const HOURS = 24;
const COLORS = ["#4ea1ff", "#f2b134", "#5fd08c", "#c77dff", "#ff7b72", "#39c5cf", "#e6edf3", "#d29922"];
const SVG = "http://www.w3.org/2000/svg";
const main = document.getElementById("main");
const overall = el("div", { class: "figure", id: "overall" }, "–");
const overallNote = el("div", { class: "muted" });
const chart = el("div", { class: "chart", id: "chart" });
const legend = el("div", { class: "legend" });
const tbody = el("tbody");
main.append(
  el("h2", {}, "Last 24 hours"),
  el("div", { class: "grid" }, el("div", { class: "card" }, el("div", { class: "muted" }, "Faces wearing a mask"),
    overall, overallNote)),
  el("h2", {}, "Share of masked faces per node per hour"),
  el("div", { class: "card" }, chart, legend),
  el("h2", {}, "Per node"),
  el("div", { class: "card table-wrap" }, el("table", { id: "summary" }, el("thead", {}, el("tr", {},
    ["Node", "Faces", "Wearing mask", "Not wearing mask", "Compliance"].map((h, i) =>
      el("th", { class: i ? "num" : null }, h)))), tbody)));

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The starts of the last 24 UTC hours (the hub counts by UTC hour), the current hour last. */
function hours() {
  const end = new Date();
  end.setUTCMinutes(0, 0, 0);
  end.setTime(end.getTime() + 3600e3);
  return Array.from({ length: HOURS }, (_, i) => new Date(end.getTime() - (HOURS - i) * 3600e3));
}

/** series: node key -> array (one per hour) of {mask, no_mask, compliance} or null; one /api/stats call. */
async function load() {
  const windows = hours();
  const index = new Map(windows.map((start, i) => [start.getTime(), i]));
  const { body: day } = await api(`api/stats?${new URLSearchParams({ since: windows[0].toISOString() })}`);
  const series = new Map();
  for (const entry of day.per_node) series.set(nodeKey(entry.site, entry.node), new Array(HOURS).fill(null));
  for (const entry of day.per_node_hour) {
    const i = index.get(new Date(entry.hour).getTime());
    const key = nodeKey(entry.site, entry.node);
    if (i !== undefined && series.has(key)) series.get(key)[i] = entry;
  }
  return { windows, series, day };
}

function drawChart(windows, series) {
  const W = 960, H = 320, L = 48, R = 12, T = 12, B = 30;
  const x = (i) => L + (i + 0.5) * (W - L - R) / HOURS;
  const y = (share) => T + (1 - share) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "compliance per node per hour" });
  for (const share of [0, 0.25, 0.5, 0.75, 1]) {
    root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: y(share), y2: y(share) }));
    root.append(svg("text", { class: "tick", x: L - 6, y: y(share) + 4, "text-anchor": "end" }, `${share * 100}%`));
  }
  windows.forEach((start, i) => {
    if (i % 3 === 0 || i === HOURS - 1) {
      root.append(svg("text", { class: "tick", x: x(i), y: H - 8, "text-anchor": "middle" },
        `${String(start.getHours()).padStart(2, "0")}:00`));
    }
  });
  legend.replaceChildren();
  [...series.keys()].sort().forEach((key, n) => {
    const color = COLORS[n % COLORS.length];
    legend.append(el("span", { style: `--c:${color}` }, key));
    const points = series.get(key);
    let path = "";
    let pen = false;
    points.forEach((p, i) => {
      if (!p || p.compliance === null) { pen = false; return; }
      path += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(p.compliance).toFixed(1)}`;
      pen = true;
    });
    if (path) root.append(svg("path", { d: path, fill: "none", stroke: color, "stroke-width": 2.5, "data-node": key }));
    points.forEach((p, i) => {
      if (!p || p.compliance === null) return;
      const dot = svg("circle", { cx: x(i), cy: y(p.compliance), r: 4, fill: color, "data-node": key });
      dot.append(svg("title", {}, `${key} ${windows[i].toLocaleString()}: ${pct(p.compliance)} of ${p.mask + p.no_mask} faces`));
      root.append(dot);
    });
  });
  if (!series.size) root.append(svg("text", { class: "tick", x: W / 2, y: H / 2, "text-anchor": "middle" }, "No faces in the last 24 hours"));
  chart.replaceChildren(root);
}

function drawSummary(day) {
  overall.textContent = pct(day.compliance);
  overallNote.textContent = `${day.faces} faces: ${day.mask} wearing a mask, ${day.no_mask} not`;
  tbody.replaceChildren(...(day.per_node.length ? day.per_node.map((n) => el("tr", { dataset: { node: nodeKey(n.site, n.node) } },
    el("td", {}, n.node, el("span", { class: "muted" }, ` · ${n.site}`)), el("td", { class: "num" }, n.mask + n.no_mask),
    el("td", { class: "num" }, n.mask), el("td", { class: "num" }, n.no_mask), el("td", { class: "num" }, pct(n.compliance))))
    : [el("tr", {}, el("td", { colspan: 5, class: "empty" }, "No faces yet"))]));
}

async function refresh() {
  const { windows, series, day } = await load();
  drawChart(windows, series);
  drawSummary(day);
}

const soon = throttle(() => refresh().catch(console.error), 10000);
refresh().then(() => stream({ event: soon })).catch((error) => chart.replaceChildren(el("div", { class: "empty" }, `Cannot reach the hub: ${error.message}`)));
setInterval(soon, 60000);
