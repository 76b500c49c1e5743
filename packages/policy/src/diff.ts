// What a policy change is, before anyone enforces it: the objects an admin edited
// (diffStates) and what that does to each workload's compiled RuleSet (diffRuleSets).

import { Direction, type Entry, Mode, type RuleSet } from '@bulkhead/proto';
import type { IpList, ModeName, Policy, PolicyState, Service, Workload } from './model.js';
import { compareStrings } from './protocols.js';

export type ObjectKind = 'Policy' | 'Service' | 'IpList' | 'Workload';

export interface RuleChanges {
  added: string[];
  removed: string[];
  changed: string[];
}

export interface ObjectChange {
  kind: ObjectKind;
  name: string;
  change: 'added' | 'removed' | 'changed';
  before?: Policy | Service | IpList | Workload;
  after?: Policy | Service | IpList | Workload;
  /** Changed top-level fields (`ingress`, `labels`, `mode`, ...); only for `changed`. */
  fields?: string[];
  /** Policies only: rule ids (`<policy>/<direction>/<index>`) added, removed, changed. */
  rules?: RuleChanges;
}

/**
 * A JSON text that is equal for values with the same meaning: object keys sorted, and
 * absent, empty-array and empty-object values dropped (`services: []` and no services both
 * mean "any"; `{ matchLabels: {} }` selects what `{}` selects). Array order is kept.
 */
function canonical(value: unknown): string {
  // Wrapped, so that a top-level `[]` or `{}` reads as absent too.
  return JSON.stringify(strip({ value }));
}

function strip(value: unknown): unknown {
  if (Array.isArray(value)) return value.map((v) => strip(v) ?? null);
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort(compareStrings)) {
    const v = strip((value as Record<string, unknown>)[key]);
    if (v === undefined) continue;
    if (Array.isArray(v) && v.length === 0) continue;
    if (v !== null && typeof v === 'object' && Object.keys(v).length === 0) continue;
    out[key] = v;
  }
  return out;
}

// Workload addresses are facts the agent reports, not something an admin reviews.
const COMPARED: Record<ObjectKind, readonly string[] | undefined> = {
  Policy: undefined,
  Service: undefined,
  IpList: undefined,
  Workload: ['labels', 'mode'],
};

function changedFields(kind: ObjectKind, before: object, after: object): string[] {
  const b = before as Record<string, unknown>;
  const a = after as Record<string, unknown>;
  const keys =
    COMPARED[kind] ??
    [...new Set([...Object.keys(b), ...Object.keys(a)])].filter((k) => k !== 'name');
  return keys.filter((k) => canonical(b[k]) !== canonical(a[k])).sort(compareStrings);
}

function ruleChanges(before: Policy | undefined, after: Policy | undefined): RuleChanges {
  const out: RuleChanges = { added: [], removed: [], changed: [] };
  const name = (after ?? before)!.name;
  for (const direction of ['ingress', 'egress'] as const) {
    const b = before?.[direction] ?? [];
    const a = after?.[direction] ?? [];
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      const id = `${name}/${direction}/${i}`;
      if (i >= b.length) out.added.push(id);
      else if (i >= a.length) out.removed.push(id);
      else if (canonical(a[i]) !== canonical(b[i])) out.changed.push(id);
    }
  }
  for (const list of [out.added, out.removed, out.changed]) list.sort(compareStrings);
  return out;
}

const KINDS: ReadonlyArray<[ObjectKind, (s: PolicyState) => ReadonlyArray<{ name: string }>]> = [
  ['Policy', (s) => s.policies],
  ['Service', (s) => s.services],
  ['IpList', (s) => s.ipLists],
  ['Workload', (s) => s.workloads],
];

/**
 * The objects that differ between two states, by kind (Policy, Service, IpList, Workload)
 * then name. Fields are compared by meaning (key order and empty optionals do not count);
 * workloads by labels and mode only. Rule ids are positional, so inserting a rule reports
 * the rules after it as changed and the last id as added: that is what the ids name.
 * Names are unique in a valid state; with duplicates the last one counts.
 */
export function diffStates(before: PolicyState, after: PolicyState): ObjectChange[] {
  const out: ObjectChange[] = [];
  for (const [kind, list] of KINDS) {
    const b = new Map(list(before).map((o) => [o.name, o]));
    const a = new Map(list(after).map((o) => [o.name, o]));
    const names = [...new Set([...b.keys(), ...a.keys()])].sort(compareStrings);
    for (const name of names) {
      const was = b.get(name) as ObjectChange['before'];
      const now = a.get(name) as ObjectChange['after'];
      let change: ObjectChange;
      if (!was) change = { kind, name, change: 'added', after: now };
      else if (!now) change = { kind, name, change: 'removed', before: was };
      else {
        const fields = changedFields(kind, was, now);
        if (fields.length === 0) continue;
        change = { kind, name, change: 'changed', before: was, after: now, fields };
      }
      if (kind === 'Policy') change.rules = ruleChanges(was as Policy, now as Policy);
      out.push(change);
    }
  }
  return out;
}

export interface ModeChange {
  before: ModeName;
  after: ModeName;
}

export interface WorkloadEffect {
  workload: string;
  change: 'added' | 'removed' | 'changed';
  /** Rule ids only in the new RuleSet, only in the old one, and in both with another action. */
  rulesAdded: string[];
  rulesRemoved: string[];
  rulesChanged: string[];
  /** Entries compared as (direction, address range, protocol, ports, deciding rule id). */
  entriesAdded: number;
  entriesRemoved: number;
  modeChanged?: { ingress?: ModeChange; egress?: ModeChange };
}

// As the agent reads it: anything but enforce lets traffic through.
const modeName = (mode: Mode): ModeName => (mode === Mode.MODE_ENFORCE ? 'enforce' : 'monitor');

function entryKeys(ruleSet: RuleSet | undefined): Set<string> {
  const rules = ruleSet?.rules ?? [];
  // Keyed by rule id, not index: an inserted rule shifts indices without changing entries.
  const key = (e: Entry) =>
    [
      e.direction === Direction.DIRECTION_INGRESS ? 'in' : 'out',
      e.addrFrom,
      e.addrTo,
      e.protocol,
      e.portFrom,
      e.portTo,
      rules[e.rule]?.id ?? `#${e.rule}`,
    ].join(' ');
  return new Set((ruleSet?.entries ?? []).map(key));
}

function minus<T>(a: Set<T>, b: Set<T>): T[] {
  return [...a].filter((x) => !b.has(x));
}

/**
 * The effect of a recompile per workload (`workloadId`), sorted by workload; workloads whose
 * RuleSet hash is the same on both sides are left out (their RuleSet is not pushed).
 */
export function diffRuleSets(
  before: readonly RuleSet[],
  after: readonly RuleSet[],
): WorkloadEffect[] {
  const b = new Map(before.map((r) => [r.workloadId, r]));
  const a = new Map(after.map((r) => [r.workloadId, r]));
  const names = [...new Set([...b.keys(), ...a.keys()])].sort(compareStrings);
  const out: WorkloadEffect[] = [];
  for (const workload of names) {
    const was = b.get(workload);
    const now = a.get(workload);
    if (was && now && was.hash === now.hash) continue;
    const actions = (r: RuleSet | undefined) =>
      new Map((r?.rules ?? []).map((x) => [x.id, x.action]));
    const ruleWas = actions(was);
    const ruleNow = actions(now);
    const entriesWas = entryKeys(was);
    const entriesNow = entryKeys(now);
    const effect: WorkloadEffect = {
      workload,
      change: !was ? 'added' : !now ? 'removed' : 'changed',
      rulesAdded: minus(new Set(ruleNow.keys()), new Set(ruleWas.keys())).sort(compareStrings),
      rulesRemoved: minus(new Set(ruleWas.keys()), new Set(ruleNow.keys())).sort(compareStrings),
      rulesChanged: [...ruleNow]
        .filter(([id, action]) => ruleWas.has(id) && ruleWas.get(id) !== action)
        .map(([id]) => id)
        .sort(compareStrings),
      entriesAdded: minus(entriesNow, entriesWas).length,
      entriesRemoved: minus(entriesWas, entriesNow).length,
    };
    if (was && now) {
      const modes: NonNullable<WorkloadEffect['modeChanged']> = {};
      for (const [direction, field] of [
        ['ingress', 'ingressMode'],
        ['egress', 'egressMode'],
      ] as const) {
        const m = { before: modeName(was[field]), after: modeName(now[field]) };
        if (m.before !== m.after) modes[direction] = m;
      }
      if (modes.ingress || modes.egress) effect.modeChanged = modes;
    }
    out.push(effect);
  }
  return out;
}
