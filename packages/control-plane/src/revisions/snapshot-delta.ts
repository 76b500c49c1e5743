// A revision snapshot as what changed since the one before it. A snapshot made of named lists
// (an object whose every value is a list of objects with distinct string names, as a policy
// state is) is described against its base by, per list that differs, the items that differ or
// are new and, when the names or their order differ, the names in order. Applying it gives back
// the snapshot exactly (as JSON): items are compared by their JSON text, so key order counts.
// Pure: must not know the store or what the lists mean.
import { ControlPlaneError } from '../errors.js';

type Named = { name: string };
type Lists = Record<string, readonly Named[]>;

/** Per list that differs from the base: the changed or new items, and the names if reordered. */
export type SnapshotDelta = Record<string, { names?: string[]; items: Named[] }>;

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** Lists known to hold distinct named items (a base was the next snapshot before). */
const named = new WeakSet<readonly unknown[]>();
function isNamedList(items: unknown): items is Named[] {
  if (!Array.isArray(items)) return false;
  if (named.has(items)) return true;
  const names = new Set<string>();
  for (const item of items) {
    if (!isRecord(item) || typeof item.name !== 'string' || names.has(item.name)) return false;
    names.add(item.name);
  }
  named.add(items);
  return true;
}

function asLists(v: unknown): Lists | undefined {
  if (!isRecord(v)) return undefined;
  for (const items of Object.values(v)) if (!isNamedList(items)) return undefined;
  return v as Lists;
}

/** JSON texts of items (an item of the base is compared again by the next revision). */
const texts = new WeakMap<object, string>();
function text(item: Named): string {
  let t = texts.get(item);
  if (t === undefined) {
    t = JSON.stringify(item);
    texts.set(item, t);
  }
  return t;
}

const differs = (was: Named | undefined, o: Named) =>
  was !== o && (was === undefined || text(was) !== text(o));

/** `after`'s items that differ from `before`'s in the same place, or undefined if a name does. */
function sameNamesChanged(
  before: readonly Named[],
  after: readonly unknown[],
): Named[] | undefined {
  if (after.length !== before.length) return undefined;
  const items: Named[] = [];
  for (let i = 0; i < after.length; i++) {
    const o = after[i];
    const was = before[i]!;
    if (o === was) continue;
    if (!isRecord(o) || o.name !== was.name) return undefined;
    if (differs(was, o as Named)) items.push(o as Named);
  }
  return items;
}

/** `next` against `base`; undefined when either is not made of named lists of the same keys. */
export function deltaOf(base: unknown, next: unknown): SnapshotDelta | undefined {
  const b = asLists(base);
  if (!b || !isRecord(next)) return undefined;
  if (Object.keys(next).join('\0') !== Object.keys(b).join('\0')) return undefined;
  const delta: SnapshotDelta = {};
  for (const [key, after] of Object.entries(next)) {
    const before = b[key]!;
    if (after === before) continue;
    if (!Array.isArray(after)) return undefined;
    // The base's names in the same order: distinct named items, as the base's are. One pass:
    // an item that is the base's own object there is neither checked nor compared.
    const items = sameNamesChanged(before, after);
    if (items) {
      named.add(after);
      if (items.length > 0) delta[key] = { items };
      continue;
    }
    if (!isNamedList(after)) return undefined;
    const old = new Map(before.map((o) => [o.name, o]));
    delta[key] = {
      names: after.map((o) => o.name),
      items: after.filter((o) => differs(old.get(o.name), o)),
    };
  }
  return delta;
}

/** The snapshot `delta` was made from with `base`. */
export function applyDelta(base: unknown, delta: SnapshotDelta): Lists {
  const b = asLists(base);
  if (!b) throw new ControlPlaneError('INTERNAL', 'a revision delta needs the revision before it');
  const out: Record<string, readonly Named[]> = {};
  for (const [key, before] of Object.entries(b)) {
    const d = delta[key];
    if (!d) {
      out[key] = before;
      continue;
    }
    const byName = new Map(before.map((o) => [o.name, o]));
    for (const item of d.items) byName.set(item.name, item);
    out[key] = (d.names ?? before.map((o) => o.name)).map((name) => {
      const item = byName.get(name);
      if (!item) {
        throw new ControlPlaneError(
          'INTERNAL',
          `a revision delta names '${name}' it does not hold`,
        );
      }
      return item;
    });
  }
  return out;
}
