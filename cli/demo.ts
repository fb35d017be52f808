import fs from 'node:fs';
import path from 'node:path';
import { publishRequest } from '../runtime/producer.js';
import { requestSchema } from '../schemas/index.js';
import { InboxStore } from '../stores/inbox.js';
import { UserTokens } from '../stores/user-tokens.js';
import type { Pipeline } from '../pipeline/host.js';
import { formatFunnel, queryFunnel } from './funnel.js';
import { projectRoot } from '../runtime/root.js';

const sampleRequest = path.join(projectRoot, 'compose', 'sample-request.json');

async function until<T>(check: () => Promise<T | undefined>, timeoutMs: number): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const v = await check();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 200));
  }
  return undefined;
}

/**
 * For a newcomer: publishes the sample request and shows the inbox, the mailbox and the funnel, and
 * (when the API is served at `apiBase`) a link to the inbox page of the first recipient.
 */
export async function runDemo(pipeline: Pipeline, apiBase?: string): Promise<void> {
  const out = (s: string) => process.stdout.write(`${s}\n`);
  const started = Date.now();
  const request = requestSchema.parse({
    ...JSON.parse(fs.readFileSync(sampleRequest, 'utf8')),
    idempotency_key: `welcome-demo-${started}`,
  });
  const ack = await publishRequest(pipeline.nats.js, pipeline.topology, request);
  out(`\n== demo: published a welcome notification to ${pipeline.topology.request(request.tier, request.tenant)} (seq ${ack.seq})`);

  const inbox = new InboxStore(pipeline.redis, pipeline.topology.keys);
  const userIds = request.recipients.user_ids ?? [];
  const entries = await until(async () => {
    const lists = await Promise.all(userIds.map((u) => inbox.list(request.tenant, u, 1)));
    return lists.every((l) => l.length && l[0].created_at >= started - 5_000) ? lists : undefined;
  }, 20_000);
  out('== in-app inboxes (herald inbox USER --tenant demo):');
  userIds.forEach((u, i) => out(`   ${u}: ${entries?.[i]?.[0] ? `"${entries[i][0].title}"` : '(nothing yet)'}`));

  // Email, push and SMS arrive on their own consumers: give them a moment to land.
  await until(async () => {
    const fakes = Object.values(pipeline.providers?.fakes ?? {});
    const mailed = (pipeline.catcher?.messages.filter((m) => m.received_at >= started).length ?? 1) > 0;
    return mailed && fakes.every((f) => f.script.delivered().some((r) => r.at >= started)) ? true : undefined;
  }, 10_000);
  const mails = pipeline.catcher?.messages.filter((m) => m.received_at >= started) ?? [];
  out(`== local mailbox (herald mailbox): ${mails.length} new email(s)`);
  for (const m of mails) out(`   to ${m.to.join(', ')}: "${m.subject}"`);
  if (!pipeline.catcher) out('   (email went to SMTP_URL or to another Herald process\'s catcher)');

  const fakes = pipeline.providers?.fakes ?? {};
  for (const [name, fake] of Object.entries(fakes)) {
    const got = fake?.script.delivered().filter((r) => r.at >= started) ?? [];
    out(`== sandbox ${name} (herald sandbox ${name}): ${got.length} delivered`);
    for (const r of got) out(`   to ${r.target.slice(0, 24)}: ${JSON.stringify(r.body).slice(0, 110)}`);
  }

  // Print the funnel once every delivery seen above has its receipt in ClickHouse (not before).
  const seen = (entries?.filter((l) => l.length).length ?? 0) + mails.length
    + Object.values(fakes).reduce((n, f) => n + (f?.script.delivered().filter((r) => r.at >= started).length ?? 0), 0);
  const rows = await until(async () => {
    const r = await queryFunnel(pipeline.clickhouse, pipeline.config.clickhouseDatabase, started - 60_000);
    return r.reduce((n, x) => n + x.delivered, 0) >= seen ? r : undefined;
  }, 30_000);
  out('== funnel since the demo started (herald funnel --since 5m):');
  out(rows ? formatFunnel(rows).split('\n').map((l) => `   ${l}`).join('\n') : '   (receipts not in ClickHouse yet)');
  if (apiBase && userIds[0]) {
    // A token valid for a day, as an app's backend would mint it for a signed-in user.
    const { token } = await new UserTokens(pipeline.redis, pipeline.topology.keys).mint(request.tenant, userIds[0], 86_400);
    out(`== ${userIds[0]}'s inbox in a browser (live: publish again and watch the bell):`);
    out(`   ${apiBase}/demo/inbox?tenant=${encodeURIComponent(request.tenant)}&user=${encodeURIComponent(userIds[0])}&token=${token}`);
  }
  out('\nHerald keeps running; publish more with `herald publish FILE.json`. Ctrl-C stops it.\n');
}
