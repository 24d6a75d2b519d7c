// The live task table, its filters, the submit form and the task detail panel.
import { api } from "./api.js";
import { catalog } from "./catalog.js";
import { compareIds } from "./feed.js";
import {
  $, ago, clock, duration, h, json, replace, seconds, shortId, toast, until,
} from "./dom.js";

// The platform's housekeeping, hidden unless "system tasks" is ticked (as in the API).
const SYSTEM_TASKS = catalog.system;
const TASK_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const TERMINAL = catalog.terminal;
const PAGE = 50;
const REREAD_EVERY = 5; // seconds between reads of an open pending task's status
const MAX_ROWS = 500;

export function badge(state) {
  const value = state || "UNKNOWN";
  return h("span", { class: `badge badge-${value.toLowerCase()}`, "data-state": value }, value);
}

/** A feed event's error as the REST fields: `error` (the message) and `error_type`. */
function errorFields(error) {
  if (!error) return {};
  if (typeof error === "string") return { error };
  return { error: error.message || null, error_type: error.type || null };
}

/** A countdown to `eta` (epoch seconds) that the open detail ticks every second. */
function countdown(eta) {
  return h("span", { class: "countdown", dataset: { until: eta } }, until(eta));
}

/** Why a pending task waits, in words: its place in its queue (or the worker holding
 * it), its ETA ticking down, and its rate limit. */
function queueText(state, eta) {
  const parts = [];
  const runsAt = eta ? ["runs at ", clock(eta), " (", countdown(eta), ")"] : null;
  if (!state) return runsAt ? ["It ", ...runsAt, "."] : [];
  const consumers = state.consumers === 1 ? "1 worker consumes"
    : `${state.consumers} workers consume`;
  const ahead = typeof state.ahead === "number"
    ? `${state.ahead === 1 ? "1 task" : `${state.ahead} tasks`} ahead of it` : null;
  if (!state.consumers) {
    parts.push(`No worker consumes ${state.queue}: it waits until one starts`,
      ahead ? `, with ${ahead}.` : ".");
    if (runsAt) parts.push(" Then it ", ...runsAt, " at the earliest.");
  } else if (state.held) {
    parts.push(runsAt
      ? ["A worker holds it until it is due: it ", ...runsAt, "."]
      : "A worker has taken it: it starts as soon as one of that worker's processes is free.");
  } else {
    if (ahead) {
      parts.push(`${ahead} in ${state.queue} (${state.waiting} waiting); ${consumers} it.`);
    } else {
      // Further back than the gateway looks: the queue's depth, not its place.
      parts.push(`${state.waiting} waiting in ${state.queue}; ${consumers} it.`);
    }
    if (runsAt) parts.push(" It ", ...runsAt, " at the earliest.");
  }
  if (state.rate_limit) {
    const limit = parseInt(state.rate_limit, 10);
    const window = state.rate_limit.split("/")[1];
    parts.push(` Rate limit ${state.rate_limit}: `, h("span", { "data-testid": "detail-rate" },
      `${state.rate_limit_used ?? "?"} of ${limit} used in the last ${window}`), ".");
  }
  return parts;
}

/** A task event from the feed, as the fields of a list row. */
function fromEvent(msg) {
  const fields = { task_id: msg.task_id };
  for (const key of ["name", "queue", "owner"]) if (msg[key]) fields[key] = msg[key];
  // A worker that received a task (an ETA task waits in a worker) has not run it.
  if (msg.worker && msg.type !== "received") fields.worker = msg.worker;
  if ((msg.type === "task" || msg.type === "snapshot") && msg.state) fields.status = msg.state;
  if (msg.type === "task") {
    if (msg.state === "PENDING") fields.submitted_at = msg.ts;
    if (msg.state === "STARTED") {
      fields.started_at = msg.ts;
      fields.waiting_reason = null; // it waits no more
    }
    if (TERMINAL.has(msg.state)) fields.finished_at = msg.ts;
    if (msg.error) Object.assign(fields, errorFields(msg.error));
    if ("result" in msg) fields.result = msg.result;
  }
  if (msg.type === "progress") fields.progress = { percent: msg.percent, message: msg.message };
  if (msg.type === "waiting") Object.assign(fields, { waiting_reason: msg.reason, eta: msg.eta });
  if (msg.type === "snapshot" && msg.task) Object.assign(fields, msg.task);
  return fields;
}

export class TaskTable {
  constructor({ feed, session, onActivity }) {
    this.feed = feed;
    this.session = session;
    this.onActivity = onActivity || (() => {});
    this.tasks = new Map(); // id -> summary
    this.lastEvent = new Map(); // id -> last applied event id
    this.rows = new Map(); // id -> <tr>
    this.body = $("#task-rows");
    this.empty = $("#tasks-empty");
    this.more = $("#more");
    // Filters live in the URL (?status=&queue=&name=): a view can be bookmarked and shared.
    const query = new URLSearchParams(window.location.search);
    this.filters = {
      status: query.get("status") || "", queue: query.get("queue") || "",
      name: query.get("name") || "", system: query.get("system") || "",
    };
    this.cursor = null;
    this.detail = new TaskDetail(this);
    this.setupFilters();
    this.setupSubmitForm();
    this.more.addEventListener("click", () => this.load({ append: true }));
    for (const type of ["task", "progress", "chunk", "snapshot", "received"]) {
      feed.on(type, (msg) => this.apply(msg));
    }
    feed.on("resync", () => this.load());
    setInterval(() => this.tickTimes(), 5000);
    document.body.classList.toggle("is-admin", session.role === "admin");
  }

  get isAdmin() {
    return this.session.role === "admin";
  }

  setupFilters() {
    const form = $("#filters");
    const status = form.elements.status;
    replace(status, h("option", { value: "" }, "All states"),
      catalog.states.map((st) => h("option", { value: st }, st)));
    replace(form.elements.queue, h("option", { value: "" }, "All queues"),
      catalog.queues.map((q) => h("option", { value: q }, q)));
    replace($("#task-names"), Object.keys(catalog.tasks).map((n) => h("option", { value: n })));
    let typing = null;
    form.elements.status.value = this.filters.status;
    form.elements.queue.value = this.filters.queue;
    form.elements.name.value = this.filters.name;
    form.elements.system.checked = this.filters.system === "true";
    form.addEventListener("input", (event) => {
      clearTimeout(typing);
      const name = form.elements.name.value.trim();
      if (TASK_ID.test(name)) {
        // A task id in the search box opens that task.
        form.elements.name.value = "";
        this.detail.open(name.toLowerCase());
        return;
      }
      typing = setTimeout(() => this.setFilters({
        status: status.value, queue: form.elements.queue.value, name,
        system: form.elements.system.checked ? "true" : "",
      }), event.target.name === "name" ? 300 : 0);
    });
    form.addEventListener("submit", (event) => event.preventDefault());
  }

  setFilters(filters) {
    const form = $("#filters");
    Object.assign(this.filters, filters);
    this.syncUrl();
    form.elements.status.value = this.filters.status;
    form.elements.queue.value = this.filters.queue;
    form.elements.name.value = this.filters.name;
    form.elements.system.checked = this.filters.system === "true";
    this.load();
  }

  matches(task) {
    const f = this.filters;
    // As the API: an exact name, or a part of one, case-insensitively.
    return (!f.status || task.status === f.status) && (!f.queue || task.queue === f.queue)
      && (!f.name || (task.name || "").toLowerCase().includes(f.name.toLowerCase()))
      && (f.system === "true" || f.name || !SYSTEM_TASKS.has(task.name));
  }

  /** The URL says what is shown: /tasks/<id> for an open task, the filters as a query. */
  syncUrl() {
    const query = new URLSearchParams(
      Object.entries(this.filters).filter(([, value]) => value),
    ).toString();
    const path = this.detail.taskId ? `/tasks/${this.detail.taskId}` : "/";
    const url = `${path}${query ? `?${query}` : ""}`;
    if (url !== window.location.pathname + window.location.search) {
      window.history.replaceState(null, "", url);
    }
  }

  get filtered() {
    return Boolean(this.filters.status || this.filters.queue || this.filters.name);
  }

  get listQuery() {
    const { system, ...rest } = this.filters;
    return system === "true" ? { ...rest, system: "true" } : rest;
  }

  async load({ append = false } = {}) {
    const query = { limit: PAGE, ...this.listQuery, cursor: append ? this.cursor : null };
    let page;
    try {
      page = await api.list(query);
    } catch (err) {
      toast(`Could not load tasks: ${err.message}`, "error");
      return;
    }
    const known = this.tasks;
    if (!append) {
      this.tasks = new Map();
      this.rows.clear();
      this.body.replaceChildren();
    }
    for (const task of page.tasks) {
      const seen = known.get(task.task_id);
      const merged = { ...seen, ...task };
      // The feed may already have told us more than this (older) read of the list.
      if (seen && TERMINAL.has(seen.status) && !TERMINAL.has(task.status)) {
        Object.assign(merged, { status: seen.status, finished_at: seen.finished_at });
      }
      this.tasks.set(task.task_id, merged);
      this.render(task.task_id, { position: "end" });
    }
    this.cursor = page.next_cursor;
    this.more.hidden = !page.next_cursor;
    this.updateEmpty();
  }

  updateEmpty() {
    this.empty.hidden = this.rows.size > 0;
    if (this.filtered) {
      replace(this.empty, "No tasks match these filters. ", h("button", {
        class: "link", type: "button", "data-testid": "clear-filters",
        onclick: () => this.setFilters({ status: "", queue: "", name: "", system: "" }),
      }, "Clear the filters"));
    } else {
      replace(this.empty, "No tasks yet. Submit one with ", h("em", {}, "New task"),
        " or the AI chat.");
    }
  }

  /** Merge what we learned about a task; new tasks go on top if they match the filters. */
  upsert(fields, { flash = false } = {}) {
    const id = fields.task_id;
    const known = this.tasks.get(id);
    const merged = { ...(known || {}), ...fields };
    if (known && TERMINAL.has(known.status) && !TERMINAL.has(merged.status)) {
      merged.status = known.status; // a replayed older event never undoes an ending
    }
    if (merged.started_at && merged.finished_at) {
      merged.runtime = seconds(merged.finished_at) - seconds(merged.started_at);
    }
    if (!known && !this.matches(merged)) return merged;
    this.tasks.set(id, merged);
    const changed = known && known.status !== merged.status;
    this.render(id, { position: known ? "keep" : "start", flash: flash && (changed || !known) });
    this.updateEmpty();
    if (this.detail.taskId === id) this.detail.update(merged);
    return merged;
  }

  apply(msg) {
    if (!msg.task_id) return;
    if (msg.id) {
      if (compareIds(msg.id, this.lastEvent.get(msg.task_id)) <= 0) return;
      this.lastEvent.set(msg.task_id, msg.id);
    }
    if (msg.type === "chunk") {
      if (this.detail.taskId === msg.task_id) this.detail.chunk(msg.index, msg.text);
      return;
    }
    if (msg.type === "snapshot" && !msg.task) return; // unknown (or not yet recorded) task
    this.upsert(fromEvent(msg), { flash: msg.type === "task" });
    if (msg.type === "snapshot" && this.detail.taskId === msg.task_id) {
      this.detail.snapshot(msg);
    }
    if (msg.type === "task") {
      this.onActivity(msg);
      if (this.detail.taskId === msg.task_id && TERMINAL.has(msg.state)) this.detail.refresh();
    }
  }

  render(id, { position = "keep", flash = false }) {
    const task = this.tasks.get(id);
    const row = this.row(task);
    const old = this.rows.get(id);
    if (old) old.replaceWith(row);
    else if (position === "start") this.body.prepend(row);
    else this.body.append(row);
    this.rows.set(id, row);
    if (flash) {
      row.classList.add("flash");
      setTimeout(() => row.classList.remove("flash"), 1600);
    }
    while (this.rows.size > MAX_ROWS) {
      const last = this.body.lastElementChild;
      this.rows.delete(last.dataset.taskId);
      this.tasks.delete(last.dataset.taskId);
      last.remove();
    }
  }

  row(task) {
    const submitted = task.submitted_at || task.created_at;
    const progress = task.progress && !TERMINAL.has(task.status) ? task.progress.percent : null;
    const row = h("tr", {
      dataset: { taskId: task.task_id, state: task.status || "" },
      class: this.detail.taskId === task.task_id ? "selected" : null,
      tabindex: 0,
      onclick: (event) => {
        if (!event.target.closest("button")) this.detail.open(task.task_id);
      },
      onkeydown: (event) => {
        if (event.key === "Enter") this.detail.open(task.task_id);
      },
    },
      h("td", {}, badge(task.status),
        progress !== null && progress !== undefined
          ? h("span", { class: "mini-progress", title: `${Math.round(progress)}%` },
              h("span", { class: "mini-progress-fill", style: null }))
          : null),
      h("td", {}, h("div", { class: "cell-task" },
        h("span", { class: "task-name" }, task.name || "task"),
        h("span", { class: "mono muted" }, shortId(task.task_id)))),
      h("td", {}, task.queue ? h("span", { class: "chip" }, task.queue) : ""),
      h("td", { class: "col-owner" }, task.owner || ""),
      h("td", { class: "muted small ellipsis", title: task.worker || "" },
        task.started_at ? task.worker || "" : ""),
      h("td", { class: "muted small", title: clock(submitted),
        dataset: { ts: seconds(submitted) || "" } },
        ago(submitted)),
      h("td", { class: "small" }, duration(task.runtime)),
      h("td", { class: "col-actions" }, this.actions(task, true)),
    );
    const fill = row.querySelector(".mini-progress-fill");
    if (fill) fill.style.width = `${Math.max(0, Math.min(100, progress))}%`;
    return row;
  }

  /** The buttons a principal may use on a task in its current state. */
  actions(task, compact = false) {
    const buttons = [];
    const cls = compact ? "btn btn-small" : "btn";
    if (task.status === "PENDING" || task.status === "RETRY") {
      buttons.push(h("button", {
        class: `${cls} btn-danger-ghost`, type: "button", "data-action": "cancel",
        onclick: () => this.cancel(task.task_id, false),
      }, "Cancel"));
    }
    if (task.status === "STARTED" && this.isAdmin) {
      buttons.push(h("button", {
        class: `${cls} btn-danger-ghost admin-only`, type: "button", "data-action": "terminate",
        onclick: () => this.cancel(task.task_id, true),
      }, "Terminate"));
    }
    if ((task.status === "FAILURE" || task.status === "REVOKED") && !task.retried_as) {
      buttons.push(h("button", {
        class: cls, type: "button", "data-action": "retry",
        onclick: () => this.retry(task.task_id),
      }, "Retry"));
    }
    if (task.retried_as) {
      // Retried already: where the retry is, instead of a Retry that would be refused.
      buttons.push(h("button", {
        class: `${cls} btn-ghost`, type: "button", "data-action": "show-retry",
        title: `Retried as ${task.retried_as}`, onclick: () => this.detail.open(task.retried_as),
      }, `Retried → ${shortId(task.retried_as)}`));
    }
    return buttons;
  }

  async cancel(id, terminate) {
    if (terminate && !window.confirm("Terminate this running task? Its work is lost.")) return;
    try {
      const reply = await api.cancel(id, terminate);
      toast(`${shortId(id)}: ${reply.message}`, "ok");
      if (reply.status === "REVOKED") this.upsert({ task_id: id, status: "REVOKED" }, { flash: true });
    } catch (err) {
      toast(`Cancel failed: ${err.message}`, "error");
    }
  }

  async retry(id) {
    try {
      const reply = await api.retry(id);
      toast(`Submitted again as ${shortId(reply.task_id)}`, "ok");
      this.upsert({ task_id: id, retried_as: reply.task_id });
      const old = this.tasks.get(id) || {};
      this.upsert({
        task_id: reply.task_id, status: "PENDING", name: old.name, queue: old.queue,
        owner: old.owner, submitted_at: new Date().toISOString(), retried_from: id,
      }, { flash: true });
    } catch (err) {
      toast(`Retry failed: ${err.message}`, "error");
    }
  }

  tickTimes() {
    const now = Date.now() / 1000;
    for (const cell of this.body.querySelectorAll("td[data-ts]")) {
      const ts = Number(cell.dataset.ts);
      if (ts) cell.textContent = ago(ts, now);
    }
  }

  setupSubmitForm() {
    const form = $("#new-task");
    const toggle = $("#new-task-toggle");
    const kind = h("select", { name: "kind", "aria-label": "Kind", "data-testid": "new-task-kind" },
      h("option", { value: "ai" }, "AI reply"),
      h("option", { value: "vectorize" }, "Vectorize text"),
      h("option", { value: "notify" }, "Notify me (in-app)"));
    const text = h("input", {
      name: "text", required: true, placeholder: "Message", "aria-label": "Message or text",
      "data-testid": "new-task-text", class: "grow",
    });
    const priority = h("input", {
      name: "priority", type: "number", min: 0, max: 9, value: 5, "aria-label": "Priority",
      title: "Priority 0-9, 9 runs first", "data-testid": "new-task-priority",
    });
    const delay = h("input", {
      name: "countdown", type: "number", min: 0, step: 1, value: 0, "aria-label": "Delay (s)",
      title: "Seconds to wait before running", "data-testid": "new-task-delay",
    });
    replace(form,
      h("label", { class: "field" }, "Kind", kind),
      h("label", { class: "field grow" }, "Message / text", text),
      h("label", { class: "field narrow" }, "Priority", priority),
      h("label", { class: "field narrow" }, "Delay s", delay),
      h("button", { class: "btn btn-primary", type: "submit", "data-testid": "new-task-submit" },
        "Submit"),
    );
    toggle.addEventListener("click", () => {
      form.hidden = !form.hidden;
      toggle.classList.toggle("active", !form.hidden);
      if (!form.hidden) text.focus();
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      // An empty priority is the default (5), not 0.
      const options = priority.value === "" ? {} : { priority: Number(priority.value) };
      if (Number(delay.value) > 0) options.countdown = Number(delay.value);
      const value = text.value.trim();
      const KINDS = {
        ai: "generate_ai_response", vectorize: "vectorize_document", notify: "send_notification",
      };
      let reply;
      try {
        if (kind.value === "notify") {
          reply = await api.notify({
            channel: "in_app", recipient: this.session.owner, subject: "From the dashboard",
            message: value, ...options,
          });
        } else if (kind.value === "ai") {
          reply = await api.generate({
            conversation_id: `ui_${crypto.getRandomValues(new Uint32Array(4)).join("")}`,
            user_message: value, ...options,
          });
        } else {
          reply = await api.vectorize({
            // Into the knowledge base the knowledge panel names.
            kb_id: $("#kb-upload").elements.kb_id.value.trim() || "docs",
            document_id: `note_${Date.now().toString(36)}`, text: value,
            title: value.slice(0, 40), ...options,
          });
        }
      } catch (err) {
        toast(`Submit failed: ${err.message}`, "error");
        return;
      }
      toast(`Submitted ${shortId(reply.task_id)}`, "ok");
      text.value = "";
      this.upsert({
        task_id: reply.task_id, status: reply.status || "PENDING",
        name: KINDS[kind.value], queue: catalog.tasks[KINDS[kind.value]],
        owner: this.session.owner, submitted_at: new Date().toISOString(),
      }, { flash: true });
    });
  }
}

class TaskDetail {
  constructor(table) {
    this.table = table;
    this.panel = $("#detail");
    this.taskId = null;
    this.chunks = [];
    this.data = null;
    this.ticker = null; // counts the ETAs down while the detail is open
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.taskId) this.close();
    });
  }

  open(id) {
    if (this.taskId === id) return;
    if (this.taskId) this.close();
    this.taskId = id;
    this.chunks = [];
    this.data = { ...(this.table.tasks.get(id) || { task_id: id }) };
    this.table.rows.get(id)?.classList.add("selected");
    this.panel.hidden = false;
    document.body.classList.add("detail-open");
    this.render();
    this.table.feed.watch(id);
    this.table.syncUrl();
    this.ticker = setInterval(() => this.tick(), 1000);
    this.refresh();
  }

  tick() {
    const now = Date.now() / 1000;
    for (const el of this.panel.querySelectorAll("[data-until]")) {
      el.textContent = until(Number(el.dataset.until), now);
    }
    // Its place in the queue moves as the queue drains: read again now and then.
    this.ticks = (this.ticks || 0) + 1;
    if (this.ticks % REREAD_EVERY === 0 && this.data && this.data.status === "PENDING") {
      this.refresh();
    }
  }

  close() {
    if (!this.taskId) return;
    this.table.feed.unwatch(this.taskId);
    this.table.rows.get(this.taskId)?.classList.remove("selected");
    clearInterval(this.ticker);
    this.ticker = null;
    this.taskId = null;
    this.panel.hidden = true;
    document.body.classList.remove("detail-open");
    this.table.syncUrl();
  }

  async refresh() {
    const id = this.taskId;
    try {
      const status = await api.explained(id);
      if (id !== this.taskId) return;
      this.update(status);
    } catch (err) {
      if (id !== this.taskId) return;
      if (err.status === 404 && !this.table.tasks.has(id)) {
        // A deep link to a task that is not there (or not yours).
        replace(this.panel, h("header", { class: "detail-head" },
          h("h2", { "data-testid": "detail-missing" }, "No such task"),
          h("button", {
            class: "btn btn-ghost btn-icon", type: "button", "aria-label": "Close",
            onclick: () => this.close(),
          }, "✕")), h("p", { class: "muted" }, `Nothing is known of ${id}.`));
      } else if (err.status !== 404) {
        toast(err.message, "error");
      }
    }
  }

  update(fields) {
    const next = { ...this.data, ...fields };
    if (TERMINAL.has(this.data.status) && !TERMINAL.has(next.status)) next.status = this.data.status;
    this.data = next;
    this.render();
  }

  snapshot(msg) {
    if (Array.isArray(msg.chunks)) this.chunks = [...msg.chunks];
    this.render();
  }

  chunk(index, text) {
    this.chunks[index ?? this.chunks.length] = text;
    const out = this.panel.querySelector(".output");
    if (out) out.textContent = this.chunks.join("");
    else this.render();
  }

  section(title, ...content) {
    return h("section", { class: "detail-section" }, h("h3", {}, title), ...content);
  }

  render() {
    const t = this.data;
    if (!t) return;
    const submitted = t.submitted_at || t.created_at;
    const progress = t.progress && t.progress.percent !== undefined ? t.progress : null;
    const eta = t.eta && !t.started_at ? Date.parse(t.eta) / 1000 : null;
    const facts = [
      ["Queue", t.queue], ["Priority", t.priority], ["Owner", t.owner],
      // A task that never ran has no worker (a delivery may have been received, not run).
      ["Worker", t.started_at ? t.worker : null],
      ["Retries", t.retries],
      ["Runs at", eta ? [clock(eta), " (", countdown(eta), ")"] : null],
      // Set while tracing is on (OTEL_*): find the request's trace in your tracing backend.
      ["Trace ID", t.trace_id],
    ].filter(([, v]) => v !== null && v !== undefined && v !== "");
    const link = (id) => h("button", {
      class: "link mono", type: "button", onclick: () => this.open(id),
    }, shortId(id));
    const args = t.kwargs && Object.keys(t.kwargs).length ? t.kwargs : null;
    const posArgs = Array.isArray(t.args) && t.args.length ? t.args : null;
    const output = this.chunks.join("");

    replace(this.panel,
      h("header", { class: "detail-head" },
        h("div", {},
          h("div", { class: "detail-title" }, badge(t.status), h("h2", {}, t.name || "task")),
          h("div", { class: "mono muted small", "data-testid": "detail-id" }, t.task_id)),
        h("button", {
          class: "btn btn-ghost btn-icon", type: "button", "aria-label": "Close",
          onclick: () => this.close(),
        }, "✕")),
      h("div", { class: "detail-actions" }, this.table.actions(t)),
      t.waiting_reason && !TERMINAL.has(t.status) && t.status !== "STARTED"
        ? this.section("Waiting", h("p", { "data-testid": "detail-waiting" },
          t.waiting_reason, t.eta ? ` · runs at ${clock(Date.parse(t.eta) / 1000)}` : ""))
        : null,
      t.status === "PENDING" && (t.queue_state || eta)
        ? this.section("Why it waits", h("p", { "data-testid": "detail-queue-state" },
          queueText(t.queue_state, eta)))
        : null,
      progress && !TERMINAL.has(t.status)
        ? this.section("Progress", progressBar(progress.percent, progress.message))
        : null,
      this.section("Timing", h("dl", { class: "timeline" },
        h("dt", {}, "Submitted"), h("dd", {}, clock(submitted) || "—"),
        h("dt", {}, "Started"), h("dd", {}, t.started_at
          ? `${clock(t.started_at)} · waited ${duration(seconds(t.started_at) - seconds(submitted))}`
          : "—"),
        h("dt", {}, "Finished"), h("dd", {}, t.finished_at
          ? [clock(t.finished_at), t.started_at
            ? ` · ran ${duration(t.runtime ?? (seconds(t.finished_at) - seconds(t.started_at)))}`
            : ""]
          : "—"))),
      facts.length ? this.section("Details", h("dl", { class: "facts" },
        facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, Array.isArray(v) ? v : String(v))])))
        : null,
      t.retried_from || t.retried_as ? this.section("Retries", h("p", {},
        t.retried_from ? ["Retry of ", link(t.retried_from), ". "] : null,
        t.retried_as ? ["Submitted again as ", link(t.retried_as), "."] : null)) : null,
      args || posArgs ? this.section("Arguments",
        h("pre", { class: "code" }, json(posArgs ? { args: posArgs, kwargs: args || {} } : args)))
        : null,
      output ? this.section("Output", h("pre", { class: "output" }, output)) : null,
      t.status === "SUCCESS" ? this.section("Result",
        h("pre", { class: "code", "data-testid": "detail-result" }, json(t.result ?? null))) : null,
      t.status === "FAILURE" || t.status === "REVOKED" || (t.error && t.status === "RETRY")
        ? this.section(t.status === "REVOKED" ? "Cancelled" : "Error",
          h("p", { class: "error-text", "data-testid": "detail-error" },
            // A cancel's reason says it all; a failure is "<type>: <message>".
            (t.status === "REVOKED" ? t.error
              : [t.error_type, t.error].filter(Boolean).join(": ")) || "no message"),
          t.traceback ? h("pre", { class: "code small" }, t.traceback) : null)
        : null,
    );
  }
}

export function progressBar(percent, message) {
  const value = Math.max(0, Math.min(100, Number(percent) || 0));
  const fill = h("div", { class: "progress-fill" });
  fill.style.width = `${value}%`;
  return h("div", { class: "progress-wrap" },
    h("div", {
      class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
      "aria-valuenow": Math.round(value), "data-testid": "progress",
    }, fill),
    h("div", { class: "progress-label small muted" },
      h("span", {}, message || ""), h("span", {}, `${Math.round(value)}%`)));
}
