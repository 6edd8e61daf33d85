// One experiment: header with lifecycle buttons, tabs, and the overview tab
// (details, variants, versions, hot-swap and rotate-key dialogs).

import { api } from "./api.js";
import { renderAudit } from "./audit_view.js";
import {
  archivedBadge, errorBox, field, fmtPct, fmtTime, h, nextId, replaceChildren, statusBadge,
} from "./dom.js";
import { renderRequests } from "./requests_view.js";
import * as rules from "./rules.js";
import { renderStats } from "./stats_view.js";
import { ALLOWED_FIELDS, UPSTREAM_TEMPLATE, checkUpstreamText } from "./upstream.js";

const TABS = [
  ["overview", "Overview"],
  ["stats", "Live stats"],
  ["requests", "Requests"],
  ["audit", "Audit log"],
];

const variantsOf = (exp) => (Array.isArray(exp.variants) ? exp.variants : []);
const versionsOf = (variant) => (Array.isArray(variant.versions) ? variant.versions : []);

/** A button that is disabled, with the reason as its tooltip, when `rule` refuses. */
function ruleButton(text, rule, onClick, attrs = {}) {
  const button = h("button", { type: "button", ...attrs, disabled: !rule.allowed, title: rule.reason || null }, text);
  button.addEventListener("click", onClick);
  return button;
}

/** Run a mutation with the button disabled; errors go to `errors`. Resolves true on success. */
async function attempt(button, errors, action) {
  errors.clear();
  if (button) button.disabled = true;
  try {
    await action();
    return true;
  } catch (err) {
    errors.show(err);
    if (button) button.disabled = false;
    return false;
  }
}

function shareOf(variant, exp) {
  if (typeof variant.share === "number") return variant.share;
  const total = variantsOf(exp).reduce((sum, v) => sum + (Number(v.weight) || 0), 0);
  return total ? (Number(variant.weight) || 0) / total : undefined;
}

function modal(id, titleText, ...content) {
  const title = h("h2", { id: `${id}-title` }, titleText);
  const dialog = h("dialog", { id, "aria-labelledby": title.id }, title, ...content);
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  return dialog;
}

/** The editable part of an upstream (drops fields the server would refuse). */
function editableUpstream(upstream) {
  const out = {};
  for (const key of ALLOWED_FIELDS) if (upstream && key in upstream) out[key] = upstream[key];
  return out;
}

function initialUpstream(exp, variant) {
  if (variant.current_version) return editableUpstream(variant.current_version.upstream);
  const latest = versionsOf(variant)[0];
  if (latest) return editableUpstream(latest.upstream);
  const kind = rules.requiredApiKind(exp) ||
    variantsOf(exp).map((v) => v.current_version?.upstream?.api_kind).find(Boolean);
  return { ...UPSTREAM_TEMPLATE, api_kind: kind || UPSTREAM_TEMPLATE.api_kind };
}

export async function renderDetail(main, { id, tab }) {
  const activeTab = TABS.some(([key]) => key === tab) ? tab : "overview";
  let exp = null;
  let tabCleanup = null;
  let flash = "";
  const lifecycleErrors = errorBox("lifecycle-error");

  const stopTab = () => {
    if (tabCleanup) tabCleanup();
    tabCleanup = null;
  };

  async function reload(message) {
    flash = message || "";
    lifecycleErrors.clear();
    exp = await api("GET", `/api/experiments/${encodeURIComponent(id)}`);
    render();
  }

  /** Reload after a successful mutation; a failed reload shows under the lifecycle bar. */
  async function refresh(message) {
    try {
      await reload(message);
    } catch (err) {
      lifecycleErrors.show(err);
    }
  }

  /** Perform a mutation, then reload; errors land in `errors`. */
  async function mutate(button, errors, action, message) {
    const done = await attempt(button, errors, action);
    if (done) await refresh(message);
    return done;
  }

  function lifecycleToolbar() {
    const post = (path, body) => () => api("POST", `/api/experiments/${encodeURIComponent(exp.id)}/${path}`, body);
    const act = (path, body, message, ask) => async (event) => {
      if (ask && !window.confirm(ask)) return;
      await mutate(event.currentTarget, lifecycleErrors, post(path, body), message);
    };
    const remove = async (event) => {
      if (!window.confirm(`Delete the draft "${exp.name}" and its variants? This cannot be undone.`)) return;
      const done = await attempt(event.currentTarget, lifecycleErrors,
        () => api("DELETE", `/api/experiments/${encodeURIComponent(exp.id)}`));
      if (done) location.hash = "#/experiments";
    };
    const buttons = [
      ruleButton("Activate", rules.canActivate(exp), act("activate", undefined, "Experiment activated."), { class: "primary" }),
      ruleButton("Resume", rules.canResume(exp), act("activate", undefined, "Experiment resumed.")),
      ruleButton("Pause", rules.canPause(exp), act("pause", undefined, "Experiment paused.")),
      ruleButton("Complete", rules.canComplete(exp), act("complete", undefined, "Experiment completed.",
        "Complete this experiment? Completed is final: it cannot be resumed.")),
      ruleButton("Archive", rules.canArchive(exp), act("archive", { archived: true }, "Experiment archived.")),
      ruleButton("Unarchive", rules.canUnarchive(exp), act("archive", { archived: false }, "Experiment unarchived.")),
      ruleButton("Delete", rules.canDelete(exp), remove, { class: "danger" }),
    ];
    const blocker = (exp.status === "draft" || exp.status === "paused") ? rules.activationBlocker(exp) : null;
    return h("div", { class: "lifecycle" },
      h("div", { class: "toolbar", role: "toolbar", "aria-label": "Lifecycle" }, buttons),
      blocker ? h("p", { class: "hint", id: "activation-hint" },
        `${exp.status === "draft" ? "Activate" : "Resume"} is unavailable: ${blocker}.`) : null,
      lifecycleErrors.el);
  }

  function tabsNav() {
    const base = `#/experiments/${encodeURIComponent(exp.id)}`;
    return h("nav", { class: "tabs", "aria-label": "Experiment sections" },
      TABS.map(([key, text]) => h("a", {
        href: key === "overview" ? base : `${base}/${key}`,
        "aria-current": key === activeTab ? "page" : null,
      }, text)));
  }

  function detailsForm() {
    const name = h("input", { id: "exp-name", name: "name", required: true, maxlength: 200, value: exp.name ?? "" });
    const description = h("textarea", { id: "exp-description", name: "description", maxlength: 2000, rows: 3 });
    description.value = exp.description ?? "";
    const publicRule = rules.canEditPublicId(exp);
    const publicId = h("input", {
      id: "exp-public-model-id", name: "public_model_id", required: true, maxlength: 200,
      value: exp.public_model_id ?? "", disabled: !publicRule.allowed, spellcheck: "false",
    });
    const errors = errorBox("details-error");
    const save = h("button", { type: "submit" }, "Save details");
    const form = h("form", { class: "card", "aria-labelledby": "details-title" },
      h("h2", { id: "details-title" }, "Details"),
      field("Name", name),
      field("Description", description),
      field("Public model id", publicId, publicRule.allowed ? "Clients select the experiment with this model id." : publicRule.reason),
      h("dl", { class: "facts" },
        h("dt", {}, "Experiment id"), h("dd", {}, h("code", {}, exp.id)),
        h("dt", {}, "Created"), h("dd", {}, fmtTime(exp.created_at)),
        h("dt", {}, "Started"), h("dd", {}, fmtTime(exp.started_at)),
        h("dt", {}, "Ended"), h("dd", {}, fmtTime(exp.ended_at))),
      errors.el,
      h("div", { class: "actions" }, save));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const changes = {};
      if (name.value !== exp.name) changes.name = name.value;
      if (description.value !== (exp.description ?? "")) changes.description = description.value;
      if (publicRule.allowed && publicId.value.trim() !== exp.public_model_id) {
        changes.public_model_id = publicId.value.trim();
      }
      if (!Object.keys(changes).length) return;
      await mutate(save, errors,
        () => api("PATCH", `/api/experiments/${encodeURIComponent(exp.id)}`, changes), "Details saved.");
    });
    return form;
  }

  function versionFacts(version) {
    if (!version) return h("p", { class: "muted" }, "No current version: create one with Hot-swap.");
    const up = version.upstream || {};
    return h("dl", { class: "facts" },
      h("dt", {}, "Version"), h("dd", {}, `#${version.id}`, " · in effect since ", fmtTime(version.effective_at)),
      h("dt", {}, "Internal id"), h("dd", {}, h("code", {}, up.internal_id ?? "—")),
      h("dt", {}, "API kind"), h("dd", {}, up.api_kind ?? "—"),
      h("dt", {}, "Base URL"), h("dd", {}, h("code", {}, up.base_url ?? "—")),
      h("dt", {}, "Timeout"), h("dd", {}, up.timeout_s !== undefined ? `${up.timeout_s} s` : "—"),
      h("dt", {}, "API key"), h("dd", { class: "key-state" },
        version.api_key_configured
          ? ["configured", h("span", { class: "muted" }, ` (as of version #${version.id}, ${fmtTime(version.created_at)})`)]
          : "not configured"));
  }

  function versionHistory(variant) {
    const versions = versionsOf(variant);
    const currentId = variant.current_version ? variant.current_version.id : null;
    const now = Date.now();
    return h("details", { class: "history" },
      h("summary", {}, `Version history (${versions.length})`),
      versions.length
        ? h("div", { class: "table-scroll" }, h("table", { class: "table compact" },
          h("thead", {}, h("tr", {}, ["Version", "Effective", "Internal id", "API kind", "Base URL", "Key", "Created"]
            .map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, versions.map((v) => {
            const scheduled = Date.parse(v.effective_at) > now;
            return h("tr", { class: v.id === currentId ? "current" : null },
              h("td", {}, `#${v.id}`, v.id === currentId ? h("span", { class: "badge badge-current" }, "current") : null,
                scheduled ? h("span", { class: "badge badge-scheduled" }, "scheduled") : null),
              h("td", { class: "time" }, fmtTime(v.effective_at)),
              h("td", {}, h("code", {}, v.upstream?.internal_id ?? "—")),
              h("td", {}, v.upstream?.api_kind ?? "—"),
              h("td", {}, h("code", {}, v.upstream?.base_url ?? "—")),
              h("td", {}, v.api_key_configured ? "configured" : "—"),
              h("td", { class: "time" }, fmtTime(v.created_at)));
          }))))
        : h("p", { class: "muted" }, "No versions yet."));
  }

  function openHotSwap(variant) {
    const requiredKind = rules.requiredApiKind(exp);
    const firstVersion = !variant.current_version;
    const editor = h("textarea", {
      id: "upstream-json", name: "upstream", rows: 12, spellcheck: "false", class: "code",
      "aria-describedby": "upstream-json-hint upstream-check",
    });
    editor.value = JSON.stringify(initialUpstream(exp, variant), null, 2);
    const check = h("div", { id: "upstream-check", class: "check", "aria-live": "polite" });
    const apiKey = h("input", {
      id: "hotswap-api-key", name: "api_key", type: "password", autocomplete: "new-password",
      spellcheck: "false", required: firstVersion,
    });
    const errors = errorBox("hotswap-error");
    const submit = h("button", { type: "submit", class: "primary" }, "Create version");
    const format = h("button", { type: "button" }, "Format JSON");
    const cancel = h("button", { type: "button" }, "Cancel");

    const validate = () => {
      const result = checkUpstreamText(editor.value, { requiredApiKind: requiredKind });
      replaceChildren(check,
        result.errors.length
          ? h("ul", { class: "problems", "aria-label": "Upstream errors" }, result.errors.map((e) => h("li", {}, e)))
          : h("p", { class: "ok" }, "Upstream looks valid."),
        result.warnings.length
          ? h("ul", { class: "warnings", "aria-label": "Upstream warnings" }, result.warnings.map((w) => h("li", {}, w)))
          : null);
      editor.setAttribute("aria-invalid", result.errors.length ? "true" : "false");
      return result;
    };
    editor.addEventListener("input", validate);
    format.addEventListener("click", () => {
      const result = checkUpstreamText(editor.value);
      if (result.value !== undefined) editor.value = JSON.stringify(result.value, null, 2);
      validate();
    });

    const form = h("form", {},
      h("p", {}, "A hot-swap creates a new immutable version; users keep their variant."),
      h("div", { class: "field" },
        h("label", { for: editor.id }, "Upstream (JSON)"), editor,
        h("p", { class: "hint", id: "upstream-json-hint" },
          `Fields: ${ALLOWED_FIELDS.join(", ")}. api_kind: chat_completions, responses or messages.` +
          (requiredKind ? ` While the experiment is live api_kind must stay ${requiredKind}.` : "")),
        check),
      field(firstVersion ? "API key (required for the first version)" : "New API key (optional)", apiKey,
        firstVersion ? "Stored encrypted; it is never shown again." : "Leave empty to keep the current key. Never shown again."),
      errors.el,
      h("div", { class: "actions" }, cancel, format, submit));
    const dialog = modal("hotswap-dialog", `New version for "${variant.label}"`, form);
    cancel.addEventListener("click", () => dialog.close());
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const result = validate();
      if (result.errors.length) {
        errors.show({ message: "fix the upstream errors above before saving" });
        return;
      }
      const body = { upstream: result.value };
      if (apiKey.value) body.api_key = apiKey.value;
      let created = null;
      const done = await attempt(submit, errors, async () => {
        created = await api("POST", `/api/variants/${encodeURIComponent(variant.id)}/versions`, body);
      });
      if (!done) return;
      apiKey.value = "";
      dialog.close();
      await refresh(`Version #${created?.id ?? "?"} created for "${variant.label}".`);
    });
    dialog.showModal();
    validate();
    editor.focus();
  }

  function openRotateKey(variant) {
    const apiKey = h("input", {
      id: "rotate-api-key", name: "api_key", type: "password", autocomplete: "new-password",
      spellcheck: "false", required: true,
    });
    const errors = errorBox("rotate-error");
    const submit = h("button", { type: "submit", class: "primary" }, "Rotate key");
    const cancel = h("button", { type: "button" }, "Cancel");
    const form = h("form", {},
      h("p", {}, "Creates a new version with the current upstream and this key."),
      field("New API key", apiKey, "Stored encrypted; it is never shown again."),
      errors.el,
      h("div", { class: "actions" }, cancel, submit));
    const dialog = modal("rotate-dialog", `Rotate the API key of "${variant.label}"`, form);
    cancel.addEventListener("click", () => dialog.close());
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      let created = null;
      const done = await attempt(submit, errors, async () => {
        created = await api("POST", `/api/variants/${encodeURIComponent(variant.id)}/rotate-key`, { api_key: apiKey.value });
      });
      if (!done) return;
      apiKey.value = "";
      dialog.close();
      await refresh(`Key rotated for "${variant.label}": version #${created?.id ?? "?"}.`);
    });
    dialog.showModal();
    apiKey.focus();
  }

  function variantCard(variant) {
    const errors = errorBox(nextId("variant-error"));
    const labelRule = rules.canEditLabel(exp);
    const labelInput = h("input", {
      id: nextId("variant-label"), name: "label", required: true, maxlength: 64,
      value: variant.label ?? "", disabled: !labelRule.allowed,
    });
    const rename = h("button", { type: "submit", disabled: !labelRule.allowed, title: labelRule.reason || null }, "Rename");
    const renameForm = h("form", { class: "inline-form" },
      field("Label", labelInput, labelRule.allowed ? null : labelRule.reason), rename);
    renameForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (labelInput.value === variant.label) return;
      await mutate(rename, errors,
        () => api("PATCH", `/api/variants/${encodeURIComponent(variant.id)}`, { label: labelInput.value }),
        `Variant renamed to "${labelInput.value}".`);
    });
    const removeVariant = async (event) => {
      if (!window.confirm(`Remove variant "${variant.label}"?`)) return;
      await mutate(event.currentTarget, errors,
        () => api("DELETE", `/api/variants/${encodeURIComponent(variant.id)}`), `Variant "${variant.label}" removed.`);
    };
    return h("article", { class: "card variant", dataset: { variantId: variant.id }, "aria-label": `Variant ${variant.label}` },
      h("header", { class: "variant-head" },
        h("h3", {}, variant.label),
        h("span", { class: "weight" }, `weight ${variant.weight ?? "—"} · share ${fmtPct(shareOf(variant, exp), 0)}`)),
      renameForm,
      h("h4", {}, "Current version"),
      versionFacts(variant.current_version),
      versionHistory(variant),
      h("div", { class: "actions" },
        ruleButton("Hot-swap…", rules.canAddVersion(exp), () => openHotSwap(variant)),
        ruleButton("Rotate key…", rules.canRotateKey(exp, variant), () => openRotateKey(variant)),
        ruleButton("Remove variant", rules.canChangeVariants(exp), removeVariant, { class: "danger" })),
      errors.el);
  }

  function addVariantForm() {
    const rule = rules.canChangeVariants(exp);
    const label = h("input", { id: "new-variant-label", name: "label", required: true, maxlength: 64, disabled: !rule.allowed });
    const weight = h("input", {
      id: "new-variant-weight", name: "weight", type: "number", required: true, min: 1, max: 10000, step: 1,
      value: "1", disabled: !rule.allowed,
    });
    const errors = errorBox("add-variant-error");
    const submit = h("button", { type: "submit", disabled: !rule.allowed, title: rule.reason || null }, "Add variant");
    const form = h("form", { class: "card", "aria-labelledby": "add-variant-title" },
      h("h3", { id: "add-variant-title" }, "Add a variant"),
      rule.allowed ? null : h("p", { class: "hint" }, rule.reason),
      h("div", { class: "row" }, field("Label", label), field("Weight (1 to 10000)", weight)),
      errors.el,
      h("div", { class: "actions" }, submit));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      await mutate(submit, errors,
        () => api("POST", `/api/experiments/${encodeURIComponent(exp.id)}/variants`,
          { label: label.value, weight: Number(weight.value) }),
        `Variant "${label.value}" added.`);
    });
    return form;
  }

  function overview() {
    const variants = variantsOf(exp);
    return h("div", { class: "overview" },
      detailsForm(),
      h("section", { "aria-labelledby": "variants-title" },
        h("h2", { id: "variants-title" }, `Variants (${variants.length})`),
        variants.length ? null : h("p", { class: "muted" }, "No variants yet."),
        h("div", { class: "variants" }, variants.map(variantCard)),
        addVariantForm()));
  }

  function render() {
    stopTab();
    document.title = `${exp.name} · abgate admin`;
    const heading = h("h1", { tabindex: -1 }, exp.name);
    const content = h("div", { class: "tab-content", id: "tab-content" });
    replaceChildren(main,
      h("nav", { class: "breadcrumb", "aria-label": "Breadcrumb" }, h("a", { href: "#/experiments" }, "Experiments"), " / ", exp.name),
      h("div", { class: "page-head" },
        h("div", {}, heading,
          h("p", { class: "subtitle" }, statusBadge(exp.status), " ", archivedBadge(exp.is_archived), " ",
            h("code", { class: "public-id" }, exp.public_model_id))),
      ),
      lifecycleToolbar(),
      flash ? h("p", { class: "flash", role: "status" }, flash) : null,
      tabsNav(),
      content);
    if (activeTab === "overview") content.append(overview());
    else if (activeTab === "stats") tabCleanup = renderStats(content, exp);
    else if (activeTab === "requests") tabCleanup = renderRequests(content, exp);
    else if (activeTab === "audit") tabCleanup = renderAudit(content, exp);
    if (!flash) heading.focus();
  }

  replaceChildren(main, h("p", { class: "muted" }, "Loading…"));
  try {
    await reload();
  } catch (err) {
    if (err.status === 401) return stopTab; // the sign-in form has replaced the page
    const errors = errorBox("detail-error");
    errors.show(err);
    replaceChildren(main,
      h("nav", { class: "breadcrumb", "aria-label": "Breadcrumb" }, h("a", { href: "#/experiments" }, "Experiments")),
      h("h1", {}, "Experiment"), errors.el);
  }
  return stopTab;
}
