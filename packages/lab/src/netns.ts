// Lab namespaces on this machine: `ip`/`nft` administration in the root namespace (never
// traffic), the names that tell a crashed lab from a live one, and their removal.
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { type ExecResult, LabError } from './types.js';

// Namespace names carry the creating pid, so a later run can tell a crashed lab (pid gone)
// from one that a concurrent run is still using. Interface names never need to be unique
// machine-wide: every interface lives in a lab namespace (`eth0` in each host, `p<i>` + `br0`
// in the switch), which keeps them far below the 15-character limit.
export const PREFIX = 'bhlab-';
export const NAME_RE = /^bhlab-(\d+)-(\d+)[-_]/;

/** A command in the root namespace (only `ip`/`nft` administration, never traffic). */
export function run(argv: string[]): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    execFile(argv[0]!, argv.slice(1), (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') reject(err);
      else resolve({ code: typeof err?.code === 'number' ? err.code : 0, stdout, stderr });
    });
  });
}

export async function must(argv: string[]): Promise<string> {
  const r = await run(argv).catch((cause) => {
    throw new LabError('LAB_SETUP_FAILED', `${argv.join(' ')}: ${cause}`, { cause });
  });
  if (r.code !== 0) {
    throw new LabError(
      'LAB_SETUP_FAILED',
      `${argv.join(' ')} exited ${r.code}: ${r.stderr.trim()}`,
    );
  }
  return r.stdout;
}

export function listNetns(): string[] {
  try {
    return readdirSync('/run/netns');
  } catch {
    return [];
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function killNetnsPids(netns: string): Promise<void> {
  const r = await run(['ip', 'netns', 'pids', netns]).catch(() => undefined);
  for (const pid of (r?.stdout ?? '').split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

export async function deleteNetns(names: string[]): Promise<void> {
  // A namespace outlives its name while a process is still inside, so empty it first.
  await Promise.all(names.map(killNetnsPids));
  await Promise.all(names.map((n) => run(['ip', 'netns', 'del', n]).catch(() => undefined)));
}

/** Delete the namespaces of labs whose creating process no longer exists. */
export async function cleanupStaleLabs(): Promise<string[]> {
  const stale = listNetns().filter((n) => {
    const m = NAME_RE.exec(n);
    return m !== null && !alive(Number(m[1]));
  });
  await deleteNetns(stale);
  return stale;
}

export async function checkPrerequisites(): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new LabError('LAB_PREREQUISITE', 'the e2e lab needs root (network namespaces)');
  }
  for (const tool of [
    ['ip', '-V'],
    ['nft', '--version'],
  ]) {
    const ok = await run(tool).then(
      (r) => r.code === 0,
      () => false,
    );
    if (!ok) {
      throw new LabError(
        'LAB_PREREQUISITE',
        `\`${tool[0]}\` is missing: apt-get install -y iproute2 nftables`,
      );
    }
  }
}

export function freeIndex(): number {
  const used = new Set(
    listNetns()
      .map((n) => NAME_RE.exec(n))
      .filter((m) => m !== null)
      .map((m) => Number(m[2])),
  );
  for (let i = 0; i < 256; i++) if (!used.has(i)) return i;
  throw new LabError('LAB_SETUP_FAILED', 'all 256 lab indexes are in use; run cleanupStaleLabs()');
}
