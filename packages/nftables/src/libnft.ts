import koffi from 'koffi';
import type { NftDriver, NftObject } from './driver.js';
import { NftError } from './errors.js';
import { batchOf, errorText, parseListOutput, readBatchOf } from './run.js';
import type { Transaction } from './transaction.js';

// From libnftables.h (nftables 1.0.6): NFT_CTX_OUTPUT_JSON = 1 << 4; NFT_CTX_DEFAULT = 0.
const NFT_CTX_OUTPUT_JSON = 1 << 4;
// NFT_CTX_OUTPUT_TERSE = 1 << 11: omit set contents (nft -t).
const NFT_CTX_OUTPUT_TERSE = 1 << 11;

export interface LibNftOptions {
  /** Library to load; default libnftables.so.1 from the system search path. */
  libraryPath?: string;
}

type AsyncFn = { async: (...args: unknown[]) => void } & ((...args: unknown[]) => unknown);

interface Api {
  ctxNew: AsyncFn;
  setFlags: AsyncFn;
  bufferOutput: AsyncFn;
  bufferError: AsyncFn;
  getOutput: AsyncFn;
  getError: AsyncFn;
  run: AsyncFn;
  setDryRun: AsyncFn;
  free: AsyncFn;
}

/**
 * Batches (or read outputs) at least this long are followed by malloc_trim(0): libnftables
 * parses a large batch into hundreds of MiB of C heap (JSON tree, expressions, netlink
 * messages) and frees it, but glibc keeps the freed pages in its arenas, so without a trim
 * the agent's RSS stays at the peak of its largest batch for good.
 */
const TRIM_AFTER_CHARS = 1 << 20;

let mallocTrim: ((pad: number) => number) | null | undefined;

/**
 * glibc's malloc_trim(0): give the freed pages of every malloc arena back to the system
 * (nothing where the libc has none, e.g. musl). Exported for callers that free large native
 * buffers of their own (Node's Buffers are malloc'ed too).
 */
export function trimHeap(): void {
  if (mallocTrim === undefined) {
    try {
      mallocTrim = koffi.load('libc.so.6').func('int malloc_trim(size_t pad)') as (
        pad: number,
      ) => number;
    } catch {
      mallocTrim = null;
    }
  }
  mallocTrim?.(0);
}

// One binding per library path: koffi keeps a loaded library for the process lifetime anyway.
const apis = new Map<string, Api>();

function load(path: string): Api {
  const cached = apis.get(path);
  if (cached !== undefined) return cached;
  const lib = koffi.load(path);
  const ctx = koffi.pointer(koffi.opaque('nft_ctx'));
  const f = (name: string, ret: string | object, args: (string | object)[]): AsyncFn =>
    lib.func(name, ret as string, args as string[]) as unknown as AsyncFn;
  const api: Api = {
    ctxNew: f('nft_ctx_new', ctx, ['uint32']),
    setFlags: f('nft_ctx_output_set_flags', 'void', [ctx, 'uint32']),
    bufferOutput: f('nft_ctx_buffer_output', 'int', [ctx]),
    bufferError: f('nft_ctx_buffer_error', 'int', [ctx]),
    getOutput: f('nft_ctx_get_output_buffer', 'const char *', [ctx]),
    getError: f('nft_ctx_get_error_buffer', 'const char *', [ctx]),
    run: f('nft_run_cmd_from_buffer', 'int', [ctx, 'const char *']),
    setDryRun: f('nft_ctx_set_dry_run', 'void', [ctx, 'bool']),
    free: f('nft_ctx_free', 'void', [ctx]),
  };
  apis.set(path, api);
  return api;
}

/**
 * The libnftables backend: the same library `nft` uses, called in-process through koffi
 * (~0.1 ms per small batch instead of ~7 ms per nft process). Batches run on koffi's worker
 * thread (`.async`) because a 20k-element set takes ~0.5 s to load and must not stall the
 * event loop; calls are serialised because a context's output buffers are shared state.
 */
export function createLibNft(options: LibNftOptions = {}): NftDriver {
  let a: Api;
  try {
    a = load(options.libraryPath ?? 'libnftables.so.1');
  } catch (cause) {
    throw new NftError('NFT_UNAVAILABLE', 'cannot load libnftables', { cause });
  }
  const newContext = (terse = false): unknown => {
    const c = a.ctxNew(0);
    if (c === null) throw new NftError('NFT_UNAVAILABLE', 'nft_ctx_new failed');
    a.setFlags(c, NFT_CTX_OUTPUT_JSON | (terse ? NFT_CTX_OUTPUT_TERSE : 0));
    a.bufferOutput(c);
    a.bufferError(c);
    return c;
  };
  let ctx = newContext();

  let closed = false;
  let tail: Promise<unknown> = Promise.resolve();

  const runAsync = (c: unknown, text: string): Promise<number> =>
    new Promise((resolve, reject) => {
      a.run.async(c, text, (err: unknown, rc: number) => (err ? reject(err) : resolve(rc)));
    });

  // One command at a time on this context; a failure does not poison the queue.
  function exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (closed) return Promise.reject(new NftError('NFT_UNAVAILABLE', 'driver is closed'));
    const next = tail.then(fn, fn);
    tail = next.catch(() => undefined);
    return next;
  }

  async function runBatch(
    c: unknown,
    text: string,
    dryRun: boolean,
  ): Promise<{ rc: number; out: string; err: string }> {
    a.setDryRun(c, dryRun);
    try {
      const rc = await runAsync(c, text);
      // Reading the buffers also resets them for the next call.
      const out = (a.getOutput(c) as string | null) ?? '';
      const err = (a.getError(c) as string | null) ?? '';
      return { rc, out, err };
    } finally {
      if (dryRun) a.setDryRun(c, false);
    }
  }

  // libnftables 1.0.6 answers a repeated `reset counters` (and lists of sets the packet path
  // fills) from the context's cache: stale values, and no reset. A read therefore runs on a
  // context of its own (nft_ctx_new is cheap next to the read), freed right after.
  async function runRead(
    text: string,
    terse: boolean,
  ): Promise<{ rc: number; out: string; err: string }> {
    const c = newContext(terse);
    try {
      return await runBatch(c, text, false);
    } finally {
      a.free(c);
    }
  }

  async function write(tx: Transaction, dryRun: boolean): Promise<void> {
    const text = batchOf(tx);
    const large = text.length >= TRIM_AFTER_CHARS;
    const { rc, err } = await exclusive(async () => {
      try {
        return await runBatch(ctx, text, dryRun);
      } finally {
        // The context's cache keeps every set the batch declared, elements included (~90 MiB
        // for a 100k-element set): a fresh context refetches only what a later command needs.
        if (large) {
          a.free(ctx);
          ctx = newContext();
        }
      }
    });
    if (large) trimHeap();
    if (rc !== 0) {
      const detail = errorText(err);
      throw new NftError('NFT_APPLY_FAILED', `nftables refused the batch: ${detail}`, {
        cause: detail,
      });
    }
  }

  return {
    backend: 'libnftables',
    apply: (tx) => write(tx, false),
    check: (tx) => write(tx, true),
    async list(command, options): Promise<NftObject[]> {
      const text = readBatchOf(command);
      const { rc, out, err } = await exclusive(() => runRead(text, options?.terse ?? false));
      if (out.length >= TRIM_AFTER_CHARS) trimHeap();
      if (rc !== 0) {
        const detail = errorText(err);
        throw new NftError('NFT_LIST_FAILED', `nftables refused the read: ${detail}`, {
          cause: detail,
        });
      }
      return parseListOutput(out);
    },
    close(): void {
      if (closed) return;
      closed = true;
      void tail.then(() => a.free(ctx));
    },
  };
}
