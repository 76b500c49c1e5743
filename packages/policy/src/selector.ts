import type { Labels, Selector } from './model.js';

/**
 * Kubernetes label-selector semantics: every term must hold; `{}` selects everything;
 * NotIn and DoesNotExist also match workloads that lack the key.
 */
export function matchesSelector(selector: Selector, labels: Labels): boolean {
  const has = (key: string) => Object.hasOwn(labels, key);
  for (const [key, value] of Object.entries(selector.matchLabels ?? {})) {
    if (!has(key) || labels[key] !== value) return false;
  }
  for (const req of selector.matchExpressions ?? []) {
    const present = has(req.key);
    const values = req.values ?? [];
    switch (req.operator) {
      case 'In':
        if (!present || !values.includes(labels[req.key]!)) return false;
        break;
      case 'NotIn':
        if (present && values.includes(labels[req.key]!)) return false;
        break;
      case 'Exists':
        if (!present) return false;
        break;
      case 'DoesNotExist':
        if (present) return false;
        break;
      default:
        // Unknown operators select nothing rather than everything: fail closed.
        return false;
    }
  }
  return true;
}
