import {
  type Diagnostic,
  validateIpList,
  validatePolicy,
  validateService,
  validateWorkloadPatch,
} from '@bulkhead/policy';

/** A validator of @bulkhead/policy: `path` prefixes every diagnostic path. */
export type Validate = (value: unknown, path: string) => Diagnostic[];

/** Injectable so tests can pin the contract between file positions and diagnostic paths. */
export interface Validators {
  policy: Validate;
  service: Validate;
  ipList: Validate;
  workloadPatch: Validate;
}

export const validators: Validators = {
  policy: validatePolicy,
  service: validateService,
  ipList: validateIpList,
  workloadPatch: validateWorkloadPatch,
};
