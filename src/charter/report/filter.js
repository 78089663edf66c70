// Filter the examples by principle, suite and text. Reads only the page's own controls.
(function () {
  var principle = document.getElementById("principle");
  var suite = document.getElementById("suite");
  var search = document.getElementById("search");
  function apply() {
    var wantedPrinciple = principle.value;
    var wantedSuite = suite.value;
    var query = search.value.trim().toLowerCase();
    document.querySelectorAll("section.examples").forEach(function (section) {
      var shown = 0;
      section.querySelectorAll(".example").forEach(function (example) {
        var principles = (example.getAttribute("data-principles") || "").split(" ");
        var ok = (!wantedPrinciple || principles.indexOf(wantedPrinciple) >= 0) &&
          (!wantedSuite || example.getAttribute("data-suite") === null ||
           example.getAttribute("data-suite") === wantedSuite) &&
          (!query || example.textContent.toLowerCase().indexOf(query) >= 0);
        example.hidden = !ok;
        if (ok) { shown += 1; }
      });
      var counter = section.querySelector(".shown");
      if (counter) { counter.textContent = String(shown); }
    });
  }
  [principle, suite, search].forEach(function (control) {
    control.addEventListener("input", apply);
  });
  apply();
})();
