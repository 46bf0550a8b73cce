// Weir's status page: polls /-/api/status and draws it with DOM calls only (no
// innerHTML: every string shown comes from the cluster and is set as text).
"use strict";

const REFRESH_MS = 2000;
const TOKEN_KEY = "weir-token";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function status(text) {
  return el("span", { class: "status " + text }, text);
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "";
}

function replicaTable(replicas) {
  const rows = replicas.map((r) =>
    el("tr", { class: "replica", "data-replica": r.replica_id },
      el("td", {}, r.replica_id), el("td", {}, r.node_id || "-"),
      el("td", {}, status(r.state)), el("td", {}, r.queue_depth)));
  return el("table", { class: "replicas" },
    el("thead", {}, el("tr", {}, el("th", {}, "replica"), el("th", {}, "node"),
      el("th", {}, "state"), el("th", {}, "queue depth"))),
    el("tbody", {}, ...rows));
}

function drawApplications(apps) {
  const box = document.getElementById("applications");
  if (!apps.length) {
    box.replaceChildren(el("p", { class: "muted" }, "no applications deployed"));
    return;
  }
  box.replaceChildren(...apps.map((app) => el("div", { class: "app", "data-app": app.name },
    el("h3", {}, app.name + " ", status(app.status),
      el("span", { class: "muted" }, app.route_prefix ? " at " + app.route_prefix : "")),
    app.message ? el("p", { class: "message" }, app.message) : null,
    ...app.deployments.map((d) => {
      const counts = Object.entries(d.replica_states || {})
        .map(([state, n]) => n + " " + state).join(", ");
      return el("div", { class: "deployment", "data-deployment": d.name },
        el("strong", {}, d.name), " ", status(d.status), " ",
        el("span", { class: "muted" }, counts ? "(" + counts + ")" : "(no replicas)"),
        d.message ? el("p", { class: "message" }, d.message) : null,
        replicaTable(d.replicas));
    }))));
}

function drawRows(id, rows) {
  document.querySelector("#" + id + " tbody").replaceChildren(
    ...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c)))));
}

function draw(doc) {
  drawApplications(doc.applications);
  drawRows("events", doc.events.map((e) => [when(e.time), e.kind, e.app || "", e.message]));
  drawRows("history", doc.config_history.map((h) =>
    [when(h.timestamp), h.revision, h.applications.join(", ")]));
  document.getElementById("servers").replaceChildren(
    ...doc.controllers.map((c) => el("li", {}, "controller " + (c.address || c.id || "") +
      " (" + (c.role || "") + ")")),
    ...doc.proxies.map((p) => el("li", {}, "proxy " + (p.id || "") + " at " + (p.http || ""))));
  document.getElementById("updated").textContent = "updated " + when(doc.generated_at);
}

async function refresh() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const error = document.getElementById("error");
  try {
    const reply = await fetch("/-/api/status", {
      headers: token ? { Authorization: "Bearer " + token } : {},
      cache: "no-store",
    });
    if (reply.status === 401) {
      document.getElementById("token-form").hidden = false;
      error.hidden = !token;
      error.textContent = token ? "That token was refused." : "";
      return;
    }
    const doc = await reply.json();
    if (!reply.ok) throw new Error(doc.error || reply.statusText);
    error.hidden = true;
    draw(doc);
  } catch (exc) {
    error.hidden = false;
    error.textContent = "Cannot read the cluster's status: " + exc.message;
  }
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
  document.getElementById("token-form").hidden = true;
  refresh();
});

// A link may carry the token in its fragment (never sent to a server): kept for the tab,
// then dropped from the address bar.
if (location.hash.startsWith("#token=")) {
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(location.hash.slice(7)));
  history.replaceState(null, "", location.pathname);
}
refresh();
setInterval(refresh, REFRESH_MS);
