// Compares what the kernel lists for the agent's table with the desired TableModel and says
// what differs. Pure: no I/O, no repair (the dataplane decides what to do). Tolerates what
// nft changes on its own when listing: rules in nft's words (compared by their comment),
// ranges listed as prefixes, protocol numbers listed as names, extra handles.
import { elementKey, type NftObject } from '@bulkhead/nftables';
import type { SetModel, TableModel } from './model.js';

export interface ElementDrift {
  set: string;
  /** Desired elements the kernel lacks, and kernel elements nobody asked for. */
  missing: number;
  extra: number;
  /** A few of them, canonical form (`-` missing, `+` extra). */
  sample: string[];
}

export interface Drift {
  /** The table itself is gone. */
  tableMissing: boolean;
  /** Chains missing, foreign, redeclared, or whose rules differ. */
  chains: string[];
  /** Sets/maps missing, foreign or redeclared. */
  sets: string[];
  elements: ElementDrift[];
  /** Named counters missing or foreign. */
  counters: string[];
}

type Body = Record<string, unknown>;

function bodies(objects: NftObject[], kind: string): Body[] {
  return objects.map((o) => o[kind] as Body | undefined).filter((b): b is Body => b !== undefined);
}

const sameJson = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/**
 * An order-independent digest of canonical elements: their count and the sums (mod 2^32)
 * of two 32-bit hashes of each. Integer sums, so the order of elements cannot change it.
 */
interface Digest {
  count: number;
  a: number;
  b: number;
}

function digestOf(keys: Iterable<string>): Digest {
  const d = { count: 0, a: 0, b: 0 };
  for (const k of keys) {
    let a = 0x811c9dc5;
    let b = 0x01000193 ^ k.length;
    for (let i = 0; i < k.length; i++) {
      const c = k.charCodeAt(i);
      a = Math.imul(a ^ c, 0x01000193);
      b = Math.imul(b ^ c, 0x5bd1e995);
    }
    d.count++;
    d.a = (d.a + (a >>> 0)) >>> 0;
    d.b = (d.b + (b >>> 0)) >>> 0;
  }
  return d;
}

function* canonicalModel(set: SetModel): Iterable<string> {
  const isMap = set.kind === 'map';
  for (const [key, value] of set.elems ?? []) {
    const e = JSON.parse(isMap ? `[${key},${value}]` : key) as unknown;
    yield elementKey(e, isMap);
  }
}

// The desired side of a comparison does not change between checks: digest it once.
const modelDigests = new WeakMap<SetModel, Digest>();

function elementDrift(name: string, set: SetModel, listed: unknown[]): ElementDrift | undefined {
  const isMap = set.kind === 'map';
  const kernel = listed.map((e) => elementKey(e, isMap));
  let want = modelDigests.get(set);
  if (!want) {
    want = digestOf(canonicalModel(set));
    modelDigests.set(set, want);
  }
  const got = digestOf(kernel);
  if (got.count === want.count && got.a === want.a && got.b === want.b) return undefined;
  // Rare path: say exactly what differs.
  const desired = new Set(canonicalModel(set));
  const present = new Set(kernel);
  const missing = [...desired].filter((k) => !present.has(k));
  const extra = [...present].filter((k) => !desired.has(k));
  return {
    set: name,
    missing: missing.length,
    extra: extra.length,
    sample: [...missing.slice(0, 3).map((k) => `-${k}`), ...extra.slice(0, 3).map((k) => `+${k}`)],
  };
}

/**
 * What differs between the kernel's listing of the table and `m`; undefined if nothing.
 * `elements: false` for a terse listing (no elements): only the structure is compared.
 */
export function compareTable(
  objects: NftObject[],
  m: TableModel,
  { elements = true } = {},
): Drift | undefined {
  const mine = (b: Body) => b.family === m.family && (b.table ?? b.name) === m.name;
  const drift: Drift = { tableMissing: false, chains: [], sets: [], elements: [], counters: [] };
  if (!bodies(objects, 'table').some(mine)) {
    return { ...drift, tableMissing: true };
  }

  const kernelChains = new Map(
    bodies(objects, 'chain')
      .filter(mine)
      .map((c) => [c.name, c]),
  );
  const rulesOf = new Map<unknown, unknown[]>();
  for (const r of bodies(objects, 'rule').filter(mine)) {
    const list = rulesOf.get(r.chain) ?? [];
    list.push(r.comment);
    rulesOf.set(r.chain, list);
  }
  for (const [name, c] of m.chains) {
    const k = kernelChains.get(name);
    const base = k && { type: k.type, hook: k.hook, prio: k.prio, policy: k.policy };
    const wantBase = c.base ?? {
      type: undefined,
      hook: undefined,
      prio: undefined,
      policy: undefined,
    };
    if (
      !k ||
      !sameJson(base, wantBase) ||
      !sameJson(
        rulesOf.get(name) ?? [],
        c.rules.map((r) => r.comment),
      )
    ) {
      drift.chains.push(name);
    }
  }
  for (const name of kernelChains.keys()) {
    if (!m.chains.has(name as string)) drift.chains.push(String(name));
  }

  const kernelSets = new Map<unknown, { kind: string; body: Body }>();
  for (const kind of ['set', 'map']) {
    for (const b of bodies(objects, kind).filter(mine)) kernelSets.set(b.name, { kind, body: b });
  }
  for (const [name, s] of m.sets) {
    const k = kernelSets.get(name);
    if (
      !k ||
      k.kind !== s.kind ||
      Object.entries(s.decl).some(([f, v]) => !sameJson(k.body[f], v))
    ) {
      drift.sets.push(name);
      continue;
    }
    if (!s.elems || !elements) continue;
    const e = elementDrift(name, s, (k.body.elem as unknown[] | undefined) ?? []);
    if (e) drift.elements.push(e);
  }
  for (const name of kernelSets.keys())
    if (!m.sets.has(name as string)) drift.sets.push(String(name));

  const kernelCounters = new Set(
    bodies(objects, 'counter')
      .filter(mine)
      .map((c) => c.name),
  );
  for (const name of m.counters) if (!kernelCounters.has(name)) drift.counters.push(name);
  for (const name of kernelCounters)
    if (!m.counters.has(name as string)) drift.counters.push(String(name));

  const same =
    drift.chains.length + drift.sets.length + drift.elements.length + drift.counters.length === 0;
  return same ? undefined : drift;
}

/** A drift as AgentEvent attributes (string values, bounded length). */
export function driftAttributes(d: Drift): Record<string, string> {
  const list = (xs: string[]) =>
    xs.length > 10 ? `${xs.slice(0, 10).join(',')},...` : xs.join(',');
  const out: Record<string, string> = {};
  if (d.tableMissing) out.table = 'missing';
  if (d.chains.length) out.chains = list(d.chains);
  if (d.sets.length) out.sets = list(d.sets);
  if (d.counters.length) out.counters = list(d.counters);
  if (d.elements.length) {
    out.elements = list(d.elements.map((e) => `${e.set}:-${e.missing}+${e.extra}`));
    out.elementSample = d.elements
      .flatMap((e) => e.sample.map((s) => `${e.set} ${s}`))
      .slice(0, 6)
      .join('; ');
  }
  return out;
}
