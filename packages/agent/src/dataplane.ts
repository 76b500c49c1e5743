import type { NftDriver, Transaction } from '@bulkhead/nftables';
import { type RuleCounter, RuleSet } from '@bulkhead/proto';
import type { Logger } from 'pino';
import { readCounterDeltas } from './counters.js';
import { AgentError } from './errors.js';
import {
  expectedMarker,
  type Failsafe,
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
  /**
   * Opens a short-lived driver for each counter read (closed after it). libnftables 1.0.6
   * answers a second `reset counters` on the same context from its cache: stale values and
   * no reset. A fresh context per read avoids that. Default: reuse `driver`.
   */
  openReader?: () => NftDriver;
  /** Every batch of counter deltas read from the kernel, exactly once (metrics hook). */
  onCounters?: (counters: RuleCounter[]) => void;
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
  /** Counter deltas since the previous collect(), including those read before applies. */
  collect(): Promise<RuleCounter[]>;
}

export function createDataplane(options: DataplaneOptions): Dataplane {
  const { driver, failsafe, logger } = options;
  const file = statePath(options.stateDir, 'ruleSet');
  let applied: RuleSet | undefined;
  let pending: RuleCounter[] = [];
  // Applies and counter reads run one at a time: a read racing an apply would map the old
  // table's counters through the new RuleSet.
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = queue.then(fn, fn);
    queue = next.catch(() => undefined);
    return next;
  };

  async function readDeltas(): Promise<RuleCounter[]> {
    if (!applied) return [];
    const reader = options.openReader?.() ?? driver;
    try {
      const deltas = await readCounterDeltas(reader, applied);
      if (deltas.length > 0) options.onCounters?.(deltas);
      return deltas;
    } catch (err) {
      logger.warn({ err }, 'cannot read counters');
      return [];
    } finally {
      if (reader !== driver) reader.close();
    }
  }

  async function applyLocked(rs: RuleSet): Promise<ApplyResult> {
    // Read what the table counted so far: the replace below starts its counters at zero.
    pending.push(...(await readDeltas()));
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
      tx = renderRuleSet(rs, failsafe);
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
          expected = expectedMarker(rs, failsafe);
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
        return out;
      }),
  };
}
