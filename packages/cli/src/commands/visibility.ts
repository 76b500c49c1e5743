// Visibility: what the agents observed (flows), who talks to whom (map), policies that would
// allow it (recommend), why a connection is allowed or not (explain), and the periodic policy
// audit (audit-policy). Only reads; a recommendation is printed, never stored.
import type { ExplainView, FlowView, HygieneView, MapView, Recommendation } from '@bulkhead/api';
import type { Selector } from '@bulkhead/policy';
import { type Command, Option } from 'commander';
import { CliError } from '../errors.js';
import { EVENT_COLUMNS } from '../kinds.js';
import { table } from '../output.js';
import { formatExplain, formatHygiene, hygieneCsv, parseService } from '../questions-text.js';
import {
  FLOW_VERDICTS,
  flowColumns,
  formatCoverage,
  formatMap,
  formatPolicies,
  formatUncovered,
  parseScope,
  toDot,
} from '../visibility-text.js';
import {
  checkWindow,
  collect,
  parseCount,
  parseKeys,
  parsePort,
  parsePositiveInt,
  parseProtocol,
  withQuery,
} from './options.js';
import { type CommandContext, examples, type Row, sinceOption } from './shared.js';

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

interface MapOptions {
  groupBy?: string[];
  since?: string;
  until?: string;
  dot?: boolean;
}

interface RecommendOptions {
  scope?: Selector;
  workload?: string;
  groupBy?: string[];
  since?: string;
}

export function registerVisibilityCommands(program: Command, ctx: CommandContext): void {
  const { io } = ctx;

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
    .addOption(sinceOption(ctx, '--since', 'seen at or after'))
    .addOption(sinceOption(ctx, '--until', 'seen at or before'))
    .addOption(sinceOption(ctx, '--new-since', 'first seen at or after (never before)'))
    .option('--limit <n>', 'at most this many flows', parsePositiveInt)
    .addHelpText(
      'after',
      examples(
        'bulkhead flows --workload db-1 --new-since 24h',
        'bulkhead flows --label app=shop --verdict would-deny --since 7d',
      ),
    )
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
      const conn = await ctx.connect(cmd);
      const answer = await conn.client.request<{ flows: FlowView[] }>(
        'GET',
        withQuery('/v1/flows', query),
      );
      if (conn.format !== 'table') return conn.print(answer);
      const flows = answer?.flows ?? [];
      io.stdout(flows.length === 0 ? 'no flows\n' : table(flows, flowColumns(ctx.now())));
    });

  program
    .command('events')
    .description(
      'what agents reported (DATAPLANE_TAMPERED, ...) and the anomalies the control plane saw, newest first',
    )
    .option('--kind <code>', 'one event code, e.g. ANOMALY_NEW_DEPENDENCY, DATAPLANE_TAMPERED')
    .option('--workload <name>', 'events of this workload')
    .addOption(sinceOption(ctx, '--since', 'at or after'))
    .option('--limit <n>', 'at most this many events (default 100)', parsePositiveInt)
    .addHelpText(
      'after',
      examples(
        'bulkhead events --since 1h',
        'bulkhead events --kind ANOMALY_DENIES_AFTER_REVISION --workload db-1 -o json',
      ),
    )
    .action(
      async (
        opts: { kind?: string; workload?: string; since?: string; limit?: number },
        cmd: Command,
      ) => {
        const query = new URLSearchParams();
        if (opts.kind) query.set('kind', opts.kind);
        if (opts.workload) query.set('workload', opts.workload);
        if (opts.since) query.set('since', opts.since);
        if (opts.limit !== undefined) query.set('limit', String(opts.limit));
        const conn = await ctx.connect(cmd);
        conn.print(await conn.client.request('GET', withQuery('/v1/events', query)), EVENT_COLUMNS);
      },
    );

  program
    .command('map')
    .description('who talks to whom, by label group, with what current policy says of it')
    .option('--group-by <keys>', 'label keys that make a group (default app,role)', parseKeys)
    .addOption(sinceOption(ctx, '--since', 'seen at or after'))
    .addOption(sinceOption(ctx, '--until', 'seen at or before'))
    .option('--dot', 'Graphviz DOT instead of text (pipe to `dot -Tsvg`)')
    .addHelpText(
      'after',
      examples('bulkhead map --group-by app,role', 'bulkhead map --dot | dot -Tsvg > map.svg'),
    )
    .action(async (opts: MapOptions, cmd: Command) => {
      checkWindow(opts.since, opts.until);
      const query = new URLSearchParams();
      if (opts.groupBy) query.set('groupBy', opts.groupBy.join(','));
      if (opts.since) query.set('since', opts.since);
      if (opts.until) query.set('until', opts.until);
      const conn = await ctx.connect(cmd);
      const view = await conn.client.request<MapView>('GET', withQuery('/v1/map', query));
      if (opts.dot) return io.stdout(toDot(view));
      if (conn.format !== 'table') return conn.print(view);
      io.stdout(formatMap(view, ctx.now()));
    });

  program
    .command('recommend')
    .description('propose policies that allow what was observed (a draft: nothing is stored)')
    .option('--scope <k=v,...>', 'the workloads to protect, by labels', parseScope)
    .option('--workload <name>', 'the one workload to protect')
    .option('--group-by <keys>', 'label keys peers are grouped by (default app,role)', parseKeys)
    .addOption(sinceOption(ctx, '--since', 'learn from flows seen at or after'))
    .addHelpText(
      'after',
      examples(
        'bulkhead recommend --scope app=shop,role=db > db.yaml',
        'bulkhead recommend --workload db-1 --since 7d',
      ),
    )
    .action(async (opts: RecommendOptions, cmd: Command) => {
      if (!opts.scope === !opts.workload) {
        throw new CliError('USAGE', 'recommend needs exactly one of --scope or --workload');
      }
      const body: Row = opts.scope ? { scope: opts.scope } : { workload: opts.workload };
      if (opts.groupBy) body.groupBy = opts.groupBy;
      if (opts.since) body.since = opts.since;
      const conn = await ctx.connect(cmd);
      const answer = await conn.client.request<Recommendation>('POST', '/v1/recommendations', body);
      if (conn.format !== 'table') return conn.print(answer);
      // Policies alone on stdout, so that `> proposal.yaml` is ready for `apply -f`.
      if (answer.policies.length > 0) io.stdout(formatPolicies(answer.policies));
      else io.stderr('no policies proposed\n');
      io.stderr(formatCoverage(answer.coverage));
      io.stderr(formatUncovered(answer.uncovered ?? []));
    });

  program
    .command('explain')
    .description(
      'why a connection is allowed or not: the verdict and deciding rule at each end, provisioned and draft side by side',
    )
    .argument('<from>', 'a workload, labels k=v[,k=v] or an address')
    .argument('<to>', 'a workload, labels k=v[,k=v] or an address')
    .argument('<service>', 'protocol/port: tcp/5432, udp/53, icmp', parseService)
    .option('--revision <n>', 'under this revision alone', parsePositiveInt)
    .option('--draft', 'under the draft alone')
    .addHelpText(
      'after',
      examples(
        'bulkhead explain web-1 db-1 tcp/5432',
        'bulkhead explain app=billing 192.0.2.10 tcp/27000 --draft',
      ),
    )
    .action(
      async (
        from: string,
        to: string,
        service: { protocol: string; port?: number },
        opts: { revision?: number; draft?: boolean },
        cmd: Command,
      ) => {
        if (opts.revision !== undefined && opts.draft) {
          throw new CliError('USAGE', 'explain takes --revision or --draft, not both');
        }
        const body: Row = { from, to, ...service };
        if (opts.revision !== undefined) body.revision = opts.revision;
        if (opts.draft) body.draft = true;
        const conn = await ctx.connect(cmd);
        const view = await conn.client.request<ExplainView>('POST', '/v1/explain', body);
        if (conn.format !== 'table') return conn.print(view);
        io.stdout(formatExplain(view));
      },
    );

  program
    .command('audit-policy')
    .description(
      'policy hygiene: unused, broad and shadowed rules, workloads long in monitor, stale tokens; each with a fix',
    )
    .option(
      '--days <n>',
      'no hits / still in monitor for this many days (default 30)',
      parsePositiveInt,
    )
    .option('--expiring-days <n>', 'tokens expiring within this many days (default 7)', parseCount)
    .option('--csv', 'CSV (kind,subject,detail,fix) instead of a table')
    .addHelpText(
      'after',
      examples('bulkhead audit-policy --days 90', 'bulkhead audit-policy --csv > hygiene.csv'),
    )
    .action(async (opts: { days?: number; expiringDays?: number; csv?: boolean }, cmd: Command) => {
      const query = new URLSearchParams();
      if (opts.days !== undefined) query.set('days', String(opts.days));
      if (opts.expiringDays !== undefined) query.set('expiringDays', String(opts.expiringDays));
      const conn = await ctx.connect(cmd);
      const view = await conn.client.request<HygieneView>('GET', withQuery('/v1/hygiene', query));
      if (opts.csv) return io.stdout(hygieneCsv(view));
      if (conn.format !== 'table') return conn.print(view);
      io.stdout(formatHygiene(view));
    });
}
