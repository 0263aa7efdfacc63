import { CreateBucketCommand, ListBucketsCommand } from '@aws-sdk/client-s3';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { motoS3 } from '../support/aws';

describe('test services', () => {
  it('provides a real PostgreSQL server', async () => {
    const client = new pg.Client({ connectionString: inject('pgUrl') });
    await client.connect();
    const result = await client.query<{ v: string }>('select current_setting($$server_version$$) as v');
    await client.end();
    expect(result.rows[0]?.v).toMatch(/^\d+/);
  });

  it('provides moto speaking the S3 protocol', async () => {
    const s3 = motoS3(inject('motoEndpoint'));
    await s3.send(new CreateBucketCommand({ Bucket: 'services-check' }));
    const buckets = await s3.send(new ListBucketsCommand({}));
    expect(buckets.Buckets?.map((b) => b.Name)).toContain('services-check');
  });
});
