// Policy administration: workloads (existence and addresses are live: a change is validated,
// committed, then fed to the publisher with its provisioned labels and mode; labels and modes
// are drafted) and the draft's IP lists, services and policies, with optimistic concurrency and
// draft discard. Must not provision revisions (revisions/) or talk to agents beyond closing a
// deleted workload's streams.
import type { ObjectChange } from '@bulkhead/api';
import {
  type Diagnostic,
  diffStates,
  type Labels,
  type Policy,
  type PolicyState,
  parseCidr,
  validateIpList,
  validatePolicy,
  validateService,
  validateWorkload,
  validateWorkloadPatch,
  type Workload,
  type WorkloadMode,
} from '@bulkhead/policy';
import type { AuditLog } from '../access/store.js';
import { ControlPlaneError, invalid, notFound } from '../errors.js';
import { type PolicyStates, toWorkload } from '../policy-state.js';
import type { RuleSetPublisher } from '../rulesets/publisher.js';
import type { Transactor } from '../store/database.js';
import type { PolicyAdminStore, ResourceKind, WorkloadRecord, WorkloadTrust } from './store.js';

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

export interface WorkloadPatch {
  labels?: Labels;
  mode?: Partial<WorkloadMode>;
  /** CIDRs the workload's agent may move its addresses in without approval (fleet's rule). */
  addressRanges?: string[];
}

/** The workload writes fleet makes (enrolment, an agent's addresses, approvals, release). */
export type WorkloadWrites = Pick<
  PolicyAdminStore,
  'getWorkload' | 'upsertWorkload' | 'setWorkloadTrust'
>;

/** What fleet may do to workloads: enrolment and an agent's new addresses. */
export interface WorkloadChanges {
  /** The workload, or NOT_FOUND. */
  getWorkload(name: string): WorkloadRecord;
  listWorkloads(): WorkloadRecord[];
  /** Address -> the workload holding it, for those of `addresses` (canonical) held by a workload but `except`. */
  addressOwners(addresses: readonly string[], except: string): Map<string, string>;
  /**
   * Applies a workload change in one transaction (then `after`, e.g. the audit entry); a
   * written workload that is not valid policy input is refused and nothing changes. After the
   * commit the publisher sends what it changed. Returns the workloads whose agent state changed.
   */
  changeWorkloads(write: (workloads: WorkloadWrites) => void, after?: () => void): string[];
  /**
   * Sets trust fields (never compiled, so nothing is recompiled) with `after` (the audit
   * entry) in one transaction.
   */
  updateTrust(name: string, trust: Partial<WorkloadTrust>, after: () => void): void;
}

export interface PolicyAdminService extends WorkloadChanges {
  listWorkloads(): WorkloadRecord[];
  /**
   * Labels replace, modes merge, in the draft: nothing changes on the hosts until a provision
   * (which checks the impact). Address ranges are trust, applied at once.
   */
  patchWorkload(
    actor: string,
    name: string,
    patch: WorkloadPatch,
    options?: { ifMatch?: number },
  ): WorkloadRecord;
  /** Also drops what other domains keep of it (counters, flows, events) and closes its agents' streams. */
  deleteWorkload(actor: string, name: string, ifMatch?: number): void;
  /** Objects as stored, each with its `version`. */
  listResources(kind: ResourcePath): { version: number }[];
  getResource(kind: ResourcePath, name: string): { version: number };
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
  ): { version: number };
  deleteResource(actor: string, kind: ResourcePath, name: string, ifMatch?: number): void;
  /** What the draft changes relative to the latest revision (objects, labels and modes). */
  draft(): { basedOn: number; changes: ObjectChange[] };
  /** Resets the editable objects, labels and modes to the latest revision's. */
  discardDraft(actor: string): { discarded: ObjectChange[] };
  /**
   * Makes the draft hold `state`'s objects and its workloads' labels and modes (a rollback);
   * call inside the caller's transaction. Writes only what differs.
   */
  restoreDraft(state: PolicyState): void;
}

export interface PolicyAdminDeps {
  store: PolicyAdminStore;
  db: Transactor;
  states: PolicyStates;
  publisher: RuleSetPublisher;
  audit: AuditLog;
  /** Deletes the workload and what every domain keeps of it (inside the caller's transaction). */
  deleteWorkload(name: string): void;
  /** Ends the Sync streams of a deleted workload's agents (after the commit). */
  streams: { closeWorkload(workload: string, reason: string): void };
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

/** Most CIDRs in a workload's address ranges (and in each list of an enrolment token's scope). */
export const MAX_RANGES = 256;

/** Problems of a list of CIDRs an admin gave (address ranges, a token's scope), with paths. */
export function checkCidrs(value: unknown, path: string): Diagnostic[] {
  if (!Array.isArray(value) || value.some((c) => typeof c !== 'string')) {
    return [{ path, message: 'must be a list of CIDRs' }];
  }
  if (value.length > MAX_RANGES) return [{ path, message: `at most ${MAX_RANGES} entries` }];
  return value.flatMap((c: string, i) => {
    const r = parseCidr(c);
    return r.ok ? [] : [{ path: `${path}[${i}]`, message: r.reason }];
  });
}

type Reference = { kind: 'service' | 'ip-list'; name: string; path: string };

/** Service and ip-list names a policy refers to, with the path of each reference. */
function references(policy: Policy): Reference[] {
  const out: Reference[] = [];
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

export function createPolicyAdminService(deps: PolicyAdminDeps): PolicyAdminService {
  const { store, db, states, publisher, audit } = deps;

  function getWorkload(name: string): WorkloadRecord {
    const w = store.getWorkload(name);
    if (!w) throw notFound(`workload ${name}`);
    return w;
  }

  /** Writes workloads (`touched` collects their names), validates them, then publishes. */
  function writeWorkloads(
    write: (workloads: WorkloadWrites, touched: Set<string>) => void,
    after: () => void,
  ): string[] {
    const touched = new Set<string>();
    const writes: WorkloadWrites = {
      getWorkload: store.getWorkload,
      upsertWorkload(w) {
        touched.add(w.name);
        return store.upsertWorkload(w);
      },
      setWorkloadTrust: store.setWorkloadTrust,
    };
    const changes = db.tx(() => {
      write(writes, touched);
      // The agents get the workload with its provisioned labels and mode, not the draft's.
      const changes = [...touched].map((name) => {
        const w = store.getWorkload(name);
        return { name, workload: w && states.provisioned([toWorkload(w)]).state.workloads[0] };
      });
      const diags = changes.flatMap((c) => (c.workload ? validateWorkload(c.workload) : []));
      if (diags.length > 0) throw invalid('the change makes the provisioned policy invalid', diags);
      after();
      return changes;
    });
    return publisher.workloadsChanged(changes);
  }

  const changeWorkloads = (write: (workloads: WorkloadWrites) => void, after = () => {}) =>
    writeWorkloads(write, after);

  function restoreDraft(state: PolicyState): void {
    store.replaceResources('ip_lists', state.ipLists);
    store.replaceResources('services', state.services);
    store.replaceResources('policies', state.policies);
    for (const w of state.workloads) {
      const draft = store.getWorkload(w.name);
      if (
        draft &&
        JSON.stringify([draft.labels, draft.mode]) !== JSON.stringify([w.labels, w.mode])
      ) {
        store.upsertWorkload({ ...toWorkload(draft), labels: w.labels, mode: w.mode });
      }
    }
  }

  const service: PolicyAdminService = {
    getWorkload,
    changeWorkloads,
    updateTrust(name, trust, after) {
      db.tx(() => {
        getWorkload(name);
        store.setWorkloadTrust(name, trust);
        after();
      });
    },
    listWorkloads: () => store.listWorkloads(),
    addressOwners: (addresses, except) => store.addressOwners(addresses, except),
    patchWorkload(actor, name, { addressRanges, ...patch }, options = {}) {
      const diags = [
        ...validateWorkloadPatch(patch),
        ...(addressRanges === undefined ? [] : checkCidrs(addressRanges, 'addressRanges')),
      ];
      if (diags.length > 0) throw invalid('invalid workload patch', diags);
      db.tx(() => {
        const before = getWorkload(name);
        checkVersion(`workload/${name}`, before.version, options.ifMatch);
        const next: Workload = {
          ...toWorkload(before),
          labels: patch.labels ?? before.labels,
          mode: { ...before.mode, ...patch.mode },
        };
        const invalidNext = validateWorkload(next);
        if (invalidNext.length > 0) throw invalid('invalid workload patch', invalidNext);
        store.upsertWorkload(next);
        if (addressRanges !== undefined) store.setWorkloadTrust(name, { addressRanges });
        audit.appendAudit({
          actor,
          action: 'workload.patch',
          target: name,
          before: { ...toWorkload(before), addressRanges: before.addressRanges },
          after: { ...next, addressRanges: addressRanges ?? before.addressRanges },
        });
      });
      return getWorkload(name);
    },
    deleteWorkload(actor, name, ifMatch) {
      const before = getWorkload(name);
      writeWorkloads(
        (_, touched) => {
          checkVersion(`workload/${name}`, getWorkload(name).version, ifMatch);
          deps.deleteWorkload(name);
          touched.add(name);
        },
        () =>
          audit.appendAudit({
            actor,
            action: 'workload.delete',
            target: name,
            before: toWorkload(before),
          }),
      );
      deps.streams.closeWorkload(name, 'workload deleted');
    },

    listResources: (kind) =>
      store
        .listVersioned<object>(RESOURCE_KINDS[kind].table)
        .map((r) => ({ ...r.body, version: r.version })),
    getResource(kind, name) {
      const info = RESOURCE_KINDS[kind];
      const r = store.getVersioned<object>(info.table, name);
      if (r === undefined) throw notFound(`${info.noun} ${name}`);
      return { ...r.body, version: r.version };
    },
    putResource(actor, kind, name, value, ifMatch) {
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
      return db.tx(() => {
        const current = store.getVersioned(info.table, name);
        checkVersion(`${info.noun}/${name}`, current?.version ?? 0, expected);
        const version = store.putResource(info.table, name, body);
        audit.appendAudit({
          actor,
          action: `${info.noun}.put`,
          target: name,
          before: current?.body,
          after: body,
        });
        return { ...body, version };
      });
    },
    deleteResource(actor, kind, name, ifMatch) {
      const info = RESOURCE_KINDS[kind];
      db.tx(() => {
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
        audit.appendAudit({ actor, action: `${info.noun}.delete`, target: name, before });
      });
    },

    restoreDraft,
    draft() {
      const current = states.draft();
      const { state, revision } = states.provisioned(current.workloads);
      return { basedOn: revision, changes: diffStates(state, current) };
    },
    discardDraft(actor) {
      return db.tx(() => {
        const { basedOn, changes } = service.draft();
        if (changes.length === 0) return { discarded: [] };
        restoreDraft(states.atRevision(basedOn, states.workloads()));
        audit.appendAudit({
          actor,
          action: 'draft.discard',
          target: String(basedOn),
          before: changes,
        });
        return { discarded: changes };
      });
    },
  };
  return service;
}
