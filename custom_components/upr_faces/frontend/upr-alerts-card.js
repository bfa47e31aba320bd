/**
 * UPR Faces: the alert card (`custom:upr-alerts-card`) and its visual editor.
 *
 * A plain web component: no build step, no external request. The integration serves this
 * file at /upr_faces_static/upr-alerts-card.js and adds it to every dashboard.
 *
 * Data: the websocket feed `upr_faces/alerts/subscribe` (a snapshot of recent alerts, newest
 * first, then each new alert and each change). Verdicts: the services
 * `upr_faces.confirm_match` / `upr_faces.reject_match`. Texts follow the user's language
 * (French for `fr*`, English otherwise); colours come from Home Assistant's theme variables.
 *
 * Options (all optional):
 *   title          card title (default: "UPR alerts" / "Alertes UPR")
 *   tiers          [match, probable]: the tiers shown (default both)
 *   cameras        camera entity ids, names or ids whose alerts are shown (default all)
 *   limit          how many recent alerts to keep (1..500, default 50)
 *   show_decided   show confirmed / rejected alerts (default true)
 *   config_entry_id  only the alerts of this UPR Faces entry
 */

const CARD_VERSION = "0.1.0";
const CARD_TYPE = "upr-alerts-card";
const EDITOR_TYPE = "upr-alerts-card-editor";
const DOMAIN = "upr_faces";
const TIERS = ["match", "probable"];
const DEFAULT_LIMIT = 50;
const MAX_LIMIT = 500;
/** Signed image URLs live five minutes; older than this, a failed image asks for new ones. */
const URL_FRESH_MS = 60 * 1000;
const RESUBSCRIBE_MIN_INTERVAL_MS = 30 * 1000;
const CLOCK_TICK_MS = 30 * 1000;

/** The states of an incident; `closed`: the registry no longer seeks the person. */
const STATES = ["pending", "confirmed", "rejected", "closed"];

const STRINGS = {
  en: {
    card_name: "UPR alerts",
    card_description:
      "Face recognition alerts of UPR Faces, newest first, with the registry photo; confirm or reject them.",
    title: "UPR alerts",
    loading: "Loading alerts…",
    empty: "No alerts yet.",
    empty_hint: "New alerts appear here as soon as a camera recognises a person of the registry.",
    empty_filtered: "No alert matches these filters.",
    unavailable: "Alerts are unavailable: {message}",
    unknown_error: "unknown error",
    retry: "Retry",
    filters: "Filters",
    filter_tier: "Tier",
    filter_camera: "Camera",
    all_tiers: "All tiers",
    all_cameras: "All cameras",
    show_decided: "Show decided alerts",
    list_label: "Alerts, newest first",
    pending_count: "{count} awaiting a verdict",
    tier_match: "Match",
    tier_probable: "Probable",
    similarity: "Similarity",
    state_pending: "Awaiting a verdict",
    state_confirmed: "Confirmed",
    state_rejected: "Rejected",
    state_closed: "Closed: no longer sought",
    decided_confirmed: "Confirmed by {who}, {when}",
    decided_closed: "Closed by the registry, {when}",
    sightings: "Seen {count} times, last {when}",
    path: "Path: {path}",
    decided_rejected: "Rejected by {who}, {when}",
    an_operator: "an operator",
    comment_text: "Comment: {text}",
    comment_label: "Comment (optional)",
    confirm: "Confirm",
    reject: "Reject",
    sending: "Sending…",
    verdict_error: "The verdict could not be recorded: {message}",
    face_alt: "Face seen by the camera {camera}",
    photo_alt: "Registry photo of {reference}",
    no_image: "No image",
    image_missing: "{alt}: no image",
    seen_by_camera: "Camera",
    registry_photo: "Registry",
    full_frame: "Whole picture",
    full_frame_label: "Whole picture of the alert {reference} (opens in a new tab)",
    announce_new: "New alert, {tier}: {reference} on the camera {camera}.",
    announce_decided: "Alert {reference}: {state}.",
    // editor
    editor_title: "Title",
    editor_title_hint: "Leave empty for the default title.",
    editor_limit: "Number of recent alerts",
    editor_tiers: "Tiers shown",
    editor_cameras: "Cameras",
    editor_cameras_hint: "None ticked: every camera.",
    editor_no_cameras: "No UPR Faces camera found.",
    editor_show_decided: "Show decided alerts (confirmed or rejected)",
  },
  fr: {
    card_name: "Alertes UPR",
    card_description:
      "Les alertes de reconnaissance faciale d'UPR Faces, les plus récentes d'abord, avec la photo du fichier ; à confirmer ou rejeter.",
    title: "Alertes UPR",
    loading: "Chargement des alertes…",
    empty: "Aucune alerte pour l'instant.",
    empty_hint:
      "Les nouvelles alertes s'affichent ici dès qu'une caméra reconnaît une personne du fichier.",
    empty_filtered: "Aucune alerte ne correspond à ces filtres.",
    unavailable: "Alertes indisponibles : {message}",
    unknown_error: "erreur inconnue",
    retry: "Réessayer",
    filters: "Filtres",
    filter_tier: "Niveau",
    filter_camera: "Caméra",
    all_tiers: "Tous les niveaux",
    all_cameras: "Toutes les caméras",
    show_decided: "Afficher les alertes traitées",
    list_label: "Alertes, les plus récentes d'abord",
    pending_count: "{count} en attente de décision",
    tier_match: "Correspondance",
    tier_probable: "Probable",
    similarity: "Similarité",
    state_pending: "En attente de décision",
    state_confirmed: "Confirmée",
    state_rejected: "Rejetée",
    state_closed: "Close : personne plus recherchée",
    decided_confirmed: "Confirmée par {who}, {when}",
    decided_closed: "Close par le fichier UPR, {when}",
    sightings: "Vue {count} fois, dernière fois {when}",
    path: "Parcours : {path}",
    decided_rejected: "Rejetée par {who}, {when}",
    an_operator: "un opérateur",
    comment_text: "Commentaire : {text}",
    comment_label: "Commentaire (facultatif)",
    confirm: "Confirmer",
    reject: "Rejeter",
    sending: "Envoi…",
    verdict_error: "La décision n'a pas pu être enregistrée : {message}",
    face_alt: "Visage vu par la caméra {camera}",
    photo_alt: "Photo du fichier UPR de {reference}",
    no_image: "Pas d'image",
    image_missing: "{alt} : pas d'image",
    seen_by_camera: "Caméra",
    registry_photo: "Fichier UPR",
    full_frame: "Image entière",
    full_frame_label: "Image entière de l'alerte {reference} (s'ouvre dans un nouvel onglet)",
    announce_new: "Nouvelle alerte, {tier} : {reference} sur la caméra {camera}.",
    announce_decided: "Alerte {reference} : {state}.",
    editor_title: "Titre",
    editor_title_hint: "Laisser vide pour le titre par défaut.",
    editor_limit: "Nombre d'alertes récentes",
    editor_tiers: "Niveaux affichés",
    editor_cameras: "Caméras",
    editor_cameras_hint: "Aucune cochée : toutes les caméras.",
    editor_no_cameras: "Aucune caméra UPR Faces trouvée.",
    editor_show_decided: "Afficher les alertes traitées (confirmées ou rejetées)",
  },
};

// ------------------------------------------------------------------------------ helpers

/** "fr" for any French locale, else "en". */
function languageOf(hass) {
  const lang = (hass && ((hass.locale && hass.locale.language) || hass.language)) || "";
  return String(lang).toLowerCase().startsWith("fr") ? "fr" : "en";
}

/** The BCP 47 tag used for dates and numbers (the user's language, e.g. "fr" or "en-GB"). */
function localeTag(hass) {
  const lang = hass && ((hass.locale && hass.locale.language) || hass.language);
  return lang || (typeof navigator !== "undefined" ? navigator.language : "en");
}

/** The language of the page when no `hass` is at hand (the card picker's description). */
function pageLanguage() {
  try {
    const stored = window.localStorage && window.localStorage.getItem("selectedLanguage");
    if (stored) return JSON.parse(stored);
  } catch (_err) {
    // private mode or a malformed value: fall through
  }
  return (document.documentElement && document.documentElement.lang) || navigator.language || "en";
}

function translator(lang) {
  const table = STRINGS[lang] || STRINGS.en;
  return (key, vars) => {
    let text = key in table ? table[key] : STRINGS.en[key] || key;
    if (vars) {
      for (const [name, value] of Object.entries(vars)) {
        text = text.split(`{${name}}`).join(value == null ? "" : String(value));
      }
    }
    return text;
  };
}

/** Create an element: h("p", {class: "x", text: "..."}, [children]). */
function h(tag, attrs = {}, children = []) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") el.textContent = value;
    else if (name === "class") el.className = value;
    else if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) if (child) el.append(child);
  return el;
}

function parseTime(iso) {
  const time = Date.parse(iso || "");
  return Number.isNaN(time) ? null : time;
}

/** The URL without its query (the signature changes on every push, the image does not). */
function stripQuery(url) {
  return url ? String(url).split("?")[0] : "";
}

const FACE_ICON =
  "M12,2A10,10 0 0,0 2,12A10,10 0 0,0 12,22A10,10 0 0,0 22,12A10,10 0 0,0 12,2M12,4A8,8 0 0,1 20,12A8,8 0 0,1 12,20A8,8 0 0,1 4,12A8,8 0 0,1 12,4M9,8.5A1.5,1.5 0 0,0 7.5,10A1.5,1.5 0 0,0 9,11.5A1.5,1.5 0 0,0 10.5,10A1.5,1.5 0 0,0 9,8.5M15,8.5A1.5,1.5 0 0,0 13.5,10A1.5,1.5 0 0,0 15,11.5A1.5,1.5 0 0,0 16.5,10A1.5,1.5 0 0,0 15,8.5M8,14C8.9,15.8 10.3,17 12,17C13.7,17 15.1,15.8 16,14H8Z";

function iconSvg(path) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const p = document.createElementNS("http://www.w3.org/2000/svg", "path");
  p.setAttribute("d", path);
  svg.append(p);
  return svg;
}

/** Normalise and validate a card configuration; throws with a readable message. */
function normaliseConfig(config) {
  if (!config || typeof config !== "object") throw new Error("Invalid configuration");
  const out = { ...config };
  if (out.tiers !== undefined) {
    const tiers = Array.isArray(out.tiers) ? out.tiers : [out.tiers];
    for (const tier of tiers) {
      if (!TIERS.includes(tier)) {
        throw new Error(`tiers: '${tier}' is not one of ${TIERS.join(", ")}`);
      }
    }
    out.tiers = tiers;
  }
  if (out.cameras !== undefined) {
    const cameras = Array.isArray(out.cameras) ? out.cameras : [out.cameras];
    if (cameras.some((camera) => typeof camera !== "string")) {
      throw new Error("cameras: a list of camera entity ids or names");
    }
    out.cameras = cameras;
  }
  if (out.limit !== undefined) {
    const limit = Number(out.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT) {
      throw new Error(`limit: a whole number from 1 to ${MAX_LIMIT}`);
    }
    out.limit = limit;
  }
  if (out.show_decided !== undefined && typeof out.show_decided !== "boolean") {
    throw new Error("show_decided: true or false");
  }
  if (out.title !== undefined && out.title !== null && typeof out.title !== "string") {
    throw new Error("title: a text");
  }
  if (out.config_entry_id !== undefined && typeof out.config_entry_id !== "string") {
    throw new Error("config_entry_id: a text");
  }
  return out;
}

// ----------------------------------------------------------------------------- styles

const SHARED_STYLE = `
  :host {
    --upr-text: var(--primary-text-color, #212121);
    --upr-text-2: var(--secondary-text-color, #5f6368);
    --upr-divider: var(--divider-color, rgba(0, 0, 0, 0.12));
    --upr-surface: var(--ha-card-background, var(--card-background-color, #fff));
    --upr-field-bg: var(--input-fill-color, var(--secondary-background-color, rgba(127, 127, 127, 0.08)));
    --upr-focus: var(--primary-text-color, #212121);
    --upr-radius: var(--ha-card-border-radius, 12px);
  }
  [hidden] { display: none !important; }
  :focus-visible {
    outline: 2px solid var(--upr-focus);
    outline-offset: 2px;
  }
  .visually-hidden {
    position: absolute !important;
    width: 1px; height: 1px; margin: -1px; padding: 0;
    overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0;
  }
  select, input[type="text"], input[type="number"] {
    font: inherit;
    color: var(--upr-text);
    background: var(--upr-field-bg);
    border: 1px solid var(--upr-text-2);
    border-radius: 6px;
    padding: 6px 8px;
    min-height: 36px;
    box-sizing: border-box;
  }
  select option { color: #212121; background: #fff; }
  input[type="checkbox"] { width: 18px; height: 18px; margin: 0; accent-color: var(--upr-text); }
`;

const CARD_STYLE = `
  ${SHARED_STYLE}
  :host { display: block; }
  ha-card, .card {
    display: block;
    color: var(--upr-text);
    background: var(--upr-surface);
    border-radius: var(--upr-radius);
    overflow: hidden;
    container-type: inline-size;
  }
  .header {
    display: flex; flex-wrap: wrap; align-items: center; justify-content: space-between;
    gap: 8px 16px; padding: 16px 16px 8px;
  }
  h2 {
    margin: 0; font-size: var(--ha-card-header-font-size, 1.5rem);
    font-weight: var(--ha-font-weight-normal, 400); line-height: 1.3; color: var(--upr-text);
  }
  .count { color: var(--upr-text-2); font-size: 0.875rem; }
  fieldset.filters {
    display: flex; flex-wrap: wrap; align-items: flex-end; gap: 8px 12px;
    margin: 0; padding: 0 16px 12px; border: 0;
  }
  .filters .field { display: flex; flex-direction: column; gap: 2px; font-size: 0.8125rem; color: var(--upr-text-2); }
  .filters label.check { display: flex; align-items: center; gap: 8px; min-height: 36px; font-size: 0.875rem; color: var(--upr-text); cursor: pointer; }
  .message { padding: 16px; color: var(--upr-text); }
  .message p { margin: 0 0 4px; }
  .message .hint { color: var(--upr-text-2); font-size: 0.875rem; }
  .message.error { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 16px; }
  ul.alerts { list-style: none; margin: 0; padding: 0 0 8px; }
  li.alert { border-top: 1px solid var(--upr-divider); padding: 12px 16px; }
  article { display: grid; grid-template-columns: auto 1fr; gap: 12px 16px; align-items: start; }
  @container (max-width: 420px) {
    article { grid-template-columns: 1fr; }
  }
  .images { display: flex; gap: 8px; }
  figure { margin: 0; display: flex; flex-direction: column; align-items: center; gap: 4px; width: 96px; }
  figure img, figure .placeholder {
    width: 96px; height: 96px; border-radius: 8px; object-fit: cover; display: block;
    background: var(--upr-field-bg);
  }
  figure .placeholder {
    display: flex; flex-direction: column; align-items: center; justify-content: center; gap: 2px;
    color: var(--upr-text-2); font-size: 0.75rem; text-align: center; border: 1px dashed var(--upr-text-2);
    box-sizing: border-box;
  }
  figure .placeholder svg { width: 32px; height: 32px; fill: currentColor; }
  figure[data-state="missing"] img, figure:not([data-state="missing"]) .placeholder { display: none; }
  figcaption { font-size: 0.75rem; color: var(--upr-text-2); text-align: center; }
  .info { min-width: 0; display: flex; flex-direction: column; gap: 4px; }
  .top { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 10px; }
  .badge {
    display: inline-block; padding: 2px 8px; border-radius: 999px; font-size: 0.75rem;
    font-weight: 600; letter-spacing: 0.02em; text-transform: uppercase; line-height: 1.5;
  }
  /* fixed colours with at least 4.5:1 contrast whatever the theme */
  .badge.tier-match { background: var(--upr-match-color, #b3261e); color: #fff; }
  .badge.tier-probable { background: var(--upr-probable-color, #8a4b00); color: #fff; }
  .similarity { font-weight: 600; font-variant-numeric: tabular-nums; }
  h3 { margin: 0; font-size: 1rem; font-weight: 600; line-height: 1.4; overflow-wrap: anywhere; }
  h3 .name { font-weight: 400; color: var(--upr-text-2); }
  .where, .decided, .comment-text { margin: 0; font-size: 0.875rem; color: var(--upr-text-2); overflow-wrap: anywhere; }
  .where a { color: inherit; }
  .state { margin: 0; font-size: 0.875rem; font-weight: 600; display: inline-flex; align-items: center; gap: 6px; }
  .state::before { content: ""; width: 10px; height: 10px; border-radius: 50%; background: currentColor; flex: none; }
  .state-pending .state { color: var(--upr-text); }
  .state-pending .state::before { background: var(--upr-probable-color, #8a4b00); }
  .state-confirmed .state::before { background: var(--upr-confirm-color, #1b6e20); }
  .state-rejected .state::before { background: var(--upr-text-2); }
  .state-closed .state::before { background: var(--upr-text-2); }
  .actions { display: flex; flex-wrap: wrap; align-items: flex-end; gap: 8px; margin-top: 4px; }
  .actions .comment-field { display: flex; flex-direction: column; gap: 2px; font-size: 0.8125rem; color: var(--upr-text-2); flex: 1 1 180px; }
  .actions input { width: 100%; }
  button {
    font: inherit; font-weight: 600; font-size: 0.875rem; min-height: 36px; padding: 6px 16px;
    border-radius: 18px; cursor: pointer; border: 2px solid transparent;
  }
  button[aria-disabled="true"] { cursor: progress; opacity: 0.7; }
  button.confirm { background: var(--upr-confirm-color, #1b6e20); color: #fff; }
  button.reject { background: transparent; color: var(--upr-text); border-color: var(--upr-text-2); }
  button.retry { background: transparent; color: var(--upr-text); border-color: var(--upr-text-2); }
  button:hover:not([aria-disabled="true"]) { filter: brightness(1.1); }
  .busy { font-size: 0.875rem; color: var(--upr-text-2); }
  .error-text {
    margin: 4px 0 0; font-size: 0.875rem; color: var(--upr-text);
    border-left: 4px solid var(--upr-match-color, #b3261e); padding: 4px 8px;
    background: var(--upr-field-bg);
  }
  .error-text:empty { display: none; }
  @media (prefers-reduced-motion: no-preference) {
    li.alert.new { animation: upr-flash 1.2s ease-out; }
  }
  @keyframes upr-flash { from { background: var(--upr-field-bg); } to { background: transparent; } }
`;

// ------------------------------------------------------------------------------- card

class UprAlertsCard extends HTMLElement {
  constructor() {
    super();
    this.attachShadow({ mode: "open" });
    this._config = null;
    this._hass = null;
    this._lang = null;
    this._t = translator("en");
    this._alerts = new Map(); // match_id -> alert
    this._received = new Map(); // match_id -> when its URLs arrived (ms)
    this._items = new Map(); // match_id -> {el, parts}
    this._decidedHere = new Set();
    this._busy = new Set();
    this._errors = new Map();
    this._status = "idle"; // idle | loading | ready | error
    this._error = "";
    this._unsub = null;
    this._subscribing = null;
    this._snapshotSeen = false;
    this._lastResubscribe = 0;
    this._tierFilter = "";
    this._cameraFilter = "";
    this._showDecided = true;
    this._clock = null;
    this._built = false;
  }

  // --- Lovelace API -------------------------------------------------------------------

  static getConfigElement() {
    return document.createElement(EDITOR_TYPE);
  }

  static getStubConfig() {
    return { limit: 20, show_decided: true };
  }

  setConfig(config) {
    const previous = this._config;
    this._config = normaliseConfig(config);
    this._showDecided = this._config.show_decided !== false;
    if (this._config.tiers && !this._config.tiers.includes(this._tierFilter)) this._tierFilter = "";
    if (this._built) {
      this._buildStatic();
      this._renderAll();
    }
    const changed =
      !previous ||
      previous.limit !== this._config.limit ||
      previous.config_entry_id !== this._config.config_entry_id;
    if (changed && this.isConnected && this._hass) this._resubscribe();
  }

  set hass(hass) {
    const first = !this._hass;
    const connectionChanged = this._hass && hass && this._hass.connection !== hass.connection;
    this._hass = hass;
    const lang = languageOf(hass);
    if (lang !== this._lang || first) {
      this._lang = lang;
      this._t = translator(lang);
      if (this._built) {
        this._buildStatic();
        this._renderAll();
      }
    }
    if (!this._built && this.isConnected && this._config) this._build();
    if ((first || connectionChanged) && this.isConnected && this._config) this._resubscribe();
  }

  get hass() {
    return this._hass;
  }

  getCardSize() {
    const visible = this._visibleAlerts().length;
    return 2 + Math.min(Math.max(visible, 1), 4) * 3;
  }

  getGridOptions() {
    return { columns: 12, min_columns: 6, min_rows: 3 };
  }

  connectedCallback() {
    if (!this._config) return;
    if (!this._built) this._build();
    if (this._hass) this._resubscribe();
    if (!this._clock) this._clock = window.setInterval(() => this._tick(), CLOCK_TICK_MS);
  }

  disconnectedCallback() {
    this._unsubscribe();
    if (this._clock) {
      window.clearInterval(this._clock);
      this._clock = null;
    }
  }

  // --- subscription -------------------------------------------------------------------

  _unsubscribe() {
    const unsub = this._unsub;
    this._unsub = null;
    if (unsub) {
      Promise.resolve(unsub())
        .then(undefined, () => undefined); // the connection may be gone already
    }
  }

  async _resubscribe() {
    if (!this._hass || !this._hass.connection || !this._config) return;
    this._unsubscribe();
    const message = { type: `${DOMAIN}/alerts/subscribe` };
    message.limit = this._config.limit || DEFAULT_LIMIT;
    if (this._config.config_entry_id) message.config_entry_id = this._config.config_entry_id;
    const token = {};
    this._subscribing = token;
    this._lastResubscribe = Date.now();
    if (this._status !== "ready") this._setStatus("loading");
    try {
      const unsub = await this._hass.connection.subscribeMessage((event) => {
        if (this._subscribing === token) this._onEvent(event); // not a superseded feed
      }, message);
      if (this._subscribing !== token || !this.isConnected) {
        // a newer subscription replaced this one, or the card went away meanwhile
        Promise.resolve(unsub()).then(undefined, () => undefined);
        return;
      }
      this._unsub = unsub;
    } catch (err) {
      if (this._subscribing !== token) return;
      this._error = (err && (err.message || err.code)) || this._t("unknown_error");
      this._setStatus("error");
    }
  }

  _onEvent(event) {
    if (!event || typeof event !== "object") return;
    const now = Date.now();
    if (event.type === "snapshot") {
      const incoming = new Map();
      for (const alert of event.alerts || []) {
        if (alert && alert.match_id) incoming.set(alert.match_id, alert);
      }
      const announce = this._snapshotSeen
        ? [...incoming.values()].filter((alert) => !this._alerts.has(alert.match_id))
        : [];
      this._alerts = incoming;
      this._received = new Map([...incoming.keys()].map((id) => [id, now]));
      this._snapshotSeen = true;
      this._setStatus("ready", false);
      this._renderAll();
      for (const alert of announce) this._announceNew(alert);
    } else if (event.type === "alert" && event.alert && event.alert.match_id) {
      const alert = event.alert;
      const before = this._alerts.get(alert.match_id);
      this._alerts.set(alert.match_id, alert);
      this._received.set(alert.match_id, now);
      this._trim();
      if (this._status !== "ready") this._setStatus("ready", false);
      this._renderAll(before ? null : alert.match_id);
      if (!before) this._announceNew(alert);
      else if (before.state !== alert.state) this._announceDecided(alert);
    }
  }

  _trim() {
    const limit = (this._config && this._config.limit) || DEFAULT_LIMIT;
    if (this._alerts.size <= limit) return;
    const sorted = this._sorted([...this._alerts.values()]);
    for (const alert of sorted.slice(limit)) {
      this._alerts.delete(alert.match_id);
      this._received.delete(alert.match_id);
    }
  }

  /** A signed image URL failed: ask for fresh ones, unless they are fresh already. */
  _imageFailed(matchId) {
    const received = this._received.get(matchId) || 0;
    const now = Date.now();
    if (now - received < URL_FRESH_MS) return;
    if (now - this._lastResubscribe < RESUBSCRIBE_MIN_INTERVAL_MS) return;
    this._resubscribe();
  }

  // --- filters ------------------------------------------------------------------------

  /** Every camera an incident was seen on: [key, name] pairs (the first camera first). */
  _cameraKeys(alert) {
    const names = alert.cameras && alert.cameras.length ? alert.cameras : [alert.camera_name || alert.camera_id || ""];
    return names.map((name) => [`${alert.entry_id || ""}/${name}`, name]);
  }

  _allowedByConfig(alert) {
    const config = this._config || {};
    if (config.tiers && !config.tiers.includes(alert.tier)) return false;
    if (config.cameras && config.cameras.length) {
      const names = [
        alert.camera_entity_id,
        alert.camera_name,
        alert.camera_id,
        ...(alert.cameras || []),
      ];
      if (!names.some((name) => name && config.cameras.includes(name))) return false;
    }
    return true;
  }

  _visible(alert) {
    if (!this._allowedByConfig(alert)) return false;
    if (this._tierFilter && alert.tier !== this._tierFilter) return false;
    if (this._cameraFilter && !this._cameraKeys(alert).some(([key]) => key === this._cameraFilter)) {
      return false;
    }
    if (!this._showDecided && alert.state !== "pending" && !this._decidedHere.has(alert.match_id)) {
      return false;
    }
    return true;
  }

  _sorted(alerts) {
    return alerts.sort(
      (a, b) => (parseTime(b.detected_at) || 0) - (parseTime(a.detected_at) || 0),
    );
  }

  _visibleAlerts() {
    return this._sorted([...this._alerts.values()].filter((alert) => this._visible(alert)));
  }

  // --- formatting -----------------------------------------------------------------------

  _dateOptions() {
    const options = { dateStyle: "short", timeStyle: "medium" };
    const locale = (this._hass && this._hass.locale) || {};
    if (locale.time_zone === "server" && this._hass.config && this._hass.config.time_zone) {
      options.timeZone = this._hass.config.time_zone;
    }
    if (locale.time_format === "12") options.hour12 = true;
    else if (locale.time_format === "24") options.hour12 = false;
    return options;
  }

  _absolute(iso) {
    const time = parseTime(iso);
    if (time === null) return "";
    try {
      return new Intl.DateTimeFormat(localeTag(this._hass), this._dateOptions()).format(time);
    } catch (_err) {
      return new Date(time).toLocaleString();
    }
  }

  _relative(iso) {
    const time = parseTime(iso);
    if (time === null) return "";
    const seconds = Math.round((time - Date.now()) / 1000);
    const abs = Math.abs(seconds);
    let value = seconds;
    let unit = "second";
    if (abs >= 86400) {
      value = Math.round(seconds / 86400);
      unit = "day";
    } else if (abs >= 3600) {
      value = Math.round(seconds / 3600);
      unit = "hour";
    } else if (abs >= 60) {
      value = Math.round(seconds / 60);
      unit = "minute";
    } else if (abs < 10 || seconds > 0) {
      value = 0; // "now", also for a few seconds of clock skew between server and browser
    }
    try {
      return new Intl.RelativeTimeFormat(localeTag(this._hass), { numeric: "auto" }).format(
        value,
        unit,
      );
    } catch (_err) {
      return this._absolute(iso);
    }
  }

  _percent(similarity) {
    const value = Number(similarity);
    if (!Number.isFinite(value)) return "";
    try {
      return new Intl.NumberFormat(localeTag(this._hass), {
        style: "percent",
        maximumFractionDigits: 0,
      }).format(value);
    } catch (_err) {
      return `${Math.round(value * 100)} %`;
    }
  }

  _number(value) {
    try {
      return new Intl.NumberFormat(localeTag(this._hass)).format(value);
    } catch (_err) {
      return String(value);
    }
  }

  _tierLabel(tier) {
    return this._t(tier === "match" ? "tier_match" : "tier_probable");
  }

  _stateLabel(state) {
    return this._t(`state_${STATES.includes(state) ? state : "pending"}`);
  }

  // --- DOM ------------------------------------------------------------------------------

  _build() {
    const root = this.shadowRoot;
    root.textContent = "";
    root.append(h("style", { text: CARD_STYLE }));
    const card = h(customElements.get("ha-card") ? "ha-card" : "div", { class: "card" });
    this._card = card;
    root.append(card);
    this._built = true;
    this._buildStatic();
    this._renderAll();
  }

  /** Header, filters, live region and the list: rebuilt when the language changes. */
  _buildStatic() {
    const t = this._t;
    const card = this._card;
    card.textContent = "";
    this._items.clear();
    const titleText = (this._config && this._config.title) || t("title");
    this._titleEl = h("h2", { id: "title", text: titleText });
    this._countEl = h("span", { class: "count" });
    const header = h("div", { class: "header" }, [this._titleEl, this._countEl]);

    this._tierSelect = h("select", {
      id: "filter-tier",
      onchange: (ev) => {
        this._tierFilter = ev.target.value;
        this._renderAll();
      },
    });
    this._cameraSelect = h("select", {
      id: "filter-camera",
      onchange: (ev) => {
        this._cameraFilter = ev.target.value;
        this._renderAll();
      },
    });
    this._decidedBox = h("input", {
      type: "checkbox",
      onchange: (ev) => {
        this._showDecided = ev.target.checked;
        this._renderAll();
      },
    });
    const filters = h("fieldset", { class: "filters" }, [
      h("legend", { class: "visually-hidden", text: t("filters") }),
      h("div", { class: "field" }, [
        h("label", { for: "filter-tier", text: t("filter_tier") }),
        this._tierSelect,
      ]),
      h("div", { class: "field" }, [
        h("label", { for: "filter-camera", text: t("filter_camera") }),
        this._cameraSelect,
      ]),
      h("label", { class: "check" }, [this._decidedBox, h("span", { text: t("show_decided") })]),
    ]);
    this._messageEl = h("div", { class: "message" });
    this._live = h("div", {
      class: "visually-hidden",
      role: "status",
      "aria-live": "polite",
      "aria-atomic": "true",
    });
    this._list = h("ul", { class: "alerts", "aria-label": t("list_label") });
    card.append(header, filters, this._messageEl, this._list, this._live);
    this._renderFilters();
    this._renderMessage();
  }

  _setStatus(status, render = true) {
    this._status = status;
    if (render && this._built) this._renderAll();
  }

  _renderFilters() {
    if (!this._tierSelect) return;
    const t = this._t;
    const tiers = (this._config && this._config.tiers) || TIERS;
    this._fillSelect(
      this._tierSelect,
      [["", t("all_tiers")], ...tiers.map((tier) => [tier, this._tierLabel(tier)])],
      this._tierFilter,
    );
    const cameras = new Map();
    for (const alert of this._sorted([...this._alerts.values()])) {
      if (!this._allowedByConfig(alert)) continue;
      for (const [key, name] of this._cameraKeys(alert)) {
        if (!cameras.has(key)) cameras.set(key, name || key);
      }
    }
    if (this._cameraFilter && !cameras.has(this._cameraFilter)) this._cameraFilter = "";
    const options = [...cameras.entries()].sort((a, b) => a[1].localeCompare(b[1]));
    this._fillSelect(this._cameraSelect, [["", t("all_cameras")], ...options], this._cameraFilter);
    this._decidedBox.checked = this._showDecided;
  }

  _fillSelect(select, options, value) {
    const current = [...select.options].map((o) => `${o.value}\u0000${o.textContent}`).join("\n");
    const wanted = options.map(([v, label]) => `${v}\u0000${label}`).join("\n");
    if (current !== wanted) {
      select.textContent = "";
      for (const [v, label] of options) select.append(h("option", { value: v, text: label }));
    }
    select.value = value;
  }

  _renderMessage(visibleCount) {
    const t = this._t;
    const el = this._messageEl;
    if (!el) return;
    el.textContent = "";
    el.className = "message";
    el.hidden = false;
    el.removeAttribute("role");
    if (this._status === "error") {
      el.classList.add("error");
      el.setAttribute("role", "alert");
      el.append(
        h("p", { text: t("unavailable", { message: this._error }) }),
        h("button", { class: "retry", type: "button", text: t("retry"), onclick: () => this._resubscribe() }),
      );
    } else if (this._status !== "ready") {
      el.append(h("p", { class: "hint", text: t("loading") }));
    } else if (this._alerts.size === 0) {
      el.classList.add("empty");
      el.append(h("p", { text: t("empty") }), h("p", { class: "hint", text: t("empty_hint") }));
    } else if (visibleCount === 0) {
      el.classList.add("empty");
      el.append(h("p", { text: t("empty_filtered") }));
    } else {
      el.hidden = true;
    }
  }

  /** Update the list in place: existing items keep their focus and typed comments. */
  _renderAll(newId = null) {
    if (!this._built) return;
    this._renderFilters();
    const visible = this._status === "ready" ? this._visibleAlerts() : [];
    this._renderMessage(visible.length);
    const keep = new Set(visible.map((alert) => alert.match_id));
    for (const [id, item] of this._items) {
      if (!this._alerts.has(id)) {
        item.el.remove();
        this._items.delete(id);
      } else if (!keep.has(id)) {
        item.el.hidden = true;
      }
    }
    let index = 0;
    for (const alert of visible) {
      let item = this._items.get(alert.match_id);
      if (!item) {
        item = this._createItem(alert.match_id);
        this._items.set(alert.match_id, item);
        if (alert.match_id === newId) {
          item.el.classList.add("new");
          window.setTimeout(() => item.el.classList.remove("new"), 1500);
        }
      }
      item.el.hidden = false;
      this._updateItem(item, alert);
      const shown = [...this._list.children].filter((child) => !child.hidden);
      if (shown[index] !== item.el) this._list.insertBefore(item.el, shown[index] || null);
      index += 1;
    }
    const pending = [...this._alerts.values()].filter(
      (alert) => alert.state === "pending" && this._allowedByConfig(alert),
    ).length;
    this._countEl.textContent =
      this._status === "ready" && pending
        ? this._t("pending_count", { count: this._number(pending) })
        : "";
    this._list.hidden = visible.length === 0;
  }

  _createItem(matchId) {
    const t = this._t;
    const safeId = `a-${String(matchId).replace(/[^A-Za-z0-9_-]/g, "_")}`;
    const parts = {};
    const figure = (kind) => {
      const img = h("img", { decoding: "async", width: 96, height: 96 });
      const placeholder = h("div", { class: "placeholder", role: "img" }, [
        iconSvg(FACE_ICON),
        h("span", { "aria-hidden": "true", text: t("no_image") }),
      ]);
      const caption = h("figcaption", {
        text: kind === "face" ? t("seen_by_camera") : t("registry_photo"),
      });
      const fig = h("figure", { class: kind, "data-state": "missing" }, [img, placeholder, caption]);
      img.addEventListener("load", () => {
        if (img.naturalWidth > 0) fig.dataset.state = "loaded";
      });
      img.addEventListener("error", () => {
        fig.dataset.state = "missing";
        img.dataset.failed = "1";
        this._imageFailed(matchId);
      });
      return { fig, img, placeholder };
    };
    parts.face = figure("face");
    parts.photo = figure("photo");
    parts.badge = h("span", { class: "badge" });
    parts.similarity = h("span", { class: "similarity" });
    parts.reference = h("span", { class: "reference" });
    parts.name = h("span", { class: "name" });
    parts.title = h("h3", { id: `${safeId}-title` }, [parts.reference, parts.name]);
    parts.camera = h("span", { class: "camera" });
    parts.time = h("time");
    parts.absolute = h("span", { class: "absolute" });
    parts.frame = h("a", { target: "_blank", rel: "noopener noreferrer" });
    parts.where = h("p", { class: "where" }, [
      parts.camera,
      document.createTextNode(" · "),
      parts.time,
      document.createTextNode(" ("),
      parts.absolute,
      document.createTextNode(")"),
    ]);
    parts.frameLine = h("p", { class: "where frame-line" }, [parts.frame]);
    parts.sightings = h("p", { class: "where sightings" });
    parts.path = h("p", { class: "where path" });
    parts.state = h("p", { class: "state", tabindex: "-1", id: `${safeId}-state` });
    parts.decided = h("p", { class: "decided" });
    parts.commentText = h("p", { class: "comment-text" });
    parts.comment = h("input", {
      type: "text",
      id: `${safeId}-comment`,
      maxlength: "2000",
      autocomplete: "off",
      "aria-describedby": `${safeId}-title`,
    });
    parts.commentLabel = h("div", { class: "comment-field" }, [
      h("label", { for: `${safeId}-comment`, text: t("comment_label") }),
      parts.comment,
    ]);
    parts.confirm = h("button", {
      class: "confirm",
      type: "button",
      text: t("confirm"),
      "aria-describedby": `${safeId}-title`,
      onclick: () => this._verdict(matchId, "confirm"),
    });
    parts.reject = h("button", {
      class: "reject",
      type: "button",
      text: t("reject"),
      "aria-describedby": `${safeId}-title`,
      onclick: () => this._verdict(matchId, "reject"),
    });
    parts.busy = h("span", { class: "busy", text: "" });
    parts.actions = h("div", { class: "actions" }, [
      parts.commentLabel,
      parts.confirm,
      parts.reject,
      parts.busy,
    ]);
    parts.error = h("p", { class: "error-text", role: "alert" });
    parts.comment.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.isComposing) {
        ev.preventDefault();
        this._verdict(matchId, "confirm");
      }
    });
    const info = h("div", { class: "info" }, [
      h("div", { class: "top" }, [parts.badge, parts.similarity]),
      parts.title,
      parts.where,
      parts.sightings,
      parts.path,
      parts.frameLine,
      parts.state,
      parts.decided,
      parts.commentText,
      parts.actions,
      parts.error,
    ]);
    const images = h("div", { class: "images" }, [parts.face.fig, parts.photo.fig]);
    const article = h("article", { "aria-labelledby": `${safeId}-title` }, [images, info]);
    const el = h("li", { class: "alert", "data-match-id": matchId }, [article]);
    return { el, parts };
  }

  _setImage(figure, url, alt) {
    const { fig, img, placeholder } = figure;
    img.alt = alt;
    placeholder.setAttribute("aria-label", this._t("image_missing", { alt }));
    if (!url) {
      img.removeAttribute("src");
      delete img.dataset.base;
      fig.dataset.state = "missing";
      return;
    }
    const base = stripQuery(url);
    // a new push re-signs the same image: only reload when it changed or failed before
    if (img.dataset.base !== base || img.dataset.failed === "1") {
      const changed = img.dataset.base !== base;
      delete img.dataset.failed;
      img.dataset.base = base;
      if (changed || fig.dataset.state !== "loaded") fig.dataset.state = "loading";
      img.src = url;
    }
  }

  _updateItem(item, alert) {
    const t = this._t;
    const { el, parts } = item;
    const state = STATES.includes(alert.state) ? alert.state : "pending";
    el.className = el.className
      .split(" ")
      .filter((c) => c && !c.startsWith("tier-") && !c.startsWith("state-"))
      .concat([`tier-${alert.tier}`, `state-${state}`])
      .join(" ");
    el.dataset.tier = alert.tier;
    el.dataset.state = state;
    const reference = alert.reference || alert.person_id || "";
    const camera = alert.camera_name || alert.camera_id || "";

    this._setImage(parts.face, alert.face_url, t("face_alt", { camera }));
    this._setImage(parts.photo, alert.registry_photo_url, t("photo_alt", { reference }));

    parts.badge.className = `badge tier-${alert.tier === "match" ? "match" : "probable"}`;
    parts.badge.textContent = this._tierLabel(alert.tier);
    const percent = this._percent(alert.similarity);
    parts.similarity.textContent = percent;
    parts.similarity.setAttribute("aria-label", `${t("similarity")} ${percent}`);
    parts.similarity.title = t("similarity");
    parts.reference.textContent = reference;
    parts.name.textContent = alert.display_name ? ` — ${alert.display_name}` : "";
    parts.camera.textContent = camera;
    parts.time.dateTime = alert.detected_at || "";
    parts.time.dataset.iso = alert.detected_at || "";
    parts.time.textContent = this._relative(alert.detected_at);
    parts.absolute.textContent = this._absolute(alert.detected_at);
    if (alert.frame_url) {
      parts.frame.href = alert.frame_url;
      parts.frame.textContent = t("full_frame");
      parts.frame.setAttribute("aria-label", t("full_frame_label", { reference }));
      parts.frameLine.hidden = false;
    } else {
      parts.frameLine.hidden = true;
    }
    parts.state.textContent = this._stateLabel(state);
    // an incident: every sighting of the person, on every camera, is one item
    const count = Number(alert.sighting_count) || 1;
    parts.sightings.hidden = count < 2;
    parts.sightings.dataset.iso = alert.last_seen || "";
    parts.sightings.textContent =
      count < 2 ? "" : t("sightings", { count: this._number(count), when: this._relative(alert.last_seen) });
    const runs = Array.isArray(alert.path) ? alert.path : [];
    parts.path.hidden = runs.length < 2;
    parts.path.textContent =
      runs.length < 2 ? "" : t("path", { path: runs.map((run) => run.camera_name || run.camera_id).join(" → ") });

    if (state === "pending") {
      parts.decided.hidden = true;
      parts.decided.textContent = "";
    } else {
      const who = alert.decided_by_name || t("an_operator");
      const when = alert.decided_at
        ? `${this._relative(alert.decided_at)} (${this._absolute(alert.decided_at)})`
        : "";
      parts.decided.textContent = t(`decided_${state}`, { who, when }).replace(/, $/, "");
      if (state === "closed") parts.decided.textContent = t("decided_closed", { when }).replace(/, $/, "");
      parts.decided.dataset.iso = alert.decided_at || "";
      parts.decided.hidden = false;
    }
    if (alert.comment) {
      parts.commentText.textContent = t("comment_text", { text: alert.comment });
      parts.commentText.hidden = false;
    } else {
      parts.commentText.hidden = true;
      parts.commentText.textContent = "";
    }

    // busy controls stay focusable (aria-disabled, read-only): a disabled one drops the focus
    const busy = this._busy.has(alert.match_id);
    const hadFocus = parts.actions.contains(this.shadowRoot.activeElement);
    parts.actions.hidden = state !== "pending";
    parts.confirm.setAttribute("aria-disabled", busy ? "true" : "false");
    parts.reject.setAttribute("aria-disabled", busy ? "true" : "false");
    parts.comment.readOnly = busy;
    parts.actions.setAttribute("aria-busy", busy ? "true" : "false");
    parts.busy.textContent = busy ? t("sending") : "";
    const error = this._errors.get(alert.match_id);
    parts.error.textContent = error === undefined ? "" : t("verdict_error", { message: error });
    // decided (here or elsewhere) while the operator was on its controls: keep them nearby
    if (state !== "pending" && hadFocus) parts.state.focus();
  }

  _tick() {
    for (const [id, item] of this._items) {
      const alert = this._alerts.get(id);
      if (!alert || item.el.hidden) continue;
      item.parts.time.textContent = this._relative(alert.detected_at);
      if ((Number(alert.sighting_count) || 1) > 1) {
        item.parts.sightings.textContent = this._t("sightings", {
          count: this._number(Number(alert.sighting_count)),
          when: this._relative(alert.last_seen),
        });
      }
      if (alert.state !== "pending") this._updateItem(item, alert);
    }
  }

  _announce(text) {
    if (!this._live) return;
    // clear first so the same sentence twice is read twice
    this._live.textContent = "";
    window.setTimeout(() => {
      this._live.textContent = text;
    }, 50);
  }

  _announceNew(alert) {
    if (!this._visible(alert)) return;
    this._announce(
      this._t("announce_new", {
        tier: this._tierLabel(alert.tier),
        reference: alert.reference || alert.person_id,
        camera: alert.camera_name || alert.camera_id,
      }),
    );
  }

  _announceDecided(alert) {
    if (!this._allowedByConfig(alert)) return;
    this._announce(
      this._t("announce_decided", {
        reference: alert.reference || alert.person_id,
        state: this._stateLabel(alert.state).toLowerCase(),
      }),
    );
  }

  // --- verdicts ---------------------------------------------------------------------------

  async _verdict(matchId, action) {
    const alert = this._alerts.get(matchId);
    const item = this._items.get(matchId);
    if (!alert || !item || !this._hass || this._busy.has(matchId) || alert.state !== "pending") {
      return;
    }
    const hadFocus = item.parts.actions.contains(this.shadowRoot.activeElement);
    const comment = item.parts.comment.value.trim();
    const data = { match_id: matchId };
    if (comment) data.comment = comment;
    this._busy.add(matchId);
    this._errors.delete(matchId);
    this._decidedHere.add(matchId);
    this._updateItem(item, alert);
    try {
      await this._hass.callService(
        DOMAIN,
        action === "confirm" ? "confirm_match" : "reject_match",
        data,
        undefined,
        false,
      );
      item.parts.comment.value = "";
    } catch (err) {
      const message = (err && (err.message || err.code)) || this._t("unknown_error");
      this._errors.set(matchId, message);
      this._decidedHere.delete(matchId);
    } finally {
      this._busy.delete(matchId);
      const current = this._alerts.get(matchId);
      const shown = this._items.get(matchId);
      if (current && shown) {
        this._updateItem(shown, current);
        if (hadFocus && current.state !== "pending") shown.parts.state.focus();
      }
    }
  }
}

// ------------------------------------------------------------------------------ editor

const EDITOR_STYLE = `
  ${SHARED_STYLE}
  :host { display: block; color: var(--upr-text); }
  form { display: flex; flex-direction: column; gap: 16px; }
  label.field { display: flex; flex-direction: column; gap: 4px; }
  label.field > span, legend { font-weight: 500; }
  .hint { color: var(--upr-text-2); font-size: 0.8125rem; margin: 0; }
  fieldset { border: 1px solid var(--upr-divider); border-radius: 8px; padding: 8px 12px 12px; margin: 0; }
  label.check { display: flex; align-items: center; gap: 8px; min-height: 32px; cursor: pointer; }
  input[type="text"], input[type="number"] { width: 100%; }
`;

class UprAlertsCardEditor extends HTMLElement {
  constructor() {
    super();
    this.attachShadow({ mode: "open" });
    this._config = {};
    this._hass = null;
    this._lang = null;
    this._cameraIds = [];
  }

  setConfig(config) {
    this._config = { ...(config || {}) };
    this._render();
  }

  set hass(hass) {
    const lang = languageOf(hass);
    const cameras = this._cameraEntities(hass);
    const changed = lang !== this._lang || cameras.join("\n") !== this._cameraIds.join("\n");
    this._hass = hass;
    this._lang = lang;
    this._cameraIds = cameras;
    if (changed || !this._form) this._render(true);
  }

  get hass() {
    return this._hass;
  }

  _cameraEntities(hass) {
    if (!hass || !hass.states) return [];
    const entities = hass.entities || {};
    const all = Object.keys(hass.states).filter((id) => id.startsWith("camera."));
    const ours = all.filter((id) => entities[id] && entities[id].platform === DOMAIN);
    return (ours.length || Object.keys(entities).length ? ours : all).sort();
  }

  _fire(config) {
    this._config = config;
    this.dispatchEvent(
      new CustomEvent("config-changed", { detail: { config }, bubbles: true, composed: true }),
    );
  }

  _update(key, value) {
    const config = { ...this._config };
    if (value === undefined || value === "" || (Array.isArray(value) && value.length === 0)) {
      delete config[key];
    } else {
      config[key] = value;
    }
    this._fire(config);
  }

  _render(structure = false) {
    const t = translator(this._lang || languageOf(this._hass));
    const config = this._config;
    if (structure || !this._form) {
      const root = this.shadowRoot;
      root.textContent = "";
      root.append(h("style", { text: EDITOR_STYLE }));
      this._title = h("input", {
        type: "text",
        name: "title",
        "aria-describedby": "title-hint",
        placeholder: t("title"),
        onchange: (ev) => this._update("title", ev.target.value.trim() || undefined),
      });
      this._limit = h("input", {
        type: "number",
        name: "limit",
        min: "1",
        max: String(MAX_LIMIT),
        step: "1",
        placeholder: String(DEFAULT_LIMIT),
        onchange: (ev) => {
          const value = Number.parseInt(ev.target.value, 10);
          this._update(
            "limit",
            Number.isInteger(value) ? Math.min(Math.max(value, 1), MAX_LIMIT) : undefined,
          );
        },
      });
      this._decided = h("input", {
        type: "checkbox",
        name: "show_decided",
        onchange: (ev) => this._update("show_decided", ev.target.checked),
      });
      this._tiers = TIERS.map((tier) =>
        h("input", {
          type: "checkbox",
          name: `tier_${tier}`,
          value: tier,
          onchange: () => {
            const chosen = this._tiers.filter((box) => box.checked).map((box) => box.value);
            // both (or none) means every tier: leave the option out
            this._update("tiers", chosen.length === TIERS.length || !chosen.length ? undefined : chosen);
          },
        }),
      );
      const configured = Array.isArray(config.cameras) ? config.cameras : [];
      const cameraIds = [...new Set([...this._cameraIds, ...configured])];
      this._cameras = cameraIds.map((id) =>
        h("input", {
          type: "checkbox",
          name: "camera",
          value: id,
          onchange: () => {
            const chosen = this._cameras.filter((box) => box.checked).map((box) => box.value);
            this._update("cameras", chosen.length ? chosen : undefined);
          },
        }),
      );
      const cameraLabel = (id) => {
        const state = this._hass && this._hass.states && this._hass.states[id];
        const name = state && state.attributes && state.attributes.friendly_name;
        return name ? `${name} (${id})` : id;
      };
      this._form = h("form", { onsubmit: (ev) => ev.preventDefault() }, [
        h("label", { class: "field" }, [h("span", { text: t("editor_title") }), this._title]),
        h("p", { class: "hint", id: "title-hint", text: t("editor_title_hint") }),
        h("label", { class: "field" }, [h("span", { text: t("editor_limit") }), this._limit]),
        h("fieldset", {}, [
          h("legend", { text: t("editor_tiers") }),
          ...TIERS.map((tier, i) =>
            h("label", { class: "check" }, [
              this._tiers[i],
              h("span", { text: t(tier === "match" ? "tier_match" : "tier_probable") }),
            ]),
          ),
        ]),
        h("fieldset", { "aria-describedby": "cameras-hint" }, [
          h("legend", { text: t("editor_cameras") }),
          h("p", { class: "hint", id: "cameras-hint", text: t("editor_cameras_hint") }),
          ...(cameraIds.length
            ? cameraIds.map((id, i) =>
                h("label", { class: "check" }, [this._cameras[i], h("span", { text: cameraLabel(id) })]),
              )
            : [h("p", { class: "hint", text: t("editor_no_cameras") })]),
        ]),
        h("label", { class: "check" }, [this._decided, h("span", { text: t("editor_show_decided") })]),
      ]);
      root.append(this._form);
    }
    // values, without disturbing the field being edited
    const active = this.shadowRoot.activeElement;
    if (active !== this._title) this._title.value = config.title || "";
    if (active !== this._limit) this._limit.value = config.limit != null ? String(config.limit) : "";
    this._decided.checked = config.show_decided !== false;
    const tiers = Array.isArray(config.tiers) && config.tiers.length ? config.tiers : TIERS;
    for (const box of this._tiers) box.checked = tiers.includes(box.value);
    const cameras = Array.isArray(config.cameras) ? config.cameras : [];
    for (const box of this._cameras) box.checked = cameras.includes(box.value);
  }
}

// ---------------------------------------------------------------------------- register

function defineElements() {
  // read window.customElements now: it may have been replaced since this file was loaded
  const registry = window.customElements;
  if (!registry.get(CARD_TYPE)) registry.define(CARD_TYPE, UprAlertsCard);
  if (!registry.get(EDITOR_TYPE)) registry.define(EDITOR_TYPE, UprAlertsCardEditor);
}

// Home Assistant imports its app and the integrations' extra modules (this file) in
// parallel; its app then installs a scoped custom element registry polyfill that replaces
// window.customElements, and a definition made before that is never seen by dashboards
// ("Custom element doesn't exist"). On Home Assistant's page, wait for its shell.
if (document.querySelector("home-assistant") && !window.customElements.get("home-assistant")) {
  window.customElements.whenDefined("home-assistant").then(defineElements);
} else {
  defineElements();
}

window.customCards = window.customCards || [];
if (!window.customCards.some((card) => card.type === CARD_TYPE)) {
  const t = translator(String(pageLanguage()).toLowerCase().startsWith("fr") ? "fr" : "en");
  window.customCards.push({
    type: CARD_TYPE,
    name: t("card_name"),
    description: t("card_description"),
    preview: true,
    documentationURL: "https://github.com/upr-faces/upr_faces/blob/main/docs/dashboard.md",
  });
}

console.info(`%c UPR-ALERTS-CARD %c ${CARD_VERSION} `, "color:#fff;background:#b3261e", "");
