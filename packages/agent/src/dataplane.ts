import type { NftDriver, Transaction } from '@bulkhead/nftables';
import { type RuleCounter, RuleSet } from '@bulkhead/proto';
import type { Logger } from 'pino';
import { readCounterDeltas } from './counters.js';
import { AgentError } from './errors.js';
import { createFlowBuffer, FLOW_TABLE_FULL, type FlowBuffer } from './flow-buffer.js';
import { deleteFlows, type FlowRead, readFlows } from './flows.js';
import {
  DEFAULT_FLOW_TABLE,
  expectedMarker,
  type Failsafe,
  type FlowTableOptions,
  MARKER_PREFIX,
  renderRuleSet,
  TABLE_FAMILY,
  TABLE_NAME,
} from './render.js';
import { readFileIfExists, statePath, writeFileAtomic } from './state.js';

export interface ApplyResult {
  ok: boolean;
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
  /** Render and apply as one atomic batch; persists the RuleSet only after success. */
  apply(rs: RuleSet): Promise<ApplyResult>;
  /**
   * Counter deltas since the previous collect(), including those read before applies. Also
   * drains the kernel's flow sets into `flows`.
   */
  collect(): Promise<RuleCounter[]>;
  /** Flows and events read from the kernel and not yet taken for sending. */
  readonly flows: FlowBuffer;
}

export function createDataplane(options: DataplaneOptions): Dataplane {
  const { driver, failsafe, logger } = options;
  const flowTable = options.flowTable ?? DEFAULT_FLOW_TABLE;
  const now = options.now ?? Date.now;
  const flows = createFlowBuffer({
    maxPending: options.maxPendingFlows,
    onDropped: options.onFlowsDropped,
  });
  const file = statePath(options.stateDir, 'ruleSet');
  let applied: RuleSet | undefined;
  let pending: RuleCounter[] = [];
  // Applies and kernel reads run one at a time: a read racing an apply would map the old
  // table's counters and flows through the new RuleSet.
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = queue.then(fn, fn);
    queue = next.catch(() => undefined);
    return next;
  };

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
      await deleteFlows(driver, read);
    } catch (err) {
      logger.warn({ err }, 'cannot drain flows');
    }
  }

  async function applyLocked(rs: RuleSet): Promise<ApplyResult> {
    // Read what the table counted and recorded so far: the replace below starts it empty.
    pending.push(...(await readDeltas()));
    await drainFlows();
    const fail = (error: AgentError, micros: number): ApplyResult => {
      const result = { ok: false, micros, error };
      logger.error(
        { err: error, cause: error.cause, revision: rs.revision, hash: rs.hash },
        'apply failed; previous rules stay in place',
      );
      options.onApply?.(rs, result);
      return result;
    };
    let tx: Transaction;
    try {
      tx = renderRuleSet(rs, failsafe, flowTable);
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
    try {
      await driver.apply(tx);
    } catch (err) {
      const error = new AgentError('APPLY_FAILED', `nftables refused revision ${rs.revision}`, {
        cause: err,
      });
      return fail(error, elapsed());
    }
    const result: ApplyResult = { ok: true, micros: elapsed() };
    applied = rs;
    logger.info(
      { revision: rs.revision, hash: rs.hash, micros: result.micros, entries: rs.entries.length },
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

  async function kernelMarker(): Promise<string | undefined> {
    try {
      const objects = await driver.list({
        list: { chain: { family: TABLE_FAMILY, table: TABLE_NAME, name: 'input' } },
      });
      for (const obj of objects) {
        const comment = (obj.rule as { comment?: unknown } | undefined)?.comment;
        if (typeof comment === 'string' && comment.startsWith(MARKER_PREFIX)) return comment;
      }
    } catch {
      // No table yet (fresh boot): nothing to compare with.
    }
    return undefined;
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
        let expected: string | undefined;
        try {
          expected = expectedMarker(rs, failsafe, flowTable);
        } catch {
          expected = undefined; // let apply report why it cannot be rendered
        }
        if (expected !== undefined && (await kernelMarker()) === expected) {
          applied = rs;
          logger.info(
            { revision: rs.revision, hash: rs.hash },
            'kernel already holds the rule set',
          );
          return 'unchanged';
        }
        const result = await applyLocked(rs);
        return result.ok ? 'applied' : 'failed';
      }),
    apply: (rs) => serial(() => applyLocked(rs)),
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
