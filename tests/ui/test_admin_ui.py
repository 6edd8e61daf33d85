"""The admin web UI in headless Chromium against the real admin app.

Each test drives the page the way an operator would (labels, buttons, dialogs)
and checks what the page shows, and where it matters what the server stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from typing import Any

import asyncpg
import orjson
import pytest
from playwright.async_api import Page, expect
from ui_support import (
    ADMIN_TOKEN,
    API_KEY,
    AdminApi,
    add_variant,
    chat_through_proxy,
    create_experiment,
    flash,
    hot_swap,
    insert_requests,
    lifecycle,
    lifecycle_button,
    open_experiment,
    open_hot_swap,
    screen,
    sign_in,
    upstream,
    variant_card,
    wait_for_request_rows,
)

from abgate.mock_upstream import MockServer
from abgate.upstream import UpstreamError, parse_upstream

pytestmark = pytest.mark.asyncio(loop_scope="session")


def public_id() -> str:
    return f"partner/preview-{uuid.uuid4().hex[:8]}"


# -- signing in ------------------------------------------------------------------------


async def test_token_is_asked_once_per_browser_session(page: Page, admin_url: str) -> None:
    await page.goto(f"{admin_url}/")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await screen(page, "01-sign-in")
    await sign_in(page, admin_url)

    await page.reload()
    await expect(page.get_by_role("heading", name="Experiments", level=1)).to_be_visible()
    await expect(page.get_by_label("Admin token")).to_have_count(0)
    stored = await page.evaluate("sessionStorage.getItem('abgate.adminToken')")
    assert stored == ADMIN_TOKEN
    assert await page.evaluate("localStorage.length") == 0


async def test_a_new_browser_session_asks_for_the_token_again(
    page: Page, admin_url: str
) -> None:
    await sign_in(page, admin_url)
    other = await page.context.browser.new_context()  # type: ignore[union-attr]
    try:
        fresh = await other.new_page()
        await fresh.goto(f"{admin_url}/")
        await expect(fresh.get_by_label("Admin token")).to_be_visible()
    finally:
        await other.close()


async def test_a_refused_token_is_reported_and_not_kept(page: Page, admin_url: str) -> None:
    await page.goto(f"{admin_url}/")
    await page.get_by_label("Admin token").fill("abg_not-a-valid-token")
    await page.get_by_role("button", name="Sign in").click()

    await expect(page.get_by_role("alert")).to_contain_text("that token was refused")
    assert await page.evaluate("sessionStorage.length") == 0


async def test_sign_out_forgets_the_token(page: Page, admin_url: str) -> None:
    await sign_in(page, admin_url)
    await page.get_by_role("button", name="Sign out").click()

    await expect(page.get_by_label("Admin token")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0


# -- experiment list ---------------------------------------------------------------------


async def test_creating_an_experiment_opens_it_as_a_draft(page: Page, admin_url: str) -> None:
    await sign_in(page, admin_url)
    await page.get_by_role("button", name="New experiment").click()
    await screen(page, "03-create-dialog")
    await page.get_by_role("button", name="Cancel").click()

    experiment_id = await create_experiment(page, "partner/preview-create", "Create me",
                                            "checks the dialog")

    await expect(page.locator(".subtitle .badge-draft")).to_have_text("draft")
    await page.get_by_role("link", name="Experiments").first.click()
    row = page.locator("#experiments tbody tr", has_text="Create me")
    await expect(row).to_contain_text("partner/preview-create")
    await expect(row).to_contain_text("draft")
    await expect(row.get_by_role("link", name="Create me")).to_have_attribute(
        "href", f"#/experiments/{experiment_id}")


async def test_create_dialog_shows_the_server_error_inline(page: Page, admin_url: str) -> None:
    await sign_in(page, admin_url)
    await page.get_by_role("button", name="New experiment").click()
    dialog = page.get_by_role("dialog", name="New experiment")
    await dialog.get_by_label("Public model id").fill("has spaces in it")
    await dialog.get_by_label("Name", exact=True).fill("Bad id")
    await dialog.get_by_role("button", name="Create experiment").click()

    await expect(dialog.get_by_role("alert")).to_contain_text(
        "BAD_REQUEST: public_model_id must be 1-200 characters")
    await expect(dialog).to_be_visible()


async def test_a_viewer_sees_why_a_change_is_forbidden(
    page: Page, admin_url: str, ui_db: asyncpg.Connection
) -> None:
    viewer_token = "abg_ui-viewer-" + uuid.uuid4().hex
    await ui_db.execute(
        "INSERT INTO admin_token (name, role, token_sha256) VALUES ('ui-viewer', 'viewer', $1)",
        hashlib.sha256(viewer_token.encode()).hexdigest(),
    )
    await sign_in(page, admin_url, viewer_token)
    await page.get_by_role("button", name="New experiment").click()
    dialog = page.get_by_role("dialog", name="New experiment")
    await dialog.get_by_label("Public model id").fill(public_id())
    await dialog.get_by_label("Name", exact=True).fill("Not allowed")
    await dialog.get_by_role("button", name="Create experiment").click()

    await expect(dialog.get_by_role("alert")).to_have_text(
        "FORBIDDEN: role 'viewer' may only read")


async def test_archive_filter_shows_unarchived_archived_or_all(
    page: Page, admin_url: str
) -> None:
    api = AdminApi(admin_url)
    await api.experiment(public_id(), "Visible draft")
    archived = await api.experiment(public_id(), "Old draft")
    await api.call("POST", f"/api/experiments/{archived['id']}/archive", {"archived": True})
    await sign_in(page, admin_url)
    table = page.locator("#experiments")

    await expect(table).to_contain_text("Visible draft")
    await expect(table).not_to_contain_text("Old draft")
    await screen(page, "02-experiment-list")

    await page.get_by_label("Show").select_option("true")
    await expect(table).to_contain_text("Old draft")
    await expect(table).not_to_contain_text("Visible draft")
    await expect(table.locator(".badge-archived")).to_have_count(1)

    await page.get_by_label("Show").select_option("all")
    await expect(table.locator("tbody tr")).to_have_count(2)


# -- detail: details, variants, versions ----------------------------------------------------


async def test_public_model_id_is_editable_only_while_draft(
    page: Page, admin_url: str, mock_upstream: MockServer
) -> None:
    api = AdminApi(admin_url)
    exp = await api.ready_experiment(mock_upstream.url)
    await sign_in(page, admin_url)
    await open_experiment(page, admin_url, exp["id"])
    field = page.get_by_label("Public model id")
    await expect(field).to_be_enabled()
    await field.fill("partner/preview-renamed")
    await page.get_by_role("button", name="Save details").click()
    await expect(flash(page)).to_have_text("Details saved.")
    await expect(page.locator(".public-id")).to_have_text("partner/preview-renamed")

    await lifecycle(page, "Activate")
    await expect(page.locator(".subtitle .badge-active")).to_be_visible()
    await expect(page.get_by_label("Public model id")).to_be_disabled()
    await expect(page.get_by_text("the public model id can be changed only while draft")
                 ).to_be_visible()


async def test_an_unknown_experiment_shows_not_found(page: Page, admin_url: str) -> None:
    await sign_in(page, admin_url)
    await open_experiment(page, admin_url, str(uuid.uuid4()))

    await expect(page.get_by_role("alert")).to_have_text("NOT_FOUND: experiment not found")


async def test_variants_show_weight_and_share(page: Page, admin_url: str) -> None:
    await sign_in(page, admin_url)
    await create_experiment(page, public_id(), "Shares")
    await add_variant(page, "control", 1)
    await add_variant(page, "candidate", 3)

    await expect(variant_card(page, "control")).to_contain_text("weight 1 · share 25%")
    await expect(variant_card(page, "candidate")).to_contain_text("weight 3 · share 75%")
    await expect(variant_card(page, "control")).to_contain_text("No current version")


async def test_duplicate_variant_label_shows_the_conflict_inline(
    page: Page, admin_url: str
) -> None:
    await sign_in(page, admin_url)
    await create_experiment(page, public_id(), "Duplicates")
    await add_variant(page, "A", 1)
    form = page.get_by_role("form", name="Add a variant")
    await form.get_by_label("Label").fill("A")
    await form.get_by_role("button", name="Add variant").click()

    await expect(form.get_by_role("alert")).to_have_text(
        "CONFLICT: this experiment already has a variant labelled 'A'")


async def test_renaming_a_variant_keeps_its_versions(
    page: Page, admin_url: str, mock_upstream: MockServer
) -> None:
    exp = await AdminApi(admin_url).ready_experiment(mock_upstream.url)
    await sign_in(page, admin_url)
    await open_experiment(page, admin_url, exp["id"])
    card = variant_card(page, "A")
    await card.get_by_label("Label").fill("control")
    await card.get_by_role("button", name="Rename").click()

    renamed = variant_card(page, "control")
    await expect(renamed).to_contain_text("ckpt-a")
    await expect(variant_card(page, "A")).to_have_count(0)


async def test_hot_swap_creates_a_version_and_keeps_the_history(
    page: Page, admin_url: str, mock_upstream: MockServer, ui_db: asyncpg.Connection
) -> None:
    exp = await AdminApi(admin_url).ready_experiment(mock_upstream.url)
    await sign_in(page, admin_url)
    await open_experiment(page, admin_url, exp["id"])

    await hot_swap(page, "A", upstream(mock_upstream.url, "ckpt-a2"), api_key=None)

    card = variant_card(page, "A")
    await expect(flash(page)).to_contain_text('created for "A"')
    await expect(card.locator(".facts").first).to_contain_text("ckpt-a2")
    await card.get_by_text("Version history (2)").click()
    history = card.locator(".history tbody tr")
    await expect(history).to_have_count(2)
    await expect(history.first).to_contain_text("current")
    await expect(history.nth(1)).to_contain_text("ckpt-a")
    await screen(page, "04-experiment-detail")
    kept = await ui_db.fetchval(
        "SELECT count(DISTINCT encrypted_api_key) FROM model_experiment_variant_version v "
        "JOIN model_experiment_variant va ON va.id = v.variant_id WHERE va.label = 'A'")
    assert kept == 1  # the second version kept the first one's key


async def test_first_version_requires_an_api_key(page: Page, admin_url: str) -> None:
    await sign_in(page, admin_url)
    await create_experiment(page, public_id(), "Keys")
    await add_variant(page, "A", 1)
    dialog = await open_hot_swap(page, "A")

    key = dialog.get_by_label("API key (required for the first version)")
    await expect(key).to_have_attribute("type", "password")
    await expect(key).to_have_attribute("required", "")


async def test_upstream_editor_rejects_unknown_fields_before_sending(
    page: Page, admin_url: str, mock_upstream: MockServer, ui_db: asyncpg.Connection
) -> None:
    await sign_in(page, admin_url)
    await create_experiment(page, public_id(), "Strict upstream")
    await add_variant(page, "A", 1)
    dialog = await open_hot_swap(page, "A")
    bad = upstream(mock_upstream.url, "ckpt") | {"api_key": "sk-in-the-wrong-place"}
    await dialog.get_by_label("Upstream (JSON)").fill(orjson.dumps(bad).decode())
    await dialog.get_by_label(re.compile("API key")).fill(API_KEY)

    problems = dialog.get_by_role("list", name="Upstream errors")
    await expect(problems).to_contain_text("upstream.api_key: unknown field")
    await expect(dialog.get_by_label("Upstream (JSON)")).to_have_attribute("aria-invalid", "true")
    await screen(page, "05-hot-swap-dialog-invalid")
    await dialog.get_by_role("button", name="Create version").click()

    await expect(dialog.get_by_role("alert")).to_contain_text("fix the upstream errors")
    assert await ui_db.fetchval("SELECT count(*) FROM model_experiment_variant_version") == 0


async def test_format_json_pretty_prints_the_upstream(page: Page, admin_url: str) -> None:
    await sign_in(page, admin_url)
    await create_experiment(page, public_id(), "Formatting")
    await add_variant(page, "A", 1)
    dialog = await open_hot_swap(page, "A")
    editor = dialog.get_by_label("Upstream (JSON)")
    compact = upstream("https://partner.example/v1", "ckpt")
    await editor.fill(orjson.dumps(compact).decode())

    await dialog.get_by_role("button", name="Format JSON").click()

    assert await editor.input_value() == orjson.dumps(compact, option=orjson.OPT_INDENT_2).decode()


async def test_upstream_editor_warns_about_plain_http(
    page: Page, admin_url: str
) -> None:
    await sign_in(page, admin_url)
    await create_experiment(page, public_id(), "Plain http")
    await add_variant(page, "A", 1)
    dialog = await open_hot_swap(page, "A")
    await dialog.get_by_label("Upstream (JSON)").fill(
        orjson.dumps(upstream("http://partner.example/v1", "ckpt")).decode())

    await expect(dialog.get_by_role("list", name="Upstream warnings")).to_contain_text(
        "http:// is refused unless the server sets ABGATE_ALLOW_INSECURE_UPSTREAM")
    await expect(dialog.get_by_text("Upstream looks valid.")).to_be_visible()


async def test_server_refusal_of_a_hot_swap_is_shown_in_the_dialog(
    page: Page, admin_url: str, mock_upstream: MockServer
) -> None:
    api = AdminApi(admin_url)
    exp = await api.ready_experiment(mock_upstream.url)
    await api.call("POST", f"/api/experiments/{exp['id']}/activate")
    await sign_in(page, admin_url)
    await open_experiment(page, admin_url, exp["id"])
    dialog = await open_hot_swap(page, "A")
    await dialog.get_by_label("Upstream (JSON)").fill(orjson.dumps(
        upstream(mock_upstream.url, "ckpt-a2", api_kind="messages")).decode())

    # The client already knows a live experiment must keep its api_kind.
    await expect(dialog.get_by_role("list", name="Upstream errors")).to_contain_text(
        "upstream.api_kind: must stay chat_completions")


async def test_rotate_key_reports_configured_and_never_shows_the_key(
    page: Page, admin_url: str, mock_upstream: MockServer
) -> None:
    exp = await AdminApi(admin_url).ready_experiment(mock_upstream.url)
    secret = "sk-rotated-" + uuid.uuid4().hex
    await sign_in(page, admin_url)
    await open_experiment(page, admin_url, exp["id"])
    card = variant_card(page, "B")
    await card.get_by_role("button", name="Rotate key…").click()
    dialog = page.get_by_role("dialog", name='Rotate the API key of "B"')
    await dialog.get_by_label("New API key").fill(secret)
    await dialog.get_by_role("button", name="Rotate key").click()

    await expect(flash(page)).to_contain_text('Key rotated for "B"')
    await expect(card.locator(".key-state")).to_contain_text("configured")
    await expect(card.get_by_text("Version history (2)")).to_be_visible()
    html = await page.content()
    values = await page.evaluate(
        "[...document.querySelectorAll('input, textarea')].map((e) => e.value).join('\\n')")
    storage = await page.evaluate("JSON.stringify({...sessionStorage, ...localStorage})")
    for text in (html, values, storage):
        assert secret not in text
        assert API_KEY not in text


# -- lifecycle -----------------------------------------------------------------------------


async def _button_states(page: Page) -> dict[str, bool]:
    names = ["Activate", "Resume", "Pause", "Complete", "Archive", "Unarchive", "Delete"]
    return {name: await lifecycle_button(page, name).is_enabled() for name in names}


async def test_lifecycle_buttons_follow_the_contract(
    page: Page, admin_url: str, mock_upstream: MockServer
) -> None:
    api = AdminApi(admin_url)
    exp = await api.experiment(public_id(), "Rules")
    await sign_in(page, admin_url)
    await open_experiment(page, admin_url, exp["id"])

    await expect(page.locator("#activation-hint")).to_contain_text(
        "activation needs at least 2 variants (it has 0)")
    assert await _button_states(page) == {
        "Activate": False, "Resume": False, "Pause": False, "Complete": False,
        "Archive": True, "Unarchive": False, "Delete": True,
    }

    await api.variant(exp["id"], "A", 1, upstream(mock_upstream.url, "ckpt-a"))
    await api.variant(exp["id"], "B", 1)
    await page.reload()
    await expect(page.locator("#activation-hint")).to_contain_text("missing: B")
    assert not await lifecycle_button(page, "Activate").is_enabled()

    await hot_swap(page, "B", upstream(mock_upstream.url, "ckpt-b"), api_key=API_KEY)
    await expect(lifecycle_button(page, "Activate")).to_be_enabled()
    await lifecycle(page, "Activate")
    await expect(page.locator(".subtitle .badge-active")).to_be_visible()
    assert await _button_states(page) == {
        "Activate": False, "Resume": False, "Pause": True, "Complete": True,
        "Archive": False, "Unarchive": False, "Delete": False,
    }
    await expect(page.get_by_role("button", name="Add variant")).to_be_disabled()
    remove = variant_card(page, "A").get_by_role("button", name="Remove variant")
    await expect(remove).to_be_disabled()

    await lifecycle(page, "Pause")
    await expect(page.locator(".subtitle .badge-paused")).to_be_visible()
    assert await _button_states(page) == {
        "Activate": False, "Resume": True, "Pause": False, "Complete": True,
        "Archive": True, "Unarchive": False, "Delete": False,
    }

    page.once("dialog", lambda d: d.accept())
    await lifecycle(page, "Complete")
    await expect(page.locator(".subtitle .badge-completed")).to_be_visible()
    assert await _button_states(page) == {
        "Activate": False, "Resume": False, "Pause": False, "Complete": False,
        "Archive": True, "Unarchive": False, "Delete": False,
    }
    await expect(variant_card(page, "A").get_by_role("button", name="Hot-swap…")).to_be_disabled()
    await expect(variant_card(page, "A").get_by_role("button", name="Rename")).to_be_disabled()


async def test_archive_then_unarchive(page: Page, admin_url: str) -> None:
    exp = await AdminApi(admin_url).experiment(public_id(), "Shelf")
    await sign_in(page, admin_url)
    await open_experiment(page, admin_url, exp["id"])

    await lifecycle(page, "Archive")
    await expect(page.locator(".subtitle .badge-archived")).to_be_visible()
    await expect(page.locator("#activation-hint")).to_contain_text("unarchive it first")
    await lifecycle(page, "Unarchive")
    await expect(page.locator(".subtitle .badge-archived")).to_have_count(0)


async def test_deleting_a_draft_returns_to_the_list(
    page: Page, admin_url: str, ui_db: asyncpg.Connection
) -> None:
    exp = await AdminApi(admin_url).experiment(public_id(), "Short-lived")
    await sign_in(page, admin_url)
    await open_experiment(page, admin_url, exp["id"])
    page.once("dialog", lambda d: d.accept())
    await lifecycle(page, "Delete")

    await expect(page.get_by_role("heading", name="Experiments", level=1)).to_be_visible()
    assert await ui_db.fetchval("SELECT count(*) FROM model_experiment") == 0


async def test_lifecycle_refusal_from_the_server_is_shown_inline(
    page: Page, admin_url: str, mock_upstream: MockServer
) -> None:
    api = AdminApi(admin_url)
    shared = public_id()
    live = await api.ready_experiment(mock_upstream.url, "Live one")
    await api.call("PATCH", f"/api/experiments/{live['id']}", {"public_model_id": shared})
    await api.call("POST", f"/api/experiments/{live['id']}/activate")
    second = await api.ready_experiment(mock_upstream.url, "Second one")
    await api.call("PATCH", f"/api/experiments/{second['id']}", {"public_model_id": shared})
    await sign_in(page, admin_url)
    await open_experiment(page, admin_url, second["id"])

    await lifecycle(page, "Activate")

    await expect(page.locator("#lifecycle-error")).to_contain_text(
        "CONFLICT: another experiment on")
    await expect(page.locator(".subtitle .badge-draft")).to_be_visible()


# -- end to end ---------------------------------------------------------------------------


async def test_operator_runs_an_experiment_from_draft_to_pause(
    page: Page, admin_url: str, proxy_url: str, mock_upstream: MockServer,
    ui_db: asyncpg.Connection,
) -> None:
    model = public_id()
    await sign_in(page, admin_url)
    await create_experiment(page, model, "Checkpoint bake-off", "two partner checkpoints")
    await add_variant(page, "control", 1)
    await add_variant(page, "candidate", 1)
    for label, ckpt in (("control", "ckpt-control"), ("candidate", "ckpt-candidate")):
        await hot_swap(page, label, upstream(f"{mock_upstream.url}/v1", ckpt), api_key=API_KEY)
    await lifecycle(page, "Activate")
    await expect(page.locator(".subtitle .badge-active")).to_be_visible()

    statuses = await chat_through_proxy(proxy_url, model, 40)
    assert statuses == [200] * 40
    await wait_for_request_rows(ui_db, 40)

    await page.get_by_role("link", name="Live stats").click()
    table = page.locator("#stats-table")
    await expect(table.locator("tbody tr")).to_have_count(2)
    counts = [int((await cell.inner_text()).replace(",", ""))
              for cell in await table.locator("tbody tr td:nth-child(3)").all()]
    assert sum(counts) == 40 and all(counts)
    await expect(page.locator("#srm-banner")).to_have_count(0)
    await expect(page.locator("#stats-updated")).to_contain_text("Updated")
    await expect(page.locator(".chart-line")).to_have_count(4)  # 2 versions x 2 charts
    await screen(page, "06-live-stats")

    await page.get_by_role("link", name="Requests").click()
    rows = page.locator("#requests-table tbody tr")
    await expect(rows).to_have_count(25)
    await expect(page.get_by_role("button", name="Older →")).to_be_enabled()
    await screen(page, "07-requests")

    await lifecycle(page, "Pause")
    await expect(page.locator(".subtitle .badge-paused")).to_be_visible()
    async with asyncio.timeout(5):
        while (await chat_through_proxy(proxy_url, model, 1)) != [404]:
            await asyncio.sleep(0.1)


async def test_srm_warning_when_subjects_do_not_match_the_weights(
    page: Page, admin_url: str, mock_upstream: MockServer, ui_db: asyncpg.Connection
) -> None:
    api = AdminApi(admin_url)
    exp = await api.ready_experiment(mock_upstream.url)
    await api.call("POST", f"/api/experiments/{exp['id']}/activate")
    version_a, version_b = (v["current_version"]["id"] for v in exp["variants"])
    await insert_requests(ui_db, version_a, subjects=150)
    await insert_requests(ui_db, version_b, subjects=50, errors=5)
    await sign_in(page, admin_url)
    await open_experiment(page, admin_url, exp["id"], "stats")

    banner = page.get_by_role("alert").filter(has_text="Sample ratio mismatch")
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("do not match the weights")
    await screen(page, "06b-live-stats-srm")


async def test_stats_refresh_every_five_seconds(
    page: Page, admin_url: str, mock_upstream: MockServer, ui_db: asyncpg.Connection
) -> None:
    api = AdminApi(admin_url)
    exp = await api.ready_experiment(mock_upstream.url)
    await api.call("POST", f"/api/experiments/{exp['id']}/activate")
    await sign_in(page, admin_url)
    await open_experiment(page, admin_url, exp["id"], "stats")
    version_id = exp["variants"][0]["current_version"]["id"]
    requests_cell = page.locator(f'#stats-table tr[data-version-id="{version_id}"] td').nth(1)
    await expect(requests_cell).to_have_text("0")

    await insert_requests(ui_db, version_id, subjects=7)

    await expect(requests_cell).to_have_text("7", timeout=8_000)


async def test_stats_can_show_one_subject_kind(
    page: Page, admin_url: str, mock_upstream: MockServer, ui_db: asyncpg.Connection
) -> None:
    api = AdminApi(admin_url)
    exp = await api.ready_experiment(mock_upstream.url)
    await api.call("POST", f"/api/experiments/{exp['id']}/activate")
    version_id = exp["variants"][0]["current_version"]["id"]
    await insert_requests(ui_db, version_id, subjects=9)  # machine subjects
    await sign_in(page, admin_url)
    await open_experiment(page, admin_url, exp["id"], "stats")
    requests_cell = page.locator(f'#stats-table tr[data-version-id="{version_id}"] td').nth(1)
    await expect(requests_cell).to_have_text("9")

    await page.get_by_label("Show").select_option("user")
    await expect(requests_cell).to_have_text("0")
    await page.get_by_label("Show").select_option("machine")
    await expect(requests_cell).to_have_text("9")


# -- request browser --------------------------------------------------------------------------


async def _live_experiment_with_traffic(
    admin_url: str, proxy_url: str, mock_upstream: MockServer, conn: asyncpg.Connection,
    requests: int,
) -> dict[str, Any]:
    api = AdminApi(admin_url)
    exp = await api.ready_experiment(f"{mock_upstream.url}/v1")
    await api.call("POST", f"/api/experiments/{exp['id']}/activate")
    assert await chat_through_proxy(proxy_url, exp["public_model_id"], requests) == [200] * requests
    await wait_for_request_rows(conn, requests)
    return exp


async def test_request_browser_filters_by_variant(
    page: Page, admin_url: str, proxy_url: str, mock_upstream: MockServer,
    ui_db: asyncpg.Connection,
) -> None:
    await _live_experiment_with_traffic(admin_url, proxy_url, mock_upstream, ui_db, 12)
    served_by_b = await ui_db.fetchval(
        "SELECT count(*) FROM model_experiment_request r "
        "JOIN model_experiment_variant_version v ON v.id = r.variant_version_id "
        "JOIN model_experiment_variant va ON va.id = v.variant_id WHERE va.label = 'B'")
    exp_id = await ui_db.fetchval("SELECT id::text FROM model_experiment")
    await sign_in(page, admin_url)
    await open_experiment(page, admin_url, exp_id, "requests")
    rows = page.locator("#requests-table tbody tr")
    await expect(rows).to_have_count(12)

    await page.get_by_label("Variant", exact=True).select_option(label="B")
    await page.get_by_role("button", name="Apply filters").click()

    await expect(rows).to_have_count(served_by_b)
    for label in await rows.locator("td:nth-child(2)").all_inner_texts():
        assert label.startswith("B ")


async def test_request_browser_pages_with_the_cursor(
    page: Page, admin_url: str, proxy_url: str, mock_upstream: MockServer,
    ui_db: asyncpg.Connection,
) -> None:
    exp = await _live_experiment_with_traffic(admin_url, proxy_url, mock_upstream, ui_db, 12)
    await sign_in(page, admin_url)
    await open_experiment(page, admin_url, exp["id"], "requests")
    rows = page.locator("#requests-table tbody tr")
    await page.get_by_label("Per page (10 to 100)").fill("10")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(rows).to_have_count(10)
    first_page = await rows.locator("td:nth-child(5)").all_inner_texts()

    await page.get_by_role("button", name="Older →").click()
    await expect(rows).to_have_count(2)
    second_page = await rows.locator("td:nth-child(5)").all_inner_texts()
    assert sorted(first_page + second_page) == sorted(f"ui-req-{i}" for i in range(12))
    await expect(page.get_by_role("button", name="Older →")).to_be_disabled()

    await page.get_by_role("button", name="← Newer").click()
    await expect(rows).to_have_count(10)


async def test_prompt_download_saves_the_body_sent_upstream(
    page: Page, admin_url: str, proxy_url: str, mock_upstream: MockServer,
    ui_db: asyncpg.Connection,
) -> None:
    exp = await _live_experiment_with_traffic(admin_url, proxy_url, mock_upstream, ui_db, 1)
    await sign_in(page, admin_url)
    await open_experiment(page, admin_url, exp["id"], "requests")
    row = page.locator("#requests-table tbody tr")
    await expect(row.locator(".badge-body-available")).to_be_visible()

    async with page.expect_download() as info:
        await row.get_by_role("button", name=re.compile("Download the prompt")).click()
    download = await info.value
    saved = await download.path()

    assert download.suggested_filename.endswith(".json")
    body = orjson.loads(saved.read_bytes())
    assert body["messages"] == [{"role": "user", "content": "ui test prompt 0"}]
    await expect(row.get_by_role("status")).to_contain_text("Saved")


async def test_prompt_deleted_after_listing_reports_gone(
    page: Page, admin_url: str, proxy_url: str, mock_upstream: MockServer,
    ui_db: asyncpg.Connection,
) -> None:
    exp = await _live_experiment_with_traffic(admin_url, proxy_url, mock_upstream, ui_db, 1)
    await sign_in(page, admin_url)
    await open_experiment(page, admin_url, exp["id"], "requests")
    row = page.locator("#requests-table tbody tr")
    await expect(row.locator(".badge-body-available")).to_be_visible()
    await ui_db.execute("UPDATE model_experiment_request SET request_body_sha256 = '__deleted__', "
                        "system_prompt_sha256 = '__deleted__'")

    await row.get_by_role("button", name=re.compile("Download the prompt")).click()

    await expect(row.get_by_role("status")).to_have_text("Prompt was deleted (410)")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(row.locator(".badge-body-deleted")).to_be_visible()
    await expect(row.get_by_role("button", name=re.compile("Download the prompt"))).to_be_disabled()


# -- audit -----------------------------------------------------------------------------------


async def test_audit_log_lists_each_mutation_newest_first(
    page: Page, admin_url: str, mock_upstream: MockServer
) -> None:
    exp = await AdminApi(admin_url).ready_experiment(mock_upstream.url)
    await sign_in(page, admin_url)
    await open_experiment(page, admin_url, exp["id"], "audit")

    rows = page.locator("#audit-table tbody tr")
    await expect(rows).to_have_count(5)
    actions = [await rows.nth(i).locator("td").nth(2).inner_text() for i in range(5)]
    assert actions == ["version.create", "variant.create", "version.create", "variant.create",
                       "experiment.create"]
    await expect(rows.first).to_contain_text("bootstrap")
    await rows.first.get_by_text("Show change").click()
    await expect(rows.first.locator("pre")).to_contain_text('"api_key_configured": true')
    await screen(page, "08-audit-log")
    assert API_KEY not in await page.content()


# -- the upstream validator ------------------------------------------------------------------

VALIDATOR_CASES: list[Any] = [
    {"internal_id": "m", "base_url": "https://partner.example/v1", "api_kind": "responses"},
    {"internal_id": "m", "base_url": "http://127.0.0.1:9/v1", "api_kind": "messages",
     "extra_body": {"temperature": 0}, "remove_from_body": ["metadata"], "timeout_s": 30},
    {"internal_id": "m", "base_url": "https://partner.example/v1", "api_kind": "completions"},
    {"internal_id": "m", "base_url": "https://partner.example/v1/chat/completions",
     "api_kind": "chat_completions"},
    {"internal_id": "m", "base_url": "https://user:pw@partner.example/v1",
     "api_kind": "chat_completions"},
    {"internal_id": "m", "base_url": "https://169.254.169.254/v1", "api_kind": "chat_completions"},
    {"internal_id": "m", "base_url": "https://metadata.google.internal/",
     "api_kind": "chat_completions"},
    {"internal_id": "m", "base_url": "https://partner.example/v1?x=1",
     "api_kind": "chat_completions"},
    {"internal_id": "m", "base_url": "ftp://partner.example/", "api_kind": "chat_completions"},
    {"internal_id": "", "base_url": "https://partner.example/", "api_kind": "chat_completions"},
    {"internal_id": " m", "base_url": "https://partner.example/", "api_kind": "chat_completions"},
    {"base_url": "https://partner.example/", "api_kind": "chat_completions"},
    {"internal_id": "m", "base_url": "https://partner.example/", "api_kind": "chat_completions",
     "extra_headers": {"x": "y"}},
    {"internal_id": "m", "base_url": "https://partner.example/", "api_kind": "chat_completions",
     "extra_body": []},
    {"internal_id": "m", "base_url": "https://partner.example/", "api_kind": "chat_completions",
     "extra_body": {"model": "x"}},
    {"internal_id": "m", "base_url": "https://partner.example/", "api_kind": "chat_completions",
     "extra_body": {"Api-Key": "x"}},
    {"internal_id": "m", "base_url": "https://partner.example/", "api_kind": "chat_completions",
     "remove_from_body": ["messages"]},
    {"internal_id": "m", "base_url": "https://partner.example/", "api_kind": "chat_completions",
     "remove_from_body": "metadata"},
    {"internal_id": "m", "base_url": "https://partner.example/", "api_kind": "chat_completions",
     "timeout_s": 0},
    {"internal_id": "m", "base_url": "https://partner.example/", "api_kind": "chat_completions",
     "timeout_s": "30"},
    {"internal_id": "m", "base_url": "https://partner.example/", "api_kind": "chat_completions",
     "timeout_s": None, "extra_body": None},
    ["not", "an", "object"],
]


def _server_accepts(value: Any) -> bool:
    try:
        parse_upstream(value, allow_insecure=True)
    except UpstreamError:
        return False
    return True


async def test_client_upstream_validation_agrees_with_the_server(
    page: Page, admin_url: str
) -> None:
    await page.goto(f"{admin_url}/ui/")
    verdicts = await page.evaluate(
        """async (cases) => {
            const { validateUpstream } = await import("./upstream.js");
            return cases.map((c) => validateUpstream(c).errors.length === 0);
        }""",
        VALIDATOR_CASES,
    )
    expected = [_server_accepts(case) for case in VALIDATOR_CASES]
    disagreements = [case for case, got, want in zip(VALIDATOR_CASES, verdicts, expected,
                                                     strict=True) if got != want]
    assert disagreements == []
    assert any(expected) and not all(expected)


STRICT_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
              "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


async def test_the_ui_runs_under_a_strict_content_security_policy(
    page: Page, admin_url: str, mock_upstream: MockServer, ui_db: asyncpg.Connection
) -> None:
    async def add_csp(route: Any) -> None:
        response = await route.fetch()
        await route.fulfill(response=response,
                            headers={**response.headers, "content-security-policy": STRICT_CSP})

    await page.route(f"{admin_url}/ui/", add_csp)
    await page.add_init_script("""
        window.cspViolations = [];
        document.addEventListener("securitypolicyviolation",
            (e) => window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
    """)
    api = AdminApi(admin_url)
    exp = await api.ready_experiment(mock_upstream.url)
    await api.call("POST", f"/api/experiments/{exp['id']}/activate")
    await insert_requests(ui_db, exp["variants"][0]["current_version"]["id"], subjects=5)

    await sign_in(page, admin_url, path="/ui/")  # routes do not see redirected requests
    await open_experiment(page, admin_url, exp["id"], "stats")
    await expect(page.locator(".legend li")).to_have_count(1)
    await open_experiment(page, admin_url, exp["id"])
    await open_hot_swap(page, "A")

    assert await page.evaluate("window.cspViolations") == []


@pytest.mark.parametrize("path", ["/", "/ui"])
async def test_the_ui_is_served_at_the_root(page: Page, admin_url: str, path: str) -> None:
    await page.goto(f"{admin_url}{path}")
    await expect(page).to_have_url(f"{admin_url}/ui/")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


@pytest.mark.parametrize(
    "route", ["#/experiments", "#/experiments/6f1d2c1e-0000-4000-8000-000000000001"]
)
async def test_a_revoked_session_token_returns_to_sign_in(
    page: Page, admin_url: str, route: str
) -> None:
    await sign_in(page, admin_url)
    await page.evaluate("sessionStorage.setItem('abgate.adminToken', 'abg_revoked')")
    await page.goto("about:blank")  # the tab's sessionStorage survives the round trip
    await page.goto(f"{admin_url}/ui/{route}")

    await expect(page.get_by_text("Your token is no longer accepted")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0
