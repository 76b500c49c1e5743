// The selector index: which workloads each active selector (a policy scope or a peer group)
// matches, kept current one workload at a time. A label index narrows both questions: a
// workload's label change re-evaluates only the selectors that mention a changed key, and a
// new selector is tried only on workloads that carry its required labels. It owns
// membership; what membership means (addresses in a group, a policy in scope) is the
// caller's, told through `enter`/`leave`.

import type { Labels, Selector } from '../model.js';
import { matchesSelector } from '../selector.js';

export interface Member {
  labels: Labels;
  /** The active selectors this member matches. */
  matched: Set<SelectorEntry>;
}

export interface SelectorEntry {
  key: string;
  selector: Selector;
  members: Set<Member>;
  /** Policies whose scope this is (names). */
  scopeOf: Set<string>;
  /** The peer group built on this selector, if any (its id). */
  group?: string;
  /** Acquisitions: a scope per policy, a group once. Dropped at zero. */
  users: number;
}

export interface MembershipEvents {
  enter(entry: SelectorEntry, member: Member): void;
  leave(entry: SelectorEntry, member: Member): void;
}

/** The value under `key`, created by `make` when missing. */
export function bucket<K, V>(map: Map<K, V>, key: K, make: () => V): V {
  let value = map.get(key);
  if (value === undefined) {
    value = make();
    map.set(key, value);
  }
  return value;
}

function mentionedKeys(selector: Selector): string[] {
  return [
    ...new Set([
      ...Object.keys(selector.matchLabels ?? {}),
      ...(selector.matchExpressions ?? []).map((e) => e.key),
    ]),
  ];
}

export class SelectorIndex {
  private readonly entries = new Map<string, SelectorEntry>();
  /** label key -> active selectors that mention it. */
  private readonly byKey = new Map<string, Set<SelectorEntry>>();
  /** label key -> value -> members carrying it. */
  private readonly byLabel = new Map<string, Map<string, Set<Member>>>();
  private readonly members = new Set<Member>();

  constructor(private readonly events: MembershipEvents) {}

  private join(entry: SelectorEntry, member: Member): void {
    entry.members.add(member);
    member.matched.add(entry);
    this.events.enter(entry, member);
  }

  private part(entry: SelectorEntry, member: Member): void {
    entry.members.delete(member);
    member.matched.delete(entry);
    this.events.leave(entry, member);
  }

  private indexLabels(member: Member, add: boolean): void {
    for (const [key, value] of Object.entries(member.labels)) {
      const values = bucket(this.byLabel, key, () => new Map());
      const set = bucket(values, value, () => new Set());
      if (add) set.add(member);
      else {
        set.delete(member);
        if (set.size === 0) values.delete(value);
        if (values.size === 0) this.byLabel.delete(key);
      }
    }
  }

  addMember(member: Member): void {
    this.members.add(member);
    this.indexLabels(member, true);
    for (const entry of this.entries.values()) {
      if (matchesSelector(entry.selector, member.labels)) this.join(entry, member);
    }
  }

  removeMember(member: Member): void {
    for (const entry of [...member.matched]) this.part(entry, member);
    this.indexLabels(member, false);
    this.members.delete(member);
  }

  /** Sets a member's labels and moves it between the selectors that mention a changed key. */
  relabel(member: Member, labels: Labels): void {
    const before = member.labels;
    const changed = new Set<string>();
    for (const key of new Set([...Object.keys(before), ...Object.keys(labels)])) {
      if (Object.hasOwn(before, key) !== Object.hasOwn(labels, key) || before[key] !== labels[key])
        changed.add(key);
    }
    if (changed.size === 0) {
      member.labels = labels;
      return;
    }
    this.indexLabels(member, false);
    member.labels = labels;
    this.indexLabels(member, true);
    const affected = new Set<SelectorEntry>();
    for (const key of changed) for (const e of this.byKey.get(key) ?? []) affected.add(e);
    for (const entry of affected) {
      const now = matchesSelector(entry.selector, labels);
      if (now && !entry.members.has(member)) this.join(entry, member);
      else if (!now && entry.members.has(member)) this.part(entry, member);
    }
  }

  /** Members that might match: those with a required label, else everyone. */
  private candidates(selector: Selector): Iterable<Member> {
    let best: Iterable<Member> = this.members;
    let size = this.members.size;
    for (const [key, value] of Object.entries(selector.matchLabels ?? {})) {
      const set = this.byLabel.get(key)?.get(value);
      if (!set) return [];
      if (set.size < size) [best, size] = [set, set.size];
    }
    for (const e of selector.matchExpressions ?? []) {
      if (e.operator !== 'In' && e.operator !== 'Exists') continue;
      const values = this.byLabel.get(e.key);
      const sets =
        e.operator === 'In'
          ? (e.values ?? []).map((v) => values?.get(v))
          : [...(values?.values() ?? [])];
      const union = sets.reduce((n, s) => n + (s?.size ?? 0), 0);
      if (union < size) {
        best = sets.flatMap((s) => [...(s ?? [])]);
        size = union;
      }
    }
    return best;
  }

  /** The entry for `key` (the selector's canonical key), created and evaluated if new. */
  acquire(key: string, selector: Selector): SelectorEntry {
    let entry = this.entries.get(key);
    if (!entry) {
      entry = { key, selector, members: new Set(), scopeOf: new Set(), users: 0 };
      this.entries.set(key, entry);
      for (const k of mentionedKeys(selector)) {
        const set = bucket(this.byKey, k, () => new Set());
        set.add(entry);
      }
      for (const member of this.candidates(selector)) {
        if (matchesSelector(selector, member.labels)) this.join(entry, member);
      }
    }
    entry.users++;
    return entry;
  }

  release(entry: SelectorEntry): void {
    if (--entry.users > 0) return;
    for (const member of entry.members) member.matched.delete(entry);
    entry.members.clear();
    for (const k of mentionedKeys(entry.selector)) {
      const set = this.byKey.get(k)!;
      set.delete(entry);
      if (set.size === 0) this.byKey.delete(k);
    }
    this.entries.delete(entry.key);
  }
}
