// The addresses an agent claims for its workload in Hello, never taken on its word alone: a
// bounded count of valid addresses; an address another workload has is refused (never
// compiled); a claim within the workload's address ranges (or its current addresses) applies;
// anything else is held as pending until an admin approves or denies it. Every outcome but
// "nothing changed" is audited and refusals and pending claims are recorded as events. Must not
// decide enrolment, nor write anything but the claiming workload.
import type { Logger } from 'pino';
import type { AuditLog } from '../access/store.js';
import { ControlPlaneError, type ErrorDetail } from '../errors.js';
import type { WorkloadChanges } from '../policy-admin/service.js';
import type { WorkloadRecord } from '../policy-admin/store.js';
import { toWorkload } from '../policy-state.js';
import type { Transactor } from '../store/database.js';
import type { ReportedEvent } from '../visibility/store.js';
import { canonicalClaim, inRanges, MAX_ADDRESSES, sameAddresses } from './claims.js';

export interface AddressClaims {
  /**
   * Handles the addresses of a Hello (empty: no claim). Returns the workloads whose agent
   * state it changed (the claim applied), or none.
   */
  claim(agentId: string, workload: string, addresses: readonly string[]): string[];
  /** Applies the pending addresses (ownership re-checked) and recompiles. */
  approve(actor: string, name: string): WorkloadRecord;
  deny(actor: string, name: string): WorkloadRecord;
}

export interface AddressClaimDeps {
  db: Transactor;
  workloads: WorkloadChanges;
  audit: AuditLog;
  /** Records a control-plane event about a workload (inside the caller's transaction). */
  recordEvent(workload: string, e: Omit<ReportedEvent, 'at'>): void;
  log: Logger;
  now: () => Date;
}

export function createAddressClaims(deps: AddressClaimDeps): AddressClaims {
  const { db, workloads, audit, recordEvent, log, now } = deps;

  /** Audits and records a refused claim; the workload keeps its addresses. */
  function refuse(agentId: string, w: WorkloadRecord, reason: string, details: ErrorDetail[]) {
    db.tx(() => {
      audit.appendAudit({
        actor: `agent:${agentId}`,
        action: 'workload.addresses.refused',
        target: w.name,
        after: { reason, details },
      });
      recordEvent(w.name, {
        code: 'ADDRESS_CLAIM_REFUSED',
        message: `addresses claimed by agent ${agentId} refused: ${reason}`,
        attributes: {
          agentId,
          reason,
          details: details
            .map((d) => `${d.path}: ${d.message}`)
            .join('; ')
            .slice(0, 2000),
        },
      });
    });
    log.warn({ agentId, workload: w.name, reason }, 'refused addresses from Hello');
  }

  /** Other workloads' addresses among `addresses`. */
  function taken(addresses: readonly string[], self: string) {
    const owners = workloads.addressOwners(addresses, self);
    return addresses.flatMap((address, i) => {
      const owner = owners.get(address);
      return owner ? [{ address, owner, path: `addresses[${i}]` }] : [];
    });
  }
  const asDetails = (conflicts: ReturnType<typeof taken>): ErrorDetail[] =>
    conflicts.map((c) => ({
      path: c.path,
      message: `${c.address} belongs to workload ${c.owner}`,
    }));

  function apply(actor: string, action: string, w: WorkloadRecord, addresses: string[]) {
    return workloads.changeWorkloads(
      (ws) => {
        ws.upsertWorkload({ ...toWorkload(w), addresses });
        ws.setWorkloadTrust(w.name, { pending: null });
      },
      () =>
        audit.appendAudit({
          actor,
          action,
          target: w.name,
          before: w.addresses,
          after: addresses,
        }),
    );
  }

  return {
    claim(agentId, name, claimed) {
      if (claimed.length === 0) return [];
      const w = workloads.getWorkload(name);
      const checked = canonicalClaim(claimed);
      // The common case (a reconnect) touches nothing else.
      if (checked.ok && sameAddresses(checked.addresses, w.addresses)) return [];
      if (!checked.ok) {
        const reason =
          claimed.length > MAX_ADDRESSES ? 'too many addresses' : 'invalid address claim';
        refuse(agentId, w, reason, checked.problems);
        return [];
      }
      const conflicts = taken(checked.addresses, name);
      if (conflicts.length > 0) {
        refuse(agentId, w, 'addresses of another workload', asDetails(conflicts));
      }
      const owned = new Set(conflicts.map((c) => c.address));
      const addresses = checked.addresses.filter((a) => !owned.has(a));
      if (addresses.length === 0 || sameAddresses(addresses, w.addresses)) return [];

      const current = new Set(w.addresses);
      if (addresses.every((a) => current.has(a) || inRanges(a, w.addressRanges))) {
        return apply(`agent:${agentId}`, 'workload.addresses', w, addresses);
      }
      if (w.pending && sameAddresses(w.pending.addresses, addresses)) return [];
      const pending = { addresses, agentId, requestedAt: now().toISOString() };
      workloads.updateTrust(name, { pending }, () => {
        audit.appendAudit({
          actor: `agent:${agentId}`,
          action: 'workload.addresses.pending',
          target: name,
          before: w.addresses,
          after: pending,
        });
        recordEvent(name, {
          code: 'ADDRESSES_PENDING',
          message: `agent ${agentId} claims addresses outside the workload's ranges; an admin approves or denies them`,
          attributes: { agentId, addresses: addresses.join(','), current: w.addresses.join(',') },
        });
      });
      log.warn({ agentId, workload: name, addresses }, 'address change waits for approval');
      return [];
    },

    approve(actor, name) {
      const w = workloads.getWorkload(name);
      if (!w.pending) {
        throw new ControlPlaneError('CONFLICT', `workload ${name} has no pending addresses`);
      }
      const conflicts = taken(w.pending.addresses, name);
      if (conflicts.length > 0) {
        throw new ControlPlaneError(
          'CONFLICT',
          `pending addresses of workload ${name} belong to another workload`,
          { details: asDetails(conflicts) },
        );
      }
      apply(actor, 'workload.addresses.approve', w, w.pending.addresses);
      return workloads.getWorkload(name);
    },

    deny(actor, name) {
      const w = workloads.getWorkload(name);
      if (!w.pending) {
        throw new ControlPlaneError('CONFLICT', `workload ${name} has no pending addresses`);
      }
      workloads.updateTrust(name, { pending: null }, () =>
        audit.appendAudit({
          actor,
          action: 'workload.addresses.deny',
          target: name,
          before: w.pending,
        }),
      );
      return workloads.getWorkload(name);
    },
  };
}
