// Success page: poll the order's status (URL given by the server) until it is settled.
(function () {
  "use strict";
  var root = document.querySelector("[data-status-url]");
  if (!root) return;
  var url = root.dataset.statusUrl;
  var labels = {
    pending: "Awaiting payment", awaiting_payment: "Awaiting payment", processing: "Payment processing",
    paid: "Paid", failed: "Payment failed", expired: "Expired",
    partially_refunded: "Partially refunded", refunded: "Refunded"
  };
  var paidStates = ["paid", "partially_refunded", "refunded"];
  var finalStates = paidStates.concat(["failed", "expired"]);
  var giveUpAfterMs = 120000;
  var started = Date.now();
  var delay = 1000;

  function show(name) {
    root.querySelectorAll(".state").forEach(function (el) {
      el.hidden = !el.classList.contains("state-" + name);
    });
  }

  function render(status) {
    root.dataset.status = status;
    var badge = root.querySelector(".status-text .badge");
    badge.className = "badge badge-" + status;
    badge.textContent = labels[status] || status;
    if (paidStates.indexOf(status) >= 0) {
      show("paid");
      document.title = "Payment received · Fieldwork Supply";
    } else if (status === "failed" || status === "expired") {
      show("failed");
    } else if (status === "processing") {
      show("processing");
    }
  }

  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .catch(function () { return null; })
      .then(function (body) {
        if (body && body.status) render(body.status);
        if (finalStates.indexOf(root.dataset.status) >= 0) return;
        if (Date.now() - started > giveUpAfterMs && root.dataset.status !== "processing") {
          show("timeout");
          return;
        }
        delay = Math.min(delay * 1.5, 8000);
        window.setTimeout(poll, delay);
      });
  }

  if (finalStates.indexOf(root.dataset.status) < 0) window.setTimeout(poll, delay);
})();
