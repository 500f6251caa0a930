/**
 * The SQL database of the example: PGlite (PostgreSQL compiled to WebAssembly, in this process, no server) by default,
 * a real PostgreSQL when a URL is given. Both speak the same SQL with $1-style parameters, so the queries are written
 * once. Each database holds the example's tables in a schema of its own (`search_path`), so that a shared PostgreSQL
 * (and the tests, each with a unique schema) never mixes them with anything else.
 */
import { PGlite } from '@electric-sql/pglite'
import pg from 'pg'

export type Row = Record<string, unknown>

export interface SqlDatabase {
  /** `pglite` or `postgres`. */
  readonly kind: 'pglite' | 'postgres'
  readonly schema: string
  /** One statement with positional parameters ($1, $2...). */
  query<T extends Row = Row>(sql: string, params?: readonly unknown[]): Promise<T[]>
  /** Several statements without parameters (DDL). */
  exec (sql: string): Promise<void>
  /** Drops the schema and everything in it (tests). */
  dropSchema (): Promise<void>
  close (): Promise<void>
}

export interface OpenDatabaseOptions {
  /** A postgres:// URL; PGlite in memory when omitted. */
  url?: string
  /** Schema that holds the tables; `example_analytics` by default. Letters, digits and underscores. */
  schema?: string
}

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/

export const DEFAULT_SCHEMA = 'example_analytics'

export async function openDatabase (options: OpenDatabaseOptions = {}): Promise<SqlDatabase> {
  const schema = options.schema ?? DEFAULT_SCHEMA
  if (!SCHEMA_NAME.test(schema)) throw new Error(`schema must match ${String(SCHEMA_NAME)}, got ${JSON.stringify(schema)}`)
  const db = options.url === undefined ? await PgliteDatabase.open(schema) : await PostgresDatabase.open(options.url, schema)
  return db
}

class PgliteDatabase implements SqlDatabase {
  readonly kind = 'pglite'

  private constructor (private readonly db: PGlite, readonly schema: string) {}

  static async open (schema: string): Promise<PgliteDatabase> {
    const db = new PGlite()
    await db.exec(`CREATE SCHEMA IF NOT EXISTS ${schema}; SET search_path TO ${schema}`)
    return new PgliteDatabase(db, schema)
  }

  async query<T extends Row = Row>(sql: string, params: readonly unknown[] = []): Promise<T[]> {
    const result = await this.db.query<T>(sql, params as unknown[])
    return result.rows
  }

  async exec (sql: string): Promise<void> {
    await this.db.exec(sql)
  }

  async dropSchema (): Promise<void> {
    await this.db.exec(`DROP SCHEMA IF EXISTS ${this.schema} CASCADE`)
  }

  async close (): Promise<void> {
    await this.db.close()
  }
}

class PostgresDatabase implements SqlDatabase {
  readonly kind = 'postgres'

  private constructor (private readonly pool: pg.Pool, readonly schema: string) {}

  static async open (url: string, schema: string): Promise<PostgresDatabase> {
    // Every connection of the pool starts with the schema on its search_path.
    const pool = new pg.Pool({ connectionString: url, max: 10, options: `-c search_path=${schema}` })
    // An idle connection that the server drops is an event, not a crash.
    pool.on('error', () => {})
    try {
      await pool.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`)
    } catch (error) {
      await pool.end()
      throw error
    }
    return new PostgresDatabase(pool, schema)
  }

  async query<T extends Row = Row>(sql: string, params: readonly unknown[] = []): Promise<T[]> {
    const result = await this.pool.query(sql, params as unknown[])
    return result.rows as T[]
  }

  async exec (sql: string): Promise<void> {
    await this.pool.query(sql)
  }

  async dropSchema (): Promise<void> {
    await this.pool.query(`DROP SCHEMA IF EXISTS ${this.schema} CASCADE`)
  }

  async close (): Promise<void> {
    await this.pool.end()
  }
}

/** The URL without its password, for the log. */
export function redactedUrl (url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password !== '') parsed.password = '***'
    return parsed.toString()
  } catch {
    return '(unparsable URL)'
  }
}
