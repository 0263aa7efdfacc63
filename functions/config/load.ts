/** Reads a config file from disk and checks that its query files exist (the impure edge of `parse.ts`). */
import { existsSync, readFileSync } from 'node:fs';
import { ConfigError, type ExportsConfig, parseExportsConfig } from './parse';

export function loadExportsConfig(fileName: string): ExportsConfig {
  let text: string;
  try {
    text = readFileSync(fileName, 'utf8');
  } catch (error) {
    throw new ConfigError(
      fileName,
      [`cannot read the config file (${(error as NodeJS.ErrnoException).code ?? 'error'})`],
      {
        cause: error,
      },
    );
  }
  const config = parseExportsConfig(text, fileName);
  const missing = config.exports.flatMap((e, i) =>
    e.queryFilePath === null || existsSync(e.queryFilePath)
      ? []
      : [
          `exports[${i}].queryFile: ${JSON.stringify(e.queryFile)} does not exist (looked for ${e.queryFilePath})`,
        ],
  );
  if (missing.length > 0) throw new ConfigError(fileName, missing);
  return config;
}
