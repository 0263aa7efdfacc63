import { describe, expect, it } from 'vitest';
import { createSink, pgSettings, SinkConfigError, tlsOptions } from '../../functions/sinks';

const ca = '-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n';
const readCa = (path: string) => {
  if (path !== '/certs/rds.pem') throw new Error(`ENOENT ${path}`);
  return ca;
};

describe('PostgreSQL connection settings', () => {
  it('maps each sslmode to node TLS options as libpq means them', () => {
    expect(tlsOptions('disable')).toEqual({ ssl: false, fallbackToPlain: false });
    expect(tlsOptions('prefer')).toEqual({ ssl: { rejectUnauthorized: false }, fallbackToPlain: true });
    expect(tlsOptions('require')).toEqual({ ssl: { rejectUnauthorized: false }, fallbackToPlain: false });
    const verifyCa = tlsOptions('verify-ca', '/certs/rds.pem', readCa).ssl;
    expect(verifyCa).toMatchObject({ ca, rejectUnauthorized: true });
    // verify-ca checks the chain only: any host name passes.
    expect(
      verifyCa === false ? 'no tls' : verifyCa.checkServerIdentity?.('other.host', {} as never),
    ).toBeUndefined();
    expect(tlsOptions('verify-full', '/certs/rds.pem', readCa)).toEqual({
      ssl: { ca, rejectUnauthorized: true },
      fallbackToPlain: false,
    });
  });

  it('verifies the chain for require when a CA file is given, as libpq does', () => {
    expect(tlsOptions('require', '/certs/rds.pem', readCa).ssl).toMatchObject({
      ca,
      rejectUnauthorized: true,
    });
  });

  it('fails on an unknown sslmode or an unreadable CA file, naming what it received', () => {
    expect(() => tlsOptions('sometimes' as never)).toThrow(/received "sometimes"/);
    expect(() => tlsOptions('verify-full', '/nope.pem', readCa)).toThrow(
      /Cannot read the CA bundle file "\/nope.pem"/,
    );
  });

  it('reads sslmode and sslrootcert from a URL and keeps the password out of the description', () => {
    expect(() =>
      pgSettings(
        'postgresql://u:p%40ss@db.example.com:6543/exports?sslmode=verify-full&sslrootcert=/nope.pem',
      ),
    ).toThrow(SinkConfigError);
    const settings = pgSettings('postgresql://u:p%40ss@db.example.com:6543/exports?sslmode=require');
    expect(settings).toMatchObject({
      host: 'db.example.com',
      port: 6543,
      user: 'u',
      password: 'p@ss',
      database: 'exports',
      ssl: { rejectUnauthorized: false },
      description: 'u@db.example.com:6543/exports',
    });
  });

  it('accepts a connection object in the shape RDS generates, with verify-full checking the host name', () => {
    const settings = pgSettings({
      host: 'mydb.abc.eu-west-1.rds.amazonaws.com',
      port: 5432,
      username: 'exporter',
      password: 'pw',
      dbname: 'commcare',
      sslmode: 'verify-full',
    });
    expect(settings.ssl).toEqual({
      rejectUnauthorized: true,
      servername: 'mydb.abc.eu-west-1.rds.amazonaws.com',
    });
    expect(settings.description).toBe('exporter@mydb.abc.eu-west-1.rds.amazonaws.com:5432/commcare');
  });

  it('fails when a file format is pointed at a database URL or sql at S3', async () => {
    await expect(createSink({ format: 'csv', output: 'postgresql://h/db' })).rejects.toThrow(
      /needs --output-format sql/,
    );
    await expect(createSink({ format: 'sql', output: 's3://b/p' })).rejects.toThrow(
      /sql output needs a postgresql:\/\/ URL/,
    );
  });
});
