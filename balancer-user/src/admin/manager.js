// The balancer-manager page: GET /api/state every 2 s, one table per pool and per VIP, and
// Drain / Disable / Enable buttons that POST to the admin API. With admin.token_file the
// token typed into the login form is kept for this tab only (sessionStorage) and sent as
// `Authorization: Bearer`. Everything is built with DOM calls, never innerHTML: server
// names and reasons come from the config and the network.
"use strict";

const REFRESH_MS = 2000;
let previous = new Map(); // "pool url" -> [requests, time]: requests per second between polls

function token() {
  return sessionStorage.getItem("balancer-token");
}

async function api(method, path) {
  const headers = {};
  if (token()) headers["Authorization"] = "Bearer " + token();
  return fetch(path, { method, headers, credentials: "omit", cache: "no-store" });
}

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    node.append(child === null || child === undefined ? "" : String(child));
  }
  return node;
}

function cell(value, numeric) {
  return el("td", numeric ? { class: "num" } : {}, value);
}

function stateCell(state) {
  return el("td", { class: "state state-" + state }, state);
}

function actions(kind, path, label) {
  const td = el("td");
  for (const [action, text] of [["drain", "Drain"], ["disable", "Disable"], ["enable", "Enable"]]) {
    const button = el("button", { type: "button", "data-action": action }, text);
    button.addEventListener("click", async () => {
      button.disabled = true;
      const response = await api("POST", path + "/" + action);
      if (!response.ok) {
        setStatus(kind + " " + label + ": " + action + " failed (" + response.status + ")", true);
      }
      await refresh();
    });
    td.append(button);
  }
  return td;
}

function table(headings, rows) {
  const head = el("tr", {}, ...[]);
  for (const heading of headings) head.append(el("th", {}, heading));
  const t = el("table");
  t.append(head);
  for (const row of rows) t.append(row);
  return t;
}

function renderPools(pools, now) {
  const box = document.getElementById("pools");
  box.replaceChildren();
  if (!pools || pools.length === 0) {
    box.append(el("p", {}, "No pools."));
    return;
  }
  const seen = new Map();
  for (const pool of pools) {
    const rows = pool.servers.map((server) => {
      const key = pool.name + " " + server.url;
      const before = previous.get(key);
      const rate = before && now > before[1]
        ? ((server.requests - before[0]) * 1000 / (now - before[1])).toFixed(1)
        : "–";
      seen.set(key, [server.requests, now]);
      const id = server.route || server.url;
      const path = "/api/pools/" + encodeURIComponent(pool.name) + "/servers/" + encodeURIComponent(id);
      const row = el("tr", { class: "server", "data-pool": pool.name, "data-url": server.url });
      row.append(
        cell(server.url),
        stateCell(server.state),
        cell(server.health_reason || ""),
        cell(server.operator),
        cell(server.weight, true),
        cell(server.in_flight, true),
        cell(rate, true),
        cell(server.sticky_requests, true),
        actions("server", path, server.url),
      );
      return row;
    });
    box.append(
      el("h3", {}, "pool " + pool.name),
      table(["server", "state", "why", "operator", "weight", "in flight", "requests/s", "sticky requests", ""], rows),
    );
  }
  previous = seen;
}

function renderVips(xdp) {
  const box = document.getElementById("vips");
  box.replaceChildren();
  if (!xdp || !xdp.vips || xdp.vips.length === 0) {
    box.append(el("p", {}, "No XDP data plane, or no VIPs."));
    return;
  }
  for (const vip of xdp.vips) {
    const rows = (vip.backends || []).map((backend) => {
      const path = "/api/vips/" + encodeURIComponent(vip.name) + "/backends/" + encodeURIComponent(backend.address);
      const row = el("tr", { class: "backend", "data-vip": vip.name, "data-address": backend.address });
      row.append(
        cell(backend.address),
        stateCell(backend.state),
        cell(backend.health_reason || ""),
        cell(backend.admin),
        cell(backend.weight, true),
        cell(backend.packets, true),
        actions("backend", path, backend.address),
      );
      return row;
    });
    const title = "VIP " + vip.name + " " + vip.address + ":" + vip.port + "/" + vip.protocol + " (" + vip.forward + ")";
    box.append(el("h3", {}, title));
    if (rows.length === 0) box.append(el("p", {}, "Delivered to the local stack: no backends."));
    else box.append(table(["backend", "state", "why", "operator", "weight", "packets", ""], rows));
  }
}

function setStatus(text, error) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = error ? "error" : "";
}

async function refresh() {
  let response;
  try {
    response = await api("GET", "/api/state");
  } catch (err) {
    setStatus("cannot reach the admin API: " + err, true);
    return;
  }
  if (response.status === 401) {
    document.getElementById("content").hidden = true;
    document.getElementById("login").hidden = false;
    setStatus("log in");
    return;
  }
  if (!response.ok) {
    setStatus("GET /api/state: " + response.status, true);
    return;
  }
  const state = await response.json();
  document.getElementById("login").hidden = true;
  document.getElementById("content").hidden = false;
  const now = Date.now();
  renderPools(state.pools, now);
  renderVips(state.xdp);
  setStatus("balancer " + state.version + ", up " + state.uptime_seconds + " s, updated " + new Date(now).toLocaleTimeString());
}

document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem("balancer-token", document.getElementById("token").value);
  const response = await api("GET", "/api/state");
  document.getElementById("login-error").textContent = response.status === 401 ? "wrong token" : "";
  await refresh();
});

refresh();
setInterval(refresh, REFRESH_MS);
