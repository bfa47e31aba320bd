"""The alert card in a real browser, and the notification blueprint in the real core.

Three layers, fastest first:

* the card and its editor on a bare page with a scripted backend (a fake ``hass`` whose
  websocket feed and services the test drives): every state, filter, error and both
  languages, in a second or two;
* the blueprint ``notify_on_match.yaml`` set up by Home Assistant's automation component,
  fed ``upr_match`` events;
* the whole stack (``upr_stack``): a real registry, a real ``hass``, a file camera, and
  headless Chromium logged in as the owner (English) and as a non-admin operator (French)
  confirming and rejecting alerts, checked at the registry; and the contrast of the card's
  texts in Home Assistant's light and dark themes.

Screenshots go to ``artifacts/e2e/``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import async_mock_service

try:
    from playwright.sync_api import expect
except ImportError:  # the `chromium` fixture fails (in CI) or skips the browser tests
    expect = None

from ..ha.common import DEPRECATION
from .conftest import ROOT, Stack, hass_demo, run_async, wait_until

CARD_JS = ROOT / "custom_components" / "upr_faces" / "frontend" / "upr-alerts-card.js"
BLUEPRINT = ROOT / "blueprints" / "automation" / "upr_faces" / "notify_on_match.yaml"
DASHBOARD_DOC = ROOT / "docs" / "dashboard.md"
LONG = 90_000  # ms: the first alerts of a fresh Home Assistant on a 2-core machine
PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>card</title></head>
<body style="margin:0;padding:16px;background:#fafafa;font-family:sans-serif;width:640px"></body>
</html>"""

# A scripted backend: the feed is pushed by the test, services answer like the integration.
FAKE_BACKEND = """
(() => {
  const pixel = (colour) =>
    "data:image/svg+xml," + encodeURIComponent(
      `<svg xmlns='http://www.w3.org/2000/svg' width='64' height='64'>` +
      `<rect width='64' height='64' fill='${colour}'/></svg>`);
  const fake = {
    subs: [], calls: [], configs: [], fail: null, subscribeError: null, alerts: {},
    hass(language) {
      return {
        language,
        locale: { language, number_format: "language", time_format: "24", time_zone: "local" },
        config: { time_zone: "UTC" },
        states: {
          "camera.door": { entity_id: "camera.door", attributes: { friendly_name: "Door" } },
          "camera.gate": { entity_id: "camera.gate", attributes: { friendly_name: "Gate" } },
          "camera.garden": { entity_id: "camera.garden", attributes: { friendly_name: "Garden" } },
        },
        entities: {
          "camera.door": { entity_id: "camera.door", platform: "upr_faces" },
          "camera.gate": { entity_id: "camera.gate", platform: "upr_faces" },
          "camera.garden": { entity_id: "camera.garden", platform: "generic" },
        },
        connection: {
          subscribeMessage: async (cb, msg) => {
            if (fake.subscribeError) throw fake.subscribeError;
            const sub = { cb, msg, active: true };
            fake.subs.push(sub);
            return async () => { sub.active = false; };
          },
        },
        callService: async (domain, service, data, target, notifyOnError) => {
          fake.calls.push({ domain, service, data, target, notifyOnError });
          await new Promise((resolve) => setTimeout(resolve, 100));
          if (fake.fail) throw { code: "service_validation_error", message: fake.fail };
          const alert = fake.alerts[data.match_id];
          Object.assign(alert, {
            state: service === "confirm_match" ? "confirmed" : "rejected",
            decided_by_name: "Test User",
            decided_at: new Date().toISOString(),
            comment: data.comment ?? null,
          });
          fake.push({ type: "alert", alert: { ...alert } });
        },
      };
    },
    push(event) { for (const sub of fake.subs) if (sub.active) sub.cb(event); },
    alert(id, extra) {
      const alert = {
        match_id: id, entry_id: "e1", tier: "match", person_id: "P-" + id,
        reference: "UPR-" + id, display_name: "Person " + id, similarity: 0.873,
        camera_id: "door", camera_name: "Door", camera_entity_id: "camera.door",
        detected_at: new Date(Date.now() - 120000).toISOString(), track_id: 1,
        state: "pending", decided_by_name: null, decided_at: null, comment: null,
        face_url: pixel("#c33"), frame_url: pixel("#3c3"), registry_photo_url: pixel("#33c"),
        ...extra,
      };
      fake.alerts[id] = alert;
      return { ...alert };
    },
    mount(config, language) {
      const card = document.createElement("upr-alerts-card");
      card.setConfig(config);
      card.hass = fake.hass(language);
      document.body.append(card);
      return card;
    },
  };
  window.fake = fake;
})();
"""


def _card_page(browser: Any, locale: str = "en-US") -> Any:
    page = browser.new_page(locale=locale, viewport={"width": 800, "height": 1000})
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.set_content(PAGE)
    page.add_script_tag(content=CARD_JS.read_text(encoding="utf-8"))
    page.evaluate(FAKE_BACKEND)
    page.errors = errors  # type: ignore[attr-defined]
    return page


def _shadow_text(page: Any, selector: str = "upr-alerts-card") -> str:
    """Every text, alt and aria-label of the first element's shadow tree (what is read)."""
    text: str = page.evaluate(
        """(selector) => {
          const root = document.querySelector(selector).shadowRoot;
          const parts = [];
          const walk = (node) => {
            if (node.nodeType === Node.TEXT_NODE) parts.push(node.textContent);
            if (node.nodeType === Node.ELEMENT_NODE) {
              if (node.tagName === "STYLE") return;
              for (const attr of ["alt", "aria-label", "title", "placeholder"]) {
                if (node.getAttribute(attr)) parts.push(node.getAttribute(attr));
              }
            }
            for (const child of node.childNodes) walk(child);
          };
          walk(root);
          return parts.join(" | ");
        }""",
        selector,
    )
    return text


# ------------------------------------------------------------------ the card, scripted feed


def test_card_with_a_scripted_backend(browser: Any, artifacts: Path) -> None:
    page = _card_page(browser)
    page.evaluate("fake.mount({type: 'custom:upr-alerts-card', limit: 10}, 'en')")
    card = page.locator("upr-alerts-card")
    expect(card.locator(".message")).to_have_text("Loading alerts…")
    assert page.evaluate("fake.subs[0].msg") == {"type": "upr_faces/alerts/subscribe", "limit": 10}

    # empty state
    page.evaluate("fake.push({type: 'snapshot', alerts: []})")
    expect(card.locator(".message")).to_contain_text("No alerts yet.")
    expect(card.locator("h2")).to_have_text("UPR alerts")

    # a live alert appears, is announced, and shows both images
    page.evaluate("fake.push({type: 'alert', alert: fake.alert('A1')})")
    first = card.locator("li.alert[data-match-id='A1']")
    expect(first).to_be_visible()
    expect(card.locator(".message")).to_be_hidden()
    expect(first.locator(".badge")).to_have_text("Match")
    expect(first.locator(".similarity")).to_have_text("87%")
    expect(first.locator("h3")).to_have_text("UPR-A1 — Person A1")
    expect(first.locator(".camera")).to_have_text("Door")
    expect(first.locator("time")).to_have_text("2 minutes ago")
    expect(first.locator(".state")).to_have_text("Awaiting a verdict")
    expect(first.locator("figure.face")).to_have_attribute("data-state", "loaded")
    expect(first.locator("figure.photo")).to_have_attribute("data-state", "loaded")
    expect(first.locator("figure.face img")).to_have_attribute(
        "alt", "Face seen by the camera Door"
    )
    expect(card.locator(".count")).to_have_text("1 awaiting a verdict")
    expect(card.locator("[role=status]")).to_have_text(
        "New alert, Match: UPR-A1 on the camera Door."
    )

    # a newer probable alert with no face crop and a broken registry photo: placeholders
    page.evaluate(
        """fake.push({type: 'alert', alert: fake.alert('B2', {
            tier: 'probable', similarity: 0.48, camera_id: 'gate', camera_name: 'Gate',
            camera_entity_id: 'camera.gate', detected_at: new Date().toISOString(),
            display_name: null, face_url: null, frame_url: null,
            registry_photo_url: '/nowhere/photo.jpg'})})"""
    )
    second = card.locator("li.alert[data-match-id='B2']")
    expect(card.locator("li.alert").first).to_have_attribute("data-match-id", "B2")
    expect(second.locator(".badge")).to_have_text("Probable")
    expect(second.locator("h3")).to_have_text("UPR-B2")
    expect(second.locator("figure.face")).to_have_attribute("data-state", "missing")
    expect(second.locator("figure.photo")).to_have_attribute("data-state", "missing")
    expect(second.locator("figure.photo .placeholder")).to_be_visible()
    expect(second.locator("figure.photo .placeholder")).to_contain_text("No image")
    expect(second.locator(".frame-line")).to_be_hidden()

    # an image whose signed URL has expired: the card asks for fresh URLs (a new
    # subscription, the old one closed) and shows the image from the new snapshot
    page.evaluate(
        """() => {
          const card = document.querySelector('upr-alerts-card');
          card._received.set('B2', Date.now() - 10 * 60 * 1000);
          card._lastResubscribe = 0;
          card.shadowRoot.querySelector("li[data-match-id='B2'] figure.photo img")
            .dispatchEvent(new Event('error'));
        }"""
    )
    page.wait_for_function("fake.subs.length === 2")
    assert page.evaluate("[fake.subs[0].active, fake.subs[1].active]") == [False, True]
    page.evaluate(
        """fake.push({type: 'snapshot', alerts: [
             {...fake.alerts.B2, registry_photo_url: fake.alerts.A1.registry_photo_url},
             {...fake.alerts.A1}]})"""
    )
    expect(second.locator("figure.photo")).to_have_attribute("data-state", "loaded")
    expect(second.locator("figure.face")).to_have_attribute("data-state", "missing")

    # a change in place keeps what the operator is typing, and the focus
    comment = first.get_by_label("Comment (optional)")
    comment.fill("checked on the monitor")
    page.evaluate("fake.push({type: 'alert', alert: {...fake.alerts.A1, similarity: 0.91}})")
    expect(first.locator(".similarity")).to_have_text("91%")
    expect(comment).to_have_value("checked on the monitor")
    expect(comment).to_be_focused()

    # keyboard: the comment field, then Confirm, then Reject; focus is visible
    page.keyboard.press("Tab")
    confirm = first.get_by_role("button", name="Confirm")
    expect(confirm).to_be_focused()
    assert confirm.evaluate("el => getComputedStyle(el).outlineStyle") != "none"
    page.keyboard.press("Tab")
    expect(first.get_by_role("button", name="Reject")).to_be_focused()

    # filters: tier and camera, and an empty result
    tier = card.get_by_label("Tier")
    camera = card.get_by_label("Camera", exact=True)
    tier.select_option("probable")
    expect(first).to_be_hidden()
    expect(second).to_be_visible()
    camera.select_option(label="Door")
    expect(card.locator(".message")).to_have_text("No alert matches these filters.")
    tier.select_option("")
    expect(first).to_be_visible()
    expect(second).to_be_hidden()
    camera.select_option("")
    expect(card.locator("li.alert:visible")).to_have_count(2)
    page.screenshot(path=artifacts / "scripted-en.png", full_page=True)

    # confirm with the keyboard (Enter in the comment field confirms)
    comment.focus()
    page.keyboard.press("Enter")
    expect(first).to_have_attribute("data-state", "confirmed")
    assert page.evaluate("fake.calls[0]") == {
        "domain": "upr_faces",
        "service": "confirm_match",
        "data": {"match_id": "A1", "comment": "checked on the monitor"},
        "target": None,
        "notifyOnError": False,
    }
    expect(first.locator(".state")).to_have_text("Confirmed")
    expect(first.locator(".decided")).to_contain_text("Confirmed by Test User, now")
    expect(first.locator(".comment-text")).to_have_text("Comment: checked on the monitor")
    expect(first.locator(".actions")).to_be_hidden()
    expect(first.locator(".state")).to_be_focused()

    # a failing service: the translated message and the error's own, inline; still pending
    page.evaluate("fake.fail = 'Alert B2 was already decided (confirmed)'")
    second.get_by_role("button", name="Reject").click()
    expect(second.get_by_role("alert")).to_have_text(
        "The verdict could not be recorded: Alert B2 was already decided (confirmed)"
    )
    expect(second).to_have_attribute("data-state", "pending")
    expect(second.get_by_role("button", name="Reject")).to_be_enabled()
    assert page.evaluate("fake.calls[1].service") == "reject_match"
    assert "comment" not in page.evaluate("fake.calls[1].data")

    # hide decided alerts (the one decided here stays until the page is reloaded)
    card.get_by_label("Show decided alerts").uncheck()
    expect(first).to_be_visible()

    # French: every text follows the language, aria labels and alt texts included
    page.evaluate("document.querySelector('upr-alerts-card').hass = fake.hass('fr')")
    expect(card.locator("h2")).to_have_text("Alertes UPR")
    expect(card.locator(".count")).to_have_text("1 en attente de décision")
    expect(first.locator(".badge")).to_have_text("Correspondance")
    expect(first.locator(".similarity")).to_have_text("87\u00a0%")
    expect(first.locator(".decided")).to_contain_text("Confirmée par Test User")
    expect(second.get_by_role("button", name="Confirmer")).to_be_visible()
    expect(second.get_by_role("button", name="Rejeter")).to_be_visible()
    expect(second.locator(".state")).to_have_text("En attente de décision")
    expect(second.get_by_label("Commentaire (facultatif)")).to_be_visible()
    expect(card.get_by_label("Niveau")).to_be_visible()
    expect(first.locator("figure.face img")).to_have_attribute(
        "alt", "Visage vu par la caméra Door"
    )
    french = _shadow_text(page)
    expect(second.get_by_role("alert")).to_have_text(
        "La décision n'a pas pu être enregistrée : Alert B2 was already decided (confirmed)"
    )
    for english in (
        "Confirm",
        "Reject",
        "Comment",
        "Camera",
        "Registry",
        "No image",
        "Tier",
        "Similarity",
        "Awaiting",
        "ago",
        "alerts",
        "Whole picture",
    ):
        assert not re.search(rf"\b{english}\b", french), f"{english!r} left in French: {french}"
    page.screenshot(path=artifacts / "scripted-fr.png", full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]


def test_card_shows_an_incident_whole(browser: Any) -> None:
    """An incident is one item: its sightings, the path across cameras; the same item
    updated in place when seen again; a camera filter finds it on any camera it passed;
    closed by the registry, it says so (in French too)."""
    page = _card_page(browser, "fr-FR")
    page.evaluate(
        "fake.mount({type: 'custom:upr-alerts-card', cameras: ['Hall'], show_decided: true}, 'fr')"
    )
    card = page.locator("upr-alerts-card")
    page.evaluate("fake.push({type: 'snapshot', alerts: []})")
    page.evaluate(
        """fake.push({type: 'alert', alert: fake.alert('I1', {
            sighting_count: 1, cameras: ['Door'], last_seen: new Date().toISOString(),
            path: [{camera_id: 'door', camera_name: 'Door', sightings: 1}]})})"""
    )
    expect(card.locator("li.alert")).to_have_count(0)  # not seen on the Hall camera yet
    page.evaluate(
        """fake.push({type: 'alert', alert: {...fake.alerts.I1, sighting_count: 3,
            cameras: ['Door', 'Hall'], last_seen: new Date(Date.now() - 60000).toISOString(),
            path: [{camera_id: 'door', camera_name: 'Door', sightings: 1},
                   {camera_id: 'hall', camera_name: 'Hall', sightings: 1},
                   {camera_id: 'door', camera_name: 'Door', sightings: 1}]}})"""
    )
    item = card.locator("li.alert[data-match-id='I1']")
    expect(card.locator("li.alert")).to_have_count(1)
    expect(item.locator(".sightings")).to_have_text("Vue 3 fois, dernière fois il y a 1 minute")
    expect(item.locator(".path")).to_have_text("Parcours : Door → Hall → Door")
    page.evaluate(
        """fake.push({type: 'alert', alert: {...fake.alerts.I1, sighting_count: 3,
            cameras: ['Door', 'Hall'], state: 'closed', closed_reason: 'person_closed',
            decided_at: new Date().toISOString()}})"""
    )
    expect(item.locator(".state")).to_have_text("Close : personne plus recherchée")
    expect(item.locator(".decided")).to_contain_text("Close par le fichier UPR")
    expect(item.locator(".actions")).to_be_hidden()
    assert page.errors == []  # type: ignore[attr-defined]


def test_card_options_and_failures(browser: Any) -> None:
    page = _card_page(browser)
    # options: title, tiers, cameras, show_decided
    page.evaluate(
        """fake.mount({type: 'custom:upr-alerts-card', title: 'Hall', tiers: ['match'],
                      cameras: ['camera.door', 'Gate'], show_decided: false}, 'en')"""
    )
    assert page.evaluate("fake.subs[0].msg") == {"type": "upr_faces/alerts/subscribe", "limit": 50}
    page.evaluate(
        """fake.push({type: 'snapshot', alerts: [
             fake.alert('M1'),
             fake.alert('P1', {tier: 'probable'}),
             fake.alert('G1', {camera_id: 'gate', camera_name: 'Gate', camera_entity_id: null}),
             fake.alert('X1', {camera_id: 'yard', camera_name: 'Yard',
                               camera_entity_id: 'camera.yard'}),
             fake.alert('D1', {state: 'confirmed', decided_by_name: 'Someone',
                               decided_at: new Date().toISOString()}),
           ]})"""
    )
    card = page.locator("upr-alerts-card")
    expect(card.locator("h2")).to_have_text("Hall")
    expect(card.locator("li.alert:visible")).to_have_count(2)
    for shown in ("M1", "G1"):
        expect(card.locator(f"li.alert[data-match-id='{shown}']")).to_be_visible()
    assert card.get_by_label("Tier").locator("option").all_inner_texts() == ["All tiers", "Match"]
    assert card.get_by_label("Camera", exact=True).locator("option").all_inner_texts() == [
        "All cameras",
        "Door",
        "Gate",
    ]
    card.get_by_label("Show decided alerts").check()
    expect(card.locator("li.alert[data-match-id='D1']")).to_be_visible()
    expect(card.locator("li.alert[data-match-id='D1'] .decided")).to_contain_text(
        "Confirmed by Someone"
    )

    # a newer snapshot (a resubscription) replaces the list
    page.evaluate("fake.push({type: 'snapshot', alerts: [fake.alert('M9')]})")
    expect(card.locator("li.alert")).to_have_count(1)

    # invalid options are refused with a readable message
    for bad, message in (
        ("{tiers: ['certain']}", "tiers"),
        ("{limit: 0}", "limit"),
        ("{show_decided: 'yes'}", "show_decided"),
        ("{cameras: [3]}", "cameras"),
    ):
        error = page.evaluate(
            f"""() => {{ try {{ document.createElement('upr-alerts-card').setConfig({bad});
                         return null; }} catch (err) {{ return err.message; }} }}"""
        )
        assert error, bad
        assert message in error, (bad, error)

    # the feed cannot be opened (integration not loaded): a message and Retry
    page.evaluate(
        """() => {
          document.body.textContent = '';
          fake.subs = [];
          fake.subscribeError = {code: 'unknown_command', message: 'Unknown command.'};
          fake.mount({type: 'custom:upr-alerts-card'}, 'fr');
        }"""
    )
    expect(card.get_by_role("alert")).to_contain_text("Alertes indisponibles : Unknown command.")
    page.evaluate("fake.subscribeError = null")
    card.get_by_role("button", name="Réessayer").click()
    page.evaluate("fake.push({type: 'snapshot', alerts: []})")
    expect(card.locator(".message")).to_contain_text("Aucune alerte pour l'instant.")

    # the card picker entry and the editor hooks
    assert page.evaluate("window.customCards.find(c => c.type === 'upr-alerts-card').preview")
    assert (
        page.evaluate("customElements.get('upr-alerts-card').getConfigElement().tagName")
        == "UPR-ALERTS-CARD-EDITOR"
    )
    assert page.evaluate("customElements.get('upr-alerts-card').getStubConfig()") == {
        "limit": 20,
        "show_decided": True,
    }
    # removed from the page: the feed is closed
    page.evaluate("document.querySelector('upr-alerts-card').remove()")
    assert page.evaluate("fake.subs.every(sub => !sub.active)")
    assert page.errors == []  # type: ignore[attr-defined]


def test_editor_fires_config_changed(browser: Any, artifacts: Path) -> None:
    page = _card_page(browser)
    page.evaluate(
        """() => {
          const editor = document.createElement('upr-alerts-card-editor');
          editor.hass = fake.hass('en');
          editor.setConfig({type: 'custom:upr-alerts-card', limit: 20});
          editor.addEventListener('config-changed', (ev) => {
            fake.configs.push(ev.detail.config);
            editor.setConfig(ev.detail.config);   // as the dashboard editor does
          });
          document.body.append(editor);
        }"""
    )
    editor = page.locator("upr-alerts-card-editor")
    last = "fake.configs[fake.configs.length - 1]"
    # only UPR Faces cameras are offered
    expect(editor.get_by_label("Door (camera.door)")).to_be_visible()
    expect(editor.get_by_label("Gate (camera.gate)")).to_be_visible()
    expect(editor.get_by_label("Garden (camera.garden)")).to_have_count(0)
    expect(editor.get_by_label("Number of recent alerts")).to_have_value("20")

    editor.get_by_label("Probable").uncheck()
    assert page.evaluate(last) == {
        "type": "custom:upr-alerts-card",
        "limit": 20,
        "tiers": ["match"],
    }
    editor.get_by_label("Probable").check()
    assert "tiers" not in page.evaluate(last)
    editor.get_by_label("Door (camera.door)").check()
    assert page.evaluate(last)["cameras"] == ["camera.door"]
    editor.get_by_label("Title").fill("Entrance")
    editor.get_by_label("Title").press("Tab")
    assert page.evaluate(last)["title"] == "Entrance"
    editor.get_by_label("Number of recent alerts").fill("30")
    editor.get_by_label("Number of recent alerts").press("Tab")
    assert page.evaluate(last)["limit"] == 30
    editor.get_by_label("Show decided alerts (confirmed or rejected)").uncheck()
    assert page.evaluate(last) == {
        "type": "custom:upr-alerts-card",
        "limit": 30,
        "cameras": ["camera.door"],
        "title": "Entrance",
        "show_decided": False,
    }
    page.screenshot(path=artifacts / "editor-en.png", full_page=True)

    page.evaluate("document.querySelector('upr-alerts-card-editor').hass = fake.hass('fr-FR')")
    expect(editor.get_by_label("Titre")).to_have_value("Entrance")
    expect(editor.get_by_text("Niveaux affichés")).to_be_visible()
    expect(editor.get_by_label("Correspondance")).to_be_checked()
    french = _shadow_text(page, "upr-alerts-card-editor")
    for english in ("Title", "Number", "Tiers", "Cameras", "Show decided"):
        assert not re.search(rf"\b{english}\b", french), f"{english!r} left in French: {french}"
    assert page.errors == []  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ blueprint


@pytest.fixture
def blueprint_hass(hass: HomeAssistant, tmp_path: Path) -> HomeAssistant:
    """A configuration folder holding the blueprint, as a user would install it."""
    config = tmp_path / "config"
    target = config / "blueprints" / "automation" / "upr_faces" / BLUEPRINT.name
    target.parent.mkdir(parents=True)
    shutil.copy(BLUEPRINT, target)
    hass.config.config_dir = str(config)
    return hass


def _match(**extra: Any) -> dict[str, Any]:
    return {
        "match_id": "m-1",
        "tier": "match",
        "person_id": "P-000123",
        "reference": "UPR-2026-0042",
        "display_name": "Jeanne Martin",
        "similarity": 0.8731,
        "camera_entity_id": "camera.door",
        "camera_name": "Door",
        "detected_at": "2026-01-31T12:00:00+00:00",
        "snapshot_url": "/api/upr_faces/e1/snapshot/m-1/face?authSig=abc",
        "registry_photo_url": "/api/upr_faces/e1/person/P-000123/photo?authSig=def",
        **extra,
    }


@pytest.mark.parametrize(
    ("inputs", "events", "expected"),
    [
        pytest.param(
            {"decide_from_notification": False},
            [_match()],
            [
                {
                    "title": "UPR match: UPR-2026-0042",
                    "message": "UPR-2026-0042 – Jeanne Martin, camera Door, similarity 87 %",
                    "data": {
                        "tag": "upr_m-1",
                        "group": "upr_faces",
                        "image": "/api/upr_faces/e1/snapshot/m-1/face?authSig=abc",
                    },
                }
            ],
            id="match-with-image",
        ),
        pytest.param(
            {"decide_from_notification": False},
            [_match(tier="probable")],
            [],
            id="probable-left-out",
        ),
        pytest.param(
            {"include_probable": True, "language": "fr", "decide_from_notification": False},
            [_match(tier="probable", display_name=None, snapshot_url=None, similarity=0.47)],
            [
                {
                    "title": "Correspondance probable UPR : UPR-2026-0042",
                    "message": "UPR-2026-0042, caméra Door, similarité 47 %",
                    "data": {"tag": "upr_m-1", "group": "upr_faces"},
                }
            ],
            id="probable-included-french-no-image",
        ),
        pytest.param(
            {"cameras": ["camera.gate"], "decide_from_notification": False},
            [_match(), _match(match_id="m-2", camera_entity_id="camera.gate", camera_name="Gate")],
            [
                {
                    "title": "UPR match: UPR-2026-0042",
                    "message": "UPR-2026-0042 – Jeanne Martin, camera Gate, similarity 87 %",
                    "data": {
                        "tag": "upr_m-2",
                        "group": "upr_faces",
                        "image": "/api/upr_faces/e1/snapshot/m-1/face?authSig=abc",
                    },
                }
            ],
            id="camera-filter",
        ),
    ],
)
async def test_notify_blueprint(
    blueprint_hass: HomeAssistant,
    inputs: dict[str, Any],
    events: list[dict[str, Any]],
    expected: list[dict[str, Any]],
) -> None:
    hass = blueprint_hass
    calls = async_mock_service(hass, "notify", "mobile_app_pixel")
    assert await async_setup_component(
        hass,
        "automation",
        {
            "automation": {
                "alias": "UPR notify",
                "use_blueprint": {
                    "path": "upr_faces/notify_on_match.yaml",
                    "input": {"notify_service": "notify.mobile_app_pixel", **inputs},
                },
            }
        },
    )
    await hass.async_block_till_done()
    state = hass.states.get("automation.upr_notify")
    assert state is not None
    assert state.state == "on", state.attributes
    for data in events:
        hass.bus.async_fire("upr_match", data)
        await hass.async_block_till_done()
    assert [dict(call.data) for call in calls] == expected


async def _calls(calls: list[Any], count: int, seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while len(calls) < count:  # noqa: ASYNC110 - the automation runs on this loop
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("language", "decided", "first", "then"),
    [
        pytest.param(
            "en",
            ("upr_faces_audit", {"action": "confirmed", "user_name": "Alice"}),
            ("Confirm", "Reject", "Open"),
            "Confirmed by Alice: UPR-2026-0042 – Jeanne Martin, camera Door, similarity 87 %",
            id="confirmed-from-the-phone",
        ),
        pytest.param(
            "fr",
            ("upr_faces_action_refused", {"verdict": "rejected", "by": "Bruno"}),
            ("Confirmer", "Rejeter", "Ouvrir"),
            "Déjà rejetée par Bruno : UPR-2026-0042 – Jeanne Martin, caméra Door, similarité 87 %",
            id="already-decided-french",
        ),
    ],
)
async def test_notify_blueprint_buttons_then_who_decided(
    blueprint_hass: HomeAssistant,
    language: str,
    decided: tuple[str, dict[str, Any]],
    first: tuple[str, str, str],
    then: str,
) -> None:
    """The notification carries Confirm and Reject actions named after the alert (and an
    Open button with a dashboard path); once the alert is decided, or a press is refused
    because someone decided first, the same notification (its tag) says who decided."""
    hass = blueprint_hass
    calls = async_mock_service(hass, "notify", "mobile_app_pixel")
    inputs = {
        "notify_service": "notify.mobile_app_pixel",
        "language": language,
        "dashboard_path": "/upr-faces/watch",
    }
    assert await async_setup_component(
        hass,
        "automation",
        {
            "automation": {
                "alias": "UPR notify",
                "use_blueprint": {"path": "upr_faces/notify_on_match.yaml", "input": inputs},
            }
        },
    )
    await hass.async_block_till_done()
    hass.bus.async_fire("upr_match", _match())
    await _calls(calls, 1)  # the run waits for the verdict: no async_block_till_done
    (sent,) = calls
    actions = sent.data["data"]["actions"]
    assert [a["title"] for a in actions] == list(first)
    assert [a["action"] for a in actions] == [
        "UPR_FACES_CONFIRM_m-1",
        "UPR_FACES_REJECT_m-1",
        "URI",
    ]
    assert actions[2]["uri"] == "/upr-faces/watch"
    event_type, data = decided
    hass.bus.async_fire(event_type, {"match_id": "m-2", **data})  # another alert's
    await asyncio.sleep(0.3)
    assert len(calls) == 1
    hass.bus.async_fire(event_type, {"match_id": "m-1", **data})
    await _calls(calls, 2)
    assert calls[1].data["message"] == then
    assert calls[1].data["data"] == {"tag": "upr_m-1", "group": "upr_faces"}


async def test_notify_blueprint_inputs(blueprint_hass: HomeAssistant) -> None:
    """The blueprint loads with Home Assistant's own blueprint models and declares its inputs."""
    from homeassistant.components.automation.config import (
        AUTOMATION_BLUEPRINT_SCHEMA,
    )
    from homeassistant.components.blueprint import models
    from homeassistant.util.yaml import load_yaml_dict

    blueprint = models.Blueprint(
        await blueprint_hass.async_add_executor_job(load_yaml_dict, str(BLUEPRINT)),
        expected_domain="automation",
        schema=AUTOMATION_BLUEPRINT_SCHEMA,
    )
    assert blueprint.domain == "automation"
    assert set(blueprint.inputs) == {
        "notify_service",
        "include_probable",
        "cameras",
        "language",
        "decide_from_notification",
        "dashboard_path",
    }
    assert blueprint.inputs["include_probable"]["default"] is False
    assert blueprint.inputs["cameras"]["default"] == []


# ------------------------------------------------------------------------ the whole stack


@pytest.fixture
def owner_page(browser: Any, upr_stack: Stack) -> Iterator[Any]:
    page = _dashboard(browser, upr_stack, "owner", "en-US")
    yield page
    page.context.close()


def _dashboard(
    browser: Any,
    stack: Stack,
    who: str,
    locale: str,
    scheme: str = "light",
    prepare: Any = None,
) -> Any:
    """A logged-in browser tab on the test dashboard (tokens put where the frontend keeps
    them); ``prepare(context)`` runs before the page is opened."""
    context = browser.new_context(
        locale=locale, color_scheme=scheme, viewport={"width": 1280, "height": 1000}
    )
    if prepare is not None:
        prepare(context)
    tokens = json.dumps(stack.tokens_of(who))
    context.add_init_script(
        f"""(() => {{
          const tokens = {tokens};
          if (location.origin === tokens.hassUrl) {{
            localStorage.setItem("hassTokens", JSON.stringify(tokens));
          }}
        }})();"""
    )
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(f"{err}\n{err.stack}"))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(stack.base_url + stack.dashboard_path, wait_until="domcontentloaded")
    return page


def _images_loaded(item: Any) -> None:
    for kind in ("face", "photo"):
        item.locator(f"figure.{kind} img").evaluate(
            """(img) => new Promise((resolve, reject) => {
                 const deadline = Date.now() + 30000;
                 const check = () => {
                   if (img.complete && img.naturalWidth > 0) resolve(true);
                   else if (Date.now() > deadline) reject(new Error("not loaded: " + img.src));
                   else setTimeout(check, 100);
                 };
                 check();
               })"""
        )


def _card_errors(page: Any) -> list[str]:
    return [error for error in page.errors if "upr-alerts-card" in error]


def _verdict_received(stack: Stack, match_id: str) -> dict[str, Any] | None:
    for verdict in stack.received()["verdicts"]:
        if verdict["alert_id"] == match_id:
            found: dict[str, Any] = verdict
            return found
    return None


def test_operator_confirms_an_alert(owner_page: Any, upr_stack: Stack, artifacts: Path) -> None:
    """English, the owner: live alerts with both images, filters, a confirmation with a
    comment that reaches the registry."""
    page = owner_page
    card = page.locator("upr-alerts-card")
    expect(card.locator("h2")).to_have_text("UPR alerts", timeout=LONG)
    first = card.locator("li.alert").first
    expect(first).to_be_visible(timeout=LONG)
    _images_loaded(first)
    page.screenshot(path=artifacts / "stack-en-first-alert.png")

    # a second camera added now: its alerts arrive over the feed, without a reload
    page.evaluate("window.__same_page = true")
    gate_clip = upr_stack.clip.with_name("gate.mp4")
    shutil.copy(upr_stack.clip, gate_clip)
    run_async(
        lambda: hass_demo.add_camera(
            upr_stack.base_url,
            upr_stack.owner.token,
            upr_stack.entry_id,
            "Gate",
            f"file://{gate_clip}",
        )
    )
    # the same persons seen there join their incidents: the item shows the path
    gate = card.locator("li.alert", has=page.locator(".path", has_text="Gate")).first
    expect(gate).to_be_visible(timeout=LONG)
    expect(gate.locator(".sightings")).to_contain_text("Seen")
    assert page.evaluate("window.__same_page === true")
    _images_loaded(gate)

    # filter by camera (any camera an incident passed), then by tier
    camera = card.get_by_label("Camera", exact=True)
    camera.select_option(label="Gate")
    for text in card.locator("li.alert:visible .path").all_inner_texts():
        assert "Gate" in text
    camera.select_option("")
    tier = gate.get_attribute("data-tier")
    card.get_by_label("Tier").select_option(tier)
    for state in card.locator("li.alert:visible").evaluate_all(
        "items => items.map(item => item.dataset.tier)"
    ):
        assert state == tier
    card.get_by_label("Tier").select_option("")

    # confirm the newest pending alert, with a comment
    pending = card.locator("li.alert[data-state='pending']").first
    expect(pending).to_be_visible()
    match_id = pending.get_attribute("data-match-id")
    assert match_id
    item = card.locator(f"li.alert[data-match-id='{match_id}']")
    item.get_by_label("Comment (optional)").fill("Patrol sent to the door")
    item.get_by_role("button", name="Confirm").click()
    expect(item).to_have_attribute("data-state", "confirmed", timeout=15_000)
    expect(item.locator(".state")).to_have_text("Confirmed")
    expect(item.locator(".decided")).to_contain_text(f"Confirmed by {upr_stack.owner_name}")
    expect(item.locator(".comment-text")).to_have_text("Comment: Patrol sent to the door")
    verdict = wait_until(
        lambda: _verdict_received(upr_stack, match_id), "the verdict at the registry", 45
    )
    assert verdict["verdict"] == "confirmed"
    assert verdict["comment"] == "Patrol sent to the door"
    assert verdict["by"] == upr_stack.owner_name
    card.screenshot(path=artifacts / "stack-en-confirmed.png")
    assert _card_errors(page) == []


def test_french_operator_rejects_with_the_keyboard(
    browser: Any, upr_stack: Stack, artifacts: Path
) -> None:
    """French, a non-admin user: French labels, and a rejection made with the keyboard."""
    page = _dashboard(browser, upr_stack, "operator", "fr-FR")
    try:
        card = page.locator("upr-alerts-card")
        expect(card.locator("h2")).to_have_text("Alertes UPR", timeout=LONG)
        expect(card.get_by_label("Niveau")).to_be_visible()
        pending = card.locator("li.alert[data-state='pending']").first
        expect(pending).to_be_visible(timeout=LONG)
        _images_loaded(pending)
        match_id = pending.get_attribute("data-match-id")
        item = card.locator(f"li.alert[data-match-id='{match_id}']")
        expect(item.get_by_role("button", name="Confirmer")).to_be_visible()
        expect(item.get_by_role("button", name="Rejeter")).to_be_visible()
        expect(item.locator(".state")).to_have_text("En attente de décision")
        confirmed = card.locator("li.alert[data-state='confirmed']")
        if confirmed.count():
            expect(confirmed.first.locator(".decided")).to_contain_text("Confirmée par")
        page.screenshot(path=artifacts / "stack-fr.png")

        # keyboard only: type the comment, Tab to Confirm, Tab to Reject, Enter
        item.get_by_label("Commentaire (facultatif)").focus()
        page.keyboard.type("Pas la même personne")
        page.keyboard.press("Tab")
        expect(item.get_by_role("button", name="Confirmer")).to_be_focused()
        page.keyboard.press("Tab")
        reject = item.get_by_role("button", name="Rejeter")
        expect(reject).to_be_focused()
        assert reject.evaluate("el => getComputedStyle(el).outlineStyle") != "none"
        page.keyboard.press("Enter")
        expect(item).to_have_attribute("data-state", "rejected", timeout=15_000)
        operator = upr_stack.operator["name"]
        expect(item.locator(".decided")).to_contain_text(f"Rejetée par {operator}")
        verdict = wait_until(
            lambda: _verdict_received(upr_stack, str(match_id)), "the verdict at the registry", 45
        )
        assert verdict["verdict"] == "rejected"
        assert verdict["comment"] == "Pas la même personne"
        assert verdict["by"] == operator
        card.screenshot(path=artifacts / "stack-fr-rejected.png")
        assert _card_errors(page) == []
    finally:
        page.context.close()


CONTRAST = """(card) => {
  const parse = (text) => {
    const m = /rgba?\\(([^)]+)\\)/.exec(text);
    if (!m) throw new Error("unexpected colour " + text);
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const over = (top, bottom) => ({
    r: top.r * top.a + bottom.r * (1 - top.a),
    g: top.g * top.a + bottom.g * (1 - top.a),
    b: top.b * top.a + bottom.b * (1 - top.a),
    a: 1,
  });
  const background = (el) => {
    const layers = [];
    const up = (node) => node.parentElement || node.getRootNode().host;
    for (let node = el; node; node = up(node)) {
      if (node.nodeType !== Node.ELEMENT_NODE) break;
      const colour = parse(getComputedStyle(node).backgroundColor);
      if (colour.a > 0) layers.push(colour);
      if (colour.a >= 1) break;
    }
    let result = { r: 255, g: 255, b: 255, a: 1 };
    for (const layer of layers.reverse()) result = over(layer, result);
    return result;
  };
  const luminance = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const root = card.shadowRoot;
  const selectors = ["h2", ".filters label", "select", ".badge", ".similarity",
    "h3 .reference", "h3 .name", ".where", ".state", ".decided", ".comment-text", "figcaption",
    ".actions label", "input[type=text]", "button.confirm", "button.reject"];
  const out = [];
  for (const selector of selectors) {
    for (const el of root.querySelectorAll(selector)) {
      if (!el.offsetParent || !el.textContent.trim() && el.tagName !== "INPUT") continue;
      const bg = background(el);
      const fg = over(parse(getComputedStyle(el).color), bg);
      const [hi, lo] = [luminance(fg), luminance(bg)].sort((a, b) => b - a);
      const text = el.textContent.trim().slice(0, 30);
      out.push({ selector, ratio: (hi + 0.05) / (lo + 0.05), text });
    }
  }
  return out;
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_contrast_in_home_assistant_themes(
    browser: Any, upr_stack: Stack, artifacts: Path, scheme: str
) -> None:
    """WCAG AA (4.5:1) for every text of the card, in the default light and dark themes."""
    page = _dashboard(browser, upr_stack, "owner", "en-US", scheme)
    try:
        card = page.locator("upr-alerts-card")
        expect(card.locator("li.alert").first).to_be_visible(timeout=LONG)
        expect(card.locator("li.alert[data-state='pending']").first).to_be_visible(timeout=LONG)
        dark = page.evaluate(
            "document.querySelector('home-assistant').hass.themes.darkMode === true"
        )
        assert dark is (scheme == "dark")
        measures = card.evaluate(CONTRAST)
        seen = {measure["selector"] for measure in measures}
        assert {"h2", ".badge", "h3 .reference", ".where", ".state", "button.confirm"} <= seen
        weak = [measure for measure in measures if measure["ratio"] < 4.5]
        card.screenshot(path=artifacts / f"stack-{scheme}.png")
        assert weak == [], weak
    finally:
        page.context.close()


def test_card_loads_before_home_assistant_app(browser: Any, upr_stack: Stack) -> None:
    """Home Assistant imports its app and the card in parallel; its app then replaces
    ``window.customElements`` (a scoped registry polyfill). With the app held back so that
    the card's module surely runs first, the card must still be defined on the dashboard."""

    def hold_back_app(context: Any) -> None:
        def slow(route: Any) -> None:
            time.sleep(1.5)  # the card's module is imported meanwhile
            route.continue_()

        context.route("**/frontend_latest/app.*.js", slow)

    page = _dashboard(browser, upr_stack, "owner", "en-US", prepare=hold_back_app)
    try:
        card = page.locator("upr-alerts-card")
        expect(card.locator("h2")).to_have_text("UPR alerts", timeout=LONG)
        expect(page.get_by_text("Custom element doesn't exist")).to_have_count(0)
        assert _card_errors(page) == []
    finally:
        page.context.close()


def test_documented_dashboard_renders(browser: Any, upr_stack: Stack, artifacts: Path) -> None:
    """The multi-camera dashboard of docs/dashboard.md, its three cameras played by the test
    camera, is accepted by Home Assistant and rendered without an error card."""
    text = DASHBOARD_DOC.read_text(encoding="utf-8")
    block = next(
        block
        for block in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
        if block.startswith("title: UPR Faces")
    )
    camera = upr_stack.camera_entity.removeprefix("camera.")
    for name in ("entrance", "lobby", "car_park"):
        block = block.replace(f".{name}", f".{camera}")  # camera.entrance, switch.entrance_…
    config = yaml.safe_load(block)
    token = upr_stack.owner.token
    path = run_async(
        lambda: hass_demo.save_dashboard(upr_stack.base_url, token, "upr-docs", config)
    )
    page = _dashboard(browser, upr_stack, "owner", "en-US")
    try:
        page.goto(f"{upr_stack.base_url}{path}/watch", wait_until="domcontentloaded")
        card = page.locator("upr-alerts-card")
        expect(card.locator("h2")).to_have_text("UPR alerts", timeout=LONG)
        expect(page.locator("hui-picture-entity-card")).to_have_count(3)
        expect(page.locator("hui-entities-card")).to_have_count(2)
        expect(page.locator("hui-error-card")).to_have_count(0)
        expect(page.get_by_text("Entity not available")).to_have_count(0)
        expect(page.get_by_text("Faces in view")).to_have_count(3)
        page.screenshot(path=artifacts / "docs-dashboard.png", full_page=True)
        assert _card_errors(page) == []
    finally:
        page.context.close()


def test_home_assistant_logged_no_deprecation(upr_stack: Stack) -> None:
    """The real Home Assistant of these tests reported no deprecated use by upr_faces
    (the log of the whole module so far: set-up, flows, dashboards, verdicts)."""
    found = [
        line
        for line in upr_stack.log.read_text(encoding="utf-8", errors="replace").splitlines()
        if "upr_faces" in line and DEPRECATION.search(line)
    ]
    assert found == []
