// The observed flows impact analysis reads, folded into distinct flows (@bulkhead/policy's
// impact-flows.ts) and kept between questions: a plan over a million rows reads only the rows
// written since the one before (issue 8), and takes out what was removed since (retention, the
// row cap, a deleted workload: the store logs the ends they took rows from, then tells the rows
// left of those ends). The fold holds no policy state, so it serves every state a question
// compares. It is read again whole when the store's log no longer reaches back to the last
// read, or when gone flows make up most of it. Reads flows; must not write anything.
import {
  createFlowFold,
  createImpactMemo,
  type FlowFold,
  type ImpactMemo,
  type ObservedFlow,
} from '@bulkhead/policy';
import type { FlowChanges, FlowWindow } from '../visibility/flow-store.js';
import type { VisibilityStore } from '../visibility/store.js';

export type ImpactFlowSource = Pick<
  VisibilityStore,
  'observedFlows' | 'flowChanges' | 'changedFlows'
>;

/** A fold and the before state's answers on it that impact keeps (policy's `ImpactMemo`). */
export interface KeptFold {
  fold: FlowFold<ObservedFlow>;
  memo?: ImpactMemo;
}

export interface ImpactFlows {
  /**
   * The rows in the window, folded; without a window the kept fold of every row, brought up
   * to date, with its memo. Read it before the next call.
   */
  of(window: FlowWindow): KeptFold;
}

/** Telemetry is stored as agents sent it: a row may hold something else than an address. */
const fold = (rows: Iterable<ObservedFlow>) => {
  const f = createFlowFold<ObservedFlow>({ keepCopies: false, skipUnparsable: true });
  for (const row of rows) f.add(row);
  return f;
};

/** Gone flows (numbered, asked for nothing) past the flows present: a fresh read is smaller. */
const sparse = (f: FlowFold<ObservedFlow>) => f.span - f.size > Math.max(f.size, 65_536);

export function createImpactFlows(store: ImpactFlowSource): ImpactFlows {
  let kept: (Required<KeptFold> & { at: FlowChanges }) | undefined;
  return {
    of(window) {
      if (window.since !== undefined || window.until !== undefined) {
        return { fold: fold(store.observedFlows(window)) };
      }
      const now = store.flowChanges();
      // Rows stored before addresses were canonicalised at ingest: their end's total in SQL
      // would miss the other spellings.
      if (kept && kept.at.seq >= now.loggedSince && !kept.fold.respelled && !sparse(kept.fold)) {
        // A removal takes an end out, its rows left set it back, as each changed row sets its
        // end's total: a read cut short is simply read again.
        if (kept.at.seq !== now.seq) {
          for (const row of store.changedFlows(kept.at.seq)) {
            if (!('removed' in row)) kept.fold.set(row);
            else if (row.removed === 'end') kept.fold.remove(row);
            else kept.fold.removeWorkload(row.workload);
          }
          kept.at = now;
        }
        return kept;
      }
      kept = undefined; // let it go before the next is read: never two folds at once
      kept = { fold: fold(store.observedFlows()), memo: createImpactMemo(), at: now };
      return kept;
    },
  };
}
