// The candidate an impact question names (`target` of POST /v1/impact): the draft, a revision, or
// policy-file documents laid over the draft, with the objects they delete (named, or with
// `prune` every editable object the documents leave out, as `apply --prune` would). Reads
// states only; every problem is a 400 naming its path under `target`.
import type { Diagnostic, PolicyState, Workload } from '@bulkhead/policy';
import { invalid } from '../errors.js';
import type { PolicyStates } from '../policy-state.js';
import { withResources } from './impact-view.js';

/** The kinds a draft edits and a prune removes; workloads are never deleted by policy files. */
const SECTIONS = { Policy: 'policies', Service: 'services', IpList: 'ipLists' } as const;
type DeletableKind = keyof typeof SECTIONS;

interface ObjectRef {
  kind: DeletableKind;
  name: string;
}

const TARGET_FORMS = "must be 'draft', {revision} or {resources?, deletes?, prune?}";

/** The state `target` describes, on `workloads` (today's, as the provisioned side). */
export function candidateState(
  states: PolicyStates,
  target: unknown,
  workloads: Workload[],
): PolicyState {
  if (target === undefined || target === 'draft') return states.draft();
  if (typeof target !== 'object' || target === null || Array.isArray(target)) {
    throw invalid('invalid impact request', [{ path: 'target', message: TARGET_FORMS }]);
  }
  const t = target as Record<string, unknown>;
  if ('revision' in t) {
    if (!Number.isInteger(t.revision) || (t.revision as number) < 1) {
      throw invalid('invalid impact request', [
        { path: 'target.revision', message: 'must be an integer >= 1' },
      ]);
    }
    return states.atRevision(t.revision as number, workloads);
  }
  if (!('resources' in t) && !('deletes' in t)) {
    throw invalid('invalid impact request', [{ path: 'target', message: TARGET_FORMS }]);
  }
  const diags: Diagnostic[] = [];
  for (const key of Object.keys(t)) {
    if (!['resources', 'deletes', 'prune'].includes(key)) {
      diags.push({ path: `target.${key}`, message: 'is not a known field' });
    }
  }
  if (t.prune !== undefined && typeof t.prune !== 'boolean') {
    diags.push({ path: 'target.prune', message: 'must be a boolean' });
  }
  if (diags.length > 0) throw invalid('invalid impact request', diags);
  const draft = states.draft();
  const next = withResources(draft, t.resources ?? [], 'target.resources');
  const named = new Set(
    (t.resources as { kind?: unknown; name?: unknown }[] | undefined)?.map(
      (d) => `${String(d.kind)}/${String(d.name)}`,
    ),
  );
  const deletes = objectRefs(t.deletes, draft, named);
  if (t.prune === true) {
    for (const [kind, key] of Object.entries(SECTIONS) as [DeletableKind, keyof PolicyState][]) {
      for (const o of draft[key] as { name: string }[]) {
        if (!named.has(`${kind}/${o.name}`)) deletes.push({ kind, name: o.name });
      }
    }
  }
  // withResources copied the lists, so removing from them leaves the draft as it is. prune and
  // deletes may name the same object: it goes once.
  for (const { kind, name } of deletes) {
    const list = next[SECTIONS[kind]] as { name: string }[];
    const i = list.findIndex((o) => o.name === name);
    if (i >= 0) list.splice(i, 1);
  }
  return next;
}

/** `deletes` checked: each `{kind, name}` of an existing draft object the documents do not set. */
function objectRefs(value: unknown, draft: PolicyState, named: Set<string>): ObjectRef[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) {
    throw invalid('invalid impact request', [
      { path: 'target.deletes', message: 'must be an array of {kind, name}' },
    ]);
  }
  const diags: Diagnostic[] = [];
  const refs: ObjectRef[] = [];
  value.forEach((ref: unknown, i) => {
    const at = `target.deletes[${i}]`;
    const { kind, name } = (ref ?? {}) as { kind?: unknown; name?: unknown };
    if (typeof kind !== 'string' || !(kind in SECTIONS)) {
      diags.push({ path: `${at}.kind`, message: 'must be one of Policy, Service, IpList' });
      return;
    }
    const section = draft[SECTIONS[kind as DeletableKind]] as { name: string }[];
    if (typeof name !== 'string' || !section.some((o) => o.name === name)) {
      diags.push({ path: `${at}.name`, message: `no ${kind} "${String(name)}" in the draft` });
    } else if (named.has(`${kind}/${name}`)) {
      diags.push({ path: `${at}.name`, message: 'is also among the resources' });
    } else {
      refs.push({ kind: kind as DeletableKind, name });
    }
  });
  if (diags.length > 0) throw invalid('invalid impact request', diags);
  return refs;
}
