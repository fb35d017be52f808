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
});
