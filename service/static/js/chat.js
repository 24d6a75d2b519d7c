// The AI chat panel: submit a message, follow the task, stream the reply from `chunk` events.
import { api } from "./api.js";
import { catalog } from "./catalog.js";
import { $, h, replace, shortId, toast } from "./dom.js";

const CONVERSATION = "claw.chat.conversation";

// Conversations are kept per owner; a random id still keeps one tab's conversation from
// being guessed by anyone sharing the owner (a team key).
function randomId() {
  // randomUUID needs a secure context (HTTPS or loopback); getRandomValues does not.
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function newConversationId() {
  const id = `conv_${randomId()}`;
  sessionStorage.setItem(CONVERSATION, id);
  return id;
}

function formatCost(cost) {
  const value = Number(cost) || 0;
  return `$${value.toFixed(value && value < 0.01 ? 6 : 4)}`;
}

export class ChatPanel {
  constructor({ feed }) {
    this.feed = feed;
    this.log = $("#chat-log");
    this.form = $("#chat-form");
    this.input = this.form.elements.message;
    this.conversationId = sessionStorage.getItem(CONVERSATION) || newConversationId();
    this.replies = new Map(); // task id -> {el, text, meta, chunks, state}
    this.coverage = { workers: null, unconsumed: [] }; // from the stats (setCoverage)
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        this.send();
      }
    });
    $("#chat-new").addEventListener("click", () => this.restart());
    // A conversation stays tied to the knowledge base it started with: another one starts
    // another conversation.
    this.kb = $("#chat-kb");
    this.kb.addEventListener("change", () => this.restart());
    feed.on("chunk", (msg) => this.onChunk(msg));
    feed.on("chunks_reset", (msg) => this.onReset(msg));
    feed.on("snapshot", (msg) => this.onSnapshot(msg));
    feed.on("task", (msg) => this.onTask(msg));
    this.placeholder();
  }

  restart() {
    this.conversationId = newConversationId();
    this.log.replaceChildren();
    this.placeholder();
  }

  /** The knowledge bases the picker offers (the knowledge panel's list). */
  setBases(bases) {
    const chosen = this.kb.value;
    replace(this.kb, h("option", { value: "" }, "No knowledge base"),
      bases.map((b) => h("option", { value: b.kb_id }, `Knowledge: ${b.kb_id}`)));
    this.kb.value = bases.some((b) => b.kb_id === chosen) ? chosen : "";
  }

  placeholder() {
    if (!this.log.children.length) {
      this.log.append(h("p", { class: "chat-empty muted" },
        "Replies stream in token by token as the model writes them."));
    }
  }

  async send() {
    const message = this.input.value.trim();
    if (!message) return;
    this.log.querySelector(".chat-empty")?.remove();
    this.log.append(h("div", { class: "msg msg-user" }, h("div", { class: "bubble" }, message)));
    this.input.value = "";
    const reply = this.bubble();
    this.scroll();
    try {
      const body = { conversation_id: this.conversationId, user_message: message, priority: 9 };
      if (this.kb.value) body.knowledge_base_id = this.kb.value;
      const submitted = await api.generate(body);
      reply.taskId = submitted.task_id;
      reply.el.dataset.taskId = submitted.task_id;
      this.replies.set(submitted.task_id, reply);
      this.setState(reply, "PENDING");
      this.feed.watch(submitted.task_id);
    } catch (err) {
      this.fail(reply, err.message);
    }
  }

  bubble() {
    const text = h("div", { class: "bubble-text", "data-testid": "chat-reply" });
    const status = h("div", { class: "bubble-status muted small" }, "submitting…");
    const el = h("div", { class: "msg msg-ai streaming", "data-testid": "chat-message" },
      h("div", { class: "bubble" }, text, status));
    this.log.append(el);
    return { el, text, status, chunks: [], state: null, taskId: null };
  }

  /** Which queues have no live consumer (the stats): a queued reply says when its own has
   * none. */
  setCoverage(stats) {
    if (typeof stats.workers === "number") this.coverage.workers = stats.workers;
    if (Array.isArray(stats.unconsumed_queues)) this.coverage.unconsumed = stats.unconsumed_queues;
    for (const reply of this.replies.values()) {
      if (reply.state === "PENDING" && !reply.done) this.setState(reply, "PENDING");
    }
  }

  get unserved() {
    const queue = catalog.tasks.generate_ai_response;
    return this.coverage.workers === 0 || this.coverage.unconsumed.includes(queue);
  }

  setState(reply, state) {
    reply.state = state;
    reply.el.dataset.state = state;
    // Queued with no worker consuming its queue: say so, not "queued…" forever.
    const stuck = state === "PENDING" && this.unserved;
    const label = { PENDING: stuck ? "queued: no worker takes AI replies right now" : "queued…",
      STARTED: "writing…", RETRY: "retrying…" }[state];
    if (label && !reply.done) replace(reply.status, h("span", { class: "dots" }, label));
  }

  render(reply) {
    reply.text.textContent = reply.chunks.join("");
    reply.el.dataset.chunks = String(reply.chunks.filter((c) => c !== undefined).length);
    this.scroll();
  }

  scroll() {
    this.log.scrollTop = this.log.scrollHeight;
  }

  onChunk(msg) {
    const reply = this.replies.get(msg.task_id);
    if (!reply || reply.done) return;
    reply.chunks[msg.index ?? reply.chunks.length] = msg.text;
    if (reply.state !== "STARTED") this.setState(reply, "STARTED");
    this.render(reply);
  }

  onReset(msg) {
    const reply = this.replies.get(msg.task_id);
    if (!reply || reply.done) return;
    reply.chunks = [];
    this.render(reply);
  }

  onSnapshot(msg) {
    const reply = this.replies.get(msg.task_id);
    if (!reply || reply.done) return;
    if (Array.isArray(msg.chunks) && msg.chunks.length >= reply.chunks.filter(Boolean).length) {
      reply.chunks = [...msg.chunks];
      this.render(reply);
    }
    this.onState(reply, msg.state, msg.task || {});
  }

  onTask(msg) {
    const reply = this.replies.get(msg.task_id);
    if (reply && !reply.done) this.onState(reply, msg.state, msg);
  }

  async onState(reply, state, msg) {
    if (state === "SUCCESS") {
      let result = msg.result;
      if (!result) {
        try {
          result = (await api.status(reply.taskId)).result;
        } catch {
          result = null;
        }
      }
      this.finish(reply, result || {});
    } else if (state === "FAILURE" || state === "REVOKED") {
      const error = msg.error;
      const text = typeof error === "object" && error ? error.message : error;
      this.fail(reply, text || (state === "REVOKED" ? "cancelled" : "failed"));
    } else if (state) {
      this.setState(reply, state);
    }
  }

  finish(reply, result) {
    if (reply.done) return;
    reply.done = true;
    if (typeof result.response === "string") {
      reply.text.textContent = result.response;
    }
    reply.el.classList.remove("streaming");
    reply.el.dataset.state = "SUCCESS";
    const tokens = result.tokens ? result.tokens.total : null;
    replace(reply.status,
      h("span", { "data-testid": "chat-tokens" }, `${tokens ?? "?"} tokens`),
      " · ",
      h("span", { "data-testid": "chat-cost" }, formatCost(result.cost)),
      result.offline ? " · offline provider (no OPENAI_API_KEY)" : "",
      result.model && !result.offline ? ` · ${result.model}` : "",
      " · ",
      h("span", { class: "mono" }, shortId(reply.taskId)));
    if (Array.isArray(result.sources) && result.sources.length) {
      reply.el.querySelector(".bubble").append(this.citations(result.sources));
    }
    this.feed.unwatch(reply.taskId);
    this.scroll();
  }

  /** The passages a grounded reply cites ([1], [2], ...): each opens its text. */
  citations(sources) {
    const passage = h("blockquote", { class: "citation-passage", "data-testid": "citation-passage", hidden: true });
    const buttons = sources.map((s) => h("button", {
      class: "btn btn-small btn-ghost", type: "button", "data-testid": "citation",
      title: `${s.document_id} · chunk ${s.chunk_index} · similarity ${Number(s.score).toFixed(3)}`,
      onclick: () => {
        const same = !passage.hidden && passage.dataset.ref === String(s.ref);
        passage.hidden = same;
        passage.dataset.ref = String(s.ref);
        replace(passage, h("strong", {}, `[${s.ref}] ${s.title || s.document_id}`), h("br"),
          s.snippet || "");
      },
    }, `[${s.ref}] ${s.title || s.document_id}`));
    return h("div", { class: "citations-wrap" },
      h("div", { class: "citations", "data-testid": "citations" }, "Sources: ", buttons), passage);
  }

  fail(reply, message) {
    reply.done = true;
    reply.el.classList.remove("streaming");
    reply.el.classList.add("msg-error");
    reply.el.dataset.state = "FAILURE";
    replace(reply.status, h("span", { class: "error-text" }, message));
    if (reply.taskId) this.feed.unwatch(reply.taskId);
    else toast(`Chat: ${message}`, "error");
  }
}
