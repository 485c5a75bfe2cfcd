use std::collections::HashMap;
use std::fmt;
use std::future::ready;
use std::sync::{Mutex, PoisonError};

use blueprint_core::ConnectionId;

use super::{
    Change, ChangeBroadcast, ChangeFeed, StoreFuture, StoreKey, StoredToken, Swap, TokenRecord,
    TokenStore,
};

/// A [`TokenStore`] in this process's memory: for tests, and for tokens that need not
/// outlive the process. Its [change feed](TokenStore::changes) reports each write at once.
#[derive(Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<StoreKey, StoredToken>>,
    changes: ChangeBroadcast,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<StoreKey, StoredToken>) -> T) -> T {
        f(&mut self.records.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.with(|records| records.len());
        f.debug_struct("MemoryStore")
            .field("records", &count)
            .finish()
    }
}

impl TokenStore for MemoryStore {
    fn get<'a>(&'a self, key: &'a StoreKey) -> StoreFuture<'a, Option<StoredToken>> {
        Box::pin(ready(Ok(self.with(|records| records.get(key).cloned()))))
    }

    fn put<'a>(&'a self, key: &'a StoreKey, record: TokenRecord) -> StoreFuture<'a, u64> {
        let version = self.with(|records| {
            let version = records.get(key).map_or(1, |stored| stored.version + 1);
            records.insert(key.clone(), StoredToken { record, version });
            version
        });
        self.changes.send(Change::Key(key.clone()));
        Box::pin(ready(Ok(version)))
    }

    fn compare_and_swap<'a>(
        &'a self,
        key: &'a StoreKey,
        expected: Option<u64>,
        record: TokenRecord,
    ) -> StoreFuture<'a, Swap> {
        let swap = self.with(|records| {
            let current = records.get(key).map(|stored| stored.version);
            if current != expected {
                return Swap::Conflict;
            }
            let version = current.map_or(1, |v| v + 1);
            records.insert(key.clone(), StoredToken { record, version });
            Swap::Swapped(version)
        });
        if matches!(swap, Swap::Swapped(_)) {
            self.changes.send(Change::Key(key.clone()));
        }
        Box::pin(ready(Ok(swap)))
    }

    fn delete<'a>(&'a self, key: &'a StoreKey) -> StoreFuture<'a, bool> {
        let removed = self.with(|records| records.remove(key).is_some());
        if removed {
            self.changes.send(Change::Key(key.clone()));
        }
        Box::pin(ready(Ok(removed)))
    }

    fn list<'a>(&'a self, integration: &'a str) -> StoreFuture<'a, Vec<ConnectionId>> {
        let mut ids: Vec<ConnectionId> = self.with(|records| {
            records
                .keys()
                .filter(|key| key.integration() == integration)
                .map(|key| key.connection().clone())
                .collect()
        });
        ids.sort();
        Box::pin(ready(Ok(ids)))
    }

    fn changes(&self) -> Option<ChangeFeed> {
        Some(self.changes.subscribe())
    }
}
