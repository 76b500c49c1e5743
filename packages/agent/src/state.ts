import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { AgentError } from './errors.js';

/** Names of the files in the state dir (see README). */
export const STATE_FILES = {
  policy: 'policy.bin',
  rendering: 'dataplane.json',
  agentId: 'agent-id',
  key: 'agent.key',
  cert: 'agent.crt',
  ca: 'ca.crt',
  telemetrySeq: 'telemetry-seq',
} as const;

export function statePath(stateDir: string, file: keyof typeof STATE_FILES): string {
  return join(stateDir, STATE_FILES[file]);
}

// The state dir holds the agent's private key and its view of the host's firewall: owner only,
// whatever the umask (open's and mkdir's modes are masked by it; chmod's are not).
const DIR_MODE = 0o700;
const FILE_MODE = 0o600;

/**
 * Create the state dir if needed and make it and every file in it owner-only, also files an
 * older agent wrote with wider modes. Run once at start, before anything reads the dir.
 */
export async function secureStateDir(stateDir: string): Promise<void> {
  try {
    await mkdir(stateDir, { recursive: true, mode: DIR_MODE });
    await chmod(stateDir, DIR_MODE);
    for (const entry of await readdir(stateDir, { withFileTypes: true })) {
      if (entry.isFile()) await chmod(join(stateDir, entry.name), FILE_MODE);
    }
  } catch (err) {
    throw new AgentError('STATE_IO', `cannot secure the state dir ${stateDir}`, { cause: err });
  }
}

/**
 * Write via a temporary file (mode 0600), fsync and rename: a crash leaves either the old or
 * the new content, never a torn file that would stop the agent from restoring its rules.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await mkdir(dirname(path), { recursive: true, mode: DIR_MODE });
    const fh = await open(tmp, 'w', FILE_MODE);
    try {
      await fh.chmod(FILE_MODE);
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
