// Live page: one card per node (status, fps, servo, threshold, schedule, model, last event, latest snapshot) and the live event feed.
import {
  ago, api, badge, clockOff, el, fmtTime, frame, nodeKey, num, setImage, snapshotPath, stream, throttle,
} from "./mw.js";

frame("Live");
const FEED_MAX = 50;
const main = document.getElementById("main");
const cards = el("div", { class: "grid", id: "nodes" }, el("div", { class: "empty" }, "Waiting for nodes…"));
const feed = el("ul", { class: "feed", id: "feed" });
main.append(el("div", { class: "layout-live" },
  el("section", {}, el("h2", {}, "Nodes"), cards),
  el("section", {}, el("h2", {}, "Live events"), el("div", { class: "card" }, feed,
    el("div", { class: "empty", id: "feed-empty" }, "No events yet")))));

const nodes = new Map();        // key -> node json
const latest = new Map();       // key -> newest event json
const snapshots = new Map();    // key -> newest snapshot url

function field(name, value) { return [el("dt", {}, name), el("dd", { dataset: { field: name } }, value)]; }

// The node's schedule state: "detecting · open · alerts on, until 18:00" (absent: no schedule).
function scheduleText(schedule) {
  if (!schedule) return "none";
  const parts = [schedule.detect ? "detecting" : "not detecting", schedule.parked ? "parked" : "open",
    schedule.quiet ? "quiet hours" : "alerts on"];
  const until = schedule.next_change ? `, until ${new Date(schedule.next_change).toLocaleString()}` : "";
  return parts.join(" · ") + until;
}

function renderCard(node) {
  const key = nodeKey(node.site, node.node);
  const state = node.state || {};
  const servo = state.servo || {};
  const stats = node.stats || {};
  const last = latest.get(key);
  const cameraDown = node.camera_ok === false;
  const card = el("article", { class: cameraDown ? "card camera-down" : "card",
    dataset: { node: key, status: node.status, camera: cameraDown ? "down" : "ok" } },
    el("h3", {}, el("i", { class: `dot ${node.status}` }), node.node,
      el("span", { class: "status-text" }, `${node.site} · ${node.status}`)),
    el("dl", {},
      ...(cameraDown ? field("camera", el("span", { class: "error" }, node.camera_error || "down")) : []),
      field("fps", num(stats.fps)),
      field("angle", servo.angle === null || servo.angle === undefined ? "detached" : `${num(servo.angle, 0)}°`),
      field("mode", servo.mode || "–"),
      field("threshold", state.threshold === undefined ? "–" : num(state.threshold, 2)),
      field("detect", state.detect === undefined ? "–" : state.detect ? "on" : "paused"),
      field("schedule", state.servo === undefined ? "–" : scheduleText(state.schedule)),
      field("outbox", stats.outbox_depth === undefined ? "–" : `${stats.outbox_depth} (${stats.outbox_unacked ?? 0} unacked`
        + `${stats.outbox_oldest_s == null ? "" : `, oldest ${num(stats.outbox_oldest_s, 0)} s`})`),
      ...(stats.delivery_error ? field("delivery", el("span", { class: "error" }, stats.delivery_error)) : []),
      field("model", state.model || "–"),
      ...(state.model_error ? field("model error", el("span", { class: "error" }, state.model_error)) : []),
      ...(node.clock_skewed && node.clock_offset_s != null
        ? field("clock", el("span", { class: "error" }, clockOff(node.clock_offset_s))) : []),
      field("last event", last ? el("span", {}, badge(last.label), " ", ago(last.received_at)) : "none"),
      field("seen", ago(node.last_seen))));
  const snap = snapshots.get(key);
  if (snap) {
    const img = el("img", { class: "snap", alt: `latest snapshot of ${key}` });
    setImage(img, snap);
    card.append(img);
  }
  return card;
}

function renderCards() {
  const list = [...nodes.values()].sort((a, b) => nodeKey(a.site, a.node).localeCompare(nodeKey(b.site, b.node)));
  cards.replaceChildren(...(list.length ? list.map(renderCard) : [el("div", { class: "empty" }, "No node has reported yet")]));
}

async function loadNodes() {
  const { body } = await api("api/nodes");
  nodes.clear();
  for (const node of body) nodes.set(nodeKey(node.site, node.node), node);
  renderCards();
}

async function loadNodeEvents(site, node) {
  const query = new URLSearchParams({ site, node, limit: "20" });
  const { body } = await api(`api/events?${query}`);
  const key = nodeKey(site, node);
  if (body.items.length) latest.set(key, body.items[0]);
  const withSnap = body.items.find((e) => e.snapshot_url);
  if (withSnap) snapshots.set(key, snapshotPath(withSnap));
}

function feedItem(event, fresh) {
  return el("li", { class: fresh ? "fresh" : null,
    dataset: { id: event.id, label: event.label, node: nodeKey(event.site, event.node) } },
    badge(event.label),
    el("span", {}, el("strong", {}, event.node),
      ...(event.clock_skewed ? [" ", el("span", { class: "clock-skewed", title: `node time ${event.last_seen}` },
        "clock off")] : []),
      el("div", { class: "muted meta" },
      `${event.site} · score ${num(event.score ?? event.best_score, 2)}` +
      `${event.face_score === null || event.face_score === undefined ? "" : ` · face ${num(event.face_score, 2)}`}` +
      ` · ${event.state}`)),
    el("time", { class: "muted", datetime: event.received_at, title: `node time ${event.last_seen}` },
      fmtTime(event.received_at)));
}

function showEvent(event, fresh = true) {
  document.getElementById("feed-empty")?.remove();
  const old = feed.querySelector(`li[data-id="${CSS.escape(event.id)}"]`);
  const item = feedItem(event, fresh);
  if (old) old.replaceWith(item); else feed.prepend(item);
  while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
}

const refreshers = new Map();
function refreshNodeSoon(site, node) {
  const key = nodeKey(site, node);
  if (!refreshers.has(key)) {
    refreshers.set(key, throttle(() => loadNodeEvents(site, node).then(renderCards).catch(console.error), 3000));
  }
  refreshers.get(key)();
}

const reloadNodes = throttle(() => loadNodes().catch(console.error), 1000);

/** The newest stored events (on start, and after the stream reconnects: what it missed). */
async function loadRecent() {
  const { body } = await api("api/events?limit=30");
  for (const event of [...body.items].reverse()) showEvent({ ...event, score: event.best_score }, false);
}

async function start() {
  await loadNodes();
  await loadRecent();
  await Promise.all([...nodes.values()].map((n) => loadNodeEvents(n.site, n.node).catch(console.error)));
  renderCards();
  stream({
    event: (event) => {
      showEvent(event);
      latest.set(nodeKey(event.site, event.node), event);
      refreshNodeSoon(event.site, event.node);
    },
    node: reloadNodes,
    open: () => { reloadNodes(); loadRecent().catch(console.error); },
  });
  setInterval(renderCards, 10000);   // keep "x s ago" honest
  setInterval(reloadNodes, 15000);   // stats arrive without a stream item
}

start().catch((error) => cards.replaceChildren(el("div", { class: "empty" }, `Cannot reach the hub: ${error.message}`)));
