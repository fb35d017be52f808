import { spawn } from 'node:child_process';
import { publishRequest } from '../runtime/producer.js';
import { benchServers } from './servers.js';
import { freePort } from '../servers/local-servers.js';
import { connectBench, DeliveredWatch, quiesce } from './herald-child.js';
const servers = await benchServers();
const env = { ...servers.env, HERALD_NAMESPACE: 'cost' };
const bench = await connectBench(env);
const { topology, nats, directory } = bench;
const users = []; for (let i = 0; i < 5000; i++) users.push({ type: 'user' as const, tenant: 'measure', id: `u${i}` }, { type: 'user' as const, tenant: 'warm', id: `u${i}` });
await directory.upsert(users);
const port = await freePort();
const args = (process.env.ARGS ?? 'run --workers 1').split(' ');
const herald = spawn('bin/herald.js', args, { env: { ...process.env, ...env, HERALD_HTTP_PORT: String(port) }, stdio: ['ignore', 'ignore', 'inherit'] });
for (;;) { if (await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.ok, () => false)) break; await new Promise((r) => setTimeout(r, 100)); }
const watch = new DeliveredWatch(nats, topology);
const slow: [number, number][] = [];
void (async () => { for await (const m of nats.nc.subscribe(topology.receipt('delivered'))) for (const r of (m.json() as any).receipts) if (r.tenant === 'measure') slow.push([r.ts - r.latency_ms, r.latency_ms]); })();
const metrics = async () => (await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()).split('\n').filter((l) => /eventloop_lag_p99|gc_duration_seconds_(sum|count)|heap_space_size_used|heap_size_used/.test(l) && !l.startsWith('#'));
const N = Number(process.env.N ?? 10000), RATE = 1000;
for (const tenant of ['warm', 'measure']) {
const t0 = performance.now();
for (let i = 0; i < N; i++) { const w = t0 + i * 1000 / RATE - performance.now(); if (w > 0) await new Promise((r) => setTimeout(r, w));
  publishRequest(nats.js, topology, { tenant, idempotency_key: `k${i}`, tier: 'transactional', category: 'otp', content: { title: 'C', body: 'x' }, recipients: { user_ids: [`u${i % 5000}`] }, channels: ['inapp'] }).catch(() => {}); }
await watch.waitFor(tenant, N, 60000);
console.log(tenant, (await metrics()).join('\n'));
}
const l = watch.latencies.get('measure')!.sort((a, b) => a - b);
const start = Math.min(...slow.map((x) => x[0]));
const buckets = new Map<number, number[]>();
for (const [at, l] of slow) { const b = Math.floor((at - start) / 100); if (!buckets.has(b)) buckets.set(b, []); buckets.get(b)!.push(l); }
console.log([...buckets].sort((a, b) => a[0] - b[0]).map(([b, ls]) => `${b}:${Math.max(...ls)}`).join(' '));
console.log('p50', l[Math.floor(N / 2)], 'p99', l[Math.floor(N * 0.99)], 'max', l[N - 1]);
herald.kill('SIGTERM'); await new Promise((r) => herald.on('exit', r)); watch.close(); await bench.close(); await servers.stop(); process.exit(0);
