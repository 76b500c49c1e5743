// The open Sync streams of the fleet, by agent and by workload: who is connected, the streams
// of a workload (so a change reaches its agents without a scan of every stream), ending
// streams. Holds no state beyond the process; must not touch the store or decide what to send.
import type { RangeForm } from '../rulesets/encode.js';

/** One open Sync stream, already bound to the agent id from its client certificate. */
export interface AgentStream {
  agentId: string;
  workload: string;
  /** Writes one encoded SyncResponse. */
  send(message: Buffer): void;
  /**
   * The agent state hash last sent on this stream (the publisher's bookkeeping): undefined
   * until a Hello was answered, so updates wait for the full sync the Hello brings.
   */
  synced?: string;
  /** performance.now() of the earliest send of a state the agent has not acked yet (metrics). */
  sentAt?: number;
  /** How the agent reads group ranges, from its Hello; `text` until then. */
  ranges?: RangeForm;
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
  /** The agent's open stream. */
  get(agentId: string): AgentStream | undefined;
  /** The open streams of the workload's agents. */
  ofWorkload(workload: string): readonly AgentStream[];
  /** Ends the agent's stream as denied. */
  close(agentId: string, reason: string): void;
  /** Ends the streams of every agent of the workload as denied (the workload was deleted). */
  closeWorkload(workload: string, reason: string): void;
  /** Ends every stream as unavailable (shutdown). */
  closeAll(reason: string): void;
}

export function createStreamRegistry(): StreamRegistry {
  const byAgent = new Map<string, AgentStream>();
  /**
   * Replaced, never edited: a change reaches every stream of the workload through the array
   * as it is (no copy per workload), and a stream that closes meanwhile does not disturb it.
   */
  const byWorkload = new Map<string, readonly AgentStream[]>();
  const forget = (s: AgentStream) => {
    if (byAgent.get(s.agentId) === s) byAgent.delete(s.agentId);
    const left = (byWorkload.get(s.workload) ?? []).filter((x) => x !== s);
    if (left.length > 0) byWorkload.set(s.workload, left);
    else byWorkload.delete(s.workload);
  };
  const close = (agentId: string, reason: string) => {
    const s = byAgent.get(agentId);
    if (!s) return;
    forget(s);
    s.close(reason, 'denied');
  };
  return {
    add(stream) {
      const old = byAgent.get(stream.agentId);
      if (old) forget(old);
      byAgent.set(stream.agentId, stream);
      const list = byWorkload.get(stream.workload) ?? [];
      if (!list.includes(stream)) byWorkload.set(stream.workload, [...list, stream]);
      // A reconnect can overtake the old stream's teardown; keep only the newest.
      if (old && old !== stream) old.close('superseded by a newer stream', 'unavailable');
      return () => forget(stream);
    },
    isConnected: (agentId) => byAgent.has(agentId),
    get: (agentId) => byAgent.get(agentId),
    ofWorkload: (workload) => byWorkload.get(workload) ?? [],
    close,
    closeWorkload(workload, reason) {
      for (const s of byWorkload.get(workload) ?? []) close(s.agentId, reason);
    },
    closeAll(reason) {
      const all = [...byAgent.values()];
      byAgent.clear();
      byWorkload.clear();
      for (const s of all) s.close(reason, 'unavailable');
    },
  };
}
