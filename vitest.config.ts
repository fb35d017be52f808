import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Integration files share the servers; each uses its own namespace, but two cores are few.
    fileParallelism: false,
    projects: [
      {
        // Start no servers: stages as functions, the runner against fake messages. Seconds.
        test: { name: 'unit', include: ['test/unit/**/*.test.ts'] },
      },
      {
        // Real nats-server, redis-server and clickhouse-server, started by the global setup.
        test: {
          name: 'integration',
          globalSetup: ['test/global-setup.ts'],
          include: ['test/**/*.test.ts'],
          exclude: ['test/unit/**'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          pool: 'forks',
        },
      },
    ],
  },
});
