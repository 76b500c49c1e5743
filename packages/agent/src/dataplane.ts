// Owns `table inet bulkhead` at run time: turns each RuleSet into the desired model, brings
// the kernel there with a delta (or a full load when the kernel state is unknown), checks the
// kernel against the model and repairs drift, reads counters and drains flows. Must not know
// how a RuleSet becomes nftables objects (render.ts) nor how a delta is built (model.ts).
import { type NftDriver, type NftEvent, type NftObject, Transaction } from '@bulkhead/nftables';
import { type RuleCounter, RuleSet } from '@bulkhead/proto';
import type { Logger } from 'pino';
import { mapCounters, readCounterDeltas } from './counters.js';
import { compareTable, type Drift, driftAttributes } from './drift.js';
import { AgentError } from './errors.js';
import { createFlowBuffer, FLOW_TABLE_FULL, type FlowBuffer } from './flow-buffer.js';
import { deleteFlows, type FlowRead, readFlows } from './flows.js';
import { planDelta, planFull, type TableModel } from './model.js';
import {
  DEFAULT_FLOW_TABLE,
  type Failsafe,
  FLOW_SETS,
  type FlowTableOptions,
  renderModel,
  TABLE_FAMILY,
  TABLE_NAME,
} from './render.js';
import { readFileIfExists, statePath, writeFileAtomic } from './state.js';

/** AgentEvent code of a change to the table that the agent did not make. */
export const DATAPLANE_TAMPERED = 'DATAPLANE_TAMPERED';

export interface ApplyResult {
  ok: boolean;
  /** 'delta' when only what changed was written, 'full' when the table was replaced. */
  path?: 'delta' | 'full';
  /** Wall time of the nftables transaction (0 when it never reached nftables). */
  micros: number;
  /** Set when ok is false: RULESET_INVALID or APPLY_FAILED, nft's text in `cause`. */
  error?: AgentError;
}

export type RestoreOutcome = 'none' | 'unchanged' | 'applied' | 'failed';

export interface DataplaneOptions {
  driver: NftDriver;
  stateDir: string;
  failsafe: Failsafe;
  logger: Logger;
  /** Size and timeout of the kernel flow sets; default 65536 elements, 1 h. */
  flowTable?: FlowTableOptions;
  /** Cap on flow keys read but not yet sent (default 50000); see FlowBuffer. */
  maxPendingFlows?: number;
  /** Clock for flow timestamps and events (tests). Default Date.now. */
  now?: () => number;
  /** Every batch of counter deltas read from the kernel, exactly once (metrics hook). */
  onCounters?: (counters: RuleCounter[]) => void;
  /** Every read of the flow sets, exactly once (metrics hook). */
  onFlows?: (read: FlowRead) => void;
  /** Flow keys dropped for want of room in the pending buffer (metrics hook). */
  onFlowsDropped?: (count: number) => void;
  /** Every apply attempt (metrics hook). */
  onApply?: (rs: RuleSet, result: ApplyResult) => void;
  /** Every drift found (and repaired) in the kernel (metrics hook). */
  onTamper?: (drift: Drift) => void;
}

/** Owns `table inet bulkhead`: applies RuleSets, restores the last one, reads counters. */
export interface Dataplane {
  /** The RuleSet the kernel holds, as far as this agent knows. */
  readonly applied: RuleSet | undefined;
  /**
   * At start: load the persisted RuleSet and apply it unless the kernel already holds
   * exactly its rendering. Never flushes anything.
   */
  restore(): Promise<RestoreOutcome>;
  /**
   * Bring the kernel to the rendering of `rs` in one atomic batch: only what changed when the
   * kernel holds what this dataplane last wrote, the whole table otherwise. Persists the
   * RuleSet only after success.
   */
  apply(rs: RuleSet): Promise<ApplyResult>;
  /**
   * Compare the kernel with the desired table; on any difference report it (a
   * DATAPLANE_TAMPERED event in `flows`, onTamper) and replace the table. Returns what
   * differed, undefined when nothing did or nothing is applied yet. `elements: false`
   * compares only the structure (chains, rules, declarations, counters): listing 100k
   * elements costs seconds, the structure milliseconds.
   */
  reconcile(options?: { elements?: boolean }): Promise<Drift | undefined>;
  /**
   * For a monitor: true when a kernel change event is not one of this dataplane's own
   * writes (nor the packet path's flow records), i.e. when it calls for reconcile().
   */
  isForeign(event: NftEvent): boolean;
  /** True while a monitor is between the marks of one of this dataplane's own writes. */
  readonly inOwnWrite: boolean;
  /**
   * Counter deltas since the previous collect(), including those read before applies. Also
   * drains the kernel's flow sets into `flows`.
   */
  collect(): Promise<RuleCounter[]>;
  /** Flows and events read from the kernel and not yet taken for sending. */
  readonly flows: FlowBuffer;
}

const MARK_PREFIX = 'bhmark_';
const MARK_END = '_end';
/** Longest an open window (an own batch being reported) may last in a monitor's view. */
const WINDOW_TTL_MS = 10_000;
const FLOW_SET_NAMES = new Set(FLOW_SETS.map((f) => f.name));

export function createDataplane(options: DataplaneOptions): Dataplane {
  const { driver, failsafe, logger } = options;
  const flowTable = options.flowTable ?? DEFAULT_FLOW_TABLE;
  const now = options.now ?? Date.now;
  const flows = createFlowBuffer({
    maxPending: options.maxPendingFlows,
    onDropped: options.onFlowsDropped,
  });
  const file = statePath(options.stateDir, 'ruleSet');
  const where = { family: TABLE_FAMILY, table: TABLE_NAME };
  let applied: RuleSet | undefined;
  // What the kernel holds as far as this dataplane knows: the model it last wrote or found.
  let model: TableModel | undefined;
  let pending: RuleCounter[] = [];
  // Applies and kernel reads run one at a time: a read racing an apply would map the old
  // table's counters and flows through the new RuleSet.
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = queue.then(fn, fn);
    queue = next.catch(() => undefined);
    return next;
  };

  // Own writes are bracketed for a monitor: the batch starts by adding chain bhmark_<n> and
  // ends by adding and deleting bhmark_<n>_end. The kernel commits a batch's events
  // contiguously, so what a monitor sees between the two is ours (see isForeign).
  let markSeq = 0;
  let windowSince: number | undefined;
  const endOf = (mark: string) => `${mark}${MARK_END}`;
  /** A transaction that opens a marked write, and its mark. */
  function openWrite(table = false): { tx: Transaction; mark: string } {
    const mark = `${MARK_PREFIX}${++markSeq}`;
    const tx = new Transaction();
    if (table) tx.add({ table: { family: TABLE_FAMILY, name: TABLE_NAME } });
    tx.add({ chain: { ...where, name: mark } });
    return { tx, mark };
  }
  async function ownApply(tx: Transaction, mark: string, full: boolean): Promise<void> {
    const end = { chain: { ...where, name: endOf(mark) } };
    tx.add(end).delete(end);
    // A full load deleted the opening mark with the table; a delta still holds it.
    if (!full) tx.delete({ chain: { ...where, name: mark } });
    await driver.apply(tx);
  }

  async function readDeltas(): Promise<RuleCounter[]> {
    if (!applied) return [];
    try {
      const deltas = await readCounterDeltas(driver, applied);
      if (deltas.length > 0) options.onCounters?.(deltas);
      return deltas;
    } catch (err) {
      logger.warn({ err }, 'cannot read counters');
      return [];
    }
  }

  /** Read (and zero) only the named counters, e.g. those a delta is about to delete. */
  async function readCountersNamed(names: string[]): Promise<void> {
    if (!applied || names.length === 0) return;
    const objects: NftObject[] = [];
    for (const name of names) {
      try {
        objects.push(...(await driver.list({ reset: { counter: { ...where, name } } })));
      } catch (err) {
        logger.warn({ err, name }, 'cannot read counter');
      }
    }
    const deltas = mapCounters(objects, applied);
    if (deltas.length > 0) options.onCounters?.(deltas);
    pending.push(...deltas);
  }

  /** Move the kernel's flow elements into `flows`, then delete exactly those read. */
  async function drainFlows(): Promise<void> {
    if (!applied) return;
    const t = now();
    let read: FlowRead;
    try {
      read = await readFlows(driver, applied, t);
    } catch (err) {
      logger.warn({ err }, 'cannot read flows');
      return;
    }
    options.onFlows?.(read);
    flows.add(read.records);
    for (const s of read.sets) {
      if (s.size > 0 && s.entries >= s.size) {
        logger.warn(s, 'flow table full: new connections are not recorded until it drains');
        flows.event({
          code: FLOW_TABLE_FULL,
          message: `flow set ${s.set} is full (${s.entries}/${s.size}); new flows were not recorded`,
          timeUnixMs: t,
          attributes: { set: s.set, entries: String(s.entries), size: String(s.size) },
        });
      }
    }
    try {
      // Flow set elements are no policy: a monitor ignores them, no marks needed.
      await deleteFlows(driver, read);
    } catch (err) {
      logger.warn({ err }, 'cannot drain flows');
    }
  }

  /**
   * Write `next` to the kernel: a delta from `model` when there is one, else (or when the
   * kernel refuses the delta) the whole table. What the table counted and recorded under the
   * old RuleSet is read first, as far as the write will lose it or change its meaning.
   */
  async function write(next: TableModel): Promise<'delta' | 'full'> {
    // Flow codes are rule indexes of `applied`: drain before they can mean another rule.
    await drainFlows();
    const d = openWrite();
    const delta = model && planDelta(model, next, d.tx);
    if (delta) {
      await readCountersNamed([...model!.counters].filter((c) => !next.counters.has(c)));
      try {
        await ownApply(delta, d.mark, false);
        return 'delta';
      } catch (err) {
        logger.warn({ err }, 'nftables refused the delta; replacing the whole table');
      }
    }
    pending.push(...(await readDeltas()));
    const f = openWrite(true);
    await ownApply(planFull(next, f.tx), f.mark, true);
    return 'full';
  }

  async function applyLocked(rs: RuleSet): Promise<ApplyResult> {
    const fail = (error: AgentError, micros: number): ApplyResult => {
      const result = { ok: false, micros, error };
      logger.error(
        { err: error, cause: error.cause, revision: rs.revision, hash: rs.hash },
        'apply failed; previous rules stay in place',
      );
      options.onApply?.(rs, result);
      return result;
    };
    let next: TableModel;
    try {
      next = renderModel(rs, failsafe, flowTable);
    } catch (err) {
      return fail(
        err instanceof AgentError
          ? err
          : new AgentError('RULESET_INVALID', 'cannot render', { cause: err }),
        0,
      );
    }
    const t0 = process.hrtime.bigint();
    const elapsed = () => Number((process.hrtime.bigint() - t0) / 1000n);
    let path: 'delta' | 'full';
    try {
      path = await write(next);
    } catch (err) {
      const error = new AgentError('APPLY_FAILED', `nftables refused revision ${rs.revision}`, {
        cause: err,
      });
      return fail(error, elapsed());
    }
    const result: ApplyResult = { ok: true, path, micros: elapsed() };
    applied = rs;
    model = next;
    logger.info(
      {
        revision: rs.revision,
        hash: rs.hash,
        micros: result.micros,
        path,
        entries: rs.entries.length,
      },
      'rule set applied',
    );
    try {
      await writeFileAtomic(file, RuleSet.encode(rs).finish());
    } catch (err) {
      // The kernel holds the new rules, so the apply did succeed; only a restart before the
      // next successful persist would fall back to the older file.
      logger.error({ err }, 'applied rule set not persisted');
    }
    options.onApply?.(rs, result);
    return result;
  }

  /** What differs between the kernel and `want`; a table nft cannot list counts as missing. */
  async function kernelDrift(want: TableModel, elements = true): Promise<Drift | undefined> {
    let objects: NftObject[];
    try {
      // nft 1.0.6 fetches every element for `list table` even when terse (6 s at 100k on a
      // loaded box); a terse `list ruleset` does not (~0.1 s). compareTable keeps our table.
      objects = elements
        ? await driver.list({ list: { table: { family: TABLE_FAMILY, name: TABLE_NAME } } })
        : await driver.list({ list: { ruleset: null } }, { terse: true });
    } catch {
      objects = [];
    }
    return compareTable(objects, want, { elements });
  }

  async function reconcileLocked(elements: boolean): Promise<Drift | undefined> {
    if (!model || !applied) return undefined;
    const drift = await kernelDrift(model, elements);
    if (!drift) return undefined;
    const attributes = driftAttributes(drift);
    logger.warn({ drift: attributes, revision: applied.revision }, 'dataplane tampered; repairing');
    flows.event({
      code: DATAPLANE_TAMPERED,
      message: `table ${TABLE_FAMILY} ${TABLE_NAME} differed from revision ${applied.revision}; repaired`,
      timeUnixMs: now(),
      attributes,
    });
    options.onTamper?.(drift);
    // Forget the kernel state: the write below replaces the whole table.
    model = undefined;
    const result = await applyLocked(applied);
    if (!result.ok) logger.error({ err: result.error }, 'dataplane repair failed');
    return drift;
  }

  return {
    get applied() {
      return applied;
    },
    restore: () =>
      serial(async (): Promise<RestoreOutcome> => {
        const bytes = await readFileIfExists(file);
        if (!bytes) {
          logger.info('no persisted rule set; waiting for the control plane');
          return 'none';
        }
        let rs: RuleSet;
        try {
          rs = RuleSet.decode(bytes);
        } catch (err) {
          logger.error({ err, file }, 'persisted rule set unreadable; ignoring it');
          return 'none';
        }
        let want: TableModel | undefined;
        try {
          want = renderModel(rs, failsafe, flowTable);
        } catch {
          want = undefined; // let apply report why it cannot be rendered
        }
        const drift = want && (await kernelDrift(want));
        if (want && !drift) {
          applied = rs;
          model = want;
          logger.info(
            { revision: rs.revision, hash: rs.hash },
            'kernel already holds the rule set',
          );
          return 'unchanged';
        }
        if (drift)
          logger.info(
            { drift: driftAttributes(drift) },
            'kernel differs from the persisted rule set',
          );
        const result = await applyLocked(rs);
        return result.ok ? 'applied' : 'failed';
      }),
    apply: (rs) => serial(() => applyLocked(rs)),
    reconcile: (o) => serial(() => reconcileLocked(o?.elements ?? true)),
    get inOwnWrite() {
      if (windowSince !== undefined && now() - windowSince > WINDOW_TTL_MS) windowSince = undefined;
      return windowSince !== undefined;
    },
    isForeign(event) {
      if (event.table?.family !== TABLE_FAMILY || event.table.name !== TABLE_NAME) return false;
      const name = event.body.name;
      if (event.kind === 'chain' && typeof name === 'string' && name.startsWith(MARK_PREFIX)) {
        if (name.endsWith(MARK_END)) windowSince = undefined;
        else if (event.verb === 'add') windowSince = now();
        return false;
      }
      // Flow sets are filled by the packet path and drained by us; their elements are no policy.
      if (event.kind === 'element' && FLOW_SET_NAMES.has(name as string)) return false;
      // A window whose end the monitor lost (it can drop events under load) closes by itself.
      return !this.inOwnWrite;
    },
    collect: () =>
      serial(async () => {
        const out = [...pending, ...(await readDeltas())];
        pending = [];
        await drainFlows();
        return out;
      }),
    flows,
  };
}
