// Writes the applied policy (`policy.bin`) and what it was rendered with (`dataplane.json`) to
// the state dir after an apply. Persisting the whole state costs its size (encode + fsync), so it
// runs after the apply and applies that come meanwhile fold into the next write: a burst of small
// deltas costs one write of the newest state, always whole, never appended to. Must not apply
// anything nor read the files back (dataplane.ts restores, boot.ts loads at boot).
import { PolicyUpdate } from '@bulkhead/proto';
import type { Logger } from 'pino';
import { elementRange } from './group-elements.js';
import { QUIET_MS } from './heap.js';
import type { TableModel } from './model.js';
import { type Failsafe, type FlowTableOptions, groupSet } from './render.js';
import { writeFileAtomic } from './state.js';
import type { AppliedPolicy } from './update.js';

/** What `policy.bin` was rendered with besides the policy (`dataplane.json`, for the boot loader). */
export interface Rendering {
  failsafe: Failsafe;
  flowTable: FlowTableOptions;
}

/** The applied state as one full update (what the control plane would send on a resync). */
export function encodeApplied(applied: AppliedPolicy, model: TableModel): Uint8Array {
  const groups = [...applied.groups].map((id) => ({
    id,
    created: true,
    deleted: false,
    removed: [],
    added: ([4, 6] as const).flatMap((f) =>
      [...(model.sets.get(groupSet(id, f))?.elems?.keys() ?? [])].map(elementRange),
    ),
  }));
  return PolicyUpdate.encode({
    baseHash: '',
    hash: applied.hash,
    revision: applied.revision,
    full: true,
    last: true,
    ruleSet: applied.ruleSet,
    groups,
  }).finish();
}

/** Encoded state from which a write calls for a release (~60k ranges). */
export const LARGE_STATE = 1 << 20;

export interface StateWriter {
  /** Writes the newest snapshot soon (coalesced with writes already due). */
  schedule(): void;
  /** Resolves once nothing is being written. */
  idle(): Promise<void>;
  /**
   * True twice after the write of a large state (LARGE_STATE bytes or more): once QUIET_MS have
   * passed since it, and again QUIET_MS after that. The state left garbage (its encoding, the
   * batch text, the decoded update) worth a full collection and a trim (heap.ts): the first
   * frees it; V8 shrinks its new space only at a collection that follows a quiet interval it
   * measured (between two collections), so the second gives that back (measured: 123 -> 89 MiB
   * at 100k elements, where one collection left 100-117 MiB).
   */
  takeRelease(): boolean;
}

export function createStateWriter(options: {
  policyFile: string;
  renderingFile: string;
  logger: Logger;
  /** The state to write now; undefined when nothing is applied. */
  snapshot(): { bytes: Uint8Array; rendering: Rendering } | undefined;
  now: () => number;
}): StateWriter {
  let writing: Promise<void> | undefined;
  let dirty = false;
  /** When the next release is due (after a large write), undefined when none is. */
  let releaseAt: number | undefined;
  let releasesLeft = 0;
  return {
    schedule() {
      dirty = true;
      writing ??= (async () => {
        while (dirty) {
          dirty = false;
          await new Promise((resolve) => setImmediate(resolve));
          const state = options.snapshot();
          if (!state) continue;
          try {
            await writeFileAtomic(options.renderingFile, `${JSON.stringify(state.rendering)}\n`);
            await writeFileAtomic(options.policyFile, state.bytes);
          } catch (err) {
            // The kernel holds the new rules, so the apply did succeed; only a restart before
            // the next successful write falls back to the older file.
            options.logger.error({ err }, 'applied policy not persisted');
          }
          if (state.bytes.length >= LARGE_STATE) {
            releaseAt = options.now() + QUIET_MS;
            releasesLeft = 2;
          }
        }
        writing = undefined;
      })();
    },
    idle: async () => {
      await writing;
    },
    takeRelease() {
      if (releaseAt === undefined || writing || options.now() < releaseAt) return false;
      releaseAt = --releasesLeft > 0 ? options.now() + QUIET_MS : undefined;
      return true;
    },
  };
}
