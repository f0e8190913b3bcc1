// LoRA Studio — the panel on Configure LoRA: the chosen preset's values (with this node's overrides)
// and, after a run, the headless command with a copy button. No ComfyUI imports: the value logic runs
// in Node.js for tests; the DOM parts need a browser.

export const KEEP = "preset"; // combo value meaning "use the preset's value" (nodes/configure.py)
/** English strings, the same as locales/en/main.json (a test keeps them equal); /i18n replaces them. */
export const DEFAULT_STRINGS = {
  "chart": {
    "waiting": "The loss appears here while Train LoRA runs.",
    "step": "step",
    "loss": "loss",
    "smoothed": "smoothed",
    "eta": "ETA"
  },
  "preset": {
    "unknown": "Pick one of the three presets.",
    "images": "images",
    "presetValue": "preset"
  },
  "command": {
    "title": "Headless command",
    "copy": "Copy command",
    "copied": "Copied.",
    "copyFailed": "Could not copy: select the text and press Ctrl+C.",
    "waiting": "Queue the workflow: the command that runs this job in a terminal (accelerate launch) appears here."
  },
  "fields": {
    "resolution": "resolution (px)",
    "rank": "rank",
    "alpha": "alpha",
    "learning_rate": "learning rate",
    "text_encoder_lr": "text encoder learning rate",
    "lr_scheduler": "LR schedule",
    "lr_num_cycles": "schedule cycles",
    "lr_warmup_steps": "warmup steps",
    "max_train_steps": "steps",
    "train_batch_size": "batch size",
    "gradient_accumulation_steps": "gradient accumulation",
    "train_text_encoder": "train text encoder",
    "snr_gamma": "min-SNR gamma",
    "gradient_checkpointing": "gradient checkpointing",
    "checkpointing_steps": "checkpoint every",
    "unet_target_modules": "UNet layers",
    "mixed_precision": "mixed precision",
    "noise_offset": "noise offset",
    "seed": "seed",
    "with_prior_preservation": "prior preservation",
    "class_prompt": "class prompt",
    "num_class_images": "class pictures"
  }
};

const INT_FIELDS = ["resolution", "max_train_steps", "rank", "train_batch_size", "gradient_accumulation_steps"];
const FLOAT_FIELDS = ["learning_rate", "alpha"];
const SWITCH_FIELDS = ["train_text_encoder", "gradient_checkpointing"];

/** The preset a combo value names: its title as the guide writes it, its key, or its first word. */
export function findPreset(presets, value) {
  const v = String(value ?? "").trim().toLowerCase();
  return Object.values(presets || {}).find((p) =>
    [p.key, p.title.toLowerCase(), p.title.split(" ")[0].toLowerCase()].includes(v)) ?? null;
}

/** This node's overrides, read the way nodes/configure.py build_overrides reads them. */
export function overridesFrom(widgets) {
  const o = {};
  let extraError = null;
  for (const k of INT_FIELDS) if (Number(widgets[k])) o[k] = Math.trunc(Number(widgets[k]));
  for (const k of FLOAT_FIELDS) if (Number(widgets[k])) o[k] = Number(widgets[k]);
  for (const k of SWITCH_FIELDS) if (widgets[k] != null && widgets[k] !== KEEP) o[k] = widgets[k] === "on";
  if (widgets.lr_scheduler != null && widgets.lr_scheduler !== KEEP) o.lr_scheduler = widgets.lr_scheduler;
  if (widgets.mixed_precision != null && widgets.mixed_precision !== "auto") o.mixed_precision = widgets.mixed_precision;
  const classPrompt = String(widgets.class_prompt ?? "").trim();
  if (classPrompt) Object.assign(o, { with_prior_preservation: true, class_prompt: classPrompt });
  if (Number(widgets.num_class_images)) o.num_class_images = Math.trunc(Number(widgets.num_class_images));
  const extra = String(widgets.extra ?? "").trim();
  if (extra) {
    try {
      const data = JSON.parse(extra);
      if (data && typeof data === "object" && !Array.isArray(data)) Object.assign(o, data);
      else extraError = "extra: a JSON object { … }";
    } catch (e) {
      extraError = `extra: ${e.message}`;
    }
  }
  return { overrides: o, extraError };
}

/** Rows for the panel: every preset value, then overrides of fields the preset leaves alone. */
export function effectiveValues(preset, widgets) {
  const { overrides, extraError } = overridesFrom(widgets || {});
  const values = preset?.values ?? {};
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  const rows = Object.entries(values).map(([field, pv]) => {
    const has = Object.prototype.hasOwnProperty.call(overrides, field);
    return { field, preset: pv, value: has ? overrides[field] : pv, overridden: has && !same(overrides[field], pv) };
  });
  for (const [field, v] of Object.entries(overrides)) {
    if (!Object.prototype.hasOwnProperty.call(values, field)) rows.push({ field, preset: undefined, value: v, overridden: true });
  }
  return { rows, extraError };
}

export function formatValue(x) {
  if (Array.isArray(x)) return x.join(", ");
  if (typeof x === "boolean") return x ? "on" : "off";
  if (typeof x !== "number" || !Number.isFinite(x)) return x === undefined ? "–" : String(x);
  if (Number.isInteger(x)) return String(x);
  return Math.abs(x) < 0.001 ? x.toExponential() : String(Number(x.toPrecision(6)));
}

/** Copy text: the async clipboard API where the page may use it, else a hidden textarea + execCommand. */
export async function copyText(text, doc = globalThis.document) {
  const nav = globalThis.navigator;
  if (nav?.clipboard?.writeText && globalThis.isSecureContext) {
    try {
      await nav.clipboard.writeText(text);
      return "clipboard";
    } catch {
      // no permission or no focus: fall back below
    }
  }
  const ta = doc.createElement("textarea");
  ta.value = text;
  ta.setAttribute("readonly", "");
  Object.assign(ta.style, { position: "fixed", top: "0", left: "0", opacity: "0", pointerEvents: "none" });
  doc.body.appendChild(ta);
  ta.select();
  let ok = false;
  try {
    ok = doc.execCommand("copy");
  } finally {
    ta.remove();
  }
  if (!ok) throw new Error("copy refused");
  return "execCommand";
}

const CSS = `
.lora-studio-panel { box-sizing: border-box; height: 100%; overflow: auto; padding: 4px 6px; font: 11px/1.35 sans-serif;
  color: var(--input-text, #ddd); background: var(--comfy-input-bg, #222); border-radius: 6px; }
.lora-studio-panel .ls-head { font-weight: 600; font-size: 12px; }
.lora-studio-panel .ls-meta, .lora-studio-panel .ls-desc, .lora-studio-panel .ls-hint { color: var(--descrip-text, #999); }
.lora-studio-panel .ls-grid { display: grid; grid-template-columns: auto 1fr auto 1fr; column-gap: 6px; margin: 3px 0; }
.lora-studio-panel .ls-grid > div { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.lora-studio-panel .ls-label { color: var(--descrip-text, #999); }
.lora-studio-panel .ls-over { color: #ffb347; }
.lora-studio-panel .ls-was { color: var(--descrip-text, #888); text-decoration: line-through; margin-left: 4px; }
.lora-studio-panel .ls-error { color: #ff6b6b; }
.lora-studio-panel .ls-cmd-head { display: flex; align-items: center; gap: 6px; margin-top: 4px; }
.lora-studio-panel .ls-cmd-head b { flex: 1; }
.lora-studio-panel button { font: inherit; cursor: pointer; padding: 1px 8px; border-radius: 4px;
  color: var(--input-text, #ddd); background: var(--comfy-menu-bg, #333); border: 1px solid var(--border-color, #555); }
.lora-studio-panel button:disabled { opacity: 0.5; cursor: default; }
.lora-studio-panel textarea { box-sizing: border-box; width: 100%; min-height: 58px; resize: vertical; margin-top: 2px;
  font: 10px/1.3 monospace; color: inherit; background: var(--comfy-menu-bg, #1b1b1b); border: 1px solid var(--border-color, #444); }
.lora-studio-chart { box-sizing: border-box; height: 100%; width: 100%; border-radius: 6px; overflow: hidden; }
.lora-studio-chart canvas { display: block; width: 100%; height: 100%; }
`;

export function injectStyle(doc = document) {
  if (doc.getElementById("lora-studio-style")) return;
  const style = doc.createElement("style");
  style.id = "lora-studio-style";
  style.textContent = CSS;
  doc.head.appendChild(style);
}

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  e.append(...children);
  return e;
}

/** The panel's DOM. `onCopy` is called with no arguments when the button is pressed. */
export function buildConfigurePanel(t, onCopy) {
  const head = el("div", { className: "ls-head" });
  const meta = el("div", { className: "ls-meta" });
  const desc = el("div", { className: "ls-desc" });
  const grid = el("div", { className: "ls-grid" });
  const error = el("div", { className: "ls-error" });
  const copy = el("button", { type: "button", className: "ls-copy", disabled: true });
  const status = el("span", { className: "ls-status ls-hint" });
  const cmdTitle = el("b");
  const command = el("textarea", { className: "ls-command", readOnly: true, spellcheck: false });
  const root = el("div", { className: "lora-studio-panel" }, head, meta, desc, grid, error,
    el("div", { className: "ls-cmd-head" }, cmdTitle, status, copy), command);
  // Keep clicks, wheel and drags inside the panel instead of panning or selecting in the graph.
  for (const type of ["pointerdown", "mousedown", "wheel"]) root.addEventListener(type, (e) => e.stopPropagation());
  copy.addEventListener("click", (e) => {
    e.preventDefault();
    onCopy();
  });

  const panel = {
    root, copyButton: copy, commandArea: command, statusEl: status,
    setStrings(strings) {
      t = strings;
      copy.textContent = t.command.copy;
      cmdTitle.textContent = t.command.title;
      command.placeholder = t.command.waiting;
    },
    update(preset, widgets) {
      if (!preset) {
        head.textContent = t.preset.unknown;
        meta.textContent = desc.textContent = "";
        grid.replaceChildren();
        return;
      }
      head.textContent = preset.title;
      meta.textContent = `${preset.min_images}–${preset.max_images} ${t.preset.images} · ≥ ${preset.min_vram_gb} GB VRAM`;
      desc.textContent = `${preset.suited_for} — ${preset.focus}`;
      const { rows, extraError } = effectiveValues(preset, widgets);
      grid.replaceChildren(...rows.flatMap((r) => {
        const label = el("div", { className: "ls-label", textContent: t.fields[r.field] ?? r.field,
          title: r.overridden ? `${r.field} · ${t.preset.presetValue}: ${formatValue(r.preset)}` : r.field });
        const value = el("div", { className: r.overridden ? "ls-value ls-over" : "ls-value", title: r.field },
          formatValue(r.value));
        if (r.overridden) value.append(el("span", { className: "ls-was", textContent: formatValue(r.preset) }));
        return [label, value];
      }));
      error.textContent = extraError ?? "";
    },
    setCommand(text) {
      command.value = text ?? "";
      copy.disabled = !text;
      status.textContent = "";
    },
    setStatus(text) {
      status.textContent = text;
    },
  };
  panel.setStrings(t);
  return panel;
}
