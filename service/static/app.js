// The dashboard: session, live feed, counters, queues, throughput, and the panels.
import { api, whenUnauthorized } from "./js/api.js";
import { renderThroughput } from "./js/chart.js";
import { ChatPanel } from "./js/chat.js";
import { $, h, replace, toast } from "./js/dom.js";
import { Feed } from "./js/feed.js";
import { KnowledgePanel } from "./js/knowledge.js";
import { catalog, loadCatalog } from "./js/catalog.js";
import { TaskTable } from "./js/tasks.js";
import { UsagePanel } from "./js/usage.js";
import { WorkersPanel } from "./js/workers.js";

const COUNTERS = [
  ["pending", "Pending", "PENDING"],
  ["started", "Running", "STARTED"],
  ["retry", "Retrying", "RETRY"],
  ["success", "Succeeded", "SUCCESS"],
  ["failure", "Failed", "FAILURE"],
  ["revoked", "Cancelled", "REVOKED"],
  ["workers", "Workers", null],
];
const STATS_EVERY = 15_000;

function toLogin() {
  const next = encodeURIComponent(window.location.pathname + window.location.search);
  window.location.replace(`/login?next=${next}`);
}

class Dashboard {
  constructor(session) {
    this.session = session;
    this.feed = new Feed();
    this.statsTimer = null;
    this.table = new TaskTable({
      feed: this.feed, session, onActivity: (msg) => this.countTransition(msg),
    });
    this.counts = {};
    this.chat = new ChatPanel({ feed: this.feed });
    this.knowledge = new KnowledgePanel({ feed: this.feed });
    this.knowledge.onBases = (bases) => this.chat.setBases(bases);
    this.usage = new UsagePanel();
    if (session.role === "admin") {
      $(".workers-card").hidden = false;
      this.workers = new WorkersPanel({ feed: this.feed });
    }
    this.showPrincipal();
    this.buildCounters();
    this.feed.on("status", (state) => this.showConnection(state));
    this.feed.on("stats", (msg) => msg.stats && this.showStats(msg.stats));
    this.feed.on("hello", (msg) => this.onHello(msg));
    this.feed.on("resync", () => this.refreshStats());
    this.feed.on("notification", (msg) => this.notify(msg));
    this.feed.on("unauthorized", toLogin);
    $("#logout").addEventListener("click", () => this.logout());
    setInterval(() => this.refreshStats(), STATS_EVERY);
  }

  async start() {
    // The list is read once the feed is live, so no change falls between the two.
    const live = new Promise((resolve) => {
      this.feed.on("hello", resolve);
      setTimeout(resolve, 3000);
    });
    this.feed.connect();
    await live;
    this.workers?.load(); // a worker broadcast: up to a second, not worth waiting for
    await Promise.all([
      this.table.load(), this.refreshStats(), this.knowledge.loadBases(), this.usage.load(),
    ]);
    // A deep link: /tasks/<id> opens that task's detail.
    const linked = window.location.pathname.match(/^\/tasks\/([0-9a-fA-F-]{36})$/);
    if (linked) this.table.detail.open(linked[1].toLowerCase());
    document.body.classList.remove("booting");
  }

  notify(msg) {
    // docs/websocket.md puts title/body on the message; the in-app inbox nests its item.
    const item = msg.notification || msg;
    const title = item.title || item.subject || "Notification";
    toast(`${title}: ${item.body || item.message || ""}`, "note");
  }

  onHello(msg) {
    if (msg.principal) {
      this.session = { ...this.session, ...msg.principal };
      this.showPrincipal();
    }
    if (msg.resumed) {
      // Replayed events follow; counters and workers are re-read rather than replayed.
      this.refreshStats();
      this.workers?.load();
    }
  }

  showPrincipal() {
    const { owner, role } = this.session;
    replace($("#who"), h("span", { class: "who-name" }, owner),
      h("span", { class: `role role-${role}` }, role));
    document.body.classList.toggle("is-admin", role === "admin");
  }

  /** Say why tasks wait when no worker consumes their queue (or none runs at all). */
  showCoverage(stats) {
    const banner = $("#queue-banner");
    const queues = stats.unconsumed_queues || [];
    if (stats.workers === 0) {
      banner.textContent = "No worker is running: submitted tasks wait until one starts "
        + "(make run starts one; or: celery -A workers.celery_app worker).";
    } else if (queues.length) {
      banner.textContent = `No worker consumes ${queues.join(", ")}: tasks there wait until `
        + `one does (celery -A workers.celery_app worker -Q ${queues.join(",")}).`;
    }
    banner.hidden = !(stats.workers === 0 || queues.length);
  }

  showConnection(state) {
    const el = $("#conn");
    const label = { live: "live", connecting: "connecting…", reconnecting: "reconnecting…",
      unauthorized: "signed out", closed: "offline" }[state] || state;
    el.className = `conn conn-${state}`;
    el.dataset.state = state;
    el.textContent = label;
  }

  buildCounters() {
    this.counterEls = new Map();
    replace($("#counters"), COUNTERS.map(([key, label, state]) => {
      const value = h("span", { class: "counter-value", "data-testid": `count-${key}` }, "–");
      this.counterEls.set(key, value);
      const attrs = { class: `counter counter-${key}`, type: "button", title: state ? `Show ${label.toLowerCase()} tasks` : label };
      if (state) {
        attrs.onclick = () => this.table.setFilters({
          status: this.table.filters.status === state ? "" : state,
        });
      } else {
        attrs.disabled = true;
      }
      return h("button", attrs, h("span", { class: "counter-label" }, label), value);
    }));
  }

  /** Move one task between the counters at once; the next stats read reconciles. The
   * platform's housekeeping is not counted (as in the stats), so it never flickers them. */
  countTransition(msg) {
    if (catalog.system.has(msg.name)) return;
    const from = msg.prev && msg.prev.toLowerCase();
    const to = msg.state && msg.state.toLowerCase();
    if (from in this.counts && this.counts[from] > 0) this.counts[from] -= 1;
    if (to in this.counts) this.counts[to] += 1;
    this.showCounts();
    this.refreshStatsSoon();
  }

  refreshStatsSoon() {
    if (this.statsTimer) return;
    this.statsTimer = setTimeout(() => {
      this.statsTimer = null;
      this.refreshStats();
    }, 600);
  }

  async refreshStats() {
    try {
      this.showStats(await api.stats());
    } catch (err) {
      if (err.status !== 401) console.warn("stats", err.message);
    }
  }

  showStats(stats) {
    this.showCoverage(stats);
    this.chat.setCoverage(stats);
    for (const [key] of COUNTERS) {
      if (typeof stats[key] === "number") this.counts[key] = stats[key];
    }
    this.showCounts();
    const filter = this.table.filters.status;
    for (const [key, , state] of COUNTERS) {
      this.counterEls.get(key).parentElement.classList.toggle("active", Boolean(state) && state === filter);
    }
    if (stats.tasks_per_minute) {
      renderThroughput($("#chart"), stats.tasks_per_minute);
      const total = stats.tasks_per_minute.reduce((sum, p) => sum + p.finished, 0);
      const minutes = stats.tasks_per_minute.length;
      $("#throughput-note").textContent = `${total} finished in the last ${minutes} minutes`;
    }
    if (stats.queues) this.showQueues(stats.queues);
  }

  showCounts() {
    for (const [key] of COUNTERS) {
      if (key in this.counts) this.counterEls.get(key).textContent = String(this.counts[key]);
    }
  }

  showQueues(depths) {
    const names = [...new Set([...catalog.queues, ...Object.keys(depths)])];
    const max = Math.max(10, ...names.map((n) => depths[n] || 0));
    replace($("#queues"), names.map((name) => {
      const depth = depths[name] || 0;
      const fill = h("div", { class: "queue-fill" });
      fill.style.width = `${(depth / max) * 100}%`;
      return h("div", {
        class: `queue${depth ? " queue-busy" : ""}`, dataset: { queue: name },
        title: `Show tasks on ${name}`,
        onclick: () => this.table.setFilters({ queue: this.table.filters.queue === name ? "" : name }),
      },
        h("span", { class: "queue-name" }, name),
        h("div", { class: "queue-bar" }, fill),
        h("span", { class: "queue-depth", "data-testid": `depth-${name}` }, String(depth)));
    }));
  }

  async logout() {
    this.feed.stop();
    try {
      await api.logout();
    } finally {
      window.location.replace("/login");
    }
  }
}

async function boot() {
  whenUnauthorized(toLogin);
  let session;
  try {
    session = await api.session();
  } catch (err) {
    if (err.status === 401) return toLogin();
    toast(`Cannot reach the gateway: ${err.message}`, "error");
    session = { owner: "?", role: "user" };
  }
  if (session.auth_required === false) {
    // Development mode (no API_KEYS): say so, instead of a log-out that leads nowhere.
    $("#logout").hidden = true;
    $("#dev-banner").hidden = false;
  }
  try {
    await loadCatalog();
  } catch (err) {
    toast(`Cannot read the task catalog: ${err.message}`, "error");
  }
  const dashboard = new Dashboard(session);
  window.claw = dashboard; // handy from the console and for the browser test
  await dashboard.start();
}

boot();
