// Writes the applied policy (`policy.bin`) and what it was rendered with (`dataplane.json`) to
// the state dir after an apply. Persisting the whole state costs its size (encode + fsync), so it
// runs after the apply and applies that come meanwhile fold into the next write: a burst of small
// deltas costs one write of the newest state, always whole, never appended to. Must not apply
// anything nor read the files back (dataplane.ts restores, boot.ts loads at boot).
import { PolicyUpdate } from '@bulkhead/proto';
import type { Logger } from 'pino';
import { elementRange } from './group-elements.js';
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

export interface StateWriter {
  /** Writes the newest snapshot soon (coalesced with writes already due). */
  schedule(): void;
  /** Resolves once nothing is being written. */
  idle(): Promise<void>;
  /**
   * True once after a write: a large state leaves garbage (its encoding, the batch text) that
   * V8 frees at its next collection into malloc's arenas, so the next tick gives it back.
   */
  takeTrim(): boolean;
}

export function createStateWriter(options: {
  policyFile: string;
  renderingFile: string;
  logger: Logger;
  /** The state to write now; undefined when nothing is applied. */
  snapshot(): { bytes: Uint8Array; rendering: Rendering } | undefined;
}): StateWriter {
  let writing: Promise<void> | undefined;
  let dirty = false;
  let trimDue = false;
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
          trimDue = true;
        }
        writing = undefined;
      })();
    },
    idle: async () => {
      await writing;
    },
    takeTrim() {
      if (!trimDue || writing) return false;
      trimDue = false;
      return true;
    },
  };
}
