// Rendering of the policy questions' answers: `POST /v1/explain` (and parsing its
// `<proto>/<port>` argument) and `GET /v1/hygiene` as a table or CSV. Pure.
import type {
  ExplainEnd,
  ExplainPair,
  ExplainSide,
  ExplainView,
  HygieneFinding,
  HygieneView,
} from '@bulkhead/api';
import { InvalidArgumentError } from 'commander';
import { align, type Column, table } from './output.js';
import { noPolicyText, wouldDenyText } from './visibility-text.js';

/** `tcp/5432`, `udp/53`, `icmp`, `47` -> `{protocol, port?}`. */
export function parseService(text: string): { protocol: string; port?: number } {
  const m = /^([a-z][a-z0-9]*|\d{1,3})(?:\/(\d{1,5}))?$/i.exec(text.trim());
  const port = m?.[2] === undefined ? undefined : Number(m[2]);
  if (!m || (port !== undefined && port > 65535)) {
    throw new InvalidArgumentError('use <protocol>/<port> such as tcp/5432, udp/53 or icmp');
  }
  return port === undefined
    ? { protocol: m[1]!.toLowerCase() }
    : { protocol: m[1]!.toLowerCase(), port };
}

const sideName = (s: ExplainSide) =>
  s.state === 'draft' ? 'draft' : `${s.state} (revision ${s.revision})`;

/** The reason, and for a deny what the end's mode does with it. */
function endText(end: ExplainEnd): string {
  if (end.action === 'allow') return end.reason;
  return `${end.reason} (${end.mode === 'enforce' ? 'enforce: dropped' : 'monitor: let through'})`;
}

/** The pair's verdict in the words flows and map use: a default deny let through is a would-deny. */
function verdictText(pair: ExplainPair): string {
  if (pair.verdict !== 'not-covered') return pair.verdict;
  if (pair.ends.length === 0) return 'no policy applies (no workload at either end)';
  const gaps = pair.ends.filter(
    (e) => e.action === 'deny' && e.ruleId === undefined && e.policies.length === 0,
  );
  return wouldDenyText(gaps.map((e) => noPolicyText(e.workload, e.direction)));
}

const endpoint = (e: ExplainPair['src']) =>
  e.workload === undefined ? e.address : `${e.workload} (${e.address})`;

/**
 * Per pair of endpoints, a block: the pair and service, then one column per side (provisioned,
 * draft, or the one asked for) with the verdict, why, and the reason at each workload end.
 */
export function formatExplain(view: ExplainView): string {
  const service = view.port > 0 ? `${view.protocol}/${view.port}` : view.protocol;
  const blocks = view.sides[0]!.pairs.map((first, i) => {
    const pairs = view.sides.map((s) => s.pairs[i]!);
    const rows: string[][] = [
      ['', ...view.sides.map((s) => sideName(s).toUpperCase())],
      ['verdict', ...pairs.map(verdictText)],
      ['why', ...pairs.map((p) => p.summary)],
    ];
    // Every side has the same ends: they are the workloads owning the two addresses.
    first.ends.forEach((end, j) => {
      rows.push([`${end.workload} ${end.direction}`, ...pairs.map((p) => endText(p.ends[j]!))]);
    });
    const lines = align(rows).map((line) => `  ${line}\n`);
    return `${endpoint(first.src)} -> ${endpoint(first.dst)}  ${service}\n${lines.join('')}`;
  });
  const more = view.truncated ? 'more workload pairs match; name workloads to see them\n' : '';
  return blocks.join('\n') + more;
}

const FINDING_COLUMNS: Column<HygieneFinding>[] = [
  { header: 'KIND', value: (f) => f.kind },
  { header: 'SUBJECT', value: (f) => f.subject },
  { header: 'DETAIL', value: (f) => f.detail },
  { header: 'FIX', value: (f) => f.fix },
];

export function formatHygiene(view: HygieneView): string {
  const head = `policy audit of revision ${view.revision}, flows of the last ${view.days} days: ${view.findings.length} finding(s)\n`;
  return view.findings.length === 0 ? head : head + table(view.findings, FINDING_COLUMNS);
}

/** CSV as RFC 4180 has it (every field quoted, quotes doubled), but LF line ends: every byte
 * the CLI writes goes through the control escape, which would show a CR as `\x0d`. */
export function hygieneCsv(view: HygieneView): string {
  const field = (text: string) => `"${text.replace(/"/g, '""')}"`;
  const rows = [
    FINDING_COLUMNS.map((c) => c.header.toLowerCase()),
    ...view.findings.map((f) => FINDING_COLUMNS.map((c) => String(c.value(f)))),
  ];
  return rows.map((r) => `${r.map(field).join(',')}\n`).join('');
}
