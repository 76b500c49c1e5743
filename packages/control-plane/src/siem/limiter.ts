import type { AggregatedFlow, FlowEvent } from './types.js';

export const PORT_SAMPLE = 20;
export const RULE_SAMPLE = 5;

/** Distinct ports; a Set while small, an 8 KiB bitmap once a scan makes it large. */
class PortSet {
  private small = new Set<number>();
  private bits: Uint8Array | undefined;
  size = 0;

  add(port: number): void {
    const p = port & 0xffff;
    if (this.bits) {
      const m = 1 << (p & 7);
      if (!(this.bits[p >> 3]! & m)) {
        this.bits[p >> 3]! |= m;
        this.size++;
      }
      return;
    }
    this.small.add(p);
    this.size = this.small.size;
    if (this.small.size > 64) {
      this.bits = new Uint8Array(8192);
      for (const q of this.small) this.bits[q >> 3]! |= 1 << (q & 7);
      this.small.clear();
    }
  }

  /** The lowest `n` ports, ascending (deterministic, unlike "the first n seen"). */
  lowest(n: number): number[] {
    if (!this.bits) return [...this.small].sort((a, b) => a - b).slice(0, n);
    const out: number[] = [];
    for (let p = 0; p < 65536 && out.length < n; p++) {
      if (this.bits[p >> 3]! & (1 << (p & 7))) out.push(p);
    }
    return out;
  }
}

interface Pending {
  first: FlowEvent;
  last: Date;
  events: number;
  connections: number;
  ports: PortSet;
  ruleIds: Set<string>;
}

/**
 * Merges flow events per (verdict, src, dst, workload) until `drain()`; the exporter drains
 * once per window. `maxKeys` bounds memory under a scan from many sources: `add` reports
 * when the table is full so the caller drains early.
 */
export class FlowAggregator {
  private pending = new Map<string, Pending>();

  constructor(private readonly maxKeys: number) {}

  get size(): number {
    return this.pending.size;
  }

  /** Returns true if the event was merged into an earlier one. */
  add(e: FlowEvent): boolean {
    const key = `${e.verdict}\0${e.src}\0${e.dst}\0${e.workload}`;
    const p = this.pending.get(key);
    if (!p) {
      const ports = new PortSet();
      ports.add(e.port);
      this.pending.set(key, {
        first: e,
        last: e.at,
        events: 1,
        connections: e.connections,
        ports,
        ruleIds: new Set([e.ruleId]),
      });
      return false;
    }
    p.events++;
    p.connections += e.connections;
    p.ports.add(e.port);
    if (p.ruleIds.size < RULE_SAMPLE) p.ruleIds.add(e.ruleId);
    if (e.at > p.last) p.last = e.at;
    return true;
  }

  full(): boolean {
    return this.pending.size >= this.maxKeys;
  }

  drain(): AggregatedFlow[] {
    const out: AggregatedFlow[] = [];
    for (const p of this.pending.values()) {
      out.push({
        ...p.first,
        at: p.last,
        firstAt: p.first.at,
        connections: p.connections,
        events: p.events,
        ports: p.ports.lowest(PORT_SAMPLE),
        portCount: p.ports.size,
        ruleIds: [...p.ruleIds],
      });
    }
    this.pending.clear();
    return out;
  }
}

/** Classic token bucket; `now` is injected so tests need no timers. */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly now: () => number,
  ) {
    this.tokens = burst;
    this.last = now();
  }

  take(): boolean {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) / 1000) * this.perSecond);
    this.last = t;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
