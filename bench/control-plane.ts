// Control-plane store paths, in process and without gRPC or HTTP: enrol-like workload and agent
// writes, one provision, then what a fleet of agents costs in steady state (hello, ack,
// telemetry with counters and flows) and what admins read (agents, flows). Prints one JSON
// object: ops/s and CPU ms per op of each phase. Then the incremental pipeline at fleet scale
// (issue 8, `scale`): the policy-fleet state (10,000 workloads x 2,000 rules; 1,000 with
// --short) loaded cold from the store, RSS after it, a Hello from every agent (full syncs), and
// one label change end to end (validated, drafted, provisioned with its impact check, known,
// encoded, sent to fake streams).
// `--short` (or BENCH_SHORT=1): small fleets, for CI. Machines are noisy: compare runs on the
// same machine only.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import type { Policy, Service, Workload } from '@bulkhead/policy';
import { Direction, type Telemetry, Verdict } from '@bulkhead/proto';
import { pino } from 'pino';
import type { AgentStream } from '../packages/control-plane/dist/fleet/streams.js';
import type { Pki } from '../packages/control-plane/dist/pki.js';
import {
  createDomains,
  createSqliteStores,
  createStreamRegistry,
  storePolicyObjects,
} from './control-plane-internal.js';
import { fleet as policyFleet } from './policy-fleet.js';

const short = process.argv.includes('--short') || process.env.BENCH_SHORT === '1';
const AGENTS = short ? 200 : 2000;
const TELEMETRY_ROUNDS = short ? 1 : 3;
const READS = short ? 3 : 10;
const APPS = 20;
const SCALE_WORKLOADS = short ? 1000 : 10_000;
const SCALE_APPS = 400;
/** `--scale`: the scale part alone (the store paths before it are skipped). */
const scaleOnly = process.argv.includes('--scale');

/** The control plane as the bench drives it; only this wiring knows the package's layout. */
function open(path: string) {
  const stores = createSqliteStores({ path });
  const pki = {} as Pki; // enrolment's signing is not what this bench measures
  const log = pino({ level: 'silent' });
  const streams = createStreamRegistry();
  const { policy, revisions, fleet, visibility } = createDomains({ stores, pki, streams, log });
  return {
    stores,
    streams,
    policy,
    enrol(w: Workload, agentId: string) {
      policy.changeWorkloads(
        (ws) => ws.upsertWorkload(w),
        () =>
          stores.fleet.createAgent({
            id: agentId,
            workload: w.name,
            hostname: w.name,
            certSerial: agentId,
          }),
      );
    },
    putResource: (kind: 'services' | 'policies', name: string, body: unknown) =>
      policy.putResource('bench', kind, name, body),
    provision: (note: string) => revisions.provision('bench', note, { confirm: true }),
    /** A workload's labels, drafted and provisioned as a revision of their own. */
    relabel: (name: string, labels: Workload['labels']) =>
      revisions.provisionWorkload('bench', name, 'relabel', { confirm: true }, () =>
        policy.patchWorkload('bench', name, { labels }),
      ),
    /**
     * A Hello on a new stream whose messages only count (`onBytes`); returns the hash the
     * Hello's full sync carries.
     */
    hello(
      agentId: string,
      w: string,
      hello: Parameters<typeof fleet.hello>[1],
      onBytes: (n: number) => void = () => {},
    ): string {
      const send = (m: Buffer) => onBytes(m.length);
      const stream: AgentStream = { agentId, workload: w, send, close() {} };
      streams.add(stream);
      const sent = fleet.hello(agentId, hello, stream);
      for (const m of sent) send(m);
      return sent.length > 0 ? updateHash(sent[0]!) : '';
    },
    ack: fleet.ack,
    telemetry: fleet.telemetry,
    listAgents: fleet.listAgents,
    flows: () => visibility.flows({ limit: 1000 }),
    close: () => stores.close(),
  };
}

/**
 * The `hash` of an encoded SyncResponse update, read without decoding its groups (a full sync's
 * first chunk at 10k workloads is 1 MiB: decoding them all was most of the Hello phase).
 */
function updateHash(message: Uint8Array): string {
  const r = new BinaryReader(message);
  r.uint32(); // SyncResponse.update
  const end = r.uint32() + r.pos;
  while (r.pos < end) {
    const tag = r.uint32();
    if (tag === ((2 << 3) | WireType.LengthDelimited)) return r.string();
    r.skip(tag & 7, tag >>> 3);
  }
  return '';
}

type Phase = { ops: number; wallMs: number; opsPerSec: number; cpuMsPerOp: number };

async function measure(ops: number, fn: () => unknown): Promise<Phase> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await fn();
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return {
    ops,
    wallMs: +wallMs.toFixed(1),
    opsPerSec: +((ops / wallMs) * 1000).toFixed(0),
    cpuMsPerOp: +((cpu.user + cpu.system) / 1000 / ops).toFixed(3),
  };
}

const workload = (i: number): Workload => ({
  name: `host-${i}`,
  addresses: [`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`],
  labels: { app: `app${i % APPS}`, role: i % 4 === 0 ? 'db' : 'web' },
  mode: { ingress: 'monitor', egress: 'monitor' },
});

const telemetry = (i: number, seq: number): Telemetry => {
  const peer = workload((i + 1) % AGENTS).addresses[0]!;
  const self = workload(i).addresses[0]!;
  const now = Date.UTC(2026, 0, 1) + seq * 60_000;
  const flow = (port: number, verdict: Verdict) => ({
    direction: Direction.DIRECTION_INGRESS,
    src: peer,
    dst: self,
    protocol: 6,
    port,
    verdict,
    ruleId: 'default',
    packets: 3,
    bytes: 900,
    firstSeenUnixMs: now,
    lastSeenUnixMs: now,
  });
  return {
    seq,
    timeUnixMs: now,
    appliedHash: '',
    counters: [Direction.DIRECTION_INGRESS, Direction.DIRECTION_EGRESS].flatMap((direction) =>
      [Verdict.VERDICT_ALLOWED, Verdict.VERDICT_WOULD_DENY].map((verdict) => ({
        ruleId: 'default',
        direction,
        verdict,
        packets: 10,
        bytes: 1000,
      })),
    ),
    flows: [
      flow(5432, Verdict.VERDICT_ALLOWED),
      flow(443, Verdict.VERDICT_ALLOWED),
      flow(22, Verdict.VERDICT_WOULD_DENY),
    ],
    events: [],
  };
};

const dir = mkdtempSync(join(tmpdir(), 'bulkhead-bench-cp-'));
const cp = open(join(dir, 'bench.db'));
const ids = Array.from({ length: AGENTS }, (_, i) => `agent-${i}`);
const phases: Record<string, Phase> = {};
try {
  if (!scaleOnly) await storePaths();
} finally {
  cp.close();
  rmSync(dir, { recursive: true, force: true });
}
const scale = scaleBench();
console.log(
  JSON.stringify({
    controlPlane: { agents: AGENTS, telemetryRounds: TELEMETRY_ROUNDS, phases, scale },
  }),
);

/** Enrolment, a provision, and a fleet's steady state on the store paths (see the header). */
async function storePaths() {
  phases.enrol = await measure(AGENTS, () => {
    for (let i = 0; i < AGENTS; i++) cp.enrol(workload(i), ids[i]!);
  });
  const pg: Service = { name: 'pg', ports: [{ protocol: 'tcp', port: 5432 }] };
  cp.putResource('services', 'pg', pg);
  for (let a = 0; a < APPS; a++) {
    const p: Policy = {
      name: `app${a}`,
      scope: { matchLabels: { app: `app${a}`, role: 'db' } },
      ingress: [
        {
          action: 'allow',
          peers: [{ selector: { matchLabels: { app: `app${a}`, role: 'web' } } }],
          services: ['pg'],
        },
      ],
    };
    cp.putResource('policies', p.name, p);
  }
  const hashes: string[] = [];
  phases.provision = await measure(1, () => cp.provision('bench'));
  phases.hello = await measure(AGENTS, () => {
    ids.forEach((id, i) => {
      const hash = cp.hello(id, `host-${i}`, {
        appliedRevision: 0,
        appliedHash: '',
        hostname: `host-${i}`,
        addresses: workload(i).addresses,
        agentVersion: 'bench',
        packedRanges: true,
        telemetryAcks: false,
      });
      hashes.push(hash);
    });
  });
  phases.ack = await measure(AGENTS, () => {
    ids.forEach((id, i) => {
      cp.ack(id, { revision: 1, hash: hashes[i]!, ok: true, error: '', applyMicros: 1000 });
    });
  });
  phases.telemetry = await measure(AGENTS * TELEMETRY_ROUNDS, async () => {
    // All batches queued at once, as from streams that never pause: the ingest's own pace.
    const stream = { pause() {}, resume() {} };
    const counted: Promise<boolean>[] = [];
    for (let seq = 1; seq <= TELEMETRY_ROUNDS; seq++) {
      ids.forEach((id, i) => {
        counted.push(cp.telemetry(id, telemetry(i, seq), stream));
      });
    }
    if ((await Promise.all(counted)).includes(false)) throw new Error('telemetry not counted');
  });
  phases.listAgents = await measure(READS, () => {
    for (let r = 0; r < READS; r++) {
      if (cp.listAgents().length !== AGENTS) throw new Error('agents missing');
    }
  });
  phases.flows = await measure(READS, () => {
    for (let r = 0; r < READS; r++) cp.flows();
  });
}

/** The incremental pipeline at fleet scale (see the header). */
function scaleBench() {
  const scaleDir = mkdtempSync(join(tmpdir(), 'bulkhead-bench-scale-'));
  const path = join(scaleDir, 'scale.db');
  const state = policyFleet(SCALE_APPS, SCALE_WORKLOADS);
  {
    // Written straight into the store, as a control plane restarting on it finds it.
    const stores = createSqliteStores({ path });
    stores.tx(() => {
      state.workloads.forEach((w, i) => {
        stores.policy.upsertWorkload(w);
        stores.fleet.createAgent({
          id: `a${i}`,
          workload: w.name,
          hostname: w.name,
          certSerial: `${i}`,
        });
      });
      storePolicyObjects(stores, state, 'scale');
    });
    stores.close();
  }
  try {
    const gc = (globalThis as { gc?: () => void }).gc;
    const t0 = performance.now();
    const scp = open(path);
    const coldLoadMs = Math.round(performance.now() - t0);
    gc?.();
    const rssAfterLoadMiB = Math.round(process.memoryUsage().rss / 2 ** 20);
    // Every agent says Hello holding nothing: a full sync each, group parts encoded once.
    let bytes = 0;
    const t1 = performance.now();
    const count = (n: number) => {
      bytes += n;
    };
    state.workloads.forEach((w, i) => {
      const hello = {
        appliedRevision: 0,
        appliedHash: '',
        hostname: w.name,
        addresses: [],
        agentVersion: 'bench',
        packedRanges: true,
        telemetryAcks: false,
      };
      scp.hello(`a${i}`, w.name, hello, count);
    });
    const fullSync = { ms: Math.round(performance.now() - t1), bytes };
    // One label change, end to end: a staging web host goes to prod and back.
    const host = state.workloads.find((w) => w.name === 'app0-web-0')!;
    const times: number[] = [];
    // CPU time too: on a shared machine the wall clock also counts the time others ran.
    const cpuTimes: number[] = [];
    let changeBytes = 0;
    for (let i = 0; i < 21; i++) {
      bytes = 0;
      const t = performance.now();
      const cpu = process.cpuUsage();
      scp.relabel(host.name, { ...host.labels, env: i % 2 ? 'staging' : 'prod' });
      const used = process.cpuUsage(cpu);
      cpuTimes.push((used.user + used.system) / 1000);
      times.push(performance.now() - t);
      changeBytes = bytes;
    }
    times.sort((a, b) => a - b);
    cpuTimes.sort((a, b) => a - b);
    const rssMiB = Math.round(process.memoryUsage().rss / 2 ** 20);
    scp.close();
    return {
      workloads: SCALE_WORKLOADS,
      rules: SCALE_APPS * 5,
      coldLoadMs,
      rssAfterLoadMiB,
      fullSyncAll: fullSync,
      labelChange: {
        minMs: +times[0]!.toFixed(1),
        medianMs: +times[10]!.toFixed(1),
        maxMs: +times[20]!.toFixed(1),
        cpuMedianMs: +cpuTimes[10]!.toFixed(1),
        bytesToAgents: changeBytes,
      },
      rssMiB,
    };
  } finally {
    rmSync(scaleDir, { recursive: true, force: true });
  }
}
