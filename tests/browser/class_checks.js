// What a person notices in a second, checked inside the page. `page.evaluate(source)` gives
// an object of check functions; each returns a list of problems in words ([] when none).
(() => {
  "use strict";

  const shown = (el) => {
    const box = el.getBoundingClientRect();
    return box.width >= 2 && box.height >= 2 && el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true });
  };

  const describe = (el) => {
    const classes = el.classList.length ? "." + [...el.classList].join(".") : "";
    const text = (el.innerText || el.getAttribute("aria-label") || el.value || "").trim().replace(/\s+/g, " ").slice(0, 40);
    return `<${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}${classes}>${text ? ` "${text}"` : ""}`;
  };

  const pinned = (el) => ["fixed", "sticky"].includes(getComputedStyle(el).position);

  // [selector, scope]: at most one element matching selector is visible on the whole page
  // ("page") or among the children of one parent ("parent").
  const ALTERNATIVES = [
    ["h1", "page"],
    [".state", "page"],
    [".spinner, .state-icon", "parent"],
    [".js-only, .nojs-only", "parent"],
    [".empty, .order-list", "parent"],
  ];

  function alternatives() {
    const problems = [];
    for (const [selector, scope] of ALTERNATIVES) {
      const groups = new Map();
      for (const el of document.querySelectorAll(selector)) {
        if (!shown(el)) continue;
        const key = scope === "page" ? document : el.parentElement;
        groups.set(key, [...(groups.get(key) || []), el]);
      }
      for (const els of groups.values()) {
        if (els.length > 1) problems.push(`${els.length} of "${selector}" visible at once: ${els.map(describe).join(", ")}`);
      }
    }
    return problems;
  }

  const INTERACTIVE = "a[href], button, input:not([type=hidden]), select, textarea, summary, [tabindex]:not([tabindex='-1'])";

  // The fixed or sticky element drawn over el at one of its points (centre and corners), if any.
  function coverOf(el) {
    const box = el.getBoundingClientRect();
    const inset = Math.min(3, box.width / 4, box.height / 4);
    const points = [
      [box.left + box.width / 2, box.top + box.height / 2],
      [box.left + inset, box.top + inset], [box.right - inset, box.top + inset],
      [box.left + inset, box.bottom - inset], [box.right - inset, box.bottom - inset],
    ];
    for (const [x, y] of points) {
      if (x < 0 || y < 0 || x >= window.innerWidth || y >= window.innerHeight) continue;
      const hit = document.elementFromPoint(x, y);
      if (!hit || el.contains(hit) || hit.contains(el)) continue;
      for (let node = hit; node && node !== document.body; node = node.parentElement) {
        if (pinned(node) && !node.contains(el)) return node;
      }
    }
    return null;
  }

  function covered() {
    const problems = [];
    const controls = [...document.querySelectorAll(INTERACTIVE)].filter(shown);
    window.scrollTo(0, 0);
    for (const el of controls) {
      const cover = coverOf(el);
      if (cover) problems.push(`on load, ${describe(el)} is covered by ${describe(cover)}`);
    }
    for (const el of controls) {
      el.scrollIntoView({ block: "nearest", inline: "nearest" });
      const cover = coverOf(el);
      if (cover) problems.push(`scrolled to, ${describe(el)} is covered by ${describe(cover)}`);
    }
    window.scrollTo(0, 0);
    return problems;
  }

  function sideways() {
    const root = document.documentElement;
    const overflow = root.scrollWidth - root.clientWidth;
    if (overflow <= 0) return [];
    const wide = [...document.querySelectorAll("body *")]
      .filter((el) => shown(el) && el.getBoundingClientRect().right > root.clientWidth + 1)
      .filter((el) => !el.parentElement || el.parentElement.getBoundingClientRect().right <= root.clientWidth + 1)
      .slice(0, 5);
    return [`the page scrolls sideways by ${overflow}px; too wide: ${wide.map(describe).join(", ")}`];
  }

  // Text that must be read whole: ids, dates and emails.
  const EMAIL = /[^\s@<>()"',;:]+@[^\s@<>()"',;:]+\.[a-z]{2,}/gi;

  function wholeTexts() {
    const ranges = [];
    for (const el of document.querySelectorAll("time, code, .mono")) {
      if (!shown(el)) continue;
      const range = document.createRange();
      range.selectNodeContents(el);
      ranges.push([el, range]);
    }
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const el = node.parentElement;
      if (!el || !shown(el) || el.closest("time, code, .mono, script, style")) continue;
      for (const match of node.data.matchAll(EMAIL)) {
        const range = document.createRange();
        range.setStart(node, match.index);
        range.setEnd(node, match.index + match[0].length);
        ranges.push([el, range]);
      }
    }
    return ranges;
  }

  // Width of the content box of the block that lays out el's lines.
  function lineWidth(el) {
    let block = el;
    while (block.parentElement && getComputedStyle(block).display.startsWith("inline")) block = block.parentElement;
    const style = getComputedStyle(block);
    return block.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  }

  function textWidth(text, el) {
    const probe = document.createElement("span");
    const style = getComputedStyle(el);
    probe.textContent = text;
    probe.style.cssText = `position:absolute;visibility:hidden;white-space:pre;font:${style.font};letter-spacing:${style.letterSpacing}`;
    document.body.append(probe);
    const width = probe.getBoundingClientRect().width;
    probe.remove();
    return width;
  }

  // Characters of a range, each with the top of the line it is drawn on.
  function characters(range) {
    const out = [];
    const node = range.startContainer;
    if (node.nodeType !== Node.TEXT_NODE || range.endContainer !== node) {
      const walker = document.createTreeWalker(range.commonAncestorContainer, NodeFilter.SHOW_TEXT);
      for (let text = walker.nextNode(); text; text = walker.nextNode()) {
        const sub = document.createRange();
        sub.selectNodeContents(text);
        out.push(...characters(sub));
      }
      return out;
    }
    for (let i = range.startOffset; i < range.endOffset; i++) {
      const one = document.createRange();
      one.setStart(node, i);
      one.setEnd(node, i + 1);
      const rect = one.getClientRects()[0];
      out.push({ char: node.data[i], top: rect ? rect.top : null, bottom: rect ? rect.bottom : null, parent: node.parentElement });
    }
    return out;
  }

  // Ids are random: one without a hyphen today has three tomorrow, and a browser may wrap a
  // line after any hyphen. So ids are measured as if every other character were a hyphen
  // (same width in a monospace font), and the page is put back afterwards.
  const ID = /^[A-Za-z0-9_-]{8,}$/;

  function withWorstCaseIds(check) {
    const swapped = [];
    for (const el of document.querySelectorAll("code, .mono")) {
      const node = el.firstChild;
      if (el.childNodes.length !== 1 || node.nodeType !== Node.TEXT_NODE || !ID.test(node.data)) continue;
      swapped.push([node, node.data]);
      node.data = [...node.data].map((c, i) => (i % 2 ? "-" : c)).join("");
    }
    try {
      const problems = check();
      return problems.map((p) => (/<code|\.mono/.test(p) ? `${p} (ids measured with a hyphen after every other character)` : p));
    } finally {
      for (const [node, text] of swapped) node.data = text;
    }
  }

  function brokenOrClipped() {
    return withWorstCaseIds(brokenOrClippedAsShown);
  }

  function brokenOrClippedAsShown() {
    const problems = [];
    for (const [el, range] of wholeTexts()) {
      const chars = characters(range).filter((c) => c.top !== null);
      const text = chars.map((c) => c.char).join("");
      for (let i = 1; i < chars.length; i++) {
        const before = chars[i - 1], here = chars[i];
        if (here.top < before.bottom - 1) continue;  // same line
        if (/\s/.test(before.char) || /\s/.test(here.char)) continue;  // wrapped between words
        let start = i, end = i;
        while (start > 0 && !/\s/.test(chars[start - 1].char)) start--;
        while (end < chars.length && !/\s/.test(chars[end].char)) end++;
        const word = text.slice(start, end);
        // Unavoidable only when the word alone is wider than its line.
        if (textWidth(word, here.parent) <= lineWidth(here.parent) + 0.5) {
          problems.push(`"${text.slice(0, i)}|${text.slice(i)}" is broken mid-word in ${describe(el)}`);
        }
        break;
      }
      const box = range.getBoundingClientRect();
      for (let up = el; up && up !== document.body; up = up.parentElement) {
        const overflow = getComputedStyle(up).overflowX;
        if (overflow !== "hidden" && overflow !== "clip") continue;
        const frame = up.getBoundingClientRect();
        if (box.left < frame.left - 1 || box.right > frame.right + 1) {
          problems.push(`"${text}" is cut off by ${describe(up)}`);
          break;
        }
      }
      if (getComputedStyle(el).textOverflow === "ellipsis" && el.scrollWidth > el.clientWidth) {
        problems.push(`"${text}" is cut short with an ellipsis in ${describe(el)}`);
      }
    }
    return problems;
  }

  // The words a page says about where things stand: its heading, its title, its live status lines.
  function statusWords() {
    const heading = [...document.querySelectorAll("h1")].find(shown);
    return {
      heading: heading ? heading.innerText.trim() : "",
      title: document.title.split(" · ")[0].trim(),
      statuses: [...document.querySelectorAll("main [role=status], main [aria-live]")]
        .filter(shown).map((el) => el.innerText.trim()).filter(Boolean),
    };
  }

  // An underscore in a link must stay apart from the link's underline: drawn on it (and the
  // underline skipping its ink), "ord_7M" reads "ord 7M". The underscore's ink, from the font's
  // own metrics, against the underline at the link's text-underline-offset below the baseline.
  const canvas = document.createElement("canvas").getContext("2d");
  function underscoresOnUnderline() {
    const problems = [];
    for (const link of document.querySelectorAll("a[href]")) {
      const style = getComputedStyle(link);
      if (!shown(link) || !style.textDecorationLine.includes("underline") || !link.innerText.includes("_")) continue;
      const fontSize = parseFloat(style.fontSize);
      const offset = style.textUnderlineOffset === "auto" ? fontSize * 0.1 : parseFloat(style.textUnderlineOffset);
      const thickness = style.textDecorationThickness.endsWith("px") ? parseFloat(style.textDecorationThickness) : Math.max(1, fontSize / 14);
      for (const { char, top, bottom, parent } of characters(rangeOf(link))) {
        if (char !== "_") continue;
        canvas.font = getComputedStyle(parent).font;
        const metrics = canvas.measureText("_");
        const contentHeight = metrics.fontBoundingBoxAscent + metrics.fontBoundingBoxDescent;
        const baseline = top + (bottom - top - contentHeight) / 2 + metrics.fontBoundingBoxAscent;
        const inkTop = baseline - metrics.actualBoundingBoxAscent, inkBottom = baseline + metrics.actualBoundingBoxDescent;
        const lineTop = baseline + offset, lineBottom = lineTop + thickness;
        if (lineTop < inkBottom + 1 && lineBottom > inkTop - 1) {
          problems.push(`the underscores of ${describe(link)} sit on its underline (ink ${inkTop.toFixed(1)}–${inkBottom.toFixed(1)}, underline ${lineTop.toFixed(1)}–${lineBottom.toFixed(1)})`);
        }
        break;
      }
    }
    return problems;
  }

  function rangeOf(el) {
    const range = document.createRange();
    range.selectNodeContents(el);
    return range;
  }

  return { alternatives, covered, sideways, brokenOrClipped, statusWords, underscoresOnUnderline };
})()
