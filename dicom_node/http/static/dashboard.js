// The node's dashboard: polls /dashboard/state and redraws the sections the server rendered first.
// No framework, no CDN. Actions (retry, resend) POST with the bearer token typed into the page
// (kept in sessionStorage, never in the URL).
"use strict";

const POLL_MS = 2000;

function esc(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function seconds(value) {
  return value === null || value === undefined ? "" : Number(value).toFixed(1) + " s";
}

function when(epoch) {
  return epoch ? new Date(epoch * 1000).toLocaleTimeString() : "";
}

function table(headers, rows, empty) {
  if (!rows.length) return `<p class="empty">${esc(empty)}</p>`;
  const head = headers.map((h) => `<th>${esc(h)}</th>`).join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

function tr(cells, attrs) {
  return `<tr ${attrs || ""}>${cells.map((c) => `<td>${c}</td>`).join("")}</tr>`;
}

const render = {
  associations: (s) =>
    table(["Calling AE", "Called AE", "Peer"],
      s.associations.map((a) => tr([esc(a.calling_ae), esc(a.called_ae), esc(a.peer)])),
      "No open association."),
  waiting: (s) =>
    table(["Series", "Modality", "From", "Instances", "Rules", "Time left"],
      s.waiting.map((w) => tr([
        esc(w.series_description || w.series_uid), esc(w.modality), esc(w.calling_ae),
        esc(w.instances) + (w.expected ? " / " + esc(w.expected) : ""),
        esc(w.rules === null ? "routing..." : (w.rules || []).join(", ")),
        w.seconds_left === null ? "" : `<span class="left">${seconds(w.seconds_left)}</span>`,
      ], `data-series="${esc(w.series_uid)}"`)),
      "No series waiting for completion."),
  queue: (s) =>
    table(["Job", "State", "Series", "Rule", "Models", "Trigger", "Waiting"],
      s.queue.map((j) => tr([
        esc(j.id), `<span class="state ${esc(j.state)}">${esc(j.state)}</span>`,
        esc(j.series_description || j.series_uid), esc(j.rule), esc(j.models.join(" + ")), esc(j.trigger),
        seconds(j.waiting_seconds),
      ], `data-job="${esc(j.id)}"`)),
      "The job queue is empty."),
  results: (s) =>
    `<div class="cards">${s.results.map((j) => `
      <figure class="result" data-job="${esc(j.id)}">
        ${j.has_seg ? `<img src="/jobs/${esc(j.id)}/preview.png" alt="SEG outlines of job ${esc(j.id)}" loading="lazy">` : `<div class="noseg">no SEG (${esc(j.state)})</div>`}
        <figcaption>Job ${esc(j.id)} · ${esc(j.state)} · ${esc(j.models.join(" + "))} · ${seconds(j.seconds)}<br>
        ${esc(j.series_description || j.series_uid)} · ${esc(j.trigger)} · ${when(j.finished_at)}</figcaption>
      </figure>`).join("") || '<p class="empty">No results yet.</p>'}</div>`,
  failures: (s) =>
    table(["What", "Reason", "Attempts", ""],
      s.failures.jobs.map((j) => tr([
        `Job ${esc(j.id)} (${esc(j.rule)})`, `<span class="error">${esc(j.error)}</span>`, esc(j.attempts),
        `<button class="retry" data-action="/jobs/${esc(j.id)}/retry">Retry</button>`,
      ], `data-failed-job="${esc(j.id)}"`)).concat(s.failures.deliveries.map((d) => tr([
        `Delivery ${esc(d.id)} to ${esc(d.destination)}`, `<span class="error">${esc(d.error)}</span>`, esc(d.attempts),
        `<button class="resend" data-action="/deliveries/${esc(d.id)}/resend">Resend</button>`,
      ], `data-failed-delivery="${esc(d.id)}"`))),
      "No failures."),
  destinations: (s) =>
    table(["Destination", "Pending", "Sending", "Done", "Failed"],
      Object.entries(s.destinations).map(([name, c]) => tr([
        esc(name), esc(c.pending || 0), esc(c.sending || 0), esc(c.done || 0), esc(c.failed || 0),
      ], `data-destination="${esc(name)}"`)),
      "No destination configured."),
  events: (s) =>
    table(["Time", "Level", "Kind", "Message"],
      s.events.map((e) => tr([when(e.at), esc(e.level), esc(e.kind), esc(e.message)])),
      "No warnings."),
};

function draw(state) {
  for (const [name, fn] of Object.entries(render)) {
    const el = document.getElementById(name);
    if (el) el.innerHTML = fn(state);
  }
  const status = document.getElementById("status");
  status.textContent = `updated ${new Date().toLocaleTimeString()}`;
  status.className = "ok";
}

async function poll() {
  try {
    const response = await fetch("/dashboard/state", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    draw(await response.json());
  } catch (err) {
    const status = document.getElementById("status");
    status.textContent = `node unreachable: ${err.message}`;
    status.className = "bad";
  }
}

async function act(path, button) {
  const token = sessionStorage.getItem("dicom-node-token") || "";
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  button.disabled = true;
  const response = await fetch(path, { method: "POST", headers });
  const body = await response.json().catch(() => ({}));
  const note = document.getElementById("action");
  note.textContent = response.ok ? `${path}: done` : `${path}: ${response.status} ${body.detail || ""}`;
  note.className = response.ok ? "ok" : "bad";
  poll();
}

document.addEventListener("click", (event) => {
  const target = event.target;
  if (target instanceof HTMLButtonElement && target.dataset.action) act(target.dataset.action, target);
});

document.addEventListener("DOMContentLoaded", () => {
  const input = document.getElementById("token");
  if (input) {
    input.value = sessionStorage.getItem("dicom-node-token") || "";
    input.addEventListener("change", () => sessionStorage.setItem("dicom-node-token", input.value));
  }
  poll();
  setInterval(poll, POLL_MS);
});
