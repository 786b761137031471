// Events page: filter (node, label, time range), paginate, snapshot thumbnails, CSV export of the same filters.
import {
  api, badge, download, el, fmtTime, frame, nodeKey, num, setImage, snapshotPath, stream, throttle, token,
} from "./mw.js";

frame("Events");
const PAGE = 50;
const main = document.getElementById("main");
const nodeSelect = el("select", { name: "node" }, el("option", { value: "" }, "every node"));
const labelSelect = el("select", { name: "label" },
  el("option", { value: "" }, "both"), el("option", { value: "mask" }, "wearing mask"),
  el("option", { value: "no_mask" }, "not wearing mask"));
const since = el("input", { type: "datetime-local", name: "since" });
const until = el("input", { type: "datetime-local", name: "until" });
const csv = el("a", { href: "api/events.csv", id: "csv", download: "events.csv", class: "button" }, "Export CSV");
const form = el("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); offset = 0; load(); } },
  el("label", {}, "Node", nodeSelect), el("label", {}, "Label", labelSelect),
  el("label", {}, "From", since), el("label", {}, "To", until),
  el("button", { class: "primary", type: "submit" }, "Filter"),
  el("button", { type: "button", onclick: () => { form.reset(); offset = 0; load(); } }, "Clear"), csv);
const tbody = el("tbody");
const summary = el("span", { class: "muted", id: "total" });
const prev = el("button", { onclick: () => { offset = Math.max(0, offset - PAGE); load(); } }, "‹ Newer");
const next = el("button", { onclick: () => { offset += PAGE; load(); } }, "Older ›");
main.append(el("h2", {}, "Events"), form,
  el("div", { class: "card table-wrap" }, el("table", { id: "events" },
    el("thead", {}, el("tr", {}, ["", "Label", "Node", "First seen", "Last seen", "Duration", "Score", "Face",
      "Angle", "State"].map((h, i) => el("th", { class: i >= 5 && i <= 8 ? "num" : null,
      title: h === "Face" ? "face verification: how sure the classifier is that this is a face at all" : null },
    h)))), tbody),
  el("div", { class: "pager" }, prev, next, summary)));

let offset = 0;

function filters() {
  const query = new URLSearchParams();
  const [site, node] = nodeSelect.value ? nodeSelect.value.split("/") : [];
  if (site) { query.set("site", site); query.set("node", node); }
  if (labelSelect.value) query.set("label", labelSelect.value);
  if (since.value) query.set("since", new Date(since.value).toISOString());
  if (until.value) query.set("until", new Date(until.value).toISOString());
  return query;
}

function duration(event) {
  const s = (new Date(event.last_seen) - new Date(event.first_seen)) / 1000;
  return s < 60 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`;
}

function row(event) {
  const thumb = el("td");
  const snap = snapshotPath(event);
  if (snap) {
    const img = el("img", { alt: "snapshot", loading: "lazy" });
    setImage(img, snap);
    thumb.append(el("a", { href: snap, target: "_blank" }, img));
  }
  return el("tr", { dataset: { id: event.id } }, thumb, el("td", {}, badge(event.label)),
    el("td", {}, event.node, el("span", { class: "muted" }, ` · ${event.site}`)),
    el("td", {}, fmtTime(event.first_seen), ...(event.clock_skewed ? [" ", el("span",
      { class: "clock-skewed", title: `node's clock; the hub received it ${event.received_at}` }, "clock off")] : [])),
    el("td", {}, fmtTime(event.last_seen)),
    el("td", { class: "num" }, duration(event)), el("td", { class: "num" }, num(event.best_score, 2)),
    el("td", { class: "num face" }, num(event.face_score, 2)),
    el("td", { class: "num" }, event.angle === null ? "–" : `${num(event.angle, 0)}°`), el("td", {}, event.state));
}

async function load() {
  const query = filters();
  csv.href = `api/events.csv${query.toString() ? `?${query}` : ""}`;
  query.set("limit", String(PAGE));
  query.set("offset", String(offset));
  const { body } = await api(`api/events?${query}`);
  tbody.replaceChildren(...(body.items.length ? body.items.map(row)
    : [el("tr", {}, el("td", { colspan: 10, class: "empty" }, "No events match"))]));
  const last = offset + body.items.length;
  summary.textContent = body.total ? `${offset + 1}–${last} of ${body.total}` : "0 events";
  prev.disabled = offset === 0;
  next.disabled = body.next_offset === null;
}

async function loadNodes() {
  const { body } = await api("api/nodes");
  const chosen = nodeSelect.value;
  nodeSelect.replaceChildren(el("option", { value: "" }, "every node"),
    ...body.map((n) => el("option", { value: nodeKey(n.site, n.node) }, nodeKey(n.site, n.node))));
  nodeSelect.value = chosen;
}

csv.addEventListener("click", (e) => {
  if (!token()) return;            // a plain link works without a token
  e.preventDefault();
  download(csv.href, "events.csv").catch((error) => alert(error.message));
});

const refresh = throttle(() => { if (offset === 0) load().catch(console.error); }, 2000);
loadNodes().then(load).then(() => stream({ event: refresh }))
  .catch((error) => tbody.replaceChildren(el("tr", {}, el("td", { colspan: 10 }, `Cannot reach the hub: ${error.message}`))));
