// Progressive enhancement only: shows the Copy buttons beside the tenant URL and a new
// token, which copy the field's text. Without JavaScript the fields are still
// selectable and readonly. Served as a file: the Content-Security-Policy allows no
// inline script.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var field = document.getElementById(button.getAttribute("data-copy"));
    if (!field || !navigator.clipboard) {
      return;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(field.value).then(function () {
        button.textContent = "Copied";
      }, function () {
        field.select();
      });
    });
  });
});
