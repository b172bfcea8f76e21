// Home page: quantity steppers, the live total, and a Buy button that can't be pressed twice.
// Everything works without this script too: the form posts plain quantities, and the
// browser itself refuses a quantity outside min/max.
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
  var perOrder = Number(form.dataset.maxPerOrder);
  // This script says what is wrong, next to the field; the browser's own bubbles are for
  // when it isn't running.
  form.noValidate = true;
  var money;
  try {
    money = new Intl.NumberFormat(form.dataset.locale || "en", { style: "currency", currency: form.dataset.currency.toUpperCase() });
  } catch (error) {
    money = { format: function (value) { return value + " " + form.dataset.currency.toUpperCase(); } };
  }

  function quantity(input) {
    var value = Math.floor(Number(input.value));
    if (!isFinite(value) || value < 0) return 0;
    return Math.min(value, Number(input.max));
  }

  // What is wrong with what the shopper typed, in words; "" when nothing is.
  function problem(input) {
    var raw = input.value.trim();
    var max = Number(input.max);
    if (raw === "" && !input.validity.badInput) return "";
    if (!/^\d+$/.test(raw)) return "Enter a whole number from 0 to " + max + ".";
    if (Number(raw) <= max) return "";
    var limit = max < perOrder ? "Only " + max + " left." : "Up to " + max + " per order.";
    return limit + " Choose " + max + " or fewer.";
  }

  function showProblem(input) {
    var message = problem(input);
    var box = document.getElementById(input.id.replace(/^qty-/, "error-"));
    box.textContent = message;
    box.hidden = !message;
    if (message) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
    return message;
  }

  function syncButtons(input) {
    form.querySelectorAll("button.step[data-target='" + input.id + "']").forEach(function (button) {
      var value = quantity(input);
      var atLimit = Number(button.dataset.step) < 0 ? value <= 0 : value >= Number(input.max) && !problem(input);
      // aria-disabled rather than disabled: the button keeps its place in the Tab order.
      button.setAttribute("aria-disabled", String(input.disabled || atLimit));
    });
  }

  function updateTotal() {
    var total = 0;
    var items = 0;
    inputs.forEach(function (input) {
      var counted = problem(input) ? 0 : quantity(input);  // a refused quantity counts for nothing
      items += counted;
      total += counted * Number(input.dataset.unitAmount);
      syncButtons(input);
    });
    totalOutput.textContent = money.format(total / factor);
    itemCount.textContent = items === 0 ? "" : "(" + items + (items === 1 ? " item)" : " items)");
    form.classList.toggle("is-empty", items === 0);
    if (items > 0 && !inputs.some(problem)) cartError.hidden = true;
    return items;
  }

  function refuse(message, field) {
    cartError.textContent = message;
    cartError.hidden = false;
    if (field) field.focus();
  }

  form.querySelectorAll("button.step").forEach(function (button) {
    button.addEventListener("click", function () {
      var input = document.getElementById(button.dataset.target);
      if (input.disabled) return;
      input.value = Math.min(Number(input.max), Math.max(0, quantity(input) + Number(button.dataset.step)));
      showProblem(input);
      updateTotal();
    });
  });
  inputs.forEach(function (input) {
    input.addEventListener("input", function () { showProblem(input); updateTotal(); });
    input.addEventListener("change", function () { showProblem(input); updateTotal(); });
  });

  form.addEventListener("submit", function (event) {
    if (form.dataset.submitting) { event.preventDefault(); return; }
    // Never correct a quantity behind the shopper's back: ask them to fix it.
    var wrong = inputs.filter(showProblem);
    if (wrong.length) {
      event.preventDefault();
      refuse("Please fix the quantity marked above.", wrong[0]);
      return;
    }
    if (updateTotal() === 0) {
      event.preventDefault();
      refuse("Choose at least one item first.");
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
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) window.location.reload();
    else updateTotal();
  });

  updateTotal();
})();
