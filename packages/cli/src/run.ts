import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type {
  FlowView,
  ImpactView,
  MapView,
  ObjectChange,
  ProvisionResult,
  Recommendation,
  RevisionDiff,
} from '@bulkhead/api';
import type { Selector } from '@bulkhead/policy';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { type Client, createClient } from './client.js';
import { type Env, resolveConnection, saveConfig } from './config.js';
import {
  APPLY_ORDER,
  formatDiagnostic,
  loadDocuments,
  type ResourceDocument,
  type ResourceKind,
} from './documents.js';
import { CliError, EXIT_DIFF_CHANGES, EXIT_NEWLY_BLOCKED, exitCodeFor } from './errors.js';
import {
  type Change,
  canonical,
  fetchState,
  formatChange,
  formatDocuments,
  KIND_FACTS,
  label,
  objectPath,
  PRUNE_ORDER,
  planOne,
  planPrune,
  type ServerState,
} from './gitops.js';
import {
  AGENT_COLUMNS,
  AUDIT_COLUMNS,
  COUNTER_COLUMNS,
  itemPath,
  type KindInfo,
  lookupKind,
  REVISION_COLUMNS,
  shortId,
} from './kinds.js';
import {
  countChanges,
  formatImpact,
  formatImpactSummary,
  formatObjectChange,
  formatRevisionDiff,
} from './lifecycle.js';
import { OUTPUT_FORMATS, type OutputFormat, render, table } from './output.js';
import { validators } from './validate.js';
import {
  FLOW_VERDICTS,
  flowColumns,
  formatCoverage,
  formatMap,
  formatPolicies,
  formatUncovered,
  parseScope,
  timeOption,
  toDot,
} from './visibility.js';

/** Where a run writes and what it reads from its environment; tests pass their own. */
export interface Io {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Defaults to `process.env`. */
  env?: Env;
  /** The clock for `--since 24h` and `2m ago`; defaults to the system clock. */
  now?: () => Date;
}

type Row = Record<string, unknown>;

/** Runs `bulkhead` with `argv` (without node and script), resolving to the exit code. */
export async function run(argv: string[], io: Io): Promise<number> {
  const outcome = { exitCode: 0 };
  const program = buildProgram(io, io.env ?? process.env, outcome);
  try {
    await program.parseAsync(exportOutputDir(argv), { from: 'user' });
    return outcome.exitCode;
  } catch (err) {
    // Commander has already printed its own message (usage errors, help).
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    io.stderr(describeError(err));
    return exitCodeFor(err);
  }
}

function describeError(err: unknown): string {
  if (!(err instanceof CliError)) {
    return `error: ${err instanceof Error ? err.message : String(err)}\n`;
  }
  const status = err.status === undefined ? '' : ` (${err.code}, HTTP ${err.status})`;
  const lines = [`error: ${err.message}${status}`];
  for (const d of err.details) lines.push(`  ${d.path || '(request)'}: ${d.message}`);
  return `${lines.join('\n')}\n`;
}

interface Context {
  client: Client;
  format: OutputFormat;
  print: (value: unknown, columns?: KindInfo['columns']) => void;
}

/** Global options that take a value: the command word is the first argument after them. */
const GLOBAL_VALUE_OPTIONS = new Set(['--server', '--token', '-o', '--output']);

/**
 * `export -o DIR` is what people type, but commander reads a program option wherever it
 * appears, so the global `-o table|json|yaml` would claim it. After the `export` word, `-o`
 * becomes `--output-dir`.
 */
function exportOutputDir(argv: string[]): string[] {
  let i = 0;
  while (i < argv.length && argv[i]!.startsWith('-') && argv[i] !== '--') {
    i += GLOBAL_VALUE_OPTIONS.has(argv[i]!) ? 2 : 1;
  }
  if (argv[i] !== 'export') return argv;
  const rest = argv.slice(i + 1);
  const end = rest.indexOf('--');
  return [
    ...argv.slice(0, i + 1),
    ...rest.map((a, j) => {
      if (end >= 0 && j > end) return a;
      if (a === '-o') return '--output-dir';
      if (/^-o.+/.test(a)) return `--output-dir=${a.slice(a[2] === '=' ? 3 : 2)}`;
      return a;
    }),
  ];
}

function buildProgram(io: Io, env: Env, outcome: { exitCode: number }): Command {
  const program = new Command('bulkhead')
    .description('Admin command of the Bulkhead control plane')
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
    .showSuggestionAfterError(true)
    .option('--server <url>', 'control plane URL (env BULKHEAD_SERVER)')
    .option('--token <token>', 'API token (env BULKHEAD_TOKEN)')
    .addOption(
      new Option('-o, --output <format>', 'output format').choices(OUTPUT_FORMATS).default('table'),
    );

  const globals = (cmd: Command) =>
    cmd.optsWithGlobals() as { server?: string; token?: string; output: OutputFormat };

  const context = async (cmd: Command): Promise<Context> => {
    const opts = globals(cmd);
    const client = createClient(await resolveConnection(opts, env));
    return {
      client,
      format: opts.output,
      print: (value, columns) => io.stdout(render(value, opts.output, columns)),
    };
  };

  program
    .command('login')
    .description('check a token against the server and store both in the config file')
    .option('--token-file <file>', 'read the token from a file')
    .action(async (opts: { tokenFile?: string }, cmd: Command) => {
      const g = globals(cmd);
      const server = g.server || env.BULKHEAD_SERVER;
      let token = g.token;
      if (!token && opts.tokenFile) token = (await readFileOrUsage(opts.tokenFile)).trim();
      token ||= env.BULKHEAD_TOKEN;
      if (!server || !token) throw new CliError('USAGE', 'login needs --server and --token');
      await createClient({ server, token }).request('GET', '/v1/workloads');
      const path = await saveConfig(env, { server, token });
      io.stdout(`logged in to ${server}; saved ${path}\n`);
    });

  const now = io.now ?? (() => new Date());
  const parseTime = timeOption(now);
  const sinceOption = (flag: string, what: string) =>
    new Option(
      `${flag} <time>`,
      `${what}: a duration back from now (30m, 24h, 7d) or ISO`,
    ).argParser(parseTime);

  const loadValid = async (paths: string[], command: string): Promise<ResourceDocument[]> => {
    if (paths.length === 0) throw new CliError('USAGE', `${command} needs -f FILE|DIR`);
    const { documents, diagnostics } = await loadDocuments(paths);
    if (diagnostics.length > 0) {
      for (const d of diagnostics) io.stderr(`${formatDiagnostic(d)}\n`);
      throw new CliError(
        'INVALID_INPUT',
        `${diagnostics.length} problem(s) in the input files; nothing was sent`,
      );
    }
    return documents;
  };
  const pruneHelp = 'also delete policies, services and ip lists no file defines (never workloads)';

  program
    .command('apply')
    .description('validate resource files locally, then create or update them')
    .option('-f, --filename <path>', 'YAML or JSON file or directory (repeatable)', collect, [])
    .option('--prune', pruneHelp)
    .action(async (opts: { filename: string[]; prune?: boolean }, cmd: Command) => {
      const documents = await loadValid(opts.filename, 'apply');
      // An empty or mistyped directory must not wipe the server's policy.
      if (opts.prune && documents.length === 0) {
        throw new CliError('USAGE', '--prune with no documents would delete everything; refusing');
      }
      const { client } = await context(cmd);
      for (const kind of APPLY_ORDER) {
        for (const doc of documents.filter((d) => d.kind === kind)) {
          const change = await labelled(doc.kind, doc.name, async () => {
            const path = objectPath(doc.kind, doc.name);
            // An identical object is not written: no audit entry, no draft change.
            const current = (await getOrUndefined(client, path)) as Row | undefined;
            const planned = planOne(doc, current);
            if (planned.action === 'unchanged') return planned;
            // Written only if still what the decision was made on: no silent lost update.
            await client.request(doc.kind === 'Workload' ? 'PATCH' : 'PUT', path, doc.body, {
              ifMatch: versionOf(current),
            });
            return planned;
          });
          io.stdout(`${label(doc.kind, doc.name)} ${OUTCOME_WORDS[change.action]}\n`);
        }
      }
      if (!opts.prune) return;
      // Listed after the writes, so that nothing just created can look unknown.
      const state = await fetchState(client, PRUNE_ORDER);
      for (const change of planPrune(documents, state)) {
        await labelled(change.kind, change.name, () =>
          client.request('DELETE', objectPath(change.kind, change.name), undefined, {
            ifMatch: versionOf(state[change.kind].get(change.name)),
          }),
        );
        io.stdout(`${label(change.kind, change.name)} deleted\n`);
      }
    });

  /** What apply (with the same --prune) would do, read from the server without writing. */
  const planChanges = async (
    client: Client,
    documents: ResourceDocument[],
    prune: boolean,
  ): Promise<Change[]> => {
    const kinds = APPLY_ORDER.filter(
      (k) => (prune && PRUNE_ORDER.includes(k)) || documents.some((d) => d.kind === k),
    );
    const state: ServerState = await fetchState(client, kinds);
    const changes: Change[] = [];
    for (const kind of APPLY_ORDER) {
      for (const doc of documents.filter((d) => d.kind === kind)) {
        changes.push(
          await labelled(doc.kind, doc.name, async () =>
            planOne(doc, state[doc.kind].get(doc.name)),
          ),
        );
      }
    }
    if (prune) changes.push(...planPrune(documents, state));
    return changes;
  };

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
          const ctx = await context(cmd);
          const answer = await ctx.client.request<RevisionDiff>(
            'GET',
            `/v1/revisions/${opts.from}/diff?to=${opts.to ?? 'draft'}`,
          );
          if (answer.objects.length > 0 || answer.workloads.length > 0) {
            outcome.exitCode = EXIT_DIFF_CHANGES;
          }
          if (ctx.format !== 'table') return ctx.print(answer);
          io.stdout(formatRevisionDiff(answer));
          return;
        }
        const documents = await loadValid(opts.filename, 'diff');
        const { client } = await context(cmd);
        const changes = await planChanges(client, documents, opts.prune === true);
        if (printChanges(changes) > 0) outcome.exitCode = EXIT_DIFF_CHANGES;
      },
    );

  program
    .command('plan')
    .description(
      `diff, then which observed flows the files would newly block; exits 0 when none, ${EXIT_NEWLY_BLOCKED} when some`,
    )
    .option('-f, --filename <path>', 'YAML or JSON file or directory (repeatable)', collect, [])
    .option('--prune', `also show deletions apply --prune would make`)
    .addOption(sinceOption('--since', 'judge flows seen at or after'))
    .addOption(sinceOption('--until', 'judge flows seen at or before'))
    .option('--group-by <keys>', 'label keys that make a group (default app,role)', parseKeys)
    .action(async (opts: PlanOptions, cmd: Command) => {
      const documents = await loadValid(opts.filename, 'plan');
      checkWindow(opts.since, opts.until);
      const ctx = await context(cmd);
      const changes = await planChanges(ctx.client, documents, opts.prune === true);
      const resources = documents.map((d) => ({ kind: d.kind, name: d.name, ...d.body }));
      const report = await requestImpact(ctx.client, { resources }, opts);
      if (ctx.format !== 'table') ctx.print(report);
      else {
        printChanges(changes);
        const pruned = changes.filter((c) => c.action === 'delete').length;
        // The impact API takes objects to put in place, not ones to remove (api4).
        if (pruned > 0) {
          io.stderr(`note: the impact below does not count the ${pruned} deletion(s) of --prune\n`);
        }
        io.stdout(formatImpact(report, now()));
      }
      if (report.summary.newlyBlocked > 0) outcome.exitCode = EXIT_NEWLY_BLOCKED;
    });

  program
    .command('impact')
    .description(
      `which observed flows the draft (or a revision) would newly block against what is provisioned; exits ${EXIT_NEWLY_BLOCKED} when some`,
    )
    .option('--revision <n>', 'judge this revision instead of the draft', parsePositiveInt)
    .addOption(sinceOption('--since', 'judge flows seen at or after'))
    .addOption(sinceOption('--until', 'judge flows seen at or before'))
    .option('--group-by <keys>', 'label keys that make a group (default app,role)', parseKeys)
    .action(async (opts: ImpactOptions & { revision?: number }, cmd: Command) => {
      checkWindow(opts.since, opts.until);
      const ctx = await context(cmd);
      const target = opts.revision === undefined ? 'draft' : { revision: opts.revision };
      const report = await requestImpact(ctx.client, target, opts);
      if (ctx.format !== 'table') ctx.print(report);
      else io.stdout(formatImpact(report, now()));
      if (report.summary.newlyBlocked > 0) outcome.exitCode = EXIT_NEWLY_BLOCKED;
    });

  const draft = program
    .command('draft')
    .description('what provision would freeze: the edits since the latest revision')
    .action(async (_opts: unknown, cmd: Command) => {
      const ctx = await context(cmd);
      const answer = await ctx.client.request<{ basedOn: number; changes: ObjectChange[] }>(
        'GET',
        '/v1/draft',
      );
      if (ctx.format !== 'table') return ctx.print(answer);
      const base = answer.basedOn > 0 ? `revision ${answer.basedOn}` : 'no revision yet';
      if (answer.changes.length === 0) return io.stdout(`no changes (based on ${base})\n`);
      for (const change of answer.changes) io.stdout(formatObjectChange(change));
      io.stdout(`${countChanges(answer.changes)} (based on ${base})\n`);
    });
  draft
    .command('discard')
    .description("throw the draft away: policies, services and ip lists as the latest revision's")
    .action(async (_opts: unknown, cmd: Command) => {
      const ctx = await context(cmd);
      const answer = await ctx.client.request<{ discarded: ObjectChange[] }>('DELETE', '/v1/draft');
      if (ctx.format !== 'table') return ctx.print(answer);
      const discarded = answer?.discarded ?? [];
      for (const change of discarded) io.stdout(formatObjectChange(change, { brief: true }));
      io.stdout(`discarded ${discarded.length} change(s)\n`);
    });

  program
    .command('export')
    .description('write ip lists, services, policies and workloads as files apply reads back')
    .requiredOption('--output-dir <dir>', 'the directory to write (-o DIR works too)')
    .action(async (opts: { outputDir: string }, cmd: Command) => {
      const { client } = await context(cmd);
      // Everything read before anything is written: no directory half from one state.
      const state = await fetchState(client, APPLY_ORDER);
      await mkdir(opts.outputDir, { recursive: true });
      for (const kind of APPLY_ORDER) {
        const path = join(opts.outputDir, KIND_FACTS[kind].file);
        await writeFile(path, formatDocuments(kind, [...state[kind].values()]));
        io.stdout(`${path}: ${state[kind].size} ${KIND_FACTS[kind].word}(s)\n`);
      }
    });

  program
    .command('get')
    .description(
      'list resources or show one: workloads, policies, services, ip-lists, revisions, agents, tokens, enrollment-tokens',
    )
    .argument('<kind>')
    .argument('[name]')
    .action(async (word: string, name: string | undefined, _opts: unknown, cmd: Command) => {
      const kind = lookupKind(word);
      const ctx = await context(cmd);
      if (name === undefined) {
        ctx.print(await ctx.client.request('GET', kind.path), kind.columns);
      } else if (kind.getOne) {
        ctx.print(await ctx.client.request('GET', itemPath(kind, name)), kind.columns);
      } else {
        ctx.print(await findOne(ctx.client, kind, name), kind.columns);
      }
    });

  program
    .command('delete')
    .description('delete a workload, policy, service, ip list, token or enrollment token')
    .argument('<kind>')
    .argument('<name>')
    .action(async (word: string, name: string, _opts: unknown, cmd: Command) => {
      const kind = lookupKind(word);
      if (!kind.deletable) throw new CliError('USAGE', `${kind.name} cannot be deleted`);
      const { client } = await context(cmd);
      await client.request('DELETE', itemPath(kind, name));
      io.stdout(`${kind.name}/${name} deleted\n`);
    });

  program
    .command('provision')
    .description('freeze the draft policy into a new revision and push it to the agents')
    .requiredOption('--note <text>', 'why (kept with the revision and in the audit log)')
    .option('--confirm', 'provision even if observed flows would be newly blocked')
    .action(async (opts: { note: string; confirm?: boolean }, cmd: Command) => {
      if (opts.note.trim() === '') throw new CliError('USAGE', '--note must not be empty');
      const ctx = await context(cmd);
      const body = { note: opts.note, ...(opts.confirm ? { confirm: true } : {}) };
      const result = await impactChecked(ctx, 'provision', () =>
        ctx.client.request<ProvisionResult>('POST', '/v1/provision', body),
      );
      if (result) printProvision(ctx, result, '');
    });

  const printProvision = (ctx: Context, result: ProvisionResult, why: string) => {
    if (ctx.format !== 'table') return ctx.print(result);
    const changed = result.changed ?? [];
    io.stdout(
      `revision ${result.revision}${why}: ${changed.length} workload(s) changed, ${result.unchanged} unchanged\n`,
    );
    for (const w of changed) io.stdout(`  ${w}\n`);
    if (result.impact) io.stdout(formatImpactSummary(result.impact));
  };

  /**
   * Runs an impact-checked write. When the server refuses it because observed flows would be
   * newly blocked, prints what would break and how to go ahead, and resolves to undefined.
   */
  const impactChecked = async <T>(
    ctx: Context,
    verb: string,
    write: () => Promise<T>,
  ): Promise<T | undefined> => {
    try {
      return await write();
    } catch (err) {
      if (!(err instanceof CliError) || err.code !== 'IMPACT_CONFIRMATION_REQUIRED') throw err;
      const impact = err.response?.impact as ImpactView | undefined;
      if (impact && ctx.format !== 'table') ctx.print(impact);
      else if (impact) io.stdout(formatImpact(impact, now()));
      const what = impact
        ? `${impact.summary.newlyBlocked} observed flows would be newly blocked`
        : err.message;
      io.stderr(`refused: ${what}; re-run with --confirm to ${verb} anyway\n`);
      outcome.exitCode = exitCodeFor(err);
      return undefined;
    }
  };

  /** A command that lists one collection as a table (or -o json|yaml). */
  const listCommand = (
    name: string,
    description: string,
    path: string,
    columns: KindInfo['columns'],
  ) =>
    program
      .command(name)
      .description(description)
      .action(async (_opts: unknown, cmd: Command) => {
        const ctx = await context(cmd);
        ctx.print(await ctx.client.request('GET', path), columns);
      });

  listCommand(
    'revisions',
    'provisioned revisions, newest first',
    '/v1/revisions',
    REVISION_COLUMNS,
  );

  program
    .command('rollback')
    .description(
      "make an older revision's policy the draft again and provision it as a new revision",
    )
    .argument('<revision>', 'the revision number to go back to', parsePositiveInt)
    .requiredOption('--note <text>', 'why (kept with the new revision and in the audit log)')
    .option('--confirm', 'roll back even if observed flows would be newly blocked')
    .action(async (n: number, opts: { note: string; confirm?: boolean }, cmd: Command) => {
      if (opts.note.trim() === '') throw new CliError('USAGE', '--note must not be empty');
      const ctx = await context(cmd);
      const body = { note: opts.note, ...(opts.confirm ? { confirm: true } : {}) };
      const result = await impactChecked(ctx, 'roll back', () =>
        ctx.client.request<ProvisionResult>('POST', `/v1/revisions/${n}/rollback`, body),
      );
      if (result) printProvision(ctx, result, ` (rollback to ${n})`);
    });

  const workloads = lookupKind('workloads');
  listCommand('workloads', 'list workloads', workloads.path, workloads.columns);

  listCommand(
    'agents',
    'list agents and whether they run the desired rule set',
    '/v1/agents',
    AGENT_COLUMNS,
  );

  program
    .command('revoke')
    .description('revoke an agent (its certificate stops working)')
    .argument('<agent-id>', 'id or unique id prefix')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      const { client } = await context(cmd);
      const agent = (await findOne(client, lookupKind('agents'), id)) as Row;
      await client.request('POST', `/v1/agents/${encodeURIComponent(String(agent.id))}/revoke`);
      io.stdout(`agent ${String(agent.id)} revoked\n`);
    });

  program
    .command('counters')
    .description('rule hit counters reported by the agents')
    .option('--workload <name>')
    .option('--rule-id <id>')
    .action(async (opts: { workload?: string; ruleId?: string }, cmd: Command) => {
      const ctx = await context(cmd);
      const query = new URLSearchParams();
      if (opts.workload) query.set('workload', opts.workload);
      if (opts.ruleId) query.set('ruleId', opts.ruleId);
      const qs = query.size > 0 ? `?${query}` : '';
      ctx.print(await ctx.client.request('GET', `/v1/counters${qs}`), COUNTER_COLUMNS);
    });

  program
    .command('label')
    .description('set (k=v) or remove (k-) labels of a workload')
    .argument('<workload>')
    .argument('<changes...>', 'k=v to set, k- to remove')
    .action(async (name: string, changes: string[], _opts: unknown, cmd: Command) => {
      const edits = changes.map(parseLabelChange);
      const { client } = await context(cmd);
      const path = itemPath(lookupKind('workloads'), name);
      const current = await client.request<{ labels?: Record<string, string>; version?: unknown }>(
        'GET',
        path,
      );
      const before = current?.labels ?? {};
      const labels = { ...before };
      for (const e of edits) {
        if (e.value === undefined) delete labels[e.key];
        else labels[e.key] = e.value;
      }
      if (canonical(labels) === canonical(before)) {
        io.stdout(`workload/${name} unchanged\n`);
        return;
      }
      const problems = validators.workloadPatch({ labels }, '');
      if (problems.length > 0) throw new CliError('USAGE', 'invalid labels', { details: problems });
      // Merged from what was read, so written only if nobody changed the labels meanwhile.
      await client.request('PATCH', path, { labels }, { ifMatch: versionOf(current) });
      io.stdout(`workload/${name} labels: ${formatLabels(labels)}\n`);
    });

  const modeOption = (flag: string) =>
    new Option(flag, 'monitor or enforce').choices(['monitor', 'enforce']);

  program
    .command('mode')
    .description('switch a workload between monitor and enforce, per direction')
    .argument('<workload>')
    .addOption(modeOption('--ingress <mode>'))
    .addOption(modeOption('--egress <mode>'))
    .option('--confirm', 'enforce even if observed flows would be newly blocked')
    .action(async (name: string, opts: ModeOptions, cmd: Command) => {
      if (!opts.ingress && !opts.egress) {
        throw new CliError('USAGE', 'mode needs --ingress and/or --egress');
      }
      const ctx = await context(cmd);
      const mode: Row = {};
      if (opts.ingress) mode.ingress = opts.ingress;
      if (opts.egress) mode.egress = opts.egress;
      const path = itemPath(lookupKind('workloads'), name) + (opts.confirm ? '?confirm=true' : '');
      // Wrapped, so that an empty answer does not read as a refusal.
      const answer = await impactChecked(ctx, 'enforce', async () => ({
        updated: await ctx.client.request<{ mode?: Row } | undefined>('PATCH', path, { mode }),
      }));
      if (!answer) return;
      const shown = answer.updated?.mode ?? mode;
      const text = Object.entries(shown).map(([k, v]) => `${k}=${String(v)}`);
      io.stdout(`workload/${name} mode: ${text.join(' ')}\n`);
    });

  const enrollment = program
    .command('enrollment-token')
    .description('tokens that let a new host enrol its agent');
  enrollment
    .command('create')
    .description('create an enrollment token (shown once)')
    .option('--label <k=v>', 'label for the enrolled workload (repeatable)', collect, [])
    .option('--ttl <duration>', 'lifetime such as 30m, 24h, 7d', parseDuration)
    .option('--max-uses <n>', 'how many hosts may use it', parsePositiveInt)
    .addOption(modeOption('--mode-ingress <mode>'))
    .addOption(modeOption('--mode-egress <mode>'))
    .action(
      async (
        opts: {
          label: string[];
          ttl?: number;
          maxUses?: number;
          modeIngress?: string;
          modeEgress?: string;
        },
        cmd: Command,
      ) => {
        const body: Row = {};
        if (opts.label.length > 0) {
          const labels: Record<string, string> = {};
          for (const e of opts.label.map(parseLabelChange)) {
            if (e.value === undefined) throw new CliError('USAGE', `--label needs k=v: ${e.key}-`);
            labels[e.key] = e.value;
          }
          body.labels = labels;
        }
        if (opts.modeIngress || opts.modeEgress) {
          const mode: Row = {};
          if (opts.modeIngress) mode.ingress = opts.modeIngress;
          if (opts.modeEgress) mode.egress = opts.modeEgress;
          body.mode = mode;
        }
        if (opts.ttl !== undefined) body.ttlSeconds = opts.ttl;
        if (opts.maxUses !== undefined) body.maxUses = opts.maxUses;
        const ctx = await context(cmd);
        ctx.print(await ctx.client.request('POST', '/v1/enrollment-tokens', body));
      },
    );

  const token = program.command('token').description('API tokens for admins and pipelines');
  token
    .command('create')
    .description('create an API token (shown once)')
    .requiredOption('--name <name>')
    .addOption(new Option('--role <role>').choices(['admin', 'viewer']).makeOptionMandatory(true))
    .action(async (opts: { name: string; role: string }, cmd: Command) => {
      const ctx = await context(cmd);
      ctx.print(
        await ctx.client.request('POST', '/v1/tokens', { name: opts.name, role: opts.role }),
      );
    });

  program
    .command('audit')
    .description('the audit log, newest first')
    .option('--limit <n>', 'at most this many entries', parsePositiveInt)
    .option('--since <id>', 'only entries after this audit entry id', parseCount)
    .action(async (opts: { limit?: number; since?: number }, cmd: Command) => {
      const ctx = await context(cmd);
      const query = new URLSearchParams();
      if (opts.limit !== undefined) query.set('limit', String(opts.limit));
      if (opts.since !== undefined) query.set('since', String(opts.since));
      const qs = query.size > 0 ? `?${query}` : '';
      ctx.print(await ctx.client.request('GET', `/v1/audit${qs}`), AUDIT_COLUMNS);
    });

  program
    .command('flows')
    .description('observed flows, newest first')
    .option('--workload <name>', 'flows with this workload at either end')
    .option(
      '--label <k=v>',
      'flows with a workload so labelled at either end (repeatable)',
      collect,
      [],
    )
    .option('--port <n>', 'destination port', parsePort)
    .option('--protocol <p>', 'tcp, udp, sctp, icmp, icmpv6', parseProtocol)
    .addOption(new Option('--verdict <v>', 'what the agent did').choices(FLOW_VERDICTS))
    .addOption(sinceOption('--since', 'seen at or after'))
    .addOption(sinceOption('--until', 'seen at or before'))
    .addOption(sinceOption('--new-since', 'first seen at or after (never before)'))
    .option('--limit <n>', 'at most this many flows', parsePositiveInt)
    .action(async (opts: FlowOptions, cmd: Command) => {
      const query = new URLSearchParams();
      if (opts.workload) query.set('workload', opts.workload);
      for (const l of opts.label) {
        if (l.indexOf('=') <= 0) throw new CliError('USAGE', `--label needs k=v: ${l}`);
        query.append('label', l);
      }
      if (opts.port !== undefined) query.set('port', String(opts.port));
      if (opts.protocol) query.set('protocol', opts.protocol);
      if (opts.verdict) query.set('verdict', opts.verdict);
      checkWindow(opts.since, opts.until);
      if (opts.since) query.set('since', opts.since);
      if (opts.until) query.set('until', opts.until);
      if (opts.newSince) query.set('newSince', opts.newSince);
      if (opts.limit !== undefined) query.set('limit', String(opts.limit));
      const ctx = await context(cmd);
      const answer = await ctx.client.request<{ flows: FlowView[] }>(
        'GET',
        withQuery('/v1/flows', query),
      );
      if (ctx.format !== 'table') return ctx.print(answer);
      const flows = answer?.flows ?? [];
      io.stdout(flows.length === 0 ? 'no flows\n' : table(flows, flowColumns(now())));
    });

  program
    .command('map')
    .description('who talks to whom, by label group, with what current policy says of it')
    .option('--group-by <keys>', 'label keys that make a group (default app,role)', parseKeys)
    .addOption(sinceOption('--since', 'seen at or after'))
    .addOption(sinceOption('--until', 'seen at or before'))
    .option('--dot', 'Graphviz DOT instead of text (pipe to `dot -Tsvg`)')
    .action(
      async (
        opts: { groupBy?: string[]; since?: string; until?: string; dot?: boolean },
        cmd: Command,
      ) => {
        checkWindow(opts.since, opts.until);
        const query = new URLSearchParams();
        if (opts.groupBy) query.set('groupBy', opts.groupBy.join(','));
        if (opts.since) query.set('since', opts.since);
        if (opts.until) query.set('until', opts.until);
        const ctx = await context(cmd);
        const view = await ctx.client.request<MapView>('GET', withQuery('/v1/map', query));
        if (opts.dot) return io.stdout(toDot(view));
        if (ctx.format !== 'table') return ctx.print(view);
        io.stdout(formatMap(view, now()));
      },
    );

  program
    .command('recommend')
    .description('propose policies that allow what was observed (a draft: nothing is stored)')
    .option('--scope <k=v,...>', 'the workloads to protect, by labels', parseScope)
    .option('--workload <name>', 'the one workload to protect')
    .option('--group-by <keys>', 'label keys peers are grouped by (default app,role)', parseKeys)
    .addOption(sinceOption('--since', 'learn from flows seen at or after'))
    .action(
      async (
        opts: { scope?: Selector; workload?: string; groupBy?: string[]; since?: string },
        cmd: Command,
      ) => {
        if (!opts.scope === !opts.workload) {
          throw new CliError('USAGE', 'recommend needs exactly one of --scope or --workload');
        }
        const body: Row = opts.scope ? { scope: opts.scope } : { workload: opts.workload };
        if (opts.groupBy) body.groupBy = opts.groupBy;
        if (opts.since) body.since = opts.since;
        const ctx = await context(cmd);
        const answer = await ctx.client.request<Recommendation>(
          'POST',
          '/v1/recommendations',
          body,
        );
        if (ctx.format !== 'table') return ctx.print(answer);
        // Policies alone on stdout, so that `> proposal.yaml` is ready for `apply -f`.
        if (answer.policies.length > 0) io.stdout(formatPolicies(answer.policies));
        else io.stderr('no policies proposed\n');
        io.stderr(formatCoverage(answer.coverage));
        io.stderr(formatUncovered(answer.uncovered ?? []));
      },
    );

  program
    .command('api')
    .description('raw REST call; prints the JSON answer')
    .argument('<method>', 'GET, PUT, POST, PATCH or DELETE')
    .argument('<path>', 'e.g. /v1/workloads')
    .option('--data <json>', 'request body: JSON, or @file to read it from a file')
    .action(async (method: string, path: string, opts: { data?: string }, cmd: Command) => {
      let body: unknown;
      if (opts.data !== undefined) {
        const text = opts.data.startsWith('@')
          ? await readFileOrUsage(opts.data.slice(1))
          : opts.data;
        try {
          body = JSON.parse(text);
        } catch (cause) {
          throw new CliError('USAGE', `--data is not valid JSON: ${(cause as Error).message}`);
        }
      }
      const ctx = await context(cmd);
      const answer = await ctx.client.request(
        method.toUpperCase(),
        path.startsWith('/') ? path : `/${path}`,
        body,
      );
      if (answer === undefined) return;
      // Like `gh api`: JSON unless YAML was asked for; tables do not fit arbitrary answers.
      io.stdout(render(answer, ctx.format === 'yaml' ? 'yaml' : 'json'));
    });

  return program;
}

const OUTCOME_WORDS: Record<Change['action'], string> = {
  create: 'created',
  update: 'updated',
  unchanged: 'unchanged',
  delete: 'deleted',
};

interface ImpactOptions {
  since?: string;
  until?: string;
  groupBy?: string[];
}

interface PlanOptions extends ImpactOptions {
  filename: string[];
  prune?: boolean;
}

interface ModeOptions {
  ingress?: string;
  egress?: string;
  confirm?: boolean;
}

/** POST /v1/impact for one target (api4: 'draft', a revision, or resources). */
async function requestImpact(
  client: Client,
  target: 'draft' | { revision: number } | { resources: Row[] },
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

/** The object's `version` for If-Match; undefined (an unconditional write) when it has none. */
function versionOf(item: Row | undefined): number | undefined {
  return typeof item?.version === 'number' ? item.version : undefined;
}

function parseTo(text: string): string {
  if (text === 'draft' || /^[1-9]\d*$/.test(text)) return text;
  throw new InvalidArgumentError('use a revision number or draft');
}

/** Runs `fn`, naming the object in any CliError it throws (`policy/web: ...`). */
async function labelled<T>(kind: ResourceKind, name: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (!(err instanceof CliError)) throw err;
    const prefix = label(kind, name);
    // The server's CONFLICT message already names the object.
    const message = err.message.startsWith(prefix) ? err.message : `${prefix}: ${err.message}`;
    throw new CliError(err.code, message, {
      status: err.status,
      details: err.details,
      response: err.response,
      cause: err,
    });
  }
}

async function getOrUndefined(client: Client, path: string): Promise<unknown> {
  try {
    return await client.request('GET', path);
  } catch (err) {
    if (err instanceof CliError && err.code === 'NOT_FOUND') return undefined;
    throw err;
  }
}

/** Items without a GET-by-name (agents, tokens) are found in the list, by id or id prefix. */
async function findOne(client: Client, kind: KindInfo, id: string): Promise<unknown> {
  const items = await client.request<Row[]>('GET', kind.path);
  const exact = items.find((i) => i[kind.key] === id);
  if (exact) return exact;
  const matches = items.filter((i) => String(i[kind.key]).startsWith(id));
  if (matches.length === 1) return matches[0];
  if (matches.length > 1) {
    const ids = matches.map((m) => shortId(m[kind.key])).join(', ');
    throw new CliError('USAGE', `${JSON.stringify(id)} matches several ${kind.name}: ${ids}`);
  }
  throw new CliError('NOT_FOUND', `no ${kind.name} with ${kind.key} ${JSON.stringify(id)}`);
}

function parseLabelChange(arg: string): { key: string; value?: string } {
  const eq = arg.indexOf('=');
  if (eq > 0) return { key: arg.slice(0, eq), value: arg.slice(eq + 1) };
  if (eq < 0 && arg.length > 1 && arg.endsWith('-')) return { key: arg.slice(0, -1) };
  throw new CliError('USAGE', `bad label change ${JSON.stringify(arg)}: use key=value or key-`);
}

function formatLabels(labels: Record<string, string>): string {
  const pairs = Object.entries(labels).map(([k, v]) => `${k}=${v}`);
  return pairs.length === 0 ? '(none)' : pairs.join(',');
}

interface FlowOptions {
  workload?: string;
  label: string[];
  port?: number;
  protocol?: string;
  verdict?: string;
  since?: string;
  until?: string;
  newSince?: string;
  limit?: number;
}

function withQuery(path: string, query: URLSearchParams): string {
  return query.size > 0 ? `${path}?${query}` : path;
}

function checkWindow(since: string | undefined, until: string | undefined): void {
  if (since && until && since > until) {
    throw new CliError('USAGE', `--since (${since}) is after --until (${until})`);
  }
}

function parsePort(text: string): number {
  const n = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!(n >= 0 && n <= 65535)) throw new InvalidArgumentError('use a port number 0..65535');
  return n;
}

function parseProtocol(text: string): string {
  const p = text.toLowerCase();
  if (!/^[a-z][a-z0-9-]*$/.test(p))
    throw new InvalidArgumentError('use tcp, udp, sctp, icmp, icmpv6');
  return p;
}

function parseKeys(text: string): string[] {
  const keys = text.split(',').map((k) => k.trim());
  if (keys.some((k) => k === '')) throw new InvalidArgumentError('use label keys such as app,role');
  return keys;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

function parseDuration(text: string): number {
  const m = /^(\d+)([smhd]?)$/.exec(text.trim());
  if (!m || Number(m[1]) === 0) {
    throw new InvalidArgumentError('use a positive duration such as 90s, 30m, 24h or 7d');
  }
  return Number(m[1]) * UNIT_SECONDS[m[2] || 's']!;
}

function parseCount(text: string): number {
  if (!/^\d+$/.test(text)) throw new InvalidArgumentError('use a whole number');
  return Number(text);
}

function parsePositiveInt(text: string): number {
  const n = parseCount(text);
  if (n === 0) throw new InvalidArgumentError('use a positive whole number');
  return n;
}

async function readFileOrUsage(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (cause) {
    throw new CliError('USAGE', `cannot read ${path}: ${(cause as Error).message}`, { cause });
  }
}
