// Enrolment: who may join the fleet as which workload. Enrolment tokens (their scope and bound
// workload), the Enroll call, and an admin's release of a workload. A workload's identity is bound
// to its enrolled agent: enrolling under an existing workload's name is refused unless an admin
// allowed it (a token created for that workload, or a release). Every refusal after the token is
// recognised is audited. Must not edit policy beyond the workload being enrolled, nor handle Sync.
import { randomUUID } from 'node:crypto';
import { type Labels, validateWorkload, type Workload, type WorkloadMode } from '@bulkhead/policy';
import type { EnrollRequest, EnrollResponse } from '@bulkhead/proto';
import type { Logger } from 'pino';
import { hashSecret, newSecret } from '../access/secrets.js';
import type { AuditLog } from '../access/store.js';
import { ControlPlaneError, type ErrorDetail, invalid, notFound } from '../errors.js';
import type { Pki } from '../pki.js';
import type { WorkloadChanges } from '../policy-admin/service.js';
import type { WorkloadRecord } from '../policy-admin/store.js';
import type { Transactor } from '../store/database.js';
import { canonicalClaim, checkScope, type EnrollmentScope, scopeViolations } from './claims.js';
import type { AgentRecord, EnrollmentTokenRecord, FleetStore } from './store.js';
import type { StreamRegistry } from './streams.js';

const DEFAULT_MODE: WorkloadMode = { ingress: 'monitor', egress: 'monitor' };

export interface EnrollmentTokenRequest {
  labels?: Labels;
  mode?: Partial<WorkloadMode>;
  ttlSeconds?: number;
  /** Default: unlimited, or 1 for a token bound to a workload. */
  maxUses?: number;
  /** The one workload the token may enrol, replacing its agent. */
  workload?: string;
  scope?: EnrollmentScope;
}

export interface Enrolment {
  enroll(req: EnrollRequest): Promise<EnrollResponse>;
  createEnrollmentToken(
    actor: string,
    req: EnrollmentTokenRequest,
  ): { id: string; token: string; expiresAt: string };
  listEnrollmentTokens(): EnrollmentTokenRecord[];
  deleteEnrollmentToken(actor: string, id: string): void;
  /** Revokes the workload's agents, closes their streams and lets the next enrolment take it. */
  releaseWorkload(actor: string, name: string, note: string): WorkloadRecord;
}

export interface EnrolmentDeps {
  store: FleetStore;
  db: Transactor;
  workloads: WorkloadChanges;
  streams: StreamRegistry;
  pki: Pki;
  audit: AuditLog;
  log: Logger;
  now: () => Date;
}

/** What an admitted enrolment writes. */
interface Admission {
  workload: Workload;
  /** The workload it replaces (bound token or release), if any. */
  before: WorkloadRecord | undefined;
  addressRanges: string[];
}

export function createEnrolment(deps: EnrolmentDeps): Enrolment {
  const { store, db, workloads, streams, pki, audit, log, now } = deps;

  /**
   * Decides whether the token may enrol the request as `name`, which is `before` now (call inside
   * the enrolment's transaction); throws the refusal naming the field.
   */
  function admit(
    token: EnrollmentTokenRecord,
    req: EnrollRequest,
    name: string,
    before: WorkloadRecord | undefined,
  ): Admission {
    if (token.workload !== null && token.workload !== name) {
      throw new ControlPlaneError('FORBIDDEN', 'enrolment outside the token scope', {
        details: [
          { path: 'hostname', message: `this token may only enrol workload ${token.workload}` },
        ],
      });
    }
    if (before && before.released === null && token.workload !== name) {
      throw new ControlPlaneError(
        'CONFLICT',
        `workload ${name} already exists and is bound to its enrolled agent; to enrol a new ` +
          `agent for it an admin creates a token for it (workload: ${name}) or releases it`,
      );
    }
    const claim = canonicalClaim(req.addresses);
    if (!claim.ok) throw invalid('invalid enrollment request', claim.problems);
    // What the agent (and its token) asks for are the initial labels and mode only: once the
    // workload exists, its draft and revisions decide them, never a re-enrolment.
    const workload: Workload = {
      name,
      addresses: claim.addresses,
      labels: before ? before.labels : { ...req.labels, ...token.labels },
      mode: before ? before.mode : token.mode,
    };
    const diags = validateWorkload(workload);
    if (diags.length > 0) throw invalid('invalid enrollment request', diags);
    const outside = token.scope
      ? scopeViolations(token.scope, token.labels, {
          name,
          labels: req.labels,
          addresses: claim.addresses,
        })
      : [];
    const owners = workloads.addressOwners(claim.addresses, name);
    const taken: ErrorDetail[] = claim.addresses.flatMap((a, i) =>
      owners.has(a)
        ? [{ path: `addresses[${i}]`, message: `${a} belongs to workload ${owners.get(a)}` }]
        : [],
    );
    if (outside.length + taken.length > 0) {
      throw new ControlPlaneError('FORBIDDEN', 'enrolment outside the token scope', {
        details: [...outside, ...taken],
      });
    }
    return { workload, before, addressRanges: token.scope?.cidrs ?? [] };
  }

  function refused(token: EnrollmentTokenRecord, req: EnrollRequest, err: ControlPlaneError) {
    db.tx(() =>
      audit.appendAudit({
        actor: `enrollment-token:${token.id}`,
        action: 'agent.enroll.refused',
        // Bounded: the request is the token holder's text, the audit log is forever.
        target: req.hostname.toLowerCase().slice(0, 253),
        after: {
          tokenId: token.id,
          hostname: req.hostname.slice(0, 253),
          reason: err.message,
          details: err.details.slice(0, 20),
          addresses: req.addresses.length,
        },
      }),
    );
    log.warn(
      { tokenId: token.id, hostname: req.hostname, reason: err.message },
      'enrolment refused',
    );
  }

  return {
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
      try {
        // Proof of possession before anything is decided or written. The only await: what may
        // have changed meanwhile (the token's last use, the name, an address) is decided below,
        // in the transaction, once.
        const csr = await pki.checkCsr(req.csrPem);
        const agentId = randomUUID();
        let admitted: Admission | undefined;
        let cert: { certificatePem: string; serial: string } | undefined;
        let replaced: AgentRecord[] = [];
        workloads.changeWorkloads(
          (w) => {
            if (!usable()) throw unauthenticated();
            admitted = admit(token, req, name, w.getWorkload(name));
            cert = pki.issueClientCert(csr, agentId);
            // One agent per workload: the admin allowed a new one, so the old one goes. A new
            // workload has none (agents are deleted with their workload).
            replaced = admitted.before ? store.listAgents(name).filter((a) => !a.revoked) : [];
            for (const a of replaced) store.revokeAgent(a.id);
            w.upsertWorkload(admitted.workload);
            w.setWorkloadTrust(name, {
              addressRanges: admitted.addressRanges,
              pending: null,
              released: null,
            });
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
              before: admitted?.before,
              after: {
                workload: admitted?.workload,
                addressRanges: admitted?.addressRanges,
                hostname: req.hostname,
                agentVersion: req.agentVersion,
                replaced: replaced.map((a) => a.id),
              },
            }),
        );
        for (const a of replaced) streams.close(a.id, 'replaced by a new enrolment');
        log.info(
          { agentId, workload: name, replaced: replaced.map((a) => a.id) },
          'agent enrolled',
        );
        return {
          agentId,
          workloadId: name,
          certificatePem: cert!.certificatePem,
          caPem: pki.caPem,
        };
      } catch (err) {
        if (err instanceof ControlPlaneError && err.code !== 'UNAUTHENTICATED') {
          refused(token, req, err);
        }
        throw err;
      }
    },

    createEnrollmentToken(actor, req) {
      const workload = req.workload?.toLowerCase() ?? null;
      const diags = [
        ...validateWorkload({
          name: workload ?? 'x',
          addresses: [],
          labels: req.labels ?? {},
          mode: { ...DEFAULT_MODE, ...req.mode },
        }).map((d) => (d.path === 'name' ? { ...d, path: 'workload' } : d)),
        ...(req.scope ? checkScope(req.scope) : []),
      ];
      if (diags.length > 0) throw invalid('invalid enrollment token', diags);
      const id = randomUUID();
      const token = newSecret('bhe_');
      const expiresAt = new Date(now().getTime() + (req.ttlSeconds ?? 86_400) * 1000).toISOString();
      const record = {
        id,
        labels: req.labels ?? {},
        mode: { ...DEFAULT_MODE, ...req.mode },
        expiresAt,
        // A token for one workload re-enrols it once, unless the admin says otherwise.
        maxUses: req.maxUses ?? (workload === null ? null : 1),
        workload,
        scope: req.scope ?? null,
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

    releaseWorkload(actor, name, note) {
      if (note.trim() === '') {
        throw invalid('a release needs a note', [{ path: 'note', message: 'must not be empty' }]);
      }
      let revoked: AgentRecord[] = [];
      db.tx(() => {
        const before = workloads.getWorkload(name);
        revoked = store.listAgents(name).filter((a) => !a.revoked);
        for (const a of revoked) store.revokeAgent(a.id);
        const released = { at: now().toISOString(), actor, note };
        workloads.updateTrust(name, { released }, () =>
          audit.appendAudit({
            actor,
            action: 'workload.release',
            target: name,
            before: { released: before.released },
            after: { released, revokedAgents: revoked.map((a) => a.id) },
          }),
        );
      });
      for (const a of revoked) streams.close(a.id, 'workload released by an admin');
      log.info({ workload: name, revoked: revoked.map((a) => a.id) }, 'workload released');
      return workloads.getWorkload(name);
    },
  };
}
