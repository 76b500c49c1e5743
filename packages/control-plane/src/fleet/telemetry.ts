// Telemetry ingest's trust check: an agent speaks for its own workload only. Every record of a
// Telemetry message is checked against the workload's addresses (ingress: dst is one of them;
// egress: src), the rule ids its agent was sent (and the agent's built-in `default`), a time
// window around now, and size bounds; what fails is dropped and counted by reason, never
// silently (fleet turns the counts into a metric and a rate-limited TELEMETRY_REJECTED event).
// Must not store anything or read the database: fleet hands it the workload's facts.
import { Direction, type Telemetry, Verdict } from '@bulkhead/proto';
import { canonicalOrUndefined } from '../visibility/flow-store.js';
import type { FlowDelta, ReportedEvent } from '../visibility/store.js';
import type { CounterRow, TelemetryBatch } from './store.js';

/** Why a record was dropped; the `reason` label of `bulkhead_telemetry_rejected_total`. */
export const REJECT_REASONS = [
  /** A flow where the reporting workload is not the end its direction says it is. */
  'foreign-address',
  /** A counter or flow naming a rule the agent was never sent. */
  'unknown-rule',
  /** A time outside [now - flow retention, now + 5 min]. */
  'bad-time',
  /** src/dst that is not an IP address. */
  'bad-address',
  /** An unknown direction or verdict, a protocol, port or count out of range, a bad event code. */
  'bad-field',
  /** An event message or attributes over their bounds. */
  'too-long',
  /** Records past a batch's bound on counters, flows or events. */
  'too-many',
] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];
export type Rejections = Map<RejectReason, number>;

/** The rule id agents report for traffic no rule matched (agent/src/counters.ts). */
export const DEFAULT_RULE_ID = 'default';

export const TELEMETRY_LIMITS = {
  /** Per batch. An agent sends at most its pending-flow cap (50,000) at once. */
  counters: 100_000,
  flows: 50_000,
  events: 100,
  eventCode: 64,
  eventMessage: 1024,
  attributes: 16,
  attributeKey: 64,
  attributeValue: 256,
  /** How far ahead of the control plane's clock an agent's clock may be. */
  futureMs: 5 * 60_000,
} as const;

/** What the batch is checked against: the reporting workload's facts as the control plane holds them. */
export interface TelemetryContext {
  /** The workload's addresses, canonical (formatAddress). */
  addresses: ReadonlySet<string>;
  /** Rule ids of the RuleSets its agent was sent; DEFAULT_RULE_ID is always accepted. */
  ruleIds: ReadonlySet<string>;
  nowMs: number;
  /** Oldest acceptable time: now minus the flow retention. */
  oldestMs: number;
}

export interface CheckedTelemetry {
  batch: Required<Omit<TelemetryBatch, 'notices'>>;
  rejected: Rejections;
}

const DIRECTIONS: Partial<Record<Direction, CounterRow['direction']>> = {
  [Direction.DIRECTION_INGRESS]: 'ingress',
  [Direction.DIRECTION_EGRESS]: 'egress',
};
const VERDICTS: Partial<Record<Verdict, CounterRow['verdict']>> = {
  [Verdict.VERDICT_ALLOWED]: 'allowed',
  [Verdict.VERDICT_DENIED]: 'denied',
  [Verdict.VERDICT_WOULD_DENY]: 'would-deny',
};
const EVENT_CODE = /^[A-Z][A-Z0-9_]*$/;

const isCount = (n: number) => Number.isSafeInteger(n) && n >= 0;
const inRange = (n: number, max: number) => Number.isInteger(n) && n >= 0 && n <= max;

/** A Telemetry message as the store may count it, and what was dropped from it. */
export function checkTelemetry(t: Telemetry, ctx: TelemetryContext): CheckedTelemetry {
  const rejected: Rejections = new Map();
  const reject = (reason: RejectReason, n = 1) => {
    if (n > 0) rejected.set(reason, (rejected.get(reason) ?? 0) + n);
  };
  const knownRule = (id: string) => id === DEFAULT_RULE_ID || ctx.ruleIds.has(id);
  const inWindow = (ms: number) =>
    ms >= ctx.oldestMs && ms <= ctx.nowMs + TELEMETRY_LIMITS.futureMs;
  const batchTime = t.timeUnixMs;

  const counters: CheckedTelemetry['batch']['counters'] = [];
  reject('too-many', t.counters.length - TELEMETRY_LIMITS.counters);
  for (const c of t.counters.slice(0, TELEMETRY_LIMITS.counters)) {
    const direction = DIRECTIONS[c.direction];
    const verdict = VERDICTS[c.verdict];
    if (!direction || !verdict || !isCount(c.packets) || !isCount(c.bytes)) reject('bad-field');
    else if (!knownRule(c.ruleId)) reject('unknown-rule');
    else
      counters.push({ ruleId: c.ruleId, direction, verdict, packets: c.packets, bytes: c.bytes });
  }

  const flows: FlowDelta[] = [];
  const allFlows = t.flows ?? [];
  // Flows read in one drain share their times: each distinct time is formatted once.
  const isoOf = new Map<number, string>();
  const iso = (ms: number) => {
    let text = isoOf.get(ms);
    if (text === undefined) {
      text = new Date(ms).toISOString();
      isoOf.set(ms, text);
    }
    return text;
  };
  reject('too-many', allFlows.length - TELEMETRY_LIMITS.flows);
  for (const f of allFlows.slice(0, TELEMETRY_LIMITS.flows)) {
    const direction = DIRECTIONS[f.direction];
    const verdict = VERDICTS[f.verdict];
    const src = canonical(f.src);
    const dst = canonical(f.dst);
    const lastMs = f.lastSeenUnixMs || batchTime;
    if (
      !direction ||
      !verdict ||
      !inRange(f.protocol, 255) ||
      !inRange(f.port, 65_535) ||
      !isCount(f.packets) ||
      !isCount(f.bytes)
    ) {
      reject('bad-field');
    } else if (src === undefined || dst === undefined) {
      reject('bad-address');
    } else if (!ctx.addresses.has(direction === 'ingress' ? dst : src)) {
      reject('foreign-address');
    } else if (!knownRule(f.ruleId)) {
      reject('unknown-rule');
    } else if (!inWindow(lastMs)) {
      reject('bad-time');
    } else {
      // A first sighting before the window is clamped to it: the flow is real, its age is not
      // something retention should have to undo.
      const firstMs = Math.min(Math.max(f.firstSeenUnixMs || batchTime, ctx.oldestMs), lastMs);
      flows.push({
        direction,
        verdict,
        src,
        dst,
        protocol: f.protocol,
        port: f.port,
        ruleId: f.ruleId,
        connections: f.packets,
        bytes: f.bytes,
        firstSeen: iso(firstMs),
        lastSeen: iso(lastMs),
      });
    }
  }

  const events: ReportedEvent[] = [];
  const allEvents = t.events ?? [];
  reject('too-many', allEvents.length - TELEMETRY_LIMITS.events);
  for (const e of allEvents.slice(0, TELEMETRY_LIMITS.events)) {
    const at = e.timeUnixMs || batchTime;
    const attributes = Object.entries(e.attributes ?? {});
    if (e.code.length > TELEMETRY_LIMITS.eventCode || !EVENT_CODE.test(e.code)) {
      reject('bad-field');
    } else if (
      e.message.length > TELEMETRY_LIMITS.eventMessage ||
      attributes.length > TELEMETRY_LIMITS.attributes ||
      attributes.some(
        ([k, v]) =>
          k.length > TELEMETRY_LIMITS.attributeKey || v.length > TELEMETRY_LIMITS.attributeValue,
      )
    ) {
      reject('too-long');
    } else if (!inWindow(at)) {
      reject('bad-time');
    } else {
      // A fresh null-prototype copy: map keys such as `__proto__` stay plain data.
      const attrs: Record<string, string> = Object.create(null);
      for (const [k, v] of attributes) attrs[k] = v;
      events.push({
        code: e.code,
        message: e.message,
        at: new Date(at).toISOString(),
        attributes: attrs,
      });
    }
  }
  return { batch: { counters, flows, events }, rejected };
}

/** RFC 5952 / dotted quad, or undefined when `text` is not an IP address. */
export function canonical(text: string): string | undefined {
  return text.length > 64 ? undefined : canonicalOrUndefined(text);
}

export const REJECTION_EVENT = 'TELEMETRY_REJECTED';
const REPORT_EVERY_MS = 60_000;

/**
 * At most one TELEMETRY_REJECTED event per agent per minute, carrying every count since the
 * previous one, so a hostile agent cannot flood the events table while nothing goes unsaid.
 */
export interface RejectionReporter {
  /** The event to record with this batch, if one is due (nothing changes until `counted`). */
  due(agentId: string, rejected: Rejections): ReportedEvent | undefined;
  /** The batch was counted: keep its rejections, and note whether its event went out. */
  counted(agentId: string, rejected: Rejections, reported: boolean): void;
}

export function createRejectionReporter(now: () => Date): RejectionReporter {
  const agents = new Map<string, { lastAt: number; pending: Rejections }>();
  const merged = (agentId: string, rejected: Rejections): Rejections => {
    const all = new Map(agents.get(agentId)?.pending);
    for (const [r, n] of rejected) all.set(r, (all.get(r) ?? 0) + n);
    return all;
  };
  return {
    due(agentId, rejected) {
      const all = merged(agentId, rejected);
      const last = agents.get(agentId)?.lastAt ?? Number.NEGATIVE_INFINITY;
      if (all.size === 0 || now().getTime() - last < REPORT_EVERY_MS) return undefined;
      const total = [...all.values()].reduce((a, b) => a + b, 0);
      const detail = [...all].map(([r, n]) => `${r}: ${n}`).join(', ');
      return {
        code: REJECTION_EVENT,
        message: `${total} telemetry records from agent ${agentId} rejected (${detail})`,
        at: now().toISOString(),
        attributes: { agentId, ...Object.fromEntries([...all].map(([r, n]) => [r, String(n)])) },
      };
    },
    counted(agentId, rejected, reported) {
      if (reported) agents.set(agentId, { lastAt: now().getTime(), pending: new Map() });
      else if (rejected.size > 0) {
        const lastAt = agents.get(agentId)?.lastAt ?? Number.NEGATIVE_INFINITY;
        agents.set(agentId, { lastAt, pending: merged(agentId, rejected) });
      }
    },
  };
}
