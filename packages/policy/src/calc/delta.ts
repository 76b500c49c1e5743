// What one change to the calculator means downstream: group membership element by element,
// and the workloads whose group rule set changed. This module owns the delta's shape, its
// bookkeeping during a change (net of add-then-remove) and `applyDelta`, the consumer's side,
// which asserts the contract (no add of a present range, no rule naming a missing group).

import type { GroupRuleSet } from '@bulkhead/proto';
import { PolicyError } from '../errors.js';
import { compareRanges, type IpRange } from '../ip.js';
import { compareStrings } from '../protocols.js';
import { rangeKey } from './rules.js';

export interface GroupChange {
  id: string;
  /** New group: `added` is all of it. */
  created?: true;
  /** No rule refers to the group any more: drop it (ranges are not listed). */
  deleted?: true;
  added: IpRange[];
  removed: IpRange[];
  /**
   * Workloads whose rule set refers to the group after the change, sorted. Those that list
   * it in `groupsAdded` need its full contents rather than this change.
   */
  workloads: string[];
}

export interface WorkloadChange {
  workloadId: string;
  /** The new group rule set; absent when the workload was removed. */
  ruleSet?: GroupRuleSet;
  /** Groups its rules refer to now and did not before, and the reverse (sorted ids). */
  groupsAdded: string[];
  groupsRemoved: string[];
}

/** Empty when nothing changed. Both lists sorted (group id, workload name). */
export interface CalcDelta {
  groups: GroupChange[];
  workloads: WorkloadChange[];
}

/** Everything the calculator holds that a consumer needs: rule sets and group contents. */
export interface CalcSnapshot {
  ruleSets: Map<string, GroupRuleSet>;
  /** Sorted ranges (IPv4 first), disjoint. */
  groups: Map<string, IpRange[]>;
}

export function groupIdsOf(ruleSet: GroupRuleSet | undefined): Set<string> {
  return new Set(ruleSet?.rules.flatMap((r) => r.groups) ?? []);
}

function bad(message: string): never {
  throw new PolicyError('POLICY_BAD_DELTA', message);
}

/** Applies a delta to a copy of `snapshot`; throws POLICY_BAD_DELTA where they disagree. */
export function applyDelta(snapshot: CalcSnapshot, delta: CalcDelta): CalcSnapshot {
  const groups = new Map(snapshot.groups);
  const ruleSets = new Map(snapshot.ruleSets);
  for (const change of delta.groups) {
    if (change.deleted) {
      if (!groups.delete(change.id)) bad(`deleted group ${change.id} is unknown`);
      continue;
    }
    if (change.created && groups.has(change.id)) bad(`created group ${change.id} exists`);
    const before = change.created ? [] : groups.get(change.id);
    if (!before) bad(`update of unknown group ${change.id}`);
    const ranges = new Map(before.map((r) => [rangeKey(r), r]));
    for (const r of change.removed) {
      if (!ranges.delete(rangeKey(r))) bad(`group ${change.id}: removed range not present`);
    }
    for (const r of change.added) {
      if (ranges.has(rangeKey(r))) bad(`group ${change.id}: added range already present`);
      ranges.set(rangeKey(r), r);
    }
    groups.set(change.id, [...ranges.values()].sort(compareRanges));
  }
  for (const change of delta.workloads) {
    if (change.ruleSet) ruleSets.set(change.workloadId, change.ruleSet);
    else if (!ruleSets.delete(change.workloadId)) bad(`removed ${change.workloadId} is unknown`);
  }
  for (const [name, ruleSet] of ruleSets) {
    for (const id of groupIdsOf(ruleSet)) {
      if (!groups.has(id)) bad(`${name} refers to missing group ${id}`);
    }
  }
  return { ruleSets, groups };
}

interface GroupTrace {
  existed: boolean;
  /** Range key -> the range and its net presence change (-1, 0, +1). */
  toggles: Map<string, { range: IpRange; net: number }>;
}

/** Collects what one change touches; `finish` turns it into a delta. */
export class DeltaRecorder {
  private readonly groups = new Map<string, GroupTrace>();
  /** Workload name -> its rule set before the change. */
  readonly workloads = new Map<string, GroupRuleSet | undefined>();

  /** Call before creating a group (`existed` false); later calls change nothing. */
  touchGroup(id: string, existed: boolean): void {
    if (!this.groups.has(id)) this.groups.set(id, { existed, toggles: new Map() });
  }

  /** A range appeared in (+1) or vanished from (-1) a group (not touched yet = it existed). */
  toggle(id: string, key: string, range: IpRange, change: 1 | -1): void {
    this.touchGroup(id, true);
    const toggles = this.groups.get(id)!.toggles;
    const t = toggles.get(key);
    if (t) t.net += change;
    else toggles.set(key, { range, net: change });
  }

  touchWorkload(name: string, before: GroupRuleSet | undefined): void {
    if (!this.workloads.has(name)) this.workloads.set(name, before);
  }

  groupChanges(exists: (id: string) => boolean, users: (id: string) => string[]): GroupChange[] {
    const out: GroupChange[] = [];
    for (const [id, trace] of this.groups) {
      const now = exists(id);
      if (!now) {
        if (trace.existed) out.push({ id, deleted: true, added: [], removed: [], workloads: [] });
        continue;
      }
      const pick = (net: number) =>
        [...trace.toggles.values()].filter((t) => t.net === net).map((t) => t.range);
      const change: GroupChange = {
        id,
        added: pick(1).sort(compareRanges),
        removed: [],
        workloads: [],
      };
      if (trace.existed) change.removed = pick(-1).sort(compareRanges);
      else change.created = true;
      if (trace.existed && change.added.length === 0 && change.removed.length === 0) continue;
      change.workloads = users(id);
      out.push(change);
    }
    return out.sort((a, b) => compareStrings(a.id, b.id));
  }
}
