// Visibility's tables: discovered flows (flow-store.ts: rows, hourly buckets, retention, row
// cap) and the events agents and the control plane report. Must not resolve addresses or judge
// flows against policy (views.ts and service.ts do), nor touch agents or counters.
import { json, parse, type Row, type SqliteDatabase } from '../store/database.js';
import {
  type ChangedRow,
  createFlowStore,
  DEFAULT_FLOW_RETENTION_DAYS,
  DEFAULT_MAX_FLOW_ROWS,
  type FlowChanges,
  type FlowDependency,
  type FlowQuery,
  type FlowRow,
  type FlowWindow,
  type ObservedRow,
  type PruneResult,
} from './flow-store.js';

export interface AgentEventRow {
  id: number;
  agentId: string;
  workload: string;
  code: string;
  message: string;
  at: string;
  attributes: Record<string, string>;
}

export type FlowDelta = Omit<FlowRow, 'workload'>;
export type ReportedEvent = Omit<AgentEventRow, 'id' | 'agentId' | 'workload'>;

/** `code`: the event's code (its kind); `since`: ISO time, at or after. */
export interface EventFilter {
  workload?: string;
  code?: string;
  since?: string;
  limit?: number;
}

/** Agent id of events the control plane records itself. */
export const CONTROL_PLANE_EVENT_SOURCE = 'control-plane';

export interface FlowLimitOptions {
  /** Hourly flow buckets, and flows not seen, older than this are pruned. Default 35. */
  flowRetentionDays?: number;
  /** Flow rows kept at most; the least recently seen go first. Default 1,000,000. */
  maxFlowRows?: number;
}

/** Where fleet's telemetry ingest puts flows and events, inside its transaction. */
export interface TelemetrySink {
  recordTelemetry(
    agentId: string,
    workload: string,
    flows: FlowDelta[],
    events: ReportedEvent[],
  ): void;
}

export interface VisibilityStore extends TelemetrySink {
  /** Discovered flows, most recently seen first. */
  queryFlows(q?: FlowQuery): FlowRow[];
  /** A workload's stored dependencies, in no order (one index range: cheap at any table size). */
  flowDependencies(workload: string): FlowDependency[];
  /**
   * Every flow row (in the window) with what impact analysis reads, unordered, one at a time;
   * the database is busy until the iteration ends.
   */
  observedFlows(q?: FlowWindow): IterableIterator<ObservedRow>;
  /** Where the flow rows stand: a later call that differs says rows were written or removed. */
  flowChanges(): FlowChanges;
  /**
   * What changed after `seq` (of `flowChanges`, not before its `loggedSince`): the removals,
   * then the rows left of what they removed and the rows written since, each with its end's
   * total for its distinct flow as `connections`; one at a time, as `observedFlows`.
   */
  changedFlows(seq: number): IterableIterator<ChangedRow>;
  /** Retention and the row cap; records an event when the cap evicted rows. */
  pruneFlows(): PruneResult;
  flowCount(): number;
  /** Events agents and the control plane reported, newest first. */
  listEvents(filter?: EventFilter): AgentEventRow[];
  /** A workload's flows and events (call inside the workload delete). */
  deleteWorkload(workload: string): void;
  /** An event the control plane itself records about a workload (call inside its transaction). */
  recordControlPlaneEvent(workload: string, e: Omit<ReportedEvent, 'at'>): void;
}

export function createSqliteVisibilityStore(
  d: SqliteDatabase,
  options: FlowLimitOptions = {},
): VisibilityStore {
  const { db } = d;
  const maxRows = options.maxFlowRows ?? DEFAULT_MAX_FLOW_ROWS;
  const flows = createFlowStore(db, d.now, {
    retentionDays: options.flowRetentionDays ?? DEFAULT_FLOW_RETENTION_DAYS,
    maxRows,
  });
  const insertEvent = db.prepare(
    `INSERT INTO agent_events (agent_id, workload, code, message, at, attributes)
     VALUES (?, ?, ?, ?, ?, ?)`,
  );
  const selectEvents = db.prepare<Row>(
    `SELECT * FROM agent_events WHERE (@w IS NULL OR workload = @w) AND (@c IS NULL OR code = @c)
       AND (@s IS NULL OR at >= @s) ORDER BY id DESC LIMIT @limit`,
  );
  const deleteEvents = db.prepare('DELETE FROM agent_events WHERE workload = ?');

  function evicted(n: number): void {
    if (n === 0) return;
    insertEvent.run(
      CONTROL_PLANE_EVENT_SOURCE,
      '',
      'FLOW_ROWS_EVICTED',
      `flow store over its cap: ${n} least recently seen flows removed`,
      d.iso(),
      json({ evicted: String(n), maxFlowRows: String(maxRows) }),
    );
  }

  return {
    recordTelemetry(agentId, workload, deltas, events) {
      const evictedRows = flows.ingest(workload, deltas);
      for (const e of events) {
        insertEvent.run(agentId, workload, e.code, e.message, e.at, json(e.attributes));
      }
      evicted(evictedRows);
    },
    queryFlows: (q) => flows.query(q),
    flowDependencies: (workload) => flows.dependencies(workload),
    observedFlows: (q) => flows.observed(q),
    flowChanges: () => flows.changes(),
    changedFlows: (seq) => flows.changedSince(seq),
    pruneFlows() {
      return d.tx(() => {
        const result = flows.prune();
        evicted(result.evicted);
        return result;
      });
    },
    flowCount: () => flows.count(),
    listEvents(filter = {}) {
      return selectEvents
        .all({
          w: filter.workload ?? null,
          c: filter.code ?? null,
          s: filter.since ?? null,
          limit: filter.limit ?? 100,
        })
        .map((r) => ({
          id: Number(r.id),
          agentId: String(r.agent_id),
          workload: String(r.workload),
          code: String(r.code),
          message: String(r.message),
          at: String(r.at),
          attributes: parse(r.attributes),
        }));
    },
    deleteWorkload(workload) {
      flows.deleteWorkload(workload);
      deleteEvents.run(workload);
    },
    recordControlPlaneEvent(workload, e) {
      insertEvent.run(
        CONTROL_PLANE_EVENT_SOURCE,
        workload,
        e.code,
        e.message,
        d.iso(),
        json(e.attributes),
      );
    },
  };
}
