import { accessSync, constants } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
import type { NftDriver } from './driver.js';
import { NftError } from './errors.js';
import { createExecNft } from './exec.js';
import { createLibNft } from './libnft.js';

export type { NftCommand, NftDriver, NftObject } from './driver.js';
export { elementKey, keyOfElement } from './elements.js';
export type { NftErrorCode } from './errors.js';
export { NftError } from './errors.js';
export type { ExecNftOptions } from './exec.js';
export { createExecNft } from './exec.js';
export type { LibNftOptions } from './libnft.js';
export { createLibNft, trimHeap } from './libnft.js';
export type { NftEvent, NftMonitor, NftMonitorOptions } from './monitor.js';
export { createNftMonitor, parseMonitorLine } from './monitor.js';
export type { NftVerb } from './transaction.js';
export { NFT_FAMILIES, Transaction } from './transaction.js';

export interface NftDriverOptions {
  /** 'auto' (default) uses libnftables when it loads and falls back to the nft binary. */
  backend?: 'auto' | 'libnftables' | 'nft';
  /** For the nft backend: the binary; default `nft` from PATH. */
  nftPath?: string;
}

/** Creates the nftables driver for this host; `driver.backend` says which one was chosen. */
export function createNftDriver(options: NftDriverOptions = {}): NftDriver {
  const backend = options.backend ?? 'auto';
  if (backend === 'libnftables') return createLibNft();
  if (backend === 'auto') {
    try {
      return createLibNft();
    } catch (err) {
      if (!(err instanceof NftError) || err.code !== 'NFT_UNAVAILABLE') throw err;
    }
  }
  const nftPath = options.nftPath ?? 'nft';
  if (!findExecutable(nftPath)) {
    throw new NftError(
      'NFT_UNAVAILABLE',
      `neither libnftables nor an executable '${nftPath}' found`,
    );
  }
  return createExecNft({ nftPath });
}

function findExecutable(cmd: string): boolean {
  const candidates =
    isAbsolute(cmd) || cmd.includes('/')
      ? [cmd]
      : (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin')
          .split(delimiter)
          .map((d) => join(d, cmd));
  return candidates.some((p) => {
    try {
      accessSync(p, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}
