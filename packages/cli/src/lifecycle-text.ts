// Rendering of the policy lifecycle API's answers (impact, draft, revision diff). Pure
// functions: the clock comes in as an argument so that output is testable.
import type {
  ImpactChange,
  ImpactGroupView,
  ImpactRuleRef,
  ImpactView,
  ObjectChange,
  RevisionDiff,
  WorkloadEffect,
} from '@bulkhead/api';
import { type Change, formatChange, toDocumentBody } from './gitops.js';
import { align } from './output.js';
import { DEFAULT_DENY, formatAge, formatService, noPolicyText } from './visibility-text.js';

type Row = Record<string, unknown>;

// The tests name the impact answer as the CLI did before @bulkhead/api.

/** `impact: 2 newly blocked, 1 newly allowed, 3 still would-deny (of 12 observed flows)`. */
export function formatImpactSummary(report: ImpactView): string {
  const s = report.summary;
  return `impact: ${s.newlyBlocked} newly blocked, ${s.newlyAllowed} newly allowed, ${s.stillWouldDeny} still would-deny (of ${s.flows} observed flows)\n`;
}

/** The rule id the server gives a default deny (JSON keeps it; the text says DEFAULT_DENY). */
const NO_RULE = 'no rule';
const CHANGE_WORDS: Record<ImpactChange, string> = {
  'newly-blocked': 'BLOCKED',
  'newly-allowed': 'ALLOWED',
  'still-would-deny': 'WOULD-DENY',
};
// What an admin must look at first: the outage, then what opens up, then what stays as it was.
const CHANGE_RANK: Record<ImpactChange, number> = {
  'newly-blocked': 0,
  'newly-allowed': 1,
  'still-would-deny': 2,
};

/**
 * What decides a group at its explaining ends: the rules, the default deny in DEFAULT_DENY's
 * words, or, where no policy selects the end, `web's egress has no policy` as flows and map say it.
 */
function decidedText(g: ImpactGroupView): string {
  const gap = (r: ImpactRuleRef) =>
    g.noPolicy?.some((e) => e.workload === r.workload && e.direction === r.direction);
  const words = (r: ImpactRuleRef) =>
    r.ruleId !== NO_RULE ? r.ruleId : gap(r) ? noPolicyText(r.workload, r.direction) : DEFAULT_DENY;
  return [...new Set((g.rules ?? []).map(words))].join(', ') || DEFAULT_DENY;
}

/**
 * The summary line, then one aligned line per group, newly blocked first:
 * `BLOCKED  app=billing,role=app -> ip-list:license-servers  tcp/27000  4 conns  last 6d ago  (default: no rule allows it)`.
 */
export function formatImpact(report: ImpactView, now: Date): string {
  const groups = [...report.groups].sort((a, b) => CHANGE_RANK[a.change] - CHANGE_RANK[b.change]);
  const rows = groups.map((g) => [
    CHANGE_WORDS[g.change] ?? g.change,
    `${g.src} -> ${g.dst}`,
    formatService(g.protocol, g.port),
    `${g.connections} conn${g.connections === 1 ? '' : 's'}`,
    g.lastSeen ? `last ${formatAge(g.lastSeen, now)}` : 'last -',
    `(${decidedText(g)})`,
  ]);
  const lines = align(rows).map((l) => `${l}\n`);
  return formatImpactSummary(report) + lines.join('');
}

const ACTIONS: Record<ObjectChange['change'], Change['action']> = {
  added: 'create',
  changed: 'update',
  removed: 'delete',
};

/**
 * A server ObjectChange as `diff` prints a Change: `+`, `~` with a unified diff (the header
 * line alone when `brief`), `-`.
 */
export function formatObjectChange(
  change: ObjectChange,
  options: { brief?: boolean } = {},
): string {
  // Policy's objects are the very rows the server stores, so they read as documents.
  const body = (o: object | undefined) => (o ? toDocumentBody(change.kind, o as Row) : undefined);
  const text = formatChange({
    kind: change.kind,
    name: change.name,
    action: ACTIONS[change.change],
    before: body(change.before),
    after: body(change.after),
    fields: change.fields ?? [],
  });
  return options.brief ? `${text.split('\n')[0]}\n` : text;
}

/** `1 added, 2 changed, 0 removed`. */
export function countChanges(changes: readonly { change: ObjectChange['change'] }[]): string {
  const n = (c: ObjectChange['change']) => changes.filter((x) => x.change === c).length;
  return `${n('added')} added, ${n('changed')} changed, ${n('removed')} removed`;
}

/** `~ db-1  rules +shop-db/ingress/1 -old/ingress/0  entries +4 -2`. */
export function formatWorkloadEffect(e: WorkloadEffect): string {
  const sign = { added: '+', changed: '~', removed: '-' }[e.change] ?? '?';
  const rules = [
    ...(e.rulesAdded ?? []).map((r) => `+${r}`),
    ...(e.rulesRemoved ?? []).map((r) => `-${r}`),
  ];
  const parts = [`${sign} workload/${e.workload}`];
  if (rules.length > 0) parts.push(`rules ${rules.join(' ')}`);
  parts.push(`entries +${e.entriesAdded ?? 0} -${e.entriesRemoved ?? 0}`);
  return `${parts.join('  ')}\n`;
}

/** Objects (as `diff` prints them), then what that does to each workload's rule set. */
export function formatRevisionDiff(diff: RevisionDiff): string {
  const to = diff.to === 'draft' ? 'the draft' : `revision ${diff.to}`;
  const head = `revision ${diff.from} -> ${to}`;
  if (diff.objects.length === 0 && diff.workloads.length === 0) return `${head}: no changes\n`;
  const out = [`${head}: ${countChanges(diff.objects)}\n`];
  out.push(...diff.objects.map((o) => formatObjectChange(o)));
  if (diff.workloads.length > 0) {
    out.push(`${diff.workloads.length} workload(s) affected:\n`);
    out.push(...diff.workloads.map(formatWorkloadEffect));
  }
  return out.join('');
}
