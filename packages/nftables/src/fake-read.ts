// The fake nftables' reads (fake.ts): `list` and `reset` over its state, in the shapes and order
// `nft -j` prints. Must not change anything but the counters a reset zeroes.
import type { NftObject } from './driver.js';
import {
  type Body,
  type Chain,
  type Counter,
  EINVAL,
  ENOENT,
  type NamedSet,
  type Rule,
  refuse,
  type State,
  type Table,
  tableKey,
} from './fake-state.js';

export function read(s: State, verb: string, what: string, arg: Body | null): NftObject[] {
  const tables = [...s.tables.values()].filter(
    (t) =>
      (arg?.family === undefined || t.body.family === arg.family) &&
      (arg?.table === undefined || t.body.name === arg.table),
  );
  const one = (): Table => {
    const t = s.tables.get(tableKey(arg?.family, arg?.table ?? arg?.name));
    if (t === undefined)
      refuse(ENOENT, `table ${arg?.family} ${arg?.table ?? arg?.name} does not exist`);
    return t;
  };
  if (verb === 'reset') {
    if (what !== 'counters' && what !== 'counter') refuse(EINVAL, `cannot reset ${what}`);
    const counters = what === 'counter' ? [namedCounter(one(), arg)] : tables.flatMap(countersOf);
    const out = counters.map(([t, c]) => counterObj(t, c));
    for (const [, c] of counters) {
      c.packets = 0;
      c.bytes = 0;
    }
    return out;
  }
  switch (what) {
    case 'ruleset':
      return [...s.tables.values()].flatMap(tableObjs);
    case 'table':
      return tableObjs(one());
    case 'tables':
      return tables.map(tableObj);
    case 'counters':
      return tables.flatMap(countersOf).map(([t, c]) => counterObj(t, c));
    case 'counter': {
      const [t, c] = namedCounter(one(), arg);
      return [counterObj(t, c)];
    }
    case 'sets':
    case 'maps':
      return tables.flatMap((t) =>
        [...t.sets.values()].filter((x) => `${x.kind}s` === what).map((x) => setObj(t, x, false)),
      );
    case 'set':
    case 'map': {
      const t = one();
      const x = t.sets.get(arg?.name as string);
      if (x === undefined || x.kind !== what) refuse(ENOENT, `${what} ${arg?.name} does not exist`);
      return [setObj(t, x, true)];
    }
    case 'chains':
      return tables.flatMap((t) => [...t.chains.values()].map((c) => chainObj(t, c)));
    case 'chain': {
      const t = one();
      const c = t.chains.get(arg?.name as string);
      if (c === undefined) refuse(ENOENT, `chain ${arg?.name} does not exist`);
      return [chainObj(t, c), ...c.rules.map((r) => ruleObj(t, c, r))];
    }
    default:
      refuse(EINVAL, `cannot list ${what}`);
  }
}

function countersOf(t: Table): [Table, Counter][] {
  return [...t.counters.values()].map((c) => [t, c]);
}

function namedCounter(t: Table, arg: Body | null): [Table, Counter] {
  const c = t.counters.get(arg?.name as string);
  if (c === undefined) refuse(ENOENT, `counter ${arg?.name} does not exist`);
  return [t, c];
}

function ids(t: Table): Body {
  return { family: t.body.family, table: t.body.name };
}

function tableObj(t: Table): NftObject {
  return { table: { ...t.body, handle: t.handle } };
}

function counterObj(t: Table, c: Counter): NftObject {
  return {
    counter: { ...ids(t), ...c.body, handle: c.handle, packets: c.packets, bytes: c.bytes },
  };
}

function setObj(t: Table, x: NamedSet, withElems: boolean): NftObject {
  const body: Body = { ...ids(t), ...x.body, handle: x.handle };
  if (withElems && x.elems.length > 0) body.elem = x.elems;
  return { [x.kind]: body };
}

function chainObj(t: Table, c: Chain): NftObject {
  return { chain: { ...ids(t), ...c.body, handle: c.handle } };
}

function ruleObj(t: Table, c: Chain, r: Rule): NftObject {
  return { rule: { ...ids(t), chain: c.body.name, ...r.body, handle: r.handle } };
}

/** One table as `nft -j list table` orders it: counters, sets and maps, chains, then rules. */
function tableObjs(t: Table): NftObject[] {
  const chains = [...t.chains.values()];
  return [
    tableObj(t),
    ...[...t.counters.values()].map((c) => counterObj(t, c)),
    ...[...t.sets.values()].map((x) => setObj(t, x, true)),
    ...chains.map((c) => chainObj(t, c)),
    ...chains.flatMap((c) => c.rules.map((r) => ruleObj(t, c, r))),
  ];
}
