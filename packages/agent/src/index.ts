export {
  AGENT_VERSION,
  type Agent,
  type AgentOptions,
  createAgent,
  parseHostPort,
} from './agent.js';
export { type BootRestoreOptions, bootRestore } from './boot.js';
export { DEFAULT_RULE_ID, mapCounters, readCounterDeltas } from './counters.js';
export {
  type ApplyResult,
  createDataplane,
  DATAPLANE_TAMPERED,
  type Dataplane,
  type DataplaneOptions,
  type Rendering,
  type RestoreOutcome,
} from './dataplane.js';
export { compareTable, type Drift, type ElementDrift } from './drift.js';
export {
  createEndpoints,
  type Endpoint,
  type Endpoints,
  type Lookup,
  parseControlPlanes,
} from './endpoints.js';
export { DEFAULT_SERVER_NAME, type Identity, loadIdentity } from './enroll.js';
export { AgentError, type AgentErrorCode } from './errors.js';
export {
  createFlowBuffer,
  DEFAULT_MAX_PENDING_FLOWS,
  FLOW_TABLE_FULL,
  FLOWS_DROPPED,
  type FlowBuffer,
  type FlowBufferOptions,
} from './flow-buffer.js';
export {
  deleteFlows,
  type FlowRead,
  type FlowSetStats,
  mapFlowSets,
  readFlows,
} from './flows.js';
export { QUIET_MS } from './heap.js';
export { type AgentMetrics, createAgentMetrics } from './metrics.js';
export {
  type ChainModel,
  type ElementPatch,
  planDelta,
  planFull,
  type RuleModel,
  type SetModel,
  type TableModel,
} from './model.js';
export {
  DEFAULT_FLOW_TABLE,
  type Failsafe,
  type FlowTableOptions,
  type GroupPolicy,
  groupSet,
  renderModel,
  renderRules,
  ruleChain,
  serviceSet,
} from './render.js';
export { type Backoff, type BackoffOptions, createBackoff, DEFAULT_BACKOFF } from './retry.js';
export { STATE_FILES } from './state.js';
export { DEFAULT_KEEPALIVE, type KeepaliveOptions, SYNC_CHANNEL_OPTIONS } from './sync.js';
export { type AppliedPolicy, mergeChunks, type PlannedUpdate, planUpdate } from './update.js';
export { DEFAULT_DRIFT_CHECK_INTERVAL_MS, type DriftWatch, watchDrift } from './watch.js';
