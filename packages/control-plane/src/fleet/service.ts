// Fleet: agents and their lifecycle over the wire. Enrolment (enrolment.ts), the Sync protocol
// (hello with its address claims (addresses.ts), ack, telemetry ingest), the agents list and
// revocation, rule counters. Identity is the certificate's agent id, never what a message says.
// Must not edit policy: workload changes go through policy administration (WorkloadChanges),
// agent states and updates through the publisher, flows and events to visibility.
import type { AgentView } from '@bulkhead/api';
import type { ApplyAck, Hello, Telemetry } from '@bulkhead/proto';
import type { Logger } from 'pino';
import type { AuditLog } from '../access/store.js';
import { ControlPlaneError, notFound } from '../errors.js';
import type { Metrics } from '../metrics.js';
import type { Pki } from '../pki.js';
import type { WorkloadChanges } from '../policy-admin/service.js';
import type { WorkloadRecord } from '../policy-admin/store.js';
import type { RuleSetPublisher } from '../rulesets/publisher.js';
import type { Transactor } from '../store/database.js';
import { DEFAULT_FLOW_RETENTION_DAYS } from '../visibility/flow-store.js';
import type { FlowDelta, ReportedEvent } from '../visibility/store.js';
import { createAddressClaims } from './addresses.js';
import { createEnrolment, type Enrolment } from './enrolment.js';
import {
  createTelemetryIngest,
  type Pausable,
  type TelemetryIngest,
  type TelemetryIngestOptions,
} from './ingest.js';
import { createSentRuleIds } from './sent-rules.js';
import type { AgentRecord, CounterRow, FleetStore } from './store.js';
import type { AgentStream, StreamRegistry } from './streams.js';
import { canonical, checkTelemetry, createRejectionReporter } from './telemetry.js';

const DAY_MS = 86_400_000;

export type { EnrollmentTokenRequest } from './enrolment.js';

/** Enrolment (enrol, its tokens, release: enrolment.ts) and the rest of the fleet. */
export interface FleetService extends Enrolment {
  // --- the agent protocol (called by the gRPC edge)
  /** The agent of a verified certificate, if it may sync. */
  agentForSync(agentId: string): AgentRecord;
  /**
   * Records a Hello on `stream`, the agent's open stream (registered after agentForSync, closed
   * when the agent may no longer sync); returns the encoded full sync to send after the Welcome
   * when the agent's applied hash is not the desired one (nothing when it is).
   */
  hello(agentId: string, hello: Hello, stream: AgentStream): Buffer[];
  /** The ids of the rules the agent's workload has now (telemetry validation). */
  ruleIdsOf(workload: string): ReadonlySet<string> | undefined;
  ack(agentId: string, ack: ApplyAck): void;
  /**
   * Queues a telemetry batch from the agent's stream for the bounded ingest (ingest.ts), which
   * pauses the stream until it is written. Resolves then: false when its seq was already
   * counted (resent after a reconnect).
   */
  telemetry(agentId: string, t: Telemetry, source: Pausable): Promise<boolean>;
  /** The ingest queue: shutdown waits until it is idle; metrics read how far behind it is. */
  readonly ingest: Pick<TelemetryIngest, 'idle' | 'queued' | 'waiting'>;

  // --- REST
  listAgents(): AgentView[];
  revokeAgent(actor: string, id: string): AgentView;
  listCounters(filter: { workload?: string; ruleId?: string }): CounterRow[];
  approveAddresses(actor: string, name: string): WorkloadRecord;
  denyAddresses(actor: string, name: string): WorkloadRecord;
}

export interface FleetDeps {
  store: FleetStore;
  db: Transactor;
  workloads: WorkloadChanges;
  publisher: Pick<RuleSetPublisher, 'hello' | 'desiredAll' | 'ruleIdsOf'>;
  streams: StreamRegistry;
  pki: Pki;
  audit: AuditLog;
  /** Told of each telemetry batch once it is counted (visibility: logs and the SIEM). */
  reported(agentId: string, workload: string, flows: FlowDelta[], events: ReportedEvent[]): void;
  /** Records an event the control plane raises about a workload (inside the caller's transaction). */
  recordEvent(workload: string, e: Omit<ReportedEvent, 'at'>): void;
  /** Where dropped telemetry records are counted. */
  metrics: Pick<Metrics, 'telemetryRejected' | 'propagation' | 'flowsIngested'>;
  /** Bounds of the telemetry ingest queue (ingest.ts defaults). */
  ingest?: Pick<TelemetryIngestOptions, 'capacity' | 'sliceRecords' | 'sliceMs'>;
  /** Telemetry older than this is refused (it would be pruned at once). Default 35. */
  flowRetentionDays?: number;
  log: Logger;
  now?: () => Date;
  /** Whether the agent is offline (liveness.ts); false when not given. */
  isOffline?: (agentId: string) => boolean;
}

export function createFleetService(deps: FleetDeps): FleetService {
  const { store, db, workloads, publisher, streams, pki, audit, log } = deps;
  const now = deps.now ?? (() => new Date());
  const retentionMs = (deps.flowRetentionDays ?? DEFAULT_FLOW_RETENTION_DAYS) * DAY_MS;
  const sentRules = createSentRuleIds(publisher);
  const rejections = createRejectionReporter(now);
  /** The last failed Hello write's error, logged once for all the Hellos it held. */
  let lastHelloFailure: unknown;
  const enrolment = createEnrolment({ store, db, workloads, streams, pki, audit, log, now });
  const addresses = createAddressClaims({
    db,
    workloads,
    audit,
    recordEvent: deps.recordEvent,
    log,
    now,
  });

  /**
   * Checks and stores one batch (inside the caller's transaction); `after` tells the metrics,
   * the log and visibility once that transaction committed.
   */
  function countTelemetry(agentId: string, t: Telemetry): { added: boolean; after?: () => void } {
    // Checked against what the control plane knows of the agent's workload, never against
    // what the batch says of itself.
    const { workload } = fleet.agentForSync(agentId);
    const nowMs = now().getTime();
    const addresses = workloads.getWorkload(workload).addresses.map(canonical);
    const { batch, rejected } = checkTelemetry(t, {
      addresses: new Set(addresses.filter((a) => a !== undefined)),
      ruleIds: sentRules.of(workload),
      nowMs,
      oldestMs: nowMs - retentionMs,
    });
    const notice = rejections.due(agentId, rejected);
    const added = store.addTelemetry(agentId, t.seq, { ...batch, notices: notice && [notice] });
    if (!added) return { added };
    return {
      added,
      after() {
        rejections.counted(agentId, rejected, notice !== undefined);
        for (const [reason, n] of rejected) deps.metrics.telemetryRejected.inc({ reason }, n);
        deps.metrics.flowsIngested.inc(batch.flows.length);
        if (notice) log.warn({ agentId, workload, rejected: notice.attributes }, notice.message);
        deps.reported(agentId, workload, batch.flows, batch.events);
      },
    };
  }

  // Several agents' batches per transaction; one failing batch (a revoked agent) is rolled back
  // to its savepoint and refused alone.
  const ingest = createTelemetryIngest({
    ...deps.ingest,
    write(items) {
      const counted = db.tx(() =>
        items.map(({ agentId, telemetry }) => {
          try {
            return db.tx(() => countTelemetry(agentId, telemetry));
          } catch (error) {
            return { error };
          }
        }),
      );
      return counted.map((c) => {
        if ('error' in c) return c;
        c.after?.();
        return { added: c.added };
      });
    },
  });

  function agentView(
    a: AgentRecord,
    desired: ReturnType<RuleSetPublisher['desiredAll']>,
  ): AgentView {
    const d = desired.get(a.workload);
    const inSync = d !== undefined && a.appliedHash === d.hash;
    return {
      id: a.id,
      workload: a.workload,
      hostname: a.hostname,
      connected: streams.isConnected(a.id),
      offline: deps.isOffline?.(a.id) ?? false,
      // An agent running content that a newer revision left unchanged runs that revision's
      // policy too; it is not sent anything, so it cannot report the number itself.
      appliedRevision: inSync ? Math.max(a.appliedRevision, d.revision) : a.appliedRevision,
      appliedHash: a.appliedHash,
      desiredHash: d?.hash ?? null,
      desiredRevision: d?.revision ?? null,
      inSync,
      lastSeen: a.lastSeen,
      lastError: a.lastError,
      lastApplyMicros: a.lastApplyMicros,
      version: a.version,
      revoked: a.revoked,
    };
  }

  const fleet: FleetService = {
    enroll: enrolment.enroll,
    createEnrollmentToken: enrolment.createEnrollmentToken,
    listEnrollmentTokens: enrolment.listEnrollmentTokens,
    deleteEnrollmentToken: enrolment.deleteEnrollmentToken,
    releaseWorkload: enrolment.releaseWorkload,
    approveAddresses: addresses.approve,
    denyAddresses: addresses.deny,

    agentForSync(agentId) {
      const a = store.getAgent(agentId);
      if (!a) throw new ControlPlaneError('UNAUTHENTICATED', 'unknown agent');
      if (a.revoked) throw new ControlPlaneError('UNAUTHENTICATED', 'agent is revoked');
      return a;
    },

    hello(agentId, hello, stream) {
      // Not read again: the stream was opened for an agent that may sync (agentForSync), and
      // whatever ends that (revocation, a new enrolment, release, deletion) closes the stream.
      store.recordHello(agentId, hello.agentVersion, (err) => {
        // One log line per failed write, not per Hello in it: each gets the same error.
        if (err !== lastHelloFailure) log.error({ err }, 'could not record Hellos');
        lastHelloFailure = err;
        // Its agent tries again, as after any lost stream.
        stream.close('control plane could not record the Hello', 'unavailable');
      });
      stream.ranges = hello.packedRanges ? 'packed' : 'text';
      return publisher.hello(stream, hello.appliedHash, () => {
        try {
          addresses.claim(agentId, stream.workload, hello.addresses);
        } catch (err) {
          // A claim that cannot be applied must not cut the host off: it keeps its addresses.
          log.warn({ err, agentId }, 'ignored addresses from Hello');
        }
      });
    },
    ruleIdsOf: (workload) => publisher.ruleIdsOf(workload),

    ack(agentId, ack) {
      // One statement per ack, which records it only for an agent that may sync; the read that
      // says why not is for the rare refusal.
      const recorded = store.recordAck(agentId, {
        revision: ack.revision,
        hash: ack.hash,
        error: ack.ok ? '' : ack.error || 'apply failed',
        applyMicros: ack.applyMicros,
      });
      if (!recorded) fleet.agentForSync(agentId);
      const stream = streams.get(agentId);
      if (ack.ok && stream?.sentAt !== undefined && stream.synced === ack.hash) {
        deps.metrics.propagation.observe((performance.now() - stream.sentAt) / 1000);
        stream.sentAt = undefined;
      }
    },

    telemetry: (agentId, t, source) => ingest.offer(source, { agentId, telemetry: t }),

    listAgents() {
      const desired = publisher.desiredAll();
      return store.listAgents().map((a) => agentView(a, desired));
    },
    revokeAgent(actor, id) {
      db.tx(() => {
        const a = store.getAgent(id);
        if (!a) throw notFound(`agent ${id}`);
        store.revokeAgent(id);
        audit.appendAudit({
          actor,
          action: 'agent.revoke',
          target: id,
          before: { revoked: a.revoked },
          after: { revoked: true },
        });
      });
      streams.close(id, 'agent revoked');
      return agentView(store.getAgent(id)!, publisher.desiredAll());
    },
    listCounters: (filter) => store.listCounters(filter),
    ingest,
  };
  return fleet;
}
