// Gives back the memory a large apply leaves behind. V8 collects garbage only when the program
// allocates, which an idle agent hardly does: after a 100k-element cold load 57 MiB of heap
// stayed in use, and the new space at the 32 MiB its peak grew it to, for minutes (RSS 157 MiB,
// bench/agent-apply.ts). Full collections once allocation has been quiet (state-writer.ts
// says when) free the garbage and shrink the new space; malloc_trim then returns what native
// code freed (settled RSS 86-89 MiB). Must not run on a hot path: a full collection costs tens
// of milliseconds.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { trimHeap } from '@bulkhead/nftables';

/** Quiet time before a collection: V8 shrinks the new space only at a low allocation rate (5 s window). */
export const QUIET_MS = 6_000;

let gc: (() => void) | null | undefined;

/** A full collection of V8's heap (where it can be reached), then malloc_trim. */
export function releaseMemory(): void {
  if (gc === undefined) {
    try {
      // Without `node --expose-gc`: the flag set at run time installs `gc` in contexts made after it.
      setFlagsFromString('--expose-gc');
      gc = runInNewContext('gc') as () => void;
    } catch {
      gc = null; // a runtime without it: the trim alone still returns malloc's free pages
    }
  }
  gc?.();
  trimHeap();
}
