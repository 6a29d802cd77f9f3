// Markdown with math, sanitised: markdown-it renders (tables included), Temml turns $$..$$ and $..$
// into MathML, DOMPurify removes anything active from the result before it touches the page.
import markdownit from "./vendor/markdown-it/markdown-it.esm.min.mjs";
import DOMPurify from "./vendor/dompurify/purify.es.mjs";

const md = markdownit({ html: true, linkify: false, typographer: false });
const MATH = /\$\$([\s\S]+?)\$\$|\\\[([\s\S]+?)\\\]|\\\(([\s\S]+?)\\\)|(?<![\\$\w])\$(?!\s)([^$\n]+?)(?<!\s)\$(?![\w$])/g;

function mathml(tex, display) {
  if (!window.temml) return `<code>${escapeHtml(tex)}</code>`;
  try {
    return window.temml.renderToString(tex, { displayMode: display, throwOnError: false });
  } catch {
    return `<code>${escapeHtml(tex)}</code>`;
  }
}

export function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// Math is cut out before Markdown sees it (so _ and * inside formulas stay formulas) and put back after.
export function renderMarkdown(source) {
  const formulas = [];
  const marked = source.replace(MATH, (_all, display, bracket, paren, inline) => {
    const isDisplay = display !== undefined || bracket !== undefined;
    formulas.push(mathml((display ?? bracket ?? paren ?? inline).trim(), isDisplay));
    return `\uE000${formulas.length - 1}\uE001`;
  });
  let html = md.render(marked);
  html = html.replace(/\uE000(\d+)\uE001/g, (_m, i) => formulas[Number(i)]);
  return DOMPurify.sanitize(html, { USE_PROFILES: { html: true, mathMl: true } });
}
