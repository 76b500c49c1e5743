// Visibility: what agents observed, as the REST contract shows it (flows, the map,
// recommendations, events), flow retention, and reporting ingested flows (log, SIEM). Answers
// resolve addresses against the provisioned state as it is now. Must not change policy,
// workloads or agents; it only reads them.
import type {
  FlowVerdict,
  FlowView,
  MapView,
  Recommendation,
  RecommendationRequest,
} from '@bulkhead/api';
import {
  PolicyError,
  parseAddress,
  recommend,
  type Selector,
  validatePolicy,
} from '@bulkhead/policy';
import type { Logger } from 'pino';
import { ControlPlaneError, invalid } from '../errors.js';
import type { PolicyStates } from '../policy-state.js';
import type { SecurityEvent } from '../siem/index.js';
import type { AnomalyDetector } from './anomalies.js';
import type { FlowMatch, FlowRow, PruneResult } from './flow-store.js';
import type {
  AgentEventRow,
  EventFilter,
  FlowDelta,
  ReportedEvent,
  VisibilityStore,
} from './store.js';
import {
  buildMap,
  createNoPolicyEnds,
  createResolver,
  protocolName,
  protocolNumber,
  toFlowView,
} from './views.js';
import { DEFAULT_GROUP_BY, time, window } from './window.js';

/** `GET /v1/flows` query, as the REST edge parsed it. */
export interface FlowFilter {
  workload?: string;
  /** `k=v` each; all must hold for the src or the dst workload. */
  label?: string | string[];
  port?: number;
  protocol?: string;
  verdict?: FlowVerdict;
  direction?: 'ingress' | 'egress';
  since?: string;
  until?: string;
  newSince?: string;
  limit?: number;
}

export const DEFAULT_FLOW_LIMIT = 1000;

export interface VisibilityService {
  flows(filter: FlowFilter): { flows: FlowView[] };
  map(q: { groupBy?: string; since?: string; until?: string }): MapView;
  recommendations(req: RecommendationRequest): Recommendation;
  listEvents(filter: EventFilter): AgentEventRow[];
  /** Flow retention and row cap (on start and periodically). */
  pruneFlows(): PruneResult;
  /** A counted telemetry batch: agent events to the log, denied/would-deny flows to the SIEM. */
  reported(agentId: string, workload: string, flows: FlowDelta[], events: ReportedEvent[]): void;
}

export interface VisibilityDeps {
  store: VisibilityStore;
  states: PolicyStates;
  log: Logger;
  /** Where denied/would-deny flows go as they are ingested (the SIEM exporter). */
  events?: { emit(e: SecurityEvent): void };
  /** Looks for anomalies in every counted batch. */
  anomalies?: Pick<AnomalyDetector, 'observe'>;
}

export function createVisibilityService(deps: VisibilityDeps): VisibilityService {
  const { store, states, log } = deps;

  /** Denied and would-deny flows to the SIEM, once each, as their batch is counted. */
  function emitFlows(workload: string, flows: FlowDelta[]): void {
    const sink = deps.events;
    const denied = flows.filter((f) => f.verdict !== 'allowed');
    if (!sink || denied.length === 0) return;
    const resolver = createResolver({
      workloads: states.workloads(),
      ipLists: [],
      services: [],
      policies: [],
    });
    for (const f of denied) {
      sink.emit({
        kind: 'flow',
        at: new Date(f.lastSeen),
        verdict: f.verdict as 'denied' | 'would-deny',
        workload,
        direction: f.direction,
        src: f.src,
        dst: f.dst,
        protocol: protocolName(f.protocol),
        port: f.port,
        ruleId: f.ruleId,
        connections: f.connections,
        srcWorkload: resolver.workloadOf(f.src)?.name,
        dstWorkload: resolver.workloadOf(f.dst)?.name,
      });
    }
  }

  return {
    flows(filter) {
      const workloads = states.workloads();
      const match: FlowMatch[] = [];
      if (filter.workload !== undefined) {
        const w = workloads.find((x) => x.name === filter.workload);
        match.push({ workloads: [filter.workload], addresses: w?.addresses ?? [] });
      }
      const labels = [filter.label ?? []].flat();
      if (labels.length > 0) {
        const wanted = labels.map((l, i) => {
          const eq = l.indexOf('=');
          if (eq <= 0) {
            throw invalid('invalid query', [{ path: `label[${i}]`, message: 'must be key=value' }]);
          }
          return [l.slice(0, eq), l.slice(eq + 1)] as const;
        });
        const hits = workloads.filter((w) => wanted.every(([k, v]) => w.labels[k] === v));
        match.push({
          workloads: hits.map((w) => w.name),
          addresses: hits.flatMap((w) => w.addresses),
        });
      }
      let protocol: number | undefined;
      if (filter.protocol !== undefined) {
        protocol = protocolNumber(filter.protocol);
        if (protocol === undefined) {
          throw invalid('invalid query', [
            { path: 'protocol', message: 'must be tcp, udp, sctp, icmp, icmpv6 or 0..255' },
          ]);
        }
      }
      const rows = store.queryFlows({
        match,
        protocol,
        port: filter.port,
        verdict: filter.verdict,
        direction: filter.direction,
        ...window(filter),
        newSince: time(filter.newSince, 'newSince'),
        limit: filter.limit ?? DEFAULT_FLOW_LIMIT,
      });
      const { state } = states.provisioned(workloads);
      const resolver = createResolver(state);
      const noPolicy = createNoPolicyEnds(state, resolver);
      return { flows: rows.map((r) => toFlowView(r, resolver, noPolicy)) };
    },

    map(q) {
      const groupBy =
        q.groupBy === undefined
          ? DEFAULT_GROUP_BY
          : q.groupBy
              .split(',')
              .map((k) => k.trim())
              .filter((k) => k !== '');
      const { state } = states.provisioned(states.workloads());
      return buildMap(store.queryFlows(window(q)), state, groupBy);
    },

    recommendations(req) {
      if ((req.scope === undefined) === (req.workload === undefined)) {
        throw invalid('invalid recommendation request', [
          { path: '', message: 'needs exactly one of scope or workload' },
        ]);
      }
      if (req.scope !== undefined) {
        // Policy has no validator for a bare selector; a policy scope is exactly one, and its
        // diagnostics already carry the `scope` path of this body.
        const diags = validatePolicy({ name: 'recommendation', scope: req.scope }).filter(
          (d) => d.path === 'scope' || d.path.startsWith('scope.') || d.path.startsWith('scope['),
        );
        if (diags.length > 0) throw invalid('invalid scope selector', diags);
      }
      const { state } = states.provisioned(states.workloads());
      const rows = store
        .queryFlows(window({ since: req.since }))
        .filter((r) => parseAddress(r.src) && parseAddress(r.dst));
      let result: ReturnType<typeof recommend<FlowRow>>;
      try {
        result = recommend<FlowRow>({
          state,
          flows: rows,
          scope: req.workload !== undefined ? { workload: req.workload } : (req.scope as Selector),
          groupBy: req.groupBy ?? DEFAULT_GROUP_BY,
        });
      } catch (err) {
        if (err instanceof PolicyError && err.code === 'POLICY_UNKNOWN_WORKLOAD') {
          throw new ControlPlaneError('NOT_FOUND', `workload ${req.workload} not found`, {
            cause: err,
          });
        }
        throw err;
      }
      const resolver = createResolver(state);
      return {
        policies: result.policies,
        coverage: result.coverage,
        uncovered: result.uncovered.map((r) => toFlowView(r, resolver)),
      };
    },

    listEvents: (filter) => store.listEvents(filter),

    pruneFlows() {
      const result = store.pruneFlows();
      if (result.evicted > 0) {
        log.warn({ evicted: result.evicted }, 'flow store over its row cap: oldest flows removed');
      }
      if (result.buckets + result.expired > 0) log.info(result, 'pruned flows past retention');
      return result;
    },

    reported(agentId, workload, flows, events) {
      for (const e of events) {
        log.warn({ agentId, code: e.code, attributes: e.attributes }, e.message);
        // Tampering, a full flow table, dropped flows: the SIEM hears what the agent saw.
        deps.events?.emit({
          kind: 'agent-event',
          at: new Date(e.at),
          workload,
          agentId,
          code: e.code,
          message: e.message,
          attributes: e.attributes,
        });
      }
      emitFlows(workload, flows);
      deps.anomalies?.observe(workload, flows);
    },
  };
}
