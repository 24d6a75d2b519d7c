// AI usage over the last 24 hours (GET /api/v1/usage): tokens per hour by model, drawn as
// stacked SVG bars, and each model's tasks, tokens and cost. A user key sees its own.
import { api } from "./api.js";
import { $, h, replace, s } from "./dom.js";

const W = 360;
const H = 120;
const PAD = { left: 34, right: 4, top: 8, bottom: 18 };
const HOURS = 24;
const EVERY = 60_000;
const COLORS = 4; // .usage-m0 ... .usage-m3 in style.css

function hourStarts() {
  const now = new Date();
  now.setUTCMinutes(0, 0, 0);
  return Array.from({ length: HOURS }, (_, i) => new Date(now.getTime() - (HOURS - 1 - i) * 3_600_000));
}

function compact(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return String(n);
}

function usd(cost) {
  return `$${cost < 0.01 && cost > 0 ? cost.toPrecision(2) : cost.toFixed(2)}`;
}

export class UsagePanel {
  constructor() {
    this.chart = $("#usage-chart");
    this.table = $("#usage-models");
    setInterval(() => this.load(), EVERY);
  }

  async load() {
    try {
      const reply = await api.usage({ group_by: "model", granularity: "hour" });
      this.render(reply);
    } catch (err) {
      replace(this.table, h("p", { class: "error-text small" }, err.message));
    }
  }

  render(reply) {
    const models = reply.totals.map((row) => row.model);
    const color = (model) => `usage-m${models.indexOf(model) % COLORS}`;
    const byHour = new Map(reply.buckets.map((b) => [new Date(b.start).getTime(), b.totals]));
    const hours = hourStarts().map((start) => ({ start, rows: byHour.get(start.getTime()) || [] }));
    const most = Math.max(1, ...hours.map((hr) => hr.rows.reduce((n, r) => n + r.total_tokens, 0)));
    const plotW = W - PAD.left - PAD.right;
    const plotH = H - PAD.top - PAD.bottom;
    const slot = plotW / HOURS;
    const bars = hours.map((hr, i) => {
      let top = PAD.top + plotH;
      const x = PAD.left + i * slot + slot * 0.15;
      const parts = hr.rows.map((row) => {
        const height = (row.total_tokens / most) * plotH;
        top -= height;
        return s("rect", { x, y: top, width: slot * 0.7, height, class: color(row.model) },
          s("title", {}, `${hr.start.toISOString().slice(11, 16)} UTC ${row.model}: ${row.total_tokens} tokens, ${usd(row.cost)}`));
      });
      return s("g", {}, ...parts);
    });
    const axis = [0, most].map((v) => s("text", { x: PAD.left - 4, y: PAD.top + plotH - (v / most) * plotH + 4, "text-anchor": "end" }, compact(v)));
    const ends = [
      s("text", { x: PAD.left, y: H - 4, class: "axis" }, "24 h ago"),
      s("text", { x: W - PAD.right, y: H - 4, "text-anchor": "end", class: "axis" }, "now"),
    ];
    replace(this.chart,
      s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "AI tokens per hour by model" },
        s("line", { x1: PAD.left, x2: W - PAD.right, y1: PAD.top + plotH, y2: PAD.top + plotH, class: "base" }),
        ...axis, ...bars, ...ends),
    );
    if (!reply.totals.length) {
      replace(this.table, h("p", { class: "muted small" }, "No AI tasks in the last 24 hours."));
      return;
    }
    replace(this.table,
      h("table", { class: "usage-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Model"), h("th", {}, "Tasks"), h("th", {}, "Tokens"), h("th", {}, "Cost"))),
        h("tbody", {}, ...reply.totals.map((row) =>
          h("tr", { dataset: { model: row.model } },
            h("td", {}, h("span", { class: `usage-key ${color(row.model)}` }), row.model),
            h("td", {}, row.tasks),
            h("td", { title: `${row.prompt_tokens} prompt + ${row.completion_tokens} completion` }, compact(row.total_tokens)),
            h("td", { title: row.unpriced_tasks ? "this model has no price (MODEL_PRICES): counted as $0" : "" },
              row.unpriced_tasks ? `${usd(row.cost)}*` : usd(row.cost)),
          ))),
      ),
    );
  }
}
