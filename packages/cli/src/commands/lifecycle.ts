// Revisions and the road to them: what the files or the draft would change (diff, plan,
// impact, draft), freezing the draft into a revision (provision), and going back (rollback).
// Only reads, except provision, rollback and draft discard; editing the draft itself is
// policy.ts's.
import type { ImpactView, ObjectChange, ProvisionResult, RevisionDiff } from '@bulkhead/api';
import { type Command, InvalidArgumentError } from 'commander';
import type { Client } from '../client.js';
import { APPLY_ORDER, type ResourceDocument } from '../documents.js';
import { CliError, EXIT_DIFF_CHANGES, EXIT_NEWLY_BLOCKED } from '../errors.js';
import {
  type Change,
  fetchState,
  formatChange,
  labelled,
  PRUNE_ORDER,
  planOne,
  planPrune,
} from '../gitops.js';
import { REVISION_COLUMNS } from '../kinds.js';
import {
  countChanges,
  formatImpact,
  formatImpactSummary,
  formatObjectChange,
  formatRevisionDiff,
} from '../lifecycle-text.js';
import { checkWindow, collect, parseKeys, parsePositiveInt } from './options.js';
import {
  type CommandContext,
  type Connection,
  examples,
  impactChecked,
  listCommand,
  loadValid,
  type Row,
  sinceOption,
} from './shared.js';

interface ImpactOptions {
  since?: string;
  until?: string;
  groupBy?: string[];
}

interface PlanOptions extends ImpactOptions {
  filename: string[];
  prune?: boolean;
}

export function registerLifecycleCommands(program: Command, ctx: CommandContext): void {
  const { io } = ctx;

  /** Prints the changes and the count line; resolves to the number of changes. */
  const printChanges = (changes: Change[]): number => {
    for (const change of changes) io.stdout(formatChange(change));
    const count = (action: Change['action']) => changes.filter((c) => c.action === action).length;
    const changed = changes.length - count('unchanged');
    io.stdout(
      changed === 0
        ? `no changes (${count('unchanged')} unchanged)\n`
        : `${count('create')} to add, ${count('update')} to change, ${count('delete')} to delete, ${count('unchanged')} unchanged\n`,
    );
    return changed;
  };

  program
    .command('diff')
    .description(
      `what apply would change (-f), or between two revisions (--from); exits 0 when nothing, ${EXIT_DIFF_CHANGES} when something differs`,
    )
    .option('-f, --filename <path>', 'YAML or JSON file or directory (repeatable)', collect, [])
    .option('--prune', `also show deletions apply --prune would make`)
    .option('--from <revision>', 'compare revisions: from this one', parsePositiveInt)
    .option(
      '--to <revision|draft>',
      'compare revisions: to this one or the draft (default)',
      parseTo,
    )
    .addHelpText(
      'after',
      examples('bulkhead diff -f policy/ --prune', 'bulkhead diff --from 3 --to 5'),
    )
    .action(
      async (
        opts: { filename: string[]; prune?: boolean; from?: number; to?: string },
        cmd: Command,
      ) => {
        if (opts.from === undefined && opts.to !== undefined) {
          throw new CliError('USAGE', '--to needs --from');
        }
        if (opts.from !== undefined) {
          if (opts.filename.length > 0 || opts.prune) {
            throw new CliError('USAGE', 'diff takes -f [--prune] or --from [--to], not both');
          }
          const conn = await ctx.connect(cmd);
          const answer = await conn.client.request<RevisionDiff>(
            'GET',
            `/v1/revisions/${opts.from}/diff?to=${opts.to ?? 'draft'}`,
          );
          if (answer.objects.length > 0 || answer.workloads.length > 0) {
            ctx.setExitCode(EXIT_DIFF_CHANGES);
          }
          if (conn.format !== 'table') return conn.print(answer);
          io.stdout(formatRevisionDiff(answer));
          return;
        }
        const documents = await loadValid(ctx, opts.filename, 'diff');
        const { client } = await ctx.connect(cmd);
        const changes = await planChanges(client, documents, opts.prune === true);
        if (printChanges(changes) > 0) ctx.setExitCode(EXIT_DIFF_CHANGES);
      },
    );

  program
    .command('plan')
    .description(
      `diff, then which observed flows the files would newly block; exits 0 when none, ${EXIT_NEWLY_BLOCKED} when some`,
    )
    .option('-f, --filename <path>', 'YAML or JSON file or directory (repeatable)', collect, [])
    .option('--prune', 'also judge the deletions apply --prune would make')
    .addOption(sinceOption(ctx, '--since', 'judge flows seen at or after'))
    .addOption(sinceOption(ctx, '--until', 'judge flows seen at or before'))
    .option('--group-by <keys>', 'label keys that make a group (default app,role)', parseKeys)
    .addHelpText('after', examples('bulkhead plan -f policy/ --prune --since 30d'))
    .action(async (opts: PlanOptions, cmd: Command) => {
      const documents = await loadValid(ctx, opts.filename, 'plan');
      checkWindow(opts.since, opts.until);
      const conn = await ctx.connect(cmd);
      const changes = await planChanges(conn.client, documents, opts.prune === true);
      const resources = documents.map((d) => ({ kind: d.kind, name: d.name, ...d.body }));
      // With --prune the files are the whole editable state: the server deletes the rest.
      const target = opts.prune ? { resources, prune: true } : { resources };
      const report = await requestImpact(conn.client, target, opts);
      if (conn.format !== 'table') conn.print(report);
      else {
        printChanges(changes);
        io.stdout(formatImpact(report, ctx.now()));
      }
      if (report.summary.newlyBlocked > 0) ctx.setExitCode(EXIT_NEWLY_BLOCKED);
    });

  program
    .command('impact')
    .description(
      `which observed flows the draft (or a revision) would newly block against what is provisioned; exits ${EXIT_NEWLY_BLOCKED} when some`,
    )
    .option('--revision <n>', 'judge this revision instead of the draft', parsePositiveInt)
    .addOption(sinceOption(ctx, '--since', 'judge flows seen at or after'))
    .addOption(sinceOption(ctx, '--until', 'judge flows seen at or before'))
    .option('--group-by <keys>', 'label keys that make a group (default app,role)', parseKeys)
    .addHelpText('after', examples('bulkhead impact', 'bulkhead impact --revision 3 --since 7d'))
    .action(async (opts: ImpactOptions & { revision?: number }, cmd: Command) => {
      checkWindow(opts.since, opts.until);
      const conn = await ctx.connect(cmd);
      const target = opts.revision === undefined ? 'draft' : { revision: opts.revision };
      const report = await requestImpact(conn.client, target, opts);
      if (conn.format !== 'table') conn.print(report);
      else io.stdout(formatImpact(report, ctx.now()));
      if (report.summary.newlyBlocked > 0) ctx.setExitCode(EXIT_NEWLY_BLOCKED);
    });

  const draft = program
    .command('draft')
    .description('what provision would freeze: the edits since the latest revision')
    .addHelpText('after', examples('bulkhead draft', 'bulkhead draft discard'))
    .action(async (_opts: unknown, cmd: Command) => {
      const conn = await ctx.connect(cmd);
      const answer = await conn.client.request<{ basedOn: number; changes: ObjectChange[] }>(
        'GET',
        '/v1/draft',
      );
      if (conn.format !== 'table') return conn.print(answer);
      const base = answer.basedOn > 0 ? `revision ${answer.basedOn}` : 'no revision yet';
      if (answer.changes.length === 0) return io.stdout(`no changes (based on ${base})\n`);
      for (const change of answer.changes) io.stdout(formatObjectChange(change));
      io.stdout(`${countChanges(answer.changes)} (based on ${base})\n`);
    });
  draft
    .command('discard')
    .description("throw the draft away: policies, services and ip lists as the latest revision's")
    .addHelpText('after', examples('bulkhead draft discard'))
    .action(async (_opts: unknown, cmd: Command) => {
      const conn = await ctx.connect(cmd);
      const answer = await conn.client.request<{ discarded: ObjectChange[] }>(
        'DELETE',
        '/v1/draft',
      );
      if (conn.format !== 'table') return conn.print(answer);
      const discarded = answer?.discarded ?? [];
      for (const change of discarded) io.stdout(formatObjectChange(change, { brief: true }));
      io.stdout(`discarded ${discarded.length} change(s)\n`);
    });

  const printProvision = (conn: Connection, result: ProvisionResult, why: string) => {
    if (conn.format !== 'table') return conn.print(result);
    const changed = result.changed ?? [];
    io.stdout(
      `revision ${result.revision}${why}: ${changed.length} workload(s) changed, ${result.unchanged} unchanged\n`,
    );
    for (const w of changed) io.stdout(`  ${w}\n`);
    if (result.impact) io.stdout(formatImpactSummary(result.impact));
  };

  program
    .command('provision')
    .description('freeze the draft policy into a new revision and push it to the agents')
    .requiredOption('--note <text>', 'why (kept with the revision and in the audit log)')
    .option('--confirm', 'provision even if observed flows would be newly blocked')
    .addHelpText(
      'after',
      examples(
        'bulkhead provision --note "shop segmentation"',
        'bulkhead provision --note "tighten billing" --confirm',
      ),
    )
    .action(async (opts: { note: string; confirm?: boolean }, cmd: Command) => {
      if (opts.note.trim() === '') throw new CliError('USAGE', '--note must not be empty');
      const conn = await ctx.connect(cmd);
      const body = { note: opts.note, ...(opts.confirm ? { confirm: true } : {}) };
      const result = await impactChecked(ctx, conn, 'provision', () =>
        conn.client.request<ProvisionResult>('POST', '/v1/provision', body),
      );
      if (result) printProvision(conn, result, '');
    });

  listCommand(program, ctx, {
    name: 'revisions',
    description: 'provisioned revisions, newest first',
    path: '/v1/revisions',
    columns: REVISION_COLUMNS,
    examples: ['bulkhead revisions'],
  });

  program
    .command('rollback')
    .description(
      "make an older revision's policy the draft again and provision it as a new revision",
    )
    .argument('<revision>', 'the revision number to go back to', parsePositiveInt)
    .requiredOption('--note <text>', 'why (kept with the new revision and in the audit log)')
    .option('--confirm', 'roll back even if observed flows would be newly blocked')
    .addHelpText('after', examples('bulkhead rollback 3 --note "license server outage"'))
    .action(async (n: number, opts: { note: string; confirm?: boolean }, cmd: Command) => {
      if (opts.note.trim() === '') throw new CliError('USAGE', '--note must not be empty');
      const conn = await ctx.connect(cmd);
      const body = { note: opts.note, ...(opts.confirm ? { confirm: true } : {}) };
      const result = await impactChecked(ctx, conn, 'roll back', () =>
        conn.client.request<ProvisionResult>('POST', `/v1/revisions/${n}/rollback`, body),
      );
      if (result) printProvision(conn, result, ` (rollback to ${n})`);
    });
}

/** What apply (with the same --prune) would do, read from the server without writing. */
async function planChanges(
  client: Client,
  documents: ResourceDocument[],
  prune: boolean,
): Promise<Change[]> {
  const kinds = APPLY_ORDER.filter(
    (k) => (prune && PRUNE_ORDER.includes(k)) || documents.some((d) => d.kind === k),
  );
  const state = await fetchState(client, kinds);
  const changes: Change[] = [];
  for (const kind of APPLY_ORDER) {
    for (const doc of documents.filter((d) => d.kind === kind)) {
      changes.push(
        await labelled(doc.kind, doc.name, async () => planOne(doc, state[doc.kind].get(doc.name))),
      );
    }
  }
  if (prune) changes.push(...planPrune(documents, state));
  return changes;
}

/** POST /v1/impact for one target: 'draft', a revision, or resources (with prune). */
async function requestImpact(
  client: Client,
  target: 'draft' | { revision: number } | { resources: Row[]; prune?: boolean },
  opts: ImpactOptions,
): Promise<ImpactView> {
  const body: Row = { target };
  if (opts.since) body.since = opts.since;
  if (opts.until) body.until = opts.until;
  if (opts.groupBy) body.groupBy = opts.groupBy;
  const report = await client.request<ImpactView>('POST', '/v1/impact', body);
  if (!report?.summary || !Array.isArray(report.groups)) {
    throw new CliError('BAD_RESPONSE', 'POST /v1/impact: expected an impact report');
  }
  return report;
}

function parseTo(text: string): string {
  if (text === 'draft' || /^[1-9]\d*$/.test(text)) return text;
  throw new InvalidArgumentError('use a revision number or draft');
}
