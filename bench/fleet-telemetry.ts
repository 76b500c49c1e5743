// Telemetry load generator of the fleet bench: K enrolled agents send flow batches of unique
// flows (a new dependency each) at a given total offered rate to a fresh control plane for a
// few seconds. Measures the rate that reached SQLite (read-only, from the flows table), how long
// the rest took to land after the load stopped (ingest lag), the control plane's RSS, and
// /healthz latency under load (from a worker thread). Owns nothing else.
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { Direction, type FlowRecord, Verdict } from '@bulkhead/proto';
import {
  createCsrs,
  createSimAgent,
  enrolAll,
  type SharedKey,
  type SimAgent,
} from './fleet-agent.js';
import { createBenchControlPlane } from './fleet-control-plane.js';
import { round, spread, waitUntil } from './fleet-util.js';

/** The part of better-sqlite3 used here (the workspace has no @types/better-sqlite3). */
type Sqlite = new (
  file: string,
  options: { readonly: boolean },
) => { prepare(sql: string): { pluck(): { get(): unknown } }; close(): void };
const Database = createRequire(import.meta.url)('better-sqlite3') as Sqlite;

/** Flows per message, as the agent batches them (its MAX_FLOWS_PER_BATCH). */
const MAX_FLOWS_PER_MESSAGE = 10_000;
const TICK_MS = 100;
/** Give up waiting for the backlog after this long; the lag is then reported as at least it. */
const DRAIN_TIMEOUT_MS = 60_000;

export interface FlowLoadOptions {
  /** Offered flows per second, all agents together. */
  rate: number;
  agents: number;
  seconds: number;
  key: SharedKey;
}

export async function flowLoad(options: FlowLoadOptions) {
  const { rate, seconds } = options;
  // Every flow is a new row: keep the control plane's row cap out of the way.
  const cp = await createBenchControlPlane(['--max-flow-rows', String(rate * seconds * 2)]);
  const agents: SimAgent[] = [];
  let worker: Worker | undefined;
  try {
    const { token } = await cp.api<{ token: string }>('POST', '/v1/enrollment-tokens', {
      maxUses: options.agents,
    });
    const enrolled = await enrolAll({
      target: cp.grpcTarget,
      caPem: cp.caPem,
      token,
      csrs: await createCsrs(options.agents, options.key),
      concurrency: 16,
    });
    for (const e of enrolled) {
      const agent = createSimAgent({
        ...e,
        identity: { caPem: cp.caPem, certPem: e.certPem },
        key: options.key,
        target: cp.grpcTarget,
        events: {},
        // Offered at the given rate whatever the control plane's pace: HTTP/2 flow control is
        // all that holds these agents back.
        telemetryAcks: false,
      });
      agents.push(agent);
      agent.connect();
    }
    await waitUntil(
      () => 'telemetry agents connected',
      () => agents.every((a) => a.connected && a.appliedHash !== ''),
    );
    const db = new Database(cp.dbPath, { readonly: true });
    // Rows are only added (the cap is out of reach), so the largest rowid is the count, and
    // reading it costs a B-tree descent instead of a scan of the growing table.
    const stored = () => Number(db.prepare('SELECT max(id) FROM flows').pluck().get() ?? 0);

    worker = new Worker(new URL('./fleet-healthz.js', import.meta.url), {
      workerData: { url: `${cp.apiUrl}/healthz` },
    });
    let offered = 0;
    // Flows the generator got onto the connection: tells a slow control plane from a slow
    // generator (on a busy machine this process may not keep up with the offered rate).
    let written = 0;
    let next = 0;
    let maxRss = cp.rssMiB();
    const batch = (dst: string, count: number): FlowRecord[] => {
      const now = Date.now();
      return Array.from({ length: count }, () => {
        const g = offered++;
        return {
          direction: Direction.DIRECTION_INGRESS,
          src: `100.${64 + ((g >> 16) & 63)}.${(g >> 8) & 255}.${g & 255}`,
          dst,
          protocol: 6,
          port: 443,
          verdict: Verdict.VERDICT_ALLOWED,
          ruleId: 'default',
          packets: 1,
          bytes: 60,
          firstSeenUnixMs: now,
          lastSeenUnixMs: now,
        };
      });
    };
    // Each tick hands what is due by now to the next agents in turn, a message at most
    // MAX_FLOWS_PER_MESSAGE flows: the offered rate holds even when ticks run late.
    const t0 = performance.now();
    const cpu0 = cp.cpuMs();
    const total = rate * seconds;
    while (offered < total) {
      await new Promise((r) => setTimeout(r, TICK_MS));
      const due = Math.min(total, Math.floor((rate * (performance.now() - t0)) / 1000));
      while (offered < due) {
        const i = next++ % agents.length;
        const agent = agents[i]!;
        const flows = batch(enrolled[i]!.address, Math.min(MAX_FLOWS_PER_MESSAGE, due - offered));
        if (!agent.sendFlows(flows, () => (written += flows.length))) {
          throw new Error(`${agent.hostname} lost its stream under load`);
        }
      }
      maxRss = Math.max(maxRss, cp.rssMiB());
    }
    const sentSec = (performance.now() - t0) / 1000;
    const storedAtEnd = stored();
    const writtenAtEnd = written;
    worker.postMessage('stop');
    const [healthz] = (await once(worker, 'message')) as [number[]];
    const tEnd = performance.now();
    let drained = true;
    await waitUntil(
      () => 'flows drained',
      () => {
        maxRss = Math.max(maxRss, cp.rssMiB());
        return stored() >= total;
      },
      { timeoutMs: DRAIN_TIMEOUT_MS, intervalMs: 100 },
    ).catch(() => {
      drained = false;
    });
    const lagSec = (performance.now() - tEnd) / 1000;
    const storedTotal = stored();
    const cpuMs = cp.cpuMs() - cpu0;
    db.close();
    return {
      offeredPerSec: rate,
      agents: options.agents,
      seconds,
      writtenPerSecDuringLoad: Math.round(writtenAtEnd / sentSec),
      storedPerSecDuringLoad: Math.round(storedAtEnd / sentSec),
      storedPerSecOverall: Math.round(storedTotal / (sentSec + lagSec)),
      ingestLagSec: round(lagSec, 2),
      drained,
      storedOfOffered: `${storedTotal}/${total}`,
      maxRssMiB: maxRss,
      // Control-plane CPU from the start of the load until drained, per flow stored: the
      // figure a busy shared machine disturbs least.
      cpuUsPerFlow: round((cpuMs * 1000) / storedTotal, 2),
      healthzMs: spread(healthz, 1),
      healthzSamples: healthz.length,
    };
  } finally {
    await worker?.terminate();
    for (const a of agents) a.close();
    await cp.close();
  }
}
