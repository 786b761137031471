// Maskwatch dashboard: what every page shares (API calls with the optional token, the live stream,
// the page header, small DOM and formatting helpers). Plain ES module, no build step.

const TOKEN_KEY = "maskwatch.token";
export const LABEL_TEXT = { mask: "wearing mask", no_mask: "not wearing mask" };
export const PAGES = [
  ["index.html", "Live"], ["events.html", "Events"], ["compliance.html", "Compliance"], ["control.html", "Control"],
];

export function token() { return localStorage.getItem(TOKEN_KEY) || ""; }

function authHeaders() { return token() ? { Authorization: `Bearer ${token()}` } : {}; }

/** GET/POST JSON from the hub; asks for a token on 401. Returns {status, body}. */
export async function api(path, { method = "GET", body } = {}) {
  const init = { method, headers: { ...authHeaders() } };
  if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const response = await fetch(path, init);
  if (response.status === 401) { askToken(); throw new Error("authentication required"); }
  const text = await response.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = text; }
  if (!response.ok && response.status !== 502 && response.status !== 504) {
    const detail = parsed && parsed.detail ? parsed.detail : text;
    throw new Error(`${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return { status: response.status, body: parsed };
}

/** An object URL of the image at ``url`` (fetched with the token), or null if it is not there (yet). */
export async function imageUrl(url) {
  const response = await fetch(url, { headers: authHeaders() }).catch(() => null);
  return response && response.ok ? URL.createObjectURL(await response.blob()) : null;
}

/** Show an image that may need the token (a plain link without one). */
export async function setImage(img, url) {
  if (!token()) { img.src = url; return; }
  const objectUrl = await imageUrl(url);
  if (objectUrl) img.src = objectUrl;
}

/** Download ``url`` as ``filename`` (fetch with the token when one is set). */
export async function download(url, filename) {
  const response = await fetch(url, { headers: authHeaders() });
  if (!response.ok) throw new Error(`download failed: ${response.status}`);
  const a = el("a", { href: URL.createObjectURL(await response.blob()), download: filename });
  document.body.append(a); a.click(); a.remove();
}

/** Follow the hub's Server-Sent Events; ``handlers`` maps kind (event, node, alert) to a function. */
export function stream(handlers) {
  const link = document.getElementById("link");
  const url = "api/stream" + (token() ? `?access_token=${encodeURIComponent(token())}` : "");
  const source = new EventSource(url);
  const show = (state, text) => { if (link) { link.dataset.state = state; link.querySelector("span").textContent = text; } };
  source.onopen = () => { show("live", "live"); (handlers.open || (() => {}))(); };
  source.onerror = () => show("lost", source.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting…");
  for (const [kind, fn] of Object.entries(handlers)) {
    if (kind === "open") continue;
    source.addEventListener(kind, (message) => {
      try { fn(JSON.parse(message.data)); } catch (error) { console.error("stream handler", kind, error); }
    });
  }
  return source;
}

/** Create an element: el("a", {href: "x", class: "y"}, "text", child...). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function badge(label) {
  return el("span", { class: `badge ${label}`, dataset: { label } }, LABEL_TEXT[label] || label);
}

export function nodeKey(site, node) { return `${site}/${node}`; }

/** The event's snapshot, relative to the dashboard (the API's absolute link names the hub's configured
 * public URL, which a phone on the network may not reach), or null. */
export function snapshotPath(event) {
  return event.snapshot_url ? `api/events/${encodeURIComponent(event.id)}/snapshot.jpg` : null;
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  const sameDay = date.toDateString() === new Date().toDateString();
  return sameDay ? date.toLocaleTimeString() : date.toLocaleString();
}

/** A length of time in words: "42 s", "5 min", "3 h", "20000 d". */
export function span(seconds) {
  const s = Math.abs(seconds);
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86400) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

export function ago(iso) {
  if (!iso) return "never";
  return `${span(Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000))} ago`;
}

/** The mark of a node whose clock is off the hub's: "clock off by 3 h (ahead)". */
export function clockOff(offsetS) {
  return `clock off by ${span(offsetS)} (${offsetS > 0 ? "ahead" : "behind"})`;
}

export function pct(share) { return share === null || share === undefined ? "–" : `${(share * 100).toFixed(1)} %`; }

export function num(value, digits = 1) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

/** Run ``fn`` at most once per ``ms`` (trailing call kept). */
export function throttle(fn, ms) {
  let timer = null; let pending = false;
  return () => {
    if (timer) { pending = true; return; }
    fn();
    timer = setTimeout(function tick() {
      timer = null;
      if (pending) { pending = false; fn(); timer = setTimeout(tick, ms); }
    }, ms);
  };
}

function askToken() {
  const dialog = document.getElementById("token-dialog");
  if (dialog) dialog.classList.add("open");
}

/** Build the shared header (title, navigation, stream state) and the token dialog. */
export function frame(current) {
  const here = location.pathname.split("/").pop() || "index.html";
  const nav = el("nav", {}, PAGES.map(([href, text]) =>
    el("a", { href, "aria-current": href === here || text === current ? "page" : null }, text)));
  const header = el("header", {},
    el("h1", {}, "Maskwatch ", el("span", {}, "site")), nav,
    el("div", { id: "link", dataset: { state: "connecting" } }, el("i", { class: "dot" }), el("span", {}, "connecting…")));
  document.body.prepend(header);
  const input = el("input", { type: "password", name: "token", placeholder: "API token", autocomplete: "off" });
  const dialog = el("div", { id: "token-dialog" },
    el("form", {
      onsubmit: (e) => { e.preventDefault(); localStorage.setItem(TOKEN_KEY, input.value.trim()); location.reload(); },
    }, el("strong", {}, "This hub needs an API token"), input, el("button", { class: "primary" }, "Use token")));
  document.body.append(dialog);
  const style = document.createElement("style");
  style.textContent = `#link[data-state="live"] .dot{background:var(--ok)}#link[data-state="lost"] .dot{background:var(--no-mask)}`;
  document.head.append(style);
}
