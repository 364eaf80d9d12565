// The castnet dashboard: polls the node's read-only views and its job API, renders with DOM
// calls only (text, never HTML, from the network), and plays job output with hls.js.
"use strict";

const POLL_MS = 2000;
const AUDIT_MS = 10000;
const TOKEN_KEY = "castnet.token";
const state = { page: "network", job: null, hls: null, playing: null, lastAudit: 0 };

// The API token comes once as /?token=..., is kept for this tab only, and leaves the address bar.
(function takeToken() {
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    sessionStorage.setItem(TOKEN_KEY, params.get("token"));
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }
})();

function authHeaders(extra) {
  const headers = Object.assign({}, extra || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  return headers;
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = authHeaders(opts.headers);
  const response = await fetch(path, opts);
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = { message: text }; }
  if (!response.ok) {
    const message = (body && (body.message || body.error)) || response.statusText;
    const err = new Error(response.status + ": " + message);
    err.status = response.status;
    throw err;
  }
  return body;
}

// -- DOM helpers ----------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function row(cells, numeric) {
  const tr = document.createElement("tr");
  cells.forEach((value, i) => {
    const td = value instanceof Node ? el("td") : el("td", value);
    if (value instanceof Node) td.appendChild(value);
    if (numeric && numeric.includes(i)) td.className = "num";
    tr.appendChild(td);
  });
  return tr;
}

function fill(tbodyId, rows) {
  $(tbodyId).replaceChildren(...rows);
}

function short(address) {
  return address ? address.slice(0, 10) + "…" : "–";
}

function addr(address) {
  const code = el("code", short(address));
  code.title = address || "";
  return code;
}

function notice(text) {
  const box = $("notice");
  box.hidden = !text;
  box.textContent = text || "";
}

// -- status (every page) --------------------------------------------------------------------

async function refreshStatus() {
  const status = await api("/v1/status");
  fill("status-roles", Object.entries(status.roles).map(([role, r]) => {
    const tr = row([role, addr(r.address), r.events, r.peers], [2, 3]);
    tr.dataset.role = role;
    tr.children[2].id = "status-events-" + role;
    tr.children[3].id = "status-peers-" + role;
    return tr;
  }));
  const figures = [["network", status.network], ["ledger", status.ledger]];
  if (status.gateway) {
    figures.push(["offers", status.gateway.offers], ["verdicts", status.gateway.verdicts]);
  }
  if (status.orchestrator) {
    const o = status.orchestrator;
    figures.push(["segments done", o.jobs], ["tickets received", o.tickets],
      ["winning tickets", o.won], ["pending redemptions", o.pending_redemptions]);
  }
  const dl = $("status-figures");
  dl.replaceChildren();
  for (const [name, value] of figures) {
    const dd = el("dd", value);
    dd.id = "status-" + name.replace(/ /g, "-");
    dl.append(el("dt", name), dd);
  }
}

// -- pages ----------------------------------------------------------------------------------

async function refreshNetwork() {
  const net = await api("/v1/network");
  $("net-round").textContent = net.round;
  $("net-events").textContent = net.events;
  $("net-authors").textContent = net.authors;
  fill("offers", net.orchestrators.map((o) => row([
    addr(o.address), o.price_per_pixel_wei, o.capabilities.join(", "), o.capacity,
    o.warm_models.join(", ") || "–", o.stake_text,
    o.reputation.verified + " / " + o.reputation.failed,
    o.reputation.mean_latency_ms === null ? "–" : o.reputation.mean_latency_ms + " ms",
    o.last_reward_round === null ? "–" : o.last_reward_round,
  ], [1, 3, 6, 7, 8])));
}

async function refreshStake() {
  const stake = await api("/v1/stake");
  $("total-stake").textContent = stake.total_stake_text;
  $("stake-round").textContent = stake.round;
  fill("active-set", stake.orchestrators.map((o) => row([
    addr(o.address), o.stake_text, (o.share * 100).toFixed(1) + "%", o.active ? "yes" : "no",
  ], [1, 2])));
  fill("delegations", stake.delegations.map((d) => row([
    addr(d.delegator), addr(d.orchestrator), d.amount_text], [2])));
  fill("unbonding", stake.unbonding.map((u) => row([
    addr(u.delegator), addr(u.orchestrator), u.amount_text, u.round, u.block], [2, 3, 4])));
  drawRounds(stake.rounds);
}

// Rewards (CAST) and fees (ETH) per round as paired bars, in SVG without a library.
function drawRounds(rounds) {
  const box = $("rounds-chart");
  const ns = "http://www.w3.org/2000/svg";
  if (!rounds.length) {
    box.replaceChildren(el("p", "No rewards or fees recorded yet.", "hint"));
    return;
  }
  const width = 640, height = 200, pad = 30;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const series = [["rewards", "#2f6fde"], ["fees", "#e0912f"]];
  const slot = (width - 2 * pad) / rounds.length;
  for (const [name, color] of series) {
    const values = rounds.map((r) => Number(r[name]) || 0);
    const max = Math.max(...values) || 1;
    values.forEach((v, i) => {
      const bar = document.createElementNS(ns, "rect");
      const h = (height - 2 * pad) * v / max;
      const offset = name === "rewards" ? 0 : slot / 2;
      bar.setAttribute("x", pad + i * slot + offset + 2);
      bar.setAttribute("y", height - pad - h);
      bar.setAttribute("width", Math.max(slot / 2 - 4, 1));
      bar.setAttribute("height", h);
      bar.setAttribute("fill", color);
      const title = document.createElementNS(ns, "title");
      title.textContent = "round " + rounds[i].round + ": " + rounds[i][name + "_text"];
      bar.appendChild(title);
      svg.appendChild(bar);
    });
  }
  rounds.forEach((r, i) => {
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", pad + i * slot + slot / 2);
    label.setAttribute("y", height - pad / 3);
    label.setAttribute("text-anchor", "middle");
    label.setAttribute("font-size", "11");
    label.textContent = r.round;
    svg.appendChild(label);
  });
  const legend = el("p", "blue: rewards minted (CAST) · orange: fees redeemed (ETH), each " +
    "scaled to its largest round", "hint");
  box.replaceChildren(svg, legend);
}

async function refreshJobs() {
  const list = await api("/v1/jobs");
  const jobs = list.jobs.slice().reverse();
  fill("jobs", jobs.map((j) => {
    const p = j.progress;
    const tr = row([j.id.slice(0, 8), j.kind === "ai" ? "ai: " + j.pipeline : (j.kind ||
      "transcode"), j.status, p.segments_done + " / " + p.segments_total,
      j.orchestrators.map(short).join(", ") || "–",
      new Date(j.created_ms).toLocaleTimeString()], [3]);
    tr.dataset.job = j.id;
    tr.dataset.status = j.status;
    if (j.id === state.job) tr.className = "selected";
    tr.addEventListener("click", () => { state.job = j.id; refreshJobs().catch(report); });
    return tr;
  }));
  if (state.job) {
    const job = jobs.find((j) => j.id === state.job);
    if (job) await refreshJobDetail(job);
  }
}

function resetOutput() {
  if (state.hls) { state.hls.destroy(); state.hls = null; }
  const video = $("player");
  video.pause();
  video.removeAttribute("src");
  video.hidden = true;
  $("detections").hidden = true;
  $("detections").replaceChildren();
  state.playing = null;
}

async function refreshJobDetail(job) {
  if ($("detail-id").textContent !== job.id) resetOutput();
  $("job-detail").hidden = false;
  $("detail-id").textContent = job.id;
  $("detail-status").textContent = job.status;
  const seg = await api("/v1/segments/" + job.id);
  fill("segments", seg.segments.map((s) => row([
    s.seq, addr(s.orchestrator), s.attempts, s.verdict,
    s.latency_s ? s.latency_s.toFixed(2) + " s" : "–", s.errors.join("; ") || "–",
  ], [0, 2, 4])));
  if (job.status !== "done") return;
  if (job.playlist && state.playing !== job.id) play(job);
  const detections = (job.files || []).find((f) => f.endsWith(".jsonl"));
  if (detections && state.playing !== job.id) {
    state.playing = job.id;
    showDetections(detections).catch(report);
  }
}

function play(job) {
  const video = $("player");
  resetOutput();
  state.playing = job.id;
  video.hidden = false;
  if (window.Hls && window.Hls.isSupported()) {
    const hls = new window.Hls({
      xhrSetup: (xhr) => {
        const token = sessionStorage.getItem(TOKEN_KEY);
        if (token) xhr.setRequestHeader("Authorization", "Bearer " + token);
      },
    });
    hls.on(window.Hls.Events.ERROR, (_event, data) => {
      if (data.fatal) notice("player: " + data.type + " " + data.details);
    });
    hls.loadSource(job.playlist);
    hls.attachMedia(video);
    state.hls = hls;
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = job.playlist; // native HLS (no token header: needs a tokenless API)
  } else {
    notice("This build of the dashboard has no HLS player (run `make vendor`).");
    return;
  }
  video.play().catch(() => { /* autoplay refused: the controls remain */ });
}

async function showDetections(path) {
  const response = await fetch(path, { headers: authHeaders() });
  if (!response.ok) throw new Error(response.status + ": " + path);
  const lines = (await response.text()).split("\n").filter(Boolean).slice(0, 100);
  const list = $("detections");
  list.hidden = false;
  $("player").hidden = true;
  list.replaceChildren(...lines.map((line) => {
    const frame = JSON.parse(line);
    const boxes = frame.boxes || [];
    return el("li", "frame " + frame.frame + " at " + Number(frame.time).toFixed(2) + " s: " +
      boxes.length + " box(es)");
  }));
}

async function submitJob(event) {
  event.preventDefault();
  const file = $("job-file").files[0];
  if (!file) return;
  const pipeline = $("job-pipeline").value;
  const option = $("job-profiles").value.trim();
  let path = pipeline === "transcode" ? "/v1/transcode" : "/v1/ai/" + pipeline;
  if (option) path += "?" + (pipeline === "transcode" ? "profiles=" : "model=") +
    encodeURIComponent(option);
  $("submit-result").textContent = "uploading…";
  try {
    const job = await api(path, {
      method: "POST",
      body: file,
      headers: { "Content-Type": file.type && file.type.startsWith("video/") ? file.type :
        "video/mp4" },
    });
    state.job = job.id;
    $("submit-result").textContent = "job " + job.id + " queued";
    $("submit-result").dataset.job = job.id;
    await refreshJobs();
  } catch (err) {
    $("submit-result").textContent = "refused: " + err.message;
  }
}

async function refreshLog() {
  const kind = $("log-kind").value, author = $("log-author").value;
  const query = new URLSearchParams({ limit: "100" });
  if (kind) query.set("kind", kind);
  if (author) query.set("author", author);
  const log = await api("/v1/log?" + query.toString());
  syncOptions("log-kind", log.kinds, "every kind");
  syncOptions("log-author", log.authors, "every author");
  fill("log", log.events.map((e) => {
    const body = JSON.stringify(e.body);
    const tr = row([e.position, e.kind, addr(e.author), e.seq,
      new Date(e.time_ms).toLocaleTimeString(),
      el("code", body.length > 120 ? body.slice(0, 120) + "…" : body)], [0, 3]);
    tr.dataset.kind = e.kind;
    return tr;
  }));
  if (Date.now() - state.lastAudit > AUDIT_MS) {
    state.lastAudit = Date.now();
    const audit = await api("/v1/audit");
    const p = $("audit");
    const counted = audit.events + " events from " + audit.authors + " authors";
    p.className = audit.intact ? "clean" : "dirty";
    if (audit.clean) {
      p.textContent = "clean: " + counted + " verified";
    } else if (audit.intact) {
      p.textContent = "intact (" + counted + "); evidence against other authors: " +
        audit.evidence.join("; ");
    } else {
      p.textContent = "damaged: " + audit.problems.concat(audit.evidence).join("; ");
    }
  }
}

function syncOptions(selectId, values, allLabel) {
  const select = $(selectId);
  const current = select.value;
  const wanted = [""].concat(values);
  const have = Array.from(select.options).map((o) => o.value);
  if (have.join("\n") === wanted.join("\n")) return;
  select.replaceChildren(...wanted.map((v) => {
    const option = el("option", v ? (v.startsWith("0x") ? short(v) : v) : allLabel);
    option.value = v;
    return option;
  }));
  select.value = wanted.includes(current) ? current : "";
}

// -- loop -----------------------------------------------------------------------------------

const PAGES = { network: refreshNetwork, stake: refreshStake, jobs: refreshJobs, log: refreshLog };

function report(err) {
  if (err && err.status === 401) {
    notice("The node wants its API token: open the address it printed at start (/?token=…).");
  } else {
    notice("update failed: " + (err && err.message ? err.message : err));
  }
}

async function tick() {
  try {
    await refreshStatus();
    await PAGES[state.page]();
    notice("");
    $("live").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.updated = String(Date.now());
  } catch (err) {
    report(err);
  }
}

function show(page) {
  state.page = page;
  for (const button of document.querySelectorAll("#tabs button")) {
    button.classList.toggle("active", button.dataset.page === page);
  }
  for (const section of document.querySelectorAll(".page")) {
    section.hidden = section.id !== "page-" + page;
  }
  if (page === "log") state.lastAudit = 0;
  tick();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("#tabs button")) {
    button.addEventListener("click", () => show(button.dataset.page));
  }
  $("submit-form").addEventListener("submit", submitJob);
  $("log-kind").addEventListener("change", () => tick());
  $("log-author").addEventListener("change", () => tick());
  const first = location.hash.slice(1);
  show(PAGES[first] ? first : "network");
  setInterval(tick, POLL_MS);
});
