// The one interface every nftables backend implements (libnftables via FFI, the `nft`
// binary, the in-memory fake). Input is always libnftables JSON (libnftables-json(5)):
// nothing is ever spliced into nft syntax, so injection is impossible by construction.

/** One libnftables JSON command, e.g. `{ add: { table: { family: 'inet', name: 'bulkhead' } } }`. */
export type NftCommand = Record<string, unknown>;

/** One object of a `list` answer, e.g. `{ counter: { family, table, name, packets, bytes } }`. */
export type NftObject = Record<string, unknown>;

export interface NftDriver {
  /** Which backend this is: 'libnftables' | 'nft' | 'fake'. */
  readonly backend: string;
  /**
   * Apply the transaction as one atomic batch: either every command takes effect or none.
   * Throws NftError (code NFT_INVALID when the transaction holds a queued error,
   * NFT_APPLY_FAILED when the kernel refuses it).
   */
  apply(tx: Transaction): Promise<void>;
  /** Like apply, but only checks the batch (nft --check); changes nothing. */
  check(tx: Transaction): Promise<void>;
  /**
   * Run a read command (`list` or `reset`) and return the objects of its answer without the
   * leading metainfo object. `terse` leaves set and map elements out (nft -t), which makes
   * listing a table with large sets cheap. Throws NftError code NFT_LIST_FAILED.
   */
  list(command: NftCommand, options?: { terse?: boolean }): Promise<NftObject[]>;
  /** Release native resources. */
  close(): void;
}

// Transaction is defined in transaction.ts; re-declared here as a type to keep imports acyclic.
import type { Transaction } from './transaction.js';
