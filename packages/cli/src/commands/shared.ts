// What every command module is handed: the writers, the clock, the exit code, and the
// connection to the control plane built from the global options. Also the few pieces more
// than one domain uses (list commands, loading resource files, impact-checked writes).
// Registers no command of its own and knows no REST path beyond what it is given.
import type { ImpactView } from '@bulkhead/api';
import { type Command, Option } from 'commander';
import { type Client, createClient } from '../client.js';
import { type Env, resolveConnection } from '../config.js';
import { formatDiagnostic, loadDocuments, type ResourceDocument } from '../documents.js';
import { CliError, exitCodeFor } from '../errors.js';
import type { KindInfo } from '../kinds.js';
import { formatImpact } from '../lifecycle-text.js';
import { type OutputFormat, render } from '../output.js';
import { timeOption } from '../visibility-text.js';

/** Where a run writes and what it reads from its environment; tests pass their own. */
export interface Io {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Defaults to `process.env`. */
  env?: Env;
  /** The clock for `--since 24h` and `2m ago`; defaults to the system clock. */
  now?: () => Date;
}

export type Row = Record<string, unknown>;

export interface GlobalOptions {
  server?: string;
  token?: string;
  output: OutputFormat;
}

/** A command's link to the server, made once its own options have been checked. */
export interface Connection {
  client: Client;
  format: OutputFormat;
  /** Renders in the chosen format (a table with `columns`) to stdout. */
  print: (value: unknown, columns?: KindInfo['columns']) => void;
}

export interface CommandContext {
  /** Writers that already make text safe for a terminal (see run.ts). */
  readonly io: { stdout: (text: string) => void; stderr: (text: string) => void };
  readonly env: Env;
  readonly now: () => Date;
  /** The exit code of a command that succeeded but has something to say (diff, impact). */
  setExitCode(code: number): void;
  globals(cmd: Command): GlobalOptions;
  connect(cmd: Command): Promise<Connection>;
}

export function createCommandContext(
  io: CommandContext['io'],
  env: Env,
  now: () => Date,
  setExitCode: (code: number) => void,
): CommandContext {
  const globals = (cmd: Command) => cmd.optsWithGlobals() as GlobalOptions;
  return {
    io,
    env,
    now,
    setExitCode,
    globals,
    async connect(cmd) {
      const opts = globals(cmd);
      const client = createClient(await resolveConnection(opts, env));
      return {
        client,
        format: opts.output,
        print: (value, columns) => io.stdout(render(value, opts.output, columns)),
      };
    },
  };
}

/** `--since <time>`: a duration back from the context's clock, or an ISO date. */
export function sinceOption(ctx: CommandContext, flag: string, what: string): Option {
  return new Option(
    `${flag} <time>`,
    `${what}: a duration back from now (30m, 24h, 7d) or ISO`,
  ).argParser(timeOption(ctx.now));
}

/** The `Examples:` block at the end of a command's --help: every command has one. */
export function examples(...commandLines: string[]): string {
  return `\nExamples:\n${commandLines.map((line) => `  $ ${line}\n`).join('')}`;
}

/** A command that lists one collection as a table (or -o json|yaml). */
export function listCommand(
  parent: Command,
  ctx: CommandContext,
  spec: {
    name: string;
    description: string;
    path: string;
    columns: KindInfo['columns'];
    examples: string[];
  },
): Command {
  return parent
    .command(spec.name)
    .description(spec.description)
    .addHelpText('after', examples(...spec.examples))
    .action(async (_opts: unknown, cmd: Command) => {
      const conn = await ctx.connect(cmd);
      conn.print(await conn.client.request('GET', spec.path), spec.columns);
    });
}

/** Resource files, all valid, or exit 3 with each problem on stderr and nothing sent. */
export async function loadValid(
  ctx: CommandContext,
  paths: string[],
  command: string,
): Promise<ResourceDocument[]> {
  if (paths.length === 0) throw new CliError('USAGE', `${command} needs -f FILE|DIR`);
  const { documents, diagnostics } = await loadDocuments(paths);
  if (diagnostics.length > 0) {
    for (const d of diagnostics) ctx.io.stderr(`${formatDiagnostic(d)}\n`);
    throw new CliError(
      'INVALID_INPUT',
      `${diagnostics.length} problem(s) in the input files; nothing was sent`,
    );
  }
  return documents;
}

/**
 * Runs an impact-checked write. When the server refuses it because observed flows would be
 * newly blocked, prints what would break and how to go ahead, and resolves to undefined.
 */
export async function impactChecked<T>(
  ctx: CommandContext,
  conn: Connection,
  verb: string,
  write: () => Promise<T>,
): Promise<T | undefined> {
  try {
    return await write();
  } catch (err) {
    if (!(err instanceof CliError) || err.code !== 'IMPACT_CONFIRMATION_REQUIRED') throw err;
    const impact = err.response?.impact as ImpactView | undefined;
    if (impact && conn.format !== 'table') conn.print(impact);
    else if (impact) ctx.io.stdout(formatImpact(impact, ctx.now()));
    const what = impact
      ? `${impact.summary.newlyBlocked} observed flows would be newly blocked`
      : err.message;
    ctx.io.stderr(`refused: ${what}; re-run with --confirm to ${verb} anyway\n`);
    ctx.setExitCode(exitCodeFor(err));
    return undefined;
  }
}
