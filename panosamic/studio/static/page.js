// PanoSAMic Studio's page script (app.py puts it in the page's <head>): the Shift modifier of
// every pointer press, the keyboard shortcuts, and the candidate cards.
//
// Shift: gr.Image's select event says where, not whether Shift was held; the map's select event
// reads window.panosamicShift (app.py's SHIFT_INPUT_JS). The 360° viewer sends its own.
//
// Keys (listed on the page, KEYS_TEXT in app.py), ignored while typing in a text field:
//   1 / 2 / 3   pick a candidate mask          Enter   assign the class
//   Ctrl+Z      undo (Cmd+Z on a Mac)           N       negative point on / off
//   B           box on / off                    Esc     clear the prompts
// Each key clicks the page's own control (a radio button or a button), so a key does exactly
// what the mouse does, with the same checks. The 360° viewer's canvas keeps its own keys
// (arrows turn, +/- zoom, 0 home: static/viewer.js); none of them is used here.
(() => {
  for (const type of ["pointerdown", "click"]) {
    document.addEventListener(type, (e) => { window.panosamicShift = e.shiftKey === true; }, true);
  }
  const typing = (el) => !!el && (el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT"
    || (el.tagName === "INPUT" && !["radio", "checkbox", "button", "range"].includes(el.type)));
  const press = (selector) => {
    const b = document.querySelector(selector);
    if (b && !b.disabled) b.click();
  };
  const radios = (id) => [...document.querySelectorAll(`#${id} input[type=radio]`)];
  const pick = (id, i) => {
    const r = radios(id)[i];
    if (r && !r.disabled && !r.checked) r.click();
  };
  const modeIndex = () => radios("click-mode").findIndex((r) => r.checked);
  // the click modes in page.py's CLICK_MODES order: positive point, negative point, box
  const toggleMode = (i) => pick("click-mode", modeIndex() === i ? 0 : i);
  document.addEventListener("keydown", (e) => {
    if (e.defaultPrevented || e.altKey || e.isComposing || typing(e.target)) return;
    const key = e.key;
    if ((e.ctrlKey || e.metaKey) && (key === "z" || key === "Z") && !e.shiftKey) {
      press("#undo-button");
    } else if (e.ctrlKey || e.metaKey) {
      return;
    } else if (key === "1" || key === "2" || key === "3") {
      pick("candidates", Number(key) - 1);
    } else if (key === "Enter") {
      if (e.target && e.target.tagName === "BUTTON") return;  // Enter on a focused button is its own click
      press("#assign-button");
    } else if (key === "n" || key === "N") {
      toggleMode(1);
    } else if (key === "b" || key === "B") {
      toggleMode(2);
    } else if (key === "Escape") {
      press("#clear-button");
    } else {
      return;
    }
    e.preventDefault();
  });
  // a click on a candidate's card picks its radio button (panosamic.studio.candidates.cards_html)
  document.addEventListener("click", (e) => {
    const card = e.target instanceof Element ? e.target.closest(".cand-card") : null;
    if (card) pick("candidates", Number(card.dataset.index));
  });
})();
