// Concept Sliders: Extra Networks card clicks.
// The stock cardClicked() removes a tag on the second click only when its weight is positive
// (its regex is [\d.]+); a slider's α is often negative, so cards call this instead.

function slidersEscapeRegExp(text) {
    return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// The tag for `name` in `prompt` (any α and arguments), or null.
function slidersFindTag(prompt, name) {
    var pattern = new RegExp("<slider:\\s*" + slidersEscapeRegExp(name) + "\\s*(?::[^>]*)?>", "g");
    var match = pattern.exec(prompt);
    return match ? {start: match.index, end: match.index + match[0].length} : null;
}

// The prompt with the slider's tag removed if present, else with `<slider:name:alpha>` added.
function slidersToggleTag(prompt, name, alpha, separator) {
    var found = slidersFindTag(prompt, name);
    if (!found) {
        return prompt + (prompt.length ? separator : "") + "<slider:" + name + ":" + alpha + ">";
    }
    var before = prompt.slice(0, found.start);
    var after = prompt.slice(found.end);
    if (separator && before.endsWith(separator)) {
        before = before.slice(0, before.length - separator.length);
    } else if (separator && after.startsWith(separator)) {
        after = after.slice(separator.length);
    }
    return before + after;
}

function slidersCardClicked(event, name, alpha) {
    var pane = event.target.closest("[id$='_pane']");
    var tabname = pane && pane.id.startsWith("img2img_") ? "img2img" : "txt2img";
    var textarea = gradioApp().querySelector("#" + tabname + "_prompt > label > textarea");
    if (textarea) {
        var separator = (typeof opts !== "undefined" && opts.extra_networks_add_text_separator) || " ";
        textarea.value = slidersToggleTag(textarea.value, name, alpha, separator);
        updateInput(textarea);
    }
    event.stopPropagation();
    return false;
}

if (typeof module !== "undefined") {
    module.exports = {slidersToggleTag: slidersToggleTag, slidersFindTag: slidersFindTag};
}

// Concept Sliders: the Train page's Start and Resume buttons (the webui's textual-inversion pattern).
// A task id for the progress bar (progress.textinfo is shown under it), then the arguments with the id first.
function slidersStartTraining() {
    var app = gradioApp();
    var container = app.getElementById("sliders_train_progressbar");
    var info = app.getElementById("sliders_train_progress");
    var id = randomId();
    if (info) {
        info.textContent = "";
    }
    if (container) {
        requestProgress(id, container, app.getElementById("sliders_train_preview_image"), function() {
            if (info) {
                info.textContent = "";
            }
        }, function(progress) {
            if (info) {
                info.textContent = progress.textinfo || "";
            }
        });
    }
    var res = Array.from(arguments);
    res[0] = id;
    return res;
}

if (typeof module !== "undefined") {
    module.exports.slidersStartTraining = slidersStartTraining;
}

// Concept Sliders: after a training run, rebuild the Extra Networks pages so a new slider's card shows up
// (the webui's own hidden per-page refresh button; it refreshes every page of that tab).
function slidersRefreshCards() {
    ["txt2img", "img2img"].forEach(function(tabname) {
        var button = gradioApp().getElementById(tabname + "_sliders_extra_refresh_internal");
        if (button) {
            button.dispatchEvent(new Event("click"));
        }
    });
    return [];
}

if (typeof module !== "undefined") {
    module.exports.slidersRefreshCards = slidersRefreshCards;
}
