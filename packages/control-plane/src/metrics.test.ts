// The control plane's `GET /metrics` as Prometheus sees it: a real control plane, one agent
// enrolled and synced over the real gRPC stream, a refused enrolment, a flow reported, REST
// calls; the scrape must pass `promtool check metrics` and the counts must have moved.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentServiceClient, Direction, Verdict } from '@bulkhead/proto';
import { credentials } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ControlPlane } from './control-plane.js';
import { SyncSession } from './sync-session.test-util.js';
import { enrolAgent, makeCsr, restClient, samples, startTestControlPlane } from './test-support.js';

// Found as the deploy checks find it (test/deploy/tools.ts): scripts/setup.sh puts it in .tools/
// when the machine has none; missing, the test fails (Debian's prometheus package has it).
const LOCAL_PROMTOOL = join(dirname(fileURLToPath(import.meta.url)), '../../../.tools/promtool');
const PROMTOOL = existsSync(LOCAL_PROMTOOL) ? LOCAL_PROMTOOL : 'promtool';

describe('control-plane metrics', () => {
  let dir: string;
  let cp: ControlPlane;
  let scrape: () => Promise<string>;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bh-metrics-'));
    cp = await startTestControlPlane(dir);
    scrape = async () => (await fetch(`${cp.apiUrl}/metrics`)).text();
  });
  afterAll(async () => {
    await cp.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('pass promtool check metrics and count agents, propagation, errors, flows and API calls', async () => {
    const before = samples(await scrape());
    expect(before.get('bulkhead_agents{state="connected"}')).toBe(0);
    expect(before.get('bulkhead_policy_propagation_seconds_count')).toBe(0);

    const { client } = await enrolAgent(cp, 'web-1', ['10.0.0.2']);
    const session = new SyncSession(client.sync());
    session.hello();
    const full = await session.next();
    session.send({
      ack: { revision: full.revision, hash: full.hash, ok: true, error: '', applyMicros: 5 },
    });
    const now = Date.now();
    session.send({
      telemetry: {
        seq: 1,
        timeUnixMs: now,
        appliedHash: full.hash,
        counters: [],
        events: [],
        flows: [
          {
            direction: Direction.DIRECTION_INGRESS,
            src: '10.1.0.5',
            dst: '10.0.0.2',
            protocol: 6,
            port: 5432,
            verdict: Verdict.VERDICT_WOULD_DENY,
            ruleId: 'default',
            packets: 1,
            bytes: 60,
            firstSeenUnixMs: now - 1_000,
            lastSeenUnixMs: now,
          },
        ],
      },
    });
    // Messages on a stream are handled in order: once the barrier's full sync is back, the
    // ack and the telemetry before it were counted.
    await session.barrier();

    const { csrPem } = await makeCsr('intruder');
    const anonymous = new AgentServiceClient(
      `127.0.0.1:${cp.grpcPort}`,
      credentials.createSsl(Buffer.from(cp.caPem)),
    );
    const refused = await new Promise<unknown>((resolve) =>
      anonymous.enroll(
        {
          bootstrapToken: 'wrong',
          hostname: 'x',
          addresses: [],
          labels: {},
          csrPem,
          agentVersion: 't',
        },
        (err) => resolve(err),
      ),
    );
    anonymous.close();
    expect(refused).toBeTruthy();
    expect((await restClient(cp)('GET', '/v1/agents')).status).toBe(200);

    const text = await scrape();
    session.stream.end();
    client.close();
    const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(r.error, 'promtool missing: scripts/setup.sh gets it').toBeUndefined();
    expect(r.status, r.stdout + r.stderr).toBe(0);
    // promtool prints lint findings and still exits 0 for some of them.
    expect(r.stdout + r.stderr).toBe('');

    const after = samples(text);
    expect(after.get('bulkhead_agents{state="connected"}')).toBe(1);
    expect(after.get('bulkhead_agents{state="in_sync"}')).toBe(1);
    expect(after.get('bulkhead_policy_propagation_seconds_count')).toBe(1);
    expect(after.get('bulkhead_enrolment_errors_total{code="UNAUTHENTICATED"}')).toBe(1);
    expect(after.get('bulkhead_flows_ingested_total')).toBe(1);
    expect(after.get('bulkhead_flow_rows')).toBe(1);
    // Written before the barrier's answer: nothing left behind.
    expect(after.get('bulkhead_telemetry_ingest_queued_records')).toBe(0);
    expect(after.get('bulkhead_telemetry_ingest_waiting_messages')).toBe(0);
    expect(after.get('bulkhead_store_database_bytes')).toBeGreaterThan(0);
    expect(
      after.get(
        'bulkhead_api_request_duration_seconds_count{method="GET",route="/v1/agents",status="200"}',
      ),
    ).toBe(1);
  });
});
