// The emulator's checkout page: the card fields format what is typed, as Stripe's do
// ("1230" reads "12 / 30", a card number in groups of four). Without JavaScript the server
// accepts the same digits unformatted.
(function () {
  "use strict";
  var expiry = document.getElementById("expiry");
  var card = document.getElementById("card");

  function replaceValue(input, text) {
    if (text !== input.value) input.value = text;
  }

  if (expiry) {
    expiry.addEventListener("input", function (event) {
      var digits = expiry.value.replace(/\D/g, "").slice(0, 4);
      if (digits.length === 1 && Number(digits) > 1) digits = "0" + digits;  // "4" is April
      var deleting = (event.inputType || "").indexOf("delete") === 0;
      if (digits.length > 2) replaceValue(expiry, digits.slice(0, 2) + " / " + digits.slice(2));
      else if (digits.length === 2 && !deleting) replaceValue(expiry, digits + " / ");
      else replaceValue(expiry, digits);
    });
  }
  if (card) {
    card.addEventListener("input", function () {
      replaceValue(card, card.value.replace(/\D/g, "").slice(0, 16).replace(/(\d{4})(?=\d)/g, "$1 "));
    });
  }
})();
