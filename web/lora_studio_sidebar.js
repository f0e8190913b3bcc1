// LoRA Studio sidebar tab: datasets (upload with progress, report with thumbnails of flagged pictures,
// delete one's own) and the job table (status, step/ETA, loss sparkline, preview, actions) with a job page
// (loss and learning-rate curves, previews, bias grid, dataset report, settings off the preset, command).
// Everything comes from the pack's /lora_studio/... routes (nodes/routes.py); no ComfyUI imports here:
// `app` and `api` are passed in by lora_studio.js.

const POLL_MS = 2000;
// ComfyUI serves this file as /extensions/<the pack's folder>/… and the templates as /api/workflow_templates/<the
// same folder>/…; the folder is the user's (a git clone, the registry's name), so it is read, not written here.
const PACK_FOLDER = decodeURIComponent(new URL(import.meta.url).pathname.split("/").at(-2));
const TEMPLATE = `/workflow_templates/${encodeURIComponent(PACK_FOLDER)}/${encodeURIComponent("Train a LoRA from a dataset folder")}.json`;

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(e.dataset, v);
    else if (k === "style" && typeof v === "object") Object.assign(e.style, v);
    else e[k] = v;
  }
  e.append(...children.filter((c) => c != null));
  return e;
}

export function fmtEta(s) {
  if (s == null || !Number.isFinite(s)) return "";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, sec = s % 60;
  return h ? `${h}:${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}` : `${m}:${String(sec).padStart(2, "0")}`;
}

/** An inline SVG polyline of `values` (a sparkline or a curve). */
export function curve(values, w, h, cls = "ls-spark") {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  svg.setAttribute("class", cls);
  const v = (values || []).filter((x) => Number.isFinite(x));
  if (v.length >= 2) {
    const lo = Math.min(...v), hi = Math.max(...v), span = hi - lo || 1;
    const pts = v.map((x, i) => `${((i / (v.length - 1)) * (w - 2) + 1).toFixed(1)},${(h - 1 - ((x - lo) / span) * (h - 2)).toFixed(1)}`);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", "currentColor");
    line.setAttribute("stroke-width", "1.2");
    svg.append(line);
  }
  return svg;
}

export function createSidebar({ app, api, strings, onStrings, copyText }) {
  const t = () => strings.sidebar;
  const state = { view: "list", job: null, timer: 0, root: null, lastUpload: null, message: "" };

  async function call(path, opts = {}) {
    const r = await api.fetchApi(path, opts);
    let data = null;
    try { data = await r.json(); } catch { data = null; }
    if (!r.ok) throw new Error(data?.error || `HTTP ${r.status}`);
    return data;
  }

  const blobs = new Map(); // path → object URL: a table refreshed every 2 s fetches each picture once
  function blobUrl(path, cache = true) {
    if (cache && blobs.has(path)) return blobs.get(path);
    const p = api.fetchApi(path).then(async (r) => { // with the user's header (multi-user): an <img src> has none
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      return URL.createObjectURL(await r.blob());
    });
    if (cache) p.catch(() => blobs.delete(path));
    if (cache) blobs.set(path, p);
    return p;
  }

  function img(path, cls, title = "") {
    const i = el("img", { className: cls, title, alt: title });
    blobUrl(path).then((u) => { i.src = u; }).catch(() => { i.classList.add("ls-missing"); });
    return i;
  }

  async function download(path, name) {
    const a = el("a", { href: await blobUrl(path, false), download: name });
    document.body.append(a);
    a.click();
    a.remove();
  }

  function say(text, error = false) {
    state.message = text;
    const m = state.root?.querySelector(".ls-message");
    if (m) { m.textContent = text; m.classList.toggle("ls-error", error); }
  }

  // ------------------------------------------------------------------ datasets
  function upload(files) {
    const list = [...files];
    if (!list.length) return Promise.resolve(null);
    const form = new FormData();
    for (const f of list) form.append("file", f, f.name);
    const bar = state.root.querySelector(".ls-progress");
    const label = state.root.querySelector(".ls-upload-status");
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest(); // fetch() reports no upload progress
      xhr.open("POST", api.apiURL("/lora_studio/datasets"));
      if (api.user) xhr.setRequestHeader("Comfy-User", api.user);
      xhr.upload.onprogress = (e) => {
        if (!e.lengthComputable) return;
        bar.value = e.loaded / e.total;
        label.textContent = `${t().uploading} ${Math.round((100 * e.loaded) / e.total)} %`;
        if (e.loaded === e.total) label.textContent = t().checking;
      };
      xhr.onload = () => {
        let data = null;
        try { data = JSON.parse(xhr.responseText); } catch { data = null; }
        bar.value = 0;
        if (xhr.status === 201 && data) {
          state.lastUpload = data;
          label.textContent = `${t().uploaded} “${data.name}”`;
          label.classList.remove("ls-error");
        } else {
          state.lastUpload = null;
          label.textContent = data?.error || `HTTP ${xhr.status}`;
          label.classList.add("ls-error");
        }
        renderReport();
        refreshDatasets();
        resolve(data);
      };
      xhr.onerror = () => { label.textContent = "network error"; label.classList.add("ls-error"); resolve(null); };
      xhr.send(form);
    });
  }

  function renderReport() {
    const box = state.root?.querySelector(".ls-report");
    if (!box) return;
    const d = state.lastUpload;
    if (!d) { box.replaceChildren(); return; }
    const rep = d.report || {};
    const flagged = d.flagged || [];
    box.replaceChildren(...[
      el("pre", { className: "ls-report-text", textContent: d.report_text || "" }),
      flagged.length ? el("div", { className: "ls-sub", textContent: `${t().flagged} (${flagged.length})` }) : null,
      el("div", { className: "ls-thumbs" }, ...flagged.map((f) => el("figure", { className: "ls-flag" },
        img(`/lora_studio/datasets/${encodeURIComponent(d.name)}/thumb?file=${encodeURIComponent(f.file)}`, "ls-thumb", f.file),
        el("figcaption", {}, el("b", { textContent: f.codes.join(", ") }), el("br"),
          el("span", { textContent: f.file }), el("br"), el("i", { textContent: f.caption || "" }))))),
    ].filter(Boolean)); // replaceChildren would write "null" for a missing part
    box.dataset.ok = String(!!rep.ok);
  }

  async function refreshDatasets() {
    const box = state.root?.querySelector(".ls-datasets");
    if (!box) return;
    let data;
    try { data = await call("/lora_studio/datasets"); } catch (e) { say(String(e.message), true); return; }
    box.replaceChildren(...data.datasets.map((d) => {
      const rep = d.report;
      const status = rep == null ? t().notChecked
        : `${rep.ok ? t().ready : t().blocked} · ${rep.images ?? "?"} ${t().images} · ${rep.warnings} ${t().warnings}`;
      const row = el("div", { className: "ls-ds", dataset: { name: d.name } },
        el("span", { className: "ls-ds-name", textContent: d.name }),
        el("span", { className: "ls-dim", textContent: status }));
      if (d.mine) {
        row.append(el("button", { className: "ls-del", textContent: t().delete, title: t().confirmDelete, onclick: async () => {
          if (!globalThis.confirm?.(`${t().confirmDelete}\n${d.name}`)) return;
          try { await call(`/lora_studio/datasets/${encodeURIComponent(d.name)}`, { method: "DELETE" }); }
          catch (e) { say(e.message, true); }
          refreshDatasets();
        } }));
      }
      return row;
    }));
  }

  // ------------------------------------------------------------------ jobs
  function statusText(j) {
    const s = t().status[j.status] ?? j.status;
    if (j.status === "running" && j.step) {
      const eta = fmtEta(j.eta_s);
      return `${s} · ${t().step} ${j.step}/${j.steps ?? "?"}${eta ? ` · ${t().eta} ${eta}` : ""}`;
    }
    return j.status === "failed" && j.message ? `${s}: ${j.message}` : s;
  }

  function actions(j, page = null) {
    const btn = (cls, label, fn) => el("button", { className: cls, textContent: label, onclick: async (e) => {
      e.stopPropagation();
      try { await fn(); } catch (err) { say(err.message, true); }
    } });
    const out = [];
    if (j.cancellable) out.push(btn("ls-cancel", t().cancel, async () => {
      await call(`/lora_studio/jobs/${encodeURIComponent(j.id)}/cancel`, { method: "POST" });
      refreshJobs();
    }));
    if (!j.queued) {
      if (j.resumable) out.push(btn("ls-resume", t().resume, () => variantGraph(j.id, true)));
      out.push(btn("ls-variant", t().variant, () => variantGraph(j.id, false)));
      if (j.command) out.push(btn("ls-copy", t().copy, async () => { await copyText(j.command); say(t().copied); }));
      if (j.lora) out.push(btn("ls-dl-lora", t().downloadLora, () => download(`/lora_studio/jobs/${encodeURIComponent(j.id)}/lora`, j.lora)));
      out.push(btn("ls-dl-record", t().downloadRecord, () => download(`/lora_studio/jobs/${encodeURIComponent(j.id)}/record`, `${j.id}.json`)));
    }
    return el("div", { className: "ls-actions" }, ...out);
  }

  function jobRow(j) {
    return el("div", { className: `ls-job ls-${j.status}`, dataset: { id: j.id, status: j.status }, onclick: () => openJob(j.id) },
      el("div", { className: "ls-job-main" },
        el("div", { className: "ls-job-text" },
          el("div", { className: "ls-job-name", textContent: j.name ?? "" }),
          el("div", { className: "ls-status", textContent: statusText(j) }),
          el("div", { className: "ls-dim", textContent: `${j.preset ?? ""} · ${j.dataset ?? ""} · ${j.base_model ?? ""}` }),
          el("div", { className: "ls-dim", textContent: `${(j.created ?? "").replace("T", " ").slice(0, 16)}${
            j.final_loss != null ? ` · ${t().loss} ${j.final_loss.toFixed(4)}` : ""}` }),
          curve(j.sparkline, 120, 22)),
        j.preview ? img(`/lora_studio/jobs/${encodeURIComponent(j.id)}/preview/${encodeURIComponent(j.preview)}`,
          "ls-preview-thumb", j.preview) : null),
      actions(j));
  }

  async function refreshJobs() {
    if (state.view !== "list") return refreshJob();
    const box = state.root?.querySelector(".ls-jobs");
    if (!box) return;
    let data;
    try { data = await call("/lora_studio/jobs"); } catch (e) { say(e.message, true); return; }
    const key = JSON.stringify([data.jobs, strings.sidebar.title, strings.sidebar.cancel]);
    if (key === state.jobsKey && box.childElementCount) return; // unchanged: keep the DOM (and its pictures)
    state.jobsKey = key;
    state.jobs = data.jobs;
    box.replaceChildren(data.jobs.length
      ? el("div", { className: "ls-table" }, ...data.jobs.map(jobRow))
      : el("div", { className: "ls-dim", textContent: t().noJobs }));
  }

  // ------------------------------------------------------------------ a job's page
  async function openJob(id) {
    state.view = "job";
    state.job = id;
    render();
  }

  async function refreshJob() {
    const box = state.root?.querySelector(".ls-jobpage");
    if (!box) return;
    let page;
    try { page = await call(`/lora_studio/jobs/${encodeURIComponent(state.job)}`); } catch (e) { say(e.message, true); return; }
    const key = JSON.stringify([page.summary, page.previews, page.bias_grid, strings.sidebar.title]);
    if (key === state.pageKey && box.childElementCount) return; // unchanged: keep the DOM
    state.pageKey = key;
    state.page = page;
    const s = page.summary, rec = page.record || {};
    const m = rec.metrics || {};
    const losses = m.losses || page.live?.losses || [];
    const id = encodeURIComponent(state.job);
    const differs = Object.entries(page.differs || {});
    box.replaceChildren(...[
      el("h3", { className: "ls-job-title", textContent: s.name ?? state.job }),
      el("div", { className: "ls-status", textContent: statusText(s) }),
      actions(s, page),
      el("div", { className: "ls-sub", textContent: t().lossCurve }), curve(losses, 300, 70, "ls-curve ls-loss-curve"),
      el("div", { className: "ls-sub", textContent: t().lrCurve }), curve(m.learning_rates || [], 300, 50, "ls-curve ls-lr-curve"),
      el("div", { className: "ls-sub", textContent: `${t().previews} (${page.previews.length})` }),
      el("div", { className: "ls-thumbs ls-previews" }, ...page.previews.map((p) => img(`/lora_studio/jobs/${id}/preview/${encodeURIComponent(p)}`, "ls-preview", p))),
      page.bias_grid ? el("div", { className: "ls-sub", textContent: t().biasGrid }) : null,
      page.bias_grid ? img(`/lora_studio/jobs/${id}/bias_grid`, "ls-bias-grid", t().biasGrid) : null,
      el("div", { className: "ls-sub", textContent: t().differs }),
      differs.length ? el("table", { className: "ls-differs" },
        el("tr", {}, el("th", { textContent: t().setting }), el("th", { textContent: t().value }), el("th", { textContent: t().presetValue })),
        ...differs.map(([k, v]) => el("tr", {}, el("td", { textContent: k }), el("td", { textContent: JSON.stringify(v.value) }),
          el("td", { textContent: JSON.stringify(v.preset) })))) : el("div", { className: "ls-dim", textContent: t().none }),
      el("div", { className: "ls-sub", textContent: t().report }),
      el("pre", { className: "ls-report-text", textContent: reportText(rec.dataset?.report) }),
      el("div", { className: "ls-sub", textContent: t().command }),
      el("textarea", { className: "ls-command", readOnly: true, value: s.command || "" }),
    ].filter(Boolean)); // replaceChildren would write "null" for a missing part
  }

  function reportText(rep) {
    if (!rep) return t().none;
    const lines = [...(rep.stats?.summary || [])];
    for (const f of [...(rep.problems || []), ...(rep.warnings || [])]) lines.push(`[${f.code}] ${f.file ? `${f.file}: ` : ""}${f.message}`);
    return lines.join("\n");
  }

  /** n frames drawn (or 100 ms each where the tab is hidden and draws none). */
  const frames = async (n) => {
    for (let i = 0; i < n; i++) {
      await new Promise((r) => { requestAnimationFrame(r); setTimeout(r, 100); });
    }
  };

  /** Configure → Train → Save with a job's settings in the editor; `queue` runs it (Resume). */
  async function variantGraph(id, queue) {
    const page = await call(`/lora_studio/jobs/${encodeURIComponent(id)}`);
    const tpl = await call(TEMPLATE);
    await app.loadGraphData(tpl, true, true, `${page.summary.name || "lora"} variant`);
    const ckpt = page.variant?.LoraStudio_ConfigureLoRA?.ckpt_name;
    const apply = () => { // the job's values where a widget shows another
      for (const node of app.graph._nodes) {
        const values = page.variant?.[node.type] || {};
        for (const w of node.widgets ?? []) {
          const v = Object.prototype.hasOwnProperty.call(values, w.name) ? values[w.name]
            : (w.name === "ckpt_name" && ckpt ? ckpt : undefined);
          if (v === undefined || w.value === v) continue;
          w.value = v;
          w.callback?.(v);
        }
      }
    };
    // 1.58 mounts a loaded graph's text-box widgets (Configure LoRA's extra) a frame or two later and then
    // shows the template's value again: set ours after that, and once more where a late mount undid it
    await frames(2);
    apply();
    await frames(2);
    apply();
    app.graph.setDirtyCanvas(true, true);
    say(queue ? t().resumed : t().variantLoaded);
    if (queue) await app.queuePrompt(0, 1);
    return page.variant;
  }

  // ------------------------------------------------------------------ the tab
  function render() {
    const root = state.root;
    if (!root) return;
    const input = el("input", { type: "file", multiple: true, accept: ".zip,image/*,.txt,.caption,.jsonl", className: "ls-file",
      onchange: () => upload(input.files) });
    const drop = el("div", { className: "ls-drop", textContent: t().drop, onclick: () => input.click() });
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("ls-over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("ls-over"));
    drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("ls-over"); upload(e.dataTransfer.files); });
    const list = state.view === "list";
    root.replaceChildren(el("div", { className: "lora-studio-sidebar" },
      el("h2", { textContent: t().title }),
      el("div", { className: "ls-message", textContent: state.message }),
      list ? el("section", {},
        el("h3", { textContent: t().datasets }), drop, input,
        el("progress", { className: "ls-progress", max: 1, value: 0 }),
        el("div", { className: "ls-upload-status ls-dim" }),
        el("div", { className: "ls-report" }),
        el("div", { className: "ls-datasets" })) : null,
      el("section", {},
        list ? el("h3", { textContent: t().jobs })
          : el("button", { className: "ls-back", textContent: t().back, onclick: () => { state.view = "list"; render(); } }),
        el("div", { className: list ? "ls-jobs" : "ls-jobpage" }))));
    state.jobsKey = state.pageKey = null;
    if (list) { renderReport(); refreshDatasets(); }
    refreshJobs();
  }

  function poll() {
    if (!state.root?.isConnected) { clearInterval(state.timer); state.timer = 0; return; }
    refreshJobs();
  }

  onStrings.add(() => render());
  const tab = {
    id: "lora-studio",
    icon: "pi pi-sparkles",
    title: "LoRA Studio",
    tooltip: "LoRA Studio",
    type: "custom",
    render(elRoot) {
      state.root = elRoot;
      render();
      clearInterval(state.timer);
      state.timer = setInterval(poll, POLL_MS);
    },
  };
  return { tab, state, upload, openJob, variantGraph, refreshJobs, refreshDatasets, render };
}

export const SIDEBAR_CSS = `
.lora-studio-sidebar { padding: 8px; font: 12px/1.4 sans-serif; color: var(--fg-color, #ddd); overflow-y: auto; height: 100%; box-sizing: border-box; }
.lora-studio-sidebar h2 { font-size: 15px; margin: 0 0 6px; }
.lora-studio-sidebar h3 { font-size: 13px; margin: 10px 0 4px; }
.lora-studio-sidebar .ls-dim { color: var(--descrip-text, #999); font-size: 11px; }
.lora-studio-sidebar .ls-error { color: #ff6b6b; }
.lora-studio-sidebar .ls-drop { border: 2px dashed var(--border-color, #555); border-radius: 8px; padding: 14px; text-align: center; cursor: pointer; }
.lora-studio-sidebar .ls-drop.ls-over { border-color: #4caf50; }
.lora-studio-sidebar .ls-file { display: none; }
.lora-studio-sidebar .ls-progress { width: 100%; height: 6px; }
.lora-studio-sidebar .ls-report-text { white-space: pre-wrap; font: 10px/1.3 monospace; max-height: 160px; overflow: auto; background: var(--comfy-input-bg, #222); padding: 4px; border-radius: 4px; }
.lora-studio-sidebar .ls-thumbs { display: flex; flex-wrap: wrap; gap: 6px; }
.lora-studio-sidebar .ls-flag { margin: 0; width: 110px; font-size: 10px; }
.lora-studio-sidebar .ls-thumb, .lora-studio-sidebar .ls-preview { width: 96px; height: 96px; object-fit: cover; border-radius: 4px; background: #333; }
.lora-studio-sidebar .ls-preview-thumb { width: 64px; height: 64px; object-fit: cover; border-radius: 4px; }
.lora-studio-sidebar .ls-bias-grid { max-width: 100%; border-radius: 4px; }
.lora-studio-sidebar .ls-ds { display: flex; gap: 6px; align-items: center; padding: 2px 0; border-bottom: 1px solid var(--border-color, #333); }
.lora-studio-sidebar .ls-ds-name { font-weight: 600; flex: 0 0 auto; }
.lora-studio-sidebar .ls-ds .ls-dim { flex: 1; }
.lora-studio-sidebar .ls-job { cursor: pointer; padding: 5px 2px; border-bottom: 1px solid var(--border-color, #333); }
.lora-studio-sidebar .ls-job-main { display: flex; gap: 6px; align-items: flex-start; }
.lora-studio-sidebar .ls-job-text { flex: 1; min-width: 0; overflow: hidden; }
.lora-studio-sidebar .ls-job:hover { background: rgba(255,255,255,0.04); }
.lora-studio-sidebar .ls-job-name { font-weight: 600; }
.lora-studio-sidebar .ls-running .ls-status { color: #64b5f6; }
.lora-studio-sidebar .ls-finished .ls-status { color: #81c784; }
.lora-studio-sidebar .ls-failed .ls-status, .lora-studio-sidebar .ls-stopped .ls-status { color: #e57373; }
.lora-studio-sidebar .ls-spark { color: #ffb347; display: block; }
.lora-studio-sidebar .ls-curve { color: #ffb347; display: block; width: 100%; background: var(--comfy-input-bg, #222); border-radius: 4px; }
.lora-studio-sidebar .ls-lr-curve { color: #64b5f6; }
.lora-studio-sidebar .ls-actions { display: flex; flex-wrap: wrap; gap: 3px; margin: 3px 0; }
.lora-studio-sidebar button { font: inherit; font-size: 11px; cursor: pointer; padding: 1px 6px; border-radius: 4px;
  color: var(--input-text, #ddd); background: var(--comfy-menu-bg, #333); border: 1px solid var(--border-color, #555); }
.lora-studio-sidebar .ls-sub { font-weight: 600; margin-top: 8px; }
.lora-studio-sidebar .ls-differs { border-collapse: collapse; font-size: 11px; }
.lora-studio-sidebar .ls-differs td, .lora-studio-sidebar .ls-differs th { padding: 1px 6px; border-bottom: 1px solid var(--border-color, #333); text-align: left; }
.lora-studio-sidebar .ls-command { width: 100%; min-height: 60px; font: 10px/1.3 monospace; box-sizing: border-box; }
`;
