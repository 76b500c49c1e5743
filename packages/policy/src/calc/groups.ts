// The address groups: one per selector, IP list or literal CIDR that some rule names, alive
// while a rule names it (counted per policy). It owns each group's ranges, kept normalised
// as members come and go, and which workloads refer to it; it reports every element change
// to the current delta recorder. Which workloads match a selector is the selector index's.

import { cidrRange, type IpRange, subtractRanges } from '../ip.js';
import type { IpList } from '../model.js';
import { compareStrings } from '../protocols.js';
import { CountedNames } from './counted-names.js';
import type { DeltaRecorder } from './delta.js';
import { RangeSet } from './range-set.js';
import { type GroupSource, rangeKey } from './rules.js';
import type { Member, SelectorEntry, SelectorIndex } from './selectors.js';

/** A selector member with addresses (single-address ranges, distinct). */
export interface AddressedMember extends Member {
  addresses: IpRange[];
}

interface Group {
  ranges: RangeSet;
  /** Policy name -> references from its rules. */
  users: Map<string, number>;
  /** Workloads whose rule set refers to the group: one count per policy that brings it. */
  referrers: CountedNames;
  selector?: SelectorEntry;
}

export const listRanges = (l: IpList): IpRange[] =>
  subtractRanges(l.cidrs.map(cidrRange), (l.except ?? []).map(cidrRange));

export class GroupTable {
  private readonly groups = new Map<string, Group>();

  constructor(
    private readonly recorder: () => DeltaRecorder,
    private readonly index: SelectorIndex,
    private readonly ipList: (name: string) => IpList,
  ) {}

  has(id: string): boolean {
    return this.groups.has(id);
  }

  /** Sorted ids of every group. */
  ids(): string[] {
    return [...this.groups.keys()].sort(compareStrings);
  }

  /** A group's normalised ranges; undefined when no rule names it. */
  ranges(id: string): readonly IpRange[] | undefined {
    return this.groups.get(id)?.ranges.ranges;
  }

  /** Workloads whose rule set refers to the group, sorted (a copy). */
  referrers(id: string): string[] {
    return [...this.groups.get(id)!.referrers.sorted];
  }

  /** One more reference from `policy`'s rules; creates and fills the group if new. */
  acquire(source: GroupSource, policy: string): void {
    let group = this.groups.get(source.id);
    if (!group) {
      const id = source.id;
      this.recorder().touchGroup(id, false);
      group = {
        ranges: new RangeSet((r, change) => this.recorder().toggle(id, rangeKey(r), r, change)),
        users: new Map(),
        referrers: new CountedNames(),
      };
      this.groups.set(id, group);
      if (source.kind === 'selector') {
        group.selector = this.index.acquire(source.key, source.selector);
        group.selector.group = id;
        for (const m of group.selector.members) {
          for (const r of (m as AddressedMember).addresses) group.ranges.addAddress(r);
        }
      } else {
        group.ranges.replace(
          source.kind === 'cidr' ? source.ranges : listRanges(this.ipList(source.name)),
        );
      }
    }
    group.users.set(policy, (group.users.get(policy) ?? 0) + 1);
  }

  /** One reference fewer; the group goes with its last reference. */
  release(id: string, policy: string): void {
    const group = this.groups.get(id)!;
    const left = group.users.get(policy)! - 1;
    if (left > 0) {
      group.users.set(policy, left);
      return;
    }
    group.users.delete(policy);
    if (group.users.size > 0) return;
    this.recorder().touchGroup(id, true); // an empty group toggles nothing but is still gone
    group.ranges.replace([]);
    if (group.selector) {
      group.selector.group = undefined;
      this.index.release(group.selector);
    }
    this.groups.delete(id);
  }

  /** Policies whose rules name the group. */
  users(id: string): Iterable<string> {
    return this.groups.get(id)?.users.keys() ?? [];
  }

  /** A member's addresses join (1) or leave (-1) a selector group, or move (`before`). */
  addresses(id: string, add: readonly IpRange[], remove: readonly IpRange[] = []): void {
    const ranges = this.groups.get(id)!.ranges;
    for (const r of add) ranges.addAddress(r);
    for (const r of remove) ranges.removeAddress(r);
  }

  /** A workload comes under (1) or leaves (-1) a policy that names these groups. */
  refer(ids: readonly string[], workload: string, by: 1 | -1): void {
    for (const id of ids) this.groups.get(id)!.referrers.change(workload, by);
  }

  /** An IP list changed: its group (if a rule names it) takes the new ranges. */
  updateList(list: IpList): void {
    this.groups.get(`list:${list.name}`)?.ranges.replace(listRanges(list));
  }
}
