// Home page: quantity steppers, the live total, and a Buy button that can't be pressed twice.
(function () {
  "use strict";
  var form = document.querySelector(".checkout-form");
  if (!form) return;
  var inputs = form.querySelectorAll("input[type=number]");
  var totalOutput = document.getElementById("order-total");
  var buy = form.querySelector("button.buy");
  var factor = Number(form.dataset.minorFactor) || 100;
  var money = new Intl.NumberFormat(document.documentElement.lang || "en", {
    style: "currency",
    currency: form.dataset.currency.toUpperCase()
  });

  function clamp(input) {
    var value = Math.floor(Number(input.value));
    var max = Number(input.max);
    if (!isFinite(value) || value < 0) value = 0;
    if (value > max) value = max;
    return value;
  }

  function updateTotal() {
    var total = 0;
    var items = 0;
    inputs.forEach(function (input) {
      var quantity = clamp(input);
      items += quantity;
      total += quantity * Number(input.dataset.unitAmount);
    });
    totalOutput.textContent = money.format(total / factor);
    buy.disabled = items === 0;
  }

  form.querySelectorAll("button.step").forEach(function (button) {
    button.addEventListener("click", function () {
      var input = document.getElementById(button.dataset.target);
      if (input.disabled) return;
      input.value = Math.min(Number(input.max), Math.max(0, clamp(input) + Number(button.dataset.step)));
      updateTotal();
    });
  });
  inputs.forEach(function (input) {
    input.addEventListener("input", updateTotal);
    input.addEventListener("change", function () { input.value = clamp(input); updateTotal(); });
  });

  form.addEventListener("submit", function (event) {
    if (form.dataset.submitting) { event.preventDefault(); return; }
    form.dataset.submitting = "1";
    buy.textContent = buy.dataset.busyText;
    buy.setAttribute("aria-disabled", "true");
    // Disable after the submit has been queued, so the button's own submission still goes.
    window.setTimeout(function () { buy.disabled = true; }, 0);
  });
  // Coming back with the browser's Back button: start over with a fresh page and token.
  window.addEventListener("pageshow", function (event) { if (event.persisted) window.location.reload(); });

  updateTotal();
})();
