//! The lists inside records, kept as child rows: one table per list, a row
//! per item, `(owner, position, value[, weight])`.
//!
//! # Invariants
//! - A list reads back in the order it was written (`position` counts
//!   from 0), holding exactly its items: an item may contain any character,
//!   a comma or a colon included, because nothing is joined or split.
//! - A record's lists are replaced in the transaction that writes the
//!   record, and go with it when it is deleted (`ON DELETE CASCADE`; SQLite
//!   enforces foreign keys on every connection the store opens).
//!
//! # Deliberately absent
//! No generic "list of anything": each list is a table whose columns say
//! what it holds, so the schema documents itself.

use std::collections::BTreeMap;

use crate::StoreError;
use crate::sql::{Param, Row, Tx, int_param};

/// One list kept as child rows.
pub(crate) struct List {
    table: &'static str,
    /// The column naming the record the item belongs to.
    owner: &'static str,
    /// The column holding the item.
    value: &'static str,
    /// Whether each item has a `weight` beside it.
    weighted: bool,
}

/// A site's instances, as `host:port` text.
pub(crate) const SITE_INSTANCES: List =
    List { table: "site_instances", owner: "site", value: "address", weighted: false };
pub(crate) const SITE_HOSTS: List = List { table: "site_hosts", owner: "site", value: "host", weighted: false };
pub(crate) const SITE_PREMIUM_PREFIXES: List =
    List { table: "site_premium_prefixes", owner: "site", value: "prefix", weighted: false };
pub(crate) const SITE_PROVIDERS: List =
    List { table: "site_providers", owner: "site", value: "provider", weighted: true };
pub(crate) const PROJECT_DEPENDENCIES: List =
    List { table: "project_dependencies", owner: "project", value: "dependency", weighted: true };
pub(crate) const DEPLOYMENT_NODES: List =
    List { table: "deployment_nodes", owner: "site", value: "node", weighted: false };
pub(crate) const DEPLOYMENT_HOSTS: List =
    List { table: "deployment_hosts", owner: "site", value: "host", weighted: false };

/// Every list's items, by owner, each in position order.
pub(crate) struct Items(BTreeMap<String, Vec<Row>>);

impl List {
    /// Makes `items` the list of `owner`.
    pub(crate) fn put<'a>(
        &self,
        tx: &mut Tx<'_>,
        owner: &str,
        items: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), StoreError> {
        debug_assert!(!self.weighted, "{} needs weights", self.table);
        self.replace(tx, owner, items.into_iter().map(|item| (item, None)))
    }

    /// Makes `items`, with their weights, the list of `owner`.
    pub(crate) fn put_weighted(&self, tx: &mut Tx<'_>, owner: &str, items: &[(String, u64)]) -> Result<(), StoreError> {
        debug_assert!(self.weighted, "{} has no weights", self.table);
        self.replace(tx, owner, items.iter().map(|(item, weight)| (item.as_str(), Some(*weight))))
    }

    fn replace<'a>(
        &self,
        tx: &mut Tx<'_>,
        owner: &str,
        items: impl Iterator<Item = (&'a str, Option<u64>)>,
    ) -> Result<(), StoreError> {
        let List { table, owner: owner_column, value, .. } = self;
        tx.execute(&format!("DELETE FROM {table} WHERE {owner_column} = $1"), &[Param::Text(owner)])?;
        for (position, (item, weight)) in (0u64..).zip(items) {
            let position = int_param(position, "list position")?;
            match weight {
                None => tx.execute(
                    &format!("INSERT INTO {table} ({owner_column}, position, {value}) VALUES ($1, $2, $3)"),
                    &[Param::Text(owner), position, Param::Text(item)],
                )?,
                Some(weight) => tx.execute(
                    &format!("INSERT INTO {table} ({owner_column}, position, {value}, weight) VALUES ($1, $2, $3, $4)"),
                    &[Param::Text(owner), position, Param::Text(item), int_param(weight, "weight")?],
                )?,
            };
        }
        Ok(())
    }

    /// Every owner's items.
    pub(crate) fn read_all(&self, tx: &mut Tx<'_>) -> Result<Items, StoreError> {
        let List { table, owner, value, weighted } = self;
        let weight = if *weighted { ", weight" } else { "" };
        let rows =
            tx.query(&format!("SELECT {owner}, {value}{weight} FROM {table} ORDER BY {owner}, position"), &[])?;
        let mut items: BTreeMap<String, Vec<Row>> = BTreeMap::new();
        for row in rows {
            items.entry(row.text(0)?).or_default().push(row);
        }
        Ok(Items(items))
    }
}

impl Items {
    /// `owner`'s items, taken out.
    pub(crate) fn take(&mut self, owner: &str) -> Result<Vec<String>, StoreError> {
        self.0.remove(owner).unwrap_or_default().iter().map(|row| row.text(1)).collect()
    }

    /// `owner`'s items with their weights, taken out.
    pub(crate) fn take_weighted(&mut self, owner: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.0.remove(owner).unwrap_or_default().iter().map(|row| Ok((row.text(1)?, row.u64(2)?))).collect()
    }
}
