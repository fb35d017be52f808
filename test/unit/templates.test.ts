import { describe, expect, it } from 'vitest';
import { TemplateStore } from '../../runtime/templates.js';

describe('inline content', () => {
  const store = new TemplateStore('/nonexistent');

  it('renders parts without placeholders exactly as written, in text and HTML alike', () => {
    const content = { title: 'Sign-in code \\ }} {', body: 'Line one\r\n  & <two> "quoted" \\n', html: '<p>Tom &amp; "Jerry" </p>}}' };
    expect(store.renderInline(content, {})).toEqual(content);
  });

  it('fills placeholders beside literal parts, escaping values in HTML only, and names a missing one', () => {
    const rendered = store.renderInline({ title: 'Your code', body: 'Code {{code}}', html: '<b>{{code}}</b>' }, { code: '<42>' });
    expect(rendered).toEqual({ title: 'Your code', body: 'Code <42>', html: '<b>&lt;42&gt;</b>' });
    expect(() => store.renderInline({ title: 'Hi {{name}}', body: 'plain' }, {})).toThrow('content uses {{name}} but data has no "name"');
  });

  it('renders if/unless blocks, and refuses the helpers inline content may not use', () => {
    const content = { title: '{{#if vip}}Dear {{name}}{{else}}Hello{{/if}}', body: '{{#unless muted}}Ping{{/unless}}' };
    expect(store.renderInline(content, { vip: true, name: 'Ada', muted: false })).toEqual({ title: 'Dear Ada', body: 'Ping' });
    expect(store.renderInline(content, { vip: false, muted: true })).toEqual({ title: 'Hello', body: '' });
    for (const helper of ['{{#each xs}}x{{/each}}', '{{#with a}}b{{/with}}', '{{lookup a "b"}}', '{{log "x"}}']) {
      expect(() => store.renderInline({ title: 't', body: helper }, { xs: [1], a: { b: 1 } })).toThrow(/content\.body/);
    }
  });

  it('compiles content once however its action_url varies: only the parts that render name it', () => {
    const before = store.compiledInline;
    for (const id of ['a', 'b', 'c']) {
      const content = { title: 'Order {{n}}', body: 'Shipped', action_url: `https://shop.example/orders/${id}` };
      expect(store.renderInline(content, { n: id })).toEqual({ title: `Order ${id}`, body: 'Shipped' });
    }
    expect(store.compiledInline).toBe(before + 1);
  });

  it('renders the same content and data objects once, and other data afresh', () => {
    const content = { title: 'Your code', body: 'Code {{code}}' };
    const data = { code: '1' };
    const first = store.renderInline(content, data);
    expect(store.renderInline(content, data)).toBe(first);
    const other = store.renderInline(content, { code: '2' });
    expect(other).toEqual({ title: 'Your code', body: 'Code 2' });
    // The same data under other content is rendered for that content, not taken from the first.
    expect(store.renderInline({ title: 'T', body: 'Again {{code}}' }, data)).toEqual({ title: 'T', body: 'Again 1' });
    // A failed render is not remembered: it fails again.
    const missing = { title: 'Hi {{name}}', body: 'x' };
    const empty = {};
    expect(() => store.renderInline(missing, empty)).toThrow('data has no "name"');
    expect(() => store.renderInline(missing, empty)).toThrow('data has no "name"');
  });
});
