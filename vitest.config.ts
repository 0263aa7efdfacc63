import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Integration tests start real servers (sandbox HQ, PostgreSQL, moto) on loopback and run the command as a
    // user types it, several times in a test; on 2 busy cores one such test can take over a minute. Every
    // test's work is bounded, so the limit only catches a hang.
    testTimeout: 180_000,
    hookTimeout: 180_000,
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    globalSetup: ['test/support/global-setup.ts'],
  },
});
