// Wires the domains together on one set of stores. Dependencies point one way: access and the
// rule-set publisher at the bottom, policy administration on them, revisions and fleet on policy
// administration; the impact gate reads the visibility store, fleet tells visibility of telemetry.
// Staged rollouts sit on revisions and the publisher (a follower of two revisions), and judge
// each telemetry batch fleet reports.
import type { Logger } from 'pino';
import { type AccessService, createAccessService } from './access/service.js';
import {
  createAddressWithdrawal,
  createLiveness,
  DEFAULT_OFFLINE_AFTER_MS,
  type Liveness,
  livenessEvents,
} from './fleet/liveness.js';
import { createFleetService, type FleetService } from './fleet/service.js';
import type { StreamRegistry } from './fleet/streams.js';
import { createMetrics, type Metrics } from './metrics.js';
import type { Pki } from './pki.js';
import { createPolicyAdminService, type PolicyAdminService } from './policy-admin/service.js';
import { createPolicyStates, toWorkload } from './policy-state.js';
import { createImpactGate } from './revisions/impact-gate.js';
import { createRolloutService, type RolloutService } from './revisions/rollout.js';
import { createRevisionsService, type RevisionsService } from './revisions/service.js';
import { createRevisionFollower } from './rulesets/follower.js';
import type { SecurityEvent } from './siem/index.js';
import type { Stores } from './store/index.js';
import { type AnomalyOptions, createAnomalyDetector } from './visibility/anomalies.js';
import { createExplainService, type ExplainService } from './visibility/explain.js';
import { createHygieneService, type HygieneService } from './visibility/hygiene.js';
import { createVisibilityService, type VisibilityService } from './visibility/service.js';

export interface DomainDeps {
  stores: Stores;
  pki: Pki;
  streams: StreamRegistry;
  log: Logger;
  now?: () => Date;
  /** Where denied/would-deny flows go as they are ingested (the SIEM exporter). */
  events?: { emit(e: SecurityEvent): void };
  /** Telemetry older than this is refused by ingest (flow retention). Default 35. */
  flowRetentionDays?: number;
  /** A provision warns about rule sets larger than this (entries). */
  maxRuleSetEntries?: number;
  /**
   * An agent without a stream this long is offline (default 120 s); `withdraw`: a workload
   * whose agents are all offline leaves its peers' rule sets until one is back (fleet/liveness.ts).
   */
  offline?: { afterMs?: number; withdraw?: boolean };
  /** Anomaly detection's bounds, thresholds and rate limits. */
  anomalies?: AnomalyOptions;
  /** The registry to count into; default a new one (the caller may count before the domains). */
  metrics?: Metrics;
}

export interface Domains {
  access: AccessService;
  policy: PolicyAdminService;
  revisions: RevisionsService;
  rollouts: RolloutService;
  fleet: FleetService;
  visibility: VisibilityService;
  /** The Prometheus registry the domains count into (`GET /metrics`). */
  metrics: Metrics;
  explain: ExplainService;
  hygiene: HygieneService;
  /** Offline agents; the caller runs its sweep (start/stop). */
  liveness: Liveness;
}

export function createDomains(deps: DomainDeps): Domains {
  const { stores, pki, streams, log, now, events } = deps;
  const db = stores;
  const metrics = deps.metrics ?? createMetrics();
  const audit = stores.access;
  const states = createPolicyStates(stores.policy, stores.revisions);
  // During a staged rollout agents follow its base revision or its new one (the follower);
  // with `offline.withdraw`, the domains see it through the address withdrawal.
  const follower = createRevisionFollower({
    streams,
    asOf: (n, workloads) => states.atRevision(n, workloads).workloads,
    log,
  });
  const withdrawal = deps.offline?.withdraw
    ? createAddressWithdrawal(follower, (name) => {
        // Its provisioned labels and mode, as every workload change the agents get.
        const w = stores.policy.getWorkload(name);
        return w && states.provisioned([toWorkload(w)]).state.workloads[0];
      })
    : undefined;
  const publisher = withdrawal?.publisher ?? follower;
  const started = performance.now();
  const rolling = stores.rollouts.active();
  const { state, revision } = rolling
    ? {
        state: states.atRevision(rolling.baseRevision, states.workloads()),
        revision: rolling.baseRevision,
      }
    : states.provisioned(states.workloads());
  publisher.load(state, revision);
  log.info(
    { revision, workloads: state.workloads.length, ms: Math.round(performance.now() - started) },
    'loaded the provisioned policy',
  );
  const gate = createImpactGate(stores.visibility);
  const anomalies = createAnomalyDetector(
    {
      known: stores.visibility.flowDependencies,
      revisions: stores.revisions,
      // In the events table (`bulkhead events`) and the audit log, in one transaction.
      record: (workload, e) =>
        db.tx(() => {
          stores.visibility.recordControlPlaneEvent(workload, e);
          audit.appendAudit({
            actor: 'control-plane',
            action: 'anomaly',
            target: workload,
            after: { code: e.code, message: e.message, attributes: e.attributes },
          });
        }),
      emit: events && ((e) => events.emit(e)),
      now: now ?? (() => new Date()),
      log,
    },
    deps.anomalies,
  );
  const visibility = createVisibilityService({
    store: stores.visibility,
    states,
    log,
    events,
    anomalies,
  });
  const policy = createPolicyAdminService({
    store: stores.policy,
    db,
    states,
    publisher,
    audit,
    deleteWorkload: stores.deleteWorkload,
    streams,
  });
  let rollouts: RolloutService | undefined;
  const revisions = createRevisionsService({
    store: stores.revisions,
    db,
    drafts: policy,
    states,
    publisher,
    gate,
    audit,
    log,
    maxRuleSetEntries: deps.maxRuleSetEntries,
    busy: () => rollouts?.busy(),
  });
  rollouts = createRolloutService({
    store: stores.rollouts,
    revisionStore: stores.revisions,
    revisions,
    db,
    states,
    follower,
    audit,
    flows: stores.visibility,
    log,
    now,
  });
  rollouts.restore();
  const fleet = createFleetService({
    store: stores.fleet,
    db,
    workloads: policy,
    publisher,
    streams,
    pki,
    audit,
    reported(agentId, workload, flows, events) {
      visibility.reported(agentId, workload, flows, events);
      rollouts.observed(workload, flows);
    },
    recordEvent: stores.visibility.recordControlPlaneEvent,
    metrics,
    flowRetentionDays: deps.flowRetentionDays,
    log,
    now,
    isOffline: (id) => liveness.isOffline(id),
  });
  const clock = now ?? (() => new Date());
  const liveness = createLiveness({
    agents: stores.fleet.listAgents,
    isConnected: streams.isConnected,
    offlineAfterMs: deps.offline?.afterMs ?? DEFAULT_OFFLINE_AFTER_MS,
    addresses: withdrawal,
    now: () => clock().getTime(),
    changed: livenessEvents({
      db,
      audit,
      recordEvent: stores.visibility.recordControlPlaneEvent,
      log,
    }),
  });
  return {
    access: createAccessService({ store: stores.access, db }),
    policy,
    revisions,
    rollouts,
    fleet,
    visibility,
    metrics,
    explain: createExplainService(states),
    hygiene: createHygieneService({
      states,
      flows: stores.visibility,
      fleet: stores.fleet,
      workloads: stores.policy,
      tokens: stores.access,
      now,
    }),
    liveness,
  };
}
