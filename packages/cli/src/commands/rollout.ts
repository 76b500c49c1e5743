// Staged rollout: `rollout start` freezes the draft (behind the impact gate, as provision) and
// gives it to a canary, then to the rest in waves; `rollout status|pause|resume|abort`. Only
// the REST calls and their text; the control plane decides every step.
import type { RolloutRequest, RolloutView } from '@bulkhead/api';
import { type Command, InvalidArgumentError } from 'commander';
import { CliError } from '../errors.js';
import { parseDuration, parsePositiveInt } from './options.js';
import { type CommandContext, type Connection, examples, impactChecked } from './shared.js';

function parsePercent(text: string): number {
  const n = parsePositiveInt(text);
  if (n > 100) throw new InvalidArgumentError('use a share from 1 to 100');
  return n;
}

/** The rollout as a few lines: status, waves (the current one marked), the hold's reason. */
export function formatRollout(r: RolloutView): string {
  const lines = [
    `rollout ${r.id}: revision ${r.revision} (from ${r.baseRevision}) ${r.status}${r.endRevision ? `, ended at revision ${r.endRevision}` : ''}`,
    `note: ${r.note}`,
    `watch: ${r.watchSeconds}s per wave; wave ${r.wave} started ${r.waveStartedAt}`,
    ...r.waves.map(
      (w, i) =>
        `${i === r.wave && r.status !== 'completed' ? '>' : ' '} ${i === 0 ? 'canary' : `wave ${i}`}: ${w.join(', ')}`,
    ),
  ];
  if (r.rolledBack.length > 0) lines.push(`rolled back: ${r.rolledBack.join(', ')}`);
  if (r.hold) lines.push(`held at ${r.hold.at}: ${r.hold.message}`);
  return `${lines.join('\n')}\n`;
}

export function registerRolloutCommands(program: Command, ctx: CommandContext): void {
  const show = (conn: Connection, r: RolloutView) =>
    conn.format === 'table' ? ctx.io.stdout(formatRollout(r)) : conn.print(r);
  const rollout = program
    .command('rollout')
    .description('give the draft to a canary first, then to every workload in waves')
    .addHelpText(
      'after',
      examples(
        'bulkhead rollout start --note "tighten billing" --canary app=billing',
        'bulkhead rollout status',
      ),
    );

  rollout
    .command('start')
    .description(
      'freeze the draft into a revision (impact-checked as provision) and start rolling it out',
    )
    .requiredOption('--note <text>', 'why (kept with the revision and in the audit log)')
    .option('--canary <selector>', 'the canary workloads: labels k=v[,k=v]')
    .option(
      '--percent <n>',
      'or this share of the workloads as the canary (default 10)',
      parsePercent,
    )
    .option('--waves <n>', 'waves after the canary (default 3)', parsePositiveInt)
    .option(
      '--watch <duration>',
      'watch window per wave: 90s, 10m, 1h (default 10m)',
      parseDuration,
    )
    .option('--confirm', 'start even if observed flows would be newly blocked')
    .addHelpText(
      'after',
      examples(
        'bulkhead rollout start --note "tighten billing" --canary app=billing --waves 3 --watch 10m',
        'bulkhead rollout start --note "enforce web" --percent 10 --confirm',
      ),
    )
    .action(
      async (
        opts: {
          note: string;
          canary?: string;
          percent?: number;
          waves?: number;
          watch?: number;
          confirm?: boolean;
        },
        cmd: Command,
      ) => {
        if (opts.note.trim() === '') throw new CliError('USAGE', '--note must not be empty');
        if (opts.canary !== undefined && opts.percent !== undefined) {
          throw new CliError('USAGE', 'give --canary or --percent, not both');
        }
        const body: RolloutRequest = {
          note: opts.note,
          ...(opts.canary !== undefined ? { canary: opts.canary } : {}),
          ...(opts.percent !== undefined ? { percent: opts.percent } : {}),
          ...(opts.waves !== undefined ? { waves: opts.waves } : {}),
          ...(opts.watch !== undefined ? { watchSeconds: opts.watch } : {}),
          ...(opts.confirm ? { confirm: true } : {}),
        };
        const conn = await ctx.connect(cmd);
        const r = await impactChecked(ctx, conn, 'start the rollout', () =>
          conn.client.request<RolloutView>('POST', '/v1/rollouts', body),
        );
        if (r) show(conn, r);
      },
    );

  rollout
    .command('status')
    .description('the active rollout (else the last one): waves, progress, why it holds')
    .addHelpText('after', examples('bulkhead rollout status', 'bulkhead rollout status -o json'))
    .action(async (_opts: unknown, cmd: Command) => {
      const conn = await ctx.connect(cmd);
      show(conn, await conn.client.request<RolloutView>('GET', '/v1/rollouts/current'));
    });

  for (const [verb, description] of [
    ['pause', 'stop advancing to the next wave (the guard keeps watching)'],
    ['resume', 'watch the current wave again from now; after a hold, retry rolled-back workloads'],
    ['abort', 'return every workload to the revision before the rollout (as a new revision)'],
  ] as const) {
    rollout
      .command(verb)
      .description(description)
      .addHelpText('after', examples(`bulkhead rollout ${verb}`))
      .action(async (_opts: unknown, cmd: Command) => {
        const conn = await ctx.connect(cmd);
        show(conn, await conn.client.request<RolloutView>('POST', `/v1/rollouts/current/${verb}`));
      });
  }
}
