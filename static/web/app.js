// The avatar page. Everything goes through our own REST API (/api/v1/...) with the session
// cookie and the CSRF token, so the page shows exactly what the API says: its validation
// messages, its statuses, its refunds. No build step: plain modern JavaScript.
(() => {
  "use strict";

  const config = JSON.parse(document.getElementById("page-config").textContent);
  const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
  const STATUS_TEXT = {
    queued: "Waiting for a free artist…",
    running: "Drawing your avatar…",
    succeeded: "Your avatar is ready.",
    failed: "This avatar could not be made.",
    canceled: "Canceled.",
  };
  // Rough duration of a generation, for the progress bar until the API has an estimate.
  const EXPECTED_SECONDS = 30;

  const $ = (selector, root = document) => root.querySelector(selector);
  const els = {
    balance: $("#balance"),
    dropzone: $("#dropzone"),
    input: $("#selfie-input"),
    preview: $("#selfie-preview"),
    selfieStatus: $("#selfie-status"),
    faceWarning: $("#face-warning"),
    faceWarningText: $("#face-warning-text"),
    faceConfirm: $("#face-confirm"),
    faceAnother: $("#face-another"),
    styles: $("#styles"),
    generate: $("#generate"),
    generateStatus: $("#generate-status"),
    typicalWait: $("#typical-wait"),
    current: $("#current"),
    gallery: $("#gallery"),
    galleryEmpty: $("#gallery-empty"),
    galleryMore: $("#gallery-more"),
    cardTemplate: $("#avatar-card"),
  };

  const state = {
    balance: null,
    sessionId: null,
    // The session's face check warned and the person has not yet chosen to go on anyway.
    faceUnconfirmed: false,
    faceConfirmed: false,
    uploadSeq: 0,
    uploading: false,
    submitting: false,
    styles: new Map(),
    nextPage: null,
    // Cards that still change: avatar id -> {avatar, card}.
    live: new Map(),
    // Server time minus our time, from the Date header, so elapsed times are right.
    clockOffset: 0,
  };

  // --- the API ---------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, error) {
      super(error.message);
      this.status = status;
      this.code = error.code;
      this.fields = error.fields || {};
    }
  }

  function csrfToken() {
    // The cookie is the freshest (a sign-in in another tab rotates it); the page's copy serves
    // when the cookie is not readable from scripts (CSRF_COOKIE_HTTPONLY).
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (match) return decodeURIComponent(match[1]);
    const meta = document.querySelector("meta[name=csrf-token]");
    return meta ? meta.content : "";
  }

  async function api(method, url, { json, form, headers = {} } = {}) {
    const options = { method, credentials: "same-origin", headers: { Accept: "application/json", ...headers } };
    if (method !== "GET") options.headers["X-CSRFToken"] = csrfToken();
    if (json !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(json);
    } else if (form !== undefined) {
      options.body = form;
    }
    let response;
    try {
      response = await fetch(url, options);
    } catch (error) {
      throw new ApiError(0, {
        code: "network",
        message: "Could not reach the server. Check your connection and try again.",
      });
    }
    const date = Date.parse(response.headers.get("Date") || "");
    if (!Number.isNaN(date)) state.clockOffset = date - Date.now();
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
    const error = data && data.error;
    if (response.status === 401 || (error && error.code === "not_authenticated")) {
      // Signed out meanwhile (or the session expired): back to the sign-in page.
      window.location.assign(`${config.urls.login}?next=${encodeURIComponent(window.location.pathname)}`);
      throw new ApiError(response.status, error || { code: "not_authenticated", message: "Please sign in." });
    }
    if (!response.ok) {
      throw new ApiError(
        response.status,
        error || {
          code: `http_${response.status}`,
          message: `Something went wrong (HTTP ${response.status}). Please try again.`,
        },
      );
    }
    return data;
  }

  const avatarUrl = (id) => `${config.urls.avatars}${id}/`;

  function newIdempotencyKey() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    const bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // --- small helpers -----------------------------------------------------------------------

  function setText(element, text) {
    // Unchanged text is left alone, so live regions do not announce it again.
    if (element.textContent !== text) element.textContent = text;
  }

  function say(element, text, kind = "") {
    element.textContent = text;
    element.classList.toggle("error", kind === "error");
    element.classList.toggle("success", kind === "success");
  }

  function plural(count, word) {
    return `${count} ${word}${count === 1 ? "" : "s"}`;
  }

  function formatElapsed(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  }

  // --- balance -----------------------------------------------------------------------------

  async function refreshBalance() {
    try {
      const data = await api("GET", config.urls.credits);
      state.balance = data.balance;
      els.balance.textContent = String(data.balance);
    } catch (error) {
      els.balance.textContent = "?";
    }
    updateGenerateButton();
  }

  // --- selfie upload -----------------------------------------------------------------------

  function showPreview(file) {
    if (els.preview.dataset.objectUrl) URL.revokeObjectURL(els.preview.dataset.objectUrl);
    const url = URL.createObjectURL(file);
    els.preview.dataset.objectUrl = url;
    els.preview.onerror = () => {
      els.preview.hidden = true;
    };
    els.preview.src = url;
    els.preview.hidden = false;
    els.dropzone.classList.add("has-preview");
  }

  async function uploadSelfie(file) {
    const seq = ++state.uploadSeq;
    state.sessionId = null;
    showFaceCheck(null);
    state.uploading = true;
    updateGenerateButton();
    showPreview(file);
    els.input.removeAttribute("aria-invalid");
    say(els.selfieStatus, "Checking your photo…");
    const form = new FormData();
    form.append("selfie", file, file.name || "selfie");
    try {
      const session = await api("POST", config.urls.sessions, { form });
      if (seq !== state.uploadSeq) return;
      state.sessionId = session.id;
      if (session.face_check) {
        say(els.selfieStatus, "");
        showFaceCheck(session.face_check);
      } else {
        say(
          els.selfieStatus,
          `Photo accepted (${session.selfie_width}×${session.selfie_height}). Pick a style and generate.`,
          "success",
        );
      }
    } catch (error) {
      if (seq !== state.uploadSeq) return;
      els.input.setAttribute("aria-invalid", "true");
      // The API's own message, word for word (DESIGN: the same validation messages).
      say(els.selfieStatus, error.message, "error");
    } finally {
      if (seq === state.uploadSeq) {
        state.uploading = false;
        updateGenerateButton();
      }
    }
  }

  // The face check is a warning, not a wall: the person may use the photo anyway.
  function showFaceCheck(check) {
    state.faceUnconfirmed = Boolean(check);
    state.faceConfirmed = false;
    els.faceWarning.hidden = !check;
    els.faceWarning.dataset.status = check ? check.status : "";
    if (check) setText(els.faceWarningText, check.message);
  }

  function setUpFaceCheck() {
    els.faceConfirm.addEventListener("click", () => {
      state.faceUnconfirmed = false;
      state.faceConfirmed = true;
      els.faceWarning.hidden = true;
      say(els.selfieStatus, "We will use this photo. Pick a style and generate.", "success");
      updateGenerateButton();
    });
    els.faceAnother.addEventListener("click", () => els.input.click());
  }

  function setUpDropzone() {
    els.input.addEventListener("change", () => {
      const file = els.input.files && els.input.files[0];
      if (file) uploadSelfie(file);
    });
    const over = (event) => {
      event.preventDefault();
      if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
      els.dropzone.classList.add("dragging");
    };
    els.dropzone.addEventListener("dragenter", over);
    els.dropzone.addEventListener("dragover", over);
    els.dropzone.addEventListener("dragleave", () => els.dropzone.classList.remove("dragging"));
    els.dropzone.addEventListener("drop", (event) => {
      event.preventDefault();
      els.dropzone.classList.remove("dragging");
      const files = event.dataTransfer && event.dataTransfer.files;
      if (!files || files.length === 0) return;
      if (files.length > 1) {
        say(els.selfieStatus, "Drop one photo at a time.", "error");
        return;
      }
      uploadSelfie(files[0]);
    });
    // A file dropped next to the zone must not make the browser leave the page to open it.
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => event.preventDefault());
  }

  // --- styles ------------------------------------------------------------------------------

  async function loadStyles() {
    let styles;
    try {
      styles = await api("GET", config.urls.styles);
    } catch (error) {
      $("#styles-loading").textContent = `Could not load the styles: ${error.message}`;
      return;
    }
    $("#styles-loading").remove();
    styles.forEach((style, index) => {
      state.styles.set(style.id, style);
      const id = `style-${style.id}`;
      const option = document.createElement("div");
      option.className = "style-option";
      const radio = document.createElement("input");
      radio.type = "radio";
      radio.name = "style";
      radio.value = style.id;
      radio.id = id;
      radio.checked = style.id === "comic" || (index === 0 && !styles.some((s) => s.id === "comic"));
      radio.setAttribute("aria-describedby", `${id}-description`);
      radio.addEventListener("change", updateGenerateButton);
      const label = document.createElement("label");
      label.htmlFor = id;
      const name = document.createElement("span");
      name.className = "style-name";
      name.textContent = style.name;
      const description = document.createElement("span");
      description.className = "style-description";
      description.id = `${id}-description`;
      description.textContent = style.description;
      label.append(name, description);
      option.append(radio, label);
      els.styles.append(option);
    });
    updateGenerateButton();
  }

  function selectedStyle() {
    const checked = els.styles.querySelector("input[name=style]:checked");
    return checked ? checked.value : null;
  }

  // --- generate ----------------------------------------------------------------------------

  function updateGenerateButton() {
    const poor = state.balance !== null && state.balance < config.creditCost;
    els.generate.disabled =
      !state.sessionId ||
      state.faceUnconfirmed ||
      !selectedStyle() ||
      state.submitting ||
      state.uploading ||
      poor;
    const message = `You need ${plural(config.creditCost, "credit")} for an avatar and have ${state.balance}.`;
    if (poor && !els.generateStatus.textContent) {
      say(els.generateStatus, message, "error");
      els.generateStatus.dataset.poor = "true";
    } else if (!poor && els.generateStatus.dataset.poor) {
      delete els.generateStatus.dataset.poor;
      say(els.generateStatus, "");
    }
  }

  async function generate() {
    if (els.generate.disabled) return;
    state.submitting = true;
    updateGenerateButton();
    say(els.generateStatus, "Starting…");
    try {
      const avatar = await api("POST", config.urls.avatars, {
        json: { session: state.sessionId, style: selectedStyle(), confirm: state.faceConfirmed },
        // One key per click: a repeated request (a double click, a retry) is charged once.
        headers: { "Idempotency-Key": newIdempotencyKey() },
      });
      say(els.generateStatus, "");
      showAsCurrent(avatar);
    } catch (error) {
      if (error.code === "session_expired") {
        state.sessionId = null;
        say(els.selfieStatus, error.message, "error");
      }
      say(els.generateStatus, error.message, "error");
    } finally {
      state.submitting = false;
      refreshBalance();
    }
  }

  // --- avatar cards ------------------------------------------------------------------------

  function createCard(avatar) {
    const card = els.cardTemplate.content.firstElementChild.cloneNode(true);
    card.dataset.avatarId = avatar.id;
    const style = state.styles.get(avatar.style);
    $(".avatar-style", card).textContent = style ? style.name : avatar.style;
    $(".avatar-progress", card).setAttribute("aria-label", "Progress of this avatar");
    $(".avatar-cancel", card).addEventListener("click", () => cancel(avatar.id, card));
    renderCard(card, avatar);
    return card;
  }

  function elapsedSeconds(avatar) {
    const start = Date.parse(avatar.created_at);
    const end = avatar.completed_at ? Date.parse(avatar.completed_at) : Date.now() + state.clockOffset;
    return (end - start) / 1000;
  }

  function estimatedProgress(avatar) {
    if (TERMINAL.has(avatar.status)) return 100;
    const elapsed = elapsedSeconds(avatar);
    if (avatar.eta_seconds !== null && avatar.eta_seconds !== undefined) {
      // The API's estimate (our median time minus the time spent): elapsed of the whole wait.
      const total = elapsed + avatar.eta_seconds;
      return Math.round(Math.min(95, Math.max(5, (100 * elapsed) / Math.max(total, 1))));
    }
    if (avatar.status === "queued") return 5;
    // Without one: quickly at first, then ever more slowly, never reaching the end by itself.
    const fraction = 1 - Math.exp(-elapsed / EXPECTED_SECONDS);
    return Math.round(10 + 85 * fraction);
  }

  // Before paying: how long an avatar takes these days, from GET /api/v1/status/.
  async function showTypicalWait() {
    try {
      const status = await api("GET", config.urls.status);
      if (status.typical_seconds === null) return;
      setText(els.typicalWait, `Usually ready in about ${Math.max(1, Math.round(status.typical_seconds))} s.`);
      els.typicalWait.hidden = false;
    } catch (error) {
      // Only a hint: without it the page works the same.
    }
  }

  function noticeText(notice) {
    const until = Date.parse(notice.until);
    if (Number.isNaN(until)) return notice.message;
    const time = new Date(until).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return `The image service is having trouble; we keep trying until ${time}.`;
  }

  function renderCard(card, avatar) {
    card.dataset.status = avatar.status;
    const done = TERMINAL.has(avatar.status);
    let statusText = STATUS_TEXT[avatar.status] || avatar.status;
    if (!done && avatar.queue_position) statusText += ` You are number ${avatar.queue_position} in line.`;
    setText($(".avatar-status", card), statusText);

    // The image service is having an incident: say so, and until when we keep trying.
    const notice = $(".avatar-notice", card);
    notice.hidden = !avatar.notice;
    if (avatar.notice) setText(notice, noticeText(avatar.notice));

    const progress = $(".avatar-progress", card);
    progress.hidden = done;
    progress.value = estimatedProgress(avatar);
    setText(progress, `${progress.value}%`);

    const elapsed = formatElapsed(elapsedSeconds(avatar));
    setText($(".avatar-elapsed", card), done ? `took ${elapsed}` : `${elapsed} elapsed`);

    const error = $(".avatar-error", card);
    if (avatar.error) {
      error.hidden = false;
      setText(error, avatar.error.message);
    } else if (!error.dataset.local) {
      error.hidden = true;
    }

    const refund = $(".avatar-refund", card);
    const refundStatus = avatar.refund && avatar.refund.status;
    refund.hidden = !refundStatus || refundStatus === "rejected";
    if (refundStatus === "refunded") {
      setText(refund, `Your ${avatar.refund.amount === 1 ? "credit was" : "credits were"} refunded.`);
    } else if (refundStatus === "pending") {
      setText(refund, "Your refund is waiting for review by our staff.");
    }

    $(".avatar-cancel", card).hidden = done;
    $(".avatar-cancel", card).setAttribute("aria-label", "Cancel this avatar");

    const image = $(".avatar-image", card);
    const download = $(".avatar-download", card);
    if (avatar.status === "succeeded" && avatar.image_url) {
      if (image.getAttribute("src") !== avatar.image_url) {
        const style = state.styles.get(avatar.style);
        image.alt = `Your avatar in the ${style ? style.name : avatar.style} style`;
        image.src = avatar.image_url;
      }
      image.hidden = false;
      $(".avatar-placeholder", card).hidden = true;
      download.href = avatar.image_url;
      download.download = `avatar-${avatar.id}.png`;
      download.textContent = "Download";
      download.setAttribute("aria-label", `Download avatar (PNG, ${avatar.width}×${avatar.height})`);
      download.hidden = false;
    } else {
      image.hidden = true;
      download.hidden = true;
    }
  }

  function showAsCurrent(avatar) {
    const previous = els.current.firstElementChild;
    if (previous) {
      // The last one joins the earlier avatars, still live if it is still running.
      addToGallery(previous, { first: true });
      previous.querySelector(".avatar-status").removeAttribute("aria-live");
    }
    const card = createCard(avatar);
    // Only the current avatar announces its changes to screen readers.
    $(".avatar-status", card).setAttribute("role", "status");
    $(".avatar-status", card).setAttribute("aria-live", "polite");
    els.current.append(card);
    track(avatar, card);
  }

  function addToGallery(card, { first = false } = {}) {
    const item = document.createElement("li");
    item.append(card);
    if (first) els.gallery.prepend(item);
    else els.gallery.append(item);
    els.galleryEmpty.hidden = true;
  }

  // --- live progress -----------------------------------------------------------------------

  function track(avatar, card) {
    if (TERMINAL.has(avatar.status)) return;
    state.live.set(avatar.id, { avatar, card, polledAt: Date.now(), polling: false });
  }

  async function poll(entry) {
    entry.polling = true;
    try {
      const avatar = await api("GET", avatarUrl(entry.avatar.id));
      entry.avatar = avatar;
      renderCard(entry.card, avatar);
      if (TERMINAL.has(avatar.status)) {
        state.live.delete(avatar.id);
        // A failure or a cancellation may have given the credit back.
        refreshBalance();
      }
    } catch (error) {
      // A passing network error: try again at the next tick.
    } finally {
      entry.polledAt = Date.now();
      entry.polling = false;
    }
  }

  function tick() {
    const now = Date.now();
    state.live.forEach((entry) => {
      renderCard(entry.card, entry.avatar);
      // Every second for the first minute, then every three seconds.
      const interval = elapsedSeconds(entry.avatar) < 60 ? 1000 : 3000;
      if (!entry.polling && now - entry.polledAt >= interval) poll(entry);
    });
  }

  async function cancel(id, card) {
    const button = $(".avatar-cancel", card);
    button.disabled = true;
    try {
      const avatar = await api("POST", `${avatarUrl(id)}cancel/`);
      renderCard(card, avatar);
      state.live.delete(id);
      refreshBalance();
    } catch (error) {
      if (error.code === "avatar_finished") {
        const entry = state.live.get(id);
        if (entry) poll(entry);
      } else {
        const message = $(".avatar-error", card);
        message.dataset.local = "true";
        message.hidden = false;
        message.textContent = error.message;
      }
    } finally {
      button.disabled = false;
    }
  }

  // --- gallery -----------------------------------------------------------------------------

  async function loadGallery(url, { initial = false } = {}) {
    els.galleryMore.disabled = true;
    try {
      const page = await api("GET", url);
      page.results.forEach((avatar, index) => {
        const card = createCard(avatar);
        // After a reload, an avatar still being made is shown as the current one.
        if (initial && index === 0 && !TERMINAL.has(avatar.status)) {
          $(".avatar-status", card).setAttribute("role", "status");
          $(".avatar-status", card).setAttribute("aria-live", "polite");
          els.current.append(card);
        } else {
          addToGallery(card);
        }
        track(avatar, card);
      });
      state.nextPage = page.next;
      els.galleryMore.hidden = !page.next;
      els.galleryEmpty.hidden = els.gallery.children.length > 0;
    } catch (error) {
      els.galleryEmpty.hidden = false;
      els.galleryEmpty.textContent = `Could not load your avatars: ${error.message}`;
    } finally {
      els.galleryMore.disabled = false;
    }
  }

  // --- start -------------------------------------------------------------------------------

  async function start() {
    setUpDropzone();
    setUpFaceCheck();
    showTypicalWait();
    els.generate.addEventListener("click", generate);
    els.galleryMore.addEventListener("click", () => {
      if (state.nextPage) loadGallery(state.nextPage);
    });
    refreshBalance();
    // Styles first: the cards show style names.
    await loadStyles();
    await loadGallery(config.urls.avatars, { initial: true });
    window.setInterval(tick, 250);
    document.body.dataset.ready = "true";
  }

  start();
})();
