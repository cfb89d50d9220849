/* Referdesk — a region of a page that refreshes itself while the work it shows goes on
   (a running job's progress): every few seconds the page is fetched again and the region
   replaced by its new version, until the new version no longer asks for a refresh. Only
   on pages that load this file; without JavaScript they refresh as a whole (a <noscript>
   meta refresh), so nothing here is needed to use them. */
'use strict';

(function () {
  function schedule(region, delay) {
    var secs = parseInt(region.getAttribute('data-refresh-secs'), 10);
    if (!(secs > 0)) { return; }
    setTimeout(function () { refresh(region.id, secs); }, (delay || secs) * 1000);
  }

  function refresh(id, secs) {
    fetch(window.location.href, { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'text/html' } })
      .then(function (response) {
        if (!response.ok) { throw new Error('status ' + response.status); }
        return response.text();
      })
      .then(function (html) {
        var current = document.getElementById(id);
        var next = new DOMParser().parseFromString(html, 'text/html').getElementById(id);
        // Signed out meanwhile, or the page is gone: leave the page as it is.
        if (!current || !next) { return; }
        current.replaceWith(document.importNode(next, true));
        var placed = document.getElementById(id);
        if (placed) { schedule(placed); }
      })
      .catch(function () {
        // The server is away for a moment (a restart): try again a little later.
        var current = document.getElementById(id);
        if (current) { schedule(current, secs * 3); }
      });
  }

  document.addEventListener('DOMContentLoaded', function () {
    document.querySelectorAll('[data-refresh-secs][id]').forEach(function (region) { schedule(region); });
  });
})();
