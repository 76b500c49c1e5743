// Runs the operators' tools (systemd-analyze, promtool, bash scripts) for the deploy/ checks.
// It owns process spawning for test/deploy and nothing else. A missing tool is a failure with
// the package to install, never a skip: CI must not pass a check it did not run.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DEPLOY = join(REPO, 'deploy');

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

const PACKAGE: Record<string, string> = {
  'systemd-analyze': 'systemd',
  promtool: 'prometheus',
};

/** scripts/setup.sh puts promtool here when the machine has none of its own. */
const LOCAL_TOOLS = join(REPO, '.tools');

export function run(
  cmd: string,
  args: string[],
  options: { input?: string; cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Run {
  const local = join(LOCAL_TOOLS, cmd);
  const r = spawnSync(existsSync(local) ? local : cmd, args, {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    ...options,
  });
  if (r.error) {
    const pkg = PACKAGE[cmd];
    throw new Error(
      pkg
        ? `${cmd} is missing: scripts/setup.sh gets it (from Debian's ${pkg} package)`
        : `${cmd}: ${r.error.message}`,
    );
  }
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** `--help` of a built program (a `packages/<pkg>/dist/main.js` path relative to the repo). */
export function helpOf(main: string): string {
  const r = run(process.execPath, [join(REPO, main), '--help']);
  if (r.code !== 0) throw new Error(`${main} --help exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** The `--flag` words of an argument list that `help` does not document. */
export function unknownFlags(args: string[], help: string): string[] {
  return args.filter((a) => /^--[a-z-]+$/.test(a) && !help.includes(`${a} `));
}
