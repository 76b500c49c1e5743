import type { NftCommand, NftDriver, NftObject } from './driver.js';
import { keyParts, type Part, PROTO_NAMES } from './elements.js';
import { NftError } from './errors.js';
import { read } from './fake-read.js';
import {
  type Body,
  type Counter,
  EBUSY,
  EEXIST,
  EINVAL,
  ENFILE,
  ENOENT,
  EOPNOTSUPP,
  isRecord,
  type NamedSet,
  Refusal,
  refuse,
  type State,
  type Table,
  tableKey,
} from './fake-state.js';
import { readCommandOf } from './run.js';
import type { Transaction } from './transaction.js';

/**
 * An in-memory nftables for unit tests. It refuses what the kernel refuses (missing tables,
 * chains, sets and counters, deleting what is absent or in use, overlapping intervals) with
 * the kernel's errno text, and applies a batch to a copy that it keeps only on success.
 * Elements and expressions are kept as given: unlike nft it does not merge ranges into
 * prefixes or rename values, except protocol numbers in inet_proto keys (6 -> 'tcp').
 */
export interface FakeNft extends NftDriver {
  readonly backend: 'fake';
  /** The last transaction submitted to the "kernel" (valid, applied or refused); check() excluded. */
  readonly lastTransaction: Transaction | undefined;
  /** The whole ruleset in the shape of `nft -j list ruleset`, without metainfo. */
  dump(): NftObject[];
  /** Simulates traffic: sets a named counter's values. `table` disambiguates ('inet bulkhead'). */
  setCounter(name: string, packets: number, bytes: number, table?: string): void;
  /**
   * Simulates one packet through a rule `add @set { key }` (the packet path, not a batch):
   * adds the element unless the set is full (then, as in the kernel, nothing is added and
   * false comes back), and counts the packet in the element's counter when the set has one.
   */
  packetAdd(set: string, key: unknown, bytes: number, table?: string): boolean;
}

const PRIORITIES: Record<string, number> = {
  raw: -300,
  mangle: -150,
  dstnat: -100,
  filter: 0,
  security: 50,
  srcnat: 100,
};

export function createFakeNft(): FakeNft {
  let state: State = { nextHandle: 1, tables: new Map() };
  let last: Transaction | undefined;

  function run(tx: Transaction, keep: boolean): void {
    if (tx.error !== undefined) throw tx.error;
    if (keep) last = tx;
    const next = structuredClone(state);
    tx.commands.forEach((cmd, i) => {
      const [verb, obj] = Object.entries(cmd)[0] as [string, Body];
      const [kind, body] = Object.entries(obj)[0] as [string, Body];
      try {
        execute(next, verb, kind, body);
      } catch (err) {
        if (!(err instanceof Refusal)) throw err;
        const detail = `Error: Could not process rule: ${err.message} in command ${i} (${verb} ${kind})`;
        throw new NftError('NFT_APPLY_FAILED', `nftables refused the batch: ${detail}`, {
          cause: detail,
        });
      }
    });
    if (keep) state = next;
  }

  const fake: FakeNft = {
    backend: 'fake',
    get lastTransaction() {
      return last;
    },
    async apply(tx) {
      run(tx, true);
    },
    async check(tx) {
      run(tx, false);
    },
    async list(command: NftCommand, options): Promise<NftObject[]> {
      const { verb, what, arg } = readCommandOf(command);
      try {
        const out = structuredClone(read(state, verb, what, isRecord(arg) ? arg : null));
        if (options?.terse) {
          for (const o of out) delete ((o.set ?? o.map) as Body | undefined)?.elem;
        }
        return out;
      } catch (err) {
        if (!(err instanceof Refusal)) throw err;
        const detail = `Error: ${err.message}`;
        throw new NftError('NFT_LIST_FAILED', `nftables refused the read: ${detail}`, {
          cause: detail,
        });
      }
    },
    close() {},
    dump() {
      return structuredClone(read(state, 'list', 'ruleset', null));
    },
    setCounter(name, packets, bytes, table) {
      const found = [...state.tables.entries()]
        .filter(([key]) => table === undefined || key === table)
        .map(([, t]) => t.counters.get(name))
        .filter((c): c is Counter => c !== undefined);
      if (found.length !== 1) {
        throw new Error(`setCounter: ${found.length} counters named ${name}; pass the table`);
      }
      const c = found[0]!;
      c.packets = packets;
      c.bytes = bytes;
    },
    packetAdd(name, key, bytes, table) {
      const found = [...state.tables.entries()]
        .filter(([k]) => table === undefined || k === table)
        .map(([, t]) => [t, t.sets.get(name)] as const)
        .filter((x): x is readonly [Table, NamedSet] => x[1]?.kind === 'set');
      if (found.length !== 1) {
        throw new Error(`packetAdd: ${found.length} sets named ${name}; pass the table`);
      }
      const [t, set] = found[0]!;
      const parts = keyOf(set, normalizeElement(key, typesOf(set), false));
      let elem = set.elems.find((x) => sameKey(keyOf(set, x), parts));
      if (elem === undefined) {
        try {
          addElements(t, set, [key], false);
        } catch (err) {
          if (err instanceof Refusal) return false;
          throw err;
        }
        elem = set.elems[set.elems.length - 1];
      }
      const counter = isRecord(elem) && isRecord(elem.elem) ? elem.elem.counter : undefined;
      if (isRecord(counter)) {
        counter.packets = Number(counter.packets) + 1;
        counter.bytes = Number(counter.bytes) + bytes;
      }
      return true;
    },
  };
  return fake;
}

// ---- writes ----

function execute(s: State, verb: string, kind: string, body: Body): void {
  if (kind === 'table') {
    tableOp(s, verb, body);
    return;
  }
  const t = s.tables.get(tableKey(body.family, body.table));
  if (t === undefined) refuse(ENOENT, `table ${body.family} ${body.table} does not exist`);
  if (kind === 'chain') chainOp(t, verb, body);
  else if (kind === 'rule') ruleOp(t, verb, body);
  else if (kind === 'set' || kind === 'map') setOp(t, verb, kind, body);
  else if (kind === 'element') elementOp(t, verb, body);
  else if (kind === 'counter') counterOp(t, verb, body);
  else refuse(EINVAL, `unknown object ${kind}`);
}

function byNameOrHandle<T extends { handle: number }>(
  m: Map<string, T>,
  body: Body,
): [string, T] | undefined {
  if (typeof body.name === 'string') {
    const v = m.get(body.name);
    return v === undefined ? undefined : [body.name, v];
  }
  return [...m.entries()].find(([, v]) => v.handle === body.handle);
}

function tableOp(s: State, verb: string, body: Body): void {
  const ofFamily = [...s.tables.values()].filter((t) => t.body.family === body.family);
  const found = byNameOrHandle(new Map(ofFamily.map((t) => [t.body.name as string, t])), body);
  const key = tableKey(body.family, body.name);
  const what = `table ${body.family} ${body.name ?? body.handle}`;
  if (verb === 'add' || verb === 'create') {
    if (found !== undefined) {
      if (verb === 'create') refuse(EEXIST, `${what} exists`);
      return;
    }
    const { handle: _h, ...rest } = body;
    s.tables.set(key, {
      handle: s.nextHandle++,
      body: rest,
      nextHandle: 1,
      chains: new Map(),
      sets: new Map(),
      counters: new Map(),
    });
    return;
  }
  if (found === undefined) refuse(ENOENT, `${what} does not exist`);
  const t = found[1];
  if (verb === 'delete') {
    s.tables.delete(tableKey(t.body.family, t.body.name));
  } else if (verb === 'flush') {
    // Like the kernel: rules go, chains, sets (with their elements) and counters stay.
    for (const c of t.chains.values()) c.rules = [];
  }
}

const BASE_KEYS = ['type', 'hook', 'prio', 'dev'] as const;

function chainOp(t: Table, verb: string, body: Body): void {
  const found = byNameOrHandle(t.chains, body);
  const what = `chain ${body.name ?? body.handle}`;
  if (verb === 'add' || verb === 'create') {
    const { handle: _h, table: _t, family: _f, ...rest } = body;
    if (typeof rest.prio === 'string' && rest.prio in PRIORITIES) rest.prio = PRIORITIES[rest.prio];
    if (found !== undefined) {
      if (verb === 'create') refuse(EEXIST, `${what} exists`);
      const old = found[1].body;
      if (BASE_KEYS.some((k) => JSON.stringify(old[k]) !== JSON.stringify(rest[k]))) {
        refuse(EOPNOTSUPP, `${what} exists with another type, hook or priority`);
      }
      if (rest.policy !== undefined) old.policy = rest.policy;
      return;
    }
    t.chains.set(body.name as string, { handle: t.nextHandle++, body: rest, rules: [] });
    return;
  }
  if (found === undefined) refuse(ENOENT, `${what} does not exist`);
  const [name, chain] = found;
  if (verb === 'flush') {
    chain.rules = [];
    return;
  }
  // The kernel deletes a chain with its rules; only references from elsewhere keep it.
  if (references(t).chains.has(name)) refuse(EBUSY, `${what} is the target of a jump or goto`);
  t.chains.delete(name);
}

function ruleOp(t: Table, verb: string, body: Body): void {
  const chain = t.chains.get(body.chain as string);
  if (chain === undefined) refuse(ENOENT, `chain ${body.chain} does not exist`);
  const at = (handle: unknown): number => {
    const i = chain.rules.findIndex((r) => r.handle === handle);
    if (i < 0) refuse(ENOENT, `rule handle ${handle} not in chain ${body.chain}`);
    return i;
  };
  if (verb === 'delete') {
    chain.rules.splice(at(body.handle), 1);
    return;
  }
  checkRefs(t, collectRefs(body.expr));
  const { handle, table: _t, family: _f, chain: _c, ...rest } = body;
  const rule = { handle: t.nextHandle++, body: rest };
  // As nft: `handle` on add means "after the rule with that handle".
  if (handle === undefined) chain.rules.push(rule);
  else chain.rules.splice(at(handle) + 1, 0, rule);
}

function setOp(t: Table, verb: string, kind: 'set' | 'map', body: Body): void {
  const found = byNameOrHandle(t.sets, body);
  const what = `${kind} ${body.name ?? body.handle}`;
  if (verb === 'add' || verb === 'create') {
    const { handle: _h, table: _t, family: _f, elem, ...rest } = body;
    if (found !== undefined) {
      if (verb === 'create') refuse(EEXIST, `${what} exists`);
      const old = found[1];
      const same = (k: string) => JSON.stringify(old.body[k]) === JSON.stringify(rest[k]);
      if (old.kind !== kind || !same('type') || !same('map') || !same('flags')) {
        refuse(EEXIST, `${what} exists with another definition`);
      }
      if (Array.isArray(elem)) addElements(t, old, elem, false);
      return;
    }
    const set: NamedSet = { kind, handle: t.nextHandle++, body: rest, elems: [] };
    if (Array.isArray(elem)) addElements(t, set, elem, false);
    t.sets.set(body.name as string, set);
    return;
  }
  if (found === undefined || found[1].kind !== kind) refuse(ENOENT, `${what} does not exist`);
  const [name, set] = found;
  if (verb === 'flush') {
    set.elems = [];
    return;
  }
  if (references(t).sets.has(name)) refuse(EBUSY, `${what} is used by a rule`);
  t.sets.delete(name);
}

function elementOp(t: Table, verb: string, body: Body): void {
  const set = t.sets.get(body.name as string);
  if (set === undefined) refuse(ENOENT, `set or map ${body.name} does not exist`);
  const elems = body.elem as unknown[];
  if (verb === 'delete') {
    for (const e of elems) {
      const key = keyOf(set, e);
      const i = set.elems.findIndex((x) => sameKey(keyOf(set, x), key));
      if (i < 0) refuse(ENOENT, `element ${JSON.stringify(e)} not in ${body.name}`);
      set.elems.splice(i, 1);
    }
    return;
  }
  if (verb === 'flush') {
    set.elems = [];
    return;
  }
  addElements(t, set, elems, verb === 'create');
}

function counterOp(t: Table, verb: string, body: Body): void {
  const found = byNameOrHandle(t.counters, body);
  const what = `counter ${body.name ?? body.handle}`;
  if (verb === 'add' || verb === 'create') {
    if (found !== undefined) {
      if (verb === 'create') refuse(EEXIST, `${what} exists`);
      return;
    }
    const { handle: _h, table: _t, family: _f, packets, bytes, ...rest } = body;
    t.counters.set(body.name as string, {
      handle: t.nextHandle++,
      body: rest,
      packets: typeof packets === 'number' ? packets : 0,
      bytes: typeof bytes === 'number' ? bytes : 0,
    });
    return;
  }
  if (found === undefined) refuse(ENOENT, `${what} does not exist`);
  const [name, counter] = found;
  if (verb === 'reset') {
    counter.packets = 0;
    counter.bytes = 0;
    return;
  }
  if (references(t).counters.has(name)) refuse(EBUSY, `${what} is used by a rule`);
  t.counters.delete(name);
}

// ---- references ----

interface Refs {
  sets: Set<string>;
  chains: Set<string>;
  counters: Set<string>;
}

/** The named objects an expression (rule expr, map element value) refers to. */
function collectRefs(
  v: unknown,
  refs: Refs = { sets: new Set(), chains: new Set(), counters: new Set() },
): Refs {
  if (typeof v === 'string') {
    if (v.startsWith('@')) refs.sets.add(v.slice(1));
  } else if (Array.isArray(v)) {
    for (const x of v) collectRefs(x, refs);
  } else if (typeof v === 'object' && v !== null) {
    for (const [k, x] of Object.entries(v)) {
      if ((k === 'jump' || k === 'goto') && typeof (x as Body)?.target === 'string') {
        refs.chains.add((x as Body).target as string);
      } else if (k === 'counter' && typeof x === 'string') {
        refs.counters.add(x);
      } else {
        collectRefs(x, refs);
      }
    }
  }
  return refs;
}

function checkRefs(t: Table, refs: Refs): void {
  for (const s of refs.sets) if (!t.sets.has(s)) refuse(ENOENT, `set or map @${s} does not exist`);
  for (const c of refs.chains) if (!t.chains.has(c)) refuse(ENOENT, `chain ${c} does not exist`);
  for (const c of refs.counters)
    if (!t.counters.has(c)) refuse(ENOENT, `counter ${c} does not exist`);
}

/** Everything in the table that is referenced by a rule or a map element. */
function references(t: Table): Refs {
  const refs: Refs = { sets: new Set(), chains: new Set(), counters: new Set() };
  for (const c of t.chains.values()) for (const r of c.rules) collectRefs(r.body.expr, refs);
  for (const s of t.sets.values()) {
    if (s.kind === 'map') for (const e of s.elems) collectRefs((e as unknown[])[1], refs);
  }
  return refs;
}

// ---- elements ----

function isInterval(set: NamedSet): boolean {
  return Array.isArray(set.body.flags) && set.body.flags.includes('interval');
}

function typesOf(set: NamedSet): unknown[] {
  return Array.isArray(set.body.type) ? set.body.type : [set.body.type];
}

/** A set declared with `counter` gives every element one, listed as `{elem: {val, counter}}`. */
function hasElementCounters(set: NamedSet): boolean {
  return Array.isArray(set.body.stmt) && set.body.stmt.some((x) => isRecord(x) && 'counter' in x);
}

function addElements(t: Table, set: NamedSet, elems: unknown[], create: boolean): void {
  const types = typesOf(set);
  for (const raw of elems) {
    let e = normalizeElement(raw, types, set.kind === 'map');
    if (set.kind === 'map') {
      if (!Array.isArray(e) || e.length !== 2) refuse(EINVAL, `map element needs [key, value]`);
      checkRefs(t, collectRefs(e[1]));
    } else if (Array.isArray(e)) {
      refuse(EINVAL, 'set element with a value');
    }
    const key = keyOf(set, e);
    if (key.length !== types.length) {
      refuse(EINVAL, `element ${JSON.stringify(raw)} does not match type ${types.join(' . ')}`);
    }
    if (!isInterval(set) && key.some((p) => 'lo' in p && p.lo !== p.hi)) {
      refuse(EINVAL, `range or prefix ${JSON.stringify(raw)} in a set without flags interval`);
    }
    const same = set.elems.findIndex((x) => sameKey(keyOf(set, x), key));
    if (same >= 0) {
      if (create) refuse(EEXIST, `element ${JSON.stringify(raw)} exists`);
      continue;
    }
    if (isInterval(set) && set.elems.some((x) => overlaps(keyOf(set, x), key))) {
      refuse(EEXIST, `element ${JSON.stringify(raw)} overlaps an existing interval`);
    }
    if (typeof set.body.size === 'number' && set.elems.length >= set.body.size) {
      refuse(ENFILE, `${set.kind} ${set.body.name} is full (size ${set.body.size})`);
    }
    if (set.kind === 'set' && hasElementCounters(set)) {
      // As the kernel: counter values given with an element are ignored, it starts at zero.
      const val = isRecord(e) && isRecord(e.elem) ? e.elem.val : e;
      e = { elem: { val, counter: { packets: 0, bytes: 0 } } };
    }
    set.elems.push(e);
  }
}

/** nft prints protocol numbers in inet_proto keys by name; do the same so lists compare. */
function normalizeElement(raw: unknown, types: unknown[], isMap: boolean): unknown {
  const fix = (key: unknown): unknown => {
    const parts = isRecord(key) && Array.isArray(key.concat) ? key.concat : [key];
    const fixed = parts.map((p, i) =>
      types[i] === 'inet_proto' && typeof p === 'number' && PROTO_NAMES[p] !== undefined
        ? PROTO_NAMES[p]
        : p,
    );
    return isRecord(key) && Array.isArray(key.concat) ? { concat: fixed } : fixed[0];
  };
  if (isMap && Array.isArray(raw)) return [fixKeyWrapped(raw[0], fix), raw[1]];
  return fixKeyWrapped(raw, fix);
}

function fixKeyWrapped(key: unknown, fix: (k: unknown) => unknown): unknown {
  if (isRecord(key) && isRecord(key.elem)) return { elem: { ...key.elem, val: fix(key.elem.val) } };
  return fix(key);
}

function keyOf(set: NamedSet, e: unknown): Part[] {
  return keyParts(e, set.kind === 'map');
}

function partEq(a: Part, b: Part): boolean {
  if ('opaque' in a || 'opaque' in b)
    return 'opaque' in a && 'opaque' in b && a.opaque === b.opaque;
  return a.lo === b.lo && a.hi === b.hi;
}

function sameKey(a: Part[], b: Part[]): boolean {
  return a.length === b.length && a.every((p, i) => partEq(p, b[i]!));
}

/** Concatenated intervals overlap when every component does (the boxes intersect). */
function overlaps(a: Part[], b: Part[]): boolean {
  return (
    a.length === b.length &&
    a.every((p, i) => {
      const q = b[i]!;
      if ('opaque' in p || 'opaque' in q) return partEq(p, q);
      return p.lo <= q.hi && q.lo <= p.hi;
    })
  );
}
