// radiusd admin: small progressive enhancements; every page works without this file.
(function () {
  "use strict";
  function randomPassword(length) {
    var alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    var bytes = new Uint32Array(length), out = "";
    window.crypto.getRandomValues(bytes);
    for (var i = 0; i < length; i++) out += alphabet[bytes[i] % alphabet.length];
    return out;
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-action]");
    if (!button) return;
    var input = document.getElementById("password");
    if (button.dataset.action === "show-password") {
      input.type = input.type === "password" ? "text" : "password";
      button.title = input.type === "password" ? "Show" : "Hide";
    } else if (button.dataset.action === "generate-password") {
      input.value = randomPassword(16);
      input.type = "text";
    }
  });
  // Ident by: show only the field the chosen way of identification uses; hidden fields are not sent.
  function identChanged() {
    var chosen = document.querySelector("input[name=ident_by]:checked");
    if (!chosen) return;
    document.querySelectorAll("[data-ident]").forEach(function (label) {
      var on = label.dataset.ident === chosen.value;
      label.hidden = !on;
      label.querySelectorAll("input").forEach(function (i) { i.disabled = !on || i.closest("fieldset[disabled]") !== null; });
    });
  }
  document.addEventListener("change", function (event) {
    if (event.target.name === "ident_by") identChanged();
  });
  document.addEventListener("DOMContentLoaded", identChanged);
  // A confirmation before destructive buttons that carry data-confirm.
  document.addEventListener("submit", function (event) {
    var text = event.target.dataset.confirm;
    if (text && !window.confirm(text)) event.preventDefault();
  });
})();
