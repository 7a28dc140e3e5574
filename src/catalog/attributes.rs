//! Item attributes in memory by key, for filtering search results without a database query
//! per candidate. Loaded at start-up and kept in step with catalogue writes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

use crate::filter::Filter;

#[derive(Default)]
pub struct AttributeTable {
    by_key: RwLock<HashMap<u64, Arc<Map<String, Value>>>>,
}

impl AttributeTable {
    pub fn new(entries: Vec<(u64, Map<String, Value>)>) -> Self {
        Self { by_key: RwLock::new(entries.into_iter().map(|(key, attributes)| (key, Arc::new(attributes))).collect()) }
    }

    pub fn set(&self, key: u64, attributes: Map<String, Value>) {
        self.by_key.write().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(key, Arc::new(attributes));
    }

    pub fn remove(&self, key: u64) {
        self.by_key.write().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&key);
    }

    /// Returns true when the item exists and passes the filter.
    pub fn passes(&self, key: u64, filter: &Filter) -> bool {
        self.by_key.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&key).is_some_and(|attributes| filter.matches(attributes))
    }

    /// Returns every key that passes the filter, by scanning all items.
    pub fn matching(&self, filter: &Filter) -> Vec<u64> {
        let table = self.by_key.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        table.iter().filter(|(_, attributes)| filter.matches(attributes)).map(|(key, _)| *key).collect()
    }
}
