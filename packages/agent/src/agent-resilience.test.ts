// The agent against a real gRPC server on loopback that moves, is one of several addresses,
// or is away for a while, or too busy to read: it finds the control plane again, and telemetry
// collected meanwhile arrives once (counted by seq, as the control plane does), or is counted
// as dropped.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NftError, type Transaction } from '@bulkhead/nftables';
import { createFakeNft, type FakeNft } from '@bulkhead/nftables/testing';
import { Mode, type SyncRequest, type SyncResponse, type Telemetry } from '@bulkhead/proto';
import type { ServerDuplexStream } from '@grpc/grpc-js';
import { pino } from 'pino';
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { type Agent, type AgentOptions, createAgent } from './agent.js';
import {
  startControlPlane,
  type TestControlPlane,
  testAgentOptions,
  until,
} from './control-plane.test-util.js';
import { fixtureUpdate } from './fixture.test-util.js';
import { FLOWS_DROPPED } from './flow-buffer.js';
import { FLOW_GEN_SET, ruleChain } from './render.js';

/** The fixture rule the tests count on. */
const WEB_IN = 'web/ingress/0';
/** Its flow code in the kernel's flow sets: its place among the fixture's rules, from 1. */
const WEB_IN_CODE = 3;

/** What the control plane counts: the first batch of each seq, later copies ignored. */
function countedOnce(batches: Telemetry[]): Telemetry[] {
  const seen = new Set<number>();
  return batches.filter((t) => !seen.has(t.seq) && seen.add(t.seq));
}

const packetsOf = (batches: Telemetry[], ruleId: string) =>
  batches
    .flatMap((t) => t.counters)
    .filter((c) => c.ruleId === ruleId)
    .reduce((n, c) => n + c.packets, 0);
const flowPacketsOf = (batches: Telemetry[]) =>
  batches.flatMap((t) => t.flows).reduce((n, f) => n + f.packets, 0);

async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as { port: number };
  await new Promise((r) => s.close(r));
  return port;
}

describe('agent resilience', () => {
  let cp: TestControlPlane;
  let stateDir: string;
  let kernel: FakeNft;
  const agents: Agent[] = [];
  const logger = pino({ level: process.env.AGENT_TEST_LOG ?? 'silent' });

  beforeAll(async () => {
    cp = await startControlPlane();
    return () => cp.stop();
  });
  beforeEach(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'bulkhead-resil-'));
    kernel = createFakeNft();
    cp.reset();
    await cp.stop();
    cp.host = '127.0.0.1';
    await cp.start();
  });
  afterEach(async () => {
    await Promise.all(agents.splice(0).map((a) => a.stop()));
    await rm(stateDir, { recursive: true, force: true });
  });

  function agent(overrides: Partial<AgentOptions> = {}): Agent {
    const a = createAgent(testAgentOptions(cp, { stateDir, kernel, logger, ...overrides }));
    agents.push(a);
    return a;
  }

  /** An agent started, sent revision 3 (enforce), and acked it. */
  async function enforcing(overrides: Partial<AgentOptions> = {}): Promise<Agent> {
    const a = agent(overrides);
    await a.start();
    await until(() => cp.of('hello').length === 1, 'hello');
    cp.streams[0]!.write({ update: fixtureUpdate(Mode.MODE_ENFORCE, 3) });
    await until(() => cp.of('ack').length === 1, 'ack');
    return a;
  }

  it('resolves the name again on reconnect and follows a control plane that moved', async () => {
    const lookups: string[] = [];
    const a = agent({
      controlPlane: `cp.test:${cp.port}`,
      lookup: async (host) => {
        lookups.push(host);
        return [cp.host];
      },
    });
    await a.start();
    await until(() => cp.of('hello').length === 1, 'hello at 127.0.0.1');
    const before = lookups.length;

    await cp.stop();
    cp.host = '127.0.0.2'; // same port; nothing listens on 127.0.0.1 any more
    await cp.start();
    await until(() => cp.of('hello').length === 2, 'hello at 127.0.0.2');
    expect(lookups.length).toBeGreaterThan(before);
  });

  it('tries the next address when the first is down', async () => {
    const a = agent({ controlPlane: [`127.0.0.1:${await deadPort()},127.0.0.1:${cp.port}`] });
    await a.start();
    await until(() => cp.of('hello').length === 1, 'hello via the second address');
    expect(cp.enrolls).toHaveLength(1);
  });

  it('telemetry collected while the control plane is away arrives once after it is back', async () => {
    const a = await enforcing();
    const flow = (n: number) => ({ concat: ['10.0.0.5', '10.0.9.1', 6, 1000 + n, WEB_IN_CODE] });

    kernel.setCounter(`${ruleChain({ id: WEB_IN })}_allowed`, 2, 200);
    kernel.packetAdd('flows_in4', flow(0), 60);
    await until(() => packetsOf(cp.of('telemetry'), WEB_IN) === 2, 'first counts');

    await cp.stop();
    // Several telemetry intervals with nobody to send to: the agent keeps collecting.
    for (let i = 1; i <= 5; i++) {
      kernel.setCounter(`${ruleChain({ id: WEB_IN })}_allowed`, 2 + i * 10, 200 + i * 1000);
      kernel.packetAdd('flows_in4', flow(i), 60);
      await new Promise((r) => setTimeout(r, 60));
    }
    expect(a.dataplane.flows.size).toBeGreaterThan(0);
    await cp.start();
    await until(() => flowPacketsOf(countedOnce(cp.of('telemetry'))) === 6, 'all flows');
    // What the agent read from the kernel (its metric counts every read once) is what the
    // control plane counts: nothing lost, nothing doubled.
    const read = async () => {
      const text = await (await fetch(`http://127.0.0.1:${a.metricsAddress!.port}/metrics`)).text();
      return Number(
        /^bulkhead_rule_packets_total\{rule_id="web\/ingress\/0".*\} (\d+)$/m.exec(text)?.[1],
      );
    };
    const kernelTotal = await read();
    expect(kernelTotal).toBeGreaterThan(2);
    await until(() => packetsOf(countedOnce(cp.of('telemetry')), WEB_IN) >= kernelTotal, 'counts');
    // Let a few more intervals pass: nothing is counted twice.
    await new Promise((r) => setTimeout(r, 300));
    const counted = countedOnce(cp.of('telemetry'));
    expect(packetsOf(counted, WEB_IN)).toBe(await read());
    expect(flowPacketsOf(counted)).toBe(6);
    expect(counted.map((t) => t.seq)).toEqual(counted.map((_, i) => i + 1));
  });

  it('with acks: one batch at a time, what is read meanwhile goes in the next; an unacked batch is sent again on the next stream', async () => {
    cp.telemetryAcks = 'auto';
    const a = await enforcing();
    expect(cp.of('hello')[0]!.telemetryAcks).toBe(true);
    const flow = (n: number) => ({ concat: ['10.0.0.5', '10.0.9.1', 6, 1000 + n, WEB_IN_CODE] });
    const telemetry = () => cp.of('telemetry');
    const ports = (t: Telemetry) => t.flows.map((f) => f.port);

    // From here the control plane acks only what the test says. The next batch (a flow read
    // or not) is held unacked; ten telemetry intervals pass and three flows are read: nothing
    // is sent meanwhile.
    cp.telemetryAcks = 'manual';
    const before = telemetry().length;
    kernel.packetAdd('flows_in4', flow(0), 60);
    await until(() => telemetry().length === before + 1, 'a batch after the switch');
    const held = telemetry().at(-1)!;
    for (let i = 1; i <= 3; i++) {
      kernel.packetAdd('flows_in4', flow(i), 60);
      await new Promise((r) => setTimeout(r, 170));
    }
    expect(telemetry().length).toBe(before + 1);
    expect(a.dataplane.flows.size).toBeGreaterThanOrEqual(3);
    expect(await metric(a, 'bulkhead_flows_pending')).toBe(a.dataplane.flows.size);

    // Acked: the next batch carries everything read meanwhile.
    cp.ackTelemetry(held.seq);
    await until(() => telemetry().length === before + 2, 'the batch after the ack');
    const next = telemetry().at(-1)!;
    expect(next.seq).toBe(held.seq + 1);
    expect([...ports(held), ...ports(next)].sort()).toEqual([1000, 1001, 1002, 1003]);

    // The stream dies with that batch unacked: the next stream takes it again, first.
    await cp.stop();
    await cp.start();
    await until(() => cp.of('hello').length === 2, 'hello on the new stream');
    await until(() => telemetry().length === before + 3, 'the unacked batch again');
    expect(telemetry().at(-1)).toEqual(next);
    cp.telemetryAcks = 'auto';
    cp.ackTelemetry(next.seq);
    kernel.packetAdd('flows_in4', flow(4), 60);
    await until(() => flowPacketsOf(countedOnce(telemetry())) === 5, 'every flow counted');
    expect(telemetry().filter((t) => t.seq === next.seq)).toHaveLength(2);
    expect(telemetry().filter((t) => t.seq === held.seq)).toHaveLength(1);
  });

  it('without acks from the control plane: a batch every interval, as before', async () => {
    await enforcing();
    for (let i = 0; i < 3; i++) {
      kernel.packetAdd(
        'flows_in4',
        { concat: ['10.0.0.5', '10.0.9.1', 6, 2000 + i, WEB_IN_CODE] },
        60,
      );
      const before = cp.of('telemetry').filter((t) => t.flows.length > 0).length;
      await until(
        () => cp.of('telemetry').filter((t) => t.flows.length > 0).length === before + 1,
        `batch ${i + 1}, never acked`,
      );
    }
  });

  /** A batch of the flow drain: element deletes and generation flips only. */
  function isFlowDrain(tx: Transaction): boolean {
    return tx.commands.every((c) =>
      Object.values(c).every((obj) => {
        const [kind, body] = Object.entries(obj as object)[0] as [string, { name: string }];
        const flowSet = body.name === FLOW_GEN_SET || body.name.startsWith('flows_');
        return (kind === 'element' && flowSet) || (kind === 'set' && body.name === FLOW_GEN_SET);
      }),
    );
  }

  /**
   * Makes the fake kernel refuse every batch while `broken.on`; counts the batches tried,
   * except the flow drain's generation flips (they run on every collect).
   */
  function breakable(): { on: boolean; tried: number } {
    const broken = { on: false, tried: 0 };
    const apply = kernel.apply.bind(kernel);
    vi.spyOn(kernel, 'apply').mockImplementation(async (tx) => {
      if (!isFlowDrain(tx)) broken.tried++;
      if (broken.on)
        throw new NftError('NFT_APPLY_FAILED', 'nftables refused the batch (injected)');
      return apply(tx);
    });
    return broken;
  }

  const metric = async (a: Agent, name: string) => {
    const text = await (await fetch(`http://127.0.0.1:${a.metricsAddress!.port}/metrics`)).text();
    return Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1]);
  };

  /** A started agent whose nftables refuses batches, sent revision 3 and acked its failure. */
  async function refusedRevision3(): Promise<{ broken: ReturnType<typeof breakable>; a: Agent }> {
    const broken = breakable();
    const a = agent();
    await a.start();
    await until(() => cp.of('hello').length === 1, 'hello');
    broken.on = true;
    cp.streams[0]!.write({ update: fixtureUpdate(Mode.MODE_ENFORCE, 3) });
    await until(() => cp.of('ack').length === 1, 'ack of revision 3');
    return { broken, a };
  }

  it('an update nftables refused is retried with backoff and applied once the cause goes away', async () => {
    const { broken, a } = await refusedRevision3();
    expect(cp.of('ack')[0]).toMatchObject({ revision: 3, ok: false });
    expect(cp.of('ack')[0]!.error).toMatch(/refused/);
    // Retried by itself, without a word from the control plane, and each failure counted.
    await until(() => broken.tried >= 4, 'retries');
    expect(await metric(a, 'bulkhead_apply_failures_total')).toBeGreaterThanOrEqual(3);
    expect(a.dataplane.applied).toBeUndefined();
    expect(cp.of('ack')).toHaveLength(1);

    broken.on = false;
    await until(() => cp.of('ack').length === 2, 'ack after recovery');
    expect(cp.of('ack')[1]).toMatchObject({ revision: 3, ok: true, error: '' });
    expect(a.dataplane.applied?.revision).toBe(3);
    expect(JSON.stringify(kernel.dump())).toContain(ruleChain({ id: WEB_IN }));
    // Applied: no more attempts.
    const tried = broken.tried;
    await new Promise((r) => setTimeout(r, 300));
    expect(broken.tried).toBe(tried);
    expect(cp.of('hello')).toHaveLength(1);
  });

  it('a newer update replaces the one being retried', async () => {
    const { broken, a } = await refusedRevision3();
    cp.streams[0]!.write({ update: fixtureUpdate(Mode.MODE_MONITOR, 4) });
    await until(() => cp.of('ack').length === 2, 'ack of revision 4');
    broken.on = false;
    await until(() => cp.of('ack').length === 3, 'ack after recovery');
    await new Promise((r) => setTimeout(r, 300));
    expect(cp.of('ack').map((k) => [k.revision, k.ok])).toEqual([
      [3, false],
      [4, false],
      [4, true],
    ]);
    expect(a.dataplane.applied?.revision).toBe(4);
  });

  it('the failsafe rule follows a control plane that moved to a new address', async () => {
    const a = agent({
      controlPlane: `cp.test:${cp.port}`,
      lookup: async () => [cp.host],
    });
    await a.start();
    await until(() => cp.of('hello').length === 1, 'hello at 127.0.0.1');
    cp.streams[0]!.write({ update: fixtureUpdate(Mode.MODE_ENFORCE, 3) });
    await until(() => cp.of('ack').length === 1, 'ack');
    /** The addresses the output chain's failsafe rules accept. */
    const failsafe = () =>
      kernel
        .dump()
        .map((o) => o.rule as { table: string; chain: string; expr: unknown } | undefined)
        .filter((r) => r?.table === 'bulkhead' && r.chain === 'output')
        .map((r) => JSON.stringify(r!.expr))
        .filter((t) => t.includes('"daddr"') && t.includes(`${cp.port}`));
    expect(failsafe().join()).toContain('"127.0.0.1"');

    await cp.stop();
    cp.host = '127.0.0.2';
    await cp.start();
    await until(() => cp.of('hello').length === 2, 'hello at 127.0.0.2');
    await until(() => failsafe().join().includes('"127.0.0.2"'), 'failsafe for 127.0.0.2');
    expect(failsafe()).toHaveLength(1);
    expect(failsafe().join()).not.toContain('"127.0.0.1"');
    // Only the base chain was rewritten: the policy stays as applied.
    expect(a.dataplane.applied?.revision).toBe(3);
    expect(JSON.stringify(kernel.dump())).toContain(ruleChain({ id: WEB_IN }));
  });

  it('a control plane that stops reading holds the agent back; what did not fit is reported dropped', async () => {
    const maxPendingFlows = 500;
    const a = await enforcing({ maxPendingFlows });
    const stream = cp.streams[0]!;

    // As the control plane's ingest does under load: stop reading, nothing read ahead.
    const readable = (
      stream as ServerDuplexStream<SyncRequest, SyncResponse> & {
        _readableState: { highWaterMark: number };
      }
    )._readableState;
    readable.highWaterMark = 0;
    stream.pause();
    const held = cp.received.length;
    // Unique flows, a buffer's worth per round, until the agent's buffer overflows: its
    // write is held by HTTP/2 flow control, yet it keeps draining the kernel.
    const droppedByAgent = async () => {
      const text = await (await fetch(`http://127.0.0.1:${a.metricsAddress!.port}/metrics`)).text();
      return Number(/^bulkhead_flows_dropped_total (\d+)$/m.exec(text)?.[1] ?? 0);
    };
    let port = 0;
    let offered = 0;
    for (let round = 0; (await droppedByAgent()) === 0; round++) {
      // About 1 MB of flows fill the HTTP/2 window and the socket buffers before the write waits.
      expect(round).toBeLessThan(80);
      for (let i = 0; i < maxPendingFlows; i++) {
        const flow = { concat: ['10.0.0.5', '10.0.9.1', 6, ++port, WEB_IN_CODE] };
        if (kernel.packetAdd('flows_in4', flow, 60)) offered++;
      }
      // Two telemetry intervals: the agent drains the kernel's set into its buffer.
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(cp.received.length).toBe(held);

    stream.resume();
    const telemetry = () => countedOnce(cp.of('telemetry'));
    const droppedReported = () =>
      telemetry()
        .flatMap((t) => t.events)
        .filter((e) => e.code === FLOWS_DROPPED)
        .reduce((n, e) => n + Number(e.attributes.count), 0);
    // Every flow offered arrives once or is counted in a FLOWS_DROPPED report.
    await until(
      () =>
        new Set(telemetry().flatMap((t) => t.flows.map((f) => f.port))).size + droppedReported() ===
        offered,
      'all flows delivered or reported dropped',
    );
    expect(droppedReported()).toBeGreaterThan(0);
    expect(telemetry().flatMap((t) => t.flows).length).toBe(offered - droppedReported());
  }, 30_000);
});
