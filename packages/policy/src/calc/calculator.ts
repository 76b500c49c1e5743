// The calculation graph: policy state held incrementally, Calico-Felix style. Inputs are
// upserts and deletes of workloads, IP lists, services and policies (or a bulk `load`);
// each returns the delta it causes: group memberships element by element, and the
// workloads whose group rule set changed. A change costs what it touches: the selector
// index re-evaluates one workload's selectors, groups count their members' references,
// and only workloads whose policies or mode moved get a new rule set. Pure: no I/O.

import type { GroupRule, GroupRuleSet } from '@bulkhead/proto';
import { MODES } from '../compile.js';
import { type IpRange, parseAddress } from '../ip.js';
import type { Diagnostic, IpList, Policy, PolicyState, Service, Workload } from '../model.js';
import { compareStrings } from '../protocols.js';
import { validateIpList, validatePolicy, validateService, validateWorkload } from '../validate.js';
import { validatePolicyReferences, validateState } from '../validate-state.js';
import { type CalcDelta, type CalcSnapshot, DeltaRecorder, groupIdsOf } from './delta.js';
import { type AddressedMember, GroupTable } from './groups.js';
import {
  type GroupSource,
  hashWithDigest,
  policyRules,
  rulesDigest,
  selectorKey,
} from './rules.js';
import { bucket, type SelectorEntry, SelectorIndex } from './selectors.js';

export interface CalcResult {
  delta: CalcDelta;
  /** Non-empty: the input was invalid and nothing changed (the delta is empty). */
  diagnostics: Diagnostic[];
}

/** Keeps the objects it is given: callers pass new objects rather than editing old ones. */
export interface Calculator {
  /** Makes the state equal to `state` (cold start or full resync); the delta is the difference. */
  load(state: PolicyState): CalcResult;
  upsertWorkload(workload: Workload): CalcResult;
  deleteWorkload(name: string): CalcResult;
  upsertIpList(ipList: IpList): CalcResult;
  deleteIpList(name: string): CalcResult;
  upsertService(service: Service): CalcResult;
  deleteService(name: string): CalcResult;
  upsertPolicy(policy: Policy): CalcResult;
  deletePolicy(name: string): CalcResult;
  /** A workload's current group rule set (treat as a value: rules are shared and frozen). */
  ruleSet(workload: string): GroupRuleSet | undefined;
  /** A group's current ranges, sorted; undefined when no rule refers to it. */
  group(id: string): readonly IpRange[] | undefined;
  snapshot(): CalcSnapshot;
}

interface WorkloadRecord extends AddressedMember {
  workload: Workload;
  shared?: SharedRules;
  ruleSet?: GroupRuleSet;
}

interface PolicyRecord {
  policy: Policy;
  /** Distinguishes versions of a policy in the shared-rules cache. */
  version: number;
  scope: SelectorEntry;
  rules: GroupRule[];
  sources: GroupSource[];
  /** Distinct ids of `sources`. */
  groupIds: string[];
}

/** Rules of one set of policies, shared by the workloads that set selects. */
interface SharedRules {
  key: string;
  rules: GroupRule[];
  digest: string;
  users: number;
}

function parseAddresses(texts: readonly string[]): IpRange[] {
  const out = new Map<string, IpRange>();
  for (const text of texts) {
    const a = parseAddress(text);
    if (a) out.set(`${a.family}:${a.value}`, { family: a.family, from: a.value, to: a.value });
  }
  return [...out.values()];
}

const ok = (delta: CalcDelta): CalcResult => ({ delta, diagnostics: [] });
const invalid = (diagnostics: Diagnostic[]): CalcResult => ({
  delta: { groups: [], workloads: [] },
  diagnostics,
});

export function createCalculator(): Calculator {
  const workloads = new Map<string, WorkloadRecord>();
  const ipLists = new Map<string, IpList>();
  const services = new Map<string, Service>();
  const policies = new Map<string, PolicyRecord>();
  /** Service name -> policies whose rules name it. */
  const serviceUsers = new Map<string, Set<string>>();
  const shared = new Map<string, SharedRules>();
  let version = 0;
  let recorder = new DeltaRecorder();

  const touch = (w: WorkloadRecord) => recorder.touchWorkload(w.workload.name, w.ruleSet);

  /** A workload comes under (1) or leaves (-1) a policy's scope: it refers to its groups. */
  function refer(ids: readonly string[], w: WorkloadRecord, by: 1 | -1): void {
    touch(w);
    groups.refer(ids, w.workload.name, by);
  }

  const index = new SelectorIndex({
    enter(entry, member) {
      const w = member as WorkloadRecord;
      if (entry.group) groups.addresses(entry.group, w.addresses);
      for (const p of entry.scopeOf) refer(policies.get(p)!.groupIds, w, 1);
    },
    leave(entry, member) {
      const w = member as WorkloadRecord;
      if (entry.group) groups.addresses(entry.group, [], w.addresses);
      for (const p of entry.scopeOf) refer(policies.get(p)!.groupIds, w, -1);
    },
  });

  const groups = new GroupTable(
    () => recorder,
    index,
    (name) => ipLists.get(name)!,
  );

  function setPolicy(policy: Policy | undefined, name: string): void {
    const old = policies.get(name);
    let record: PolicyRecord | undefined;
    if (policy) {
      const { rules, sources } = policyRules(policy, (n) => services.get(n)?.ports);
      const groupIds = [...new Set(sources.map((s) => s.id))];
      const scope = index.acquire(selectorKey(policy.scope), policy.scope);
      record = { policy, version: ++version, scope, rules, sources, groupIds };
      // New references before the old ones go, so what both versions use is never dropped.
      for (const s of sources) groups.acquire(s, name);
      for (const service of servicesOf(policy)) {
        bucket(serviceUsers, service, () => new Set()).add(name);
      }
    }
    // Same scope: its members keep referring to the groups both versions use.
    const same = old && record && old.scope === record.scope;
    const minus = (a: PolicyRecord, b: PolicyRecord) =>
      a.groupIds.filter((id) => !b.groupIds.includes(id));
    if (old) {
      old.scope.scopeOf.delete(name);
      policies.delete(name);
      const gone = same ? minus(old, record!) : old.groupIds;
      for (const m of old.scope.members) refer(gone, m as WorkloadRecord, -1);
    }
    if (record) {
      record.scope.scopeOf.add(name);
      policies.set(name, record);
      const come = same ? minus(record, old!) : record.groupIds;
      for (const m of record.scope.members) refer(come, m as WorkloadRecord, 1);
    }
    if (!old) return;
    index.release(old.scope);
    for (const s of old.sources) groups.release(s.id, name);
    const kept = policy ? servicesOf(policy) : new Set<string>();
    for (const service of servicesOf(old.policy)) {
      if (kept.has(service)) continue;
      const users = serviceUsers.get(service)!;
      users.delete(name);
      if (users.size === 0) serviceUsers.delete(service);
    }
  }

  function setWorkload(workload: Workload | undefined, name: string): void {
    const w = workloads.get(name);
    if (!workload) {
      if (!w) return;
      touch(w);
      index.removeMember(w);
      workloads.delete(name);
      releaseShared(w);
      return;
    }
    const addresses = parseAddresses(workload.addresses);
    if (!w) {
      const record: WorkloadRecord = {
        workload,
        labels: workload.labels,
        matched: new Set(),
        addresses,
      };
      workloads.set(name, record);
      touch(record);
      index.addMember(record);
      return;
    }
    touch(w);
    const before = w.addresses;
    w.workload = workload;
    w.addresses = addresses;
    for (const entry of w.matched)
      if (entry.group) groups.addresses(entry.group, addresses, before);
    index.relabel(w, workload.labels);
  }

  function setIpList(list: IpList): void {
    ipLists.set(list.name, list);
    groups.updateList(list);
  }

  function setService(service: Service): void {
    services.set(service.name, service);
    for (const name of [...(serviceUsers.get(service.name) ?? [])]) {
      setPolicy(policies.get(name)!.policy, name);
    }
  }

  function releaseShared(w: WorkloadRecord): void {
    if (w.shared && --w.shared.users === 0) shared.delete(w.shared.key);
    w.shared = undefined;
  }

  /** Recomputes a workload's rule set from the policies whose scope selects it. */
  function recompute(w: WorkloadRecord): void {
    const selected: PolicyRecord[] = [];
    for (const entry of w.matched) for (const p of entry.scopeOf) selected.push(policies.get(p)!);
    selected.sort((a, b) => compareStrings(a.policy.name, b.policy.name));
    const key = selected.map((p) => `${p.policy.name}@${p.version}`).join('\n');
    if (w.shared?.key !== key) {
      releaseShared(w);
      let rules = shared.get(key);
      if (!rules) {
        const list = selected.flatMap((p) => p.rules).sort((a, b) => compareStrings(a.id, b.id));
        rules = {
          key,
          rules: Object.freeze(list) as GroupRule[],
          digest: rulesDigest(list),
          users: 0,
        };
        shared.set(key, rules);
      }
      rules.users++;
      w.shared = rules;
    }
    const ruleSet: GroupRuleSet = {
      workloadId: w.workload.name,
      revision: 0,
      hash: '',
      ingressMode: MODES[w.workload.mode.ingress],
      egressMode: MODES[w.workload.mode.egress],
      rules: w.shared!.rules,
    };
    ruleSet.hash = hashWithDigest(ruleSet, w.shared!.digest);
    w.ruleSet = ruleSet;
  }

  /** Runs one change and returns its delta. */
  function change(apply: () => void): CalcResult {
    recorder = new DeltaRecorder();
    apply();
    const delta: CalcDelta = { groups: [], workloads: [] };
    for (const [name, before] of recorder.workloads) {
      const w = workloads.get(name);
      if (w) recompute(w);
      const after = w?.ruleSet;
      if (before?.hash === after?.hash) continue;
      const [was, is] = [groupIdsOf(before), groupIdsOf(after)];
      delta.workloads.push({
        workloadId: name,
        ...(after ? { ruleSet: after } : {}),
        groupsAdded: [...is].filter((id) => !was.has(id)).sort(compareStrings),
        groupsRemoved: [...was].filter((id) => !is.has(id)).sort(compareStrings),
      });
    }
    delta.workloads.sort((a, b) => compareStrings(a.workloadId, b.workloadId));
    delta.groups = recorder.groupChanges(
      (id) => groups.has(id),
      (id) => groups.referrers(id),
    );
    return ok(delta);
  }

  function servicesOf(policy: Policy): Set<string> {
    return new Set(
      [...(policy.ingress ?? []), ...(policy.egress ?? [])].flatMap((r) =>
        (r.services ?? []).filter((s): s is string => typeof s === 'string'),
      ),
    );
  }

  const inUse = (kind: string, name: string, by: Iterable<string>): Diagnostic[] =>
    [...by].map((p) => ({ path: kind, message: `${kind} '${name}' is used by policy '${p}'` }));

  function load(state: PolicyState): CalcResult {
    const diagnostics = validateState(state);
    if (diagnostics.length > 0) return invalid(diagnostics);
    const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
    const names = <T extends { name: string }>(items: T[]) => new Set(items.map((i) => i.name));
    return change(() => {
      for (const s of state.services) if (!same(services.get(s.name), s)) setService(s);
      for (const l of state.ipLists) if (!same(ipLists.get(l.name), l)) setIpList(l);
      for (const w of state.workloads) {
        if (!same(workloads.get(w.name)?.workload, w)) setWorkload(w, w.name);
      }
      for (const p of state.policies)
        if (!same(policies.get(p.name)?.policy, p)) setPolicy(p, p.name);
      const keep = {
        policies: names(state.policies),
        workloads: names(state.workloads),
        services: names(state.services),
        ipLists: names(state.ipLists),
      };
      for (const name of [...policies.keys()])
        if (!keep.policies.has(name)) setPolicy(undefined, name);
      for (const name of [...workloads.keys()]) {
        if (!keep.workloads.has(name)) setWorkload(undefined, name);
      }
      for (const name of [...services.keys()]) {
        if (!keep.services.has(name)) services.delete(name);
      }
      for (const name of [...ipLists.keys()]) if (!keep.ipLists.has(name)) ipLists.delete(name);
    });
  }

  return {
    load,
    upsertWorkload(workload) {
      const diagnostics = validateWorkload(workload, 'workload');
      if (diagnostics.length > 0) return invalid(diagnostics);
      return change(() => setWorkload(workload, workload.name));
    },
    deleteWorkload: (name) => change(() => setWorkload(undefined, name)),
    upsertIpList(list) {
      const diagnostics = validateIpList(list, 'ipList');
      if (diagnostics.length > 0) return invalid(diagnostics);
      return change(() => setIpList(list));
    },
    deleteIpList(name) {
      const users = [...groups.users(`list:${name}`)];
      if (users.length > 0) return invalid(inUse('ipList', name, users));
      return change(() => ipLists.delete(name));
    },
    upsertService(service) {
      const diagnostics = validateService(service, 'service');
      if (diagnostics.length > 0) return invalid(diagnostics);
      return change(() => setService(service));
    },
    deleteService(name) {
      const users = serviceUsers.get(name);
      if (users) return invalid(inUse('service', name, users));
      return change(() => services.delete(name));
    },
    upsertPolicy(policy) {
      const diagnostics = validatePolicy(policy, 'policy');
      if (diagnostics.length === 0) {
        diagnostics.push(
          ...validatePolicyReferences(
            policy,
            'policy',
            (s) => services.has(s),
            (l) => ipLists.has(l),
          ),
        );
      }
      if (diagnostics.length > 0) return invalid(diagnostics);
      return change(() => setPolicy(policy, policy.name));
    },
    deletePolicy: (name) => change(() => setPolicy(undefined, name)),
    ruleSet: (name) => workloads.get(name)?.ruleSet,
    group: (id) => groups.ranges(id),
    snapshot() {
      const ruleSets = new Map<string, GroupRuleSet>();
      for (const name of [...workloads.keys()].sort(compareStrings)) {
        ruleSets.set(name, workloads.get(name)!.ruleSet!);
      }
      const out = new Map<string, IpRange[]>();
      for (const id of groups.ids()) out.set(id, [...groups.ranges(id)!]);
      return { ruleSets, groups: out };
    },
  };
}
