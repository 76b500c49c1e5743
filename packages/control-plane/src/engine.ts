import { randomUUID } from 'node:crypto';
import type {
  AgentView,
  FlowVerdict,
  FlowView,
  ImpactRequest,
  ImpactView,
  MapView,
  ObjectChange,
  ProvisionResult,
  Recommendation,
  RecommendationRequest,
  RevisionDiff,
} from '@bulkhead/api';
import {
  compile,
  type Diagnostic,
  diffRuleSets,
  diffStates,
  type IpList,
  impact,
  type Labels,
  type Policy,
  PolicyError,
  type PolicyState,
  parseAddress,
  recommend,
  type Selector,
  type Service,
  validateIpList,
  validatePolicy,
  validateService,
  validateWorkload,
  validateWorkloadPatch,
  type Workload,
  type WorkloadMode,
} from '@bulkhead/policy';
import {
  type ApplyAck,
  Direction,
  type EnrollRequest,
  type EnrollResponse,
  type Hello,
  RuleSet,
  type Telemetry,
  Verdict,
} from '@bulkhead/proto';
import type { Logger } from 'pino';
import { ControlPlaneError } from './errors.js';
import type { FlowMatch, FlowQuery, FlowRow } from './flow-store.js';
import { toImpactView, withResources } from './lifecycle.js';
import type { Pki } from './pki.js';
import type { SecurityEvent } from './siem/index.js';
import {
  type ApiTokenRecord,
  type CounterRow,
  hashSecret,
  newSecret,
  type ResourceKind,
  type Role,
  type Store,
  type TelemetryBatch,
  type WorkloadRecord,
} from './store.js';
import type { StreamRegistry } from './streams.js';
import {
  buildMap,
  createResolver,
  protocolName,
  protocolNumber,
  toFlowView,
} from './visibility.js';

// The engine holds every rule of the control plane; the REST and gRPC edges only translate.

const DEFAULT_MODE: WorkloadMode = { ingress: 'monitor', egress: 'monitor' };

export interface ResourceKindInfo {
  table: ResourceKind;
  /** Audit/action noun. */
  noun: 'ip-list' | 'service' | 'policy';
  validate(value: unknown, path?: string): Diagnostic[];
}

export const RESOURCE_KINDS = {
  'ip-lists': { table: 'ip_lists', noun: 'ip-list', validate: validateIpList },
  services: { table: 'services', noun: 'service', validate: validateService },
  policies: { table: 'policies', noun: 'policy', validate: validatePolicy },
} as const satisfies Record<string, ResourceKindInfo>;
export type ResourcePath = keyof typeof RESOURCE_KINDS;

export interface EngineDeps {
  store: Store;
  pki: Pki;
  streams: StreamRegistry;
  log: Logger;
  now?: () => Date;
  /** Where denied/would-deny flows go as they are ingested (the SIEM exporter). */
  events?: { emit(e: SecurityEvent): void };
}

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
export const DEFAULT_GROUP_BY = ['app', 'role'];

/** What a revision freezes: the whole state at provision time. */
type Snapshot = PolicyState;

export type Engine = ReturnType<typeof createEngine>;

export function createEngine(deps: EngineDeps) {
  const { store, pki, streams, log } = deps;
  const now = deps.now ?? (() => new Date());

  const invalid = (message: string, details: Diagnostic[]) =>
    new ControlPlaneError('VALIDATION_FAILED', message, { details });
  const notFound = (what: string) => new ControlPlaneError('NOT_FOUND', `${what} not found`);

  const toWorkload = (w: WorkloadRecord): Workload => ({
    name: w.name,
    addresses: w.addresses,
    labels: w.labels,
    mode: w.mode,
  });

  function draftState(): PolicyState {
    return {
      workloads: store.listWorkloads().map(toWorkload),
      ipLists: store.listResources<IpList>('ip_lists'),
      services: store.listResources<Service>('services'),
      policies: store.listResources<Policy>('policies'),
    };
  }

  /** Policy of the latest revision (drafts stay drafts) applied to the workloads as they are now. */
  function liveState(workloads: Workload[]): { state: PolicyState; revision: number } {
    const latest = store.latestRevision<Snapshot>();
    return {
      revision: latest?.revision ?? 0,
      state: {
        workloads,
        ipLists: latest?.snapshot.ipLists ?? [],
        services: latest?.snapshot.services ?? [],
        policies: latest?.snapshot.policies ?? [],
      },
    };
  }

  /** Revision n's policy (0: the empty policy before the first) applied to `workloads`. */
  function revisionState(n: number, workloads: Workload[]): PolicyState {
    if (n === 0) return { workloads, ipLists: [], services: [], policies: [] };
    const r = store.getRevision<Snapshot>(n);
    if (!r) throw notFound(`revision ${n}`);
    const { ipLists, services, policies } = r.snapshot;
    return { workloads, ipLists, services, policies };
  }

  function compiled(state: PolicyState, revision: number, what: string): RuleSet[] {
    const result = compile(state, revision);
    if (result.diagnostics.length > 0) {
      throw invalid(`${what} does not compile`, result.diagnostics);
    }
    return result.ruleSets;
  }

  /**
   * Observed flows replayed against `before` and `after`; by default over all retained
   * history, since the dependency that causes an outage is often the one seen once a month.
   */
  function impactBetween(
    before: PolicyState,
    after: PolicyState,
    q: { since?: string; until?: string; groupBy?: string[] } = {},
  ): ImpactView {
    const flows = store
      .queryFlows(window(q))
      .filter((r) => parseAddress(r.src) && parseAddress(r.dst));
    return toImpactView(impact(before, after, flows, { groupBy: q.groupBy ?? DEFAULT_GROUP_BY }));
  }

  /** Refuses a change that newly blocks observed flows unless the admin confirmed it. */
  function requireConfirmation(report: ImpactView, confirm: boolean, what: string): void {
    const n = report.summary.newlyBlocked;
    if (n === 0 || confirm) return;
    const details = report.groups.flatMap((g, i) =>
      g.change === 'newly-blocked'
        ? [
            {
              path: `impact.groups[${i}]`,
              message: `${g.src} -> ${g.dst} ${g.protocol}${g.port ? `/${g.port}` : ''} would be blocked (${g.connections} connections seen)`,
            },
          ]
        : [],
    );
    throw new ControlPlaneError(
      'IMPACT_CONFIRMATION_REQUIRED',
      `${what} would newly block ${n} observed flow${n === 1 ? '' : 's'}; confirm to proceed`,
      { details, impact: report },
    );
  }

  /**
   * Stores compiled RuleSets (call inside a transaction); returns those that changed. The hash
   * leaves the revision out, so equal hashes mean equal content: the stored RuleSet is only
   * marked current for the new revision, and no agent reapplies what it already runs.
   */
  function storeRuleSets(ruleSets: RuleSet[]): RuleSet[] {
    const changed: RuleSet[] = [];
    for (const rs of ruleSets) {
      if (store.getRuleSetHash(rs.workloadId) === rs.hash) {
        store.touchRuleSet(rs.workloadId, rs.revision);
        continue;
      }
      store.putRuleSet({
        workload: rs.workloadId,
        revision: rs.revision,
        hash: rs.hash,
        body: Buffer.from(RuleSet.encode(rs).finish()),
      });
      changed.push(rs);
    }
    return changed;
  }

  function push(changed: RuleSet[]): void {
    for (const rs of changed) {
      const n = streams.push(rs);
      log.debug({ workload: rs.workloadId, hash: rs.hash, streams: n }, 'pushed RuleSet');
    }
  }

  /**
   * Applies a workload change in one transaction together with the recompile it causes, and
   * pushes afterwards. A change that makes the live state invalid is refused.
   */
  function changeWorkloads(write: () => void, extra: () => void = () => {}): RuleSet[] {
    const changed = store.tx(() => {
      write();
      const { state, revision } = liveState(store.listWorkloads().map(toWorkload));
      const result = compile(state, revision);
      if (result.diagnostics.length > 0) {
        throw invalid('the change makes the provisioned policy invalid', result.diagnostics);
      }
      extra();
      return storeRuleSets(result.ruleSets);
    });
    push(changed);
    return changed;
  }

  /**
   * Optimistic concurrency: call inside the write's transaction. `expected` undefined (no
   * If-Match) writes unconditionally, as scripts do; an absent object is version 0.
   */
  function checkVersion(what: string, current: number, expected: number | undefined): void {
    if (expected === undefined || expected === current) return;
    throw new ControlPlaneError(
      'CONFLICT',
      `${what} was changed by someone else (version ${current}, you sent ${expected})`,
    );
  }

  function requireWorkload(name: string): WorkloadRecord {
    const w = store.getWorkload(name);
    if (!w) throw notFound(`workload ${name}`);
    return w;
  }

  /** Service and ip-list names a policy refers to, with the path of each reference. */
  function references(
    policy: Policy,
  ): { kind: 'service' | 'ip-list'; name: string; path: string }[] {
    const out: { kind: 'service' | 'ip-list'; name: string; path: string }[] = [];
    for (const direction of ['ingress', 'egress'] as const) {
      (policy[direction] ?? []).forEach((rule, i) => {
        (rule.peers ?? []).forEach((peer, j) => {
          if (typeof peer.ipList === 'string') {
            out.push({
              kind: 'ip-list',
              name: peer.ipList,
              path: `${direction}[${i}].peers[${j}].ipList`,
            });
          }
        });
        (rule.services ?? []).forEach((s, j) => {
          if (typeof s === 'string') {
            out.push({ kind: 'service', name: s, path: `${direction}[${i}].services[${j}]` });
          }
        });
      });
    }
    return out;
  }

  function agentView(
    a: ReturnType<Store['listAgents']>[number],
    desired: ReturnType<Store['desiredRuleSets']>,
  ): AgentView {
    const d = desired.get(a.workload);
    const inSync = d !== undefined && a.appliedHash === d.hash;
    return {
      id: a.id,
      workload: a.workload,
      hostname: a.hostname,
      connected: streams.isConnected(a.id),
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

  /** ISO time of a query field, or a 400 naming it. */
  function time(value: string | undefined, path: string): string | undefined {
    if (value === undefined) return undefined;
    const t = Date.parse(value);
    if (Number.isNaN(t))
      throw invalid('invalid query', [{ path, message: 'must be an ISO 8601 time' }]);
    return new Date(t).toISOString();
  }

  function window(q: { since?: string; until?: string }): Pick<FlowQuery, 'since' | 'until'> {
    return { since: time(q.since, 'since'), until: time(q.until, 'until') };
  }

  /** Denied and would-deny flows to the SIEM, once each, as their batch is counted. */
  function emitFlows(agentId: string, flows: NonNullable<TelemetryBatch['flows']>): void {
    const sink = deps.events;
    const denied = flows.filter((f) => f.verdict !== 'allowed');
    if (!sink || denied.length === 0) return;
    const agent = store.getAgent(agentId);
    if (!agent) return;
    const resolver = createResolver({
      workloads: store.listWorkloads().map(toWorkload),
      ipLists: [],
      services: [],
      policies: [],
    });
    for (const f of denied) {
      sink.emit({
        kind: 'flow',
        at: new Date(f.lastSeen),
        verdict: f.verdict as 'denied' | 'would-deny',
        workload: agent.workload,
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

  function provisionDraft(
    actor: string,
    note: string,
    confirmed: boolean,
    what: string,
  ): ProvisionResult {
    const state = draftState();
    const next = (store.latestRevision()?.revision ?? 0) + 1;
    const result = compile(state, next);
    if (result.diagnostics.length > 0) {
      throw invalid('the policy does not compile', result.diagnostics);
    }
    const report = impactBetween(liveState(state.workloads).state, state);
    requireConfirmation(report, confirmed, what);
    // No await between compile and commit: nothing else can take revision `next` meanwhile.
    const { revision, changed } = store.tx(() => {
      const revision = store.addRevision(actor, note, state);
      const changed = storeRuleSets(result.ruleSets);
      store.appendAudit({
        actor,
        action: 'revision.provision',
        target: String(revision),
        after: {
          note,
          changed: changed.map((rs) => rs.workloadId),
          confirmed,
          impact: report.summary,
        },
      });
      return { revision, changed };
    });
    push(changed);
    return {
      revision,
      changed: changed.map((rs) => rs.workloadId),
      unchanged: result.ruleSets.length - changed.length,
      impact: report,
    };
  }

  const engine = {
    // --- authentication
    authenticate(bearer: string): ApiTokenRecord {
      const token = store.findApiToken(hashSecret(bearer));
      if (!token) throw new ControlPlaneError('UNAUTHENTICATED', 'unknown API token');
      store.touchApiToken(token.id);
      return token;
    },

    /** On first start (no API tokens at all) creates an admin token and returns it. */
    bootstrapAdminToken(): string | undefined {
      return store.tx(() => {
        if (store.countApiTokens() > 0) return undefined;
        return engine.createApiToken('system', 'initial-admin', 'admin').token;
      });
    },

    // --- workloads
    listWorkloads: () => store.listWorkloads(),
    getWorkload: (name: string) => requireWorkload(name),
    /**
     * Labels replace, modes merge. Switching a direction to enforce is impact-checked: it is
     * refused (IMPACT_CONFIRMATION_REQUIRED) when it newly blocks observed flows, unless confirmed.
     */
    patchWorkload(
      actor: string,
      name: string,
      patch: { labels?: Labels; mode?: Partial<WorkloadMode> },
      options: { confirm?: boolean; ifMatch?: number } = {},
    ): WorkloadRecord {
      const diags = validateWorkloadPatch(patch);
      if (diags.length > 0) throw invalid('invalid workload patch', diags);
      const before = requireWorkload(name);
      const next: Workload = {
        ...toWorkload(before),
        labels: patch.labels ?? before.labels,
        mode: { ...before.mode, ...patch.mode },
      };
      let checked: { confirmed: boolean; impact: ImpactView['summary'] } | undefined;
      const enforcing = (['ingress', 'egress'] as const).some(
        (d) => patch.mode?.[d] === 'enforce' && before.mode[d] !== 'enforce',
      );
      if (enforcing) {
        const workloads = store.listWorkloads().map(toWorkload);
        const report = impactBetween(
          liveState(workloads).state,
          liveState(workloads.map((w) => (w.name === name ? next : w))).state,
        );
        const confirmed = options.confirm === true;
        requireConfirmation(report, confirmed, `enforcing workload ${name}`);
        checked = { confirmed, impact: report.summary };
      }
      changeWorkloads(
        () => {
          checkVersion(`workload/${name}`, requireWorkload(name).version, options.ifMatch);
          store.upsertWorkload(next);
        },
        () =>
          store.appendAudit({
            actor,
            action: 'workload.patch',
            target: name,
            before: toWorkload(before),
            after: checked ? { ...next, ...checked } : next,
          }),
      );
      return requireWorkload(name);
    },
    deleteWorkload(actor: string, name: string, ifMatch?: number): void {
      const before = requireWorkload(name);
      const agents = store.listAgents(name);
      changeWorkloads(
        () => {
          checkVersion(`workload/${name}`, requireWorkload(name).version, ifMatch);
          store.deleteWorkload(name);
        },
        () =>
          store.appendAudit({
            actor,
            action: 'workload.delete',
            target: name,
            before: toWorkload(before),
          }),
      );
      for (const a of agents) streams.close(a.id, 'workload deleted');
    },

    // --- ip lists, services, policies (drafts until provisioned)
    /** Objects as stored, each with its `version`. */
    listResources: (kind: ResourcePath) =>
      store
        .listVersioned<object>(RESOURCE_KINDS[kind].table)
        .map((r) => ({ ...r.body, version: r.version })),
    getResource(kind: ResourcePath, name: string): { version: number } {
      const info = RESOURCE_KINDS[kind];
      const r = store.getVersioned<object>(info.table, name);
      if (r === undefined) throw notFound(`${info.noun} ${name}`);
      return { ...r.body, version: r.version };
    },
    /**
     * Creates or replaces a draft object. `version` in the body (what GET answered) or
     * `ifMatch` makes the write conditional; the stored body never holds it.
     */
    putResource(
      actor: string,
      kind: ResourcePath,
      name: string,
      value: unknown,
      ifMatch?: number,
    ): { version: number } {
      const info = RESOURCE_KINDS[kind];
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        throw invalid(`${info.noun} must be an object`, [
          { path: '', message: 'must be an object' },
        ]);
      }
      const given = (value as { name?: unknown }).name;
      if (given !== undefined && given !== name) {
        throw invalid('name in the body differs from the URL', [
          { path: 'name', message: `must equal "${name}" (the name in the URL)` },
        ]);
      }
      const { version: sent, ...fields } = value as { version?: unknown };
      if (sent !== undefined && !(Number.isInteger(sent) && (sent as number) >= 0)) {
        throw invalid(`invalid ${info.noun}`, [
          { path: 'version', message: 'must be a non-negative integer' },
        ]);
      }
      const expected = ifMatch ?? (sent as number | undefined);
      const body = { ...fields, name };
      const diags = info.validate(body);
      if (diags.length > 0) throw invalid(`invalid ${info.noun}`, diags);
      if (kind === 'policies') {
        const missing = references(body as Policy).filter(
          (r) =>
            store.getResource(r.kind === 'service' ? 'services' : 'ip_lists', r.name) === undefined,
        );
        if (missing.length > 0) {
          throw invalid(
            'policy refers to unknown objects',
            missing.map((r) => ({ path: r.path, message: `unknown ${r.kind} "${r.name}"` })),
          );
        }
      }
      return store.tx(() => {
        const current = store.getVersioned(info.table, name);
        checkVersion(`${info.noun}/${name}`, current?.version ?? 0, expected);
        const version = store.putResource(info.table, name, body);
        store.appendAudit({
          actor,
          action: `${info.noun}.put`,
          target: name,
          before: current?.body,
          after: body,
        });
        return { ...body, version };
      });
    },
    deleteResource(actor: string, kind: ResourcePath, name: string, ifMatch?: number): void {
      const info = RESOURCE_KINDS[kind];
      store.tx(() => {
        const current = store.getVersioned(info.table, name);
        if (current === undefined) throw notFound(`${info.noun} ${name}`);
        checkVersion(`${info.noun}/${name}`, current.version, ifMatch);
        const before = current.body;
        if (info.noun !== 'policy') {
          const users = store
            .listResources<Policy>('policies')
            .filter((p) => references(p).some((r) => r.kind === info.noun && r.name === name))
            .map((p) => p.name);
          if (users.length > 0) {
            throw new ControlPlaneError(
              'CONFLICT',
              `${info.noun} ${name} is still referenced by policy ${users.join(', ')}`,
              {
                details: users.map((p) => ({
                  path: `policies.${p}`,
                  message: `refers to ${name}`,
                })),
              },
            );
          }
        }
        store.deleteResource(info.table, name);
        store.appendAudit({ actor, action: `${info.noun}.delete`, target: name, before });
      });
    },

    // --- draft and revisions
    /** What the draft changes relative to the latest revision (workloads are live, not drafted). */
    draft(): { basedOn: number; changes: ObjectChange[] } {
      const current = draftState();
      const { state, revision } = liveState(current.workloads);
      return { basedOn: revision, changes: diffStates(state, current) };
    },
    /** Resets the editable objects to the latest revision's snapshot. */
    discardDraft(actor: string): { discarded: ObjectChange[] } {
      return store.tx(() => {
        const { basedOn, changes } = engine.draft();
        if (changes.length === 0) return { discarded: [] };
        const base = revisionState(basedOn, []);
        store.replaceResources('ip_lists', base.ipLists);
        store.replaceResources('services', base.services);
        store.replaceResources('policies', base.policies);
        store.appendAudit({
          actor,
          action: 'draft.discard',
          target: String(basedOn),
          before: changes,
        });
        return { discarded: changes };
      });
    },
    /** Revision `from` against revision `to` or the draft, both on today's workloads. */
    revisionDiff(from: number, to: number | 'draft'): RevisionDiff {
      const workloads = store.listWorkloads().map(toWorkload);
      const before = revisionState(from, workloads);
      const after = to === 'draft' ? draftState() : revisionState(to, workloads);
      const next = (store.latestRevision()?.revision ?? 0) + 1;
      return {
        from,
        to,
        objects: diffStates(before, after),
        workloads: diffRuleSets(
          compiled(before, from, `revision ${from}`),
          compiled(
            after,
            to === 'draft' ? next : to,
            to === 'draft' ? 'the draft' : `revision ${to}`,
          ),
        ),
      };
    },
    /** What a candidate (the draft, a revision, or documents over the draft) does to observed flows. */
    impact(req: ImpactRequest): ImpactView {
      const workloads = store.listWorkloads().map(toWorkload);
      const before = liveState(workloads).state;
      const target = req.target ?? 'draft';
      let after: PolicyState;
      const t = target as { revision?: unknown; resources?: unknown };
      if (target === 'draft') {
        after = draftState();
      } else if (typeof target === 'object' && target !== null && 'revision' in t) {
        if (!Number.isInteger(t.revision) || (t.revision as number) < 1) {
          throw invalid('invalid impact request', [
            { path: 'target.revision', message: 'must be an integer >= 1' },
          ]);
        }
        after = revisionState(t.revision as number, workloads);
      } else if (typeof target === 'object' && target !== null && 'resources' in t) {
        after = withResources(draftState(), t.resources, 'target.resources');
      } else {
        throw invalid('invalid impact request', [
          { path: 'target', message: "must be 'draft', {revision} or {resources}" },
        ]);
      }
      compiled(after, 0, 'the target');
      return impactBetween(before, after, {
        ...window(req),
        groupBy: req.groupBy,
      });
    },
    /**
     * Freezes the draft into a new revision. Refused (IMPACT_CONFIRMATION_REQUIRED, nothing
     * changes) when it newly blocks observed flows and the admin did not confirm.
     */
    provision(actor: string, note: string, options: { confirm?: boolean } = {}): ProvisionResult {
      return provisionDraft(actor, note, options.confirm === true, 'provisioning the draft');
    },
    /**
     * Makes revision n's policy the draft again and provisions it as a new revision, in one
     * transaction: a rollback that does not compile against today's workloads, or that is
     * refused by the impact check, changes nothing.
     */
    rollback(
      actor: string,
      n: number,
      note: string,
      options: { confirm?: boolean } = {},
    ): ProvisionResult {
      return store.tx(() => {
        const r = store.getRevision<Snapshot>(n);
        if (!r) throw notFound(`revision ${n}`);
        store.replaceResources('ip_lists', r.snapshot.ipLists);
        store.replaceResources('services', r.snapshot.services);
        store.replaceResources('policies', r.snapshot.policies);
        store.appendAudit({ actor, action: 'revision.rollback', target: String(n) });
        return provisionDraft(
          actor,
          note,
          options.confirm === true,
          `rolling back to revision ${n}`,
        );
      });
    },
    listRevisions: () => store.listRevisions(),
    /** A revision with what it changed against the one before it (derived, never stored). */
    getRevision(n: number) {
      const r = store.getRevision<Snapshot>(n);
      if (!r) throw notFound(`revision ${n}`);
      // Revision 0 is the empty state, so revision 1 lists everything it introduced.
      const changes = diffStates(revisionState(n - 1, []), revisionState(n, []));
      return { ...r, changes };
    },
    getRuleSet(workload: string): RuleSet {
      requireWorkload(workload);
      const rs = store.getRuleSet(workload);
      if (!rs) throw notFound(`RuleSet of ${workload}`);
      return RuleSet.decode(rs.body);
    },

    // --- agents
    listAgents(): AgentView[] {
      const desired = store.desiredRuleSets();
      return store.listAgents().map((a) => agentView(a, desired));
    },
    revokeAgent(actor: string, id: string): AgentView {
      store.tx(() => {
        const a = store.getAgent(id);
        if (!a) throw notFound(`agent ${id}`);
        store.revokeAgent(id);
        store.appendAudit({
          actor,
          action: 'agent.revoke',
          target: id,
          before: { revoked: a.revoked },
          after: { revoked: true },
        });
      });
      streams.close(id, 'agent revoked');
      const a = store.getAgent(id)!;
      return agentView(a, store.desiredRuleSets());
    },
    listCounters: (filter: { workload?: string; ruleId?: string }): CounterRow[] =>
      store.listCounters(filter),

    // --- tokens
    createEnrollmentToken(
      actor: string,
      req: { labels?: Labels; mode?: Partial<WorkloadMode>; ttlSeconds?: number; maxUses?: number },
    ): { id: string; token: string; expiresAt: string } {
      const diags = validateWorkloadPatch({ labels: req.labels, mode: req.mode });
      if (diags.length > 0) throw invalid('invalid enrollment token', diags);
      const id = randomUUID();
      const token = newSecret('bhe_');
      const expiresAt = new Date(now().getTime() + (req.ttlSeconds ?? 86_400) * 1000).toISOString();
      const record = {
        id,
        labels: req.labels ?? {},
        mode: { ...DEFAULT_MODE, ...req.mode },
        expiresAt,
        maxUses: req.maxUses ?? null,
      };
      store.tx(() => {
        store.createEnrollmentToken({ ...record, tokenHash: hashSecret(token) });
        store.appendAudit({ actor, action: 'enrollment-token.create', target: id, after: record });
      });
      return { id, token, expiresAt };
    },
    listEnrollmentTokens: () => store.listEnrollmentTokens(),
    deleteEnrollmentToken(actor: string, id: string): void {
      store.tx(() => {
        const before = store.getEnrollmentToken(id);
        if (!before || !store.deleteEnrollmentToken(id)) throw notFound(`enrollment token ${id}`);
        store.appendAudit({ actor, action: 'enrollment-token.delete', target: id, before });
      });
    },
    createApiToken(actor: string, name: string, role: Role): { id: string; token: string } {
      const id = randomUUID();
      const token = newSecret('bh_');
      store.tx(() => {
        store.createApiToken({ id, name, role, tokenHash: hashSecret(token) });
        store.appendAudit({ actor, action: 'api-token.create', target: id, after: { name, role } });
      });
      return { id, token };
    },
    listApiTokens: () => store.listApiTokens(),
    deleteApiToken(actor: string, id: string): void {
      store.tx(() => {
        const before = store.getApiToken(id);
        if (!before || !store.deleteApiToken(id)) throw notFound(`API token ${id}`);
        store.appendAudit({ actor, action: 'api-token.delete', target: id, before });
      });
    },
    /** `since`: an audit id (exclusive) or an ISO timestamp. */
    listAudit(opts: { limit?: number; since?: string }) {
      if (opts.since === undefined) return store.listAudit({ limit: opts.limit });
      if (/^\d+$/.test(opts.since)) {
        return store.listAudit({ limit: opts.limit, sinceId: Number(opts.since) });
      }
      const t = Date.parse(opts.since);
      if (Number.isNaN(t)) {
        throw invalid('invalid query', [
          { path: 'since', message: 'must be an audit id or an ISO 8601 time' },
        ]);
      }
      return store.listAudit({ limit: opts.limit, sinceTime: new Date(t).toISOString() });
    },

    // --- agent protocol (called by the gRPC edge)
    async enroll(req: EnrollRequest): Promise<EnrollResponse> {
      const unauthenticated = () =>
        new ControlPlaneError('UNAUTHENTICATED', 'invalid, expired or used-up bootstrap token');
      const tokenHash = hashSecret(req.bootstrapToken);
      const usable = () => {
        const t = store.findEnrollmentToken(tokenHash);
        if (!t) return undefined;
        if (Date.parse(t.expiresAt) <= now().getTime()) return undefined;
        if (t.maxUses !== null && t.uses >= t.maxUses) return undefined;
        return t;
      };
      const token = usable();
      if (!token) throw unauthenticated();
      // Workload names are lowercase DNS-like names; hostnames are case-insensitive.
      const name = req.hostname.toLowerCase();
      const workload: Workload = {
        name,
        addresses: [...req.addresses],
        labels: { ...req.labels, ...token.labels },
        mode: token.mode,
      };
      const diags = validateWorkload(workload);
      if (diags.length > 0) throw invalid('invalid enrollment request', diags);
      const agentId = randomUUID();
      const cert = await pki.signCsr(req.csrPem, agentId);
      let replaced: ReturnType<Store['listAgents']> = [];
      changeWorkloads(
        () => {
          // Re-checked after the await: a concurrent enrolment may have used the last use.
          if (!usable()) throw unauthenticated();
          // One agent per workload: a host enrolling again (reinstalled, state lost) replaces
          // its old identity, so two agents never report for one workload.
          replaced = store.listAgents(name).filter((a) => !a.revoked);
          for (const a of replaced) store.revokeAgent(a.id);
          store.upsertWorkload(workload);
          store.createAgent({
            id: agentId,
            workload: name,
            hostname: req.hostname,
            certSerial: cert.serial,
          });
          store.useEnrollmentToken(token.id);
        },
        () =>
          store.appendAudit({
            actor: `enrollment-token:${token.id}`,
            action: 'agent.enroll',
            target: agentId,
            after: {
              workload,
              hostname: req.hostname,
              agentVersion: req.agentVersion,
              replaced: replaced.map((a) => a.id),
            },
          }),
      );
      for (const a of replaced) streams.close(a.id, 'replaced by a new enrolment');
      log.info({ agentId, workload: name, replaced: replaced.map((a) => a.id) }, 'agent enrolled');
      return { agentId, workloadId: name, certificatePem: cert.certificatePem, caPem: pki.caPem };
    },

    /** The agent of a verified certificate, if it may sync. */
    agentForSync(agentId: string) {
      const a = store.getAgent(agentId);
      if (!a) throw new ControlPlaneError('UNAUTHENTICATED', 'unknown agent');
      if (a.revoked) throw new ControlPlaneError('UNAUTHENTICATED', 'agent is revoked');
      return a;
    },

    /** Records a Hello; returns the RuleSet to send when the agent's applied hash is stale. */
    hello(agentId: string, hello: Hello): RuleSet | undefined {
      const agent = engine.agentForSync(agentId);
      store.recordHello(agentId, hello.agentVersion);
      const w = requireWorkload(agent.workload);
      const same =
        hello.addresses.length === 0 ||
        [...hello.addresses].sort().join(',') === [...w.addresses].sort().join(',');
      let pushed: RuleSet[] = [];
      if (!same) {
        try {
          pushed = changeWorkloads(
            () => store.upsertWorkload({ ...toWorkload(w), addresses: [...hello.addresses] }),
            () =>
              store.appendAudit({
                actor: `agent:${agentId}`,
                action: 'workload.addresses',
                target: w.name,
                before: w.addresses,
                after: hello.addresses,
              }),
          );
        } catch (err) {
          // Bad addresses from one host must not cut it off: keep the old ones, say why.
          log.warn({ err, agentId }, 'ignored addresses from Hello');
        }
      }
      if (pushed.some((rs) => rs.workloadId === agent.workload)) return undefined;
      const desired = store.getRuleSet(agent.workload);
      if (!desired || desired.hash === hello.appliedHash) return undefined;
      return RuleSet.decode(desired.body);
    },

    ack(agentId: string, ack: ApplyAck): void {
      engine.agentForSync(agentId);
      store.recordAck(agentId, {
        revision: ack.revision,
        hash: ack.hash,
        error: ack.ok ? '' : ack.error || 'apply failed',
        applyMicros: ack.applyMicros,
      });
    },

    /** Adds a telemetry batch; false when its seq was already counted (resent after reconnect). */
    telemetry(agentId: string, t: Telemetry): boolean {
      const counters: TelemetryBatch['counters'] = [];
      for (const c of t.counters) {
        const direction = DIRECTIONS[c.direction];
        const verdict = VERDICTS[c.verdict];
        if (!direction || !verdict) continue;
        counters.push({ ruleId: c.ruleId, direction, verdict, packets: c.packets, bytes: c.bytes });
      }
      const flows: NonNullable<TelemetryBatch['flows']> = [];
      for (const f of t.flows ?? []) {
        const direction = DIRECTIONS[f.direction];
        const verdict = VERDICTS[f.verdict];
        if (!direction || !verdict) continue;
        flows.push({
          direction,
          verdict,
          src: f.src,
          dst: f.dst,
          protocol: f.protocol,
          port: f.port,
          ruleId: f.ruleId,
          connections: f.packets,
          bytes: f.bytes,
          firstSeen: msToIso(f.firstSeenUnixMs || t.timeUnixMs),
          lastSeen: msToIso(f.lastSeenUnixMs || t.timeUnixMs),
        });
      }
      const events = (t.events ?? []).map((e) => ({
        code: e.code,
        message: e.message,
        at: msToIso(e.timeUnixMs || t.timeUnixMs),
        attributes: e.attributes,
      }));
      const added = store.addTelemetry(agentId, t.seq, { counters, flows, events });
      if (added) {
        for (const e of events)
          log.warn({ agentId, code: e.code, attributes: e.attributes }, e.message);
        emitFlows(agentId, flows);
      }
      return added;
    },

    // --- visibility (the REST contract the CLI codes against: packages/cli/src/visibility.ts)
    flows(filter: FlowFilter): { flows: FlowView[] } {
      const workloads = store.listWorkloads().map(toWorkload);
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
      const { state } = liveState(workloads);
      const resolver = createResolver(state);
      return { flows: rows.map((r) => toFlowView(r, resolver)) };
    },

    map(q: { groupBy?: string; since?: string; until?: string }): MapView {
      const groupBy =
        q.groupBy === undefined
          ? DEFAULT_GROUP_BY
          : q.groupBy
              .split(',')
              .map((k) => k.trim())
              .filter((k) => k !== '');
      const { state } = liveState(store.listWorkloads().map(toWorkload));
      return buildMap(store.queryFlows(window(q)), state, groupBy);
    },

    recommendations(req: RecommendationRequest): Recommendation {
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
      const workloads = store.listWorkloads().map(toWorkload);
      const { state } = liveState(workloads);
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

    /** Flow retention and row cap (on start and periodically). */
    pruneFlows() {
      const result = store.pruneFlows();
      if (result.evicted > 0) {
        log.warn({ evicted: result.evicted }, 'flow store over its row cap: oldest flows removed');
      }
      if (result.buckets + result.expired > 0) log.info(result, 'pruned flows past retention');
      return result;
    },
    listEvents: (filter: Parameters<Store['listEvents']>[0]) => store.listEvents(filter),
  };
  return engine;
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

/** Unix ms to ISO; 0 or garbage becomes the epoch rather than an exception. */
function msToIso(ms: number): string {
  const d = new Date(Number.isFinite(ms) ? ms : 0);
  return Number.isNaN(d.getTime()) ? new Date(0).toISOString() : d.toISOString();
}
