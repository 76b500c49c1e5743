// The `bulkhead` program: global options, error reporting and exit codes, and the wiring of
// each domain's commands (src/commands/<domain>.ts). No command lives here.
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { registerAccessCommands } from './commands/access.js';
import { registerFleetCommands } from './commands/fleet.js';
import { registerLifecycleCommands } from './commands/lifecycle.js';
import { registerPolicyCommands } from './commands/policy.js';
import { registerRolloutCommands } from './commands/rollout.js';
import { createCommandContext, examples, type Io } from './commands/shared.js';
import { registerVisibilityCommands } from './commands/visibility.js';
import { CliError, exitCodeFor } from './errors.js';
import { escapeControls, OUTPUT_FORMATS } from './output.js';

/** This package's version, from its package.json (beside both src/ and dist/). */
export const CLI_VERSION: string = JSON.parse(
  readFileSync(new URL('../package.json', import.meta.url), 'utf8'),
).version;

/** Runs `bulkhead` with `argv` (without node and script), resolving to the exit code. */
export async function run(argv: string[], given: Io): Promise<number> {
  // The one door to the terminal: whatever a command, commander or an error message writes,
  // no control character from an agent, an admin or the server gets through raw.
  const io: Io = {
    ...given,
    stdout: (text) => given.stdout(escapeControls(text)),
    stderr: (text) => given.stderr(escapeControls(text)),
  };
  let exitCode = 0;
  const program = buildProgram(io, (code) => {
    exitCode = code;
  });
  try {
    await program.parseAsync(exportOutputDir(argv), { from: 'user' });
    return exitCode;
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

/** The whole command tree; exported for the tests that walk it (help texts, descriptions). */
export function buildProgram(io: Io, setExitCode: (code: number) => void): Command {
  const program = new Command('bulkhead')
    .description('Admin command of the Bulkhead control plane')
    .version(CLI_VERSION, '-V, --version', 'print the version')
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
    // Every command's --help lists --server, --token and -o too: they work after any command.
    .configureHelp({ showGlobalOptions: true })
    .showSuggestionAfterError(true)
    .option(
      '--server <url>',
      'control plane REST URL with its scheme, e.g. http://127.0.0.1:8080 (env BULKHEAD_SERVER)',
    )
    .option('--token <token>', 'API token (env BULKHEAD_TOKEN)')
    .addOption(
      new Option('-o, --output <format>', 'output format').choices(OUTPUT_FORMATS).default('table'),
    )
    .addHelpText(
      'after',
      examples(
        'bulkhead login --server http://127.0.0.1:8080 --token-file /var/lib/bulkhead/initial-admin-token',
        'bulkhead workloads',
        'bulkhead <command> --help',
      ),
    );
  const ctx = createCommandContext(
    io,
    io.env ?? process.env,
    io.now ?? (() => new Date()),
    setExitCode,
  );
  registerAccessCommands(program, ctx);
  registerPolicyCommands(program, ctx);
  registerLifecycleCommands(program, ctx);
  registerRolloutCommands(program, ctx);
  registerFleetCommands(program, ctx);
  registerVisibilityCommands(program, ctx);
  return program;
}
