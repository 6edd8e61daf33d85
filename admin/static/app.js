// Entry point: sign-in, hash routing and view lifecycle.
//
// Routes: #/experiments[?archived=false|true|all], #/experiments/<id>[/stats|/requests|/audit].
// A view is render(main, params) -> optional cleanup function (timers, listeners).

import { ApiError, checkToken, clearToken, getToken, setToken } from "./api.js";
import { errorBox, field, h, replaceChildren } from "./dom.js";
import { renderDetail } from "./detail.js";
import { renderList } from "./list.js";

const main = document.getElementById("main");
const signOut = document.getElementById("sign-out");
const mainNav = document.querySelector(".topbar nav");
let cleanup = null;
let renderSeq = 0;

function renderLogin(message) {
  document.title = "Sign in · abgate admin";
  signOut.hidden = true;
  mainNav.hidden = true;
  const input = h("input", {
    id: "token", name: "token", type: "password", required: true, autocomplete: "off",
    spellcheck: "false", autofocus: true,
  });
  const errors = errorBox("login-error");
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { class: "card login", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Sign in"),
    h("p", {}, "Enter an admin or viewer token. It is kept for this browser tab's session only."),
    message ? h("p", { class: "notice" }, message) : null,
    field("Admin token", input, "Created with \"abgate token create\", or the ABGATE_ADMIN_TOKEN of the server."),
    errors.el,
    h("div", { class: "actions" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.clear();
    const token = input.value.trim();
    if (!token) return;
    submit.disabled = true;
    try {
      await checkToken(token);
      setToken(token);
      input.value = "";
      route();
    } catch (err) {
      errors.show(err instanceof ApiError && err.status === 401
        ? { code: err.code, message: "that token was refused (unknown or revoked)" }
        : err);
    } finally {
      submit.disabled = false;
    }
  });
  replaceChildren(main, form);
  input.focus();
}

function parseHash() {
  const hash = location.hash.replace(/^#/, "") || "/experiments";
  const [path, search = ""] = hash.split("?");
  return { parts: path.split("/").filter(Boolean), params: new URLSearchParams(search) };
}

async function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  const seq = ++renderSeq;
  if (!getToken()) {
    renderLogin();
    return;
  }
  signOut.hidden = false;
  mainNav.hidden = false;
  const { parts, params } = parseHash();
  let view;
  if (parts[0] === "experiments" && parts.length === 1) {
    view = renderList(main, { archived: params.get("archived") || "false" });
  } else if (parts[0] === "experiments" && parts[1]) {
    view = renderDetail(main, { id: parts[1], tab: parts[2] || "overview" });
  } else {
    location.hash = "#/experiments";
    return;
  }
  const result = await view;
  if (seq !== renderSeq) {
    // Another navigation happened while this view loaded: drop its timers at once.
    if (typeof result === "function") result();
    return;
  }
  cleanup = typeof result === "function" ? result : null;
}

signOut.addEventListener("click", () => {
  clearToken();
  location.hash = "#/experiments";
  route();
});

window.addEventListener("abgate:unauthorized", () => {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  renderLogin("Your token is no longer accepted. Sign in again.");
});
window.addEventListener("hashchange", route);
route();
