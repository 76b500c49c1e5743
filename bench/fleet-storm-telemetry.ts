// Telemetry across the fleet bench's reconnect storm: while the control plane is stopped and
// started, every simulated agent reads one new flow (unique to the agent and tick) a second
// and sends what it holds as the real agent does (sync.ts). On a stream whose Welcome said the
// control plane acks, one batch at a time: what it reads meanwhile waits and goes in the next
// batch, and a batch unacked when its stream died goes again, with the same seq, on the next
// one. On a stream without acks (a control plane that predates them), a batch each tick, and
// every batch again on each new stream. Afterwards the flows table must hold each flow read
// exactly once: rows = flows (nothing lost) and connections = rows (nothing doubled). Owns
// nothing else; the storm itself is fleet.ts's.
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
  /** Stops reading flows, sends what is still held, waits for it to land. */
  finish(dbPath: string): Promise<{
    flowsRead: number;
    batchesSealed: number;
    resent: number;
    lost: number;
    doubled: number;
    landedSec: number;
  }>;
}

interface Batch {
  seq: number;
  flows: FlowRecord[];
}

/** Starts reading a flow on each of `agents` (each with its host address) every TICK_MS. */
export function startStormTelemetry(
  agents: readonly { agent: SimAgent; address: string }[],
): StormTelemetry {
  const state = agents.map(({ agent, address }, i) => ({
    agent,
    address,
    index: i,
    read: 0,
    seq: 0,
    /** Flows read and not yet in a batch. */
    pending: [] as FlowRecord[],
    /** With acks: the batch sent and not yet acked. */
    unacked: undefined as Batch | undefined,
    /** Without acks: every batch, kept to the end (a resend of a counted seq is dropped). */
    sealed: [] as Batch[],
    stream: agent.attempts,
  }));
  let flowsRead = 0;
  let batchesSealed = 0;
  let resent = 0;

  const flow = (address: string, index: number, n: number): FlowRecord => ({
    direction: Direction.DIRECTION_INGRESS,
    src: `100.${64 + (index >> 8)}.${index & 255}.${n & 255}`,
    dst: address,
    protocol: 6,
    port: 1024 + (n >> 8),
    verdict: Verdict.VERDICT_ALLOWED,
    ruleId: 'default',
    packets: 1,
    bytes: 60,
    firstSeenUnixMs: Date.now(),
    lastSeenUnixMs: Date.now(),
  });

  /** Numbers what the agent holds as the next batch and sends it. */
  function sealAndSend(s: (typeof state)[number]): Batch {
    batchesSealed++;
    const b = { seq: ++s.seq, flows: s.pending };
    s.pending = [];
    s.agent.sendBatch(b.seq, b.flows);
    return b;
  }

  function tick(read: boolean): void {
    for (const s of state) {
      if (read) {
        s.pending.push(flow(s.address, s.index, ++s.read));
        flowsRead++;
      }
      const { agent } = s;
      if (!agent.connected) continue;
      const fresh = agent.attempts !== s.stream;
      s.stream = agent.attempts;
      if (agent.telemetryAcks) {
        if (s.unacked && agent.lastAck >= s.unacked.seq) s.unacked = undefined;
        if (s.unacked) {
          if (fresh && agent.sendBatch(s.unacked.seq, s.unacked.flows)) resent++;
        } else if (s.pending.length > 0) {
          s.unacked = sealAndSend(s);
        }
      } else {
        if (fresh) for (const b of s.sealed) if (agent.sendBatch(b.seq, b.flows)) resent++;
        if (s.pending.length > 0) s.sealed.push(sealAndSend(s));
      }
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
        // Agents still reconnecting, or waiting for an ack, send what they hold once they can.
        await waitUntil(
          () => `${count().n}/${flowsRead} storm telemetry flows stored`,
          () => {
            tick(false);
            return count().n >= flowsRead && state.every((s) => s.agent.connected);
          },
        ).catch(() => undefined);
        const { n, c } = count();
        return {
          flowsRead,
          batchesSealed,
          resent,
          lost: flowsRead - n,
          doubled: c - n,
          landedSec: Math.round((performance.now() - t0) / 10) / 100,
        };
      } finally {
        db.close();
      }
    },
  };
}
