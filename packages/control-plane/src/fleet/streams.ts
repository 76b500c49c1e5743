// The open Sync streams of the fleet, by agent: who is connected, pushing a RuleSet to a
// workload's agents, ending streams. Holds no state beyond the process; must not touch the store.
import type { RuleSet } from '@bulkhead/proto';

/** One open Sync stream, already bound to the agent id from its client certificate. */
export interface AgentStream {
  agentId: string;
  workload: string;
  send(ruleSet: RuleSet): void;
  /**
   * Ends the stream. `denied`: the agent may no longer sync (revoked, deleted), so it must not
   * simply reconnect; `unavailable`: shutdown or superseded, reconnecting is right.
   */
  close(reason: string, kind: 'denied' | 'unavailable'): void;
}

export interface StreamRegistry {
  /** Registers a stream; an older stream of the same agent is closed. Returns the remover. */
  add(stream: AgentStream): () => void;
  isConnected(agentId: string): boolean;
  /** Sends to every open stream of the workload's agents; returns how many got it. */
  push(ruleSet: RuleSet): number;
  /** Ends the agent's stream as denied. */
  close(agentId: string, reason: string): void;
  /** Ends the streams of every agent of the workload as denied (the workload was deleted). */
  closeWorkload(workload: string, reason: string): void;
  /** Ends every stream as unavailable (shutdown). */
  closeAll(reason: string): void;
}

export function createStreamRegistry(): StreamRegistry {
  const byAgent = new Map<string, AgentStream>();
  const close = (agentId: string, reason: string) => {
    const s = byAgent.get(agentId);
    byAgent.delete(agentId);
    s?.close(reason, 'denied');
  };
  return {
    add(stream) {
      const old = byAgent.get(stream.agentId);
      byAgent.set(stream.agentId, stream);
      // A reconnect can overtake the old stream's teardown; keep only the newest.
      if (old && old !== stream) old.close('superseded by a newer stream', 'unavailable');
      return () => {
        if (byAgent.get(stream.agentId) === stream) byAgent.delete(stream.agentId);
      };
    },
    isConnected: (agentId) => byAgent.has(agentId),
    push(ruleSet) {
      let n = 0;
      for (const s of byAgent.values()) {
        if (s.workload === ruleSet.workloadId) {
          s.send(ruleSet);
          n++;
        }
      }
      return n;
    },
    close,
    closeWorkload(workload, reason) {
      for (const s of [...byAgent.values()]) {
        if (s.workload === workload) close(s.agentId, reason);
      }
    },
    closeAll(reason) {
      const all = [...byAgent.values()];
      byAgent.clear();
      for (const s of all) s.close(reason, 'unavailable');
    },
  };
}
