// Rendering of the visibility API's answers (flows, map, recommendations). Pure functions:
// the clock comes in as an argument so that output is testable.
import type {
  Coverage,
  EdgePolicy,
  Endpoint,
  FlowVerdict,
  FlowView,
  MapEdge,
  MapNode,
  MapView,
} from '@bulkhead/api';
import type { Policy, Selector } from '@bulkhead/policy';
import { InvalidArgumentError } from 'commander';
import { align, type Column, cell, toYamlText } from './output.js';

// The tests read the answers through these names.

export const FLOW_VERDICTS: readonly FlowVerdict[] = ['allowed', 'denied', 'would-deny'];

/**
 * One wording for the default deny (no rule allows the flow) in every text view: flows (verdict
 * `would-deny`, rule `default`), map (`not-covered`) and impact (rule `no rule`). JSON output
 * keeps the API's values.
 */
export const DEFAULT_DENY = 'default: no rule allows it';
export const DEFAULT_WOULD_DENY = `would-deny (${DEFAULT_DENY})`;
const defaultWouldDeny = (f: FlowView) => f.verdict === 'would-deny' && f.ruleId === 'default';

/**
 * One name for one thing: an end that no policy selects in a direction, so that a flow the
 * other end allows still passes only by monitor mode there (flows, map and explain say it so).
 */
export const noPolicyText = (who: string, direction: string) =>
  `${who}'s ${direction} has no policy`;

/** `would-deny (web's egress has no policy)`, or the default deny's words when every end has a policy. */
export const wouldDenyText = (gaps: string[]) =>
  gaps.length > 0 ? `would-deny (${gaps.join('; ')})` : DEFAULT_WOULD_DENY;

/** A flow's verdict as its reporter recorded it, and the ends the provisioned policy leaves without one. */
function flowVerdictText(f: FlowView): string {
  const gaps = (f.noPolicy ?? []).map((e) => noPolicyText(e.workload, e.direction));
  if (!defaultWouldDeny(f))
    return gaps.length > 0 ? `${f.verdict} (${gaps.join('; ')})` : f.verdict;
  const own = f.noPolicy?.some((e) => e.workload === f.reportedBy && e.direction === f.direction);
  return own ? wouldDenyText(gaps) : [DEFAULT_WOULD_DENY, ...gaps].join('; ');
}

const UNIT_MS: Record<string, number> = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 };

/**
 * An option parser for points in time: `30m`, `24h`, `7d` mean that long before `now()`;
 * anything else must be a date or date-time Date.parse understands. Yields ISO strings.
 */
export function timeOption(now: () => Date): (text: string) => string {
  return (text) => {
    const m = /^(\d+)([smhd])$/.exec(text.trim());
    if (m) return new Date(now().getTime() - Number(m[1]) * UNIT_MS[m[2]!]!).toISOString();
    // Date.parse accepts loose forms ("1", "May 5"); insist on something ISO-shaped.
    const ms = /^\d{4}-\d{2}-\d{2}/.test(text) ? Date.parse(text) : Number.NaN;
    if (Number.isNaN(ms)) {
      throw new InvalidArgumentError('use a duration such as 30m, 24h, 7d or an ISO date-time');
    }
    return new Date(ms).toISOString();
  };
}

/** `2m ago`: the largest whole unit, as kubectl's AGE column. */
export function formatAge(iso: string, now: Date): string {
  const ms = now.getTime() - Date.parse(iso);
  if (Number.isNaN(ms)) return iso;
  if (ms < 1000) return 'just now';
  for (const unit of ['d', 'h', 'm', 's']) {
    const n = Math.floor(ms / UNIT_MS[unit]!);
    if (n >= 1) return `${n}${unit} ago`;
  }
  return 'just now';
}

/** `tcp/5432`; protocols without ports (icmp) alone. */
export function formatService(protocol: string, port: number): string {
  return port > 0 ? `${protocol}/${port}` : protocol;
}

/** A workload by name; anything else by address, with the IP lists that hold it. */
export function formatEndpoint(e: Endpoint): string {
  if (e.workload) return e.workload;
  return e.ipLists && e.ipLists.length > 0 ? `${e.address}[${e.ipLists.join(',')}]` : e.address;
}

export function flowColumns(now: Date): Column<FlowView>[] {
  return [
    { header: 'SRC', value: (f) => formatEndpoint(f.src) },
    { header: 'DST', value: (f) => formatEndpoint(f.dst) },
    { header: 'PROTO/PORT', value: (f) => formatService(f.protocol, f.port) },
    // Both ends of a flow may report it, each deciding with its own policy and mode.
    {
      header: 'SEEN BY',
      value: (f) => `${f.reportedBy} ${f.direction === 'ingress' ? 'in' : 'out'}`,
    },
    { header: 'VERDICT', value: flowVerdictText },
    { header: 'RULE', value: (f) => (defaultWouldDeny(f) ? '-' : f.ruleId) },
    { header: 'CONNECTIONS', value: (f) => f.connections },
    { header: 'LAST SEEN', value: (f) => formatAge(f.lastSeen, now) },
  ];
}

function nodeText(id: string, node: MapNode | undefined): string {
  if (!node) return id;
  if (node.kind !== 'group') return id;
  const labels = cell(node.labels ?? {});
  return labels === '-' ? node.name : `${node.name}(${labels})`;
}

/**
 * One line per edge, lines of one source together and groups apart by a blank line, columns
 * aligned across the whole map so that ports and verdicts line up on a terminal.
 */
export function formatMap(view: MapView, now: Date): string {
  const nodes = new Map(view.nodes.map((n) => [n.id, n]));
  // The source's egress, the destination's ingress.
  const edgeGaps = (e: MapEdge) =>
    (e.noPolicy ?? []).map((d) =>
      noPolicyText(
        nodeText(d === 'egress' ? e.from : e.to, nodes.get(d === 'egress' ? e.from : e.to)),
        d,
      ),
    );
  const rows = view.edges.map((e) => ({
    from: nodeText(e.from, nodes.get(e.from)),
    cells: [
      `-> ${nodeText(e.to, nodes.get(e.to))}`,
      formatService(e.protocol, e.port),
      `${e.connections} conn${e.connections === 1 ? '' : 's'}`,
      `last ${formatAge(e.lastSeen, now)}`,
      `[${e.policy === 'not-covered' ? wouldDenyText(edgeGaps(e)) : e.policy}]`,
    ],
    order: `${e.to}\0${e.protocol}\0${String(e.port).padStart(5, '0')}`,
  }));
  if (rows.length === 0) return 'no flows observed\n';
  rows.sort((a, b) => compare(a.from, b.from) || compare(a.order, b.order));
  const lines = align(rows.map((r) => [r.from, ...r.cells]));
  const out: string[] = [];
  rows.forEach((r, i) => {
    if (i > 0 && rows[i - 1]!.from !== r.from) out.push('');
    out.push(lines[i]!);
  });
  return `${out.join('\n')}\n`;
}

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

const SHAPES: Record<MapNode['kind'], string> = {
  group: 'box',
  'ip-list': 'folder',
  external: 'ellipse',
};

const EDGE_STYLES: Record<EdgePolicy, string> = {
  allowed: 'color="green"',
  denied: 'color="red"',
  'would-deny': 'color="orange"',
  'not-covered': 'color="grey", style="dashed"',
};

/** A DOT double-quoted string: only `"` and `\` need escaping; newlines become `\n`. */
function quote(text: string): string {
  return `"${text.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\r?\n/g, '\\n')}"`;
}

/** Graphviz DOT of the map; every id and label is quoted, so any name is safe. */
export function toDot(view: MapView): string {
  const lines = ['digraph bulkhead {', '  rankdir=LR;', '  node [fontname="Helvetica"];'];
  const known = new Set<string>();
  for (const n of view.nodes) {
    known.add(n.id);
    const labels = Object.entries(n.labels ?? {}).map(([k, v]) => `${k}=${v}`);
    // Lines joined after quoting each, so that `\n` stays a DOT line break, not user text.
    const label = [n.name, ...labels].map((t) => quote(t).slice(1, -1)).join('\\n');
    lines.push(`  ${quote(n.id)} [label="${label}", shape=${SHAPES[n.kind] ?? 'ellipse'}];`);
  }
  for (const e of view.edges) {
    for (const id of [e.from, e.to]) {
      if (known.has(id)) continue;
      known.add(id);
      lines.push(`  ${quote(id)};`);
    }
    const style = EDGE_STYLES[e.policy] ?? 'color="black"';
    lines.push(
      `  ${quote(e.from)} -> ${quote(e.to)} [label=${quote(formatService(e.protocol, e.port))}, ${style}];`,
    );
  }
  lines.push('}');
  return `${lines.join('\n')}\n`;
}

/** `app=shop,role=db` -> matchLabels; the flag's value is a plain label match. */
export function parseScope(text: string): Selector {
  const matchLabels: Record<string, string> = {};
  for (const term of text.split(',')) {
    const eq = term.indexOf('=');
    if (eq <= 0) throw new InvalidArgumentError('use k=v[,k=v]');
    matchLabels[term.slice(0, eq).trim()] = term.slice(eq + 1).trim();
  }
  return { matchLabels };
}

/** Proposed policies as `---`-separated documents that `bulkhead apply -f` accepts. */
export function formatPolicies(policies: Policy[]): string {
  return policies.map((p) => toYamlText({ kind: 'Policy', ...p })).join('---\n');
}

/** Percent rounded down, so that 100% means every observed flow, not 99.6% of them. */
export function formatCoverage(c: Coverage): string {
  const pct = (n: number) => (c.observed === 0 ? 'n/a' : `${Math.floor((n / c.observed) * 100)}%`);
  return (
    `coverage: ${c.allowedWithProposal}/${c.observed} observed flows allowed ` +
    `(${pct(c.allowedWithProposal)}); by current policy: ${c.allowedByCurrent}/${c.observed}\n`
  );
}

/** One line per observed flow the proposal would still not allow. */
export function formatUncovered(flows: FlowView[]): string {
  if (flows.length === 0) return '';
  const lines = flows.map(
    (f) =>
      `  ${formatEndpoint(f.src)} -> ${formatEndpoint(f.dst)} ${formatService(f.protocol, f.port)}` +
      ` (${f.connections} conns, ${f.verdict})`,
  );
  return `not allowed by the proposal:\n${lines.join('\n')}\n`;
}
