// Success page: poll the order's status (URL given by the server) until it is settled.
// Without JavaScript the page shows the status it was rendered with and a refresh link.
(function () {
  "use strict";
  var root = document.querySelector("[data-status-url]");
  if (!root || !window.fetch) return;
  var url = root.dataset.statusUrl;
  var labels = JSON.parse(root.dataset.labels);  // the server's words for each status
  var paidStates = ["paid", "partially_refunded", "refunded"];
  var finalStates = paidStates.concat(["failed", "expired", "cancelled"]);
  var giveUpAfterMs = 120000;   // then say so, and keep checking, slowly
  var fastForMs = 20000;        // poll every second at first: webhooks usually land by then
  var started = Date.now();
  var timedOut = false;

  function show(name) {
    root.querySelectorAll(".state").forEach(function (el) {
      el.hidden = !el.classList.contains("state-" + name);
    });
  }

  function showPaidAt(iso) {
    var box = root.querySelector(".summary-paid");
    if (!box || !iso) return;
    window.showLocalTime(box.querySelector("time"), iso);
    box.hidden = false;
  }

  function settled() {
    // Nothing left to wait for: no more "Refresh status".
    root.querySelectorAll(".refresh").forEach(function (link) { link.remove(); });
  }

  function render(body) {
    var status = body.status;
    var changed = status !== root.dataset.status;
    root.dataset.status = status;
    var badge = root.querySelector(".status-text .badge");
    badge.className = "badge badge-" + status;
    badge.textContent = labels[status] || status;
    if (paidStates.indexOf(status) >= 0) {
      show("paid");
      showPaidAt(body.paid_at);
      document.title = "Payment received · Fieldwork Supply";
    } else if (status === "failed" || status === "expired" || status === "cancelled") {
      show("failed");
      document.title = "Payment not completed · Fieldwork Supply";
    } else if (status === "processing") {
      show("processing");
      document.title = "Payment processing · Fieldwork Supply";
    } else if (changed && !timedOut) {
      show("waiting");
    }
  }

  function nextDelay() {
    var elapsed = Date.now() - started;
    if (elapsed < fastForMs) return 1000;
    if (elapsed < giveUpAfterMs) return 3000;
    return 15000;
  }

  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-cache" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .catch(function () { return null; })
      .then(function (body) {
        if (body && body.status) render(body);
        if (finalStates.indexOf(root.dataset.status) >= 0) return settled();
        if (!timedOut && Date.now() - started > giveUpAfterMs && root.dataset.status !== "processing") {
          timedOut = true;
          show("timeout");
        }
        window.setTimeout(poll, nextDelay());
      });
  }

  if (finalStates.indexOf(root.dataset.status) < 0) window.setTimeout(poll, 1000);
})();
