/** The folders compiled to dist/: tsconfig.build.json's include. */
export function sourceDirs(root: string): string[];
/** Where the build writes the digest of the sources it compiled, relative to the project. */
export const STAMP: string;
/** A digest of the sources' names and contents (and the compiler settings). */
export function sourcesDigest(root: string): string;
/** `fresh`: dist/ matches the sources; `stale`: it was built from other sources; `none`: no complete build. */
export function buildState(root: string): 'fresh' | 'stale' | 'none';
