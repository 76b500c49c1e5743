// Wires the domains together on one set of stores. Dependencies point one way: access and the
// rule-set publisher at the bottom, policy administration on them, revisions and fleet on policy
// administration; the impact gate reads the visibility store, fleet tells visibility of telemetry.
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
import { createRevisionsService, type RevisionsService } from './revisions/service.js';
import { createRuleSetPublisher } from './rulesets/publisher.js';
import type { SecurityEvent } from './siem/index.js';
import type { Stores } from './store/index.js';
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
}

export interface Domains {
  access: AccessService;
  policy: PolicyAdminService;
  revisions: RevisionsService;
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
  const metrics = createMetrics();
  const audit = stores.access;
  const states = createPolicyStates(stores.policy, stores.revisions);
  const withdrawal = deps.offline?.withdraw
    ? createAddressWithdrawal(createRuleSetPublisher({ streams, log }), (name) => {
        const w = stores.policy.getWorkload(name);
        return w && toWorkload(w);
      })
    : undefined;
  const publisher = withdrawal?.publisher ?? createRuleSetPublisher({ streams, log });
  const started = performance.now();
  const { state, revision } = states.provisioned(states.workloads());
  publisher.load(state, revision);
  log.info(
    { revision, workloads: state.workloads.length, ms: Math.round(performance.now() - started) },
    'loaded the provisioned policy',
  );
  const gate = createImpactGate(stores.visibility);
  const visibility = createVisibilityService({ store: stores.visibility, states, log, events });
  const policy = createPolicyAdminService({
    store: stores.policy,
    db,
    states,
    publisher,
    gate,
    audit,
    deleteWorkload: stores.deleteWorkload,
    streams,
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
    revisions: createRevisionsService({
      store: stores.revisions,
      db,
      drafts: stores.policy,
      states,
      publisher,
      gate,
      audit,
      log,
      maxRuleSetEntries: deps.maxRuleSetEntries,
    }),
    fleet: createFleetService({
      store: stores.fleet,
      db,
      workloads: policy,
      publisher,
      streams,
      pki,
      audit,
      reported: visibility.reported,
      recordEvent: stores.visibility.recordControlPlaneEvent,
      metrics,
      flowRetentionDays: deps.flowRetentionDays,
      log,
      now,
      isOffline: (id) => liveness.isOffline(id),
    }),
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
