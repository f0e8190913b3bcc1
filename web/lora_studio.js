// LoRA Studio frontend extension (plain ES module, no build step).
//
// Train LoRA:     a live loss chart on the node, fed by the server's "lora_studio.loss" websocket
//                 event ({node, step, total, loss, lr, eta_s}, one per step). The points are kept on
//                 the node as `node.lossPoints` ([{step, loss, lr}]); a run that starts at step 1 clears them.
//                 If the node returns {"ui": {"loss": [one loss per step]}}, that history replaces them
//                 when it finishes, and a cached re-run shows it too.
// Configure LoRA: the chosen preset's values with this node's overrides (from web/presets.json, generated
//                 by tools/generate.py from trainer/presets.py and trainer/config.py), and after the node ran, the headless command with a copy
//                 button. The command comes from the node's `ui` output: {"ui": {"command": [text]}}.
//
// Callbacks already on the node type or node (onNodeCreated, onExecuted, onConfigure, onRemoved,
// widget callbacks) are chained, never replaced.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { addLossPoint, drawLossChart, matchesNode, newLossState, setLossHistory } from "./lora_studio_chart.js";
import { buildConfigurePanel, copyText, DEFAULT_STRINGS, findPreset, injectStyle } from "./lora_studio_panel.js";
import { createSidebar, SIDEBAR_CSS } from "./lora_studio_sidebar.js";
import { buildCommand } from "./lora_studio_command.js";

const TRAIN_NODE = "LoraStudio_TrainLoRA";
const CONFIGURE_NODE = "LoraStudio_ConfigureLoRA";
const LOSS_EVENT = "lora_studio.loss";
const CHART_HEIGHT = 200;
const PANEL_HEIGHT = 270;

injectStyle(document);
{
  const style = document.createElement("style");
  style.id = "lora-studio-sidebar-style";
  style.textContent = SIDEBAR_CSS;
  document.head.appendChild(style);
}
const LANGUAGE_SETTING = "LoraStudio.Language";
const LANGUAGES = ["auto", "en", "de"];
const strings = JSON.parse(JSON.stringify(DEFAULT_STRINGS));
let i18n = null; // everything /i18n serves: {lang: {loraStudio, nodeDefs}}
const configureRefreshers = new Set(); // every Configure LoRA's live command, redone when a Load Dataset changes
let builderEnv = null; // the server's folders and checkpoint paths for the live command (GET /lora_studio/builder)
const builderReady = api.fetchApi("/lora_studio/builder")
  .then((r) => (r.ok ? r.json() : null)).then((env) => { builderEnv = env; return env; })
  .catch(() => null);
const myPrompts = new Set(); // prompts this browser session queued (ComfyUI tells only the session that queued)
const onStrings = new Set(); // re-render hooks of live panels/charts
const trainNodes = new Set();
let presets = null;
const presetsReady = fetch(new URL("./presets.json", import.meta.url))
  .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`presets.json: HTTP ${r.status}`))))
  .then((data) => { presets = data; return data; })
  .catch((e) => { console.warn("[LoRA Studio] preset table not loaded", e); presets = {}; return presets; });

function chain(target, name, fn) {
  const previous = target[name];
  target[name] = function (...args) {
    const r = previous?.apply(this, args);
    fn.apply(this, args);
    return r;
  };
}

function deepMerge(into, from) {
  if (!from || typeof from !== "object") return into;
  for (const [k, v] of Object.entries(from)) {
    if (v && typeof v === "object" && !Array.isArray(v)) deepMerge((into[k] ??= {}), v);
    else if (typeof v === "string") into[k] = v;
  }
  return into;
}

function setting(id) {
  try {
    return app.extensionManager?.setting?.get?.(id) ?? app.ui?.settings?.getSettingValue?.(id);
  } catch {
    return undefined;
  }
}

/** The pack's own language setting; "auto" follows ComfyUI's locale where it is not English, else the
 * browser's. Our own, because a frontend that ships no German (1.58) resets Comfy.Locale to "en". */
export function currentLocale() {
  const own = setting(LANGUAGE_SETTING);
  if (own && own !== "auto") return own;
  const comfy = String(setting("Comfy.Locale") || "").split("-")[0];
  if (comfy && comfy !== "en") return comfy;
  return String(navigator.language || "en").split("-")[0];
}

/** Our strings from locales/<lang>/main.json, through ComfyUI's existing /i18n route. */
async function loadStrings() {
  try {
    i18n ??= await api.getCustomNodesI18n();
    const lang = currentLocale();
    deepMerge(strings, DEFAULT_STRINGS);
    deepMerge(strings, i18n?.en?.loraStudio);
    if (lang !== "en") deepMerge(strings, i18n?.[lang]?.loraStudio);
    for (const fn of onStrings) fn();
    translateAllNodes();
  } catch (e) {
    console.warn("[LoRA Studio] translations not loaded", e);
  }
}

/** Our nodes' titles, inputs and widgets in the pack's language (locales/<lang>/nodeDefs.json). */
function translateNode(node) {
  if (!i18n || !node?.type?.startsWith("LoraStudio_")) return;
  const lang = currentLocale();
  const defs = i18n?.[lang]?.nodeDefs?.[node.type] ?? i18n?.en?.nodeDefs?.[node.type];
  if (!defs) return;
  const known = new Set(Object.values(i18n).map((l) => l?.nodeDefs?.[node.type]?.display_name).filter(Boolean));
  known.add(LiteGraph.registered_node_types?.[node.type]?.title);
  if (defs.display_name && (!node.title || known.has(node.title))) node.title = defs.display_name;
  for (const inp of node.inputs ?? []) {
    const name = defs.inputs?.[inp.name]?.name;
    if (name) { inp.label = name; inp.localized_name = name; }
  }
  for (const w of node.widgets ?? []) {
    const name = defs.inputs?.[w.name]?.name;
    if (name && w.serialize !== false) w.label = name;
  }
  for (const [i, out] of (node.outputs ?? []).entries()) {
    const name = defs.outputs?.[i]?.name;
    if (name) { out.label = name; out.localized_name = name; }
  }
  node.setDirtyCanvas?.(true, true);
}

function translateAllNodes() {
  for (const n of app.graph?._nodes ?? []) translateNode(n);
}

function addWidget(node, name, type, element, height) {
  const widget = node.addDOMWidget(name, type, element, {
    serialize: false, // not an input: keeps widgets_values and the prompt as INPUT_TYPES says
    hideOnZoom: false,
    getValue: () => "",
    setValue: () => {},
    getMinHeight: () => height,
  });
  widget.serialize = false;
  return widget;
}

function growTo(node, minWidth) {
  const size = node.computeSize();
  node.setSize([Math.max(node.size[0], minWidth, size[0]), Math.max(node.size[1], size[1])]);
}

// ------------------------------------------------------------------------------------------ Train LoRA

function setupLossChart(node) {
  const state = newLossState();
  const root = document.createElement("div");
  root.className = "lora-studio-chart";
  const canvas = document.createElement("canvas");
  root.append(canvas);
  addWidget(node, "loss_chart", "lora_studio_loss_chart", root, CHART_HEIGHT);

  let frame = 0;
  const draw = () => {
    frame = 0;
    const w = root.clientWidth, h = root.clientHeight;
    if (!w || !h) return;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    drawLossChart(ctx, w, h, state, strings.chart);
  };
  const redraw = () => { if (!frame) frame = requestAnimationFrame(draw); };
  new ResizeObserver(redraw).observe(root);
  onStrings.add(redraw);

  node.lossState = state;
  node.lossPoints = state.points; // read by tests and other extensions: [{step, loss, lr}]
  node.loraStudioChart = {
    state, canvas, redraw,
    add(detail) {
      addLossPoint(state, detail);
      redraw();
      node.setDirtyCanvas?.(true, false);
    },
  };
  trainNodes.add(node);
  chain(node, "onRemoved", () => { trainNodes.delete(node); onStrings.delete(redraw); });
  // A finished (or cached) run may send its whole loss history as the node's ui output {"loss": [...]}:
  // the chart then survives a page reload's re-run from cache, which sends no step events.
  chain(node, "onExecuted", (output) => {
    if (Array.isArray(output?.loss) && output.loss.length) {
      setLossHistory(state, output.loss);
      redraw();
    }
    const job = Array.isArray(output?.job) ? output.job[0] : output?.job;
    if (typeof job === "string") {
      node.properties ??= {};
      node.properties.lora_studio_job = job; // saved with the workflow: the graph finds its job again
      restoreFromJob(node);
    }
  });
  // Shown again (tab switch, reload, a loaded workflow): chart, summary and command come from the record.
  chain(node, "onConfigure", () => setTimeout(() => restoreFromJob(node), 0));
  growTo(node, 380);
  redraw();
}

api.addEventListener("execution_start", ({ detail }) => { if (detail?.prompt_id) myPrompts.add(detail.prompt_id); });
api.addEventListener(LOSS_EVENT, ({ detail }) => {
  if (!detail) return;
  // matched by prompt, then node: a point of another session's run (or another tab's graph) is never drawn
  if (detail.prompt_id && !myPrompts.has(detail.prompt_id)) return;
  const live = [...trainNodes].filter((n) => n.graph);
  let targets = live.filter((n) => String(n.id) === String(detail.node));
  if (!targets.length) targets = live.filter((n) => matchesNode(detail.node, n.id));
  if (!targets.length && detail.node == null && live.length === 1) targets = live;
  for (const n of targets) n.loraStudioChart.add(detail);
});

/** The job record behind a Train LoRA node: its loss history, summary, and the --job command on the
 * Configure LoRA node that feeds it. */
async function restoreFromJob(node) {
  const id = node.properties?.lora_studio_job;
  if (!id || !node.loraStudioChart) return;
  let page;
  try {
    const r = await api.fetchApi(`/lora_studio/jobs/${encodeURIComponent(id)}`);
    if (!r.ok) return; // deleted, or another user's: nothing to restore
    page = await r.json();
  } catch {
    return;
  }
  node.loraStudioJob = page;
  const losses = page.record?.metrics?.losses ?? page.live?.losses;
  if (Array.isArray(losses) && losses.length && node.lossState.points.length <= losses.length) {
    setLossHistory(node.lossState, losses);
    node.loraStudioChart.redraw();
  }
  node.loraStudioSummary = page.summary;
  const slot = node.findInputSlot?.("config");
  const conf = slot >= 0 ? node.getInputNode?.(slot) : null;
  if (conf?.loraStudioPanel && page.summary?.command) {
    conf.loraStudioJobCommand = page.summary.command;
    conf.loraStudioCommand = page.summary.command;
    conf.loraStudioPanel.setCommand(page.summary.command);
  }
}

// ------------------------------------------------------------------------------------------ Configure LoRA

/** Load Dataset's values for the Train LoRA this Configure LoRA feeds: the command names dataset and trigger. */
function datasetInputs(conf) {
  const graph = conf.graph;
  for (const linkId of conf.outputs?.[0]?.links ?? []) {
    const link = graph?.links?.get?.(linkId) ?? graph?.links?.[linkId];
    const train = link && graph.getNodeById(link.target_id);
    const slot = train?.findInputSlot?.("dataset") ?? -1;
    const data = slot >= 0 ? train.getInputNode(slot) : null;
    if (data?.type === "LoraStudio_LoadDataset") return widgetValues(data);
  }
  return {};
}

function widgetValues(node) {
  const out = {};
  for (const w of node.widgets ?? []) if (w.serialize !== false) out[w.name] = w.value;
  return out;
}

function setupConfigurePanel(node) {
  const panel = buildConfigurePanel(strings, async () => {
    const text = node.loraStudioCommand;
    if (!text) return;
    try {
      const how = await copyText(text);
      node.loraStudioCopied = { text, how };
      panel.setStatus(strings.command.copied);
    } catch (e) {
      node.loraStudioCopied = { text: null, how: "failed", error: String(e) };
      panel.setStatus(strings.command.copyFailed);
      panel.commandArea.focus();
      panel.commandArea.select();
    }
  });
  addWidget(node, "preset_details", "lora_studio_preset_panel", panel.root, PANEL_HEIGHT);
  node.loraStudioPanel = panel;

  const refresh = () => {
    if (presets === null) { presetsReady.then(refresh); return; }
    const values = widgetValues(node);
    panel.update(findPreset(presets, values.preset), values, presets);
    if (node.loraStudioJobCommand) return; // after a run: the job's own --job command, until the next edit
    if (builderEnv === null) { builderReady.then((env) => env && refresh()); return; }
    const live = buildCommand(presets, builderEnv, values, datasetInputs(node));
    node.loraStudioLive = live;
    if (live.command) {
      node.loraStudioCommand = live.command;
      panel.setCommand(live.command);
    }
  };
  const edited = () => { node.loraStudioJobCommand = null; refresh(); };
  configureRefreshers.add(edited);
  chain(node, "onRemoved", () => configureRefreshers.delete(edited));
  const restring = () => { panel.setStrings(strings); refresh(); };
  onStrings.add(restring);
  chain(node, "onRemoved", () => onStrings.delete(restring));
  for (const w of node.widgets ?? []) {
    if (w.serialize === false) continue;
    chain(w, "callback", edited); // combo picks, number edits, the extra textarea
  }
  chain(node, "onConfigure", refresh); // a loaded workflow sets values without callbacks
  chain(node, "onExecuted", (output) => {
    const command = Array.isArray(output?.command) ? output.command[0] : output?.command;
    if (typeof command !== "string") return;
    node.loraStudioCommand = command;
    panel.setCommand(command);
  });
  growTo(node, 420);
  refresh();
}

// ------------------------------------------------------------------------------------------ registration

const sidebar = createSidebar({ app, api, strings, onStrings, copyText });
window.loraStudio = { sidebar, currentLocale, strings }; // for tests and other extensions

app.registerExtension({
  name: "LoRAStudio.UI",
  settings: [{
    id: LANGUAGE_SETTING,
    category: ["LoRA Studio", "Language"],
    name: "LoRA Studio language (Sprache)",
    tooltip: "The language of LoRA Studio's nodes, panels and sidebar. auto: ComfyUI's language if set, else the browser's.",
    type: "combo",
    options: LANGUAGES,
    defaultValue: "auto",
    onChange: () => { if (i18n) loadStrings(); },
  }],
  async setup() {
    try {
      app.extensionManager?.registerSidebarTab?.(sidebar.tab); // first: its strings follow when they arrive
    } catch (e) {
      console.warn("[LoRA Studio] sidebar tab not registered", e);
    }
    await loadStrings();
  },
  nodeCreated(node) {
    if (node?.type?.startsWith?.("LoraStudio_")) setTimeout(() => translateNode(node), 0);
    if (node?.type === "LoraStudio_LoadDataset") {
      for (const w of node.widgets ?? []) chain(w, "callback", () => { for (const f of configureRefreshers) f(); });
    }
  },
  async afterConfigureGraph() {
    translateAllNodes();
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name === TRAIN_NODE) {
      chain(nodeType.prototype, "onNodeCreated", function () { setupLossChart(this); });
    } else if (nodeData?.name === CONFIGURE_NODE) {
      chain(nodeType.prototype, "onNodeCreated", function () { setupConfigurePanel(this); });
    }
  },
});
