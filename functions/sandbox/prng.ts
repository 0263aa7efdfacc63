/**
 * Deterministic, stateless randomness: every value is a pure function of (seed, stream, index), so
 * record i can be computed without computing records 0..i-1 (lazy generation, no per-record memory).
 */

/** 32-bit finaliser (lowbias32 by Chris Wellons): good avalanche, two multiplies. */
function mix(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** Hash of a list of integers (each reduced to 32 bits; indexes up to 2^53 keep their high bits). */
export function hash(...parts: number[]): number {
  let acc = 0x9e3779b9;
  for (const part of parts) {
    const lo = part >>> 0;
    const hi = Math.floor(part / 4294967296) >>> 0;
    acc = mix(acc ^ lo);
    if (hi !== 0) acc = mix(acc ^ hi ^ 0x85ebca6b);
    acc = mix(acc + 0x27d4eb2f);
  }
  return acc;
}

/** Stable 32-bit hash of a string (FNV-1a then mixed), used to name streams and projects. */
export function hashString(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return mix(h >>> 0);
}

/** mulberry32: a tiny sequential generator for the several choices made inside one record. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Sequential chooser over one record's generator. */
export class Rng {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  float(): number {
    return this.next();
  }
  int(maxExclusive: number): number {
    return Math.floor(this.next() * maxExclusive);
  }
  range(min: number, maxInclusive: number): number {
    return min + this.int(maxInclusive - min + 1);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  /** A non-empty subset in the items' own order (multi-select answers are space-separated in HQ). */
  subset<T>(items: readonly T[]): T[] {
    const out = items.filter(() => this.next() < 0.4);
    return out.length > 0 ? out : [this.pick(items)];
  }
}

const HEX = '0123456789abcdef';

function hex8(n: number): string {
  let s = '';
  for (let k = 28; k >= 0; k -= 4) s += HEX[(n >>> k) & 15];
  return s;
}

/** A UUID-shaped id (HQ form and case ids are UUIDs). */
export function uuid(...parts: number[]): string {
  const a = hex8(hash(...parts, 1));
  const b = hex8(hash(...parts, 2));
  const c = hex8(hash(...parts, 3));
  const d = hex8(hash(...parts, 4));
  return `${a}-${b.slice(0, 4)}-4${b.slice(5, 8)}-${'89ab'[(hash(...parts, 5) & 3) >>> 0]}${c.slice(1, 4)}-${c.slice(4)}${d}`;
}

/** A 32-hex-digit id (HQ user, group and location ids are Couch-style uuid hex). */
export function hex32(...parts: number[]): string {
  return (
    hex8(hash(...parts, 1)) + hex8(hash(...parts, 2)) + hex8(hash(...parts, 3)) + hex8(hash(...parts, 4))
  );
}
