// A black-holed link to the control plane, on real nftables: run inside a throwaway network
// namespace (`unshare --net`, lo up). The agent (on the fake driver: only the link matters
// here) talks to a real gRPC server on 127.0.0.1; a drop rule in a table of this test's own
// cuts the path both ways after the stream is up.
// (The old connection stays cut, so a batch lost in it is found only if it is sent again.) Keepalive must notice within its bound, the
// agent must come back once the rule is gone, and telemetry must be counted exactly once.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFakeNft } from '@bulkhead/nftables/testing';
import { Mode, type Telemetry } from '@bulkhead/proto';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Agent, createAgent } from './agent.js';
import {
  startControlPlane,
  type TestControlPlane,
  testAgentOptions,
} from './control-plane.test-util.js';
import { fixtureUpdate } from './fixture.test-util.js';
import { ruleChain } from './render.js';

/** The fixture rule the tests count on. */
const WEB_IN = 'web/ingress/0';

const TABLE = `bhblackhole${process.pid}`;
const KEEPALIVE = { timeMs: 2_000, timeoutMs: 2_000 };
const BOUND_MS = KEEPALIVE.timeMs + KEEPALIVE.timeoutMs;

const nft = (script: string) => execFileSync('nft', ['-f', '-'], { input: script });

async function waitFor(cond: () => boolean | Promise<boolean>, ms: number, what: string) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`gave up after ${ms} ms waiting for: ${what}`);
}

function countedOnce(batches: Telemetry[]): Telemetry[] {
  const seen = new Set<number>();
  return batches.filter((t) => !seen.has(t.seq) && seen.add(t.seq));
}
const packets = (batches: Telemetry[]) =>
  batches
    .flatMap((t) => t.counters)
    .filter((c) => c.ruleId === WEB_IN)
    .reduce((n, c) => n + c.packets, 0);

describe('a black-holed link to the control plane', () => {
  let cp: TestControlPlane;
  let stateDir: string;
  let agent: Agent;
  const states: Array<{ to: string; at: number }> = [];

  beforeAll(async () => {
    cp = await startControlPlane();
    stateDir = await mkdtemp(join(tmpdir(), 'bulkhead-blackhole-'));
  });
  afterAll(async () => {
    await agent?.stop();
    await cp.stop();
    spawnSync('nft', ['delete', 'table', 'inet', TABLE], { stdio: 'ignore' }); // if a step failed
    await rm(stateDir, { recursive: true, force: true });
  });

  it(`is noticed by keepalive within ${BOUND_MS} ms plus one interval, and left once the drop is removed; telemetry counted once`, async () => {
    const kernel = createFakeNft();
    const logger = pino(
      { level: 'info' },
      {
        write: (line: string) => {
          const l = JSON.parse(line) as { msg: string; to?: string };
          if (l.msg === 'sync state' && l.to) states.push({ to: l.to, at: Date.now() });
        },
      },
    );
    agent = createAgent(
      testAgentOptions(cp, {
        stateDir,
        kernel,
        logger,
        keepalive: KEEPALIVE,
        telemetryIntervalMs: 200,
        backoff: { baseMs: 200, capMs: 1_000 },
      }),
    );
    await agent.start();
    await waitFor(() => cp.of('hello').length === 1, 10_000, 'hello');
    cp.streams[0]!.write({ update: fixtureUpdate(Mode.MODE_ENFORCE, 3) });
    await waitFor(() => cp.of('ack').length === 1, 10_000, 'ack');
    kernel.setCounter(`${ruleChain({ id: WEB_IN })}_allowed`, 5, 500);
    await waitFor(() => packets(cp.of('telemetry')) === 5, 10_000, 'first counts');

    // Two chains: the port (every connection to the control plane) until the drop is
    // "removed", and the agent's first connection for good, as when a middlebox lost its state:
    // what went into that connection can only arrive if the agent sends it again.
    const clientPort = Number(cp.streams[0]!.getPeer().split(':').at(-1));
    nft(`table inet ${TABLE} {
      chain conn { type filter hook output priority -10; policy accept;
        tcp sport ${clientPort} drop
        tcp dport ${clientPort} drop
      }
      chain port { type filter hook output priority -9; policy accept;
        tcp dport ${cp.port} drop
        tcp sport ${cp.port} drop
      }
    }`);
    const droppedAt = Date.now();
    // Batches go into the black hole while the agent still believes the stream is up.
    kernel.setCounter(`${ruleChain({ id: WEB_IN })}_allowed`, 7, 700);
    await waitFor(
      () => states.some((s) => s.to === 'backoff' && s.at > droppedAt),
      3 * BOUND_MS + 10_000,
      'the dead link noticed',
    );
    const noticedMs = states.find((s) => s.to === 'backoff' && s.at > droppedAt)!.at - droppedAt;
    console.log(`black hole noticed after ${noticedMs} ms (bound ${BOUND_MS} ms)`);
    // Keepalive, not TCP (minutes): within the bound plus one ping interval of phase.
    expect(noticedMs).toBeLessThanOrEqual(BOUND_MS + KEEPALIVE.timeMs + 1_000);
    kernel.setCounter(`${ruleChain({ id: WEB_IN })}_allowed`, 11, 1100);

    execFileSync('nft', ['delete', 'chain', 'inet', TABLE, 'port']);
    await waitFor(() => cp.of('hello').length === 2, 20_000, 'hello after the drop is gone');
    const read = async () => {
      const text = await (
        await fetch(`http://127.0.0.1:${agent.metricsAddress!.port}/metrics`)
      ).text();
      return Number(
        /^bulkhead_rule_packets_total\{rule_id="web\/ingress\/0".*\} (\d+)$/m.exec(text)?.[1],
      );
    };
    // The agent reads the kernel at its telemetry ticks, whether or not a send is in flight.
    await waitFor(async () => (await read()) === 23, 10_000, 'the agent read every count');
    await waitFor(() => packets(countedOnce(cp.of('telemetry'))) >= 23, 20_000, 'all counts');
    await new Promise((r) => setTimeout(r, 1_000));
    expect(packets(countedOnce(cp.of('telemetry')))).toBe(23);
  });
});
