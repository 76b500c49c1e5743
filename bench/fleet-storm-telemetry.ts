// Telemetry across the fleet bench's reconnect storm: while the control plane is stopped and
// started, every simulated agent seals one batch (one flow of one connection, unique to the
// agent and seq) per second and, like the real agent, sends again on each new stream the batches
// a dead stream may have lost, with the same seq. Afterwards the flows table must hold each
// sealed batch exactly once: rows = sealed (nothing lost) and connections = sealed (nothing
// doubled). Owns nothing else; the storm itself is fleet.ts's.
import { createRequire } from 'node:module';
import { Direction, type FlowRecord, Verdict } from '@bulkhead/proto';
import type { SimAgent } from './fleet-agent.js';
import { waitUntil } from './fleet-util.js';

/** The part of better-sqlite3 used here (the workspace has no @types/better-sqlite3). */
type Sqlite = new (
  file: string,
  options: { readonly: boolean },
) => { prepare(sql: string): { get(): unknown }; close(): void };
const Database = createRequire(import.meta.url)('better-sqlite3') as Sqlite;

// Ten times the agent's default --telemetry-interval: a storm-time load without drowning the restart.
const TICK_MS = 1000;

export interface StormTelemetry {
  /** Stops sealing, resends what the last streams may have lost, waits for it to land. */
  finish(dbPath: string): Promise<{
    batchesSealed: number;
    resent: number;
    lost: number;
    doubled: number;
    landedSec: number;
  }>;
}

/** Starts sealing batches on `agents` (each with its host address) every TICK_MS. */
export function startStormTelemetry(
  agents: readonly { agent: SimAgent; address: string }[],
): StormTelemetry {
  const state = agents.map(({ agent, address }, i) => ({
    agent,
    address,
    index: i,
    seq: 0,
    /** Sealed batches, kept to the end: a resend of a counted seq is dropped by the control plane. */
    batches: [] as { seq: number; flows: FlowRecord[] }[],
    stream: agent.attempts,
  }));
  let sealed = 0;
  let resent = 0;

  const flow = (address: string, index: number, seq: number): FlowRecord => ({
    direction: Direction.DIRECTION_INGRESS,
    src: `100.${64 + (index >> 8)}.${index & 255}.${seq & 255}`,
    dst: address,
    protocol: 6,
    port: 1024 + (seq >> 8),
    verdict: Verdict.VERDICT_ALLOWED,
    ruleId: 'default',
    packets: 1,
    bytes: 60,
    firstSeenUnixMs: Date.now(),
    lastSeenUnixMs: Date.now(),
  });

  function tick(seal: boolean): void {
    for (const s of state) {
      if (!s.agent.connected) continue;
      if (s.agent.attempts !== s.stream) {
        // A new stream: first whatever an earlier one may not have delivered, in seq order.
        s.stream = s.agent.attempts;
        for (const b of s.batches) if (s.agent.sendBatch(b.seq, b.flows)) resent++;
      }
      if (!seal) continue;
      const b = { seq: ++s.seq, flows: [flow(s.address, s.index, s.seq)] };
      s.batches.push(b);
      sealed++;
      s.agent.sendBatch(b.seq, b.flows);
    }
  }

  const timer = setInterval(() => tick(true), TICK_MS);
  return {
    async finish(dbPath) {
      clearInterval(timer);
      const t0 = performance.now();
      const db = new Database(dbPath, { readonly: true });
      const count = () =>
        db.prepare('SELECT count(*) AS n, coalesce(sum(connections), 0) AS c FROM flows').get() as {
          n: number;
          c: number;
        };
      try {
        // Agents still reconnecting send their batches once their stream is up.
        await waitUntil(
          () => `${count().n}/${sealed} storm telemetry batches stored`,
          () => {
            tick(false);
            return count().n >= sealed && state.every((s) => s.agent.connected);
          },
        ).catch(() => undefined);
        const { n, c } = count();
        return {
          batchesSealed: sealed,
          resent,
          lost: sealed - n,
          doubled: c - n,
          landedSec: Math.round((performance.now() - t0) / 10) / 100,
        };
      } finally {
        db.close();
      }
    },
  };
}
