import { chmod, lstat, mkdtemp, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { secureStateDir, writeFileAtomic } from './state.js';

describe('state dir modes', () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'bulkhead-state-'));
  });
  afterEach(() => rm(root, { recursive: true, force: true }));

  const mode = async (p: string) => (await stat(p)).mode & 0o777;

  it('narrows a dir and files an older agent left wide open; leaves symlinks alone', async () => {
    const dir = join(root, 'state');
    const outside = join(root, 'outside');
    await writeFile(outside, 'x', { mode: 0o644 });
    await secureStateDir(dir); // creates it
    await chmod(dir, 0o755);
    await writeFile(join(dir, 'agent.crt'), 'pem', { mode: 0o644 });
    await symlink(outside, join(dir, 'link'));
    await secureStateDir(dir);
    expect(await mode(dir)).toBe(0o700);
    expect(await mode(join(dir, 'agent.crt'))).toBe(0o600);
    expect(await mode(outside)).toBe(0o644);
    expect((await lstat(join(dir, 'link'))).isSymbolicLink()).toBe(true);
  });

  it('writes 0600 files whatever the umask', async () => {
    const old = process.umask(0o000);
    try {
      await writeFileAtomic(join(root, 'f'), 'data');
    } finally {
      process.umask(old);
    }
    expect(await mode(join(root, 'f'))).toBe(0o600);
  });
});
