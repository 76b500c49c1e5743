// The rule ids each workload's agent may report counters and flows for: those of its desired
// rule set and of the one before it (an agent still applying the previous revision reports that
// one's rules). Must not judge telemetry (telemetry.ts does) nor change rule sets.
import type { RuleSetPublisher } from '../rulesets/publisher.js';

export interface SentRuleIds {
  of(workload: string): ReadonlySet<string>;
}

export function createSentRuleIds(publisher: Pick<RuleSetPublisher, 'ruleIdsOf'>): SentRuleIds {
  // current: the desired rule set's ids (the publisher keeps one set per rules value, so an
  // unchanged rule set is the same object); ids: those plus the previous rule set's.
  const known = new Map<string, { current: ReadonlySet<string>; ids: ReadonlySet<string> }>();
  return {
    of(workload) {
      const current = publisher.ruleIdsOf(workload);
      const cached = known.get(workload);
      if (current === undefined) return cached?.ids ?? new Set();
      if (cached?.current === current) return cached.ids;
      const ids = new Set([...current, ...(cached?.current ?? [])]);
      known.set(workload, { current, ids });
      return ids;
    },
  };
}
