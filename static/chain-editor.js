// Transform chain editor: a list of steps, each a transform <select> plus one control per
// parameter (a slider for numbers, a select for choices, a checkbox for yes/no, a text box
// for text), built from GET /transforms. Steps can be added, removed and moved up or down.
// Used by the live panel (chain-panel.js) and the upload form (upload.js):
//   const editor = await ChainEditor.mount(element, { spec: "grayscale", onChange(spec) {...} });
//   editor.spec; editor.setSpec("blur:ksize=15,edges");
"use strict";

window.ChainEditor = (() => {
  let catalog = null;

  // The registry, fetched once per page and shared by every editor.
  function loadCatalog() {
    if (!catalog) {
      catalog = fetch("/transforms", { cache: "no-store" })
        .then((response) => {
          if (!response.ok) throw new Error(`HTTP ${response.status}`);
          return response.json();
        })
        .then((body) => ({ transforms: new Map(body.transforms.map((t) => [t.name, t])), maxSteps: body.max_steps }))
        .catch((error) => {
          catalog = null;  // try again next time
          throw error;
        });
    }
    return catalog;
  }

  // ---- spec text <-> steps; the server parses the same grammar and has the last word ----
  const IDENTITY = ["", "none", "identity"];

  function parseSpec(spec, transforms) {
    const steps = [];
    for (const raw of String(spec || "").split(/[,|]/)) {
      const [name, ...pairs] = raw.split(":");
      const transform = transforms.get(name.trim().toLowerCase());
      if (IDENTITY.includes(name.trim().toLowerCase()) || !transform) continue;
      const step = defaults(transform);
      for (const pair of pairs) {
        const at = pair.indexOf("=");
        const key = pair.slice(0, at).trim().toLowerCase();
        const param = transform.params.find((p) => p.name === key);
        if (at > 0 && param) step.values[key] = fromText(param, safeDecode(pair.slice(at + 1)));
      }
      steps.push(step);
    }
    return steps;
  }

  function safeDecode(text) {
    try {
      return decodeURIComponent(text);
    } catch (error) {
      return text;
    }
  }

  function fromText(param, text) {
    if (param.type === "int" || param.type === "float") return Number(text);
    if (param.type === "bool") return ["1", "true", "yes", "on"].includes(text.trim().toLowerCase());
    if (param.choices) return param.choices.find((c) => String(c) === text.trim().toLowerCase()) ?? param.default;
    return text;
  }

  function defaults(transform) {
    return { name: transform.name, values: Object.fromEntries(transform.params.map((p) => [p.name, p.default])) };
  }

  function formatValue(param, value) {
    if (param.type === "bool") return value ? "true" : "false";
    if (param.type === "str") return encodeURIComponent(value);
    return String(value);
  }

  function toSpec(steps, transforms) {
    if (!steps.length) return "identity";
    return steps.map((step) => {
      const transform = transforms.get(step.name);
      const changed = transform.params.filter((p) => step.values[p.name] !== p.default);
      return [step.name, ...changed.map((p) => `${p.name}=${formatValue(p, step.values[p.name])}`)].join(":");
    }).join(",");
  }

  // ---- controls ----
  let counter = 0;
  const uid = (what) => `chain-${what}-${++counter}`;

  function element(tag, props = {}, children = []) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else if (key in node && !key.includes("-")) node[key] = value;
      else node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  }

  function sliderStep(param) {
    if (param.type === "int") return param.odd ? 2 : 1;
    const span = param.max - param.min;
    return span <= 1 ? 0.01 : span <= 20 ? 0.1 : 1;
  }

  // One labelled control for a parameter; `set(value)` reports every change.
  function paramControl(param, value, set) {
    const id = uid("param");
    const label = element("label", { for: id, text: param.name, title: param.help });
    let control;
    let shown = null;
    if (param.choices) {
      control = element("select", { id }, param.choices.map((c) => new Option(String(c), String(c))));
      control.value = String(value);
      control.addEventListener("change", () => set(fromText(param, control.value)));
    } else if (param.type === "bool") {
      control = element("input", { id, type: "checkbox", checked: Boolean(value) });
      control.addEventListener("change", () => set(control.checked));
    } else if ((param.type === "int" || param.type === "float") && param.min !== null && param.max !== null) {
      control = element("input", { id, type: "range", min: param.min, max: param.max, step: sliderStep(param), value });
      shown = element("output", { for: id, text: String(value) });
      control.addEventListener("input", () => {
        shown.textContent = control.value;
        set(Number(control.value));
      });
    } else if (param.type === "int" || param.type === "float") {
      control = element("input", { id, type: "number", step: param.type === "int" ? 1 : "any", value });
      control.addEventListener("change", () => set(Number(control.value)));
    } else {
      control = element("input", { id, type: "text", value, maxLength: 200 });
      control.addEventListener("change", () => set(control.value));
    }
    control.setAttribute("aria-describedby", id + "-help");
    const help = element("span", { id: id + "-help", class: "chain-param-help", text: param.help });
    return element("div", { class: "chain-param" }, [label, control, ...(shown ? [shown] : []), help]);
  }

  async function mount(root, options = {}) {
    const { transforms, maxSteps } = await loadCatalog();
    const names = [...transforms.keys()];
    let steps = parseSpec(options.spec ?? "grayscale", transforms);
    const list = element("ol", { class: "chain-steps" });
    const addButton = element("button", { type: "button", class: "chain-add", text: "Add step" });
    const specText = element("code", { class: "chain-spec" });
    const summary = element("p", { class: "chain-summary" }, ["Chain: ", specText]);
    root.classList.add("chain-editor");
    root.replaceChildren(list, addButton, summary);

    function changed() {
      const spec = toSpec(steps, transforms);
      specText.textContent = spec;
      if (options.onChange) options.onChange(spec);
    }

    // Re-render everything (chains are short), then put the keyboard focus back where it was.
    function render(focus) {
      list.replaceChildren(...steps.map((step, index) => stepItem(step, index)));
      addButton.hidden = Boolean(maxSteps) && steps.length >= maxSteps;
      if (focus) {
        const target = list.querySelector(`[data-focus="${focus}"]`) || addButton;
        target.focus();
      }
      changed();
    }

    function stepItem(step, index) {
      const transform = transforms.get(step.name);
      const n = index + 1;
      const selectId = uid("step");
      const select = element("select", { id: selectId, "data-focus": `select-${index}`, "aria-label": `Step ${n} transform` },
        names.map((name) => new Option(name, name)));
      select.value = step.name;
      select.addEventListener("change", () => {
        steps[index] = defaults(transforms.get(select.value));
        render(`select-${index}`);
      });
      const move = (to, label, text, focusKey) => {
        const button = element("button", { type: "button", text, "aria-label": `${label} step ${n}`,
          "data-focus": focusKey, disabled: to < 0 || to >= steps.length });
        button.addEventListener("click", () => {
          [steps[index], steps[to]] = [steps[to], steps[index]];
          render(`select-${to}`);
        });
        return button;
      };
      const remove = element("button", { type: "button", text: "Remove", "aria-label": `Remove step ${n}` });
      remove.addEventListener("click", () => {
        steps.splice(index, 1);
        render(steps.length ? `select-${Math.min(index, steps.length - 1)}` : "add");
      });
      const head = element("div", { class: "chain-step-head" }, [
        element("label", { for: selectId, text: `Step ${n}` }), select,
        move(index - 1, "Move up", "↑", `up-${index}`), move(index + 1, "Move down", "↓", `down-${index}`), remove,
      ]);
      const params = transform.params.map((param) => paramControl(param, step.values[param.name], (value) => {
        step.values[param.name] = value;
        changed();
      }));
      const about = element("p", { class: "chain-about", text: transform.description });
      return element("li", { class: "chain-step" },
        [head, about, element("div", { class: "chain-params" }, params)]);
    }

    addButton.dataset.focus = "add";
    addButton.addEventListener("click", () => {
      steps.push(defaults(transforms.get("grayscale") || transforms.values().next().value));
      render(`select-${steps.length - 1}`);
    });

    render(null);
    return {
      get spec() {
        return toSpec(steps, transforms);
      },
      setSpec(spec) {
        steps = parseSpec(spec, transforms);
        render(null);
      },
    };
  }

  return { mount, loadCatalog };
})();
