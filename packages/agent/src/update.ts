// Turns a PolicyUpdate (all its chunks, merged) into the next desired TableModel, checking it
// against the wiring contract (packages/policy README "Calculation graph"): a full sync
// replaces everything; a delta touches only the groups it names and, when it carries one,
// the rule set. A delta never looks at the elements of a group it does not name: the group's
// SetModel is reused as is, and a named group's change is an ElementPatch (what the kernel
// must delete and add), so its cost is the size of the change. Pure except for `commit`,
// which writes the patches into the shared element maps. Must not talk to nftables.
import type { GroupRuleSet, PolicyUpdate } from '@bulkhead/proto';
import { AgentError } from './errors.js';
import { elementRange, type Family, groupSetModel, updateElements } from './group-elements.js';
import type { ElementPatch, SetModel, TableModel } from './model.js';
import { type Failsafe, type FlowTableOptions, groupSet, renderRules } from './render.js';

/** What the kernel holds, in policy terms (the table itself is the TableModel). */
export interface AppliedPolicy {
  hash: string;
  revision: number;
  ruleSet: GroupRuleSet;
  /** Ids of the groups held: each has its two sets (groupSet) in the model. */
  groups: ReadonlySet<string>;
}

export interface PlannedUpdate {
  applied: AppliedPolicy;
  next: TableModel;
  /** Element changes of the group sets the update patched (keys as in SetModel.elems). */
  patches: Map<string, ElementPatch>;
  /** Writes the patches into the element maps `next` shares with the previous model. */
  commit(): void;
  /** Undoes commit (the kernel refused the write). */
  rollback(): void;
}

/** Longest group id the agent accepts (the contract says up to 300 characters). */
const MAX_GROUP_ID = 300;

function refuse(message: string): never {
  throw new AgentError('UPDATE_REFUSED', message);
}

/** Ranges of one group being edited: fresh maps, or net changes over the applied ones. */
interface GroupEdit {
  fresh?: Record<Family, Map<string, string>>;
  base?: Record<Family, Map<string, string>>;
  /** Key -> present after the update (only keys whose presence changes). */
  net: Record<Family, Map<string, boolean>>;
}

function has(e: GroupEdit, family: Family, key: string): boolean {
  if (e.fresh) return e.fresh[family].has(key);
  return e.net[family].get(key) ?? e.base![family].has(key);
}

function put(e: GroupEdit, family: Family, key: string, present: boolean): void {
  if (e.fresh) {
    if (present) e.fresh[family].set(key, '');
    else e.fresh[family].delete(key);
  } else if (e.base![family].has(key) === present) e.net[family].delete(key);
  else e.net[family].set(key, present);
}

/** An element's range as `from-to`, for a refusal. */
const rangeText = (element: string) => {
  const r = elementRange(element);
  return `${r.from}-${r.to}`;
};

const emptyNet = (): Record<Family, Map<string, boolean>> => ({ 4: new Map(), 6: new Map() });

/**
 * The next state for `update` given what is applied (`current`, undefined when nothing is).
 * Throws AgentError UPDATE_REFUSED when the update does not fit (a delta on another base, a
 * range added twice or removed while absent, an unknown group, a rule naming a group the
 * agent would not hold, a full sync without a rule set) or RULESET_INVALID (bad rule set or
 * range). Nothing is changed before commit().
 */
export function planUpdate(
  current: { applied: AppliedPolicy; model: TableModel } | undefined,
  update: PolicyUpdate,
  failsafe: Failsafe,
  flowTable: FlowTableOptions,
): PlannedUpdate {
  const base = update.full ? undefined : current;
  if (!update.full) {
    if (!current) refuse('a delta arrived while nothing is applied');
    if (current.applied.hash !== update.baseHash) {
      refuse(`delta on ${update.baseHash}, the agent holds ${current.applied.hash}`);
    }
  }
  const ruleSet = update.ruleSet ?? base?.applied.ruleSet;
  if (!ruleSet) refuse('a full sync without a rule set');
  const setOf = (name: string) => base?.model.sets.get(name);

  const held = new Set(base?.applied.groups);
  const edits = new Map<string, GroupEdit>();
  let structural = update.full || update.ruleSet !== undefined;
  for (const g of update.groups) {
    if (g.id === '' || g.id.length > MAX_GROUP_ID) refuse(`group id of ${g.id.length} characters`);
    if (g.deleted) {
      if (!held.delete(g.id)) refuse(`deleted group ${g.id} is not held`);
      edits.delete(g.id);
      structural = true;
      continue;
    }
    let edit = edits.get(g.id);
    if (g.created) {
      if (held.has(g.id)) refuse(`created group ${g.id} is already held`);
      held.add(g.id);
      edit = { fresh: { 4: new Map(), 6: new Map() }, net: emptyNet() };
      edits.set(g.id, edit);
      structural = true;
    } else if (!edit) {
      if (!held.has(g.id)) refuse(`update of group ${g.id}, which is not held`);
      const elems = (f: Family) => setOf(groupSet(g.id, f))?.elems;
      const b4 = elems(4);
      const b6 = elems(6);
      if (!b4 || !b6) refuse(`group ${g.id} has no sets`);
      edit = { base: { 4: b4, 6: b6 }, net: emptyNet() };
      edits.set(g.id, edit);
    }
    for (const { family, text } of updateElements(g, 'removed')) {
      if (!has(edit, family, text)) refuse(`group ${g.id}: removed ${rangeText(text)} is absent`);
      put(edit, family, text, false);
    }
    for (const { family, text } of updateElements(g, 'added')) {
      const fresh = edit.fresh?.[family];
      // A new group (a cold load: 100k ranges) checks and adds with one map operation.
      const size = fresh?.size;
      const added = fresh ? fresh.set(text, '').size !== size : !has(edit, family, text);
      if (!added) refuse(`group ${g.id}: added ${rangeText(text)} is present`);
      if (!fresh) put(edit, family, text, true);
    }
  }
  for (const rule of ruleSet.rules) {
    for (const id of rule.groups) {
      if (!held.has(id)) refuse(`rule ${rule.id} names group ${id}, which is not held`);
    }
  }

  const patches = new Map<string, ElementPatch>();
  const replaced = new Map<string, SetModel>();
  const commits: (() => void)[] = [];
  const rollbacks: (() => void)[] = [];
  for (const [id, edit] of edits) {
    for (const family of [4, 6] as const) {
      const name = groupSet(id, family);
      if (edit.fresh) {
        replaced.set(name, groupSetModel(family, edit.fresh[family]));
        continue;
      }
      const net = edit.net[family];
      if (net.size === 0) continue;
      const elems = edit.base![family];
      const patch: ElementPatch = { added: [], removed: [] };
      for (const [key, present] of net) (present ? patch.added : patch.removed).push(key);
      patches.set(name, patch);
      // A new object over the same map: planDelta takes the patch instead of comparing.
      replaced.set(name, groupSetModel(family, elems));
      commits.push(() => {
        for (const key of patch.removed) elems.delete(key);
        for (const key of patch.added) elems.set(key, '');
      });
      rollbacks.push(() => {
        for (const key of patch.added) elems.delete(key);
        for (const key of patch.removed) elems.set(key, '');
      });
    }
  }

  const groupSets = (name: string) => replaced.get(name) ?? setOf(name)!;
  let next: TableModel;
  if (structural || !base) {
    next = renderRules(ruleSet, held, groupSets, failsafe, flowTable);
  } else {
    // Only group contents changed: the same chains, counters and sets, patched sets swapped.
    const sets = new Map(base.model.sets);
    for (const [name, set] of replaced) sets.set(name, set);
    next = { ...base.model, sets };
  }
  return {
    applied: { hash: update.hash, revision: update.revision, ruleSet, groups: held },
    next,
    patches,
    commit: () => {
      for (const c of commits) c();
    },
    rollback: () => {
      for (const r of rollbacks) r();
    },
  };
}

/**
 * Merges the chunks of one update (same hash, base, revision, full; the last has `last`)
 * into one: the rule set of the chunk that carries it, the group changes in order (a group
 * may appear again in a later chunk; planUpdate applies them one after another). Throws
 * UPDATE_REFUSED when the chunks disagree.
 */
export function mergeChunks(chunks: readonly PolicyUpdate[]): PolicyUpdate {
  const first = chunks[0];
  if (!first) refuse('an update without chunks');
  let ruleSet: GroupRuleSet | undefined;
  for (const c of chunks) {
    if (
      c.hash !== first.hash ||
      c.baseHash !== first.baseHash ||
      c.revision !== first.revision ||
      c.full !== first.full
    ) {
      refuse(`chunks of update ${first.hash} disagree`);
    }
    if (c.ruleSet) {
      if (ruleSet) refuse(`update ${first.hash} carries two rule sets`);
      ruleSet = c.ruleSet;
    }
  }
  return {
    ...first,
    last: true,
    ruleSet,
    groups: chunks.length === 1 ? first.groups : chunks.flatMap((c) => c.groups),
  };
}
