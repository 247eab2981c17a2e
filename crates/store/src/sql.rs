//! One way to run a statement on either database, so that each store
//! operation is written once, and typed reads of what comes back.
//!
//! # Invariants
//! - A value is read back only as the type asked for. NULL, text where a
//!   number belongs, or a number out of the range the store writes is
//!   [`StoreError::Corrupt`] naming the table and column, never a default:
//!   a damaged `paid_cents` must not read as a free subscription.
//! - A database's error is sorted once, here, into what a caller can act
//!   on: a broken constraint, an unreachable database, or anything else.
//!
//! # Deliberately absent
//! No SQL dialect layer: the statements are written in the subset both
//! databases share (`$1` parameters work in both).

use std::rc::Rc;

use crate::StoreError;

/// A statement parameter.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Param<'a> {
    Int(i64),
    Text(&'a str),
    Bytes(&'a [u8]),
}

/// `value` as a parameter, or [`StoreError::OutOfRange`] if the
/// databases' 64-bit signed integers cannot hold it.
pub(crate) fn int_param(value: u64, what: &'static str) -> Result<Param<'static>, StoreError> {
    i64::try_from(value).map(Param::Int).map_err(|_| StoreError::OutOfRange { what, value })
}

/// A column value as the database gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
    /// Anything the store never writes (a real number, text that is not
    /// UTF-8, another PostgreSQL type), described for the error.
    Other(String),
}

impl Value {
    /// What a value is, for "expected …, found …".
    fn describe(&self) -> String {
        match self {
            Value::Null => "NULL".into(),
            Value::Int(_) => "an integer".into(),
            Value::Text(_) => "text".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::Other(what) => what.clone(),
        }
    }
}

/// Where a row's values come from: the table (the first `FROM` of the
/// statement) and the columns' names, as the database reports them.
#[derive(Debug)]
struct Source {
    table: String,
    columns: Vec<String>,
}

/// One row read back; its typed accessors fail on what the store would
/// never have written.
#[derive(Debug)]
pub(crate) struct Row {
    source: Rc<Source>,
    values: Vec<Value>,
}

impl Row {
    pub(crate) fn text(&self, i: usize) -> Result<String, StoreError> {
        match &self.values[i] {
            Value::Text(text) => Ok(text.clone()),
            other => Err(self.corrupt(i, format!("expected text, found {}", other.describe()))),
        }
    }

    pub(crate) fn bytes(&self, i: usize) -> Result<Vec<u8>, StoreError> {
        match &self.values[i] {
            Value::Bytes(bytes) => Ok(bytes.clone()),
            other => Err(self.corrupt(i, format!("expected bytes, found {}", other.describe()))),
        }
    }

    pub(crate) fn int(&self, i: usize) -> Result<i64, StoreError> {
        match &self.values[i] {
            Value::Int(n) => Ok(*n),
            other => Err(self.corrupt(i, format!("expected an integer, found {}", other.describe()))),
        }
    }

    /// An integer that may be NULL (a column added without a default).
    pub(crate) fn optional_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match &self.values[i] {
            Value::Null => Ok(None),
            _ => self.int(i).map(Some),
        }
    }

    pub(crate) fn u64(&self, i: usize) -> Result<u64, StoreError> {
        let n = self.int(i)?;
        u64::try_from(n).map_err(|_| self.corrupt(i, format!("expected a non-negative integer, found {n}")))
    }

    pub(crate) fn u32(&self, i: usize) -> Result<u32, StoreError> {
        let n = self.int(i)?;
        u32::try_from(n).map_err(|_| self.corrupt(i, format!("expected an integer from 0 to {}, found {n}", u32::MAX)))
    }

    /// 64 bits (a bitmask) stored as a signed integer's bit pattern.
    pub(crate) fn bits64(&self, i: usize) -> Result<u64, StoreError> {
        self.int(i).map(|n| n as u64)
    }

    pub(crate) fn bool(&self, i: usize) -> Result<bool, StoreError> {
        match self.int(i)? {
            0 => Ok(false),
            1 => Ok(true),
            n => Err(self.corrupt(i, format!("expected 0 or 1, found {n}"))),
        }
    }

    /// Column `i` holds a value of the right type that means nothing
    /// (an address that does not parse, say): `detail` says why.
    pub(crate) fn corrupt(&self, i: usize, detail: impl Into<String>) -> StoreError {
        let column = self.source.columns.get(i).map_or("?", String::as_str);
        StoreError::Corrupt { what: format!("{}.{column}", self.source.table), detail: detail.into() }
    }
}

/// The table a statement reads: the word after its first ` FROM `.
fn table_of(sql: &str) -> String {
    sql.split_once(" FROM ")
        .map(|(_, rest)| rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
        .unwrap_or_else(|| "result".into())
}

/// An open transaction on either database.
pub(crate) enum Tx<'c> {
    Sqlite(rusqlite::Transaction<'c>),
    Postgres(postgres::Transaction<'c>),
}

impl Tx<'_> {
    /// Runs one statement; how many rows it changed.
    pub(crate) fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        match self {
            Tx::Sqlite(tx) => sqlite_execute(tx, sql, params),
            Tx::Postgres(tx) => postgres_execute(tx, sql, params),
        }
    }

    /// Runs one query; its rows.
    pub(crate) fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        match self {
            Tx::Sqlite(tx) => sqlite_query(tx, sql, params),
            Tx::Postgres(tx) => postgres_query(tx, sql, params),
        }
    }

    /// Runs statements without parameters (a migration's DDL).
    pub(crate) fn execute_batch(&mut self, sql: &str) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(tx) => tx.execute_batch(sql).map_err(sqlite_error),
            Tx::Postgres(tx) => tx.batch_execute(sql).map_err(postgres_error),
        }
    }

    pub(crate) fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(tx) => tx.commit().map_err(sqlite_error),
            Tx::Postgres(tx) => tx.commit().map_err(postgres_error),
        }
    }
}

pub(crate) fn sqlite_execute(
    connection: &rusqlite::Connection,
    sql: &str,
    params: &[Param<'_>],
) -> Result<u64, StoreError> {
    let values = params.iter().map(sqlite_value);
    let mut statement = connection.prepare_cached(sql).map_err(sqlite_error)?;
    statement.execute(rusqlite::params_from_iter(values)).map(|n| n as u64).map_err(sqlite_error)
}

fn sqlite_query(connection: &rusqlite::Connection, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
    let values = params.iter().map(sqlite_value);
    let mut statement = connection.prepare_cached(sql).map_err(sqlite_error)?;
    let columns = statement.column_names().map(str::to_owned).collect();
    let source = Rc::new(Source { table: table_of(sql), columns });
    let n = statement.column_count();
    let rows = statement
        .query_map(rusqlite::params_from_iter(values), |row| {
            (0..n)
                .map(|i| {
                    use rusqlite::types::ValueRef;
                    Ok(match row.get_ref(i)? {
                        ValueRef::Null => Value::Null,
                        ValueRef::Integer(n) => Value::Int(n),
                        ValueRef::Text(t) => match std::str::from_utf8(t) {
                            Ok(text) => Value::Text(text.to_owned()),
                            Err(_) => Value::Other("text that is not UTF-8".into()),
                        },
                        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
                        ValueRef::Real(_) => Value::Other("a real number".into()),
                    })
                })
                .collect::<Result<Vec<_>, rusqlite::Error>>()
        })
        .map_err(sqlite_error)?;
    rows.map(|values| values.map(|values| Row { source: Rc::clone(&source), values }))
        .collect::<Result<_, _>>()
        .map_err(sqlite_error)
}

pub(crate) fn postgres_execute(
    client: &mut impl postgres::GenericClient,
    sql: &str,
    params: &[Param<'_>],
) -> Result<u64, StoreError> {
    let boxed = postgres_params(params);
    let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = boxed.iter().map(|b| b.as_ref()).collect();
    client.execute(sql, &refs).map_err(postgres_error)
}

fn postgres_query(
    client: &mut impl postgres::GenericClient,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Vec<Row>, StoreError> {
    use postgres::types::Type;
    let boxed = postgres_params(params);
    let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = boxed.iter().map(|b| b.as_ref()).collect();
    let statement = client.prepare(sql).map_err(postgres_error)?;
    let columns = statement.columns().iter().map(|c| c.name().to_owned()).collect();
    let source = Rc::new(Source { table: table_of(sql), columns });
    let rows = client.query(&statement, &refs).map_err(postgres_error)?;
    rows.iter()
        .map(|row| {
            let values = (0..row.len())
                .map(|i| {
                    let ty = row.columns()[i].type_();
                    Ok(match *ty {
                        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map_or(Value::Null, Value::Int),
                        Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map_or(Value::Null, |n| Value::Int(n.into())),
                        Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map_or(Value::Null, |n| Value::Int(n.into())),
                        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                            row.try_get::<_, Option<String>>(i)?.map_or(Value::Null, Value::Text)
                        }
                        Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map_or(Value::Null, Value::Bytes),
                        _ => Value::Other(format!("a value of type {ty}")),
                    })
                })
                .collect::<Result<Vec<_>, postgres::Error>>()
                .map_err(postgres_error)?;
            Ok(Row { source: Rc::clone(&source), values })
        })
        .collect()
}

fn sqlite_value(param: &Param<'_>) -> rusqlite::types::Value {
    match param {
        Param::Int(i) => rusqlite::types::Value::Integer(*i),
        Param::Text(t) => rusqlite::types::Value::Text((*t).to_owned()),
        Param::Bytes(b) => rusqlite::types::Value::Blob(b.to_vec()),
    }
}

fn postgres_params(params: &[Param<'_>]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    params
        .iter()
        .map(|p| -> Box<dyn postgres::types::ToSql + Sync> {
            match p {
                Param::Int(i) => Box::new(*i),
                Param::Text(t) => Box::new((*t).to_owned()),
                Param::Bytes(b) => Box::new(b.to_vec()),
            }
        })
        .collect()
}

/// SQLite's error, sorted by its primary result code.
pub(crate) fn sqlite_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => StoreError::Constraint(e.to_string()),
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::OutOfMemory,
        ) => StoreError::Unavailable(e.to_string()),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            StoreError::Corrupt { what: "database file".into(), detail: e.to_string() }
        }
        _ => StoreError::Database(e.to_string()),
    }
}

/// PostgreSQL's error, sorted by its SQLSTATE class (or, without one, by
/// whether the connection is gone).
pub(crate) fn postgres_error(e: postgres::Error) -> StoreError {
    let message = match std::error::Error::source(&e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    };
    match e.code().map(|code| code.code()) {
        // integrity constraint violation
        Some(code) if code.starts_with("23") => StoreError::Constraint(message),
        // connection exception, insufficient resources, operator intervention
        Some(code) if ["08", "53", "57"].iter().any(|class| code.starts_with(class)) => {
            StoreError::Unavailable(message)
        }
        // data corrupted, index corrupted
        Some("XX001" | "XX002") => StoreError::Corrupt { what: "database".into(), detail: message },
        Some(_) => StoreError::Database(message),
        None if e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) => {
            StoreError::Unavailable(message)
        }
        None => StoreError::Database(message),
    }
}
