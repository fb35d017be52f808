import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    globalSetup: ['test/global-setup.ts'],
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Integration files share the servers; each uses its own namespace, but two cores are few.
    fileParallelism: false,
    pool: 'forks',
  },
});
