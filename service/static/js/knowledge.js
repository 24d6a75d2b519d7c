// The knowledge panel: vectorize a document (progress bar from `progress` events), search.
import { api } from "./api.js";
import { $, h, replace, shortId, toast } from "./dom.js";
import { progressBar } from "./tasks.js";

const MAX_BYTES = 2_000_000;
const TERMINAL = new Set(["SUCCESS", "FAILURE", "REVOKED"]);

function slug(text) {
  const base = text.toLowerCase().replace(/\.[a-z0-9]+$/, "").replace(/[^a-z0-9]+/g, "-");
  return base.replace(/^-+|-+$/g, "").slice(0, 60) || "doc";
}

export class KnowledgePanel {
  constructor({ feed }) {
    this.feed = feed;
    this.form = $("#kb-upload");
    this.jobsHost = $("#kb-jobs");
    this.results = $("#kb-results");
    this.jobs = new Map(); // task id -> {el, title, percent, message, state}
    // Events can beat the submit call's answer: kept briefly for the job about to appear.
    this.early = new Map(); // task id -> [event, ...]
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.vectorize();
    });
    const file = this.form.elements.file;
    file.addEventListener("change", () => {
      const label = file.closest(".file-drop").querySelector("span");
      label.textContent = file.files[0] ? file.files[0].name : "Choose a text file";
    });
    $("#kb-search").addEventListener("submit", (event) => {
      event.preventDefault();
      this.search(event.target.elements.q.value.trim());
    });
    feed.on("progress", (msg) => this.keepEarly(msg) || this.onProgress(msg));
    feed.on("task", (msg) => this.keepEarly(msg) || this.onTask(msg));
    feed.on("snapshot", (msg) => this.onSnapshot(msg));
    this.listHost = $("#kb-list");
    this.onBases = () => {};
    this.deleting = new Set(); // delete task ids asked for here, not finished yet
    this.deleted = new Set(); // ... finished before the submit call answered
    feed.on("task", (msg) => {
      if (msg.name !== "delete_knowledge_vectors" || !TERMINAL.has(msg.state)) return;
      if (this.deleting.delete(msg.task_id)) this.loadBases();
      else this.deleted.add(msg.task_id);
    });
  }

  /** The signed-in owner's knowledge bases, each with its documents on demand. */
  async loadBases() {
    let bases;
    try {
      bases = (await api.knowledgeBases()).knowledge_bases;
    } catch (err) {
      return;
    }
    replace($("#kb-names"), bases.map((b) => h("option", { value: b.kb_id })));
    this.onBases(bases);
    if (!bases.length) {
      replace(this.listHost, h("p", { class: "muted small" }, "No knowledge bases yet."));
      return;
    }
    replace(this.listHost, bases.map((base) => {
      const docs = h("ul", { class: "kb-docs" });
      const details = h("details", { dataset: { kbId: base.kb_id }, "data-testid": "kb-base" },
        h("summary", {}, `${base.kb_id} · ${base.documents} document${base.documents === 1 ? "" : "s"}`),
        docs);
      details.addEventListener("toggle", () => details.open && this.loadDocuments(base.kb_id, docs));
      return details;
    }));
  }

  async loadDocuments(kbId, host) {
    let documents;
    try {
      documents = (await api.documents(kbId)).documents;
    } catch (err) {
      replace(host, h("li", { class: "muted small" }, err.message));
      return;
    }
    replace(host, documents.map((doc) => h("li", { "data-testid": "kb-document" },
      h("span", { class: "ellipsis", title: doc.document_id },
        doc.title || doc.document_id, h("span", { class: "muted small" }, ` · ${doc.chunks} chunks`)),
      h("button", {
        class: "btn btn-small btn-danger-ghost", type: "button", "data-action": "delete-document",
        onclick: () => this.deleteDocument(kbId, doc.document_id),
      }, "Delete"))));
  }

  async deleteDocument(kbId, documentId) {
    if (!window.confirm(`Delete ${documentId} from ${kbId}? Its vectors are removed.`)) return;
    try {
      const reply = await api.deleteVectors({ kb_id: kbId, document_id: documentId });
      if (this.deleted.delete(reply.task_id)) this.loadBases();
      else this.deleting.add(reply.task_id);
      toast(`Deleting ${documentId}…`, "ok");
    } catch (err) {
      toast(`Delete failed: ${err.message}`, "error");
    }
  }

  keepEarly(msg) {
    if (this.jobs.has(msg.task_id) || msg.name !== "vectorize_document") return false;
    if (!this.early.has(msg.task_id)) {
      this.early.set(msg.task_id, []);
      if (this.early.size > 50) this.early.delete(this.early.keys().next().value);
    }
    this.early.get(msg.task_id).push(msg);
    return true;
  }

  // Knowledge bases belong to the signed-in owner: every user's "docs" is their own.
  get kbId() {
    return this.form.elements.kb_id.value.trim() || "docs";
  }

  async vectorize() {
    const elements = this.form.elements;
    const file = elements.file.files[0];
    let text = elements.text.value;
    let name = elements.title.value.trim();
    if (file) {
      if (file.size > MAX_BYTES) {
        toast(`${file.name} is larger than 2 MB`, "error");
        return;
      }
      text = await file.text();
      name = name || file.name;
    }
    if (!text.trim()) {
      toast("Choose a file or paste some text first", "error");
      return;
    }
    const title = name || text.trim().split("\n")[0].slice(0, 60);
    const body = {
      kb_id: this.kbId, document_id: `${slug(name || title)}-${Date.now().toString(36)}`,
      text, title,
    };
    let reply;
    try {
      reply = await api.vectorize(body);
    } catch (err) {
      toast(`Vectorize failed: ${err.message}`, "error");
      return;
    }
    this.form.reset();
    elements.kb_id.value = body.kb_id;
    this.form.querySelector(".file-drop span").textContent = "Choose a text file";
    const job = {
      title, percent: 0, message: "queued", state: "PENDING", taskId: reply.task_id, updates: 0,
    };
    job.el = h("div", { class: "kb-job", "data-testid": "kb-job" });
    this.jobs.set(reply.task_id, job);
    this.jobsHost.prepend(job.el);
    this.renderJob(job);
    for (const msg of this.early.get(reply.task_id) || []) {
      if (msg.type === "progress") this.onProgress(msg);
      else this.onTask(msg);
    }
    this.early.delete(reply.task_id);
    if (!job.done) this.feed.watch(reply.task_id);
  }

  renderJob(job) {
    job.el.dataset.state = job.state;
    job.el.dataset.progressEvents = String(job.updates);
    replace(job.el,
      h("div", { class: "kb-job-head" },
        h("span", { class: "kb-job-title ellipsis", title: job.title }, job.title),
        h("span", { class: "mono muted small" }, shortId(job.taskId))),
      progressBar(job.percent, job.message));
  }

  onProgress(msg) {
    const job = this.jobs.get(msg.task_id);
    if (!job || job.done) return;
    job.percent = msg.percent;
    job.message = msg.message;
    job.state = "STARTED";
    job.updates += 1;
    this.renderJob(job);
  }

  onSnapshot(msg) {
    const job = this.jobs.get(msg.task_id);
    if (!job || job.done) return;
    const progress = msg.task && msg.task.progress;
    if (progress) {
      job.percent = progress.percent;
      job.message = progress.message;
    }
    this.onTask({ ...msg, result: msg.task ? msg.task.result : undefined });
  }

  onTask(msg) {
    const job = this.jobs.get(msg.task_id);
    if (!job || job.done || !msg.state) return;
    job.state = msg.state;
    if (msg.state === "SUCCESS") {
      job.done = true;
      const result = msg.result || {};
      job.percent = 100;
      job.message = result.chunks !== undefined
        ? `indexed ${result.chunks} chunk${result.chunks === 1 ? "" : "s"} into ${result.kb_id || this.kbId}`
        : "indexed";
      this.feed.unwatch(job.taskId);
      this.loadBases();
    } else if (msg.state === "FAILURE" || msg.state === "REVOKED") {
      job.done = true;
      const error = msg.error;
      job.message = (error && (error.message || error)) || msg.state.toLowerCase();
      this.feed.unwatch(job.taskId);
    } else if (msg.state === "STARTED" && job.message === "queued") {
      job.message = "starting";
    }
    this.renderJob(job);
  }

  async search(query) {
    if (!query) return;
    replace(this.results, h("li", { class: "muted small" }, "searching…"));
    let reply;
    try {
      reply = await api.search(this.kbId, query, 5);
    } catch (err) {
      // 404: this owner has no such base yet (it exists once a document is vectorized).
      const text = err.status === 404
        ? `No knowledge base “${this.kbId}” yet: vectorize a document into it first.`
        : err.message;
      replace(this.results,
        h("li", { class: `${err.status === 404 ? "muted" : "error-text"} small` }, text));
      return;
    }
    const results = reply.results || [];
    if (!results.length) {
      replace(this.results, h("li", { class: "muted small" }, `Nothing in “${this.kbId}” matches.`));
      return;
    }
    replace(this.results, results.map((r) => h("li", { class: "kb-result" },
      h("div", { class: "kb-result-head" },
        h("span", { class: "kb-result-title ellipsis" }, r.title || r.document_id || "untitled"),
        h("span", { class: "score", title: "similarity" }, Number(r.score ?? 0).toFixed(3))),
      h("p", { class: "kb-result-text" }, r.text ?? r.chunk ?? ""),
      h("div", { class: "muted small mono" },
        `${r.document_id || ""}${r.chunk_index !== undefined ? ` #${r.chunk_index}` : ""}`),
    )));
  }
}
