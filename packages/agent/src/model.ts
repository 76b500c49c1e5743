// The desired state of the agent's table, as data: chains with their rules, sets and maps
// with their elements, named counters. Owns turning that state into nftables transactions:
// the full (cold) load and the delta between two states. Knows nothing of policy (the
// renderer builds a TableModel) and does no I/O.
import { Transaction } from '@bulkhead/nftables';

export interface BaseChain {
  type: string;
  hook: string;
  prio: number;
  policy: 'accept' | 'drop';
}

export interface RuleModel {
  expr: unknown[];
  /** Identifies the rule in the kernel (nft lists expressions in its own words). */
  comment: string;
}

export interface ChainModel {
  base?: BaseChain;
  rules: RuleModel[];
}

export interface SetModel {
  kind: 'set' | 'map';
  /** The declaration without family/table/name/elem: type, flags, map, timeout, size, stmt. */
  decl: Record<string, unknown>;
  /**
   * Elements as JSON texts, key text -> value text ('' in a set). undefined for a set the
   * kernel fills (flow sets): its elements are never written, compared or reset here.
   */
  elems: Map<string, string> | undefined;
}

export interface TableModel {
  family: string;
  name: string;
  counters: Set<string>;
  sets: Map<string, SetModel>;
  chains: Map<string, ChainModel>;
}

/**
 * Element changes of one set that the caller already knows (an update names them), so that
 * planDelta need not compare the set's elements: keys to delete and keys to add.
 */
export interface ElementPatch {
  added: string[];
  removed: string[];
}

/** Elements per `add element` command of a delta: bounds the size of one JSON object. */
export const ELEMENT_CHUNK = 4096;

function elemText(set: SetModel, key: string, value: string): string {
  return set.kind === 'map' ? `[${key},${value}]` : key;
}

function where(m: TableModel, name: string) {
  return { family: m.family, table: m.name, name };
}

function elementCommands(
  tx: Transaction,
  verb: 'add' | 'delete',
  m: TableModel,
  name: string,
  set: SetModel,
  keys: Iterable<string>,
): void {
  let chunk: string[] = [];
  for (const key of keys) {
    chunk.push(verb === 'delete' ? key : elemText(set, key, set.elems?.get(key) ?? ''));
    if (chunk.length === ELEMENT_CHUNK) {
      tx.elementsJson(verb, where(m, name), chunk);
      chunk = [];
    }
  }
  if (chunk.length > 0) tx.elementsJson(verb, where(m, name), chunk);
}

function addChain(tx: Transaction, m: TableModel, name: string, c: ChainModel): void {
  tx.add({ chain: { ...where(m, name), ...c.base } });
}

function addRules(tx: Transaction, m: TableModel, name: string, c: ChainModel): void {
  for (const r of c.rules) {
    tx.add({ rule: { family: m.family, table: m.name, chain: name, ...r } });
  }
}

/**
 * The whole table as one atomic replacement (appended to `tx`) (add+delete+add), whether or not it exists.
 * Objects come before what refers to them: counters, empty chains, sets with their elements
 * (nft loads a declaration's elements much faster than `add element`), then rules.
 */
export function planFull(m: TableModel, tx = new Transaction()): Transaction {
  const table = { table: { family: m.family, name: m.name } };
  tx.add(table).delete(table).add(table);
  for (const name of m.counters) tx.add({ counter: where(m, name) });
  // Chains before maps: nft 1.0.6 refuses (ENOENT) a map element that jumps to a chain
  // declared after the map in the same batch.
  for (const [name, c] of m.chains) addChain(tx, m, name, c);
  for (const [name, s] of m.sets) {
    const body = { ...where(m, name), ...s.decl };
    if (!s.elems?.size) tx.add({ [s.kind]: body });
    else {
      // A set's keys are its element texts: no copy of each entry on a cold load.
      const texts =
        s.kind === 'set'
          ? Array.from(s.elems.keys())
          : Array.from(s.elems, ([k, v]) => elemText(s, k, v));
      tx.addSetJson(s.kind, body, texts);
    }
  }
  for (const [name, c] of m.chains) addRules(tx, m, name, c);
  return tx;
}

const sameJson = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/**
 * Only what differs between `prev` (what the kernel holds) and `next`, appended to `tx`;
 * undefined when it cannot be expressed as a delta (another table, a set redeclared), then
 * planFull is the way. Order: new objects; element deletes (before the adds, so an interval
 * that moves never overlaps itself); changed chains flushed and refilled; element adds;
 * removed objects last, once nothing refers to them. Counters of kept rules, and every set
 * the kernel fills, stay untouched. Elements are compared only where needed: a set whose
 * SetModel object is the same in both is unchanged, and a set named in `patches` changes
 * by exactly that patch (its elems may already hold the result), so an update costs what it
 * changed, not the size of the table.
 */
export function planDelta(
  prev: TableModel,
  next: TableModel,
  tx = new Transaction(),
  patches: ReadonlyMap<string, ElementPatch> = new Map(),
): Transaction | undefined {
  if (prev.family !== next.family || prev.name !== next.name) return undefined;
  for (const [name, s] of next.sets) {
    const old = prev.sets.get(name);
    if (old && (old.kind !== s.kind || !sameJson(old.decl, s.decl))) return undefined;
    if (old && (old.elems === undefined) !== (s.elems === undefined)) return undefined;
  }
  for (const [name, c] of next.chains) {
    const old = prev.chains.get(name);
    // Only a base chain's policy can change in place (EOPNOTSUPP otherwise).
    if (old && !sameJson({ ...old.base, policy: 0 }, { ...c.base, policy: 0 })) return undefined;
  }
  for (const name of next.counters)
    if (!prev.counters.has(name)) tx.add({ counter: where(next, name) });
  for (const [name, c] of next.chains) {
    const old = prev.chains.get(name);
    if (!old || !sameJson(old.base, c.base)) addChain(tx, next, name, c);
  }
  for (const [name, s] of next.sets) {
    if (!prev.sets.has(name)) tx.add({ [s.kind]: { ...where(next, name), ...s.decl } });
  }
  for (const [name, old] of prev.sets) {
    const s = next.sets.get(name);
    if (!s?.elems || !old.elems || s === old) continue;
    const patch = patches.get(name);
    const gone: string[] = patch ? patch.removed : [];
    if (!patch)
      for (const [key, value] of old.elems) if (s.elems.get(key) !== value) gone.push(key);
    elementCommands(tx, 'delete', next, name, old, gone);
  }
  for (const [name, c] of next.chains) {
    const old = prev.chains.get(name);
    if (old && sameJson(old.rules, c.rules)) continue;
    if (old) tx.flush({ chain: where(next, name) });
    addRules(tx, next, name, c);
  }
  // A removed chain's rules may use a removed set: empty it before anything goes.
  for (const name of prev.chains.keys()) {
    if (!next.chains.has(name)) tx.flush({ chain: where(next, name) });
  }
  for (const [name, s] of next.sets) {
    const before = prev.sets.get(name);
    if (!s.elems || s === before) continue;
    const old = before?.elems;
    const patch = patches.get(name);
    const added =
      patch && old
        ? patch.added
        : old
          ? [...s.elems].filter(([k, v]) => old.get(k) !== v).map(([k]) => k)
          : s.elems.keys();
    elementCommands(tx, 'add', next, name, s, added);
  }
  for (const [name, s] of prev.sets)
    if (!next.sets.has(name)) tx.delete({ [s.kind]: where(next, name) });
  for (const name of prev.chains.keys())
    if (!next.chains.has(name)) tx.delete({ chain: where(next, name) });
  for (const name of prev.counters)
    if (!next.counters.has(name)) tx.delete({ counter: where(next, name) });
  return tx;
}
