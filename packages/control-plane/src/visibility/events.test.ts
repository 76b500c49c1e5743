// GET /v1/events: what agents reported and what the control plane saw (anomalies), filtered by
// kind, workload and time; anomalies raised from ingested telemetry as the agents report it.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createRestHarness, type RestHarness } from '../rest.test-util.js';

describe('GET /v1/events', () => {
  let h: RestHarness;
  beforeEach(async () => {
    h = await createRestHarness([
      ['web', '10.0.0.1', { app: 'web' }],
      ['db', '10.0.0.2', { app: 'db' }],
    ]);
  });
  afterEach(() => h.close());

  const events = async (query = '') => {
    const res = await h.call('GET', `/v1/events${query}`);
    expect(res.statusCode, res.body).toBe(200);
    return res.json() as { code: string; workload: string; agentId: string; at: string }[];
  };
  const pg = { direction: 'ingress', src: '10.0.0.1', dst: '10.0.0.2', port: 5432 } as const;

  it('shows a first-seen dependency beside the agents events, once, and filters them', async () => {
    h.observe(
      'db',
      [pg],
      [
        {
          code: 'DATAPLANE_TAMPERED',
          message: 'table changed',
          at: new Date().toISOString(),
          attributes: {},
        },
      ],
    );
    h.observe('db', [pg]); // seen: nothing new
    h.observe('web', [{ ...pg, direction: 'egress' }]);
    expect((await events()).map((e) => [e.workload, e.code])).toEqual([
      ['web', 'ANOMALY_NEW_DEPENDENCY'],
      ['db', 'ANOMALY_NEW_DEPENDENCY'],
      ['db', 'DATAPLANE_TAMPERED'],
    ]);
    const anomaly = await events('?kind=anomaly_new_dependency&workload=db');
    expect(anomaly).toEqual([
      expect.objectContaining({
        agentId: 'control-plane',
        attributes: expect.objectContaining({ peer: '10.0.0.1', port: '5432' }),
      }),
    ]);
    expect(await events('?kind=DATAPLANE_TAMPERED')).toHaveLength(1);
    const audit = (await h.call('GET', '/v1/audit')).json() as { action: string; target: string }[];
    expect(audit.filter((a) => a.action === 'anomaly').map((a) => a.target)).toEqual(['web', 'db']);
    const later = new Date(Date.now() + 60_000).toISOString();
    expect(await events(`?since=${later}`)).toEqual([]);
    const bad = await h.call('GET', '/v1/events?since=yesterday');
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.details[0].path).toBe('since');
  });

  it('reports denies right after a revision, naming the revision and the flow', async () => {
    expect((await h.call('POST', '/v1/provision', { note: 'first' })).statusCode).toBe(200);
    h.observe('db', [{ ...pg, verdict: 'denied', connections: 4 }]);
    const [e] = await events('?kind=ANOMALY_DENIES_AFTER_REVISION');
    expect(e).toMatchObject({
      workload: 'db',
      attributes: {
        revision: '1',
        connections: '4',
        flows: '10.0.0.1 -> 10.0.0.2 6/5432 (no rule)',
      },
    });
  });
});
