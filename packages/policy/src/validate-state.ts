// Validation of a whole policy state: each object valid (validate.ts), names unique,
// references resolve; and the memo that lets a state made from a valid one be checked where it
// differs. Returns diagnostics, never throws.
import type { Diagnostic, PolicyState } from './model.js';
import {
  finish,
  isObject,
  join,
  list,
  type Rec,
  validateIpList,
  validatePolicy,
  validateService,
  validateWorkload,
} from './validate.js';

/** Service and IP-list names a policy refers to that `hasService` / `hasIpList` do not know. */
export function validatePolicyReferences(
  policy: unknown,
  path: string,
  hasService: (name: string) => boolean,
  hasIpList: (name: string) => boolean,
): Diagnostic[] {
  const out: Diagnostic[] = [];
  if (!isObject(policy)) return out;
  for (const direction of ['ingress', 'egress'] as const) {
    list(policy[direction]).forEach((rule, r) => {
      if (!isObject(rule)) return;
      const at = join(join(path, direction), r);
      list(rule.services).forEach((s, i) => {
        if (typeof s === 'string' && !hasService(s)) {
          out.push({ path: join(join(at, 'services'), i), message: `unknown service '${s}'` });
        }
      });
      list(rule.peers).forEach((peer, i) => {
        if (isObject(peer) && typeof peer.ipList === 'string' && !hasIpList(peer.ipList)) {
          out.push({
            path: join(join(join(at, 'peers'), i), 'ipList'),
            message: `unknown IP list '${peer.ipList}'`,
          });
        }
      });
    });
  }
  return out;
}

type Section = 'workloads' | 'ipLists' | 'services' | 'policies';

/**
 * Objects a validator found nothing wrong with, by identity. States are values: a provision
 * builds its state from the previous one's objects, so it checks only the objects it made new
 * (one workload for a label change), and the cross checks (names, references) over all.
 */
const clean = new WeakMap<(v: unknown, p: string) => Diagnostic[], WeakSet<object>>();
function checked(
  validator: (v: unknown, p: string) => Diagnostic[],
  item: unknown,
  section: Section,
  i: number,
): Diagnostic[] {
  if (!isObject(item)) return validator(item, join(section, i));
  let ok = clean.get(validator);
  if (!ok) {
    ok = new WeakSet();
    clean.set(validator, ok);
  }
  if (ok.has(item)) return [];
  const diagnostics = validator(item, join(section, i));
  if (diagnostics.length === 0) ok.add(item);
  return diagnostics;
}

/**
 * Lists found clean by a whole check, by identity (section lists: objects valid, names
 * distinct; a policies list: its references resolve in the services and IP lists it was
 * checked with). A state made from a clean one is checked against it (`cleanAgainst`).
 */
const cleanLists = new WeakSet<readonly unknown[]>();
const resolvedIn = new WeakMap<
  readonly unknown[],
  { services: readonly unknown[]; ipLists: readonly unknown[] }
>();

const SECTIONS: readonly Section[] = ['workloads', 'ipLists', 'services', 'policies'];
const VALIDATORS: Record<Section, (v: unknown, p: string) => Diagnostic[]> = {
  workloads: validateWorkload,
  ipLists: validateIpList,
  services: validateService,
  policies: validatePolicy,
};

/**
 * Whether `state` is valid judged by what differs from `base` alone: true only when every list
 * of `base` was found clean, each list of `state` holds the same names in the same places, and
 * each object in a place where `base` has another object is valid (a policy's references too).
 * False means "not shown clean this way", never "invalid": the whole check decides then.
 */
function cleanAgainst(state: PolicyState, base: PolicyState): boolean {
  const s = state as unknown as Record<Section, unknown>;
  const b = base as unknown as Record<Section, unknown>;
  const changedPolicies: number[] = [];
  for (const section of SECTIONS) {
    const items = s[section];
    const before = b[section];
    if (!Array.isArray(items) || !Array.isArray(before) || !cleanLists.has(before)) return false;
    if (items === before) continue;
    if (items.length !== before.length) return false;
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      if (item === before[i]) continue;
      if (!isObject(item) || item.name !== (before[i] as Rec).name) return false;
      if (checked(VALIDATORS[section], item, section, i).length > 0) return false;
      if (section === 'policies') changedPolicies.push(i);
    }
  }
  // Same names everywhere: what resolved in base still does; changed policies are checked.
  const resolved = resolvedIn.get(base.policies);
  if (resolved?.services !== base.services || resolved.ipLists !== base.ipLists) return false;
  if (changedPolicies.length > 0) {
    const services = new Set(state.services.map((o) => o.name));
    const ipLists = new Set(state.ipLists.map((o) => o.name));
    for (const p of changedPolicies) {
      const refs = validatePolicyReferences(
        state.policies[p],
        '',
        (n) => services.has(n),
        (n) => ipLists.has(n),
      );
      if (refs.length > 0) return false;
    }
  }
  markClean(state);
  return true;
}

function markClean(state: PolicyState): void {
  for (const section of SECTIONS) cleanLists.add(state[section]);
  resolvedIn.set(state.policies, { services: state.services, ipLists: state.ipLists });
}

/**
 * Everything the compiler relies on: each object valid, names unique, references resolve.
 * Objects are not to be changed in place once validated (an object found valid is not checked
 * again), nor are lists. `base`, a state `state` was made from (a provision's previous state),
 * makes the check cost what differs from it when base was found valid; the answer is the same.
 */
export function validateState(state: PolicyState, base?: PolicyState): Diagnostic[] {
  if (base && isObject(state) && isObject(base) && cleanAgainst(state, base)) return [];
  const out: Diagnostic[] = [];
  if (!isObject(state)) return [{ path: '', message: 'must be an object' }];
  const names: Record<Section, Set<string>> = {
    workloads: new Set(),
    ipLists: new Set(),
    services: new Set(),
    policies: new Set(),
  };
  for (const section of SECTIONS) {
    const items = (state as unknown as Rec)[section];
    if (!Array.isArray(items)) {
      out.push({ path: section, message: 'must be a list' });
      continue;
    }
    const firstIndex = new Map<string, number>();
    items.forEach((item, i) => {
      const diagnostics = checked(VALIDATORS[section], item, section, i);
      if (diagnostics.length > 0) out.push(...diagnostics);
      const name = isObject(item) ? item.name : undefined;
      if (typeof name !== 'string') return;
      const first = firstIndex.get(name);
      if (first === undefined) {
        firstIndex.set(name, i);
        names[section].add(name);
      } else {
        out.push({
          path: join(join(section, i), 'name'),
          message: `duplicate name '${name}' (also ${section}[${first}])`,
        });
      }
    });
  }
  list(state.policies).forEach((policy, p) => {
    out.push(
      ...validatePolicyReferences(
        policy,
        join('policies', p),
        (name) => names.services.has(name),
        (name) => names.ipLists.has(name),
      ),
    );
  });
  if (out.length === 0) markClean(state);
  return finish(out);
}
