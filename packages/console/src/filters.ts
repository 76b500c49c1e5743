// The console's filters as pure functions: time windows become the API's `since`, a label filter
// (`app=shop,role=db`) selects map nodes and flows. No DOM and no I/O, so tests need no browser.
import type { EdgePolicy, MapEdge, MapNode, MapView } from '@bulkhead/api';

export const WINDOWS = [
  { id: '1h', label: 'last hour', ms: 3_600_000 },
  { id: '24h', label: 'last 24 hours', ms: 86_400_000 },
  { id: '7d', label: 'last 7 days', ms: 7 * 86_400_000 },
  { id: '30d', label: 'last 30 days', ms: 30 * 86_400_000 },
  { id: 'all', label: 'all kept', ms: 0 },
] as const;
export type WindowId = (typeof WINDOWS)[number]['id'];

/** The `since` of a window ending at `now`, or undefined for everything kept. */
export function sinceOf(id: WindowId, now: Date): string | undefined {
  const ms = WINDOWS.find((w) => w.id === id)?.ms ?? 0;
  return ms === 0 ? undefined : new Date(now.getTime() - ms).toISOString();
}

/** A query string of the defined values, each encoded. */
export function query(params: Record<string, string | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, v);
  const s = q.toString();
  return s === '' ? '' : `?${s}`;
}

/** `app=shop, role` -> [['app','shop'], ['role', undefined]]: key=value, or a key that must exist. */
export function parseLabelFilter(text: string): [string, string | undefined][] {
  return text
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '')
    .map((t) => {
      const i = t.indexOf('=');
      return i < 0 ? [t, undefined] : [t.slice(0, i).trim(), t.slice(i + 1).trim()];
    });
}

export function matchesLabels(
  labels: Record<string, string> | undefined,
  filter: [string, string | undefined][],
): boolean {
  return filter.every(
    ([k, v]) => labels?.[k] !== undefined && (v === undefined || labels[k] === v),
  );
}

/** The map reduced to edges touching a node the filter selects, and the nodes of those edges. */
export function filterMap(
  view: MapView,
  labelFilter: string,
): { nodes: MapNode[]; edges: MapEdge[] } {
  const filter = parseLabelFilter(labelFilter);
  if (filter.length === 0) return { nodes: view.nodes, edges: view.edges };
  const picked = new Set(
    view.nodes.filter((n) => matchesLabels(n.labels, filter)).map((n) => n.id),
  );
  const edges = view.edges.filter((e) => picked.has(e.from) || picked.has(e.to));
  const keep = new Set([...picked, ...edges.flatMap((e) => [e.from, e.to])]);
  return { nodes: view.nodes.filter((n) => keep.has(n.id)), edges };
}

/** Worst first, as the control plane merges verdicts of coarser groups. */
const SEVERITY: readonly EdgePolicy[] = ['denied', 'would-deny', 'not-covered', 'allowed'];

export interface EdgePair {
  from: string;
  to: string;
  /** The worst policy of its edges: one red service makes the line red. */
  policy: EdgePolicy;
  edges: MapEdge[];
}

/** One line per (from, to): the map draws pairs, the table below it every service. */
export function pairEdges(edges: MapEdge[]): EdgePair[] {
  const pairs = new Map<string, EdgePair>();
  for (const e of edges) {
    const key = `${e.from}\n${e.to}`;
    const p = pairs.get(key) ?? { from: e.from, to: e.to, policy: e.policy, edges: [] };
    if (SEVERITY.indexOf(e.policy) < SEVERITY.indexOf(p.policy)) p.policy = e.policy;
    p.edges.push(e);
    pairs.set(key, p);
  }
  return [...pairs.values()];
}
