// The rule ids each workload's agent may report counters and flows for: those of its desired
// RuleSet and of the one before it (an agent still applying the previous revision reports that
// one's rules). Decoded once per hash, not per telemetry batch. Must not judge telemetry
// (telemetry.ts does) nor change RuleSets.
import type { RuleSetPublisher } from '../rulesets/publisher.js';

export interface SentRuleIds {
  of(workload: string): ReadonlySet<string>;
}

export function createSentRuleIds(
  publisher: Pick<RuleSetPublisher, 'desired' | 'desiredHash'>,
): SentRuleIds {
  // current: the desired RuleSet's ids; ids: those plus the previous RuleSet's.
  const known = new Map<string, { hash: string; current: Set<string>; ids: Set<string> }>();
  return {
    of(workload) {
      const hash = publisher.desiredHash(workload);
      const cached = known.get(workload);
      if (hash === undefined) return cached?.ids ?? new Set();
      if (cached?.hash === hash) return cached.ids;
      const current = new Set(publisher.desired(workload)?.rules.map((r) => r.id));
      const ids = new Set([...current, ...(cached?.current ?? [])]);
      known.set(workload, { hash, ids, current });
      return ids;
    },
  };
}
