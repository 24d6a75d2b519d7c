// The live feed (docs/websocket.md): one websocket, reconnected with `resume` after a drop.

const BACKOFF = [500, 1000, 2000, 4000, 8000];

/** Redis stream ids ("1764331200499-0") in order; null sorts first. */
export function compareIds(a, b) {
  if (!a || !b) return a ? 1 : b ? -1 : 0;
  const [am, as] = a.split("-").map(Number);
  const [bm, bs] = b.split("-").map(Number);
  return am - bm || as - bs;
}

export class Feed {
  constructor(path = "/api/v1/tasks/ws") {
    this.path = path;
    this.handlers = new Map();
    this.taskIds = new Map(); // task id -> how many watchers
    this.lastEventId = null;
    this.attempt = 0;
    this.ws = null;
    this.stopped = false;
    this.state = "connecting";
    this.holdUntil = 0;
    this.resumes = 0;
  }

  /** on("task", fn), on("*", fn), on("status", fn), on("hello", fn), ... */
  on(type, handler) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(handler);
    return this;
  }

  emit(type, payload) {
    for (const handler of this.handlers.get(type) || []) {
      try {
        handler(payload);
      } catch (err) {
        console.error(`feed handler for ${type} failed`, err);
      }
    }
  }

  setState(state) {
    this.state = state;
    this.emit("status", state);
  }

  connect() {
    this.stopped = false;
    const url = new URL(this.path, window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("all", "true");
    const ws = new WebSocket(url);
    this.ws = ws;
    this.setState(this.attempt ? "reconnecting" : "connecting");
    ws.addEventListener("message", (event) => this.receive(event.data));
    ws.addEventListener("close", (event) => this.closed(ws, event));
  }

  receive(raw) {
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      return;
    }
    if (msg.type === "hello") {
      this.hello(msg);
      return;
    }
    if (msg.id && compareIds(msg.id, this.lastEventId) > 0) this.lastEventId = msg.id;
    if (msg.type === "resync") this.resubscribe();
    this.emit(msg.type, msg);
    this.emit("*", msg);
  }

  hello(msg) {
    const resumeFrom = this.lastEventId;
    this.attempt = 0;
    this.setState("live");
    this.emit("hello", { ...msg, resumed: Boolean(resumeFrom) });
    this.resubscribe();
    if (resumeFrom) {
      // Everything we missed while disconnected, then live again.
      this.send({ action: "resume", last_event_id: resumeFrom });
      this.resumes += 1;
    } else {
      this.lastEventId = msg.id || null;
    }
  }

  resubscribe() {
    if (this.taskIds.size) this.send({ action: "subscribe", task_ids: [...this.taskIds.keys()] });
  }

  closed(ws, event) {
    if (ws !== this.ws) return;
    this.ws = null;
    if (event.code === 4001) {
      this.setState("unauthorized");
      this.emit("unauthorized", event);
      return;
    }
    if (this.stopped) {
      this.setState("closed");
      return;
    }
    const base = BACKOFF[Math.min(this.attempt, BACKOFF.length - 1)];
    const delay = Math.max(base + Math.random() * base * 0.3, this.holdUntil - Date.now());
    this.attempt += 1;
    this.setState("reconnecting");
    setTimeout(() => this.connect(), delay);
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  /** Follow one task: a snapshot at once (chunks so far included), then its changes. */
  watch(taskId) {
    this.taskIds.set(taskId, (this.taskIds.get(taskId) || 0) + 1);
    this.send({ action: "subscribe", task_ids: [taskId] });
  }

  unwatch(taskId) {
    const left = (this.taskIds.get(taskId) || 0) - 1;
    if (left > 0) {
      this.taskIds.set(taskId, left);
    } else if (this.taskIds.delete(taskId)) {
      this.send({ action: "unsubscribe", task_ids: [taskId] });
    }
  }

  /** Drop the connection as a network failure would, offline for at least `holdMs`. */
  drop(holdMs = 0) {
    this.holdUntil = Date.now() + holdMs;
    if (this.ws) this.ws.close(4000, "client drop");
  }

  stop() {
    this.stopped = true;
    if (this.ws) this.ws.close(1000, "bye");
  }
}
