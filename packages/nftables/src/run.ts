// Shared by the real backends: turn a transaction into one JSON batch and parse list answers.
import type { NftCommand, NftObject } from './driver.js';
import { NftError } from './errors.js';
import type { Transaction } from './transaction.js';

/** The batch text for a transaction; throws the queued error instead of building a bad batch. */
export function batchOf(tx: Transaction): string {
  if (tx.error !== undefined) throw tx.error;
  return tx.json;
}

/** Splits a read command (`{list: {what: arg}}` or `{reset: {what: arg}}`); NFT_INVALID otherwise. */
export function readCommandOf(command: NftCommand): {
  verb: 'list' | 'reset';
  what: string;
  arg: unknown;
} {
  const keys = command !== null && typeof command === 'object' ? Object.keys(command) : [];
  const verb = keys[0];
  const body = verb === undefined ? undefined : command[verb];
  const entries = body !== null && typeof body === 'object' ? Object.entries(body) : [];
  if (keys.length !== 1 || (verb !== 'list' && verb !== 'reset') || entries.length !== 1) {
    throw new NftError(
      'NFT_INVALID',
      'list() takes exactly one {list: {what: ...}} or {reset: {what: ...}} command',
    );
  }
  const [what, arg] = entries[0] as [string, unknown];
  return { verb, what, arg };
}

/** The batch text for one read command. */
export function readBatchOf(command: NftCommand): string {
  readCommandOf(command);
  return JSON.stringify({ nftables: [command] });
}

/** Parses nft's JSON answer, dropping the metainfo object. */
export function parseListOutput(text: string): NftObject[] {
  if (text.trim() === '') return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new NftError('NFT_LIST_FAILED', 'nft returned output that is not JSON', { cause });
  }
  const items = (parsed as { nftables?: unknown }).nftables;
  if (!Array.isArray(items)) {
    throw new NftError('NFT_LIST_FAILED', 'nft output has no nftables array', { cause: text });
  }
  return items.filter((o: NftObject) => !('metainfo' in o));
}

/** nft's error text, trimmed of the blank lines it adds. */
export function errorText(text: string): string {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .join('\n');
}
