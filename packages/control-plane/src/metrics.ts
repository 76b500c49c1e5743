// The control plane's Prometheus metrics: one registry per control plane (tests run several in
// one process), served as text by `GET /metrics` (api.ts). Must not hold state a domain needs:
// domains only increment what is here, and what the control plane already knows (agents,
// store size, SIEM delivery) is read at scrape time through `watch()`, never copied.
// Labels hold codes, routes and states, never agent names or addresses.
import { statSync } from 'node:fs';
import type { AgentView } from '@bulkhead/api';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { TelemetryIngest } from './fleet/ingest.js';
import { REJECT_REASONS, type RejectReason } from './fleet/telemetry.js';
import { SHED_REASONS, type ShedReason } from './grpc-listener.js';
import type { ExporterStats } from './siem/index.js';

export interface Metrics {
  readonly registry: Registry;
  readonly telemetryRejected: Counter<'reason'>;
  /** Seconds from a rule set sent on a stream to the agent's ack of that hash. */
  readonly propagation: Histogram;
  /** Enrolments refused, by error code. */
  readonly enrolmentErrors: Counter<'code'>;
  /** Sync streams ended by an error, by code. */
  readonly syncErrors: Counter<'code'>;
  /** Agent connections closed before they were served, by reason (grpc-listener.ts). */
  readonly grpcConnectionsShed: Counter<'reason'>;
  /** Agent TLS handshakes finished, full or resuming a session (grpc-listener.ts). */
  readonly grpcHandshakes: Counter<'session'>;
  readonly apiRequests: Histogram<'method' | 'route' | 'status'>;
  /** Flows stored by telemetry ingest. */
  readonly flowsIngested: Counter;
  /** Registers what is read at each scrape. */
  watch(sources: ScrapeSources): void;
}

export interface ScrapeSources {
  agents(): AgentView[];
  flowRows(): number;
  /** The telemetry ingest queue: how far it is behind. */
  ingest: Pick<TelemetryIngest, 'queued' | 'waiting'>;
  /** The database file; its -wal and -shm files count too. */
  dbPath: string;
  siem?: () => ExporterStats;
}

const AGENT_STATES = [
  'connected',
  'disconnected',
  'offline',
  'in_sync',
  'out_of_sync',
  'revoked',
] as const;

function fileBytes(path: string): number {
  let n = 0;
  for (const p of [path, `${path}-wal`, `${path}-shm`])
    n += statSync(p, { throwIfNoEntry: false })?.size ?? 0;
  return n;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  const registers = [registry];
  // Every value of the label is exported from the start, so a rate() alert sees 0 before the
  // first attack.
  const byLabel = <L extends string>(
    name: string,
    help: string,
    label: L,
    values: readonly string[],
  ) => {
    const counter = new Counter<L>({ name, help, labelNames: [label], registers });
    for (const value of values) counter.inc({ [label]: value } as Record<L, string>, 0);
    return counter;
  };
  const telemetryRejected = byLabel(
    'bulkhead_telemetry_rejected_total',
    'Telemetry records (counters, flows, events) agents sent that the control plane dropped, by reason.',
    'reason',
    REJECT_REASONS satisfies readonly RejectReason[],
  );
  const propagation = new Histogram({
    name: 'bulkhead_policy_propagation_seconds',
    help: 'Time from a rule set sent to an agent to its ack of that state (earliest unacked send).',
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers,
  });
  const enrolmentErrors = new Counter<'code'>({
    name: 'bulkhead_enrolment_errors_total',
    help: 'Enrolment requests refused, by error code.',
    labelNames: ['code'],
    registers,
  });
  const syncErrors = new Counter<'code'>({
    name: 'bulkhead_sync_errors_total',
    help: 'Agent Sync streams ended by an error, by error code.',
    labelNames: ['code'],
    registers,
  });
  const grpcConnectionsShed = byLabel(
    'bulkhead_grpc_connections_shed_total',
    'Agent connections closed before they were served: over the per-source cap, or a TLS handshake that failed or timed out.',
    'reason',
    SHED_REASONS satisfies readonly ShedReason[],
  );
  const grpcHandshakes = byLabel(
    'bulkhead_grpc_tls_handshakes_total',
    'Agent TLS handshakes finished: full (certificates exchanged and verified) or resumed (a session ticket of this CA, e.g. after a restart).',
    'session',
    ['full', 'resumed'],
  );
  const apiRequests = new Histogram<'method' | 'route' | 'status'>({
    name: 'bulkhead_api_request_duration_seconds',
    help: 'REST API request latency by method, route pattern and HTTP status.',
    labelNames: ['method', 'route', 'status'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    registers,
  });
  const flowsIngested = new Counter({
    name: 'bulkhead_flows_ingested_total',
    help: 'Flow records from agent telemetry stored by the control plane.',
    registers,
  });

  function watch(s: ScrapeSources): void {
    new Gauge<'state'>({
      name: 'bulkhead_agents',
      help: 'Enrolled agents by state; connected/disconnected and in_sync/out_of_sync count agents not revoked; offline: disconnected longer than --offline-after.',
      labelNames: ['state'],
      registers,
      collect() {
        const n = Object.fromEntries(AGENT_STATES.map((k) => [k, 0])) as Record<string, number>;
        for (const a of s.agents()) {
          if (a.revoked) {
            n.revoked! += 1;
            continue;
          }
          n[a.connected ? 'connected' : 'disconnected']! += 1;
          n[a.inSync ? 'in_sync' : 'out_of_sync']! += 1;
          if (a.offline) n.offline! += 1;
        }
        for (const state of AGENT_STATES) this.set({ state }, n[state]!);
      },
    });
    // A value read at each scrape.
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    gauge(
      'bulkhead_store_database_bytes',
      'Size of the SQLite database files (main, -wal, -shm).',
      () => fileBytes(s.dbPath),
    );
    gauge('bulkhead_flow_rows', 'Flow rows held by the store.', () => s.flowRows());
    gauge(
      'bulkhead_telemetry_ingest_queued_records',
      'Telemetry records (counters, flows, events, 1 per message) received and not yet written.',
      () => s.ingest.queued,
    );
    gauge(
      'bulkhead_telemetry_ingest_waiting_messages',
      'Telemetry messages waiting for room in the full ingest queue (their streams paused).',
      () => s.ingest.waiting,
    );
    const siem = s.siem;
    if (!siem) return;
    // The exporter counts; these read its totals (a counter set at scrape from a monotonic source).
    const fromStats = (
      name: string,
      help: string,
      pick: (t: ExporterStats['targets'][number]) => number,
    ) =>
      new Counter<'target'>({
        name,
        help,
        labelNames: ['target'],
        registers,
        collect() {
          this.reset();
          // The index, not the URL: a target URL may carry a host or path an operator keeps private.
          for (const [i, t] of siem().targets.entries()) this.inc({ target: String(i) }, pick(t));
        },
      });
    fromStats(
      'bulkhead_siem_sent_total',
      'SIEM messages delivered, by target (index of --siem).',
      (t) => t.sent,
    );
    fromStats(
      'bulkhead_siem_dropped_total',
      'SIEM messages dropped (queue or spool full, or rate limited), by target.',
      (t) => t.queueDropped + t.rateLimited,
    );
    fromStats(
      'bulkhead_siem_errors_total',
      'SIEM send, connect and write failures, by target.',
      (t) => t.errors,
    );
  }

  return {
    registry,
    telemetryRejected,
    propagation,
    enrolmentErrors,
    syncErrors,
    grpcConnectionsShed,
    grpcHandshakes,
    apiRequests,
    flowsIngested,
    watch,
  };
}
