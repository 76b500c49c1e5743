export {
  type AgentSpec,
  type AgentView,
  type Bulkhead,
  EXAMPLES,
  REPO_ROOT,
  startBulkhead,
  until,
} from './bulkhead.js';
export { createLab, LAB_SCRIPTS } from './lab.js';
export { cleanupStaleLabs } from './netns.js';
export {
  type ExecOptions,
  type ExecResult,
  type ExitInfo,
  type FetchResponse,
  type HeldConnection,
  type L4,
  type Lab,
  LabError,
  type LabErrorCode,
  type LabHost,
  type LabOptions,
  type LabProcess,
  type Listener,
  type NsFetch,
} from './types.js';
