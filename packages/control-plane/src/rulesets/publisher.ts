// The rule-set publisher: the provisioned policy held in a calculation graph
// (`createCalculator`), fed fine-grained changes after their transactions commit, and the
// deltas it returns turned into one update per affected agent (wiring contract). Keeps in
// memory what the agents list needs (each workload's agent state hash, the current revision)
// and per stream the hash last sent; stores nothing. Policy administration, revisions and fleet
// use it through this narrow interface. Must not validate input (callers do, before their
// commit), decide what state to publish, nor audit.
import {
  type CalcResult,
  createCalculator,
  type IpList,
  type IpRange,
  type Policy,
  type PolicyState,
  type Service,
  toAddressRange,
  type Workload,
} from '@bulkhead/policy';
import type { AddressGroup, GroupRule, GroupRuleSet } from '@bulkhead/proto';
import type { Logger } from 'pino';
import type { AgentStream } from '../fleet/streams.js';
import { createAgentHasher, groupsOf } from './agent-hash.js';
import {
  type Body,
  encodeBodies,
  encodeGroup,
  frameUpdate,
  type GroupParts,
  type RangeForm,
  type UpdateHeader,
} from './encode.js';
import { diffNamed, sameRecord } from './named-diff.js';

/** A revision's policy objects, and the labels and modes it gives the workloads it names. */
export type PolicyObjects = Pick<PolicyState, 'ipLists' | 'services' | 'policies'> & {
  workloads?: readonly Workload[];
};

export interface Desired {
  hash: string;
  /** The newest revision this content is current for. */
  revision: number;
}

export interface RuleSetPublisher {
  /** Cold start: the latest revision's objects on the current workloads. */
  load(state: PolicyState, revision: number): void;
  /**
   * Workloads written and committed (`workload` undefined: deleted); sends what changed.
   * Returns the workloads whose agent state changed.
   */
  workloadsChanged(changes: ReadonlyArray<{ name: string; workload?: Workload }>): string[];
  /**
   * A revision committed: feeds the objects, labels and modes that differ from what was fed
   * (workloads it does not name, or does not know yet, are left as they are); as above.
   */
  provisioned(objects: PolicyObjects, revision: number): string[];
  desired(workload: string): Desired | undefined;
  /** workload -> desired hash and the newest revision that content is current for. */
  desiredAll(): Map<string, Desired>;
  /** The workload's rule set in group form with the groups it names. */
  groupForm(workload: string): { ruleSet: GroupRuleSet; groups: AddressGroup[] } | undefined;
  /** The ids of the workload's rules (telemetry validation). */
  ruleIdsOf(workload: string): ReadonlySet<string> | undefined;
  /**
   * The named workloads whose rule-set size (nft rules + group ranges + service ranges) passes
   * `max`, with that size, in the order named.
   */
  oversized(workloads: readonly string[], max: number): [string, number][];
  /**
   * Answers a Hello: runs `during` (the Hello's own changes) while the stream receives no
   * update, then returns the full sync to send after the Welcome, or nothing when the agent
   * already holds the desired state. Afterwards the stream gets every change as a delta.
   */
  hello(stream: AgentStream, appliedHash: string, during: () => void): Buffer[];
}

export interface PublisherDeps {
  /** The open streams of a workload (fleet's registry). */
  streams: { ofWorkload(workload: string): readonly AgentStream[] };
  log: Logger;
}

const EMPTY_OBJECTS: PolicyObjects = { ipLists: [], services: [], policies: [] };

interface GroupTrace {
  /** Deleted then created again within one batch: agents holding it need a full sync. */
  replaced: boolean;
  deleted: boolean;
  toggles: Map<string, { range: IpRange; net: number }>;
}

/** The deltas of one logical change (a provision feeds several), merged per group. */
class Batch {
  readonly groups = new Map<string, GroupTrace>();
  /** Sorted lists of affected workloads; most changes bring one (a group's referrers). */
  private readonly lists: string[][] = [];
  /** The workloads whose rule set (rules, modes) changed or went: the others keep theirs. */
  readonly ruleSetChanged = new Set<string>();

  add(result: CalcResult): void {
    for (const g of result.delta.groups) {
      const t = this.groups.get(g.id) ?? { replaced: false, deleted: false, toggles: new Map() };
      this.groups.set(g.id, t);
      if (g.deleted) {
        t.deleted = true;
        continue;
      }
      if (g.created && t.deleted) t.replaced = true;
      for (const [list, by] of [
        [g.added, 1],
        [g.removed, -1],
      ] as const) {
        for (const range of list) {
          const key = `${range.family}:${range.from}-${range.to}`;
          const e = t.toggles.get(key);
          if (e) e.net += by;
          else t.toggles.set(key, { range, net: by });
        }
      }
      this.lists.push(g.workloads);
    }
    this.lists.push(result.delta.workloads.map((w) => w.workloadId));
    for (const w of result.delta.workloads) this.ruleSetChanged.add(w.workloadId);
  }

  /** The affected workloads, sorted, each once. */
  workloads(): string[] {
    const lists = this.lists.filter((l) => l.length > 0);
    if (lists.length === 1) return lists[0]!;
    return [...new Set(lists.flat())].sort();
  }

  /** The net change of a group that existed before the batch. */
  change(id: string): { added: IpRange[]; removed: IpRange[] } | undefined {
    const t = this.groups.get(id);
    if (!t) return undefined;
    const pick = (f: (net: number) => boolean) =>
      [...t.toggles.values()].filter((e) => f(e.net)).map((e) => e.range);
    const change = { added: pick((n) => n > 0), removed: pick((n) => n < 0) };
    return change.added.length + change.removed.length > 0 ? change : undefined;
  }
}

export function createRuleSetPublisher({ streams, log }: PublisherDeps): RuleSetPublisher {
  const calc = createCalculator();
  const hasher = createAgentHasher();
  /** What each workload's agents hold once in sync: its rule set and agent state hash. */
  const published = new Map<string, { ruleSet: GroupRuleSet; hash: string }>();
  /** Encoded whole groups (created / full sync) per range form, dropped when the group changes. */
  const wholeParts = { packed: new Map<string, GroupParts>(), text: new Map<string, GroupParts>() };
  const ruleIds = new WeakMap<readonly GroupRule[], ReadonlySet<string>>();
  let objects = EMPTY_OBJECTS;
  let revision = 0;
  /** The workloads as fed to the calculator (labels and modes as provisioned). */
  const fed = new Map<string, Workload>();
  /**
   * The workloads the last provision gave, and `refed` then: while no workload change has fed
   * other labels or modes since, the same object at the same place needs no look (a revision
   * shares the workloads a change did not make new).
   */
  let given: { workloads: readonly Workload[]; refed: number } | undefined;
  /** Counts workload changes that fed other labels or modes, or added or removed a workload. */
  let refed = 0;

  function whole(id: string, form: RangeForm): GroupParts {
    let parts = wholeParts[form].get(id);
    if (!parts) {
      parts = encodeGroup({ id, created: true, added: calc.group(id) ?? [] }, form);
      wholeParts[form].set(id, parts);
    }
    return parts;
  }

  /**
   * Full-sync bodies per range form and rules array, shared by the agents that get one; dropped
   * as wholeParts.
   */
  const noBodies = () => ({
    packed: new WeakMap<readonly GroupRule[], Body[]>(),
    text: new WeakMap<readonly GroupRule[], Body[]>(),
  });
  let fullBodies = noBodies();

  function fullSync(ruleSet: GroupRuleSet, hash: string, form: RangeForm): Buffer[] {
    let bodies = fullBodies[form].get(ruleSet.rules);
    if (!bodies) {
      bodies = encodeBodies(
        ruleSet.rules,
        groupsOf(ruleSet).flatMap((id) => whole(id, form)),
      );
      fullBodies[form].set(ruleSet.rules, bodies);
    }
    return frameUpdate({ baseHash: '', hash, revision, full: true }, bodies, ruleSet);
  }

  /** Runs calculator inputs as one change and sends each affected agent one update. */
  function run(inputs: (feed: (result: CalcResult) => void) => void): string[] {
    const batch = new Batch();
    inputs((result) => {
      if (result.diagnostics.length > 0) {
        // Callers validate before they commit; reaching this is a bug, not bad input.
        log.error({ diagnostics: result.diagnostics }, 'the calculator refused a committed change');
        return;
      }
      hasher.apply(result.delta);
      for (const g of result.delta.groups) {
        wholeParts.packed.delete(g.id);
        wholeParts.text.delete(g.id);
      }
      if (result.delta.groups.length > 0) fullBodies = noBodies();
      batch.add(result);
    });
    const changes = { packed: new Map<string, GroupParts>(), text: new Map<string, GroupParts>() };
    const changeParts = (id: string, form: RangeForm) => {
      let parts = changes[form].get(id);
      if (!parts) {
        const c = batch.change(id);
        parts = c ? encodeGroup({ id, ...c }, form) : [];
        changes[form].set(id, parts);
      }
      return parts;
    };
    /**
     * Per range form and (rules before, rules after): the group parts, and the message bodies
     * of an update that leaves the rule set as it is; agents with the same rules share both, so
     * each of them costs its hash and header. null: only a full sync will do.
     */
    type Shared = { parts: Uint8Array[]; bare?: Body[]; ruled?: Body[] } | null;
    const memo = {
      packed: new Map<readonly GroupRule[], Map<readonly GroupRule[], Shared>>(),
      text: new Map<readonly GroupRule[], Map<readonly GroupRule[], Shared>>(),
    };
    const changed: string[] = [];
    let now: number | undefined;
    // Per agent, only when asked for: a change can reach every agent of the fleet.
    const debug = log.isLevelEnabled('debug');
    for (const name of batch.workloads()) {
      // Updated in place: one lookup and no allocation per agent. A group change leaves most
      // rule sets as published: the calculator is asked only for the ones the batch changed.
      const entry = published.get(name);
      const ruleSet = entry && !batch.ruleSetChanged.has(name) ? entry.ruleSet : calc.ruleSet(name);
      if (!ruleSet) {
        published.delete(name);
        continue;
      }
      const hash = hasher.hash(ruleSet);
      const before = entry?.ruleSet;
      const beforeHash = entry?.hash;
      if (entry) {
        entry.ruleSet = ruleSet;
        entry.hash = hash;
      } else published.set(name, { ruleSet, hash });
      if (hash === beforeHash) continue;
      changed.push(name);
      for (const stream of streams.ofWorkload(name)) {
        if (stream.synced === undefined || stream.synced === hash) continue;
        const form = stream.ranges ?? 'text';
        const messages =
          before && stream.synced === beforeHash
            ? delta(before, ruleSet, { baseHash: beforeHash, hash, revision, full: false }, form)
            : undefined;
        for (const m of messages ?? fullSync(ruleSet, hash, form)) stream.send(m);
        stream.synced = hash;
        stream.sentAt ??= now ??= performance.now();
        if (debug) log.debug({ workload: name, hash, full: !messages }, 'sent policy update');
      }
    }
    return changed;

    /** The update from `before` to `after`; undefined when only a full sync will do. */
    function delta(
      before: GroupRuleSet,
      after: GroupRuleSet,
      header: UpdateHeader,
      form: RangeForm,
    ): Buffer[] | undefined {
      const byAfter = memo[form].get(before.rules) ?? new Map();
      memo[form].set(before.rules, byAfter);
      let shared = byAfter.get(after.rules);
      if (shared === undefined) {
        const parts = groupParts(before, after, form);
        shared = parts ? { parts } : null;
        byAfter.set(after.rules, shared);
      }
      if (!shared) return undefined;
      // The rule set (rules or modes) changed: it goes along, its rules encoded once.
      if (before.hash !== after.hash) {
        shared.ruled ??= encodeBodies(after.rules, shared.parts);
        return frameUpdate(header, shared.ruled, after);
      }
      shared.bare ??= encodeBodies(undefined, shared.parts);
      return frameUpdate(header, shared.bare);
    }

    /** The group parts from `before`'s groups to `after`'s; undefined: only a full sync will do. */
    function groupParts(
      before: GroupRuleSet,
      after: GroupRuleSet,
      form: RangeForm,
    ): Uint8Array[] | undefined {
      const was = new Set(groupsOf(before));
      const now = groupsOf(after);
      const parts: Uint8Array[] = [];
      for (const id of now) {
        if (!was.has(id)) parts.push(...whole(id, form));
        else if (batch.groups.get(id)?.replaced) return undefined;
        else parts.push(...changeParts(id, form));
      }
      const kept = new Set(now);
      for (const id of was) {
        if (!kept.has(id)) parts.push(...encodeGroup({ id, deleted: true }, form));
      }
      return parts;
    }
  }

  return {
    load(state, rev) {
      revision = rev;
      objects = { ipLists: state.ipLists, services: state.services, policies: state.policies };
      fed.clear();
      given = undefined;
      for (const w of state.workloads) fed.set(w.name, w);
      run((feed) => feed(calc.load(state)));
    },
    workloadsChanged: (changes) =>
      run((feed) => {
        for (const c of changes) {
          const was = fed.get(c.name);
          if (
            !was ||
            !c.workload ||
            !sameRecord(was.labels, c.workload.labels) ||
            !sameRecord(was.mode, c.workload.mode)
          ) {
            refed++;
          }
          if (c.workload) fed.set(c.name, c.workload);
          else fed.delete(c.name);
          feed(c.workload ? calc.upsertWorkload(c.workload) : calc.deleteWorkload(c.name));
        }
      }),
    provisioned(next, rev) {
      revision = rev;
      const services = diffNamed<Service>(objects.services, next.services);
      const ipLists = diffNamed<IpList>(objects.ipLists, next.ipLists);
      const policies = diffNamed<Policy>(objects.policies, next.policies);
      objects = { ipLists: next.ipLists, services: next.services, policies: next.policies };
      // The revision's workloads that may differ from what was fed: no look at the others.
      const relabelled: Workload[] = [];
      const list = next.workloads ?? [];
      const last = given?.refed === refed ? given.workloads : undefined;
      // A copy: what a caller does with its array afterwards cannot make this skip a change.
      given = { workloads: [...list], refed };
      for (let i = 0; i < list.length; i++) {
        const w = list[i]!;
        if (last?.[i] === w) continue;
        const was = fed.get(w.name);
        if (!was || (sameRecord(was.labels, w.labels) && sameRecord(was.mode, w.mode))) continue;
        const now = { ...was, labels: w.labels, mode: w.mode };
        fed.set(w.name, now);
        relabelled.push(now);
      }
      // What a policy names exists before it, and stays until no policy names it: no group is
      // dropped and made again, so agents get element changes.
      return run((feed) => {
        for (const s of services.upserts) feed(calc.upsertService(s));
        for (const l of ipLists.upserts) feed(calc.upsertIpList(l));
        for (const p of policies.upserts) feed(calc.upsertPolicy(p));
        for (const w of relabelled) feed(calc.upsertWorkload(w));
        for (const name of policies.deletes) feed(calc.deletePolicy(name));
        for (const name of services.deletes) feed(calc.deleteService(name));
        for (const name of ipLists.deletes) feed(calc.deleteIpList(name));
      });
    },
    desired(workload) {
      const p = published.get(workload);
      return p && { hash: p.hash, revision };
    },
    desiredAll: () => new Map([...published].map(([w, p]) => [w, { hash: p.hash, revision }])),
    groupForm(workload) {
      const ruleSet = calc.ruleSet(workload);
      if (!ruleSet) return undefined;
      return {
        ruleSet: { ...ruleSet, revision },
        groups: groupsOf(ruleSet).map((id) => ({
          id,
          ranges: (calc.group(id) ?? []).map(toAddressRange),
        })),
      };
    },
    ruleIdsOf(workload) {
      const rules = calc.ruleSet(workload)?.rules;
      if (!rules) return undefined;
      const ids = ruleIds.get(rules) ?? new Set(rules.map((r) => r.id));
      ruleIds.set(rules, ids);
      return ids;
    },
    oversized(workloads, max) {
      // Workloads with the same rules have the same size: each rules array is counted once.
      const byRules = new Map<readonly GroupRule[], number>();
      // Ranges are sorted IPv4 first: one nft rule per family the group holds.
      const families = (id: string) => {
        const g = calc.group(id) ?? [];
        return g.length === 0 ? 0 : g[0]!.family === g.at(-1)!.family ? 1 : 2;
      };
      const out: [string, number][] = [];
      for (const name of workloads) {
        const ruleSet = calc.ruleSet(name);
        if (!ruleSet) continue;
        let size = byRules.get(ruleSet.rules);
        if (size === undefined) {
          size = groupsOf(ruleSet).reduce((n, id) => n + (calc.group(id)?.length ?? 0), 0);
          for (const r of ruleSet.rules) {
            size += r.services.length + r.groups.reduce((n, id) => n + families(id), 0);
          }
          byRules.set(ruleSet.rules, size);
        }
        if (size > max) out.push([name, size]);
      }
      return out;
    },
    hello(stream, appliedHash, during) {
      stream.synced = undefined;
      during();
      const p = published.get(stream.workload);
      stream.synced = p?.hash ?? appliedHash;
      stream.sentAt = undefined;
      if (!p || p.hash === appliedHash) return [];
      stream.sentAt = performance.now();
      return fullSync(p.ruleSet, p.hash, stream.ranges ?? 'text');
    },
  };
}
