import type { RolloutView } from '@bulkhead/api';
import { describe, expect, it } from 'vitest';
import type { Answer, Recorded } from './fake-api.js';
import { useCliFixture } from './test-util.js';

const fx = useCliFixture({ prefix: 'bulkhead-rollout-', now: new Date('2026-06-10T12:00:00Z') });
const cli = (argv: string[]) => fx.connected(argv);
function route(routes: Record<string, Answer>): void {
  fx.api.override = (r: Recorded) => routes[`${r.method} ${r.url.split('?')[0]}`];
}

const HELD: RolloutView = {
  id: 4,
  revision: 12,
  baseRevision: 11,
  note: 'drop cache',
  actor: 'admin',
  status: 'held',
  waves: [['db'], ['cache', 'web']],
  wave: 1,
  waveStartedAt: '2026-06-10T11:59:00.000Z',
  watchSeconds: 600,
  rolledBack: ['cache'],
  hold: {
    at: '2026-06-10T11:59:30.000Z',
    message: 'revision 12 denied 1 flow that worked before wave 1: ...',
    flows: [],
  },
  createdAt: '2026-06-10T11:50:00.000Z',
  updatedAt: '2026-06-10T11:59:30.000Z',
};

describe('rollout', () => {
  it('start sends the canary, waves and the watch window in seconds', async () => {
    route({ 'POST /v1/rollouts': { status: 200, body: { ...HELD, status: 'running' } } });
    const out = await cli([
      ...['rollout', 'start', '--note', 'drop cache', '--canary', 'app=db'],
      ...['--waves', '1', '--watch', '10m', '--confirm'],
    ]);
    expect(out.code, out.stderr).toBe(0);
    expect(fx.api.requests[0]!.body).toEqual({
      note: 'drop cache',
      canary: 'app=db',
      waves: 1,
      watchSeconds: 600,
      confirm: true,
    });
    expect(out.stdout).toContain('rollout 4: revision 12 (from 11) running');
    expect(out.stdout).toContain('> wave 1: cache, web');
  });

  it('start is impact-checked (exit 4) and refuses --canary with --percent (exit 2, nothing sent)', async () => {
    route({
      'POST /v1/rollouts': {
        status: 409,
        body: {
          error: { code: 'IMPACT_CONFIRMATION_REQUIRED', message: 'would block', details: [] },
        },
      },
    });
    const refused = await cli(['rollout', 'start', '--note', 'x', '--percent', '10']);
    expect(refused.code).toBe(4);
    expect(refused.stderr).toContain('re-run with --confirm to start the rollout anyway');
    const both = await cli([
      'rollout',
      'start',
      '--note',
      'x',
      '--percent',
      '10',
      '--canary',
      'a=b',
    ]);
    expect(both.code).toBe(2);
    expect((await cli(['rollout', 'start', '--note', 'x', '--percent', '101'])).code).toBe(2);
    expect(fx.api.requests).toHaveLength(1);
  });

  it('status says why the rollout holds and which workloads went back', async () => {
    route({ 'GET /v1/rollouts/current': { status: 200, body: HELD } });
    const out = await cli(['rollout', 'status']);
    expect(out.code).toBe(0);
    expect(out.stdout).toContain('held');
    expect(out.stdout).toContain('rolled back: cache');
    expect(out.stdout).toContain('held at 2026-06-10T11:59:30.000Z: revision 12 denied 1 flow');
  });

  it('pause, resume and abort post to the current rollout', async () => {
    route({
      'POST /v1/rollouts/current/pause': { status: 200, body: { ...HELD, status: 'paused' } },
      'POST /v1/rollouts/current/resume': { status: 200, body: { ...HELD, status: 'running' } },
      'POST /v1/rollouts/current/abort': {
        status: 200,
        body: { ...HELD, status: 'aborted', endRevision: 13 },
      },
    });
    for (const verb of ['pause', 'resume', 'abort'])
      expect((await cli(['rollout', verb])).code).toBe(0);
    expect(fx.api.requests.map((r) => r.url)).toEqual([
      '/v1/rollouts/current/pause',
      '/v1/rollouts/current/resume',
      '/v1/rollouts/current/abort',
    ]);
  });
});
