import fs from 'node:fs';
import path from 'node:path';
import { budgeted, guardedEngine, inlineEngine, inlineProblems, outputProblems } from './template-guard.js';

/** Rendered content for one locale. */
export interface RenderedContent {
  title: string;
  body: string;
  html?: string;
}

interface ContentSource { title: string; body: string; html?: string }
type Compiled = { title: HandlebarsTemplateDelegate; body: HandlebarsTemplateDelegate; html?: HandlebarsTemplateDelegate };

/** A content problem the sender must fix: reported as a rejection, never retried. */
export class ContentError extends Error {
  constructor(message: string, readonly problems: string[] = [message]) {
    super(message);
  }
}

// Loops are budgeted and `log` is gone, for operator templates too: data comes from producers.
const fileEngine = guardedEngine();
const contentEngine = inlineEngine();

/** A request's data when it has none: one object, so that its check's render is remembered for its delivery too. */
const NO_DATA: Record<string, unknown> = Object.freeze({});

/** A part without a mustache renders as itself: Handlebars would allocate a context to say so. */
const literal = (s: string): HandlebarsTemplateDelegate | undefined => (s.includes('{{') ? undefined : () => s);

function compile(source: ContentSource, engine: ReturnType<typeof guardedEngine>): Compiled {
  // Text parts are not HTML-escaped; the HTML part is.
  const text = (s: string) => literal(s) ?? engine.compile(s, { strict: true, noEscape: true });
  return {
    title: text(source.title),
    body: text(source.body),
    html: source.html === undefined ? undefined : literal(source.html) ?? engine.compile(source.html, { strict: true }),
  };
}

function run(compiled: Compiled, data: Record<string, unknown>, where: string): RenderedContent {
  let rendered: RenderedContent;
  try {
    rendered = budgeted(() => ({
      title: compiled.title(data),
      body: compiled.body(data),
      html: compiled.html?.(data),
    }));
  } catch (err) {
    const missing = /"([^"]+)" not defined/.exec((err as Error).message)?.[1];
    throw new ContentError(missing
      ? `${where} uses {{${missing}}} but data has no "${missing}"`
      : `${where} cannot be rendered: ${(err as Error).message}`);
  }
  const tooBig = outputProblems(rendered, where);
  if (tooBig.length) throw new ContentError(tooBig.join('; '), tooBig);
  return rendered;
}

/**
 * Templates are files `<dir>/<id>/<locale>.json` holding `title`, `body` and optional `html`, in
 * Handlebars syntax. Compiled once and cached; a file added later is picked up on first use.
 */
export class TemplateStore {
  private readonly compiled = new Map<string, Compiled | null>();
  private readonly inline = new Map<string, Compiled>();
  /**
   * The last inline render of each data object: validate renders a request to check it, and
   * dispatch renders the same request (the same objects, handed on in process) again.
   */
  private readonly lastInline = new WeakMap<object, { content: ContentSource; rendered: RenderedContent }>();

  constructor(private readonly dir: string) {}

  /** How many inline contents are compiled and cached now. */
  get compiledInline(): number {
    return this.inline.size;
  }

  /** Locales a template exists in, or [] when there is no such template. */
  locales(id: string): string[] {
    try {
      return fs.readdirSync(path.join(this.dir, id)).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)).sort();
    } catch {
      return [];
    }
  }

  private load(id: string, locale: string): Compiled | null {
    const key = `${id}/${locale}`;
    if (this.compiled.has(key)) return this.compiled.get(key)!;
    let result: Compiled | null = null;
    const file = path.join(this.dir, id, `${locale}.json`);
    if (fs.existsSync(file)) {
      let source: ContentSource;
      try {
        source = JSON.parse(fs.readFileSync(file, 'utf8')) as ContentSource;
      } catch (err) {
        throw new ContentError(`template "${id}" (${locale}) is not valid JSON: ${(err as Error).message}`);
      }
      if (typeof source.title !== 'string' || typeof source.body !== 'string') {
        throw new ContentError(`template "${id}" (${locale}) needs string "title" and "body"`);
      }
      result = compile(source, fileEngine);
    }
    this.compiled.set(key, result);
    return result;
  }

  /** The best locale available: exact, then language, then `en`, then the first there is. */
  pickLocale(id: string, wanted: string): string | undefined {
    const available = this.locales(id);
    const normalized = wanted.replace('_', '-');
    const language = normalized.split('-')[0];
    return [normalized, language, 'en'].find((l) => available.includes(l)) ?? available[0];
  }

  renderTemplate(id: string, locale: string, data: Record<string, unknown>): RenderedContent {
    const chosen = this.pickLocale(id, locale);
    const compiled = chosen ? this.load(id, chosen) : null;
    if (!compiled) throw new ContentError(`template "${id}" does not exist in ${this.dir}`);
    return run(compiled, data, `template "${id}" (${chosen})`);
  }

  renderInline(content: ContentSource, data: Record<string, unknown>): RenderedContent {
    const last = this.lastInline.get(data);
    if (last?.content === content) return last.rendered;
    // Only the parts that render name the compiled form: an action_url unique to each request must not defeat the cache.
    const key = JSON.stringify([content.title, content.body, content.html]);
    let compiled = this.inline.get(key);
    if (!compiled) {
      // Inline content is producer input: placeholders and if/unless only, checked before compiling.
      const problems = [
        ...inlineProblems(content.title, 'content.title'),
        ...inlineProblems(content.body, 'content.body'),
        ...(content.html === undefined ? [] : inlineProblems(content.html, 'content.html')),
      ];
      if (problems.length) throw new ContentError(problems.join('; '), problems);
      try {
        compiled = compile(content, contentEngine);
      } catch (err) {
        throw new ContentError(`content has a template syntax error: ${(err as Error).message}`);
      }
      if (this.inline.size > 10_000) this.inline.clear();
      this.inline.set(key, compiled);
    }
    const rendered = run(compiled, data, 'content');
    this.lastInline.set(data, { content, rendered });
    return rendered;
  }

  /** Renders a request's content for a recipient locale. */
  render(req: { content?: ContentSource; template?: { id: string; locale?: string }; data?: Record<string, unknown> }, recipientLocale: string): RenderedContent {
    const data = req.data ?? NO_DATA;
    if (req.content) return this.renderInline(req.content, data);
    if (!req.template) throw new ContentError('request has neither content nor template');
    return this.renderTemplate(req.template.id, req.template.locale ?? recipientLocale, data);
  }

  /** Every problem rendering would hit, for every locale the request could use. */
  check(req: { content?: ContentSource; template?: { id: string; locale?: string }; data?: Record<string, unknown> }): string[] {
    const problems: string[] = [];
    const data = req.data ?? NO_DATA;
    const attempt = (fn: () => unknown) => {
      try { fn(); } catch (err) { problems.push(...(err instanceof ContentError ? err.problems : [(err as Error).message])); }
    };
    if (req.content) {
      attempt(() => this.renderInline(req.content!, data));
    } else if (req.template) {
      const { id, locale } = req.template;
      const available = this.locales(id);
      if (available.length === 0) {
        problems.push(`template.id: no template "${id}"`);
      } else {
        // A locale the template lacks falls back (language, then en), so it is not an error.
        for (const l of locale ? [this.pickLocale(id, locale)!] : available) {
          attempt(() => this.renderTemplate(id, l, data));
        }
      }
    }
    return problems;
  }
}
