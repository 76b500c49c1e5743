// The periodic policy audit (`GET /v1/hygiene`): rule findings from the provisioned policy and
// the window's flows and counters (hygiene-rules.ts), workloads still in monitor mode long after
// they enrolled, enrolment tokens never used or near expiry, API tokens never used. Reads other
// domains' stores; changes nothing.
import type { HygieneFinding, HygieneView } from '@bulkhead/api';
import type { AccessStore } from '../access/store.js';
import { invalid } from '../errors.js';
import type { FleetStore } from '../fleet/store.js';
import type { PolicyAdminStore } from '../policy-admin/store.js';
import type { PolicyStates } from '../policy-state.js';
import { ruleFindings } from './hygiene-rules.js';
import type { VisibilityStore } from './store.js';

const DAY_MS = 86_400_000;
export const DEFAULT_HYGIENE_DAYS = 30;
export const DEFAULT_EXPIRY_DAYS = 7;

export interface HygieneService {
  /** `days`: the window of "no hits" and "still in monitor"; `expiringDays`: "near expiry". */
  audit(q: { days?: number; expiringDays?: number }): HygieneView;
}

export interface HygieneDeps {
  states: PolicyStates;
  flows: Pick<VisibilityStore, 'queryFlows'>;
  fleet: Pick<FleetStore, 'listCounters' | 'listEnrollmentTokens'>;
  workloads: Pick<PolicyAdminStore, 'listWorkloads'>;
  tokens: Pick<AccessStore, 'listApiTokens'>;
  now?: () => Date;
}

const ageDays = (iso: string, now: Date) => Math.floor((now.getTime() - Date.parse(iso)) / DAY_MS);

export function createHygieneService(deps: HygieneDeps): HygieneService {
  const now = deps.now ?? (() => new Date());
  return {
    audit(q) {
      const days = q.days ?? DEFAULT_HYGIENE_DAYS;
      const expiringDays = q.expiringDays ?? DEFAULT_EXPIRY_DAYS;
      if (!Number.isInteger(days) || days < 1) {
        throw invalid('invalid query', [{ path: 'days', message: 'must be an integer >= 1' }]);
      }
      const at = now();
      const since = new Date(at.getTime() - days * DAY_MS).toISOString();
      const { state, revision } = deps.states.provisioned(deps.states.workloads());
      const findings: HygieneFinding[] = ruleFindings(
        state,
        deps.flows.queryFlows({ since }),
        deps.fleet.listCounters(),
        days,
      );

      // The provisioned mode: one only drafted is still in monitor on the host.
      const mode = new Map(state.workloads.map((w) => [w.name, w.mode]));
      for (const w of deps.workloads.listWorkloads()) {
        const running = mode.get(w.name) ?? w.mode;
        const monitored = (['ingress', 'egress'] as const).filter((d) => running[d] !== 'enforce');
        const age = ageDays(w.createdAt, at);
        if (monitored.length === 0 || age < days) continue;
        findings.push({
          kind: 'monitor-too-long',
          subject: w.name,
          detail: `${monitored.join(' and ')} still in monitor mode ${age} days after enrolment`,
          fix: `check \`bulkhead impact\` for it, then \`bulkhead mode ${w.name} ${monitored.map((d) => `--${d} enforce`).join(' ')} --provision\``,
        });
      }

      for (const t of deps.fleet.listEnrollmentTokens()) {
        const left = (Date.parse(t.expiresAt) - at.getTime()) / DAY_MS;
        const spent = t.maxUses !== null && t.uses >= t.maxUses;
        if (left <= 0 || spent) {
          findings.push({
            kind: 'expiring-enrolment-token',
            subject: t.id,
            detail: spent ? `used up (${t.uses} of ${t.maxUses})` : `expired on ${t.expiresAt}`,
            fix: `delete it: \`bulkhead delete enrollment-token ${t.id}\``,
          });
        } else if (t.uses === 0 && ageDays(t.createdAt, at) >= days) {
          findings.push({
            kind: 'unused-enrolment-token',
            subject: t.id,
            detail: `never used in the ${ageDays(t.createdAt, at)} days since it was made`,
            fix: `delete it if no host is still to enrol: \`bulkhead delete enrollment-token ${t.id}\``,
          });
        } else if (left <= expiringDays) {
          findings.push({
            kind: 'expiring-enrolment-token',
            subject: t.id,
            detail: `expires in ${Math.ceil(left)} day(s), on ${t.expiresAt}`,
            fix: 'make a new token if hosts are still to enrol with it',
          });
        }
      }

      for (const t of deps.tokens.listApiTokens()) {
        if (t.lastUsed !== null || ageDays(t.createdAt, at) < days) continue;
        findings.push({
          kind: 'unused-api-token',
          subject: `${t.name} (${t.id})`,
          detail: `${t.role} token never used in the ${ageDays(t.createdAt, at)} days since it was made`,
          fix: `delete it if nobody needs it: \`bulkhead delete token ${t.id}\``,
        });
      }
      return { days, at: at.toISOString(), revision, findings };
    },
  };
}
