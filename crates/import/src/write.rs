//! Pass 2's last stage: events grouped into per-host batches ([`Batcher`])
//! and stored on their own thread, one transaction per batch, the emptied
//! batch going back for reuse.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender};

use connscope_store::{AgentId, IngestReport, KeyedEvent, Store, StoreError};

use crate::hash::FastHash;

/// Stores every batch received; emptied batches go back through `spares`
/// (fresh multi-megabyte vectors cost page faults on every batch).
pub(crate) fn store_batches(
    store: &dyn Store,
    batches: Receiver<(AgentId, Vec<KeyedEvent>)>,
    spares: SyncSender<Vec<KeyedEvent>>,
) -> Result<IngestReport, StoreError> {
    let mut total = IngestReport::default();
    for (agent, mut batch) in batches {
        let r = store.ingest_keyed(&agent, &batch)?;
        total.stored += r.stored;
        total.duplicates += r.duplicates;
        batch.clear();
        let _ = spares.try_send(batch);
    }
    Ok(total)
}

/// Groups events into per-host batches (the store takes one agent per call)
/// for the storing thread.
///
/// In a central syslog the hosts' lines interleave, so their batches fill at
/// the same pace: waiting for each to be full would hand the storer twenty
/// at once and then nothing, and leave twenty for after the last line.
/// Instead, whenever more than twice the batch size waits in all, the largest
/// batch goes. That keeps a steady stream, bounds what waits, and leaves
/// little to store once reading ends.
pub(crate) struct Batcher {
    batches: HashMap<String, (AgentId, Vec<KeyedEvent>), FastHash>,
    waiting: usize,
    batch_size: usize,
    spares: Receiver<Vec<KeyedEvent>>,
}

impl Batcher {
    pub(crate) fn new(batch_size: usize, spares: Receiver<Vec<KeyedEvent>>) -> Self {
        Batcher {
            batches: HashMap::default(),
            waiting: 0,
            batch_size: batch_size.max(1),
            spares,
        }
    }

    /// Adds an event; returns a batch when one should be stored.
    pub(crate) fn push(&mut self, keyed: KeyedEvent) -> Option<(AgentId, Vec<KeyedEvent>)> {
        let host = &keyed.event.host;
        let batch = match self.batches.get_mut(host) {
            Some((_, batch)) => batch,
            None => {
                let vec = self
                    .spares
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(self.batch_size.min(8_192)));
                let entry = (AgentId(format!("import:{host}")), vec);
                &mut self.batches.entry(host.clone()).or_insert(entry).1
            }
        };
        batch.push(keyed);
        self.waiting += 1;
        let full = batch.len() >= self.batch_size;
        if !full && self.waiting <= 2 * self.batch_size {
            return None;
        }
        let host = match full {
            true => batch[0].event.host.clone(),
            false => self
                .batches
                .iter()
                .max_by_key(|(_, (_, batch))| batch.len())
                .map(|(host, _)| host.clone())
                .expect("events are waiting"),
        };
        let taken = self.batches.remove(&host).expect("the host has a batch");
        self.waiting -= taken.1.len();
        Some(taken)
    }

    /// The batches still waiting.
    pub(crate) fn drain(self) -> impl Iterator<Item = (AgentId, Vec<KeyedEvent>)> {
        self.batches.into_values()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::sync_channel;

    use connscope_event::{EventKind, Timestamp};
    use connscope_store::EventKey;

    use super::*;

    #[test]
    fn interleaved_hosts_make_a_steady_stream_of_batches() {
        let (_spare, spares) = sync_channel(1);
        let mut batcher = Batcher::new(10, spares);
        let keyed = |host: &str| {
            let mut event = connscope_event::ConnectionEvent::new(
                EventKind::Connect,
                Timestamp::from_nanos(0),
                connscope_event::Protocol::Tcp,
                connscope_event::Direction::Unknown,
                "10.0.0.1:1".parse().unwrap(),
                "10.0.0.2:2".parse().unwrap(),
            );
            event.host = host.into();
            KeyedEvent {
                key: EventKey(0),
                key_time: event.timestamp,
                event,
            }
        };
        let mut sizes = Vec::new();
        for i in 0..100 {
            let host = ["a", "b", "c", "d"][i % 4];
            if let Some((agent, batch)) = batcher.push(keyed(host)) {
                assert!(batch
                    .iter()
                    .all(|k| agent.0 == format!("import:{}", k.event.host)));
                sizes.push(batch.len());
            }
            assert!(batcher.waiting <= 20);
        }
        // Four hosts filling evenly: once 20 wait, a batch leaves every
        // few events instead of all four at once when they are full.
        assert!(sizes.len() >= 8, "{sizes:?}");
        assert!(sizes.iter().all(|&n| (5..=10).contains(&n)), "{sizes:?}");
        let left: usize = batcher.drain().map(|(_, b)| b.len()).sum();
        assert_eq!(sizes.iter().sum::<usize>() + left, 100);

        // One host alone fills whole batches.
        let (_spare, spares) = sync_channel(1);
        let mut alone = Batcher::new(10, spares);
        let full: Vec<usize> = (0..30)
            .filter_map(|_| alone.push(keyed("a")).map(|(_, b)| b.len()))
            .collect();
        assert_eq!(full, [10, 10, 10]);
    }
}
