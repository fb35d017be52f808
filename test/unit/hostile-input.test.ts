import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { validateStage } from '../../processors/validate.js';
import type { StageDeps } from '../../pipeline/deps.js';
import { PermanentError } from '../../runtime/errors.js';
import { TemplateStore } from '../../runtime/templates.js';
import { collect, fakeContext } from '../fakes.js';

const templatesDir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-templates-'));
fs.mkdirSync(path.join(templatesDir, 'loops'));
fs.writeFileSync(path.join(templatesDir, 'loops', 'en.json'), JSON.stringify({
  title: 'Digest',
  body: '{{#each a}}{{#each @root.a}}{{#each @root.a}}{{#each @root.a}}x{{/each}}{{/each}}{{/each}}{{/each}}',
}));
fs.mkdirSync(path.join(templatesDir, 'short-loop'));
fs.writeFileSync(path.join(templatesDir, 'short-loop', 'en.json'), JSON.stringify({ title: 'Items', body: '{{#each items}}[{{this}}]{{/each}}' }));
fs.mkdirSync(path.join(templatesDir, 'logs'));
fs.writeFileSync(path.join(templatesDir, 'logs', 'en.json'), JSON.stringify({ title: 'Hi', body: '{{log "written by a producer"}}' }));

const deps = { templates: new TemplateStore(templatesDir), defaultChannels: ['inapp'], now: () => 1_000 } as unknown as StageDeps;
const stage = validateStage.create({}, deps);
const base = { tenant: 't', idempotency_key: 'k', tier: 'social', category: 'news', recipients: { user_ids: ['u'] } };

/** Validates `request`; returns the rejection's problems (fails the test if it was accepted) and how long it took. */
async function rejection(request: Record<string, unknown>): Promise<{ problems: string; ms: number }> {
  const started = performance.now();
  const err = await Promise.resolve().then(() => collect(stage.process!(request, fakeContext().ctx))).then(() => null, (e) => e);
  expect(err).toBeInstanceOf(PermanentError);
  return { problems: (err as PermanentError).problems.join('\n'), ms: performance.now() - started };
}

const sixty = Array.from({ length: 60 }, (_, i) => i);

describe('hostile requests at validate', () => {
  it('rejects the 497-byte template bomb at once, naming what inline content may not use', async () => {
    const bomb = '{{#each @root.a}}{{#each @root.a}}{{#each @root.a}}{{#each @root.a}}XXXXXXXXXXXXXXXX{{/each}}{{/each}}{{/each}}{{/each}}';
    const { problems, ms } = await rejection({ ...base, content: { title: bomb, body: 'b' }, data: { a: sixty } });
    expect(problems).toMatch(/content\.title: only \{\{#if name\}\} and \{\{#unless name\}\} blocks are allowed in inline content, not \{\{#each\}\}/);
    expect(ms).toBeLessThan(1_000);
  });

  it('bounds the loops of an operator template by the data a producer sends', async () => {
    const { problems, ms } = await rejection({ ...base, template: { id: 'loops' }, data: { a: sixty } });
    expect(problems).toMatch(/template "loops" \(en\) cannot be rendered: the template loops more than 10000 times/);
    expect(ms).toBeLessThan(1_000);
    // A loop inside the budget renders.
    expect(deps.templates.renderTemplate('short-loop', 'en', { items: [1, 2, 3] }).body).toBe('[1][2][3]');
  });

  it('keeps producer text out of the logs: no log helper, inline or in files', async () => {
    const inline = await rejection({ ...base, content: { title: '{{log "pwned"}}', body: 'b' } });
    expect(inline.problems).toMatch(/content\.title: only \{\{name\}\} placeholders are allowed/);
    const file = await rejection({ ...base, template: { id: 'logs' } });
    expect(file.problems).toMatch(/template "logs" \(en\) cannot be rendered: the log helper is not available in Herald templates/);
  });

  it('rejects helpers, partials and @data in inline content, and allows if/unless on plain names', async () => {
    const { problems } = await rejection({
      ...base, content: { title: '{{lookup a 0}} {{@root.a}}', body: '{{> secret}} {{#with a}}x{{/with}}' }, data: { a: [1] },
    });
    expect(problems).toMatch(/content\.title: only \{\{name\}\} placeholders/);
    expect(problems).toMatch(/content\.body: partial is not allowed in inline content/);
    expect(problems).toMatch(/content\.body: only \{\{#if name\}\} and \{\{#unless name\}\} blocks are allowed in inline content, not \{\{#with\}\}/);
    const [ok] = await collect(stage.process!({ ...base, content: { title: '{{#if vip}}Dear {{name}}{{else}}Hi{{/if}}', body: 'b' }, data: { vip: true, name: 'Ada' } }, fakeContext().ctx));
    expect(deps.templates.render(ok.request, 'en').title).toBe('Dear Ada');
  });

  it('rejects data nested 5,000 deep once, as a permanent rejection (no stack overflow)', async () => {
    let deep: Record<string, unknown> = { leaf: 1 };
    for (let i = 0; i < 5_000; i++) deep = { d: deep };
    const { problems, ms } = await rejection({ ...base, content: { title: 't', body: 'b' }, data: { deep } });
    expect(problems).toMatch(/data: data nested 17 levels deep; at most 16/);
    expect(ms).toBeLessThan(1_000);
  });

  it('rejects data over 64 KB and over 10,000 values', async () => {
    const big = await rejection({ ...base, content: { title: 't', body: 'b' }, data: { blob: 'x'.repeat(70_000) } });
    expect(big.problems).toMatch(/data: data is 700\d\d bytes as JSON; at most 65536/);
    const many = await rejection({ ...base, content: { title: 't', body: 'b' }, data: { list: Array.from({ length: 10_001 }, () => 0) } });
    expect(many.problems).toMatch(/data: data holds more than 10000 values/);
  });

  it('rejects content whose rendered text is too long, though its source is short', async () => {
    const { problems } = await rejection({ ...base, content: { title: '{{t}}{{t}}', body: 'b' }, data: { t: 'x'.repeat(600) } });
    expect(problems).toMatch(/content: rendered title is 1200 characters; at most 1000/);
  });

  it('rejects a send_at it could not honour: past REQUESTS\' retention, or centuries away (once, with the reason)', async () => {
    for (const sendAt of ['2400-01-01T00:00:00Z', new Date(1_000 + 8 * 86_400_000).toISOString()]) {
      const { problems } = await rejection({ ...base, content: { title: 't', body: 'b' }, send_at: sendAt });
      expect(problems).toMatch(new RegExp(`send_at: ${sendAt.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is more than 167 hours after the request arrived`));
    }
    // Six days ahead is honoured (parked until then, not rejected).
    const sixDays = 1_000 + 6 * 86_400_000;
    const { ctx, handedBack } = fakeContext();
    expect(await collect(stage.process!({ ...base, content: { title: 't', body: 'b' }, send_at: new Date(sixDays).toISOString() }, ctx))).toEqual([]);
    expect(handedBack.map((b) => b.untilMs)).toEqual([sixDays]);
  });
});
