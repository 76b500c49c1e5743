import { readFileSync } from 'node:fs';
import { type NftDriver, type NftObject, Transaction } from '@bulkhead/nftables';
import {
  Action,
  Direction,
  type FlowRecord,
  type GroupRuleSet,
  Mode,
  Verdict,
} from '@bulkhead/proto';
import { DEFAULT_RULE_ID } from './counters.js';
import {
  DEFAULT_FLOW_CODE,
  FLOW_GEN_ELEMENTS,
  FLOW_GEN_SET,
  FLOW_SETS,
  type FlowGen,
  TABLE_FAMILY,
  TABLE_NAME,
} from './render.js';

/** How full one kernel flow set was when it was read. */
export interface FlowSetStats {
  set: string;
  entries: number;
  size: number;
}

/** What one read of the flow sets (one generation) found; `elems` (per set, as listed) is what a drain deletes. */
export interface FlowRead {
  records: FlowRecord[];
  sets: FlowSetStats[];
  elems: Map<string, unknown[]>;
}

const where = (name: string) => ({ family: TABLE_FAMILY, table: TABLE_NAME, name });

/**
 * Read the flow sets, mapping their elements through `applied` (the rule set whose rendering
 * filled them), so that nothing counted is lost or read twice: flip the packet path to
 * generation b, read generation a (nothing adds to it any more) and delete what was read,
 * flip back to a, read b. The returned `elems` are b's, for deleteFlows; after the second
 * flip nothing adds to b either. A table without `flow_gen` (rendered before generations)
 * is read in place; a set that is missing (no table yet) reads as empty.
 */
export async function readFlows(
  driver: NftDriver,
  applied: GroupRuleSet,
  nowMs: number,
): Promise<FlowRead> {
  const gen = new Transaction().add({
    element: { ...where(FLOW_GEN_SET), elem: [...FLOW_GEN_ELEMENTS] },
  });
  try {
    await driver.apply(gen);
  } catch {
    return readGeneration(driver, 'a', applied, nowMs);
  }
  const a = await readGeneration(driver, 'a', applied, nowMs);
  await deleteFlows(driver, a);
  await driver.apply(new Transaction().flush({ set: where(FLOW_GEN_SET) }));
  const b = await readGeneration(driver, 'b', applied, nowMs);
  return { records: [...a.records, ...b.records], sets: [...a.sets, ...b.sets], elems: b.elems };
}

async function readGeneration(
  driver: NftDriver,
  gen: FlowGen,
  applied: GroupRuleSet,
  nowMs: number,
): Promise<FlowRead> {
  const objects: NftObject[] = [];
  for (const { name } of FLOW_SETS.filter((f) => f.gen === gen)) {
    try {
      objects.push(...(await driver.list({ list: { set: where(name) } })));
    } catch {
      // No such set: a table rendered before flow discovery, or none at all.
    }
  }
  return mapFlowSets(objects, applied, nowMs);
}

/**
 * Delete exactly the elements a read returned, in one transaction. An element that expired
 * in between makes the kernel refuse the whole batch; then each goes on its own, so one
 * missing element does not keep the others (and their counts) in the set.
 */
export async function deleteFlows(driver: NftDriver, read: FlowRead): Promise<void> {
  const tx = new Transaction();
  for (const [name, elem] of read.elems) {
    if (elem.length > 0) tx.delete({ element: { ...where(name), elem } });
  }
  if (tx.size === 0) return;
  try {
    await driver.apply(tx);
  } catch {
    for (const [name, elems] of read.elems) {
      for (const e of elems) {
        await driver
          .apply(new Transaction().delete({ element: { ...where(name), elem: [e] } }))
          .catch(() => undefined);
      }
    }
  }
}

/** Pure part of readFlows: listed flow sets -> FlowRecords, fullness, and what to delete. */
export function mapFlowSets(objects: NftObject[], applied: GroupRuleSet, nowMs: number): FlowRead {
  const read: FlowRead = { records: [], sets: [], elems: new Map() };
  for (const obj of objects) {
    const set = obj.set as
      | { table?: string; name?: string; size?: number; elem?: unknown[] }
      | undefined;
    const spec = FLOW_SETS.find((f) => f.name === set?.name);
    if (!set || set.table !== TABLE_NAME || !spec) continue;
    const elems = set.elem ?? [];
    read.sets.push({ set: spec.name, entries: elems.length, size: set.size ?? 0 });
    const direction = spec.dir === 'in' ? Direction.DIRECTION_INGRESS : Direction.DIRECTION_EGRESS;
    const vals: unknown[] = [];
    for (const raw of elems) {
      const wrapped = isRecord(raw) && isRecord(raw.elem) ? raw.elem : undefined;
      const val = wrapped ? wrapped.val : raw;
      vals.push(val);
      const counter = isRecord(wrapped?.counter) ? wrapped.counter : {};
      const packets = Number(counter.packets ?? 0);
      const bytes = Number(counter.bytes ?? 0);
      const parts = isRecord(val) && Array.isArray(val.concat) ? val.concat : [];
      const [src, dst, proto, port, code] = parts;
      const protocol = protocolNumber(proto);
      const decided = decisionOf(applied, direction, Number(code));
      if (
        typeof src !== 'string' ||
        typeof dst !== 'string' ||
        protocol === undefined ||
        typeof port !== 'number' ||
        !decided ||
        packets === 0
      ) {
        continue;
      }
      read.records.push({
        direction,
        src,
        dst,
        protocol,
        port,
        verdict: decided.verdict,
        ruleId: decided.ruleId,
        packets,
        bytes,
        firstSeenUnixMs: nowMs,
        lastSeenUnixMs: nowMs,
      });
    }
    read.elems.set(spec.name, vals);
  }
  return read;
}

/** Rule id and verdict behind a flow code in the applied rule set; undefined if unknown. */
function decisionOf(
  rs: GroupRuleSet,
  direction: Direction,
  code: number,
): { ruleId: string; verdict: Verdict } | undefined {
  const mode = direction === Direction.DIRECTION_INGRESS ? rs.ingressMode : rs.egressMode;
  // As the rendering: anything but an explicit enforce is monitor.
  const deny = mode === Mode.MODE_ENFORCE ? Verdict.VERDICT_DENIED : Verdict.VERDICT_WOULD_DENY;
  if (code === DEFAULT_FLOW_CODE) return { ruleId: DEFAULT_RULE_ID, verdict: deny };
  const rule = Number.isInteger(code) ? rs.rules[code - 1] : undefined;
  if (!rule || rule.direction !== direction) return undefined;
  if (rule.action === Action.ACTION_ALLOW) {
    return { ruleId: rule.id, verdict: Verdict.VERDICT_ALLOWED };
  }
  if (rule.action === Action.ACTION_DENY) return { ruleId: rule.id, verdict: deny };
  return undefined;
}

let protocolNames: Map<string, number> | undefined;

/** nft prints inet_proto values by their /etc/protocols name when it has one. */
function protocolNumber(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v !== 'string') return undefined;
  protocolNames ??= loadProtocolNames();
  return protocolNames.get(v);
}

function loadProtocolNames(): Map<string, number> {
  // The names nft 1.0.6 prints on Debian; /etc/protocols, when present, adds the rest.
  const names = new Map<string, number>([
    ['icmp', 1],
    ['igmp', 2],
    ['tcp', 6],
    ['udp', 17],
    ['dccp', 33],
    ['gre', 47],
    ['esp', 50],
    ['ah', 51],
    ['ipv6-icmp', 58],
    ['icmpv6', 58],
    ['sctp', 132],
    ['udplite', 136],
  ]);
  try {
    for (const line of readFileSync('/etc/protocols', 'utf8').split('\n')) {
      const [name, num] = line.replace(/#.*/, '').trim().split(/\s+/);
      if (name && num && /^\d+$/.test(num) && !names.has(name)) names.set(name, Number(num));
    }
  } catch {
    // No /etc/protocols: nft then prints numbers for all but the names above.
  }
  return names;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
