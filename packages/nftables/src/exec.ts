import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NftDriver, NftObject } from './driver.js';
import { NftError } from './errors.js';
import { batchOf, errorText, parseListOutput, readBatchOf } from './run.js';
import type { Transaction } from './transaction.js';

export interface ExecNftOptions {
  /** The nft binary; default `nft` from PATH. */
  nftPath?: string;
}

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * The `nft` binary backend: one process per call, the JSON batch in one file (`nft -j -f
 * FILE`), so the batch is still one atomic transaction. Slower than libnftables (a process
 * per call) but needs no native module. Not `-f -` on stdin: nft opens /dev/stdin, and
 * Node's child stdio is a socketpair, which open(2) refuses with ENXIO.
 */
export function createExecNft(options: ExecNftOptions = {}): NftDriver {
  const nftPath = options.nftPath ?? 'nft';
  let closed = false;

  async function run(flags: string[], input: string): Promise<Result> {
    if (closed) throw new NftError('NFT_UNAVAILABLE', 'driver is closed');
    const dir = await mkdtemp(join(tmpdir(), 'bulkhead-nft-'));
    try {
      const file = join(dir, 'batch.json');
      await writeFile(file, input, { mode: 0o600 });
      return await spawnNft([...flags, '-f', file]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  function spawnNft(args: string[]): Promise<Result> {
    return new Promise((resolve, reject) => {
      const child = spawn(nftPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on('data', (b: Buffer) => out.push(b));
      child.stderr.on('data', (b: Buffer) => err.push(b));
      child.on('error', (cause) =>
        reject(new NftError('NFT_UNAVAILABLE', `cannot run ${nftPath}`, { cause })),
      );
      child.on('close', (code) =>
        resolve({
          code,
          stdout: Buffer.concat(out).toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8'),
        }),
      );
    });
  }

  async function write(tx: Transaction, args: string[]): Promise<void> {
    const text = batchOf(tx);
    const r = await run(args, text);
    if (r.code !== 0) {
      const detail = errorText(r.stderr) || `exit code ${r.code}`;
      throw new NftError('NFT_APPLY_FAILED', `nftables refused the batch: ${detail}`, {
        cause: detail,
      });
    }
  }

  return {
    backend: 'nft',
    apply: (tx) => write(tx, ['-j']),
    check: (tx) => write(tx, ['-c', '-j']),
    async list(command, options): Promise<NftObject[]> {
      const r = await run(options?.terse ? ['-j', '-t'] : ['-j'], readBatchOf(command));
      if (r.code !== 0) {
        const detail = errorText(r.stderr) || `exit code ${r.code}`;
        throw new NftError('NFT_LIST_FAILED', `nftables refused the read: ${detail}`, {
          cause: detail,
        });
      }
      return parseListOutput(r.stdout);
    },
    close(): void {
      closed = true;
    },
  };
}
