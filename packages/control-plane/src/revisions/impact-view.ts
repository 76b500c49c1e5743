// The policy lifecycle's REST shapes (api4): policy's impact report made flat for the CLI, and
// a candidate state built from policy-file documents. Pure: revisions/service.ts feeds it the states.
import type { ImpactGroupView, ImpactRuleRef, ImpactView } from '@bulkhead/api';
import {
  type Diagnostic,
  type DirectionName,
  type EndOutcome,
  type EndpointGroup,
  type ImpactChange,
  type ImpactReport,
  type IpList,
  type ObservedFlow,
  type Policy,
  type PolicyState,
  type Service,
  validateIpList,
  validatePolicy,
  validateService,
  validateWorkloadPatch,
  type WorkloadMode,
} from '@bulkhead/policy';
import { ControlPlaneError } from '../errors.js';
import { type HasNoPolicy, protocolName } from '../visibility/views.js';

// The ends that explain a group: the one that blocks, the one that only lets it pass because
// it is in monitor mode, or (newly allowed) every end, since all of them now allow it.
const EXPLAINS: Record<ImpactChange, EndOutcome | undefined> = {
  'newly-blocked': 'blocked',
  'still-would-deny': 'would-deny',
  'newly-allowed': undefined,
};

/** Same names as the map's nodes (`ip-list:<name>`), so both views read alike. */
function groupName(g: EndpointGroup): string {
  return g.key.startsWith('ipList:') ? `ip-list:${g.key.slice('ipList:'.length)}` : g.key;
}

function isoTime(t: number | string | undefined): string | undefined {
  if (t === undefined) return undefined;
  return typeof t === 'number' ? new Date(t).toISOString() : t;
}

type End = { workload: string; direction: DirectionName; ruleId?: string };
const byEnd = (a: End, b: End) =>
  a.workload.localeCompare(b.workload) ||
  a.direction.localeCompare(b.direction) ||
  (a.ruleId ?? '').localeCompare(b.ruleId ?? '');

/**
 * `hasNoPolicy` answers of the state after the change (the one the groups are judged against):
 * the explaining ends it names are the group's `noPolicy`.
 */
export function toImpactView<F extends ObservedFlow>(
  report: ImpactReport<F>,
  hasNoPolicy?: HasNoPolicy,
): ImpactView {
  return {
    summary: report.summary,
    groups: report.groups.map((g) => {
      const wanted = EXPLAINS[g.change];
      const rules = new Map<string, ImpactRuleRef>();
      const gaps = new Map<string, End>();
      for (const f of g.flows) {
        for (const e of f.after) {
          if (wanted !== undefined && e.outcome !== wanted) continue;
          const ref = { workload: e.workload, direction: e.direction, ruleId: e.ruleId };
          rules.set(JSON.stringify(ref), ref);
          // With no policy an end's decision is the default deny: never an allowed end.
          if (hasNoPolicy?.(e.workload, e.direction)) {
            gaps.set(`${e.workload}\0${e.direction}`, {
              workload: e.workload,
              direction: e.direction,
            });
          }
        }
      }
      const view: ImpactGroupView = {
        change: g.change,
        src: groupName(g.src),
        dst: groupName(g.dst),
        protocol: protocolName(g.protocol),
        port: g.port,
        connections: g.connections,
        rules: [...rules.values()].sort(byEnd),
        flows: g.flows.length,
      };
      if (gaps.size > 0) view.noPolicy = [...gaps.values()].sort(byEnd);
      const lastSeen = isoTime(g.lastSeen);
      if (lastSeen !== undefined) view.lastSeen = lastSeen;
      return view;
    }),
  };
}

const SECTIONS = {
  Policy: { key: 'policies', validate: validatePolicy },
  Service: { key: 'services', validate: validateService },
  IpList: { key: 'ipLists', validate: validateIpList },
} as const;

/**
 * `base` with policy-file documents (`{kind, name, ...}`) laid over it: Policy, Service and
 * IpList replace the object of the same name (or add it); Workload sets labels/mode of an
 * existing workload. Every problem is a 400 naming its path under `path`.
 */
export function withResources(base: PolicyState, resources: unknown, path: string): PolicyState {
  const bad = (details: Diagnostic[]) =>
    new ControlPlaneError('VALIDATION_FAILED', 'invalid resources', { details });
  if (!Array.isArray(resources)) throw bad([{ path, message: 'must be an array' }]);
  const next: PolicyState = {
    workloads: [...base.workloads],
    policies: [...base.policies],
    services: [...base.services],
    ipLists: [...base.ipLists],
  };
  const diags: Diagnostic[] = [];
  resources.forEach((doc: unknown, i) => {
    const at = `${path}[${i}]`;
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
      diags.push({ path: at, message: 'must be an object' });
      return;
    }
    const { kind, ...body } = doc as { kind?: unknown; name?: unknown };
    if (kind === 'Workload') {
      const { name, labels, mode } = body as {
        name?: unknown;
        labels?: Record<string, string>;
        mode?: Partial<WorkloadMode>;
      };
      const idx = next.workloads.findIndex((w) => w.name === name);
      if (idx < 0) {
        diags.push({ path: `${at}.name`, message: `unknown workload "${String(name)}"` });
        return;
      }
      const patch = { labels, mode };
      const found = validateWorkloadPatch(
        Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined)),
        at,
      );
      if (found.length > 0) {
        diags.push(...found);
        return;
      }
      const w = next.workloads[idx]!;
      next.workloads[idx] = {
        ...w,
        labels: labels ?? w.labels,
        mode: { ...w.mode, ...mode },
      };
      return;
    }
    const section = SECTIONS[kind as keyof typeof SECTIONS];
    if (section === undefined) {
      diags.push({
        path: `${at}.kind`,
        message: 'must be one of Policy, Service, IpList, Workload',
      });
      return;
    }
    const found = section.validate(body, at);
    if (found.length > 0) {
      diags.push(...found);
      return;
    }
    const list = next[section.key] as (Policy | Service | IpList)[];
    const named = body as Policy | Service | IpList;
    const idx = list.findIndex((o) => o.name === named.name);
    if (idx < 0) list.push(named);
    else list[idx] = named;
  });
  if (diags.length > 0) throw bad(diags);
  for (const key of ['policies', 'services', 'ipLists'] as const) {
    (next[key] as { name: string }[]).sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
    );
  }
  return next;
}
