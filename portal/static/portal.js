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
    placeWeek(root.querySelectorAll ? root : document);
  });

  // Week view: the server works out where each item goes (percent of the day's height and of the column's
  // width); the policy drops style attributes, so they come as data-* and become the custom properties the
  // stylesheet reads. The grid opens at the working day (or the week's first earlier item).
  function within(root, selector) {
    var found = Array.prototype.slice.call(root.querySelectorAll(selector));
    if (root.matches && root.matches(selector)) {
      found.push(root);
    }
    return found;
  }

  function placeWeek(root) {
    within(root, "[data-top]").forEach(function (element) {
      ["top", "height", "left", "width"].forEach(function (name) {
        var value = element.getAttribute("data-" + name);
        if (value !== null) {
          element.style.setProperty("--" + name, value + "%");
        }
      });
      element.placedAt = Date.now();
    });
    within(root, "#week-grid[data-scroll-to]").forEach(function (grid) {
      var column = grid.querySelector(".timed");
      if (column && grid.scrollHeight > grid.clientHeight) {
        // a little above the hour, so its label shows below the rows that stay on top
        grid.scrollTop = column.offsetHeight * parseFloat(grid.getAttribute("data-scroll-to")) / 100 - 10;
      }
    });
  }

  // The "now" line moves on while the page stays open (a day is 1440 minutes: 100% of the column), counted
  // from when each line arrived (a week swapped in later brings its own).
  window.setInterval(function () {
    document.querySelectorAll(".now-line[data-top]").forEach(function (line) {
      if (!line.placedAt) {
        line.placedAt = Date.now();
      }
      var top = parseFloat(line.getAttribute("data-top")) + (Date.now() - line.placedAt) / 60000 / 14.4;
      line.hidden = top > 100;
      line.style.setProperty("--top", Math.min(top, 100) + "%");
    });
  }, 60000);

  // The editor drawer closes with its × or Escape, and gives focus back to what opened it.
  var opener = null;
  document.addEventListener("htmx:beforeRequest", function (event) {
    var target = event.detail && event.detail.target;
    if (target && target.id === "editor" && !target.contains(event.detail.elt)) {
      opener = event.detail.elt;
    }
  });

  function closeEditor() {
    var editor = document.getElementById("editor");
    if (!editor || !editor.firstChild) {
      return false;
    }
    editor.replaceChildren();
    if (opener && document.body.contains(opener)) {
      opener.focus();
    }
    return true;
  }

  document.addEventListener("click", function (event) {
    if (event.target.closest("[data-close-editor]")) {
      closeEditor();
    }
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && closeEditor()) {
      event.preventDefault();
    }
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

  // Editor -----------------------------------------------------------------------------------------------
  // The activity editor: recurrence controls follow the chosen repeat, the participant list filters as one
  // types, focus goes where the work continues, and Escape closes the editor beside the calendar.

  function showRepeatControls(form) {
    var freq = form.querySelector("select[name=freq]");
    var ends = form.querySelector("select[name=ends]");
    if (!freq) {
      return;
    }
    form.querySelectorAll("[data-repeat-show]").forEach(function (part) {
      part.hidden = part.getAttribute("data-repeat-show").split(" ").indexOf(freq.value) === -1;
    });
    form.querySelectorAll("[data-ends-show]").forEach(function (part) {
      part.hidden = !ends || part.getAttribute("data-ends-show") !== ends.value;
    });
    var period = form.querySelector("#repeat-period");
    var chosen = freq.options[freq.selectedIndex];
    if (period && chosen && chosen.getAttribute("data-period")) {
      period.textContent = chosen.getAttribute("data-period");
    }
  }

  function filterPeople(box) {
    var words = box.value.trim().toLowerCase();
    var list = document.getElementById(box.getAttribute("aria-controls"));
    if (!list) {
      return;
    }
    var shown = 0;
    list.querySelectorAll("li").forEach(function (row) {
      var ticked = row.querySelector("input:checked");
      var match = !words || ticked || row.textContent.toLowerCase().indexOf(words) !== -1;
      row.hidden = !match;
      shown += match ? 1 : 0;
    });
    var none = document.getElementById("participant-none");
    if (none) {
      none.hidden = shown > 0;
    }
  }

  function setUpEditor(root) {
    var form = root.querySelector ? root.querySelector("#editor-form") : null;
    if (!form && root.id === "editor-form") {
      form = root;
    }
    if (!form) {
      return;
    }
    showRepeatControls(form);
    var filter = form.querySelector("#participant-filter");
    if (filter) {
      filter.hidden = false;  // without JavaScript the whole list shows, so the box only comes with it
    }
  }

  htmx.onLoad(function (root) {
    setUpEditor(root.querySelectorAll ? root : document);
  });

  document.addEventListener("change", function (event) {
    var field = event.target;
    if (field.matches && field.matches("#editor-form select[name=freq], #editor-form select[name=ends]")) {
      showRepeatControls(field.form);
    }
    // The question before deleting names what the chosen scope deletes.
    if (field.matches && field.matches("#delete-form input[name=scope][data-question]")) {
      field.form.setAttribute("hx-confirm", field.getAttribute("data-question"));
    }
  });

  document.addEventListener("input", function (event) {
    if (event.target.id === "participant-filter") {
      filterPeople(event.target);
    }
  });

  document.addEventListener("keydown", function (event) {
    // Enter in the filter box would send the form half filled in.
    if (event.key === "Enter" && event.target.id === "participant-filter") {
      event.preventDefault();
    }
  });

  // Where focus goes once something lands in the editor: the first field of a form, else the message saying
  // what happened, else the item's heading; never left behind on the link that opened it.
  var opener = null;

  function focusEditor(editor) {
    var target = editor.querySelector("#answer-message, #saved-message") ||
      editor.querySelector("#editor-form input[name=subject]:not([disabled])") ||
      editor.querySelector("#item-title, #editor-title");
    if (target) {
      if (!target.hasAttribute("tabindex") && !target.matches("input")) {
        target.setAttribute("tabindex", "-1");
      }
      target.focus();
    }
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    var target = event.detail.target;
    if (target && target.id === "editor" && !(target.contains(event.detail.elt))) {
      opener = event.detail.elt;
    }
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail.target;
    if (target && target.id === "editor") {
      focusEditor(target);
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    // The editor opened as a page of its own (no JavaScript links, or a reload).
    var editor = document.querySelector("div#editor");
    if (editor) {
      focusEditor(editor);
    }
  });

  function closeEditor(editor) {
    editor.innerHTML = "";
    if (opener && document.body.contains(opener)) {
      opener.focus();
    } else {
      var view = document.getElementById("calendar-view");
      var heading = view && view.querySelector("h1");
      if (heading) {
        heading.setAttribute("tabindex", "-1");
        heading.focus();
      }
    }
    opener = null;
  }

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" || event.defaultPrevented) {
      return;
    }
    if (event.target.id === "participant-filter" && event.target.value) {
      return;  // Escape in the filter box empties it first, as search boxes do
    }
    // Only the editor beside the calendar closes; on a page of its own there is nothing to go back to.
    var editor = document.querySelector("aside#editor");
    if (editor && editor.children.length && (editor.contains(event.target) || event.target === document.body)) {
      event.preventDefault();
      closeEditor(editor);
    }
  });

  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("aside#editor a.editor-close, aside#editor .actions a");
    if (link) {
      event.preventDefault();
      closeEditor(document.querySelector("aside#editor"));
    }
  });
  // End of Editor ----------------------------------------------------------------------------------------
})();
