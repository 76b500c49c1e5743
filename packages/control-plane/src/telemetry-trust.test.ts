// Forged telemetry, sent as a compromised host would: a real agent certificate, the real Sync
// stream, records about other hosts, rules it was never sent, far-future times, garbage
// addresses and oversized events. Only what the agent may speak for is stored.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type AgentServiceClient,
  Direction,
  type FlowRecord,
  type Telemetry,
  Verdict,
} from '@bulkhead/proto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ControlPlane } from './control-plane.js';
import { SyncSession } from './sync-session.test-util.js';
import { enrolAgent, restClient, startTestControlPlane } from './test-support.js';

describe('telemetry from a compromised agent', () => {
  let dir: string;
  let cp: ControlPlane;
  let client: AgentServiceClient | undefined;
  let api: ReturnType<typeof restClient>;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bh-forge-'));
    cp = await startTestControlPlane(dir);
    api = restClient(cp);
  });
  afterEach(async () => {
    client?.close();
    await cp.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const now = Date.now();
  const flow = (f: Partial<FlowRecord>): FlowRecord => ({
    direction: Direction.DIRECTION_INGRESS,
    src: '10.1.0.5',
    dst: '10.0.0.2',
    protocol: 6,
    port: 80,
    verdict: Verdict.VERDICT_ALLOWED,
    ruleId: 'web/ingress/0',
    packets: 1,
    bytes: 60,
    firstSeenUnixMs: now - 60_000,
    lastSeenUnixMs: now - 1_000,
    ...f,
  });
  const batch = (seq: number, t: Partial<Telemetry>): Telemetry => ({
    seq,
    timeUnixMs: now,
    appliedHash: '',
    counters: [],
    flows: [],
    events: [],
    ...t,
  });
  const rejectedMetric = async () => {
    const res = await fetch(`${cp.apiUrl}/metrics`);
    expect(res.status).toBe(200);
    const text = await res.text();
    const counts: Record<string, number> = {};
    for (const m of text.matchAll(
      /^bulkhead_telemetry_rejected_total\{reason="([^"]+)"\} (\d+)$/gm,
    )) {
      counts[m[1]!] = Number(m[2]);
    }
    return counts;
  };

  it('stores only what the agent may speak for, and counts the rest', async () => {
    await api('PUT', '/v1/services/http', { ports: [{ protocol: 'tcp', port: 80 }] });
    await api('PUT', '/v1/policies/web', {
      scope: { matchLabels: { app: 'web' } },
      ingress: [{ action: 'allow', peers: [{ cidr: '10.1.0.0/16' }], services: ['http'] }],
    });
    expect((await api('POST', '/v1/provision', { note: 'web' })).status).toBe(200);
    const agent = await enrolAgent(cp, 'web-1', ['10.0.0.2'], { app: 'web' });
    client = agent.client;
    const s = new SyncSession(client.sync());
    expect((await s.barrier()).ruleSet?.rules.map((r) => r.id)).toEqual(['web/ingress/0']);

    const counter = (ruleId: string) => ({
      ruleId,
      direction: Direction.DIRECTION_INGRESS,
      verdict: Verdict.VERDICT_ALLOWED,
      packets: 5,
      bytes: 300,
    });
    const forged = batch(1, {
      counters: [counter('web/ingress/0'), counter('default'), counter('evil/ingress/0')],
      flows: [
        flow({}),
        // Neither end is this host: an ingress flow to someone else, an egress flow from someone else.
        flow({ src: '10.9.9.9', dst: '10.0.0.99', port: 5432, ruleId: 'default' }),
        flow({ direction: Direction.DIRECTION_EGRESS, src: '10.0.0.99', dst: '10.0.0.2' }),
        flow({ port: 81, ruleId: 'evil/ingress/0' }),
        flow({ port: 82, lastSeenUnixMs: Date.UTC(9999, 0, 1) }),
        flow({ src: 'not-an-ip', port: 83 }),
      ],
      events: [
        { code: 'FLOW_TABLE_FULL', message: 'full', timeUnixMs: now, attributes: {} },
        { code: 'FLOWS_DROPPED', message: 'x'.repeat(1 << 20), timeUnixMs: now, attributes: {} },
      ],
    });
    s.send({ telemetry: forged });
    s.send({ telemetry: forged }); // a resend: counted once, rejected once
    await s.barrier();

    const flows = (await api('GET', '/v1/flows')).json.flows;
    expect(
      flows.map((f: { src: { address: string }; port: number }) => [f.src.address, f.port]),
    ).toEqual([['10.1.0.5', 80]]);
    const counters = (await api('GET', '/v1/counters')).json;
    expect(counters.map((c: { ruleId: string }) => c.ruleId).sort()).toEqual([
      'default',
      'web/ingress/0',
    ]);
    const events = (await api('GET', '/v1/events')).json;
    // The accepted flow is also web-1's first on its (peer, port): an anomaly event.
    expect(events.map((e: { code: string }) => e.code).sort()).toEqual([
      'ANOMALY_NEW_DEPENDENCY',
      'FLOW_TABLE_FULL',
      'TELEMETRY_REJECTED',
    ]);
    const notice = events.find((e: { code: string }) => e.code === 'TELEMETRY_REJECTED');
    expect(notice).toMatchObject({
      agentId: 'control-plane',
      workload: 'web-1',
      attributes: {
        agentId: agent.agentId,
        'foreign-address': '2',
        'unknown-rule': '2',
        'bad-time': '1',
        'bad-address': '1',
        'too-long': '1',
      },
    });
    expect(await rejectedMetric()).toMatchObject({
      'foreign-address': 2,
      'unknown-rule': 2,
      'bad-time': 1,
      'bad-address': 1,
      'too-long': 1,
      'bad-field': 0,
      'too-many': 0,
    });

    // Recommendations see the one real peer only.
    const rec = (await api('POST', '/v1/recommendations', { workload: 'web-1' })).json;
    const text = JSON.stringify(rec);
    expect(text).toContain('10.1.0.5');
    for (const forgedAddress of ['10.9.9.9', '10.0.0.99'])
      expect(text).not.toContain(forgedAddress);

    // More forgery within the minute: counted, but no second event.
    s.send({ telemetry: batch(2, { flows: [flow({ dst: '10.0.0.3' })] }) });
    await s.barrier();
    expect((await rejectedMetric())['foreign-address']).toBe(3);
    const codes = (await api('GET', '/v1/events')).json.map((e: { code: string }) => e.code);
    expect(codes.filter((c: string) => c === 'TELEMETRY_REJECTED')).toHaveLength(1);
    s.stream.end();
  });
});
