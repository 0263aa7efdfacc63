import { csvFormat } from './csv';
import { jsonFormat } from './json';
import { markdownFormat } from './markdown';
import { parquetFormat } from './parquet';
import type { FileFormat } from './types';
import { xlsxFormat } from './xlsx';

export const fileFormats: Readonly<Record<FileFormat['name'], FileFormat>> = {
  csv: csvFormat,
  xlsx: xlsxFormat,
  json: jsonFormat,
  markdown: markdownFormat,
  parquet: parquetFormat,
};
export type { FileFormat, TableEncoder } from './types';
