// Offline mode only: while the success page waits for its webhook, ask the Stripe emulator
// whether this session's deliveries are failing, and if so say where to and why.
(function () {
  "use strict";
  var box = document.querySelector("[data-deliveries-url]");
  var page = document.querySelector("[data-status-url]");
  if (!box || !page || !window.fetch) return;
  var waiting = ["pending", "awaiting_payment", "processing"];

  function describe(delivery) {
    var next = delivery.next_attempt_in === null
      ? "It will not try again."
      : "Next attempt in " + Math.round(delivery.next_attempt_in) + " s.";
    return "The emulator sent " + delivery.event + " to " + delivery.url + " " + delivery.attempts +
      (delivery.attempts === 1 ? " time" : " times") + "; the last attempt got: " + delivery.answer + ". " + next;
  }

  function check() {
    if (waiting.indexOf(page.dataset.status) < 0) {
      box.hidden = true;
      return;
    }
    fetch(box.dataset.deliveriesUrl, { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .catch(function () { return null; })
      .then(function (body) {
        if (body) {
          if (body.failing) {
            box.querySelector(".delivery-problem-detail").textContent = describe(body.deliveries[body.deliveries.length - 1]);
          }
          box.hidden = !body.failing;
        }
        window.setTimeout(check, 2000);
      });
  }

  window.setTimeout(check, 1000);
})();
