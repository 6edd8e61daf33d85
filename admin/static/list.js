// The experiment list (with the archive filter) and the "New experiment" dialog.

import { api, query } from "./api.js";
import { archivedBadge, errorBox, field, fmtTime, h, replaceChildren, statusBadge } from "./dom.js";

const FILTERS = [
  ["false", "Not archived"],
  ["true", "Archived"],
  ["all", "All"],
];

function createDialog() {
  const publicId = h("input", {
    id: "new-public-model-id", name: "public_model_id", required: true, maxlength: 200,
    placeholder: "partner/preview-foo", autocomplete: "off", spellcheck: "false",
  });
  const name = h("input", { id: "new-name", name: "name", required: true, maxlength: 200, autocomplete: "off" });
  const description = h("textarea", { id: "new-description", name: "description", maxlength: 2000, rows: 3 });
  const errors = errorBox("create-error");
  const submit = h("button", { type: "submit", class: "primary" }, "Create experiment");
  const cancel = h("button", { type: "button" }, "Cancel");
  const form = h("form", { method: "dialog" },
    h("h2", { id: "create-title" }, "New experiment"),
    field("Public model id", publicId,
      "The preview id clients send in \"model\". Letters, digits and . _ : / @ + -"),
    field("Name", name),
    field("Description (optional)", description),
    errors.el,
    h("div", { class: "actions" }, cancel, submit));
  const dialog = h("dialog", { id: "create-dialog", "aria-labelledby": "create-title" }, form);
  cancel.addEventListener("click", () => dialog.close());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.clear();
    submit.disabled = true;
    try {
      const body = { public_model_id: publicId.value.trim(), name: name.value };
      if (description.value) body.description = description.value;
      const created = await api("POST", "/api/experiments", body);
      dialog.close();
      location.hash = `#/experiments/${created.id}`;
    } catch (err) {
      errors.show(err);
    } finally {
      submit.disabled = false;
    }
  });
  dialog.addEventListener("close", () => dialog.remove());
  return dialog;
}

function experimentRow(exp) {
  return h("tr", {},
    h("td", {}, h("a", { href: `#/experiments/${encodeURIComponent(exp.id)}` }, exp.name || exp.id)),
    h("td", {}, h("code", {}, exp.public_model_id ?? "—")),
    h("td", {}, statusBadge(exp.status), " ", archivedBadge(exp.is_archived)),
    h("td", { class: "time" }, fmtTime(exp.started_at)),
    h("td", { class: "time" }, fmtTime(exp.updated_at ?? exp.created_at)));
}

export async function renderList(main, { archived }) {
  document.title = "Experiments · abgate admin";
  const filter = FILTERS.some(([value]) => value === archived) ? archived : "false";
  const select = h("select", { id: "archive-filter", name: "archived" },
    FILTERS.map(([value, text]) => h("option", { value, selected: value === filter }, text)));
  select.addEventListener("change", () => {
    location.hash = `#/experiments${select.value === "false" ? "" : query({ archived: select.value })}`;
  });
  const newButton = h("button", { type: "button", class: "primary", id: "new-experiment" }, "New experiment");
  newButton.addEventListener("click", () => {
    const dialog = createDialog();
    document.body.append(dialog);
    dialog.showModal();
  });
  const body = h("div", { class: "list-body" }, h("p", { class: "muted" }, "Loading…"));
  const heading = h("h1", { tabindex: -1 }, "Experiments");
  replaceChildren(main,
    h("div", { class: "page-head" }, heading, newButton),
    h("div", { class: "toolbar" }, h("label", { for: "archive-filter" }, "Show"), select),
    body);
  heading.focus();

  try {
    const data = await api("GET", `/api/experiments${query({ archived: filter })}`);
    const experiments = Array.isArray(data && data.experiments) ? data.experiments : [];
    if (!experiments.length) {
      replaceChildren(body, h("p", { class: "empty" },
        filter === "true" ? "No archived experiments." : "No experiments yet. Create one to start."));
      return;
    }
    replaceChildren(body, h("table", { class: "table", id: "experiments" },
      h("caption", { class: "visually-hidden" }, "Experiments"),
      h("thead", {}, h("tr", {},
        ["Name", "Public model id", "Status", "Started", "Updated"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, experiments.map(experimentRow))));
  } catch (err) {
    const errors = errorBox("list-error");
    errors.show(err);
    replaceChildren(body, errors.el);
  }
}
