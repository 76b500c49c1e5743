export {
  AGENT_VERSION,
  type Agent,
  type AgentOptions,
  createAgent,
  parseHostPort,
} from './agent.js';
export { DEFAULT_RULE_ID, mapCounters, readCounterDeltas } from './counters.js';
export {
  type ApplyResult,
  createDataplane,
  type Dataplane,
  type DataplaneOptions,
  type RestoreOutcome,
} from './dataplane.js';
export { DEFAULT_SERVER_NAME, type Identity, loadIdentity } from './enroll.js';
export { AgentError, type AgentErrorCode } from './errors.js';
export { type AgentMetrics, createAgentMetrics } from './metrics.js';
export { type Failsafe, renderCommands, renderRuleSet } from './render.js';
export { STATE_FILES } from './state.js';
