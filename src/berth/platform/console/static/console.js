// Berth console: actions through the JSON API (session cookie + CSRF header) and live feeds over
// the WebSocket API (session cookie, same origin). Data is inserted as text, never as HTML.
(() => {
  "use strict";
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const team = document.querySelector('meta[name="team"]')?.content || "default";
  const apiBase = `/api/${encodeURIComponent(team)}/`;
  const TONES = {
    connected: "ok", successful: "ok", running: "ok", waiting: "busy", exited: "idle", in_progress: "busy",
    updating: "busy", preparing: "idle", obsolete: "idle", unreachable: "bad", failed: "bad",
    outdated: "warn", downgraded: "warn",
  };
  const MAX_LOG_LINES = 2000;

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function badge(status) {
    const label = (status || "unknown").replaceAll("_", " ");
    return el("span", { class: `badge badge-${TONES[status] || "idle"}`, "data-status": status || "" }, label);
  }

  function toast(text, bad = false) {
    const box = document.getElementById("toasts");
    if (!box) return;
    const item = el("div", { class: bad ? "toast bad" : "toast" }, text);
    box.append(item);
    setTimeout(() => item.remove(), bad ? 7000 : 3500);
  }

  async function api(method, path, body) {
    const headers = { "x-csrf-token": csrf };
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(apiBase + path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) { window.location.assign("/login"); throw new Error("Signed out"); }
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try {
        const problem = await response.json();
        message = problem.message + (problem.property ? ` (${problem.property})` : "");
      } catch (_) { /* not JSON */ }
      throw new Error(message);
    }
    return response.status === 204 ? null : response.json();
  }

  function feed(path, onMessage, liveEl, { reconnect = false } = {}) {
    let socket = null;
    let closedByUs = false;
    let delay = 1000;
    const setLive = (state, text) => { if (liveEl) { liveEl.dataset.state = state; liveEl.textContent = text; } };
    const open = () => {
      const scheme = window.location.protocol === "https:" ? "wss" : "ws";
      socket = new WebSocket(`${scheme}://${window.location.host}${apiBase}ws/${path}`);
      socket.addEventListener("open", () => { delay = 1000; setLive("open", "live"); });
      socket.addEventListener("message", (event) => {
        try { onMessage(JSON.parse(event.data)); } catch (err) { console.error(err); }
      });
      socket.addEventListener("close", () => {
        if (closedByUs) { setLive("idle", "stopped"); return; }
        setLive("closed", reconnect ? "reconnecting…" : "ended");
        if (reconnect) { setTimeout(open, delay); delay = Math.min(delay * 2, 15000); }
      });
    };
    open();
    return { close() { closedByUs = true; socket?.close(); } };
  }

  async function copyText(text, button) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      const area = el("textarea", { class: "offscreen" }, text);
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    button.dataset.copied = "true";
    const before = button.textContent;
    button.textContent = "Copied ✓";
    setTimeout(() => { button.textContent = before; }, 1800);
  }

  // -- generic actions: <button data-action="POST nodes/ID/kick" data-confirm=... data-then=...>
  document.addEventListener("click", async (event) => {
    const copy = event.target.closest("[data-copy]");
    if (copy) {
      const source = document.querySelector(copy.dataset.copy);
      if (source) await copyText(source.textContent.trim(), copy);
      return;
    }
    const button = event.target.closest("[data-action]");
    if (!button) return;
    const [method, path] = button.dataset.action.split(" ");
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    try {
      const result = await api(method, path);
      const then = button.dataset.then;
      if (then === "reload") window.location.reload();
      else if (then === "created" && result) window.location.assign(`/deployments/${result.id}`);
      else if (then) window.location.assign(then);
      else toast(button.dataset.done || "Done");
    } catch (err) {
      toast(err.message, true);
    } finally {
      button.disabled = false;
    }
  });

  // -- nodes
  document.querySelector("[data-create-node]")?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    try {
      const node = await api("POST", "nodes", { name: form.elements.name.value.trim() });
      window.location.assign(`/nodes/${node.id}`);
    } catch (err) { toast(err.message, true); }
  });

  // the nodes list keeps its statuses current (the JSON API, every few seconds while visible)
  const nodesTable = document.getElementById("nodes");
  if (nodesTable) {
    setInterval(async () => {
      if (document.hidden) return;
      try {
        for (const node of await api("GET", "nodes")) {
          const row = nodesTable.querySelector(`[data-node="${CSS.escape(node.id)}"]`);
          if (!row) continue;
          const current = row.querySelector("[data-status]");
          if (current && current.dataset.status !== node.status) current.replaceWith(badge(node.status));
          row.querySelector("[data-version]").textContent = node.version || "–";
        }
      } catch (_) { /* the next round tries again */ }
    }, 5000);
  }

  const nodePage = document.getElementById("node-page");
  if (nodePage) setUpNode(nodePage.dataset.nodeId, nodePage.dataset.nodeStatus);

  function setUpNode(nodeId, status) {
    document.querySelector("[data-install-form]")?.addEventListener("submit", async (event) => {
      event.preventDefault();
      const form = event.currentTarget;
      try {
        const install = await api("POST", `nodes/${nodeId}/script`, {
          type: form.elements.type.value, scriptType: form.elements.scriptType.value,
        });
        document.getElementById("install-text").textContent = install.command;
        document.getElementById("install-command").hidden = false;
        const expiry = new Date(install.expireAt * 1000 || install.expireAt);
        document.getElementById("install-expiry").textContent =
          Number.isNaN(expiry.getTime()) ? "" : `Expires ${expiry.toLocaleString()}`;
      } catch (err) { toast(err.message, true); }
    });
    if (status !== "connected" && status !== "outdated") return;
    const containers = new Map();
    const box = document.getElementById("containers");
    const render = () => renderContainers(nodeId, box, containers);
    feed(`nodes/${nodeId}/containers`, (message) => {
      if (message.type === "containers") {
        for (const item of message.items) {
          const key = `${item.id.prefix}/${item.id.name}`;
          if (item.state === "removed") containers.delete(key); else containers.set(key, item);
        }
        render();
      } else if (message.type === "error") {
        box.replaceChildren(el("p", { class: "empty" }, message.message));
      }
    }, document.getElementById("containers-live"), { reconnect: true });
    let logs = null;
    document.getElementById("logs-close").addEventListener("click", () => {
      logs?.close();
      document.getElementById("logs-card").hidden = true;
    });
    box.addEventListener("click", async (event) => {
      const button = event.target.closest("[data-op]");
      if (!button) return;
      const { prefix, name } = button.closest("[data-container]").dataset;
      const base = `nodes/${nodeId}/${encodeURIComponent(prefix)}/containers/${encodeURIComponent(name)}`;
      const op = button.dataset.op;
      if (op === "logs") {
        logs?.close();
        logs = openLogs(nodeId, prefix, name);
        return;
      }
      if (op === "inspect") {
        try {
          const details = await api("GET", `${base}/inspect`);
          document.getElementById("inspect-title").textContent = `Inspect ${prefix}-${name}`;
          document.getElementById("inspect-body").textContent = JSON.stringify(details, null, 2);
          document.getElementById("inspect-dialog").showModal();
        } catch (err) { toast(err.message, true); }
        return;
      }
      if (op === "delete" && !window.confirm(`Delete the container ${prefix}-${name}?`)) return;
      button.disabled = true;
      try {
        await api(op === "delete" ? "DELETE" : "POST", op === "delete" ? base : `${base}/${op}`);
        toast(`${op} ${prefix}-${name}: done`);
      } catch (err) { toast(err.message, true); } finally { button.disabled = false; }
    });
  }

  const PREFIX_LABEL = "org.dyrectorio.container.prefix";

  // A container deployed by a Berth (or dagent) agent names its prefix in a label; its name is
  // "<prefix>-<name>". Anything else on the node is listed apart, without actions.
  function place(item) {
    const prefix = item.id.prefix || (item.labels || {})[PREFIX_LABEL] || "";
    let name = item.id.name;
    if (!item.id.prefix && prefix && name.startsWith(prefix + "-")) name = name.slice(prefix.length + 1);
    return { prefix, name };
  }

  function containerRow(item, prefix, name) {
    const running = item.state === "running";
    const ports = (item.ports || []).filter((p) => p.external).map((p) => `${p.external}→${p.internal}`).join(", ");
    const actions = prefix ? [
      el("button", { class: "btn btn-small", "data-op": "logs" }, "Logs"),
      el("button", { class: "btn btn-small", "data-op": "inspect" }, "Inspect"),
      running
        ? el("button", { class: "btn btn-small", "data-op": "stop" }, "Stop")
        : el("button", { class: "btn btn-small", "data-op": "start" }, "Start"),
      el("button", { class: "btn btn-small", "data-op": "restart" }, "Restart"),
      el("button", { class: "btn btn-small btn-danger", "data-op": "delete" }, "Delete"),
    ] : [];
    return el("tr", prefix ? { "data-container": `${prefix}/${name}`, "data-prefix": prefix, "data-name": name } : {},
      el("td", { class: "strong" }, name),
      el("td", {}, el("code", {}, `${item.imageName}${item.imageTag ? ":" + item.imageTag : ""}`)),
      el("td", { "data-state": item.state }, badge(item.state)),
      el("td", { class: "muted small" }, item.status || item.reason || ""),
      el("td", { class: "small", "data-ports": "" }, ports),
      el("td", {}, el("div", { class: "row-actions" }, actions)));
  }

  // Rows and groups are kept while their containers do not change: an update of another
  // container must not replace the row (and the button) under the user's pointer.
  const kept = new WeakMap();

  function keptFor(box) {
    if (!kept.has(box)) kept.set(box, { rows: new Map(), groups: new Map() });
    return kept.get(box);
  }

  function cachedRow(box, item, prefix, name, seen) {
    const rows = keptFor(box).rows;
    const key = `${prefix}/${item.id.prefix}/${item.id.name}`;
    seen.add(key);
    const signature = JSON.stringify([item, prefix, name]);
    const old = rows.get(key);
    if (old && old.signature === signature) return old.row;
    const row = containerRow(item, prefix, name);
    rows.set(key, { signature, row });
    return row;
  }

  function setChildren(parent, children) {
    const same = children.length === parent.children.length && children.every((child, i) => parent.children[i] === child);
    if (!same) parent.replaceChildren(...children);
  }

  const count = (n) => `${n} container${n === 1 ? "" : "s"}`;

  function groupSection(box, key, make) {
    const groups = keptFor(box).groups;
    if (!groups.has(key)) {
      const tbody = el("tbody", {});
      const label = el("span", { class: "muted small" });
      groups.set(key, { section: make(tbody, label), tbody, label });
    }
    return groups.get(key);
  }

  function renderContainers(nodeId, box, containers) {
    const byPrefix = new Map();
    const others = [];
    const seen = new Set();
    for (const item of [...containers.values()].sort((a, b) => a.id.name.localeCompare(b.id.name))) {
      const { prefix, name } = place(item);
      const row = cachedRow(box, item, prefix, name, seen);
      if (!prefix) { others.push(row); continue; }
      if (!byPrefix.has(prefix)) byPrefix.set(prefix, []);
      byPrefix.get(prefix).push(row);
    }
    const rows = keptFor(box).rows;
    for (const key of [...rows.keys()]) if (!seen.has(key)) rows.delete(key);
    const sections = [...byPrefix.keys()].sort().map((prefix) => {
      const group = groupSection(box, `prefix:${prefix}`, (tbody, label) => el("div", { class: "prefix-group", "data-group": prefix },
        el("h3", {}, el("code", {}, prefix), label), el("table", { class: "table" }, tbody)));
      group.label.textContent = count(byPrefix.get(prefix).length);
      setChildren(group.tbody, byPrefix.get(prefix));
      return group.section;
    });
    if (sections.length === 0) {
      sections.push(groupSection(box, "empty", () => el("p", { class: "empty" }, "No deployed containers on this node yet.")).section);
    }
    if (others.length) {
      const group = groupSection(box, "others", (tbody, label) => el("details", { class: "others prefix-group" },
        el("summary", {}, label), el("table", { class: "table" }, tbody)));
      group.label.textContent = `Other containers on this node (${others.length}), not deployed through a prefix`;
      setChildren(group.tbody, others);
      sections.push(group.section);
    }
    setChildren(box, sections);
  }

  function openLogs(nodeId, prefix, name) {
    const card = document.getElementById("logs-card");
    const out = document.getElementById("logs");
    card.hidden = false;
    out.replaceChildren();
    document.getElementById("logs-title").textContent = `${prefix}-${name}`;
    card.scrollIntoView({ behavior: "smooth", block: "nearest" });
    const path = `nodes/${nodeId}/${encodeURIComponent(prefix)}/containers/${encodeURIComponent(name)}/log?tail=200`;
    return feed(path, (message) => {
      if (message.type !== "log") return;
      const atBottom = out.scrollHeight - out.scrollTop - out.clientHeight < 40;
      out.append(el("div", { class: "log-line" }, message.line));
      while (out.childElementCount > MAX_LOG_LINES) out.firstElementChild.remove();
      if (atBottom) out.scrollTop = out.scrollHeight;
    }, document.getElementById("logs-live"));
  }

  // -- deployments
  const deploymentPage = document.getElementById("deployment-page");
  if (deploymentPage) setUpDeployment(deploymentPage);

  function setStatus(page, status) {
    page.dataset.status = status;
    const visible = { preparing: status === "preparing", finished: !["preparing", "in_progress"].includes(status), idle: status !== "in_progress" };
    for (const button of document.querySelectorAll("[data-when]")) button.hidden = !visible[button.dataset.when];
    document.getElementById("deployment-status").replaceChildren(badge(status));
  }

  function setUpDeployment(page) {
    for (const bar of document.querySelectorAll("[data-progress]")) {
      bar.style.width = `${Math.round(Number(bar.dataset.value || 0) * 100)}%`;
    }
    const events = document.getElementById("events");
    const row = (id) => document.querySelector(`[data-instance="${CSS.escape(id)}"]`);
    const names = new Map([...document.querySelectorAll("[data-instance]")].map((r) => [r.dataset.instance, r.querySelector("td").textContent]));
    let first = true;
    const add = (message, text) => {
      const when = message.createdAt ? new Date(message.createdAt * 1000) : new Date();
      const stamp = when.toISOString().replace("T", " ").slice(0, 19) + " UTC";
      events.append(el("li", { class: `event level-${message.level || "info"}` }, el("time", {}, stamp), el("span", {}, text)));
      events.scrollTop = events.scrollHeight;
    };
    feed(`deployments/${page.dataset.deploymentId}/events`, (message) => {
      if (first) { events.replaceChildren(); first = false; }
      const lines = (message.log || []).join(" · ");
      switch (message.type) {
        case "progress": {
          const r = row(message.instanceId);
          if (!r) return;
          r.querySelector("[data-progress]").style.width = `${Math.round(message.progress * 100)}%`;
          r.querySelector("[data-progress-text]").textContent = message.status || "";
          return;
        }
        case "containerState": {
          const state = message.containerState;
          const r = row(state.instanceId);
          if (r) {
            r.querySelector("[data-state]").replaceChildren(badge(state.state));
            r.querySelector("[data-reason]").textContent = state.reason || "";
            r.querySelector("[data-progress]").style.width = "100%";
          }
          add(message, `${names.get(state.instanceId) || "instance"}: ${state.state || "unknown"}${state.reason ? " (" + state.reason + ")" : ""}${lines ? " · " + lines : ""}`);
          return;
        }
        case "deploymentStatus":
          setStatus(page, message.deploymentStatus);
          add(message, `deployment ${message.deploymentStatus.replaceAll("_", " ")}${lines ? " · " + lines : ""}`);
          return;
        case "log":
          add(message, lines);
          return;
        case "snapshot":
          setStatus(page, message.status);
          return;
        case "end":
          if (message.status) {
            setStatus(page, message.status);
            toast(`Deployment ${message.status}`, message.status !== "successful");
          }
          return;
        default:
      }
    }, document.getElementById("events-live"));
  }

  // -- new deployment: tabs
  for (const tab of document.querySelectorAll("[data-tab]")) {
    tab.addEventListener("click", () => {
      for (const other of document.querySelectorAll("[data-tab]")) other.setAttribute("aria-selected", String(other === tab));
      for (const panel of document.querySelectorAll("[data-panel]")) panel.hidden = panel.dataset.panel !== tab.dataset.tab;
    });
  }

  // -- registries
  document.querySelector("[data-registry-form]")?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = event.currentTarget.elements;
    const body = { name: f.name.value.trim(), url: f.url.value.trim(), user: f.user.value.trim(), description: f.description.value };
    if (f.password.value) body.password = f.password.value;
    const existing = [...document.querySelectorAll("[data-registry-name]")].find((row) => row.dataset.registryName === body.name);
    try {
      if (existing) await api("PUT", `registries/${existing.dataset.registryId}`, body);
      else await api("POST", "registries", body);
      window.location.reload();
    } catch (err) { toast(err.message, true); }
  });
})();
