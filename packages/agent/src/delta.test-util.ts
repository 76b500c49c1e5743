// Random RuleSets whose successive revisions move intervals around (a /24 becomes two /25s
// with other rules, rules come and go, modes flip), and a normal form of a listed table so
// that a table reached by deltas can be compared with one loaded from scratch.
import { elementKey, type NftObject } from '@bulkhead/nftables';
import { Action, Direction, type Entry, Mode, type Rule, type RuleSet } from '@bulkhead/proto';

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

const IN = Direction.DIRECTION_INGRESS;
const OUT = Direction.DIRECTION_EGRESS;

/** A RuleSet over a small address grid, so that revisions overlap and split each other. */
export function randomRuleSet(rand: () => number, revision: number): RuleSet {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const rules: Rule[] = [];
  for (const policy of ['a', 'b', 'c']) {
    for (const dir of ['ingress', 'egress'] as const) {
      for (let i = 0; i < 2; i++) {
        if (rand() < 0.5) continue;
        rules.push({
          id: `${policy}/${dir}/${i}`,
          direction: dir === 'ingress' ? IN : OUT,
          action: rand() < 0.7 ? Action.ACTION_ALLOW : Action.ACTION_DENY,
          policy,
        });
      }
    }
  }
  // Rule order changes between revisions: chains must follow ids, not indexes.
  rules.sort(() => rand() - 0.5);
  const entries: Entry[] = [];
  const ruleOf = (direction: Direction) => {
    const idx = rules.map((r, i) => (r.direction === direction ? i : -1)).filter((i) => i >= 0);
    return idx.length ? pick(idx) : undefined;
  };
  for (const direction of [IN, OUT]) {
    for (let cell = 0; cell < 6; cell++) {
      for (const [protocol, ports] of [
        [6, [80, 90]],
        [17, [53, 53]],
        [47, [0, 0]],
        [0, [0, 0]],
      ] as const) {
        const shape = pick(['none', 'none', 'whole', 'halves', 'host'] as const);
        const ranges6 = rand() < 0.3;
        const base = ranges6 ? `fd00:${cell}::` : `10.${direction}.${cell}.`;
        const spans: [string, string][] =
          shape === 'whole'
            ? [ranges6 ? [`${base}`, `${base}ff`] : [`${base}0`, `${base}255`]]
            : shape === 'halves'
              ? ranges6
                ? [
                    [`${base}`, `${base}7f`],
                    [`${base}80`, `${base}ff`],
                  ]
                : [
                    [`${base}0`, `${base}127`],
                    [`${base}128`, `${base}255`],
                  ]
              : shape === 'host'
                ? [ranges6 ? [`${base}5`, `${base}5`] : [`${base}5`, `${base}5`]]
                : [];
        for (const [addrFrom, addrTo] of spans) {
          const rule = ruleOf(direction);
          if (rule === undefined) continue;
          entries.push({
            direction,
            addrFrom,
            addrTo,
            protocol,
            portFrom: ports[0],
            portTo: ports[1],
            rule,
          });
        }
      }
    }
  }
  return {
    workloadId: 'w',
    revision,
    hash: `h${revision}`,
    ingressMode: rand() < 0.5 ? Mode.MODE_ENFORCE : Mode.MODE_MONITOR,
    egressMode: rand() < 0.5 ? Mode.MODE_ENFORCE : Mode.MODE_MONITOR,
    rules,
    entries,
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
