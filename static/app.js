/* Referdesk — progressive enhancement only. The site works without this file. */
'use strict';

document.documentElement.classList.add('js');

(function () {
  var GUARD_RESET_MS = 10000; // re-enable buttons if the page never navigates (e.g. file download)

  // ---- 1. Copy buttons --------------------------------------------------
  function fallbackCopy(text) {
    return new Promise(function (resolve, reject) {
      var ta = document.createElement('textarea');
      ta.value = text;
      ta.setAttribute('readonly', '');
      ta.className = 'copy-buffer';
      document.body.appendChild(ta);
      ta.select();
      ta.setSelectionRange(0, text.length);
      var ok = false;
      try { ok = document.execCommand('copy'); } catch (err) { /* unsupported */ }
      document.body.removeChild(ta);
      return ok ? resolve() : reject(new Error('copy failed'));
    });
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { return fallbackCopy(text); });
    }
    return fallbackCopy(text);
  }

  function flashLabel(btn, label, ok) {
    if (!btn.dataset.label) { btn.dataset.label = btn.textContent; }
    clearTimeout(btn._copyTimer);
    btn.textContent = label;
    btn.classList.toggle('copied', ok);
    btn._copyTimer = setTimeout(function () { btn.textContent = btn.dataset.label; btn.classList.remove('copied'); }, 1500);
  }

  // ---- 5. Key/value rows --------------------------------------------------
  function addKvRow(btn) {
    var container = btn.closest('.kv-rows');
    var rows = container ? container.querySelectorAll('.kv-row') : [];
    var last = rows[rows.length - 1];
    if (!last) { return; }
    var clone = last.cloneNode(true);
    clone.querySelectorAll('[id]').forEach(function (el) { el.removeAttribute('id'); });
    clone.querySelectorAll('.error').forEach(function (el) { el.remove(); });
    clone.querySelectorAll('.has-error').forEach(function (el) { el.classList.remove('has-error'); });
    clone.querySelectorAll('[aria-invalid]').forEach(function (el) {
      el.removeAttribute('aria-invalid');
      el.removeAttribute('aria-describedby');
    });
    clone.querySelectorAll('input, textarea, select').forEach(function (el) {
      if (el.name) { el.name = el.name.replace(/\[(\d+)\]/, '[' + rows.length + ']'); }
      if (el.type === 'checkbox' || el.type === 'radio') { el.checked = false; }
      else if (el.tagName === 'SELECT') { el.selectedIndex = 0; }
      else { el.value = ''; }
    });
    last.parentNode.insertBefore(clone, last.nextSibling);
    if (clone.querySelector('input, textarea, select')) { clone.querySelector('input, textarea, select').focus(); }
  }

  // ---- 2. Confirmation + 3. double-submit guard ----------------------------
  function setGuard(form, on) {
    if (on) { form.dataset.submitting = '1'; } else { delete form.dataset.submitting; }
    Array.prototype.forEach.call(form.elements, function (el) {
      if (el.type !== 'submit' && el.type !== 'image') { return; }
      if (on && !el.disabled) { el.disabled = true; el.dataset.guarded = '1'; }
      if (!on && el.dataset.guarded) { el.disabled = false; delete el.dataset.guarded; }
    });
  }

  function onSubmit(e) {
    var form = e.target;
    if (!(form instanceof HTMLFormElement) || e.defaultPrevented) { return; }
    var message = form.getAttribute('data-confirm');
    if (message && !window.confirm(message)) { e.preventDefault(); return; }
    if (form.dataset.submitting) { e.preventDefault(); return; }
    form.dataset.submitting = '1';
    // Disable after a tick so the clicked button's name/value is still submitted.
    setTimeout(function () {
      setGuard(form, true);
      setTimeout(function () { setGuard(form, false); }, GUARD_RESET_MS);
    }, 0);
  }

  // ---- 4. Auto-submit selects ----------------------------------------------
  function onChange(e) {
    var el = e.target;
    // "Select all on this page": ticks or clears every row box of its form.
    if (el.matches && el.matches('input[data-select-all]')) {
      var boxes = document.querySelectorAll('input[type=checkbox][form="' + el.getAttribute('data-select-all') + '"]');
      Array.prototype.forEach.call(boxes, function (box) { box.checked = el.checked; });
      return;
    }
    if (!el.matches || !el.matches('select[data-autosubmit]') || !el.form) { return; }
    if (typeof el.form.requestSubmit === 'function') { el.form.requestSubmit(); return; }
    var btn = el.form.querySelector('button:not([type]), [type=submit]');
    if (btn) { btn.click(); } else { el.form.submit(); }
  }

  function onClick(e) {
    var copyBtn = e.target.closest('.copy[data-copy]');
    if (copyBtn) {
      e.preventDefault();
      copyText(copyBtn.getAttribute('data-copy')).then(
        function () { flashLabel(copyBtn, 'Copied', true); },
        function () { flashLabel(copyBtn, 'Copy failed', false); }
      );
      return;
    }
    var kvBtn = e.target.closest('.kv-add');
    if (kvBtn) { e.preventDefault(); addKvRow(kvBtn); }
  }

  // ---- 6. A refused form: the cursor goes to the first field in error -------
  function focusFirstInvalid() {
    var invalid = document.querySelector('[aria-invalid="true"]');
    if (invalid && typeof invalid.focus === 'function') { invalid.focus(); }
  }

  // ---- 7. Filter panels ------------------------------------------------------
  // A filter form sits in a <details class="filter-panel" open>: on a wide screen it stays
  // open (its "Filters" button is hidden); on a phone it closes, unless filters are set,
  // so that the results start on the first screen. Without script it stays open.
  function fitFilterPanels(first) {
    var narrow = window.matchMedia('(max-width: 720px)').matches;
    document.querySelectorAll('details.filter-panel').forEach(function (panel) {
      if (!narrow) { panel.open = true; }
      else if (first && !panel.hasAttribute('data-filtered')) { panel.open = false; }
    });
  }

  // ---- 8. Back never resubmits ----------------------------------------------
  // A page drawn as the answer to a POST (a refused form, a confirmation step) would be a
  // POST in the history: Back to it asks to "Confirm Form Resubmission". Its entry becomes
  // the page the form was on (the referrer), a plain GET: Back shows that page again.
  function forgetPost() {
    if (!document.body.hasAttribute('data-posted') || !window.history.replaceState) { return; }
    var back = null;
    try {
      var from = new URL(document.referrer);
      if (from.origin === window.location.origin) { back = from.pathname + from.search; }
    } catch (err) { /* no referrer */ }
    window.history.replaceState(null, '', back || window.location.href);
  }

  document.addEventListener('DOMContentLoaded', function () {
    forgetPost();
    fitFilterPanels(true);
    window.matchMedia('(max-width: 720px)').addEventListener('change', function () { fitFilterPanels(false); });
    focusFirstInvalid();
    document.addEventListener('click', onClick);
    document.addEventListener('submit', onSubmit);
    document.addEventListener('change', onChange);
    // Restore guarded buttons when the page comes back from the back/forward cache.
    window.addEventListener('pageshow', function (e) {
      if (!e.persisted) { return; }
      document.querySelectorAll('form[data-submitting]').forEach(function (f) { setGuard(f, false); });
    });
  });
})();
