import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Kvm } from '@nats-io/kv';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { ApiServer } from '../http/api.js';
import { Cancellations } from '../stores/cancellations.js';
import { createLogger } from '../runtime/logger.js';
import { TemplateStore } from '../runtime/templates.js';
import { ApiKeys } from '../stores/api-keys.js';
import { eventually, Harness } from './harness.js';

/** Debian's chromium (`apt-get install chromium`; .ci/run installs it): no browser download. */
const CHROMIUM = '/usr/bin/chromium';
/** Set to a folder to keep screenshots of the page (for a person to look at; never asserted). */
const SCREENSHOTS = process.env.HERALD_SCREENSHOTS;
const HOUR = 3_600_000;

describe('the reference inbox page (/demo/inbox) in a real browser', () => {
  let h: Harness;
  let api: ApiServer;
  let base: string;
  let tenantKey: string;
  let browser: Browser;
  /** The API's clock: a test moves it to expire a token. */
  let offset = 0;

  const call = async (auth: string, method: string, url: string, body?: unknown) => {
    const res = await fetch(`${base}${url}`, {
      method,
      headers: { authorization: `Bearer ${auth}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : null) as any };
  };
  const userToken = async (user: string) => (await call(tenantKey, 'POST', `/v1/users/${user}/token`, { ttl_seconds: 3_600 })).body.token as string;
  const send = async (user: string, key: string, content: Record<string, string>) => {
    const sent = await call(tenantKey, 'POST', '/v1/notifications', { tier: 'transactional', category: 'orders', content, recipients: { user_ids: [user] }, channels: ['inapp'], idempotency_key: key });
    expect(sent.status).toBe(202);
    return sent.body.id as string;
  };

  /** A fresh browser context on the page for a user; every console error and page error is kept. */
  const openPage = async (user: string, token: string): Promise<{ context: BrowserContext; page: Page; problems: string[]; loads: () => number }> => {
    const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
    const page = await context.newPage();
    const problems: string[] = [];
    let loads = 0;
    page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
    page.on('pageerror', (err) => problems.push(err.message));
    page.on('load', () => { loads++; });
    const res = await page.goto(`${base}/demo/inbox?tenant=acme&user=${user}&token=${encodeURIComponent(token)}`);
    expect(res?.status()).toBe(200);
    return { context, page, problems, loads: () => loads };
  };
  const badge = async (page: Page) => {
    const b = page.locator('#badge');
    return { visible: await b.isVisible(), text: await b.textContent(), label: await b.getAttribute('aria-label') };
  };
  const shoot = async (page: Page, name: string) => {
    if (SCREENSHOTS) await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
  };

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`no ${CHROMIUM}: install Debian's chromium (apt-get install -y chromium), as .ci/run does`);
    h = await Harness.create('inbox_page');
    await h.load(['ada', 'bob', 'cy', 'dee'].map((id) => ({ type: 'user' as const, tenant: 'acme', id, email: `${id}@acme.test` })));
    await h.start();
    api = new ApiServer({
      keys: new ApiKeys(h.redis, h.topology.keys), redis: h.redis, js: h.nats.js, topology: h.topology,
      templates: new TemplateStore(h.config.templatesDir), log: createLogger('silent'),
      cancellations: new Cancellations(await new Kvm(h.nats.js).open(h.topology.kvBucket('cancellations'))),
      clickhouse: { client: h.clickhouse, database: h.config.clickhouseDatabase }, nc: h.nats.nc,
      now: () => Date.now() + offset, userTokenRatePerSecond: 1_000,
    });
    base = `http://127.0.0.1:${await api.listen('127.0.0.1', 0)}`;
    tenantKey = (await new ApiKeys(h.redis, h.topology.keys).create({ tenant: 'acme', scopes: ['send', 'read', 'directory'], ratePerSecond: 10_000 })).secret;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    await api?.close();
    await h?.close();
  });

  it('is one self-contained page under a strict policy, public (the token it is given is its credential)', async () => {
    const res = await fetch(`${base}/demo/inbox`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    const csp = res.headers.get('content-security-policy') ?? '';
    expect(csp).toMatch(/default-src 'none'/);
    expect(csp).toMatch(/script-src 'sha256-[A-Za-z0-9+/=]+'(;|$)/);
    expect(csp).toMatch(/style-src 'sha256-[A-Za-z0-9+/=]+'(;|$)/);
    expect(csp).toMatch(/connect-src 'self'/);
    expect(res.headers.get('referrer-policy')).toBe('no-referrer');
    const html = await res.text();
    // Nothing is fetched from elsewhere: no src or href attributes at all, no stylesheet links.
    expect(html).not.toMatch(/\s(src|href)=/);
  });

  it('shows a delivered notification live with the badge at 1; a click marks it read (badge gone), opens its link and makes read and clicked receipts', async () => {
    const { context, page, problems, loads } = await openPage('ada', await userToken('ada'));
    // The stream is subscribed once the page says it is live (its first counts event).
    await page.locator('#live[data-state="live"]').waitFor();
    await eventually(async () => !(await page.locator('#empty').isHidden()), 'the empty feed');
    expect(await badge(page)).toMatchObject({ visible: false });

    const actionUrl = `${base}/v1/docs?from=inbox`;
    const id = await send('ada', 'page-1', { title: 'Your order shipped', body: 'Order #1042 is on its way.', action_url: actionUrl });
    const item = page.locator(`button.item[data-id="${id}"]`);
    await eventually(() => item.isVisible(), 'the notification in the feed, without a reload');
    await eventually(async () => (await badge(page)).text === '1', 'the badge at 1');
    expect(await badge(page)).toEqual({ visible: true, text: '1', label: '1 unread notification' });
    expect(await item.getAttribute('class')).toMatch(/\bunread\b/);
    expect(await item.locator('.title').textContent()).toBe('Your order shipped');
    expect(await item.locator('.body').textContent()).toBe('Order #1042 is on its way.');
    expect(await page.locator('#bell').getAttribute('aria-label')).toBe('Notifications, 1 unread');
    expect(loads()).toBe(1);
    await shoot(page, 'inbox-unread');

    // The click is recorded, then the link opens in a new tab.
    const popup = context.waitForEvent('page');
    await item.click();
    expect((await popup).url()).toBe(actionUrl);
    await eventually(async () => !(await badge(page)).visible, 'the badge gone after the click');
    expect(await badge(page)).toMatchObject({ visible: false, label: 'no unread notifications' });
    await eventually(async () => /\bread\b/.test((await item.getAttribute('class')) ?? ''), 'the item shown read');
    expect(loads()).toBe(1);
    await shoot(page, 'inbox-read');

    const rows = await eventually(async () => {
      const r = await h.receipts(`request_id = '${id}' AND stage = 'inbox' AND user_id = 'ada' AND status IN ('read', 'clicked')`);
      return r.length >= 2 ? r : null;
    }, 'read and clicked receipts in ClickHouse', 20_000);
    expect(rows.map((r) => r.status).sort()).toEqual(['clicked', 'read']);
    expect(rows.every((r) => r.channel === 'inapp' && r.tenant === 'acme' && r.category === 'orders')).toBe(true);
    // The page kept to its policy: no violation, no script error.
    expect(problems).toEqual([]);
    await context.close();
  });

  it('marks all read with its button and pages older items with "Load more", each once', async () => {
    const ids = Array.from({ length: 25 }, (_, i) => `older-${String(i).padStart(2, '0')}`);
    const at = Date.now() - HOUR;
    await h.inbox.write('acme', ids.map((id) => ({ locale: 'en', content: { id, category: 'digest', tier: 'social', title: `Digest ${id}`, body: 'b', created_at: at } })),
      ids.map((requestId, i) => ({ userId: 'bob', locale: 'en', requestId, createdAt: at + i })));
    const { context, page, problems } = await openPage('bob', await userToken('bob'));
    await page.locator('#live[data-state="live"]').waitFor();
    await eventually(async () => (await page.locator('button.item').count()) === 20, 'the first page');
    expect(await badge(page)).toMatchObject({ visible: true, text: '25' });
    await page.getByRole('button', { name: 'Load more' }).click();
    await eventually(async () => (await page.locator('button.item').count()) === 25, 'the second page');
    expect(await page.locator('button.item').evaluateAll((els) => els.map((e) => e.getAttribute('data-id')))).toEqual([...ids].reverse());
    expect(await page.locator('#more').isHidden()).toBe(true);
    await shoot(page, 'inbox-paged');

    await page.getByRole('button', { name: 'Mark all read' }).click();
    await eventually(async () => !(await badge(page)).visible, 'the badge gone after mark all read');
    expect(await page.locator('button.item.unread').count()).toBe(0);
    expect((await call(tenantKey, 'GET', '/v1/users/bob/notifications')).body.counts.unread).toBe(0);
    expect(problems).toEqual([]);
    await context.close();
  });

  it('says so when its token has expired', async () => {
    const token = await userToken('cy');
    offset = 2 * HOUR;
    try {
      const { context, page } = await openPage('cy', token);
      const error = page.locator('#error');
      await eventually(() => error.isVisible(), 'the error message');
      expect(await error.textContent()).toMatch(/token is missing, invalid or expired[\s\S]*herald keys user-token --tenant acme --user cy/);
      await eventually(async () => (await page.locator('#live').getAttribute('data-state')) === 'closed', 'the stream shown offline');
      await shoot(page, 'inbox-expired');
      await context.close();
    } finally {
      offset = 0;
    }
  });
});
