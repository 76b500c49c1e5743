// The agent in-process against a real gRPC server on 127.0.0.1 (TLS with a test CA) and the
// kernel-like fake nftables: enrolment, Hello, apply + ack, telemetry, reconnect, restart.
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFakeNft, type FakeNft } from '@bulkhead/nftables/testing';
import { Direction, Mode, type PolicyUpdate, type SyncRequest, Verdict } from '@bulkhead/proto';
import { pino } from 'pino';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type Agent, createAgent } from './agent.js';
import {
  startControlPlane,
  type TestControlPlane,
  testAgentOptions,
  until,
} from './control-plane.test-util.js';
import { chunked } from './delta.test-util.js';
import { fixtureChain, fixtureUpdate, refusedUpdate } from './fixture.test-util.js';

describe('agent', () => {
  let cp: TestControlPlane;
  let stateDir: string;
  let kernel: FakeNft;
  const agents: Agent[] = [];
  const logger = pino({ level: process.env.AGENT_TEST_LOG ?? 'silent' });

  beforeAll(async () => {
    // Fresh per file; each test below reuses the server and clears what it recorded.
    cp = await startControlPlane();
    return () => cp.stop();
  });
  beforeEach(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'bulkhead-agent-'));
    kernel = createFakeNft();
    cp.reset();
  });
  afterEach(async () => {
    await Promise.all(agents.splice(0).map((a) => a.stop()));
    await rm(stateDir, { recursive: true, force: true });
  });

  function agent(token: string | null = 'tok-1'): Agent {
    const a = createAgent(testAgentOptions(cp, { stateDir, kernel, logger, token }));
    agents.push(a);
    return a;
  }

  const of = <K extends keyof SyncRequest>(kind: K) => cp.of(kind);

  it('enrols once, syncs, applies and acks, streams telemetry, reconnects', async () => {
    const a = agent();
    await a.start();
    await until(() => of('hello').length === 1, 'hello');
    expect(cp.enrolls).toHaveLength(1);
    expect(cp.enrolls[0]).toMatchObject({
      bootstrapToken: 'tok-1',
      hostname: 'web-1.test',
      labels: { app: 'web' },
    });
    expect(cp.enrolls[0]!.csrPem).toContain('BEGIN CERTIFICATE REQUEST');
    expect((await stat(join(stateDir, 'agent.key'))).mode & 0o777).toBe(0o600);
    expect((await readFile(join(stateDir, 'agent-id'), 'utf8')).trim()).toBe('agent-1');
    expect(of('hello')[0]).toMatchObject({
      appliedRevision: 0,
      appliedHash: '',
      hostname: 'web-1.test',
    });

    const rs = fixtureUpdate(Mode.MODE_ENFORCE, 7);
    cp.streams[0]!.write({ update: rs });
    await until(() => of('ack').length === 1, 'ack');
    expect(of('ack')[0]).toMatchObject({ revision: 7, hash: rs.hash, ok: true, error: '' });
    expect(kernel.dump().some((o) => 'set' in o)).toBe(true);

    // A RuleSet nftables refuses: nack, old rules stay.
    const bad = refusedUpdate(Mode.MODE_MONITOR, 8);
    cp.streams[0]!.write({ update: bad });
    await until(() => of('ack').length === 2, 'second ack');
    expect(of('ack')[1]).toMatchObject({ revision: 8, ok: false });
    expect(of('ack')[1]!.error).not.toBe('');
    expect(a.dataplane.applied?.revision).toBe(7);

    kernel.setCounter(`${fixtureChain(2)}_allowed`, 3, 300);
    await until(
      () => of('telemetry').some((t) => t.counters.some((c) => c.ruleId === 'web/ingress/0')),
      'telemetry with the counter',
    );
    const seqs = of('telemetry').map((t) => t.seq);
    expect(seqs).toEqual(seqs.map((_, i) => i + 1));
    const total = of('telemetry')
      .flatMap((t) => t.counters)
      .filter((c) => c.ruleId === 'web/ingress/0')
      .reduce((n, c) => n + c.packets, 0);
    expect(total).toBe(3);

    // A new connection recorded by the kernel goes out as a FlowRecord in a later batch.
    kernel.packetAdd('flows_in4', { concat: ['10.0.0.5', '10.0.9.1', 6, 80, 3] }, 60);
    await until(() => of('telemetry').some((t) => t.flows.length > 0), 'telemetry with a flow');
    expect(of('telemetry').flatMap((t) => t.flows)).toEqual([
      expect.objectContaining({
        direction: Direction.DIRECTION_INGRESS,
        src: '10.0.0.5',
        dst: '10.0.9.1',
        protocol: 6,
        port: 80,
        verdict: Verdict.VERDICT_ALLOWED,
        ruleId: 'web/ingress/0',
        packets: 1,
        bytes: 60,
      }),
    ]);

    const metrics = await (
      await fetch(`http://127.0.0.1:${a.metricsAddress!.port}/metrics`)
    ).text();
    expect(metrics).toContain(
      'bulkhead_rule_packets_total{rule_id="web/ingress/0",direction="ingress",verdict="allowed"} 3',
    );
    expect(metrics).toMatch(/bulkhead_ruleset_revision 7\b/);
    // The refused update is retried with backoff (each refusal counted), never applied.
    expect(
      Number(/^bulkhead_apply_failures_total (\d+)$/m.exec(metrics)?.[1]),
    ).toBeGreaterThanOrEqual(1);
    expect(metrics).toMatch(/bulkhead_control_plane_connected 1\b/);
    expect(metrics).toContain(
      'bulkhead_flows_observed_total{direction="ingress",verdict="allowed"} 1',
    );

    // The control plane drops the stream: the agent comes back and says what it holds.
    cp.streams[0]!.end();
    await until(() => of('hello').length === 2, 'hello after reconnect');
    expect(of('hello')[1]).toMatchObject({ appliedRevision: 7, appliedHash: rs.hash });
    expect(cp.enrolls).toHaveLength(1);
  });

  it('a restart keeps the rules, needs no token, and continues the telemetry seq', async () => {
    const first = agent();
    await first.start();
    await until(() => cp.streams.length === 1, 'stream');
    cp.streams[0]!.write({ update: fixtureUpdate(Mode.MODE_ENFORCE, 3) });
    await until(() => of('ack').length === 1 && of('telemetry').length >= 2, 'ack and telemetry');
    await first.stop();
    const lastSeq = Math.max(...of('telemetry').map((t) => t.seq));
    const table = kernel.dump();
    expect(table.some((o) => 'set' in o)).toBe(true); // stop() flushed nothing

    cp.received.length = 0;
    const second = agent(null);
    await second.start();
    expect(kernel.dump()).toEqual(table); // restore found the same rendering in the kernel
    await until(
      () => of('hello').length === 1 && of('telemetry').length >= 1,
      'hello and telemetry',
    );
    expect(of('hello')[0]).toMatchObject({ appliedRevision: 3 });
    expect(of('telemetry')[0]!.seq).toBe(lastSeq + 1);
    expect(cp.enrolls).toHaveLength(1);
  });

  it('updates per the wiring contract: chunks, deltas, base mismatch, refusal', async () => {
    const a = agent();
    // The applies' batches (the flow drain's generation switch also commits batches on ticks).
    const batches: number[] = [];
    const apply = kernel.apply.bind(kernel);
    kernel.apply = (tx) => {
      batches.push(tx.commands.length);
      return apply(tx);
    };
    await a.start();
    await until(() => cp.streams.length === 1, 'stream');
    const send = (u: PolicyUpdate[]) => {
      for (const chunk of u) cp.streams[0]!.write({ update: chunk });
    };
    // A full sync in many chunks: applied once, when the last arrives, acked once.
    const full = fixtureUpdate(Mode.MODE_ENFORCE, 3);
    const parts = chunked(full, 1);
    expect(parts.length).toBeGreaterThan(4);
    send(parts.slice(0, -1));
    await new Promise((r) => setTimeout(r, 100));
    expect(of('ack')).toHaveLength(0);
    send(parts.slice(-1));
    await until(() => of('ack').length === 1, 'ack of the full sync');
    expect(of('ack')[0]).toMatchObject({ revision: 3, hash: 'hash-3', ok: true });
    expect(batches.filter((n) => n > 10)).toHaveLength(1); // the full sync, in one batch

    // A delta on the current hash: one group changes.
    const delta = (base: string, hash: string, revision: number, added: string): PolicyUpdate => ({
      baseHash: base,
      hash,
      revision,
      full: false,
      last: true,
      ruleSet: undefined,
      groups: [
        {
          id: 'sel:web',
          created: false,
          deleted: false,
          added: [{ from: added, to: added }],
          removed: [],
        },
      ],
    });
    send([delta('hash-3', 'hash-4', 4, '10.0.7.1')]);
    await until(() => of('ack').length === 2, 'ack of the delta');
    expect(of('ack')[1]).toMatchObject({ revision: 4, hash: 'hash-4', ok: true });
    expect(a.dataplane.applied?.hash).toBe('hash-4');

    // A delta on another base: dropped, no ack, a new Hello with what the agent holds.
    send([delta('hash-3', 'hash-5', 5, '10.0.7.2')]);
    await until(() => of('hello').length === 2, 'hello after a base mismatch');
    expect(of('hello')[1]).toMatchObject({ appliedRevision: 4, appliedHash: 'hash-4' });
    expect(of('ack')).toHaveLength(2);

    // A delta that does not fit (the range is already there): nack, then a new Hello.
    send([delta('hash-4', 'hash-6', 6, '10.0.7.1')]);
    await until(() => of('hello').length === 3, 'hello after a refusal');
    expect(of('ack')[2]).toMatchObject({ revision: 6, hash: 'hash-6', ok: false });
    expect(of('ack')[2]!.error).toContain('10.0.7.1');
    expect(a.dataplane.applied?.hash).toBe('hash-4');
    expect(of('hello')[2]).toMatchObject({ appliedHash: 'hash-4' });
  });

  it('refuses to start with neither identity nor token', async () => {
    await expect(agent(null).start()).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
  });
});
