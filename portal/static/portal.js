// The pages' few behaviours, here rather than in the markup: the Content-Security-Policy runs no inline script
// and applies no inline style.
(function () {
  "use strict";

  // An activity type's colour is data, so it comes as data-colour and is applied through the DOM, which the
  // policy allows (a style attribute it would drop).
  function paint(root) {
    var elements = Array.prototype.slice.call(root.querySelectorAll("[data-colour]"));
    if (root.matches && root.matches("[data-colour]")) {
      elements.push(root);
    }
    elements.forEach(function (element) {
      var colour = element.getAttribute("data-colour");
      if (element.classList.contains("swatch")) {
        element.style.backgroundColor = colour;
      } else {
        element.style.borderLeftColor = colour;
      }
    });
  }

  // htmx.onLoad runs for the page and again for every piece htmx swaps in.
  htmx.onLoad(function (root) {
    paint(root.querySelectorAll ? root : document);
  });

  // A plain form (no htmx) that asks before it acts; htmx asks itself through hx-confirm.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.matches && form.matches("form[data-confirm]:not([hx-post])")) {
      if (!window.confirm(form.getAttribute("data-confirm"))) {
        event.preventDefault();
      }
    }
  }, true);

  // Settings: a form's answer replaces the whole settings body, and the focus would fall to the page. Keyboard
  // users continue from the message that says what happened (htmx itself keeps the focus on an element
  // with an id, such as the switch).
  document.addEventListener("htmx:afterSettle", function (event) {
    var target = event.detail && event.detail.target;
    if (!target || target.id !== "integration" || (document.activeElement && document.activeElement !== document.body)) {
      return;
    }
    var message = target.querySelector(".message");
    if (message) {
      message.setAttribute("tabindex", "-1");
      message.focus();
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button || !navigator.clipboard) {
      return;
    }
    var source = document.getElementById(button.getAttribute("data-copy"));
    navigator.clipboard.writeText(source ? source.textContent : "").then(function () {
      button.textContent = "Copied";
    });
  });
  /* Diagnostics: the state list follows the filter the results were made for (a count clicked above it), so
     searching by e-mail afterwards keeps that filter. */
  htmx.onLoad(function (root) {
    var results = document.getElementById("health-results");
    var select = document.getElementById("health-state");
    if (results && select && root && root.contains && root.contains(results)) {
      select.value = results.getAttribute("data-state") || "";
    }
  });
  // The chart scrolls sideways on a phone: start at its right end, the latest hours.
  htmx.onLoad(function (root) {
    Array.prototype.forEach.call((root.querySelectorAll ? root : document).querySelectorAll(".timeline-scroll"),
      function (box) { box.scrollLeft = box.scrollWidth; });
  });
})();
