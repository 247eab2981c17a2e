//! One way to run a statement on either database, so that each store
//! operation is written once.

/// A statement parameter.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Param<'a> {
    Int(i64),
    Text(&'a str),
}

/// A column value read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    Int(i64),
    Text(String),
    Null,
}

impl Value {
    pub(crate) fn int(&self) -> i64 {
        match self {
            Value::Int(i) => *i,
            _ => 0,
        }
    }

    pub(crate) fn text(&self) -> String {
        match self {
            Value::Text(t) => t.clone(),
            Value::Int(i) => i.to_string(),
            Value::Null => String::new(),
        }
    }
}

/// An open transaction on either database.
pub(crate) enum Tx<'c> {
    Sqlite(rusqlite::Transaction<'c>),
    Postgres(postgres::Transaction<'c>),
}

fn db<E: std::fmt::Display>(e: E) -> crate::StoreError {
    crate::StoreError::Database(e.to_string())
}

impl Tx<'_> {
    pub(crate) fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, crate::StoreError> {
        match self {
            Tx::Sqlite(tx) => {
                let values: Vec<rusqlite::types::Value> = params.iter().map(sqlite_value).collect();
                tx.prepare_cached(sql)
                    .and_then(|mut s| s.execute(rusqlite::params_from_iter(values)))
                    .map(|n| n as u64)
                    .map_err(db)
            }
            Tx::Postgres(tx) => {
                let boxed = postgres_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = boxed.iter().map(|b| b.as_ref()).collect();
                tx.execute(sql, &refs).map_err(db)
            }
        }
    }

    pub(crate) fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Vec<Value>>, crate::StoreError> {
        match self {
            Tx::Sqlite(tx) => {
                let values: Vec<rusqlite::types::Value> = params.iter().map(sqlite_value).collect();
                let mut statement = tx.prepare_cached(sql).map_err(db)?;
                let n = statement.column_count();
                let rows = statement
                    .query_map(rusqlite::params_from_iter(values), |row| {
                        (0..n)
                            .map(|i| {
                                Ok(match row.get_ref(i)? {
                                    rusqlite::types::ValueRef::Integer(v) => Value::Int(v),
                                    rusqlite::types::ValueRef::Text(t) => {
                                        Value::Text(String::from_utf8_lossy(t).into_owned())
                                    }
                                    _ => Value::Null,
                                })
                            })
                            .collect::<Result<Vec<_>, rusqlite::Error>>()
                    })
                    .map_err(db)?;
                rows.collect::<Result<_, _>>().map_err(db)
            }
            Tx::Postgres(tx) => {
                let boxed = postgres_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = boxed.iter().map(|b| b.as_ref()).collect();
                let rows = tx.query(sql, &refs).map_err(db)?;
                Ok(rows
                    .iter()
                    .map(|row| {
                        (0..row.len())
                            .map(|i| {
                                if let Ok(Some(v)) = row.try_get::<_, Option<i64>>(i) {
                                    Value::Int(v)
                                } else if let Ok(Some(v)) = row.try_get::<_, Option<String>>(i) {
                                    Value::Text(v)
                                } else {
                                    Value::Null
                                }
                            })
                            .collect()
                    })
                    .collect())
            }
        }
    }

    pub(crate) fn commit(self) -> Result<(), crate::StoreError> {
        match self {
            Tx::Sqlite(tx) => tx.commit().map_err(db),
            Tx::Postgres(tx) => tx.commit().map_err(db),
        }
    }
}

fn sqlite_value(param: &Param<'_>) -> rusqlite::types::Value {
    match param {
        Param::Int(i) => rusqlite::types::Value::Integer(*i),
        Param::Text(t) => rusqlite::types::Value::Text((*t).to_owned()),
    }
}

fn postgres_params(params: &[Param<'_>]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    params
        .iter()
        .map(|p| -> Box<dyn postgres::types::ToSql + Sync> {
            match p {
                Param::Int(i) => Box::new(*i),
                Param::Text(t) => Box::new((*t).to_owned()),
            }
        })
        .collect()
}
