// Control page: per node a servo slider, sweep/track/hold/off, threshold, detect on/off and "take snapshot",
// each showing the node's answer; site-wide buttons for every node of a site.
import { api, el, frame, imageUrl, nodeKey, num, stream, throttle } from "./mw.js";

frame("Control");
// the contract's words come from the hub (GET /api/vocabulary), never copied here
const VOCABULARY = (await api("api/vocabulary")).body;
const [LOWEST, HIGHEST] = VOCABULARY.probability_range;
const main = document.getElementById("main");
const siteArea = el("div", { class: "grid", id: "sites" });
const nodeArea = el("div", { class: "grid", id: "controls" }, el("div", { class: "empty" }, "Waiting for nodes…"));
main.append(el("h2", {}, "Every node of a site"), siteArea, el("h2", {}, "Nodes"), nodeArea);

const panels = new Map();   // key -> {card, update(node)}
const sites = new Set();

function describe(result) {
  if (result.status === "timeout") return `${result.node}: no answer in time`;
  if (result.status === "error") return `${result.node}: error: ${result.error}`;
  const value = result.value;
  let text = "ok";
  if (value && typeof value === "object") {
    const parts = [];
    if ("angle" in value) parts.push(value.angle === null ? "detached" : `angle ${num(value.angle, 0)}°`);
    if ("mode" in value) parts.push(`mode ${value.mode}`);
    if ("value" in value) parts.push(`threshold ${value.value}`);
    if ("threshold" in value) parts.push(`threshold ${value.threshold}`);
    if ("enabled" in value) parts.push(value.enabled ? "detection on" : "detection paused");
    if ("detect" in value) parts.push(value.detect ? "detection on" : "detection paused");
    if ("bytes" in value) parts.push(`${value.width}×${value.height} JPEG, ${Math.round(value.bytes / 1024)} KiB`);
    if (value.clamped) parts.push("(clamped)");
    if (parts.length) text += `: ${parts.join(", ")}`;
  } else if (value !== null && value !== undefined) {
    text += `: ${value}`;
  }
  return `${result.node}: ${text}`;
}

/** POST a command; show every node's answer in ``out``; return the results. */
async function send(site, node, name, params, out) {
  out.className = "answer pending";
  out.textContent = `${name}: sent, waiting for the answer…`;
  try {
    const { body } = await api(`api/nodes/${site}/${node}/commands/${name}`, { method: "POST", body: params });
    const worst = body.results.find((r) => r.status !== "ok") || body.results[0] || { status: "ok" };
    out.className = `answer ${worst.status}`;
    out.dataset.status = worst.status;
    out.textContent = `${name} ${body.results.map(describe).join("; ") || "sent (no node answered)"}`;
    return body;
  } catch (error) {
    out.className = "answer error";
    out.dataset.status = "error";
    out.textContent = `${name}: ${error.message}`;
    return null;
  }
}

/** After an ok snapshot answer, the JPEG arrives on its own topic: poll briefly for it. */
async function showSnapshot(requestId, img) {
  for (let attempt = 0; attempt < 20; attempt += 1) {
    const objectUrl = await imageUrl(`api/events/${requestId}/snapshot.jpg`);
    if (objectUrl) { img.src = objectUrl; img.hidden = false; return; }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

function modeButtons(site, node, out, onAnswer) {
  return VOCABULARY.servo_modes.map((mode) => el("button", {
    dataset: { mode },
    onclick: async (e) => { e.target.disabled = true; onAnswer(await send(site, node, "servo", { mode }, out)); e.target.disabled = false; },
  }, mode));
}

function thresholdControls(site, node, out, onAnswer) {
  const input = el("input", { type: "number", min: LOWEST, max: HIGHEST, step: 0.01, value: 0.5, name: "threshold", style: "width:6rem" });
  const button = el("button", {
    onclick: async () => onAnswer(await send(site, node, "threshold", { value: Number(input.value) }, out)),
  }, "Set");
  return { input, row: [input, button] };
}

function detectButtons(site, node, out, onAnswer) {
  return [true, false].map((enabled) => el("button", {
    dataset: { detect: String(enabled) },
    onclick: async () => onAnswer(await send(site, node, "detect", { enabled }, out)),
  }, enabled ? "detect on" : "detect off"));
}

/** One labelled line of controls. */
function line(label, ...controls) {
  return el("div", { class: "row" }, el("span", { class: "label" }, label), el("div", { class: "controls" }, controls));
}

function nodePanel(node) {
  const { site } = node;
  const key = nodeKey(site, node.node);
  const out = el("div", { class: "answer", role: "status" });
  const refresh = () => reloadNodes();
  const [widest, farthest] = VOCABULARY.servo_range_deg;  // until the node's state gives its own limits
  const slider = el("input", { type: "range", name: "angle", min: widest, max: farthest, step: 1, value: 0 });
  const target = el("output", {}, "0°");
  const current = el("strong", { dataset: { field: "angle" } }, "–");
  const mode = el("strong", { dataset: { field: "mode" } }, "–");
  const dot = el("i", { class: "dot" });
  const statusText = el("span", { class: "status-text" });
  const threshold = thresholdControls(site, node.node, out, refresh);
  const snapImg = el("img", { class: "snap", alt: `snapshot from ${key}`, hidden: true });
  slider.addEventListener("input", () => { target.textContent = `${slider.value}°`; });
  slider.addEventListener("change", async () => { await send(site, node.node, "servo", { angle: Number(slider.value) }, out); refresh(); });
  const card = el("article", { class: "card", dataset: { node: key } },
    el("h3", {}, dot, node.node, statusText),
    line("Servo now", current, el("span", { class: "muted" }, "mode"), mode),
    line("Angle", slider, target),
    line("Mode", modeButtons(site, node.node, out, refresh)),
    line("Threshold", threshold.row),
    line("Detection", detectButtons(site, node.node, out, refresh)),
    line("Snapshot", el("button", {
      onclick: async () => {
        const body = await send(site, node.node, "snapshot", {}, out);
        const ok = body && body.results.find((r) => r.status === "ok");
        // the JPEG comes on .../snapshot/<id>: the answer names the topic (else the id is the request id)
        const id = ok && ok.value && ok.value.topic ? ok.value.topic.split("/").pop() : body && body.request_id;
        if (ok) await showSnapshot(id, snapImg);
      },
    }, "take snapshot")),
    out, snapImg);
  let initialised = false;
  function update(fresh) {
    const servo = (fresh.state || {}).servo || {};
    card.dataset.status = fresh.status;
    dot.className = `dot ${fresh.status}`;
    statusText.textContent = `${site} · ${fresh.status}`;
    current.textContent = servo.angle === null || servo.angle === undefined ? "detached" : `${num(servo.angle, 0)}°`;
    mode.textContent = servo.mode || "–";
    if (servo.min_deg !== undefined) { slider.min = servo.min_deg; slider.max = servo.max_deg; }
    if (!initialised && fresh.state) {
      initialised = true;
      if (servo.angle !== null && servo.angle !== undefined) { slider.value = servo.angle; target.textContent = `${num(servo.angle, 0)}°`; }
      threshold.input.value = fresh.state.threshold;
    }
    for (const button of card.querySelectorAll("button[data-mode]")) {
      button.classList.toggle("primary", button.dataset.mode === servo.mode);
    }
  }
  update(node);
  return { card, update };
}

function sitePanel(site) {
  const out = el("div", { class: "answer", role: "status" });
  const threshold = thresholdControls(site, "all", out, () => reloadNodes());
  return el("article", { class: "card", dataset: { site } },
    el("h3", {}, `Site ${site}`, el("span", { class: "status-text" }, "every online node")),
    line("Mode", modeButtons(site, "all", out, () => reloadNodes())),
    line("Threshold", threshold.row),
    line("Detection", detectButtons(site, "all", out, () => reloadNodes())),
    line("Snapshot", el("button", { onclick: () => send(site, "all", "snapshot", {}, out) }, "every node")),
    out);
}

async function loadNodes() {
  const { body } = await api("api/nodes");
  if (body.length && !panels.size) nodeArea.replaceChildren();
  for (const node of body.sort((a, b) => nodeKey(a.site, a.node).localeCompare(nodeKey(b.site, b.node)))) {
    const key = nodeKey(node.site, node.node);
    if (!panels.has(key)) { panels.set(key, nodePanel(node)); nodeArea.append(panels.get(key).card); }
    panels.get(key).update(node);
    if (!sites.has(node.site)) { sites.add(node.site); siteArea.append(sitePanel(node.site)); }
  }
}

const reloadNodes = throttle(() => loadNodes().catch(console.error), 700);
loadNodes().then(() => stream({ node: reloadNodes, open: reloadNodes }))
  .catch((error) => nodeArea.replaceChildren(el("div", { class: "empty" }, `Cannot reach the hub: ${error.message}`)));
setInterval(reloadNodes, 10000);
