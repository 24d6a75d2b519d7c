// The throughput chart: finished tasks per minute, drawn as SVG bars.
import { replace, s } from "./dom.js";

const W = 640;
const H = 190;
const PAD = { left: 34, right: 8, top: 12, bottom: 24 };

function niceMax(value) {
  if (value <= 4) return 4;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
  return value;
}

function label(minute) {
  const d = new Date(minute); // ISO 8601
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

/** points: [{minute: ISO 8601, finished: n}], oldest first; the last is this minute. */
export function renderThroughput(host, points) {
  const data = points && points.length ? points : [];
  const max = niceMax(Math.max(0, ...data.map((p) => p.finished)));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const slot = data.length ? plotW / data.length : plotW;
  const barW = Math.max(4, slot * 0.62);
  const y = (v) => PAD.top + plotH - (v / max) * plotH;

  const grid = [0, max / 2, max].map((v) =>
    s("g", { class: "grid" },
      s("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }),
      s("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end" }, Number.isInteger(v) ? v : v.toFixed(1)),
    ),
  );
  const bars = data.map((p, i) => {
    const x = PAD.left + i * slot + (slot - barW) / 2;
    const h = Math.max(p.finished ? 2 : 0, (p.finished / max) * plotH);
    const current = i === data.length - 1;
    return s("g", { class: current ? "bar bar-current" : "bar" },
      s("title", {}, `${label(p.minute)}: ${p.finished} finished${current ? " (so far)" : ""}`),
      s("rect", { x: x - (slot - barW) / 2, y: PAD.top, width: slot, height: plotH, class: "bar-hit" }),
      s("rect", { x, y: PAD.top + plotH - h, width: barW, height: h, rx: 3 }),
      p.finished ? s("text", { x: x + barW / 2, y: PAD.top + plotH - h - 4, "text-anchor": "middle", class: "bar-value" }, p.finished) : null,
      i % 2 === data.length % 2 || current
        ? s("text", { x: x + barW / 2, y: H - 6, "text-anchor": "middle", class: "axis" }, current ? "now" : label(p.minute))
        : null,
    );
  });
  replace(host,
    s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Tasks finished per minute" },
      ...grid, ...bars),
  );
}
