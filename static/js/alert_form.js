// The alert rule form: only the fields that apply to the chosen kind are shown,
// and the threshold says its unit (a percentage for the error rate). Hidden
// fields are ignored when the rule is saved. No inline scripts (CSP).
(function () {
  "use strict";
  var UNITS = {
    error_rate: "(% of conversations that failed)",
    latency: "(ms)",
    budget: "(% of the monthly budget spent)",
    low_balance: "(USD; fires below it)",
  };

  function apply(form) {
    var kind = form.querySelector("select[name=kind]");
    if (!kind) return;
    form.querySelectorAll("[data-kinds]").forEach(function (field) {
      var applies = field.getAttribute("data-kinds").split(" ").indexOf(kind.value) !== -1;
      field.hidden = !applies;
    });
    var unit = form.querySelector("[data-unit-of-kind]");
    if (unit && UNITS[kind.value]) unit.textContent = UNITS[kind.value];
  }

  function init() {
    document.querySelectorAll("form[data-alert-form]").forEach(function (form) {
      apply(form);
      form.addEventListener("change", function (event) {
        if (event.target && event.target.name === "kind") apply(form);
      });
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
