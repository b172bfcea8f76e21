// Home page: quantity steppers, the live total, and a Buy button that can't be pressed twice.
// Everything works without this script too: the form posts plain quantities.
(function () {
  "use strict";
  var form = document.querySelector(".checkout-form");
  if (!form) return;
  var inputs = Array.prototype.slice.call(form.querySelectorAll("input[type=number]"));
  var totalOutput = document.getElementById("order-total");
  var itemCount = document.getElementById("item-count");
  var cartError = document.getElementById("cart-error");
  var buy = form.querySelector("button.buy");
  var factor = Number(form.dataset.minorFactor) || 100;
  var lang = document.documentElement.lang || "en";
  var money;
  try {
    money = new Intl.NumberFormat(lang, { style: "currency", currency: form.dataset.currency.toUpperCase() });
  } catch (error) {
    money = { format: function (value) { return value.toFixed(factor === 1 ? 0 : 2) + " " + form.dataset.currency.toUpperCase(); } };
  }

  function clamp(input) {
    var value = Math.floor(Number(input.value));
    var max = Number(input.max);
    if (!isFinite(value) || value < 0) value = 0;
    if (value > max) value = max;
    return value;
  }

  function syncButtons(input) {
    form.querySelectorAll("button.step[data-target='" + input.id + "']").forEach(function (button) {
      var value = clamp(input);
      var atLimit = Number(button.dataset.step) < 0 ? value <= 0 : value >= Number(input.max);
      // aria-disabled rather than disabled: the button keeps its place in the Tab order.
      button.setAttribute("aria-disabled", String(input.disabled || atLimit));
    });
  }

  function updateTotal() {
    var total = 0;
    var items = 0;
    inputs.forEach(function (input) {
      var quantity = clamp(input);
      items += quantity;
      total += quantity * Number(input.dataset.unitAmount);
      syncButtons(input);
    });
    totalOutput.textContent = money.format(total / factor);
    itemCount.textContent = items === 0 ? "" : "(" + items + (items === 1 ? " item)" : " items)");
    form.classList.toggle("is-empty", items === 0);
    if (items > 0) cartError.hidden = true;
    return items;
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
    inputs.forEach(function (input) { input.value = clamp(input); });
    if (updateTotal() === 0) {
      event.preventDefault();
      cartError.hidden = false;
      return;
    }
    form.dataset.submitting = "1";
    buy.textContent = buy.dataset.busyText;
    buy.classList.add("is-busy");
    // The button has no name, so disabling it now changes nothing in what gets posted;
    // a second click (double-click) then can't even fire.
    buy.disabled = true;
  });
  // Coming back with the browser's Back button: start over with a fresh page and token.
  window.addEventListener("pageshow", function (event) { if (event.persisted) window.location.reload(); });

  updateTotal();
})();
