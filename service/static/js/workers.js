// The worker list (admins): status from GET /workers, kept live by `worker` events.
import { api } from "./api.js";
import { $, ago, h, replace, toast } from "./dom.js";

// A worker asked to stop reads "stopping…" until it announces it is offline, whatever
// heartbeats it still sends meanwhile (the command takes a moment to reach it); one still
// beating this long after the request did not stop.
const STOPPING_HOLD_MS = 30_000;

export class WorkersPanel {
  constructor({ feed }) {
    this.feed = feed;
    this.list = $("#workers");
    this.note = $("#workers-note");
    this.workers = new Map();
    // Workers the feed saw leave (hostname -> when). The registry lists a leaving worker
    // until its process exits, after its running tasks: a reload must not bring it back.
    // Only the feed undoes this: the same hostname beating again (restarted).
    this.left = new Map();
    this.pending = null;
    feed.on("worker", (msg) => this.onWorker(msg));
    setInterval(() => this.render(), 5000);
  }

  async load() {
    try {
      const reply = await api.workers();
      const fresh = new Map(reply.workers.map((w) => [w.hostname, w]));
      for (const [hostname, shown] of this.workers) {
        const listed = fresh.get(hostname);
        if (this.left.has(hostname)) {
          if (listed) listed.status = "offline";
          else fresh.set(hostname, { ...shown, status: "offline" }); // gone: still say so
        } else if (listed && listed.status === "online" && this.holding(shown)) {
          Object.assign(listed, { status: "stopping", stoppingSince: shown.stoppingSince });
        }
      }
      this.workers = fresh;
      this.render();
    } catch (err) {
      replace(this.list, h("li", { class: "error-text small" }, err.message));
    }
  }

  holding(worker) {
    return worker.status === "stopping" && Date.now() - worker.stoppingSince < STOPPING_HOLD_MS;
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
    const offline = msg.state === "offline";
    if (offline) this.left.set(msg.hostname, msg.ts);
    else this.left.delete(msg.hostname);
    const known = this.workers.get(msg.hostname);
    if (!known) {
      this.workers.set(msg.hostname, {
        hostname: msg.hostname, status: offline ? "offline" : "online", queues: [],
      });
      this.reloadSoon(300);
    } else {
      const status = offline ? "offline" : this.holding(known) ? "stopping" : "online";
      const changed = known.status !== status;
      known.status = status;
      if (!offline) known.last_heartbeat = msg.ts;
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
      const answer = (reply.replies && reply.replies[hostname]) || {};
      if (action === "shutdown" && this.workers.has(hostname)) {
        // Leaving now: no more controls; `offline` follows once it has stopped.
        const stopped = answer.ok === "stopped";
        // Under make run the worker is started again (workers/dev/keep_running.py).
        const again = answer.restarted_by ? `; ${answer.restarted_by} starts it again` : "";
        toast(stopped ? `${hostname} stopped (its running tasks finished first)${again}`
          : `${hostname} is stopping: it finishes its running tasks first${again}`, "ok");
        const worker = this.workers.get(hostname);
        if (stopped) {
          worker.status = "offline";
          this.left.set(hostname, new Date().toISOString());
        } else if (worker.status !== "offline") {
          Object.assign(worker, { status: "stopping", stoppingSince: Date.now() });
        }
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
