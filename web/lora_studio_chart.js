// LoRA Studio — the live loss chart's data and drawing. No ComfyUI imports: runs in Node.js for tests.
//
// Points arrive one per optimizer step from the server's `lora_studio.loss` event
// ({node, step, total, loss, lr, eta_s}); a step that does not follow the last one starts a new run.

export const SMOOTHING = 0.9; // TensorBoard's default weight for the debiased moving average

export function newLossState() {
  return { points: [], total: 0, eta_s: null, lr: null, nonFinite: 0, startedAt: null, updatedAt: null };
}

/** Add one `lora_studio.loss` event to a chart state. Step 1 (or any step not after the last) starts over. */
export function addLossPoint(state, detail) {
  const step = Number(detail.step);
  const last = state.points[state.points.length - 1];
  if (!Number.isFinite(step)) return state;
  if (step <= 1 || (last && step <= last.step)) {
    state.points.length = 0; // in place: whoever holds node.lossPoints sees the new run
    state.nonFinite = 0;
    state.startedAt = Date.now();
  }
  const loss = Number(detail.loss);
  if (!Number.isFinite(loss)) state.nonFinite += 1;
  state.points.push({ step, loss, lr: Number(detail.lr) });
  state.total = Number(detail.total) || state.total;
  state.eta_s = detail.eta_s == null ? null : Number(detail.eta_s);
  state.lr = detail.lr == null ? null : Number(detail.lr);
  state.updatedAt = Date.now();
  return state;
}

/** Replace the points with a finished run's losses (one per step, from the node's `ui.loss` output). */
export function setLossHistory(state, losses) {
  state.points.length = 0;
  state.nonFinite = 0;
  losses.forEach((v, i) => {
    const loss = Number(v);
    if (!Number.isFinite(loss)) state.nonFinite += 1;
    state.points.push({ step: i + 1, loss, lr: null });
  });
  state.total = losses.length;
  state.eta_s = 0;
  state.updatedAt = Date.now();
  return state;
}

/** Debiased exponential moving average (as TensorBoard draws it); non-finite values are skipped. */
export function smoothLosses(values, weight = SMOOTHING) {
  const out = [];
  let ema = 0;
  let n = 0;
  let last = NaN;
  for (const v of values) {
    if (Number.isFinite(v)) {
      ema = ema * weight + (1 - weight) * v;
      n += 1;
      last = weight === 0 ? v : ema / (1 - Math.pow(weight, n));
    }
    out.push(last);
  }
  return out;
}

/** Seconds as m:ss or h:mm:ss, the same text the node's progress line uses. */
export function formatEta(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  const two = (x) => String(x).padStart(2, "0");
  return s >= 3600 ? `${Math.floor(s / 3600)}:${two(Math.floor(s / 60) % 60)}:${two(s % 60)}`
    : `${Math.floor(s / 60)}:${two(s % 60)}`;
}

export function formatLoss(x) {
  if (!Number.isFinite(x)) return String(x);
  return Math.abs(x) >= 0.01 || x === 0 ? x.toFixed(4) : x.toExponential(2);
}

/** Does an event's node id (e.g. "12", or "5:12" inside a subgraph) belong to this graph node? */
export function matchesNode(eventNode, nodeId) {
  if (eventNode == null) return false;
  const e = String(eventNode);
  const id = String(nodeId);
  return e === id || e.endsWith(":" + id);
}

/** The caption above the chart: "step 12/800 · loss 0.1234 · ETA 3:12". */
export function chartCaption(state, t) {
  const last = state.points[state.points.length - 1];
  if (!last) return t.waiting;
  const smooth = smoothLosses(state.points.map((p) => p.loss));
  const parts = [`${t.step} ${last.step}/${state.total || "?"}`, `${t.loss} ${formatLoss(last.loss)}`,
    `${t.smoothed} ${formatLoss(smooth[smooth.length - 1])}`];
  if (state.eta_s != null) parts.push(`${t.eta} ${formatEta(last.step >= state.total ? 0 : state.eta_s)}`);
  return parts.join(" · ");
}

/** Draw the chart into a 2D context of css size w×h (the caller scales for devicePixelRatio). */
export function drawLossChart(ctx, w, h, state, t, colors = {}) {
  const c = { bg: "#1b1b1b", grid: "#3a3a3a", text: "#c8c8c8", raw: "rgba(120,170,255,0.45)",
    smooth: "#ffb347", warn: "#ff6b6b", ...colors };
  ctx.save();
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = c.bg;
  ctx.fillRect(0, 0, w, h);
  ctx.font = "11px sans-serif";
  ctx.textBaseline = "top";
  ctx.fillStyle = c.text;
  ctx.fillText(chartCaption(state, t), 6, 4, w - 12);

  const pts = state.points.filter((p) => Number.isFinite(p.loss));
  const left = 46, right = w - 8, top = 22, bottom = h - 18;
  if (right - left < 20 || bottom - top < 20) { ctx.restore(); return; }
  ctx.strokeStyle = c.grid;
  ctx.lineWidth = 1;
  ctx.strokeRect(left + 0.5, top + 0.5, right - left, bottom - top);
  if (pts.length === 0) { ctx.restore(); return; }

  let lo = Infinity, hi = -Infinity; // no Math.min(...pts): a long run has more points than arguments fit
  for (const p of pts) { lo = Math.min(lo, p.loss); hi = Math.max(hi, p.loss); }
  if (hi - lo < 1e-12) { lo -= Math.abs(lo) * 0.1 || 0.1; hi += Math.abs(hi) * 0.1 || 0.1; }
  const pad = (hi - lo) * 0.08;
  lo -= pad; hi += pad;
  const first = Math.min(1, pts[0].step);
  const lastStep = Math.max(state.total || 0, pts[pts.length - 1].step, first + 1);
  const x = (s) => left + ((s - first) / (lastStep - first)) * (right - left);
  const y = (v) => bottom - ((v - lo) / (hi - lo)) * (bottom - top);

  ctx.fillStyle = c.text;
  ctx.textBaseline = "middle";
  for (const v of [hi - pad, (hi + lo) / 2, lo + pad]) {
    ctx.fillText(formatLoss(v), 4, y(v), left - 8);
    ctx.strokeStyle = c.grid;
    ctx.beginPath(); ctx.moveTo(left, y(v) + 0.5); ctx.lineTo(right, y(v) + 0.5); ctx.stroke();
  }
  ctx.textBaseline = "top";
  ctx.fillText(String(first), left, bottom + 3);
  const endLabel = String(lastStep);
  ctx.fillText(endLabel, right - ctx.measureText(endLabel).width, bottom + 3);

  ctx.strokeStyle = c.raw;
  ctx.fillStyle = c.raw;
  ctx.lineWidth = 1;
  ctx.beginPath();
  const every = Math.max(1, Math.ceil(pts.length / 2000)); // a few thousand segments are plenty for ~400 px
  pts.forEach((p, i) => {
    if (i % every && i !== pts.length - 1) return;
    i ? ctx.lineTo(x(p.step), y(p.loss)) : ctx.moveTo(x(p.step), y(p.loss));
  });
  ctx.stroke();
  if (pts.length < 200) for (const p of pts) ctx.fillRect(x(p.step) - 1.5, y(p.loss) - 1.5, 3, 3);

  const sm = smoothLosses(pts.map((p) => p.loss));
  ctx.strokeStyle = c.smooth;
  ctx.lineWidth = 2;
  ctx.beginPath();
  pts.forEach((p, i) => {
    if (i % every && i !== pts.length - 1) return;
    i ? ctx.lineTo(x(p.step), y(sm[i])) : ctx.moveTo(x(p.step), y(sm[i]));
  });
  ctx.stroke();

  const end = pts.length - 1; // the newest point, easy to find while a run is young
  ctx.fillStyle = c.smooth;
  ctx.beginPath();
  ctx.arc(x(pts[end].step), y(sm[end]), 3, 0, 2 * Math.PI);
  ctx.fill();

  if (state.nonFinite > 0) {
    ctx.fillStyle = c.warn;
    ctx.textBaseline = "bottom";
    ctx.fillText(`${state.nonFinite} × NaN/inf`, left + 4, bottom - 2);
  }
  ctx.restore();
}
