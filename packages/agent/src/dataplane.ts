// Owns `table inet bulkhead` at run time: turns each PolicyUpdate into the next desired model
// (update.ts), brings the kernel there with a delta (or a full load when the kernel state is
// unknown), persists what it applied, checks the kernel against the model and repairs drift,
// reads counters and drains flows. Must not know how policy becomes nftables objects
// (render.ts), how an update patches the model (update.ts) nor how a delta is built (model.ts).
import { type NftDriver, type NftEvent, type NftObject, Transaction } from '@bulkhead/nftables';
import { PolicyUpdate, type RuleCounter } from '@bulkhead/proto';
import type { Logger } from 'pino';
import { mapCounters, readCounterDeltas } from './counters.js';
import { compareTable, type Drift, driftAttributes } from './drift.js';
import { AgentError } from './errors.js';
import { createFlowBuffer, FLOW_TABLE_FULL, type FlowBuffer } from './flow-buffer.js';
import { deleteFlows, type FlowRead, readFlows } from './flows.js';
import { releaseMemory } from './heap.js';
import { type ElementPatch, planDelta, planFull, type TableModel } from './model.js';
import {
  DEFAULT_FLOW_TABLE,
  type Failsafe,
  FLOW_GEN_SET,
  FLOW_SETS,
  type FlowTableOptions,
  renderRules,
  TABLE_FAMILY,
  TABLE_NAME,
} from './render.js';
import { readFileIfExists, statePath } from './state.js';
import { createStateWriter, encodeApplied } from './state-writer.js';
import { type AppliedPolicy, planUpdate } from './update.js';

/** AgentEvent code of a change to the table that the agent did not make. */
export const DATAPLANE_TAMPERED = 'DATAPLANE_TAMPERED';

export interface ApplyResult {
  ok: boolean;
  /** 'delta' when only what changed was written, 'full' when the table was replaced. */
  path?: 'delta' | 'full';
  /** Wall time of the nftables transaction (0 when it never reached nftables). */
  micros: number;
  /**
   * Set when ok is false: UPDATE_REFUSED (the update does not fit the agent's state: ask for a
   * full sync), RULESET_INVALID or APPLY_FAILED (nft's text in `cause`).
   */
  error?: AgentError;
}

export type RestoreOutcome = 'none' | 'unchanged' | 'applied' | 'failed';

export type { Rendering } from './state-writer.js';

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
  onApply?: (update: { revision: number; hash: string }, result: ApplyResult) => void;
  /** Every drift found (and repaired) in the kernel (metrics hook). */
  onTamper?: (drift: Drift) => void;
}

/** Owns `table inet bulkhead`: applies policy updates, restores the last state, reads counters. */
export interface Dataplane {
  /** The policy the kernel holds (hash, revision, rule set, group ids), as far as this agent knows. */
  readonly applied: AppliedPolicy | undefined;
  /**
   * At start: load the persisted state and apply it unless the kernel already holds exactly
   * its rendering. Never flushes anything.
   */
  restore(): Promise<RestoreOutcome>;
  /**
   * Apply one whole update (its chunks merged, see mergeChunks) in one atomic batch: only
   * what it changes when the kernel holds what this dataplane last wrote (a group change is
   * element adds and deletes on that group's sets), the whole table otherwise. An update that
   * does not fit changes nothing (UPDATE_REFUSED). The new state is persisted after success,
   * in the background (see `persisted`).
   */
  apply(update: PolicyUpdate): Promise<ApplyResult>;
  /** Resolves once the state of the last successful apply is on disk. */
  persisted(): Promise<void>;
  /**
   * The control plane's addresses for the failsafe output rule changed: rewrite the base
   * chains with them (one small transaction; nothing else is touched). Resolves true when the
   * kernel holds them (or nothing is applied yet: the next apply renders them), false when
   * nftables refused (nothing changed; the next call with them tries again).
   */
  setControlPlane(addresses: Failsafe['controlPlane']): Promise<boolean>;
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
const FLOW_SET_NAMES = new Set([...FLOW_SETS.map((f) => f.name), FLOW_GEN_SET]);

export function createDataplane(options: DataplaneOptions): Dataplane {
  const { driver, logger } = options;
  let failsafe = options.failsafe;
  const flowTable = options.flowTable ?? DEFAULT_FLOW_TABLE;
  const now = options.now ?? Date.now;
  const flows = createFlowBuffer({
    maxPending: options.maxPendingFlows,
    onDropped: options.onFlowsDropped,
  });
  const file = statePath(options.stateDir, 'policy');
  const renderingFile = statePath(options.stateDir, 'rendering');
  const where = { family: TABLE_FAMILY, table: TABLE_NAME };
  let applied: AppliedPolicy | undefined;
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
      const deltas = await readCounterDeltas(driver, applied.ruleSet);
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
    const deltas = mapCounters(objects, applied.ruleSet);
    if (deltas.length > 0) options.onCounters?.(deltas);
    pending.push(...deltas);
  }

  /** Move the kernel's flow elements into `flows`, then delete exactly those read. */
  async function drainFlows(): Promise<void> {
    if (!applied) return;
    const t = now();
    let read: FlowRead;
    try {
      read = await readFlows(driver, applied.ruleSet, t);
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
   * old rule set is read first, as far as the write will lose it or change its meaning.
   */
  async function write(
    next: TableModel,
    patches?: ReadonlyMap<string, ElementPatch>,
  ): Promise<'delta' | 'full'> {
    // Flow codes are rule indexes of `applied`: drain before they can mean another rule.
    await drainFlows();
    const d = openWrite();
    const delta = model && planDelta(model, next, d.tx, patches);
    if (delta) {
      await readCountersNamed([...model!.counters].filter((c) => !next.counters.has(c)));
      try {
        await ownApply(delta, d.mark, false);
        return 'delta';
      } catch (err) {
        logger.warn({ err }, 'nftables refused the delta; replacing the whole table');
        // The replacement loses what was recorded while the delta was tried: drain it first.
        await drainFlows();
      }
    }
    pending.push(...(await readDeltas()));
    const f = openWrite(true);
    await ownApply(planFull(next, f.tx), f.mark, true);
    return 'full';
  }

  function fail(update: PolicyUpdate, error: AgentError, micros: number): ApplyResult {
    const result = { ok: false, micros, error };
    logger.error(
      { err: error, cause: error.cause, revision: update.revision, hash: update.hash },
      'update not applied; previous rules stay in place',
    );
    options.onApply?.(update, result);
    return result;
  }

  async function applyLocked(update: PolicyUpdate): Promise<ApplyResult> {
    let plan: ReturnType<typeof planUpdate>;
    try {
      plan = planUpdate(applied && model && { applied, model }, update, failsafe, flowTable);
    } catch (err) {
      const error =
        err instanceof AgentError
          ? err
          : new AgentError('RULESET_INVALID', 'cannot render', { cause: err });
      return fail(update, error, 0);
    }
    const t0 = process.hrtime.bigint();
    const elapsed = () => Number((process.hrtime.bigint() - t0) / 1000n);
    let path: 'delta' | 'full';
    // The patched element maps are shared with `model`: write them now (the full fallback
    // reads them), undo if the kernel refuses.
    plan.commit();
    try {
      path = await write(plan.next, plan.patches);
    } catch (err) {
      plan.rollback();
      const error = new AgentError('APPLY_FAILED', `nftables refused revision ${update.revision}`, {
        cause: err,
      });
      return fail(update, error, elapsed());
    }
    const result: ApplyResult = { ok: true, path, micros: elapsed() };
    applied = plan.applied;
    model = plan.next;
    logger.info(
      {
        revision: update.revision,
        hash: update.hash,
        micros: result.micros,
        path,
        full: update.full,
        groups: update.groups.length,
      },
      'policy update applied',
    );
    writer.schedule();
    options.onApply?.(update, result);
    return result;
  }

  const writer = createStateWriter({
    policyFile: file,
    renderingFile,
    logger,
    now,
    snapshot: () => {
      if (!applied || !model) return undefined;
      return { bytes: encodeApplied(applied, model), rendering: { failsafe, flowTable } };
    },
  });
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
    const want = model;
    const drift = await kernelDrift(want, elements);
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
    try {
      await write(want);
      options.onApply?.(applied, { ok: true, path: 'full', micros: 0 });
    } catch (err) {
      logger.error({ err }, 'dataplane repair failed');
    }
    // The desired state stays what it was, whatever the kernel did.
    model = want;
    return drift;
  }

  async function setControlPlaneLocked(addresses: Failsafe['controlPlane']): Promise<boolean> {
    const key = (a: Failsafe['controlPlane']) =>
      JSON.stringify(a.map((e) => `${e.address} ${e.port}`).sort());
    if (key(addresses) === key(failsafe.controlPlane)) return true;
    const previous = failsafe;
    failsafe = { ...failsafe, controlPlane: addresses };
    if (!applied || !model) return true;
    const sets = model.sets;
    const next = renderRules(
      applied.ruleSet,
      applied.groups,
      (name) => sets.get(name)!,
      failsafe,
      flowTable,
    );
    try {
      await write(next);
    } catch (err) {
      logger.error({ err, addresses }, 'cannot update the failsafe rule for the control plane');
      failsafe = previous;
      return false;
    }
    model = next;
    logger.info({ addresses }, 'failsafe rule follows the control plane');
    writer.schedule();
    return true;
  }

  return {
    get applied() {
      return applied;
    },
    setControlPlane: (addresses) => serial(() => setControlPlaneLocked(addresses)),
    restore: () =>
      serial(async (): Promise<RestoreOutcome> => {
        const bytes = await readFileIfExists(file);
        if (!bytes) {
          logger.info('no persisted policy; waiting for the control plane');
          return 'none';
        }
        let update: PolicyUpdate;
        let want: TableModel | undefined;
        try {
          update = PolicyUpdate.decode(bytes);
        } catch (err) {
          logger.error({ err, file }, 'persisted policy unreadable; ignoring it');
          return 'none';
        }
        try {
          const plan = planUpdate(undefined, { ...update, full: true }, failsafe, flowTable);
          want = plan.next;
          const drift = await kernelDrift(want);
          if (!drift) {
            applied = plan.applied;
            model = want;
            logger.info(
              { revision: update.revision, hash: update.hash },
              'kernel already holds the policy',
            );
            return 'unchanged';
          }
          logger.info(
            { drift: driftAttributes(drift) },
            'kernel differs from the persisted policy',
          );
          // Counted and recorded since the last telemetry (e.g. by an agent killed after an
          // apply, before persisting it: the kernel holds the next revision, mostly the same
          // rules): read under the persisted rule set before the full load replaces the table.
          if (!drift.tableMissing) applied = plan.applied;
        } catch {
          // let apply report why it cannot be rendered
        }
        const result = await applyLocked({ ...update, full: true });
        if (!result.ok) applied = undefined;
        return result.ok ? 'applied' : 'failed';
      }),
    apply: (update) => serial(() => applyLocked(update)),
    persisted: async () => {
      await queue;
      await writer.idle();
    },
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
        if (writer.takeRelease()) releaseMemory();
        return out;
      }),
    flows,
  };
}
