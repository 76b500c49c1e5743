import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { AgentError } from './errors.js';

/** Names of the files in the state dir (see README). */
export const STATE_FILES = {
  ruleSet: 'ruleset.bin',
  agentId: 'agent-id',
  key: 'agent.key',
  cert: 'agent.crt',
  ca: 'ca.crt',
  telemetrySeq: 'telemetry-seq',
} as const;

export function statePath(stateDir: string, file: keyof typeof STATE_FILES): string {
  return join(stateDir, STATE_FILES[file]);
}

/**
 * Write via a temporary file, fsync and rename: a crash leaves either the old or the new
 * content, never a torn file that would stop the agent from restoring its rules.
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  mode = 0o600,
): Promise<void> {
  const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    const fh = await open(tmp, 'w', mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new AgentError('STATE_IO', `cannot write ${path}`, { cause: err });
  }
}

/** The file's bytes, or undefined when it does not exist. */
export async function readFileIfExists(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new AgentError('STATE_IO', `cannot read ${path}`, { cause: err });
  }
}
