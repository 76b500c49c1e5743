// A staged rollout's waves: the canary (the workloads a label selector picks, or a share of the
// workloads) and the rest split into waves. Deterministic: the same workloads and seed give the
// same waves, in an order no label or name pattern decides. Pure; must not read or write state.
import { createHash } from 'node:crypto';
import { matchesSelector, type Selector, type Workload } from '@bulkhead/policy';
import { invalid } from '../errors.js';

export interface WavePlan {
  /** The canary's selector; without it `percent` of the workloads (at least one). */
  canary?: Selector;
  percent: number;
  /** Waves after the canary. */
  waves: number;
  /** Makes the order (and so the share) differ between rollouts: the revision number. */
  seed: string;
}

/** `k=v[,k=v]` as a selector, or a 400 naming `canary`. */
export function parseCanary(text: string): Selector {
  const matchLabels: Record<string, string> = {};
  for (const part of text.split(',')) {
    const m = /^([^=\s]+)=([^=\s]*)$/.exec(part.trim());
    if (!m) throw invalid('invalid canary', [{ path: 'canary', message: 'must be k=v[,k=v]' }]);
    matchLabels[m[1]!] = m[2]!;
  }
  return { matchLabels };
}

/** Wave 0 is the canary; empty waves are left out. Refuses a canary that selects nothing. */
export function planWaves(workloads: readonly Workload[], plan: WavePlan): string[][] {
  const rank = (name: string) => createHash('sha256').update(`${plan.seed}\0${name}`).digest('hex');
  const ordered = workloads
    .map((w) => ({ w, key: rank(w.name) }))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    .map((e) => e.w);
  const canary = plan.canary
    ? ordered.filter((w) => matchesSelector(plan.canary!, w.labels))
    : ordered.slice(0, Math.max(1, Math.ceil((ordered.length * plan.percent) / 100)));
  if (canary.length === 0) {
    throw invalid('the canary selects no workload', [
      { path: plan.canary ? 'canary' : '', message: 'selects no workload' },
    ]);
  }
  const picked = new Set(canary.map((w) => w.name));
  const rest = ordered.filter((w) => !picked.has(w.name)).map((w) => w.name);
  const size = Math.ceil(rest.length / plan.waves);
  const waves = [canary.map((w) => w.name).sort()];
  for (let i = 0; i < rest.length; i += size) waves.push(rest.slice(i, i + size).sort());
  return waves;
}
