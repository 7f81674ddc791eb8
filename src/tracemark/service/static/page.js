// tracemark verification page: a client of the JSON API (/v1), no framework, no inline code.
// The API key lives in `apiKey` only: never in localStorage, sessionStorage or a cookie.
"use strict";
(function () {
  let apiKey = null;
  let chosen = null; // the File to verify
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  async function api(method, path, body) {
    const res = await fetch("/v1" + path, {
      method, body, headers: { Authorization: "Bearer " + apiKey },
      credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer",
    });
    let data = null;
    try { data = await res.json(); } catch (_) { /* not JSON */ }
    if (!res.ok) {
      const e = data && data.error ? data.error : { type: "HTTP" + res.status, message: res.statusText };
      throw new Error(`${res.status} ${e.type}: ${e.message}`);
    }
    return data;
  }

  function showError(msg) { $("error").textContent = msg || ""; }

  // --- key and collections -------------------------------------------------------------
  async function loadCollections() {
    const { collections } = await api("GET", "/collections");
    const select = $("collection");
    select.replaceChildren(...collections.map((n) => el("option", { value: n }, n)));
    if (!collections.length) select.append(el("option", { value: "" }, "(no collection for this key)"));
    select.disabled = !collections.length;
    $("verify").disabled = !collections.length;
    $("refresh").disabled = false;
    const rows = await Promise.all(collections.map(async (n) => {
      try {
        const s = await api("GET", "/collections/" + encodeURIComponent(n));
        return el("tr", {}, el("th", { scope: "row" }, n), el("td", {}, s.images), el("td", {}, s.manifests));
      } catch (err) {
        return el("tr", {}, el("th", { scope: "row" }, n), el("td", { colspan: "2" }, err.message));
      }
    }));
    $("collections").tBodies[0].replaceChildren(...rows);
    return collections.length;
  }

  $("key-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = $("api-key");
    apiKey = input.value.trim() || null;
    input.value = ""; // the key stays in the variable only
    showError("");
    if (!apiKey) { $("key-status").textContent = "No key entered."; return; }
    try {
      const n = await loadCollections();
      $("key-status").textContent = `Key accepted: ${n} collection(s).`;
      $("collection").focus();
    } catch (err) {
      apiKey = null;
      $("key-status").textContent = "Key refused.";
      showError(err.message);
    }
  });
  $("refresh").addEventListener("click", () => loadCollections().catch((e) => showError(e.message)));

  // --- choosing a file -----------------------------------------------------------------
  function choose(file) {
    chosen = file || null;
    $("drop").textContent = chosen ? `Chosen: ${chosen.name} (${chosen.size} bytes)`
      : "Drop an image here, or press Enter to choose one";
  }
  $("file").addEventListener("change", (ev) => choose(ev.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); $("file").click(); }
  });
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault(); drop.classList.remove("over");
    if (ev.dataTransfer.files.length) choose(ev.dataTransfer.files[0]);
  });

  // --- verifying -----------------------------------------------------------------------
  function assertionsOf(manifest, prefix) {
    return (manifest.assertions || []).filter((a) => a.label === prefix || a.label.startsWith(prefix + "."));
  }

  // An RFC 3339 time as UTC ("2026-11-30 10:24:44 UTC"), the text itself when it does not parse.
  function signingTime(t) {
    const d = new Date(t);
    if (Number.isNaN(d.getTime())) return String(t);
    return d.toISOString().replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC");
  }

  function manifestDetails(m) {
    const dl = el("dl");
    const add = (k, v) => { if (v !== null && v !== undefined && v !== "") dl.append(el("dt", {}, k), el("dd", {}, v)); };
    const sig = m.signature_info || {};
    add("Title", m.title);
    add("Signer", [sig.common_name, sig.issuer].filter(Boolean).join(" / ") || null);
    // c2pa reports signature_info.time only when the signature carries an RFC 3161 timestamp
    add("Signed at", sig.time ? signingTime(sig.time) : "not stated (the signature has no timestamp)");
    add("Algorithm", sig.alg);
    add("Label", m.label);
    const gen = (m.claim_generator_info || []).map((g) => `${g.name} ${g.version || ""}`.trim()).join(", ");
    add("Made with", gen);
    const actions = [];
    for (const a of assertionsOf(m, "c2pa.actions")) {
      for (const act of (a.data && a.data.actions) || []) {
        const extra = [act.digitalSourceType, act.parameters && act.parameters.description].filter(Boolean).join("; ");
        actions.push(el("li", {}, act.action + (extra ? ` (${extra})` : "")));
      }
    }
    if (actions.length) add("Actions", el("ul", { class: "actions" }, ...actions));
    const ingredients = (m.ingredients || []).map((i) =>
      el("li", {}, `${i.title || "(untitled)"}: ${i.relationship || "?"}, ${i.format || "?"}`));
    if (ingredients.length) add("Ingredients", el("ul", { class: "ingredients" }, ...ingredients));
    return dl;
  }

  function codesList(codes) {
    const d = el("details", {}, el("summary", {}, "Validation codes"));
    for (const kind of ["failure", "informational", "success"]) {
      const list = (codes && codes[kind]) || [];
      if (list.length) d.append(el("p", {}, `${kind}: ${list.join(", ")}`));
    }
    return d;
  }

  function watermarkSection(v) {
    const w = v.evidence && v.evidence.watermark;
    if (!w) {
      return el("p", { id: "watermark" }, v.route === "embedded"
        ? "Watermark: not needed (the embedded manifest was read)."
        : "Watermark: no result reported.");
    }
    const p = w.p_value === null || w.p_value === undefined ? "n/a" : Number(w.p_value).toExponential(2);
    return el("p", { id: "watermark" },
      `Watermark: ${w.present ? "present" : "absent"} (p-value ${p}, score ${w.score}` +
      (w.tag_match === undefined ? "" : `, this collection's: ${w.tag_match ? "yes" : "no"}`) +
      (w.manifest_id ? `, names manifest ${w.manifest_id}` : "") + ")");
  }

  function polygon(ctx, pts, scale, colour) {
    ctx.strokeStyle = colour; ctx.lineWidth = 3;
    ctx.beginPath();
    pts.forEach(([x, y], i) => { const px = (x + 0.5) * scale, py = (y + 0.5) * scale; if (i) ctx.lineTo(px, py); else ctx.moveTo(px, py); });
    ctx.closePath(); ctx.stroke();
  }

  function fitScale(w, h) { return Math.min(1, 320 / Math.max(w, h)); }

  // The registered image's preview (GET .../references/{id}/preview, a JPEG whose long side is
  // at most 256 px), as a decoded <img>; null when the API has none (404 NoPreview: registered
  // before previews were kept) or it cannot be shown: the page then draws the empty frame.
  async function referencePreview(collection, refId) {
    const res = await fetch(`/v1/collections/${encodeURIComponent(collection)}/references/${refId}/preview`, {
      headers: { Authorization: "Bearer " + apiKey }, credentials: "omit", referrerPolicy: "no-referrer",
    });
    if (!res.ok) return null;
    const url = URL.createObjectURL(await res.blob());
    const img = new Image();
    try { img.src = url; await img.decode(); return img; } catch (_) { return null; } finally { URL.revokeObjectURL(url); }
  }

  async function matchFigures(match, img, index, collection) {
    const q = el("canvas", { "aria-label": `Uploaded image, match ${index + 1} outlined`, role: "img", class: "query-figure" });
    const s = fitScale(img.naturalWidth, img.naturalHeight);
    q.width = Math.round(img.naturalWidth * s); q.height = Math.round(img.naturalHeight * s);
    const qc = q.getContext("2d");
    qc.drawImage(img, 0, 0, q.width, q.height);
    if (match.query_region) polygon(qc, match.query_region, s, "#ff2d55");
    const [rw, rh] = match.reference_size || [0, 0];
    const preview = await referencePreview(collection, match.ref_id).catch(() => null);
    const r = el("canvas", { role: "img", class: "reference-figure", "data-preview": preview ? "pixels" : "frame",
      "aria-label": `Registered image ${match.ref_id}${preview ? "" : ": its frame"}, matched region outlined` });
    const rc = r.getContext("2d");
    let caption;
    if (preview && rw) {
      // the region is in the reference's pixels; the preview is the reference scaled by k
      const k = preview.naturalWidth / rw;
      const rs = fitScale(preview.naturalWidth, preview.naturalHeight);
      r.width = Math.round(preview.naturalWidth * rs); r.height = Math.round(preview.naturalHeight * rs);
      rc.drawImage(preview, 0, 0, r.width, r.height);
      if (match.region) polygon(rc, match.region, k * rs, "#ff2d55");
      caption = `Registered image ${match.ref_id} (${rw}x${rh} px, preview): the region copied`;
    } else {
      const rs = rw && rh ? fitScale(rw, rh) : 1;
      r.width = Math.max(1, Math.round(rw * rs)); r.height = Math.max(1, Math.round(rh * rs));
      rc.fillStyle = "#dfe6ee"; rc.fillRect(0, 0, r.width, r.height);
      if (match.region) polygon(rc, match.region, rs, "#ff2d55");
      caption = `Registered image ${match.ref_id} (${rw}x${rh} px frame; no preview kept for it): the region copied`;
    }
    return el("div", { class: "figures" },
      el("figure", {}, q, el("figcaption", {}, "Uploaded image: where the copy sits")),
      el("figure", {}, r, el("figcaption", {}, caption)));
  }

  // An embedded result carries the active manifest; a recovered one the whole manifest store
  // ({active_manifest, manifests: {label: manifest}}): the active one, and the others (history).
  function activeManifest(m) {
    if (!m || !m.manifests) return { active: m, others: [] };
    const others = Object.entries(m.manifests).filter(([k]) => k !== m.active_manifest).map(([, x]) => x);
    return { active: m.manifests[m.active_manifest] || null, others };
  }

  async function render(v, search, file, collection) {
    const out = [];
    out.push(el("p", {}, "State: ", el("span", { id: "state", class: "state state-" + v.state }, v.state),
      v.route ? el("span", { id: "route" }, ` route: ${v.route}`) : null,
      v.signature ? ` (the recovered manifest's own signature: ${v.signature})` : ""));
    const { active: m, others } = activeManifest(v.manifest);
    if (v.route && v.route !== "embedded") {
      out.push(el("p", { id: "recovered-note" },
        `The file carries no manifest (stripped). Recovered through the ${v.route}: manifest ${v.manifest_id}, "`,
        el("strong", { id: "recovered-title" }, (m && m.title) || "(untitled)"), `".`));
    }
    if (v.state === "not_found") out.push(el("p", {}, "No manifest in the file, and neither the watermark nor the fingerprint names one in this collection."));
    if (m) out.push(el("h3", {}, v.route === "embedded" ? "Embedded manifest" : "Recovered manifest"), manifestDetails(m));
    if (others.length) {
      out.push(el("h3", {}, "Earlier manifests in its history"),
        el("ul", {}, ...others.map((x) => el("li", {}, `${x.title || "(untitled)"} (${x.label || "?"})`))));
    }
    if (v.recovered) out.push(el("p", {}, `Beside the invalid manifest, the ${v.recovered.route || "watermark/fingerprint"} names manifest ${v.recovered.manifest_id}.`));
    out.push(codesList(v.codes));
    out.push(watermarkSection(v));
    out.push(el("h3", {}, "Copy matches"));
    const matches = (search && search.matches) || [];
    if (!matches.length) out.push(el("p", { id: "matches" }, "No registered image matches."));
    else {
      const img = new Image();
      const url = URL.createObjectURL(file);
      try {
        img.src = url; await img.decode();
        const list = el("ol", { id: "matches" });
        const figures = await Promise.all(matches.map((mt, i) => matchFigures(mt, img, i, collection)));
        matches.forEach((mt, i) => list.append(el("li", {},
          `Image ${mt.ref_id} (${mt.source || "no source"}): ${mt.decision ? "copy" : "not a copy"}, score ${Number(mt.score).toFixed(3)}, ` +
          `${mt.inliers} inliers${mt.flipped ? ", flipped" : ""}`, figures[i])));
        out.push(list);
      } catch (_) {
        out.push(el("p", {}, "This browser cannot display the image; matches: " + matches.map((mt) => mt.ref_id).join(", ")));
      } finally { URL.revokeObjectURL(url); }
    }
    $("result").replaceChildren(...out);
  }

  $("verify-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showError("");
    const name = $("collection").value;
    if (!apiKey) { showError("Enter an API key first."); $("api-key").focus(); return; }
    if (!chosen) { showError("Choose an image first."); $("file").focus(); return; }
    const result = $("result");
    result.setAttribute("aria-busy", "true");
    result.replaceChildren(el("p", {}, `Verifying ${chosen.name}...`));
    const form = () => { const f = new FormData(); f.append("image", chosen, chosen.name); return f; };
    try {
      const path = "/collections/" + encodeURIComponent(name);
      const [v, search] = await Promise.all([
        api("POST", path + "/verify", form()),
        api("POST", path + "/search", form()).catch((e) => ({ matches: [], error: e.message })),
      ]);
      await render(v, search, chosen, name);
      if (search.error) showError("Search: " + search.error);
    } catch (err) {
      result.replaceChildren(el("p", {}, "Verification failed."));
      showError(err.message);
    } finally {
      result.setAttribute("aria-busy", "false");
    }
  });
})();
