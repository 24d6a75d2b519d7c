// The worker list (admins): status from GET /workers, kept live by `worker` events.
import { api } from "./api.js";
import { $, ago, h, replace, toast } from "./dom.js";

export class WorkersPanel {
  constructor({ feed }) {
    this.feed = feed;
    this.list = $("#workers");
    this.note = $("#workers-note");
    this.workers = new Map();
    this.pending = null;
    feed.on("worker", (msg) => this.onWorker(msg));
    setInterval(() => this.render(), 5000);
  }

  async load() {
    try {
      const reply = await api.workers();
      this.workers = new Map(reply.workers.map((w) => [w.hostname, w]));
      this.render();
    } catch (err) {
      replace(this.list, h("li", { class: "error-text small" }, err.message));
    }
  }

  /** Debounced: many heartbeats arrive; one reload per few seconds is plenty. */
  reloadSoon(delay = 1500) {
    if (this.pending) return;
    this.pending = setTimeout(() => {
      this.pending = null;
      this.load();
    }, delay);
  }

  onWorker(msg) {
    const known = this.workers.get(msg.hostname);
    const status = msg.state === "offline" ? "offline" : "online";
    if (!known) {
      this.workers.set(msg.hostname, { hostname: msg.hostname, status, queues: [] });
      this.reloadSoon(300);
    } else {
      const changed = known.status !== status;
      known.status = status;
      known.last_heartbeat = msg.ts;
      // Heartbeats carry the worker's live counts.
      if (typeof msg.processed === "number") known.processed = msg.processed;
      if (typeof msg.active === "number") known.active = msg.active;
      if (changed) this.reloadSoon(300);
    }
    this.render();
  }

  render() {
    const workers = [...this.workers.values()].sort(
      (a, b) => (a.status === b.status ? a.hostname.localeCompare(b.hostname)
        : a.status === "online" ? -1 : 1));
    const online = workers.filter((w) => w.status === "online").length;
    this.note.textContent = `${online} online${workers.length > online ? `, ${workers.length - online} offline` : ""}`;
    if (!workers.length) {
      replace(this.list, h("li", { class: "muted small" }, "No workers have reported yet."));
      return;
    }
    replace(this.list, workers.map((w) => this.item(w)));
  }

  item(w) {
    const busy = w.active !== null && w.active !== undefined && w.concurrency
      ? `${w.active}/${w.concurrency} busy` : null;
    return h("li", { class: `worker worker-${w.status}`, dataset: { hostname: w.hostname } },
      h("div", { class: "worker-head" },
        h("span", { class: `dot dot-${w.status}`, title: w.status }),
        h("span", { class: "worker-name ellipsis", title: w.hostname }, w.hostname),
        h("span", { class: "muted small", "data-testid": "worker-seen" },
          { online: ago(w.last_heartbeat) || "online", stopping: "stopping…" }[w.status]
            || "offline")),
      h("div", { class: "worker-meta small muted", "data-testid": "worker-meta" },
        [busy, w.processed !== null && w.processed !== undefined ? `${w.processed} processed` : null,
          w.pid ? `pid ${w.pid}` : null].filter(Boolean).join(" · ")),
      h("div", { class: "chips" }, (w.queues || []).map((q) => h("span", { class: "chip" }, q))),
      w.status === "online" ? h("div", { class: "worker-actions" },
        h("button", {
          class: "btn btn-small", type: "button",
          onclick: () => this.control("restart", w.hostname),
        }, "Restart pool"),
        h("button", {
          class: "btn btn-small btn-danger-ghost", type: "button",
          onclick: () => this.control("shutdown", w.hostname),
        }, "Shut down")) : null,
    );
  }

  async control(action, hostname) {
    const question = action === "shutdown"
      ? `Shut ${hostname} down? It finishes its running tasks first.`
      : `Restart the pool of ${hostname}?`;
    if (!window.confirm(question)) return;
    try {
      const reply = await (action === "shutdown"
        ? api.shutdown(hostname) : api.restartPool(hostname));
      const outcome = reply.replies && reply.replies[hostname] && reply.replies[hostname].ok;
      if (action === "shutdown" && this.workers.has(hostname)) {
        // Leaving now: no more controls; `offline` follows once it has stopped.
        const stopped = outcome === "stopped";
        toast(stopped ? `${hostname} stopped (its running tasks finished first)`
          : `${hostname} is stopping: it finishes its running tasks first`, "ok");
        this.workers.get(hostname).status = stopped ? "offline" : "stopping";
        this.render();
      } else {
        toast(`Pool restart sent to ${hostname}`, "ok");
        this.reloadSoon(1000);
      }
    } catch (err) {
      toast(`${hostname}: ${err.message}`, "error");
    }
  }
}
