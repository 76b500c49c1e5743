// A line diff (longest common subsequence) of two objects printed as JSON, for the revision view's
// before/after of a changed policy, service, IP list or workload. Pure.

export interface DiffLine {
  op: ' ' | '-' | '+';
  text: string;
}

const lines = (v: unknown): string[] =>
  v === undefined ? [] : JSON.stringify(v, null, 2).split('\n');

export function jsonDiff(before: unknown, after: unknown): DiffLine[] {
  const a = lines(before);
  const b = lines(after);
  // lcs[i][j]: length of the common subsequence of a[i..] and b[j..].
  const lcs = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lcs[i]![j] =
        a[i] === b[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
    }
  }
  const out: DiffLine[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) {
      out.push({ op: ' ', text: a[i++]! });
      j++;
    } else if (i < a.length && (j === b.length || lcs[i + 1]![j]! >= lcs[i]![j + 1]!)) {
      // Removals before additions, as diff(1) shows a replaced line.
      out.push({ op: '-', text: a[i++]! });
    } else {
      out.push({ op: '+', text: b[j++]! });
    }
  }
  return out;
}
