// Random policy histories for one workload, as the control plane would send them: a
// calculator (@bulkhead/policy) takes random changes to a small policy state and each of its
// deltas becomes the workload's PolicyUpdate (groups created with all their ranges, deleted,
// or changed element by element; the rule set when it changed). Plus a normal form of a listed
// table, so that a table reached by deltas can be compared with one loaded from scratch.
import { elementKey, type NftObject } from '@bulkhead/nftables';
import {
  type CalcDelta,
  type CalcResult,
  type Calculator,
  createCalculator,
  type Policy,
  type PolicyRule,
  type PolicyState,
  type PortSpec,
  type Selector,
  toAddressRange,
  type Workload,
} from '@bulkhead/policy';
import type { GroupUpdate, PolicyUpdate } from '@bulkhead/proto';
import type { GroupPolicy } from './render.js';

/** mulberry32: a small seeded PRNG, so a failing sequence can be replayed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/**
 * A listed table (`list table` or a fake's dump) as a normal form: handles and counter values
 * dropped, chains with their rules in order, sets with their elements in canonical form and
 * sorted, everything keyed by name. Equal normal forms = same kernel state.
 */
export function normalTable(objects: NftObject[], table = 'bulkhead'): unknown {
  const pick = (kind: string) =>
    objects
      .map((o) => o[kind] as Record<string, unknown> | undefined)
      .filter(
        (b): b is Record<string, unknown> => b !== undefined && (b.table ?? b.name) === table,
      );
  const strip = (b: Record<string, unknown>, ...keys: string[]) =>
    Object.fromEntries(
      Object.entries(b).filter(([k]) => !['handle', 'table', ...keys].includes(k)),
    );
  const chains: Record<string, unknown> = {};
  for (const c of pick('chain')) chains[c.name as string] = { ...strip(c), rules: [] as unknown[] };
  for (const r of pick('rule')) {
    (chains[r.chain as string] as { rules: unknown[] }).rules.push({
      comment: r.comment,
      expr: JSON.stringify(r.expr),
    });
  }
  const sets: Record<string, unknown> = {};
  for (const kind of ['set', 'map']) {
    for (const s of pick(kind)) {
      const elems = ((s.elem as unknown[]) ?? []).map((e) => elementKey(e, kind === 'map')).sort();
      sets[s.name as string] = { kind, ...strip(s, 'elem'), elems };
    }
  }
  const counters = pick('counter')
    .map((c) => c.name as string)
    .sort();
  return {
    tables: pick('table').length,
    counters,
    sets: Object.fromEntries(Object.entries(sets).sort()),
    chains: Object.fromEntries(Object.entries(chains).sort()),
  };
}

/** The workload the histories are about. */
export const WORKLOAD = 'w';

const APPS = ['a', 'b', 'c'];

function randomSelector(rand: () => number): Selector {
  const app = APPS[Math.floor(rand() * APPS.length)]!;
  return rand() < 0.8 ? { matchLabels: { app } } : {};
}

function randomRule(rand: () => number, lists: string[]): PolicyRule {
  const peers = Array.from({ length: 1 + Math.floor(rand() * 2) }, () => {
    const k = rand();
    if (k < 0.45) return { selector: randomSelector(rand) };
    if (k < 0.75 && lists.length > 0) return { ipList: lists[Math.floor(rand() * lists.length)]! };
    const v4 = rand() < 0.6;
    const host = Math.floor(rand() * 32);
    return { cidr: v4 ? `10.0.0.${host & ~3}/30` : `fd00::${(host & ~7).toString(16)}/125` };
  });
  const services: PortSpec[] = (
    [
      { protocol: 'tcp', port: 20 + Math.floor(rand() * 5), endPort: 26 },
      { protocol: 'udp', port: 20 + Math.floor(rand() * 10) },
      { protocol: 'udp' },
      { protocol: 'icmp' },
      { protocol: 'icmpv6' },
      { protocol: 'sctp', port: 22 },
      { protocol: 'any' },
    ] as const
  ).filter(() => rand() < 0.3);

  return {
    action: rand() < 0.65 ? 'allow' : 'deny',
    peers,
    ...(services.length > 0 ? { services: [...services] } : {}),
  };
}

function randomPolicy(rand: () => number, name: string, lists: string[]): Policy {
  const rules = (n: number) =>
    Array.from({ length: Math.floor(rand() * (n + 1)) }, () => randomRule(rand, lists));
  // Mostly scoped on the workload of interest, so its rule set changes often.
  const scope = rand() < 0.7 ? { matchLabels: { app: 'a' } } : randomSelector(rand);
  return { name, scope, ingress: rules(3), egress: rules(3) };
}

function randomAddresses(rand: () => number): string[] {
  const v4 = `10.0.0.${Math.floor(rand() * 32)}`;
  const v6 = `fd00::${Math.floor(rand() * 32).toString(16)}`;
  return rand() < 0.3 ? [v4, v6] : rand() < 0.7 ? [v4] : [v6];
}

function randomWorkload(rand: () => number, name: string): Workload {
  return {
    name,
    addresses: name === WORKLOAD ? ['10.0.0.1'] : randomAddresses(rand),
    labels: { app: name === WORKLOAD ? 'a' : APPS[Math.floor(rand() * APPS.length)]! },
    mode: {
      ingress: rand() < 0.5 ? 'enforce' : 'monitor',
      egress: rand() < 0.5 ? 'enforce' : 'monitor',
    },
  };
}

function randomIpList(rand: () => number, name: string) {
  const cidrs = Array.from({ length: 1 + Math.floor(rand() * 3) }, () =>
    rand() < 0.6
      ? `10.0.0.${Math.floor(rand() * 32)}/32`
      : `fd00::${Math.floor(rand() * 32).toString(16)}/128`,
  );
  return { name, cidrs };
}

export function randomState(rand: () => number): PolicyState {
  const lists = ['l0', 'l1'];
  return {
    workloads: [WORKLOAD, 'w1', 'w2', 'w3'].map((n) => randomWorkload(rand, n)),
    ipLists: lists.map((n) => randomIpList(rand, n)),
    services: [],
    policies: ['p0', 'p1', 'p2'].map((n) => randomPolicy(rand, n, lists)),
  };
}

/** One random valid change to the calculator's state; returns its delta. */
export function randomChange(rand: () => number, calc: Calculator): CalcDelta {
  const k = rand();
  const lists = ['l0', 'l1'];
  let result: CalcResult;
  if (k < 0.45) {
    const name = ['w1', 'w2', 'w3', 'w4', WORKLOAD][Math.floor(rand() * 5)]!;
    result = calc.upsertWorkload(randomWorkload(rand, name));
  } else if (k < 0.6)
    result = calc.upsertIpList(randomIpList(rand, lists[Math.floor(rand() * 2)]!));
  else if (k < 0.65)
    result = calc.deleteWorkload(['w1', 'w2', 'w3', 'w4'][Math.floor(rand() * 4)]!);
  else if (k < 0.7) result = calc.deletePolicy(['p0', 'p1', 'p2'][Math.floor(rand() * 3)]!);
  else
    result = calc.upsertPolicy(
      randomPolicy(rand, ['p0', 'p1', 'p2'][Math.floor(rand() * 3)]!, lists),
    );
  if (result.diagnostics.length > 0) throw new Error(JSON.stringify(result.diagnostics));
  return result.delta;
}

/** The workload's policy as the calculator holds it now. */
export function currentPolicy(calc: Calculator, workload = WORKLOAD): GroupPolicy {
  const ruleSet = calc.ruleSet(workload)!;
  const ids = [...new Set(ruleSet.rules.flatMap((r) => r.groups))].sort();
  return {
    ruleSet,
    groups: new Map(ids.map((id) => [id, calc.group(id)!.map(toAddressRange)])),
  };
}

/**
 * What the control plane sends the workload for one calculator delta (undefined: nothing
 * for it): new groups whole, dropped groups deleted, changed groups element by element.
 */
export function updateFor(
  delta: CalcDelta,
  calc: Calculator,
  base: string,
  hash: string,
  revision: number,
  workload = WORKLOAD,
): PolicyUpdate | undefined {
  const mine = delta.workloads.find((w) => w.workloadId === workload);
  const created = new Set(mine?.groupsAdded ?? []);
  const groups: GroupUpdate[] = [];
  for (const id of created) {
    const added = calc.group(id)!.map(toAddressRange);
    groups.push({ id, created: true, deleted: false, added, removed: [] });
  }
  for (const id of mine?.groupsRemoved ?? []) {
    groups.push({ id, created: false, deleted: true, added: [], removed: [] });
  }
  for (const g of delta.groups) {
    if (created.has(g.id) || g.deleted || g.created || !g.workloads.includes(workload)) continue;
    groups.push({
      id: g.id,
      created: false,
      deleted: false,
      added: g.added.map(toAddressRange),
      removed: g.removed.map(toAddressRange),
    });
  }
  if (!mine && groups.length === 0) return undefined;
  return {
    baseHash: base,
    hash,
    revision,
    full: false,
    last: true,
    ruleSet: mine?.ruleSet,
    groups,
  };
}

/** A calculator loaded with a random state (seeded). */
export function randomCalculator(rand: () => number): Calculator {
  const calc = createCalculator();
  const loaded = calc.load(randomState(rand));
  if (loaded.diagnostics.length > 0) throw new Error(JSON.stringify(loaded.diagnostics));
  return calc;
}

/**
 * `update` cut into chunks the way a control plane splits a large one: the rule set in the
 * first, each group's ranges spread over several chunks (`created` only in the first).
 */
export function chunked(update: PolicyUpdate, perChunk = 2): PolicyUpdate[] {
  const pieces: GroupUpdate[] = [];
  for (const g of update.groups) {
    const ops = [
      ...g.removed.map((r) => ({ removed: [r], added: [] })),
      ...g.added.map((r) => ({ removed: [], added: [r] })),
    ];
    if (ops.length === 0) pieces.push(g);
    for (let i = 0; i < ops.length; i += perChunk) {
      const part = ops.slice(i, i + perChunk);
      pieces.push({
        id: g.id,
        created: i === 0 && g.created,
        deleted: i === 0 && g.deleted,
        added: part.flatMap((p) => p.added),
        removed: part.flatMap((p) => p.removed),
      });
    }
  }
  const out: PolicyUpdate[] = [];
  for (let i = 0; i === 0 || i < pieces.length; i += perChunk) {
    out.push({
      ...update,
      last: false,
      ruleSet: i === 0 ? update.ruleSet : undefined,
      groups: pieces.slice(i, i + perChunk),
    });
  }
  out[out.length - 1]!.last = true;
  return out;
}
