// Fleet: agents and their lifecycle over the wire. Enrolment (and its bootstrap tokens), the
// Sync protocol (hello, ack, telemetry ingest), the agents list and revocation, rule counters.
// Identity is the certificate's agent id, never what a message says. Must not edit policy:
// workload changes go through policy administration (WorkloadChanges), RuleSets through the
// publisher, flows and events to visibility.
import { randomUUID } from 'node:crypto';
import type { AgentView } from '@bulkhead/api';
import {
  type Labels,
  validateWorkload,
  validateWorkloadPatch,
  type Workload,
  type WorkloadMode,
} from '@bulkhead/policy';
import type {
  ApplyAck,
  EnrollRequest,
  EnrollResponse,
  Hello,
  RuleSet,
  Telemetry,
} from '@bulkhead/proto';
import type { Logger } from 'pino';
import { hashSecret, newSecret } from '../access/secrets.js';
import type { AuditLog } from '../access/store.js';
import { ControlPlaneError, invalid, notFound } from '../errors.js';
import type { Metrics } from '../metrics.js';
import type { Pki } from '../pki.js';
import type { WorkloadChanges } from '../policy-admin/service.js';
import { toWorkload } from '../policy-state.js';
import type { RuleSetPublisher } from '../rulesets/publisher.js';
import type { Transactor } from '../store/database.js';
import { DEFAULT_FLOW_RETENTION_DAYS } from '../visibility/flow-store.js';
import type { FlowDelta, ReportedEvent } from '../visibility/store.js';
import { createSentRuleIds } from './sent-rules.js';
import type { AgentRecord, CounterRow, EnrollmentTokenRecord, FleetStore } from './store.js';
import type { StreamRegistry } from './streams.js';
import { canonical, checkTelemetry, createRejectionReporter } from './telemetry.js';

const DEFAULT_MODE: WorkloadMode = { ingress: 'monitor', egress: 'monitor' };
const DAY_MS = 86_400_000;

export interface EnrollmentTokenRequest {
  labels?: Labels;
  mode?: Partial<WorkloadMode>;
  ttlSeconds?: number;
  maxUses?: number;
}

export interface FleetService {
  // --- the agent protocol (called by the gRPC edge)
  enroll(req: EnrollRequest): Promise<EnrollResponse>;
  /** The agent of a verified certificate, if it may sync. */
  agentForSync(agentId: string): AgentRecord;
  /** Records a Hello; returns the RuleSet to send when the agent's applied hash is stale. */
  hello(agentId: string, hello: Hello): RuleSet | undefined;
  ack(agentId: string, ack: ApplyAck): void;
  /** Adds a telemetry batch; false when its seq was already counted (resent after reconnect). */
  telemetry(agentId: string, t: Telemetry): boolean;

  // --- REST
  listAgents(): AgentView[];
  revokeAgent(actor: string, id: string): AgentView;
  listCounters(filter: { workload?: string; ruleId?: string }): CounterRow[];
  createEnrollmentToken(
    actor: string,
    req: EnrollmentTokenRequest,
  ): { id: string; token: string; expiresAt: string };
  listEnrollmentTokens(): EnrollmentTokenRecord[];
  deleteEnrollmentToken(actor: string, id: string): void;
}

export interface FleetDeps {
  store: FleetStore;
  db: Transactor;
  workloads: WorkloadChanges;
  publisher: Pick<RuleSetPublisher, 'desired' | 'desiredHash' | 'desiredAll'>;
  streams: StreamRegistry;
  pki: Pki;
  audit: AuditLog;
  /** Told of each telemetry batch once it is counted (visibility: logs and the SIEM). */
  reported(agentId: string, workload: string, flows: FlowDelta[], events: ReportedEvent[]): void;
  /** Where dropped telemetry records are counted. */
  metrics: Pick<Metrics, 'telemetryRejected'>;
  /** Telemetry older than this is refused (it would be pruned at once). Default 35. */
  flowRetentionDays?: number;
  log: Logger;
  now?: () => Date;
}

export function createFleetService(deps: FleetDeps): FleetService {
  const { store, db, workloads, publisher, streams, pki, audit, log } = deps;
  const now = deps.now ?? (() => new Date());
  const retentionMs = (deps.flowRetentionDays ?? DEFAULT_FLOW_RETENTION_DAYS) * DAY_MS;
  const sentRules = createSentRuleIds(publisher);
  const rejections = createRejectionReporter(now);

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
    async enroll(req) {
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
      let replaced: AgentRecord[] = [];
      workloads.changeWorkloads(
        (w) => {
          // Re-checked after the await: a concurrent enrolment may have used the last use.
          if (!usable()) throw unauthenticated();
          // One agent per workload: a host enrolling again (reinstalled, state lost) replaces
          // its old identity, so two agents never report for one workload.
          replaced = store.listAgents(name).filter((a) => !a.revoked);
          for (const a of replaced) store.revokeAgent(a.id);
          w.upsertWorkload(workload);
          store.createAgent({
            id: agentId,
            workload: name,
            hostname: req.hostname,
            certSerial: cert.serial,
          });
          store.useEnrollmentToken(token.id);
        },
        () =>
          audit.appendAudit({
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

    agentForSync(agentId) {
      const a = store.getAgent(agentId);
      if (!a) throw new ControlPlaneError('UNAUTHENTICATED', 'unknown agent');
      if (a.revoked) throw new ControlPlaneError('UNAUTHENTICATED', 'agent is revoked');
      return a;
    },

    hello(agentId, hello) {
      const agent = fleet.agentForSync(agentId);
      store.recordHello(agentId, hello.agentVersion);
      const w = workloads.getWorkload(agent.workload);
      const same =
        hello.addresses.length === 0 ||
        [...hello.addresses].sort().join(',') === [...w.addresses].sort().join(',');
      let pushed: RuleSet[] = [];
      if (!same) {
        try {
          pushed = workloads.changeWorkloads(
            (ws) => ws.upsertWorkload({ ...toWorkload(w), addresses: [...hello.addresses] }),
            () =>
              audit.appendAudit({
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
      return publisher.desired(agent.workload, hello.appliedHash);
    },

    ack(agentId, ack) {
      fleet.agentForSync(agentId);
      store.recordAck(agentId, {
        revision: ack.revision,
        hash: ack.hash,
        error: ack.ok ? '' : ack.error || 'apply failed',
        applyMicros: ack.applyMicros,
      });
    },

    telemetry(agentId, t) {
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
      if (added) {
        rejections.counted(agentId, rejected, notice !== undefined);
        for (const [reason, n] of rejected) deps.metrics.telemetryRejected.inc({ reason }, n);
        if (notice) log.warn({ agentId, workload, rejected: notice.attributes }, notice.message);
        deps.reported(agentId, workload, batch.flows, batch.events);
      }
      return added;
    },

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

    createEnrollmentToken(actor, req) {
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
      db.tx(() => {
        store.createEnrollmentToken({ ...record, tokenHash: hashSecret(token) });
        audit.appendAudit({ actor, action: 'enrollment-token.create', target: id, after: record });
      });
      return { id, token, expiresAt };
    },
    listEnrollmentTokens: () => store.listEnrollmentTokens(),
    deleteEnrollmentToken(actor, id) {
      db.tx(() => {
        const before = store.getEnrollmentToken(id);
        if (!before || !store.deleteEnrollmentToken(id)) throw notFound(`enrollment token ${id}`);
        audit.appendAudit({ actor, action: 'enrollment-token.delete', target: id, before });
      });
    },
  };
  return fleet;
}
