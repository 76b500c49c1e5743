import type { NftDriver, NftObject } from '@bulkhead/nftables';
import { Direction, type GroupRule, type GroupRuleSet, type RuleCounter } from '@bulkhead/proto';
import { parseCounterName, ruleChain, TABLE_FAMILY, TABLE_NAME } from './render.js';

/** Rule id reported for traffic that no rule matched. */
export const DEFAULT_RULE_ID = 'default';

/**
 * Read every counter of the table and zero it in the same atomic command, so what comes back
 * is the delta since the previous read. Map it through `applied`, the rule set the kernel
 * holds: counter names carry only a digest of the rule id.
 */
export async function readCounterDeltas(
  driver: NftDriver,
  applied: GroupRuleSet,
): Promise<RuleCounter[]> {
  const objects = await driver.list({
    reset: { counters: { family: TABLE_FAMILY, table: TABLE_NAME } },
  });
  return mapCounters(objects, applied);
}

/** Pure part of readCounterDeltas: nft counter objects -> RuleCounters; zeros are left out. */
export function mapCounters(objects: NftObject[], applied: GroupRuleSet): RuleCounter[] {
  const out: RuleCounter[] = [];
  const byChain = rulesByChain(applied);
  for (const obj of objects) {
    const c = obj.counter as
      | { table?: string; name?: string; packets?: number; bytes?: number }
      | undefined;
    if (!c || c.table !== TABLE_NAME || typeof c.name !== 'string') continue;
    const packets = c.packets ?? 0;
    const bytes = c.bytes ?? 0;
    if (packets === 0 && bytes === 0) continue;
    const parsed = parseCounterName(c.name);
    if (!parsed) continue;
    let ruleId: string;
    let direction: Direction;
    if (parsed.chain === 'in_default' || parsed.chain === 'out_default') {
      ruleId = DEFAULT_RULE_ID;
      direction =
        parsed.chain === 'in_default' ? Direction.DIRECTION_INGRESS : Direction.DIRECTION_EGRESS;
    } else {
      const rule = byChain.get(parsed.chain);
      if (!rule) continue;
      ruleId = rule.id;
      direction = rule.direction;
    }
    out.push({ ruleId, direction, verdict: parsed.verdict, packets, bytes });
  }
  return out;
}

const chainMaps = new WeakMap<GroupRuleSet, Map<string, GroupRule>>();

/** Chain name -> rule of a rule set, computed once per object. */
function rulesByChain(rs: GroupRuleSet): Map<string, GroupRule> {
  let m = chainMaps.get(rs);
  if (!m) {
    m = new Map(rs.rules.map((r) => [ruleChain(r), r]));
    chainMaps.set(rs, m);
  }
  return m;
}

/** Sum counters of the same (rule, direction, verdict); used to merge unsent batches. */
export function mergeCounters(...batches: RuleCounter[][]): RuleCounter[] {
  const byKey = new Map<string, RuleCounter>();
  for (const batch of batches) {
    for (const c of batch) {
      const key = `${c.ruleId}\u0000${c.direction}\u0000${c.verdict}`;
      const prev = byKey.get(key);
      if (prev) {
        prev.packets += c.packets;
        prev.bytes += c.bytes;
      } else {
        byKey.set(key, { ...c });
      }
    }
  }
  return [...byKey.values()];
}
