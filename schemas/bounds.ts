/** How deep and how large a producer's `data` may be: it travels with every chunk and feeds templates. */
export const dataLimits = { depth: 16, values: 10_000, bytes: 64 * 1024 } as const;

/**
 * Problems with the shape of a JSON value, found without recursion (a 5,000-level object must not
 * overflow the stack here or in a later JSON.stringify): too deep, too many values, too many bytes.
 */
export function jsonShapeProblems(value: unknown, limits: { depth: number; values: number; bytes: number } = dataLimits): string[] {
  const stack: { v: unknown; depth: number }[] = [{ v: value, depth: 0 }];
  let values = 0;
  let deepest = 0;
  while (stack.length) {
    const { v, depth } = stack.pop()!;
    values++;
    if (depth > deepest) deepest = depth;
    if (deepest > limits.depth) return [`nested ${deepest} levels deep; at most ${limits.depth}`];
    if (values > limits.values) return [`holds more than ${limits.values} values`];
    if (v && typeof v === 'object') {
      for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push({ v: child, depth: depth + 1 });
    }
  }
  const bytes = Buffer.byteLength(JSON.stringify(value));
  return bytes > limits.bytes ? [`is ${bytes} bytes as JSON; at most ${limits.bytes}`] : [];
}
