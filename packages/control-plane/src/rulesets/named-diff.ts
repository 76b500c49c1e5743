// What differs between two lists of named objects (a policy state's sections), for the stages
// that feed a calculator only what changed. Objects shared by both lists are the same without a
// look at their content: states are values that share what a change did not make new. Pure.

/** Equal as JSON; the same object is. */
export function same(a: unknown, b: unknown): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Equal flat records of strings (labels, modes), key order aside; no allocation: a provision
 * compares every workload's labels and modes with what was fed.
 */
export function sameRecord<T extends object>(a: T, b: T): boolean {
  if (a === b) return true;
  const [x, y] = [a as Record<string, unknown>, b as Record<string, unknown>];
  let keys = 0;
  for (const k in x) {
    if (x[k] !== y[k] || !Object.hasOwn(y, k)) return false;
    keys++;
  }
  for (const _ in y) keys--;
  return keys === 0;
}

/**
 * The objects of `after` that are new or differ from `before`'s (by `equal`, default `same`),
 * and the names it dropped.
 */
export function diffNamed<T extends { name: string }>(
  before: readonly T[],
  after: readonly T[],
  equal: (a: T, b: T) => boolean = same,
): { upserts: T[]; deletes: string[] } {
  if (before === after) return { upserts: [], deletes: [] };
  const old = new Map(before.map((o) => [o.name, o]));
  const names = new Set(after.map((o) => o.name));
  return {
    upserts: after.filter((o) => {
      const was = old.get(o.name);
      return was === undefined || !equal(was, o);
    }),
    deletes: before.filter((o) => !names.has(o.name)).map((o) => o.name),
  };
}
