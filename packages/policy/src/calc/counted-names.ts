// Names with a reference count, kept in sorted order as they come and go, so a group can
// say which workloads refer to it without building and sorting a fleet-sized list per change.

export class CountedNames {
  private readonly counts = new Map<string, number>();
  /** Plain code-unit order, as `compareStrings`. */
  readonly sorted: string[] = [];

  private position(name: string): number {
    let lo = 0;
    let hi = this.sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.sorted[mid]! < name) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  change(name: string, by: 1 | -1): void {
    const count = (this.counts.get(name) ?? 0) + by;
    if (count > 0) {
      if (count === 1 && by === 1) this.sorted.splice(this.position(name), 0, name);
      this.counts.set(name, count);
    } else {
      this.counts.delete(name);
      this.sorted.splice(this.position(name), 1);
    }
  }
}
