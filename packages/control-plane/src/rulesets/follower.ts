// Which revision each workload's agents follow while a staged rollout runs. Holds two rule-set
// publishers: `base` (the revision before the rollout; the only one outside a rollout) and
// `next` (the rollout's revision, on a calculator of its own), and hides each workload's streams
// from the publisher it does not follow, so every change reaches an agent from exactly one of
// them. Switching a workload answers its streams as a Hello would (a full sync of the other
// publisher's state, nothing when the agent already holds it). A workload change reaches each
// side with the labels and mode of that side's revision. It is a RuleSetPublisher itself, so the
// domains use it unchanged. Must not decide who switches when (the rollout does), store
// anything, nor read revisions (callers pass the states, and `asOf` the labels and modes).
import type { PolicyState, Workload } from '@bulkhead/policy';
import type { Logger } from 'pino';
import type { AgentStream } from '../fleet/streams.js';
import { createRuleSetPublisher, type PolicyObjects, type RuleSetPublisher } from './publisher.js';

export type Side = 'base' | 'next';

export interface RevisionFollower extends RuleSetPublisher {
  /** A rollout starts: `next` holds its revision's state; every workload still follows base. */
  begin(state: PolicyState, revision: number): void;
  /** Switches the workloads' agents to the side's state; returns those whose side changed. */
  follow(workloads: readonly string[], side: Side): string[];
  /** The side a workload follows (`base` outside a rollout). */
  sideOf(workload: string): Side;
  /**
   * The rollout ends: base takes `objects` as `revision` (the rollout's revision when it
   * completed, the base's again when aborted; with its workloads, so base relabels those whose
   * labels or mode differ), every workload follows base, next is dropped.
   */
  end(objects: PolicyObjects, revision: number): void;
  readonly active: boolean;
}

export function createRevisionFollower(deps: {
  streams: { ofWorkload(workload: string): readonly AgentStream[] };
  /** The workloads with the labels and mode revision `n` gives them (addresses kept). */
  asOf(n: number, workloads: Workload[]): Workload[];
  log: Logger;
}): RevisionFollower {
  const { streams, asOf, log } = deps;
  const onNext = new Set<string>();
  const streamsOf = (side: Side) => ({
    ofWorkload: (w: string) =>
      (onNext.has(w) ? 'next' : 'base') === side ? streams.ofWorkload(w) : [],
  });
  const base = createRuleSetPublisher({ streams: streamsOf('base'), log });
  let next: RuleSetPublisher | undefined;
  /** The revision each side holds. */
  const revisionOf = { base: 0, next: 0 };
  const of = (w: string) => (next && onNext.has(w) ? next : base);

  function asOfSide(side: Side, changes: Parameters<RuleSetPublisher['workloadsChanged']>[0]) {
    const given = changes.flatMap((c) => (c.workload ? [c.workload] : []));
    const labelled = new Map(asOf(revisionOf[side], given).map((w) => [w.name, w]));
    return changes.map((c) => ({ name: c.name, workload: c.workload && labelled.get(c.name) }));
  }

  function resync(workload: string, to: RuleSetPublisher): void {
    for (const stream of streams.ofWorkload(workload)) {
      // Mid-Hello: the Hello's own answer comes from the side it finds.
      if (stream.synced === undefined) continue;
      for (const m of to.hello(stream, stream.synced, () => {})) stream.send(m);
    }
  }

  return {
    get active() {
      return next !== undefined;
    },
    begin(state, revision) {
      next = createRuleSetPublisher({ streams: streamsOf('next'), log });
      next.load(state, revision);
      revisionOf.next = revision;
    },
    follow(workloads, side) {
      const target = side === 'next' ? next : base;
      if (!target) return [];
      const moved = workloads.filter((w) => onNext.has(w) !== (side === 'next'));
      for (const w of moved) {
        if (side === 'next') onNext.add(w);
        else onNext.delete(w);
        resync(w, target);
      }
      return moved;
    },
    sideOf: (w) => (next && onNext.has(w) ? 'next' : 'base'),
    end(objects, revision) {
      base.provisioned(objects, revision);
      revisionOf.base = revision;
      const moved = [...onNext];
      onNext.clear();
      next = undefined;
      // Completed: these agents already hold the same content (the hash is content-derived).
      for (const w of moved) resync(w, base);
    },
    load(state, revision) {
      base.load(state, revision);
      revisionOf.base = revision;
    },
    workloadsChanged(changes) {
      // Outside a rollout base holds the latest revision, whose labels the callers give.
      if (!next) return base.workloadsChanged(changes);
      // Workloads are live: both sides see every change, with their own revision's labels and
      // modes; each reports those following it.
      const changed = base
        .workloadsChanged(asOfSide('base', changes))
        .filter((w) => !onNext.has(w));
      const nextChanged = next
        .workloadsChanged(asOfSide('next', changes))
        .filter((w) => onNext.has(w));
      return [...changed, ...nextChanged].sort();
    },
    provisioned(objects, revision) {
      revisionOf.base = revision;
      return base.provisioned(objects, revision);
    },
    desired: (w) => of(w).desired(w),
    desiredAll() {
      const all = base.desiredAll();
      if (next) for (const [w, d] of next.desiredAll()) if (onNext.has(w)) all.set(w, d);
      return all;
    },
    groupForm: (w) => of(w).groupForm(w),
    ruleIdsOf: (w) => of(w).ruleIdsOf(w),
    oversized(workloads, max) {
      if (!next) return base.oversized(workloads, max);
      return [
        ...base.oversized(
          workloads.filter((w) => !onNext.has(w)),
          max,
        ),
        ...next.oversized(
          workloads.filter((w) => onNext.has(w)),
          max,
        ),
      ];
    },
    hello: (stream, appliedHash, during) => of(stream.workload).hello(stream, appliedHash, during),
  };
}
