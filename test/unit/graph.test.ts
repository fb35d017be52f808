import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { describeGraph, pipelineGraph, topologyOf } from '../../pipeline/graph.js';

const readme = fs.readFileSync(path.join(import.meta.dirname, '..', '..', 'README.md'), 'utf8');
const config = { namespace: '', storageBudgetBytes: 1024 ** 3, replicas: 1, ackWaitMs: 30_000 };

describe('the pipeline graph', () => {
  it('is what the README\'s "How it is built" shows', () => {
    const block = /<!-- graph:begin[^>]*-->\n```\n([\s\S]*?)\n```\n<!-- graph:end -->/.exec(readme)?.[1];
    expect(block).toBe(describeGraph(pipelineGraph('chained'), 'chained').join('\n'));
  });

  it('gives every node a consumer on its own subject per tier, in either wiring', () => {
    for (const wiring of ['chained', 'split'] as const) {
      const topology = topologyOf({ ...config, wiring });
      const durables = topology.consumers().map((c) => `${c.config.durable_name} ${c.config.filter_subject}`);
      // An intake holds both forms of its tier's request subject; its consumer reads it whole (no filter).
      expect(durables).toContain('validate_social undefined');
      expect(durables).toContain('resolve_social notify.validated.social');
      expect(durables).toContain('filter_marketing notify.resolved.marketing');
      expect(durables).toContain('wake_transactional notify.deferred.transactional');
      expect(durables).toContain('schedule_marketing notify.scheduled.marketing');
      expect(durables).toContain('dispatch_push_social notify.deliver.push.social');
      expect(durables).toContain('loader notify.receipt.*');
      expect(durables).toContain('tracker notify.receipt.*');
      // 7 tiered nodes (dispatch 4 partitions → 10 consumers) × 3 tiers + the loader and the tracker.
      expect(durables).toHaveLength(10 * 3 + 2);
      // Held work never counts against a cap that due work needs.
      const held = topology.consumers().filter((c) => /^(schedule|wake)_/.test(c.config.durable_name!));
      expect(held.map((c) => c.config.max_ack_pending)).toEqual(Array(6).fill(-1));
    }
  });

  it('puts every work node\'s subject in its tier\'s stream', () => {
    const [, social] = topologyOf(config).streams().filter((s) => s.name?.startsWith('WORK_'));
    expect(social.subjects).toEqual(['notify.validated.social', 'notify.resolved.social', 'notify.scheduled.social', 'notify.deferred.social', 'notify.filtered.social', 'notify.deliver.*.social']);
  });
});
