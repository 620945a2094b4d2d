//! Connection slots: at most `limit` open connections (and `per_ip` from one address). When full, a
//! new connection takes the slot of the oldest connection that has not yet sent a request (a
//! half-open request costs the attacker nothing, so it is the first to go); when every open
//! connection is serving a request, the new one is closed at once.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use tokio::sync::Notify;

/// Limits on open connections.
#[derive(Debug, Clone, Copy)]
pub struct SlotLimits {
    /// Most open connections.
    pub limit: usize,
    /// Most open connections from one IP address (`None`: no per-address limit).
    pub per_ip: Option<usize>,
}

/// Why a connection was not given a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every slot holds a connection that is serving a request.
    Full,
    /// The address already holds its share.
    PerIp,
}

#[derive(Debug, Default)]
struct Inner {
    open: usize,
    next_id: u64,
    /// Connections that have not sent a request yet, oldest first.
    waiting: BTreeMap<u64, Arc<Eviction>>,
    per_ip: HashMap<IpAddr, usize>,
}

/// A connection's eviction signal.
#[derive(Debug, Default)]
struct Eviction {
    notify: Notify,
    done: AtomicBool,
}

/// The table of open connections.
#[derive(Debug)]
pub struct Slots {
    limits: SlotLimits,
    inner: Mutex<Inner>,
}

/// One open connection's slot; released on drop.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    ip: IpAddr,
    eviction: Arc<Eviction>,
    serving: AtomicBool,
}

impl Slots {
    /// An empty table with `limits`.
    pub fn new(limits: SlotLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Open connections now (evicted ones no longer count).
    pub fn open(&self) -> usize {
        self.lock().open
    }

    /// A slot for a new connection from `ip`; when the table is full, the oldest connection still
    /// waiting for its first request is evicted for it (`.1` is then true).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<(Slot, bool), Refused> {
        let mut inner = self.lock();
        let from_ip = inner.per_ip.get(&ip).copied().unwrap_or(0);
        if self.limits.per_ip.is_some_and(|max| from_ip >= max) {
            return Err(Refused::PerIp);
        }
        let mut evicted = false;
        if inner.open >= self.limits.limit {
            let Some((_, victim)) = inner.waiting.pop_first() else {
                return Err(Refused::Full);
            };
            // It stops counting now; its task ends as soon as it sees the signal.
            victim.done.store(true, Ordering::Relaxed);
            victim.notify.notify_one();
            inner.open -= 1;
            evicted = true;
        }
        inner.open += 1;
        *inner.per_ip.entry(ip).or_default() += 1;
        let id = inner.next_id;
        inner.next_id += 1;
        let eviction = Arc::new(Eviction::default());
        inner.waiting.insert(id, eviction.clone());
        Ok((
            Slot {
                slots: self.clone(),
                id,
                ip,
                eviction,
                serving: AtomicBool::new(false),
            },
            evicted,
        ))
    }
}

impl Slot {
    /// Marks the connection as having sent a request: it can no longer be evicted.
    pub fn serving(&self) {
        // Once per connection: later requests on it do not touch the table.
        if !self.serving.swap(true, Ordering::Relaxed) {
            self.slots.lock().waiting.remove(&self.id);
        }
    }

    /// Resolves when a newer connection took this one's slot.
    pub async fn evicted(&self) {
        self.eviction.notify.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.slots.lock();
        inner.waiting.remove(&self.id);
        if !self.eviction.done.load(Ordering::Relaxed) {
            inner.open -= 1;
        }
        if let Some(n) = inner.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                inner.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn a_full_table_evicts_the_oldest_waiting_connection_and_never_a_serving_one() {
        let slots = Slots::new(SlotLimits {
            limit: 2,
            per_ip: None,
        });
        let (first, _) = slots.admit(A).unwrap();
        let (second, _) = slots.admit(A).unwrap();
        first.serving();
        let (third, evicted) = slots.admit(A).unwrap();
        assert!(evicted);
        assert!(second.eviction.done.load(Ordering::Relaxed));
        assert!(!first.eviction.done.load(Ordering::Relaxed));
        assert_eq!(slots.open(), 2);
        third.serving();
        assert_eq!(slots.admit(A).unwrap_err(), Refused::Full);
        drop(second);
        assert_eq!(slots.open(), 2, "an evicted slot is not released twice");
        drop(first);
        assert_eq!(slots.open(), 1);
        assert!(!slots.admit(A).unwrap().1);
    }

    #[test]
    fn one_address_gets_at_most_its_share() {
        let slots = Slots::new(SlotLimits {
            limit: 10,
            per_ip: Some(1),
        });
        let (a, _) = slots.admit(A).unwrap();
        assert_eq!(slots.admit(A).unwrap_err(), Refused::PerIp);
        let _b = slots.admit(B).unwrap();
        drop(a);
        assert!(slots.admit(A).is_ok());
    }
}
