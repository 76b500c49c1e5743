// The policy model as admins write it (REST API, YAML files). Names are the identity of
// every object; references between objects are by name.

export type Labels = Record<string, string>;

export type SelectorOperator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';

export interface SelectorRequirement {
  key: string;
  operator: SelectorOperator;
  /** Required, non-empty for In/NotIn; must be absent or empty for Exists/DoesNotExist. */
  values?: string[];
}

/** Kubernetes-style label selector. All terms are ANDed; `{}` selects every workload. */
export interface Selector {
  matchLabels?: Labels;
  matchExpressions?: SelectorRequirement[];
}

export type ModeName = 'monitor' | 'enforce';

export interface WorkloadMode {
  ingress: ModeName;
  egress: ModeName;
}

/** A host running an agent. */
export interface Workload {
  name: string;
  /** IPv4 and IPv6 addresses of the host, without prefix length. */
  addresses: string[];
  labels: Labels;
  mode: WorkloadMode;
}

/** Named CIDRs for things without an agent (license server, VPN range, the internet). */
export interface IpList {
  name: string;
  description?: string;
  /** CIDRs or single addresses, IPv4 or IPv6. */
  cidrs: string[];
  /** Subtracted from `cidrs`, like Kubernetes ipBlock.except. */
  except?: string[];
}

export type Protocol = 'tcp' | 'udp' | 'sctp' | 'icmp' | 'icmpv6' | 'any';

/** One protocol, and for tcp/udp/sctp a port or an inclusive range; no port = all ports. */
export interface PortSpec {
  protocol: Protocol;
  port?: number;
  endPort?: number;
}

export interface Service {
  name: string;
  description?: string;
  ports: PortSpec[];
}

/** Exactly one of selector, ipList, cidr. */
export interface Peer {
  selector?: Selector;
  ipList?: string;
  cidr?: string;
  /** Only with cidr: CIDRs subtracted from it. */
  except?: string[];
}

export type ActionName = 'allow' | 'deny';

export interface PolicyRule {
  action: ActionName;
  /** Non-empty. */
  peers: Peer[];
  /** Service names or inline port specs; omitted or empty = any protocol, any port. */
  services?: Array<string | PortSpec>;
}

export interface Policy {
  name: string;
  description?: string;
  /** The workloads this policy protects. */
  scope: Selector;
  ingress?: PolicyRule[];
  egress?: PolicyRule[];
}

/** Everything the compiler needs, as one snapshot. */
export interface PolicyState {
  workloads: Workload[];
  ipLists: IpList[];
  services: Service[];
  policies: Policy[];
}

/** A problem in user input, with the path of the offending field, e.g. `policies[3].ingress[0].peers`. */
export interface Diagnostic {
  path: string;
  message: string;
}
