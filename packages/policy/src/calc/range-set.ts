// A group's contents: normalised ranges (sorted, disjoint, adjacent ones merged, as
// `normalizeRanges` gives) kept current one address at a time, with a reference count per
// address (two workloads may share one). Every change is reported element by element, so
// adding an address next to a range is "remove [a,b], add [a,b+1]": what an nftables
// interval set needs, and still O(1) elements per address.

import { compareRanges, type IpRange } from '../ip.js';
import { rangeKey } from './rules.js';

export type ElementChange = (range: IpRange, change: 1 | -1) => void;

export class RangeSet {
  /** Sorted, disjoint, merged. Range objects are never mutated (deltas keep them). */
  readonly ranges: IpRange[] = [];
  private readonly counts = new Map<string, number>();

  constructor(private readonly report: ElementChange) {}

  /** Index of the first range that does not end before `r`. */
  private search(r: IpRange): number {
    let lo = 0;
    let hi = this.ranges.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const m = this.ranges[mid]!;
      if (m.family < r.family || (m.family === r.family && m.to < r.from)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private splice(at: number, remove: number, ...add: IpRange[]): void {
    for (const r of this.ranges.slice(at, at + remove)) this.report(r, -1);
    this.ranges.splice(at, remove, ...add);
    for (const r of add) this.report(r, 1);
  }

  /** One more reference to a single address (`from === to`). */
  addAddress(a: IpRange): void {
    const key = rangeKey(a);
    const count = this.counts.get(key) ?? 0;
    this.counts.set(key, count + 1);
    if (count > 0) return;
    const at = this.search(a);
    const left = this.ranges[at - 1];
    const right = this.ranges[at];
    const joinsLeft = left?.family === a.family && left.to + 1n === a.from;
    const joinsRight = right?.family === a.family && right.from === a.to + 1n;
    const from = joinsLeft ? left.from : a.from;
    const to = joinsRight ? right.to : a.to;
    const start = joinsLeft ? at - 1 : at;
    this.splice(start, Number(joinsLeft) + Number(joinsRight), { family: a.family, from, to });
  }

  /** One reference fewer to a single address added before. */
  removeAddress(a: IpRange): void {
    const key = rangeKey(a);
    const count = this.counts.get(key)!;
    if (count > 1) {
      this.counts.set(key, count - 1);
      return;
    }
    this.counts.delete(key);
    const at = this.search(a);
    const r = this.ranges[at]!;
    const parts: IpRange[] = [];
    if (r.from < a.from) parts.push({ family: r.family, from: r.from, to: a.from - 1n });
    if (a.to < r.to) parts.push({ family: r.family, from: a.to + 1n, to: r.to });
    this.splice(at, 1, ...parts);
  }

  /** Replaces everything with `next` (normalised), reporting only what differs. */
  replace(next: readonly IpRange[]): void {
    const keep = new Set(next.map(rangeKey));
    const had = new Set(this.ranges.map(rangeKey));
    for (const r of this.ranges) if (!keep.has(rangeKey(r))) this.report(r, -1);
    for (const r of next) if (!had.has(rangeKey(r))) this.report(r, 1);
    // No spread: an IP list of 200k ranges would pass the engine's argument limit.
    this.ranges.length = 0;
    for (const r of [...next].sort(compareRanges)) this.ranges.push(r);
    this.counts.clear();
  }
}
