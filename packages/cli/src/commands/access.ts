// Access: logging in (checking and storing the server and token), API tokens, the audit
// log, and the raw `api` escape hatch. Holds no policy logic; the token is only ever sent to
// the server it was stored with (config.ts decides that).
import { type Command, Option } from 'commander';
import { createClient } from '../client.js';
import { checkServer, saveConfig } from '../config.js';
import { CliError } from '../errors.js';
import { AUDIT_COLUMNS, lookupKind } from '../kinds.js';
import { render } from '../output.js';
import { parseCount, parsePositiveInt, readFileOrUsage, withQuery } from './options.js';
import { type CommandContext, examples, listCommand } from './shared.js';

export function registerAccessCommands(program: Command, ctx: CommandContext): void {
  const { io, env } = ctx;

  program
    .command('login')
    .description('check a token against the server, then store both in the config file (mode 0600)')
    .option('--token-file <file>', 'read the token from this file (keep it mode 0600)')
    .addHelpText(
      'after',
      examples(
        'bulkhead login --server http://127.0.0.1:8080 --token-file /var/lib/bulkhead/initial-admin-token',
        'BULKHEAD_TOKEN=bh_... bulkhead login --server http://127.0.0.1:8080',
      ),
    )
    .action(async (opts: { tokenFile?: string }, cmd: Command) => {
      const g = ctx.globals(cmd);
      const server = g.server || env.BULKHEAD_SERVER;
      if (!server) {
        throw new CliError(
          'USAGE',
          'login needs --server URL (or BULKHEAD_SERVER), such as --server http://127.0.0.1:8080',
        );
      }
      checkServer(server, g.server ? '--server' : 'BULKHEAD_SERVER');
      let token = g.token;
      if (!token && opts.tokenFile) token = (await readFileOrUsage(opts.tokenFile)).trim();
      token ||= env.BULKHEAD_TOKEN;
      if (!token) {
        throw new CliError(
          'USAGE',
          "login needs a token: --token-file FILE (a file of mode 0600, such as the control plane's initial-admin-token), --token TOKEN or BULKHEAD_TOKEN",
        );
      }
      await createClient({ server, token }).request('GET', '/v1/workloads');
      const path = await saveConfig(env, { server, token });
      io.stdout(`logged in to ${server}; saved ${path}\n`);
    });

  const token = program
    .command('token')
    .alias('tokens')
    .description('API tokens for admins and pipelines')
    .addHelpText(
      'after',
      examples('bulkhead token create --name ci --role admin', 'bulkhead token list'),
    );
  token
    .command('create')
    .description('create an API token (shown once)')
    .requiredOption('--name <name>', 'who or what uses it (the actor in the audit log)')
    .addOption(
      new Option('--role <role>', 'admin may change things, viewer may only read')
        .choices(['admin', 'viewer'])
        .makeOptionMandatory(true),
    )
    .addHelpText('after', examples('bulkhead token create --name ci --role admin'))
    .action(async (opts: { name: string; role: string }, cmd: Command) => {
      const conn = await ctx.connect(cmd);
      conn.print(
        await conn.client.request('POST', '/v1/tokens', { name: opts.name, role: opts.role }),
      );
    });

  const tokens = lookupKind('tokens');
  listCommand(token, ctx, {
    name: 'list',
    description: 'list API tokens (the same as get tokens)',
    path: tokens.path,
    columns: tokens.columns,
    examples: ['bulkhead token list'],
  });

  program
    .command('audit')
    .description('the audit log, newest first')
    .addHelpText('after', examples('bulkhead audit --limit 20', 'bulkhead audit -o json'))
    .option('--limit <n>', 'at most this many entries', parsePositiveInt)
    .option('--since <id>', 'only entries after this audit entry id', parseCount)
    .action(async (opts: { limit?: number; since?: number }, cmd: Command) => {
      const conn = await ctx.connect(cmd);
      const query = new URLSearchParams();
      if (opts.limit !== undefined) query.set('limit', String(opts.limit));
      if (opts.since !== undefined) query.set('since', String(opts.since));
      conn.print(await conn.client.request('GET', withQuery('/v1/audit', query)), AUDIT_COLUMNS);
    });

  program
    .command('api')
    .description('raw REST call; prints the JSON answer')
    .argument('<method>', 'GET, PUT, POST, PATCH or DELETE')
    .argument('<path>', 'e.g. /v1/workloads')
    .option('--data <json>', 'request body: JSON, or @file to read it from a file')
    .addHelpText(
      'after',
      examples(
        'bulkhead api GET /v1/workloads',
        `bulkhead api PATCH /v1/workloads/db-1 --data '{"labels":{"app":"shop","role":"db"}}'`,
      ),
    )
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
      const conn = await ctx.connect(cmd);
      const answer = await conn.client.request(
        method.toUpperCase(),
        path.startsWith('/') ? path : `/${path}`,
        body,
      );
      if (answer === undefined) return;
      // Like `gh api`: JSON unless YAML was asked for; tables do not fit arbitrary answers.
      io.stdout(render(answer, conn.format === 'yaml' ? 'yaml' : 'json'));
    });
}
