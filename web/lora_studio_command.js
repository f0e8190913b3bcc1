// LoRA Studio — the headless command Configure LoRA shows, built live in the browser while the user edits.
// No ComfyUI imports: tests run it in Node.js and feed its output to the real CLI (tests/test_studio_command.py).
//
// One source: the field defaults, the presets and the widget kinds come from web/presets.json (written by
// trainer.presets.web_table); the server's folders and checkpoint paths from GET /lora_studio/builder. The
// widget → override reading is the panel's overridesFrom, the same rules as trainer.presets.overrides_from_widgets.
import { findPreset, overridesFrom } from "./lora_studio_panel.js";

// passed as their own flags (or not at all), never as --set
const FLAGGED = new Set(["preset", "name", "base_model", "dataset", "trigger_token", "output_dir", "jobs_dir",
  "cache_dir", "tokenizer_dir", "resume_from"]);

/** Python's shlex.quote: safe words stay bare, anything else in single quotes. */
export function shellQuote(s) {
  s = String(s);
  if (s === "") return "''";
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(s)) return s;
  return `'${s.replace(/'/g, `'"'"'`)}'`;
}

/** The preset's full config: every field's default, then the preset's values. */
export function presetConfig(table, key) {
  const cfg = {};
  for (const [k, f] of Object.entries(table?.fields ?? {})) cfg[k] = structuredClone(f.default);
  Object.assign(cfg, structuredClone(table?.presets?.[key]?.values ?? {}), { preset: key });
  return cfg;
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/**
 * widgets: Configure LoRA's values by name; data: Load Dataset's {dataset, trigger_token, placeholder};
 * env: the server's {cli, cwd, input_dir, output_dir, auto_precision, checkpoints: {name: path}}.
 * Returns {command, argv, config, error}. The --set values are written the way the CLI reads them back:
 * text fields as typed, everything else as JSON.
 */
export function buildCommand(table, env, widgets, data = {}) {
  const preset = findPreset(table, widgets.preset);
  if (!preset) return { command: "", argv: [], config: null, error: "preset" };
  const { overrides, extraError } = overridesFrom(widgets, table.widgets);
  if (widgets.mixed_precision === "auto" || widgets.mixed_precision == null) overrides.mixed_precision = env.auto_precision;
  for (const [k, kind] of Object.entries(table.widgets ?? {})) { // "always": the widget's value is the value (seed)
    if (kind === "always" && widgets[k] != null && widgets[k] !== "") overrides[k] = Number(widgets[k]);
  }
  const base = presetConfig(table, preset.key);
  const config = { ...base, ...overrides };
  if (widgets.name) config.name = widgets.name;
  const sep = env.sep || "/";
  const datasetPath = data.dataset ? `${env.input_dir}${sep}${data.dataset}` : "";
  if (data.placeholder != null) config.placeholder = data.placeholder;
  // how the CLI starts on that server (trainer.commands.cli_argv): `python -m trainer` in the pack, or `lora-studio`
  const argv = [...(env.cli ?? ["python", "-m", "trainer"]), "train", "--preset", preset.key, "--name", config.name,
    "--base-model", env.checkpoints?.[widgets.ckpt_name] ?? widgets.ckpt_name ?? ""];
  if (datasetPath) argv.push("--dataset", datasetPath);
  if (data.trigger_token) argv.push("--trigger", data.trigger_token);
  argv.push("--output-dir", env.output_dir);
  for (const k of Object.keys(config)) {
    if (FLAGGED.has(k) || same(config[k], base[k])) continue;
    const v = config[k];
    const text = table.fields?.[k]?.type === "str" && typeof v === "string" ? v : JSON.stringify(v);
    argv.push("--set", `${k}=${text}`);
  }
  const line = argv.map(shellQuote).join(" ");
  const command = env.cwd ? `cd ${shellQuote(env.cwd)} && ${line}` : line;
  return { command, argv, config, error: extraError };
}
