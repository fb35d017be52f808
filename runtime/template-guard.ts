import Handlebars from 'handlebars';

/** What one render may cost: producer input must never be able to stall or crash a process. */
export const renderLimits = {
  /** Block-helper iterations (`each`) in one render, nested ones multiplied out. */
  iterations: 10_000,
  /** Placeholders in one inline text. */
  placeholders: 200,
  /** Rendered characters per part. */
  output: { title: 1_000, body: 64_000, html: 512_000 },
} as const;

/** Spent by every `each` iteration of the render in progress (renders are synchronous). */
let iterationsLeft = Infinity;

/** A Handlebars environment whose loops are budgeted and whose `log` helper is gone. */
export function guardedEngine(): typeof Handlebars {
  const engine = Handlebars.create();
  // `{{log "…"}}` would write producer-chosen lines into Herald's logs.
  engine.registerHelper('log', () => {
    throw new Error('the log helper is not available in Herald templates');
  });
  const each = engine.helpers.each as Handlebars.HelperDelegate;
  engine.registerHelper('each', function (this: unknown, context: unknown, options: Handlebars.HelperOptions) {
    const n = Array.isArray(context) ? context.length : context && typeof context === 'object' ? Object.keys(context).length : 0;
    iterationsLeft -= n;
    if (iterationsLeft < 0) throw new Error(`the template loops more than ${renderLimits.iterations} times`);
    return each.call(this, context, options);
  });
  return engine;
}

/** The helpers inline content may use (see inlineProblems), and the hooks Handlebars calls for a missing one. */
const inlineHelpers = new Set(['if', 'unless', 'helperMissing', 'blockHelperMissing']);

/**
 * The environment inline content renders in: only what inline content may use. Handlebars wraps
 * every helper of the environment on every render, and every request is rendered to be checked.
 */
export function inlineEngine(): typeof Handlebars {
  const engine = Handlebars.create();
  for (const name of Object.keys(engine.helpers)) if (!inlineHelpers.has(name)) engine.unregisterHelper(name);
  return engine;
}

/** Runs one render under the iteration budget. */
export function budgeted<T>(render: () => T): T {
  iterationsLeft = renderLimits.iterations;
  try {
    return render();
  } finally {
    iterationsLeft = Infinity;
  }
}

type Node = hbs.AST.Node;

/**
 * What inline content may use: text, comments, `{{path}}` placeholders (no helpers, no `@root` or
 * other `@data`, no partials) and `{{#if path}}` / `{{#unless path}}` blocks. Iteration and helpers
 * belong in operator-authored template files. Returns the problems, each saying where.
 */
export function inlineProblems(source: string, where: string): string[] {
  let program: hbs.AST.Program;
  try {
    program = Handlebars.parse(source);
  } catch (err) {
    return [`${where}: template syntax error: ${(err as Error).message.split('\n')[0]}`];
  }
  const problems: string[] = [];
  let placeholders = 0;
  const simplePath = (node: Node | undefined): boolean =>
    node?.type === 'PathExpression' && !(node as hbs.AST.PathExpression).data && (node as hbs.AST.PathExpression).parts.length <= 8;
  const line = (node: Node) => (node.loc ? ` (line ${node.loc.start.line})` : '');
  const walk = (nodes: Node[]) => {
    for (const node of nodes) {
      switch (node.type) {
        case 'ContentStatement':
        case 'CommentStatement':
          break;
        case 'MustacheStatement': {
          const m = node as hbs.AST.MustacheStatement;
          placeholders++;
          if (!simplePath(m.path) || m.params.length > 0 || (m.hash?.pairs.length ?? 0) > 0) {
            problems.push(`${where}: only {{name}} placeholders are allowed in inline content${line(node)}`);
          }
          break;
        }
        case 'BlockStatement': {
          const b = node as hbs.AST.BlockStatement;
          const helper = b.path.type === 'PathExpression' ? (b.path as hbs.AST.PathExpression).original : '';
          if (!['if', 'unless'].includes(helper) || b.params.length !== 1 || !simplePath(b.params[0])) {
            problems.push(`${where}: only {{#if name}} and {{#unless name}} blocks are allowed in inline content, not {{#${helper || '…'}}}${line(node)}`);
            break;
          }
          walk(b.program.body);
          if (b.inverse) walk(b.inverse.body);
          break;
        }
        default:
          problems.push(`${where}: ${node.type.replace('Statement', '').toLowerCase()} is not allowed in inline content${line(node)}`);
      }
    }
  };
  walk(program.body);
  if (placeholders > renderLimits.placeholders) problems.push(`${where}: ${placeholders} placeholders; at most ${renderLimits.placeholders}`);
  return problems;
}

/** Whether rendered parts fit; problems name the part and both sizes. */
export function outputProblems(rendered: { title: string; body: string; html?: string }, where: string): string[] {
  const problems: string[] = [];
  for (const part of ['title', 'body', 'html'] as const) {
    const value = rendered[part];
    const max = renderLimits.output[part];
    if (value !== undefined && value.length > max) problems.push(`${where}: rendered ${part} is ${value.length} characters; at most ${max}`);
  }
  return problems;
}
