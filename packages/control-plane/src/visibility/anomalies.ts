// Anomaly events from counted telemetry batches (issue 11 section 3): a workload's flow on a
// (direction, peer, protocol, port) never seen before, a burst of denied connections above the
// workload's own baseline, and denies reported soon after a revision. One pass over each batch's
// aggregated flow deltas, in bounded memory; events are rate limited per workload and kind and
// overall, then recorded (the events table) and emitted (the SIEM). Must not read telemetry
// itself, write flows, or judge policy.
// A dependency is remembered as a 53-bit hash of its key (a number, ~47 bytes in a Set, where
// the key's text took ~215): the default bound then covers the flow store's row cap, so a fleet
// under it never forgets and re-reads a workload's rows per batch (which cost more than the
// ingest itself). Two keys colliding hide a new dependency with odds ~ n / 2^53 for a workload
// that knows n.
import type { Logger } from 'pino';
import type { RevisionStore } from '../revisions/store.js';
import type { SecurityEvent } from '../siem/index.js';
import type { FlowDependency } from './flow-store.js';
import { CONTROL_PLANE_EVENT_SOURCE, type FlowDelta, type ReportedEvent } from './store.js';

export const ANOMALY = {
  newDependency: 'ANOMALY_NEW_DEPENDENCY',
  denyBurst: 'ANOMALY_DENY_BURST',
  deniesAfterRevision: 'ANOMALY_DENIES_AFTER_REVISION',
} as const;

export interface AnomalyOptions {
  /** Dependencies remembered at most; the least recently reporting workloads are forgotten
   * first (and learn theirs again from the flow store). Default 1,000,000 (the flow row cap). */
  maxKnown?: number;
  /** Denied connections in a minute that make a burst: at least `burstMin` and more than
   * `burstFactor` times the workload's baseline (a moving average per minute). 20 and 5. */
  burstMin?: number;
  burstFactor?: number;
  /** Denies this soon after a revision are reported as its effect. Default 10 minutes. */
  afterRevisionMs?: number;
  /** Events per workload and kind per window, and for all together. 5 and 200 per 10 min. */
  perKey?: number;
  total?: number;
  windowMs?: number;
}

type Seen = FlowDependency;

export interface AnomalyDeps {
  /** A workload's stored flows (what it had seen before this process tracked it). */
  known(workload: string): Seen[];
  revisions: Pick<RevisionStore, 'latestRevisionRecord'>;
  record(workload: string, e: Omit<ReportedEvent, 'at'>): void;
  emit?(e: SecurityEvent): void;
  now(): Date;
  log: Logger;
}

export interface AnomalyDetector {
  /** A counted batch of `workload`'s flow deltas. */
  observe(workload: string, flows: readonly FlowDelta[]): void;
  /** Dependencies held in memory (the bound's subject). */
  size(): number;
}

const MINUTE = 60_000;

/** (direction, peer, protocol, port) as a 53-bit number: two 32-bit FNV-1a-style hashes. */
export function dependencyKey(f: Seen): number {
  const ingress = f.direction === 'ingress';
  const peer = ingress ? f.src : f.dst;
  const salt = ((ingress ? 1 : 2) << 24) ^ (f.protocol << 16) ^ f.port;
  let a = Math.imul(0x811c9dc5 ^ salt, 16777619);
  let b = Math.imul(0x9747b28c ^ salt, 0x5bd1e995);
  for (let i = 0; i < peer.length; i++) {
    const c = peer.charCodeAt(i);
    a = Math.imul(a ^ c, 16777619);
    b = Math.imul(b ^ c, 0x5bd1e995);
    b ^= b >>> 15;
  }
  return (a >>> 0) * 2 ** 21 + ((b ^ (b >>> 13)) >>> 11);
}
const key = dependencyKey;

export function createAnomalyDetector(deps: AnomalyDeps, o: AnomalyOptions = {}): AnomalyDetector {
  const maxKnown = o.maxKnown ?? 1_000_000;
  const burstMin = o.burstMin ?? 20;
  const burstFactor = o.burstFactor ?? 5;
  const afterRevisionMs = o.afterRevisionMs ?? 10 * MINUTE;
  const perKey = o.perKey ?? 5;
  const total = o.total ?? 200;
  const windowMs = o.windowMs ?? 10 * MINUTE;

  /** workload -> dependencies seen; Map order is the recency of the workload's reports. */
  const seen = new Map<string, Set<number>>();
  let known = 0;
  /** workload -> denied connections this minute and the per-minute baseline. */
  const denies = new Map<string, { minute: number; count: number; baseline: number }>();
  /** The revision denies are attributed to, and the workloads already reported for it. */
  let latest = { revision: -1, at: 0, reported: new Set<string>() };
  let window = { start: 0, all: 0, byKey: new Map<string, number>(), suppressed: 0 };

  function dependencies(workload: string, batch: readonly FlowDelta[]): Set<number> {
    let set = seen.get(workload);
    if (set) {
      seen.delete(workload);
    } else {
      // Learnt from the store, which already holds this batch: a row counts as seen before
      // when it was first seen earlier than the batch's own first sighting of it.
      const first = new Map<number, string>();
      for (const f of batch) {
        const k = key(f);
        const t = first.get(k);
        if (t === undefined || f.firstSeen < t) first.set(k, f.firstSeen);
      }
      set = new Set();
      for (const r of deps.known(workload)) {
        const k = key(r);
        const t = first.get(k);
        if (t === undefined || r.firstSeen < t) set.add(k);
      }
      known += set.size;
    }
    seen.set(workload, set);
    return set;
  }

  /** Forgets the least recently reporting workloads while over the bound, `current` last. */
  function bound(current: string): void {
    for (const [w, s] of seen) {
      if (known <= maxKnown || (w === current && seen.size > 1)) break;
      seen.delete(w);
      known -= s.size;
    }
  }

  /** `describe` runs only for an event within the rate limit: a flood costs no text. */
  function raise(
    workload: string,
    code: string,
    nowMs: number,
    describe: () => { message: string; attributes: Record<string, string> },
  ) {
    if (nowMs - window.start >= windowMs) {
      if (window.suppressed > 0) {
        deps.log.warn({ suppressed: window.suppressed }, 'anomaly events over their rate limit');
      }
      window = { start: nowMs, all: 0, byKey: new Map(), suppressed: 0 };
    }
    const k = `${workload}|${code}`;
    const n = window.byKey.get(k) ?? 0;
    if (n >= perKey || window.all >= total) {
      window.suppressed++;
      return;
    }
    window.byKey.set(k, n + 1);
    window.all++;
    const { message, attributes } = describe();
    deps.record(workload, { code, message, attributes });
    deps.emit?.({
      kind: 'agent-event',
      at: new Date(nowMs),
      workload,
      agentId: CONTROL_PLANE_EVENT_SOURCE,
      code,
      message,
      attributes,
    });
  }

  function newDependencies(workload: string, flows: readonly FlowDelta[], nowMs: number): void {
    const set = dependencies(workload, flows);
    for (const f of flows) {
      const k = key(f);
      if (set.has(k)) continue;
      set.add(k);
      known++;
      raise(workload, ANOMALY.newDependency, nowMs, () => {
        const peer = f.direction === 'ingress' ? f.src : f.dst;
        return {
          message: `${workload}: first ${f.direction} flow with ${peer} on ${f.protocol}/${f.port} (${f.verdict})`,
          attributes: {
            direction: f.direction,
            peer,
            protocol: String(f.protocol),
            port: String(f.port),
            verdict: f.verdict,
            ruleId: f.ruleId,
          },
        };
      });
    }
    bound(workload);
  }

  function burst(workload: string, denied: number, nowMs: number): void {
    const minute = Math.floor(nowMs / MINUTE);
    let d = denies.get(workload);
    if (!d) {
      if (denies.size >= maxKnown) denies.delete(denies.keys().next().value!);
      d = { minute, count: 0, baseline: 0 };
      denies.set(workload, d);
    } else if (d.minute !== minute) {
      // A moving average per minute; quiet minutes count as zero.
      d.baseline = (0.7 * d.baseline + 0.3 * d.count) * 0.7 ** Math.min(minute - d.minute - 1, 60);
      d.minute = minute;
      d.count = 0;
    }
    const before = d.count;
    d.count += denied;
    const limit = Math.max(burstMin, burstFactor * d.baseline);
    if (before <= limit && d.count > limit) {
      const { count, baseline } = d;
      raise(workload, ANOMALY.denyBurst, nowMs, () => ({
        message: `${workload}: ${count} denied connections this minute (baseline ${baseline.toFixed(1)})`,
        attributes: { count: String(count), baseline: baseline.toFixed(1) },
      }));
    }
  }

  function afterRevision(workload: string, flows: readonly FlowDelta[], nowMs: number): void {
    const r = deps.revisions.latestRevisionRecord();
    const n = r?.revision ?? 0;
    if (n !== latest.revision) {
      const at = Date.parse(r?.createdAt ?? '');
      latest = { revision: n, at: Number.isNaN(at) ? 0 : at, reported: new Set() };
    }
    if (n === 0 || nowMs - latest.at > afterRevisionMs || latest.reported.has(workload)) return;
    const after = flows.filter(
      (f) => f.verdict === 'denied' && Date.parse(f.lastSeen) >= latest.at,
    );
    if (after.length === 0) return;
    latest.reported.add(workload);
    const connections = after.reduce((s, f) => s + f.connections, 0);
    raise(workload, ANOMALY.deniesAfterRevision, nowMs, () => ({
      message: `${workload}: ${connections} denied connections since revision ${n}`,
      attributes: {
        revision: String(n),
        connections: String(connections),
        flows: after
          .slice(0, 5)
          .map((f) => `${f.src} -> ${f.dst} ${f.protocol}/${f.port} (${f.ruleId || 'no rule'})`)
          .join(', '),
      },
    }));
  }

  return {
    observe(workload, flows) {
      if (flows.length === 0) return;
      const nowMs = deps.now().getTime();
      newDependencies(workload, flows, nowMs);
      let denied = 0;
      for (const f of flows) if (f.verdict === 'denied') denied += f.connections;
      if (denied === 0) return;
      burst(workload, denied, nowMs);
      afterRevision(workload, flows, nowMs);
    },
    size: () => known,
  };
}
