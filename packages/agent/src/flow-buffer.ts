import type { AgentEvent, FlowRecord } from '@bulkhead/proto';

export const DEFAULT_MAX_PENDING_FLOWS = 50_000;

/**
 * Flows and events read from the kernel but not yet sent, in bounded memory: flows are summed
 * by key, and past `maxPending` keys a new key is dropped and counted. The count goes out as
 * one FLOWS_DROPPED event with the next batch, so the loss is reported, never silent.
 */
export interface FlowBuffer {
  /** Merge flows in; returns how many new keys were dropped for want of room. */
  add(flows: FlowRecord[]): number;
  /** Queue an event; one per (code, set) is kept until taken, so repeats do not pile up. */
  event(event: AgentEvent): void;
  /** Everything pending (events first with FLOWS_DROPPED if any), leaving the buffer empty. */
  take(nowMs: number): { flows: FlowRecord[]; events: AgentEvent[] };
  /** Give back a batch that could not be sent; it is merged under the same cap. */
  putBack(batch: { flows: FlowRecord[]; events: AgentEvent[] }): void;
  /** Number of flow keys pending. */
  readonly size: number;
}

export interface FlowBufferOptions {
  maxPending?: number;
  /** Each time new keys are dropped (metrics hook). */
  onDropped?: (count: number) => void;
}

export const FLOWS_DROPPED = 'FLOWS_DROPPED';
export const FLOW_TABLE_FULL = 'FLOW_TABLE_FULL';

function flowKey(f: FlowRecord): string {
  return [f.direction, f.src, f.dst, f.protocol, f.port, f.verdict, f.ruleId].join('\u0000');
}

export function createFlowBuffer(options: FlowBufferOptions = {}): FlowBuffer {
  const max = options.maxPending ?? DEFAULT_MAX_PENDING_FLOWS;
  let flows = new Map<string, FlowRecord>();
  let events = new Map<string, AgentEvent>();
  let dropped = 0;

  function merge(list: FlowRecord[]): number {
    let lost = 0;
    for (const f of list) {
      const key = flowKey(f);
      const prev = flows.get(key);
      if (prev) {
        prev.packets += f.packets;
        prev.bytes += f.bytes;
        prev.firstSeenUnixMs = Math.min(prev.firstSeenUnixMs, f.firstSeenUnixMs);
        prev.lastSeenUnixMs = Math.max(prev.lastSeenUnixMs, f.lastSeenUnixMs);
      } else if (flows.size < max) {
        flows.set(key, { ...f });
      } else {
        lost++;
      }
    }
    if (lost > 0) {
      dropped += lost;
      options.onDropped?.(lost);
    }
    return lost;
  }

  function queue(e: AgentEvent): void {
    const key = `${e.code}\u0000${e.attributes.set ?? ''}`;
    if (!events.has(key)) events.set(key, e);
  }

  return {
    add: merge,
    event: queue,
    take(nowMs) {
      const out = { flows: [...flows.values()], events: [...events.values()] };
      if (dropped > 0) {
        out.events.push({
          code: FLOWS_DROPPED,
          message: `${dropped} flows dropped: more than ${max} pending (--max-pending-flows)`,
          timeUnixMs: nowMs,
          attributes: { count: String(dropped), max_pending: String(max) },
        });
      }
      flows = new Map();
      events = new Map();
      dropped = 0;
      return out;
    },
    putBack(batch) {
      for (const e of batch.events) {
        // Fold an unsent drop report into the running count: one report, the whole loss.
        if (e.code === FLOWS_DROPPED) dropped += Number(e.attributes.count ?? 0);
        else queue(e);
      }
      merge(batch.flows);
    },
    get size() {
      return flows.size;
    },
  };
}
