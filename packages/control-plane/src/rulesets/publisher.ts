// The rule-set publisher: compiles a policy state, stores the RuleSets whose content changed
// and pushes those to their workloads' open streams. Policy administration, revisions and
// fleet use it through this narrow interface only, so an incremental pipeline (selector index,
// address groups, deltas) can replace it. Must not decide *what* state to publish, nor audit.
import type { PolicyState } from '@bulkhead/policy';
import { RuleSet } from '@bulkhead/proto';
import type { Logger } from 'pino';
import { compileState } from '../policy-state.js';
import type { RuleSetStore } from './store.js';

export interface RuleSetPublisher {
  /** The state's RuleSets for `revision`, or a 400 `message` naming what does not compile. */
  compile(state: PolicyState, revision: number, message: string): RuleSet[];
  /**
   * Stores compiled RuleSets (call inside the write's transaction); returns those that changed.
   * The hash leaves the revision out, so equal hashes mean equal content: the stored RuleSet is
   * only marked current for the new revision, and no agent reapplies what it already runs.
   */
  save(ruleSets: RuleSet[]): RuleSet[];
  /** Sends changed RuleSets to their workloads' open streams (after the commit). */
  push(changed: RuleSet[]): void;
  /** The workload's desired RuleSet; undefined when it has none or its hash is `except`. */
  desired(workload: string, except?: string): RuleSet | undefined;
  /** The workload's desired RuleSet hash, without decoding it. */
  desiredHash(workload: string): string | undefined;
  /** workload -> desired hash and the newest revision that content is current for. */
  desiredAll(): Map<string, { hash: string; revision: number }>;
}

export interface PublisherDeps {
  store: RuleSetStore;
  /** The open streams (fleet's registry); returns how many got the RuleSet. */
  streams: { push(ruleSet: RuleSet): number };
  log: Logger;
}

export function createRuleSetPublisher({ store, streams, log }: PublisherDeps): RuleSetPublisher {
  return {
    compile: compileState,
    save(ruleSets) {
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
    },
    push(changed) {
      for (const rs of changed) {
        const n = streams.push(rs);
        log.debug({ workload: rs.workloadId, hash: rs.hash, streams: n }, 'pushed RuleSet');
      }
    },
    desired(workload, except) {
      const rs = store.getRuleSet(workload);
      return rs && rs.hash !== except ? RuleSet.decode(rs.body) : undefined;
    },
    desiredHash: (workload) => store.getRuleSetHash(workload),
    desiredAll: () => store.desiredRuleSets(),
  };
}
