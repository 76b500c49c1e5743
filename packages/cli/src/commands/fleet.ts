// The fleet: enrolled agents (listing, revoking), the enrollment tokens new hosts join with,
// and the rule hit counters agents report. Reads what agents said; it never edits policy.
import type { Command } from 'commander';
import { CliError } from '../errors.js';
import { AGENT_COLUMNS, COUNTER_COLUMNS, findOne, lookupKind } from '../kinds.js';
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
}

export function registerFleetCommands(program: Command, ctx: CommandContext): void {
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
    .addHelpText(
      'after',
      examples(
        'bulkhead enrollment-token create --label app=shop --label role=db',
        'bulkhead enrollment-token create --label app=shop --ttl 1h --max-uses 3 --mode-ingress enforce',
      ),
    )
    .action(async (opts: EnrollmentTokenOptions, cmd: Command) => {
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
