// The fleet: workloads and what their agents may claim (the addresses waiting for approval,
// releasing a workload for a new agent), enrolled agents (listing, revoking), the enrollment
// tokens new hosts join with and their scope, and the rule hit counters agents report. Never
// edits policy (labels and modes are policy.ts's).
import type { Command } from 'commander';
import { CliError } from '../errors.js';
import {
  AGENT_COLUMNS,
  COUNTER_COLUMNS,
  findOne,
  itemPath,
  lookupKind,
  PENDING_COLUMNS,
} from '../kinds.js';
import {
  collect,
  modeOption,
  parseDuration,
  parseLabelChange,
  parsePositiveInt,
  withQuery,
} from './options.js';
import { type CommandContext, examples, listCommand, type Row } from './shared.js';

interface EnrollmentTokenOptions {
  label: string[];
  ttl?: number;
  maxUses?: number;
  modeIngress?: string;
  modeEgress?: string;
  workload?: string;
  allowName: string[];
  allowLabel: string[];
  allowCidr: string[];
}

/** `--label k=v` pairs as an object; `flag` names the option in the error. */
function labelPairs(values: string[], flag: string): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const e of values.map(parseLabelChange)) {
    if (e.value === undefined) throw new CliError('USAGE', `${flag} needs k=v: ${e.key}-`);
    labels[e.key] = e.value;
  }
  return labels;
}

/** The token scope the `--allow-*` flags describe, or undefined when none was given. */
function scopeOf(opts: EnrollmentTokenOptions): Row | undefined {
  const scope: Row = {};
  if (opts.allowName.length > 0) scope.names = opts.allowName;
  if (opts.allowLabel.length > 0) {
    const labels: Record<string, string[]> = {};
    for (const arg of opts.allowLabel) {
      const eq = arg.indexOf('=');
      if (eq <= 0) throw new CliError('USAGE', `--allow-label needs k=v or k=*: ${arg}`);
      const key = arg.slice(0, eq);
      labels[key] = [...(labels[key] ?? []), arg.slice(eq + 1)];
    }
    scope.labels = labels;
  }
  if (opts.allowCidr.length > 0) scope.cidrs = opts.allowCidr;
  return Object.keys(scope).length > 0 ? scope : undefined;
}

export function registerFleetCommands(program: Command, ctx: CommandContext): void {
  registerWorkloadCommands(program, ctx);

  listCommand(program, ctx, {
    name: 'agents',
    description: 'list agents and whether they run the desired rule set',
    path: '/v1/agents',
    columns: AGENT_COLUMNS,
    examples: ['bulkhead agents', 'bulkhead agents -o json'],
  });

  program
    .command('revoke')
    .description('revoke an agent (its certificate stops working)')
    .argument('<agent-id>', 'id or unique id prefix')
    .addHelpText('after', examples('bulkhead revoke 3f9c2a'))
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      const { client } = await ctx.connect(cmd);
      const agent = (await findOne(client, lookupKind('agents'), id)) as Row;
      await client.request('POST', `/v1/agents/${encodeURIComponent(String(agent.id))}/revoke`);
      ctx.io.stdout(`agent ${String(agent.id)} revoked\n`);
    });

  program
    .command('counters')
    .description('rule hit counters reported by the agents')
    .option('--workload <name>', 'only this workload')
    .option('--rule-id <id>', 'only this rule (policy/direction/index, or default)')
    .addHelpText(
      'after',
      examples(
        'bulkhead counters',
        'bulkhead counters --workload db-1 --rule-id shop-db/ingress/0',
      ),
    )
    .action(async (opts: { workload?: string; ruleId?: string }, cmd: Command) => {
      const conn = await ctx.connect(cmd);
      const query = new URLSearchParams();
      if (opts.workload) query.set('workload', opts.workload);
      if (opts.ruleId) query.set('ruleId', opts.ruleId);
      conn.print(
        await conn.client.request('GET', withQuery('/v1/counters', query)),
        COUNTER_COLUMNS,
      );
    });

  const enrollment = program
    .command('enrollment-token')
    .alias('enrollment-tokens')
    .description('tokens that let a new host enrol its agent')
    .addHelpText(
      'after',
      examples(
        'bulkhead enrollment-token create --label app=shop --label role=db --ttl 24h',
        'bulkhead enrollment-token list',
      ),
    );
  enrollment
    .command('create')
    .description('create an enrollment token (shown once)')
    .option('--label <k=v>', 'label for the enrolled workload (repeatable)', collect, [])
    .option('--ttl <duration>', 'lifetime such as 30m, 24h, 7d', parseDuration)
    .option('--max-uses <n>', 'how many hosts may use it', parsePositiveInt)
    .addOption(modeOption('--mode-ingress <mode>'))
    .addOption(modeOption('--mode-egress <mode>'))
    .option('--workload <name>', 'only re-enrol this existing workload, replacing its agent')
    .option('--allow-name <name>', 'a name hosts may enrol as, `*` globs (repeatable)', collect, [])
    .option('--allow-label <k=v|k=*>', 'a label value hosts may ask for (repeatable)', collect, [])
    .option('--allow-cidr <cidr>', 'a range host addresses must lie in (repeatable)', collect, [])
    .addHelpText(
      'after',
      examples(
        'bulkhead enrollment-token create --label app=shop --label role=db',
        'bulkhead enrollment-token create --label app=shop --ttl 1h --max-uses 3 --mode-ingress enforce',
      ),
    )
    .action(async (opts: EnrollmentTokenOptions, cmd: Command) => {
      const body: Row = {};
      if (opts.label.length > 0) body.labels = labelPairs(opts.label, '--label');
      if (opts.modeIngress || opts.modeEgress) {
        const mode: Row = {};
        if (opts.modeIngress) mode.ingress = opts.modeIngress;
        if (opts.modeEgress) mode.egress = opts.modeEgress;
        body.mode = mode;
      }
      if (opts.ttl !== undefined) body.ttlSeconds = opts.ttl;
      if (opts.maxUses !== undefined) body.maxUses = opts.maxUses;
      if (opts.workload !== undefined) body.workload = opts.workload;
      const scope = scopeOf(opts);
      if (scope) body.scope = scope;
      const conn = await ctx.connect(cmd);
      conn.print(await conn.client.request('POST', '/v1/enrollment-tokens', body));
    });

  const enrollmentTokens = lookupKind('enrollment-tokens');
  listCommand(enrollment, ctx, {
    name: 'list',
    description: 'list enrollment tokens (the same as get enrollment-tokens)',
    path: enrollmentTokens.path,
    columns: enrollmentTokens.columns,
    examples: ['bulkhead enrollment-token list'],
  });
}

/**
 * `workloads` lists them; its subcommands are the admin's say over what agents claim: the
 * address changes waiting for approval, approving or denying one, releasing a workload so that
 * a new agent may enrol under its name.
 */
function registerWorkloadCommands(program: Command, ctx: CommandContext): void {
  const kind = lookupKind('workloads');
  const workloads = listCommand(program, ctx, {
    name: 'workloads',
    description: 'list workloads; subcommands: pending, approve, deny, release',
    path: kind.path,
    columns: kind.columns,
    examples: ['bulkhead workloads', 'bulkhead workloads -o yaml', 'bulkhead workloads pending'],
  });
  workloads
    .command('pending')
    .description('workloads whose agent claims addresses that wait for approval')
    .addHelpText(
      'after',
      examples('bulkhead workloads pending', 'bulkhead workloads pending -o json'),
    )
    .action(async (_opts: unknown, cmd: Command) => {
      const conn = await ctx.connect(cmd);
      conn.print(await conn.client.request('GET', `${kind.path}?pending=true`), PENDING_COLUMNS);
    });
  for (const [verb, what] of [
    ['approve', "apply the addresses the workload's agent claims (ownership re-checked)"],
    ['deny', 'drop the addresses waiting for approval; the workload keeps its own'],
  ] as const) {
    workloads
      .command(verb)
      .description(what)
      .argument('<workload>', 'the workload whose pending addresses to decide')
      .addHelpText('after', examples(`bulkhead workloads ${verb} db-1`))
      .action(async (name: string, _opts: unknown, cmd: Command) => {
        const conn = await ctx.connect(cmd);
        const w = await conn.client.request<Row>(
          'POST',
          `${itemPath(kind, name)}/addresses/${verb}`,
        );
        if (conn.format !== 'table') conn.print(w);
        else ctx.io.stdout(`workload/${name} addresses: ${formatList(w?.addresses)}\n`);
      });
  }
  workloads
    .command('release')
    .description("revoke the workload's agents so that the next enrolment under its name takes it")
    .argument('<workload>', 'the workload to release')
    .addHelpText('after', examples('bulkhead workloads release db-1 --note "host reinstalled"'))
    .requiredOption('--note <text>', 'why (kept in the audit log)')
    .action(async (name: string, opts: { note: string }, cmd: Command) => {
      const conn = await ctx.connect(cmd);
      const w = await conn.client.request('POST', `${itemPath(kind, name)}/release`, {
        note: opts.note,
      });
      if (conn.format !== 'table') conn.print(w);
      else ctx.io.stdout(`workload/${name} released: its agents are revoked\n`);
    });
}

function formatList(v: unknown): string {
  return Array.isArray(v) && v.length > 0 ? v.join(',') : '(none)';
}
