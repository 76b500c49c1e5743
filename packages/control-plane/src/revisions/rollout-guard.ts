// The rollout guard's judgement: which denied flows a workload on the rollout's revision
// reported had worked before the wave (the same workload saw them allowed or would-deny, first
// seen before the cutoff). Reads flows; must not decide what happens next (rollout.ts does).
import type { RolloutBrokenFlow } from '@bulkhead/api';
import type { FlowDelta, VisibilityStore } from '../visibility/store.js';

/**
 * Distinct denied flows looked up per batch at most: a deny storm (a scan) costs bounded
 * queries, and a broken dependency keeps being reported in later batches anyway.
 */
export const MAX_CHECKED_PER_BATCH = 100;

export function brokenFlows(
  flows: Pick<VisibilityStore, 'queryFlows'>,
  workload: string,
  reported: readonly FlowDelta[],
  cutoff: string,
): RolloutBrokenFlow[] {
  const out = new Map<string, RolloutBrokenFlow>();
  const checked = new Set<string>();
  for (const f of reported) {
    if (f.verdict !== 'denied') continue;
    const key = `${f.direction} ${f.src} ${f.dst} ${f.protocol}/${f.port}`;
    if (checked.has(key)) continue;
    if (checked.size >= MAX_CHECKED_PER_BATCH) break;
    checked.add(key);
    const worked = flows
      .queryFlows({
        match: [{ workloads: [workload], addresses: [] }],
        direction: f.direction,
        protocol: f.protocol,
        port: f.port,
      })
      .some(
        (r) =>
          r.workload === workload &&
          r.src === f.src &&
          r.dst === f.dst &&
          r.verdict !== 'denied' &&
          r.firstSeen < cutoff,
      );
    if (!worked) continue;
    const { direction, src, dst, protocol, port, ruleId } = f;
    out.set(key, { workload, direction, src, dst, protocol, port, ruleId });
  }
  return [...out.values()];
}
