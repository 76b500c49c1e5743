// The publisher's fan-out alone, in process (issue 9's propagation change without sockets): N
// workloads with one agent stream each, then a provision that every rule set uses (a policy
// allowing a 1,000-CIDR IP list to all of them, as bench/fleet.ts provisions), then its removal,
// repeated; then one workload moved in and out of a group every rule set names, repeated. Each fake stream does with a message what the Sync call's write path hands grpc-js:
// its gRPC frame when the message carries one (rulesets/encode.ts), else a prefixed copy, as
// grpc-js makes. Prints CPU and wall per provision, median of each kind of round. `BENCH_FANOUT_AGENTS`
// (1,000), `BENCH_FANOUT_ROUNDS` (10), `BENCH_FANOUT_LABEL_ROUNDS` (the label rounds alone, as
// many as the list's by default; `BENCH_FANOUT_ROUNDS=0` leaves the list out). Run a baseline
// build's copy of bench/dist to compare.
import type { Policy, PolicyState, Workload } from '@bulkhead/policy';
import { pino } from 'pino';
import type { AgentStream } from '../packages/control-plane/dist/fleet/streams.js';
import { median } from './fleet-util.js';

const internal = <M>(file: string): Promise<M> =>
  import(new URL(`../../packages/control-plane/dist/${file}`, import.meta.url).href) as Promise<M>;
const { createRuleSetPublisher } =
  await internal<typeof import('../packages/control-plane/dist/rulesets/publisher.js')>(
    'rulesets/publisher.js',
  );
// Absent from builds before the pre-framed write path.
const { grpcFrameOf } = await internal<{ grpcFrameOf?: (m: Uint8Array) => Buffer | undefined }>(
  'rulesets/encode.js',
);

/** `--short` (CI): 100 agents, 2 rounds, so the bench keeps working. */
const short = process.argv.includes('--short');
const AGENTS = Number(process.env.BENCH_FANOUT_AGENTS ?? (short ? 100 : 1000));
const ROUNDS = Number(process.env.BENCH_FANOUT_ROUNDS ?? (short ? 2 : 10));
const LABEL_ROUNDS = Number(process.env.BENCH_FANOUT_LABEL_ROUNDS ?? ROUNDS);
const LIST_SIZE = 1000;

const workloads: Workload[] = Array.from({ length: AGENTS }, (_, i) => ({
  name: `host-${i}`,
  addresses: [`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`],
  labels: { fleet: 'sim', app: `app${i % 20}` },
  mode: { ingress: 'monitor', egress: 'monitor' },
}));
const cidrs = Array.from(
  { length: LIST_SIZE },
  (_, i) => `172.${16 + (i >> 15)}.${(i >> 7) & 255}.${(i & 127) * 2}/32`,
);
const policy: Policy = {
  name: 'bench-allow',
  scope: { matchLabels: { fleet: 'sim' } },
  ingress: [
    {
      action: 'allow',
      peers: [{ ipList: 'bench-peers' }],
      services: [{ protocol: 'tcp', port: 443 }],
    },
  ],
} as Policy;
/** Every rule set also names the `app=db` group, so moving host-0 in or out of it reaches all. */
const fromDb = {
  ...policy,
  name: 'from-db',
  ingress: [{ ...policy.ingress![0]!, peers: [{ selector: { matchLabels: { app: 'db' } } }] }],
} as Policy;
const empty: PolicyState = { workloads, ipLists: [], services: [], policies: [fromDb] };
const withList = {
  ...empty,
  ipLists: [{ name: 'bench-peers', cidrs }],
  policies: [fromDb, policy],
};

/** What the write path hands grpc-js, held until the round ends as sockets would hold it. */
let held: Buffer[] = [];
let bytes = 0;
const frameOf = (m: Buffer): Buffer => {
  const frame = grpcFrameOf?.(m);
  if (frame) return frame;
  const copy = Buffer.allocUnsafe(m.length + 5);
  copy.writeUInt8(0, 0);
  copy.writeUInt32BE(m.length, 1);
  m.copy(copy, 5);
  return copy;
};
const byWorkload = new Map<string, AgentStream[]>();
const publisher = createRuleSetPublisher({
  streams: { ofWorkload: (w) => byWorkload.get(w) ?? [] },
  log: pino({ level: 'silent' }),
});
publisher.load(empty, 1);
for (const w of workloads) {
  const stream: AgentStream = {
    agentId: w.name,
    workload: w.name,
    // As the agent asks in its Hello.
    ranges: 'packed',
    send(m) {
      const f = frameOf(m);
      bytes += f.length;
      held.push(f);
    },
    close() {},
  };
  byWorkload.set(w.name, [stream]);
  for (const m of publisher.hello(stream, '', () => {})) stream.send(m);
}

/**
 * Per kind of round: the list added (bench/fleet.ts's change) and removed again; host-0's label
 * moved into or out of `app=db` (one range in a group every agent holds, as the scale bench's
 * label change).
 */
const cpu = { add: [] as number[], remove: [] as number[], label: [] as number[] };
const wall = { add: [] as number[], remove: [] as number[], label: [] as number[] };
let perRound = 0;
for (let r = 0; r < ROUNDS * 2; r++) {
  held = [];
  bytes = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const changed = publisher.provisioned(r % 2 === 0 ? withList : empty, r + 2);
  const kind = r % 2 === 0 ? 'add' : 'remove';
  wall[kind].push(performance.now() - t0);
  const c = process.cpuUsage(c0);
  cpu[kind].push((c.user + c.system) / 1000);
  if (changed.length !== AGENTS) throw new Error(`changed ${changed.length}, not ${AGENTS}`);
  if (r === 0) perRound = bytes;
}
for (let r = 0; r < LABEL_ROUNDS * 2; r++) {
  held = [];
  const host = { ...workloads[0]!, labels: { fleet: 'sim', app: r % 2 === 0 ? 'db' : 'web' } };
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const changed = publisher.workloadsChanged([{ name: host.name, workload: host }]);
  wall.label.push(performance.now() - t0);
  const c = process.cpuUsage(c0);
  cpu.label.push((c.user + c.system) / 1000);
  if (changed.length !== AGENTS) throw new Error(`label: changed ${changed.length}, not ${AGENTS}`);
}
console.log(
  JSON.stringify({
    fanout: {
      agents: AGENTS,
      rounds: ROUNDS * 2,
      preFramed: grpcFrameOf !== undefined,
      bytesPerAddRound: perRound,
      addCpuMedianMs: median(cpu.add, 1),
      addWallMedianMs: median(wall.add, 1),
      removeCpuMedianMs: median(cpu.remove, 1),
      removeWallMedianMs: median(wall.remove, 1),
      labelCpuMedianMs: median(cpu.label, 1),
      labelWallMedianMs: median(wall.label, 1),
    },
  }),
);
