//! Locks that go on after a panic. Every value the host keeps under a
//! `std` lock is whole after each write, so a thread that panicked while
//! holding one leaves nothing half-done: the next holder takes the value as
//! it stands rather than poisoning every later caller.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// [`Mutex::lock`] that takes a poisoned lock's value as it stands.
pub trait Locked<T> {
    /// Locks, whatever happened to the last holder.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// [`RwLock::read`] and [`RwLock::write`] that take a poisoned lock's value
/// as it stands.
pub trait ReadWrite<T> {
    /// Reads, whatever happened to the last writer.
    fn reading(&self) -> RwLockReadGuard<'_, T>;
    /// Writes, whatever happened to the last writer.
    fn writing(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T> ReadWrite<T> for RwLock<T> {
    fn reading(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|e| e.into_inner())
    }

    fn writing(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(|e| e.into_inner())
    }
}
